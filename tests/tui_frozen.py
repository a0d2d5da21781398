"""The frozen fleet the TUI tests draw: sample hosts with one degraded and one offline, a fixed
clock, and an app built on them without any agent."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from typing import Any, Awaitable, Callable, Mapping, Optional, Sequence

from fractui.config import Config, TuiSettings
from fractui.store.model import Cordon
from fractui.tui.app import FractuiApp
from fractui.tui.sample import NOW, QUEUES, TEAMS, sample_fleet
from fractui.tui.source import Source

STATES = {"h100-1": ("degraded", "MIG is read-only: the agent runs without root"),
          "l4-1": ("offline", "connection lost: ssh: Connection reset by peer")}


# the output of job #1 (j1 on a100-1), for the job screen
LOGS = {"a100-1/j1": ["epoch %d  loss %.3f  lr 3e-4" % (e, 2.5 / (e + 1)) for e in range(12)]
        + ["saved checkpoint to /data/ckpt/epoch-11.pt", "epoch 12  loss 0.190  lr 3e-4"]}


# job 27 (nlp's, waiting 5 minutes) waiting for the fleet, not its quota: nlp is starved
STARVED = {27: "no room: no GPU in the fleet has a free slice for it"}


def frozen_app(gpus: int = 16, readonly: bool = False, cordons: Sequence[Cordon] = (),
               reasons: Optional[Mapping[int, str]] = None, **tui: Any) -> FractuiApp:
    """``reasons``: why some pending jobs wait instead (by id)."""
    reasons = reasons or {}
    fleet = sample_fleet(gpus, states=STATES)
    config = Config(path=None, queues=QUEUES, teams=TEAMS, tui=TuiSettings(**tui))
    jobs = tuple(dataclasses.replace(j, reason=reasons[j.id]) if j.id in reasons else j
                 for j in fleet.store.jobs)
    store = dataclasses.replace(fleet.store, jobs=jobs, cordons=tuple(cordons))
    return FractuiApp(Source(fleet.statuses, store, logs=LOGS, usage=fleet.usage()), config,
                      clock=lambda: NOW, readonly=readonly)


async def settled(pilot: Any) -> None:
    """Until the first store read has landed and the screen has drawn it."""
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def pilot_test(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Runs an async pilot test in its own event loop (no async plugin needed)."""
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run
