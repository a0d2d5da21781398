"""``fractui`` (no verb) and ``fractui demo``: open the app on the configured fleet, or on a
simulated one, and take everything down again when it closes."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import select
import signal
import sys
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, TypeVar

from fractui.config import Config
from fractui.outcome import UsageError
from fractui.tui.themes import theme_names
from fractui.words import count

if TYPE_CHECKING:
    from fractui.store.base import Store
    from fractui.tui.app import FractuiApp

WATCH_MS = 500  # how often the terminal's watch looks whether the app has ended
WAIT_MS = 100  # how often a start's step that waits looks whether it was asked to end
ENDS = (signal.SIGHUP, signal.SIGTERM)  # what ends the app as `q` does (_Ending)
KEYS_FD = 0  # the terminal Textual reads keys from (sys.__stdin__: None when fd 0 is closed)
DRAWN = "\u258f\u258c\u2594\u2026\u2014"  # what it draws with beyond ASCII: ▏▌▔ bars, … — marks


def run(args: argparse.Namespace, config: Config) -> int:
    """The TUI on ``config``'s fleet, or the demo with ``config``'s [tui] settings; a wrong
    binding id or theme is the config's ``file:line`` error before anything starts."""
    from fractui.tui.app import check_tui_settings

    check_tui_settings(config, theme_names())
    if args.verb == "demo":
        _need_terminal("fractui demo")
        return _demo(args, config)
    return _fleet(config, args.readonly)  # a damaged store: StoreError, said by fractui.cli


def _need_terminal(what: str) -> None:
    """Refuses a TUI whose stdin is no terminal (exit 2): Textual's input thread would read
    its end of file for ever, the app never ending; or whose terminal's encoding (ASCII,
    Latin-1) cannot hold what it draws. Checked once what is wrong with the config, the store
    or the files is said, and before anything is started."""
    if not os.isatty(KEYS_FD):
        raise UsageError("stdin is not a terminal: %s reads its keys there (run it in a "
                         "terminal, its input not from a file or a pipe)" % what)
    encoding = sys.__stderr__.encoding  # Textual draws there
    try:
        DRAWN.encode(encoding)
    except UnicodeEncodeError:  # each would be drawn as its escape, six cells for one
        raise UsageError("this terminal's encoding, %s, cannot hold what %s draws with (its "
                         "bars, lines and marks): run it in a UTF-8 locale, e.g. "
                         "LC_ALL=C.UTF-8, and without PYTHONUTF8=0 or a PYTHONIOENCODING "
                         "that is not UTF-8" % (encoding, what)) from None


def _fleet(config: Config, readonly: bool) -> int:
    with _signals_kept(), _ends_cleanly() as ending:
        try:
            with fleet_app(config, readonly, lambda: _need_terminal("the TUI"),
                           ending.waiting) as app:
                ending.run(app)
        except _Ended:  # asked while a step of the start waited: all it started is down
            pass
    return 0


R = TypeVar("R")
Waiter = Callable[[Callable[[], R]], R]
"""Runs a step of the start that may wait on the network, and returns what it returns."""


def _now(step: Callable[[], R]) -> R:
    return step()


@contextmanager
def fleet_app(config: Config, readonly: bool, ready: Callable[[], None] = lambda: None,
              wait: Waiter = _now) -> Iterator["FractuiApp"]:
    """The app on the configured fleet, and what it needs around it, taken down on the way
    out; ``ready``: a last check, once the store and the files are checked, before anything
    starts; ``wait`` runs the steps that may wait on the network (the store opened and
    asked, ``_Ending.waiting``). With a store (and not --readonly) that means a scheduler:
    ``fractui scheduler`` on the same config, as a child process (fractui.scheduler.child) —
    no pass runs on the TUI's interpreter. It acts only while it holds the store's lease,
    and is a standby while another scheduler does; the header says which. A user who is no
    admin runs none (the store's rule does not let them): their TUI only records."""
    from fractui.config import state_home
    from fractui.scheduler.child import ChildScheduler
    from fractui.scheduler.service import default_holder
    from fractui.tui.app import FractuiApp
    from fractui.tui.source import LiveSource

    store, schedules = wait(lambda: _open_store(config, readonly))
    source = LiveSource(config, store)
    if schedules and config.path is not None:
        source.scheduler = ChildScheduler(config.path, "%s (tui)" % default_holder(),
                                          os.path.join(state_home(), "scheduler-tui.log"))
    try:
        if source.scheduler is not None:
            source.scheduler.open_log()
        ready()
        if source.scheduler is not None:
            source.scheduler.start()
        source.start()
        yield FractuiApp(source, config, readonly=readonly)
    finally:
        if source.scheduler is not None:
            source.scheduler.stop()  # it hands the lease over at once
        source.stop()
        if store is not None:
            store.close()


def _open_store(config: Config, readonly: bool) -> tuple[Optional["Store"], bool]:
    """The store, if the config has one, and whether this TUI runs a scheduler on it (an
    admin's, not --readonly): both ask the store, a server that may not answer."""
    from fractui.checked_store import open_checked_store
    from fractui.store.access import SCHEDULE
    from fractui.store.intents import Asker, allowed
    from fractui.store.url import store_exists

    has_store = config.queues or store_exists(config.store.url)
    store = open_checked_store(config) if has_store else None
    return store, store is not None and not readonly and config.path is not None and allowed(
        store, Asker.here(config.teams), SCHEDULE)


class _Ended(Exception):
    """A signal asked the TUI to end while a step of its start waited (_Ending.waiting)."""


@contextmanager
def _signals_kept() -> Iterator[None]:
    """SIGHUP and SIGTERM (and SIGINT) put back as they were once all is done: the app ended,
    and what it started taken down (_Ending catches them until then)."""
    before = {sig: signal.getsignal(sig) for sig in ENDS + (signal.SIGINT,)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


@dataclasses.dataclass
class _Ending:
    """Whether SIGHUP or SIGTERM asked the TUI to end, and the app it ends. Asked while the
    scheduler, agents and demo are started, the start goes on to its end, and the app, not
    run, ends at once: those starts are local and are not cut short (a SystemExit raised in
    one left a child started and not yet known to its owner, the default action left them
    all, and the demo's directory), and what they started is then taken down as after `q`.
    Asked while a step that may wait on others waits (the store opened and asked:
    ``waiting``), the start ends there, that step left to its thread. Asked while the app
    runs: it ends as `q` ends it. Asked once it has ended, while all is taken down: noted,
    nothing more (a second kill cut that clean-up short)."""

    asked: bool = False
    app: Optional["FractuiApp"] = None

    def ask(self, _signum: int, _frame: object) -> None:
        """The handler of ENDS. A handler, never SIG_IGN, which a process started meanwhile
        would inherit across exec."""
        self.asked = True
        if self.app is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # the app is not running (yet, or any more)
            return
        loop.call_soon_threadsafe(self.app.exit)  # wakes the loop, which may wait on input

    def waiting(self, step: Callable[[], R]) -> R:
        """``step`` (one that may wait on the network: the store opened and asked) run on a
        thread of its own, and what it returns or raises, while this one looks every
        WAIT_MS whether ENDS asked the TUI to end: then _Ended, and what was started before
        it is taken down as after `q`, however long ``step`` still waits (a store that
        never answers held the TUI until a SIGKILL). What ``step`` makes once abandoned goes
        with the process, its thread a daemon: it only opens, never starts anything."""
        done = threading.Event()
        out: dict[str, Any] = {}

        def run() -> None:
            try:
                out["value"] = step()
            except BaseException as err:  # (said on this thread, as if run here)
                out["error"] = err
            finally:
                done.set()

        threading.Thread(target=run, name="fractui-start", daemon=True).start()
        while not done.wait(WAIT_MS / 1000):
            if self.asked:
                raise _Ended()
        if "error" in out:
            raise out["error"]
        return out["value"]

    def run(self, app: "FractuiApp") -> None:
        """Runs ``app`` unless asked to end already; asked as it starts (its loop not running
        yet: nothing to wake), it ends once mounted (``FractuiApp.asked_to_end``). Once it
        has ended, Ctrl-C too is only noted: the terminal, out of the app's raw mode, sends
        SIGINT again, and its KeyboardInterrupt cut the clean-up short as a second kill did.
        SIGTSTP and SIGCONT are put back as they were: Textual's driver sets them and leaves
        them, and a hang-up's SIGCONT (the kernel sends it with the SIGHUP) then raised "no
        running event loop" from its handler in the clean-up, which stopped there."""
        self.app = app
        app.asked_to_end = lambda: self.asked
        textual = {sig: signal.getsignal(sig) for sig in (signal.SIGTSTP, signal.SIGCONT)}
        try:
            if not self.asked:
                app.run()
        finally:
            signal.signal(signal.SIGINT, self.ask)
            for sig, handler in textual.items():
                signal.signal(sig, handler)


@contextmanager
def _ends_cleanly() -> Iterator[_Ending]:
    """A closed terminal (SIGHUP) or a kill (SIGTERM) ends the TUI as `q` does, whenever it
    comes (_Ending), so what it started is taken down rather than left running: entered
    before anything is opened or started. A terminal gone with no SIGHUP said (its pty closed
    while it is no process's controlling terminal) is taken as one: Textual's input thread
    would read its end of file forever, the app never ending."""
    ending = _Ending()
    for sig in ENDS:
        signal.signal(sig, ending.ask)
    done = threading.Event()
    watch = threading.Thread(target=_hang_up_when_gone, args=(KEYS_FD, done),
                             name="fractui-terminal-watch", daemon=True)
    watch.start()
    try:
        yield ending
    finally:
        done.set()
        watch.join()


def _hang_up_when_gone(fd: int, done: threading.Event) -> None:
    """SIGHUP to this process once the terminal on ``fd`` has hung up, as the kernel sends it
    to a terminal's session leader. Polled for no event: a hang-up or an error is said
    regardless, and keys typed (the input thread's to read) do not wake it. Where poll cannot
    look at the terminal (POLLNVAL: macOS's poll takes no device, a live tty included) the
    watch ends, the SIGHUP the kernel sends the only word of a hang-up: taken as one, every
    start ended at once."""
    poller = select.poll()
    poller.register(fd, 0)
    while not done.is_set():
        for _, happened in poller.poll(WATCH_MS):
            if not happened & select.POLLNVAL:
                os.kill(os.getpid(), signal.SIGHUP)
            return


def _demo(args: argparse.Namespace, user: Config) -> int:
    from fractui.demo import Demo
    from fractui.tui.app import FractuiApp

    with _signals_kept(), _ends_cleanly() as ending:
        demo = Demo(args.gpus, args.seed)
        try:  # (Ctrl-C, or a terminal gone, as this is said: the directory is removed)
            print("fractui demo: %s on %s, under %s (from another shell while it runs: %s "
                  "--since 1h)" % (count(args.gpus, "GPU"),
                                   count(len(demo.hosts), "simulated host"), demo.root,
                                   demo.source.report_command), flush=True)
            app = FractuiApp(demo.source, dataclasses.replace(demo.config, tui=user.tui),
                             readonly=args.readonly)
            demo.start()
            ending.run(app)
        finally:
            _say("fractui demo: stopping jobs and agents…")
            demo.stop()
    _say("fractui demo: stopped; %s removed" % demo.root)
    return 0


def _say(text: str) -> None:
    """Tell the admin, if a terminal is still there: after a hang-up there is none, and the
    clean-up must go on regardless."""
    try:
        print(text, flush=True)
    except OSError:
        pass
