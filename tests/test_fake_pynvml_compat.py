"""The fake module must be a drop-in for nvidia-ml-py's ``pynvml`` wherever it offers a name:
same function signatures, same constant values, same error classes, same structure layouts."""

from __future__ import annotations

import ctypes
import inspect

import pynvml  # nvidia-ml-py, a declared dependency: missing, this test must fail, not skip
import pytest

from remote_agent.gpu import fake_pynvml as fake

FUNCTIONS = sorted(n for n in dir(fake) if n.startswith("nvml") and callable(getattr(fake, n))
                   and not isinstance(getattr(fake, n), type))
CONSTANTS = sorted(n for n in dir(fake) if n.startswith("NVML_") and not n.startswith(
    "NVML_VALUE_NOT_AVAILABLE"))
# pynvml spells its event types and clock reasons in lower case: constants all the same
LOWER_CONSTANTS = sorted(n for n in dir(fake) if n.startswith(("nvmlEventType", "nvmlClocks"))
                         and isinstance(getattr(fake, n), int))
STRUCTS = sorted(n for n in dir(fake) if n.startswith(("c_nvml", "nvmlPciInfo"))
                 and isinstance(getattr(fake, n), type)
                 and issubclass(getattr(fake, n), ctypes.Structure))
ERROR_CLASSES = sorted(n for n in dir(fake) if n.startswith("NVMLError_"))


def _params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_the_fake_offers_what_the_agent_uses():
    assert len(FUNCTIONS) >= 35 and len(CONSTANTS) >= 50 and len(ERROR_CLASSES) >= 30


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_exists_in_pynvml_with_the_same_signature(name):
    assert hasattr(pynvml, name), "pynvml has no %s" % name
    assert _params(getattr(fake, name)) == _params(getattr(pynvml, name))


@pytest.mark.parametrize("name", CONSTANTS)
def test_constant_has_the_same_value(name):
    assert getattr(fake, name) == getattr(pynvml, name)


@pytest.mark.parametrize("name", LOWER_CONSTANTS)
def test_lower_case_constant_has_the_same_value(name):
    assert getattr(fake, name) == getattr(pynvml, name)


def test_the_health_calls_are_offered():
    wanted = {"nvmlDeviceGetTemperature", "nvmlDeviceGetTemperatureThreshold",
              "nvmlDeviceGetPowerUsage", "nvmlDeviceGetEnforcedPowerLimit",
              "nvmlDeviceGetTotalEccErrors", "nvmlDeviceGetCurrentClocksThrottleReasons",
              "nvmlDeviceGetCurrentClocksEventReasons", "nvmlEventSetCreate",
              "nvmlDeviceRegisterEvents", "nvmlEventSetWait_v2", "nvmlEventSetWait",
              "nvmlEventSetFree", "nvmlDeviceGetSupportedEventTypes"}
    assert wanted <= set(FUNCTIONS) and "c_nvmlEventData_t" in STRUCTS
    assert len(LOWER_CONSTANTS) >= 20


def test_the_topology_calls_are_offered():
    wanted = {"nvmlDeviceGetTopologyCommonAncestor", "nvmlDeviceGetP2PStatus",
              "nvmlDeviceGetNvLinkState", "nvmlDeviceGetNvLinkRemotePciInfo",
              "nvmlDeviceGetNvLinkRemoteDeviceType", "nvmlDeviceGetPciInfo"}
    assert wanted <= set(FUNCTIONS) and "nvmlPciInfo_t" in STRUCTS
    assert {"NVML_TOPOLOGY_SYSTEM", "NVML_P2P_CAPS_INDEX_NVLINK", "NVML_NVLINK_MAX_LINKS",
            "NVML_P2P_STATUS_OK"} <= set(CONSTANTS)


def test_not_available_sentinels_match():
    assert fake.NVML_VALUE_NOT_AVAILABLE_uint.value == pynvml.NVML_VALUE_NOT_AVAILABLE_uint.value
    assert (fake.NVML_VALUE_NOT_AVAILABLE_ulonglong.value
            == pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value)


@pytest.mark.parametrize("name", ERROR_CLASSES)
def test_error_classes_map_to_the_same_codes(name):
    real_cls = getattr(pynvml, name)
    fake_cls = getattr(fake, name)
    code = next(c for c, cls in pynvml.NVMLError._valClassMapping.items() if cls is real_cls)
    assert fake.NVMLError._valClassMapping[code] is fake_cls
    assert isinstance(fake.NVMLError(code), fake_cls)
    assert fake.NVMLError(code).value == code
    if code in pynvml.NVMLError._errcode_to_string:
        assert str(fake.NVMLError(code)) == pynvml.NVMLError._errcode_to_string[code]


@pytest.mark.parametrize("name", STRUCTS)
def test_structure_layout_matches(name):
    real = getattr(pynvml, name)
    fields = [f[0] for f in getattr(fake, name)._fields_]
    assert fields == [f[0] for f in real._fields_]
    assert ctypes.sizeof(getattr(fake, name)) == ctypes.sizeof(real)


def test_versioned_structs_carry_the_same_version_tag():
    for name in ("c_nvmlGpuInstanceProfileInfo_v2_t", "c_nvmlComputeInstanceProfileInfo_v2_t"):
        assert getattr(fake, name)().version == getattr(pynvml, name)().version


def test_every_throttle_reason_the_backend_names_is_pynvmls():
    from remote_agent.gpu.backend import THROTTLE_REASONS

    for _, const in THROTTLE_REASONS:
        assert getattr(pynvml, const) == getattr(fake, const), const


def test_the_process_utilisation_call_is_offered():
    """What the usage samples read: the call and its sample structure, checked above against
    nvidia-ml-py's signature and field layout like every other name."""
    assert "nvmlDeviceGetProcessUtilization" in FUNCTIONS
    assert "c_nvmlProcessUtilizationSample_t" in STRUCTS
