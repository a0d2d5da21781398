"""The SQLite store: durable, compare-and-set, audited, with one lease for one scheduler."""

from __future__ import annotations

import sqlite3

import pytest

from fractui.store import JobNotFound, Slot, SqliteStore, StateConflict, default_store_path
from fractui.store.sqlite import _migrations


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_jobs_survive_a_reopen_and_the_schema_is_versioned(tmp_path):
    path = str(tmp_path / "s" / "store.db")
    store = SqliteStore(path)
    job = store.submit("q", "team", "train", ["python", "x y"], {"gpu": 0.5}, "me", cwd="/w")
    uid = store.uid
    store.close()
    again = SqliteStore(path)
    assert again.uid == uid
    assert again.get(job.id) == job
    assert again.get(job.id).argv == ("python", "x y")
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == _migrations()[-1][0]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again.close()


def test_the_default_path_follows_xdg_state_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_store_path() == str(tmp_path / "fractui" / "store.db")


def test_a_change_from_an_unexpected_state_is_refused_and_changes_nothing(tmp_path):
    one = SqliteStore(str(tmp_path / "store.db"))
    two = SqliteStore(str(tmp_path / "store.db"))  # another process's view of the same file
    job = one.submit("q", None, "n", ["x"], {}, "me")
    slot = Slot("h", (1,), memory_mib=100, charge=0.25)
    one.change(job.id, ("pending",), "a", "placed", "decide", state="placed", slot=slot)
    with pytest.raises(StateConflict, match="job 1 is placed, not pending"):
        two.change(job.id, ("pending",), "b", "placed too", "decide", state="placed",
                   slot=Slot("other", (0,)))
    assert two.get(job.id).slot == slot
    assert [e.actor for e in two.audit_log(job.id)] == ["me", "a"]
    with pytest.raises(JobNotFound):
        one.get(99)


def test_requeue_makes_a_new_attempt_with_a_new_key_and_remembers_the_stale_copy(tmp_path):
    store = SqliteStore(str(tmp_path / "store.db"))
    job = store.submit("q", None, "n", ["x"], {}, "me")
    job = store.change(job.id, ("pending",), state="running", slot=Slot("h", (0,)),
                       preemptible=True, agent_job="j4")
    back = store.requeue(job.id, ("running",), "sched", "host h lost", stale_on="h")
    assert (back.state, back.attempt, back.slot, back.preemptible, back.agent_job) == (
        "pending", 1, None, False, None)
    assert back.key(store.uid) != job.key(store.uid)
    assert [(s.host, s.key, s.job) for s in store.stale()] == [("h", job.key(store.uid), 1)]
    store.drop_stale("h", job.key(store.uid), "sched", "gone")
    assert store.stale() == []
    assert [e.action for e in store.audit_log(job.id)] == ["submit", "requeued", "stop-stale"]


def test_one_lease_holder_at_a_time_and_an_expired_lease_passes_on(tmp_path):
    clock = Clock()
    store = SqliteStore(str(tmp_path / "store.db"), clock=clock)
    assert store.acquire_lease("a", 10)
    assert not store.acquire_lease("b", 10)
    clock.now += 5
    assert store.acquire_lease("a", 10)  # renewed until 1015
    clock.now += 9
    assert not store.acquire_lease("b", 10)
    assert store.lease_holder() == ("a", 1015.0)
    clock.now += 2
    assert store.lease_holder() is None
    assert store.acquire_lease("b", 10)
    assert store.audit_log()[-1].why == "took the scheduler lease from a, expired"
    store.release_lease("a")  # not the holder: no effect
    assert store.lease_holder()[0] == "b"
    store.release_lease("b")
    assert store.acquire_lease("a", 10)


def test_jobs_filter_by_state_and_queue_and_limit_to_the_newest(tmp_path):
    store = SqliteStore(str(tmp_path / "store.db"))
    for i in range(5):
        store.submit("q%d" % (i % 2), None, "n%d" % i, ["x"], {}, "me")
    store.change(2, ("pending",), state="cancelled")
    assert [j.id for j in store.jobs(["pending"])] == [1, 3, 4, 5]
    assert [j.id for j in store.jobs(queue="q0")] == [1, 3, 5]
    assert [j.id for j in store.jobs(limit=2)] == [4, 5]


def test_a_store_of_an_older_version_is_migrated_in_place_and_keeps_its_jobs(tmp_path):
    path = str(tmp_path / "store.db")
    first_sql = _migrations()[0][1]
    db = sqlite3.connect(path)
    for statement in first_sql.split(";\n"):
        if statement.strip():
            db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO meta (key, value) VALUES ('uid', 'old00001')")
    db.execute("INSERT INTO jobs (queue, name, argv, request, state, submitted_at, updated_at, "
               "host, gpus, profile, start) VALUES ('q', 'n', '[\"x\"]', '{}', 'placed', 1, 1, "
               "'h', '[0]', '3g.40gb', 4)")
    db.commit()
    db.close()
    store = SqliteStore(path)
    job = store.get(1)
    assert (store.uid, job.slot) == ("old00001", Slot("h", (0,), "3g.40gb", 4))
    pinned = store.change(1, ("placed",), slot=Slot("h", (0,), "3g.40gb", 4, layout_version="v9"))
    assert pinned.slot.layout_version == "v9"
    assert store.inventory() == {}  # 0003 added the inventory
    store.record_inventory("h", {"cpus": 8, "gpus": []})
    assert store.inventory() == {"h": {"cpus": 8, "gpus": []}}
    assert job.refusals == ()  # 0004 added the refusals, none for a job of before
    feed = store.feed()  # 0005 added the change feed's counters
    store.submit("q", None, "after", ["true"], {}, "me")
    assert feed.wait(5) == {"jobs"}
    feed.close()
    assert store.log_tail(1) is None  # 0006 added the log tails
    store.keep_log(1, "out\n", complete=False)
    assert store.log_tail(1).text == "out\n"
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == len(
        _migrations()) == 6


def test_the_identity_is_the_os_user_by_uid_and_the_files_owner_is_admin(tmp_path, monkeypatch):
    import os
    import pwd
    monkeypatch.setenv("USER", "someone-else")  # $USER is the caller's to set: never believed
    monkeypatch.setenv("LOGNAME", "someone-else")
    path = tmp_path / "store.db"
    store = SqliteStore(str(path))
    try:
        me = store.identity()
        assert (me.user, me.teams) == (pwd.getpwuid(os.geteuid()).pw_name, None)
        assert me.admin  # it owns the file
        os.chown(path, 65534, 65534)  # the file handed to nobody: root stays admin, by uid 0
        assert store.identity().admin == (os.geteuid() == 0)
    finally:
        store.close()
