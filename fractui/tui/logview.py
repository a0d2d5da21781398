"""A job's output, drawn as Toolong draws logs: a ScrollView whose ``render_line`` draws only
the lines on screen, with the search's matches highlighted and a cursor line to copy.

New output arrives in chunks that may end mid-line; the unfinished tail is kept apart and shown
as the last line until its newline comes. While following, the view stays at the end.
"""

from __future__ import annotations

from typing import Optional

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from fractui.fleet import answers
from fractui.terminal import as_shown_line
from fractui.tui.actions import Action, Modal, bindings, key_named
from fractui.tui.scrolling import scroll_now
from fractui.tui.themes import RichVariables
from fractui.tui.typed import SEARCH_BUDGET_S, Clocked, Typed

MAX_LINES = 100_000  # older lines are dropped past this: the agent keeps the whole log


class LogView(ScrollView, Modal, can_focus=True, inherit_bindings=False):
    ACTIONS = (
        Action("log.down", "down,j", "cursor(1)", "down", show=False),
        Action("log.up", "up,k", "cursor(-1)", "up", show=False),
        Action("log.page_down", "pagedown,space", "page(1)", "page down", show=False),
        Action("log.page_up", "pageup", "page(-1)", "page up", show=False),
        Action("log.top", "home,g", "edge(False)", "top", show=False),
        Action("log.bottom", "end,G", "edge(True)", "bottom, following", show=False),
        Action("log.next", "n", "find(1)", "next"),
        Action("log.previous", "N", "find(-1)", "previous"),
        Action("log.follow", "f", "follow", "follow"),
        Action("log.copy", "y", "copy", "copy",
               "Copy the cursor's line to the clipboard"),
    )
    BINDINGS: list[Binding] = bindings(ACTIONS)
    DEFAULT_CSS = """
    LogView {
        background: $surface;
        scrollbar-size-vertical: 1;
    }
    """

    class Moved(Message):
        """The cursor, the following or the search changed: the status line says so."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.lines: list[str] = []
        self.tail = ""
        """Output after the last newline, its first ``answers.LINE_MOST`` characters."""
        self.tail_more = 0
        """How many characters of that unfinished line are left out past them."""
        self.cursor = -1
        self.following = True
        self.pattern: Optional[Typed] = None
        self.drawing: Optional[Clocked] = None
        """The search's calls while a frame's lines are drawn (``render_lines``)."""
        self.ended = False

    @property
    def count(self) -> int:
        return len(self.lines) + (1 if self.tail else 0)

    def line(self, i: int) -> str:
        """Line ``i`` as shown, searched and copied: as a terminal would leave it drawn, with
        no escape sequence or other control character in it (fractui.terminal)."""
        return as_shown_line(self.lines[i] if i < len(self.lines) else answers.cut(
            self.tail, answers.LINE_MOST, self.tail_more))

    def clear(self) -> None:
        """No output yet (another job's, or the same job's asked anew)."""
        self.lines, self.tail, self.tail_more, self.ended = [], "", 0, False

    def write(self, data: str) -> None:
        """New output (any chunk of it). Each line is kept to the most its agent pushes at
        once (``answers.LINE_MOST``), cut past it with the mark, as a push is; so is the
        unfinished last one (else a job that writes no newline grew it, and the time each
        chunk takes, without end)."""
        most = answers.LINE_MOST
        *ended, last = (self.tail + data).split("\n")
        more = self.tail_more  # (left out of the first part)
        self.lines += [answers.cut(line, most, 0 if n else more) for n, line in enumerate(ended)]
        more = 0 if ended else more
        self.tail, self.tail_more = last[:most], more + max(0, len(last) - most)
        if len(self.lines) > MAX_LINES:
            drop = len(self.lines) - MAX_LINES
            del self.lines[:drop]
            self.cursor = max(-1, self.cursor - drop)
        self.virtual_size = Size(self.size.width, self.count)
        if self.following:
            self.cursor = self.count - 1
            # once laid out: a view its lines fit till now has no scrollbar yet, and Textual
            # ignores a scroll there (it stayed at the top till more output came)
            self.call_after_refresh(self._keep_end)
        self.refresh()

    def _keep_end(self) -> None:
        """The newest line in sight, unless a key stopped the following meanwhile."""
        if self.following:
            self.scroll_end(animate=False, immediate=True)

    def on_mouse_scroll_up(self, _event: events.MouseScrollUp) -> None:
        """The wheel turned up to read older output stops the following, as a key up does:
        else the next line the job wrote took the reader back down to the end."""
        if self.following and self.max_scroll_y > 0:
            self.following = False
            self.post_message(self.Moved())

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        """Scrolled (the wheel, the scrollbar) while not following: the cursor kept on a line
        in sight, the nearest to where it was, so ``y`` copies and ``j``/``k`` go on from what
        the reader is looking at (it stayed on the newest line, out of sight)."""
        super().watch_scroll_y(old_value, new_value)
        self._cursor_in_sight(round(new_value))

    def _cursor_in_sight(self, top: int) -> None:
        """While not following, the cursor moved onto the line in sight nearest to it, the
        view's top at ``top``: a scroll or a resize that leaves it out of sight."""
        if self.following or not 0 <= self.cursor < self.count:
            return
        height = self.scrollable_content_region.height
        if height and not top <= self.cursor < top + height:
            self.cursor = max(top, min(self.cursor, top + height - 1, self.count - 1))
            self.refresh()
            self.post_message(self.Moved())

    def on_resize(self) -> None:
        """Its height changes as the screen's parts above it fill in (the job's details, its
        GPU's health), and with the terminal's: a view that follows keeps the newest line in
        sight; one that does not keeps its top, and its cursor on a line in sight (made
        shorter, it was left below it, and no scroll moved to bring it back)."""
        self.virtual_size = Size(self.size.width, self.count)
        if self.following:
            self.scroll_end(animate=False, immediate=True)
        else:
            self._cursor_in_sight(self.scroll_offset.y)

    def render_line(self, y: int) -> Strip:
        index = y + self.scroll_offset.y
        width = self.scrollable_content_region.width
        base = self.rich_style
        if not 0 <= index < self.count:
            return Strip.blank(width, base)
        text = self.line(index).expandtabs(8)
        style = base + Style(reverse=True) if index == self.cursor else base
        segments: list[Segment] = []
        at = 0
        if self.pattern is not None:
            mark = base + Style(bgcolor=RichVariables(self.app)["warning"], color="black")
            spans = (self.drawing.spans(text) if self.drawing is not None else
                     self.pattern.run(lambda p: p.spans(text), self._warn))
            for start, end in spans:
                segments += [Segment(text[at:start], style), Segment(text[start:end], mark)]
                at = end
        segments.append(Segment(text[at:], style))
        return Strip(segments).crop_extend(0, width, style)

    def render_lines(self, crop: Region) -> list[Strip]:
        """The lines of a frame, their matches highlighted under one budget for them all: a
        budget for each line alone would let a frame spend it as many times as it has lines."""
        if self.pattern is None:
            return super().render_lines(crop)

        def drawn(pattern: Clocked) -> list[Strip]:
            self.drawing = pattern
            try:
                return super(LogView, self).render_lines(crop)
            finally:
                self.drawing = None

        return self.pattern.run(drawn, self._warn)

    def _goto(self, index: int) -> None:
        self.cursor = max(0, min(self.count - 1, index))
        top, height = self.scroll_offset.y, self.scrollable_content_region.height
        if not top <= self.cursor < top + height:
            scroll_now(self, max(0, self.cursor - height // 2))
        self.refresh()
        self.post_message(self.Moved())

    def action_cursor(self, by: int) -> None:
        self.following = False
        self._goto((self.cursor if self.cursor >= 0 else self.count) + by)

    def action_page(self, by: int) -> None:
        self.action_cursor(by * max(1, self.scrollable_content_region.height - 1))

    def action_edge(self, end: bool) -> None:
        self.following = end
        self._goto(self.count - 1 if end else 0)

    def what_now(self, binding_id: str) -> Optional[str]:
        """``f`` stops following while the view follows (it read "follow" then too)."""
        if binding_id == "log.follow" and self.following:
            return "stop following"
        return None

    def action_follow(self) -> None:
        self.following = not self.following
        if self.following:
            self._goto(self.count - 1)
        self.post_message(self.Moved())

    def search(self, text: str) -> bool:
        """Highlight ``text`` (a case-insensitive regex, or literal if it is not one or too
        slow: ``Typed``) and go to its first match from the cursor on; False if nothing
        matches."""
        self.pattern = Typed.again(self.pattern, text) if text else None
        self.refresh()
        return self.pattern is None or self.find(1, include_here=True)

    def find(self, by: int, include_here: bool = False) -> bool:
        """The cursor to the next (``by`` 1) or previous (-1) line that matches, wrapping."""
        if self.pattern is None or not self.count:
            return False
        n = self.count
        start = self.cursor if self.cursor >= 0 else (0 if by > 0 else n - 1)

        def first(pattern: Clocked) -> Optional[int]:
            return next((i for i in ((start + by * step) % n
                                     for step in range(0 if include_here else 1, n + 1))
                         if pattern.search(self.line(i))), None)

        found = self.pattern.run(first, self._warn, SEARCH_BUDGET_S)
        if found is None:
            return False
        self.following = False
        self._goto(found)
        return True

    def _warn(self, text: str) -> None:
        self.notify(text, severity="warning")

    def action_find(self, by: int) -> None:
        if self.pattern is None:
            self.notify("nothing searched yet: %s searches the output" % key_named(
                self, "job.search"), severity="warning")
        elif not self.find(by):
            self.notify("no line matches /%s/" % self.pattern.text, severity="warning")

    def action_copy(self) -> None:
        """The cursor's line copied; with none, ``y`` says why (it did nothing)."""
        if not 0 <= self.cursor < self.count:
            self.notify("no line to copy: %s" % ("the output is empty" if not self.count else
                                                 "j/k put the cursor on one"),
                        severity="warning")
            return
        self.app.copy_to_clipboard(self.line(self.cursor))
        self.notify("copied line %d" % (self.cursor + 1))
