"""What a host's agent says of a job that no store keeps as said (text with a NUL or a lone
surrogate, which JSON lets an agent send; a count past a 32-bit column; an exit code no
process returns) is mended where the fleet reads it (fractui.fleet.answers), so that the store
never has to refuse it: the job ends, its GPU is freed, a cancel completes, and a job whose
start was said so is not launched again. Before, the store refused the write (StoreRefused),
and the job stayed running or stopping in it, holding its GPU, until its agent forgot the
record. Real agents over the local fleet, real SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import logging
from typing import Any, Callable, Dict, Optional

import pytest

from fractui.config import QueueConfig
from fractui.fleet.answers import COLUMN_MOST
from fractui.fleet.client import AgentCallError
from fractui.store.intents import Asker, ask_stop
from fractui.store.model import CANCELLED, FAILED, RUNNING
from tests import localfleet
from remote_agent.rpc.jsonrpc import START_FAILED
from tests.test_scheduler_hostile_host import refusals

local_fleet = localfleet.local_fleet

ENDED = ("exited", "killed")
PAST = 2 ** 40
USAGE = {"samples": PAST, "util_samples": COLUMN_MOST + 1, "memory_peak_mib": PAST,
         "util_note": "MIG \ud800 \x00"}

# what the job's end record says beside its end, and what the store keeps of it: its reason,
# exit code and usage samples
ENDS: Dict[str, Any] = {
    "reason with a NUL": ({"reason": "oops \x00 there"}, ("oops ? there", 1, 0)),
    "reason with a lone surrogate": ({"reason": "oops \ud800"}, ("oops ?", 1, 0)),
    "exit code past any": ({"exit_code": PAST}, ("exited", None, 0)),
    "usage past its columns": ({"usage": USAGE}, ("exited 1", 1, COLUMN_MOST)),
    # a failed job's last line of output as a hostile agent may send it: a terminal's title
    # set, a NUL, a lone surrogate, 100,000 characters; never kept in the store's reason,
    # which every team reads (the output is its team's)
    "a hostile last line": ({"last_line": "\x1b]0;pwned\x07boom \x00\ud800" + "z" * 10 ** 5},
                            ("exited 1", 1, 0)),
    "a last line beside a kill": ({"state": "killed", "exit_code": None, "last_line": "boom",
                                   "reason": "terminated by signal SIGKILL"},
                                  ("terminated by signal SIGKILL", None, 0))}


def one_job_running(local_fleet, store_url: str) -> Any:
    """A one-GPU host running a whole-GPU job of the store's, its agent's pushes no longer
    listened to (the test hands its session what the agent would push): the fleet, the job
    and the host's session."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="whole", gpus=1)],
                    store_url=store_url)
    job = f.submit("whole")
    f.until(lambda: f.store.get(job.id).state == RUNNING)
    session = f.fleet.session("gpu-a")
    session.call("unsubscribe")
    return f, job, session


def ended_record(f: Any, session: Any, stop: Optional[Callable[[], None]] = None) -> Dict:
    """The record of the host's one job as its agent has it once the job ended: ``stop``
    makes it end (by default the test stops it), the scheduler's passes run meanwhile."""
    [record] = session.call("job.list")["jobs"]
    if stop is None:
        session.call("job.stop", {"job": record["id"], "grace": 0})
    else:
        stop()

    def ended() -> bool:
        record.update(session.call("job.get", {"job": record["id"]}))
        return record["state"] in ENDED

    f.until(ended)
    return record


def next_job_launched(f: Any, first: Any) -> None:
    """The GPU the first job held is freed: the next job is launched on it, and the first is
    not launched again."""
    second = f.submit("whole")
    f.until(lambda: f.store.get(second.id).slot is not None)
    assert f.store.get(second.id).slot.gpus == (0,)
    f.until(lambda: second.key(f.store.uid) in {r["key"] for r in f.agent_jobs()})
    assert sorted(r["key"] for r in f.agent_jobs()) == sorted(
        j.key(f.store.uid) for j in (first, second))


@pytest.mark.parametrize("said", sorted(ENDS))
def test_a_jobs_end_said_with_what_no_store_keeps_ends_it(local_fleet, store_url, caplog,
                                                           said):
    caplog.set_level(logging.INFO)
    f, job, session = one_job_running(local_fleet, store_url)
    values, (reason, code, samples) = ENDS[said]
    record = ended_record(f, session)
    session._notify("job", dict(record, **dict(dict(state="exited", exit_code=1, reason=None,
                                                    usage=None), **values)))
    f.until(lambda: f.store.get(job.id).state == FAILED)
    ended = f.store.get(job.id)
    assert (ended.reason, ended.exit_code) == (reason, code)
    [kept] = f.store.usage(0, 9e12)
    assert kept.ended_at is not None and kept.sampled.samples == samples
    assert refusals(caplog) == []
    if said == "usage past its columns":
        assert (kept.sampled.util_samples, kept.sampled.memory_peak_mib,
                kept.sampled.util_note) == (COLUMN_MOST, COLUMN_MOST, "MIG ? ?")
        assert "gpu-a: what its agent said about job %s: job.usage.samples: samples %d is past " \
               "the 0 to %d the store keeps: kept as %d (said once)" % (
                   record["id"], PAST, COLUMN_MOST, COLUMN_MOST) in caplog.text
    if said == "exit code past any":
        assert "gpu-a: what its agent said about job %s: job.exit_code: malformed: %d is no " \
               "exit code a process returns (0 to 255): read as unknown (said once)" % (
                   record["id"], PAST) in caplog.text
    next_job_launched(f, job)


def test_a_cancel_whose_end_is_said_with_what_no_store_keeps_completes(local_fleet,
                                                                       store_url, caplog):
    """The cancelled job's record, once its agent stopped it, has usage past the columns and
    a note with a lone surrogate and a NUL: the cancel completes, the usage kept mended."""
    caplog.set_level(logging.INFO)
    f, job, session = one_job_running(local_fleet, store_url)
    record = ended_record(f, session, lambda: ask_stop(f.store, f.store.get(job.id), "cancel",
                                                       Asker("head")))
    session._notify("job", dict(record, usage=USAGE))
    f.until(lambda: f.store.get(job.id).state == CANCELLED)
    [kept] = f.store.usage(0, 9e12)
    assert (kept.sampled.samples, kept.sampled.util_note) == (COLUMN_MOST, "MIG ? ?")
    assert refusals(caplog) == []
    next_job_launched(f, job)


def test_a_start_on_a_gpu_named_with_what_no_store_keeps_is_recorded_once(local_fleet,
                                                                         store_url, caplog):
    """A host naming its GPU with a NUL and a lone surrogate: the job launched on it is
    recorded running, with the GPU's model mended, and launched once."""
    caplog.set_level(logging.INFO)
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="whole", gpus=1)],
                    store_url=store_url)
    session = f.fleet.session("gpu-a")
    session.call("unsubscribe")
    snapshot = copy.deepcopy(session.call("snapshot"))
    snapshot["gpus"][0]["name"] += " \ud800\x00"
    session._notify("snapshot", snapshot)
    job = f.submit("whole")
    f.until(lambda: f.store.get(job.id).state == RUNNING)
    for _ in range(3):
        assert f.scheduler.step() is True
    assert [r["key"] for r in f.agent_jobs()] == [job.key(f.store.uid)]
    [kept] = f.store.usage(0, 9e12)
    assert kept.model is not None and kept.model.endswith(" ??"), kept.model
    assert refusals(caplog) == []


def test_an_agents_error_words_are_kept_as_every_store_keeps_them():
    """An agent's error words (a failed start's reason, kept as the job's) with a NUL and a
    lone surrogate: each reads "?", as in a host's records."""
    err = AgentCallError("job.launch", {"code": START_FAILED, "message": "cannot \x00 start",
                                        "data": {"reason": "cannot run \ud800"}}, "gpu-a")
    assert (str(err), err.reason()) == ("cannot ? start", "cannot run ?")
