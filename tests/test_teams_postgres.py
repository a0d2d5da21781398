"""Teams on one PostgreSQL store, end to end with real processes throughout: a server of the
test's own that authenticates only by peer over its unix socket (the OS user is the role, and
no other), five OS users with team and admin roles running ``fractui`` as themselves, two
``fractui scheduler`` processes (as root, role ``root`` in ``fractui_admin``) on the same store
and the same simulated local hosts."""

from __future__ import annotations

import collections
import json
import os
import pwd
import signal
import socket
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterator, List, Tuple
from urllib.parse import quote

import pytest

from fractui.config import QueueConfig, TeamConfig
from fractui.words import NO_SCHEDULER
from tests.localfleet import LocalFleet, wait
from tests.pg import PgServer
from tests.test_pg_guard import LEAST
from tests.test_access_cli import refused, who
from tests.test_store_damage import fractui, plain_dir  # noqa: F401 - plain_dir: a fixture
from tests.test_tui_shared_store import admin, place
from tests.tui_frozen import pilot_test
from tests.tui_live import until
from tests.tui_probe import Probe

HOST = socket.gethostname()
DB = "fractui"
TEAMS = {"vision": 2.5, "nlp": 1.5}  # quotas in GPUs: the four GPUs of the two hosts
# Who each of the five is: the roles they are granted (the admin is in no team).
PEOPLE = {"ann": ("fractui_team_vision",), "ben": ("fractui_team_vision",),
          "cat": ("fractui_team_nlp",), "dan": ("fractui_team_vision", "fractui_team_nlp"),
          "eve": ("fractui_admin",)}
QUEUES = [QueueConfig(name="v", gpu=0.25, team="vision"),
          QueueConfig(name="n", gpu=0.25, team="nlp")]
SLEEPER = [shutil.which("sleep") or "sleep", "600"]  # a member's job runs as the member, who
# cannot run root's interpreter (under its 0700 home)


@pytest.fixture(autouse=True)
def _user_says_root(monkeypatch):
    """What a user could forge: the environment's names. Neither libpq nor the store may
    believe them."""
    monkeypatch.setenv("USER", "root")
    monkeypatch.setenv("LOGNAME", "root")


@pytest.fixture
def peer_server() -> Iterator[PgServer]:
    """A server of this test's own (its roles are the cluster's: none leaks to other tests),
    peer authentication only; removed with everything in it."""
    server = PgServer()
    try:
        server.peer_only()
        yield server
    finally:
        server.close()


class Team:
    """The server, the five users (person -> OS user and role name), the simulated hosts with
    the admin's store, and the users' config: store, teams and queues, no hosts."""

    def __init__(self, server: PgServer, folder: Path, make_user, tmp_path: Path):
        self.server = server
        self.folder = folder
        self.names = {person: make_user("fx%s" % person)[0] for person in PEOPLE}
        statements = ["CREATE ROLE fractui_admin", "CREATE ROLE fractui_team_vision",
                      "CREATE ROLE fractui_team_nlp", "CREATE ROLE root LOGIN",
                      "GRANT fractui_admin TO root"]
        for person, roles in PEOPLE.items():
            statements.append('CREATE ROLE "%s" LOGIN' % self.names[person])
            statements += ['GRANT %s TO "%s"' % (r, self.names[person]) for r in roles]
        statements.append("CREATE DATABASE %s OWNER root" % DB)
        for statement in statements:
            server.sql(statement)
        self.url = server.peer_url(DB)
        # root's store (peer: role root, an admin) makes the tables on first use
        self.fleet = LocalFleet(tmp_path, {"gpu-a": "2xL4", "gpu-b": "2xL4"}, QUEUES,
                                [TeamConfig(name=t, quota_gpus=q) for t, q in TEAMS.items()],
                                store_url=self.url,
                                lease_s=3.0)
        for grant in LEAST:  # docs/decisions.md's; the guard (migration 0004) does the rest
            server.sql(grant.format(admin="fractui_admin",
                                    teams="fractui_team_vision, fractui_team_nlp"), DB)
        self.config = self.write_config("config.toml", self.url)
        self.hosts_config = self.write_config("hosts.toml", self.url, hosts=True)

    def write_config(self, file: str, url: str, hosts: bool = False) -> Path:
        text = "[store]\nurl = %s\n" % json.dumps(url)
        text += "".join('[[teams]]\nname = "%s"\nquota_gpus = %s\n' % tq
                        for tq in TEAMS.items())
        text += "".join('[[queues]]\nname = "%s"\ngpu = %s\nteam = "%s"\n' % (
            q.name, q.gpu, q.team) for q in QUEUES)
        if hosts:  # the admin's hosts: a verb that reached one would not say "refused"
            text += "".join('[[hosts]]\nname = "%s"\ntransport = "local"\nsim = "%s"\n'
                            'state_dir = "%s"\n' % (h.name, h.sim, h.state_dir)
                            for h in self.fleet.config.hosts)
        path = self.folder / file
        path.write_text(text)
        path.chmod(0o644)
        return path

    def run(self, person: str, *verb: str, config: Path | None = None
            ) -> subprocess.CompletedProcess:
        """``fractui`` as that person's OS user."""
        return fractui(config or self.config, list(verb), self.names[person])

    def actor(self, person: str) -> str:
        return "%s@%s" % (self.names[person], HOST)

    def submit(self, person: str, queue: str) -> int:
        done = self.run(person, "submit", "--queue", queue, "--", *SLEEPER)
        # (between a killed lease holder's lease lapsing and a standby taking it, none holds
        # it, and submit says so)
        assert done.returncode == 0 and done.stderr in ("", "fractui: %s\n" % NO_SCHEDULER), (
            person, done)
        number, rest = done.stdout.split(" ", 1)
        assert rest == "pending in queue %s for team %s\n" % (
            queue, {"v": "vision", "n": "nlp"}[queue]), done.stdout
        return int(number)

    def race(self, plan: Dict[str, List[str]]) -> Dict[int, str]:
        """Each person submits to their queues, all at once: job -> person."""
        def one(person: str) -> List[Tuple[int, str]]:
            return [(self.submit(person, q), person) for q in plan[person]]
        with ThreadPoolExecutor(len(plan)) as pool:
            return dict(pair for pairs in pool.map(one, plan) for pair in pairs)

    def keys(self) -> collections.Counter:
        """How many records each job key has on the agents of every host."""
        return collections.Counter(j["key"] for j in self.fleet.agent_jobs())

    def key(self, job_id: int) -> str:
        return self.fleet.store.get(job_id).key(self.fleet.store.uid)

    def schedulers(self, *names: str) -> Dict[str, subprocess.Popen]:
        runs = {name: self.fleet.scheduler_process(name) for name in names}
        wait(lambda: self.fleet.store.lease_holder() is not None and
             set(self.fleet.store.inventory()) == {"gpu-a", "gpu-b"}, self.fleet.states)
        return runs

    def close(self, runs: Dict[str, subprocess.Popen]) -> Dict[str, str]:
        """Stops the schedulers still running; what each said on stderr."""
        said = {}
        for name, run in runs.items():
            if run.poll() is None:
                run.terminate()
            said[name] = run.communicate(timeout=60)[1]
        return said


@pytest.fixture
def team(peer_server, plain_dir, plain_users, tmp_path) -> Iterator[Team]:
    made = Team(peer_server, plain_dir, plain_users, tmp_path)
    try:
        yield made
    finally:
        made.fleet.close()


def holder(team: Team) -> str:
    return (team.fleet.store.lease_holder() or ("",))[0]


def test_a_user_naming_another_role_is_refused_by_the_server(team, plain_users, monkeypatch,
                                                             plain_dir):  # noqa: F811
    """Peer authentication is what makes the identity unforgeable: ann may name any role in
    her URL, $PGUSER or a service of pg_service.conf (or nothing, and $USER says root), the
    server lets her be only ann."""
    ann, zed = team.names["ann"], plain_users("fxzed")[0]
    assert team.run("ann", "jobs", "--json").returncode == 0  # as herself: let in
    for role in (team.names["eve"], "root", "postgres"):
        forged = team.write_config("forged.toml", team.url.replace(
            "postgresql:///", "postgresql://%s@/" % role))
        done = team.run("ann", "jobs", config=forged)
        assert (done.returncode, done.stdout) == (1, ""), done
        said = done.stderr.splitlines()
        assert len(said) == 1 and said[0].startswith(
            "fractui: store postgresql://%s:%d/%s: refuses role %s: " % (
                quote(team.server.sockets, safe=""), team.server.port, DB, role)), done.stderr
        assert said[0].endswith('Peer authentication failed for user "%s" (peer '
                                'authentication lets an OS user in as the role of its own '
                                'name only: the URL (store.url in %s, line 2) names role %s: '
                                'name no other role there)' % (role, forged, role)), said
    monkeypatch.setenv("PGUSER", team.names["eve"])  # libpq's variable names another: refused
    done = team.run("ann", "jobs")
    assert (done.returncode, done.stdout) == (1, ""), done
    assert done.stderr.startswith("fractui: store postgresql://%s:%d/%s: refuses role %s: " % (
        quote(team.server.sockets, safe=""), team.server.port, DB, team.names["eve"])), \
        done.stderr
    assert done.stderr.endswith("only: PGUSER names role %s: name no other role there)\n"
                                % team.names["eve"]), done.stderr
    monkeypatch.delenv("PGUSER")
    # a service names another (PGSERVICE): the refusal named ann, whom libpq did not ask for
    services = plain_dir / "pg_service.conf"
    services.write_text("[forged]\nuser=%s\n" % team.names["eve"])
    services.chmod(0o644)
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    monkeypatch.setenv("PGSERVICE", "forged")
    done = team.run("ann", "jobs")
    assert (done.returncode, done.stdout) == (1, ""), done
    assert done.stderr.startswith("fractui: store postgresql://%s:%d/%s: refuses role %s: " % (
        quote(team.server.sockets, safe=""), team.server.port, DB, team.names["eve"])), \
        done.stderr
    assert done.stderr.endswith("only: service forged in pg_service.conf (named by PGSERVICE) "
                                "names role %s: name no other role there)\n"
                                % team.names["eve"]), done.stderr
    monkeypatch.delenv("PGSERVICE")
    # no role of one's own: the refusal names the OS user libpq connected as, not $USER
    done = fractui(team.config, ["jobs"], zed)
    assert (done.returncode, done.stdout) == (1, ""), done
    assert done.stderr.startswith("fractui: store postgresql://%s:%d/%s: refuses role %s: " % (
        quote(team.server.sockets, safe=""), team.server.port, DB, zed)), done.stderr
    assert done.stderr.endswith('role "%s" does not exist (an admin makes it: CREATE ROLE '
                                '"%s" LOGIN, and grants it a team role)\n' % (zed, zed)
                                ), done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    # and her own name is the one the store knows her by, whatever $USER says
    listed = team.run("ann", "submit", "--queue", "v", "--", *SLEEPER)
    assert listed.returncode == 0, listed
    assert [e.actor for e in team.fleet.store.audit_log(limit=100)
            if e.action == "submit"] == ["%s@%s" % (ann, HOST)]


def test_five_users_and_two_schedulers_share_one_store_each_within_their_role(team):
    """Two schedulers, one lease; every job the five submit at once placed and launched once;
    everyone sees every job, changes only their teams' (the admin anything), is refused with
    who they are and the role it needs; the audit names each of them."""
    runs = team.schedulers("s1", "s2")
    try:
        jobs = team.race({"ann": ["v", "v", "v"], "ben": ["v", "v", "v"],
                          "cat": ["n", "n", "n"], "dan": ["v", "n", "v"],
                          "eve": ["n", "v", "n"]})
        assert sorted(jobs) == list(range(1, 16))  # none lost, no number twice
        wait(lambda: set(team.fleet.states().values()) == {"running"}, team.fleet.states)
        leader = holder(team)
        assert leader in runs and all(r.poll() is None for r in runs.values())
        assert team.keys() == collections.Counter(team.key(j) for j in jobs)  # once each
        # a member's job runs as the member on the hosts, never as the agent (root here); the
        # admin's as the agent's user, as an admin's launch does
        ran_as = {r["key"]: (r.get("run_as"), pwd.getpwuid(os.stat("/proc/%d" % r["pid"]
                                                                   ).st_uid).pw_name)
                  for r in team.fleet.agent_jobs()}
        for job, person in jobs.items():
            user = None if person == "eve" else team.names[person]
            assert ran_as[team.key(job)] == (user, user or "root"), (job, person, ran_as)
        audit = team.fleet.store.audit_log(limit=1000)
        for action in ("decide", "launch"):  # placed by the scheduler, and launched: once
            assert sorted(e.job for e in audit if e.action == action) == sorted(jobs), audit
        assert {e.actor for e in audit if e.action in ("decide", "launch")} == {leader}
        assert not [e for e in audit if e.actor in runs and e.actor != leader]  # the standby's

        owner = {person: [j for j, p in jobs.items() if p == person] for person in PEOPLE}
        for person in PEOPLE:  # everyone sees every job
            listed = team.run(person, "jobs", "--json")
            assert listed.returncode == 0, listed
            assert sorted(j["id"] for j in json.loads(listed.stdout)["jobs"]) == sorted(jobs)

        for person, mine in (("ann", "v"), ("cat", "n")):
            theirs = {"v": "n", "n": "v"}[mine]
            team_of = {"v": "vision", "n": "nlp"}
            refused(team.run(person, "submit", "--queue", theirs, "--", *SLEEPER),
                    "%s; to submit to queue %s of team %s you must be in team %s, or an admin"
                    % (who(team.names[person], "team " + team_of[mine]), theirs,
                       team_of[theirs], team_of[theirs]))
        ann_in, dan_in = who(team.names["ann"]), who(team.names["dan"], "teams nlp, vision")
        cat_in = who(team.names["cat"], "team nlp")
        ben_in = who(team.names["ben"])
        ann_cancels, cat_job, eve_nlp = owner["ben"][0], owner["cat"][0], owner["eve"][0]
        done: List[Tuple[str, str, int]] = []  # (person, action, job) that went through

        def may(person: str, verb: str, job: int) -> None:
            """Allowed, on a running job: the scheduler stops it (and runs it again if
            requeued or preempted)."""
            ran = team.run(person, verb, str(job))
            assert (ran.returncode, ran.stdout, ran.stderr) == (0, "%d stopping (the scheduler "
                                                                "stops it%s)\n" % (job, "" if (
                verb == "cancel") else ", then puts it back in its queue"), ""), ran
            done.append((person, verb, job))

        may("ann", "cancel", ann_cancels)  # a teammate's job
        refused(team.run("ann", "cancel", str(cat_job)),
                "%s; to cancel job %d of team nlp you must be in team nlp, or an admin"
                % (ann_in, cat_job))
        refused(team.run("ben", "requeue", str(cat_job)),
                "%s; to requeue job %d of team nlp you must be in team nlp, or an admin"
                % (ben_in, cat_job))
        refused(team.run("cat", "cancel", str(owner["ann"][0])),
                "%s; to cancel job %d of team vision you must be in team vision, or an admin"
                % (cat_in, owner["ann"][0]))
        may("cat", "requeue", owner["dan"][1])
        may("dan", "cancel", owner["ann"][1])  # in both teams
        may("dan", "requeue", eve_nlp)
        running = owner["ann"][2]
        for person, is_ in (("ann", ann_in), ("ben", ben_in), ("cat", cat_in), ("dan", dan_in)):
            for verb, words in ((["preempt", str(running)], "to preempt job %d" % running),
                                (["place", str(running), "gpu-a", "0"],
                                 "to place job %d" % running),
                                (["launch", "gpu-a", "0", "--memory-mib", "100", "--", "x"],
                                 "to launch a job on gpu-a")):
                refused(team.run(person, *verb, config=team.hosts_config),
                        "%s; %s you must be an admin" % (is_, words))
        # the admin, in no team, may do anything to any team's job
        may("eve", "cancel", cat_job)
        may("eve", "preempt", running)
        may("eve", "requeue", owner["ben"][1])

        cancelled = {ann_cancels, owner["ann"][1], cat_job}
        wait(lambda: {j: s for j, s in team.fleet.states().items() if s != "running"} == {
            j: "cancelled" for j in cancelled}, team.fleet.states)
        again = {owner["dan"][1], eve_nlp, running, owner["ben"][1]}  # requeued, preempted
        assert {j.id for j in team.fleet.store.jobs() if j.attempt == 1} == again
        # every attempt launched once: the first of each job, the second of each requeued
        keys = team.keys()
        assert set(keys.values()) == {1}, keys
        assert set(keys) >= {team.key(j) for j in jobs}
        assert len(keys) == len(jobs) + len(again)
        assert all(r.poll() is None for r in runs.values()) and holder(team) == leader

        shown = team.run("cat", "audit", "--json")
        assert shown.returncode == 0, shown
        entries = json.loads(shown.stdout)["audit"]
        for person in PEOPLE:  # each named as the actor of what they did, and of nothing else
            theirs = [(e["action"], e["job"]) for e in entries
                      if e["actor"] == team.actor(person)]
            assert theirs == [("submit", j) for j in owner[person]] + [
                (verb, j) for p, verb, j in done if p == person], (person, theirs)
    finally:
        said = team.close(runs)
    assert not [s for s in said.values() if "Traceback" in s], said


def test_a_standby_takes_over_from_a_killed_lease_holder_and_launches_nothing_twice(team):
    """kill -9 of the lease holder as soon as it has placed one of a burst of submits (the
    rest still coming): the other scheduler takes the lease once it lapses, within the lease
    time by the server's clock, and every job is placed and launched once."""
    runs = team.schedulers("s1", "s2")
    lease_s = team.fleet.config.scheduler.lease_s
    try:
        jobs = team.race({"ann": ["v", "v"], "cat": ["n", "n"]})
        wait(lambda: set(team.fleet.states().values()) == {"running"}, team.fleet.states)
        leader = holder(team)
        standby = next(name for name in runs if name != leader)
        with ThreadPoolExecutor(1) as pool:
            burst = pool.submit(team.race, {"ben": ["v", "v", "v"], "dan": ["n", "v", "n"],
                                            "eve": ["v", "n"]})
            wait(lambda: any(s != "pending" for j, s in team.fleet.states().items()
                             if j not in jobs), team.fleet.states, step_s=0.01)
            runs[leader].send_signal(signal.SIGKILL)
            assert runs[leader].wait(timeout=30) == -signal.SIGKILL
            left = team.fleet.store.lease_holder()  # the dead one's, until it lapses
            at_kill = team.fleet.states()
            jobs.update(burst.result())
        assert left is not None and left[0] == leader, left
        assert len(jobs) == 12
        assert list(at_kill.values()).count("running") < 12, at_kill  # left for the standby
        wait(lambda: holder(team) == standby, team.fleet.states)
        wait(lambda: team.fleet.states() == {j: "running" for j in jobs}, team.fleet.states)
        assert runs[standby].poll() is None

        audit = team.fleet.store.audit_log(limit=1000)
        took = [e for e in audit if e.action == "lease" and e.actor == standby]
        assert len(took) == 1 and left[1] <= took[0].time <= left[1] + lease_s, (took, left)
        for action in ("decide", "launch"):  # placed once, launched once, by either
            assert sorted(e.job for e in audit if e.action == action) == sorted(jobs), audit
        assert {j.attempt for j in team.fleet.store.jobs()} == {0}  # none requeued
        assert team.keys() == collections.Counter(team.key(j) for j in jobs)  # once each
    finally:
        said = team.close(runs)
    assert "Traceback" not in said[standby], said


def test_two_tuis_two_schedulers_and_five_users_on_one_store(team):
    """While the five submit, two schedulers and two TUIs on the store: an admin's (root, the
    fleet's hosts) and a team member's (ann, her own OS user and role, in a process of her own,
    no hosts). Every job is placed and launched once; ann's TUI shows every job, and the one
    the admin's TUI places by hand past a team's quota; from it she cancels her team's job and
    is refused another team's with who she is and the role it needs; the audit names both
    TUIs."""
    runs = team.schedulers("s1", "s2")
    ann = Probe(team.names["ann"], str(team.config))
    try:
        jobs = team.race({"ann": ["v"], "ben": ["v"], "cat": ["n", "n", "n"],
                          "dan": ["n", "n"], "eve": ["n"]})
        owner = {person: [j for j, p in jobs.items() if p == person] for person in PEOPLE}
        wait(lambda: set(team.fleet.states().values()) == {"running"}, team.fleet.states)
        wait(lambda: ann.ask("jobs")["jobs"] == {str(j): "running" for j in jobs},
             lambda: ann.ask("jobs"))
        # nlp holds its quota (6 x 0.25 GPU): one more waits, and says why
        extra = team.submit("eve", "n")
        wait(lambda: "quota" in (team.fleet.store.get(extra).reason or ""), team.fleet.states)
        assert team.fleet.store.get(extra).state == "pending"

        @pilot_test
        async def place_by_admin() -> None:
            async with admin(team.fleet, team.url) as (app, pilot):
                await place(app, pilot, extra)
                await until(pilot, lambda: "Past the quota" in (
                    app.fleet.placement.note or ""), "the bar asks to agree")
                await pilot.press("enter")  # agreed: placed as a borrowed job
                await until(pilot, lambda: team.fleet.store.get(extra).state != "pending",
                            "the admin's TUI placed it")

        place_by_admin()
        wait(lambda: ann.ask("jobs")["jobs"].get(str(extra)) == "running",
             lambda: ann.ask("jobs"))
        jobs[extra] = "eve"

        ben_job, cat_job = owner["ben"][0], owner["cat"][0]
        assert ann.ask("stop %d cancel" % cat_job)["said"] == [[
            "warning", "%s; to cancel job %d of team nlp you must be in team nlp, or an admin"
            % (who(team.names["ann"]), cat_job)]]
        assert ann.ask("stop %d cancel" % ben_job)["said"] == [[
            "information", "cancel of #%d recorded: the scheduler carries it out" % ben_job]]
        wait(lambda: team.fleet.states()[ben_job] == "cancelled", team.fleet.states)
        assert {j: s for j, s in team.fleet.states().items() if s != "running"} == {
            ben_job: "cancelled"}
        assert team.keys() == collections.Counter(team.key(j) for j in jobs)  # once each

        audit = team.fleet.store.audit_log(limit=1000)
        assert [(e.actor, e.action) for e in audit if e.job == ben_job and e.action in (
            "submit", "cancel")] == [(team.actor("ben"), "submit"),
                                     (team.actor("ann") + " (tui)", "cancel")]
        placed = [e for e in audit if e.job == extra and e.action in ("decide", "place")]
        assert [(e.actor, e.action) for e in placed] == [("root@%s (tui)" % HOST, "place")]
        assert not [e for e in audit if e.job == cat_job and e.action == "cancel"]
        assert sorted(e.job for e in audit if e.action == "launch") == sorted(jobs)
    finally:
        tui_said = ann.close()
        said = team.close(runs)
    assert "Traceback" not in tui_said + "".join(said.values()), (tui_said, said)
