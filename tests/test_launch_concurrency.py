"""Launching never blocks supervision: launches run beside each other and beside the watchdog,
and the same key is still one job, one process, one MIG instance. What is asserted is who
answered and in which order, never how long anything took."""

from __future__ import annotations

import json
import os
import socket
import threading
from typing import Any, Dict, List

import pytest

from remote_agent.daemon.paths import AgentPaths
from remote_agent.rpc import jsonrpc as rpc
from tests.test_job_supervision import wait_until
from tests.test_jobs import PY, alive, slow_to_stop_simload, wait_job

HOST = "1xA100-80GB:mig,1xL4"


@pytest.fixture
def in_process(tmp_path):
    """in_process(spec) -> (Supervisor, Agent): the daemon's parts in this process on a fresh
    simulated host, so a test can interleave them exactly; jobs and shims are real processes.
    Afterwards the simulator's faults are cleared and everything of the host is stopped."""
    from remote_agent.gpu import fake_pynvml as nv
    from remote_agent.jobs.supervisor import Supervisor, SupervisorSettings
    from remote_agent.service import Agent
    from tests.conftest import stop_host

    state = tmp_path / "host"
    made: List[Any] = []

    def make(spec: str):
        state.mkdir(mode=0o700)
        paths = AgentPaths(str(state))
        os.mkdir(paths.sim_dir, 0o700)  # as the daemon makes it
        nv.sim_open(paths.sim_state, spec)
        agent = Agent(nv, "sim", sim=nv)
        made.append(Supervisor(paths, agent, SupervisorSettings(), lambda job: None, {}))
        return made[-1], agent

    yield make
    nv.sim_clear_faults()
    for sup in made:
        sup.store.close()
    stop_host(str(state))


def launcher(sup, req, answers: List[Any]) -> threading.Thread:
    """A thread (not started) that launches ``req`` and appends the job, or the refusal."""
    def launch() -> None:
        try:
            answers.append(sup.launch(req))
        except rpc.RpcError as err:
            answers.append(err)

    return threading.Thread(target=launch)


def launch_request(**params: Any):
    """A ``job.launch`` request as the daemon parses it from ``params``."""
    from remote_agent.jobs.methods import LAUNCH_PARAMS
    from remote_agent.jobs.supervisor import parse_launch

    return parse_launch(rpc.Params("job.launch", params, LAUNCH_PARAMS))


class Client:
    """A connection straight to the daemon's socket, as a bridge makes: one per thread."""

    def __init__(self, state: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(AgentPaths(state).socket)
        self.reader = self.sock.makefile("rb")
        self.pushed: List[Dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> Dict[str, Any]:
        """The reply (``result`` or ``error``); notifications met on the way are kept."""
        self.sock.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                                      "params": params}).encode() + b"\n")
        while True:
            msg = json.loads(self.reader.readline())
            if "id" in msg:
                return msg
            self.pushed.append(msg)

    def next_pushed(self) -> Dict[str, Any]:
        if self.pushed:
            return self.pushed.pop(0)
        return json.loads(self.reader.readline())

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def in_threads(count: int, work) -> List[Any]:
    """``work(i)`` in ``count`` threads released together; their results in order."""
    results: List[Any] = [None] * count
    gate = threading.Barrier(count)

    def run(i: int) -> None:
        gate.wait()
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive()
    return results


def logged_start(started, release) -> List[str]:
    """A job that appends its pid to ``started`` once, then runs until ``release`` exists."""
    return [PY, "-c", "import os, time\nwith open(%r, 'a') as f:\n    f.write('%%d\\n' %% "
            "os.getpid())\nwhile not os.path.exists(%r):\n    time.sleep(0.05)\n"
            % (str(started), str(release))]


def test_concurrent_launches_with_repeated_keys_start_each_job_once(start_agent, tmp_path):
    state = str(tmp_path / "host")
    start_agent(HOST, state).call("hello")  # the daemon is up
    started, release = tmp_path / "started", tmp_path / "release"
    argv = logged_start(started, release)

    def params(i: int) -> Dict[str, Any]:
        key = i % 8
        if key < 4:  # a MIG instance of its own, created by the launch
            return dict(key="k-%d" % key, gpu=0, argv=argv,
                        mig={"profile": "1g.10gb", "start": key})
        return dict(key="k-%d" % key, gpu=1, memory_mib=1000, argv=argv)

    def launch(i: int) -> Dict[str, Any]:
        client = Client(state)
        try:
            return client.call("job.launch", **params(i))
        finally:
            client.close()

    replies = in_threads(48, launch)
    assert [r.get("error") for r in replies] == [None] * 48
    by_key: Dict[str, set] = {}
    for reply in replies:
        job = reply["result"]
        by_key.setdefault(job["key"], set()).add((job["id"], job["pid"], job["instance"]))
    assert sorted(by_key) == ["k-%d" % k for k in range(8)]
    assert all(len(seen) == 1 for seen in by_key.values()), by_key  # one job per key
    pids = sorted(pid for seen in by_key.values() for _, pid, _ in seen)
    wait_until(lambda: started.exists() and len(started.read_text().split()) >= 8, "starts")
    assert sorted(map(int, started.read_text().split())) == pids  # one process per key
    probe = Client(state)
    instances = probe.call("inventory")["result"]["gpus"][0]["instances"]
    assert sorted(i["start"] for i in instances) == [0, 1, 2, 3]  # one instance per key
    held = sorted(inst for seen in by_key.values() for _, _, inst in seen if inst)
    assert held == sorted(i["uuid"] for i in instances)
    release.touch()
    for seen in by_key.values():
        ((job_id, _, _),) = seen
        assert probe.call("job.get", job=job_id)["result"]["state"] in ("running", "exited")
    probe.close()


def test_different_keys_racing_for_one_slot_never_share_it(start_agent, tmp_path):
    state = str(tmp_path / "host")
    start_agent(HOST, state).call("hello")
    release = tmp_path / "release"
    argv = logged_start(tmp_path / "started", release)

    def launch(i: int) -> Dict[str, Any]:
        client = Client(state)
        try:
            return client.call("job.launch", key="k-race-%d" % i, gpu=0, argv=argv,
                               mig={"profile": "3g.40gb", "start": 4})
        finally:
            client.close()

    replies = in_threads(12, launch)
    won = [r["result"] for r in replies if "result" in r]
    lost = [r["error"] for r in replies if "error" in r]
    assert len(won) == 1 and len(lost) == 11
    assert {rpc.error_class(e["code"]) for e in lost} == {"capacity"}
    release.touch()


@pytest.mark.parametrize("method, params", [
    ("mig.destroy", {}), ("mig.apply", {"profile": "7g.80gb", "destroy_idle": True})])
def test_a_launch_onto_an_instance_a_mig_change_is_destroying_waits_and_finds_it_gone(
        start_agent, tmp_path, method, params):
    """A MIG change that destroys an idle instance (held inside NVML here) and a launch onto
    that instance: the launch waits for the change and is refused, the instance gone; it is
    never recorded as holding an instance that no longer exists."""
    state = str(tmp_path / "host")
    agent = start_agent("1xA100-80GB:mig", state)
    uuid = agent.call("mig.apply", gpu=0, profile="3g.40gb", start=4)["instance"]["uuid"]
    gate = tmp_path / "gate"
    agent.call("sim.hold", function="nvmlGpuInstanceDestroy", gate=str(gate))
    answers: Dict[str, Dict[str, Any]] = {}

    def call(name: str, method: str, **params: Any) -> None:
        client = Client(state)
        answers[name] = client.call(method, **params)
        client.close()

    change = threading.Thread(target=call, args=("change", method), kwargs=dict(
        params, gpu=0, **({"instance": uuid} if method == "mig.destroy" else {})))
    change.start()
    wait_until(lambda: os.path.exists(str(gate) + ".held"), "the change to be inside NVML")
    launch = threading.Thread(target=call, args=("launch", "job.launch"), kwargs=dict(
        key="k-onto", gpu=0, instance=uuid, argv=["sleep", "60"]))
    launch.start()
    launch.join(2)  # not answered while the change is under way (it was, and ran, before)
    assert launch.is_alive(), answers.get("launch")
    gate.touch()
    change.join(60)
    launch.join(60)
    assert "result" in answers["change"], answers["change"]
    assert answers["launch"]["error"]["code"] == rpc.INSTANCE_NOT_FOUND, answers["launch"]
    assert uuid not in [i["uuid"] for i in agent.call("snapshot")["gpus"][0]["instances"]]
    assert agent.call("job.list")["jobs"] == []


def test_the_watchdog_stops_an_over_cap_job_while_launches_are_held_in_mig_creation(
        start_agent, tmp_path):
    state = str(tmp_path / "host")
    agent = start_agent(HOST, state, "--watchdog-grace-s", "0.5")
    over = agent.call("job.launch", key="k-over", gpu=1, memory_mib=1000,
                      argv=slow_to_stop_simload(500))
    wait_until(lambda: any(p["pid"] == over["pid"] for p in agent.call("snapshot")["gpus"][1][
        "processes"]), "the job's GPU memory")
    watcher = Client(state)
    watcher.call("subscribe")
    gate = tmp_path / "gate"
    agent.call("sim.hold", function="nvmlDeviceCreateGpuInstanceWithPlacement", gate=str(gate))
    release = tmp_path / "release"
    argv = logged_start(tmp_path / "started", release)
    storm: List[Dict[str, Any]] = []

    def mig_launch(i: int) -> None:
        client = Client(state)
        try:
            storm.append(client.call("job.launch", key="k-storm-%d" % i, gpu=0, argv=argv,
                                     mig={"profile": "1g.10gb", "start": i}))
        finally:
            client.close()

    threads = [threading.Thread(target=mig_launch, args=(i,)) for i in range(7)]
    for t in threads:
        t.start()
    held = str(gate) + ".held"
    wait_until(lambda: os.path.exists(held), "a launch to be inside MIG creation")
    # launches on the other GPU go on meanwhile, and so does every other client
    beside = [agent.call("job.launch", key="k-beside-%d" % i, gpu=1, memory_mib=100,
                         argv=argv) for i in range(3)]
    assert [j["state"] for j in beside] == ["running"] * 3
    assert len(agent.call("job.list")["jobs"]) >= 4
    # now the job goes over its cap: SIGTERM is ignored, so it takes the SIGKILL as well
    agent.call("sim.set_process_memory", pid=over["pid"], used_mib=1500)
    done = wait_job(agent, over["id"])
    assert (done["state"], done["reason"]) == ("killed",
                                               "exceeded its 1000 MiB cap: used 1500 MiB")
    assert not alive(over["pid"])
    # ... all of it while the storm was held: one launch in MIG creation, none answered yet
    with open(held) as f:
        assert len(f.read().splitlines()) == 1  # the others wait for that GPU's lock
    assert storm == [] and all(t.is_alive() for t in threads)
    gate.touch()
    for t in threads:
        t.join(60)
    assert sorted(r["result"]["mig"]["start"] for r in storm) == list(range(7))
    # the subscriber heard of the kill before any of the held launches ran
    events = []
    while len([e for e in events if e.get("state") == "running" and
               e["key"].startswith("k-storm")]) < 7:
        msg = watcher.next_pushed()
        if msg["method"] == "job":
            events.append(msg["params"])
    order = [(e["key"], e["state"]) for e in events]
    killed_at = order.index(("k-over", "killed"))
    assert all(i > killed_at for i, (key, state) in enumerate(order)
               if key.startswith("k-storm") and state == "running")
    watcher.close()
    release.touch()


@pytest.mark.parametrize("gpu", [0, 1])
def test_a_launch_held_in_mig_creation_holds_no_other_gpu(start_agent, tmp_path, gpu):
    """With two MIG GPUs, a launch held on GPU 0 lets a MIG launch on GPU 1 through; a second
    one on GPU 0 waits behind it."""
    state = str(tmp_path / "host")
    agent = start_agent("2xA100-80GB:mig", state)
    gate = tmp_path / "gate"
    agent.call("sim.hold", function="nvmlDeviceCreateGpuInstanceWithPlacement", gate=str(gate))
    argv = logged_start(tmp_path / "started", tmp_path / "release")
    first: List[Dict[str, Any]] = []

    def held_launch() -> None:
        client = Client(state)
        first.append(client.call("job.launch", key="k-held", gpu=0, argv=argv,
                                 mig={"profile": "1g.10gb", "start": 0}))
        client.close()

    holder = threading.Thread(target=held_launch)
    holder.start()
    wait_until(lambda: os.path.exists(str(gate) + ".held"), "the launch to be held")
    second: List[Dict[str, Any]] = []

    def other_launch() -> None:
        client = Client(state)
        second.append(client.call("job.launch", key="k-other", gpu=gpu, argv=argv,
                                  mig={"profile": "1g.10gb", "start": 1}))
        client.close()

    other = threading.Thread(target=other_launch)
    other.start()
    if gpu == 1:  # its own GPU: it is held at the gate too, not by GPU 0's lock
        wait_until(lambda: len(open(str(gate) + ".held").read().splitlines()) == 2,
                   "the launch on GPU 1 to reach MIG creation")
    else:  # the same GPU: recorded, then waiting for that GPU's lock, not in MIG creation
        wait_until(lambda: any(j["key"] == "k-other" for j in agent.call("job.list")["jobs"]),
                   "the second launch to be recorded")
        assert other.is_alive()
        assert len(open(str(gate) + ".held").read().splitlines()) == 1
    gate.touch()
    holder.join(60)
    other.join(60)
    assert first[0]["result"]["state"] == second[0]["result"]["state"] == "running"


def test_a_watchdog_pass_that_saw_a_start_before_its_relaunch_leaves_it_to_the_launch(
        in_process, tmp_path):
    """A start the daemon left ``starting`` (it died mid-launch), listed by a watchdog pass just
    before a retry of its key took it: the pass must leave it to that launch, which starts it.
    The daemon's parts run here, so the pass and the launch interleave exactly so; the job and
    its shim are real processes."""
    from remote_agent.gpu import fake_pynvml as nv
    from remote_agent.jobs.store import Job
    from remote_agent.jobs.watch import Watchdog

    sup, _ = in_process("1xA100-80GB:mig")
    req = launch_request(key="k-left", gpu=0, mig={"profile": "3g.40gb", "start": 4},
                         argv=[PY, "-c", "import time; time.sleep(600)"])
    left = sup.store.insert(Job(  # as a daemon killed mid-launch left it
        id=0, key=req.key, fingerprint=req.fingerprint(), name=req.name, argv=req.argv,
        env={}, cwd=None, gpus=[0], gpu_uuids=["GPU-x"], instance=None, mig=req.mig,
        memory_mib=None, created_at=0.0))
    (seen,) = sup.watched()  # a pass lists it ...
    gate = tmp_path / "gate"
    nv.sim_hold("nvmlDeviceCreateGpuInstanceWithPlacement", str(gate))
    answers: List[Any] = []
    launch = launcher(sup, req, answers)
    launch.start()  # ... and a retry of the key takes it before the pass comes to it
    wait_until(lambda: os.path.exists(str(gate) + ".held"), "the relaunch in MIG creation")
    Watchdog(sup)._resolve_starting(seen)
    gate.touch()
    launch.join(60)
    (job,) = answers
    assert isinstance(job, Job), job.message
    assert (job.id, job.state) == (left.id, "running") and alive(job.pid)
    assert sup.store.get(left.id).state == "running"


def test_a_retry_of_a_launch_in_flight_onto_an_instance_waits_holding_no_mig_lock(in_process):
    """Two launches of one key onto an existing instance, the second past its first look for
    the key before the first recorded it: while the first is starting, the second waits for it
    without that GPU's MIG lock (a MIG change on the GPU goes on), then answers the same job.
    The daemon's parts run here so the two interleave exactly so; the job is a real process."""
    from contextlib import contextmanager

    sup, agent = in_process("1xA100-80GB:mig")
    uuid = agent.mig_apply(rpc.Params("mig.apply", {"gpu": 0, "profile": "3g.40gb", "start": 4},
                                      ("gpu", "profile", "start")))["instance"]["uuid"]
    req = launch_request(key="k-twice", gpu=0, instance=uuid,
                         argv=[PY, "-c", "import time; time.sleep(600)"])
    first_in, first_go, second_in = threading.Event(), threading.Event(), threading.Event()
    second_at, starting, start_go = threading.Event(), threading.Event(), threading.Event()
    locked, spawn = sup._instance_lock, sup._spawn_shim
    calls: List[int] = []
    counting = threading.Lock()

    @contextmanager
    def instance_lock(r, infos):
        with counting:
            n = len(calls)
            calls.append(n)
        if n == 1:  # the second launch: past its first look for the key, at the MIG lock
            second_at.set()
        with locked(r, infos):
            if n == 0:  # the first launch: held before it records the job
                first_in.set()
                assert first_go.wait(60)
            elif n == 1:  # the second, after the first recorded it and went on to start it
                second_in.set()
            yield

    def spawn_shim(job, folder):
        starting.set()
        assert start_go.wait(60)
        return spawn(job, folder)

    sup._instance_lock, sup._spawn_shim = instance_lock, spawn_shim
    answers: List[Any] = []
    threads = [launcher(sup, req, answers) for _ in range(2)]
    try:
        threads[0].start()
        assert first_in.wait(60)
        threads[1].start()  # no job of the key yet: on to the GPU's MIG lock, held by the first
        assert second_at.wait(60) and sup.store.by_key("k-twice") is None
        first_go.set()
        assert starting.wait(60) and second_in.wait(60)
        lock = agent.mig_lock(0)
        assert lock.acquire(timeout=60), "the waiting retry holds the GPU's MIG lock"
        lock.release()
        start_go.set()
        for t in threads:
            t.join(60)
        first, second = answers
        assert not isinstance(first, rpc.RpcError) and not isinstance(second, rpc.RpcError)
        assert first.id == second.id and second.state == "running" and alive(second.pid)
        assert len(sup.store.active()) == 1
    finally:  # (on a failure too: no launch left to start a job after the host is stopped)
        first_go.set()
        start_go.set()
        for t in threads:
            if t.ident is not None:  # started
                t.join(60)


def test_a_shim_that_ends_before_it_claims_its_job_is_fenced_off_and_the_key_starts_it(
        in_process, tmp_path, monkeypatch):
    """A shim that ended before it claimed its job (killed, or a full disk) ran nothing: the
    launch fences the job off with the daemon's own claim, so no shim still on its way could
    start it, and records it ended saying so. The same key launched again takes the fence back
    and starts the job, once."""
    from remote_agent.jobs import supervisor

    sup, _ = in_process("1xL4")
    started, release = tmp_path / "started", tmp_path / "release"
    req = launch_request(key="k-fenced", gpu=0, memory_mib=100,
                         argv=logged_start(started, release))
    real = supervisor.agent_command
    # a real process in the shim's place that ends at once, before any claim
    monkeypatch.setattr(supervisor, "agent_command", lambda: [PY, "-c", "raise SystemExit(1)"])
    with pytest.raises(rpc.RpcError) as refused:
        sup.launch(req)
    assert refused.value.code == rpc.HOST_FAILED, refused.value.message
    assert "its shim could not claim the job" in refused.value.message
    job = sup.store.by_key("k-fenced")
    assert (job.state, job.never_ran) == ("exited", True)
    claim = os.path.join(sup.job_dir(job), "shim.claim")
    with open(claim, "rb") as f:
        assert f.read() == supervisor.FENCE  # no shim may start it now
    assert not started.exists()
    monkeypatch.setattr(supervisor, "agent_command", real)
    again = sup.launch(req)
    try:
        assert (again.id, again.state) == (job.id, "running") and alive(again.pid)
        wait_until(lambda: started.exists() and started.read_text().split() == [
            str(again.pid)], "the job to start, once")
    finally:
        release.touch()
