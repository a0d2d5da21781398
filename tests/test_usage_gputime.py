"""Each GPU's time as the lease holder sees it pass: online, idle (nothing on it: no job of the
store, no live job of its agent's and no process), held (GPUs charged), and its utilisation
where NVML reports it — split exactly at bucket boundaries, and nothing counted across a gap
or while a host is away."""

from __future__ import annotations

import dataclasses

import pytest

from fractui.sched.fleetview import HostView
from fractui.store.model import (MOST_SPANS, MOVE, PLACED, RUNNING, STOPPING, GpuTime, Job,
                                 Slot, spans_over)
from fractui.usage.gputime import GAP_S, GpuClock


def view(state: str = "online", util0: object = 40, processes1: tuple = ()) -> HostView:
    return HostView("h", state, hello={"gpus": []}, snapshot={"gpus": [
        {"index": 0, "name": "L4", "utilization_gpu": util0, "processes": [{"pid": 7}]},
        {"index": 1, "name": "L4", "utilization_gpu": None,
         "processes": list(processes1)}]})


JOB = Job(1, "q", "t", "n", ("x",), {}, RUNNING, 0.0, 0.0,
          slot=Slot("h", (0,), None, None, 6144, 0.25))


def test_time_between_looks_is_split_at_bucket_boundaries_with_what_each_gpu_did():
    clock = GpuClock(bucket_s=60)
    clock.observe([view()], [JOB], 50.0)  # the first look counts nothing: no "before"
    clock.observe([view()], [JOB], 70.0)
    rows = {(r.gpu, r.bucket): r for r in clock.take()}
    assert rows[0, 0.0] == GpuTime("h", 0, 0.0, "L4", online_s=10, idle_s=0, held_s=2.5,
                                   util_s=4.0, measured_s=10, seen_from=50, seen_to=60,
                                   seen_spans=((50, 60),))
    assert rows[0, 60.0] == GpuTime("h", 0, 60.0, "L4", 10, 0, 2.5, 4.0, 10, 60, 70,
                                    ((60, 70),))
    # GPU 1: no job, no process: idle; its utilisation not reported: not measured
    assert rows[1, 0.0] == GpuTime("h", 1, 0.0, "L4", 10, 10, 0, 0, 0, 50, 60, ((50, 60),))
    assert clock.take() == []  # handed over once


def test_a_placed_job_books_its_gpu_and_holds_it_only_once_started():
    """Placed, its launch under way (an image pulled, a launch refused and tried again), a
    job's slot is taken, so its GPU is not idle; it holds nothing until its start, as its
    usage record (and so the report's HELD) says: held while online is never more than what
    the attempts held."""
    placed = Job(2, "q", "t", "n", ("x",), {}, PLACED, 0.0, 0.0,
                 slot=Slot("h", (1,), None, None, 6144, 0.25))
    clock = GpuClock(bucket_s=60)
    clock.observe([view()], [JOB, placed], 0.0)
    clock.observe([view()], [JOB, placed], 5.0)
    started = dataclasses.replace(placed, state=RUNNING, agent_job="a2")
    clock.observe([view()], [JOB, started], 10.0)
    gpu1 = [r for r in clock.take() if r.gpu == 1]
    assert [(r.online_s, r.idle_s, r.held_s) for r in gpu1] == [(10.0, 0.0, 1.25)]


def test_a_job_moving_by_hand_books_its_target_and_holds_only_its_slice():
    """Job 1 stops to move from GPU 0 to GPU 1: the slot there is held for it meanwhile (no
    placement may take it), so GPU 1 is not idle; its usage record charges GPU 0 alone until
    it runs there, and so does the GPUs' time."""
    moving = dataclasses.replace(JOB, state=STOPPING, stop_intent=MOVE, agent_job="a1",
                                 move_to=Slot("h", (1,), None, None, 6144, 0.25))
    clock = GpuClock(bucket_s=60)
    clock.observe([view()], [moving], 0.0)
    clock.observe([view()], [moving], 10.0)
    rows = {r.gpu: (r.online_s, r.idle_s, r.held_s) for r in clock.take()}
    assert rows == {0: (10.0, 0.0, 2.5), 1: (10.0, 0.0, 0.0)}


def test_a_process_outside_fractui_keeps_a_gpu_from_being_idle():
    clock = GpuClock(bucket_s=60)
    clock.observe([view(processes1=({"pid": 9},))], [], 0.0)
    clock.observe([view(processes1=({"pid": 9},))], [], 5.0)
    assert {r.gpu: r.idle_s for r in clock.take()} == {0: 0.0, 1: 0.0}


@pytest.mark.parametrize("state", ["running", "killed"])
def test_a_live_agent_job_the_store_does_not_hold_keeps_its_gpu_from_being_idle(state):
    """A copy under the store's key it does not hold, or a launch by hand, with no process on
    its GPU yet: its slice is taken (placement counts it), so the GPU is not idle; once it
    ended, it is."""
    copy = HostView("h", "online", hello={"gpus": []}, snapshot=view().snapshot, jobs={
        "j3": {"id": "j3", "key": "fractui-u-99.0", "state": state, "gpus": [1]}})
    clock = GpuClock(bucket_s=60)
    clock.observe([copy], [], 0.0)
    clock.observe([copy], [], 5.0)
    assert {r.gpu: r.idle_s for r in clock.take()} == {0: 0.0, 1: 0.0 if state == "running"
                                                       else 5.0}


def test_the_mps_server_its_jobs_left_keeps_no_gpu_from_being_idle():
    left = ({"pid": 9, "used_mib": 66, "job": None, "service": "mps"},)
    clock = GpuClock(bucket_s=60)
    clock.observe([view(processes1=left)], [], 0.0)
    clock.observe([view(processes1=left)], [], 5.0)
    assert {r.gpu: r.idle_s for r in clock.take()} == {0: 0.0, 1: 5.0}


@pytest.mark.parametrize("between", ["offline", "gap"])
def test_nothing_is_counted_while_a_host_is_away_or_across_a_gap(between):
    clock = GpuClock(bucket_s=60)
    clock.observe([view()], [JOB], 0.0)
    if between == "offline":
        clock.observe([view("offline")], [JOB], 5.0)
        clock.observe([view()], [JOB], 10.0)  # back: looked at afresh
        assert clock.take() == []
        clock.observe([view()], [JOB], 15.0)
        assert sum(r.online_s for r in clock.take()) == pytest.approx(10.0)  # 2 GPUs x 5 s
    else:
        clock.observe([view()], [JOB], GAP_S + 1)
        assert clock.take() == []


def test_each_stretch_a_gpu_was_seen_in_a_bucket_is_kept_apart_and_joined_where_they_meet():
    """Seen 0 -> 10 s, its host away, seen again 20 -> 30 s, all in one bucket: two stretches,
    not 0 -> 30 (what a range within the gap counts of it is none); one taken between the
    looks and put back (a write that failed) joins the next where they meet."""
    clock = GpuClock(bucket_s=60)
    for t, state in ((0.0, "online"), (5.0, "online"), (10.0, "online"), (15.0, "offline"),
                     (20.0, "online"), (25.0, "online")):
        clock.observe([view(state)], [JOB], t)
    for row in clock.take():
        clock.add(row)  # a write that failed: kept for the next
    clock.observe([view()], [JOB], 30.0)
    assert {(r.gpu, r.online_s, r.seen_from, r.seen_to, r.seen_spans) for r in clock.take()
            } == {(g, 20.0, 0.0, 30.0, ((0.0, 10.0), (20.0, 30.0))) for g in (0, 1)}


def test_a_gpu_that_flaps_all_day_keeps_a_bounded_row_its_nearest_stretches_made_one():
    """A host seen for two looks and away for the third, all day, in a bucket of a day: its
    GPUs' time is every second seen, but their stretches are at most MOST_SPANS (a row grew
    by a pair at every return, 5,760 a day, each write reading and writing them all); past
    it the two nearest are made one, the gap between read as seen, as before stretches were
    kept. Joined across writes and holders the same (model.spans_over)."""
    clock = GpuClock(bucket_s=86400)
    for look in range(3 * 1000):
        if look % 3 != 2:
            clock.observe([view()], [JOB], 5.0 * look)
        else:
            clock.observe([view("offline")], [JOB], 5.0 * look)
    [row, _] = clock.take()
    assert row.online_s == 1000 * 5.0  # (5 s from each first look back to the next)
    assert len(row.seen_spans) == MOST_SPANS
    assert (row.seen_spans[0][0], row.seen_spans[-1][1]) == (row.seen_from, row.seen_to)
    assert all(a < b for (_, a), (b, _) in zip(row.seen_spans, row.seen_spans[1:]))
    many = tuple((10.0 * i, 10.0 * i + 1) for i in range(MOST_SPANS + 5))
    assert len(spans_over(many, ((1000.0, 1001.0),))) == MOST_SPANS
