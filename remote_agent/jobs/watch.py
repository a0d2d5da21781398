"""The watchdog: a thread of its own that looks at every job about twice a second.

It records how each job ended, watches a job whose shim died (its processes, its output), adopts
a start that no launch is following (the daemon restarted mid-launch), stops a share job over its
GPU memory cap, samples what each running job uses of its GPUs (remote_agent/jobs/usage.py),
turns a stop past its grace into SIGKILL, and prunes finished jobs. It takes the
supervisor's lock only for table transitions, so no launch — however slow its MIG change or its
process start — holds it up.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from remote_agent.daemon.trust import UnsafePath
from remote_agent.gpu.backend import MIG_UTIL_NOTE, NvmlCallError
from remote_agent.jobs import procs, usage
from remote_agent.jobs.store import Job
from remote_agent.jobs.supervisor import OUTLIVED, Supervisor, shim_alive, signal_name
from remote_agent.rpc.jsonrpc import RpcError

log = logging.getLogger("remote_agent.jobs")

RUNTIME_KILL = "runtime kill"  # a job's runtime's SIGKILL, as a step that fails: (it, job id)
OUTPUT = "output taken over"  # a dead shim's job's output pipe, refused: (it, job id)
TICK_S = 0.5  # every job looked at, and NVML polled for the caps, at least this often


class Watchdog:
    def __init__(self, sup: Supervisor):
        self.sup = sup
        self._last_prune: Optional[float] = None  # monotonic time of the last prune
        self.failures = sup.failures  # the steps failing now: each said once, not each pass
        self._util_seen: Dict[int, int] = {}  # GPU -> its newest utilisation sample read (µs)
        self._next_sample = 0.0  # monotonic time of the next usage sample
        self._killed: Set[int] = set()  # jobs past their grace whose SIGKILL was said
        self._runtime_killed: Set[int] = set()  # ... whose container its runtime killed
        self._outlived: Set[int] = set()  # jobs seen running after their shim died (OUTLIVED)
        self._containers_listed = False  # whether ended jobs' containers were looked for

    def run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            started = time.monotonic()
            self.failures.step("watchdog pass", self.tick)  # one bad pass ends no supervision
            stopping.wait(max(0.05, TICK_S - (time.monotonic() - started)))

    def tick(self) -> None:
        sup = self.sup
        shims = sup.reap_shims()
        jobs = sup.watched()
        self._outlived &= {j.id for j in jobs}
        for name in self.failures.failing(OUTPUT):  # (OUTPUT, job id)
            if name[1] not in self._outlived:
                self.failures.worked(name, "job j%d ended, its output pipe never taken over "
                                     "from its dead shim" % name[1])
        for job in jobs:  # a container the launch did not see running yet
            if job.state == "running" and job.container and job.container_cgroup is None:
                self._step("finding job j%d's container" % job.id,
                           lambda: sup.find_container(job))
            if job.state == "running" and job.container:
                self._step("signalling job j%d's container" % job.id,
                           lambda: sup.send_unsent(job))
        for job in jobs:
            self._step("watching job j%d" % job.id, lambda: self._watch(job, job.id in shims))
        running = [j for j in jobs if j.state == "running" and j.pid]
        self._step("caps and usage samples", lambda: self._measure(running))
        ticks = time.monotonic()  # deadlines and intervals: the wall clock may be set
        killing = [j for j in running if j.kill_at is not None and ticks >= j.kill_at]
        episodes = {j.id for j in killing}  # (a job's episode ends when it does)
        self._killed &= episodes
        self._runtime_killed &= episodes
        for name in self.failures.failing(RUNTIME_KILL):  # (RUNTIME_KILL, job id)
            if name[1] not in episodes:
                self.failures.worked(name, "job j%d ended while its runtime's SIGKILL "
                                     "failed" % name[1])
        for job in killing:
            self._step("killing job j%d" % job.id, lambda: self._kill(job))
        if not self._containers_listed:  # once a pass until every runtime has listed them
            self._containers_listed = bool(self._step("finding containers left by ended jobs",
                                                      sup.find_left_containers))
        self._step("removing containers left by ended jobs", sup.remove_left_containers)
        self._step("removing cgroups", sup.remove_left_cgroups)
        if self._last_prune is None or \
                ticks - self._last_prune > min(60.0, sup.settings.retention_s):
            self._last_prune = ticks  # jobs ended before the cutoff: by their wall-clock ends
            self._step("pruning", lambda: sup.prune(time.time() - sup.settings.retention_s))

    def _kill(self, job: Job) -> None:
        """SIGKILL to a job past its grace, at each pass until it has ended, said once: a
        process the signal cannot end yet (stuck in a driver's call) would otherwise be said
        twice a second for as long as it is stuck. A container is killed through its runtime
        too, at each pass until that works once or finds it gone (docs/decisions.md, "Container
        jobs"); its failure is said once, and once more when it works or the job ends."""
        if job.container and job.id not in self._runtime_killed:
            why = self.sup.kill_container(job, signal.SIGKILL)
            if why is None:
                self._runtime_killed.add(job.id)
                self.failures.worked((RUNTIME_KILL, job.id), "job j%d: its runtime's "
                                     "SIGKILL works again (or its container is gone)" % job.id)
            else:
                self.failures.failed((RUNTIME_KILL, job.id), "job j%d: %s; tried again "
                                     "each pass" % (job.id, why))
        if self.sup.signal(job, signal.SIGKILL, say=job.id not in self._killed):
            self._killed.add(job.id)

    def _step(self, what: str, step: Callable[[], Any]) -> Any:
        """One step of a pass. Its failure (a damaged file, a full disk, NVML) keeps no other
        job from being watched, capped or killed, and is said once while it repeats. What the
        step gave back, or None where it failed."""
        return self.failures.step("watchdog: " + what, step)

    def _watch(self, job: Job, shim_runs: bool) -> None:
        """One look at an active job: none at what is in its folder where that is left unread,
        judged again each pass (``Supervisor.end_if_unread``: a job may change its own folder
        as it runs, and is ended then); else whether it ended, or started."""
        if self.sup.end_if_unread(job):
            return
        if job.state == "running":
            self._observe(job, shim_runs)
        else:
            self._resolve_starting(job)

    def _observe(self, job: Job, shim_runs: bool) -> None:
        """Whether a running job ended, and how. ``shim_runs``: its shim is this daemon's child
        and had not ended when the pass began, so nothing is read: the shim writes exit.json as
        it ends, and the next pass reads it (two file looks a job a pass saved, at most one pass
        later)."""
        if shim_runs:
            return
        sup = self.sup
        ended = sup.read_job_file(job, "exit.json")
        if ended is None:
            if shim_alive(sup.job_dir(job)):
                return
            if self._take_over(job):
                log.warning("job j%d: its shim died; the agent now watches its processes itself "
                            "(%s)", job.id, job.cgroup or "session %s" % job.pid)
            if job.procs().leader_alive():
                self._outlived.add(job.id)
                if sup.read_job_file(job, OUTLIVED) is None:  # written until it is there
                    sup.write_job_file(job, OUTLIVED, {"seen_at": time.time()})
                return
            ended = sup.read_job_file(job, "exit.json")  # it may have ended between the looks
            if ended is None:
                job.procs().signal(signal.SIGKILL)  # what it left behind ends with it
                if job.stop_reason is not None:
                    sup.finish(job, state="killed", reason=job.stop_reason)
                else:
                    sup.finish(job, state="lost", reason=self._lost_why(job))
                return
        changes: Dict[str, Any] = {"ended_at": ended.get("ended_at", time.time())}
        if "signal" in ended:
            changes["state"] = "killed"
            changes["reason"] = job.stop_reason or "terminated by signal %s" % signal_name(
                ended["signal"])
        elif job.stop_reason is not None:
            changes.update(state="killed", reason=job.stop_reason, exit_code=ended.get("code"))
        else:
            changes.update(state="exited", exit_code=ended.get("code"))
            if changes["exit_code"]:  # a failure: its last words most often say why
                changes["last_line"] = sup.last_line(job)
        sup.finish(job, **changes)

    def _take_over(self, job: Job) -> bool:
        """``Outputs.take_over`` of a job whose shim died, with the FIFO its shim made. A pipe
        refused (another FIFO, a symlink in its place) is said once while the job runs, and
        the job is watched on all the same: its end is still seen, and recorded."""
        try:
            return self.sup.outputs.take_over(job.id, self.sup.made_pipe(job))
        except UnsafePath as err:
            self.failures.failed((OUTPUT, job.id), "job j%d: its shim died and its output pipe "
                                 "is not taken over: %s; its output is not kept, and a job "
                                 "that writes more than the pipe holds waits for good" % (
                                     job.id, err), level=logging.ERROR, same=str(err))
            return False

    def _lost_why(self, job: Job) -> str:
        """Why a job whose shim died without recording its end is lost, saying only what is
        known: that the shim died before the job ended where this daemon saw the job run on
        after its shim's death; else the job had ended by the time the daemon found the shim
        dead (before or after the shim died: a shim killed between reaping the job and writing
        exit.json, as on a full disk, leaves no trace of which). Where it did record it, in an
        exit.json found damaged, that is what is said."""
        damaged = self.sup.damaged(job, "exit.json")
        if damaged is not None:
            return ("its shim's record of how the job ended (exit.json) is damaged (%s), so its "
                    "exit status cannot be known; all its processes have ended" % damaged)
        if job.id in self._outlived or self.sup.read_job_file(job, OUTLIVED) is not None:
            return ("its shim died before the job ended, so how it ended cannot be known; all "
                    "its processes have ended")
        return ("its shim died before it recorded how the job ended (the job had ended when "
                "the agent found its shim dead), so its exit status cannot be known; all its "
                "processes have ended (see %s)" % os.path.join(self.sup.job_dir(job),
                                                                "shim.log"))

    def _resolve_starting(self, job: Job) -> None:
        """A start no launch of this daemon is following (the daemon restarted mid-launch):
        running if its process lives, else ended with why."""
        sup = self.sup
        failed = sup.read_job_file(job, "exit.json")
        if failed is not None and "error" in failed:
            sup.finish(job, state="exited", exit_code=127, reason=failed["error"],
                       fault=failed.get("fault"))
            return
        started = sup.read_job_file(job, "started.json")
        if started is not None:
            if sup.transition(job, ("starting",), state="running", pid=started["pid"],
                              start_ticks=started.get("start_ticks"),
                              started_at=started["started_at"], reason=None):
                log.info("job j%d: adopted, running as pid %d", job.id, job.pid)
                sup.hold_output(job, started.get("pipe"))
                sup.notify(job)
                sup.term_if_stopped(job)  # SIGTERM first, as any stop; SIGKILL at kill_at
            return
        job_dir = sup.job_dir(job)
        if shim_alive(job_dir):
            return  # its shim is starting it
        ended = sup.never_started(job)
        if ended is False and not shim_alive(job_dir) and \
                sup.read_job_file(job, "started.json") is None:
            sup.finish(job, state="lost", reason=sup.lost_start(job))

    def _measure(self, running: List[Job]) -> None:
        """The caps every pass and, every usage_sample_s, the usage samples, from one read of
        the GPUs. Only the processes NVML lists are matched to jobs, each read once
        (``procs.Seen``): a pass costs the GPUs' processes and the jobs, not a read of every
        process of the host."""
        sampling = time.monotonic() >= self._next_sample
        if sampling:
            self._next_sample = time.monotonic() + self.sup.settings.usage_sample_s
        measured = [j for j in running if sampling or j.memory_mib is not None]
        readings = self._read_gpus(measured, sampling)
        seen = procs.Seen.read([p.pid for r in readings.values() for p in r.processes] + [
            pid for r in readings.values() for pid in r.util or ()])
        pids = {j.id: j.procs().members(seen) for j in measured}
        self._enforce_caps([j for j in measured if j.memory_mib is not None], pids, readings)
        if sampling:
            self._record_usage(measured, pids, readings, time.time())

    def _read_gpus(self, jobs: List[Job], sampling: bool) -> Dict[int, usage.GpuReading]:
        """One read of NVML a pass for the caps and the samples: the processes of every GPU with
        share jobs (and, when sampling, their utilisation), and the memory of MIG jobs'
        instances when sampling. A GPU that cannot be read is left out this pass (and said
        once), not the others."""
        shared = {g for j in jobs if j.instance is None for g in j.gpus}
        instances: Dict[int, Set[str]] = {}
        for job in jobs:
            if job.instance is not None:
                for g in job.gpus:
                    instances.setdefault(g, set()).add(job.instance)
        readings: Dict[int, usage.GpuReading] = {}
        for index in sorted(shared | set(instances)):
            step = "GPU %d processes" % index
            try:
                readings[index] = self.sup.gpus.call_nvml(lambda: self._read_gpu(
                    index, index in shared, sampling, instances.get(index, set())))
            except RpcError as err:
                self.failures.failed(step, "GPU %d: its processes cannot be read (%s); the caps "
                                     "and usage samples of its jobs wait until they can" % (
                                         index, err.message))
            else:
                self.failures.worked(step, "GPU %d: its processes can be read again" % index)
        return readings

    def _read_gpu(self, index: int, shared: bool, sampling: bool,
                  instances: Set[str]) -> usage.GpuReading:
        backend = self.sup.gpus.backend
        processes = backend.processes(index) if shared else []
        util: Optional[Dict[int, float]] = None
        note = None
        if shared and sampling:
            step = "GPU %d utilisation" % index
            try:
                got = backend.process_utilization(index, self._util_seen.get(index, 0))
            except NvmlCallError as err:  # memory is still sampled; utilisation is not
                note = "NVML did not report it: %s" % err
                self.failures.failed(step, "GPU %d: its processes' utilisation cannot be read "
                                     "(%s); its jobs' samples go without it until it can" % (
                                         index, err))
            else:
                self.failures.worked(step, "GPU %d: its processes' utilisation can be read "
                                     "again" % index)
                if got is None:
                    note = MIG_UTIL_NOTE
                else:
                    util = dict(got.sm)
                    self._util_seen[index] = got.last_us
        used = {uuid: backend.instance_memory_used_mib(uuid)
                for uuid in sorted(instances)} if sampling else None
        return usage.GpuReading(processes=processes, util=util, util_note=note,
                                instance_used_mib=used)

    def _record_usage(self, jobs: List[Job], pids: Dict[int, Set[int]],
                      readings: Dict[int, usage.GpuReading], now: float) -> None:
        """Add this sample to every running job's aggregate, all written in one transaction.
        A job whose first process ended is ending, not idle: it is not sampled."""
        changed: Dict[int, Dict[str, Any]] = {}
        for job in jobs:
            sample = usage.sample_job(job.gpus, job.instance, pids[job.id], readings) \
                if job.procs().leader_alive() else None
            if sample is not None:
                changed[job.id] = usage.add(usage.Usage.from_record(job.usage), now,
                                            sample).record()
        if changed:
            self.sup.store.record_usage(changed)

    def _enforce_caps(self, share_jobs: List[Job], pids: Dict[int, Set[int]],
                      readings: Dict[int, usage.GpuReading]) -> None:
        """The backstop cap: a share job whose processes use more than its share of any of its
        GPUs (a share is per GPU) is stopped. A GPU not read this pass is skipped."""
        sup = self.sup
        used: Dict[Tuple[int, int], int] = {}  # (job id, GPU index) -> MiB
        for job in share_jobs:
            for index in job.gpus:
                if index in readings:
                    used[job.id, index] = sum(p.used_mib or 0 for p in readings[index].processes
                                              if p.pid in pids[job.id])
        for job in share_jobs:
            over = [(i, used[job.id, i]) for i in job.gpus
                    if used.get((job.id, i), 0) > job.memory_mib]
            if over and job.stop_reason is None:
                index, mib = over[0]
                reason = "exceeded its %d MiB cap: used %d MiB%s" % (
                    job.memory_mib, mib, " on GPU %d" % index if len(job.gpus) > 1 else "")
                log.info("job j%d %s; stopping it", job.id, reason)
                self._step("stopping job j%d" % job.id, lambda: sup.notify(
                    sup.stop(job, reason, sup.settings.watchdog_grace_s, by_watchdog=True)))
