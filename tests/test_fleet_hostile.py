"""Ports that take TCP but do not speak SSH as they should, and an sshd that drops mid-session:
every verb says what happened for that host, by name, goes on with the other hosts, and prints
no traceback; what paramiko's threads said is kept in the fleet's debug log, not printed."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from tests import sshd
from tests.conftest import REPO
from tests.test_fleet import SshFleet

pytestmark = pytest.mark.slow  # a fault suite: README, "the slow fault suites"

ssh_env = sshd.ssh_env

TIMEOUT_S = 2.0
SAYS = {
    "silent": "no SSH banner from 127.0.0.1:{port} within 2 s",
    "close": "127.0.0.1:{port} closed the connection without an SSH banner",
    "garbage": "127.0.0.1:{port} does not speak SSH: it sent 'HTTP/1.1 400 Bad Request' "
               "instead of an SSH banner",
    "banner": "the SSH key exchange with 127.0.0.1:{port} (SSH-2.0-OpenSSH_9.2p1 Debian-2) "
              "stalled: no answer within 2 s",
    "mid-kex": "the SSH key exchange with 127.0.0.1:{port} (SSH-2.0-OpenSSH_",
}
# paramiko logs these (with their stack) before the handshake is over: they must be kept
LOGGED = ("silent", "close", "garbage")


@pytest.fixture
def fleet_env(ssh_env, tmp_path):
    env = SshFleet(ssh_env, tmp_path)
    env.connect_timeout = TIMEOUT_S
    yield env
    env.stop()


def clean(done: subprocess.CompletedProcess) -> str:
    """Everything the command printed, checked for tracebacks."""
    out = done.stdout + done.stderr
    assert "Traceback" not in out, out
    return out


def line_about(text: str, words: str) -> str:
    """The one line of ``text`` that holds ``words``."""
    lines = [line for line in text.splitlines() if words in line]
    assert lines, "%r not in:\n%s" % (words, text)
    return lines[0]


@pytest.mark.parametrize("mode", sshd.HostileListener.MODES)
def test_every_verb_says_what_the_port_did_and_goes_on(fleet_env, tmp_path, mode):
    real = fleet_env.env.new_server("real-behind")
    with sshd.HostileListener(mode, target_port=real.port) as bad:
        fleet_env.add("gpu-ok", "1xL4")
        fleet_env.add_port("gpu-bad", bad.port)
        says = SAYS[mode].format(port=bad.port)
        env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state-home"))

        status = fleet_env.fractui("status", env=env)
        assert status.returncode == 1
        assert line_about(clean(status), says).split()[:2] == ["gpu-bad", "offline"]
        assert line_about(status.stdout, "gpu-ok").split()[1] == "online"

        doctor, *others = fleet_env.side_by_side([
            ("doctor", "--json"), ("trust", "gpu-bad", "--yes"),
            ("launch", "gpu-bad", "0", "--memory-mib", "10", "--", "true")], env)
        assert doctor.returncode == 1
        reports = {r["name"]: r for r in json.loads(clean(doctor) and doctor.stdout)["hosts"]}
        assert reports["gpu-ok"]["ok"] is True
        checks = {c["name"]: c for c in reports["gpu-bad"]["checks"]}
        assert checks["ssh"]["status"] == "fail" and says in checks["ssh"]["detail"]
        assert checks["agent"]["status"] == "skip"

        for done in others:
            assert done.returncode == 1, done
            assert "gpu-bad" in line_about(clean(done), says)
        assert bad.accepted >= 4
    if mode in LOGGED:
        with open(tmp_path / "state-home" / "fractui" / "fleet.log") as f:
            kept = f.read()
        assert "Error reading SSH protocol banner" in kept
        assert "Traceback (most recent call last)" in kept


def test_the_host_verbs_on_a_silent_port_name_it_and_exit_1(fleet_env):
    with sshd.HostileListener("silent") as bad:
        fleet_env.add_port("gpu-mute", bad.port)
        says = SAYS["silent"].format(port=bad.port)
        for done in fleet_env.side_by_side([
                ("jobs", "gpu-mute"), ("mig", "gpu-mute", "0", "1g.10gb", "--yes"),
                ("stop", "gpu-mute/j1"), ("logs", "gpu-mute/j1")]):
            assert done.returncode == 1, done
            assert "gpu-mute" in line_about(clean(done), says)


def test_an_sshd_that_drops_mid_session_is_said_by_name(fleet_env):
    fleet_env.add("gpu-drop", "1xL4")
    job = json.loads(fleet_env.fractui(
        "launch", "gpu-drop", "0", "--memory-mib", "10", "--json", "--", sys.executable, "-c",
        "import time\nprint('up', flush=True)\ntime.sleep(60)").stdout)
    follow = subprocess.Popen(
        [sys.executable, "-m", "fractui", "--config", fleet_env.write_config(), "logs", "-f",
         job["ref"]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        stdin=subprocess.DEVNULL)
    try:
        assert follow.stdout.readline() == "up\n"  # following: the session is up
        fleet_env.servers["gpu-drop"].stop()  # sshd and its sessions go away
        out, err = follow.communicate(timeout=60)
    finally:
        if follow.poll() is None:
            follow.kill()
    assert follow.returncode == 1
    assert "Traceback" not in err and "gpu-drop" in err, err
    status = fleet_env.fractui("status")
    assert "Traceback" not in status.stderr
    assert line_about(status.stdout, "gpu-drop").split()[1] == "offline"


def test_paramikos_words_stay_with_the_link_and_in_the_debug_log_without_the_stack(
        monkeypatch, tmp_path):
    """paramiko logs an exception as one record per line of its stack: the link keeps the
    line that says what happened, the debug log keeps all of it."""
    import logging
    import threading

    from fractui.fleet import sshlog

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    umask = os.umask(0o022)  # the usual one: the log is 0600 all the same
    link = sshlog.LinkLog()
    sshlog.watch(threading.current_thread(), link)
    try:
        logger = logging.getLogger("paramiko.transport")
        logger.error("Socket exception: Connection reset by peer (104)")
        for line in ["Traceback (most recent call last):", '  File "x.py", line 1, in run',
                     "    raise SSHException('x')", "paramiko.SSHException: x"]:
            logger.error(line)
        logger.info("Connected (version 2.0, client OpenSSH_9.2)")
    finally:
        sshlog.keeper().links.pop(threading.current_thread(), None)
        os.umask(umask)
    assert link.said() == "Socket exception: Connection reset by peer (104)"
    assert "paramiko.SSHException: x" in link.lines
    sshlog.keeper().flush()
    assert stat.S_IMODE(os.stat(tmp_path / "fractui" / "fleet.log").st_mode) == 0o600
    with open(tmp_path / "fractui" / "fleet.log") as f:
        kept = f.read()
    assert "Traceback (most recent call last):" in kept and "Connection reset by peer" in kept
