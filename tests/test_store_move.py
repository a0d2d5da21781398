"""An admin's move of a placed or running job, as the store keeps it (on SQLite and PostgreSQL):
one intent, durable when acknowledged, audited with who and where to, answered as done when
asked again, authorized in intents alone, and carried out in one write that places the job
on the slot it held, as its next attempt (docs/decisions.md, "Moving a job by hand")."""

from __future__ import annotations

import pytest

from fractui.store import Slot, open_store
from fractui.store.access import Denied
from fractui.store.base import Identity, StateConflict
from fractui.store.intents import Asker, Refused, ask_stop, move_by_hand, place_by_hand
from fractui.store.model import Quota

A = Slot("gpu-a", (0,), memory_mib=512, charge=0.25)
B = Slot("gpu-b", (1,), "3g.40gb", 4, charge=3 / 7, layout_version="v9")
HALF = Quota(0.5, "the quota the scheduler holds it to")


@pytest.fixture
def store(store_url):
    store = open_store(store_url)
    yield store
    store.close()


def running(store, team=None):
    job = store.submit("q", team, "r", ["x"], {}, "me@h")
    store.place(job.id, A, "sched", "decided")
    return store.started(job.id, "a1", None, "sched", "launched")


def test_a_move_is_one_intent_audited_and_asked_again_is_done(store):
    job = running(store)
    me = Asker("head")
    moving = move_by_hand(store, job, B, me)
    assert (moving.state, moving.stop_intent, moving.slot, moving.attempt) == (
        "stopping", "move", A, 0)
    # held without the layout version: other jobs may come and go around it meanwhile
    assert moving.move_to == Slot("gpu-b", (1,), "3g.40gb", 4, charge=3 / 7)
    user = store.identity().user
    entry = store.audit_log(job.id)[-1]
    assert (entry.action, entry.actor) == ("move", "%s@head" % user)
    assert entry.why == moving.reason == (
        "moving by %s@head from gpu-a gpu0 512 MiB to gpu-b gpu1 3g.40gb at slot 4" % user)
    assert entry.detail["move_to"]["host"] == "gpu-b"
    assert store.get(job.id) == moving  # durable: read back as acknowledged
    entries = len(store.audit_log(limit=1000))
    assert move_by_hand(store, store.get(job.id), B, me) == moving  # a retry: done
    assert move_by_hand(store, job, B, me) == moving  # (of the job as first read, too)
    assert len(store.audit_log(limit=1000)) == entries

    placed = store.moved(job.id, "sched", "stopped; placed by hand there")
    assert (placed.state, placed.attempt, placed.slot, placed.manual, placed.move_to,
            placed.agent_job, placed.stop_intent) == (
        "placed", 1, moving.move_to, True, None, None, None)
    assert [e.action for e in store.audit_log(job.id)][-2:] == ["move", "moved"]
    closed = [u for u in store.usage(0, 1e12) if u.job == job.id]
    assert [(u.attempt, u.outcome) for u in closed] == [(0, "requeued")]
    entries = len(store.audit_log(limit=1000))
    assert move_by_hand(store, job, B, me) == placed  # done: it is there now
    assert len(store.audit_log(limit=1000)) == entries


def test_a_move_is_refused_for_a_pending_or_ended_job_and_for_no_admin(store, monkeypatch):
    me = Asker("head")
    waiting = store.submit("q", None, "w", ["x"], {}, "me@h")
    with pytest.raises(Refused, match="job %d is pending: it is placed, not moved" % waiting.id):
        move_by_hand(store, waiting, B, me)
    job = running(store)
    store.ended(job.id, ("running",), "done", None, "sched", "exited 0", "end")
    with pytest.raises(Refused, match="job %d is done: only a placed or running job is moved"
                       % job.id):
        move_by_hand(store, job, B, me)  # read while it ran: it ended meanwhile
    other = running(store, team="vision")
    monkeypatch.setattr(store, "identity", lambda: Identity("bob", admin=False,
                                                            teams=frozenset({"vision"})))
    with pytest.raises(Denied, match="to move job %d you must be an admin" % other.id):
        move_by_hand(store, other, B, me)
    assert store.get(other.id).state == "running"
    assert [e.action for e in store.audit_log(other.id)] == ["submit", "decide", "launch"]


def test_a_requeue_of_a_moving_job_is_refused_saying_it_runs_again_there_a_cancel_ends_it(
        store):
    """A requeue (a preemption) of a job stopping to move is refused, but not as 'nothing to
    requeue': once stopped the job is placed on the slot held for it and runs again, so its
    user is told where, and to ask once it is placed there; nothing is recorded. A cancel
    takes the move over: the job ends cancelled, the slot held for it let go, and the lease
    holder's ``moved`` (read before the cancel) finds it no longer moving."""
    job = running(store)
    move_by_hand(store, job, B, Asker("head"))
    entries = len(store.audit_log(limit=1000))
    for intent in ("requeue", "preempt"):
        with pytest.raises(Refused) as refused:
            ask_stop(store, store.get(job.id), intent, Asker("here"))
        assert str(refused.value) == (
            "job %d is stopping to be moved to gpu-b gpu1 3g.40gb at slot 4 (an admin's move: "
            "once stopped, it is placed there, to run again): %s it then" % (job.id, intent))
    assert len(store.audit_log(limit=1000)) == entries
    cancelled = ask_stop(store, store.get(job.id), "cancel", Asker("here"))
    assert (cancelled.state, cancelled.stop_intent, cancelled.move_to) == (
        "stopping", "cancel", None)
    assert cancelled.held_charge == A.charge  # the target's room is no longer held
    with pytest.raises(StateConflict, match="stopping to cancel, not to move"):
        store.moved(job.id, "sched", "stopped; placed by hand there")
    ended = store.ended(job.id, ("stopping",), "cancelled", cancelled.reason, "sched",
                        "cancelled", "end")
    assert (ended.state, ended.attempt, ended.slot) == ("cancelled", 0, A)


def test_a_move_past_the_quota_is_refused_unless_agreed_and_its_target_is_held(store):
    me = Asker("head")
    job = running(store, team="vision")  # holds 0.25 of vision's 0.5
    with pytest.raises(Refused, match="not moved: team vision now holds 0.00 of its 0.50"):
        move_by_hand(store, job, Slot("gpu-b", (0,), memory_mib=4096, charge=0.75), me,
                     quota=HALF)
    assert store.get(job.id).state == "running"
    moving = move_by_hand(store, job, B, me, quota=HALF)  # 3/7 fits without its own 0.25
    assert moving.held_charge == pytest.approx(3 / 7)  # the larger of its two slots
    other = store.submit("q", "vision", "o", ["x"], {}, "me@h")
    with pytest.raises(Refused, match="team vision now holds 0.43 of its 0.50"):
        place_by_hand(store, other, A, me, quota=HALF)
    borrowed = move_by_hand(store, running(store, "vision"), Slot("gpu-c", (0,), memory_mib=512,
                                                                  charge=0.25),
                            me, "takes vision past", quota=HALF)
    assert borrowed.move_borrowed
    assert store.moved(borrowed.id, "sched", "moved").preemptible


def test_a_borrowed_job_moved_within_the_quota_holds_that_room_within_it_while_it_stops(
        store):
    """A borrowed (preemptible) job moved to a slot that fits its team's quota runs there
    within the quota once moved; while it stops, that room is its team's within the quota
    already, so no other placement of the team takes it meanwhile (else the team would be
    past its quota once the move is carried out, with no job to preempt for it)."""
    me = Asker("head")
    lent = store.submit("q", "vision", "lent", ["x"], {}, "me@h")
    store.place(lent.id, A, "sched", "decided", preemptible=True)
    lent = store.started(lent.id, "a1", None, "sched", "launched")  # 0.25, borrowed
    moving = move_by_hand(store, lent, Slot("gpu-b", (0,), memory_mib=4096, charge=0.5), me,
                          quota=HALF)
    assert (moving.move_borrowed, moving.preemptible) == (False, True)
    other = store.submit("q", "vision", "o", ["x"], {}, "me@h")
    with pytest.raises(Refused, match="team vision now holds 0.50 of its 0.50"):
        place_by_hand(store, other, A, me, quota=HALF)
    assert store.get(other.id).state == "pending"
    assert not store.moved(lent.id, "sched", "moved").preemptible  # within the quota there


def test_a_job_the_lease_holder_would_never_launch_again_is_not_moved(tmp_path):
    """On an SQLite store its group writes (its rows vouch for no admin) the lease holder fails
    a job of no run_as rather than launch it as the agent's user: a job of before the store
    was shared, say. Moved, it would be stopped only for its next attempt to fail; the move
    is refused, saying why, and it runs on."""
    from fractui.store.sqlite import SqliteStore
    path = tmp_path / "store.db"
    store = SqliteStore(str(path))
    try:
        old = running(store)  # run_as none: as the agent's user, launched before
        path.chmod(0o660)  # then shared with a group
        with pytest.raises(Refused) as refused:
            move_by_hand(store, old, B, Asker("head"))
        assert str(refused.value) == (
            "job %d is not moved: stopped, its next attempt would be failed, not launched: it "
            "would run as the agent's user, and this store's rows vouch for no admin: its file "
            "%s is writable by its group (mode 0660), so anyone who can write it could have "
            "written this job; on such a store every job runs as its submitter (run_as), and "
            "an admin runs one as the agent's user with fractui launch; it runs on where it is"
            % (old.id, path))
        assert store.get(old.id) == old
        mine = store.started(store.place(store.submit(
            "q", None, "r", ["x"], {}, "me@h", run_as="me").id, A, "sched", "decided").id,
            "a2", None, "sched", "launched")
        assert move_by_hand(store, mine, B, Asker("head")).state == "stopping"  # (run_as)
    finally:
        store.close()
