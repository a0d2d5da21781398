"""What a host that cannot run the agent as asked looks like: told plainly, with the fix."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from fractui.config import HostConfig
from fractui.fleet.host import HostSession, hello_problem
from fractui.fleet.zipapp import build_agent_archive
from tests import sshd
from tests.conftest import accounts, stop_host
from tests.test_fleet import SshFleet, wait_state

ssh_env = sshd.ssh_env


@pytest.fixture
def fleet_env(ssh_env, tmp_path):
    env = SshFleet(ssh_env, tmp_path)
    yield env
    env.stop()


def session_for(env: SshFleet, host: HostConfig) -> HostSession:
    session = HostSession(host, env.settings(), build_agent_archive)
    session.start()
    session.settled.wait(60)
    return session


@pytest.mark.parametrize("script, words", [
    ("#!/bin/sh\necho 3.6\n", "is Python 3.6; the agent needs 3.9 or newer"),
    ("#!/bin/sh\necho broken >&2\nexit 3\n", "failed on gpu-py: broken"),
    ("#!/bin/sh\necho banana\n", "on gpu-py printed 'banana' when asked for its version"),
    ("#!/bin/sh\necho 3.%s\n" % ("1" * 5000), "on gpu-py printed '3.111"),  # int() takes 4300
])
def test_a_python_that_cannot_run_the_agent_is_named(fleet_env, tmp_path, script, words):
    python = tmp_path / "python3"
    python.write_text(script)
    python.chmod(0o755)
    host = fleet_env.add("gpu-py", "1xL4", python=str(python))
    session = session_for(fleet_env, host)
    try:
        assert session.status.state == "offline"
        assert words in session.status.error
        assert not os.path.exists(host.agent_cache)  # nothing uploaded to a host that can't run
    finally:
        session.stop()


def test_a_host_without_that_python_says_so(fleet_env):
    host = fleet_env.add("gpu-nopy", "1xL4", python="/no/such/python3")
    session = session_for(fleet_env, host)
    try:
        assert session.status.state == "offline"
        assert session.status.error == ("gpu-nopy has no /no/such/python3 (set python = ... for "
                                         "this host)")
    finally:
        session.stop()


def test_an_agent_cache_that_cannot_be_written_is_named(fleet_env, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    host = fleet_env.add("gpu-c", "1xL4", agent_cache=str(blocker / "cache"))
    session = session_for(fleet_env, host)
    try:
        assert session.status.state == "offline"
        assert session.status.error.startswith("cannot put the agent in %s/cache on gpu-c: " % (
            blocker)), session.status.error
    finally:
        session.stop()


# What a planted agent would do if it were run: leave a mark, then fail.
PLANTED = "import pathlib, sys\npathlib.Path(%r).write_text('ran')\nsys.exit(1)\n"


def plant(tmp_path, cache: Path) -> Path:
    """A file under the agent's own name in ``cache`` that is not the agent; the mark it
    leaves when run."""
    mark = tmp_path / "planted-ran"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / build_agent_archive().name).write_text(PLANTED % str(mark))
    return mark


def test_a_file_under_the_agents_name_is_checked_not_trusted(fleet_env, tmp_path):
    """Another agent's bytes by its name (cut by a full disk, or put there) are replaced."""
    archive = build_agent_archive()
    host = fleet_env.add("gpu-p", "1xL4")
    mark = plant(tmp_path, Path(host.agent_cache))
    session = session_for(fleet_env, host)
    try:
        assert session.status.state == "online", session.status.error
        assert session.status.uploaded is True
        assert not mark.exists()
        assert (Path(host.agent_cache) / archive.name).read_bytes() == archive.data
    finally:
        session.stop()


@pytest.mark.parametrize("mode, who", [(0o777, "its group and all users"), (0o770, "its group"),
                                       (0o702, "all users")])
def test_an_agent_cache_others_can_write_is_refused_and_nothing_runs(fleet_env, tmp_path,
                                                                     mode, who):
    """Others could swap the agent there between upload and start (and it may run as root)."""
    host = fleet_env.add("gpu-w", "1xL4")
    cache = Path(host.agent_cache)
    mark = plant(tmp_path, cache)
    cache.chmod(mode)
    session = session_for(fleet_env, host)
    try:
        assert session.status.state == "offline"
        assert session.status.error == (
            "cannot put the agent in {c} on gpu-w: refusing agent_cache {c}: {c} is writable by "
            "{who} (mode {m:04o}), who could replace what the agent reads there; fix it with: "
            "chmod go-w {c}".format(c=cache, who=who, m=mode))
        assert not mark.exists() and not os.path.exists(host.state_dir)
    finally:
        session.stop()


def user_server(ssh_env, pubkey: str) -> sshd.SshServer:
    """sshd reads authorized_keys as the user logging in: keep it where that user can read."""
    workdir = Path(tempfile.mkdtemp(prefix="fractui-sshd-"))
    os.chmod(workdir, 0o755)
    server = sshd.SshServer(workdir, pubkey).start()
    os.chmod(server.authorized_keys_path, 0o644)
    return server


def test_a_plain_user_runs_the_agent_as_itself_and_sudo_refusal_is_plain(ssh_env, plain_user,
                                                                          tmp_path):
    name, home = plain_user
    server = user_server(ssh_env, ssh_env.user_pubkey)
    try:
        ssh_env.trust(server)
        # (the admin's ssh_config in a folder of the admin's: one in the plain user's home
        # would be refused, as that user could change it)
        settings = SshFleet(ssh_env, tmp_path).settings()
        host = HostConfig(name="gpu-user", host="127.0.0.1", port=server.port, user=name,
                          identity_file=str(ssh_env.user_key_path), python="/usr/bin/python3",
                          state_dir=os.path.join(home, "state"), agent_cache=".cache/fractui",
                          sim="1xA100-80GB:mig")
        session = HostSession(host, settings, build_agent_archive)
        session.start()
        try:
            # the simulator allows MIG changes without root (it stands for a host reached as
            # root), so the host is online; the agent itself runs as the plain user
            wait_state(session, "online")
            assert session.call("hello")["privileges"]["root"] is False
            assert os.path.exists(os.path.join(home, ".cache", "fractui"))
        finally:
            session.stop()
            stop_host(host.state_dir)
        sudo = HostSession(HostConfig(**{**host.__dict__, "become": "sudo",
                                         "state_dir": os.path.join(home, "sudo-state")}),
                           settings, build_agent_archive)
        sudo.start()
        try:
            sudo.settled.wait(60)
            assert sudo.status.state == "offline"
            assert sudo.status.error.startswith("sudo -n was refused on gpu-user (")
            assert sudo.status.error.endswith(
                "): allow the login passwordless sudo for the agent's command (docs/cli.md, "
                "\"How hosts are reached\", gives the sudoers line), or reach the host as root")
        finally:
            sudo.stop()
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


def test_a_login_whose_shell_runs_no_command_says_so(fleet_env, plain_user):
    """A login whose shell is nologin: what the shell said was taken for the Python check's
    own failure, whose fix named the python setting. The login shell is named now, and doctor's
    fix is the login's."""
    name, home = plain_user
    with accounts():
        subprocess.run(["usermod", "--shell", "/usr/sbin/nologin", name], check=True)
    server = user_server(fleet_env.env, fleet_env.env.user_pubkey)
    try:
        fleet_env.env.trust(server)
        fleet_env.add_port("gpu-nologin", server.port, user=name, python="/usr/bin/python3",
                           state_dir=os.path.join(home, "state"),
                           agent_cache=os.path.join(home, "cache"))
        said = ("127.0.0.1:%d: the login shell of %s ran no command: This account is currently "
                "not available." % (server.port, name))
        host = fleet_env.status()["gpu-nologin"]
        assert (host["state"], host["error"]) == ("offline", said), host
        doctor = fleet_env.fractui("doctor", "gpu-nologin")
        assert doctor.returncode == 1, doctor.stderr
        assert ("  [FAIL] python       %s\n       fix: give %s a login shell that runs commands, "
                "with rc files quiet where there is no terminal, and no forced command (sshd's "
                "ForceCommand, an authorized_keys command=), or reach the host as another "
                "user\n" % (said, name)) in doctor.stdout, doctor.stdout
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


def test_a_host_that_cannot_change_mig_without_root_is_degraded_with_the_reason():
    hello = {"problems": [], "gpus": [{"mig_capable": True}], "privileges": {
        "root": False, "mig_changes": False, "reason": "the agent runs as uid 1000 without root"}}
    assert hello_problem(hello) == "MIG is read-only: the agent runs as uid 1000 without root"
    assert hello_problem(dict(hello, gpus=[{"mig_capable": False}])) is None
    assert hello_problem(dict(hello, problems=["NVML did not start: no driver"])) == (
        "NVML did not start: no driver")

