"""The queue panel: each queue's portion, pending jobs and wait; each team's quota use."""

from __future__ import annotations

from typing import Optional, Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widget import Widget

from fractui.sched.quota import TeamUsage
from fractui.tui.model import QueueStat


def duration(seconds: Optional[float]) -> str:
    """ "42s", "3m05s", "2h14m": short, for a narrow column."""
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    if s < 60:
        return "%ds" % s
    if s < 3600:
        return "%dm%02ds" % (s // 60, s % 60)
    return "%dh%02dm" % (s // 3600, s % 3600 // 60)


SIDE_BY_SIDE = 70  # at least this wide, queues and teams sit side by side


class QueuePanel(Widget, can_focus=True):
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

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.queues: Sequence[QueueStat] = ()
        self.teams: Sequence[TeamUsage] = ()
        self.marked: Optional[str] = None
        """A queue a jump landed on, drawn reversed."""
        self.store_note: Optional[str] = None

    def show(self, queues: Sequence[QueueStat], teams: Sequence[TeamUsage],
             store_note: Optional[str] = None) -> None:
        if (queues, teams, store_note) != (self.queues, self.teams, self.store_note):
            self.queues, self.teams, self.store_note = queues, teams, store_note
            self.refresh(layout=True)

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
        t = Table(box=None, padding=(0, 1, 0, 0), expand=True, header_style="bold")
        t.add_column("Teams", no_wrap=True, ratio=1, overflow="ellipsis")
        t.add_column("used/quota", justify="right", no_wrap=True)
        t.add_column("borrow", justify="right", no_wrap=True)
        t.add_column("pend", justify="right", no_wrap=True)
        warning = self.app.theme_variables["warning"]
        for team in self.teams:
            over = team.used > team.quota + 1e-9
            t.add_row(team.name, Text("%.2f/%g" % (team.used, team.quota),
                                      style=warning if over else ""),
                      "%.2f" % team.borrowed if team.borrowed else "—", str(team.pending))
        note = Text(self.store_note or "", style=muted)
        if self.size.width >= SIDE_BY_SIDE:  # under the map on a narrow terminal
            grid = Table.grid(expand=True, padding=(0, 2, 0, 0))
            grid.add_column(ratio=1)
            grid.add_column(ratio=1)
            grid.add_row(q, t)
            return Group(grid, note)
        return Group(q, Text(""), t, note)
