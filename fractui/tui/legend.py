"""The map's legend: whose colour is whose in the colour mode shown (``c`` switches team and
queue), and what the colours that are no one's mean."""

from __future__ import annotations

from typing import Optional

from rich.text import Text
from textual.widget import Widget

from fractui.tui.bars import Paint
from fractui.tui.themes import label_colour


def legend(paint: Paint, simulated: bool) -> Text:
    """One swatch and name per team (or queue), then outside fractui (processes it did not
    start), idle MIG instances, being made, free (and the demo's simulated load): wraps where
    the width ends."""
    s = paint.slices
    out = Text(paint.by + ":", style="bold", no_wrap=False)
    pairs = [(paint.owner_colour(name), name) for name in paint.owners]
    pairs += [(s.other, "outside"), (s.idle, "idle"),
              (s.placing, "being made"), (s.free, "free")]
    if simulated:
        pairs.append((s.simulated, "simulated"))
    for colour, name in pairs:
        out.append(" ")
        out.append(" %s " % name, style="%s on %s" % (label_colour(colour), colour))
    return out


class Legend(Widget):
    DEFAULT_CSS = """
    Legend {
        height: auto;
        max-height: 2;
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

    def render(self) -> Text:
        return legend(self.paint, self.simulated) if self.paint is not None else Text("")
