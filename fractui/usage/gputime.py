"""Each GPU's time, as the lease holder sees it pass: seconds online, seconds with nothing on it,
GPU-seconds charged to the jobs on it, and its own utilisation where NVML gives it — summed per
time bucket, so a year of a thousand GPUs is rows per bucket, not per look."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from fractui.sched.fleetview import ACTIVE_AGENT_STATES, USABLE, HostView, held_by_gpu, mps_layer
from fractui.sched.quota import charged_by_gpu
from fractui.store.model import GpuTime, Job, Spans, spans_over

GAP_S = 30.0
"""Two looks at a GPU further apart than this (the holder was paused, or just took the lease)
count nothing between them: what the GPU did meanwhile is not known."""

FLUSH_S = 60.0
"""Seconds between a lease holder's writes of GPU time (or a bucket's, if shorter): a bucket
is all written that long after it ends."""

Key = Tuple[str, int]


@dataclass
class GpuClock:
    """Sums what each GPU did between two looks into its buckets of ``bucket_s`` seconds;
    ``take`` hands over what was summed since the last take."""

    bucket_s: float
    last: Dict[Key, float] = field(default_factory=dict)  # when each GPU was last seen online
    pending: Dict[Tuple[str, int, float], List[Any]] = field(default_factory=dict)
    """(host, GPU, bucket) -> [model, online, idle, held, util, measured seconds, seen from,
    seen to, seen spans]: plain lists while summing (a look at 10,000 GPUs makes no object
    per GPU; its span goes on the one before where it begins as that one ends)."""

    def observe(self, views: Sequence[HostView], jobs: Iterable[Job], now: float) -> None:
        """One look at the fleet at ``now``: each GPU of a reachable host counts the time
        since its last look as it is now (a host unreachable counts nothing, and is looked
        at afresh when it is back)."""
        jobs = list(jobs)
        booked = held_by_gpu(jobs)  # a placed job's slot, a move's target: placement counts
        # them taken
        held = charged_by_gpu(j.slot for j in jobs if j.holds_slice)  # what the usage
        # records charge
        seen: Dict[Key, float] = {}
        for view in views:
            if view.state not in USABLE:
                continue
            taken = agent_gpus(view)
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
                idle = 1.0 if not booked.get(key) and index not in taken and all(  # jobs' MPS
                    mps_layer(p) for p in gpu.get("processes") or ()) else 0.0  # server: no use
                util = gpu.get("utilization_gpu")
                measured = isinstance(util, (int, float)) and not isinstance(util, bool)
                busy = float(util) / 100 if measured else 0.0
                for bucket, start, dt in _split(before, now, self.bucket_s):
                    self._sum(view.name, index, bucket, gpu.get("name"), (start, start + dt),
                              ((start, start + dt),), dt, idle * dt, charge * dt, busy * dt,
                              dt if measured else 0.0)
        self.last = seen

    def add(self, row: GpuTime) -> None:
        """Adds a row's seconds to what is pending for its GPU and bucket."""
        self._sum(row.host, row.gpu, row.bucket, row.model, (row.seen_from, row.seen_to),
                  row.seen_spans, row.online_s, row.idle_s, row.held_s, row.util_s,
                  row.measured_s)

    def _sum(self, host: str, gpu: int, bucket: float, model: Optional[str],
             seen: Tuple[Optional[float], Optional[float]], spans: Optional[Spans],
             *seconds: float) -> None:
        was = self.pending.get((host, gpu, bucket))
        if was is None:
            self.pending[host, gpu, bucket] = [model, *seconds, *seen,
                                               None if spans is None else list(spans)]
            return
        was[0] = model or was[0]
        for i, value in enumerate(seconds, start=1):
            was[i] += value
        was[-3:-1] = seen_over(was[-3], was[-2], *seen)
        kept = was[-1]
        if kept is None or spans is None:
            was[-1] = None
        elif len(spans) == 1 and kept and kept[-1][1] == spans[0][0]:  # most looks: the
            kept[-1] = (kept[-1][0], spans[0][1])  # span before goes on
        else:
            was[-1] = list(spans_over(kept, spans))

    def take(self) -> List[GpuTime]:
        rows = [GpuTime(host, gpu, bucket, *summed[:-1],
                        None if summed[-1] is None else tuple(summed[-1]))
                for (host, gpu, bucket), summed in self.pending.items()]
        self.pending = {}
        return sorted(rows, key=lambda r: (r.bucket, r.host, r.gpu))


def agent_gpus(view: HostView) -> Set[int]:
    """The GPUs a live agent job is on, whoever launched it: a copy the store does not hold
    (a late one, or of a job it does not have) or a launch by hand takes its slice before its
    program has a process on the GPU, and placement counts it taken."""
    return {g for rec in view.jobs.values() if rec.get("state") in ACTIVE_AGENT_STATES
            for g in rec.get("gpus") or () if isinstance(g, int)}


def bucket_of(t: float, bucket_s: float) -> float:
    return math.floor(t / bucket_s) * bucket_s


def seen_over(a_from: Optional[float], a_to: Optional[float], b_from: Optional[float],
              b_to: Optional[float]) -> List[Optional[float]]:
    """When two sums of a GPU's bucket were seen, together: from the earlier start to the later
    end; not known (None) where either is not (a bucket kept before they were)."""
    if a_from is None or a_to is None or b_from is None or b_to is None:
        return [None, None]
    return [min(a_from, b_from), max(a_to, b_to)]


def _split(start: float, end: float, bucket_s: float) -> List[Tuple[float, float, float]]:
    """(bucket, start, seconds) of the interval [start, end) in each bucket it crosses."""
    if bucket_of(start, bucket_s) + bucket_s > end:  # most looks: within one bucket
        return [(bucket_of(start, bucket_s), start, end - start)]
    out = []
    t = start
    while t < end:
        bucket = bucket_of(t, bucket_s)
        if bucket + bucket_s <= t:  # t on a boundary that division rounded down
            bucket += bucket_s
        stop = min(end, bucket + bucket_s)
        out.append((bucket, t, stop - t))
        t = stop
    return out
