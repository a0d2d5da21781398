"""Random create / destroy / plan / apply sequences with NVML failures injected, on every MIG model.

Whatever happens, a GPU's layout stays legal (no overlap, counts and compute budget kept), a busy
instance is never destroyed, and a failed apply leaves the layout exactly as it was.
"""

from __future__ import annotations

from collections import Counter
from ctypes import byref

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remote_agent.gpu import fake_pynvml as nv
from remote_agent.gpu import models
from remote_agent.gpu.backend import GpuBackend
from remote_agent.mig import planner
from remote_agent.mig.apply import Change, ChangeFailed, apply_change
from remote_agent.mig.layout import Layout

pytestmark = pytest.mark.slow  # a fault suite: README, "the slow fault suites"

MIG_MODELS = sorted(name for name, m in models.models().items() if m.mig_capable)
# Functions a plan's execution calls; any of them may fail midway.
FAULTABLE = [
    "nvmlDeviceCreateGpuInstanceWithPlacement", "nvmlGpuInstanceCreateComputeInstance",
    "nvmlGpuInstanceGetComputeInstanceProfileInfo", "nvmlComputeInstanceDestroy",
    "nvmlGpuInstanceDestroy", "nvmlDeviceGetGpuInstanceById", "nvmlGpuInstanceGetInfo",
    "nvmlDeviceGetMigDeviceHandleByIndex",
]
FAULT_CODES = [nv.NVML_ERROR_UNKNOWN, nv.NVML_ERROR_INSUFFICIENT_RESOURCES, nv.NVML_ERROR_IN_USE,
               nv.NVML_ERROR_GPU_IS_LOST, nv.NVML_ERROR_TIMEOUT]
SEQUENCES_PER_MODEL = 300  # x 7 models = 2,100 sequences per run


def placed(layout: Layout) -> Counter:
    return Counter((i.profile, i.start) for i in layout.instances)


def apply_plan(backend: GpuBackend, plan: planner.Plan, before: Layout):
    change = Change(plan.describe(), plan.destroy, plan.profile, plan.start)
    return change.created(apply_change(backend, 0, before, change).layout)


def check_legal(layout: Layout) -> None:
    geo = layout.geometry
    seen = set()
    for inst in layout.instances:
        profile = geo.profile(inst.profile)
        assert profile is not None
        assert inst.start in profile.starts
        slots = set(inst.slots())
        assert not slots & seen, "overlap at %s" % sorted(slots & seen)
        assert max(slots) < geo.memory_slices
        seen |= slots
    for name, n in Counter(i.profile for i in layout.instances).items():
        assert n <= geo.profile(name).max_instances
    assert layout.compute_used() <= geo.compute_slices


def raw_create(backend: GpuBackend, profile, start: int) -> None:
    """Create straight through NVML, bypassing the planner, to reach layouts it would not make."""
    h = backend.call("nvmlDeviceGetHandleByIndex", 0)
    placement = nv.c_nvmlGpuInstancePlacement_t()
    placement.start, placement.size = start, profile.size
    try:
        gi = nv.nvmlDeviceCreateGpuInstanceWithPlacement(h, profile.profile_id, byref(placement))
    except nv.NVMLError as err:
        assert err.value in (nv.NVML_ERROR_INSUFFICIENT_RESOURCES, nv.NVML_ERROR_INVALID_ARGUMENT)
        return
    info = nv.nvmlGpuInstanceGetComputeInstanceProfileInfo(
        gi, {1: 0, 2: 1, 3: 2, 4: 3, 7: 4}[profile.compute_slices],
        nv.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
    nv.nvmlGpuInstanceCreateComputeInstance(gi, info.id)


@pytest.mark.parametrize("model_name", MIG_MODELS)
@settings(max_examples=SEQUENCES_PER_MODEL, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_sequences_keep_every_layout_legal(model_name, data):
    facts = models.models()[model_name]
    nv.sim_open(None, "1x%s:mig" % models.short_name(model_name))
    backend = GpuBackend(nv)
    backend.open()
    geo = backend.geometry(0)
    busy_pids = {}  # MIG uuid -> pid of the process keeping it busy

    after = backend.layout(0)
    for _ in range(data.draw(st.integers(1, 20), label="steps")):
        before = after
        busy_before = {i.uuid for i in before.instances if i.busy}
        op = data.draw(st.sampled_from(["apply", "apply", "apply", "raw_create", "destroy",
                                        "make_busy", "make_idle"]), label="op")
        profile = data.draw(st.sampled_from(geo.profiles), label="profile")
        if op == "apply":
            destroy_idle = data.draw(st.booleans(), label="destroy_idle")
            fault = data.draw(st.none() | st.tuples(
                st.sampled_from(FAULTABLE), st.sampled_from(FAULT_CODES), st.integers(0, 3)),
                label="fault")
            try:
                plan = planner.plan(before, profile.name, destroy_idle=destroy_idle)
            except planner.PlanError as err:
                assert not (err.busy and any(not i.busy for i in err.busy))
                plan = None
            if plan is not None:
                assert all(not v.busy for v in plan.destroy)
                assert plan.layout_version == before.version
                if fault:
                    nv.sim_inject_fault(fault[0], fault[1], skip=fault[2])
                try:
                    made = apply_plan(backend, plan, before)
                except ChangeFailed as err:
                    assert err.restored, str(err)  # one fault: the undo itself succeeds
                    nv.sim_clear_faults()
                    assert placed(backend.layout(0)) == placed(before)
                else:
                    nv.sim_clear_faults()
                    after = backend.layout(0)
                    expected = placed(before) - Counter((v.profile, v.start) for v in plan.destroy)
                    expected[(profile.name, plan.start)] += 1
                    assert placed(after) == expected
                    assert made.uuid in {i.uuid for i in after.instances}
        elif op == "raw_create":
            raw_create(backend, profile, data.draw(st.integers(0, facts.memory_slices - 1)))
        elif op == "destroy" and before.instances:
            victim = data.draw(st.sampled_from(before.instances), label="victim")
            try:
                apply_change(backend, 0, before, Change("destroy", destroy=(victim,)))
            except ChangeFailed as err:
                assert victim.busy and err.cause.code_name == "NVML_ERROR_IN_USE"
                assert err.restored
                assert placed(backend.layout(0)) == placed(before)
        elif op == "make_busy" and before.instances:
            target = data.draw(st.sampled_from(before.instances), label="target")
            if target.uuid not in busy_pids:
                busy_pids[target.uuid] = nv.sim_register_process(0, 64, instance_uuid=target.uuid)
        elif op == "make_idle" and busy_pids:
            uuid = data.draw(st.sampled_from(list(busy_pids)), label="idle")
            nv.sim_remove_process(busy_pids.pop(uuid))

        after = backend.layout(0)
        check_legal(after)
        assert busy_before <= {i.uuid for i in after.instances}, "a busy instance was destroyed"


def test_the_suite_runs_at_least_2000_sequences():
    assert SEQUENCES_PER_MODEL * len(MIG_MODELS) >= 2000


def test_a_failed_undo_is_reported_not_hidden():
    nv.sim_open(None, "1xA100-80GB:mig")
    backend = GpuBackend(nv)
    backend.open()
    for _ in range(2):
        apply_plan(backend, planner.plan(backend.layout(0), "3g.40gb"), backend.layout(0))
    before = backend.layout(0)
    plan = planner.plan(before, "4g.40gb", destroy_idle=True)
    assert [v.profile for v in plan.destroy] == ["3g.40gb"]
    # the new instance cannot be made, and the old one cannot be made again either, however
    # often the undo tries
    nv.sim_inject_fault("nvmlDeviceCreateGpuInstanceWithPlacement", nv.NVML_ERROR_UNKNOWN,
                        count=100)
    with pytest.raises(ChangeFailed) as err:
        apply_plan(backend, plan, before)
    assert not err.value.restored
    assert "could NOT be restored" in str(err.value)
    assert err.value.cause.function == "nvmlDeviceCreateGpuInstanceWithPlacement"
    nv.sim_clear_faults()
    assert placed(err.value.now) == placed(backend.layout(0)) == placed(before) - Counter(
        [("3g.40gb", plan.destroy[0].start)])
