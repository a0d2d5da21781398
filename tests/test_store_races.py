"""Users and the scheduler acting on the same jobs at the same moment, each through a store
client of its own (as their processes are), on both backends: a user's ask is made of the job
as it is when it lands, not as the user last read it."""

from __future__ import annotations

import pytest

from fractui.store import QuotaTaken, Slot, open_store
from fractui.store.intents import Asker, Refused, ask_stop, place_by_hand


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
                                            Asker("admin%d" % i), None, 2.0))
            except Refused as err:
                refused.append(str(err))

        threads = [threading.Thread(target=admin, args=(i,)) for i in range(len(stores))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(placed) == 2 and len(refused) == len(stores) - 2, refused
        assert all("team vision now holds 2.00 of its 2.00 GPUs within its quota" in r and
                   r.endswith("place it again to be asked about going past the quota")
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
                                 "takes team vision past its quota", 2.0)
        assert borrowed.preemptible
    finally:
        for store in stores:
            store.close()
