"""Scheduler benchmark: what the scheduler's loop costs when nothing is new, and what a full pass
costs, at 1,000 and 10,000 GPUs with 100 and 5,000 pending jobs; submit -> placed; the TUI's
key presses while a scheduler runs.

    python benchmarks/scheduler.py [--gpus 1000,10000] [--pending 100,5000] [--rounds 10]
                                   [--record]
    python benchmarks/scheduler.py --latency [--rounds 40] [--backends sqlite,postgresql]
                                   [--record]
    python benchmarks/scheduler.py --keys [--presses 60] [--record]

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

``--latency`` measures submit -> placed on an idle fleet instead: a real ``fractui scheduler``
process on one simulated host (4 x L4, the local transport), jobs that exit at once submitted
one at a time (the next after the last ended, at a random point of the poll interval); the
latency is from the job's ``submitted_at`` to the time of its ``decide`` audit entry, both the
store's clock; on an SQLite file and on a PostgreSQL server the script starts itself
(benchmarks/postgres.py). To compare with the poll, run it (``--backends sqlite``) from a
checkout of an older commit, its config written as that commit reads it (``[scheduler] store =
PATH`` before the store had a URL).

``--keys`` measures what a running scheduler costs the TUI: benchmarks/tui.py's key-press
latency at 1,000 GPUs (host updates arriving), with no scheduler, and with the benchmark's
scheduler (1,000 GPUs, 100 pending jobs) either running full passes back to back — busier than
any real one — on a thread of the TUI's own process (where the TUI ran its scheduler before
issue 14) or in a process of its own (where it runs it now, a child process), or running its
real loop (a turn each ``interval_s``, nothing new) in a process of its own.

``--record`` writes the tables into docs/benchmarks.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.postgres import described, postgres_server  # noqa: E402
from benchmarks.record import machine, record_section  # noqa: E402
from benchmarks.tui import timed_ms  # noqa: E402
from fractui.config import Config, TeamConfig  # noqa: E402
from fractui.scheduler import Scheduler  # noqa: E402
from fractui.store import SqliteStore, open_store, sqlite_url  # noqa: E402
from fractui.store.model import ENDED  # noqa: E402
from fractui.tui.sample import QUEUES, sample_fleet  # noqa: E402
from tests.conftest import stop_host  # noqa: E402

TEAMS = tuple(TeamConfig(name, quota_gpus=0.0) for name in ("vision", "nlp", "speech"))


class FrozenFleet:
    """The sample's hosts as a fleet that never changes and is never called."""

    def __init__(self, statuses: List[Any]):
        self.sessions: Dict[str, Any] = {}
        self._statuses = statuses

    def statuses(self) -> List[Any]:
        return self._statuses


def _scheduler(root: str, gpus: int, pending: int) -> Scheduler:
    """A scheduler on the frozen sample fleet and a store of ``pending`` waiting jobs, settled
    (its first passes recorded every job's reason and every host's inventory)."""
    fleet = sample_fleet(gpus, per_host=8)
    config = Config(path=None, queues=QUEUES, teams=TEAMS)
    store = SqliteStore(os.path.join(root, "store.db"))
    for i in range(pending):
        queue = QUEUES[i % len(QUEUES)]
        store.submit(queue.name, TEAMS[i % len(TEAMS)].name, "wait-%d" % i,
                     ["python", "x.py"], queue.request(), "bench")
    sched = Scheduler(config, store, FrozenFleet(fleet.statuses),  # type: ignore[arg-type]
                      name="bench")
    for _ in range(2):
        assert sched.step(), "the lease is this scheduler's alone"
    return sched


def _busy(stop: threading.Event, ready: Callable[[], None], loop: bool) -> None:
    """Until ``stop`` (``ready`` once it runs), at 1,000 GPUs with 100 pending jobs: full
    passes back to back, or (``loop``) the scheduler's own loop."""
    with tempfile.TemporaryDirectory() as root:
        sched = _scheduler(root, 1000, 100)
        if loop:
            sched.start()
        ready()
        while not (stop.wait() if loop else stop.is_set()):
            sched.step()
        if loop:
            sched.stop()
        sched.store.close()


def keys(presses: int) -> Dict[str, Dict[str, List[float]]]:
    """benchmarks/tui.py's key-press latency with no scheduler, one on a thread of this
    process, and one in a process of its own."""
    from benchmarks.tui import key_latency

    out = {"none": asyncio.run(key_latency(1000, presses, True))}
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=_busy, args=(stop, ready.set, False), daemon=True)
    thread.start()
    ready.wait()
    out["thread"] = asyncio.run(key_latency(1000, presses, True))
    stop.set()
    thread.join()
    for mode in ("passes", "loop"):
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--busy", mode],
                                 cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
        assert child.stdout is not None and child.stdout.readline() == "busy\n"
        out["process " + mode] = asyncio.run(key_latency(1000, presses, True))
        child.stdin.close()  # type: ignore[union-attr]
        child.wait(60)
    return out


def measure(gpus: int, pending: int, rounds: int) -> Dict[str, List[float]]:
    with tempfile.TemporaryDirectory() as root:
        sched = _scheduler(root, gpus, pending)
        store = sched.store
        out: Dict[str, List[float]] = {}
        turn = getattr(sched, "_turn", None)
        if turn is not None:  # a loop that runs a full pass only when something is new
            turn()  # the first turn of a loop is a full pass: nothing was read before it
            out["turn"] = timed_ms(turn, rounds)
        out["pass"] = timed_ms(sched.step, rounds)
        submits = []
        for i in range(rounds):
            queue = QUEUES[i % len(QUEUES)]
            store.submit(queue.name, TEAMS[0].name, "new-%d" % i, ["python", "x.py"],
                         queue.request(), "bench")
            submits += timed_ms(sched.step, 1)
        out["submit"] = submits
        store.close()
    return out


def latency(rounds: int, url: str) -> List[float]:
    """submit -> placed (ms) with a real scheduler process on one idle simulated host, on the
    (new, empty) store at ``url``."""
    root = tempfile.mkdtemp(prefix="fractui-bench-")
    state = os.path.join(root, "gpu-a")
    config = os.path.join(root, "config.toml")
    with open(config, "w") as f:
        f.write("[store]\nurl = %s\n[[hosts]]\nname = \"gpu-a\"\ntransport = \"local\"\n"
                "sim = \"4xL4\"\nstate_dir = %s\n[[queues]]\nname = \"quarter\"\n"
                "gpu = 0.25\n" % (json.dumps(url), json.dumps(state)))
    store = open_store(url)
    with open(os.path.join(root, "scheduler.log"), "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fractui", "--config", config,
                                 "scheduler", "--name", "bench"], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=REPO))
    feed = store.feed()
    out_ms: List[float] = []
    try:
        request = QUEUES[0].request()
        for i in range(rounds + 2):  # the first two warm the scheduler up
            job = store.submit("quarter", None, "lat-%d" % i, ["true"], request, "bench")
            deadline = time.monotonic() + 60
            while store.get(job.id).state not in ENDED:
                assert time.monotonic() < deadline and proc.poll() is None, "never placed"
                feed.wait(1.0)
            decided = [e for e in store.audit_log(job.id) if e.action == "decide"]
            if i >= 2:
                out_ms.append((decided[0].time - job.submitted_at) * 1000)
            time.sleep(random.uniform(0, 1))  # anywhere in the scheduler's 1 s poll
    finally:
        feed.close()
        proc.terminate()
        proc.wait(60)
        store.close()
        stop_host(state)
    return out_ms


def latencies(rounds: int, backends: List[str]) -> List[tuple[str, List[float], str]]:
    """``latency`` on each backend: an SQLite file in a temporary directory, or a PostgreSQL
    server this script starts (benchmarks/postgres.py); with what the store was."""
    out = []
    for backend in backends:
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as root:
                out.append(("SQLite file", latency(rounds, sqlite_url(
                    os.path.join(root, "store.db"))), "SQLite: a file in a temporary "
                    "directory."))
        elif backend == "postgresql":
            with postgres_server() as (new_url, version):
                out.append(("PostgreSQL %s" % version, latency(rounds, new_url()),
                            described(version)))
        else:
            raise SystemExit("--backends: sqlite or postgresql, got %r" % backend)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", default="1000,10000")
    parser.add_argument("--pending", default="100,5000")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--latency", action="store_true", help="submit -> placed instead")
    parser.add_argument("--backends", default="sqlite,postgresql",
                        help="--latency's stores: sqlite, postgresql or both")
    parser.add_argument("--keys", action="store_true",
                        help="the TUI's key-press latency with and without a scheduler")
    parser.add_argument("--presses", type=int, default=60)
    parser.add_argument("--busy", choices=("passes", "loop"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.busy:  # --keys's scheduler process: passes until stdin closes
        stop = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        _busy(stop, lambda: print("busy", flush=True), args.busy == "loop")
        return 0
    if args.keys:
        got = keys(args.presses)
        rows = ["| scheduler | key | median | p95 | max | vs none (median) |",
                "|---|---|---|---|---|---|"]
        for where, what in (("none", "none"),
                            ("thread", "passes back to back, on a thread of the TUI's process"),
                            ("process passes", "passes back to back, in a process of its own"),
                            ("process loop", "its loop (nothing new), in a process of its own")):
            for key, name in (("down", "down on the map (the cursor a GPU down)"),
                              ("ghost", "down in placement")):
                v = sorted(got[where][key])
                base = statistics.median(got["none"][key])
                rows.append("| %s | %s | %.1f ms | %.1f ms | %.1f ms | %.2fx |" % (
                    what, name, statistics.median(v), v[int(0.95 * (len(v) - 1))], v[-1],
                    statistics.median(v) / base))
                print(rows[-1], flush=True)
        if args.record:
            record_section("TUI key presses while the scheduler runs (benchmarks/scheduler.py "
                           "--keys)", "\n".join(rows) + "\n\nbenchmarks/tui.py's key-press "
                           "latency at 1,000 GPUs with host updates arriving (%d presses a "
                           "key), while the benchmark's scheduler (1,000 GPUs, 100 pending "
                           "jobs) runs: full passes back to back on a thread of the TUI's "
                           "process (where a TUI ran its scheduler before issue 14) or in a "
                           "process of its own (where it runs now), or its real loop in a "
                           "process of its own. The machine has 2 cores shared with other "
                           "work: a process that never rests takes one of them. Target: "
                           "within 1.2x of none." % args.presses,
                           machine())
        return 0
    if args.latency:
        rows = ["| store | jobs | median | p90 | max |", "|---|---|---|---|---|"]
        notes = []
        for where, got, note in latencies(args.rounds, args.backends.split(",")):
            notes.append(note)
            rows.append("| %s | %d | %.1f ms | %.1f ms | %.1f ms |" % (
                where, len(got), statistics.median(got),
                sorted(got)[int(0.9 * (len(got) - 1))], max(got)))
            print(rows[-1], flush=True)
        if args.record:
            record_section("Submit to placed (benchmarks/scheduler.py --latency)",
                           "\n".join(rows) +
                           "\n\nOne idle simulated host (4 x L4, local transport) and a real "
                           "`fractui scheduler` process (interval_s 1 s); jobs that exit at "
                           "once, submitted one at a time at a random point of the poll "
                           "interval; from the job's submitted_at to its decide audit entry "
                           "(the store's clock). %s Target: <= 100 ms median with the "
                           "feed." % " ".join(notes), machine())
        return 0
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
