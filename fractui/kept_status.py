"""``fractui status`` for a config that lists no hosts (a researcher who reaches only the
store): the hosts as the store keeps them — the inventory the lease holder records, the hosts it
finds unreachable, what is out of service and the store's jobs placed on each — said as the
store's word and as of when, with what ``jobs`` says beside it (no scheduler; its passes
failing). No host is asked, and no store is made (the verbs that only read)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from fractui.checked_store import open_checked_store
from fractui.config import Config
from fractui.sched.cordons import marks
from fractui.store.model import ON_HOST, OUT_OF_CONFIG, Cordon, Job
from fractui.terminal import print_json, print_lines, say
from fractui.words import NO_SCHEDULER, failing_passes, local_time


@dataclass(frozen=True)
class Kept:
    """What one read of the store keeps of the hosts, and when it was read (its clock)."""

    inventory: Dict[str, Dict[str, Any]]
    since: Dict[str, float]
    away: Dict[str, float]
    cordons: Tuple[Cordon, ...]
    jobs: Tuple[Job, ...]
    holder: Optional[str]
    trouble: Optional[str]
    now: float


def read(config: Config) -> Kept:
    store = open_checked_store(config, hear=False, make=False)
    try:
        held = store.lease_holder()
        jobs = tuple(store.jobs(ON_HOST))
        return Kept(store.inventory(), store.inventory_since(),
                    dict(store.holder_memory().hosts_away), tuple(store.cordons()), jobs,
                    held[0] if held else None, store.trouble(), store.now())
    finally:
        store.close()


def records(kept: Kept) -> List[Dict[str, Any]]:
    """Each host the store keeps, as ``status --json`` shows it: ``state`` is the lease
    holder's word (``removed`` from its config, its facts kept a while in case it is put
    back; ``unreachable`` since ``away_since``, else ``reachable``; ``unknown`` while no
    scheduler holds the lease), ``facts_since`` when its facts were recorded."""
    out = marks(list(kept.cordons), list(kept.jobs))
    on: Dict[Tuple[str, int], List[int]] = {}
    booked: Dict[Tuple[str, int], int] = {}
    for held in (h for job in kept.jobs for h in job.holding()):  # (a move's target too)
        for gpu in held.slot.gpus:  # type: ignore[union-attr]
            where = (held.slot.host, gpu)  # type: ignore[union-attr]
            on.setdefault(where, []).append(held.id)
            booked[where] = booked.get(where, 0) + (held.slot.memory_mib or 0)  # type: ignore
    hosts = []
    for name in sorted(set(kept.inventory) | set(kept.away)):
        facts = kept.inventory.get(name) or {}
        state = "removed" if facts.get(OUT_OF_CONFIG) else "unreachable" if (
            name in kept.away) else "reachable" if kept.holder else "unknown"
        gpus = [{"index": g.get("index"), "uuid": g.get("uuid"), "name": g.get("name"),
                 "memory_mib": g.get("memory_mib"), "mig_mode": g.get("mig_mode"),
                 "booked_mib": None if g.get("mig_mode") else booked.get(
                     (name, g.get("index")), 0),
                 "out_of_service": out.get((name, g.get("index"))),
                 "jobs": sorted(set(on.get((name, g.get("index")), [])))}
                for g in facts.get("gpus") or []]
        hosts.append({"name": name, "state": state, "away_since": kept.away.get(name),
                      "facts_since": kept.since.get(name), "cpus": facts.get("cpus"),
                      "memory_mib": facts.get("memory_mib"),
                      "out_of_service": out.get((name, None)), "gpus": gpus})
    return hosts


def status(config: Config, args: argparse.Namespace) -> int:
    kept = read(config)
    hosts = records(kept)
    say("the config lists no hosts ([[hosts]]): the hosts as the store keeps them at %s, the "
        "scheduler's word (no host is asked)" % local_time(kept.now))
    if kept.trouble is not None:  # as jobs says it: what is kept is not renewed meanwhile
        say(failing_passes(kept.trouble))
    if kept.holder is None:
        say(NO_SCHEDULER + "; what the store keeps of the hosts may be old")
    if args.json:
        print_json({"source": "store", "as_of": kept.now, "scheduler": kept.holder,
                    "hosts": hosts})
        return 0
    lines = [] if hosts else ["the store keeps no host yet: a scheduler records each it reaches"]
    for h in hosts:
        away, facts = h["away_since"], h["facts_since"]
        words = ["unreachable since %s" % local_time(away) if away else "",
                 "facts of %s" % local_time(facts) if facts else "no facts kept",
                 "[%s]" % h["out_of_service"] if h["out_of_service"] else ""]
        lines.append("%-16s %-11s %s" % (h["name"], h["state"], ", ".join(w for w in words if w)))
        # its jobs after what they book (the mark last: "5758/23034 MiB booked: jobs 7")
        lines += [gpu_line(g, ["MIG" if g["mig_mode"] else booked_of(g) + (
                                   ":" if g["jobs"] else ""),
                               "jobs %s" % " ".join(map(str, g["jobs"])) if g["jobs"] else "",
                               "[%s]" % g["out_of_service"] if g["out_of_service"] else ""])
                  for g in h["gpus"]]
    print_lines(lines)
    return 0


def gpu_line(gpu: Dict[str, Any], said: Sequence[str]) -> str:
    """A GPU's line under its host in ``status``, as its host says it or as the store keeps
    it, then the words ``said`` of it: an index or a model the record lacks is said to be
    unknown, never printed as "None"."""
    index, name = gpu.get("index"), gpu.get("name")
    return "    gpu%-3s %-28s %s" % ("?" if index is None else index,
                                      "model unknown" if name is None else name,
                                      " ".join(w for w in said if w))


def booked_of(gpu: Dict[str, Any]) -> str:
    """A shared GPU's memory as the store's jobs book it, of its total (``17275/23034 MiB
    booked``): what a member may still be given there, as the scheduler counts it before
    it looks at the host (a job launched by hand books more)."""
    if gpu["memory_mib"] is None:
        return "%d MiB booked, its total unknown" % gpu["booked_mib"] if gpu[
            "booked_mib"] else memory(None)
    return "%d/%s booked" % (gpu["booked_mib"], memory(gpu["memory_mib"]))


def memory(mib: Any) -> str:
    """A GPU's memory as kept (``4096 MiB``), or that it is not known."""
    return "memory unknown" if mib is None else "%s MiB" % mib


