"""What an admin asks of a queued job — place it here, cancel, requeue, preempt — recorded in
the store for the lease holder to carry out. Shared by the CLI and the TUI, so both mean the same.
"""

from __future__ import annotations

from typing import Optional

from fractui.store.base import StateConflict, Store
from fractui.store.model import CANCELLED, PENDING, PLACED, RUNNING, STOP_INTENTS, Job, Slot


class Refused(Exception):
    """The job is not in a state where that can be asked; the message says why."""


def ask_stop(store: Store, job: Job, intent: str, actor: str, why: str) -> Job:
    """Cancel, requeue or preempt. A pending job is cancelled at once; a placed or running one
    becomes ``stopping`` and the scheduler stops it (requeue and preempt put it back in its
    queue as a new attempt; the audit tells them apart)."""
    if intent not in STOP_INTENTS:
        raise ValueError("unknown intent %r" % intent)
    try:
        if job.state == PENDING and intent == "cancel":
            return store.ended(job.id, (PENDING,), CANCELLED, why, actor, why, "cancel")
        if job.state in (PLACED, RUNNING):
            return store.stopping(job.id, (PLACED, RUNNING), intent, actor, why)
    except StateConflict as err:
        raise Refused("job %d changed meanwhile: %s" % (job.id, err)) from None
    raise Refused("job %d is %s: nothing to %s" % (job.id, job.state, intent))


def place_by_hand(store: Store, job: Job, slot: Slot, actor: str,
                  past_quota: Optional[str] = None) -> Job:
    """Records a manual placement; the lease holder launches it exactly there. ``past_quota``:
    why it takes its team past its quota (the admin agreed): it is then recorded as borrowed,
    preemptible like any over-quota job."""
    why = "placed by hand on %s" % slot.describe()
    if past_quota:
        why += "; it %s, so it is borrowed (preemptible)" % past_quota
    try:
        return store.place(job.id, slot, actor, why, manual=True,
                           preemptible=past_quota is not None)
    except StateConflict as err:
        raise Refused("only a pending job can be placed: %s" % err) from None
