"""The fake NVML's health calls behave as NVML's do: values in NVML's units, INVALID_ARGUMENT
for a bad sensor or counter, NOT_SUPPORTED where the part has no ECC, event sets that deliver
only what happens after registration and time out with NVML_ERROR_TIMEOUT; and a simulated
host shares its health across processes through its state file."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from remote_agent.gpu import fake_pynvml as nv

SPEC = "1xA100-80GB:mig,1xRTX4090"


@pytest.fixture
def handles():
    nv.sim_open(None, SPEC)
    nv.nvmlInit()
    yield nv.nvmlDeviceGetHandleByIndex(0), nv.nvmlDeviceGetHandleByIndex(1)
    nv.sim_open(None, "1xL4")


def code_of(call, *args) -> int:
    with pytest.raises(nv.NVMLError) as caught:
        call(*args)
    return caught.value.value


def test_temperature_power_and_thresholds_in_nvml_units(handles):
    a100, _ = handles
    assert nv.nvmlDeviceGetTemperature(a100, nv.NVML_TEMPERATURE_GPU) == 30
    assert code_of(nv.nvmlDeviceGetTemperature, a100, 7) == nv.NVML_ERROR_INVALID_ARGUMENT
    assert nv.nvmlDeviceGetTemperatureThreshold(
        a100, nv.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN) == 89
    assert code_of(nv.nvmlDeviceGetTemperatureThreshold, a100,
                   nv.NVML_TEMPERATURE_THRESHOLD_MEM_MAX) == nv.NVML_ERROR_NOT_SUPPORTED
    assert code_of(nv.nvmlDeviceGetTemperatureThreshold, a100,
                   nv.NVML_TEMPERATURE_THRESHOLD_COUNT) == nv.NVML_ERROR_INVALID_ARGUMENT
    assert nv.nvmlDeviceGetEnforcedPowerLimit(a100) == 400_000  # milliwatts
    assert nv.nvmlDeviceGetPowerUsage(a100) == 50_000
    nv.sim_set_health(0, power_mw=312_000, temperature_c=64)
    assert nv.nvmlDeviceGetPowerUsage(a100) == 312_000
    assert nv.nvmlDeviceGetTemperature(a100, nv.NVML_TEMPERATURE_GPU) == 64


def test_ecc_counters_by_type_and_counter_and_none_on_a_consumer_part(handles):
    a100, rtx = handles
    nv.sim_add_ecc_errors(0, corrected=3, uncorrected=1)
    counts = {(e, c): nv.nvmlDeviceGetTotalEccErrors(a100, e, c)
              for e in (nv.NVML_MEMORY_ERROR_TYPE_CORRECTED, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED)
              for c in (nv.NVML_VOLATILE_ECC, nv.NVML_AGGREGATE_ECC)}
    assert counts == {(0, 0): 3, (0, 1): 3, (1, 0): 1, (1, 1): 1}
    assert code_of(nv.nvmlDeviceGetTotalEccErrors, a100, 2, 0) == nv.NVML_ERROR_INVALID_ARGUMENT
    assert code_of(nv.nvmlDeviceGetTotalEccErrors, a100, 0, 2) == nv.NVML_ERROR_INVALID_ARGUMENT
    assert code_of(nv.nvmlDeviceGetTotalEccErrors, rtx, 1, 0) == nv.NVML_ERROR_NOT_SUPPORTED
    with pytest.raises(ValueError, match="has no ECC"):
        nv.sim_add_ecc_errors(1, uncorrected=1)


def test_throttle_reasons_by_either_name_follow_load_heat_and_what_sim_sets(handles):
    a100, _ = handles
    assert nv.nvmlDeviceGetCurrentClocksThrottleReasons(a100) == \
        nv.nvmlClocksThrottleReasonGpuIdle
    nv.sim_set_health(0, temperature_c=89, throttle=nv.nvmlClocksThrottleReasonHwSlowdown)
    want = (nv.nvmlClocksThrottleReasonGpuIdle | nv.nvmlClocksThrottleReasonSwThermalSlowdown
            | nv.nvmlClocksThrottleReasonHwSlowdown)
    assert nv.nvmlDeviceGetCurrentClocksThrottleReasons(a100) == want
    assert nv.nvmlDeviceGetCurrentClocksEventReasons(a100) == want
    assert nv.nvmlDeviceGetSupportedClocksEventReasons(a100) == nv.nvmlClocksEventReasonAll
    with pytest.raises(ValueError, match="no simulated health field colour"):
        nv.sim_set_health(0, colour=1)


def test_a_mig_device_handle_is_not_a_device_for_health(handles):
    a100, _ = handles
    nv.nvmlDeviceSetMigMode(a100, nv.NVML_DEVICE_MIG_ENABLE)
    info = nv.nvmlDeviceGetGpuInstanceProfileInfo(a100, nv.NVML_GPU_INSTANCE_PROFILE_7_SLICE)
    placement = nv.c_nvmlGpuInstancePlacement_t()
    placement.start, placement.size = 0, 8
    gi = nv.nvmlDeviceCreateGpuInstanceWithPlacement(a100, info.id, placement)
    ci_info = nv.nvmlGpuInstanceGetComputeInstanceProfileInfo(
        gi, nv.NVML_COMPUTE_INSTANCE_PROFILE_7_SLICE,
        nv.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
    nv.nvmlGpuInstanceCreateComputeInstance(gi, ci_info.id)
    mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(a100, 0)
    assert code_of(nv.nvmlDeviceGetTemperature, mig, nv.NVML_TEMPERATURE_GPU) == \
        nv.NVML_ERROR_INVALID_ARGUMENT


def test_events_come_only_after_registration_only_of_registered_types(handles):
    a100, rtx = handles
    nv.sim_raise_xid(0, 31)  # before the set exists: never delivered
    events = nv.nvmlEventSetCreate()
    assert code_of(nv.nvmlEventSetWait_v2, events, 0) == nv.NVML_ERROR_TIMEOUT
    nv.nvmlDeviceRegisterEvents(a100, nv.nvmlEventTypeXidCriticalError, events)
    assert code_of(nv.nvmlEventSetWait_v2, events, 20) == nv.NVML_ERROR_TIMEOUT
    nv.sim_raise_xid(1, 13)  # a GPU the set is not registered for
    nv.sim_raise_xid(0, 79)
    data = nv.nvmlEventSetWait(events, 1000)
    assert isinstance(data, nv.c_nvmlEventData_t)
    assert (data.eventType, data.eventData) == (nv.nvmlEventTypeXidCriticalError, 79)
    assert nv.nvmlDeviceGetIndex(data.device) == 0
    assert (data.gpuInstanceId, data.computeInstanceId) == (0xFFFFFFFF, 0xFFFFFFFF)
    assert code_of(nv.nvmlEventSetWait_v2, events, 0) == nv.NVML_ERROR_TIMEOUT
    nv.nvmlEventSetFree(events)
    nv.nvmlEventSetCreate()  # a new set never takes a freed one's place
    assert code_of(nv.nvmlEventSetWait_v2, events, 0) == nv.NVML_ERROR_INVALID_ARGUMENT


def test_registering_an_unsupported_event_type_is_refused(handles):
    _, rtx = handles
    events = nv.nvmlEventSetCreate()
    supported = nv.nvmlDeviceGetSupportedEventTypes(rtx)
    assert supported & nv.nvmlEventTypeXidCriticalError
    assert not supported & nv.nvmlEventTypeDoubleBitEccError  # no ECC on this part
    assert code_of(nv.nvmlDeviceRegisterEvents, rtx, nv.nvmlEventTypeDoubleBitEccError,
                   events) == nv.NVML_ERROR_NOT_SUPPORTED


def test_a_waiting_call_lets_other_calls_go_on(handles):
    a100, _ = handles
    events = nv.nvmlEventSetCreate()
    nv.nvmlDeviceRegisterEvents(a100, nv.nvmlEventTypeXidCriticalError, events)
    got = []
    waiter = threading.Thread(target=lambda: got.append(nv.nvmlEventSetWait_v2(events, 5000)))
    waiter.start()
    # made while the waiter waits: the simulator's lock must be free for these
    assert nv.nvmlDeviceGetTemperature(a100, nv.NVML_TEMPERATURE_GPU) == 30
    nv.sim_raise_xid(0, 48)
    waiter.join(10)
    assert [d.eventData for d in got] == [48]


def test_an_xid_raised_by_another_process_reaches_a_waiting_set(tmp_path):
    state = str(tmp_path / "sim-gpus.json")
    nv.sim_open(state, SPEC)
    nv.nvmlInit()
    try:
        events = nv.nvmlEventSetCreate()
        nv.nvmlDeviceRegisterEvents(nv.nvmlDeviceGetHandleByIndex(1),
                                    nv.nvmlEventTypeXidCriticalError, events)
        subprocess.run([sys.executable, "-c", (
            "from remote_agent.gpu import fake_pynvml as nv\n"
            "nv.sim_open(%r)\nnv.sim_raise_xid(1, 94)\n") % state], check=True)
        data = nv.nvmlEventSetWait_v2(events, 5000)
        assert (nv.nvmlDeviceGetIndex(data.device), data.eventData) == (1, 94)
    finally:
        nv.sim_open(None, "1xL4")
