"""Snapshots of the fleet screen on a frozen fleet (no agents, fixed clock), at the two sizes
that matter: 80x24 (compact, queue panel under the map) and 160x48 (one GPU per row)."""

from __future__ import annotations

import copy
import dataclasses

from fractui.tui.sample import NOW
from tests.tui_frozen import frozen_app, settled


def test_fleet_80x24(snap_compare):
    assert snap_compare(frozen_app(), terminal_size=(80, 24), run_before=settled)


def test_fleet_160x48_degraded_and_offline_hosts(snap_compare):
    assert snap_compare(frozen_app(), terminal_size=(160, 48), run_before=settled)


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
