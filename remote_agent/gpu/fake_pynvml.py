"""A faithful stand-in for nvidia-ml-py's ``pynvml`` module, backed by a simulated host.

Same function names, positional signatures, constants, ``NVMLError`` classes and codes, and
ctypes out-parameter conventions as nvidia-ml-py 13.x for every call the agent makes, so code
that passes here passes on real NVML (tests/test_fake_pynvml_compat.py checks this against the
installed nvidia-ml-py). The GPUs come from mig_profiles.json and obey real MIG rules: placement
starts and sizes, per-profile instance counts, the compute-slice budget, ``IN_USE`` when
destroying an instance that still has compute instances or processes, ``INSUFFICIENT_RESOURCES``
on overlap, MIG mode changes only on an idle GPU. Health reads (temperature, power, ECC counters,
clock throttle reasons) follow the load unless a test overrides them, and XID errors reach NVML
event sets as events do: only those registered before, to a caller that waits. A GPU reset is
refused while any process holds an NVML session attached, as the driver refuses it.

State lives in one JSON file (``sim_open(path, spec)``) shared by every process of the host — the
agent, and simulated workloads registering their memory use — so a restarted agent sees the
layout a real GPU would still have. ``path=None`` keeps it in memory (property tests). A process
registers its pid with its pid namespace; a reader in another namespace (the agent on the host,
a workload in a container) sees it by its pid there, as real NVML reports host pids for
processes in containers, and each process judges only its own namespace's entries dead; a
writer in the root namespace that can see every process also drops the entries of a namespace
no process is in any more (a container that ended while its process had GPU memory).
Everything that is not part of pynvml's API is named ``sim_*``.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import functools
import itertools
import json
import os
import select
import string
import threading
import time
import uuid as uuidlib
from ctypes import POINTER, Structure, c_char, c_char_p, c_int, c_uint, c_ulonglong, pointer
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple, Union

from remote_agent.daemon.trust import open_private, read_private, write_private
from remote_agent.gpu import models as _models
from remote_agent.jobs import procs

# --- constants (values as in nvidia-ml-py) ----------------------------------------------------

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_VGPU_ECC_NOT_SUPPORTED = 22
NVML_ERROR_INSUFFICIENT_RESOURCES = 23
NVML_ERROR_FREQ_NOT_SUPPORTED = 24
NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25
NVML_ERROR_DEPRECATED = 26
NVML_ERROR_NOT_READY = 27
NVML_ERROR_GPU_NOT_FOUND = 28
NVML_ERROR_INVALID_STATE = 29
NVML_ERROR_RESET_TYPE_NOT_SUPPORTED = 30
NVML_ERROR_UNKNOWN = 999

NVML_FEATURE_DISABLED = 0
NVML_FEATURE_ENABLED = 1

NVML_DEVICE_UUID_BUFFER_SIZE = 80
NVML_DEVICE_UUID_V2_BUFFER_SIZE = 96
NVML_DEVICE_NAME_BUFFER_SIZE = 64
NVML_DEVICE_NAME_V2_BUFFER_SIZE = 96

NVML_DEVICE_MIG_DISABLE = 0x0
NVML_DEVICE_MIG_ENABLE = 0x1

NVML_GPU_INSTANCE_PROFILE_1_SLICE = 0x0
NVML_GPU_INSTANCE_PROFILE_2_SLICE = 0x1
NVML_GPU_INSTANCE_PROFILE_3_SLICE = 0x2
NVML_GPU_INSTANCE_PROFILE_4_SLICE = 0x3
NVML_GPU_INSTANCE_PROFILE_7_SLICE = 0x4
NVML_GPU_INSTANCE_PROFILE_8_SLICE = 0x5
NVML_GPU_INSTANCE_PROFILE_6_SLICE = 0x6
NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1 = 0x7
NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1 = 0x8
NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2 = 0x9
NVML_GPU_INSTANCE_PROFILE_1_SLICE_GFX = 0xA
NVML_GPU_INSTANCE_PROFILE_2_SLICE_GFX = 0xB
NVML_GPU_INSTANCE_PROFILE_4_SLICE_GFX = 0xC
NVML_GPU_INSTANCE_PROFILE_1_SLICE_NO_ME = 0xD
NVML_GPU_INSTANCE_PROFILE_2_SLICE_NO_ME = 0xE
NVML_GPU_INSTANCE_PROFILE_1_SLICE_ALL_ME = 0xF
NVML_GPU_INSTANCE_PROFILE_2_SLICE_ALL_ME = 0x10
NVML_GPU_INSTANCE_PROFILE_3_SLICE_GFX = 0x11
NVML_GPU_INSTANCE_PROFILE_COUNT = 0x12

NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE = 0x0
NVML_COMPUTE_INSTANCE_PROFILE_2_SLICE = 0x1
NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE = 0x2
NVML_COMPUTE_INSTANCE_PROFILE_4_SLICE = 0x3
NVML_COMPUTE_INSTANCE_PROFILE_7_SLICE = 0x4
NVML_COMPUTE_INSTANCE_PROFILE_8_SLICE = 0x5
NVML_COMPUTE_INSTANCE_PROFILE_6_SLICE = 0x6
NVML_COMPUTE_INSTANCE_PROFILE_COUNT = 0x9

NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED = 0x0

NVML_DEVICE_MEMORY_LIMIT_MAX = 0xFFFFFFFFFFFFFFFF

NVML_VALUE_NOT_AVAILABLE_uint = c_uint(-1)
NVML_VALUE_NOT_AVAILABLE_ulonglong = c_ulonglong(-1)

NVML_TEMPERATURE_GPU = 0
NVML_TEMPERATURE_COUNT = 2

NVML_TEMPERATURE_THRESHOLD_SHUTDOWN = 0
NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1
NVML_TEMPERATURE_THRESHOLD_MEM_MAX = 2
NVML_TEMPERATURE_THRESHOLD_GPU_MAX = 3
NVML_TEMPERATURE_THRESHOLD_COUNT = 8

NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_ECC_COUNTER_TYPE_COUNT = 2

NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_MEMORY_ERROR_TYPE_COUNT = 2

nvmlEventTypeSingleBitEccError = 0x0000000000000001
nvmlEventTypeDoubleBitEccError = 0x0000000000000002
nvmlEventTypePState = 0x0000000000000004
nvmlEventTypeXidCriticalError = 0x0000000000000008
nvmlEventTypeClock = 0x0000000000000010
nvmlEventTypePowerSourceChange = 0x0000000000000080
nvmlEventMigConfigChange = 0x0000000000000100
nvmlEventTypeSingleBitEccErrorStorm = 0x0000000000000200
nvmlEventTypeDramRetirementEvent = 0x0000000000000400
nvmlEventTypeDramRetirementFailure = 0x0000000000000800
nvmlEventTypeNonFatalPoisonError = 0x0000000000001000
nvmlEventTypeFatalPoisonError = 0x0000000000002000
nvmlEventTypeGpuUnavailableError = 0x0000000000004000
nvmlEventTypeGpuRecoveryAction = 0x0000000000008000
nvmlEventTypeNone = 0x0000000000000000
nvmlEventTypeAll = (nvmlEventTypeNone | nvmlEventTypeSingleBitEccError
                    | nvmlEventTypeDoubleBitEccError | nvmlEventTypePState | nvmlEventTypeClock
                    | nvmlEventTypePowerSourceChange | nvmlEventTypeXidCriticalError
                    | nvmlEventMigConfigChange | nvmlEventTypeSingleBitEccErrorStorm
                    | nvmlEventTypeDramRetirementEvent
                    | nvmlEventTypeDramRetirementFailure | nvmlEventTypeNonFatalPoisonError
                    | nvmlEventTypeFatalPoisonError | nvmlEventTypeGpuUnavailableError
                    | nvmlEventTypeGpuRecoveryAction)

nvmlClocksThrottleReasonGpuIdle = 0x0000000000000001
nvmlClocksThrottleReasonApplicationsClocksSetting = 0x0000000000000002
nvmlClocksThrottleReasonSwPowerCap = 0x0000000000000004
nvmlClocksThrottleReasonHwSlowdown = 0x0000000000000008
nvmlClocksThrottleReasonSyncBoost = 0x0000000000000010
nvmlClocksThrottleReasonSwThermalSlowdown = 0x0000000000000020
nvmlClocksThrottleReasonHwThermalSlowdown = 0x0000000000000040
nvmlClocksThrottleReasonHwPowerBrakeSlowdown = 0x0000000000000080
nvmlClocksThrottleReasonDisplayClockSetting = 0x0000000000000100
nvmlClocksThrottleReasonBoardLimit = 0x0000000000000200
nvmlClocksThrottleReasonReliability = 0x0000000000000400
nvmlClocksThrottleReasonNone = 0x0000000000000000
_CLOCKS_EVENT_REASONS = (
    nvmlClocksThrottleReasonGpuIdle | nvmlClocksThrottleReasonApplicationsClocksSetting
    | nvmlClocksThrottleReasonSwPowerCap | nvmlClocksThrottleReasonHwSlowdown
    | nvmlClocksThrottleReasonSyncBoost | nvmlClocksThrottleReasonSwThermalSlowdown
    | nvmlClocksThrottleReasonHwThermalSlowdown | nvmlClocksThrottleReasonHwPowerBrakeSlowdown
    | nvmlClocksThrottleReasonDisplayClockSetting)
nvmlClocksThrottleReasonAll = (_CLOCKS_EVENT_REASONS | nvmlClocksThrottleReasonBoardLimit
                               | nvmlClocksThrottleReasonReliability)
# the newer names of the same bits (pynvml keeps both)
nvmlClocksEventReasonGpuIdle = nvmlClocksThrottleReasonGpuIdle
nvmlClocksEventReasonApplicationsClocksSetting = nvmlClocksThrottleReasonApplicationsClocksSetting
nvmlClocksEventReasonSwPowerCap = nvmlClocksThrottleReasonSwPowerCap
nvmlClocksEventReasonHwSlowdown = nvmlClocksThrottleReasonHwSlowdown
nvmlClocksEventReasonSyncBoost = nvmlClocksThrottleReasonSyncBoost
nvmlClocksEventReasonSwThermalSlowdown = nvmlClocksThrottleReasonSwThermalSlowdown
nvmlClocksEventReasonHwThermalSlowdown = nvmlClocksThrottleReasonHwThermalSlowdown
nvmlClocksEventReasonHwPowerBrakeSlowdown = nvmlClocksThrottleReasonHwPowerBrakeSlowdown
nvmlClocksEventReasonDisplayClockSetting = nvmlClocksThrottleReasonDisplayClockSetting
nvmlClocksEventReasonNone = nvmlClocksThrottleReasonNone
nvmlClocksEventReasonAll = _CLOCKS_EVENT_REASONS

NVML_TOPOLOGY_INTERNAL = 0
NVML_TOPOLOGY_SINGLE = 10
NVML_TOPOLOGY_MULTIPLE = 20
NVML_TOPOLOGY_HOSTBRIDGE = 30
NVML_TOPOLOGY_NODE = 40
NVML_TOPOLOGY_CPU = NVML_TOPOLOGY_NODE
NVML_TOPOLOGY_SYSTEM = 50

# pynvml spells NVML_P2P_CAPS_INDEX_READ as the tuple (0,) (a stray comma), so it is left out
# here; the C API's index 0 is READ all the same.
NVML_P2P_CAPS_INDEX_WRITE = 1
NVML_P2P_CAPS_INDEX_NVLINK = 2
NVML_P2P_CAPS_INDEX_ATOMICS = 3
NVML_P2P_CAPS_INDEX_PROP = 4
NVML_P2P_CAPS_INDEX_PCI = 4
NVML_P2P_CAPS_INDEX_UNKNOWN = 5

NVML_P2P_STATUS_OK = 0
NVML_P2P_STATUS_CHIPSET_NOT_SUPPORED = 1
NVML_P2P_STATUS_CHIPSET_NOT_SUPPORTED = NVML_P2P_STATUS_CHIPSET_NOT_SUPPORED
NVML_P2P_STATUS_GPU_NOT_SUPPORTED = 2
NVML_P2P_STATUS_IOH_TOPOLOGY_NOT_SUPPORTED = 3
NVML_P2P_STATUS_DISABLED_BY_REGKEY = 4
NVML_P2P_STATUS_NOT_SUPPORTED = 5
NVML_P2P_STATUS_UNKNOWN = 6

NVML_NVLINK_MAX_LINKS = 36
NVML_NVLINK_DEVICE_TYPE_GPU = 0x00
NVML_NVLINK_DEVICE_TYPE_IBMNPU = 0x01
NVML_NVLINK_DEVICE_TYPE_SWITCH = 0x02
NVML_NVLINK_DEVICE_TYPE_UNKNOWN = 0xFF

NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE = 32
NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE = 16

nvmlGpuInstanceProfileInfo_v2 = 0x02000098
nvmlComputeInstanceProfileInfo_v2 = 0x02000088
nvmlMemory_v2 = 0x02000028

# What libnvidia-ml's nvmlErrorString says for codes pynvml has no text of its own for.
_LIBRARY_ERROR_STRINGS = {
    NVML_ERROR_IN_USE: "In use by another client",
    NVML_ERROR_NO_DATA: "No data",
    NVML_ERROR_VGPU_ECC_NOT_SUPPORTED: "vGPU ECC not supported",
    NVML_ERROR_INSUFFICIENT_RESOURCES: "Insufficient resources",
    NVML_ERROR_FREQ_NOT_SUPPORTED: "Frequency not supported",
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH: "Argument version mismatch",
    NVML_ERROR_DEPRECATED: "Deprecated",
    NVML_ERROR_NOT_READY: "Not ready",
    NVML_ERROR_GPU_NOT_FOUND: "GPU not found",
    NVML_ERROR_INVALID_STATE: "Invalid state",
    NVML_ERROR_RESET_TYPE_NOT_SUPPORTED: "Reset type not supported",
}

# --- errors: the same class hierarchy pynvml builds ---------------------------------------------


class NVMLError(Exception):
    _valClassMapping: Dict[int, type] = dict()
    _errcode_to_string = {
        NVML_ERROR_UNINITIALIZED: "Uninitialized",
        NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
        NVML_ERROR_NOT_SUPPORTED: "Not Supported",
        NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
        NVML_ERROR_ALREADY_INITIALIZED: "Already Initialized",
        NVML_ERROR_NOT_FOUND: "Not Found",
        NVML_ERROR_INSUFFICIENT_SIZE: "Insufficient Size",
        NVML_ERROR_INSUFFICIENT_POWER: "Insufficient External Power",
        NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
        NVML_ERROR_TIMEOUT: "Timeout",
        NVML_ERROR_IRQ_ISSUE: "Interrupt Request Issue",
        NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
        NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
        NVML_ERROR_CORRUPTED_INFOROM: "Corrupted infoROM",
        NVML_ERROR_GPU_IS_LOST: "GPU is lost",
        NVML_ERROR_RESET_REQUIRED: "GPU requires restart",
        NVML_ERROR_OPERATING_SYSTEM: "The operating system has blocked the request.",
        NVML_ERROR_LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
        NVML_ERROR_MEMORY: "Insufficient Memory",
        NVML_ERROR_UNKNOWN: "Unknown Error",
    }

    def __new__(typ, value):
        if typ == NVMLError:
            typ = NVMLError._valClassMapping.get(value, typ)
        obj = Exception.__new__(typ)
        obj.value = value
        return obj

    def __str__(self):
        fallback = _LIBRARY_ERROR_STRINGS.get(self.value, "NVML Error with code %d" % self.value)
        return NVMLError._errcode_to_string.get(self.value, fallback)

    def __eq__(self, other):
        return isinstance(other, NVMLError) and self.value == other.value

    def __hash__(self):
        return hash(self.value)


def nvmlExceptionClass(nvmlErrorCode):
    if nvmlErrorCode not in NVMLError._valClassMapping:
        raise ValueError("nvmlErrorCode %s is not valid" % nvmlErrorCode)
    return NVMLError._valClassMapping[nvmlErrorCode]


def _extract_error_classes() -> None:
    # e.g. NVML_ERROR_IN_USE -> NVMLError_InUse, exactly as pynvml names them.
    module = globals()
    for err_name in [n for n in list(module) if n.startswith("NVML_ERROR_")]:
        class_name = "NVMLError_" + string.capwords(
            err_name.replace("NVML_ERROR_", ""), "_").replace("_", "")
        err_val = module[err_name]

        def gen_new(val):
            def new(typ, *args):
                return NVMLError.__new__(typ, val)
            return new

        cls = type(class_name, (NVMLError,), {"__new__": gen_new(err_val)})
        cls.__module__ = __name__
        module[class_name] = cls
        NVMLError._valClassMapping[err_val] = cls


_extract_error_classes()

# --- structures: field layouts as in pynvml; handle structs carry the simulator's ids ----------


class struct_c_nvmlDevice_t(Structure):
    _fields_ = [("sim_gpu", c_int), ("sim_gi", c_int), ("sim_ci", c_int), ("sim_session", c_int)]


c_nvmlDevice_t = POINTER(struct_c_nvmlDevice_t)


class struct_c_nvmlGpuInstance_t(Structure):
    _fields_ = [("sim_gpu", c_int), ("sim_gi", c_int), ("sim_session", c_int)]


c_nvmlGpuInstance_t = POINTER(struct_c_nvmlGpuInstance_t)


class struct_c_nvmlComputeInstance_t(Structure):
    _fields_ = [("sim_gpu", c_int), ("sim_gi", c_int), ("sim_ci", c_int),
                ("sim_session", c_int)]


c_nvmlComputeInstance_t = POINTER(struct_c_nvmlComputeInstance_t)


class c_nvmlMemory_t(Structure):
    _fields_ = [("total", c_ulonglong), ("free", c_ulonglong), ("used", c_ulonglong)]


class c_nvmlMemory_v2_t(Structure):
    _fields_ = [("version", c_uint), ("total", c_ulonglong), ("reserved", c_ulonglong),
                ("free", c_ulonglong), ("used", c_ulonglong)]


class c_nvmlUtilization_t(Structure):
    _fields_ = [("gpu", c_uint), ("memory", c_uint)]


class c_nvmlProcessUtilizationSample_t(Structure):
    _fields_ = [("pid", c_uint), ("timeStamp", c_ulonglong), ("smUtil", c_uint),
                ("memUtil", c_uint), ("encUtil", c_uint), ("decUtil", c_uint)]


class c_nvmlProcessInfo_v2_t(Structure):
    _fields_ = [("pid", c_uint), ("usedGpuMemory", c_ulonglong), ("gpuInstanceId", c_uint),
                ("computeInstanceId", c_uint)]


c_nvmlProcessInfo_t = c_nvmlProcessInfo_v2_t


class c_nvmlGpuInstancePlacement_t(Structure):
    _fields_ = [("start", c_uint), ("size", c_uint)]


class c_nvmlGpuInstanceProfileInfo_t(Structure):
    _fields_ = [("id", c_uint), ("isP2pSupported", c_uint), ("sliceCount", c_uint),
                ("instanceCount", c_uint), ("multiprocessorCount", c_uint),
                ("copyEngineCount", c_uint), ("decoderCount", c_uint), ("encoderCount", c_uint),
                ("jpegCount", c_uint), ("ofaCount", c_uint), ("memorySizeMB", c_ulonglong)]


class c_nvmlGpuInstanceProfileInfo_v2_t(Structure):
    _fields_ = [("version", c_uint), ("id", c_uint), ("isP2pSupported", c_uint),
                ("sliceCount", c_uint), ("instanceCount", c_uint),
                ("multiprocessorCount", c_uint), ("copyEngineCount", c_uint),
                ("decoderCount", c_uint), ("encoderCount", c_uint), ("jpegCount", c_uint),
                ("ofaCount", c_uint), ("memorySizeMB", c_ulonglong),
                ("name", c_char * NVML_DEVICE_NAME_V2_BUFFER_SIZE)]

    def __init__(self):
        super().__init__(version=nvmlGpuInstanceProfileInfo_v2)


class c_nvmlGpuInstanceInfo_t(Structure):
    _fields_ = [("device", c_nvmlDevice_t), ("id", c_uint), ("profileId", c_uint),
                ("placement", c_nvmlGpuInstancePlacement_t)]


class c_nvmlComputeInstancePlacement_t(Structure):
    _fields_ = [("start", c_uint), ("size", c_uint)]


class c_nvmlComputeInstanceProfileInfo_t(Structure):
    _fields_ = [("id", c_uint), ("sliceCount", c_uint), ("instanceCount", c_uint),
                ("multiprocessorCount", c_uint), ("sharedCopyEngineCount", c_uint),
                ("sharedDecoderCount", c_uint), ("sharedEncoderCount", c_uint),
                ("sharedJpegCount", c_uint), ("sharedOfaCount", c_uint)]


class c_nvmlComputeInstanceProfileInfo_v2_t(Structure):
    _fields_ = [("version", c_uint), ("id", c_uint), ("sliceCount", c_uint),
                ("instanceCount", c_uint), ("multiprocessorCount", c_uint),
                ("sharedCopyEngineCount", c_uint), ("sharedDecoderCount", c_uint),
                ("sharedEncoderCount", c_uint), ("sharedJpegCount", c_uint),
                ("sharedOfaCount", c_uint), ("name", c_char * NVML_DEVICE_NAME_V2_BUFFER_SIZE)]

    def __init__(self):
        super().__init__(version=nvmlComputeInstanceProfileInfo_v2)


class c_nvmlComputeInstanceInfo_t(Structure):
    _fields_ = [("device", c_nvmlDevice_t), ("gpuInstance", c_nvmlGpuInstance_t), ("id", c_uint),
                ("profileId", c_uint), ("placement", c_nvmlComputeInstancePlacement_t)]


class c_nvmlSetMemoryLimits_v1_t(Structure):
    _fields_ = [("nameSpace", c_char_p), ("softLimit", c_ulonglong), ("hardLimit", c_ulonglong)]


class c_nvmlGetMemoryLimits_v1_t(Structure):
    _fields_ = [("nameSpace", c_char_p), ("softLimit", c_ulonglong), ("hardLimit", c_ulonglong),
                ("currentUsed", c_ulonglong)]


class nvmlPciInfo_t(Structure):
    _fields_ = [("busIdLegacy", c_char * NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE),
                ("domain", c_uint), ("bus", c_uint), ("device", c_uint),
                ("pciDeviceId", c_uint), ("pciSubSystemId", c_uint),
                ("busId", c_char * NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE)]


class struct_c_nvmlEventSet_t(Structure):
    _fields_ = [("sim_set", c_int)]  # opaque in pynvml; here the simulator's id of the set


c_nvmlEventSet_t = POINTER(struct_c_nvmlEventSet_t)


class c_nvmlEventData_t(Structure):
    _fields_ = [("device", c_nvmlDevice_t), ("eventType", c_ulonglong),
                ("eventData", c_ulonglong), ("gpuInstanceId", c_uint),
                ("computeInstanceId", c_uint)]


class nvmlFriendlyObject(object):
    def __init__(self, dictionary):
        for x in dictionary:
            setattr(self, x, dictionary[x])

    def __str__(self):
        return self.__dict__.__str__()


# --- the simulated host -------------------------------------------------------------------------

# Linux pids never reach 2**22, so registered workloads without a real process get pids above it
# and are treated as alive until removed.
SYNTHETIC_PID_BASE = 1 << 22
ROOT_PID_NS = 0xEFFFFFFC  # the initial pid namespace's inode (the kernel's PROC_PID_INIT_INO)
_NA_UINT = 0xFFFFFFFF
_MIB = 1024 * 1024
_DRIVER_VERSION = "580.82.07"
_CI_PROFILE_SLICES = {
    NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE: 1, NVML_COMPUTE_INSTANCE_PROFILE_2_SLICE: 2,
    NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE: 3, NVML_COMPUTE_INSTANCE_PROFILE_4_SLICE: 4,
    NVML_COMPUTE_INSTANCE_PROFILE_6_SLICE: 6, NVML_COMPUTE_INSTANCE_PROFILE_7_SLICE: 7,
    NVML_COMPUTE_INSTANCE_PROFILE_8_SLICE: 8,
}


def _pid_alive(pid: int) -> bool:
    """Whether a registered process still holds its GPU memory: a real GPU frees it when the
    process exits, so a zombie (ended, not yet reaped by its parent) holds none."""
    if pid >= SYNTHETIC_PID_BASE:
        return True
    ended = _PIDFDS.ended(pid)
    return _stat_alive(pid) if ended is None else not ended


class _PidFds:
    """A pidfd per process asked about, so that whether it ended is one poll(2) rather than a
    /proc read: an agent's snapshot asks about every process on a GPU for each of its readings,
    several times a second, and a real NVML answers from the driver. A pidfd polls readable
    once its process has exited, zombie or reaped, and never names a later process with the
    same pid. A pidfd that says ended is closed and the pid opened again: the number may be a
    newer process's, which is then the one asked about, as a /proc read would find it. At most
    ``KEPT`` are kept (a host's file limit is often 1024), ended ones are let go as the table
    grows, all of them when opening one fails (out of descriptors, the /proc read that answers
    instead needs one), and a forked child closes its copies. ``ended`` answers None where no
    pidfd is to be had (a kernel before 5.3, a sandbox that refuses it, no descriptor left)."""

    KEPT = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fds: Dict[int, int] = {}
        self._sweep_at = 64
        self._usable = hasattr(os, "pidfd_open")

    def ended(self, pid: int) -> Optional[bool]:
        with self._lock:
            if not self._usable:
                return None
            if pid in self._fds and not self._drop_if_ended(pid):
                return False
            try:
                fd = os.pidfd_open(pid)  # type: ignore[attr-defined]
            except ProcessLookupError:
                return True
            except OSError as e:
                self._let_go()
                if e.errno in (errno.ENOSYS, errno.EPERM):  # none here: /proc from now on
                    self._usable = False
                return None
            if _readable(fd):
                os.close(fd)
                return True
            if len(self._fds) >= self._sweep_at:  # processes no longer asked about: let go
                for p in list(self._fds):
                    self._drop_if_ended(p)
                self._sweep_at = max(64, 2 * len(self._fds))
            if len(self._fds) < self.KEPT:
                self._fds[pid] = fd
            else:
                os.close(fd)
            return False

    def _drop_if_ended(self, pid: int) -> bool:
        """Close and forget the pidfd of ``pid`` if its process ended; whether it did."""
        fd = self._fds[pid]
        if not _readable(fd):
            return False
        del self._fds[pid]
        os.close(fd)
        return True

    def _let_go(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}

    def forked(self) -> None:
        """In a forked child: its copies of the parent's pidfds closed, a lock of its own."""
        self._lock = threading.Lock()
        self._let_go()


def _readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


_PIDFDS = _PidFds()
os.register_at_fork(after_in_child=_PIDFDS.forked)


def _stat_alive(pid: int) -> bool:
    """/proc's answer, where no pidfd is to be had, read as the watchdog reads it: a process
    whose main thread ended while others run on reads Z and still holds its memory."""
    return procs.proc_info(pid) is not None


def _own_pid_ns() -> Optional[int]:
    """This process's pid namespace (its inode), which the pids it registers are numbers in."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def _own_entry(p: Dict[str, Any], own: Optional[int]) -> bool:
    """Whether this process can judge entry ``p`` by its pid: one registered in its own pid
    namespace (or a synthetic one, or one recorded before namespaces were)."""
    return p.get("ns") is None or p["ns"] == own or p["pid"] >= SYNTHETIC_PID_BASE


def _living_namespaces(own: Optional[int],
                       procs: List[Dict[str, Any]]) -> Optional[Set[int]]:
    """Every pid namespace some process of the host is in, where this process can tell (it is
    in the root namespace and can see every process's); None where it cannot, or no entry is
    of another namespace. An entry of a namespace no process is in any more ended with it."""
    if own != ROOT_PID_NS or all(_own_entry(p, own) for p in procs):
        return None
    living: Set[int] = {own}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            living.add(os.stat("/proc/%s/ns/pid" % name).st_ino)
            continue
        except FileNotFoundError:
            continue  # it ended meanwhile
        except OSError:
            pass  # a process this one may not inspect: its NSpid says whether it is in ours
        try:
            with open("/proc/%s/status" % name, "rb") as f:
                nspid = next(x for x in f if x.startswith(b"NSpid:")).split()[1:]
        except FileNotFoundError:
            continue
        except (OSError, StopIteration):
            return None
        if len(nspid) != 1:
            return None  # in a namespace below ours, which this process cannot name
    return living


def _pids_by_namespace() -> Dict[Tuple[int, int], int]:
    """(pid namespace, pid in it) -> pid here, for every process this one can see: what the
    kernel's NSpid says (a process's last NSpid is its pid in its own namespace)."""
    found: Dict[Tuple[int, int], int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            ns = os.stat("/proc/%s/ns/pid" % name).st_ino
            with open("/proc/%s/status" % name, "rb") as f:
                line = next(x for x in f if x.startswith(b"NSpid:"))
        except (OSError, StopIteration):
            continue
        found[ns, int(line.split()[-1])] = int(name)
    return found


def _new_state(spec: str) -> Dict[str, Any]:
    gpus = []
    for sim in _models.parse_sim_host(spec).gpus:
        gpus.append({"model": sim.model.name, "uuid": "GPU-%s" % uuidlib.uuid4(),
                     "mig": 1 if sim.mig else 0, "gis": []})
    return {"format": 1, "spec": spec, "gpus": gpus, "procs": [],
            "next_pid": SYNTHETIC_PID_BASE + 1}


def _checked(path: str, data: bytes) -> Dict[str, Any]:
    """The simulated host's state as kept at ``path``, or ValueError naming the file and
    what is wrong with it (cut short, edited by hand): not a traceback at some NVML call."""
    try:
        state = json.loads(data.decode())
        if not isinstance(state, dict) or state.get("format") != 1:
            raise TypeError("not a simulated host of format 1")
        if not isinstance(state["spec"], str):
            raise TypeError("spec of another type")
        _models.parse_sim_host(state["spec"])
        if not isinstance(state["next_pid"], int) or not all(
                isinstance(state.get(k, []), list) for k in ("gpus", "procs", "clients")):
            raise TypeError("next_pid, gpus, procs or clients of another type")
        for i, g in enumerate(state["gpus"]):
            if not (isinstance(g, dict) and g["model"] in _models.models() and isinstance(
                    g["uuid"], str) and g["mig"] in (0, 1) and isinstance(g["gis"], list)):
                raise TypeError("GPU %d is not a simulated GPU" % i)
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError("the simulated host's state %s is damaged (%s: %s); move it away to "
                         "start the host afresh from its spec" % (
                             path, type(err).__name__, err)) from None
    return state


class _Store:
    """The host's GPU state: one JSON file, locked for writes, re-read when another process
    changed it; or a dict in memory. The file, its lock and the copy that replaces it are
    opened as the agent opens its own (``open_private``): never through a link, 0600, and
    refused (UnsafePath) unless a regular file of this user that no other user can write."""

    def __init__(self, path: Optional[str], spec: Optional[str]):
        self.path = path
        self._stamp: Optional[Tuple[int, int, int, int]] = None
        self._state: Dict[str, Any] = {}
        self._mutex = threading.RLock()
        if path is None:
            if not spec:
                raise ValueError("an in-memory simulated host needs a spec")
            self._state = _new_state(spec)
            return
        with self.transaction() as state:
            if not state:
                if not spec:
                    raise ValueError("no simulated host state at %s and no spec to create one"
                                     % path)
                state.update(_new_state(spec))
            elif spec and _models.parse_sim_host(spec) != _models.parse_sim_host(state["spec"]):
                raise ValueError("%s holds a simulated host with GPUs %r, not %r; use another "
                                 "state dir for a different host" % (path, state["spec"], spec))

    def _stat(self) -> Optional[Tuple[int, int, int, int]]:
        """What tells a changed state file: its ctime too, so that one given to another user
        or made writable by others (its content as it was) is read again, and refused."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)

    def _reload(self) -> None:
        stamp = self._stat()
        if stamp != self._stamp:
            if stamp is None:
                self._state = {}
            else:
                data = read_private(self.path, "simulator state")
                self._state = {} if data is None else _checked(self.path, data)
            self._stamp = stamp

    def read(self) -> Dict[str, Any]:
        with self._mutex:
            if self.path is not None:
                self._reload()
            return self._state

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Dict[str, Any]]:
        """Yield a copy of the state to change; it is saved only if the block succeeds."""
        with self._mutex:
            if self.path is None:
                work = copy.deepcopy(self._state)
                yield work
                self._state = work
                return
            with os.fdopen(open_private(self.path + ".lock", os.O_WRONLY | os.O_CREAT,
                                        "simulator lock"), "wb") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._reload()
                work = copy.deepcopy(self._state)
                yield work
                own = _own_pid_ns()  # entries of another namespace are judged there,
                living = _living_namespaces(own, work.get("procs", []) + work.get(
                    "clients", []))  # or gone with it
                for kind in ("procs", "clients"):  # GPU users, NVML sessions
                    if kind in work:
                        work[kind] = [p for p in work[kind] if (
                            _pid_alive(p["pid"]) if _own_entry(p, own)
                            else living is None or p["ns"] in living)]
                # replaced atomically; no fsync: a GPU's state need only outlive processes
                write_private(self.path, json.dumps(work, indent=1, sort_keys=True).encode())
                self._state = work
                self._stamp = self._stat()


class _Fault:
    def __init__(self, code: int, skip: int, count: int, after: bool):
        self.code, self.skip, self.count, self.after = code, skip, count, after


_store: Optional[_Store] = None
_init_count = 0
_faults: Dict[str, List[_Fault]] = {}
_trace: Optional[List[str]] = None  # the NVML calls made since sim_start_trace, in order
_holds: Dict[str, List[Any]] = {}  # NVML function -> [gate file its calls wait for,
# whether they wait once made, how many calls still pass before one waits]
_lock = threading.RLock()
# event set id -> {"mask": {gpu: event types}, "seen": {gpu: the last event seq it passed}}
_event_sets: Dict[int, Dict[str, Any]] = {}
_event_set_numbers = itertools.count(1)


def sim_open(path: Optional[str], spec: Optional[str] = None) -> None:
    """Attach this module to a simulated host: the state file at ``path`` (created from ``spec``
    on first use), or a fresh in-memory host when ``path`` is None. An NVML session left open
    on the host before ends."""
    global _store, _init_count, _trace, _attached
    with _lock:
        if _store is not None and _init_count:
            _detach_session()
        _store = _Store(path, spec)
        _attached = False
        _init_count = 0
        _faults.clear()
        _trace = None
        _event_sets.clear()


def sim_spec() -> str:
    return _host()["spec"]


def sim_inject_fault(function: str, code: int, skip: int = 0, count: int = 1,
                     after: bool = False) -> None:
    """Fail ``function`` with NVML error ``code``, ``count`` times, after ``skip`` calls of it
    (every call counts, failed ones too). With ``after`` the failing call first takes effect,
    as a driver that times out after doing the work would: callers must read back what is true.
    """
    if not function.startswith("nvml") or function not in globals():
        raise ValueError("no NVML function %r in this module" % function)
    if code not in NVMLError._valClassMapping:
        raise ValueError("unknown NVML error code %r" % code)
    with _lock:
        _faults.setdefault(function, []).append(_Fault(code, skip, count, after))


def sim_clear_faults() -> None:
    with _lock:
        _faults.clear()
        _holds.clear()


def sim_hold(function: str, gate: str, after: bool = False, skip: int = 0) -> None:
    """Make every later call of ``function``, past the first ``skip``, wait until the file
    ``gate`` exists — a slow NVML call, for tests of what must go on meanwhile (or of a kill
    at the Nth call of a change); ``after``: the call is made first, and waits before it
    returns (a kill just after a change took effect). Each waiting call first appends a line
    to ``gate + ".held"``. It waits outside the simulator's lock, so other calls go on."""
    if not function.startswith("nvml") or function not in globals():
        raise ValueError("no NVML function %r in this module" % function)
    if skip < 0:
        raise ValueError("skip is a count of calls, not %r" % skip)
    with _lock:
        _holds[function] = [gate, after, skip]


_UNHELD = (False, None)  # no hold of the function was set as its call looked


def _gate_of(name: str) -> Tuple[bool, Optional[Tuple[str, bool]]]:
    """Whether a hold of ``name`` is set, and the gate this call waits at and whether once
    made; no gate for a call not held (one of the first ``skip`` counts here, whether it then
    fails or not)."""
    with _lock:
        hold = _holds.get(name)
        if hold is None:
            return _UNHELD
        if hold[2] > 0:
            hold[2] -= 1
            return True, None
        return True, (hold[0], hold[1])


def _wait_at_gate(name: str, gate: str) -> None:
    if os.path.exists(gate):
        return
    with open(gate + ".held", "a") as held:
        held.write("%s %d\n" % (name, threading.get_ident()))
    while not os.path.exists(gate):
        time.sleep(0.01)


def sim_mode_waits_for_reset(gpu: int, waits: bool = True) -> None:
    """From now on GPU ``gpu``'s MIG mode changes wait for a GPU reset, whatever its model
    (see "MIG mode" below); ``waits=False`` gives it back its model's behaviour."""
    with _transaction() as state:
        _gpu_of(state, gpu)["reset_to_change"] = waits


def sim_reset_gpu(gpu: Union[int, str]) -> None:
    """A GPU reset (``nvidia-smi -r -i``): a pending MIG mode takes effect, its MIG instances
    are gone and its volatile ECC counters cleared. ``gpu`` is its index or its UUID, as
    nvidia-smi's ``-i`` takes either. Refused, as the driver refuses it, while processes use
    the GPU or any NVML client holds it attached, this process's own session included: the
    reset is another program's (see "NVML sessions" below)."""
    with _transaction() as state:
        if isinstance(gpu, str):
            gpu = next((i for i, g in enumerate(state["gpus"]) if g["uuid"] == gpu), gpu)
            if isinstance(gpu, str):
                raise ValueError("no GPU has UUID %s" % gpu)
        _gpu_of(state, gpu)
        if _procs_on(state, gpu):
            raise ValueError("GPU %d has processes: it cannot be reset" % gpu)
        clients = sorted(c["pid"] for c in _alive(state.get("clients", [])))
        if clients:
            raise ValueError("GPU %d is in use by another client (the NVML session of pid %s): "
                             "a reset needs every client detached" % (
                                 gpu, ", ".join(map(str, clients))))
        _reset(state, gpu)


def _reset(state: Dict[str, Any], index: int) -> None:
    """What a GPU reset does to a GPU's state (its callers checked that nothing runs there)."""
    g = state["gpus"][index]
    g["mig"] = g.pop("pending", g["mig"])
    g["gis"] = []
    g["resets"] = g.get("resets", 0) + 1
    ecc = g.get("health", {}).get("ecc")
    if ecc is not None:
        ecc["volatile"] = [0, 0]


def sim_start_trace() -> None:
    """Record every NVML call from now on (``sim_trace`` returns them)."""
    global _trace
    with _lock:
        _trace = []


def sim_trace() -> List[str]:
    """The NVML calls made since ``sim_start_trace``, by name, in order, failed ones included."""
    with _lock:
        return list(_trace or [])


def sim_gpu_state(gpu: int) -> Dict[str, Any]:
    """What a GPU holds, read straight from the simulated host: MIG mode and every GPU
    instance as (profile name, start, number of compute instances), sorted."""
    state = _host()
    g = state["gpus"][gpu]
    facts = _facts(g)
    return {"mig": bool(g["mig"]), "instances": sorted(
        (facts.profile_name(_gi_facts(g, gi).key), gi["start"], len(gi["cis"]))
        for gi in g["gis"])}


def sim_reset_count(gpu: int) -> int:
    """How often the GPU was reset: by ``sim_reset_gpu``, or by its driver to change its MIG
    mode (an Ampere GPU's)."""
    return int(_host()["gpus"][gpu].get("resets", 0))


def sim_register_process(gpu: int, used_mib: int, instance_uuid: Optional[str] = None,
                         pid: Optional[int] = None, util: int = 0) -> int:
    """Record that a process uses ``used_mib`` of GPU memory on a GPU (or one of its MIG
    instances); returns its pid (a synthetic one when none is given)."""
    if used_mib < 0 or not 0 <= util <= 100:
        raise ValueError("used_mib must be >= 0 and util within 0..100")
    with _transaction() as state:
        if not 0 <= gpu < len(state["gpus"]):
            raise ValueError("no GPU %r on this simulated host" % (gpu,))
        gi = ci = None
        if instance_uuid is not None:
            found = _find_ci_by_uuid(state["gpus"][gpu], instance_uuid)
            if found is None:
                raise ValueError("no MIG instance %s on GPU %d" % (instance_uuid, gpu))
            gi, ci = found
        elif state["gpus"][gpu]["mig"]:
            raise ValueError("GPU %d is in MIG mode: name the MIG instance the process runs on"
                             % gpu)
        if pid is None:
            pid = state["next_pid"]
            state["next_pid"] += 1
        state["procs"] = [p for p in state["procs"] if not _mine(p, pid)]
        entry = {"pid": pid, "gpu": gpu, "gi": gi, "ci": ci, "used_mib": int(used_mib),
                 "util": int(util)}
        if pid < SYNTHETIC_PID_BASE:
            entry["ns"] = _own_pid_ns()
        state["procs"].append(entry)
    return pid


def sim_set_process_memory(pid: int, used_mib: int) -> None:
    with _transaction() as state:
        for p in state["procs"]:
            if _mine(p, pid):
                p["used_mib"] = int(used_mib)
                return
    raise ValueError("no simulated GPU process with pid %d" % pid)


def sim_set_process_util(pid: int, util: int) -> None:
    """Set a process's SM utilisation (percent), as NVML's per-process samples report it."""
    if not 0 <= util <= 100:
        raise ValueError("util must be within 0..100")
    with _transaction() as state:
        for p in state["procs"]:
            if _mine(p, pid):
                p["util"] = int(util)
                return
    raise ValueError("no simulated GPU process with pid %d" % pid)


def sim_remove_process(pid: int) -> bool:
    with _transaction() as state:
        before = len(state["procs"])
        state["procs"] = [p for p in state["procs"] if not _mine(p, pid)]
        return len(state["procs"]) != before


# --- simulated health: temperature, power, ECC errors, clock throttling, XID events ------------
# Without an override a GPU's temperature and power follow its load (the utilisation of its
# processes): 30 °C idle up to 75 °C at 100 %, an eighth of the power limit idle up to all of
# it; it reports GpuIdle while no process runs, SwThermalSlowdown from its slowdown temperature
# on and SwPowerCap at its power limit, as a real GPU does. ``sim_set_health`` overrides any of
# them.

SIM_HEALTH_FIELDS = ("temperature_c", "power_mw", "power_limit_mw", "throttle")
_EVENTS_KEPT = 256  # XID events the host keeps for event sets that have not read them yet


def sim_set_health(gpu: int, **fields: Optional[int]) -> None:
    """Override a GPU's ``temperature_c``, ``power_mw``, ``power_limit_mw`` or ``throttle``
    (a bitmask of ``nvmlClocksThrottleReason*`` reported on top of what the load causes);
    None takes the override away."""
    unknown = sorted(set(fields) - set(SIM_HEALTH_FIELDS))
    if unknown:
        raise ValueError("no simulated health field %s (known: %s)" % (
            ", ".join(unknown), ", ".join(SIM_HEALTH_FIELDS)))
    for name, value in fields.items():
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ValueError("%s must be a whole number >= 0, not %r" % (name, value))
    with _transaction() as state:
        health = _sim_gpu(state, gpu).setdefault("health", {})
        for name, value in fields.items():
            if value is None:
                health.pop(name, None)
            else:
                health[name] = value


def sim_add_ecc_errors(gpu: int, corrected: int = 0, uncorrected: int = 0) -> None:
    """Count ECC errors on a GPU, in its volatile and aggregate counters alike."""
    if corrected < 0 or uncorrected < 0:
        raise ValueError("ECC error counts must be >= 0")
    with _transaction() as state:
        g = _sim_gpu(state, gpu)
        if not _facts(g).ecc:
            raise ValueError("GPU %d (%s) has no ECC to count errors in" % (gpu, g["model"]))
        ecc = g.setdefault("health", {}).setdefault("ecc", {"volatile": [0, 0],
                                                            "aggregate": [0, 0]})
        for counter in ecc.values():
            counter[0] += corrected
            counter[1] += uncorrected


def sim_raise_xid(gpu: int, xid: int, instance_uuid: Optional[str] = None) -> int:
    """A critical XID error on a GPU (or, under MIG, one of its instances), delivered to every
    event set registered for it before now; returns its sequence number on the host."""
    if not 0 < xid < 1 << 32:
        raise ValueError("an XID is a number from 1, not %r" % (xid,))
    with _transaction() as state:
        g = _sim_gpu(state, gpu)
        gi = ci = _NA_UINT
        if instance_uuid is not None:
            found = _find_ci_by_uuid(g, instance_uuid)
            if found is None:
                raise ValueError("no MIG instance %s on GPU %d" % (instance_uuid, gpu))
            gi, ci = found
        seq = state.get("event_seq", 0) + 1
        state["event_seq"] = seq
        events = state.setdefault("events", [])
        events.append({"seq": seq, "gpu": gpu, "type": nvmlEventTypeXidCriticalError,
                       "data": xid, "gi": gi, "ci": ci})
        del events[:-_EVENTS_KEPT]
    return seq


def _sim_gpu(state: Dict[str, Any], gpu: int) -> Dict[str, Any]:
    if not isinstance(gpu, int) or not 0 <= gpu < len(state["gpus"]):
        raise ValueError("no GPU %r on this simulated host" % (gpu,))
    return state["gpus"][gpu]


def _load(state: Dict[str, Any], index: int) -> int:
    return min(100, sum(p["util"] for p in _procs_on(state, index)))


def _temperature(state: Dict[str, Any], gpu: Dict[str, Any], index: int) -> int:
    set_to = gpu.get("health", {}).get("temperature_c")
    return set_to if set_to is not None else 30 + _load(state, index) * 45 // 100


def _power_limit_mw(gpu: Dict[str, Any]) -> int:
    set_to = gpu.get("health", {}).get("power_limit_mw")
    return set_to if set_to is not None else _facts(gpu).power_limit_w * 1000


def _power_mw(state: Dict[str, Any], gpu: Dict[str, Any], index: int) -> int:
    set_to = gpu.get("health", {}).get("power_mw")
    if set_to is not None:
        return set_to
    limit = _power_limit_mw(gpu)
    return limit // 8 + (limit - limit // 8) * _load(state, index) // 100


def _throttle(state: Dict[str, Any], gpu: Dict[str, Any], index: int) -> int:
    mask = gpu.get("health", {}).get("throttle", 0)
    if not _procs_on(state, index):
        mask |= nvmlClocksThrottleReasonGpuIdle
    if _temperature(state, gpu, index) >= _facts(gpu).slowdown_c:
        mask |= nvmlClocksThrottleReasonSwThermalSlowdown
    if _power_mw(state, gpu, index) >= _power_limit_mw(gpu):
        mask |= nvmlClocksThrottleReasonSwPowerCap
    return mask


def _supported_events(gpu: Dict[str, Any]) -> int:
    """Every event type on a part with ECC (an H200 on driver 580 answered nvmlEventTypeAll);
    without ECC, none of the memory error events (NVML: "ECC events are available only on
    ECC-enabled devices")."""
    memory = (nvmlEventTypeSingleBitEccError | nvmlEventTypeDoubleBitEccError
              | nvmlEventTypeSingleBitEccErrorStorm | nvmlEventTypeDramRetirementEvent
              | nvmlEventTypeDramRetirementFailure)
    return nvmlEventTypeAll if _facts(gpu).ecc else nvmlEventTypeAll & ~memory


def _event_set(eventSet) -> Dict[str, Any]:
    found = _event_sets.get(eventSet.contents.sim_set) if eventSet else None
    if found is None:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)  # never created, or freed
    return found


def _host() -> Dict[str, Any]:
    if _store is None:
        raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
    return _store.read()


@contextlib.contextmanager
def _transaction() -> Iterator[Dict[str, Any]]:
    if _store is None:
        raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
    with _store.transaction() as state:
        yield state


def _api(fn: Callable, locked: bool = True) -> Callable:
    """Every NVML call: library loaded and initialised, then any injected fault, then the call
    — under the simulator's lock, except a call that waits (``locked=False``), which must let
    the others go on meanwhile."""
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        looked = _gate_of(name)
        gate = looked[1]
        if gate is not None and not gate[1]:
            _wait_at_gate(name, gate[0])
        result = _call(*args, **kwargs)
        if looked is _UNHELD:  # a hold set while it ran (a blocking wait) holds it once made
            gate = _gate_of(name)[1]
        if gate is not None and gate[1]:
            _wait_at_gate(name, gate[0])
        return result

    def _call(*args, **kwargs):
        with _lock:
            if _store is None:
                raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
            if _init_count == 0 and not name.startswith("nvmlInit") and name != "nvmlErrorString":
                raise NVMLError(NVML_ERROR_UNINITIALIZED)
            if _trace is not None:
                _trace.append(name)
            due: Optional[_Fault] = None
            for fault in _faults.get(name, []):
                if fault.skip > 0:
                    fault.skip -= 1
                elif fault.count > 0 and due is None:
                    fault.count -= 1
                    due = fault
            if due is not None:
                if due.after:
                    fn(*args, **kwargs)
                raise NVMLError(due.code)
            if locked:
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper


def _waiting_api(fn: Callable) -> Callable:
    return _api(fn, locked=False)


def _alive(entries: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The entries (GPU processes, NVML sessions) of live processes, each with its pid as this
    process sees it: as real NVML reports the host's pids for processes in containers, an entry
    registered in another pid namespace is given its pid here (NSpid), and left out where this
    process cannot see it (it ended)."""
    own = _own_pid_ns()
    seen: Optional[Dict[Tuple[int, int], int]] = None
    out = []
    for p in entries:
        if _own_entry(p, own):
            if _pid_alive(p["pid"]):
                out.append(p)
            continue
        if seen is None:
            seen = _pids_by_namespace()
        here = seen.get((p["ns"], p["pid"]))
        if here is not None and _pid_alive(here):
            out.append(dict(p, pid=here))
    return out


def _mine(p: Dict[str, Any], pid: int) -> bool:
    """Whether entry ``p`` is the process this one calls ``pid``."""
    return p["pid"] == pid and _own_entry(p, _own_pid_ns())


def _facts(gpu: Dict[str, Any]) -> _models.ModelFacts:
    return _models.models()[gpu["model"]]


def _find_ci_by_uuid(gpu: Dict[str, Any], mig_uuid: str) -> Optional[Tuple[int, int]]:
    for gi in gpu["gis"]:
        for ci in gi["cis"]:
            if ci["uuid"] == mig_uuid:
                return gi["id"], ci["id"]
    return None


def _gpu_of(state: Dict[str, Any], index: int) -> Dict[str, Any]:
    if not 0 <= index < len(state["gpus"]):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return state["gpus"][index]


def _gi_of(gpu: Dict[str, Any], gi_id: int) -> Dict[str, Any]:
    for gi in gpu["gis"]:
        if gi["id"] == gi_id:
            return gi
    raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)  # a handle to an instance that is gone


def _ci_of(gi: Dict[str, Any], ci_id: int) -> Dict[str, Any]:
    for ci in gi["cis"]:
        if ci["id"] == ci_id:
            return ci
    raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)


def _device_handle(gpu: int, gi: int = -1, ci: int = -1):
    return pointer(struct_c_nvmlDevice_t(gpu, gi, ci, _session))


def _gi_handle(gpu: int, gi: int):
    return pointer(struct_c_nvmlGpuInstance_t(gpu, gi, _session))


def _ci_handle(gpu: int, gi: int, ci: int):
    return pointer(struct_c_nvmlComputeInstance_t(gpu, gi, ci, _session))


def _live(handle) -> Any:
    """The struct behind a handle of the NVML session now: nvmlShutdown "releases all device
    and library resources", so a handle from before it is no handle (NVML's
    INVALID_ARGUMENT here, where the real library would read freed memory)."""
    if not handle or handle.contents.sim_session != _session:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return handle.contents


def _resolve(handle) -> Tuple[Dict[str, Any], Dict[str, Any], int, Optional[Dict[str, Any]]]:
    """device handle -> (state, gpu, index, (gi, ci) dicts for a MIG device handle or None)."""
    h = _live(handle)
    state = _host()
    gpu = _gpu_of(state, h.sim_gpu)
    if h.sim_gi < 0:
        return state, gpu, h.sim_gpu, None
    gi = _gi_of(gpu, h.sim_gi)
    return state, gpu, h.sim_gpu, {"gi": gi, "ci": _ci_of(gi, h.sim_ci)}


def _parent(handle) -> Tuple[Dict[str, Any], Dict[str, Any], int]:
    state, gpu, index, mig = _resolve(handle)
    if mig is not None:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return state, gpu, index


def _mig_parent(handle) -> Tuple[Dict[str, Any], Dict[str, Any], int]:
    """A parent device with MIG mode on: what the GPU-instance calls that change or look up
    an instance need."""
    state, gpu, index = _mig_capable_parent(handle)
    if not gpu["mig"]:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return state, gpu, index


def _mig_capable_parent(handle) -> Tuple[Dict[str, Any], Dict[str, Any], int]:
    """A parent device that can run MIG, its mode on or off: a real H200 with MIG off answered
    the profile, placement, instance-list and MIG-device calls (docs/real-gpu.md)."""
    state, gpu, index = _parent(handle)
    if not _facts(gpu).mig_capable:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return state, gpu, index


def _deref(ref):
    """The ctypes object behind ``byref(x)`` (or ``x`` itself)."""
    return getattr(ref, "_obj", ref)


def _fill_array(arrayRef, countRef, items: List[Any], assign: Callable[[int, Any], None]):
    """NVML's caller-allocated array convention: a NULL array asks for the count; a short array
    gets INSUFFICIENT_SIZE with the count needed; else ``assign(i, item)`` fills slot i."""
    count = _deref(countRef)
    if arrayRef is None:
        count.value = len(items)
        return NVML_SUCCESS
    if count.value < len(items):
        count.value = len(items)
        raise NVMLError(NVML_ERROR_INSUFFICIENT_SIZE)
    for i, item in enumerate(items):
        assign(i, item)
    count.value = len(items)
    return NVML_SUCCESS


# The profile constants the simulated driver (580) knows: a real one refused
# NVML_GPU_INSTANCE_PROFILE_3_SLICE_GFX, newer than it, as INVALID_ARGUMENT.
_DRIVER_PROFILE_COUNT = NVML_GPU_INSTANCE_PROFILE_3_SLICE_GFX


def _profile_facts_by_const(gpu: Dict[str, Any], profile: int) -> _models.ProfileFacts:
    if not 0 <= profile < _DRIVER_PROFILE_COUNT:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    for p in _facts(gpu).profiles:
        if globals().get(p.nvml_profile) == profile:
            return p
    raise NVMLError(NVML_ERROR_NOT_SUPPORTED)


def _profile_facts_by_id(gpu: Dict[str, Any], profileId: int) -> _models.ProfileFacts:
    for p in _facts(gpu).profiles:
        if p.profile_id == profileId:
            return p
    raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)


def _gi_facts(gpu: Dict[str, Any], gi: Dict[str, Any]) -> _models.ProfileFacts:
    return _profile_facts_by_id(gpu, gi["profile_id"])


def _procs_on(state, index: int, gi_id: Optional[int] = None, ci_id: Optional[int] = None):
    """The live processes on a GPU (on one of its MIG instances): only theirs are looked up."""
    return _alive([p for p in state["procs"] if p["gpu"] == index
                   and (gi_id is None or p["gi"] == gi_id)
                   and (ci_id is None or p["ci"] == ci_id)])


def _free_ids(used: List[int], first: int) -> int:
    n = first
    while n in used:
        n += 1
    return n


# --- initialisation and system queries ----------------------------------------------------------


# NVML sessions. nvmlInit attaches the process to every GPU (unless NVML_INIT_FLAG_NO_ATTACH)
# until its last nvmlShutdown (the calls are counted per process), and while any process is
# attached the driver refuses a GPU reset: "in use by another client", as NVIDIA's mig-parted
# README says ("the NVIDIA driver will block the reset if there are any clients currently
# attached to the GPU"; it keeps NVML alive for every command but the reset). Each attached
# process is an entry of the host's ``clients``, dropped when it ends.

NVML_INIT_FLAG_NO_GPUS = 1
NVML_INIT_FLAG_NO_ATTACH = 2
_attached = False  # this process holds an entry in the host's clients
_session = 0  # counts this process's sessions: a handle or event set is its session's only


def _detach_session() -> None:
    """This process's NVML session ends: its entry goes from the host's clients."""
    global _attached
    if _attached:
        pid = os.getpid()
        try:
            with _transaction() as state:
                state["clients"] = [c for c in state.get("clients", []) if not _mine(c, pid)]
        except OSError:  # the host's state file is gone: so is the entry
            pass
        _attached = False


@_api
def nvmlInitWithFlags(flags):
    global _init_count, _attached, _session
    if not _init_count:
        _session += 1
    if not _init_count and not flags & NVML_INIT_FLAG_NO_ATTACH:
        with _transaction() as state:
            state.setdefault("clients", []).append({"pid": os.getpid(), "ns": _own_pid_ns()})
        _attached = True
    _init_count += 1
    return None


def nvmlInit():
    nvmlInitWithFlags(0)
    return None


@_api
def nvmlShutdown():
    global _init_count
    if _init_count > 0:
        _init_count -= 1
        if not _init_count:
            _event_sets.clear()  # freed with the session, as its device handles are
            _detach_session()
    return None


@_api
def nvmlErrorString(result):
    return NVMLError._errcode_to_string.get(
        result, _LIBRARY_ERROR_STRINGS.get(result, "Unknown Error"))


@_api
def nvmlSystemGetDriverVersion():
    return _DRIVER_VERSION


@_api
def nvmlSystemGetNVMLVersion():
    return "13." + _DRIVER_VERSION


# --- devices ----------------------------------------------------------------------------------


@_api
def nvmlDeviceGetCount():
    return len(_host()["gpus"])


@_api
def nvmlDeviceGetHandleByIndex(index):
    _gpu_of(_host(), index)
    return _device_handle(index)


@_api
def nvmlDeviceGetHandleByUUID(uuid):
    if isinstance(uuid, bytes):
        uuid = uuid.decode()
    for index, gpu in enumerate(_host()["gpus"]):
        if gpu["uuid"] == uuid:
            return _device_handle(index)
        found = _find_ci_by_uuid(gpu, uuid)
        if found is not None:
            return _device_handle(index, *found)
    raise NVMLError(NVML_ERROR_NOT_FOUND)


@_api
def nvmlDeviceGetIndex(handle):
    return _parent(handle)[2]


@_api
def nvmlDeviceGetName(handle):
    _, gpu, _, mig = _resolve(handle)
    if mig is None:
        return gpu["model"]
    facts = _facts(gpu)
    return "%s MIG %s" % (gpu["model"], facts.profile_name(_gi_facts(gpu, mig["gi"]).key))


@_api
def nvmlDeviceGetUUID(handle):
    _, gpu, _, mig = _resolve(handle)
    return gpu["uuid"] if mig is None else mig["ci"]["uuid"]


@_api
def nvmlDeviceGetMemoryInfo(handle, version=None):
    state, gpu, index, mig = _resolve(handle)
    facts = _facts(gpu)
    if mig is None:
        total = facts.memory_mib
        used = sum(p["used_mib"] for p in _procs_on(state, index))
    else:
        total = facts.profile_memory_mib(_gi_facts(gpu, mig["gi"]))
        used = sum(p["used_mib"] for p in _procs_on(state, index, mig["gi"]["id"]))
    if not version:
        mem = c_nvmlMemory_t()
    else:
        mem = c_nvmlMemory_v2_t()
        mem.version = version
    mem.total = total * _MIB
    mem.used = used * _MIB
    mem.free = max(0, total - used) * _MIB
    return mem


@_api
def nvmlDeviceGetUtilizationRates(handle):
    state, gpu, index, mig = _resolve(handle)
    if mig is not None or gpu["mig"]:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)  # NVML reports no utilisation under MIG
    util = c_nvmlUtilization_t()
    util.gpu = min(100, sum(p["util"] for p in _procs_on(state, index)))
    util.memory = 0  # memory bandwidth is not simulated
    return util


# The driver samples per-process utilisation on a period of its own; a sample carries the CPU
# time (microseconds) of the period it closes, so asking again within one period finds nothing new.
SIM_UTIL_PERIOD_US = 166667


@_api
def nvmlDeviceGetProcessUtilization(handle, timeStamp):
    """One sample per process that was busy (non-zero SM use) in the last period, if that period
    is newer than ``timeStamp``; NOT_FOUND when there is none. Not supported under MIG, as in
    NVML (on a GPU in MIG mode and on MIG device handles)."""
    state, gpu, index, mig = _resolve(handle)
    if mig is not None or gpu["mig"]:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    now_us = int(time.time() * 1e6)
    period = now_us - now_us % SIM_UTIL_PERIOD_US
    samples = []
    if period > timeStamp:
        for p in _procs_on(state, index):
            if p["util"] > 0:
                sample = c_nvmlProcessUtilizationSample_t()
                sample.pid, sample.timeStamp, sample.smUtil = p["pid"], period, p["util"]
                samples.append(sample)
    if not samples:
        raise NVMLError(NVML_ERROR_NOT_FOUND)
    return samples


@_api
def nvmlDeviceGetComputeRunningProcesses(handle):
    state, gpu, index, mig = _resolve(handle)
    if mig is None:
        procs = _procs_on(state, index)
    else:
        procs = _procs_on(state, index, mig["gi"]["id"], mig["ci"]["id"])
    return [nvmlFriendlyObject({
        "pid": p["pid"], "usedGpuMemory": p["used_mib"] * _MIB,
        "gpuInstanceId": _NA_UINT if p["gi"] is None else p["gi"],
        "computeInstanceId": _NA_UINT if p["ci"] is None else p["ci"]}) for p in procs]


# --- health -------------------------------------------------------------------------------------


@_api
def nvmlDeviceGetTemperature(handle, sensor):
    state, gpu, index = _parent(handle)
    if sensor != NVML_TEMPERATURE_GPU:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return _temperature(state, gpu, index)


@_api
def nvmlDeviceGetTemperatureThreshold(handle, threshold):
    _, gpu, _ = _parent(handle)
    if not 0 <= threshold < NVML_TEMPERATURE_THRESHOLD_COUNT:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    facts = _facts(gpu)
    known = {NVML_TEMPERATURE_THRESHOLD_SHUTDOWN: facts.shutdown_c,
             NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: facts.slowdown_c}
    if threshold not in known:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return known[threshold]


@_api
def nvmlDeviceGetPowerUsage(handle):
    state, gpu, index = _parent(handle)
    return _power_mw(state, gpu, index)


@_api
def nvmlDeviceGetEnforcedPowerLimit(handle):
    _, gpu, _ = _parent(handle)
    return _power_limit_mw(gpu)


@_api
def nvmlDeviceGetTotalEccErrors(handle, errorType, counterType):
    _, gpu, _ = _parent(handle)
    if not 0 <= errorType < NVML_MEMORY_ERROR_TYPE_COUNT or \
            not 0 <= counterType < NVML_ECC_COUNTER_TYPE_COUNT:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    if not _facts(gpu).ecc:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    ecc = gpu.get("health", {}).get("ecc", {"volatile": [0, 0], "aggregate": [0, 0]})
    return ecc["volatile" if counterType == NVML_VOLATILE_ECC else "aggregate"][errorType]


@_api
def nvmlDeviceGetCurrentClocksThrottleReasons(handle):
    state, gpu, index = _parent(handle)
    return _throttle(state, gpu, index)


@_api
def nvmlDeviceGetCurrentClocksEventReasons(handle):
    state, gpu, index = _parent(handle)
    return _throttle(state, gpu, index)


@_api
def nvmlDeviceGetSupportedClocksThrottleReasons(handle):
    _parent(handle)
    return nvmlClocksThrottleReasonAll


@_api
def nvmlDeviceGetSupportedClocksEventReasons(handle):
    _parent(handle)
    return nvmlClocksEventReasonAll


# --- events -------------------------------------------------------------------------------------


@_api
def nvmlDeviceGetSupportedEventTypes(handle):
    _, gpu, _ = _parent(handle)
    return _supported_events(gpu)


@_api
def nvmlEventSetCreate():
    number = next(_event_set_numbers)  # never reused: a freed set's handle stays invalid
    _host()
    _event_sets[number] = {"mask": {}, "seen": {}}
    return pointer(struct_c_nvmlEventSet_t(number))


@_api
def nvmlDeviceRegisterEvents(handle, eventTypes, eventSet):
    _, gpu, index = _parent(handle)
    found = _event_set(eventSet)
    if eventTypes & ~_supported_events(gpu):
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    if index not in found["mask"]:  # only what happens from now on is delivered
        found["seen"][index] = _host().get("event_seq", 0)
    found["mask"][index] = found["mask"].get(index, 0) | eventTypes
    return None


# How often a wait looks for a new event: events come from any process of the host through the
# state file, so it is read again. A real wait sleeps in the driver; here each look is a thread
# waking up, which on a small VM costs about 0.1 ms of CPU whatever it finds, so a faster poll
# would make the simulator's cost what an idle agent's benchmark measures (at 50 ms it was about
# a third of it). An event is still seen within a quarter of a second.
EVENT_POLL_S = 0.25


@_waiting_api
def nvmlEventSetWait_v2(eventSet, timeoutms):
    deadline = time.monotonic() + timeoutms / 1000.0
    while True:
        with _lock:
            found = _event_set(eventSet)
            for event in _host().get("events", []):
                gpu = event["gpu"]
                if gpu not in found["mask"] or event["seq"] <= found["seen"][gpu]:
                    continue
                found["seen"][gpu] = event["seq"]
                if event["type"] & found["mask"][gpu]:
                    data = c_nvmlEventData_t()
                    data.device = _device_handle(event["gpu"])
                    data.eventType = event["type"]
                    data.eventData = event["data"]
                    data.gpuInstanceId = event["gi"]
                    data.computeInstanceId = event["ci"]
                    return data
        left = deadline - time.monotonic()
        if left <= 0:
            raise NVMLError(NVML_ERROR_TIMEOUT)
        time.sleep(min(EVENT_POLL_S, left))


def nvmlEventSetWait(eventSet, timeoutms):
    return nvmlEventSetWait_v2(eventSet, timeoutms)


@_api
def nvmlEventSetFree(eventSet):
    _event_set(eventSet)
    del _event_sets[eventSet.contents.sim_set]
    return None


# --- MIG mode -----------------------------------------------------------------------------------


# Per model, as NVIDIA's MIG User Guide ("Enable MIG Mode") documents it: on an Ampere GPU
# (A100, A30: ModelFacts.mode_reset) the driver resets the GPU so that the new mode takes
# effect; from Hopper on the mode changes without a reset. Either way only an idle GPU changes
# (NVML_ERROR_IN_USE otherwise: nvmlDeviceSetMigMode's documentation, "if device unbind fails
# because the device isn't idle"). A GPU whose mode change waits for a reset
# (``sim_mode_waits_for_reset``: a client such as a monitoring daemon holds the driver open, or
# a pass-through VM with no reset exposed) keeps its current mode and reports the new one as
# pending, as NVML does: nvmlDeviceSetMigMode's activation status is then
# NVML_ERROR_RESET_REQUIRED, nvmlDeviceGetMigMode returns [current, pending] until the reset
# (``sim_reset_gpu``). Elsewhere an idle GPU changes at once (status NVML_SUCCESS).


def _pending(gpu: Dict[str, Any]) -> int:
    return gpu.get("pending", gpu["mig"])


@_api
def nvmlDeviceGetMigMode(device):
    _, gpu, _ = _parent(device)
    if not _facts(gpu).mig_capable:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return [gpu["mig"], _pending(gpu)]


@_api
def nvmlDeviceSetMigMode(device, mode):
    """Returns the activation status, as pynvml does."""
    _, gpu, index = _parent(device)
    if not _facts(gpu).mig_capable:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    if mode not in (NVML_DEVICE_MIG_DISABLE, NVML_DEVICE_MIG_ENABLE):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    with _transaction() as state:
        gpu = state["gpus"][index]
        if gpu["mig"] == mode:
            gpu.pop("pending", None)  # asked back to what it is: nothing waits any more
            return NVML_SUCCESS
        if _procs_on(state, index) or gpu["gis"]:
            raise NVMLError(NVML_ERROR_IN_USE)
        gpu["pending"] = mode
        if gpu.get("reset_to_change"):
            return NVML_ERROR_RESET_REQUIRED
        if _facts(gpu).mode_reset:
            _reset(state, index)  # the driver's own reset
        else:
            gpu["mig"] = gpu.pop("pending")
    return NVML_SUCCESS


@_api
def nvmlDeviceGetMaxMigDeviceCount(device):
    _, gpu, _ = _parent(device)
    facts = _facts(gpu)
    return facts.compute_slices if facts.mig_capable and gpu["mig"] else 0


@_api
def nvmlDeviceIsMigDeviceHandle(device):
    return c_uint(0 if _resolve(device)[3] is None else 1)


def _mig_devices(gpu: Dict[str, Any]) -> List[Tuple[int, int]]:
    return [(gi["id"], ci["id"]) for gi in sorted(gpu["gis"], key=lambda g: g["id"])
            for ci in sorted(gi["cis"], key=lambda c: c["id"])]


@_api
def nvmlDeviceGetMigDeviceHandleByIndex(device, index):
    _, gpu, gpu_index = _mig_capable_parent(device)
    if not 0 <= index < _facts(gpu).compute_slices:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    devices = _mig_devices(gpu)
    if index >= len(devices):
        raise NVMLError(NVML_ERROR_NOT_FOUND)
    return _device_handle(gpu_index, *devices[index])


@_api
def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(migDevice):
    _, _, index, mig = _resolve(migDevice)
    if mig is None:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return _device_handle(index)


def _mig_of(device) -> Dict[str, Any]:
    mig = _resolve(device)[3]
    if mig is None:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return mig


@_api
def nvmlDeviceGetGpuInstanceId(device):
    return _mig_of(device)["gi"]["id"]


@_api
def nvmlDeviceGetComputeInstanceId(device):
    return _mig_of(device)["ci"]["id"]


# --- GPU instances ------------------------------------------------------------------------------


def _fill_profile_info(info, gpu: Dict[str, Any], p: _models.ProfileFacts) -> None:
    facts = _facts(gpu)
    info.id = p.profile_id
    info.isP2pSupported = 0
    info.sliceCount = p.compute_slices
    info.instanceCount = p.max_instances
    info.multiprocessorCount = facts.profile_sm_count(p)
    measured = facts.measured_profile(p.key)
    if measured is not None:
        engines = (measured.copy_engines, measured.decoders, measured.encoders, measured.jpegs,
                   measured.ofas)
    else:  # an estimate where no GPU of the model was read
        me = int(p.key.endswith("+me"))
        engines = (max(1, p.size), me or p.compute_slices // 2, 0, me or p.compute_slices // 4,
                   me)
    (info.copyEngineCount, info.decoderCount, info.encoderCount, info.jpegCount,
     info.ofaCount) = engines
    info.memorySizeMB = facts.profile_memory_mib(p)
    if hasattr(info, "version"):
        info.version = 0  # the driver answers with the version field cleared (read on an H200)


@_api
def nvmlDeviceGetGpuInstanceProfileInfo(device, profile, version=2):
    _, gpu, _ = _mig_capable_parent(device)
    p = _profile_facts_by_const(gpu, profile)
    if version == 2:
        info = c_nvmlGpuInstanceProfileInfo_v2_t()
        info.name = ("MIG " + _facts(gpu).profile_name(p.key)).encode()
    elif version == 1:
        info = c_nvmlGpuInstanceProfileInfo_t()
    else:
        raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
    _fill_profile_info(info, gpu, p)
    return info


@_api
def nvmlDeviceGetGpuInstancePossiblePlacements(device, profileId, placementsRef, countRef):
    _, gpu, _ = _mig_capable_parent(device)
    p = _profile_facts_by_id(gpu, profileId)

    def assign(i, start):
        placementsRef[i].start = start
        placementsRef[i].size = p.size

    return _fill_array(placementsRef, countRef, list(p.starts), assign)


def _placement_refusal(gpu: Dict[str, Any], p: _models.ProfileFacts, start: int) -> Optional[int]:
    """The NVML error creating profile ``p`` at ``start`` meets on this GPU, or None if it fits."""
    facts = _facts(gpu)
    if start not in p.starts:
        return NVML_ERROR_INVALID_ARGUMENT
    want = set(range(start, start + p.size))
    used_compute = 0
    same = 0
    for gi in gpu["gis"]:
        q = _gi_facts(gpu, gi)
        used_compute += q.compute_slices
        same += q.profile_id == p.profile_id
        if want & set(range(gi["start"], gi["start"] + q.size)):
            return NVML_ERROR_INSUFFICIENT_RESOURCES
    if same >= p.max_instances or used_compute + p.compute_slices > facts.compute_slices:
        return NVML_ERROR_INSUFFICIENT_RESOURCES
    return None


@_api
def nvmlDeviceCreateGpuInstanceWithPlacement(device, profileId, placement):
    _, gpu, index = _mig_parent(device)
    p = _profile_facts_by_id(gpu, profileId)
    place = _deref(placement)
    if place.size != p.size:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    with _transaction() as state:
        gpu = state["gpus"][index]
        refusal = _placement_refusal(gpu, p, place.start)
        if refusal is not None:
            raise NVMLError(refusal)
        gi_id = _free_ids([g["id"] for g in gpu["gis"]], 1)
        gpu["gis"].append({"id": gi_id, "profile_id": p.profile_id, "start": place.start,
                           "cis": []})
    return _gi_handle(index, gi_id)


@_api
def nvmlDeviceGetGpuInstances(device, profileId, gpuInstancesRef, countRef):
    _, gpu, index = _mig_capable_parent(device)
    _profile_facts_by_id(gpu, profileId)
    ids = sorted(g["id"] for g in gpu["gis"] if g["profile_id"] == profileId)

    def assign(i, gi_id):
        gpuInstancesRef[i] = _gi_handle(index, gi_id)

    return _fill_array(gpuInstancesRef, countRef, ids, assign)


@_api
def nvmlDeviceGetGpuInstanceById(device, gpuInstanceId):
    _, gpu, index = _mig_parent(device)
    for gi in gpu["gis"]:
        if gi["id"] == gpuInstanceId:
            return _gi_handle(index, gpuInstanceId)
    raise NVMLError(NVML_ERROR_NOT_FOUND)


def _resolve_gi(gpuInstance) -> Tuple[Dict[str, Any], Dict[str, Any], int, Dict[str, Any]]:
    h = _live(gpuInstance)
    state = _host()
    gpu = _gpu_of(state, h.sim_gpu)
    return state, gpu, h.sim_gpu, _gi_of(gpu, h.sim_gi)


@_api
def nvmlGpuInstanceGetInfo(gpuInstance):
    _, gpu, index, gi = _resolve_gi(gpuInstance)
    info = c_nvmlGpuInstanceInfo_t()
    info.device = _device_handle(index)
    info.id = gi["id"]
    info.profileId = gi["profile_id"]
    info.placement.start = gi["start"]
    info.placement.size = _gi_facts(gpu, gi).size
    return info


@_api
def nvmlGpuInstanceDestroy(gpuInstance):
    _, _, index, gi = _resolve_gi(gpuInstance)
    with _transaction() as state:
        gpu = state["gpus"][index]
        gi = _gi_of(gpu, gi["id"])
        if gi["cis"] or _procs_on(state, index, gi["id"]):
            raise NVMLError(NVML_ERROR_IN_USE)
        gpu["gis"] = [g for g in gpu["gis"] if g["id"] != gi["id"]]
    return NVML_SUCCESS


# --- compute instances --------------------------------------------------------------------------


def _ci_slices(gpu: Dict[str, Any], gi: Dict[str, Any], profile: int) -> int:
    slices = _CI_PROFILE_SLICES.get(profile)
    if slices is None:
        if 0 <= profile < NVML_COMPUTE_INSTANCE_PROFILE_COUNT:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    gi_slices = _gi_facts(gpu, gi).compute_slices
    if slices > gi_slices or (slices == 3 and gi_slices == 4):
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return slices


@_api
def nvmlGpuInstanceGetComputeInstanceProfileInfo(device, profile, engProfile, version=2):
    _, gpu, _, gi = _resolve_gi(device)
    if engProfile != NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    slices = _ci_slices(gpu, gi, profile)
    gi_facts = _gi_facts(gpu, gi)
    if version == 2:
        info = c_nvmlComputeInstanceProfileInfo_v2_t()
        name = _facts(gpu).profile_name(gi_facts.key)
        info.name = (("MIG %dc.%s" % (slices, name)) if slices < gi_facts.compute_slices
                     else "MIG " + name).encode()
    elif version == 1:
        info = c_nvmlComputeInstanceProfileInfo_t()
    else:
        raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
    info.id = profile
    info.sliceCount = slices
    info.instanceCount = gi_facts.compute_slices // slices
    info.multiprocessorCount = int(_facts(gpu).sms * slices / _facts(gpu).compute_slices)
    info.sharedCopyEngineCount = max(1, gi_facts.size)
    return info


@_api
def nvmlGpuInstanceCreateComputeInstance(gpuInstance, profileId):
    _, gpu, index, gi = _resolve_gi(gpuInstance)
    slices = _ci_slices(gpu, gi, profileId)
    with _transaction() as state:
        gi = _gi_of(state["gpus"][index], gi["id"])
        used = sum(_CI_PROFILE_SLICES[c["profile_id"]] for c in gi["cis"])
        if used + slices > _gi_facts(gpu, gi).compute_slices:
            raise NVMLError(NVML_ERROR_INSUFFICIENT_RESOURCES)
        ci_id = _free_ids([c["id"] for c in gi["cis"]], 0)
        gi["cis"].append({"id": ci_id, "profile_id": profileId, "start": used,
                          "uuid": "MIG-%s" % uuidlib.uuid4()})
    return _ci_handle(index, gi["id"], ci_id)


@_api
def nvmlGpuInstanceGetComputeInstances(gpuInstance, profileId, computeInstancesRef, countRef):
    _, gpu, index, gi = _resolve_gi(gpuInstance)
    _ci_slices(gpu, gi, profileId)
    ids = sorted(c["id"] for c in gi["cis"] if c["profile_id"] == profileId)

    def assign(i, ci_id):
        computeInstancesRef[i] = _ci_handle(index, gi["id"], ci_id)

    return _fill_array(computeInstancesRef, countRef, ids, assign)


def _resolve_ci(computeInstance):
    h = _live(computeInstance)
    state = _host()
    gpu = _gpu_of(state, h.sim_gpu)
    gi = _gi_of(gpu, h.sim_gi)
    return state, gpu, h.sim_gpu, gi, _ci_of(gi, h.sim_ci)


@_api
def nvmlComputeInstanceGetInfo(computeInstance):
    _, _, index, gi, ci = _resolve_ci(computeInstance)
    info = c_nvmlComputeInstanceInfo_t()
    info.device = _device_handle(index)
    info.gpuInstance = _gi_handle(index, gi["id"])
    info.id = ci["id"]
    info.profileId = ci["profile_id"]
    info.placement.start = ci["start"]
    info.placement.size = _CI_PROFILE_SLICES[ci["profile_id"]]
    return info


@_api
def nvmlComputeInstanceDestroy(computeInstance):
    _, _, index, gi, ci = _resolve_ci(computeInstance)
    with _transaction() as state:
        gi = _gi_of(state["gpus"][index], gi["id"])
        if _procs_on(state, index, gi["id"], ci["id"]):
            raise NVMLError(NVML_ERROR_IN_USE)
        gi["cis"] = [c for c in gi["cis"] if c["id"] != ci["id"]]
    return NVML_SUCCESS


# --- PCI and topology -----------------------------------------------------------------------
# From the spec's topology clauses (models.SimTopology): GPU i sits at PCI domain i // 200, bus
# 0x10 + i % 200; an NVLink island gives each pair of its GPUs links // (n - 1) consecutive
# links (in peer order), the rest of a GPU's links inactive; a GPU on NVSwitches has every link
# active, link l to switch l % 4 (buses 0xF0..0xF3), as on an HGX board.

_SWITCHES = 4
_PCI_DEVICE_ID = 0x20B010DE  # one for every GPU: device 0x20B0 (an A100) of vendor 0x10DE


def _bus(domain: int, bus: int) -> Tuple[int, int, str]:
    return domain, bus, "%08X:%02X:00.0" % (domain, bus)


def _gpu_bus(index: int) -> Tuple[int, int, str]:
    return _bus(index // 200, 0x10 + index % 200)


def _pci_info(where: Tuple[int, int, str]) -> nvmlPciInfo_t:
    domain, bus, bus_id = where
    info = nvmlPciInfo_t()
    info.busIdLegacy = ("%04X:%02X:00.0" % (domain, bus)).encode()
    info.busId = bus_id.encode()
    info.domain, info.bus, info.device = domain, bus, 0
    info.pciDeviceId, info.pciSubSystemId = _PCI_DEVICE_ID, 0
    return info


@functools.lru_cache(maxsize=16)
def _sim_host(spec: str) -> _models.SimHost:
    return _models.parse_sim_host(spec)


def _links(state: Dict[str, Any], index: int) -> List[Optional[Tuple[int, int]]]:
    """GPU ``index``'s NVLink links: (remote device type, GPU index or switch) of each active
    link, None for an inactive one; empty for a GPU without NVLink."""
    host = _sim_host(state["spec"])
    topo = host.topology
    count = host.gpus[index].model.nvlinks
    links: List[Optional[Tuple[int, int]]] = [None] * count
    if index in topo.nvswitch:
        return [(NVML_NVLINK_DEVICE_TYPE_SWITCH, link % _SWITCHES) for link in range(count)]
    at = 0
    for peer in range(len(host.gpus)):
        n = topo.nvlinks(index, peer, count, host.gpus[peer].model.nvlinks)
        for link in range(at, at + n):
            links[link] = (NVML_NVLINK_DEVICE_TYPE_GPU, peer)
        at += n
    return links


def _link(device, link: int) -> Optional[Tuple[int, int]]:
    state, gpu, index = _parent(device)
    if not _facts(gpu).nvlinks:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    if not 0 <= link < min(NVML_NVLINK_MAX_LINKS, _facts(gpu).nvlinks):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return _links(state, index)[link]


def _active_link(device, link: int) -> Tuple[int, int]:
    found = _link(device, link)
    if found is None:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)  # nothing at the other end of it
    return found


def _pair(device1, device2) -> Tuple[_models.SimTopology, int, int, Dict[str, Any]]:
    state, _, a = _parent(device1)
    _, _, b = _parent(device2)
    return _sim_host(state["spec"]).topology, a, b, state


@_api
def nvmlDeviceGetPciInfo_v3(handle):
    return _pci_info(_gpu_bus(_parent(handle)[2]))


def nvmlDeviceGetPciInfo(handle):
    return nvmlDeviceGetPciInfo_v3(handle)


_ANCESTORS = {"PIX": NVML_TOPOLOGY_SINGLE, "PXB": NVML_TOPOLOGY_MULTIPLE,
              "PHB": NVML_TOPOLOGY_HOSTBRIDGE, "NODE": NVML_TOPOLOGY_NODE,
              "SYS": NVML_TOPOLOGY_SYSTEM}


@_api
def nvmlDeviceGetTopologyCommonAncestor(device1, device2):
    """The PCIe path between two GPUs (NVLink is not part of it, as in NVML); a GPU with
    itself: INTERNAL."""
    topo, a, b, _ = _pair(device1, device2)
    return NVML_TOPOLOGY_INTERNAL if a == b else _ANCESTORS[topo.pcie(a, b)]


@_api
def nvmlDeviceGetP2PStatus(device1, device2, p2pIndex):
    """NVLINK: OK between GPUs that share NVLink (directly or through NVSwitches); READ, WRITE
    and PCI: OK over NVLink or PCIe within a CPU, IOH_TOPOLOGY_NOT_SUPPORTED across CPUs
    (SYS); ATOMICS: over NVLink only."""
    topo, a, b, state = _pair(device1, device2)
    if not 0 <= p2pIndex < NVML_P2P_CAPS_INDEX_UNKNOWN or a == b:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    nvlink = any(link is not None and link[0] == NVML_NVLINK_DEVICE_TYPE_GPU and link[1] == b
                 for link in _links(state, a)) or (a in topo.nvswitch and b in topo.nvswitch)
    if nvlink:
        return NVML_P2P_STATUS_OK
    if p2pIndex in (NVML_P2P_CAPS_INDEX_NVLINK, NVML_P2P_CAPS_INDEX_ATOMICS):
        return NVML_P2P_STATUS_NOT_SUPPORTED
    if topo.pcie(a, b) == "SYS":
        return NVML_P2P_STATUS_IOH_TOPOLOGY_NOT_SUPPORTED
    return NVML_P2P_STATUS_OK


@_api
def nvmlDeviceGetNvLinkState(device, link):
    return NVML_FEATURE_DISABLED if _link(device, link) is None else NVML_FEATURE_ENABLED


@_api
def nvmlDeviceGetNvLinkRemoteDeviceType(handle, link):
    return _active_link(handle, link)[0]


@_api
def nvmlDeviceGetNvLinkRemotePciInfo(device, link):
    kind, at = _active_link(device, link)
    return _pci_info(_gpu_bus(at) if kind == NVML_NVLINK_DEVICE_TYPE_GPU else _bus(0, 0xF0 + at))


# --- per-cgroup memory limits (r615+ drivers) ---------------------------------------------------
# The simulator records the limits a caller sets, keyed by GPU and cgroup path; it does not know
# which processes a cgroup holds, so it does not make their allocations fail.


def _limits_key(index: int, limits) -> str:
    ns = _deref(limits).nameSpace
    if not ns:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return "%d:%s" % (index, os.fsdecode(ns))  # a path's bytes, as the OS has them


@_api
def nvmlDeviceSetMemoryLimits_v1(device, limits):
    _, _, index, mig = _resolve(device)
    if mig is not None:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)  # MIG handles are not supported
    if os.geteuid() != 0:
        raise NVMLError(NVML_ERROR_NO_PERMISSION)
    key = _limits_key(index, limits)
    soft, hard = int(_deref(limits).softLimit), int(_deref(limits).hardLimit)
    with _transaction() as state:
        table = state.setdefault("limits", {})
        if soft == 0 and hard == NVML_DEVICE_MEMORY_LIMIT_MAX:
            table.pop(key, None)
        else:
            table[key] = [soft, hard]


@_api
def nvmlDeviceGetMemoryLimits_v1(device, limits):
    state, _, index, mig = _resolve(device)
    if mig is not None:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    out = _deref(limits)
    soft, hard = state.get("limits", {}).get(_limits_key(index, limits),
                                              [0, NVML_DEVICE_MEMORY_LIMIT_MAX])
    out.softLimit, out.hardLimit, out.currentUsed = soft, hard, 0
