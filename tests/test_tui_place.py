"""Placement mode end to end on a simulated fleet: a job placed by keyboard and by dragging it
onto a GPU runs on exactly the previewed slice; a GPU that changed between preview and
confirm shows the new plan instead of recording; who carries decisions out is on the header."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import AsyncIterator

import pytest

from fractui.config import Config, QueueConfig, TeamConfig, TuiSettings
from fractui.sched.preview import Candidate
from fractui.sched.quota import HeldTo
from fractui.scheduler.child import ChildScheduler
from fractui.store.model import Job, KeptTerms, Slot, TeamTerms
from fractui.tui.cursor import block_job_id
from fractui.tui.gpu_screen import GpuScreen
from fractui.tui.jobs import JobScreen
from fractui.tui.jobs_view import JobsScreen
from fractui.tui.model import GHOST, PLACING
from fractui.tui.placement import Placement, PreviewBar
from fractui.tui.queues import QueuePanel
from fractui.tui.slicemap import SliceMap
from fractui.words import NO_SCHEDULER
from tests import localfleet
from tests.test_tui_cursor_pilot import shown_words
from tests.test_tui_pilot import palette
from tests.tui_frozen import notices, pilot_test, said, settled, settled_app
from tests.tui_live import fleet, gpu_line, live_app, until

local_fleet = localfleet.local_fleet
MIG = {"gpu-a": "1xA100-80GB:mig"}
QUEUES = [QueueConfig(name="3g", mig="3g.40gb")]


def ghost_of(app) -> tuple:
    """(host, gpu, start as a fraction) of every ghost block drawn on the map."""
    return tuple((line.host, line.index, b.start) for line in fleet(app).map.lines
                 if hasattr(line, "blocks") for b in line.blocks if b.kind == GHOST)


def agent_record(f, job) -> dict:
    return next(r for r in f.agent_jobs() if r["key"] == f.store.get(job.id).key(f.store.uid))


async def slots_found(app, pilot) -> None:
    await until(pilot, lambda: fleet(app).placement is not None and not fleet(
        app).placement.busy and fleet(app).placement.candidates, "candidates found")


async def moving(app, pilot, there: str):
    """From the jobs view into a move of its job (``m``), its slots found and the map's cursor
    on the ghost, on ``there``'s first GPU: the fleet screen."""
    await pilot.press("J")
    await until(pilot, lambda: app.screen.table.row is not None, "the job's row")
    await pilot.press("m")
    await slots_found(app, pilot)
    screen = fleet(app)
    assert (screen.map.cursor.host, screen.map.cursor.gpu) == (there, 0)  # the ghost's
    return screen


@contextlib.asynccontextmanager
async def placing(f) -> AsyncIterator[tuple]:
    """The live app on ``f``, moved to the queue panel and into placement mode on its job,
    its slots found: (app, pilot)."""
    async with live_app(f) as (app, pilot):
        await until(pilot, lambda: fleet(app).query_one(QueuePanel).job, "job listed")
        await pilot.press("tab", "p")
        await slots_found(app, pilot)
        yield app, pilot


async def drag_start(app, pilot, job) -> int:
    """Press on the job's line in the queue panel, until its slots are found; its line."""
    panel = fleet(app).query_one(QueuePanel)
    await until(pilot, lambda: panel._rows, "the job's line drawn")
    row = next(y for y, j in panel._rows.items() if j.id == job.id)
    await pilot.mouse_down(QueuePanel, offset=(4, row))
    await slots_found(app, pilot)
    return row


def test_a_placement_recorded_while_no_scheduler_runs_says_none_launches_it(local_fleet):
    """In ``fractui demo`` with its scheduler gone (the header: "scheduler: none (decisions
    wait)"), a job placed by hand was said "placed by hand: whole gpu0 of l4-1", as if it
    would start: no scheduler is running to launch it, and the notice says so, as ``fractui
    move`` does."""
    f = local_fleet(MIG, QUEUES)
    job = f.submit("3g")  # (no pass is run: none holds the store's lease)

    @pilot_test
    async def drive():
        async with placing(f) as (app, pilot):
            assert fleet(app).model.store.holder is None
            mark = len(app.notices.kept)
            await pilot.press("enter")
            await until(pilot, lambda: notices(app, mark), "the answer")
            said = [(n.severity, n.message) for n in notices(app, mark)]
            assert len(said) == 1 and said[0][0] == "warning", said
            assert said[0][1].startswith("#%d placed by hand: " % job.id), said
            assert said[0][1].endswith("; " + NO_SCHEDULER), said

    drive()
    assert f.store.get(job.id).state == "placed"


def test_place_by_keyboard_runs_on_the_previewed_slice(local_fleet):
    f = local_fleet(MIG, QUEUES)
    job = f.submit("3g")

    @pilot_test
    async def drive():
        async with placing(f) as (app, pilot):
            p = fleet(app).placement
            assert [(c.start, c.chosen) for c in p.candidates] == [(0, False), (4, True)]
            assert p.current.start == 4  # the ghost starts on the scheduler's choice
            assert ghost_of(app) == (("gpu-a", 0, 0.5),)
            await pilot.press("right")  # wraps to the other slot
            assert p.current.start == 0 and ghost_of(app) == (("gpu-a", 0, 0.0),)
            assert "create 3g.40gb at slot 0 on gpu0 of gpu-a" in p.current.plan
            await pilot.press("a")
            assert p.current.start == 4
            await pilot.press("left", "enter")
            await until(pilot, lambda: f.store.get(job.id).state == "placed", "placed")
            assert fleet(app).placement is None and ghost_of(app) == ()

    drive()
    placed = f.store.get(job.id)
    assert (placed.slot.profile, placed.slot.start, placed.manual) == ("3g.40gb", 0, True)
    assert placed.slot.layout_version is not None
    history = f.store.audit_log(job.id)
    assert [e.action for e in history] == ["submit", "place"]
    assert history[-1].actor.endswith("(tui)")
    f.until(lambda: f.store.get(job.id).state == "running")
    record = agent_record(f, job)
    assert (record["mig"]["profile"], record["mig"]["start"]) == ("3g.40gb", 0)


def test_place_by_dragging_the_job_onto_a_gpu(local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB:mig", "gpu-b": "2xA100-80GB:mig"}, QUEUES)
    job = f.submit("3g")

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            assert not app.mouse_captured
            await drag_start(app, pilot, job)
            assert app.mouse_captured is fleet(app).query_one(QueuePanel)  # only during it
            y, line = gpu_line(app, "gpu-b", 1)
            smap = fleet(app).map
            x = smap.line_width - 40  # towards the right end of the bar: the slot at 4
            await pilot.hover(SliceMap, offset=(x, y))
            await pilot.pause()
            assert ghost_of(app) == (("gpu-b", 1, 0.5),)
            await pilot.hover(SliceMap, offset=(18, y))  # the left end: the slot at 0
            await pilot.pause()
            assert ghost_of(app) == (("gpu-b", 1, 0.0),)
            await pilot.mouse_up(SliceMap, offset=(18, y))
            await pilot.pause()
            assert not app.mouse_captured
            p = fleet(app).placement
            assert (p.current.host, p.current.gpus, p.current.start) == ("gpu-b", (1,), 0)
            assert f.store.get(job.id).state == "pending"  # dropped: the confirm step
            await pilot.press("enter")
            await until(pilot, lambda: f.store.get(job.id).state == "placed", "placed")

    drive()
    f.until(lambda: f.store.get(job.id).state == "running")
    record = agent_record(f, job)
    assert record["host"] == "gpu-b" and record["gpus"] == [1]
    assert (record["mig"]["profile"], record["mig"]["start"]) == ("3g.40gb", 0)


def test_dropping_a_job_where_it_cannot_go_places_nothing_and_says_why(local_fleet):
    """Dropped off the map, on a GPU no slot of which can take it (a 3g.40gb slice on an L4),
    or on a cordoned one: nothing placed, and the notice says why, not only "cannot go"."""
    f = local_fleet({"gpu-a": "1xA100-80GB:mig", "gpu-b": "1xL4"}, QUEUES)
    job = f.submit("3g")

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            row = await drag_start(app, pilot, job)
            await pilot.mouse_up(QueuePanel, offset=(4, row))  # back where it started
            await pilot.pause()
            assert fleet(app).placement is None and not app.mouse_captured
            await drag_start(app, pilot, job)
            y, _line = gpu_line(app, "gpu-b", 0)
            await pilot.hover(SliceMap, offset=(18, y))
            await pilot.mouse_up(SliceMap, offset=(18, y))
            await pilot.pause()
            assert fleet(app).placement is None and not app.mouse_captured
            assert said(app) == [
                "#%d: nothing placed: dropped off the map's GPUs" % job.id,
                "#%d: nothing placed: no slot on gpu 0 of gpu-b can take it now; 2 slots "
                "elsewhere can" % job.id]
            f.store.cordon("gpu-a", 0, "cordon", "ops", "fan noise")
            await until(pilot, lambda: fleet(app).model.store.cordons, "the cordon read")
            await pilot.mouse_down(QueuePanel, offset=(4, row))
            await until(pilot, lambda: fleet(app).placement is not None
                        and not fleet(app).placement.busy, "no slot found")
            y, _line = gpu_line(app, "gpu-a", 0)
            await pilot.hover(SliceMap, offset=(18, y))
            await pilot.mouse_up(SliceMap, offset=(18, y))
            await pilot.pause()
            assert fleet(app).placement is None
            assert said(app)[-1] == (
                "#%d: nothing placed: gpu-a gpu0 is cordoned (by ops): it takes no new work "
                "until an admin uncordons it (fractui uncordon gpu-a 0)" % job.id)

    drive()
    assert f.store.get(job.id).state == "pending"


def test_a_gpu_changed_before_confirm_shows_the_new_plan_and_records_nothing(local_fleet):
    f = local_fleet(MIG, QUEUES)
    job = f.submit("3g")
    agent = f.fleet.session("gpu-a")

    @pilot_test
    async def drive():
        async with placing(f) as (app, pilot):
            p = fleet(app).placement
            shown = p.current
            assert shown.start == 4
            # someone else changes the GPU right before the admin confirms
            agent.call("mig.apply", {"gpu": 0, "profile": "1g.10gb", "start": 0})
            await pilot.press("enter")
            await until(pilot, lambda: fleet(app).placement.note, "the admin is told")
            p = fleet(app).placement
            assert "changed since the preview" in p.note
            assert p.current.start == 4 and p.current.layout_version != shown.layout_version
            other = next(c for c in p.candidates if c.start == 0)
            assert other.plan.startswith("destroy idle 1g.10gb at slot 0")
            assert f.store.get(job.id).state == "pending"
            assert [e.action for e in f.store.audit_log(job.id)] == ["submit"]
            await pilot.press("enter")  # the new plan, confirmed
            await until(pilot, lambda: f.store.get(job.id).state == "placed", "placed")
            assert f.store.get(job.id).slot.layout_version == p.current.layout_version

    drive()
    f.until(lambda: f.store.get(job.id).state == "running")
    assert agent_record(f, job)["mig"]["start"] == 4


def test_a_job_run_and_requeued_while_previewed_is_not_placed_unseen(local_fleet):
    """The admin previews the pending job (attempt 0); before they confirm, the scheduler
    places, launches and preempts it (attempt 1, pending again). Confirming placed attempt 1,
    which the admin never saw; it is refused, saying what changed, and nothing is recorded."""
    f = local_fleet(MIG, QUEUES)
    job = f.submit("3g")

    @pilot_test
    async def drive():
        async with placing(f) as (app, pilot):
            f.store.place(job.id, Slot("gpu-a", (0,), "3g.40gb", 4), "sched", "fits")
            f.store.started(job.id, "j1", None, "sched", "launched")
            f.store.stopping(job.id, ("running",), "preempt", "sched", "preempted")
            f.store.requeue(job.id, ("stopping",), "sched", "preempted")
            await pilot.press("enter")
            said = "job %d moved on since it was read: it is attempt 1 now (pending), sent on " \
                "from attempt 0 by sched's preempt; nothing done" % job.id
            await until(pilot, lambda: any(said in n.message for n in notices(app)),
                        "the admin is told")
            now = f.store.get(job.id)
            assert (now.state, now.attempt) == ("pending", 1)
            assert "place" not in [e.action for e in f.store.audit_log(job.id)]

    drive()


def test_header_says_who_carries_out_decisions(local_fleet):
    f = local_fleet(MIG, QUEUES)

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            header = fleet(app).query_one("Header")
            await until(pilot, lambda: header.info, "header drawn")
            assert header.info.scheduler == "scheduler: none (decisions wait)"
            f.store.acquire_lease("ops@head:1234", 60)
            await until(pilot, lambda: header.info.scheduler == "scheduler: ops@head:1234",
                        "the other holder named")
            child = ChildScheduler(f.write_config(), "me@here:1 (tui)",
                                   str(f.tmp / "child.log"))
            app.source.scheduler = child.start()
            try:
                await until(pilot, lambda: header.info.scheduler == (
                    "scheduler: ops@head:1234 leads; child process %d stands by" % child.pid),
                            "its child a standby, the holder named")
                f.store.release_lease("ops@head:1234")
                await until(pilot, lambda: header.info.scheduler == (
                    "scheduler: child process %d, holds the lease" % child.pid),
                            "its child named as the holder")
            finally:
                child.stop()
            await until(pilot, lambda: header.info.scheduler.startswith(
                "scheduler: none (decisions wait); child process ended (exit 0; see "),
                        "its child's end said")

    drive()


@pytest.mark.parametrize("quota,past", [(0.25, True), (1.0, False)])
def test_a_placement_past_the_teams_quota_is_shown_asked_and_borrowed(local_fleet, quota, past):
    # 3g of an A100 charges 3/7 of a GPU: past a quota of a quarter, within one of a GPU
    f = local_fleet(MIG, QUEUES, [TeamConfig("t", quota_gpus=quota)])
    # its note names the keys as remapped (it named esc, remapped a key that did nothing)
    f.config = dataclasses.replace(f.config, tui=TuiSettings(keys=(
        ("placement.cancel", "backspace"),)))
    job = f.submit("3g", "t")
    said = ("takes team t past its quota: 0.00 of 0.25 GPUs held within it, and this adds 0.43 "
            "(the quota this config (in code) gives it, no scheduler having kept the teams' "
            "quotas in the store)")  # (no pass has run: the config's)

    @pilot_test
    async def drive():
        async with placing(f) as (app, pilot):
            bar = fleet(app).query_one(PreviewBar)
            assert (said in bar.render().plain) == past  # in the preview, before a confirm
            # the header says what enter does here: asks first past the quota
            assert hints(app)["⏎"] == ("place past quota…" if past else "place here")
            await pilot.press("enter")
            if past:
                p = fleet(app).placement
                assert p.busy is None  # nothing checked or recorded: asked first
                assert p.note == ("Past the quota: ⏎ again places it as a borrowed job "
                                  "(preemptible by a team within its quota); ⌫ "
                                  "cancels.")
                assert p.note in bar.render().plain
                await pilot.pause()  # on screen, the plan under it uncut (the bar grew)
                assert p.note in shown_words(bar) and p.current.plan in shown_words(bar)
                assert f.store.get(job.id).state == "pending"
                assert hints(app)["⏎"] == "place borrowed"
                await pilot.press("enter")  # agreed
            await until(pilot, lambda: f.store.get(job.id).state == "placed", "placed")

    drive()
    placed = f.store.get(job.id)
    assert (placed.manual, placed.preemptible, placed.slot.charge) == (True, past,
                                                                        round(3 / 7, 6))
    [entry] = [e for e in f.store.audit_log(job.id) if e.action == "place"]
    assert entry.why.endswith("; it %s, so it is borrowed (preemptible)" % said) == past


@pytest.mark.parametrize("kept,mine,past", [(0.25, 1.0, True), (1.0, 0.25, False)])
def test_the_tuis_placement_is_held_to_the_schedulers_quota_not_its_own_configs(
        local_fleet, store_url, kept, mine, past):
    """The scheduler holds team t to ``kept`` (its config, kept in the store by a pass); the
    TUI's admin's config says ``mine``: the preview asks about the quota the scheduler holds
    the team to, and the placement is borrowed only past that one, as ``fractui place``."""
    f = local_fleet(MIG, QUEUES, [TeamConfig("t", quota_gpus=kept)], store_url=store_url)
    f.scheduler.step()  # the lease holder keeps its terms
    assert f.store.team_terms()["t"].quota_gpus == kept
    f.config = dataclasses.replace(f.config, teams=(TeamConfig("t", quota_gpus=mine),))
    job = f.submit("3g", "t")
    said = ("takes team t past its quota: 0.00 of 0.25 GPUs held within it, and this adds 0.43 "
            "(the quota the scheduler holds it to)")

    @pilot_test
    async def drive():
        async with placing(f) as (app, pilot):
            assert (said in fleet(app).query_one(PreviewBar).render().plain) == past
            assert hints(app)["⏎"] == ("place past quota…" if past else "place here")
            await pilot.press(*(["enter", "enter"] if past else ["enter"]))
            await until(pilot, lambda: f.store.get(job.id).state == "placed", "placed")

    drive()
    assert f.store.get(job.id).preemptible == past


@pytest.mark.parametrize("meanwhile", ["changed", "used"])
def test_a_quota_changed_or_used_between_preview_and_enter_is_said_so_and_nothing_placed(
        local_fleet, meanwhile):
    """Previewed within the quota the scheduler holds team t to; before ``enter`` the lease
    holder's terms lower it (a scheduler restarted on another config), or another placement
    of the team takes it: nothing is placed, and the note says which happened, not that the
    quota was used where it was cut."""
    kept = 1.0 if meanwhile == "changed" else 0.5
    f = local_fleet(MIG, QUEUES, [TeamConfig("t", quota_gpus=kept)])
    f.scheduler.step()  # the lease holder keeps its terms
    job = f.submit("3g", "t")
    note = {"changed": "The team's quota changed meanwhile; nothing was placed.",
            "used": "The team's quota was used meanwhile; nothing was placed."}[meanwhile]

    @pilot_test
    async def drive():
        async with placing(f) as (app, pilot):
            assert fleet(app).placement.past_quota() is None  # within, as previewed
            if meanwhile == "changed":
                f.store.keep_team_terms({"t": TeamTerms(0.25, False, 1.0)})
            else:
                other = f.submit("3g", "t")
                f.store.place(other.id, Slot("gpu-z", (0,), charge=0.25), "sched", "decided")
            await pilot.press("enter")
            await until(pilot, lambda: fleet(app).placement is not None
                        and fleet(app).placement.note is not None, "a note")
            p = fleet(app).placement
            assert p.note == note and p.past_quota() is not None, (p.note, p.past_quota())
            assert f.store.get(job.id).state == "pending"

    drive()


def test_a_gpu_held_back_from_mode_changes_is_offered_no_change_in_the_preview(local_fleet):
    """The GPU whose MIG mode change failed is held back by the lease holder, which keeps the
    hold in the store: the preview offers no slot that would change its mode (the holder would
    not make it), and offers them again once the hold has ended."""
    from fractui.store.model import ModeHold
    from tests.test_scheduler_mig_mode import held_back

    f = local_fleet({"gpu-a": "1xA100-80GB"}, [QueueConfig(name="3g", mig="3g.40gb",
                                                           isolation="mig")])
    _, uuid = held_back(f, "3g")

    async def looked(app, pilot) -> list:
        panel = fleet(app).query_one(QueuePanel)
        await until(pilot, lambda: panel.job, "job listed")
        panel.focus()
        await pilot.press("p")
        await until(pilot, lambda: fleet(app).placement is not None and not fleet(
            app).placement.busy, "slots looked for")
        return fleet(app).placement.candidates

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            assert await looked(app, pilot) == []
            await pilot.press("escape")
            await until(pilot, lambda: fleet(app).placement is None, "placement ended")
            f.store.keep_mode_holds({uuid: ModeHold(1, time.time() - 1)})  # the hold ended
            found = await looked(app, pilot)
            assert found and all("turn MIG on" in c.plan for c in found), [
                c.plan for c in found]

    drive()


def bound_ids(app) -> set:
    return {b.binding.id for b in app.screen.active_bindings.values()}


def hints(app) -> dict[str, str]:
    """The header's key hints as drawn now: what each key does."""
    return dict(fleet(app).query_one("Header").info.hints)


def bar_text(app) -> str:
    return str(fleet(app).query_one(PreviewBar).render())


def whole_job_running(local_fleet):
    """Two one-GPU hosts and a whole-GPU job running on one: the fleet, the job, its slot and
    the other host, where a move can take it."""
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [QueueConfig(name="whole", gpus=1)])
    job = f.submit("whole")
    f.until(lambda: f.store.get(job.id).state == "running")
    here = f.store.get(job.id).slot
    return f, job, here, "gpu-b" if here.host == "gpu-a" else "gpu-a"


def test_move_a_running_job_from_the_jobs_view_stops_it_then_runs_it_where_chosen(
        local_fleet):
    """``m`` on a running job's row: the same placement mode as ``p``'s, its bar saying it is
    a move (stopped on its slot, then placed here, the slot held meanwhile); ``enter`` records
    the move, and the scheduler carries it out."""
    f, job, here, there = whole_job_running(local_fleet)

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            await pilot.press("J")
            await until(pilot, lambda: app.screen.table.row is not None, "the job's row")
            assert "jobs.move" in bound_ids(app)  # listed with the view's keys (?, hints)
            await pilot.press("m")
            await slots_found(app, pilot)
            p = fleet(app).placement
            assert p.moving and [(c.host, c.gpus) for c in p.candidates] == [(there, (0,))]
            text = bar_text(app)
            assert text.startswith("move #%d whole" % job.id), text
            # what the keys do is a move's, not a placement's (one slot: no key moves on)
            shown = hints(app)
            assert (shown["⏎"], shown["esc"]) == ("move here", "don't move"), shown
            assert not {"→", "←", "↑", "↓"} & set(shown), shown
            assert "moving #%d" % job.id in fleet(app).query_one("Header").info.view
            assert ("stops it on %s (its grace), then places it here, the slot held for it "
                    "meanwhile (by no one else, scheduler or admin): " % here.describe()
                    ) in " ".join(text.split()), text
            await pilot.press("enter")
            await until(pilot, lambda: f.store.get(job.id).state == "stopping", "moving")
            assert fleet(app).placement is None
            # the focus on the map, its cursor where the job goes (not on the queue panel,
            # whose keys act on pending jobs)
            assert isinstance(app.focused, SliceMap) and fleet(app).map.cursor.host == there
            # the room held for it is drawn as decided, not free, while it stops
            await until(pilot, lambda: [(b.kind, b.label) for b in gpu_line(
                app, there, 0)[1].blocks] == [(PLACING, "whole")], "the room drawn held")
            assert gpu_line(app, there, 0)[1].blocks[0].job == "#%d" % job.id

    drive()
    moving = f.store.get(job.id)
    assert (moving.stop_intent, moving.move_to.host) == ("move", there)
    entry = f.store.audit_log(job.id)[-1]
    assert entry.action == "move" and entry.actor.endswith("(tui)")
    f.until(lambda: f.store.get(job.id).state == "running" and f.store.get(job.id).attempt == 1)
    assert agent_record(f, job)["host"] == there


def test_esc_out_of_a_move_goes_back_to_the_jobs_view_on_the_job(local_fleet):
    """``esc`` leaves a move started in the jobs view back there, its cursor on the job
    moved, as k9s returns to the row left (it went to the map, where the admin had not
    been); the map behind it has its cursor where it was as the move began (on the job, where
    the map opened): not where the ghost was, on a slot the job never took."""
    f, job, here, there = whole_job_running(local_fleet)

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            screen = await moving(app, pilot, there)
            await pilot.press("escape")
            await pilot.pause()
            assert screen.placement is None and isinstance(app.screen, JobsScreen)
            assert app.screen.table.row.job_id == job.id
            assert app.focused is app.screen.table
            cursor = screen.map.cursor
            assert (cursor.host, cursor.gpu) == (here.host, here.gpus[0]), cursor
            assert block_job_id(screen.map.moves.slice(cursor).block) == job.id

    drive()
    assert f.store.get(job.id).state == "running"  # left as it was


async def on_a_pending_row_down_the_jobs_view(app, pilot) -> tuple:
    """The jobs view opened (J), its cursor moved to a pending job's row below the first: the
    view, the job's number and the row."""
    await pilot.press("J")
    await until(pilot, lambda: isinstance(app.screen, JobsScreen)
                and app.screen.table.row is not None, "the jobs view")
    view = app.screen
    while view.table.cursor == 0 or view.table.row.state != "pending":
        await pilot.press("j")
    return view, view.table.row.job_id, view.table.cursor


@pilot_test
async def test_esc_out_of_a_placement_begun_in_the_jobs_view_goes_back_there_on_its_row():
    """``p`` on a pending job's row some way down the jobs view, then ``esc``: the admin was
    left on the map, the jobs view's place lost; back in the view now, the cursor on the same
    job. A placement begun on the map (the queue panel's ``p``) still ends on the map."""
    async with settled_app((160, 48)) as (app, pilot):
        view, job_id, at = await on_a_pending_row_down_the_jobs_view(app, pilot)
        await pilot.press("p")
        await until(pilot, lambda: fleet(app).placement is not None
                    and not fleet(app).placement.busy, "its slots looked for")
        assert app.screen is fleet(app) and fleet(app).placement.job.id == job_id
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is view and fleet(app).placement is None
        assert (view.table.row.job_id, view.table.cursor) == (job_id, at)
        # one refused on confirm while the admin has opened the jobs view again meanwhile
        # (J in placement mode): they are left where they are, the view not opened twice
        await pilot.press("p")
        await until(pilot, lambda: fleet(app).placement is not None, "placement mode")
        await pilot.press("J")
        await until(pilot, lambda: app.screen is view, "the jobs view over the placement")
        fleet(app).end_placement(left=True)  # (as on_placed ends one refused)
        await pilot.pause()
        assert app.screen_stack == [app.screen_stack[0], fleet(app), view]
        await pilot.press("escape")
        assert isinstance(app.focused, SliceMap)  # as the admin left the map for the view
        await pilot.press("tab", "p")  # from the map's queue panel: back to the map
        await until(pilot, lambda: fleet(app).placement is not None
                    and not fleet(app).placement.busy, "its slots looked for")
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is fleet(app) and fleet(app).placement is None


@pilot_test
async def test_esc_out_of_a_placement_begun_on_a_jobs_screen_goes_back_to_it():
    """``P`` on a pending job's screen opened from the jobs view, ``m`` on a running job's
    opened from a GPU view, then ``esc``: the admin was left on the map, the job and the view
    under it gone. Back on that job's screen now (made anew), the view under it as it was: the
    jobs view on the job's row, the GPU view on the instance's."""
    async with settled_app((160, 48)) as (app, pilot):
        view, job_id, at = await on_a_pending_row_down_the_jobs_view(app, pilot)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, JobScreen)
                    and app.screen.job is not None, "the job's screen")
        await pilot.press("P")
        await slots_found(app, pilot)
        assert app.screen is fleet(app) and fleet(app).placement.job.id == job_id
        await pilot.press("escape")
        await settled(pilot)
        top = app.screen
        assert isinstance(top, JobScreen) and top.job_id == job_id
        assert app.screen_stack == [app.screen_stack[0], fleet(app), view, top]
        assert fleet(app).placement is None
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is view and (view.table.row.job_id, view.table.cursor) == (job_id, at)
        await pilot.press("escape")
        app.open_gpu("a100-1", 2)  # 2g.20gb at 0 (#3), 1g.10gb at 2 (#4), 3g.40gb at 4 (#2)
        await settled(pilot)
        await pilot.press("j", "enter")
        await until(pilot, lambda: isinstance(app.screen, JobScreen)
                    and app.screen.job is not None, "job 4's screen")
        await pilot.press("m")
        await until(pilot, lambda: fleet(app).placement is not None
                    and not fleet(app).placement.busy, "its slots looked for")
        assert fleet(app).placement.moving and fleet(app).placement.job.id == 4
        await pilot.press("escape")
        await settled(pilot)
        gpu, top = app.screen_stack[2:]
        assert app.screen_stack[:2] == [app.screen_stack[0], fleet(app)]
        assert isinstance(gpu, GpuScreen) and (gpu.host, gpu.index, gpu.cursor) == (
            "a100-1", 2, 1)
        assert isinstance(top, JobScreen) and top.job_id == 4 and fleet(app).placement is None


@pilot_test
async def test_esc_out_of_a_move_begun_on_a_job_s_screen_keeps_the_gpu_view_on_its_row():
    """The GPU view made anew for ``esc`` out of a move begun on a job's screen opened from
    it: its cursor stays on the job's row as the view's own does while a row above it goes
    (test_tui_gpu_open). It was put back at the row's number: with #13's row above gone
    meanwhile, on #15's, and ``enter`` there opened a job the admin had not been on."""
    async with settled_app((160, 48)) as (app, pilot):
        app.open_gpu("a10-1", 0)  # shares of #13, #14, #15
        await settled(pilot)
        await pilot.press("j", "enter")
        await until(pilot, lambda: isinstance(app.screen, JobScreen)
                    and app.screen.job is not None, "job 14's screen")
        assert app.screen.job_id == 14
        await pilot.press("m")
        await until(pilot, lambda: fleet(app).placement is not None
                    and not fleet(app).placement.busy, "its slots looked for")
        status = next(s for s in app.fleet.statuses.values() if s.name == "a10-1")
        status.jobs["j1"]["state"] = "exited"  # #13 ends, its row above #14's goes
        await pilot.press("escape")
        await settled(pilot)
        gpu, top = app.screen_stack[2:]
        assert isinstance(top, JobScreen) and top.job_id == 14
        assert isinstance(gpu, GpuScreen) and gpu.held[gpu.cursor].job_id == 14


@pilot_test
async def test_a_placement_refused_as_it_begins_goes_back_to_the_views_it_was_asked_from():
    """``P`` on a pending job's screen, the map's read of the store having seen it go
    meanwhile (its screen reads the job apart): placement mode is refused, said. The screens
    over the map had been closed for it, and the admin was left on the map, where they had
    not been; back on the job's screen now, the jobs view under it as it was. So too the
    jobs view's ``p`` on a row read before its job went."""
    async with settled_app((160, 48)) as (app, pilot):
        await pilot.press("J")
        await until(pilot, lambda: isinstance(app.screen, JobsScreen)
                    and app.screen.table.row is not None, "the jobs view")
        view = app.screen
        while view.table.row.state != "pending":
            await pilot.press("j")
        job_id = view.table.row.job_id
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, JobScreen)
                    and app.screen.job is not None, "the job's screen")
        store = fleet(app).model.store
        fleet(app).model.store = dataclasses.replace(
            store, jobs=tuple(j for j in store.jobs if j.id != job_id))
        await pilot.press("P")
        await settled(pilot)
        assert fleet(app).placement is None
        assert "job %d is no longer pending: it ended" % job_id in [
            n.message for n in notices(app)]
        top = app.screen
        assert isinstance(top, JobScreen) and top.job_id == job_id
        assert app.screen_stack == [app.screen_stack[0], fleet(app), view, top]
        await pilot.press("escape")  # (the job's screen)
        await settled(pilot)
        assert app.screen is view
        while view.table.row.state != "pending":
            await pilot.press("j")
        other = view.table.row.job_id
        fleet(app).model.store = dataclasses.replace(
            store, jobs=tuple(j for j in store.jobs if j.id not in (job_id, other)))
        await pilot.press("p")  # the jobs view's, its rows read before the job went
        await settled(pilot)
        assert fleet(app).placement is None
        assert app.screen_stack == [app.screen_stack[0], fleet(app), view]


def test_a_move_refused_on_confirm_says_why_and_puts_the_cursor_back_on_the_job(local_fleet):
    """The host chosen is cordoned between the preview and ``enter``: the move is refused with
    the cordon's reason, and the map's cursor goes back where it was as the move began (on
    the job, where the map opened), as ``esc`` puts it, not left on the slot the job never
    took."""
    f, job, here, there = whole_job_running(local_fleet)

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            screen = await moving(app, pilot, there)
            f.store.cordon(there, None, "cordon", "ops", "fan noise")
            await pilot.press("enter")
            await until(pilot, lambda: screen.placement is None, "the move refused")
            await pilot.pause()
            assert said(app) == [
                "not placed: %s is cordoned (by ops): it takes no new work until an admin "
                "uncordons it (fractui uncordon %s)" % (there, there)]
            cursor = screen.map.cursor
            assert (cursor.host, cursor.gpu) == (here.host, here.gpus[0]), cursor

    drive()
    assert f.store.get(job.id).state == "running"  # left as it was


def test_move_is_not_offered_for_a_pending_job_nor_readonly(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="whole", gpus=1)])
    f.submit("whole")

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            await pilot.press("J")
            await until(pilot, lambda: app.screen.table.row is not None, "the job's row")
            await pilot.press("m")
            await pilot.pause()
            assert fleet(app).placement is None  # refused, said
            assert any("only a placed or running job of the store is moved" in n.message
                       for n in notices(app))
        async with live_app(f, readonly=True) as (app, pilot):
            await pilot.press("J")
            await pilot.pause()
            assert "jobs.place" not in bound_ids(app) and "jobs.move" not in bound_ids(app)

    drive()


def test_a_move_past_the_quota_counts_what_the_job_lets_go_of():
    """The placement bar's question (Placement.past_quota), vision's quota 0.5: a move lets go
    of what the job holds within the quota, so a slot of the same charge is no step past it
    (a running or placed job beside another of 0.25); the same slot for a pending job of a
    team at its quota is, and so is a move of a borrowed job (it lets go of nothing the
    quota counts)."""
    def job(number, state, preemptible=False):
        return Job(number, "q", "vision", "j", ("x",), {}, state, 0.0, 0.0,
                   slot=None if state == "pending" else Slot("gpu-a", (number,), memory_mib=512,
                                                             charge=0.25),
                   preemptible=preemptible)

    there = Candidate("gpu-b", (0,), None, None, 512, 0.25, 0.0, "a share")
    for state, preemptible, others, past in (("running", False, 1, False),
                                             ("placed", False, 1, False),
                                             ("pending", False, 2, True),
                                             ("running", True, 2, True)):
        asked = job(0, state, preemptible)
        jobs = [asked] + [job(n, "running") for n in range(1, others + 1)]
        held = HeldTo.of(jobs, Config(path=None, teams=(TeamConfig("vision", quota_gpus=0.5),)),
                         KeptTerms())
        said = Placement(asked, [there], held=held).past_quota()
        assert (said is not None) == past, (state, preemptible, said)


async def on_a_row(view: JobsScreen, pilot, state: str) -> tuple[int, int]:
    """The jobs view's cursor on its first store job in ``state``: its number and row."""
    await pilot.press("g")
    while view.table.row.state != state or view.table.row.job_id is None:
        await pilot.press("j")
    return view.table.row.job_id, view.table.cursor


@pilot_test
async def test_every_way_to_the_map_goes_back_one_way_and_every_view_closes_on_its_keys():
    """The jobs view's ``p`` and ``m``, a job screen's ``P`` and ``m`` over the jobs view, and
    ``m`` on a job's screen opened from a GPU view: each closes the views over the map, and
    ``esc`` out of the placement opens them again as they were (the app's one reopener, read
    before they close). And ``esc`` and ``q`` each close the jobs view, a job's screen and a
    GPU view, back to what is under it."""
    async with settled_app((160, 48)) as (app, pilot):
        base = app.screen_stack[:2]

        async def to_map_and_back(key: str, job_id: int) -> None:
            await pilot.press(key)
            await until(pilot, lambda: fleet(app).placement is not None
                        and not fleet(app).placement.busy, "its slots looked for")
            assert app.screen_stack == base and fleet(app).placement.job.id == job_id
            await pilot.press("escape")
            await settled(pilot)
            assert fleet(app).placement is None

        await pilot.press("J")
        await until(pilot, lambda: isinstance(app.screen, JobsScreen)
                    and app.screen.table.row is not None, "the jobs view")
        view = app.screen
        for key, state in (("p", "pending"), ("m", "running")):
            row = await on_a_row(view, pilot, state)
            await to_map_and_back(key, row[0])
            assert app.screen_stack == base + [view]
            assert (view.table.row.job_id, view.table.cursor) == row
        for key, state, back in (("P", "pending", "escape"), ("m", "running", "q")):
            row = await on_a_row(view, pilot, state)
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, JobScreen)
                        and app.screen.job is not None, "the job's screen")
            await to_map_and_back(key, row[0])
            top = app.screen
            assert isinstance(top, JobScreen) and top.job_id == row[0]
            assert app.screen_stack == base + [view, top]
            await pilot.press(back)
            await pilot.pause()
            assert app.screen is view and (view.table.row.job_id, view.table.cursor) == row
        await pilot.press("q")
        await pilot.pause()
        assert app.screen_stack == base
        for back in ("escape", "q"):
            app.open_gpu("a10-1", 0)  # shares of #13, #14, #15
            await settled(pilot)
            await pilot.press("j", "enter")
            await until(pilot, lambda: isinstance(app.screen, JobScreen)
                        and app.screen.job is not None, "job 14's screen")
            await to_map_and_back("m", 14)
            gpu, top = app.screen_stack[2:]
            assert isinstance(gpu, GpuScreen) and (gpu.host, gpu.index, gpu.cursor) == (
                "a10-1", 0, 1)
            assert isinstance(top, JobScreen) and top.job_id == 14
            await pilot.press(back)
            await pilot.pause()
            assert app.screen is gpu
            await pilot.press(back)
            await pilot.pause()
            assert app.screen_stack == base


async def _to_map_by(way: str, app, pilot) -> None:
    """Placement mode begun ``way``: from the jobs view (``p``, ``m``), a job's screen over it
    (``P``, ``m``), the palette on the map, or the queue panel's ``p``."""
    if way.startswith(("jobs", "job screen")):
        await pilot.press("J")
        await until(pilot, lambda: isinstance(app.screen, JobsScreen)
                    and app.screen.table.row is not None, "the jobs view")
        await on_a_row(app.screen, pilot, "pending" if way.endswith("place") else "running")
        if way.startswith("job screen"):
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, JobScreen)
                        and app.screen.job is not None, "the job's screen")
            await pilot.press("P" if way.endswith("place") else "m")
        else:
            await pilot.press("p" if way.endswith("place") else "m")
    elif way == "palette place":
        await palette(pilot, "place job #26")
    elif way == "palette move":
        await palette(pilot, "move job #1")
    else:
        await pilot.press("tab", "p")


@pytest.mark.parametrize("way", ["jobs place", "jobs move", "job screen place",
                                 "job screen move", "palette place", "palette move",
                                 "queue panel place"])
@pilot_test
async def test_every_way_back_out_of_a_placement_leaves_the_admin_where_they_were_on_the_map(
        way):
    """``p`` in the jobs view, ``esc`` back to it, ``esc`` to the map: the focus was on the
    queue panel, so ``d`` and ``enter`` acted on the panel, not on the map the admin had left
    (80x24). Every way into a placement and back out of it leaves the map as the admin left
    it: focused, its cursor on the same GPU; the queue panel focused only where it was."""
    async with settled_app((80, 24)) as (app, pilot):
        screen = fleet(app)
        await pilot.press("j", "j", "j")  # the map's cursor off its first GPU
        before = (screen.map.cursor.host, screen.map.cursor.gpu)
        assert before != ("a100-1", 0) and app.focused is screen.map
        await _to_map_by(way, app, pilot)
        await until(pilot, lambda: screen.placement is not None and not screen.placement.busy
                    and app.screen is screen, "its slots looked for")
        await pilot.press("escape")
        await settled(pilot)
        for _ in range(3):  # back through the views it was begun in
            if app.screen is screen:
                break
            await pilot.press("escape")
            await settled(pilot)
        assert app.screen is screen and screen.placement is None
        panel = way == "queue panel place"
        assert app.focused is (screen.query_one(QueuePanel) if panel else screen.map), (
            way, app.focused)
        assert (screen.map.cursor.host, screen.map.cursor.gpu) == before, way


@pilot_test
async def test_a_placement_begun_during_another_and_left_leaves_the_map_as_it_was_before_both():
    """The palette's ``place job #N`` while a placement of another job lasts: the map's cursor
    was on the first one's ghost, which it follows; ``esc`` out of the second put it back
    there, on a slot neither job took, not where the admin was before placement mode."""
    async with settled_app((80, 24)) as (app, pilot):
        screen = fleet(app)
        await pilot.press("G")  # the map's cursor on its last GPU, where no ghost goes
        before = (screen.map.cursor.host, screen.map.cursor.gpu)
        await palette(pilot, "place job #23")
        await until(pilot, lambda: screen.placement is not None
                    and screen.placement.current is not None, "its slots looked for")
        assert (screen.map.cursor.host, screen.map.cursor.gpu) != before  # on the ghost
        await palette(pilot, "place job #26")
        await until(pilot, lambda: screen.placement is not None and not screen.placement.busy
                    and screen.placement.job.id == 26, "the second's slots looked for")
        await pilot.press("escape")
        await settled(pilot)
        assert screen.placement is None and app.focused is screen.map
        assert (screen.map.cursor.host, screen.map.cursor.gpu) == before


@pytest.mark.parametrize("way", ["palette place", "jobs place"])
@pilot_test
async def test_a_placement_ended_by_its_job_placed_meanwhile_leaves_the_admin_where_they_were(
        way):
    """The job is placed by the scheduler or another admin while its placement lasts: the
    mode ends, as when ``enter`` finds it so, back where it began (the map as the admin left
    it; the jobs view it was begun in), not on the queue panel with the map's cursor on the
    ghost's slot, where the admin had not been."""
    async with settled_app((80, 24)) as (app, pilot):
        screen = fleet(app)
        await pilot.press("G")
        before = (screen.map.cursor.host, screen.map.cursor.gpu)
        await _to_map_by(way, app, pilot)
        await until(pilot, lambda: screen.placement is not None and not screen.placement.busy
                    and app.screen is screen, "its slots looked for")
        job = screen.placement.job
        view = app.source._store  # the scheduler (or another admin) placed it meanwhile
        app.source._store = dataclasses.replace(view, jobs=tuple(
            dataclasses.replace(j, state="placed") if j.id == job.id else j
            for j in view.jobs))
        screen.read_store()
        await settled(pilot)
        assert screen.placement is None
        assert said(app)[-1] == \
            "job %d is no longer pending: placement mode ended" % job.id
        if way == "jobs place":
            assert isinstance(app.screen, JobsScreen) and app.screen.table.row.job_id == job.id
            await pilot.press("escape")
            await settled(pilot)
        assert app.screen is screen and app.focused is screen.map
        assert (screen.map.cursor.host, screen.map.cursor.gpu) == before
