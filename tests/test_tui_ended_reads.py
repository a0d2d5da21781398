"""What the TUI reads of the store, and when: the newest ended jobs (up to 200 rows, as
``fractui jobs --all``) only while a view shows them — the jobs view's ``a``, the palette as it
opens — never on each of the map's reads for no one; and once shown, they are read again with
every read, so a job that ends meanwhile shows up without a key pressed."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, AsyncIterator

import pytest

from fractui.config import Config, QueueConfig
from fractui.store.model import ACTIVE, ENDED
from fractui.store.sqlite import SqliteStore
from fractui.tui import fleet_screen
from fractui.tui import jobs as jobs_screen
from fractui.tui.app import FractuiApp
from fractui.tui.jobs import JobScreen
from fractui.tui.jobs_view import JobsScreen
from fractui.tui.source import LiveSource
from tests.test_tui_pilot import palette
from tests.tui_frozen import pilot_test, settled
from tests.tui_live import fleet, until

QUEUES = (QueueConfig(name="quarter", gpu=0.25),)


class Counted(SqliteStore):
    """A real SQLite store that counts its reads of ended jobs, of active ones, and of one."""

    ended_reads = active_reads = one_reads = 0

    def jobs(self, states=None, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        if states is not None and set(states) & set(ENDED):
            self.ended_reads += 1
        if states is not None and set(states) & set(ACTIVE):
            self.active_reads += 1
        return super().jobs(states, *args, **kwargs)

    def get(self, job_id: int):  # type: ignore[no-untyped-def]
        self.one_reads += 1
        return super().get(job_id)


def cancel(store: SqliteStore, job_id: int) -> None:
    store.ended(job_id, ("pending",), "cancelled", "not wanted", "ann", "not wanted", "cancel")


@contextlib.asynccontextmanager
async def app_on(store: SqliteStore) -> AsyncIterator[tuple[FractuiApp, Any]]:
    """The TUI over ``store`` alone (no hosts), its store read."""
    config = Config(path=None, queues=QUEUES)
    source = LiveSource(config, store)
    source.start()
    app = FractuiApp(source, config)
    try:
        async with app.run_test(size=(160, 40)) as pilot:
            await until(pilot, lambda: fleet(app).model.store is not None, "the store read")
            yield app, pilot
    finally:
        source.stop()


async def reads_made(app: FractuiApp, pilot: Any, n: int = 3) -> None:
    """``n`` more reads of the store by the map, each landed."""
    for _ in range(n):
        fleet(app).read_store()
        await app.workers.wait_for_complete()
        await pilot.pause()


def test_ended_jobs_are_read_only_while_the_jobs_view_shows_them(tmp_path):
    store = Counted(str(tmp_path / "store.db"))
    failed = store.submit("quarter", None, "oom", ["true"], {}, "ann@ws")
    cancel(store, failed.id)
    waiting = store.submit("quarter", None, "waits", ["true"], {}, "ann@ws")
    later = store.submit("quarter", None, "later", ["true"], {}, "bob@ws")

    @pilot_test
    async def drive() -> None:
        async with app_on(store) as (app, pilot):
            await reads_made(app, pilot)
            assert store.ended_reads == 0  # the map's reads: none of the ended
            assert fleet(app).model.store.ended is None
            await pilot.press("J")
            await until(pilot, lambda: isinstance(app.screen, JobsScreen), "the jobs view")
            view = app.screen
            await reads_made(app, pilot)
            assert store.ended_reads == 0  # the view as it opens: what runs and waits
            assert sorted(r.ref for r in view.rows) == [str(waiting.id), str(later.id)]

            await pilot.press("a")  # ended too: read at once, and with each read from now on
            await until(pilot, lambda: str(failed.id) in [r.ref for r in view.rows],
                        "the cancelled job listed")
            seen = store.ended_reads
            assert seen >= 1
            cancel(store, later.id)  # it ends while the view shows the ended: not stale
            await until(pilot, lambda: [r.state for r in view.rows
                                        if r.ref == str(later.id)] == ["cancelled"],
                        "the job that ended meanwhile listed as ended")
            assert store.ended_reads > seen

            await pilot.press("a")  # active only again: no more ended reads
            await app.workers.wait_for_complete()
            seen = store.ended_reads
            await reads_made(app, pilot)
            assert store.ended_reads == seen

            await pilot.press("a", "escape")  # shown, then left: no more ended reads either
            await until(pilot, lambda: app.screen is fleet(app), "back on the map")
            await app.workers.wait_for_complete()
            seen = store.ended_reads
            await reads_made(app, pilot)
            assert store.ended_reads == seen
            assert fleet(app).model.store.ended is None

            await pilot.press("J")  # opened again, still on "ended too": read again
            await until(pilot, lambda: store.ended_reads > seen
                        and str(failed.id) in [r.ref for r in view.rows],
                        "the ended read again as the view shows them")

    drive()


def test_the_palette_reads_the_ended_jobs_as_it_opens_and_opens_one(tmp_path):
    store = Counted(str(tmp_path / "store.db"))
    failed = store.submit("quarter", None, "oom", ["true"], {}, "ann@ws")
    cancel(store, failed.id)

    @pilot_test
    async def drive() -> None:
        async with app_on(store) as (app, pilot):
            await reads_made(app, pilot)
            assert store.ended_reads == 0
            await palette(pilot, "open job #%d" % failed.id)
            await until(pilot, lambda: isinstance(app.screen, JobScreen)
                        and app.screen.job is not None, "the job screen from the palette")
            assert app.screen.job_id == failed.id and app.screen.job.state == "cancelled"
            assert store.ended_reads == 1  # once, as the palette opened

    drive()


def test_the_job_screen_reads_its_one_job_not_every_active_one(tmp_path, monkeypatch):
    """Left open (following a job's output for hours), the job screen reads the job's row each
    second, not the store's every active job as the map does."""
    monkeypatch.setattr(fleet_screen, "STORE_EVERY_S", 3600.0)  # the map reads on changes only
    monkeypatch.setattr(jobs_screen, "REFRESH_S", 3600.0)  # the job screen as asked below only
    store = Counted(str(tmp_path / "store.db"))
    jobs = [store.submit("quarter", None, "j%d" % i, ["true"], {}, "ann@ws") for i in range(3)]

    @pilot_test
    async def drive() -> None:
        async with app_on(store) as (app, pilot):
            app.open_job(jobs[1].id)
            await until(pilot, lambda: isinstance(app.screen, JobScreen)
                        and app.screen.job is not None, "the job screen")
            await settled(pilot)
            active, one = store.active_reads, store.one_reads
            for _ in range(3):
                app.screen.load()
                await app.workers.wait_for_complete()
                await pilot.pause()
            assert store.active_reads == active
            assert store.one_reads == one + 3
            assert app.screen.job.name == "j1" and app.screen.uid == store.uid

    drive()


def test_the_palette_waits_on_no_store_read_while_the_stores_reads_fail():
    """The palette waits for its read of the ended jobs before it lists anything: with the
    store down (the map's reads failing, the header saying why) it reads nothing, so its jumps
    are there at once."""
    from tests.tui_frozen import settled_app

    @pilot_test
    async def drive() -> None:
        async with settled_app((160, 48)) as (app, pilot):

            def down() -> tuple:
                raise AssertionError("the palette read a store whose reads fail")

            app.source.read_newest_ended = down
            fleet(app).store_error = "store postgresql://db:5432/fractui: connection refused"
            await palette(pilot, "host a10-1")
            assert fleet(app).map.cursor.host == "a10-1"

    drive()


def test_the_palette_opens_while_a_store_that_has_just_gone_down_keeps_its_read():
    """A store gone down before any read of the map's has failed (so no error is shown yet)
    may hold the palette's read of the ended jobs for its connection timeout: the palette
    waits PALETTE_READ_S for it, then lists what it has; and where a key is typed before
    that (Textual then cancels the provider's startup, and a provider so cancelled listed
    nothing), it searches at once. Its jumps work either way."""
    import threading

    from textual.command import CommandList

    from tests.test_tui_pilot import typed
    from tests.tui_frozen import settled_app

    held = threading.Event()

    def hanging() -> tuple:
        held.wait(60)
        return ()

    @pilot_test
    async def drive() -> None:
        async with settled_app((160, 48)) as (app, pilot):
            app.source.read_newest_ended = hanging

            def listed() -> int:
                return app.screen.query_one(CommandList).option_count

            try:
                await pilot.press("colon")  # nothing typed: the hosts, queues and themes
                await until(pilot, listed, "the palette's list, its read still held", 10.0)
                await pilot.press("escape")
                await pilot.pause()
                await pilot.press("colon")  # typed at once, the read held again
                typed(app, "host a10-1")
                await until(pilot, listed, "the palette's hits, its read still held", 10.0)
                await pilot.press("enter")
                await until(pilot, lambda: fleet(app).map.cursor.host == "a10-1", "the jump")
            finally:
                held.set()

    drive()


class Gated(SqliteStore):
    """A real SQLite store whose reads of ended jobs wait while ``gate`` is clear; its clock
    ``ahead`` of the TUI's by that many seconds."""

    def __init__(self, path: str, ahead: float = 0.0) -> None:
        super().__init__(path, clock=lambda: time.time() + ahead)
        self.gate = threading.Event()
        self.gate.set()

    def jobs(self, states=None, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        if states is not None and set(states) & set(ENDED):
            self.gate.wait(30)
        return super().jobs(states, *args, **kwargs)


@pytest.mark.parametrize("ahead", [0.0, 3600.0], ids=["same-clock", "store-an-hour-ahead"])
def test_ended_jobs_shown_again_before_their_read_say_when_they_were_read(tmp_path, ahead):
    """``a`` off, then on again: until the new read comes, the ended jobs of the last read
    are listed (the cursor keeps its row), and the title says they are as read then, not
    that they are being read. Then by the TUI's clock, as the header's "jobs shown as read
    at" says it: not by the store's (an hour ahead, it said a time an hour on from now)."""
    store = Gated(str(tmp_path / "store.db"), ahead)
    failed = store.submit("quarter", None, "oom", ["true"], {}, "ann@ws")
    cancel(store, failed.id)
    store.submit("quarter", None, "waits", ["true"], {}, "ann@ws")

    @pilot_test
    async def drive() -> None:
        async with app_on(store) as (app, pilot):
            await pilot.press("J")
            await until(pilot, lambda: isinstance(app.screen, JobsScreen), "the jobs view")
            view = app.screen

            def title() -> str:
                return str(view.query_one("#title").render())

            await pilot.press("a")
            await until(pilot, lambda: str(failed.id) in [r.ref for r in view.rows],
                        "the cancelled job listed")
            assert "reading" not in title(), title()
            await pilot.press("a")
            await reads_made(app, pilot)  # a read without them: none held now
            # (when the view last took them: taken before, a second passing, as on a busy
            # machine, between then and "a" made the title another time than this one)
            assert view.ended_read_at is not None and abs(view.ended_read_at - time.time()) < 60
            read_at = time.strftime("%H:%M:%S", time.localtime(view.ended_read_at))
            store.gate.clear()
            try:
                await pilot.press("a")
                await pilot.pause()
                assert str(failed.id) in [r.ref for r in view.rows]
                assert "the newest 200 ended too (as read at %s; reading them again…)" % (
                    read_at) in title(), title()
            finally:
                store.gate.set()
            await until(pilot, lambda: "reading" not in title(), "the new read")
            assert str(failed.id) in [r.ref for r in view.rows]

    drive()


@pytest.mark.parametrize("placed_first,back", [(False, "escape"), (True, "escape"), (False, "J")])
def test_a_job_that_ended_on_its_screen_keeps_its_row_and_the_cursor_back_in_the_view(
        tmp_path, placed_first, back):
    """The jobs view with the ended too, a job opened from it, ended while its screen is open
    (an admin watching it fail, or stopping it there): back with ``esc`` before the view's
    read of the ended jobs comes, the job is listed as its screen last read it, the cursor
    still on it. It was in neither read (the active no longer held it, the ended were read
    before it ended): its row was gone, the cursor on another job's. ``placed_first``: the
    job's screen was left for a placement (``P``) and made anew by its ``esc``; ``back``:
    the key that leaves it (``J`` too closes it, back to the view under it)."""
    store = Gated(str(tmp_path / "store.db"))
    first = store.submit("quarter", None, "first", ["true"], {}, "ann@ws")
    watched = store.submit("quarter", None, "watched", ["true"], {}, "ann@ws")
    store.submit("quarter", None, "last", ["true"], {}, "bob@ws")

    def job_screen(app: FractuiApp) -> bool:
        return isinstance(app.screen, JobScreen) and app.screen.job is not None

    @pilot_test
    async def drive() -> None:
        async with app_on(store) as (app, pilot):
            await pilot.press("J")
            await until(pilot, lambda: isinstance(app.screen, JobsScreen), "the jobs view")
            view = app.screen
            await pilot.press("a")
            await reads_made(app, pilot)
            while view.table.row.ref != str(watched.id):
                await pilot.press("down")
            await pilot.press("enter")
            await until(pilot, lambda: job_screen(app), "the job's screen")
            if placed_first:
                await pilot.press("P")
                await until(pilot, lambda: app.screen is fleet(app), "the placement")
                await pilot.press("escape")
                await until(pilot, lambda: job_screen(app), "the job's screen again")
            screen = app.screen
            cancel(store, watched.id)
            await until(pilot, lambda: screen.job.state == "cancelled", "its end on its screen")
            await reads_made(app, pilot)
            assert watched.id not in [j.id for j in fleet(app).model.store.jobs]
            store.gate.clear()
            try:
                await pilot.press(back)
                await pilot.pause()
                assert app.screen is view
                assert view.table.row.ref == str(watched.id), [r.ref for r in view.rows]
                assert view.table.row.state == "cancelled"
            finally:
                store.gate.set()
            await until(pilot, lambda: view.ended_read_at is not None and
                        str(first.id) in [r.ref for r in view.rows], "the new read")
            assert view.table.row.ref == str(watched.id)

    drive()
