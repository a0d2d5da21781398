"""MIG changes an admin makes by hand, outside any launch: destroying one instance, turning MIG
mode on or off, making one (which profiles fit now: ``fits``). Pure: the GPU as its agent
reports it (a snapshot's GPU record), the agent's job records and the store's jobs on that host
in; the plan out — what will change, in words an admin confirms, or why it cannot be done now.
``fractui mig`` shows it before asking; the TUI's GPU detail view shows the same words.

The agent checks again when it carries a change out (an instance with processes is never
destroyed, a mode changes only on an idle GPU) and rolls back a change that half happened; the
plan refuses earlier, naming the job in the way, which the agent cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Mapping, Optional, Sequence

from remote_agent import DESTROY_IDLE_HINT
from remote_agent.gpu.models import model as gpu_model
from remote_agent.mig import planner
from remote_agent.mig.layout import Geometry, Instance, Layout, Profile, named

from fractui.sched import mig
from fractui.sched.fleetview import (ACTIVE_AGENT_STATES, FLIP_FEATURES, Booked, book_launch,
                                     gpu_geometry)
from fractui.store.model import PLACED, Job

CREATE, DESTROY, MODE = "create", "destroy", "mode"


@dataclass(frozen=True)
class MigChange:
    """One change to one GPU, planned: ``text`` says what will change (shown and confirmed);
    ``refusal`` why it cannot be done now (None: it can). ``params``: the agent call that does
    it (``method``)."""

    host: str
    gpu: int
    action: str
    text: str
    refusal: Optional[str]
    method: str
    params: dict[str, Any]


def _where(host: str, gpu: int) -> str:
    return "%s gpu %d" % (host, gpu)


def _instance(inst: Mapping[str, Any]) -> str:
    """An instance as an agent reports it, in words: one a rolled-back change made again says
    in place of which (``remade_of``), as a retry that named that one finds it."""
    return named(inst.get("profile"), inst.get("start"), inst.get("uuid"),
                 inst.get("remade_of") or ())


def _users(host: str, gpu: int, instance: Optional[str], agent_jobs: Iterable[Mapping[str, Any]],
           store_jobs: Iterable[Job], store_uid: str,
           waiting_for: Optional[bool] = None) -> list[str]:
    """The jobs that hold the GPU (or one instance of it), named as ``fractui jobs`` names
    them: the store's number where the store knows it, else HOST/JOB; and jobs the store has
    placed there that have not started yet, or that move there (the room a move holds, named
    "moving here": a mode change under it took the slot its next attempt is to have).
    ``waiting_for``: the MIG mode a launch's change makes (plan_flip), whose decisions are
    left out — each room held that is a decision waiting for that mode (``_waits``), a
    move's held decision as any other."""
    by_key = {j.key(store_uid): j for j in store_jobs}
    named, seen = [], set()
    for rec in agent_jobs:
        if rec.get("state") not in ACTIVE_AGENT_STATES or gpu not in (rec.get("gpus") or ()):
            continue
        if instance is not None and rec.get("instance") != instance:
            continue
        job = by_key.get(rec.get("key") or "")
        if job is not None:
            seen.add(job.id)
        named.append("job %d" % job.id if job is not None else "%s/%s" % (host, rec.get("id")))
    for job in store_jobs:  # (each room it holds: a move's target too, Job.holding)
        for held in job.holding():
            slot = held.slot
            if (job.id not in seen and slot is not None and slot.host == host
                    and gpu in slot.gpus and instance is None
                    and not _waits(held, waiting_for)):
                seen.add(job.id)
                named.append("job %d (%s)" % (job.id, job.state if held is job
                                              else "moving here"))
    return named


def _waits(held: Job, mode: Optional[bool]) -> bool:
    """Whether ``held`` (an entry of a job's ``holding``) is a decision waiting for the MIG
    mode ``mode`` (None: none is being made): it comes after the change, which it wants too."""
    return (mode is not None and held.state == PLACED and held.slot is not None
            and (held.slot.profile is not None) == mode)


def plan_destroy(host: str, gpu: Mapping[str, Any], uuid: str,
                 agent_jobs: Iterable[Mapping[str, Any]] = (), store_jobs: Sequence[Job] = (),
                 store_uid: str = "") -> MigChange:
    """Destroying the MIG instance ``uuid`` of ``gpu``: only an idle one, held by no job. A
    ``uuid`` the GPU no longer has, whose instance a rolled-back change made again in its
    place (its agent says so: ``remade_of``), names that one: the same admin's retry of a
    destroy that failed and was undone (docs/decisions.md)."""
    index = int(gpu.get("index", 0))
    where = _where(host, index)
    instances = list(gpu.get("instances") or ())
    # a retry of a destroy its agent rolled back: the instance made again in its place
    target = next((i for i in instances if i.get("uuid") == uuid), None) or next(
        (i for i in instances if uuid in (i.get("remade_of") or ())), None)
    refusal = None
    text = "destroy MIG instance %s on %s" % (uuid, where)
    if not gpu.get("mig_mode"):
        refusal = "%s has MIG mode off: it has no MIG instances" % where
    elif target is None:
        refusal = "%s has no MIG instance %s, nor one a rolled-back change made again in its " \
                  "place; it has %s" % (where, uuid, ", ".join(_instance(i) for i in instances)
                                        or "none")
    else:
        uuid = target["uuid"]
        text = "destroy idle %s on %s" % (_instance(target), where)
        held = _users(host, index, uuid, agent_jobs, store_jobs, store_uid)
        if held:
            refusal = "%s is held by %s: stop it first (an instance in use is never " \
                      "destroyed)" % (_instance(target), ", ".join(held))
        elif target.get("busy"):
            refusal = "%s has processes (pids %s): an instance in use is never destroyed" % (
                _instance(target), ", ".join(map(str, target.get("pids") or ())) or "unknown")
        else:
            rest = [i for i in instances if i.get("uuid") != uuid]
            text += "; %s %s" % (
                ", ".join("%s@%s" % (i.get("profile"), i.get("start")) for i in rest),
                "stays as it is" if len(rest) == 1 else "stay as they are") \
                if rest else "; the GPU is then empty"
    return MigChange(host, index, DESTROY, text, refusal, "mig.destroy",
                     {"gpu": index, "instance": uuid})


def reset_hint(host: str, index: int, enabled: bool) -> str:
    """How to make the GPU reset a pending mode change waits for: through the agent, which
    steps out of its own NVML session for it (nvidia-smi -r alone is refused while any NVML
    client holds the GPU, the agent included)."""
    return "fractui mig %s %d --mode %s --reset makes one now, while nothing uses the GPU" % (
        host, index, "on" if enabled else "off")


def plan_mode(host: str, gpu: Mapping[str, Any], enabled: bool,
              agent_jobs: Iterable[Mapping[str, Any]] = (), store_jobs: Sequence[Job] = (),
              store_uid: str = "", reset: bool = False, can_reset: bool = True) -> MigChange:
    """Turning MIG mode on or off on ``gpu``: only on an idle GPU — no job, no process, no MIG
    instance. Whether it takes effect at once or at the next GPU reset, NVML says only when
    asked (the answer's ``reset_required``); a change already pending is said so. With
    ``reset`` the agent makes that reset too (a change already pending is then what is asked);
    ``can_reset``: the host's agent lists the feature (remote_agent.MODE_RESET)."""
    index = int(gpu.get("index", 0))
    where = _where(host, index)
    word = "on" if enabled else "off"
    current, pending = bool(gpu.get("mig_mode")), bool(gpu.get("mig_pending",
                                                                gpu.get("mig_mode")))
    params = {"gpu": index, "enabled": enabled, **({"reset": True} if reset else {})}
    text = "turn MIG mode %s on %s (%s, MIG now %s%s): %s" % (
        word, where, gpu.get("name"), "on" if current else "off",
        "" if pending == current else ", %s after the next reset" % (
            "on" if pending else "off"),
        "its jobs then take MIG instances, not memory shares" if enabled else
        "its jobs then take memory shares, not MIG instances")
    text += ("; NVML applies it at once on an idle GPU, or the agent then resets the GPU (only "
             "while nothing runs there)" if reset else
             "; NVML applies it at once on an idle GPU, or at the next GPU reset, and says which")
    refusal = None
    held = _users(host, index, None, agent_jobs, store_jobs, store_uid)
    if not gpu.get("mig_capable"):
        refusal = "%s (%s) does not support MIG" % (where, gpu.get("name"))
    elif current == enabled and pending == enabled:
        refusal = "%s already has MIG mode %s: nothing to change" % (where, word)
    elif reset and not can_reset:
        refusal = "%s's agent cannot reset a GPU (it is older than mig.set_mode's reset): " \
                  "update it, or reset the GPU on the host with nothing holding it" % host
    elif current != enabled and pending == enabled and not reset:
        refusal = "%s already has MIG mode %s pending: it takes effect at the next GPU reset " \
                  "(%s)" % (where, word, reset_hint(host, index, enabled))
    elif held:
        refusal = "%s is in use by %s: MIG mode changes only on an idle GPU (stop them, or " \
                  "drain it first: fractui drain %s %d)" % (where, ", ".join(held), host, index)
    elif gpu.get("processes"):
        refusal = "%s has processes (pids %s): MIG mode changes only on an idle GPU" % (
            where, ", ".join(str(p.get("pid")) for p in gpu.get("processes") or ()))
    elif gpu.get("instances"):
        refusal = "%s has MIG instances (%s): destroy them first (fractui mig %s %d --destroy " \
                  "UUID)" % (where, ", ".join(_instance(i) for i in gpu.get("instances") or ()),
                             host, index)
    return MigChange(host, index, MODE, text, refusal, "mig.set_mode", params)


def flip_words(where: str, enabled: bool, reset: bool) -> str:
    """A mode change the scheduler makes before a launch, in the words the preview shows."""
    return "turn MIG %s on %s%s" % ("on" if enabled else "off", where, (
        " (a GPU reset, made only while nothing runs there)" if reset else ""))


def flip_of(host: str, gpu: Mapping[str, Any], enabled: bool) -> str:
    """``flip_words`` for a GPU as its agent reports it (or the inventory keeps it): whether
    the change is a GPU reset, from its model's facts."""
    return flip_words(_where(host, int(gpu.get("index", 0))), enabled,
                      _mode_reset(str(gpu.get("name") or "")))


def held_back(gpu: int, host: str, uuid: str, left: float) -> str:
    """A GPU the lease holder holds back from mode changes, a change of its having failed
    (fractui.scheduler.backoff), in words: why a change is not asked (a launch) or offered (by
    hand)."""
    return "gpu %d of %s (%s) is offered no MIG mode change for another %.0f s, after a " \
           "change of its failed" % (gpu, host, uuid, left)


def host_refusal(host: str, index: int, fixed: bool, agent_can: bool) -> Optional[str]:
    """Why a host makes no mode change on its GPU ``index`` before a launch, whatever the GPU:
    it pins its modes (``fixed``), or its agent cannot make one (``agent_can``: its hello lists
    the features, fleetview.flips_modes); None if neither."""
    where = _where(host, index)
    if fixed:
        return "%s keeps its MIG mode (mig_mode = \"fixed\" for %s)" % (where, host)
    if not agent_can:
        return "the agent on %s cannot change the MIG mode of %s before a launch (its hello " \
               "does not list %s: an agent older than fractui's, e.g. one in a job image)" % (
                   host, where, " and ".join(FLIP_FEATURES))
    return None


def plan_flip(host: str, gpu: Mapping[str, Any], enabled: bool, job: Job,
              agent_jobs: Iterable[Mapping[str, Any]], store_jobs: Sequence[Job],
              store_uid: str, fixed: bool = False, agent_can: bool = True) -> MigChange:
    """The mode change a scheduler's decision for ``job`` needs first on ``gpu``: only on a
    GPU nothing uses — no other job (decisions waiting for the same mode excepted, a move's
    held decision on its target among them: they come after it), no process, no busy
    instance — of a host that does not pin its modes (``fixed``) and whose agent can make it
    (``agent_can``: its hello lists the features, fleetview.flips_modes). The agent resets
    the GPU where the mode waits for a reset, and destroys idle instances before MIG goes
    off; it checks the GPU again itself."""
    index = int(gpu.get("index", 0))
    where = _where(host, index)
    others = [j for j in store_jobs if j.id != job.id]
    held = _users(host, index, None, agent_jobs, others, store_uid, waiting_for=enabled)
    refusal = host_refusal(host, index, fixed, agent_can) or _gpu_refusal(where, gpu, held)
    return MigChange(host, index, MODE, flip_of(host, gpu, enabled), refusal,
                     "mig.set_mode", {"gpu": index, "enabled": enabled, "reset": True,
                                      "destroy_idle": not enabled})


def _gpu_refusal(where: str, gpu: Mapping[str, Any], held: Sequence[str]) -> Optional[str]:
    """Why this GPU's mode is not changed now (``held``: who uses it), if it is not."""
    busy = [i for i in gpu.get("instances") or () if i.get("busy")]
    if not gpu.get("mig_capable"):
        return "%s (%s) does not support MIG" % (where, gpu.get("name"))
    if held:
        return "%s is in use by %s: its MIG mode is not changed" % (where, ", ".join(held))
    if gpu.get("processes"):
        return "%s has processes (pids %s): its MIG mode is not changed" % (
            where, ", ".join(str(p.get("pid")) for p in gpu.get("processes") or ()))
    if busy:
        return "%s has MIG instances in use (%s): its MIG mode is not changed" % (
            where, ", ".join(_instance(i) for i in busy))
    return None


def _mode_reset(name: str) -> bool:
    try:
        return gpu_model(name).mode_reset
    except ValueError:  # a model fractui does not know: NVML says when the change is made
        return False


def plan_create(host: str, params: Mapping[str, Any], plan: Mapping[str, Any]) -> MigChange:
    """An instance made by hand, as the agent planned it (``mig.plan``'s answer to
    ``params``): shown as the agent describes it, and applied by ``mig.apply`` only on the
    layout it was planned on (the agent refuses it if the GPU changed meanwhile)."""
    return MigChange(host, int(plan["gpu"]), CREATE, "on %s gpu %s: %s" % (
        host, plan["gpu"], plan["description"]), None, "mig.apply", dict(
            params, start=plan["start"], layout_version=plan["layout_version"]))


@dataclass(frozen=True)
class Fit:
    """Whether an instance of ``profile`` can be made now as ``N`` asks (destroying nothing):
    ``start`` where the agent's planner would put it (None: nowhere), else ``why`` in a few
    words, and ``destroys`` the idle instances whose destruction would make room."""

    profile: Profile
    start: Optional[int]
    why: str = ""
    destroys: tuple[Instance, ...] = ()


def fits(layout: Layout) -> tuple[Fit, ...]:
    """Each profile of the GPU's model judged on ``layout`` (the snapshot's, as placement
    books it) by the planner the agent runs, so the picker says at once what the agent's plan
    would say after: those that fit first, each group largest first."""
    judged = []
    for profile in layout.geometry.by_size():
        try:
            judged.append(Fit(profile, planner.plan(layout, profile.name).start))
        except planner.PlanError as err:
            judged.append(_unfit(layout, profile, err))
    return tuple(sorted(judged, key=lambda f: f.start is None))


def with_placed(layout: Layout, placed: Iterable[Job]) -> tuple[Layout, dict[int, int]]:
    """``layout`` with the instance each of the jobs ``placed`` there (decided, not started
    yet) is to have, where its launch makes it (``fleetview.book_launch``): its idle twin
    there taken, idle instances in its way gone; and the start each was booked at, by job
    id. A slot's start, or where its start is left open (a placement by hand without
    ``--start``) the one its launch completes it with (``mig.launch_start``, as
    ``manual.complete``: the planner's with the idle instances left out, as placement books
    the GPU, else an idle twin's that packs as well). Added beside them, a job placed on an
    idle twin (placement reuses one) counted its compute twice. One that cannot go there
    (its launch will be refused) books nothing."""
    starts: dict[int, int] = {}
    for job in placed:
        slot = job.slot
        if slot is None or not slot.profile:
            continue
        start = slot.start if slot.start is not None else _launch_start(layout, slot.profile)
        booked = None if start is None else book_launch(
            layout, {"profile": slot.profile, "start": start})
        if booked is not None:
            layout, starts[job.id] = booked[0], start
    return layout, starts


def _launch_start(layout: Layout, profile: str) -> Optional[int]:
    """Where a launch of ``profile`` whose start is left open goes on ``layout`` (what it
    holds busy, its idle instances set apart, as placement sees the GPU)."""
    busy = Layout(layout.geometry, tuple(i for i in layout.instances if i.busy))
    idle = tuple(sorted((i.profile, i.start) for i in layout.instances if not i.busy))
    return mig.launch_start(layout.geometry, mig.signature(busy), idle, profile)


def placement_layout(full: Optional[Booked], placed: Iterable[Job]
                     ) -> tuple[Optional[Layout], dict[int, int]]:
    """A MIG GPU's layout as placement books it, what the GPU view's free rows, its ``N``
    picker and the map all judge by: its agent's instances, each its jobs hold busy, those
    their launches are making (``full``, fleetview.booked_layout's, which each of them reads
    for its own rows too), and those of the jobs ``placed`` there not started yet
    (``with_placed``, with their starts). None where fractui cannot book the GPU
    (booked_layout's None)."""
    return (None, {}) if full is None else with_placed(full.layout, placed)


def free_runs(gpu: Mapping[str, Any], layout: Optional[Layout]) -> list[tuple[int, int]]:
    """The first and last of each run of a MIG GPU's memory slices that no instance of its
    snapshot holds, nor one ``layout`` (``placement_layout``) books; none where fractui has
    no MIG table for the model."""
    geo = gpu_geometry(gpu)
    if geo is None:
        return []
    taken = [(i.get("start", 0), i.get("size", 1)) for i in gpu.get("instances") or ()] + [
        (i.start, i.size) for i in (layout.instances if layout is not None else ())]
    held = {s for start, size in taken for s in range(start, start + size)}
    runs: list[tuple[int, int]] = []
    for s in range(geo.memory_slices):
        if s in held:
            continue
        if runs and runs[-1][1] == s - 1:
            runs[-1] = (runs[-1][0], s)
        else:
            runs.append((s, s))
    return runs


def unfit_run(layout: Layout, first: int, last: int) -> Optional[str]:
    """Why no MIG profile can be made within the free memory slices ``first``-``last`` alone on
    ``layout``, nothing destroyed (the planner's rules, ``planner.refusal``); None where one
    can. Slices no instance holds are free, but not always of use: on an A100 or H100 whose
    slice 6 is held, every placement that holds slice 7 holds 6 too. Memoised by the layout's
    shape (``_unfit_shaped``): the map asks it of every free run of the fleet's MIG GPUs at
    each of their snapshots, most the same shape."""
    return _unfit_shaped(layout.geometry, tuple(sorted(
        (i.profile, i.start, i.size, i.compute_slices) for i in layout.instances)), first, last)


Shape = tuple[tuple[str, int, int, int], ...]
"""A layout's instances as the planner's refusals of a free run read them: each one's profile,
start, size and compute slices (not its uuid, pids or use, which each snapshot reads anew)."""


@lru_cache(maxsize=4096)
def _unfit_shaped(geometry: Geometry, shape: Shape, first: int, last: int) -> Optional[str]:
    """``unfit_run`` of the layout of ``geometry`` that ``shape`` gives: keyed by what decides
    the answer, so one entry serves every GPU of that shape at every snapshot (keyed by the
    layout, each snapshot's new uuids made an entry per GPU per snapshot, some 80 MiB at its
    100,000). The run's slices are free, so no refusal names an instance of it (an overlap):
    the instances made here, without their uuids, give the same words."""
    layout = Layout(geometry, tuple(Instance(n, profile, start, size, compute)
                                    for n, (profile, start, size, compute) in enumerate(shape)))
    inside = sorted(((p, s) for p in geometry.profiles for s in p.starts
                     if first <= s and s + p.size - 1 <= last),
                    key=lambda ps: (ps[0].size, ps[0].compute_slices, "+" in ps[0].name,
                                    ps[0].profile_id, ps[1]))
    if not inside:
        return "every placement of a profile that holds them holds slices beside them too"
    refusals = [planner.refusal(layout, p, s) for p, s in inside]
    return refusals[0] if all(refusals) else None


def _unfit(layout: Layout, profile: Profile, err: planner.PlanError) -> Fit:
    """Why ``profile`` does not fit, in a few words from the planner's refusal: the busy
    instances in its way, the idle ones it would destroy, an idle twin to use as it is; else
    the planner's own words."""
    def at(insts: Sequence[Instance], state: str) -> str:
        return ", ".join("%s%s at slot %d" % (i.profile, state, i.start)
                         for i in sorted(insts, key=lambda i: i.start))

    if err.busy:
        return Fit(profile, None, "no free placement: %s" % at(err.busy, " busy"))
    if err.destroyable:
        return Fit(profile, None, "would destroy idle %s" % at(err.destroyable, ""),
                   err.destroyable)
    twins = [i for i in layout.instances if i.profile == profile.name and not i.busy]
    if twins:
        return Fit(profile, None, "idle %s can be used as it is" % at(twins[:1], ""))
    return Fit(profile, None, str(err))  # (no model's geometry was seen to come here)


def create_refused(words: str, allowed_by: str) -> str:
    """The agent's refusal of a create, its hint at the protocol's ``destroy_idle`` said as
    what this admin can do (``allowed_by``): "pass destroy_idle: true" is no word they type."""
    if not words.endswith(DESTROY_IDLE_HINT):
        return words
    return "%s; %s" % (words[:-len(DESTROY_IDLE_HINT)], allowed_by)


def outcome(change: MigChange, answer: Mapping[str, Any]) -> str:
    """What was done, in words, from the agent's answer — the instances a create destroyed as
    it found them (a rollback since the plan made them again with other uuids), and, for a
    mode, whether a GPU reset is needed before it takes effect."""
    where = _where(change.host, change.gpu)
    if change.action == CREATE:  # what it destroyed as the agent found it, not as planned
        gone = sorted(answer.get("destroy") or (), key=lambda i: i.get("start", 0))
        return "created %s at slot %d on %s: %s%s" % (
            answer["profile"], answer["start"], where, answer["instance"]["uuid"] or answer.get(
                "warning") or "its uuid was not read back (fractui status shows it)",
            "; destroyed idle %s" % ", ".join(map(_instance, gone)) if gone else "")
    if change.action == DESTROY:
        return "destroyed %s on %s" % (_instance(answer.get("destroyed") or {}), where)
    word = "on" if change.params["enabled"] else "off"
    if answer.get("reset_required") is None:
        return "MIG mode %s asked on %s; %s" % (word, where, answer.get(
            "warning", "whether it took effect is not known: see fractui status"))
    if answer["reset_required"]:
        now = "on" if answer.get("mig_mode") else "off"
        return "MIG mode %s is pending on %s: it takes effect after a GPU reset (%s); until " \
               "then MIG stays %s, and nothing new is placed on it" % (
                   word, where, reset_hint(change.host, change.gpu, change.params["enabled"]), now)
    return "MIG mode is now %s on %s%s" % (word, where, ", after a GPU reset (nothing ran "
                                          "there)" if answer.get("reset") else "")
