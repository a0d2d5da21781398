"""Store benchmark: store operations per second with concurrent submitters, on each backend.

    python benchmarks/store.py [--submitters 20] [--jobs 50] [--backends sqlite,postgresql]
                               [--record]
    python benchmarks/store.py --seen [--rounds 30] [--record]

For each backend, ``--submitters`` real processes each open their own store and submit
``--jobs`` jobs one after another, while one more process lists the active jobs back to back
(what a TUI reads on each change; ``--seed`` jobs are in the store before); all of them start
together once every one has opened its store. Measured: submits a second over all submitters
(from the start to the last submit's return), each submit's latency, the reader's lists a
second and each list's latency, and that every job submitted is in the store afterwards with a
number of its own.

SQLite: a file in a temporary directory (WAL, synchronous=FULL, as the store opens it).
PostgreSQL: a server this script starts itself (benchmarks/postgres.py), stopped at the end;
every write (as the server's superuser, an admin) takes the store's one write lock
(docs/decisions.md).

``--seen`` measures instead how soon one admin's TUI shows another's placement: a real TUI app
(Textual's headless pilot, no hosts, its timed re-read put off so only the store's change feed
wakes it) on one store connection, and another connection (another admin) placing a pending
job by hand (``Store.place``, manual, as ``fractui place`` and the TUI's placement record it),
at a random moment; from the call to the TUI's screen holding the job as placed.

``--record`` writes the table into docs/benchmarks.md with the machine it ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import select
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.postgres import described, postgres_server  # noqa: E402
from benchmarks.record import machine, record_section  # noqa: E402
from fractui.store import open_store, sqlite_url  # noqa: E402
from fractui.config import Config  # noqa: E402
from fractui.store.model import ACTIVE, PLACED, Slot  # noqa: E402
from fractui.tui.sample import QUEUES  # noqa: E402

TITLE = "Store operations with concurrent submitters (benchmarks/store.py)"
SEEN_TITLE = "Another admin's placement on a TUI (benchmarks/store.py --seen)"


def _child(role: str, url: str, jobs: int) -> int:
    """One process of the run: opens the store, says ``ready``, waits for ``go`` on stdin;
    then a submitter submits ``jobs`` jobs, a reader lists until stdin closes. Prints its
    latencies (ms) as JSON."""
    store = open_store(url)
    store.jobs(limit=1)  # connected (and the schema checked) before the start
    print("ready", flush=True)
    assert sys.stdin.readline() == "go\n"
    out: List[float] = []
    if role == "submit":
        queue = QUEUES[0]
        for i in range(jobs):
            t0 = time.perf_counter()
            store.submit(queue.name, None, "bench-%d-%d" % (os.getpid(), i), ["true"],
                         queue.request(), "bench")
            out.append((time.perf_counter() - t0) * 1000)
    else:
        fd = sys.stdin.fileno()
        while not (select.select([fd], [], [], 0)[0] and os.read(fd, 1) == b""):
            # until stdin closes: the submitters are done
            t0 = time.perf_counter()
            store.jobs(states=ACTIVE)
            out.append((time.perf_counter() - t0) * 1000)
    store.close()
    print(json.dumps(out), flush=True)
    return 0


def _spawn(role: str, url: str, jobs: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", role,
                             "--url", url, "--jobs", str(jobs)], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def run(url: str, submitters: int, jobs: int, seed: int) -> Dict[str, Any]:
    """One run on the store at ``url`` (new and empty), ``seed`` jobs in it before."""
    store = open_store(url)  # made (migrated) once, before the processes race to it
    for i in range(seed):
        store.submit(QUEUES[0].name, None, "seed-%d" % i, ["true"], QUEUES[0].request(), "bench")
    store.close()
    procs = [_spawn("submit", url, jobs) for _ in range(submitters)]
    reader = _spawn("read", url, 0)
    for p in procs + [reader]:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
    t0 = time.perf_counter()
    for p in procs + [reader]:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    submits: List[float] = []
    for p in procs:
        assert p.stdout is not None
        submits += json.loads(p.stdout.readline())
    wall = time.perf_counter() - t0
    assert reader.stdin is not None and reader.stdout is not None
    reader.stdin.close()
    lists = json.loads(reader.stdout.readline())
    for p in procs + [reader]:
        assert p.wait(60) == 0
    store = open_store(url)
    found = store.jobs()
    store.close()
    ids = [j.id for j in found]
    return {"wall": wall, "submits": submits, "lists": lists, "stored": len(found),
            "distinct": len(set(ids)) == len(ids)}


async def seen(url: str, rounds: int) -> List[float]:
    """ms from another connection's placement by hand to this TUI's screen holding it."""
    from fractui.tui import fleet_screen
    from fractui.tui.app import FractuiApp
    from fractui.tui.source import LiveSource

    fleet_screen.STORE_EVERY_S = 3600.0  # only the feed wakes the screen
    config = Config(path=None, queues=QUEUES)
    store, other = open_store(url), open_store(url)
    source = LiveSource(config, store)
    source.start()
    app = FractuiApp(source, config)
    queue = QUEUES[0]
    out: List[float] = []
    try:
        async with app.run_test(size=(160, 40)):
            screen = app.fleet

            async def shown(job_id: int, state: str) -> None:
                deadline = time.monotonic() + 30
                while not (screen.model.store and any(
                        j.id == job_id and j.state == state for j in screen.model.store.jobs)):
                    assert time.monotonic() < deadline, "job %d never shown %s" % (job_id, state)
                    await asyncio.sleep(0.001)

            for i in range(rounds + 2):  # the first two warm up
                job = other.submit(queue.name, None, "seen-%d" % i, ["true"], queue.request(),
                                   "admin-b")
                await shown(job.id, "pending")
                await asyncio.sleep(random.uniform(0, 0.5))
                t0 = time.perf_counter()
                placing = asyncio.get_running_loop().run_in_executor(
                    None, lambda: other.place(job.id, Slot("gpu-a", (0,), charge=0.25),
                                              "admin-b", "by hand", manual=True))
                await shown(job.id, PLACED)
                if i >= 2:
                    out.append((time.perf_counter() - t0) * 1000)
                await placing
    finally:
        source.stop()
        store.close()
        other.close()
    return out


def _stores(backends: List[str]) -> Iterator[tuple[str, Callable[[], str], str]]:
    """(backend, what makes a new empty store there and gives its URL, what it is) for each
    backend, a PostgreSQL server started for it and stopped after."""
    for backend in backends:
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as root:
                made = itertools.count()
                yield backend, lambda: sqlite_url(os.path.join(
                    root, "store-%d.db" % next(made))), (
                    "SQLite: a file in a temporary directory (WAL, synchronous=FULL, as the "
                    "store opens it).")
        elif backend == "postgresql":
            with postgres_server() as (new_url, version):
                yield backend, new_url, described(version)
        else:
            raise SystemExit("--backends: sqlite or postgresql, got %r" % backend)


def _row(backend: str, submitters: int, got: Dict[str, Any]) -> str:
    s, r = sorted(got["submits"]), sorted(got["lists"])
    wall = got["wall"]
    return "| %s | %d | %d | %.2f s | %.0f | %.1f ms | %.1f ms | %.1f ms | %.0f | %.2f ms | " \
           "%d, %s |" % (
               backend, submitters, len(s), wall, len(s) / wall, statistics.median(s),
               s[int(0.95 * (len(s) - 1))], s[-1], len(r) / wall,
               statistics.median(r) if r else float("nan"), got["stored"],
               "each its own number" if got["distinct"] else "NUMBERS REPEATED")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submitters", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=50, help="jobs each submitter submits")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--seed", type=int, default=100, help="jobs in the store before")
    parser.add_argument("--repeat", type=int, default=3, help="runs on each backend")
    parser.add_argument("--seen", action="store_true",
                        help="another admin's placement on a TUI instead")
    parser.add_argument("--rounds", type=int, default=30, help="--seen's placements")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--child", choices=("submit", "read"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args.child, args.url, args.jobs)
    rows = ["| backend | submitters | submits | wall | submits/s | submit median | p95 | max "
            "| reader's lists/s | list median | jobs in the store after |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    if args.seen:
        rows = ["| store | placements | median | p90 | max |", "|---|---|---|---|---|"]
        for backend, new_url, note in _stores(args.backends.split(",")):
            got = sorted(asyncio.run(seen(new_url(), args.rounds)))
            rows.append("| %s | %d | %.1f ms | %.1f ms | %.1f ms |" % (
                backend, len(got), statistics.median(got), got[int(0.9 * (len(got) - 1))],
                got[-1]))
            print(rows[-1], flush=True)
            notes.append(note)
        if args.record:
            record_section(SEEN_TITLE, "\n".join(rows) + (
                "\n\nA real TUI app (Textual's headless pilot, no hosts; its once-a-second "
                "re-read put off, so only the change feed wakes it) on its own store "
                "connection; another connection places a pending job by hand at a random "
                "moment; from the call to the screen holding the job as placed (the screen "
                "looked at every millisecond). %d placements a backend after two that warm "
                "up. %s The issue's promise: within a second." % (args.rounds, " ".join(notes))),
                machine())
        return 0
    for backend, new_url, note in _stores(args.backends.split(",")):
        for _ in range(args.repeat):
            rows.append(_row(backend, args.submitters, run(new_url(), args.submitters,
                                                           args.jobs, args.seed)))
            print(rows[-1], flush=True)
        notes.append(note)
    print("\n" + "\n".join(rows[:2]))
    if args.record:
        record_section(TITLE, "\n".join(rows) + (
            "\n\nEach row one run, on a new store; %d submitter processes, each with its own "
            "store, submitting %d jobs one after another, and one reader process listing the "
            "active jobs back to back (what a TUI reads on each change: %d jobs in the store "
            "before, so from %d to %d a list), all started together once each had opened its "
            "store; wall: from the start to the last submit's "
            "return. %s All the processes share the machine's 2 cores with the database, and "
            "with whatever else ran on it then (other test suites)." % (
                args.submitters, args.jobs, args.seed, args.seed,
                args.seed + args.submitters * args.jobs, " ".join(notes))), machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
