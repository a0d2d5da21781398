"""Shared test fixtures: agents run as real subprocesses speaking the real protocol."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib
import json
import os
import pkgutil
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

import pytest
from hypothesis import settings

from fractui.demo import sweep
from remote_agent.jobs.caps import cgroup2_mount
from remote_agent.jobs.procs import JobProcs

if TYPE_CHECKING:
    from tests.pg import PgServer

# Property tests run subprocess-free but long sequences: no per-example deadline.
settings.register_profile("fractui", deadline=None, print_blob=True)
settings.load_profile("fractui")

# Every Python process the tests start (fractui's verbs, each host's bridge and daemon, a shim
# per job, the jobs themselves) loads fractui's and the agent's code. Where the environment
# says to write no bytecode, each of them compiled every module it loads from source again
# (about 0.1 s of each start): they keep compiled code in a cache of this run's own instead,
# outside the source tree, removed at the end. What runs is the same source.
if os.environ.get("PYTHONDONTWRITEBYTECODE") and not os.environ.get("PYTHONPYCACHEPREFIX"):
    _PYCACHE = tempfile.mkdtemp(prefix="fractui-test-pycache-")
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = _PYCACHE
    atexit.register(shutil.rmtree, _PYCACHE, True)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Between two looks of a wait at what it waits for (a job's start, stop or record: an event of
# another process, seen at the next look). A look costs about a millisecond, so a short step
# wastes little of a loaded machine, and the wait ends soon after its event.
STEP_S = 0.02


class AgentError(Exception):
    def __init__(self, error: Dict[str, Any]):
        super().__init__(error["message"])
        self.code = error["code"]
        self.message = error["message"]
        self.data = error.get("data")


class AgentProcess:
    """``python -m remote_agent serve --stdio`` in a subprocess, driven line by line."""

    def __init__(self, state_dir: str, *args: str, code_root: str = REPO):
        env = dict(os.environ, PYTHONPATH=code_root)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "remote_agent", "serve", "--stdio", "--state-dir", state_dir,
             *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=code_root,
            env=env)
        self._next_id = 0
        self.notifications: List[Dict[str, Any]] = []

    def send_raw(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def read_reply(self) -> Any:
        line = self.proc.stdout.readline()
        if not line:
            raise EOFError("agent closed its output; stderr: %s" % self.proc.stderr.read().decode())
        return json.loads(line)

    def send(self, method: str, **params: Any) -> int:
        self._next_id += 1
        msg = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params:
            msg["params"] = params
        self.send_raw(json.dumps(msg).encode() + b"\n")
        return self._next_id

    def request(self, method: str, **params: Any) -> Dict[str, Any]:
        sent = self.send(method, **params)
        while True:
            reply = self.read_reply()
            if isinstance(reply, dict) and "id" not in reply:
                self.notifications.append(reply)  # pushed by the agent; kept for the test
                continue
            assert reply["id"] == sent, reply
            return reply

    def next_notification(self) -> Dict[str, Any]:
        """The next line the agent pushes by itself (blocks until one arrives)."""
        if self.notifications:
            return self.notifications.pop(0)
        reply = self.read_reply()
        assert "id" not in reply, reply
        return reply

    def call(self, method: str, **params: Any) -> Any:
        reply = self.request(method, **params)
        if "error" in reply:
            raise AgentError(reply["error"])
        return reply["result"]

    def close(self) -> int:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        code = self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code


def stop_host(state_dir: str) -> None:
    """Leave nothing running for a state dir: its jobs' process groups, shims, and daemon (the
    demo's sweep, which trusts a pid only while its process holds its lock), killed at once;
    then every process still in a job's session or cgroup (a job whose shim was killed)."""
    sweep(state_dir, wait_s=0)
    jobs = os.path.join(state_dir, "jobs")
    for name in sorted(os.listdir(jobs)) if os.path.isdir(jobs) else []:
        try:
            path = os.path.join(jobs, name, "started.json")
            if not stat.S_ISREG(os.lstat(path).st_mode):  # (a job's FIFO there: open waits)
                continue
            with open(path) as f:
                started = json.load(f)
        except (OSError, ValueError):
            continue
        try:
            with open(os.path.join(jobs, name, "spec.json")) as f:
                cgroup = json.load(f).get("cgroup")
        except (OSError, ValueError):
            cgroup = None
        JobProcs(started["pid"], started.get("start_ticks"), cgroup).signal(signal.SIGKILL)


@pytest.fixture
def cgroup_parent() -> Iterator[str]:
    """A directory of this host's real cgroup v2 hierarchy for one test's job cgroups, removed
    afterwards with anything left in it, the deepest first (a test may nest a parent in it)."""
    mount = cgroup2_mount()
    if mount is None or os.geteuid() != 0:
        pytest.fail("this test needs root and a cgroup v2 hierarchy (mounted at /sys/fs/cgroup "
                    "or /sys/fs/cgroup/unified)")
    parent = os.path.join(mount, "fractui-test-%s" % uuid.uuid4().hex[:8])
    yield parent
    for _ in range(100):
        if not os.path.isdir(parent):
            return
        for path, _, _ in os.walk(parent, topdown=False):
            if path != parent:
                JobProcs(None, None, path).signal(signal.SIGKILL)
                try:
                    os.rmdir(path)
                except OSError:
                    pass
        try:
            os.rmdir(parent)
        except OSError:
            time.sleep(0.05)


@pytest.fixture
def start_agent(tmp_path) -> Iterator:
    """start_agent(spec, state_dir=None) -> a bridge to a sim host's daemon; after the test every
    bridge is closed and every daemon and job of those hosts is stopped."""
    started: List[AgentProcess] = []
    dirs: List[str] = []

    def start(spec: Optional[str], state_dir: Optional[str] = None, *extra: str,
              code_root: str = REPO) -> AgentProcess:
        state_dir = state_dir or str(tmp_path / "state")
        args = (["--sim", spec] if spec else ["--backend", "sim"]) + list(extra)
        agent = AgentProcess(state_dir, *args, code_root=code_root)
        started.append(agent)
        if state_dir not in dirs:
            dirs.append(state_dir)
        return agent

    yield start
    for agent in started:
        if agent.proc.poll() is None:
            agent.close()
    for state_dir in dirs:
        stop_host(state_dir)


@pytest.fixture(autouse=True)
def _own_state_home(tmp_path, monkeypatch) -> None:
    """Every test (and every fractui it runs) keeps its store under its own tmp dir, and sees
    no theme of the machine's user."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


@pytest.fixture(autouse=True)
def _no_columns(monkeypatch) -> None:
    """No $COLUMNS or $LINES from the shell that runs the suite (one may export them, and
    pytest-xdist's workers have them): fractui cuts its tables to $COLUMNS, and a test that
    reads whole lines read them cut. A test that wants a width sets one."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)


@pytest.fixture(scope="session")
def pg_server() -> Iterator["PgServer"]:
    """A real PostgreSQL server, started once for the session and stopped at its end."""
    from tests.pg import PgServer
    server = PgServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """A new, empty store's URL on each backend: an SQLite file, or a PostgreSQL database of
    this test's own."""
    if request.param == "sqlite":
        return "sqlite://" + str(tmp_path / "store.db")
    server = request.getfixturevalue("pg_server")
    return server.url(server.new_database())


@contextlib.contextmanager
def accounts() -> Iterator[None]:
    """One useradd, usermod or userdel at a time on this machine, of every test process (two xdist
    workers): each locks /etc/passwd, and one that finds it locked by another fails ("cannot
    lock /etc/passwd; try again later"), which failed a test's set-up or tear-down at random."""
    with open(os.path.join(tempfile.gettempdir(), "fractui-tests-accounts.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _ended_all_of(user: str) -> None:
    """SIGKILL to every process of ``user``, until none is left (bounded): a process killed
    is still the user's until it is reaped, and userdel refuses a user with one ("user … is
    currently used by process N"), which failed a test's tear-down at random."""
    deadline = time.monotonic() + 30
    while subprocess.run(["pkill", "-KILL", "-u", user], check=False).returncode == 0:
        if time.monotonic() > deadline:
            pytest.fail("processes of %s outlived 30 s of SIGKILL" % user)
        time.sleep(0.05)


@pytest.fixture
def plain_users():
    """Makes real unprivileged accounts, each with a home of its own: ``make(prefix)`` ->
    (name, home); every one made is removed afterwards, with anything it still runs."""
    if shutil.which("useradd") is None or shutil.which("sudo") is None:
        pytest.fail("these tests need useradd and sudo (.ci/run installs sudo)")
    made: List[Tuple[str, str]] = []

    def make(prefix: str = "fractui-t") -> Tuple[str, str]:
        name = "%s%s" % (prefix, uuid.uuid4().hex[:6])
        home = tempfile.mkdtemp(prefix="fractui-home-")
        os.chmod(home, 0o755)
        # "*": no password, yet not locked (sshd refuses a locked account even with a key)
        with accounts():
            subprocess.run(["useradd", "--home-dir", home, "--no-create-home", "--shell",
                            "/bin/sh", "--password", "*", name], check=True)
        made.append((name, home))
        info = pwd.getpwnam(name)
        os.chown(home, info.pw_uid, info.pw_gid)
        return name, home

    yield make
    for name, home in made:
        _ended_all_of(name)
        with accounts():
            subprocess.run(["userdel", name], check=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def plain_user(plain_users):
    """A real unprivileged account, with a home of its own, removed afterwards."""
    return plain_users()


@pytest.fixture
def small_fs(tmp_path):
    """A real 8 MiB filesystem (tmpfs), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs",
                           str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.fail("this test mounts a tmpfs, which needs root: %s" % made.stderr)
    yield mount
    for name in os.listdir(mount):  # its agents first: a lazy unmount would hide them
        stop_host(str(mount / name))
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def berlin(monkeypatch):
    """This process's local time is Berlin's (summer time ends 2026-10-25, begins
    2026-03-29): the reports' days and ranges as the clocks there say them."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _every_module_imported() -> None:
    """Every module of the project's packages imported before any test draws an example.
    Hypothesis draws some values from the constants of the project's modules imported so far,
    so a derandomized test drew other examples after other test files in its worker (xdist's
    loadfile) than alone: a failure the suite found was not found again by its file. Called
    last: benchmarks' modules import this one's helpers."""
    for top in ("fractui", "remote_agent", "benchmarks"):
        package = importlib.import_module(top)
        for module in pkgutil.walk_packages(package.__path__, top + "."):
            if not module.name.endswith(".__main__"):  # (runs its verb when imported)
                importlib.import_module(module.name)


_every_module_imported()
