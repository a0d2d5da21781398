"""The jobs view (``J``, ``:jobs``): every job in one table, k9s's pods view and nvitop's
processes — sorted by any column (``o`` the next column, ``O`` the other way), filtered with
``/``, its columns those that fit the width; ``enter`` opens the job screen.

It reads what the fleet screen already holds (the store's last read, the hosts' statuses) once
a second: no I/O of its own.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

from fractui.fleet.host import HostStatus
from fractui.tui.actions import Action, bindings
from fractui.tui.jobrows import (COLUMNS, PADDING, JobRow, filter_rows, fit, job_rows, memory,
                                 sort_rows)
from fractui.tui.model import StoreView, compile_filter
from fractui.tui.queues import duration

REFRESH_S = 1.0


class JobTable(DataTable, inherit_bindings=False):
    """The table with its moves as ids (for ``[tui] keys`` and help), ``j``/``k`` among them,
    and without its own ``enter``: the screen's ``jobs.open`` opens the row."""

    BINDINGS = [
        Binding("up,k", "cursor_up", "previous job", id="jobs.up", show=False),
        Binding("down,j", "cursor_down", "next job", id="jobs.down", show=False),
        Binding("pageup", "page_up", "page up", id="jobs.page_up", show=False),
        Binding("pagedown,space", "page_down", "page down", id="jobs.page_down", show=False),
        Binding("home,g", "scroll_top", "first job", id="jobs.top", show=False),
        Binding("end,G", "scroll_bottom", "last job", id="jobs.bottom", show=False),
    ]


class JobsScreen(Screen[None], inherit_bindings=False):
    ACTIONS = (
        Action("jobs.back", "escape,q", "back", "back", "Back to the fleet"),
        Action("jobs.open", "enter", "open", "open", "The job screen of the job on the row"),
        Action("jobs.sort", "o", "sort", "sort", "Sort by the next column"),
        Action("jobs.reverse", "O", "reverse", "reverse", "Reverse the sort"),
        Action("jobs.filter", "slash", "filter", "filter",
               "Filter rows by a regex; !regex keeps those that do not match"),
    )
    BINDINGS = bindings(ACTIONS)
    DEFAULT_CSS = """
    JobsScreen #title { height: 1; background: $panel; padding: 0 1; }
    JobsScreen DataTable { height: 1fr; background: $surface; }
    JobsScreen #jobs-filter { dock: bottom; height: 3; display: none; }
    """

    def __init__(self, store: Callable[[], Optional[StoreView]],
                 statuses: Callable[[], Mapping[str, HostStatus]],
                 clock: Callable[[], float], open_job: Callable[[int], None]) -> None:
        super().__init__()
        self.store = store
        self.statuses = statuses
        self.clock = clock
        self.open_job = open_job
        self.sort_key = "age"
        self.reverse = True
        """Longest waiting (or running) first."""
        self.filter_text = ""
        self.rows: list[JobRow] = []
        """As shown: filtered and sorted."""
        self._drawn: tuple = ()

    def compose(self) -> ComposeResult:
        yield Static(id="title")
        yield JobTable(cursor_type="row", zebra_stripes=True, id="jobs")
        yield Input(placeholder="filter: regex, !regex for the rest; enter keeps, esc clears",
                    id="jobs-filter")

    @property
    def table(self) -> JobTable:
        return self.query_one(JobTable)

    def on_mount(self) -> None:
        self.table.focus()
        self.reload()
        self.set_interval(REFRESH_S, self.reload)

    def on_resize(self) -> None:
        self.call_after_refresh(self.draw)

    def reload(self) -> None:
        rows = job_rows(self.store(), self.statuses(), self.clock())
        pattern, inverse = compile_filter(self.filter_text)
        self.rows = sort_rows(filter_rows(rows, pattern, inverse), self.sort_key,
                              self.reverse)
        self.draw()

    def draw(self) -> None:
        width = self.table.size.width or self.size.width
        columns = fit(width - 2)
        cells = tuple(tuple(self._cell(c.key, r) for c in columns) for r in self.rows)
        drawn = (tuple(c.key for c in columns), width, self.sort_key, self.reverse, cells)
        title = "jobs · %d shown · sorted by %s %s%s · o next column · O reverse · / filter" % (
            len(self.rows), next(c.title for c in COLUMNS if c.key == self.sort_key),
            "↓" if self.reverse else "↑",
            " · filter /%s/" % self.filter_text if self.filter_text else "")
        self.query_one("#title", Static).update(title)
        if drawn == self._drawn:
            return
        self._drawn = drawn
        table = self.table
        at = table.cursor_row
        keep = self.rows[at].ref if 0 <= at < len(self.rows) and at < table.row_count else None
        table.clear(columns=True)
        used = sum(c.width + PADDING for c in columns if c.key != "reason")
        for c in columns:
            mark = (" ↓" if self.reverse else " ↑") if c.key == self.sort_key else ""
            w = max(c.width, width - 2 - used - PADDING) if c.key == "reason" else c.width
            table.add_column(Text(c.title + mark, style="bold"), width=w, key=c.key)
        for row, values in zip(self.rows, cells):
            table.add_row(*values, key=row.ref)
        if keep is not None:
            table.move_cursor(row=next((i for i, r in enumerate(self.rows) if r.ref == keep),
                                       0), animate=False)

    def _cell(self, key: str, row: JobRow) -> str:
        if key == "memory":
            return memory(row)
        if key == "util":
            return "—" if row.util is None else "%d%%" % row.util
        if key == "age":
            return duration(row.age_s)
        if key == "id":
            return row.ref
        return str(getattr(row, key))

    # -- actions --

    def action_back(self) -> None:
        box = self.query_one("#jobs-filter", Input)
        if box.display:
            box.value = ""
            box.display = False
            self.table.focus()
            return
        self.dismiss()

    def action_sort(self) -> None:
        keys = [c.key for c in COLUMNS]
        self.sort_key = keys[(keys.index(self.sort_key) + 1) % len(keys)]
        self.reload()

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        self.reload()

    def sort_by(self, key: str, reverse: bool) -> None:
        self.sort_key, self.reverse = key, reverse
        self.reload()

    def action_filter(self) -> None:
        box = self.query_one("#jobs-filter", Input)
        box.display = True
        box.value = self.filter_text
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self.reload()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.input.display = False
        self.table.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """A click on the row the cursor is on."""
        event.stop()
        self.action_open()

    def action_open(self) -> None:
        at = self.table.cursor_row
        if not 0 <= at < len(self.rows):
            return
        row = self.rows[at]
        if row.job_id is None:
            self.notify("%s was launched on its host, not through the store: it has no job "
                        "screen (fractui logs %s)" % (row.ref, row.ref), severity="warning")
            return
        self.open_job(row.job_id)
