"""The fractui Textual app: the fleet screen, help, the palette, themes and remappable keys.

Every binding has an ``id``; the config's ``[tui] keys`` maps ids to keys and is checked here,
as is ``[tui] theme``, so a typo is a ``file:line`` error before the screen opens.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import os
import time
from typing import Callable, Iterable, Optional, Sequence

from platformdirs import user_downloads_path
from textual import events
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widgets import Button

from fractui.config import Config, ConfigError, keys_entry
from fractui.store.intents import Asker
from fractui.store.model import Job
from fractui.tui import controls
from fractui.tui.actions import shown_bindings
from fractui.tui.commands import FleetCommands, from_fleet
from fractui.tui.fleet_screen import FleetScreen
from fractui.tui.gpu_screen import (GpuBody, GpuScreen, Holder, ProfileList,
                                    ProfileScreen, one_gpu_words)
from fractui.tui.help import HelpScreen
from fractui.tui.jobs import ConfirmScreen, JobScreen
from fractui.tui.jobs_view import JobsScreen, JobTable
from fractui.tui.keymap import Scope, clashes, keys_of, keys_problem, shown_key
from fractui.tui.messages import MessagesScreen, Notice, Notices, title_shown
from fractui.tui.logview import LogView
from fractui.tui.placement import PreviewBar
from fractui.tui.queues import TEAM_WORDS, QueuePanel
from fractui.tui.report_view import ReportBody, ReportScreen
from fractui.tui.slicemap import SliceMap
from fractui.tui.source import Source
from fractui.tui.themes import DEFAULT, broken_themes, loaded_themes, theme_names
from fractui.words import count, quoted


VIEWS: dict[str, type[Screen[None]]] = {
    "jobs": JobsScreen, "report": ReportScreen, "messages": MessagesScreen}
"""The app's actions that open a view of the whole app, each unbound on its view itself."""


class FractuiApp(App[None], inherit_bindings=False):
    TITLE = "fractui"
    CSS_PATH = "fractui.tcss"
    COMMANDS = App.COMMANDS | {FleetCommands}
    BINDINGS = [
        # ctrl+c quits as q does; where text is selected, the screen's copy binding (ctrl+c,
        # super+c) copies it instead and quits nothing: it skips when nothing is selected.
        Binding("q,ctrl+q,ctrl+c", "quit", "quit", id="app.quit", tooltip="Leave fractui"),
        # the views of the whole app, from every screen but a dialog (a modal screen ends the
        # chain of bindings before the app's): an admin does not go back to the map for them;
        # their ids are the fleet's still, which configs remap them by
        Binding("J", "jobs", "jobs", id="fleet.jobs",
                tooltip="Every job in a table: sort, filter, open"),
        Binding("R", "report", "report", id="fleet.report", show=False,
                tooltip="Usage over a range: GPUs held and used, waits, what sharing saved"),
        Binding("e", "messages", "messages", id="app.messages",
                tooltip="The last notices again, newest first, with their time and severity"),
        Binding("question_mark", "help", "help", id="app.help",
                tooltip="Every key, with its id for [tui] keys"),
        Binding("colon,ctrl+p", "command_palette", "command", id="app.command",
                tooltip="Jump to a host, queue or job; switch theme"),
        Binding("t", "next_theme", "theme", id="app.theme", tooltip="The next fractui theme"),
    ]

    def __init__(self, source: Source, config: Config,
                 clock: Callable[[], float] = time.time, readonly: bool = False,
                 ticks: Callable[[], float] = time.monotonic) -> None:
        """``clock`` gives the times shown and compared with the store's (the wall clock);
        ``ticks`` when a periodic read is due again (the monotonic clock, which no one sets)."""
        super().__init__()
        # No text on these screens is markup: names, argv, reasons, errors come from
        # researchers, hosts and SSH servers, and Rich would read "[/]" in them as a tag (an
        # error that ends the app), "[b]" as a style (the text gone) and "[@click=...]" as an
        # action. Rich has no public switch once its console is made; this is what
        # Console(markup=False) sets (tests/test_tui_hostile_text.py fails if it stops working).
        self.console._markup = False
        controls.install()  # nor a control sequence in it (fractui/tui/controls.py)
        self.source = source
        self.config = config
        self.clock = clock
        self.ticks = ticks
        self.readonly = readonly
        """Dangerous actions (placement, stop, requeue, preempt) are never bound."""
        self.asker = Asker.here(config.teams, tui=True)
        """Where this TUI's requests come from; who asks is the store's word (intents)."""
        check_tui_settings(config, theme_names())
        for theme in loaded_themes().values():
            self.register_theme(theme.theme)
        self.theme = config.tui.theme or DEFAULT
        self.notices = Notices()
        """The last notices, for the messages screen (``e``)."""
        self.asked_to_end: Callable[[], bool] = lambda: False
        """Whether a signal asked it to end before its loop ran (fractui.tui.run._Ending):
        nothing could wake the loop then, so it ends once mounted."""

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = True) -> None:
        """As Textual's, never reading ``message`` as markup (see ``__init__``); kept among
        the recent notices (``e``), since it shows only a few seconds. Every notice, a
        screen's or a widget's, comes here (Textual's ``DOMNode.notify`` calls it). Its title
        is shown only where its words do not say it already (``messages.title_shown``), as the
        messages screen shows it."""
        self.notices.add(Notice(self.clock(), severity, title, message))
        super().notify(message, title=title_shown(title, message), severity=severity,
                       timeout=timeout, markup=False)

    def key_named(self, binding_id: str) -> str:
        """``actions.key_named``: the first key of ``binding_id`` as ``[tui] keys`` maps it,
        as the key lines write it; ``KeyError`` for an id no binding has."""
        keys = dict(self.config.tui.keys).get(binding_id, shipped_keys()[binding_id])
        return self.get_key_display(Binding(keys_of(keys)[0], ""))

    def on_mount(self) -> None:
        if self.asked_to_end():
            self.exit()
            return
        self.set_keymap(dict(self.config.tui.keys))
        self.push_screen(FleetScreen(self))
        if self.source.note:  # the header's last line, cut where narrow (a demo's at 80
            # columns): whole among the notices (``e``), the first, not a toast the header repeats
            self.notices.add(Notice(self.clock(), "information", "", self.source.note))
        for err in broken_themes():  # said, not fatal: the other themes are there
            self.notify("%s\n(left out; fractui themes lists every theme)" % err,
                        title="a theme file did not load", severity="warning", timeout=20)
        # What exists once the first frame is up lives as long as the app: taking it out of the
        # garbage collector's sweeps removes the pauses that were the slow tail of key presses
        # at 1,000 GPUs (docs/benchmarks.md).
        self.call_after_refresh(gc.freeze)

    def on_unmount(self) -> None:
        gc.unfreeze()  # the app is done: its objects may be collected again

    @property
    def fleet(self) -> FleetScreen:
        return next(s for s in self.screen_stack if isinstance(s, FleetScreen))

    def open_job(self, job_id: int,
                 left: Optional[Callable[[Optional[Job]], None]] = None) -> None:
        """The job screen of store job ``job_id``, over the fleet screen. Its ``m`` and ``P``
        go to the map; ``esc`` there comes back to it, the screens under it as they were.
        ``left`` is handed the job as that screen last read it, as it is left."""
        fleet = self.fleet
        self.push_screen(JobScreen(job_id, self.source, lambda: fleet.statuses, self.asker,
                                   fleet.store_clock, self.readonly, self.move_job,
                                   self.place_job, left, fleet.unled))

    def move_job(self, job_id: int) -> None:
        """Placement mode to move store job ``job_id``, on the map: the jobs view's and the
        job screen's ``m``; ``esc`` there opens again the views it was asked from."""
        self._on_map(FleetScreen.move_job, job_id)

    def place_job(self, job_id: int) -> None:
        """Placement mode on pending store job ``job_id``, on the map: the jobs view's ``p``
        and the job screen's ``P`` (the queue panel's ``p`` starts the same mode on the map
        itself); ``esc`` as ``move_job``'s."""
        self._on_map(FleetScreen.place_job, job_id)

    def _on_map(self, start: Callable[[FleetScreen, int, Optional[Callable[[], None]]], None],
                job_id: int) -> None:
        """``start`` on the fleet screen, the screens over it closed as ``esc`` closes them,
        with what opens them again (``reopener``, read before they close) for its ``esc``:
        one way back, wherever the placement was asked from."""
        fleet, back = self.fleet, self.reopener()
        from_fleet(fleet, lambda: start(fleet, job_id, back))

    def reopener(self) -> Callable[[], None]:
        """What opens the views over the fleet screen again, bottom first, as they are now:
        for ``esc`` out of a placement begun on a job's screen, which closed them. The jobs
        view is kept (its sort, filter and cursor); a GPU view is made anew on the same row;
        a job screen anew (its output read again, from its end). The report and the
        messages are kept as the jobs view is (``J`` opens it over them). Dialogs are not
        reopened."""
        steps: list[Callable[[], None]] = []
        stack = self.screen_stack
        kept = {JobsScreen: self.open_jobs, ReportScreen: self.open_report,
                MessagesScreen: self.open_messages}
        for screen in stack[stack.index(self.fleet) + 1:]:
            if type(screen) in kept:
                steps.append(kept[type(screen)])
            elif isinstance(screen, GpuScreen):
                steps.append(functools.partial(self.open_gpu, screen.host, screen.index,
                                               screen.cursor, screen.held))
            elif isinstance(screen, JobScreen):
                steps.append(functools.partial(self.open_job, screen.job_id, screen.left))

        def reopen() -> None:
            for step in steps:
                step()

        return reopen

    def open_gpu(self, host: str, index: int, cursor: int = 0,
                 held: Sequence[Holder] = ()) -> None:
        """The detail view of ``host``'s GPU ``index``, its cursor on row ``cursor`` of
        ``held`` (the rows a view it replaces last drew), kept on that row as it is drawn."""
        fleet = self.fleet
        self.push_screen(GpuScreen(host, index, lambda: fleet.statuses,
                                   lambda: fleet.model.store, self.source.history, self.source,
                                   self.asker, fleet.set_service, self.open_job,
                                   self.readonly, cursor, held))

    def open_jobs(self) -> None:
        """The jobs view: every job, sorted and filtered. Made once and kept (installed), so
        opening it again costs a reload, not a new screen; it keeps its sort and filter."""
        if not self.is_screen_installed("jobs"):
            fleet = self.fleet
            # a placement started there goes back there on esc, its cursor on the job
            self.install_screen(JobsScreen(lambda: fleet.model.store, lambda: fleet.statuses,
                                           fleet.store_clock, self.open_job, self.place_job,
                                           self.move_job, self.readonly, fleet.store_note,
                                           fleet.want_ended, self.clock), "jobs")
        self._open_kept("jobs")

    def open_report(self) -> None:
        """The report screen: usage over a range, with plots. Made once and kept, as the jobs
        view is: it keeps its range and grouping."""
        if not self.is_screen_installed("report"):
            self.install_screen(ReportScreen(self.source, self.config, self.clock), "report")
        self._open_kept("report")

    def open_messages(self) -> None:
        """The recent notices, newest first. Made once and kept, as the jobs view is."""
        if not self.is_screen_installed("messages"):
            self.install_screen(MessagesScreen(self.notices), "messages")
        self._open_kept("messages")

    def _open_kept(self, name: str) -> None:
        """The kept screen ``name`` over the current one; where it is open already under
        others (``J`` on a job opened from the jobs view), the screens over it closed as
        ``esc`` closes them: a screen is never twice in the stack (Textual refuses it)."""
        screen = self.get_screen(name)
        if screen not in self.screen_stack:
            self.push_screen(name)
            return
        while self.screen is not screen:
            self.pop_screen()

    def action_jobs(self) -> None:
        self.open_jobs()

    def action_report(self) -> None:
        self.open_report()

    def action_messages(self) -> None:
        self.open_messages()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> Optional[bool]:
        """A view's key is not bound on that view itself: it would open nothing (and ``?``
        and the key line would offer it)."""
        return not isinstance(self.screen, VIEWS[action]) if action in VIEWS else True

    def on_key(self, event: events.Key) -> None:
        """A key of the map's own (its filter, its order, compact…) pressed on another
        screen, where nothing binds it, says so: it did nothing and said nothing, and an
        admin took it for broken. Keys bound there, and those a text box typed (it stops
        them before they come here), are not this; nor a dialog's; nor one whose action is
        another node's (``screen.copy_text``, any screen's copy): it is not the map's own."""
        screen = self.screen
        fleet = next((s for s in self.screen_stack if isinstance(s, FleetScreen)), None)
        if fleet is None or screen is fleet or screen.is_modal or \
                event.key in screen.active_bindings:
            return
        found = fleet.active_bindings.get(event.key)
        if found is not None and found.node is fleet and "." not in found.binding.action:
            self.notify("%s (%s) is the map's key: it does nothing here" % (
                self.get_key_display(found.binding), found.binding.description),
                severity="warning")

    def action_help(self) -> None:
        screen = self.screen
        if isinstance(screen, (FleetScreen, JobScreen, JobsScreen, GpuScreen, ProfileScreen,
                               ReportScreen, MessagesScreen)):
            keys = [(" ".join(keys), what, bid) for keys, what, bid, _ in shown_bindings(screen)]
            words = [one_gpu_words(keys, self.key_named),
                     TEAM_WORDS] if isinstance(screen, FleetScreen) else []
            self.push_screen(HelpScreen(keys, "\n\n".join(w for w in words if w)))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Textual's, but "Keys" is ``?``: Textual's key panel docked beside the map took
        two thirds of it at 120 columns, wrapped each key's words over several lines, and
        listed keys without the ids ``[tui] keys`` remaps them by."""
        for command in super().get_system_commands(screen):
            if command.title == "Keys":  # (its help has no brackets: Textual reads markup)
                command = SystemCommand("Keys", "Every key of this screen, with the id that "
                                        "remaps it (%s)" % self.key_named("app.help"),
                                        self.action_help)
            elif command.title == "Screenshot":  # (once the palette has closed, as Textual's)
                command = SystemCommand("Screenshot", "Save an SVG of the screen in your "
                                        "Downloads folder, else the current one",
                                        lambda: self.set_timer(0.1, self.save_screenshot_here))
            yield command

    def save_screenshot_here(self) -> None:
        """Textual's Screenshot saves only in the Downloads folder, which a server seldom has:
        there it said "Failed to save screenshot", no reason given, and where one was saved its
        note showed its markup raw (``notify`` here reads none). Saved in the current folder
        where there is none, as a new file of the admin's alone (never through a link, never
        over a file), and where it went, or why not, said. Named by the second it was taken,
        and a number after it where that name is taken (a second screenshot in the same
        second said "File exists" and was not saved). One cut short (a full disk) is removed,
        its path said: none is left half written."""
        stamp = time.strftime("fractui-%Y-%m-%d-%H%M%S", time.localtime(self.clock()))
        path = None
        try:
            downloads = user_downloads_path()
            folder = downloads if downloads.is_dir() else os.getcwd()
            fd, path = _new_file(os.path.join(folder, stamp), ".svg")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.export_screenshot())
        except OSError as err:
            self.notify("screenshot not saved%s: %s%s" % (
                "" if path is None else " to %s" % path, err,
                "" if path is None else _removed(path)), title="Screenshot", severity="error")
            return
        self.notify("screenshot saved to %s" % path, title="Screenshot")

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        """The focus moved (``tab``, a jump from the palette, a search's box) to a part that
        the one maximized (the palette's "Maximize") hides: that one is put back first, else
        keys went to a part out of sight, acting unseen."""
        screen = event.widget.screen
        shown = screen.maximized
        if shown is not None and shown is not event.widget and \
                shown not in event.widget.ancestors:
            screen.minimize()

    def action_next_theme(self) -> None:
        """The next theme, named: nothing on the screen says which one it is, and the
        config's ``[tui] theme`` keeps it by that name."""
        ours = list(loaded_themes())
        at = ours.index(self.theme) if self.theme in ours else -1
        self.theme = ours[(at + 1) % len(ours)]
        self.notify('theme %s ([tui] theme = "%s" keeps it)' % (self.theme, self.theme),
                    timeout=3)


def _new_file(stem: str, suffix: str) -> tuple[int, str]:
    """A file made new for writing, the admin's alone (never through a link, never over a
    file): ``stem`` + ``suffix``, else ``stem-2`` + ``suffix``, ``stem-3``…, the first name
    free; its descriptor and path."""
    n = 1
    while True:
        path = "%s%s%s" % (stem, "-%d" % n if n > 1 else "", suffix)
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                           0o600), path
        except FileExistsError:
            n += 1


def _removed(path: str) -> str:
    """Removes the file at ``path``, a write cut short; "" once removed, else words for after
    the reason the write failed, saying that its part stays and why."""
    try:
        os.unlink(path)
    except OSError as err:
        return "; the part written stays there (%s)" % (err.strerror or err)
    return ""


def scopes() -> tuple[Scope, ...]:
    """Where bindings are active at once: each screen with each widget that takes its keys
    (the app's keys over every screen that is not modal, but a view's own on that view, which
    ``check_action`` unbinds there). Every binding the config may remap is in one;
    ``tests/test_tui_keymap.py`` walks the screens to see these are their chains."""
    return tuple(dataclasses.replace(scope, unbound=tuple(
        b.id for b in FractuiApp.BINDINGS if isinstance(b, Binding) and b.id and
        VIEWS.get(b.action) in scope.nodes)) for scope in (
            Scope("the map", (FractuiApp, FleetScreen, SliceMap)),
            Scope("the queue panel", (FractuiApp, FleetScreen, QueuePanel)),
            Scope("a placement's preview", (FractuiApp, FleetScreen, PreviewBar)),
            Scope("the job screen", (FractuiApp, JobScreen, LogView)),
            Scope("the jobs view", (FractuiApp, JobsScreen, JobTable)),
            Scope("the GPU view", (FractuiApp, GpuScreen, GpuBody)),
            Scope("the MIG profile picker", (ProfileScreen, ProfileList)),
            Scope("the report", (FractuiApp, ReportScreen, ReportBody)),
            Scope("the messages", (FractuiApp, MessagesScreen, VerticalScroll)),
            Scope("the help", (HelpScreen, VerticalScroll)),
            Scope("a confirmation", (ConfirmScreen, Button))))


def binding_ids() -> list[str]:
    """Every binding id the config may remap."""
    return list(shipped_keys())


@functools.lru_cache(maxsize=None)
def shipped_keys() -> dict[str, str]:
    """Each binding id the config may remap -> its keys as shipped, in ``scopes()``'s order."""
    keys: dict[str, str] = {}
    for scope in scopes():
        for cls in scope.nodes:
            for b in cls.BINDINGS:
                if isinstance(b, Binding) and b.id:
                    keys.setdefault(b.id, b.key)
    return keys


def check_tui_settings(config: Config, themes: Iterable[str]) -> None:
    """``[tui] keys`` must name known binding ids, each with keys Textual can send and none
    bound to something else where it is active, and ``[tui] theme`` a known theme."""
    known = binding_ids()
    for binding_id, keys in config.tui.keys:
        if binding_id not in known:
            raise _keys_error(config, binding_id, "tui.keys: unknown binding id '%s' (known: %s)"
                              % (binding_id, ", ".join(known)))
        problem = keys_problem(keys)
        if problem is not None:
            raise _keys_error(config, binding_id, "%s = %s: %s" % (
                keys_entry(binding_id), quoted(keys), problem))
    clash = next(iter(clashes(scopes(), dict(config.tui.keys))), None)
    if clash is not None:
        raise _keys_error(config, clash.binding_id, (
            "%s = %s: %s is also the key of %s on %s, so one of them could never be pressed "
            "there (give one of them another key; ? there lists each key and its id)") % (
            keys_entry(clash.binding_id), quoted(dict(config.tui.keys)[clash.binding_id]),
            shown_key(clash.key), " and ".join(clash.others), clash.scope))
    names = sorted(themes)
    if config.tui.theme is not None and config.tui.theme not in names:
        broken = len(broken_themes())
        raise config.fail("tui.theme: unknown theme '%s' (known: %s)%s" % (
            config.tui.theme, ", ".join(names), "; %s did not load: fractui themes says why"
            % count(broken, "theme file") if broken else ""), "tui", None, "theme")


def _keys_error(config: Config, binding_id: str, message: str) -> ConfigError:
    """``message`` at the line of ``binding_id`` in ``[tui.keys]``, or of ``keys`` where the
    keys are written inline (``keys = { ... }``)."""
    err = config.fail(message, "tui.keys", None, binding_id)
    return err if err.line is not None else config.fail(message, "tui", None, "keys")
