"""The job screen on a simulated fleet: details from the store and the agent, output followed
live and searched, stop/requeue/preempt each confirmed before the store changes; and
``--readonly``, which binds none of the dangerous actions."""

from __future__ import annotations

import io
import os
import signal
import sys
import threading

from rich.console import Console

from fractui.config import QueueConfig
from fractui.demo import _read_pid
from fractui.fleet import answers
from fractui.store.intents import Asker, ask_stop
from fractui.tui.help import HelpScreen
from fractui.tui.jobs import ConfirmScreen, JobScreen
from fractui.tui.jobs_view import JobsScreen
from fractui.tui.queues import QueuePanel
from fractui.tui.sample import NOW
from fractui.words import NO_SCHEDULER
from tests import localfleet
from tests.localfleet import POLITE
from tests.test_tui_pilot import palette
from tests.tui_frozen import (frozen_app, notices, pilot_test, said, screen_lines, settled,
                              settled_app)
from tests.tui_live import fleet, live_app, until

local_fleet = localfleet.local_fleet
SHARES = {"gpu-b": "1xL4"}
QUARTER = [QueueConfig(name="quarter", gpu=0.25)]

# prints a line every 0.1 s for a while: output that keeps coming while the screen is open
TALKER = [sys.executable, "-c",
          "import time\nfor i in range(400):\n    print('tick %d' % i + (' needle' if i % 7 == 3 "
          "else ''), flush=True)\n    time.sleep(0.1)"]


def text_of(renderable) -> str:
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def job_screen(app) -> JobScreen:
    assert isinstance(app.screen, JobScreen), app.screen
    return app.screen


def a_job(local_fleet, argv, state: str = "running"):
    """The share fleet with one job of ``argv`` in its quarter queue, the scheduler's passes
    run until the job is ``state``: (the fleet, the job)."""
    f = local_fleet(SHARES, QUARTER)
    job = f.submit("quarter", argv=argv)
    f.until(lambda: f.store.get(job.id).state == state)
    return f, job


def test_logs_follow_live_and_search_finds_a_line(local_fleet):
    f, job = a_job(local_fleet, TALKER)

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            app.open_job(job.id)
            await pilot.pause()
            screen = job_screen(app)
            log = screen.logview
            await until(pilot, lambda: log.count >= 3, "first lines")
            seen = log.count
            await until(pilot, lambda: log.count >= seen + 5, "new lines pushed by the agent")
            assert log.following and log.cursor == log.count - 1
            details = text_of(screen.details(screen.agent_record()))
            assert "where    gpu-b · gpu 0 · 5758 MiB share" in details
            assert "gpu-b/j1 running" in details
            assert "caps: " in details and "submit" in details  # agent caps, history
            assert "image" not in details  # a bare job: no image row
            boxed = dict(screen.agent_record(), image="localhost/train:1", runtime="podman")
            assert "image    localhost/train:1 · podman" in text_of(screen.details(boxed))
            await pilot.press("slash", *"needle", "enter")
            assert "needle" in log.line(log.cursor) and not log.following
            await pilot.press("g", "n")  # from the top: the first match, then the next
            assert log.line(log.cursor) == "tick 3 needle"
            await pilot.press("n")
            assert log.line(log.cursor) == "tick 10 needle"
            await pilot.press("N")
            assert log.line(log.cursor) == "tick 3 needle"
            await pilot.press("y")
            assert app.clipboard == "tick 3 needle"
            await pilot.press("escape")
            assert app.screen is fleet(app)

    drive()


async def open_job(app, pilot, job_id: int) -> None:
    """Opens job ``job_id``'s screen and waits until it has read the job."""
    app.open_job(job_id)
    await until(pilot, lambda: isinstance(app.screen, JobScreen)
                and app.screen.job is not None, "the job read")


def test_output_is_followed_again_once_the_jobs_host_is_back(local_fleet):
    """The host's agent goes away (its daemon killed: the job runs on) and the fleet connects
    again: the job screen asks for the output anew, as it keeps coming, instead of saying
    "following" over the lines it had when the connection dropped."""
    f, job = a_job(local_fleet, TALKER)

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            await open_job(app, pilot, job.id)
            log = job_screen(app).logview
            await until(pilot, lambda: log.count >= 3, "first lines")
            daemon = _read_pid(str(f.tmp / "state" / "gpu-b" / "daemon.pid"))
            os.kill(daemon, signal.SIGKILL)
            await until(pilot, lambda: fleet(app).statuses["gpu-b"].state != "online",
                        "the host lost")
            await until(pilot, lambda: fleet(app).statuses["gpu-b"].state == "online",
                        "the host back")
            back = log.line(log.count - 1) if log.count else None  # (asked anew: may be empty)
            await until(pilot, lambda: log.count > 0 and log.line(log.count - 1) != back
                        and log.following, "new output after the host came back")

    drive()


# fails after a line of output: what the admin comes to find
FAILER = [sys.executable, "-c", "import sys\nprint('CUDA error: out of memory', flush=True)\n"
          "sys.exit(3)"]


def test_a_failed_job_is_found_in_the_jobs_view_and_the_palette_with_its_output(local_fleet):
    """A job fails and leaves the map: ``J`` then ``a`` lists it (ended too, as ``jobs
    --all``) with how it ended (its last line too: the store's admin reads its output),
    ``enter`` opens it with its output, ``esc`` goes back to the
    view as it was; ``:`` "open job #N" opens it from the map as well."""
    f, job = a_job(local_fleet, FAILER, "failed")

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            await pilot.press("J")
            await until(pilot, lambda: isinstance(app.screen, JobsScreen), "the jobs view")
            view = app.screen
            assert [r.ref for r in view.rows] == []  # active jobs only, as it opens
            await pilot.press("a")  # the ended are read now, for the view that shows them
            await until(pilot, lambda: [(r.ref, r.state, r.reason) for r in view.rows] == [
                (str(job.id), "failed", "exited 3: CUDA error: out of memory")],
                "the failed job listed")
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, JobScreen)
                        and app.screen.job is not None, "the job screen")
            log = job_screen(app).logview
            await until(pilot, lambda: log.count >= 1, "its output")
            assert log.line(0) == "CUDA error: out of memory"
            assert job_screen(app).job.state == "failed"
            # covered, the view's ended jobs are not read: a read of the map's comes without
            # them, and the one asked for as it shows again is held until it has been drawn
            fleet(app).read_store()
            await until(pilot, lambda: fleet(app).model.store.ended is None, "a read without")
            source, gate = fleet(app).source, threading.Event()
            real = source.read_newest_ended
            source.read_newest_ended = lambda: (gate.wait(30), real())[1]
            try:
                await pilot.press("escape")
                await pilot.pause()
                # the failed job as last read, the cursor on it, not an empty list meanwhile
                assert app.screen is view and view.ended and len(view.rows) == 1
            finally:
                gate.set()
            await until(pilot, lambda: fleet(app).model.store.ended, "the ended read again")
            assert [r.ref for r in view.rows] == [str(job.id)]
            await pilot.press("escape")
            await pilot.pause()
            await palette(pilot, "open job #%d" % job.id)
            await until(pilot, lambda: isinstance(app.screen, JobScreen)
                        and app.screen.job is not None, "the job screen from the palette")
            assert job_screen(app).job_id == job.id

    drive()


def test_stop_requeue_preempt_each_ask_first_then_change_the_store(local_fleet):
    f = local_fleet(SHARES, QUARTER)
    jobs = [f.submit("quarter", argv=POLITE) for _ in range(3)]
    f.until(lambda: all(f.store.get(j.id).state == "running" for j in jobs))

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            for job, key, intent in zip(jobs, "srp", ("cancel", "requeue", "preempt")):
                await open_job(app, pilot, job.id)
                await pilot.press(key)
                await pilot.pause()
                assert isinstance(app.screen, ConfirmScreen)
                await pilot.press("n")  # not now
                await pilot.pause()
                assert f.store.get(job.id).state == "running"
                await pilot.press(key)
                await pilot.pause()
                await pilot.press("y")
                await until(pilot, lambda: f.store.get(job.id).state == "stopping",
                            "%s recorded" % intent)
                assert f.store.get(job.id).stop_intent == intent
                assert f.store.audit_log(job.id)[-1].actor.endswith("(tui)")
                await pilot.press("escape")
                await pilot.pause()

    drive()
    # carried out: the first ends cancelled, the others are back in the queue as attempt 1
    f.until(lambda: f.store.get(jobs[0].id).state == "cancelled"
            and [f.store.get(j.id).attempt for j in jobs] == [0, 1, 1])


def test_a_pending_jobs_stop_is_asked_and_said_as_a_cancel_at_once(local_fleet):
    """``s`` on a job still waiting (in ``fractui demo``) asked "SIGTERM, then SIGKILL after
    its grace", of a job with no process, and said "the scheduler carries it out" of a job
    the store had already ended cancelled, as the screen under the notice showed: each is
    said of a job that has not started, as ``fractui cancel`` answers it."""
    f = local_fleet(SHARES, QUARTER)
    job = f.submit("quarter", argv=POLITE)  # (no pass is run: it waits)

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            await open_job(app, pilot, job.id)
            mark = len(app.notices.kept)
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
            assert app.screen.question == (
                "Stop job #%d %s (pending)?\n\nIt has not started: it ends cancelled at once, "
                "no process to signal." % (job.id, job.name)), app.screen.question
            await pilot.press("y")
            await until(pilot, lambda: notices(app, mark), "the answer")
            assert said(app, mark) == [
                "#%d cancelled: it had not started" % job.id]

    drive()
    assert f.store.get(job.id).state == "cancelled"


def test_a_stop_recorded_while_no_scheduler_runs_says_none_carries_it_out(local_fleet):
    """In ``fractui demo`` with its scheduler gone (the header: "scheduler: none (decisions
    wait)"), a cancel was said "recorded: the scheduler carries it out": none would. It is
    said as ``fractui cancel`` says it; the stop is recorded all the same."""
    f, job = a_job(local_fleet, POLITE)
    f.store.release_lease("test")  # (the test's scheduler: no pass holds it again)

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            await until(pilot, lambda: fleet(app).model.store.holder is None, "read unled")
            await open_job(app, pilot, job.id)
            mark = len(app.notices.kept)
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
            await pilot.press("y")
            await until(pilot, lambda: notices(app, mark), "the answer")
            assert [(n.severity, n.message) for n in notices(app, mark)] == [
                ("warning", "cancel of #%d recorded; %s" % (job.id, NO_SCHEDULER))]

    drive()
    assert f.store.get(job.id).state == "stopping"


def test_a_cancel_is_said_as_the_store_did_it_not_as_the_screen_read_the_job(local_fleet):
    """The job went back to its queue while its cancel was asked of it running (preempted,
    its end recorded): the store ended it cancelled at once, and the screen said "cancel
    recorded: the scheduler carries it out", as it read the job. And the reverse: one asked
    of it pending, placed and started meanwhile, is said stopping, not ended at once. The
    words follow the store's answer."""
    f = local_fleet(SHARES, QUARTER)
    running, other = (f.submit("quarter", argv=POLITE) for _ in range(2))
    f.until(lambda: {f.store.get(j.id).state for j in (running, other)} == {"running"})
    waiting = f.submit("quarter", argv=POLITE)  # (no pass is run until it is asked)

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            await open_job(app, pilot, running.id)
            mark = len(app.notices.kept)
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
            assert "(running)?" in app.screen.question, app.screen.question
            f.store.requeue(running.id, ("running",), "sched", "preempted",
                            stale_on=f.config.hosts[0].name)
            await pilot.press("y")
            await until(pilot, lambda: notices(app, mark), "the answer")
            assert said(app, mark) == ["#%d cancelled: it had not started" % running.id]
            assert f.store.get(running.id).state == "cancelled"
            await pilot.press("escape")
            await open_job(app, pilot, waiting.id)
            mark = len(app.notices.kept)
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
            assert "(pending)?" in app.screen.question, app.screen.question
            f.until(lambda: f.store.get(waiting.id).state == "running")
            await pilot.press("y")
            await until(pilot, lambda: notices(app, mark), "the answer")
            assert said(app, mark) == [
                "cancel of #%d recorded: the scheduler carries it out" % waiting.id]
            assert f.store.get(waiting.id).state == "stopping"
            await pilot.press("escape")
            await open_job(app, pilot, other.id)  # cancelled by another, and carried out
            mark = len(app.notices.kept)
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
            ask_stop(f.store, f.store.get(other.id), "cancel", Asker("elsewhere"))
            f.until(lambda: f.store.get(other.id).state == "cancelled")
            await pilot.press("y")
            await until(pilot, lambda: notices(app, mark), "the answer")
            why = f.store.get(other.id).reason
            assert why.startswith("cancelled by ") and why.endswith("@elsewhere"), why
            assert said(app, mark) == ["#%d was cancelled meanwhile (%s): nothing left to stop"
                                       % (other.id, why)], said(app, mark)

    drive()


def test_a_cancel_of_a_waiting_job_another_cancelled_meanwhile_says_theirs(local_fleet):
    """A job read pending is cancelled by another admin while this one's cancel stands asked:
    the store answers it cancelled, and the screen said "#N cancelled: it had not started",
    this admin's cancel done at once, when the cancel was the other's (its reason names
    them). A job that had not started is said cancelled meanwhile too, with whose cancel."""
    f = local_fleet(SHARES, QUARTER)
    waiting = f.submit("quarter", argv=POLITE)  # (no pass is run: it stays pending)

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            await open_job(app, pilot, waiting.id)
            mark = len(app.notices.kept)
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
            assert "(pending)?" in app.screen.question, app.screen.question
            ask_stop(f.store, f.store.get(waiting.id), "cancel", Asker("elsewhere"))
            await pilot.press("y")
            await until(pilot, lambda: notices(app, mark), "the answer")
            why = f.store.get(waiting.id).reason
            assert why.startswith("cancelled by ") and why.endswith("@elsewhere"), why
            assert said(app, mark) == ["#%d was cancelled meanwhile (%s): nothing left to stop"
                                       % (waiting.id, why)], said(app, mark)

    drive()


def test_a_requeue_confirmed_of_an_attempt_is_not_made_of_the_next_one(local_fleet):
    """The admin confirms a requeue of the attempt the job screen shows; meanwhile the job is
    preempted and the scheduler relaunches it: the confirmed requeue is refused, saying so,
    and the attempt the admin never saw runs on."""
    f, job = a_job(local_fleet, POLITE)

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            await open_job(app, pilot, job.id)
            await pilot.press("r")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            ask_stop(f.store, f.store.get(job.id), "preempt", Asker("elsewhere"))
            f.until(lambda: f.store.get(job.id).attempt == 1
                    and f.store.get(job.id).state == "running")
            await pilot.press("y")
            await until(pilot, lambda: any("nothing done" in n.message
                                           for n in notices(app)), "the refusal said")
        assert f.store.get(job.id).state == "running" and f.store.get(job.id).attempt == 1

    drive()


def _ids(node) -> set:
    return {b.id for _key, b in node._bindings}


@pilot_test
async def test_readonly_binds_no_dangerous_action_and_help_lacks_them():
    async with settled_app((160, 48), readonly=True) as (app, pilot):
        panel = fleet(app).query_one(QueuePanel)
        assert "queue.place" not in _ids(panel) and "queue.job" in _ids(panel)
        await pilot.press("tab", "p")
        await pilot.pause()
        assert fleet(app).placement is None
        await pilot.press("question_mark")
        help_ids = {row[2] for row in app.screen.keys}
        assert isinstance(app.screen, HelpScreen) and "queue.job" in help_ids
        assert "queue.place" not in help_ids
        await pilot.press("escape")
        hints = dict(fleet(app).query_one("Header").info.hints)
        assert "place" not in hints.values() and "job" in hints.values()
        await pilot.press("enter")
        await pilot.pause()
        screen = job_screen(app)
        assert not {"job.stop", "job.requeue", "job.preempt"} & _ids(screen)
        await pilot.press("s", "r", "p")
        await pilot.pause()
        assert app.screen is screen  # no confirmation asked: nothing is bound
        await pilot.press("question_mark")
        help_ids = {row[2] for row in app.screen.keys}
        assert "job.search" in help_ids and not {"job.stop", "job.requeue"} & help_ids


@pilot_test
async def test_not_readonly_binds_them():
    async with settled_app((160, 48)) as (app, pilot):
        assert "queue.place" in _ids(fleet(app).query_one(QueuePanel))
        await pilot.press("tab", "enter")
        await pilot.pause()
        assert {"job.stop", "job.requeue", "job.preempt"} <= _ids(job_screen(app))


@pilot_test
async def test_keys_pressed_before_the_job_is_read_say_it_is_loading_and_act_once_it_is():
    """``s``, ``r``, ``p``, ``m`` pressed as the job's screen opens, its record not read yet
    (held here until the keys are in), did nothing and said nothing: each says the job is
    still loading and that nothing was done; once it is shown, ``s`` asks as ever."""
    app = frozen_app()
    read, keys_in = app.source.read_job, threading.Event()

    def held(job_id: int):
        keys_in.wait(30)
        return read(job_id)

    app.source.read_job = held
    running = next(j for j in app.source.read_store().jobs if j.state == "running")
    async with app.run_test(size=(160, 48)) as pilot:
        await settled(pilot)
        app.open_job(running.id)
        await pilot.pause()
        screen = job_screen(app)
        await pilot.press("s", "r", "p", "m")
        loading = "job %d is still loading…: nothing done; its keys act once it is shown" % (
            running.id)
        assert said(app) == [loading] * 4
        assert app.screen is screen
        keys_in.set()
        await until(pilot, lambda: screen.job is not None, "the job read")
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)


def test_a_line_past_what_an_agent_pushes_is_cut_in_the_view_as_it_grows(local_fleet, tmp_path):
    """A job writes more than the agent pushes at once (PUSH_MAX_BYTES) with no newline:
    the view keeps that much of its unfinished line, cut with the mark saying how much more
    came, and so the line once ended. Before: the unfinished line grew without end (and
    each chunk took as long as all of it before), the line kept whole."""
    go = tmp_path / "go"
    long = answers.LINE_MOST + 10
    f, job = a_job(local_fleet, [sys.executable, "-c", (
        "import os, sys, time\nprint('ready', flush=True)\nwhile not os.path.exists(%r):\n"
        "    time.sleep(0.05)\nsys.stdout.write('y' * %d)\nsys.stdout.flush()\n"
        "while not os.path.exists(%r + '2'):\n    time.sleep(0.05)\nprint('\\nend', flush=True)"
        "\ntime.sleep(600)") % (str(go), long, str(go))])
    cut = answers.cut("y" * long, answers.LINE_MOST)

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            await open_job(app, pilot, job.id)
            log = job_screen(app).logview
            await until(pilot, lambda: log.count >= 1, "the first line")
            go.touch()
            await until(pilot, lambda: log.count == 2 and log.line(1) == cut, "the tail, cut")
            assert (len(log.tail), log.tail_more) == (answers.LINE_MOST, 10)
            (tmp_path / "go2").touch()
            await until(pilot, lambda: log.count == 3, "the line ended")
            assert log.lines[1:] == [cut, "end"]

    drive()


@pilot_test
async def test_a_job_its_agent_runs_is_running_on_every_view_though_the_store_has_it_placed():
    """#16 (2 GiB of a10-1 gpu 1) as the store has it before the lease holder's pass records
    its launch: placed, while its agent runs it. The map drew it twice (its share, and the
    same share hatched as being placed beside it) while the jobs view said placed and the job
    screen placed; every view draws it running now, as the GPU view counted it (one share,
    not two, taken from its free memory)."""
    async with settled_app((160, 48), store_states={16: "placed"}) as (app, pilot):
        (gpu,) = [g for g in fleet(app).model.hosts["a10-1"].gpus if g.index == 1]
        assert [(b.kind, b.job) for b in gpu.blocks if b.job and b.job.startswith("#16")] == [
            ("job", "#16 a10-1/j4")]
        assert "placing" not in [b.kind for b in gpu.blocks]
        await pilot.press("J")
        await until(pilot, lambda: isinstance(app.screen, JobsScreen)
                    and app.screen.table.row is not None, "the jobs view")
        assert {r.ref: r.state for r in app.screen.rows}["16"] == "running"
        await pilot.press("escape")
        app.open_gpu("a10-1", 1)
        await settled(pilot)
        status = fleet(app).statuses["a10-1"]
        gpu = next(g for g in status.snapshot["gpus"] if g["index"] == 1)
        room = gpu["memory_mib"] - sum(r["memory_mib"] for r in status.jobs.values()
                                       if 1 in r["gpus"] and r["state"] == "running")
        assert any(line.split()[:2] == ["free", "%.1fG" % (room / 1024)]
                   for line in screen_lines(app)), screen_lines(app)
        await pilot.press("escape")
        await open_job(app, pilot, 16)
        assert "running · attempt 0" in text_of(job_screen(app).details(
            job_screen(app).agent_record()))


@pilot_test
async def test_a_placement_refused_of_a_job_drawn_running_says_it_is_running():
    """#16 placed in the store, its agent running it: drawn running on the jobs view and its
    screen (seen_state). ``p`` on its row and ``P`` on its screen are refused, as the store's
    state decides; each refusal said "job 16 is placed", beside a row and a screen that say
    running. It says what is drawn."""
    async with settled_app((160, 48), store_states={16: "placed"}) as (app, pilot):
        await pilot.press("J")
        await until(pilot, lambda: isinstance(app.screen, JobsScreen)
                    and app.screen.table.row is not None, "the jobs view")
        view = app.screen
        await pilot.press("g")
        while view.table.row.job_id != 16:
            await pilot.press("j")
        assert view.table.row.state == "running"
        await pilot.press("p")
        await pilot.pause()
        refused = "job 16 is running: only a pending job is placed by hand"
        assert said(app) == [refused]
        assert app.screen is view
        await pilot.press("escape")
        await open_job(app, pilot, 16)
        await pilot.press("P")
        await pilot.pause()
        assert said(app)[1:] == [refused]
        assert "running · attempt 0" in text_of(job_screen(app).details(
            job_screen(app).agent_record()))


@pilot_test
async def test_a_running_job_whose_start_is_not_known_says_so_on_its_row_and_screen():
    """#16 runs with no start time in the store (a start its agent holds unread, a launch
    answered ``starting``), back in its queue once before. Its row's age counted from that
    requeue, and its screen said "back in its queue 8m20s ago" of a job running: neither a
    run nor a wait is made up now; its screen says its start is not known."""
    async with settled_app((160, 48), no_start={16: NOW - 500}) as (app, pilot):
        await pilot.press("J")
        await until(pilot, lambda: isinstance(app.screen, JobsScreen)
                    and app.screen.table.row is not None, "the jobs view")
        rows = {r.ref: r for r in app.screen.rows}
        assert rows["16"].state == "running" and rows["16"].age_s is None
        assert rows["15"].age_s == 300.0  # (started 5m ago, as the sample's others)
        await pilot.press("escape")
        await open_job(app, pilot, 16)
        text = text_of(job_screen(app).details(job_screen(app).agent_record()))
        assert "submitted 10m00s ago by " in text and " · start not known" in text, text
        assert "back in its queue" not in text and "started" not in text, text
