"""Malformed input never crashes or hangs the agent: every line gets a clear JSON-RPC answer."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from remote_agent import PROTOCOL_VERSION
from remote_agent.daemon.paths import AgentPaths
from remote_agent.failing import Failures
from remote_agent.rpc import jsonrpc as rpc
from remote_agent.rpc.jsonrpc import MAX_LINE_BYTES
from tests.conftest import REPO, AgentError, AgentProcess, stop_host


@pytest.fixture
def agent(start_agent):
    return start_agent("1xA100-80GB:mig,1xL4")


@pytest.fixture(scope="module")
def serving_agent(tmp_path_factory):
    """One agent for the module's lines that must each be refused with the agent serving on:
    each test sends its line to the agent the lines before it were sent to, and asks it again
    afterwards."""
    state = str(tmp_path_factory.mktemp("serving") / "state")
    agent = AgentProcess(state, "--sim", "1xA100-80GB:mig,1xL4")
    try:
        yield agent
    finally:
        if agent.proc.poll() is None:
            agent.close()
        stop_host(state)


@pytest.mark.parametrize("line, code, words", [
    (b"this is not json", rpc.PARSE_ERROR, "not valid JSON"),
    (b"\xff\xfe\x00garbage", rpc.PARSE_ERROR, "not valid JSON"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "hello"', rpc.PARSE_ERROR, "not valid JSON"),
    (b"[1, 2]", rpc.INVALID_REQUEST, "must be a JSON object"),
    (b"[]", rpc.INVALID_REQUEST, "empty batch"),
    (b'"hello"', rpc.INVALID_REQUEST, "must be a JSON object"),
    (b'{"id": 1, "method": "hello"}', rpc.INVALID_REQUEST, '"jsonrpc": "2.0"'),
    (b'{"jsonrpc": "2.0", "id": 1, "method": 7}', rpc.INVALID_REQUEST, 'a string "method"'),
    (b'{"jsonrpc": "2.0", "id": [1], "method": "hello"}', rpc.INVALID_REQUEST, "id must be"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "nope"}', rpc.METHOD_NOT_FOUND, "no method 'nope'"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "inventory", "params": [1]}', rpc.INVALID_PARAMS,
     "named params"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "mig.plan", "params": {"gpu": 0}}',
     rpc.INVALID_PARAMS, "needs param 'profile'"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "mig.plan", "params": {"gpu": true, "profile": "x"}}',
     rpc.INVALID_PARAMS, "a GPU index or a GPU uuid"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "mig.plan", "params": {"gpu": 0, "profil": "x"}}',
     rpc.INVALID_PARAMS, "does not take param 'profil'"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "mig.plan", "params": {"gpu": -1, "profile": "x"}}',
     rpc.INVALID_PARAMS, "a GPU index (0 to"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "mig.apply", "params": {"gpu": 0, '
     b'"profile": "1g.10gb", "start": "zero"}}', rpc.INVALID_PARAMS, "must be an integer"),
])
def test_malformed_lines_get_errors_and_the_agent_keeps_serving(serving_agent, line, code,
                                                                words):
    agent = serving_agent
    agent.send_raw(line + b"\n")
    reply = agent.read_reply()
    error = reply[0]["error"] if isinstance(reply, list) else reply["error"]
    assert error["code"] == code
    assert words in error["message"]
    assert agent.call("hello")["protocol"] == PROTOCOL_VERSION


def test_an_oversized_line_is_refused_and_the_stream_stays_in_step(agent):
    agent.send_raw(b'{"x": "' + b"a" * (MAX_LINE_BYTES + 10) + b'"}\n')
    reply = agent.read_reply()
    assert reply["error"]["code"] == rpc.PARSE_ERROR and "longer than" in reply["error"]["message"]
    assert agent.call("inventory")["gpus"][1]["name"] == "NVIDIA L4"


def test_notifications_get_no_reply_and_batches_get_one_array(agent):
    agent.send_raw(b'{"jsonrpc": "2.0", "method": "hello"}\n')
    agent.send_raw(json.dumps([
        {"jsonrpc": "2.0", "id": "a", "method": "hello"},
        {"jsonrpc": "2.0", "method": "inventory"},
        {"jsonrpc": "2.0", "id": "b", "method": "nope"},
    ]).encode() + b"\n")
    reply = agent.read_reply()
    assert [r["id"] for r in reply] == ["a", "b"]
    assert reply[0]["result"]["backend"] == "sim"
    assert reply[1]["error"]["code"] == rpc.METHOD_NOT_FOUND


def test_blank_lines_are_ignored(agent):
    agent.send_raw(b"\n   \n")
    assert agent.call("hello")["backend"] == "sim"


def test_hello_refuses_another_protocol_and_describes_the_host(agent):
    with pytest.raises(AgentError) as err:
        agent.call("hello", protocol=PROTOCOL_VERSION + 1)
    assert err.value.code == rpc.PROTOCOL_MISMATCH
    assert err.value.data == {"protocol": PROTOCOL_VERSION, "class": rpc.HOST}
    hello = agent.call("hello", protocol=PROTOCOL_VERSION, client="tests")
    assert hello["privileges"]["mig_changes"] is True
    assert [g["cap_layers"] for g in hello["gpus"]] == [
        ["mig"], ["visible_devices", "framework", "watchdog"]]
    why_not = hello["gpus"][1]["cap_layers_unavailable"]
    assert "cgroup" in why_not["driver_limit"]
    assert "mps = true" in why_not["mps"] and "hami_core_lib" in why_not["hami"]
    assert {"inventory", "snapshot", "mig.plan", "mig.apply", "sim.add_process"} <= set(
        hello["methods"])


def test_closing_stdin_ends_the_agent_cleanly(agent):
    agent.call("hello")
    assert agent.close() == 0


def test_a_state_dir_holding_another_host_is_refused_at_start(start_agent, tmp_path):
    state = str(tmp_path / "host")
    start_agent("1xL4", state).close()
    other = start_agent("1xA100-80GB:mig", state)
    assert other.proc.wait(timeout=10) == 2
    assert b"use another state dir" in other.proc.stderr.read()


@pytest.mark.parametrize("under, words", [
    ("", "{dir}: it is a file, not a directory"),
    ("/state", "{dir}: {file} is not a directory")])
def test_a_state_dir_that_cannot_be_made_is_said_without_a_traceback(start_agent, tmp_path,
                                                                      under, words):
    """A file where the state dir, or a folder on its way, would be."""
    (tmp_path / "a-file").write_text("")
    state_dir = str(tmp_path / "a-file") + under
    agent = start_agent("1xL4", state_dir)
    assert agent.proc.wait(timeout=10) == 2
    said = agent.proc.stderr.read().decode()
    assert "remote_agent: refusing state dir " + words.format(
        dir=state_dir, file=tmp_path / "a-file") in said, said
    assert "Traceback" not in said


def test_a_state_dir_whose_name_is_not_utf8_is_used(start_agent, tmp_path):
    """A path's bytes, as the filesystem holds them (its socket's name was once made by
    encoding the path as UTF-8, which failed with a traceback)."""
    agent = start_agent("1xL4", os.fsdecode(os.fsencode(str(tmp_path)) + b"/state-\xff"))
    assert agent.call("hello")["gpus"]


@pytest.mark.parametrize("spec", ["1xL4:mig", "3xNOPE", "x,", "0xL4"])
def test_a_bad_sim_spec_is_a_usage_error(start_agent, tmp_path, spec):
    agent = start_agent(spec, str(tmp_path / spec.replace(":", "_").replace(",", "_")))
    assert agent.proc.wait(timeout=10) == 2
    assert b"remote_agent:" in agent.proc.stderr.read()


@pytest.mark.parametrize("verb", [["serve", "--stdio"], ["daemon"], ["pod"], ["hello"]])
def test_an_empty_state_dir_is_a_usage_error_not_the_current_directory(tmp_path, verb):
    """os.path.abspath("") is the current directory: ``serve --stdio --state-dir ''`` started
    a daemon keeping its state wherever the command ran."""
    sim = [] if verb == ["hello"] else ["--sim", "1xL4"]
    done = subprocess.run([sys.executable, "-m", "remote_agent", *verb, "--state-dir", "", *sim],
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=60,
                          stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=REPO))
    assert done.returncode == 2, done.stderr
    assert done.stderr.endswith("error: argument --state-dir: is empty: name the directory "
                                "the agent keeps its state in\n"), done.stderr
    assert os.listdir(str(tmp_path)) == []


UNLISTED = ["nope", "Hello", "hello ", "HELLO", "job.delete", "daemon.restart", "sim.*", "mig",
            "mig.", ".hello", "inventory\u0000", "__init__", "methods", "job.logs.follow"]


@pytest.mark.parametrize("backend", ["sim", "nvml"])
def test_hello_lists_exactly_the_methods_the_agent_serves(start_agent, tmp_path, backend):
    if backend == "sim":
        agent = start_agent("1xA100-80GB:mig,1xL4")
    else:  # no NVML library here: the agent starts all the same and says why it cannot work
        agent = start_agent(None, str(tmp_path / "nvml"), "--backend", "nvml")
    listed = agent.call("hello")["methods"]
    assert listed == sorted(listed) and "hello" in listed
    for method in listed:  # a param no method takes: refused by the method, so it is there
        reply = agent.request(method, not_a_param=1)
        assert reply["error"]["code"] == rpc.INVALID_PARAMS, (method, reply)
    for method in UNLISTED + [m for m in ("sim.fault", "sim.add_process") if m not in listed]:
        assert agent.request(method)["error"]["code"] == rpc.METHOD_NOT_FOUND, method
    assert {m.startswith("sim.") for m in listed} == ({True, False} if backend == "sim"
                                                      else {False})
    if backend == "sim":
        assert len(listed) == 28


def deep(depth: int, kind: str) -> bytes:
    """A line nesting arrays and objects exactly ``depth`` levels deep."""
    if kind == "array":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    # a request (1) and its params (2) whose env nests the rest of the way
    inner = depth - 2
    return (b'{"jsonrpc": "2.0", "id": 7, "method": "job.launch", "params": {"key": "k", '
            b'"argv": ["x"], "gpu": 1, "memory_mib": 1, "env": '
            + b'{"a":' * inner + b'"x"' + b"}" * inner + b"}}")


NESTINGS = [(d, k) for d in (rpc.MAX_DEPTH + 1, 1000, 100000) for k in ("array", "object",
                                                                       "params")]


@pytest.mark.parametrize("depth, kind", NESTINGS)
def test_deep_nesting_is_refused_and_the_connection_lives(serving_agent, depth, kind):
    agent = serving_agent
    agent.send_raw(deep(depth, kind) + b"\n")
    reply = agent.read_reply()
    assert reply["error"]["code"] == rpc.INVALID_REQUEST
    assert "deeper than %d levels" % rpc.MAX_DEPTH in reply["error"]["message"]
    assert agent.call("hello")["protocol"] == PROTOCOL_VERSION


def test_nesting_up_to_the_limit_is_taken(agent):
    agent.send_raw(deep(rpc.MAX_DEPTH, "params") + b"\n")
    reply = agent.read_reply()
    assert reply["error"]["code"] == rpc.INVALID_PARAMS  # read as a request; its env is wrong
    assert "'env' must be an object of string values" in reply["error"]["message"]


def test_deep_nesting_over_the_daemon_socket_leaves_the_connection_up(agent, tmp_path):
    agent.call("hello")  # the daemon runs
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(AgentPaths(str(tmp_path / "state")).socket)
    with sock, sock.makefile("rb") as answers:
        for depth, kind in NESTINGS:
            sock.sendall(deep(depth, kind) + b"\n")
            reply = json.loads(answers.readline())
            assert reply["error"]["code"] == rpc.INVALID_REQUEST, (depth, kind)
        sock.sendall(b'{"jsonrpc": "2.0", "id": 1, "method": "daemon.version"}\n')
        assert json.loads(answers.readline())["result"]["protocol"] == PROTOCOL_VERSION


def test_a_key_given_twice_is_refused_and_nothing_is_done(agent):
    before = agent.call("inventory")
    agent.send_raw(b'{"jsonrpc": "2.0", "id": 1, "method": "mig.apply", "params": {"gpu": 0, '
                   b'"profile": "1g.10gb", "gpu": 0}}\n')
    reply = agent.read_reply()
    assert reply["error"]["code"] == rpc.INVALID_REQUEST and reply["id"] is None
    assert "the key 'gpu' appears twice" in reply["error"]["message"]
    agent.send_raw(b'{"jsonrpc": "2.0", "id": 2, "id": 3, "method": "hello"}\n')
    assert agent.read_reply()["error"]["code"] == rpc.INVALID_REQUEST
    assert agent.call("inventory") == before


def test_a_member_a_request_does_not_have_is_refused(agent):
    agent.send_raw(b'{"jsonrpc": "2.0", "id": 1, "method": "mig.apply", "param": {"gpu": 0, '
                   b'"profile": "1g.10gb"}}\n')
    reply = agent.read_reply()
    assert reply["error"]["code"] == rpc.INVALID_REQUEST and reply["id"] == 1
    assert "not 'param'" in reply["error"]["message"]
    assert agent.call("inventory")["gpus"][0]["instances"] == []


def test_a_batch_over_the_limit_is_refused_whole(agent):
    batch = [{"jsonrpc": "2.0", "id": n, "method": "mig.apply",
              "params": {"gpu": 0, "profile": "1g.10gb"}} for n in range(rpc.MAX_BATCH + 1)]
    agent.send_raw(json.dumps(batch).encode() + b"\n")
    reply = agent.read_reply()
    assert reply["error"]["code"] == rpc.INVALID_REQUEST
    assert "at most %d requests" % rpc.MAX_BATCH in reply["error"]["message"]
    assert agent.call("inventory")["gpus"][0]["instances"] == []


LINE = 1000  # bytes of each log line of the job below, its newline included


def noisy_job(agent, lines: int) -> str:
    """A job that has written ``lines`` lines of LINE bytes to its log, and ended."""
    job = agent.call("job.launch", key="noisy-%d" % lines, gpu=1, memory_mib=10, argv=[
        sys.executable, "-c", "import sys\nfor _ in range(%d):\n    sys.stdout.write('x' * %d "
        "+ '\\n')" % (lines, LINE - 1)])
    deadline = time.time() + 60
    while agent.call("job.get", job=job["id"])["state"] == "running":
        assert time.time() < deadline
        time.sleep(0.05)
    return job["id"]


def test_an_answer_over_the_size_limit_is_withheld_with_a_clear_error(agent):
    job = noisy_job(agent, rpc.MAX_ANSWER_BYTES // LINE + 100)
    reply = agent.request("job.logs", job=job, lines=100000)
    err = reply["error"]
    assert err["code"] == rpc.ANSWER_TOO_LARGE and err["data"]["class"] == rpc.REQUEST
    assert err["data"]["carried_out"] is True and err["data"]["size"] > rpc.MAX_ANSWER_BYTES
    assert "ask for less" in err["message"]
    assert len(agent.call("job.logs", job=job, lines=1000)["lines"]) == 1000  # the stream lives


def test_a_batch_stops_carrying_out_requests_once_its_answers_fill_the_line(agent):
    job = noisy_job(agent, 6000)  # 6 MB: two answers of it fit in a line, the third does not
    batch = [{"jsonrpc": "2.0", "id": n, "method": "job.logs", "params": {
        "job": job, "lines": 6000}} for n in range(4)]
    batch.insert(3, {"jsonrpc": "2.0", "id": "apply", "method": "mig.apply", "params": {
        "gpu": 0, "profile": "1g.10gb"}})
    agent.send_raw(json.dumps(batch).encode() + b"\n")
    raw = agent.proc.stdout.readline()
    assert len(raw) <= rpc.MAX_ANSWER_BYTES + 1
    replies = json.loads(raw)
    assert [len(r["result"]["lines"]) for r in replies[:2]] == [6000, 6000]
    assert replies[2]["error"]["data"]["carried_out"] is True
    assert [r["id"] for r in replies[3:]] == ["apply", 3]
    for r in replies[3:]:
        assert r["error"]["code"] == rpc.ANSWER_TOO_LARGE
        assert r["error"]["data"]["carried_out"] is False and "not carried out" in r[
            "error"]["message"]
    assert agent.call("inventory")["gpus"][0]["instances"] == []  # the apply was not done


def test_every_error_code_is_documented_with_its_class():
    """docs/protocol.md's table of codes and its table of classes say what ERROR_CLASSES says."""
    with open(os.path.join(REPO, "docs", "protocol.md"), encoding="utf-8") as f:
        text = f.read()
    documented = {int(code): name for code, name in re.findall(
        r"^\| (-?\d+) \| ([^|]+?) \|", text, re.M)}
    names = {v: n for n, v in vars(rpc).items()
             if n.isupper() and isinstance(v, int) and v in rpc.ERROR_CLASSES}
    assert set(documented) == set(rpc.ERROR_CLASSES)
    assert all(documented[c] == names[c] for c in documented if c > 0)
    classes = {cls: {w.strip() for w in codes.split(",")} for cls, codes in re.findall(
        r"^\| `(\w+)` \| ([^|]+) \|", text, re.M)}
    for code, cls in rpc.ERROR_CLASSES.items():
        assert (str(code) if code < 0 else names[code]) in classes[cls], (code, cls)
    assert sum(len(codes) for codes in classes.values()) == len(rpc.ERROR_CLASSES)


@pytest.mark.parametrize("damage", [
    b"", b'{"format": 1, "spec": "1xL4", "gpus": [', b"[]", b'{"format": 1}',
    b'{"format": 1, "spec": "1xL4", "next_pid": 1, "gpus": [{"model": "NVIDIA Q1"}]}',
    b'{"format": 1, "spec": "1xL4", "next_pid": 1, "gpus": "all", "procs": []}',
    b'{"format": 1, "spec": 1, "next_pid": 1, "gpus": [], "procs": []}'],
    ids=["empty", "cut-short", "a-list", "no-spec", "unknown-model", "gpus-a-string",
         "spec-a-number"])
def test_a_damaged_simulator_state_is_said_by_name_and_kept_at_start(start_agent, tmp_path,
                                                                     damage):
    """The simulated host's state file damaged (cut short, edited by hand): the agent's start
    says which file and what is wrong and exits 2, with no traceback, and leaves the file
    as it was for whoever looks; moved away, the host starts afresh from its spec."""
    state = tmp_path / "host"
    start_agent("1xL4", str(state)).close()
    stop_host(str(state))
    kept = state / "sim" / "gpus.json"
    kept.write_bytes(damage)
    again = start_agent("1xL4", str(state))
    assert again.proc.wait(timeout=10) == 2
    said = again.proc.stderr.read().decode()
    first, then = said.splitlines()
    assert first.startswith("remote_agent: the simulated host's state %s is damaged (" % kept)
    assert first.endswith("); move it away to start the host afresh from its spec"), said
    assert then == "remote_agent: the agent daemon did not start (exit 2)", said
    assert "Traceback" not in said and kept.read_bytes() == damage
    kept.rename(state / "sim" / "gpus.json.old")
    assert start_agent("1xL4", str(state)).call("hello")["backend"] == "sim"


def test_a_method_failing_or_answering_no_json_at_each_call_is_logged_once_and_once_mended(
        caplog):
    """A method whose answer is no JSON (NaN), then one that raises a bug's error, three calls
    each, then both working: each answers an internal error at each call, and the log says
    each once, with its traceback, and once more when it works, with how many calls failed.
    Before, each call logged its traceback: a client that asks each pass, a stack a pass."""
    broken = [True]
    methods = {
        "nan": rpc.Method(lambda p: float("nan") if broken[0] else 1.0),
        "bug": rpc.Method(lambda p: {}["missing"] if broken[0] else 1),
    }
    dispatcher = rpc.Dispatcher(methods, Failures(rpc.log, ("call", "calls")))
    caplog.set_level(logging.INFO, "remote_agent.rpc")
    for call in range(4):
        broken[0] = call < 3
        for method in methods:
            answer = json.loads(dispatcher.handle_line(json.dumps(
                {"jsonrpc": "2.0", "id": call, "method": method})))
            assert ("error" in answer) == broken[0], answer
            assert broken[0] is False or answer["error"]["code"] == rpc.INTERNAL_ERROR
    said = [(r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert said[0][0].startswith("the answer to nan is not valid JSON: Out of range float ")
    assert said[0][0].endswith("; said once until it is again")  # (the words: Python's)
    assert said == [
        (said[0][0], True),
        ("method bug failed: KeyError: 'missing'; said once until it is carried out again",
         True),
        ("the answer to nan is valid JSON again after 3 failed calls", False),
        ("method bug is carried out again after 3 failed calls", False)]
