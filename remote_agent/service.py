"""The agent's methods: what a host tells and does, behind the JSON-RPC table.

One ``Agent`` per host process. MIG changes are serialised by a lock per GPU so that several
clients never interleave the steps of two plans on one GPU, while changes to different GPUs go on
at once.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from types import ModuleType
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, TypeVar

from remote_agent import PROTOCOL_VERSION, __version__
from remote_agent.gpu.backend import GpuBackend, GpuInfo, MigDevice, NvmlCallError
from remote_agent.jobs.caps import CapProbe
from remote_agent.mig import planner
from remote_agent.mig.apply import ApplyError, apply_plan
from remote_agent.mig.layout import Instance, Layout
from remote_agent.rpc import jsonrpc as rpc
from remote_agent.rpc.jsonrpc import Method, Params, RpcError

T = TypeVar("T")

_PLAN_ERROR_CODES = {
    "unknown_profile": rpc.UNKNOWN_PROFILE,
    "bad_start": rpc.INVALID_PARAMS,
    "busy": rpc.INSTANCE_BUSY,
    "no_room": rpc.NO_ROOM,
    "needs_destroy": rpc.NEEDS_DESTROY,
}


def host_memory_mib() -> int:
    """The host's RAM, which the admin side books jobs' ``memory`` against."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1024 * 1024)


class Agent:
    """GPU inventory and live MIG changes for one host.

    ``sim`` is the fake pynvml module when the backend is simulated; it enables ``sim.*``."""

    def __init__(self, nv: ModuleType, backend_kind: str, sim: Optional[ModuleType] = None):
        self.backend = GpuBackend(nv)
        self.backend_kind = backend_kind
        self.sim = sim
        self._mig_locks: Dict[int, threading.RLock] = {}
        self._mig_locks_guard = threading.Lock()
        # MIG uuids that jobs hold: busy for planning even before their processes start
        self.reserved: Callable[[], Set[str]] = set
        self.cap_probe: Optional[CapProbe] = None  # set by the daemon, which launches jobs
        self.problem: Optional[str] = None
        try:
            self.backend.open()
        except NvmlCallError as err:
            self.problem = "NVML did not start: %s" % err

    def methods(self) -> Dict[str, Method]:
        table = {
            "hello": Method(self.hello, ("protocol", "client")),
            "inventory": Method(self.inventory),
            "snapshot": Method(self.snapshot),
            "mig.plan": Method(self.mig_plan, ("gpu", "profile", "start", "destroy_idle")),
            "mig.apply": Method(self.mig_apply, ("gpu", "profile", "start", "layout_version",
                                                 "destroy_idle")),
            "mig.destroy": Method(self.mig_destroy, ("gpu", "instance", "gi_id")),
            "mig.set_mode": Method(self.mig_set_mode, ("gpu", "enabled")),
        }
        if self.sim is not None:
            table.update({
                "sim.add_process": Method(self.sim_add_process,
                                          ("gpu", "used_mib", "instance", "pid", "util")),
                "sim.set_process_memory": Method(self.sim_set_process_memory,
                                                 ("pid", "used_mib")),
                "sim.remove_process": Method(self.sim_remove_process, ("pid",)),
                "sim.fault": Method(self.sim_fault, ("function", "error", "skip", "count")),
                "sim.clear_faults": Method(self.sim_clear_faults),
                "sim.hold": Method(self.sim_hold, ("function", "gate")),
            })
        return table

    # -- helpers --

    def mig_lock(self, index: int) -> threading.RLock:
        """The lock of GPU ``index``'s MIG changes (re-entrant: a launch holds it from creating
        its instance until it has recorded it, across ``create_for_job``)."""
        with self._mig_locks_guard:
            return self._mig_locks.setdefault(index, threading.RLock())

    def _mig_lock_of(self, p: Params) -> threading.RLock:
        return self.mig_lock(self._gpu(p).index)

    def call_nvml(self, fn: Callable[[], T]) -> T:
        """Run backend work, turning NVML failures into protocol errors a person can act on."""
        if self.problem is not None:
            raise RpcError(rpc.BACKEND_UNAVAILABLE, self.problem)
        try:
            return fn()
        except NvmlCallError as err:
            code = rpc.NOT_PERMITTED if err.code_name == "NVML_ERROR_NO_PERMISSION" \
                else rpc.NVML_FAILED
            raise RpcError(code, str(err), {"function": err.function,
                                            "nvml_error": err.code_name}) from err

    def layout(self, index: int, devices: Optional[List[MigDevice]] = None) -> Layout:
        """The GPU's layout with instances that jobs hold marked busy."""
        layout = self.backend.layout(index, devices)
        held = self.reserved()
        if not held:
            return layout
        return Layout(layout.geometry, tuple(
            replace(i, busy=True) if i.uuid in held else i for i in layout.instances))

    def _gpu(self, p: Params) -> GpuInfo:
        ref = p.gpu()
        try:
            index = self.call_nvml(lambda: self.backend.resolve(ref))
        except LookupError as err:
            raise RpcError(rpc.GPU_NOT_FOUND, str(err), {"gpu": ref}) from err
        return self.call_nvml(lambda: self.backend.gpu(index))

    def _mig_gpu(self, p: Params) -> Tuple[GpuInfo, Layout]:
        info = self._gpu(p)
        if not info.mig_mode:
            why = "does not support MIG" if not info.mig_capable else "has MIG mode off"
            raise RpcError(rpc.NOT_MIG, "GPU %d (%s) %s" % (info.index, info.name, why),
                           {"gpu": info.index})
        return info, self.call_nvml(lambda: self.layout(info.index))

    def _require_mig_privilege(self) -> None:
        reason = self.mig_privilege_problem()
        if reason:
            raise RpcError(rpc.NOT_PERMITTED, reason)

    def mig_privilege_problem(self) -> Optional[str]:
        if self.backend_kind == "sim" or os.geteuid() == 0:
            return None
        return ("the agent runs as uid %d without root, and MIG changes need root: reach this "
                "host as root or start the agent with become = \"sudo\"" % os.geteuid())

    # -- methods --

    def hello(self, p: Params) -> Dict[str, Any]:
        wanted = p.integer("protocol", None)
        if wanted is not None and wanted != PROTOCOL_VERSION:
            raise RpcError(rpc.PROTOCOL_MISMATCH, "this agent speaks protocol %d, not %d" % (
                PROTOCOL_VERSION, wanted), {"protocol": PROTOCOL_VERSION})
        p.text("client", None)
        problems = [self.problem] if self.problem else []
        gpus: List[Dict[str, Any]] = []
        driver = None
        if not self.problem:
            driver = self.call_nvml(self.backend.driver_version)
            for info in self.call_nvml(self.backend.gpus):
                gpus.append(self._capabilities(info))
        mig_reason = self.mig_privilege_problem()
        return {
            "protocol": PROTOCOL_VERSION,
            "agent_version": __version__,
            "backend": self.backend_kind,
            "host": socket.gethostname(),
            "cpus": os.cpu_count() or 1,
            "memory_mib": host_memory_mib(),
            "driver_version": driver,
            "privileges": {"root": os.geteuid() == 0, "mig_changes": mig_reason is None,
                           "reason": mig_reason},
            "gpus": gpus,
            "problems": problems,
            "methods": sorted(self.methods()),
        }

    def _capabilities(self, info: GpuInfo) -> Dict[str, Any]:
        record: Dict[str, Any] = {"index": info.index, "uuid": info.uuid, "name": info.name,
                                  "mig_capable": info.mig_capable, "mig_mode": info.mig_mode}
        if info.mig_mode:
            record["cap_layers"] = ["mig"]
        elif self.cap_probe is not None:
            record["cap_layers"] = list(self.cap_probe.layers)
            record["cap_layers_unavailable"] = dict(self.cap_probe.unavailable)
        else:
            record["cap_layers"] = []
        return record

    def _gpu_record(self, info: GpuInfo,
                    devices: Optional[List[MigDevice]] = None) -> Dict[str, Any]:
        record: Dict[str, Any] = {
            "index": info.index, "uuid": info.uuid, "name": info.name,
            "memory_mib": info.memory_mib, "mig_capable": info.mig_capable,
            "mig_mode": info.mig_mode, "mig_pending": info.mig_pending,
        }
        if info.mig_mode:
            layout = self.layout(info.index, devices)
            record["layout_version"] = layout.version
            record["instances"] = [_instance_record(i) for i in layout.instances]
        return record

    def inventory(self, p: Params) -> Dict[str, Any]:
        return self.call_nvml(lambda: {
            "host": socket.gethostname(),
            "gpus": [self._gpu_record(info) for info in self.backend.gpus()]})

    def snapshot(self, p: Params) -> Dict[str, Any]:
        return self.take_snapshot()

    def take_snapshot(self) -> Dict[str, Any]:
        def take() -> Dict[str, Any]:
            gpus = []
            for info in self.backend.gpus():
                devices = self.backend.mig_devices(info.index) if info.mig_mode else []
                record = self._gpu_record(info, devices)
                record["memory_used_mib"] = self.backend.memory_used_mib(info.index)
                util = self.backend.utilization(info.index)
                record["utilization_gpu"] = util
                if util is None:
                    record["utilization_note"] = "not reported by NVML for MIG instances"
                procs = self.backend.processes(info.index, info, devices)
                record["processes"] = [{"pid": q.pid, "used_mib": q.used_mib,
                                        "instance": q.instance_uuid} for q in procs]
                if info.mig_mode:
                    memory = {d.uuid: self.backend.instance_memory_mib(d) for d in devices}
                    for inst in record["instances"]:
                        used, total = memory.get(inst["uuid"], (0, inst["memory_mib"]))
                        inst["memory_used_mib"] = used
                        inst["memory_mib"] = total
                gpus.append(record)
            return {"host": socket.gethostname(), "time": time.time(), "gpus": gpus}
        return self.call_nvml(take)

    def _plan(self, layout: Layout, profile: str, start: Optional[int],
              destroy_idle: bool) -> planner.Plan:
        try:
            return planner.plan(layout, profile, start=start, destroy_idle=destroy_idle)
        except planner.PlanError as err:
            data: Dict[str, Any] = {"reason": err.kind, "layout_version": layout.version}
            if err.busy:
                data["busy"] = [_instance_record(i) for i in err.busy]
            if err.destroyable:
                data["destroyable"] = [_instance_record(i) for i in err.destroyable]
            message = str(err)
            if err.kind == "needs_destroy":
                message += "; pass destroy_idle: true to allow it"
            raise RpcError(_PLAN_ERROR_CODES[err.kind], message, data) from err

    def _apply(self, index: int, made: planner.Plan) -> Instance:
        """Carry out a plan (the caller holds the MIG lock)."""
        try:
            return self.call_nvml(lambda: apply_plan(self.backend, index, made))
        except ApplyError as err:
            raise RpcError(rpc.NVML_FAILED, str(err), {
                "function": err.cause.function, "nvml_error": err.cause.code_name,
                "rolled_back": err.rolled_back,
                "rollback_errors": [str(e) for e in err.rollback_errors]}) from err

    def create_for_job(self, index: int, profile: str, start: int, destroy_idle: bool,
                       taken: Callable[[str], bool], pinned: Optional[str] = None) -> str:
        """A MIG instance of ``profile`` at ``start`` for a job being launched: an idle one that
        is already there and held by no job (so a retried launch never makes a second), or a
        new one — refused if ``pinned`` (the layout version a preview was made against) is no
        longer the GPU's. Returns its MIG uuid."""
        self._require_mig_privilege()
        with self.mig_lock(index):
            layout = self.call_nvml(lambda: self.layout(index))
            for inst in layout.instances:
                if (inst.profile, inst.start) == (profile, start) and inst.uuid \
                        and not inst.busy and not taken(inst.uuid):
                    return inst.uuid
            self._check_pinned(index, layout, pinned)
            return self._apply(index, self._plan(layout, profile, start, destroy_idle)).uuid

    @staticmethod
    def _check_pinned(index: int, layout: Layout, pinned: Optional[str]) -> None:
        if pinned is not None and pinned != layout.version:
            raise RpcError(rpc.STALE_LAYOUT, (
                "the layout of GPU %d changed since the plan was made (version %s, now %s); "
                "plan again" % (index, pinned, layout.version)),
                {"layout_version": layout.version,
                 "instances": [_instance_record(i) for i in layout.instances]})

    def mig_plan(self, p: Params) -> Dict[str, Any]:
        info, layout = self._mig_gpu(p)
        made = self._plan(layout, p.text("profile"), p.integer("start", None, minimum=0),
                          p.flag("destroy_idle", False))
        return _plan_record(info, made)

    def mig_apply(self, p: Params) -> Dict[str, Any]:
        self._require_mig_privilege()
        start = p.integer("start", None, minimum=0)
        pinned = p.text("layout_version", None)
        with self._mig_lock_of(p):
            info, layout = self._mig_gpu(p)
            self._check_pinned(info.index, layout, pinned)
            made = self._plan(layout, p.text("profile"), start, p.flag("destroy_idle", False))
            created = self._apply(info.index, made)
            after = self.call_nvml(lambda: self.layout(info.index))
        record = _plan_record(info, made)
        record.update({"instance": _instance_record(created), "layout_version": after.version,
                       "planned_layout_version": made.layout_version})
        return record

    def mig_destroy(self, p: Params) -> Dict[str, Any]:
        self._require_mig_privilege()
        uuid = p.text("instance", None)
        gi_id = p.integer("gi_id", None, minimum=0)
        if (uuid is None) == (gi_id is None):
            raise RpcError(rpc.INVALID_PARAMS, "mig.destroy needs exactly one of 'instance' "
                           "(a MIG uuid) or 'gi_id'")
        with self._mig_lock_of(p):
            info, layout = self._mig_gpu(p)
            target = next((i for i in layout.instances
                           if (uuid is not None and i.uuid == uuid) or i.gi_id == gi_id), None)
            if target is None:
                raise RpcError(rpc.INSTANCE_NOT_FOUND, "no MIG instance %s on GPU %d" % (
                    uuid if uuid is not None else "with gi_id %d" % gi_id, info.index))
            if target.busy:
                raise RpcError(rpc.INSTANCE_BUSY, "%s is busy (pids %s): instances with running "
                               "processes are never destroyed" % (
                                   target.label(), ", ".join(map(str, target.pids)) or "unknown"),
                               {"instance": _instance_record(target)})
            self.call_nvml(lambda: self.backend.destroy_instance(info.index, target.gi_id))
            after = self.call_nvml(lambda: self.layout(info.index))
        return {"gpu": info.index, "destroyed": _instance_record(target),
                "layout_version": after.version}

    def mig_set_mode(self, p: Params) -> Dict[str, Any]:
        self._require_mig_privilege()
        enabled = p.flag("enabled")
        with self._mig_lock_of(p):
            info = self._gpu(p)
            if not info.mig_capable:
                raise RpcError(rpc.NOT_MIG, "GPU %d (%s) does not support MIG" % (
                    info.index, info.name), {"gpu": info.index})
            try:
                current, pending = self.call_nvml(
                    lambda: self.backend.set_mig_mode(info.index, enabled))
            except RpcError as err:
                if (err.data or {}).get("nvml_error") == "NVML_ERROR_IN_USE":
                    raise RpcError(rpc.GPU_IN_USE, (
                        "GPU %d has processes or MIG instances; MIG mode changes only on an idle "
                        "GPU (stop its work and destroy its instances first)" % info.index),
                        err.data) from err
                raise
        return {"gpu": info.index, "mig_mode": current, "mig_pending": pending,
                "reset_required": current != pending}

    # -- simulation controls --

    def _sim(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except ValueError as err:
            raise RpcError(rpc.INVALID_PARAMS, str(err)) from err

    def sim_add_process(self, p: Params) -> Dict[str, Any]:
        info = self._gpu(p)
        used = p.integer("used_mib", minimum=0)
        instance = p.text("instance", None)
        pid = p.integer("pid", None, minimum=1)
        util = p.integer("util", 0, minimum=0)
        return {"pid": self._sim(lambda: self.sim.sim_register_process(
            info.index, used, instance_uuid=instance, pid=pid, util=util))}

    def sim_set_process_memory(self, p: Params) -> Dict[str, Any]:
        pid, used = p.integer("pid"), p.integer("used_mib", minimum=0)
        self._sim(lambda: self.sim.sim_set_process_memory(pid, used))
        return {"pid": pid, "used_mib": used}

    def sim_remove_process(self, p: Params) -> Dict[str, Any]:
        return {"removed": self.sim.sim_remove_process(p.integer("pid"))}

    def sim_fault(self, p: Params) -> Dict[str, Any]:
        function = p.text("function")
        error = p.get("error", (str, int), "an NVML error name or code")
        code = getattr(self.sim, error, None) if isinstance(error, str) else error
        if not isinstance(code, int):
            raise RpcError(rpc.INVALID_PARAMS, "unknown NVML error %r" % (error,))
        skip, count = p.integer("skip", 0, minimum=0), p.integer("count", 1, minimum=1)
        self._sim(lambda: self.sim.sim_inject_fault(function, code, skip=skip, count=count))
        return {"function": function, "code": code, "skip": skip, "count": count}

    def sim_clear_faults(self, p: Params) -> Dict[str, Any]:
        self.sim.sim_clear_faults()
        return {"cleared": True}

    def sim_hold(self, p: Params) -> Dict[str, Any]:
        function, gate = p.text("function"), p.text("gate")
        self._sim(lambda: self.sim.sim_hold(function, gate))
        return {"function": function, "gate": gate}


def _instance_record(inst: Instance) -> Dict[str, Any]:
    return {"uuid": inst.uuid, "gi_id": inst.gi_id, "profile": inst.profile, "start": inst.start,
            "size": inst.size, "memory_mib": inst.memory_mib, "busy": inst.busy,
            "pids": list(inst.pids)}


def _plan_record(info: GpuInfo, made: planner.Plan) -> Dict[str, Any]:
    return {"gpu": info.index, "gpu_uuid": info.uuid, "profile": made.profile.name,
            "start": made.start, "size": made.profile.size,
            "destroy": [_instance_record(i) for i in made.destroy],
            "layout_version": made.layout_version, "description": made.describe()}
