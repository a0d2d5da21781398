"""Snapshots of the fleet screen on a frozen fleet (no agents, fixed clock), at the two sizes
that matter: 80x24 (compact, queue panel under the map) and 160x48 (one GPU per row)."""

from __future__ import annotations

from fractui.store.model import CORDON, DRAIN, Cordon
from tests.tui_frozen import frozen_app, settled

# a host draining (its jobs run on), one GPU cordoned, one GPU drained (nothing on it)
OUT_OF_SERVICE = (Cordon("a100-1", None, DRAIN, "ops@head", "drained by ops@head", 0.0),
                  Cordon("a10-1", 0, CORDON, "ops@head", "cordoned by ops@head", 0.0),
                  Cordon("h100-1", 1, DRAIN, "ops@head", "drained by ops@head", 0.0))


def test_fleet_80x24(snap_compare):
    assert snap_compare(frozen_app(), terminal_size=(80, 24), run_before=settled)


def test_fleet_160x48_degraded_and_offline_hosts(snap_compare):
    assert snap_compare(frozen_app(), terminal_size=(160, 48), run_before=settled)


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
