"""The queue panel: each queue's portion, pending jobs and wait; each team's standing (quota use,
borrowing, recent usage, where wide enough its jobs on hosts and its place in the order a pass
takes up waiting jobs, and a line for each starved team with why); and the pending jobs
themselves, one a line with why it waits, to pick one: ``p`` places it (placement
mode), dragging it onto a GPU does too, ``enter`` opens it. The pending list shows the rows that
fit around the selected one, so the selection is always on screen. The mouse is captured only
while a drag that started on a job lasts, so selecting text with the mouse keeps working
everywhere else."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import events
from textual.message import Message
from textual.widget import Widget

from fractui.cells import cell_len, cut, padded
from fractui.sched.quota import TeamUsage
from fractui.sched.standing import (USAGE_EVERY_S, QueueStat, Reserved, bounds_of, near_bound,
                                    next_of, waiting)
from fractui.sched.starved import Starved
from fractui.store.model import Job
from fractui.tui.actions import Action, bind, bindings, key_named
from fractui.tui.themes import RichVariables
from fractui.words import duration


SIDE_BY_SIDE = 70  # at least this wide, queues and teams sit side by side
TEAMS_WIDE = 48
"""At least this wide, the teams table has ``run`` and ``next`` too: its other columns and
padding take 40 cells, and a team's name keeps the 8 it has beside the queues at 80 columns
(under the map, beside the queues, from 100 columns; beside the map where the panel is wide)."""
TEAMS_SHORT = 42
"""At least this wide (the panel beside the map from 120 to 169 columns is 43), ``run`` and
``next`` too, with two heads shortened (SHORT_HEADS, which ``?`` says) for a name's 8 cells."""
NAME_KEPT = 8
"""The cells a team's name keeps where ``waiting/bound`` is wider than ``pend``: past them the
count is shown alone (in the warning colour still)."""
PEND = 4
"""The teams table's ``pend`` column, by its place."""
SHORT_HEADS = {"used/quota": "used/q", "borrow": "borr"}
TEAM_WORDS = ("Teams: used/quota (used/q where narrow) the GPUs a team holds and its quota; "
              "borrow (borr) what it holds past its quota; recent its use over the "
              "[fairshare] window; pend its jobs waiting, run those on a host; next the order "
              "the scheduler takes up the teams' waiting jobs now (it ranks again after each "
              "placement), as `fractui teams` says them; but recent, and next and ! that "
              "weigh it, come from usage records read here at most once every %s: they "
              "can differ from `fractui teams`' for up to that long. A name marked ! is "
              "starved; pend as waiting/bound, in the warning colour, is a team near its "
              "max_waiting (at it, a member's submit or requeue is refused)."
              % duration(USAGE_EVERY_S))
"""What the teams table's columns are, for ``?`` on the fleet screen."""
PENDING_KEYS = (("queue.place", "place"), ("queue.job", "open"), ("", "drag to a GPU"))
"""What the pending list's title says may be done to a job, first what matters most: (binding
id, its key named as ``[tui] keys`` maps it, or none; what it does)."""
MIN_PENDING = 4  # pending rows shown at the least (80x24: the panel is sized for them)


class JobPicked(Message):
    """A pending job to place (``drag``: by the mouse, the ghost follows the pointer) or to
    open in the job screen."""

    def __init__(self, job: Job, place: bool, drag: bool = False) -> None:
        super().__init__()
        self.job = job
        self.place = place
        self.drag = drag


class Dragging(Message):
    """The pointer of a drag moved (``done``: was released) at screen cell (x, y)."""

    def __init__(self, x: int, y: int, done: bool) -> None:
        super().__init__()
        self.x = x
        self.y = y
        self.done = done


class QueuePanel(Widget, can_focus=True, inherit_bindings=False):
    ACTIONS = (
        Action("queue.down", "down,j", "select(1)", "next job", show=False),
        Action("queue.up", "up,k", "select(-1)", "previous job", show=False),
        Action("queue.place", "p", "place", "place",
               "Place the selected job by hand: a ghost over every slot it could take",
               dangerous=True),
        Action("queue.job", "enter", "open", "job",
               "The selected job: details, history and live logs"),
    )
    BINDINGS = bindings(ACTIONS)
    DEFAULT_CSS = """
    QueuePanel {
        background: $surface;
        border-left: vkey $panel;
        padding: 0 1;
        overflow-y: auto;
    }
    QueuePanel:focus {
        border-left: vkey $accent;
    }
    """

    def __init__(self, readonly: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        bind(self, self.ACTIONS, readonly)
        self.readonly = readonly
        self.pending: Sequence[Job] = ()
        self.selected: Optional[int] = None
        """The selected pending job's id."""
        self._rows: dict[int, Job] = {}
        """The panel's content line of each pending job, as last drawn."""
        self._dragging = False
        self._first = 0
        """The first pending job shown (the list shows those that fit from there)."""
        self.now = 0.0
        self.queues: Sequence[QueueStat] = ()
        self.teams: Sequence[TeamUsage] = ()
        self.starved: Sequence[Starved] = ()
        self.reserved: Sequence[Reserved] = ()
        """What teams hold for a waiting job (the lease holder's last pass's holds)."""
        self.unlike: Sequence[str] = ()
        """A line for each team whose config's terms are not the scheduler's."""
        self.order: Sequence[str] = ()
        """The teams with a job waiting, in the order a pass takes them up now."""
        self.bounds: Mapping[str, int] = {}
        """The teams' bounds on waiting jobs the store lists (its ``waiting_bounds``)."""
        self.marked: Optional[str] = None
        """A queue a jump landed on, drawn reversed."""
        self.store_note: Optional[str] = None

    def show(self, queues: Sequence[QueueStat], teams: Sequence[TeamUsage],
             store_note: Optional[str] = None, pending: Sequence[Job] = (),
             now: float = 0.0, starved: Sequence[Starved] = (),
             order: Sequence[str] = (), bounds: Mapping[str, int] = {},
             reserved: Sequence[Reserved] = (), unlike: Sequence[str] = ()) -> None:
        """``pending``: the jobs to list, their waits as of ``now``; ``starved``: the teams
        to say are starved; ``order``: the teams in the order a pass takes them up;
        ``bounds``: the store's bounds on waiting jobs (``pend`` near one: ``waiting/bound``);
        ``reserved``: the teams' holds for a waiting job, each said on a line of its own;
        ``unlike``: a line for each team the config gives other terms than the scheduler
        holds it to (``standing.as_kept``: ``teams`` are the scheduler's)."""
        self.now = now
        pending = tuple(sorted(pending, key=lambda j: (j.submitted_at, j.id)))
        if (queues, teams, store_note, pending, starved, order, bounds, reserved, unlike) != (
                self.queues, self.teams, self.store_note, self.pending, self.starved,
                self.order, self.bounds, self.reserved, self.unlike):
            self.queues, self.teams, self.store_note = queues, teams, store_note
            self.starved, self.order, self.bounds = starved, order, bounds
            self.reserved, self.unlike = reserved, unlike
            ids = [j.id for j in pending]
            if self.selected not in ids:
                old = [j.id for j in self.pending]
                at = old.index(self.selected) if self.selected in old else 0
                self.selected = ids[min(at, len(ids) - 1)] if ids else None
            self.pending = pending
            self.refresh(layout=True)

    @property
    def job(self) -> Optional[Job]:
        return next((j for j in self.pending if j.id == self.selected), None)

    def select_job(self, job_id: int) -> None:
        self.selected = job_id
        self.refresh()

    def action_select(self, by: int) -> None:
        ids = [j.id for j in self.pending]
        if ids:
            at = ids.index(self.selected) if self.selected in ids else -by
            self.selected = ids[max(0, min(len(ids) - 1, at + by))]
            self.refresh()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def action_place(self) -> None:
        """Only a job in sight: what ``p`` places is what the admin sees selected. With none,
        it says so rather than doing nothing."""
        job = self._picked("place")
        if job is None:
            return
        if not self._in_sight(job):
            self.notify("job #%d is scrolled out of sight: scroll the panel back to it (j/k) "
                        "to place it" % job.id, severity="warning")
            return
        self.post_message(JobPicked(job, place=True))

    def _picked(self, what: str) -> Optional[Job]:
        """The selected pending job, or None, said: there is none to ``what``."""
        if self.job is None:
            self.notify("no pending job to %s: the queues hold none now (%s lists every job)"
                        % (what, key_named(self, "fleet.jobs")), severity="warning")
        return self.job

    def _in_sight(self, job: Job) -> bool:
        """Whether ``job``'s line is drawn within the panel as it is scrolled now."""
        top = self.scroll_offset.y
        return any(j.id == job.id and top <= y < top + self.content_size.height
                   for y, j in self._rows.items())

    def action_open(self) -> None:
        job = self._picked("open")
        if job is not None:
            self.post_message(JobPicked(job, place=False))

    # -- the mouse: a drag starts only on a pending job's line --

    def _job_at(self, event: events.MouseEvent) -> Optional[Job]:
        offset = event.get_content_offset(self)
        return None if offset is None else self._rows.get(offset.y + self.scroll_offset.y)

    def on_mouse_down(self, event: events.MouseDown) -> None:
        job = self._job_at(event)
        if job is None or event.button != 1:
            return
        self.selected = job.id
        self.refresh()
        if not self.readonly:
            self._dragging = True
            self.capture_mouse()
            self.post_message(JobPicked(job, place=True, drag=True))
        event.stop()

    def on_mouse_move(self, event: events.MouseMove) -> None:
        if self._dragging:
            self.post_message(Dragging(event.screen_x, event.screen_y, done=False))

    def on_mouse_up(self, event: events.MouseUp) -> None:
        if self._dragging:
            self._dragging = False
            self.release_mouse()
            self.post_message(Dragging(event.screen_x, event.screen_y, done=True))
            event.stop()

    def mark(self, queue: Optional[str]) -> None:
        self.marked = queue
        self.refresh()

    def render(self) -> RenderableType:
        muted = "dim"
        if not self.queues and not self.teams:
            return Text(self.store_note or "no queues or teams configured", style=muted)
        q = Table(box=None, padding=(0, 1, 0, 0), expand=True, header_style="bold")
        q.add_column("Queues", no_wrap=True, ratio=1, overflow="ellipsis")
        q.add_column("portion", no_wrap=True)
        q.add_column("wait", justify="right", no_wrap=True)
        q.add_column("pend", justify="right", no_wrap=True)
        q.add_column("run", justify="right", no_wrap=True)
        for stat in self.queues:
            style = "reverse" if stat.name == self.marked else None
            q.add_row(stat.name, stat.portion, duration(stat.wait_s), str(stat.pending),
                      str(stat.running), style=style)
        side_by_side = self.size.width >= SIDE_BY_SIDE
        room = (self.size.width - 2) // 2 if side_by_side else self.size.width
        wide = room >= TEAMS_SHORT  # as `fractui teams` says them: RUNNING and NEXT
        t = Table(box=None, padding=(0, 1, 0, 0), expand=True, header_style="bold")
        t.add_column("Teams", no_wrap=True, ratio=1, overflow="ellipsis")
        for head in ("used/quota", "borrow", "recent", "pend"):
            t.add_column(SHORT_HEADS.get(head, head) if wide and room < TEAMS_WIDE else head,
                         justify="right", no_wrap=True)
        if wide:
            t.add_column("run", justify="right", no_wrap=True)
            t.add_column("next", justify="right", no_wrap=True)
        warning = RichVariables(self.app)["warning"]
        starved = {s.team for s in self.starved}
        bounds = bounds_of(self.teams, self.bounds)
        rows: list[list[Text]] = []
        for team in self.teams:
            over = team.used > team.quota + 1e-9
            name = Text(team.name)
            if team.name in starved:  # starved: marked, and said why where there is room
                name = Text.assemble((team.name, "bold " + warning), ("!", "bold " + warning))
            place = next_of(team.name, self.order)
            bound = bounds[team.name]  # the count alone, but near it (at it: submits refused)
            near = near_bound(team, bound)
            rows.append([name, Text("%.2f/%g" % (team.used, team.quota),
                                    style=warning if over else ""),
                         Text("%.2f" % team.borrowed if team.borrowed else "—"),
                         Text("%.2f" % team.recent),
                         Text(waiting(team, bound) if near else str(team.pending),
                              style=warning if near else ""),
                         *([Text(str(team.running)), Text("—" if place is None else str(place))]
                           if wide else [])])
        fits = _pend_room(t, rows, room)
        for row, team in zip(rows, self.teams):
            if row[PEND].cell_len > fits:  # the name keeps its cells: waiting/bound's count
                row[PEND] = Text(str(team.waiting if near_bound(team, bounds[team.name])
                                     else team.pending), style=row[PEND].style)
            t.add_row(*row)
        note = Text(self.store_note or "", style=muted)
        if side_by_side:  # under the map on a narrow terminal
            grid = Table.grid(expand=True, padding=(0, 2, 0, 0))
            grid.add_column(ratio=1)
            grid.add_column(ratio=1)
            grid.add_row(q, t)
            head: RenderableType = grid
        else:
            head = Group(q, Text(""), t)
        return self._with_pending(head, self._team_lines(warning), note)

    def _team_lines(self, warning: str) -> Optional[Text]:
        """A line for each team whose config's terms are not the scheduler's and for each
        starved team, in the warning colour, and one for each team's hold (narrow, the
        reason, or what the hold does, on a second), cut to the panel."""
        if not self.starved and not self.reserved and not self.unlike:
            return None
        lines = Text(no_wrap=True, overflow="ellipsis")
        narrow = self.size.width < SIDE_BY_SIDE
        said = [("", u, warning) for u in self.unlike]
        said += [("starved ", s.words("\n  " if narrow else " "), warning)
                 for s in self.starved]
        said += [("reserved ", r.words(self.now, "\n  " if narrow else " "), "")
                 for r in self.reserved]
        for head, words, style in said:
            lines.append("\n" if lines else "")
            lines.append(head, style=("bold " + style).strip())
            lines.append(words, style=style)
        return lines

    def _with_pending(self, head: RenderableType, starved: Optional[Text],
                      note: Text) -> RenderableType:
        """The pending jobs under the queues and teams (``head``), the starved and holding
        teams' lines and the store's ``note``, one a line, remembering each one's line. The
        panel is sized for MIN_PENDING rows: those teams' lines are shown only where they
        still fit (else a starved team's mark in the teams table says it, and their jobs'
        lines say why: a held job's and its team's later jobs'). Where
        not even MIN_PENDING rows fit under the head (a short terminal, many queues), the
        pending jobs come first: they are what the keys act on, and only rows in sight are
        drawn."""
        self._rows = {}
        if not self.pending:  # said, not left blank: an empty list, not one not drawn
            return Group(head, note, Text.assemble(("Pending 0", "bold"),
                                                   ("  no job waits", "dim")))
        width = max(1, self.content_size.width)
        console = self.app.console
        options = console.options.update_width(width)
        per = 2 if width < SIDE_BY_SIDE else 1  # lines a job takes
        least = min(MIN_PENDING, len(self.pending))

        def rows_under(used: int) -> int:
            return (self.content_size.height - used - 1) // per

        top: RenderableType = Group(head, note)
        y = len(console.render_lines(top, options, pad=False))
        if starved is not None:
            more = len(console.render_lines(starved, options, pad=False))
            if rows_under(y + more) >= least:
                top, y = Group(head, starved, note), y + more
        first = rows_under(y) < least
        y = 0 if first else y
        fit = max(1, rows_under(y))
        ids = [j.id for j in self.pending]
        at = ids.index(self.selected) if self.selected in ids else 0
        self._first = max(0, min(self._first, at, len(ids) - fit), at - fit + 1)
        shown = self.pending[self._first:self._first + fit]
        count = "%d" % len(ids) if len(shown) == len(ids) else "%d-%d of %d" % (
            self._first + 1, self._first + len(shown), len(ids))
        title = "Pending %s" % count
        lines = Text(title, style="bold", no_wrap=True, overflow="ellipsis")
        keys = ["%s %s" % (key_named(self, bid), what) if bid else what
                for bid, what in (PENDING_KEYS[1:2] if self.readonly else PENDING_KEYS)]
        while keys and cell_len("%s  %s" % (title, " · ".join(keys))) > width:
            keys = keys[:-1]  # each whole, or left out (the help lists them)
        if keys:
            lines.append("  " + " · ".join(keys), style="dim")
        two = per == 2
        name = max(6, min(12, width - 32))
        for k, job in enumerate(shown):
            for line in range(per):  # a press on its reason picks it too
                self._rows[y + 1 + per * k + line] = job
            row = "%s#%-4d %s %-8.8s %-7.7s %6s " % (
                "▸" if job.id == self.selected else " ", job.id,
                padded(cut(job.name, name), name), job.queue, job.team or "—",
                duration(job.waited(self.now)))
            style = "reverse" if job.id == self.selected and self.has_focus else (
                "bold" if job.id == self.selected else "")
            lines.append("\n")
            lines.append(row, style=style)
            if two:
                lines.append("\n  ")
            lines.append(job.reason or "", style="dim")
        return Group(lines, Text(""), top) if first else Group(top, lines)


def _pend_room(table: Table, rows: Sequence[Sequence[Text]], room: int) -> int:
    """The cells ``pend`` may take in a teams table ``room`` wide, each other column as wide
    as its head and cells (and its padding), a name keeping NAME_KEPT."""
    others = sum(max([len(str(column.header))] + [row[i].cell_len for row in rows]) + 1
                 for i, column in enumerate(table.columns) if i not in (0, PEND))
    return room - others - (NAME_KEPT + 1) - 1
