"""From the GPU detail view to the job on an instance or share, and back: ``j``/``k`` move a
cursor over the GPU's instances (MIG) or shares, ``enter`` opens the job on the row (a row
with none says so), and ``esc`` from the job comes back to the same row. And every screen's
key line ends with ``?`` help and ``:`` the palette, as the fleet header lists them. A copy of
a store job that no active job holds has no job screen: ``enter`` says what it is, here and in
the jobs view, never that it was launched by hand."""

from __future__ import annotations

import dataclasses
import re

from fractui.sched.fleetview import gpu_geometry
from fractui.sched.mig_change import _unfit_shaped, unfit_run
from fractui.store.model import CORDON, DRAIN, PENDING, PLACED, Cordon, Slot
from fractui.tui.bars import UNFIT_FILL, render
from fractui.tui.gpu_screen import GpuScreen, ProfileScreen, free_share
from fractui.tui.jobs import JobScreen
from fractui.tui.legend import Legend
from fractui.tui.model import PLACING, gpus_of
from remote_agent.mig.layout import Instance, Layout
from tests.tui_frozen import pilot_test, said, screen_lines, settled, settled_app, usage_store
from tests.tui_live import fleet, gpu_line


async def _enter(app, pilot) -> None:
    await pilot.press("enter")
    await settled(pilot)


@pilot_test
async def test_enter_on_an_instance_opens_its_job_and_esc_comes_back_to_the_same_row():
    async with settled_app((100, 40)) as (app, pilot):
        await pilot.press("d")  # the map's cursor starts on a100-1 gpu 0
        await settled(pilot)
        gpu = app.screen
        assert isinstance(gpu, GpuScreen) and (gpu.host, gpu.index) == ("a100-1", 0)
        app.pop_screen()
        app.open_gpu("a100-1", 2)  # 2g.20gb at 0 (#3), 1g.10gb at 2 (#4), 3g.40gb at 4 (#2)
        await settled(pilot)
        gpu = app.screen
        await _enter(app, pilot)
        assert isinstance(app.screen, JobScreen) and app.screen.job_id == 3
        await pilot.press("escape")
        await pilot.press("j")
        await _enter(app, pilot)
        assert isinstance(app.screen, JobScreen) and app.screen.job_id == 4
        await pilot.press("escape")
        await settled(pilot)
        assert app.screen is gpu and gpu.cursor == 1
        row = next(ln for ln in screen_lines(app) if "#4 train-4" in ln and "1g.10gb" in ln)
        assert row.lstrip().startswith("1g.10gb"), row  # (the instances' row, not a pid's)
        await pilot.press("down", "down", "down")  # (stops on the last row)
        await _enter(app, pilot)
        assert isinstance(app.screen, JobScreen) and app.screen.job_id == 2
        await pilot.press("escape")
        await pilot.press("k", "up", "up")
        await _enter(app, pilot)
        assert isinstance(app.screen, JobScreen) and app.screen.job_id == 3
        assert said(app) == []


@pilot_test
async def test_enter_on_a_share_opens_its_job_and_a_gpu_with_none_says_so():
    async with settled_app((100, 40)) as (app, pilot):
        app.open_gpu("a10-1", 0)  # shares of #13, #14, #15
        await settled(pilot)
        await pilot.press("j")
        await _enter(app, pilot)
        assert isinstance(app.screen, JobScreen) and app.screen.job_id == 14
        await pilot.press("escape")
        await settled(pilot)
        for host, index, words in (
                ("l4-1", 1, "no job on the free memory of l4-1 gpu 1 (nothing holds a "
                 "share of it): 22.5G left for a share"),
                ("a100-1", 1, "no job on a100-1 gpu 1's slices 0-7: no instance holds "
                 "them, they are free")):
            mark = len(app.notices.kept)
            app.open_gpu(host, index)
            await settled(pilot)
            await _enter(app, pilot)
            assert isinstance(app.screen, GpuScreen) and said(app, mark) == [words], said(
                app, mark)
            app.pop_screen()


@pilot_test
async def test_a_shared_gpu_s_free_memory_is_a_row_of_its_own():
    """a10-1 gpu 2 holds shares of 6, 10 and 2 GiB of its 22.5: the room left, 4.5G, was
    no row (the admin added the shares up); it is one now, after the shares, as an idle MIG
    instance is, and enter on it says it holds no job. Beside a whole-GPU job none is left;
    a process outside fractui takes its memory from it, as placement counts it."""
    async with settled_app((100, 40)) as (app, pilot):
        app.open_gpu("a10-1", 2)
        await settled(pilot)
        lines = screen_lines(app)
        at = next(i for i, line in enumerate(lines) if line.split()[:1] == ["shares"])
        assert [line.split() for line in lines[at + 2:at + 6]] == [
            ["#17", "train-17", "6.0G", "1005"], ["#18", "train-18", "10.0G", "1006"],
            ["#19", "train-19", "2.0G", "1007"], ["free", "4.5G", "—"]], lines[at:at + 6]
        await pilot.press("j", "j", "j")
        await _enter(app, pilot)
        assert isinstance(app.screen, GpuScreen)
        assert said(app) == ["no job on the free memory of a10-1 gpu 2: 4.5G left for a "
                             "share"], said(app)
    gpu = {"memory_mib": 23028, "processes": [{"pid": 9, "used_mib": 3000, "job": None}]}
    assert free_share(gpu, [{"memory_mib": 6144}]) == 23028 - 6144 - 3000
    assert free_share(gpu, [{"memory_mib": 6144}, {"memory_mib": None}]) == 0  # a whole GPU


@pilot_test
async def test_a_mig_gpu_s_free_slices_are_rows_among_its_instances():
    """h100-1 gpu 0: a 2g.20gb at slices 0-1, 1g.10gb at 5 and 6, slices 2-4 and 7 in no
    instance. The map draws them free; the view listed only the instances, so the room left
    was not in it. Each run of free slices is a row in slice order, enter on it says so."""
    async with settled_app((100, 40)) as (app, pilot):
        app.open_gpu("h100-1", 0)
        await settled(pilot)
        lines = screen_lines(app)
        at = next(i for i, line in enumerate(lines) if line.split()[:1] == ["instances"])
        assert [line.split()[:2] + line.split()[-2:] for line in lines[at + 2:at + 7]] == [
            ["2g.20gb", "0-1", "train-6", "1002"], ["—", "2-4", "free", "—"],
            ["1g.10gb", "5-5", "idle", "—"], ["1g.10gb", "6-6", "train-5", "1001"],
            ["none", "fits", "free", "—"]], lines[at:at + 7]  # (7-7: no profile alone)
        await pilot.press("j")
        await _enter(app, pilot)
        assert said(app) == ["no job on h100-1 gpu 0's slices 2-4: no instance holds them, "
                             "they are free"], said(app)


@pilot_test
async def test_the_free_rows_of_a_gpu_out_of_service_say_why_no_job_goes_there():
    """a10-1 gpu 2 cordoned, h100-1 drained as a whole: placement gives their GPUs nothing
    (cordons.fenced), yet their free rows read as in service, 4.5G for a share and slices
    2-4 free. Their room stays said, with the state that keeps work off in the service line's
    words (whose it is); enter says the cordon's refusal, as a placement there is told."""
    out = [Cordon("a10-1", 2, CORDON, "ops", "", 1.0), Cordon("h100-1", None, DRAIN, "ops", "",
                                                              1.0)]
    async with settled_app((120, 40), cordons=out) as (app, pilot):
        app.open_gpu("a10-1", 2)
        await settled(pilot)
        rows = [line.split() for line in screen_lines(app)]
        assert ["free", "4.5G", "—", "cordoned", "—"] in rows, rows
        await pilot.press("j", "j", "j")
        await _enter(app, pilot)
        assert said(app) == ["no job on the free memory of a10-1 gpu 2: 4.5G left for a "
                             "share; a10-1 gpu2 is cordoned (by ops): it takes no new work "
                             "until an admin uncordons it (fractui uncordon a10-1 2)"], said(app)
        app.pop_screen()
        mark = len(app.notices.kept)
        app.open_gpu("h100-1", 0)
        await settled(pilot)
        rows = [line.split() for line in screen_lines(app)]
        assert ["—", "2-4", "—", "free", "—", "host", "draining", "—"] in rows, rows
        await pilot.press("j")
        await _enter(app, pilot)
        assert said(app, mark) == ["no job on h100-1 gpu 0's slices 2-4: no instance holds them, "
                                   "they are free; h100-1 is draining (by ops): it takes no new "
                                   "work until an admin uncordons it (fractui uncordon h100-1)"], \
            said(app, mark)


@pilot_test
async def test_a_gpu_cordoned_on_a_drained_host_says_both_on_its_service_line_and_free_row():
    """a10-1 gpu 2 cordoned on its own, a10-1 drained as a whole (its jobs still on it):
    the service line named the GPU's cordon only, and its free row the host's drain only. Both
    keep work off (placement needs both lifted: C, D, U here change the GPU's own, U on the map
    the host's); both lines say both now, in one wording. The host's alone is said "host
    draining" on both (the service line said "draining (its host's drain)", too long for a
    free row at 80 columns)."""
    out = [Cordon("a10-1", 2, CORDON, "ops", "", 1.0), Cordon("a10-1", None, DRAIN, "ops", "",
                                                               1.0)]
    async with settled_app((120, 40), cordons=out) as (app, pilot):
        app.open_gpu("a10-1", 2)
        await settled(pilot)
        both = "cordoned, host draining"
        lines = [" ".join(line.split()) for line in screen_lines(app)]
        assert "service " + both in lines, lines
        assert "free 4.5G — %s —" % both in lines, lines
        app.pop_screen()
        app.open_gpu("a10-1", 1)  # the host's drain alone
        await settled(pilot)
        lines = [" ".join(line.split()) for line in screen_lines(app)]
        assert "service host draining" in lines, lines
        assert any(line.startswith("free ") and line.endswith(" — host draining —")
                   for line in lines), lines


@pilot_test
async def test_the_gpu_view_of_a_host_not_in_the_fleet_or_not_reachable_says_so():
    """A GPU view of a host the fleet no longer lists (or never did) said "no such host",
    and enter that its GPU was not in its host's snapshot; a host with no snapshot (not
    reachable) the same. Each names the host and says which it is, as M and N do."""
    async with settled_app((100, 40)) as (app, pilot):
        app.open_gpu("gone-1", 0)
        await settled(pilot)
        assert "gone-1 is not in the fleet" in "\n".join(screen_lines(app))
        for key in ("enter", "M", "N"):
            mark = len(app.notices.kept)
            await pilot.press(key)
            await settled(pilot)
            assert isinstance(app.screen, GpuScreen)
            gone = said(app, mark)
            assert gone and all("gone-1 is not in the fleet" in m for m in gone), gone
        app.pop_screen()
        status = next(s for s in app.fleet.statuses.values() if s.name == "l4-1")
        status.snapshot = None  # (offline, its snapshot not yet taken)
        app.open_gpu("l4-1", 0)
        await settled(pilot)
        mark = len(app.notices.kept)
        await _enter(app, pilot)
        assert said(app, mark) == ["no job to open: l4-1 is not reachable now (offline): its GPUs "
                                   "are not known"], said(app, mark)


@pilot_test
async def test_enter_on_an_idle_instance_says_it_holds_no_job():
    async with settled_app((100, 40)) as (app, pilot):
        status = next(s for s in app.fleet.statuses.values() if s.name == "h100-1")
        for record in status.jobs.values():  # the jobs on gpu 3 gone, their instances left
            if record.get("gpus") == [3]:
                record["state"] = "exited"
        app.open_gpu("h100-1", 3)
        await settled(pilot)
        await _enter(app, pilot)
        assert isinstance(app.screen, GpuScreen)
        assert said(app) == ["no job on h100-1 gpu 3's 2g.20gb at slices 0-1: it is "
                             "in use outside fractui"], said(app)


async def _without_13(app, pilot) -> None:
    """#13 gone from the store's active jobs (ended, requeued), its copy left on a10-1."""
    view = app.source._store
    app.source._store = dataclasses.replace(view, jobs=tuple(
        j for j in view.jobs if j.id != 13))
    app.fleet.read_store()
    await settled(pilot)


async def _last_lines(app, pilot, open_) -> str:
    open_(app)
    await settled(pilot)
    return "\n".join(screen_lines(app)[-2:])


@pilot_test
async def test_every_screen_s_key_line_ends_with_help_and_the_palette(tmp_path):
    store = usage_store(str(tmp_path / "usage.db"))
    for keys, help_, palette in (((), "? help", ": command"),
                                 ((("app.help", "f1"), ("app.command", "ctrl+p")),
                                  "f1 help", "^p command")):
        async with settled_app((120, 30), usage=store, keys=keys) as (app, pilot):
            for open_ in (lambda a: a.open_gpu("a100-1", 0), lambda a: a.open_job(1),
                          lambda a: a.open_jobs(), lambda a: a.open_report()):
                shown = await _last_lines(app, pilot, open_)
                words = " ".join(shown.split())  # (the line wraps where it would be cut)
                assert words.endswith("%s %s" % (help_, palette)), shown
                app.pop_screen()
                await settled(pilot)


@pilot_test
async def test_the_cursor_s_row_is_scrolled_into_sight_on_a_short_terminal():
    async with settled_app((80, 10)) as (app, pilot):
        app.open_gpu("a10-1", 3)  # shares of #20, #21, #22, below the health at 10 rows
        await settled(pilot)
        assert not any("#22 train-22" in ln for ln in screen_lines(app)), screen_lines(app)
        await pilot.press("j", "j")
        await settled(pilot)
        assert any(ln.startswith(" #22 train-22") for ln in screen_lines(app)), \
            screen_lines(app)


@pilot_test
async def test_the_cursor_stays_on_its_row_as_a_row_above_it_goes():
    async with settled_app((100, 40)) as (app, pilot):
        app.open_gpu("a10-1", 0)  # shares of #13, #14, #15
        await settled(pilot)
        await pilot.press("j")  # on #14
        status = next(s for s in app.fleet.statuses.values() if s.name == "a10-1")
        status.jobs["j1"]["state"] = "exited"  # #13 ends, its row above the cursor's goes
        app.screen.reload()
        await _enter(app, pilot)
        assert isinstance(app.screen, JobScreen) and app.screen.job_id == 14, app.screen
        app.pop_screen()
        app.pop_screen()
        app.open_gpu("a100-1", 2)  # 2g.20gb at 0 (#3), 1g.10gb at 2 (#4), 3g.40gb at 4 (#2)
        await settled(pilot)
        await pilot.press("j")  # on #4's instance
        status = next(s for s in app.fleet.statuses.values() if s.name == "a100-1")
        gpu = next(g for g in status.snapshot["gpus"] if g["index"] == 2)
        gpu["instances"] = [i for i in gpu["instances"] if i["start"] != 0]  # #3's destroyed
        app.screen.reload()
        await _enter(app, pilot)
        assert isinstance(app.screen, JobScreen) and app.screen.job_id == 4, app.screen


@pilot_test
async def test_enter_on_a_copy_of_a_job_the_store_no_longer_holds_says_what_it_is():
    async with settled_app((100, 40)) as (app, pilot):
        await _without_13(app, pilot)
        app.open_gpu("a10-1", 0)
        await settled(pilot)
        await _enter(app, pilot)
        assert isinstance(app.screen, GpuScreen)
        assert said(app) == ["a10-1/j1 train-13 is a copy of job 13's attempt 0 that no "
                             "active job of the store holds: a late one is killed by the "
                             "lease holder, any other left running (fractui jobs 13 says "
                             "which): it has no job screen of its own"], said(app)


@pilot_test
async def test_enter_on_the_jobs_view_s_copy_of_a_job_says_what_it_is():
    async with settled_app((120, 40)) as (app, pilot):
        await _without_13(app, pilot)
        app.open_jobs()
        await settled(pilot)
        await pilot.press("slash", *"train-13", "enter")
        await _enter(app, pilot)
        assert said(app) == ["a10-1/j1 has no job screen: a copy of job 13's attempt 0 that "
                             "no active job of the store holds: a late one is killed by the "
                             "lease holder, any other left running (fractui jobs 13 says "
                             "which) (fractui logs a10-1/j1)"], said(app)


@pilot_test
async def test_the_free_rows_leave_out_the_room_a_placed_job_holds():
    """A job placed on a GPU and not yet started there holds its room (placement books it,
    the map draws it being placed): the free rows counted only what ran, so a share's free
    row said 4.5G where 2.5G was left, and slice 7 of a MIG GPU read free under a placed
    1g.10gb."""
    async with settled_app((100, 40)) as (app, pilot):
        view = app.source._store
        pending = [j for j in view.jobs if j.state == PENDING][:2]
        placed = (dataclasses.replace(pending[0], state=PLACED, slot=Slot(
                      "a10-1", (2,), memory_mib=2048, charge=0.1)),
                  dataclasses.replace(pending[1], state=PLACED, slot=Slot(
                      "h100-1", (0,), profile="1g.10gb", start=7, charge=0.1)))
        done = {j.id for j in placed}
        app.source._store = dataclasses.replace(view, jobs=tuple(
            j for j in view.jobs if j.id not in done) + placed)
        app.fleet.read_store()
        await settled(pilot)
        app.open_gpu("a10-1", 2)
        await settled(pilot)
        rows = [line.split() for line in screen_lines(app)]
        assert ["free", "2.5G", "—"] in rows, rows
        # its agent runs it before the store says so: its share is a row, booked once
        status = next(s for s in app.fleet.statuses.values() if s.name == "a10-1")
        status.jobs["j99"] = {"id": "j99", "key": placed[0].key(view.uid), "state": "running",
                              "gpus": [2], "memory_mib": 2048, "pid": 4242, "name": "x"}
        app.screen.reload()
        await settled(pilot)
        rows = [line.split() for line in screen_lines(app)]
        assert ["free", "2.5G", "—"] in rows, rows
        app.pop_screen()
        app.open_gpu("h100-1", 0)
        await settled(pilot)
        rows = [line.split() for line in screen_lines(app)]
        assert ["—", "2-4", "—", "free", "—"] in rows, rows
        assert ["—", "7-7", "—", "free", "—"] not in rows, rows


def test_the_room_of_a_gpu_with_no_memory_figure_is_not_known():
    """A snapshot without the GPU's memory: its free row said 0M left, as if it were full."""
    assert free_share({"memory_mib": None}, []) is None
    assert free_share({}, [{"memory_mib": 1024}]) is None


@pilot_test
async def test_the_cursor_on_a_free_run_stays_on_it_as_it_grows():
    """The cursor on free slices 2-5 of h100-1 gpu 0, between #6's instance (0-1) and #5's
    (6): #6's destroyed, the run is 0-5 and its row's name changed, and the cursor went by
    its index onto #5's row, enter opening a job it had not been on. It stays on the run."""
    async with settled_app((100, 40)) as (app, pilot):
        status = next(s for s in app.fleet.statuses.values() if s.name == "h100-1")
        gpu = next(g for g in status.snapshot["gpus"] if g["index"] == 0)
        gpu["instances"] = [i for i in gpu["instances"] if i["start"] != 5]  # the idle one
        app.open_gpu("h100-1", 0)
        await settled(pilot)
        await pilot.press("j")  # on free 2-5
        assert app.screen.held[app.screen.cursor].row == "free 2-5"
        gpu["instances"] = [i for i in gpu["instances"] if i["start"] != 0]  # #6's
        app.screen.reload()
        await _enter(app, pilot)
        assert isinstance(app.screen, GpuScreen), app.screen
        assert said(app) == ["no job on h100-1 gpu 0's slices 0-5: no instance holds them, "
                             "they are free"], said(app)


@pilot_test
async def test_an_idle_instance_a_starting_job_takes_is_that_job_s_row_being_made():
    """#2's launch takes the idle 3g.40gb at its start as it is, and the snapshot is from
    before (the instance idle, the record naming none yet). Placement books it #2's
    (fleetview.booked_layout); the view listed it idle, ``enter`` saying no job held it."""
    async with settled_app((100, 40)) as (app, pilot):
        status = next(s for s in app.fleet.statuses.values() if s.name == "a100-1")
        gpu = next(g for g in status.snapshot["gpus"] if g["index"] == 2)
        inst = next(i for i in gpu["instances"] if i["start"] == 4)
        record = next(r for r in status.jobs.values() if r.get("instance") == inst["uuid"])
        record.update(state="starting", instance=None, pid=None,
                      mig={"profile": inst["profile"], "start": 4})
        inst.update(busy=False, pids=[], memory_used_mib=0)
        gpu["processes"] = [p for p in gpu.get("processes") or ()
                            if p.get("instance") != inst["uuid"]]
        app.open_gpu("a100-1", 2)
        await settled(pilot)
        row = next(ln for ln in screen_lines(app) if "4-7" in ln)
        assert "#2" in row and "(being made)" in row, row
        await pilot.press("j", "j", "j")  # (its rows: #3's, #4's, a free slice, the twin)
        await _enter(app, pilot)
        assert isinstance(app.screen, JobScreen) and app.screen.job_id == 2, said(app)


@pilot_test
async def test_a_gpu_s_memory_is_said_one_way_on_its_line_and_its_sparkline():
    """h100-1 gpu 3 (the most memory used of its GPUs): the GPU's line said its memory
    "…G used of 79.6G" and the sparkline's label "memory …/80 GiB" (GiB to a whole, in other
    letters): one GPU's memory two ways. Both say it as the view's other memory cells do."""
    async with settled_app((120, 40)) as (app, pilot):
        app.open_gpu("h100-1", 3)
        await settled(pilot)
        text = "\n".join(" ".join(line.split()) for line in screen_lines(app))
        line = re.search(r" (\S+) used of (\S+) ", text)
        assert line, text
        assert "memory %s/%s" % line.groups() in text, text


@pilot_test
async def test_a_free_run_no_profile_fits_in_is_said_so_by_the_planners_rules():
    """h100-1 gpu 0: 2g.20gb at 0, 1g.10gb at 5 (idle) and 6 (#5); slices 2-4 and 7 free.
    Slice 7 read "free" as 2-4 did, but every placement that holds it (1g.20gb at 6, 7g at 0)
    holds a slice an instance holds: no profile can be made there alone. Its row says none
    fits, and ``enter`` why; 2-4 (a 2g.20gb at 2, a 1g at 2, 3 or 4) and a100-1 gpu 2's
    slice 3 (a 1g.10gb, one compute slice of the 7 left) stay plainly free."""
    async with settled_app((120, 40)) as (app, pilot):
        app.open_gpu("h100-1", 0)
        await settled(pilot)
        rows = dict(m.group(2, 1) for m in (re.match(r" (\S+(?: \S+)?) +(\d-\d) ", ln)
                                            for ln in screen_lines(app)) if m)
        assert rows == {"0-1": "2g.20gb", "2-4": "—", "5-5": "1g.10gb", "6-6": "1g.10gb",
                        "7-7": "none fits"}, rows
        await pilot.press("j", "j", "j", "j")
        await _enter(app, pilot)
        assert said(app) == [
            "no job on h100-1 gpu 0's slices 7-7: no instance holds them, they are free, but "
            "no MIG profile fits in them alone now: every placement of a profile that holds "
            "them holds slices beside them too"], said(app)
        app.pop_screen()
        app.open_gpu("a100-1", 2)
        await settled(pilot)
        row = next(ln for ln in screen_lines(app) if " 3-3 " in ln)
        assert row.split()[:2] == ["—", "3-3"] and "free" in row, row


@pilot_test
async def test_a_job_placed_on_an_idle_instance_is_not_booked_twice():
    """#2 placed on a100-1 gpu 2's idle 3g.40gb at 4 (its twin: placement reuses one) and not
    started yet. The free rows' fit booked it as a second 3g.40gb over the idle one, and
    counted 9 of 7 compute slices in use: slice 3 said none fits, though a 1g.10gb fits
    there (placement books the decision as its launch makes it: the twin taken)."""
    async with settled_app((120, 40)) as (app, pilot):
        view = app.source._store
        status = next(s for s in app.fleet.statuses.values() if s.name == "a100-1")
        gpu = next(g for g in status.snapshot["gpus"] if g["index"] == 2)
        inst = next(i for i in gpu["instances"] if i["start"] == 4)
        record = next(k for k, r in status.jobs.items() if r.get("instance") == inst["uuid"])
        del status.jobs[record]
        inst.update(busy=False, pids=[], memory_used_mib=0)
        gpu["processes"] = [p for p in gpu.get("processes") or ()
                            if p.get("instance") != inst["uuid"]]
        app.source._store = dataclasses.replace(view, jobs=tuple(
            dataclasses.replace(j, state=PLACED) if j.id == 2 else j for j in view.jobs))
        app.fleet.read_store()
        await settled(pilot)
        app.open_gpu("a100-1", 2)
        await settled(pilot)
        row = next(ln for ln in screen_lines(app) if " 3-3 " in ln)
        assert row.split()[:2] == ["—", "3-3"] and "free" in row, row


async def _placed(app, pilot, *slots: Slot) -> list:
    """Pending jobs of the sample store placed on ``slots`` (not started: no agent runs them),
    the map and store read again."""
    view = app.source._store
    pending = [j for j in view.jobs if j.state == PENDING][:len(slots)]
    placed = [dataclasses.replace(j, state=PLACED, slot=s) for j, s in zip(pending, slots)]
    done = {j.id for j in placed}
    app.source._store = dataclasses.replace(view, jobs=tuple(
        j for j in view.jobs if j.id not in done) + tuple(placed))
    app.fleet.read_store()
    await settled(pilot)
    return placed


async def _picked(app, pilot, host: str, index: int) -> dict:
    """The ``N`` picker's judgement of GPU ``index`` of ``host``: profile -> its start (None:
    it does not fit); and the GPU view's rows, as drawn, before it opened."""
    app.open_gpu(host, index)
    await settled(pilot)
    rows = [line.split() for line in screen_lines(app)]
    await pilot.press("N")
    await settled(pilot)
    assert isinstance(app.screen, ProfileScreen), app.screen
    return {name: fit.start for name, fit in app.screen.judged.items()}, rows


@pilot_test
async def test_the_picker_books_a_placed_job_as_the_free_rows_do():
    """#23 placed on a100-1 gpu 2's free slice 3 (1g.10gb at 3), not started yet. The free
    rows left slice 3 out, as placement books it, but ``N`` judged the profiles on what ran
    alone and offered 1g.10gb at slot 3, the slot the placed job takes."""
    async with settled_app((160, 48)) as (app, pilot):
        await _placed(app, pilot, Slot("a100-1", (2,), profile="1g.10gb", start=3, charge=0.1))
        starts, rows = await _picked(app, pilot, "a100-1", 2)
        assert not any(r[1:2] == ["3-3"] for r in rows), rows
        assert starts["1g.10gb"] is None, starts


@pilot_test
async def test_a_slot_placed_with_its_start_left_open_is_booked_at_the_planners_start():
    """``fractui place JOB a100-1 2 --profile 1g.10gb`` without ``--start``: placement books
    it where the agent's planner puts it (slot 3, the one free slice), but the free rows said
    3-3 free, ``N`` offered 1g.10gb there, and the map drew nothing being placed."""
    async with settled_app((160, 48)) as (app, pilot):
        job, = await _placed(app, pilot, Slot("a100-1", (2,), profile="1g.10gb", charge=0.1))
        _, line = gpu_line(app, "a100-1", 2)
        assert [(b.start, b.label, b.job) for b in line.blocks if b.kind == PLACING] == [
            (3 / 8, "1g.10gb", "#%d" % job.id)], line.blocks
        starts, rows = await _picked(app, pilot, "a100-1", 2)
        assert not any(r[1:2] == ["3-3"] for r in rows), rows
        assert starts["1g.10gb"] is None, starts


@pilot_test
async def test_the_map_draws_a_free_slice_no_profile_fits_apart_as_the_gpu_view_says_it():
    """h100-1 gpu 0's slice 7 is free, but the 1g.10gb at 6 holds slice 6, and every
    placement that holds 7 holds 6 too: the GPU view said none fits, the map drew it as any
    free slice. It is drawn dotted (a fill, not only a colour: NO_COLOR draws greys), the
    free slices a profile can use as before, and the legend says what the dots are."""
    async with settled_app((160, 48)) as (app, pilot):
        _, line = gpu_line(app, "h100-1", 0)
        assert line.unfit == (7,), line
        screen = fleet(app)
        bar = render(line, screen.map.line_width, screen.map.paint).text
        parts = bar.split("▏")  # the prefix, 2g.20gb (slices 0-1), 2, 3, 4, 5, 6, 7 and on
        assert set(parts[7].split()[0]) == {UNFIT_FILL}, bar  # slice 7: all of its cells
        assert all(not p.strip() for p in parts[2:5]) and UNFIT_FILL not in parts[6], bar
        legend = " ".join(t.plain for t in screen.query_one(Legend).lines(160))
        assert " free   %s no fit " % UNFIT_FILL in legend, legend
        app.open_gpu("h100-1", 0)
        await settled(pilot)
        rows = [line.split() for line in screen_lines(app)]
        assert ["none", "fits", "7-7", "—", "free", "—"] in rows, rows
        assert ["—", "2-4", "—", "free", "—"] in rows, rows


def test_why_a_free_run_fits_nothing_is_kept_once_for_every_gpu_of_its_shape():
    """``unfit_run``'s memo was keyed by the layout, uuids, pids and use and all: each GPU at
    each snapshot (read anew) made an entry of its own, some 80 MiB at its 100,000, never
    shared. Keyed by the shape that decides the answer, fifty GPUs of one shape (each its
    own uuids, pids, busy or idle) keep one entry a run, and are answered alike."""
    geo = gpu_geometry({"name": "NVIDIA H100 80GB HBM3"})

    def layout(n: int) -> Layout:
        return Layout(geo, (Instance(1, "2g.20gb", 0, 2, 2, "MIG-%d-a" % n, n % 2 == 0, (n,)),
                            Instance(2, "1g.10gb", 6, 1, 1, "MIG-%d-b" % n, n % 3 == 0)))

    _unfit_shaped.cache_clear()
    assert {unfit_run(layout(n), 7, 7) for n in range(50)} == {
        "every placement of a profile that holds them holds slices beside them too"}
    assert {unfit_run(layout(n), 2, 5) for n in range(50)} == {None}
    assert _unfit_shaped.cache_info().currsize == 2

@pilot_test
async def test_the_legend_says_no_fit_only_while_the_map_draws_a_slice_no_profile_fits():
    """The legend's "· no fit" was said whatever the map drew: at 80x24 in the colour-blind
    theme it took the legend to a second line, a row of the map, on a map with no dotted
    slice. It is said while some GPU on the map draws one (h100-1's), and not once none does
    (the map filtered to a10-1 and l4-1, without MIG), the map a row taller then."""
    async with settled_app((80, 24), theme="colourblind") as (app, pilot):
        await pilot.press("c")
        await settled(pilot)
        screen = fleet(app)

        def legend() -> str:
            return " ".join(t.plain for t in screen.query_one(Legend).lines(78))

        assert "%s no fit" % UNFIT_FILL in legend(), legend()
        assert len(screen.query_one(Legend).lines(78)) == 2
        await pilot.press("slash", *"a10-1|l4-1", "enter")
        await settled(pilot)
        assert {g.host for line in screen.map.lines for g in gpus_of(line)} == {"a10-1", "l4-1"}
        assert "no fit" not in legend() and legend().endswith(" free "), legend()
        assert screen.query_one(Legend).size.height == 1, legend()
        await pilot.press("slash", "escape")
        await settled(pilot)
        assert "%s no fit" % UNFIT_FILL in legend(), legend()
