"""A damaged file in the agent's state dir is set aside (kept.read_json, kept.read_kept) while
other processes write and set aside the same file: the one set aside is the one read as
damaged, never a file another process wrote in its place meanwhile, and nothing is lost."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List

import pytest

from remote_agent.daemon.kept import read_json, read_kept, record
from remote_agent.daemon.trust import write_private
from remote_agent.mig import journal
from tests.conftest import REPO

# Another process at the state dir: with "set-aside", it reads the file first (which sets the
# damaged one aside); then it writes a new, whole file {"n": 1} in its place as a shim does
# (a temporary file renamed over it), or keeps it as a daemon does (this version's, 2).
OTHER = """
import sys
from remote_agent.daemon.kept import keep, read_json, record
from remote_agent.daemon.trust import write_private
path, first = sys.argv[1:]
if first == "set-aside":
    assert read_json(path, "test file", record({"n": (int,)}, ("n",)), "read as none") is None
if first == "keep":
    keep(path, "test file", {"n": 1})
else:
    write_private(path, b'{"n": 1}')
"""
SHAPE = record({"n": (int,)}, ("n",))


@contextmanager
def other_process_before_a_rename(path: Path, first: str) -> Iterator[List[int]]:
    """Runs OTHER (to its end) at the instant this process is about to take the folder's lock
    to set a file aside, the first time it is: between its read of ``path`` and its setting it
    aside (where a process setting it aside waits for the lock)."""
    ran: List[int] = []

    def hook(frame, event, arg) -> None:
        if event == "c_call" and arg in (fcntl.flock, os.rename) and not ran:
            ran.append(subprocess.run([sys.executable, "-c", OTHER, str(path), first],
                                      cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO)
                                      ).returncode)
    sys.setprofile(hook)
    try:
        yield ran
    finally:
        sys.setprofile(None)


def state_file(tmp_path: Path, content: bytes) -> Path:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    path = state / "kept.json"
    path.write_bytes(content)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("first", ["write", "set-aside"])
def test_a_file_written_while_a_damaged_one_is_set_aside_is_read_not_set_aside(
        tmp_path, caplog, first):
    """A damaged file read; before it is set aside, another process writes a whole one in its
    place (having set the damaged one aside itself, with "set-aside"). The new file is read and
    stays where it is; the damaged one is the one set aside, said once (by whoever set it
    aside). Before, the rename took the new file: it was read as none and set aside as
    damaged (over the damaged one another process had set aside), and so lost."""
    path = state_file(tmp_path, b"[]")
    aside = Path(str(path) + ".damaged")
    caplog.set_level(logging.ERROR, logger="remote_agent.daemon.kept")
    with other_process_before_a_rename(path, first) as ran:
        assert read_json(str(path), "test file", SHAPE, "read as none") == {"n": 1}
    assert ran == [0]
    assert json.loads(path.read_bytes()) == {"n": 1}
    if first == "set-aside":
        assert aside.read_bytes() == b"[]"
    else:  # (the writer replaced it: no one had it to set aside)
        assert not aside.exists()
    assert [r.getMessage() for r in caplog.records] == []
    assert sorted(os.listdir(path.parent)) == [path.name] + (
        [aside.name] if first == "set-aside" else [])  # (nothing else beside it)


def test_a_file_of_this_version_written_while_an_older_one_is_set_aside_is_left(
        tmp_path, caplog):
    """A file an older agent kept (version 1) is read, and before it is set aside as such
    another daemon keeps one of this version in its place: that one stays where it is, for
    the next read, and the log says it was left. Before, the rename took it as version 1's."""
    old = {"version": 1, "boot": journal.boot_id(), "kept": {"0": []}}
    path = state_file(tmp_path, json.dumps(old).encode())
    caplog.set_level(logging.WARNING, logger="remote_agent.daemon.kept")
    with other_process_before_a_rename(path, "keep") as ran:
        assert read_kept(str(path), "test file", SHAPE, "read as none") is None
    assert ran == [0]
    assert read_kept(str(path), "test file", SHAPE, "read as none") == {"n": 1}
    assert os.listdir(path.parent) == [path.name]
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].endswith("read as none; replaced meanwhile, and left as "
                                               "it is"), said


@pytest.fixture
def few_inodes(tmp_path):
    """A real tmpfs of 64 inodes, unmounted afterwards: on tmpfs a hard link takes one, a
    rename none."""
    mount = tmp_path / "few"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=64,mode=0700",
                           "tmpfs", str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.fail("this test mounts a tmpfs, which needs root: %s" % made.stderr)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_file_written_meanwhile_is_put_back_where_no_link_can_be_made(few_inodes, caplog):
    """A damaged file read; before it is set aside, another process writes a whole one in its
    place, and then the filesystem has no inode left, which a hard link takes (tmpfs): the
    new file, taken by the rename that sets the damaged one aside, is put back all the same,
    read, and nothing is said. Before, it was left under the reader's private name, none at
    the file's own, and the log said the file was damaged and could not be set aside."""
    path = state_file(few_inodes, b"[]")
    fill = few_inodes / "fill"
    fill.mkdir()
    ran: List[int] = []

    def hook(frame, event, arg) -> None:
        if event == "c_call" and arg is os.rename and not ran:
            ran.append(subprocess.run([sys.executable, "-c", OTHER, str(path), "write"],
                                      cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO)
                                      ).returncode)
            try:
                for n in range(64):
                    (fill / str(n)).touch()
            except OSError:
                pass  # (no inode left: as meant)
    caplog.set_level(logging.ERROR, logger="remote_agent.daemon.kept")
    sys.setprofile(hook)
    try:
        read = read_json(str(path), "test file", SHAPE, "read as none")
    finally:
        sys.setprofile(None)
    assert ran == [0] and len(os.listdir(fill)) < 64
    assert read == {"n": 1}
    assert json.loads(path.read_bytes()) == {"n": 1}
    assert sorted(os.listdir(path.parent)) == [path.name]
    assert [r.getMessage() for r in caplog.records] == []


def other_process(path: Path, first: str) -> int:
    """OTHER run to its end at ``path``."""
    return subprocess.run([sys.executable, "-c", OTHER, str(path), first], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO)).returncode


@contextmanager
def profiled(hook) -> Iterator[None]:
    """``hook`` called at each call and return of this process's functions meanwhile."""
    sys.setprofile(hook)
    try:
        yield
    finally:
        sys.setprofile(None)


@pytest.fixture
def own_ext4(tmp_path):
    """A real ext4 of 8 MiB of its own (a loop device), unmounted afterwards: ext4 gives a
    new file the lowest inode number free, one just freed where there is, and nothing else
    takes it first as on a filesystem other tests write to at once."""
    image, mount = tmp_path / "ext4.img", tmp_path / "ext4"
    mount.mkdir()
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    for argv in (["mkfs.ext4", "-q", str(image)], ["mount", "-o", "loop", str(image),
                                                   str(mount)]):
        made = subprocess.run(argv, capture_output=True, text=True)
        if made.returncode != 0:
            pytest.fail("this test mounts an ext4 image, which needs root: %s" % made.stderr)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_file_written_twice_meanwhile_on_the_damaged_ones_inode_number_is_not_set_aside(
        own_ext4, caplog):
    """A damaged file read; before it is set aside, a writer replaces it twice. The file read
    is held open until it is set aside, so its inode number is no other file's: the second
    new file is read, and stays. Before, the file read was closed after its read: freed by
    the first write, its number went to the second, which was taken as the file read and
    set aside as damaged."""
    path = state_file(own_ext4, b"[]")
    read_ino = path.stat().st_ino
    ran: List[int] = []

    def hook(frame, event, arg) -> None:
        if event == "c_call" and arg in (fcntl.flock, os.rename) and not ran:
            ran.extend(other_process(path, "write") for _ in range(2))
    caplog.set_level(logging.ERROR, logger="remote_agent.daemon.kept")
    with profiled(hook):
        assert read_json(str(path), "test file", SHAPE, "read as none") == {"n": 1}
    assert ran == [0, 0]
    assert json.loads(path.read_bytes()) == {"n": 1} and path.stat().st_ino != read_ino
    assert os.listdir(path.parent) == [path.name]
    assert [r.getMessage() for r in caplog.records] == []


# A reader killed (SIGKILL) just after its first rename of a damaged file it sets aside; with
# "write", a writer has replaced the file by then (so what it took is the writer's).
KILLED = """
import os, signal, sys
from remote_agent.daemon.kept import read_json, record
from remote_agent.daemon.trust import write_private
path, first = sys.argv[1:]
renames = []
def hook(frame, event, arg):
    if arg is os.rename and event == "c_call" and first == "write" and not renames:
        write_private(path, b'{"n": 1}')
    if arg is os.rename and event == "c_return":
        renames.append(1)
        os.kill(os.getpid(), signal.SIGKILL)
sys.setprofile(hook)
read_json(path, "test file", record({"n": (int,)}, ("n",)), "read as none")
"""


@pytest.mark.parametrize("first", ["write", "damaged"])
def test_a_file_a_reader_killed_while_setting_it_aside_left_is_put_back(tmp_path, caplog,
                                                                        first):
    """A reader setting a damaged file aside is killed between its two renames, the file
    under its own name. The next read puts it back and reads it: the writer's new file
    (with "write") is the answer, where it stays; the damaged one is set aside, as it was
    to be. Before, it was left under the dead reader's name, which nothing reads: the
    writer's file was lost, and the damaged one not where its message says it is."""
    path = state_file(tmp_path, b"[]")
    killed = subprocess.run([sys.executable, "-c", KILLED, str(path), first], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=REPO))
    assert killed.returncode == -9 and not path.exists()
    caplog.set_level(logging.WARNING, logger="remote_agent.daemon.kept")
    read = read_json(str(path), "test file", SHAPE, "read as none")
    said = [r.getMessage() for r in caplog.records]
    assert said[0].endswith("where a reader stopped while setting it aside left it; put "
                            "back"), said
    if first == "write":
        assert read == {"n": 1} and json.loads(path.read_bytes()) == {"n": 1}
        assert os.listdir(path.parent) == [path.name]
    else:
        assert read is None and len(said) == 2 and "set aside as" in said[1]
        assert os.listdir(path.parent) == [path.name + ".damaged"]


def blocked_on_a_lock(pid: int) -> bool:
    """Whether process ``pid`` waits for a lock another holds (/proc/locks: "->")."""
    with open("/proc/locks") as locks:
        return any(line.split()[1] == "->" and str(pid) in line.split()[2:6]
                   for line in locks)


READER = """
import json, sys
from remote_agent.daemon.kept import read_json, record
print(json.dumps(read_json(sys.argv[1], "test file", record({"n": (int,)}, ("n",)),
                           "read as none")))
"""


def test_a_reader_between_the_two_renames_waits_and_reads_the_file_put_back(tmp_path):
    """A damaged file read; a writer replaces it; the reader's first rename (to set the
    damaged one aside) takes the writer's file, and in that instant another process reads:
    it waits for the file to be put back, and reads it. Before, it found no file there and
    read none, as if nothing had been written."""
    path = state_file(tmp_path, b"[]")
    other: List[subprocess.Popen] = []

    def hook(frame, event, arg) -> None:
        if arg is os.rename and event == "c_call" and not other:
            assert other_process(path, "write") == 0
        if arg is os.rename and event == "c_return" and not other:
            other.append(subprocess.Popen([sys.executable, "-c", READER, str(path)], cwd=REPO,
                                          env=dict(os.environ, PYTHONPATH=REPO),
                                          stdout=subprocess.PIPE, text=True))
            while other[0].poll() is None and not blocked_on_a_lock(other[0].pid):
                pass  # (until it has read, or waits for this one)
    with profiled(hook):
        assert read_json(str(path), "test file", SHAPE, "read as none") == {"n": 1}
    out, _ = other[0].communicate()
    assert other[0].returncode == 0 and json.loads(out) == {"n": 1}


def test_a_file_replaced_by_a_damaged_one_at_each_read_is_read_as_none_and_said(tmp_path,
                                                                                 caplog):
    """A damaged file replaced by another damaged one each time before it can be set aside
    (a writer that writes nothing else) is read a few times, not for good: then it is read as
    none, and the log says so once, naming it and what happened. Before, the reads went on
    as long as the writer did."""
    path = state_file(tmp_path, b"[]")
    writes: List[int] = []

    def hook(frame, event, arg) -> None:
        if event == "c_call" and arg in (fcntl.flock, os.rename) and len(writes) < 20:
            writes.append(1)
            write_private(str(path), b"[]")
    caplog.set_level(logging.ERROR, logger="remote_agent.daemon.kept")
    with profiled(hook):
        assert read_json(str(path), "test file", SHAPE, "read as none") is None
    assert len(writes) < 20
    assert [r.getMessage() for r in caplog.records] == [
        "%s (the test file) was damaged at each of 3 reads, and each time replaced by another "
        "file before it could be set aside: read as none this time, and read as none" % path]
    assert path.read_bytes() == b"[]" and os.listdir(path.parent) == [path.name]


def test_a_damaged_file_that_cannot_be_renamed_on_stays_where_it_is_said_once(tmp_path,
                                                                               caplog):
    """A damaged file whose second rename fails (here ``<name>.damaged`` is a folder; a full
    disk where the folder must grow, an I/O error) is put back at once: it stays at its name
    between reads, said once however often it is read, as one that cannot be set aside.
    Before, it was left as ``<name>.taking``, found at neither name by whoever looks (a job's
    end said as never recorded), and each later read put it back saying a reader had stopped
    while setting it aside."""
    path = state_file(tmp_path, b"[]")
    (tmp_path / "state" / "kept.json.damaged" / "in").mkdir(parents=True)
    caplog.set_level(logging.WARNING, logger="remote_agent.daemon.kept")
    for _ in range(3):
        assert read_json(str(path), "test file", SHAPE, "read as none") is None
        assert path.read_bytes() == b"[]"
        assert sorted(os.listdir(path.parent)) == [path.name, path.name + ".damaged"]
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith(
        "%s (the test file) is damaged (TypeError: not an object but list) and cannot be set "
        "aside (" % path), said
