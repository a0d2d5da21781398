"""The host agent must run on a bare host: Python >= 3.9, the standard library and pynvml."""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import pytest

from fractui.fleet.host import HostSession
from fractui.fleet.transport.base import MIN_PYTHON
from fractui.fleet.zipapp import build_agent_archive
from remote_agent.jobs.store import FINISHED
from tests.conftest import REPO
from tests.sshd import in_mount_namespace
from tests.test_fleet import fleet_env, ssh_env, wait_state  # noqa: F401 - fixtures

AGENT = os.path.join(REPO, "remote_agent")


def vermin(*paths: str) -> subprocess.CompletedProcess:
    exe = shutil.which("vermin", path=os.path.dirname(sys.executable)) or shutil.which("vermin")
    assert exe, "vermin is a test dependency: pip install -e '.[test]'"
    return subprocess.run([exe, "-t=3.9-", "--violations", "--no-tips", *paths],
                          capture_output=True, text=True)


def test_vermin_finds_nothing_newer_than_python_3_9_in_the_agent():
    result = vermin(AGENT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_vermin_would_catch_a_newer_construct(tmp_path):
    newer = tmp_path / "newer.py"
    newer.write_text("match 1:\n    case 1:\n        pass\n")
    assert vermin(str(newer)).returncode != 0


def test_the_agent_imports_only_the_standard_library_pynvml_and_itself():
    allowed = set(sys.stdlib_module_names) | {"pynvml", "remote_agent"}
    for folder, _, files in os.walk(AGENT):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            tree = ast.parse(open(path, encoding="utf-8").read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    roots = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    roots = [node.module.split(".")[0]]
                else:
                    continue
                for root in roots:
                    assert root in allowed, "%s imports %s" % (path, root)


def oldest_python() -> Optional[str]:
    """An interpreter of the oldest Python the agent supports (MIN_PYTHON) on this machine:
    python3.X on PATH or one of pyenv's; None if there is none. Each is asked its version (a
    pyenv shim may stand for a version that is not installed) and its own path: a shim is a
    script that finds its Python by the caller's environment, which an SSH login has not."""
    name = "python%d.%d" % MIN_PYTHON
    found = [shutil.which(name)] + sorted(glob.glob(os.path.expanduser(
        "~/.pyenv/versions/%d.%d.*/bin/python" % MIN_PYTHON)))
    for path in filter(None, found):
        done = subprocess.run([path, "-c", "import sys; print(sys.version_info[:2]); "
                               "print(sys.executable)"], capture_output=True, text=True)
        said = done.stdout.splitlines()
        if done.returncode == 0 and len(said) == 2 and said[0] == str(MIN_PYTHON):
            return said[1]
    return None


def test_the_agent_runs_under_the_oldest_python_it_supports(fleet_env):  # noqa: F811
    """vermin reads the code; this runs it: the zipapp deployed over real SSH with ``python``
    set to the oldest Python, its daemon under that Python, a MIG change and a job to its end.
    What vermin cannot see (a method of a value it cannot type, ``int | str`` at run time)
    fails here."""
    python = oldest_python()
    if python is None:
        pytest.skip("no Python %d.%d here (python%d.%d on PATH or ~/.pyenv/versions/%d.%d.*): "
                    "the agent is not run under its oldest Python" % (MIN_PYTHON * 3))
    host = fleet_env.add("gpu-old", "1xA100-40GB:mig,1xL4", python=python)
    session = HostSession(host, fleet_env.settings(), build_agent_archive)
    session.start()
    try:
        wait_state(session, "online", 60)
        daemon = session.call("daemon.version")
        assert os.path.realpath("/proc/%d/exe" % daemon["pid"]) == os.path.realpath(python)
        applied = session.call("mig.apply", {"gpu": 0, "profile": "3g.20gb"})
        assert applied["description"] == "create 3g.20gb at slot 4; no running job touched"
        job = session.call("job.launch", {
            "key": "k-old", "gpu": 1, "memory_mib": 100,
            "argv": [python, "-c", "import sys; print(sys.version_info[:2])"]})
        deadline = time.time() + 30
        while (ended := session.call("job.get", {"job": job["id"]}))["state"] not in FINISHED:
            assert time.time() < deadline, "the job did not end: %s" % ended
            time.sleep(0.2)
        assert (ended["state"], ended["exit_code"]) == ("exited", 0), ended
        assert session.call("job.logs", {"job": job["id"]})["lines"] == [str(MIN_PYTHON)]
    finally:
        session.stop()



def test_the_agent_runs_whatever_a_login_shells_rc_file_prints(fleet_env, tmp_path):  # noqa: F811
    """Root's ~/.bashrc greets on every login, a terminal or not (bash reads it for a command
    sshd runs too), set up for the host's sshd alone, in a mount namespace of its own. What
    it printed came first on each command's stdout: the Python check read "Welcome...\n3.11"
    as the version, and the host stayed offline. It is skipped now."""
    rc = tmp_path / "bashrc"
    rc.write_text("echo 'Welcome to gpu-chatty!'\nprintf 'no newline'\necho to stderr >&2\n")
    fleet_env.add("gpu-chatty", "1xL4",
                  prefix=in_mount_namespace(["--bind", str(rc), "/root/.bashrc"]))
    host = fleet_env.status()["gpu-chatty"]
    assert (host["state"], host["error"]) == ("online", None), host
    job = json.loads(fleet_env.fractui("launch", "gpu-chatty", "0", "--memory-mib", "10",
                                       "--json", "--", "/bin/echo", "ran").stdout)
    followed = fleet_env.fractui("logs", job["ref"], "-f", timeout=60)
    assert (followed.returncode, followed.stdout) == (0, "ran\n"), followed.stderr



def test_doctor_says_sudo_is_missing_on_a_become_host_whose_path_has_none(
        fleet_env, tmp_path):  # noqa: F811
    """A host with become = "sudo" whose login's PATH has no sudo (root's ~/.bashrc sets a
    PATH of every program of the host's but sudo, for its sshd alone): the host is offline
    saying sudo is not found there, and doctor's fix is to install sudo there (or put it on
    the PATH), or reach the host as root without become. Before, the fix was the sudoers
    line, which a host without sudo cannot use."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        for name in os.listdir(folder):
            if name != "sudo" and not (bin_dir / name).exists():
                (bin_dir / name).symlink_to(os.path.join(folder, name))
    rc = tmp_path / "bashrc"
    rc.write_text("PATH=%s\n" % bin_dir)
    fleet_env.add("gpu-nosudo", "1xL4", become="sudo",
                  prefix=in_mount_namespace(["--bind", str(rc), "/root/.bashrc"]))
    host = fleet_env.status()["gpu-nosudo"]
    fix = ("install sudo on the host, on the login's PATH there, or reach the host as root "
           "and drop become")
    assert host["state"] == "offline", host
    assert host["error"].startswith('sudo is not found on gpu-nosudo (become = "sudo"; it '
                                    'said: bash: ') and host["error"].endswith("): " + fix), host
    doctor = fleet_env.fractui("doctor", "gpu-nosudo")
    assert doctor.returncode == 1, doctor.stderr
    assert "sudoers" not in doctor.stdout, doctor.stdout
    assert "       fix: %s\n" % fix in doctor.stdout, doctor.stdout


def test_an_agent_put_over_sftp_through_a_greeting_login_shell_says_why_it_cannot(
        fleet_env, tmp_path):  # noqa: F811
    """The host's sshd runs its SFTP server through the login shell, as OpenSSH's own
    configuration does (``Subsystem sftp /usr/lib/openssh/sftp-server``), and root's ~/.bashrc
    greets: the greeting comes first on the SFTP channel too, where no marker can skip it. The
    host is offline saying so, and what to change; it was "internal error: SFTPError: Garbage
    packet received", naming neither the host nor the cause."""
    rc = tmp_path / "bashrc"
    rc.write_text("echo 'Welcome to gpu-chatty!'\n")
    fleet_env.add("gpu-chatty", "1xL4", sftp="/usr/lib/openssh/sftp-server",
                  prefix=in_mount_namespace(["--bind", str(rc), "/root/.bashrc"]))
    host = fleet_env.status()["gpu-chatty"]
    port = fleet_env.proxies["gpu-chatty"].port
    said = ("127.0.0.1:%d: SFTP did not start: its first answer was no SFTP (Garbage packet "
            "received): sshd runs the SFTP server through the login shell of root, whose rc "
            "files (e.g. ~/.bashrc) print on a login that is no terminal: make them quiet "
            "there" % port)
    assert (host["state"], host["error"]) == ("offline", said), host
    doctor = fleet_env.fractui("doctor", "gpu-chatty")
    assert doctor.returncode == 1, doctor.stderr
    assert "  [FAIL] agent        %s\n" % said in doctor.stdout, doctor.stdout


SFTP_RELAY = """import os, struct, subprocess, sys
server = subprocess.Popen(["/usr/lib/openssh/sftp-server"], stdout=subprocess.PIPE)
def read(n):
    data = b""
    while len(data) < n:
        more = os.read(server.stdout.fileno(), n - len(data))
        if not more:
            sys.exit(0)
        data += more
    return data
"""
GARBLING_SFTP = """for _ in range(%d):  # the server's first answers as they are, then no SFTP
    head = read(4)
    os.write(1, head + read(struct.unpack(">I", head)[0]))
os.write(1, b"\\xffthe server broke\\n")
while os.read(server.stdout.fileno(), 65536):  # open until the client leaves, so that what it
    pass  # reads next is that, not the channel closed (said "Socket is closed", 2 runs in 20)
"""


# the server's answers as they are until the agent's file is open and one write was answered
UNTIL_A_WRITE = """opened = False
while True:
    head = read(4)
    body = read(struct.unpack(">I", head)[0])
    os.write(1, head + body)
    if opened:
        break
    opened = body[0] == 102  # SSH_FXP_HANDLE
"""


def added_behind_sftp(env, folder: Path, name: str, then: str) -> None:
    """Host ``name`` added to the fleet ``env``, its sshd's SFTP server a script (in
    ``folder``) that relays the real one's answers (SFTP_RELAY), then does ``then``."""
    script = folder / ("%s-sftp" % name)
    script.write_text("#!%s\n%s%s" % (sys.executable, SFTP_RELAY, then))
    script.chmod(0o755)
    env.add(name, "1xL4", sftp=str(script))


def test_an_sftp_server_whose_answers_break_mid_upload_is_said_with_the_host(
        fleet_env, tmp_path):  # noqa: F811
    """The SFTP server starts well, then answers what is no SFTP while the agent is put: the
    host is offline naming the host, the folder and what came; it was "internal error:
    SFTPError: Garbage packet received"."""
    added_behind_sftp(fleet_env, tmp_path, "gpu-garbled", GARBLING_SFTP % 3)
    host = fleet_env.status()["gpu-garbled"]
    assert host["state"] == "offline", host
    assert "on gpu-garbled: the SFTP server's answer was no SFTP (Garbage packet received)" \
        in host["error"], host
    assert "internal error" not in host["error"], host


CLOSING_SFTP = UNTIL_A_WRITE + "server.kill()\n"  # then it ends, and its channel closes


def test_an_sftp_server_that_ends_mid_upload_is_said_as_the_hosts(
        fleet_env, tmp_path):  # noqa: F811
    """The SFTP server starts well, then ends while the agent is put (its channel closes): the
    host is offline saying the host's SFTP server ended the upload and where to look; it was
    "Socket is closed (set agent_cache to a writable directory)", though the folder was fine."""
    added_behind_sftp(fleet_env, tmp_path, "gpu-closing", CLOSING_SFTP)
    host = fleet_env.status()["gpu-closing"]
    assert host["state"] == "offline", host
    assert "agent_cache" not in host["error"], host
    assert "on gpu-closing: the host's SFTP server ended during the upload" in host["error"], host
    cache = tmp_path / "cache" / "gpu-closing"
    assert [name for name in os.listdir(cache) if ".pyz.part-" in name], host  # (mid-upload)


# then no more, and the test is told (a file made) to drop the link
HOLDING_SFTP = UNTIL_A_WRITE + """open(%r, "w").close()
server.wait()  # (its stdin, the channel's, ends as sshd ends the session)
"""


def test_an_ssh_link_that_drops_mid_upload_is_said_as_the_links(
        fleet_env, tmp_path):  # noqa: F811
    """The SSH link drops (its TCP connection cut) while the agent is put, the SFTP server
    waiting: the host is offline saying the link dropped during the upload and that the next
    connect tries it again; it was "Server connection dropped: (set agent_cache to a writable
    directory)", though the folder was fine."""
    holding = tmp_path / "holding"
    added_behind_sftp(fleet_env, tmp_path, "gpu-dropped", HOLDING_SFTP % str(holding))
    status = []
    asking = threading.Thread(target=lambda: status.append(fleet_env.status()))
    asking.start()
    try:
        deadline = time.monotonic() + 60
        while not holding.exists():
            assert asking.is_alive() and time.monotonic() < deadline, status
            time.sleep(0.05)
        fleet_env.proxies["gpu-dropped"].cut()
    finally:
        asking.join()
    host = status[0]["gpu-dropped"]
    assert host["state"] == "offline", host
    assert "agent_cache" not in host["error"] and "SFTP server" not in host["error"], host
    assert "on gpu-dropped: the SSH link dropped during the upload" in host["error"], host


@pytest.mark.slow  # (the Python check's own timeout, 30 s, runs out)
def test_a_login_shell_whose_rc_file_waits_for_input_is_the_logins_to_fix(
        fleet_env, tmp_path):  # noqa: F811
    """Root's ~/.bashrc reads a line of stdin before the command runs, which no one writes
    while the command is awaited (fractui writes to the agent only once the shell ran it): the
    Python check's time runs out, said as the login shell's, with doctor's fix the login's.
    It was said as the link's: "check the host's network and sshd"."""
    rc = tmp_path / "bashrc"
    rc.write_text("read line\n")
    fleet_env.add("gpu-waits", "1xL4",
                  prefix=in_mount_namespace(["--bind", str(rc), "/root/.bashrc"]))
    doctor = fleet_env.fractui("doctor", "gpu-waits", timeout=120)
    assert doctor.returncode == 1, doctor.stderr
    said = ("127.0.0.1:%d: the login shell of root did not run %s within 30 s: its rc files "
            "(e.g. ~/.bashrc) wait where there is no terminal (for input, a prompt, a slow "
            "command): make them go on at once there" % (fleet_env.proxies["gpu-waits"].port,
                                                          sys.executable))
    assert ("  [FAIL] python       %s\n       fix: give root a login shell that runs commands, "
            "with rc files quiet where there is no terminal" % said) in doctor.stdout, \
        doctor.stdout
