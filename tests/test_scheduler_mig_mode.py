"""The scheduler changes an idle GPU's MIG mode when a decision needs it, end to end: simulated
hosts over the local transport (real agent daemons, real job processes), a real SQLite store.

A decision's slot says the mode its GPU must be in (a MIG profile: on; a share: off); the lease
holder has the agent change it before the launch — resetting the GPU where the mode waits for a
reset — and audits it as a MIG change, never on a GPU something uses. The first tests record
the decision as the placement core records one (``Store.place``, not by hand), to try the
executor on GPUs the placer would not choose; the last ones run whole passes, the placer
deciding the change."""

from __future__ import annotations

import dataclasses
import json
import re
import time

import pytest

from fractui.config import QueueConfig
from fractui.scheduler.backoff import ModeBackoff
from fractui.scheduler import Scheduler
from fractui.store import Slot, StoreError, open_store
from fractui.terminal import NO_TERMINAL
from tests import localfleet
from tests.cli_run import in_process
from tests.test_scheduler_config_change import member

local_fleet = localfleet.local_fleet
SLICE = QueueConfig(name="slice", mig="3g.40gb", isolation="mig")
SHARE = QueueConfig(name="share", memory_gib=10, isolation="share")
HOUR = 3600.0


def mig_on_pending(f) -> None:
    """gpu-a's GPU 0 asked to turn MIG on, the change waiting for a GPU reset, until the store
    keeps it pending (as an A100's is, by NVML)."""
    session = f.fleet.session("gpu-a")
    session.call("sim.mode_waits_for_reset", {"gpu": 0})
    session.call("mig.set_mode", {"gpu": 0, "enabled": True})
    f.until(lambda: (f.store.inventory().get("gpu-a", {}).get("gpus") or [{}])[0].get(
        "mig_pending"))


def gpu(f, host: str, index: int) -> dict:
    return f.fleet.session(host).call("snapshot")["gpus"][index]


def decide(f, job, slot: Slot) -> None:
    """The decision the placer would record for ``job`` (a scheduler's, not by hand)."""
    f.store.place(job.id, slot, "test", "decided: %s" % slot.describe())


def mig_audit(f) -> list:
    return [(e.job, e.why, e.detail) for e in f.store.audit_log() if e.action == "mig"]


def snapshot_shows(f, host: str, check) -> None:
    """Waits until the fleet's own view of ``host`` (what a pass reads) passes ``check``."""
    deadline = time.time() + 30
    while not check(next(s for s in f.fleet.statuses() if s.name == host).snapshot or {}):
        assert time.time() < deadline, "the fleet never saw it"
        time.sleep(0.1)


def test_a_slice_decision_on_an_a100_with_mig_off_turns_it_on_audits_it_and_runs(local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE])
    job = f.submit("slice")
    decide(f, job, Slot("gpu-a", (0,), "3g.40gb", 0, charge=3 / 7))
    f.until(lambda: f.states()[job.id] == "running")
    now = gpu(f, "gpu-a", 0)
    assert (now["mig_mode"], now["mig_pending"]) == (True, True)
    running = [j for j in f.agent_jobs() if j["key"] == f.store.get(job.id).key(f.store.uid)]
    assert running and running[0]["instance"] in {i["uuid"] for i in now["instances"]}
    assert mig_audit(f) == [(job.id, "MIG mode is now on on gpu-a gpu 0", {
        "host": "gpu-a", "change": "mode", "gpu": 0, "enabled": True, "reset": True,
        "destroy_idle": False})]
    # passes after it find the mode right: no second change, no second entry
    for _ in range(3):
        f.scheduler.step()
        f.scheduler.settle(30)
    assert len(mig_audit(f)) == 1


def test_a_gpu_whose_mode_waits_for_a_reset_is_reset_then_used(local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE])
    f.fleet.session("gpu-a").call("sim.mode_waits_for_reset", {"gpu": 0})
    job = f.submit("slice")
    decide(f, job, Slot("gpu-a", (0,), "3g.40gb", 0, charge=3 / 7))
    f.until(lambda: f.states()[job.id] == "running")
    assert gpu(f, "gpu-a", 0)["mig_mode"] is True
    assert [why for _, why, _ in mig_audit(f)] == [
        "MIG mode is now on on gpu-a gpu 0, after a GPU reset (nothing ran there)"]


def test_a_share_decision_on_an_idle_mig_gpu_turns_mig_off_first(local_fleet):
    f = local_fleet({"gpu-a": "1xH100:mig"}, [SHARE])
    f.fleet.session("gpu-a").call("mig.apply", {"gpu": 0, "profile": "1g.10gb"})  # idle
    job = f.submit("share")
    decide(f, job, Slot("gpu-a", (0,), None, None, 10240, charge=0.129))
    f.until(lambda: f.states()[job.id] == "running")
    now = gpu(f, "gpu-a", 0)
    assert now["mig_mode"] is False and "instances" not in now
    assert mig_audit(f) == [(job.id, "MIG mode is now off on gpu-a gpu 0", {
        "host": "gpu-a", "change": "mode", "gpu": 0, "enabled": False, "reset": True,
        "destroy_idle": True})]



def test_submit_queues_what_only_an_idle_mig_gpu_turned_off_holds_and_it_runs(local_fleet):
    """`fractui submit` judges a queue by the inventory the store keeps: a share that no GPU
    holds in the mode it has, but an idle MIG GPU the scheduler may turn off would, is queued
    (before: refused, exit 2, as no GPU could ever hold it) and runs there once MIG is off; on
    a host whose config pins its modes it is refused as before."""
    f = local_fleet({"gpu-a": "1xH100:mig"}, [SHARE])
    f.scheduler.step()  # the leader keeps what gpu-a could ever hold: submit judges by it
    auto = f.config
    f.config = dataclasses.replace(auto, hosts=tuple(
        dataclasses.replace(h, mig_mode="fixed") for h in auto.hosts))
    pinned = f.fractui("submit", "--queue", "share", "--", "true")
    assert pinned.returncode == 2 and "no GPU in the fleet could ever hold what queue share " \
        "asks for (10 GiB, isolation share)" in pinned.stderr, pinned.stderr
    f.config = auto
    done = f.fractui("submit", "--queue", "share", "--json", "--", *localfleet.sleeper(600))
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)["id"]
    f.until(lambda: f.states()[job] == "running")
    assert gpu(f, "gpu-a", 0)["mig_mode"] is False
    assert [why for _, why, _ in mig_audit(f)] == ["MIG mode is now off on gpu-a gpu 0"]


def test_a_researchers_submit_counts_the_pin_of_the_scheduler_s_config(local_fleet):
    """A config of no hosts (a researcher's) has no `mig_mode` to read: the lease holder keeps
    its config's pin with the host's facts, and `submit` judges by it. Without it, a share
    only a pinned MIG GPU turned off would hold was queued from such a config, and waited for
    ever ("no room"), where the admin's own submit was refused."""
    f = local_fleet({"gpu-a": "1xH100:mig"}, [SHARE], agent={"mig_mode": "fixed"})
    f.scheduler.step()
    refused = member(f, "submit", "--queue", "share", "--", "true")
    assert refused.returncode == 2 and "no GPU in the fleet could ever hold what queue share " \
        "asks for (10 GiB, isolation share)" in refused.stderr, refused.stderr
    assert f.store.jobs() == []


def test_submit_counts_no_mode_change_for_a_queue_of_isolation_any(local_fleet):
    """`submit` counts only the mode changes a pass makes, and the placer makes none for a
    queue of isolation any: it takes a GPU as it is. Counted, such a queue that only an H200
    with MIG off holds was queued on one in MIG mode and waited for ever ("no room")."""
    # 140.2 GiB: more than an H200's 7g.141gb slice (143360 MiB), less than its 143771 MiB
    f = local_fleet({"gpu-a": "1xH200:mig"}, [QueueConfig(name="big", memory_gib=140.2)])
    f.scheduler.step()
    refused = f.fractui("submit", "--queue", "big", "--", "true")
    assert refused.returncode == 2 and "no GPU in the fleet could ever hold what queue big " \
        "asks for (140.2 GiB, isolation any)" in refused.stderr, refused.stderr
    assert f.store.jobs() == []
    listed = f.fractui("queues", "--json")
    assert [q["servable"] for q in json.loads(listed.stdout)["queues"]] == [False], listed.stdout


def test_submit_counts_no_mode_change_of_a_gpu_its_agent_says_has_no_mig(local_fleet):
    """An A100 whose NVML says MIG is not supported (in a VM) is never offered a mode change
    (fleetview._may_flip): `submit` judges it in the mode it has. The store kept no word of
    whether a GPU is MIG-capable, and `submit` judged every A100 able to turn MIG on."""
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE])
    f.fleet.session("gpu-a").call("sim.fault", {"function": "nvmlDeviceGetMigMode",
                                                "error": "NVML_ERROR_NOT_SUPPORTED",
                                                "count": 10 ** 6})
    snapshot_shows(f, "gpu-a", lambda snap: snap["gpus"][0]["mig_capable"] is False)
    f.scheduler.step()
    assert f.store.inventory()["gpu-a"]["gpus"][0]["mig_capable"] is False
    refused = f.fractui("submit", "--queue", "slice", "--", "true")
    assert refused.returncode == 2 and "no GPU in the fleet could ever hold what queue " \
        "slice asks for (3g.40gb, isolation mig)" in refused.stderr, refused.stderr


def test_a_gpu_with_a_foreign_process_is_never_changed_and_the_job_waits_saying_why(
        local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE], max_attempts=5)
    pid = f.fleet.session("gpu-a").call("sim.add_process", {"gpu": 0, "used_mib": 100})["pid"]
    snapshot_shows(f, "gpu-a", lambda snap: any(
        p["pid"] == pid for p in snap["gpus"][0].get("processes") or ()))
    job = f.submit("slice")
    decide(f, job, Slot("gpu-a", (0,), "3g.40gb", 0, charge=3 / 7))
    f.until(lambda: f.store.get(job.id).attempt == 1)
    again = f.store.get(job.id)
    assert again.state == "pending"
    assert again.refusals[0].words == ("not launched: gpu-a gpu 0 has processes (pids %d): "
                                       "its MIG mode is not changed" % pid)
    assert gpu(f, "gpu-a", 0)["mig_mode"] is False and mig_audit(f) == []



def test_a_job_on_two_gpus_changes_neither_when_one_of_them_cannot_be_changed(local_fleet):
    """Every GPU's change is planned before any is made: one GPU in use keeps the other as it
    was, rather than turned (and reset) for a job that is then refused."""
    f = local_fleet({"gpu-a": "2xA100-80GB:mig"}, [QueueConfig(name="two", gpus=2,
                                                                isolation="share")],
                    max_attempts=5)
    agent = f.fleet.session("gpu-a")
    made = agent.call("mig.apply", {"gpu": 1, "profile": "1g.10gb", "start": 0})
    pid = agent.call("sim.add_process", {"gpu": 1, "used_mib": 100,
                                         "instance": made["instance"]["uuid"]})["pid"]
    snapshot_shows(f, "gpu-a", lambda snap: any(
        p["pid"] == pid for p in snap["gpus"][1].get("processes") or ()))
    job = f.submit("two")
    decide(f, job, Slot("gpu-a", (0, 1), None, None, 81920, charge=2.0))
    f.until(lambda: f.store.get(job.id).attempt == 1)
    assert f.store.get(job.id).refusals[0].words == (
        "not launched: gpu-a gpu 1 has processes (pids %d): its MIG mode is not changed" % pid)
    assert gpu(f, "gpu-a", 0)["mig_mode"] is True and mig_audit(f) == []


def test_a_change_whose_answer_is_lost_is_audited_as_asked_and_the_job_runs_after_it(
        local_fleet, tmp_path):
    """A mode change (a reset, on a real GPU) may outlast the call: the answer is lost, the
    agent finishes it. The audit says it was asked; the next pass reads the mode and launches
    without asking again."""
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE], call_timeout_s=1.0,
                    max_attempts=5)
    gate = tmp_path / "gate"
    f.fleet.session("gpu-a").call("sim.hold", {"function": "nvmlDeviceSetMigMode",
                                               "gate": str(gate)})
    job = f.submit("slice")
    decide(f, job, Slot("gpu-a", (0,), "3g.40gb", 0, charge=3 / 7))
    f.until(lambda: mig_audit(f))
    (asked, why, detail), = mig_audit(f)
    assert asked == job.id and why.startswith(
        "asked to turn MIG on on gpu-a gpu 0 (a GPU reset, made only while nothing runs "
        "there); the answer was lost") and detail["enabled"] is True
    gate.write_text("")
    f.until(lambda: f.states()[job.id] == "running")
    assert gpu(f, "gpu-a", 0)["mig_mode"] is True
    assert len(mig_audit(f)) == 1  # the mode read as made: not asked again

def test_a_gpu_with_a_job_is_never_changed(local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE, SHARE], max_attempts=5)
    share = f.submit("share")
    decide(f, share, Slot("gpu-a", (0,), None, None, 10240, charge=0.125))
    f.until(lambda: f.states()[share.id] == "running")
    job = f.submit("slice")
    decide(f, job, Slot("gpu-a", (0,), "3g.40gb", 0, charge=3 / 7))
    f.until(lambda: f.store.get(job.id).attempt == 1)
    assert f.store.get(job.id).refusals[0].words == (
        "not launched: gpu-a gpu 0 is in use by job %d: its MIG mode is not changed" % share.id)
    assert gpu(f, "gpu-a", 0)["mig_mode"] is False and mig_audit(f) == []
    assert f.states()[share.id] == "running"


def test_a_host_that_pins_its_modes_is_never_changed(local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE], agent={"mig_mode": "fixed"},
                    max_attempts=5)
    job = f.submit("slice")
    decide(f, job, Slot("gpu-a", (0,), "3g.40gb", 0, charge=3 / 7))
    f.until(lambda: f.store.get(job.id).attempt == 1)
    assert f.store.get(job.id).refusals[0].words == (
        "not launched: gpu-a gpu 0 keeps its MIG mode (mig_mode = \"fixed\" for gpu-a)")
    assert gpu(f, "gpu-a", 0)["mig_mode"] is False


# --- the whole pass: the placer decides the change, the lease holder makes it ----------------


def wait_processes_known(f, *hosts: str) -> None:
    """A GPU's mode is offered for a change only once its snapshot says what runs there."""
    for host in hosts:
        snapshot_shows(f, host, lambda snap: snap.get("gpus") and all(
            "processes" in g for g in snap["gpus"]))


def test_a_mig_queue_on_a_fleet_with_mig_off_runs_after_the_scheduler_turns_mig_on(
        local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE])
    wait_processes_known(f, "gpu-a")
    job = f.submit("slice")
    f.until(lambda: f.states()[job.id] == "running")
    slot = f.store.get(job.id).slot
    assert (slot.host, slot.gpus, slot.profile) == ("gpu-a", (0,), "3g.40gb")
    now = gpu(f, "gpu-a", 0)
    assert now["mig_mode"] is True and [i["profile"] for i in now["instances"]] == ["3g.40gb"]
    assert [(j, why) for j, why, _ in mig_audit(f)] == [
        (job.id, "MIG mode is now on on gpu-a gpu 0")]


def test_a_model_whose_mode_waits_for_a_reset_is_reset_by_the_agent_then_used(local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE])
    f.fleet.session("gpu-a").call("sim.mode_waits_for_reset", {"gpu": 0})
    wait_processes_known(f, "gpu-a")
    job = f.submit("slice")
    f.until(lambda: f.states()[job.id] == "running")
    assert gpu(f, "gpu-a", 0)["mig_mode"] is True
    assert [why for _, why, _ in mig_audit(f)] == [
        "MIG mode is now on on gpu-a gpu 0, after a GPU reset (nothing ran there)"]


def test_a_share_with_nowhere_else_to_go_turns_an_idle_mig_gpu_off(local_fleet):
    f = local_fleet({"gpu-a": "2xA100-80GB:mig"}, [SLICE, SHARE])
    wait_processes_known(f, "gpu-a")
    first = f.submit("slice")
    f.until(lambda: f.states()[first.id] == "running")
    busy = f.store.get(first.id).slot.gpus[0]
    share = f.submit("share")
    f.until(lambda: f.states()[share.id] == "running")
    slot = f.store.get(share.id).slot
    assert slot.profile is None and slot.gpus == (1 - busy,)
    assert gpu(f, "gpu-a", 1 - busy)["mig_mode"] is False
    assert gpu(f, "gpu-a", busy)["mig_mode"] is True  # the GPU with a job kept its mode
    assert [(j, why) for j, why, _ in mig_audit(f)] == [
        (share.id, "MIG mode is now off on gpu-a gpu %d" % (1 - busy))]


def test_a_gpu_with_a_job_or_a_foreign_process_is_never_turned(local_fleet):
    f = local_fleet({"gpu-a": "2xA100-80GB"}, [SLICE, SHARE])
    a = f.fleet.session("gpu-a")
    pid = a.call("sim.add_process", {"gpu": 1, "used_mib": 100})["pid"]
    wait_processes_known(f, "gpu-a")
    snapshot_shows(f, "gpu-a", lambda snap: any(
        p["pid"] == pid for p in snap["gpus"][1].get("processes") or ()))
    share = f.submit("share")
    f.until(lambda: f.states()[share.id] == "running")
    assert f.store.get(share.id).slot.gpus == (0,)
    job = f.submit("slice")
    for _ in range(5):
        f.scheduler.step()
        f.scheduler.settle(30)
    assert f.states()[job.id] == "pending" and f.store.get(job.id).reason.startswith("no room")
    assert [gpu(f, "gpu-a", i)["mig_mode"] for i in (0, 1)] == [False, False]
    assert mig_audit(f) == []
    # the foreign process ends: that GPU is idle now and is turned for the slice
    a.call("sim.remove_process", {"pid": pid})
    f.until(lambda: f.states()[job.id] == "running")
    assert f.store.get(job.id).slot.gpus == (1,) and gpu(f, "gpu-a", 1)["mig_mode"] is True


# --- an agent that cannot make the change (older than it: one baked into a job image) -------


def older_agent(f, host: str) -> None:
    """The host's hello as an agent older than ``mig.set_mode``'s ``reset`` and
    ``destroy_idle`` answers it: no ``features``. Such an agent answers INVALID_PARAMS to the
    change a launch asks, which would fail the job as a malformed request."""
    status = f.fleet.session(host).status
    status.hello = {k: v for k, v in status.hello.items() if k != "features"}


def test_a_decision_needing_a_change_an_older_agent_cannot_make_is_refused_not_failed(
        local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE], max_attempts=5)
    older_agent(f, "gpu-a")
    job = f.submit("slice")
    decide(f, job, Slot("gpu-a", (0,), "3g.40gb", 0, charge=3 / 7))
    f.until(lambda: f.store.get(job.id).attempt == 1)
    again = f.store.get(job.id)
    assert again.state == "pending" and again.refusals[0].words == (
        "not launched: the agent on gpu-a cannot change the MIG mode of gpu-a gpu 0 before a "
        "launch (its hello does not list mig.set_mode.reset and mig.set_mode.destroy_idle: an "
        "agent older than fractui's, e.g. one in a job image)")
    assert gpu(f, "gpu-a", 0)["mig_mode"] is False and mig_audit(f) == []


def test_the_placer_offers_no_change_on_a_host_whose_agent_cannot_make_it(local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE])
    wait_processes_known(f, "gpu-a")
    status = f.fleet.session("gpu-a").status
    current = status.hello
    older_agent(f, "gpu-a")
    job = f.submit("slice")
    for _ in range(3):
        f.scheduler.step()
        f.scheduler.settle(30)
    assert f.states()[job.id] == "pending" and f.store.get(job.id).refusals == ()
    assert f.store.get(job.id).reason.startswith("no room")
    assert gpu(f, "gpu-a", 0)["mig_mode"] is False and mig_audit(f) == []
    status.hello = current  # an agent that lists them (as this fractui's does): changed, runs
    f.until(lambda: f.states()[job.id] == "running")
    assert [j for j, _, _ in mig_audit(f)] == [job.id]


# --- a change that fails: its GPU is held back, its job burns no attempt ---------------------


def test_a_gpu_whose_mode_change_failed_is_held_back_and_its_job_burns_no_attempt(local_fleet):
    """NVML fails the change (rolled back) again and again: the job goes back to its queue
    without a refusal (max_attempts = 1 would fail it at the first), the GPU is offered no
    change for 120 s, then 240 s; once it works, the change is made and the job runs."""
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE], max_attempts=1)
    now = [time.time()]
    f.on_clocks(lambda: now[0], lambda: now[0])  # the store's, which dates the holds
    wait_processes_known(f, "gpu-a")
    agent = f.fleet.session("gpu-a")
    agent.call("sim.fault", {"function": "nvmlDeviceSetMigMode", "error": "NVML_ERROR_UNKNOWN",
                             "count": 1000})
    uuid = gpu(f, "gpu-a", 0)["uuid"]
    job = f.submit("slice")

    def requeued() -> list:
        return [e.why for e in f.store.audit_log(job.id) if e.action == "requeued"]

    f.until(lambda: f.store.get(job.id).attempt == 1)
    for _ in range(5):  # held back: not offered again, the job waits
        f.scheduler.step()
        f.scheduler.settle(30)
    back = f.store.get(job.id)
    assert (back.state, back.attempt, back.refusals) == ("pending", 1, ())
    assert back.reason.startswith("no room")
    first, = requeued()
    assert first.startswith("not launched: the agent refused to turn MIG on on gpu-a gpu 0 (a "
                            "GPU reset, made only while nothing runs there): ")
    assert first.endswith("; gpu 0 of gpu-a (%s) is offered no MIG mode change for 120 s" % uuid)
    assert not f.scheduler._clocks_run()  # nothing new: no pass due while the hold runs
    now[0] += 121  # the hold ended: a pass is due; offered again, failed again, held longer
    assert f.scheduler._clocks_run()
    f.until(lambda: f.store.get(job.id).attempt == 2)
    assert requeued()[-1].endswith("is offered no MIG mode change for 240 s")
    assert f.store.get(job.id).refusals == () and gpu(f, "gpu-a", 0)["mig_mode"] is False
    agent.call("sim.clear_faults", {})
    now[0] += 241
    f.until(lambda: f.states()[job.id] == "running")
    assert gpu(f, "gpu-a", 0)["mig_mode"] is True and f.store.get(job.id).refusals == ()
    assert [why for _, why, _ in mig_audit(f)] == ["MIG mode is now on on gpu-a gpu 0"]


def test_one_failed_change_is_one_call_however_many_decisions_wait_on_the_gpu(local_fleet):
    """One pass puts three slices on one idle A100 (the first decision turns MIG on, the next
    two are placed on the GPU as it will be). The change fails: the first launch asks once and
    holds the GPU back; the other two are not asked again — each goes back to its queue saying
    how long the hold still runs — so the hold is one failure long, not three."""
    small = QueueConfig(name="small", mig="2g.20gb", isolation="mig")
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [small], max_attempts=1)
    now = [time.time()]
    f.on_clocks(lambda: now[0], lambda: now[0])  # the store's, which dates the holds
    wait_processes_known(f, "gpu-a")
    f.fleet.session("gpu-a").call("sim.fault", {"function": "nvmlDeviceSetMigMode",
                                                "error": "NVML_ERROR_UNKNOWN", "count": 1000})
    uuid = gpu(f, "gpu-a", 0)["uuid"]
    jobs = [f.submit("small") for _ in range(3)]
    f.until(lambda: all(f.store.get(j.id).attempt == 1 for j in jobs))
    said = [e.why for e in f.store.audit_log() if e.action == "requeued"]
    asked = [w for w in said if w.startswith("not launched: the agent refused")]
    held = [w for w in said if w not in asked]
    assert len(asked) == 1 and asked[0].endswith(
        "; gpu 0 of gpu-a (%s) is offered no MIG mode change for 120 s" % uuid), said
    assert len(held) == 2 and all(
        w.startswith("not launched: gpu 0 of gpu-a (%s) is offered no MIG mode change for "
                     "another " % uuid) and w.endswith(" s, after a change of its failed")
        for w in held), said
    assert all(f.store.get(j.id).refusals == () for j in jobs)
    assert f.scheduler.executor.backoff.failed(uuid, now[0]) == 240.0  # the second failure


def held_back(f, queue: str):
    """A job of ``queue`` whose launch needed gpu-a's GPU 0's MIG mode changed, which NVML
    fails from now on: once the GPU is held back (kept in the store) and the job back in its
    queue, (the job, the GPU's uuid)."""
    wait_processes_known(f, "gpu-a")
    f.fleet.session("gpu-a").call("sim.fault", {"function": "nvmlDeviceSetMigMode",
                                                "error": "NVML_ERROR_UNKNOWN", "count": 1000})
    uuid = gpu(f, "gpu-a", 0)["uuid"]
    job = f.submit(queue)
    f.until(lambda: uuid in f.store.mode_holds() and f.store.get(job.id).state == "pending")
    return job, uuid


def test_a_hold_is_kept_in_the_store_for_placement_by_hand_and_the_next_lease_holder(
        local_fleet):
    """The GPU held back after its change failed is kept in the store: `fractui place` offers
    no change there while the hold runs (it would not be asked), and a lease holder that takes
    over goes on from the hold rather than asking again at once (which would be one more failed
    change and one more attempt of the job)."""
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE], lease_s=2.0)
    job, uuid = held_back(f, "slice")
    hold = f.store.mode_holds()[uuid]
    assert hold.failures == 1 and 0 < hold.until - time.time() <= 120
    assert f.store.get(job.id).attempt == 1
    done = f.fractui("place", str(job.id), "gpu-a", "0", "--profile", "3g.40gb", "--start",
                     "0", "--yes")
    assert (done.returncode, done.stdout) == (1, ""), done.stderr
    assert done.stderr.startswith(
        "fractui: not placed: job %d on gpu-a gpu0 3g.40gb at slot 0 needs its launch to turn "
        "MIG on on gpu-a gpu 0 (a GPU reset, made only while nothing runs there) first, and "
        "gpu 0 of gpu-a (%s) is offered no MIG mode change for another " % (job.id, uuid))
    assert done.stderr.endswith(" s, after a change of its failed\n"), done.stderr
    f.scheduler.stop(release=True)  # the next holder takes over
    store = open_store(f.config.store.url)
    second = Scheduler(f.config, store, f.fleet, name="second")
    try:
        for _ in range(5):
            assert second.step() and second.settle()
        assert second.executor.backoff.left(uuid, time.time()) > 0
        back = f.store.get(job.id)
        assert (back.state, back.attempt) == ("pending", 1)  # not asked again meanwhile
        assert f.store.mode_holds() == {uuid: hold}
    finally:
        second.stop()
        store.close()


@pytest.mark.parametrize("holder_ahead", [HOUR, -HOUR])
def test_a_hold_is_the_stores_time_and_place_counts_it_so_on_a_machine_of_a_third_clock(
        local_fleet, store_url, capfd, monkeypatch, holder_ahead):
    """A head node an hour ahead of the store's clock (on PostgreSQL, the server's), or behind,
    dated a GPU's hold by its own clock, and `fractui place` on an admin's machine set an hour
    the other way counted it to its own: a hold of 120 s read as two hours more, or as ended,
    and place offered the change the holder then refuses. The holder dates it by the store's
    clock, and place counts it to the store's (both stores' clocks are this machine's real
    one: SQLite's, and the test's PostgreSQL server's)."""
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE], store_url=store_url)
    f.scheduler = Scheduler(f.config, f.store, f.fleet, name="test",
                            clock=lambda: time.time() + holder_ahead)
    job, uuid = held_back(f, "slice")
    assert 0 < f.store.mode_holds()[uuid].until - f.store.now() <= 120
    config = f.write_config()
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - holder_ahead)  # the admin's machine
    code, out, err = in_process(capfd, ["--config", config, "place", str(job.id), "gpu-a", "0",
                                        "--profile", "3g.40gb", "--start", "0", "--yes"])
    assert (code, out) == (1, ""), err
    left = re.search(r"is offered no MIG mode change for another (\d+) s, after a change of "
                     r"its failed\n$", err)
    assert left and 0 < int(left.group(1)) <= 120, err
    assert f.store.get(job.id).state == "pending"


def test_a_hold_doubles_at_each_failure_in_a_row_to_an_hour_and_a_success_forgets_it():
    holds = ModeBackoff()
    assert [holds.failed("GPU-a", 0.0) for _ in range(7)] == [
        120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0, 3600.0]
    holds.failed("GPU-b", 100.0)
    assert holds.held(200.0) == {"GPU-a", "GPU-b"} and holds.next_end(200.0) == 220.0
    assert holds.held(220.0) == {"GPU-a"} and holds.next_end(220.0) == 3600.0
    holds.succeeded("GPU-a")
    assert holds.held(0.0) == {"GPU-b"} and holds.failed("GPU-a", 0.0) == 120.0
    assert holds.left("GPU-a", 20.0) == 100.0 and holds.left("GPU-c", 20.0) == 0.0
    for _ in range(2000):  # a GPU that never changes: the hold stays an hour, no overflow
        holds.failed("GPU-c", 0.0)
    assert holds.failed("GPU-c", 0.0) == 3600.0


# --- a placement by hand that turns MIG on says so, and asks --------------------------------


@pytest.mark.parametrize("why", ["older agent", "pinned host"])
def test_a_placement_by_hand_whose_mode_change_would_be_refused_is_not_recorded(local_fleet, why):
    """A placement by hand that needs a mode change its host never makes — its agent does not
    list the features, or the host pins its modes — is refused at once with the reason, not
    recorded to be refused at launch after the command said the scheduler would make it."""
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE],
                    agent={"mig_mode": "fixed"} if why == "pinned host" else None)
    if why == "older agent":
        older_agent(f, "gpu-a")
    f.scheduler.step()  # the inventory the command reads: gpu 0 with MIG off, the agent's hello
    job = f.submit("slice")
    done = f.fractui("place", str(job.id), "gpu-a", "0", "--profile", "3g.40gb", "--start",
                     "0", "--yes")
    assert (done.returncode, done.stdout) == (1, "")
    because = ("the agent on gpu-a cannot change the MIG mode of gpu-a gpu 0 before a launch "
               "(its hello does not list mig.set_mode.reset and mig.set_mode.destroy_idle: an "
               "agent older than fractui's, e.g. one in a job image)" if why == "older agent"
               else "gpu-a gpu 0 keeps its MIG mode (mig_mode = \"fixed\" for gpu-a)")
    assert done.stderr == (
        "fractui: not placed: job %d on gpu-a gpu0 3g.40gb at slot 0 needs its launch to turn "
        "MIG on on gpu-a gpu 0 (a GPU reset, made only while nothing runs there) first, and "
        "%s\n" % (job.id, because))
    assert f.store.get(job.id).state == "pending" and f.store.get(job.id).slot is None


def test_a_placement_by_hand_that_turns_mig_on_says_so_and_needs_yes(local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE])
    f.scheduler.step()  # the inventory the command reads: gpu 0 with MIG off
    job = f.submit("slice")
    args = ("place", str(job.id), "gpu-a", "0", "--profile", "3g.40gb", "--start", "0")
    said = ("fractui: job %d on gpu-a gpu0 3g.40gb at slot 0: its launch will first turn MIG "
            "on on gpu-a gpu 0 (a GPU reset, made only while nothing runs there); the "
            "scheduler checks that the GPU is idle then (if it is not, the job goes back to "
            "its queue).\n" % job.id)
    asked = f.fractui(*args)  # no terminal to confirm on: not placed
    assert (asked.returncode, asked.stdout) == (1, "")
    assert asked.stderr == said + "fractui: %s\nfractui: not placed: job %d stays pending\n" % (
        NO_TERMINAL, job.id)
    assert f.store.get(job.id).state == "pending"
    placed = f.fractui(*args, "--yes")
    assert (placed.returncode, placed.stderr) == (0, said)
    assert placed.stdout == ("%d placed on gpu-a gpu0 3g.40gb at slot 0; the scheduler will "
                             "turn MIG on on gpu-a gpu 0 (a GPU reset, made only while "
                             "nothing runs there), then launch it\n" % job.id)
    again = f.fractui(*args, "--yes")  # a retry (its answer lost): read as the first
    assert (again.returncode, again.stdout, again.stderr) == (0, placed.stdout, "")
    f.until(lambda: f.states()[job.id] == "running")
    assert gpu(f, "gpu-a", 0)["mig_mode"] is True
    # a placement in the mode the GPU has now says nothing of modes and asks nothing
    f.until(lambda: f.store.inventory()["gpu-a"]["gpus"][0]["mig_mode"] is True)
    other = f.submit("slice")
    kept = f.fractui("place", str(other.id), "gpu-a", "0", "--profile", "3g.40gb",
                     "--start", "4")
    assert (kept.returncode, kept.stderr) == (0, "") and "MIG" not in kept.stdout


def _left_changed(local_fleet):
    """A fleet of one A100 whose driver turns MIG on yet reports a failure, then refuses to
    turn it back: a mode change that fails and leaves the GPU changed, not restored."""
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE], max_attempts=1)
    wait_processes_known(f, "gpu-a")
    agent = f.fleet.session("gpu-a")
    agent.call("sim.fault", {"function": "nvmlDeviceSetMigMode", "error": "NVML_ERROR_TIMEOUT",
                             "after": True})
    agent.call("sim.fault", {"function": "nvmlDeviceSetMigMode", "error": "NVML_ERROR_UNKNOWN",
                             "skip": 1, "count": 1000})
    return f, agent


def test_a_mode_change_that_failed_and_left_the_gpu_changed_is_audited_once(local_fleet):
    """The driver turns MIG on yet reports a failure, and refuses to turn it back: the agent
    says the GPU could NOT be restored. The GPU changed, so the scheduler's ask is in the
    audit, once, with what it holds now (before: a failure was never audited)."""
    f, agent = _left_changed(local_fleet)
    job = f.submit("slice")
    f.until(lambda: f.store.get(job.id).attempt == 1)
    for _ in range(3):  # held back: not asked again
        f.scheduler.step()
        f.scheduler.settle(30)
    (asked, why, detail), = mig_audit(f)
    assert asked == job.id and why.startswith("gpu-a gpu 0: turning MIG mode on on GPU 0 "
                                              "failed: "), why
    assert "the GPU could NOT be restored" in why and "it now holds MIG mode on" in why
    assert detail["change"] == "mode" and detail["enabled"] is True
    agent.call("sim.clear_faults", {})


def test_a_gpu_whose_failed_change_could_not_be_audited_is_held_back_all_the_same(local_fleet):
    """The change failed and left the GPU changed, and the store failed as its audit was
    written: the GPU is still held back from changes (before: the audit's failure came first,
    and the next pass asked the GPU again at once)."""
    f, agent = _left_changed(local_fleet)
    uuid = gpu(f, "gpu-a", 0)["uuid"]
    store = f.scheduler.executor.store
    audit = store.audit

    def full_disk(actor, action, job, why, detail=None):  # the store fails at this one write
        if action == "mig":
            store.audit = audit
            raise StoreError("store %s: the disk is full" % store.uid)
        return audit(actor, action, job, why, detail)

    store.audit = full_disk
    job = f.submit("slice")
    f.until(lambda: store.audit is audit)
    assert f.scheduler.executor.backoff.left(uuid, time.time()) > 0
    f.until(lambda: f.store.get(job.id).state == "pending")
    requeued = [e.why for e in f.store.audit_log(job.id) if e.action == "requeued"]
    assert requeued and not any("refused" in why for why in requeued), requeued  # not asked
    agent.call("sim.clear_faults", {})



@pytest.mark.parametrize("agent", [{"mig_mode": "fixed"}, {}], ids=["pinned", "unpinned"])
def test_submit_says_a_queue_only_a_pending_mode_change_would_serve_waits_for_a_reset(
        local_fleet, agent):
    """An A100 whose MIG mode on waits for a GPU reset has MIG off now and takes no new work
    until the reset, on a host that pins its modes or not (no pass offers a change on a GPU
    whose change is pending: fleetview._idle_for_mode): a MIG queue is served only once
    someone makes it. `submit` judged the GPU as if the change had taken effect, and queued
    the job saying nothing; it waited ("no room") with no word of the reset it waits for. On
    a host that does not pin its modes it still said nothing (judged as a pass that would
    change the GPU's mode, which none does)."""
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE], agent=agent)
    session = f.fleet.session("gpu-a")
    session.call("sim.mode_waits_for_reset", {"gpu": 0})
    asked = session.call("mig.set_mode", {"gpu": 0, "enabled": True})
    assert (asked["mig_mode"], asked["mig_pending"]) == (False, True)
    f.until(lambda: (f.scheduler.step() or True) and (
        f.store.inventory().get("gpu-a", {}).get("gpus") or [{}])[0].get("mig_pending"))
    done = f.fractui("submit", "--queue", "slice", "--", "true")
    assert done.returncode == 0, done.stderr
    assert "warning: queue slice is served only once the MIG mode change pending on gpu-a " \
           "gpu 0 (MIG on, now off) takes effect, at its next GPU reset (fractui mig gpu-a 0 " \
           "--mode on --reset makes one now, while nothing uses the GPU); until then no GPU " \
           "holds its jobs; queued all the same" in done.stderr, done.stderr
    listed = json.loads(f.fractui("queues", "--json").stdout)["queues"]
    assert [(q["servable"], q["servable_why"]) for q in listed] == [(True, (
        "queue slice is served only once the MIG mode change pending on gpu-a gpu 0 (MIG on, "
        "now off) takes effect, at its next GPU reset (fractui mig gpu-a 0 --mode on --reset "
        "makes one now, while nothing uses the GPU); until then no GPU holds its jobs"))], listed


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "unpinned"])
def test_a_placement_by_hand_of_a_profile_without_its_start_on_a_gpu_whose_mode_is_pending(
        local_fleet, pinned):
    """`place --profile` with no `--start` on an A100 whose MIG mode on waits for a reset was
    judged as though the change had been made: placed, "the scheduler launches it", with no
    word of the mode change its launch needs, where `--start` said it (and a host that pins
    its modes refused it). The launch, completed on the GPU as it is (MIG off), was then
    refused as "MIG off: it takes memory shares", counted against the job, which waited.
    Now the start the placement chose is recorded with it: refused where the host pins its
    modes, else said, and the launch resets the GPU first and runs."""
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE],
                    agent={"mig_mode": "fixed"} if pinned else {})
    mig_on_pending(f)
    job = f.submit("slice")
    done = f.fractui("place", str(job.id), "gpu-a", "0", "--profile", "3g.40gb", "--yes")
    if pinned:
        assert (done.returncode, done.stdout) == (1, ""), (done.stdout, done.stderr)
        assert "not placed: job %d on gpu-a gpu0 3g.40gb at slot 4 needs its launch to turn " \
               "MIG on on gpu-a gpu 0 (a GPU reset, made only while nothing runs there) " \
               "first, and gpu-a gpu 0 keeps its MIG mode (mig_mode = \"fixed\" for gpu-a)" % (
                   job.id) in done.stderr, done.stderr
        assert f.store.get(job.id).state == "pending"
        return
    assert done.returncode == 0, done.stderr
    assert done.stdout == "%d placed on gpu-a gpu0 3g.40gb at slot 4; the scheduler will turn " \
        "MIG on on gpu-a gpu 0 (a GPU reset, made only while nothing runs there), then launch " \
        "it\n" % job.id, done.stdout
    f.until(lambda: f.states()[job.id] == "running")
    assert f.store.get(job.id).refusals == ()
    assert gpu(f, "gpu-a", 0)["mig_mode"] is True


def test_a_standby_an_hour_ahead_takes_up_a_hold_in_its_first_pass(local_fleet):
    """A standby that takes the lease reads the store's lead on its clock as it recalls what
    the last holder kept: its first pass, before any read of the jobs, counts a hold to the
    store's clock. Without it (its lead not known yet, counted as none) a standby an hour
    ahead read the hold as over, decided the mode change, and its launch, the lead read by
    then, refused it: the job lost an attempt."""
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE], lease_s=2.0)
    job, uuid = held_back(f, "slice")
    hold = f.store.mode_holds()[uuid]
    f.scheduler.stop(release=True)
    store = open_store(f.config.store.url)
    second = Scheduler(f.config, store, f.fleet, name="second",
                       clock=lambda: time.time() + HOUR)
    try:
        for _ in range(3):
            assert second.step() and second.settle()
        decided = [e for e in f.store.audit_log() if e.actor == "second" and e.action != "lease"]
        back = f.store.get(job.id)
        assert (back.state, back.attempt, back.slot) == ("pending", 1, None)
        assert f.store.mode_holds() == {uuid: hold}
        assert decided == [], [(e.action, e.why) for e in decided]
    finally:
        second.stop()
        store.close()
