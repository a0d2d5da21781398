"""Utilisation and memory of each GPU and each running job over the last minutes, kept on the
admin side from the snapshots the agents already push: no new protocol, nothing stored on the
host, and bounded — by age (``WINDOW_S``) and by count per series (``MOST``). A series that
has had no sample for a window is dropped, so ended jobs and gone GPUs do not pile up.

Times are the agent's (its snapshot's ``time``), so a host's series line up with each other and
no clock of another machine is mixed in.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Any, Deque, Mapping, Optional

from fractui.sched.fleetview import job_memory_mib

WINDOW_S = 10 * 60.0
MOST = 1200  # samples per series: a snapshot every 0.5 s for the whole window
BUCKETS = 60  # what a sparkline is given: the window in this many steps


@dataclass(frozen=True)
class Sample:
    time: float
    util: Optional[int]
    """Percent; None where NVML does not report it (MIG)."""
    used_mib: int


Key = tuple[str, str]
"""("host", "gpu3") or ("host", "j12"): a GPU by index, a job by its agent id."""


def gpu_key(host: str, index: int) -> Key:
    return (host, "gpu%d" % index)


def job_key(host: str, agent_job: str) -> Key:
    return (host, str(agent_job))


class History:
    """Thread-safe: fed on the fleet's threads, read on the UI's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[Key, Deque[Sample]] = {}
        # a job series' agent key: ids count from j1 again once an agent's state dir is wiped,
        # and a series of that id is then another job's, begun anew
        self._keys: dict[Key, Optional[str]] = {}
        self._latest: dict[str, float] = {}  # host -> its newest snapshot's time

    def record(self, host: str, snapshot: Optional[Mapping[str, Any]],
               jobs: Mapping[str, Mapping[str, Any]]) -> None:
        """One host's snapshot and agent job records; a snapshot already seen adds nothing."""
        if not snapshot or snapshot.get("time") is None:
            return
        now = float(snapshot["time"])
        with self._lock:
            if now <= self._latest.get(host, float("-inf")):
                return
            self._latest[host] = now
            gpus = {g.get("index"): g for g in snapshot.get("gpus") or ()}
            for index, gpu in gpus.items():
                self._add(gpu_key(host, index), Sample(
                    now, gpu.get("utilization_gpu"), int(gpu.get("memory_used_mib") or 0)))
            for job in jobs.values():
                if job.get("state") != "running":
                    continue
                used = job_memory_mib(job, gpus)
                if used is not None:
                    util = [gpus[i].get("utilization_gpu") for i in job.get("gpus") or ()
                            if i in gpus]
                    key = job_key(host, job.get("id"))
                    if key in self._keys and self._keys[key] != job.get("key"):
                        del self._series[key]
                    self._keys[key] = job.get("key")
                    self._add(key, Sample(now, util[0] if len(util) == 1 else None, used))
            for key in [k for k, s in self._series.items()
                        if k[0] == host and s[-1].time < now - WINDOW_S]:
                del self._series[key]
                self._keys.pop(key, None)

    def _add(self, key: Key, sample: Sample) -> None:
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = collections.deque(maxlen=MOST)
        series.append(sample)
        while series[0].time < sample.time - WINDOW_S:
            series.popleft()

    def samples(self, key: Key) -> list[Sample]:
        with self._lock:
            return list(self._series.get(key, ()))

    def buckets(self, key: Key, field: str, buckets: int = BUCKETS) -> list[float]:
        """One value of ``field`` ("util" or "used_mib") per step of the window up to the
        host's newest snapshot, each the last one known by then; steps before the first sample,
        and values NVML does not report (MIG utilisation), are left out."""
        with self._lock:
            series = list(self._series.get(key, ()))
            end = self._latest.get(key[0])
        if not series or end is None:
            return []
        step = WINDOW_S / buckets
        out: list[float] = []
        k = 0
        last: Optional[Sample] = None
        for b in range(buckets):
            at = end - WINDOW_S + (b + 1) * step
            while k < len(series) and series[k].time <= at:
                last = series[k]
                k += 1
            value = None if last is None else getattr(last, field)
            if value is not None:
                out.append(float(value))
        return out
