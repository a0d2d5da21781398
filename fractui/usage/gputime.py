"""Each GPU's time, as the lease holder sees it pass: seconds online, seconds with nothing on it,
GPU-seconds charged to the jobs on it, and its own utilisation where NVML gives it — summed per
time bucket, so a year of a thousand GPUs is rows per bucket, not per look."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Dict, Iterable, List, Sequence, Tuple

from fractui.sched.fleetview import USABLE, HostView
from fractui.store.model import ON_HOST, GpuTime, Job

GAP_S = 30.0
"""Two looks at a GPU further apart than this (the holder was paused, or just took the lease)
count nothing between them: what the GPU did meanwhile is not known."""

Key = Tuple[str, int]


def held_by_gpu(jobs: Iterable[Job]) -> Dict[Key, float]:
    """GPUs charged on each (host, GPU) by the jobs on a host (a k-GPU job's charge split
    evenly over its GPUs)."""
    held: Dict[Key, float] = {}
    for job in jobs:
        slot = job.slot
        if job.state in ON_HOST and slot is not None and slot.gpus:
            part = slot.charge / len(slot.gpus)
            for gpu in slot.gpus:
                held[slot.host, gpu] = held.get((slot.host, gpu), 0.0) + part
    return held


@dataclass
class GpuClock:
    """Sums what each GPU did between two looks into its buckets of ``bucket_s`` seconds;
    ``take`` hands over what was summed since the last take."""

    bucket_s: float
    last: Dict[Key, float] = field(default_factory=dict)  # when each GPU was last seen online
    pending: Dict[Tuple[str, int, float], GpuTime] = field(default_factory=dict)

    def observe(self, views: Sequence[HostView], jobs: Iterable[Job], now: float) -> None:
        """One look at the fleet at ``now``: each GPU of a reachable host counts the time
        since its last look as it is now (a host unreachable counts nothing, and is looked
        at afresh when it is back)."""
        held = held_by_gpu(jobs)
        seen: Dict[Key, float] = {}
        for view in views:
            if view.state not in USABLE:
                continue
            for gpu in view.gpu_records():
                index = gpu.get("index")
                if not isinstance(index, int):
                    continue
                key = (view.name, index)
                seen[key] = now
                before = self.last.get(key)
                if before is None or not 0 < now - before <= GAP_S:
                    continue
                charge = held.get(key, 0.0)
                idle = charge == 0 and not gpu.get("processes")
                util = gpu.get("utilization_gpu")
                measured = isinstance(util, (int, float)) and not isinstance(util, bool)
                for bucket, dt in _split(before, now, self.bucket_s):
                    self.add(GpuTime(
                        view.name, index, bucket, gpu.get("name"), online_s=dt,
                        idle_s=dt if idle else 0.0, held_s=charge * dt,
                        util_s=float(util) / 100 * dt if measured else 0.0,
                        measured_s=dt if measured else 0.0))
        self.last = seen

    def add(self, row: GpuTime) -> None:
        """Adds a row's seconds to what is pending for its GPU and bucket."""
        key = (row.host, row.gpu, row.bucket)
        was = self.pending.get(key)
        if was is not None:
            row = replace(was, model=row.model or was.model, online_s=was.online_s + row.online_s,
                          idle_s=was.idle_s + row.idle_s, held_s=was.held_s + row.held_s,
                          util_s=was.util_s + row.util_s,
                          measured_s=was.measured_s + row.measured_s)
        self.pending[key] = row

    def take(self) -> List[GpuTime]:
        rows = sorted(self.pending.values(), key=lambda r: (r.bucket, r.host, r.gpu))
        self.pending = {}
        return rows


def bucket_of(t: float, bucket_s: float) -> float:
    return math.floor(t / bucket_s) * bucket_s


def _split(start: float, end: float, bucket_s: float) -> List[Tuple[float, float]]:
    """(bucket, seconds) of the interval [start, end) in each bucket it crosses."""
    out = []
    t = start
    while t < end:
        bucket = bucket_of(t, bucket_s)
        if bucket + bucket_s <= t:  # t on a boundary that division rounded down
            bucket += bucket_s
        stop = min(end, bucket + bucket_s)
        out.append((bucket, stop - t))
        t = stop
    return out
