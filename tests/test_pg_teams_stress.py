"""Many teams at once on one PostgreSQL store, everything together: four members of two teams
submitting as their own OS users, the admin cancelling, moving and placing jobs by hand, two
`fractui scheduler` processes (the lease holder killed with SIGKILL in a pass, the other taking
the lease) and the server stopped and started again, on simulated hosts of real agents. A
watcher reads the agents' job tables and the store all along; at the end the store, the
agents and the audit are checked against what every process was told (the exit 0s)."""

from __future__ import annotations

import collections
import os
import random
import signal
import threading
import time
from typing import Dict, List, Tuple

import pytest

from fractui.store.base import StoreError
from fractui.store.model import ACTIVE, ENDED, PENDING, PLACED, RUNNING, attempt_of
from tests import test_store_damage, test_teams_postgres
from tests.localfleet import wait
from tests.test_teams_postgres import SLEEPER, TEAMS, Team, holder

pytestmark = pytest.mark.slow  # real schedulers, agents and a server restart: about a minute

# the five users on a server of the test's own (tests.test_teams_postgres)
team, peer_server = test_teams_postgres.team, test_teams_postgres.peer_server
plain_dir = test_store_damage.plain_dir

# who submits how many to which queue (v: vision's, n: nlp's): nlp asks one more than its
# quota (6 x 0.25 GPU), and the fleet (16 x 0.25) keeps room to move jobs into
PLAN = {"ann": ["v"] * 3, "ben": ["v"] * 3, "cat": ["n"] * 4, "dan": ["n", "v", "n", "n"]}


class Watch:
    """Reads the agents and the store until told to stop; what broke a promise, once each."""

    def __init__(self, team: Team) -> None:
        self.team = team
        self.broken: List[str] = []
        self.looks = 0
        self.done = threading.Event()
        facts = team.fleet.store.inventory()
        self.size = {(host, g["index"]): g["memory_mib"]
                     for host, f in facts.items() for g in f["gpus"]}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _say(self, what: str) -> None:
        if what not in self.broken:
            self.broken.append(what)

    def _run(self) -> None:
        while not self.done.is_set():
            try:
                self.look()
            except Exception as err:  # noqa: BLE001 - a watch that died checked nothing after
                self._say("the watch stopped after %d looks: %r" % (self.looks, err))
                return
            time.sleep(0.05)

    def look(self) -> None:
        store = self.team.fleet.store
        uid = store.uid
        records = self.team.fleet.agent_jobs()
        booked: Dict[Tuple[str, int], int] = collections.Counter()
        running: Dict[int, List[str]] = collections.defaultdict(list)
        for r in records:
            if r["state"] != "running":
                continue
            for g in r["gpus"]:
                booked[(r["host"], g)] += r["memory_mib"]
            owner = attempt_of(r["key"], uid)
            if owner is not None:
                running[owner[0]].append(r["key"])
        for where, mib in booked.items():
            if mib > self.size[where]:
                self._say("agents book %d MiB on %s gpu%d of %d" % (
                    (mib,) + where + (self.size[where],)))
        for job, keys in running.items():
            if len(keys) > 1:
                self._say("job %d runs twice: %s" % (job, keys))
        try:
            jobs = store.jobs()
        except StoreError:
            return  # the server is down
        self.looks += 1
        held: Dict[str, float] = collections.Counter()
        slots: Dict[Tuple[str, int], int] = collections.Counter()
        for j in jobs:
            if j.state == "cancelled" and job_runs(records, j.key(uid)):
                self._say("cancelled job %d runs" % j.id)
            if j.state in ENDED or j.state == PENDING:
                continue
            held[j.team or ""] += j.held_within
            if j.holds_slice and j.slot is not None:  # launched: a decision not yet launched
                for g in j.slot.gpus:  # may meet a placement by hand made at once, and the
                    slots[(j.slot.host, g)] += j.slot.memory_mib or 0  # agent refuses one
        for name, gpus in held.items():
            if gpus > TEAMS[name] + 1e-9:
                self._say("team %s holds %.2f GPUs of its quota %.2f: %s" % (
                    name, gpus, TEAMS[name], [(j.id, j.state, j.held_within) for j in jobs
                                             if j.team == name and j.held_within]))
        for where, mib in slots.items():
            if mib > self.size[where]:
                self._say("the store runs %d MiB on %s gpu%d of %d: %s" % (
                    (mib,) + where + (self.size[where],) + ([
                        (j.id, j.attempt, j.state, j.stop_intent, j.agent_job, j.manual,
                         j.slot.host, j.slot.gpus) for j in jobs
                        if j.holds_slice and j.slot is not None],)))


def job_runs(records: List[dict], key: str) -> bool:
    return any(r["key"] == key and r["state"] == "running" for r in records)


def test_many_teams_two_schedulers_an_admin_and_a_server_restart_lose_and_double_nothing(
        team):
    fleet = team.fleet
    runs = team.schedulers("s1", "s2")
    watch = Watch(team)
    acked: Dict[str, int] = {}  # a submit's key -> the job its exit 0 named
    by_hand: List[Tuple[str, int]] = []  # (verb, job) the admin got an exit 0 for
    odd: List[str] = []  # exits that are neither 0 nor one line of refusal
    lock = threading.Lock()
    halfway = threading.Barrier(len(PLAN) + 1)
    quiet = threading.Event()  # the admin stops

    def answer(what: str, done) -> bool:
        """Whether it went through; a refusal must be exit 1, its last line fractui's, no
        traceback."""
        if done.returncode == 0:
            return True
        lines = done.stderr.strip().splitlines() or [""]
        with lock:
            refusals[what.split()[0] if " " in what else "submit"] += 1
        if done.returncode != 1 or "Traceback" in done.stderr or \
                not lines[-1].startswith("fractui: "):
            with lock:
                odd.append("%s: exit %d: %s" % (what, done.returncode, done.stderr))
        return False

    def submitter(person: str) -> None:
        for i, queue in enumerate(PLAN[person]):
            if i == len(PLAN[person]) // 2:
                halfway.wait(120)
            key = "%s-%d" % (person, i)
            deadline = time.time() + 120
            while time.time() < deadline:  # retried by its key, as the refusal advises
                done = team.run(person, "submit", "--queue", queue, "--key", key, "--",
                                *SLEEPER)
                if answer(key, done):
                    with lock:
                        acked[key] = int(done.stdout.split()[0])
                    break
                time.sleep(0.2)

    rng = random.Random(int(os.environ.get("FRACTUI_TEAMS_SEED", "54")))
    refusals: collections.Counter = collections.Counter()  # for the record: what was refused

    def admin() -> None:
        """The admin by hand (root, role root in fractui_admin, the hosts' config: a member may
        not read root's hosts): cancels any job not ended, moves a placed or running one,
        places a pending one, as the store shows them."""
        while not quiet.is_set():
            time.sleep(0.1)
            try:
                jobs = fleet.store.jobs()
            except StoreError:
                time.sleep(0.2)
                continue
            verb = rng.choice(["cancel", "move", "move", "place"])
            fit = [j for j in jobs if j.state in {"cancel": ACTIVE, "move": (PLACED, RUNNING),
                                                  "place": (PENDING,)}[verb]]
            job = rng.choice(fit) if fit else None
            if job is not None:
                words = [verb, str(job.id)]
                if verb != "cancel":  # elsewhere, where the store leaves room
                    taken = collections.Counter((s.host, s.gpus) for j in jobs if j.state
                                                not in ENDED for s in (j.slot, j.move_to) if s)
                    room = [(h, (g,)) for h in ("gpu-a", "gpu-b") for g in range(2)
                            if taken[(h, (g,))] < 4 and (job.slot is None or
                                                         (h, (g,)) != (job.slot.host,
                                                                       job.slot.gpus))]
                    if not room:
                        continue
                    host, gpus = rng.choice(room)
                    words += [host, str(gpus[0])]
                if answer(" ".join(words), test_store_damage.fractui(team.hosts_config, words)):
                    with lock:
                        by_hand.append((verb, job.id))

    threads = [threading.Thread(target=submitter, args=(p,), daemon=True) for p in PLAN]
    hand = threading.Thread(target=admin, daemon=True)
    watch.thread.start()
    try:
        for t in threads + [hand]:
            t.start()
        halfway.wait(120)  # the first half in: the holder is killed in its pass of them
        wait(lambda: "placed" in fleet.states().values(), fleet.states, timeout_s=60,
             step_s=0.005)
        leader = holder(team)
        runs[leader].send_signal(signal.SIGKILL)
        assert runs[leader].wait(timeout=30) == -signal.SIGKILL
        standby = next(name for name in runs if name != leader)
        wait(lambda: holder(team) == standby, fleet.states)
        runs[leader] = fleet.scheduler_process(leader)  # started again, as systemd would
        team.server.pg_ctl("stop", "-m", "immediate")  # under the second half of the
        time.sleep(1.0)  # submits and the admin: crash recovery at the start
        team.server.start()
        for t in threads:
            t.join(300)
        assert not any(t.is_alive() for t in threads)
        wait(lambda: min(collections.Counter(v for v, _ in by_hand)[v]
                         for v in ("cancel", "move")) >= 2, lambda: by_hand,
             timeout_s=120)  # the admin at it until it has done each twice at least
        quiet.set()
        hand.join(120)
        settled(team)
    finally:
        quiet.set()
        watch.done.set()
        watch.thread.join(60)
        alive = {name: run.poll() is None for name, run in runs.items()}
        said = team.close(runs)
    print("by hand %s, refused %s, looks %d" % (collections.Counter(v for v, _ in by_hand),
                                                 refusals, watch.looks))  # for the record
    for name, err in said.items():  # both ran on through the restart, till stopped
        assert "Traceback" not in err and alive[name], (name, err)
    assert odd == [], odd
    assert watch.broken == [], watch.broken
    assert watch.looks > 10
    keys = ["%s-%d" % (p, i) for p, queues in PLAN.items() for i in range(len(queues))]
    assert sorted(acked) == sorted(keys)
    jobs = {j.id: j for j in fleet.store.jobs()}
    assert sorted(jobs) == sorted(acked.values())  # none lost, none made twice by a retry
    for key, job in acked.items():
        assert jobs[job].submitted_by == team.actor(key.split("-")[0]), (key, jobs[job])
    audit = fleet.store.audit_log(limit=10000)
    actions = collections.Counter((e.action, e.job) for e in audit)
    for job in jobs:
        assert actions[("submit", job)] == 1, [e for e in audit if e.job == job]
    # a record for each change the admin was told of, and none it was not: one cancel of a
    # job; a move or a placement each time (an ask again of one under way, or done, is
    # answered as done, and changes nothing)
    hands = collections.Counter(by_hand)
    for (verb, job), n in hands.items():
        assert 1 <= actions[(verb, job)] <= (1 if verb == "cancel" else n), (
            verb, job, n, [e for e in audit if e.job == job])
    assert {(a, j) for (a, j) in actions if a in ("cancel", "move", "place")} == set(hands)
    records = fleet.agent_jobs()
    uid = fleet.store.uid
    copies = collections.Counter(r["key"] for r in records)
    assert set(copies.values()) <= {1}, copies  # each attempt launched once
    launched = collections.Counter(e.job for e in audit if e.action == "launch")
    for job in jobs.values():
        assert launched[job.id] == len([r for r in records
                                        if (attempt_of(r["key"], uid) or (0,))[0] == job.id])
        live = [r for r in records if r["state"] == "running"
                and (attempt_of(r["key"], uid) or (0,))[0] == job.id]
        if job.state == "running":
            assert [r["key"] for r in live] == [job.key(uid)], (job, live)
        else:
            assert live == [], (job, live)


def settled(team: Team, timeout_s: float = 120) -> None:
    """Until no job is placed or stopping and the agents run exactly what the store says."""
    fleet, uid = team.fleet, team.fleet.store.uid

    def calm() -> bool:
        jobs = fleet.store.jobs()
        if any(j.state in ("placed", "stopping") for j in jobs):
            return False
        live = {r["key"] for r in fleet.agent_jobs() if r["state"] == "running"}
        return live == {j.key(uid) for j in jobs if j.state == "running"}

    wait(calm, fleet.states, timeout_s=timeout_s)

