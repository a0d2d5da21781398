"""End to end: ``fractui demo`` in a real terminal (a pty) starts a small simulated fleet, shows
its GPUs, runs jobs, and on ``q`` leaves no agent daemon or job process behind."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from typing import Iterator

import pytest

from tests.conftest import REPO, stop_host


def _processes_naming(text: str) -> list[int]:
    """Live processes whose command line or environment mentions ``text`` (the demo's state
    dirs: daemons take them as --state-dir, jobs get them in FRACTUI_SIM_STATE)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for part in ("cmdline", "environ"):
            try:
                with open("/proc/%s/%s" % (pid, part), "rb") as f:
                    if text.encode() in f.read():
                        found.append(int(pid))
                        break
            except OSError:  # gone meanwhile, or not ours to read
                pass
    return found


class Terminal:
    """A child process on a pty, its screen output collected as it comes. ``controlling``: the
    pty is the child's controlling terminal, as a login's is (closing it hangs the child up);
    else it is only the child's stdin and stdout, and closing it says nothing."""

    def __init__(self, argv: list[str], cols: int = 120, rows: int = 36,
                 controlling: bool = False) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = dict(os.environ, TERM="xterm-256color", PYTHONPATH=REPO, COLUMNS=str(cols),
                   LINES=str(rows))
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     cwd=REPO, preexec_fn=_controlled if controlling else None,
                                     start_new_session=not controlling)
        os.close(slave)
        self.output = b""

    def read_until(self, pattern: bytes, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if re.search(pattern, self.output):
                return True
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    return bool(re.search(pattern, self.output))
        return False

    def drain(self, timeout_s: float) -> None:
        """Keep reading (so the child never blocks on a full pty) until it exits."""
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.read_until(b"(?!)", 0.2)

    @contextlib.contextmanager
    def closing(self) -> Iterator[Terminal]:
        """The terminal for the block; after it, the child killed where it still runs (left by
        a failure) and the terminal closed."""
        try:
            yield self
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            os.close(self.master)

    def to_the_end(self, timeout_s: float = 60) -> bytes:
        """All it wrote, stdout and stderr alike, once it has ended (killed if it had not by
        ``timeout_s``); the terminal is closed."""
        try:
            self.drain(timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self.read_until(b"(?!)", 0.5)  # what was left unread when it ended
        os.close(self.master)
        return self.output


def _controlled() -> None:
    """In the child: a session of its own whose controlling terminal is its stdin's pty."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.mark.parametrize("leave", ["q", "terminal closed", "terminal gone unsaid",
                                   "killed twice", "killed, then ctrl-c",
                                   "killed, then terminal closed"])
def test_demo_shows_gpus_runs_jobs_and_leaving_leaves_nothing_behind(leave):
    """``terminal closed``: the admin's SSH session drops, sshd closes the pty and the kernel
    hangs the demo up. ``terminal gone unsaid``: the pty closes with no SIGHUP sent (it was not
    the demo's controlling terminal); its input then reads end of file, which ends it too.
    ``killed twice``: SIGTERM, and again while the demo stops what it started (a service
    manager's stop, an impatient admin): the second must not cut the clean-up short; nor must
    ``killed, then ctrl-c``, Ctrl-C in its terminal (back from the app's raw mode) meanwhile;
    nor ``killed, then terminal closed``: the hang-up's SIGCONT, which Textual's handler (left
    in place once the app ended) took for a return to the app, raising "no running event
    loop" in the clean-up (exit 70, the agents and jobs left running)."""
    term = Terminal([sys.executable, "-m", "fractui", "demo", "--gpus", "4", "--seed", "3"],
                    controlling=leave.endswith("terminal closed"))
    closed = False
    root = ""
    try:
        assert term.read_until(rb"under (/\S+fractui-demo-\S+)", 30), term.output[-2000:]
        root = re.search(rb"under (/\S+fractui-demo-\S+)", term.output).group(1).decode()
        for model in (b"A100-80GB", b"H100", b"L4", b"A10"):
            assert term.read_until(re.escape(model), 60), (model, term.output[-3000:])
        assert term.read_until(rb"online", 60)
        deadline = time.monotonic() + 90  # until jobs run: simulated workloads under root
        jobs: list[int] = []
        while not jobs and time.monotonic() < deadline:
            term.read_until(b"(?!)", 0.5)
            jobs = [p for p in _processes_naming(root) if _is_job(p)]
        assert jobs, "no job started within 90 s"
        if leave in ("q", "killed twice", "killed, then ctrl-c"):
            if leave == "q":
                os.write(term.master, b"q")
            else:
                term.proc.send_signal(signal.SIGTERM)
                assert term.read_until(b"stopping jobs and agents", 30), term.output[-3000:]
                term.proc.send_signal(signal.SIGTERM if leave == "killed twice" else
                                      signal.SIGINT)
            term.drain(60)
            assert term.proc.returncode == 0, term.output[-3000:]
            assert b"stopped;" in term.output
        else:  # the admin's SSH session dies: its terminal goes
            if leave == "killed, then terminal closed":
                term.proc.send_signal(signal.SIGTERM)
                assert term.read_until(b"stopping jobs and agents", 30), term.output[-3000:]
            os.close(term.master)
            closed = True
            assert term.proc.wait(60) == 0
        assert _processes_naming(root) == []
        assert not os.path.exists(root)
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        if not closed:
            os.close(term.master)
        if root and os.path.isdir(os.path.join(root, "hosts")):  # a failed run: clean up
            for name in os.listdir(os.path.join(root, "hosts")):
                stop_host(os.path.join(root, "hosts", name))
            shutil.rmtree(root)


def _is_job(pid: int) -> bool:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return b"remote_agent.simload" in f.read()
    except OSError:
        return False


def test_fractui_without_a_verb_opens_the_configured_fleet(tmp_path):
    state = tmp_path / "gpu-a"
    config = tmp_path / "config.toml"
    config.write_text('[[hosts]]\nname = "gpu-a"\ntransport = "local"\nsim = "2xL4"\n'
                      'state_dir = "%s"\n\n[tui]\ntheme = "light"\n' % state)
    term = Terminal([sys.executable, "-m", "fractui", "--config", str(config)])
    try:
        assert term.read_until(rb"gpu-a", 30), term.output[-2000:]
        assert term.read_until(rb"online", 60), term.output[-3000:]
        assert term.read_until(rb"L4", 10)
        os.write(term.master, b"q")
        term.drain(30)
        assert term.proc.returncode == 0, term.output[-3000:]
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        os.close(term.master)
        stop_host(str(state))  # the host's daemon outlives the TUI, as on a real host


def test_the_tui_with_no_terminal_for_its_keys_exits_2_saying_so(tmp_path):
    """Its input from /dev/null or a pipe, the TUI would read end of file forever (Textual's
    input thread does) and never end: it is refused before anything starts."""
    config = tmp_path / "config.toml"
    config.write_text("")
    for verb, name in (([], "the TUI"), (["demo"], "fractui demo")):
        done = subprocess.run([sys.executable, "-m", "fractui", "--config", str(config)] + verb,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              cwd=REPO, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stderr == ("fractui: stdin is not a terminal: %s reads its keys there (run "
                               "it in a terminal, its input not from a file or a pipe)\n" % name)
        assert "fractui-demo-" not in done.stdout  # no simulated fleet was started


@pytest.mark.parametrize("locale", [["LC_ALL=C", "PYTHONUTF8=0"], ["PYTHONIOENCODING=latin-1"]])
def test_the_tui_in_an_encoding_that_cannot_hold_its_drawing_exits_2_saying_so(tmp_path,
                                                                             locale):
    """In a terminal Python writes to as ASCII (the C locale with PYTHONUTF8=0) or Latin-1, the
    TUI drew every bar, line and mark as its escape (``\\u258f``), six cells for one: a screen
    no one could read, whose `q` still ended it. It is refused before anything starts."""
    config = tmp_path / "config.toml"
    config.write_text("")
    for verb, name in (([], "the TUI"), (["demo"], "fractui demo")):
        term = Terminal(["env", *locale, sys.executable, "-m", "fractui", "--config",
                         str(config), *verb])
        shown = term.to_the_end(timeout_s=30).decode()
        encoding = "ascii" if "PYTHONUTF8=0" in locale else "iso8859-1"  # as Python names it
        assert term.proc.returncode == 2, shown[-2000:]
        assert shown == (
            "fractui: this terminal's encoding, %s, cannot hold what %s draws with (its bars, "
            "lines and marks): run it in a UTF-8 locale, e.g. LC_ALL=C.UTF-8, and without "
            "PYTHONUTF8=0 or a PYTHONIOENCODING that is not UTF-8\r\n" % (encoding, name))


WATCH_UNPOLLABLE = """
import os, threading
from fractui.tui.run import _hang_up_when_gone
read, write = os.pipe()
os.close(read)
os.close(write)
watch = threading.Thread(target=_hang_up_when_gone, args=(read, threading.Event()))
watch.start()
watch.join()
print("watch ended")
"""


def test_the_terminal_watch_takes_a_terminal_poll_cannot_look_at_for_no_hang_up():
    """Where poll answers POLLNVAL (macOS's poll takes no device: a live tty says it, as a
    closed descriptor does here) the watch ends without a SIGHUP, else every TUI there ended
    as it began; it does not poll on and on either (the process would not end)."""
    done = subprocess.run([sys.executable, "-c", WATCH_UNPOLLABLE], capture_output=True,
                          text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "watch ended\n", "")


# fractui's own main, a signal (argv[3]: its name, SIGTERM or SIGINT) sent to itself at one
# point of the TUI's start (argv[1]: where, "module:attribute.attribute"; argv[2]: "after" that
# call returns, or "before" it is made), that point named on the terminal ("at <where>: <its
# first argument, or the pid of the process it started>")
SIGTERM_AT = """
import importlib, os, signal, sys
from fractui.cli import main

where, when, sent = sys.argv[1], sys.argv[2], getattr(signal, sys.argv[3])
module, names = where.split(":")
owner = importlib.import_module(module)
*path, name = names.split(".")
for part in path:
    owner = getattr(owner, part)
real = getattr(owner, name)

def then_sigterm(*args, **kwargs):
    if when == "before":
        print("at %s" % where, flush=True)
        os.kill(os.getpid(), sent)
    out = real(*args, **kwargs)
    if when == "after":
        proc = getattr(args[0], "proc", None)  # a process started: its pid, else the argument
        print("at %s: %s" % (where, proc.pid if proc is not None else args[0]), flush=True)
        os.kill(os.getpid(), sent)
    return out

setattr(owner, name, then_sigterm)
sys.argv = ["fractui"] + sys.argv[4:]
sys.exit(main())
"""


def sigterm_at(where: str, when: str, *argv: str, sent: str = "SIGTERM",
               **terminal: object) -> Terminal:
    """``fractui *argv`` in a terminal, sent SIGTERM (or ``sent``) at ``where`` (SIGTERM_AT)."""
    return Terminal([sys.executable, "-c", SIGTERM_AT, where, when, sent, *argv],
                    **terminal)  # type: ignore[arg-type]


@pytest.mark.parametrize("where, when", [
    ("fractui.demo:open_store", "after"),  # the demo's store made, nothing started yet
    ("fractui.scheduler.child:ChildScheduler.start", "after"),  # its scheduler running
    ("fractui.tui.app:FractuiApp.run", "before"),  # all started, the app's loop not yet
])
def test_a_sigterm_while_the_demo_starts_ends_it_as_q_does(where, when):
    """A SIGTERM while the demo opened its store and started its agents and scheduler killed
    it by the default action (its directory, and what was started, left behind) or cut the
    start short with a SystemExit (exit 143); and one once all was started, its app's loop
    not yet running, was noted where nothing could wake that loop. Each ends it as `q` does:
    the start goes on to its end, the app ends as it opens, all is stopped and removed."""
    term = sigterm_at(where, when, "demo", "--gpus", "4", "--seed", "3")
    root = ""
    try:
        seam = rb"at %s" % re.escape(where.encode())
        assert term.read_until(seam, 60), term.output[-3000:]
        assert term.read_until(rb"(/\S*fractui-demo-[^/\s]+)", 30), term.output[-3000:]
        root = re.search(rb"(/\S*fractui-demo-[^/\s]+)", term.output).group(1).decode()
        term.drain(120)
        assert term.proc.returncode == 0, term.output[-3000:]
        assert b"stopped;" in term.output
        assert _processes_naming(root) == []
        assert not os.path.exists(root)
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        os.close(term.master)
        if root and os.path.isdir(os.path.join(root, "hosts")):  # a failed run: clean up
            for name in os.listdir(os.path.join(root, "hosts")):
                stop_host(os.path.join(root, "hosts", name))
        if root:
            shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("where", [
    "fractui.demo:open_store",  # in Demo(): its directory made, its store opened
    "fractui.tui.run:count",  # the demo made, its first line being said
])
def test_a_ctrl_c_while_the_demo_is_made_leaves_no_directory(tmp_path, monkeypatch, where):
    """Ctrl-C (or a terminal gone, whose first line then failed to be said) as the demo was
    made, before its start: its directory under the temporary folder, its store and config
    in it, was left behind. Nothing is left, and nothing runs."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    term = sigterm_at(where, "after", "demo", "--gpus", "4", "--seed", "3", sent="SIGINT")
    with term.closing():
        assert term.read_until(rb"at %s" % re.escape(where.encode()), 60), term.output[-3000:]
        term.drain(120)
        assert term.proc.returncode is not None and term.proc.returncode != 0, term.output
        assert b"Traceback" not in term.output, term.output[-3000:]
        assert [p.name for p in tmp_path.iterdir()] == [], term.output[-3000:]
        assert _processes_naming(str(tmp_path)) == []


def test_a_bad_tui_key_in_the_config_exits_2_with_its_line(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[tui]\nkeys = { "fleet.nope" = "f" }\n')
    for verb in ([], ["demo"]):
        done = subprocess.run([sys.executable, "-m", "fractui", "--config", str(config)] + verb,
                              capture_output=True, text=True, cwd=REPO, timeout=60)
        assert done.returncode == 2
        assert "%s:2: tui.keys: unknown binding id 'fleet.nope'" % config in done.stderr


def test_in_the_demo_a_host_cordoned_from_the_palette_takes_no_new_work():
    """The issue's last step, keyboard only: cordon a host in ``fractui demo`` and watch no
    new work land there while the job stream and the scheduler go on elsewhere."""
    from fractui.store import open_store, sqlite_url

    term = Terminal([sys.executable, "-m", "fractui", "demo", "--gpus", "4", "--seed", "5"])
    root = ""
    try:
        assert term.read_until(rb"under (/\S+fractui-demo-\S+)", 30), term.output[-2000:]
        root = re.search(rb"under (/\S+fractui-demo-\S+)", term.output).group(1).decode()
        assert term.read_until(rb"online", 60)
        store = open_store(sqlite_url(os.path.join(root, "store.db")))
        try:
            deadline = time.monotonic() + 90
            while not store.jobs(["running"]) and time.monotonic() < deadline:
                term.read_until(b"(?!)", 0.5)
            assert store.jobs(["running"]), "no job ran within 90 s"
            os.write(term.master, b":")
            assert term.read_until(rb"Search for commands", 10), term.output[-3000:]
            os.write(term.master, b"cordon host l4-1")
            # the palette's search has found it: a cordon's help is shown only as a search's hit
            assert term.read_until(rb"no new work lands there; what runs runs on", 10), \
                term.output[-3000:]
            os.write(term.master, b"\r")
            deadline = time.monotonic() + 30
            while not store.cordons() and time.monotonic() < deadline:
                term.read_until(b"(?!)", 0.5)
            [cordon] = store.cordons()
            assert (cordon.host, cordon.gpu, cordon.mode) == ("l4-1", None, "cordon")
            assert term.read_until(rb"1 cordoned", 10), term.output[-3000:]

            def decided_since() -> list:
                return [e for e in store.audit_log(limit=10000)
                        if e.action in ("decide", "place") and e.time > cordon.since]

            deadline = time.monotonic() + 120  # until the scheduler placed new work elsewhere
            while len(decided_since()) < 3 and time.monotonic() < deadline:
                term.read_until(b"(?!)", 1.0)
            decided = decided_since()
            assert len(decided) >= 3, "the scheduler placed nothing after the cordon"
            assert [e.detail["slot"]["host"] for e in decided if
                    e.detail["slot"]["host"] == "l4-1"] == []
            assert not [j for j in store.jobs(["placed"]) if j.slot.host == "l4-1"]
        finally:
            store.close()
        os.write(term.master, b"q")
        term.drain(60)
        assert term.proc.returncode == 0, term.output[-3000:]
    finally:
        if term.proc.poll() is None:  # a failed run: hung up, the demo stops what it started
            term.proc.send_signal(signal.SIGHUP)
            try:
                term.proc.wait(60)
            except subprocess.TimeoutExpired:
                term.proc.kill()
        os.close(term.master)
        if root and os.path.isdir(os.path.join(root, "hosts")):  # a failed run: clean up
            for name in os.listdir(os.path.join(root, "hosts")):
                stop_host(os.path.join(root, "hosts", name))


@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_while_the_store_never_answers_ends_the_tui_as_q_does(tmp_path, sent):
    """The store is a server that takes the connection and never answers (and the URL gives
    the connection no time limit): the TUI's start waits on it. A SIGTERM or SIGHUP then was
    noted and left to act once that step ended, which was never: the TUI went on waiting
    until a SIGKILL. It ends as `q` does, exit 0, what was started taken down."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "postgresql://fractui@127.0.0.1:%d/fractui?connect_timeout'
                      '=0"\n' % server.getsockname()[1])
    term = Terminal([sys.executable, "-m", "fractui", "--config", str(config)])
    taken = []
    try:
        ready, _, _ = select.select([server], [], [], 60)
        assert ready, term.output[-3000:]
        taken.append(server.accept()[0])  # its start waits on this connection from now on
        term.proc.send_signal(sent)
        term.drain(60)
        assert term.proc.returncode == 0, term.output[-3000:]
        assert b"Traceback" not in term.output, term.output[-3000:]
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        os.close(term.master)
        for connection in taken:
            connection.close()
        server.close()


def test_stopping_the_demo_starts_no_agent_again(monkeypatch):
    """The demo's stop shuts each host's agent down through the demo's own sessions, which
    then connect no more: no agent is started again. (They reconnected while the TUI's store
    watcher took its moment to stop, a second or two here, so every agent shut down was
    started anew, and the sweep then waited 3 s for each before killing it.)"""
    from fractui import demo as demo_module
    from fractui.tui.source import LiveSource
    from remote_agent.daemon.paths import AgentPaths

    def daemon(state_dir: str) -> int:
        """The pid of the daemon serving ``state_dir``, 0 if none runs."""
        try:
            with open(AgentPaths(state_dir).pid_file) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0
        return pid if (pid, False) in demo_module.running_pids(state_dir) else 0

    at_sweep = {}
    real_sweep, real_stop = demo_module.sweep, LiveSource.stop

    def sweep(state_dir: str, wait_s: float = 3.0) -> None:
        at_sweep[state_dir] = daemon(state_dir)
        real_sweep(state_dir, wait_s)

    def slow_stop(source: LiveSource) -> None:
        time.sleep(2)  # as the TUI's store watcher can take
        real_stop(source)

    monkeypatch.setattr(demo_module, "sweep", sweep)
    monkeypatch.setattr(LiveSource, "stop", slow_stop)
    demo = demo_module.Demo(gpus=4, seed=3)
    dirs = [h.state_dir for h in demo.config.hosts]
    try:
        demo.start()
        deadline = time.monotonic() + 60
        while {s.state for s in demo.source.fleet.statuses()} != {"online"}:
            assert time.monotonic() < deadline, demo.source.fleet.statuses()
            time.sleep(0.1)
        first = {d: daemon(d) for d in dirs}
        assert all(first.values()), first
    finally:
        demo.stop()
    assert set(at_sweep) == set(dirs)
    assert {d: pid for d, pid in at_sweep.items() if pid not in (0, first[d])} == {}
    assert not any(os.path.exists(d) for d in dirs)


def test_the_sweep_removes_the_socket_of_a_daemon_it_killed(start_agent, tmp_path):
    """A daemon killed cannot remove its socket, which stays in the user's socket directory
    among every agent's; the sweep that killed it removes it. One that stopped removed its own."""
    from fractui.demo import sweep
    from remote_agent.daemon.paths import AgentPaths
    from tests.test_jobs import alive

    for name, how in (("killed", None), ("stopped", "daemon.shutdown")):
        state = str(tmp_path / name)
        agent = start_agent("1xL4", state)
        agent.call("hello")
        paths = AgentPaths(state)
        with open(paths.pid_file) as f:
            pid = int(f.read())
        assert os.path.exists(paths.socket)
        if how:
            agent.call(how)
        sweep(state, wait_s=10 if how else 0)
        deadline = time.monotonic() + 30
        while alive(pid):
            assert time.monotonic() < deadline, "the daemon %d still runs" % pid
            time.sleep(0.05)
        assert not os.path.exists(paths.socket), name
