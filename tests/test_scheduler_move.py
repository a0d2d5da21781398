"""`fractui move`: an admin moves a running job to another GPU, end to end over simulated hosts
(real agent daemons, real job processes) and a real SQLite store, with a scheduler whose passes
the test runs. The job is stopped (its grace), then placed by hand on the slot chosen, which
is held for it meanwhile: no other job is placed there, and the job is placed nowhere else."""

from __future__ import annotations

import sys
from dataclasses import replace

from fractui.config import QueueConfig
from fractui.scheduler.execute import AGENT_ENDED
from fractui.store.intents import Asker, move_by_hand
from fractui.store.model import STOPPING
from tests import localfleet
from tests.test_scheduler_config_change import restarted, rewritten, until

local_fleet = localfleet.local_fleet
WHOLE = QueueConfig(name="whole", gpus=1)
SLICE = QueueConfig(name="slice", mig="3g.40gb", isolation="mig")
# A job that takes a while to stop: passes run during its grace, while the move waits on it.
SLOW_STOP = [sys.executable, "-c",
             "import signal, sys, time\n"
             "def bye(*_):\n    print('got SIGTERM', flush=True)\n    time.sleep(1.5)\n"
             "    sys.exit(0)\n"
             "signal.signal(signal.SIGTERM, bye)\nprint('up', flush=True)\ntime.sleep(600)"]


def record(f, job, attempt: int) -> dict:
    key = "fractui-%s-%d.%d" % (f.store.uid, job.id, attempt)
    return next(j for j in f.agent_jobs() if j["key"] == key)


def test_a_running_job_moved_by_hand_stops_then_runs_there_and_nothing_takes_its_room(
        local_fleet, store_url):
    """On an SQLite store and on PostgreSQL."""
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [WHOLE], preempt_grace_s=10.0,
                    store_url=store_url)
    job = f.submit("whole", argv=SLOW_STOP)
    f.until(lambda: f.store.get(job.id).state == "running")
    f.until_up(job)  # its grace from now: passes run during it
    here = f.store.get(job.id).slot.host
    there = "gpu-b" if here == "gpu-a" else "gpu-a"

    moved = f.fractui("move", str(job.id), there, "0")
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout == ("%d moving to %s gpu0 23034 MiB: the scheduler stops it, then "
                            "launches it there; the slot is held for it meanwhile\n" % (
                                job.id, there))
    assert "job %d to %s: " % (job.id, there) in moved.stderr  # the plan, in words
    again = f.fractui("move", str(job.id), there, "0")  # a retry: the same answer
    assert (again.returncode, again.stdout) == (0, moved.stdout), again.stderr

    rival = f.submit("whole")  # would take the free GPU but for the hold
    seen = []
    f.until(lambda: seen.append(f.store.get(job.id)) or seen[-1].state == "running" and
            seen[-1].attempt == 1)
    assert any(j.state == STOPPING for j in seen)  # passes ran while it stopped
    now = f.store.get(job.id)
    assert (now.slot.host, now.slot.gpus, now.manual) == (there, (0,), True)
    assert [e.action for e in f.store.audit_log(job.id)] == [
        "submit", "decide", "launch", "move", "moved", "launch"]
    old, new = record(f, job, 0), record(f, job, 1)
    assert (old["host"], new["host"]) == (here, there)
    assert old["state"] == "killed" and old["ended_at"] <= new["started_at"]
    # the rival waited for the room the job left, never took the one held for it
    f.until(lambda: f.store.get(rival.id).state == "running")
    assert f.store.get(rival.id).slot.host == here
    assert [e.action for e in f.store.audit_log(rival.id)] == ["submit", "decide", "launch"]

    done = f.fractui("move", str(job.id), there, "0")  # asked again once carried out: done
    assert (done.returncode, done.stdout) == (
        0, "%d running on %s gpu0 23034 MiB (moved there)\n" % (job.id, there)), done.stderr
    assert [e.action for e in f.store.audit_log(job.id)].count("move") == 1


def test_a_move_with_no_room_there_or_of_an_ended_job_is_refused(local_fleet):
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [WHOLE])
    first, second = f.submit("whole"), f.submit("whole")
    f.until(lambda: {f.states()[first.id], f.states()[second.id]} == {"running"})
    there = f.store.get(second.id).slot.host
    full = f.fractui("move", str(first.id), there, "0")
    assert full.returncode == 1
    assert full.stderr == ("fractui: not moved: no room for job %d on %s gpu0 now (online; "
                           "fractui status shows what runs there)\n" % (first.id, there))
    assert f.store.get(first.id).state == "running"
    assert "move" not in [e.action for e in f.store.audit_log(first.id)]

    assert f.fractui("cancel", str(second.id)).returncode == 0
    f.until(lambda: f.states()[second.id] == "cancelled")
    ended = f.fractui("move", str(second.id), there, "0")
    assert (ended.returncode, ended.stderr) == (
        1, "fractui: job %d is cancelled: only a placed or running job is moved\n" % second.id)
    placing = f.fractui("place", str(first.id), there, "0")
    assert placing.returncode == 1
    assert placing.stderr.endswith("only a pending job can be placed: job %d is running; "
                                   "fractui move %d HOST GPU moves it\n" % (first.id, first.id))


def test_a_job_of_two_gpus_moves_to_a_pair_with_the_gpu_named_or_is_told_the_pair_there(
        local_fleet, store_url):
    """`move` names one GPU: a 2-GPU job asked onto gpu-b, idle, was told `no room for job 1
    on gpu-b gpu1 now`, false of a host its `status` shows idle. The GPU named is one of the
    pair it takes there; where it would take another pair, that pair is named, to ask for."""
    f = local_fleet({"gpu-a": "2xL4", "gpu-b": "3xL4"},
                    [QueueConfig(name="two", gpus=2), QueueConfig(name="whole", gpus=1)],
                    store_url=store_url)
    pair = f.submit("two")
    f.until(lambda: f.states()[pair.id] == "running")
    assert f.store.get(pair.id).slot.host == "gpu-a"  # (gpu-b keeps three whole GPUs)
    one = f.submit("whole")
    f.until(lambda: f.states()[one.id] == "running")
    free = sorted({0, 1, 2} - set(f.store.get(one.id).slot.gpus))
    done = f.fractui("move", str(pair.id), "gpu-b", str(free[1]))
    assert done.returncode == 0, done
    f.until(lambda: f.states()[pair.id] == "running" and
            f.store.get(pair.id).slot.host == "gpu-b")
    assert f.store.get(pair.id).slot.gpus == tuple(free)
    done = f.fractui("move", str(pair.id), "gpu-a", "0")
    assert done.returncode == 0, done
    f.until(lambda: f.states()[pair.id] == "running" and
            f.store.get(pair.id).slot.host == "gpu-a")
    taken = f.store.get(one.id).slot.gpus[0]
    done = f.fractui("move", str(pair.id), "gpu-b", str(taken))
    assert (done.returncode, done.stderr.splitlines()[-1]) == (
        1, "fractui: not moved: job %d asks for 2 GPUs of one host, and on gpu-b they would be "
        "gpu%d,%d, not with gpu%d (fractui move %d gpu-b %d moves it there)" % (
            pair.id, free[0], free[1], taken, pair.id, free[0])), done


def test_a_move_of_a_job_of_two_gpus_asked_again_is_answered_as_the_first(local_fleet):
    """A retry of `move 7 gpu-b 1` (its answer lost) while the 2-GPU job stops to move, and
    once it runs there: the same line, then `(moved there)`, exit 0, one move recorded. The
    GPU named is one of the pair: the retry was refused, `job 7 is stopping`, then `not
    moved: no room`, the job's own pair being taken by itself."""
    f = local_fleet({"gpu-a": "2xL4", "gpu-b": "2xL4"}, [QueueConfig(name="two", gpus=2)],
                    preempt_grace_s=10.0)
    pair = f.submit("two", argv=SLOW_STOP)
    f.until(lambda: f.store.get(pair.id).state == "running")
    f.until_up(pair)
    there = "gpu-b" if f.store.get(pair.id).slot.host == "gpu-a" else "gpu-a"
    moved = f.fractui("move", str(pair.id), there, "1")
    assert moved.returncode == 0, moved.stderr
    again = f.fractui("move", str(pair.id), there, "1")
    assert (again.returncode, again.stdout) == (0, moved.stdout), again.stderr
    f.until(lambda: f.store.get(pair.id).state == "running" and
            f.store.get(pair.id).attempt == 1)
    assert f.store.get(pair.id).slot.gpus == (0, 1)
    for gpu in ("2", "7"):  # no such GPU there: said so, not a pair "not with gpu2"
        none = f.fractui("move", str(pair.id), "gpu-a" if there == "gpu-b" else "gpu-b", gpu)
        assert (none.returncode, none.stderr) == (1, "fractui: not moved: %s has no GPU %s "
                                                  "(it has 2)\n" % (
                                                      "gpu-a" if there == "gpu-b" else "gpu-b",
                                                      gpu)), none.stderr
    done = f.fractui("move", str(pair.id), there, "1")
    assert (done.returncode, done.stdout) == (
        0, "%d running on %s (moved there)\n" % (pair.id, f.store.get(pair.id).slot.describe())
    ), done.stderr
    assert [e.action for e in f.store.audit_log(pair.id)].count("move") == 1


def test_a_move_to_a_slice_on_a_gpu_with_mig_off_shows_and_makes_the_mode_change(local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB", "gpu-b": "1xA100-80GB"}, [SLICE])
    job = f.submit("slice")
    f.until(lambda: f.store.get(job.id).state == "running")
    here = f.store.get(job.id).slot.host
    there = "gpu-b" if here == "gpu-a" else "gpu-a"
    asked = f.fractui("move", str(job.id), there, "0", "--yes")
    assert asked.returncode == 0, asked.stderr
    assert "turn MIG on" in asked.stderr, asked.stderr  # the plan says the change first
    f.until(lambda: f.store.get(job.id).state == "running" and
            f.store.get(job.id).attempt == 1)
    now = f.store.get(job.id)
    assert (now.slot.host, now.slot.profile) == (there, "3g.40gb")
    mig = [e for e in f.store.audit_log() if e.action == "mig"]
    assert [e.detail["host"] for e in mig] == [here, there]  # each GPU turned on for it


def test_a_move_to_a_profile_its_queue_does_not_take_says_which_it_takes(local_fleet):
    """There is room there, but the job's queue takes another profile on that GPU: said so,
    with the profile it takes, never as "no room"."""
    f = local_fleet({"gpu-a": "1xA100-80GB", "gpu-b": "1xA100-80GB"}, [SLICE])
    job = f.submit("slice")
    f.until(lambda: f.store.get(job.id).state == "running")
    there = "gpu-b" if f.store.get(job.id).slot.host == "gpu-a" else "gpu-a"
    asked = f.fractui("move", str(job.id), there, "0", "--profile", "1g.10gb", "--yes")
    assert (asked.returncode, asked.stderr) == (
        1, "fractui: not moved: job %d of queue slice takes 3g.40gb on %s gpu0, not 1g.10gb "
           "(fractui move %d %s 0 picks its slot there)\n" % (job.id, there, job.id, there))
    assert f.store.get(job.id).state == "running"
    assert "move" not in [e.action for e in f.store.audit_log(job.id)]


def test_a_job_whose_host_is_lost_while_it_moves_is_placed_where_it_was_held(local_fleet):
    """Its host away past host_lost_s while it stops to move: the move goes on (placed on the
    held slot, never back in its queue), its copy there kept as stale, and stopped once the
    host is back."""
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [WHOLE], host_lost_s=1.0)
    job = f.submit("whole")
    f.until(lambda: f.store.get(job.id).state == "running")
    first = f.store.get(job.id)
    kept = next(h for h in f.config.hosts if h.name != first.slot.host)
    with restarted(f, rewritten(f, hosts=(kept,))) as sched:
        move_by_hand(f.store, first, replace(first.slot, host=kept.name), Asker("test"))
        until(f, sched, lambda: f.store.get(job.id).state == "running")
    now = f.store.get(job.id)
    assert (now.attempt, now.slot.host, now.manual) == (1, kept.name, True)
    key = first.key(f.store.uid)
    assert [(c.host, c.key) for c in f.store.stale()] == [(first.slot.host, key)]
    assert [(e.action, e.detail.get("stale_on")) for e in f.store.audit_log(job.id)][-3:] == [
        ("move", None), ("moved", first.slot.host), ("launch", None)]
    with restarted(f, f.config) as sched:  # the host is back: its copy is stopped
        until(f, sched, lambda: not f.store.stale())
    after = [j["state"] for j in f.agent_jobs() if j["key"] == key]
    assert after and all(state in AGENT_ENDED for state in after), after


def test_a_held_slot_taken_around_the_store_sends_the_moved_job_back_to_its_queue(local_fleet):
    """The store holds the room, not the host: a job launched there by hand (fractui launch)
    while the move waits takes it, and the moved job's launch is refused there; it goes back
    to its queue with the agent's words, not left stopped nor launched elsewhere unasked."""
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [WHOLE], preempt_grace_s=10.0)
    job = f.submit("whole", argv=SLOW_STOP)
    f.until(lambda: f.store.get(job.id).state == "running")
    f.until_up(job)  # its grace from now: passes run during it
    first = f.store.get(job.id)
    there = "gpu-b" if first.slot.host == "gpu-a" else "gpu-a"
    move_by_hand(f.store, first, replace(first.slot, host=there), Asker("test"))
    f.fleet.session(there).call("job.launch", {
        "key": "by-hand", "argv": localfleet.sleeper(600), "gpus": [0],
        "memory_mib": first.slot.memory_mib})
    f.until(lambda: f.store.get(job.id).attempt == 2 or f.store.get(job.id).state == "pending"
            and f.store.get(job.id).refusals)
    back = f.store.get(job.id)
    assert back.refusals and back.refusals[0].host == there, back
    assert [e.action for e in f.store.audit_log(job.id)][3:6] == ["move", "moved", "requeued"]
