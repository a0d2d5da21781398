"""A decision recorded by hand, completed from a GPU's state: what it leaves open (the MIG
profile, its start, the share in MiB) is filled in as the scheduler would, and its charge
counted by the one rule (fractui.sched.quota.charge). Pure: the executor runs it on the live
GPU before launching, ``fractui place`` on the host's kept facts before recording. A placement
by hand onto a host or GPU out of service is refused, with the reason (``in_service``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

from remote_agent.mig.layout import Geometry, Layout, Profile
from remote_agent.mig.planner import PlanError

from fractui.sched import mig
from fractui.sched.cordons import refusal
from fractui.sched.fleetview import (HostView, build_hosts, flips_modes, gpu_geometry, idle_view,
                                     jobs_by_host, record_charge, request_of, share_mib)
from fractui.sched.mig_change import flip_of, held_back, plan_flip
from fractui.sched.model import Request
from fractui.store.model import PLACED, Cordon, Job, ModeHold, Slot
from fractui.words import gib, portion


class Unfit(Exception):
    """The decision cannot run as recorded on that GPU as it is (it names no such GPU, a MIG
    profile on a GPU without MIG, no room left for the profile); says why."""


def in_service(slot: Slot, cordons: Iterable[Cordon], jobs: Iterable[Job]) -> None:
    """Unfit, saying why, if ``slot`` is on a host or GPU that takes no new work (the store's
    ``jobs`` say whether a drain is drained)."""
    why = refusal(cordons, jobs, slot.host, slot.gpus)
    if why is not None:
        raise Unfit("not placed: %s" % why)


def complete(job: Job, view: HostView, store_uid: str, jobs: list, turn: bool = False) -> Slot:
    """A manual decision completed from the GPU as ``view`` shows it: the profile the request
    takes there, the start the placer picks (an idle twin's where it packs as well), or the
    share in MiB, and what it charges. What was recorded is kept as it is. ``turn``: the
    placement may be of the other MIG mode where the job's queue takes nothing in the GPU's
    (a MIG queue on a GPU with MIG off, a share queue's on one with MIG on; a profile given
    without its start): ``fractui place``'s, whose launch changes the mode first, said and
    asked; a launch takes the GPU in the mode it has, as its placement said."""
    slot = job.slot
    assert slot is not None
    gpus = view.gpu_records()
    if not slot.gpus or any(g >= len(gpus) for g in slot.gpus):
        raise Unfit("%s has no GPU %s" % (view.name, ",".join(map(str, slot.gpus))))
    rec = gpus[slot.gpus[0]]
    req = request_of(job)
    if req.gpus > 1 and len(slot.gpus) != req.gpus:  # (fractui place names one GPU)
        raise Unfit("job %d of queue %s asks for %d GPUs of one host, and the placement names %d "
                    "(gpu%s of %s): a job of several GPUs is placed on all of them at once, by "
                    "the scheduler or the TUI's placement, which offers them together" % (
                        job.id, job.queue, req.gpus, len(slot.gpus),
                        ",".join(map(str, slot.gpus)), view.name))
    geo = gpu_geometry(rec)
    placed = geo.profile(slot.profile) if geo is not None and slot.profile else None
    if placed is not None:
        _holds(job, req, geo, placed, view.name, slot.gpus[0])
    if placed is not None and slot.start is not None and slot.start not in placed.starts:
        raise Unfit("%s starts only at slot %s on GPU %d of %s (%s), not %d" % (
            placed.name, ", ".join(map(str, placed.starts)), slot.gpus[0], view.name,
            rec.get("name"), slot.start))
    if _mode_changes(slot, rec, geo):  # the launch changes the GPU's MIG mode first
        return Slot(slot.host, slot.gpus, slot.profile, slot.start, slot.memory_mib,
                    record_charge(gpus, slot.gpus, slot.profile, slot.memory_mib),
                    slot.layout_version)
    if rec.get("mig_mode"):
        if geo is None:
            raise Unfit("GPU %d of %s is a MIG model fractui does not know (%s)" % (
                slot.gpus[0], view.name, rec.get("name")))
        profile = slot.profile
        if profile is None:
            found = mig.profile_for(req, geo)
            mib = _share_mib(req, rec) if found is None and turn else 0
            if mib:  # a share queue's job: its launch turns MIG off first
                return _share(slot, gpus, mib)
            if found is None:
                raise Unfit("no MIG profile of %s holds what queue %s asks for%s" % (
                    rec.get("name"), job.queue, " (it takes memory shares only)"
                    if req.isolation == "share" else ""))
            profile = found.name
        if geo.profile(profile) is None:
            raise Unfit("GPU %d of %s (%s) has no MIG profile %s" % (
                slot.gpus[0], view.name, rec.get("name"), profile))
        start = slot.start
        if start is None:
            host = next(h for h in build_hosts([view], [j for j in jobs if j.id != job.id],
                                               store_uid))
            gpu = host.gpus[slot.gpus[0]]
            sig = mig.signature(gpu.layout) if gpu.layout else None
            start = None if sig is None else mig.launch_start(geo, sig, gpu.idle_instances,
                                                               profile)
            if start is None:
                raise Unfit("no room for %s on GPU %d of %s" % (profile, slot.gpus[0],
                                                                 view.name))
        return Slot(slot.host, slot.gpus, profile, start, None,
                    record_charge(gpus, slot.gpus, profile, None), slot.layout_version)
    mib = slot.memory_mib or _share_mib(req, rec)
    if turn and (slot.profile or not mib) and rec.get("mig_capable") and geo is not None:
        return _turned_on(job, req, slot, gpus, geo)  # its launch turns MIG on first
    if slot.profile:
        raise Unfit("GPU %d of %s has MIG off: it takes memory shares, not %s" % (
            slot.gpus[0], view.name, slot.profile))
    if not mib:
        raise Unfit(_no_share(job, req, rec, view.name, slot.gpus[0]))
    return _share(slot, gpus, mib)


def _share(slot: Slot, gpus: Sequence[Mapping[str, Any]], mib: int) -> Slot:
    """``slot`` as a share of ``mib`` MiB, charged by its memory."""
    return Slot(slot.host, slot.gpus, None, None, mib, record_charge(gpus, slot.gpus, None, mib))


def _share_mib(req: Request, rec: Mapping[str, Any]) -> int:
    """The MiB ``req`` takes as a share of a GPU as its agent reports it with MIG off; 0 where
    it takes none there (a MIG queue's, more memory than the GPU has). The queue's GPU models
    are not held against it: which GPU is the admin's to choose, as with ``--profile``."""
    memory = int(rec.get("memory_mib") or 0)
    milli = replace(req, models=frozenset()).share_milli(str(rec.get("name") or ""), memory)
    return share_mib(req, memory, milli) if milli else 0


def _no_share(job: Job, req: Request, rec: Mapping[str, Any], host: str, gpu: int) -> str:
    """Why ``job`` takes no share of GPU ``gpu`` of ``host`` with MIG off (``_share_mib``)."""
    where = "GPU %d of %s (%s)" % (gpu, host, rec.get("name"))
    if req.mig or req.isolation == "mig":
        capable = rec.get("mig_capable")
        return "%s has MIG off%s: job %d of queue %s takes a MIG slice only (%s)" % (
            where, "" if capable and gpu_geometry(rec) else ", a MIG model fractui does not "
            "know, so it does not turn MIG on" if capable else ", and none to turn on",
            job.id, job.queue, "mig = %s" % req.mig if req.mig else "isolation = mig")
    asks = "job %d of queue %s asks for %s" % (job.id, job.queue, portion(
        req.gpu, req.mig, req.memory_gib, req.gpus))
    memory = int(rec.get("memory_mib") or 0)
    if not memory:  # (whatever the job asks for: a share is sized by the GPU's memory)
        return "%s reports no memory size, so no share of its memory can be sized: %s" % (
            where, asks)
    return "%s has %g GiB: %s%s" % (where, gib(memory), asks, "" if req.memory_gib else
                                    ", which comes to less than 1 MiB of it")


def _turned_on(job: Job, req: Request, slot: Slot, gpus: Sequence[Mapping[str, Any]],
               geo: Geometry) -> Slot:
    """``slot`` (no start) on a GPU with MIG off as if MIG were on: the profile given, else
    the one the job's queue takes, at the placer's start on the empty GPU (the launch turns
    MIG on first; there is no instance to destroy)."""
    found = geo.profile(slot.profile) if slot.profile else mig.profile_for(req, geo)
    if found is None:
        raise Unfit("%s has no MIG profile %s" % (geo.model, slot.profile) if slot.profile
                    else "no MIG profile of %s holds what queue %s asks for" % (
                        geo.model, job.queue))
    start = mig.best_start(geo, mig.signature(Layout(geo, ())), found.name)
    assert start is not None  # (every profile of a model starts somewhere on its empty GPU)
    return Slot(slot.host, slot.gpus, found.name, start, None,
                record_charge(gpus, slot.gpus, found.name, None), slot.layout_version)


def _holds(job: Job, req: Request, geo: Geometry, given: Profile, host: str, gpu: int) -> None:
    """Unfit where the profile given by hand holds less than the job's queue asks for (its
    compute or its memory): the job would run short of what it was promised, out of memory
    or slower, and be charged as the smaller slice. A larger profile is the admin's to give
    (charged as it is); ``fractui move`` keeps to the queue's own profile."""
    needed = mig.profile_for(req, geo)
    if needed is None and req.mig and req.isolation != "share":  # a profile of other models
        named = mig.as_named(req.mig)
        if named is not None:
            _as_much_as(job, req.mig, named, geo, given, "on GPU %d of %s" % (gpu, host))
            return
    if needed is None:
        raise Unfit("job %d of queue %s takes no MIG slice (its isolation is %s): place it "
                    "without --profile" % (job.id, job.queue, req.isolation)
                    if req.isolation == "share" else
                    "no MIG profile of %s holds what queue %s asks for" % (geo.model, job.queue))
    if given.compute_slices < needed.compute_slices or given.size < needed.size:
        raise Unfit("job %d of queue %s needs %s or larger on GPU %d of %s; %s holds less (%d "
                    "of %d compute slices, %d of %d memory slices): leave --profile out to "
                    "take %s" % (job.id, job.queue, needed.name, gpu, host, given.name,
                                 given.compute_slices, geo.compute_slices, given.size,
                                 geo.memory_slices, needed.name))


def _as_much_as(job: Job, name: str, named: tuple[Geometry, Profile], geo: Geometry,
                given: Profile, where: str) -> None:
    """Unfit where ``given`` holds less than profile ``name`` (the queue's ``mig``, which
    ``geo``'s model has not) holds on the model that has it: its share of the compute and its
    memory, both by the models' table. The profiles of a model of another size are named
    otherwise (an H100 NVL's 3g.47gb holds all a 3g.40gb does), and a larger one stays the
    admin's to give."""
    other, asked = named
    mib = mig.table_mib(geo, given)
    if mig.share(geo, given) >= mig.share(other, asked) and mib >= asked.memory_mib:
        return
    raise Unfit("job %d of queue %s asks for %s, which %s has not: it needs a profile holding "
                "%s and %g GiB or more %s; %s holds less (%s, %g GiB)" % (
                    job.id, job.queue, name, geo.model, _compute(other, asked),
                    gib(asked.memory_mib), where, given.name, _compute(geo, given), gib(mib)))


def _compute(geo: Geometry, profile: Profile) -> str:
    """A profile's compute said against its own GPU's (models differ in slices: A30's 4)."""
    return "%d of %d compute slices" % (profile.compute_slices, geo.compute_slices)


def mode_change(slot: Slot, gpus: Sequence[Mapping[str, Any]]) -> Optional[bool]:
    """The MIG mode a recorded ``slot``'s launch turns its GPU to first (True: on, False: off),
    by the GPU's record (``gpus``: an agent's, or the inventory's); None when it keeps it, as
    one that names neither a profile nor a share does (its launch takes the GPU's mode). As
    the launch does (``Executor._modes``), a change pending on the GPU counts: a slot of the
    mode the GPU has now undoes it, one of the pending mode makes it now (a reset)."""
    if not slot.gpus or slot.gpus[0] >= len(gpus) or (slot.profile is None
                                                        and slot.memory_mib is None):
        return None
    rec = gpus[slot.gpus[0]]
    want, pending = slot.profile is not None, rec.get("mig_pending")
    now = bool(rec.get("mig_mode"))
    return None if (now, now if pending is None else bool(pending)) == (want, want) else want


def _mode_changes(slot: Slot, rec: Mapping[str, Any], geo: Optional[Geometry]) -> bool:
    """Whether ``slot`` was placed (from the preview) in the MIG mode its GPU does not have
    yet: a slice given in full on a MIG-capable GPU with MIG off, or a share in MiB on a GPU
    with MIG on. Its launch changes the mode first, where nothing uses the GPU."""
    if rec.get("mig_mode"):
        return slot.profile is None and slot.memory_mib is not None
    return (slot.profile is not None and slot.start is not None and geo is not None
            and geo.profile(slot.profile) is not None)


@dataclass(frozen=True)
class ByHand:
    """A placement by hand judged on a host's facts (fleetview.facts: kept, or live), as
    ``fractui place`` and the TUI's preview of a GPU whose MIG mode change is pending judge
    it: the ``slot`` to record, the MIG mode change its launch makes first (``flip``, in
    words; None: none), and why its launch would refuse that change (``refusal``; None: it
    would not)."""

    slot: Slot
    flip: Optional[str] = None
    refusal: Optional[str] = None
    turns: Optional[bool] = None
    """The MIG mode ``flip`` turns the GPU to (``mode_change``)."""

    def refused(self, job: Job) -> Optional[str]:
        """Why ``job`` is not placed so (its launch would be refused), in ``place``'s words."""
        return None if self.refusal is None else \
            "not placed: job %d on %s needs its launch to %s first, and %s" % (
                job.id, self.slot.describe(), self.flip, self.refusal)

    def first(self, job: Job) -> Optional[str]:
        """What the launch changes first, said before it is agreed to (a reset on some
        models), or None."""
        return None if self.flip is None else \
            "job %d on %s: its launch will first %s; the scheduler checks that the GPU is idle " \
            "then (if it is not, the job goes back to its queue)" % (
                job.id, self.slot.describe(), self.flip)


def by_hand(job: Job, slot: Slot, host_facts: Dict[str, Any], store_uid: str,
            store_jobs: Sequence[Job], fixed: bool, holds: Mapping[str, ModeHold], now: float,
            agent_jobs: Iterable[Mapping[str, Any]] = (),
            gpu: Optional[Mapping[str, Any]] = None) -> ByHand:
    """``slot`` completed (``hand_slot``; Unfit, saying why, where it cannot be) and the MIG
    mode change its launch makes first judged as the launch judges it (``plan_flip``: a job of
    ``store_jobs`` on the GPU, a GPU with no MIG, a host that pins its modes, ``fixed``), or
    held back a while after a change of its failed (``holds``, by GPU UUID, at ``now``).
    ``agent_jobs`` and ``gpu`` (the GPU's live record, with its processes and instances):
    what the host says now, where it was asked; kept facts have neither."""
    done = hand_slot(job, slot, host_facts, store_uid, store_jobs)
    flip = slot_flip(done, host_facts)
    if flip is None:
        return ByHand(done)
    turns, rec = done.profile is not None, host_facts["gpus"][done.gpus[0]]
    hold = holds.get(str(rec.get("uuid")))
    left = hold.left(now) if hold is not None else 0.0
    refusal = plan_flip(done.host, gpu if gpu is not None else rec, turns, job, agent_jobs,
                        store_jobs, store_uid, fixed, flips_modes(host_facts)).refusal or (
        held_back(done.gpus[0], done.host, str(rec.get("uuid")), left) if left else None)
    return ByHand(done, flip, refusal, turns)


def slot_flip(slot: Slot, host_facts: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The MIG mode change a launch on ``slot`` makes first on its GPU, in words, by the
    host's facts (none: none known), or None."""
    gpus = (host_facts or {}).get("gpus") or []
    turns = mode_change(slot, gpus)
    return None if turns is None else flip_of(slot.host, gpus[slot.gpus[0]], turns)


def hand_slot(job: Job, slot: Slot, host_facts: Dict[str, Any], store_uid: str,
              store_jobs: Iterable[Job] = ()) -> Slot:
    """The slot a placement by hand asks for, checked against what the host could hold (its
    facts, fractui.sched.fleetview.facts) and charged as its launch will charge it; what it
    leaves open stays open, for the launch to complete from the live GPU — but a slot whose
    launch changes its GPU's MIG mode first (``mode_change``: a MIG queue's job on a GPU with
    MIG off takes the queue's profile, a share queue's on one with MIG on its share; a GPU
    whose mode change is pending is judged in the mode it has once that took effect) is
    recorded whole, so that the change is said, or refused on a host that pins its modes, as
    with ``--start``: left open, the launch would complete it in the mode the GPU has now,
    with a share of 0 MiB for a MIG queue's job, or undo the pending change. Such a slot is
    taken beside those of ``store_jobs`` placed on the GPU for the same change (``_beside``).
    Unfit, saying why, where the host could not hold it."""
    done = complete(replace(job, slot=slot), idle_view(slot.host, host_facts), store_uid, [],
                    turn=True)
    gpus = host_facts.get("gpus") or []
    turns = mode_change(done, gpus)
    if turns is None:
        return replace(slot, charge=done.charge)
    ahead = [j for j in jobs_by_host(store_jobs).get(done.host, ()) if j.id != job.id
             and j.state == PLACED and done.gpus[0] in j.slot.gpus  # type: ignore[union-attr]
             and mode_change(replace(j.slot, gpus=done.gpus[:1]), gpus) == turns
             ]  # (judged on this GPU: a decision of several GPUs may change it beside its first)
    return _beside(done, slot.start is not None, gpus[done.gpus[0]], ahead) if ahead else done


def _beside(done: Slot, given: bool, rec: Mapping[str, Any], ahead: Sequence[Job]) -> Slot:
    """``done``, a slot whose launch changes its GPU's MIG mode first, beside the decisions
    ``ahead`` placed there for the same change, not yet launched: each completed as if the
    GPU were empty, two jobs took the same slice (or shares of more memory than it has), and
    the later launch was refused, counted against its job. A slice the admin did not place at
    a start of their own (``given``) goes to the planner's start beside theirs; Unfit, saying
    who holds the GPU, where there is no room."""
    slots = [j.slot for j in ahead]
    held = " and ".join("job %d's %s" % (j.id, _held_words(s))  # type: ignore[arg-type]
                        for j, s in zip(ahead, slots))
    if done.profile is None:
        memory, used = int(rec.get("memory_mib") or 0), sum(s.memory_mib or 0 for s in slots)
        if used + (done.memory_mib or 0) <= memory:
            return done
        what, tail = "a %d MiB share" % (done.memory_mib or 0), " (%d of its %d MiB)" % (
            used, memory)
    else:
        geo = gpu_geometry(rec)
        assert geo is not None and done.start is not None  # (a slice recorded whole)
        sig = tuple(sorted((s.profile, s.start, True) for s in slots if s.profile and
                           s.start is not None and geo.profile(s.profile) is not None))
        start = done.start if given else mig.best_start(geo, sig, done.profile)
        open_ahead = any(s.profile and s.start is None for s in slots)  # (none knows where)
        if start is not None and not open_ahead and _fits(geo, sig, done.profile, start):
            return replace(done, start=start)
        what, tail = done.profile + (" at slot %d" % done.start if given else ""), ""
    raise Unfit("no room for %s on GPU %d of %s once its MIG mode is changed: it holds %s, "
                "placed there for the same change%s" % (what, done.gpus[0], done.host, held,
                                                         tail))


def _held_words(slot: Slot) -> str:
    """What a decision ahead holds on the GPU, in words: its slice and start (one left open
    to its launch: said so), or its share."""
    if slot.profile is None:
        return "%d MiB share" % (slot.memory_mib or 0)
    if slot.start is None:
        return "%s, its start left open to its launch" % slot.profile
    return "%s at slot %d" % (slot.profile, slot.start)


def _fits(geo: Geometry, sig: mig.Signature, profile: str, start: int) -> bool:
    """Whether ``profile`` goes at ``start`` on a GPU in state ``sig``, destroying nothing
    busy (the planner's plan there)."""
    try:
        mig.after(geo, sig, profile, start)
    except PlanError:
        return False
    return True
