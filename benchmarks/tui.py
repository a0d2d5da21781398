"""How long the TUI takes to draw a full frame of the slice map, at 100 and 1,000 GPUs; and how
long a key press takes to reach the screen while a 1,000-GPU fleet keeps updating.

    python benchmarks/tui.py [--gpus 100,1000] [--rounds 30] [--presses 60] [--record]

The fleet is the frozen sample the snapshot tests draw (hosts of 8 GPUs: A100 and H100 in MIG
mode, L4 and A10 with memory shares), in a headless app of 160x48. Measured, per round:

- *model*: every host's status turned into lines (what the UI thread does if every host of the
  fleet reports at once);
- *map lines, cold*: every visible line of the slice map drawn with its line cache emptied;
- *frame, map redrawn*: the whole screen composed by Textual and turned into the terminal's
  bytes, after the map's line cache is emptied and the map marked dirty (every GPU on screen
  changed at once; the header and queue panel come from Textual's caches);
- *frame, all redrawn*: the same with every widget marked dirty too (the header and the queue
  panel are Rich tables, rendered again: what a resize costs);
- *jobs view, reload*: the jobs view's rows built from every job and host status, sorted, and
  its table filled again (what happens once a second while the view is open and a row
  changed); *jobs view, frame*: a full frame of the jobs view, every widget marked dirty.

Key-press latency on a 1,000-GPU fleet shaped as the demo's (hosts of up to 80 GPUs): the map's
cursor to the GPU below (``down``; the map scrolls when it leaves the view) and to the next
slice (``right``), the jobs view opened (``J``) and sorted by the next column (``o``), and in
placement mode the ghost moved to the next GPU (``down``). Each press is sent as the terminal
driver sends keys, and timed until the first frame that shows its effect has been rendered into
the terminal's bytes (the headless driver writes nothing, so the frame is turned into bytes
here, as a terminal app would; only the write to a tty is left out). Meanwhile a thread feeds
host updates at the demo's rate: each host's agent pushes a changed snapshot twice a second,
each changing a GPU's memory, utilisation or a MIG instance (the UI rebuilds that host's lines
and the map). Textual paints at most 60 frames a second, so a press waits up to one frame period
(16.7 ms) for its frame by design.

Textual's compositor is reached through private names (``_compositor``, ``_render_buffer``,
``_display``): there is no public call that renders a frame without writing it to a terminal.
``--record`` writes the tables into docs/benchmarks.md with the machine it ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import os
import random
import statistics
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.record import machine, record_section  # noqa: E402
from fractui.config import Config  # noqa: E402
from fractui.tui.app import FractuiApp  # noqa: E402
from fractui.tui.fleet_screen import FleetScreen  # noqa: E402
from fractui.tui.jobs_view import JobsScreen  # noqa: E402
from fractui.tui.model import GHOST, FleetModel, GpuGroupLine, GpuLine  # noqa: E402
from fractui.tui.sample import NOW, QUEUES, TEAMS, sample_fleet  # noqa: E402
from fractui.tui.source import Source  # noqa: E402
from textual import events  # noqa: E402

SIZE = (160, 48)
TARGET_MS = 30.0
KEY_TARGET_MS = 50.0
DEMO_HOST_GPUS = 80  # the demo's load hosts at 1,000 GPUs
PUSH_S = 0.5  # an agent pushes a changed snapshot at most twice a second


def timed_ms(fn: Callable[[], object], rounds: int) -> List[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def measure(gpus: int, rounds: int, compact: bool) -> Dict[str, List[float]]:
    fleet = sample_fleet(gpus, per_host=8)
    config = Config(path=None, queues=QUEUES, teams=TEAMS)
    app = FractuiApp(Source(fleet.statuses, fleet.store), config, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, FleetScreen)
        screen.compact = compact
        screen.relayout()
        await pilot.pause()
        smap = screen.map
        rows = smap.size.height

        def model() -> None:
            m = FleetModel(screen.model.order)
            m.set_store(fleet.store)
            for status in fleet.statuses:
                m.update(status)
            m.lines(per_line=8 if compact else 0)

        def lines_cold() -> None:
            smap._cache.clear()
            for y in range(rows):
                smap.render_line(y)

        def frame(everything: bool) -> Callable[[], None]:
            def run() -> None:
                smap._cache.clear()
                dirty = list(screen.walk_children(with_self=True)) if everything else [smap]
                for widget in dirty:
                    widget.refresh()
                update = screen._compositor.render_full_update()
                app.console._render_buffer(app.console.render(update))
            return run

        lines_cold()  # the first draw also warms Python's own caches: not counted
        result = {"model": timed_ms(model, rounds), "lines": timed_ms(lines_cold, rounds),
                  "map": timed_ms(frame(False), rounds), "all": timed_ms(frame(True), rounds),
                  "rows": [float(rows)], "lines_n": [float(len(smap.lines))]}
        app.open_jobs()
        await pilot.pause()
        view = app.screen
        assert isinstance(view, JobsScreen)

        def reload() -> None:
            view._drawn = ()  # as if a row changed: the table is filled again
            view.reload()

        def jobs_frame() -> None:
            for widget in view.walk_children(with_self=True):
                widget.refresh()
            update = view._compositor.render_full_update()
            app.console._render_buffer(app.console.render(update))

        result.update(reload=timed_ms(reload, rounds), jobs_frame=timed_ms(jobs_frame, rounds),
                      jobs_n=[float(len(view.rows))])
    return result


class Feed(threading.Thread):
    """Host updates from another thread, as the fleet's sessions deliver them: every host
    pushes a changed snapshot every PUSH_S."""

    def __init__(self, source: Source, statuses: list, seed: int = 1) -> None:
        super().__init__(daemon=True)
        self.source, self.statuses = source, statuses
        self.rng = random.Random(seed)
        self.stopped = threading.Event()
        self.sent = 0
        self.started = time.monotonic()

    def change(self, status: Any) -> Any:
        snapshot = copy.deepcopy(status.snapshot)
        gpu = self.rng.choice(snapshot["gpus"])
        gpu["memory_used_mib"] = self.rng.randrange(0, gpu["memory_mib"] // 2)
        if gpu.get("mig_mode"):
            free = not any(i["start"] == 7 for i in gpu["instances"])
            gpu["instances"] = [i for i in gpu["instances"] if i["start"] != 7] + (
                [{"uuid": "MIG-x-%d" % self.sent, "gi_id": 9, "profile": "1g.10gb",
                  "start": 7, "size": 1, "memory_mib": 10240, "busy": True, "pids": [],
                  "memory_used_mib": 100}] if free else [])
        else:
            gpu["utilization_gpu"] = self.rng.randrange(0, 100)
        return dataclasses.replace(status, snapshot=snapshot)

    def rate(self) -> float:
        """Host updates sent a second."""
        return self.sent / max(1e-9, time.monotonic() - self.started)

    def run(self) -> None:
        self.started = time.monotonic()
        while not self.stopped.is_set():
            started = time.monotonic()
            for status in self.statuses:
                self.source.changed(self.change(status))
                self.sent += 1
            self.stopped.wait(max(0.0, PUSH_S - (time.monotonic() - started)))


async def key_latency(gpus: int, presses: int, feed: bool) -> Dict[str, List[float]]:
    """Milliseconds from each key press to the first frame painted with its effect."""
    fleet = sample_fleet(gpus, per_host=DEMO_HOST_GPUS)
    config = Config(path=None, queues=QUEUES, teams=TEAMS)
    source = Source(fleet.statuses, fleet.store)
    app = FractuiApp(source, config, clock=lambda: NOW)
    painted: List[float] = []
    want: List[Optional[Callable[[], bool]]] = [None]

    def display(screen: Any, renderable: Any) -> None:  # what App._display does, less the tty
        if renderable is None:
            return
        if hasattr(renderable, "render_segments"):
            renderable.render_segments(app.console)
        else:
            app.console._render_buffer(app.console.render(renderable))
        check = want[0]
        if check is not None and check():
            painted.append(time.perf_counter())
            want[0] = None

    out: Dict[str, List[float]] = {"ghost": [], "down": [], "right": [], "jobs": [],
                                   "sort": []}
    async with app.run_test(size=SIZE) as pilot:
        app._display = display  # type: ignore[method-assign]
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, FleetScreen)
        driver = app._driver
        assert driver is not None
        pump = Feed(source, fleet.statuses) if feed else None
        if pump is not None:
            pump.start()
        rng = random.Random(2)

        async def press(key: str, check: Callable[[], bool]) -> float:
            await asyncio.sleep(rng.uniform(0.02, 0.08))  # anywhere in the frame period
            painted.clear()
            want[0] = check
            t0 = time.perf_counter()
            driver.send_message(events.Key(key, None))
            deadline = time.monotonic() + 5
            while not painted:
                assert time.monotonic() < deadline, "no frame showed the key press"
                await asyncio.sleep(0.0005)
            return (painted[0] - t0) * 1000

        smap = screen.map
        smap.focus()
        for _ in range(presses):  # the cursor to the GPU below, and to the next slice
            if smap.cursor_line >= len(smap.lines) - 2:
                smap.action_first()
                await pilot.pause()
            before = smap.cursor
            out["down"].append(await press("down", lambda b=before: smap.cursor != b and
                                           smap.cursor_line >= 0))
            before = smap.cursor
            out["right"].append(await press("right", lambda b=before: smap.cursor != b))
        for _ in range(max(1, presses // 6)):  # the jobs view opened, sorted, closed
            out["jobs"].append(await press("J", lambda: isinstance(app.screen, JobsScreen)
                                           and len(app.screen.table.rows) > 0))
            view = app.screen
            assert isinstance(view, JobsScreen)
            key = view.sort_key
            out["sort"].append(await press("o", lambda k=key: view.sort_key != k and
                                           view._drawn[2] == view.sort_key))
            await press("escape", lambda: app.screen is screen)
            smap.focus()
        screen.start_placement(next(j for j in fleet.store.jobs if j.state == "pending"
                                    and j.queue == "mig-3g"))
        while screen.placement is None or screen.placement.busy:
            await pilot.pause(0.01)

        def ghost_on_current() -> bool:
            c = screen.placement.current if screen.placement else None
            if c is None or not 0 <= smap.cursor_line < len(smap.lines):
                return False
            line = smap.lines[smap.cursor_line]
            gpus = line.gpus if isinstance(line, GpuGroupLine) else (
                (line,) if isinstance(line, GpuLine) else ())
            return any((g.host, g.index) == (c.host, c.gpus[0]) and any(
                b.kind == GHOST for b in g.blocks) for g in gpus)

        for _ in range(presses):  # the ghost to the next GPU
            out["ghost"].append(await press("down", ghost_on_current))
        if pump is not None:
            pump.stopped.set()
            pump.join()
            out["updates"] = [pump.rate()]
        out["candidates"] = [float(len(screen.placement.candidates))]
        out["hosts"] = [float(len(fleet.statuses))]
    return out


def _cell(values: List[float]) -> str:
    return "%.1f ms (max %.1f)" % (statistics.median(values), max(values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpus", default="100,1000")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--presses", type=int, default=60)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    shared = (" Load average at the start: %.1f on %d cores (above about 1, other processes"
              " ran meanwhile, and maxima and p95s include their turns)."
              % (os.getloadavg()[0], os.cpu_count() or 0))
    header = ("| GPUs | view | map lines (on screen) | model, all hosts | map lines, cold | "
              "frame, map redrawn | frame, all redrawn | jobs view: jobs, reload | "
              "jobs view, frame |\n|---|---|---|---|---|---|---|---|---|")
    rows = [header]
    for gpus in [int(g) for g in args.gpus.split(",")]:
        for compact in (False, True):
            r = asyncio.run(measure(gpus, args.rounds, compact))
            row = "| %d | %s | %d (%d) | %s | %s | %s | %s | %d, %s | %s |" % (
                gpus, "compact" if compact else "one GPU a line", r["lines_n"][0], r["rows"][0],
                _cell(r["model"]), _cell(r["lines"]), _cell(r["map"]), _cell(r["all"]),
                r["jobs_n"][0], _cell(r["reload"]), _cell(r["jobs_frame"]))
            rows.append(row)
            print(row, flush=True)
    body = "\n".join(rows) + (
        "\n\nHeadless app, %dx%d; median of %d rounds (max in brackets). Target: a full frame "
        "of the slice map within %.0f ms at 1,000 GPUs. The slice map draws only the lines on "
        "screen, so its cost follows the terminal's size, not the fleet's; the model (every host's "
        "lines rebuilt) follows the fleet, and runs only for hosts that changed. A max is one "
        "round's worst: on a shared machine it includes other processes' turns and Python's "
        "garbage collector; the medians are what repeat from run to run. The jobs view's "
        "reload and frame are measured with its screen shown, over every job of the fleet."
        % (SIZE[0], SIZE[1], args.rounds, TARGET_MS) + shared)
    print(body.split("\n\n", 1)[1])
    if args.record:
        record_section("TUI frame (benchmarks/tui.py)", body, machine())
    keys = ["| fleet | host updates (each rebuilds a host of up to 80 GPUs) | key | median | "
            "p95 | max |", "|---|---|---|---|---|---|"]
    for feed in (False, True):
        r = asyncio.run(key_latency(1000, args.presses, feed))
        for key, what in (("down", "down on the map (the cursor to the GPU below)"),
                          ("right", "right on the map (the cursor to the next slice)"),
                          ("jobs", "J (the jobs view opened)"),
                          ("sort", "o in the jobs view (sorted by the next column)"),
                          ("ghost", "down in placement mode (ghost to the next GPU)")):
            v = sorted(r[key])
            row = "| 1,000 GPUs, %d hosts | %s | %s | %.1f ms | %.1f ms | %.1f ms |" % (
                r["hosts"][0], "%.0f a second, every host twice" % r["updates"][0] if feed
                else "none", what,
                statistics.median(v), v[int(0.95 * (len(v) - 1))], v[-1])
            keys.append(row)
            print(row, flush=True)
    note = ("\n\nHeadless app, %dx%d (compact map), %d presses each (`J` and `o`: %d each), "
            "sent as the terminal driver sends keys, at random points of the frame period; "
            "timed to the first frame that shows the press, rendered into terminal bytes. "
            "Textual paints at most 60 frames a second, so up to 16.7 ms of each number is the "
            "wait for the next frame. Target: %.0f ms." % (
                SIZE[0], SIZE[1], args.presses, max(1, args.presses // 6), KEY_TARGET_MS)
            + shared)
    print(note.strip())
    if args.record:
        record_section("TUI key-press latency (benchmarks/tui.py)", "\n".join(keys) + note,
                       machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
