"""What the report screen's plots need of fractui.usage.report: per step, the GPUs held by
attempts whose utilisation NVML measured (so MIG time is a gap, never 0 %), and where "all
that is kept" begins."""

from __future__ import annotations

from fractui.store.model import GpuTime, Sampled, UsageRecord
from fractui.usage.report import earliest, series

MEASURED = Sampled(samples=10, util_samples=10, util_mean=50.0)
MIG = Sampled(samples=10, util_note="NVML gives no per-process utilisation on MIG")


def attempt(job: int, team: str, start: float, end: float, sampled: Sampled,
            charge: float = 0.5) -> UsageRecord:
    return UsageRecord(job, 0, team, "q", "u", "h", (0,), "A100-80GB", None, None, charge,
                       start, start, end, "done", sampled)


def test_measured_counts_only_the_gpus_held_by_attempts_nvml_measured():
    records = [attempt(1, "a", 0, 100, MEASURED), attempt(2, "b", 0, 100, MIG),
               attempt(3, "a", 50, 100, MIG, charge=1.0)]
    s = series(records, 0, 100, 2, now=100)
    assert s.held == {"a": [0.5, 1.5], "b": [0.5, 0.5]}
    assert s.measured == {"a": [0.5, 0.5], "b": [0.0, 0.0]}
    assert s.used == {"a": [0.5, 0.5], "b": [0.0, 0.0]}  # 50 % of one GPU: half a GPU


def test_all_that_is_kept_begins_at_the_oldest_attempt_or_gpu_time():
    records = [attempt(1, "a", 500, 600, MEASURED), attempt(2, "a", 300, 400, MIG)]
    assert earliest(records, []) == 300
    assert earliest(records, [GpuTime("h", 0, 120.0)]) == 120
    assert earliest([], []) is None
