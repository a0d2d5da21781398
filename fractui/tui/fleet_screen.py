"""The fleet screen: header, the slice map of every GPU, and the queue panel.

Data reaches it only as messages: ``HostsChanged`` (posted from the fleet's threads by the
source) and ``StoreRead`` (from a thread worker that reads the store on a timer). The UI thread
never waits on the network or the disk.
"""

from __future__ import annotations

import sqlite3
from typing import Callable, Optional, Protocol

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.color import Color
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Input

from fractui.config import Config
from fractui.fleet.host import HostStatus
from fractui.sched.quota import team_usage
from fractui.tui.bars import Paint, per_line
from fractui.tui.commands import Entry
from fractui.tui.header import Header, HeaderInfo
from fractui.tui.model import (FleetModel, GpuGroupLine, GpuLine, HostLine, StoreView,
                               compile_filter, queue_stats)
from fractui.tui.queues import QueuePanel
from fractui.tui.slicemap import SliceMap
from fractui.tui.source import Source
from fractui.tui.themes import palette_for

STORE_EVERY_S = 1.0
NARROW = 120  # below this width the queue panel goes under the map
HINT_ORDER = ("app.quit", "app.help", "app.command", "fleet.filter", "fleet.back",
              "fleet.compact", "fleet.colour", "fleet.panel", "app.theme")


class FleetApp(Protocol):
    """What the screen needs of its app: where data comes from, the config, the clock."""

    source: Source
    config: Config
    clock: Callable[[], float]


class HostsChanged(Message):
    """Some hosts have news; the screen takes them from the source."""


class StoreRead(Message):
    def __init__(self, view: Optional[StoreView], error: Optional[str] = None) -> None:
        super().__init__()
        self.view = view
        self.error = error


class FleetScreen(Screen[None], inherit_bindings=False):
    BINDINGS = [
        Binding("slash", "filter", "filter", id="fleet.filter",
                tooltip="Filter GPUs by a regex; !regex keeps those that do not match"),
        Binding("escape", "back", "back", id="fleet.back",
                tooltip="Clear the filter and the mark"),
        Binding("z", "compact", "compact", id="fleet.compact",
                tooltip="Several GPUs per line (on by itself when GPUs outnumber rows)"),
        Binding("c", "colour_by", "colour by", id="fleet.colour",
                tooltip="Colour slices by team or by queue"),
        Binding("tab,shift+tab", "switch_panel", "map/queues", id="fleet.panel",
                tooltip="Move between the slice map and the queue panel"),
        Binding("ctrl+c,super+c", "screen.copy_text", "copy selected text", id="fleet.copy",
                show=False),
    ]

    def __init__(self, app: "FleetApp") -> None:
        super().__init__()
        self.source: Source = app.source
        self.config: Config = app.config
        self.clock: Callable[[], float] = app.clock
        self.model = FleetModel(self.source.hosts())
        self.statuses: dict[str, HostStatus] = {}
        self.filter_text = ""
        self.compact: Optional[bool] = None
        """None: automatic; True/False: the admin's choice."""
        self.colour_by = "team"
        self.store_error: Optional[str] = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            yield SliceMap(id="map")
            yield QueuePanel(id="queues")
        yield Input(placeholder="filter: regex, !regex for the rest; enter keeps, esc clears",
                    id="filter")

    @property
    def map(self) -> SliceMap:
        return self.query_one(SliceMap)

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.repaint())
        self.bindings_updated_signal.subscribe(self, lambda _screen: self.show_header())
        self.repaint()
        self.map.focus()
        self.source.attach(lambda: self.post_message(HostsChanged()))
        self.read_store()
        self.set_interval(STORE_EVERY_S, self.read_store)

    # -- data in --

    @work(thread=True, exclusive=True, exit_on_error=False, group="store")
    def read_store(self) -> None:
        try:
            self.post_message(StoreRead(self.source.read_store()))
        except sqlite3.Error as err:  # a locked or damaged store: say so, keep the fleet view
            self.post_message(StoreRead(None, "store: %s" % err))

    def on_hosts_changed(self, _message: HostsChanged) -> None:
        changed = False
        for status in self.source.take():
            self.statuses[status.name] = status
            changed |= self.model.update(status, self.source.simulated(status.name))
        if changed:
            self.relayout()

    def on_store_read(self, message: StoreRead) -> None:
        self.store_error = message.error
        view = message.view
        if view is not None and view != self.model.store:
            changed = False
            for host in self.model.set_store(view):
                if host in self.statuses:
                    changed |= self.model.update(self.statuses[host],
                                                 self.source.simulated(host))
            if changed:
                self.relayout()
        jobs = self.model.store.jobs if self.model.store else ()
        note = message.error or (None if self.model.store else "no store: queues are empty")
        self.query_one(QueuePanel).show(
            queue_stats(self.config.queues, jobs, self.clock()),
            team_usage(jobs, self.config.teams), note)
        self.show_header()

    # -- drawing --

    def on_resize(self) -> None:
        self.query_one("#body").set_class(self.size.width < NARROW, "narrow")
        self.call_after_refresh(self.relayout)

    def compact_now(self) -> bool:
        if self.compact is not None:
            return self.compact
        rows = sum(1 + len(v.gpus) for v in self.model.hosts.values())
        return rows > max(1, self.map.size.height)

    def relayout(self) -> None:
        pattern, inverse = compile_filter(self.filter_text)
        per = per_line(self.map.line_width) if self.compact_now() else 0
        self.map.show(self.model.lines(pattern, inverse, per))
        self.show_header()

    def repaint(self) -> None:
        v = self.app.theme_variables
        muted = Color.parse(v["foreground"]).blend(Color.parse(v["surface"]), 0.45).hex
        owners = self.config.teams if self.colour_by == "team" else self.config.queues
        states = {"online": v["success"], "degraded": v["warning"], "offline": v["error"],
                  "untrusted": v["error"], "connecting": v["primary"]}
        self.map.set_paint(Paint(palette_for(self.app.current_theme), v["foreground"],
                                 v["surface"], muted, tuple(states.items()),
                                 tuple(o.name for o in owners), self.colour_by))

    def bindings_shown(self) -> list[tuple[tuple[str, ...], str, str, bool]]:
        """(keys as displayed, what, id, shown in the header) of every active binding."""
        found: dict[str, tuple[list[str], Binding]] = {}
        for active in self.active_bindings.values():
            b = active.binding
            if not b.system:
                found.setdefault(b.id or b.action, ([], b))[0].append(
                    self.app.get_key_display(b))
        return [(tuple(keys), b.description or b.tooltip or b.action, b.id or "—", b.show)
                for keys, b in found.values()]

    def show_header(self) -> None:
        view = ["fleet"]
        if self.filter_text:
            view.append("filter /%s/" % self.filter_text)
        view.append("colour by " + self.colour_by)
        if self.compact_now():
            view.append("compact")
        shown = [(keys[0], what, bid) for keys, what, bid, show in self.bindings_shown() if show]
        shown.sort(key=lambda h: HINT_ORDER.index(h[2]) if h[2] in HINT_ORDER else 99)
        hints = tuple((key, what) for key, what, _ in shown)
        self.query_one(Header).show(HeaderInfo(self.model.totals(), " · ".join(view), hints,
                                               self.source.note))

    # -- actions --

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.value = self.filter_text
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self.relayout()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.query_one("#filter", Input).display = False
        self.map.focus()

    def action_back(self) -> None:
        box = self.query_one("#filter", Input)
        if box.display and box.has_focus:
            box.value = ""
            box.display = False
            self.map.focus()
        self.filter_text = ""
        self.map.cursor = -1
        self.query_one(QueuePanel).mark(None)
        self.relayout()

    def action_compact(self) -> None:
        self.compact = not self.compact_now()
        self.relayout()

    def action_colour_by(self) -> None:
        self.colour_by = "queue" if self.colour_by == "team" else "team"
        self.repaint()
        self.show_header()

    def action_switch_panel(self) -> None:
        panel = self.query_one(QueuePanel)
        (self.map if panel.has_focus else panel).focus()

    # -- jumps (the palette) --

    def _jump_to(self, found: Callable[[object], bool]) -> bool:
        for i, line in enumerate(self.map.lines):
            if found(line):
                self.map.jump(i)
                self.map.focus()
                return True
        return False

    def jump_host(self, name: str) -> None:
        self.filter_text = ""
        self.relayout()
        self._jump_to(lambda line: isinstance(line, HostLine) and line.name == name)

    def jump_queue(self, name: str) -> None:
        panel = self.query_one(QueuePanel)
        panel.mark(name)
        panel.focus()

    def jump_job(self, job_id: int, queue: str) -> None:
        """To the GPU the job is on; a job on no GPU yet, to its queue."""
        self.filter_text = ""
        self.relayout()
        tag = "#%d" % job_id

        def holds(line: object) -> bool:
            gpus = line.gpus if isinstance(line, GpuGroupLine) else (
                (line,) if isinstance(line, GpuLine) else ())
            return any((b.job or "").split(" ")[0] == tag for g in gpus for b in g.blocks)

        if not self._jump_to(holds):
            self.jump_queue(queue)

    def palette_entries(self) -> list[Entry]:
        entries = []
        for name in self.model.order:
            view = self.model.hosts.get(name)
            state = view.header.state if view else "connecting"
            entries.append(Entry("host %s" % name, "jump to host (%s)" % state,
                                 lambda n=name: self.jump_host(n)))
        for q in self.config.queues:
            entries.append(Entry("queue %s" % q.name, "jump to queue (%s)" % q.describe(),
                                 lambda n=q.name: self.jump_queue(n)))
        for job in self.model.store.jobs if self.model.store else ():
            where = job.slot.describe() if job.slot else "queue " + job.queue
            entries.append(Entry("job #%d %s" % (job.id, job.name),
                                 "%s, %s, team %s" % (job.state, where, job.team or "—"),
                                 lambda j=job: self.jump_job(j.id, j.queue), discover=False))
        for name in sorted(self.app.available_themes):
            entries.append(Entry("theme %s" % name, "switch to this theme",
                                 lambda n=name: setattr(self.app, "theme", n)))
        other = "queue" if self.colour_by == "team" else "team"
        entries.append(Entry("colour by %s" % other, "colour slices by %s" % other,
                             self.action_colour_by))
        entries.append(Entry("compact %s" % ("off" if self.compact_now() else "on"),
                             "several GPUs per line, or one", self.action_compact))
        return entries
