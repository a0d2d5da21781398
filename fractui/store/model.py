"""What the store holds: jobs in queues, copies left on lost hosts, the audit trail, the hosts
and GPUs taken out of service."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, List, Optional, Tuple

from remote_agent.jobs.output import whole_characters

# A job's life in the store. `placed`: a decision is recorded and awaits the lease holder;
# `stopping`: a stop was sent (cancel, preemption, requeue) and its end is awaited.
PENDING, PLACED, RUNNING, STOPPING = "pending", "placed", "running", "stopping"
DONE, FAILED, CANCELLED = "done", "failed", "cancelled"
ACTIVE = (PENDING, PLACED, RUNNING, STOPPING)
ENDED = (DONE, FAILED, CANCELLED)
STATES = ACTIVE + ENDED
ON_HOST = (PLACED, RUNNING, STOPPING)  # holds (or is about to hold) a slice of a host
STOP_INTENTS = ("cancel", "requeue", "preempt")  # why a job is stopping
# An admin's move: stopped, then placed by hand on the slot it holds meanwhile (Job.move_to)
MOVE = "move"
# The stops under way that a cancel takes over, each of which would bring the job back
OVERRIDDEN_BY_CANCEL = ("requeue", "preempt", MOVE)
# GPUs: a quota's sums of charges (fractions) are compared to within this, so rounding never
# turns a placement that fits a quota exactly into one past it (the scheduler and the store
# compare alike)
QUOTA_EPSILON = 1e-9
START_NOT_KNOWN = "start not known"  # what a view says of a job's run where Job.start_unknown


def start_order(job: Job) -> tuple[bool, float, int]:
    """A job's place among others by its start, the newest last: one not started, or whose
    start is not known (Job.start_unknown), is the newest; then by number. The one order in
    which borrowed jobs are preempted (queueing._preempt) and a cut quota's jobs lent
    (quota.past_quota_jobs): the newest lose least work, and a start not known is claimed no
    more work than one just made."""
    return (job.started_at is None, job.started_at or 0.0, job.id)


def stops_offered(state: str, stop_intent: Optional[str] = None) -> tuple[str, ...]:
    """What may be asked of a job in ``state`` (stopping: for ``stop_intent``): cancel while
    it waits; cancel, requeue or preempt while it is placed or runs; cancel while a stop that
    would bring it back (a requeue, a preemption, a move) is under way: the stop becomes a
    cancel; nothing once a cancel is under way or it has ended. The one rule the store's
    refusals, the job screen, its palette and the CLI follow."""
    if state == PENDING:
        return ("cancel",)
    if state in (PLACED, RUNNING):
        return STOP_INTENTS
    if state == STOPPING and stop_intent in OVERRIDDEN_BY_CANCEL:
        return ("cancel",)
    return ()


def held_charge(charge: float, move_charge: Optional[float]) -> float:
    """What a job holds against its team's quota (Job.held_charge), from its slot's charge and
    the charge of the slot it moves to (None: it does not move)."""
    return charge if move_charge is None else max(charge, move_charge)


def held_within(charge: float, preemptible: bool, move_charge: Optional[float],
                move_borrowed: bool) -> float:
    """What of a job's held charge is within its team's quota (Job.held_within): each of its
    two slots counts where it is not borrowed (preemptible there), the larger of the two
    while it moves. A borrowed job moved to a slot within the quota holds that room within
    the quota while it stops, as it will once it runs there; a job moved within the quota to
    a borrowed slot holds only its own. One rule for the store's check and the scheduler's
    counts."""
    now = 0.0 if preemptible else charge
    return now if move_charge is None or move_borrowed else max(now, move_charge)


def adds_within(job: "Job", charge: float) -> float:
    """What placing ``job`` on a slot of ``charge`` adds to its team's use within the quota: the
    charge, less what a placed or running job lets go of as it moves there (its charge within
    the quota; nothing for a borrowed one). What a placement or a move by hand asks about."""
    return charge - (job.held_within if job.state in (PLACED, RUNNING) else 0.0)


def movable(state: str) -> bool:
    """Whether a job in ``state`` may be moved by hand: placed or running (a pending one is
    placed, not moved; a stop under way or an end leaves nothing to move)."""
    return state in (PLACED, RUNNING)


@dataclass(frozen=True)
class Slot:
    """Where a job runs: a host, its GPUs, and on each the slice (a MIG profile at a start, or
    a memory share in MiB). ``charge`` is what the team's quota is charged, in GPUs."""

    host: str
    gpus: tuple[int, ...] = ()
    profile: str | None = None
    start: int | None = None
    memory_mib: int | None = None
    charge: float = 0.0
    layout_version: str | None = None  # MIG: the layout a previewed plan was made against

    def describe(self) -> str:
        gpus = ",".join(str(g) for g in self.gpus)
        where = f"{self.host} gpu{gpus}" if gpus else self.host
        if self.profile:
            at = f" at slot {self.start}" if self.start is not None else ""
            return f"{where} {self.profile}{at}"
        if self.memory_mib:
            return f"{where} {self.memory_mib} MiB"
        return where

    def record(self) -> dict[str, Any]:
        return {"host": self.host, "gpus": list(self.gpus), "profile": self.profile,
                "start": self.start, "memory_mib": self.memory_mib, "charge": self.charge,
                "layout_version": self.layout_version}


def same_place(slot: Slot, asked: Slot) -> bool:
    """Whether ``slot`` is where ``asked`` names: its host and GPUs, and its profile, start and
    share where ``asked`` gives them."""
    return (slot.host, slot.gpus) == (asked.host, asked.gpus) and all(
        want is None or want == got for want, got in (
            (asked.profile, slot.profile), (asked.start, slot.start),
            (asked.memory_mib, slot.memory_mib)))


@dataclass(frozen=True)
class Refusal:
    """A launch a host refused (no room, a failing host): the job went back to its queue as
    its next attempt, avoiding that host for a while. ``words``: the agent's own; ``at``: the
    store's time (as the lease holder reads it), which the next holder counts the while to."""

    host: str
    words: str
    at: float
    kind: str = "capacity"  # the agent error's class (remote_agent.rpc.jsonrpc.ERROR_CLASSES)

    def describe(self) -> str:
        return f"{self.host}: {self.words}"

    def record(self) -> dict[str, Any]:
        return {"host": self.host, "words": self.words, "at": self.at, "kind": self.kind}


@dataclass(frozen=True)
class Job:
    """A job of the store. ``request`` is its queue's portion as it was at submit time (keys of
    a [[queues]] table), so later config edits never change a submitted job. ``env``: the
    variables added to its environment; ``image``: the container image it runs in (None: a bare
    process) — both given at submit (the image, else its queue's) and kept by every attempt."""

    id: int
    queue: str
    team: str | None
    name: str
    argv: tuple[str, ...]
    request: dict[str, Any]
    state: str
    submitted_at: float
    updated_at: float
    cwd: str | None = None
    reason: str | None = None
    attempt: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    slot: Slot | None = None
    preemptible: bool = False
    manual: bool = False
    agent_job: str | None = None
    exit_code: int | None = None
    stop_intent: str | None = None  # what a stop in flight leads to: cancel, requeue, preempt
    refusals: tuple[Refusal, ...] = ()  # launches hosts refused, oldest first (its attempts)
    env: dict[str, str] = field(default_factory=dict)
    image: str | None = None
    submitted_by: str | None = None  # the audit's actor of its submit (user@where)
    queued_at: float | None = None  # when it went back to wait after an attempt that started
    run_as: str | None = None  # the host user it runs as; None: the agent's own (an admin's)
    move_to: Slot | None = None  # stopping to move: the slot held for its next attempt
    move_borrowed: bool = False  # that attempt goes past its team's quota (preemptible)

    @property
    def waiting_since(self) -> float:
        """When its present wait began: its submit, or the end of its last attempt that
        started (a preemption or a requeue puts it back in its queue; its place in the queue
        stays its submit's)."""
        return self.submitted_at if self.queued_at is None else self.queued_at

    def waited(self, now: float) -> float:
        """How long its present wait has lasted at ``now``, none below 0: a job submitted from
        a machine whose clock runs ahead has waited 0. The one rule every view of a wait
        reads (``fractui jobs``, ``teams``, ``queues``, the report, the metrics)."""
        return max(0.0, now - self.waiting_since)

    def ran(self, now: float) -> float | None:
        """How long its attempt has run: to ``now`` while it runs or stops, to its end once it
        ended; None where it has not started (or never did), or runs with its start not known
        (``start_unknown``). The one rule every view of a run reads (``fractui jobs``, its
        ``--json``, the TUI's jobs view and job screen)."""
        if self.started_at is None or self.state not in (RUNNING, STOPPING) + ENDED:
            return None
        until = (self.ended_at if self.ended_at is not None else self.updated_at) \
            if self.state in ENDED else now
        return max(0.0, until - self.started_at)

    @property
    def start_unknown(self) -> bool:
        """Whether its attempt holds its slice with no start time known: a start its agent
        holds unread, or a launch answered ``starting`` not yet read as started
        (docs/decisions.md, "held starting"). Its views say ``START_NOT_KNOWN``, never a run
        (nor a wait) counted from its submit or requeue."""
        return self.holds_slice and self.started_at is None

    @property
    def requeued(self) -> bool:
        """Whether it stops to be requeued: the scheduler puts it back in its queue, so its
        team's bound on waiting jobs counts it as waiting already, as a pending one (what
        sql._within_bound and PostgreSQL's guard count; ``fractui teams`` and the TUI too)."""
        return self.state == STOPPING and self.stop_intent == "requeue"

    @property
    def holds_slice(self) -> bool:
        """Whether its attempt holds its slice now: started (its start recorded) and not let go
        — running, or stopping within its grace. Exactly the attempts whose usage record is
        open, so the metrics count what the report charges."""
        return self.state == RUNNING or (self.state == STOPPING and self.agent_job is not None)

    @property
    def held_charge(self) -> float:
        """What it holds against its team's quota: its slot's charge, and while it moves the
        larger of that and its target's (the old slice is held until it stops, the target
        until it runs there)."""
        return held_charge(self.slot.charge if self.slot is not None else 0.0,
                           self.move_to.charge if self.move_to is not None else None)

    @property
    def held_within(self) -> float:
        """What of ``held_charge`` is within its team's quota (the rest is borrowed)."""
        return held_within(self.slot.charge if self.slot is not None else 0.0,
                           self.preemptible,
                           self.move_to.charge if self.move_to is not None else None,
                           self.move_borrowed)

    def held_decision(self) -> "Job | None":
        """While it stops to move: the decision it then becomes, its next attempt placed by
        hand on the slot held for it (by that attempt's key), which is what holds that room
        meanwhile wherever the store's jobs are laid on the fleet; None otherwise."""
        if self.state != STOPPING or self.move_to is None:
            return None
        return replace(self, state=PLACED, attempt=self.attempt + 1, slot=self.move_to,
                       move_to=None, move_borrowed=False, agent_job=None, manual=True,
                       preemptible=self.move_borrowed)

    def holding(self) -> "tuple[Job, ...]":
        """The room it holds on the fleet, as the jobs that hold it: itself where it is on a
        host (placed, running or stopping, with its slot), and while it moves by hand its
        ``held_decision`` on the target too. The one reading of who holds a GPU, which every
        view of one goes through (fleetview.jobs_by_host, the drains, the MIG mode changes,
        status): each view that read ``slot`` alone read a move's target free."""
        mine = (self,) if self.state in ON_HOST and self.slot is not None else ()
        held = self.held_decision()
        return mine if held is None else mine + (held,)

    @property
    def user(self) -> str:
        """Who submitted it ("" where the store does not say: a row of before its audit)."""
        return submitter(self.submitted_by) if self.submitted_by else ""

    def key(self, store_uid: str) -> str:
        """The agent's idempotency key: the same attempt is never launched twice, and a
        requeued job (next attempt) is a new launch."""
        return f"fractui-{store_uid}-{self.id}.{self.attempt}"

    def record(self) -> dict[str, Any]:
        """The job as ``--json`` prints it (docs/cli.md)."""
        slot = self.slot
        return {"id": self.id, "queue": self.queue, "team": self.team, "name": self.name,
                "argv": list(self.argv), "cwd": self.cwd, "request": self.request,
                "state": self.state, "reason": self.reason, "attempt": self.attempt,
                "submitted_at": self.submitted_at, "updated_at": self.updated_at,
                "started_at": self.started_at, "ended_at": self.ended_at,
                "host": slot.host if slot else None, "gpus": list(slot.gpus) if slot else [],
                "profile": slot.profile if slot else None,
                "start": slot.start if slot else None,
                "memory_mib": slot.memory_mib if slot else None,
                "layout_version": slot.layout_version if slot else None,
                "charge": slot.charge if slot else 0.0, "preemptible": self.preemptible,
                "manual": self.manual, "agent_job": self.agent_job,
                "exit_code": self.exit_code, "refusals": [r.record() for r in self.refusals],
                "env": dict(self.env), "image": self.image, "submitted_by": self.submitted_by,
                "queued_at": self.queued_at, "run_as": self.run_as,
                "move_to": self.move_to.record() if self.move_to else None}


NUMBER_DIGITS = 19  # of a key's job or attempt: the store numbers them below 2 ** 63
JOB_MOST = 2 ** 63 - 1  # a job's largest number (SQLite's largest integer)


def attempt_of(key: str, store_uid: str) -> tuple[int, int] | None:
    """The (job id, attempt) an agent's key names where it is this store's (``Job.key``);
    None for another store's key, or one an admin chose for a launch by hand."""
    prefix = f"fractui-{store_uid}-"
    if not key.startswith(prefix):
        return None
    job, dot, attempt = key[len(prefix):].partition(".")
    if not (dot and all(n.isascii() and n.isdigit() and len(n) <= NUMBER_DIGITS
                        for n in (job, attempt))):
        return None  # (a number of more digits is no job's: an agent may send any)
    named = int(job), int(attempt)
    return named if max(named) <= JOB_MOST else None


@dataclass(frozen=True)
class StaleCopy:
    """A launch of a job on a host that was lost while it ran; stopped by key on return."""

    host: str
    key: str
    job: int
    since: float


@dataclass(frozen=True)
class ModeHold:
    """A GPU held back from MIG mode changes after one failed (fractui.scheduler.backoff):
    the failures in a row, and until when, by the store's clock (the lease holder's, plus the
    store's lead on it): every reader counts it to the store's time (``Store.now``)."""

    failures: int
    until: float

    def left(self, now: float) -> float:
        """How long the hold still runs at ``now`` (0: it has ended)."""
        return max(0.0, self.until - now)


@dataclass(frozen=True)
class Hold:
    """Quota a team holds for one of its waiting jobs (the scheduler's pass,
    ``sched.queueing``): what that job's slot charges (the least it could, where no slot was
    found), out of reach of the team's jobs after it; and where it found no room at all, the
    ``host`` where most is free for it, which they keep off. The lease holder keeps each
    pass's in the store, where ``fractui teams`` and the TUI read them."""

    job: int
    charge: float
    host: Optional[str] = None


@dataclass(frozen=True)
class TeamTerms:
    """A team's quota as the lease holder's config gives it (``[[teams]]``): what its passes
    hold the team to. The holder keeps them in the store, so that ``fractui teams`` shows the
    quota enforced, not the one of the reader's config, which may be an old copy."""

    quota_gpus: float
    over_quota: bool
    weight: float


class KeptTerms(dict[str, TeamTerms]):
    """The teams' terms as the store keeps them (``Store.team_terms``), those it can read,
    ``unread``: each team whose row holds what fractui never writes, with why in words that
    name the store and the row — or whose row is missing though the lease holder wrote it
    (deleted by hand) —, ``written``: whether a lease holder has written them, none included
    (its config has no ``[[teams]]``), and ``listed``: whether the store knows which teams it
    wrote (a mark of before it did names none, and one written under another take of the
    lease than the one now is not of the rows there — an older fractui's write of them leaves
    it as it was: a deleted row is not told then). Such a team's
    quota is not known — never "none": the lease holder holds it to its config's, and
    writes the row again at its next pass."""

    def __init__(self, terms: Optional[dict[str, TeamTerms]] = None,
                 unread: Optional[dict[str, str]] = None, written: bool = False,
                 listed: bool = False):
        super().__init__(terms or {})
        self.unread: dict[str, str] = dict(unread or {})
        self.written = written
        self.listed = listed

    def any(self) -> bool:
        """Whether a lease holder has kept terms (a row, read or not; or none, written so):
        until one has, a reader holds the teams to its own config's."""
        return self.written or bool(self) or bool(self.unread)

    def none(self) -> bool:
        """Whether the lease holder keeps terms and there are none: its config has no
        ``[[teams]]``, so its passes hold no team to a quota and rank none (every job is
        placed by its queue's priority and its age), where before any holder kept terms a
        reader holds the teams to its own config's."""
        return self.any() and not self and not self.unread


@dataclass(frozen=True)
class Quota:
    """The quota a placement by hand is held to as it is written (``Store.place``'s and
    ``Store.move``'s ``quota``), and whose it is in words (``sched.quota.HeldTo``): the write
    that refuses it says which quota it counted against."""

    gpus: float
    whose: str


@dataclass(frozen=True)
class HolderMemory:
    """What a lease holder remembers that its successor must go on from, kept in the store so a
    standby that takes over continues it: when each host was first seen unreachable
    (``hosts_away``) and each job's GPU first seen missing (``gpus_gone``), by the store's
    clock (as the holders read it: the next may run on another machine) — the lost-host
    timers behind ``host_lost_s`` —, the stops already sent, as (host, key), so none is sent
    twice, and the GPUs held back from mode changes, by UUID."""

    hosts_away: dict[str, float]
    gpus_gone: dict[int, float]
    stops_sent: frozenset[tuple[str, str]]
    mode_holds: dict[str, ModeHold] = field(default_factory=dict)


# How an admin takes a host or a GPU out of service: both keep new work off it and leave what
# runs there running; a drain is also said "drained" once nothing is left on it.
CORDON, DRAIN = "cordon", "drain"
CORDON_MODES = (CORDON, DRAIN)
WHOLE_HOST = -1  # a cordon's ``gpu`` as the store keeps it for the whole host


@dataclass(frozen=True)
class Cordon:
    """A host (``gpu`` None) or one GPU of it taken out of service by ``actor``, since when."""

    host: str
    gpu: int | None
    mode: str
    actor: str
    why: str
    since: float

    def where(self) -> str:
        return self.host if self.gpu is None else "%s gpu%d" % (self.host, self.gpu)

    def record(self) -> dict[str, Any]:
        return {"host": self.host, "gpu": self.gpu, "mode": self.mode, "actor": self.actor,
                "why": self.why, "since": self.since}


@dataclass(frozen=True)
class AuditEntry:
    id: int
    time: float
    actor: str
    action: str
    job: int | None
    why: str
    detail: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "time": self.time, "actor": self.actor, "action": self.action,
                "job": self.job, "why": self.why, "detail": self.detail}


@dataclass(frozen=True)
class LogTail:
    """The end of a job's output as the lease holder last read it from the job's agent: at
    most LOG_TAIL_BYTES of it, cut between lines. ``complete``: the job had ended, so this
    is the end of its output. ``offset``: where ``text`` ends in the job's current log (the
    agent's job.logs offset), its UTF-8 being the log's bytes before it one for one (a byte
    that is no UTF-8 kept as "?"), so a follower prints exactly what is new; None where it was
    kept as lines (an agent without job.logs.bytes: a line end added, bytes decoded).
    ``whole``: ``text`` is the output from its first byte (all of it was read); ``offset``
    alone cannot say so, as the current log is not all of it once it rotated."""

    job: int
    text: str
    complete: bool
    kept_at: float
    offset: Optional[int] = None
    whole: bool = False


# The lease holder's mark on the facts kept of a host out of its config (true): until they are
# forgotten (host_lost_s), a submit that judges by the hosts the store keeps counts it no more.
# The store knows it: the time the facts were recorded is theirs, not the mark's.
OUT_OF_CONFIG = "out_of_config"

LOG_TAIL_BYTES = 64 * 1024


def tail_text(lines: list[str], limit: int = LOG_TAIL_BYTES) -> str:
    """The last lines of a job's output that fit in ``limit`` bytes of UTF-8, whole lines
    only — but for a last line longer than all of it, whose end is kept, cut between two
    characters."""
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        need = len(line.encode("utf-8")) + 1
        if size + need > limit:
            if not kept:
                kept.append(line.encode("utf-8")[-(limit - 1):].decode("utf-8", "ignore"))
            break
        kept.append(line)
        size += need
    return "".join(line + "\n" for line in reversed(kept))


def tail_bytes(data: bytes, whole: bool, ended: bool,
               limit: int = LOG_TAIL_BYTES) -> tuple[str, int]:
    """The end of a log that fits in ``limit`` bytes, ``data`` being its last bytes (``whole``:
    all of it, so its first byte starts a line): from the first line start in it, unless one
    line is longer than all of it (its end is kept, from a character's start). Returns the
    text and how many bytes at ``data``'s end it leaves out: of a running job's output, a
    character written in part (the rest is to come), so that a later tail goes on exactly
    where this one ends. Each byte that is no UTF-8, and each NUL, reads "?", so the text's
    UTF-8 is exactly as long as the bytes it stands for."""
    cut = 0 if ended else len(data) - whole_characters(data)
    kept = data[:len(data) - cut]
    starts_line = whole
    if len(kept) > limit:
        starts_line = kept[-limit - 1] == 0x0A
        kept = kept[-limit:]
    if not starts_line:
        start = kept.find(b"\n") + 1
        kept = kept[start:] if 0 < start < len(kept) else kept[_continued(kept):]
    return storable(kept.decode("utf-8", errors="surrogateescape")), cut


def storable(text: str) -> str:
    """``text`` as every store keeps it: each NUL and each lone surrogate read "?" (a byte that
    is no UTF-8, as surrogateescape reads it, is one; JSON lets a host send any). Text on
    PostgreSQL holds no NUL, and neither driver can send a lone surrogate: a job that wrote a
    NUL had its tail refused at every read, and a host's words with one were refused."""
    return _UNSTORABLE.sub("?", text)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _continued(data: bytes) -> int:
    """How many bytes ``data`` starts with that continue a character begun before it."""
    n = 0
    while n < min(3, len(data)) and 0x80 <= data[n] < 0xC0:
        n += 1
    return n


# How an attempt that held a slice ended: a job's end, its leaving the host to wait again, or,
# for a late copy (a launch that reached its agent after the store moved past its attempt),
# killed by the lease holder.
REQUEUED, PREEMPTED, LATE = "requeued", "preempted", "late"
OUTCOMES = ENDED + (REQUEUED, PREEMPTED, LATE)


@dataclass(frozen=True)
class Sampled:
    """What the job's agent sampled of an attempt (the agent job record's ``usage``), kept as
    aggregates: GPU memory in use (peak and mean MiB) and SM utilisation (mean percent of one
    GPU, None where NVML gives none — MIG — with ``util_note`` saying so)."""

    samples: int = 0
    since: float | None = None
    until: float | None = None
    memory_peak_mib: int | None = None
    memory_mean_mib: float | None = None
    util_samples: int = 0
    util_mean: float | None = None
    util_note: str | None = None

    @classmethod
    def of(cls, usage: Any) -> "Sampled | None":
        """The agent's ``usage`` dict read as far as it is well formed; None for none. An
        agent's words are never trusted to be of the right type."""
        if not isinstance(usage, dict):
            return None

        def num(key: str, kind: type) -> Any:
            value = usage.get(key)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
            return kind(value) if ok and value == value and value != float("inf") else None

        note = usage.get("util_note")
        return cls(samples=num("samples", int) or 0, since=num("since", float),
                   until=num("until", float), memory_peak_mib=num("memory_peak_mib", int),
                   memory_mean_mib=num("memory_mean_mib", float),
                   util_samples=num("util_samples", int) or 0,
                   util_mean=num("util_mean", float),
                   util_note=note[:200] if isinstance(note, str) else None)


@dataclass(frozen=True)
class UsageRecord:
    """One attempt of a job that held a slice: what it held (``charge`` GPUs of ``host``'s
    ``gpus``, a MIG ``profile`` or a ``memory_mib`` share) from ``started_at`` to ``ended_at``
    (None while it holds it), how long it waited first (from ``queued_at``), how it ended
    (``outcome``, one of OUTCOMES; None while it runs), and what its agent sampled."""

    job: int
    attempt: int
    team: str | None
    queue: str
    user: str
    host: str
    gpus: tuple[int, ...]
    model: str | None
    profile: str | None
    memory_mib: int | None
    charge: float
    queued_at: float
    started_at: float
    ended_at: float | None = None
    outcome: str | None = None
    sampled: Sampled = field(default_factory=Sampled)

    @property
    def waited_s(self) -> float:
        return max(0.0, self.started_at - self.queued_at)

    @property
    def waits(self) -> bool:
        """Whether the attempt counts among the waits: a late copy served no one's wait (the
        attempt that counts is another, or the job ended without it)."""
        return self.outcome != LATE

    def record(self) -> dict[str, Any]:
        s = self.sampled
        return {"job": self.job, "attempt": self.attempt, "team": self.team,
                "queue": self.queue, "user": self.user, "host": self.host,
                "gpus": list(self.gpus), "model": self.model, "profile": self.profile,
                "memory_mib": self.memory_mib, "charge": self.charge,
                "queued_at": self.queued_at, "started_at": self.started_at,
                "ended_at": self.ended_at, "outcome": self.outcome,
                "samples": s.samples, "memory_peak_mib": s.memory_peak_mib,
                "memory_mean_mib": s.memory_mean_mib, "util_mean": s.util_mean,
                "util_note": s.util_note}


@dataclass(frozen=True)
class LateCopy:
    """A late copy of ``job``'s ``attempt`` that ran on ``host`` from ``started_at`` to
    ``ended_at``, as its agent recorded it: what it held (as a UsageRecord's fields say) and
    what its agent sampled — charged to its job's team as the attempt's usage (``LATE``)."""

    job: int
    attempt: int
    host: str
    gpus: tuple[int, ...]
    model: str | None
    profile: str | None
    memory_mib: int | None
    charge: float
    started_at: float
    ended_at: float
    sampled: Sampled = field(default_factory=Sampled)

    def describe(self) -> str:
        gpus = ",".join(str(g) for g in self.gpus)
        slice_ = self.profile or ("%d MiB" % self.memory_mib if self.memory_mib else "")
        return "a late copy of attempt %d ran on %s gpu%s%s for %.0f s until the lease " \
               "holder killed it: its %.2f GPUs charged to its team" % (
                   self.attempt, self.host, gpus, " " + slice_ if slice_ else "",
                   self.ended_at - self.started_at, self.charge)


Spans = Tuple[Tuple[float, float], ...]
"""Stretches of time, (from, to) each, in order and apart."""

MOST_SPANS = 32
"""The most stretches a GPU's bucket keeps (about 1.3 KB of JSON): a host that comes and goes
every few looks all day would make thousands, each write reading and writing them all."""


def spans_over(a: Optional[Spans], b: Optional[Spans]) -> Optional[Spans]:
    """The stretches of a GPU's bucket seen in either of two sums, in order, those that meet
    or overlap made one, and past MOST_SPANS the two nearest made one (the gap between read
    as seen, as where no stretches are kept: the least time said seen that was not); not
    known (None) where either is not (a bucket kept before they were)."""
    if a is None or b is None:
        return None
    out: List[Tuple[float, float]] = []
    for start, end in sorted(tuple(a) + tuple(b)):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    while len(out) > MOST_SPANS:
        i = min(range(len(out) - 1), key=lambda i: out[i + 1][0] - out[i][1])
        out[i:i + 2] = [(out[i][0], out[i + 1][1])]
    return tuple(out)


@dataclass(frozen=True)
class GpuTime:
    """What one GPU did in one time bucket (starting at ``bucket``): seconds it was seen online,
    seconds nothing was on it, GPU-seconds charged to jobs on it, and its own utilisation
    (``util_s``: busy-seconds, out of ``measured_s`` seconds NVML reported it for).
    ``seen_from`` and ``seen_to``: when in the bucket the time counted begins and ends, so a
    range that cuts the bucket counts the part of it that was there (None: not known, a bucket
    kept before they were, read as spread over the bucket). ``seen_spans``: each stretch of
    it the GPU was seen, in order, apart (a host away between two, a paused holder), so a
    range in such a gap counts none of it (None: not known, a bucket kept before they were,
    read as spread from ``seen_from`` to ``seen_to``)."""

    host: str
    gpu: int
    bucket: float
    model: str | None = None
    online_s: float = 0.0
    idle_s: float = 0.0
    held_s: float = 0.0
    util_s: float = 0.0
    measured_s: float = 0.0
    seen_from: float | None = None
    seen_to: float | None = None
    seen_spans: Spans | None = None



def submitter(actor: str) -> str:
    """The user an audit actor names: ``alice@where`` is alice, and a role with an ``@`` of its
    own (``ann@corp@where``) is ``ann@corp``: the asker's where (a host name) holds none."""
    return actor.rsplit("@", 1)[0]
