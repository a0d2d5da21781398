"""``become = "sudo"`` for real: a plain login, allowed passwordless sudo by a sudoers line
of its own, reached through real sshd; the agent runs as root through the real sudo."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import stat
import subprocess
import textwrap
from types import SimpleNamespace
from typing import Callable, Iterator, List, Optional

import pytest

from fractui.config import ROOT_STATE_DIR, Config, HostConfig
from fractui.fleet.client import AgentCallError
from fractui.fleet.doctor import diagnose
from fractui.fleet.host import HostSession
from fractui.fleet.zipapp import build_agent_archive
from remote_agent.rpc import jsonrpc as rpc
from tests import sshd
from tests.conftest import REPO, stop_host
from tests.test_fleet import SshFleet, wait_state
from tests.test_fleet_hosts import user_server
from tests.test_jobs import wait_job

ssh_env = sshd.ssh_env

UIDS = ["/bin/sh", "-c", "id -ru; id -u"]  # a job's real and effective uid


def _why_not() -> Optional[str]:
    """Why this machine cannot run a real sudo for a plain user, or None where it can."""
    if os.geteuid() != 0:
        return "a real become needs root, to make a user and write /etc/sudoers.d"
    missing = [tool for tool in ("sudo", "visudo") if shutil.which(tool) is None]
    return "no %s on this machine (.ci/run installs sudo)" % " or ".join(
        missing) if missing else None


WHY_NOT = _why_not()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


@pytest.fixture
def sudoers() -> Iterator[Callable[[str], None]]:
    """allow(line): the line put in a sudoers.d file of this test's own, checked by visudo
    first, 0440; removed afterwards, whatever happened."""
    path = "/etc/sudoers.d/fractui-test-%d" % os.getpid()
    draft = "/etc/sudoers.d/.fractui-test-%d.draft" % os.getpid()  # a '.': sudo skips it

    def allow(line: str) -> None:
        with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o440), "w") as f:
            f.write(line + "\n")
        checked = subprocess.run(["visudo", "-cf", draft], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        os.rename(draft, path)

    try:
        yield allow
    finally:
        for made in (draft, path):
            if os.path.exists(made):
                os.unlink(made)


def agent_calls(session: HostSession) -> SimpleNamespace:
    """The session as the agent's helpers here call an agent: call(method, **params)."""
    return SimpleNamespace(call=lambda method, **params: session.call(method, params))


def mount_type(path: str) -> str:
    """The filesystem type of the longest mount point above ``path``."""
    return subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", path], capture_output=True,
                          text=True, check=True).stdout.strip()


def uid_of_process(pid: int) -> int:
    """The real uid /proc says the process runs as."""
    with open("/proc/%d/status" % pid) as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Uid:"))


def agent_line(login: str, state_dir: str) -> str:
    """The sudoers line docs/cli.md gives an admin (its one ``sudoers`` block), for this login
    and state dir in place of its alice and /var/lib/fractui-agent."""
    with open(os.path.join(REPO, "docs", "cli.md"), encoding="utf-8") as f:
        blocks = re.findall(r"^ *```sudoers\n(.*?)^ *```$", f.read(), re.M | re.S)
    assert len(blocks) == 1, blocks
    line = textwrap.dedent(blocks[0])
    assert line.startswith("alice ") and line.count(ROOT_STATE_DIR) == 1, line
    return login + line[len("alice"):].replace(ROOT_STATE_DIR, state_dir)


@pytest.fixture
def through_sudo(ssh_env, tmp_path) -> Iterator[Callable[[str, str], HostSession]]:
    """start(login, state_dir): a session to a host reached over real sshd as ``login`` with
    become = "sudo"; stopped afterwards, with whatever runs for that state dir."""
    server = user_server(ssh_env, ssh_env.user_pubkey)
    ssh_env.trust(server)
    started: List[HostSession] = []

    def start(login: str, state_dir: str) -> HostSession:
        host = HostConfig(name="gpu-sudo", host="127.0.0.1", port=server.port, user=login,
                          identity_file=str(ssh_env.user_key_path), python="/usr/bin/python3",
                          become="sudo", state_dir=state_dir, sim="1xL4")
        session = HostSession(host, SshFleet(ssh_env, tmp_path).settings(), build_agent_archive)
        started.append(session)
        session.start()
        return session

    try:
        yield start
    finally:
        for session in started:
            session.stop()
            stop_host(session.cfg.state_dir)
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


def powers_refused(session: HostSession, name: str, why: str) -> None:
    """A launch run as ``name`` is NOT_PERMITTED, its words naming the user, its uid and
    ``why`` (their start), as one who holds the agent's powers."""
    with pytest.raises(AgentCallError) as refused:
        session.call("job.launch", {"key": "k-as-" + name, "gpu": 0, "memory_mib": 10,
                                    "run_as": name, "argv": UIDS})
    assert refused.value.code == rpc.NOT_PERMITTED
    assert refused.value.message.startswith("run_as %r is uid %d on this host, %s" % (
        name, pwd.getpwnam(name).pw_uid, why)), refused.value.message


def test_become_sudo_runs_the_agent_as_root_and_jobs_as_their_users(plain_users, sudoers,
                                                                     through_sudo, tmp_path):
    """The sudoers line docs/cli.md gives, and nothing more, is what the agent needs; jobs then
    run as their users, but never as a login, who can become root again: the one that
    started the daemon, nor another whose own sudo reached that daemon later."""
    login, home = plain_users()
    member, _member_home = plain_users()
    other, _other_home = plain_users()
    state_dir = str(tmp_path / "state")
    sudoers(agent_line(login, state_dir) + agent_line(other, state_dir))
    session = through_sudo(login, state_dir)
    wait_state(session, "online")
    assert session.call("hello")["privileges"]["root"] is True
    assert uid_of_process(session.call("daemon.version")["pid"]) == 0

    # the zipapp is the login's, in its own cache; the state dir root's alone
    cache = os.path.join(home, ".cache", "fractui")
    zipapp = os.path.join(cache, build_agent_archive().name)
    login_uid = pwd.getpwnam(login).pw_uid
    for path in (cache, zipapp):
        st = os.stat(path)
        assert st.st_uid == login_uid and not st.st_mode & 0o022, path
    st = os.stat(state_dir)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o700)

    ran = session.call("job.launch", {"key": "k-agent", "gpu": 0, "memory_mib": 10,
                                      "argv": UIDS})
    assert wait_job(agent_calls(session), ran["id"])["exit_code"] == 0
    assert session.call("job.logs", {"job": ran["id"]})["lines"] == ["0", "0"]

    powers_refused(session, login, "the user who started the agent with sudo: ")

    pid = session.call("daemon.version")["pid"]
    second = through_sudo(other, state_dir)
    wait_state(second, "online")
    assert second.call("daemon.version")["pid"] == pid  # the same daemon
    powers_refused(session, other, "a user who reached the agent through sudo ")

    ran = session.call("job.launch", {"key": "k-member", "gpu": 0, "memory_mib": 10,
                                      "run_as": member, "argv": UIDS})
    assert wait_job(agent_calls(session), ran["id"])["exit_code"] == 0
    assert session.call("job.logs", {"job": ran["id"]})["lines"] == [
        str(pwd.getpwnam(member).pw_uid)] * 2
    assert sorted(j["key"] for j in session.call("job.list")["jobs"]) == ["k-agent", "k-member"]

    # doctor, whose checks run as the login, finds the host as it is
    report = diagnose(Config(path=str(tmp_path / "config.toml"), hosts=(session.cfg,),
                             ssh=session.ssh), session.cfg)
    assert report.ok, report.record()
    assert [c.detail for c in report.checks if c.name in ("privileges", "state dir")] == [
        "root", "%s on %s" % (state_dir, mount_type(state_dir))]


def test_root_refuses_a_state_dir_in_the_logins_home(plain_user, sudoers, through_sudo):
    """Why the config keeps a become host's state dir out of the login's home (the plain
    default's place): root's agent refuses it, as that user could change what root runs."""
    login, home = plain_user
    state_dir = os.path.join(home, ".local", "state", "fractui-agent")
    sudoers(agent_line(login, state_dir))
    session = through_sudo(login, state_dir)
    session.settled.wait(60)
    assert session.status.state == "offline"
    assert ("refusing state dir %s: %s is owned by uid %d, not by root or uid 0" % (
        state_dir, home, pwd.getpwnam(login).pw_uid)) in session.status.error, (
            session.status.error)
