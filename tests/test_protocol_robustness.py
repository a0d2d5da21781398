"""Malformed input never crashes or hangs the agent: every line gets a clear JSON-RPC answer."""

from __future__ import annotations

import json

import pytest

from remote_agent import PROTOCOL_VERSION
from remote_agent.rpc import jsonrpc as rpc
from remote_agent.rpc.jsonrpc import MAX_LINE_BYTES
from tests.conftest import AgentError


@pytest.fixture
def agent(start_agent):
    return start_agent("1xA100-80GB:mig,1xL4")


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
     rpc.INVALID_PARAMS, "does not take param(s) 'profil'"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "mig.plan", "params": {"gpu": -1, "profile": "x"}}',
     rpc.INVALID_PARAMS, ">= 0"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "mig.apply", "params": {"gpu": 0, '
     b'"profile": "1g.10gb", "start": "zero"}}', rpc.INVALID_PARAMS, "must be an integer"),
])
def test_malformed_lines_get_errors_and_the_agent_keeps_serving(agent, line, code, words):
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


@pytest.mark.parametrize("spec", ["1xL4:mig", "3xNOPE", "x,", "0xL4"])
def test_a_bad_sim_spec_is_a_usage_error(start_agent, tmp_path, spec):
    agent = start_agent(spec, str(tmp_path / spec.replace(":", "_").replace(",", "_")))
    assert agent.proc.wait(timeout=10) == 2
    assert b"remote_agent:" in agent.proc.stderr.read()
