"""What the admin side takes from one host's agent is bounded (fractui/fleet/answers.py,
``ListOf.most``; ``HostStatus.take``): a broken or hostile agent that lists millions of
processes, XID events or jobs, or pushes records of ever new jobs, has the rest left out, said
in its state and once in the log, and the other hosts' passes go on. A job record that answers
for another job than the one asked, or whose id or key mending would change, is refused as
malformed for that job. Real agents over the local fleet; the flood comes from a real program
that stands between the admin and the agent, speaking the protocol both ways."""

from __future__ import annotations

import logging
import sys

import pytest

from fractui.config import QueueConfig
from fractui.fleet import answers
from fractui.fleet.host import AnswerMalformed
from fractui.fleet.transport.local import LocalTransport
from fractui.store.model import RUNNING
from tests import localfleet
from tests.test_fleet_answers import one_job_running_unheard

local_fleet = localfleet.local_fleet

# Relays the admin's lines to the agent and the agent's back; on each job.list asked of a
# host whose state dir is named in FLOOD, first pushes records of N ended jobs and of N that
# run, all new, and a snapshot with more processes and XID events than are taken.
FLOODING = """\
import json, subprocess, sys, threading, time
N, PROCESSES = %d, %d
flooding = %r in " ".join(sys.argv)
agent = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
out, lock = sys.stdout.buffer, threading.Lock()
def send(lines):
    with lock:
        out.write(b"".join(lines))
        out.flush()
def up():
    for line in agent.stdout:
        send([line])
def pushed(method, params):
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": params}).encode() + b"\\n"
def flood():
    job = {"key": "k", "gpus": [0], "pid": None}
    gpu = {"index": 0, "name": "NVIDIA L4", "processes": [{"pid": p} for p in range(PROCESSES)],
           "health": {"xid": [{"time": 1.0, "xid": 79}] * 20}}
    return [pushed("job", dict(job, id="end%%d" %% n, state="exited",
                                   ended_at=time.time()))
            for n in range(N)] + [pushed("job", dict(job, id="run%%d" %% n, state="running"))
                                  for n in range(N)] + [
        pushed("snapshot", {"time": time.time(), "gpus": [gpu]})]
reader = threading.Thread(target=up)
reader.start()
for line in sys.stdin.buffer:
    if flooding and line.strip() and json.loads(line).get("method") == "job.list":
        send(flood())
    agent.stdin.write(line)
    agent.stdin.flush()
agent.stdin.close()
reader.join()
agent.wait()
"""


def test_a_host_flooding_jobs_processes_and_xids_has_the_rest_left_out_and_said(
        local_fleet, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, "fractui.fleet")
    monkeypatch.setattr(answers, "JOBS_MOST", 40)  # (20,000 by default: as many pushes)
    proxy = tmp_path / "flood.py"
    proxy.write_text(FLOODING % (60, answers.PROCESSES_MOST + 10, "/gpu-a"))
    monkeypatch.setattr(LocalTransport, "agent_command", lambda self, archive: (
        [sys.executable, str(proxy), sys.executable, "-m", "remote_agent"], None))
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [QueueConfig(name="whole", gpus=1)])
    session = f.fleet.session("gpu-a")
    session.call("unsubscribe")  # only the flood pushes, and the test's calls answer
    for _ in range(2):  # pushed again: said once
        session.call("job.list")
    status = session.status
    assert len(status.jobs) == 40, len(status.jobs)
    assert sorted(status.jobs) == sorted("run%d" % n for n in range(40))  # the ended gave way
    [gpu] = status.snapshot["gpus"]
    assert (len(gpu["processes"]), len(gpu["health"]["xid"])) == (answers.PROCESSES_MOST, 16)
    cut = ("its agent's record of job run%d was left out: it lists 40 jobs that have not "
           "ended, the most taken of a host")
    snapshot_cut = (
        "its agent's snapshot was cut: snapshot.gpus[].processes: %d listed, past the %d "
        "taken: the last 10 left out; snapshot.gpus[].health.xid: 20 listed, past the 16 "
        "taken: the last 4 left out" % (answers.PROCESSES_MOST + 10, answers.PROCESSES_MOST))
    assert status.state == "degraded"
    assert status.error == "; ".join([cut % 59, snapshot_cut]), status.error  # the last
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert said == ["gpu-a: " + cut % 40, "gpu-a: " + snapshot_cut], said  # once each
    job = f.submit("whole")  # the other host's pass goes on
    f.until(lambda: f.store.get(job.id).state == RUNNING)
    assert f.store.get(job.id).slot.host == "gpu-b"
    session.call("snapshot")  # the agent's own, whole: said so, and gone from the state
    assert "gpu-a: nothing of its agent's snapshot is left out any more after 2 failed tries" \
        in caplog.text
    assert status.error == cut % 59


# Relays the admin's lines to the agent and the agent's back; each subscribe answer lists N
# ended jobs before the agent's own, as an agent that kept them (its retention) lists them:
# by id, the oldest first.
KEPT_MANY = """\
import json, subprocess, sys, threading
N = %d
agent = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
asked = set()
def up():
    for line in agent.stdout:
        answer = json.loads(line) if line.strip() else None
        if isinstance(answer, dict) and answer.get("id") in asked:
            answer["result"]["jobs"][:0] = [
                {"id": "j0%%d" %% n, "key": "k%%d" %% n, "state": "exited", "gpus": [0],
                 "pid": None, "ended_at": 1.0 + n} for n in range(N)]
            line = json.dumps(answer).encode() + b"\\n"
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
reader = threading.Thread(target=up)
reader.start()
for line in sys.stdin.buffer:
    asked.update(m["id"] for m in [json.loads(line)] if m.get("method") == "subscribe")
    agent.stdin.write(line)
    agent.stdin.flush()
agent.stdin.close()
reader.join()
agent.wait()
"""


def test_a_host_that_kept_more_ended_jobs_than_taken_keeps_its_running_ones(
        local_fleet, tmp_path, monkeypatch):
    """An agent lists its jobs oldest first and keeps the ended ones for its retention (a
    week, or as long as its admin likes): past the most taken of one answer, those of jobs
    that run are taken, then those that ended last. Before: the first were taken, and a job
    that runs, listed last, was left out as the host connected again: the scheduler ended it
    as lost ("the agent on gpu-a has no record of it") while it ran."""
    proxy = tmp_path / "kept.py"
    proxy.write_text(KEPT_MANY % answers.JOBS_MOST)
    monkeypatch.setattr(LocalTransport, "agent_command", lambda self, archive: (
        [sys.executable, str(proxy), sys.executable, "-m", "remote_agent"], None))
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="whole", gpus=1)])
    job = f.submit("whole", argv=localfleet.sleeper(600))
    f.until(lambda: f.store.get(job.id).state == RUNNING)
    session = f.fleet.session("gpu-a")
    connected = session._conn
    session._drop()  # as a host that hangs up: connected again at once, subscribing again
    f.until(lambda: session._conn not in (None, connected) and session.status.state in (
        "online", "degraded"))
    ident = f.store.get(job.id).agent_job
    assert session.status.jobs[ident]["state"] == "running"
    assert len(session.status.jobs) == answers.JOBS_MOST
    assert "j00" not in session.status.jobs and "j0%d" % (answers.JOBS_MOST - 1) in \
        session.status.jobs  # the ended job that ended first gave way
    # ended records left out are history: said in the log, the host not degraded for them
    assert (session.status.state, session.status.error) == ("online", None)
    for _ in range(3):
        f.scheduler.step()
    assert f.store.get(job.id).state == RUNNING, f.store.get(job.id)


def test_an_answer_listing_more_jobs_than_taken_has_the_rest_left_out(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="half", gpu=0.5)])
    session = f.fleet.session("gpu-a")
    session.call("unsubscribe")
    record = {"id": "j1", "key": "k", "state": "exited", "gpus": [0], "pid": None}
    listed = session._checked("job.list", {"jobs": [
        dict(record, argv=["x"] * (answers.ARGV_MOST + 1))] + [record] * answers.JOBS_MOST})
    assert len(listed["jobs"]) == answers.JOBS_MOST
    assert len(listed["jobs"][0]["argv"]) == answers.ARGV_MOST
    running = dict(record, state="running")
    session._checked("job.list", {"jobs": [running] * (answers.JOBS_MOST + 1)})
    assert session.status.error == (  # a job not ended left out: the host reads failing
        "its agent's answer to job.list was cut: job.list.jobs: %d listed, past the %d taken: "
        "1 left out (taken first: the records of jobs not ended, then of those that ended "
        "last)" % (answers.JOBS_MOST + 1, answers.JOBS_MOST))
    session._checked("job.list", {"jobs": [
        dict(record, argv=["x"] * (answers.ARGV_MOST + 1))] + [record] * answers.JOBS_MOST})
    assert session.status.error == (  # (the ended job's record left out is not said here)
        "its agent's answer to job.list was cut: job.list.jobs[].argv: %d listed, past the "
        "%d taken: the last 1 left out" % (answers.ARGV_MOST + 1, answers.ARGV_MOST))


def test_a_mig_plan_past_any_gpus_bounds_is_malformed(local_fleet):
    """A plan's slot is a GPU's (a 32-bit column's at most), and what it destroys is listed
    whole or not at all: a plan shown with some of its destroys left out would not say what
    applying it does."""
    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [QueueConfig(name="slice", mig="1g.10gb")])
    session = f.fleet.session("gpu-a")
    plan = session.call("mig.plan", {"gpu": 0, "profile": "1g.10gb"})
    instance = {"uuid": None, "gi_id": 1, "profile": "1g.10gb", "start": 0, "size": 1,
                "memory_mib": 9856, "busy": False, "pids": []}
    for changed, said in (
            ({"start": 2 ** 40}, "mig.plan.start: 1099511627776 is not a whole number from 0 "
                                 "to 2147483647"),
            ({"gpu": 2 ** 31}, "mig.plan.gpu: 2147483648 is not a whole number from 0 to "
                               "2147483647"),
            ({"size": -1}, "mig.plan.size: -1 is not a whole number from 0 to 2147483647"),
            ({"destroy": [instance] * (answers.INSTANCES_MOST + 1)},
             "mig.plan.destroy: 65 listed, more than the 64 any host has"),
            ({"destroy": [dict(instance, start=2 ** 31)]},
             "mig.plan.destroy[0].start: 2147483648 is not a whole number from 0 to "
             "2147483647")):
        with pytest.raises(AnswerMalformed) as refused:
            session._checked("mig.plan", dict(plan, **changed))
        assert refused.value.reason == "malformed: " + said


def test_a_job_record_for_another_job_or_with_an_id_mending_would_change_is_refused(
        local_fleet):
    """A record whose id (or key) mending would change names a job the agent does not have,
    or another one: two records whose ids mend alike overwrote each other, and a stop by the
    mended id would reach the other job. An answer about a job that is another job's record
    would be taken as the job asked for. Each is malformed, for that job only."""
    session, good = one_job_running_unheard(local_fleet)
    other = dict(good, id="z?", key="other")
    session._notify("job", other)
    session._notify("job", dict(good, id="z\x00", key="third"))
    assert session.status.jobs["z?"] == other
    assert "\x00" not in "".join(session.status.jobs)
    assert session.status.error == (
        "its agent sent a malformed record of job 'z\\x00', ignored: job.id: 'z\\x00' is not "
        "text with no NUL or lone surrogate (mended, it would name another)")
    with pytest.raises(AnswerMalformed) as refused:
        session._checked("job.get", good, {"job": "z?"})
    assert refused.value.reason == "malformed: job.get.id: %r answers for job 'z?'" % good["id"]
    with pytest.raises(AnswerMalformed):
        session._checked("job.launch", good, {"key": "another key"})
    assert session._checked("job.get", good, {"job": good["id"]}) is good


def test_a_job_asked_for_by_its_number_is_answered_by_its_record(local_fleet):
    """Its agent finds a job by its id or by its number (``j1``, ``1``, ``01``: docs/protocol.md)
    and answers the job's record, whose id is ``j1``: that is the record of the job asked for
    (``fractui stop gpu-a/1``). Before: refused as an answer for another job, after the
    agent had stopped it, and the host read degraded."""
    session, good = one_job_running_unheard(local_fleet)
    number = good["id"][1:]
    for ref in (number, "0" + number, "j0" + number):
        assert session.call("job.get", {"job": ref})["id"] == good["id"]
    assert session.call("job.stop", {"job": number, "grace": 0})["id"] == good["id"]
    assert (session.status.state, session.status.error) == ("online", None)


def test_a_mark_of_an_answer_about_a_job_goes_when_its_agent_forgets_the_job(local_fleet):
    """A launch answered malformed marks the host degraded until a launch of that key is
    answered well; the job runs (its records come well formed), ends, and is forgotten past
    its retention, and no launch of its key is to come: the mark goes with it. Before: the
    host read degraded by it until it connected again, months maybe."""
    session, good = one_job_running_unheard(local_fleet)
    with pytest.raises(AnswerMalformed):
        session._checked("job.launch", dict(good, state=5), {"key": good["key"]})
    session._notify("job", good)
    assert session.status.state == "degraded"
    session._notify("job", dict(good, state="exited", ended_at=1.0))  # forgotten as it comes
    assert good["id"] not in session.status.jobs
    assert (session.status.state, session.status.error) == ("online", None)


def test_a_host_answering_one_call_after_another_malformed_reads_failing_until_each_mends(
        local_fleet, caplog):
    """An agent whose answers fail, one call after another, reads degraded with each, and a
    good answer to another call (or about another job) mends none of them: each is said, in
    its state and once in the log, until that call about that job is answered well. Before:
    the host read online whatever its calls answered; only its pushes marked it."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    session, good = one_job_running_unheard(local_fleet)
    ident = good["id"]
    for method in ("job.get", "job.stop"):
        with pytest.raises(AnswerMalformed):
            session._checked(method, dict(good, state=5), {"job": ident})
    session._checked("job.list", {"jobs": [good]})  # another call's good answer
    session._checked("job.get", dict(good, id="j9"), {"job": "j9"})  # another job's
    assert session.status.state == "degraded"
    assert session.status.error == "; ".join(
        "its agent answered %s about job %s malformed: %s.state: 5 is not text" % (
            method, ident, method) for method in ("job.get", "job.stop"))
    session._checked("job.get", good, {"job": ident})
    assert session.status.error == ("its agent answered job.stop about job %s malformed: "
                                    "job.stop.state: 5 is not text" % ident)
    session._checked("job.stop", good, {"job": ident})
    assert (session.status.state, session.status.error) == ("online", None)
    assert caplog.text.count("a malformed answer to") == 2, caplog.text
