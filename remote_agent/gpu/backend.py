"""The agent's view of a host's GPUs, read and changed through the ``pynvml`` module interface.

The backend is handed a module — nvidia-ml-py's ``pynvml`` on a real host, the fake in
``fake_pynvml`` under simulation — and never asks which: it uses only names both provide, and the
MIG geometry it plans with is read from NVML itself, so the planner follows the real driver's rules.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from ctypes import byref, c_uint
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, TypeVar, Union

from remote_agent.gpu.session import Session
from remote_agent.mig.layout import Geometry, Instance, Layout, Profile

log = logging.getLogger("remote_agent.backend")
T = TypeVar("T")

MIB = 1024 * 1024
NOT_AVAILABLE_UINT = 0xFFFFFFFF
# Why utilisation is missing on MIG: NVML reports neither a GPU's utilisation in MIG mode nor
# any process's (NOT_SUPPORTED), so no MIG job's use of its compute can be measured.
MIG_UTIL_NOTE = "not reported by NVML for MIG instances"

# GPU-instance profiles the backend asks about, by pynvml constant name; a module or driver
# lacking one simply does not offer it.
GI_PROFILE_CONSTANTS = (
    "NVML_GPU_INSTANCE_PROFILE_1_SLICE", "NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1",
    "NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2", "NVML_GPU_INSTANCE_PROFILE_2_SLICE",
    "NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1", "NVML_GPU_INSTANCE_PROFILE_3_SLICE",
    "NVML_GPU_INSTANCE_PROFILE_4_SLICE", "NVML_GPU_INSTANCE_PROFILE_6_SLICE",
    "NVML_GPU_INSTANCE_PROFILE_7_SLICE", "NVML_GPU_INSTANCE_PROFILE_8_SLICE",
)
# The compute-instance profile that spans a whole GPU instance of n compute slices.
CI_PROFILE_FOR_SLICES = {
    1: "NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE", 2: "NVML_COMPUTE_INSTANCE_PROFILE_2_SLICE",
    3: "NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE", 4: "NVML_COMPUTE_INSTANCE_PROFILE_4_SLICE",
    6: "NVML_COMPUTE_INSTANCE_PROFILE_6_SLICE", 7: "NVML_COMPUTE_INSTANCE_PROFILE_7_SLICE",
    8: "NVML_COMPUTE_INSTANCE_PROFILE_8_SLICE",
}

# Clock throttle reasons by the names the snapshot gives them, with their pynvml bit constants
# (the ``Throttle`` spelling: older pynvml modules lack the newer ``Event`` one).
THROTTLE_REASONS = (
    ("gpu_idle", "nvmlClocksThrottleReasonGpuIdle"),
    ("applications_clocks", "nvmlClocksThrottleReasonApplicationsClocksSetting"),
    ("sw_power_cap", "nvmlClocksThrottleReasonSwPowerCap"),
    ("hw_slowdown", "nvmlClocksThrottleReasonHwSlowdown"),
    ("sync_boost", "nvmlClocksThrottleReasonSyncBoost"),
    ("sw_thermal_slowdown", "nvmlClocksThrottleReasonSwThermalSlowdown"),
    ("hw_thermal_slowdown", "nvmlClocksThrottleReasonHwThermalSlowdown"),
    ("hw_power_brake_slowdown", "nvmlClocksThrottleReasonHwPowerBrakeSlowdown"),
    ("display_clock_setting", "nvmlClocksThrottleReasonDisplayClockSetting"),
    ("board_limit", "nvmlClocksThrottleReasonBoardLimit"),
    ("reliability", "nvmlClocksThrottleReasonReliability"),
)


# nvmlDeviceGetTopologyCommonAncestor's levels by nvidia-smi topo -m's names. Two GPUs on one
# board (INTERNAL: a K80's pair) sit behind the board's own PCIe switch, which topo -m prints PIX.
PCIE_LINK_NAMES = (
    ("NVML_TOPOLOGY_INTERNAL", "PIX"), ("NVML_TOPOLOGY_SINGLE", "PIX"),
    ("NVML_TOPOLOGY_MULTIPLE", "PXB"), ("NVML_TOPOLOGY_HOSTBRIDGE", "PHB"),
    ("NVML_TOPOLOGY_NODE", "NODE"), ("NVML_TOPOLOGY_SYSTEM", "SYS"),
)
# What a GPU's link to itself is called in the link matrix, as in nvidia-smi topo -m.
SELF_LINK = "X"


class NvmlCallError(Exception):
    """An NVML call failed; names the call and the NVML error so a person can act on it."""

    def __init__(self, function: str, code: int, code_name: str, text: str):
        super().__init__("%s failed: %s (%s)" % (function, text, code_name))
        self.function = function
        self.code = code
        self.code_name = code_name
        self.text = text


@dataclass(frozen=True)
class GpuInfo:
    index: int
    uuid: str
    name: str
    memory_mib: int
    mig_capable: bool
    mig_mode: bool
    mig_pending: bool  # the mode after the next GPU reset; differs from mig_mode until then


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_mib: Optional[int]
    gi_id: Optional[int] = None
    ci_id: Optional[int] = None
    instance_uuid: Optional[str] = None


@dataclass(frozen=True)
class ProcessUtil:
    sm: Dict[int, float]  # pid -> SM utilisation in percent of the GPU
    last_us: int  # the newest sample's time: where the next read starts


@dataclass(frozen=True)
class Health:
    """One read of a GPU's health; None where it was not measured: NVML does not support it
    there (named in ``unmeasured``) or the read failed (said in ``errors``)."""

    temperature_c: Optional[int]
    slowdown_c: Optional[int]
    power_mw: Optional[int]
    power_limit_mw: Optional[int]
    ecc_corrected: Optional[int]  # volatile counters: since the driver last loaded
    ecc_uncorrected: Optional[int]
    throttle: Optional[Tuple[str, ...]]
    unmeasured: Tuple[str, ...] = ()
    errors: Tuple[str, ...] = ()


@dataclass(frozen=True)
class XidEvent:
    index: int  # in the NVML session of its set (remote_agent.gpu.xid keeps its GPU's UUID)
    xid: int
    gi_id: Optional[int]
    ci_id: Optional[int]


@dataclass(frozen=True)
class MigDevice:
    gi_id: int
    ci_id: int
    uuid: str
    handle: Any = field(compare=False, repr=False)


def in_one_session(method: Callable[..., T]) -> Callable[..., T]:
    """A backend method that fetches a handle and goes on using it runs in one NVML session
    (``GpuBackend.held``): a reset in another thread cannot end the session in between."""
    @functools.wraps(method)
    def held(self: "GpuBackend", *args: Any, **kwargs: Any) -> T:
        with self.held():
            return method(self, *args, **kwargs)
    return held


class GpuBackend:
    """GPU inventory and MIG changes over a ``pynvml``-compatible module."""

    def __init__(self, nv: ModuleType):
        self.nv = nv
        self._error_names = {getattr(nv, n): n for n in dir(nv) if n.startswith("NVML_ERROR_")}
        self._geometry: Dict[Tuple[int, str], Geometry] = {}
        self._slowdown: Dict[int, Optional[int]] = {}
        self._links: Optional[List[List[str]]] = None
        self.session = Session()
        self._down = False  # NVML shut down for a reset and not started again yet
        self._start_lock = threading.Lock()
        self._restarted: List[Callable[[], None]] = []  # told when NVML started again
        self._stopping: List[Callable[[], None]] = []  # told before NVML is shut down

    # -- plumbing --

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The NVML session held (shared) across several calls, NVML started first where a
        reset left it down: handles fetched in it are used in it, for ``nvmlShutdown`` frees
        every device resource (a reset in another thread waits until it is let go)."""
        with self.session.shared():
            if self._down:
                self._start_again()
            yield

    def call(self, function: str, *args: Any) -> Any:
        with self.held():
            return self._raw(function, *args)

    def _raw(self, function: str, *args: Any) -> Any:
        try:
            return getattr(self.nv, function)(*args)
        except self.nv.NVMLError as err:
            code = getattr(err, "value", -1)
            raise NvmlCallError(function, code, self._error_names.get(code, "NVML_ERROR_%s" % code),
                                str(err)) from err

    def is_error(self, err: NvmlCallError, *names: str) -> bool:
        return err.code_name in names

    def open(self) -> None:
        self.call("nvmlInit")

    def close(self) -> None:
        self.call("nvmlShutdown")

    def on_restart(self, stopping: Callable[[], None], restarted: Callable[[], None]) -> None:
        """``stopping`` runs (holding the session alone) before NVML is shut down for a reset,
        to free what the session holds; ``restarted`` once it started again."""
        self._stopping.append(stopping)
        self._restarted.append(restarted)

    @contextlib.contextmanager
    def detached(self) -> Iterator[None]:
        """NVML shut down in this process while the block runs (a GPU reset by another program,
        which the driver refuses while any client is attached), started again after. Calls of
        other threads wait meanwhile; one that comes when starting again failed tries again."""
        with self.session.alone():
            for stopping in self._stopping:
                stopping()
            try:
                self._raw("nvmlShutdown")
            except NvmlCallError:  # still started: what was freed is made again
                self.session.generation += 1
                for restarted in self._restarted:
                    restarted()
                raise
            self._down = True
            try:
                yield
            finally:
                try:
                    self._start_again()
                except NvmlCallError as err:  # the next call tries again, and says so if not
                    log.warning("NVML did not start again after the GPU reset: %s", err)

    def _start_again(self) -> None:
        with self._start_lock:
            if not self._down:
                return
            self._raw("nvmlInit")
            self._down = False
            self.session.generation += 1
        for restarted in self._restarted:
            restarted()

    def driver_version(self) -> str:
        return _text(self.call("nvmlSystemGetDriverVersion"))

    def handle(self, index: int) -> Any:
        return self.call("nvmlDeviceGetHandleByIndex", index)

    # -- inventory --

    def count(self) -> int:
        return self.call("nvmlDeviceGetCount")

    @in_one_session
    def gpu(self, index: int) -> GpuInfo:
        h = self.handle(index)
        mem = self.call("nvmlDeviceGetMemoryInfo", h)
        try:
            current, pending = self.call("nvmlDeviceGetMigMode", h)
            capable = True
        except NvmlCallError as err:
            if not self.is_error(err, "NVML_ERROR_NOT_SUPPORTED"):
                raise
            capable, current, pending = False, 0, 0
        return GpuInfo(index=index, uuid=_text(self.call("nvmlDeviceGetUUID", h)),
                       name=_text(self.call("nvmlDeviceGetName", h)),
                       memory_mib=int(mem.total // MIB), mig_capable=capable,
                       mig_mode=bool(current), mig_pending=bool(pending))

    @in_one_session
    def gpus(self) -> List[GpuInfo]:
        return [self.gpu(i) for i in range(self.count())]

    @in_one_session
    def links(self) -> List[List[str]]:
        """How every GPU reaches every other, by nvidia-smi topo -m's names: ``NV#`` (# direct
        NVLink links), ``NVSWITCH`` (both on NVSwitches with NVLink P2P between them), else the
        PCIe path (``PIX``, ``PXB``, ``PHB``, ``NODE``, ``SYS``); ``X`` on the diagonal. Read
        once: a host's wiring does not change while the driver runs."""
        if self._links is None:
            self._links = self._read_links()
        return self._links

    def _read_links(self) -> List[List[str]]:
        nv = self.nv
        handles = [self.handle(i) for i in range(self.count())]
        bus = {_text(self.call("nvmlDeviceGetPciInfo", h).busId): i
               for i, h in enumerate(handles)}
        n = len(handles)
        direct = [[0] * n for _ in range(n)]
        switched = [False] * n
        for i, h in enumerate(handles):
            for link in range(nv.NVML_NVLINK_MAX_LINKS):
                try:
                    if self.call("nvmlDeviceGetNvLinkState", h, link) != nv.NVML_FEATURE_ENABLED:
                        continue
                except NvmlCallError as err:  # no NVLink on this GPU, or no such link on it
                    if self.is_error(err, "NVML_ERROR_NOT_SUPPORTED",
                                     "NVML_ERROR_INVALID_ARGUMENT"):
                        continue
                    raise
                if self.call("nvmlDeviceGetNvLinkRemoteDeviceType", h, link) \
                        == nv.NVML_NVLINK_DEVICE_TYPE_SWITCH:
                    switched[i] = True
                    continue
                peer = bus.get(_text(self.call("nvmlDeviceGetNvLinkRemotePciInfo", h,
                                               link).busId))
                if peer is not None:
                    direct[i][peer] += 1
        levels = {getattr(nv, const): name for const, name in PCIE_LINK_NAMES}
        out = [[SELF_LINK] * n for _ in range(n)]
        for i in range(n):
            for j in range(i + 1, n):
                count = max(direct[i][j], direct[j][i])
                if count:
                    name = "NV%d" % count
                elif switched[i] and switched[j] and self.call(
                        "nvmlDeviceGetP2PStatus", handles[i], handles[j],
                        nv.NVML_P2P_CAPS_INDEX_NVLINK) == nv.NVML_P2P_STATUS_OK:
                    name = "NVSWITCH"
                else:
                    level = self.call("nvmlDeviceGetTopologyCommonAncestor", handles[i],
                                      handles[j])
                    name = levels.get(level, "SYS")
                out[i][j] = out[j][i] = name
        return out

    @in_one_session
    def resolve(self, ref: Union[int, str]) -> int:
        """A GPU named by index or by its GPU uuid -> its index."""
        if isinstance(ref, int):
            if not 0 <= ref < self.count():
                raise LookupError("no GPU %d on this host (it has %d)" % (ref, self.count()))
            return ref
        for i in range(self.count()):
            if _text(self.call("nvmlDeviceGetUUID", self.handle(i))) == ref:
                return i
        raise LookupError("no GPU with uuid %s on this host" % ref)

    @in_one_session
    def geometry(self, index: int) -> Geometry:
        """The MIG rules of this GPU as NVML states them (profiles, placements, counts)."""
        h = self.handle(index)
        name = _text(self.call("nvmlDeviceGetName", h))
        key = (index, name)
        if key in self._geometry:
            return self._geometry[key]
        profiles: List[Profile] = []
        for const_name in GI_PROFILE_CONSTANTS:
            const = getattr(self.nv, const_name, None)
            if const is None:
                continue
            try:
                info = self.call("nvmlDeviceGetGpuInstanceProfileInfo", h, const)
            except NvmlCallError as err:
                if self.is_error(err, "NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_INVALID_ARGUMENT"):
                    continue
                raise
            starts, size = self._placements(h, info.id, info.instanceCount)
            profiles.append(Profile(
                name=_text(info.name).replace("MIG ", "", 1), profile_id=int(info.id),
                compute_slices=int(info.sliceCount), size=size, starts=starts,
                max_instances=int(info.instanceCount), memory_mib=int(info.memorySizeMB)))
        if not profiles:
            raise LookupError("GPU %d (%s) reports no MIG profiles: is MIG mode on?"
                              % (index, name))
        geo = Geometry(model=name,
                       memory_slices=max(max(p.starts) + p.size for p in profiles),
                       compute_slices=max(p.compute_slices for p in profiles),
                       profiles=tuple(profiles))
        self._geometry[key] = geo
        return geo

    def _placements(self, h: Any, profile_id: int, capacity: int) -> Tuple[Tuple[int, ...], int]:
        count = c_uint(0)
        self.call("nvmlDeviceGetGpuInstancePossiblePlacements", h, profile_id, None, byref(count))
        array = (self.nv.c_nvmlGpuInstancePlacement_t * max(count.value, capacity, 1))()
        count.value = len(array)
        self.call("nvmlDeviceGetGpuInstancePossiblePlacements", h, profile_id, array, byref(count))
        placed = [array[i] for i in range(count.value)]
        return tuple(sorted(int(p.start) for p in placed)), int(placed[0].size) if placed else 0

    @in_one_session
    def mig_devices(self, index: int) -> List[MigDevice]:
        h = self.handle(index)
        out = []
        for i in range(self.call("nvmlDeviceGetMaxMigDeviceCount", h)):
            try:
                mh = self.call("nvmlDeviceGetMigDeviceHandleByIndex", h, i)
            except NvmlCallError as err:
                if self.is_error(err, "NVML_ERROR_NOT_FOUND"):
                    continue
                raise
            out.append(MigDevice(gi_id=self.call("nvmlDeviceGetGpuInstanceId", mh),
                                 ci_id=self.call("nvmlDeviceGetComputeInstanceId", mh),
                                 uuid=_text(self.call("nvmlDeviceGetUUID", mh)), handle=mh))
        return out

    def _gpu_instances(self, index: int, geo: Geometry) -> List[Tuple[Any, Any]]:
        """(handle, info) of every GPU instance, asked profile by profile as NVML wants."""
        h = self.handle(index)
        found = []
        for p in geo.profiles:
            array = (self.nv.c_nvmlGpuInstance_t * max(p.max_instances, 1))()
            count = c_uint(len(array))
            self.call("nvmlDeviceGetGpuInstances", h, p.profile_id, array, byref(count))
            for i in range(count.value):
                found.append((array[i], self.call("nvmlGpuInstanceGetInfo", array[i])))
        return found

    @in_one_session
    def layout(self, index: int, devices: Optional[List[MigDevice]] = None) -> Layout:
        """What is placed on a MIG GPU now, with each instance's processes.

        An instance whose processes cannot be read counts as busy: the planner must never
        destroy what might be in use."""
        geo = self.geometry(index)
        by_gi: Dict[int, List[MigDevice]] = {}
        for d in self.mig_devices(index) if devices is None else devices:
            by_gi.setdefault(d.gi_id, []).append(d)
        instances = []
        for _, info in self._gpu_instances(index, geo):
            prof = geo.profile_by_id(info.profileId)
            gi_id = int(info.id)
            pids: List[int] = []
            busy = False
            for d in by_gi.get(gi_id, []):
                try:
                    pids.extend(p.pid for p in self.call("nvmlDeviceGetComputeRunningProcesses",
                                                         d.handle))
                except NvmlCallError:
                    busy = True
            mine = sorted(by_gi.get(gi_id, []), key=lambda d: d.ci_id)
            instances.append(Instance(
                gi_id=gi_id, profile=prof.name if prof else "profile-%d" % info.profileId,
                start=int(info.placement.start), size=int(info.placement.size),
                compute_slices=prof.compute_slices if prof else 0,
                # an instance of a profile this GPU does not list was made by someone else's
                # tooling: never ours to destroy
                uuid=mine[0].uuid if mine else None, busy=busy or bool(pids) or prof is None,
                pids=tuple(sorted(pids)), memory_mib=prof.memory_mib if prof else 0))
        instances.sort(key=lambda i: (i.start, i.gi_id))
        return Layout(geo, tuple(instances))

    # -- live state --

    @in_one_session
    def processes(self, index: int, info: Optional[GpuInfo] = None,
                  devices: Optional[List[MigDevice]] = None) -> List[GpuProcess]:
        """GPU processes; pass what the caller already read to spare NVML calls."""
        info = info or self.gpu(index)
        if not info.mig_mode:
            return [GpuProcess(pid=p.pid, used_mib=_mib(p.usedGpuMemory))
                    for p in self.call("nvmlDeviceGetComputeRunningProcesses", self.handle(index))]
        out = []
        for d in self.mig_devices(index) if devices is None else devices:
            for p in self.call("nvmlDeviceGetComputeRunningProcesses", d.handle):
                out.append(GpuProcess(pid=p.pid, used_mib=_mib(p.usedGpuMemory), gi_id=d.gi_id,
                                      ci_id=d.ci_id, instance_uuid=d.uuid))
        return out

    @in_one_session
    def memory_used_mib(self, index: int) -> int:
        return int(self.call("nvmlDeviceGetMemoryInfo", self.handle(index)).used // MIB)

    @in_one_session
    def instance_memory_mib(self, device: MigDevice) -> Tuple[int, int]:
        mem = self.call("nvmlDeviceGetMemoryInfo", device.handle)
        return int(mem.used // MIB), int(mem.total // MIB)

    @in_one_session
    def instance_memory_used_mib(self, instance_uuid: str) -> int:
        """Memory in use on a MIG instance, found by its uuid."""
        handle = self.call("nvmlDeviceGetHandleByUUID", instance_uuid)
        return int(self.call("nvmlDeviceGetMemoryInfo", handle).used // MIB)

    @in_one_session
    def process_utilization(self, index: int, since_us: int) -> Optional[ProcessUtil]:
        """SM utilisation per process in NVML's samples newer than ``since_us`` (the mean of a
        process's samples), or None where NVML does not report it (MIG: ``MIG_UTIL_NOTE``).
        NVML lists only the processes busy in a sample, so one it leaves out used 0 %, and
        NOT_FOUND means no process was busy."""
        try:
            samples = self.call("nvmlDeviceGetProcessUtilization", self.handle(index), since_us)
        except NvmlCallError as err:
            if self.is_error(err, "NVML_ERROR_NOT_SUPPORTED"):
                return None
            if self.is_error(err, "NVML_ERROR_NOT_FOUND"):
                return ProcessUtil(sm={}, last_us=since_us)
            raise
        seen: Dict[int, List[int]] = {}
        for sample in samples:
            seen.setdefault(int(sample.pid), []).append(int(sample.smUtil))
        return ProcessUtil(sm={pid: sum(v) / len(v) for pid, v in seen.items()},
                           last_us=max([since_us] + [int(s.timeStamp) for s in samples]))

    @in_one_session
    def utilization(self, index: int) -> Optional[int]:
        """GPU utilisation in percent, or None where NVML does not report it (MIG)."""
        try:
            return int(self.call("nvmlDeviceGetUtilizationRates", self.handle(index)).gpu)
        except NvmlCallError as err:
            if self.is_error(err, "NVML_ERROR_NOT_SUPPORTED"):
                return None
            raise

    # -- health --

    @in_one_session
    def health(self, index: int) -> Health:
        """Temperature, power, ECC and throttling, each read on its own: one that NVML does
        not support here or that fails is left out, never the GPU."""
        h = self.handle(index)
        unmeasured: List[str] = []
        errors: List[str] = []

        def read(what: str, function: str, *args: Any, older: Optional[str] = None) -> Any:
            """``function``, or ``older`` where the module or driver lacks it."""
            names = [n for n in (function, older) if n and hasattr(self.nv, n)]
            for k, name in enumerate(names):
                try:
                    return self.call(name, h, *args)
                except NvmlCallError as err:
                    if k + 1 < len(names) and self.is_error(err, "NVML_ERROR_FUNCTION_NOT_FOUND"):
                        continue
                    if self.is_error(err, "NVML_ERROR_NOT_SUPPORTED"):
                        unmeasured.append(what)
                    else:
                        errors.append(str(err))
            return None

        nv = self.nv
        if index not in self._slowdown:  # a constant of the board: read once
            self._slowdown[index] = read("slowdown temperature",
                                         "nvmlDeviceGetTemperatureThreshold",
                                         nv.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)
        uncorrected = read("ECC errors", "nvmlDeviceGetTotalEccErrors",
                           nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC)
        corrected = None if uncorrected is None else read(
            "ECC errors", "nvmlDeviceGetTotalEccErrors", nv.NVML_MEMORY_ERROR_TYPE_CORRECTED,
            nv.NVML_VOLATILE_ECC)
        reasons = read("clock throttle reasons", "nvmlDeviceGetCurrentClocksEventReasons",
                       older="nvmlDeviceGetCurrentClocksThrottleReasons")
        return Health(
            temperature_c=read("temperature", "nvmlDeviceGetTemperature",
                               nv.NVML_TEMPERATURE_GPU),
            slowdown_c=self._slowdown[index],
            power_mw=read("power draw", "nvmlDeviceGetPowerUsage"),
            power_limit_mw=read("power limit", "nvmlDeviceGetEnforcedPowerLimit"),
            ecc_corrected=corrected, ecc_uncorrected=uncorrected,
            throttle=None if reasons is None else tuple(
                name for name, const in THROTTLE_REASONS if reasons & getattr(nv, const, 0))
            + tuple("0x%x" % bit for bit in _bits(reasons & ~self._known_reasons())),
            unmeasured=tuple(sorted(set(unmeasured))), errors=tuple(errors))

    def _known_reasons(self) -> int:
        mask = 0
        for _, const in THROTTLE_REASONS:
            mask |= getattr(self.nv, const, 0)
        return mask

    @in_one_session
    def xid_events(self, indexes: List[int]) -> Tuple[Any, Dict[int, str], Dict[int, str]]:
        """An event set for the critical XID errors of these GPUs, why a GPU could not be
        registered (NVML does not deliver them there), and the UUID of each registered one by
        its index, which names it while the set lives (one NVML session): read as it is
        registered, since the GPU of an event may not say it by then (NVML_ERROR_GPU_IS_LOST
        once it fell off the bus, XID 79)."""
        events = self.call("nvmlEventSetCreate")
        refused: Dict[int, str] = {}
        uuids: Dict[int, str] = {}
        for index in indexes:
            try:
                uuids[index] = self.register_xid(events, index)
            except NvmlCallError as err:
                refused[index] = str(err)
        return events, refused, uuids

    @in_one_session
    def register_xid(self, events: Any, index: int) -> str:
        """Add GPU ``index``'s critical XID errors to the event set (again: it adds the type
        to what the set records of that GPU); its UUID, read first."""
        handle = self.handle(index)
        uuid = _text(self.call("nvmlDeviceGetUUID", handle))
        self.call("nvmlDeviceRegisterEvents", handle, self.nv.nvmlEventTypeXidCriticalError,
                  events)
        return uuid

    def wait_xid(self, events: Any, timeout_ms: int,
                 generation: Optional[int] = None) -> Optional[XidEvent]:
        """The next critical XID error of the set, or None when none came in time, or when the
        set was made in an NVML session (``generation``) that has ended since: it is gone."""
        with self.held():  # started again first, so the generation compared is the one now
            if generation is not None and generation != self.session.generation:
                return None
            return self._wait_xid(events, timeout_ms)

    def _wait_xid(self, events: Any, timeout_ms: int) -> Optional[XidEvent]:
        try:
            data = self.call("nvmlEventSetWait_v2", events, timeout_ms)
        except NvmlCallError as err:
            if self.is_error(err, "NVML_ERROR_TIMEOUT"):
                return None
            raise
        if not data.eventType & self.nv.nvmlEventTypeXidCriticalError:
            return None
        gi, ci = int(data.gpuInstanceId), int(data.computeInstanceId)
        return XidEvent(index=int(self.call("nvmlDeviceGetIndex", data.device)),
                        xid=int(data.eventData), gi_id=None if gi == NOT_AVAILABLE_UINT else gi,
                        ci_id=None if ci == NOT_AVAILABLE_UINT else ci)

    def free_events(self, events: Any) -> None:
        self.call("nvmlEventSetFree", events)

    # -- changes --

    @in_one_session
    def create_instance(self, index: int, profile: Profile, start: int,
                        with_compute: bool = True) -> None:
        """Create a GPU instance at ``start`` and (unless told not to) its full-size compute
        instance. Only the steps: a failure midway may leave a GPU instance without its compute
        instance, and mig.apply, which reads the layout back, puts that right."""
        placement = self.nv.c_nvmlGpuInstancePlacement_t()
        placement.start = start
        placement.size = profile.size
        gi = self.call("nvmlDeviceCreateGpuInstanceWithPlacement", self.handle(index),
                       profile.profile_id, byref(placement))
        if not with_compute:
            return
        ci_profile = getattr(self.nv, CI_PROFILE_FOR_SLICES[profile.compute_slices])
        ci_info = self.call("nvmlGpuInstanceGetComputeInstanceProfileInfo", gi, ci_profile,
                            self.nv.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
        self.call("nvmlGpuInstanceCreateComputeInstance", gi, ci_info.id)

    @in_one_session
    def destroy_instance(self, index: int, gi_id: int) -> None:
        """Destroy a GPU instance and its compute instances (the steps only, as above)."""
        gi = self.call("nvmlDeviceGetGpuInstanceById", self.handle(index), gi_id)
        for ci in self._compute_instances(gi):
            self.call("nvmlComputeInstanceDestroy", ci)
        self.call("nvmlGpuInstanceDestroy", gi)

    def _compute_instances(self, gi: Any) -> List[Any]:
        out = []
        for slices in sorted(CI_PROFILE_FOR_SLICES):
            const = getattr(self.nv, CI_PROFILE_FOR_SLICES[slices], None)
            if const is None:
                continue
            try:
                info = self.call("nvmlGpuInstanceGetComputeInstanceProfileInfo", gi, const,
                                 self.nv.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
            except NvmlCallError as err:
                if self.is_error(err, "NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_INVALID_ARGUMENT"):
                    continue
                raise
            array = (self.nv.c_nvmlComputeInstance_t * max(info.instanceCount, 1))()
            count = c_uint(len(array))
            self.call("nvmlGpuInstanceGetComputeInstances", gi, info.id, array, byref(count))
            out.extend(array[i] for i in range(count.value))
        return out

    @in_one_session
    def mig_mode(self, index: int) -> Tuple[bool, bool]:
        """(current, pending) MIG mode: pending is what the next GPU reset brings."""
        current, pending = self.call("nvmlDeviceGetMigMode", self.handle(index))
        return bool(current), bool(pending)

    @in_one_session
    def set_mig_mode(self, index: int, enabled: bool) -> None:
        """Ask for MIG mode on or off (read back with ``mig_mode``)."""
        self._geometry = {k: v for k, v in self._geometry.items() if k[0] != index}
        mode = self.nv.NVML_DEVICE_MIG_ENABLE if enabled else self.nv.NVML_DEVICE_MIG_DISABLE
        self.call("nvmlDeviceSetMigMode", self.handle(index), mode)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bits(mask: int) -> List[int]:
    return [1 << i for i in range(64) if mask >> i & 1]


def _mib(used_bytes: Optional[int]) -> Optional[int]:
    return None if used_bytes is None else int(used_bytes // MIB)
