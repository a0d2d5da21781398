"""What wakes the scheduler and what it writes while it waits: a submit from another process is
placed on the store's change feed, not on the poll; a host's snapshot that moves only its
utilisation, or the memory its jobs use, wakes nothing, and memory others use does; a standby
leaves the store alone until the lease can be its own."""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from typing import Iterator, Optional

import pytest

from fractui.config import QueueConfig
from fractui.fleet.fleet import Fleet
from fractui.sched.fleetview import HostView, signature
from fractui.scheduler import Scheduler, service
from fractui.store import SqliteStore
from fractui.store.base import Feed, StoreUnavailable
from fractui.store_url import sqlite_path
from tests import localfleet
from tests.cli_run import reaped
from tests.localfleet import running, wait

local_fleet = localfleet.local_fleet
QUARTER = QueueConfig(name="quarter", gpu=0.25)


def test_a_submit_from_another_process_is_placed_without_waiting_for_the_poll(local_fleet):
    # a poll every 60 s: a job placed within 20 s of its submit was placed on the feed
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER], interval_s=60.0, lease_s=180.0)
    head = f.scheduler_process("head")
    with reaped(head, signal.SIGTERM):
        first = f.fractui("submit", "--queue", "quarter", "--", "sleep", "600")
        assert first.returncode == 0, first.stderr
        wait(lambda: running(f) == 1, f.states, alive=head)
        # the last pass ran just now (it recorded the launch): the next poll is ~60 s away
        second = f.fractui("submit", "--queue", "quarter", "--", "sleep", "600")
        assert second.returncode == 0, second.stderr
        wait(lambda: running(f) == 2, f.states, timeout_s=20, alive=head)


def test_what_a_pass_reads_of_a_host_ignores_utilisation_and_memory_in_use():
    gpu = {"index": 0, "name": "NVIDIA L4", "memory_mib": 23034, "mig_mode": False,
           "utilization": 10, "memory_used_mib": 100}
    job = {"id": "j1", "key": "k1", "state": "running"}
    before = HostView("h", "online", {"cpus": 8, "memory_mib": 1000}, {"gpus": [gpu]},
                      {"j1": job})
    busier = HostView("h", "online", before.hello, {"gpus": [dict(gpu, utilization=95,
                                                                  memory_used_mib=9000)]},
                      {"j1": job})
    ended = HostView("h", "online", before.hello, before.snapshot,
                     {"j1": dict(job, state="exited")})
    offline = HostView("h", "offline", before.hello, before.snapshot, before.jobs)
    assert signature(busier) == signature(before)
    assert signature(ended) != signature(before)
    assert signature(offline) != signature(before)
    # the memory the job's processes use moves nothing; what others' use beside shares does,
    # and only where the agent says whose they are (one that does not has no "job" key)
    ours = {"pid": 7, "used_mib": 500, "instance": None, "job": "j1"}
    theirs = {"pid": 8, "used_mib": 3000, "instance": None, "job": None}

    def listing(*processes):
        return HostView("h", "online", before.hello,
                        {"gpus": [dict(gpu, processes=list(processes))]}, before.jobs)
    assert signature(listing(ours)) == signature(listing(dict(ours, used_mib=9000)))
    assert signature(listing(ours, theirs)) != signature(listing(ours))
    assert signature(listing(ours, theirs)) != signature(listing(ours, dict(theirs, used_mib=1)))
    # within a thousandth of the GPU (23 MiB of an L4), what placement reads is the same
    assert signature(listing(ours, theirs)) == signature(listing(ours, dict(theirs,
                                                                           used_mib=3001)))
    unsaid = {k: v for k, v in theirs.items() if k != "job"}
    assert signature(listing(ours, unsaid)) == signature(listing(ours))


def test_memory_used_outside_fractui_is_not_free_for_shares():
    from fractui.sched.fleetview import build_hosts
    gpu = {"index": 0, "name": "NVIDIA L4", "memory_mib": 23034, "mig_mode": False,
           "mig_capable": False}
    hello = {"cpus": 8, "memory_mib": 65536, "gpus": [gpu]}
    job = {"id": "j1", "key": "k1", "state": "running", "gpus": [0], "memory_mib": 10000}

    def free(*processes):
        view = HostView("h", "online", hello, {"gpus": [dict(gpu, processes=list(processes))]},
                        {"j1": job})
        return build_hosts([view], [], "u")[0].gpus[0].free_milli
    ours = {"pid": 7, "used_mib": 9000, "instance": None, "job": "j1"}
    theirs = {"pid": 8, "used_mib": 3000, "instance": None, "job": None}
    assert free(ours) == 13034 * 1000 // 23034  # the job's share is booked, not its use
    # others' 3000 MiB, in thousandths of the GPU rounded up, taken from the share's room
    assert free(ours, theirs) == free(ours) - math.ceil(3000 * 1000 / 23034) == 565 - 131
    assert free(ours, {k: v for k, v in theirs.items() if k != "job"}) == free(ours)
    assert free(ours, theirs, dict(theirs, pid=9, used_mib=20000)) == 0
    # the jobs' own MPS server is not another's use (the agent does not count it either)
    assert free(ours, dict(theirs, service="mps")) == free(ours)


class CountingStore(SqliteStore):
    """The real SQLite store, counting the lease writes it is asked for (each one a write
    transaction, refused or not)."""

    def __init__(self, path: str):
        super().__init__(path)
        self.tries = 0
        self._count = threading.Lock()

    def acquire_lease(self, holder: str, ttl_s: float) -> Optional[int]:
        with self._count:
            self.tries += 1
        return super().acquire_lease(holder, ttl_s)


@pytest.mark.parametrize("ahead", [0.0, 3600.0, -3600.0], ids=["same", "ahead", "behind"])
def test_a_standby_tries_the_lease_about_once_a_lease_and_still_takes_over(local_fleet,
                                                                           ahead):
    """``ahead``: the standby's own clock against the store's, which dated the lease's expiry:
    an hour ahead, it read every lease as lapsed and tried it each tenth of a lease."""
    lease_s = 2.0
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER], interval_s=0.2, lease_s=lease_s)
    head = f.scheduler_process("head")
    store = CountingStore(sqlite_path(f.config.store.url) or "")
    fleet = Fleet(f.config, reconnect_max_s=0.5).start()
    standby = Scheduler(f.config, store, fleet, name="standby",
                        clock=lambda: time.time() + ahead)
    try:
        wait(lambda: (f.store.lease_holder() or ("",))[0] == "head", f.states, alive=head)
        standby.start()
        for _ in range(3):  # jobs come meanwhile: the feed moves, the standby stays quiet
            f.submit("quarter")
        wait(lambda: running(f) == 3, f.states, alive=head)
        periods = 3
        start = store.tries
        threading.Event().wait(periods * lease_s)
        tries = store.tries - start
        # the holder renews every 0.2 s; a standby trying every pass would try 30 times
        assert tries <= 2 * periods + 1, tries
        assert not standby.leader and f.store.lease_holder()[0] == "head"
        head.send_signal(signal.SIGKILL)  # no release: the standby must see the lease expire
        head.wait(10)
        wait(lambda: (f.store.lease_holder() or ("",))[0] == "standby", f.states,
             timeout_s=3 * lease_s)
        f.submit("quarter")
        wait(lambda: running(f) == 4, f.states)
    finally:
        standby.stop()
        fleet.stop()
        store.close()
        if head.poll() is None:
            head.kill()
            head.wait(10)


@pytest.mark.parametrize("ahead", [0.0, 3600.0, -3600.0], ids=["same", "ahead", "behind"])
def test_a_standby_waits_out_the_lease_left_by_the_stores_clock(local_fleet, ahead):
    """What a standby refused the lease leaves it alone for: the holder's lease's time left
    by the store's clock, which dated its expiry, whatever the standby's own clock says. An
    hour behind, it waited a whole lease where half was left: its takeover came up to a
    lease after the lapse, which the test above, whose takeover may take three leases,
    cannot see; an hour ahead, a tenth of a lease."""
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER], lease_s=60.0)
    standby = Scheduler(f.config, f.store, f.fleet, name="standby",
                        clock=lambda: time.time() + ahead)
    assert f.store.acquire_lease("head", 30.0) is not None
    assert not standby._turn()  # refused: head holds it
    assert not standby.leader
    assert 25.0 <= standby._try_at - standby.ticks() <= 30.0


@contextlib.contextmanager
def leading(f, store: SqliteStore, kind: type) -> Iterator[Scheduler]:
    """A scheduler of ``kind`` on ``store`` in this process, holding the lease with the host
    online and nothing in flight; stopped, and its store closed, afterwards."""
    fleet = Fleet(f.config, reconnect_max_s=0.5).start()
    sched = kind(f.config, store, fleet, name="head")
    try:
        sched.start()
        wait(lambda: set(f.store.inventory()) == {"gpu-a"} and sched.leader, f.states)
        sched.settle()
        yield sched
    finally:
        sched.stop()
        fleet.stop()
        store.close()


class PassCounting(Scheduler):
    """The real scheduler, counting its passes that recorded a placement."""

    placing_passes = 0

    def _decide(self, *args) -> bool:
        recorded = super()._decide(*args)
        self.placing_passes += recorded
        return recorded


def test_wakes_that_come_within_the_debounce_are_one_pass(local_fleet, monkeypatch):
    """A submit wakes the loop; what else comes before the debounce ends joins that pass.
    The window is made 1 s here (50 ms in the service) so the test does not race it: jobs
    submitted 0.3 s apart — a wake each, with no debounce — are placed by one pass."""
    monkeypatch.setattr(service, "DEBOUNCE_S", 1.0)
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER], interval_s=60.0, lease_s=180.0)
    with leading(f, SqliteStore(sqlite_path(f.config.store.url) or ""), PassCounting) as sched:
        first = f.submit("quarter")
        threading.Event().wait(0.3)  # a pass woken by the first alone would have run by now
        rest = [f.submit("quarter") for _ in range(2)]
        wait(lambda: running(f) == 3, f.states)
        assert sched.placing_passes == 1
        decided = [e for e in f.store.audit_log(limit=100) if e.action == "decide"]
        assert sorted(e.job for e in decided) == sorted([first.id] + [j.id for j in rest])


class FeedLostOnce(SqliteStore):
    """The real store, whose first feed is lost when the test says (a server gone away), and
    whose next one opens just after another client submitted a job: a change that no feed
    will ever tell of."""

    def __init__(self, path: str, other: SqliteStore):
        super().__init__(path)
        self.other = other
        self.lose = threading.Event()
        self.opened = 0
        self.missed: Optional[int] = None

    def feed(self) -> Feed:
        self.opened += 1
        if self.opened == 2:
            self.missed = self.other.submit("quarter", None, "missed", ["sleep", "600"],
                                            QUARTER.request(), "test").id
        feed = super().feed()
        return _Losing(feed, self.lose, self.where) if self.opened == 1 else feed


class _Losing(Feed):
    def __init__(self, feed: Feed, lose: threading.Event, where: str):
        self.feed, self.lose, self.where = feed, lose, where

    def wait(self, timeout_s: float) -> frozenset:
        if self.lose.is_set():
            raise StoreUnavailable(self.where, "cannot reach the server (the test's)")
        return self.feed.wait(min(timeout_s, 0.1))

    def close(self) -> None:
        self.feed.close()


def test_a_feed_opened_anew_counts_as_everything_changed(local_fleet):
    """Changes made while the feed was down are told to no one: the scheduler that opens a
    new feed makes a full pass for what it may have missed, so a job submitted just before
    the new feed listened is placed (a poll with nothing due would only renew the lease)."""
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER], interval_s=0.5, lease_s=180.0)
    store = FeedLostOnce(sqlite_path(f.config.store.url) or "", f.store)
    with leading(f, store, Scheduler):
        store.lose.set()
        wait(lambda: store.missed is not None, f.states)
        wait(lambda: running(f) == 1, f.states)
        assert f.states() == {store.missed: "running"}


class FeedOpenedLate(SqliteStore):
    """The real store, whose first feed listens only once the scheduler's first pass with the
    host online has gone through and another client has submitted a job since: the feed's
    thread slow to start, as on a loaded machine."""

    def __init__(self, path: str, other: SqliteStore):
        super().__init__(path)
        self.other = other
        self.passed = threading.Event()
        self.missed: Optional[int] = None

    def feed(self) -> Feed:
        if self.missed is None:
            assert self.passed.wait(60), "no pass with the host online"
            self.missed = self.other.submit("quarter", None, "missed", ["sleep", "600"],
                                            QUARTER.request(), "test").id
        return super().feed()


class TellsItsPass(Scheduler):
    """The real scheduler, telling its store once a pass went through with every host online."""

    def step(self) -> bool:
        held = super().step()
        if held and {s.state for s in self.fleet.statuses()} == {"online"}:
            self.store.passed.set()  # type: ignore[attr-defined]
        return held


def test_a_submit_before_the_first_feed_listened_is_placed(local_fleet):
    """The feed's thread and the loop start together: a job submitted after the first pass
    read the jobs but before the first feed listened was told by no feed, and waited for the
    next unrelated change (here a poll each 60 s, which only renews the lease). The first
    feed's start counts as every topic changed, as a feed opened anew does."""
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER], interval_s=60.0, lease_s=180.0)
    store = FeedOpenedLate(sqlite_path(f.config.store.url) or "", f.store)
    with leading(f, store, TellsItsPass):
        wait(lambda: store.missed is not None, f.states)
        wait(lambda: running(f) == 1, f.states)
        assert f.states() == {store.missed: "running"}
