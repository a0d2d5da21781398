"""Who carries decisions out, end to end: ``fractui`` on a configured fleet with a store runs a
scheduler while no other holds the lease (and hands the lease back on quit), and only records
while a headless ``fractui scheduler`` holds it; the header names which."""

from __future__ import annotations

import os
import sys

from fractui.config import QueueConfig
from tests import localfleet
from tests.localfleet import wait
from tests.test_tui_demo import Terminal

local_fleet = localfleet.local_fleet
QUEUES = [QueueConfig(name="half", gpu=0.5)]


def _tui(f, *extra: str) -> Terminal:
    return Terminal([sys.executable, "-m", "fractui", "--config", f.write_config(), *extra],
                    cols=160, rows=40)


def _quit(term: Terminal) -> None:
    os.write(term.master, b"q")
    term.drain(60)
    assert term.proc.returncode == 0, term.output[-3000:]


def test_the_tui_runs_the_scheduler_when_none_does_and_releases_it_on_quit(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, QUEUES)
    job = f.submit("half")
    term = _tui(f)
    try:
        assert term.read_until(rb"scheduler: this TUI", 60), term.output[-3000:]
        holder = f.store.lease_holder()
        assert holder is not None and holder[0].endswith("(tui)")
        wait(lambda: f.store.get(job.id).state == "running", f.states)  # it acts
        _quit(term)
        assert f.store.lease_holder() is None  # handed over at once
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        os.close(term.master)


def test_the_tui_only_records_while_a_headless_scheduler_holds_the_lease(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, QUEUES)
    head = f.scheduler_process("ops-head")
    term = None
    try:
        wait(lambda: (f.store.lease_holder() or ("",))[0] == "ops-head", f.states, alive=head)
        term = _tui(f)
        assert term.read_until(rb"scheduler: ops-head", 60), term.output[-3000:]
        _quit(term)
        assert f.store.lease_holder()[0] == "ops-head"  # untouched by the TUI
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
    try:
        assert term.read_until(rb"scheduler: none", 60), term.output[-3000:]
        assert f.store.lease_holder() is None
        _quit(term)
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        os.close(term.master)
