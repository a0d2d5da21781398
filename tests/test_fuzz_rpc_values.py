"""Every param of every method given any JSON value hypothesis makes (test_protocol_fuzz
draws from fixed lists), and request lines with bytes changed, through a real agent: one
well-formed answer each, never -32603, the agent serving the next line; and lines cut short
on the daemon's socket, which hold up no other client."""

from __future__ import annotations

import json
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remote_agent.daemon.paths import AgentPaths
from tests.test_protocol_fuzz import CHANGING, NEVER_VALID, SCHEMA, VALID, Session, well_formed

JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 80), max_value=2 ** 80),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
              st.sampled_from(["j1", "1", "0", "1g.10gb", "MIG-x", "GPU-x", "running", "",
                               "nvmlDeviceGetCount", "NVML_ERROR_UNKNOWN", "/tmp", "x" * 5000])),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=10)


@st.composite
def requests(draw):
    method = draw(st.sampled_from(sorted(SCHEMA)))
    schema = SCHEMA[method]
    params = {}
    for name in draw(st.lists(st.sampled_from(sorted(schema)), unique=True)) if schema else []:
        if draw(st.booleans()):
            params[name] = json.loads(draw(st.sampled_from(VALID[schema[name]])))
        else:
            params[name] = draw(JSON)
    if method == "job.launch" and isinstance(params.get("argv"), list):
        params["argv"] = ["true"]  # what a launch taken runs: nothing that lasts
    if method in NEVER_VALID:
        params["not-a-param"] = 1  # surely refused: nothing is started, stopped or failed
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}


@pytest.fixture
def agent(start_agent):
    return start_agent("1xA100-80GB:mig,1xL4")


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=requests())
def test_any_json_for_any_param_gets_a_well_formed_answer(agent, request):
    session = Session(agent)
    agent.send_raw(json.dumps(request).encode("utf-8", "surrogatepass") + b"\n")
    got = session.lines_until_sentinel()
    assert len(got) == 1, got
    well_formed(got[0])


VALID_LINES = [json.dumps({"jsonrpc": "2.0", "id": 7, "method": m, "params": p}).encode()
               for m, p in (("hello", {"protocol": 1}), ("job.get", {"job": "j1"}),
                            ("mig.plan", {"gpu": 0, "profile": "1g.10gb"}),
                            ("job.logs", {"job": "j1", "lines": 5}), ("inventory", {}))]


@st.composite
def damaged_lines(draw):
    data = bytearray(draw(st.sampled_from(VALID_LINES)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        how = draw(st.integers(0, 2))
        if how == 0:
            data[at] = draw(st.integers(0, 255).filter(lambda b: b != 10))
        elif how == 1:
            del data[at]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=4)).replace(b"\n", b"")
    return bytes(data)


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(line=st.one_of(damaged_lines(), st.binary(max_size=64).map(
    lambda b: b.replace(b"\n", b""))))
def test_a_damaged_line_gets_one_well_formed_answer_or_none(agent, line):
    session = Session(agent)
    agent.send_raw(line + b"\n")
    got = session.lines_until_sentinel()
    assert len(got) <= 1, got
    if got:
        well_formed(got[0])


def _connected(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.settimeout(10)
    return sock


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(line=st.sampled_from(VALID_LINES), cut=st.integers(0, 200),
       junk=st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")), ends=st.booleans())
def test_a_line_cut_short_holds_up_no_other_client(agent, tmp_path, line, cut, junk, ends):
    """A client of the daemon's socket that sent part of a line, and waits or ends there: the
    next client is answered, and the first gets a well-formed answer or none."""
    agent.call("hello")  # the daemon runs
    path = AgentPaths(str(tmp_path / "state")).socket
    cut_short = _connected(path)
    with cut_short:
        cut_short.sendall(line[:cut] + junk)
        if ends:
            cut_short.shutdown(socket.SHUT_WR)
        other = _connected(path)
        with other, other.makefile("rb") as answers:
            other.sendall(b'{"jsonrpc": "2.0", "id": 1, "method": "daemon.version"}\n')
            assert "result" in json.loads(answers.readline())
        if ends:
            with cut_short.makefile("rb") as answers:
                for raw in answers.read().splitlines():
                    well_formed(json.loads(raw))
    assert agent.call("daemon.version")


IDS = st.one_of(st.integers(min_value=-(2 ** 70), max_value=2 ** 70), st.text(max_size=12),
                st.sampled_from([None, True, 1.5, 1.0, -0.0, [], {}, [1], {"a": 1}, 2 ** 63 - 1,
                                 2 ** 63, -(2 ** 63), 1 - 2 ** 63, 10 ** 400, "x" * 257,
                                 "x" * 256, "\x00", "\ud800", "\u202e", "a\nb"]))
METHODS = st.one_of(st.sampled_from(sorted(SCHEMA) + ["", "Hello", "hello ", "rpc.x", "x" * 500,
                                                      "daemon.version\x00", "\ud800"]),
                    st.none(), st.integers(), st.booleans(), st.lists(st.text(max_size=3)))
ENVELOPE = {"jsonrpc": st.sampled_from(["2.0", "2.0", "1.0", "2", 2.0, None, "", "2.0 "]),
            "id": IDS, "method": METHODS,
            "params": st.one_of(st.just({}), st.none(), st.lists(JSON, max_size=2), JSON)}


@st.composite
def envelopes(draw):
    """A request for daemon.version or another harmless method, with any id (or none), and
    a member or two changed, dropped or added."""
    message = {"jsonrpc": "2.0", "id": draw(IDS), "method": draw(st.sampled_from(
        ["daemon.version", "inventory", "snapshot", "job.list", "hello"]))}
    for _ in range(draw(st.integers(0, 2))):
        how = draw(st.integers(0, 3))
        name = draw(st.sampled_from(sorted(ENVELOPE)))
        if how == 0:
            message.pop(name, None)
        elif how == 3:
            message[draw(st.sampled_from(["extra", "ID", "result", "error", ""]))] = draw(JSON)
        else:
            message[name] = draw(ENVELOPE[name])
    if message.get("method") in NEVER_VALID or message.get("method") in CHANGING:
        message["params"] = {"not-a-param": 1}  # nothing started, stopped or changed
    return message


def _reply_id(message):
    """The id an answer must carry: the request's where it is one the protocol takes (a
    string of at most 256 characters that is Unicode and holds no NUL, an integer), else
    null."""
    got = message.get("id")
    if isinstance(got, str) and len(got) <= 256 and "\x00" not in got and not any(
            "\ud800" <= c <= "\udfff" for c in got):
        return got
    if isinstance(got, int) and not isinstance(got, bool) and abs(got) < 2 ** 63:
        return got
    return None


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(message=envelopes())
def test_a_changed_envelope_on_the_daemons_socket_is_answered_with_its_id(
        agent, tmp_path, message):
    """Straight to the daemon's socket, as each bridge writes there: a request whose members
    were changed gets one well-formed answer carrying its id (null where the id is none the
    protocol takes), a notification none unless it is no request at all; and the same
    connection is answered next."""
    agent.call("hello")  # the daemon runs
    with _connected(AgentPaths(str(tmp_path / "state")).socket) as sock, \
            sock.makefile("rb") as answers:
        sock.sendall(json.dumps(message).encode("utf-8", "surrogatepass") + b"\n")
        sock.sendall(b'{"jsonrpc": "2.0", "id": "next", "method": "daemon.version"}\n')
        got = []
        while True:
            raw = answers.readline()
            assert raw.endswith(b"\n"), (message, got)
            line = json.loads(raw)
            if isinstance(line, dict) and "id" not in line and "method" in line:
                continue  # pushed (subscribe)
            if isinstance(line, dict) and line.get("id") == "next":
                assert "result" in line, line
                break
            got.append(line)
    assert len(got) <= 1, (message, got)
    if got:
        well_formed(got[0])
        assert got[0]["id"] == _reply_id(message), (message, got)
    else:
        assert "id" not in message, (message, "no answer")
