"""The agent's methods: what a host tells and does, behind the JSON-RPC table.

One ``Agent`` per host process. MIG changes are serialised by a lock per GPU so that several
clients never interleave the steps of two plans on one GPU, while changes to different GPUs go on
at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from functools import partial
from types import ModuleType
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple, TypeVar, \
    Union

from remote_agent import DESTROY_IDLE_HINT, FEATURES, PROTOCOL_VERSION, __version__
from remote_agent.failing import Failures
from remote_agent.gpu.backend import MIG_UTIL_NOTE, THROTTLE_REASONS, GpuBackend, GpuInfo, \
    Health, MigDevice, NvmlCallError
from remote_agent.gpu.reset import GpuReset, SimReset, SmiReset
from remote_agent.gpu.xid import XidWatcher
from remote_agent.jobs.caps import CapProbe, mps_server
from remote_agent.limits import host_limits
from remote_agent.mig import planner
from remote_agent.mig.apply import Applied, Change, ChangeFailed, apply_change, \
    describe_layout, remade, reset_to_mode, restore, restore_mode, set_mode
from remote_agent.mig.health import Degraded, GpuHealth
from remote_agent.mig.journal import Begun, Entry, MigJournal, ModeEntry, boot_id
from remote_agent.mig.layout import Instance, Layout, LayoutsSeen, changed, placements
from remote_agent.mig.made_again import MadeAgain
from remote_agent.rpc import jsonrpc as rpc
from remote_agent.rpc.jsonrpc import Method, Params, RpcError
from remote_agent.text import noun_for

log = logging.getLogger(__name__)

# How long a GPU whose MIG profiles NVML would not give is left unasked, unless its mode changes:
# a driver that refuses them with MIG off would otherwise be asked each snapshot, twice a second.
PROFILES_RETRY_S = 60.0
# NVML errors that may pass with no one doing anything (NVIDIA's words: a timeout passed, the
# system not ready yet, an internal driver error): a job's instance is tried again on them.
# Not a lost GPU, a missing permission or resources, which another try cannot mend.
PASSING_NVML = frozenset({"NVML_ERROR_TIMEOUT", "NVML_ERROR_NOT_READY", "NVML_ERROR_UNKNOWN"})
LAUNCH_TRIES = 3  # of a job's MIG instance, on passing faults, before the launch is refused
LAUNCH_RETRY_S = 0.1  # between them, under the GPU's MIG lock

T = TypeVar("T")

_PLAN_ERROR_CODES = {
    "unknown_profile": rpc.UNKNOWN_PROFILE,
    "bad_start": rpc.INVALID_PARAMS,
    "busy": rpc.INSTANCE_BUSY,
    "no_room": rpc.NO_ROOM,
    "needs_destroy": rpc.NEEDS_DESTROY,
}


MIG_ON = (True, True)  # (current, pending): the mode a GPU's layout is judged in


class Agent:
    """GPU inventory and live MIG changes for one host.

    ``sim`` is the fake pynvml module when the backend is simulated; it enables ``sim.*``."""

    def __init__(self, nv: ModuleType, backend_kind: str, sim: Optional[ModuleType] = None):
        self.backend = GpuBackend(nv)
        self.backend_kind = backend_kind
        self.sim = sim
        self.resetter: GpuReset = SimReset(sim) if sim is not None else SmiReset()
        self._mig_locks: Dict[int, threading.RLock] = {}
        self._mig_locks_guard = threading.Lock()
        self.health = GpuHealth()
        self.seen = LayoutsSeen()  # what a plan's layout version held, to say what changed
        # the instances rollbacks made again, for retries (the daemon's keeps them on disk)
        self.made_again = MadeAgain()
        # GPUs whose MIG profiles NVML would not give: their MIG mode then, and when
        self._profiles_unread: Dict[int, Tuple[bool, float]] = {}
        self.xids = XidWatcher(self.backend)  # its thread is the daemon's to run
        # MIG uuids that jobs hold: busy for planning even before their processes start
        self.reserved: Callable[[], Set[str]] = set
        self.cap_probe: Optional[CapProbe] = None  # set by the daemon, which launches jobs
        # which job each of some GPU processes is of (pid -> job id): the daemon's, which
        # knows its jobs' processes; None: the snapshot says nothing of whose they are
        self.owners: Optional[Callable[[List[int]], Dict[int, int]]] = None
        self.failures = Failures(log)  # what fails each snapshot, said once
        self.runtimes: Dict[str, Any] = {}  # the job runtimes the daemon found, for hello
        # MIG changes in progress, kept in the state dir (the daemon's): one cut short by the
        # daemon's death is rolled back by the next (roll_back_cut_changes)
        self.journal: Optional[MigJournal] = None
        self.problem: Optional[str] = None
        try:
            self.backend.open()
        except NvmlCallError as err:
            self.problem = "NVML did not start: %s" % err

    def methods(self) -> Dict[str, Method]:
        """The GPU methods. The daemon serves them with its own (remote_agent.daemon.server,
        ``Connection.methods``), and ``hello`` lists the table it serves."""
        table = {
            "inventory": Method(self.inventory),
            "snapshot": Method(self.snapshot),
            "mig.plan": Method(self.mig_plan, ("gpu", "profile", "start", "destroy_idle")),
            "mig.apply": Method(self.mig_apply, ("gpu", "profile", "start", "layout_version",
                                                 "destroy_idle")),
            "mig.destroy": Method(self.mig_destroy, ("gpu", "instance", "gi_id")),
            "mig.set_mode": Method(self.mig_set_mode, ("gpu", "enabled", "reset",
                                                       "destroy_idle")),
        }
        if self.sim is not None:
            table.update({
                "sim.add_process": Method(self.sim_add_process,
                                          ("gpu", "used_mib", "instance", "pid", "util")),
                "sim.set_process_memory": Method(self.sim_set_process_memory,
                                                 ("pid", "used_mib")),
                "sim.set_process_util": Method(self.sim_set_process_util, ("pid", "util")),
                "sim.remove_process": Method(self.sim_remove_process, ("pid",)),
                "sim.fault": Method(self.sim_fault, ("function", "error", "skip", "count",
                                                      "after")),
                "sim.clear_faults": Method(self.sim_clear_faults),
                "sim.hold": Method(self.sim_hold, ("function", "gate", "after", "skip")),
                "sim.health": Method(self.sim_health,
                                     ("gpu", "reset") + self.sim.SIM_HEALTH_FIELDS),
                "sim.ecc": Method(self.sim_ecc, ("gpu", "corrected", "uncorrected")),
                "sim.xid": Method(self.sim_xid, ("gpu", "xid", "instance")),
                "sim.mode_waits_for_reset": Method(self.sim_mode_waits_for_reset,
                                                   ("gpu", "waits")),
                "sim.reset_gpu": Method(self.sim_reset_gpu, ("gpu",)),
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

    # What every answer says of an instance, in records and in words: its uuid now, and the
    # uuids a rolled-back change made it again in place of (MadeAgain), so a retry, an audit
    # and a plan confirmed name the instances alike (docs/protocol.md).

    def _record(self, inst: Instance) -> Dict[str, Any]:
        return _instance_record(inst, self.made_again.of(inst.uuid))

    def _records(self, layout: Layout) -> List[Dict[str, Any]]:
        return [self._record(i) for i in layout.instances]

    def _named(self, inst: Instance) -> str:
        return self.made_again.marked(inst).label()

    def _plan_record(self, info: GpuInfo, made: planner.Plan) -> Dict[str, Any]:
        """A plan as the protocol says it (``mig.plan``, and ``mig.apply``'s answer)."""
        return {"gpu": info.index, "gpu_uuid": info.uuid, "profile": made.profile.name,
                "start": made.start, "size": made.profile.size,
                "destroy": [self._record(i) for i in made.destroy],
                "layout_version": made.layout_version,
                "description": made.describe()}

    def _plan_change(self, made: planner.Plan) -> Change:
        return Change(made.describe(), destroy=made.destroy,
                      create=made.profile, start=made.start)

    def call_nvml(self, fn: Callable[[], T]) -> T:
        """Run backend work in one NVML session (handles fetched by one step are used by the
        next: a reset in another thread waits), turning NVML failures into protocol errors a
        person can act on."""
        if self.problem is not None:
            raise RpcError(rpc.BACKEND_UNAVAILABLE, self.problem)
        try:
            with self.backend.held():
                return fn()
        except NvmlCallError as err:
            raise nvml_error(err) from err

    def layout(self, index: int, devices: Optional[List[MigDevice]] = None) -> Layout:
        """The GPU's layout with instances that jobs hold marked busy, and each with the uuids
        it was made again in place of (``MadeAgain.marked``), so that its words name them."""
        layout = self.backend.layout(index, devices)
        self.seen.saw(layout)
        held = self.reserved()
        return Layout(layout.geometry, tuple(
            replace(self.made_again.marked(i), busy=i.busy or i.uuid in held)
            for i in layout.instances))

    def gpu_info(self, ref: Union[int, str]) -> GpuInfo:
        """The GPU an index or uuid names (GPU_NOT_FOUND if none)."""
        try:
            index = self.call_nvml(lambda: self.backend.resolve(ref))
        except LookupError as err:
            raise RpcError(rpc.GPU_NOT_FOUND, str(err), {"gpu": ref}) from err
        return self.call_nvml(lambda: self.backend.gpu(index))

    def _gpu(self, p: Params) -> GpuInfo:
        return self.gpu_info(p.gpu())

    def _mig_gpu(self, p: Params) -> Tuple[GpuInfo, Layout]:
        info = _in_mig_mode(self._gpu(p))
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

    def hello_method(self, served: Callable[[], Iterable[str]]) -> Method:
        """``hello``, listing the names ``served()`` gives: the table that serves it."""
        return Method(lambda p: self.hello(p, sorted(served())), ("protocol", "client"))

    def hello(self, p: Params, methods: List[str]) -> Dict[str, Any]:
        wanted = p.integer("protocol", None)
        if wanted is not None and wanted != PROTOCOL_VERSION:
            raise RpcError(rpc.PROTOCOL_MISMATCH, "this agent speaks protocol %d, not %d" % (
                PROTOCOL_VERSION, wanted), {"protocol": PROTOCOL_VERSION})
        p.text("client", None)
        problems = [self.problem] if self.problem else []
        gpus: List[Dict[str, Any]] = []
        driver = None
        links, links_error = None, self.problem
        if not self.problem:
            driver = self.call_nvml(self.backend.driver_version)
            infos = self.call_nvml(self.backend.gpus)
            for info in infos:
                gpus.append(self._capabilities(info))
                self._degraded(info)
            problems += self.health.problems({info.uuid: info.index for info in infos})
            try:
                links = self.backend.links()
            except NvmlCallError as err:  # placement goes on without it: links unknown
                links_error = "the GPUs' links are unknown: %s" % err
        mig_reason = self.mig_privilege_problem()
        limits = host_limits()  # the scheduler books jobs' CPUs and RAM against these
        return {
            "protocol": PROTOCOL_VERSION,
            "agent_version": __version__,
            "backend": self.backend_kind,
            "host": socket.gethostname(),
            "cpus": limits.cpus,
            "memory_mib": limits.memory_mib,
            "limits": limits.sources,
            "driver_version": driver,
            "privileges": {"root": os.geteuid() == 0, "mig_changes": mig_reason is None,
                           "reason": mig_reason},
            "gpus": gpus,
            "links": links,
            "links_error": links_error,
            "problems": problems,
            "methods": methods,
            # those of the methods this table serves (a service without jobs has no job.logs)
            "features": [f for f in FEATURES if f.rsplit(".", 1)[0] in methods],
            **self.runtimes,
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
        if info.mig_capable:
            sizes = self._profile_mib(info.index, info.mig_mode)
            if sizes:
                record["mig_profile_mib"] = sizes
        layout = None
        if info.mig_mode:
            layout = self.layout(info.index, devices)
            record["layout_version"] = layout.version
            record["instances"] = self._records(layout)
        degraded = self._degraded(info, layout)
        if degraded:
            record["degraded"] = degraded
        return record

    def _profile_mib(self, index: int, mig_mode: bool) -> Optional[Dict[str, int]]:
        """Each MIG profile's memory as NVML states it (a real GPU answers with MIG off too):
        fractui's model table only estimates it for most models, and a slice booked by the
        estimate could hold less than its job asked for. None (said once) if NVML will not say;
        asked again after PROFILES_RETRY_S, or at once when the GPU's MIG mode changed."""
        failed = self._profiles_unread.get(index)
        if failed is not None and failed[0] == mig_mode and \
                time.monotonic() - failed[1] < PROFILES_RETRY_S:
            return None
        try:
            geo = self.backend.geometry(index)
        except (NvmlCallError, LookupError) as err:
            self.failures.failed("GPU %d profiles" % index, "GPU %d: its MIG profiles cannot be "
                                 "read (%s); fractui books its slices by the model's table" % (
                                     index, err))
            self._profiles_unread[index] = (mig_mode, time.monotonic())
            return None
        self._profiles_unread.pop(index, None)
        self.failures.worked("GPU %d profiles" % index,
                             "GPU %d: its MIG profiles can be read again" % index)
        return {p.name: p.memory_mib for p in geo.profiles}

    def _degraded(self, info: GpuInfo, layout: Optional[Layout] = None) -> Optional[str]:
        """Why this GPU is degraded (a failed change left it neither as it was nor as asked),
        judged on what it reads as now."""
        mode = (info.mig_mode, info.mig_pending)
        if not self.health.marked(info.uuid):
            return None
        if info.mig_mode and layout is None:
            try:
                layout = self.backend.layout(info.index)
            except NvmlCallError:  # unreadable now: it stays degraded
                return self.health.check(info.uuid, mode, None)
        return self.health.check(info.uuid, mode,
                                 placements(layout.instances) if layout is not None else None)

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
                    record["utilization_note"] = MIG_UTIL_NOTE
                record["health"] = self._health_record(info)
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
        snap = self.call_nvml(take)
        if self.owners is not None:  # read after NVML: /proc and the job table, not the GPUs
            self._tag_owners([q for g in snap["gpus"] for q in g["processes"]])
        return snap

    def _tag_owners(self, listed: List[Dict[str, Any]]) -> None:
        """Says which job each listed process is of (``job``; null: no job's), and which of the
        rest is the jobs' MPS server (``service``). Where that cannot be read (the job table or
        /proc failing) the key is left out, not null: null would tell the scheduler that the
        jobs' own memory is taken by others."""
        try:
            found = self.owners([q["pid"] for q in listed]) if listed else {}  # type: ignore
        except Exception as err:  # the snapshot itself stands; whose the processes are waits
            self.failures.failed("owners", "the snapshot cannot say whose its GPU processes "
                                 "are: %s: %s" % (type(err).__name__, err))
            return
        self.failures.worked("owners", "the snapshot says whose its GPU processes are again")
        for q in listed:
            q["job"] = "j%d" % found[q["pid"]] if q["pid"] in found else None
            if q["job"] is None and mps_server(q["pid"], q["used_mib"]):
                q["service"] = "mps"  # the jobs' MPS layer: not counted as others' memory

    def _health_record(self, info: GpuInfo) -> Dict[str, Any]:
        """A GPU's health for the snapshot; what is not measured is null, and why is said."""
        h: Health = self.backend.health(info.index)
        record: Dict[str, Any] = {
            "temperature_c": h.temperature_c, "slowdown_c": h.slowdown_c,
            "power_mw": h.power_mw, "power_limit_mw": h.power_limit_mw,
            "ecc_volatile": None if h.ecc_uncorrected is None else {
                "corrected": h.ecc_corrected, "uncorrected": h.ecc_uncorrected},
            "throttle": None if h.throttle is None else list(h.throttle),
            "xid": self.xids.recent(info.uuid), "unmeasured": list(h.unmeasured),
            "errors": list(h.errors)}
        note = self.xids.note(info.index)
        if note:
            record["xid_note"] = note
        return record

    def _plan(self, layout: Layout, profile: str, start: Optional[int], destroy_idle: bool,
              pinned: bool = False) -> planner.Plan:
        """The planner's plan on ``layout``, or its refusal as the protocol's error. ``pinned``:
        a plan made before on this very layout (``_check_pinned``) is asked again, and an
        instance in its way in use (a job or process on what it destroys: no plan destroys
        one in use) is said as what it is, INSTANCE_BUSY on the layout the plan names, not
        the GPU short of room; nor stale: the layout did not change, and whether the instance
        was in use when its version was read (a version an admin gave by hand, with a start
        of their own) no version says."""
        try:
            return planner.plan(layout, profile, start=start, destroy_idle=destroy_idle)
        except planner.PlanError as err:
            data: Dict[str, Any] = {"reason": err.kind, "layout_version": layout.version}
            if err.busy:
                data["busy"] = [self._record(i) for i in err.busy]
            if err.destroyable:
                data["destroyable"] = [self._record(i) for i in err.destroyable]
            message = str(err)
            if err.kind == "needs_destroy":
                message += DESTROY_IDLE_HINT
            if pinned and err.busy:  # with the layout as it is, as a stale one's data
                data["instances"] = self._records(layout)
                busy = " and ".join(map(planner.busy_label, err.busy))
                message = "%s, in the way of the plan, is in use: a plan destroys only idle " \
                          "instances, and one in use is never destroyed; the layout is the " \
                          "one planned on (version %s), and whether an instance is in use " \
                          "is no part of a version" % (busy, layout.version)
            raise RpcError(_PLAN_ERROR_CODES[err.kind], message, data) from err

    def _change(self, info: GpuInfo, before: Layout, change: Change,
                kept: bool = True) -> Applied:
        """Carry out a MIG change (the caller holds the MIG lock): it stands, or the GPU is as
        it was, or the GPU is marked degraded — and the answer says which. ``kept``: the change
        is in the journal while it is made (False: the caller keeps it there itself)."""
        index = info.index
        with self._journaled(index, change.what, lambda journal, uuid: journal.begin(
                index, uuid, before, change)) if kept else nullcontext():
            try:
                applied = apply_change(self.backend, index, before, change)
            except ChangeFailed as err:
                raise self._failed(info, err, MIG_ON, self._records) from err
        self.health.clear(info.uuid)
        return applied

    @contextmanager
    def _journaled(self, index: int, what: str,
                   begin: Callable[[MigJournal, str], str]) -> Iterator[None]:
        """The change kept in the journal (durably, before its first step: ``begin`` writes
        it, given the GPU's uuid) while the body makes it; HOST_FAILED, nothing changed, where
        it cannot be written."""
        journal = self.journal
        if journal is None:
            yield
            return
        uuid = self.gpu_info(index).uuid
        try:
            path = begin(journal, uuid)
        except OSError as err:
            raise RpcError(rpc.HOST_FAILED, "GPU %d: %s not made: it cannot be recorded in the "
                           "state dir first (%s: %s), and a change not recorded could not be "
                           "rolled back were the agent to stop midway; nothing was changed" % (
                               index, what, type(err).__name__, err),
                           {"gpu": index}) from err
        try:
            yield
        finally:
            journal.drop(path)

    def roll_back_cut_changes(self) -> None:
        """At the daemon's start, before any client is served: each MIG change a daemon before
        it began and never settled (it was killed between NVML steps) is rolled back, as a
        failed step's change is — the instances it made destroyed, those it destroyed made
        again, nothing else touched; a mode left pending asked back — unless it was carried out
        in full, or a job already holds what it made (then it stands). One that cannot be
        rolled back leaves its GPU degraded, saying so. Each is said in the daemon's log."""
        if self.journal is None:
            return
        for entry in self.journal.left():
            try:
                self._roll_back(entry)
            finally:
                self.journal.drop(entry.path)

    def _roll_back(self, entry: Begun) -> None:
        what = "MIG change on GPU %d (%s)" % (entry.index, entry.what)
        if entry.boot is not None and entry.boot != boot_id():
            log.warning("%s was cut short before the host rebooted; MIG instances do not "
                        "outlive a reboot, and a mode left pending took effect with it: "
                        "nothing to roll back", what)
            return
        if self.problem is not None:
            log.error("%s was cut short by the agent's stop and cannot be rolled back: %s",
                      what, self.problem)
            return
        index = entry.index
        read: Callable[[], Any]  # what the GPU holds now, and what to do with it
        undo: Callable[[Any], None]
        if isinstance(entry, ModeEntry):
            read, judged = partial(self.backend.mig_mode, index), entry.before
            undo = partial(self._undo_mode, entry, what)
        else:
            read, judged = partial(self.layout, index), MIG_ON
            undo = partial(self._undo_layout, entry, what)
        with self.mig_lock(index):
            try:
                info = self.call_nvml(lambda: self.backend.gpu(index))
                if info.uuid != entry.gpu_uuid:
                    log.warning("%s was cut short, but GPU %d is now %s, not %s: nothing "
                                "rolled back", what, index, info.uuid, entry.gpu_uuid)
                    return
                now = self.call_nvml(read)
            except (NvmlCallError, LookupError) as err:
                reason = "%s was cut short by the agent's stop, and the GPU cannot be read " \
                         "to roll it back (%s)" % (what, err)
                log.error("%s", reason)
                self.health.mark(entry.gpu_uuid, Degraded(reason, judged, None))
                return
            undo(now)

    def _undo_mode(self, entry: ModeEntry, what: str, now: Tuple[bool, bool]) -> None:
        """A mode change cut short: it stands once it took effect (undoing it would take
        another reset); a mode it left pending is asked back, so no later reset makes it; the
        idle instances MIG off destroyed first are made again while the mode is as it was."""
        if now[0] != entry.before[0]:
            log.warning("%s was carried out before the agent stopped (MIG mode is %s now); "
                        "it stands", what, "on" if now[0] else "off")
            return
        if now != entry.before:
            err = restore_mode(self.backend, entry.index, entry.before, entry.what, None,
                               "the agent stopped midway through it")
            if not err.restored:
                log.error("%s", err)
                self.health.mark(entry.gpu_uuid, Degraded(str(err), entry.before, None))
                return
            log.warning("%s was cut short by the agent's stop: %s", what, err)
        elif not entry.destroyed:
            log.warning("%s was cut short before it changed anything", what)
        if entry.destroyed:
            self._remake_idle(entry, what)

    def _remake_idle(self, entry: ModeEntry, what: str) -> None:
        """MIG off cut short with the mode as it was: the idle instances it destroyed first
        made again at their places (those still there left be)."""
        index = entry.index
        try:
            idle, destroying = entry.destroying(self.call_nvml(lambda: self.layout(index)
                                                               ).geometry)
        except NvmlCallError as err:
            reason = "%s was cut short by the agent's stop, and the GPU cannot be read to " \
                     "make its idle instances again (%s)" % (what, err)
            log.error("%s", reason)
            self.health.mark(entry.gpu_uuid, Degraded(reason, entry.before, None))
            return
        except (ValueError, KeyError, TypeError) as err:
            log.error("%s was cut short and its idle instances cannot be made again: its "
                      "record is not one this agent can read (%s: %s)", what,
                      type(err).__name__, err)
            return
        err = restore(self.backend, index, idle, destroying, None,
                      "the agent stopped midway through it")
        self._saw_rollback(err)
        if err.restored:
            log.warning("%s was cut short by the agent's stop; its idle instances are as "
                        "they were: %s", what, err)
            return
        log.error("%s", err)
        self.health.mark(entry.gpu_uuid, Degraded(str(err), entry.before,
                                                  placements(idle.instances)))

    def _undo_layout(self, entry: Entry, what: str, layout: Layout) -> None:
        """A change of instances cut short: rolled back, unless it was made in full or a job
        holds what it made."""
        index = entry.index
        try:
            before, change = entry.layout_and_change(layout.geometry)
        except (ValueError, KeyError, TypeError) as err:
            log.error("%s was cut short and cannot be rolled back: its record is not "
                      "one this agent can read (%s: %s)", what, type(err).__name__, err)
            return
        now = placements(layout.instances)
        if now == change.expected(before):
            log.warning("%s was carried out in full before the agent stopped; it stands",
                        what)
            return
        # what a rollback already made again (this daemon's before it was killed, in process
        # or at its start, the links perhaps not kept yet) stands in place of what it destroyed
        again = ", ".join(i.label() for i in self.made_again.saw(before, layout))
        if now == placements(before.instances):
            if again:
                log.warning("%s was made and undone before the agent stopped: the GPU is as "
                            "it was, with %s", what, again)
            else:
                log.warning("%s was cut short before it changed anything", what)
            return
        kept = {i.gi_id for i in before.instances} - {i.gi_id for i in change.destroy}
        in_use = [i for i in layout.instances if i.gi_id not in kept and i.busy]
        if in_use:
            log.warning("%s was cut short, but %s is in use: nothing rolled back%s", what,
                        ", ".join(map(self._named, in_use)),
                        " (made again already: %s)" % again if again else "")
            return
        err = restore(self.backend, index, before, change, None,
                      "the agent stopped midway through it")
        self._saw_rollback(err)
        if err.restored:
            log.warning("%s was cut short by the agent's stop: %s", what, err)
            return
        log.error("%s", err)
        self.health.mark(entry.gpu_uuid, Degraded(str(err), MIG_ON,
                                                  placements(before.instances)))

    def _saw_rollback(self, err: ChangeFailed) -> None:
        """The instances a rollback of instances made again (``MadeAgain``), by the layouts
        before the change and after the rollback; a mode's rollback makes none."""
        if isinstance(err.before, Layout) and isinstance(err.now, Layout):
            self.made_again.saw(err.before, err.now)

    def _failed(self, info: GpuInfo, err: ChangeFailed, mode: Tuple[bool, bool],
                show: Callable[[Any], Any], code: Optional[int] = None,
                message: Optional[str] = None) -> RpcError:
        """The error answer for a failed change; a GPU left changed is marked degraded."""
        self._saw_rollback(err)
        cause = err.cause
        data: Dict[str, Any] = {
            "function": cause.function if cause else None,
            "nvml_error": cause.code_name if cause else None,
            "rolled_back": err.restored, "rollback_errors": [str(e) for e in err.errors],
            "before": show(err.before), "now": None if err.now is None else show(err.now)}
        if not err.restored:
            data["degraded"] = str(err)
            self.health.mark(info.uuid, Degraded(str(err), mode, placements(
                err.before.instances) if isinstance(err.before, Layout) else None))
        if code is None:
            code = nvml_error(cause).code if cause else rpc.NVML_FAILED
        return RpcError(code, message or str(err), data)

    def create_for_job(self, index: int, profile: str, start: int, destroy_idle: bool,
                       taken: Callable[[str], bool], pinned: Optional[str] = None) -> str:
        """A MIG instance of ``profile`` at ``start`` for a job being launched: an idle one that
        is already there and held by no job (so a retried launch never makes a second), or a
        new one — refused if ``pinned`` (the layout version a preview was made against) is no
        longer the GPU's. Returns its MIG uuid. All or nothing, as ``mig.apply``: a new instance
        whose uuid cannot be read is undone, since the job could not use it. A passing NVML
        fault (``PASSING_NVML``) that left the GPU as it was is tried again, up to
        ``LAUNCH_TRIES`` in all, before the launch is refused: a refusal sends the job to
        another host and counts toward its attempts."""
        tries = 1
        while True:
            try:
                return self._create_for_job(index, profile, start, destroy_idle, taken, pinned)
            except RpcError as err:
                data = err.data or {}
                if data.get("nvml_error") not in PASSING_NVML or data.get("rolled_back") is False:
                    raise
                if tries == LAUNCH_TRIES:
                    raise RpcError(err.code, "%s (tried %d times, each undone)" % (
                        err.message, tries), err.data) from err
                log.warning("GPU %d: a %s instance for a job not made at try %d of %d (%s); "
                            "the GPU is as it was, trying again", index, profile, tries,
                            LAUNCH_TRIES, err.message)
            tries += 1
            time.sleep(LAUNCH_RETRY_S)

    def _create_for_job(self, index: int, profile: str, start: int, destroy_idle: bool,
                        taken: Callable[[str], bool], pinned: Optional[str]) -> str:
        """One try of ``create_for_job``."""
        self._require_mig_privilege()
        with self.mig_lock(index):
            # under the lock: a mode change may have come since the launch's own check (NVML
            # reads a GPU's MIG profiles with MIG off, so the layout alone would read empty)
            info = _in_mig_mode(self.gpu_info(index))
            layout = self.call_nvml(lambda: self.layout(index))
            for inst in layout.instances:
                if (inst.profile, inst.start) == (profile, start) and inst.uuid \
                        and not inst.busy and not taken(inst.uuid):
                    return inst.uuid
            self._check_pinned(index, layout, pinned)
            change = self._plan_change(self._plan(layout, profile, start, destroy_idle,
                                                  pinned is not None))
            with self._journaled(index, change.what, lambda journal, uuid: journal.begin(
                    index, uuid, layout, change)):  # until it is made and usable
                applied = self._change(info, layout, change, kept=False)
                created = change.created(applied.layout)
                if created is None or created.uuid is None:
                    err = restore(self.backend, index, layout, change, applied.unread, (
                        "the new instance's uuid cannot be read (%s), and the job needs it"
                        % applied.unread))
                    raise self._failed(info, err, MIG_ON, self._records) from err
            return created.uuid

    def _check_pinned(self, index: int, layout: Layout, pinned: Optional[str]) -> None:
        """STALE_LAYOUT, saying what changed, if ``pinned`` (the version a plan was made
        against) is not the layout's: another instance made or destroyed, one moved. Ids the
        GPU gave anew (an idle instance a rolled-back change made again) are no change."""
        if pinned is None or pinned == layout.version:
            return
        then = self.seen.get(pinned)
        what = changed(then, layout.instances) if then is not None else \
            "not a layout this agent has read lately; it now holds %s" % describe_layout(layout)
        raise RpcError(rpc.STALE_LAYOUT, (
            "the layout of GPU %d changed since the plan was made (version %s, now %s): %s; "
            "plan again" % (index, pinned, layout.version, what)),
            {"layout_version": layout.version,
             "instances": self._records(layout)})

    def mig_plan(self, p: Params) -> Dict[str, Any]:
        info, layout = self._mig_gpu(p)
        made = self._plan(layout, p.text("profile"), p.integer("start", None, minimum=0),
                          p.flag("destroy_idle", False))
        return self._plan_record(info, made)

    def mig_apply(self, p: Params) -> Dict[str, Any]:
        self._require_mig_privilege()
        start = p.integer("start", None, minimum=0)
        pinned = p.text("layout_version", None)
        with self._mig_lock_of(p):
            info, layout = self._mig_gpu(p)
            self._check_pinned(info.index, layout, pinned)
            made = self._plan(layout, p.text("profile"), start, p.flag("destroy_idle", False),
                              pinned is not None)
            change = self._plan_change(made)
            applied = self._change(info, layout, change)
        created = change.created(applied.layout)
        record = self._plan_record(info, made)
        record.update({"instance": self._record(created) if created else
                       _unread_instance(made), "planned_layout_version": made.layout_version})
        record.update(_after_record(applied))
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
            if target is None and uuid is not None:  # a retry of a destroy rolled back
                target = self.made_again.standing_for(uuid, layout.instances)
            if target is None:
                raise RpcError(rpc.INSTANCE_NOT_FOUND, "no MIG instance %s on GPU %d%s" % (
                    uuid if uuid is not None else "with gi_id %d" % gi_id, info.index,
                    "" if uuid is None else ", nor one a rolled-back change made again in "
                    "its place"))
            if target.busy:
                raise RpcError(rpc.INSTANCE_BUSY, "%s is busy (pids %s): instances with running "
                               "processes are never destroyed" % (
                                   self._named(target), ", ".join(map(str, target.pids)) or
                               "unknown"), {"instance": self._record(target)})
            applied = self._change(info, layout, Change(
                "destroying idle %s" % self._named(target), destroy=(target,)))
        return {"gpu": info.index, "destroyed": self._record(target), **_after_record(applied)}

    def mig_set_mode(self, p: Params) -> Dict[str, Any]:
        """MIG mode on or off; with ``reset`` the GPU is reset when the new mode waits for one,
        only if nothing runs there. Asking the mode a GPU has is a success that changes
        nothing, so a caller that retries asks again."""
        self._require_mig_privilege()
        enabled = p.flag("enabled")
        reset = p.flag("reset", False)
        destroy_idle = p.flag("destroy_idle", False)
        with self._mig_lock_of(p):
            info = self._gpu(p)
            if not info.mig_capable:
                raise RpcError(rpc.NOT_MIG, "GPU %d (%s) does not support MIG" % (
                    info.index, info.name), {"gpu": info.index})
            idle = self._idle_layout(info) if destroy_idle and info.mig_mode and \
                not enabled else None
            before = (info.mig_mode, info.mig_pending)
            what = "turning MIG mode %s" % ("on" if enabled else "off")
            # kept in the journal, with the idle instances it destroys first, unless the GPU
            # has the mode asked, nothing pending
            with self._journaled(info.index, what, lambda journal, uuid: journal.begin_mode(
                    info.index, uuid, what, before, enabled, idle.instances if idle else ())
                                 ) if before != (enabled, enabled) else nullcontext():
                if idle is not None and idle.instances:
                    self._change(info, idle, Change("destroying the idle instances of GPU %d to "
                                                    "turn MIG mode off" % info.index,
                                                    destroy=idle.instances), kept=False)
                return self._set_mode(info, enabled, reset, before, idle)

    def _set_mode(self, info: GpuInfo, enabled: bool, reset: bool, before: Tuple[bool, bool],
                  idle: Optional[Layout]) -> Dict[str, Any]:
        """``mig_set_mode`` once the idle instances of ``idle`` (MIG off's layout before) are
        destroyed (under the GPU's MIG lock, the change in the journal): a mode change that
        fails and is undone has them made again, so the GPU is as it was."""
        reset_done = False
        show: Callable[[Any], Any] = _mode_record
        try:
            mode = set_mode(self.backend, info.index, enabled, before)
            if reset and mode is not None and mode == (not enabled, enabled):
                mode = reset_to_mode(
                    self.backend, self.resetter, info.index, info.uuid, enabled, before,
                    lambda: sorted({proc.pid for proc in (
                        self.backend.processes(info.index))}))
                reset_done = True
        except ChangeFailed as err:
            if idle is not None and idle.instances:
                if err.restored:
                    show = self._records
                err = remade(self.backend, info.index, idle, err)
            if err.restored and err.in_use:
                raise self._failed(info, err, before, show, rpc.GPU_IN_USE) from err
            if err.restored and err.cause is not None and \
                    err.cause.code_name == "NVML_ERROR_IN_USE":
                raise self._failed(info, err, before, show, rpc.GPU_IN_USE, (
                    "GPU %d has processes or MIG instances; MIG mode changes only on an idle "
                    "GPU (stop its work and destroy its instances first)" % info.index)
                                   ) from err
            raise self._failed(info, err, before, show) from err
        self.health.clear(info.uuid)
        if mode is None:  # asked and accepted, but the GPU could not be read back
            return {"gpu": info.index, "mig_mode": None, "mig_pending": enabled,
                    "reset_required": None, "reset": reset_done, "changed": None,
                    "warning": "the change was made, but reading the GPU's MIG mode back "
                    "failed; see inventory"}
        current, pending = mode
        return {"gpu": info.index, "mig_mode": current, "mig_pending": pending,
                "reset_required": current != pending, "reset": reset_done,
                "changed": mode != before}

    def _idle_layout(self, info: GpuInfo) -> Layout:
        """Before MIG goes off: the GPU's layout, whose instances are all destroyed first, if
        none is busy (GPU_IN_USE naming them otherwise, nothing destroyed)."""
        index = info.index
        layout = self.call_nvml(lambda: self.layout(index))
        busy = [i for i in layout.instances if i.busy]
        if busy:
            raise RpcError(rpc.GPU_IN_USE, "GPU %d has MIG instances in use (%s): MIG mode "
                           "changes only on an idle GPU" % (index, ", ".join(
                               self._named(i) for i in busy)),
                           {"gpu": index, "instances": [self._record(i) for i in busy]})
        return layout

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

    def sim_set_process_util(self, p: Params) -> Dict[str, Any]:
        pid, util = p.integer("pid"), p.integer("util", minimum=0, maximum=100)
        self._sim(lambda: self.sim.sim_set_process_util(pid, util))
        return {"pid": pid, "util": util}

    def sim_remove_process(self, p: Params) -> Dict[str, Any]:
        return {"removed": self.sim.sim_remove_process(p.integer("pid"))}

    def sim_fault(self, p: Params) -> Dict[str, Any]:
        function = p.text("function")
        error = p.get("error", (str, int), "an NVML error name or code")
        if isinstance(error, str):
            error = p.text("error", max_len=64)
        code = getattr(self.sim, error, None) if isinstance(error, str) and error.startswith(
            "NVML_ERROR_") else error
        if not isinstance(code, int):
            raise RpcError(rpc.INVALID_PARAMS, "unknown NVML error %r" % (error,))
        skip, count = p.integer("skip", 0, minimum=0), p.integer("count", 1, minimum=1)
        after = p.flag("after", False)
        self._sim(lambda: self.sim.sim_inject_fault(function, code, skip=skip, count=count,
                                                    after=after))
        return {"function": function, "code": code, "skip": skip, "count": count,
                "after": after}

    def sim_clear_faults(self, p: Params) -> Dict[str, Any]:
        self.sim.sim_clear_faults()
        return {"cleared": True}

    def sim_hold(self, p: Params) -> Dict[str, Any]:
        function, gate = p.text("function"), p.text("gate")
        after, skip = p.flag("after", False), p.integer("skip", 0, minimum=0)
        self._sim(lambda: self.sim.sim_hold(function, gate, after, skip))
        return {"function": function, "gate": gate, "after": after, "skip": skip}

    def sim_health(self, p: Params) -> Dict[str, Any]:
        index = self._gpu(p).index
        fields: Dict[str, Optional[int]] = {}
        if p.flag("reset", False):
            fields = dict.fromkeys(self.sim.SIM_HEALTH_FIELDS)
        for name in self.sim.SIM_HEALTH_FIELDS:
            if p.given(name) and name != "throttle":
                fields[name] = p.integer(name, minimum=0)
        if p.given("throttle"):
            names = p.get("throttle", (list,), "a list of throttle reason names")
            bits = {n: getattr(self.sim, const) for n, const in THROTTLE_REASONS}
            unknown = [n for n in names if not isinstance(n, str) or n not in bits]
            if unknown:
                raise RpcError(rpc.INVALID_PARAMS, "sim.health: unknown throttle %s %s; "
                               "known: %s" % (noun_for(len(unknown), "reason"),
                                              ", ".join(map(repr, unknown)), ", ".join(bits)))
            fields["throttle"] = sum(bits[n] for n in set(names))
        self._sim(lambda: self.sim.sim_set_health(index, **fields))
        return {"gpu": index, "set": sorted(fields)}

    def sim_ecc(self, p: Params) -> Dict[str, Any]:
        index = self._gpu(p).index
        corrected = p.integer("corrected", 0, minimum=0)
        uncorrected = p.integer("uncorrected", 0, minimum=0)
        self._sim(lambda: self.sim.sim_add_ecc_errors(index, corrected, uncorrected))
        return {"gpu": index, "corrected": corrected, "uncorrected": uncorrected}

    def sim_xid(self, p: Params) -> Dict[str, Any]:
        index = self._gpu(p).index
        xid = p.integer("xid", minimum=1)
        instance = p.text("instance", None)
        seq = self._sim(lambda: self.sim.sim_raise_xid(index, xid, instance))
        return {"gpu": index, "xid": xid, "seq": seq}


    def sim_mode_waits_for_reset(self, p: Params) -> Dict[str, Any]:
        info, waits = self._gpu(p), p.flag("waits", True)
        self._sim(lambda: self.sim.sim_mode_waits_for_reset(info.index, waits))
        return {"gpu": info.index, "waits": waits}

    def sim_reset_gpu(self, p: Params) -> Dict[str, Any]:
        """The GPU reset as nvidia-smi makes it, the agent's NVML session shut down meanwhile
        as for its own resets (the driver refuses a reset while it is attached)."""
        info = self._gpu(p)
        with self.mig_lock(info.index):
            try:
                with self.backend.detached():
                    self._sim(lambda: self.sim.sim_reset_gpu(info.index))
            except NvmlCallError as err:  # NVML would not shut down: nothing was reset
                raise nvml_error(err) from err
            self.health.clear(info.uuid)
        return {"gpu": info.index}


def nvml_error(err: NvmlCallError) -> RpcError:
    """An NVML failure as the protocol error a person can act on."""
    code = rpc.NOT_PERMITTED if err.code_name == "NVML_ERROR_NO_PERMISSION" else rpc.NVML_FAILED
    return RpcError(code, str(err), {"function": err.function, "nvml_error": err.code_name})


def _unread_instance(made: planner.Plan) -> Dict[str, Any]:
    """The record of the instance a plan made when the GPU could not be read back: what the
    plan says, without the ids only the GPU can tell."""
    return {"uuid": None, "gi_id": None, "profile": made.profile.name, "start": made.start,
            "size": made.profile.size, "memory_mib": made.profile.memory_mib, "busy": False,
            "pids": []}


def _mode_record(mode: Tuple[bool, bool]) -> Dict[str, bool]:
    return {"mig_mode": mode[0], "mig_pending": mode[1]}


def _after_record(applied: Applied) -> Dict[str, Any]:
    """The layout a change left, for its answer; a warning when the GPU could not be read back
    (the change stands all the same)."""
    if applied.layout is not None:
        return {"layout_version": applied.layout.version}
    return {"layout_version": None, "warning": "the change was made, but reading the GPU back "
            "failed (%s); see inventory" % applied.unread}


def _in_mig_mode(info: GpuInfo) -> GpuInfo:
    """The GPU, if its MIG mode is on; else NOT_MIG, saying why."""
    if not info.mig_mode:
        why = "does not support MIG" if not info.mig_capable else "has MIG mode off"
        raise RpcError(rpc.NOT_MIG, "GPU %d (%s) %s" % (info.index, info.name, why),
                       {"gpu": info.index})
    return info


def _instance_record(inst: Instance, remade_of: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """An instance as the protocol says it; ``remade_of``: the uuids of the instances a
    rolled-back change made it again in place of (``MadeAgain``), where there are any."""
    record = {"uuid": inst.uuid, "gi_id": inst.gi_id, "profile": inst.profile,
              "start": inst.start, "size": inst.size, "memory_mib": inst.memory_mib,
              "busy": inst.busy, "pids": list(inst.pids)}
    if remade_of:
        record["remade_of"] = list(remade_of)
    return record

