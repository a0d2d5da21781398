"""A MIG change by hand (fractui.sched.mig_change), carried out once the admin confirmed its
plan: by the host's agent, through ``call`` (a host session's), and audited in the store with
who. Shared by ``fractui mig`` and the TUI's GPU detail view, so both mean the same."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from fractui.sched.mig_change import MigChange, outcome
from fractui.store import Store, StoreError
from fractui.store.access import MIG
from fractui.store.intents import Asker, authorize


def carry_out(store: Store, asker: Asker, call: Callable[[str, Mapping[str, Any]], Any],
              change: MigChange) -> tuple[str, Mapping[str, Any]]:
    """Asks the agent to make ``change`` (refused by the rule unless the store says the caller
    is an admin; never one whose plan was refused), records it in the audit, and returns what
    was done in words with the agent's answer. The agent's refusals and failures (a job came
    meanwhile, NVML failed and it rolled back) are raised as they are."""
    if change.refusal is not None:
        raise ValueError("a refused plan is not carried out: %s" % change.refusal)
    actor = authorize(store, asker, MIG, None, "%s gpu %d" % (change.host, change.gpu))
    answer = call(change.method, change.params)
    said = outcome(change, answer)
    try:
        store.audit(actor, "mig", None, said, {"host": change.host, "change": change.action,
                                               **change.params})
    except StoreError as err:  # done all the same: said, so that no one makes it again
        raise type(err)(err.where, "%s; the change was made all the same, and is not in the "
                        "audit: %s" % (err.what, said)) from err
    return said, answer
