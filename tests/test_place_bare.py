"""A decision that books no GPU memory is never launched, end to end: simulated hosts over
the local transport (real agent daemons), a real SQLite store, the fake pynvml."""

from __future__ import annotations

from fractui.store import Slot
from tests import localfleet
from tests.test_scheduler_mig_mode import SHARE, decide

local_fleet = localfleet.local_fleet


def test_a_decision_of_a_share_of_no_memory_is_never_launched(local_fleet):
    """A decision of a share of 0 MiB (written by an older fractui's placement by hand, or
    into the store by hand) was launched as it was: the agent refused the call as malformed
    and the job failed. It goes back to its queue with the reason, no attempt counted
    against it, and is placed again."""
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SHARE])
    job = f.submit("share")
    decide(f, job, Slot("gpu-a", (0,), None, None, 0, charge=0.0))
    f.until(lambda: f.states()[job.id] in ("running", "failed"))
    ran = f.store.get(job.id)
    assert (ran.state, ran.slot.memory_mib, ran.refusals) == ("running", 10240, ()), ran.reason
    assert any(e.why.startswith("not launched: the decision books no GPU memory (a share of "
                                "0 MiB on gpu-a gpu0)") for e in f.store.audit_log()), [
        e.why for e in f.store.audit_log()]

