"""Launching, watching and stopping jobs on one host.

Every launch is recorded (and fsync'd) before anything runs, under an idempotency key: the same key
again returns the same job and never a second process or a second MIG instance. Each job runs
under its own shim, so the daemon may die, restart or be replaced by a newer version and re-adopt
every job from the table and the shims' files. The daemon refuses anything that would double-book
a GPU: an instance already in use, or a memory share above what is still free.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import select
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from remote_agent.daemon.paths import AgentPaths, agent_command, agent_env
from remote_agent.gpu.backend import GpuInfo, NvmlCallError
from remote_agent.jobs import caps
from remote_agent.jobs.shim import write_json
from remote_agent.jobs.store import Job, JobStore
from remote_agent.rpc import jsonrpc as rpc
from remote_agent.rpc.jsonrpc import Params, RpcError

log = logging.getLogger("remote_agent.jobs")

START_TIMEOUT_S = 15.0
ARG_MAX_LEN = 128 * 1024  # an argument or environment value (Linux's MAX_ARG_STRLEN)
# Variables that would undo a job's confinement if inherited from the daemon's environment.
_CONFINEMENT_VARS = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "LD_PRELOAD",
                     "CUDA_DEVICE_MEMORY_LIMIT", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT",
                     "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "PYTORCH_CUDA_ALLOC_CONF",
                     "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_PREALLOCATE")


@dataclass
class SupervisorSettings:
    caps: caps.CapSettings = field(default_factory=caps.CapSettings)
    log_max_bytes: int = 64 << 20
    retention_s: float = 7 * 24 * 3600.0
    watchdog_grace_s: float = 5.0


@dataclass
class LaunchRequest:
    """A checked ``job.launch``; ``target`` is how it gets its slice."""

    key: str
    argv: List[str]
    env: Dict[str, str]
    cwd: Optional[str]
    name: str
    gpus: List[Any]
    instance: Optional[str]
    mig: Optional[Dict[str, Any]]
    memory_mib: Optional[int]
    torch_fraction: bool

    def fingerprint(self) -> str:
        what = [self.argv, self.env, self.cwd, self.gpus, self.instance, self.mig,
                self.memory_mib, self.torch_fraction]
        return hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()


def parse_launch(p: Params) -> LaunchRequest:
    key = p.text("key", max_len=rpc.MAX_ID)
    if not key.strip():
        raise RpcError(rpc.INVALID_PARAMS, "job.launch param 'key' must not be empty")
    argv = p.texts("argv", "a list of strings (the program and its arguments, run as is, never "
                   "by a shell)", max_len=ARG_MAX_LEN)
    if not argv:
        raise RpcError(rpc.INVALID_PARAMS, "job.launch param 'argv' must be a non-empty list of "
                       "strings; it is run as is, never by a shell")
    env = p.text_map("env", "an object of string values", {}, max_len=ARG_MAX_LEN)
    if any(not k or "=" in k for k in env):
        raise RpcError(rpc.INVALID_PARAMS, "job.launch param 'env': a variable's name is never "
                       "empty and holds no '='")
    cwd = p.text("cwd", None)
    if cwd is not None and not os.path.isdir(cwd):
        raise RpcError(rpc.INVALID_PARAMS, "job.launch cwd %r is not a directory on this host"
                       % cwd)
    if p.given("gpu") and p.given("gpus"):
        raise RpcError(rpc.INVALID_PARAMS, "job.launch takes 'gpu' or 'gpus', not both")
    gpus = p.gpus("gpus") if p.given("gpus") else [p.gpu("gpu")]
    instance = p.text("instance", None)
    asked = p.nested("mig", ("profile", "start", "destroy_idle", "layout_version"),
                     "an object {profile, start[, destroy_idle, layout_version]}", None)
    if asked is not None:  # checked here, kept as given (it is part of the key's fingerprint)
        asked.text("profile")
        asked.integer("start", minimum=0)
        asked.flag("destroy_idle", None)
        asked.text("layout_version", None)
    mig = asked.raw if asked is not None else None
    memory_mib = p.integer("memory_mib", None, minimum=1)
    chosen = [n for n, v in (("instance", instance), ("mig", mig), ("memory_mib", memory_mib))
              if v is not None]
    if len(chosen) != 1:
        raise RpcError(rpc.INVALID_PARAMS, "job.launch needs exactly one of 'instance' (an idle "
                       "MIG uuid), 'mig' ({profile, start}) or 'memory_mib' (a share of a GPU "
                       "without MIG); got %s" % (", ".join(chosen) or "none"))
    if (instance is not None or mig is not None) and len(gpus) != 1:
        raise RpcError(rpc.INVALID_PARAMS, "a MIG job runs on one instance of one GPU")
    name = p.text("name", None) or os.path.basename(argv[0])
    return LaunchRequest(key=key, argv=argv, env=env, cwd=cwd, name=name, gpus=gpus,
                         instance=instance, mig=mig, memory_mib=memory_mib,
                         torch_fraction=p.flag("torch_fraction", False))


class Supervisor:
    """The job side of the daemon. ``gpus`` is the agent (GPU access and the MIG lock)."""

    def __init__(self, paths: AgentPaths, gpus: Any, settings: SupervisorSettings,
                 notify: Callable[[Job], None], extra_job_env: Dict[str, str]):
        self.paths = paths
        self.gpus = gpus
        self.settings = settings
        self.notify = notify
        self.extra_job_env = extra_job_env
        os.makedirs(paths.jobs_dir, mode=0o700, exist_ok=True)
        self.store = JobStore(paths.jobs_db)
        self.cap_probe = caps.probe(gpus.backend.nv, settings.caps, os.geteuid() == 0)
        self._lock = threading.RLock()
        self._shims: Dict[int, subprocess.Popen] = {}  # shims this daemon started, to reap
        self._escalate: Dict[int, float] = {}  # job id -> when to SIGKILL
        self._last_prune = 0.0

    # -- launching --

    def launch(self, req: LaunchRequest) -> Job:
        with self._lock:
            job = self.store.by_key(req.key)
            if job is not None:
                if job.fingerprint != req.fingerprint():
                    raise RpcError(rpc.INVALID_PARAMS, "key %r already names job j%d, launched "
                                   "with other params" % (req.key, job.id), {"job": job.record()})
                if job.state != "starting":
                    return job
                return self._start(job, req)  # a launch cut short (agent crash): finish it
            infos = [self._gpu_info(g) for g in req.gpus]
            self._check_booking(req, infos)
            job = self.store.insert(Job(
                id=0, key=req.key, fingerprint=req.fingerprint(), name=req.name, argv=req.argv,
                env=req.env, cwd=req.cwd, gpus=[i.index for i in infos],
                gpu_uuids=[i.uuid for i in infos], instance=req.instance, mig=req.mig,
                memory_mib=req.memory_mib, created_at=time.time()))
            try:
                return self._start(job, req)
            except RpcError:
                if job.state == "starting" and not os.path.exists(
                        os.path.join(self.job_dir(job), "shim.claim")):
                    # nothing ran: forget it, and the key is free to try again
                    shutil.rmtree(self.job_dir(job), ignore_errors=True)
                    self.store.delete(job)
                raise

    def job_dir(self, job: Job) -> str:
        return os.path.join(self.paths.jobs_dir, "j%d" % job.id)

    def _gpu_info(self, ref: Any) -> GpuInfo:
        try:
            index = self.gpus.call_nvml(lambda: self.gpus.backend.resolve(ref))
        except LookupError as err:
            raise RpcError(rpc.GPU_NOT_FOUND, str(err), {"gpu": ref}) from err
        return self.gpus.call_nvml(lambda: self.gpus.backend.gpu(index))

    def holders(self, instance_uuid: str) -> List[Job]:
        return [j for j in self.store.active() if j.instance == instance_uuid]

    def _check_booking(self, req: LaunchRequest, infos: List[GpuInfo]) -> None:
        if req.memory_mib is not None:
            for info in infos:
                if info.mig_mode:
                    raise RpcError(rpc.NOT_SUPPORTED, "GPU %d (%s) is in MIG mode: give the job "
                                   "an instance or a MIG profile, not a memory share" % (
                                       info.index, info.name), {"gpu": info.index})
                booked = [j for j in self.store.active()
                          if info.index in j.gpus and j.memory_mib is not None]
                foreign = self._foreign_use_mib(info.index)
                free = info.memory_mib - sum(j.memory_mib for j in booked) - foreign
                if req.memory_mib > free:
                    held = ", ".join("j%d (%d MiB)" % (j.id, j.memory_mib) for j in booked)
                    raise RpcError(rpc.NO_ROOM, (
                        "GPU %d (%s) has %d MiB free for shares and the job asks %d MiB "
                        "(%d MiB total%s%s)" % (
                            info.index, info.name, max(free, 0), req.memory_mib, info.memory_mib,
                            "; booked: " + held if held else "",
                            "; %d MiB used by processes outside fractui" % foreign
                            if foreign else "")),
                        {"gpu": info.index, "free_mib": max(free, 0)})
            return
        info = infos[0]
        if not info.mig_mode:
            raise RpcError(rpc.NOT_MIG, "GPU %d (%s) has no MIG instances (MIG mode is off or "
                           "unsupported): give the job a memory_mib share" % (
                               info.index, info.name), {"gpu": info.index})
        if req.instance is not None:
            layout = self.gpus.call_nvml(lambda: self.gpus.backend.layout(info.index))
            inst = next((i for i in layout.instances if i.uuid == req.instance), None)
            if inst is None:
                raise RpcError(rpc.INSTANCE_NOT_FOUND, "no MIG instance %s on GPU %d" % (
                    req.instance, info.index))
            self._refuse_if_held(inst.uuid, inst.busy, inst.pids)

    def _refuse_if_held(self, uuid: str, busy: bool, pids: Tuple[int, ...]) -> None:
        holders = self.holders(uuid)
        if holders:
            raise RpcError(rpc.INSTANCE_BUSY, "MIG instance %s is already in use by job j%d" % (
                uuid, holders[0].id), {"job": holders[0].record()})
        if busy:
            raise RpcError(rpc.INSTANCE_BUSY, "MIG instance %s is in use by processes %s outside "
                           "fractui" % (uuid, ", ".join(map(str, pids)) or "(unreadable)"))

    def _foreign_use_mib(self, index: int) -> int:
        """GPU memory used by processes that belong to no job of ours."""
        ours = {j.pid for j in self.store.active() if j.pid}
        procs = self.gpus.call_nvml(lambda: self.gpus.backend.processes(index))
        return sum(p.used_mib or 0 for p in procs if session_of(p.pid) not in ours)

    def _start(self, job: Job, req: LaunchRequest) -> Job:
        """Take a recorded job (state starting) to running; safe to repeat after a crash."""
        job_dir = self.job_dir(job)
        os.makedirs(job_dir, mode=0o700, exist_ok=True)
        if job.mig is not None and job.instance is None:
            created = self.gpus.create_for_job(job.gpus[0], job.mig["profile"], job.mig["start"],
                                               job.mig.get("destroy_idle") is True,
                                               taken=lambda uuid: bool(self.holders(uuid)),
                                               pinned=job.mig.get("layout_version"))
            self.store.update(job, instance=created)
        if os.path.exists(os.path.join(job_dir, "shim.claim")):
            return self._record_start(job, self._read_started(job))  # a shim owns it already
        cgroup_procs, notes = self._driver_limit(job)
        env, applied = self._job_env(job, req.torch_fraction, cgroup_procs is not None)
        self.store.update(job, caps=applied, cap_notes=notes)
        write_json(os.path.join(job_dir, "spec.json"), {
            "argv": job.argv, "env": env, "cwd": job.cwd, "cgroup_procs": cgroup_procs,
            "log_max_bytes": self.settings.log_max_bytes})
        return self._record_start(job, self._spawn_shim(job))

    def _record_start(self, job: Job, report: Dict[str, Any]) -> Job:
        if "error" in report:
            self.store.update(job, state="exited", exit_code=127, reason=report["error"],
                              ended_at=time.time())
            self._release_cgroup(job)
            self.notify(job)
            raise RpcError(rpc.START_FAILED, "job j%d did not start: %s" % (
                job.id, report["error"]), {"job": job.record()})
        self.store.update(job, state="running", pid=report["pid"],
                          started_at=report["started_at"])
        self.notify(job)
        return job

    def cgroup_of(self, job: Job) -> str:
        return os.path.join(self.settings.caps.cgroup_parent or "",
                            "%s-j%d" % (self.paths.digest, job.id))

    def _driver_limit(self, job: Job) -> Tuple[Optional[str], List[str]]:
        """Put a share job in a cgroup of its own with the driver's memory limit on each of its
        GPUs. Returns the cgroup's procs file for the shim, or None and why not."""
        if job.memory_mib is None or "driver_limit" not in self.cap_probe.layers:
            return None, []
        nv = self.gpus.backend.nv
        path = self.cgroup_of(job)
        try:
            os.makedirs(path, exist_ok=True)
            for index in job.gpus:
                limits = nv.c_nvmlSetMemoryLimits_v1_t()
                limits.nameSpace = path.encode()
                limits.softLimit = limits.hardLimit = job.memory_mib << 20
                self.gpus.backend.call("nvmlDeviceSetMemoryLimits_v1",
                                       self.gpus.backend.handle(index), limits)
        except (OSError, NvmlCallError) as err:
            note = "driver_limit not applied: %s" % err
            log.warning("job j%d: %s", job.id, note)
            self._release_cgroup(job)
            return None, [note]
        return os.path.join(path, "cgroup.procs"), []

    def _release_cgroup(self, job: Job) -> None:
        """Clear a finished job's driver limits and remove its cgroup."""
        if job.memory_mib is None or "driver_limit" not in self.cap_probe.layers:
            return
        nv = self.gpus.backend.nv
        path = self.cgroup_of(job)
        for index in job.gpus:
            limits = nv.c_nvmlSetMemoryLimits_v1_t()
            limits.nameSpace = path.encode()
            limits.softLimit, limits.hardLimit = 0, nv.NVML_DEVICE_MEMORY_LIMIT_MAX
            try:
                self.gpus.backend.call("nvmlDeviceSetMemoryLimits_v1",
                                       self.gpus.backend.handle(index), limits)
            except NvmlCallError as err:
                log.warning("job j%d: clearing its limit on GPU %d: %s", job.id, index, err)
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass  # never made, or already removed
        except OSError as err:
            log.warning("job j%d: cgroup %s stays: %s", job.id, path, err)

    def _job_env(self, job: Job, torch_fraction: bool,
                 driver_limit: bool) -> Tuple[Dict[str, str], List[str]]:
        env = {k: v for k, v in os.environ.items() if k not in _CONFINEMENT_VARS}
        env.update(self.extra_job_env)
        env.update(job.env)
        env["FRACTUI_JOB_ID"] = "j%d" % job.id
        if job.instance is not None:
            env["CUDA_VISIBLE_DEVICES"] = job.instance
            return env, ["mig"]
        layers = self.cap_probe.layers
        gpu_memory = min(self.gpus.call_nvml(lambda: self.gpus.backend.gpu(i)).memory_mib
                         for i in job.gpus)
        env.update(caps.share_env(layers, self.settings.caps, job.gpu_uuids, job.memory_mib,
                                  gpu_memory, torch_fraction))
        return env, caps.applied_layers(layers, torch_fraction, driver_limit)

    def _spawn_shim(self, job: Job) -> Dict[str, Any]:
        read_fd, write_fd = os.pipe()
        with open(os.path.join(self.job_dir(job), "shim.log"), "ab") as shim_log:
            shim = subprocess.Popen(
                agent_command() + ["shim", self.job_dir(job), str(write_fd)], pass_fds=(write_fd,),
                stdin=subprocess.DEVNULL, stdout=shim_log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd="/", env=agent_env(os.environ))
        os.close(write_fd)
        self._shims[job.id] = shim
        try:
            line = _read_line(read_fd, START_TIMEOUT_S)
        finally:
            os.close(read_fd)
        if line:
            return json.loads(line)
        return self._read_started(job)

    def _read_started(self, job: Job) -> Dict[str, Any]:
        """What a shim recorded about the start, waiting briefly for one still starting."""
        deadline = time.time() + START_TIMEOUT_S
        while True:
            for name in ("started.json", "exit.json"):
                data = _load_json(os.path.join(self.job_dir(job), name))
                if data is not None:
                    if name == "exit.json" and "error" not in data:
                        continue  # ran and ended: started.json is there too
                    return data
            if time.time() > deadline or not shim_alive(self.job_dir(job)):
                return {"error": "its shim ended before starting it (see %s)" % os.path.join(
                    self.job_dir(job), "shim.log")}
            time.sleep(0.02)

    # -- stopping --

    def stop(self, job: Job, reason: str, grace_s: float) -> Job:
        with self._lock:
            if not job.active:
                return job
            if job.stop_reason is None:
                self.store.update(job, stop_reason=reason)
            self._signal(job, signal.SIGTERM)
            self._escalate[job.id] = time.time() + grace_s
            return job

    def _signal(self, job: Job, sig: int) -> None:
        """Ask the job's shim to pass a signal to the job's process group; if the shim is gone,
        signal the group directly."""
        shim_pid = _read_int(os.path.join(self.job_dir(job), "shim.claim"))
        if shim_pid and shim_alive(self.job_dir(job)):
            os.kill(shim_pid, signal.SIGUSR1 if sig == signal.SIGKILL else signal.SIGTERM)
        elif job.pid:
            try:
                os.killpg(job.pid, sig)
            except ProcessLookupError:
                log.info("job j%d: process group %d already gone", job.id, job.pid)

    # -- watching: called by the daemon's monitor about twice a second --

    def tick(self) -> None:
        with self._lock:
            for job_id, shim in list(self._shims.items()):
                if shim.poll() is not None:
                    del self._shims[job_id]
            for job in self.store.active():
                if job.state == "running":
                    self._observe(job)
            self._watchdog()
            now = time.time()
            for job_id, when in list(self._escalate.items()):
                job = self.store.get(job_id)
                if job is None or not job.active:
                    del self._escalate[job_id]
                elif now >= when:
                    self._signal(job, signal.SIGKILL)
                    self._escalate[job_id] = now + 1.0
            if now - self._last_prune > min(60.0, self.settings.retention_s):
                self._last_prune = now
                self.prune(now - self.settings.retention_s)

    def _observe(self, job: Job) -> None:
        ended = _load_json(os.path.join(self.job_dir(job), "exit.json"))
        if ended is None:
            if shim_alive(self.job_dir(job)):
                return
            # it may have ended between the two looks
            ended = _load_json(os.path.join(self.job_dir(job), "exit.json"))
            if ended is None:
                self.store.update(job, state="lost", ended_at=time.time(), reason=(
                    "its shim ended without recording an exit status; whether the job finished, "
                    "and how, cannot be known"))
                self._release_cgroup(job)
                self.notify(job)
                return
        changes: Dict[str, Any] = {"ended_at": ended.get("ended_at", time.time())}
        if "signal" in ended:
            changes["state"] = "killed"
            changes["reason"] = job.stop_reason or "terminated by signal %s" % _signal_name(
                ended["signal"])
        elif job.stop_reason is not None:
            changes.update(state="killed", reason=job.stop_reason, exit_code=ended.get("code"))
        else:
            changes.update(state="exited", exit_code=ended.get("code"))
        self.store.update(job, **changes)
        self._release_cgroup(job)
        self.notify(job)

    def _watchdog(self) -> None:
        """The backstop cap: a share job whose processes use more than its share is stopped."""
        share_jobs = [j for j in self.store.active()
                      if j.state == "running" and j.memory_mib is not None and j.pid]
        if not share_jobs:
            return
        by_session = {j.pid: j for j in share_jobs}
        used: Dict[int, int] = {}
        for index in sorted({g for j in share_jobs for g in j.gpus}):
            for proc in self.gpus.call_nvml(lambda: self.gpus.backend.processes(index)):
                job = by_session.get(session_of(proc.pid))
                if job is not None and index in job.gpus:
                    used[job.id] = used.get(job.id, 0) + (proc.used_mib or 0)
        for job in share_jobs:
            if used.get(job.id, 0) > job.memory_mib and job.stop_reason is None:
                reason = "exceeded its %d MiB cap: used %d MiB" % (job.memory_mib, used[job.id])
                log.info("job j%d %s; stopping it", job.id, reason)
                self.stop(job, reason, self.settings.watchdog_grace_s)
                self.notify(job)

    # -- adoption, queries, retention --

    def adopt(self) -> List[Job]:
        """On daemon start: every job the table says is active is looked at again. A launch cut
        short before its shim existed stays 'starting' until its key is retried."""
        with self._lock:
            adopted = self.store.active()
            for job in adopted:
                if job.state == "starting" and os.path.exists(
                        os.path.join(self.job_dir(job), "shim.claim")):
                    try:
                        self._record_start(job, self._read_started(job))
                    except RpcError as err:
                        log.warning("adopting j%d: %s", job.id, err.message)
                if job.state == "running":
                    self._observe(job)
            return adopted

    def prune(self, cutoff: float) -> int:
        gone = self.store.finished_before(cutoff)
        for job in gone:
            shutil.rmtree(self.job_dir(job), ignore_errors=True)
            self.store.delete(job)
        return len(gone)

    def find(self, ref: str) -> Job:
        job_id = ref[1:] if ref.startswith("j") else ref
        job = self.store.get(int(job_id)) if re.fullmatch("[0-9]{1,18}", job_id) else None
        if job is None:
            raise RpcError(rpc.JOB_NOT_FOUND, "no job %r on this host" % ref)
        return job

    def log_paths(self, job: Job) -> List[str]:
        base = os.path.join(self.job_dir(job), "output.log")
        return [p for p in (base + ".1", base) if os.path.exists(p)]


def tail_lines(paths: List[str], lines: int) -> Tuple[List[str], int]:
    """The last ``lines`` lines across the rotated and current log, and the current log's size."""
    data = b""
    for path in paths:
        with open(path, "rb") as f:
            data += f.read()
    size = os.path.getsize(paths[-1]) if paths else 0
    text = data.decode("utf-8", errors="replace").splitlines()
    return text[-lines:] if lines else [], size


def session_of(pid: int) -> Optional[int]:
    """The session a process belongs to: a job's processes share the job's (its pid)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: fields follow the last ')'
    fields = stat[stat.rindex(b")") + 2:].split()
    return int(fields[3])


def shim_alive(job_dir: str) -> bool:
    """A live shim holds its lock for life; if we can take it, the shim is gone."""
    try:
        fd = os.open(os.path.join(job_dir, "shim.lock"), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)
    return False


def _read_line(fd: int, timeout_s: float) -> str:
    buf = b""
    deadline = time.time() + timeout_s
    while not buf.endswith(b"\n"):
        left = deadline - time.time()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode().strip()


def _load_json(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except FileNotFoundError:
        return None


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return str(num)
