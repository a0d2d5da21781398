"""The TUI on a simulated local fleet (real agents, a real store): an app over a live source,
and waits that let the app's event loop run meanwhile."""

from __future__ import annotations

import contextlib
import time
from typing import Any, AsyncIterator, Callable

from fractui.tui.app import FractuiApp
from fractui.tui.fleet_screen import FleetScreen
from fractui.tui.model import GpuLine
from fractui.tui.source import LiveSource
from tests.localfleet import LocalFleet


@contextlib.asynccontextmanager
async def live_app(f: LocalFleet, readonly: bool = False,
                   size: tuple[int, int] = (160, 40)) -> AsyncIterator[tuple[FractuiApp, Any]]:
    """The app on ``f``'s hosts and store, every host online and drawn, and the store read."""
    source = LiveSource(f.config, f.store)
    source.start()
    app = FractuiApp(source, f.config, readonly=readonly)
    try:
        async with app.run_test(size=size) as pilot:
            await until(pilot, lambda: all(
                s.state == "online" for s in fleet(app).statuses.values()) and len(
                fleet(app).statuses) == len(f.config.hosts) and fleet(app).model.store,
                "every host online on screen")
            yield app, pilot
    finally:
        source.stop()


def fleet(app: FractuiApp) -> FleetScreen:
    return app.fleet


async def until(pilot: Any, check: Callable[[], object], what: str,
                timeout_s: float = 30.0) -> None:
    """Until ``check()`` holds, the app running meanwhile."""
    deadline = time.time() + timeout_s
    while not check():
        assert time.time() < deadline, "never happened: %s" % what
        await pilot.pause(0.05)


def gpu_line(app: FractuiApp, host: str, index: int) -> tuple[int, GpuLine]:
    """The map's line (its index and value) of a host's GPU."""
    lines = fleet(app).map.lines
    return next((i, line) for i, line in enumerate(lines)
                if isinstance(line, GpuLine) and (line.host, line.index) == (host, index))


async def pick(app: FractuiApp, pilot: Any, job_id: int) -> None:
    """Focus the queue panel and select pending job ``job_id`` in it."""
    panel = fleet(app).query_one("#queues")
    await until(pilot, lambda: job_id in [j.id for j in panel.pending], "job %d listed" % job_id)
    panel.focus()
    panel.select_job(job_id)
    await pilot.pause()
