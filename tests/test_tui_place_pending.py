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

import pytest

from remote_agent.gpu.models import models

from fractui.config import QueueConfig
from fractui.sched.fleetview import HostView
from fractui.store.model import PENDING, PLACED, Job, ModeHold
from fractui.tui.placement import PreviewBar, pending_slots
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
            assert p.current.plan == PENDING_ON + "it would be made now; " + refused
            assert "placement.confirm" not in bound_ids(app)
            await pilot.press("enter")  # not bound: nothing asked, nothing recorded
            await pilot.pause()
            assert fleet(app).placement is not None and not fleet(app).placement.busy

    drive()
    assert f.store.get(job.id).state == "pending" and f.store.get(job.id).slot is None


def test_a_share_slot_previewed_before_a_mig_change_went_pending_is_not_recorded_undoing_it(
        local_fleet):
    """A share previewed on a GPU with MIG off, no change said; MIG on then went pending. The
    confirm found the slot the pending GPU offers, the same host, GPU and size, and recorded
    it: its launch turned MIG off, a GPU reset the admin was never shown. What the launch
    changes first, whether a change is pending and a refusal are part of what was shown."""
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SHARE])
    job = f.submit("share")

    @pilot_test
    async def drive():
        async with placing(f) as (app, pilot):
            assert not fleet(app).placement.current.pending
            s = f.fleet.session("gpu-a")
            s.call("sim.mode_waits_for_reset", {"gpu": 0})
            s.call("mig.set_mode", {"gpu": 0, "enabled": True})
            await pilot.press("enter")
            await until(pilot, lambda: fleet(app).placement is None or (
                not fleet(app).placement.busy and fleet(app).placement.note), "answered")
            p = fleet(app).placement
            assert p is not None and p.note.startswith("The GPU changed since the preview"), (
                p and p.note)
            assert p.current.pending and PENDING_ON + "it is undone: " in p.current.plan

    drive()
    assert f.store.get(job.id).state == "pending"


A100 = next(m for m in models().values() if m.name == "NVIDIA A100-SXM4-80GB")


@pytest.mark.parametrize("queue,first,second", [
    (QueueConfig(name="big", memory_gib=70, isolation="share"), (None, None, 71680), None),
    (QueueConfig(name="m", mig="7g.80gb"), ("7g.80gb", 0, None), None),
    (QueueConfig(name="m", mig="3g.40gb"), ("3g.40gb", 4, None), ("3g.40gb", 0, None))])
def test_a_pending_gpus_slot_placed_for_another_job_is_not_offered_again(queue, first, second):
    """Each job was offered the slot on the GPU as if it were empty: the same 3g.40gb at slot 4
    (or a 70 GiB share of 80) twice, the second bounced at its launch. A job placed there for
    the same change holds its slot: the next is offered another start, or nothing."""
    gpus = [{"index": 0, "uuid": "GPU-0", "name": A100.name, "memory_mib": A100.memory_mib,
             "mig_capable": True, "mig_mode": False, "mig_pending": True, "instances": [],
             "layout_version": "v0", "processes": []}]
    hello = {"cpus": 64, "memory_mib": 512 * 1024, "gpus": gpus,
             "features": ["mig.set_mode.reset", "mig.set_mode.destroy_idle"]}
    v = HostView("h", "online", hello, {"gpus": gpus}, {})
    j1 = Job(1, queue.name, "t", "n", ("x",), queue.request(), PENDING, 0.0, 0.0)
    offered = pending_slots([v], [], [], "uid", j1, {}, 0.0)
    assert [(c.profile, c.start, c.memory_mib, c.refusal) for c in offered] == [first + (None,)]
    j1 = Job(1, queue.name, "t", "n", ("x",), queue.request(), PLACED, 0.0, 0.0,
             slot=offered[0].slot(), manual=True)
    j2 = Job(2, queue.name, "t", "n", ("x",), queue.request(), PENDING, 0.0, 0.0)
    offered = pending_slots([v], [j1], [], "uid", j2, {}, 0.0)
    assert [(c.profile, c.start, c.memory_mib, c.refusal) for c in offered] == (
        [second + (None,)] if second else [])
