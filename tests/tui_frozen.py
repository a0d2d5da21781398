"""The frozen fleet the TUI tests draw: sample hosts with one degraded and one offline, a fixed
clock, and an app built on them without any agent; for the report screen, a real SQLite store
that ran a known job stream up to that clock."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import html
import re
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Optional, Sequence

from fractui.cells import each_cell
from fractui.config import Config, TeamConfig, TuiSettings, UsageSettings
from fractui.store.base import Store
from fractui.store.model import Cordon, GpuTime, Hold, Sampled, Slot, UsageRecord
from fractui.store.sqlite import SqliteStore
from fractui.tui.app import FractuiApp
from fractui.tui.messages import KEPT, Notice
from fractui.tui.sample import NOW, QUEUES, TEAMS, sample_fleet
from fractui.tui.source import Source
from fractui.usage.report import held_s

STATES = {"h100-1": ("degraded", "MIG is read-only: the agent runs without root"),
          "l4-1": ("offline", "connection lost: ssh: Connection reset by peer")}


# the output of job #1 (j1 on a100-1), for the job screen
LOGS = {"a100-1/j1": ["epoch %d  loss %.3f  lr 3e-4" % (e, 2.5 / (e + 1)) for e in range(12)]
        + ["saved checkpoint to /data/ckpt/epoch-11.pt", "epoch 12  loss 0.190  lr 3e-4"]}


# job 27 (nlp's, waiting 5 minutes) waiting for the fleet, not its quota: nlp is starved
STARVED = {27: "no room: no GPU in the fleet has a free slice for it"}


def frozen_app(gpus: int = 16, readonly: bool = False, cordons: Sequence[Cordon] = (),
               usage: Optional[Store] = None, reasons: Optional[Mapping[int, str]] = None,
               sampled: bool = True, holder: Optional[str] = None,
               trouble: Optional[str] = None, bounds: Optional[Mapping[str, int]] = None,
               holds: Optional[Mapping[str, Hold]] = None, more_teams: Sequence[str] = (),
               fewer_teams: Sequence[str] = (),
               store_states: Optional[Mapping[int, str]] = None,
               no_start: Optional[Mapping[int, Optional[float]]] = None,
               **tui: Any) -> FractuiApp:
    """``usage``: a store the report screen and the team standing read (usage_store), else
    the sample fleet's usage records (``sampled``; none: as without a store); ``reasons``:
    why some pending jobs wait instead (by id); ``holder``: who holds the store's lease, and
    ``trouble`` what fails its passes; ``bounds``: the teams' bounds on waiting jobs the
    store lists (none: each team held to the default); ``holds``: what the teams hold for a
    waiting job, as the store keeps them (none: nothing); ``more_teams``: teams the config lists
    after the sample's, with no job; ``fewer_teams``: the sample's teams the config lacks (an
    old copy's); ``store_states``: the store's state of some jobs instead (by id), their
    agents' records left as they are; ``no_start``: running jobs the store has with no start
    time (a start its agent holds, a launch answered ``starting``), each with when it went
    back to its queue (None: it never did). The map and the queues show the
    sample fleet's jobs as ever. Its config keeps GPU time by the hour, as usage_store's is
    kept."""
    reasons = reasons or {}
    fleet = sample_fleet(gpus, states=STATES)
    teams = tuple(t for t in TEAMS if t.name not in fewer_teams) + tuple(
        TeamConfig(name) for name in more_teams)
    config = Config(path=None, queues=QUEUES, teams=teams, tui=TuiSettings(**tui),
                    usage=UsageSettings(bucket_s=H))
    store_states, no_start = store_states or {}, no_start or {}
    jobs = tuple(dataclasses.replace(j, reason=reasons.get(j.id, j.reason),
                                     state=store_states.get(j.id, j.state), **(
                                         {"started_at": None, "queued_at": no_start[j.id]}
                                         if j.id in no_start else {}))
                 for j in fleet.store.jobs)
    store = dataclasses.replace(fleet.store, jobs=jobs, cordons=tuple(cordons), holder=holder,
                                trouble=trouble)
    source = Source(fleet.statuses, store, logs=LOGS,
                    usage=fleet.usage() if sampled and usage is None else (), bounds=bounds,
                    holds=holds)
    source.store = usage
    return FractuiApp(source, config, clock=lambda: NOW, readonly=readonly)


H = 3600.0
MIG_UNMEASURED = "NVML gives no per-process utilisation on MIG"


def usage_store(path: str) -> SqliteStore:
    """A SQLite store that ran a known job stream over the 20 hours before NOW, through the
    store's own transitions on a clock set step by step (what the scheduler writes):

    - #1 vision, a quarter of a10-1 gpu0, waited 30 min, ran 4 h at 60 %, done at -15.5 h;
    - #2 nlp, 3g.40gb on a100-1 gpu0 (charge 0.5, MIG: unmeasured), waited 1 h, ran 5 h,
      failed at -12 h;
    - #3 nlp, 3g.40gb on a100-1 gpu0 from -16 h + 10 min, requeued at -8 h, again on gpu1
      from -7 h (waited 1 h), still running;
    - #4 vision, a whole h100-1 gpu1 from -10 h + 2 min (waited 2 min), running at 85 %;
    - #5 speech, 10 GiB of a10-1 gpu0 (charge 0.5) from -6 h + 1 min, done at -15 min, 40 %;
    - #6 nlp, 3g.40gb on a100-1 gpu1 beside #3 from -3 h (waited 30 min), running;
    - #7 speech, a quarter of a10-1 gpu0 beside #5 from -40 min (waited 5 min), running at
      20 %;

    and each of those four GPUs online every hour of the last day, its GPU time as a lease
    holder would have summed it from those attempts (gpu_time). In the last 25 minutes five
    attempts share three GPUs: without sharing, five."""
    clock = [NOW - 20 * H]
    store = SqliteStore(path, clock=lambda: clock[0])

    def at(hours_before: float) -> None:
        clock[0] = NOW - hours_before * H

    def run(job: int, slot: Slot, model: str, hours_before: float) -> None:
        at(hours_before)
        store.place(job, slot, "sched", "placed")
        store.started(job, "j%d" % job, clock[0], "sched", "started", model=model)

    def sampled(util: Optional[float], memory_mib: float) -> Sampled:
        return Sampled(samples=100, memory_peak_mib=int(memory_mib * 1.2),
                       memory_mean_mib=memory_mib, util_samples=0 if util is None else 100,
                       util_mean=util, util_note=MIG_UNMEASURED if util is None else None)

    def end(job: int, state: str, hours_before: float, s: Sampled) -> None:
        at(hours_before)
        store.ended(job, ("running",), state, None, "sched", state, "end",
                    exit_code=0 if state == "done" else 1, ended_at=clock[0], sampled=s)

    quarter = Slot("a10-1", (0,), memory_mib=5760, charge=0.25)
    mig = Slot("a100-1", (0,), profile="3g.40gb", start=4, charge=0.5)
    at(20)
    store.submit("quarter", "vision", "train-vit", ["python", "train.py"], {}, "alice@ws")
    run(1, quarter, "A10", 19.5)
    at(18)
    store.submit("mig-3g", "nlp", "finetune", ["python", "ft.py"], {}, "bob@ws")
    run(2, mig, "A100-80GB", 17)
    at(16)
    store.submit("mig-3g", "nlp", "eval", ["python", "eval.py"], {}, "bob@ws")
    run(3, dataclasses.replace(mig, start=0), "A100-80GB", 16 - 600 / H)
    end(1, "done", 15.5, sampled(60.0, 5000))
    end(2, "failed", 12, sampled(None, 30000))
    at(10)
    store.submit("whole", "vision", "pretrain", ["python", "pt.py"], {}, "carol@ws")
    run(4, Slot("h100-1", (1,), charge=1.0), "H100", 10 - 120 / H)
    at(8)
    store.requeue(3, ("running",), "sched", "preempted for a borrowed slice",
                  sampled=sampled(None, 20000))
    run(3, Slot("a100-1", (1,), profile="3g.40gb", start=4, charge=0.5), "A100-80GB", 7)
    at(6)
    store.submit("10g", "speech", "asr", ["python", "asr.py"], {}, "dan@ws")
    run(5, Slot("a10-1", (0,), memory_mib=10240, charge=0.5), "A10", 6 - 60 / H)
    at(3.5)
    store.submit("mig-3g", "nlp", "serve", ["python", "serve.py"], {}, "erin@ws")
    run(6, Slot("a100-1", (1,), profile="3g.40gb", start=0, charge=0.5), "A100-80GB", 3)
    at(45 / 60)
    store.submit("quarter", "speech", "tts", ["python", "tts.py"], {}, "dan@ws")
    run(7, quarter, "A10", 40 / 60)
    end(5, "done", 0.25, sampled(40.0, 9000))
    at(5 / 60)
    store.keep_usage({(4, 0): sampled(85.0, 70000), (3, 1): sampled(None, 25000),
                      (6, 0): sampled(None, 15000), (7, 0): sampled(20.0, 4000)})
    records = store.usage(NOW - 24 * H, NOW)
    store.keep_gpu_time([gpu_time(records, host, gpu, model, NOW - h * H)
                         for h in range(1, 25)
                         for host, gpu, model in (("a10-1", 0, "A10"), ("a100-1", 0, "A100-80GB"),
                                                  ("a100-1", 1, "A100-80GB"),
                                                  ("h100-1", 1, "H100"))])
    clock[0] = NOW
    return store


def gpu_time(records: Sequence[UsageRecord], host: str, gpu: int, model: str,
             bucket: float) -> GpuTime:
    """A GPU online for the whole hour from ``bucket``: held the charged seconds of the
    attempts on it (each of these on one GPU) and idle where none was, as GpuClock sums them,
    so its time held while online is what the usage records held there."""
    mine = [r for r in records if r.host == host and gpu in r.gpus]
    on = sorted((max(r.started_at, bucket), min(NOW if r.ended_at is None else r.ended_at,
                                                  bucket + H)) for r in mine)
    busy, until = 0.0, bucket
    for start, end in on:  # the union of the attempts' times in the bucket
        busy += max(0.0, end - max(start, until))
        until = max(until, end)
    return GpuTime(host, gpu, bucket, model, online_s=H, idle_s=H - busy,
                   held_s=sum(r.charge * held_s(r, bucket, bucket + H, NOW) for r in mine))


async def settled(pilot: Any) -> None:
    """Until the reads under way have landed and the screen has drawn them, and a read asked
    meanwhile too: a screen makes it once the one under way has ended (``OneAtATime``), so
    it starts only as that one's end is seen."""
    await pilot.pause()
    for _ in range(2):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


@contextlib.asynccontextmanager
async def settled_app(size: tuple[int, int], **frozen: Any
                      ) -> AsyncIterator[tuple[FractuiApp, Any]]:
    """The pilot tests' start: ``frozen_app(**frozen)`` run at ``size`` under a pilot, its
    first store read drawn (``settled``); the app and its pilot."""
    app = frozen_app(**frozen)
    async with app.run_test(size=size) as pilot:
        await settled(pilot)
        yield app, pilot


def notices(app: FractuiApp, since: int = 0) -> list[Notice]:
    """The notices the app has said, oldest first: its own record of them (``e`` lists it),
    as Textual's toasts expire in 5 s, which a test on a loaded machine may outlast. ``since``:
    only those after a mark (``len(app.notices.kept)`` then), for a test that looks at what
    comes next; clearing the toasts would not clear the record."""
    kept = list(app.notices.kept)
    assert not since or len(kept) < KEPT, "the record is full: a mark no longer says where"
    return kept[since:]


def said(app: FractuiApp, since: int = 0) -> list[str]:
    """What the notices (``notices``) said, without their titles or severities."""
    return [n.message for n in notices(app, since)]


def pilot_test(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Runs an async pilot test in its own event loop (no async plugin needed)."""
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


_SVG_TEXT = re.compile(r'<text class="[^"]*" x="([0-9.]+)" y="[0-9.]+" textLength="[0-9.]+" '
                       r'clip-path="url\(#[^)]*-line-([0-9]+)\)">([^<]*)</text>')
_CELL = 12.2  # the width of a cell in Rich's SVG export


def screen_lines(app: FractuiApp) -> list[str]:
    """The screen's text as drawn, line by line (from the app's SVG screenshot: each run of
    text at its column, blank cells as spaces). Columns are cells, not characters: a mark is
    no column, a wide character two."""
    lines: dict[int, list[str]] = {}
    for x, line, text in _SVG_TEXT.findall(app.export_screenshot()):
        drawn = lines.setdefault(int(line), [])
        at = round(float(x) / _CELL)
        run = each_cell(html.unescape(text).replace("\xa0", " "))
        drawn.extend(" " * (at + len(run) - len(drawn)))
        drawn[at:at + len(run)] = run
    return ["".join(lines.get(n, [])).rstrip() for n in range(max(lines, default=-1) + 1)]
