"""A typed pattern (the fleet's and the jobs' filter, the log's search) that backtracks on
what others wrote is cut off by its time budget and matched as written from then on; the TUI
goes on answering keys."""

from __future__ import annotations

import dataclasses
import faulthandler
import pathlib
import re
import signal
import threading

import pytest

import fractui
from fractui.config import Config, TuiSettings
from fractui.tui.app import FractuiApp
from fractui.tui.jobs_view import JobsScreen
from fractui.tui.sample import NOW, QUEUES, TEAMS, sample_fleet
from fractui.tui.source import Source
from fractui.tui.typed import TOO_SLOW, Clocked, Typed
from tests.tui_frozen import LOGS, STATES, pilot_test, said, screen_lines, settled
from tests.tui_live import until

SLOW = "(a+)+$"
BAIT = "a" * 27 + "!"  # (a+)+$ tries some 2^28 ways to end here: many seconds, each more a twice
OVERALL_S = 600  # a match the budget failed to cut off runs on for ever: the test ends anyway


@pytest.fixture(autouse=True)
def overall_timeout():
    """faulthandler's watchdog needs no GIL, which a running match holds."""
    faulthandler.dump_traceback_later(OVERALL_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _kept(_signum: int, _frame: object) -> None:
    """A handler of SIGALRM set before a pass: it must be the handler after it."""


def test_a_pattern_that_backtracks_is_cut_off_and_matched_as_written_from_then_on():
    typed, told = Typed.again(None, SLOW), []
    texts = ["gpu-a " + BAIT, "job named " + SLOW]
    previous = signal.signal(signal.SIGALRM, _kept)
    try:
        found = typed.run(lambda p: [t for t in texts if p.search(t)], told.append)
        assert found == ["job named " + SLOW] and typed.slow and told == [TOO_SLOW]
        assert signal.getsignal(signal.SIGALRM) is _kept
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        assert typed.run(lambda p: p.spans(BAIT + SLOW), told.append) == [(28, 34)]
        assert told == [TOO_SLOW]  # said once
        assert Typed.again(typed, SLOW) is typed  # a refresh keeps it as written
        assert not Typed.again(typed, "a+").slow
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_the_timer_is_cleared_and_the_handler_restored_when_the_work_fails():
    def fails(pattern: Clocked) -> None:
        pattern.search("x")
        raise LookupError("the pass failed")

    previous = signal.signal(signal.SIGALRM, _kept)
    try:
        with pytest.raises(LookupError):
            Typed.again(None, "x").run(fails, pytest.fail)
        assert signal.getsignal(signal.SIGALRM) is _kept
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_off_the_main_thread_a_pattern_is_matched_unbounded():
    """A thread may not set a signal's handler (ValueError): there the pass runs as it is."""
    got: list[object] = []

    def search() -> None:
        try:
            got.append(Typed.again(None, "gpu-(a|b)").run(
                lambda p: [p.search("gpu-b"), p.search("gpu-c")], pytest.fail))
        except Exception as e:  # (said by the assert below)
            got.append(e)

    thread = threading.Thread(target=search)
    thread.start()
    thread.join()
    assert got == [[True, False]]


def test_a_filter_over_ten_thousand_rows_stays_a_regex():
    rows = ["%d train-%d vision chen quarter running a10-%d/%d docker.io/x/train:%d"
            % (i, i, i % 300, i % 8, i) for i in range(10_000)]
    for text in ("chen", "train-9.*running|a10-2[0-9]{2}", r"\btrain:1\d\b", "!x"):
        typed = Typed.again(None, text)
        typed.run(lambda p: [r for r in rows if p.search(r)], pytest.fail)
        assert not typed.slow, text


def test_nothing_else_in_fractui_sets_sigalrm():
    """The budget's handler replaces SIGALRM's for a pass, and its timer is ITIMER_REAL:
    another user of either would lose its alarms."""
    root = pathlib.Path(fractui.__file__).parent.parent
    users = sorted(str(p.relative_to(root)) for folder in ("fractui", "remote_agent")
                   for p in (root / folder).rglob("*.py")
                   if re.search(r"SIGALRM|setitimer|ITIMER_|signal\.alarm", p.read_text()))
    assert users == ["fractui/tui/typed.py"]


def slow_app() -> FractuiApp:
    """The frozen fleet, its share job #13 (a10-1 j1) named ``BAIT`` by the store and its
    agent, and job #1's output ending in it."""
    fleet = sample_fleet(16, states=STATES)
    statuses = [dataclasses.replace(s, jobs={k: dict(r, name=BAIT) if k == "j1" else r
                                             for k, r in s.jobs.items()})
                if s.name == "a10-1" else s for s in fleet.statuses]
    jobs = tuple(dataclasses.replace(j, name=BAIT) if j.id == 13 else j
                 for j in fleet.store.jobs)
    logs = {"a100-1/j1": LOGS["a100-1/j1"] + [BAIT]}
    return FractuiApp(Source(statuses, dataclasses.replace(fleet.store, jobs=jobs), logs=logs),
                      Config(path=None, queues=QUEUES, teams=TEAMS, tui=TuiSettings()),
                      clock=lambda: NOW)


@pilot_test
async def test_a_slow_pattern_typed_in_the_filters_and_the_search_leaves_the_keys_answered():
    app = slow_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await settled(pilot)
        fleet = app.screen
        assert any(BAIT in g.text() for v in fleet.model.hosts.values() for g in v.gpus)
        await pilot.press("slash", *SLOW, "enter")
        await pilot.pause()
        assert said(app) == [TOO_SLOW]
        assert any("nothing matches /%s/" % SLOW in line for line in screen_lines(app))
        fleet.relayout()  # a refresh: the pattern is matched as written, and said no more
        assert said(app) == [TOO_SLOW]

        await pilot.press("J")  # a key answered: the jobs view
        await until(pilot, lambda: isinstance(app.screen, JobsScreen)
                    and app.screen.table.row is not None, "the jobs view")
        jobs = app.screen
        await pilot.press("slash", *SLOW, "enter")
        await pilot.pause()
        assert said(app) == [TOO_SLOW] * 2 and jobs.rows == []
        await pilot.press("slash", *["backspace"] * len(SLOW))  # answered: the rows back
        await pilot.pause()
        assert jobs.filter_text == "" and any(r.name == BAIT for r in jobs.rows)
        await pilot.press("escape", "escape")
        await pilot.pause()
        assert app.screen is fleet

        app.open_job(1)
        await settled(pilot)
        log = app.screen.logview
        await pilot.press("slash", *SLOW, "enter")
        await pilot.pause()
        assert said(app)[2:] == [TOO_SLOW, "no line matches /%s/" % SLOW]
        assert log.pattern is not None and log.pattern.slow
        cursor = log.cursor
        await pilot.press("k")  # answered: the cursor up a line
        await pilot.pause()
        assert log.cursor == cursor - 1 and not log.following
        assert any("search /%s/" % SLOW in line for line in screen_lines(app))


@pilot_test
async def test_a_search_found_above_a_slow_line_is_cut_off_as_that_line_is_drawn():
    """The search finds ``epoch 0`` on the first line, the cursor's, before it reaches the
    last; drawing the last line (its matches highlighted) is what backtracks."""
    app = slow_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await settled(pilot)
        app.open_job(1)
        await settled(pilot)
        log = app.screen.logview
        await pilot.press("g", "slash", *("epoch 0 |" + SLOW), "enter")
        await pilot.pause()
        assert log.cursor == 0 and said(app) == [TOO_SLOW] and log.pattern.slow
        await pilot.press("j")  # answered: the cursor down a line
        await pilot.pause()
        assert log.cursor == 1
