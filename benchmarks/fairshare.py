"""Fair share over time: which team gets the fleet when one of them used it heavily lately.

    python benchmarks/fairshare.py [--hours 24] [--seed 1] [--record]

A synthetic stream through the pure pass (fractui.sched.queueing.schedule) on a simulated
clock, no store and no host: 8 whole GPUs (two idle hosts of 4 x L4), one queue of whole GPUs,
teams A and B of equal weight whose quotas (8 GPUs each) never bind, so the order of service
alone decides. Team A held all 8 GPUs for the 24 hours before the start, team B nothing. From
the start both keep a backlog of jobs (each of 30 to 90 minutes, the same seeded stream for
every setting, the two teams' jobs alternating in submission). Each simulated minute ends the
jobs whose time is up, computes each team's recent GPUs from the usage records so far (as the
scheduler does once a minute; the config's default half-life of 24 h over a window of 168 h)
and runs a pass; decisions start at once. Measured: each team's share of the GPU-hours held in
the first 1, 4, 8 and ``--hours`` (24) hours, for usage_weight 0 (weights only, the default), 0.5
and 1; and how far A is held back: the most GPUs it held at once in the first 8 hours, and
when its first job started.

``--record`` writes the table into docs/benchmarks.md with the machine it ran on.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
from typing import Dict, List, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.record import machine, record_section  # noqa: E402
from fractui.config import FairShareSettings, QueueConfig, TeamConfig  # noqa: E402
from fractui.sched.fleetview import HostView  # noqa: E402
from fractui.sched.queueing import schedule  # noqa: E402
from fractui.sched.quota import Recent  # noqa: E402
from fractui.store.model import PENDING, RUNNING, Job, UsageRecord  # noqa: E402
from fractui.usage.fairshare import recent_gpus  # noqa: E402
from fractui.usage.report import held_s  # noqa: E402

HOUR = 3600.0
STEP_S = 60.0
START = 1_800_000_000.0
UID = "bench"
WHOLE = QueueConfig("whole", gpus=1)
TEAMS = (TeamConfig("A", quota_gpus=8), TeamConfig("B", quota_gpus=8))
WEIGHTS = (0.0, 0.5, 1.0)
BACKLOG = 12  # pending jobs each team keeps


def host(name: str) -> HostView:
    gpus = [{"index": i, "uuid": "%s-%d" % (name, i), "name": "L4", "memory_mib": 23034,
             "mig_mode": False, "instances": [], "layout_version": "v0", "processes": []}
            for i in range(4)]
    hello = {"cpus": 64, "memory_mib": 512 * 1024, "privileges": {"mig_changes": True},
             "gpus": gpus}
    return HostView(name, "online", hello, {"gpus": gpus}, {})


def the_past() -> List[UsageRecord]:
    """Team A held all 8 GPUs for the day before the start."""
    return [UsageRecord(-1 - i, 0, "A", "whole", "a", "h%d" % (i // 4), (i % 4,), "L4", None,
                        23034, 1.0, START - 24 * HOUR, START - 24 * HOUR, START, "done")
            for i in range(8)]


def run(usage_weight: float, hours: float, seed: int) -> List[UsageRecord]:
    """The usage records of ``hours`` of the stream (the past's left out)."""
    fair = dataclasses.replace(FairShareSettings(), usage_weight=usage_weight)
    rng = random.Random(seed)
    views = [host("h0"), host("h1")]
    records: List[UsageRecord] = the_past()
    running: Dict[int, Tuple[Job, float, int]] = {}  # id -> (job, ends at, its record)
    pending: List[Job] = []
    next_id = 1
    now = START
    while now < START + hours * HOUR:
        for job_id, (job, ends, at) in list(running.items()):  # what ended by now
            if ends <= now:
                records[at] = dataclasses.replace(records[at], ended_at=ends, outcome="done")
                del running[job_id]
        for team in ("A", "B"):  # each team's backlog kept full, the two alternating
            while sum(j.team == team for j in pending) < BACKLOG:
                pending.append(Job(next_id, "whole", team, "j%d" % next_id, ("x",),
                                   WHOLE.request(), PENDING, now + next_id * 1e-6, now))
                next_id += 1
        recent = Recent.of(usage_weight, recent_gpus(records, now, fair.half_life_s,
                                                     fair.window_s))
        jobs = pending + [j for j, _, _ in running.values()]
        result = schedule(views, jobs, (WHOLE,), TEAMS, UID, recent=recent)
        by_id = {j.id: j for j in pending}
        for d in result.decisions:
            job = dataclasses.replace(by_id[d.job], state=RUNNING, slot=d.slot, started_at=now)
            records.append(UsageRecord(job.id, 0, job.team, "whole", "u", d.slot.host,
                                       d.slot.gpus, "L4", None, None, d.slot.charge,
                                       job.submitted_at, now))
            running[job.id] = (job, now + rng.uniform(0.5, 1.5) * HOUR, len(records) - 1)
            pending.remove(by_id[d.job])
        now += STEP_S
    return records[8:]


def shares(records: List[UsageRecord], hours: float) -> Dict[str, float]:
    """Each team's part of the GPU-hours held in the first ``hours``."""
    until = START + hours * HOUR
    held = {"A": 0.0, "B": 0.0}
    for r in records:
        held[r.team] += r.charge * held_s(r, START, until, until)  # type: ignore[index]
    total = sum(held.values())
    return {t: h / total for t, h in held.items()}


def most_held(records: List[UsageRecord], team: str, until: float) -> int:
    """The most GPUs ``team`` held at once before ``until``."""
    edges = sorted([(r.started_at, 1) for r in records if r.team == team] +
                   [(r.ended_at or until, -1) for r in records if r.team == team])
    held = most = 0
    for at, step in edges:
        if at >= until:
            break
        held += step
        most = max(most, held)
    return most


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    spans = sorted({1.0, 4.0, 8.0, args.hours})
    lines = ["| usage_weight | " + " | ".join("B's share, first %g h" % h for h in spans) +
             " | A's most GPUs at once, first 8 h | A's first start |",
             "|---|" + "---|" * (len(spans) + 2)]
    for weight in WEIGHTS:
        records = run(weight, args.hours, args.seed)
        starts = [r.started_at for r in records if r.team == "A"]
        lines.append("| %g | " % weight + " | ".join(
            "%.1f %%" % (100 * shares(records, h)["B"]) for h in spans) + " | %d | %s |" % (
            most_held(records, "A", START + 8 * HOUR),
            "%.1f h" % ((min(starts) - START) / HOUR) if starts else "none"))
    table = "\n".join(lines)
    print(table)
    if args.record:
        record_section(
            "Fair share over time",
            "`python benchmarks/fairshare.py --hours %g --seed %d`: 8 whole GPUs, teams A and B "
            "of equal weight, quotas that never bind; A held all 8 GPUs for the day before, B "
            "nothing; then both keep a backlog of 30-90 minute jobs (the pure pass on a "
            "simulated clock, a pass a minute; half-life 24 h, window 168 h). Team B's share "
            "of the GPU-hours held from the start (A's is the rest):\n\n%s"
            % (args.hours, args.seed, table), machine())

if __name__ == "__main__":
    main()
