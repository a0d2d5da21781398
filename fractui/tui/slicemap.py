"""The slice map: every host and GPU of the fleet, one line each, drawn as Toolong draws logs.

A ScrollView whose ``render_line`` draws only the lines on screen. Finished lines are cached in
an LRU keyed by the line's value, the width, the paint and the cursor, so a fleet of 1,000
GPUs costs what its visible rows cost, and an update redraws only the rows that changed.
"""

from __future__ import annotations

from typing import Optional

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from fractui.cells import padded
from fractui.tui.actions import Action, bind, bindings, key_named
from fractui.tui.bars import Mark, Paint, bar_at, render
from fractui.tui.cursor import Cursor, Moves, Slice, cursor_at
from fractui.tui.model import GpuLine, HostLine, Line
from fractui.tui.scrolling import scroll_now


class SliceChosen(Message):
    """``enter`` on a slice (``detail``: ``d``, the GPU's detail whatever the slice holds)."""

    def __init__(self, gpu: GpuLine, part: Slice, detail: bool = False) -> None:
        super().__init__()
        self.gpu = gpu
        self.part = part
        self.detail = detail


class ServiceAsked(Message):
    """``C``/``D``/``U``: the cursor's host cordoned, drained (``mode``) or back (None)."""

    def __init__(self, host: str, mode: Optional[str]) -> None:
        super().__init__()
        self.host = host
        self.mode = mode


class MoveAsked(Message):
    """``m``: the job on the slice under the cursor moved (placement mode, as the jobs view's
    ``m``)."""

    def __init__(self, gpu: GpuLine, part: Slice) -> None:
        super().__init__()
        self.gpu = gpu
        self.part = part


class SliceMap(ScrollView, can_focus=True, inherit_bindings=False):
    ACTIONS = (
        Action("map.left", "left,h", "across(-1)", "previous slice", show=False),
        Action("map.right", "right,l", "across(1)", "next slice", show=False),
        Action("map.up", "up,k", "down(-1)", "GPU above", show=False),
        Action("map.down", "down,j", "down(1)", "GPU below", show=False),
        Action("map.page_up", "pageup", "page(-1)", "page up", show=False),
        Action("map.page_down", "pagedown,space", "page(1)", "page down", show=False),
        Action("map.top", "home,g", "first", "first GPU", show=False),
        Action("map.bottom", "end,G", "last", "last GPU", show=False),
        Action("map.open", "enter", "choose(False)", "open",
               "The job on the slice under the cursor; on a free slice, its GPU"),
        Action("map.gpu", "d", "choose(True)", "GPU",
               "The GPU under the cursor: instances, processes, health, its host's error"),
        Action("map.move", "m", "move", "move job",
               "Move the job under the cursor (on a free slice, the GPU's one job) to a slot "
               "you choose", dangerous=True, show=False),
        Action("map.cordon", "C", "service('cordon')", "cordon host",
               "Cordon the cursor's host: no new work lands on it", dangerous=True, show=False),
        Action("map.drain", "D", "service('drain')", "drain host",
               "Drain the cursor's host: no new work, and say when it is empty",
               dangerous=True, show=False),
        Action("map.uncordon", "U", "service('')", "uncordon host",
               "Put the cursor's host and its GPUs back in service", dangerous=True,
               show=False),
    )
    BINDINGS = bindings(ACTIONS)
    DEFAULT_CSS = """
    SliceMap {
        background: $surface;
        scrollbar-size-vertical: 1;
    }
    """

    def __init__(self, readonly: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        bind(self, self.ACTIONS, readonly)
        self.lines: list[Line] = []
        self.paint: Optional[Paint] = None
        self.cursor: Optional[Cursor] = None
        """The slice the cursor is on (None until there is a GPU to put it on)."""
        self.placed = False
        """Whether a key, a click or a jump has put the cursor somewhere: until then it rests
        on the first GPU drawn, whichever host answered first."""
        self.moves = Moves([])
        self.empty = ""
        self.hidden = ""
        self._host_of: list[int] = []
        """Per line, the line of its host's header (drawn on top while it is scrolled off)."""
        self._cache: LRUCache[tuple, Strip] = LRUCache(4096)

    @property
    def line_width(self) -> int:
        return self.scrollable_content_region.width

    @property
    def cursor_line(self) -> int:
        """The line the cursor is on, or -1."""
        place = self.moves.place(self.cursor)
        return -1 if place is None else place.line

    def chosen(self) -> Optional[tuple[GpuLine, Slice]]:
        """The GPU and the slice under the cursor."""
        place, part = self.moves.place(self.cursor), self.moves.slice(self.cursor)
        return None if place is None or part is None else (place.gpu, part)

    def show(self, lines: list[Line], empty: str = "", hidden: str = "") -> None:
        """New lines; only the rows whose line changed are redrawn. ``empty``: what the first
        row says when there is no line (a filter that matches nothing), not a blank map;
        ``hidden``: why none of them is a GPU where others have reported one (a filter that
        shows only hosts without one), for the keys of the slice under the cursor."""
        self.hidden = hidden
        if empty != self.empty:
            self.empty = empty
            self.refresh()
        was = self.cursor_line
        seen = was >= 0 and self.in_sight(was)
        old, self.lines = self.lines, lines
        self.moves = Moves(lines)
        host = 0
        self._host_of = []
        for i, line in enumerate(lines):
            host = i if isinstance(line, HostLine) else host
            self._host_of.append(host)
        self._set_cursor(self.moves.on(self.cursor) if self.placed else self.moves.first(),
                         reveal=False, placed=self.placed)
        self._redraw(old)
        now = self.cursor_line
        if seen and now not in (was, -1):  # (its GPU drawn elsewhere: another order, a filter)
            self.reveal(now)

    def _redraw(self, old: list[Line]) -> None:
        """The rows whose line is not as in ``old``, drawn again."""
        lines = self.lines
        if len(old) != len(lines):
            self.virtual_size = Size(self.line_width, len(lines))
            self.refresh()
            return
        for y, (a, b) in enumerate(zip(old, lines)):
            if a != b:
                self.refresh_line(y)
        if self.scroll_offset.y > 0:
            self.refresh_line(self.scroll_offset.y)  # the sticky header may be another host's

    def set_paint(self, paint: Paint) -> None:
        self.paint = paint
        self.refresh()

    def _set_cursor(self, cursor: Optional[Cursor], reveal: bool = True,
                    placed: bool = True) -> None:
        old_line = self.cursor_line
        self.cursor = cursor
        self.placed = placed
        new_line = self.cursor_line
        for y in {old_line, new_line}:
            if y >= 0:
                self.refresh_line(y)
        if reveal and new_line >= 0:
            self.reveal(new_line)

    def move_to(self, cursor: Optional[Cursor]) -> None:
        """The cursor to ``cursor``, scrolled into sight."""
        self._set_cursor(self.moves.on(cursor) if cursor is not None else None)

    # -- keys: the cursor moves by slice across, by GPU up and down --

    def action_across(self, by: int) -> None:
        self._set_cursor(self.moves.across(self.cursor, by))

    def action_down(self, by: int) -> None:
        self._set_cursor(self.moves.down(self.cursor, by))

    def action_page(self, by: int) -> None:
        self._set_cursor(self.moves.by_lines(self.cursor, by * max(1, self.size.height - 1)))

    def action_first(self) -> None:
        self._set_cursor(self.moves.first())
        scroll_now(self, 0)

    def action_last(self) -> None:
        self._set_cursor(self.moves.last())
        scroll_now(self, self.max_scroll_y)

    def action_choose(self, detail: bool) -> None:
        hit = self.chosen()
        if hit is not None:
            self.post_message(SliceChosen(*hit, detail=detail))
        else:
            self._none_under("GPU", "show" if detail else "open")

    def action_move(self) -> None:
        hit = self.chosen()
        if hit is not None:
            self.post_message(MoveAsked(*hit))
        else:
            self._none_under("job", "move")

    def action_service(self, mode: str) -> None:
        hit = self.chosen()
        if hit is not None:
            self.post_message(ServiceAsked(hit[0].host, mode or None))
        else:
            verb = mode or "uncordon"
            self._none_under("host", verb, "; the palette (%s) names one: %s host NAME" % (
                key_named(self, "app.command"), verb))

    def _none_under(self, what: str, verb: str, way: str = "") -> None:
        """A key of the slice under the cursor with no GPU drawn (no host has reported one,
        or the filter hides them all), so no cursor: said, as the header offers the key."""
        self.notify("no %s under the cursor to %s: %s%s" % (
            what, verb, self.empty or self.hidden or "no host has reported a GPU yet", way),
            severity="warning")

    # -- scrolling --

    def jump(self, index: int) -> None:
        """Put line ``index`` at the top of the view (a palette jump)."""
        scroll_now(self, index)

    def in_sight(self, index: int) -> bool:
        """Whether line ``index`` is in the view, not under the sticky header."""
        top, height = self.scroll_offset.y, self.size.height
        under = index == top > 0 and not isinstance(self.lines[index], HostLine)
        return top <= index < top + height and not under

    def reveal(self, index: int) -> None:
        """Scroll line ``index`` into sight if it is out of it or under the sticky header."""
        if self.in_sight(index):
            return
        top, height = self.scroll_offset.y, self.size.height
        if index <= top:
            scroll_now(self, max(0, index - 1))
        else:
            scroll_now(self, max(0, index - height + 1))

    # -- the mouse --

    def line_at(self, y: int) -> Optional[Line]:
        """The line drawn on row ``y`` of the view: on the top row, while a host's GPUs are
        scrolled past its header, that header."""
        index = y + self.scroll_offset.y
        if not 0 <= index < len(self.lines):
            return None
        if y == 0 and index > 0:
            return self.lines[self._host_of[index]]
        return self.lines[index]

    def gpu_at(self, x: int, y: int) -> Optional[tuple[str, int, float, int]]:
        """(host, GPU index, place along its bar 0-1, memory slices) at content cell (x, y)."""
        line = self.line_at(y)
        hit = None if line is None else bar_at(line, self.line_width, x)
        if hit is None:
            return None
        gpu, along = hit
        return gpu.host, gpu.index, along, gpu.slices

    def on_click(self, event: events.Click) -> None:
        """A click puts the cursor on the slice clicked (``enter`` then opens it)."""
        offset = event.get_content_offset(self)
        line = None if offset is None else self.line_at(offset.y)
        hit = None if line is None or offset is None else bar_at(line, self.line_width,
                                                                 offset.x)
        if hit is not None:
            self._set_cursor(cursor_at(*hit), reveal=False)

    def on_resize(self) -> None:
        self.virtual_size = Size(self.line_width, len(self.lines))

    def render_line(self, y: int) -> Strip:
        width = self.line_width
        line = self.line_at(y)
        if self.paint is not None and not self.lines and y == 0 and self.empty:
            return Strip([Segment(padded(self.empty, width),
                                  Style(color=self.paint.muted, bgcolor=self.paint.background,
                                        italic=True))])
        if self.paint is None or line is None:
            return Strip.blank(width, self.rich_style)
        mark = None
        part = self.moves.slice(self.cursor)
        if part is not None and self.cursor is not None and not isinstance(line, HostLine) \
                and y + self.scroll_offset.y == self.cursor_line:
            mark = Mark(self.cursor.gpu, part.start, part.start + part.size)
        key = (line, width, self.paint, mark)
        strip = self._cache.get(key)
        if strip is None:
            strip = render(line, width, self.paint, mark)
            self._cache[key] = strip
        return strip
