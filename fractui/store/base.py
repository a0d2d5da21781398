"""The store's interface: what the scheduler, the CLI and the TUI may ask of any store.

One SQL core (``fractui.store.sql``) implements it on two backends: an SQLite file, the
embedded default (``fractui.store.sqlite``), and a PostgreSQL database that several admins,
users and a standby scheduler share (``fractui.store.postgres``); ``fractui.store.url`` opens
either by URL. Every method is one transaction, durable when it returns, and every state
change is a compare-and-set on the job's state, so two actors racing on one job never both win.
The scheduler's writes carry the epoch of its lease (``epoch=``), and a write of an epoch that
is no longer the lease's is refused (LeaseLost), so a scheduler that lost its lease while
paused changes nothing when it wakes.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

from fractui.words import count
from fractui.store.model import (AuditEntry, Cordon, GpuTime, Hold, HolderMemory, Job,
                                 KeptTerms, LogTail, LateCopy, ModeHold, Refusal, Sampled, Slot,
                                 StaleCopy, TeamTerms, UsageRecord)


class JobNotFound(KeyError):
    def __str__(self) -> str:
        return "no job %s in the store" % self.args[0]


class StateConflict(Exception):
    """The job was not in a state the change expects (someone else acted first)."""


class KeyTaken(Exception):
    """A submit's key names a job submitted with something else (another queue, command, ...):
    a key is for retrying one submit, never for a second."""


class QuotaTaken(StateConflict):
    """A placement decided within its team's quota would now take the team past it: another
    placement of the team (the scheduler's, another admin's by hand) landed since the quota was
    read. Nothing was written; the job stays pending."""


class WaitingFull(Exception):
    """A team member's submit or requeue would take their team past its bound on waiting jobs
    (pending, or stopping to be requeued: back in the queue soon): nothing was written. A
    refusal by the store's rule, not a fault of the store (exit 1)."""

    def __init__(self, user: str, team: str, bound: int, waiting: int, requeued: int = 0):
        super().__init__("refused: you are %s, not an admin; team %s has %s waiting%s and may "
                         "have at most %d (max_waiting)" % (
                             user, team, count(waiting, "job"),
                             " (%d of them being requeued)" % requeued if requeued else "",
                             bound))
        self.user, self.team, self.bound, self.waiting = user, team, bound, waiting
        self.requeued = requeued


class StoreError(Exception):
    """The store cannot do what was asked, said with where it is and what was found there.

    Every store raises these for its driver's errors (and JobNotFound, StateConflict for the
    outcomes above), so nothing above the store catches or names a driver's exceptions."""

    unknown = False
    """Whether the write may have been recorded all the same: its commit was sent and its
    answer lost (the words say so; a caller that adds its own says so too)."""

    def __init__(self, where: str, what: str):
        super().__init__("store %s: %s" % (where, what))
        self.where = where
        self.what = what


class StoreDamaged(StoreError):
    """What is there is not a store fractui can use: empty, truncated, corrupt, written by a
    newer fractui, or another program's file. It is never overwritten or started afresh."""


class StoreReadOnly(StoreError):
    """The store (or the directory it needs to write beside it) cannot be written."""


class StoreExposed(StoreError):
    """Any local user could change the store, or put a store or a -wal of theirs where fractui
    would open it (SQLite replays a -wal it finds beside a store): it is never opened. A store
    shared through a group is not refused; its group's members are its writers."""


class StoreFull(StoreError):
    """No space is left where the store is: nothing was recorded."""


class StoreBusy(StoreError):
    """Another process held the store's lock for longer than the store waits."""


class RowsLocked(StoreBusy):
    """A row or table the call needs is locked by a session outside fractui's turn-taking (a
    transaction left open on psql, an admin's ALTER TABLE): the call waited a moment and wrote
    nothing. Only what touches those rows waits; the message names the session."""


class StoreUnavailable(StoreError):
    """The store cannot be reached for another reason (an I/O error, a file that cannot be
    opened, a database server that is down, restarting or unknown); the message carries the
    system's words."""


class StoreMissing(StoreUnavailable):
    """The server answers and has no such database: dropped, renamed, or never made. Not a
    server restarting: a wait on the store (``submit --wait``, ``logs -f``) ends at it."""


class StoreMisdirected(StoreUnavailable):
    """The store's URL reaches no server as it is written, whatever the server does: a host
    name the resolver says no host has, encryption the URL asks for and the server does not
    offer, a value libpq refuses. Not a server away: a wait on the store ends at it, as at
    StoreMissing."""


NOTHING_RECORDED = "nothing was recorded"
"""What the store's error says of its call where none of the call's write reached the server (a
connection refused, a statement cancelled). True of one try: where the try is made again after
a commit whose answer was lost, it is left out (sql._not_known), the first try's outcome not
being known."""


NO_STORE = ("there is no store here yet: nothing was ever submitted to it (a submit or the "
            "scheduler makes it; is the config's [store] url the one your team uses?)")
"""Why a verb that must not make the store (``make`` False: one that only reads, or names a
job) found none where the config's url points: an SQLite file, or a database, not there."""


class StoreRefused(StoreError):
    """The store refused a value it was given (a number out of its column's range, text with
    a NUL or a lone surrogate, a constraint it breaks): the store is there and answers, and
    nothing of the call was written. Where the value is a host's (its agent's words), the
    lease holder leaves that write out and goes on with the others (docs/decisions.md)."""


class StoreDenied(StoreError):
    """The database server refuses this user: at connect (authentication, pg_hba.conf, a role
    it does not know, one that may not log in), or, StoreForbidden, what the call needs. Said
    with the role, never a password."""


class StoreForbidden(StoreDenied):
    """The server let the role in and refuses it what this call needs (PostgreSQL's 42501): a
    privilege not granted it (a role that may only read, or read only the jobs), or the
    store's guard refusing what fractui's rule does not let it do. Unlike a refusal at
    connect, the calls it is granted still work: a reader may go on without this one."""


class LeaseLost(StoreError):
    """A write made as lease holder carried an epoch that is no longer the lease's: another
    scheduler took the lease meanwhile. Nothing was written; the writer is no longer the
    leader and must stop acting."""


# What a change feed reports changed: the jobs (submit, cancel, placement, any state change,
# stale copies), the hosts' kept inventory, and who holds the scheduler lease (a renewal by
# the same holder is no change), and job output: a log tail asked for or kept (LOGS). EVERYTHING:
# the feed may have missed changes (it reconnected): re-read all.
JOBS, HOSTS, LEASE, LOGS = "jobs", "hosts", "lease", "logs"
TOPICS = (JOBS, HOSTS, LEASE, LOGS)
EVERYTHING = frozenset(TOPICS)
# A reader's longest ``Feed.wait`` (the scheduler's, a TUI's feed thread): how long stopping the
# reader waits for its thread to see the stop. Shorter waits cost nothing that matters: an
# SQLite feed polls every 20 ms anyway, a PostgreSQL one waits on its own socket.
FEED_WAIT_S = 0.1


@dataclass(frozen=True)
class Identity:
    """Who the store knows the caller as, by a proof the caller cannot forge: the OS user of
    the process on SQLite (its file permissions are the boundary), the authenticated database
    role on PostgreSQL. ``admin``: the store says this user steers the fleet. ``teams``: the
    teams the store says the user is in, or None where the store keeps no membership (SQLite:
    the config's [[teams]] say it)."""

    user: str
    admin: bool
    teams: Optional[frozenset[str]] = None


class Feed(abc.ABC):
    """Wakes a reader (the scheduler, a TUI) when any client changed the store, so nothing
    waits for a poll. Each feed is one reader's own, used from one thread."""

    @abc.abstractmethod
    def wait(self, timeout_s: float) -> frozenset[str]:
        """Blocks until something changed since this feed's last ``wait`` (or its creation),
        at most ``timeout_s``; returns the topics that changed (empty on a timeout)."""

    @abc.abstractmethod
    def close(self) -> None:
        ...


class Store(abc.ABC):
    uid: str
    """Names this store in agent idempotency keys, so two stores never share a key."""
    where: str
    """Where the store is, as its errors say it: a file's path, or postgresql://host:port/db."""

    @abc.abstractmethod
    def submit(self, queue: str, team: Optional[str], name: str, argv: Sequence[str],
               request: dict[str, Any], actor: str, cwd: Optional[str] = None,
               env: Optional[Mapping[str, str]] = None, image: Optional[str] = None,
               key: Optional[str] = None, run_as: Optional[str] = None,
               bounded_as: Optional[str] = None) -> Job:
        """A new pending job (audited as ``submit``); ``env``, ``image`` and ``run_as`` as
        Job's. With ``key`` (intents.submit_key), a submit made again finds the job the first
        made, and one whose answer was lost while committing is made again at once: KeyTaken
        if the key names a job submitted otherwise. ``bounded_as``: the user (no admin) whose
        submit is held to the team's bound on waiting jobs (``waiting_bounds``), counted in
        the insert's own transaction: WaitingFull, and nothing written, past it."""

    @abc.abstractmethod
    def get(self, job_id: int) -> Job:
        """The job, or JobNotFound."""

    @abc.abstractmethod
    def jobs(self, states: Optional[Iterable[str]] = None, queue: Optional[str] = None,
             limit: Optional[int] = None, hosts: Optional[Iterable[str]] = None,
             users: Optional[Iterable[str]] = None,
             ended_since: Optional[float] = None,
             other_than: Optional[Iterable[str]] = None) -> list[Job]:
        """Jobs in those states (all if None), oldest first; with ``hosts``, only those whose
        slot is on one of them; with ``users``, only those one of them submitted (Job.user);
        with ``ended_since``, only those that ended then or later; with ``other_than``, only
        those in none of those states (a state no one of fractui's, written by hand, among
        them: it is read, and said as damage); with ``limit``, the newest that many of
        those."""

    @abc.abstractmethod
    def submitters(self) -> frozenset[str]:
        """Every user who submitted a job the store keeps (Job.user; jobs are never deleted):
        the names a filter by user (``jobs --user``, ``report --user``) may find jobs of."""

    def members(self) -> Optional[frozenset[str]]:
        """Every user the store itself holds in a team or among its admins, where it keeps
        who is (PostgreSQL: the roles that may log in and are in a team's role or the admins',
        directly or not); None where it keeps none and the config's [[teams]] say (SQLite).
        A teammate who never submitted is still someone a filter by user may name."""
        return None

    # Transitions: each one compare-and-set on the job's state (StateConflict if it is in none
    # of the states named), audited in the same transaction where it says so. ``epoch``: made
    # as lease holder of that epoch (LeaseLost, nothing written, if the lease's is another);
    # None for a user's. Times not given are the store's clock.

    @abc.abstractmethod
    def place(self, job_id: int, slot: Slot, actor: str, why: str, manual: bool = False,
              preemptible: bool = False, epoch: Optional[int] = None,
              quota: Optional[float] = None, attempt: Optional[int] = None) -> Job:
        """pending -> placed on ``slot``: the scheduler's decision (audited ``decide``), or an
        admin's by hand (``manual``, audited ``place``) that the holder launches there.
        ``quota``: the job's team's quota (GPUs) it was placed within (not ``preemptible``);
        checked again in the write's own transaction — QuotaTaken if what the team holds
        within its quota, other placements landed meanwhile included, leaves no room for
        ``slot.charge``. A placement by hand whose commit's answer was lost is made again at
        once; if the first had landed, that finds the job placed (StateConflict): the caller
        reads where it is (intents.place_by_hand). ``attempt`` as ``stopping``'s."""

    @abc.abstractmethod
    def move(self, job_id: int, slot: Slot, actor: str, why: str, borrowed: bool = False,
             quota: Optional[float] = None, attempt: Optional[int] = None) -> Job:
        """placed or running -> stopping to move (audited ``move``): the lease holder stops
        it, then places it on ``slot`` by hand (``moved``), which it holds meanwhile (the
        job's ``move_to``; ``borrowed``: past its team's quota, so preemptible there).
        ``quota`` as ``place``'s, the job's own slots left out. Made again at once where the
        commit's answer was lost, as ``stopping`` is; ``attempt`` as ``stopping``'s."""

    @abc.abstractmethod
    def moved(self, job_id: int, actor: str, why: str, stale_on: Optional[str] = None,
              epoch: Optional[int] = None, sampled: Optional[Sampled] = None) -> Job:
        """stopping to move -> placed by hand on the slot it held, as its next attempt, in
        one transaction, so nothing places it elsewhere in between (audited ``moved``); the
        stopped attempt's usage record closed as requeued. ``stale_on``: its host was lost,
        the copy there recorded as stale (as ``requeue``'s)."""

    @abc.abstractmethod
    def reslot(self, job_id: int, slot: Slot, epoch: Optional[int] = None) -> Job:
        """A placed job's slot, completed from the live GPU just before its launch."""

    @abc.abstractmethod
    def started(self, job_id: int, agent_job: str, started_at: Optional[float], actor: str,
                why: str, epoch: Optional[int] = None, model: Optional[str] = None,
                booked_at: Optional[float] = None) -> Job:
        """placed -> running as the agent's ``agent_job`` (audited ``launch``), its usage
        record opened (``model``: its GPUs' model, as its host reports it) from its start,
        else from when its agent booked its slice (``booked_at``: a start its agent holds
        unread, docs/decisions.md), else now. A job a stop was
        asked of while its launch was in flight (stopping, its start not recorded) stays
        stopping, its start and record kept the same way: the attempt ran, so it is charged
        for the time it held its slice."""

    @abc.abstractmethod
    def stopping(self, job_id: int, expect: Iterable[str], intent: str, actor: str, why: str,
                 epoch: Optional[int] = None, attempt: Optional[int] = None,
                 bounded_as: Optional[str] = None) -> Job:
        """-> stopping: ``intent`` (cancel, requeue, preempt) asked of a job on its host, which
        the lease holder stops (audited as the intent). ``bounded_as``: the user (no admin)
        whose requeue is held to the team's bound on waiting jobs, as ``submit``'s is, counted
        in the write's own transaction, in the team's turn: WaitingFull, nothing written. A
        cancel (``expect`` naming stopping) also takes over a stop under way that would bring
        the job back (a requeue, a preemption, a move: model.stops_offered), letting go of a
        move's slot; any other stop under way is a StateConflict. A commit whose answer was
        lost is made again at once; if the first had landed, that finds the job moved on
        (StateConflict): the caller reads where it is (intents.ask_stop). ``attempt``: the
        one the asker read; a later one is not stopped (StateConflict)."""

    @abc.abstractmethod
    def ended(self, job_id: int, expect: Iterable[str], state: str, reason: Optional[str],
              actor: str, why: str, action: str, exit_code: Optional[int] = None,
              ended_at: Optional[float] = None, refusals: Optional[Sequence[Refusal]] = None,
              stale_on: Optional[str] = None, epoch: Optional[int] = None,
              sampled: Optional[Sampled] = None, again: bool = False,
              last_line: Optional[str] = None, started_at: Optional[float] = None) -> Job:
        """-> done, failed or cancelled, for good (audited as ``action``): ``reason`` the job's
        own words, ``ended_at`` the agent's time of the end, ``refusals`` all the job had,
        ``stale_on`` a lost host where it may still run, recorded as a stale copy to stop on
        its return (in the same transaction). A job that held a slice has its usage record
        closed, with the last of what its agent ``sampled``. ``again``: a commit whose answer
        was lost is made again at once, as ``stopping``'s is (a user's cancel of a pending
        job: intents.ask_stop reads the StateConflict of a first that landed as done).
        ``last_line``: a failed job's last line of output (its agent's, shown as words.exited
        shows it), kept with its output, not in ``reason``: read by ``last_lines``, behind the
        rule of its output; a failed end without one drops an earlier attempt's.
        ``started_at``: the agent's start, the job's where the store knows none (a start its
        launch answered under way, or its agent held, that ended before a pass saw it run),
        as ``held`` gives it; a known start is kept."""

    @abc.abstractmethod
    def waiting(self, job_id: int, reason: str, epoch: Optional[int] = None) -> Job:
        """A pending job's words on why it waits (not audited: they change with each pass)."""

    @abc.abstractmethod
    def held(self, job_id: int, reason: Optional[str], started_at: Optional[float],
             epoch: Optional[int] = None) -> Job:
        """A running job's words on why its agent holds its start (``fleetview.held_why``;
        None: it holds it no more), copied from the agent as they change (not audited), with
        its start once the agent knows it (read when the hold ends, or once a start its launch
        answered under way runs; None: not known). A stopping job (a held start stopped as it
        was launched, adopted since) is given its start alone: its reason is its stop's."""

    @abc.abstractmethod
    def requeue(self, job_id: int, expect: Iterable[str], actor: str, why: str,
                stale_on: Optional[str] = None, refusal: Optional[Refusal] = None,
                epoch: Optional[int] = None, sampled: Optional[Sampled] = None) -> Job:
        """Back to pending as the next attempt, its slot cleared. ``stale_on``: the host where
        the previous attempt may still run, recorded as a stale copy to stop on its return.
        ``refusal``: the host refused the launch; kept in the job's ``refusals``. An attempt
        that held a slice has its usage record closed (requeued, or preempted), with the last
        of what its agent ``sampled``. A job stopping to be cancelled is never requeued
        (StateConflict): a cancel may take over a requeue's stop after the caller read it."""

    @abc.abstractmethod
    def stale(self, host: Optional[str] = None) -> list[StaleCopy]:
        """Stale copies, on one host or all."""

    @abc.abstractmethod
    def drop_stale(self, host: str, key: str, actor: str, why: str,
                   epoch: Optional[int] = None) -> None:
        """The stale copy is known stopped (audited)."""

    @abc.abstractmethod
    def audit(self, actor: str, action: str, job: Optional[int], why: str,
              detail: Optional[dict[str, Any]] = None) -> None:
        """Records who did what to which job and why."""

    @abc.abstractmethod
    def audit_log(self, job: Optional[int] = None, limit: int = 100) -> list[AuditEntry]:
        """The newest entries (of one job, or all), oldest first."""

    @abc.abstractmethod
    def record_inventory(self, host: str, facts: dict[str, Any],
                         epoch: Optional[int] = None) -> None:
        """Keeps what ``host`` could ever hold, as last seen (replacing what was kept). The time
        they were recorded (``inventory_since``) stays where they are the same but for the
        out-of-config mark (OUT_OF_CONFIG): marked or not, they have been so since."""

    @abc.abstractmethod
    def inventory(self) -> dict[str, dict[str, Any]]:
        """host -> the facts last recorded for it."""

    @abc.abstractmethod
    def forget_inventory(self, host: str, epoch: Optional[int] = None) -> bool:
        """Forgets what was kept of ``host`` (the lease holder's, for a host out of its
        config: a submit judged with no host list would count it); whether a row was kept."""

    @abc.abstractmethod
    def inventory_since(self) -> dict[str, float]:
        """host -> when the facts kept of it were recorded, by the store's clock (the lease
        holder writes them only when they change: they have been so since)."""

    def keep_inventory(self, heard: dict[str, dict[str, Any]],
                       kept: dict[str, dict[str, Any]], epoch: Optional[int] = None) -> None:
        """Records the hosts whose ``heard`` facts differ from ``kept`` (what the caller knows
        is stored), and brings ``kept`` up to date: facts change rarely, so most calls write
        nothing."""
        for host, facts in heard.items():
            if kept.get(host) != facts:
                self.record_inventory(host, facts, epoch=epoch)
                kept[host] = facts

    @abc.abstractmethod
    def ask_log(self, job_id: int, actor: str) -> None:
        """Asks the lease holder to keep the job's latest output tail (docs/cli.md, ``logs``
        through the store); JobNotFound for a job the store does not have. Asking twice is
        asking once, so a commit whose answer was lost is made again."""

    @abc.abstractmethod
    def log_requests(self) -> list[int]:
        """The jobs whose tail was asked for and not kept since, oldest request first."""

    @abc.abstractmethod
    def keep_log(self, job_id: int, text: str, complete: bool,
                 epoch: Optional[int] = None, offset: Optional[int] = None,
                 attempt: Optional[int] = None, whole: bool = False) -> bool:
        """Keeps the job's output tail (at most LOG_TAIL_BYTES, the caller's cut), where it
        ends in the log (LogTail.offset) and whether it is all of it (LogTail.whole),
        replacing the last one, and answers the requests for
        it; the lease holder's write, fenced by ``epoch``. ``attempt``: the attempt whose
        output it is, kept only while the job is at that attempt (a read of an earlier one
        that lands after the next began is none of its output): whether it was kept."""

    @abc.abstractmethod
    def answer_log(self, job_id: int, complete: bool, epoch: Optional[int] = None) -> None:
        """Answers the requests for the job's tail with the tail kept, as it is (its time
        too: no fresher one is read) but marked ``complete`` where the job has ended (no more
        of it will be read: ``logs -f`` and ``submit --wait`` wait for that mark); the lease
        holder's write, fenced by ``epoch``."""

    @abc.abstractmethod
    def log_tail(self, job_id: int) -> Optional[LogTail]:
        """The job's kept output tail, or None if none was kept."""

    @abc.abstractmethod
    def last_lines(self, job_ids: Iterable[int]) -> dict[int, str]:
        """The last line kept (``ended``'s ``last_line``) of each of ``job_ids`` that has one,
        in a query per LINES_AT_ONCE jobs. It is the job's output: the caller reads it only of
        the jobs whose output the reader may read (intents.last_lines); PostgreSQL's row
        security holds it to that rule too."""

    @abc.abstractmethod
    def keep_lost_clocks(self, hosts_away: dict[str, float], gpus_gone: dict[int, float],
                         epoch: Optional[int] = None) -> None:
        """Replaces the lost-host timers kept (HolderMemory): the lease holder's write, fenced
        by ``epoch``, made only when they changed."""

    @abc.abstractmethod
    def stop_sent(self, host: str, key: str, epoch: Optional[int] = None) -> None:
        """The lease holder sent a stop to the copy ``key`` on ``host``; kept until that
        attempt is requeued or ends, or the stale copy is dropped. Fenced by ``epoch``."""

    @abc.abstractmethod
    def copy_ended(self, host: str, key: str, actor: str, epoch: Optional[int] = None,
                   late: Optional[LateCopy] = None) -> bool:
        """The copy ``key`` on ``host`` that the lease holder stopped is known ended (its agent
        has it ended, or no longer has it) while no job of the store holds it there, or its
        host has been out of the config for longer than ``host_lost_s``: its stop is
        forgotten, and with ``late`` (the copy ran, of an attempt the store moved past)
        its time is charged as that attempt's usage record (outcome LATE, audited
        ``late-copy`` as ``actor``) unless the attempt has one. Returns whether a stop was
        kept; a second call finds none and adds nothing. Fenced by ``epoch``."""

    @abc.abstractmethod
    def keep_mode_holds(self, holds: dict[str, ModeHold], epoch: Optional[int] = None) -> None:
        """Replaces the GPUs kept as held back from mode changes (HolderMemory): the lease
        holder's write, fenced by ``epoch``, made only when they changed."""

    @abc.abstractmethod
    def mode_holds(self) -> dict[str, ModeHold]:
        """The GPUs (by UUID) the lease holder holds back from mode changes, and until when
        (the store's time: compared with ``now()``, never a reader's own clock): read by the
        placement preview and `fractui place`, which offer no change it would not make."""

    @abc.abstractmethod
    def keep_waiting_bounds(self, bounds: dict[str, int], epoch: Optional[int] = None) -> None:
        """Replaces the bounds on each team's waiting jobs with the config's (TeamConfig
        max_waiting): the lease holder's write, fenced by ``epoch``, made only when they
        changed. On PostgreSQL only an admin may write them; the guard reads them."""

    @abc.abstractmethod
    def waiting_bounds(self) -> dict[str, int]:
        """Each team's bound on its waiting jobs as the store holds it; a team not listed is
        held to config.DEFAULT_MAX_WAITING."""

    @abc.abstractmethod
    def keep_team_terms(self, terms: Mapping[str, TeamTerms],
                        epoch: Optional[int] = None) -> None:
        """Replaces each team's quota, borrowing and weight with the lease holder's config's:
        its write, fenced by ``epoch``, made only when they changed."""

    @abc.abstractmethod
    def team_terms(self) -> KeptTerms:
        """Each team's quota, borrowing and weight as the lease holder last kept them (none
        before one has): what its passes hold the team to; a row it cannot read, in
        ``unread`` (that team's quota is not known)."""

    @abc.abstractmethod
    def keep_team_holds(self, holds: Mapping[str, Hold], epoch: Optional[int] = None) -> None:
        """Replaces what each team holds for one of its waiting jobs with a pass's
        (``PassResult.held``): the lease holder's write, fenced by ``epoch``, made only when
        they changed."""

    @abc.abstractmethod
    def team_holds(self) -> dict[str, Hold]:
        """What each team holds for one of its waiting jobs, as the lease holder's last pass
        decided (``fractui teams`` and the TUI's queue panel say it): a hold whose job no
        longer waits is one no pass has written over yet."""

    @abc.abstractmethod
    def keep_trouble(self, trouble: Optional[str], epoch: Optional[int] = None) -> None:
        """What fails the lease holder's passes now (None: they go fine again): the holder's
        write, fenced by ``epoch``; cleared when the lease changes hands."""

    @abc.abstractmethod
    def trouble(self) -> Optional[str]:
        """What fails the lease holder's passes, while a holder holds the lease and they fail:
        for the TUI's header and ``fractui jobs``."""

    @abc.abstractmethod
    def holder_memory(self) -> HolderMemory:
        """What the lease holders kept for the next one: read by a scheduler taking the lease."""

    @abc.abstractmethod
    def cordon(self, host: str, gpu: Optional[int], mode: str, actor: str,
               why: str) -> Cordon:
        """Takes ``host`` (``gpu`` None) or its GPU ``gpu`` out of service as ``mode`` (cordon,
        drain), replacing what was there for it (audited as the mode). A commit whose answer
        was lost is made again, answered with what the first made if it landed."""

    @abc.abstractmethod
    def uncordon(self, host: str, gpu: Optional[int], actor: str, why: str) -> list[Cordon]:
        """Puts them back in service: ``gpu`` None lifts the host's cordon and every one of its
        GPUs'; returns those lifted (audited ``uncordon`` when there were any). A commit
        whose answer was lost is made again, answered with what the first lifted if it
        landed."""

    @abc.abstractmethod
    def cordons(self) -> list[Cordon]:
        """Every host and GPU out of service, by host then GPU (the host's own first)."""

    @abc.abstractmethod
    def keep_usage(self, sampled: dict[tuple[int, int], Sampled],
                   epoch: Optional[int] = None) -> None:
        """What agents sampled so far of running attempts, by (job, attempt): the lease
        holder's write, fenced by ``epoch``."""

    @abc.abstractmethod
    def keep_gpu_time(self, rows: Sequence[GpuTime], epoch: Optional[int] = None) -> None:
        """Adds what the holder saw each GPU do to its time buckets (fenced by ``epoch``)."""

    @abc.abstractmethod
    def usage(self, since: float, until: float, to_now: bool = False) -> list[UsageRecord]:
        """Every attempt that held a slice at some time in [since, until), or ended at
        ``since`` (its outcome is the range's), by start; ``to_now``, the range reaches now
        (usage.report.reaches_now): also those whose host's clock, ahead, dated their start at
        ``until`` or after (the range's: usage.report.dated_in)."""

    @abc.abstractmethod
    def gpu_time(self, since: float, until: float) -> list[GpuTime]:
        """The GPU time buckets that begin in [since, until)."""

    @abc.abstractmethod
    def usage_begins(self) -> Optional[float]:
        """When the oldest usage kept begins (an attempt's start, or a GPU's first look in its
        time bucket, the bucket's start where that is not known), or where the retention last
        forgot usage where that is later (``prune_usage``: an attempt kept from before it ran
        on past it, and the others of that time are gone): where the store keeps anything,
        which a report's means over time start from. None when it keeps nothing."""

    @abc.abstractmethod
    def usage_forgotten_before(self) -> Optional[float]:
        """Where the retention last forgot usage (``prune_usage``), None where it never did:
        of a time before it, the store keeping nothing is not that no job held a GPU."""

    @abc.abstractmethod
    def prune_usage(self, before: float, epoch: Optional[int] = None) -> int:
        """Forgets usage that ended, and GPU time, before ``before`` (the retention), and
        keeps ``before`` as where it forgot where any went (``usage_begins``), never past the
        store's now; returns the rows forgotten. Fenced by ``epoch``."""

    @abc.abstractmethod
    def now(self) -> float:
        """The store's clock (the one its times are written by)."""

    @abc.abstractmethod
    def acquire_lease(self, holder: str, ttl_s: float) -> Optional[int]:
        """Takes or renews the scheduler lease for ``ttl_s`` from now (the database's clock);
        None while another holder's lease lasts. Returns the lease's epoch, which the holder's
        writes carry: taking the lease (from nobody, from another holder, or after a release)
        makes a new epoch, renewing it keeps it. Epochs start at 1."""

    @abc.abstractmethod
    def release_lease(self, holder: str) -> None:
        """Gives the lease up, if ``holder`` has it, so a standby takes over at once."""

    @abc.abstractmethod
    def lease_holder(self) -> Optional[tuple[str, float]]:
        """(holder, expires_at) of a lease that has not expired, or None."""

    @abc.abstractmethod
    def identity(self) -> Identity:
        """Who this store's connection acts as (see Identity)."""

    def hand_writers(self) -> Optional[str]:
        """Who besides the store's admins could write its rows by hand, past every check of
        intents (a job's ``run_as`` too), in words; None where no one can. No job of a store
        that says someone runs as the agent's user: its rows vouch for no admin."""
        return None

    def unvouched(self, job: Job) -> Optional[str]:
        """Why the lease holder never launches ``job`` (it fails it instead), or None where it
        may: the job would run as the agent's user (no ``run_as``), and the store's rows
        vouch for no admin (``hand_writers``). One rule for the launch and for a move, which
        would stop such a job only for its next attempt to fail."""
        if job.run_as is not None:
            return None
        writers = self.hand_writers()
        if writers is None:
            return None
        return ("it would run as the agent's user, and this store's rows vouch for no admin: "
                "%s, so anyone who can write it could have written this job; on such a store "
                "every job runs as its submitter (run_as), and an admin runs one as the "
                "agent's user with fractui launch" % writers)

    @abc.abstractmethod
    def version(self, topic: str) -> int:
        """A counter of ``topic``'s changes, moved in each change's transaction: what was read
        after the counter said N is still current while it says N."""

    @abc.abstractmethod
    def feed(self) -> Feed:
        """A new feed of this store's changes, made by any client, this one included."""

    @abc.abstractmethod
    def close(self) -> None:
        ...


__all__ = ["EVERYTHING", "FEED_WAIT_S", "Feed", "HOSTS", "Identity", "JOBS", "KeyTaken",
           "LEASE", "LOGS", "TOPICS", "JobNotFound", "LeaseLost", "QuotaTaken", "StateConflict",
           "Store", "StoreBusy", "StoreDamaged", "StoreDenied", "StoreError", "StoreExposed",
           "StoreForbidden", "StoreFull", "StoreReadOnly", "StoreUnavailable", "Slot",
           "WaitingFull"]
