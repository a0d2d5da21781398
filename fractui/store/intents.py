"""What users ask of queued jobs — submit, place here, move there, cancel, requeue, preempt —
and of the fleet — cordon, drain, uncordon a host or a GPU — recorded in the store for the
lease holder to carry out. Shared by the CLI and the TUI, so both mean the same, and the one
place where who may ask what is checked (fractui.store.access), by the store's word on who
asks, never the asker's own.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from fractui.store.access import (CANCEL, CORDON, MOVE, PLACE, PREEMPT, READ, REQUEUE, SUBMIT,
                                  Roster, Team, check, refusal)
from fractui.store.base import Identity, QuotaTaken, StateConflict, Store
from fractui.store.model import (CANCELLED, CORDON_MODES, FAILED, MOVE as MOVING, ON_HOST, PENDING,
                                 PLACED, RUNNING, STOP_INTENTS, STOPPING, AuditEntry, Cordon,
                                 Job, Quota, Slot, movable, same_place, stops_offered, submitter)
from fractui.words import printable

_DONE = {CANCEL: "cancelled", REQUEUE: "requeued", PREEMPT: "preempted"}
# How often a stop is asked of a job that keeps moving under it: a pass moves a job one step
# (placed, running, or back to pending), so three reads see it settle unless it bounces
_STOP_TRIES = 3
# What moves a job along its attempts, as its audit entries name the moves (a MIG change or a
# stale copy's stop in between moves nothing)
_ASKS = frozenset(STOP_INTENTS) | {MOVING}  # a user's asks that send a job on, carried out
_NEXT = frozenset({"requeued", "moved"})  # what a next attempt begins with, as audited
_MOVES = _ASKS | _NEXT | {"submit", "decide", "place", "launch"}
_LOOK_BACK = 50  # of a job's newest audit entries: its last attempt's moves are among them


class Refused(Exception):
    """The job is not in a state where that can be asked; the message says why."""


@dataclass(frozen=True)
class Asker:
    """What the asking side adds to a request: where it comes from (this machine, "(tui)") and
    the config's team members, for a store that keeps none. Never who asks: that is the
    store's word (Store.identity), which the asker cannot forge."""

    where: str
    roster: Roster = field(default_factory=Roster)

    @classmethod
    def here(cls, teams: Iterable[Team], tui: bool = False) -> "Asker":
        return cls(machine() + (" (tui)" if tui else ""), Roster.of(teams))


def machine() -> str:
    """This machine's name as an actor's where: the kernel's, which any user may set to any
    bytes in namespaces of their own (``unshare -Ur -u``), so each ``@`` (an actor's user is
    read before its last one: model.submitter) and each character not printable is "?"."""
    return printable(socket.gethostname()).replace("@", "?")


def authorize(store: Store, asker: Asker, action: str, team: Optional[str] = None,
              what: str = "") -> str:
    """The actor the audit names (the store's user, @ where the asker is), once the rule lets
    the store's identity do ``action``; access.Denied, saying who and what role, if not."""
    return _authorized(store, asker, action, team, what)[1]


def _authorized(store: Store, asker: Asker, action: str, team: Optional[str],
                what: str) -> tuple[Identity, str]:
    identity = store.identity()
    check(identity, asker.roster, action, team, what)
    return identity, "%s@%s" % (identity.user, asker.where)


def last_lines(store: Store, asker: Asker, jobs: Iterable[Job],
               reads: Optional[Callable[[Optional[str]], bool]] = None) -> dict[int, str]:
    """The last line kept of each job of ``jobs`` that failed with an exit code and whose
    output the store's identity may read (READ, the rule ``logs`` keeps), read at once: a
    job's output is its team's and the admins', never every reader's of the jobs. ``reads``:
    the reader's rule (``output_reader``) where the caller has read it already."""
    failed = [j for j in jobs if j.state == FAILED and j.exit_code]
    if not failed:  # (no read of who asks either: the job screen asks each second)
        return {}
    reads = reads or output_reader(store, asker)
    return store.last_lines({j.id for j in failed if reads(j.team)})


def readable(store: Store, asker: Asker, jobs: Iterable[Job]) -> set[int]:
    """The numbers of the jobs of ``jobs`` whose output the store's identity may read (READ of
    each one's team, as ``logs`` asks): theirs alone are shown their last line, argv and env
    (job_commands.shown)."""
    reads = output_reader(store, asker)
    return {j.id for j in jobs if reads(j.team)}


def output_reader(store: Store, asker: Asker) -> Callable[[Optional[str]], bool]:
    """Whether the store's identity may read the output of a job of a team (None: of no team,
    the admins'), its identity read once."""
    identity = store.identity()
    return lambda team: refusal(identity, asker.roster, READ, team) is None


def reads_host_output(store: Store, asker: Asker) -> bool:
    """Whether the store's identity may read the output of the jobs the hosts' agents list (a
    failed one's ``last_line``): READ of no team, the admins'. An agent's record is its host's
    word, which the store does not vouch for: a job launched there by hand is an admin's
    launch, and a queued job's attempt is read by its number (``last_lines``, ``logs JOB``)
    under its team's rule, from what the lease holder kept. ``jobs HOST`` and ``status`` show
    a line by it; ``logs HOST/JOB`` asks the same of a job the store does not hold running
    there (job_commands.typed_ref)."""
    return allowed(store, asker, READ)


def allowed(store: Store, asker: Asker, action: str, team: Optional[str] = None) -> bool:
    """Whether the store's identity may do ``action``: for what is offered rather than done (a
    TUI runs no scheduler for a user who may not run one)."""
    return refusal(store.identity(), asker.roster, action, team) is None


def submit(store: Store, queue: str, team: Optional[str], name: str, argv: Sequence[str],
           request: dict[str, Any], asker: Asker, cwd: Optional[str] = None,
           env: Optional[Mapping[str, str]] = None, image: Optional[str] = None,
           key: Optional[str] = None) -> Job:
    """A new pending job in ``queue``, charged to ``team``; what it runs (argv, env, image)
    is the submitter's to give, under the one check of who may submit to that team. ``key``:
    the submitter's own name for this submit, so that making it again finds its job. A team
    member's job runs on the hosts as the member (``run_as``), never with the agent's rights,
    which may be root's; an admin's as the agent's user, as an admin's launch does, except on
    a store others can write by hand (whose rows vouch for no admin): there as the admin.
    A member's submit is held to the team's bound on waiting jobs (WaitingFull); an admin's
    is not."""
    identity, actor = _authorized(store, asker, SUBMIT, team, "to queue %s" % queue)
    as_agent = identity.admin and store.hand_writers() is None
    return store.submit(queue, team, name, argv, request, actor, cwd=cwd, env=env, image=image,
                        key=None if key is None else submit_key(actor, key),
                        run_as=None if as_agent else identity.user,
                        bounded_as=None if identity.admin else identity.user)


def submit_key(actor: str, key: str) -> str:
    """A submit's key as the store keeps it: scoped by its submitter (the actor's user, before
    the ``@`` where they asked from), length first so no user's key reads as another's; the
    PostgreSQL guard holds a team member to their own role's."""
    user = submitter(actor)
    return "%d:%s:%s" % (len(user), user, key)


def ask_stop(store: Store, job: Job, intent: str, asker: Asker) -> Job:
    """Cancel, requeue or preempt. A pending job is cancelled at once; a placed or running one
    becomes ``stopping`` and the scheduler stops it (requeue and preempt put it back in its
    queue as a new attempt; the audit tells them apart). A cancel of a job stopping to come
    back (requeued, preempted, moved) takes that stop over: it ends cancelled, never back in
    its queue or on a move's slot (model.stops_offered). ``job`` is as the caller read it: one
    the scheduler moved since (a cancel racing its placement) is asked again as it is now, so
    a cancel is never refused only because the job was placed meanwhile, and then launched.
    A requeue or preemption is of the attempt read only (_moved_on). A member's requeue is
    held to her team's bound on waiting jobs as her submit is (WaitingFull); an admin's, and
    the scheduler's own (a host lost, a preemption), are not."""
    if intent not in STOP_INTENTS:
        raise ValueError("unknown intent %r" % intent)
    identity, actor = _authorized(store, asker, intent, job.team, "job %d" % job.id)
    # a member's requeue puts a job back to wait, as a submit does: held to the same bound
    bounded_as = None if identity.admin or intent != REQUEUE else identity.user
    why = stop_why(intent, actor)
    # a cancel is of the job, whatever its attempt; the others of the attempt the user saw
    seen = None if intent == CANCEL else job.attempt
    tries = 1
    while True:  # (a retry whose first answer was lost, the store's or the user's): done
        if seen is not None and job.attempt != seen:
            return _moved_on(store, job, seen, intent, submitter(actor),
                             stop_refusal(job, intent))
        if asked_already(job, intent) or _sent_back(store, job, intent, submitter(actor)):
            return job
        refused = stop_refusal(job, intent)
        if refused:
            raise Refused(refused)
        try:
            if job.state == PENDING:
                return store.ended(job.id, (PENDING,), CANCELLED, why, actor, why, CANCEL,
                                   again=True)
            return store.stopping(job.id, ON_HOST, intent, actor, why, attempt=seen,
                                  bounded_as=bounded_as)
        except StateConflict as err:
            if tries == _STOP_TRIES:
                raise Refused("job %d changed meanwhile: %s" % (job.id, err)) from None
        # the job moved since it was read (the scheduler placed, launched or requeued it):
        # what was asked is asked of it as it is now, if it still may be
        tries += 1
        job = store.get(job.id)


def stop_why(intent: str, actor: str) -> str:
    """The reason ``ask_stop`` records of ``intent`` asked by ``actor`` (``authorize``'s): a
    job's once it ends by that ask, which tells it from one another's ask ended."""
    return "%s by %s" % (_DONE[intent], actor)


def _moved_on(store: Store, job: Job, seen: int, intent: str, user: str,
              refused: Optional[str]) -> Job:
    """``job``, a later attempt than the ``seen`` one ``intent`` (requeue, preempt, move,
    place) was asked of: done if ``user``'s own ask of it is what moved that attempt on (a
    first try whose answer was lost, then carried out), per the audit; else Refused, for what
    the job is now (``refused``) or saying what changed: the user never saw this attempt, and
    stopping or placing it would act on what they did not judge."""
    ask = _ended_by(seen, store.audit_log(job.id, _LOOK_BACK))
    if ask is not None and ask.action == intent and submitter(ask.actor) == user:
        return job
    if refused:
        raise Refused(refused)
    by = "" if ask is None else " by %s's %s" % (submitter(ask.actor), ask.action)
    raise Refused("job %d moved on since it was read: it is attempt %d now (%s), sent on from "
                  "attempt %d%s; nothing done: %s it again to %s it as it is now" % (
                      job.id, job.attempt, job.state, seen, by, intent, intent))


def asked_already(job: Job, intent: str) -> bool:
    """Whether ``job`` is already where ``intent`` takes it: cancelled, or stopping for that
    intent. Asking again is then answered as the first ask was, so a retry is harmless."""
    return (intent == CANCEL and job.state == CANCELLED) or (
        job.state == STOPPING and job.stop_intent == intent)


def _sent_back(store: Store, job: Job, intent: str, user: str) -> bool:
    """Whether ``job`` waits since ``user``'s own ``intent`` (a requeue or a preemption) was
    carried out — in its queue, or placed again and not yet started: asked again, that is
    answered as done, as a stop still under way is (a second requeue of the attempt the
    first made, before it ran, would only throw it away). Another's, or a wait for another
    reason (never run, a launch refused), is not; nor an attempt that started since."""
    if job.state not in (PENDING, PLACED) or intent == CANCEL:
        return False
    stop = _sent_back_by(job, store.audit_log(job.id, _LOOK_BACK))
    return stop is not None and stop.action == intent and submitter(stop.actor) == user


def _sent_back_by(job: Job, entries: Sequence[AuditEntry]) -> Optional[AuditEntry]:
    """The stop asked of ``job`` (a requeue or a preemption) whose carrying out, or its host
    lost meanwhile, put it back in its queue as the attempt it is now, from its audit
    ``entries`` (oldest first); None if that attempt began otherwise or is not among them."""
    ask = _ended_by(job.attempt - 1, entries)
    return ask if ask is not None and ask.action in STOP_INTENTS else None


def _ended_by(attempt: int, entries: Sequence[AuditEntry]) -> Optional[AuditEntry]:
    """The ask (a stop or a move) whose carrying out, or its host lost meanwhile, ended
    ``attempt`` and began the next, from a job's audit ``entries`` (oldest first); None if
    that attempt ended otherwise (a launch refused, a lost host alone) or is not among them.
    A start recorded after the ask (``launch``: it landed while the launch was in flight) is
    of the attempt stopped: it leaves the ask the move that sent it on."""
    last, found = None, None
    for entry in entries:
        if entry.action not in _MOVES:
            continue
        if entry.action in _NEXT and entry.detail.get("attempt") == attempt + 1:
            found = last if last is not None and last.action in _ASKS else None
        if entry.action == "launch" and last is not None and last.action in _ASKS:
            continue
        last = entry
    return found


def as_it_is(job: Job) -> str:
    """``job``'s state in words, as each refusal of what is asked of it begins (the CLI's
    verbs, the job screen): a stop under way says what it leads to, never a bare "stopping",
    which reads as the job ending."""
    if job.state != STOPPING or job.stop_intent is None:
        return "job %d is %s" % (job.id, job.state)
    if job.stop_intent == MOVING and job.move_to is not None:
        return "job %d is stopping to be moved to %s (an admin's move: once stopped, it is " \
            "placed there, to run again)" % (job.id, job.move_to.describe())
    return "job %d is stopping to be %s%s" % (
        job.id, _DONE.get(job.stop_intent, job.stop_intent),
        "" if job.stop_intent == CANCEL else " (once stopped, it goes back to its queue)")


def stop_refusal(job: Job, intent: str) -> Optional[str]:
    """Why ``intent`` cannot be asked of ``job`` as it is (model.stops_offered), or None."""
    if intent in stops_offered(job.state, job.stop_intent):
        return None
    if job.state == STOPPING and job.stop_intent == MOVING:  # placed there, it may be asked
        return "%s: %s it then" % (as_it_is(job), intent)
    return "%s: nothing to %s" % (as_it_is(job), intent)


def place_by_hand(store: Store, job: Job, slot: Slot, asker: Asker,
                  past_quota: Optional[str] = None, quota: Optional[Quota] = None) -> Job:
    """Records a manual placement; the lease holder launches it exactly there. ``past_quota``:
    why it takes its team past its quota (the admin agreed): it is then recorded as borrowed,
    preemptible like any over-quota job. Else ``quota``, the team's (None: no quotas), is
    checked again as the placement is written: one that another placement of the team (the
    scheduler's, another admin's) took meanwhile is refused, whose quota it is said, for the
    admin to be asked.
    ``job`` is as the caller read it: only that attempt is placed (_moved_on), so a late or
    retried placement never places a later one (run and requeued since) the admin never saw;
    that attempt placed there already (a retry whose first answer was lost) is done."""
    actor = authorize(store, asker, PLACE, job.team, "job %d" % job.id)
    why = "placed by hand on %s" % slot.describe()
    if past_quota:
        why += "; it %s, so it is borrowed (preemptible)" % past_quota
    try:
        return store.place(job.id, slot, actor, why, manual=True,
                           preemptible=past_quota is not None,
                           quota=quota.gpus if quota is not None else None, attempt=job.attempt)
    except QuotaTaken as err:
        raise Refused(_quota_taken(err, quota, "place")) from None
    except StateConflict:
        now = store.get(job.id)
        refused = "only a pending job can be placed: %s" % as_it_is(now)
        if now.attempt != job.attempt:
            return _moved_on(store, now, job.attempt, PLACE, submitter(actor),
                             None if now.state == PENDING else refused)
        if placed_there(now, slot.host, slot.gpus, slot.profile):
            return now
        raise Refused(refused) from None


def move_by_hand(store: Store, job: Job, slot: Slot, asker: Asker,
                 past_quota: Optional[str] = None, quota: Optional[Quota] = None) -> Job:
    """An admin's move of a placed or running job to ``slot`` (a preview's, complete: the
    room it holds is known), one intent: the lease holder stops it (its grace) and then
    places it there by hand in one write, holding the slot meanwhile, so neither it nor
    another admin places it elsewhere in between. ``past_quota``/``quota`` as
    ``place_by_hand``'s. Asked again of a job stopping to move there, or placed or running
    there already (the move done), it is answered as done. ``job`` is as the caller read it:
    one the scheduler launched since is asked again as it is now."""
    actor = authorize(store, asker, MOVE, job.team, "job %d" % job.id)
    slot = Slot(slot.host, slot.gpus, slot.profile, slot.start, slot.memory_mib, slot.charge)
    why = "moving by %s from %s to %s" % (
        actor, job.slot.describe() if job.slot else "its queue", slot.describe())
    if past_quota:
        why += "; it %s, so it is borrowed there (preemptible)" % past_quota
    seen, tries = job.attempt, 1  # (of the attempt read only: _moved_on)
    while True:
        if job.attempt != seen:
            return _moved_on(store, job, seen, MOVE, submitter(actor),
                             None if movable(job.state) else move_refusal(job))
        if moving_to(job, slot) or there(job, slot):
            return job
        if not movable(job.state):
            raise Refused(move_refusal(job))
        unlaunched = unmoved_by_store(store, job)
        if unlaunched is not None:
            raise Refused(unlaunched)
        try:
            return store.move(job.id, slot, actor, why, borrowed=past_quota is not None,
                              quota=quota.gpus if quota is not None else None, attempt=seen)
        except QuotaTaken as err:
            raise Refused(_quota_taken(err, quota, "move")) from None
        except StateConflict as err:
            if tries == _STOP_TRIES:
                raise Refused("job %d changed meanwhile: %s" % (job.id, err)) from None
        tries += 1
        job = store.get(job.id)  # moved on since it was read (launched, stopped, ended)


def _quota_taken(err: QuotaTaken, quota: Optional[Quota], verb: str) -> str:
    """What a placement or move by hand the store refused for its team's quota says: the
    store's why, whose quota it counted against, and how to be asked about borrowing."""
    return "%s; counted against %s; %s it again to be asked about going past the quota" % (
        err, quota.whose if quota is not None else "its quota", verb)


def move_refusal(job: Job) -> str:
    """Why ``job`` as it is cannot be moved (model.movable)."""
    if job.state == PENDING:
        return "job %d is pending: it is placed, not moved (fractui place, or p)" % job.id
    return "%s: only a placed or running job is moved" % as_it_is(job)


def unmoved_by_store(store: Store, job: Job) -> Optional[str]:
    """Why ``job`` is not moved although it could be stopped: the lease holder would fail its
    next attempt, not launch it (``Store.unvouched``), so a move would only end it; or None."""
    why = store.unvouched(job)
    if why is None:
        return None
    return "job %d is not moved: stopped, its next attempt would be failed, not launched: " \
        "%s; it runs on where it is" % (job.id, why)


def moving_to(job: Job, asked: Slot) -> bool:
    """Whether ``job`` is stopping to move where ``asked`` names (a retry's first ask landed)."""
    return job.state == STOPPING and job.stop_intent == MOVING and job.move_to is not None \
        and same_place(job.move_to, asked)


def there(job: Job, asked: Slot) -> bool:
    """Whether ``job`` is placed or running where ``asked`` names: a move there is done."""
    return job.state in (PLACED, RUNNING) and job.slot is not None and \
        same_place(job.slot, asked)


def placed_there(job: Job, host: str, gpus: Sequence[int], profile: Optional[str]) -> bool:
    """Whether ``job`` is placed by hand (or since launched) on ``host``'s ``gpus`` with
    ``profile`` (None: any), as a placement asked again finds it once the first was made;
    not once it is stopping (cancelled, requeued): the scheduler will not launch it there."""
    slot = job.slot
    return (job.manual and job.state in (PLACED, RUNNING) and slot is not None
            and slot.host == host and slot.gpus == tuple(gpus)
            and profile in (None, slot.profile))


def host_or_gpu(host: str, gpu: Optional[int]) -> str:
    """A host, or one of its GPUs, as a cordon's words name it (``Cordon.where``)."""
    return host if gpu is None else "%s gpu%d" % (host, gpu)


def cordon(store: Store, host: str, gpu: Optional[int], mode: str, asker: Asker) -> Cordon:
    """Takes a host or one GPU of it out of service (``mode`` cordon or drain): the scheduler
    places and launches nothing new there; what runs there runs on."""
    if mode not in CORDON_MODES:
        raise ValueError("unknown cordon mode %r" % mode)
    actor = authorize(store, asker, CORDON, None, host_or_gpu(host, gpu))
    what = "cordoned" if mode == "cordon" else "drained"
    return store.cordon(host, gpu, mode, actor, "%s by %s" % (what, actor))


def uncordon(store: Store, host: str, gpu: Optional[int], asker: Asker) -> list[Cordon]:
    """Puts a host (and each of its GPUs) or one GPU back in service; returns what was lifted
    (none: it was in service)."""
    actor = authorize(store, asker, CORDON, None, host_or_gpu(host, gpu))
    return store.uncordon(host, gpu, actor, "uncordoned by %s" % actor)
