"""A MIG change by hand (fractui.sched.mig_change), carried out once the admin confirmed its
plan: by the host's agent, through ``call`` (a host session's), and audited in the store with
who. Shared by ``fractui mig`` and the TUI's GPU detail view, so both mean the same."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from fractui.fleet.client import AgentCallError
from fractui.fleet.host import AnswerLost
from fractui.sched.mig_change import MigChange, outcome
from fractui.store import Store, StoreError
from fractui.store.access import MIG
from fractui.store.intents import Asker, authorize


def carry_out(store: Store, asker: Asker, call: Callable[[str, Mapping[str, Any]], Any],
              change: MigChange) -> tuple[str, Mapping[str, Any]]:
    """Asks the agent to make ``change`` (refused by the rule unless the store says the caller
    is an admin; never one whose plan was refused), records it in the audit, and returns what
    was done in words with the agent's answer. The agent's refusals and failures (a job came
    meanwhile, NVML failed and it rolled back) are raised as they are; a failure that left the
    GPU changed is audited first, as asked."""
    if change.refusal is not None:
        raise ValueError("a refused plan is not carried out: %s" % change.refusal)
    actor = authorize(store, asker, MIG, None, "%s gpu %d" % (change.host, change.gpu))
    detail = {"host": change.host, "change": change.action, **change.params}
    try:
        answer = call(change.method, change.params)
    except AnswerLost as err:  # it may have been made: audited as asked, as the scheduler's
        _audit(store, actor, "asked to %s; the answer was lost (%s): it may have been made"
               % (change.text, err.reason), detail, "the change may have been made")
        raise
    except AgentCallError as err:
        if err.left_changed:  # a failure that changed the GPU all the same: who asked
            _audit(store, actor, "%s gpu %d: %s" % (change.host, change.gpu, err), detail,
                   "the GPU was left changed")
        raise
    said = outcome(change, answer)
    _audit(store, actor, said, detail, "the change was made all the same")
    return said, answer


def _audit(store: Store, actor: str, said: str, detail: Mapping[str, Any], made: str) -> None:
    """The audit entry of a change the agent was asked to make: one the store cannot take is
    said with ``made`` and what it would have said, so that no one makes the change again;
    one whose answer was lost, as maybe in the audit."""
    try:
        store.audit(actor, "mig", None, said, detail)
    except StoreError as err:
        raise type(err)(err.where, "%s; %s, and %s: %s" % (
            err.what, made, "whether it is in the audit is not known" if err.unknown else
            "is not in the audit", said)) from err
