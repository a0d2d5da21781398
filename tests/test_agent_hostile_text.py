"""A client that sends control characters in what the agent shows or uses as a path (a job's
cwd, name, key, stop reason, an environment variable's name, a MIG profile) is refused with
the param named, on a real agent; the program's arguments and the environment's values, passed
on as they are, may hold any character but NUL."""

from __future__ import annotations

import os
from typing import Any, Dict

import pytest

from remote_agent.rpc import jsonrpc as rpc
from tests.conftest import AgentError
from tests.test_jobs import script, wait_job
from tests.test_protocol_robustness import serving_agent  # noqa: F401 - the fixture

LAUNCH: Dict[str, Any] = dict(key="k-text", gpu=0, memory_mib=10,
                              argv=script("import sys; sys.exit(0)"))


@pytest.mark.parametrize("method, params, field", [
    ("job.launch", {**LAUNCH, "cwd": "/tmp/\x1b]0;owned\x07"}, "cwd"),
    ("job.launch", {**LAUNCH, "cwd": "/tmp/a\nb"}, "cwd"),
    ("job.launch", {**LAUNCH, "name": "train\r\x1b[2Kdone"}, "name"),
    ("job.launch", {**LAUNCH, "name": "a\u202egnp.exe"}, "name"),  # a bidi override
    ("job.launch", {**LAUNCH, "key": "k\x1b[31m"}, "key"),
    ("job.launch", {**LAUNCH, "run_as": "nobody\n"}, "run_as"),
    ("job.launch", {**LAUNCH, "env": {"PATH\x1b": "x"}}, "env"),
    ("job.launch", {**{k: v for k, v in LAUNCH.items() if k != "memory_mib"},
                    "mig": {"profile": "1g.10gb\x1b", "start": 0}}, "profile"),
    ("job.launch", {**{k: v for k, v in LAUNCH.items() if k != "memory_mib"},
                    "instance": "MIG-\x08x"}, "instance"),
    ("job.stop", {"job": "j1", "reason": "make room\n2026-01-01 fake log line"}, "reason"),
    ("job.get", {"job": "j1\x1b"}, "job"),
    ("hello", {"client": "fractui\x1b[8m"}, "client"),
    ("mig.plan", {"gpu": "GPU-\x7f", "profile": "1g.10gb"}, "gpu"),
])
def test_an_unprintable_character_is_refused_naming_its_param(serving_agent, method, params,
                                                              field):
    with pytest.raises(AgentError) as err:
        serving_agent.call(method, **params)
    assert err.value.code == rpc.INVALID_PARAMS
    assert "param %r must be" % field in err.value.message
    assert "free of control characters and other unprintable ones" in err.value.message
    assert [j["key"] for j in serving_agent.call("job.list")["jobs"]] in ([], ["k-ok"])


def test_arguments_and_environment_values_pass_on_as_given(serving_agent, tmp_path):
    """What the program gets is the client's to choose; the name made from its path, shown,
    has each unprintable character as '?'."""
    out = tmp_path / "seen"
    prog = tmp_path / "run\x1bme"
    prog.write_text("#!/bin/sh\nprintf '%%s|%%s' \"$1\" \"$ODD\" > %s\n" % out)
    prog.chmod(0o755)
    job = serving_agent.call("job.launch", key="k-ok", gpu=1, memory_mib=10,
                     argv=[str(prog), "a\x1b[31m\nb"], env={"ODD": "x\ty\x07"})
    assert job["name"] == "run?me"
    assert wait_job(serving_agent, job["id"])["exit_code"] == 0
    assert out.read_text() == "a\x1b[31m\nb|x\ty\x07"


@pytest.mark.skipif(os.geteuid() != 0, reason="run_as needs an agent running as root")
def test_a_name_made_from_a_long_program_path_is_cut_to_the_agents_bound(serving_agent):
    """A program's path may be 128 KiB (an argv word's bound): the name the agent makes of it
    is kept within its bound on a given one (MAX_TEXT), the mark saying how much was cut. A
    run_as job's program is looked at as its user, so the job is recorded (ended: no such
    program). Before: the whole word was its name."""
    program = "/nonexistent/" + "x" * 10000
    with pytest.raises(AgentError) as err:
        serving_agent.call("job.launch", key="k-long", gpu=1, memory_mib=10, run_as="nobody",
                           argv=[program])
    assert err.value.code == rpc.START_FAILED, err.value.message
    name = err.value.data["job"]["name"]
    kept = name.find("\u2026")
    assert name == "x" * kept + "\u2026 (cut: %d more characters)" % (10000 - kept), name[-40:]
    assert rpc.MAX_TEXT - 2 <= len(name) <= rpc.MAX_TEXT, len(name)
