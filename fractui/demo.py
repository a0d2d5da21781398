"""``fractui demo``: a living simulated fleet on this machine — no GPU, no SSH.

Local hosts (the sim backend, each its own agent daemon under a temporary state dir) mix MIG
GPUs (A100-80GB, H100 in MIG mode) with GPUs without MIG (L4, A10). A temporary store has
queues and teams; a job stream submits simulated workloads (``remote_agent.simload``) at a
steady rate and the real scheduler — ``fractui scheduler`` as a child process, on the demo's
config written to its temporary directory — places and launches them, so jobs arrive, wait, run
and end. They print progress lines as they run, and a seeded few fail saying why
(``workload_life``): the log view has something to search and follow, the jobs view failures.

Real jobs are real processes (a shim and the workload), so at most ``REAL_JOBS`` run at once and
only on the first hosts. A bigger fleet (``--gpus`` up to 1,000) gets its other hosts busy with
simulated load instead: MIG instances and memory registered with the simulator, with no process
behind them — the header says so. Stopping leaves nothing behind: running jobs are stopped,
every daemon gets ``daemon.shutdown``, anything still alive in a state dir is killed, and the
temporary directory is removed. (The choice is written down in docs/decisions.md.)
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from remote_agent.daemon.paths import AgentPaths
from remote_agent.daemon.trust import UnsafePath
from remote_agent.digits import whole
from remote_agent.jobs.procs import PID_MOST

from fractui.config import (Config, FairShareSettings, HostConfig, QueueConfig,
                            SchedulerSettings, StoreSettings, TeamConfig, UsageSettings,
                            toml_text)
from fractui.fleet.client import AgentCallError, ConnectionLost
from fractui.fleet.host import HostUnavailable
from fractui.scheduler.child import ChildScheduler
from fractui.store import Store, open_store, sqlite_url
from fractui.store.model import ACTIVE
from fractui.tui.source import LiveSource
from fractui import words

log = logging.getLogger("fractui.demo")

MAX_GPUS = 1000
REAL_JOBS = 24  # real job processes at once, at most: each is a shim and a workload
REAL_HOST_GPUS = 8  # GPUs per host that runs real jobs, once the fleet is big enough
MAX_LOAD_HOSTS = 12  # each host is two processes (bridge, daemon): bigger fleets, bigger hosts
KINDS = (("a100", "A100-80GB:mig"), ("h100", "H100:mig"), ("l4", "L4"), ("a10", "A10"))
MIG_PROFILES = ("1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")
CALL_S = 10.0


@dataclass(frozen=True)
class DemoHost:
    name: str
    spec: str
    """A --sim spec, e.g. "8xA100-80GB:mig"."""
    real: bool
    """Runs real jobs; otherwise only simulated load."""


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def gpu_count(text: str) -> int:
    """``--gpus``: a whole number from 1 to MAX_GPUS (argparse turns the error into exit 2)."""
    count = whole(text, MAX_GPUS)
    if not count:
        raise argparse.ArgumentTypeError("must be a whole number from 1 to %d, got %s"
                                         % (MAX_GPUS, words.quoted(text)))
    return count


def fleet_layout(gpus: int) -> list[DemoHost]:
    """Up to 32 GPUs: four hosts (or fewer) of the four kinds, all running real jobs. Beyond:
    four real hosts of 8 GPUs, the rest over at most 12 hosts of simulated load."""
    if not 1 <= gpus <= MAX_GPUS:
        raise ValueError("--gpus must be between 1 and %d, got %d" % (MAX_GPUS, gpus))
    real = min(gpus, len(KINDS) * REAL_HOST_GPUS)
    hosts = []
    for i, count in enumerate(_split(real, min(len(KINDS), real))):
        name, spec = KINDS[i]
        hosts.append(DemoHost("%s-1" % name, "%dx%s" % (count, spec), True))
    rest = gpus - real
    parts = min(MAX_LOAD_HOSTS, -(-rest // REAL_HOST_GPUS)) if rest else 0
    for i, count in enumerate(_split(rest, parts) if parts else []):
        name, spec = KINDS[i % len(KINDS)]
        hosts.append(DemoHost("%s-%d" % (name, i // len(KINDS) + 2),
                              "%dx%s" % (count, spec), False))
    return hosts


def demo_config(hosts: list[DemoHost], root: str) -> Config:
    """Local hosts under ``root``, the demo's queues (for the real hosts) and teams."""
    real = tuple(h.name for h in hosts if h.real)
    only = real if len(real) < len(hosts) else ()
    real_gpus = sum(int(h.spec.split("x")[0]) for h in hosts if h.real)
    return Config(
        path=None,
        hosts=tuple(HostConfig(name=h.name, transport="local", sim=h.spec,
                               state_dir=os.path.join(root, "hosts", h.name)) for h in hosts),
        queues=(QueueConfig("quarter", gpu=0.25, hosts=only),
                QueueConfig("mig-3g", mig="3g.40gb", hosts=only),
                QueueConfig("10g", memory_gib=10, hosts=only),
                QueueConfig("whole", gpus=1, hosts=only)),
        teams=(TeamConfig("vision", quota_gpus=round(0.4 * real_gpus, 2)),
               # a tenth, no borrowing: its jobs wait at its quota while GPUs stand idle, as
               # a team's do that an admin then places by hand past it (asked, borrowed)
               TeamConfig("nlp", quota_gpus=round(0.1 * real_gpus, 2)),
               TeamConfig("speech", quota_gpus=round(0.1 * real_gpus, 2), over_quota=True)),
        scheduler=SchedulerSettings(interval_s=0.5, preempt_grace_s=2.0),
        store=StoreSettings(sqlite_url(os.path.join(root, "store.db"))),
        # a demo lasts minutes: GPU time by the 10 s, the jobs' samples read every 5 s
        usage=UsageSettings(bucket_s=10, refresh_s=5),
        # fair share over time on, at the demo's pace: a 3-minute half-life over 15 minutes,
        # so within a few minutes the teams' recent usage moves who is served next
        fairshare=FairShareSettings(half_life_h=0.05, window_h=0.25, usage_weight=0.5))


# GPU memory each queue's workload uses (MiB): well inside the smallest slice it can get.
_MEMORY = {"quarter": (1000, 4000), "mig-3g": (8000, 30000), "10g": (2000, 8000),
           "whole": (4000, 16000)}
# Its SM utilisation (percent of the whole GPU): a share's, at most about its share, as the
# GPU's time is shared (on MIG, NVML measures none: the report says so).
_UTIL = {"quarter": (8, 25), "mig-3g": (20, 43), "10g": (5, 30), "whole": (40, 95)}
# Who submits each team's jobs, in turn: the jobs view's user column and filter have people.
RESEARCHERS = {"vision": ("ana", "ben"), "nlp": ("chen", "dara"), "speech": ("eli",)}
# The share of jobs that fail partway, with exit code 1 (a Python program's uncaught error)
# and one of these as their last line: the jobs view has failures to find, their logs a why.
FAIL_SHARE = 0.15
FAILURES = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate %(ask)d MiB "
            "(%(used)d MiB already allocated)",
            "RuntimeError: loss is nan at step %(step)d: stopping",
            "RuntimeError: CUDA error: an illegal memory access was encountered")


def workload_life(rng: random.Random, mem_mib: int, seconds: int) -> list[str]:
    """simload's options that make a demo job behave like a team's: a progress line every 2-5 s
    (its values seeded), and for a ``FAIL_SHARE`` of jobs a failure partway, saying why."""
    every = rng.uniform(2.0, 5.0)
    options = ["--progress-every", "%.1f" % every, "--seed", str(rng.randrange(2 ** 32))]
    if rng.random() < FAIL_SHARE:
        at = rng.randrange(5, seconds)
        why = rng.choice(FAILURES) % {"ask": rng.randrange(512, 8192), "used": mem_mib,
                                      "step": 50 * max(1, int(at / every))}
        options += ["--seconds", str(at), "--exit-code", "1", "--fail-with", why]
    else:
        options += ["--seconds", str(seconds)]
    return options


class JobStream(threading.Thread):
    """Submits a simulated workload every ``every_s`` while fewer than ``REAL_JOBS`` (plus a
    few waiting) are active; each runs 15-60 s printing its progress and ends by itself, but
    for a few that fail sooner. ``life`` draws what ``workload_life`` adds, apart from ``rng``,
    so the queues, teams and sizes a seed gives are the ones it gave before."""

    def __init__(self, config: Config, store: Store, rng: random.Random, life: random.Random,
                 every_s: float = 1.5) -> None:
        super().__init__(name="demo-jobs", daemon=True)
        self.config, self.store, self.rng, self.every_s = config, store, rng, every_s
        self.life = life
        self.stopped = threading.Event()
        self.submitted = 0

    def submit_one(self) -> None:
        queue = self.rng.choice(self.config.queues)
        team = self.rng.choice(self.config.teams).name
        low, high = _MEMORY[queue.name]
        mem_mib, seconds = self.rng.randrange(low, high), self.rng.randrange(15, 60)
        argv = [sys.executable, "-m", "remote_agent.simload", "--mem-mib", str(mem_mib),
                "--util", str(self.rng.randrange(*_UTIL[queue.name]))]
        argv += workload_life(self.life, mem_mib, seconds)
        people = RESEARCHERS[team]
        self.submitted += 1
        self.store.submit(queue.name, team, "%s-%s" % (team, queue.name), argv,
                          queue.request(), actor="%s@demo" % people[self.submitted % len(people)])

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            if len(self.store.jobs(states=ACTIVE)) < REAL_JOBS + 6:
                self.submit_one()


class SimulatedLoad(threading.Thread):
    """Keeps about two thirds of the load hosts' GPUs busy with simulated work: memory (and
    MIG instances) registered with each host's simulator, no process behind them."""

    def __init__(self, source: LiveSource, hosts: list[DemoHost], rng: random.Random) -> None:
        super().__init__(name="demo-load", daemon=True)
        self.source, self.rng = source, rng
        self.stopped = threading.Event()
        self.gpus = [(h.name, i, h.spec.endswith(":mig"))
                     for h in hosts if not h.real for i in range(int(h.spec.split("x")[0]))]
        self.busy: dict[tuple[str, int], tuple[float, list[int], Optional[str]]] = {}
        self.pids: dict[str, set[str]] = {h.name: set() for h in hosts if not h.real}

    def call(self, host: str, method: str, **params: Any) -> Any:
        return self.source.fleet.session(host).call(method, params, CALL_S)

    def start_load(self, host: str, gpu: int, mig: bool) -> None:
        instance = None
        if mig:
            profile = self.rng.choice(MIG_PROFILES)
            instance = self.call(host, "mig.apply", gpu=gpu, profile=profile)["instance"]["uuid"]
            used = [self.rng.randrange(2000, 9000)]
        else:
            used = [self.rng.randrange(1000, 7000) for _ in range(self.rng.randrange(1, 4))]
        pids = [self.call(host, "sim.add_process", gpu=gpu, used_mib=mib, instance=instance,
                          util=self.rng.randrange(10, 90))["pid"] for mib in used]
        self.busy[(host, gpu)] = (time.monotonic() + self.rng.uniform(10, 60), pids, instance)
        self.pids[host].update(str(p) for p in pids)
        self.source.set_simulated(host, frozenset(self.pids[host]))

    def end_load(self, host: str, gpu: int) -> None:
        _until, pids, instance = self.busy.pop((host, gpu))
        for pid in pids:
            self.call(host, "sim.remove_process", pid=pid)
            self.pids[host].discard(str(pid))
        if instance is not None:
            self.call(host, "mig.destroy", gpu=gpu, instance=instance)

    def run(self) -> None:
        burst = max(1, len(self.gpus) // 100)  # a 1,000-GPU fleet fills in seconds too
        while not self.stopped.wait(0.05):
            for _ in range(burst):
                self.step(*self.rng.choice(self.gpus))

    def step(self, host: str, gpu: int, mig: bool) -> None:
        ends = self.busy.get((host, gpu), (None,))[0]
        try:
            if ends is not None and ends < time.monotonic():
                self.end_load(host, gpu)
            elif ends is None and len(self.busy) < 0.66 * len(self.gpus):
                self.start_load(host, gpu, mig)
        except (HostUnavailable, AgentCallError, ConnectionLost) as err:
            log.debug("simulated load on %s gpu %d: %s", host, gpu, err)


class Demo:
    """The whole demo: start() brings it up, stop() takes every part of it down again."""

    def __init__(self, gpus: int = 16, seed: int = 1, root: Optional[str] = None) -> None:
        self.hosts = fleet_layout(gpus)
        self.root = root or tempfile.mkdtemp(prefix="fractui-demo-")
        try:
            self._make(seed)
        except BaseException:  # (Ctrl-C too) a demo half made leaves no directory of its own
            if root is None:
                shutil.rmtree(self.root, ignore_errors=True)
            raise

    def _make(self, seed: int) -> None:
        """Its store, config and parts under ``root``, nothing started."""
        self.config = demo_config(self.hosts, self.root)
        self.store = open_store(self.config.store.url)
        self.source = LiveSource(self.config, self.store)
        self.source.note = self._note()
        path = os.path.join(self.root, "config.toml")
        with open(path, "w") as f:
            f.write(toml_text(self.config))
        # (pasted into a shell: a TMPDIR with a space or a quote in it is one word there)
        self.source.report_command = words.shell_line(["fractui", "report", "--config", path])
        self.scheduler = ChildScheduler(path, "demo", os.path.join(self.root, "scheduler.log"))
        self.source.scheduler = self.scheduler
        rng = random.Random(seed)
        stream, load = random.Random(rng.random()), random.Random(rng.random())
        self.stream = JobStream(self.config, self.store, stream, random.Random(rng.random()))
        self.load = SimulatedLoad(self.source, self.hosts, load)

    def _note(self) -> str:
        real = [h.name for h in self.hosts if h.real]
        if len(real) == len(self.hosts):
            return "demo · simulated GPUs · jobs are real processes (≤%d at once)" % REAL_JOBS
        return "demo · real jobs (≤%d processes) on the first %s · the other %d carry " \
               "simulated load" % (REAL_JOBS, words.count(len(real), "host"),
                                   len(self.hosts) - len(real))

    def start(self) -> "Demo":
        self.source.start()
        self.scheduler.start()
        self.stream.start()
        if self.load.gpus:
            self.load.start()
        return self

    def stop(self) -> None:
        for part in (self.stream, self.load):
            part.stopped.set()
            if part.is_alive():
                part.join(timeout=CALL_S)
        self.scheduler.stop()
        fleet = self.source.fleet
        stopping = fleet.fan_out("job.list", {"state": "running"}, CALL_S)
        for host, listed in stopping.items():
            for job in listed.get("jobs", []) if isinstance(listed, dict) else []:
                try:
                    fleet.session(host).call(
                        "job.stop", {"job": job["id"], "key": job.get("key"), "grace": 1}, CALL_S)
                except (HostUnavailable, AgentCallError, ConnectionLost) as err:
                    log.debug("stopping %s/%s: %s", host, job["id"], err)
        for session in fleet.sessions.values():  # an agent shut down is not started again
            session.connect_no_more()
        fleet.fan_out("daemon.shutdown", None, CALL_S)
        self.source.stop()  # every session ends
        self.store.close()
        for host in self.config.hosts:
            sweep(host.state_dir)
        shutil.rmtree(self.root, ignore_errors=True)


def _locked(path: str, unheld: Callable[[], None] = lambda: None) -> bool:
    """Whether a live process holds ``path``'s lock: the shim holds ``shim.lock`` and the
    daemon ``daemon.lock`` for their whole lives, so this never mistakes a recycled pid.
    ``unheld`` runs while this holds the lock, where no process did."""
    try:
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            try:
                unheld()
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
            return False
    except OSError:
        return False


def _read_pid(path: str) -> int:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return 0
    if not text.startswith("{"):
        return whole(text, PID_MOST) or 0
    try:  # (the shim's started.json; "١" was pid 1 to int(), whose group the sweep killed)
        pid = json.loads(text).get("pid")
    except ValueError:  # written short: no pid it names
        return 0
    return pid if type(pid) is int and 0 < pid <= PID_MOST else 0


def running_pids(state_dir: str) -> list[tuple[int, bool]]:
    """(pid, is a job's process group) of what a state dir says still runs (file names as in
    docs/protocol.md): each job without a recorded exit, each shim and the daemon that hold
    their locks."""
    found = []
    jobs = os.path.join(state_dir, "jobs")
    for name in sorted(os.listdir(jobs)) if os.path.isdir(jobs) else []:
        job_dir = os.path.join(jobs, name)
        if not os.path.exists(os.path.join(job_dir, "exit.json")):
            pid = _read_pid(os.path.join(job_dir, "started.json"))
            try:
                if pid > 0:
                    os.killpg(pid, 0)  # its process group is still there
                    found.append((pid, True))
            except OSError:
                pass
        if _locked(os.path.join(job_dir, "shim.lock")):
            found.append((_read_pid(os.path.join(job_dir, "shim.claim")), False))
    if _locked(os.path.join(state_dir, "daemon.lock")):
        found.append((_read_pid(os.path.join(state_dir, "daemon.pid")), False))
    return [(pid, group) for pid, group in found if pid > 0]


def sweep(state_dir: str, wait_s: float = 3.0) -> None:
    """After an orderly stop: wait a little for the daemon and jobs to end, then kill what is
    left (a job ignoring SIGTERM past its grace), so the demo never leaves a process behind."""
    deadline = time.monotonic() + wait_s
    while running_pids(state_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid, group in running_pids(state_dir):
        try:
            (os.killpg if group else os.kill)(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    _drop_dead_socket(AgentPaths(state_dir))


def _drop_dead_socket(paths: AgentPaths) -> None:
    """A daemon killed leaves its socket in the user's socket dir, shared by all their agents;
    it is removed once the daemon's lock is free (the kernel frees it as the process ends), and
    under that lock, so no daemon starting meanwhile binds a socket this would remove."""
    def unlink() -> None:
        try:
            if paths.check_socket() is not None:
                os.unlink(paths.socket)
        except (UnsafePath, OSError) as err:  # not ours, or gone: the next daemon says
            log.info("left %s: %s", paths.socket, err)

    deadline = time.monotonic() + 10.0  # (milliseconds, but a loaded machine may be slow)
    while _locked(paths.lock_file, unlink) and time.monotonic() < deadline:
        time.sleep(0.02)
