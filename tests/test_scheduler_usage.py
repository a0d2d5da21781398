"""The lease holder's usage bookkeeping on simulated hosts with real jobs: each attempt's
record opened and closed with its job (the GPU model as its host names it) and carrying what
its agent sampled (read while it runs, and the last of it at its end), each GPU's time written
per bucket — online, idle, held as charged — by the scheduler's own loop."""

from __future__ import annotations

import sys

import pytest

from fractui.config import QueueConfig, UsageSettings
from fractui.scheduler import usage as keeper
from fractui.store.model import DONE
from tests import localfleet
from tests.localfleet import wait


def simload(mib: int, util: int, seconds: float) -> list:
    return [sys.executable, "-m", "remote_agent.simload", "--mem-mib", str(mib), "--util",
            str(util), "--util-swing", "0", "--seconds", str(seconds)]

local_fleet = localfleet.local_fleet


def test_the_holder_keeps_each_attempts_record_and_each_gpus_time(local_fleet, monkeypatch):
    monkeypatch.setattr(keeper, "LOOK_S", 0.2)
    monkeypatch.setattr(keeper, "FLUSH_S", 1.0)
    f = local_fleet({"gpu-a": "3xL4"}, [QueueConfig(name="whole", gpus=1),
                                        QueueConfig(name="quarter", gpu=0.25)],
                    usage=UsageSettings(bucket_s=10, refresh_s=1),
                    agent={"usage_sample_s": 0.5})
    short = f.submit("quarter", argv=simload(1000, 20, 3))
    long = f.submit("whole", argv=simload(3000, 40, 600))
    f.scheduler.start()
    try:
        wait(lambda: f.store.get(short.id).state == DONE, f.states)
        wait(lambda: sum(t.online_s for t in f.store.gpu_time(0, 9e12)) > 9, f.states)
        wait(lambda: {r.job: r.sampled.samples for r in f.store.usage(0, 9e12)}.get(
            long.id, 0) > 2, lambda: f.store.usage(0, 9e12))
    finally:
        f.scheduler.stop()
    records = {r.job: r for r in f.store.usage(0, 9e12)}
    done, runs = records[short.id], records[long.id]
    assert (done.outcome, done.charge, done.model) == (DONE, 0.25, "NVIDIA L4")
    assert done.ended_at - done.started_at == pytest.approx(3, abs=1.5)
    # what the agents sampled: the last of it with the end, and read while a job runs
    # (a sample taken as a job starts may see it before it registered its use: at most one)
    for r, mib, util in ((done, 1000, 20), (runs, 3000, 40)):
        s = r.sampled
        assert s.samples >= 2 and s.memory_peak_mib == mib and s.util_note is None
        assert mib * (s.samples - 1) / s.samples <= s.memory_mean_mib <= mib
        assert util * (s.samples - 1) / s.samples <= s.util_mean <= util
    assert (runs.outcome, runs.ended_at, runs.charge) == (None, None, 1.0)
    times = f.store.gpu_time(0, 9e12)
    assert {t.bucket % 10 for t in times} == {0.0} and {t.model for t in times} == {"NVIDIA L4"}
    per_gpu = {}
    for t in times:
        was = per_gpu.get(t.gpu, (0.0, 0.0, 0.0))
        per_gpu[t.gpu] = (was[0] + t.online_s, was[1] + t.idle_s, was[2] + t.held_s)
    online, idle, held = per_gpu[runs.gpus[0]]
    assert online > 0 and idle == 0 and held == pytest.approx(online)  # the whole GPU, held
    free = [g for g in range(3) if g not in runs.gpus + done.gpus]
    assert free and all(per_gpu[g][1] == per_gpu[g][0] > 0 for g in free)  # nothing there
