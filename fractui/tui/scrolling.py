"""Scrolling a view to a row now, whether or not it knew a moment ago that it scrolls.

Textual scrolls a view only once a layout has shown it its scrollbar: rows that have just
begun to overflow it (the jobs view's rows as its filter is cleared, a log's first lines) were
not scrolled to, and the cursor's row stayed out of sight. ``force`` scrolls it all the same,
within the rows it has now. (A followed log's newest line is scrolled to once laid out
instead: ``LogView._keep_end``.)
"""

from __future__ import annotations

from textual.scroll_view import ScrollView


def scroll_now(view: ScrollView, y: float) -> None:
    """``view`` scrolled to row ``y`` at once (the cursor's row put in sight)."""
    view.scroll_to(y=y, animate=False, immediate=True, force=True)
