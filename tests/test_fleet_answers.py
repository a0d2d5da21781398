"""An agent's answers are checked where they come in (fractui/fleet/answers.py), so that one
broken or hostile agent cannot stop the scheduler or the TUI for the whole fleet. A fuzzer
changes one part at a time of a real agent's hello, snapshot and job records to a hostile value
(or leaves it out): each change is refused, naming that part, or every reader of the fleet's
state takes it without an exception — scheduling, the preview, the TUI's map, jobs and GPU
views, `fractui status`, metrics and usage accounting. A host whose agent sends a malformed
snapshot keeps its last good one and says why, until a good one comes."""

from __future__ import annotations

import copy
import io
import json
import logging
import random
import sys
import time
import traceback
from typing import Any, Callable, Dict, Iterable, Iterator, List, Tuple

import pytest
from rich.console import Console

from fractui import commands
from fractui.commands import launched_words
from fractui.config import HostConfig, QueueConfig, TeamConfig
from fractui.fleet.doctor import agent_words
from fractui.fleet import answers, host
from fractui.fleet.client import AgentClient
from fractui.fleet.host import AnswerLost, HostStatus, hello_problem
from fractui.fleet.transport.base import AgentProcessError
from fractui.fleet.transport.local import process_stream
from fractui.job_commands import agent_row, agent_why
from fractui.metrics.families import families
from fractui.metrics.state import MetricsState
from fractui.sched.fleetview import HostView, build_hosts, outside_use, signature
from fractui.sched.mig_change import CREATE, DESTROY, MODE, MigChange, outcome, plan_create
from fractui.sched.preview import candidates
from fractui.sched.queueing import schedule
from fractui.store.model import PENDING, RUNNING, Job, Slot, tail_text
from fractui.tui.gpu_screen import describe
from fractui.tui.health import gpu_series, health_text
from fractui.tui.history import History
from fractui.tui.jobrows import job_rows
from fractui.tui.model import FleetModel, StoreView
from fractui.usage.gputime import GpuClock
from remote_agent import PROTOCOL_VERSION
from tests import localfleet
from tests.test_agent_health import until_health
from tests.conftest import stop_host
from tests.test_caps import _running, _stopped
from tests.test_jobs import wait_job

local_fleet = localfleet.local_fleet

UID = "fuzz0001"
QUEUES = [QueueConfig(name="quarter", gpu=0.25), QueueConfig(name="half", gpu=0.5),
          QueueConfig(name="whole", gpus=1), QueueConfig(name="slice", mig="1g.10gb")]
TEAMS = [TeamConfig("nlp", quota_gpus=1.0)]


def _job(id_: int, queue: str, request: Dict[str, Any], state: str = PENDING,
         slot: Slot | None = None) -> Job:
    return Job(id=id_, queue=queue, team="nlp", name="j%d" % id_, argv=("x",), request=request,
               state=state, submitted_at=float(id_), updated_at=0.0, slot=slot)


STORE = (_job(1, "quarter", {"gpu": 0.25}, RUNNING, Slot("h", (1,), memory_mib=5758)),
         _job(2, "slice", {"mig": "3g.40gb"}, RUNNING, Slot("h", (0,), profile="3g.40gb",
                                                           start=0)),
         _job(3, "half", {"gpu": 0.5}), _job(4, "whole", {"gpus": 1}),
         _job(5, "slice", {"mig": "1g.10gb"}))


def _real_answers(agent) -> Tuple[Dict[str, Any], Dict[str, Any], List[Dict[str, Any]]]:
    """hello, a snapshot and the job records of a real agent on a simulated A100 in MIG mode
    and an L4: a share and a MIG job, with usage sampled, and one that failed saying why (its
    last line); processes of a job, of no job and the jobs' MPS server; an ECC error and an
    XID."""
    failed = agent.call("job.launch", key="k-failed", gpu=1, memory_mib=100,
                        argv=["sh", "-c", "echo 'RuntimeError: boom' >&2; exit 1"])
    assert wait_job(agent, failed["id"])["last_line"] == "RuntimeError: boom"
    share = agent.call("job.launch", key=STORE[0].key(UID), gpu=1, memory_mib=5758,
                       argv=list(localfleet.sleeper(120)))
    agent.call("job.launch", key=STORE[1].key(UID), gpu=0,
               mig={"profile": "3g.40gb", "start": 0}, argv=list(localfleet.sleeper(120)))
    running = wait_job(agent, share["id"], states=("running",))
    agent.call("sim.add_process", gpu=1, used_mib=900, pid=running["pid"])
    agent.call("sim.add_process", gpu=1, used_mib=500)
    agent.call("sim.ecc", gpu=1, corrected=2)
    # the watcher's thread takes an XID as NVML hands it on: it is waited for, both ways
    until_health(agent, 1, lambda h: "xid_note" not in h, "the XID watcher registered")
    agent.call("sim.xid", gpu=1, xid=79)
    until_health(agent, 1, lambda h: h["xid"], "XID 79 seen")
    deadline = time.time() + 30
    while not agent.call("job.get", job=share["id"]).get("usage"):
        assert time.time() < deadline, "no usage sample came"
        time.sleep(0.2)
    return agent.call("hello"), agent.call("snapshot"), agent.call("job.list")["jobs"]


def _paths(value: Any, path: str, steps: Tuple[Any, ...] = ()
           ) -> List[Tuple[str, Tuple[Any, ...], Any]]:
    """Every part of ``value``, the containers too: the path ``answers`` names it by, the keys
    and indexes that reach it, and the part."""
    found = [(path, steps, value)]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, "%s.%s" % (path, key), steps + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, "%s[%d]" % (path, i), steps + (i,))
    return found


MAY_BE_NULL = [  # docs/protocol.md: what NVML did not say, and what does not apply
    ("hello", "driver_version"), ("hello", "links"), ("hello", "links_error"),
    ("hello", "privileges", "reason"), ("hello", "runtimes", "*"),
    ("snapshot", "gpus", "*", "utilization_gpu"), ("snapshot", "gpus", "*", "memory_used_mib"),
    ("snapshot", "gpus", "*", "instances", "*", "uuid"),
    ("snapshot", "gpus", "*", "instances", "*", "memory_used_mib"),
    ("snapshot", "gpus", "*", "processes", "*", "used_mib"),
    ("snapshot", "gpus", "*", "processes", "*", "instance"),
    ("snapshot", "gpus", "*", "processes", "*", "job"),
    ("snapshot", "gpus", "*", "health"),
    ("snapshot", "gpus", "*", "health", "temperature_c"),
    ("snapshot", "gpus", "*", "health", "slowdown_c"),
    ("snapshot", "gpus", "*", "health", "power_mw"),
    ("snapshot", "gpus", "*", "health", "power_limit_mw"),
    ("snapshot", "gpus", "*", "health", "ecc_volatile"),
    ("snapshot", "gpus", "*", "health", "ecc_volatile", "corrected"),
    ("snapshot", "gpus", "*", "health", "throttle"),
    ("snapshot", "gpus", "*", "health", "xid", "*", "gi_id"),
    ("snapshot", "gpus", "*", "health", "xid", "*", "ci_id"),
] + [("job", key) for key in (
    "cwd", "instance", "mig", "memory_mib", "exit_code", "reason", "pid", "started_at",
    "ended_at", "run_as", "cgroup", "usage", "image", "container", "container_cgroup",
    "last_line", "fault")] + [
    ("job", "usage", key) for key in ("util_mean", "util_note")]


def _may_be_null(answered: Dict[str, Any]
                 ) -> List[Tuple[Tuple[str, ...], str, Tuple[Any, ...]]]:
    """Each part of the answers that ``MAY_BE_NULL`` names, as (pattern, answer, steps)."""
    found = []
    for name, value in answered.items():
        for pattern in MAY_BE_NULL:
            if pattern[0] == name.split()[0]:
                found += [(pattern, name, steps) for steps in _reach(value, pattern[1:], ())]
    return found


def _reach(value: Any, pattern: Tuple[str, ...], steps: Tuple[Any, ...]
           ) -> List[Tuple[Any, ...]]:
    if not pattern:
        return [steps]
    head, rest = pattern[0], pattern[1:]
    if isinstance(value, list) and head == "*":
        return [s for i, item in enumerate(value) for s in _reach(item, rest, steps + (i,))]
    if isinstance(value, dict) and head == "*":
        return [s for key, item in value.items() for s in _reach(item, rest, steps + (key,))]
    if isinstance(value, dict) and head in value:
        return _reach(value[head], rest, steps + (head,))
    return []


HOSTILE = [None, True, False, -1, 0, 1, 3, 5, 7, 64, 2 ** 70, -(2 ** 70), 1.5, float("nan"),
           float("inf"), "", "x", "j1", "j2", "GPU 0", "1g.10gb", "7g.80gb", [], [1], ["x"],
           [None], {}, {"a": 1}, {"index": "x"}]
LEFT_OUT = object()


def _changed(value: Any, steps: Tuple[Any, ...], to: Any) -> Any:
    """``value`` with the part that ``steps`` reach set to ``to`` (or left out)."""
    if not steps:
        return to
    out = copy.deepcopy(value)
    parent = out
    for step in steps[:-1]:
        parent = parent[step]
    if to is LEFT_OUT:
        del parent[steps[-1]]
    else:
        parent[steps[-1]] = to
    return out


def _assert_named(said: str, path: str, steps: Tuple[Any, ...], to: Any) -> None:
    """That a refusal names the part changed (or, one left out, the part that holds it)."""
    where = path
    if to is LEFT_OUT:
        where = path[:-len("[%d]" % steps[-1] if isinstance(steps[-1], int)
                           else ".%s" % steps[-1])]
    assert said[len(where):len(where) + 1] in (":", ".", "[") and said.startswith(where), (
        path, to, said)


def _read_everywhere(hello: Any, snapshot: Any, jobs: Dict[str, Any]) -> None:
    """Every reader of a host's state, given one host's answers."""
    status = HostStatus("h", state="online", hello=hello, snapshot=snapshot, jobs=jobs)
    view = HostView("h", "online", hello, snapshot, jobs)
    build_hosts([view], STORE, UID)
    signature(view)
    outside_use([view])
    schedule([view], STORE, QUEUES, TEAMS, UID)
    for job in STORE[2:]:
        candidates([view], STORE, UID, job)
    store = StoreView(UID, STORE)
    model = FleetModel(["h"])
    model.set_store(store)
    model.update(status)
    job_rows(store, {"h": status}, 100.0)
    console = Console(file=io.StringIO(), width=120)
    for gpu in (snapshot or {}).get("gpus") or []:
        for part in describe(status, "h", gpu["index"], store, "red")[:2]:
            console.print(part)
    history = History()
    history.record("h", snapshot, jobs)
    for gpu in (snapshot or {}).get("gpus") or []:
        console.print(health_text(gpu, 100.0, "red"))
        console.print(*gpu_series(history, "h", gpu))
    hello_problem(hello, snapshot)
    agent_words(hello, HostConfig("h", agent="image"))
    for ident, record in jobs.items():
        launched_words("h/" + ident, record)
        agent_row(dict(record, host="h", ref="h/" + ident))
        agent_why(record)
    record = status.record()
    json.dumps(record)
    for gpu in record["gpus"]:
        commands._gpu_summary(gpu)
        "    gpu%-3s %-28s" % (gpu["index"], gpu["name"])
    clock = GpuClock(bucket_s=60)
    clock.observe([view], STORE, 0.0)
    clock.observe([view], STORE, 5.0)
    families(MetricsState(now=10.0, holder="h", hosts=[view], jobs=STORE, teams=TEAMS,
                          queues=[q.name for q in QUEUES], lease_held=True,
                          store_reachable=True))


def _answered(start_agent, tmp_path) -> Dict[str, Any]:
    """A real agent's answers by name ("hello", "snapshot", "job j1", ...), each read
    everywhere as it came."""
    agent = start_agent("1xA100-80GB:mig,1xL4", str(tmp_path / "host"),
                        "--usage-sample-s", "1")
    server = _running("nvidia-cuda-mps-server")
    try:
        agent.call("sim.add_process", gpu=1, used_mib=66, pid=server.pid)
        hello, snapshot, jobs = _real_answers(agent)
    finally:
        _stopped(server)
    assert any(p.get("service") == "mps" for g in snapshot["gpus"] for p in g["processes"])
    assert any(j.get("usage") for j in jobs)
    answered = {"hello": hello, "snapshot": snapshot}
    answered.update({"job %s" % j["id"]: j for j in jobs})
    for name, value in answered.items():
        assert answers.problem(name.split()[0], value) is None, name
    _read_everywhere(hello, snapshot, {j["id"]: j for j in jobs})
    return answered


def test_each_part_a_correct_agent_may_leave_null_is_read_everywhere(start_agent, tmp_path):
    answered = _answered(start_agent, tmp_path)
    nulls = _may_be_null(answered)
    assert {pattern for pattern, _name, _steps in nulls} == set(MAY_BE_NULL)  # each one tried
    for _pattern, name, steps in nulls:  # what the protocol lets a correct agent say
        changed = dict(answered, **{name: _changed(answered[name], steps, None)})
        assert answers.problem(name.split()[0], changed[name]) is None, (name, steps)
        _read_everywhere(changed["hello"], changed["snapshot"],
                         {j["id"]: j for n, j in changed.items() if n.startswith("job")})


@pytest.mark.slow
def test_each_part_is_refused_by_name_or_read_everywhere_without_an_error(start_agent,
                                                                           tmp_path):
    answered = _answered(start_agent, tmp_path)
    rng = random.Random(18)
    parts = [(name, path, steps) for name, value in answered.items()
             for path, steps, _part in _paths(value, name.split()[0])]

    def cases() -> Iterator[Case]:
        for _ in range(3000):
            name, path, steps = rng.choice(parts)
            to = rng.choice(HOSTILE + ([LEFT_OUT] if steps else []))
            changed = dict(answered, **{name: _changed(answered[name], steps, to)})
            yield path, steps, to, name.split()[0], changed[name], changed

    _refused_by_name_or_read(cases(), lambda changed: _read_everywhere(
        changed["hello"], changed["snapshot"],
        {j["id"]: j for n, j in changed.items() if n.startswith("job")}))


Case = Tuple[str, Tuple[Any, ...], Any, str, Any, Any]
"""A part changed: its path, the steps to it, what it was set to, then the answer's method,
the answer changed, and what the readers are given."""


def _refused_by_name_or_read(cases: Iterable[Case], read: Callable[[Any], None]) -> None:
    """Each case refused where it comes in, naming the part changed, or ``read`` without an
    exception; both sides tried."""
    failed, refused, done = [], 0, 0
    for path, steps, to, method, answer, given in cases:
        said = answers.problem(method, answer)
        if said is not None:
            refused += 1
            _assert_named(said, path, steps, to)
            continue
        done += 1
        try:
            read(given)
        except Exception:
            failed.append("%s = %r: %s" % (path, "left out" if to is LEFT_OUT else to,
                                           traceback.format_exc(limit=-3)))
    assert not failed, "\n".join(failed[:12]) + "\n(%d in all)" % len(failed)
    assert refused > 100 and done > 100  # both sides were tried


def _read_answer(method: str, answer: Any) -> None:
    """What the admin side makes of a call's answer (those that ``_read_everywhere`` does not
    read): ``fractui mig``'s lines, a MIG change's outcome in the audit, a job's output."""
    if method == "mig.plan":  # fractui mig's line; it passes start and layout_version on
        plan_create("h", {"gpu": 0, "profile": "1g.10gb"}, answer)
    elif method == "mig.apply":
        outcome(MigChange("h", 0, CREATE, "", None, method, {"gpu": 0}), answer)
    elif method == "mig.destroy":
        outcome(MigChange("h", 0, DESTROY, "", None, method, {"gpu": 0}), answer)
    elif method == "mig.set_mode":
        for enabled in (True, False):
            outcome(MigChange("h", 1, MODE, "", None, method, {"gpu": 1, "enabled": enabled}),
                    answer)
    else:
        tail_text(list(answer["lines"]))


def test_each_part_of_a_call_answer_is_refused_by_name_or_read_without_an_error(start_agent,
                                                                                tmp_path):
    """The answers to MIG changes and to a job's output, as a real agent gives them, each part
    changed to each hostile value in turn: refused naming it (the call's answer is then lost,
    which its caller handles), or read without an exception."""
    agent = start_agent("1xA100-80GB:mig,1xA100-80GB", str(tmp_path / "host"))
    job = agent.call("job.launch", key="k", gpu=1, memory_mib=1000,
                     argv=["sh", "-c", "echo one; echo two; sleep 60"])
    deadline = time.time() + 30
    while len(agent.call("job.logs", job=job["id"], lines=10)["lines"]) < 2:
        assert time.time() < deadline, "no output came"
        time.sleep(0.1)
    plan = agent.call("mig.plan", gpu=0, profile="3g.40gb")
    made = agent.call("mig.apply", gpu=0, profile="3g.40gb", start=plan["start"],
                      layout_version=plan["layout_version"])
    answered = {
        "mig.plan": plan, "mig.apply": made,
        "mig.destroy": agent.call("mig.destroy", gpu=0, instance=made["instance"]["uuid"]),
        "mig.set_mode": agent.call("mig.set_mode", gpu=1, enabled=True),
        "job.logs": agent.call("job.logs", job=job["id"], lines=10)}
    for method, answer in answered.items():
        assert answers.problem(method, answer) is None, method
        _read_answer(method, answer)
    cases = ((path, steps, to, method, changed, (method, changed))  # all: the answers are small
             for method, answer in answered.items()
             for path, steps, _part in _paths(answer, method)
             for to in HOSTILE + ([LEFT_OUT] if steps else [])
             for changed in [_changed(answer, steps, to)])
    _refused_by_name_or_read(cases, lambda given: _read_answer(*given))


def test_a_malformed_snapshot_is_kept_from_the_fleet_and_said_until_a_good_one_comes(
        local_fleet):
    """Pushed by the agent (here handed to the host as its reader hands it on), a malformed
    snapshot reaches no one: the last good one stands, the host is degraded saying what was
    malformed, and the scheduler goes on placing; the next good snapshot clears it."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="half", gpu=0.5)])
    session = f.fleet.session("gpu-a")
    session.call("unsubscribe")  # no snapshot of the agent's comes between the test's
    good = session.call("snapshot")
    session._notify("snapshot", good)
    heard: List[str] = []
    session.listeners.append(lambda method, params: heard.append(method))
    bad = copy.deepcopy(good)
    bad["gpus"][0]["processes"] = [{"pid": 7, "used_mib": "lots"}]
    session._notify("snapshot", bad)
    assert (session.status.state, session.status.error) == (
        "degraded", "its agent sent a malformed snapshot, ignored: snapshot.gpus[0]."
        "processes[0].used_mib: 'lots' is not a whole number from 0")
    assert session.status.snapshot == good and heard == []
    job = f.submit("half", argv=localfleet.sleeper(600))
    f.until(lambda: f.store.get(job.id).state == "running")
    session._notify("snapshot", session.call("snapshot"))
    assert (session.status.state, session.status.error) == ("online", None)
    assert heard == ["snapshot"]
    # params that are not an object reach the host as {} (fleet.client): no GPUs is no snapshot
    session._notify("snapshot", {})
    assert session.status.error == "its agent sent a malformed snapshot, ignored: snapshot: no gpus"
    session._notify("snapshot", session.call("snapshot"))
    assert session.status.state == "online"


def test_mig_instances_no_gpu_of_the_model_can_hold_give_nothing_and_the_host_says_why(
        start_agent, tmp_path):
    """Well-formed records that cannot be true of the GPU (a broken agent's, or a model table
    NVML disagrees with): placement plans by the table, so the GPU gives nothing, and its host
    is degraded naming the GPU and what cannot be, where before it only offered no room."""
    agent = start_agent("1xA100-80GB:mig", str(tmp_path / "host"))
    agent.call("mig.apply", gpu=0, profile="3g.40gb", start=4)
    hello, snapshot = agent.call("hello"), agent.call("snapshot")
    waiting = [_job(9, "slice", {"mig": "1g.10gb"})]

    def placed(snap: Dict[str, Any]) -> bool:
        view = HostView("h", "online", hello, snap, {})
        return bool(schedule([view], waiting, QUEUES, TEAMS, UID).decisions)

    assert hello_problem(hello, snapshot) is None and placed(snapshot)
    [inst] = snapshot["gpus"][0]["instances"]
    steps = ("gpus", 0, "instances", 0)
    for change, said in [
            ({"profile": "3g.41gb"}, "3g.41gb at slot 4: NVIDIA A100-SXM4-80GB has no such "
                                     "profile"),
            ({"size": 2}, "3g.40gb at slot 4: 2 memory slices, where 3g.40gb takes 4"),
            ({"start": 2}, "3g.40gb at slot 2: 3g.40gb starts only at 0, 4"),
            ({"profile": "4g.40gb", "start": 0, "size": 4, "gi_id": 7},
             None)]:  # beside it, where a 4g.40gb can be: possible
        bad = _changed(snapshot, steps, dict(inst, **change))
        if said is None:
            assert hello_problem(hello, bad) is None and placed(bad)
            continue
        assert answers.problem("snapshot", bad) is None  # each part is of its kind
        assert hello_problem(hello, bad) == (
            "GPU 0's MIG instances are not ones a NVIDIA A100-SXM4-80GB can hold (%s): nothing "
            "is placed on it" % said)
        assert not placed(bad)
    over = _changed(snapshot, ("gpus", 0, "instances"), [
        inst, dict(inst, profile="1g.10gb", start=5, size=1, gi_id=8)])
    assert hello_problem(hello, over) == (
        "GPU 0's MIG instances are not ones a NVIDIA A100-SXM4-80GB can hold (1g.10gb at slot "
        "5: on the memory slices of 3g.40gb at slot 4): nothing is placed on it")
    assert not placed(over)
    unknown = _changed(snapshot, ("gpus", 0, "name"), "NVIDIA RTX PRO 6000")
    assert hello_problem(hello, unknown) == (
        "GPU 0 (NVIDIA RTX PRO 6000) is in MIG mode, and fractui has no MIG table for its "
        "model: nothing is placed on it")
    assert not placed(unknown)
    # before any snapshot, hello's GPUs are read so
    assert hello_problem(_changed(hello, ("gpus", 0, "name"), "NVIDIA RTX PRO 6000")).startswith(
        "GPU 0 (NVIDIA RTX PRO 6000) is in MIG mode")


def one_job_running_unheard(local_fleet):
    """A host running one job of the store's, its pushes no longer listened to (so a test
    hands the session what it likes): the session and the job's record as its agent has it."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="half", gpu=0.5)])
    session = f.fleet.session("gpu-a")
    session.call("unsubscribe")
    job = f.submit("half", argv=localfleet.sleeper(600))
    f.until(lambda: f.store.get(job.id).state == "running")
    [good] = session.call("job.list")["jobs"]
    return session, good


def test_a_malformed_job_record_is_said_until_a_good_record_of_that_job_comes(local_fleet):
    session, good = one_job_running_unheard(local_fleet)
    session._notify("job", good)
    session._notify("job", dict(good, state=["running"]))
    said = "its agent sent a malformed record of job %s, ignored: job.state: ['running'] " \
           "is not text" % good["id"]
    assert (session.status.state, session.status.error) == ("degraded", said)
    assert session.status.jobs[good["id"]] == good
    session._notify("job", dict(good, id="j99", key="other"))  # another job's: the mark stays
    assert session.status.error == said
    session._notify("job", good)
    assert (session.status.state, session.status.error) == ("online", None)


def test_a_malformed_answer_to_a_call_is_an_answer_lost_and_said(local_fleet, monkeypatch):
    """What the agent did is not known (the record cannot be read), as with an answer lost:
    the caller handles it so; the host keeps no such record."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="half", gpu=0.5)])
    session = f.fleet.session("gpu-a")
    jobs = session.call("job.list")["jobs"]
    monkeypatch.setattr(session._conn.client, "call",  # a broken agent's answer
                        lambda method, params, timeout_s: {"id": "j9", "key": "k", "state": 5,
                                                           "gpus": [0], "pid": None})
    with pytest.raises(AnswerLost) as lost:
        session.call("job.launch", {"key": "k", "gpu": 0, "memory_mib": 100, "argv": ["true"]})
    assert str(lost.value) == ("gpu-a: the agent's answer to job.launch was malformed: "
                               "job.launch.state: 5 is not text")
    assert "j9" not in session.status.jobs
    with pytest.raises(AgentProcessError) as refused:  # on connecting: the host is not taken
        session._refuse_malformed(_Closed(), "hello", dict(
            session.status.hello, gpus=[{"index": 2 ** 31, "name": "L4"}]))
    assert str(refused.value) == ("gpu-a: the agent's answer to hello was malformed: "
                                  "hello.gpus[0].index: 2147483648 is not a whole number from "
                                  "0 to 2147483647")  # (a GPU's index, kept in an INTEGER)
    # nor with a malformed subscribe answer: a record left out would read as a job it has not
    with pytest.raises(AgentProcessError) as refused:
        session._refuse_malformed(_Closed(), "subscribe", {"snapshot": None, "jobs": jobs + [
            {"id": "j7", "key": "k", "state": "running", "gpus": [0], "pid": "1"}]})
    assert str(refused.value) == ("gpu-a: the agent's answer to subscribe was malformed: "
                                  "subscribe.jobs[%d].pid: '1' is not a whole number from 0"
                                  % len(jobs))


class _Closed:
    """A connection that is only closed."""

    def close(self) -> None:
        pass


def test_a_malformed_snapshot_or_answer_again_and_again_is_said_once_and_once_when_mended(
        local_fleet, caplog):
    """An agent that pushes a malformed snapshot at every tick, or answers hello malformed at
    every reconnect: each said once in the log while it does so (not once a push or a try),
    and once when a good one comes."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="half", gpu=0.5)])
    session = f.fleet.session("gpu-a")
    session.call("unsubscribe")  # no snapshot of the agent's comes between the test's
    good = session.call("snapshot")
    bad = copy.deepcopy(good)
    bad["gpus"][0]["processes"] = [{"pid": 7, "used_mib": "lots"}]
    hello = dict(session.status.hello, gpus=[{"index": -1, "name": "L4"}])
    for _ in range(4):
        session._notify("snapshot", bad)
        with pytest.raises(AgentProcessError):
            session._refuse_malformed(_Closed(), "hello", hello)
    session._notify("snapshot", good)
    session._checked("hello", session.status.hello)
    assert caplog.text.count("gpu-a: ignoring a malformed snapshot from its agent: ") == 1
    assert caplog.text.count("gpu-a: a malformed answer to hello from its agent: ") == 1
    assert caplog.text.count("gpu-a: its agent's snapshot is well formed again after 4 failed "
                             "tries") == 1, caplog.text
    assert caplog.text.count("gpu-a: its agent's answers to hello are well formed again after "
                             "4 failed tries") == 1, caplog.text


def test_snapshots_malformed_each_in_another_way_are_said_once_while_they_come(local_fleet,
                                                                              caplog):
    """An agent that pushes snapshots (or answers hello at each reconnect) each malformed in
    another way, a value of the host's quoted in each reason, is said once while they come,
    and once when a good one comes: the host chooses the words, so they are no new failure.
    Before: a warning a push, or a try."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="half", gpu=0.5)])
    session = f.fleet.session("gpu-a")
    session.call("unsubscribe")  # no snapshot of the agent's comes between the test's
    good = session.call("snapshot")
    for n in range(5):
        bad = copy.deepcopy(good)
        bad["gpus"][0]["processes"] = [{"pid": 7, "used_mib": "lots %d" % n}]
        session._notify("snapshot", bad)
        with pytest.raises(AgentProcessError, match="index: %d is not" % (-n - 1)):
            session._refuse_malformed(_Closed(), "hello", dict(
                session.status.hello, gpus=[{"index": -n - 1, "name": "L4"}]))
    assert "'lots 4' is not" in session.status.error  # the host's state says the last
    session._notify("snapshot", good)
    session._checked("hello", session.status.hello)
    assert caplog.text.count("gpu-a: a malformed answer to hello from its agent: ") == 1
    assert caplog.text.count("gpu-a: its agent's answers to hello are well formed again after "
                             "5 failed tries") == 1, caplog.text
    assert caplog.text.count("gpu-a: ignoring a malformed snapshot from its agent: ") == 1, \
        caplog.text
    assert caplog.text.count("gpu-a: its agent's snapshot is well formed again after 5 failed "
                             "tries") == 1, caplog.text


GARBLING = """\
import subprocess, sys
out = sys.stdout.buffer
def garble():
    out.write(b"".join(b"garbage %d\\n" % i for i in range(300)))
    out.write(b"".join(b"[%d]\\n" % i for i in range(300)))
    out.flush()
agent = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
garble()
for line in agent.stdout:
    out.write(line)
    out.flush()
garble()
agent.wait()
"""


def test_lines_from_a_host_that_are_no_message_are_said_once_a_connection_with_how_many(
        tmp_path, caplog):
    """A broken or hostile host writes as many lines as it likes on its agent's connection:
    lines that are not JSON, or not JSON-RPC messages, are said once a connection (with the
    first of them), good messages between them or not, and how many as it ends, so the
    admin's journal and the debug log take a few lines, not one a line. Before: a warning
    for each line. A real agent answers through a program that garbles around it."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    wrapper = tmp_path / "garble.py"
    wrapper.write_text(GARBLING)
    stream = process_stream([sys.executable, str(wrapper), sys.executable, "-m",
                             "remote_agent", "serve", "--stdio", "--state-dir",
                             str(tmp_path / "state"), "--sim", "1xL4"])
    client = AgentClient(stream.reader, stream.write, name="gpu-x")
    try:
        hello = client.call("hello", {"protocol": PROTOCOL_VERSION}, 30.0)
        assert hello["protocol"] == PROTOCOL_VERSION
    finally:
        stream.close()  # the connection ends: the bridge, then the program around it
        stop_host(str(tmp_path / "state"))  # the daemon the bridge started
    assert client.closed.wait(30)
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 2, len(warned)  # each kind once: good messages between bad runs
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("gpu-x: ")]
    assert said == ["gpu-x: ignoring lines from its agent that are not %s (said once a "
                    "connection), the first: %s" % (kind, first) for kind, first in (
                        ("JSON", r"'garbage 0\n'"), ("JSON-RPC messages", r"'[0]\n'"))] + [
        "gpu-x: the connection ended, and with it the lines that are not JSON after 600 "
        "failed lines",
        "gpu-x: the connection ended, and with it the lines that are not JSON-RPC messages "
        "after 600 failed lines"], said


def test_one_jobs_malformed_record_beside_good_ones_is_said_once_and_once_mended(local_fleet,
                                                                                caplog):
    """A job's malformed records, pushed among other jobs' good ones, are said once while
    they come, and once when a good record of that job comes: by the job, so another's good
    record mends nothing. Before: said failing and mended in turn, at each push."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    session, good = one_job_running_unheard(local_fleet)
    other = dict(good, id="j99", key="other")
    for _ in range(3):
        session._notify("job", dict(good, state=["running"]))
        session._notify("job", other)
    session._notify("job", good)
    assert caplog.text.count("gpu-a: ignoring a malformed record of job %s from its agent: "
                             % good["id"]) == 1, caplog.text
    assert caplog.text.count("well formed again") == 1, caplog.text
    assert "gpu-a: its agent's record of job %s is well formed again after 3 failed tries" % (
        good["id"]) in caplog.text


def test_a_hostile_agent_naming_a_new_job_at_each_push_grows_no_mark_past_the_cap(
        local_fleet, caplog):
    """An agent that pushes malformed records of ever new jobs: each of the first
    SAID_ONE_BY_ONE said, then once that there are more; the names kept, the host's marks and
    its state's words stay within the cap; a good record of each said job mends it."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="half", gpu=0.5)])
    session = f.fleet.session("gpu-a")
    session.call("unsubscribe")
    cap = host.SAID_ONE_BY_ONE
    good = {"id": "j0", "key": "k", "state": "exited", "gpus": [0], "pid": None}
    for n in range(cap * 5):
        session._notify("job", dict(good, id="j%d" % n, state=5))
    said = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(said) == cap + 1, said
    assert said[-1].startswith("more than %d failing at once, past them said no more until "
                               "they mend: gpu-a: ignoring a malformed record of job j%d" % (
                                   cap, cap))
    assert len(session._failures._failing) == cap + 1
    assert len(session._malformed) == cap + 2  # and one mark: there are more
    assert "and more, past %d marked one by one" % cap in session.status.error
    for n in range(cap):
        session._notify("job", dict(good, id="j%d" % n))
    assert session._failures._failing == {}
    assert caplog.text.count("well formed again") == cap
    assert "failures past the cap unsaid" in caplog.text


def test_a_hosts_long_job_id_is_said_cut_in_the_log_and_in_its_state(local_fleet, caplog):
    """A record of a job whose id is as long as a line may be, malformed by it (an id is
    never cut, which would name another job): the log and the host's state quote the id cut,
    with its length. Before: the whole MiB, in each."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="half", gpu=0.5)])
    session = f.fleet.session("gpu-a")
    session.call("unsubscribe")
    long = "j" * (2 ** 20)
    session._notify("job", {"id": long, "key": "k", "state": "exited", "gpus": [0],
                            "pid": None})
    cut = "job 'jjj"  # ... the first characters of it, then how many there are
    why = "job.id: '%s... is %d characters, more than the 256 any agent sends there" % (
        "j" * 36, len(long))
    [said] = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(said) < 400, said[:400]
    assert said.startswith("gpu-a: ignoring a malformed record of %s" % cut), said[:400]
    assert said.endswith("…' (%d characters) from its agent: %s" % (len(long), why)), \
        said[-400:]
    error = session.status.error
    assert len(error) < 400 and error.startswith(
        "its agent sent a malformed record of %s" % cut) and error.endswith(
        "…' (%d characters), ignored: %s" % (len(long), why)), error[:400]


def test_a_listener_failing_on_one_jobs_notifications_is_said_once_and_keeps_no_other_back(
        local_fleet, caplog):
    """A listener that fails on one job's log lines and not on another's is said once while
    it does (not failing and mended in turn), once when it mends and once when it is removed;
    the other listeners and the host's own record of what comes go on meanwhile."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="half", gpu=0.5)])
    session = f.fleet.session("gpu-a")
    session.call("unsubscribe")
    broken = {"j1"}
    heard: List[str] = []

    def failing(method: str, params: Dict[str, Any]) -> None:
        if params.get("job") in broken or params.get("id") in broken:
            raise KeyError(params.get("job") or params.get("id"))

    session.listeners.extend([failing, lambda method, params: heard.append(method)])
    for _ in range(3):
        session._notify("log", {"job": "j1", "data": "x"})
        session._notify("log", {"job": "j2", "data": "y"})
    record = {"id": "j1", "key": "k", "state": "exited", "gpus": [0], "pid": None}
    session._notify("job", record)
    assert session.status.jobs["j1"] == record  # recorded though a listener failed on it
    assert heard == ["log", "log"] * 3 + ["job"]
    said = [r.getMessage() for r in caplog.records if "listen" in r.getMessage()]
    assert said == ["gpu-a: what listens to its log notifications about job j1 failed "
                    "(KeyError: 'j1')",
                    "gpu-a: what listens to its job notifications about job j1 failed "
                    "(KeyError: 'j1')"], said
    broken.clear()
    session._notify("log", {"job": "j1", "data": "x"})
    session.listeners.remove(failing)
    session._notify("log", {"job": "j1", "data": "x"})
    said = [r.getMessage() for r in caplog.records if "listen" in r.getMessage()][2:]
    assert said == ["gpu-a: what listens to its log notifications about job j1 goes through "
                    "again after 3 failed tries",
                    "gpu-a: what listened to its job notifications about job j1 listens no "
                    "more after 1 failed try"], said


def test_one_methods_malformed_answers_about_one_job_beside_good_ones_are_said_once(
        local_fleet, monkeypatch, caplog):
    """A call answered malformed about one job and well about another, in turn: said once
    while it does so, and once when it answers well about it; by the job. Before: said
    failing and mended in turn."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="half", gpu=0.5)])
    session = f.fleet.session("gpu-a")
    record = {"key": "k", "state": "exited", "gpus": [0], "pid": None}
    bad: Dict[str, Any] = {"j1": 5}

    def answer(method: str, params: Dict[str, Any], timeout_s: float) -> Dict[str, Any]:
        return dict(record, id=params["job"], state=bad.get(params["job"], "exited"))
    monkeypatch.setattr(session._conn.client, "call", answer)
    for _ in range(3):
        with pytest.raises(AnswerLost):
            session.call("job.get", {"job": "j1"})
        session.call("job.get", {"job": "j2"})
    bad.clear()
    session.call("job.get", {"job": "j1"})
    said = [r.getMessage() for r in caplog.records if "job.get" in r.getMessage()]
    assert said == ["gpu-a: a malformed answer to job.get about job j1 from its agent: "
                    "job.get.state: 5 is not text",
                    "gpu-a: its agent's answers to job.get about job j1 are well formed again "
                    "after 3 failed tries"], said


def test_what_failed_about_jobs_their_host_forgot_leaves_room_to_say_later_failures(
        local_fleet, monkeypatch, caplog):
    """Calls answered malformed about as many jobs as are said one by one, whose records the
    host then forgets (ended past its retention): each is said no more, so a malformed
    answer about a later job is said as itself. Before: they failed for ever, nothing about
    them being asked again, and every later failure of the kind went unsaid past the cap."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="half", gpu=0.5)])
    session = f.fleet.session("gpu-a")
    session.call("unsubscribe")
    cap = host.SAID_ONE_BY_ONE
    monkeypatch.setattr(session._conn.client, "call", lambda method, params, timeout_s: {
        "id": params["job"], "key": "k", "state": 5, "gpus": [0], "pid": None})
    for n in range(cap):
        with pytest.raises(AnswerLost):
            session.call("job.get", {"job": "j%d" % n})
    for n in range(cap):  # ended long ago: forgotten as they come
        session._notify("job", {"id": "j%d" % n, "key": "k%d" % n, "state": "exited",
                                "gpus": [0], "pid": None, "ended_at": 1.0})
    assert not any("j%d" % n in session.status.jobs for n in range(cap))
    with pytest.raises(AnswerLost):
        session.call("job.get", {"job": "j%d" % cap})
    said = [r.getMessage() for r in caplog.records if "job.get" in r.getMessage()]
    assert said[cap:-1] == ["gpu-a: job j%d is forgotten, as its agent forgets it: what "
                            "failed about it (job.get) is said no more after 1 failed try" % n
                            for n in range(cap)], said
    assert said[-1] == ("gpu-a: a malformed answer to job.get about job j%d from its agent: "
                        "job.get.state: 5 is not text" % cap), said
    assert session._failures.failing("answer") == [("answer", "job.get", "j%d" % cap)]


def test_a_malformed_snapshot_is_marked_as_such_past_the_job_records_cap(local_fleet):
    """An agent past the cap of malformed job records marked one by one that then pushes a
    malformed snapshot: the host's words say the snapshot is malformed until a good one
    comes, whatever job records come. Before: it was marked as one more job record, and a
    good record of any job took the mark off while the snapshots stayed malformed."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="half", gpu=0.5)])
    session = f.fleet.session("gpu-a")
    session.call("unsubscribe")
    good = {"id": "j0", "key": "k", "state": "exited", "gpus": [0], "pid": None}
    for n in range(host.SAID_ONE_BY_ONE * 2):
        session._notify("job", dict(good, id="j%d" % n, state=5))
    session._notify("snapshot", {"gpus": 5})
    session._notify("job", dict(good, id="j999"))
    assert "its agent sent a malformed snapshot, ignored: " in session.status.error, \
        session.status.error


def test_what_failed_about_jobs_the_agent_no_longer_has_on_reconnect_is_said_no_more(
        local_fleet, monkeypatch, caplog):
    """Calls answered malformed about as many jobs as are said one by one, none of which the
    agent has when the host connects again (forgotten meanwhile, or never its): each is said
    no more then, so a malformed answer about a later job is said as itself. Before: they
    failed for ever, and every later failure of the kind went unsaid past the cap."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="half", gpu=0.5)])
    session = f.fleet.session("gpu-a")
    cap = host.SAID_ONE_BY_ONE

    def malformed(method: str, params: Dict[str, Any], timeout_s: float) -> Dict[str, Any]:
        return {"id": (params or {}).get("job"), "key": "k", "state": 5, "gpus": [0],
                "pid": None}
    monkeypatch.setattr(session._conn.client, "call", malformed)
    for n in range(cap):
        with pytest.raises(AnswerLost):
            session.call("job.get", {"job": "j%d" % n})
    with pytest.raises(AnswerLost):  # about no job: none the agent could forget
        session.call("job.list")
    connected = session._conn
    session._drop()  # as a host that hangs up: connected again at once
    f.until(lambda: session._conn not in (None, connected) and session.status.state == "online")
    monkeypatch.setattr(session._conn.client, "call", malformed)
    with pytest.raises(AnswerLost):
        session.call("job.get", {"job": "j%d" % cap})
    said = [r.getMessage() for r in caplog.records if "job.get" in r.getMessage()]
    assert said[cap:-1] == ["gpu-a: job j%d is not among its agent's jobs as it connects: "
                            "what failed about it (job.get) is said no more after 1 failed try"
                            % n for n in range(cap)], said
    assert said[-1] == ("gpu-a: a malformed answer to job.get about job j%d from its agent: "
                        "job.get.state: 5 is not text" % cap), said
    assert session._failures.failing("answer") == [("answer", "job.list", None), (
        "answer", "job.get", "j%d" % cap)], caplog.text


def test_a_malformed_snapshot_on_reconnect_is_no_job_said_no_more(local_fleet, caplog):
    """A malformed snapshot, then the host connects again: the snapshot's failure is about no
    job, so it is not forgotten as a job the agent does not have, and a good snapshot says it
    mended. Before: its name ended in "snapshot", read as a job's, and the log said "job
    snapshot is not among its agent's jobs as it connects: ... is said no more"."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="half", gpu=0.5)])
    session = f.fleet.session("gpu-a")
    session.call("unsubscribe")  # no snapshot of the agent's comes between the test's
    good = session.call("snapshot")
    session._notify("snapshot", {"gpus": 5})
    connected = session._conn
    session._drop()  # as a host that hangs up: connected again at once
    f.until(lambda: session._conn not in (None, connected) and session.status.state == "online")
    session._notify("snapshot", good)
    assert "is said no more" not in caplog.text, caplog.text
    assert caplog.text.count("gpu-a: its agent's snapshot is well formed again after 1 failed "
                             "try") == 1, caplog.text
