"""Two teams' members submitting and cancelling at once, each as their own OS user and role
(peer authentication), while a `fractui scheduler` places and launches on simulated hosts, and
the PostgreSQL server killed under them (`pg_ctl stop -m immediate`: no shutdown, no
checkpoint) and started again mid-stream. Each verb that met the outage exits 1 in one line
naming the server and is run again by its user as told (a submit by its key, a cancel as it
was); what each was told was made holds afterwards, once."""

from __future__ import annotations

import collections
import threading
import time
from typing import Dict, List, Tuple
from urllib.parse import quote

import pytest

from tests.localfleet import wait
from tests.test_store_damage import plain_dir  # noqa: F401 - a fixture
from tests.test_teams_postgres import (SLEEPER, Team, holder,  # noqa: F401 - fixtures:
                                       peer_server, team)

pytestmark = pytest.mark.slow  # a fault suite: README, "the slow fault suites"

# who submits to which queue; every other job of each is cancelled by its member
PLAN = {"ann": "v", "ben": "v", "cat": "n"}
EACH = 6


def test_members_submits_and_cancels_across_a_server_crash_hold_once(team: Team):  # noqa: F811
    runs = team.schedulers("s1")
    where = "%s:%d" % (quote(team.server.sockets, safe=""), team.server.port)
    acked: Dict[str, int] = {}  # a submit's key -> its job
    cancelled: List[int] = []  # each job whose cancel exited 0
    odd: List[str] = []  # anything but exit 0, or exit 1 in one line naming the server
    met = collections.Counter()  # per verb: the exits 1 of the outage
    lock = threading.Lock()
    crashed = threading.Event()

    def until_done(person: str, *verb: str) -> str:
        """The verb run again, as its user would, until it exits 0: its stdout."""
        for _ in range(600):
            done = team.run(person, *verb)
            if done.returncode == 0:
                return done.stdout
            lines = done.stderr.strip().splitlines()
            with lock:
                met[verb[0]] += 1
                if done.returncode != 1 or len(lines) != 1 or "Traceback" in done.stderr or \
                        not lines[0].startswith("fractui: store postgresql://%s/" % where):
                    odd.append("%s %s: exit %d: %s" % (person, verb, done.returncode,
                                                      done.stderr))
            time.sleep(0.2)
        raise AssertionError("%s %s never went through" % (person, verb))

    def member(person: str) -> None:
        for i in range(EACH):
            if i == EACH - 2:
                crashed.wait(120)  # the last two sent at the server down, or back
            key = "%s-%d" % (person, i)
            job = int(until_done(person, "submit", "--queue", PLAN[person], "--key", key,
                                 "--", *SLEEPER).split()[0])
            with lock:
                acked[key] = job
            if i % 2:
                until_done(person, "cancel", str(job))
                with lock:
                    cancelled.append(job)

    threads = [threading.Thread(target=member, args=(p,), daemon=True) for p in PLAN]
    try:
        for t in threads:
            t.start()
        # mid-stream: the members still running verbs, some of them inside a write
        wait(lambda: len(acked) > len(PLAN) and "running" in team.fleet.states().values(),
             team.fleet.states, timeout_s=120, step_s=0.01)
        team.server.pg_ctl("stop", "-m", "immediate")
        crashed.set()
        try:
            time.sleep(2.0)
        finally:
            team.server.start()
        for t in threads:
            t.join(300)
        assert not any(t.is_alive() for t in threads)
        assert odd == [], odd
        assert sorted(acked) == sorted("%s-%d" % (p, i) for p in PLAN for i in range(EACH))
        jobs = {j.id: j for j in team.fleet.store.jobs()}
        assert sorted(jobs) == sorted(acked.values())  # each acknowledged once, no other
        assert sorted(cancelled) == sorted(acked["%s-%d" % (p, i)] for p in PLAN
                                           for i in range(1, EACH, 2))
        wanted = {j: "cancelled" if j in cancelled else "running" for j in jobs}
        wait(lambda: team.fleet.states() == wanted, team.fleet.states, timeout_s=120)
        audit = team.fleet.store.audit_log(limit=1000)
        said: Dict[Tuple[int, str], int] = collections.Counter(
            (e.job, e.action) for e in audit if e.job is not None)
        for j in jobs:
            assert said[(j, "submit")] == 1, (j, audit)
            assert said[(j, "cancel")] == (j in cancelled), (j, audit)
            assert said[(j, "decide")] <= 1 and said[(j, "launch")] <= 1, (j, audit)
            assert said[(j, "launch")] == 1 or j in cancelled, (j, audit)
        keys = team.keys()
        assert all(n == 1 for n in keys.values()), keys  # no job launched twice
        on_hosts = {r["key"]: r["state"] for r in team.fleet.agent_jobs()}
        for j in jobs:  # a cancelled job runs nowhere; the others once
            assert (on_hosts.get(team.key(j)) == "running") == (j not in cancelled), on_hosts
        assert holder(team) == "s1" and runs["s1"].poll() is None
        assert sum(met.values()) > 0, "no verb met the server down"
    finally:
        crashed.set()
        said_by = team.close(runs)
    assert "Traceback" not in said_by["s1"], said_by
