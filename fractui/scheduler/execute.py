"""The lease holder's hands: launch recorded decisions on the agents, send stops, and reflect
what the agents report back into the store.

Every launch carries the job's key (store uid, job id, attempt), so running a decision twice —
after a crash between the launch and its record — gives the same job, never a second copy.

A refused launch is read by its error's class (remote_agent.rpc.jsonrpc.ERROR_CLASSES): a job
that can never start as given ("job") fails at once with the agent's words, as does a request
the agent calls malformed ("request": a bug of ours, logged); a GPU or host that cannot take it
now ("capacity", "host") sends it back to its queue as its next attempt, the refusal kept with
the job, until ``max_attempts`` refusals fail it with all their words.

Where Kubernetes would allocate the slices (DRA ResourceClaims, docs/kubernetes.md "Later"), a
decision's launch here is where its claim would be made, and a refused allocation would come
back as a refused launch does.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Set, Tuple

from remote_agent.jobs.last_line import shown
from remote_agent.rpc.jsonrpc import (CAPACITY, HOST, INSTANCE_BUSY, JOB, JOB_KEY_MISMATCH,
                                      JOB_NOT_FOUND, REQUEST, STALE_LAYOUT, error_class)

from fractui.fleet.client import AgentCallError
from fractui.fleet.host import AnswerLost
from fractui.sched.fleetview import HostView, flips_modes, held_why
from fractui.sched.manual import Unfit, complete
from fractui.sched.mig_change import MODE, MigChange, held_back, outcome, plan_flip
from fractui.scheduler.backoff import ModeBackoff
from fractui.scheduler.lanes import Lanes
from fractui.store.base import LeaseLost, StateConflict, Store, StoreError
from fractui.store.model import (CANCELLED, DONE, FAILED, MOVE, PLACED, RUNNING, STOPPING,
                                 Job, Refusal, Sampled, Slot)
from fractui.words import count, exited, printable

log = logging.getLogger("fractui.scheduler")

AGENT_ENDED = ("exited", "killed", "lost")
Call = Callable[[str, str, Dict[str, Any]], Any]  # (host, method, params) -> result


def launch_params(job: Job, store_uid: str) -> Dict[str, Any]:
    """The ``job.launch`` of the job's current attempt. Its variables, then FRACTUI_STORE_JOB
    (fractui's own wins, as the agent's caps win over both); ``image`` and ``run_as`` only
    where the job has them, so an admin's bare job's launch — and the fingerprint the agent
    keeps of its key — is what it was before jobs had either. The name with each character
    an agent takes in no name a "?": one queued before submit refused them is only shown, so
    its job runs (the name is no part of the fingerprint)."""
    slot = job.slot
    assert slot is not None
    params: Dict[str, Any] = {"key": job.key(store_uid), "argv": list(job.argv),
                              "name": printable(job.name),
                              "env": dict(job.env, FRACTUI_STORE_JOB=str(job.id))}
    if job.cwd:
        params["cwd"] = job.cwd
    if job.image:
        params["image"] = job.image
    if job.run_as is not None:  # a team member's job: as the member, never as the agent
        params["run_as"] = job.run_as
    if slot.profile:
        mig_params = {"profile": slot.profile, "start": slot.start, "destroy_idle": True}
        if slot.layout_version:
            mig_params["layout_version"] = slot.layout_version
        params.update(gpu=slot.gpus[0], mig=mig_params)
    else:
        params.update(gpus=list(slot.gpus), memory_mib=slot.memory_mib)
    return params


def never_ran(rec: Dict[str, Any]) -> bool:
    """Whether an agent's job record is a launch cut short before anything ran (the agent
    stopped mid-launch): ``exited`` with no exit code and never started. Not the job's end:
    the agent starts it when its key is launched again (docs/protocol.md, the job record)."""
    return rec.get("state") == "exited" and rec.get("exit_code") is None and \
        rec.get("started_at") is None


def not_started_by_host(rec: Dict[str, Any]) -> bool:
    """Whether an agent's job record is a start that failed by the host's fault (its
    ``fault``, docs/protocol.md): nothing ran, and another host may start it, as a launch
    answered HOST_FAILED. A start its launch answered as under way ends so where it then
    fails; an older agent's record has no ``fault``, and ends the job as before."""
    return rec.get("state") == "exited" and rec.get("started_at") is None and \
        rec.get("fault") == HOST


class NoMemory(Exception):
    """A decision whose slot books no GPU: a share of no MiB (an older fractui's placement by
    hand of a MIG queue's job on a GPU with MIG off recorded one, charged 0). Its launch would
    send ``memory_mib`` 0, which the agent refuses as malformed, failing the job: it goes back
    to its queue instead, without a refusal counted (no host refused it), to be placed anew."""


def no_memory(slot: Slot, manual: bool = False) -> Optional[str]:
    """Why a decision's recorded ``slot`` cannot be launched (``NoMemory``), or None. Judged
    before a placement by hand (``manual``) is completed: completing its share of 0 MiB on
    the GPU found a refusal to count against the job (a MIG queue's takes no share there),
    where the decision is fractui's own; left open (neither a profile nor a share), it is
    completed into one."""
    if slot.profile is not None or (slot.memory_mib or 0) > 0 or (
            manual and slot.memory_mib is None):
        return None
    return "not launched: the decision books no GPU memory (a share of %s MiB on %s), which " \
        "no launch can take; back to its queue to be placed again" % (
            slot.memory_mib or 0, slot.describe())


class ModeNotChanged(Exception):
    """A GPU's MIG mode change before a launch was refused or failed on the agent: the GPU is
    held back from changes a while (ModeBackoff), and the job goes back to its queue without
    a refusal counted — the GPU failed, not the job, and it is not offered again meanwhile."""


def class_of(err: AgentCallError) -> str:
    """An agent error's class: the one its answer names (``data.class``, so a newer agent's
    codes are read right), else its code's."""
    named = err.data.get("class") if isinstance(err.data, dict) else None
    return named if named in (JOB, CAPACITY, HOST, REQUEST) else error_class(err.code)


@dataclass
class Untaken:
    """A stop the agent answered with an error: sent again once the monotonic clock (the
    executor's ``ticks``) reaches ``again``; ``said`` is the agent's last words on it, logged
    again only when they change."""

    again: float
    said: str


def _each_once(refusals: Tuple[Refusal, ...]) -> str:
    """The words of each refusal, in the order first met, once however often they came (a
    host refusing a job for the same reason at every attempt said it that many times over)."""
    times: Dict[str, int] = {}
    for r in refusals:
        times[r.describe()] = times.get(r.describe(), 0) + 1
    return "; ".join(words if n == 1 else "%s (%s)" % (words, count(n, "time"))
                     for words, n in times.items())


class Executor:
    """Acts for the lease holder, each host's calls on that host's lane; remembers which stops
    were sent — kept in the store, so a holder that takes over sends none of them again — and
    which the agents did not take, to send again ``resend_s`` later."""

    def __init__(self, store: Store, call: Call, actor: str, grace_s: float, max_attempts: int,
                 lanes: Lanes, clock: Callable[[], float], resend_s: float,
                 ticks: Callable[[], float] = time.monotonic):
        """``clock`` dates what is kept in the store (the store's clock, as the lease holder
        reads it: ``Scheduler._store_now``), a refusal and a GPU's mode-change hold, which
        other processes compare with the store's time; ``ticks`` times the
        resends, kept in memory only (the monotonic clock: a wall clock set back delays none)."""
        self.store = store
        self.call = call
        self.actor = actor
        self.grace_s = grace_s
        self.max_attempts = max_attempts
        self.lanes = lanes
        self.clock = clock
        self.ticks = ticks
        self.epoch = 0
        """The lease epoch its writes carry (the scheduler's, set as it takes the lease)."""
        self._stops_sent: Set[Tuple[str, str]] = set()
        self.resend_s = resend_s
        self._untaken: Dict[Tuple[str, str], Untaken] = {}
        self._asked: Set[Tuple[str, str]] = set()  # the stops this pass asked for
        self._untaken_lock = threading.Lock()  # the two above: the pass's and the lanes'
        self.backoff = ModeBackoff()
        """GPUs whose mode change failed lately: the passes offer them no change."""

    def recall(self, stops_sent: FrozenSet[Tuple[str, str]]) -> None:
        """The stops the lease holders sent, as the store keeps them (read on taking the
        lease)."""
        self._stops_sent = set(stops_sent)

    def launch(self, job: Job, view: HostView, jobs: List[Job]) -> None:
        """Runs one decision (on the host's lane). The host not answering (HostUnavailable)
        is left to the lane: the job stays placed, and a launch that did reach the agent is
        found by its key on a later pass."""
        uid = self.store.uid
        unvouched = self.store.unvouched(job)
        if unvouched is not None:  # any who can write the store could have written it
            self._fail(job, "not launched: " + unvouched)
            return
        try:
            slot = job.slot
            assert slot is not None
            unlaunchable = no_memory(slot, job.manual)
            if unlaunchable is not None:
                raise NoMemory(unlaunchable)
            slot = complete(job, view, uid, jobs) if job.manual else slot
            if slot != job.slot:
                job = self.store.reslot(job.id, slot, epoch=self.epoch)
            self._modes(job, view, jobs)
            record = self.call(view.name, "job.launch", launch_params(job, uid))
        except Unfit as err:
            self.refused(job, view.name, str(err), CAPACITY)
            return
        except (ModeNotChanged, NoMemory) as err:
            if isinstance(err, NoMemory):  # a decision of ours that could never launch
                log.error("job %d: %s", job.id, err)
            try:
                self.store.requeue(job.id, (PLACED,), self.actor, str(err), epoch=self.epoch)
            except StateConflict:
                pass  # cancelled meanwhile: nothing ran
            return
        except AgentCallError as err:
            kind = class_of(err)
            if err.code == STALE_LAYOUT:  # the host is fine, the preview was not
                self.store.requeue(job.id, (PLACED,), self.actor, "not launched: the GPU "
                                   "changed since the placement was previewed (%s); preview "
                                   "it again" % err, epoch=self.epoch)
            elif err.code == INSTANCE_BUSY and slot.layout_version:  # pinned: as the above
                self.store.requeue(job.id, (PLACED,), self.actor, "not launched: an instance "
                                   "in the way of the placement is in use (%s); place it "
                                   "again" % err, epoch=self.epoch)
            elif kind in (JOB, REQUEST):
                self.failed(job, view.name, err.reason(), kind)
            else:
                self.refused(job, view.name, str(err), kind)
            return
        try:
            self.store.started(job.id, record.get("id"), record.get("started_at"), self.actor,
                               "started on %s" % slot.describe(), epoch=self.epoch,
                               model=view.model(slot.gpus))
        except StateConflict:
            pass  # cancelled or reflected meanwhile; the next pass sees the agent's record

    def _modes(self, job: Job, view: HostView, jobs: List[Job]) -> None:
        """Before a decision's launch, each of its GPUs in the MIG mode its slot is of (a MIG
        profile: on; a share: off), changed by the agent where it is not — the decision, in
        the store before this, is what says so, and a retried pass asks again, which changes
        nothing the second time. Audited as a MIG change by hand is. A GPU found in use is
        not changed (Unfit: the job goes back to its queue with the reason). A change the
        agent refuses or fails holds its GPU back from changes (ModeNotChanged), and a GPU
        held back is not asked (a decision made before the hold, or by hand): one failure is
        one call and one step of the hold, however many decisions wait on the GPU."""
        slot = job.slot
        assert slot is not None
        want = slot.profile is not None
        records = {g.get("index"): g for g in view.gpu_records()}
        changes = []
        for index in slot.gpus:  # every GPU's change planned before any is made
            rec = records.get(index)
            if rec is None or (bool(rec.get("mig_mode")),
                               bool(rec.get("mig_pending", rec.get("mig_mode")))) == (want, want):
                continue
            change = plan_flip(view.name, rec, want, job, list(view.jobs.values()), jobs,
                               self.store.uid, view.mode_fixed, flips_modes(view.hello))
            if change.refusal is not None:
                raise Unfit("not launched: %s" % change.refusal)
            uuid = str(rec.get("uuid"))
            left = self.backoff.left(uuid, self.clock())
            if left:  # decided before the hold began, or by hand: not asked again meanwhile
                raise ModeNotChanged("not launched: " + held_back(index, view.name, uuid, left))
            changes.append((change, uuid))
        for change, uuid in changes:
            detail = {"host": view.name, "change": MODE, **change.params}
            try:
                answer = self.call(view.name, change.method, change.params)
            except AnswerLost as err:  # it may have been made (a reset outlasts a call): said
                self.store.audit(self.actor, "mig", job.id, "asked to %s; the answer was lost "
                                 "(%s): the next pass reads the GPU's mode" % (
                                     change.text, err.reason), detail)
                raise
            except AgentCallError as err:
                if class_of(err) == REQUEST:  # what the agent calls malformed: a bug of ours
                    log.error("job %d: the agent on %s refused %s as malformed: %s",
                              job.id, view.name, change.method, err)
                # the GPU held back first: a store failing at the audit holds it back too
                refused = self._not_changed(change, uuid, "the agent refused to %s: %s" % (
                    change.text, err))
                if err.left_changed:  # failed, yet the GPU is changed: who asked is kept
                    self.store.audit(self.actor, "mig", job.id, "%s gpu %d: %s" % (
                        view.name, change.gpu, err), detail)
                raise refused from None
            said = outcome(change, answer)
            short = answer.get("mig_mode") is not want or answer.get("reset_required")
            unmade = self._not_changed(change, uuid, said) if short else None
            if answer.get("changed") is not False:
                self.store.audit(self.actor, "mig", job.id, said, detail)
            if unmade is not None:
                raise unmade
            self.backoff.succeeded(uuid)

    def _not_changed(self, change: MigChange, uuid: str, words: str) -> ModeNotChanged:
        """A GPU's mode change that did not happen, in words: the GPU held back from changes
        (for longer at each failure in a row)."""
        hold = self.backoff.failed(uuid, self.clock())
        return ModeNotChanged("not launched: %s; gpu %d of %s (%s) is offered no MIG mode "
                              "change for %.0f s" % (words, change.gpu, change.host, uuid, hold))

    def failed(self, job: Job, host: str, words: str, kind: str) -> None:
        """A job that can never start as given: failed at once, with the agent's words."""
        why = "cannot start on %s: %s" % (host, words)
        if kind == REQUEST:  # fractui sent what the agent calls malformed: a bug of ours
            log.error("job %d: the agent on %s refused the launch as malformed: %s",
                      job.id, host, words)
        self._fail(job, why)

    def _fail(self, job: Job, why: str) -> None:
        """A placed job failed before it ran, with ``why``."""
        try:
            self.store.ended(job.id, (PLACED,), FAILED, why, self.actor, why, "failed",
                             epoch=self.epoch)
        except StateConflict:
            pass  # cancelled meanwhile: nothing ran

    def refused(self, job: Job, host: str, words: str, kind: str,
                expect: Tuple[str, ...] = (PLACED,)) -> None:
        """The host cannot take the job now: back to its queue as its next attempt, the
        refusal kept (the scheduler avoids that host for it a while); at the
        ``max_attempts``-th refusal the job fails with the words of every one. ``expect``:
        the states it may be in (running too, for a start its launch answered as under way
        that then failed by the host's fault: ``not_started_by_host``)."""
        refusal = Refusal(host, words, self.clock(), kind)
        tried = job.refusals + (refusal,)
        try:
            if len(tried) >= self.max_attempts:
                why = "refused %s ([scheduler] max_attempts = %d): %s" % (
                    count(len(tried), "time"), self.max_attempts, _each_once(tried))
                self.store.ended(job.id, expect, FAILED, why, self.actor, why, "failed",
                                 refusals=tried, epoch=self.epoch)  # (its end: the store's time)
            else:
                self.store.requeue(job.id, expect, self.actor, "refused by %s" %
                                   refusal.describe(), refusal=refusal, epoch=self.epoch)
        except StateConflict:
            pass  # cancelled meanwhile: nothing ran

    def asked_stop(self, host: str, key: str) -> bool:
        """Whether a stop of this copy was sent already, by this holder or one before it, or
        one the agent did not take waits to be sent again."""
        with self._untaken_lock:
            return (host, key) in self._stops_sent or (host, key) in self._untaken

    def stops_sent(self) -> FrozenSet[Tuple[str, str]]:
        """The stops sent whose copies are not yet known ended, as (host, key): each one is in
        the store already (or its write failed, said), as it is remembered only after."""
        return frozenset(self._stops_sent)

    def forget_stop(self, host: str, key: str) -> None:
        """The copy is known ended and its stop forgotten in the store."""
        self._stops_sent.discard((host, key))

    def begin_pass(self) -> None:
        """A pass begins: a stop the agent did not take that the last pass did not ask for
        again (its copy ended, its job moved on, its host is out of reach) is not waited on
        — asked for anew, it is sent at once."""
        with self._untaken_lock:
            self._untaken = {k: u for k, u in self._untaken.items() if k in self._asked}
            self._asked = set()

    def resend_due(self) -> bool:
        """Whether a stop the agent did not take is due to be sent again: a pass is due."""
        now = self.ticks()
        with self._untaken_lock:
            return any(now >= u.again for u in self._untaken.values())

    def stop(self, host: str, agent_job: str, key: str, reason: str,
             grace_s: Optional[float] = None) -> None:
        """Queues one stop for a job copy on the host's lane: sent until the agent takes it,
        once by any holder after that, and one it did not take not before ``resend_s``."""
        with self._untaken_lock:
            self._asked.add((host, key))
            untaken = self._untaken.get((host, key))
        if (host, key) in self._stops_sent or (untaken and self.ticks() < untaken.again):
            return
        grace = self.grace_s if grace_s is None else grace_s
        self.lanes.add(host, lambda: self._send_stop(host, agent_job, key, reason, grace))

    def _send_stop(self, host: str, agent_job: str, key: str, reason: str,
                   grace: float) -> None:
        if (host, key) in self._stops_sent:
            return
        try:
            self.call(host, "job.stop", {"job": agent_job, "key": key,
                                         "grace": math.ceil(grace),
                                         "reason": printable(reason)})  # (a job's reason
            # may hold an agent's words of several lines, which an agent takes in none)
        except AgentCallError as err:
            if err.code not in (JOB_NOT_FOUND, JOB_KEY_MISMATCH):
                self._not_taken(host, key, err)
                return
            # its retention passed, or the agent lost it (its id now another job's: left be)
            log.info("%s: nothing left to stop of %s", err, key)
        with self._untaken_lock:
            taken = self._untaken.pop((host, key), None) is not None
        if taken:
            log.info("the agent on %s took the stop of %s", host, key)
        # after the call: a holder killed before this line leaves the stop to be sent again
        # (at least once), never unsent; remembered after the store's write, so a pass that
        # finds the copy ended and forgets its stop never does so before the row is written
        try:
            self.store.stop_sent(host, key, epoch=self.epoch)
        except LeaseLost:
            raise  # another leads: the lane leaves its calls to it
        except StoreError as err:  # the stop went out; only the next holder's record is missing
            log.error("%s; the stop of %s on %s was sent %s: a scheduler that takes the lease "
                      "over may send it again", err, key, host,
                      "and whether it was recorded is not known" if err.unknown else
                      "but not recorded")
        finally:
            self._stops_sent.add((host, key))

    def _not_taken(self, host: str, key: str, err: AgentCallError) -> None:
        """The agent answered the stop with an error (its job table locked, an error inside
        it): the copy may run on, so the stop is not recorded as sent, and a pass at least
        ``resend_s`` later sends it again — said when the agent's words change, not at every
        try of a host that keeps failing."""
        said = str(err)
        with self._untaken_lock:
            last = self._untaken.get((host, key))
            self._untaken[(host, key)] = Untaken(self.ticks() + self.resend_s, said)
        if last is None or last.said != said:
            log.warning("the agent on %s did not take the stop of %s: %s; it is sent again "
                        "every %.1f s until it does", host, key, said, self.resend_s)

    def reflect(self, job: Job, view: HostView) -> bool:
        """Brings one on-host job of the store in line with its agent record; whether it
        changed the job in the store."""
        key = job.key(self.store.uid)
        rec = view.by_key().get(key)
        if rec is None:
            if job.state == STOPPING:
                self.finish_stop(job, None)
            elif job.state == RUNNING:
                why = "the agent on %s has no record of it" % view.name
                self.store.ended(job.id, (RUNNING,), FAILED, why, self.actor, why, "lost",
                                 epoch=self.epoch)
            else:
                return False
            return True
        state = rec.get("state")
        ended = state in AGENT_ENDED
        if job.state == PLACED and ended and never_ran(rec):
            log.warning("job %d: its launch on %s was cut short before anything ran (%s); "
                        "it is launched again by the same key", job.id, view.name,
                        rec.get("reason"))
            return False  # still placed: this pass launches it again, by the same key
        found = self._found_started(job, view, rec)
        if found is not None:
            job = found
        if job.state in (PLACED, RUNNING) and not_started_by_host(rec):
            self.refused(job, view.name, rec.get("reason") or "it did not start", HOST,
                         (PLACED, RUNNING))
            return True
        if ended:
            if job.state == STOPPING:
                self.finish_stop(job, rec)
            else:
                self._ended(job, rec)
            return True
        if job.state == STOPPING:
            self.stop(view.name, rec["id"], key, job.reason or "stopped by fractui")
        held = held_why(rec) or None
        # (a running job's reason is this; its start, where its launch was answered under
        # way or its agent held it, is the agent's once known: each written once)
        unknown = job.started_at is None and rec.get("started_at") is not None
        if (job.state == RUNNING and job.reason != held) or (
                job.state in (RUNNING, STOPPING) and unknown):
            self.store.held(job.id, held, rec.get("started_at") if job.started_at is None
                            else job.started_at, epoch=self.epoch)
            return True
        return found is not None

    def _found_started(self, job: Job, view: HostView, rec: Dict[str, Any]) -> Optional[Job]:
        """Records the start of an attempt the agent has but the store does not: launched by
        a holder that died before recording it (placed), or stopped by a user whose ask
        landed while its launch was in flight (stopping, its start unrecorded). An attempt
        that ran at all is charged from the agent's start; one that never started (its
        record has no start) held nothing; one its agent holds (``held_why``), placed or
        stopping, is charged from when its agent booked its slice. The job as it is now, or
        None where nothing was recorded."""
        if job.agent_job is not None or job.state not in (PLACED, STOPPING):
            return None
        held = held_why(rec)
        if rec.get("started_at") is None and not held and (
                job.state != PLACED or rec.get("state") in AGENT_ENDED):
            return None  # (a placed job's start underway is recorded at once, as launch does)
        slot = job.slot
        assert slot is not None
        return self.store.started(job.id, rec.get("id"), rec.get("started_at"), self.actor,
                                  "found %s on %s" % (
                                      "held starting" if held else
                                      "started" if job.state == STOPPING else "running",
                                      slot.describe()),
                                  epoch=self.epoch, model=view.model(slot.gpus),
                                  booked_at=rec.get("created_at") if held else None)

    def _ended(self, job: Job, rec: Dict[str, Any]) -> None:
        code = rec.get("exit_code")
        ok = rec.get("state") == "exited" and code == 0
        # (the agent's last_line is kept with the job's output, never in the reason: the
        # reason and the audit are every team's to read, the output its own team's;
        # docs/decisions.md, "A failed job's end says its last line")
        why = "exited 0" if ok else rec.get("reason") or (
            exited(code, None) if code is not None else rec.get("state"))
        line = rec.get("last_line")
        self.store.ended(job.id, (PLACED, RUNNING), DONE if ok else FAILED,
                         None if ok else why, self.actor, why, "end", exit_code=code,
                         ended_at=rec.get("ended_at"), epoch=self.epoch,
                         sampled=Sampled.of(rec.get("usage")),
                         last_line=(shown(line) or None) if code and line else None,
                         started_at=rec.get("started_at"))
        self.store.ask_log(job.id, self.actor)  # its output, kept while its host is there

    def finish_stop(self, job: Job, rec: Optional[Dict[str, Any]]) -> None:
        """A stop completed: cancelled (its output kept), placed by hand where a move held
        its slot (launched there by this pass, as any placement by hand), or back to the
        queue for a requeue or a preemption (its output kept when the attempt that runs
        again ends). One whose stop a cancel took over after ``job`` was read is left as it
        is: the next pass reads the cancel and ends it cancelled."""
        sampled = Sampled.of((rec or {}).get("usage"))
        if job.stop_intent == "cancel":
            self.store.ended(job.id, (STOPPING,), CANCELLED, job.reason, self.actor,
                             job.reason or "cancelled", "end",
                             ended_at=(rec or {}).get("ended_at"), epoch=self.epoch,
                             sampled=sampled, started_at=(rec or {}).get("started_at"))
            if job.agent_job is not None:
                self.store.ask_log(job.id, self.actor)  # its output, as for any end
            return
        try:
            if job.stop_intent == MOVE and job.move_to is not None:
                self.store.moved(job.id, self.actor, "stopped; placed by hand on %s, as moved"
                                 % job.move_to.describe(), epoch=self.epoch, sampled=sampled)
            else:
                self.store.requeue(job.id, (STOPPING,), self.actor, job.reason or "requeued",
                                   epoch=self.epoch, sampled=sampled)
        except StateConflict as err:  # a cancel took its stop over since it was read
            log.info("%s; the next pass ends it so", err)
