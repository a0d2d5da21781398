"""Usage benchmark: what usage accounting costs at fleet scale.

    python benchmarks/usage.py [--gpus 1000,10000] [--attempts 2000,20000] [--rounds 20]
                               [--record]

Measured, each as the median and the worst of ``--rounds`` (a fresh look or read each time):
- the lease holder's look at every GPU (fractui.usage.gputime.GpuClock.observe, every 5 s on
  the holder's loop; what it summed handed over once a minute, as the holder writes it) on a
  synthetic fleet of ``--gpus`` GPUs (8 a host, half of them with a
  running job of a quarter share);
- ``fractui report``'s work on ``--attempts`` usage records spread over 7 days: reading them
  from an SQLite store (``Store.usage``), the report by team (``report.build``) and the plots'
  series of 56 steps (``report.series``), and the store file's size with those records.

``--record`` writes the table into docs/benchmarks.md with the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from typing import Callable, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.record import machine, record_section  # noqa: E402
from fractui.sched.fleetview import HostView  # noqa: E402
from fractui.store.model import DONE, RUNNING, Job, Sampled, Slot  # noqa: E402
from fractui.store.sqlite import SqliteStore  # noqa: E402
from fractui.usage.gputime import GpuClock  # noqa: E402
from fractui.usage.report import build, series  # noqa: E402

DAY = 86400.0


def timed(work: Callable[[], object], rounds: int) -> Tuple[float, float]:
    """Median and worst milliseconds of ``rounds`` runs."""
    took = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        took.append((time.perf_counter() - start) * 1000)
    return statistics.median(took), max(took)


def fleet(gpus: int) -> Tuple[List[HostView], List[Job]]:
    views, jobs = [], []
    for h in range(gpus // 8):
        name = "host-%d" % h
        records = [{"index": i, "name": "NVIDIA L4", "utilization_gpu": 40,
                    "processes": [{"pid": 1000 + i}] if i % 2 else []} for i in range(8)]
        views.append(HostView(name, "online", {"gpus": []}, {"gpus": records}))
        for i in range(1, 8, 2):
            jobs.append(Job(len(jobs) + 1, "quarter", "t", "n", ("x",), {}, RUNNING, 0.0, 0.0,
                            slot=Slot(name, (i,), None, None, 5760, 0.25)))
    return views, jobs


def look(gpus: int, rounds: int) -> Tuple[float, float]:
    views, jobs = fleet(gpus)
    clock = GpuClock(300.0)
    t = [1_000_000.0]
    clock.observe(views, jobs, t[0])

    def one() -> None:  # a look every 5 s, handed to the store once a minute (12 looks)
        t[0] += 5
        clock.observe(views, jobs, t[0])
        if t[0] % 60 == 0:
            clock.take()
    return timed(one, rounds)


def filled(path: str, attempts: int, now: float) -> SqliteStore:
    """A store whose ``attempts`` attempts ran over the 7 days before ``now`` (through the
    store's own transitions, on a clock the benchmark sets)."""
    rng = random.Random(16)
    at = [now - 7 * DAY]
    store = SqliteStore(path, clock=lambda: at[0])
    starts = sorted(now - rng.uniform(0, 7 * DAY) for _ in range(attempts))
    for n, start in enumerate(starts):
        at[0] = start - rng.uniform(0, 600)
        job = store.submit("q%d" % (n % 4), "team%d" % (n % 5), "j", ["x"], {},
                           "user%d@ws" % (n % 40))
        slot = Slot("host-%d" % (n % 125), (n % 8,), None, None, 5760, 0.25)
        store.place(job.id, slot, "sched", "fits")
        store.started(job.id, "j%d" % n, start, "sched", "started", model="NVIDIA L4")
        end = start + rng.uniform(60, 4 * 3600)
        if end < now:
            at[0] = end
            store.ended(job.id, (RUNNING,), DONE, None, "sched", "done", "end", exit_code=0,
                        ended_at=end, sampled=Sampled(samples=100, memory_peak_mib=5000,
                                                      memory_mean_mib=4000.0,
                                                      util_samples=100, util_mean=20.0))
    at[0] = now
    return store


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", default="1000,10000")
    parser.add_argument("--attempts", default="2000,20000")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    rows = ["| what | size | median ms | worst ms |", "|---|---|---|---|"]
    for gpus in (int(g) for g in args.gpus.split(",")):
        med, worst = look(gpus, args.rounds)
        rows.append("| the holder's look at every GPU (`GpuClock.observe`) | %d GPUs | %.1f | "
                    "%.1f |" % (gpus, med, worst))
        print(rows[-1], flush=True)
    now = 1_800_000_000.0
    for attempts in (int(a) for a in args.attempts.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "store.db")
            store = filled(path, attempts, now)
            records = store.usage(now - 7 * DAY, now)
            for what, work in (
                    ("read a week of usage records (`Store.usage`, SQLite)",
                     lambda: store.usage(now - 7 * DAY, now)),
                    ("the report by team (`report.build`)",
                     lambda: build(records, [], now - 7 * DAY, now, "team", now)),
                    ("the plots' series, 56 steps (`report.series`)",
                     lambda: series(records, now - 7 * DAY, now, 56, now))):
                med, worst = timed(work, max(3, args.rounds // 4))
                rows.append("| %s | %d attempts | %.0f | %.0f |" % (what, attempts, med,
                                                                    worst))
                print(rows[-1], flush=True)
            store.close()
            size = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp))
            rows.append("| the store file with them (jobs, audit, usage) | %d attempts | "
                        "%.1f MiB | |" % (attempts, size / 2 ** 20))
            print(rows[-1], flush=True)
    if args.record:
        caption = ("\n\nMedian and worst of %d rounds (a quarter of them for the reads and the "
                   "report). The look runs on the lease holder's loop every 5 s; the reads, the "
                   "report and its series run in `fractui report` or the report screen's "
                   "worker, never on a pass or the UI's thread. The stores were filled through "
                   "the store's own transitions (SQLite, synchronous=FULL)." % args.rounds)
        record_section("Usage accounting (benchmarks/usage.py)", "\n".join(rows) + caption,
                       machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
