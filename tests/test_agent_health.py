"""GPU health over the real agent process: each condition raised by ``sim.*`` on a simulated
host shows in the snapshot the daemon takes (temperature, power, ECC, throttling, XID events),
and what NVML does not support on a GPU is "not measured", never an error that hides it."""

from __future__ import annotations

import json
import os
import signal
import time

from remote_agent.rpc import jsonrpc as rpc
from tests.test_job_supervision import fill, gpus_on_a_disk_of_their_own, log_on_a_disk_of_its_own

SPEC = "1xA100-80GB:mig,1xRTX4090,1xL4"


def gpu(agent, index: int) -> dict:
    return agent.call("snapshot")["gpus"][index]


def health_of(agent, index: int) -> dict:
    return gpu(agent, index)["health"]


def until_health(agent, index: int, check, what: str, timeout_s: float = 20.0) -> dict:
    deadline = time.time() + timeout_s
    while True:
        health = health_of(agent, index)
        if check(health):
            return health
        assert time.time() < deadline, "never happened: %s; last %r" % (what, health)
        time.sleep(0.05)


def test_an_idle_gpu_reports_its_health_and_what_it_cannot_measure(start_agent):
    agent = start_agent(SPEC)
    a100 = health_of(agent, 0)
    assert a100["temperature_c"] == 30 and a100["slowdown_c"] == 89
    assert a100["power_limit_mw"] == 400_000 and a100["power_mw"] == 50_000
    assert a100["ecc_volatile"] == {"corrected": 0, "uncorrected": 0}
    assert a100["throttle"] == ["gpu_idle"]
    assert a100["xid"] == [] and a100["unmeasured"] == [] and a100["errors"] == []
    rtx = health_of(agent, 1)  # a consumer part: no ECC counters, the rest as usual
    assert rtx["ecc_volatile"] is None and rtx["unmeasured"] == ["ECC errors"]
    assert rtx["temperature_c"] == 30 and rtx["power_limit_mw"] == 450_000
    assert rtx["errors"] == [] and gpu(agent, 1)["memory_mib"] == 24564


def test_load_heats_the_gpu_and_draws_power(start_agent):
    agent = start_agent(SPEC)
    agent.call("sim.add_process", gpu=2, used_mib=1000, util=100)
    l4 = health_of(agent, 2)
    assert l4["temperature_c"] == 75 and l4["power_mw"] == l4["power_limit_mw"] == 72_000
    assert l4["throttle"] == ["sw_power_cap"]  # at its power limit, as a busy GPU is
    agent.call("sim.add_process", gpu=1, used_mib=0, util=30)
    assert health_of(agent, 1)["throttle"] == []  # busy, cool, within its power: no reason


def test_each_condition_raised_by_sim_shows_in_the_snapshot(start_agent):
    agent = start_agent(SPEC)
    agent.call("sim.health", gpu=0, temperature_c=91, power_mw=123_456,
               throttle=["hw_power_brake_slowdown"])
    agent.call("sim.ecc", gpu=0, corrected=5, uncorrected=2)
    h = health_of(agent, 0)
    assert h["temperature_c"] == 91 and h["power_mw"] == 123_456
    # at its slowdown temperature the GPU slows itself down, as a real one does
    assert h["throttle"] == ["gpu_idle", "sw_thermal_slowdown", "hw_power_brake_slowdown"]
    assert h["ecc_volatile"] == {"corrected": 5, "uncorrected": 2}
    agent.call("sim.health", gpu=2, power_limit_mw=60_000)  # an admin's lower power limit
    l4 = health_of(agent, 2)
    assert l4["power_limit_mw"] == 60_000 and l4["power_mw"] == 7_500  # idle: an eighth
    agent.call("sim.health", gpu=0, reset=True)
    h = health_of(agent, 0)
    assert h["temperature_c"] == 30 and h["throttle"] == ["gpu_idle"]
    assert h["ecc_volatile"] == {"corrected": 5, "uncorrected": 2}  # errors stay counted


def test_xid_events_reach_the_snapshot_bounded_and_per_gpu(start_agent):
    agent = start_agent(SPEC)
    until_health(agent, 0, lambda h: "xid_note" not in h, "the XID watcher registered")
    agent.call("sim.xid", gpu=0, xid=79)
    h = until_health(agent, 0, lambda h: h["xid"], "XID 79 seen")
    assert [(e["xid"], e["gi_id"], e["ci_id"]) for e in h["xid"]] == [(79, None, None)]
    assert health_of(agent, 1)["xid"] == []
    for n in range(20):
        agent.call("sim.xid", gpu=1, xid=100 + n)
    h = until_health(agent, 1, lambda h: h["xid"] and h["xid"][-1]["xid"] == 119, "all 20")
    assert [e["xid"] for e in h["xid"]] == list(range(104, 120))  # the newest 16


def test_a_restarted_agent_still_says_a_gpus_recent_xid(start_agent, tmp_path):
    """The events outlive the daemon (killed -9): NVML would not give them again, and a GPU
    that raised a critical XID a minute ago is no healthier for its agent's restart (fractui
    judges the last 15 minutes of them: fractui/sched/health.py)."""
    state = str(tmp_path / "host")
    agent = start_agent(SPEC, state)
    until_health(agent, 0, lambda h: "xid_note" not in h, "the XID watcher registered")
    agent.call("sim.xid", gpu=0, xid=79)
    seen = until_health(agent, 0, lambda h: h["xid"], "XID 79 seen")["xid"]
    os.kill(agent.call("daemon.version")["pid"], signal.SIGKILL)
    agent.proc.wait(timeout=10)
    later = start_agent(None, state)
    assert health_of(later, 0)["xid"] == seen and health_of(later, 1)["xid"] == []
    # the new daemon's watcher hears only what is raised once it registered, as NVML's does
    until_health(later, 0, lambda h: "xid_note" not in h, "the new watcher registered")
    later.call("sim.xid", gpu=0, xid=48)  # kept on from there, the newest last
    after = until_health(later, 0, lambda h: len(h["xid"]) == 2, "XID 48 seen")["xid"]
    assert [e["xid"] for e in after] == [79, 48]


def test_an_xid_of_a_gpu_that_no_longer_says_its_uuid_is_kept_under_it(start_agent, tmp_path):
    """XID 79: the GPU fell off the bus, and NVML answers GPU_IS_LOST for its UUID from then
    on. The event is still said, of that GPU (its UUID read as it was registered). Before,
    the UUID was read from the event's GPU: the read failed, and the event, taken out of the
    set already, was lost, the one that says the GPU is gone among them."""
    state = tmp_path / "state"
    agent = start_agent(SPEC, str(state))
    until_health(agent, 0, lambda h: "xid_note" not in h, "the XID watcher registered")
    uuid = agent.call("inventory")["gpus"][0]["uuid"]
    gate = tmp_path / "gate"  # the wait that takes the event out of the set held there
    agent.call("sim.hold", function="nvmlEventSetWait_v2", gate=str(gate), after=True)
    agent.call("sim.xid", gpu=0, xid=79)
    deadline = time.time() + 20
    while not (tmp_path / "gate.held").exists():
        assert time.time() < deadline, "the watcher never took the event"
        time.sleep(0.05)
    agent.call("sim.fault", function="nvmlDeviceGetUUID", error="NVML_ERROR_GPU_IS_LOST",
               count=1000)
    gate.touch()
    log = state / "daemon.log"
    deadline = time.time() + 20
    while "XID 79" not in log.read_text() and "waiting for XID events failed" not in \
            log.read_text():
        assert time.time() < deadline, "the watcher never said the event"
        time.sleep(0.05)
    agent.call("sim.clear_faults")
    assert "GPU 0 (%s): XID 79" % uuid in log.read_text()
    assert [e["xid"] for e in health_of(agent, 0)["xid"]] == [79]


def test_xid_events_on_a_full_state_disk_are_said_unkept_once_and_kept_again(
        small_fs, start_agent, tmp_path):
    """The state disk full (a real tmpfs, to its last byte): each XID still reaches the
    snapshot, and the log says once that they cannot be kept, however many come, and once
    that they are kept again when there is room, with how many writes failed. Before, each
    event logged the failed write."""
    state = small_fs / "state"
    with gpus_on_a_disk_of_their_own(state), log_on_a_disk_of_its_own(state, tmp_path) as log:
        agent = start_agent("1xL4", str(state))
        until_health(agent, 0, lambda h: "xid_note" not in h, "the XID watcher registered")
        fill(small_fs / "filler")
        for xid in (79, 48, 63):
            agent.call("sim.xid", gpu=0, xid=xid)
        until_health(agent, 0, lambda h: len(h["xid"]) == 3, "the 3 XIDs seen, unkept")
        (small_fs / "filler").unlink()  # room again
        agent.call("sim.xid", gpu=0, xid=94)
        until_health(agent, 0, lambda h: len(h["xid"]) == 4, "XID 94 seen, kept")
        said, uuid = log.read_text().splitlines(), gpu(agent, 0)["uuid"]
    kept = state / "xid-events.json"
    unkept = [line for line in said if "cannot be kept" in line]
    assert len(unkept) == 1, unkept
    assert " ERROR the XID events cannot be kept in %s (OSError: [Errno 28] No space left on " \
        "device)" % kept in unkept[0]
    again = [line for line in said if "kept in %s again" % kept in line]
    assert len(again) == 1 and again[0].endswith("after 3 failed writes"), again
    events = json.loads(kept.read_text())["kept"][uuid]
    assert [e["xid"] for e in events] == [79, 48, 63, 94]


def test_an_xid_on_a_mig_instance_names_the_instance(start_agent):
    agent = start_agent(SPEC)
    made = agent.call("mig.apply", gpu=0, profile="3g.40gb")["instance"]
    until_health(agent, 0, lambda h: "xid_note" not in h, "the XID watcher registered")
    agent.call("sim.xid", gpu=0, xid=43, instance=made["uuid"])
    h = until_health(agent, 0, lambda h: h["xid"], "XID 43 seen")
    assert [(e["xid"], e["gi_id"]) for e in h["xid"]] == [(43, made["gi_id"])]


def test_a_failing_health_read_is_said_and_the_gpu_stays(start_agent):
    agent = start_agent(SPEC)
    agent.call("sim.fault", function="nvmlDeviceGetTemperature", error="NVML_ERROR_GPU_IS_LOST",
               count=1000)
    g = gpu(agent, 2)
    assert g["name"] == "NVIDIA L4" and g["health"]["temperature_c"] is None
    assert g["health"]["errors"] == [
        "nvmlDeviceGetTemperature failed: GPU is lost (NVML_ERROR_GPU_IS_LOST)"]
    assert g["health"]["power_mw"] is not None


def test_a_failed_wait_for_xid_events_is_retried_and_loses_none(start_agent, tmp_path):
    agent = start_agent(SPEC, str(tmp_path / "state"))
    until_health(agent, 0, lambda h: "xid_note" not in h, "the XID watcher registered")
    agent.call("sim.fault", function="nvmlEventSetWait_v2", error="NVML_ERROR_UNKNOWN")
    log = tmp_path / "state" / "daemon.log"
    deadline = time.time() + 20
    while "waiting for XID events failed" not in log.read_text():
        assert time.time() < deadline, "the watcher never met the failed wait"
        time.sleep(0.05)
    agent.call("sim.xid", gpu=0, xid=62)  # raised while the watcher waits to try again
    h = until_health(agent, 0, lambda h: h["xid"], "XID 62 seen after the failed wait")
    assert [e["xid"] for e in h["xid"]] == [62]


def test_a_snapshot_failing_each_tick_is_logged_once_and_once_taken_again(start_agent, tmp_path):
    """A subscribed client: the daemon takes a snapshot each tick. NVML failing the next 6 of
    them (and the GPU heating meanwhile, asked in the same batch, so that the first snapshot
    taken again is pushed) is said once in the daemon's log, with why, and once more when a
    snapshot is taken again, with how many failed. Before, a line each tick, twice a second,
    for as long as NVML failed."""
    state = tmp_path / "state"
    agent = start_agent("1xL4", str(state))
    assert agent.call("subscribe")["snapshot"]["gpus"][0]["health"]["temperature_c"] == 30
    agent.send_raw(json.dumps([
        {"jsonrpc": "2.0", "id": "fault", "method": "sim.fault", "params": {
            "function": "nvmlDeviceGetUtilizationRates", "error": "NVML_ERROR_UNKNOWN",
            "count": 6}},
        {"jsonrpc": "2.0", "id": "hot", "method": "sim.health",
         "params": {"gpu": 0, "temperature_c": 91}}]).encode() + b"\n")
    while True:  # the batch's answers, then the snapshots pushed, until the GPU's new heat
        said = agent.read_reply()
        if isinstance(said, list):
            assert all("result" in answer for answer in said), said
        elif said["method"] == "snapshot" and \
                said["params"]["gpus"][0]["health"]["temperature_c"] == 91:
            break
    log = (state / "daemon.log").read_text()
    failed = [line for line in log.splitlines() if "snapshot failed" in line]
    assert len(failed) == 1, failed
    assert failed[0].endswith("WARNING snapshot failed: nvmlDeviceGetUtilizationRates failed: "
                              "Unknown Error (NVML_ERROR_UNKNOWN); taken again each 0.5 s")
    assert log.count("snapshots are taken again after 6 failed passes") == 1


def test_the_older_throttle_call_is_used_where_the_driver_lacks_the_newer(start_agent):
    agent = start_agent(SPEC)
    agent.call("sim.fault", function="nvmlDeviceGetCurrentClocksEventReasons",
               error="NVML_ERROR_FUNCTION_NOT_FOUND", count=1000)
    agent.call("sim.health", gpu=2, throttle=["sw_power_cap"])
    assert health_of(agent, 2)["throttle"] == ["gpu_idle", "sw_power_cap"]


def test_bad_sim_health_params_are_refused_with_what_and_where(start_agent):
    agent = start_agent(SPEC)
    reply = agent.request("sim.health", gpu=0, throttle=["too_hot"])
    assert reply["error"]["code"] == rpc.INVALID_PARAMS
    assert "unknown throttle reason 'too_hot'" in reply["error"]["message"]
    for bad in ([{"a": 1}], "hw_slowdown", [3]):
        reply = agent.request("sim.health", gpu=0, throttle=bad)
        assert reply["error"]["code"] == rpc.INVALID_PARAMS, bad
    reply = agent.request("sim.ecc", gpu=1, uncorrected=1)
    assert reply["error"]["code"] == rpc.INVALID_PARAMS
    assert "has no ECC" in reply["error"]["message"]
    reply = agent.request("sim.xid", gpu=0, xid=0)
    assert reply["error"]["code"] == rpc.INVALID_PARAMS
