"""A scheduling pass over decisions of every shape the store holds: placed by the placer or by
hand, with what a placement by hand leaves open (the start, the share), on GPUs the host does
not have, profiles its GPUs do not offer, starts off the geometry. A pass must book each where
its launch will go, or leave it to its launch to be refused: it never fails, since one failed
pass is every pass until the decision ends, and then nothing is placed anywhere. (A decision
without a start, from ``fractui place --profile P``, did fail every pass.) The host is a real
agent's answers on simulated GPUs: MIG in use and idle, MIG off, no MIG."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fractui.config import QueueConfig
from fractui.sched.fleetview import HostView, build_hosts
from fractui.sched.queueing import Kept, schedule
from fractui.store.model import Job, Slot

QUEUES = [QueueConfig(name="q3g", mig="3g.40gb"), QueueConfig(name="quarter", gpu=0.25),
          QueueConfig(name="whole", gpus=1), QueueConfig(name="share", memory_gib=10,
                                                         isolation="share"),
          QueueConfig(name="q1g", mig="1g.10gb", isolation="mig")]
PROFILES = ["1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb", "1g.12gb",
            "bogus", None]


@pytest.fixture(scope="module")
def view(tmp_path_factory) -> HostView:
    """One host's view as a real agent answers on simulated GPUs: an A100 in MIG mode with a
    3g instance idle at slot 4, an L4, an H100 in MIG mode with a 1g instance idle at slot 6,
    an A100 with MIG off."""
    from remote_agent.gpu import fake_pynvml as nv
    from remote_agent.rpc import jsonrpc as rpc
    from remote_agent.service import Agent

    state = tmp_path_factory.mktemp("host")
    os.mkdir(state / "sim", 0o700)
    nv.sim_open(str(state / "sim" / "gpus.json"), "1xA100-80GB:mig,1xL4,1xH100:mig,1xA100-80GB")
    agent = Agent(nv, "sim", sim=nv)
    for gpu, profile, start in ((0, "3g.40gb", 4), (2, "1g.10gb", 6)):
        agent.mig_apply(rpc.Params("mig.apply", {"gpu": gpu, "profile": profile, "start": start},
                                   ("gpu", "profile", "start")))
    return HostView("h", "online", agent.hello(rpc.Params("hello", {}, ()), []),
                    agent.snapshot(rpc.Params("snapshot", {}, ())), {})


slots = st.builds(Slot, st.just("h"), st.lists(st.integers(-1, 5), min_size=1, max_size=2,
                                               unique=True).map(tuple),
                  st.sampled_from(PROFILES), st.none() | st.integers(-1, 8),
                  st.sampled_from([None, 0, 1, 1000, 40000, 10 ** 9]),
                  st.sampled_from([0.0, 0.25, 1.0]), st.sampled_from([None, "v1"]))


@st.composite
def jobs(draw):
    """Decisions (placed, running, stopping: each books its slot) and pending jobs."""
    out = []
    for i, slot in enumerate(draw(st.lists(slots, max_size=4)), 1):
        queue = draw(st.sampled_from(QUEUES))
        out.append(Job(i, queue.name, None, "n", ("x",), queue.request(),
                       draw(st.sampled_from(["placed", "running", "stopping"])), 0.0, 0.0,
                       slot=slot, manual=draw(st.booleans())))
    for i in range(draw(st.integers(1, 5))):
        queue = draw(st.sampled_from(QUEUES))
        out.append(Job(100 + i, queue.name, None, "n", ("x",), queue.request(), "pending",
                       float(i), float(i)))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture], derandomize=True)
@given(jobs())
def test_a_pass_never_fails_on_a_decision_the_store_holds(view, jobs):
    hosts = build_hosts([view], jobs, "uid")
    assert [h.name for h in hosts] == ["h"]
    result = schedule([view], jobs, QUEUES, [], "uid")
    pending = {j.id for j in jobs if j.state == "pending"}
    assert {d.job for d in result.decisions} <= pending


def test_a_job_whose_cpus_or_ram_no_host_has_says_so_not_no_room(view):
    """A queue that books more CPUs or RAM than any host it may use has waits forever: it says
    so, with the largest host's numbers and what to change, not "no room" (which sends the
    admin looking for busy GPUs on a fleet whose GPUs are all free)."""
    cpus = int(view.hello["cpus"])
    ram_gib = int(view.hello["memory_mib"]) // 1024
    queues = [QueueConfig(name="many-cpus", gpu=0.25, cpus=4096),
              QueueConfig(name="much-ram", gpu=0.25, memory=65536),
              QueueConfig(name="fits", gpu=0.25, cpus=cpus, memory=ram_gib)]
    jobs = [Job(i, q.name, None, "n", ("x",), q.request(), "pending", float(i), 0.0)
            for i, q in enumerate(queues, 1)]
    result = schedule([view], jobs, queues, [], "uid")
    largest = "the largest, h, has %g CPUs and %g GiB RAM: lower the queue's cpus or memory " \
              "in the config, or add a larger host" % (
                  view.hello["cpus"], round(view.hello["memory_mib"] / 1024, 1))
    assert result.waiting == {
        1: "no host it may use has the CPUs and RAM its queue books (4096 CPUs, 0 GiB RAM); "
           + largest,
        2: "no host it may use has the CPUs and RAM its queue books (0 CPUs, 65536 GiB RAM); "
           + largest}
    assert [d.job for d in result.decisions] == [3]


@pytest.mark.parametrize("books, has, says", [
    (2, 1, "(2 CPUs, 0 GiB RAM); the largest, h, has 1 CPU and "),
    (1, 0.5, "(1 CPU, 0 GiB RAM); the largest, h, has 0.5 CPUs and "),
])
def test_one_cpu_a_queue_books_or_a_host_has_is_said_as_one(view, books, has, says):
    """A queue that books one CPU, or a host of one, was said to book or have "1 CPUs"."""
    small = replace(view, hello=dict(view.hello, cpus=has))
    queue = QueueConfig(name="q", gpu=0.25, cpus=books)
    job = Job(1, "q", None, "n", ("x",), queue.request(), "pending", 1.0, 0.0)
    assert says in schedule([small], [job], [queue], [], "uid").waiting[1]


def _l4_host(root, name: str) -> HostView:
    """A host of two L4s as a real agent answers on simulated GPUs."""
    from remote_agent.gpu import fake_pynvml as nv
    from remote_agent.rpc import jsonrpc as rpc
    from remote_agent.service import Agent

    os.makedirs(root / name / "sim", 0o700)
    nv.sim_open(str(root / name / "sim" / "gpus.json"), "2xL4")
    agent = Agent(nv, "sim", sim=nv)
    return HostView(name, "online", agent.hello(rpc.Params("hello", {}, ()), []),
                    agent.snapshot(rpc.Params("snapshot", {}, ())), {})


@pytest.mark.parametrize("stopping_on", ["online", "offline"])
def test_a_stop_under_way_holds_preemptions_back_only_where_its_host_answers(tmp_path,
                                                                             stopping_on):
    """A team within its quota waits, every GPU held; a job of the borrowers' team stops to be
    cancelled on the other host. Where that host answers, the room it makes is the starved
    job's soon: none is preempted meanwhile. Where it does not, its stop waits for the host (or
    host_lost_s) and its room is none a job can take: a borrower is preempted now, as without
    the stop. Before, any cancel or preemption under way anywhere held every preemption back."""
    from fractui.config import TeamConfig

    whole = QueueConfig(name="whole", gpus=1)
    teams = [TeamConfig("vision", quota_gpus=1), TeamConfig("nlp", quota_gpus=1,
                                                            over_quota=True)]
    views = [_l4_host(tmp_path, "a"), replace(_l4_host(tmp_path, "b"), state=stopping_on)]

    def held(i: int, host: str, gpu: int, **kw) -> Job:
        return Job(i, "whole", "nlp", "n", ("x",), whole.request(), "running", 0.0, 0.0,
                   slot=Slot(host, (gpu,), charge=1.0), **kw)

    jobs = [held(1, "a", 0), held(2, "a", 1, preemptible=True),
            held(3, "b", 0, preemptible=True), held(4, "b", 1, preemptible=True),
            Job(5, "whole", "vision", "n", ("x",), whole.request(), "pending", 1.0, 1.0)]
    jobs[3] = replace(jobs[3], state="stopping", stop_intent="cancel")
    result = schedule(views, jobs, [whole], teams, "uid")
    assert [(p.victim, p.for_job) for p in result.preemptions] == (
        [(2, 5)] if stopping_on == "offline" else []), result


def test_a_job_no_reachable_host_may_take_says_so_not_no_room(view):
    """Before its hosts answer (a scheduler's first pass) or while they are down, a waiting
    job says which hosts it waits for, not "no room" (GPUs full that no one has heard from),
    and starts no preemption; a job a reachable host may take still finds room there."""
    queues = [QueueConfig(name="there", gpu=0.25, hosts=("far", "near")),
              QueueConfig(name="here", gpu=0.25, hosts=("h",))]
    jobs = [Job(i, q.name, None, "n", ("x",), q.request(), "pending", float(i), 0.0)
            for i, q in enumerate(queues, 1)]
    views = [HostView("far", "offline"), HostView("near", "connecting"), view]
    result = schedule(views, jobs, queues, [], "uid")
    assert result.waiting == {1: "no host it may use is reachable now (far offline, near "
                                 "connecting): it waits for one"}
    assert [d.job for d in result.decisions] == [2] and result.preemptions == []


class _Counted(list):
    """A fleet's views that count how often a pass looks through them."""

    looks = 0

    def __iter__(self):
        self.looks += 1
        return super().__iter__()


def test_jobs_waiting_for_unreached_hosts_look_through_the_fleet_once_per_queue():
    """Which hosts a waiting job may use and none answers is found once for each set of hosts
    a queue names, not once per job: at 10,000 GPUs (1,250 hosts) all offline, 5,000 jobs
    looking through every host's view made a pass of a second for this alone."""
    queues = [QueueConfig(name="any", gpus=1), QueueConfig(name="pinned", gpus=1,
                                                            hosts=("h1", "h2"))]
    views = _Counted(HostView("h%d" % i, "offline") for i in range(4))
    jobs = [Job(i, queues[i % 2].name, None, "n", ("x",), queues[i % 2].request(), "pending",
                float(i), 0.0) for i in range(1, 41)]
    result = schedule(views, jobs, queues, [], "uid")
    assert result.waiting[1] == "no host it may use is reachable now (h1 offline, h2 " \
                                "offline): it waits for one"
    assert result.waiting[2] == "no host it may use is reachable now (h0 offline, h1 " \
                                "offline, h2 offline and 1 more): it waits for one"
    assert len(result.waiting) == 40 and views.looks <= 6, views.looks


def test_a_pass_kept_says_the_unreached_hosts_as_they_are_now():
    """A pass's result is kept while nothing it reads changed; the state of a host no job can
    use is read too, in why a job waits: one that went from connecting to offline (its SSH
    refused) was said to be connecting for as long as nothing else changed."""
    queue = QueueConfig(name="any", gpu=0.25)
    jobs = [Job(1, "any", None, "n", ("x",), queue.request(), "pending", 1.0, 0.0)]
    kept = Kept()
    said = [schedule([HostView("far", state)], jobs, [queue], [], "uid", kept=kept).waiting[1]
            for state in ("connecting", "offline")]
    assert said == ["no host it may use is reachable now (far %s): it waits for one" % state
                    for state in ("connecting", "offline")]
