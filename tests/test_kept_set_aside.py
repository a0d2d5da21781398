"""A damaged file in the agent's state dir is set aside (kept.read_json, kept.read_kept) while
other processes write and set aside the same file: the one set aside is the one read as
damaged, never a file another process wrote in its place meanwhile, and nothing is lost."""

from __future__ import annotations

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
    """Runs OTHER (to its end) at the instant this process is about to rename a file, the
    first time it is: between its read of ``path`` and its setting it aside."""
    ran: List[int] = []

    def hook(frame, event, arg) -> None:
        if event == "c_call" and arg in (os.rename, os.replace) and not ran:
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
