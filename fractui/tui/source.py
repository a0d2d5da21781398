"""Where the screen's data comes from: the live fleet and store, or a frozen fleet for tests.

Host updates arrive on the fleet's worker threads. The source copies each one there and keeps
only the latest per host; the first change after the screen took its updates wakes the screen
once (a thread-safe ``post_message``), however many follow before it looks. So a busy fleet of
1,000 GPUs costs the UI one wake-up per frame at most, and no widget is touched off its thread.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

from fractui.arguments import JOBS_LIMIT
from fractui.config import Config
from fractui.copy_words import stale_copies
from fractui.fleet.client import AgentCallError
from fractui.fleet.fleet import Fleet
from fractui.fleet.host import HostSession, HostStatus, HostUnavailable
from fractui.store.base import FEED_WAIT_S, HOSTS, JOBS, LEASE, Store, StoreError
from fractui.store.intents import Asker, last_lines, readable
from fractui.store.model import (ACTIVE, ENDED, AuditEntry, GpuTime, Hold, Job, KeptTerms,
                                 UsageRecord)
from fractui.tui.history import History
from fractui.tui.model import StoreView
from fractui.usage.report import UNSTARTED, earliest
from fractui.usage.sentences import Waiting

if TYPE_CHECKING:
    from fractui.scheduler.child import ChildScheduler

log = logging.getLogger("fractui.tui")

LOG_LINES = 500  # the job screen starts from a job's last lines
CALL_S = 10.0
FEED_RETRY_S = 1.0  # how soon a feed that failed is opened again

LogSink = Callable[[str, bool], None]
"""Receives a job's new output (and ``True`` once the job ended and all of it was sent)."""


class Source:
    """The frozen source: given statuses and store jobs, unchanging (snapshot tests, the
    benchmark). The live one below changes them as the fleet reports."""

    note: Optional[str] = None
    """A line for the header (the demo says what is simulated)."""
    report_command: Optional[str] = None
    """``fractui report`` on this store, where its place is not the user's own config's (the
    demo's temporary one): the report screen says it with the range and grouping it shows."""
    store: Optional[Store] = None
    """Where decisions are recorded (None: a frozen fleet records nothing)."""
    scheduler: Optional["ChildScheduler"] = None
    """The scheduler this process runs as its child, if it runs one."""

    def __init__(self, statuses: list[HostStatus], store: Optional[StoreView] = None,
                 simulated: Optional[dict[str, frozenset[str]]] = None,
                 logs: Optional[dict[str, list[str]]] = None,
                 usage: Sequence[UsageRecord] = (),
                 bounds: Optional[Mapping[str, int]] = None,
                 holds: Optional[Mapping[str, Hold]] = None) -> None:
        self._lock = threading.Lock()
        self._usage = tuple(usage)
        self._bounds = dict(bounds or {})
        self._holds = dict(holds or {})
        self._current = {s.name: s for s in statuses}
        self._logs = logs or {}
        self._latest = {s.name: s for s in statuses}
        self._names = [s.name for s in statuses]
        self._store = store
        self._simulated = simulated or {}
        self._wake: Optional[Callable[[], None]] = None
        self._woken = False
        self.history = History()
        """Each GPU's and running job's utilisation and memory over the last minutes."""
        for status in statuses:
            self.history.record(status.name, status.snapshot, status.jobs)

    def hosts(self) -> list[str]:
        return list(self._names)

    def attach(self, wake: Callable[[], None]) -> None:
        """From now on ``wake`` is called (from any thread) when hosts have news."""
        with self._lock:
            self._wake = wake
            self._woken = bool(self._latest)
        if self._latest:
            wake()

    def take(self) -> list[HostStatus]:
        """The hosts that changed since the last take (the UI thread calls this)."""
        with self._lock:
            changed, self._latest = list(self._latest.values()), {}
            self._woken = False
        return changed

    def changed(self, status: HostStatus) -> None:
        """A host's news, on the thread it came on: copied there (a plain-dict copy is atomic
        under the GIL, so a job update racing it cannot break it)."""
        copy = dataclasses.replace(status, jobs=dict(status.jobs))
        self.history.record(copy.name, copy.snapshot, copy.jobs)
        with self._lock:
            self._latest[status.name] = copy
            self._current[status.name] = copy
            wake = self._wake if not self._woken else None
            self._woken = self._woken or wake is not None
        if wake is not None:
            wake()

    def read_store(self, ended: bool = False) -> Optional[StoreView]:
        """The store's active jobs (``ended``: and its newest ended ones, else its ``ended``
        is None: only a view that shows them asks); called in a worker thread, never on the
        UI thread."""
        if self._store is None:
            return None
        return dataclasses.replace(self._store,
                                   ended=self.read_newest_ended() if ended else None)

    def read_last_lines(self, jobs: Sequence[Job]) -> dict[int, str]:
        """The last lines kept of those of ``jobs`` that failed, where the reader may read
        their output (intents.last_lines), in one read; in a worker thread."""
        kept = self._store.last_lines if self._store is not None else {}
        return {j.id: kept[j.id] for j in jobs if j.id in kept}

    def read_readable(self, jobs: Sequence[Job]) -> set[int]:
        """The numbers of those of ``jobs`` whose output, argv and env the reader may read
        (intents.readable, as ``fractui jobs`` shows them); in a worker thread. A frozen
        fleet's reader reads all it was given."""
        return {j.id for j in jobs}

    def read_newest_ended(self) -> tuple[Job, ...]:
        """The newest ended jobs (as ``fractui jobs --all``): for a view that shows them (the
        jobs view's ``a``, the palette), in a worker thread."""
        return (self._store.ended or ()) if self._store is not None else ()

    def read_bounds(self) -> dict[str, int]:
        """The teams' bounds on waiting jobs as the store holds them (``waiting_bounds``, what
        a member's submit is refused by; in a worker thread): the store's, or those a frozen
        fleet was given; none listed where there is no store."""
        return self.store.waiting_bounds() if self.store is not None else dict(self._bounds)

    def read_holds(self) -> dict[str, Hold]:
        """What each team holds for one of its waiting jobs, as the lease holder's last pass
        kept it (``team_holds``; in a worker thread): the store's, or those a frozen fleet was
        given."""
        return self.store.team_holds() if self.store is not None else dict(self._holds)

    def read_terms(self) -> KeptTerms:
        """Each team's quota, borrowing and weight as the lease holder keeps them
        (``team_terms``, what its passes hold the teams to; in a worker thread): the store's,
        none where there is no store (the config's stand)."""
        return self.store.team_terms() if self.store is not None else KeptTerms()

    def read_job(self, job_id: int) -> tuple[Optional[Job], Optional[str]]:
        """One job as the store has it now, active or ended, and the store's uid (to match
        the agents' keys): the job screen's, each second, in a worker thread; it reads that
        row only, not every active job. (None, None) without a store; JobNotFound if the
        store has no such job."""
        view = self._store
        job = view.job(job_id) if view is not None else None
        if job is None and self.store is not None:
            job = self.store.get(job_id)
        return job, view.uid if view is not None else None

    def read_usage(self, since: float, until: float, bucket_s: float = 0.0,
                   to_now: bool = False
                   ) -> Optional[tuple[list[UsageRecord], list[GpuTime]]]:
        """The usage records and GPU time of [since, until) (the report screen's and the
        team standing's; a worker thread, never the UI thread): the store's, or the records
        a frozen fleet was given; None where there is neither. The GPU time's buckets of
        ``bucket_s`` seconds begun before ``since`` too, which have time in the range.
        ``to_now``: the range reaches now (Store.usage's)."""
        if self.store is not None:
            return (self.store.usage(since, until, to_now),
                    self.store.gpu_time(since - bucket_s, until))
        if not self._usage:
            return None
        return [r for r in self._usage if (to_now or r.started_at < until) and
                (r.ended_at is None or r.ended_at >= since)], []  # (the store's rule)

    def read_usage_begins(self) -> Optional[float]:
        """Where the oldest usage kept begins (a worker thread): the store's
        (Store.usage_begins), or the oldest of the records a frozen fleet was given."""
        if self.store is not None:
            return self.store.usage_begins()
        return earliest(self._usage, [])

    def read_usage_forgotten_before(self) -> Optional[float]:
        """Where the retention last forgot usage (a worker thread): the store's
        (Store.usage_forgotten_before); a frozen fleet's records were never forgotten."""
        return self.store.usage_forgotten_before() if self.store is not None else None

    def read_now(self, local: Callable[[], float]) -> float:
        """The store's clock, which its times are dated by (one read, in a worker thread):
        what the report screen and the team standing count up to, as fractui report and
        fractui teams do (docs/decisions.md, "The report's now is the store's"); without a
        store, ``local``'s."""
        return self.store.now() if self.store is not None else local()

    def read_ended(self, since: float) -> list[Job]:
        """The jobs that ended since ``since`` without having started (the report screen's,
        in a worker thread): the store's; a frozen fleet has none."""
        return [] if self.store is None else self.store.jobs(UNSTARTED, ended_since=since)

    def read_waiting(self) -> list[Job]:
        """The jobs waiting to start now (the report screen's "waiting to start now", in a
        worker thread): the store's; a frozen fleet's, its view's."""
        if self.store is not None:
            return self.store.jobs(Waiting.STATES)
        view = self._store
        return [] if view is None else [j for j in view.jobs if j.state in Waiting.STATES]

    def watch_store(self, changed: Callable[[], None]) -> None:
        """From now on ``changed`` is called (from a thread of the source's) when the store
        changed: the frozen store never does."""

    def simulated(self, host: str) -> frozenset[str]:
        """Agent pids (as strings) of the demo's simulated load on ``host``."""
        return self._simulated.get(host, frozenset())

    def fresh(self, host: str) -> Optional[HostStatus]:
        """The host as it is now (asked of its agent where there is one): what a placement is
        checked against before it is recorded. Called in a worker thread."""
        with self._lock:
            return self._current.get(host)

    def call(self, host: str, method: str, params: Mapping[str, Any],
             timeout_s: float = CALL_S) -> Any:
        """``method`` of ``host``'s agent (worker thread): a frozen fleet has none to ask."""
        raise HostUnavailable("%s: a frozen fleet has no agent to ask" % host)

    def audit(self, job: int) -> list[AuditEntry]:
        """A job's history, newest first (worker thread)."""
        return self.store.audit_log(job) if self.store is not None else []

    def follow_logs(self, host: str, agent_job: str, key: Optional[str], sink: LogSink
                    ) -> tuple[list[str], Callable[[], None]]:
        """A job's last lines, and from then on its new output to ``sink`` (from the thread
        it arrives on); returns the lines and how to stop following. Worker thread. ``key``:
        the agent's key of the job, where known: an agent that lost that job refuses it
        (JOB_KEY_MISMATCH) rather than give another job's output of that id."""
        return list(self._logs.get("%s/%s" % (host, agent_job), ())), lambda: None


@dataclasses.dataclass
class Followers:
    """The follows of one job's output on one host's session that screens asked for: the
    agent keeps one follow per job and connection, so it is asked to end only when none is
    left, and under ``lock``, in turn with a new follow — an unfollow sent from its thread
    after a new screen of that job asked (a screen closed and opened again at once) never
    ends that screen's follow."""

    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    count: int = 0


class LiveSource(Source):
    """The configured fleet (its sessions started here) and the store, if there is one."""

    def __init__(self, config: Config, store: Optional[Store]) -> None:
        super().__init__([])
        self.store = store
        self.asker = Asker.here(config.teams, tui=True)
        """Whose output this reader may read, with the store's identity (its last lines)."""
        self.fleet = Fleet(config, on_change=self.changed)
        self._names = [h.name for h in config.hosts]
        self._latest = {s.name: dataclasses.replace(s) for s in self.fleet.statuses()}
        self._stopped = threading.Event()
        self._watcher: Optional[threading.Thread] = None
        self._followers: dict[tuple[str, str], Followers] = {}
        """By (host, agent job): kept for the source's life, one small record per job
        followed."""

    def start(self) -> None:
        self.fleet.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        self.fleet.stop()

    def watch_store(self, changed: Callable[[], None]) -> None:
        if self.store is not None and self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, args=(self.store, changed),
                                             name="store-feed", daemon=True)
            self._watcher.start()

    def _watch(self, store: Store, changed: Callable[[], None]) -> None:
        """The store's change feed: jobs, the lease or the hosts (their cordons) changed (what
        the screen shows of the store), so it is read again. A feed that fails is opened
        again; meanwhile the screen's timer reads and says why."""
        feed, missed = None, False
        while not self._stopped.is_set():
            try:
                if feed is None:
                    feed = store.feed()
                # a feed opened anew heard nothing sent before it listened: read it all again
                if missed or feed.wait(FEED_WAIT_S) & {JOBS, LEASE, HOSTS}:
                    changed()
                missed = False
            except StoreError as err:
                log.info("the store's change feed: %s", err)
                if feed is not None:
                    feed.close()
                feed, missed = None, True
                self._stopped.wait(FEED_RETRY_S)
        if feed is not None:
            feed.close()

    def read_store(self, ended: bool = False) -> Optional[StoreView]:
        if self.store is None:
            return None
        held = self.store.lease_holder()
        now = self.store.now()  # the holds' clock, whatever the TUI's machine's
        # the ended first: an end is final, so a job that ends between the two reads is in
        # neither, never in both
        newest = self.read_newest_ended() if ended else None
        return StoreView(self.store.uid, tuple(self.store.jobs(states=ACTIVE)),
                         held[0] if held else None, tuple(self.store.cordons()),
                         {u: h for u, h in self.store.mode_holds().items() if h.until > now},
                         self.store.trouble(), newest,
                         tuple(stale_copies(self.store)), self.read_last_lines(newest or ()))

    def read_last_lines(self, jobs: Sequence[Job]) -> dict[int, str]:
        if self.store is None:
            return {}
        return last_lines(self.store, self.asker, jobs)

    def read_readable(self, jobs: Sequence[Job]) -> set[int]:
        if self.store is None:
            return set()
        return readable(self.store, self.asker, jobs)

    def read_job(self, job_id: int) -> tuple[Optional[Job], Optional[str]]:
        if self.store is None:
            return None, None
        return self.store.get(job_id), self.store.uid

    def read_newest_ended(self) -> tuple[Job, ...]:
        if self.store is None:
            return ()
        return tuple(self.store.jobs(states=ENDED, limit=JOBS_LIMIT))

    def fresh(self, host: str) -> Optional[HostStatus]:
        session = self.fleet.session(host)
        snapshot = session.call("snapshot", None, CALL_S)
        return dataclasses.replace(session.status, snapshot=snapshot,
                                   jobs=dict(session.status.jobs))

    def call(self, host: str, method: str, params: Mapping[str, Any],
             timeout_s: float = CALL_S) -> Any:
        return self.fleet.session(host).call(method, dict(params), timeout_s)

    def follow_logs(self, host: str, agent_job: str, key: Optional[str], sink: LogSink
                    ) -> tuple[list[str], Callable[[], None]]:
        session = self.fleet.session(host)
        # the pushes of that id before the answer, told only once the agent took the follow:
        # the session may follow that id already (a screen's unfollow not yet through), and
        # where the agent refused the key they are another job's output
        held: Optional[list[dict[str, Any]]] = []
        lock = threading.Lock()

        def tell(params: dict[str, Any]) -> None:
            sink(params.get("data", ""), bool(params.get("eof")))

        def on_log(method: str, params: dict[str, Any]) -> None:
            if method == "log" and params.get("job") == agent_job:
                with lock:
                    if held is not None:
                        held.append(params)
                        return
                tell(params)

        with self._lock:
            followers = self._followers.setdefault((host, agent_job), Followers())
        session.listeners.append(on_log)
        try:
            with followers.lock:
                first = session.call("job.logs", {"job": agent_job, "key": key,
                                                  "lines": LOG_LINES, "follow": True}, CALL_S)
                followers.count += 1
        except Exception:
            session.listeners.remove(on_log)
            raise
        with lock:  # (in order: a push that comes meanwhile waits for those held)
            for params in held:
                tell(params)
            held = None

        def stop() -> None:
            if on_log not in session.listeners:  # stopped already: its follow is not counted
                return
            session.listeners.remove(on_log)
            # tell the agent too, off the UI thread (it would push until the job ends)
            threading.Thread(target=self._unfollow, args=(session, agent_job, key, followers),
                             daemon=True, name="unfollow").start()

        return list(first.get("lines") or ()), stop

    @staticmethod
    def _unfollow(session: HostSession, agent_job: str, key: Optional[str],
                  followers: Followers) -> None:
        """Ends the agent's follow of the job, unless another screen still follows it."""
        with followers.lock:
            followers.count -= 1
            if followers.count:
                return
            try:
                session.call("job.logs", {"job": agent_job, "key": key, "lines": 0,
                                          "follow": False}, CALL_S)
            except (HostUnavailable, AgentCallError) as err:  # gone with its host: nothing
                log.info("unfollowing %s/%s: %s", session.cfg.name, agent_job, err)  # to stop

    def set_simulated(self, host: str, pids: frozenset[str]) -> None:
        """The demo's simulated load changed on ``host`` (its pids, as strings)."""
        self._simulated = {**self._simulated, host: pids}
