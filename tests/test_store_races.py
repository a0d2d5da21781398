"""Users and the scheduler acting on the same jobs at the same moment, each through a store
client of its own (as their processes are), on both backends: a user's ask is made of the job
as it is when it lands, not as the user last read it."""

from __future__ import annotations

import pytest

from fractui.store import QuotaTaken, Slot, StateConflict, open_store
from fractui.store.intents import Asker, Refused, ask_stop, move_by_hand, place_by_hand
from fractui.store.model import Quota

TWO = Quota(2.0, "the quota the scheduler holds it to")


@pytest.fixture
def two(store_url):
    """The user's store client and the scheduler's, with the lease taken by the latter."""
    user, scheduler = open_store(store_url), open_store(store_url)
    try:
        yield user, scheduler, scheduler.acquire_lease("sched", 60)
    finally:
        user.close()
        scheduler.close()


def test_a_cancel_racing_the_placement_stops_the_job_rather_than_being_refused(two):
    """The user read the job pending (the TUI's row, the CLI's read before its write); the
    scheduler placed it meanwhile. The cancel is asked of the placed job — it becomes
    stopping, for the scheduler to stop — instead of being refused while the job launches."""
    user, scheduler, epoch = two
    job = user.submit("q", None, "n", ["x"], {}, "alice")
    seen = user.get(job.id)
    scheduler.place(job.id, Slot("h", (0,)), "sched", "fits", epoch=epoch)
    asked = ask_stop(user, seen, "cancel", Asker("here"))
    assert (asked.state, asked.stop_intent) == ("stopping", "cancel")
    assert [e.action for e in user.audit_log(job.id)] == ["submit", "decide", "cancel"]
    # and a requeue read on a placed job that the scheduler sent back to its queue meanwhile
    # is refused for what the job is now, not for having moved
    other = user.submit("q", None, "m", ["x"], {}, "alice")
    scheduler.place(other.id, Slot("h", (1,)), "sched", "fits", epoch=epoch)
    seen = user.get(other.id)
    scheduler.requeue(other.id, ("placed",), "sched", "refused by h", epoch=epoch)
    with pytest.raises(Refused, match="job %d is pending: nothing to requeue" % other.id):
        ask_stop(user, seen, "requeue", Asker("here"))
    cancelled = ask_stop(user, seen, "cancel", Asker("here"))
    assert cancelled.state == "cancelled"


def run_again(scheduler, job_id: int, epoch: int, slot: Slot) -> None:
    """The scheduler puts a running job back in its queue (a preemption), places it and
    launches it again: its next attempt, running where the last one did."""
    scheduler.stopping(job_id, ("running",), "preempt", "sched", "preempted", epoch=epoch)
    scheduler.requeue(job_id, ("stopping",), "sched", "preempted", epoch=epoch)
    scheduler.place(job_id, slot, "sched", "fits", epoch=epoch)
    scheduler.started(job_id, "a-again", None, "sched", "launched", epoch=epoch)


def running(user, scheduler, epoch: int, slot: Slot):
    job = user.submit("q", None, "r", ["x"], {}, "alice")
    scheduler.place(job.id, slot, "sched", "fits", epoch=epoch)
    return scheduler.started(job.id, "a-first", None, "sched", "launched", epoch=epoch)


def test_a_requeue_preempt_or_move_of_an_attempt_is_never_made_of_a_later_one(two):
    """The user read attempt 0 running and asked to requeue, preempt or move it; the scheduler
    had preempted it, placed and launched it again meanwhile (attempt 1, running as the ask
    expects). Nothing is done to attempt 1, which the user never saw: refused, saying what
    changed. A cancel is of the job, whatever its attempt: attempt 1 is stopped."""
    user, scheduler, epoch = two
    a, b = Slot("h", (0,), memory_mib=512), Slot("h", (1,), memory_mib=512)
    for ask in (lambda seen: ask_stop(user, seen, "requeue", Asker("here")),
                lambda seen: ask_stop(user, seen, "preempt", Asker("here")),
                lambda seen: move_by_hand(user, seen, b, Asker("here"))):
        seen = running(user, scheduler, epoch, a)
        run_again(scheduler, seen.id, epoch, a)
        with pytest.raises(Refused, match="job %d moved on since it was read: it is attempt 1 "
                           "now \\(running\\), sent on from attempt 0 by sched's preempt; "
                           "nothing done" % seen.id):
            ask(seen)
        now = user.get(seen.id)
        assert (now.state, now.attempt, now.slot) == ("running", 1, a)
        assert [e.action for e in user.audit_log(seen.id)][-2:] == ["decide", "launch"]
        cancelled = ask_stop(user, seen, "cancel", Asker("here"))
        assert (cancelled.state, cancelled.stop_intent, cancelled.attempt) == (
            "stopping", "cancel", 1)


class Moving:
    """The user's store client, whose first ``stopping`` or ``move`` finds the job moved on: the
    scheduler runs ``meanwhile`` just before it (``first``: after it, the user's own ask having
    landed, then answers as a retry whose first answer was lost would: StateConflict)."""

    def __init__(self, store, meanwhile, first: bool = False):
        self.store, self.meanwhile, self.first, self.asked = store, meanwhile, first, 0

    def __getattr__(self, name):
        return getattr(self.store, name)

    def _ask(self, write, *args, **kwargs):
        self.asked += 1
        if self.asked > 1:
            return write(*args, **kwargs)
        if self.first:
            write(*args, **kwargs)
            self.meanwhile()
            raise StateConflict("the answer was lost; made again, the job had moved on")
        self.meanwhile()
        return write(*args, **kwargs)

    def stopping(self, *args, **kwargs):
        return self._ask(self.store.stopping, *args, **kwargs)

    def move(self, *args, **kwargs):
        return self._ask(self.store.move, *args, **kwargs)

    def place(self, *args, **kwargs):
        return self._ask(self.store.place, *args, **kwargs)


def test_an_ask_read_again_after_a_conflict_is_not_made_of_a_later_attempt(two):
    """The requeue's first write found the job sent back (a launch refused), and before it
    was read again the scheduler placed and launched it again: the requeue is not asked of
    that later attempt (it was: asked again of the job as it is). Where the user's own first
    try is what moved the job on (it landed, its answer lost, the scheduler carried it out
    and ran the job again), it is answered as done, once in the audit, not asked again."""
    user, scheduler, epoch = two
    a = Slot("h", (0,), memory_mib=512)
    seen = running(user, scheduler, epoch, a)

    def relaunch() -> None:
        scheduler.requeue(seen.id, ("running",), "sched", "lost h", epoch=epoch)
        scheduler.place(seen.id, a, "sched", "fits", epoch=epoch)
        scheduler.started(seen.id, "a-again", None, "sched", "launched", epoch=epoch)
    with pytest.raises(Refused, match="it is attempt 1 now \\(running\\), sent on from "
                       "attempt 0; nothing done"):
        ask_stop(Moving(user, relaunch), seen, "requeue", Asker("here"))
    assert (user.get(seen.id).state, user.get(seen.id).attempt) == ("running", 1)
    assert "requeue" not in [e.action for e in user.audit_log(seen.id)]

    for intent in ("requeue", "move"):
        seen = running(user, scheduler, epoch, a)
        there = Slot("h", (1,), memory_mib=512) if intent == "move" else a

        def carried_out() -> None:
            if intent == "move":
                scheduler.moved(seen.id, "sched", "moved", epoch=epoch)
            else:
                scheduler.requeue(seen.id, ("stopping",), "sched", "requeued", epoch=epoch)
                scheduler.place(seen.id, there, "sched", "fits", epoch=epoch)
            scheduler.started(seen.id, "a-next", None, "sched", "launched", epoch=epoch)
        store = Moving(user, carried_out, first=True)
        if intent == "move":
            answer = move_by_hand(store, seen, there, Asker("here"))
        else:
            answer = ask_stop(store, seen, intent, Asker("here"))
        assert answer == user.get(seen.id)
        assert (answer.state, answer.attempt, answer.slot) == ("running", 1, there)
        assert [e.action for e in user.audit_log(seen.id)].count(intent) == 1


def test_a_place_by_hand_of_an_attempt_is_never_made_of_a_later_one(two):
    """The admin read the job pending (attempt 0) and placed it by hand; the scheduler had
    placed, launched and preempted it meanwhile, or did so after the admin's own placement
    landed with its answer lost. Attempt 1, pending again, is not placed: the admin never saw
    it. Refused, saying what changed; the attempt read placed there already is done."""
    user, scheduler, epoch = two
    a, b = Slot("h", (0,), memory_mib=512), Slot("h", (1,), memory_mib=512)

    def preempted(job_id: int) -> None:
        if user.get(job_id).state == "pending":
            scheduler.place(job_id, a, "sched", "fits", epoch=epoch)
        scheduler.started(job_id, "a-first", None, "sched", "launched", epoch=epoch)
        scheduler.stopping(job_id, ("running",), "preempt", "sched", "preempted", epoch=epoch)
        scheduler.requeue(job_id, ("stopping",), "sched", "preempted", epoch=epoch)
    for first in (False, True):  # the scheduler before the admin's write, or after it
        seen = user.submit("q", None, "p", ["x"], {}, "alice")
        store = Moving(user, lambda: preempted(seen.id), first=first)
        with pytest.raises(Refused, match="job %d moved on since it was read: it is attempt 1 "
                           "now \\(pending\\), sent on from attempt 0 by sched's preempt; "
                           "nothing done: place it again to place it as it is now" % seen.id):
            place_by_hand(store, seen, b, Asker("here"))
        now = user.get(seen.id)
        assert (now.state, now.attempt, now.slot) == ("pending", 1, None), first
        # as read now, its answer lost: placed, answered as done, placed once
        placed = place_by_hand(Moving(user, lambda: None, first=True), now, b, Asker("here"))
        assert placed == user.get(seen.id) and (placed.state, placed.slot) == ("placed", b)
        assert [e.action for e in user.audit_log(seen.id)].count("place") == 1 + first


def test_admins_placing_by_hand_at_once_never_take_a_team_past_its_quota(store_url):
    """Six admins (a client each) place six jobs of team vision by hand at the same moment,
    each having read the team within its 2-GPU quota: two are placed within it, the others
    are refused as the quota taken meanwhile (for them to be asked about borrowing) — none is
    recorded within a quota it passes. And the scheduler's decision, made within the quota
    before a placement by hand took it, is refused as it is written."""
    import threading

    stores = [open_store(store_url) for _ in range(6)]
    try:
        jobs = [stores[0].submit("q", "vision", "n%d" % i, ["x"], {}, "alice")
                for i in range(len(stores) + 1)]
        start = threading.Barrier(len(stores))
        placed, refused = [], []

        def admin(i: int) -> None:
            seen = stores[i].get(jobs[i].id)  # pending, the team holding nothing
            start.wait()
            try:
                placed.append(place_by_hand(stores[i], seen, Slot("h", (i,), charge=1.0),
                                            Asker("admin%d" % i), None, TWO))
            except Refused as err:
                refused.append(str(err))

        threads = [threading.Thread(target=admin, args=(i,)) for i in range(len(stores))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(placed) == 2 and len(refused) == len(stores) - 2, refused
        assert all("team vision now holds 2.00 of its 2.00 GPUs within its quota" in r and
                   r.endswith("; counted against the quota the scheduler holds it to; place it "
                              "again to be asked about going past the quota")
                   for r in refused), refused
        held = [j for j in stores[0].jobs() if j.state == "placed"]
        assert sum(j.slot.charge for j in held if not j.preemptible) == 2.0
        # the scheduler's decision within the quota as its pass read it, written after
        epoch = stores[0].acquire_lease("sched", 60)
        with pytest.raises(QuotaTaken):
            stores[0].place(jobs[-1].id, Slot("h", (7,), charge=0.5), "sched", "within quota",
                            epoch=epoch, quota=2.0)
        assert stores[0].get(jobs[-1].id).state == "pending"
        # an admin who agrees to borrow is not held to it: recorded preemptible
        borrowed = place_by_hand(stores[1], stores[1].get(jobs[-1].id),
                                 Slot("h", (7,), charge=0.5), Asker("admin"),
                                 "takes team vision past its quota", TWO)
        assert borrowed.preemptible
    finally:
        for store in stores:
            store.close()
