"""``mig.set_mode`` with ``reset``: the agent resets an idle GPU whose new MIG mode waits for a
reset, never one with a process on it, and a reset that fails leaves nothing pending."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time

import pytest

from remote_agent.gpu import fake_pynvml as nv, xid
from remote_agent.gpu.reset import ResetFailed, SmiReset
from remote_agent.rpc import jsonrpc as rpc
from tests.test_mig_faults import agent_with, inventory_gpu, refused


def mode(agent) -> tuple:
    gpu = inventory_gpu(agent)
    return gpu["mig_mode"], gpu["mig_pending"]


def test_a_process_that_comes_before_the_reset_stops_it_and_the_mode_is_taken_back():
    agent, methods = agent_with("1xA100-80GB")
    nv.sim_mode_waits_for_reset(0)
    asked = agent.backend.set_mig_mode
    started = []

    def and_a_process_starts(index: int, enabled: bool) -> None:
        asked(index, enabled)
        if enabled:  # a workload opens the GPU right after NVML accepted the mode
            started.append(nv.sim_register_process(0, 10))

    agent.backend.set_mig_mode = and_a_process_starts
    err = refused(methods, "mig.set_mode", gpu=0, enabled=True, reset=True)
    assert err.code == rpc.GPU_IN_USE
    assert "pids %d" % started[0] in err.message and "a reset needs none" in err.message
    assert err.data["rolled_back"] is True
    assert nv.sim_reset_count(0) == 0
    assert mode(agent) == (False, False)  # nothing left pending


def test_a_reset_nvidia_smi_refuses_takes_the_mode_back(tmp_path, monkeypatch):
    """The real host's reset, an argv run by the agent, against a GPU that cannot be reset
    (a pass-through VM, as NVIDIA's guide shows it)."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho \"$@\" > %s/args\n"
                   "echo 'Resetting GPU 00000000:00:03.0 is not supported.'\nexit 3\n" % tmp_path)
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", "%s%s%s" % (tmp_path, os.pathsep, os.environ["PATH"]))
    agent, methods = agent_with("1xA100-80GB")
    agent.resetter = SmiReset()
    nv.sim_mode_waits_for_reset(0)
    uuid = inventory_gpu(agent)["uuid"]
    err = refused(methods, "mig.set_mode", gpu=0, enabled=True, reset=True)
    # by its UUID: an index may name another GPU once the reset or a reboot renumbers them
    assert (tmp_path / "args").read_text().split() == ["--gpu-reset", "-i", uuid]
    assert "nvidia-smi --gpu-reset -i %s exited 3: Resetting GPU 00000000:00:03.0 is not " \
        "supported." % uuid in err.message
    assert err.data["rolled_back"] is True and "degraded" not in inventory_gpu(agent)
    assert mode(agent) == (False, False)


def test_nvidia_smi_missing_is_said(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ResetFailed) as err:
        SmiReset().reset("GPU-00000000-0000-0000-0000-000000000000")
    assert str(err.value).endswith("nvidia-smi is not installed, or not on the agent's PATH "
                                   "(%s)" % tmp_path), str(err.value)


def test_the_simulated_reset_names_the_gpu_by_uuid_too():
    """The simulator's reset, as nvidia-smi's, takes the GPU's UUID: the one it names is reset,
    whatever its index."""
    agent, _ = agent_with("2xA100-80GB")
    nv.sim_mode_waits_for_reset(1)
    second = agent.call_nvml(lambda: agent.backend.gpu(1)).uuid
    with agent.backend.detached():
        agent.resetter.reset(second)
        with pytest.raises(ResetFailed, match="no GPU has UUID GPU-nowhere"):
            agent.resetter.reset("GPU-nowhere")
    assert (nv.sim_reset_count(0), nv.sim_reset_count(1)) == (0, 1)


def test_a_reset_done_is_reported_and_a_retry_is_a_no_op():
    agent, methods = agent_with("1xA100-80GB")
    nv.sim_mode_waits_for_reset(0)
    on = methods.call("mig.set_mode", {"gpu": 0, "enabled": True, "reset": True})
    assert (on["mig_mode"], on["reset"]) == (True, True)
    assert nv.sim_reset_count(0) == 1
    again = methods.call("mig.set_mode", {"gpu": 0, "enabled": True, "reset": True})
    assert (again["mig_mode"], again["reset"]) == (True, False)
    assert nv.sim_reset_count(0) == 1


def test_destroy_idle_clears_idle_instances_before_mig_goes_off_never_a_busy_one():
    agent, methods = agent_with("1xH100:mig", ("3g.40gb", 0), ("1g.10gb", 6))
    busy = methods.call("inventory", {})["gpus"][0]["instances"][1]["uuid"]
    pid = nv.sim_register_process(0, 100, instance_uuid=busy)
    err = refused(methods, "mig.set_mode", gpu=0, enabled=False, destroy_idle=True)
    assert err.code == rpc.GPU_IN_USE and "in use (1g.10gb" in err.message
    assert len(nv.sim_gpu_state(0)["instances"]) == 2  # nothing destroyed
    nv.sim_remove_process(pid)
    # without destroy_idle the idle instances stop it, as before
    assert refused(methods, "mig.set_mode", gpu=0, enabled=False).code == rpc.GPU_IN_USE
    off = methods.call("mig.set_mode", {"gpu": 0, "enabled": False, "destroy_idle": True})
    assert (off["mig_mode"], off["mig_pending"]) == (False, False)
    assert nv.sim_gpu_state(0) == {"mig": False, "instances": []}


def test_hello_lists_its_features_each_a_param_its_method_takes():
    """``hello.features`` is what a client may ask of this agent beyond its methods' names:
    each names a method it serves and a param that method takes (a client that finds one
    missing asks nothing of it: an older agent would answer INVALID_PARAMS)."""
    agent, methods = agent_with("1xA100-80GB")
    hello = methods.call("hello", {})
    assert hello["features"] == ["mig.set_mode.reset", "mig.set_mode.destroy_idle"]
    table = agent.methods()
    for feature in hello["features"]:
        method, param = feature.rsplit(".", 1)
        assert method in hello["methods"] and param in table[method].params, feature


@contextlib.contextmanager
def watching(agent):
    """The agent's XID watcher running, every GPU registered; stopped on leaving."""
    stopping = threading.Event()
    watcher = threading.Thread(target=agent.xids.run, args=(stopping,), daemon=True)
    watcher.start()
    try:
        until(lambda: agent.xids.note(0) is None)  # the watcher registered every GPU
        yield
    finally:
        stopping.set()
        watcher.join(5)


def until(done, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_the_agent_steps_out_of_nvml_for_its_reset_and_watches_xids_again_after():
    """The driver refuses a reset while any NVML client is attached, the agent's own session
    included: NVML is shut down around the reset (its XID event set freed first), started
    again after, and the set made anew with every GPU; a GPU NVML then refuses to register is
    said in its XID note, and the next reset's new set watches it again."""
    agent, methods = agent_with("2xA100-80GB")
    with watching(agent):
        nv.sim_mode_waits_for_reset(0)
        nv.sim_start_trace()
        nv.sim_inject_fault("nvmlDeviceRegisterEvents", nv.NVML_ERROR_UNKNOWN)
        on = methods.call("mig.set_mode", {"gpu": 0, "enabled": True, "reset": True})
        assert (on["mig_mode"], on["reset"]) == (True, True)
        calls = nv.sim_trace()
        shut = calls.index("nvmlShutdown")
        assert calls[shut - 1] == "nvmlEventSetFree" and calls[shut + 1] == "nvmlInitWithFlags"
        assert calls[shut + 2:shut + 4] == ["nvmlDeviceGetCount", "nvmlEventSetCreate"]
        assert agent.xids.note(0).startswith("XID events are not watched on this GPU: ")
        assert "nvmlDeviceRegisterEvents" in agent.xids.note(0)
        assert agent.xids.note(1) is None  # registered in the new set
        nv.sim_raise_xid(1, 48)
        until(lambda: [e["xid"] for e in agent.xids.recent(agent.gpu_info(1).uuid)] == [48])
        off = methods.call("mig.set_mode", {"gpu": 0, "enabled": False, "reset": True})
        assert (off["mig_mode"], off["reset"]) == (False, True)
        assert agent.xids.note(0) is None  # registered again: watched
        nv.sim_raise_xid(0, 79)
        until(lambda: [e["xid"] for e in agent.xids.recent(agent.gpu_info(0).uuid)] == [79])


def test_calls_during_the_reset_wait_for_nvml_and_one_after_a_failed_start_starts_it():
    """Another thread's NVML call during the reset waits until NVML is started again (never
    NVML_ERROR_UNINITIALIZED); when starting again fails, the next call starts it."""
    agent, methods = agent_with("2xA100-80GB")
    nv.sim_mode_waits_for_reset(0)
    second = agent.call_nvml(lambda: agent.backend.gpu(1)).uuid
    read: list = []
    reset = agent.resetter.reset

    def slow_reset(uuid: str) -> None:
        reader = threading.Thread(target=lambda: read.append(
            agent.call_nvml(lambda: agent.backend.gpu(1)).uuid))
        reader.start()
        reader.join(0.3)
        assert reader.is_alive() and not read  # waiting for NVML, not failing
        reset(uuid)
        nv.sim_inject_fault("nvmlInitWithFlags", nv.NVML_ERROR_DRIVER_NOT_LOADED)
        read.append(reader)

    agent.resetter.reset = slow_reset
    nv.sim_start_trace()
    on = methods.call("mig.set_mode", {"gpu": 0, "enabled": True, "reset": True})
    assert (on["mig_mode"], on["reset"]) == (True, True)  # read back by a call that started it
    read.pop().join(5)
    assert read == [second]
    calls = nv.sim_trace()
    starts = calls[calls.index("nvmlShutdown"):].count("nvmlInitWithFlags")
    assert starts == 2 and nv.sim_reset_count(0) == 1  # the first start failed


def test_nvml_that_will_not_shut_down_leaves_the_gpu_unreset_and_xids_watched():
    agent, methods = agent_with("1xA100-80GB")
    with watching(agent):
        nv.sim_mode_waits_for_reset(0)
        nv.sim_inject_fault("nvmlShutdown", nv.NVML_ERROR_UNKNOWN)
        err = refused(methods, "mig.set_mode", gpu=0, enabled=True, reset=True)
        assert "NVML could not be shut down for the reset" in err.message
        assert err.data["rolled_back"] is True and nv.sim_reset_count(0) == 0
        assert mode(agent) == (False, False)
        assert agent.xids.note(0) is None  # its set made again
        nv.sim_raise_xid(0, 79)
        until(lambda: [e["xid"] for e in agent.xids.recent(agent.gpu_info(0).uuid)] == [79])


def test_a_watcher_that_never_started_is_not_said_to_watch_after_a_reset():
    """NVML refused the XID event set at the start: no thread waits, so the set made after a
    reset would be waited on by none; the GPUs' note keeps saying they are not watched."""
    agent, methods = agent_with("1xA100-80GB")
    nv.sim_inject_fault("nvmlEventSetCreate", nv.NVML_ERROR_NOT_SUPPORTED)
    agent.xids.run(threading.Event())  # returns at once: nothing to wait on
    said = agent.xids.note(0)
    assert said.startswith("XID events cannot be watched: ")
    nv.sim_mode_waits_for_reset(0)
    on = methods.call("mig.set_mode", {"gpu": 0, "enabled": True, "reset": True})
    assert (on["mig_mode"], on["reset"]) == (True, True)
    assert agent.xids.note(0) == said


def test_an_operation_keeps_its_handles_while_another_thread_resets_a_gpu():
    """nvmlShutdown frees every handle (the fake refuses one of an ended session): a backend
    operation that fetched a handle holds the session until it is done, and a reset of another
    GPU waits for it."""
    agent, methods = agent_with("2xA100-80GB")
    nv.sim_mode_waits_for_reset(0)
    fetched, reset_done = threading.Event(), threading.Event()
    handle = agent.backend.handle

    def slow_handle(index: int):
        found = handle(index)
        if threading.current_thread().name == "reader":
            fetched.set()
            reset_done.wait(1.0)  # a reset would run meanwhile, were the session let go
        return found

    agent.backend.handle = slow_handle
    read: list = []
    reader = threading.Thread(target=lambda: read.append(agent.backend.gpu(1)), name="reader")
    reader.start()
    assert fetched.wait(5)
    on = methods.call("mig.set_mode", {"gpu": 0, "enabled": True, "reset": True})
    reset_done.set()
    reader.join(5)
    assert [info.index for info in read] == [1]  # read whole, with its own session's handle
    assert (on["mig_mode"], on["reset"]) == (True, True)


def test_a_failed_reset_of_a_change_pending_before_leaves_it_pending_as_it_was(tmp_path,
                                                                               monkeypatch):
    """An earlier call left MIG on pending; the reset asked now fails: the GPU is as it was
    before this call (on pending), not changed back further."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'Resetting GPU is not supported.'\nexit 3\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", "%s%s%s" % (tmp_path, os.pathsep, os.environ["PATH"]))
    agent, methods = agent_with("1xA100-80GB")
    nv.sim_mode_waits_for_reset(0)
    first = methods.call("mig.set_mode", {"gpu": 0, "enabled": True})
    assert (first["mig_mode"], first["mig_pending"]) == (False, True)
    agent.resetter = SmiReset()
    err = refused(methods, "mig.set_mode", gpu=0, enabled=True, reset=True)
    assert "exited 3: Resetting GPU is not supported." in err.message
    assert err.data["rolled_back"] is True
    assert err.data["before"] == err.data["now"] == {"mig_mode": False, "mig_pending": True}
    assert mode(agent) == (False, True)


def test_xids_left_in_the_set_when_a_reset_frees_it_are_kept():
    """What came after the watcher's last wait and before the set is freed for a reset is
    read out of it first, not lost with it."""
    agent, methods = agent_with("2xA100-80GB")
    agent.xids._running = True  # the set made, no thread waiting on it: as between two waits
    assert agent.xids._make()
    nv.sim_raise_xid(1, 48)
    nv.sim_mode_waits_for_reset(0)
    methods.call("mig.set_mode", {"gpu": 0, "enabled": True, "reset": True})
    assert [e["xid"] for e in agent.xids.recent(agent.gpu_info(1).uuid)] == [48]


def test_a_renewal_nvml_refused_is_tried_again_and_a_watcher_starting_after_a_failed_restart_runs(
        monkeypatch):
    """The set NVML refused after a reset is asked again (not left unwatched until the next
    reset); a watcher that starts while NVML is still down starts it, makes one set (the
    restart's), and frees it when it stops."""
    monkeypatch.setattr(xid, "RETRY_S", 0.05)
    agent, methods = agent_with("2xA100-80GB")
    nv.sim_mode_waits_for_reset(0)
    nv.sim_inject_fault("nvmlInitWithFlags", nv.NVML_ERROR_DRIVER_NOT_LOADED)
    with agent.backend.detached():  # NVML then fails to start again: left down
        pass
    assert agent.backend._down
    with watching(agent):  # run() starts NVML, whose restart makes the set
        assert len(nv._event_sets) == 1
        nv.sim_inject_fault("nvmlEventSetCreate", nv.NVML_ERROR_UNKNOWN)
        methods.call("mig.set_mode", {"gpu": 0, "enabled": True, "reset": True})
        until(lambda: agent.xids.note(0) is None)  # asked again, and made
        nv.sim_raise_xid(1, 79)
        until(lambda: [e["xid"] for e in agent.xids.recent(agent.gpu_info(1).uuid)] == [79])
    assert nv._event_sets == {}
