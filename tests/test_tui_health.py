"""Health and history on the TUI over a simulated local fleet (real agents, real job
processes, a real store): the job screen shows the job's live memory against its cap and a
sparkline that changes as the job's memory grows; a condition raised on the host by ``sim.*``
marks its GPU on the map with the reason, and the job screen says it too."""

from __future__ import annotations

import copy
import dataclasses
import sys

from textual.widgets import Sparkline

from fractui.config import QueueConfig
from fractui.tui.health import HealthPanel
from fractui.tui.jobs import JobScreen
from tests import localfleet
from tests.test_tui_cursor_pilot import plain
from tests.test_tui_jobs import text_of
from fractui.tui.sample import NOW
from tests.tui_frozen import frozen_app, pilot_test, screen_lines, settled, settled_app
from tests.tui_live import gpu_line, live_app, until

local_fleet = localfleet.local_fleet
QUARTER = [QueueConfig(name="quarter", gpu=0.25)]
# a job whose GPU memory grows from 500 to 4000 MiB over a minute
GROWING = [sys.executable, "-m", "remote_agent.simload", "--mem-mib", "500", "--grow-to", "4000",
           "--seconds", "60", "--util", "40"]


def test_the_job_screen_shows_live_memory_against_its_cap_and_a_changing_sparkline(local_fleet):
    f = local_fleet({"gpu-b": "1xL4"}, QUARTER)
    job = f.submit("quarter", argv=GROWING)
    f.until(lambda: f.store.get(job.id).state == "running")

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            app.open_job(job.id)
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, JobScreen)

            def memory() -> str:
                return text_of(screen.details(screen.agent_record()))

            await until(pilot, lambda: "MiB used of its 5758 MiB cap" in memory(),
                        "the job's memory against its cap")
            used = [int(line.split()[1]) for line in memory().splitlines()
                    if line.startswith("memory")][0]
            await until(pilot, lambda: "%d MiB used" % used not in memory(),
                        "the job's memory used, live")
            panel = screen.query_one(HealthPanel)
            spark = panel.query_one("#second", Sparkline)
            seen = list(spark.data or ())
            assert seen and max(seen) <= 4000
            await until(pilot, lambda: list(spark.data or ()) != seen, "the sparkline changes")
            assert max(spark.data) > max(seen)  # it grew
            caption = str(panel.query_one("#second-label").render())
            assert caption.startswith("job memory ") and "/5758 MiB · last " in caption
            lines = plain(panel.query_one("#health-lines").content)
            assert lines.startswith("gpu-b gpu 0") and "slows at 92 °C" in lines
            assert "unhealthy" not in lines

            # a condition raised on the host: the map marks the GPU and says why
            f.fleet.session("gpu-b").call("sim.ecc", {"gpu": 0, "uncorrected": 1}, 10)
            await until(pilot, lambda: gpu_line(app, "gpu-b", 0)[1].unhealthy ==
                        "1 uncorrected ECC error", "the map marks the GPU unhealthy")
            await until(pilot, lambda: "unhealthy: 1 uncorrected ECC error" in plain(
                panel.query_one("#health-lines").content), "the job screen says why")

    drive()


def test_a_pending_job_has_no_gpu_to_show_health_or_memory_of():
    @pilot_test
    async def drive():
        async with settled_app((120, 36)) as (app, pilot):
            pending = next(j for j in app.fleet.model.store.jobs if j.state == "pending")
            app.open_job(pending.id)
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, JobScreen) and screen.job is not None
            assert not screen.query_one(HealthPanel).display
            details = text_of(screen.details(screen.agent_record()))
            assert "wait-" in details and "MiB used" not in details

    drive()


def test_health_in_words_says_what_is_not_measured_and_what_is_not_reported():
    from fractui.tui.health import health_text
    from fractui.tui.sample import health

    rtx = {"index": 0, "health": dict(health("RTX4090", 0), temperature_c=None)}
    text = health_text(rtx, 0.0, "yellow").plain
    assert text == ("temp ? (slows at 87 °C) · power 56/450 W · ECC n/a · throttle gpu_idle · "
                    "XID none  (not measured here: ECC errors)")
    older = health_text({"index": 0}, 0.0, "yellow").plain  # an agent from before health
    assert older == "health: not reported by this host's agent"


async def xid_on_a100_1_gpu_0(pilot) -> None:
    """a100-1's first GPU reports two uncorrected ECC errors and an XID (a snapshot through
    the source, as an agent's push arrives), and its detail view is opened."""
    app = pilot.app
    await settled(pilot)
    first = app.fleet.statuses["a100-1"]
    snap = copy.deepcopy(first.snapshot)
    snap["time"] = NOW + 5
    gpu = snap["gpus"][0]
    gpu["health"]["ecc_volatile"]["uncorrected"] = 2
    gpu["health"]["xid"] = [{"time": NOW + 3, "xid": 79, "gi_id": None, "ci_id": None}]
    app.source.changed(dataclasses.replace(first, snapshot=snap))
    await settled(pilot)
    app.open_gpu("a100-1", 0)
    await settled(pilot)


def test_the_gpu_views_health_lines_begin_where_its_other_lines_words_do():
    """The GPU view's health sat in its own panel, one cell further in than the lines above
    it, its words two further than theirs, and its wrapped parts and its reason for being
    unhealthy went on under its label: each line's words now begin in one column."""
    @pilot_test
    async def drive():
        for width in (80, 120):
            app = frozen_app()
            async with app.run_test(size=(width, 24)) as pilot:
                await xid_on_a100_1_gpu_0(pilot)
                lines = screen_lines(app)
                at = lines.index(next(line for line in lines if line.startswith(" host ")))
                health = next(i for i, line in enumerate(lines) if "temp 35" in line)
                unhealthy = next(i for i, line in enumerate(lines) if "unhealthy:" in line)
                words = lines[at].index("a100-1")
                assert lines[health].startswith(" health ") and \
                    lines[health].index("temp") == words, lines
                for line in lines[at:unhealthy + 1]:  # host, gpu, uuid, health, its lines
                    first = len(line) - len(line.lstrip())
                    assert first in (1, words), (line, lines)
                    assert line[words - 1] == " " and line[words] != " ", (line, lines)
                assert lines[unhealthy].index("unhealthy:") == words, lines

    drive()
