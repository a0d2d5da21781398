"""A pass between a launch's answer and its host's next snapshot: the agent tells a job's record
at once (its launch answer, kept by the session) and its snapshot at the next tick, so for up to
half a second the record names a MIG instance the snapshot does not show. That instance is
booked from the record (where its launch makes it: ``mig``'s profile and start), so no pass
places a second slice onto it and has it refused by the agent. The demo met it: a job of its
``whole`` queue refused by a100-1, "busy instance 7g.80gb at slot 0 ... in the way", then kept
off that host for a minute."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import pytest

from remote_agent.gpu.models import model

from fractui.config import QueueConfig
from fractui.sched import Placer, Request
from fractui.sched.fleetview import HostView, build_hosts
from fractui.sched.preview import candidates
from tests import localfleet
from tests.localfleet import wait

local_fleet = localfleet.local_fleet
WHOLE = QueueConfig("whole", gpus=1)
A100 = model("A100-80GB").geometry()


def test_a_pass_before_the_snapshot_that_shows_a_launch_places_nothing_onto_it(local_fleet):
    """One A100 in MIG mode; a whole-GPU job runs on 7g.80gb at slot 0. The next pass sees
    the host as it is between that launch's answer and the next snapshot (the snapshot from
    before the launch, the job's record from after it): the second whole-GPU job waits for
    room, with no decision made and no refusal met."""
    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [WHOLE])
    status = f.fleet.session("gpu-a").status
    before = status.snapshot
    assert before is not None and before["gpus"][0]["instances"] == []
    first = f.submit("whole")
    f.until(lambda: f.states()[first.id] == "running")
    wait(lambda: (status.snapshot or {})["gpus"][0]["instances"] != [],
         lambda: status.snapshot)  # the snapshot that shows it came, and no other is due
    status.snapshot = before  # as a pass finds it in the half second before that one
    second = f.submit("whole")
    f.scheduler.step()
    f.scheduler.settle()
    assert status.snapshot is before  # (the pass read it so: nothing new was pushed)
    job = f.store.get(second.id)
    assert (job.state, job.refusals, job.attempt) == ("pending", (), 0), job
    assert job.reason is not None and job.reason.startswith("no room"), job.reason
    kept = f.store.get(first.id)
    view = next(HostView.of(s) for s in f.fleet.statuses() if s.name == "gpu-a")
    assert candidates([view], f.store.jobs(), f.store.uid, job) == []  # nor by hand
    assert kept.slot is not None and (kept.slot.profile, kept.slot.start) == ("7g.80gb", 0)


def _view(instances: List[Dict[str, Any]], job: Dict[str, Any]) -> HostView:
    """One A100 in MIG mode whose snapshot shows ``instances``, and one job record of its
    agent on it (any store's, or none's: every live job books its room)."""
    rec = {"index": 0, "uuid": "GPU-0", "name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920,
           "mig_capable": True, "mig_mode": True, "mig_pending": True, "processes": [],
           "instances": instances}
    hello = {"cpus": 32, "memory_mib": 1 << 18, "gpus": [rec]}
    return HostView("gpu-a", "online", hello, {"gpus": [rec]},
                    {"j1": dict(job, id="j1", key="k1", gpus=[0])})


def _instance(profile: str, start: int, uuid: str, busy: bool) -> Dict[str, Any]:
    p = A100.profile(profile)
    assert p is not None
    return {"gi_id": start + 1, "profile": profile, "start": start, "size": p.size,
            "uuid": uuid, "busy": busy}


def _started(profile: str, start: int, instance: Optional[str] = None) -> Dict[str, Any]:
    return {"state": "running" if instance else "starting", "instance": instance,
            "memory_mib": None, "mig": {"profile": profile, "start": start,
                                        "destroy_idle": True}}


def _place(view: HostView, profile: str) -> Optional[int]:
    """Where the placer puts a slice of ``profile`` on the view's GPU (None: nowhere)."""
    host = build_hosts([view], [], "uid")[0]
    p = Placer([host], "fractui").place(Request("r", mig=profile))
    return None if p is None else p.plans[0].start


@pytest.mark.parametrize("job", [
    _started("3g.40gb", 4, "MIG-new"),  # running on an instance the snapshot has not shown
    _started("3g.40gb", 4),  # its instance still being made (the record names none yet)
])
def test_a_records_instance_the_snapshot_does_not_show_is_booked_where_its_launch_makes_it(
        job):
    view = _view([], job)
    gpu = build_hosts([view], [], "uid")[0].gpus[0]
    assert [(i.profile, i.start, i.busy) for i in gpu.layout.instances] == [
        ("3g.40gb", 4, True)]
    assert _place(view, "3g.40gb") == 0  # the other half, not the job's
    assert _place(view, "7g.80gb") is None


def test_an_idle_instance_where_a_launch_makes_its_own_is_the_launchs():
    """The snapshot taken between the instance's making and its being recorded as the job's
    shows it idle: the launch's, not an idle twin for the next slice to take; an idle one
    in its way is gone (the launch destroys it)."""
    view = _view([_instance("3g.40gb", 4, "MIG-new", False),
                  _instance("1g.10gb", 0, "MIG-old", False)], _started("4g.40gb", 0))
    gpu = build_hosts([view], [], "uid")[0].gpus[0]
    assert gpu.idle_instances == (("3g.40gb", 4),)
    busy = _view([_instance("3g.40gb", 4, "MIG-new", False)], _started("3g.40gb", 4))
    gpu = build_hosts([busy], [], "uid")[0].gpus[0]
    assert (gpu.idle_instances, [(i.profile, i.start, i.busy) for i in gpu.layout.instances]
            ) == ((), [("3g.40gb", 4, True)])
    assert _place(busy, "3g.40gb") == 0


def test_a_gpu_instance_its_launch_has_made_without_its_compute_instance_yet_is_the_launchs():
    """The snapshot taken between the GPU instance's making and its compute instance's (no uuid
    yet), the record naming none: the launch's, booked there, and the rest of the GPU offered.
    A record naming no instance counted as holding every instance without a uuid: that one
    read busy, so no twin, and the GPU offered nothing."""
    making = dict(_instance("3g.40gb", 4, "-", False), uuid=None)
    view = _view([making], _started("3g.40gb", 4))
    gpu = build_hosts([view], [], "uid")[0].gpus[0]
    assert (gpu.idle_instances, [(i.profile, i.start, i.busy) for i in gpu.layout.instances]
            ) == ((), [("3g.40gb", 4, True)])
    assert _place(view, "3g.40gb") == 0


@pytest.mark.parametrize("instances, job", [
    # launched onto an instance by its uuid, which the snapshot does not show: where is unknown
    ([], {"state": "running", "instance": "MIG-other", "memory_mib": None}),
    # its launch's slice where the snapshot has a busy instance: the two disagree
    ([_instance("4g.40gb", 0, "MIG-busy", True)], _started("3g.40gb", 0, "MIG-new")),
    # a busy one of its profile at its start (another job's, or with processes): no idle twin
    # its launch takes as it is, which the agent refuses; taken for one, it was booked the job's
    ([_instance("3g.40gb", 4, "MIG-busy", True)], _started("3g.40gb", 4)),
])
def test_a_gpu_whose_records_and_snapshot_cannot_both_be_read_offers_nothing(instances, job):
    """Until the next snapshot says what the GPU holds."""
    view = _view(instances, job)
    assert build_hosts([view], [], "uid")[0].gpus[0].free_milli == 0
    assert _place(view, "1g.10gb") is None

