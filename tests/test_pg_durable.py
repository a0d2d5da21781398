"""What fractui has said was made on a shared PostgreSQL store holds, once: it outlives the
server's crash (`pg_ctl stop -m immediate`: no shutdown checkpoint, the WAL not yet written
lost with the server's memory) whatever the admin or a member set synchronous_commit to, two
teams' members and the lease holder each on a connection of their own role, each change
retried by its key or asked again making nothing twice; and a `fractui scheduler` whose
sessions an admin ends again and again (pg_terminate_backend), in the middle of its passes and
its writes, decides and launches each job once. Real PostgreSQL, real roles given the
documented least grants, real processes on simulated hosts."""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Iterator, List

import pytest

from fractui.config import QueueConfig, StoreSettings
from fractui.store.access import CANCEL
from fractui.store.intents import Asker, ask_stop, submit
from fractui.store.model import CANCELLED, PENDING, STOPPING
from tests import localfleet
from tests.localfleet import wait
from tests.test_pg_guard import LEAST, SLOT, Guarded, _guarded

local_fleet = localfleet.local_fleet

# The WAL writer flushes an asynchronous commit within three of its delays: at 10 s (its
# most), a commit not flushed when it was answered is still unwritten when the server dies.
WAL_WRITER_DELAY = "10s"


@pytest.fixture
def slow_wal_writer(pg_server) -> Iterator[None]:
    pg_server.sql("ALTER SYSTEM SET wal_writer_delay = '%s'" % WAL_WRITER_DELAY)
    pg_server.pg_ctl("reload")
    try:
        yield
    finally:
        pg_server.sql("ALTER SYSTEM RESET wal_writer_delay")
        pg_server.pg_ctl("reload")


def _rows(guarded: Guarded) -> tuple[list[tuple], list[tuple]]:
    """Every job's (id, team, state, stop_intent, host) and every audit entry, as the
    superuser reads them straight from the tables."""
    return (guarded.server.sql("SELECT id, team, state, stop_intent, host FROM jobs ORDER BY "
                               "id", db=guarded.db),
            guarded.server.sql("SELECT id, job, actor, action FROM audit ORDER BY id",
                               db=guarded.db))


@pytest.mark.parametrize("set_by", ["database", "roles"])
def test_what_was_acknowledged_outlives_a_crash_whatever_synchronous_commit_says(
        pg_server, slow_wal_writer, set_by):
    """``database``: the admin's ALTER DATABASE ... SET synchronous_commit = off, for speed;
    ``roles``: each role's own ALTER ROLE (a member may set her own role's defaults)."""
    guarded = _guarded(pg_server, LEAST)
    ben = "ben_" + guarded.tag
    pg_server.sql("CREATE ROLE %s LOGIN IN ROLE fractui_team_%s" % (ben, guarded.nlp))
    if set_by == "database":
        pg_server.sql("ALTER DATABASE %s SET synchronous_commit = off" % guarded.db)
    else:
        for role in (guarded.ann, ben, guarded.ops):
            guarded.sql(role, "ALTER ROLE %s SET synchronous_commit = off" % role)
    ann, bens, ops = (guarded.store(r) for r in (guarded.ann, ben, guarded.ops))
    here = Asker("here")
    try:
        keys = {"a1": (ann, guarded.vision), "a2": (ann, guarded.vision),
                "b1": (bens, guarded.nlp), "b2": (bens, guarded.nlp)}
        made = {key: submit(store, "q", team, key, ["sleep", "60"], {}, here, key=key).id
                for key, (store, team) in keys.items()}
        assert ask_stop(ann, ann.get(made["a1"]), CANCEL, here).state == CANCELLED
        epoch = ops.acquire_lease("s1", 600)
        ops.place(made["b1"], SLOT, "s1", "decided", epoch=epoch)
        ops.started(made["b1"], "agent-b1", None, "s1", "launched", epoch=epoch)
        assert ask_stop(bens, bens.get(made["b1"]), CANCEL, here).state == STOPPING
        said = _rows(guarded)
        pg_server.pg_ctl("stop", "-m", "immediate")
        pg_server.start()
        assert _rows(guarded) == said  # every acknowledged change, each entry once
        jobs, _ = said
        assert [(j[0], j[2], j[3]) for j in jobs] == [
            (made["a1"], CANCELLED, None), (made["a2"], PENDING, None),
            (made["b1"], STOPPING, CANCEL), (made["b2"], PENDING, None)]
        assert jobs[2][4] == SLOT.host
        # asked again after the crash (a client that did not hear its answer): the same jobs
        # and states, nothing new made or audited
        for key, (store, team) in keys.items():
            assert submit(store, "q", team, key, ["sleep", "60"], {}, here, key=key).id \
                == made[key]
        assert ask_stop(ann, ann.get(made["a1"]), CANCEL, here).state == CANCELLED
        assert ask_stop(bens, bens.get(made["b1"]), CANCEL, here).state == STOPPING
        assert ops.acquire_lease("s1", 600) == epoch  # the lease as it was taken
        assert _rows(guarded) == said
    finally:
        for store in (ann, bens, ops):
            store.close()
        for role in (guarded.ann, ben, guarded.ops):
            pg_server.sql("ALTER ROLE %s RESET ALL" % role)


@pytest.mark.slow  # a fault suite: README, "the slow fault suites"
def test_a_scheduler_whose_sessions_are_ended_mid_pass_places_and_launches_each_job_once(
        local_fleet, pg_server):
    """Every session of the lease holder's ended every 0.1 s while a burst of jobs comes: a
    write cut before its COMMIT is made again on a new session, one cut while committing is
    said as not known and read back by the next pass; none is made twice."""
    db = pg_server.new_database()
    url = pg_server.url(db)
    f = local_fleet({"gpu-a": "2xL4", "gpu-b": "2xL4"}, [QueueConfig(name="q", gpu=0.125)],
                    store_url=url, lease_s=3.0)
    # the scheduler's sessions by their name, the test's own store left alone
    f.config = dataclasses.replace(f.config, store=StoreSettings(
        url + "?application_name=scheduler"))
    run = f.scheduler_process("s1")
    ended: List[tuple] = []
    stop = threading.Event()

    def terminator() -> None:
        while not stop.wait(0.1):
            ended.extend(pg_server.sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                "application_name = 'scheduler' AND datname = '%s'" % db))

    ending = threading.Thread(target=terminator, daemon=True)
    try:
        wait(lambda: f.store.lease_holder() is not None, f.states, alive=run)
        ending.start()
        jobs = [f.submit("q").id for _ in range(12)]
        wait(lambda: len(ended) > 40, lambda: len(ended))
        stop.set()
        ending.join(30)
        wait(lambda: set(f.states().values()) == {"running"}, f.states, timeout_s=60,
             alive=run)
        said = collections.Counter((e.job, e.action) for e in f.store.audit_log(limit=1000))
        for job in jobs:  # decided once and launched once, never requeued
            assert (said[(job, "decide")], said[(job, "launch")]) == (1, 1), said
        assert {j.attempt for j in f.store.jobs()} == {0}
        assert collections.Counter(r["key"] for r in f.agent_jobs()) == collections.Counter(
            j.key(f.store.uid) for j in f.store.jobs())  # one copy each
        assert f.store.lease_holder()[0] == "s1"
    finally:
        stop.set()
        run.terminate()
        err = run.communicate(timeout=60)[1]
    assert "Traceback" not in err, err
