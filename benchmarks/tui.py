"""How long the TUI takes to draw a full frame of the slice map, at 100 and 1,000 GPUs.

    python benchmarks/tui.py [--gpus 100,1000] [--rounds 30] [--record]

The fleet is the frozen sample the snapshot tests draw (hosts of 8 GPUs: A100 and H100 in MIG
mode, L4 and A10 with memory shares), in a headless app of 160x48. Measured, per round:

- *model*: every host's status turned into lines (what the UI thread does if every host of the
  fleet reports at once);
- *map lines, cold*: every visible line of the slice map drawn with its line cache emptied;
- *frame, map redrawn*: the whole screen composed by Textual and turned into the terminal's
  bytes, after the map's line cache is emptied and the map marked dirty (every GPU on screen
  changed at once; the header and queue panel come from Textual's caches);
- *frame, all redrawn*: the same with every widget marked dirty too (the header and the queue
  panel are Rich tables, rendered again: what a resize costs).

Textual's compositor is reached through private names (``_compositor``, ``_render_buffer``):
there is no public call that renders a frame without writing it to a terminal.
``--record`` writes the table into docs/benchmarks.md with the machine it ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.record import machine, record_section  # noqa: E402
from fractui.config import Config  # noqa: E402
from fractui.tui.app import FractuiApp  # noqa: E402
from fractui.tui.fleet_screen import FleetScreen  # noqa: E402
from fractui.tui.model import FleetModel  # noqa: E402
from fractui.tui.sample import NOW, QUEUES, TEAMS, sample_fleet  # noqa: E402
from fractui.tui.source import Source  # noqa: E402

SIZE = (160, 48)
TARGET_MS = 30.0


def _timed(fn: Callable[[], object], rounds: int) -> List[float]:
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
        result = {"model": _timed(model, rounds), "lines": _timed(lines_cold, rounds),
                  "map": _timed(frame(False), rounds), "all": _timed(frame(True), rounds),
                  "rows": [float(rows)], "lines_n": [float(len(smap.lines))]}
    return result


def _cell(values: List[float]) -> str:
    return "%.1f ms (max %.1f)" % (statistics.median(values), max(values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpus", default="100,1000")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    header = ("| GPUs | view | map lines (on screen) | model, all hosts | map lines, cold | "
              "frame, map redrawn | frame, all redrawn |\n|---|---|---|---|---|---|---|")
    rows = [header]
    for gpus in [int(g) for g in args.gpus.split(",")]:
        for compact in (False, True):
            r = asyncio.run(measure(gpus, args.rounds, compact))
            row = "| %d | %s | %d (%d) | %s | %s | %s | %s |" % (
                gpus, "compact" if compact else "one GPU a line", r["lines_n"][0], r["rows"][0],
                _cell(r["model"]), _cell(r["lines"]), _cell(r["map"]), _cell(r["all"]))
            rows.append(row)
            print(row, flush=True)
    body = "\n".join(rows) + (
        "\n\nHeadless app, %dx%d; median of %d rounds (max in brackets). Target: a full frame "
        "of the slice map within %.0f ms at 1,000 GPUs. The slice map draws only the lines on screen, "
        "so its cost follows the terminal's size, not the fleet's; the model (every host's "
        "lines rebuilt) follows the fleet, and runs only for hosts that changed. A max is one "
        "round's worst: on a shared machine it includes other processes' turns and Python's "
        "garbage collector; the medians are what repeat from run to run."
        % (SIZE[0], SIZE[1], args.rounds, TARGET_MS))
    print(body.split("\n\n", 1)[1])
    if args.record:
        record_section("TUI frame (benchmarks/tui.py)", body, machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
