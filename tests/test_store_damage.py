"""A damaged store is refused, never overwritten and never taken for a new one: every verb that
reads or writes the store, the headless scheduler and the TUI's start say what is wrong and
where, exit 1, no traceback. Empty, truncated, corrupt, foreign and newer files are made from a
real store; a full store sits on a real small tmpfs; read-only stores are tried as a plain user
(root ignores modes) and on a read-only mount."""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Union

import pytest

from fractui.config import QueueConfig, StoreSettings
from fractui.fleet.fleet import Fleet
from fractui.scheduler import Scheduler
from fractui.store import SqliteStore, sqlite_url
from fractui.store.intents import Asker, ask_stop
from fractui.store.sql import migrations, statements
from tests import as_user, localfleet
from tests.conftest import REPO
from tests.localfleet import logged, wait
from tests.test_scheduler_lanes import sent_and_waiting, stalled
from tests.sshd import free_port

pytestmark = pytest.mark.slow  # a fault suite: README, "the slow fault suites"

local_fleet = localfleet.local_fleet

# Every verb that opens the store, the scheduler, and the TUI (no verb); job 1 exists in it.
VERBS: List[Sequence[str]] = [
    ("jobs",), ("jobs", "--all", "--json"), ("submit", "--queue", "half", "--", "x"),
    ("cancel", "1"), ("requeue", "1"), ("preempt", "1"), ("place", "1", "gpu-a", "0"),
    ("audit",), ("audit", "1"), ("logs", "1"), ("cordon", "gpu-a"), ("uncordon", "gpu-a"),
    ("scheduler",), (),
]
# Every verb opens the store through the same check, so most kinds try a few: a read, a
# write, the scheduler and the TUI.
SOME = [("jobs",), ("submit", "--queue", "half", "--", "x"), ("cancel", "1"), ("scheduler",), ()]
MARK = b"sleeper-number-one"


def make_store(path: Path) -> bytes:
    """A real store with a few jobs (job 1 runs MARK), closed: its bytes, all in the file."""
    store = SqliteStore(str(path))
    store.submit("half", None, "first", [MARK.decode(), "--lr", "0.1"], {"gpu": 0.5}, "test")
    for i in range(40):
        store.submit("half", None, "n%d" % i, ["python", "train.py", str(i)], {"gpu": 0.5},
                     "test")
    store.close()
    assert not os.path.exists(str(path) + "-wal")
    return path.read_bytes()


def write_config(folder: Path, store: Path) -> Path:
    """A config whose one host is never reached (a closed port): the store fails first."""
    path = folder / "config.toml"
    path.write_text('[scheduler]\nstore = "%s"\n[ssh]\nconnect_timeout = 1\n'
                    '[[hosts]]\nname = "gpu-a"\nhost = "127.0.0.1"\nport = %d\n'
                    '[[queues]]\nname = "half"\ngpu = 0.5\n' % (store, free_port()))
    path.chmod(0o644)
    return path


def fractui(config: Path, verb: Sequence[str], user: str = "") -> subprocess.CompletedProcess:
    """``fractui --config CONFIG VERB...``, as root or as ``user`` (tests.as_user)."""
    if user:
        return as_user.run(user, ["--config", str(config), *verb])
    return subprocess.run([sys.executable, "-m", "fractui", "--config", str(config), *verb],
                          capture_output=True, text=True, cwd=REPO, timeout=60,
                          stdin=subprocess.DEVNULL)


# The store's words for no room: the fact where SQLite or the system said it, else (SQLite's
# "disk I/O error", whose cause it keeps) the room as read just after, the likely cause
FULL_FACT = "no space is left on the filesystem that holds it ("
FULL_CAUSES = ("database or disk is full", "No space left on device")
ROOM_READ = "disk I/O error (its filesystem, read just after, has no room left: the likely cause)"


def no_room_said(line: str) -> bool:
    """Whether a store's error ``line`` says its filesystem has no room: as the fact only
    where SQLite or the system said so."""
    if FULL_FACT in line:
        return any(cause in line for cause in FULL_CAUSES) and "): nothing was recorded" in line
    return ROOM_READ in line


def refused_by_every_verb(config: Path, store: Path, says: Union[str, Callable[[str], bool]],
                          verbs=VERBS, user: str = "") -> int:
    """Each verb exits 1, its last words one line naming the store and what it found (words
    in it, or a test of it), no traceback; returns how many verbs were tried. (A scheduler
    that opened the store before finding a damaged job has said its start on stdout and
    logged the stop first.)"""
    found = says if callable(says) else lambda last: says in last
    for verb in verbs:
        done = fractui(config, verb, user)
        assert done.returncode == 1 and "Traceback" not in done.stderr, (verb, done)
        assert done.stdout == "" or verb == ("scheduler",), (verb, done)
        last = done.stderr.splitlines()[-1]
        assert last.startswith("fractui: store %s: " % store) and found(last), (verb, last)
        assert len(done.stderr.splitlines()) == 1 or verb == ("scheduler",), (verb, done)
    return len(verbs)


def _truncated(data: bytes) -> bytes:
    return data[:len(data) // 2]


def _btree_zeroed(data: bytes) -> bytes:
    """The b-tree header and cells of page 2 (the meta table) overwritten with zeros."""
    page = int.from_bytes(data[16:18], "big")
    return data[:page + 8] + bytes(2000) + data[page + 2008:]


def _foreign(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (name TEXT)")
    db.execute("INSERT INTO users VALUES ('ann')")
    db.commit()
    db.close()


def _version(number: int) -> Callable[[Path], None]:
    """The store's schema version set to ``number``, its tables left as they are: a newer
    fractui's (99), one set back by hand or a file half restored (3), none (-1)."""
    def set_version(path: Path) -> None:
        db = sqlite3.connect(path)
        db.execute("PRAGMA user_version = %d" % number)
        db.commit()
        db.close()
    return set_version


# Damage found in a job's row once the store is open: what reads job 1 trips on it (a new job
# could still be added, and the TUI keeps its fleet view, saying it in its queue panel).
ROW = [("jobs",), ("cancel", "1"), ("requeue", "1"), ("place", "1", "gpu-a", "0"),
       ("logs", "1"), ("scheduler",)]

# kind -> (damage: the store's bytes -> new bytes, or a function of the path; what is said;
# the verbs tried)
DAMAGE: Dict[str, tuple] = {
    "empty": (lambda data: b"", "is empty (0 bytes)", VERBS),
    "truncated-in-header": (lambda data: data[:60], "is truncated: 60 bytes", SOME),
    "truncated-to-a-byte": (lambda data: data[:1], "is truncated: 1 byte, shorter than an "
                            "SQLite header", [("jobs",)]),
    "truncated": (_truncated, "is truncated: ", SOME),
    "corrupt-btree": (_btree_zeroed, "is damaged: SQLite's check finds: ", VERBS),
    "corrupt-row-bytes": (lambda data: data.replace(MARK, b"\xff" * len(MARK)),
                          "is damaged: ", ROW),
    "corrupt-row-json": (lambda data: data.replace(MARK, b'"' * len(MARK)),
                         "is damaged: job 1 holds ", ROW),
    "not-sqlite": (lambda data: b"PK\x03\x04" + data[4:], "is not an SQLite database", VERBS),
    # a table's name in the schema no longer UTF-8: SQLite's words quote it (Python's sqlite3
    # raised UnicodeDecodeError for them, said as fractui's internal error)
    "schema-not-utf8": (lambda data: data.replace(b"tablechanges", b"table\x80hanges"),
                        "is damaged: SQLite says 'malformed database schema (\\x80hanges)'",
                        SOME),
    # a column's name in the schema changed: SQLite's check finds nothing, each read of the
    # table failed on the name (IndexError, said as fractui's internal error)
    "schema-column": (lambda data: data.replace(b"updated_at   REAL", b"u_dated_at   REAL"),
                      "is damaged: its table jobs has no column 'updated_at'; it has "
                      "'u_dated_at' instead", SOME),
    "foreign-sqlite": (_foreign, "is an SQLite database but not a fractui store (its tables: "
                                 "users)", SOME),
    "newer-schema": (_version(99), "was written by a newer fractui (schema version 99", SOME),
    "older-schema": (_version(3), "is damaged: its schema version is 3, but its tables are not "
                                  "that version's: SQLite says 'duplicate column name: ", SOME),
    "negative-schema": (_version(-1), "is damaged: its schema version is -1, which no fractui "
                                      "writes", SOME),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_store_is_refused_by_every_verb_and_left_as_it_was(tmp_path, kind):
    store = tmp_path / "store.db"
    data = make_store(store)
    damage, says, verbs = DAMAGE[kind]
    if kind in ("foreign-sqlite",):
        store.unlink()
        damage(store)
    elif kind.endswith("-schema"):
        damage(store)
    else:
        store.write_bytes(damage(data))
    before = store.read_bytes()
    config = write_config(tmp_path, store)
    refused_by_every_verb(config, store, says, verbs)
    if kind.startswith("corrupt-row"):  # the scheduler took the lease before it read job 1
        assert damage(MARK) in store.read_bytes()  # but the damaged job is as it was
    else:
        assert store.read_bytes() == before  # never overwritten, never started afresh
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml", "store.db"]


def test_only_a_path_where_nothing_is_becomes_a_new_store_0600_in_a_0700_dir(tmp_path):
    store = tmp_path / "new" / "deeper" / "store.db"
    config = write_config(tmp_path, store)
    old = os.umask(0o022)
    try:
        done = fractui(config, ("submit", "--queue", "half", "--", "x"))
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    for folder in (tmp_path / "new", tmp_path / "new" / "deeper"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    opened = SqliteStore(str(store))  # while open, SQLite's -wal and -shm files exist
    try:
        for side in ("-wal", "-shm"):
            assert stat.S_IMODE(os.stat(str(store) + side).st_mode) == 0o600, side
        assert [j.argv for j in opened.jobs()] == [("x",)]
    finally:
        opened.close()
    assert sorted(os.listdir(store.parent)) == ["store.db"]  # no private file left behind


@pytest.mark.parametrize("side", ["", "-wal"])
def test_a_store_or_wal_linked_to_a_device_all_may_write_is_said_as_what_it_is(tmp_path, side):
    """/dev/null is writable by all (0666), and no one's to change: a store, or its -wal, that
    leads there is said to be no file, never told to chmod the device."""
    store = tmp_path / "store.db"
    make_store(store)
    if side:
        os.symlink("/dev/null", str(store) + side)
    else:
        store.unlink()
        os.symlink("/dev/zero", store)
    done = fractui(write_config(tmp_path, store), ("jobs",))
    assert done.returncode == 1 and "chmod" not in done.stderr, done.stderr
    assert done.stderr == "fractui: store %s: its %sfile %s is not a file but a character " \
        "device\n" % (store, side + " " if side else "",
                      "%s-wal (a link to /dev/null)" % store if side else "/dev/zero"), done.stderr
    assert os.readlink(str(store) + side)  # left as it was


def test_a_store_path_that_is_not_utf8_is_said_so_never_damaged(tmp_path):
    """$XDG_STATE_HOME may hold any bytes; SQLite keeps a file's name as UTF-8, and a store
    made there was said damaged at its first read (restore it from a backup...)."""
    state = os.fsdecode(os.fsencode(str(tmp_path)) + b"/st\xff")
    config = tmp_path / "config.toml"
    config.write_text('[[queues]]\nname = "half"\ngpu = 0.5\n')
    done = subprocess.run([sys.executable, "-m", "fractui", "--config", str(config), "submit",
                           "--queue", "half", "--", "x"], capture_output=True, text=True,
                          cwd=REPO, timeout=60, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, XDG_STATE_HOME=state))
    assert (done.returncode, done.stdout, done.stderr) == (1, "", (
        "fractui: store '%s/st\\xff/fractui/store.db': its path is not UTF-8 text, which "
        "SQLite needs of a file's name: name the store by a path that is ([store] url), or "
        "set $XDG_STATE_HOME to one\n" % tmp_path))
    assert not os.path.exists(os.path.join(state, "fractui", "store.db"))


@pytest.fixture
def small_fs(tmp_path):
    """A real 2 MiB tmpfs (the tests run as root), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)],
                   check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError as err:
        assert err.errno == errno.ENOSPC, err  # the filesystem is full, as wanted
    finally:
        os.close(fd)
    return filler


def _fill_past_the_wal(store: Path, folder: Path) -> Path:
    """Fills ``folder`` once the store's WAL is checkpointed and cut to nothing: SQLite reuses a
    WAL's room, so only then must the next write of the store grow a file, and fail."""
    db = sqlite3.connect(str(store))
    try:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0, "a reader kept the WAL from being cut"
    finally:
        db.close()
    return _fill(folder)


def test_a_full_store_refuses_writes_says_so_and_loses_nothing(tmp_path, small_fs):
    store = small_fs / "store.db"
    make_store(store)
    config = write_config(tmp_path, store)
    opened = SqliteStore(str(store))
    kept = [j.record() for j in opened.jobs()]
    opened.close()  # its -wal and -shm files go: a new connection must make them again
    filler = _fill(small_fs)
    refused_by_every_verb(config, store, no_room_said, SOME)
    filler.unlink()
    again = SqliteStore(str(store))
    try:
        assert [j.record() for j in again.jobs()] == kept  # nothing lost, nothing half-written
    finally:
        again.close()


def test_a_store_on_a_read_only_mount_is_refused(tmp_path, small_fs):
    store = small_fs / "store.db"
    data = make_store(store)
    config = write_config(tmp_path, store)
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    refused_by_every_verb(config, store, "is on a read-only filesystem", SOME)
    assert store.read_bytes() == data


@pytest.fixture
def plain_dir():
    """A directory a plain user (nobody) can reach, removed afterwards; tmp_path is root's."""
    if shutil.which("sudo") is None:
        pytest.fail("these tests need sudo (.ci/run installs it)")
    folder = Path(tempfile.mkdtemp(prefix="fractui-ro-"))
    folder.chmod(0o755)
    yield folder
    for root, dirs, _files in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
    shutil.rmtree(folder)


def _as_nobody(folder: Path, store_mode: int, dir_mode: int) -> tuple:
    store_dir = folder / "state"
    store_dir.mkdir()
    store = store_dir / "store.db"
    data = make_store(store)
    config = write_config(folder, store)
    for path in (store_dir, store):
        shutil.chown(path, "nobody", "nogroup")
    store.chmod(store_mode)
    store_dir.chmod(dir_mode)
    return store, config, data


@pytest.mark.parametrize("store_mode,dir_mode,says", [
    (0o444, 0o700, "is read-only for nobody (mode 0444, owner nobody)"),
    (0o600, 0o555, "is not writable by nobody (mode 0555, owner nobody)"),
])
def test_a_read_only_store_is_refused_for_a_plain_user(plain_dir, store_mode, dir_mode, says):
    store, config, data = _as_nobody(plain_dir, store_mode, dir_mode)
    refused_by_every_verb(config, store, says, SOME, user="nobody")
    assert store.read_bytes() == data
    assert sorted(os.listdir(store.parent)) == ["store.db"]


def test_a_scheduler_whose_store_fills_up_says_so_once_and_goes_on_when_there_is_room(
        local_fleet, small_fs):
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="half", gpu=0.5)], lease_s=3.0)
    path = small_fs / "store.db"
    f.config = replace(f.config, store=StoreSettings(sqlite_url(str(path))))
    store = SqliteStore(str(path))
    run = f.scheduler_process("headless")
    try:
        wait(lambda: store.lease_holder() is not None, f.states, alive=run)
        filler = _fill(small_fs)
        # its passes fail from now on: it cannot renew its lease, which runs out
        wait(lambda: store.lease_holder() is None, f.states, alive=run)
        filler.unlink()
        job = store.submit("half", None, "after", ["sleep", "600"], {"gpu": 0.5}, "test")
        wait(lambda: store.get(job.id).state == "running", f.states, alive=run)
    finally:
        run.terminate()
        _, err = run.communicate(timeout=60)
        store.close()
    assert run.returncode == 0, err
    assert "Traceback" not in err
    full = [line for line in logged(err) if "no space is left" in line]
    assert len(full) == 1 and full[0].startswith("store %s: no space is left on the filesystem "
                                                 "that holds it" % path), err
    assert full[0].endswith("; the scheduler tries again every pass"), err
    assert err.count("the store answers the scheduler again") == 1, err  # once it has room


def test_a_host_that_returns_while_the_store_is_full_is_fenced_and_online(local_fleet,
                                                                            small_fs):
    """A host comes back while the store cannot be written: its stale copy is stopped all the
    same, and the host counts as online — the store's trouble is said by the scheduler, never
    shown as the host's error. Once there is room, a pass drops the copy's record."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="half", gpu=0.5)], host_lost_s=1.0)
    config = replace(f.config, store=StoreSettings(sqlite_url(str(small_fs / "store.db"))))
    store = SqliteStore(str(small_fs / "store.db"))
    job = store.submit("half", None, "train", localfleet.sleeper(600), {"gpu": 0.5}, "test")
    fleets: List[Fleet] = []

    def scheduler(hosts, name: str, start: bool = True) -> Scheduler:
        fleets.append(Fleet(replace(config, hosts=hosts), reconnect_max_s=0.5))
        if start:
            fleets[-1].start().wait_settled(60)
        return Scheduler(replace(config, hosts=hosts), store, fleets[-1], name=name)

    def until(sched: Scheduler, check) -> None:
        wait(lambda: sched.step() and check(), lambda: store.jobs())

    try:
        first = scheduler(config.hosts, "first")
        until(first, lambda: store.get(job.id).state == "running")
        old_key = store.get(job.id).key(store.uid)
        first.stop()
        # restarted on a config without the host: its job is lost, its copy recorded stale
        second = scheduler((), "second")
        until(second, lambda: [s.key for s in store.stale()] == [old_key])
        second.stop()
        # and again with the host back: the lease is taken, then the disk fills up
        third = scheduler(config.hosts, "third", start=False)
        assert third.step()
        filler = _fill(small_fs)
        fleets[-1].start().wait_settled(60)
        session = fleets[-1].session("gpu-a")
        assert (session.status.state, session.status.error) == ("online", None)
        [copy] = [j for j in session.call("job.list")["jobs"] if j["key"] == old_key]
        assert copy["state"] == "killed"
        assert [s.key for s in store.stale()] == [old_key]  # nothing could be written
        filler.unlink()
        until(third, lambda: store.stale() == [])
        third.stop()
    finally:
        for fleet in fleets:
            fleet.stop()
        store.close()


def test_a_lane_whose_store_fills_up_makes_no_call_and_says_so(local_fleet, small_fs,
                                                                monkeypatch, caplog):
    """Between two of a lane's calls the lease is due to be renewed, and the store is full: the
    second call is not made (the lease is not proven held), the store's words are logged, and
    nothing escapes the lane's thread. Once there is room, the call waiting is made."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.25)], lease_s=60.0)
    config = replace(f.config, store=StoreSettings(sqlite_url(str(small_fs / "store.db"))))
    now = [1000.0]  # the scheduler's and the store's clock: a renewal falls due when told
    store = SqliteStore(str(small_fs / "store.db"), clock=lambda: now[0])
    escaped: list = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    sched = Scheduler(config, store, f.fleet, name="test", clock=lambda: now[0],
                      ticks=lambda: now[0])
    filler = None
    try:
        jobs = [store.submit("q", None, n, localfleet.sleeper(600), {"gpu": 0.25}, "test")
                for n in ("first", "second")]
        wait(lambda: sched.step() and sched.settle() and
             {store.get(j.id).state for j in jobs} == {"running"}, lambda: store.jobs())
        for job in jobs:
            ask_stop(store, store.get(job.id), "cancel", Asker("test"))
        with stalled(f, "gpu-a"):
            for job in map(store.get, (j.id for j in jobs)):  # both stops on gpu-a's lane
                sched.executor.stop("gpu-a", job.agent_job, job.key(store.uid), job.reason)
            sched.lanes.start()  # the first sent, the second queued behind it
            wait(lambda: sent_and_waiting(f, "gpu-a"), lambda: store.jobs())
            filler = _fill_past_the_wal(small_fs / "store.db", small_fs)
            now[0] += 21  # past a third of the lease: the lane renews before its next call
        assert sched.settle()
        assert escaped == []
        said = [r.getMessage() for r in caplog.records if r.name == "fractui.scheduler"]
        assert any("no space is left" in m and "no call is made" in m for m in said), said
        keys = [store.get(j.id).key(store.uid) for j in jobs]

        def states() -> list:
            found = {j["key"]: j["state"] for j in f.agent_jobs()}
            return [found[k] for k in keys]

        wait(lambda: states()[0] == "killed", states)  # the stop that was sent
        assert states() == ["killed", "running"]  # the one after it never was
        filler.unlink()
        filler = None
        wait(lambda: sched.step() and sched.settle() and
             {store.get(j.id).state for j in jobs} == {"cancelled"}, lambda: store.jobs())
    finally:
        if filler is not None:
            filler.unlink()
        sched.stop()
        store.close()


def test_a_launch_answered_while_the_store_is_full_is_recorded_once_there_is_room(
        local_fleet, small_fs, monkeypatch, caplog):
    """The store fills (a real tmpfs, past the WAL) while a launch is on its way to the agent,
    which starts the job and answers: the answer cannot be recorded, which is logged; nothing
    escapes the lane's thread, and the job stays placed in the store while it runs on the
    host. Once there is room a pass launches it again by its key, and the agent's answer is
    the same job: one copy on the host, recorded running with the agent's start, one launch
    in the audit."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.25)], lease_s=60.0)
    path = small_fs / "store.db"
    config = replace(f.config, store=StoreSettings(sqlite_url(str(path))))
    store = SqliteStore(str(path))
    escaped: list = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    sched = Scheduler(config, store, f.fleet, name="test")
    filler = None
    try:
        job = store.submit("q", None, "first", localfleet.sleeper(600), {"gpu": 0.25}, "test")
        with stalled(f, "gpu-a"):
            assert sched.step()  # decided, and its launch sent
            wait(lambda: sent_and_waiting(f, "gpu-a"), lambda: store.jobs())
            filler = _fill_past_the_wal(path, small_fs)
        assert sched.settle()  # the agent wakes and answers; the store takes nothing
        assert escaped == []
        said = [r.getMessage() for r in caplog.records if r.name == "fractui.scheduler"]
        assert len(said) == 1 and "no space is left" in said[0], said
        key = store.get(job.id).key(store.uid)
        on_host = [r for r in f.agent_jobs() if r["key"] == key]
        assert [r["state"] for r in on_host] == ["running"]
        assert store.get(job.id).state == "placed"
        filler.unlink()
        filler = None
        wait(lambda: sched.step() and sched.settle() and store.get(job.id).state == "running",
             lambda: store.jobs())
        again = [r for r in f.agent_jobs() if r["key"] == key]
        assert [(r["id"], r["state"]) for r in again] == [(on_host[0]["id"], "running")]
        ran = store.get(job.id)
        assert (ran.agent_job, ran.started_at, ran.attempt) == (
            on_host[0]["id"], pytest.approx(on_host[0]["started_at"]), 0)
        assert [e.action for e in store.audit_log(job.id)].count("launch") == 1
    finally:
        if filler is not None:
            filler.unlink()
        sched.stop()
        store.close()


# A value of another kind than fractui writes, put in a column by hand (SQLite keeps any):
# (what is written, what the refusal says, the verbs that read that row).
WRONG_KIND = {
    "job-request": ("UPDATE jobs SET request = '[1]' WHERE id = 1",
                    "is damaged: job 1's request is '[1]', not an object", ROW),
    "job-request-value": ("""UPDATE jobs SET request = '{"gpu": "lots"}' WHERE id = 1""",
                          "is damaged: job 1's request's gpu is 'lots'", [("scheduler",)]),
    "job-time": ("UPDATE jobs SET submitted_at = 'yesterday' WHERE id = 1",
                 "is damaged: job 1's submitted_at is 'yesterday'", ROW),
    "job-state": ("UPDATE jobs SET state = 'zombie' WHERE id = 1",
                  "is damaged: job 1's state is 'zombie', not one of fractui's",
                  [("jobs", "--all")]),
    "job-name": ("UPDATE jobs SET name = x'ff00' WHERE id = 1",
                 "is damaged: job 1's name is b'\\xff\\x00'", [("jobs", "--all", "--json")]),
    "lease": ("INSERT OR REPLACE INTO lease (name, holder, expires_at, epoch) "
              "VALUES ('scheduler', 'old', 'soon', 0)",
              "is damaged: the scheduler lease's expires_at is 'soon'", [("scheduler",)]),
    "audit": ("UPDATE audit SET time = 't' WHERE id = 1",
              "is damaged: audit entry 1's time is 't'", [("audit",)]),
    # a job's number in digits int() reads otherwise ("²" it refuses; "١" is 1) or too many
    "lost-clock": ("INSERT INTO lost_clocks (kind, name, since) VALUES ('job', '\u00b2', 0)",
                   "is damaged: a lost-host clock is kept for job '\u00b2'", [("scheduler",)]),
    "lost-clock-long": ("INSERT INTO lost_clocks (kind, name, since) VALUES ('job', '%s', 0)"
                        % ("9" * 5000), "is damaged: a lost-host clock is kept for job '999",
                        [("scheduler",)]),
}


@pytest.mark.parametrize("kind", sorted(WRONG_KIND))
def test_a_value_of_another_kind_is_said_as_damage_where_it_is_read(tmp_path, kind):
    """Read as fractui wrote it, such a value failed later: the scheduler's every pass (no
    job placed, ever), or a verb as an internal error."""
    store = tmp_path / "store.db"
    make_store(store)
    written, says, verbs = WRONG_KIND[kind]
    db = sqlite3.connect(store)
    db.execute(written)
    db.commit()
    db.close()
    refused_by_every_verb(write_config(tmp_path, store), store, says, verbs)


# The store's id (meta.uid), every agent job's key is made of, lost or damaged by hand.
STORE_ID = {
    "gone": ("DELETE FROM meta WHERE key = 'uid'", "it has no store id (meta.uid), which the "
             "keys of its 41 jobs on the hosts hold; fractui will not start", VERBS),
    "key": ("UPDATE meta SET key = NULL WHERE key = 'uid'", "it has no store id (meta.uid)",
            SOME),
    "value": ("UPDATE meta SET value = 'x y' WHERE key = 'uid'",
              "its store id (meta.uid) is 'x y', not the 8 hex digits fractui writes", SOME),
    "bytes": ("UPDATE meta SET value = x'ff00' WHERE key = 'uid'",
              "its store id (meta.uid)'s value is b'\\xff\\x00', not what fractui writes there",
              SOME),
}


@pytest.mark.parametrize("kind", sorted(STORE_ID))
def test_a_store_whose_id_is_lost_is_refused_never_given_another(tmp_path, kind):
    """Read as a store not yet given one, such a store was given a new id by the first verb
    that opened it, a read too: every job on the hosts was then under another store's key."""
    store = tmp_path / "store.db"
    make_store(store)
    written, says, verbs = STORE_ID[kind]
    db = sqlite3.connect(store)
    db.execute(written)
    db.commit()
    db.close()
    before = store.read_bytes()
    refused_by_every_verb(write_config(tmp_path, store), store, "is damaged: " + says, verbs)
    assert store.read_bytes() == before


def test_a_store_a_fractui_of_before_was_stopped_in_making_says_it_holds_no_job_and_the_way_on(
        tmp_path):
    """A fractui of before 2026-12-07 made a store's file (its schema, of 0023) and gave it
    its id at its first open: one stopped between them left a store with no id and no job,
    which fractui now refuses as damaged, and gives no id. It says so, with the command that
    moves it away, which loses nothing: the next verb makes a new store in its place."""
    store = tmp_path / "store.db"
    db = sqlite3.connect(store, isolation_level=None)
    db.create_function("fractui_run_as", 1, lambda _submitted_by: None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("BEGIN IMMEDIATE")
    for number, sql in migrations("sqlite"):
        if number <= 23:
            for statement in statements(sql):
                db.execute(statement)
            db.execute("PRAGMA user_version = %d" % number)
    db.execute("COMMIT")
    db.close()
    store.chmod(0o600)
    before = store.read_bytes()
    config = write_config(tmp_path, store)
    move = "mv -T %s %s.unfinished" % (store, store)
    # -T: a link another user put at the name is replaced, never followed into a folder
    os.symlink(tmp_path, str(store) + ".unfinished")
    refused_by_every_verb(config, store, "is unfinished: it has no store id (meta.uid) and holds "
                          "no jobs, as a fractui of before 2026-12-07 left a store it was "
                          "stopped in making (the id was given at its first open); fractui "
                          "gives none after, but moving it away loses no job, and the next "
                          "fractui makes a new store in its place: " + move, SOME)
    assert store.read_bytes() == before
    subprocess.run(shlex.split(move), check=True)
    done = fractui(config, ("submit", "--queue", "half", "--", "x"))
    assert done.returncode == 0, done
    assert Path(str(store) + ".unfinished").read_bytes() == before


def test_a_store_in_use_that_lost_its_id_before_any_job_is_not_said_unfinished(tmp_path):
    """No job is not enough to call a store one a fractui of before was stopped in making:
    one whose hosts were drained before any submit (its cordon, its audit entry) that lost
    its id was said unfinished, with the mv that "loses no job", after which the next store
    knew no drain and its jobs went to the drained host. It is said damaged, as one with
    jobs, with no mv."""
    store = tmp_path / "store.db"
    made = SqliteStore(str(store))
    made.cordon("gpu-a", None, "drain", "ops@head", "a fan failing")
    made.close()
    db = sqlite3.connect(store)
    db.execute("DELETE FROM meta WHERE key = 'uid'")
    db.commit()
    db.close()
    before = store.read_bytes()
    refused_by_every_verb(write_config(tmp_path, store), store, "is damaged: it has no store "
                          "id (meta.uid); it holds no job, but what a store in use keeps (its "
                          "audit, cordons or scheduler's lease), which a new store would not "
                          "have; fractui will not start", SOME)
    assert store.read_bytes() == before
