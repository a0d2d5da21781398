"""The map's legend: whose colour is whose in the colour mode shown (``c`` switches team and
queue), and what the colours that are no one's mean."""

from __future__ import annotations

from typing import Optional

from rich.text import Text
from textual.geometry import Size
from textual.widget import Widget

from fractui.tui.bars import Paint
from fractui.tui.parts import wrap_parts
from fractui.tui.themes import label_colour

MOST_LINES = 2
"""The map keeps its room: owners past these lines are counted ("+3 more"), not drawn."""


def legend(paint: Paint, simulated: bool, width: int) -> list[Text]:
    """One swatch and name per team (or queue), then outside fractui (processes it did not
    start), idle MIG instances, being made, free (and the demo's simulated load), in lines of
    ``width`` cells that go on between two swatches, never inside one ("being" over "made").
    Where they need more than ``MOST_LINES``, the last owners give way to their count: what
    the colours no one owns mean is said nowhere else."""
    s = paint.slices
    owners = [_swatch(paint.owner_colour(name), name) for name in paint.owners]
    others = [_swatch(s.other, "outside"), _swatch(s.idle, "idle"),
              _swatch(s.placing, "being made"), _swatch(s.free, "free")]
    if simulated:
        others.append(_swatch(s.simulated, "simulated"))
    head = Text(paint.by + ":", style="bold")
    for shown in range(len(owners), -1, -1):
        left = len(owners) - shown
        more = [Text("+%d more" % left, style="dim")] if left else []
        lines = wrap_parts([head] + owners[:shown] + more + others, width, sep=" ")
        if len(lines) <= MOST_LINES:
            break
    return lines


def _swatch(colour: str, name: str) -> Text:
    return Text(" %s " % name, style="%s on %s" % (label_colour(colour), colour))


class Legend(Widget):
    DEFAULT_CSS = """
    Legend {
        height: auto;
        background: $surface;
        padding: 0 1;
    }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.paint: Optional[Paint] = None
        self.simulated = False

    def show(self, paint: Paint, simulated: bool) -> None:
        if (paint, simulated) != (self.paint, self.simulated):
            self.paint, self.simulated = paint, simulated
            self.refresh(layout=True)

    def lines(self, width: int) -> list[Text]:
        return legend(self.paint, self.simulated, width) if self.paint is not None else []

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return max(1, len(self.lines(width)))

    def render(self) -> Text:
        return Text("\n").join(self.lines(self.size.width))
