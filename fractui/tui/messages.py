"""The recent notices (``e``, ``:messages``): a notice lasts a few seconds, and the outcome of a
MIG change, a refusal or a drain said while the admin looked away was gone for good. Every
notice goes through ``FractuiApp.notify``, which keeps the last ``KEPT`` here; this screen lists
them newest first, with the time and severity of each."""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from fractui.tui.actions import Action, KeyLine, Keyed, bindings
from fractui.tui.themes import RichVariables
from fractui.words import count

KEPT = 100
"""The notices kept: a day's refusals and outcomes, never a growing list."""


@dataclass(frozen=True)
class Notice:
    at: float
    severity: str
    title: str
    message: str


class Notices:
    """The last ``KEPT`` notices, oldest first; ``changed`` is called as each is added, on
    the thread that said it (the screen listing them, if open, lists it too)."""

    def __init__(self, kept: int = KEPT) -> None:
        self.kept: deque[Notice] = deque(maxlen=kept)
        self.changed: Callable[[], None] = lambda: None

    def add(self, notice: Notice) -> None:
        self.kept.append(notice)
        self.changed()

    def newest_first(self) -> list[Notice]:
        return list(reversed(self.kept))


def title_shown(title: str, message: str) -> str:
    """``title``, or "" where the first words of ``message`` (up to the first ": ") hold it
    already: a notice's message is written to be read alone, and most name what they are of
    ("l4-1 drained: …", "#18 placed by hand: …", "screenshot saved to …"), which the title
    before them repeated ("drained: l4-1 drained: …"). The messages' rows and the toasts
    (``FractuiApp.notify``) both show a title only where this keeps it."""
    head = message.split(": ", 1)[0]
    if not title or re.search(r"(?<!\w)%s(?!\w)" % re.escape(title), head, re.IGNORECASE):
        return ""
    return title


def said(n: Notice) -> str:
    """What ``n`` said, its title before it where ``title_shown`` keeps it."""
    title = title_shown(n.title, n.message)
    return "%s: %s" % (title, n.message) if title else n.message


def table(notices: Iterable[Notice], colours: dict[str, str]) -> Table:
    """The notices, one a row: time, severity (in its colour), what was said (``said``)."""
    t = Table(box=None, padding=(0, 2, 0, 0), header_style="bold", expand=True)
    t.add_column("time", no_wrap=True)
    t.add_column("severity", no_wrap=True)
    t.add_column("message", overflow="fold", ratio=1)
    for n in notices:
        t.add_row(time.strftime("%H:%M:%S", time.localtime(n.at)),
                  Text(n.severity, style=colours.get(n.severity, "")),
                  Text(said(n)))
    return t


class MessagesScreen(Screen[None], Keyed, inherit_bindings=False):
    ACTIONS = (
        Action("messages.back", "escape,q", "back", "back", "Back to the screen before"),
    )
    BINDINGS = bindings(ACTIONS)
    DEFAULT_CSS = """
    MessagesScreen #messages-body { background: $surface; padding: 0 1; }
    """

    def __init__(self, notices: Notices) -> None:
        super().__init__()
        self.notices = notices

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="messages-body"):
            yield Static(id="messages", markup=False)
        yield KeyLine(("messages.",), id="messages-keys")

    def on_mount(self) -> None:
        """Made once and kept (as the jobs view is): a notice said while it is open is
        listed at once, drawn on the app's thread: ``notify`` may be called from a worker's
        (Textual's is thread-safe), and once the app has ended there is nothing to draw on
        (a message posted to a closed screen is dropped)."""
        self.query_one("#messages-body").focus()
        self.notices.changed = lambda: self.call_later(self.show)
        self.show()

    def show(self) -> None:
        kept = self.notices.newest_first()
        v = RichVariables(self.app)
        head = Text("the last %s, newest first (%d kept at most)" % (
            count(len(kept), "notice"), self.notices.kept.maxlen or 0) if kept
            else "no notice yet",
            style="bold")
        self.query_one("#messages", Static).update(Group(head, Text(""), table(kept, {
            "information": v["primary"], "warning": v["warning"], "error": v["error"]}))
            if kept else head)

    def action_back(self) -> None:
        self.dismiss()
