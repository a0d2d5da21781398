"""How many jobs a team may have waiting (``[[teams]] max_waiting``, docs/decisions.md): a team
member's submit past the bound is refused, counted in the insert's own transaction, on both
stores; an admin's is not; lowering it changes nothing queued. Real stores, real processes
racing for the last place, the scheduler writing the config's bounds, and a researcher told
what to do."""

from __future__ import annotations

import json
import platform
import sqlite3
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator, List

import psycopg
import pytest

from fractui.config import QueueConfig, TeamConfig, load_config
from fractui.sched.standing import near_bound, standing, waiting
from fractui.scheduler import Scheduler
from fractui.store import SqliteStore, open_store, postgres
from fractui.store.base import WaitingFull
from fractui.store.intents import Asker, submit
from fractui.store.model import ACTIVE, PENDING
from tests.cli_run import in_process
from tests.conftest import REPO
from tests.localfleet import local_fleet, wait  # noqa: F401 - local_fleet: a fixture
from tests.test_access_cli import (refused as cli_refused, running_by_hand, shared_store,
                                  write_config)
from tests.test_pg_guard import (LEAST, SLOT, Guarded, _guarded, any_grants,  # noqa: F401
                                 audited, refused)
from tests.test_store_damage import fractui, plain_dir  # noqa: F401 - plain_dir: a fixture
from tests.test_teams_postgres import peer_server, team  # noqa: F401 - fixtures
from tests.tui_probe import Probe

# A process's submit as a team member: ready once its store is open, then the submit, then
# what became of it ("queued" or the refusal's words).
RACER = """
import sys
from fractui.store import open_store
from fractui.store.base import WaitingFull
store = open_store(sys.argv[1], make=False)
store.jobs()
print("ready", flush=True)
sys.stdin.readline()
try:
    store.submit("v", "vision", "racer", ["x"], {}, "ann@here", bounded_as="ann")
    print("queued", flush=True)
except WaitingFull as err:
    print(err, flush=True)
finally:
    store.close()
"""
# clock_nanosleep, by machine: where SQLite's busy handler waits for the write lock
_NANOSLEEP = {"x86_64": 230, "aarch64": 115}


def pending(store, team: str = "vision") -> list:
    return [j for j in store.jobs([PENDING]) if j.team == team]


def running_jobs(admin, team_name: str, count: int) -> list:
    """`count` jobs of a team, submitted by an admin and running on SLOT as the scheduler's."""
    jobs = [admin.submit("v", team_name, "r", ["x"], {}, "ops@h") for _ in range(count)]
    for job in jobs:
        admin.place(job.id, SLOT, "sched", "decided")
        admin.started(job.id, "a%d" % job.id, None, "sched", "launched")
    return jobs


def test_a_members_submit_past_the_bound_is_refused_and_nothing_queued_changes(store_url):
    store = open_store(store_url)
    try:
        assert store.waiting_bounds() == {}
        store.keep_waiting_bounds({"vision": 2, "nlp": 5})
        assert store.waiting_bounds() == {"vision": 2, "nlp": 5}
        kept = [store.submit("v", "vision", "a%d" % i, ["x"], {}, "ann@h", bounded_as="ann",
                             key="3:ann:k%d" % i) for i in range(2)]
        with pytest.raises(WaitingFull) as err:
            store.submit("v", "vision", "c", ["x"], {}, "ann@h", bounded_as="ann")
        assert str(err.value) == ("refused: you are ann, not an admin; team vision has 2 jobs "
                                  "waiting and may have at most 2 (max_waiting)")
        assert (err.value.team, err.value.bound, err.value.waiting) == ("vision", 2, 2)
        # the same submit made again (its answer lost) finds its job: no second place taken
        again = store.submit("v", "vision", "a0", ["x"], {}, "ann@h", bounded_as="ann",
                             key="3:ann:k0")
        assert again.id == kept[0].id
        # an admin's submit, another team's, and a job of no team are not held by vision's
        store.submit("v", "vision", "ops", ["x"], {}, "ops@h")
        store.submit("n", "nlp", "b", ["x"], {}, "bob@h", bounded_as="bob")
        store.submit("o", None, "open", ["x"], {}, "ops@h")
        before = pending(store)
        store.keep_waiting_bounds({"vision": 1})  # lowered below what waits: nothing changes
        assert pending(store) == before and len(before) == 3
        with pytest.raises(WaitingFull, match="has 3 jobs waiting and may have at most 1 "):
            store.submit("v", "vision", "d", ["x"], {}, "ann@h", bounded_as="ann")
        # a job that no longer waits frees its place
        store.ended(kept[0].id, (PENDING,), "cancelled", "by ann", "ann@h", "by ann", "cancel")
        store.keep_waiting_bounds({"vision": 3})
        store.submit("v", "vision", "e", ["x"], {}, "ann@h", bounded_as="ann")
        assert len(pending(store)) == 3
        # nlp is no longer listed: held to the default, far above its one job
        store.submit("n", "nlp", "f", ["x"], {}, "bob@h", bounded_as="bob")
    finally:
        store.close()


def _waiting_on_the_lock(store_url: str, pids: List[int]) -> bool:
    """Whether every one of ``pids`` waits for the store's write lock: on PostgreSQL an
    lock of the write lock's table not granted (the server's word), on SQLite asleep in the
    busy handler."""
    if store_url.startswith("postgresql"):
        with psycopg.connect(store_url, autocommit=True) as conn:
            waiting = {pid for pid, in conn.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'relation' AND NOT granted AND "
                "relation = to_regclass('public.%s')" % postgres.WRITE_LOCK_TABLE)}
        return len(waiting) == len(pids)
    call = _NANOSLEEP[platform.machine()]
    return all(Path("/proc/%d/syscall" % pid).read_text().split()[0] == str(call)
               for pid in pids)


@contextmanager
def write_lock_held(store_url: str) -> Iterator[None]:
    """The store's write lock, taken as another client's write takes it, until the block
    ends."""
    if store_url.startswith("postgresql"):
        with psycopg.connect(store_url) as conn:
            conn.execute("SELECT public.fractui_write_turn()")
            yield
            conn.rollback()
        return
    conn = sqlite3.connect(store_url[len("sqlite://"):], isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def test_submits_racing_for_the_last_places_take_them_once(store_url):
    """Four processes submit at once for two places: each counts what waits only once it holds
    the write lock, so two are queued and two refused, whatever order the lock gives them."""
    if not store_url.startswith("postgresql") and platform.machine() not in _NANOSLEEP:
        pytest.skip("no known clock_nanosleep number for %s" % platform.machine())
    store = open_store(store_url)
    try:
        store.keep_waiting_bounds({"vision": 3})
        store.submit("v", "vision", "first", ["x"], {}, "ann@h", bounded_as="ann")
    finally:
        store.close()
    racers = [subprocess.Popen([sys.executable, "-c", RACER, store_url], cwd=REPO,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
              for _ in range(4)]
    try:
        for racer in racers:
            assert racer.stdout.readline() == "ready\n"
        with write_lock_held(store_url):
            for racer in racers:
                racer.stdin.write("go\n")
                racer.stdin.flush()
            wait(lambda: _waiting_on_the_lock(store_url, [r.pid for r in racers]),
                 lambda: "the racers never all waited for the write lock")
        said = sorted(racer.communicate()[0] for racer in racers)
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
                racer.wait()
    refusal = ("refused: you are ann, not an admin; team vision has 3 jobs waiting and may "
               "have at most 3 (max_waiting)\n")
    assert said == ["queued\n"] * 2 + [refusal] * 2, said
    store = open_store(store_url, make=False)
    try:
        assert len(pending(store)) == 3
    finally:
        store.close()


def test_the_scheduler_writes_the_configs_bounds_and_a_lower_one_keeps_what_waits(
        local_fleet, tmp_path):
    """The lease holder writes each team's max_waiting to the store (only an admin may, on
    PostgreSQL); run again on a config with a lower bound, it writes that one, and the jobs
    waiting past it still wait."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="big", gpus=4)],
                    [TeamConfig("t", 1, max_waiting=4), TeamConfig("u", 1)])
    f.scheduler.step()
    assert f.store.waiting_bounds() == {"t": 4, "u": 10000}
    jobs = [f.submit("big", "t") for _ in range(3)]  # no host fits them: they wait
    f.scheduler.step()
    f.scheduler.stop()
    lower = replace(f.config, teams=(TeamConfig("t", 1, max_waiting=2),))
    sched = Scheduler(lower, f.store, f.fleet, name="again")
    try:
        sched.step()
        assert f.store.waiting_bounds() == {"t": 2}
        assert [f.store.get(j.id).state for j in jobs] == [PENDING] * 3
    finally:
        sched.stop()


def test_max_waiting_is_read_from_the_config_and_bounded(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[[teams]]\nname = "t"\nmax_waiting = 50\n[[teams]]\nname = "u"\n')
    assert [t.max_waiting for t in load_config(str(path)).teams] == [50, 10000]
    for bad, says in (("-1", "from 0 to 1000000 jobs, got -1"), ("2.5", "an integer"),
                      ('"9"', "an integer")):
        path.write_text('[[teams]]\nname = "t"\nmax_waiting = %s\n' % bad)
        done = subprocess.run([sys.executable, "-m", "fractui", "--config", str(path), "teams"],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "max_waiting" in done.stderr and says in done.stderr, \
            done.stderr
        assert "Traceback" not in done.stderr


def member_submits(guarded: Guarded, jobs: int = 1) -> str:
    """``jobs`` jobs of ann's in team vision as one INSERT on psql, each audited as the guard
    wants (migration 0016), at the statement's time (no earlier than the team's turn its
    trigger takes, migration 0039)."""
    now = "extract(epoch FROM statement_timestamp())"
    rows = ("INSERT INTO jobs (queue, team, name, argv, request, state, submitted_at, "
            "updated_at, submitted_by, run_as) SELECT 'v', '%s', 'x', '[\"x\"]', '{}', "
            "'pending', %s, %s, '%s', '%s' FROM generate_series(1, %d)" % (
                guarded.vision, now, now, guarded.ann, guarded.ann, jobs))
    return ("%s; INSERT INTO audit (time, actor, action, job, why) SELECT extract(epoch FROM "
            "clock_timestamp()), '%s', 'submit', id, 'by psql' FROM jobs WHERE submitted_by = "
            "'%s' AND id NOT IN (SELECT job FROM audit WHERE job IS NOT NULL)" % (
                rows, guarded.ann, guarded.ann))


def _second_waits_for_the_first(pg_server, guarded: Guarded, first_sql: str,
                                second: Callable[[], None], never: str) -> None:
    """``first_sql`` run by ann in a transaction of her own, then ``second`` in a thread of its
    own, which must wait for a lock (pg_stat_activity says so; else ``never`` is the failure)
    until the first commits."""
    with psycopg.connect(guarded.url(guarded.ann)) as first:
        first.execute(first_sql)
        racer = threading.Thread(target=second)
        racer.start()
        wait(lambda: not racer.is_alive() or pg_server.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = '%s' AND "
            "wait_event_type = 'Lock'" % guarded.ann, db=guarded.db)[0][0] == 1,
            lambda: never)
        first.commit()
    racer.join()


def held(guarded: Guarded, waiting: int, bound: int) -> str:
    return ("refused by the store's guard: role %s (not in fractui_admin) may not submit a job "
            "to team %s: it has %d job%s waiting and may have at most %d (max_waiting)" % (
                guarded.ann, guarded.vision, waiting, "" if waiting == 1 else "s", bound))


def test_a_member_on_psql_is_held_to_the_bound_in_the_database(any_grants):
    guarded = any_grants
    admin = guarded.store()
    mine = guarded.store(guarded.ann)
    try:
        admin.keep_waiting_bounds({guarded.vision: 2})
        admin.submit("v", guarded.vision, "ops", ["x"], {}, "ops@h")
        guarded.sql(guarded.ann, member_submits(guarded))
        refused(guarded, member_submits(guarded), held(guarded, 2, 2))
        admin.keep_waiting_bounds({guarded.vision: 4})
        # one INSERT of three rows: its third counts the two before it, and none is kept
        refused(guarded, member_submits(guarded, 3), held(guarded, 4, 4))
        assert len(pending(admin, guarded.vision)) == 2
        # counted only under read committed, where the count sees what the lock waited for
        with psycopg.connect(guarded.url(guarded.ann)) as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            with pytest.raises(psycopg.errors.InsufficientPrivilege,
                               match="may not submit a job in a repeatable read transaction"):
                conn.execute(member_submits(guarded))
        # the bound is the admin's to write, hers to read
        for write in ("UPDATE waiting_bounds SET max_waiting = 99",
                      "INSERT INTO waiting_bounds VALUES ('%s', 99)" % guarded.nlp,
                      "DELETE FROM waiting_bounds"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="waiting_bounds"):
                guarded.sql(guarded.ann, write)
        assert mine.waiting_bounds() == {guarded.vision: 4}
        # through fractui, she is told the same by the store's own count; an admin is not held
        admin.keep_waiting_bounds({guarded.vision: 1})
        with pytest.raises(WaitingFull, match="you are %s, not an admin; team %s has 2 jobs "
                           "waiting and may have at most 1" % (guarded.ann, guarded.vision)):
            submit(mine, "v", guarded.vision, "x", ["x"], {}, Asker("here"))
        submit(admin, "v", guarded.vision, "x", ["x"], {}, Asker("here"))
        assert len(pending(admin, guarded.vision)) == 3
    finally:
        mine.close()
        admin.close()


def test_two_members_inserting_on_psql_for_the_last_place_take_it_once(pg_server):
    """ann's insert holds the last place in an open transaction; a second insert of hers, on
    another connection, waits for her team's turn to submit that the guard takes (0032; the
    store's write lock before), then counts the first: refused. (Without a lock it counted in a
    snapshot without the first: both kept.)"""
    guarded = _guarded(pg_server, LEAST)
    admin = guarded.store()
    try:
        admin.keep_waiting_bounds({guarded.vision: 1})
        outcome: List[BaseException] = []

        def second() -> None:
            try:
                guarded.sql(guarded.ann, member_submits(guarded))
            except psycopg.Error as err:
                outcome.append(err)

        _second_waits_for_the_first(pg_server, guarded, member_submits(guarded), second,
                                    "the second insert never waited for the lock")
        assert [type(e) for e in outcome] == [psycopg.errors.InsufficientPrivilege], outcome
        assert held(guarded, 1, 1) in str(outcome[0])
        assert len(pending(admin, guarded.vision)) == 1
    finally:
        admin.close()


def test_a_researcher_past_the_bound_is_told_what_to_do(plain_dir, plain_user):
    """On SQLite, as a real OS user of team vision sharing root's store: exit 1, the team, how
    many wait, the bound and what to do; root, the store's owner and so an admin, is not held,
    and nothing queued changed."""
    name, _home = plain_user
    store_path = shared_store(plain_dir, name)
    config = write_config(plain_dir, store_path, {"vision": [name]})
    admin = SqliteStore(str(store_path))
    try:
        admin.keep_waiting_bounds({"vision": 1})
        admin.submit("v", "vision", "roots", ["x"], {"gpu": 0.5}, "root@test")
    finally:
        admin.close()
    done = fractui(config, ["submit", "--queue", "v", "--", "x"], name)
    cli_refused(done, "refused: you are %s, not an admin; team vision has 1 job waiting and may "
            "have at most 1 (max_waiting): nothing was queued; submit again once some have "
            "started, cancel some of them (fractui jobs --me lists yours; fractui cancel "
            "JOB...), or ask an admin to raise team vision's max_waiting in the config the "
            "scheduler runs on" % name)
    assert fractui(config, ["submit", "--queue", "v", "--", "x"]).returncode == 0  # root's
    admin = SqliteStore(str(store_path))
    try:
        assert [j.name for j in pending(admin)] == ["roots", "x"]
    finally:
        admin.close()


def test_a_members_requeue_is_held_to_the_bound_as_her_submit_is(plain_dir, plain_user):
    """A requeue puts a job back to wait, as a submit does: a member's past her team's bound is
    refused, exit 1, the job left running; a job stopping to be requeued holds its place (of
    two requeues for the last place, one takes it). An admin's requeue is not held, nor the
    scheduler's own putting back (a requeue carried out, a host lost), whatever waits."""
    name, _home = plain_user
    store_path = shared_store(plain_dir, name)
    config = write_config(plain_dir, store_path, {"vision": [name]})
    admin = SqliteStore(str(store_path))
    try:
        admin.keep_waiting_bounds({"vision": 2})
        running = [admin.submit("v", "vision", "r%d" % i, ["x"], {"gpu": 0.5}, "root@test")
                   for i in range(4)]
        for job in running:
            running_by_hand(admin, job.id)
        admin.submit("v", "vision", "waits", ["x"], {"gpu": 0.5}, "root@test")
    finally:
        admin.close()
    first, second, third, fourth = (str(j.id) for j in running)
    done = fractui(config, ["requeue", first], name)
    assert (done.returncode, done.stdout) == (0, "%s stopping (the scheduler stops it, then "
                                              "puts it back in its queue)\n" % first), done
    done = fractui(config, ["requeue", second], name)  # the first holds the last place
    cli_refused(done, "refused: you are %s, not an admin; team vision has 2 jobs waiting (1 of "
                "them being requeued) and may have at most 2 (max_waiting): job %s was not "
                "requeued: it runs on where it is; requeue it again once some have started, "
                "cancel some of them (fractui jobs --me lists yours; fractui cancel JOB...), "
                "or ask an admin to raise team vision's max_waiting in the config the "
                "scheduler runs on" % (name, second))
    done = fractui(config, ["requeue", second])  # root's: the store's owner, an admin
    assert done.returncode == 0 and done.stdout.startswith("%s stopping" % second), done
    admin = SqliteStore(str(store_path))
    try:
        assert admin.get(int(first)).stop_intent == "requeue"
        # the scheduler carries both out, and puts back a job whose host was lost: 4 wait
        for job in (first, second):
            admin.requeue(int(job), ("stopping",), "sched", "requeued")
        admin.requeue(int(third), ("running",), "sched", "gpu-a lost", stale_on="gpu-a")
        assert len(pending(admin)) == 4
    finally:
        admin.close()
    done = fractui(config, ["requeue", fourth], name)  # still held, above the bound
    assert (done.returncode, done.stdout) == (1, ""), done
    assert "team vision has 4 jobs waiting and may have at most 2" in done.stderr, done.stderr
    # her TUI's r asks the same, and says the refusal as any other
    probe = Probe(name, str(config))
    try:
        said = probe.ask("stop %s requeue" % fourth)["said"]
    finally:
        probe.close()
    assert said == [["warning", "refused: you are %s, not an admin; team vision has 4 jobs "
                     "waiting and may have at most 2 (max_waiting)" % name]], said
    admin = SqliteStore(str(store_path))
    try:
        assert admin.get(int(fourth)).state == "running"
    finally:
        admin.close()


def test_a_members_requeue_on_postgresql_is_held_to_the_bound_by_fractui(team):  # noqa: F811
    """As the SQLite test above, through the CLI as OS users on a peer-authenticated server:
    ann's requeue past team vision's bound is refused in fractui's words (counted in her
    team's turn, not the guard's), and eve's, an admin's, is not."""
    admin = team.fleet.store
    admin.keep_waiting_bounds({"vision": 1})
    first, second = (admin.submit("v", "vision", "r", ["x"], {"gpu": 0.25}, "root@test").id
                     for _ in range(2))
    for job in (first, second):
        running_by_hand(admin, job)
    done = team.run("ann", "requeue", str(first))
    assert (done.returncode, done.stdout) == (0, "%d stopping (the scheduler stops it, then "
                                              "puts it back in its queue)\n" % first), done
    cli_refused(team.run("ann", "requeue", str(second)), "refused: you are %s, not an admin; "
                "team vision has 1 job waiting (1 of them being requeued) and may have at most "
                "1 (max_waiting): job %d was not requeued: it runs on where it is; requeue it "
                "again once some have started, cancel some of them (fractui jobs --me lists "
                "yours; fractui cancel JOB...), or ask an admin to raise team vision's "
                "max_waiting in the config the scheduler runs on" % (team.names["ann"], second))
    assert admin.get(second).state == "running"
    done = team.run("eve", "requeue", str(second))
    assert done.returncode == 0 and done.stdout.startswith("%d stopping" % second), done


def test_a_members_requeue_on_psql_is_held_to_the_bound_in_the_database(any_grants):
    """Her requeue asked on psql (running -> stopping, to requeue, audited) is held by the
    guard (migration 0038) as her insert is, counting the jobs stopping to be requeued; a
    cancel is not held, nor an admin's requeue, nor the lease holder putting a job back."""
    guarded = any_grants
    admin = guarded.store()
    try:
        admin.keep_waiting_bounds({guarded.vision: 1})
        jobs = running_jobs(admin, guarded.vision, 3)
        me = "%s@head" % guarded.ann

        def asks(intent: str, job: int) -> str:
            return audited("UPDATE jobs SET state = 'stopping', stop_intent = '%s', reason = "
                           "'%s by %s', updated_at = extract(epoch FROM transaction_timestamp()"
                           ") WHERE id = %d" % (intent, {"requeue": "requeued", "cancel":
                                                         "cancelled"}[intent], me, job), me,
                           intent, str(job))
        guarded.sql(guarded.ann, asks("requeue", jobs[0].id))
        refused(guarded, asks("requeue", jobs[1].id), "role %s" % guarded.ann,
                "may not requeue job %d to team %s: it has 1 job waiting (1 of them being "
                "requeued) and may have at most 1 (max_waiting)" % (jobs[1].id, guarded.vision))
        assert admin.get(jobs[1].id).state == "running"
        guarded.sql(guarded.ann, asks("cancel", jobs[1].id))
        admin.stopping(jobs[2].id, ("running",), "requeue", "ops@h", "requeued by ops@h")
        for job in (jobs[0], jobs[2]):
            admin.requeue(job.id, ("stopping",), "sched", "requeued")
        assert len(pending(admin, guarded.vision)) == 2
    finally:
        admin.close()


def test_two_requeues_of_a_member_for_the_last_place_take_it_once(pg_server):
    """ann's requeue asked on psql holds her team's turn in an open transaction (the guard
    takes it, 0038); her requeue through fractui, of another job, waits for that turn, then
    counts the first: refused, nothing written. (Counted without the turn, in a snapshot
    without the first, both went through, past the bound.)"""
    guarded = _guarded(pg_server, LEAST)
    admin = guarded.store()
    mine = guarded.store(guarded.ann)
    try:
        admin.keep_waiting_bounds({guarded.vision: 1})
        jobs = running_jobs(admin, guarded.vision, 2)
        me = "%s@head" % guarded.ann
        outcome: List[BaseException] = []

        def second() -> None:
            try:
                mine.stopping(jobs[1].id, ("running",), "requeue", me, "requeued by " + me,
                              bounded_as=guarded.ann)
            except WaitingFull as err:
                outcome.append(err)

        requeue = audited("UPDATE jobs SET state = 'stopping', stop_intent = 'requeue', "
                          "reason = 'requeued by %s', updated_at = extract(epoch FROM "
                          "transaction_timestamp()) WHERE id = %d" % (me, jobs[0].id),
                          me, "requeue", str(jobs[0].id))
        _second_waits_for_the_first(pg_server, guarded, requeue, second,
                                    "the second requeue never waited for the team's turn")
        assert [str(e) for e in outcome] == [
            "refused: you are %s, not an admin; team %s has 1 job waiting (1 of them being "
            "requeued) and may have at most 1 (max_waiting)" % (guarded.ann, guarded.vision)]
        assert [admin.get(j.id).state for j in jobs] == ["stopping", "running"]
    finally:
        mine.close()
        admin.close()


def test_teams_and_the_tui_count_waiting_as_the_bound_does(store_url, tmp_path, capfd):
    """What waits, as a member's submit or requeue is held to it, is the team's pending jobs
    and those stopping to be requeued. ``fractui teams``' PENDING over the bound, its --json and
    the TUI's warning (standing.near_bound) counted the pending ones alone: 1/2, not near, for
    a team whose member is refused as it has 2 waiting. Both stores."""
    store = open_store(store_url)
    try:
        store.keep_waiting_bounds({"vision": 2})
        store.submit("v", "vision", "waits", ["x"], {"gpu": 0.5}, "root@test")
        back = store.submit("v", "vision", "back", ["x"], {"gpu": 0.5}, "root@test")
        running_by_hand(store, back.id)
        store.stopping(back.id, ("running",), "requeue", "root@test", "requeued by root")
        with pytest.raises(WaitingFull) as refusal:
            store.submit("v", "vision", "more", ["x"], {}, "ann@h", bounded_as="ann")
        assert (refusal.value.waiting, refusal.value.requeued) == (2, 1)
    finally:
        store.close()
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[[teams]]\nname = "vision"\nquota_gpus = 1\n'
                      '[[queues]]\nname = "v"\ngpu = 0.5\nteam = "vision"\n' % store_url)
    code, out, err = in_process(capfd, ["--config", str(config), "teams"])
    assert code == 0 and out.splitlines()[1].split()[5] == "2/2", (out, err)
    code, out, err = in_process(capfd, ["--config", str(config), "teams", "--json"])
    row = json.loads(out)["teams"][0]
    assert (row["pending"], row["waiting"], row["max_waiting"]) == (1, 2, 2), row
    store = open_store(store_url, make=False)
    try:
        shown, _ = standing(store.jobs(ACTIVE), load_config(str(config)), None, store.now())
    finally:
        store.close()
    assert shown[0].waiting == 2 and near_bound(shown[0], 2) and waiting(shown[0], 2) == "2/2"
