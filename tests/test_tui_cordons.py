"""Cordon and drain in the TUI, on a simulated local fleet and a real store: the palette's
commands record them (an admin's), the header counts them, the map marks the host and its GPUs,
and the scheduler places nothing new there meanwhile."""

from __future__ import annotations

import dataclasses
import io

from rich.console import Console

from fractui.config import QueueConfig
from fractui.store.model import DRAIN, Cordon
from fractui.tui.gpu_screen import GpuScreen
from fractui.tui.header import Header
from fractui.tui.bars import render
from fractui.tui.model import HostLine
from tests import localfleet
from tests.test_tui_pilot import palette
from tests.tui_frozen import (frozen_app, notices, pilot_test, said, screen_lines, settled,
                              settled_app)
from tests.tui_live import fleet, gpu_line, live_app, until

local_fleet = localfleet.local_fleet
WHOLE = QueueConfig(name="whole", gpus=1)


def host_line(app, name: str) -> HostLine:
    return next(line for line in fleet(app).map.lines
                if isinstance(line, HostLine) and line.name == name)


def header_text(app) -> str:
    """The header as the terminal shows it, as text."""
    console = Console(width=200, file=io.StringIO())
    with console.capture() as capture:
        console.print(fleet(app).query_one(Header).render())
    return capture.get()


def drawn(app, line) -> str:
    screen = fleet(app)
    return render(line, screen.map.line_width, screen.map.paint).text


@pilot_test
async def test_the_palette_cordons_and_uncordons_and_the_map_and_header_say_so(local_fleet):
    f = local_fleet({"gpu-a": "2xL4", "gpu-b": "1xL4"}, [WHOLE])
    async with live_app(f) as (app, pilot):
        await palette(pilot, "cordon host gpu-a")
        await until(pilot, lambda: [(c.host, c.gpu, c.mode) for c in f.store.cordons()] == [
            ("gpu-a", None, "cordon")], "the cordon recorded")
        await until(pilot, lambda: host_line(app, "gpu-a").out_of_service == "cordoned",
                    "the map marks the host")
        assert "1 host cordoned" in header_text(app)  # (not its 2 GPUs again)
        assert "gpu-a online · cordoned" in drawn(app, host_line(app, "gpu-a"))
        for index in (0, 1):  # its GPUs are marked too
            _, line = gpu_line(app, "gpu-a", index)
            assert line.out_of_service == "cordoned" and drawn(app, line).startswith(
                "⊘ %2d L4" % index)
        assert gpu_line(app, "gpu-b", 0)[1].out_of_service is None
        entry = f.store.audit_log()[-1]
        assert (entry.action, entry.actor.endswith("(tui)")) == ("cordon", True)
        await palette(pilot, "drain gpu gpu-b 0")
        await until(pilot, lambda: gpu_line(app, "gpu-b", 0)[1].out_of_service == "drained",
                    "a drain of an empty GPU is said drained")
        assert "1 host cordoned · 1 GPU drained" in header_text(app)
        job = f.submit("whole")
        for _ in range(5):  # passes while both are out of service: the job lands nowhere
            f.scheduler.step()
        assert f.store.get(job.id).state == "pending"
        await palette(pilot, "uncordon host gpu-a")
        await until(pilot, lambda: host_line(app, "gpu-a").out_of_service is None,
                    "the mark gone")
        assert [(c.host, c.gpu) for c in f.store.cordons()] == [("gpu-b", 0)]
        assert "cordoned" not in header_text(app)
        f.until(lambda: f.states()[job.id] == "running")
        assert f.store.get(job.id).slot.host == "gpu-a"


@pilot_test
async def test_the_palette_runs_the_closest_of_hits_scored_alike_in_either_order(local_fleet):
    """Textual scores ``cordon host a10`` alike on a100-1 and a10-1 and lists them as they
    come: with a100-1 first in the config, ``enter`` cordoned a100-1. The closest comes first
    whatever the config's order, for a host, a GPU and a jump alike."""
    for hosts in (("a100-1", "a10-1"), ("a10-1", "a100-1")):
        f = local_fleet({h: "1xL4" for h in hosts}, [WHOLE])
        async with live_app(f) as (app, pilot):
            await palette(pilot, "cordon host a10")
            await palette(pilot, "drain gpu a10")
            await until(pilot, lambda: {(c.host, c.gpu, c.mode) for c in f.store.cordons()}
                        == {("a10-1", None, "cordon"), ("a10-1", 0, "drain")},
                        "a10-1 cordoned and its GPU drained")
            await palette(pilot, "a100")  # (the cursor off a10-1 first)
            assert fleet(app).map.cursor.host == "a100-1", hosts
            await palette(pilot, "a10")
            assert fleet(app).map.cursor.host == "a10-1", hosts


@pilot_test
async def test_read_only_the_palette_offers_no_cordon(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [WHOLE])
    async with live_app(f, readonly=True) as (app, pilot):
        texts = [e.text for e in fleet(app).palette_entries()]
        assert "host gpu-a" in texts
        assert not [t for t in texts if "cordon" in t or t.startswith("drain")]
    async with live_app(f) as (app, pilot):
        texts = [e.text for e in fleet(app).palette_entries()]
        assert {"cordon host gpu-a", "drain host gpu-a", "cordon gpu gpu-a 0",
                "drain gpu gpu-a 0"} <= set(texts)
        assert not [t for t in texts if t.startswith("uncordon")]  # nothing out of service
        f.store.cordon("gpu-a", None, "cordon", "ops", "x")
        await until(pilot, lambda: fleet(app).model.store.cordons, "the cordon read")
        texts = [e.text for e in fleet(app).palette_entries()]
        # the host's own cordon is lifted from the host; its GPU has none of its own
        assert [t for t in texts if t.startswith("uncordon")] == ["uncordon host gpu-a"]


@pilot_test
async def test_placement_offers_no_cordoned_gpu_and_one_cordoned_since_the_preview_is_refused(
        local_fleet):
    from fractui.tui.queues import QueuePanel

    f = local_fleet({"gpu-a": "2xL4"}, [QueueConfig(name="half", gpu=0.5)])
    f.store.cordon("gpu-a", 0, "cordon", "ops", "fan")
    job = f.submit("half")
    async with live_app(f) as (app, pilot):
        await until(pilot, lambda: fleet(app).query_one(QueuePanel).job, "job listed")
        await until(pilot, lambda: fleet(app).model.store.cordons, "the cordon read")
        await pilot.press("tab", "p")
        await until(pilot, lambda: fleet(app).placement is not None and not fleet(
            app).placement.busy and fleet(app).placement.candidates, "candidates found")
        assert {c.gpus for c in fleet(app).placement.candidates} == {(1,)}
        f.store.cordon("gpu-a", 1, "drain", "ops", "maintenance")  # after the preview
        await pilot.press("enter")
        await until(pilot, lambda: fleet(app).placement is None, "placement ended")
        assert f.store.get(job.id).state == "pending"
        shown = said(app)
        assert any(m.startswith("not placed: gpu-a gpu1 is drained (by ops)") for m in shown), \
            shown


async def to_host(app, pilot, name: str) -> None:
    """The map's cursor down to a GPU of host ``name``."""
    smap = fleet(app).map
    smap.focus()
    await pilot.press("g")
    for _ in range(20):
        if smap.chosen() is not None and smap.chosen()[0].host == name:
            return
        await pilot.press("j")
        await pilot.pause()
    raise AssertionError("the cursor never reached %s" % name)


@pilot_test
async def test_keys_cordon_drain_and_uncordon_the_cursors_host_and_a_gpu_in_its_view(
        local_fleet):
    f = local_fleet({"gpu-a": "2xL4", "gpu-b": "1xL4"}, [WHOLE])
    async with live_app(f) as (app, pilot):
        await to_host(app, pilot, "gpu-b")
        await pilot.press("D")
        await until(pilot, lambda: [(c.host, c.gpu, c.mode) for c in f.store.cordons()] == [
            ("gpu-b", None, "drain")], "the drain recorded")
        await until(pilot, lambda: host_line(app, "gpu-b").out_of_service == "drained",
                    "the map says drained (nothing on it)")
        # said as the map and the header say it, in the CLI's words: drained at once
        assert said(app)[-2:] == [
            "draining gpu-b…", "gpu-b drained: the scheduler places and launches nothing new "
            "there; nothing runs there"]
        await pilot.press("C")
        await until(pilot, lambda: [c.mode for c in f.store.cordons()] == ["cordon"],
                    "the drain made a cordon")
        await pilot.press("U")
        await until(pilot, lambda: f.store.cordons() == [], "back in service")
        # a GPU's own, from its detail view
        await to_host(app, pilot, "gpu-a")
        await pilot.press("d")
        index = app.screen.index
        await pilot.press("C")
        await until(pilot, lambda: [(c.host, c.gpu, c.mode) for c in f.store.cordons()] == [
            ("gpu-a", index, "cordon")], "the GPU's cordon recorded")
        await pilot.press("U")
        await until(pilot, lambda: f.store.cordons() == [], "the GPU back in service")
    actions = [(e.action, e.why) for e in f.store.audit_log(limit=100)
               if e.action in ("cordon", "drain", "uncordon")]
    assert [a for a, _ in actions] == ["drain", "cordon", "uncordon", "cordon", "uncordon"]


@pilot_test
async def test_uncordoning_a_gpu_of_a_drained_host_says_the_host_still_holds_it(local_fleet):
    """``U`` in the GPU view of a host drained as a whole: the GPU has no cordon of its own,
    but it is not in service either; the admin is told the host's drain holds it, in its state
    as the map says it (drained: nothing is on it, not "being drained"), and how to lift it,
    never that it "was in service"."""
    f = local_fleet({"gpu-a": "2xL4"}, [WHOLE])
    async with live_app(f) as (app, pilot):
        await to_host(app, pilot, "gpu-a")
        await pilot.press("D")
        await until(pilot, lambda: host_line(app, "gpu-a").out_of_service == "drained",
                    "the host drained")
        await pilot.press("d")
        index = app.screen.index
        for own in (False, True):  # without, then with a cordon of its own besides
            if own:
                await pilot.press("C")
                await until(pilot, lambda: len(f.store.cordons()) == 2, "its own cordon")
                # both, the host's in its state as the map says it (not "cordoned" alone)
                await until(pilot, lambda: "service cordoned, host drained" in [
                    " ".join(line.split()) for line in screen_lines(app)], "both said")
            mark = len(app.notices.kept)
            await pilot.press("U")
            await until(pilot, lambda: len(notices(app, mark)) > 1, "an answer")
            said = [(n.severity, n.message) for n in notices(app, mark)]
            assert said == [("information", "uncordoning gpu-a gpu%d…" % index), (
                "warning", "%sgpu-a is still drained as a whole, and this "
                             "GPU with it: uncordon the host (U on the map) to put it back" % (
                                 "back in service: gpu-a gpu%d; but " % index if own else
                                 "gpu-a gpu%d has no cordon of its own; " % index))], said
        assert [(c.host, c.gpu) for c in f.store.cordons()] == [("gpu-a", None)]


@pilot_test
async def test_read_only_no_key_takes_a_host_or_gpu_out_of_service(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [WHOLE])
    async with live_app(f, readonly=True) as (app, pilot):
        await to_host(app, pilot, "gpu-a")
        await pilot.press("C", "D")
        await pilot.press("d")
        await pilot.press("C", "D", "M", "X", "N")
        await pilot.pause(0.5)
        assert f.store.cordons() == [] and isinstance(app.screen, GpuScreen)
        ids = {b.binding.id for b in app.screen.active_bindings.values()}
        assert "gpu.back" in ids and not ids & {"gpu.cordon", "gpu.drain", "gpu.uncordon",
                                                "gpu.mig_mode", "gpu.destroy", "gpu.create"}


@pilot_test
async def test_a_drain_is_said_draining_with_its_jobs_and_said_once_as_it_finishes(local_fleet):
    """``D`` on a host a job runs on is said draining, naming the job, in the CLI's words;
    ``U`` on a GPU of it says the host is still draining. Once its last job ends, a notice
    says it is drained, once, wherever the admin is (here the jobs view): the host line and
    the header changed on the map alone."""
    from fractui.tui.jobs_view import JobsScreen

    f = local_fleet({"gpu-a": "1xL4"}, [WHOLE])
    job = f.submit("whole")
    f.until(lambda: f.states()[job.id] == "running")
    async with live_app(f) as (app, pilot):
        await until(pilot, lambda: fleet(app).model.store and any(
            j.state == "running" for j in fleet(app).model.store.jobs), "the job read")
        await to_host(app, pilot, "gpu-a")
        await pilot.press("D")
        await until(pilot, lambda: host_line(app, "gpu-a").out_of_service == "draining",
                    "the map says draining")
        shown = said(app)
        assert shown[-1] == ("gpu-a draining: the scheduler places and launches nothing new "
                            "there; what runs there runs on (job %d); the map says drained "
                            "once it has ended" % job.id), shown
        await pilot.press("d")
        mark = len(app.notices.kept)
        await pilot.press("U")
        await until(pilot, lambda: len(notices(app, mark)) > 1, "an answer")
        assert "gpu-a is still draining as a whole" in said(app, mark)[-1]
        await pilot.press("escape", "J")
        await until(pilot, lambda: isinstance(app.screen, JobsScreen), "the jobs view")
        mark = len(app.notices.kept)
        f.store.ended(job.id, ("running",), "done", None, "test", "over", "end")
        await until(pilot, lambda: host_line(app, "gpu-a").out_of_service == "drained",
                    "the drain finished")
        for _ in range(2):  # reads of the store go on: it is said once
            fleet(app).read_store()
            await app.workers.wait_for_complete()
            await pilot.pause()
        drained = [m for m in said(app, mark) if "drained" in m]
        assert drained == ["gpu-a drained: no job of the store is left there; it takes no new "
                           "work until it is uncordoned"], drained
        assert isinstance(app.screen, JobsScreen)


@pilot_test
async def test_drains_that_finish_at_once_are_said_in_one_notice():
    """A rack drained for a kernel update, its last jobs ended (stopped) together: each host
    was a notice of its own, a stack of them over the map (one a GPU, for a host drained GPU
    by GPU). Those one read finds finished are said in one notice, named, then counted."""
    hosts = ("a100-1", "h100-1", "l4-1", "a10-1")
    drains = [Cordon(h, None, DRAIN, "ops", "kernel update", 0.0) for h in hosts] + [
        Cordon("a10-1", g, DRAIN, "ops", "kernel update", 0.0) for g in range(4)]
    async with settled_app((80, 24), cordons=drains) as (app, pilot):
        screen = fleet(app)
        assert screen.model.totals().out_of_service == ("4 hosts, 4 GPUs draining",)
        view = app.source._store  # their jobs ended
        app.source._store = dataclasses.replace(view, jobs=tuple(
            j for j in view.jobs if j.slot is None))
        screen.read_store()
        await settled(pilot)
        assert screen.model.totals().out_of_service == ("4 hosts, 4 GPUs drained",)
        # the toast's title as Textual shows it (messages.title_shown left out the title its
        # words say), which the app's record (tui_frozen.notices) keeps as it was given
        said = [(n.title, n.message) for n in app._notifications]
        assert said == [("", "a100-1, h100-1, l4-1, a10-1, a10-1 gpu0 and 3 more "
                         "drained: no job of the store is left there; they take no new work "
                         "until they are uncordoned")], said


@pilot_test
async def test_the_messages_list_a_notice_without_repeating_its_title(tmp_path, monkeypatch):
    """``e`` listed each notice with its title before it, and the notices that name what
    they are of said it twice: "drained: l4-1 drained: …", "Screenshot: screenshot saved
    to …". Their title is left out there; one whose words do not hold it keeps it."""
    monkeypatch.setenv("HOME", str(tmp_path))  # (no Downloads: saved in the current folder)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    monkeypatch.chdir(tmp_path)
    drains = [Cordon("l4-1", None, DRAIN, "ops", "kernel update", 0.0)]
    async with settled_app((80, 24), cordons=drains) as (app, pilot):
        screen = fleet(app)
        view = app.source._store  # its jobs ended
        app.source._store = dataclasses.replace(view, jobs=tuple(
            j for j in view.jobs if j.slot is None or j.slot.host != "l4-1"))
        screen.read_store()
        await settled(pilot)
        app.save_screenshot_here()
        app.notify("the store could not be read: it is locked", title="report",
                   severity="warning")
        await pilot.press("e")
        await settled(pilot)
        shown = " ".join(" ".join(screen_lines(app)).split())
        assert "l4-1 drained: no job of the store is left there" in shown, shown
        assert "information screenshot saved to " in shown, shown  # (its path folded)
        assert "report: the store could not be read: it is locked" in shown, shown
        assert "drained: l4-1" not in shown and "Screenshot: " not in shown, shown


@pilot_test
async def test_a_toast_leaves_out_a_title_its_words_say():
    """A toast drew its title, bold, over its words: "drained", then "l4-1 drained: …". It is
    left out by the rule the messages follow (messages.title_shown); one the words do not
    say stays over them, and ``e`` still keeps every notice's title. (A pilot draws toasts
    only when asked to: ``notifications=True``.)"""
    app = frozen_app(cordons=[Cordon("l4-1", None, DRAIN, "ops", "kernel update", 0.0)])
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await settled(pilot)
        screen = fleet(app)
        view = app.source._store  # its jobs ended
        app.source._store = dataclasses.replace(view, jobs=tuple(
            j for j in view.jobs if j.slot is None or j.slot.host != "l4-1"))
        screen.read_store()
        app.notify("the store could not be read: it is locked", title="report",
                   severity="warning")
        await settled(pilot)
        toasts = sorted(t.render().plain for t in app.screen.query("Toast"))
        assert [t.split("\n") for t in toasts] == [
            ["l4-1 drained: no job of the store is left there; it takes no new work until it "
             "is uncordoned"], ["report", "the store could not be read: it is locked"]], toasts
        assert "l4-1 drained: no job" in " ".join(screen_lines(app))  # (drawn, over the map)
        assert sorted(n.title for n in app.notices.newest_first()) == ["drained", "report"]
