"""The metrics' families from a built state (pure: no HTTP), and [metrics] in the config."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pwd
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from typing import Callable, Iterator, List, Sequence, Tuple

import pytest

from fractui.config import Config, ConfigError, QueueConfig, TeamConfig, load_config
from fractui.metrics import exporter as exporting
from fractui.metrics.exporter import Exporter
from fractui.metrics.families import families
from fractui.metrics.state import MetricsState, PassReport
from fractui.sched.fleetview import HostView
from fractui.scheduler.service import Scheduler
from fractui.store.base import StoreUnavailable
from fractui.store.model import MOVE, Job, Slot
from fractui.store.sqlite import SqliteStore
from tests.cli_run import closed_port, in_process, leaks
from tests.conftest import REPO
from tests import localfleet
from tests.localfleet import wait
from tests.sshd import in_mount_namespace

local_fleet = localfleet.local_fleet

MIB = 1024 * 1024
NOW = 1000.0


def job(id_, state, queue, team=None, slot=None, agent_job=None, submitted_at=900.0,
        preemptible=False) -> Job:
    return Job(id=id_, queue=queue, team=team, name="j%d" % id_, argv=("true",), request={},
               state=state, submitted_at=submitted_at, updated_at=submitted_at, slot=slot,
               agent_job=agent_job, preemptible=preemptible)


L4 = {"index": 0, "uuid": "GPU-l4", "name": "NVIDIA L4", "memory_mib": 23034,
      "mig_mode": False, "memory_used_mib": 5000, "utilization_gpu": 40,
      "processes": [{"pid": 11, "used_mib": 3000, "instance": None},
                    {"pid": 99, "used_mib": 1000, "instance": None}],
      "health": {"temperature_c": 50, "slowdown_c": 90}}
A100 = {"index": 1, "uuid": "GPU-a100", "name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920,
        "mig_mode": True, "memory_used_mib": 2048, "utilization_gpu": None,
        "utilization_note": "not reported by NVML for MIG", "processes": [],
        "instances": [{"uuid": "MIG-x", "profile": "3g.40gb", "start": 4, "size": 4,
                       "memory_mib": 40192, "memory_used_mib": 2048, "busy": True}],
        "health": {"ecc_volatile": {"corrected": 0, "uncorrected": 2}}}
AGENT_JOBS = {
    "j1": {"id": "j1", "state": "running", "pid": 11, "gpus": [0], "memory_mib": 5758,
           "usage": {"util_mean": 35.5, "memory_peak_mib": 3100}},
    "j2": {"id": "j2", "state": "running", "pid": 12, "gpus": [1], "instance": "MIG-x",
           "usage": {"util_mean": None, "util_note": "not reported by NVML for MIG instances"}},
    "j3": {"id": "j3", "state": "exited", "pid": 13, "gpus": [0], "memory_mib": 9000},
}
HOSTS = [HostView("a", "online", {"gpus": []}, {"time": NOW, "gpus": [L4, A100]}, AGENT_JOBS),
         # offline: what it last said is stale, so none of its GPUs is reported
         HostView("b", "offline", None, {"time": 500.0, "gpus": [dict(L4)]}, {})]
JOBS = [
    job(1, "running", "quarter", "nlp", Slot("a", (0,), memory_mib=5758, charge=0.25), "j1"),
    job(2, "running", "mig3", "vision", Slot("a", (1,), profile="3g.40gb", start=4,
                                           charge=0.428571), "j2", preemptible=True),
    job(3, "pending", "quarter", "nlp", submitted_at=940.0),
    job(4, "pending", "quarter", "nlp", submitted_at=910.0),
    job(5, "placed", "quarter", "nlp", Slot("a", (0,), memory_mib=5758, charge=0.25)),
]
TEAMS = (TeamConfig("nlp", quota_gpus=1.0), TeamConfig("vision", quota_gpus=0.25))


def state(jobs=JOBS, **kw) -> MetricsState:
    return MetricsState(**dict(dict(now=NOW, holder="ops@head", hosts=HOSTS, jobs=jobs, teams=TEAMS,
                                    queues=["quarter", "mig3", "idle"], lease_held=True,
                                    store_reachable=True, last_pass=999.5,
                                    copies={"a": {"late": 1, "left": 2}}), **kw))


def samples(st: MetricsState) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in families(st) for s in fam.samples}


def gpu(g: str, host: str = "a"):
    return (("gpu", g), ("host", host))


def of_job(j: str, team: str, queue: str, g: str, slice_: str):
    return (("gpu", g), ("host", "a"), ("job", j), ("queue", queue), ("slice", slice_),
            ("team", team))


J1 = of_job("1", "nlp", "quarter", "0", "5758MiB")
J2 = of_job("2", "vision", "mig3", "1", "3g.40gb")
STATES = ("connecting", "online", "degraded", "offline", "untrusted")

EXPECTED = {
    ("fractui_scheduler_lease_held", (("holder", "ops@head"),)): 1.0,
    ("fractui_store_reachable", ()): 1.0,
    ("fractui_scheduler_last_pass_timestamp_seconds", ()): 999.5,
    **{("fractui_host_state", (("host", h), ("state", s))): float(s == st)
       for h, st in (("a", "online"), ("b", "offline")) for s in STATES},
    ("fractui_host_agent_reachable", (("host", "a"),)): 1.0,
    ("fractui_host_agent_reachable", (("host", "b"),)): 0.0,
    # the copies the last pass found on the host it reached, each kind (b was not reached)
    ("fractui_host_unheld_copies", (("host", "a"), ("kind", "late"))): 1.0,
    ("fractui_host_unheld_copies", (("host", "a"), ("kind", "stale"))): 0.0,
    ("fractui_host_unheld_copies", (("host", "a"), ("kind", "left"))): 2.0,
    ("fractui_gpu_info", gpu("0") + (("mig", "off"), ("model", "NVIDIA L4"),
                                     ("uuid", "GPU-l4"))): 1.0,
    ("fractui_gpu_info", gpu("1") + (("mig", "on"), ("model", "NVIDIA A100-SXM4-80GB"),
                                     ("uuid", "GPU-a100"))): 1.0,
    ("fractui_gpu_memory_bytes", gpu("0")): 23034 * MIB,
    ("fractui_gpu_memory_bytes", gpu("1")): 81920 * MIB,
    ("fractui_gpu_memory_used_bytes", gpu("0")): 5000 * MIB,
    ("fractui_gpu_memory_used_bytes", gpu("1")): 2048 * MIB,
    # the running j1's share; j3 has ended
    ("fractui_gpu_memory_allocated_bytes", gpu("0")): 5758 * MIB,
    ("fractui_gpu_memory_allocated_bytes", gpu("1")): 40192 * MIB,
    ("fractui_gpu_utilization_ratio", gpu("0")): 0.4,  # none for the MIG GPU
    ("fractui_gpu_allocated_ratio", gpu("0")): 0.5,  # job 1 runs, job 5 is placed
    ("fractui_gpu_allocated_ratio", gpu("1")): 0.428571,
    ("fractui_gpu_healthy", gpu("0")): 1.0,
    ("fractui_gpu_healthy", gpu("1")): 0.0,  # uncorrected ECC errors
    ("fractui_job_allocated_gpus", J1): 0.25,
    ("fractui_job_allocated_gpus", J2): 0.428571,
    ("fractui_job_memory_used_bytes", J1): 3000 * MIB,  # its process, not pid 99's
    ("fractui_job_memory_used_bytes", J2): 2048 * MIB,  # its instance's
    ("fractui_job_memory_limit_bytes", J1): 5758 * MIB,
    ("fractui_job_memory_limit_bytes", J2): 40192 * MIB,
    ("fractui_job_utilization_mean_ratio", J1): 0.355,  # none for the MIG job
    # jobs 1 and 2 hold slices, on a GPU each (job 5, placed, holds none yet)
    ("fractui_sharing_demand_gpus", ()): 2.0,
    ("fractui_sharing_used_gpus", ()): 2.0,
    ("fractui_queue_pending_jobs", (("queue", "quarter"),)): 2.0,
    ("fractui_queue_pending_jobs", (("queue", "mig3"),)): 0.0,
    ("fractui_queue_pending_jobs", (("queue", "idle"),)): 0.0,
    ("fractui_queue_oldest_wait_seconds", (("queue", "quarter"),)): 90.0,
    ("fractui_queue_oldest_wait_seconds", (("queue", "mig3"),)): 0.0,
    ("fractui_queue_oldest_wait_seconds", (("queue", "idle"),)): 0.0,
    ("fractui_team_quota_gpus", (("team", "nlp"),)): 1.0,
    ("fractui_team_quota_gpus", (("team", "vision"),)): 0.25,
    ("fractui_team_allocated_gpus", (("team", "nlp"),)): 0.5,
    ("fractui_team_allocated_gpus", (("team", "vision"),)): 0.428571,
    ("fractui_team_borrowed_gpus", (("team", "nlp"),)): 0.0,
    ("fractui_team_borrowed_gpus", (("team", "vision"),)): 0.428571,
}


def test_a_state_yields_exactly_the_expected_samples():
    assert samples(state()) == EXPECTED


def test_the_series_stay_within_the_documented_bound():
    """docs/metrics.md: at most 9H + 7G + 4R + 2Q + 3T + 22 (the 22 less the histogram's 17,
    which the exporter adds): here 2 hosts, 2 reachable GPUs, 2 jobs holding slices, 3
    queues, 2 teams."""
    assert len(samples(state())) <= 9 * 2 + 7 * 2 + 4 * 2 + 2 * 3 + 3 * 2 + 5


def test_an_ended_job_leaves_and_takes_its_series_with_it():
    """Job 1 ended: it is no longer among the active jobs, nor running on its host's agent."""
    jobs = [j for j in JOBS if j.id != 1]
    hosts = [HostView("a", "online", {"gpus": []}, {"time": NOW, "gpus": [L4, A100]},
                      dict(AGENT_JOBS, j1=dict(AGENT_JOBS["j1"], state="exited"))), HOSTS[1]]
    got = samples(state(jobs, hosts=hosts))
    assert not [k for k in got if ("job", "1") in k[1]]
    assert got[("fractui_gpu_allocated_ratio", gpu("0"))] == 0.25  # job 5's alone
    assert got[("fractui_gpu_memory_allocated_bytes", gpu("0"))] == 0.0
    assert got[("fractui_team_allocated_gpus", (("team", "nlp"),))] == 0.25
    assert got[("fractui_job_allocated_gpus", J2)] == 0.428571


def test_a_job_moving_by_hand_holds_its_targets_room_as_well_as_its_own():
    """Job 1 stops to move from the L4 to a 1g.10gb of the A100: the slot there is held for it
    (no placement takes it) while it still holds its share, so both GPUs read it allocated;
    it is charged its own slice alone, as its usage record is, until it runs there."""
    moving = dataclasses.replace(JOBS[0], state="stopping", stop_intent=MOVE, move_to=Slot(
        "a", (1,), profile="1g.10gb", start=6, charge=0.142857))
    got = samples(state([moving] + JOBS[1:]))
    assert got[("fractui_gpu_allocated_ratio", gpu("0"))] == 0.5  # job 1's share, job 5's
    assert got[("fractui_gpu_allocated_ratio", gpu("1"))] == 0.571428  # job 2's, job 1's
    assert got[("fractui_job_allocated_gpus", J1)] == 0.25


def _sums(got) -> Tuple[float, float]:
    """The sums of every GPU's allocated ratio and of every team's allocated GPUs."""
    return tuple(sum(v for (n, _), v in got.items() if n == name)  # type: ignore[return-value]
                 for name in ("fractui_gpu_allocated_ratio", "fractui_team_allocated_gpus"))


@pytest.mark.parametrize("target,smaller", [
    (Slot("a", (1,), profile="1g.10gb", start=6, charge=0.142857), 0.142857),  # to a smaller
    (Slot("a", (1,), profile="3g.40gb", start=0, charge=0.428571), 0.25)])  # to a larger
def test_while_a_job_moves_the_gpus_sum_exceeds_the_teams_by_the_smaller_of_its_slots(
        target, smaller):
    """docs/metrics.md: every host heard from and every job in a team, the GPUs' series sum
    to the teams' — but a job moving by hand holds the room of both its slots (the GPUs'
    series, no placement takes either) and is charged to its team's quota the larger of the
    two (``held_charge``: what it will hold at most), so the GPUs' sum is the teams' and the
    smaller of its slots' charges."""
    gpus, teams = _sums(samples(state()))
    assert gpus == pytest.approx(teams)  # (nothing moves)
    moving = dataclasses.replace(JOBS[0], state="stopping", stop_intent=MOVE, move_to=target)
    gpus, teams = _sums(samples(state([moving] + JOBS[1:])))
    assert gpus - teams == pytest.approx(smaller, abs=1e-6)


def test_a_team_gone_from_the_config_whose_jobs_hold_gpus_has_them_counted_not_a_quota():
    """vision is removed from the config while its job 2 runs on the A100: the GPUs it holds
    are still the team's, all borrowed (a team of no config has no quota: its jobs may be
    preempted), not missing from the teams' series while the GPUs' series count them; no
    quota is said of it, the config having none."""
    got = samples(state(teams=TEAMS[:1]))
    vision = (("team", "vision"),)
    assert got[("fractui_team_allocated_gpus", vision)] == 0.428571
    assert got[("fractui_team_borrowed_gpus", vision)] == 0.428571
    assert ("fractui_team_quota_gpus", vision) not in got
    assert got[("fractui_team_quota_gpus", (("team", "nlp"),))] == 1.0


def test_a_job_whose_host_is_not_heard_from_has_its_charge_and_nothing_measured():
    hosts = [HostView("a", "offline", None, None, {}), HOSTS[1]]
    got = samples(state(hosts=hosts))
    assert got[("fractui_job_allocated_gpus", J1)] == 0.25
    assert [k for k in got if k[0].startswith("fractui_job_")] == [
        ("fractui_job_allocated_gpus", J1), ("fractui_job_allocated_gpus", J2)]
    assert not [k for k in got if k[0].startswith("fractui_gpu_")]


def test_before_any_pass_only_the_scheduler_and_hosts_are_reported():
    got = samples(state([], last_pass=None, lease_held=False, store_reachable=False,
                        copies={}))
    assert got[("fractui_scheduler_lease_held", (("holder", "ops@head"),))] == 0.0
    assert got[("fractui_store_reachable", ())] == 0.0
    assert ("fractui_scheduler_last_pass_timestamp_seconds", ()) not in got
    assert not [k for k in got if k[0] == "fractui_host_unheld_copies"]  # none judged yet
    assert got[("fractui_queue_pending_jobs", (("queue", "quarter"),))] == 0.0


def test_the_exporter_serves_while_the_lease_is_held_and_tries_a_taken_port_again(caplog):
    caplog.set_level(logging.INFO, logger="fractui.metrics")
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    exporter = Exporter(("127.0.0.1", port), Config(path=None, teams=TEAMS), lambda: HOSTS)
    try:
        for _ in range(3):  # another process has the port: said once, tried every turn
            exporter.report(PassReport("me", held=True, store_ok=True))
            assert not exporter.serving
        said = [r.message for r in caplog.records if "cannot listen" in r.message]
        assert said == ["metrics: cannot listen on 127.0.0.1:%d ([metrics] listen): Address "
                        "already in use: it is held by a process of uid %d (%s) (this user: "
                        "another scheduler, or one that lost the lease and has not yet closed "
                        "it); tried again every pass" % (
                            port, os.getuid(), pwd.getpwuid(os.getuid()).pw_name)]
        blocker.close()
        exporter.report(PassReport("me", held=True, store_ok=True, jobs=JOBS, seconds=0.02,
                                   at=999.5))
        assert exporter.serving
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            text = r.read().decode()
        assert 'fractui_scheduler_lease_held{holder="me"} 1.0' in text
        assert 'fractui_scheduler_pass_duration_seconds_count{holder="me"} 1.0' in text
        assert 'fractui_team_allocated_gpus{team="nlp"} 0.5' in text
        exporter.report(PassReport("me", held=False, store_ok=True))  # the lease is lost
        assert not exporter.serving
        with pytest.raises(OSError):
            urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5)
    finally:
        blocker.close()
        exporter.close()


def test_a_scrape_is_said_in_the_log_at_debug_and_a_bad_request_as_a_warning(caplog, capfd):
    """The server's requests go to fractui's log, never to the scheduler's stderr as
    http.server writes them: a scrape at debug (who scraped, and what), a request it refuses
    (one that is not HTTP) as a warning naming the client. They were dropped, as
    prometheus-client's own server drops them, a request refused with them."""
    caplog.set_level(logging.DEBUG, logger="fractui.metrics")
    port = closed_port()
    exporter = Exporter(("127.0.0.1", port), Config(path=None, teams=TEAMS), lambda: HOSTS)
    try:
        exporter.report(PassReport("me", held=True, store_ok=True, jobs=JOBS, seconds=0.02))
        assert "fractui_scheduler_lease_held" in scrape("127.0.0.1", port)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"not http at all\r\n\r\n")
            assert b"Error code: 400" in conn.makefile("rb").read()
    finally:
        exporter.close()
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "fractui.metrics"
            and "serving" not in r.getMessage()]
    # (each request is logged by its own server thread once answered: in either order)
    scrapes = [(level, words) for level, words in said if "GET" in words]
    assert len(scrapes) == 1 and scrapes[0][0] == "DEBUG", said
    assert scrapes[0][1].startswith('metrics: 127.0.0.1 "GET /metrics HTTP/1.1" 200 '), said
    assert ("WARNING", "metrics: a request from 127.0.0.1 failed: code 400, message Bad "
            "request version ('all')") in said, said
    assert capfd.readouterr().err == ""


# Another user's process squatting a port: it prints the port it listens on, then waits for
# its stdin to close.
SQUATTER = """
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""
NOBODY = 65534


def test_a_scheduler_whose_metrics_port_another_user_holds_says_so_and_goes_on(tmp_path):
    """A real `fractui scheduler` whose [metrics] listen port a process of another user holds
    (it answers scrapes there in the scheduler's place): said on stderr once, naming the
    address, the config key and file, the OS's words and the holder's uid; the scheduler goes
    on (it tries each pass) and stops cleanly, no traceback."""
    squatter = subprocess.Popen(["/usr/bin/python3", "-c", SQUATTER], user=NOBODY,
                                group=NOBODY, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, cwd="/")
    try:
        port = int(squatter.stdout.readline())
        config = write(tmp_path, '[store]\nurl = "sqlite:///%s"\n\n[metrics]\nlisten = '
                       '"127.0.0.1:%d"\n\n[[queues]]\nname = "q"\ngpu = 0.5\n' % (
                           tmp_path / "store.db", port))
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "fractui", "--config", config, "scheduler"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env=dict(os.environ, PYTHONPATH=REPO))
        try:
            line = scheduler.stderr.readline()
            assert line.endswith(
                " ERROR fractui.metrics: metrics: cannot listen on 127.0.0.1:%d ([metrics] "
                "listen in %s): Address already in use: it is held by uid %d (nobody), another "
                "user, who answers scrapes there in this scheduler's place; tried again every "
                "pass\n" % (port, config, NOBODY)), line
            assert scheduler.poll() is None  # going on
        finally:
            scheduler.terminate()
            _, rest = scheduler.communicate(timeout=60)
        assert scheduler.returncode == 0 and "Traceback" not in rest, rest
    finally:
        squatter.stdin.close()
        squatter.wait(30)
        squatter.stdout.close()


def ipv6_loopback() -> bool:
    """Whether this machine has ::1 (the kernel lists it on lo in /proc/net/if_inet6)."""
    try:
        with open("/proc/net/if_inet6") as f:
            return any(row.split()[0] == "0" * 31 + "1" for row in f if row.split())
    except FileNotFoundError:  # (no IPv6 at all)
        return False


def scrape(address: str, port: int) -> str:
    with urllib.request.urlopen("http://%s:%d/metrics" % (address, port), timeout=5) as r:
        return r.read().decode()


def scheduler_with_localhost(tmp_path, port: int) -> subprocess.Popen:
    """A real `fractui scheduler` serving metrics at "localhost:PORT", where localhost is both
    127.0.0.1 and ::1 (its own /etc/hosts, in a mount namespace of its own, as many machines'
    are)."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n::1 localhost\n")
    config = write(tmp_path, '[store]\nurl = "sqlite:///%s"\n\n[metrics]\nlisten = '
                   '"localhost:%d"\n\n[[queues]]\nname = "q"\ngpu = 0.5\n' % (
                       tmp_path / "store.db", port))
    return subprocess.Popen(
        in_mount_namespace(["--bind", str(hosts), "/etc/hosts"]) + [
            sys.executable, "-m", "fractui", "--config", config, "scheduler"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO))


def scraped_at_both(scheduler: subprocess.Popen, port: int) -> List[str]:
    """What a scrape at 127.0.0.1 and at ::1 read, once both answer."""
    deadline = time.monotonic() + 60
    while True:  # until it holds the lease and serves
        try:
            return [scrape(a, port) for a in ("127.0.0.1", "[::1]")]
        except OSError as err:
            assert scheduler.poll() is None and time.monotonic() < deadline, err
            time.sleep(0.1)


def stopped(scheduler: subprocess.Popen) -> str:
    """Its stderr, once it stopped cleanly."""
    scheduler.terminate()
    _, rest = scheduler.communicate(timeout=60)
    assert scheduler.returncode == 0 and "Traceback" not in rest, rest
    return rest


@pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_a_name_with_addresses_of_both_families_is_listened_on_at_each(tmp_path):
    """listen = "localhost:PORT" where localhost is 127.0.0.1 and ::1: scrapes come through
    at each, for a client may try either first (curl and Prometheus try ::1 first). Before,
    it listened on the resolver's first address alone, and a scrape at the other found
    nothing there, or another local user's listener."""
    port = closed_port()
    scheduler = scheduler_with_localhost(tmp_path, port)
    try:
        for text in scraped_at_both(scheduler, port):
            assert 'fractui_scheduler_lease_held{holder="' in text
    finally:
        said = stopped(scheduler)
    assert re.search(r"serving http://localhost:%d/metrics \(on (127\.0\.0\.1, ::1|::1, "
                     r"127\.0\.0\.1)\)" % port, said), said


@pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_a_name_one_of_whose_addresses_is_taken_is_listened_on_at_none_until_it_is_free(
        tmp_path):
    """Another process holds the port at ::1 alone: the scheduler says so, naming ::1, and
    serves at 127.0.0.1 neither (a scrape there would read the holder while one at ::1 read
    whoever holds it); once ::1 is free it serves at both."""
    port = closed_port()
    blocker = socket.socket(socket.AF_INET6)
    blocker.bind(("::1", port))
    blocker.listen()
    scheduler = scheduler_with_localhost(tmp_path, port)
    try:
        line = scheduler.stderr.readline()
        assert " ERROR fractui.metrics: metrics: cannot listen on localhost:%d (::1) " \
            "([metrics] listen in %s): Address already in use: it is held by a process of " \
            "uid %d" % (port, tmp_path / "config.toml", os.getuid()) in line, line
        with pytest.raises(OSError):
            scrape("127.0.0.1", port)
        blocker.close()
        for text in scraped_at_both(scheduler, port):
            assert 'fractui_scheduler_lease_held{holder="' in text
    finally:
        blocker.close()
        stopped(scheduler)


def test_the_pass_counts_go_on_through_a_lost_and_retaken_lease():
    """A holder that loses the lease and takes it again keeps counting in the same series:
    the registry is the process's, not the lease's."""
    port = closed_port()
    exporter = Exporter(("127.0.0.1", port), Config(path=None, teams=TEAMS), lambda: HOSTS)
    count = 'fractui_scheduler_pass_duration_seconds_count{holder="me"}'
    try:
        exporter.report(PassReport("me", held=True, store_ok=True, jobs=JOBS, seconds=0.02))
        exporter.report(PassReport("me", held=False, store_ok=True))
        exporter.report(PassReport("me", held=True, store_ok=True, jobs=JOBS, seconds=0.03))
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            assert "%s 2.0" % count in r.read().decode()
    finally:
        exporter.close()


# -- what one client may hold of the endpoint (docs/metrics.md, "Limits") --

REQUEST = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


@contextmanager
def serving(hosts: Callable[[], Sequence[HostView]] = lambda: HOSTS,
            address: str = "127.0.0.1") -> Iterator[int]:
    """A real exporter holding the lease on a loopback port (yielded), closed after."""
    port = closed_port()
    exporter = Exporter((address, port), Config(path=None, teams=TEAMS), hosts)
    try:
        exporter.report(PassReport("me", held=True, store_ok=True, jobs=JOBS, seconds=0.02))
        yield port
    finally:
        exporter.close()


def connected(port: int) -> socket.socket:
    """A connection that sends nothing (its timeout only keeps a failing test from hanging)."""
    return socket.create_connection(("127.0.0.1", port), timeout=60)


def answer(conn: socket.socket, request: bytes = b"") -> bytes:
    """All the server sends on ``conn`` (after ``request``) until it closes it; b"" where it
    reset it."""
    try:
        conn.sendall(request)
        with conn.makefile("rb") as f:
            return f.read()
    except (BrokenPipeError, ConnectionResetError):
        return b""
    finally:
        conn.close()


def full(caplog) -> List[str]:
    return [r.getMessage() for r in caplog.records if "the most served at once" in
            r.getMessage()]


def test_idle_connections_past_the_bound_close_the_oldest_and_a_scrape_is_answered(
        monkeypatch, caplog):
    """Connections that send nothing held a server thread each, without end: a local user
    could open thousands. At CONNECTIONS the oldest that has sent no request is closed for
    the new one, said once, so a scrape is answered among any number of idle ones."""
    monkeypatch.setattr(exporting, "CONNECTIONS", 4)
    monkeypatch.setattr(exporting, "REQUEST_SECONDS", 600.0)  # (closed by the bound alone)
    with serving() as port:
        idle = [connected(port) for _ in range(4)]
        for _ in range(6):  # each new one closes the oldest, which sent nothing
            idle.append(connected(port))
            assert answer(idle.pop(0)) == b""
        assert "fractui_scheduler_lease_held" in scrape("127.0.0.1", port)
        assert answer(idle.pop(0)) == b""  # the oldest, closed for the scrape
        for conn in idle:  # the newest, kept: their requests are answered
            assert answer(conn, REQUEST).startswith(b"HTTP/1.0 200 OK")
    assert full(caplog) == ["metrics: 4 connections open at 127.0.0.1:%d, the most served at "
                            "once; said once while it lasts: closed the oldest that had sent "
                            "no request" % port]


def test_a_connection_past_the_bound_while_each_is_answered_is_refused(monkeypatch, caplog):
    """Where every open connection is being answered (a slow fleet view here), one more is
    refused at once, said, and the answers go on."""
    monkeypatch.setattr(exporting, "CONNECTIONS", 2)
    entered, go = threading.Semaphore(0), threading.Event()

    def slow_hosts() -> Sequence[HostView]:
        entered.release()
        go.wait(60)
        return HOSTS

    with serving(slow_hosts) as port:
        got: List[str] = []
        scrapes = [threading.Thread(target=lambda: got.append(scrape("127.0.0.1", port)))
                   for _ in range(2)]
        for t in scrapes:
            t.start()
        assert entered.acquire(timeout=60) and entered.acquire(timeout=60)
        assert answer(connected(port), REQUEST) == b""
        go.set()
        for t in scrapes:
            t.join(60)
        assert len(got) == 2 and all("fractui_scheduler_lease_held" in text for text in got)
    assert full(caplog) == ["metrics: 2 connections open at 127.0.0.1:%d, the most served at "
                            "once; said once while it lasts: each being answered, refused one "
                            "from 127.0.0.1" % port]


def clients_lines(caplog) -> List[str]:
    """The endpoint's lines at INFO or above but its own serving and stopping."""
    return [r.getMessage() for r in caplog.records if r.name == "fractui.metrics" and
            r.levelno >= logging.INFO and "serving" not in r.getMessage()]


def test_bad_requests_say_at_most_log_lines_a_window_then_how_many_more(monkeypatch, caplog):
    """A request refused (not HTTP) was a warning each: any client could flood the
    scheduler's log. At most LOG_LINES are said in a LOG_WINDOW_S, and the rest counted in one
    line once the window has ended (said at the next pass); then lines are said again."""
    caplog.set_level(logging.INFO, logger="fractui.metrics")
    monkeypatch.setattr(exporting, "LOG_LINES", 3)
    monkeypatch.setattr(exporting, "LOG_WINDOW_S", 3600.0)
    port = closed_port()
    exporter = Exporter(("127.0.0.1", port), Config(path=None, teams=TEAMS), lambda: HOSTS)
    refused = "metrics: a request from 127.0.0.1 failed: code 400, message Bad request " \
              "version ('all')"
    try:
        exporter.report(PassReport("me", held=True, store_ok=True, jobs=JOBS, seconds=0.02))
        for _ in range(10):  # (each said, where it is, before its 400 is sent)
            assert b"Error code: 400" in answer(connected(port), b"not http at all\r\n\r\n")
        assert clients_lines(caplog) == [refused] * 3
        exporter.report(PassReport("me", held=True, store_ok=True, jobs=JOBS))
        assert clients_lines(caplog) == [refused] * 3  # (the window goes on)
        monkeypatch.setattr(exporting, "LOG_WINDOW_S", 0.0)  # (it has ended)
        exporter.report(PassReport("me", held=True, store_ok=True, jobs=JOBS))
        assert b"Error code: 400" in answer(connected(port), b"not http at all\r\n\r\n")
    finally:
        exporter.close()
    assert clients_lines(caplog) == [refused] * 3 + [
        "metrics: and 7 more lines from its clients in the last 0 s, unsaid: at most 3 are "
        "said in that time", refused]


def test_the_connection_bound_reached_and_left_again_and_again_is_said_at_most_log_lines(
        monkeypatch, caplog):
    """The bound reached and left again and again said each time, two lines a connection
    (a review's 1000 connections gave 919): at most LOG_LINES in a window, across the
    endpoint, and what was left unsaid is counted when it stops."""
    caplog.set_level(logging.INFO, logger="fractui.metrics")
    monkeypatch.setattr(exporting, "CONNECTIONS", 1)
    monkeypatch.setattr(exporting, "LOG_LINES", 5)
    monkeypatch.setattr(exporting, "LOG_WINDOW_S", 3600.0)
    with serving() as port:
        for _ in range(20):
            first = connected(port)  # room again: said
            second = connected(port)  # full: the first closed, said
            assert answer(first) == b""
            assert answer(second, REQUEST).startswith(b"HTTP/1.0 200 OK")  # (closed after)
        said = clients_lines(caplog)
        assert len(said) == 5 and "the most served at once" in said[0], said
    assert clients_lines(caplog)[5:] == [
        "metrics: and 34 more lines from its clients in the last 3600 s, unsaid: at most 5 "
        "are said in that time"]


def test_a_connection_that_sends_no_whole_request_is_closed_after_the_timeout(
        monkeypatch, capfd):
    """A connection silent past REQUEST_SECONDS, or stopped partway through its request, is
    closed (it was held for ever), said at debug, not with a traceback on stderr; a scrape is
    answered as before."""
    monkeypatch.setattr(exporting, "REQUEST_SECONDS", 0.2)
    with serving() as port:
        silent, partway = connected(port), connected(port)
        assert answer(silent) == b""
        assert answer(partway, b"GET /metrics HTTP/1.1\r\nHost: x\r\n") == b""
        assert "fractui_scheduler_lease_held" in scrape("127.0.0.1", port)
    assert capfd.readouterr().err == ""


def test_a_connection_reset_partway_through_its_request_is_said_at_debug(caplog, capfd):
    """A client that resets its connection partway through a request (SO_LINGER 0): said at
    debug; socketserver printed the reset's traceback on the scheduler's stderr."""
    caplog.set_level(logging.DEBUG, logger="fractui.metrics")
    with serving() as port:
        conn = connected(port)
        conn.sendall(b"GET /metrics HTTP/1.1\r\n")
        assert "fractui_scheduler_lease_held" in scrape("127.0.0.1", port)  # (it is accepted)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        said, err = "metrics: the connection from 127.0.0.1 ended unanswered: [Errno 104] " \
                    "Connection reset by peer", ""
        for _ in range(1200):  # (until its thread has read the reset: a bound, not a measure)
            err += capfd.readouterr().err
            if err or said in [r.getMessage() for r in caplog.records]:
                break
            time.sleep(0.05)
    assert err == "" and said in [r.getMessage() for r in caplog.records]


def test_a_client_that_stops_reading_its_answer_is_cut_short_and_said_not_on_stderr(
        monkeypatch, caplog, capfd):
    """An answer a client stops reading (larger than the sockets' buffers, 4 MiB on loopback:
    a fleet of 5000 hosts) is cut at REQUEST_SECONDS and said in the log at debug; wsgiref
    printed the timeout's traceback on the scheduler's stderr."""
    caplog.set_level(logging.DEBUG, logger="fractui.metrics")
    monkeypatch.setattr(exporting, "REQUEST_SECONDS", 0.2)
    fleet = [HostView("h%d" % i, "online", {"gpus": []}, {"time": NOW, "gpus": [L4, A100]},
                      AGENT_JOBS) for i in range(5000)]
    with serving(lambda: fleet) as port:
        conn = socket.socket()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn.connect(("127.0.0.1", port))
        conn.sendall(REQUEST)  # and reads nothing
        said = "metrics: 127.0.0.1 read nothing for 0.2 s: its answer cut short"
        for _ in range(1200):  # (until the server gives up: a bound, not a measure)
            if any(r.getMessage() == said for r in caplog.records):
                break
            time.sleep(0.05)
        head, _, body = answer(conn).partition(b"\r\n\r\n")
        length = re.search(rb"Content-Length: (\d+)", head)
        assert length and len(body) < int(length.group(1)), "not cut short"
    assert said in [r.getMessage() for r in caplog.records]
    assert capfd.readouterr().err == ""


def test_stopping_closes_the_connections_that_have_sent_no_request():
    """A connection opened while the lease was held was answered after it was lost (its
    server thread lived on): the stop closes those that have sent no request, and returns."""
    with serving() as port:
        silent, partway = connected(port), connected(port)
        partway.sendall(b"GET /metrics HTTP/1.1\r\n")
        assert "fractui_scheduler_lease_held" in scrape("127.0.0.1", port)  # both accepted
    assert answer(silent, REQUEST) == b""
    assert answer(partway, b"Host: x\r\n\r\n") == b""
    with pytest.raises(OSError):
        scrape("127.0.0.1", port)


def test_stopping_answers_a_request_being_answered():
    """A request whose headers are in when the lease is lost is answered (docs/metrics.md,
    "Limits"): the stop closes only those that have sent no request."""
    entered, go = threading.Event(), threading.Event()

    def slow_hosts() -> Sequence[HostView]:
        entered.set()
        go.wait(60)
        return HOSTS

    got: List[str] = []
    with serving(slow_hosts) as port:
        scraping = threading.Thread(target=lambda: got.append(scrape("127.0.0.1", port)))
        scraping.start()
        assert entered.wait(60)
    go.set()  # (the stop has returned, the answer still being made)
    scraping.join(60)
    assert len(got) == 1 and "fractui_scheduler_lease_held" in got[0]


def test_a_request_closed_partway_for_room_or_by_the_stop_is_not_answered(monkeypatch):
    """A connection closed partway through its headers, for room or by the stop, read the cut
    as their end and was answered all the same: a fleet's worth of work a connection, beyond
    CONNECTIONS (the cut ones no longer count) and after the lease was lost. Now only the
    scrapes make an answer."""
    built: List[int] = []

    def counted() -> Sequence[HostView]:
        built.append(1)
        return HOSTS

    partway = b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
    monkeypatch.setattr(exporting, "CONNECTIONS", 1)
    with serving(counted) as port:
        for_room = connected(port)
        for_room.sendall(partway)
        assert "fractui_scheduler_lease_held" in scrape("127.0.0.1", port)  # closes it
        assert answer(for_room) == b""
    monkeypatch.setattr(exporting, "CONNECTIONS", 16)
    with serving(counted) as port:
        at_stop = connected(port)
        at_stop.sendall(partway)
        assert "fractui_scheduler_lease_held" in scrape("127.0.0.1", port)  # (it is accepted)
    assert answer(at_stop) == b""
    for _ in range(1200):  # until their server threads end (a bound, not a measure)
        if not [t for t in threading.enumerate() if "process_request_thread" in t.name]:
            break
        time.sleep(0.05)
    assert len(built) == 2


def test_an_ipv6_address_is_said_in_brackets(monkeypatch, caplog):
    """At "[::1]:PORT" the URL served, the port another holds and the bound reached are said
    with the address in brackets, as [metrics] listen writes it: "::1:PORT" named no port
    (and "http://::1:PORT/metrics" is no URL)."""
    caplog.set_level(logging.INFO, logger="fractui.metrics")
    monkeypatch.setattr(exporting, "CONNECTIONS", 1)
    with serving(address="::1") as port:
        first, second = (socket.create_connection(("::1", port), timeout=60) for _ in "12")
        assert answer(first) == b""  # closed for the second
        second.close()
        other = Exporter(("::1", port), Config(path=None, teams=TEAMS), lambda: HOSTS)
        other.report(PassReport("me", held=True, store_ok=True, jobs=JOBS))  # (taken)
        assert not other.serving
    said = [r.getMessage() for r in caplog.records]
    assert "metrics: serving http://[::1]:%d/metrics while this scheduler holds the lease" % (
        port) in said
    assert any(m.startswith("metrics: cannot listen on [::1]:%d " % port) for m in said), said
    assert full(caplog) == ["metrics: 1 connections open at [::1]:%d, the most served at "
                            "once; said once while it lasts: closed the oldest that had sent "
                            "no request" % port]


def test_headers_past_head_bytes_are_answered_431_and_a_long_line_414(monkeypatch, caplog):
    """Headers are read up to HEAD_BYTES in all (http.server's own bounds, 100 lines of 64 KiB,
    let one connection hold 6.5 MiB); a request line up to 64 KiB (http.server's)."""
    monkeypatch.setattr(exporting, "HEAD_BYTES", 1024)
    with serving() as port:
        pad = b"GET /metrics HTTP/1.1\r\nX-Pad: %s\r\n\r\n"
        assert answer(connected(port), pad % (b"a" * 900)).startswith(b"HTTP/1.0 200 OK")
        assert answer(connected(port), pad % (b"a" * 2000)).startswith(
            b"HTTP/1.0 431 Too many headers")
        long_line = b"GET /%s HTTP/1.1\r\n\r\n" % (b"a" * 70000)
        assert answer(connected(port), long_line).startswith(b"HTTP/1.0 414")
    assert "metrics: a request from 127.0.0.1 failed: code 431, message Too many headers" in [
        r.getMessage() for r in caplog.records]


def test_a_connection_is_answered_once_at_any_path_and_head_is_refused():
    """One request a connection (HTTP/1.0, closed after it: keep-alive holds no thread),
    /metrics at any path, as prometheus-client answers; HEAD is 405 (Prometheus sends GET)."""
    with serving() as port:
        twice = answer(connected(port), REQUEST.replace(b"x\r\n", b"x\r\nConnection: "
                                                        b"keep-alive\r\n") + REQUEST)
        assert twice.startswith(b"HTTP/1.0 200 OK") and twice.count(b"HTTP/1.") == 1
        assert b"fractui_scheduler_lease_held" in answer(connected(port), REQUEST.replace(
            b"/metrics", b"/other"))
        assert answer(connected(port), REQUEST.replace(b"GET", b"HEAD")).startswith(
            b"HTTP/1.0 405")


# -- [metrics] in the config --

def write(tmp_path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def test_metrics_are_off_unless_listen_is_given(tmp_path):
    assert Config(path=None).metrics.address is None
    assert load_config(write(tmp_path, "")).metrics.address is None
    m = load_config(write(tmp_path, '[metrics]\nlisten = "127.0.0.1:9402"\n')).metrics
    assert (m.address, m.tui) == (("127.0.0.1", 9402), False)
    m = load_config(write(tmp_path, '[metrics]\nlisten = "[::1]:9402"\ntui = true\n')).metrics
    assert (m.address, m.tui) == (("::1", 9402), True)


@pytest.mark.parametrize("text, says", [
    ('listen = "9402"', 'metrics.listen must be host:port (e.g. "127.0.0.1:9402", '
                        '"[::1]:9402"), got \'9402\''),
    ('listen = ":9402"', "metrics.listen must be host:port"),
    ('listen = "::1:9402"', "metrics.listen must be host:port"),
    ('listen = "localhost:0"', "metrics.listen has port 0; a port is from 1 to 65535"),
    ('listen = "localhost:70000"', "metrics.listen has port 70000; a port is from 1 to 65535"),
    ('listen = 9402', "metrics.listen must be a string, got an integer"),
    ('tui = "yes"', "metrics.tui must be a boolean, got a string"),
    ('listn = "127.0.0.1:9402"', "unknown key 'listn' in [metrics] (did you mean 'listen'?"),
])
def test_a_bad_metrics_value_is_named_with_its_line(tmp_path, text, says):
    path = write(tmp_path, '[store]\nurl = "sqlite:///tmp/s.db"\n\n[metrics]\n' + text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith("%s:5: %s" % (path, says)), str(info.value)


def test_the_scheduler_command_refuses_a_bad_listen_with_exit_2(tmp_path, capfd):
    path = write(tmp_path, '[metrics]\nlisten = "localhost"\n')
    code, out, err = in_process(capfd, ["--config", path, "scheduler"])
    assert code == 2
    assert "%s:2: metrics.listen must be host:port" % path in err
    assert not leaks(err)


def _ahead() -> float:
    """The head node's clock, an hour ahead of the store's."""
    return time.time() + 3600


def _one_waiting(local_fleet) -> "localfleet.LocalFleet":
    """A fleet whose one job waits (its host cordoned), submitted a moment ago."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="two", gpu=0.5)])
    f.store.cordon("gpu-a", None, "cordon", "test", "so that the job waits")
    f.submit("two")
    return f


def _served(f: "localfleet.LocalFleet", store, on_turn: Callable[[PassReport], None]
            ) -> List[PassReport]:
    """The reports of a scheduler on ``_ahead``'s clock, its own loop, until its first full
    pass; stopped then."""
    heard: List[PassReport] = []
    scheduler = Scheduler(f.config, store, f.fleet, name="test", clock=_ahead,
                          on_turn=lambda r: (heard.append(r), on_turn(r)))
    scheduler.start()
    try:
        wait(lambda: any(r.jobs for r in list(heard)), lambda: "no full pass reported")
    finally:
        scheduler.stop()
    return heard


def _oldest_waits(f: "localfleet.LocalFleet", store) -> Tuple[List[PassReport], dict]:
    """``_served``'s reports, heard by the exporter as `fractui scheduler` wires them (on the
    same clock), and the queues' oldest waits it serves then."""
    exporter = Exporter(("127.0.0.1", closed_port()), f.config,
                        lambda: [HostView.of(s) for s in f.fleet.statuses()], clock=_ahead)
    try:
        heard = _served(f, store, exporter.report)
        return heard, {s.labels["queue"]: s.value for fam in families(exporter.state())
                       for s in fam.samples if s.name == "fractui_queue_oldest_wait_seconds"}
    finally:
        exporter.close()


def test_a_queues_oldest_wait_counts_to_the_stores_clock_as_fractui_queues_does(local_fleet):
    """fractui_queue_oldest_wait_seconds reads a wait as `fractui queues` does, to the store's
    clock (the one that dated the submit; on PostgreSQL the server's): a head node whose
    clock runs an hour ahead of it read a job submitted a moment ago as waiting an hour."""
    f = _one_waiting(local_fleet)
    _, oldest = _oldest_waits(f, f.store)
    ran = f.fractui("queues", "--json")
    assert ran.returncode == 0, ran.stderr
    said = json.loads(ran.stdout)["queues"]
    assert [q["longest_wait_s"] < 60 for q in said if q["name"] == "two"] == [True], said
    assert 0 <= oldest["two"] < 60, (oldest, time.time() - f.store.jobs()[0].submitted_at)


class NowFailsOnce(SqliteStore):
    """A real SQLite store whose first read of its clock fails, as a server lost between the
    scheduler's read of the jobs and that of the clock."""

    failed = False

    def now(self) -> float:
        if not self.failed:
            self.failed = True
            raise StoreUnavailable(self.where, "the server is down (a test's outage)")
        return super().now()


def test_a_clock_read_that_failed_is_read_again_with_the_jobs(local_fleet):
    """The store's clock is read with its jobs, and a read of it that fails fails the pass
    as a read of the jobs does: the next pass reads both again. Kept apart, the jobs read
    before the failure stood (their counter had not moved: a holder before this one had
    said why they wait) and the clock was not read again for a lease period: the waits
    counted to the head node's clock, an hour ahead of the store's."""
    f = _one_waiting(local_fleet)
    _served(f, f.store, lambda r: None)  # (the job's wait said by a holder before)
    store = NowFailsOnce(str(f.tmp / "store.db"))
    try:
        heard, oldest = _oldest_waits(f, store)
    finally:
        store.close()
    assert store.failed and not heard[0].store_ok, heard[0]  # (the pass the outage failed)
    assert 0 <= oldest["two"] < 60, oldest
