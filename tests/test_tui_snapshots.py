"""Snapshots of the TUI on a frozen fleet (no agents, fixed clock), at the sizes that matter:
80x24 (compact, queue panel under the map), 160x48 (one GPU per row) and 220x60 (room for the
map's labels): the fleet screen, the map's cursor and legend, the jobs view, the GPU detail;
and the report screen at 120x40, 80x24 and 200x50, on a store that ran a known job stream."""

from __future__ import annotations

import copy
import dataclasses

from fractui.store.model import CORDON, DRAIN, Cordon
from fractui.tui.sample import NOW
from tests.test_tui_health import xid_on_a100_1_gpu_0
from tests.test_tui_report import waiting
from tests.tui_frozen import STARVED, frozen_app, settled, usage_store

# a host draining (its jobs run on), one GPU cordoned, one GPU drained (nothing on it)
OUT_OF_SERVICE = (Cordon("a100-1", None, DRAIN, "ops@head", "drained by ops@head", 0.0),
                  Cordon("a10-1", 0, CORDON, "ops@head", "cordoned by ops@head", 0.0),
                  Cordon("h100-1", 1, DRAIN, "ops@head", "drained by ops@head", 0.0))


def test_fleet_80x24(snap_compare):
    assert snap_compare(frozen_app(), terminal_size=(80, 24), run_before=settled)


def test_fleet_160x48_degraded_and_offline_hosts(snap_compare):
    assert snap_compare(frozen_app(), terminal_size=(160, 48), run_before=settled)


def test_a_starved_team_said_with_why_160x48(snap_compare):
    assert snap_compare(frozen_app(reasons=STARVED), terminal_size=(160, 48),
                        run_before=settled)


def test_a_starved_team_marked_at_80x24(snap_compare):
    assert snap_compare(frozen_app(reasons=STARVED), terminal_size=(80, 24),
                        run_before=settled)


def test_a_team_at_its_bound_on_waiting_jobs_at_80x24(snap_compare):
    """nlp's 2 waiting jobs are all the store's bound lets it have: its pend 2/2 in the
    warning colour, beside the queues, the names whole; vision's 2 of 50, far from it, the
    count alone, the table as with no bounds."""
    assert snap_compare(frozen_app(bounds={"nlp": 2, "vision": 50}), terminal_size=(80, 24),
                        run_before=settled)


def test_drain_and_cordon_on_the_map_and_header_160x48(snap_compare):
    assert snap_compare(frozen_app(cordons=OUT_OF_SERVICE), terminal_size=(160, 48),
                        run_before=settled)


def test_help_lists_every_binding(snap_compare):
    assert snap_compare(frozen_app(), press=["question_mark"], terminal_size=(80, 24),
                        run_before=settled)


def test_light_theme(snap_compare):
    assert snap_compare(frozen_app(theme="light"), terminal_size=(160, 48),
                        run_before=settled)


def test_colour_blind_theme_by_queue_at_80x24(snap_compare):
    assert snap_compare(frozen_app(theme="colourblind"), press=["c"],
                        terminal_size=(80, 24), run_before=settled)


async def _placing(pilot) -> None:
    """Placement mode on the second pending job, the ghost one slot past the scheduler's
    choice."""
    await settled(pilot)
    await pilot.press("tab", "down", "p")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.press("right")
    await pilot.pause()


def test_placement_mode(snap_compare):
    assert snap_compare(frozen_app(), terminal_size=(160, 48), run_before=_placing)


def test_placement_mode_at_80x24(snap_compare):
    assert snap_compare(frozen_app(), terminal_size=(80, 24), run_before=_placing)


async def _job_1(pilot) -> None:
    await settled(pilot)
    pilot.app.open_job(1)
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.press("slash", *"loss 0.2", "enter")
    await pilot.pause()


def test_job_screen_with_logs_searched(snap_compare):
    assert snap_compare(frozen_app(), terminal_size=(120, 36), run_before=_job_1)


async def _job_1_on_an_unhealthy_gpu(pilot) -> None:
    """Job #1's GPU (a100-1 gpu 0) reports for a minute: its job's memory grows, two
    uncorrected ECC errors and an XID appear — each a snapshot through the source, as the
    agent's pushes arrive."""
    await settled(pilot)
    source = pilot.app.source
    first = pilot.app.fleet.statuses["a100-1"]
    for k in range(1, 13):
        snap = copy.deepcopy(first.snapshot)
        snap["time"] = NOW + 5 * k
        gpu = snap["gpus"][0]
        inst = next(i for i in gpu["instances"] if i["start"] == 4)
        inst["memory_used_mib"] += 1500 * k
        gpu["memory_used_mib"] += 1500 * k
        if k >= 6:
            gpu["health"]["ecc_volatile"]["uncorrected"] = 2
            gpu["health"]["xid"] = [{"time": NOW + 30, "xid": 79, "gi_id": None, "ci_id": None}]
        source.changed(dataclasses.replace(first, snapshot=snap))
    await settled(pilot)
    pilot.app.open_job(1)
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_job_screen_with_health_and_history(snap_compare):
    assert snap_compare(frozen_app(), terminal_size=(160, 48),
                        run_before=_job_1_on_an_unhealthy_gpu)


async def _unhealthy_gpu_on_the_map(pilot) -> None:
    await settled(pilot)
    source = pilot.app.source
    first = pilot.app.fleet.statuses["a100-1"]
    snap = copy.deepcopy(first.snapshot)
    snap["time"] = NOW + 5
    snap["gpus"][1]["health"]["throttle"] = ["hw_power_brake_slowdown"]
    source.changed(dataclasses.replace(first, snapshot=snap))
    await settled(pilot)


def test_an_unhealthy_gpu_marked_on_the_map_with_why(snap_compare):
    assert snap_compare(frozen_app(), terminal_size=(160, 48),
                        run_before=_unhealthy_gpu_on_the_map)


async def _cursor_on_a_job(pilot) -> None:
    """The cursor two GPUs down and one slice right: on a job's slice of an A100."""
    await settled(pilot)
    await pilot.press("j", "j", "l")
    await pilot.pause()


def test_map_with_cursor_and_legend_at_80x24(snap_compare):
    assert snap_compare(frozen_app(), terminal_size=(80, 24), run_before=_cursor_on_a_job)


def test_map_with_cursor_and_legend_at_160x48(snap_compare):
    assert snap_compare(frozen_app(), terminal_size=(160, 48), run_before=_cursor_on_a_job)


def test_map_with_cursor_and_legend_at_220x60(snap_compare):
    assert snap_compare(frozen_app(gpus=40), terminal_size=(220, 60),
                        run_before=_cursor_on_a_job)


async def _jobs_view(pilot) -> None:
    await settled(pilot)
    await pilot.press("J")
    await pilot.pause()


def test_jobs_view_at_80x24(snap_compare):
    assert snap_compare(frozen_app(), terminal_size=(80, 24), run_before=_jobs_view)


def test_jobs_view_at_160x48(snap_compare):
    assert snap_compare(frozen_app(), terminal_size=(160, 48), run_before=_jobs_view)


def test_jobs_view_at_220x60(snap_compare):
    assert snap_compare(frozen_app(), terminal_size=(220, 60), run_before=_jobs_view)


def _gpu_detail(host: str, index: int):
    async def run(pilot) -> None:
        await settled(pilot)
        pilot.app.open_gpu(host, index)
        await pilot.pause()

    return run


def test_gpu_detail_of_mig_at_80x24(snap_compare):
    """h100-1's first GPU: its MIG instances and their jobs, its host's error."""
    assert snap_compare(frozen_app(), terminal_size=(80, 24),
                        run_before=_gpu_detail("h100-1", 0))


def test_gpu_detail_of_a_gpu_cordoned_on_a_drained_host_at_80x24(snap_compare):
    """h100-1's first GPU cordoned on its own, h100-1 drained as a whole: the service line and
    the free rows say both in one wording, whole at 80 columns."""
    out = (Cordon("h100-1", None, DRAIN, "ops@head", "drained by ops@head", 0.0),
           Cordon("h100-1", 0, CORDON, "ops@head", "cordoned by ops@head", 0.0))
    assert snap_compare(frozen_app(cordons=out), terminal_size=(80, 24),
                        run_before=_gpu_detail("h100-1", 0))


def test_gpu_detail_of_shares_at_160x48(snap_compare):
    """l4-1's first GPU: shares, their processes, a process outside fractui, the host's
    error."""
    assert snap_compare(frozen_app(), terminal_size=(160, 48),
                        run_before=_gpu_detail("l4-1", 0))


def test_gpu_detail_of_shares_at_220x60(snap_compare):
    assert snap_compare(frozen_app(), terminal_size=(220, 60),
                        run_before=_gpu_detail("l4-1", 0))


def test_gpu_detail_of_an_unhealthy_gpu_at_80x24(snap_compare):
    """a100-1's first GPU with ECC errors and an XID: its health's lines, wrapped and the
    reason it is unhealthy, begin where the other lines' words do."""
    assert snap_compare(frozen_app(), terminal_size=(80, 24), run_before=xid_on_a100_1_gpu_0)


async def _report(pilot) -> None:
    await settled(pilot)
    await pilot.press("R")
    await settled(pilot)


def test_report_screen_at_120x40(snap_compare, tmp_path):
    store = usage_store(str(tmp_path / "store.db"))
    assert snap_compare(frozen_app(usage=store), terminal_size=(120, 40), run_before=_report)
    store.close()


def test_report_screen_at_80x24(snap_compare, tmp_path):
    store = usage_store(str(tmp_path / "store.db"))
    assert snap_compare(frozen_app(usage=store), terminal_size=(80, 24), run_before=_report)
    store.close()


async def _report_last_hour_by_queue(pilot) -> None:
    await _report(pilot)
    await pilot.press("h", "g")
    await settled(pilot)


def test_report_screen_light_theme_by_queue_last_hour(snap_compare, tmp_path):
    store = usage_store(str(tmp_path / "store.db"))
    assert snap_compare(frozen_app(usage=store, theme="light"), terminal_size=(120, 40),
                        run_before=_report_last_hour_by_queue)
    store.close()


def test_report_screen_at_200x50_with_a_job_waiting(snap_compare, tmp_path):
    """The headline's lines (fractui report's sentences) unwrapped, the waiting job's last."""
    path = str(tmp_path / "store.db")
    store = usage_store(path)
    waiting(path, NOW - 600, "vision", "quarter", "wait-a")
    assert snap_compare(frozen_app(usage=store), terminal_size=(200, 50), run_before=_report)
    store.close()
