"""A job moving by hand holds its target's room until it runs there, and every view of who holds
a GPU says so (Job.holding, the one reading): placement (fleetview.jobs_by_host), the metrics
and the GPUs' time (held_by_gpu), ``fractui status`` from the store, the drains, and the MIG
mode changes — a launch's (plan_flip), ``fractui mig --mode`` and the TUI's (plan_mode). Each
that read ``slot`` alone read the target free: a launch could turn MIG off under the slot the
move holds. The move is made in a real SQLite store, as ``fractui move`` makes it."""

from __future__ import annotations

import pytest

from fractui.kept_status import Kept, records
from fractui.sched.cordons import DRAINED, DRAINING, made_said, state
from fractui.sched.fleetview import held_by_gpu, jobs_by_host
from fractui.sched.mig_change import plan_flip, plan_mode
from fractui.store import Slot
from fractui.store.intents import Asker, move_by_hand
from fractui.store.model import DRAIN, Cordon, Job
from fractui.store.sqlite import SqliteStore

SOURCE = Slot("h", (0,), "1g.10gb", 6, None, 0.142857)
TARGET = Slot("h", (1,), "1g.10gb", 6, None, 0.142857)
SHARE_SOURCE = Slot("h", (0,), None, None, 6144, 0.25)
SHARE_TARGET = Slot("h", (1,), None, None, 6144, 0.25)


def moving(tmp_path, source: Slot, target: Slot) -> Job:
    """A running job moved by hand from ``source`` to ``target``: stopping, its target held."""
    store = SqliteStore(str(tmp_path / "store.db"))
    try:
        job = store.submit("q", "t", "j", ["true"], {}, "ann@laptop")
        store.place(job.id, source, "sched", "fits")
        store.started(job.id, "a1", None, "sched", "started")
        job = move_by_hand(store, store.get(job.id), target, Asker("head"))
        assert job.state == "stopping" and job.move_to is not None
        return job
    finally:
        store.close()


def a100(index: int, mig: bool) -> dict:
    return {"index": index, "uuid": "GPU-%d" % index, "name": "NVIDIA A100-SXM4-80GB",
            "memory_mib": 81920, "mig_mode": mig, "mig_capable": True, "instances": [],
            "processes": []}


def test_every_view_of_room_held_lays_a_moving_job_on_its_source_and_its_target(tmp_path):
    job = moving(tmp_path, SOURCE, TARGET)
    assert [h.slot for h in job.holding()] == [SOURCE, TARGET]
    assert [j.slot for j in jobs_by_host([job])["h"]] == [h.slot for h in job.holding()]
    assert held_by_gpu([job]) == pytest.approx({("h", 0): 0.142857, ("h", 1): 0.142857})


def test_a_mode_change_sees_the_room_a_move_holds_on_its_gpu(tmp_path):
    """A launch's change (the scheduler's before it launches, ``fractui place``'s) and an
    admin's (``fractui mig --mode``, the TUI's) of the move's target: refused, naming it."""
    job = moving(tmp_path, SOURCE, TARGET)
    share = Job(id=job.id + 1, queue="share", team="t", name="b", argv=("true",), request={},
                state="placed", submitted_at=0.0, updated_at=0.0, manual=True,
                slot=Slot("h", (1,), None, None, 6144, 0.075))
    flip = plan_flip("h", a100(1, True), False, share, [], [job, share], "uid")
    assert flip.refusal is not None and "job %d (moving here)" % job.id in flip.refusal
    by_admin = plan_mode("h", a100(1, True), False, [], [job], "uid")
    assert by_admin.refusal is not None and "job %d (moving here)" % job.id in by_admin.refusal
    # its source, too, as before; a GPU neither holds is free to change
    assert plan_mode("h", a100(0, True), False, [], [job], "uid").refusal is not None
    assert plan_mode("h", a100(2, True), False, [], [job], "uid").refusal is None


def test_a_decision_waiting_for_the_mode_a_move_also_wants_is_not_refused(tmp_path):
    """A launch that turns MIG on under a move's target, whose slot (a MIG instance) wants
    MIG on too: the move's held decision waits for that change, as a placed one would, so it
    is left out of who uses the GPU (it was named "moving here", and job b requeued)."""
    job = moving(tmp_path, SOURCE, TARGET)            # moving to 1g.10gb@6 on GPU 1
    b = Job(id=job.id + 1, queue="mig", team="t", name="b", argv=("true",), request={},
            state="placed", submitted_at=0.0, updated_at=0.0,
            slot=Slot("h", (1,), "3g.40gb", 0, None, 0.428571))
    flip = plan_flip("h", a100(1, False), True, b, [], [job, b], "uid")
    assert flip.refusal is None, flip.refusal
    placed = Job(id=job.id, queue="q", team="t", name="j", argv=("true",), request={},
                 state="placed", submitted_at=0.0, updated_at=0.0, slot=TARGET)
    assert plan_flip("h", a100(1, False), True, b, [], [placed, b], "uid").refusal is None
    # an admin's change (no decision of theirs waits for it) still names the move
    by_admin = plan_mode("h", a100(1, False), True, [], [job], "uid")
    assert by_admin.refusal is not None and "job %d (moving here)" % job.id in by_admin.refusal


def test_a_drain_of_a_moves_target_is_draining_while_the_move_holds_it(tmp_path):
    job = moving(tmp_path, SHARE_SOURCE, SHARE_TARGET)
    drain = Cordon("h", 1, DRAIN, "root", "", 0.0)
    assert state(drain, [job]) == DRAINING
    assert "job %d" % job.id in made_said(drain, [job], "fractui status")
    assert state(Cordon("h", 2, DRAIN, "root", "", 0.0), [job]) == DRAINED


def test_status_from_the_store_books_a_moving_jobs_target(tmp_path):
    """``fractui status`` with no hosts in the config (the store's word): the target's memory
    booked and the job on it, as placement and the metrics count it, not read free."""
    job = moving(tmp_path, SHARE_SOURCE, SHARE_TARGET)
    l4 = [{"index": i, "name": "NVIDIA L4", "memory_mib": 23034, "mig_mode": False}
          for i in range(3)]
    kept = Kept({"h": {"gpus": l4}}, {"h": 0.0}, {}, (), (job,), "ops@head", None, 100.0)
    gpus = {g["index"]: g for g in records(kept)[0]["gpus"]}
    assert [(gpus[i]["booked_mib"], gpus[i]["jobs"]) for i in range(3)] == [
        (6144, [job.id]), (6144, [job.id]), (0, [])]
