"""PostgreSQL crashed under the admin side: every server process killed with SIGKILL (the
postmaster and each backend, as the OOM killer or a power cut would leave it, less the page
cache), kept down past the lease, then started again (crash recovery), while a lease-holding
`fractui scheduler`, a standby, the admin's TUI (with its own child scheduler) and users
running `fractui submit` are connected. Each recovers by itself: no acknowledged submit is
lost, a submit retried with its key makes no second job, every job is decided and launched
once (the lease's epoch passing to whoever takes it), the TUI shows the store again, and no
process shows a traceback. Real PostgreSQL, real processes, simulated hosts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Dict, List

import pytest

from fractui.config import QueueConfig
from tests import localfleet
from tests.conftest import REPO
from tests.sshd import descendants
from tests.tui_probe import Probe

pytestmark = pytest.mark.slow  # a fault suite: README, "the slow fault suites"

local_fleet = localfleet.local_fleet
wait = localfleet.wait

SUBMITTERS, EACH = 3, 4


def server_pids(data_dir: str) -> List[int]:
    """The postmaster (its pid file's first line) and every process below it."""
    with open(os.path.join(data_dir, "postmaster.pid")) as f:
        postmaster = int(f.readline())
    return [postmaster] + descendants(postmaster)


def gone(pids: List[int]) -> bool:
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    return False
        except OSError:
            continue
    return True


def test_postgresql_killed_under_two_schedulers_and_submitting_users_loses_nothing(
        local_fleet, pg_server):
    url = pg_server.url(pg_server.new_database())
    f = local_fleet({"gpu-a": "2xL4", "gpu-b": "2xL4"}, [QueueConfig(name="q", gpu=0.125)],
                    store_url=url, lease_s=3.0)
    config = f.write_config()
    runs = {name: f.scheduler_process(name) for name in ("s1", "s2")}
    tui = Probe("root", config)  # the admin's TUI, headless, in a process of its own
    acked: Dict[str, List[int]] = {}  # a submit's key -> the job each exit 0 named
    refused: Counter = Counter()  # a submit's key -> its exits 1 (each retried by its key)
    odd: List[str] = []  # anything but exit 0, or exit 1 with one line naming the store
    lock = threading.Lock()
    crashed = threading.Event()

    def submitter(who: int) -> None:
        for i in range(EACH):
            key = "u%d-%d" % (who, i)
            if i == EACH // 2:
                crashed.wait(120)  # the second half sent at the server down, and back
            deadline = time.time() + 120
            while time.time() < deadline:
                done = subprocess.run(
                    [sys.executable, "-m", "fractui", "--config", config, "submit", "--queue",
                     "q", "--key", key, "--", "sleep", "600"], capture_output=True, text=True,
                    cwd=REPO, timeout=120, stdin=subprocess.DEVNULL)
                with lock:
                    if done.returncode == 0:
                        acked.setdefault(key, []).append(int(done.stdout.split()[0]))
                        break
                    lines = done.stderr.strip().splitlines()
                    if done.returncode != 1 or len(lines) != 1 or "Traceback" in \
                            done.stderr or "127.0.0.1:%d" % pg_server.port not in lines[0]:
                        odd.append("%s: exit %d: %s" % (key, done.returncode, done.stderr))
                    refused[key] += 1
                time.sleep(0.2)  # the user, reading the advice, runs it again with its key

    threads = [threading.Thread(target=submitter, args=(n,), daemon=True)
               for n in range(SUBMITTERS)]
    try:
        for t in threads:
            t.start()
        wait(lambda: len(acked) >= SUBMITTERS and "running" in f.states().values(),
             f.states, timeout_s=120)
        leader = f.store.lease_holder()
        assert leader is not None
        pids = server_pids(pg_server.data)
        for pid in pids:  # the whole server at once: no shutdown, no checkpoint
            os.kill(pid, signal.SIGKILL)
        wait(lambda: gone(pids), lambda: pids)
        crashed.set()
        try:
            time.sleep(2 * 3.0)  # down past the lease: it lapses on the server's clock
        finally:
            pg_server.start()  # crash recovery from the WAL
        for t in threads:
            t.join(300)
        assert not any(t.is_alive() for t in threads)
        keys = ["u%d-%d" % (w, i) for w in range(SUBMITTERS) for i in range(EACH)]
        assert sorted(acked) == sorted(keys), (acked, refused)  # each got its exit 0 at last
        assert odd == [], odd
        assert sum(refused.values()) > 0, "no submit met the server down"
        jobs = f.store.jobs()
        # every acknowledged submit is there, and a retried one made no second job
        assert sorted(j.id for j in jobs) == sorted(i for ids in acked.values() for i in ids)
        assert len(jobs) == len(keys)
        wait(lambda: set(f.states().values()) == {"running"}, f.states, timeout_s=120)
        for name, run in runs.items():
            assert run.poll() is None, (name, run.stderr.read() if run.stderr else "")
        audit = f.store.audit_log(limit=1000)
        for action in ("decide", "launch"):  # once each, by whichever held the lease then
            assert sorted(e.job for e in audit if e.action == action) == sorted(
                j.id for j in jobs), audit
        assert {j.attempt for j in f.store.jobs()} == {0}  # none requeued
        records = Counter(r["key"] for r in f.agent_jobs())
        assert records == Counter(j.key(f.store.uid) for j in jobs)  # one copy each
        assert all(r["state"] == "running" for r in f.agent_jobs())
        wait(lambda: tui.ask("jobs")["jobs"] == {str(j.id): "running" for j in jobs},
             lambda: tui.ask("jobs"))  # the TUI shows the store again, by itself
    finally:
        crashed.set()
        said = {"tui": tui.close()}
        for name, run in runs.items():
            run.terminate()
            said[name] = run.communicate(timeout=60)[1]
    for name, err in said.items():
        assert "Traceback" not in err, (name, err)
        # the outage said when its words change, not at every poll of the lost feed
        lost = [line for line in localfleet.logged(err) if "polls every" in line]
        assert all(a != b for a, b in zip(lost, lost[1:])), (name, lost)
        assert lost or name == "tui", err
