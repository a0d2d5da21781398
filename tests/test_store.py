"""The store, on both backends (an SQLite file and a real PostgreSQL database): durable,
compare-and-set, audited, with one lease for one scheduler whose writes are fenced by its
epoch."""

from __future__ import annotations

import dataclasses
import os
import pwd
import sqlite3

import pytest

from fractui.store import (JobNotFound, LeaseLost, Slot, SqliteStore, StateConflict,
                           StoreError, default_store_path, open_store)
from fractui.store.base import KeyTaken
from fractui.store.intents import Asker, Refused, ask_stop, submit, submit_key
from fractui.store.model import (OUT_OF_CONFIG, GpuTime, Hold, HolderMemory, LogTail,
                                 ModeHold, TeamTerms)
from fractui.store.sql import statements
from fractui.store.sqlite import _migrations
from fractui.whoami import os_user


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_jobs_survive_a_reopen(store_url):
    store = open_store(store_url)
    job = store.submit("q", "team", "train", ["python", "x y"], {"gpu": 0.5}, "me", cwd="/w")
    uid = store.uid
    store.close()
    again = open_store(store_url)
    try:
        assert again.uid == uid
        assert again.get(job.id) == job
        assert again.get(job.id).argv == ("python", "x y")
        assert (job.id, job.state, job.request, job.cwd) == (1, "pending", {"gpu": 0.5}, "/w")
    finally:
        again.close()


def test_an_sqlite_store_is_made_where_nothing_was_and_its_schema_is_versioned(tmp_path):
    path = str(tmp_path / "s" / "store.db")
    again = SqliteStore(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == _migrations()[-1][0]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again.close()


def test_the_default_path_follows_xdg_state_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_store_path() == str(tmp_path / "fractui" / "store.db")


def test_a_change_from_an_unexpected_state_is_refused_and_changes_nothing(store_url):
    one = open_store(store_url)
    two = open_store(store_url)  # another process's view of the same store
    job = one.submit("q", None, "n", ["x"], {}, "me")
    slot = Slot("h", (1,), memory_mib=100, charge=0.25)
    one.place(job.id, slot, "a", "placed")
    with pytest.raises(StateConflict, match="job 1 is placed, not pending"):
        two.place(job.id, Slot("other", (0,)), "b", "placed too")
    assert two.get(job.id).slot == slot
    assert [e.actor for e in two.audit_log(job.id)] == ["me", "a"]
    with pytest.raises(JobNotFound):
        one.get(99)
    one.close()
    two.close()


def test_requeue_makes_a_new_attempt_with_a_new_key_and_remembers_the_stale_copy(store_url):
    store = open_store(store_url)
    job = store.submit("q", None, "n", ["x"], {}, "me")
    store.place(job.id, Slot("h", (0,)), "sched", "placed", preemptible=True)
    job = store.started(job.id, "j4", 5.0, "sched", "started")
    back = store.requeue(job.id, ("running",), "sched", "host h lost", stale_on="h")
    assert (back.state, back.attempt, back.slot, back.preemptible, back.agent_job) == (
        "pending", 1, None, False, None)
    assert back.key(store.uid) != job.key(store.uid)
    assert [(s.host, s.key, s.job) for s in store.stale()] == [("h", job.key(store.uid), 1)]
    store.drop_stale("h", job.key(store.uid), "sched", "gone")
    assert store.stale() == []
    assert [e.action for e in store.audit_log(job.id)] == ["submit", "decide", "launch",
                                                           "requeued", "stop-stale"]
    store.close()


def test_an_end_gives_the_agents_start_only_to_a_job_whose_start_is_not_known(store_url):
    """As ``held`` gives it: a start its launch answered under way takes the agent's start at
    its end; a known start is never overwritten by another."""
    store = open_store(store_url)
    try:
        starts = []
        for known in (None, 5.0):
            job = store.submit("q", None, "n", ["x"], {}, "me")
            store.place(job.id, Slot("h", (0,)), "sched", "placed")
            store.started(job.id, "j%d" % job.id, known, "sched", "started")
            starts.append(store.ended(job.id, ("running",), "done", None, "sched", "exited 0",
                                      "end", ended_at=9.0, started_at=7.0).started_at)
        assert starts == [7.0, 5.0]
    finally:
        store.close()


def test_one_lease_holder_at_a_time_and_an_expired_lease_passes_on(tmp_path):
    """On SQLite, by this machine's clock (one machine shares the file)."""
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


def test_jobs_filter_by_state_and_queue_and_limit_to_the_newest(store_url):
    store = open_store(store_url)
    for i in range(5):
        store.submit("q%d" % (i % 2), None, "n%d" % i, ["x"], {}, "me")
    store.ended(2, ("pending",), "cancelled", "not wanted", "me", "not wanted", "cancel")
    assert [j.id for j in store.jobs(["pending"])] == [1, 3, 4, 5]
    assert [j.id for j in store.jobs(queue="q0")] == [1, 3, 5]
    assert [j.id for j in store.jobs(limit=2)] == [4, 5]
    assert store.jobs([]) == []
    # a host's newest: the limit counts that host's jobs, not the newest of all then filtered
    store.place(1, Slot("h", (0,), memory_mib=512), "me", "by hand", manual=True)
    store.place(3, Slot("g", (0,), memory_mib=512), "me", "by hand", manual=True)
    assert [j.id for j in store.jobs(limit=1, hosts=["h"])] == [1]
    assert [j.id for j in store.jobs(hosts=["h", "g"])] == [1, 3]
    assert [j.id for j in store.jobs(["placed"], hosts=["g"])] == [3]
    assert store.jobs(hosts=[]) == []
    store.record_inventory("h", {"cpus": 8})
    store.record_inventory("h", {"cpus": 16})  # replaces what was kept
    assert store.inventory() == {"h": {"cpus": 16}}
    since = store.inventory_since()  # when, by the store's clock (status of no hosts says it)
    assert list(since) == ["h"] and 0 < since["h"] <= store.now()
    store.close()


def test_the_out_of_config_mark_keeps_the_time_the_facts_were_recorded(store_url):
    """``status`` says when a host's facts were recorded: marking them out of the config (or
    taking the mark off) changes no fact, so their time stays; new facts take a new one."""
    store = open_store(store_url)
    try:
        store.record_inventory("h", {"cpus": 8})
        recorded = store.inventory_since()["h"]
        store.record_inventory("h", {"cpus": 8, OUT_OF_CONFIG: True})
        assert store.inventory() == {"h": {"cpus": 8, OUT_OF_CONFIG: True}}
        assert store.inventory_since() == {"h": recorded}
        store.keep_inventory({"h": {"cpus": 8}}, store.inventory())  # put back in the config
        assert store.inventory() == {"h": {"cpus": 8}}
        assert store.inventory_since() == {"h": recorded}
        store.record_inventory("h", {"cpus": 16, OUT_OF_CONFIG: True})  # changed meanwhile
        assert recorded < store.inventory_since()["h"] <= store.now()
    finally:
        store.close()


def test_a_request_for_output_answered_with_the_tail_kept_leaves_it_as_it_was(store_url):
    """The lease holder answers a request it will not read the host for (its host is out of
    the config) with the tail kept: the request goes, the tail stays, its time too; once the
    job has ended, marked complete (no more of it will be read)."""
    store = open_store(store_url)
    try:
        job = store.submit("q", None, "n", ["x"], {}, "alice")
        epoch = store.acquire_lease("s", 60)
        store.keep_log(job.id, "out\n", complete=False, epoch=epoch, offset=4)
        kept = store.log_tail(job.id)
        store.ask_log(job.id, "alice")
        feed = store.feed()
        store.answer_log(job.id, False, epoch=epoch)
        assert feed.wait(5) == {"logs"}  # the asker is woken
        feed.close()
        assert store.log_requests() == [] and store.log_tail(job.id) == kept
        store.ask_log(job.id, "alice")
        store.answer_log(job.id, True, epoch=epoch)
        assert store.log_requests() == []
        assert store.log_tail(job.id) == dataclasses.replace(kept, complete=True)
    finally:
        store.close()


def test_the_lease_passes_on_when_it_lapses_or_is_released_each_take_a_new_epoch(store_url):
    """On either backend, by the store's clock: a lease of 0 s has lapsed as it is taken."""
    store = open_store(store_url)
    try:
        assert store.lease_holder() is None
        assert store.acquire_lease("a", 60) == 1
        assert store.acquire_lease("b", 60) is None  # a's lasts
        assert store.acquire_lease("a", 0) == 1  # a renewal keeps the epoch...
        assert store.lease_holder() is None  # ...and this one lapsed at once
        assert store.acquire_lease("b", 60) == 2  # taken: a new epoch
        assert store.audit_log()[-1].why == "took the scheduler lease from a, expired"
        holder, until = store.lease_holder()
        assert holder == "b" and until > store.audit_log()[-1].time
        store.release_lease("a")  # not the holder: no effect
        assert store.lease_holder()[0] == "b"
        store.release_lease("b")
        assert store.lease_holder() is None
        assert store.acquire_lease("b", 60) == 3  # after a release, even by b, a new epoch
        assert store.audit_log()[-1].why == "took the scheduler lease"
    finally:
        store.close()


def test_a_write_of_an_old_epoch_is_refused_and_changes_nothing(store_url):
    """A scheduler that lost its lease (it paused; another took it) writes nothing with the
    epoch it had: every kind of write the lease holder makes is fenced, in its transaction."""
    store, other = open_store(store_url), open_store(store_url)
    try:
        job = store.submit("q", None, "n", ["x"], {}, "alice")
        with pytest.raises(LeaseLost, match="the lease's is now never taken"):
            store.waiting(job.id, "x", epoch=1)
        old = store.acquire_lease("s1", 0)  # lapses at once: s2 may take it
        placed = store.place(job.id, Slot("h", (0,)), "s1", "placed", epoch=old)
        new = other.acquire_lease("s2", 60)
        assert new == old + 1
        before = (store.get(job.id), store.stale(), store.inventory(), store.audit_log(),
                  store.holder_memory())
        writes = [
            lambda: store.started(job.id, "j1", None, "s1", "started", epoch=old),
            lambda: store.reslot(job.id, Slot("h", (1,)), epoch=old),
            lambda: store.ended(job.id, ("placed",), "failed", "no", "s1", "no", "failed",
                                epoch=old),
            lambda: store.requeue(job.id, ("placed",), "s1", "host lost", stale_on="h",
                                  epoch=old),
            lambda: store.drop_stale("h", placed.key(store.uid), "s1", "gone", epoch=old),
            lambda: store.record_inventory("h", {"cpus": 1}, epoch=old),
            lambda: store.keep_inventory({"h": {"cpus": 1}}, {}, epoch=old),
            lambda: store.keep_lost_clocks({"h": 5.0}, {job.id: 6.0}, epoch=old),
            lambda: store.keep_mode_holds({"GPU-x": ModeHold(1, 120.0)}, epoch=old),
            lambda: store.stop_sent("h", placed.key(store.uid), epoch=old),
            lambda: store.copy_ended("h", placed.key(store.uid), "s1", epoch=old),
            lambda: store.answer_log(job.id, False, epoch=old),
        ]
        for write in writes:
            with pytest.raises(LeaseLost, match="its epoch %d; the lease's is now epoch %d, "
                               "held by s2" % (old, new)):
                write()
        assert (store.get(job.id), store.stale(), store.inventory(), store.audit_log(),
                store.holder_memory()) == before
        # the new holder's writes, and a user's (no epoch), go through
        other.started(job.id, "j1", None, "s2", "started", epoch=new)
        assert store.stopping(job.id, ("running",), "cancel", "alice", "not needed").state == \
            "stopping"  # a user's write carries no epoch
    finally:
        store.close()
        other.close()


OLD_UID = "01d00001"  # the id of a store of before, as fractui gave it when it was made


def _store_of_version(path: str, version: int) -> sqlite3.Connection:
    """A new SQLite file at ``path`` holding a store of schema ``version``, as fractui's
    migrations made it, with its id (OLD_UID), left open for the test to fill with rows of
    then."""
    db = sqlite3.connect(path)
    # (0015 asks the store's rule of each job's submitter: there is none yet)
    db.create_function("fractui_run_as", 1, lambda _submitter: None)
    for number, sql in _migrations():
        if number <= version:
            for statement in statements(sql):
                db.execute(statement)
    db.execute("INSERT INTO meta (key, value) VALUES ('uid', ?)", (OLD_UID,))
    db.execute("PRAGMA user_version = %d" % version)
    return db


def test_a_store_of_an_older_version_is_migrated_in_place_and_keeps_its_jobs(tmp_path):
    path = str(tmp_path / "store.db")
    db = _store_of_version(path, 1)
    db.execute("INSERT INTO jobs (queue, name, argv, request, state, submitted_at, updated_at, "
               "host, gpus, profile, start) VALUES ('q', 'n', '[\"x\"]', '{}', 'placed', 1, 1, "
               "'h', '[0]', '3g.40gb', 4)")
    db.execute("INSERT INTO lease (name, holder, expires_at) VALUES ('scheduler', 's', 9e12)")
    db.execute("INSERT INTO audit (time, actor, action, job, why) VALUES "
               "(1, 'ann@h', 'submit', 1, 'submitted')")
    db.commit()
    db.close()
    store = SqliteStore(path)
    job = store.get(1)
    assert (job.submitted_by, job.user) == ("ann@h", "ann")  # 0014, from its audit entry
    assert (store.uid, job.slot) == (OLD_UID, Slot("h", (0,), "3g.40gb", 4))
    pinned = store.reslot(1, Slot("h", (0,), "3g.40gb", 4, layout_version="v9"))
    assert pinned.slot.layout_version == "v9"
    assert store.inventory() == {}  # 0003 added the inventory
    store.record_inventory("h", {"cpus": 8, "gpus": []})
    assert store.inventory() == {"h": {"cpus": 8, "gpus": []}}
    assert job.refusals == ()  # 0004 added the refusals, none for a job of before
    feed = store.feed()  # 0005 added the change feed's counters
    store.submit("q", None, "after", ["true"], {}, "me")
    assert feed.wait(5) == {"jobs"}
    feed.close()
    assert store.acquire_lease("s", 10) == 1  # 0006: a lease held before is the first epoch
    assert store.log_tail(1) is None  # 0007 added the log tails
    store.keep_log(1, "out\n", complete=False)
    assert store.log_tail(1).text == "out\n"
    assert store.holder_memory() == HolderMemory({}, {}, frozenset())  # 0008: none kept yet
    assert store.cordons() == []  # 0009 added the cordons
    assert store.usage(0, 9e12) == [] and store.gpu_time(0, 9e12) == []  # 0010: usage
    assert (job.env, job.image) == ({}, None)  # 0011: a job of before runs as it did
    assert store.mode_holds() == {}  # 0012 added the mode-change holds
    assert store.trouble() is None  # 0013: nothing fails the lease holder's passes
    kept = store.submit("q", None, "keyed", ["true"], {}, "me@h", key="k1")  # 0014: keys
    assert kept.user == "me"
    assert store.submit("q", None, "keyed", ["true"], {}, "me@h", key="k1") == kept
    assert job.run_as == "ann"  # 0015: ann (not the file's owner, nor root) is no admin: her
    # job of before, placed, runs as her from its next launch on, no longer as the agent
    assert store.submit("q", None, "as", ["true"], {}, "me@h", run_as="me").run_as == "me"
    assert store.log_tail(1).offset is None  # 0016: a tail of before was kept without one
    store.keep_log(1, "out\nmore\n", complete=False, offset=9)
    assert store.log_tail(1).offset == 9
    assert store.get(1).move_to is None  # 0017: no job of before moves
    assert store.waiting_bounds() == {}  # 0018: every team held to the default bound
    store.keep_gpu_time([GpuTime("h", 0, 600.0, "L4", 30, seen_from=610, seen_to=640,
                                 seen_spans=((610, 640),))])  # 0019: when, 0020: stretches
    assert [(t.seen_from, t.seen_to, t.seen_spans) for t in store.gpu_time(0, 9e12)] == [
        (610.0, 640.0, ((610.0, 640.0),))]
    assert store.last_lines([1]) == {}  # 0021: no last line kept of before
    assert store.team_holds() == {}  # 0022: no team holds anything until a pass says so
    store.keep_team_holds({"nlp": Hold(1, 1.0, "h")})
    assert store.team_holds() == {"nlp": Hold(1, 1.0, "h")}
    assert not store.log_tail(1).whole  # 0023: a tail of before is not known to be all
    store.keep_log(1, "out\n", complete=True, offset=4, whole=True)
    assert store.log_tail(1) == LogTail(1, "out\n", True, store.log_tail(1).kept_at, 4, True)
    assert store.team_terms() == {}  # 0024: no team's quota kept until a scheduler's lease
    store.keep_team_terms({"nlp": TeamTerms(1.5, True, 2.0)})
    assert store.team_terms() == {"nlp": TeamTerms(1.5, True, 2.0)}
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == len(
        _migrations()) == 24


def test_the_tails_kept_before_the_last_lines_are_kept_as_they_were(tmp_path):
    """Migration 0021 makes log_tails anew (a tail's text may be NULL: a failed job's last
    line kept before its tail): each tail of before is there as it was; a last line kept of a
    job with no tail is no tail (``logs`` still asks for one), and its tail kept after keeps
    the line."""
    path = str(tmp_path / "store.db")
    db = _store_of_version(path, 20)
    db.execute("INSERT INTO log_tails (job, text, complete, kept_at, log_offset) VALUES "
               "(7, 'out\n', 1, 5, 4)")
    db.commit()
    db.close()
    store = SqliteStore(path)
    try:
        assert store.log_tail(7) == LogTail(7, "out\n", True, 5.0, 4)
        job = store.submit("q", None, "n", ["x"], {}, "me@h")
        store.place(job.id, Slot("h", (0,)), "me@h", "by hand", manual=True)
        store.ended(job.id, ("placed",), "failed", "exited 1", "me@h", "exited 1", "end",
                    exit_code=1, last_line="boom")
        assert (store.log_tail(job.id), store.last_lines([7, job.id])) == (None, {job.id: "boom"})
        store.keep_log(job.id, "boom\n", True)
        assert (store.log_tail(job.id).text, store.last_lines([job.id])) == (
            "boom\n", {job.id: "boom"})
    finally:
        store.close()


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


def test_a_jobs_life_is_told_by_typed_transitions_each_from_its_states(store_url):
    store = open_store(store_url)
    try:
        job = store.submit("q", "vision", "n", ["x"], {"gpu": 0.25}, "alice")
        with pytest.raises(StateConflict, match="job 1 is pending, not placed"):
            store.started(job.id, "j1", None, "s", "too early")
        store.waiting(job.id, "no room")
        placed = store.place(job.id, Slot("h", (0,)), "bob", "by hand", manual=True,
                             preemptible=True)
        assert (placed.state, placed.manual, placed.preemptible, placed.reason) == (
            "placed", True, True, None)
        placed = store.reslot(job.id, Slot("h", (0,), memory_mib=512, charge=0.25))
        running = store.started(job.id, "j1", 12.5, "s", "started on h")
        assert (running.state, running.agent_job, running.started_at, running.slot.memory_mib) \
            == ("running", "j1", 12.5, 512)
        with pytest.raises(ValueError, match="unknown stop intent 'pause'"):
            store.stopping(job.id, ("running",), "pause", "bob", "why")
        stopping = store.stopping(job.id, ("running",), "cancel", "bob", "not needed")
        assert (stopping.state, stopping.stop_intent, stopping.reason) == (
            "stopping", "cancel", "not needed")
        with pytest.raises(ValueError, match="'running' is not an end"):
            store.ended(job.id, ("stopping",), "running", None, "s", "x", "end")
        ended = store.ended(job.id, ("stopping",), "cancelled", "not needed", "s", "stopped",
                            "end")
        assert ended.state == "cancelled" and ended.ended_at >= ended.started_at
        assert ended.ended_at == store.audit_log(job.id)[-1].time  # the store's clock
        assert [(e.actor, e.action) for e in store.audit_log(job.id)] == [
            ("alice", "submit"), ("bob", "place"), ("s", "launch"), ("bob", "cancel"),
            ("s", "end")]
        with pytest.raises(StateConflict):
            store.place(job.id, Slot("h", (0,)), "s", "again")
    finally:
        store.close()


def test_a_job_cancelled_on_a_lost_host_ends_and_leaves_its_copy_to_stop_in_one_step(
        store_url):
    store = open_store(store_url)
    try:
        job = store.submit("q", None, "n", ["x"], {}, "alice")
        store.place(job.id, Slot("h", (0,)), "s", "placed")
        store.started(job.id, "j1", None, "s", "started")
        store.stopping(job.id, ("running",), "cancel", "alice", "not needed")
        ended = store.ended(job.id, ("stopping",), "cancelled", "host h lost", "s",
                            "host h lost", "end", stale_on="h")
        assert (ended.state, ended.slot, ended.attempt) == ("cancelled", None, 0)
        assert [(c.host, c.key, c.job) for c in store.stale()] == [
            ("h", job.key(store.uid), job.id)]
        assert store.audit_log(job.id)[-1].detail["stale_on"] == "h"
    finally:
        store.close()


def test_clients_racing_on_one_job_never_both_win(store_url):
    """Eight clients (each its own connection, as eight processes would have) place one job at
    once, and submit at once: one placement wins, the rest are told it changed; no submit is
    lost and no job number given twice."""
    import threading

    stores = [open_store(store_url) for _ in range(8)]
    try:
        job = stores[0].submit("q", None, "contested", ["x"], {}, "alice")
        won, lost, submitted = [], [], []
        start = threading.Barrier(len(stores))

        def client(i: int) -> None:
            start.wait()
            try:
                won.append(stores[i].place(job.id, Slot("h%d" % i, (0,)), "c%d" % i, "mine"))
            except StateConflict:
                lost.append(i)
            submitted.extend(stores[i].submit("q", None, "n%d-%d" % (i, k), ["x"], {}, "c")
                             for k in range(5))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(stores))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(won) == 1 and len(lost) == len(stores) - 1
        assert stores[0].get(job.id).slot == won[0].slot
        assert [e.action for e in stores[0].audit_log(job.id)] == ["submit", "decide"]
        ids = [j.id for j in submitted]
        assert len(ids) == len(set(ids)) == 40
        assert len(stores[0].jobs()) == 41
    finally:
        for store in stores:
            store.close()


def test_the_holders_memory_is_read_by_the_next_holder_and_forgets_what_ended(store_url):
    """The lost-host clocks and the stops sent, kept by one holder, are what another store
    client (the next holder) reads; the clocks are replaced as a whole, and a stop is forgotten
    once its attempt is requeued or ends, or its stale copy is dropped."""
    store, other = open_store(store_url), open_store(store_url)
    try:
        assert other.holder_memory() == HolderMemory({}, {}, frozenset())
        epoch = store.acquire_lease("s1", 60)
        jobs = [store.submit("q", None, "n", ["x"], {}, "alice") for _ in range(3)]
        keys = []
        for job in jobs:
            store.place(job.id, Slot("h", (0,)), "s1", "placed", epoch=epoch)
            keys.append(store.started(job.id, "j%d" % job.id, None, "s1", "started",
                                      epoch=epoch).key(store.uid))
            store.stop_sent("h", keys[-1], epoch=epoch)
        store.stop_sent("h", keys[0], epoch=epoch)  # sent again: kept once
        store.keep_lost_clocks({"h": 100.5, "g": 101.0}, {jobs[1].id: 102.25}, epoch=epoch)
        assert other.holder_memory() == HolderMemory(
            {"h": 100.5, "g": 101.0}, {jobs[1].id: 102.25}, frozenset(("h", k) for k in keys))
        store.keep_lost_clocks({"g": 101.0}, {}, epoch=epoch)  # h came back; the GPU too
        assert (other.holder_memory().hosts_away, other.holder_memory().gpus_gone) == (
            {"g": 101.0}, {})
        store.stopping(jobs[0].id, ("running",), "cancel", "alice", "no")
        store.ended(jobs[0].id, ("stopping",), "cancelled", "no", "s1", "no", "end",
                    epoch=epoch)
        store.requeue(jobs[1].id, ("running",), "s1", "host h lost", stale_on="h",
                      epoch=epoch)
        assert other.holder_memory().stops_sent == {("h", keys[2])}
        store.ended(jobs[2].id, ("running",), "cancelled", "no", "s1", "no", "end",
                    stale_on="h", epoch=epoch)  # its copy left on a lost host: stopped anew
        store.stop_sent("h", keys[2], epoch=epoch)  # the stale copy's stop
        store.drop_stale("h", keys[2], "s1", "gone", epoch=epoch)
        assert other.holder_memory().stops_sent == frozenset()
        # a late copy's stop (an attempt the store moved past) is forgotten once the copy is
        # known ended, once: a second word of its end finds none
        store.stop_sent("h", keys[1], epoch=epoch)
        store.stop_sent("g", keys[1], epoch=epoch)
        assert store.copy_ended("h", keys[1], "s1", epoch=epoch) is True
        assert other.holder_memory().stops_sent == {("g", keys[1])}
        assert store.copy_ended("h", keys[1], "s1", epoch=epoch) is False
        assert other.holder_memory().stops_sent == {("g", keys[1])}
        # the GPUs held back from mode changes: replaced whole, read by anyone
        held = {"GPU-a": ModeHold(2, 340.5), "GPU-b": ModeHold(1, 220.0)}
        store.keep_mode_holds(held, epoch=epoch)
        assert other.mode_holds() == held == other.holder_memory().mode_holds
        store.keep_mode_holds({"GPU-a": ModeHold(3, 580.0)}, epoch=epoch)
        assert other.mode_holds() == {"GPU-a": ModeHold(3, 580.0)}
    finally:
        store.close()
        other.close()


def test_a_second_store_of_one_process_leaves_the_first_ones_locks(tmp_path):
    """Closing any descriptor of a file drops every POSIX lock the process holds on it, and
    SQLite guards only the descriptors it opened itself. A second store opened on the file
    read its header through a descriptor of its own and closed it: the first store's locks
    went, so another process's connection, closing, took itself for the last one and removed
    the WAL under it. This process then saw none of that process's jobs, and the file was
    malformed. Now a store of this process holds the file, and a second one does not read it
    behind SQLite's back."""
    import subprocess
    import sys

    from tests.conftest import REPO

    path = str(tmp_path / "store.db")
    first = SqliteStore(path)
    second = SqliteStore(path)
    other = ("import sys\nfrom fractui.store import SqliteStore\nstore = SqliteStore(sys.argv[1])"
             "\nfor i in range(20):\n    store.submit('q', None, 'b', ['y'], {}, 'them')\n"
             "store.close()\n")
    try:
        for i in range(20):
            first.submit("q", None, "a", ["x"], {}, "us")
        for rounds in range(1, 4):
            subprocess.run([sys.executable, "-c", other, path], check=True, cwd=REPO,
                           timeout=60)
            assert len(first.jobs()) == len(second.jobs()) == 20 + 20 * rounds
    finally:
        first.close()
        second.close()
    fresh = SqliteStore(path)  # (malformed, before)
    try:
        assert len(fresh.jobs()) == 80
    finally:
        fresh.close()


def test_a_damaged_team_hold_is_left_out_and_the_rest_read(tmp_path, caplog):
    """A team's hold is only said (fractui teams, the TUI's queue panel), and the lease holder
    writes it again only when its pass's holds change: a row holding what fractui never writes
    stopped every read of the TUI (no job shown) and `teams` (exit 1, "restore it from a
    backup"); it is left out, said in the log, and the rest read."""
    path = str(tmp_path / "store.db")
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.executemany("INSERT INTO team_holds (team, job, charge, host) VALUES (?, ?, ?, ?)",
                   [("vision", "seven", 1.0, None), ("nlp", 3, 0.5, "gpu-a")])
    db.commit()
    db.close()
    store = SqliteStore(path)
    try:
        assert store.team_holds() == {"nlp": Hold(3, 0.5, "gpu-a")}
        assert "team vision's hold's job is 'seven'" in caplog.text
    finally:
        store.close()


def test_a_damaged_team_terms_row_is_left_out_and_the_rest_read(tmp_path):
    """A team's terms are only said (fractui teams), and the lease holder writes them again
    only where the store's differ from its config's, which it finds by reading them: a row
    holding what fractui never writes stopped `teams` (exit 1, "restore it from a backup")
    and every write of the terms for good. It is left out of the terms, the rest read, and
    said in ``unread`` (its team's quota not known, the store and the row named); the
    holder's next write mends it."""
    path = str(tmp_path / "store.db")
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.executemany("INSERT INTO team_terms (team, quota_gpus, over_quota, weight) "
                   "VALUES (?, ?, ?, ?)", [("vision", "lots", 1, 1.0), ("nlp", 0.5, 0, 2.0)])
    db.commit()
    db.close()
    store = SqliteStore(path)
    try:
        read = store.team_terms()
        assert (read, read.unread) == ({"nlp": TeamTerms(0.5, False, 2.0)}, {
            "vision": "store %s, its row of team_terms: team vision's quota's quota_gpus is "
                      "'lots', not what fractui writes there" % path})
        kept = {"vision": TeamTerms(3.0, True, 1.0), "nlp": TeamTerms(0.5, False, 2.0)}
        store.keep_team_terms(kept)
        assert (store.team_terms(), store.team_terms().unread) == (kept, {})
    finally:
        store.close()


def test_a_team_the_holder_adds_as_the_terms_are_read_is_never_read_as_deleted(store_url):
    """The kept terms' rows and the mark naming the teams written (and its epoch) are read in
    one statement, one snapshot on either store: read in two, the lease holder's write that
    added nlp, committed between them, read as nlp's row "deleted since the lease holder
    wrote it". The holder's write here is run as the reader's statement starts."""
    holder, reader = open_store(store_url), open_store(store_url)
    try:
        epoch = holder.acquire_lease("s1", 60)
        vision, nlp = TeamTerms(0.5, False, 1.0), TeamTerms(1.0, False, 1.0)
        holder.keep_team_terms({"vision": vision}, epoch=epoch)  # its config: vision alone
        run, wrote = reader._run, []

        def between(db, sql, *args):
            if "FROM meta" in sql and not wrote:  # its next pass, nlp added to its config
                wrote.append(holder.keep_team_terms({"vision": vision, "nlp": nlp},
                                                    epoch=epoch))
            return run(db, sql, *args)
        reader._run = between
        read = reader.team_terms()
        assert wrote and (read, read.unread) == ({"vision": vision, "nlp": nlp}, {})
    finally:
        holder.close()
        reader.close()


def test_a_damaged_mode_hold_is_left_out_and_the_rest_read(tmp_path, caplog):
    """A hold is the lease holder's memory for an hour at most: a row holding what fractui
    never writes is left out, said in the log, rather than the store's damage that would stop
    every pass, the TUI's reads and `place`."""
    path = str(tmp_path / "store.db")
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.executemany("INSERT INTO mode_holds (uuid, failures, until) VALUES (?, ?, ?)",
                   [("GPU-bad", "two", "soon"), ("GPU-good", 2, 360.0)])
    db.commit()
    db.close()
    store = SqliteStore(path)
    try:
        assert store.mode_holds() == {"GPU-good": ModeHold(2, 360.0)}
        assert store.holder_memory().mode_holds == {"GPU-good": ModeHold(2, 360.0)}
        assert "the mode-change hold of GPU-bad's failures is 'two'" in caplog.text
    finally:
        store.close()


def test_a_stop_or_cancel_asked_again_is_answered_as_the_first_and_recorded_once(store_url):
    """A retry whose first answer was lost (the store committed, the reply never came) finds
    the job where it asked it to go: the same answer, no second audit entry; what was not
    asked (a preemption of a job stopping to requeue) is still refused."""
    store = open_store(store_url)
    me = Asker("here")
    try:
        waiting = store.submit("q", None, "w", ["x"], {}, "me")
        running = store.submit("q", None, "r", ["x"], {}, "me")
        store.place(running.id, Slot("h", (0,), memory_mib=512), "sched", "decided")
        store.started(running.id, "a1", None, "sched", "launched")
        for job, intent, state in ((waiting, "cancel", "cancelled"),
                                   (running, "requeue", "stopping")):
            first = ask_stop(store, store.get(job.id), intent, me)
            entries = len(store.audit_log(limit=1000))
            again = ask_stop(store, store.get(job.id), intent, me)
            assert first.state == again.state == state
            assert again == store.get(job.id) and len(store.audit_log(limit=1000)) == entries
        with pytest.raises(Refused, match=r"is stopping to be requeued \(once stopped, it "
                           r"goes back to its queue\): nothing to preempt"):
            ask_stop(store, store.get(running.id), "preempt", me)
    finally:
        store.close()


def test_a_requeue_asked_again_after_it_went_through_is_answered_as_done(store_url):
    """The requeue (or preemption) was carried out before the retry came: the job waits in its
    queue again since this user's own ask, and the retry is answered as the first was (no
    second audit entry). A job back in its queue otherwise is still refused: sent back by
    another user's requeue, by a preemption when a requeue is asked, by a launch refused."""
    store = open_store(store_url)
    me = Asker("here")
    user = store.identity().user

    def back(intent: str, actor: str):
        job = store.submit("q", None, intent, ["x"], {}, "me")
        store.place(job.id, Slot("h", (0,), memory_mib=512), "sched", "decided")
        store.started(job.id, "a%d" % job.id, None, "sched", "launched")
        if actor == "mine":
            ask_stop(store, store.get(job.id), intent, me)
        else:
            store.stopping(job.id, ("running",), intent, actor, "by hand")
        store.requeue(job.id, ("stopping",), "sched", "requeued")
        # the next attempt waits: a scheduler's reason moves nothing
        return store.waiting(job.id, "no room")

    try:
        for intent in ("requeue", "preempt"):
            job = back(intent, "mine")
            entries = len(store.audit_log(limit=1000))
            again = ask_stop(store, store.get(job.id), intent, me)
            assert (again.state, again.attempt) == ("pending", 1)
            assert again == store.get(job.id) and len(store.audit_log(limit=1000)) == entries
        with pytest.raises(Refused, match="is pending: nothing to preempt"):
            ask_stop(store, store.get(back("requeue", "mine").id), "preempt", me)
        with pytest.raises(Refused, match="is pending: nothing to requeue"):
            ask_stop(store, store.get(back("requeue", "x%s@there" % user).id), "requeue", me)
        refused = store.submit("q", None, "refused", ["x"], {}, "me")
        store.place(refused.id, Slot("h", (0,), memory_mib=512), "sched", "decided")
        store.requeue(refused.id, ("placed",), "sched", "refused by h")
        with pytest.raises(Refused, match="is pending: nothing to requeue"):
            ask_stop(store, store.get(refused.id), "requeue", me)
    finally:
        store.close()


def test_a_requeue_that_landed_while_its_launch_was_in_flight_asked_again_is_done(store_url):
    """The requeue landed between the launch and its recorded start: the start is recorded
    after the ask (the job stays stopping, audited ``launch``), then the stop is carried out.
    The job waits since this user's own requeue all the same: asked again, it is answered as
    done (no second entry), not refused as a pending job's requeue."""
    store = open_store(store_url)
    me = Asker("here")
    try:
        job = store.submit("q", None, "x", ["x"], {}, "me")
        store.place(job.id, Slot("h", (0,), memory_mib=512), "sched", "decided")
        ask_stop(store, store.get(job.id), "requeue", me)  # the launch is in flight
        assert store.started(job.id, "a1", None, "sched", "launched").state == "stopping"
        store.requeue(job.id, ("stopping",), "sched", "requeued")
        entries = len(store.audit_log(limit=1000))
        again = ask_stop(store, store.get(job.id), "requeue", me)
        assert (again.state, again.attempt) == ("pending", 1)
        assert len(store.audit_log(limit=1000)) == entries
    finally:
        store.close()


def test_a_requeue_asked_again_once_the_next_attempt_is_placed_is_done_until_it_starts(
        store_url):
    """The user's requeue went through and the scheduler placed the next attempt at once; the
    same user's requeue asked again (a retry, a second press) is answered as done, the job
    placed as it is, nothing more audited — it threw that attempt away before it ran. Once
    that attempt has started, a requeue is a new one and stops it."""
    store = open_store(store_url)
    me, slot = Asker("here"), Slot("h", (0,), memory_mib=512)
    try:
        job = store.submit("q", None, "x", ["x"], {}, "me")
        store.place(job.id, slot, "sched", "decided")
        store.started(job.id, "a1", None, "sched", "launched")
        ask_stop(store, store.get(job.id), "requeue", me)
        store.requeue(job.id, ("stopping",), "sched", "requeued")
        store.place(job.id, slot, "sched", "decided")
        entries = len(store.audit_log(limit=1000))
        again = ask_stop(store, store.get(job.id), "requeue", me)
        assert (again.state, again.attempt) == ("placed", 1) and again == store.get(job.id)
        assert len(store.audit_log(limit=1000)) == entries
        store.started(job.id, "a2", None, "sched", "launched")
        later = ask_stop(store, store.get(job.id), "requeue", me)
        assert (later.state, later.attempt) == ("stopping", 1)
    finally:
        store.close()


def test_a_submit_made_again_with_its_key_finds_its_job_and_a_key_is_for_one_submit(store_url):
    store = open_store(store_url)
    me = Asker("here")
    try:
        first = submit(store, "q", None, "train", ["python", "t.py"], {}, me, key="run-1")
        again = submit(store, "q", None, "train", ["python", "t.py"], {}, me, key="run-1")
        assert again == first and [j.id for j in store.jobs()] == [first.id]
        assert [e.job for e in store.audit_log() if e.action == "submit"] == [first.id]
        with pytest.raises(KeyTaken, match="job %d was submitted with that key and another "
                           "command$" % first.id):
            submit(store, "q", None, "train", ["python", "t.py", "--lr", "1"], {}, me,
                   key="run-1")
        with pytest.raises(KeyTaken, match="job %d was submitted with that key and another "
                           "queue and name$" % first.id):
            submit(store, "q2", None, "eval", ["python", "t.py"], {}, me, key="run-1")
        other = submit(store, "q", None, "train", ["python", "t.py"], {}, me, key="run-2")
        unkeyed = submit(store, "q", None, "train", ["python", "t.py"], {}, me)
        assert len({first.id, other.id, unkeyed.id}) == 3
    finally:
        store.close()


def test_a_submit_made_again_as_another_host_user_does_not_find_the_first(store_url):
    """A user made an admin or no longer one between a submit and its retry: the retry does
    not answer the first job, which runs as another host user than a submit now would (the
    agent's, for a member's retry), as if it were hers."""
    store = open_store(store_url)
    try:
        first = store.submit("q", "vision", "train", ["t"], {}, "ann@here", key="3:ann:k")
        with pytest.raises(KeyTaken, match="job %d was submitted with that key and another "
                           "host user it runs as$" % first.id):
            store.submit("q", "vision", "train", ["t"], {}, "ann@here", key="3:ann:k",
                         run_as="ann")
        mine = store.submit("q", "vision", "train", ["t"], {}, "ann@here", key="3:ann:m",
                            run_as="ann")
        assert store.submit("q", "vision", "train", ["t"], {}, "ann@here", key="3:ann:m",
                            run_as="ann") == mine
        with pytest.raises(KeyTaken):
            store.submit("q", "vision", "train", ["t"], {}, "ann@here", key="3:ann:m")
        assert [j.id for j in store.jobs()] == [first.id, mine.id]
    finally:
        store.close()


def test_a_submit_key_is_scoped_by_its_submitter():
    """One user's key never finds another's job: ``ann`` with key ``x:k`` is not ``ann:x``
    with key ``k``."""
    assert submit_key("ann@here", "x:k") != submit_key("ann:x@here", "k")
    assert submit_key("ann@h@there", "k") == "5:ann@h:k"  # the user is before the last @


def test_a_users_jobs_are_those_they_submitted_from_anywhere_and_no_one_elses(store_url):
    store = open_store(store_url)
    try:
        for actor in ("ann@a", "ann@b (tui)", "ann", "ann@corp@a", "bob@a", "annie@a"):
            store.submit("q", None, actor, ["x"], {}, actor)
        names = {u: [j.name for j in store.jobs(users=[u])] for u in ("ann", "ann@corp", "an")}
        assert names == {"ann": ["ann@a", "ann@b (tui)", "ann"], "ann@corp": ["ann@corp@a"],
                         "an": []}
        assert [j.name for j in store.jobs(users=["bob", "annie"], limit=1)] == ["annie@a"]
        ended = store.ended(1, ("pending",), "cancelled", "x", "me", "x", "cancel")
        assert store.jobs(ended_since=ended.ended_at) == [ended]  # the rest never ended
        assert store.jobs(ended_since=ended.ended_at + 1) == []
        assert store.jobs(users=[]) == []
    finally:
        store.close()


def test_a_job_back_in_its_queue_after_it_ran_waits_from_then_not_after_a_refused_launch(
        store_url):
    """``waiting_since``: a job's wait starts again when an attempt that started ends (a
    preemption, a requeue); a launch refused before it started is part of the same wait."""
    store = open_store(store_url)
    slot = Slot("h", (0,), memory_mib=512)
    try:
        job = store.submit("q", None, "n", ["x"], {}, "me")
        assert (job.queued_at, job.waiting_since) == (None, job.submitted_at)
        store.place(job.id, slot, "sched", "decided")
        refused = store.requeue(job.id, ("placed",), "sched", "refused by h: no room")
        assert refused.queued_at is None and refused.waiting_since == job.submitted_at
        store.place(job.id, slot, "sched", "decided")
        store.started(job.id, "a1", None, "sched", "launched")
        store.stopping(job.id, ("running",), "preempt", "sched", "preempted")
        back = store.requeue(job.id, ("stopping",), "sched", "preempted by sched")
        assert back.queued_at is not None and back.waiting_since == back.queued_at
        assert back.queued_at >= back.submitted_at and back.updated_at == back.queued_at
        assert store.get(job.id).record()["queued_at"] == back.queued_at
    finally:
        store.close()


def test_a_members_job_not_ended_from_before_runs_as_the_member_once_upgraded(tmp_path):
    """Migration 0015 (SQLite): a job of before that a team member submitted runs as her
    from then on, whether it waits or is placed, running or stopping (each comes back to its
    queue as it is, and would run as the agent at every later attempt); the admin's (the
    file's owner's, or root's), one ended, and one of no known submitter keep the agent's
    user. A submitter this machine has no user of is no admin."""
    path = str(tmp_path / "store.db")
    db = _store_of_version(path, 14)
    users = [p for p in pwd.getpwall() if p.pw_uid not in (0, os.geteuid())]
    owner = os_user()
    if os.geteuid() == 0:  # the file's owner is the admin, root or not
        os.chown(path, users[-1].pw_uid, -1)
        owner = users[-1].pw_name
    other = users[0].pw_name
    for name, state, by in (("mine", "pending", owner + "@head"), ("root", "pending", "root@h"),
                            ("pending", "pending", other + "@head"),
                            ("placed", "placed", other + "@head"),
                            ("running", "running", other + "@head (tui)"),
                            ("stopping", "stopping", other + "@head"),
                            ("done", "done", other + "@head"),
                            ("gone", "pending", "gone-user-x@head"),
                            ("unknown", "pending", None)):
        db.execute("INSERT INTO jobs (queue, name, argv, request, state, submitted_at, "
                   "updated_at, submitted_by) VALUES ('q', ?, '[\"x\"]', '{}', ?, 1, 1, ?)",
                   (name, state, by))
    db.commit()
    db.close()
    store = SqliteStore(path)
    try:
        assert {j.name: j.run_as for j in store.jobs()} == {
            "mine": None, "root": None, "pending": other, "placed": other, "running": other,
            "stopping": other, "done": None, "gone": "gone-user-x", "unknown": None}
    finally:
        store.close()


def test_a_job_back_in_its_queue_before_the_upgrade_waits_from_its_last_attempts_end(tmp_path):
    """Migration 0014 gives a job of before the end of its last attempt that started (its
    usage record's), so its next attempt's wait, and the screens', count from there."""
    path = str(tmp_path / "store.db")
    db = _store_of_version(path, 13)
    db.execute("INSERT INTO jobs (queue, name, argv, request, state, submitted_at, updated_at, "
               "attempt) VALUES ('q', 'back', '[\"x\"]', '{}', 'pending', 100, 900, 1), "
               "('q', 'fresh', '[\"x\"]', '{}', 'pending', 200, 200, 0)")
    db.execute("INSERT INTO usage (job, attempt, queue, user_name, host, gpus, charge, "
               "queued_at, started_at, ended_at, outcome) VALUES "
               "(1, 0, 'q', 'ann', 'h', '[0]', 0.5, 100, 150, 800, 'preempted')")
    db.commit()
    db.close()
    store = SqliteStore(path)
    try:
        assert [(j.queued_at, j.waiting_since) for j in store.jobs()] == [(800.0, 800.0),
                                                                          (None, 200.0)]
    finally:
        store.close()


def test_a_kept_tail_keeps_where_it_ends_in_the_log(store_url):
    """The offset kept with a tail (``logs -f`` through the store prints what comes after it):
    kept as given, replaced with the tail, none where the tail was kept as lines."""
    store = open_store(store_url)
    try:
        job = store.submit("q", None, "n", ["x"], {"gpu": 0.25}, "alice")
        store.keep_log(job.id, "a\nb", complete=False, offset=5 << 32)  # past 32 bits
        assert (store.log_tail(job.id).text, store.log_tail(job.id).offset) == ("a\nb", 5 << 32)
        store.keep_log(job.id, "a\n", complete=True)
        assert store.log_tail(job.id).offset is None
    finally:
        store.close()


HOSTILE_NAME = "vi\x1b]0;owned\x07sion\nfractui: forged"


def _said_of(store: SqliteStore, read, caplog) -> str:
    """What a read of a damaged row says: the words of what it raised, logged or gave (as
    words: a container's repr would escape them for it)."""
    caplog.clear()
    try:
        got = read(store)
    except StoreError as err:
        got = str(err)
    return "|".join([str(got)] + [r.getMessage() for r in caplog.records])


@pytest.mark.parametrize("keep, damage, read", [
    (lambda s: s.keep_team_terms({"vision": TeamTerms(1.0, False, 1.0)}),
     "UPDATE team_terms SET team = ?, weight = -1",
     lambda s: "; ".join(s.team_terms().unread.values())),
    (lambda s: s.keep_team_holds({"vision": Hold(1, 0.5)}),
     "UPDATE team_holds SET team = ?, charge = 'lots'", lambda s: s.team_holds()),
    (lambda s: s.keep_waiting_bounds({"vision": 3}),
     "UPDATE waiting_bounds SET team = ?, max_waiting = 'lots'", lambda s: s.waiting_bounds()),
    (lambda s: s.cordon("gpu-a", 0, "cordon", "root", ""),
     "UPDATE cordons SET host = ?, mode = 'lots'", lambda s: "; ".join(c.why for c in s.cordons())),
    (lambda s: s.record_inventory("gpu-a", {}),
     "UPDATE inventory SET host = ?, seen_at = 'lots'", lambda s: s.inventory_since()),
    (lambda s: s.keep_lost_clocks({"gpu-a": 1.0}, {}),
     "UPDATE lost_clocks SET kind = ?", lambda s: s.holder_memory()),
], ids=["team_terms", "team_holds", "waiting_bounds", "cordons", "inventory", "lost_clocks"])
def test_a_damaged_rows_name_is_said_escaped(tmp_path, caplog, keep, damage, read):
    """A damaged row whose name (a team, a host) holds an escape and a line break: the words
    about it (the scheduler's log, ``teams``, a verb's error) gave the name as it was, so a
    row could retitle a terminal and forge a log line. The name is given as any other read
    from the store is: bare where printable, else quoted with its escapes."""
    path = str(tmp_path / "store.db")
    store = SqliteStore(path)
    try:
        keep(store)
        with sqlite3.connect(path) as db:
            db.execute(damage, (HOSTILE_NAME,))
        said = _said_of(store, read, caplog)
    finally:
        store.close()
    assert repr(HOSTILE_NAME) in said and said.isprintable(), said
