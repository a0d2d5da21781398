"""The fleet screen: header, the slice map of every GPU, and the queue panel.

Data reaches it only as messages: ``HostsChanged`` (posted from the fleet's threads by the
source) and ``StoreRead`` (from a thread worker that reads the store on a timer). The UI thread
never waits on the network or the disk: placement candidates are found, checked and recorded in
thread workers too, which answer with messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from functools import partial
from typing import Callable, Optional, Protocol, Sequence

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.errors import NoWidget
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Input
from textual.worker import Worker

from fractui.config import Config
from fractui.fleet.client import AgentCallError
from fractui.fleet.host import HostStatus, HostUnavailable
from fractui.sched.cordons import finished, host_out, made_said, marks, refusal
from fractui.sched.fleetview import HostView
from fractui.sched.manual import Unfit, in_service
from fractui.sched.preview import Candidate, candidates
from fractui.sched.quota import HeldTo
from fractui.store.base import StoreError
from fractui.store.access import Denied
from fractui.store.intents import (Asker, Refused, cordon, host_or_gpu, move_by_hand,
                                   place_by_hand, uncordon)
from fractui.store.model import (CORDON, DRAIN, ON_HOST, PENDING, Hold, Job, KeptTerms, Quota,
                                 movable)
from fractui.tui.actions import Keyed, Modal, key_named, listed
from fractui.tui.bars import Paint, per_line
from fractui.tui.commands import Entry, move_entry, place_entry
from fractui.tui.cursor import Cursor, block_job_id
from fractui.tui.filterbox import FilterBox
from fractui.tui.header import Header, HeaderInfo
from fractui.tui.model import (GHOST, ORDERS, Block, FleetModel, GpuLine, HostLine,
                               Line, StoreView, after, compile_filter, gpus_of, unmeasured,
                               with_ghost)
from fractui.tui.placement import (GhostMoved, Placement, PlacementDone, PreviewBar, pending_slots,
                                  same_slot)
from fractui.tui.queues import Dragging, JobPicked, QueuePanel
from fractui.tui.legend import Legend
from fractui.tui.oneatatime import OneAtATime, unforeseen
from fractui.tui.slicemap import MoveAsked, ServiceAsked, SliceChosen, SliceMap
from fractui.tui.source import Source
from fractui.sched.standing import (USAGE_EVERY_S, UsageRead, kept, next_order, queue_stats,
                                   reserved, scheduled, standing)
from fractui.tui.themes import RichVariables, muted_colour, owners_marked, palette_for
from fractui.tui.typed import Typed
from fractui.words import NO_SCHEDULER, count, failing_passes, first_of

STORE_EVERY_S = 1.0
PALETTE_READ_S = 0.5  # the palette waits no longer than this for the ended jobs (a store gone)
NARROW = 120  # below this width the queue panel goes under the map
WIDE = 170
"""From this width the panel beside the map is wide enough for the teams' run and next
(queues.TEAMS_WIDE): the map keeps at least the 114 columns it has at 160 (so its blocks
keep their labels), which a wider panel there would cut."""
SHORT = 24  # below this height the panel under the map takes half the rows, not 12 at least
HINT_ORDER = ("app.quit", "app.help", "app.command",
              "fleet.back",  # (bound while there is a filter to clear: how to leave it)
              "map.open", "map.gpu", "fleet.jobs",
              "fleet.filter", "fleet.compact", "fleet.colour", "fleet.panel",
              "queue.place", "queue.job", "app.messages", "app.theme")
"""The header's hints in the order listed: at 80 columns only the first four are in sight."""
PLACING_ORDER = ("app.help", "placement.confirm", "placement.cancel", "placement.choice",
                 "app.quit", "app.command", "placement.next", "placement.previous",
                 "placement.down", "placement.up") + HINT_ORDER
"""In a placement its own keys come first, after help, quit and the palette after them: at 80
columns the one column of hints says how to place, how to leave and where the rest are."""


log = logging.getLogger("fractui.tui")


class FleetApp(Protocol):
    """What the screen needs of its app: where data comes from, the config, the clocks, who
    acts, and whether dangerous actions are bound."""

    source: Source
    config: Config
    clock: Callable[[], float]
    ticks: Callable[[], float]
    asker: Asker
    readonly: bool

    def open_job(self, job_id: int) -> None: ...

    def open_gpu(self, host: str, index: int) -> None: ...

    def open_jobs(self) -> None: ...

    def open_report(self) -> None: ...

    def open_messages(self) -> None: ...

    def move_job(self, job_id: int) -> None: ...


class HostsChanged(Message):
    """Some hosts have news; the screen takes them from the source."""


class StoreChanged(Message):
    """The store's change feed moved: the screen reads the store again."""


class Slots(Message):
    """Where a job could go now (a worker found them); ``note``: why the admin is shown
    these instead of recording (the GPU changed), ``near``: the slot to put the ghost on,
    ``held``: the quotas and use the job's charge counts against, as the worker read them
    (None: not read, the placement's stand)."""

    def __init__(self, job: Job, found: Sequence[Candidate], note: Optional[str] = None,
                 near: Optional[Candidate] = None, held: Optional[HeldTo] = None) -> None:
        super().__init__()
        self.job = job
        self.found = found
        self.note = note
        self.near = near
        self.held = held


class Placed(Message):
    """A placement was recorded (``error``: or why not)."""

    def __init__(self, job: Job, where: Optional[Candidate], error: Optional[str] = None
                 ) -> None:
        super().__init__()
        self.job = job
        self.where = where
        self.error = error


class ServiceChanged(Message):
    """A cordon, drain or uncordon asked from the palette was recorded (or refused: ``error``)."""

    def __init__(self, said: str, error: bool = False) -> None:
        super().__init__()
        self.said = said
        self.error = error


class StoreRead(Message):
    def __init__(self, view: Optional[StoreView],
                 error: Optional[str] = None, usage: Optional[UsageRead] = None,
                 bounds: Optional[dict[str, int]] = None, ahead: Optional[float] = None,
                 holds: Optional[dict[str, Hold]] = None,
                 terms: Optional[KeptTerms] = None) -> None:
        super().__init__()
        self.view = view
        self.ahead = ahead
        """How far the store's clock is ahead of the TUI's, as measured at this read (None:
        the read failed, the last stands)."""
        self.bounds = bounds
        """The teams' bounds on waiting jobs as the store holds them (None: not read)."""
        self.holds = holds
        """What each team holds for a waiting job, as the store keeps it (None: not read)."""
        self.terms = terms
        """The teams' quotas, borrowing and weights the lease holder keeps (None: not
        read)."""
        self.error = error
        self.usage = usage
        """The usage records as read this time (None: not due, the last stands)."""


class FleetScreen(Screen[None], Modal, Keyed, inherit_bindings=False):
    BINDINGS = [
        Binding("slash", "filter", "filter", id="fleet.filter",
                tooltip="Filter GPUs by a regex; !regex keeps those that do not match"),
        Binding("escape", "back", "back", id="fleet.back",
                tooltip="Clear the filter and the queue mark; leave placement mode"),
        Binding("z", "compact", "compact", id="fleet.compact",
                tooltip="Several GPUs per line (on by itself when GPUs outnumber rows)"),
        Binding("c", "colour_by", "colour by", id="fleet.colour",
                tooltip="Colour slices by team or by queue"),
        Binding("tab,shift+tab", "switch_panel", "map/queues", id="fleet.panel",
                tooltip="Move between the slice map and the queue panel"),
        Binding("ctrl+c,super+c", "screen.copy_text", "copy selected text (else: quit)",
                id="fleet.copy", show=False),
        Binding("o", "order", "order", id="fleet.order", show=False,
                tooltip="Order the GPUs by the next of: hosts as configured, utilisation, "
                        "memory used, free room"),
    ]

    def __init__(self, app: "FleetApp") -> None:
        super().__init__()
        self.source: Source = app.source
        self.config: Config = app.config
        self.clock: Callable[[], float] = app.clock
        self.ticks: Callable[[], float] = app.ticks
        self.model = FleetModel(self.source.hosts())
        self.statuses: dict[str, HostStatus] = {}
        self.filter_text = ""
        self.filter: Optional[Typed] = None
        """The filter's pattern (its slowness kept while its text is the same)."""
        self.compact: Optional[bool] = None
        """None: automatic; True/False: the admin's choice."""
        self.colour_by = "team"
        self.order = ORDERS[0]
        """The map's order of GPUs (``o``): a reorder of what is drawn, never a read."""
        self.store_error: Optional[str] = None
        self._read_at: Optional[float] = None  # when the store was last read
        self._reads = OneAtATime(self._read, "reading the store", lambda said: self.post_message(
            StoreRead(None, said)))
        self._service_asked: deque[tuple[str, Optional[int], Optional[str]]] = deque()
        """Cordons, drains and uncordons asked, carried out in that order (``set_service``)."""
        self._services = OneAtATime(self._set_services, "putting hosts in or out of service",
                                    lambda said: self.post_message(ServiceChanged(said, True)))
        self._usage_due = float("-inf")  # when the usage records are next read (worker), by
        # ticks: a wall clock set back would hold them back as long
        self._usage: Optional[UsageRead] = None  # the last usage read shown
        self._ahead = 0.0
        """How far the store's clock is ahead of the TUI's, as last read (``StoreRead``)."""
        self._bounds: dict[str, int] = {}  # the store's bounds on waiting jobs, as last read
        self._holds: dict[str, Hold] = {}  # the teams' holds for waiting jobs, as last read
        self._terms = KeptTerms()  # the teams' terms the holder keeps, as last read
        self.ended_wanted = False
        """Whether store reads take the newest ended jobs too: only while a view shows them
        (the jobs view's ``a``), not every second for no one."""
        self._palette_ended: tuple[Job, ...] = ()  # as read when the palette last opened
        self.fleet_app = app
        self.placement: Optional[Placement] = None
        self.came_from: Optional[Callable[[], None]] = None
        """What reopens the views a placement was started in (the jobs view; a job's screen and
        those under it), for ``esc`` to go back to; None where it began on the map."""
        self.left_from: Optional[tuple[bool, Cursor]] = None
        """Where the admin was as placement mode began (one begun during another keeps it): on
        the queue panel or not, and the map's cursor (the ghost takes it); put back when they
        leave it (``end_placement``)."""
        self.drag: Optional[tuple[int, int, bool]] = None
        """While a drag lasts: the pointer's last screen cell, and whether it was released."""

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield SliceMap(self.fleet_app.readonly, id="map")
                yield Legend(id="legend")
            yield QueuePanel(readonly=self.fleet_app.readonly, id="queues")
        yield FilterBox(id="filter", clears=key_named(self, "fleet.back"))
        yield PreviewBar(id="preview")

    @property
    def map(self) -> SliceMap:
        return self.query_one(SliceMap)

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.repaint())
        self.bindings_updated_signal.subscribe(self, lambda _screen: self.show_header())
        self.repaint()
        self.map.focus()
        self.source.attach(lambda: self.post_message(HostsChanged()))
        self.read_store()
        self.set_interval(STORE_EVERY_S, self.read_store)
        self.source.watch_store(lambda: self.post_message(StoreChanged()))

    # -- data in --

    def store_clock(self) -> float:
        """The store's time now, by the TUI's clock and the store's lead on it at the last
        read: what every age of a job, a wait or an entry the TUI shows counts to, as
        fractui jobs and teams count theirs (docs/decisions.md, "Clocks"). Never a read
        itself: the UI thread asks it."""
        return self.clock() + self._ahead

    def read_store(self) -> None:
        """The store read again, in a thread worker, one read at a time (``OneAtATime``)."""
        self._reads.ask()

    @work(thread=True, exit_on_error=False, group="store")
    def _read(self) -> None:
        try:
            view = self.source.read_store(ended=self.ended_wanted)
            now = self.source.read_now(self.clock)  # each read: every age shown counts to it
            ahead, usage = now - self.clock(), None
            if self.config.teams and self.ticks() >= self._usage_due:
                fair = self.config.fairshare
                kept = self.source.read_usage(now - fair.window_s, now)
                usage = UsageRead.of(kept[0] if kept else [], self.config, now)
                self._usage_due = self.ticks() + USAGE_EVERY_S
            bounds, holds, terms = (self.source.read_bounds(), self.source.read_holds(),
                                    self.source.read_terms()) \
                if self.config.teams else (None, None, None)
            read = StoreRead(view, usage=usage, bounds=bounds, ahead=ahead, holds=holds,
                             terms=terms)
        except StoreError as err:  # a locked or damaged store: say so, keep the fleet
            read = StoreRead(None, str(err))
        self.post_message(read)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        self._reads.changed(event)
        self._services.changed(event)

    def on_store_changed(self, _message: StoreChanged) -> None:
        self.read_store()

    def want_ended(self, wanted: bool) -> None:
        """A view shows the newest ended jobs now (or no longer): from now on the store reads
        take them (or not); once shown, at once, so the view does not wait for the timer."""
        if wanted != self.ended_wanted:
            self.ended_wanted = wanted
            if wanted:
                self.read_store()

    async def palette_opened(self) -> None:
        """The palette opens: the newest ended jobs are read for it (in a thread), so its
        "open job #N" reaches a job that failed after it left the map; no read of the
        store's takes them while no one looks. Not while the store's reads fail (the header
        says why): the palette waits for this read, and its jumps would wait on a store
        that is down. Nor longer than PALETTE_READ_S: a store that has just gone down, before
        a read of the map's has failed, may take its connection timeout to say so; the
        palette then lists the ended jobs of its last read."""
        if self.store_error is not None:
            self._palette_ended = ()
            return
        try:
            self._palette_ended = await asyncio.wait_for(
                asyncio.to_thread(self.source.read_newest_ended), PALETTE_READ_S)
        except asyncio.TimeoutError:  # (the read goes on in its thread; its answer is dropped)
            self.notify("the palette lists the ended jobs of its last read: the store did not "
                        "answer within %.1f s" % PALETTE_READ_S, severity="warning")
        except StoreError as err:  # the palette opens all the same, without them
            self._palette_ended = ()
            self.notify("the palette lists no ended job: %s" % err, severity="warning")

    def on_hosts_changed(self, _message: HostsChanged) -> None:
        changed = False
        for status in self.source.take():
            self.statuses[status.name] = status
            changed |= self.model.update(status, self.source.simulated(status.name))
        if changed:
            self.relayout()

    def on_store_read(self, message: StoreRead) -> None:
        self.store_error = message.error
        if message.error is None:
            self._read_at = self.clock()
        view = message.view
        if view is not None and view != self.model.store:
            changed = False
            was = self.model.store
            if was is not None:  # (the first read saw nothing finish)
                self._drains_finished(marks(was.cordons, was.jobs), marks(view.cordons, view.jobs))
            for host in self.model.set_store(view):
                if host in self.statuses:
                    changed |= self.model.update(self.statuses[host],
                                                 self.source.simulated(host))
            if changed:
                self.relayout()
            self._placement_still_pending(view)
        if message.usage is not None:
            self._usage = message.usage
        if message.ahead is not None:
            self._ahead = message.ahead
        if message.bounds is not None:
            self._bounds = message.bounds
        if message.holds is not None:
            self._holds = message.holds
        if message.terms is not None:
            self._terms = message.terms
        jobs = self.model.store.jobs if self.model.store else ()
        note = message.error or (None if self.model.store else "no store: queues are empty")
        now = self.store_clock()  # the waits as fractui teams and jobs count them
        # the quotas the scheduler holds the teams to, as fractui teams shows them
        config, unlike = kept(self.config, self._terms, jobs, self.model.store is not None
                              and self.model.store.holder is not None)
        teams, starved = standing(jobs, config, self._usage, now, self._terms)
        self.query_one(QueuePanel).show(
            queue_stats(self.config.queues, jobs, now), teams, note,
            [j for j in jobs if j.state == PENDING], now, starved,
            next_order(jobs, scheduled(config, self._terms), self._usage), self._bounds,
            reserved(self._holds, jobs, teams, self._terms), tuple(unlike.values()))
        self.show_header()

    def _drains_finished(self, before: dict[tuple[str, Optional[int]], str],
                         now: dict[tuple[str, Optional[int]], str]) -> None:
        """A notice, on whatever screen the admin is, of the drains whose last job of the
        store ended or left since the last read: any admin's drain (the map and header change
        where the admin may not be looking, and a drain is made to be waited for). One for
        all a read finds so, not one each: a rack drained together, its jobs stopped together,
        was a stack of notices over the map."""
        done = [host_or_gpu(host, gpu) for host, gpu in finished(before, now)]
        if done:
            self.notify("%s drained: no job of the store is left there; %s" % (
                first_of(done, 5), "it takes no new work until it is uncordoned"
                if len(done) == 1 else "they take no new work until they are uncordoned"),
                title="drained")

    # -- drawing --

    def on_resize(self) -> None:
        body = self.query_one("#body")
        body.set_class(self.size.width < NARROW, "narrow")
        body.set_class(self.size.width >= WIDE, "wide")
        body.set_class(self.size.height < SHORT, "short")
        self.call_after_refresh(self.relayout)

    def compact_now(self) -> bool:
        if self.compact is not None:
            return self.compact
        rows = sum(1 + len(v.gpus) for v in self.model.hosts.values())
        return rows > max(1, self.map.size.height)

    def relayout(self, reveal: bool = False) -> None:
        """The map's lines again; with the placement's ghost drawn on them (``reveal``: the
        cursor put on it and scrolled into sight, as when it moved)."""
        self.filter, inverse = compile_filter(self.filter_text, self.filter)
        per = per_line(self.map.line_width) if self.compact_now() else 0
        lines = (self.model.lines(None, False, per, self.order) if self.filter is None else
                 self.filter.run(lambda p: self.model.lines(p, inverse, per, self.order),
                                 partial(self.notify, severity="warning")))
        if self.placement is not None:
            self.placement.in_order(self.model.gpu_rank(self.order))
        where = self.placement.current if self.placement else None
        follow: Optional[Cursor] = None  # the cursor onto the ghost, which moved
        if where is not None and self.placement is not None:
            lines, first = with_ghost(lines, where.host, where.gpus, where.profile, where.start,
                                      where.memory_mib, self.placement.job.name)
            if reveal and first >= 0:
                follow = _on_block(lines[first:first + 1], lambda b: b.kind == GHOST)
        clears = "(%s clears the filter)" % key_named(self, "fleet.back")
        self.map.show(lines, "nothing matches /%s/ %s" % (self.filter_text, clears)
                      if self.filter_text and not lines else "",
                      "the filter /%s/ shows no GPU %s" % (self.filter_text, clears)
                      if self.filter_text and not any(map(gpus_of, lines)) else "")
        # "· no fit" said only where the map draws it: at 80x24 its words cost the map a row
        self.query_one(Legend).show_unfit(any(g.unfit for line in lines
                                              for g in gpus_of(line)))
        if follow is not None:
            self.map.move_to(follow)
        self.show_header()

    def repaint(self) -> None:
        v = RichVariables(self.app)
        muted = muted_colour(self.app.theme_variables)
        owners = tuple(o.name for o in (self.config.teams if self.colour_by == "team"
                                         else self.config.queues))
        states = {"online": v["success"], "degraded": v["warning"], "offline": v["error"],
                  "untrusted": v["error"], "connecting": v["primary"]}
        slices = palette_for(self.app.current_theme)
        paint = Paint(slices, v["foreground"], v["surface"], muted, tuple(states.items()),
                      owners, self.colour_by,
                      marked=owners_marked(slices, owners, self.app.no_color))
        self.map.set_paint(paint)
        self.query_one(Legend).show(paint, any(self.source.simulated(h) for h in self.model.order))

    def unled(self) -> bool:
        """Whether the store's last read says no scheduler holds its lease: what is recorded
        now (a placement, a move, a stop) waits until one runs (False until it is read)."""
        return self.model.store is not None and self.model.store.holder is None

    def scheduler_line(self) -> str:
        """Who carries out decisions, who holds the store's lease first (a narrow header cuts
        the line's end): this TUI's child process, another scheduler, or none; then the child
        where it does not hold it (a standby, or ended). While the holder's passes fail, who
        it is alone: what fails them follows (``trouble_note``). Nothing while the store cannot
        be read: who held the lease is as old as the jobs shown, and the store's words say
        more."""
        store = self.model.store
        if store is None or self.store_error is not None:
            return ""
        holder, child = store.holder, self.source.scheduler
        ours = child is not None and holder == child.name
        if store.trouble is not None:
            return "scheduler: %s" % ("child process %s" % child.pid if child is not None and ours
                                      else holder or "none")
        if child is None:
            return "scheduler: %s" % (holder or "none (decisions wait)")
        code = child.exit_code()
        if code is not None:
            return "scheduler: %s; child process ended (exit %d; see %s)" % (
                "%s leads" % holder if holder else "none (decisions wait)", code, child.log)
        if ours:
            return "scheduler: child process %s, holds the lease" % child.pid
        return "scheduler: %s; child process %s stands by" % (
            "%s leads" % holder if holder else "none yet", child.pid)

    def trouble_note(self) -> Optional[str]:
        """While the lease holder's passes fail: what fails them, on the header after who
        holds it (nothing new is placed meanwhile, and every pending job reads as waiting)."""
        store = self.model.store
        if store is None or store.trouble is None:
            return None
        return failing_passes(store.trouble, "its")

    def store_note(self) -> Optional[str]:
        """While the store cannot be read (a server down or restarting, a locked file): its
        words, on the header, with how old the jobs shown are."""
        if self.store_error is None:
            return None
        when = "never read" if self._read_at is None else "jobs shown as read at " + \
            time.strftime("%H:%M:%S", time.localtime(self._read_at))
        return "%s (%s)" % (self.store_error, when)

    def show_header(self) -> None:
        view = ["fleet"]
        if self.placement is not None:
            view.append("%s #%d" % ("moving" if self.placement.moving else "placing",
                                    self.placement.job.id))
        if self.filter_text:
            view.append("filter /%s/" % self.filter_text)
        view.append("colour by " + self.colour_by)
        if self.order.measure is not None:
            n = unmeasured(self.model.hosts.values(), self.order)
            view.append(self.order.name + (", %d unmeasured last" % n if n else ""))
        if self.compact_now():
            view.append("compact")
        shown = listed(self)
        order = HINT_ORDER if self.placement is None else PLACING_ORDER
        shown.sort(key=lambda h: order.index(h[2]) if h[2] in order else len(order))
        hints = tuple((key, what) for key, what, _ in shown)
        self.query_one(Header).show(HeaderInfo(self.model.totals(), tuple(view), hints,
                                               self.store_note() or self.trouble_note()
                                               or self.source.note,
                                               self.scheduler_line()))

    def show_keys(self) -> None:
        self.show_header()

    # -- actions --

    def check_action(self, action: str, parameters: tuple[object, ...]) -> Optional[bool]:
        """``esc`` is bound while it has something to clear or leave; ``tab`` not while a
        placement by keyboard lasts (the focus leaving the bar took the mode's keys with it,
        and the panel's ``enter`` and ``p`` took their place under the plan)."""
        if action == "back":
            return self.what_now("fleet.back") is not None
        if action == "switch_panel":
            return self.placement is None or self.drag is not None
        return True

    def what_now(self, binding_id: str) -> Optional[str]:
        if binding_id != "fleet.back":
            return None
        box = self.query_one(FilterBox)
        if box.display and box.has_focus:
            return "clear filter"
        if self.placement is not None:
            return "don't move" if self.placement.moving else "don't place"
        if self.filter_text or box.display:
            return "clear filter"
        return "clear mark" if self.query_one(QueuePanel).marked is not None else None

    def action_filter(self) -> None:
        self.query_one(FilterBox).open(self.filter_text)

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self.relayout()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.query_one(FilterBox).close(clear=False)
        self._filter_closed()

    def _filter_closed(self) -> None:
        """The focus back from the filter: to the plan's bar while a placement by keyboard
        lasts (the map's keys there opened a job under the plan), else to the map."""
        bar = self.query_one(PreviewBar)
        (bar if self.placement is not None and self.drag is None else self.map).focus()

    def action_back(self) -> None:
        """In the filter, closes it (and clears it, and the queue mark); elsewhere it leaves
        placement mode too."""
        box = self.query_one(FilterBox)
        closing = box.display and box.has_focus
        if closing:
            box.close(clear=True)
            self._filter_closed()
        self.filter_text = ""
        self.query_one(QueuePanel).mark(None)
        if self.placement is not None and not closing:
            self.end_placement(left=True)
        self.relayout()

    def action_compact(self) -> None:
        self.compact = not self.compact_now()
        self.relayout()

    def action_order(self) -> None:
        """The GPUs in the next order, the cursor kept on its GPU (scrolled to it)."""
        self.order = after(self.order)
        cursor = self.map.cursor if self.map.placed else None
        self.relayout()
        if cursor is not None:
            self.map.move_to(cursor)

    def action_colour_by(self) -> None:
        self.colour_by = "queue" if self.colour_by == "team" else "team"
        self.repaint()
        self.show_header()

    def action_switch_panel(self) -> None:
        panel = self.query_one(QueuePanel)
        (self.map if panel.has_focus else panel).focus()

    # -- placement --

    def on_job_picked(self, message: JobPicked) -> None:
        if not message.place:
            self.fleet_app.open_job(message.job.id)
        elif message.job.state == PENDING:
            self.start_placement(message.job, message.drag)

    def place_job(self, job_id: int, back: Optional[Callable[[], None]] = None) -> None:
        """Placement mode on pending job ``job_id`` (the jobs view's ``p``); ``back``: what
        reopens the view it was started in, for ``esc``."""
        job = self._job_now(job_id, lambda j: j.state == PENDING, "pending", back)
        if job is not None:
            self.query_one(QueuePanel).select_job(job_id)
            self.start_placement(job, back=back)

    def move_job(self, job_id: int, back: Optional[Callable[[], None]] = None) -> None:
        """Placement mode on placed or running job ``job_id``, to move it (``m``)."""
        job = self._job_now(job_id, lambda j: movable(j.state), "placed or running", back)
        if job is not None:
            self.start_placement(job, back=back)

    def _job_now(self, job_id: int, fits: Callable[[Job], bool], what: str,
                 back: Optional[Callable[[], None]]) -> Optional[Job]:
        """Job ``job_id`` as the store was last read, if it ``fits``; else None, said, and
        ``back`` run: the views the placement was asked from, closed for it, opened again (the
        admin had not come to the map)."""
        jobs = self.model.store.jobs if self.model.store else ()
        job = next((j for j in jobs if j.id == job_id), None)
        if job is None or not fits(job):
            self.notify("job %d is no longer %s: %s" % (job_id, what, "it ended" if job is None
                        else "%s, %s" % (job.state, job.slot.describe() if job.slot
                                         else "queue " + job.queue)), severity="warning")
            if back is not None:
                back()
            return None
        return job

    def start_placement(self, job: Job, drag: bool = False,
                        back: Optional[Callable[[], None]] = None) -> None:
        if self.placement is None:  # (begun during another: the map's cursor is on its ghost)
            self.left_from = (self.query_one(QueuePanel).has_focus, self.map.cursor)
        self.placement = Placement(job, busy="finding the slots it could take…")
        self.came_from = back
        self.drag = (0, 0, False) if drag else None
        # by keyboard, the map takes the queue panel's rows where it sits under the map (80
        # columns): with the plan's bar too, the map kept a line or two, and the ghost's GPU
        # went out of sight; a drag keeps the panel it started on under the pointer
        self.query_one("#body").set_class(not drag, "placing")
        bar = self.query_one(PreviewBar)
        bar.show(self.placement)
        if not drag:
            bar.focus()
        self.relayout()
        self.find_slots(job, list(self.statuses.values()))

    def _views(self, statuses: Sequence[HostStatus], view: StoreView) -> list[HostView]:
        """The hosts as placement judges them: each GPU the lease holder holds back from mode
        changes offered none here either."""
        return [HostView.of(s, self.config.mode_fixed(s.name), view.held.keys())
                for s in statuses]

    def _found(self, statuses: Sequence[HostStatus], view: StoreView, job: Job
               ) -> list[Candidate]:
        """Where ``job`` could go now (the preview's candidates), and where it is pending, on
        each GPU whose MIG mode change is pending, as ``fractui place`` would place it there
        (``pending_slots``); a move is offered the preview's only, as ``fractui move``."""
        views = self._views(statuses, view)
        found = candidates(views, view.jobs, view.uid, job, view.cordons)
        if job.state == PENDING:
            found += pending_slots(views, view.jobs, view.cordons, view.uid, job, view.held,
                                   self.store_clock())  # (the holds' clock)
        return found

    @work(thread=True, exclusive=True, exit_on_error=False, group="placement")
    def find_slots(self, job: Job, statuses: list[HostStatus]) -> None:
        try:
            view = self.source.read_store() or self.model.store
            held = self._held_to(view)
        except StoreError as err:
            self.post_message(Placed(job, None, str(err)))
            return
        if view is None:
            self.post_message(Slots(job, []))
            return
        now = next((j for j in view.jobs if j.id == job.id), None)
        if now is None or not same_kind(job, now):
            self.post_message(Placed(job, None, _no_longer(job)))
            return
        self.post_message(Slots(now, self._found(statuses, view, now), held=held))

    def _held_to(self, view: Optional[StoreView]) -> HeldTo:
        """The quotas a placement by hand is held to, as the store is read now (in a worker):
        the scheduler's (``team_terms``), else this config's, with ``view``'s jobs counted
        against them (``HeldTo``), as ``fractui place`` counts them."""
        return HeldTo.of(view.jobs if view is not None else (), self.config,
                         self.source.read_terms())

    def on_slots(self, message: Slots) -> None:
        if self.placement is None or self.placement.job.id != message.job.id:
            return
        held = message.held if message.held is not None else self.placement.held
        p = Placement.of(message.job, message.found, self.model.gpu_rank(self.order), held)
        p.note = message.note
        if message.near is not None:
            near = message.near
            p.at = next((i for i, c in enumerate(p.candidates) if
                         (c.host, c.gpus, c.start) == (near.host, near.gpus, near.start)), p.at)
        self.placement = p
        self.query_one(PreviewBar).show(p)
        if self.drag is not None:
            x, y, done = self.drag
            self._drag_to(x, y, done)
        self.relayout(reveal=True)

    def on_ghost_moved(self, _message: GhostMoved) -> None:
        p = self.placement
        if p is not None and p.agreed is not None and p.agreed != p.current:
            p.agreed, p.note = None, None  # agreed to another slot: this one is asked anew
        self.query_one(PreviewBar).changed()
        self.relayout(reveal=True)

    def on_placement_done(self, message: PlacementDone) -> None:
        p = self.placement
        if p is None:
            return
        if not message.confirm:
            self.end_placement(left=True)
            return
        if p.busy or p.current is None:
            return
        where = p.current
        if p.needs_consent():  # said on the bar; a second confirm agrees
            p.agreed = where
            p.note = ("Past the quota: %s again places it as a borrowed job (preemptible by a "
                      "team within its quota); %s cancels." % (
                          key_named(self, "placement.confirm"),
                          key_named(self, "placement.cancel")))
            self.query_one(PreviewBar).changed()
            return
        p.busy = "checking %s gpu%s against its agent…" % (where.host,
                                                          ",".join(map(str, where.gpus)))
        self.query_one(PreviewBar).changed()
        statuses = dict(self.statuses)
        self.confirm(p.job, where, statuses, p.agreed == where, p.held.quota(p.job.team))

    @work(thread=True, exclusive=True, exit_on_error=False, group="placement")
    def confirm(self, job: Job, where: Candidate, statuses: dict[str, HostStatus],
                agreed: bool, previewed: Optional[Quota]) -> None:
        """Checks the previewed slot against the GPU as it is now and the store as it is now;
        records it only if the plan is unchanged (and, past the team's quota, only if the
        admin agreed to that), else shows the new plan instead; past a quota, whether it was
        used since the preview or changed (``previewed``, the quota the preview held the job
        to: the lease holder's terms rewritten by a scheduler of another config)."""
        store = self.source.store
        if store is None:
            self.post_message(Placed(job, None, "no store here: nothing can be recorded"))
            return
        try:
            fresh = self.source.fresh(where.host)
        except (HostUnavailable, AgentCallError) as err:
            self.post_message(Slots(job, [], "cannot check %s: %s" % (where.host, err)))
            return
        if fresh is not None:
            statuses[where.host] = fresh
        try:
            view = self.source.read_store()
            held = self._held_to(view)
        except StoreError as err:
            self.post_message(Placed(job, None, str(err)))
            return
        now = next((j for j in view.jobs if j.id == job.id), None) if view else None
        if view is None or now is None or not same_kind(job, now):
            self.post_message(Placed(job, None, _no_longer(job)))
            return
        try:
            in_service(where.slot(), view.cordons, view.jobs)
        except Unfit as err:  # cordoned since the preview: said with the reason
            self.post_message(Placed(now, None, str(err)))
            return
        found = self._found(list(statuses.values()), view, now)
        match = next((c for c in found if same_slot(c, where)), None)
        if match is None:  # (nor one now refused: the slot confirmed was not)
            self.post_message(Slots(now, found, "The GPU changed since the preview; nothing "
                                    "was placed. The plan now:", near=where, held=held))
            return
        past = Placement(now, [match], held=held).past_quota()
        if past is not None and not agreed:
            self.post_message(Slots(now, found, "The team's quota %s meanwhile; nothing was "
                                    "placed." % ("was used" if held.quota(now.team) == previewed
                                                 else "changed"), near=where, held=held))
            return
        by_hand = move_by_hand if movable(now.state) else place_by_hand
        try:  # (of the attempt previewed: a later one, run and requeued since, is refused)
            by_hand(store, job, match.slot(), self.fleet_app.asker, past, held.quota(now.team))
        except (Refused, Denied, StoreError) as err:
            self.post_message(Placed(now, None, str(err)))
            return
        self.post_message(Placed(now, match))

    def on_placed(self, message: Placed) -> None:
        # (none to carry it out: said as fractui move says it, the header's "scheduler: none")
        unled, warning = ("; " + NO_SCHEDULER, "warning") if self.unled() else ("", "information")
        if message.where is not None and movable(message.job.state):
            self.notify("#%d moving: the scheduler stops it, then %s%s" % (
                message.job.id, message.where.plan, unled), title="moving", severity=warning)
        elif message.where is not None:
            self.notify("#%d placed by hand: %s%s" % (message.job.id, message.where.plan,
                                                      unled), title="placed", severity=warning)
        else:
            self.notify(message.error or "not placed", severity="warning")
        self.end_placement(left=message.where is None)  # not placed: back as it was
        self.read_store()

    def _placement_still_pending(self, view: StoreView) -> None:
        """Placement mode ends, said, once its job is no longer pending (the scheduler or
        another admin placed it, or it was cancelled): its preview would show a stale plan.
        Not while a check is under way: that one says how it ended."""
        p = self.placement
        if p is None or p.busy or any(j.id == p.job.id and same_kind(p.job, j)
                                      for j in view.jobs):
            return
        self.notify("%s: placement mode ended" % _no_longer(p.job), severity="warning")
        self.end_placement(left=True)  # (as when enter finds it so: nothing was recorded)

    def end_placement(self, left: bool = False) -> None:
        """The focus back where such work goes on: the queue panel after a placement (the
        next pending job), the map after a move, its cursor where the ghost last was (a move
        begins in the jobs view or on a job's screen, which it closed: the panel's keys act on
        pending jobs, not on the job moved). ``left``: the admin left it (``esc``, a refusal,
        its job no longer as it began): the map as they left it as it began (``left_from``),
        focused, its cursor on the same GPU (not where the ghost was, on a slot the job never
        took), the queue panel only if it had the focus; and one started in the jobs view goes
        back there, its cursor on the job still (not to the map, which the admin did not come
        from), as one started on a job's screen goes back to that job's screen
        (``came_from``)."""
        p = self.placement
        back, self.came_from = self.came_from, None
        was, self.left_from = self.left_from, None
        self.placement = None
        self.drag = None
        self.query_one("#body").remove_class("placing")
        self.query_one(PreviewBar).show(None)
        self.relayout()
        panel = self.query_one(QueuePanel)
        if left and was is not None:
            on_panel, cursor = was
            self.map.move_to(cursor)
            (panel if on_panel else self.map).focus()
        else:
            (self.map if p is not None and p.moving else panel).focus()
        if left and back is not None and self.is_active:  # (not under a screen opened since)
            back()

    def on_dragging(self, message: Dragging) -> None:
        if self.drag is None:
            return
        self.drag = (message.x, message.y, message.done)
        if self.placement is not None and not self.placement.busy:
            self._drag_to(message.x, message.y, message.done)

    def _drag_to(self, x: int, y: int, done: bool) -> None:
        """The ghost to the slot nearest the pointer on the GPU under it; on release, the
        confirm step (or, dropped where the job cannot go, nothing)."""
        p = self.placement
        if p is None:
            return
        hit = self._gpu_at(x, y)
        moved = hit is not None and p.nearest(*hit)
        if moved:
            self.query_one(PreviewBar).changed()
            self.relayout()
        if done:
            self.drag = None
            if moved:
                self.query_one(PreviewBar).focus()
            else:
                self.notify("#%d: nothing placed: %s" % (p.job.id, self._why_not_there(p, hit)),
                            severity="warning")
                self.end_placement(left=True)

    def _why_not_there(self, p: Placement, hit: Optional[tuple[str, int, float, int]]) -> str:
        """Why the job dropped there (``hit``: the GPU under the pointer, if one) cannot go
        there: said as it ends, where "cannot go" alone left the admin to guess."""
        if hit is None:
            return "dropped off the map's GPUs"
        host, gpu = hit[0], hit[1]
        where = "gpu %d of %s" % (gpu, host)
        store = self.model.store
        out = refusal(store.cordons, store.jobs, host, [gpu]) if store else None
        if out is not None:
            return out
        if not p.candidates:
            return "no slot of the fleet can take it now"
        return "no slot on %s can take it now; %s elsewhere can" % (
            where, count(len(p.candidates), "slot"))

    def _gpu_at(self, x: int, y: int) -> Optional[tuple[str, int, float, int]]:
        """(host, gpu, fraction of its bar, slices) under screen cell (x, y), if a GPU."""
        try:
            widget, _region = self.get_widget_at(x, y)
        except NoWidget:  # outside the screen
            return None
        if widget is not self.map:
            return None
        return self.map.gpu_at(x - self.map.content_region.x, y - self.map.content_region.y)

    def on_slice_chosen(self, message: SliceChosen) -> None:
        """``enter``: the job on the slice, or (a free slice, or ``d``) the GPU's detail."""
        number = message.part.job_id
        if number is not None and not message.detail:
            self.fleet_app.open_job(number)
        else:
            self.fleet_app.open_gpu(message.gpu.host, message.gpu.index)

    def on_service_asked(self, message: ServiceAsked) -> None:
        self.set_service(message.host, None, message.mode)

    def on_move_asked(self, message: MoveAsked) -> None:
        """``m`` on the map: the job under the cursor moved, as the jobs view's ``m`` moves
        it; on a free slice of a GPU that runs one job of the store, that one. Where the GPU
        runs several, or none, it says which to put the cursor on (or that there is none)."""
        if self.placement is not None:  # (the map has the focus in a drag)
            return
        ids = sorted({i for i in map(block_job_id, message.gpu.blocks) if i is not None})
        job_id = message.part.job_id
        if job_id is None and len(ids) == 1:
            job_id = ids[0]
        if job_id is not None:
            self.fleet_app.move_job(job_id)
            return
        where = "%s gpu %d" % (message.gpu.host, message.gpu.index)
        self.notify("no job under the cursor to move: %s" % (
            "%s runs %s: put the cursor on one's slice (or %s opens the GPU)" % (
                where, ", ".join("#%d" % i for i in ids), key_named(self, "map.gpu"))
            if ids
            else "%s runs no job of the store" % where), severity="warning")

    # -- jumps (the palette) --

    def _jump_to(self, found: Callable[[Line], Optional[Cursor]]) -> bool:
        """The cursor to the first place ``found`` names, that place's line at the top."""
        for i, line in enumerate(self.map.lines):
            cursor = found(line)
            if cursor is not None:
                self.map.move_to(cursor)
                self.map.jump(i)
                self.map.focus()
                return True
        return False

    def jump_host(self, name: str) -> None:
        """Its header at the top, the cursor on its first GPU (if it has one)."""
        self.filter_text = ""
        self.relayout()
        at = next((i for i, line in enumerate(self.map.lines)
                   if isinstance(line, HostLine) and line.name == name), None)
        if at is None:
            return
        gpus = self.model.hosts[name].gpus if name in self.model.hosts else ()
        if gpus:
            self.map.move_to(Cursor(name, gpus[0].index, 0.0))
        self.map.jump(at)
        self.map.focus()

    def jump_queue(self, name: str) -> None:
        panel = self.query_one(QueuePanel)
        panel.mark(name)
        panel.focus()
        self.refresh_bindings()  # esc clears the mark now

    def jump_job(self, job_id: int, queue: str) -> None:
        """To the GPU the job is on; a job on no GPU yet, to its queue."""
        self.filter_text = ""
        self.relayout()

        def holds(line: Line) -> Optional[Cursor]:
            return next((Cursor(g.host, g.index, b.start + b.size / 2) for g in gpus_of(line)
                         for b in g.blocks if b.kind != GHOST and
                         block_job_id(b) == job_id),
                        None)

        if not self._jump_to(holds):
            self.jump_queue(queue)

    def set_service(self, host: str, gpu: Optional[int], mode: Optional[str]) -> None:
        """Cordons or drains (``mode``) a host or one GPU, or puts it back in service (None),
        in a thread worker, after those asked before it (``OneAtATime``): an uncordon
        pressed while the store was slow to take the cordon is never made before it. What is
        being written is said at once (a slow store said nothing till it answered, and the
        admin could not tell the key was taken), its outcome once the store answers; with no
        store, only that nothing can be recorded."""
        if self.source.store is not None:
            self.notify("%s %s…" % ({CORDON: "cordoning", DRAIN: "draining"}.get(
                mode or "", "uncordoning"), host_or_gpu(host, gpu)))
        self._service_asked.append((host, gpu, mode))
        self._services.ask()

    @work(thread=True, exit_on_error=False, group="service")
    def _set_services(self) -> None:
        while self._service_asked:
            host, gpu, mode = self._service_asked.popleft()
            try:
                self._set_service(host, gpu, mode)
            except Exception as err:  # not foreseen (a bug): said and logged (the worker
                # ended unsaid: the admin saw nothing of it), and those asked after it made
                where = host_or_gpu(host, gpu)
                log.error("%s of %s failed", mode or "uncordon", where, exc_info=err)
                self.post_message(ServiceChanged(unforeseen(
                    "the %s of %s" % (mode or "uncordon", where), err,
                    "look at the map before asking again"), True))

    def _set_service(self, host: str, gpu: Optional[int], mode: Optional[str]) -> None:
        """One cordon, drain or uncordon, by the one rule (an admin's; a refusal is said as
        it is)."""
        store = self.source.store
        if store is None:
            self.post_message(ServiceChanged("no store here: nothing can be recorded", True))
            return
        try:
            if mode is None:
                lifted = uncordon(store, host, gpu, self.fleet_app.asker)
                whole = None if gpu is None else host_out(store.cordons(),
                                                          store.jobs(ON_HOST), host)
                if whole is not None:  # the GPU is still out, by its host's: never "in service"
                    said = "%s%s is still %s as a whole, and this GPU with it: uncordon " \
                        "the host (U on the map) to put it back" % (
                            "back in service: %s; but " % ", ".join(c.where() for c in lifted)
                            if lifted else "%s gpu%d has no cordon of its own; " % (host, gpu),
                            host, whole)
                    self.post_message(ServiceChanged(said, True))
                    return
                said = "back in service: %s" % ", ".join(c.where() for c in lifted) \
                    if lifted else "%s was in service" % host_or_gpu(host, gpu)
            else:
                made = cordon(store, host, gpu, mode, self.fleet_app.asker)
                said = made_said(made, store.jobs(ON_HOST), "the map")
        except (Denied, StoreError) as err:
            self.post_message(ServiceChanged(str(err), True))
            return
        self.post_message(ServiceChanged(said))

    def on_service_changed(self, message: ServiceChanged) -> None:
        self.notify(message.said, severity="warning" if message.error else "information")
        self.read_store()

    def _service_entries(self, host: str, gpus: Sequence[GpuLine]) -> list[Entry]:
        """Cordon and drain the host and each of its GPUs, and uncordon those with a cordon of
        their own (listed before anything is typed); what changes the fleet is never offered
        read-only or without a store."""
        if self.fleet_app.readonly or self.source.store is None:
            return []
        own = self.model.out_of_service(host)
        entries = []
        for gpu, what in [(None, "host %s" % host)] + [
                (g.index, "gpu %s %d" % (host, g.index)) for g in gpus]:
            now = own.get(gpu)
            if now is not None:
                entries.append(Entry("uncordon %s" % what, "it is %s: back in service" % now,
                                     lambda g=gpu: self.set_service(host, g, None)))
            for mode, help_ in ((CORDON, "no new work lands there; what runs runs on"),
                                (DRAIN, "as cordon, and say drained once it is empty")):
                entries.append(Entry("%s %s" % (mode, what), help_,
                                     lambda g=gpu, m=mode: self.set_service(host, g, m),
                                     discover=False))
        return entries

    def palette_entries(self) -> list[Entry]:
        entries = []
        for name in self.model.order:
            view = self.model.hosts.get(name)
            state = view.header.state if view else "connecting"
            entries.append(Entry("host %s" % name, "jump to host (%s)" % state,
                                 lambda n=name: self.jump_host(n)))
            entries += self._service_entries(name, view.gpus if view else ())
        for q in self.config.queues:
            entries.append(Entry("queue %s" % q.name, "jump to queue (%s)" % q.describe(),
                                 lambda n=q.name: self.jump_queue(n)))
        for job in self.model.store.jobs if self.model.store else ():
            where = job.slot.describe() if job.slot else "queue " + job.queue
            entries.append(Entry("job #%d %s" % (job.id, job.name),
                                 "%s, %s, team %s" % (job.state, where, job.team or "—"),
                                 lambda j=job: self.jump_job(j.id, j.queue), discover=False))
            entries.append(Entry("open job #%d %s" % (job.id, job.name),
                                 "details, history and live logs",
                                 lambda j=job: self.fleet_app.open_job(j.id), discover=False))
            if self.fleet_app.readonly:
                continue
            if job.state == PENDING:
                entries.append(place_entry(job, lambda j=job: self.place_job(j.id)))
            elif movable(job.state):
                entries.append(move_entry(job, lambda j=job: self.move_job(j.id)))
        for job in self._palette_ended:  # (left the map)
            entries.append(Entry("open job #%d %s" % (job.id, job.name), "%s%s, team %s" % (
                job.state, ": %s" % job.reason if job.reason else "", job.team or "—"),
                lambda j=job: self.fleet_app.open_job(j.id), discover=False))
        entries.append(Entry("jobs", "every job in a table: sort, filter, open (%s)"
                             % key_named(self, "fleet.jobs"),
                             self.fleet_app.open_jobs, anywhere=True))
        entries.append(Entry("report", "usage over a range: GPUs held and used, waits, what "
                             "sharing saved (%s)" % key_named(self, "fleet.report"),
                             self.fleet_app.open_report, anywhere=True))
        entries.append(Entry("messages", "the last notices again, newest first, with their "
                             "time and severity (%s)" % key_named(self, "app.messages"),
                             self.fleet_app.open_messages,
                             anywhere=True))
        for name in sorted(self.app.available_themes):
            entries.append(Entry("theme %s" % name, "switch to this theme",
                                 lambda n=name: setattr(self.app, "theme", n)))
        other = "queue" if self.colour_by == "team" else "team"
        entries.append(Entry("colour by %s" % other, "colour slices by %s" % other,
                             self.action_colour_by))
        entries.append(Entry("order %s" % after(self.order).name,
                             "the map's GPUs in this order (%s)" % key_named(self, "fleet.order"),
                             self.action_order))
        entries.append(Entry("compact %s" % ("off" if self.compact_now() else "on"),
                             "several GPUs per line, or one", self.action_compact))
        return entries


def _on_block(lines: Sequence[Line], fits: Callable[[Block], bool]) -> Optional[Cursor]:
    """The cursor where the first block on ``lines`` that ``fits`` starts (its middle, if
    narrow): the placement ghost, a job's slice; None where none is drawn."""
    for line in lines:
        for g in gpus_of(line):
            for b in g.blocks:
                if fits(b):
                    return Cursor(g.host, g.index, b.start + min(b.size / 2, 0.01))
    return None


def same_kind(then: Job, now: Job) -> bool:
    """Whether ``now`` is still what placement mode began on as ``then``: pending, to place
    it; placed or running (anywhere: the scheduler may have launched it), to move it."""
    return movable(now.state) if movable(then.state) else now.state == PENDING


def _no_longer(job: Job) -> str:
    return "job %d is no longer %s" % (job.id, "placed or running" if movable(job.state)
                                       else "pending")
