"""An admin's day while the store is slow to answer (a PostgreSQL server restarting, a locked
SQLite file): the keys answer at once, reads do not pile up behind it one a second, and what
the admin asked of it is done in the order asked. A real SQLite store behind a door the test
holds shut (``Held``), on the frozen fleet."""

from __future__ import annotations

import threading
from typing import Any, Callable

from fractui.store.sqlite import SqliteStore
from fractui.tui import fleet_screen
from fractui.tui.jobs import JobScreen
from tests.tui_frozen import frozen_app, pilot_test, settled, usage_store


class Held:
    """A store whose calls named in ``held`` wait, each at a door of its own, until the test
    opens it; those held now are listed in ``waiting`` (name, door), the latest last."""

    def __init__(self, store: SqliteStore, held: set[str]) -> None:
        self._store = store
        self.held = held
        self.shut = True
        """Whether a call held waits (else it is only counted)."""
        self.calls: list[str] = []
        self.waiting: list[tuple[str, threading.Event]] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr) or name not in self.held:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            door = threading.Event()
            with self._lock:
                self.calls.append(name)
                if self.shut:
                    self.waiting.append((name, door))
                else:
                    door.set()
            door.wait()
            return attr(*args, **kwargs)
        return call

    def open_latest(self) -> str:
        """The latest call held goes on; its name."""
        with self._lock:
            name, door = self.waiting.pop()
        door.set()
        return name

    def open_all(self) -> None:
        """Every call held goes on, and those made from now on do not wait."""
        with self._lock:
            self.shut = False
            doors, self.waiting = self.waiting, []
        for _, door in doors:
            door.set()


async def until(pilot: Any, done: Callable[[], bool], tries: int = 200) -> bool:
    """Whether ``done`` came true while the app ran on (at most ``tries`` short pauses)."""
    for _ in range(tries):
        if done():
            return True
        await pilot.pause(0.01)
    return done()


def noted(app: Any) -> list[str]:
    """What the app notifies from now on, each notice's words in turn (none expires)."""
    said: list[str] = []
    app.notify = lambda message, **_kw: said.append(message)
    return said


@pilot_test
async def test_a_store_that_hangs_holds_one_read_and_reads_once_more_when_it_answers(
        tmp_path, monkeypatch):
    """Each second's read of the fleet's and of a job's screen started a thread beside the
    one still waiting on the store: one more thread a second, until asyncio's pool (a few
    threads) had none left for an agent's call, then every read queued ran in turn. One read
    waits now, and one more is made once it ends."""
    monkeypatch.setattr(fleet_screen, "STORE_EVERY_S", 3600.0)  # the reads asked here only
    store = Held(usage_store(str(tmp_path / "store.db")), set())
    app = frozen_app(usage=store)
    async with app.run_test(size=(120, 36)) as pilot:
        try:
            await settled(pilot)
            store.held = {"waiting_bounds", "get", "audit_log"}
            store.calls.clear()
            for _ in range(10):  # the store's change feed, ten times
                app.fleet.read_store()
            app.open_job(1)
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, JobScreen)
            for _ in range(10):
                screen.load()
            assert await until(pilot, lambda: len(store.waiting) == 2), store.calls
            await until(pilot, lambda: len(store.waiting) > 2, tries=20)
            assert sorted(store.calls) == ["audit_log", "waiting_bounds"], store.calls
            await pilot.press("escape")  # the keys answer meanwhile
            await pilot.pause()
            assert app.screen is app.fleet
            store.open_all()
            await app.workers.wait_for_complete()
            await pilot.pause()
            await app.workers.wait_for_complete()
            assert store.calls.count("waiting_bounds") == 2, store.calls
        finally:  # (a failed assertion leaves no thread waiting at a door)
            store.open_all()


async def cordoned_and_undone(app, pilot, store: Held) -> list:
    """``C`` then ``U`` on the map's first host, once settled, until the store holds a call
    at its door: what the app has said (``noted``), growing as it says more."""
    await settled(pilot)
    said = noted(app)
    await pilot.press("C", "U")
    assert await until(pilot, lambda: bool(store.waiting))
    return said


@pilot_test
async def test_a_cordon_and_its_undo_asked_of_a_slow_store_are_made_in_that_order(tmp_path):
    """``C`` then ``U`` on a host while the store is slow to take the cordon: each ran in a
    thread of its own, and the store took whichever came first; the undo first left the host
    cordoned, the admin told it was back in service. Here the store lets the later call in
    first wherever two wait: the uncordon waits for the cordon now."""
    sqlite = usage_store(str(tmp_path / "store.db"))
    store = Held(sqlite, {"cordon", "uncordon"})
    app = frozen_app(usage=store)
    async with app.run_test(size=(120, 36)) as pilot:
        try:
            said = await cordoned_and_undone(app, pilot, store)
            # each said at once, the store not yet answering (it said nothing till it did)
            assert said == ["cordoning a100-1…", "uncordoning a100-1…"]
            opened = []
            for _ in range(2):
                assert await until(pilot, lambda: bool(store.waiting)), opened
                await until(pilot, lambda: len(store.waiting) > 1, tries=20)
                opened.append(store.open_latest())
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert opened == ["cordon", "uncordon"]
            assert sqlite.cordons() == []
            assert said[2:] == ["a100-1 cordoned: the scheduler places and launches nothing "
                                "new there; what runs there runs on (job 3, job 6)",
                                "back in service: a100-1"]
        finally:
            store.open_all()


@pilot_test
async def test_a_cordon_with_no_store_says_only_that_nothing_can_be_recorded():
    """Without a store nothing is being written: no "cordoning a100-1…" before the words
    that say so."""
    app = frozen_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await settled(pilot)
        said = noted(app)
        await pilot.press("C")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert said == ["no store here: nothing can be recorded"]


@pilot_test
async def test_a_cordon_that_fails_unforeseen_is_said_and_the_undo_asked_after_it_is_made(
        tmp_path):
    """A cordon that fails in a way not foreseen (a bug: here the store raises what it never
    should) ended its worker unsaid: the admin was told nothing. It is said now, and the
    uncordon asked meanwhile is still made after it."""
    sqlite = usage_store(str(tmp_path / "store.db"))
    store = Held(sqlite, {"cordon", "uncordon"})

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("a bug")

    sqlite.cordon = broken  # type: ignore[method-assign]
    app = frozen_app(usage=store)
    async with app.run_test(size=(120, 36)) as pilot:
        try:
            said = await cordoned_and_undone(app, pilot, store)
            assert store.open_latest() == "cordon"
            assert await until(pilot, lambda: bool(store.waiting)), said
            assert store.open_latest() == "uncordon"
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert said == ["cordoning a100-1…", "uncordoning a100-1…",
                            "the cordon of a100-1 failed: RuntimeError: a bug (fractui's log has "
                            "the rest); look at the map before asking again",
                            "a100-1 was in service"]
        finally:
            store.open_all()


def broken(*_args: Any, **_kwargs: Any) -> None:
    """A store call that raises what no store call should (a bug of fractui's)."""
    raise RuntimeError("a bug")


@pilot_test
async def test_a_fleet_read_that_fails_unforeseen_is_said_on_the_header_until_it_mends(
        tmp_path, monkeypatch):
    """A read of the store that raised what no one foresaw ended its worker unsaid, and the
    map went on showing the jobs as last read with nothing said: it is said where a store
    that cannot be read is, with how old the jobs shown are, until a read works again."""
    monkeypatch.setattr(fleet_screen, "STORE_EVERY_S", 3600.0)  # the reads asked here only
    sqlite = usage_store(str(tmp_path / "store.db"))
    app = frozen_app(usage=sqlite)
    async with app.run_test(size=(120, 36)) as pilot:
        await settled(pilot)
        mended = sqlite.waiting_bounds
        sqlite.waiting_bounds = broken  # type: ignore[method-assign]
        app.fleet.read_store()
        assert await until(pilot, lambda: app.fleet.store_error is not None)
        note = app.fleet.store_note()
        assert note is not None and note.startswith(
            "reading the store failed: RuntimeError: a bug (fractui's log has the rest) (jobs "
            "shown as read at "), note
        sqlite.waiting_bounds = mended  # type: ignore[method-assign]
        app.fleet.read_store()
        assert await until(pilot, lambda: app.fleet.store_error is None)


@pilot_test
async def test_a_report_read_that_fails_unforeseen_is_said_not_read_for_good(tmp_path):
    """The report's read raising what no one foresaw left its title "reading…" until the
    next read, 30 s on, with nothing said; it is said as a store that cannot be read is."""
    sqlite = usage_store(str(tmp_path / "store.db"))
    sqlite.usage = broken  # type: ignore[method-assign]
    app = frozen_app(usage=sqlite)
    async with app.run_test(size=(120, 36)) as pilot:
        await settled(pilot)
        said = noted(app)
        await pilot.press("R")
        failed = "reading the report failed: RuntimeError: a bug (fractui's log has the rest)"
        assert await until(pilot, lambda: failed in said), said
