"""Two admins' TUIs on one PostgreSQL store (a real server the tests start): each has a store
connection and a fleet session of its own, on the same simulated host. What one places by hand
the other's map shows with no key pressed, on the store's change feed alone (the screens' timed
re-read is put off for that test); the server restarted under them and a running scheduler
process, they say so and come back."""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator

from fractui.config import QueueConfig
from fractui.store import open_store
from fractui.tui import fleet_screen
from fractui.tui.app import FractuiApp
from fractui.tui.header import Header
from fractui.tui.model import PLACING
from fractui.tui.source import LiveSource
from tests import localfleet
from tests.test_tui_place import slots_found
from tests.tui_frozen import pilot_test
from tests.tui_live import fleet, pick, until

local_fleet = localfleet.local_fleet
MIG = {"gpu-a": "1xA100-80GB:mig"}
QUEUES = [QueueConfig(name="3g", mig="3g.40gb")]
SHOWN_S = 5.0  # a deadline for the other screen, not a measure of it


@contextlib.asynccontextmanager
async def admin(f: localfleet.LocalFleet, url: str) -> AsyncIterator[tuple[FractuiApp, Any]]:
    """One admin's TUI: its own store connection and fleet session, every host online and the
    store read."""
    store = open_store(url)
    source = LiveSource(f.config, store)
    source.start()
    app = FractuiApp(source, f.config)
    try:
        async with app.run_test(size=(160, 40)) as pilot:
            await until(pilot, lambda: [s.state for s in fleet(app).statuses.values()] == [
                "online"] * len(f.config.hosts) and fleet(app).model.store,
                        "every host online and the store read")
            yield app, pilot
    finally:
        source.stop()
        store.close()


def placing(app: FractuiApp) -> dict[str, float]:
    """Job -> where its slice starts, of the placed (not yet running) jobs on the map."""
    return {b.job: b.start for line in fleet(app).map.lines if hasattr(line, "blocks")
            for b in line.blocks if b.kind == PLACING and b.job}


async def place(app: FractuiApp, pilot: Any, job_id: int) -> None:
    """Place ``job_id`` by keyboard on the scheduler's choice of slot."""
    await pick(app, pilot, job_id)
    await pilot.press("p")
    await slots_found(app, pilot)
    await pilot.press("enter")


def test_two_admins_see_each_others_placements_on_the_feed(local_fleet, pg_server,
                                                           monkeypatch):
    monkeypatch.setattr(fleet_screen, "STORE_EVERY_S", 3600.0)  # only the feed re-reads
    url = pg_server.url(pg_server.new_database())
    f = local_fleet(MIG, QUEUES, store_url=url)
    first, second = f.submit("3g"), f.submit("3g")

    @pilot_test
    async def drive() -> None:
        async with admin(f, url) as (a, pa), admin(f, url) as (b, pb):
            assert a.source.store is not b.source.store
            assert placing(a) == placing(b) == {}
            await place(a, pa, first.id)
            await until(pa, lambda: f.store.get(first.id).state == "placed", "A placed it")
            # B pressed nothing: its map shows A's placement from the feed
            await until(pb, lambda: "#%d" % first.id in placing(b),
                        "A's placement on B's map", SHOWN_S)
            # (A's map shows it once A's own read after the placement ends: a read of its
            # worker, which may end after B's)
            await until(pa, lambda: "#%d" % first.id in placing(a), "A's placement on A's map")
            assert placing(b) == placing(a)
            await place(b, pb, second.id)
            await until(pb, lambda: f.store.get(second.id).state == "placed", "B placed it")
            await until(pa, lambda: "#%d" % second.id in placing(a),
                        "B's placement on A's map", SHOWN_S)
            await until(pb, lambda: "#%d" % second.id in placing(b), "B's placement on B's map")
            assert placing(a) == placing(b) and len(placing(a)) == 2

    drive()
    jobs = {j.id: j for j in f.store.jobs()}
    assert {jobs[first.id].slot.start, jobs[second.id].slot.start} == {0, 4}
    assert all(jobs[j].manual and jobs[j].state == "placed" for j in (first.id, second.id))


def header_note(app: FractuiApp) -> str:
    info = fleet(app).query_one(Header).info
    return (info.note or "") if info is not None else ""


def shown(app: FractuiApp) -> dict[int, str]:
    """Job -> state, of the store's jobs as the screen last read them."""
    view = fleet(app).model.store
    return {j.id: j.state for j in view.jobs} if view is not None else {}


def test_postgresql_restarted_under_a_scheduler_and_two_tuis(local_fleet, pg_server):
    """The server stopped under a running `fractui scheduler` and two TUIs: both headers say
    the store cannot be reached while it is down; once it is back both show the store again
    (no key pressed), every job submitted before is there, and the scheduler places more."""
    url = pg_server.url(pg_server.new_database())
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.25)], store_url=url)
    before = [f.submit("q"), f.submit("q")]
    sched = f.scheduler_process("sched")

    @pilot_test
    async def drive() -> None:
        async with admin(f, url) as (a, pa), admin(f, url) as (b, pb):
            running = {j.id: "running" for j in before}
            for app, pilot in ((a, pa), (b, pb)):
                await until(pilot, lambda: shown(app) == running, "both jobs running shown")
                assert "PostgreSQL" not in header_note(app)
            pg_server.stop()
            try:
                for app, pilot in ((a, pa), (b, pb)):
                    await until(pilot, lambda: "cannot reach the PostgreSQL server" in
                                header_note(app), "the store unreachable on the header")
                    assert "127.0.0.1:%d" % pg_server.port in header_note(app)
                    assert "jobs shown as read at" in header_note(app)
                    assert shown(app) == running  # what was read, still shown
            finally:
                pg_server.start()
            after = f.submit("q")  # the test's own connection, reconnected
            want = {**running, after.id: "running"}
            for app, pilot in ((a, pa), (b, pb)):
                await until(pilot, lambda: shown(app) == want and not header_note(app),
                            "the store back, the new job running")

    try:
        drive()
        assert sched.poll() is None, "the scheduler process went on"
        assert {j.id for j in f.store.jobs()} >= {j.id for j in before}
        keys = sorted(r["key"] for r in f.agent_jobs())
        assert len(keys) == 3 and len(set(keys)) == 3, keys  # each job launched once
    finally:
        sched.terminate()
        _, err = sched.communicate(timeout=60)
    assert "Traceback" not in err, err
