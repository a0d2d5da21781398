"""Placement mode on a GPU whose MIG mode change is pending (it waits for a GPU reset): the
preview offers the slot ``fractui place JOB HOST GPU`` records there, saying the change is
pending and whether the placement makes it now (its launch resets the GPU) or undoes it, in
``place``'s words, and records it on enter; on a host that pins its modes it is shown with
``place``'s refusal and never recorded. Before, such a GPU offered nothing: the preview left
it out (it takes no new work, and a pass offers it no change), with nothing said. Simulated
hosts over the local transport, a real SQLite store, the fake pynvml."""

from __future__ import annotations

import re
import time

from fractui.store.model import ModeHold
from fractui.tui.placement import PreviewBar
from tests import localfleet
from tests.test_place_bare import TURN_ON
from tests.test_scheduler_mig_mode import HOUR, SHARE, SLICE, gpu, mig_on_pending
from tests.test_tui_place import bound_ids, placing
from tests.tui_frozen import pilot_test
from tests.tui_live import fleet, until

local_fleet = localfleet.local_fleet
PENDING_ON = "MIG on is pending on gpu-a gpu 0 (MIG now off, until a GPU reset); placed here, "


def bar(app) -> str:
    return str(fleet(app).query_one(PreviewBar).render())


def test_a_mig_queues_job_on_a_gpu_whose_mig_on_is_pending_makes_it_now_and_runs(local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE])
    mig_on_pending(f)
    job = f.submit("slice")
    cli = f.fractui("place", str(job.id), "gpu-a", "0")  # (no terminal: said, not placed)
    said = "job %d on gpu-a gpu0 3g.40gb at slot 4: its launch will first %s; the scheduler " \
        "checks that the GPU is idle then (if it is not, the job goes back to its queue)" % (
            job.id, TURN_ON)
    assert cli.stderr.startswith("fractui: " + said + ".\n"), cli.stderr

    @pilot_test
    async def drive():
        async with placing(f) as (app, pilot):
            p = fleet(app).placement
            assert [(c.profile, c.start, c.pending, c.refusal) for c in p.candidates] == [
                ("3g.40gb", 4, True, None)]
            assert p.current.plan == PENDING_ON + "it is made now: " + said
            assert "not scored" in bar(app) and p.current.plan in bar(app).replace("\n", "")
            assert "placement.confirm" in bound_ids(app)
            await pilot.press("enter")
            await until(pilot, lambda: f.store.get(job.id).state == "placed", "placed")

    drive()
    placed = f.store.get(job.id)
    assert (placed.slot.profile, placed.slot.start, placed.slot.memory_mib, placed.manual) == (
        "3g.40gb", 4, None, True)
    f.until(lambda: f.states()[job.id] == "running")
    assert f.store.get(job.id).refusals == ()
    assert (gpu(f, "gpu-a", 0)["mig_mode"], gpu(f, "gpu-a", 0)["mig_pending"]) == (True, True)


def test_a_share_queues_job_on_a_gpu_whose_mig_on_is_pending_undoes_it_and_runs(local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SHARE])
    mig_on_pending(f)
    job = f.submit("share")

    @pilot_test
    async def drive():
        async with placing(f) as (app, pilot):
            p = fleet(app).placement
            assert [(c.profile, c.memory_mib, c.pending) for c in p.candidates] == [
                (None, 10240, True)]
            assert p.current.plan.startswith(
                PENDING_ON + "it is undone: job %d on gpu-a gpu0 10240 MiB: its launch will "
                "first turn MIG off on gpu-a gpu 0 (a GPU reset" % job.id), p.current.plan
            await pilot.press("enter")
            await until(pilot, lambda: f.store.get(job.id).state == "placed", "placed")

    drive()
    f.until(lambda: f.states()[job.id] == "running")
    assert (gpu(f, "gpu-a", 0)["mig_mode"], gpu(f, "gpu-a", 0)["mig_pending"]) == (False, False)


def test_a_pending_gpu_held_back_by_the_stores_clock_is_shown_held_on_a_tui_of_another(
        local_fleet):
    """A GPU held back from mode changes for 120 s by the store's clock, on a store an hour
    behind the TUI's machine (and the lease holder's an hour ahead of it): the TUI counted the
    hold to its own clock, read it as ended an hour ago, and offered the change the holder
    refuses. It counts it to the store's, and shows the slot refused, as place does."""
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE])
    f.on_clocks(lambda: time.time() - HOUR, lambda: time.time() + HOUR)
    mig_on_pending(f)
    job = f.submit("slice")
    uuid = gpu(f, "gpu-a", 0)["uuid"]
    f.store.keep_mode_holds({uuid: ModeHold(1, f.store.now() + 120)})

    @pilot_test
    async def drive():
        async with placing(f) as (app, pilot):
            p = fleet(app).placement
            assert [c.pending for c in p.candidates] == [True]
            left = re.search(r"offered no MIG mode change for another (\d+) s", p.current.plan)
            assert p.current.refusal is not None and left and 0 < int(left.group(1)) <= 120, \
                p.current.plan
            await pilot.press("enter")  # not bound: nothing asked, nothing recorded
            await pilot.pause()

    drive()
    assert f.store.get(job.id).state == "pending" and f.store.get(job.id).slot is None


def test_on_a_host_that_pins_its_modes_the_pending_gpu_is_shown_refused_as_place_refuses(
        local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE], agent={"mig_mode": "fixed"})
    mig_on_pending(f)
    job = f.submit("slice")
    cli = f.fractui("place", str(job.id), "gpu-a", "0", "--yes")
    assert cli.returncode == 1, cli.stderr
    refused = cli.stderr[len("fractui: "):].rstrip("\n")
    assert refused.endswith("keeps its MIG mode (mig_mode = \"fixed\" for gpu-a)"), refused

    @pilot_test
    async def drive():
        async with placing(f) as (app, pilot):
            p = fleet(app).placement
            assert [c.refusal is not None for c in p.candidates] == [True]
            assert p.current.plan == PENDING_ON + "it is made now: " + refused
            assert "placement.confirm" not in bound_ids(app)
            await pilot.press("enter")  # not bound: nothing asked, nothing recorded
            await pilot.pause()
            assert fleet(app).placement is not None and not fleet(app).placement.busy

    drive()
    assert f.store.get(job.id).state == "pending" and f.store.get(job.id).slot is None
