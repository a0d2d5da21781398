"""Job screens share their host's connection, on which the agent keeps one follow per job:
a follow asked for by one screen is ended only when no screen follows that job any more, so a
screen that closes (its unfollow sent from a thread, maybe after a new screen of the same job
asked) never ends the follow of another; and a follow asked for a screen is ended by someone,
even one answered after its screen was left."""

from __future__ import annotations

import os
import signal
import sys
import threading

from fractui.tui.source import LiveSource
from tests import localfleet
from tests.test_job_supervision import wait_until
from tests.test_tui_jobs import QUARTER, SHARES, job_screen, open_job
from tests.tui_frozen import pilot_test
from tests.tui_live import live_app, until

local_fleet = localfleet.local_fleet
NEXT = "the line printed once told"


def _told_then_says(flag) -> list:
    """A job that says it is up, waits until ``flag`` exists, then says NEXT and waits."""
    return [sys.executable, "-c",
            "import os, time\nprint('up', flush=True)\nwhile not os.path.exists(%r):\n"
            "    time.sleep(0.05)\nprint(%r, flush=True)\ntime.sleep(600)" % (str(flag), NEXT)]


def _unfollows_through() -> None:
    """Until every unfollow asked so far is answered (each is sent from its own thread)."""
    for thread in threading.enumerate():
        if thread.name == "unfollow":
            thread.join(30)
            assert not thread.is_alive(), "an unfollow still unanswered"


def _running(local_fleet, tmp_path):
    flag = tmp_path / "go-on"
    f = local_fleet(SHARES, QUARTER)
    job = f.submit("quarter", argv=_told_then_says(flag))
    f.until(lambda: f.store.get(job.id).agent_job is not None and "up" in f.said(job))
    return f, f.store.get(job.id), flag


def test_a_job_screen_closed_over_another_of_the_same_job_leaves_it_followed(local_fleet,
                                                                              tmp_path):
    """A second screen of the job, opened over the first, is closed: the first is still shown
    what the job prints next."""
    f, job, flag = _running(local_fleet, tmp_path)

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            await open_job(app, pilot, job.id)
            first = job_screen(app)
            await until(pilot, lambda: first.logview.count, "the first screen's lines")
            await open_job(app, pilot, job.id)
            second = job_screen(app)
            assert second is not first
            await until(pilot, lambda: second.logview.count, "the second screen's lines")
            await pilot.press("escape")
            assert app.screen is first
            _unfollows_through()
            flag.touch()
            await until(pilot, lambda: NEXT in [first.logview.line(i) for i in range(
                first.logview.count)], "the job's next line on the first screen")

    drive()


def test_an_unfollow_sent_after_a_new_follow_of_the_job_ends_only_its_own(local_fleet,
                                                                          tmp_path):
    """A job screen reopened at once: the closed screen's unfollow reaches the agent after
    the new screen's follow. The new one is still told what the job prints next."""
    f, job, flag = _running(local_fleet, tmp_path)
    source = LiveSource(f.config, f.store)
    source.start()
    try:
        wait_until(lambda: source.fleet.session("gpu-b").status.state == "online",
                   "gpu-b online")
        key = job.key(f.store.uid)
        _, stop_old = source.follow_logs("gpu-b", job.agent_job, key, lambda *_: None)
        told: list[str] = []
        lines, stop_new = source.follow_logs("gpu-b", job.agent_job, key,
                                             lambda data, ended: told.append(data))
        assert lines == ["up"]
        stop_old()
        _unfollows_through()
        flag.touch()
        wait_until(lambda: NEXT in "".join(told), "the job's next line told")
        stop_new()
    finally:
        source.stop()


def test_a_follow_answered_after_its_screen_closed_is_ended(local_fleet, tmp_path):
    """The job screen is closed while its follow is asked (the host's agent stopped, SIGSTOP,
    so the call waits): once the agent answers, that follow is ended all the same — its
    listener leaves the session — rather than kept for a screen that is gone (and counted, so
    that no later screen's unfollow ends it)."""
    f, job, _ = _running(local_fleet, tmp_path)
    daemon = f.fleet.session("gpu-b").call("daemon.version")["pid"]

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            session = app.source.fleet.session("gpu-b")
            before = len(session.listeners)
            os.kill(daemon, signal.SIGSTOP)
            try:
                await open_job(app, pilot, job.id)
                screen = job_screen(app)
                await until(pilot, lambda: len(session.listeners) > before,
                            "the follow asked")
                await pilot.press("escape")
                assert app.screen is not screen
            finally:
                os.kill(daemon, signal.SIGCONT)
            await until(pilot, lambda: len(session.listeners) == before,
                        "the follow of the closed screen ended")
            _unfollows_through()

    drive()
