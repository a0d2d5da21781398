"""The map's legend: whose colour is whose in the colour mode shown (``c`` switches team and
queue), and what the colours that are no one's mean."""

from __future__ import annotations

from typing import Optional

from rich.cells import cell_len
from rich.text import Text
from textual.geometry import Size
from textual.widget import Widget

from fractui.tui.bars import UNFIT_FILL, Paint, owner_marks
from fractui.tui.parts import fits, wrap_parts
from fractui.tui.themes import label_colour

MOST_LINES = 2
"""The map keeps its room: owners past these lines are counted ("+3 more"), not drawn."""


def legend(paint: Paint, simulated: bool, width: int, unfit: bool = False) -> list[Text]:
    """One swatch and name per team (or queue), its mark before its name where the map marks
    owners (``Paint.marked``), then outside fractui (processes it did not
    start), idle MIG instances, being made, free, free where no MIG profile fits (its fill
    beside the words, as the map draws it; only where the map draws it, ``unfit``: at 80x24
    those words cost the map a row) (and the demo's simulated load), in lines of
    ``width`` cells that go on between two swatches, never inside one ("being" over "made").
    Where they need more than ``MOST_LINES``, the last owners give way to their count: what
    the colours no one owns mean is said nowhere else."""
    s = paint.slices
    marks = owner_marks(paint.owners) if paint.marked else {}
    owners = [_swatch(paint.owner_colour(name), "%s %s" % (marks[name], name)
                      if marks.get(name) else name) for name in paint.owners]
    others = [_swatch(s.other, "outside"), _swatch(s.idle, "idle"),
              _swatch(s.placing, "being made"), _swatch(s.free, "free")]
    if unfit:
        others.append(_swatch(s.free, "%s no fit" % UNFIT_FILL))
    if simulated:
        others.append(_swatch(s.simulated, "simulated"))
    head = Text(paint.by + ":", style="bold")
    shown = _shown(head, owners, others, width)
    return wrap_parts([head] + owners[:shown] + _more(len(owners) - shown) + others, width,
                      sep=" ")


def _shown(head: Text, owners: list[Text], others: list[Text], width: int) -> int:
    """How many owners go in ``MOST_LINES`` lines before the count of the rest and ``others``
    (none where even those need more), from the parts' widths as ``wrap_parts`` places them:
    each owner is placed once. Wrapping the parts again for each owner left out took as long
    as the owners squared: with 300 teams, a third of a second at each layout of the map."""
    ends = [(1, cell_len(head.plain))]  # (lines, cells on the last) after the first k owners
    for part in owners:
        ends.append(_placed(ends[-1], part, width))
    for shown in range(len(owners), 0, -1):
        end = ends[shown]
        for part in _more(len(owners) - shown) + others:
            end = _placed(end, part, width)
        if end[0] <= MOST_LINES:
            return shown
    return 0


def _placed(end: tuple[int, int], part: Text, width: int) -> tuple[int, int]:
    """(lines, cells on the last) once ``part`` is placed after ``end``, a space apart."""
    lines, used = end
    cells = cell_len(part.plain)
    return (lines, used + 1 + cells) if fits(used, cells, width, " ") else (lines + 1, cells)


def _more(left: int) -> list[Text]:
    """The count of the owners left out, if any."""
    return [Text("+%d more" % left, style="dim")] if left else []


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
        self.unfit = False
        """Whether a GPU on the map shows free slices no profile fits (``UNFIT_FILL``)."""

    def show(self, paint: Paint, simulated: bool) -> None:
        if (paint, simulated) != (self.paint, self.simulated):
            self.paint, self.simulated = paint, simulated
            self.refresh(layout=True)

    def show_unfit(self, unfit: bool) -> None:
        """Whether the legend says what ``UNFIT_FILL`` means: where the map's lines draw it."""
        if unfit != self.unfit:
            self.unfit = unfit
            self.refresh(layout=True)

    def lines(self, width: int) -> list[Text]:
        return legend(self.paint, self.simulated, width, self.unfit) \
            if self.paint is not None else []

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return max(1, len(self.lines(width)))

    def render(self) -> Text:
        return Text("\n").join(self.lines(self.size.width))
