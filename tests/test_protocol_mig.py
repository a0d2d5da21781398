"""Live MIG reconfiguration through ``serve --stdio``, on each MIG geometry."""

from __future__ import annotations

import pytest

from remote_agent.rpc import jsonrpc as rpc
from tests.conftest import AgentError

# Per model: the smallest profile and how many fit, two profiles that fill the GPU as halves,
# a mixed pair that fills it exactly, and the whole-GPU profile.
GEOMETRIES = {
    "A100-80GB": dict(small="1g.10gb", n_small=7, half="3g.40gb", mixed=("4g.40gb", "3g.40gb"),
                      full="7g.80gb"),
    "H100": dict(small="1g.10gb", n_small=7, half="3g.40gb", mixed=("4g.40gb", "3g.40gb"),
                 full="7g.80gb"),
    "A30": dict(small="1g.6gb", n_small=4, half="2g.12gb", mixed=("2g.12gb", "1g.6gb", "1g.6gb"),
                full="4g.24gb"),
}


def instances(agent, gpu=0):
    return agent.call("inventory")["gpus"][gpu]["instances"]


@pytest.fixture(params=sorted(GEOMETRIES))
def mig(request, start_agent):
    geo = GEOMETRIES[request.param]
    return start_agent("1x%s:mig" % request.param), geo


def test_smallest_profile_fills_the_gpu(mig):
    agent, geo = mig
    starts = {agent.call("mig.apply", gpu=0, profile=geo["small"])["start"]
              for _ in range(geo["n_small"])}
    assert len(starts) == geo["n_small"]
    with pytest.raises(AgentError) as err:
        agent.call("mig.apply", gpu=0, profile=geo["small"])
    assert err.value.code == rpc.NO_ROOM
    assert geo["small"] in err.value.message
    assert len(instances(agent)) == geo["n_small"]


def test_two_halves_fit_then_smallest_is_refused_clearly(mig):
    agent, geo = mig
    first = agent.call("mig.apply", gpu=0, profile=geo["half"])
    second = agent.call("mig.apply", gpu=0, profile=geo["half"])
    assert {first["start"], second["start"]} == {0, first["size"]}
    before = instances(agent)
    with pytest.raises(AgentError) as err:
        agent.call("mig.apply", gpu=0, profile=geo["small"])
    assert err.value.code == rpc.NEEDS_DESTROY
    assert "no free placement for %s" % geo["small"] in err.value.message
    assert "destroy_idle" in err.value.message
    assert instances(agent) == before  # nothing changed


@pytest.mark.parametrize("order", ["as listed", "reversed"])
def test_mixed_profiles_fill_the_gpu_in_either_order(mig, order):
    agent, geo = mig
    profiles = list(geo["mixed"]) if order == "as listed" else list(reversed(geo["mixed"]))
    for profile in profiles:
        agent.call("mig.apply", gpu=0, profile=profile)
    made = instances(agent)
    assert sorted(i["profile"] for i in made) == sorted(profiles)
    assert sum(i["size"] for i in made) == (4 if geo["small"] == "1g.6gb" else 8)


@pytest.mark.parametrize("destroy_idle", [False, True])
def test_whole_gpu_is_refused_while_a_busy_instance_exists_and_names_it(mig, destroy_idle):
    agent, geo = mig
    small = agent.call("mig.apply", gpu=0, profile=geo["small"])["instance"]
    pid = agent.call("sim.add_process", gpu=0, instance=small["uuid"], used_mib=512)["pid"]
    with pytest.raises(AgentError) as err:
        agent.call("mig.plan", gpu=0, profile=geo["full"], destroy_idle=destroy_idle)
    assert err.value.code == rpc.INSTANCE_BUSY
    assert small["uuid"] in err.value.message
    assert str(pid) in err.value.message
    assert err.value.data["busy"][0]["uuid"] == small["uuid"]
    # once the process is gone, the idle instance may make way — when the caller allows it
    agent.call("sim.remove_process", pid=pid)
    with pytest.raises(AgentError) as err:
        agent.call("mig.apply", gpu=0, profile=geo["full"])
    assert err.value.code == rpc.NEEDS_DESTROY
    made = agent.call("mig.apply", gpu=0, profile=geo["full"], destroy_idle=True)
    assert [d["uuid"] for d in made["destroy"]] == [small["uuid"]]
    assert [i["profile"] for i in instances(agent)] == [geo["full"]]


def test_plan_then_apply_lands_exactly_where_previewed(start_agent):
    agent = start_agent("1xA100-80GB:mig")
    plan = agent.call("mig.plan", gpu=0, profile="2g.20gb")
    done = agent.call("mig.apply", gpu=0, profile="2g.20gb", start=plan["start"],
                      layout_version=plan["layout_version"])
    assert done["instance"]["start"] == plan["start"]
    assert done["instance"]["uuid"].startswith("MIG-")
    assert done["planned_layout_version"] == plan["layout_version"]
    assert done["layout_version"] != plan["layout_version"]


def test_apply_refuses_a_stale_layout_and_changes_nothing(start_agent):
    agent = start_agent("1xA100-80GB:mig")
    plan = agent.call("mig.plan", gpu=0, profile="3g.40gb")
    agent.call("mig.apply", gpu=0, profile="1g.10gb")  # someone else changed the GPU
    before = instances(agent)
    with pytest.raises(AgentError) as err:
        agent.call("mig.apply", gpu=0, profile="3g.40gb", start=plan["start"],
                   layout_version=plan["layout_version"])
    assert err.value.code == rpc.STALE_LAYOUT
    assert err.value.data["layout_version"] != plan["layout_version"]
    assert instances(agent) == before


def test_explicit_start_that_is_not_a_placement_is_invalid(start_agent):
    agent = start_agent("1xA100-80GB:mig")
    with pytest.raises(AgentError) as err:
        agent.call("mig.plan", gpu=0, profile="3g.40gb", start=2)
    assert err.value.code == rpc.INVALID_PARAMS
    assert "slot 2 is not a placement of 3g.40gb" in err.value.message


def test_destroy_refuses_busy_and_removes_idle(start_agent):
    agent = start_agent("1xH100:mig")
    a = agent.call("mig.apply", gpu=0, profile="1g.10gb")["instance"]
    b = agent.call("mig.apply", gpu=0, profile="2g.20gb")["instance"]
    agent.call("sim.add_process", gpu=0, instance=a["uuid"], used_mib=100)
    with pytest.raises(AgentError) as err:
        agent.call("mig.destroy", gpu=0, instance=a["uuid"])
    assert err.value.code == rpc.INSTANCE_BUSY
    gone = agent.call("mig.destroy", gpu=0, instance=b["uuid"])
    assert gone["destroyed"]["uuid"] == b["uuid"]
    assert [i["uuid"] for i in instances(agent)] == [a["uuid"]]
    with pytest.raises(AgentError) as err:
        agent.call("mig.destroy", gpu=0, instance=b["uuid"])
    assert err.value.code == rpc.INSTANCE_NOT_FOUND


def test_gpus_are_named_by_index_or_uuid(start_agent):
    agent = start_agent("1xL4,1xA100-40GB:mig")
    gpus = agent.call("inventory")["gpus"]
    by_uuid = agent.call("mig.apply", gpu=gpus[1]["uuid"], profile="1g.5gb")
    assert by_uuid["gpu"] == 1
    with pytest.raises(AgentError) as err:
        agent.call("mig.plan", gpu=0, profile="1g.5gb")
    assert err.value.code == rpc.NOT_MIG and "does not support MIG" in err.value.message
    with pytest.raises(AgentError) as err:
        agent.call("mig.plan", gpu=7, profile="1g.5gb")
    assert err.value.code == rpc.GPU_NOT_FOUND
    with pytest.raises(AgentError) as err:
        agent.call("mig.plan", gpu=1, profile="9g.99gb")
    assert err.value.code == rpc.UNKNOWN_PROFILE and "1g.5gb" in err.value.message


def test_mig_mode_changes_only_on_an_idle_gpu(start_agent):
    agent = start_agent("1xA100-80GB:mig,1xL4")
    inst = agent.call("mig.apply", gpu=0, profile="1g.10gb")["instance"]
    with pytest.raises(AgentError) as err:
        agent.call("mig.set_mode", gpu=0, enabled=False)
    assert err.value.code == rpc.GPU_IN_USE
    agent.call("mig.destroy", gpu=0, instance=inst["uuid"])
    off = agent.call("mig.set_mode", gpu=0, enabled=False)
    assert off == {"gpu": 0, "mig_mode": False, "mig_pending": False, "reset_required": False,
                   "reset": False, "changed": True}
    assert "instances" not in agent.call("inventory")["gpus"][0]
    with pytest.raises(AgentError) as err:
        agent.call("mig.plan", gpu=0, profile="1g.10gb")
    assert err.value.code == rpc.NOT_MIG and "MIG mode off" in err.value.message
    pid = agent.call("sim.add_process", gpu=0, used_mib=10)["pid"]
    with pytest.raises(AgentError) as err:
        agent.call("mig.set_mode", gpu=0, enabled=True)
    assert err.value.code == rpc.GPU_IN_USE
    agent.call("sim.remove_process", pid=pid)
    assert agent.call("mig.set_mode", gpu=0, enabled=True)["mig_mode"] is True
    with pytest.raises(AgentError) as err:
        agent.call("mig.set_mode", gpu=1, enabled=True)
    assert err.value.code == rpc.NOT_MIG


def test_set_mode_with_reset_resets_an_idle_gpu_whose_mode_waits_for_one(start_agent):
    agent = start_agent("2xA100-80GB")
    agent.call("sim.mode_waits_for_reset", gpu=0)
    agent.call("sim.mode_waits_for_reset", gpu=1)
    # without reset: the mode waits, as before
    assert agent.call("mig.set_mode", gpu=1, enabled=True) == {
        "gpu": 1, "mig_mode": False, "mig_pending": True, "reset_required": True,
        "reset": False, "changed": True}
    on = agent.call("mig.set_mode", gpu=0, enabled=True, reset=True)
    assert on == {"gpu": 0, "mig_mode": True, "mig_pending": True, "reset_required": False,
                  "reset": True, "changed": True}
    assert agent.call("mig.apply", gpu=0, profile="3g.40gb")["instance"]["uuid"]
    # the same mode again: a success that changes nothing, no second reset
    again = agent.call("mig.set_mode", gpu=0, enabled=True, reset=True)
    assert (again["reset"], again["changed"], again["mig_mode"]) == (False, False, True)
    assert len(instances(agent)) == 1
    # a mode left pending (an earlier call that did not reset) is completed by a retry
    done = agent.call("mig.set_mode", gpu=1, enabled=True, reset=True)
    assert (done["mig_mode"], done["reset"]) == (True, True)


def test_a_restarted_agent_sees_the_layout_the_gpu_kept(start_agent, tmp_path):
    state = str(tmp_path / "host")
    first = start_agent("2xA100-80GB:mig", state)
    made = first.call("mig.apply", gpu=1, profile="3g.40gb")["instance"]
    before = first.call("inventory")
    assert first.close() == 0
    second = start_agent(None, state)
    assert second.call("inventory") == before
    assert instances(second, 1)[0]["uuid"] == made["uuid"]


def test_a_failed_step_rolls_back_and_reports_the_nvml_error(start_agent):
    agent = start_agent("1xA100-80GB:mig")
    idle = agent.call("mig.apply", gpu=0, profile="3g.40gb")["instance"]
    agent.call("mig.apply", gpu=0, profile="3g.40gb")
    before = {(i["profile"], i["start"]) for i in instances(agent)}
    agent.call("sim.fault", function="nvmlGpuInstanceCreateComputeInstance",
               error="NVML_ERROR_UNKNOWN")
    with pytest.raises(AgentError) as err:
        agent.call("mig.apply", gpu=0, profile="4g.40gb", destroy_idle=True)
    assert err.value.code == rpc.NVML_FAILED
    assert err.value.data["function"] == "nvmlGpuInstanceCreateComputeInstance"
    assert err.value.data["nvml_error"] == "NVML_ERROR_UNKNOWN"
    assert err.value.data["rolled_back"] is True
    assert "undone" in err.value.message
    assert {(i["profile"], i["start"]) for i in instances(agent)} == before
    assert idle["start"] in {i["start"] for i in instances(agent)}


def test_snapshot_reports_memory_and_says_mig_utilisation_is_not_reported(start_agent):
    agent = start_agent("1xA100-80GB:mig,1xL4")
    inst = agent.call("mig.apply", gpu=0, profile="2g.20gb")["instance"]
    agent.call("sim.add_process", gpu=0, instance=inst["uuid"], used_mib=3000)
    agent.call("sim.add_process", gpu=1, used_mib=5000, util=40)
    snap = agent.call("snapshot")
    mig_gpu, l4 = snap["gpus"]
    assert mig_gpu["utilization_gpu"] is None and "MIG" in mig_gpu["utilization_note"]
    assert mig_gpu["instances"][0]["memory_used_mib"] == 3000
    assert mig_gpu["instances"][0]["busy"] is True
    assert mig_gpu["processes"][0]["instance"] == inst["uuid"]
    assert l4["utilization_gpu"] == 40 and l4["memory_used_mib"] == 5000
    assert l4["processes"][0]["used_mib"] == 5000 and l4["processes"][0]["instance"] is None
