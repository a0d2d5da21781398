"""A client that sends control characters in what the agent shows or uses as a path (a job's
cwd, name, key, stop reason, an environment variable's name, a MIG profile) is refused with
the param named, on a real agent; the program's arguments and the environment's values, passed
on as they are, may hold any character but NUL."""

from __future__ import annotations

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
