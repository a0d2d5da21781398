"""Who carries decisions out, end to end: ``fractui`` on a configured fleet with a store runs
``fractui scheduler`` as its child process — never a pass on its own interpreter — which leads
while no other scheduler holds the lease and is a standby while one does; the header says
which, and the child ends with the TUI however it ends (q, a kill -9, its terminal gone)."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import signal
import sys
import threading
import time

import pytest

from fractui.config import QueueConfig
from fractui.scheduler import Scheduler
from fractui.servable import load_checked
from fractui.tui import fleet_screen
from fractui.tui.run import fleet_app
from tests import localfleet
from tests.localfleet import wait
from tests.test_tui_demo import Terminal, _processes_naming, sigterm_at
from tests.tui_frozen import pilot_test

local_fleet = localfleet.local_fleet
QUEUES = [QueueConfig(name="half", gpu=0.5)]


def _tui(f, *extra: str) -> Terminal:
    return Terminal([sys.executable, "-m", "fractui", "--config", f.write_config(), *extra],
                    cols=160, rows=40)


def _quit(term: Terminal) -> None:
    os.write(term.master, b"q")
    term.drain(60)
    assert term.proc.returncode == 0, term.output[-3000:]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped by its parent, does not)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> list[str]:
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().decode().split("\0")


def test_the_tui_runs_the_scheduler_as_its_child_and_stops_it_on_quit(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, QUEUES)
    job = f.submit("half")
    term = _tui(f)
    with term.closing():
        pattern = rb"scheduler: child process (\d+), holds the lease"
        assert term.read_until(pattern, 60), term.output[-3000:]
        child = int(re.search(pattern, term.output).group(1))
        assert "scheduler" in _cmdline(child) and child != term.proc.pid
        holder = f.store.lease_holder()
        assert holder is not None and holder[0].endswith("(tui)")
        wait(lambda: f.store.get(job.id).state == "running", f.states)  # it acts
        _quit(term)
        assert not _alive(child)
        assert f.store.lease_holder() is None  # handed over at once


def test_the_tuis_child_is_a_standby_while_a_headless_scheduler_holds_the_lease(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, QUEUES)
    head = f.scheduler_process("ops-head")
    term = None
    try:
        wait(lambda: (f.store.lease_holder() or ("",))[0] == "ops-head", f.states, alive=head)
        term = _tui(f)
        assert term.read_until(rb"scheduler: ops-head leads; child process \d+ stands by", 60), \
            term.output[-3000:]
        _quit(term)
        assert f.store.lease_holder()[0] == "ops-head"  # untouched by the TUI's standby
    finally:
        head.terminate()
        head.wait(30)
        if term is not None:
            if term.proc.poll() is None:
                term.proc.kill()
            os.close(term.master)


def test_a_readonly_tui_runs_no_scheduler(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, QUEUES)
    term = _tui(f, "--readonly")
    with term.closing():
        assert term.read_until(rb"scheduler: none", 60), term.output[-3000:]
        assert f.store.lease_holder() is None
        _quit(term)


def test_the_child_scheduler_ends_with_a_tui_killed_with_sigkill(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, QUEUES)
    term = _tui(f)
    with term.closing():
        pattern = rb"scheduler: child process (\d+), holds the lease"
        assert term.read_until(pattern, 60), term.output[-3000:]
        child = int(re.search(pattern, term.output).group(1))
        term.proc.send_signal(signal.SIGKILL)  # no clean-up of the TUI's own runs
        term.proc.wait(10)
        deadline = time.monotonic() + 30
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child)
        assert f.store.lease_holder() is None  # it saw its pipe close and handed over


@pytest.mark.parametrize("controlling", [True, False], ids=["hung up", "gone unsaid"])
def test_the_tui_whose_terminal_goes_ends_and_frees_the_lease(local_fleet, controlling):
    """The admin's SSH session drops: its pty closes, with the kernel's SIGHUP (the pty was the
    TUI's controlling terminal) or without; either way the TUI ends, its child hands the lease
    over, and another scheduler takes it."""
    f = local_fleet({"gpu-a": "1xL4"}, QUEUES)
    term = Terminal([sys.executable, "-m", "fractui", "--config", f.write_config()],
                    cols=160, rows=40, controlling=controlling)
    head = None
    closed = False
    try:
        pattern = rb"scheduler: child process (\d+), holds the lease"
        assert term.read_until(pattern, 60), term.output[-3000:]
        child = int(re.search(pattern, term.output).group(1))
        os.close(term.master)
        closed = True
        term.proc.wait(60)
        assert not _alive(child)
        assert f.store.lease_holder() is None  # handed over, not left to expire
        head = f.scheduler_process("ops-head")
        wait(lambda: (f.store.lease_holder() or ("",))[0] == "ops-head", f.states, alive=head)
    finally:
        if head is not None:
            head.terminate()
            head.wait(30)
        if term.proc.poll() is None:
            term.proc.kill()
        if not closed:
            os.close(term.master)


@pytest.mark.parametrize("where, when", [
    ("fractui.scheduler.child:ChildScheduler.start", "after"),  # the app not made yet
    ("fractui.tui.app:FractuiApp.run", "before"),  # all started, the app's loop not yet
])
def test_a_sigterm_while_the_tui_starts_ends_it_and_its_scheduler_as_q_does(local_fleet,
                                                                            where, when):
    """A SIGTERM once the TUI's scheduler was started, before the app ran, killed the TUI by
    the default action (exit -15, nothing taken down by it); one as its app was about to run
    was noted where nothing could wake its loop, the TUI running on. Either ends it as `q`
    does (exit 0): its scheduler ends, the lease handed over."""
    f = local_fleet({"gpu-a": "1xL4"}, QUEUES)
    config = f.write_config()
    term = sigterm_at(where, when, "--config", config, cols=160, rows=40)
    with term.closing():
        assert term.read_until(rb"at %s" % re.escape(where.encode()), 60), term.output[-3000:]
        term.drain(60)
        assert term.proc.returncode == 0, term.output[-3000:]
        assert [p for p in _processes_naming(config) if _alive(p)] == []  # its scheduler
        assert f.store.lease_holder() is None


@pilot_test
async def test_under_the_pilot_no_pass_runs_in_the_tuis_process_and_the_feed_redraws(
        local_fleet, monkeypatch):
    monkeypatch.setattr(fleet_screen, "STORE_EVERY_S", 3600.0)  # only the feed re-reads
    f = local_fleet({"gpu-a": "1xL4"}, QUEUES)
    config = load_checked(f.write_config())
    before = _schedulers_here()  # earlier tests' (the fixture's, never started, among them)
    with fleet_app(config, readonly=False) as app:
        child = app.source.scheduler
        async with app.run_test(size=(160, 40)) as pilot:
            await pilot.pause()
            assert child is not None and _alive(child.pid)
            assert _new(_schedulers_here(), before) == []
            job = f.submit("half")  # by another client: the screen hears it on the feed
            deadline = time.monotonic() + 30
            screen = app.screen
            while time.monotonic() < deadline and not (
                    screen.model.store and any(j.id == job.id and j.state == "running"
                                               for j in screen.model.store.jobs)):
                await asyncio.sleep(0.1)
            assert any(j.id == job.id and j.state == "running" for j in screen.model.store.jobs), (
                "shown", screen.model.store, "in the store", f.states(), "child", child.exit_code())
            await pilot.press("q")
        assert _new(_schedulers_here(), before) == []
    assert not _alive(child.pid)


def _schedulers_here() -> list:
    """Scheduler objects, and the threads a started one runs, in this process."""
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, Scheduler)] + [
        t for t in threading.enumerate() if t.name.startswith("scheduler")]


def _new(now: list, before: list) -> list:
    return [o for o in now if not any(o is b for b in before)]
