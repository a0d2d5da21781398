"""What a job used of its GPUs, sampled by the watchdog and kept as aggregates, never a row per
sample: the admin side reads them in the job record's ``usage`` to account for what each job held
against what it used. Pure: the watchdog reads NVML and hands the readings in."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set

from remote_agent.gpu.backend import MIG_UTIL_NOTE, GpuProcess

USAGE_SAMPLE_S = 5.0  # a running job's use is sampled (and the aggregate written) this often


@dataclass(frozen=True)
class GpuReading:
    """One look at a GPU for the samples: its processes (GPUs without MIG), its processes' SM
    utilisation (None: not read, ``util_note`` says why) and its MIG instances' memory in use."""

    processes: List[GpuProcess]
    util: Optional[Mapping[int, float]] = None  # pid -> SM %; a pid not in it used 0 %
    util_note: Optional[str] = None
    instance_used_mib: Optional[Mapping[str, int]] = None  # MIG uuid -> MiB


@dataclass(frozen=True)
class Sample:
    memory_mib: int
    util: Optional[float]  # SM %, in percent of one GPU (over 100 on several GPUs)
    util_note: Optional[str]  # why util is None


@dataclass(frozen=True)
class Usage:
    """The aggregate of a job's samples, as the protocol's job record carries it."""

    since: float  # the first sample's time
    until: float  # the last sample's time
    samples: int
    memory_peak_mib: int
    memory_mean_mib: float
    util_samples: int
    util_mean: Optional[float]
    util_note: Optional[str]  # why a sample had no utilisation (the latest such reason)

    def record(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, data: Optional[Mapping[str, Any]]) -> Optional["Usage"]:
        return None if data is None else cls(**data)


def add(usage: Optional[Usage], at: float, sample: Sample) -> Usage:
    """``usage`` with one more sample: running means, so nothing grows with the samples."""
    if usage is None:
        return Usage(since=at, until=at, samples=1, memory_peak_mib=sample.memory_mib,
                     memory_mean_mib=float(sample.memory_mib),
                     util_samples=0 if sample.util is None else 1,
                     util_mean=None if sample.util is None else float(sample.util),
                     util_note=sample.util_note)
    n = usage.samples + 1
    util_samples, util_mean, note = usage.util_samples, usage.util_mean, usage.util_note
    if sample.util is None:
        note = sample.util_note
    else:
        util_samples += 1
        util_mean = sample.util if util_mean is None else \
            util_mean + (sample.util - util_mean) / util_samples
    return Usage(since=usage.since, until=at, samples=n,
                 memory_peak_mib=max(usage.memory_peak_mib, sample.memory_mib),
                 memory_mean_mib=usage.memory_mean_mib + (
                     sample.memory_mib - usage.memory_mean_mib) / n,
                 util_samples=util_samples, util_mean=util_mean, util_note=note)


def sample_job(gpus: Iterable[int], instance: Optional[str], pids: Set[int],
               readings: Mapping[int, GpuReading]) -> Optional[Sample]:
    """A job's use now: on a MIG instance, the instance's memory in use (NVML reports no
    utilisation there); on shared or whole GPUs, its processes' memory and SM utilisation summed
    over its GPUs. None when a GPU of it was not read: a part would understate the job."""
    gpus = list(gpus)
    if any(g not in readings for g in gpus):
        return None
    if instance is not None:
        used = [readings[g].instance_used_mib or {} for g in gpus]
        if not all(instance in u for u in used):
            return None
        return Sample(memory_mib=sum(u[instance] for u in used), util=None,
                      util_note=MIG_UTIL_NOTE)
    memory = 0
    util: Optional[float] = 0.0
    note = None
    for g in gpus:
        reading = readings[g]
        memory += sum(p.used_mib or 0 for p in reading.processes if p.pid in pids)
        if reading.util is None:
            util, note = None, reading.util_note
        elif util is not None:
            util += sum(v for pid, v in reading.util.items() if pid in pids)
    return Sample(memory_mib=memory, util=util, util_note=note)
