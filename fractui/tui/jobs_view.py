"""The jobs view (``J``, ``:jobs``): every job in one table, k9s's pods view and nvitop's
processes — sorted by any column (``o`` the next column, ``O`` the other way), filtered with
``/``, its columns those that fit the width; ``enter`` opens the job screen.

It reads what the fleet screen already holds (the store's last read, the hosts' statuses) once
a second: no I/O of its own.
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial
from typing import Callable, Mapping, Optional, Sequence

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.screen import Screen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Input, Static

from fractui.arguments import JOBS_LIMIT
from fractui.cells import cell_len, cut, padded
from fractui.fleet.host import HostStatus
from fractui.store.intents import as_it_is
from fractui.store.model import ENDED, PENDING, RUNNING, Job, movable
from fractui.tui.actions import (Action, KeyLine, Keyed, Modal, bind, bindings, key_named,
                                 wrapped)
from fractui.tui.filterbox import FilterBox
from fractui.tui.jobrows import (COLUMNS, PADDING, Column, JobRow, filter_rows, fit, job_rows,
                                 memory, sort_rows)
from fractui.tui.model import StoreView, compile_filter
from fractui.tui.scrolling import scroll_now
from fractui.tui.themes import RichVariables
from fractui.tui.typed import Typed
from fractui.words import duration

REFRESH_S = 1.0


def cell(key: str, row: JobRow) -> str:
    """A row's text in column ``key``."""
    if key == "memory":
        return memory(row)
    if key == "util":
        return "—" if row.util is None else "%d%%" % row.util
    if key == "age":
        return duration(row.age_s)
    if key == "id":
        return row.ref
    if key == "user":
        return row.user or "—"
    return str(getattr(row, key))


GROWN = ("id", "name", "where")  # widened to their longest cell, in this order, where room is


def grown(columns: Sequence[Column], rows: Sequence[JobRow], width: int) -> tuple[int, ...]:
    """Each column's width in ``width`` cells: its own, then the room left given first to the
    id, the name and the place (as far as their longest cell: HOST/JOB names are long), and
    the rest to the reason."""
    widths = {c.key: c.width for c in columns}
    room = width - sum(w + PADDING for w in widths.values())
    for key in GROWN:
        if key in widths and room > 0:
            longest = max((cell_len(cell(key, r)) for r in rows), default=0)
            more = min(room, max(0, longest - widths[key]))
            widths[key] += more
            room -= more
    if "reason" in widths and room > 0:
        widths["reason"] += room
    return tuple(widths[c.key] for c in columns)


def line(values: Sequence[str], widths: Sequence[int], marked: bool = True) -> str:
    """Cells padded a space each side, each cut to its width in terminal cells (fractui.cells:
    a name in any script keeps the columns after it under their titles); ``marked``: ending in
    "…" where cut (a row's: a reason cut at the width read as if it were whole; not the
    titles', whose sort arrow alone may not fit)."""
    return "".join(" %s " % padded(cut(v, w) if marked else v, w)
                   for v, w in zip(values, widths))


class JobTable(ScrollView, can_focus=True, inherit_bindings=False):
    """The rows, drawn as the slice map draws its lines: only those on screen, each cached, so
    a fleet's thousands of jobs cost what a screenful costs. A row cursor; ``j``/``k`` move it."""

    BINDINGS = [
        Binding("up,k", "move(-1)", "previous job", id="jobs.up", show=False),
        Binding("down,j", "move(1)", "next job", id="jobs.down", show=False),
        Binding("pageup", "page(-1)", "page up", id="jobs.page_up", show=False),
        Binding("pagedown,space", "page(1)", "page down", id="jobs.page_down", show=False),
        Binding("home,g", "ends(False)", "first job", id="jobs.top", show=False),
        Binding("end,G", "ends(True)", "last job", id="jobs.bottom", show=False),
    ]
    DEFAULT_CSS = """
    JobTable { background: $surface; scrollbar-size-vertical: 1; }
    """

    class Clicked(Message):
        """A click on the row the cursor is already on: open it."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.rows: list[JobRow] = []
        self.keys: tuple[str, ...] = ()
        self.widths: tuple[int, ...] = ()
        self.cursor = 0
        self._cache: LRUCache[tuple, Strip] = LRUCache(1024)

    def show(self, rows: list[JobRow], keys: tuple[str, ...], widths: tuple[int, ...]) -> None:
        """New rows in these columns; the cursor stays on its job if it is still shown, and
        in sight where its job moved (sorted again, it may be a screen away from where it
        was). Rows read again in place (each second, their ages) leave the view where it was
        scrolled to: the wheel scrolls it away from the cursor."""
        keep = self.rows[self.cursor].ref if 0 <= self.cursor < len(self.rows) else None
        self.rows, self.keys, self.widths = rows, keys, widths
        self.virtual_size = Size(sum(widths) + PADDING * len(widths), len(rows))
        at = self.at(keep)
        if at == self.cursor:
            self.refresh()
        else:  # its job moved, or is gone (the row at its place): in sight
            self._to(self.cursor if at is None else at)

    def at(self, ref: Optional[str]) -> Optional[int]:
        """The index of ``ref``'s row, None where it is not shown."""
        return next((i for i, r in enumerate(self.rows) if r.ref == ref), None)

    def cursor_on(self, ref: str) -> None:
        """The cursor onto ``ref``'s row, where it is shown."""
        at = self.at(ref)
        if at is not None:
            self._to(at)

    @property
    def row(self) -> Optional[JobRow]:
        return self.rows[self.cursor] if 0 <= self.cursor < len(self.rows) else None

    def _to(self, at: int) -> None:
        self.cursor = max(0, min(at, len(self.rows) - 1))
        top, height = self.scroll_offset.y, self.size.height
        if self.cursor < top:
            scroll_now(self, self.cursor)
        elif height and self.cursor >= top + height:  # (none before its first layout)
            scroll_now(self, self.cursor - height + 1)
        self.refresh()

    def action_move(self, by: int) -> None:
        self._to(self.cursor + by)

    def action_page(self, by: int) -> None:
        self._to(self.cursor + by * max(1, self.size.height - 1))

    def action_ends(self, last: bool) -> None:
        self._to(len(self.rows) - 1 if last else 0)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or not 0 <= offset.y + self.scroll_offset.y < len(self.rows):
            return
        at = offset.y + self.scroll_offset.y
        if at == self.cursor:
            self.post_message(self.Clicked())
        self._to(at)

    def render_line(self, y: int) -> Strip:
        index = y + self.scroll_offset.y
        width = self.size.width
        base = self.rich_style
        if not 0 <= index < len(self.rows):
            return Strip.blank(width, base)
        row = self.rows[index]
        selected = index == self.cursor
        key = (row, self.keys, self.widths, selected, width, base)
        strip = self._cache.get(key)
        if strip is None:
            text = line([cell(k, row) for k in self.keys], self.widths)
            style = base + Style(reverse=True) if selected else base
            strip = Strip([Segment(text, style)]).crop_extend(0, width, base)
            self._cache[key] = strip
        return strip


class JobsScreen(Screen[None], Modal, Keyed, inherit_bindings=False):
    ACTIONS = (
        Action("jobs.back", "escape,q", "back", "back", "Back to the fleet"),
        Action("jobs.open", "enter", "open", "open", "The job screen of the job on the row"),
        Action("jobs.sort", "o", "sort", "sort", "Sort by the next column"),
        Action("jobs.reverse", "O", "reverse", "reverse", "Reverse the sort"),
        Action("jobs.ended", "a", "ended", "ended too",
               "The newest ended jobs too (as fractui jobs --all): why one failed, its output"),
        Action("jobs.filter", "slash", "filter", "filter",
               "Filter rows by a regex; !regex keeps those that do not match"),
        Action("jobs.place", "p", "place", "place",
               "Place the row's pending job by hand: back to the map, in placement mode",
               dangerous=True),
        Action("jobs.move", "m", "move", "move",
               "Move the row's placed or running job by hand: back to the map, in placement "
               "mode; it is stopped, then placed on the slot chosen, held for it meanwhile",
               dangerous=True),
    )
    BINDINGS = bindings(ACTIONS)
    DEFAULT_CSS = """
    JobsScreen #title { height: auto; background: $panel; padding: 0 1; }
    JobsScreen #jobs-head { height: 1; background: $surface; }
    JobsScreen JobTable { height: 1fr; }
    JobsScreen FilterBox { dock: none; }
    """

    def __init__(self, store: Callable[[], Optional[StoreView]],
                 statuses: Callable[[], Mapping[str, HostStatus]],
                 clock: Callable[[], float],
                 open_job: Callable[[int, Callable[[Optional[Job]], None]], None],
                 place: Callable[[int], None], move: Callable[[int], None], readonly: bool,
                 store_note: Callable[[], Optional[str]] = lambda: None,
                 want_ended: Callable[[bool], None] = lambda _wanted: None,
                 tui_clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        bind(self, self.ACTIONS, readonly)
        self.place = place
        self.move = move
        self.store = store
        self.want_ended = want_ended
        """Tells the store's reader whether this view shows the ended jobs now: they are read
        only then."""
        self.store_note = store_note
        """Why the store cannot be read now, and how old its jobs shown are; None if it can."""
        self.statuses = statuses
        self.clock = clock
        """The store's clock (the fleet screen's ``store_clock``): what the rows' ages count
        to, as fractui jobs counts them."""
        self.tui_clock = tui_clock
        """The TUI's own clock: when the view took the ended jobs, said as the header says
        when the store was read (by the store's, a laptop set minutes off read a time minutes
        off its own)."""
        self.open_job = open_job
        self.sort_key = "age"
        self.reverse = True
        """Longest waiting (or running) first."""
        self.filter_text = ""
        self.filter: Optional[Typed] = None
        """The filter's pattern (its slowness kept while its text is the same)."""
        self.ended = False
        """Whether the newest ended jobs are listed too (``a``)."""
        self.ended_seen: tuple[Job, ...] = ()
        """The newest ended jobs as last read: listed while the read asked for them comes."""
        self.ended_read_at: Optional[float] = None
        """When ``ended_seen`` was read (by the TUI's clock, as the view took them)."""
        self.every: list[JobRow] = []
        """Every job as last read."""
        self.rows: list[JobRow] = []
        """As shown: filtered and sorted."""
        self._drawn: tuple = ()

    def compose(self) -> ComposeResult:
        yield Static(id="title", markup=False)
        yield Static(id="jobs-head", markup=False)
        yield JobTable(id="jobs")
        yield FilterBox(id="jobs-filter", clears=key_named(self, "jobs.back"))  # (over the keys)
        yield KeyLine(("jobs.",), id="jobs-keys")

    @property
    def table(self) -> JobTable:
        return self.query_one(JobTable)

    def on_mount(self) -> None:
        self.table.focus()
        self.reload()
        self.set_interval(REFRESH_S, self.reload)

    def on_screen_resume(self) -> None:
        """Opened again: what changed while it was closed."""
        self.want_ended(self.ended)
        self.reload()

    def on_screen_suspend(self) -> None:
        """Closed, or a screen over it: the ended jobs are no longer read for it."""
        self.want_ended(False)

    def on_resize(self) -> None:
        self.call_after_refresh(self.draw)

    def reload(self) -> None:
        """Every job read again from what the fleet screen holds (while the view is shown)."""
        if not self.is_current:
            return
        store = self.store()
        if store is not None and store.ended is not None:
            self.ended_seen, self.ended_read_at = store.ended, self.tui_clock()
        elif store is not None and self.ended:  # being read again (it was covered: a job's
            # screen): the ended as last read meanwhile, not an empty list and a lost cursor
            store = dataclasses.replace(store, ended=self.ended_seen)
        self.every = job_rows(store, self.statuses(), self.clock(), self.ended)
        self.order()

    def order(self) -> None:
        """The rows filtered and sorted again, without reading them again (a sort key)."""
        self.filter, inverse = compile_filter(self.filter_text, self.filter)
        rows = self.every if self.filter is None else self.filter.run(
            lambda p: filter_rows(self.every, p, inverse),
            partial(self.notify, severity="warning"))
        self.rows = sort_rows(rows, self.sort_key, self.reverse)
        self.draw()

    def draw(self) -> None:
        """The title, the columns' header and the rows; the rows only if something in them,
        the columns or the order changed."""
        width = self.table.size.width or self.size.width
        columns = fit(width - 1)
        widths = grown(columns, self.rows, width - 1)
        store = self.store()
        parts = ["jobs%s%s" % (", the newest %d ended too" % JOBS_LIMIT if self.ended else "",
                               self._reading(store)),
                 "%d shown" % len(self.rows), "sorted by %s %s" % (
                     self._title(self.sort_key), "↓" if self.reverse else "↑")]
        parts += ["filter /%s/" % self.filter_text] if self.filter_text else []
        # a part that does not fit goes on the next line whole
        title = Text(wrapped(parts, self.size.width - 2, " · "))
        note = self.store_note()
        if note is not None:  # the store's jobs are as last read: said, as the map's header does
            title.append("\nstore: %s" % note, style=RichVariables(self.app)["warning"])
        self.query_one("#title", Static).update(title)
        drawn = (tuple(c.key for c in columns), widths, self.sort_key, self.reverse,
                 tuple(self.rows))
        if drawn == self._drawn:
            return
        self._drawn = drawn
        self.query_one("#jobs-head", Static).update(Text(line(
            [c.title + ((" ↓" if self.reverse else " ↑") if c.key == self.sort_key else "")
             for c in columns], widths, marked=False), style="bold", no_wrap=True))
        self.table.show(self.rows, drawn[0], widths)

    def _title(self, key: str) -> str:
        return next(c.title for c in COLUMNS if c.key == key)

    # -- actions --

    def action_back(self) -> None:
        box = self.query_one(FilterBox)
        if box.display:
            box.close(clear=True)
            self.table.focus()
            return
        self.dismiss()

    def _reading(self, store: Optional[StoreView]) -> str:
        """While the ended jobs asked for are being read: those of the last read are listed
        meanwhile, said as of when (docs/decisions.md, "The jobs view's ended jobs")."""
        if not self.ended or store is None or store.ended is not None:
            return ""
        if self.ended_read_at is None:
            return " (reading them…)"
        return " (as read at %s; reading them again…)" % time.strftime(
            "%H:%M:%S", time.localtime(self.ended_read_at))

    def action_sort(self) -> None:
        keys = [c.key for c in COLUMNS]
        self.sort_key = keys[(keys.index(self.sort_key) + 1) % len(keys)]
        self.order()

    def what_now(self, binding_id: str) -> Optional[str]:
        """``a`` lists the active jobs only while the ended are shown, as the title says;
        ``esc`` clears the filter while it is typed."""
        if binding_id == "jobs.back" and self.query_one(FilterBox).display:
            return "clear filter"
        return "active only" if binding_id == "jobs.ended" and self.ended else None

    def action_ended(self) -> None:
        self.ended = not self.ended
        self.want_ended(self.ended)
        self.reload()
        self.show_keys()  # ("a active only" now, or "a ended too")

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        self.order()

    def action_filter(self) -> None:
        self.query_one(FilterBox).open(self.filter_text)

    def on_descendant_focus(self, _event: events.DescendantFocus) -> None:
        """The filter's box opened or closed: its keys listed (``esc`` clears it, the letters
        type), or the view's again."""
        self.show_keys()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self.order()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.query_one(FilterBox).close(clear=False)
        self.table.focus()

    def on_job_table_clicked(self, event: JobTable.Clicked) -> None:
        event.stop()
        self.action_open()

    def action_open(self) -> None:
        row = self.table.row
        if row is None:
            self.notify("no job to open: the view lists none%s" % (
                " (%s lists the ended too)" % key_named(self, "jobs.ended")
                if not self.ended else ""), severity="warning")
            return
        if row.job_id is None:
            # what it is as its reason says it: a job launched by hand, or a copy of a
            # store job that no active job holds (which is no launch by hand)
            self.notify("%s has no job screen: %s (fractui logs %s)" % (
                row.ref, row.reason, row.ref), severity="warning")
            return
        self.open_job(row.job_id, self.left_job)

    def left_job(self, job: Optional[Job]) -> None:
        """A job's screen opened from here left: a job that ended while it was open is
        listed as that screen last read it until the read of the ended jobs comes. It is in
        neither read before (the active no longer hold it, the ended were read before its
        end), and its row, the cursor's, was gone: the cursor on another job."""
        if job is None or job.state not in ENDED or any(j.id == job.id for j in self.ended_seen):
            return
        self.ended_seen = (job,) + self.ended_seen[:JOBS_LIMIT - 1]
        if self.is_current:  # (else its resume lists it, the cursor kept on it)
            self.reload()  # (after the resume, whose rows, without the job, took the cursor)
            self.table.cursor_on(str(job.id))

    def action_place(self) -> None:
        job = self._row_job(lambda state: state == PENDING,
                            "only a pending job is placed by hand")
        if job is not None:
            self.place(job)  # (it closes this view, and opens it again on esc)

    def action_move(self) -> None:
        job = self._row_job(movable, "only a placed or running job of the store is moved")
        if job is not None:
            self.move(job)  # (it closes this view, and opens it again on esc)

    def _row_job(self, fits: Callable[[str], bool], only: str) -> Optional[int]:
        """The cursor row's job number where its state ``fits`` a key's action; else None,
        said with ``only`` (what the action takes) after what the row is."""
        row = self.table.row
        if row is None or row.job_id is None or not fits(row.state):
            self.notify("%s: %s" % (self._as_it_is(row), only), severity="warning")
            return None
        return row.job_id

    def _as_it_is(self, row: Optional[JobRow]) -> str:
        """The cursor row's job in words, as the job screen and the verbs say it: a stop under
        way says what it leads to (a requeue, a move), never a bare "stopping"."""
        if row is None:
            return "no job is listed"
        store = self.store()
        job = store.job(row.job_id) if store is not None else None
        if job is not None and row.state == RUNNING:  # as drawn: its agent runs it, though
            job = dataclasses.replace(job, state=RUNNING)  # placed in the store yet (seen_state)
        return as_it_is(job) if job is not None else "%s is %s" % (row.ref, row.state)
