"""A confirmed MIG plan asked again after its first apply failed and was rolled back.

The rollback makes the idle instances the change destroyed again at their places, and the GPU
gives them new ids (here: the fake's lowest free GPU-instance ids, a gap left lower down by an
instance destroyed before). A plan is pinned to the layout it was made on by its version; the
version once digested those ids, so the very plan the admin confirmed was refused as stale at
its retry, and a launch's own retry of a passing fault refused itself. The GPU as planned — the
same profiles at the same places, the instances the plan destroys still idle — takes the plan,
once; a GPU that really changed refuses it, saying what changed.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Dict, List, Tuple

import pytest

from fractui.config import QueueConfig
from fractui.fleet.client import AgentCallError
from fractui.fleet.host import AnswerLost
from fractui.mig_by_hand import carry_out
from fractui.sched.mig_change import MigChange, plan_create
from fractui.store.intents import Asker
from remote_agent.gpu.models import mig_geometry
from remote_agent.mig import journal
from remote_agent.mig.apply import Change
from remote_agent.mig.journal import MigJournal
from remote_agent.mig.layout import Instance, Layout
from remote_agent.rpc import jsonrpc as rpc
from tests import localfleet
from tests.conftest import AgentError
from tests.test_jobs import script
from tests.test_mig_degraded import restart
from tests.test_mig_killed import daemon_log, kill_inside
from tests.test_mig_launch_retry import CREATE_CI
from tests.test_preview import place_previewed, wait_snapshot

local_fleet = localfleet.local_fleet
SMALL = QueueConfig(name="small", mig="1g.10gb")
CREATE = {"gpu": 0, "profile": "3g.40gb", "destroy_idle": True}
PLANNED = [("1g.10gb", 0), ("3g.40gb", 4)]


def instances(call) -> List[Dict[str, Any]]:
    return call("snapshot", {})["gpus"][0]["instances"]


def places(found: List[Dict[str, Any]]) -> List[Tuple[str, int]]:
    return sorted((i["profile"], i["start"]) for i in found)


def laid_out(call) -> None:
    """An H100 with 1g.10gb at slot 0 in use (a process on it), 2g.20gb at slot 4 and 1g.10gb
    at slot 6 idle, and GPU-instance id 2 free below theirs (1g.10gb at slot 1, made and
    destroyed): a 3g.40gb at slot 4 destroys the two idle ones, which a rollback then makes
    again with other ids."""
    made = {start: call("mig.apply", {"gpu": 0, "profile": profile, "start": start})["instance"]
            for profile, start in (("1g.10gb", 0), ("1g.10gb", 1), ("2g.20gb", 4),
                                   ("1g.10gb", 6))}
    call("mig.destroy", {"gpu": 0, "instance": made[1]["uuid"]})
    call("sim.add_process", {"gpu": 0, "used_mib": 100, "instance": made[0]["uuid"]})


def failed_once(f, call) -> Tuple[MigChange, List[Dict[str, Any]], List[Dict[str, Any]]]:
    """The plan for a 3g.40gb, confirmed, and its first apply failed (the compute instance of
    the new GPU instance) and rolled back: (the plan, the instances before, after the
    rollback)."""
    laid_out(call)
    before = instances(call)
    change = plan_create("gpu-a", CREATE, call("mig.plan", CREATE))
    call("sim.fault", {"function": CREATE_CI, "error": "NVML_ERROR_UNKNOWN"})
    with pytest.raises(AgentCallError) as first:
        carry_out(f.store, Asker("tui"), call, change)
    assert first.value.code == rpc.NVML_FAILED
    assert "every step already done was undone; the GPU is as it was" in str(first.value)
    rolled_back = instances(call)
    assert places(rolled_back) == places(before)
    remade = [i for i in rolled_back if i["start"] in (4, 6)]
    # the premise: the idle instances are made again with new ids, and new MIG uuids
    assert {(i["start"], i["gi_id"]) for i in remade}.isdisjoint(
        (i["start"], i["gi_id"]) for i in before)
    assert {i["uuid"] for i in remade}.isdisjoint(i["uuid"] for i in before)
    return change, before, rolled_back


def test_a_confirmed_plan_rolled_back_once_applies_once_exactly_as_planned(local_fleet):
    f = local_fleet({"gpu-a": "1xH100:mig"}, [SMALL])
    call = f.fleet.session("gpu-a").call
    change, before, _ = failed_once(f, call)
    assert change.text.startswith("on gpu-a gpu 0: destroy idle 2g.20gb at slot 4 (MIG-")
    assert f.store.audit_log() == []  # rolled back: nothing to audit

    said, answer = carry_out(f.store, Asker("tui"), call, change)  # the same plan, again
    assert places(answer["destroy"]) == [("1g.10gb", 6), ("2g.20gb", 4)]
    assert said.startswith("created 3g.40gb at slot 4 on gpu-a gpu 0: MIG-")
    now = instances(call)
    assert places(now) == PLANNED
    busy = next(i for i in before if i["start"] == 0)
    assert next(i for i in now if i["start"] == 0)["uuid"] == busy["uuid"]  # it ran on
    assert next(i for i in now if i["start"] == 0)["pids"] == busy["pids"]
    assert [e.why for e in f.store.audit_log()] == [said]

    with pytest.raises(AgentCallError) as third:  # made: asked once more, it is stale
        carry_out(f.store, Asker("tui"), call, change)
    assert third.value.code == rpc.STALE_LAYOUT
    assert "2g.20gb at slot 4 gone, 1g.10gb at slot 6 gone, 3g.40gb at slot 4 made" in str(
        third.value), third.value
    assert places(instances(call)) == PLANNED
    assert len(f.store.audit_log()) == 1


@pytest.mark.parametrize("change_of_gpu", ["a process on 1g.10gb at slot 6",
                                           "1g.10gb at slot 6 destroyed"])
def test_a_confirmed_plan_is_refused_where_the_gpu_really_changed_saying_what(
        local_fleet, change_of_gpu):
    f = local_fleet({"gpu-a": "1xH100:mig"}, [SMALL])
    call = f.fleet.session("gpu-a").call
    change, _, rolled_back = failed_once(f, call)
    at6 = next(i for i in rolled_back if i["start"] == 6)
    if change_of_gpu.startswith("a process"):
        pid = call("sim.add_process", {"gpu": 0, "used_mib": 100, "instance": at6["uuid"]})[
            "pid"]
        words = "1g.10gb at slot 6 (%s, made again in place of %s by a rolled-back change), " \
                "pid %d, in the way of the plan, is in use: a plan destroys only idle " \
                "instances" % (at6["uuid"], ", ".join(at6["remade_of"]), pid)
    else:
        call("mig.destroy", {"gpu": 0, "instance": at6["uuid"]})
        words = "changed since the plan was made (version %s, now " % (
            change.params["layout_version"])
    held = instances(call)
    with pytest.raises(AgentCallError) as err:
        carry_out(f.store, Asker("tui"), call, change)
    assert err.value.code == (rpc.INSTANCE_BUSY if change_of_gpu.startswith("a process") else
                              rpc.STALE_LAYOUT)  # the layout the same: what is, not stale
    assert words in str(err.value), err.value
    if not change_of_gpu.startswith("a process"):
        assert str(err.value).endswith("): 1g.10gb at slot 6 gone; plan again"), err.value
    assert instances(call) == held
    assert f.store.audit_log() == []


def test_a_pinned_launch_is_made_when_a_passing_fault_rolled_its_first_try_back(start_agent,
                                                                                 tmp_path):
    """A placement previewed on the layout (``layout_version``, as the scheduler launches one
    placed by hand): its launch meets a passing fault, the try is undone and its idle instances
    made again with new ids, and the next try of the same launch makes it (it refused itself
    as stale)."""
    agent = start_agent("1xH100:mig", str(tmp_path / "host"))
    laid_out(lambda method, params: agent.call(method, **params))
    version = agent.call("snapshot")["gpus"][0]["layout_version"]
    agent.call("sim.fault", function=CREATE_CI, error="NVML_ERROR_TIMEOUT", count=1)
    job = agent.call("job.launch", key="k-pinned", gpu=0, argv=script("import time\n"
                                                                      "time.sleep(60)"),
                     mig={"profile": "3g.40gb", "start": 4, "destroy_idle": True,
                          "layout_version": version})
    assert job["state"] == "running"
    now = agent.call("snapshot")["gpus"][0]["instances"]
    assert places(now) == PLANNED
    assert next(i for i in now if i["start"] == 4)["uuid"] == job["instance"]


def test_a_pinned_launch_whose_idle_instance_in_the_way_is_in_use_now_is_refused_as_busy(
        start_agent, tmp_path):
    """A placement previewed on the layout destroys the idle 1g.10gb at slot 6; a process
    started there since, the layout the same: the launch is refused as INSTANCE_BUSY, naming
    it and the layout (the scheduler has it placed again, no refusal counted), and nothing is
    recorded or touched. Not stale: the layout is the one the version names."""
    agent = start_agent("1xH100:mig", str(tmp_path / "host"))
    laid_out(lambda method, params: agent.call(method, **params))
    version = agent.call("snapshot")["gpus"][0]["layout_version"]
    held = agent.call("snapshot")["gpus"][0]["instances"]
    at6 = next(i for i in held if i["start"] == 6)
    pid = agent.call("sim.add_process", gpu=0, used_mib=100, instance=at6["uuid"])["pid"]
    with pytest.raises(AgentError) as err:
        agent.call("job.launch", key="k-busy", gpu=0, argv=script("import time\n"
                                                                  "time.sleep(60)"),
                   mig={"profile": "3g.40gb", "start": 4, "destroy_idle": True,
                        "layout_version": version})
    assert err.value.code == rpc.INSTANCE_BUSY
    assert "1g.10gb at slot 6 (%s), pid %d, in the way of the plan, is in use: a plan destroys " \
           "only idle instances, and one in use is never destroyed; the layout is the one " \
           "planned on (version %s)" % (at6["uuid"], pid, version) in err.value.message, \
        err.value.message
    now = agent.call("snapshot")["gpus"][0]
    assert [i["uuid"] for i in now["instances"]] == [i["uuid"] for i in held]
    assert err.value.data["layout_version"] == version  # and the layout, as a stale one says
    assert [(i["uuid"], i["busy"], i["pids"]) for i in err.value.data["instances"]] == [
        (i["uuid"], i["busy"], i["pids"]) for i in now["instances"]]
    assert agent.call("job.list")["jobs"] == []


def test_a_confirmed_plan_cut_short_by_the_agents_death_applies_once_rolled_back(start_agent,
                                                                                 tmp_path):
    """The daemon killed (kill -9) inside the plan's change: the next one rolls it back from
    its journal, making the idle instances again with new ids; the plan, asked again as it was
    confirmed, is made."""
    state = str(tmp_path / "host")
    agent = start_agent("1xH100:mig", state)
    laid_out(lambda method, params: agent.call(method, **params))
    before = agent.call("snapshot")["gpus"][0]["instances"]
    plan = agent.call("mig.plan", **CREATE)
    asked = dict(CREATE, start=plan["start"], layout_version=plan["layout_version"])
    kill_inside(agent, state, tmp_path, CREATE_CI, "mig.apply", **asked)
    later = start_agent(None, state)
    rolled_back = later.call("snapshot")["gpus"][0]["instances"]
    assert places(rolled_back) == places(before)
    assert {i["gi_id"] for i in rolled_back} != {i["gi_id"] for i in before}
    made = later.call("mig.apply", **asked)
    assert places(made["destroy"]) == [("1g.10gb", 6), ("2g.20gb", 4)]
    assert places(later.call("snapshot")["gpus"][0]["instances"]) == PLANNED


def test_a_placement_previewed_before_a_change_rolled_back_on_its_gpu_runs_as_previewed(
        local_fleet):
    """The scheduler's launch of a placement by hand, pinned to the layout it was previewed on
    (``place --layout-version``, the TUI's preview): another change on the GPU meanwhile failed
    and was rolled back, its idle instances made again with new ids; the job runs where it was
    previewed (it went back to its queue: "the GPU changed since the placement was
    previewed")."""
    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [QueueConfig(name="3g", mig="3g.40gb")])
    a = f.fleet.session("gpu-a")
    made = [a.call("mig.apply", {"gpu": 0, "profile": "1g.10gb", "start": s})["instance"]
            for s in (0, 4, 5)]
    a.call("mig.destroy", {"gpu": 0, "instance": made[0]["uuid"]})  # GPU-instance id 1 free
    wait_snapshot(f, "gpu-a", lambda s: places(s["gpus"][0]["instances"]) == [
        ("1g.10gb", 4), ("1g.10gb", 5)])
    job = place_previewed(f, 4)  # destroys the idle 1g.10gb at slots 4 and 5
    assert f.store.get(job.id).slot.layout_version is not None
    a.call("sim.fault", {"function": CREATE_CI, "error": "NVML_ERROR_UNKNOWN"})
    with pytest.raises(AgentCallError):  # someone else's change there, undone
        a.call("mig.apply", {"gpu": 0, "profile": "2g.20gb", "start": 4, "destroy_idle": True})
    remade = a.call("snapshot", {})["gpus"][0]["instances"]
    assert places(remade) == [("1g.10gb", 4), ("1g.10gb", 5)]
    assert {(i["start"], i["gi_id"]) for i in remade}.isdisjoint(
        (i["start"], i["gi_id"]) for i in made[1:])
    wait_snapshot(f, "gpu-a", lambda s: {i["uuid"] for i in s["gpus"][0]["instances"]} == {
        i["uuid"] for i in remade})
    f.scheduler.step()
    f.scheduler.settle()  # the pass's launch runs on the host's lane
    launched = f.store.get(job.id)
    assert (launched.state, launched.attempt) in (("placed", 0), ("running", 0)), \
        launched.reason
    f.until(lambda: f.store.get(job.id).state == "running")
    record = next(r for r in f.agent_jobs() if r["key"] == job.key(f.store.uid))
    assert (record["mig"]["profile"], record["mig"]["start"]) == ("3g.40gb", 4)


def test_a_version_given_by_hand_whose_start_was_in_use_already_is_refused_as_busy(
        local_fleet):
    """``fractui place --layout-version`` with the version status shows and a start of the
    admin's own, an instance in its way in use all along: the layout is the one the version
    names, so nothing is stale. The launch was refused as STALE_LAYOUT, and the job went back
    to its queue saying "the GPU changed since the placement was previewed"; it is refused
    with the true reason, the instance in use (INSTANCE_BUSY), said as such, and goes back to
    its queue as before (no refusal counted against the host), nothing touched."""
    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [SMALL])
    a = f.fleet.session("gpu-a")
    busy = a.call("mig.apply", {"gpu": 0, "profile": "3g.40gb", "start": 0})["instance"]
    pid = a.call("sim.add_process", {"gpu": 0, "used_mib": 100, "instance": busy["uuid"]})[
        "pid"]
    version = a.call("snapshot", {})["gpus"][0]["layout_version"]
    job = f.submit("small")
    done = f.fractui("place", str(job.id), "gpu-a", "0", "--profile", "1g.10gb", "--start",
                     "0", "--layout-version", version)
    assert done.returncode == 0, done.stderr
    f.scheduler.step()
    f.scheduler.settle()  # the pass's launch runs on the host's lane
    back = f.store.get(job.id)
    assert (back.state, back.refusals) == ("pending", ()), back
    assert back.reason == (
        "not launched: an instance in the way of the placement is in use (3g.40gb at slot 0 "
        "(%s), pid %d, in the way of the plan, is in use: a plan destroys only idle "
        "instances, and one in use is never destroyed; the layout is the one planned on "
        "(version %s), and whether an instance is in use is no part of a version); place it "
        "again" % (busy["uuid"], pid, version)), back.reason
    assert [(i["uuid"], i["pids"]) for i in a.call("snapshot", {})["gpus"][0]["instances"]] \
        == [(busy["uuid"], [pid])]
    assert [r for r in f.agent_jobs() if r["key"] == job.key(f.store.uid)] == []


def test_a_confirmed_plan_applied_after_a_rollback_says_what_it_destroyed_as_it_was(
        local_fleet):
    """The plan confirmed named the idle instances it destroys by their uuids; a rollback made
    them again with others, and the plan, asked again, destroyed those. What was said and
    audited was "created ...", naming none: the words the admin was left with were the
    plan's, of uuids no longer there. The outcome names what was destroyed, by the uuids it
    had, each made again in place of the one the plan named."""
    f = local_fleet({"gpu-a": "1xH100:mig"}, [SMALL])
    call = f.fleet.session("gpu-a").call
    change, before, rolled_back = failed_once(f, call)
    said, answer = carry_out(f.store, Asker("tui"), call, change)
    old = {i["start"]: i["uuid"] for i in before}
    new = {i["start"]: i["uuid"] for i in rolled_back}
    made = answer["instance"]["uuid"]
    assert said == (
        "created 3g.40gb at slot 4 on gpu-a gpu 0: %s; destroyed idle 2g.20gb at slot 4 (%s, "
        "made again in place of %s by a rolled-back change), 1g.10gb at slot 6 (%s, made "
        "again in place of %s by a rolled-back change)" % (made, new[4], old[4], new[6],
                                                            old[6])), said
    assert [e.why for e in f.store.audit_log()] == [said]


def test_a_destroy_cut_short_by_the_agents_death_is_retried_on_the_instance_made_again(
        start_agent, tmp_path):
    """The daemon killed (kill -9) once the instance's compute instance was destroyed: the next
    one rolls the destroy back from its journal, making the idle instance again with a new uuid.
    The destroy asked again with the uuid it was asked with destroys that one (it was
    refused, "no MIG instance"), its answer saying in place of which it was made."""
    state = str(tmp_path / "host")
    agent = start_agent("1xH100:mig", state)
    old = agent.call("mig.apply", gpu=0, profile="3g.40gb", start=4)["instance"]["uuid"]
    kill_inside(agent, state, tmp_path, "nvmlComputeInstanceDestroy", "mig.destroy",
                after=True, gpu=0, instance=old)
    later = start_agent(None, state)
    (again,) = later.call("snapshot")["gpus"][0]["instances"]
    assert (again["profile"], again["start"], again["remade_of"]) == ("3g.40gb", 4, [old])
    done = later.call("mig.destroy", gpu=0, instance=old)
    assert (done["destroyed"]["uuid"], done["destroyed"]["remade_of"]) == (again["uuid"], [old])
    assert later.call("snapshot")["gpus"][0]["instances"] == []


def linked(found) -> List[Tuple[int, str, List[str]]]:
    """Instance records by what names them: start, uuid and the uuids it was made again in
    place of."""
    return sorted((i["start"], i["uuid"], i.get("remade_of", [])) for i in found)


def rolled_back_destroy(agent, uuid: str) -> Dict[str, Any]:
    """A destroy of the idle instance ``uuid`` that fails once its GPU instance is gone, and
    is rolled back: the instance the rollback made again, as the snapshot says it."""
    agent.call("sim.fault", function="nvmlGpuInstanceDestroy", error="NVML_ERROR_UNKNOWN",
               after=True)
    with pytest.raises(AgentError, match="as it was"):
        agent.call("mig.destroy", gpu=0, instance=uuid)
    (again,) = agent.call("snapshot")["gpus"][0]["instances"]
    return again


def test_a_destroy_rolled_back_before_the_agents_restart_is_retried_on_the_instance_made_again(
        start_agent, tmp_path):
    """The links of the instances made again outlive the daemon (killed -9 here): a retry of a
    destroy rolled back before the restart, naming the uuid it named, destroys the instance
    made again in its place. They lived in the daemon's memory alone, and the retry was
    refused as of an unknown instance. A rollback after the restart adds to a chain read
    back, and what it adds is kept too."""
    state = tmp_path / "host"
    agent = start_agent("1xH100:mig", str(state))
    old = agent.call("mig.apply", gpu=0, profile="1g.10gb", start=6)["instance"]["uuid"]
    again = rolled_back_destroy(agent, old)
    assert again["remade_of"] == [old]
    later = restart(agent, start_agent, state)
    assert later.call("snapshot")["gpus"][0]["instances"] == [again]
    assert (state / "mig-made-again.json").stat().st_mode & 0o777 == 0o600
    with pytest.raises(AgentError) as stale:  # a stale plan's refusal names it so too
        later.call("mig.apply", gpu=0, profile="1g.10gb", start=0, layout_version="0" * 12)
    assert stale.value.code == rpc.STALE_LAYOUT
    assert linked(stale.value.data["instances"]) == linked([again])
    twice = rolled_back_destroy(later, old)  # the old uuid: the one made in its place
    assert twice["remade_of"] == [old, again["uuid"]]
    last = restart(later, start_agent, state)
    done = last.call("mig.destroy", gpu=0, instance=old)
    assert (done["destroyed"]["uuid"], done["destroyed"]["remade_of"]) == (
        twice["uuid"], [old, again["uuid"]])
    assert last.call("snapshot")["gpus"][0]["instances"] == []


def test_a_destroy_rolled_back_in_process_then_killed_before_the_link_is_kept(start_agent,
                                                                               tmp_path):
    """The daemon killed (-9) once its rollback of a failed destroy had made the instance
    again (a new uuid), before it kept the link: the next daemon finds the GPU as it was but
    for the uuid, and its journal's entry. It read "as it was" as "changed nothing", linked
    nothing, and the destroy asked again with the old uuid was refused as of an unknown
    instance; now it links the one made again and says so (a daemon killed in its own
    startup rollback, after the instance was made again, leaves the very same)."""
    state = tmp_path / "host"
    agent = start_agent("1xH100:mig", str(state))
    old = agent.call("mig.apply", gpu=0, profile="1g.10gb", start=6)["instance"]["uuid"]
    agent.call("sim.fault", function="nvmlGpuInstanceDestroy", error="NVML_ERROR_UNKNOWN",
               after=True)
    kill_inside(agent, str(state), tmp_path, "nvmlGpuInstanceCreateComputeInstance",
                "mig.destroy", after=True, gpu=0, instance=old)
    later = start_agent(None, str(state))
    (again,) = later.call("snapshot")["gpus"][0]["instances"]
    assert again["uuid"] != old
    assert again.get("remade_of") == [old], again
    said = daemon_log(str(state))
    assert "was made and undone before the agent stopped: the GPU is as it was, with " \
        "1g.10gb at slot 6 (%s, made again in place of %s by a rolled-back change)" % (
            again["uuid"], old) in said, said
    assert "before it changed anything" not in said
    assert later.call("mig.destroy", gpu=0, instance=old)["destroyed"]["uuid"] == again["uuid"]


def test_a_rollback_killed_after_its_links_were_kept_loses_none_of_its_chain(start_agent,
                                                                            tmp_path):
    """The daemon killed (-9) after it kept the links of a rollback, before its journal let
    the change go: the next daemon sees that rollback again, and an instance made again twice
    still stands for both uuids (seen again, the chain was cut to the last one, and a retry
    naming the first was refused as of an unknown instance)."""
    state = tmp_path / "host"
    agent = start_agent("1xH100:mig", str(state))
    old = agent.call("mig.apply", gpu=0, profile="1g.10gb", start=6)["instance"]["uuid"]
    again = rolled_back_destroy(agent, old)
    twice = rolled_back_destroy(agent, old)
    gpu = agent.call("inventory")["gpus"][0]
    os.kill(agent.call("daemon.version")["pid"], signal.SIGKILL)
    agent.proc.wait(timeout=10)
    geo = mig_geometry(gpu["name"])
    gone = Instance(gi_id=again["gi_id"], profile="1g.10gb", start=6, size=1,
                    compute_slices=1, uuid=again["uuid"])
    MigJournal(str(state / "mig-changes")).begin(0, gpu["uuid"], Layout(geo, (gone,)), Change(
        "destroying idle %s" % gone.label(), destroy=(gone,)))  # as the second destroy left it
    later = start_agent(None, str(state))
    assert [i["remade_of"] for i in later.call("snapshot")["gpus"][0]["instances"]] == [
        [old, again["uuid"]]]
    assert "was made and undone before the agent stopped" in daemon_log(str(state))
    done = later.call("mig.destroy", gpu=0, instance=old)["destroyed"]
    assert (done["uuid"], done["remade_of"]) == (twice["uuid"], [old, again["uuid"]])


def test_a_damaged_file_of_links_loses_nothing_else_and_is_kept_anew(start_agent, tmp_path):
    """The file of links damaged while no daemon ran, and a destroy cut short by the daemon's
    death in the journal: the next daemon says the damaged file in its log, sets it aside,
    and still rolls the destroy back and links the instance it makes again, which it keeps in
    a new file; the daemon after it reads that one."""
    state = tmp_path / "host"
    agent = start_agent("1xH100:mig", str(state))
    old = agent.call("mig.apply", gpu=0, profile="3g.40gb", start=4)["instance"]["uuid"]
    kill_inside(agent, str(state), tmp_path, "nvmlComputeInstanceDestroy", "mig.destroy",
                after=True, gpu=0, instance=old)
    kept = state / "mig-made-again.json"
    kept.write_text('{"version": 2, "boot": "%s", "kept": [{"uuid": "MIG-' % journal.boot_id())
    later = start_agent(None, str(state))
    (again,) = later.call("snapshot")["gpus"][0]["instances"]
    assert (again["profile"], again["start"], again["remade_of"]) == ("3g.40gb", 4, [old])
    said = daemon_log(str(state))
    assert " ERROR %s (the links of the MIG instances made again) is damaged (" % kept in said
    assert "; set aside as %s.damaged, and a retry of a change rolled back before the " \
        "agent's restart" % kept in said, said
    last = restart(later, start_agent, state)
    assert last.call("snapshot")["gpus"][0]["instances"] == [again]
    assert last.call("mig.destroy", gpu=0, instance=old)["destroyed"]["uuid"] == again["uuid"]


def test_a_plan_and_every_answer_name_an_instance_made_again_with_the_uuids_it_replaced(
        local_fleet):
    """After a rollback made idle instances again, the plan (``mig.plan``: its records and its
    words, which the admin confirms) and the audit of a change whose answer was lost named
    them by their new uuids alone, where the snapshot, ``mig.destroy``
    and a create's answer say in place of which uuids each was made: the words of one change
    named its instances two ways. Now each says the uuids an instance has now, and those it
    was made again in place of."""
    f = local_fleet({"gpu-a": "1xH100:mig"}, [SMALL])
    call = f.fleet.session("gpu-a").call
    _, before, rolled_back = failed_once(f, call)
    old = {i["start"]: i["uuid"] for i in before}
    new = {i["start"]: i for i in rolled_back}
    assert [new[s]["remade_of"] for s in (4, 6)] == [[old[4]], [old[6]]]
    plan = call("mig.plan", CREATE)
    assert linked(plan["destroy"]) == linked([new[4], new[6]])
    words = "destroy idle 2g.20gb at slot 4 (%s, made again in place of %s by a rolled-back " \
            "change); destroy idle 1g.10gb at slot 6 (%s, made again in place of %s by a " \
            "rolled-back change); create 3g.40gb at slot 4" % (
                new[4]["uuid"], old[4], new[6]["uuid"], old[6])
    assert plan["description"].startswith(words), plan["description"]
    change = plan_create("gpu-a", CREATE, plan)

    def lost(method: str, params: Dict[str, Any]) -> Any:
        raise AnswerLost("gpu-a", method, "connection reset")
    with pytest.raises(AnswerLost):
        carry_out(f.store, Asker("tui"), lost, change)
    (entry,) = f.store.audit_log()
    assert entry.why.startswith("asked to on gpu-a gpu 0: %s" % words), entry.why


def test_every_refusal_naming_an_instance_made_again_says_the_uuids_it_replaced(start_agent,
                                                                                tmp_path):
    """The words of a refusal naming an idle instance a rollback made again — the plan that
    would destroy it, MIG off that destroyed it and could not make it again — say the uuid
    it was made again in place of, as its records do: they named its new uuid alone, so the
    admin who retries with the old one could not tell it was that one."""
    agent = start_agent("1xH100:mig", str(tmp_path / "host"))
    old = agent.call("mig.apply", gpu=0, profile="1g.10gb", start=6)["instance"]["uuid"]
    again = rolled_back_destroy(agent, old)
    words = "1g.10gb at slot 6 (%s, made again in place of %s by a rolled-back change)" % (
        again["uuid"], old)
    with pytest.raises(AgentError) as room:
        agent.call("mig.apply", gpu=0, profile="7g.80gb")
    assert "destroying idle %s would make room" % words in room.value.message, room.value
    agent.call("sim.fault", function="nvmlDeviceSetMigMode", error="NVML_ERROR_TIMEOUT",
               after=True)
    agent.call("sim.fault", function="nvmlDeviceSetMigMode", error="NVML_ERROR_UNKNOWN",
               count=100)
    with pytest.raises(AgentError) as off:
        agent.call("mig.set_mode", gpu=0, enabled=False, destroy_idle=True)
    assert "its idle instances, destroyed first, are not made again: %s)" % words in \
        off.value.message, off.value


def test_a_launch_on_an_instance_a_rollback_made_again_names_the_one_in_its_place(
        start_agent, tmp_path):
    """A launch onto an idle instance by its uuid, after a failed destroy of it was rolled
    back (made again, a new uuid): refused as before — the job asked for that uuid, and would
    run on it — but saying which instance stands in its place, where it said only "no MIG
    instance"."""
    agent = start_agent("1xH100:mig", str(tmp_path / "host"))
    old = agent.call("mig.apply", gpu=0, profile="1g.10gb", start=6)["instance"]["uuid"]
    agent.call("sim.fault", function="nvmlGpuInstanceDestroy", error="NVML_ERROR_UNKNOWN",
               after=True)
    with pytest.raises(AgentError, match="as it was"):
        agent.call("mig.destroy", gpu=0, instance=old)
    (again,) = agent.call("snapshot")["gpus"][0]["instances"]
    with pytest.raises(AgentError) as err:
        agent.call("job.launch", key="k-old", gpu=0, instance=old,
                   argv=script("import time\ntime.sleep(60)"))
    assert err.value.code == rpc.INSTANCE_NOT_FOUND
    assert err.value.message == (
        "no MIG instance %s on GPU 0; in its place stands 1g.10gb at slot 6 (%s, made again in "
        "place of %s by a rolled-back change): launch the job on that one" % (
            old, again["uuid"], old)), err.value.message
    assert agent.call("job.list")["jobs"] == []


def test_an_instance_made_again_twice_stands_for_both_uuids_and_nothing_else_is_linked():
    """``MadeAgain`` by itself: a rollback's layouts before and after link the instance made
    again at a place to the one gone from it; made again once more, it stands for both. An
    instance that stayed, or one made where none was gone, is linked to nothing."""
    from remote_agent.gpu import models
    from remote_agent.mig.layout import Instance, Layout
    from remote_agent.mig.made_again import MadeAgain

    geo = models.model("H100").geometry()

    def at(uuid: str, profile: str = "1g.10gb", start: int = 6) -> Instance:
        prof = geo.profile(profile)
        return Instance(1, profile, start, prof.size, prof.compute_slices, uuid=uuid)

    kept = at("MIG-k", "3g.40gb", 0)
    seen = MadeAgain()
    seen.saw(Layout(geo, (kept, at("MIG-a"))), Layout(geo, (kept, at("MIG-b"))))
    seen.saw(Layout(geo, (kept, at("MIG-b"))), Layout(geo, (kept, at("MIG-c"),
                                                          at("MIG-n", "1g.10gb", 5))))
    assert (seen.of("MIG-c"), seen.of("MIG-b"), seen.of("MIG-k"), seen.of("MIG-n")) == (
        ("MIG-a", "MIG-b"), (), (), ())
    assert seen.standing_for("MIG-a", (kept, at("MIG-c"))) == at("MIG-c")
    assert seen.standing_for("MIG-k", (kept, at("MIG-c"))) is None


def test_made_again_keeps_the_latest_links_and_the_latest_uuids_of_a_long_chain():
    """``MadeAgain`` is bounded: the ``keep`` latest instances made again, and of one made
    again at the same place rollback after rollback, the ``chain`` latest uuids it stands for
    (the one a retry names is the last it saw). A chain grew by a uuid at each rollback, for
    as long as the daemon ran, and went out in each snapshot's record of the instance (an
    admin keeps the first 256 of a list: the newest, the one retried, was left out)."""
    from remote_agent.gpu import models
    from remote_agent.mig.layout import Instance, Layout
    from remote_agent.mig.made_again import MadeAgain

    geo = models.model("H100").geometry()

    def at(uuid: str, start: int = 6) -> Layout:
        prof = geo.profile("1g.10gb")
        return Layout(geo, (Instance(1, "1g.10gb", start, prof.size, prof.compute_slices,
                                     uuid=uuid),))

    seen = MadeAgain(keep=2, chain=3)
    for n in range(1000):  # the same place, rolled back 1000 times
        seen.saw(at("MIG-%d" % n), at("MIG-%d" % (n + 1)))
    assert seen.of("MIG-1000") == ("MIG-997", "MIG-998", "MIG-999")
    seen.saw(at("MIG-x", 5), at("MIG-y", 5))
    seen.saw(at("MIG-p", 4), at("MIG-q", 4))
    assert (seen.of("MIG-1000"), seen.of("MIG-y"), seen.of("MIG-q")) == (
        (), ("MIG-x",), ("MIG-p",))


def test_made_again_kept_is_read_back_bounded_as_kept_in_memory(tmp_path):
    """``MadeAgain`` with a path keeps its links there as it links them (before ``saw``
    returns), and one made on the path reads them back: the ``keep`` latest, each with its
    ``chain`` latest uuids, as it would have kept them itself."""
    from remote_agent.gpu import models
    from remote_agent.mig.layout import Instance, Layout
    from remote_agent.mig.made_again import MadeAgain

    geo = models.model("H100").geometry()

    def at(uuid: str, start: int) -> Layout:
        prof = geo.profile("1g.10gb")
        return Layout(geo, (Instance(1, "1g.10gb", start, prof.size, prof.compute_slices,
                                     uuid=uuid),))

    path = str(tmp_path / "mig-made-again.json")
    seen = MadeAgain(path=path)
    for n in range(3):  # slot 6 made again three times, then slots 5 and 4 once
        seen.saw(at("MIG-6.%d" % n, 6), at("MIG-6.%d" % (n + 1), 6))
    seen.saw(at("MIG-5.0", 5), at("MIG-5.1", 5))
    seen.saw(at("MIG-4.0", 4), at("MIG-4.1", 4))
    again = MadeAgain(path=path)
    assert [again.of("MIG-%s" % u) for u in ("6.3", "5.1", "4.1")] == [
        ("MIG-6.0", "MIG-6.1", "MIG-6.2"), ("MIG-5.0",), ("MIG-4.0",)]
    assert MadeAgain(keep=3, chain=2, path=path).of("MIG-6.3") == ("MIG-6.1", "MIG-6.2")
    short = MadeAgain(keep=2, chain=2, path=path)
    assert [short.of("MIG-%s" % u) for u in ("6.3", "5.1", "4.1")] == [
        (), ("MIG-5.0",), ("MIG-4.0",)]
    short.saw(at("MIG-6.3", 6), at("MIG-6.4", 6))  # linked anew: kept, the oldest left out
    assert [MadeAgain(path=path).of("MIG-%s" % u) for u in ("6.4", "5.1", "4.1")] == [
        ("MIG-6.3",), (), ("MIG-4.0",)]
