"""Placement preview: every slot a pending job could take, its plan in words, and a launch that
happens exactly as previewed — or not at all when the GPU changed in between."""

from __future__ import annotations

import time

from fractui.config import QueueConfig
from fractui.sched.fleetview import HostView
from fractui.sched.preview import candidates
from fractui.store.intents import Asker, place_by_hand
from tests import localfleet

local_fleet = localfleet.local_fleet


def views(f) -> list:
    return [HostView(s.name, s.state, s.hello, s.snapshot, dict(s.jobs))
            for s in f.fleet.statuses()]


def wait_snapshot(f, host: str, check) -> None:
    """Until the host's pushed snapshot shows it (no scheduler pass runs meanwhile)."""
    deadline = time.time() + 30
    while not check(f.fleet.session(host).status.snapshot):
        assert time.time() < deadline
        time.sleep(0.05)


def test_candidates_list_every_slot_with_its_plan_and_mark_the_schedulers_choice(local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB:mig", "gpu-b": "1xL4"},
                    [QueueConfig(name="3g", mig="3g.40gb"), QueueConfig(name="half", gpu=0.5)])
    a = f.fleet.session("gpu-a")
    idle = a.call("mig.apply", {"gpu": 0, "profile": "1g.10gb", "start": 0})["instance"]
    wait_snapshot(f, "gpu-a", lambda s: s["gpus"][0]["instances"])
    version = a.status.snapshot["gpus"][0]["layout_version"]
    job = f.submit("3g")
    found = candidates(views(f), f.store.jobs(), f.store.uid, job)
    assert [(c.host, c.gpus, c.profile, c.start) for c in found] == [
        ("gpu-a", (0,), "3g.40gb", 4), ("gpu-a", (0,), "3g.40gb", 0)]
    assert [c.chosen for c in found] == [True, False]
    assert found[0].plan == "create 3g.40gb at slot 4 on gpu0 of gpu-a; no running job touched"
    assert found[1].plan == ("destroy idle 1g.10gb at slot 0 (%s); create 3g.40gb at slot 0 on "
                             "gpu0 of gpu-a; no running job touched" % idle["uuid"])
    assert {c.layout_version for c in found} == {version}
    assert found[0].charge == round(3 / 7, 6)

    half = f.submit("half")
    shares = [c for c in candidates(views(f), f.store.jobs(), f.store.uid, half)
              if c.host == "gpu-b"]
    assert [(c.gpus, c.memory_mib, c.plan) for c in shares] == [
        ((0,), 11517, "a 11517 MiB share of gpu0 of gpu-b (23034 of 23034 MiB free)")]


def place_previewed(f, start: int):
    """A 3g job placed by hand on the previewed candidate at ``start`` (as the TUI does)."""
    job = f.submit("3g")
    pick = next(c for c in candidates(views(f), f.store.jobs(), f.store.uid, job)
                if c.start == start)
    place_by_hand(f.store, job, pick.slot(), Asker("admin"))
    return job


def test_a_confirmed_preview_runs_exactly_as_shown(local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [QueueConfig(name="3g", mig="3g.40gb")])
    job = place_previewed(f, 0)
    f.until(lambda: f.store.get(job.id).state == "running")
    record = next(r for r in f.agent_jobs() if r["key"] == job.key(f.store.uid))
    assert (record["mig"]["profile"], record["mig"]["start"]) == ("3g.40gb", 0)


def test_a_stale_preview_is_never_launched_and_the_job_says_why(local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [QueueConfig(name="3g", mig="3g.40gb")])
    job = place_previewed(f, 4)
    a = f.fleet.session("gpu-a")
    a.call("mig.apply", {"gpu": 0, "profile": "1g.10gb", "start": 0})  # someone else, meanwhile
    wait_snapshot(f, "gpu-a", lambda s: s["gpus"][0]["instances"])
    f.scheduler.step()
    f.scheduler.settle()  # the pass's launch runs on the host's lane
    back = f.store.get(job.id)
    assert (back.state, back.attempt) == ("pending", 1)
    assert back.reason.startswith("not launched: the GPU changed since the placement was "
                                  "previewed (the layout of GPU 0 changed since the plan was made")
    layout = a.call("snapshot")["gpus"][0]["instances"]
    assert [(i["profile"], i["start"]) for i in layout] == [("1g.10gb", 0)]  # nothing created
    assert [r for r in f.agent_jobs() if r["key"] == job.key(f.store.uid)] == []


def test_the_preview_offers_a_mode_change_in_words_and_the_launch_makes_it(local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB", "gpu-b": "1xH100:mig"},
                    [QueueConfig(name="3g", mig="3g.40gb"),
                     QueueConfig(name="share", memory_gib=10, isolation="share")])
    for host in ("gpu-a", "gpu-b"):  # what a pass reads: each GPU's processes (none)
        wait_snapshot(f, host, lambda s: s and "processes" in s["gpus"][0])
    job = f.submit("3g")
    found = candidates(views(f), f.store.jobs(), f.store.uid, job)
    on_a = [c for c in found if c.host == "gpu-a"]
    assert sorted((c.profile, c.start) for c in on_a) == [("3g.40gb", 0), ("3g.40gb", 4)]
    first = next(c for c in on_a if c.start == 0)
    assert first.plan == ("turn MIG on on gpu0 of gpu-a (a GPU reset, made only while nothing "
                          "runs there), then create 3g.40gb at slot 0 on gpu0 of gpu-a")
    assert first.charge == round(3 / 7, 6) and first.layout_version is None
    # a share on the idle H100 with MIG on: MIG off first, no reset on a Hopper
    share = f.submit("share")
    off = [c for c in candidates(views(f), f.store.jobs(), f.store.uid, share)
           if c.host == "gpu-b"]
    assert [c.plan for c in off] == [
        "turn MIG off on gpu0 of gpu-b, then a 10240 MiB share of gpu0 of gpu-b (81559 of "
        "81559 MiB free)"]
    # what was previewed is what happens: the launch turns MIG on, then makes the slice
    place_by_hand(f.store, job, first.slot(), Asker("admin"))
    f.until(lambda: f.states()[job.id] == "running")
    gpu = f.fleet.session("gpu-a").call("snapshot")["gpus"][0]
    assert gpu["mig_mode"] is True
    assert [(i["profile"], i["start"]) for i in gpu["instances"]] == [("3g.40gb", 0)]
    assert [e.why for e in f.store.audit_log(job.id) if e.action == "mig"] == [
        "MIG mode is now on on gpu-a gpu 0"]


def test_a_host_that_pins_its_modes_is_offered_no_mode_change(local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [QueueConfig(name="3g", mig="3g.40gb")])
    wait_snapshot(f, "gpu-a", lambda s: s and "processes" in s["gpus"][0])
    job = f.submit("3g")
    pinned = [HostView(v.name, v.state, v.hello, v.snapshot, v.jobs, mode_fixed=True)
              for v in views(f)]
    assert candidates(pinned, f.store.jobs(), f.store.uid, job) == []
    assert len(candidates(views(f), f.store.jobs(), f.store.uid, job)) == 2
