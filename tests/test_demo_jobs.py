"""The demo's jobs behave like a team's: they print progress a log view can follow and search,
and a seeded few fail partway with exit code 1, their last line saying why — read through the
paths the TUI reads (the store's jobs, its kept output, the agent's log followed)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time

import pytest

from fractui.demo import Demo
from fractui.fleet.host import HostUnavailable
from fractui.store.model import FAILED, RUNNING
from tests.conftest import REPO

PROGRESS = re.compile(r"step [0-9]+  loss [0-9]+\.[0-9]{4}  throughput [0-9]+\.[0-9] samples/s")
WAIT_S = 240.0  # generous: jobs wait for room, and a busy machine starts them slowly
FIRST_FAILING = 9  # the seed's first job that fails (7 s into its run)


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


@pytest.fixture
def demo():
    demo = Demo(gpus=4, seed=3)
    demo.start()
    try:
        yield demo
    finally:
        demo.stop()


def test_the_demos_jobs_print_progress_and_some_fail_saying_why(demo):
    store = demo.store
    followed: list[str] = []
    arrived, ended_short = threading.Event(), threading.Event()
    deadline = time.monotonic() + WAIT_S
    failed, stop = None, None
    while failed is None or not arrived.is_set():
        assert time.monotonic() < deadline, (followed, [j.record() for j in store.jobs()])
        assert not ended_short.is_set(), followed
        time.sleep(1)
        if stop is None:  # a running job's log, as the log view opens it: its lines so far,
            # then what it prints from then on: one that runs 30 s or more, 2-5 s a line
            running = [j for j in store.jobs(states=(RUNNING,)) if j.agent_job is not None
                       and float(_option(j.argv, "--seconds") or 0) >= 30]
            if running:
                job = running[0]

                def sink(data: str, eof: bool) -> None:
                    followed.extend(data.splitlines())
                    if len([line for line in followed if PROGRESS.fullmatch(line)]) >= 4:
                        arrived.set()
                    elif eof:
                        ended_short.set()

                assert job.slot is not None
                try:
                    first, stop = demo.source.follow_logs(job.slot.host, job.agent_job,
                                                            job.key(store.uid), sink)
                except HostUnavailable:  # the view's own link to that host still connecting
                    # (the scheduler's placed the job on its own link): again in a second
                    continue
                followed.extend(first)
        tail = store.log_tail(FIRST_FAILING) if len(store.jobs()) >= FIRST_FAILING else None
        failed = store.get(FIRST_FAILING) if tail is not None and tail.complete else None
    assert stop is not None
    stop()
    # the seed's: its 9th job fails, 7 s into its run, and says so as its last line
    assert failed.state == FAILED, failed.record()
    why = "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert _option(failed.argv, "--fail-with") == why
    assert (failed.exit_code, failed.reason) == (1, "exited 1")  # (its output: its team's)
    kept = store.log_tail(failed.id).text.splitlines()
    assert kept[-1] == why and PROGRESS.fullmatch(kept[-2]), kept
    # every job failed is one its argv says fails (and none fails that was not to)
    for job in store.jobs(states=(FAILED,)):
        assert _option(job.argv, "--fail-with") is not None, job.record()
    # the followed job's progress: several lines, each step 50 on from the one before
    steps = [int(line.split()[1]) for line in followed if PROGRESS.fullmatch(line)]
    assert len(steps) >= 4 and steps == list(range(50, 50 * len(steps) + 1, 50)), followed


def test_simload_refuses_a_failure_that_exits_0():
    """``--fail-with`` says why a job failed: with exit code 0 it would be a success that says
    it failed, so it is a usage error (exit 2), before anything runs."""
    run = subprocess.run([sys.executable, "-m", "remote_agent.simload", "--mem-mib", "10",
                          "--seconds", "1", "--fail-with", "RuntimeError: boom"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert run.returncode == 2
    assert "--fail-with needs a non-zero --exit-code" in run.stderr
    assert "Traceback" not in run.stderr
