"""What the admin side keeps of a host's text is bounded (fractui/fleet/answers.py, ``Text``;
fractui/fleet/client.py, an agent error's words and data): a broken or hostile agent's GPU
name or job reason as long as its answer line is cut past its bound, with a mark, in the
host's state and in the store's rows, said once in the log; a GPU's uuid, which cut would name
another GPU, is refused as malformed. Real agents over the local fleet; the long text comes
from a real program that stands between the admin and the agent, rewriting its answers."""

from __future__ import annotations

import logging
import sys

import pytest

from fractui.config import QueueConfig
from fractui.fleet import answers
from fractui.fleet.client import AGENT_ERROR_MOST, AgentCallError
from fractui.fleet.host import AnswerMalformed
from fractui.fleet.transport.local import LocalTransport
from fractui.store.model import DONE, FAILED, RUNNING
from remote_agent.rpc.jsonrpc import JOB_NOT_FOUND
from tests import localfleet

local_fleet = localfleet.local_fleet

# Relays the admin's lines to the agent and the agent's back; from the hello on ("words") or
# once the admin has asked for a job.list, rewrites what comes back by MODE: "words": each
# GPU's name and each ended job's reason LONG characters longer; "uuid": each pushed
# snapshot's GPU uuids of LONG characters; "error": each error answer's message and
# data.reason LONG characters long, and its data with a word of LONG characters that nothing
# reads; "log": the data of its first pushed log is a number, of the second a list, of the
# third LONG characters longer ("x"), and of the others as the agent pushes it.
RELAY = """\
import json, subprocess, sys, threading
MODE, LONG = %r, %d
logs = []
agent = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
armed = threading.Event()
if MODE == "words":  # from the hello on
    armed.set()
def rewrite(value, pushed):
    if isinstance(value, list):
        for item in value:
            rewrite(item, pushed)
    if not isinstance(value, dict):
        return
    if MODE == "words" and "mig_capable" in value:
        value["name"] += "n" * LONG
    if MODE == "words" and "key" in value and value.get("ended_at") is not None:
        value["reason"] = "r" * LONG
    if MODE == "uuid" and pushed == "snapshot" and "mig_capable" in value:
        value["uuid"] = "GPU-" + "0" * LONG
    for item in value.values():
        rewrite(item, pushed)
def rewritten(line):
    message = json.loads(line)
    error = message.get("error")
    if MODE == "error" and isinstance(error, dict):
        error["message"] = "e" * LONG
        error["data"] = dict(error.get("data") or {}, reason="r" * LONG, unread="u" * LONG)
    if MODE == "log" and message.get("method") == "log" and "data" in message["params"]:
        logs.append(message["params"]["data"])
        message["params"]["data"] = {1: 7, 2: ["x"], 3: logs[-1] + "x" * LONG}.get(
            len(logs), logs[-1])
    rewrite(message.get("result", message.get("params")), message.get("method"))
    return json.dumps(message).encode() + b"\\n"
def up():
    for line in agent.stdout:
        line = rewritten(line) if armed.is_set() and line.strip() else line
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
reader = threading.Thread(target=up)
reader.start()
for line in sys.stdin.buffer:
    if line.strip() and json.loads(line).get("method") == "job.list":
        armed.set()
    agent.stdin.write(line)
    agent.stdin.flush()
agent.stdin.close()
reader.join()
agent.wait()
"""


def relayed(local_fleet, tmp_path, monkeypatch, mode: str, long: int):
    """A fleet of one host, gpu-a, whose agent's answers the relay rewrites (``mode``), armed:
    the fleet and the host's session."""
    proxy = tmp_path / "relay.py"
    proxy.write_text(RELAY % (mode, long))
    monkeypatch.setattr(LocalTransport, "agent_command", lambda self, archive: (
        [sys.executable, str(proxy), sys.executable, "-m", "remote_agent"], None))
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="whole", gpus=1)])
    session = f.fleet.session("gpu-a")
    session.call("job.list")  # arms the relay
    return f, session


def cut(kept: str, most: int, more: int) -> str:
    return kept[:most] + "… (cut: %d more characters)" % more


def test_a_hosts_long_gpu_name_and_job_reason_are_cut_in_its_state_and_the_store(
        local_fleet, tmp_path, monkeypatch, caplog):
    """A GPU's name and a job's reason past their bounds are cut there, marked, said once in
    the log. Before: kept whole, as long as the agent's answer line (16 MiB), in the host's
    state, in the job's row (read by every pass, every ``fractui jobs``) and on the screen."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    long = answers.WHY_MOST + 10
    f, session = relayed(local_fleet, tmp_path, monkeypatch, "words", long)
    name = cut("NVIDIA L4" + "n" * long, answers.WORD_MOST, len("NVIDIA L4") + long -
               answers.WORD_MOST)
    for _ in range(2):  # said once
        assert session.call("snapshot")["gpus"][0]["name"] == name
    assert [gpu["name"] for gpu in (session.status.hello["gpus"] +
                                    session.status.snapshot["gpus"])] == [name, name]
    job = f.submit("whole", argv=[sys.executable, "-c", "import sys; sys.exit(3)"])
    f.until(lambda: f.store.get(job.id).state == FAILED)
    reason = cut("r" * long, answers.WHY_MOST, 10)
    assert f.store.get(job.id).reason == reason
    assert session.status.jobs[f.store.get(job.id).agent_job]["reason"] == reason
    said = [r.getMessage() for r in caplog.records if "cut there" in r.getMessage()]
    assert said.count("gpu-a: what its agent said: snapshot.gpus[].name: %d characters, past "
                      "the %d kept: cut there (said once)" % (
                          len("NVIDIA L4") + long, answers.WORD_MOST)) == 1, said
    assert any("job.reason: %d characters, past the %d kept: cut there" % (
        long, answers.WHY_MOST) in words for words in said), said


def test_a_hosts_gpu_uuid_past_any_is_malformed_not_cut(
        local_fleet, tmp_path, monkeypatch):
    """A uuid names a GPU: cut, it would name another (or none). Past the most any agent
    sends, the snapshot is malformed and the last good one stands, the host saying why.
    Before: taken whole, a uuid of a MiB kept and compared at every pass."""
    f, session = relayed(local_fleet, tmp_path, monkeypatch, "uuid", 300)
    good = session.status.snapshot["gpus"][0]["uuid"]
    session.call("sim.add_process", {"gpu": 0, "used_mib": 1000})  # a snapshot pushed
    f.until(lambda: session.status.state == "degraded")
    assert session.status.error == (
        "its agent sent a malformed snapshot, ignored: snapshot.gpus[0].uuid: 'GPU-%s... is "
        "304 characters, more than the 256 any agent sends there" % ("0" * 32)), \
        session.status.error
    assert session.status.snapshot["gpus"][0]["uuid"] == good


def test_an_agent_errors_words_and_data_are_kept_bounded(local_fleet, tmp_path, monkeypatch):
    """An error answer's message and the data read of it (its class, a failed start's
    reason) are kept cut; the rest of its data, which nothing reads, is left out. Before: its
    data was kept whole with the error, as long as the agent's answer line."""
    long = 2 ** 20
    f, session = relayed(local_fleet, tmp_path, monkeypatch, "error", long)
    with pytest.raises(AgentCallError) as err:
        session.call("job.get", {"job": "j999"})
    assert err.value.code == JOB_NOT_FOUND
    words = "'%s…' (%d characters)"
    assert err.value.message == words % ("e" * AGENT_ERROR_MOST, long)
    assert err.value.data == {"class": "request",
                              "reason": words % ("r" * AGENT_ERROR_MOST, long)}


def test_what_names_something_past_its_bound_is_malformed_not_cut(local_fleet):
    """A link word, an object's key, a plan's layout version and profile, and a log's bytes
    in base64: cut, each would read as another (a link ``NV1…``, another layout) or not at
    all; past its bound, or a link word not ASCII, the answer is malformed. Before: taken."""
    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [QueueConfig(name="slice", mig="1g.10gb")])
    session = f.fleet.session("gpu-a")
    hello = session.status.hello
    plan = session.call("mig.plan", {"gpu": 0, "profile": "1g.10gb"})
    long = "8" * 300
    for method, answer, said in (
            ("hello", dict(hello, links=[["NV1" + long]]),
             "hello.links[0][0]: 'NV1%s... is 303 characters, more than the 16 any agent "
             "sends there" % long[:33]),
            ("hello", dict(hello, links=[["NV\u0661"]]),
             "hello.links[0][0]: 'NV\u0661' is not ASCII"),
            ("hello", dict(hello, limits={long: "x"}),
             "hello.limits: a key of 300 characters, more than the 256 any agent sends there"),
            ("mig.plan", dict(plan, layout_version=long),
             "mig.plan.layout_version: '%s... is 300 characters, more than the 256 any agent "
             "sends there" % long[:36]),
            ("mig.plan", dict(plan, profile="1g.10gb" + long),
             "mig.plan.profile: '1g.10gb%s... is 307 characters, more than the 256 any agent "
             "sends there" % long[:29]),
            ("mig.plan", dict(plan, gpu_uuid="GPU-1\x00"),  # mended, it names another
             "mig.plan.gpu_uuid: 'GPU-1\\x00' is not text with no NUL or lone surrogate "
             "(mended, it would name another)"),
            ("mig.plan", dict(plan, profile="1g.10gb\ud800"),
             "mig.plan.profile: '1g.10gb\\ud800' is not text with no NUL or lone surrogate "
             "(mended, it would name another)"),
            ("job.logs", {"lines": [], "offset": 0, "data": "A" * (answers.DATA_MOST + 4)},
             "job.logs.data: '%s... is %d characters, more than the %d any agent sends "
             "there" % ("A" * 36, answers.DATA_MOST + 4, answers.DATA_MOST))):
        with pytest.raises(AnswerMalformed) as refused:
            session._checked(method, answer)
        assert refused.value.reason == "malformed: " + said


# prints a line every 0.1 s for a while: output pushed to its followers as it comes
TICKER = [sys.executable, "-c", "import time\nfor i in range(600):\n    print('tick %d' % i, "
          "flush=True)\n    time.sleep(0.1)"]


def test_a_hosts_pushed_output_of_the_wrong_kind_is_ignored_and_past_its_bound_cut(
        local_fleet, tmp_path, monkeypatch, caplog):
    """A followed job's output pushed as no text is ignored, said once for the host (and
    once when its pushes are well formed again); pushed longer than the agent ever pushes
    (PUSH_MAX_BYTES) it is cut, with the mark, said once. Before: passed on unread, a number
    written to the TUI's log view or to ``fractui logs -f``'s output (a traceback), and a
    chunk as long as the agent's answer line (16 MiB) kept."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    long = answers.LINE_MOST + 10
    f, session = relayed(local_fleet, tmp_path, monkeypatch, "log", long)
    job = f.submit("whole", argv=TICKER)
    f.until(lambda: f.store.get(job.id).state == RUNNING)
    agent_job = f.store.get(job.id).agent_job
    pushed = []
    session.listeners.append(lambda method, params: pushed.append(params.get("data")) if (
        method == "log" and params.get("job") == agent_job) else None)
    session.call("job.logs", {"job": agent_job, "lines": 0, "follow": True})
    f.until(lambda: len(pushed) >= 2)
    assert all(isinstance(data, str) for data in pushed), pushed[:2]
    came = pushed[0].split("x")[0]  # the third push, as the agent pushed it
    assert came.startswith("tick ") and pushed[0] == answers.cut(
        came + "x" * long, answers.LINE_MOST), pushed[0][-80:]
    said = [r.getMessage() for r in caplog.records if "push of" in r.getMessage()]
    assert said == ["gpu-a: ignoring a malformed push of job %s's output from its agent: "
                    "log.data: 7 is not text" % agent_job,
                    "gpu-a: its agent's push of a job's output is well formed again after 2 "
                    "failed tries"], said
    cut = [r.getMessage() for r in caplog.records if "cut there" in r.getMessage()]
    assert cut == ["gpu-a: what its agent said about job %s: log.data: %d characters, past "
                   "the %d kept: cut there (said once)" % (agent_job, len(came) + long,
                                                          answers.LINE_MOST)], cut


def test_a_jobs_line_longer_than_a_push_is_answered_whole_by_job_logs(local_fleet):
    """``job.logs`` answers a job's last lines as they are, within its answer line (16 MiB),
    however long one is: a line past 1 MiB (the most of a push, and of ``bytes``) is a job's
    own, from a correct agent, and its end is what the store's tail of an older agent's
    lines keeps (``tail_text``) and ``fractui logs`` prints. Before: cut at 1 MiB with the
    mark, its end lost."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="whole", gpus=1)])
    line = "z" * answers.LINE_MOST + "the end"
    job = f.submit("whole", argv=[sys.executable, "-c", "print('z' * %d + 'the end')" % (
        answers.LINE_MOST)])
    f.until(lambda: f.store.get(job.id).state == DONE)
    answer = f.fleet.session("gpu-a").call("job.logs", {"job": f.store.get(job.id).agent_job,
                                                        "lines": 1})
    assert answer["lines"] == [line], answer["lines"][0][-80:]
