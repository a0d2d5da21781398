"""Local users cannot attack a host's agent: the bridge talks to no socket another user could
have planted, the daemon trusts no state another user could change, and everything the agent
creates is its user's alone. Attackers are a real second account (the bridge runs as it) or
another uid that root hands files to."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from fractui.fleet.zipapp import build_agent_archive
from remote_agent.daemon.paths import AgentPaths
from remote_agent.daemon.trust import UnsafePath, open_private
from remote_agent.mig.journal import MigJournal
from remote_agent.rpc import jsonrpc as rpc
from tests import acl
from tests.conftest import REPO, AgentError, AgentProcess, stop_host
from tests.sshd import in_mount_namespace
from tests.test_job_supervision import wait_until
from tests.test_jobs import alive, script, wait_job
from tests.test_region_removal import held_rm

OTHER_UID = 54321  # a uid with no account: "another user" for files root hands over


class Trap:
    """A listening socket where the agent's socket would be, recording any connection."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.connected = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            self.connected.set()
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def agent_in_home(home: str) -> str:
    """The agent's zipapp written in ``home`` (0644), for that home's user to run: its path."""
    archive = os.path.join(home, "agent.pyz")
    with open(archive, "wb") as f:
        f.write(build_agent_archive().data)
    os.chmod(archive, 0o644)
    return archive


def as_home_user(home: str, **env: str) -> dict:
    """subprocess's arguments that run a program as the user whose ``home`` it is: its uid and
    group and no other group, in its home, HOME and a plain PATH (and ``env``) its whole
    environment."""
    info = os.stat(home)
    return dict(user=info.st_uid, group=info.st_gid, extra_groups=[], cwd=home,
                env=dict({"HOME": home, "PATH": "/usr/bin:/bin"}, **env))


@pytest.fixture
def as_user(plain_user, tmp_path):
    """run(state_dir_name) -> (exit code, stderr) of the agent's bridge run as a plain user
    (from a zipapp in its home), which asks its daemon for daemon.version."""
    name, home = plain_user
    uid = os.stat(home).st_uid
    archive = agent_in_home(home)
    paths = AgentPaths(os.path.join(home, "state"))  # its socket dir is /tmp/fractui-<uid>
    socket_dir = "/tmp/fractui-%d" % uid
    subprocess.run(["rm", "-rf", socket_dir], check=True)  # an earlier account's, of this uid

    def run(**env: str):
        proc = subprocess.run(
            ["/usr/bin/python3", archive, "serve", "--stdio", "--state-dir", paths.state_dir,
             "--sim", "1xL4"], input=b'{"jsonrpc": "2.0", "id": 1, "method": "daemon.version"}\n',
            capture_output=True, timeout=60, **as_home_user(home, **env))
        return proc.returncode, proc.stdout.decode(), proc.stderr.decode()

    yield run, uid, socket_dir, paths
    subprocess.run(["rm", "-rf", socket_dir], check=False)


def test_the_bridge_runs_as_a_plain_user_when_all_is_its_own(as_user):
    run, uid, socket_dir, _paths = as_user
    code, out, err = run()
    assert code == 0, err
    assert '"result"' in out
    st = os.lstat(socket_dir)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (uid, 0o700)


@pytest.mark.parametrize("attack, words", [
    ("owned by another user", "is owned by uid %d, not by uid {uid}" % OTHER_UID),
    ("open to others", "its mode is 0755, not 0700, so its group and all users can reach"),
    ("open to a user its ACL names", "its mode is 0750, not 0700, so the user uid %d through "
     "its ACL can reach" % OTHER_UID),
    ("a symlink", "it is a symlink, not a directory"),
    ("a socket of another user", "owned by uid %d, not a socket of uid {uid}" % OTHER_UID),
])
def test_the_bridge_never_talks_to_a_socket_another_user_could_have_planted(as_user, tmp_path,
                                                                             attack, words):
    run, uid, socket_dir, paths = as_user
    sock_path = os.path.join(socket_dir, os.path.basename(paths.socket))
    if attack == "a symlink":
        target = tmp_path / "elsewhere"
        target.mkdir(mode=0o700)
        os.chown(target, uid, -1)
        os.symlink(target, socket_dir)
        os.lchown(socket_dir, OTHER_UID, -1)
        sock_path = str(target / os.path.basename(paths.socket))
    else:
        os.mkdir(socket_dir, 0o700)
        os.chown(socket_dir, OTHER_UID if attack == "owned by another user" else uid, -1)
        if attack == "open to others":
            os.chmod(socket_dir, 0o755)
        elif attack == "open to a user its ACL names":
            acl.grant(socket_dir, uid=OTHER_UID, perm=5)  # enough to connect to the socket
    trap = Trap(sock_path)  # the attacker listens where the agent would
    try:
        os.chown(sock_path, uid if attack == "owned by another user" else OTHER_UID, -1)
        code, out, err = run()
    finally:
        trap.close()
    assert code == 2 and out == ""
    assert words.format(uid=uid) in err, err
    assert "remove it" in err.lower() or "rm -r" in err
    assert "Traceback" not in err
    assert not trap.connected.is_set()  # not one byte went to it


ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="/run/fractui, and a planted "
                               "/tmp/fractui-0, are root's agent's")


@ROOT_ONLY
def test_a_user_agent_keeps_its_socket_in_tmp_whatever_its_runtime_dir(as_user):
    """logind removes a user's XDG_RUNTIME_DIR at the last logout: a daemon's socket there
    would go with the SSH session that started it, and the next bridge find none."""
    run, uid, socket_dir, paths = as_user
    xdg = os.path.join(os.path.dirname(paths.state_dir), "run")
    os.mkdir(xdg, 0o700)
    os.chown(xdg, uid, -1)
    code, out, err = run(XDG_RUNTIME_DIR=xdg)
    assert (code, err) == (0, "") and '"result"' in out
    assert stat.S_ISSOCK(os.lstat(paths.socket_in(socket_dir)).st_mode)
    assert not os.path.lexists(os.path.join(xdg, "fractui"))  # (podman, probed, uses it)


def test_a_socket_dir_that_cannot_be_made_is_named_not_taken_for_the_state_dir(tmp_path,
                                                                              monkeypatch):
    """The daemon's start said "the state dir … cannot be used" where its socket dir could not
    be made (a read-only /tmp, no room): the state dir was fine, and the words sent the admin
    to the wrong place."""
    from remote_agent.daemon import paths as agent_paths
    folder = str(tmp_path / "gone" / "fractui")  # (its parent missing: mkdir fails)
    monkeypatch.setattr(agent_paths, "runtime_dir", lambda: agent_paths.RuntimeDir(folder, ""))
    with pytest.raises(UnsafePath) as refused:
        AgentPaths(str(tmp_path / "state")).make_socket_dir()
    assert str(refused.value) == ("the agent's socket directory %s cannot be made: No such file "
                                  "or directory" % folder)


def root_bridge(prefix: List[str], state: str, *methods: str) -> Tuple[int, str, str]:
    """A root bridge to the sim host in ``state``, run after ``prefix``, asked ``methods``:
    (exit code, stdout, stderr); the host is stopped after."""
    asked = "".join('{"jsonrpc": "2.0", "id": %d, "method": "%s"}\n' % (n, method)
                    for n, method in enumerate(methods))
    try:
        proc = subprocess.run(prefix + [sys.executable, "-m", "remote_agent", "serve", "--stdio",
                                        "--state-dir", state, "--sim", "1xL4"],
                              input=asked.encode(), capture_output=True, cwd=REPO,
                              env=dict(os.environ, PYTHONPATH=REPO), timeout=60)
    finally:
        stop_host(state)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


@ROOT_ONLY
def test_a_tmp_dir_another_user_made_first_stops_no_root_agent(tmp_path):
    """Any local user can make /tmp/fractui-0; root's agent keeps its socket in /run/fractui,
    which only root can make, so it starts all the same. The planted directory is mounted at
    /tmp/fractui-0 in a mount namespace of the test's own (the machine's may be in use)."""
    nobody = pwd.getpwnam("nobody").pw_uid
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o700)
    os.chown(planted, nobody, -1)
    made = not os.path.lexists("/tmp/fractui-0")
    if made:  # a mount point (where root's agents up to now made it)
        os.mkdir("/tmp/fractui-0", 0o700)
    try:
        code, out, err = root_bridge(in_mount_namespace(
            ["--bind", str(planted), "/tmp/fractui-0"]), str(tmp_path / "state"),
            "daemon.version")
    finally:
        if made:
            with contextlib.suppress(OSError):  # (unless an agent of the old place uses it)
                os.rmdir("/tmp/fractui-0")
    assert code == 0 and '"result"' in out, err
    assert AgentPaths(str(tmp_path / "state")).socket_dir == "/run/fractui"
    st = os.lstat("/run/fractui")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o700)
    # the old place is only looked in for an earlier agent's daemon, and passed by
    assert err == ("remote_agent: not looking for an earlier agent's daemon in /tmp/fractui-0: "
                   "refusing the agent's socket directory /tmp/fractui-0: it is owned by uid "
                   "%d, not by uid 0; another user may have made it to read the agent's "
                   "traffic. Remove it (rm -r /tmp/fractui-0, as root if you must) and connect "
                   "again\n" % nobody)


@ROOT_ONLY
def test_a_root_agent_where_run_is_read_only_keeps_its_socket_in_tmp(tmp_path):
    """A read-only /run (a container's read-only root filesystem) has no room for
    /run/fractui: the agent falls back to /tmp/fractui-0, and its log says why, once."""
    state = tmp_path / "state"
    left = os.path.join("/tmp/fractui-0", os.path.basename(AgentPaths(str(state)).socket))
    try:
        code, out, err = root_bridge(in_mount_namespace(
            ["-t", "tmpfs", "-o", "ro,mode=0755", "tmpfs", "/run"]), str(state), "daemon.version")
    finally:  # (the daemon is killed: its socket is left in the machine's /tmp/fractui-0)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(left)
    assert code == 0 and '"result"' in out, err
    said = (state / "daemon.log").read_text()
    assert said.count("not under /run") == 1, said
    assert "the agent's sockets are in /tmp/fractui-0, not under /run: no directory can be " \
        "made in it (a read-only filesystem?)" in said
    assert "serving /tmp/fractui-0/%s" % os.path.basename(AgentPaths(str(state)).socket) in said


@pytest.fixture
def root_agent(start_agent):
    """start(state_dir) -> the exit code and stderr of a root bridge that could not start its
    daemon (or the bridge itself, when it did)."""
    def start(state_dir: str):
        agent = start_agent("1xL4", state_dir)
        try:
            agent.call("hello")
        except EOFError as ended:
            return agent.proc.wait(timeout=10), str(ended)
        return None, agent
    return start


def host_with_a_finished_job(start_agent, state, spec: str = "1xL4", gpu: int = 0):
    """A simulated host in ``state`` that ran one job (it printed "mine"): (bridge, job)."""
    agent = start_agent(spec, str(state))
    job = agent.call("job.launch", key="k-1", gpu=gpu, memory_mib=10,
                     argv=script("print('mine')"))
    wait_job(agent, job["id"])
    return agent, job


def owned_by_other(path) -> None:
    os.lchown(path, OTHER_UID, -1)


@pytest.mark.parametrize("attack, words", [
    ("state dir owned by another user", "is owned by uid %d, not by uid 0" % OTHER_UID),
    ("state dir writable by all", "is writable by its group and all users (mode 0777)"),
    ("state dir writable by its group", "is writable by its group (mode 0770)"),
    ("state dir writable by a user its ACL names",
     "is writable by the user uid %d through its ACL (mode 0770)" % OTHER_UID),
    ("a parent writable by a group its ACL names",
     "/p is writable by the group gid %d through its ACL (mode 0775)" % OTHER_UID),
    ("a parent writable by all, not sticky", "/p is writable by its group and all users"),
    ("a parent owned by another user", "is owned by uid %d, not by root or uid 0" % OTHER_UID),
    ("reached through another user's symlink", "through the symlink"),
])
def test_the_daemon_refuses_a_state_dir_another_user_could_change(root_agent, tmp_path, attack,
                                                                  words):
    parent = tmp_path / "p"
    parent.mkdir(mode=0o755)
    state = parent / "state"
    state.mkdir(mode=0o700)
    used = state
    if attack == "state dir owned by another user":
        owned_by_other(state)
    elif attack == "state dir writable by all":
        os.chmod(state, 0o777)
    elif attack == "state dir writable by its group":
        os.chmod(state, 0o770)
    elif attack == "state dir writable by a user its ACL names":
        acl.grant(state, uid=OTHER_UID)
    elif attack == "a parent writable by a group its ACL names":
        acl.grant(parent, gid=OTHER_UID)
    elif attack == "a parent writable by all, not sticky":
        os.chmod(parent, 0o777)
    elif attack == "a parent owned by another user":
        owned_by_other(parent)
    else:
        used = tmp_path / "link"
        os.symlink(state, used)
        owned_by_other(used)
    before = sorted(os.listdir(state))
    code, said = root_agent(str(used))
    assert code == 2, said
    assert words in said and "refusing state dir" in said, said
    assert "Traceback" not in said
    assert sorted(os.listdir(state)) == before  # nothing written there


def test_a_sticky_world_writable_parent_is_fine(root_agent, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # as /tmp
    code, agent = root_agent(str(shared / "state"))
    assert code is None and agent.call("hello")["backend"] == "sim"


@pytest.fixture(scope="module")
def finished_state(tmp_path_factory):
    """The state dir a host leaves once it ran one job and its daemon was shut down, made
    once for the module: each test below tampers with a copy of its own."""
    state = tmp_path_factory.mktemp("finished") / "state"
    agent = AgentProcess(str(state), "--sim", "1xL4")
    try:
        job = agent.call("job.launch", key="k-1", gpu=0, memory_mib=10,
                         argv=script("print('mine')"))
        wait_job(agent, job["id"])
        pid = agent.call("daemon.version")["pid"]
        agent.call("daemon.shutdown")
        agent.close()
        wait_until(lambda: not alive(pid), "the daemon to stop")
        yield state
    finally:
        if agent.proc.poll() is None:
            agent.close()
        stop_host(str(state))


@pytest.mark.parametrize("what", ["jobs.db", "sim/gpus.json", "daemon.log", "jobs", "jobs/j1",
                                  "jobs/j1/spec.json", "jobs/j1/exit.json", "mig-changes",
                                  "mig-changes/gpu0.json"])
@pytest.mark.parametrize("attack", ["owned by another user", "writable by others", "a symlink",
                                    "writable by a user its ACL names"])
def test_the_daemon_refuses_a_file_it_trusts_that_another_user_could_change(
        root_agent, finished_state, tmp_path, what, attack):
    state = tmp_path / "state"
    # as the host left it: modes, owners and the job's pipe kept
    subprocess.run(["cp", "-a", str(finished_state), str(state)], check=True)
    if what.startswith("mig-changes"):  # a MIG change the daemon was stopped in the middle of
        MigJournal(str(state / "mig-changes")).begin_mode(0, "GPU-0", "enable MIG",
                                                          (False, False), True)
    target = state / what
    if attack == "owned by another user":
        owned_by_other(target)
    elif attack == "writable by others":
        os.chmod(target, 0o777 if target.is_dir() else 0o666)
    elif attack == "writable by a user its ACL names":
        acl.grant(target, uid=OTHER_UID, perm=6)
    else:
        moved = tmp_path / "moved"
        os.rename(target, moved)
        os.symlink(moved, target)
    code, said = root_agent(str(state))
    if what.startswith("jobs/j1"):  # a job's folder or file: that folder is left unread, alone
        _left_unread(said, str(target), "job file" if "/" in what[5:] else "job directory")
        return
    assert code == 2, said
    assert "refusing" in said and str(target) in said, said
    if attack == "writable by a user its ACL names":
        assert "writable by the user uid %d through its ACL" % OTHER_UID in said, said
    assert "Traceback" not in said


def _left_unread(agent, target: str, what: str) -> None:
    """The daemon of ``agent`` serves, j1's record as it ended, and reads nothing of j1's
    folder (which is or holds ``target``, refused as ``what``), saying why
    (tests/test_job_folder_entries.py: the same of a job that did it)."""
    assert agent.call("job.get", job="j1")["state"] == "exited"
    reply = agent.request("job.logs", job="j1")
    assert "leaves it unread: refusing %s %s" % (what, target) in reply["error"]["message"], \
        reply


def test_what_an_acl_lets_another_user_read_of_the_agents_is_taken_back(root_agent,
                                                                          finished_state,
                                                                          tmp_path):
    """A grant to read (no write: nothing could have been changed) is taken back, as a mode
    that lets others read is: chmod clears the ACL's mask, which cuts every named entry."""
    state = tmp_path / "state"
    subprocess.run(["cp", "-a", str(finished_state), str(state)], check=True)
    private = [state / name for name in ("", "jobs.db", "daemon.log", "jobs/j1",
                                         "jobs/j1/spec.json")]
    for path in private:
        acl.grant(path, uid=OTHER_UID, perm=5)
        assert acl.let_in(path, OTHER_UID) == 5
    code, agent = root_agent(str(state))
    assert code is None, agent
    assert [acl.let_in(path, OTHER_UID) for path in private] == [0] * len(private)


def test_what_the_agent_creates_under_a_default_acl_lets_no_other_user_in(start_agent,
                                                                            tmp_path):
    """A default ACL on a folder gives what is made in it its grants in place of the umask's
    cut: the agent makes each folder up to its state dir 0700 and each file 0600, whose
    modes cut the grants to nothing, so it starts there and all it made is its own."""
    parent = tmp_path / "p"
    parent.mkdir(mode=0o755)
    acl.grant(parent, uid=OTHER_UID, default=True)
    state = parent / "a" / "state"
    host_with_a_finished_job(start_agent, state)
    made = [str(parent / "a")]
    for folder, dirs, files in os.walk(state):
        made += [folder] + [os.path.join(folder, name) for name in files]
    assert acl.entries(state, acl.DEFAULT)  # inherited: the grants reached what was made
    assert {path: acl.let_in(path, OTHER_UID) for path in made} == dict.fromkeys(made, 0)
    assert str(state / "sim" / "gpus.json") in made and str(state / "jobs.db") in made


def test_a_log_swapped_for_a_symlink_is_refused_not_read(start_agent, tmp_path):
    state = tmp_path / "state"
    agent, job = host_with_a_finished_job(start_agent, state)
    secret = tmp_path / "secret"
    secret.write_text("not for you\n")
    log = state / "jobs" / job["id"] / "output.log"
    log.unlink()
    os.symlink(secret, log)
    with pytest.raises(AgentError) as err:
        agent.call("job.logs", job=job["id"])
    assert "is a symlink" in err.value.message and "not for you" not in err.value.message


def test_a_followed_log_swapped_for_a_symlink_ends_the_follow_unread(start_agent, tmp_path):
    state = tmp_path / "state"
    agent = start_agent("1xL4", str(state))
    go_on = tmp_path / "go-on"
    job = agent.call("job.launch", key="k-1", gpu=0, memory_mib=10, argv=script(
        "import os, time\nprint('mine', flush=True)\nwhile not os.path.exists(%r):\n"
        "    time.sleep(0.02)\nprint('more', flush=True)\ntime.sleep(60)" % str(go_on)))
    wait_until(lambda: agent.call("job.logs", job=job["id"])["lines"] == ["mine"], "output")
    agent.call("job.logs", job=job["id"], follow=True, lines=0)
    secret = tmp_path / "secret"
    secret.write_text("not for you\n" * 10)
    log = state / "jobs" / job["id"] / "output.log"
    log.unlink()
    os.symlink(secret, log)
    go_on.touch()
    pushed = agent.next_notification()
    assert pushed["method"] == "log" and pushed["params"]["eof"] is True
    assert "is a symlink" in pushed["params"]["error"]
    assert "not for you" not in str(pushed)


def test_a_failed_jobs_last_line_is_never_read_through_a_symlink(start_agent, tmp_path,
                                                                  plain_user):
    """A failed job's last line is read as root from its log: a job run as a user cannot put
    a symlink there (its folder is the agent's, 0700), and one put there all the same (here by
    root, as anything else could) is refused, not read: the job ends with no line, and what
    the symlink names is nowhere in its record."""
    state = tmp_path / "state"
    agent = start_agent("1xL4", str(state))
    secret = tmp_path / "secret"
    secret.write_text("root:not-for-you\n")
    name, _home = plain_user
    log = state / "jobs" / "j1" / "output.log"
    tried = agent.call("job.launch", key="k-swap", gpu=0, memory_mib=10, run_as=name, argv=[
        "/usr/bin/python3", "-c", "import os, sys\ntry:\n    os.unlink(%r)\n"
        "    os.symlink(%r, %r)\nexcept OSError as err:\n    print(type(err).__name__)\n"
        "sys.exit(1)" % (str(log), str(secret), str(log))])
    assert tried["id"] == "j1" and wait_job(agent, "j1")["last_line"] == "PermissionError"
    go_on = tmp_path / "go-on"
    job = agent.call("job.launch", key="k-swapped", gpu=0, memory_mib=10, argv=script(
        "import os, sys, time\nprint('mine', flush=True)\nwhile not os.path.exists(%r):\n"
        "    time.sleep(0.02)\nsys.exit(1)" % str(go_on)))
    wait_until(lambda: agent.call("job.logs", job=job["id"])["lines"] == ["mine"], "output")
    log = state / "jobs" / job["id"] / "output.log"
    log.unlink()
    os.symlink(secret, log)
    go_on.touch()
    ended = wait_job(agent, job["id"])
    assert (ended["state"], ended["exit_code"], ended["last_line"]) == ("exited", 1, None)
    assert "not-for-you" not in str(ended)


HOLD_LEASE = """import fcntl, os, signal, sys
fd = os.open(sys.argv[1], os.O_RDWR)
let_go = lambda *_: fcntl.fcntl(fd, 1024, fcntl.F_UNLCK)  # F_SETLEASE
signal.signal(signal.SIGIO, let_go if sys.argv[2] == "let-go" else signal.SIG_IGN)
fcntl.fcntl(fd, 1024, fcntl.F_WRLCK)
print("held", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def lease_held(path, let_go: bool) -> Iterator[None]:
    """A process holding the kernel's write lease on ``path``, as a file server takes one: an
    open of it first breaks the lease (SIGIO to the holder), then waits until the holder lets
    go (``let_go``) or the kernel's lease-break-time ends it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LEASE, str(path),
                               "let-go" if let_go else "hold"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        yield
    finally:
        holder.kill()
        holder.wait()


def test_a_file_whose_lease_is_being_broken_is_opened_once_the_holder_lets_go(tmp_path):
    record = tmp_path / "record"
    record.write_bytes(b"mine")
    record.chmod(0o600)
    with lease_held(record, let_go=True):
        with os.fdopen(open_private(str(record), os.O_RDONLY, "record"), "rb") as f:
            assert f.read() == b"mine"


def test_a_fifo_swapped_in_while_a_lease_is_broken_is_refused_and_never_waited_on(
        tmp_path, monkeypatch):
    """A regular file under a lease, swapped for a FIFO as soon as the agent's non-blocking open
    found the lease (the hook: before each open after that one). The open that waits for the
    lease is refused, and never waits on the FIFO; before, the FIFO was opened by name after a
    look, and that open waited for a writer for good, holding up the loop that opened it."""
    record, fifo, far_end = tmp_path / "record", tmp_path / "fifo", tmp_path / "far-end"
    record.write_bytes(b"mine")
    record.chmod(0o600)
    os.mkfifo(fifo, 0o600)
    os.link(fifo, far_end)  # the FIFO's other end, once it is at the record's path
    real_open = os.open
    found_lease = threading.Event()

    def hooked_open(path, flags, *args, **kwargs):
        if found_lease.is_set() and fifo.exists():
            os.rename(fifo, record)
        try:
            return real_open(path, flags, *args, **kwargs)
        except BlockingIOError:
            found_lease.set()
            raise

    said: List[str] = []

    def agent_opens() -> None:
        try:
            os.close(open_private(str(record), os.O_RDONLY, "record"))
            said.append("opened")
        except UnsafePath as err:
            said.append(str(err))

    waited: List[bool] = []

    def settled() -> bool:
        try:  # a FIFO's write end opens without waiting only while a reader waits on it
            os.close(real_open(far_end, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as err:
            assert err.errno == errno.ENXIO, err
            return not opening.is_alive()
        waited.append(True)
        return True

    with lease_held(record, let_go=False):
        monkeypatch.setattr(os, "open", hooked_open)
        opening = threading.Thread(target=agent_opens)
        opening.start()
        wait_until(settled, "the open to be refused or to wait on the FIFO")
        opening.join()
    assert found_lease.is_set() and not fifo.exists()  # the swap was made
    assert (waited, said) == ([], ["refusing record %s: not a regular file: a FIFO" % record])


def test_everything_the_agent_creates_is_its_users_alone(start_agent, tmp_path):
    state = tmp_path / "state"
    agent, _ = host_with_a_finished_job(start_agent, state, "1xA100-80GB:mig,1xL4", gpu=1)
    agent.call("job.launch", key="k-2", gpu=0, mig={"profile": "1g.10gb", "start": 0},
               argv=script("import time; time.sleep(0.5)"))
    paths = AgentPaths(str(state))
    seen = []
    for folder, dirs, files in os.walk(state):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            seen.append(os.path.relpath(path, state))
            want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
            assert (stat.S_IMODE(st.st_mode), st.st_uid) == (want, 0), path
    for path in (paths.socket_dir, paths.socket):
        st = os.lstat(path)
        assert stat.S_IMODE(st.st_mode) == (0o700 if stat.S_ISDIR(st.st_mode) else 0o600)
    for name in ("jobs.db", "sim/gpus.json", "daemon.log", "jobs/j1/spec.json",
                 "jobs/j1/output.log", "jobs/j1/output.pipe", "jobs/j1/exit.json"):
        assert name in seen, name


def test_a_job_asked_to_run_as_a_user_never_runs_as_root(start_agent, tmp_path):
    """``run_as`` is a team member's (the scheduler sends it for no one else): a name that is
    uid 0 on the host (root, or an alias of it; a store role named so) is a job fault, refused
    before anything is recorded, not a job run with the rights ``run_as`` exists to withhold."""
    agent = start_agent("1xL4", str(tmp_path / "state"))
    for _ in range(2):
        with pytest.raises(AgentError) as err:
            agent.call("job.launch", key="k-as-root", gpu=0, memory_mib=10, run_as="root",
                       argv=["/usr/bin/true"])
        assert err.value.code == rpc.START_FAILED
        assert err.value.data["reason"] == ("run_as 'root' is uid 0 on this host: a job run "
                                            "as a user never runs as root")
    assert agent.call("job.list")["jobs"] == []


def test_a_job_runs_as_its_run_as_user_and_a_cwd_it_cannot_enter_is_a_job_fault(
        start_agent, tmp_path, plain_user):
    name, home = plain_user
    info = os.stat(home)
    agent = start_agent("1xL4", str(tmp_path / "state"))
    # (the system's python: this test's own lives in root's home, which the user cannot enter)
    job = agent.call("job.launch", key="k-as", gpu=0, memory_mib=10, run_as=name, argv=[
        "/usr/bin/python3", "-c", "import os\nprint(os.getuid(), os.getgid(), os.getcwd(), "
        "os.environ['HOME'], os.environ['USER'])"])
    assert job["run_as"] == name
    wait_job(agent, job["id"])
    assert agent.call("job.logs", job=job["id"])["lines"] == [
        "%d %d %s %s %s" % (info.st_uid, info.st_gid, home, home, name)]
    private = tmp_path / "root-only"
    private.mkdir(mode=0o700)  # root's: the user may not enter it
    reason = "cannot enter its cwd %s: Permission denied" % private
    for _ in range(2):
        with pytest.raises(AgentError) as err:
            agent.call("job.launch", key="k-as-denied", gpu=0, memory_mib=10, run_as=name,
                       cwd=str(private), argv=["/usr/bin/true"])
        assert err.value.code == rpc.START_FAILED and err.value.data["reason"] == reason
        assert err.value.data["job"]["exit_code"] == 127  # only its start could tell


def test_a_run_as_job_learns_nothing_of_paths_its_user_cannot_see(start_agent, tmp_path,
                                                                    plain_user):
    """A cwd or a program in a directory the user may not enter is refused alike whether it
    is there or not (as that user sees it), not told apart by the agent's own look as root."""
    name, _home = plain_user
    agent = start_agent("1xL4", str(tmp_path / "state"))
    private = tmp_path / "root-only"
    private.mkdir(mode=0o700)
    (private / "there").mkdir()
    said = []
    for key, where in (("k-cwd-there", "there"), ("k-cwd-missing", "missing")):
        with pytest.raises(AgentError) as err:
            agent.call("job.launch", key=key, gpu=0, memory_mib=10, run_as=name,
                       cwd=str(private / where), argv=["/usr/bin/true"])
        said.append(err.value.data["reason"].replace(where, "X"))
    for key, what in (("k-run-there", "there"), ("k-run-missing", "missing")):
        with pytest.raises(AgentError) as err:
            agent.call("job.launch", key=key, gpu=0, memory_mib=10, run_as=name,
                       argv=[str(private / what)])
        said.append(err.value.data["reason"].replace(what, "X"))
    assert said == ["cannot enter its cwd %s: Permission denied" % (private / "X")] * 2 + [
        "cannot run %s: Permission denied" % (private / "X")] * 2


def test_a_run_as_job_not_on_the_path_its_user_may_search_says_not_found(start_agent,
                                                                          tmp_path, plain_user):
    """A program named without a "/" that is in no directory of PATH the user may search,
    while one of PATH's directories is shut to them (root's own, say, where the agent's PATH
    came from root's login): exec says EACCES, and a typo's name was told "cannot run nme:
    Permission denied", as if it were there. Said as not found, naming the directories the
    user may not search, in the same words whether it is in them or not; a program that is
    there, not executable, is still "Permission denied"."""
    name, home = plain_user  # (tmp_path is in root's 0700 folder: the user's home is theirs)
    agent = start_agent("1xL4", str(tmp_path / "state"))
    private = tmp_path / "root-only"
    private.mkdir(mode=0o700)
    (private / "there").write_text("#!/bin/sh\n")
    (private / "there").chmod(0o755)
    open_dir = Path(home) / "bin"
    open_dir.mkdir(mode=0o755)
    (open_dir / "plain").write_text("not a program\n")
    (open_dir / "plain").chmod(0o644)
    path = "%s:%s:/usr/bin:/bin" % (private, open_dir)
    said = []
    for key, program in (("k-there", "there"), ("k-missing", "missing")):
        with pytest.raises(AgentError) as err:
            agent.call("job.launch", key=key, gpu=0, memory_mib=10, run_as=name,
                       env={"PATH": path}, argv=[program])
        said.append(err.value.data["reason"].replace(program, "X", 1))
    assert said == ["cannot run X: not found in a directory of its PATH it may search (it may "
                    "not search %s)" % private] * 2, said
    with pytest.raises(AgentError) as err:
        agent.call("job.launch", key="k-plain", gpu=0, memory_mib=10, run_as=name,
                   env={"PATH": path}, argv=["plain"])
    assert err.value.data["reason"] == "cannot run plain: Permission denied"
    # a link it sees in a directory it may search is there, wherever it leads: exec's words,
    # the same whether what it names in the shut directory is there or not
    said = []
    for key, target in (("k-link", "there"), ("k-dangling", "missing")):
        (open_dir / key).symlink_to(private / target)
        with pytest.raises(AgentError) as err:
            agent.call("job.launch", key=key, gpu=0, memory_mib=10, run_as=name,
                       env={"PATH": path}, argv=[key])
        said.append(err.value.data["reason"].replace(key, "X", 1))
    assert said == ["cannot run X: Permission denied"] * 2, said


def test_a_run_as_container_job_names_no_image_the_runtime_would_read_from_the_host(
        start_agent, tmp_path, plain_user, monkeypatch):
    """podman runs as the agent (root): an image by a transport that reads the host's files
    (oci-archive:/root-only/image.tar) would be read with root's rights for a user who may
    not read it. Refused for a run_as job, nothing recorded; the agent's own job may. (A
    stand-in podman on PATH: its version is all the probe reads, it lists no container, and
    it notes every other call, so a run it was asked for is seen, and no real container
    starts.)"""
    name, _home = plain_user
    tools = tmp_path / "bin"
    tools.mkdir()
    calls = tmp_path / "podman-calls"
    podman = tools / "podman"
    podman.write_text('#!/bin/sh\nif [ "$1" = version ]; then echo 5.0.0; exit 0; fi\n'
                      'if [ "$1" = ps ]; then exit 0; fi\n'  # (the watchdog's look for the
                      # containers ended jobs left: none)
                      'echo "$@" >> %s\nexit 1\n' % calls)
    podman.chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (tools, os.environ["PATH"]))
    private = tmp_path / "root-only"
    private.mkdir(mode=0o700)
    image = "oci-archive:%s" % (private / "image.tar")
    agent = start_agent("1xL4", str(tmp_path / "state"))
    for _ in range(2):
        with pytest.raises(AgentError) as err:
            agent.call("job.launch", key="k-archive", gpu=0, memory_mib=10, run_as=name,
                       image=image, argv=["true"])
        assert err.value.code == rpc.START_FAILED
        assert err.value.data["reason"] == (
            "its image %s names the oci-archive: transport, which podman would read from this "
            "host as the agent's user, not as the job's: a job run as a user names its image "
            "by reference (docker.io/library/python:3.12, or docker://...)" % image)
    assert agent.call("job.list")["jobs"] == [] and not calls.exists()
    job = agent.call("job.launch", key="k-archive-agent", gpu=0, memory_mib=10, image=image,
                     argv=["true"])
    wait_job(agent, job["id"])
    assert " %s true" % image in calls.read_text()


class PlainAgent(AgentProcess):
    """The agent's bridge run as the plain user whose ``home`` it is, from its zipapp there
    (``agent_in_home``; its daemon too: it is this user's own agent, as a host reached as that
    user without become has)."""

    def __init__(self, home: str, state_dir: str):
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", agent_in_home(home), "serve", "--stdio", "--state-dir",
             state_dir, "--sim", "1xL4"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, **as_home_user(home))
        self._next_id = 0
        self.notifications = []


def powers_refused(agent: AgentProcess, name: str, why: str) -> None:
    """A launch run as ``name`` is refused by the host, twice, with ``why``; nothing recorded."""
    uid = pwd.getpwnam(name).pw_uid
    for _ in range(2):
        with pytest.raises(AgentError) as err:
            agent.call("job.launch", key="k-powers", gpu=0, memory_mib=10, run_as=name,
                       argv=["/usr/bin/true"])
        assert err.value.code == rpc.NOT_PERMITTED
        assert err.value.message == (
            "run_as %r is uid %d on this host, %s: a job run as a team member never runs with "
            "the agent's powers (its socket and state dir: every job's env and logs, stopping "
            "them, MIG)" % (name, uid, why))
    assert agent.call("job.list")["jobs"] == []


def test_a_job_for_a_member_named_as_a_plain_agents_own_user_is_refused(plain_user):
    """A host reached as ``svc`` without root runs its agent as svc; a team member also named
    svc would get a job with the agent's socket and state dir, so that run_as is refused."""
    name, home = plain_user
    info = os.stat(home)
    state_dir = os.path.join(home, "state")
    subprocess.run(["rm", "-rf", "/tmp/fractui-%d" % info.st_uid], check=True)
    agent = PlainAgent(home, state_dir)
    try:
        powers_refused(agent, name, "the agent's own user")
    finally:
        agent.close()
        stop_host(state_dir)
        subprocess.run(["rm", "-rf", "/tmp/fractui-%d" % info.st_uid], check=False)


def test_a_job_for_a_member_who_owns_the_root_agents_code_is_refused(start_agent, tmp_path,
                                                                      plain_users):
    """become = "sudo": root runs the zipapp the login user put in its own agent_cache, so
    that user could change what root runs; a member of that name is refused, another runs."""
    login, home = plain_users()
    member, member_home = plain_users()
    code = os.path.join(home, "agent")
    shutil.copytree(os.path.join(REPO, "remote_agent"), os.path.join(code, "remote_agent"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["chown", "-R", "%s:" % login, code], check=True)
    agent = start_agent("1xL4", str(tmp_path / "state"), code_root=code)
    powers_refused(agent, login, "the owner of %s, on the way to %s, which the agent loads its "
                   "code from (it could change what the agent runs)" % (home, code))
    job = agent.call("job.launch", key="k-member", gpu=0, memory_mib=10, run_as=member,
                     argv=["/usr/bin/id", "-un"])
    wait_job(agent, job["id"])
    assert agent.call("job.logs", job=job["id"])["lines"] == [member]


def test_a_job_for_a_member_who_started_the_agent_with_sudo_is_refused(start_agent, tmp_path,
                                                                       plain_users,
                                                                       monkeypatch):
    """The user sudo started the agent for (its SUDO_UID) can become root again: a member of
    that name is refused, also by a daemon started anew by a bridge sudo gave no SUDO_UID
    (the state dir keeps the logins)."""
    login, home = plain_users()
    monkeypatch.setenv("SUDO_UID", str(os.stat(home).st_uid))
    state = str(tmp_path / "state")
    agent = start_agent("1xL4", state)
    powers_refused(agent, login, "the user who started the agent with sudo")
    pid = agent.call("daemon.version")["pid"]
    agent.call("daemon.shutdown")
    agent.close()
    wait_until(lambda: not alive(pid), "the daemon to stop")
    monkeypatch.delenv("SUDO_UID")
    again = start_agent("1xL4", state)
    powers_refused(again, login, "a user who reached the agent through sudo (a login that can "
                   "become root again)")
    assert again.call("daemon.version")["pid"] != pid


def test_each_job_counts_its_memory_in_a_hami_core_region_of_its_users_alone(
        start_agent, tmp_path, plain_user):
    """HAMi-core's region (/tmp/cudevshr.cache unless a job is told another) is a file every
    process that preloads it maps and writes, with the limits: every job of every user on the
    host shared that one, which any local user could make first, and then change what the
    others' jobs are held to. Each job now has its own, made as its user, removed at its end."""
    name, home = plain_user
    lib = tmp_path / "libvgpu.so"
    lib.write_bytes(b"")
    agent = start_agent("1xL4", str(tmp_path / "state"), "--hami-core-lib", str(lib))
    show = ("import os\npath = os.environ['CUDA_DEVICE_MEMORY_SHARED_CACHE']\n"
            "open(path, 'w').close()  # as HAMi-core makes it\n"
            "st = os.stat(os.path.dirname(path))\nprint(path, st.st_uid, oct(st.st_mode))")
    regions = []
    for key, run_as in (("k-agents", {}), ("k-users", {"run_as": name})):
        job = agent.call("job.launch", key=key, gpu=0, memory_mib=1000, **run_as,
                         argv=["/usr/bin/python3", "-c", show])
        assert "hami" in job["caps"], job["caps"]
        wait_job(agent, job["id"])
        # (the stand-in library is empty, so ld.so warns that it cannot preload it)
        lines = [line for line in agent.call("job.logs", job=job["id"])["lines"]
                 if not line.startswith("ERROR: ld.so")]
        assert len(lines) == 1, lines
        path, owner, mode = lines[0].split()
        assert (int(owner), mode) == (os.stat(home).st_uid if run_as else 0, "0o40700")
        assert os.path.basename(path) == "cudevshr.cache" and os.path.dirname(path) != "/tmp"
        assert not os.path.lexists(os.path.dirname(path))  # removed as the job ended
        regions.append(path)
    assert regions[0] != regions[1]


@pytest.mark.parametrize("rm", ["absent", "bad-interpreter"])
def test_a_hami_core_region_rm_is_not_found_for_is_said_with_the_path_it_was_looked_on(
        start_agent, tmp_path, monkeypatch, rm):
    """The region is removed with ``rm``, looked up on the agent's PATH, which is whatever its
    login or service gave it: where rm is not on it, the shim said errno's words alone ("No
    such file or directory: 'rm'"); it names the PATH now, and the region is left. An rm
    there, a script whose first line names an interpreter that is not, fails its exec the
    same way: it is said as that, naming the script and the interpreter (before, as rm not
    on the PATH)."""
    lib = tmp_path / "libvgpu.so"
    lib.write_bytes(b"")
    bare = tmp_path / "bin"  # a PATH without rm, or with an rm that cannot run
    bare.mkdir()
    if rm == "bad-interpreter":
        (bare / "rm").write_text("#!/no/such/sh\n")
        (bare / "rm").chmod(0o755)
    monkeypatch.setenv("PATH", str(bare))
    state = tmp_path / "state"
    agent = start_agent("1xL4", str(state), "--hami-core-lib", str(lib))
    job = agent.call("job.launch", key="k-no-rm", gpu=0, memory_mib=1000, argv=[
        "/usr/bin/python3", "-c",
        "import os; print(os.path.dirname(os.environ['CUDA_DEVICE_MEMORY_SHARED_CACHE']))"])
    wait_job(agent, job["id"])
    region = next(line for line in agent.call("job.logs", job=job["id"])["lines"]
                  if line.startswith("/tmp/"))
    try:
        said = (state / "jobs" / job["id"] / "shim.log").read_text()
        why = {"absent": "rm is not installed, or not on the agent's PATH (%s)" % bare,
               "bad-interpreter": "rm cannot run: its first line names the interpreter "
               "/no/such/sh, which is missing (%s)" % (bare / "rm")}[rm]
        words = "shim: cannot remove the job's HAMi-core region %s: %s; it is left" % (
            region, why)
        assert words in said.splitlines(), said
        assert glob.glob(region + "*") == [region]
    finally:
        for path in glob.glob(region + "*"):
            shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("swapped", [False, True], ids=["left as made", "a symlink put there"])
def test_a_hami_core_region_a_killed_shim_left_is_removed_as_the_job_ends(
        start_agent, tmp_path, plain_user, swapped):
    """A shim killed (SIGKILL) cannot remove its job's region: the daemon does, from the
    shim's record, as it ends the job; only a directory of the job's user, never through a
    link the user put in its place (a victim of root's stays as it is), saying so in its log."""
    name, home = plain_user
    lib = tmp_path / "libvgpu.so"
    lib.write_bytes(b"")
    state = tmp_path / "state"
    agent = start_agent("1xL4", str(state), "--hami-core-lib", str(lib))
    victim = tmp_path / "victim"  # root's, with a file in it
    victim.mkdir()
    (victim / "keep").write_text("root's")
    release = os.path.join(home, "release")
    swap = ("os.rename(region, region + '-moved')\nos.symlink(%r, region)\n" % str(victim)
            if swapped else "")
    program = ("import os, time\nregion = os.path.dirname(os.environ["
               "'CUDA_DEVICE_MEMORY_SHARED_CACHE'])\nprint(region, flush=True)\n"
               "while not os.path.exists(%r):\n    time.sleep(0.05)\n%s" % (release, swap))
    job = agent.call("job.launch", key="k-region", gpu=0, memory_mib=1000, run_as=name,
                     argv=["/usr/bin/python3", "-c", program])
    region = wait_until(lambda: next((line for line in agent.call(
        "job.logs", job=job["id"])["lines"] if line.startswith("/tmp/")), None),
                        "the job to say its region")
    assert os.path.isdir(region)
    job_dir = os.path.join(str(state), "jobs", job["id"])  # ("j1")
    with open(os.path.join(job_dir, "shim.claim")) as f:
        shim = int(f.read())
    os.kill(shim, signal.SIGKILL)
    wait_until(lambda: not alive(shim), "the shim to die")
    try:
        with open(release, "w"):
            pass
        ended = wait_job(agent, job["id"])
        assert ended["state"] == "lost", ended
        uid = os.stat(home).st_uid
        words = ("job %s: its HAMi-core region is left: refusing to remove %s: it is a symlink "
                 "of uid %d, not the job's directory of uid %d; it is left as it is" % (
                     job["id"], region, uid, uid) if swapped else
                 "job %s: removed its HAMi-core region %s, which its shim had not (its shim "
                 "has ended)" % (job["id"], region))
        # (said as the daemon gives back what the job held, just after it records the end)
        wait_until(lambda: words in (state / "daemon.log").read_text(),
                   "the daemon to say: %s" % words)
        if swapped:
            assert os.path.islink(region) and os.listdir(victim) == ["keep"]
        else:
            assert not os.path.lexists(region)
    finally:
        subprocess.run(["rm", "-rf", region, region + "-moved"], check=False)


def test_a_hami_core_region_whose_shim_was_killed_in_its_removal_is_removed_by_the_daemon(
        start_agent, tmp_path, monkeypatch):
    """The shim is killed (SIGKILL) while its removal of the job's region runs (its rm held
    up): the daemon, as it ends the job, removes what is left and says so. Before, the
    shim's removal had renamed the region to a name of its own first: the daemon found
    nothing at the region's name, said nothing, and the rest stayed in /tmp for good."""
    lib = tmp_path / "libvgpu.so"
    lib.write_bytes(b"")
    monkeypatch.setenv("PATH", "%s:%s" % (held_rm(tmp_path), os.environ["PATH"]))
    state = tmp_path / "state"
    agent = start_agent("1xL4", str(state), "--hami-core-lib", str(lib))
    job = agent.call("job.launch", key="k-region", gpu=0, memory_mib=1000, argv=[
        "/usr/bin/python3", "-c",
        "import os; print(os.path.dirname(os.environ['CUDA_DEVICE_MEMORY_SHARED_CACHE']))"])
    started = tmp_path / "started"
    rm = int(wait_until(lambda: started.exists() and started.read_text().strip(),
                        "the shim's removal to run its rm"))
    region = next(line for line in agent.call("job.logs", job=job["id"])["lines"]
                  if line.startswith("/tmp/"))
    with open(state / "jobs" / job["id"] / "shim.claim") as f:
        shim = int(f.read())
    try:
        os.kill(shim, signal.SIGKILL)
        os.kill(rm, signal.SIGKILL)  # (it outlives the shim: it would run the real rm)
        (tmp_path / "release").touch()  # (the daemon's rm runs the real one at once)
        assert wait_job(agent, job["id"])["state"] == "lost"
        words = ("job %s: removed its HAMi-core region %s, which its shim had not (its shim "
                 "has ended)" % (job["id"], region))
        wait_until(lambda: words in (state / "daemon.log").read_text(),
                   "the daemon to say: %s" % words)
        assert glob.glob(region + "*") == []
    finally:
        for path in glob.glob(region + "*"):
            shutil.rmtree(path, ignore_errors=True)


def test_a_jobs_hami_core_region_is_removed_as_its_user_whatever_it_put_in_its_place(
        start_agent, tmp_path, plain_user):
    """The shim (root) removed the region's directory as root, and the job's user owns that
    name in /tmp: it may put in its place any folder of its own it may move (in a team's
    folder), holding what only root could remove (another's folder in it), which went too.
    Removed as the job's user, nothing goes that the user could not remove."""
    name, home = plain_user
    lib = tmp_path / "libvgpu.so"
    lib.write_bytes(b"")
    agent = start_agent("1xL4", str(tmp_path / "state"), "--hami-core-lib", str(lib))
    moved = os.path.join(home, "moved")  # the user's, on /tmp's filesystem, as its home is
    os.mkdir(moved)
    os.chown(moved, os.stat(home).st_uid, os.stat(home).st_gid)
    kept = os.path.join(moved, "theirs", "kept")  # root's: the user cannot remove it
    os.mkdir(os.path.dirname(kept), 0o755)
    open(kept, "w").close()
    swap = ("import os, sys\nregion = os.path.dirname(os.environ["
            "'CUDA_DEVICE_MEMORY_SHARED_CACHE'])\nos.rmdir(region)\n"
            "os.rename(sys.argv[1], region)\nprint(region)")
    job = agent.call("job.launch", key="k", gpu=0, memory_mib=1000, run_as=name,
                     argv=["/usr/bin/python3", "-c", swap, moved])
    wait_job(agent, job["id"])
    lines = [line for line in agent.call("job.logs", job=job["id"])["lines"]
             if not line.startswith("ERROR: ld.so")]
    assert len(lines) == 1 and lines[0].startswith("/tmp/fractui-hami-"), lines
    try:
        with open(tmp_path / "state" / "jobs" / job["id"] / "shim.log") as f:
            said = f.read()
        assert "cannot remove the job's HAMi-core region %s: %s was not all removed, as uid " \
            "%d: " % (lines[0], lines[0], os.stat(home).st_uid) in said, said
        assert os.path.exists(os.path.join(lines[0], "theirs", "kept"))
    finally:
        for path in glob.glob(lines[0] + "*"):
            shutil.rmtree(path, ignore_errors=True)
