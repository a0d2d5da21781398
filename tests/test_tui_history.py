"""The admin side's history of utilisation and memory, from the snapshots it receives: per GPU
and per running job, bounded by age and count, a repeated snapshot adding nothing, and steps
for a sparkline that carry the last value forward."""

from __future__ import annotations

from fractui.tui import history as hist
from fractui.sched.fleetview import job_memory_mib
from fractui.tui.history import History, gpu_key, job_key

T0 = 1_000_000.0


def snapshot(t: float, util, used: int, job_used: int = 0, mig: bool = False) -> dict:
    gpu = {"index": 0, "memory_mib": 24000, "memory_used_mib": used, "utilization_gpu": util,
           "processes": [{"pid": 501, "used_mib": job_used, "instance": None},
                         {"pid": 777, "used_mib": 100, "instance": None}]}
    if mig:
        gpu["instances"] = [{"uuid": "MIG-a", "memory_mib": 10000,
                             "memory_used_mib": job_used}]
    return {"host": "h", "time": t, "gpus": [gpu]}


JOBS = {"j1": {"id": "j1", "state": "running", "gpus": [0], "pid": 501, "instance": None},
        "j2": {"id": "j2", "state": "exited", "gpus": [0], "pid": 502, "instance": None}}


def test_each_gpu_and_running_job_gets_a_sample_per_new_snapshot():
    h = History()
    h.record("h", snapshot(T0, 10, 1000, 400), JOBS)
    h.record("h", snapshot(T0, 99, 9999, 999), JOBS)  # the same snapshot again: nothing added
    h.record("h", snapshot(T0 + 1, 20, 2000, 800), JOBS)
    assert [(s.util, s.used_mib) for s in h.samples(gpu_key("h", 0))] == [(10, 1000), (20, 2000)]
    assert [(s.util, s.used_mib) for s in h.samples(job_key("h", "j1"))] == [(10, 400),
                                                                            (20, 800)]
    assert h.samples(job_key("h", "j2")) == []  # not running: no history
    h.record("h", None, JOBS)  # a host without a snapshot yet
    assert len(h.samples(gpu_key("h", 0))) == 2


def test_a_series_keeps_at_most_its_count(monkeypatch):
    monkeypatch.setattr(hist, "MOST", 50)
    h = History()
    for k in range(200):
        h.record("h", snapshot(T0 + k, k % 100, k), JOBS)
    samples = h.samples(gpu_key("h", 0))
    assert len(samples) == 50 and samples[-1].used_mib == 199


def test_a_series_keeps_only_its_window():
    h = History()
    for k in range(200):
        h.record("h", snapshot(T0 + k * 10, 1, k), JOBS)
    samples = h.samples(gpu_key("h", 0))
    assert samples[-1].time - samples[0].time <= hist.WINDOW_S
    assert len(samples) == int(hist.WINDOW_S // 10) + 1


def test_a_job_not_seen_for_a_window_is_dropped():
    h = History()
    h.record("h", snapshot(T0, 1, 1, 5), JOBS)
    h.record("h", snapshot(T0 + hist.WINDOW_S + 1, 1, 1, 5), {})
    assert h.samples(job_key("h", "j1")) == [] and len(h.samples(gpu_key("h", 0))) == 1


def test_buckets_carry_the_last_value_forward_to_the_newest_snapshot():
    h = History()
    step = hist.WINDOW_S / 10
    h.record("h", snapshot(T0, 10, 100), JOBS)
    h.record("h", snapshot(T0 + 3 * step, 70, 300), JOBS)
    assert h.buckets(gpu_key("h", 0), "util", 10) == [10.0, 10.0, 10.0, 70.0]
    h.record("h", snapshot(T0 + 9 * step, 70, 300), {})
    assert h.buckets(gpu_key("h", 0), "used_mib", 10) == [100.0] * 3 + [300.0] * 7
    assert h.buckets(gpu_key("h", 5), "util", 10) == []


def test_mig_utilisation_is_left_out_not_shown_as_zero():
    h = History()
    h.record("h", snapshot(T0, None, 100, mig=True), JOBS)
    h.record("h", snapshot(T0 + 30, None, 200, mig=True), JOBS)
    assert h.buckets(gpu_key("h", 0), "util") == []
    assert h.buckets(gpu_key("h", 0), "used_mib")[-1] == 200.0


def test_a_jobs_memory_is_its_instances_or_its_processes():
    gpus = {0: snapshot(T0, 1, 1, 640, mig=True)["gpus"][0]}
    assert job_memory_mib(JOBS["j1"], gpus) == 640
    assert job_memory_mib(dict(JOBS["j1"], instance="MIG-a"), gpus) == 640
    assert job_memory_mib(dict(JOBS["j1"], pid=999), gpus) == 0
    assert job_memory_mib(dict(JOBS["j1"], gpus=[3]), gpus) is None
    # a job's workers count where the agent says whose each process is
    share = {0: {"index": 0, "processes": [{"pid": 501, "used_mib": 400, "job": "j1"},
                                           {"pid": 502, "used_mib": 300, "job": "j1"},
                                           {"pid": 503, "used_mib": 200, "job": "j2"},
                                           {"pid": 504, "used_mib": 100, "job": None}]}}
    assert job_memory_mib(JOBS["j1"], share) == 700


def test_a_job_id_that_names_another_job_after_a_wipe_starts_its_series_anew():
    # the agent's ids count from j1 again once its state dir is wiped: the new j1's memory is
    # its own, not drawn on from the samples of the job that held that id before
    h = History()
    before = {"j1": dict(JOBS["j1"], key="fractui-u-5.1")}
    h.record("h", snapshot(T0, 10, 1000, 900), before)
    h.record("h", snapshot(T0 + 1, 10, 1000, 900), before)
    after = {"j1": dict(JOBS["j1"], key="fractui-u-7.1")}
    h.record("h", snapshot(T0 + 5, 10, 1000, 30), after)
    assert [s.used_mib for s in h.samples(job_key("h", "j1"))] == [30]
    h.record("h", snapshot(T0 + 6, 10, 1000, 40), after)
    assert [s.used_mib for s in h.samples(job_key("h", "j1"))] == [30, 40]
