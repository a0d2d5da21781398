"""The lease holder's usage bookkeeping on simulated hosts with real jobs: each attempt's
record opened and closed with its job (the GPU model as its host names it), each GPU's time
written per bucket — online, idle, held as charged — by the scheduler's own loop."""

from __future__ import annotations

import pytest

from fractui.config import QueueConfig, UsageSettings
from fractui.scheduler import usage as keeper
from fractui.store.model import DONE
from tests import localfleet
from tests.localfleet import sleeper, wait

local_fleet = localfleet.local_fleet


def test_the_holder_keeps_each_attempts_record_and_each_gpus_time(local_fleet, monkeypatch):
    monkeypatch.setattr(keeper, "LOOK_S", 0.2)
    monkeypatch.setattr(keeper, "FLUSH_S", 1.0)
    f = local_fleet({"gpu-a": "3xL4"}, [QueueConfig(name="whole", gpus=1),
                                        QueueConfig(name="quarter", gpu=0.25)],
                    usage=UsageSettings(bucket_s=10, refresh_s=1))
    short = f.submit("quarter", argv=sleeper(2))
    long = f.submit("whole")
    f.scheduler.start()
    try:
        wait(lambda: f.store.get(short.id).state == DONE, f.states)
        wait(lambda: sum(t.online_s for t in f.store.gpu_time(0, 9e12)) > 9, f.states)
    finally:
        f.scheduler.stop()
    records = {r.job: r for r in f.store.usage(0, 9e12)}
    done, runs = records[short.id], records[long.id]
    assert (done.outcome, done.charge, done.model) == (DONE, 0.25, "NVIDIA L4")
    assert done.ended_at - done.started_at == pytest.approx(2, abs=1.5)
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
