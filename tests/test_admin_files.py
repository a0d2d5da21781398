"""The files fractui keeps for itself on the admin's machine (fractui/state_files.py): the
fleet's debug log and the TUI's scheduler log are never files another local user made, nor in
a folder where one could put theirs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

import pytest

from fractui.fleet import sshlog
from fractui.scheduler.child import ChildScheduler
from remote_agent.daemon.trust import UnsafePath
from tests.conftest import REPO

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


def test_the_tui_refuses_to_start_its_scheduler_on_such_a_log_saying_why(tmp_path):
    """A refusal of the user's, exit 1 with its words, not an internal error."""
    log, why = _attacked(tmp_path, "log of another user")
    os.rename(log, log.with_name("scheduler-tui.log"))
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite:///%s/store.db"\n\n[[queues]]\nname = "q"\n'
                      'gpu = 0.5\n' % tmp_path)
    done = subprocess.run([sys.executable, "-m", "fractui", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          cwd=REPO, env=dict(os.environ, XDG_STATE_HOME=str(tmp_path),
                                             PYTHONPATH=REPO))
    assert done.returncode == 1, done
    assert "refusing TUI's scheduler log %s: %s" % (log.with_name("scheduler-tui.log"), why) \
        in done.stderr and "internal error" not in done.stderr, done.stderr
