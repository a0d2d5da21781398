"""Queues the fleet could never serve, found before any job waits for them forever.

Where a host's GPUs are known — from its ``sim`` spec in the config, or from the inventory the
store keeps of what each host last reported — a queue whose portion (a MIG profile, an amount of
GPU memory, a number of whole GPUs, within its hosts and GPU models) no GPU of its hosts could
hold even idle is a mistake in the config: ``file:line`` at the queue, exit 2. A queue any of
whose hosts is not known is left alone: the unknown one may be the one that serves it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Collection, Dict, List, Optional, Tuple

from remote_agent.gpu.models import parse_sim_spec

from fractui.config import Config, ConfigError, HostConfig, QueueConfig, load_config
from fractui.sched.fleetview import (HostView, build_hosts, geometry, idle_view, model_name,
                                     request_of)
from fractui.sched.mig_change import reset_hint
from fractui.sched.place import Placer
from fractui.store.model import OUT_OF_CONFIG, PENDING, Job
from fractui.words import count

Facts = Dict[str, Any]  # what a host could ever hold, as fleetview.facts keeps it


def load_checked(path: str) -> Config:
    """The config at ``path``, with every queue checked against the GPUs the sim specs name."""
    config = load_config(path)
    problem = unservable(config, {})
    if problem is not None:
        raise problem
    return config


def unservable(config: Config, inventory: Dict[str, Facts]) -> Optional[ConfigError]:
    """The first queue none of whose hosts' GPUs could ever serve it, as a ConfigError at the
    queue; hosts are known by their sim spec, else by ``inventory`` (host -> kept facts)."""
    known = {h.name: sim_facts(h) for h in config.hosts if h.sim}
    known.update({n: f for n, f in inventory.items()
                  if n not in known and any(h.name == n for h in config.hosts)})
    for queue in config.queues:
        may_use = [h.name for h in config.hosts if not queue.hosts or h.name in queue.hosts]
        if not may_use or any(n not in known for n in may_use):
            continue
        why = never_fits(queue, known, gpu_only=True)
        if why is not None:
            kept = [n for n in may_use if n not in inventory or
                    any(h.name == n and h.sim for h in config.hosts)]
            source = "their sim specs" if len(kept) == len(may_use) else (
                "what they last reported, kept in the store")
            return queue_error(config, queue, "%s (from %s)" % (why, source))
    return None


def queue_error(config: Config, queue: QueueConfig, message: str) -> ConfigError:
    """``message`` at the line of the queue's portion (its gpu, mig, memory_gib or gpus)."""
    key = next((k for k in ("mig", "gpu", "memory_gib", "gpus") if getattr(queue, k)), "name")
    return config.fail(message, "queues", config.queues.index(queue), key)


@dataclass(frozen=True)
class Judged:
    """Whether a queue's jobs can be served, judged as ``submit`` judges it, by what the store
    keeps of the hosts (never reaching one). ``fits``: True, a host it keeps could hold one;
    False, no host of the fleet could (submit refuses the queue); None, not known: it keeps
    nothing of ``unheard``, each a host the queue may use that may be the one that fits."""

    fits: Optional[bool]
    why: Optional[str]
    """Why none of the hosts kept could hold one (False, and None where some were kept)."""
    unheard: Tuple[str, ...]
    gone: str
    """The hosts out of the lease holder's config, not counted ("" where none), as said."""
    pending: str = ""
    """Where only a pending MIG mode change would let a host hold one (``fits`` True): which,
    and the reset it waits for; "" where a GPU holds one in the mode it has now."""


def judged(config: Config, queue: QueueConfig, kept: Dict[str, Facts]) -> Judged:
    """Whether ``queue``'s jobs can be served, by ``kept`` (host -> kept facts): the hosts of
    the config, or with no host list, those the lease holder recorded as in its config (one
    it marked out of it is said not counted)."""
    out = [] if config.hosts else sorted(n for n, f in kept.items() if f.get(OUT_OF_CONFIG))
    # with no host list, the hosts the queue names too: one the store keeps nothing of (never
    # reached) is a host it may use all the same, not "no host"
    names = [h.name for h in config.hosts] or sorted((set(kept) | set(queue.hosts)) - set(out))
    may_use = [n for n in names if not queue.hosts or n in queue.hosts]
    known = {n: f for n, f in kept.items() if n in may_use}
    unheard = tuple(n for n in may_use if n not in known)
    out = [n for n in out if not queue.hosts or n in queue.hosts]
    gone = "; %s, out of the scheduler's config, not counted" % ", ".join(out) if out else ""
    fixed = [n for n, f in known.items() if config.mode_fixed(n) or f.get("mig_mode_fixed")]
    why = never_fits(queue, known, whole=not unheard, fixed=fixed) if known else None
    fits = (False if not unheard else None) if why is not None else (
        True if known else None)
    changes, pending = _pending_changes(known), ""
    if fits and changes and never_fits(queue, known, fixed=fixed, settled=False) is not None:
        pending = "queue %s is served only once the MIG mode change pending on %s; until then " \
                  "no GPU holds its jobs" % (queue.name, "; or on ".join(changes))
    return Judged(fits, why, unheard, gone, pending)


def _pending_changes(known: Dict[str, Facts]) -> List[str]:
    """Each MIG mode change pending on a GPU of ``known`` (it takes effect at the GPU's next
    reset, which no pass makes: none offers a change on a GPU whose change is pending), in
    words: which GPU, its mode now and pending, and how that reset is made."""
    return ["%s gpu %s (MIG %s, now %s) takes effect, at its next GPU reset (%s)" % (
        name, g.get("index"), "on" if g.get("mig_pending") else "off",
        "on" if g.get("mig_mode") else "off",
        reset_hint(name, int(g.get("index", 0)), bool(g.get("mig_pending"))))
        for name, facts in sorted(known.items()) for g in facts.get("gpus") or ()
        if g.get("mig_pending") is not None and g.get("mig_pending") != g.get("mig_mode")]


def submittable(config: Config, queue: QueueConfig, kept: Dict[str, Facts]) -> Optional[str]:
    """What ``submit`` says of a queue (``judged``): a queue no GPU of the fleet could hold is
    refused (the config's error, exit 2). Where the store keeps nothing of a host the queue
    may use, that host may be the one that fits: the job may be queued, with the warning (or
    note) returned."""
    said = judged(config, queue, kept)
    if said.fits is False:
        raise queue_error(config, queue, (said.why or "") + said.gone)
    if said.fits is None and said.why is None:
        return ("note: the store keeps no inventory of %s yet (a scheduler records a host "
                "once it reaches it), so whether a GPU can hold queue %s is left to the "
                "scheduler: once one has looked at the job, fractui jobs says why it waits%s" % (
                    ", ".join(said.unheard) if said.unheard else "any host", queue.name,
                    said.gone))
    if said.fits is None:
        return "warning: %s; queued all the same: the store keeps nothing of %s" % (
            said.why, ", ".join(said.unheard))
    if said.pending:
        return "warning: %s; queued all the same" % said.pending
    return None


def sim_facts(host: HostConfig) -> Facts:
    """The GPUs an agent simulating ``host.sim`` reports (its CPUs and RAM are this
    machine's, unknown here)."""
    gpus = [{"index": i, "name": g.model.name, "memory_mib": g.model.memory_mib,
             "mig_mode": g.mig, "mig_pending": g.mig}
            for i, g in enumerate(parse_sim_spec(host.sim or ""))]
    return {"cpus": None, "memory_mib": None, "mig_changes": True, "gpus": gpus}


def never_fits(queue: QueueConfig, inventory: Dict[str, Facts], whole: bool = True,
               gpu_only: bool = False, fixed: Collection[str] = (),
               settled: bool = True) -> Optional[str]:
    """Why no host of ``inventory`` (host -> facts) that the queue may use could hold its jobs
    even when idle, or None if one could (or if none is known, so nothing can be said).
    ``whole``: every host the queue may use is known, so the reason speaks of the fleet, not
    only of the hosts heard.
    ``gpu_only``: the GPU part alone, with each MIG-capable GPU in either mode (what the
    hardware could ever do); else CPUs and RAM too, each GPU in its MIG mode save for the
    changes a scheduler's pass would make of it idle (``_as_a_pass_sees``; ``fixed``: the
    hosts whose modes this config or the lease holder's pins). ``settled``: each GPU whose
    MIG mode change is pending judged as once it took effect (else in the mode it has now)."""
    inventory = {n: f for n, f in inventory.items() if not queue.hosts or n in queue.hosts}
    if not inventory:
        return None
    request = dict(queue.request(), hosts=())  # the hosts it may use are those given
    if gpu_only:
        request.update(cpus=0.0, memory=0.0)
    probe = Job(0, queue.name, None, "probe", ("probe",), request, PENDING, 0.0, 0.0)
    idle = [idle_view(name, f, settled) for name, f in sorted(inventory.items())]
    views = [v for view in idle for v in _either_mode(view)] if gpu_only else [
        _as_a_pass_sees(view, view.name in fixed) for view in idle]
    if Placer(build_hosts(views, [], ""), "first-fit").place(request_of(probe)) is not None:
        return None
    kinds: Dict[str, int] = {}
    for view in idle:
        for g in view.gpu_records():
            name = model_name(g.get("name") or "?") + (" (MIG)" if g.get("mig_mode") else "")
            kinds[name] = kinds.get(name, 0) + 1
    fleet = ", ".join("%dx %s" % (n, k) for k, n in sorted(kinds.items())) or "no GPUs"
    # several GPUs are one host's, of one model: a fleet of 16 told it could not hold 8 read
    # as wrong, and a host of 2 L4s and 2 A100s "could not hold 3" with no reason
    most = max(_most_alike(view, queue) for view in idle)
    why = "no %s %s could ever hold what queue %s asks for (%s, %s)%s; %s %s" % (
        "host" if queue.gpus > 1 else "GPU",
        "in the fleet" if whole else "of the hosts heard from", queue.name, queue.describe(),
        _filters(queue, gpu_only), ": a job's GPUs are all on one host and of one model, and "
        "the most of one model%s a host has is %d" % (
            " it may use" if queue.gpu_models else "", most) if queue.gpus > most else "",
        "the fleet has" if whole else "they have", fleet)
    if gpu_only:
        return why
    cpus = max(float(f.get("cpus") or 0) for f in inventory.values())
    ram = max(int(f.get("memory_mib") or 0) for f in inventory.values()) // 1024
    return "%s; at most %s and %d GiB RAM on a host" % (why, count(cpus, "CPU"), ram)


def _most_alike(view: HostView, queue: QueueConfig) -> int:
    """The most GPUs of one model (and memory) the host has of those ``queue`` may use: as
    many as one job of it may take there, as the placer counts them (a job's GPUs are of one
    model: place.py)."""
    alike: Dict[Tuple[str, int], int] = {}
    for g in view.gpu_records():
        model = model_name(g.get("name") or "?")
        if not queue.gpu_models or model in queue.gpu_models:
            key = (model, int(g.get("memory_mib") or 0))
            alike[key] = alike.get(key, 0) + 1
    return max(alike.values(), default=0)


def _as_a_pass_sees(view: HostView, fixed: bool) -> HostView:
    """The idle host as a scheduler's pass would see it, so that the placer offers the MIG
    mode changes a pass offers, and only those (fleetview._may_flip: on a host whose agent may
    make them and lists the features, unless ``fixed``; of a GPU its agent reports
    MIG-capable; for a request that asks for MIG or for shares, place.Placer._place): no
    process on any GPU, each MIG-capable as kept (facts kept before that was: by its model)."""
    gpus = [dict(g, processes=[], mig_capable=g.get(
        "mig_capable", geometry(g.get("name") or "") is not None)) for g in view.gpu_records()]
    return replace(view, snapshot={"gpus": gpus}, mode_fixed=fixed)


def _either_mode(view: HostView) -> List[HostView]:
    """The host as it is, and with every MIG-capable GPU switched on, and off."""
    out = [view]
    for suffix, mode in (("~mig", True), ("~share", False)):
        gpus = [dict(g, mig_mode=mode, mig_pending=mode) if geometry(g.get("name") or "")
                else g for g in view.gpu_records()]
        out.append(HostView(view.name + suffix, view.state, view.hello, {"gpus": gpus}, {}))
    return out


def _filters(q: QueueConfig, gpu_only: bool) -> str:
    parts = ["isolation %s" % q.isolation]
    if q.cpus and not gpu_only:
        parts.append(count(q.cpus, "CPU"))
    if q.memory and not gpu_only:
        parts.append("%g GiB RAM" % q.memory)
    if q.hosts:
        parts.append("hosts %s" % ",".join(q.hosts))
    if q.gpu_models:
        parts.append("models %s" % ",".join(q.gpu_models))
    return ", ".join(parts)
