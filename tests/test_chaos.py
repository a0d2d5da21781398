"""A seeded soak of the whole promise that failure is normal: a small fleet (an A100 in MIG mode
and an L4, each a real agent behind real sshd on 127.0.0.1 and a proxy the test cuts), a
PostgreSQL store and the real scheduler are driven through a random sequence of submits,
cancels, passes, MIG changes, agent daemons and job shims killed (SIGKILL), SSH connections
dropped, NVML calls failing midway and the database stopped at once and started again. Each seed is
one sequence; the same seed draws the same sequence (what each step meets may differ with
timing, which the checks allow for).

Checked after every step: no acknowledged job is lost; a MIG change leaves its GPU with the
layout the agent planned or the one it had (never a half). Checked once the fleet has settled
(every host reached, every decision launched or stopped, every stale copy ended), at the end
and at random points on the way: each job the store says runs is one live process on its host,
on the slice the store gives it (its MIG instance of that profile, or its memory share), and
no other copy of it runs; nothing runs the store does not say runs; no GPU holds a half-made
instance or is degraded.

``FRACTUI_CHAOS_SEEDS`` (e.g. ``1-40``) runs other seeds than the suite's."""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Set

import pytest

from fractui.config import QueueConfig, SchedulerSettings, StoreSettings
from fractui.fleet.client import AgentCallError
from fractui.fleet.fleet import Fleet
from fractui.fleet.host import HostUnavailable
from fractui.scheduler import Scheduler
from fractui.store import open_store
from fractui.store.base import StateConflict, Store, StoreError
from fractui.store.intents import Asker, ask_stop
from fractui.store.model import Job
from remote_agent.jobs.caps import framework_fraction
from tests import sshd
from tests.conftest import STEP_S
from tests.test_fleet import SshFleet
from tests.test_jobs import alive

if TYPE_CHECKING:
    from tests.pg import PgServer

pytestmark = pytest.mark.slow  # a fault suite: README, "the slow fault suites"

ssh_env = sshd.ssh_env

HOSTS = {"gpu-a": "1xA100-80GB:mig", "gpu-b": "1xL4"}
QUEUES = (QueueConfig(name="1g", mig="1g.10gb"), QueueConfig(name="2g", mig="2g.20gb"),
          QueueConfig(name="half", gpu=0.5), QueueConfig(name="quarter", gpu=0.25))
STEPS = 20
SEEDS = (1, 2)
# NVML calls of a MIG change (the agent's own or a job's instance) that a fault may strike
MIG_CALLS = ("nvmlDeviceCreateGpuInstanceWithPlacement", "nvmlGpuInstanceCreateComputeInstance",
             "nvmlComputeInstanceDestroy", "nvmlGpuInstanceDestroy",
             "nvmlDeviceGetGpuInstances")

def sleeper(tmp_path) -> List[str]:
    """A job that runs until stopped, its command line marked with the test's own directory:
    the processes of this test's jobs are told from every other's on the machine."""
    return [sys.executable, "-c", "import time; time.sleep(600)  # %s" % tmp_path]


def processes_marked(mark: str) -> Set[int]:
    """The live processes whose command line holds ``mark``."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    marked = mark.encode() in f.read()
            except OSError:
                continue
            if marked and alive(int(entry)):
                found.add(int(entry))
    return found


def environment(pid: int) -> Dict[str, str]:
    """What a process was started with: a job's slice as its own process was given it."""
    with open("/proc/%d/environ" % pid, "rb") as f:
        pairs = [item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item]
    return {k.decode(): v.decode() for k, v in pairs}


def seeds() -> List[int]:
    """The suite's seeds, or those FRACTUI_CHAOS_SEEDS names (``3``, ``1-40``, ``1,5,9``)."""
    said = os.environ.get("FRACTUI_CHAOS_SEEDS")
    if not said:
        return list(SEEDS)
    out: List[int] = []
    for part in said.split(","):
        low, _, high = part.partition("-")
        out += range(int(low), int(high or low) + 1)
    return out


@dataclass
class Chaos:
    """The fleet under test and what the test has been told so far."""

    env: SshFleet
    pg: "PgServer"
    fleet: Fleet
    store: Store
    scheduler: Scheduler
    argv: List[str]
    rng: random.Random  # this step's draws: seeded by the run's, whatever the last step met
    acknowledged: Dict[int, Job] = field(default_factory=dict)
    cancelled: Set[int] = field(default_factory=set)
    log: List[str] = field(default_factory=list)

    def say(self, what: str) -> None:
        self.log.append(what)

    def passes(self, n: int = 1) -> None:
        for _ in range(n):
            try:
                self.scheduler.step()
            except StoreError as err:  # the database down: said, and the next pass tries
                self.say("  pass: store error %s" % err)
            time.sleep(STEP_S)

    def reach(self, *hosts: str, timeout_s: float = 20.0) -> None:
        """Until ``hosts`` answer again (a daemon killed, a link cut a moment ago), so that a
        step meant for a host is not only its refusal while it reconnects. No pass is made
        meanwhile: a launch would change what a MIG step compares."""
        deadline = time.time() + timeout_s
        while not self.answering(hosts):
            assert time.time() < deadline, "never reached again: %s" % [
                (s.name, s.state, s.error) for s in self.fleet.statuses()]
            time.sleep(STEP_S)

    def answering(self, hosts) -> bool:
        """Whether each host answers (online alone may be a link whose daemon was just killed,
        its end not yet seen)."""
        try:
            for host in hosts:
                self.call(host, "hello")
        except HostUnavailable:
            return False
        return True

    def call(self, host: str, method: str, params: Optional[dict] = None):
        return self.fleet.session(host).call(method, params or {}, timeout_s=20)

    def agent_jobs(self) -> List[dict]:
        out = []
        for host in HOSTS:
            out += [dict(j, host=host) for j in self.call(host, "job.list")["jobs"]]
        return out

    def state_dir(self, host: str) -> str:
        return next(h.state_dir for h in self.env.hosts if h.name == host)


def instances_of(c: Chaos) -> List[dict]:
    """gpu-a's MIG instances; read again where a read meets a fault armed for a change."""
    for _ in range(3):
        try:
            return c.call("gpu-a", "inventory")["gpus"][0]["instances"]
        except AgentCallError as err:
            c.say("  inventory: %s" % err)
    raise AssertionError("gpu-a's inventory failed three times running")


def layout_of(c: Chaos) -> Counter:
    """What gpu-a holds, as (profile, start, has its compute instance)."""
    return Counter((i["profile"], i["start"], i["uuid"] is not None) for i in instances_of(c))


def daemon_of(c: Chaos, host: str) -> int:
    with open(os.path.join(c.state_dir(host), "daemon.pid")) as f:
        return int(f.read())


# --- the steps ---------------------------------------------------------------------------

def submit(c: Chaos) -> None:
    queue = c.rng.choice(QUEUES)
    key = "chaos-%x" % c.rng.getrandbits(64)
    for attempt in range(2):  # a submit the store failed is asked again by its key
        try:
            job = c.store.submit(queue.name, None, "chaos", c.argv, queue.request(), "test",
                                 key=key)
        except StoreError as err:
            c.say("  submit: store error %s" % err)
            continue
        assert job.id not in c.acknowledged or attempt, "a new submit found an old job"
        c.acknowledged[job.id] = job
        c.say("  submitted job %d (%s)" % (job.id, queue.name))
        again = c.store.submit(queue.name, None, "chaos", c.argv, queue.request(), "test",
                               key=key)
        assert again.id == job.id, "a submit retried by its key made a second job"
        return


def cancel(c: Chaos) -> None:
    try:
        live = [j for j in c.store.jobs() if j.state in ("pending", "placed", "running")]
    except StoreError as err:
        c.say("  cancel: store error %s" % err)
        return
    if not live:
        return
    job = c.rng.choice(live)
    try:
        ask_stop(c.store, job, "cancel", Asker("here"))
    except (StateConflict, StoreError) as err:
        c.say("  cancel of %d: %s" % (job.id, err))
        return
    c.cancelled.add(job.id)
    c.say("  cancelled job %d (was %s)" % (job.id, job.state))


def passes(c: Chaos) -> None:
    c.passes(c.rng.randint(1, 4))
    c.scheduler.settle()


def mig_change(c: Chaos) -> None:
    """A change of gpu-a's MIG layout as an admin makes it (planned, then applied pinned to the
    layout it was planned on), its daemon killed midway at times: the GPU holds the plan or
    what it held, nothing between."""
    c.reach("gpu-a")
    c.scheduler.settle()
    before = layout_of(c)
    try:
        if c.rng.random() < 0.3:
            idle = [i for i in instances_of(c) if not i["busy"] and i["uuid"]]
            if not idle:
                return
            target = c.rng.choice(idle)
            planned = before - Counter([(target["profile"], target["start"], True)])
            method, ask = "mig.destroy", {"gpu": 0, "instance": target["uuid"]}
            what = "destroy %s@%d" % (target["profile"], target["start"])
        else:
            profile = c.rng.choice(["1g.10gb", "2g.20gb", "3g.40gb"])
            ask = {"gpu": 0, "profile": profile, "destroy_idle": c.rng.random() < 0.5}
            plan = c.call("gpu-a", "mig.plan", ask)
            planned = before - Counter((i["profile"], i["start"], True) for i in plan["destroy"])
            planned[(profile, plan["start"], True)] += 1
            method, ask = "mig.apply", dict(ask, layout_version=plan["layout_version"])
            what = "apply %s@%d" % (profile, plan["start"])
    except AgentCallError as err:
        c.say("  mig plan: refused %s" % err)
        return
    kill_after = c.rng.choice([None, None, 0.0, 0.05, 0.15])
    try:
        if kill_after is None:
            answer = c.call("gpu-a", method, ask)
        else:
            session = c.fleet.session("gpu-a")
            pid = daemon_of(c, "gpu-a")
            asked = threading.Thread(target=lambda: _lost_or_answered(c, session, method, ask))
            asked.start()
            time.sleep(kill_after)
            os.kill(pid, signal.SIGKILL)
            asked.join(30)
            c.say("  mig %s: daemon %d killed after %.2f s" % (what, pid, kill_after))
            c.reach("gpu-a")
            after = layout_of(c)
            assert after in (before, planned), (what, before, planned, after)
            return
    except AgentCallError as err:
        c.say("  mig %s: refused %s" % (what, err))
        after = layout_of(c)
        assert after == before, (str(err), before, after)
        return
    except HostUnavailable as err:
        c.say("  mig: host unavailable %s" % err)
        return
    c.say("  mig %s: made" % what)
    assert "warning" in answer or layout_of(c) == planned, (what, before, planned)


def _lost_or_answered(c: Chaos, session, method: str, ask: dict) -> None:
    try:
        session.call(method, ask, timeout_s=20)
        c.say("  %s answered before the kill" % method)
    except (AgentCallError, HostUnavailable) as err:
        c.say("  %s: %s" % (method, err))


def nvml_fault(c: Chaos) -> None:
    function = c.rng.choice(MIG_CALLS)
    c.reach("gpu-a")
    try:
        c.call("gpu-a", "sim.fault", {"function": function, "error": "NVML_ERROR_UNKNOWN",
                                      "skip": c.rng.randint(0, 1)})
        c.say("  fault armed at %s" % function)
    except HostUnavailable as err:
        c.say("  fault: host unavailable %s" % err)


def kill_daemon(c: Chaos) -> None:
    """A host's daemon killed (SIGKILL): between calls, or a moment after a pass whose launches
    and stops are on their way to it."""
    host = c.rng.choice(sorted(HOSTS))
    midway = c.rng.choice([None, 0.0, 0.05, 0.2])
    if midway is not None:
        c.reach(host)
        c.scheduler.step()
        time.sleep(midway)
    try:
        pid = daemon_of(c, host)
        os.kill(pid, signal.SIGKILL)
        c.say("  killed %s's daemon %d%s" % (host, pid, "" if midway is None else
                                              " %.2f s after a pass" % midway))
    except (OSError, ValueError) as err:
        c.say("  no daemon to kill on %s: %s" % (host, err))


def kill_shim(c: Chaos) -> None:
    c.reach(*HOSTS)
    try:
        running = [j for j in c.agent_jobs() if j["state"] == "running"]
    except HostUnavailable as err:
        c.say("  kill shim: %s" % err)
        return
    if not running:
        return
    job = c.rng.choice(running)
    try:
        with open(os.path.join(c.state_dir(job["host"]), "jobs", job["id"], "shim.claim")) as f:
            pid = int(f.read())
        os.kill(pid, signal.SIGKILL)
        c.say("  killed the shim of %s/%s" % (job["host"], job["id"]))
    except (OSError, ValueError) as err:
        c.say("  no shim of %s/%s: %s" % (job["host"], job["id"], err))


def drop_ssh(c: Chaos) -> None:
    """The host's connection cut (a proxy that drops its links and takes none) for a while,
    passes running meanwhile: short drops and drops past host_lost_s, between calls or a
    moment after a pass whose calls are on their way."""
    host = c.rng.choice(sorted(HOSTS))
    down_s = c.rng.choice([0.0, 0.5, 2.5])
    midway = c.rng.choice([None, 0.0, 0.05])
    proxy = c.env.proxies[host]
    if midway is not None:  # launches and stops of a pass on their way
        c.scheduler.step()
        time.sleep(midway)
    proxy.cut()
    c.say("  cut %s for %.1f s" % (host, down_s))
    deadline = time.time() + down_s
    c.passes()
    while time.time() < deadline:
        c.passes()
    proxy.restore()


def restart_database(c: Chaos) -> None:
    """PostgreSQL stopped in its immediate mode (every backend ended at once, no checkpoint:
    crash recovery at the next start), passes made while it is down, and started again. (Not
    SIGKILL as test_pg_crash.py: where PID 1 reaps no orphan, the killed postmaster's zombie
    keeps its pid file's pid alive and the new one refuses to start.)"""
    c.pg.pg_ctl("stop", "-m", "immediate")
    c.passes(c.rng.randint(0, 2))
    c.pg.start()
    c.say("  database stopped (immediate) and started again")


ACTIONS: Dict[str, Callable[[Chaos], None]] = {
    "submit": submit, "cancel": cancel, "passes": passes, "mig": mig_change,
    "nvml fault": nvml_fault, "kill daemon": kill_daemon, "kill shim": kill_shim,
    "drop ssh": drop_ssh, "restart database": restart_database}
WEIGHTS = {"submit": 5, "cancel": 2, "passes": 4, "mig": 3, "nvml fault": 2, "kill daemon": 2,
           "kill shim": 2, "drop ssh": 2, "restart database": 1}


# --- the checks ---------------------------------------------------------------------------

def check_acknowledged(c: Chaos) -> None:
    """Every job the store acknowledged is still there; only a cancelled one ends cancelled."""
    for job_id in c.acknowledged:
        try:
            job = c.store.get(job_id)
        except StoreError:
            return  # the database is down: looked at next time
        assert job is not None, "acknowledged job %d lost" % job_id
        assert job.state != "cancelled" or job_id in c.cancelled, job


def settled(c: Chaos) -> Optional[str]:
    """None once the fleet has settled; else what it still waits on."""
    down = [s.name for s in c.fleet.statuses() if s.state != "online"]
    if down:
        return "hosts not online: %s" % down
    moving = [(j.id, j.state) for j in c.store.jobs() if j.state in ("placed", "stopping")]
    if moving:
        return "jobs moving: %s" % moving
    if c.store.stale():
        return "stale copies: %s" % [s.key for s in c.store.stale()]
    running = {j.key(c.store.uid) for j in c.store.jobs(["running"])}
    live = {r["key"] for r in c.agent_jobs() if r["state"] in ("starting", "running")}
    if running != live:
        return "store runs %s, hosts run %s" % (sorted(running), sorted(live))
    return None


def settle_and_check(c: Chaos, timeout_s: float = 60.0) -> None:
    for host in HOSTS:
        c.env.proxies[host].restore()
    deadline = time.time() + timeout_s
    while True:
        try:
            for host in HOSTS:
                c.call(host, "sim.clear_faults")
            waiting = settled(c)
        except (HostUnavailable, StoreError) as err:
            waiting = str(err)
        if waiting is None:
            break
        assert time.time() < deadline, "the fleet never settled: %s" % waiting
        c.passes()
        c.scheduler.settle()
    check_acknowledged(c)
    records = {r["key"]: r for r in c.agent_jobs()}
    instances = {i["uuid"]: i for i in instances_of(c)}
    memory = {h: c.call(h, "inventory")["gpus"][0]["memory_mib"] for h in HOSTS}
    for job in c.store.jobs(["running"]):
        record = records[job.key(c.store.uid)]
        assert alive(record["pid"]), "job %d runs in the store, no process on %s" % (
            job.id, job.slot.host)
        assert (record["host"], tuple(record["gpus"])) == (job.slot.host, job.slot.gpus), job
        given = environment(record["pid"])
        if job.slot.profile:
            mine = instances[record["instance"]]
            assert mine["profile"] == job.slot.profile, (job, mine)
            assert job.slot.start is None or mine["start"] == job.slot.start, (job, mine)
            assert record["mig"]["profile"] == job.slot.profile
            assert given["CUDA_VISIBLE_DEVICES"] == record["instance"], (job, given)
        else:
            assert record["memory_mib"] == job.slot.memory_mib, (job, record)
            assert given["CUDA_VISIBLE_DEVICES"] == ",".join(record["gpu_uuids"]), (job, given)
            assert given["XLA_PYTHON_CLIENT_MEM_FRACTION"] == framework_fraction(
                job.slot.memory_mib, memory[job.slot.host]), (job, given)
    copies = Counter(r["key"].rsplit(".", 1)[0] for r in records.values()
                     if r["state"] in ("starting", "running"))
    assert max(copies.values(), default=1) == 1, copies
    live = {r["pid"] for r in records.values() if r["state"] in ("starting", "running")}
    assert processes_marked(c.argv[-1]) == live, "processes of no running job"
    assert all(uuid is not None for uuid in instances), instances  # none half-made
    for host in HOSTS:
        problems = c.call(host, "hello").get("problems", [])
        assert not [p for p in problems if "degraded" in p], (host, problems)


@pytest.mark.parametrize("seed", seeds())
def test_a_random_run_of_faults_loses_no_job_and_leaves_every_gpu_whole(ssh_env, tmp_path,
                                                                       pg_server, seed):
    env = SshFleet(ssh_env, tmp_path)
    for name, spec in HOSTS.items():
        env.add(name, spec)
    url = pg_server.url(pg_server.new_database())
    config = replace(env.config(), queues=QUEUES, store=StoreSettings(url),
                     scheduler=SchedulerSettings(interval_s=0.2, host_lost_s=1.5,
                                                 preempt_grace_s=1.0))
    store = open_store(url)
    # The run's draws, made up front: the same steps for a seed, whatever each step meets
    draws = random.Random(seed)
    names = sorted(ACTIONS)
    plan = [(draws.choices(names, [WEIGHTS[n] for n in names])[0], draws.getrandbits(32),
             draws.random() < 0.15) for _ in range(STEPS)]
    log: List[str] = []
    try:
        with Fleet(config, reconnect_max_s=0.3) as fleet:
            fleet.wait_settled(60)
            c = Chaos(env, pg_server, fleet, store,
                      Scheduler(config, store, fleet, name="chaos"), sleeper(tmp_path),
                      random.Random(), log=log)
            try:
                for step, (action, step_seed, settle) in enumerate(plan):
                    c.rng.seed(step_seed)
                    c.say("step %d: %s" % (step, action))
                    ACTIONS[action](c)
                    check_acknowledged(c)
                    if settle:
                        settle_and_check(c)
                settle_and_check(c)
                for job in c.store.jobs(["failed"]):
                    c.say("job %d failed: %s" % (job.id, job.reason))
                c.say("states: %s" % dict(Counter(j.state for j in c.store.jobs())))
            finally:
                c.scheduler.stop()
    finally:
        print("seed %d:\n%s" % (seed, "\n".join(log)))  # shown with a failure
        store.close()
        env.stop()
