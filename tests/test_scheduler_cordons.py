"""The scheduler honours cordons and drains, end to end: simulated hosts over the local
transport (real agent daemons, real job processes), a real SQLite store, passes run by the test.
No new work lands on a host or GPU out of service while passes run; what ran there runs on."""

from __future__ import annotations

from dataclasses import replace

from fractui.config import QueueConfig
from fractui.sched.cordons import DRAINED, DRAINING, state
from fractui.store import Slot
from fractui.store.intents import Asker, move_by_hand
from fractui.store.model import CORDON, DRAIN
from tests import localfleet

local_fleet = localfleet.local_fleet
WHOLE = QueueConfig(name="whole", gpus=1)


def on(f, job_id: int):
    slot = f.store.get(job_id).slot
    return (slot.host, slot.gpus) if slot else None


def passes(f, n: int) -> None:
    for _ in range(n):
        f.scheduler.step()
        f.scheduler.settle(30)


def test_no_new_work_lands_on_a_cordoned_host_and_it_comes_back_when_uncordoned(local_fleet):
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [WHOLE])
    f.store.cordon("gpu-a", None, CORDON, "ops", "maintenance")
    first, second = f.submit("whole"), f.submit("whole")
    f.until(lambda: "running" in f.states().values())
    passes(f, 5)
    assert f.states() == {first.id: "running", second.id: "pending"}
    assert on(f, first.id) == ("gpu-b", (0,))
    assert [j for j in f.agent_jobs() if j["host"] == "gpu-a"] == []
    assert f.store.get(second.id).reason == (
        "no room: no GPU in service has a free slice for it (out of service: gpu-a)")
    f.store.uncordon("gpu-a", None, "ops", "back")
    f.until(lambda: f.states()[second.id] == "running")
    assert on(f, second.id) == ("gpu-a", (0,))


def test_a_job_of_two_gpus_beside_a_cordoned_one_says_it_wants_two_in_service_on_a_host(
        local_fleet):
    f = local_fleet({"gpu-a": "2xL4"}, [QueueConfig(name="two", gpus=2)])
    f.store.cordon("gpu-a", 1, CORDON, "ops", "fan")
    pair = f.submit("two")
    f.until(lambda: f.store.get(pair.id).reason is not None)
    assert f.store.get(pair.id).reason == (
        "no room: a job's GPUs are all on one host and of one model, and no host has 2 such "
        "GPUs in service free for it at once (out of service: gpu-a gpu1)")


def test_a_cordoned_gpu_takes_nothing_new_while_the_host_s_other_gpus_do(local_fleet):
    f = local_fleet({"gpu-a": "2xL4"}, [WHOLE])
    f.store.cordon("gpu-a", 0, CORDON, "ops", "bad fan")
    jobs = [f.submit("whole") for _ in range(3)]
    f.until(lambda: "running" in f.states().values())
    passes(f, 5)
    assert sorted(f.states().values()) == ["pending", "pending", "running"]
    assert {on(f, j.id) for j in jobs} == {("gpu-a", (1,)), None}
    assert all(j["gpus"] == [1] for j in f.agent_jobs())


def test_a_drain_leaves_running_work_running_and_says_drained_once_it_ended(local_fleet):
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [WHOLE])
    first = f.submit("whole")
    f.until(lambda: f.states()[first.id] == "running")
    host = on(f, first.id)[0]
    drain = f.store.cordon(host, None, DRAIN, "ops", "kernel update")
    second, third = f.submit("whole"), f.submit("whole")
    f.until(lambda: "running" in (f.states()[second.id], f.states()[third.id]))
    passes(f, 5)
    assert f.states()[first.id] == "running"  # the drain stopped nothing
    assert {on(f, j.id) for j in (second, third)} - {None} == {
        ("gpu-b" if host == "gpu-a" else "gpu-a", (0,))}
    assert state(drain, f.store.jobs()) == DRAINING
    f.store.ended(first.id, ("running",), "done", None, "ops", "over", "end")  # as if it ended
    assert state(drain, f.store.jobs()) == DRAINED


def test_a_decision_made_before_a_cordon_is_not_launched_but_goes_back_to_its_queue(
        local_fleet):
    f = local_fleet({"gpu-a": "2xL4"}, [WHOLE])
    job = f.submit("whole")
    f.store.place(job.id, Slot("gpu-a", (1,), memory_mib=1000), "ops", "by hand", manual=True)
    f.store.cordon("gpu-a", 1, CORDON, "ops", "bad fan")
    f.until(lambda: f.states()[job.id] == "running")
    again = f.store.get(job.id)
    assert (again.attempt, again.slot.gpus) == (1, (0,))  # requeued, then placed elsewhere
    assert [e.why for e in f.store.audit_log(job.id) if e.action == "requeued"] == [
        "not launched: gpu-a gpu1 is cordoned (by ops): it takes no new work until an admin "
        "uncordons it (fractui uncordon gpu-a 1)"]


def test_a_decision_not_launched_on_a_drain_says_it_as_the_map_does_once_it_left(local_fleet):
    """Two decisions made before a drain of their GPU, nothing else there: neither is
    launched, both go back to their queue. Each says the drain as the map says it once it has
    left (the jobs not launched are not what keeps it draining): the first draining, the
    second still there; the second drained, as it is once both have left."""
    f = local_fleet({"gpu-a": "2xL4"}, [WHOLE])
    first, second = f.submit("whole"), f.submit("whole")
    for job in (first, second):
        f.store.place(job.id, Slot("gpu-a", (1,), memory_mib=1000), "ops", "by hand",
                      manual=True)
    drain = f.store.cordon("gpu-a", 1, DRAIN, "ops", "bad fan")
    f.until(lambda: "running" in f.states().values())
    assert all(on(f, j.id) in (None, ("gpu-a", (0,))) for j in (first, second))
    assert state(drain, f.store.jobs()) == DRAINED
    said = [[e.why for e in f.store.audit_log(j.id) if e.action == "requeued"]
            for j in (first, second)]
    assert said == [["not launched: gpu-a gpu1 is %s (by ops): it takes no new work until an "
                     "admin uncordons it (fractui uncordon gpu-a 1)" % now]
                    for now in (DRAINING, DRAINED)], said


def test_a_drain_of_a_moves_target_sends_the_job_back_to_its_queue_once_it_stopped(
        local_fleet):
    """A job moving from gpu 0 to gpu 1, and gpu 1 drained meanwhile: draining while the job
    stops to move there (the move holds it, cordons.holds); once stopped, its launch finds
    the target drained and sends it back to its queue, so it never runs there."""
    f = local_fleet({"gpu-a": "2xL4"}, [WHOLE])
    f.store.cordon("gpu-a", 1, CORDON, "ops", "keep it free")
    job = f.submit("whole")
    f.until(lambda: f.states()[job.id] == "running")
    f.store.uncordon("gpu-a", 1, "ops", "free")
    job = f.store.get(job.id)
    assert job.slot.gpus == (0,)
    job = move_by_hand(f.store, job, replace(job.slot, gpus=(1,)), Asker("head"))
    drain = f.store.cordon("gpu-a", 1, DRAIN, "ops", "bad fan")
    assert state(drain, f.store.jobs()) == DRAINING
    f.until(lambda: any(e.action == "requeued" for e in f.store.audit_log(job.id)))
    said = [e.why for e in f.store.audit_log(job.id) if e.action == "requeued"]
    assert said == ["not launched: gpu-a gpu1 is drained (by ops): it takes no new work until "
                    "an admin uncordons it (fractui uncordon gpu-a 1)"], said
    assert state(drain, f.store.jobs()) == DRAINED
    assert all(j.get("gpus") != [1] for j in f.agent_jobs())  # never launched there
