"""The map's cursor, the GPU detail and the jobs view on a simulated local fleet (real agents, a
real store): each running job's slice opens that job, a process outside fractui is one of the
GPU's slices and is named as such in the GPU's detail."""

from __future__ import annotations

import subprocess

from fractui.config import QueueConfig
from fractui.tui.cursor import slices_of
from fractui.tui.gpu_screen import GpuScreen
from fractui.tui.jobs import JobScreen
from fractui.tui.jobs_view import JobsScreen
from fractui.tui.model import OTHER
from tests import localfleet
from tests.cli_run import reaped
from tests.test_tui_cursor_pilot import plain
from tests.tui_frozen import pilot_test
from tests.tui_live import fleet, gpu_line, live_app, until

local_fleet = localfleet.local_fleet


def test_each_job_s_slice_opens_that_job_and_a_foreign_process_is_named(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="2g", memory_gib=2)])
    jobs = [f.submit("2g") for _ in range(3)]
    f.until(lambda: all(f.store.get(j.id).state == "running" for j in jobs))
    foreign = subprocess.Popen(localfleet.sleeper(120))  # NVML lists live processes only
    with reaped(foreign):
        f.fleet.fan_out("sim.add_process", {"gpu": 0, "used_mib": 1000, "pid": foreign.pid})
        _drive(f, jobs, foreign.pid)


def _drive(f, jobs, pid: int) -> None:
    """Along the GPU's slices with ``l``: ``enter`` on each (``pid``: the foreign process)."""

    @pilot_test
    async def drive():
        async with live_app(f) as (app, pilot):
            screen = fleet(app)
            await until(pilot, lambda: any(b.kind == OTHER for b in gpu_line(
                app, "gpu-a", 0)[1].blocks), "the foreign process drawn")
            smap = screen.map
            parts = slices_of(gpu_line(app, "gpu-a", 0)[1])
            assert sorted(p.job_id for p in parts if p.job_id) == sorted(j.id for j in jobs)
            opened, foreign_seen = [], False
            for _ in parts:
                part = smap.chosen()[1]
                if part.job_id is not None:
                    await pilot.press("enter")
                    await until(pilot, lambda: isinstance(app.screen, JobScreen), "job screen")
                    opened.append(app.screen.job_id)
                    await pilot.press("escape")
                    await pilot.pause()
                elif part.block is not None and part.block.kind == OTHER:
                    await pilot.press("enter")  # no job: the GPU's detail
                    await until(pilot, lambda: isinstance(app.screen, GpuScreen), "GPU view")
                    tables = plain(app.screen.query_one("#gpu-tables").content)
                    row = next(ln for ln in tables.splitlines() if str(pid) in ln)
                    assert "outside fractui" in row and "1000M" in row
                    for job in jobs:
                        assert "#%d %s" % (job.id, job.name) in tables  # each share's job
                    foreign_seen = True
                    await pilot.press("escape")
                    await pilot.pause()
                await pilot.press("l")
                await pilot.pause()
            assert opened == [p.job_id for p in parts if p.job_id]  # each its own, in order
            assert foreign_seen
            await pilot.press("J")
            await until(pilot, lambda: isinstance(app.screen, JobsScreen), "jobs view")
            rows = {r.job_id: r for r in app.screen.rows}
            assert all(rows[j.id].state == "running" and rows[j.id].cap_mib == 2048
                       for j in jobs)

    drive()
