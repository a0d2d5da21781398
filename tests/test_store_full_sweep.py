"""``submit``, ``cancel`` and ``place`` on an SQLite store whose filesystem has a little room
left, at each amount of room its writes can run out at (a real 2 MiB tmpfs filled to leave so
many pages), the store closed (each verb makes its WAL again) or held open by another (its WAL
there): the verb is done, or it exits 1 with the store's words and its path and records
nothing; the store then passes SQLite's integrity check, and the verb asked again once there
is room is done, once. A first submit, which makes the store, likewise."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from contextlib import ExitStack, closing

import pytest

from fractui.store import SqliteStore, StoreFull, StoreUnavailable
from fractui.store.sqlite_file import translate
from fractui.store.model import Job
from tests.cli_run import closed_port, in_process, leaks
from tests.test_job_supervision import fill
from tests import test_store_damage
from tests.test_store_damage import no_room_said

PAGE = 4096
GPU = {"index": 0, "uuid": "GPU-a0", "name": "NVIDIA L4", "memory_mib": 23034,
       "mig_mode": False}
# each verb: its words after the config, what it answers once done, whether the jobs show it
# done (by number)
VERBS = {
    "submit": (["submit", "--queue", "q", "--key", "k-full", "--", "x"],
               "41 pending in queue q\n",
               lambda jobs: [j.id for j in jobs.values() if j.name == "x"] == [41]),
    "cancel": (["cancel", "1"], "1 cancelled\n", lambda jobs: jobs[1].state == "cancelled"),
    "place": (["place", "2", "gpu-a", "0", "--yes"],
              "2 placed on gpu-a gpu0; the scheduler launches it\n",
              lambda jobs: jobs[2].state == "placed"),
}
QUICK = (0, 24)
small_fs = test_store_damage.small_fs  # (2 MiB)  # no room at all; room for any of them


def made(path: str) -> None:
    """A store of 40 pending jobs, a lease holder, and gpu-a's GPU kept (for ``place``)."""
    store = SqliteStore(path)
    try:
        store.acquire_lease("sched", 3600)
        store.record_inventory("gpu-a", {"cpus": 8, "memory_mib": 65536, "gpus": [GPU]})
        for i in range(40):
            store.submit("q", None, "n%d" % i, ["python", "train.py", str(i)], {"gpu": 0.25},
                         "test")
    finally:
        store.close()


def jobs_in(path: str) -> dict[int, Job]:
    """The store's jobs by number."""
    store = SqliteStore(path)
    try:
        return {j.id: j for j in store.jobs()}
    finally:
        store.close()


@pytest.mark.parametrize("pages", [p if p in QUICK else pytest.param(p, marks=pytest.mark.slow)
                                   for p in range(25)])
@pytest.mark.parametrize("held", [False, True], ids=["closed", "held-open"])
@pytest.mark.parametrize("verb", sorted(VERBS))
def test_a_verb_on_a_full_store_is_done_or_said_and_done_once_with_room(
        tmp_path, small_fs, capfd, pages, held, verb):
    mount = small_fs
    with ExitStack() as stack:
        path = str(mount / "store.db")
        made(path)
        before = jobs_in(path)
        if held:  # as the lease holder holds it: its WAL stays
            stack.enter_context(closing(SqliteStore(path))).jobs()
        config = tmp_path / "config.toml"
        config.write_text('[store]\nurl = "sqlite://%s"\n[ssh]\nconnect_timeout = 1\n'
                          '[[queues]]\nname = "q"\ngpu = 0.25\n[[hosts]]\nname = "gpu-a"\n'
                          'host = "127.0.0.1"\nport = %d\n' % (path, closed_port()))
        argv, answer, done = VERBS[verb]
        filler = mount / "filler"
        fill(filler)
        os.truncate(filler, max(0, os.path.getsize(filler) - pages * PAGE))
        capfd.readouterr()
        code, out, err = in_process(capfd, ["--config", str(config)] + argv)
        assert not leaks(err), err
        if code == 0:
            assert out == answer, (out, err)
        else:
            assert (code, out) == (1, ""), (code, out, err)
            assert err.startswith("fractui: store %s: " % path) and no_room_said(err) and \
                err.count("\n") == 1, err
        filler.unlink()
        if code != 0:
            assert jobs_in(path) == before  # nothing half-written
        db = sqlite3.connect(path)
        try:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            db.close()
        again = in_process(capfd, ["--config", str(config)] + argv)
        assert again[:2] == (0, answer) and not leaks(again[2]), again
        after = jobs_in(path)
        assert done(after) and len(after) == 40 + (verb == "submit")



@pytest.mark.parametrize("pages", [p if p in (0, 64) else pytest.param(p, marks=pytest.mark.slow)
                                   for p in range(0, 65, 4)])
def test_a_first_submit_that_makes_the_store_on_a_full_disk_is_done_or_said_and_done_once(
        tmp_path, small_fs, capfd, pages):
    """No store yet: the first submit makes it (whole, beside it, then linked in) and records
    the job, or says why not, and the next, with room, finds a store that opens and records
    the job once."""
    path = str(small_fs / "fractui" / "store.db")
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n[[queues]]\nname = "q"\ngpu = 0.25\n'
                      % path)
    argv = ["--config", str(config), "submit", "--queue", "q", "--key", "k-first", "--", "x"]
    filler = small_fs / "filler"
    fill(filler)
    os.truncate(filler, max(0, os.path.getsize(filler) - pages * PAGE))
    code, out, err = in_process(capfd, argv)
    assert not leaks(err), err
    if code == 0:
        assert out == "1 pending in queue q\n", (out, err)
    else:
        assert (code, out) == (1, ""), (code, out, err)
        last = err.splitlines()[-1]
        assert last.startswith("fractui: store %s: " % path) and no_room_said(last), err
    filler.unlink()
    again = in_process(capfd, argv)
    assert again[:2] == (0, "1 pending in queue q\n") and not leaks(again[2]), again
    assert [j.name for j in jobs_in(path).values()] == ["x"]


@pytest.mark.parametrize("pages", range(0, 9, 2))
def test_a_first_submit_whose_temporary_folder_is_full_says_so_in_the_stores_words(
        tmp_path, small_fs, capfd, monkeypatch, pages):
    """The first submit makes the store in the system's temporary folder, then links it in:
    that folder full (with room where the store goes), it said SQLite's words alone ("cannot
    make a new store in /tmp: database or disk is full", as a store it could not reach). It
    says no space is left there, as a full store's folder is said; nothing is made."""
    monkeypatch.setattr(tempfile, "tempdir", str(small_fs))
    path = str(tmp_path / "fractui" / "store.db")
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n[[queues]]\nname = "q"\ngpu = 0.25\n'
                      % path)
    filler = small_fs / "filler"
    fill(filler)
    os.truncate(filler, max(0, os.path.getsize(filler) - pages * PAGE))
    code, out, err = in_process(capfd, ["--config", str(config), "submit", "--queue", "q",
                                        "--", "x"])
    assert not leaks(err), err
    assert code != 0 or pages > 0, out  # (no room at all: no store can be made)
    if code != 0:
        assert (code, out) == (1, ""), err
        last = err.splitlines()[-1]
        assert last.startswith("fractui: store %s: cannot make a new store in %s: " % (
            path, small_fs)) and no_room_said(last), err
        assert not os.path.exists(path)


def sqlite_error(words: str, name: str) -> sqlite3.OperationalError:
    """SQLite's error as the driver raises it: its words, and its code's name."""
    err = sqlite3.OperationalError(words)
    err.sqlite_errorname = name
    return err


def test_a_disk_io_error_says_no_room_only_as_read_just_after(small_fs):
    """SQLite keeps the cause of a "disk I/O error" to itself (its shared memory could not
    grow, a write failed): free space read after it may have changed since, so it is said as
    that reading, the likely cause, not as StoreFull's fact ("no space is left ..."), and the
    same error with room there says nothing of room. A store read full just after is a full
    store's error all the same (``test_a_store_read_full_after_an_io_error_is_never_said_
    damaged_nor_waited_for``). SQLite's own "database or disk is full" is the fact, whenever
    it is read."""
    path = str(small_fs / "store.db")
    ioerr = sqlite_error("disk I/O error", "SQLITE_IOERR_SHMSIZE")
    full = sqlite_error("database or disk is full", "SQLITE_FULL")
    unsaid = "store %s: disk I/O error" % path
    fill(small_fs / "filler")
    said = translate(path, ioerr)
    assert type(said) is StoreFull and str(said) == unsaid + (
        " (its filesystem, read just after, has no room left: the likely cause): nothing was "
        "recorded")
    assert type(translate(path, full)) is StoreFull
    (small_fs / "filler").unlink()
    said = translate(path, ioerr)
    assert type(said) is StoreUnavailable and str(said) == unsaid
    assert type(translate(path, full)) is StoreFull


def test_a_store_read_full_after_an_io_error_is_never_said_damaged_nor_waited_for(
        small_fs, monkeypatch):
    """A migration an I/O error cuts on a filesystem read full just after is the full
    store's error, not damage ("restore it from a backup, or move it away"); a verb waiting
    for its store through an outage (``submit --wait``, ``logs -f``) ends at it, as at
    SQLITE_FULL, rather than waiting for room that only an admin's hand brings back."""
    from fractui.store import sqlite as backend
    from fractui.store_outage import Outage
    path = str(small_fs / "store.db")
    SqliteStore(path).close()
    fill(small_fs / "filler")

    def cut(db, owner):
        raise sqlite_error("disk I/O error", "SQLITE_IOERR_SHMSIZE")
    with monkeypatch.context() as patched:
        patched.setattr(backend, "_migrate", cut)
        patched.setattr(backend.SqliteDialect, "up_to_date", lambda self, db: False)
        with pytest.raises(StoreFull) as err:
            SqliteStore(path)
    assert "has no room left: the likely cause" in str(err.value), err.value
    tries = []

    def read():
        tries.append(1)
        if len(tries) > 3:
            raise AssertionError("still waiting for a full store after 3 tries")
        raise translate(path, sqlite_error("disk I/O error", "SQLITE_IOERR_SHMSIZE"))
    with pytest.raises(StoreFull):
        Outage("job 1 goes on meanwhile", "waiting for job 1 to end").through(read)
    assert len(tries) == 1