"""The slice map's data and bars, without widgets: blocks from agent records and store jobs,
eighth-block shares, MIG slices, the filter, queue waits, and the demo's fleet layout."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from fractui.demo import fleet_layout, gpu_count
from fractui.fleet.host import HostStatus
from fractui.sched import Placer, Request
from fractui.sched.fleetview import HostView, build_hosts
from fractui.sched.standing import queue_stats
from fractui.store.model import MOVE, PENDING, PLACED, RUNNING, STOPPING, Job, Slot
from fractui.tui.bars import EIGHTHS, HATCH, Paint, gpu_bar, render_gpu, render_group, \
    render_host
from fractui.tui.gpu_screen import describe
from fractui.tui.model import (IDLE, JOB, OTHER, PLACING, SIMULATED, FleetModel, GpuGroupLine,
                               StoreView, compile_filter)
from fractui.tui.sample import QUEUES, health
from fractui.tui.themes import builtin_themes, label_colour
from tests.test_tui_cursor_pilot import plain

UID = "abcd1234"
PAINT = Paint(builtin_themes()["dark"].slices, "#ffffff", "#000000", "#888888",
              (("online", "#00ff00"),), ("vision", "nlp"))


def job(id_: int, state: str = RUNNING, slot: Slot | None = None, team: str = "vision",
        queue: str = "quarter", submitted_at: float = 0.0) -> Job:
    return Job(id=id_, queue=queue, team=team, name="j%d" % id_, argv=("x",), request={},
               state=state, submitted_at=submitted_at, updated_at=0.0, slot=slot)


def l4(processes=()) -> dict:
    return {"index": 0, "name": "NVIDIA L4", "memory_mib": 24000, "mig_mode": False,
            "memory_used_mib": 100, "utilization_gpu": 40, "processes": list(processes)}


def a100(instances) -> dict:
    return {"index": 1, "name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920,
            "mig_mode": True, "memory_used_mib": 0, "utilization_gpu": None,
            "utilization_note": "not reported by NVML for MIG instances",
            "instances": instances, "processes": []}


def inst(profile: str, start: int, size: int, uuid: str | None, busy: bool = False,
         pids=()) -> dict:
    """An instance as a snapshot has it (its GI id, one per start here, as every agent's)."""
    return {"gi_id": start + 1, "uuid": uuid, "profile": profile, "start": start, "size": size,
            "busy": busy, "pids": list(pids)}


def build(gpus, agent_jobs=(), store_jobs=(), simulated=frozenset()) -> FleetModel:
    status = HostStatus("h", state="online", snapshot={"gpus": list(gpus)},
                        jobs={j["id"]: j for j in agent_jobs})
    model = FleetModel(["h"])
    model.set_store(StoreView(UID, tuple(store_jobs)))
    model.update(status, simulated)
    return model


def test_share_owners_come_from_the_store_by_agent_key():
    store_job = job(7, team="nlp", queue="10g", slot=Slot("h", (0,), memory_mib=6000))
    agent = [{"id": "j1", "key": store_job.key(UID), "gpus": [0], "memory_mib": 6000,
              "state": "running", "pid": 11, "name": "train", "created_at": 1},
             {"id": "j2", "key": "cli-by-hand", "gpus": [0], "memory_mib": 12000,
              "state": "running", "pid": 12, "name": "manual", "created_at": 2},
             {"id": "j3", "key": "old", "gpus": [0], "memory_mib": 12000, "state": "exited",
              "pid": 13, "created_at": 0}]
    outside = [{"pid": 11, "used_mib": 3000}, {"pid": 99, "used_mib": 2400}]
    (gpu,) = build([l4(outside)], agent, [store_job]).hosts["h"].gpus
    assert [(b.kind, b.team, b.queue, b.job) for b in gpu.blocks] == [
        (JOB, "nlp", "10g", "#7 h/j1"), (JOB, None, None, "h/j2"), (OTHER, None, None, None)]
    assert [round(b.start, 3) for b in gpu.blocks] == [0.0, 0.25, 0.75]
    assert gpu.blocks[2].size == pytest.approx(0.1)  # pid 99 is no job's: outside fractui
    assert gpu.allocated == pytest.approx(0.85)
    # an agent that says whose each process is: a job's worker (pid 21, of j1) is its job's,
    # not memory used outside fractui; one said to be no one's is
    said = [{"pid": 11, "used_mib": 3000, "job": "j1"}, {"pid": 21, "used_mib": 900, "job": "j1"},
            {"pid": 99, "used_mib": 2400, "job": None}]
    (gpu,) = build([l4(said)], agent, [store_job]).hosts["h"].gpus
    assert [b.kind for b in gpu.blocks] == [JOB, JOB, OTHER]
    assert gpu.blocks[2].size == pytest.approx(0.1)
    # the jobs' MPS server is no one else's either: placement does not count it
    mps = {"pid": 98, "used_mib": 66, "job": None, "service": "mps"}
    (gpu,) = build([l4(said + [mps])], agent, [store_job]).hosts["h"].gpus
    assert [b.kind for b in gpu.blocks] == [JOB, JOB, OTHER]
    assert gpu.blocks[2].size == pytest.approx(0.1)


def test_mig_blocks_idle_busy_simulated_creating_and_decided():
    store_job = job(3, team="nlp", slot=Slot("h", (1,), profile="3g.40gb", start=4))
    instances = [inst("3g.40gb", 4, 4, "MIG-a"), inst("1g.10gb", 0, 1, "MIG-b"),
                 inst("1g.10gb", 1, 1, "MIG-c", busy=True, pids=[500]),
                 inst("1g.10gb", 2, 1, "MIG-d", busy=True, pids=[9000001]),
                 inst("1g.10gb", 3, 1, None)]
    agent = [{"id": "j1", "key": store_job.key(UID), "gpus": [1], "instance": "MIG-a",
              "state": "running"}]
    decided = job(4, state=PLACED, slot=Slot("h", (1,), profile="2g.20gb", start=6))
    (gpu,) = build([a100(instances)], agent, [store_job, decided],
                   frozenset({"9000001"})).hosts["h"].gpus
    kinds = {b.label + "@%d" % round(b.start * 8): (b.kind, b.team) for b in gpu.blocks}
    assert kinds == {"3g.40gb@4": (JOB, "nlp"), "1g.10gb@0": (IDLE, None),
                     "1g.10gb@1": (OTHER, None), "1g.10gb@2": (SIMULATED, None),
                     "1g.10gb@3": (PLACING, None), "2g.20gb@6": (PLACING, "vision")}
    assert gpu.slices == 8 and gpu.util is None


def test_a_share_its_agent_runs_is_drawn_running_though_the_store_still_has_it_placed():
    """The store records a launch at the lease holder's next pass; until then the job is
    placed there while its agent already runs it. The map drew it twice: its share, and
    beside it the same share again hatched as being placed. One placed and not yet started is
    drawn placing; so is one the agent has ended (it is not running)."""
    placed = job(7, state=PLACED, slot=Slot("h", (0,), memory_mib=6000))
    record = {"id": "j1", "key": placed.key(UID), "gpus": [0], "memory_mib": 6000,
              "pid": 11, "name": "train", "created_at": 1}
    for state in ("starting", "running"):
        (gpu,) = build([l4()], [dict(record, state=state)], [placed]).hosts["h"].gpus
        assert [(b.kind, b.job) for b in gpu.blocks] == [(JOB, "#7 h/j1")], state
        assert gpu.allocated == pytest.approx(0.25)
    for agent in ([], [dict(record, state="exited")]):
        (gpu,) = build([l4()], agent, [placed]).hosts["h"].gpus
        assert [(b.kind, b.job) for b in gpu.blocks] == [(PLACING, "#7")]


def test_a_mig_job_its_agent_is_starting_is_drawn_decided_until_its_instance_is_there():
    """The agent records a MIG launch as starting before it makes the instance (its record's
    ``mig``, no ``instance`` yet), and the snapshot shows the instance a tick after that. The
    job is running by seen_state then, so no longer drawn from the store's decision; the map
    drew nothing on its slices (free, as if no job were going there) where it drew them
    hatched, as a host that went away during the launch kept them."""
    placed = job(4, state=PLACED, slot=Slot("h", (1,), profile="2g.20gb", start=4))
    record = {"id": "j2", "key": placed.key(UID), "gpus": [1], "state": "starting",
              "mig": {"profile": "2g.20gb", "start": 4}, "instance": None, "name": "j4"}
    (gpu,) = build([a100([inst("1g.10gb", 0, 1, "MIG-b")])], [record],
                   [placed]).hosts["h"].gpus
    assert [(b.kind, b.label, round(b.start * 8), b.job) for b in gpu.blocks] == [
        (IDLE, "1g.10gb", 0, None), (PLACING, "2g.20gb", 4, "#4 h/j2")]
    # made, in the snapshot: the job's instance, drawn once
    made = dict(record, state="running", instance="MIG-e")
    (gpu,) = build([a100([inst("1g.10gb", 0, 1, "MIG-b"), inst("2g.20gb", 4, 2, "MIG-e",
                                                                busy=True)])],
                   [made], [placed]).hosts["h"].gpus
    assert [(b.kind, round(b.start * 8), b.job) for b in gpu.blocks] == [
        (IDLE, 0, None), (JOB, 4, "#4 h/j2")]


def test_a_mig_job_being_made_is_drawn_where_placement_books_it():
    """A launch whose instance the snapshot does not show yet takes an idle twin at its start
    as it is, and destroys the idle ones in its way (fleetview.booked_layout, placement's
    rule). The map drew the twin idle and the one in the way beside the job's slices, and the
    GPU view listed both, while placement booked the twin the job's and the other gone: the
    map draws from the same rule, and placement offers neither."""
    placed = job(4, state=PLACED, slot=Slot("h", (1,), profile="3g.40gb", start=4))
    twin = {"id": "j2", "key": placed.key(UID), "gpus": [1], "state": "starting", "name": "j4",
            "mig": {"profile": "3g.40gb", "start": 4}, "instance": None}
    by_hand = {"id": "j3", "key": "by-hand", "gpus": [1], "state": "starting", "name": "nb",
               "mig": {"profile": "2g.20gb", "start": 0}, "instance": None}
    gpus = [a100([inst("1g.10gb", 1, 1, "MIG-way"), inst("3g.40gb", 4, 4, "MIG-twin")])]
    (gpu,) = build(gpus, [twin, by_hand], [placed]).hosts["h"].gpus
    assert [(b.kind, b.label, round(b.start * 8), b.job) for b in gpu.blocks] == [
        (PLACING, "3g.40gb", 4, "#4 h/j2"), (PLACING, "2g.20gb", 0, "h/j3")]
    status = HostStatus("h", state="online", snapshot={"gpus": gpus},
                        jobs={"j2": twin, "j3": by_hand})
    _head, tables, _held = describe(status, "h", 1, StoreView(UID, (placed,)), "red")
    rows = [ln.split() for ln in plain(tables).splitlines()]
    assert [r[:2] for r in rows if r and r[0] in ("1g.10gb", "2g.20gb", "3g.40gb", "—")] == [
        ["2g.20gb", "0-1"], ["—", "2-3"], ["3g.40gb", "4-7"]], rows
    assert any(r[:2] == ["3g.40gb", "4-7"] and "(being" in r for r in rows), rows
    hello = {"cpus": 8, "memory_mib": 1 << 16, "gpus": gpus}
    view = HostView("h", "online", hello, {"gpus": gpus}, status.jobs)
    (host,) = build_hosts([view], [placed], UID)
    booked = host.gpus[0]  # (the host's one GPU, index 1)
    assert booked.idle_instances == ()
    assert sorted((i.profile, i.start, i.busy) for i in booked.layout.instances) == [
        ("2g.20gb", 0, True), ("3g.40gb", 4, True)]
    for profile, where in (("3g.40gb", None), ("2g.20gb", 2), ("1g.10gb", 3)):
        p = Placer([host], "fractui").place(Request("r", mig=profile))
        assert (None if p is None else p.plans[0].start) == where, profile


def test_another_job_s_instance_at_a_launch_s_start_stays_that_job_s():
    """Two records on one instance: a job running on it, and a launch whose record says it
    makes its own there (the agent refuses it: the instance is busy). The map drew the
    running job's instance as the launch's, being made, taken for an idle twin; the GPU is
    drawn as its snapshot says, and offers nothing until the next snapshot."""
    running = {"id": "j1", "key": "by-hand-1", "gpus": [1], "state": "running", "name": "a",
               "instance": "MIG-a"}
    late = {"id": "j2", "key": "by-hand-2", "gpus": [1], "state": "starting", "name": "b",
            "mig": {"profile": "3g.40gb", "start": 4}, "instance": None}
    gpus = [a100([inst("3g.40gb", 4, 4, "MIG-a", busy=True)])]
    (gpu,) = build(gpus, [running, late]).hosts["h"].gpus
    assert [(b.kind, round(b.start * 8), b.job) for b in gpu.blocks] == [(JOB, 4, "h/j1")]
    view = HostView("h", "online", {"cpus": 8, "memory_mib": 1 << 16, "gpus": gpus},
                    {"gpus": gpus}, {"j1": running, "j2": late})
    (host,) = build_hosts([view], [], UID)
    assert host.gpus[0].free_milli == 0


def test_a_move_s_target_is_held_on_the_map_as_placement_holds_it():
    """A job stopping to move holds its target as the decision it becomes (placed there by
    hand), on the map as in placement (fleetview.jobs_by_host, one grouping for both): its
    share drawn being placed on the target host while it still runs where it was."""
    moving = dataclasses.replace(job(7, state=STOPPING, slot=Slot("h", (0,), memory_mib=6000)),
                                 stop_intent=MOVE, move_to=Slot("g", (0,), memory_mib=6000))
    agent = {"j1": {"id": "j1", "key": moving.key(UID), "gpus": [0], "memory_mib": 6000,
                    "state": "running", "pid": 11, "name": "j7", "created_at": 1}}
    model = FleetModel(["h", "g"])
    assert sorted(model.set_store(StoreView(UID, (moving,)))) == ["g", "h"]
    model.update(HostStatus("h", state="online", snapshot={"gpus": [l4()]}, jobs=agent))
    model.update(HostStatus("g", state="online", snapshot={"gpus": [l4()]}, jobs={}))
    assert [(b.kind, b.job) for b in model.hosts["h"].gpus[0].blocks] == [(JOB, "#7 h/j1")]
    assert [(b.kind, b.job) for b in model.hosts["g"].gpus[0].blocks] == [(PLACING, "#7")]


def test_share_bar_draws_edges_in_eighths():
    agent = [{"id": "j1", "key": "k", "gpus": [0], "memory_mib": 9000, "state": "running",
              "pid": 1, "created_at": 0}]
    (gpu,) = build([l4()], agent).hosts["h"].gpus
    cells = "".join(seg.text for seg in gpu_bar(gpu, 4, PAINT, labels=False))
    # 9000/24000 of 32 eighths = 12 eighths: one full cell, then half of the next
    assert cells[0] == " " and cells[1] == EIGHTHS[4] and cells[2:] == "  "
    second = [seg for seg in gpu_bar(gpu, 4, PAINT, labels=False) if seg.text == EIGHTHS[4]]
    assert second[0].style.color.triplet.hex == PAINT.slices.other.lower()  # left: the job
    assert second[0].style.bgcolor.triplet.hex == PAINT.slices.free.lower()  # right: free


def test_share_bar_labels_only_where_they_fit_and_placing_is_hatched():
    decided = job(5, state=PLACED, slot=Slot("h", (0,), memory_mib=12000))
    (gpu,) = build([l4()], (), [decided]).hosts["h"].gpus
    wide = "".join(s.text for s in gpu_bar(gpu, 40, PAINT))
    assert wide.startswith(HATCH + "→vision" + HATCH) and len(wide) == 40
    narrow = "".join(s.text for s in gpu_bar(gpu, 6, PAINT))
    assert "vision" not in narrow and narrow.startswith(HATCH * 3)


def test_mig_bar_puts_each_instance_on_its_slices_with_its_label():
    store_job = job(3, team="nlp", slot=Slot("h", (1,), profile="3g.40gb", start=4))
    agent = [{"id": "j1", "key": store_job.key(UID), "gpus": [1], "instance": "MIG-a",
              "state": "running"}]
    (gpu,) = build([a100([inst("3g.40gb", 4, 4, "MIG-a")])], agent,
                   [store_job]).hosts["h"].gpus
    bar = "".join(s.text for s in gpu_bar(gpu, 32, PAINT))
    assert len(bar) == 32
    assert bar[16:] == "▏3g.40gb #3 nlp" + " "  # slots 4-7: cells 16-31, the job's id shown
    assert bar[4] == bar[8] == bar[12] == "▏"  # the slot grid of free slices
    narrow = "".join(s.text for s in gpu_bar(gpu, 24, PAINT))
    assert narrow[12:] == "▏3g.40gb #3 "  # no room for the owner: the id stays
    tight = "".join(s.text for s in gpu_bar(gpu, 16, PAINT))
    assert tight[8:] == "▏3g.40gb"  # no room for the id: the profile, as before


def test_share_label_shows_the_job_id_where_it_fits():
    store_job = job(7, team="nlp", queue="10g", slot=Slot("h", (0,), memory_mib=12000))
    agent = [{"id": "j1", "key": store_job.key(UID), "gpus": [0], "memory_mib": 12000,
              "state": "running", "pid": 11, "name": "train", "created_at": 1}]
    (gpu,) = build([l4()], agent, [store_job]).hosts["h"].gpus
    assert "#7 nlp" in "".join(s.text for s in gpu_bar(gpu, 40, PAINT))
    small = "".join(s.text for s in gpu_bar(gpu, 10, PAINT))  # 5 cells: "#7" only
    assert "#7" in small and "nlp" not in small


def test_mig_gpu_says_utilisation_is_not_reported():
    (gpu,) = build([a100([])]).hosts["h"].gpus
    text = "".join(s.text for s in render_gpu(gpu, 120, PAINT))
    assert "util n/a: MIG" in text and "0%" not in text
    (share,) = build([l4()]).hosts["h"].gpus
    assert "util  40%" in "".join(s.text for s in render_gpu(share, 120, PAINT))


def test_an_unhealthy_gpu_is_marked_and_its_host_says_why():
    sick = dict(l4(), health=dict(health("L4", 40), ecc_volatile={"corrected": 0,
                                                                  "uncorrected": 1}))
    well = dict(a100([]), health=health("A100-80GB", 0))
    view = build([sick, well]).hosts["h"]
    first, second = view.gpus
    assert first.unhealthy == "1 uncorrected ECC error" and second.unhealthy is None
    assert view.header.unhealthy == ((0, "1 uncorrected ECC error"),)
    assert "".join(s.text for s in render_gpu(first, 120, PAINT)).startswith(" ! 0 L4")
    assert "".join(s.text for s in render_gpu(second, 120, PAINT)).startswith("   1 A100")
    assert "! gpu 0: 1 uncorrected ECC error" in "".join(
        s.text for s in render_host(view.header, PAINT))
    assert "".join(s.text for s in render_group(GpuGroupLine(view.gpus), PAINT)).startswith("!0")
    assert "unhealthy" in first.text() and "unhealthy" not in second.text()


def test_a_store_read_rebuilds_only_hosts_whose_jobs_changed():
    model = FleetModel(["a", "b"])
    on_a = job(1, slot=Slot("a", (0,), memory_mib=100))
    pending = job(2, state=PENDING)
    assert model.set_store(StoreView(UID, (on_a, pending))) == ["a"]
    assert model.set_store(StoreView(UID, (on_a, job(3, state=PENDING)))) == []
    moved = job(1, slot=Slot("b", (0,), memory_mib=100))
    assert sorted(model.set_store(StoreView(UID, (moved,)))) == ["a", "b"]


def test_unchanged_host_is_not_rebuilt_as_new_lines():
    status = HostStatus("h", state="online", snapshot={"gpus": [l4()]})
    model = FleetModel(["h"])
    assert model.update(status)
    assert not model.update(HostStatus("h", state="online", snapshot={"gpus": [l4()]}))
    assert model.update(HostStatus("h", state="offline", error="gone",
                                   snapshot={"gpus": [l4()]}))
    assert model.hosts["h"].gpus[0].stale


def test_filter_is_a_regex_falls_back_to_text_and_inverts():
    assert compile_filter("") == (None, False)
    typed, inverse = compile_filter("!a1(0")  # not a regex: matched as written
    assert inverse and typed.regex.search("xa1(0y") and not typed.regex.search("a10")
    typed, inverse = compile_filter("H100|l4")
    assert not inverse and typed.regex.search("h100-1") and typed.regex.search("L4")
    for big in ("a{99999999999}", "(" * 5000 + "a" + ")" * 5000,  # too big for re to compile
                "(?a)(?u)x"):  # flags at odds: a ValueError, not re.error
        typed, inverse = compile_filter(big)
        assert not inverse and typed.regex.search("x" + big) and not typed.regex.search("a")


def test_queue_stats_count_pending_running_and_the_oldest_wait():
    jobs = [job(1, PENDING, queue="quarter", submitted_at=100.0),
            job(2, PENDING, queue="quarter", submitted_at=160.0),
            job(3, RUNNING, queue="quarter"), job(4, PENDING, queue="gone", submitted_at=190)]
    stats = {s.name: s for s in queue_stats(QUEUES, jobs, now=200.0)}
    assert (stats["quarter"].pending, stats["quarter"].running, stats["quarter"].wait_s) == (
        2, 1, 100.0)
    assert stats["quarter"].portion == "0.25 GPU" and stats["whole"].wait_s is None
    assert stats["gone"].portion == "?" and stats["gone"].wait_s == 10.0
    ahead = [job(5, PENDING, queue="whole", submitted_at=260.0)]  # its submitter's clock ahead
    assert {s.name: s.wait_s for s in queue_stats(QUEUES, ahead, now=200.0)}["whole"] == 0.0


def test_label_colour_contrasts():
    assert label_colour("#ffffff") == "#000000" and label_colour("#000000") == "#ffffff"
    assert label_colour("#0072b2") == "#ffffff" and label_colour("#f0e442") == "#000000"


def test_demo_layout_mixes_mig_and_shares_and_scales_to_1000():
    small = fleet_layout(16)
    assert [(h.name, h.spec, h.real) for h in small] == [
        ("a100-1", "4xA100-80GB:mig", True), ("h100-1", "4xH100:mig", True),
        ("l4-1", "4xL4", True), ("a10-1", "4xA10", True)]
    assert [h.spec for h in fleet_layout(2)] == ["1xA100-80GB:mig", "1xH100:mig"]
    big = fleet_layout(1000)
    assert sum(int(h.spec.split("x")[0]) for h in big) == 1000
    assert sum(h.real for h in big) == 4 and len(big) == 16
    assert len({h.name for h in big}) == 16
    with pytest.raises(argparse.ArgumentTypeError):
        gpu_count("1001")
    with pytest.raises(argparse.ArgumentTypeError):
        gpu_count("0")
    assert gpu_count("1000") == 1000


def test_an_owner_the_config_lacks_is_marked_in_colour_too():
    """A team the config lacks (removed while its jobs run) took a colour by a hash of its
    name, maybe a configured team's, and no mark: its slices read as that team's. It is
    marked "?" wherever its blocks have no name drawn (the compact map, a share too narrow),
    colour or not; a configured team's blocks stay unmarked in colour, as before."""
    for team in ("audio", "vision"):
        store_job = job(7, team=team, slot=Slot("h", (0,), memory_mib=12000))
        agent = [{"id": "j1", "key": store_job.key(UID), "gpus": [0], "memory_mib": 12000,
                  "state": "running", "pid": 11, "name": "train", "created_at": 1}]
        (gpu,) = build([l4()], agent, [store_job]).hosts["h"].gpus
        compact = "".join(s.text for s in gpu_bar(gpu, 16, PAINT, labels=False))
        narrow = "".join(s.text for s in gpu_bar(gpu, 8, PAINT))
        wide = "".join(s.text for s in gpu_bar(gpu, 40, PAINT))
        assert ("?" in compact, "?" in narrow) == ((True, True) if team == "audio" else (
            False, False)), (team, compact, narrow)
        assert team in wide, wide  # where the name fits, the name says it


@pytest.mark.parametrize("mode,pending,shown", [
    (False, True, "MIG off (on after the next GPU reset)"),
    (True, False, "MIG on (off after the next GPU reset)"),
    (True, True, "MIG on · ")])
def test_the_gpu_view_says_a_mig_mode_change_pending_a_reset(mode, pending, shown):
    """The GPU view said "MIG off" of a GPU whose MIG on waits for a reset, nothing of the
    change its ``M`` makes (the reset) or that placement there makes or undoes."""
    gpu = dict(a100([]), mig_capable=True, mig_mode=mode, mig_pending=pending)
    status = HostStatus("h", state="online", snapshot={"gpus": [gpu]})
    head, _tables, _held = describe(status, "h", 1, StoreView(UID, ()), "red")
    assert shown in plain(head), plain(head)
