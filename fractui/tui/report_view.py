"""The report screen (``R``, ``:report``): what the fleet's jobs held and used over a range — the
last hour, 24 hours, 7 days, or all the store keeps — with the headline (the GPUs the same
jobs would have needed without sharing, against those they used), a table by team, queue,
user, host, GPU model or GPU, and plots over time (report_plots).

The numbers are ``fractui.usage.report``'s, the ones ``fractui report`` prints, and the
headline is its sentences (``fractui.usage.sentences``), the jobs waiting now included. The
store is read and the report computed in a thread worker, which answers with a message; the
screen reads again every 30 s while it is shown, and on ``r``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.color import Color
from textual.containers import Grid, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Static
from textual.worker import Worker
from textual_plotext import PlotextPlot

from fractui.cells import cell_len
from fractui.config import Config
from fractui.store.base import StoreError
from fractui.store.model import OUTCOMES
from fractui.tui import report_plots
from fractui.tui.actions import Action, KeyLine, Keyed, bindings
from fractui.tui.oneatatime import OneAtATime
from fractui.tui.parts import BetweenParts
from fractui.words import duration
from fractui.tui.source import Source
from fractui.tui.bars import owner_marks
from fractui.tui.themes import owner_colour, owners_marked, palette_for
from fractui.usage.report import BY, NONE, Group, Report, Series, build, series
from fractui.usage.sentences import (Coverage, Waiting, busy, busy_words, group_name, hours,
                                     kept_words, online_words, saving_words, unmeasured_words,
                                     unsampled_memory_words, unstarted_words)

REFRESH_S = 30.0
NARROW = 100  # below this width, or NARROW_HEIGHT rows, the plots stack in one column
NARROW_HEIGHT = 32


@dataclass(frozen=True)
class Span:
    """A range of the report: the last ``seconds`` (None: all the store keeps), cut into
    ``steps`` for the plots; ``since`` as ``fractui report --since`` says it (None: all)."""

    key: str
    name: str
    seconds: Optional[float]
    steps: int
    since: Optional[str]


SPANS = (Span("hour", "last hour", 3600.0, 60, "1h"),
         Span("day", "last 24 h", 86400.0, 48, "24h"),
         Span("week", "last 7 days", 7 * 86400.0, 56, "7d"),
         Span("all", "all kept", None, 60, None))


def shell_report(base: str, span: Span, by: str, start: float) -> str:
    """``base`` (``fractui report`` on this store) for ``span`` grouped ``by``: the report
    shown, as a shell gets it. All that is kept from ``start``'s minute (its first record),
    in local time as ``--since`` reads a date."""
    since = span.since or time.strftime("%Y-%m-%dT%H:%M", time.localtime(start))
    return "%s --since %s%s" % (base, since, "" if by == "team" else " --by %s" % by)


@dataclass(frozen=True)
class Computed:
    """One read's report: grouped as asked, by team (for the plots' notes), and over time;
    how much of its range the GPUs' time is kept for, and the jobs waiting to start now (the
    range ends now)."""

    report: Report
    teams: Report
    series: Series
    attempts: int
    coverage: Coverage
    waiting: Waiting


class ReportRead(Message):
    """A worker read the store and computed the report of ``span`` by ``by`` (or failed:
    ``error``, in words to say; no store: ``computed`` None and no error)."""

    def __init__(self, span: Span, by: str, computed: Optional[Computed],
                 error: Optional[str] = None) -> None:
        super().__init__()
        self.span = span
        self.by = by
        self.computed = computed
        self.error = error


def compute(source: Source, span: Span, by: str, now: float,
            bucket_s: float) -> Optional[Computed]:
    """The report of ``span`` ending ``now`` (worker thread): None without a store. All that
    is kept starts at the oldest record kept; ``bucket_s``: the config's [usage] bucket_s,
    which the GPUs' time is kept by."""
    read = source.read_usage(0.0 if span.seconds is None else now - span.seconds, now,
                             bucket_s, to_now=True)  # (until now: reaches_now's, begun)
    if read is None:
        return None
    records, gpu_time = read
    first = source.read_usage_begins()
    since = now - span.seconds if span.seconds is not None else (
        first if first is not None else now)
    forgot = source.read_usage_forgotten_before()
    report = build(records, gpu_time, since, now, by, now, source.read_ended(since),
                   bucket_s=bucket_s, kept_from=first, forgot=forgot)
    teams = report if by == "team" else build(records, gpu_time, since, now, "team", now,
                                              bucket_s=bucket_s, kept_from=first,
                                              forgot=forgot)
    return Computed(report, teams, series(records, report.start, now, span.steps, now),
                    len(records), Coverage.of(report, bucket_s, now),
                    Waiting.of(source.read_waiting(), by, now))


def util(g: Group) -> str:
    """What the group used of the GPU time measured; a dash where nothing was measured, or
    what was reads 0.00 GPU-h (``sentences.busy``)."""
    percent = busy(g)
    return "—" if percent is None else "%.0f%%" % percent


def outcomes(g: Group) -> str:
    return " ".join("%d %s" % (g.outcomes[o], o) for o in OUTCOMES if g.outcomes.get(o))


UNMEASURED = "no measure"
"""The column of the GPU-hours held without a measure, as the line under the headline names
it."""
MEMORY = "mem GiB-h"
"""The column of memory in use, as sampled, as the line under the headline names it."""


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    cell: Callable[[Group], str]


COLUMNS = (
    Column("held", "held GPU-h", lambda g: hours(g.held_h)),
    Column("used", "used GPU-h", lambda g: hours(g.used)),
    Column("util", "util", util),
    Column("unmeasured", UNMEASURED, lambda g: hours(g.unmeasured_h)),
    Column("memory", MEMORY, lambda g: hours(g.memory)),
    Column("wait", "wait p50", lambda g: duration(g.wait_median_s)),
    Column("p95", "p95", lambda g: duration(g.wait_p95_s)),
    Column("running", "running", lambda g: str(g.running)),
    Column("idle", "idle GPU-h", lambda g: hours(g.idle_h)),
    Column("outcomes", "ended", outcomes),
)
DROP = ("outcomes", "memory", "p95", "running", "unmeasured", "idle")
"""What goes first when the table does not fit its width."""
PAD = 2  # a column's cells are padded a space each side
NAME_CELLS = 24
"""The widest a group's name is shown (``sentences.group_name``: a GPU's keeps its index)."""


def table_rows(report: Report, width: int) -> tuple[list[str], list[list[str]]]:
    """The table's titles and rows (the groups, then the total) in the columns that fit
    ``width``; idle time only where the groups are GPUs (by host, model or GPU)."""
    groups = report.groups + [report.total]
    columns = [c for c in COLUMNS if c.key != "idle" or report.by in ("host", "model", "gpu")]
    cells = {c.key: [c.cell(g) for g in groups] for c in columns}
    names = [group_name(g.key, report.by, NAME_CELLS) for g in groups]

    def wide(title: str, values: Sequence[str]) -> int:
        return max([cell_len(title)] + [cell_len(v) for v in values]) + PAD

    name_width = min(NAME_CELLS, wide(report.by, names))
    for key in DROP:
        if name_width + sum(wide(c.title, cells[c.key]) for c in columns) <= width:
            break
        columns = [c for c in columns if c.key != key]
    titles = [report.by] + [c.title for c in columns]
    rows = [[name] + [cells[c.key][i] for c in columns] for i, name in enumerate(names)]
    return titles, rows


def headline(computed: Computed, shell: Optional[str] = None) -> Text:
    """The outcome, in ``fractui report``'s sentences (fractui.usage.sentences), one a line:
    what sharing saved, where the store's usage in the range begins, the GPUs' time and how
    much of it is kept, how busy the jobs kept what they held, what was held without a
    measure, the attempts whose memory was never sampled (its memory column leaves them
    out), the jobs that ended waiting and those waiting now; ``shell``: the command that
    reports the same store from a shell, where the user may not know it (the demo's)."""
    r, t = computed.report, computed.report.total
    text = Text(saving_words(r), style="bold")
    for line in (kept_words(r) + online_words(t) + computed.coverage.words(r) + busy_words(t) +
                 unmeasured_words(t, UNMEASURED) + unsampled_memory_words(t, MEMORY) +
                 unstarted_words(r) + computed.waiting.words()):
        text.append("\n" + line)
    if shell:
        text.append("\nfrom a shell: %s" % shell, style="dim")
    return text


def unmeasured_note(teams: Report) -> str:
    """Under the utilisation plot: whose GPU time it cannot show, and why."""
    gaps = ["%s %s" % (g.key, hours(g.unmeasured_h)) for g in teams.groups
            if g.unmeasured_h > 0]
    if not gaps:
        return "every GPU-hour held was measured"
    return "not measurable on MIG (or not sampled yet), GPU-h: " + ", ".join(gaps)


def empty_note(computed: Optional[Computed], span: Span) -> Optional[str]:
    """Why there is nothing to show, or None when there is."""
    if computed is None:
        return ("No store: usage is recorded in the store, by the scheduler, as jobs run. "
                "A config with [[queues]], or a [store] url, gives fractui its store.")
    if computed.attempts:
        return None
    r = computed.report
    online = (" The GPUs were online %s GPU-h, %s of it idle (nothing on them; a process "
              "outside fractui is something)." % (hours(r.total.online_h),
                                                  hours(r.total.idle_h or 0.0))
              if r.total.online_h else "")
    said = "".join(" %s%s." % (line[0].upper(), line[1:]) for line in (
        kept_words(r) + computed.coverage.words(r) + unstarted_words(r) + computed.waiting.words()))
    return ("No usage in the %s: no job held a slice in this range. Usage is recorded when the "
            "scheduler starts a job, and kept for the retention the config sets.%s%s"
            % (span.name if span.seconds is not None else "store", online, said))


class ReportBody(VerticalScroll, inherit_bindings=False):
    """Everything under the title; it scrolls where the screen is too small for it (80x24)."""

    BINDINGS = [
        Binding("up,k", "scroll_up", "scroll up", id="report.up", show=False),
        Binding("down,j", "scroll_down", "scroll down", id="report.down", show=False),
        Binding("pageup", "page_up", "page up", id="report.page_up", show=False),
        Binding("pagedown,space", "page_down", "page down", id="report.page_down",
                show=False),
        Binding("home", "scroll_home", "top", id="report.top", show=False),
        Binding("end", "scroll_end", "bottom", id="report.bottom", show=False),
    ]


class ReportScreen(Screen[None], Keyed, inherit_bindings=False):
    ACTIONS = (
        Action("report.back", "escape,q", "back", "back", "Back to the fleet"),
        Action("report.hour", "h", "span('hour')", "hour", "The last hour"),
        Action("report.day", "d", "span('day')", "24 h", "The last 24 hours"),
        Action("report.week", "w", "span('week')", "7 days", "The last 7 days"),
        Action("report.all", "a", "span('all')", "all", "All the usage the store keeps"),
        Action("report.group", "g", "group", "group",
               "Group the table by the next of team, queue, user, host, GPU model, GPU"),
        Action("report.refresh", "r", "reload", "refresh",
               "Read the store again now (else every 30 s)"),
    )
    BINDINGS = bindings(ACTIONS)
    DEFAULT_CSS = """
    ReportScreen #report-title { height: 1; background: $panel; padding: 0 1; }
    ReportScreen #report-headline { padding: 0 1; height: auto; }
    ReportScreen #report-table { padding: 0 1; height: auto; margin-top: 1; }
    ReportScreen #report-note { padding: 1 2; height: auto; }
    ReportScreen #report-plots { grid-size: 2; grid-gutter: 0 1; height: 1fr; min-height: 24; }
    ReportScreen.narrow #report-plots { layout: vertical; height: auto; min-height: 0; }
    ReportScreen .plot { height: 1fr; min-height: 12; }
    ReportScreen.narrow .plot { height: 13; }
    ReportScreen PlotextPlot { height: 1fr; }
    ReportScreen #report-unmeasured { height: auto; color: $text-muted; padding: 0 1; }
    """

    def __init__(self, source: Source, config: Config, clock: Callable[[], float]) -> None:
        super().__init__()
        self.source = source
        self.config = config
        self.clock = clock
        self.span = SPANS[1]
        self.by = "team"
        self._reads = OneAtATime(lambda: self.read(self.span, self.by),
                                 "reading the report", lambda said: self.post_message(
                                     ReportRead(self.span, self.by, None, said)))
        """One read at a time: one asked meanwhile is of the range and grouping then."""
        self.computed: Optional[Computed] = None
        """What is shown: the last read of the span and grouping shown."""
        self.computed_for: tuple[Optional[Span], str] = (None, "")
        self.note: Optional[str] = "reading the store…"
        self.titles: list[str] = []
        self.rows: list[list[str]] = []
        """The table as shown (the groups, then the total)."""

    def compose(self) -> ComposeResult:
        yield Static(id="report-title", markup=False)
        with ReportBody(id="report-body"):
            yield Static(id="report-headline", markup=False)
            yield Static(id="report-note", markup=False)
            yield Static(id="report-table", markup=False)
            with Grid(id="report-plots"):
                for name in ("held", "util", "waits", "saving"):
                    with Vertical(classes="plot"):
                        yield PlotextPlot(id="plot-" + name)
                        if name == "util":
                            yield Static(id="report-unmeasured", markup=False)
        yield KeyLine(("report.",), id="report-keys")

    def on_mount(self) -> None:
        self.query_one(ReportBody).focus()
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.draw_plots())
        self.reload()
        self.set_interval(REFRESH_S, self.reload)

    def on_screen_resume(self) -> None:
        """Opened again: read what happened while it was closed."""
        self.reload()

    def on_resize(self) -> None:
        self.set_class(self.size.width < NARROW or self.size.height < NARROW_HEIGHT, "narrow")
        self.draw()

    # -- data in --

    def action_reload(self) -> None:
        self.reload()

    def reload(self) -> None:
        """Reads the store again for the span and grouping shown (while the screen is)."""
        if not self.is_current:
            return
        self.draw_title(reading=True)
        self._reads.ask()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        self._reads.changed(event)

    @work(thread=True, exit_on_error=False, group="report")
    def read(self, span: Span, by: str) -> None:
        try:
            answer = ReportRead(span, by, compute(self.source, span, by,
                                                  self.source.read_now(self.clock),
                                                  self.config.usage.bucket_s))
        except StoreError as err:  # a locked or unreachable store: said, the last kept
            answer = ReportRead(span, by, None, "the store could not be read: %s" % err)
        self.post_message(answer)

    def on_report_read(self, message: ReportRead) -> None:
        if (message.span, message.by) != (self.span, self.by):
            return  # asked before the admin switched: a newer read is on its way
        if message.error is not None:  # the last report stays, if it is of this range
            said = message.error
            self.notify(said, title="report", severity="warning")
            if self.computed_for != (self.span, self.by):
                self.note = said
            self.draw()
            return
        self.computed, self.computed_for = message.computed, (message.span, message.by)
        self.note = empty_note(message.computed, message.span)
        self.draw()

    # -- drawing --

    def draw_title(self, reading: bool = False) -> None:
        """The range and the grouping shown; the keys are on the key line, as bound."""
        self.query_one("#report-title", Static).update(
            "report · %s · by %s%s" % (self.span.name, self.by,
                                       " · reading…" if reading else ""))

    def draw(self) -> None:
        self.draw_title()
        note = self.query_one("#report-note", Static)
        note.display = self.note is not None
        note.update(self.note or "")
        shown = self.note is None and self.computed is not None
        for part in ("#report-headline", "#report-table", "#report-plots"):
            self.query_one(part).display = shown
        if not shown or self.computed is None:
            return
        span, by = self.computed_for
        base = self.source.report_command
        self.query_one("#report-headline", Static).update(headline(
            self.computed, shell_report(base, span, by, self.computed.report.start)
            if base and span is not None else None))
        self.titles, self.rows = table_rows(self.computed.report, self.size.width - 2)
        table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold",
                      pad_edge=False)
        for i, title in enumerate(self.titles):
            table.add_column(title, justify="left" if i == 0 else "right", no_wrap=True,
                             max_width=NAME_CELLS if i == 0 else None)
        for i, row in enumerate(self.rows):  # the total last, in bold
            table.add_row(*row, style="bold" if i == len(self.rows) - 1 else None)
        self.query_one("#report-table", Static).update(table)
        self.query_one("#report-unmeasured", Static).update(  # ("nlp" never over "11.42")
            BetweenParts(Text(unmeasured_note(self.computed.teams)), sep=", "))
        self.draw_plots()

    def marks(self) -> dict[str, str]:
        """Each team's mark, its lines drawn with it, where the map marks owners
        (themes.owners_marked): past the theme's colours a ninth team's line took the
        first's colour, and under NO_COLOR every line is a grey; none else."""
        order = tuple(t.name for t in self.config.teams)
        return owner_marks(order) if owners_marked(palette_for(self.app.current_theme), order,
                                                   self.app.no_color) else {}

    def colours(self, names: Sequence[str]) -> dict[str, tuple[int, int, int]]:
        """Each team's colour on the slice map, in this theme (a job with no team: the
        colour of what is not a team's)."""
        slices = palette_for(self.app.current_theme)
        order = [t.name for t in self.config.teams]
        return {n: Color.parse(slices.other if n == NONE else owner_colour(slices, order, n)
                               ).rgb for n in names}

    def themed(self, variable: str) -> tuple[int, int, int]:
        return Color.parse(self.app.theme_variables[variable]).rgb

    def draw_plots(self) -> None:
        computed = self.computed
        if computed is None or self.note is not None:
            return
        s = computed.series
        span_s = max(60.0, computed.report.until - computed.report.start)
        colours = self.colours(list(s.held))
        plots = {name: self.query_one("#plot-" + name, PlotextPlot)
                 for name in ("held", "util", "waits", "saving")}
        marks = self.marks()
        report_plots.allocation(plots["held"].plt, s, span_s, colours, marks)
        report_plots.utilisation(plots["util"].plt, s, span_s, colours, marks)
        report_plots.waits(plots["waits"].plt, s, span_s, self.themed("accent"))
        report_plots.saving(plots["saving"].plt, s, span_s, self.themed("error"),
                            self.themed("success"))
        for plot in plots.values():
            plot.refresh()

    # -- actions --

    def action_back(self) -> None:
        self.dismiss()

    def action_span(self, key: str) -> None:
        self.span = next(s for s in SPANS if s.key == key)
        self.reload()

    def action_group(self) -> None:
        self.by = BY[(BY.index(self.by) + 1) % len(BY)]
        self.reload()
