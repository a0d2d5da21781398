"""PostgreSQL restarted (`pg_ctl restart -m immediate`: no shutdown, crash recovery) under a
`fractui scheduler` holding the lease and a researcher's `fractui submit --wait`, the watcher
without a TUI: each rides the restart out, says the store was lost and is back, and goes on —
the scheduler placing and the waiter waiting to the job's end, its exit code the job's. Real
PostgreSQL, real processes, simulated hosts."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from fractui.config import QueueConfig
from tests import localfleet
from tests.cli_run import fractui_process, reaped
from tests.localfleet import logged, wait
from tests.test_logs_store import _following, _store_only

pytestmark = pytest.mark.slow  # a fault suite: README, "the slow fault suites"

local_fleet = localfleet.local_fleet


def test_a_restart_under_the_scheduler_and_a_waiting_submit_is_ridden_out(
        local_fleet, pg_server, tmp_path: Path):
    url = pg_server.url(pg_server.new_database())
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.125)], store_url=url,
                    lease_s=3.0)
    config = f.write_config()
    go = tmp_path / "go"
    sched = f.scheduler_process("s1")
    try:
        with reaped(fractui_process(["--config", config, "submit", "--queue", "q", "--wait",
                                     "--", "sh", "-c", "while [ ! -e %s ]; do sleep 0.1; done"
                                     % go])) as waiter:
            wait(lambda: "running" in f.states().values(), f.states, timeout_s=60, alive=sched)
            pg_server.pg_ctl("restart", "-m", "immediate")
            wait(lambda: f.store.lease_holder() is not None, f.store.lease_holder, alive=sched)
            second = f.submit("q")  # placed and launched by the scheduler after the restart
            wait(lambda: f.states()[second.id] == "running", f.states, timeout_s=60,
                 alive=sched)
            assert waiter.poll() is None, waiter.communicate()
            go.touch()
            out, err = waiter.communicate(timeout=60)
    finally:
        sched.terminate()
        said = sched.communicate(timeout=60)[1]
    assert "Traceback" not in said and "Traceback" not in err, (said, err)
    assert waiter.returncode == 0, err
    lines = err.splitlines()
    assert any(line.endswith("; waiting for the store to come back (job 1 goes on meanwhile)")
               for line in lines), err
    assert "fractui: the store is back; waiting for job 1 to end" in lines, err
    assert lines[-1] == "fractui: job 1 ended: exited 0", err
    assert out == "1 pending in queue q\n"
    told = logged(said)  # the scheduler said the feed lost, and back
    assert any("polls every" in line for line in told), said
    assert any(line.startswith("the store's change feed is back") for line in told), said


def _said_until(stream, part: str) -> list:
    """The lines read from ``stream`` up to the first holding ``part`` (all of them, to its
    end, where none does)."""
    lines = []
    while not lines or part not in lines[-1]:
        line = stream.readline()
        if not line:
            break
        lines.append(line)
    return lines


def test_a_store_lost_under_logs_follow_through_the_store_is_waited_for(
        local_fleet, pg_server, tmp_path: Path):
    """``fractui logs -f`` of a job, for a user who reaches only the store, its PostgreSQL
    server stopped and started again twice under it: while the job waits to start, and while
    its output is followed. Each time it says the store was lost and is back, and goes on: the
    job's lines come, each once, and it ends as the job does (exit 0)."""
    url = pg_server.url(pg_server.new_database())
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.125)], store_url=url,
                    lease_s=3.0)
    go = tmp_path / "go"
    job = f.submit("q", argv=[sys.executable, "-c", "import os, time\nprint('one', flush=True)\n"
                              "while not os.path.exists(%r):\n    time.sleep(0.05)\n"
                              "print('two', flush=True)" % str(go)])
    follower = _following(_store_only(f), job.id, wait_s=60.0)

    def outage(then: str) -> None:
        """The server stopped until the follower says it waits for it, then started."""
        pg_server.stop()
        try:
            lost = _said_until(follower.stderr, "waiting for the store")
        finally:
            pg_server.start()
        assert lost[-1].endswith("; waiting for the store to come back (job %d goes on "
                                 "meanwhile)\n" % job.id), lost
        assert follower.stderr.readline() == "fractui: the store is back; %s\n" % then
    with reaped(follower):
        assert follower.stderr.readline() == \
            "fractui: job %d is pending; waiting for it to start\n" % job.id
        outage("waiting for job %d to start" % job.id)
        with reaped(f.scheduler_process("s1"), signal.SIGTERM):
            assert follower.stdout.readline() == "one\n"
            outage("following job %d" % job.id)
            go.touch()
            out, err = follower.communicate(timeout=120)
    assert (follower.returncode, out) == (0, "two\n"), err
    assert err == "fractui: job %d ended: exited 0\n" % job.id, err
