"""The scheduler service: one pass a second (or sooner when woken) while it holds the lease.

A pass, in order: reflect the agents' job records into the store; requeue the jobs of hosts
lost for longer than ``host_lost_s`` (recording their copies as stale) — a host that left the
config, or a GPU its host no longer has, counts as lost the same way; stop stale copies on
hosts that came back, before anything new is placed there; send the stops the store asks for
(cancel, requeue, preemption); decide where pending jobs go (fractui.sched.queueing) and record
the decisions, none on a host or GPU out of service (the store's cordons); then execute every
recorded decision — but one on what was cordoned since, which goes back to its queue.
Decisions are durable before they run, so a scheduler killed at any point leaves nothing a
restarted one cannot finish; what a holder remembers beyond them (when each lost host or GPU
was first seen gone, the stops it sent) is kept in the store too, and read by the scheduler
that takes the lease next.

Calls to hosts run on one lane per host (fractui.scheduler.lanes), each with a timeout of at
most a third of the lease: a stalled host delays no other, and no call starts unless the lease
is held for longer than the call may take (the lanes renew it as they go).

What wakes the loop (docs/scheduler.md, "Wakes"): the store's change feed, read on a thread of
its own, when jobs or hosts changed or the lease changed hands; a host whose state, facts or
job records changed (not a log chunk, not a snapshot that moves only utilisation); and the
``interval_s`` poll. Wakes within ``DEBOUNCE_S`` of the first are one pass. A pass with
nothing new since the last only renews the lease. A standby touches the store only when the
lease can have expired or the feed says it changed hands.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from fractui.config import Config
from fractui.fleet.client import SAID_ONE_BY_ONE
from fractui.fleet.fleet import Fleet
from fractui.metrics.state import PassReport
from fractui.sched.cordons import refusal
from fractui.sched.copies import (COPY_KINDS, LATE, LEFT, STALE, held_copies, late_copy,
                                  moved_past, unheld)
from fractui.sched.fleetview import USABLE, HostView, facts, signature
from fractui.sched.queueing import Kept, Reserve, schedule
from fractui.sched.quota import Recent, quota_of
from fractui.scheduler.execute import AGENT_ENDED, Executor
from fractui.scheduler.lanes import HELD, RECORDS, Lanes
from fractui.scheduler.relay import LogRelay
from fractui.scheduler.usage import UsageKeeper
from fractui.store.base import (EVERYTHING, FEED_WAIT_S, HOSTS, JOBS, LEASE, LOGS, JobNotFound,
                                LeaseLost, RowsLocked, StateConflict, Store, StoreDamaged,
                                StoreError, StoreRefused)
from fractui.store.intents import machine
from fractui.store.model import (ACTIVE, CANCELLED, MOVE, ON_HOST, OUT_OF_CONFIG, PENDING,
                                 PLACED, RUNNING, STOPPING, Cordon, Hold, Job, ModeHold,
                                 StaleCopy, TeamTerms, attempt_of)
from fractui.usage.fairshare import recent_gpus
from fractui.whoami import os_user
from remote_agent.failing import PAST_CAP

log = logging.getLogger("fractui.scheduler")

REFUSED_FOR_S = 60.0  # a host that refused a job is left out for it this long
FENCE_WAIT_S = 10.0  # how long a returning host's connect waits for its stale copies to end
DEBOUNCE_S = 0.05  # wakes this close to the first are one pass (a burst of submits: one pass)
RECENT_EVERY_S = 60.0  # the teams' recent usage is read at most this often (and on a new lease)
UNHELD = "unheld"  # the failures' name of a copy of no job the store has: (UNHELD, host, key)
TROUBLE_CHARS = 500  # of what fails the passes, as the store keeps it (the stack: the log)


def _stale_why(copy: StaleCopy) -> str:
    return "a stale copy: job %d was requeued while %s was lost" % (copy.job, copy.host)


def default_holder() -> str:
    return "%s@%s:%d" % (os_user(), machine(), os.getpid())


@dataclass(frozen=True)
class ActiveJobs:
    """The store's active jobs as read once (at the store's jobs ``version``, ``at`` by the
    scheduler's ticks), with what every pass looks up in them, so a pass over thousands of
    pending jobs does not walk them all again to find the few it acts on."""

    version: int
    at: float
    jobs: List[Job]
    by_id: Dict[int, Job] = field(default_factory=dict)
    held: List[Job] = field(default_factory=list)
    """On a host (placed, running, stopping): what a pass compares with its host's agent,
    and requeues when its host is lost."""
    refusing: List[Job] = field(default_factory=list)
    """Pending, refused by a host before: left out there for a while."""

    @classmethod
    def of(cls, version: int, at: float, jobs: List[Job]) -> "ActiveJobs":
        return cls(version, at, jobs, {j.id: j for j in jobs},
                   [j for j in jobs if j.state in ON_HOST],
                   [j for j in jobs if j.state == PENDING and j.refusals])


class Scheduler:
    """Places and runs the store's jobs on the fleet while it holds the store's lease; a
    second one waits as a standby and takes over when the lease expires."""

    def __init__(self, config: Config, store: Store, fleet: Fleet, name: Optional[str] = None,
                 clock: Callable[[], float] = time.time,
                 ticks: Callable[[], float] = time.monotonic,
                 on_fatal: Optional[Callable[[], None]] = None,
                 on_turn: Optional[Callable[[PassReport], None]] = None):
        """``on_turn`` hears of every turn of the loop, on its thread (the metrics exporter):
        whether the lease is held, whether the store answered, and after a full pass its jobs
        and how long it took. ``clock`` is its wall clock, which with the store's lead on it
        (``_store_now``) dates what it keeps in the store and counts what the store keeps
        (the store's clock: other processes, on other machines, read them); ``ticks``
        measures its own durations, such as
        how long it still holds the lease (the monotonic clock, which no one sets). A test
        that makes time pass by hand passes both."""
        self.config = config
        self.settings = config.scheduler
        self.store = store
        self.fleet = fleet
        self.holder = name or default_holder()
        self.clock = clock
        self.ticks = ticks
        self.on_fatal = on_fatal
        self.on_turn = on_turn
        self._store_ok = True  # the store answered the last turn
        self._passed: Optional[Tuple[float, List[Job]]] = None  # the last full pass: time, jobs
        self._stepped: List[Job] = []  # the active jobs as the last step left them
        self._store_lead: Optional[float] = None  # the store's clock less this one's, as the
        # jobs were last read (the passes' and the metrics' waits count to the store's clock)
        self._copies: Dict[str, Dict[str, int]] = {}
        """host -> kind -> the copies the store does not hold, as the last step found them."""
        self.fatal: Optional[StoreError] = None
        """Why the service stopped by itself (a store that is no store any more)."""
        self.leader = False
        self.epoch = 0
        """The epoch of the lease this scheduler last took, which its every write carries: the
        store refuses them once another has taken the lease (0: never held, always refused)."""
        self._renewed = 0.0  # by ticks, as the next
        self._held_until = 0.0
        self._lease_lock = threading.Lock()
        self.lanes = Lanes(self._may_act, self._lease_lost, self._news)
        self.failures = self.lanes.failures  # what fails at every pass, said once
        self.executor = Executor(store, self._call, self.holder, self.settings.preempt_grace_s,
                                 self.settings.max_attempts, self.lanes, self._store_now,
                                 self.settings.interval_s, ticks)
        self.relay = LogRelay(store, self._call, self.lanes)
        self.usage = UsageKeeper(config.usage, store, self._call, self.lanes, self._store_now,
                                 ticks)  # (GPU time dated as the usage records' ends are)
        self._away: Dict[str, float] = {}  # host -> when a pass first saw it unreachable
        self._gpu_gone: Dict[int, float] = {}  # job -> when a pass first saw its GPU missing
        self._kept_clocks: Tuple[Dict[str, float], Dict[int, float]] = ({}, {})
        """The two above as the store holds them (written when they differ)."""
        self._kept_holds: Dict[str, ModeHold] = {}  # the mode-change holds, as the store has them
        self._kept_bounds: Optional[Dict[str, int]] = None  # the store's waiting bounds
        self._kept_team_holds: Optional[Dict[str, Hold]] = None  # the store's, as written
        self._kept_trouble: Optional[str] = None  # what fails the passes, as the store has it
        self._recalled = 0  # the epoch whose holders' memory this one read from the store
        self._inventory: Dict[str, Dict[str, Any]] = {}  # host -> facts as kept (_recall)
        self._left = False  # the last pass left a write for later: a row was held
        self._refused: Set[str] = set()  # the hosts whose records this pass's store refused
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._watcher: Optional[threading.Thread] = None
        self._news_lock = threading.Lock()
        self._due = True  # something changed since the last full pass (or none ran yet)
        self._lease_moved = False  # the feed says the lease changed hands
        self._logs_asked = True  # the feed says a job's output tail was asked for
        self._try_at = 0.0  # a standby's next try for the lease (by ticks)
        self._window_ends: Optional[float] = None  # when a refusal stops keeping a job off
        self._holds_end: Optional[float] = None  # when a GPU's mode-change hold ends
        self._heard: Dict[str, tuple] = {}  # host -> what a pass reads of it, last heard
        self._kept = Kept()  # hosts built and placements scored, kept across passes
        self._recent: Tuple[Optional[float], Recent] = (None, Recent())
        """When the teams' recent usage was last read (by ``ticks``; None: not this lease),
        and what it was."""
        self._read: Optional[ActiveJobs] = None  # the active jobs as last read
        self._waited: Optional[Tuple[object, List[Job]]] = None
        """(the pass result, the jobs) whose waiting reasons were last all recorded."""
        self._facts: Dict[str, Tuple[Any, Any, Dict[str, Any]]] = {}
        """host -> (hello, snapshot, their facts): facts made again only from new records."""
        for session in fleet.sessions.values():
            session.connect_hooks.append(self._fence_returning)
            session.watchers.append(self._host_changed)

    # -- running --

    def start(self) -> "Scheduler":
        self._watcher = threading.Thread(target=self._watch, name="scheduler-feed", daemon=True)
        self._watcher.start()
        self._thread = threading.Thread(target=self.run, name="scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self, release: bool = True) -> None:
        """Ends the loop and waits for the calls in flight (each ends within its timeout);
        ``release`` hands the lease over at once (a clean shutdown)."""
        self._stop.set()
        self._wake.set()
        for session in self.fleet.sessions.values():  # a stopped one hears the fleet no more
            for hooks, hook in ((session.connect_hooks, self._fence_returning),
                                (session.watchers, self._host_changed)):
                if hook in hooks:  # (not twice: a second stop finds it gone)
                    hooks.remove(hook)
        for thread in (self._thread, self._watcher):
            if thread is not None:
                thread.join(timeout=30)
        self.lanes.wait(self.settings.call_timeout() + 1)
        try:  # what it served ends with it, store or no store, before the lease is handed
            if self.on_turn is not None:  # over: the next holder serves on the same port
                self.on_turn(PassReport(self.holder, held=False, store_ok=self._store_ok,
                                        at=self.clock()))
        finally:
            if release:
                self.leader = False
                self._release()

    def _release(self) -> None:
        """Hands the lease over; a store that cannot take it (its server down) is said, and
        the stop goes on: the lease lapses by itself, and a standby takes it then."""
        try:
            self.store.release_lease(self.holder)
        except StoreError as err:
            log.warning("%s; the lease was not handed over: it lapses within %g s of its last "
                        "renewal, and a standby takes it then", err, self.settings.lease_s)

    def settle(self, timeout_s: float = 60.0) -> bool:
        """Waits for the calls the passes so far started; whether they all ended."""
        return self.lanes.wait(timeout_s)

    def _news(self) -> None:
        """Something a pass reads changed: the next turn of the loop is a full pass."""
        with self._news_lock:
            self._due = True
        self._wake.set()

    def _host_changed(self, status: Any) -> None:
        """A host's news (on its session's thread): a wake only if what a pass reads of it
        changed, so log chunks and snapshots that move only utilisation wake nothing."""
        heard = signature(HostView.of(status))
        if self._heard.get(status.name) != heard:
            self._heard[status.name] = heard
            self._news()

    def _watch(self) -> None:
        """The store's change feed, on a thread of its own: jobs or hosts changed (by anyone:
        a submit, a cancel, this scheduler's own decisions), or the lease changed hands."""
        feed = None
        # what changed while no feed listened was told to no one: before the first one too,
        # which may listen after the loop's first pass read the jobs
        missed = True
        while not self._stop.is_set():
            try:
                if feed is None:
                    feed = self.store.feed()  # why it was lost: said once, not at every poll
                    self.failures.worked("feed", "the store's change feed is back")
                # a feed opened anew heard nothing sent before it listened: all of it is news
                topics = EVERYTHING if missed else feed.wait(FEED_WAIT_S)
                missed = False
            except Exception as err:  # the poll goes on meanwhile; a bug of ours (no store
                # error) is said with its stack, and the feed opened again all the same
                words = str(err) if isinstance(err, StoreError) else "%s: %s" % (
                    type(err).__name__, err)
                self.failures.failed("feed", "%s; the scheduler polls every %.1f s until the "
                                     "store's change feed is back" % (
                                         words, self.settings.interval_s), logging.WARNING,
                                     not isinstance(err, StoreError), words)
                if feed is not None:
                    feed.close()
                feed, missed = None, True
                self._news()  # meanwhile each poll is a full pass: no change is heard of
                self._stop.wait(self.settings.interval_s)
                continue
            if topics & {LEASE, LOGS}:
                with self._news_lock:
                    self._lease_moved = self._lease_moved or LEASE in topics
                    self._logs_asked = self._logs_asked or LOGS in topics
                self._wake.set()
            if topics & {JOBS, HOSTS}:
                self._news()
        if feed is not None:
            feed.close()

    def run(self) -> None:
        while not self._stop.is_set():
            failed = True
            try:
                passed = self._turn()
                self.failures.worked("store", "the store answers the scheduler again")
                self._store_ok, failed = True, False
                if passed:  # a renewal alone says nothing of the passes
                    self._keep_trouble(None)
                    self.failures.worked("passes", "the scheduling passes go through again")
            except LeaseLost as err:  # another took the lease: this one stands by
                log.info("%s; this scheduler stands by", err)
                self._lease_lost()
                failed = False
            except StoreDamaged as err:  # no store to schedule from: the service ends
                log.error("%s; the scheduler stops", err)
                self.fatal, self._store_ok = err, False
                if self.on_fatal is not None:
                    self.on_fatal()
                return
            except StoreError as err:  # full, read-only, locked: said once, tried again
                self._store_ok = False
                self.failures.failed("store", "%s; the scheduler tries again every pass" % err,
                                     logging.ERROR)
            except Exception as err:  # one bad pass must not end the service: log it (its
                # stack, once while the passes fail so), say it where admins look, try again
                trouble = " ".join(("%s: %s" % (type(err).__name__, err)).split())[
                    :TROUBLE_CHARS]
                self.failures.failed("passes", "scheduling pass failed (said once while it "
                                     "fails so)", trace=True, same=trouble)
                self._keep_trouble(trouble)
            self._tell()
            wait = self.settings.interval_s if self.leader or failed else max(
                0.0, self._try_at - self.ticks())  # a failed turn is not tried at once
            if self._wake.wait(wait):
                self._stop.wait(DEBOUNCE_S)  # what else comes at once joins this pass
            self._wake.clear()

    def _turn(self) -> bool:
        """One turn of the loop. A standby leaves the store alone until the lease can have
        passed to it; the holder runs a full pass when something changed since the last (or
        a clock of its own runs), else only renews the lease. Returns whether a full pass went
        through; one that failed is due again at the next turn."""
        with self._news_lock:
            moved, self._lease_moved = self._lease_moved, False
            due, self._due = self._due, False
            asked, self._logs_asked = self._logs_asked, False
        if not self.leader and not moved and self.ticks() < self._try_at:
            return False  # a standby: the lease cannot have passed to it yet
        full = due or not self.leader or self._clocks_run()
        began = self.ticks()
        try:
            held = self.step() if full else self._renew(force=True)
            if full and held:
                self._passed = (self.ticks() - began, self._stepped)
            if held and (asked or full):  # a request whose lane was busy: served again here
                asked = not self.relay.serve(lambda: {v.name: v for v in self._views()})
            if held:
                try:  # the usage's failure (said by run) never holds the pass's calls back
                    self.usage.turn(self._views, self._active_jobs, self.epoch)
                finally:
                    self.lanes.start()
        except BaseException:  # what this turn left undone is the next one's
            with self._news_lock:
                self._due, self._logs_asked = self._due or full, self._logs_asked or asked
            raise
        left = full and self._left  # rows held: tried again by the next turn (nothing
        if held and (left or asked):  # announces that the session holding them ended)
            with self._news_lock:
                self._due, self._logs_asked = self._due or left, self._logs_asked or asked
        if not held:
            self._try_at = self.ticks() + self._standby_s()
        return full and held

    def _tell(self) -> None:
        """Tells ``on_turn`` how this turn went; a failing listener is logged, never fatal."""
        if self.on_turn is None:
            return
        passed, self._passed = self._passed, None
        with self._lease_lock:
            held = self.leader and self.ticks() < self._held_until
        try:
            self.on_turn(PassReport(self.holder, held=held, store_ok=self._store_ok,
                                    jobs=passed[1] if passed else None,
                                    seconds=passed[0] if passed else None, at=self.clock(),
                                    copies=self._copies if passed else None,
                                    store_lead=self._store_lead if passed else None))
        except Exception as err:  # its stack once while it fails so, not at every turn
            self.failures.failed("listener", "the scheduler's listener failed (%s: %s)" % (
                type(err).__name__, err), logging.ERROR, True)
        else:
            self.failures.worked("listener", "the scheduler's listener goes through again")

    def _clocks_run(self) -> bool:
        """Whether a pass is due with nothing new: a host or GPU is being timed as lost, a
        refusal's window (REFUSED_FOR_S) or a GPU's hold on mode changes has ended, or a stop
        an agent did not take is due to be sent again."""
        now = self._store_now()
        return bool(self._away or self._gpu_gone) or any(
            ends is not None and now >= ends for ends in (self._window_ends, self._holds_end)
        ) or self.executor.resend_due()

    def _standby_s(self) -> float:
        """How long a standby leaves the lease alone: until the holder's lease can have
        expired, by the holder's expiry and the store's clock, which dated it (read beside
        it: a standby reads no jobs, so it keeps no lead) — at least a tenth of a lease, so
        a lapse a moment away costs a few tries, never a loop — or until the feed says the
        lease changed hands."""
        held = self.store.lease_holder()
        left = held[1] - self.store.now() if held is not None else 0.0
        return min(self.settings.lease_s, max(self.settings.lease_s / 10, left))

    # -- one pass --

    def step(self) -> bool:
        """One pass; returns whether this scheduler holds the lease (and so acted). The calls
        it starts run on the hosts' lanes and may end after it (``settle`` waits for them)."""
        self._left, self._refused = False, set()
        if not self._renew(force=True):
            return False
        if self._recalled != self.epoch:  # the lease is newly this one's
            self._recall()
        self.executor.begin_pass()
        # a lane's call decides their state: leave them be. Read before the views: a launch
        # that ends between the two is in the view (the session keeps its answer before the
        # lane ends), else the job is busy — never a view from before it with the job read
        # running after it (ended as lost: "the agent ... has no record of it")
        busy = self.lanes.in_flight()
        views = self._views()
        unlisted = self._record_inventory(views)
        by_name = {v.name: v for v in views}
        jobs = self._active_jobs()
        wrote = False
        for job in (j for j in self._derived(jobs).held if j.id not in busy):
            view = by_name.get(job.slot.host) if job.slot else None
            try:
                if job.state in ON_HOST and view is not None and view.state in USABLE:
                    wrote = self.executor.reflect(job, view) or wrote
                elif job.state == STOPPING and job.slot is None:
                    self.executor.finish_stop(job, None)
                    wrote = True
            except RowsLocked as err:
                self._left_for_later(job.id, err)
            except StoreRefused as err:  # what its host says of it: the host's, not the pass's
                if view is None:
                    raise
                self._host_refused(view.name, "job %d" % job.id, err)
            except StateConflict as err:  # moved on since it was read (its user's cancel):
                # read again as it is (an edit by hand moves no counter), not a failed pass
                log.info("%s; read again", err)
                self._read, wrote = None, True
        jobs = self._active_jobs() if wrote else jobs
        requeued = self._requeue_lost(views, [j for j in self._derived(jobs).held
                                              if j.id not in busy], busy, unlisted)
        self._forget_unlisted(unlisted)
        self._keep_clocks()
        self._keep_holds()
        self._keep_bounds()
        self._keep_terms()
        if requeued:
            jobs = self._active_jobs()
        stale = self.store.stale()
        found = self._stop_stale(by_name, stale)
        recovering = {host for host, _ in found}
        held = held_copies(jobs, stale, self.store.uid)
        found += self._stop_unheld(by_name, jobs, busy, held)
        self._copies = {v.name: {kind: found[(v.name, kind)] for kind in COPY_KINDS}
                        for v in views if v.state in USABLE}
        self._forget_ended_stops(by_name, busy, held)
        cordons = self.store.cordons()
        if self._decide([replace(v, state="recovering") if v.name in recovering else v
                         for v in views], jobs, cordons):
            jobs = self._active_jobs()
        refused: set[int] = set()
        for job in jobs:
            if job.state != PLACED or job.slot is None or job.id in busy:
                continue
            view = by_name.get(job.slot.host)
            if view is None or view.state not in USABLE:
                continue  # waits; requeued if its host stays lost
            # the drain in its state once the job has left it, as the map says it then: the
            # decisions not launched are not what keeps it draining
            out = refusal(cordons, (j for j in jobs if j.id != job.id and j.id not in refused),
                          job.slot.host, job.slot.gpus)
            if out is not None:  # cordoned since it was decided
                refused.add(job.id)
                self._unplace(job, out)
                continue
            self.lanes.add(view.name, partial(self.executor.launch, job, view, jobs), job.id)
        self.lanes.mended()
        self.lanes.refused_no_more(RECORDS, self._refused)
        self.lanes.start()
        self._stepped = jobs
        return True

    def _active_jobs(self) -> List[Job]:
        """The store's active jobs: those read before while the store's jobs counter has not
        moved since — reading thousands of pending jobs is most of a pass that finds nothing
        new — and read again after a lease period in any case (an edit by hand moves no
        counter). The counter is read first: a change after it moves it again."""
        version = self.store.version(JOBS)
        now = self.ticks()
        last = self._read
        if last is not None and last.version == version and now - last.at < self.settings.lease_s:
            return last.jobs
        jobs = self.store.jobs(ACTIVE)
        lead = self.store.now() - self.clock()  # (one cheap read, as jobs are)
        # both kept, or neither: jobs kept without it stand until their counter moves, and
        # the waits (the metrics', the reserve bound's) count to this clock until then
        self._read, self._store_lead = ActiveJobs.of(version, now, jobs), lead
        return self._read.jobs

    def _store_now(self) -> float:
        """The store's clock, by this one and the store's lead on it read with the active
        jobs (which every pass reads before it compares a time of theirs) and on taking the
        lease (``_recall``): what the store dated (a submit, a requeue, a usage record's end)
        is counted to it, as ``jobs``, ``teams`` and the metrics count it, and what this
        scheduler keeps in the store for others to read is dated by it — the lost-host
        clocks, a refusal's time, the mode-change holds — as those others (the next lease
        holder, ``place``, the TUI) count them to the store's clock, whatever their own."""
        return self.clock() + (self._store_lead or 0.0)

    def _derived(self, jobs: List[Job]) -> "ActiveJobs":
        """What a pass looks up in ``jobs``: made once per read of them."""
        read = self._read
        return read if read is not None and read.jobs is jobs else ActiveJobs.of(0, 0.0, jobs)

    def _unplace(self, job: Job, why: str) -> None:
        """A decision not yet launched on what was cordoned since: back to its queue, to be
        placed elsewhere (it never ran, so nothing of it is left there)."""
        try:
            self.store.requeue(job.id, (PLACED,), self.holder, "not launched: %s" % why,
                               epoch=self.epoch)
        except StateConflict:
            pass  # cancelled meanwhile
        except RowsLocked as err:
            self._left_for_later(job.id, err)

    def _recall(self) -> None:
        """Takes up what the lease holders before this one kept in the store: the lost-host
        clocks go on from where they were, no stop is sent twice, and the hosts' facts are
        compared with the store's rows, not with what an earlier lease of this one left. Read
        before anything is taken up: a read that fails (a store error, said once by ``run``
        while it fails so) fails the pass, and the next pass reads it all again. The times
        kept are the store's (``_store_now``): its lead on this clock is read with them, as the
        pass compares them before it reads the jobs (which read it again)."""
        memory = self.store.holder_memory()
        inventory = self.store.inventory()  # as kept (a verb's rows: _record_inventory)
        lead = self.store.now() - self.clock()
        self._away, self._gpu_gone = dict(memory.hosts_away), dict(memory.gpus_gone)
        self._kept_clocks = (dict(self._away), dict(self._gpu_gone))
        self.executor.recall(memory.stops_sent)
        self.executor.backoff.recall(memory.mode_holds)
        self._kept_holds = dict(memory.mode_holds)
        self._kept_bounds = None  # (another holder's config may have written others)
        self._kept_team_holds = None  # (and another holder's passes other holds)
        self.usage.taken_over()
        self._recent = (None, self._recent[1])
        self._kept_trouble = None  # the store clears it as the lease changes hands
        self._inventory = inventory
        self._store_lead = lead
        self._recalled = self.epoch

    def _keep_clocks(self) -> None:
        """Writes the lost-host clocks to the store when a pass changed them (a host or GPU
        first seen gone, one back, a job requeued): a pass with nothing new writes nothing."""
        clocks = (self._away, self._gpu_gone)
        if clocks != self._kept_clocks:
            try:
                self.store.keep_lost_clocks(self._away, self._gpu_gone, epoch=self.epoch)
            except RowsLocked as err:  # kept in memory; written by a later pass
                self.failures.failed("clocks", "the lost-host clocks are written by a later "
                                     "pass: %s" % err, same=HELD)
                self._left = True
                return
            self.failures.worked("clocks", "the lost-host clocks are written")
            self._kept_clocks = (dict(self._away), dict(self._gpu_gone))

    def _keep_trouble(self, trouble: Optional[str]) -> None:
        """What fails this lease holder's passes (None: they go through again), kept in the
        store when it changed, so the TUI's header and ``jobs`` say it: a failing pass places
        nothing, and every job would read as waiting for room."""
        if trouble == self._kept_trouble or not self.leader:
            return
        try:
            self.store.keep_trouble(trouble, epoch=self.epoch)
            self._kept_trouble = trouble
        except StoreError as err:  # the lease lost, or the store failing: the turns say it
            self.failures.failed("trouble", "cannot keep in the store what fails the passes: "
                                 "%s" % err)
            return
        self.failures.worked("trouble", "what fails the passes is kept in the store")

    def _keep_holds(self) -> None:
        """Writes the GPUs held back from mode changes to the store when they changed since
        (a change failed, or one succeeded): for the next lease holder and every preview. The
        pass goes on where it fails: the holds are kept in memory too."""
        holds = self.executor.backoff.holds()
        if holds != self._kept_holds and self._keep(
                "holds", "the GPUs held back from mode changes",
                lambda: self.store.keep_mode_holds(holds, epoch=self.epoch)):
            self._kept_holds = holds

    def _keep_bounds(self) -> None:
        """Writes each team's bound on its waiting jobs (TeamConfig.max_waiting) to the store,
        which holds members' submits to it (on PostgreSQL, in the database, where only an admin
        may write it): once a lease, and again only if the store's differ. The pass goes on
        where it fails: the store holds the bounds it had."""
        bounds = {t.name: t.max_waiting for t in self.config.teams}

        def write() -> None:
            if self.store.waiting_bounds() != bounds:
                self.store.keep_waiting_bounds(bounds, epoch=self.epoch)
        if bounds != self._kept_bounds and self._keep(
                "bounds", "the teams' bounds on waiting jobs", write):
            self._kept_bounds = bounds

    def _keep_terms(self) -> None:
        """Writes each team's quota, borrowing and weight (the config's ``[[teams]]``) to the
        store, where ``fractui teams`` reads the quotas the passes hold the teams to, where
        the store's differ, hold a row it cannot read, or were never written by a holder (a
        config of no [[teams]] writes none, which readers then tell from no holder's):
        read at each pass, not only at a lease or a config's change, so a row damaged since
        is written again at the next (until then its team's quota is said not known). The
        pass goes on where it fails."""
        terms = {t.name: TeamTerms(t.quota_gpus, t.over_quota, t.weight)
                 for t in self.config.teams}

        def write() -> None:
            kept = self.store.team_terms()
            if kept != terms or kept.unread or not kept.listed:  # (none: written as none;
                # a mark naming no teams, of before it did, or another take of the lease's:
                # written naming them, under this one's epoch)
                self.store.keep_team_terms(terms, epoch=self.epoch)
            if kept.unread:  # (their teams' quotas were said not known until now)
                log.warning("%s: written again", "; ".join(kept.unread.values()))
        self._keep("terms", "the teams' quotas", write)

    def _keep_team_holds(self, held: Dict[str, Hold]) -> None:
        """Writes what each team holds for one of its waiting jobs (the pass's ``held``) to
        the store when it changed: what ``fractui teams`` and the TUI say of a team's quota
        or host held. Before the pass's other writes, so a reader woken by a reason the hold
        changed reads the hold with it. The pass goes on where it fails: it holds in memory
        all the same, and the next pass writes it."""
        if held != self._kept_team_holds and self._keep(
                "team holds", "the teams' holds for their waiting jobs",
                lambda: self.store.keep_team_holds(held, epoch=self.epoch)):
            self._kept_team_holds = dict(held)

    def _keep(self, key: str, what: str, write: Callable[[], None]) -> bool:
        """Writes ``what`` to the store by ``write``, whether it was: a failure is said once
        while it lasts (``key``), and once when it is kept again; a lease lost is raised."""
        try:
            write()
        except LeaseLost:
            raise
        except StoreError as err:
            self.failures.failed(key, "cannot keep in the store %s: %s" % (what, err))
            return False
        self.failures.worked(key, "%s are kept in the store" % what)
        return True

    def _renew(self, force: bool = False) -> bool:
        """Takes or renews the lease: every pass, and on the lanes before each call once a
        third of it has gone, so nothing is launched by a scheduler whose lease may have
        passed on."""
        with self._lease_lock:
            now = self.ticks()
            if force or now - self._renewed > self.settings.lease_s / 3:
                epoch = self.store.acquire_lease(self.holder, self.settings.lease_s)
                self.leader = epoch is not None
                if epoch is not None:  # else the last one stays: its writes are refused
                    self.epoch = self.executor.epoch = self.relay.epoch = epoch
                self._renewed = now
                self._held_until = now + self.settings.lease_s if self.leader else 0.0
            return self.leader

    def _may_act(self) -> bool:
        """Whether a call to a host may start now: the service is not stopping, and the lease
        is this scheduler's (renewed if due, else read back: it may have been handed over)
        for longer than the call may take. A store that cannot say (full, locked, damaged)
        answers no: a lease it cannot renew or read is not proven held."""
        if self._stop.is_set():
            return False
        try:
            if not self._renew():
                return False
            held = self.store.lease_holder()
        except StoreError as err:
            self.failures.failed("lease", "%s; no call is made until the lease is proven "
                                 "held again" % err, logging.ERROR)
            return False
        self.failures.worked("lease", "the store answers again whether the lease is held")
        if held is None or held[0] != self.holder:
            self._lease_lost()
            return False
        return self._held_until - self.ticks() > self.settings.call_timeout()

    def _lease_lost(self) -> None:
        """This scheduler leads no more: the lease is another's, or the store refused a write
        of this one's epoch."""
        with self._lease_lock:
            self.leader, self._held_until = False, 0.0

    def _views(self) -> List[HostView]:
        """The hosts as the fleet last saw them, each GPU whose mode change failed lately held
        back from another (the executor's ModeBackoff; a pass is due when a hold ends)."""
        now = self._store_now()
        held = self.executor.backoff.held(now)
        self._holds_end = self.executor.backoff.next_end(now)
        return [HostView.of(s, self.config.mode_fixed(s.name), held)
                for s in self.fleet.statuses()]

    def _record_inventory(self, views: List[HostView]) -> Set[str]:
        """Keeps each reachable host's lasting facts in the store (written only when they
        change), so ``submit`` can check a request without reaching the fleet; those of a
        host out of the config are marked so (OUT_OF_CONFIG), and the mark taken off as it is
        put back. Returns the hosts whose facts the store keeps that are out of the config
        (``_forget_unlisted``)."""
        heard, known, self._facts = {}, self._facts, {}
        for view in (v for v in views if v.state in USABLE and v.hello):
            last = known.get(view.name)
            if last is None or last[0] is not view.hello or last[1] is not view.snapshot:
                last = (view.hello, view.snapshot, facts(view))
            self._facts[view.name] = last
            heard[view.name] = last[2]
        unlisted = set(self.store.inventory_since()) - {v.name for v in views}
        if unlisted - set(self._inventory):  # kept since by a verb that heard the hosts of
            # its own config (checked_store.heard_inventory): read as kept, to be marked
            self._inventory.update({h: f for h, f in self.store.inventory().items()
                                    if h in unlisted and h not in self._inventory})
        for host, kept in self._inventory.items():  # marked (or no more) as out of the config
            if host not in heard and bool(kept.get(OUT_OF_CONFIG)) != (host in unlisted):
                heard[host] = {k: v for k, v in kept.items() if k != OUT_OF_CONFIG}
                if host in unlisted:
                    heard[host][OUT_OF_CONFIG] = True
        for host, known in heard.items():  # one by one: a host's row held stalls only it
            try:
                self.store.keep_inventory({host: known}, self._inventory, epoch=self.epoch)
            except RowsLocked as err:
                self.failures.failed(("facts", host), "%s's facts are kept by a later pass: "
                                     "%s" % (host, err), same=HELD)
                self._left = True
                continue
            self.failures.worked(("facts", host), "%s's facts are kept" % host)
        return unlisted

    def _forget_unlisted(self, unlisted: Set[str]) -> None:
        """Forgets the facts kept of each host out of the config for longer than host_lost_s,
        as its jobs are requeued then (``_requeue_lost`` times it): a submit judged with no
        host list (a member's config) counted it for ever. Kept until then, so a config
        edited by mistake and put back loses nothing; a row held waits for a later pass."""
        now = self._store_now()
        for host in sorted(unlisted):
            since = self._away.get(host)
            if since is None or now - since <= self.settings.host_lost_s:
                continue
            try:
                self.store.forget_inventory(host, epoch=self.epoch)
            except RowsLocked as err:
                self.failures.failed(("forget facts", host), "the facts kept of %s are "
                                     "forgotten by a later pass: %s" % (host, err), same=HELD)
                self._left = True
                continue
            self.failures.worked(("forget facts", host), "the facts kept of %s are forgotten"
                                 % host)
            self._inventory.pop(host, None)
            log.info("forgot the facts kept of %s: out of the config for %.0f s", host,
                     now - since)

    def _call(self, host: str, method: str, params: Dict[str, Any]) -> Any:
        return self.fleet.session(host).call(method, params, self.settings.call_timeout())

    def _requeue_lost(self, views: List[HostView], on_host: List[Job], busy: Set[int],
                      unlisted: Set[str]) -> bool:
        """Jobs of a host unreachable for longer than host_lost_s go back to their queues; what
        may still run there is recorded as stale, to be stopped when the host returns. A host
        no longer in the config counts as unreachable while it holds a job, a stop sent
        (``_forget_ended_stops`` forgets those) or facts kept (``unlisted``: those
        ``_forget_unlisted`` forgets), and a job on a GPU its (reachable) host
        no longer reports as lost with its GPU (a job that left its host meanwhile, and is not
        on a lane's call, is timed no more). Away time runs from the first pass of any lease
        holder that saw the host or GPU gone (kept in the store, so a standby that takes over
        goes on counting). Returns whether it requeued any."""
        now = self._store_now()
        by_name = {v.name: v for v in views}
        removed = {j.slot.host for j in on_host if j.slot and j.slot.host not in by_name} | {
            host for host, _ in self.executor.stops_sent() if host not in by_name} | unlisted
        for name in set(self._away) | set(by_name) | removed:
            view = by_name.get(name)
            if view is not None and view.state in USABLE:
                self._away.pop(name, None)
            elif view is not None or name in removed:
                self._away.setdefault(name, now)
            else:
                del self._away[name]  # neither configured nor holding a job: nothing to do
        lost = {h: "host %s %s for %.0f s" % (
            h, "lost" if h in by_name else "no longer in the config", now - since)
                for h, since in self._away.items() if now - since > self.settings.host_lost_s}
        gone = {}
        requeued = False
        for left in set(self._gpu_gone) - {j.id for j in on_host} - busy:
            del self._gpu_gone[left]
        for job in on_host:
            view = by_name.get(job.slot.host) if job.slot else None
            missing = [g for g in job.slot.gpus if not _has_gpu(view, g)] if (
                view is not None and view.state in USABLE) else []  # type: ignore[union-attr]
            if not missing:
                self._gpu_gone.pop(job.id, None)
                continue
            since = self._gpu_gone.setdefault(job.id, now)
            if now - since > self.settings.host_lost_s:
                gone[job.id] = "GPU %s of %s gone for %.0f s" % (
                    ",".join(map(str, missing)), view.name, now - since)  # type: ignore
        for job in on_host:
            host = job.slot.host if job.slot else None
            why = lost.get(host) or gone.get(job.id)  # type: ignore[arg-type]
            if why is None:
                continue
            try:
                if job.state == STOPPING and job.stop_intent == "cancel":
                    # it ends cancelled; a copy still running there is stopped on return
                    self.store.ended(job.id, (STOPPING,), CANCELLED, why, self.holder, why,
                                     "end", stale_on=host, epoch=self.epoch)
                elif job.state == STOPPING and job.stop_intent == MOVE:
                    # the move goes on: placed where it was held (the copy, as above)
                    self.store.moved(job.id, self.holder, why, stale_on=host,
                                     epoch=self.epoch)
                else:
                    self.store.requeue(job.id, ON_HOST, self.holder, why, stale_on=host,
                                       epoch=self.epoch)
            except StateConflict:
                continue
            except RowsLocked as err:  # timed on: requeued by a later pass
                self._left_for_later(job.id, err)
                continue
            requeued = True
            self._gpu_gone.pop(job.id, None)
        return requeued

    def _fence_returning(self, host: str, call: Callable[..., Any],
                         jobs: Dict[str, Dict[str, Any]]) -> None:
        """A host that comes back kills its stale copies before it counts as back at all: the
        fleet runs this on reconnect, before the host is online, so no moment exists after its
        return when the old copy and the requeued one both run. A store that fails meanwhile
        is the scheduler's to say, not the host's: what was not done here, the passes do."""
        if not self.leader:
            return  # the lease holder's own connection does it
        try:
            self._stop_stale_on(host, call, jobs)
        except StoreError as err:  # said once while it fails so, not at every reconnect
            self.failures.failed(("fence", host), "%s; %s's stale copies are left to the "
                                 "next passes" % (err, host), logging.ERROR)
        else:
            self.failures.worked(("fence", host), "%s's stale copies are stopped on its "
                                 "return again" % host)

    def _stop_stale_on(self, host: str, call: Callable[..., Any],
                       jobs: Dict[str, Dict[str, Any]]) -> None:
        by_key = {j.get("key"): j for j in jobs.values()}
        for copy in self.store.stale(host):
            rec = by_key.get(copy.key)
            if rec is not None and rec.get("state") not in AGENT_ENDED:
                call("job.stop", {"job": rec["id"], "key": copy.key, "grace": 0,
                                  "reason": _stale_why(copy)})
                deadline = time.monotonic() + FENCE_WAIT_S
                while rec.get("state") not in AGENT_ENDED and time.monotonic() < deadline:
                    time.sleep(0.05)
                    rec = call("job.get", {"job": rec["id"], "key": copy.key})
                if rec.get("state") not in AGENT_ENDED:
                    continue  # left to the passes, which keep the host from new work
            self._drop_stale(copy)

    def _stop_stale(self, by_name: Dict[str, HostView], stale: List[StaleCopy]
                    ) -> Counter[Tuple[str, str]]:
        """Kills the copies left on hosts that came back (no grace: their work was redone
        elsewhere). Returns those still running, by (host, STALE): their hosts take no new
        work until they end."""
        recovering: Counter[Tuple[str, str]] = Counter()
        for copy in stale:
            view = by_name.get(copy.host)
            if view is None or view.state not in USABLE:
                continue
            rec = view.by_key().get(copy.key)
            if rec is None or rec.get("state") in AGENT_ENDED:
                self._drop_stale(copy)
            else:
                recovering[(copy.host, STALE)] += 1
                self.executor.stop(copy.host, rec["id"], copy.key, _stale_why(copy),
                                   grace_s=0)
        return recovering

    def _stop_unheld(self, by_name: Dict[str, HostView], jobs: List[Job], busy: Set[int],
                     held: Set[Tuple[str, str]]) -> Counter[Tuple[str, str]]:
        """Kills (no grace) a copy of a store job that the store has moved past: an earlier
        attempt than the job's, or an attempt of a job that ended. A launch that reached the
        agent late does that — sent into an SSH session that hung, then reached the agent when
        it moved again, after the job was requeued and launched anew, or cancelled as never
        started. Left running it would be the job's second copy, or a cancelled job's, known
        to no one. A job a lane acts on is left to the lane, a stale copy to ``_stop_stale``;
        a copy the store has not moved past (a job it does not have: a store restored from a
        backup) is said, never killed on a guess. Returns what it found, by (host, LATE or
        LEFT)."""
        active = {j.id: j for j in jobs}
        found: Counter[Tuple[str, str]] = Counter()
        left: Set[Tuple[str, str, str]] = set()  # (UNHELD, host, key) of the copies left
        for view in by_name.values():
            if view.state not in USABLE:
                continue
            for copy in unheld(view.name, view.by_key().values(), held, self.store.uid):
                if copy.job in busy:
                    continue
                past = self._moved_past(copy.job, copy.attempt, active)
                found[(view.name, LEFT if past is None else LATE)] += 1
                if past is None:  # said once while it runs (a host lists as many as it
                    # likes: past SAID_ONE_BY_ONE of a host's, that there are more)
                    left.add((UNHELD, view.name, copy.key))
                    self.failures.failed((UNHELD, view.name, copy.key), "%s runs %s, which "
                                         "the store does not hold and has no later word of: "
                                         "left running" % (view.name, copy.key),
                                         cap=SAID_ONE_BY_ONE)
                    continue
                why = "a late copy of job %d's attempt %d on %s: %s" % (
                    copy.job, copy.attempt, view.name, past)
                if not self.executor.asked_stop(view.name, copy.key):
                    log.warning("stopping %s", why)
                self.executor.stop(view.name, copy.agent_job, copy.key, why, grace_s=0)
        for name in self.failures.failing(UNHELD):  # kept while its host cannot be seen
            host, key = name[1], name[2]
            if key is not PAST_CAP and name not in left and (
                    host not in by_name or by_name[host].state in USABLE):
                self.failures.worked(name, "%s: %s, which the store does not hold, is seen "
                                     "running no more" % (host, key))
        return found

    def _forget_ended_stops(self, by_name: Dict[str, HostView], busy: Set[int],
                            held: Set[Tuple[str, str]]) -> None:
        """Forgets the stop of each copy its reachable host has ended (or no longer lists)
        that no job of the store holds there — a late copy killed by ``_stop_unheld``, or a
        stop whose row outlived its attempt's end —: the stops kept are those whose end is
        awaited, read by every holder that takes the lease, and a row per late copy kept for
        ever would only grow. A late copy's time is charged with it (``late_copy``): it held
        GPU that placement counted taken. A copy a lane acts on, or held (its end is its
        job's transition, a stale copy's its drop), is left. The stops of a host out of the
        config for longer than ``host_lost_s`` are forgotten, said: its jobs were requeued
        then, and what it ends after is known to no pass (one put back sooner is as before)."""
        uid = self.store.uid
        for host, key in self.executor.stops_sent():
            view = by_name.get(host)
            late, said = None, None
            if view is None:  # held or not: no pass reaches the host to stop or see its copy
                since = self._away.get(host)
                if since is None or self._store_now() - since <= self.settings.host_lost_s:
                    continue
                said = "%s has been out of the config for %.0f s, so what became of the copy " \
                    "is not known (a late copy's GPU time is charged to no one)" % (
                        host, self._store_now() - since)
            else:
                named = attempt_of(key, uid)
                if view.state not in USABLE or (host, key) in held or (
                        named is not None and named[0] in busy):
                    continue
                rec = view.by_key().get(key)
                if rec is not None and rec.get("state") not in AGENT_ENDED:
                    continue  # its stop is under way
                if rec is not None and named is not None and \
                        self._moved_past(named[0], named[1], {}) is not None:
                    late = late_copy(view, named[0], named[1], rec)
            try:
                try:
                    self.store.copy_ended(host, key, self.holder, epoch=self.epoch, late=late)
                except StoreRefused as err:  # what its agent says it held: charged to no one
                    if late is None:
                        raise
                    self._host_refused(host, "the late copy %s, whose GPU time is charged to "
                                       "no one" % key, err)
                    self.store.copy_ended(host, key, self.holder, epoch=self.epoch)
            except RowsLocked as err:  # kept a pass longer: forgotten by a later one
                self.failures.failed(("stop", host, key), "the stop of %s on %s is forgotten "
                                     "by a later pass: %s" % (key, host, err), same=HELD)
                self._left = True
                continue
            self.failures.worked(("stop", host, key), "the stop of %s on %s is forgotten"
                                 % (key, host))
            self.executor.forget_stop(host, key)
            if said is not None:
                log.warning("the stop of %s on %s is forgotten: %s", key, host, said)

    def _moved_past(self, job_id: int, attempt: int, active: Dict[int, Job]) -> Optional[str]:
        """How the store has moved past a job's attempt (``copies.moved_past``), or None where
        it has not, or has no such job."""
        job = active.get(job_id)
        if job is None:
            try:
                job = self.store.get(job_id)
            except JobNotFound:
                return None
        return moved_past(job, attempt)

    def _host_refused(self, host: str, what: str, err: StoreRefused) -> None:
        """The store refused what ``host``'s agent says of ``what`` (a value out of a column's
        range, text with a NUL): left as the store has it, and the pass goes on."""
        self._refused.add(host)
        self.lanes.refused(host, RECORDS, what, err)

    def _left_for_later(self, job_id: int, err: RowsLocked) -> None:
        """A job whose row another session holds: left for the next turn, which is a full
        pass, so it is done once the session ends."""
        self.lanes.left_locked(job_id, err)
        self._left = True

    def _drop_stale(self, copy: StaleCopy) -> None:
        """Forgets a stale copy found not running; one whose row another session holds is
        forgotten by a later pass (it runs nowhere: the host takes new work meanwhile)."""
        try:
            self.store.drop_stale(copy.host, copy.key, self.holder, "the copy left on %s is "
                                  "not running" % copy.host, epoch=self.epoch)
        except RowsLocked as err:
            self._left_for_later(copy.job, err)

    def _decide(self, views: List[HostView], jobs: List[Job], cordons: List[Cordon]) -> bool:
        """Records where pending jobs go and which borrowers are preempted (and why the others
        wait); returns whether it recorded a placement or a preemption."""
        now = self._store_now()  # (a refusal's time is the store's too: Executor.clock)
        derived = self._derived(jobs)
        refused = {j.id: tuple(sorted({r.host for r in j.refusals if now - r.at < REFUSED_FOR_S}))
                   for j in derived.refusing}
        self._window_ends = min((r.at + REFUSED_FOR_S for j in derived.refusing
                                 for r in j.refusals if now - r.at < REFUSED_FOR_S), default=None)
        result = schedule(views, jobs, self.config.queues, self.config.teams, self.store.uid,
                          {k: v for k, v in refused.items() if v}, self._kept, cordons,
                          self._recent_usage(now, derived),
                          Reserve(self.config.scheduler.reserve_after_s, now))
        self._keep_team_holds(result.held)
        recorded = False
        for d in result.decisions:
            try:  # within its quota as this pass read it: held to it as it is written
                self.store.place(d.job, d.slot, self.holder, d.why,
                                 preemptible=d.preemptible, epoch=self.epoch,
                                 quota=quota_of(self.config.teams,
                                                derived.by_id[d.job].team))
            except StateConflict:  # cancelled, or placed by hand (or its quota taken by
                continue           # one placed by hand) meanwhile: the next pass reads it
            except RowsLocked as err:
                self._left_for_later(d.job, err)
                continue
            recorded = True
        for p in result.preemptions:
            try:
                self.store.stopping(p.victim, (RUNNING,), "preempt", self.holder, p.why,
                                    epoch=self.epoch)
            except StateConflict:
                continue
            except RowsLocked as err:
                self._left_for_later(p.victim, err)
                continue
            recorded = True
        if self._waited is not None and self._waited[0] is result and self._waited[1] is jobs:
            return recorded  # the same pass on the same jobs: its reasons are recorded
        for job_id, why in result.waiting.items():
            job = derived.by_id[job_id]
            if job.refusals:  # the agent's words stay in view while it waits
                last = job.refusals[-1]
                why = "%s; last refused by %s" % (why, last.describe())
            if job.reason != why:
                try:
                    self.store.waiting(job_id, why, epoch=self.epoch)
                except StateConflict:
                    continue
                except RowsLocked as err:
                    self._left_for_later(job_id, err)
        self._waited = (result, jobs)
        return recorded

    def _recent_usage(self, now: float, derived: ActiveJobs) -> Recent:
        """The teams' recent usage for fair share over time, read from the store's usage
        records at most once every RECENT_EVERY_S, and on taking the lease — only while it
        counts ([fairshare] usage_weight above 0) and a job waits for it to rank. ``now``:
        the store's, which ended the records (``teams`` ranks by them at its own)."""
        fair = self.config.fairshare
        if fair.usage_weight <= 0 or not self.config.teams:
            return Recent()
        read_at, recent = self._recent
        if read_at is not None and self.ticks() - read_at < RECENT_EVERY_S:
            return recent
        if not any(j.state == PENDING for j in derived.jobs):
            return recent
        records = self.store.usage(now - fair.window_s, now)
        recent = Recent.of(fair.usage_weight, recent_gpus(records, now, fair.half_life_s,
                                                          fair.window_s))
        self._recent = (self.ticks(), recent)
        return recent


def _has_gpu(view: HostView, index: int) -> bool:
    return any(g.get("index") == index for g in view.gpu_records())
