"""Launching, watching and stopping jobs on one host.

Every launch is recorded (and fsync'd) before anything runs, under an idempotency key: the same key
again returns the same job and never a second process or a second MIG instance. Each job runs
under its own shim, so the daemon may die, restart or be replaced by a newer version and re-adopt
every job from the table and the shims' files; a job whose shim died is found, watched and stopped
by the daemon itself (remote_agent/jobs/procs.py). The daemon refuses anything that would
double-book a GPU: an instance already in use, or a memory share above what is still free.

Locks: the supervisor's lock covers job-table transitions only. It is never held across NVML, a
MIG change, a process start or a wait, so the watchdog (a thread of its own) and every other
client go on while launches are in flight. Launches on different GPUs run at once; on one GPU,
MIG creation is serialised by that GPU's lock (``Agent.mig_lock``), which a launch holds from
creating its instance until the instance is recorded as the job's, so no other launch can take
it in between; a launch onto an instance that exists holds it from reading the instance until
the job is recorded, so no MIG change destroys it in between. A launch of a key that is
already in flight waits for that one, holding no MIG lock, and answers as it.
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
import signal
import stat
import subprocess
import threading
import time
from collections import Counter
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Optional, Set, Tuple

from remote_agent.daemon.kept import DAMAGED, read_json, record
from remote_agent.daemon.paths import AgentPaths, agent_command, agent_env
from remote_agent.daemon.trust import UnsafePath, open_private, private_dir, read_private, \
    write_private
from remote_agent.failing import Failures
from remote_agent.gpu.backend import GpuInfo, NvmlCallError
from remote_agent.jobs import booking, caps, last_line, output, powers, procs, pruning, \
    runtime
from remote_agent.jobs.cgroups import JobCgroups
from remote_agent.jobs.env import JobUser, base_env
from remote_agent.jobs.runtime import JobRun, Runtime
from remote_agent.jobs.runtime.image import MAX_IMAGE_LEN, image_problem
from remote_agent.jobs.shim import HOST_ERRNOS, JobFolder
from remote_agent.jobs.region import REGION_RECORD, new_region, remove_region
from remote_agent.jobs.store import Job, JobStore, StoreError
from remote_agent.jobs.usage import USAGE_SAMPLE_S
from remote_agent.rpc import jsonrpc as rpc
from remote_agent.rpc.jsonrpc import Params, RpcError
from remote_agent.text import count

log = logging.getLogger("remote_agent.jobs")

START_TIMEOUT_S = 15.0  # a launch answers by then; a start still under way goes on, watched
# in a job's directory once it is seen running after its shim died: how its end is told
# depends on it (watch.Watchdog._lost_why), and a restarted daemon must tell it the same way
OUTLIVED = "outlived-shim.json"
NUMBER = (int, float)
# the job files the daemon reads, as their writers write them (the shim: remote_agent.jobs.shim)
_STARTED = record({"pid": (int,), "started_at": NUMBER, "start_ticks": (int, type(None)),
                   "pipe": (list,)}, ("pid", "started_at"))


def _started(data: Any) -> Dict[str, Any]:
    """started.json, its ``pipe`` (where there: an older shim wrote none) a device and an
    inode, as ``output.pipe_id`` gives them: any other is damage, never taken for a FIFO put in
    the place of the one it names."""
    started = _STARTED(data)
    pipe = started.get("pipe")
    if pipe is not None and (len(pipe) != 2 or any(type(n) is not int for n in pipe)):
        raise TypeError("pipe is %.80r" % (pipe,))  # (cut: it may be long)
    return started


JOB_FILES = {
    "started.json": _started,
    "exit.json": record({"ended_at": NUMBER, "code": (int, type(None)), "signal": (int,),
                         "error": (str,), "fault": (str,)}),
    OUTLIVED: record({"seen_at": NUMBER}, ("seen_at",)),
    REGION_RECORD: record({"path": (str,), "uid": (int,)}, ("path", "uid")),
}
FENCE = b"0"  # a shim claim the daemon made: no shim may start that job
UNSENT = "unsent"  # a stop's signal its container was not made yet to take: (it, job id)
UNFOUND = "unfound"  # a running job's container its runtime cannot say where is: (it, job id)
UNREAD = "unread"  # an active job held, its folder left unread: (it, job id)


@dataclass
class SupervisorSettings:
    caps: caps.CapSettings = field(default_factory=caps.CapSettings)
    log_max_bytes: int = 64 << 20
    retention_s: float = 7 * 24 * 3600.0
    watchdog_grace_s: float = 5.0
    usage_sample_s: float = USAGE_SAMPLE_S


@dataclass(frozen=True)
class LeftContainer:
    """An ended job's container, to be removed by its name: its runtime's kind, its cgroup
    where known, and whose it is (in words, for the log)."""

    name: str
    runtime: str
    cgroup: Optional[str]
    who: str


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
    run_as: Optional[str] = None
    image: Optional[str] = None

    def fingerprint(self) -> str:
        what: List[Any] = [self.argv, self.env, self.cwd, self.gpus, self.instance, self.mig,
                           self.memory_mib, self.torch_fraction]
        if self.run_as is not None:  # only then: keys launched before run_as keep theirs
            what.append(self.run_as)
        if self.image is not None:  # likewise; tagged, so it never reads as a run_as
            what.append({"image": self.image})
        return hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()


def parse_launch(p: Params) -> LaunchRequest:
    key = p.text("key", max_len=rpc.MAX_ID)
    if not key.strip():
        raise RpcError(rpc.INVALID_PARAMS, "job.launch param 'key' must not be empty")
    argv = p.texts("argv", "a list of strings (the program and its arguments, run as is, never "
                   "by a shell)", max_len=rpc.MAX_ARG)
    if not argv:
        raise RpcError(rpc.INVALID_PARAMS, "job.launch param 'argv' must be a non-empty list of "
                       "strings; it is run as is, never by a shell")
    env = p.text_map("env", "an object of string values", {}, max_len=rpc.MAX_ARG)
    if any(not k or "=" in k for k in env):
        raise RpcError(rpc.INVALID_PARAMS, "job.launch param 'env': a variable's name is never "
                       "empty and holds no '='")
    cwd = p.text("cwd", None)
    if cwd is not None and not os.path.isabs(cwd):  # relative to what? the shim's own is not
        raise RpcError(rpc.INVALID_PARAMS, "job.launch param 'cwd' must be an absolute path, "
                       "not %r" % cwd[:80])
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
    name = p.text("name", None) or program_name(argv[0])
    image = p.text("image", None, max_len=MAX_IMAGE_LEN)
    why = image_problem(image) if image is not None else None
    if why:
        raise RpcError(rpc.INVALID_PARAMS, "job.launch param 'image' must be an image "
                       "reference (e.g. docker.io/library/python:3.12, or an apptainer image's "
                       "path), not %r: %s" % (image, why))
    return LaunchRequest(key=key, argv=argv, env=env, cwd=cwd, name=name, gpus=gpus,
                         instance=instance, mig=mig, memory_mib=memory_mib,
                         torch_fraction=p.flag("torch_fraction", False),
                         run_as=p.text("run_as", None), image=image)


NAME_CUT = "\u2026 (cut: %d more characters)"  # the mark the admin's cut text ends in


def program_name(program: str) -> str:
    """A job's name made from its program's path, as a name given is bounded: shown, its
    unprintable characters are '?'; an argv word may be 128 KiB, so past rpc.MAX_TEXT it is
    cut, the mark saying how much (the whole with its mark within MAX_TEXT)."""
    name = "".join(c if c.isprintable() else "?" for c in os.path.basename(program))
    if len(name) <= rpc.MAX_TEXT:
        return name
    keep = rpc.MAX_TEXT - len(NAME_CUT % len(name))
    return name[:keep] + NAME_CUT % (len(name) - keep)


def start_failed(reason: str, job: Optional[Job] = None) -> RpcError:
    """The answer to a launch that can never start as given: class "job", the agent's words."""
    data: Dict[str, Any] = {"reason": reason}
    if job is not None:
        data["job"] = job.record()
    return RpcError(rpc.START_FAILED, "the job cannot start: %s" % reason, data)


def not_started(job: Job, reason: str, fault: Optional[str]) -> RpcError:
    """The answer to a launch whose shim did not start the job, by whose fault it was
    (``exit.json``'s "fault", the shim's ``fault_of``): the job's, START_FAILED (class job:
    it fails for good); the host's, HOST_FAILED (class host: nothing ran, so the admin starts
    it on another host). Not START_FAILED with class host: an admin that reads the code alone
    would fail the job for good, and a class that contradicts its code is no class at all."""
    if fault != rpc.HOST:
        return start_failed(reason, job)
    return RpcError(rpc.HOST_FAILED, "job j%d did not start, and nothing of it ran: %s" % (
        job.id, reason), {"reason": reason, "job": job.record()})


class Supervisor:
    """The job side of the daemon. ``gpus`` is the agent (GPU access and the MIG locks)."""

    def __init__(self, paths: AgentPaths, gpus: Any, settings: SupervisorSettings,
                 notify: Callable[[Job], None], extra_job_env: Dict[str, str],
                 sim_state: Optional[str] = None):
        """``extra_job_env``: what a bare job gets besides its own (the simulator's state and
        the agent's code on a sim host); ``sim_state``: the state file a container job gets."""
        self.paths = paths
        self.gpus = gpus
        self.settings = settings
        self.notify = notify
        self.extra_job_env = extra_job_env
        self.sim_state = sim_state
        self.runtimes = runtime.probe()
        private_dir(paths.jobs_dir, "jobs directory")
        # jobs whose directory holds what the agent did not make: never read (``job_dir``);
        # a name no job's directory has (``j01``: j1's is ``j1``) is no job's
        self.unread = {int(name[1:]): why for name, why in paths.unread_job_dirs().items()
                       if pruning.JOB_NAME.fullmatch(name)}
        self.store = JobStore(paths.jobs_db)
        self.cgroups = JobCgroups(settings.caps.cgroup_parent, paths.digest)
        parent, root = self.cgroups.parent, os.geteuid() == 0
        self.cap_probe = caps.probe(gpus.backend.nv, replace(
            settings.caps, cgroup_parent=parent), root, self.cgroups.problem,
            caps.driver_refusal(gpus.backend, parent) if parent and root else None)
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)  # a launch in flight has ended
        self._launching: Set[int] = set()  # jobs a launch of this daemon is starting
        self._unclaimed: Set[int] = set()  # left starting: their shims ended, claiming none
        self._shims: Dict[int, subprocess.Popen] = {}  # shims this daemon started, to reap
        self._cgroups_left: Set[str] = set()  # of ended jobs, removed once empty
        self._containers_left: Dict[str, LeftContainer] = {}  # of ended jobs, by name
        self._removing: Set[str] = set()  # containers being ended now (a launch of one waits)
        # job -> the signal (SIGTERM) a stop sent before its container was made: sent again
        # at each watchdog pass until the container takes it (``send_unsent``)
        self._unsent: Dict[int, int] = {}
        # jobs this daemon sent their stop's SIGTERM: a stop asked again (its answer lost)
        # sends none, as a second SIGTERM is "quit now" to many programs; a daemon
        # restarted since sends it again (at least once, never unsent)
        self._termed: Set[int] = set()
        self._held_stops: Dict[int, Dict[str, Any]] = {}
        """The watchdog's stops the table could not take (a full state disk): carried out all
        the same, by this daemon, and written at each pass until the table takes them."""
        self.outputs = output.Outputs(paths.jobs_dir, settings.log_max_bytes)
        self.failures = Failures(log)  # of the watchdog's passes and the fences: said once

    # -- launching --

    def launch(self, req: LaunchRequest) -> Job:
        while True:
            with self._lock:
                known = self._by_key(req)
            if known is not None and known.state != "starting" and not known.never_ran:
                return known  # the same key again: the same job, whatever has changed since
            user, how = self._check_startable(req)
            infos = [self.gpus.gpu_info(g) for g in req.gpus]
            twice = sorted(i for i, n in Counter(i.index for i in infos).items() if n > 1)
            if twice:  # by index, or by index and uuid: one GPU is one GPU of the job
                raise RpcError(rpc.INVALID_PARAMS, "job.launch: 'gpus' names GPU %s more than "
                               "once" % ", ".join(map(str, twice)), {"gpus": req.gpus})
            recorded = self._record(req, infos, how)
            if recorded is not None:
                break
        job, settled = recorded
        if settled:
            return job
        try:
            return self._start(job, req, user)
        except BaseException:
            self._forget_if_nothing_ran(job)
            raise
        finally:
            with self._lock:
                self._launching.discard(job.id)
                self._settled.notify_all()

    def _record(self, req: LaunchRequest, infos: List[GpuInfo],
                how: Runtime) -> Optional[Tuple[Job, bool]]:
        """The key's job recorded as starting and marked in flight, with False; the key's job
        as it is, with True, where it is past starting; None where another launch of the key
        is in flight: the caller waits for it without this GPU's MIG lock, and looks again."""
        with self._instance_lock(req, infos):
            facts = booking.read_facts(self.gpus, req.memory_mib, req.instance, infos,
                                       self.job_pids)
            with self._lock:
                job = self.store.by_key(req.key)
                if job is not None and job.id in self._launching:
                    return None
                job = self._by_key(req)  # (its fingerprint checked, a failed start raised)
                if job is not None and job.never_ran:  # a launch cut short: start it now
                    self.job_dir(job)  # (one left unread is refused here, its record kept)
                    booking.check(self.store.active(), req.memory_mib, req.instance, infos,
                                  facts)
                    self.store.update(job, state="starting", reason=None, ended_at=None)
                    self._unfence(job)
                    self._taken_again(job)
                elif job is not None and job.state != "starting":
                    return job, True
                elif job is None:
                    booking.check(self.store.active(), req.memory_mib, req.instance, infos,
                                  facts)
                    job = self.store.insert(Job(
                        id=0, key=req.key, fingerprint=req.fingerprint(), name=req.name,
                        argv=req.argv, env=req.env, cwd=req.cwd, gpus=[i.index for i in infos],
                        gpu_uuids=[i.uuid for i in infos], instance=req.instance, mig=req.mig,
                        memory_mib=req.memory_mib, created_at=time.time(), run_as=req.run_as,
                        runtime=how.kind, image=req.image))
                    if how.has_container:  # named by its id, so a daemon finds it by the table
                        self.store.update(job, container="fractui-%s-j%d" % (
                            self.paths.digest, job.id))
                self._launching.add(job.id)
                self._unclaimed.discard(job.id)  # (said again by this launch, if so)
                return job, False

    def _instance_lock(self, req: LaunchRequest, infos: List[GpuInfo]) -> ContextManager[Any]:
        """For a launch onto an instance that exists: its GPU's MIG lock, held from reading the
        instance until the job that holds it is recorded, so that no MIG change (a destroy, an
        apply or a mode change destroying idle instances) takes it in between: each either
        ends before (the launch then finds it gone) or finds it the job's (busy)."""
        return self.gpus.mig_lock(infos[0].index) if req.instance is not None else nullcontext()

    def _by_key(self, req: LaunchRequest) -> Optional[Job]:
        """The job of this key (the caller holds the lock), once no launch of it is in flight."""
        while True:
            job = self.store.by_key(req.key)
            if job is None:
                return None
            if job.fingerprint != req.fingerprint():
                raise RpcError(rpc.INVALID_PARAMS, "key %r already names job j%d, launched "
                               "with other params" % (req.key, job.id), {"job": job.record()})
            if job.id not in self._launching and not (job.never_ran and
                                                      job.container in self._removing):
                break  # (one that never ran starts again once its container's end is over)
            self._settled.wait()
        if job.start_failed:  # (its fault as its shim recorded it)
            ended = self.read_job_file(job, "exit.json") or {}
            raise not_started(job, job.reason or "it did not start", ended.get("fault"))
        return job

    def _check_startable(self, req: LaunchRequest) -> Tuple[JobUser, Runtime]:
        """Job faults found before anything is recorded: its user, its runtime, its cwd, its
        program (a container job's cwd and program are its image's, not the host's; a run_as
        job's are found by its shim as that user, who may not see what the agent sees)."""
        try:
            user = JobUser.named(req.run_as)
        except KeyError:
            raise start_failed("no user %r on this host" % req.run_as) from None
        held = (powers.refusal(user.uid, self.paths.sudo_logins) if req.run_as is not None
                else None)
        if held and user.uid == 0:  # a team member's name, never root's
            raise start_failed("run_as %r is %s" % (req.run_as, held))
        if held:  # this host's: another reaches the agent otherwise, the member may run there
            raise RpcError(rpc.NOT_PERMITTED, "run_as %r is %s" % (req.run_as, held))
        if req.run_as is not None and os.geteuid() != 0:
            raise RpcError(rpc.NOT_PERMITTED, "run_as %r needs the agent to run as root (become "
                           "= \"sudo\"); it runs as uid %d" % (req.run_as, os.geteuid()))
        if req.image is not None:
            how, why = self.runtimes.for_image()
            if how is None:
                raise start_failed(why)
            why = how.env_problem(req.env) or how.image_problem(req.image,
                                                                req.run_as is not None)
            if why:
                raise start_failed(why)
            return user, how
        if req.run_as is not None:  # looked at as its user, by the shim: the agent (root)
            return user, self.runtimes.get("process")  # would say what is in others' dirs
        cwd = req.cwd or user.default_cwd()
        err = _refused(cwd, stat.S_IFDIR)
        if err is not None:
            _host_trouble("enter its cwd %s" % cwd, [err])
            raise start_failed("cannot enter its cwd %s: %s" % (cwd, os.strerror(err)))
        path = req.env.get("PATH") or base_env(os.environ, user)["PATH"]
        errs = _program_errors(_exec_candidates(req.argv[0], path, cwd))
        if errs:
            _host_trouble("run %s" % req.argv[0], errs)
            # as execvpe says it (os._execvpe): the first that is not ENOENT or ENOTDIR, else
            # the last
            err = next((e for e in errs if e not in (errno.ENOENT, errno.ENOTDIR)), errs[-1])
            raise start_failed("cannot run %s: %s" % (req.argv[0], os.strerror(err)))
        return user, self.runtimes.get("process")

    def job_dir(self, job: Job) -> str:
        """The job's directory, to read or write in; UnsafePath, saying why, where it is left
        unread (``self.unread``)."""
        if job.id in self.unread:
            raise UnsafePath("job j%d: %s" % (job.id, self.unread[job.id]))
        return self._dir_of(job)

    def _dir_of(self, job: Job) -> str:
        """The job's directory, whether it can be read or not."""
        return os.path.join(self.paths.jobs_dir, "j%d" % job.id)

    @contextmanager
    def folder(self, job: Job) -> Iterator[Optional[JobFolder]]:
        """The job's directory opened once, no link followed (``trust.open_dir``: a directory
        of the agent's own that nobody else writes), for every read and write in it to go
        through (``dir_fd``), never through its name again: a job runs as the agent's user,
        and may put a symlink in place of its folder, or of a file in it, at any moment, so a
        name looked up again could lead out of the folder (docs/decisions.md). None where it
        is not there; UnsafePath where it is left unread (``job_dir``) or is no such
        directory now."""
        try:
            opened = JobFolder.open(self.job_dir(job))
        except FileNotFoundError:
            yield None
            return
        try:
            yield opened
        finally:
            os.close(opened.fd)

    def _start(self, job: Job, req: LaunchRequest, user: JobUser) -> Job:
        """Take a recorded job (state starting) to running; safe to repeat after a crash."""
        try:
            os.mkdir(self.job_dir(job), 0o700)
        except FileExistsError:  # (a start tried before: judged as it is opened)
            pass
        folder = JobFolder.open(self.job_dir(job))  # (one removed since: FileNotFoundError)
        try:
            if os.fstat(folder.fd).st_mode & 0o077:
                os.fchmod(folder.fd, 0o700)
            return self._start_in(job, req, user, folder)
        finally:
            os.close(folder.fd)

    def _start_in(self, job: Job, req: LaunchRequest, user: JobUser, folder: JobFolder) -> Job:
        """``_start`` in the job's folder, opened."""
        job_dir = folder.path
        if job.mig is not None and job.instance is None:
            index = job.gpus[0]
            with self.gpus.mig_lock(index):  # until the instance is recorded as the job's
                created = self.gpus.create_for_job(
                    index, job.mig["profile"], job.mig["start"],
                    job.mig.get("destroy_idle") is True,
                    taken=lambda uuid: bool(booking.holders(self.store.active(), uuid, job.id)),
                    pinned=job.mig.get("layout_version"))
                with self._lock:
                    booking.refuse_if_held(self.store.active(), created, False, (), job.id)
                    self.store.update(job, instance=created)
        if folder.has("shim.claim"):
            return self._record_start(job, self._wait_started(job))  # a shim owns it already
        how = self.runtimes.get(job.runtime)
        cgroup, no_cgroup = self.cgroups.create(job.id)  # (again, for a start tried before)
        notes = self._driver_limit(job, cgroup, no_cgroup, how)
        limited = cgroup is not None and not notes and "driver_limit" in self.cap_probe.layers
        env, applied = self._job_env(job, req.torch_fraction, limited)
        with self._lock:
            self.store.update(job, caps=applied, cap_notes=notes, cgroup=cgroup)
        shared, read_only = self._container_shares(job, applied, env)
        shim = how.launch(JobRun(
            name=job.container or "", argv=job.argv, env=env, cwd=job.cwd, user=user,
            run_as=job.run_as is not None, image=job.image, cgroup=cgroup,
            devices=[] if self.sim_state else (
                [job.instance] if job.instance else job.gpu_uuids),
            mounts=shared, read_only=read_only, job_dir=job_dir, hami="hami" in applied))
        for path, data in shim.files.items():  # (each in the job's folder)
            write_private(path, data, True, dir_fd=folder.fd)
        # its region named here and kept in the table, so that it is removed where its shim
        # died even with its folder (and the shim's record of it there) left unread
        region = new_region() if shim.region_env else None
        with self._lock:
            self.store.update(job, region=region)
        spec = {"argv": shim.argv, "env": shim.env, "cwd": shim.cwd, "cgroup": shim.cgroup,
                "log_max_bytes": self.settings.log_max_bytes, "user": shim.user,
                "hami_region": shim.region_env, "region": region,
                "passed": {str(i): name for i, name in shim.passed.items()}}
        write_private(folder.named("spec.json"), json.dumps(spec).encode(), True,
                      dir_fd=folder.fd)
        return self._record_start(job, self._spawn_shim(job, folder))

    def _record_start(self, job: Job, report: Optional[Dict[str, Any]]) -> Job:
        """What the shim said: running, a start that failed (``not_started``), a start still under
        way (answered as starting; the watchdog follows it), or a shim that died first."""
        if report is None:
            return job
        if "error" in report:
            self.finish(job, state="exited", exit_code=127, reason=report["error"],
                         fault=report.get("fault"), by_launch=True)
            raise not_started(job, report["error"], report.get("fault"))
        if "lost" in report:
            self.finish(job, state="lost", reason=report["lost"], by_launch=True)
            raise RpcError(rpc.HOST_FAILED, "job j%d: %s" % (job.id, report["lost"]),
                           {"job": job.record()})
        with self._lock:
            self.store.update(job, state="running", pid=report["pid"],
                              start_ticks=report.get("start_ticks"),
                              started_at=report["started_at"])
        self.hold_output(job, report.get("pipe"))
        if job.container:
            self.find_container(job, START_TIMEOUT_S)
        self.notify(job)
        self.term_if_stopped(job)
        return job

    def term_if_stopped(self, job: Job) -> None:
        """SIGTERM to a job just seen running that was stopped while it was starting (``stop``
        signals only a running job), by this launch or before a daemon restart: as the table
        (or a stop held for it) says now, so a stop that came while the caller read the job is
        not missed; one that came after the start signalled it itself, and is not sent
        another."""
        with self._lock:
            fresh = self._with_held_stop(self.store.get(job.id) or job)
        if fresh.stop_reason is not None:
            self._term_once(fresh)

    def find_container(self, job: Job, wait_s: float = 0.0) -> None:
        """Record the cgroup of a running job's container once the runtime has made it (waiting
        up to ``wait_s`` while the runtime's client still runs and the runtime answers): from
        then on the daemon finds the container's processes without the shim or the runtime. A
        runtime that cannot say (its ``inspect`` failing) is asked again by the watchdog at
        each pass, not again and again here: the launch answers meanwhile."""
        deadline = time.monotonic() + wait_s
        how = self.runtimes.get(job.runtime)
        while job.container and job.container_cgroup is None:
            found, refused, failed = how.cgroup(job.container)
            if failed is not None:  # said once while it lasts, the launch's or a pass's
                self.failures.failed((UNFOUND, job.id), "job j%d: %s; its container is "
                                     "looked for at each pass" % (job.id, failed))
                with self._lock:  # (its end, recorded first, may have cleared it before)
                    fresh = self.store.get(job.id)
                if fresh is None or fresh.state not in ("starting", "running"):
                    self._unfound_ended(job)
                return
            self.failures.worked((UNFOUND, job.id), "job j%d: its runtime answers where its "
                                 "container is again" % job.id)
            if found is not None:
                with self._lock:
                    self.store.update(job, container_cgroup=found)
                return
            if refused is not None:
                if refused not in job.cap_notes:  # said once recorded: a record failing
                    with self._lock:  # (a full state disk) is said by the caller, once
                        self.store.update(job, cap_notes=job.cap_notes + [refused])
                    log.warning("job j%d: %s", job.id, refused)
                return
            if time.monotonic() >= deadline or not job.procs().leader_alive():
                return
            time.sleep(0.1)

    def _forget_if_nothing_ran(self, job: Job) -> None:
        """After a failed launch: a job nothing ran for is forgotten, so its key is free."""
        with self._lock:
            fresh = self.store.get(job.id)
            if fresh is None or fresh.state != "starting" or self._has(job, "shim.claim"):
                return
            self.store.delete(fresh)
        self._release(fresh)
        why = pruning.remove_entry(self.paths.jobs_dir, "j%d" % job.id)
        if why is not None:  # (no record names it now: the next prune tries again)
            log.warning("job j%d: its directory is left after its launch failed: %s",
                        job.id, why)

    def _driver_limit(self, job: Job, cgroup: Optional[str], no_cgroup: Optional[str],
                      how: Runtime) -> List[str]:
        """The driver's memory limit on a share job's cgroup for each of its GPUs; the notes say
        why not where the host has the layer (so a cgroup parent) but it could not be set
        (``no_cgroup``: why the job has no cgroup, where it has none)."""
        if job.memory_mib is None or "driver_limit" not in self.cap_probe.layers:
            return []
        if cgroup is None:
            return ["driver_limit not applied: the job has no cgroup of its own (%s)" % no_cgroup]
        why = how.cgroup_parent_problem(cgroup)
        if why:
            return ["driver_limit not applied: " + why]
        try:
            for index in job.gpus:
                self._set_limit(cgroup, index, job.memory_mib << 20, job.memory_mib << 20)
        except NvmlCallError as err:
            note = "driver_limit not applied: %s" % err
            log.warning("job j%d: %s", job.id, note)
            self._clear_driver_limit(job, cgroup)
            return [note]
        return []

    def _set_limit(self, cgroup: str, index: int, soft: int, hard: int) -> None:
        nv = self.gpus.backend.nv
        limits = nv.c_nvmlSetMemoryLimits_v1_t()
        limits.nameSpace = os.fsencode(cgroup)  # the path's bytes, as the OS has them
        limits.softLimit, limits.hardLimit = soft, hard
        backend = self.gpus.backend
        with backend.held():  # the handle used in the session that fetched it
            backend.call("nvmlDeviceSetMemoryLimits_v1", backend.handle(index), limits)

    def _clear_driver_limit(self, job: Job, cgroup: str) -> None:
        if job.memory_mib is None or "driver_limit" not in self.cap_probe.layers:
            return
        for index in job.gpus:
            try:
                self._set_limit(cgroup, index, 0, self.gpus.backend.nv.NVML_DEVICE_MEMORY_LIMIT_MAX)
            except NvmlCallError as err:
                log.warning("job j%d: clearing its limit on GPU %d: %s", job.id, index, err)

    def _release(self, job: Job) -> None:
        """An ended job gives back its container, its cgroup (killing anything left in it) and
        driver limits. The container is removed here whoever else would (the runtime's --rm
        needs its client or its monitor alive to do it)."""
        self._remove_left_region(job)
        if job.container:
            self.end_container(LeftContainer(job.container, job.runtime, job.container_cgroup,
                                             "job j%d" % job.id))
        if job.cgroup is None:
            return
        procs.JobProcs(None, None, job.cgroup).signal(signal.SIGKILL)
        self._clear_driver_limit(job, job.cgroup)
        if not self.cgroups.remove(job.cgroup):
            with self._lock:
                self._cgroups_left.add(job.cgroup)

    def _remove_left_region(self, job: Job) -> None:
        """The HAMi-core region of an ended job whose shim died (a live shim removes its own as
        the job ends), from the shim's record, only where it is still the job's user's own
        directory (``shim.remove_region``). A job whose folder is left unread was ended with
        its processes killed (``end_if_unread``), and neither the record nor the shim's lock
        there is read: its region is the one the table names (``Job.region``), removed unless
        a shim of this daemon's still runs to remove it itself (one of a daemon before a
        restart may still run, and remove it too: of the two, the one that removed it says
        so, ``remove_region``); one an older agent started, its name in that folder alone,
        is said to be left. Its log line says why the daemon removed it, never that the shim
        died: the shim may have ended without removing it all (its own removal failed or was
        cut, in its log, leaving the rest under the region's name), or may live on."""
        if "hami" not in job.caps:
            return  # it never had one (its layers are recorded before its shim starts)
        try:
            if job.id in self.unread and job.region is not None:
                shim = self._shims.get(job.id)
                if shim is not None and shim.poll() is None:
                    return
                try:
                    uid = JobUser.named(job.run_as).uid
                except KeyError:
                    raise UnsafePath("refusing to remove %s: its user, %s, is no more; it is "
                                     "left as it is" % (job.region, job.run_as)) from None
                left = {"path": job.region, "uid": uid}
                why = "its folder is left unread, where its shim's lock is"
            else:
                left = self.read_job_file(job, REGION_RECORD)
                if left is None or shim_alive(self.job_dir(job)):
                    return
                why = "its shim has ended"
            if remove_region(left["path"], left["uid"]):  # (False: the shim's removed it)
                log.info("job j%d: removed its HAMi-core region %s, which its shim had not (%s)",
                         job.id, left["path"], why)
        except (UnsafePath, OSError) as err:
            log.warning("job j%d: its HAMi-core region is left: %s", job.id, err)

    def end_container(self, left: LeftContainer) -> str:
        """Stop and remove an ended job's container by its name, whatever recorded it: first a
        SIGKILL to its runtime's client where one still runs (found by the name: no record may
        hold its pid, and it would make the container after the removal), then the runtime's
        forced remove. Where that fails, a SIGKILL to what is left in its cgroup (where known)
        and the container is kept, to be removed at each watchdog pass until it is, said once,
        and once more when it is. What was done, in words for the job's reason."""
        how = self.runtimes.get(left.runtime)
        killed = sorted(pid for pid, name in how.clients(left.name).items()
                        if name == left.name and _kill(pid))
        client = "its runtime's client, found by the container's name (pid %s), was killed" % (
            ", ".join(map(str, killed))) if killed else ""
        why = how.remove(left.name)
        if why is None:
            with self._lock:
                self._containers_left.pop(left.name, None)
            self.failures.worked(("container", left.name), "%s: its container %s is removed" % (
                left.who, left.name))
            done = "the container %s removed" % left.name
            if killed:
                done = "%s and %s" % (client, done)
                log.warning("%s: %s", left.who, done)
            return done
        if killed:  # (said apart from the removal's failure, which is said once)
            log.warning("%s: %s", left.who, client)
        with self._lock:
            self._containers_left[left.name] = left
        if left.cgroup is not None:  # nothing of it may go on running meanwhile
            sent = procs.JobProcs(None, None, left.cgroup).signal(signal.SIGKILL)
            then = "SIGKILL to the %s left in its cgroup" % count(sent, "process", "processes")
        else:
            then = "its cgroup is not known, so only its runtime reaches it"
        self.failures.failed(("container", left.name), "%s: its container %s could not be "
                             "removed; %s (%s); tried again each pass" % (
                                 left.who, left.name, then, why), same=why)
        return "%sits container %s could not be removed yet (%s); tried again each pass" % (
            client + "; " if killed else "", left.name, why)

    def _taken_again(self, job: Job) -> None:
        """A job that never ran, started again (the caller holds the lock, and no end of its
        container is going on): its container's name is its own again, no longer left."""
        if job.container and self._containers_left.pop(job.container, None) is not None:
            self.failures.worked(("container", job.container), "job j%d: its container %s is "
                                 "its own again (launched anew), no longer removed as left" % (
                                     job.id, job.container))

    def _removed(self, name: str) -> None:
        """The end of the container ``name`` is over: a launch of its job may go on."""
        with self._lock:
            self._removing.discard(name)
            self._settled.notify_all()

    def remove_left_containers(self) -> None:
        """The containers of ended jobs that could not be removed yet: tried again, each but
        one whose job a launch has taken again meanwhile (which waits for a removal begun),
        up to the first that fails again, which goes last: the rest wait for the next pass (a
        runtime that hangs costs each command its whole timeout, and the pass has running jobs
        to kill and cap)."""
        with self._lock:
            left = list(self._containers_left.values())
        for container in left:
            with self._lock:
                if self._containers_left.get(container.name) is not container:
                    continue
                self._removing.add(container.name)
            try:
                said = ("container", container.name) in self.failures.failing("container")
                done = self.end_container(container)
                with self._lock:  # (before any launch of its job may take it)
                    failed = self._containers_left.pop(container.name, None)
                    if failed is not None:
                        self._containers_left[container.name] = failed
            finally:
                self._removed(container.name)
            if failed is not None:
                return
            if not said:  # (else said)
                log.info("%s: %s", container.who, done)

    def find_left_containers(self) -> bool:
        """The containers named as this agent names its jobs' (and the runtime clients that
        would make one) whose job is not active: left by a daemon that stopped before it removed
        them, or whose removal failed. Each is removed as ``end_container`` does. The runtimes
        are asked before the table, so no job launched meanwhile is taken for ended. False
        where a runtime could not list them (said; asked again at the next pass)."""
        prefix = "fractui-%s-j" % self.paths.digest
        found: Dict[str, str] = {}  # name -> runtime kind
        listed = True
        for kind, version in self.runtimes.found.items():
            how = self.runtimes.get(kind)
            if not version or not how.has_container:
                continue
            names, why = how.containers(prefix)
            if why is not None:
                self.failures.failed(("containers", kind), "cannot list the containers left by "
                                     "ended jobs: %s; asked again each pass" % why)
                listed = False
                continue
            self.failures.worked(("containers", kind), "the containers of %s are listed" % kind)
            found.update((name, kind) for name in names + list(how.clients(prefix).values()))
        with self._lock:
            active = {j.container for j in self.store.active()}
            for name, kind in found.items():
                if name in active or name in self._containers_left:
                    continue
                ref = name[len(prefix) - 1:]  # j<id>
                job = self.store.get(int(ref[1:])) if re.fullmatch("j[0-9]{1,18}", ref) else None
                self._containers_left[name] = LeftContainer(
                    name, kind, job.container_cgroup if job else None,
                    "ended job %s" % ref if job else "job %s (no longer in the table)" % ref)
                log.warning("%s: its container %s was left running or made; removing it",
                            self._containers_left[name].who, name)
        return listed

    def _job_env(self, job: Job, torch_fraction: bool,
                 driver_limit: bool) -> Tuple[Dict[str, str], List[str]]:
        """The job's own environment (its runtime adds the host's base for a bare job) and the
        cap layers it got."""
        env: Dict[str, str] = {}
        if job.image is None:
            env.update(self.extra_job_env)
        elif self.sim_state:  # a container has its own code: only the simulated host's state
            env["FRACTUI_SIM_STATE"] = self.sim_state
        env.update(job.env)
        env["FRACTUI_JOB_ID"] = "j%d" % job.id
        if job.instance is not None:
            env["CUDA_VISIBLE_DEVICES"] = job.instance
            return env, ["mig"]
        refused = caps.refused_now(self.cap_probe.layers, self.settings.caps)
        for layer, why in refused.items():  # since the probe: not set, nor mounted in a container
            log.warning("job j%d: not capped by %s: %s", job.id, layer, why)
        layers = [layer for layer in self.cap_probe.layers if layer not in refused]
        gpu_memory = min(self.gpus.call_nvml(lambda: self.gpus.backend.gpu(i)).memory_mib
                         for i in job.gpus)
        env.update(caps.share_env(layers, self.settings.caps, job.gpu_uuids, job.memory_mib,
                                  gpu_memory, torch_fraction))
        return env, caps.applied_layers(layers, torch_fraction, driver_limit)

    def _container_shares(self, job: Job, applied: List[str],
                          env: Dict[str, str]) -> Tuple[List[str], List[str]]:
        """What of the host a container job needs for its GPU and its caps to work as a bare
        job's, mounted at the same paths: the simulated GPUs' state, the MPS daemon's pipes
        (its directory in ``env`` too), the HAMi-core library (read-only). (rw, ro) paths."""
        if job.image is None:
            return [], []
        shared = [os.path.dirname(self.sim_state)] if self.sim_state else []
        if "mps" in applied:
            env["CUDA_MPS_PIPE_DIRECTORY"] = caps.mps_pipe_dir()
            shared.append(env["CUDA_MPS_PIPE_DIRECTORY"])
        read_only = [self.settings.caps.hami_core_lib] if "hami" in applied and \
            self.settings.caps.hami_core_lib else []
        return shared, read_only

    def _spawn_shim(self, job: Job, folder: JobFolder) -> Optional[Dict[str, Any]]:
        read_fd, write_fd = os.pipe()
        shim_log = open_private(folder.named("shim.log"), os.O_WRONLY | os.O_CREAT |
                                os.O_APPEND, "shim log", dir_fd=folder.fd)
        try:  # (the shim opens its folder as this one is opened: ``JobFolder.open``)
            shim = subprocess.Popen(
                agent_command() + ["shim", folder.path, str(write_fd)],
                pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=shim_log,
                stderr=subprocess.STDOUT, start_new_session=True, cwd="/",
                env=agent_env(os.environ))
        finally:
            os.close(write_fd)
            os.close(shim_log)
        with self._lock:
            self._shims[job.id] = shim
        try:
            line = _read_line(read_fd, START_TIMEOUT_S)
        finally:
            os.close(read_fd)
        return json.loads(line) if line else self._wait_started(job, shim)

    def _wait_started(self, job: Job,
                      shim: Optional[subprocess.Popen] = None) -> Optional[Dict[str, Any]]:
        """What a shim recorded about the start, waiting a while for one still starting; None
        if it is still under way after that, or at once where ``shim`` (the one this launch
        started) ended without claiming the job and the daemon's own claim cannot be written
        (a full disk): no claim can come any more, and the wait would hold the launch for
        nothing but room freed meanwhile."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            # before the reads: whatever an ended shim wrote is seen by them
            ended = shim is not None and shim.poll() is not None
            failed = self.read_job_file(job, "exit.json")
            if failed is not None and "error" in failed:
                return failed
            started = self.read_job_file(job, "started.json")
            if started is not None:
                return started
            if not shim_alive(self.job_dir(job)):
                fenced = self._fence(job)  # a shim that gave its claim up (a full disk), or
                if fenced:  # one not there yet: fenced off either way, so nothing runs
                    why = self._unclaimed_why(job)
                    with self._lock:
                        self.store.update(job, state="exited", exit_code=None, reason=why,
                                          ended_at=time.time(), kill_at=None)
                    raise RpcError(rpc.HOST_FAILED, "job j%d: %s" % (job.id, why))
                if fenced is False:
                    return {"lost": self.lost_start(job)}
                if ended:
                    log.warning("job j%d: its shim ended without claiming it, and its start "
                                "cannot be fenced off now; the watchdog follows it", job.id)
                    with self._lock:
                        self._unclaimed.add(job.id)
                    return None
            if time.monotonic() > deadline:
                log.warning("job j%d: still starting after %.0f s; the watchdog follows it",
                            job.id, START_TIMEOUT_S)
                return None
            time.sleep(0.02)

    def _unclaimed_why(self, job: Job) -> str:
        return "its shim could not claim the job (a full disk?), so nothing ran (see %s); " \
            "launching the same key again starts it" % os.path.join(self.job_dir(job),
                                                                    "shim.log")

    def _never_started_why(self, job: Job) -> str:
        """Why a start the watchdog ends as never started was not (under the lock): its launch
        saw its shim end without claiming it, or (not seen by this daemon) the agent stopped
        mid-launch."""
        if job.id in self._unclaimed:
            return "never started: " + self._unclaimed_why(job)
        return "never started: the agent stopped while launching it, before its program " \
            "ran; nothing ran (launching the same key again starts it)"

    def lost_start(self, job: Job) -> str:
        """Why a job whose shim died before anything recorded its start (its pid) is lost. A
        container job's container is ended first, by its name (its runtime's client, whose
        pid nothing holds, may be making it still), and the words say what was found: a record
        of the start found damaged is said, not taken for none written."""
        damaged = self.damaged(job, "started.json")
        why = "its shim %s; whether it ran cannot be known (see %s)" % (
            "ended before it recorded starting the job" if damaged is None else
            "ended, and its record of the job's start (started.json) is damaged (%s)" % damaged,
            os.path.join(self.job_dir(job), "shim.log"))
        if not job.container:
            return why
        return "%s; %s" % (why, self.end_container(LeftContainer(
            job.container, job.runtime, job.container_cgroup, "job j%d" % job.id)))

    # -- stopping --

    def stop(self, job: Job, reason: str, grace_s: float, by_watchdog: bool = False) -> Job:
        """SIGTERM to every process of the job now, SIGKILL after the grace (kept in the table,
        so a daemon restart does not forget it; by the monotonic clock, so setting the wall
        clock neither cuts the grace short nor makes it endless). A stop the table cannot take
        (StoreError: a full state disk) is refused, as nothing is answered that is not
        recorded; the watchdog's own (``by_watchdog``: a job over its cap, found again by any
        daemon that measures it) is carried out all the same and held until it is recorded."""
        with self._lock:
            fresh = self._with_held_stop(self.store.get(job.id) or job)
            if not fresh.active:
                return fresh
            changes: Dict[str, Any] = {}
            if fresh.stop_reason is None:
                changes["stop_reason"] = reason
            kill_at = time.monotonic() + grace_s
            if fresh.kill_at is None or kill_at < fresh.kill_at:
                changes["kill_at"] = kill_at
            # with the stop held for it, if any: a request is answered once that is recorded too
            held = {**self._held_stops.get(fresh.id, {}), **changes}
            if held:
                try:
                    self.store.update(fresh, **held)
                    self._held_stops.pop(fresh.id, None)
                except StoreError as err:
                    if not by_watchdog:
                        raise
                    log.warning("job j%d: its stop cannot be recorded yet (%s); it is carried "
                                "out all the same, and recorded once there is room", fresh.id,
                                err)
                    self._held_stops[fresh.id] = held
                    fresh = self._with_held_stop(fresh)
        if fresh.state == "running":
            self._term_once(fresh)
        return fresh

    def _term_once(self, job: Job) -> None:
        """The stop's SIGTERM to ``job``, unless this daemon sent it already. One that reached
        nothing (its runtime refused it) is not sent: a stop asked again sends it; one held
        for a container not made yet is sent by the watchdog (``send_unsent``)."""
        with self._lock:
            if job.id in self._termed:
                return
            self._termed.add(job.id)
        sent = False
        try:
            sent = self.signal(job, signal.SIGTERM)
        finally:
            if not sent:
                with self._lock:
                    self._termed.discard(job.id)

    def signal(self, job: Job, sig: int, say: bool = True) -> bool:
        """``sig`` to every process of the job; to a container through its runtime (its init
        passes it on, and the runtime's client ends with the job's own exit status), and a
        SIGKILL to the container's processes and the client (found without the runtime; the
        watchdog sends the runtime's own SIGKILL itself, once it works: ``kill_container``).
        How many processes it went to is said in the log where ``say``; whether there were
        any (a container's: whether its runtime took it, or holds it until the container is
        made)."""
        if job.container:
            if sig != signal.SIGKILL:
                why = self.kill_container(job, sig)
                if why is not None:
                    self._signal_failed(job, why)
                log.info("job j%d: %s to container %s", job.id, signal_name(sig), job.container)
                with self._lock:
                    return why is None or job.id in self._unsent
        sent = job.procs().signal(sig)
        if sent and say:
            log.info("job j%d: %s to %s", job.id, signal_name(sig),
                     count(sent, "process", "processes"))
        return sent > 0

    def kill_container(self, job: Job, sig: int) -> Optional[str]:
        """``sig`` to the job's container through its runtime: what failed and why, or None.
        A container the runtime says it has not is gone (None: nothing is left to signal) only
        once the runtime's client, the job's first process, has ended: while it runs it may
        still be pulling the image or making the container, which a kill counted as done would
        leave running (docs/decisions.md, "Container jobs")."""
        how = self.runtimes.get(job.runtime)
        why = how.signal(job.container or "", sig)
        if why is not None and how.not_there(why) and job.procs().leader_alive():
            if sig != signal.SIGKILL:  # (the watchdog sends SIGKILL at each pass itself)
                with self._lock:
                    self._unsent[job.id] = sig
            return "%s; its runtime's client runs on, so the container may yet be made%s" % (
                why, "" if sig == signal.SIGKILL else ": sent again once it is")
        if why is None or how.not_there(why):  # taken, or gone: no container of its name
            with self._lock:  # can be made any more
                self._unsent.pop(job.id, None)
            return None
        return why

    def send_unsent(self, job: Job) -> None:
        """The signal a stop sent to the job's container before it was made (stopped while it
        was starting, or while its runtime pulled the image; its stop adopted by a restarted
        daemon), sent again at each watchdog pass until the container takes it: else the job
        has only the SIGKILL at the end of its grace, and no chance to end cleanly."""
        with self._lock:
            sig = self._unsent.get(job.id)
        if sig is None:
            return
        if not job.procs().leader_alive():  # its runtime's client ended: ending, watched
            with self._lock:
                self._unsent.pop(job.id, None)
            return
        why = self.kill_container(job, sig)
        if why is None:
            self.failures.worked((UNSENT, job.id), "job j%d: %s to container %s, made after "
                                 "its stop," % (job.id, signal_name(sig), job.container))
        else:
            self._signal_failed(job, why)

    def _signal_failed(self, job: Job, why: str) -> None:
        """A signal the runtime did not take: said once while it is sent again (its container
        not made yet, or the runtime failing since: ``send_unsent``), else once."""
        with self._lock:
            unsent = job.id in self._unsent
        if unsent:
            self.failures.failed((UNSENT, job.id), "job j%d: %s" % (job.id, why))
        else:
            log.warning("job j%d: %s", job.id, why)

    def never_started(self, job: Job) -> Optional[bool]:
        """End a start no shim has claimed as never started (the daemon stopped mid-launch, or
        the launch saw its shim end unclaimed): the daemon's own claim, so no shim still on its
        way can start it, and the record, its words chosen then, are made in one step under
        the lock, so a launch of its key either finds it ended (and starts it again) or is
        starting it already (None: it is left to that launch). False if a shim has claimed
        it."""
        with self._lock:
            fresh = self.store.get(job.id)
            if fresh is None or fresh.state != "starting" or job.id in self._launching:
                return None
            reason = self._never_started_why(job)
            fenced = self._fence(job)
            if not fenced:
                return fenced
            self.store.update(fresh, state="exited", exit_code=None, reason=reason,
                              ended_at=time.time(), kill_at=None)
            if fresh.container:  # a launch of its key, from now on, waits for its end
                self._removing.add(fresh.container)
        try:
            self._ended(fresh)
        finally:
            if fresh.container:
                self._removed(fresh.container)
        return True

    def _fence(self, job: Job) -> Optional[bool]:
        """The daemon's own claim of a job no shim has claimed, so that no shim still on its
        way can start it: True once made (or made before, or where the launch never made the
        job's directory), False if a shim has claimed it, None if it cannot be written now (a
        full disk: it is taken back, and nothing is decided)."""
        with self.folder(job) as folder:
            if folder is None:
                return True  # the launch never made its directory: no shim can start it
            return self._fence_in(job, folder)

    def _fence_in(self, job: Job, folder: JobFolder) -> Optional[bool]:
        """``_fence`` in the job's folder, opened."""
        try:
            fd = os.open("shim.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW |
                         os.O_CLOEXEC, 0o600, dir_fd=folder.fd)
        except FileExistsError:  # a shim's, or the daemon's from before
            return read_private(folder.named("shim.claim"), "shim claim",
                                dir_fd=folder.fd) == FENCE
        except FileNotFoundError:
            return True  # its directory removed since: no shim can start it
        try:
            os.write(fd, FENCE)
        except OSError as err:  # an empty claim would read as a shim's: the job lost for good
            self.failures.failed("fence j%d" % job.id, "job j%d: cannot fence off its start "
                                 "(%s); tried again later" % (job.id, err))
            os.close(fd)
            os.unlink("shim.claim", dir_fd=folder.fd)
            return None
        os.close(fd)
        self.failures.worked("fence j%d" % job.id, "job j%d: its start is fenced off" % job.id)
        return True

    def _unfence(self, job: Job) -> None:
        """Before a never-started job is launched again: take back the daemon's claim."""
        with self.folder(job) as folder:
            if folder is not None and read_private(folder.named("shim.claim"), "shim claim",
                                                   dir_fd=folder.fd) == FENCE:
                os.unlink("shim.claim", dir_fd=folder.fd)

    def transition(self, job: Job, states: Tuple[str, ...], **changes: Any) -> bool:
        """Change a job that is (still) in one of ``states`` and no launch is starting."""
        with self._lock:
            fresh = self.store.get(job.id)
            if fresh is None or fresh.state not in states or job.id in self._launching:
                return False
            self.store.update(fresh, **changes)
        for name, value in changes.items():  # the caller's copy, in step with the table
            setattr(job, name, value)
        return True

    def finish(self, job: Job, by_launch: bool = False, **changes: Any) -> None:
        """Record a job's end once (``by_launch``: for the launch that is starting it), then
        give back what it held and tell the subscribers."""
        changes.setdefault("ended_at", time.time())
        changes["kill_at"] = None
        if by_launch:
            with self._lock:
                self.store.update(job, **changes)
        elif not self.transition(job, ("starting", "running"), **changes):
            return
        self._ended(job)

    def _ended(self, job: Job) -> None:
        with self._lock:
            self._held_stops.pop(job.id, None)  # its end, recorded, says why it stopped
            self._unsent.pop(job.id, None)
            self._termed.discard(job.id)
            self._unclaimed.discard(job.id)  # (its words are recorded)
        self.failures.worked((UNSENT, job.id), "job j%d ended before its container took the "
                             "signal of its stop" % job.id)
        self._unfound_ended(job)
        self.outputs.release(job.id)
        self._release(job)
        self.notify(job)

    def _unfound_ended(self, job: Job) -> None:
        """A job's end clears that its runtime cannot say where its container is: no look
        asks any more, so none would say it mended."""
        self.failures.worked((UNFOUND, job.id), "job j%d ended while its runtime could not "
                             "say where its container is" % job.id)

    def watched(self) -> List[Job]:
        """The active jobs no launch of this daemon is starting, in one look at the table and
        the launches (the watchdog leaves those to their launch), each with the stop held for
        it, which is written first where the table takes it now."""
        with self._lock:
            jobs = [j for j in self.store.active() if j.id not in self._launching]
            for job in jobs:
                held = self._held_stops.get(job.id)
                if held is None:
                    continue
                try:
                    self.store.update(job, **held)
                except StoreError:
                    self._with_held_stop(job)
                    continue
                del self._held_stops[job.id]
                log.info("job j%d: its stop is recorded", job.id)
            return jobs

    def _with_held_stop(self, job: Job) -> Job:
        """``job`` (as the table has it) with the stop this daemon holds for it, if any."""
        for name, value in self._held_stops.get(job.id, {}).items():
            setattr(job, name, value)
        return job

    def reap_shims(self) -> Set[int]:
        """Reap the shims this daemon started that ended; the jobs whose shim still runs."""
        with self._lock:
            for job_id, shim in list(self._shims.items()):
                if shim.poll() is not None:
                    del self._shims[job_id]
            return set(self._shims)

    def remove_left_cgroups(self) -> None:
        """Cgroups of ended jobs that still had processes leaving them when the job ended."""
        with self._lock:
            left = set(self._cgroups_left)
        for path in left:
            if self.cgroups.remove(path):
                with self._lock:
                    self._cgroups_left.discard(path)

    def job_pids(self) -> List[int]:
        """Every process of every active job."""
        jobs = self.store.active()
        for job in jobs:
            if job.state == "running":
                self.find_container(job)
        table = procs.scan() if any(j.procs().cgroup is None for j in jobs) else None
        return [pid for j in jobs for pid in j.procs().pids(table)]

    def owners(self, pids: List[int]) -> Dict[int, int]:
        """Which job each of ``pids`` (processes NVML lists) is of, where it is one's: matched
        as the watchdog matches them, reading those processes once, not every process of the
        host. The snapshot says so, so that the scheduler counts the rest as used by others.
        A container not found yet is left to the watchdog, which looks for it each pass (the
        snapshot, taken each tick, must not wait on a runtime)."""
        jobs = self.store.active()
        if not jobs:
            return {}
        seen = procs.Seen.read(pids)
        return {pid: j.id for j in jobs for pid in j.procs().members(seen)}

    # -- adoption, queries, retention --

    def adopt(self) -> List[Job]:
        """On daemon start: hold the output of every running job; remove the cgroups of jobs
        that ended while no daemon ran. The watchdog looks at each job on its first pass.
        A running container job stopped before its container was found (its stop's SIGTERM
        may have found none: a daemon before this one held it in memory only) is sent its
        SIGTERM once the container takes it (``send_unsent``). One whose container was found
        is sent no second (it most likely took the first): a program may take a second SIGTERM
        as its cue to quit at once, its cleanup cut short."""
        adopted = [job for job in self.store.active() if not self.end_if_unread(job)]
        for job in adopted:
            if job.state == "running":
                self.hold_output(job, self.made_pipe(job))
                if job.container and job.container_cgroup is None and \
                        job.stop_reason is not None:
                    with self._lock:
                        self._unsent[job.id] = signal.SIGTERM
                    log.info("job j%d: stopped before its container %s was found; its stop's "
                             "SIGTERM is sent to it (again) once it is there", job.id,
                             job.container)
        for path in self.cgroups.leftovers(j.id for j in adopted):
            procs.JobProcs(None, None, path).signal(signal.SIGKILL)
            if not self.cgroups.remove(path):
                with self._lock:
                    self._cgroups_left.add(path)
        return adopted

    def end_if_unread(self, job: Job) -> bool:
        """Whether ``job`` (active) is one whose directory is left unread, judged again now (a
        job may change its own folder as it runs: ``AgentPaths.unread_job_dir``; what is in it
        too where it was left unread, so that one mended is read again), and so is not
        watched. Such a job is ended now, as lost: its end cannot be told without that
        folder (its shim writes it there), and left running unwatched it would hold its GPU
        slice for good. Its processes are killed first (a container's by its name, as it
        ends), so the slice it gives back is not used twice. One that has none to be found
        is held instead (``_hold_unfound``). A job that ended already keeps its record; its
        directory, unread too, goes with it when it is pruned."""
        why = self.paths.unread_job_dir("j%d" % job.id, entries=job.id in self.unread)
        if why is None:
            unread = self.unread.pop(job.id, None) is not None
            # (held, its reason in its record, by this daemon or one before it)
            if job.state == "starting" and job.reason is not None and self._unfound(job) \
                    and not os.path.lexists(self._dir_of(job)):
                self._end_gone(job)
                return True
            if unread:
                self.failures.worked((UNREAD, job.id), "job j%d: its directory is read again, "
                                     "and the job watched" % job.id)
            return False
        self.unread[job.id] = why
        if self._unfound(job):
            self._hold_unfound(job, why)
            return True
        log.error("job j%d: %s; the job is ended as lost", job.id, why)
        job.procs().signal(signal.SIGKILL)
        self.finish(job, state="lost", reason="%s; so it cannot be watched, and its processes "
                    "were killed" % why)
        return True

    @staticmethod
    def _unfound(job: Job) -> bool:
        """Whether none of ``job``'s processes can be found but through its folder: its start
        was never recorded (no pid) and it has no cgroup nor container."""
        return job.pid is None and not job.cgroup and not job.container

    def _end_gone(self, job: Job) -> None:
        """A job held for its folder (``_hold_unfound``) whose whole folder was removed (by an
        admin, or by the job): nothing can mend it now, and nothing tells whether a process of
        it runs, so it is ended lost, its slice given back, its words saying so, never that it
        did not start (docs/decisions.md)."""
        reason = ("its directory %s was removed while the agent held it unread, and its start "
                  "was never recorded, so no process of it can be found: one may still run, "
                  "unwatched and not signalled, on the GPU slice it gives back"
                  % self._dir_of(job))
        self.failures.worked((UNREAD, job.id), "job j%d: its directory is gone" % job.id)
        log.error("job j%d: %s; the job is ended as lost", job.id, reason)
        self.finish(job, state="lost", reason=reason)

    def _hold_unfound(self, job: Job, why: str) -> None:
        """A job left unread whose start was never recorded (its daemon died first) and that
        has no cgroup: its pid is in that folder alone, and nothing else names its processes
        that the job could not change (its session, its environment and its command line are
        its own), so one may still run. It stays starting, its slice booked, its reason
        saying why, until its folder is mended (judged again at each watchdog pass): then it
        is read, and adopted or ended as any start no launch follows (docs/decisions.md)."""
        reason = "%s; its start was never recorded, so no process of it can be found (its pid " \
            "is in that folder alone, and it has no cgroup): one may still run, so it holds its " \
            "GPU slice until that folder is mended (what is named above; then the job is read " \
            "again, and adopted or ended)" % why
        if job.reason != reason:
            self.transition(job, ("starting",), reason=reason)
        self.failures.failed((UNREAD, job.id), "job j%d: %s" % (job.id, reason),
                             level=logging.ERROR)

    def prune(self, cutoff: float) -> int:
        """Forget the jobs that ended before ``cutoff``, and remove what of ``jobs/`` is no
        recorded job's (``pruning``): their folders, one left by an earlier prune, and one a job
        set aside. How many jobs were forgotten."""
        with self._lock:
            gone = self.store.finished_before(cutoff)
            for job in gone:
                self.store.delete(job)
        for job in gone:
            self.unread.pop(job.id, None)
        pruning.prune_jobs_dir(self.paths.jobs_dir, self.store.ids, cutoff, self.failures)
        return len(gone)

    def find(self, ref: str, key: Optional[str] = None) -> Job:
        """The job of that id; with ``key``, only if it is the job of that key: ids count
        from j1 again after the state dir was wiped, so a client that kept an id would
        otherwise read or stop another job (JOB_KEY_MISMATCH)."""
        job_id = ref[1:] if ref.startswith("j") else ref
        job = self.store.get(int(job_id)) if re.fullmatch("[0-9]{1,18}", job_id) else None
        if job is None:
            raise RpcError(rpc.JOB_NOT_FOUND, "no job %r on this host" % ref)
        if key is not None and job.key != key:
            raise RpcError(rpc.JOB_KEY_MISMATCH, "the job of key %r is gone from this host's "
                           "agent (its state dir was likely wiped or lost): j%d there is another "
                           "job now, left as it is" % (key, job.id),
                           {"job": "j%d" % job.id, "key": job.key})
        return job

    @contextmanager
    def logs(self, job: Job) -> Iterator[Tuple[List[str], Optional[int]]]:
        """The job's rotated log and its log, those there, and its folder's descriptor to open
        them in (``folder``; None where it is not there)."""
        with self.folder(job) as folder:
            if folder is None:
                yield [], None
                return
            yield [folder.named(n) for n in (output.LOG_NAME + ".1", output.LOG_NAME)
                   if folder.has(n)], folder.fd

    def last_line(self, job: Job) -> Optional[str]:
        """The last line of the job's output, as how it ended carries it (remote_agent/jobs/
        last_line.py), from one bounded read of its log's end; None where it printed none, or
        its log cannot be read (said: its end is recorded all the same)."""
        try:  # (a byte more than is used: whether the log is all there, one of exactly that)
            with self.logs(job) as (paths, dir_fd):
                data, _ = log_bytes(paths, last_line.READ_BYTES + 1, dir_fd)
        except (OSError, RpcError, UnsafePath) as err:
            log.warning("job j%d: the last line of its output is not read: %s", job.id, err)
            return None
        return last_line.last_line(data[-last_line.READ_BYTES:],
                                   whole=len(data) <= last_line.READ_BYTES)

    def made_pipe(self, job: Job) -> Optional[List[int]]:
        """Which FIFO the job's shim made, as it recorded it in started.json (None where there
        is no such record: an older shim's, or none yet)."""
        started = self.read_job_file(job, "started.json")
        return started.get("pipe") if started else None

    def hold_output(self, job: Job, made: Optional[List[int]]) -> None:
        """Hold the job's output pipe (``Outputs.hold``; ``made``: which FIFO its shim
        recorded). One refused (another FIFO, a symlink in its place) is said, and the job goes
        on with its pipe unheld: a launch is answered, a daemon starts, every other job is
        held; the watchdog, taking over from a dead shim, meets it again (said once)."""
        try:
            self.outputs.hold(job.id, made)
        except UnsafePath as err:
            log.error("job j%d: its output pipe is not held: %s", job.id, err)

    def read_job_file(self, job: Job, name: str) -> Optional[Dict[str, Any]]:
        """One of the job's files its shim or the watchdog wrote (JOB_FILES), or None where
        there is none; a damaged one is set aside and read as none (kept.read_json), so the
        job is watched on as if it had never been written."""
        with self.folder(job) as folder:
            if folder is None:
                return None
            return read_json(folder.named(name), "job j%d's file" % job.id, JOB_FILES[name],
                             "job j%d is watched on as if it were not there" % job.id,
                             folder.fd)

    def write_job_file(self, job: Job, name: str, data: Dict[str, Any]) -> None:
        """One of the job's files the watchdog writes (``OUTLIVED``), durably, in its folder
        (``folder``: never through its name)."""
        with self.folder(job) as folder:
            if folder is None:
                raise FileNotFoundError(errno.ENOENT, "no such directory", self.job_dir(job))
            write_private(folder.named(name), json.dumps(data).encode(), durable=True,
                          dir_fd=folder.fd)

    def _has(self, job: Job, name: str) -> bool:
        """Whether the job's folder holds ``name`` (a symlink there does)."""
        with self.folder(job) as folder:
            return folder is not None and folder.has(name)

    def damaged(self, job: Job, name: str) -> Optional[str]:
        """Where the job's file ``name``, read as none, lies damaged, in words: set aside (its
        reader said so once), or left where it could not be; None where it is not there. A job
        ended on what it could not read says why, not that the file was never written."""
        with self.folder(job) as folder:
            for found, where in ((name + DAMAGED, "set aside as %s"), (name, "left at %s")):
                if folder is not None and folder.has(found):
                    return where % folder.named(found)
        return None


def log_bytes(paths: List[str], last: Optional[int] = None,
              dir_fd: Optional[int] = None) -> Tuple[bytes, int]:
    """The rotated and current log, one after the other (only their last ``last`` bytes where
    given: what is not needed is not read), and the current log's size (where the bytes end,
    in the current log); a log that is not the agent's own (a symlink put in its place) is
    refused, not read."""
    data = b""
    size: Optional[int] = None
    for path in reversed(paths):  # the current log first: its size is the offset
        chunk, whole = _log_end(path, None if last is None else last - len(data), dir_fd)
        size = whole if size is None else size
        data = chunk + data
        if last is not None and len(data) >= last:
            break
    return data, size or 0


def _log_end(path: str, last: Optional[int], dir_fd: Optional[int]) -> Tuple[bytes, int]:
    """A log's last ``last`` bytes (all of it with None) and its size; nothing if it is gone.
    ``dir_fd``: its folder, opened already (``open_private``'s)."""
    try:
        fd = output.open_log(path, dir_fd)
    except FileNotFoundError:
        return b"", 0
    except UnsafePath as err:
        raise RpcError(rpc.NOT_PERMITTED, str(err)) from err
    try:
        size = os.fstat(fd).st_size
        take = size if last is None else min(last, size)
        return os.pread(fd, take, size - take), size
    finally:
        os.close(fd)


def tail_lines(data: bytes, lines: int) -> List[str]:
    """The last ``lines`` lines of a log's bytes."""
    return data.decode("utf-8", errors="replace").splitlines()[-lines:] if lines else []


def _exec_candidates(program: str, path: str, cwd: str) -> List[str]:
    """Where execvp looks for ``program``, in its order."""
    if "/" in program:
        return [os.path.join(cwd, program)]
    return [os.path.join(os.path.join(cwd, d) if d else cwd, program)
            for d in path.split(os.pathsep)]


def _refused(path: str, kind: int) -> Optional[int]:
    """The errno of why ``path`` is not a file of ``kind`` (a ``stat.S_IFMT``) this process
    may search or run: the error a look at it met (a symlink loop, a name too long, a
    component no directory, a search refused), else the one chdir or exec would give; None
    where it is one. The job's words come from it, never a fixed text: ``isdir`` and
    ``exists`` swallow every error, which read as "No such file or directory"."""
    try:
        st = os.stat(path)
    except OSError as err:
        return err.errno
    if stat.S_IFMT(st.st_mode) != kind:  # (exec of a directory or a FIFO: EACCES)
        return errno.ENOTDIR if kind == stat.S_IFDIR else errno.EACCES
    return None if os.access(path, os.X_OK) else errno.EACCES


def _program_errors(candidates: List[str]) -> List[int]:
    """Why exec would find the program at none of its ``candidates``, each's errno in their
    order (``_refused``); none where one is a program this process may run."""
    errs = []
    for candidate in candidates:
        err = _refused(candidate, stat.S_IFREG)
        if err is None:
            return []
        errs.append(err)
    return errs


def _host_trouble(step: str, errs: List[int]) -> None:
    """HOST_FAILED where a job's cwd or program was not found because a look at it failed
    for the host's trouble (one of ``errs``, as ``_refused`` met them, in ``shim.HOST_ERRNOS``:
    a network or FUSE mount whose server is gone, an I/O error), as its shim would say it:
    nothing is recorded, and the admin starts it on another host rather than failing it for
    good in words that are not true ("No such file or directory")."""
    err = next((e for e in errs if e in HOST_ERRNOS), None)
    if err is not None:
        why = "cannot %s: %s" % (step, os.strerror(err))
        raise RpcError(rpc.HOST_FAILED, "the job cannot start on this host: %s" % why,
                       {"reason": why})


def _kill(pid: int) -> bool:
    """SIGKILL to ``pid``; False where it had ended already."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def shim_alive(job_dir: str) -> bool:
    """A live shim holds its lock for life; if we can take it, the shim is gone. The lock is
    opened in the folder opened once, no link followed (``JobFolder``)."""
    try:
        folder = JobFolder.open(job_dir)
    except FileNotFoundError:
        return False
    try:
        fd = open_private(folder.named("shim.lock"), os.O_RDONLY, "shim lock",
                          dir_fd=folder.fd)
    except FileNotFoundError:
        return False
    finally:
        os.close(folder.fd)
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
    deadline = time.monotonic() + timeout_s
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode().strip()


def signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return str(num)
