"""The files fractui keeps for itself on the admin's machine (fractui/state_files.py): the
fleet's debug log and the TUI's scheduler log are never files another local user made, nor in
a folder where one could put theirs; the SQLite store is never one any local user may write or
could have put there, nor one they may read."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import shlex
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Tuple

import pytest

from fractui.cli import main
from fractui.fleet import sshlog
from fractui.fleet.transport.base import _HAVE
from fractui.scheduler.child import ChildScheduler
from fractui.store import SqliteStore, StoreError, sqlite_file
from fractui.store.base import StoreExposed
from remote_agent.daemon.trust import UnsafePath, python_code
from tests.conftest import REPO, stop_host
from tests.test_store_damage import fractui, plain_dir, write_config  # noqa: F401 - a fixture

OTHER_UID = 54321  # a uid with no account: "another user" root hands files to


def _attacked(tmp_path, attack: str):
    """A state folder (0700, ours), with the attack made on it: (the log's path, what the
    refusal says)."""
    folder = tmp_path / "fractui"
    folder.mkdir(mode=0o700)
    log = folder / "the.log"
    if attack == "log of another user":
        log.write_text("")
        os.chown(log, OTHER_UID, OTHER_UID)
        log.chmod(0o666)
        return log, "it is owned by uid %d, not by uid %d (the user fractui runs as)" % (
            OTHER_UID, os.getuid())
    if attack == "a symlink":
        log.symlink_to(tmp_path / "elsewhere")
        return log, "it is a symlink"
    folder.chmod(0o777)
    return log, "%s is writable by its group and all users (mode 0777)" % folder


ATTACKS = ["log of another user", "a symlink", "folder writable by all"]


@pytest.mark.parametrize("attack", ATTACKS)
def test_the_debug_log_is_never_one_another_user_made_or_can_replace(monkeypatch, tmp_path,
                                                                     attack):
    """It holds what hosts and paramiko said: refused, the failure kept (not printed), and the
    link still keeps what paramiko said."""
    log, why = _attacked(tmp_path, attack)
    monkeypatch.setattr(sshlog, "LOG_FILE", log.name)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    link = sshlog.LinkLog()
    sshlog.watch(threading.current_thread(), link)
    try:
        logging.getLogger("paramiko.transport").error("Socket exception: a secret (104)")
    finally:
        sshlog.keeper().links.pop(threading.current_thread(), None)
    assert link.said() == "Socket exception: a secret (104)"
    failure = sshlog.keeper().failure
    assert failure is not None and why in failure, failure
    assert not (tmp_path / "elsewhere").exists()
    assert attack == "a symlink" or not log.exists() or log.read_text() == ""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "fresh"))  # (the keeper is shared)
    logging.getLogger("paramiko.transport").error("and on")  # a path of ours: kept again
    assert sshlog.keeper().failure is None
    assert "and on" in (tmp_path / "fresh" / "fractui" / log.name).read_text()


def test_a_debug_log_that_failed_is_tried_again_and_says_what_it_lacks(monkeypatch, tmp_path):
    """A debug log refused once (a symlink in its place) is tried again, every RETRY_S: once
    the symlink is gone, the next record is kept, after one saying that records were lost and
    why. Before: the first failure was kept for as long as the process ran (weeks, for a
    scheduler), and nothing the fleet said was kept after it."""
    log, why = _attacked(tmp_path, "a symlink")
    monkeypatch.setattr(sshlog, "LOG_FILE", log.name)
    monkeypatch.setattr(sshlog, "RETRY_S", 0.0)  # every record tries again
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    sshlog.keeper()  # (made on first use: a host's session makes it)
    fleet = logging.getLogger("fractui.fleet")
    fleet.error("lost: the log is refused")
    assert why in (sshlog.keeper().failure or "")
    log.unlink()  # the admin took the symlink away
    fleet.error("kept again")
    assert sshlog.keeper().failure is None
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and lines[1].endswith("kept again"), lines
    assert "records were lost: the debug log could not be written (%s: " % log in lines[0]
    assert why in lines[0] and "lost: the log is refused" not in lines[0]


@pytest.mark.parametrize("attack", ATTACKS)
def test_the_tuis_scheduler_log_is_never_one_another_user_made_or_can_replace(tmp_path,
                                                                             attack):
    log, why = _attacked(tmp_path, attack)
    child = ChildScheduler(str(tmp_path / "config.toml"), "me (tui)", str(log))
    with pytest.raises(UnsafePath) as err:
        child.start()
    assert why in str(err.value) and child.proc is None, str(err.value)


@pytest.mark.parametrize("hosts", [0, 1])
def test_the_tui_refuses_to_start_its_scheduler_on_such_a_log_saying_why(tmp_path, hosts):
    """A refusal of the user's, exit 1 with its words, not an internal error: with a host in
    the config too, whose connection, never started, is taken down after the refusal (it
    raised "cannot join thread before it is started" there)."""
    log, why = _attacked(tmp_path, "log of another user")
    os.rename(log, log.with_name("scheduler-tui.log"))
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite:///%s/store.db"\n\n[[queues]]\nname = "q"\n'
                      'gpu = 0.5\n' % tmp_path + '\n[[hosts]]\nname = "gpu-a"\ntransport = '
                      '"local"\nsim = "1xL4"\nstate_dir = "%s/gpu-a"\n' % tmp_path * hosts)
    done = subprocess.run([sys.executable, "-m", "fractui", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          cwd=REPO, env=dict(os.environ, XDG_STATE_HOME=str(tmp_path),
                                             PYTHONPATH=REPO))
    assert done.returncode == 1, done
    assert "refusing TUI's scheduler log %s: %s" % (log.with_name("scheduler-tui.log"), why) \
        in done.stderr and "internal error" not in done.stderr, done.stderr


# --- The SQLite store (fractui/store/sqlite_file.py: refuse_exposed, keep_unread) -----------

SECRET = "--token=sk-a-secret-of-roots"


def _as_nobody(argv) -> subprocess.CompletedProcess:
    """A command run as nobody, a real plain user of this machine: another local user."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, user="nobody",
                          group="nogroup", extra_groups=[])


def _team_folder(plain_dir: Path) -> Path:
    """A folder a store is shared through: root's, its group writing it (nogroup, nobody's:
    nobody is the member), the setgid bit giving what is made there that group."""
    folder = plain_dir / "team"
    folder.mkdir()
    os.chown(folder, 0, grp.getgrnam("nogroup").gr_gid)
    folder.chmod(0o2770)
    return folder


def _team_store(where: Path) -> Path:
    """A store made in a team's folder (``_team_folder``) in ``where``: its path."""
    store = _team_folder(where) / "store.db"
    SqliteStore(str(store)).close()
    return store


def _nobodys_store(folder: Path, path: Path) -> None:
    """A fractui store at ``path``, nobody's: nobody copies one there."""
    source = folder / "made.db"
    SqliteStore(str(source)).close()
    source.chmod(0o644)
    assert _as_nobody(["cp", str(source), str(path)]).returncode == 0


def _exposed(folder: Path, exposure: str) -> Tuple[Path, str]:
    """The store's path, exposed as ``exposure`` says, and the words its refusal says."""
    shared = folder / "shared"
    shared.mkdir()
    store = shared / "store.db"
    if exposure == "a store another user put in a folder all users write":
        shared.chmod(0o1777)  # as /tmp: sticky, yet anyone may make a name in it
        _nobodys_store(folder, store)
        return store, "its directory %s is writable by all users (mode 1777): any local " \
            "user could put a store or a -wal of theirs there for fractui to open; keep the " \
            "store in a directory of your own (fractui makes one 0700), shared through a " \
            "group if it is shared\n" % shared
    if exposure == "a folder above the store that another user's group may write":
        above = folder / "team"
        mine = above / "mine"
        SqliteStore(str(mine / "store.db")).close()
        os.chown(above, 0, grp.getgrnam("nogroup").gr_gid)
        above.chmod(0o770)  # nobody may rename the store's folder away and put theirs there
        return mine / "store.db", "refusing store's directory %s: %s is writable by its " \
            "group (mode 0770), who could replace what fractui reads there; fix it with: " \
            "chmod go-w %s (or, where others must go on making files there: chmod +t %s, or " \
            "a folder of your own elsewhere)\n" % (mine, above, above, above)
    if exposure.startswith(("a store folder another user made", "a link to a store")):
        shared.chmod(0o1777)
        theirs = shared / "team"
        assert _as_nobody(["mkdir", "-m", "755", str(theirs)]).returncode == 0
        _nobodys_store(folder, theirs / "store.db")
        way = theirs / "store.db"
        if exposure.startswith("a link to a store folder"):  # (its folder is root's)
            way = folder / "team" / "store.db"
            way.parent.symlink_to(theirs)
        elif exposure.startswith("a link"):  # in root's own folder, 0700
            way = folder / "mine" / "store.db"
            way.parent.mkdir(mode=0o700)
            way.symlink_to(theirs / "store.db")
        return way, "its directory %s is nobody's, in %s, which all users may " \
            "write (mode 1777): any local user could have made it first, and a store of " \
            "theirs in it; keep the store in a directory of your own (fractui makes one " \
            "0700)\n" % (theirs, shared)
    shared.chmod(0o755)
    SqliteStore(str(store)).close()
    if exposure == "a store file all users write":
        store.chmod(0o666)  # root's store, which any user may write
        return store, "its file %s is writable by all users (mode 0666): any local user " \
            "could change any job in it; fix it with: chmod o-w %s\n" % (store, store)
    wal = shared / "store.db-wal"  # left from when the store was 0666: SQLite reads it first
    wal.write_bytes(b"")
    wal.chmod(0o666)
    return store, "its -wal file %s is writable by all users (mode 0666): any local user " \
        "could change any job in it; fix it with: chmod o-w %s\n" % (wal, wal)


@pytest.mark.parametrize("exposure", ["a store another user put in a folder all users write",
                                      "a store folder another user made in a folder all users "
                                      "write",
                                      "a link to a store folder another user made in a folder "
                                      "all users write",
                                      "a link to a store another user made in a folder all "
                                      "users write",
                                      "a store file all users write",
                                      "a -wal all users write",
                                      "a folder above the store that another user's group may "
                                      "write"])
def test_a_store_any_local_user_could_write_or_plant_is_refused(plain_dir, exposure):
    """Another user's store, or ours that they may write, would take root's jobs (their
    command lines and variables) and give it theirs to run: each verb is refused, naming what
    others may write or have made, and the file is left as it was."""
    store, why = _exposed(plain_dir, exposure)
    config = write_config(plain_dir, store)
    before = store.read_bytes()
    for verb in (["submit", "--queue", "half", "--", "train", SECRET], ["jobs"]):
        done = fractui(config, verb)
        assert (done.returncode, done.stdout) == (1, ""), done
        assert done.stderr == "fractui: store %s: %s" % (store, why), done.stderr
    assert store.read_bytes() == before


def test_the_fix_a_store_all_users_write_is_given_runs_only_the_chmod_when_pasted(plain_dir):
    """The chmod the refusal gives is pasted into a shell: a store whose path holds what a
    shell acts on (a folder named ``a;touch pwned;b``, a name a member of a shared store's
    folder can lead a link of the store's name to) is said quoted, so the line runs the
    chmod of that file alone, where it ran the member's command too, as root."""
    folder = plain_dir / "a;touch pwned;b"
    folder.mkdir(mode=0o700)
    store = folder / "store.db"
    SqliteStore(str(store)).close()
    store.chmod(0o666)
    done = fractui(write_config(plain_dir, store), ["jobs"])
    assert done.returncode == 1, done
    fix = done.stderr.strip().split("fix it with: ", 1)[1]
    subprocess.run(["sh", "-c", fix], cwd=plain_dir, check=True)
    assert not (plain_dir / "pwned").exists()
    assert stat.S_IMODE(store.stat().st_mode) == 0o664
    assert fractui(write_config(plain_dir, store), ["audit"]).returncode == 0


def test_a_team_folder_above_the_store_made_sticky_as_advised_is_taken(plain_dir):
    """The refusal of a folder above the store that a group writes offers a sticky bit where
    the team must go on making files there (a project folder): so made, no one renames or
    removes the store's folder but its owner, and the store is used."""
    store, _ = _exposed(plain_dir, "a folder above the store that another user's group may "
                        "write")
    config = write_config(plain_dir, store)
    submit = ["submit", "--queue", "half", "--", "train"]
    assert "chmod +t %s" % store.parent.parent in fractui(config, submit).stderr
    os.chmod(store.parent.parent, 0o1770)
    done = fractui(config, submit)
    assert done.returncode == 0 and "refusing" not in done.stderr, done


@pytest.mark.parametrize("mode, group, after", [
    (0o644, "root", 0o600),  # all users read it
    (0o640, "nogroup", 0o600),  # nobody reads it through its group, which writes it not
    (0o664, "root", 0o660),  # shared through its group (root's), which keeps it; all users not
])
@pytest.mark.parametrize("named", ["as it is", "by a link"])
def test_a_store_others_may_read_is_kept_to_its_writers(plain_dir, mode, group, after, named):
    """A store copied back, or made by sqlite3, under a umask of 022: every local user read
    each job's command line. Any verb takes that read away, from the store a link names too;
    its group keeps what a store shared through it needs."""
    folder = plain_dir / "state"
    folder.mkdir()
    folder.chmod(0o755)
    store = folder / "store.db"
    made = SqliteStore(str(store))
    made.submit("half", None, "train", ["train", SECRET], {"gpu": 0.5}, "t")
    made.close()
    os.chown(store, 0, grp.getgrnam(group).gr_gid)
    store.chmod(mode)
    read = ["python3", "-c", "import sys; print(%r in open(sys.argv[1], 'rb').read())"
            % SECRET.encode(), str(store)]
    assert _as_nobody(read).stdout == "True\n"  # the secret, as nobody read it before
    config = store
    if named == "by a link":
        config = plain_dir / "link.db"
        config.symlink_to(store)
    done = fractui(write_config(plain_dir, config), ["audit"])
    assert done.returncode == 0, done
    assert stat.S_IMODE(store.stat().st_mode) == after
    refused = _as_nobody(read)
    assert refused.returncode == 1 and "Permission denied" in refused.stderr, refused


def test_a_link_a_store_member_swaps_in_as_its_read_is_taken_changes_no_other_file(
        plain_dir, monkeypatch):
    """A store shared through its group (2770), left readable by all (restored under a umask
    of 022): its read is taken at each open, by the file's owner (root). The folder is the
    group's to write, so a member may put a link in the place of a side file the moment
    after it is looked at (the hook, as that race won: tried so as a plain user with a loop
    of renameat2 exchanges, about 1 open in 9). The chmod by name that followed it changed
    the mode of the file the link named, any of root's: here one of root's alone (0600)
    made readable and writable by its group."""
    store = _team_store(plain_dir)
    folder = store.parent
    swapped = folder / "store.db-wal"
    swapped.touch()
    for made in (store, swapped):
        os.chown(made, 0, grp.getgrnam("nogroup").gr_gid)
        made.chmod(0o664)
    target = plain_dir / "roots-alone"
    target.write_text("root's\n")
    target.chmod(0o600)
    link = folder / "theirs"
    assert _as_nobody(["ln", "-s", str(target), str(link)]).returncode == 0
    real_lstat, real_open = os.lstat, os.open

    def looked(call):
        def hooked(path, *args, **kwargs):
            got = call(path, *args, **kwargs)
            if os.fspath(path) == str(swapped) and link.is_symlink():
                os.rename(link, swapped)  # (nobody's rename, made as root at that moment)
            return got
        return hooked

    monkeypatch.setattr(os, "lstat", looked(real_lstat))
    monkeypatch.setattr(os, "open", looked(real_open))
    try:
        sqlite_file.check_file(str(store))
    finally:
        monkeypatch.undo()
    assert swapped.is_symlink(), "the link was not swapped in"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_link_a_store_member_swaps_in_for_a_new_store_makes_no_file_elsewhere(
        plain_dir, monkeypatch):
    """A store shared through its group lies in a folder the group writes, and a member may
    remove it: the next open makes a new one there, as root. It was made by SQLite in a file
    beside it, opened by its name: a member who put a link at that name the moment after it
    was made (the hook, as that race won) had root's SQLite make the file the link named,
    anywhere nothing was (an /etc/sudoers.d/ file of SQLite's bytes stops sudo), 0644."""
    folder = _team_folder(plain_dir)
    target = plain_dir / "made-by-root"
    link = folder / "theirs"
    assert _as_nobody(["ln", "-s", str(target), str(link)]).returncode == 0
    real_mkstemp = tempfile.mkstemp

    def swapped(*args, **kwargs):
        fd, made = real_mkstemp(*args, **kwargs)
        if os.path.dirname(made) == str(folder):
            os.rename(link, made)  # (nobody's rename, made as root at that moment)
        return fd, made

    monkeypatch.setattr(tempfile, "mkstemp", swapped)
    with pytest.raises(StoreError):  # the member's link, put in place as the store: refused
        SqliteStore(str(folder / "store.db"))
    monkeypatch.undo()
    assert not os.path.lexists(link), "the link was not swapped in"
    assert not os.path.lexists(target), "root's SQLite made the file the member's link named"


def test_a_link_a_store_member_swaps_in_for_the_store_as_it_opens_makes_no_file_elsewhere(
        plain_dir, monkeypatch):
    """A store shared through its group: a member may put a link in place of the store file
    after the checks of its open, before SQLite opens it by its name (the hook, as that race
    won). A link leading where nothing was had root's SQLite make that file (empty: an empty
    /etc/nologin lets no one else log in); it is opened now only where it is."""
    store = _team_store(plain_dir)
    target = plain_dir / "made-by-root"
    link = store.parent / "theirs"
    assert _as_nobody(["ln", "-s", str(target), str(link)]).returncode == 0
    _opened_as_swapped_for(monkeypatch, link, store, StoreError)
    assert store.is_symlink(), "the link was not swapped in"
    assert not os.path.lexists(target), "root's SQLite made the file the member's link named"


def _opened_as_swapped_for(monkeypatch, link: Path, store: Path,
                           refusal: type) -> pytest.ExceptionInfo:
    """The store at ``store`` opened while a member puts ``link`` in its place after the open's
    checks, before SQLite opens it by its name (the hook, as that race won): refused with
    ``refusal``, which is returned."""
    real_holding = sqlite_file.holding

    def swapped(file):
        held = real_holding(file)
        os.rename(link, store)  # (nobody's rename, made as root at that moment)
        return held

    monkeypatch.setattr(sqlite_file, "holding", swapped)
    with pytest.raises(refusal) as refused:
        SqliteStore(str(store))
    monkeypatch.undo()
    return refused


def _linked_in(plain_dir: Path, side: str, owner: str) -> Tuple[Path, Path, Path]:
    """A store shared through its group (2770; ``owner``'s, readable by all, so its open takes
    that read away), with a job, and one of root's files all users read (as /etc/passwd),
    which nobody, a member, hard-linked as the store's ``side`` file: (the store, the side
    file, root's file)."""
    folder = _team_folder(plain_dir)
    store = folder / "store.db"
    if owner == "root":
        made = SqliteStore(str(store))
        made.submit("half", None, "train", ["train", SECRET], {"gpu": 0.5}, "t")
        made.close()
        store.chmod(0o664)
    else:
        _nobodys_store(folder, store)
    roots = plain_dir / "roots-passwd"
    roots.write_text("root:x:0:0:root:/root:/bin/bash\n" * 40)
    roots.chmod(0o644)
    side_file = folder / ("store.db" + side)
    # With fs.protected_hardlinks = 0 (the default before Linux 3.6, and a sysctl away since)
    # nobody's ``ln`` makes this very link; root makes it here, so that no test changes the
    # machine's setting for every other process on it.
    os.link(roots, side_file)
    assert roots.stat().st_nlink == 2
    return store, side_file, roots


@pytest.mark.parametrize("side", ["-wal", "-shm", "-journal"])
@pytest.mark.parametrize("owner", ["root", "nobody"])
def test_a_file_a_store_member_hard_links_as_a_side_file_is_refused_and_left_as_it_was(
        plain_dir, side, owner):
    """Where users may link files they do not own, a member of a store's group could link any
    of root's files on its filesystem as the store's -wal or -shm: root's fractui took its
    read away (0644 to 0640: no user could read /etc/passwd), and root's SQLite wrote into it,
    the store's pages into a -wal, its index into a -shm (whoever's the store). Each verb is
    refused, naming the file, its names and the way out; that file, and the store, are left
    as they were; once the link is removed as advised, the store is used."""
    store, side_file, roots = _linked_in(plain_dir, side, owner)
    before = (roots.read_bytes(), roots.stat().st_mode, store.read_bytes())
    config = write_config(plain_dir, store)
    for verb in (["submit", "--queue", "half", "--", "train"], ["jobs"]):
        done = fractui(config, verb)
        assert (done.returncode, done.stdout) == (1, ""), done
        head = ("fractui: store %s: its %s file %s is a file of root with 2 names (hard "
                "links): it may be any file on its filesystem that someone linked there, "
                "which " % (store, side, side_file))
        if side == "-journal":  # none of the store's (WAL), none open in a fractui
            assert done.stderr == head + (
                "SQLite would take for a write cut short and put back into the store, or "
                "remove; fractui changed nothing in it, and it is no file of the store's: "
                "fractui keeps every store in WAL mode, where SQLite writes no -journal. See "
                "the file's other names (find / -xdev -samefile %s), and remove this one (rm "
                "%s): the file is kept under them, and a fractui that has the store open goes "
                "on (it uses no -journal)\n" % (side_file, side_file)), done.stderr
            continue
        assert done.stderr == head + (
            "SQLite would overwrite; fractui changed nothing in it. Stop each fractui that has "
            "the store open (its scheduler, a TUI): one would write on into the files it "
            "opened, and a job submitted meanwhile be lost. Then see the file's other names "
            "(find / -xdev -samefile %s), and remove this one (rm %s): the file is kept under "
            "them%s\n" % (side_file, side_file, (
                "; if one is this store's own -wal (linked by a backup), copy it in place "
                "instead, which keeps its pages: cp -p --remove-destination %s %s.new && "
                "mv %s.new %s" % (
                    (side_file,) * 4) if side == "-wal" else ""))), done.stderr
    assert (roots.read_bytes(), roots.stat().st_mode, store.read_bytes()) == before
    side_file.unlink()
    done = fractui(config, ["audit"])
    assert done.returncode == 0, done
    assert (roots.read_bytes(), roots.stat().st_mode) == before[:2]


def _with_pages_in_its_wal(store: Path) -> Path:
    """A store at ``store`` whose one job (in-the-wal) is in its -wal alone, no checkpoint
    having put it in the store yet: its -wal's path."""
    SqliteStore(str(store)).close()
    store.chmod(0o660)  # (shared through root's group)
    wrote = ("import os, sys\nfrom fractui.store import SqliteStore\n"
             "SqliteStore(sys.argv[1]).submit('half', None, 'in-the-wal', ['x'], {'gpu': 0.5}, "
             "'t')\nos._exit(0)\n")  # (ended before any close: its pages in the -wal alone)
    subprocess.run([sys.executable, "-c", wrote, str(store)], check=True, cwd=REPO)
    wal = Path(str(store) + "-wal")
    assert wal.stat().st_size > 0 and stat.S_IMODE(wal.stat().st_mode) == 0o660
    return wal


def test_a_stores_own_wal_a_backup_linked_keeps_its_pages_through_the_copy_advised(plain_dir):
    """A -wal with another name may be the store's own, linked by a backup (cp -l), holding
    pages no checkpoint has put in the store yet: refused as any such link, the copy the
    refusal gives for that case breaks the link and keeps them (rm would lose them), and
    the -wal's mode, the store's group's write. A link at the copy's name, which a member of
    a shared store's folder could put there knowing the advice, leads the copy nowhere: a
    plain cp wrote the store's pages through it into the file it named, as root."""
    folder = plain_dir / "state"
    folder.mkdir(mode=0o700)
    store = folder / "store.db"
    wal = _with_pages_in_its_wal(store)
    os.link(wal, plain_dir / "backup.db-wal")
    roots = plain_dir / "roots-file"
    roots.write_text("root's\n")
    os.symlink(roots, str(wal) + ".new")
    done = fractui(write_config(plain_dir, store), ["audit"])
    assert done.returncode == 1 and "is a file of root with 2 names" in done.stderr, done
    for step in done.stderr.strip().split("keeps its pages: ", 1)[1].split(" && "):
        subprocess.run(shlex.split(step), check=True)
    assert roots.read_text() == "root's\n"
    assert wal.stat().st_nlink == 1 and (plain_dir / "backup.db-wal").stat().st_nlink == 1
    assert stat.S_IMODE(wal.stat().st_mode) == 0o660
    done = fractui(write_config(plain_dir, store), ["audit"])
    assert done.returncode == 0, done
    kept = SqliteStore(str(store))
    try:
        assert [j.name for j in kept.jobs()] == ["in-the-wal"]
    finally:
        kept.close()


def test_the_read_taken_from_a_store_changes_no_file_a_member_hard_linked_as_its_wal(
        plain_dir):
    """The mode change itself looks at each side file through its descriptor: a link made
    after the open's first look (a member's, made at that moment) is refused there too,
    and the file it names keeps its mode."""
    store, side_file, roots = _linked_in(plain_dir, "-wal", "root")
    with pytest.raises(StoreExposed) as refused:
        sqlite_file.check_file(str(store))
    assert "its -wal file %s is a file of root with 2 names" % side_file in str(refused.value)
    assert stat.S_IMODE(roots.stat().st_mode) == 0o644


def _roots(where: Path, kind: str) -> Path:
    """One of root's files at ``where``, 0644: another SQLite database of root's, another
    fractui store of root's (with a job), or any file (as /etc/passwd)."""
    if kind == "an SQLite database":
        db = sqlite3.connect(str(where))
        db.execute("CREATE TABLE secrets (token TEXT)")
        db.execute("INSERT INTO secrets VALUES (?)", (SECRET,))
        db.commit()
        db.close()
    elif kind == "a fractui store":
        made = SqliteStore(str(where))
        made.submit("half", None, "roots-own", ["train", SECRET], {"gpu": 0.5}, "t")
        made.close()
    else:
        where.write_text("root:x:0:0:root:/root:/bin/bash\n" * 40)
    where.chmod(0o644)
    return where


def _in_place_of_the_store(plain_dir: Path, owner: str, link: str, kind: str
                           ) -> Tuple[Path, Path, str]:
    """A store shared through its group (2770, ``owner``'s), whose file a member replaced by
    a ``link`` (symbolic or hard) to one of root's files (``_roots``): (the store's path,
    root's file, what the refusal says)."""
    folder = _team_folder(plain_dir)
    store = folder / "store.db"
    if owner == "root":
        SqliteStore(str(store)).close()
        store.chmod(0o664)
    else:
        _nobodys_store(folder, store)
    if link == "symbolic":  # beside the store, where no check of its folder tells them apart
        roots = _roots(folder / "roots.db", kind)
        assert _as_nobody(["ln", "-sf", str(roots), str(store)]).returncode == 0
        return store, roots, (
            "its file %s is a link to %s made by nobody, not by root (whom fractui runs as): "
            "whoever may write its directory could make it lead to any file on the machine, "
            "which fractui would change as root; fractui changed nothing. Remove the link (rm "
            "%s) and put the store there, or name the store by its own path" % (
                store, roots, store))
    roots = _roots(plain_dir / "roots.db", kind)  # elsewhere on the store's filesystem
    # With fs.protected_hardlinks = 0 nobody's ``ln -f`` makes this very link (it may remove
    # the store's name: its folder is its group's to write); root makes it here, so that no
    # test changes the machine's setting for every other process on it.
    store.unlink()
    os.link(roots, store)
    return store, roots, (
        "its file %s is a file of root with 2 names (hard links): it may be any file on its "
        "filesystem that someone linked there, which SQLite would overwrite; fractui changed "
        "nothing in it. Stop each fractui that has the store open (its scheduler, a TUI): one "
        "would write on into the files it opened, and a job submitted meanwhile be lost. Then "
        "see the file's other names (find / -xdev -samefile %s), and remove this one (rm %s): "
        "the file is kept under them; if one is this store's own file (linked by a backup), "
        "copy it in place instead, which keeps its jobs: cp -p --remove-destination %s %s.new "
        "&& mv %s.new %s" % ((store,) * 7))


def _untouched(roots: Path) -> Tuple[bytes, int, list]:
    """What root's file is: its bytes, its mode, and the files beside it of its name."""
    return (roots.read_bytes(), stat.S_IMODE(roots.stat().st_mode),
            sorted(p.name for p in roots.parent.glob(roots.name + "*")))


@pytest.mark.parametrize("kind", ["an SQLite database", "a fractui store", "any file"])
@pytest.mark.parametrize("link", ["symbolic", "hard"])
@pytest.mark.parametrize("owner", ["root", "nobody"])
def test_a_file_of_roots_a_member_links_in_place_of_the_store_is_refused_and_left_as_it_was(
        plain_dir, owner, link, kind):
    """A store shared through its group: a member may remove its file and put a link there.
    A link of theirs to another of root's databases beside it was followed: root's fractui
    took that file's read away (0644 to 0600) before the schema check refused it, and took
    another fractui store of root's for the team's, and wrote the team's jobs into it. A
    file of root's hard-linked there (where users may link files they do not own) was
    opened so too. Each verb, the TUI's start too, is refused, naming the link and whose it
    is, and root's file is left as it was: its bytes, its mode, nothing made beside it."""
    store, roots, why = _in_place_of_the_store(plain_dir, owner, link, kind)
    before = _untouched(roots)
    config = write_config(plain_dir, store)
    for verb in (["submit", "--queue", "half", "--", "train", SECRET], ["jobs"], []):
        done = fractui(config, verb)
        assert _untouched(roots) == before, (verb, done.stderr)
        assert done.returncode == 1 and "fractui: store %s: %s\n" % (store, why) in \
            done.stderr and "Traceback" not in done.stderr, (verb, done)
        assert done.stdout == "" or not verb, (verb, done.stdout)
    assert store.is_symlink() == (link == "symbolic")


def test_a_link_of_the_admins_own_to_a_store_in_the_team_folder_is_followed(plain_dir):
    """A link at the store's name that is root's, in the folder a store is shared through
    (as an admin keeps one for a store they moved), is followed as before: only another
    user's is refused."""
    folder = _team_folder(plain_dir)
    moved = folder / "moved.db"
    SqliteStore(str(moved)).close()
    (folder / "store.db").symlink_to(moved)
    done = fractui(write_config(plain_dir, folder / "store.db"), ["audit"])
    assert done.returncode == 0, done


def _other_teams_store(plain_dir: Path) -> Path:
    """Another team's store (cv's): root's, with a job of theirs, 0644 (its open would take
    the read of all users away), in a folder of root's that a group nobody is not in writes
    (adm, 2770): a shared store's, whose way fractui leaves to its owner."""
    folder = plain_dir / "cv"
    folder.mkdir()
    os.chown(folder, 0, grp.getgrnam("adm").gr_gid)
    folder.chmod(0o2770)
    store = folder / "store.db"
    made = SqliteStore(str(store))
    made.submit("half", None, "cvs-own", ["train", SECRET], {"gpu": 0.5}, "t")
    made.close()
    store.chmod(0o644)
    return store


WAY_LINKS = {  # where the member's link lies: that folder, its mode and owner, what it says
    "in the team's folder, which its group writes": ("team", 0o2770, "root",
                                                     "its group (mode 2770)"),
    "in a folder of the member's own": ("nobodys", 0o755, "nobody", "nobody (its owner)"),
    "in a sticky folder all users write": ("tmp", 0o1777, "root",
                                           "its group and all users (mode 1777)")}


@pytest.mark.parametrize("where", list(WAY_LINKS))
def test_a_folder_link_on_the_stores_way_another_user_could_change_is_refused(plain_dir,
                                                                              where):
    """The config names the store through a folder that is a link (/srv/teams/nlp/shared),
    and the folder it lies in is one a member writes: the member put a link of theirs there,
    to another team's shared folder of root's. It was followed, whoever's it was: root's
    fractui listed that team's jobs, wrote the team's into that store, and would have taken
    its read. Each verb is refused, exit 1, naming the link, where it leads, whose it is and
    who may change it, and the other store is left as it was."""
    cvs = _other_teams_store(plain_dir)
    name, mode, whose, changers = WAY_LINKS[where]
    folder = plain_dir / name
    folder.mkdir()
    shutil.chown(folder, whose, "nogroup")
    folder.chmod(mode)
    link = folder / "shared"
    assert _as_nobody(["ln", "-sfn", str(cvs.parent), str(link)]).returncode == 0
    store = link / "store.db"
    config = write_config(plain_dir, store)
    before = _untouched(cvs)
    for verb in (["submit", "--queue", "half", "--", "train", "nlp"], ["jobs"]):
        done = fractui(config, verb)
        assert _untouched(cvs) == before, (verb, done)
        assert (done.returncode, done.stdout) == (1, ""), (verb, done)
        assert done.stderr == (
            "fractui: store %s: the folder %s on its way is a link to %s made by nobody, not "
            "by root (whom fractui runs as), in %s, which %s may change: they could make it "
            "lead to any folder on the machine, and fractui would take the store there for "
            "this one, write its jobs into it and take its read, as root; fractui changed "
            "nothing. Name the store by its real path, or put a link of root's there that "
            "leads where you checked the store is (ln -sfn STORE-FOLDER %s)\n" % (
                store, link, cvs.parent, folder, changers, link)), done.stderr


WAYS = ["root's link in the team's folder, which its group writes",
        "another user's link in a folder only root writes",
        "root's link in a sticky folder all users write"]


@pytest.mark.parametrize("way", WAYS)
def test_a_folder_link_on_the_stores_way_no_one_else_may_change_is_followed(plain_dir, way):
    """A link on the way to the store that only root or the user fractui runs as could have
    put there, or could now change, is followed as before: root's own, in the team's folder
    its group writes (the admin's, as the config names it) or in a sticky folder all users
    write (/tmp's); another user's in a folder only root writes (its owner cannot change
    it)."""
    team = _team_folder(plain_dir)
    real = team / "nlp"
    real.mkdir()
    real.chmod(0o2770)  # a store shared through the team's group
    folder = {"root's link in a sticky folder all users write": plain_dir / "tmp",
              "another user's link in a folder only root writes": plain_dir / "roots"}.get(
                  way, team)
    if folder != team:
        folder.mkdir(mode=0o1777 if "sticky" in way else 0o755)
        folder.chmod(0o1777 if "sticky" in way else 0o755)
    link = folder / "shared"
    link.symlink_to(real)
    if way.startswith("another user's"):
        os.lchown(link, pwd.getpwnam("nobody").pw_uid, -1)
    config = write_config(plain_dir, link / "store.db")
    done = fractui(config, ["submit", "--queue", "half", "--", "train", "nlp"])
    assert done.returncode == 0, done
    listed = fractui(write_config(plain_dir, real / "store.db"), ["audit"])
    assert listed.returncode == 0 and "submitted to queue half" in listed.stdout, listed


def _a_members_link_beside_roots(where: Path) -> Tuple[Path, Path, Path, Path]:
    """In ``where``: another team's store (``_other_teams_store``), and a team's folder
    (``_team_folder``) holding its store's folder (nlp, 2770: shared through its group; its
    store made), root's link to that folder (shared), and a link of nobody's, a member's, to
    the other team's store's folder (theirs): (the other team's store, the team's folder, its
    store's folder, nobody's link)."""
    cvs = _other_teams_store(where)
    team = _team_folder(where)
    real = team / "nlp"
    real.mkdir()
    real.chmod(0o2770)
    SqliteStore(str(real / "store.db")).close()
    (team / "shared").symlink_to(real)
    theirs = team / "theirs"
    assert _as_nobody(["ln", "-s", str(cvs.parent), str(theirs)]).returncode == 0
    return cvs, team, real, theirs


def test_a_members_link_put_in_place_of_roots_on_the_stores_way_as_it_is_read_is_not_followed(
        plain_dir, monkeypatch):
    """Root's link on the store's way, in the team's folder its group writes, is followed; a
    member who put a link of theirs in its place between its look and the read of where it
    leads (the hook, as that race won: a rename, which the folder's group may do, exchanging
    the two) had that read take the member's link's target, to another team's shared folder
    of root's, under root's link's owner: root's fractui wrote the team's job into the other
    team's store. The owner and the target are read of one link: the other store is left as
    it was, and the file SQLite then opened (through the member's link) is refused."""
    cvs, team, _real, theirs = _a_members_link_beside_roots(plain_dir)
    link = team / "shared"
    before = _untouched(cvs)
    real_refuse_link = sqlite_file.refuse_link
    judged = []

    def swapped(path, where, st, folder=False):
        real_refuse_link(path, where, st, folder)
        judged.append(where)
        if judged.count(str(link)) == 2:  # the open's own look (the first is refuse_exposed's)
            os.rename(theirs, link)  # (nobody's rename, made as root at that moment)

    monkeypatch.setattr(sqlite_file, "refuse_link", swapped)
    with pytest.raises(StoreExposed) as refused:
        made = SqliteStore(str(link / "store.db"))
        made.submit("half", None, "nlps-own", ["train"], {"gpu": 0.5}, "t")
        made.close()
    monkeypatch.undo()
    assert not theirs.exists(), "the link was not swapped in"
    assert "is no longer the one this fractui opened" in str(refused.value)
    assert _untouched(cvs) == before


def test_a_members_link_put_in_place_of_a_folder_on_the_stores_way_as_it_opens_is_not_followed(
        plain_dir, monkeypatch):
    """The store's own folder lies in the team's folder its group writes, named by root's
    link there: a member who put a link of theirs in place of that folder after the way was
    walked, before the store file was opened (the hook, as that race won), had the open
    follow it, to another team's shared folder of root's: root's fractui took that store's
    read and wrote the team's job into it. The file is opened folder by folder, no link
    followed: the member's is refused, naming it, and the other store is left as it was."""
    cvs, team, real, theirs = _a_members_link_beside_roots(plain_dir)
    before = _untouched(cvs)
    real_lstat = os.lstat

    def swapped(where, *args, **kwargs):
        if str(where) == str(real / "store.db") and theirs.exists():  # the open's first look
            os.rename(real, team / "moved")  # (nobody's renames, made as root then)
            os.rename(theirs, real)
        return real_lstat(where, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", swapped)
    with pytest.raises(StoreExposed) as refused:
        made = SqliteStore(str(team / "shared" / "store.db"))
        made.submit("half", None, "nlps-own", ["train"], {"gpu": 0.5}, "t")
        made.close()
    monkeypatch.undo()
    assert not theirs.exists(), "the link was not swapped in"
    assert "the folder %s on its way is a link to %s made by nobody" % (
        real, cvs.parent) in str(refused.value)
    assert _untouched(cvs) == before


def test_another_users_link_at_the_stores_name_in_a_folder_only_root_writes_is_followed(
        plain_dir):
    """The rule is the same at the store file's name: a link of another user's there, in a
    folder only root writes, is one its owner can no longer change, and is followed."""
    store = _team_store(plain_dir)
    roots = plain_dir / "roots"
    roots.mkdir(mode=0o755)
    link = roots / "store.db"
    link.symlink_to(store)
    os.lchown(link, pwd.getpwnam("nobody").pw_uid, -1)
    done = fractui(write_config(plain_dir, link), ["submit", "--queue", "half", "--", "train"])
    assert done.returncode == 0, done


def test_a_store_under_a_home_reached_through_roots_link_in_home_is_the_users(plain_dir):
    """A user's store under their home, which /home names by a link of root's (homes moved to
    another disk): followed as before, where it is the user's own store, made and used."""
    home = plain_dir / "home"
    home.mkdir(mode=0o755)
    data = plain_dir / "data" / "nobody"
    data.mkdir(parents=True)
    shutil.chown(data, "nobody", "nogroup")
    data.chmod(0o700)
    (home / "nobody").symlink_to(data)
    config = write_config(plain_dir, home / "nobody" / "fractui" / "store.db")
    for verb in (["submit", "--queue", "half", "--", "train", "mine"], ["audit"]):
        done = fractui(config, verb, user="nobody")
        assert done.returncode == 0, (verb, done)
    assert "submitted to queue half" in done.stdout, done.stdout
    assert (data / "fractui" / "store.db").stat().st_uid == pwd.getpwnam("nobody").pw_uid


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_a_file_of_roots_a_member_puts_in_place_of_the_store_as_it_opens_is_never_opened(
        plain_dir, monkeypatch, link):
    """A member may put a link in place of the store file after its checks, before SQLite
    opens it by its name (the hook, as that race won): the file SQLite opened is compared
    with the one checked before SQLite reads it, so another fractui store of root's is not
    taken for the team's, written or even read (here a read, and the close after it, puts
    the pages of its -wal in it and removes the -wal), and the store's admin is asked of
    the file checked, never of the one now at its name."""
    store = _team_store(plain_dir)
    roots = plain_dir / "roots.db"
    _with_pages_in_its_wal(roots)
    theirs = store.parent / "theirs"
    if link == "symbolic":
        assert _as_nobody(["ln", "-s", str(roots), str(theirs)]).returncode == 0
    else:  # (root makes it: nobody's needs fs.protected_hardlinks = 0, see _linked_in)
        os.link(roots, theirs)
    before = _untouched(roots)
    refused = _opened_as_swapped_for(monkeypatch, theirs, store, StoreExposed)
    assert not theirs.exists(), "the link was not swapped in"
    assert "is no longer the one this fractui opened" in str(refused.value)
    assert _untouched(roots) == before
    os.unlink(store)
    SqliteStore(str(store)).close()  # a store of the team's again, then swapped once open
    opened = SqliteStore(str(store))
    try:
        os.link(roots, theirs)
        os.rename(theirs, store)
        with pytest.raises(StoreExposed):
            opened.identity()
    finally:
        opened.close()


def test_a_store_restored_under_an_open_fractui_says_to_start_it_again_not_try_again(
        plain_dir):
    """An admin who restores a store (a copy moved over its name) while a TUI has it open:
    that TUI's file is no longer the store's, and what it asks of who it is (each action,
    the job screen's each second) is refused. It was told the file "was replaced as fractui
    opened it; try again", an hour after it opened, and each try failed so: it is told that
    the file changed since it opened, and to start it again, which opens the restored one."""
    folder = plain_dir / "state"
    folder.mkdir(mode=0o700)
    store = folder / "store.db"
    opened = SqliteStore(str(store))
    try:
        restored = folder / "restored.db"
        shutil.copy(store, restored)
        os.rename(restored, store)
        with pytest.raises(StoreExposed) as refused:
            opened.identity()
    finally:
        opened.close()
    said = str(refused.value)
    assert "as fractui opened it" not in said and "try again" not in said, said
    assert "is no longer the one this fractui opened: another was put in its place, or it " \
        "was moved, since" in said and "start fractui again" in said, said
    SqliteStore(str(store)).close()  # started again: the restored store


def test_a_store_seen_as_it_is_made_is_opened_its_private_name_beside_it(plain_dir):
    """A new store is linked into place from a private file beside it, whose name is then
    removed: an open meanwhile sees its two names, that one beside it, and is not refused."""
    folder = plain_dir / "state"
    folder.mkdir(mode=0o700)
    store = folder / "store.db"
    SqliteStore(str(store)).close()
    os.link(store, folder / ".store.db.x1y2z3.new")
    SqliteStore(str(store)).close()
    os.link(store, folder / "elsewhere.db")  # a third name: no store being made
    with pytest.raises(StoreExposed):
        SqliteStore(str(store))


def test_a_store_file_a_backup_linked_keeps_its_jobs_through_the_copy_advised(plain_dir):
    """A store file with another name may be the store's own, linked by a backup (cp -l):
    refused as any such link, the copy the refusal gives breaks the link and keeps its
    jobs."""
    folder = plain_dir / "state"
    folder.mkdir(mode=0o700)
    store = folder / "store.db"
    made = SqliteStore(str(store))
    made.submit("half", None, "kept", ["x"], {"gpu": 0.5}, "t")
    made.close()
    os.link(store, plain_dir / "backup.db")
    done = fractui(write_config(plain_dir, store), ["audit"])
    assert done.returncode == 1 and "is a file of root with 2 names" in done.stderr, done
    for step in done.stderr.strip().split("which keeps its jobs: ", 1)[1].split(" && "):
        subprocess.run(shlex.split(step), check=True)
    assert store.stat().st_nlink == 1 and (plain_dir / "backup.db").stat().st_nlink == 1
    kept = SqliteStore(str(store))
    try:
        assert [j.name for j in kept.jobs()] == ["kept"]
    finally:
        kept.close()


# --- The Python children fractui starts (trust.python_module) -------------------------------

PLANT = "open(%r, 'a').write('ran\\n')\nraise SystemExit(3)\n"


def _planted(folder: Path) -> Tuple[Path, Path]:
    """A folder all users may write (as /tmp, or a team's), where nobody has put packages named
    as ours and as psycopg, and modules named as Python's, each of which says so in a file when
    it runs: (the folder, that file)."""
    said = folder / "ran"
    source = folder / "theirs"
    for package in ("remote_agent", "fractui"):  # run as ``-m``
        (source / package).mkdir(parents=True)
        (source / package / "__init__.py").write_text("")
        (source / package / "__main__.py").write_text(PLANT % str(said))
    (source / "psycopg").mkdir()  # imported
    (source / "psycopg" / "__init__.py").write_text(PLANT % str(said))
    for module in ("hashlib.py", "__future__.py"):
        (source / module).write_text(PLANT % str(said))
    subprocess.run(["chmod", "-R", "a+rX", str(source)], check=True)
    shared = folder / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    for name in ("remote_agent", "fractui", "psycopg", "hashlib.py", "__future__.py"):
        assert _as_nobody(["cp", "-r", str(source / name), str(shared)]).returncode == 0
    return shared, said


def _status_in(folder, config, state, monkeypatch, capfd):
    """``fractui status`` run in ``folder`` with ``config``, whose one host keeps ``state``
    (stopped after): its exit code, stdout and stderr."""
    monkeypatch.chdir(folder)
    try:
        code = main(["--config", str(config), "status"])
        out, err = capfd.readouterr()
    finally:
        stop_host(str(state))
    return code, out, err


def test_a_local_hosts_agent_run_from_a_folder_others_write_runs_none_of_theirs(
        plain_dir, monkeypatch, capfd):
    """fractui run in /tmp (or any folder another user writes) started the local host's agent
    as ``python -m remote_agent`` there, which imports from its working directory first: the
    package another user put there ran as the admin (as root under sudo)."""
    shared, said = _planted(plain_dir)
    state = plain_dir / "gpu-a"
    config = plain_dir / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s/store.db"\n\n[[queues]]\nname = "q"\n'
                      'gpu = 0.5\n\n[[hosts]]\nname = "gpu-a"\ntransport = "local"\n'
                      'sim = "1xL4"\nstate_dir = "%s"\n' % (plain_dir, state))
    code, out, err = _status_in(shared, config, state, monkeypatch, capfd)
    assert not said.exists(), "another user's remote_agent ran"
    assert code == 0 and "online" in out, out + err


def test_the_tuis_scheduler_started_from_a_folder_others_write_runs_none_of_theirs(
        plain_dir, monkeypatch):
    """The TUI's scheduler (``python -m fractui scheduler``), from a TUI run in such a folder,
    was the ``fractui`` another user put there."""
    shared, said = _planted(plain_dir)
    config = plain_dir / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s/store.db"\n\n[[queues]]\nname = "q"\n'
                      'gpu = 0.5\n' % plain_dir)
    log = plain_dir / "scheduler.log"
    monkeypatch.chdir(shared)
    child = ChildScheduler(str(config), "me (tui)", str(log)).start()
    try:
        while child.exit_code() is None and "scheduler me (tui): store" not in log.read_text():
            threading.Event().wait(0.02)
    finally:
        child.stop()
    assert not said.exists(), "another user's fractui ran"
    assert "scheduler me (tui): store %s/store.db" % plain_dir in log.read_text(), \
        log.read_text()


def test_the_checks_run_on_an_exec_host_from_a_folder_others_write_run_none_of_theirs(
        plain_dir, monkeypatch, capfd):
    """An exec host whose program runs the agent's words on this machine (``env`` here; ``sudo
    -n`` for a root agent): the check of the agent's file and its upload (``python -c``) ran in
    fractui's working directory, and imported the ``hashlib`` another user put there."""
    shared, said = _planted(plain_dir)
    state = plain_dir / "gpu-e"
    config = plain_dir / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s/store.db"\n\n[[queues]]\nname = "q"\n'
                      'gpu = 0.5\n\n[[hosts]]\nname = "gpu-e"\ntransport = "exec"\n'
                      'exec = ["env"]\npython = "%s"\nsim = "1xL4"\nstate_dir = "%s"\n'
                      'agent_cache = "%s/cache"\n' % (plain_dir, sys.executable, state,
                                                       plain_dir))
    code, out, err = _status_in(shared, config, state, monkeypatch, capfd)
    assert not said.exists(), "another user's hashlib ran"
    assert code == 0 and "online" in out, out + err


def test_a_check_whose_code_imports_from_the_future_run_there_runs_none_of_theirs(plain_dir):
    """A ``from __future__`` line must come first, and it imports the module ``__future__`` as
    it runs: put above the line that drops the working directory, the check of the agent's
    file (trust.py's source, which has one) imported the ``__future__`` another user put there.
    Run with ``-S``: the site of this test's Python (an editable install) imports
    ``__future__`` first, as a host's python need not."""
    shared, said = _planted(plain_dir)
    python, *words = python_code(sys.executable, _HAVE)
    done = subprocess.run([python, "-S", *words, str(plain_dir / "agent.pyz"), "0" * 64],
                          cwd=str(shared), capture_output=True, text=True, timeout=60)
    assert not said.exists(), "another user's __future__ ran"
    assert done.returncode == 0 and done.stdout == "no\n", done


@pytest.mark.parametrize("started", ["as a program", "by python -c"])
def test_the_ping_of_a_store_not_reached_from_a_folder_others_write_runs_none_of_theirs(
        plain_dir, monkeypatch, capfd, started):
    """A PostgreSQL store not reached is pinged in a process of its own (``python -c``, which
    imports psycopg) to tell a server away from a refusal: run in fractui's working directory,
    it imported the ``psycopg`` another user put there, as the admin, at any verb while the
    server was down. A fractui started by ``python -c`` has the working directory on its module
    path as "", which the ping's PYTHONPATH, made of that path, must not carry."""
    shared, said = _planted(plain_dir)
    if started == "by python -c":  # (psycopg is imported already: this process takes none)
        monkeypatch.setattr(sys, "path", [""] + sys.path)
    config = plain_dir / "config.toml"
    with socket.socket() as closed:  # a port bound and not listened on: refused while held
        closed.bind(("127.0.0.1", 0))
        config.write_text('[store]\nurl = "postgresql://127.0.0.1:%d/fractui"\n\n'
                          '[[queues]]\nname = "q"\ngpu = 0.5\n' % closed.getsockname()[1])
        monkeypatch.chdir(shared)
        code = main(["--config", str(config), "jobs"])
    out, err = capfd.readouterr()
    assert not said.exists(), "another user's psycopg ran"
    assert code == 1 and "cannot reach the PostgreSQL server" in err, out + err
