"""Scheduler benchmark: what the scheduler's loop costs when nothing is new, and what a full pass
costs, at 1,000 and 10,000 GPUs with 100 and 5,000 pending jobs.

    python benchmarks/scheduler.py [--gpus 1000,10000] [--pending 100,5000] [--rounds 10]
                                   [--record]

The fleet is the frozen sample the TUI's benchmark draws (hosts of 8 GPUs: A100 and H100 in MIG
mode, L4 and A10 with memory shares, three quarters of it busy with jobs), given to a real
Scheduler on a real SQLite store in a temporary directory; no host is reached (nothing is new,
so nothing is launched). The pending jobs are spread over the sample's four queues and three
teams whose quota is spent, so every pass computes where each kind of job could go and then
leaves it waiting — the steady state of a busy fleet. Measured, after passes that settle it
(the first records every job's reason and every host's inventory):

- *turn, nothing new*: one turn of the scheduler's loop when no wake came (what it does every
  ``interval_s``): the lease renewed, nothing read;
- *full pass, nothing new*: ``Scheduler.step()`` on the settled store (what a wake for a change
  that moves nothing costs);
- *pass after a submit*: one job submitted, then ``step()``.

``--record`` writes the table into docs/benchmarks.md with the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.record import machine, record_section  # noqa: E402
from fractui.config import Config, TeamConfig  # noqa: E402
from fractui.scheduler import Scheduler  # noqa: E402
from fractui.store import SqliteStore  # noqa: E402
from fractui.tui.sample import QUEUES, sample_fleet  # noqa: E402

TEAMS = tuple(TeamConfig(name, quota_gpus=0.0) for name in ("vision", "nlp", "speech"))


class FrozenFleet:
    """The sample's hosts as a fleet that never changes and is never called."""

    def __init__(self, statuses: List[Any]):
        self.sessions: Dict[str, Any] = {}
        self._statuses = statuses

    def statuses(self) -> List[Any]:
        return self._statuses


def _ms(fn: Callable[[], object], rounds: int) -> List[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def measure(gpus: int, pending: int, rounds: int) -> Dict[str, List[float]]:
    fleet = sample_fleet(gpus, per_host=8)
    config = Config(path=None, queues=QUEUES, teams=TEAMS)
    with tempfile.TemporaryDirectory() as root:
        store = SqliteStore(os.path.join(root, "store.db"))
        for i in range(pending):
            queue = QUEUES[i % len(QUEUES)]
            store.submit(queue.name, TEAMS[i % len(TEAMS)].name, "wait-%d" % i,
                         ["python", "x.py"], queue.request(), "bench")
        sched = Scheduler(config, store, FrozenFleet(fleet.statuses),  # type: ignore[arg-type]
                          name="bench")
        for _ in range(2):
            assert sched.step(), "the lease is this scheduler's alone"
        out: Dict[str, List[float]] = {}
        turn = getattr(sched, "_turn", None)
        if turn is not None:  # a loop that runs a full pass only when something is new
            turn()  # the first turn of a loop is a full pass: nothing was read before it
            out["turn"] = _ms(turn, rounds)
        out["pass"] = _ms(sched.step, rounds)
        submits = []
        for i in range(rounds):
            queue = QUEUES[i % len(QUEUES)]
            store.submit(queue.name, TEAMS[0].name, "new-%d" % i, ["python", "x.py"],
                         queue.request(), "bench")
            submits += _ms(sched.step, 1)
        out["submit"] = submits
        store.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", default="1000,10000")
    parser.add_argument("--pending", default="100,5000")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    rows = ["| GPUs | pending jobs | turn, nothing new (median) | full pass, nothing new "
            "(median) | max | pass after a submit (median) |", "|---|---|---|---|---|---|"]
    for gpus in (int(g) for g in args.gpus.split(",")):
        for pending in (int(p) for p in args.pending.split(",")):
            got = measure(gpus, pending, args.rounds)
            turn = "%.2f ms" % statistics.median(got["turn"]) if "turn" in got else \
                "(every turn is a full pass)"
            rows.append("| %d | %d | %s | %.1f ms | %.1f ms | %.1f ms |" % (
                gpus, pending, turn, statistics.median(got["pass"]), max(got["pass"]),
                statistics.median(got["submit"])))
            print(rows[-1], flush=True)
    body = "\n".join(rows) + (
        "\n\n%d rounds per cell. The fleet: the TUI benchmark's frozen sample (hosts of 8 GPUs, "
        "three quarters busy), on a real SQLite store; the pending jobs spread over four "
        "queues and three teams whose quota is spent, so each pass finds where each kind of "
        "job could go and leaves it waiting. The fleet is frozen: each host's records are the "
        "objects the last pass saw, so every host is kept by identity (on a live fleet a host "
        "whose snapshot came since is first compared by its signature). The turn's time is "
        "the lease's renewal, one SQLite write to the temporary directory. Target: a pass "
        "with nothing new <= 10 ms at 10,000 GPUs: the turn is what runs when nothing is "
        "new." % args.rounds)
    print("\n" + "\n".join(rows[:2]))
    if args.record:
        record_section("Scheduler passes (benchmarks/scheduler.py)", body, machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
