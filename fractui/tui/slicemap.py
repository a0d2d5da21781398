"""The slice map: every host and GPU of the fleet, one line each, drawn as Toolong draws logs.

A ScrollView whose ``render_line`` draws only the lines on screen. Finished lines are cached in
an LRU keyed by the line's value, the width, the paint and the cursor, so a fleet of 1,000
GPUs costs what its visible rows cost, and an update redraws only the rows that changed.
"""

from __future__ import annotations

from typing import Optional

from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from fractui.tui.bars import Paint, bar_at, render
from fractui.tui.model import Line


class SliceMap(ScrollView, can_focus=True, inherit_bindings=False):
    BINDINGS = [
        Binding("up,k", "scroll_up", "up", id="map.up", show=False),
        Binding("down,j", "scroll_down", "down", id="map.down", show=False),
        Binding("pageup", "page_up", "page up", id="map.page_up", show=False),
        Binding("pagedown,space", "page_down", "page down", id="map.page_down", show=False),
        Binding("home,g", "scroll_home", "top", id="map.top", show=False),
        Binding("end,G", "scroll_end", "bottom", id="map.bottom", show=False),
    ]
    DEFAULT_CSS = """
    SliceMap {
        background: $surface;
        scrollbar-size-vertical: 1;
    }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.lines: list[Line] = []
        self.paint: Optional[Paint] = None
        self.cursor = -1
        """The line a jump landed on (drawn reversed), or -1."""
        self._cache: LRUCache[tuple, Strip] = LRUCache(4096)

    @property
    def line_width(self) -> int:
        return self.scrollable_content_region.width

    def show(self, lines: list[Line]) -> None:
        """New lines; only the rows whose line changed are redrawn."""
        old, self.lines = self.lines, lines
        if len(old) != len(lines):
            self.virtual_size = Size(self.line_width, len(lines))
            self.refresh()
            return
        for y, (a, b) in enumerate(zip(old, lines)):
            if a != b:
                self.refresh_line(y)

    def set_paint(self, paint: Paint) -> None:
        self.paint = paint
        self.refresh()

    def action_scroll_down(self) -> None:
        """One line, at once: an animated scroll would show the line a few frames late."""
        self.scroll_relative(y=1, animate=False)

    def action_scroll_up(self) -> None:
        self.scroll_relative(y=-1, animate=False)

    def mark(self, index: int) -> None:
        """Mark line ``index`` (drawn reversed; ``l`` opens its job)."""
        old, self.cursor = self.cursor, index
        for y in (old, index):
            if y >= 0:
                self.refresh_line(y)

    def jump(self, index: int) -> None:
        """Put line ``index`` at the top of the view and mark it."""
        self.mark(index)
        self.scroll_to(y=index, animate=False)

    def reveal(self, index: int) -> None:
        """Mark line ``index`` and scroll to it only if it is out of sight (the ghost)."""
        self.mark(index)
        top, height = self.scroll_offset.y, self.size.height
        if not top <= index < top + height:
            self.scroll_to(y=max(0, index - height // 2), animate=False)

    def gpu_at(self, x: int, y: int) -> Optional[tuple[str, int, float, int]]:
        """(host, GPU index, place along its bar 0-1, memory slices) at content cell (x, y)."""
        index = y + self.scroll_offset.y
        if not 0 <= index < len(self.lines):
            return None
        hit = bar_at(self.lines[index], self.line_width, x)
        if hit is None:
            return None
        gpu, along = hit
        return gpu.host, gpu.index, along, gpu.slices

    def on_click(self, event: events.Click) -> None:
        """A click marks the line (``l`` then opens its job)."""
        offset = event.get_content_offset(self)
        if offset is not None and 0 <= offset.y + self.scroll_offset.y < len(self.lines):
            self.mark(offset.y + self.scroll_offset.y)

    def on_resize(self) -> None:
        self.virtual_size = Size(self.line_width, len(self.lines))

    def render_line(self, y: int) -> Strip:
        index = y + self.scroll_offset.y
        width = self.line_width
        if self.paint is None or not 0 <= index < len(self.lines):
            return Strip.blank(width, self.rich_style)
        line = self.lines[index]
        key = (line, width, self.paint, index == self.cursor)
        strip = self._cache.get(key)
        if strip is None:
            strip = render(line, width, self.paint, index == self.cursor)
            self._cache[key] = strip
        return strip
