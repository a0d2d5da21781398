"""Shared test fixtures: agents run as real subprocesses speaking the real protocol."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, Iterator, List, Optional

import pytest
from hypothesis import settings

# Property tests run subprocess-free but long sequences: no per-example deadline.
settings.register_profile("fractui", deadline=None, print_blob=True)
settings.load_profile("fractui")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class AgentError(Exception):
    def __init__(self, error: Dict[str, Any]):
        super().__init__(error["message"])
        self.code = error["code"]
        self.message = error["message"]
        self.data = error.get("data")


class AgentProcess:
    """``python -m remote_agent serve --stdio`` in a subprocess, driven line by line."""

    def __init__(self, state_dir: str, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "remote_agent", "serve", "--stdio", "--state-dir", state_dir,
             *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
        self._next_id = 0

    def send_raw(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def read_reply(self) -> Any:
        line = self.proc.stdout.readline()
        if not line:
            raise EOFError("agent closed its output; stderr: %s" % self.proc.stderr.read().decode())
        return json.loads(line)

    def request(self, method: str, **params: Any) -> Dict[str, Any]:
        self._next_id += 1
        msg = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params:
            msg["params"] = params
        self.send_raw(json.dumps(msg).encode() + b"\n")
        reply = self.read_reply()
        assert reply["id"] == self._next_id, reply
        return reply

    def call(self, method: str, **params: Any) -> Any:
        reply = self.request(method, **params)
        if "error" in reply:
            raise AgentError(reply["error"])
        return reply["result"]

    def close(self) -> int:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        code = self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code


@pytest.fixture
def start_agent(tmp_path) -> Iterator:
    """start_agent(spec, state_dir=None) -> a running sim agent; all are closed after the test."""
    started: List[AgentProcess] = []

    def start(spec: Optional[str], state_dir: Optional[str] = None, *extra: str) -> AgentProcess:
        args = (["--sim", spec] if spec else ["--backend", "sim"]) + list(extra)
        agent = AgentProcess(state_dir or str(tmp_path / "state"), *args)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        if agent.proc.poll() is None:
            agent.close()
