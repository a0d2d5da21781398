"""A placement by hand that names no profile (``fractui place JOB HOST GPU``) takes what the
job's queue runs on there, end to end: simulated hosts over the local transport (real agent
daemons, real job processes), a real SQLite store, the fake pynvml. A MIG queue's job on a
GPU with MIG off was recorded as a memory share charged 0; its launch sent ``memory_mib 0``,
which the agent refuses as malformed, and the job failed (with MIG on pending a reset, the
launch turned MIG back off first). Now it takes the queue's profile at its best start, as if
MIG were on, its launch turning MIG on first: said and asked, or refused where the host pins
its modes, as ``--profile P --start S`` is."""

from __future__ import annotations

from dataclasses import replace

import pytest

from remote_agent.gpu.models import models

from fractui.config import QueueConfig
from fractui.sched.fleetview import FLIP_FEATURES, facts
from fractui.sched.manual import Unfit, by_hand, complete, hand_slot
from fractui.store import Slot
from fractui.store.model import PENDING, PLACED, Job
from tests import localfleet
from tests.test_sched_charge import UID, view_of
from tests.test_scheduler_mig_mode import (SHARE, SLICE, decide, gpu, mig_audit,
                                           mig_on_pending, snapshot_shows)

local_fleet = localfleet.local_fleet
TURN_ON = "turn MIG on on gpu-a gpu 0 (a GPU reset, made only while nothing runs there)"


def place(f, job, *more: str):
    return f.fractui("place", str(job.id), "gpu-a", "0", *more)


def test_a_mig_queues_job_placed_bare_on_a_gpu_with_mig_off_takes_its_profile_and_runs(
        local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE])
    f.scheduler.step()  # the inventory the command reads: gpu 0 with MIG off
    job = f.submit("slice")
    said = ("fractui: job %d on gpu-a gpu0 3g.40gb at slot 4: its launch will first %s; the "
            "scheduler checks that the GPU is idle then (if it is not, the job goes back to "
            "its queue).\n" % (job.id, TURN_ON))
    asked = place(f, job)  # no terminal to confirm on: not placed
    assert (asked.returncode, asked.stdout) == (1, ""), asked.stderr
    assert asked.stderr.startswith(said) and asked.stderr.endswith(
        "not placed: job %d stays pending\n" % job.id), asked.stderr
    assert f.store.get(job.id).slot is None
    done = place(f, job, "--yes")
    assert (done.returncode, done.stderr) == (0, said)
    assert done.stdout == "%d placed on gpu-a gpu0 3g.40gb at slot 4; the scheduler will %s, " \
        "then launch it\n" % (job.id, TURN_ON)
    slot = f.store.get(job.id).slot
    assert (slot.profile, slot.start, slot.memory_mib, slot.charge) == ("3g.40gb", 4, None,
                                                                       round(3 / 7, 6))
    again = place(f, job, "--yes")  # a retry (its answer lost): read as the first
    assert (again.returncode, again.stdout, again.stderr) == (0, done.stdout, "")
    f.until(lambda: f.states()[job.id] == "running")
    assert f.store.get(job.id).refusals == ()
    assert gpu(f, "gpu-a", 0)["mig_mode"] is True


def test_a_mig_queues_job_placed_bare_on_a_host_that_pins_mig_off_is_refused(local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE], agent={"mig_mode": "fixed"})
    f.scheduler.step()
    job = f.submit("slice")
    done = place(f, job, "--yes")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        "fractui: not placed: job %d on gpu-a gpu0 3g.40gb at slot 4 needs its launch to %s "
        "first, and gpu-a gpu 0 keeps its MIG mode (mig_mode = \"fixed\" for gpu-a)\n" % (
            job.id, TURN_ON))
    assert f.store.get(job.id).state == "pending" and f.store.get(job.id).slot is None


def test_a_mig_queues_job_placed_bare_on_a_gpu_without_mig_is_refused_saying_why(local_fleet):
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xA100-80GB"},  # (gpu-b: a queue it serves)
                    [QueueConfig(name="small", mig="1g.10gb")])
    f.scheduler.step()
    job = f.submit("small")
    done = place(f, job, "--yes")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        "fractui: GPU 0 of gpu-a (NVIDIA L4) has MIG off, and none to turn on: job %d of "
        "queue small takes a MIG slice only (mig = 1g.10gb)\n" % job.id)
    assert f.store.get(job.id).slot is None


def test_a_mig_queues_job_placed_bare_on_a_gpu_whose_mig_on_is_pending_keeps_it_on(
        local_fleet):
    """With MIG on pending a reset, the bare placement was recorded open, as a share: its
    launch turned MIG back off first, undoing the admin's change, and sent a share of 0."""
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE])
    mig_on_pending(f)
    job = f.submit("slice")
    done = place(f, job, "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "%d placed on gpu-a gpu0 3g.40gb at slot 4; the scheduler will %s, " \
        "then launch it\n" % (job.id, TURN_ON)
    f.until(lambda: f.states()[job.id] == "running")
    assert f.store.get(job.id).refusals == ()
    assert gpu(f, "gpu-a", 0)["mig_mode"] is True
    assert [why for _, why, _ in mig_audit(f)] == [
        "MIG mode is now on on gpu-a gpu 0, after a GPU reset (nothing ran there)"]


def test_a_share_queues_job_placed_bare_on_an_idle_mig_gpu_turns_mig_off_and_runs(
        local_fleet):
    """The reverse: a job of isolation share on a GPU with MIG on was refused as if no MIG
    profile held what its queue asks for; it takes its share, MIG turned off first."""
    f = local_fleet({"gpu-a": "1xH100:mig"}, [SHARE])
    f.scheduler.step()
    job = f.submit("share")
    done = place(f, job, "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("%d placed on gpu-a gpu0 10240 MiB; the scheduler will turn "
                                  "MIG off on gpu-a gpu 0" % job.id), done.stdout
    assert f.store.get(job.id).slot.charge > 0
    f.until(lambda: f.states()[job.id] == "running")
    assert gpu(f, "gpu-a", 0)["mig_mode"] is False
    assert f.store.get(job.id).refusals == ()


def test_a_decision_of_a_share_of_no_memory_is_never_launched(local_fleet):
    """A decision of a share of 0 MiB (written by an older fractui's placement by hand, or
    into the store by hand) was launched as it was: the agent refused the call as malformed
    and the job failed. It goes back to its queue with the reason, no attempt counted
    against it, and is placed again."""
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SHARE])
    job = f.submit("share")
    decide(f, job, Slot("gpu-a", (0,), None, None, 0, charge=0.0))
    f.until(lambda: f.states()[job.id] in ("running", "failed"))
    ran = f.store.get(job.id)
    assert (ran.state, ran.slot.memory_mib, ran.refusals) == ("running", 10240, ()), ran.reason
    assert any(e.why.startswith("not launched: the decision books no GPU memory (a share of "
                                "0 MiB on gpu-a gpu0)") for e in f.store.audit_log()), [
        e.why for e in f.store.audit_log()]


QUEUES = [SLICE, SHARE, QueueConfig(name="half", gpu=0.5),
          QueueConfig(name="half-mig", gpu=0.5, isolation="mig"),
          QueueConfig(name="mem", memory_gib=10), QueueConfig(name="whole", gpus=1)]


@pytest.mark.parametrize("queue", QUEUES, ids=[q.name for q in QUEUES])
@pytest.mark.parametrize("model,mig_mode", [("NVIDIA A100-SXM4-80GB", False),
                                            ("NVIDIA A100-SXM4-80GB", True),
                                            ("NVIDIA L4", False)])
def test_a_bare_placement_by_hand_is_of_a_kind_its_queue_takes_and_charged(
        queue, model, mig_mode):
    """Every queue's job placed bare on a GPU of each kind and mode: refused, or a slot its
    queue runs on (a MIG queue's a slice, a share queue's a share) charged above 0 — never a
    share of 0 MiB charged 0 (a MIG queue's on a GPU with MIG off was)."""
    view = view_of(models()[model], mig_mode, 1)
    view.gpu_records()[0].update(mig_capable=models()[model].mig_capable,
                                 mig_pending=mig_mode)
    job = Job(1, queue.name, "t", "n", ("x",), queue.request(), PENDING, 0.0, 0.0)
    try:
        slot = hand_slot(job, Slot("h", (0,)), facts(view), UID)
    except Unfit as err:
        assert model == "NVIDIA L4" and queue.isolation == "mig", err
        return
    assert slot.charge > 0, slot
    # left open (no mode change), the launch completes it on the GPU as it is
    launched = slot if slot.profile or slot.memory_mib is not None else complete(
        replace(job, slot=slot), view, UID, [])
    assert launched.profile is not None or launched.memory_mib > 0, launched
    if queue.isolation != "any":
        assert (launched.profile is not None) is (queue.isolation == "mig"), launched


def test_an_older_placement_by_hand_of_a_share_of_no_memory_is_not_counted_against_it(
        local_fleet):
    """What an older fractui's ``place`` recorded: a MIG queue's job placed by hand on a GPU
    with MIG off, as a share of 0 MiB charged 0. Its launch completed it on the GPU first,
    which found no share for a MIG queue and counted a refusal against the job (the host left
    out for it a while), where it is fractui's own decision that could never launch: back to
    its queue with the reason, no refusal counted, and placed anew."""
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE])
    f.scheduler.step()
    job = f.submit("slice")
    f.store.place(job.id, Slot("gpu-a", (0,), None, None, 0, charge=0.0), "test",
                  "placed by hand on gpu-a gpu0 0 MiB", manual=True)
    f.until(lambda: f.states()[job.id] != "placed")
    assert f.store.get(job.id).refusals == (), f.store.get(job.id).refusals
    assert any(e.why.startswith("not launched: the decision books no GPU memory (a share of "
                                "0 MiB on gpu-a gpu0)") for e in f.store.audit_log()), [
        e.why for e in f.store.audit_log()]
    f.until(lambda: f.states()[job.id] == "running")
    assert f.store.get(job.id).slot.profile == "3g.40gb"


def refused_bare(queue: QueueConfig, view) -> str:
    """Why job 1 of ``queue`` placed bare on GPU 0 of ``view`` (host h) is refused."""
    job = Job(1, queue.name, "t", "n", ("x",), queue.request(), PENDING, 0.0, 0.0)
    with pytest.raises(Unfit) as err:
        hand_slot(job, Slot("h", (0,)), facts(view), UID)
    return str(err.value)


def test_a_mig_queues_job_placed_bare_on_an_unknown_mig_model_with_mig_off_says_so():
    """A GPU its agent reports MIG-capable, of a model fractui has no geometry of, has MIG to
    turn on: the refusal said it had none ("and none to turn on")."""
    model = models()["NVIDIA A100-SXM4-80GB"]
    view = view_of(model, False, 1)
    view.gpu_records()[0].update(name="NVIDIA Z900", mig_capable=True, mig_pending=False)
    assert refused_bare(SLICE, view) == (
        "GPU 0 of h (NVIDIA Z900) has MIG off, a MIG model fractui does not know, so it does "
        "not turn MIG on: job 1 of queue slice takes a MIG slice only (mig = 3g.40gb)")


@pytest.mark.parametrize("queue, asks", [
    (QueueConfig(name="frac", gpu=0.25), "0.25 GPU"),
    (QueueConfig(name="frac", memory_gib=10), "10 GiB"),
    (QueueConfig(name="frac", gpus=1), "1 GPU")])
def test_a_job_placed_bare_on_a_gpu_that_reports_no_memory_is_refused_saying_so(queue, asks):
    """A share of a GPU is sized by its memory: on one whose agent reports none (an NVML that
    cannot read it), a fraction queue's job with no size was refused as asking "for 0 GiB"."""
    view = view_of(models()["NVIDIA L4"], False, 1)
    view.gpu_records()[0]["memory_mib"] = None
    assert refused_bare(queue, view) == (
        "GPU 0 of h (NVIDIA L4) reports no memory size, so no share of its memory can be "
        "sized: job 1 of queue frac asks for %s" % asks)


def test_a_fraction_that_comes_to_less_than_a_mib_of_a_gpu_is_refused_saying_so():
    view = view_of(models()["NVIDIA L4"], False, 1)
    view.gpu_records()[0]["memory_mib"] = 100
    queue = QueueConfig(name="frac", gpu=0.005)
    assert refused_bare(queue, view) == (
        "GPU 0 of h (NVIDIA L4) has 0.1 GiB: job 1 of queue frac asks for 0.005 GPU, "
        "which comes to less than 1 MiB of it")


def test_a_placement_whose_mode_change_a_job_on_the_gpu_blocks_is_refused_at_once(local_fleet):
    """A share queue's job placed bare on a GPU with MIG on that runs a job of the store: its
    launch must turn MIG off first, which the scheduler never does under a running job. It was
    recorded (said "checked then") and bounced at its launch, a refusal counted against the
    job, where the TUI's preview offers no such slot; it is refused here, nothing recorded."""
    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [SHARE, SLICE])
    f.scheduler.step()
    busy = f.submit("slice")
    f.until(lambda: f.states()[busy.id] == "running")
    job = f.submit("share")
    done = place(f, job, "--yes")
    assert (done.returncode, done.stdout) == (1, ""), done.stdout
    assert done.stderr == (
        "fractui: not placed: job %d on gpu-a gpu0 10240 MiB needs its launch to turn MIG off "
        "on gpu-a gpu 0 (a GPU reset, made only while nothing runs there) first, and gpu-a "
        "gpu 0 is in use by job %d (running): its MIG mode is not changed\n" % (
            job.id, busy.id)), done.stderr
    assert f.store.get(job.id).slot is None and f.store.get(job.id).refusals == ()


def test_a_slice_given_by_hand_on_a_gpu_its_agent_says_has_no_mig_is_refused_at_once(
        local_fleet):
    """An A100 whose NVML says MIG is not supported (in a VM): `--profile P --start S` there
    was recorded, its mode change said, and refused at the launch ("does not support MIG"),
    counted against the job."""
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SLICE])
    f.fleet.session("gpu-a").call("sim.fault", {"function": "nvmlDeviceGetMigMode",
                                                "error": "NVML_ERROR_NOT_SUPPORTED",
                                                "count": 10 ** 6})
    snapshot_shows(f, "gpu-a", lambda snap: snap["gpus"][0]["mig_capable"] is False)
    f.scheduler.step()  # the inventory the command reads: gpu 0 without MIG
    job = f.submit("slice")
    done = place(f, job, "--profile", "3g.40gb", "--start", "4", "--yes")
    assert (done.returncode, done.stdout) == (1, ""), done.stdout
    assert done.stderr.endswith("gpu-a gpu 0 (NVIDIA A100-SXM4-80GB) does not support MIG\n"), \
        done.stderr
    assert f.store.get(job.id).slot is None


BIG = QueueConfig(name="big", memory_gib=70, isolation="share")


@pytest.mark.parametrize("spec,pending,queue,starts", [
    ("1xA100-80GB", False, SLICE, (4, 0)), ("1xA100-80GB", True, SLICE, (4, 0)),
    ("1xA100-80GB:mig", False, BIG, (None,)), ("1xA100-80GB", True, BIG, (None,))])
def test_jobs_placed_bare_for_the_same_mode_change_never_share_a_slot(local_fleet, spec,
                                                                      pending, queue, starts):
    """Each placement by hand whose launch changes the GPU's MIG mode first was completed on
    the GPU as if it were empty: two jobs were given the same 3g.40gb at slot 4 (or a 70 GiB
    share each of an 80 GiB GPU), and the second bounced at its launch, a capacity refusal
    counted against it. Those placed there for the same change hold their slots: the next
    takes another start, or is refused, saying who holds the GPU."""
    f = local_fleet({"gpu-a": spec}, [queue])
    if pending:
        mig_on_pending(f)
    else:
        f.scheduler.step()  # the inventory the command reads
    jobs = [f.submit(queue.name) for _ in range(len(starts) + 1)]
    for job, start in zip(jobs, starts):
        done = place(f, job, "--yes")
        assert done.returncode == 0, done.stderr
        assert f.store.get(job.id).slot.start == start
    last = place(f, jobs[-1], "--yes")
    assert (last.returncode, last.stdout) == (1, ""), last.stdout
    slots = [f.store.get(j.id).slot for j in jobs[:-1]]
    held = " and ".join("job %d's %s" % (j.id, "%s at slot %d" % (s.profile, s.start)
                                          if s.profile else "%d MiB share" % s.memory_mib)
                        for j, s in zip(jobs, slots))
    assert last.stderr == "fractui: no room for %s on GPU 0 of gpu-a once its MIG mode is " \
        "changed: it holds %s, placed there for the same change%s\n" % (
            "3g.40gb" if queue is SLICE else "a 71680 MiB share", held,
            "" if queue is SLICE else " (71680 of its 81920 MiB)"), last.stderr
    assert f.store.get(jobs[-1].id).slot is None


def _two_a100s(mig_on: tuple[bool, bool]):
    """A built view of host h with two idle A100s that can change modes, MIG on as given."""
    view = view_of(models()["NVIDIA A100-SXM4-80GB"], False, 2)
    for rec, on in zip(view.gpu_records(), mig_on):
        rec.update(mig_capable=True, mig_mode=on)
    view.hello["features"] = list(FLIP_FEATURES)
    return view


def test_a_share_by_hand_beside_a_decision_of_two_gpus_for_the_same_change_is_refused():
    """A decision of GPUs 0 and 1 whose launch turns GPU 1's MIG off was judged by its first
    GPU alone, which keeps its mode, so a share placed by hand on GPU 1 for the same change
    was recorded beside its 80 GiB (found in review)."""
    view = _two_a100s((False, True))
    whole = Job(5, "whole2", "t", "w", ("x",), QueueConfig(name="whole2", gpus=2).request(),
                PLACED, 0.0, 0.0, slot=Slot("h", (0, 1), None, None, 81920, 2.0))
    job = Job(6, "share", "t", "n", ("x",), SHARE.request(), PENDING, 0.0, 0.0)
    with pytest.raises(Unfit) as err:
        by_hand(job, Slot("h", (1,)), facts(view), UID, [whole], False, {}, 0.0)
    assert str(err.value) == (
        "no room for a 10240 MiB share on GPU 1 of h once its MIG mode is changed: it holds "
        "job 5's 81920 MiB share, placed there for the same change (81920 of its 81920 MiB)")


def test_a_slice_by_hand_beside_one_whose_start_is_left_open_is_refused_saying_so():
    """A decision ahead whose slice's start was left open to its launch made the words of a
    placement beside it a TypeError (a traceback of place, and of the TUI's preview): none
    knows where it goes, so nothing is placed beside it (found in review)."""
    view = _two_a100s((False, False))
    ahead = Job(5, SLICE.name, "t", "a", ("x",), SLICE.request(), PLACED, 0.0, 0.0,
                slot=Slot("h", (0,), SLICE.mig, None, None, 0.428571))
    job = Job(6, SLICE.name, "t", "n", ("x",), SLICE.request(), PENDING, 0.0, 0.0)
    with pytest.raises(Unfit) as err:
        hand_slot(job, Slot("h", (0,), SLICE.mig), facts(view), UID, [ahead])
    assert "job 5's %s, its start left open to its launch" % SLICE.mig in str(err.value)
