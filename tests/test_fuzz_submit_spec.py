"""Job specs by hypothesis, submitted as a user submits them and placed by a real scheduler
on a simulated fleet: a queue's portion (a fraction, an amount of GPU memory, a MIG profile,
whole GPUs, CPUs and RAM, as TOML writes them: nan, inf, huge, negative, text where a number
goes), the job's variables and its command. Each spec is refused where it is wrong — the
config at the queue's line, the command line naming the word — with exit 2, or queued (exit 0);
a queued job is never lost: the scheduler's passes run it, or fail it, or leave it pending,
each with a why that ``fractui jobs`` says."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fractui.config import ConfigError
from fractui.scheduler import Scheduler
from fractui.servable import load_checked
from fractui.store.model import DONE, ENDED, FAILED, PENDING, PLACED, RUNNING, Job
from tests.cli_run import in_process, leaks
from tests.conftest import STEP_S
from tests.localfleet import local_fleet  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow  # real agents and a scheduler's passes: about 7 s

FITTING = {"gpu": ["0.25", "0.5", "0.001", "0.999"], "memory_gib": ["1", "10", "0.5", "22"],
           "gpus": ["1"], "mig": ['"1g.10gb"', '"3g.40gb"', '"7g.80gb"']}
SHELL_MARK = "/tmp/fz-shell"  # what a word of the job read by a shell would make
NUMBERS = st.sampled_from([
    "0", "1", "2", "-1", "0.5", "0.25", "0.001", "1e-300", "0.9999999", "1.0", "1.5", "7",
    "8", "9", "22", "23", "24", "79", "80", "81", "1000", "1e6", "1e308", "inf", "-inf", "nan",
    "-0.0", "9223372036854775807", "99999999999999999999", '"0.5"', '"10GiB"', '"10 GB"',
    '"24"', '""', "true", "[]", "{}"])
PROFILES = st.sampled_from(['"1g.10gb"', '"3g.40gb"', '"7g.80gb"', '"1g.5gb"', '"8g.80gb"',
                            '"3G.40GB"', '""', '"1g.10gb "', "3", "[\"1g.10gb\"]"])
PORTIONS = {"gpu": NUMBERS, "memory_gib": NUMBERS, "gpus": NUMBERS, "mig": PROFILES}
HOSTILE = st.sampled_from([
    "", " ", "-", "--", "-x", "--json", "é", "🙂", "\u202e", "\ufeff", "\x1b[2J", "a\nb", "\t",
    "\x7f", "x" * 5000, "=", "A=", "=x", "A=B=C", "1e309", "nan", "$(touch %s)" % SHELL_MARK,
    "`touch %s`" % SHELL_MARK, "; touch %s" % SHELL_MARK, "'", '"', "\\", "*", "~", "/", ".."])
PROGRAMS = st.sampled_from([[sys.executable, "-c", "import sys; print(sys.argv[1:])"],
                            ["true"], ["/no/such/program"], [""], ["-x"], ["relative/prog"],
                            ["é"], ["$(touch %s)" % SHELL_MARK]])
ENV_NAMES = st.sampled_from(["A", "B", "PATH", "LD_PRELOAD", "", "A B", "é", "\x1b", "A=",
                             "CUDA_VISIBLE_DEVICES", "1X"])


@st.composite
def specs(draw):
    keys = draw(st.one_of(st.sampled_from(sorted(PORTIONS)).map(lambda k: [k]),
                          st.lists(st.sampled_from(sorted(PORTIONS)), unique=True, max_size=3)))
    queue = {k: draw(st.one_of(st.sampled_from(FITTING[k]), PORTIONS[k])) for k in keys}
    for key in ("cpus", "memory"):
        if draw(st.integers(0, 3)) == 0:
            queue[key] = draw(NUMBERS)
    env = ["%s=%s" % (draw(ENV_NAMES), draw(HOSTILE))
           for _ in range(draw(st.integers(0, 2)))]
    argv = draw(PROGRAMS) + draw(st.lists(HOSTILE, max_size=3))
    return queue, env, argv


@pytest.fixture
def fleet(local_fleet, tmp_path):  # noqa: F811
    f = local_fleet({"gpu-a": "1xL4,1xA100-80GB:mig"}, [])
    base = open(f.write_config()).read()
    return f, base


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(spec=specs())
def test_a_job_spec_is_refused_where_it_is_wrong_or_queued_and_never_lost(
        fleet, capfd, tmp_path, spec):
    f, base = fleet
    queue, env, argv = spec
    text = base + "[[queues]]\nname = \"fz\"\n" + "".join(
        "%s = %s\n" % kv for kv in queue.items())
    path = tmp_path / "fz.toml"
    path.write_text(text)
    try:
        config = load_checked(str(path))
    except ConfigError as err:  # at a line of the queue's, which the base has none of
        assert err.path == str(path) and err.line is not None, str(err)
        assert base.count("\n") < err.line <= text.count("\n"), (queue, str(err))
        code, out, said = in_process(capfd, ["--config", str(path), "jobs"])
        assert code == 2 and not leaks(said) and said.startswith("fractui: %s:%d: " % (
            path, err.line)), (queue, said)
        return
    words = ["--config", str(path), "submit", "--queue", "fz", "--json"]
    for pair in env:
        words += ["--env", pair]
    before = len(f.store.jobs())
    code, out, err = in_process(capfd, words + ["--", *argv])
    assert code in (0, 2) and not leaks(err), (spec, code, err)
    if code == 2:  # refused, one line that names it, and nothing queued
        assert err.startswith("fractui: ") and err.count("\n") == 1, (spec, err)
        assert len(f.store.jobs()) == before, spec
        return
    job = json.loads(out)["id"]
    scheduler = Scheduler(config, f.store, f.fleet, name="fz")
    deadline = time.time() + 30
    while _undecided(f.store.get(job)) and time.time() < deadline:
        scheduler.step()
        time.sleep(STEP_S)
    got = f.store.get(job)
    assert got.state in (PENDING, RUNNING, DONE, FAILED), (spec, got)
    if got.state in (PENDING, FAILED):  # and it says why, as jobs does
        assert got.reason, (spec, got)
    code, out, err = in_process(capfd, ["--config", str(path), "jobs", str(job), "--json"])
    assert code == 0 and not leaks(err) and json.loads(out), err
    code, out, err = in_process(capfd, ["--config", str(path), "cancel", str(job)])
    assert code in (0, 1) and not leaks(err), err  # (1: it had ended)
    while f.store.get(job).state not in ENDED and time.time() < deadline + 30:
        scheduler.step()
        time.sleep(STEP_S)
    assert f.store.get(job).state in ENDED, f.store.get(job)
    assert not os.path.exists(SHELL_MARK), "a word of the job was read by a shell"


def _undecided(job: Job) -> bool:
    """Placed and not yet started, or waiting for a pass to say why."""
    return job.state == PLACED or (job.state == PENDING and not job.reason)
