"""Users and the scheduler acting on the same jobs at the same moment, each through a store
client of its own (as their processes are), on both backends: a user's ask is made of the job
as it is when it lands, not as the user last read it."""

from __future__ import annotations

import pytest

from fractui.store import Slot, open_store
from fractui.store.intents import Asker, Refused, ask_stop


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
