"""Lines of the slice map as styled segments: the bars themselves, no widget.

A MIG GPU is drawn as its memory slices, each instance a block labelled with its profile and
its owner; a GPU without MIG as the memory shares of its jobs, proportional, with eighth-block
precision at the edges (nvitop's ``▏▎▍▌▋▊▉█``): a cell split between two shares shows the left
one's eighths in the foreground over the right one's colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from fractui.cells import cell_len, each_cell
from fractui.tui.model import (GHOST, IDLE, JOB, OTHER, PLACING, SIMULATED, Block,
                               GpuGroupLine, GpuLine, HostLine, Line)
from fractui.tui.themes import SlicePalette, label_colour, owner_colour
from fractui.words import count

EIGHTHS = " ▏▎▍▌▋▊▉█"
HATCH = "╱"
GHOST_FILL = "░"
UNFIT_FILL = "·"
"""A MIG GPU's free slice no profile can use now (``GpuLine.unfit``), told apart from a
free one a profile can by its fill, not only its colour: under NO_COLOR both are greys."""
COMPACT_BAR = 16  # cells per GPU in compact mode: two per memory slice of an A100
COMPACT_FIGURES = 10  # " 38G  45%": memory used and utilisation
COMPACT_CELL = 2 + COMPACT_BAR + COMPACT_FIGURES + 2  # "ii" + bar + figures + two spaces
OUT_OF_SERVICE = {"cordoned": "⊘", "draining": "↓", "drained": "○"}
"""A GPU line's mark for its cordon's state, before its index."""


@lru_cache(maxsize=512)
def _style(fg: Optional[str], bg: Optional[str], bold: bool = False,
           reverse: bool = False) -> Style:
    return Style(color=fg, bgcolor=bg, bold=bold or None, reverse=reverse or None)


@lru_cache(maxsize=512)
def _marked(style: Style) -> Style:
    """A cell under the cursor: reversed and bold, so it shows in every theme, colour or not."""
    return style + Style(reverse=True, bold=True)


@dataclass(frozen=True)
class Mark:
    """The cursor on a line: GPU ``gpu``'s part from ``start`` to ``end`` (fractions)."""

    gpu: int
    start: float
    end: float


@dataclass(frozen=True)
class Paint:
    """Everything colours depend on; its hash keys the line cache with the line itself."""

    slices: SlicePalette
    foreground: str
    background: str
    muted: str
    states: tuple[tuple[str, str], ...]
    """Host state -> colour."""
    owners: tuple[str, ...] = ()
    """Team (or queue) names in config order: their colour is their place in this list."""
    by: str = "team"
    """Colour blocks by "team" or by "queue"."""
    marked: bool = False
    """Whether an owner's blocks carry its mark where they have no label (compact mode): under
    NO_COLOR the owners' colours are greys a shade apart, told apart by nothing else."""

    def owner(self, block: Block) -> Optional[str]:
        return block.team if self.by == "team" else block.queue

    def mark(self, block: Block) -> str:
        """The one-cell mark of ``block``'s owner where the paint marks owners ("" else, and
        for a block no owner's: idle, outside fractui, being made); NOT_IN_CONFIG, always,
        for an owner the config lacks."""
        name = self.owner(block) if block.kind == JOB else None
        if name is None:
            return ""
        if name not in self.owners:
            return NOT_IN_CONFIG
        return owner_marks(self.owners).get(name, "") if self.marked else ""

    def colour(self, block: Optional[Block], stale: bool) -> str:
        if block is None:
            return self.slices.free
        if block.kind == GHOST:
            return self.foreground
        if stale:
            return self.slices.stale
        if block.kind == JOB:
            name = self.owner(block)
            if name is None:  # a job the store does not know: launched by hand on the host
                return self.slices.other
            return self.owner_colour(name)
        return {IDLE: self.slices.idle, OTHER: self.slices.other,
                SIMULATED: self.slices.simulated, PLACING: self.slices.placing}[block.kind]

    def owner_colour(self, name: str) -> str:
        return owner_colour(self.slices, self.owners, name)

    def state(self, state: str) -> str:
        return dict(self.states).get(state, self.foreground)


NOT_IN_CONFIG = "?"
"""The mark of an owner the config lacks (a team or queue removed while its jobs run), drawn
colour or not: its colour, by a hash of its name, may be a configured owner's. No owner's
mark (a letter or digit, ``owner_marks``) is ever this."""

SPARE_MARKS = "0123456789abcdefghijklmnopqrstuvwxyz"
"""The marks of owners whose names have no character left: digits first, as unlike a
name's letter as can be."""


@lru_cache(maxsize=64)
def owner_marks(owners: tuple[str, ...]) -> dict[str, str]:
    """Each owner's mark, one cell, in the config's order: the first character of its name
    that no owner before it took, case aside (vision v, nlp n, nlp2 l), else the first digit
    none took, else the first letter none took (unmarked, an owner's slices would read as
    idle, outside or free ones); none where all are taken. The legend says each beside its
    name."""
    taken: set[str] = set()
    marks: dict[str, str] = {}
    for name in owners:
        mark = next((c for c in each_cell(name) if cell_len(c) == 1 and c.isalnum()
                     and c.lower() not in taken), None) or next(
            (d for d in SPARE_MARKS if d not in taken), "")
        taken.add(mark.lower())
        marks[name] = mark
    return marks


def _labels(block: Block, paint: Paint, mig: bool) -> tuple[str, ...]:
    """What a block may say, the fullest first: the first that fits is drawn (nothing where
    none does). A store job's id comes before its owner, whose colour says it; where the
    paint marks owners, a share's shorter labels keep its owner's mark."""
    owner = paint.owner(block)
    tag = (block.job or "").split(" ")[0] if (block.job or "").startswith("#") else ""
    if block.kind == PLACING:
        return ("→" + (block.label if mig else owner or block.label),)
    if block.kind == GHOST:
        return ("▶" + block.label,)
    if block.kind in (OTHER, SIMULATED) and mig:
        return ("%s %s" % (block.label, "sim" if block.kind == SIMULATED else "other"),)
    if mig:
        short = block.label + (" " + owner if owner else "")
        return tuple(" ".join(filter(None, w)) for w in (
            (block.label, tag, owner), (block.label, tag))) + (short,) if tag else (short,)
    mark = paint.mark(block)
    if tag:
        return ("%s %s" % (tag, owner) if owner else tag,) + (
            ("%s %s" % (tag, mark), mark) if mark else (tag,))
    return (owner or block.label,) + ((mark,) if mark else ())


def _mig_labels(block: Block, paint: Paint) -> tuple[str, ...]:
    """A MIG block's labels, then its profile alone and its compute slices ("1g" of a
    1g.10gb), marked as a placement's are: a label cut to its block ("1g.1", "2g.20gb v")
    read as another profile, or another owner. Where the paint marks owners (``Paint.
    marked``: no colour tells them apart) those keep the owner's mark, then the mark alone,
    as the compact map's: a narrow block of one of two teams of one colour said "1g" of
    either."""
    mark = {PLACING: "→", GHOST: "▶"}.get(block.kind, "")
    shorter = (mark + block.label, mark + block.label.split(".")[0])
    owner = paint.mark(block)
    return _labels(block, paint, True) + (tuple("%s %s" % (t, owner) for t in shorter) + (
        owner,) if owner else shorter)


def _fitting(labels: tuple[str, ...], room: int) -> list[str]:
    """The first label that fits ``room`` cells, one cell to an item; none where none does."""
    return each_cell(next((t for t in labels if cell_len(t) <= room), ""))


def _fill(block: Block) -> str:
    return HATCH if block.kind == PLACING else GHOST_FILL if block.kind == GHOST else " "


def _runs(cells: list[tuple[str, Style]]) -> list[Segment]:
    """Cells merged into as few segments as there are style changes."""
    out: list[Segment] = []
    text: list[str] = []
    style: Optional[Style] = None
    for ch, st in cells:
        if st is not style and text:
            out.append(Segment("".join(text), style))
            text = []
        style = st
        text.append(ch)
    if text:
        out.append(Segment("".join(text), style))
    return out


def mig_bar(line: GpuLine, width: int, paint: Paint, labels: bool = True
            ) -> list[tuple[str, Style]]:
    """Slices as equal parts of ``width``; each instance a block starting with a thin edge."""
    slices = max(1, line.slices)
    edge = [round(i * width / slices) for i in range(slices + 1)]
    free = _style(paint.muted, paint.slices.free)
    cells = [(" ", free)] * width
    for s in line.unfit:
        cells[edge[s]:edge[s + 1]] = [(UNFIT_FILL, free)] * (edge[s + 1] - edge[s])
    for i in range(1, slices):
        if edge[i] < width:
            cells[edge[i]] = ("▏", _style(paint.background, paint.slices.free))
    for block in line.blocks:
        first = round(block.start * slices)
        a, e = edge[first], edge[min(slices, first + max(1, round(block.size * slices)))]
        if e <= a:
            continue
        bg = paint.colour(block, line.stale)
        fg = label_colour(bg)
        fill = _fill(block)
        mark = paint.mark(block)
        text = _fitting(_mig_labels(block, paint), e - a - 1) if labels else (
            [mark] if mark and e - a > 1 else [])
        body = _style(fg, bg)
        cells[a] = ("▏", _style(paint.background, bg))
        for i in range(a + 1, e):
            k = i - a - 1
            cells[i] = (text[k] if k < len(text) else fill, body)
    return cells


def share_bar(line: GpuLine, width: int, paint: Paint, labels: bool = True
              ) -> list[tuple[str, Style]]:
    """Shares as proportional runs, in eighths of a cell; labels only where a share has
    room for them in whole cells."""
    total = width * 8
    owner = [-1] * total
    blocks = line.blocks
    for k, block in enumerate(blocks):
        e0 = min(total, round(block.start * total))
        e1 = min(total, max(e0 + 1, round((block.start + block.size) * total)))
        owner[e0:e1] = [k] * (e1 - e0)
    colours = [paint.colour(b, line.stale) for b in blocks]
    free = paint.slices.free

    def colour(k: int) -> str:
        return colours[k] if k >= 0 else free

    text: dict[int, str] = {}
    for k, block in enumerate(blocks):
        cells_of = [c for c in range(width) if owner[c * 8] == owner[c * 8 + 7] == k]
        if labels:
            label = next((t for t in _labels(block, paint, False)
                          if len(cells_of) >= cell_len(t) + 2), "")
            if label:
                text.update({cells_of[0] + 1 + i: ch for i, ch in enumerate(each_cell(label))})
        elif paint.mark(block) and cells_of:  # (not on its first cell, an edge below)
            start = min(total - 1, round(block.start * total)) // 8
            text[([c for c in cells_of if c != start] or cells_of)[0]] = paint.mark(block)
    cells = []
    for c in range(width):
        left, right = owner[c * 8], owner[c * 8 + 7]
        if left == right:
            bg = colour(left)
            fill = _fill(blocks[left]) if left >= 0 else " "
            fg = label_colour(bg) if left >= 0 else paint.muted
            cells.append((text.get(c, fill), _style(fg, bg)))
        else:
            n = 0
            while n < 8 and owner[c * 8 + n] == left:
                n += 1
            cells.append((EIGHTHS[n], _style(colour(left), colour(right))))
    for k, block in enumerate(blocks):  # two shares of one colour side by side: an edge
        e0 = min(total - 1, round(block.start * total))
        if k and e0 and owner[e0 - 1] >= 0 and colours[owner[e0 - 1]] == colours[k]:
            cells[e0 // 8] = ("▏", _style(paint.background, colours[k]))
    return cells


def gpu_bar(line: GpuLine, width: int, paint: Paint, labels: bool = True,
            mark: Optional[Mark] = None) -> list[Segment]:
    """The GPU's bar; the cells of ``mark`` (the cursor's slice) reversed."""
    if width <= 0:
        return []
    cells = (mig_bar if line.mig else share_bar)(line, width, paint, labels)
    if mark is not None and mark.gpu == line.index:
        a = min(width - 1, round(mark.start * width))
        for c in range(a, max(a + 1, min(width, round(mark.end * width)))):
            cells[c] = (cells[c][0], _marked(cells[c][1]))
    return _runs(cells)


def _memory(line: GpuLine) -> str:
    return "%5.1f/%-3.0f GiB" % (line.used_mib / 1024, line.memory_mib / 1024)


def _util(line: GpuLine, wide: bool) -> str:
    if line.util is None:  # NVML does not report it for MIG instances: say so, never 0 %
        return "util n/a: MIG" if line.mig and wide else ("n/a MIG" if line.mig else "n/a")
    return ("util %3d%%" if wide else "%3d%%") % line.util


def _gpu_parts(line: GpuLine, width: int) -> tuple[str, str, int]:
    """A GPU line's prefix, suffix and the bar's width between them."""
    wide = width >= 100
    suffix = " %s %*s" % (_memory(line), 13 if wide else 7, _util(line, wide))
    prefix = "%-2s%2d %-10.10s " % (OUT_OF_SERVICE.get(line.out_of_service or "", ""),
                                     line.index, line.model)
    return prefix, suffix, max(4, width - len(prefix) - len(suffix))


def bar_at(line: Line, width: int, x: int) -> Optional[tuple[GpuLine, float]]:
    """The GPU whose bar cell ``x`` of a drawn line is on, and where along it (0 to 1)."""
    if isinstance(line, GpuLine):
        prefix, _suffix, bar = _gpu_parts(line, width)
        return line, min(1.0, max(0.0, (x - len(prefix)) / bar))
    if isinstance(line, GpuGroupLine) and x // COMPACT_CELL < len(line.gpus):
        along = (x % COMPACT_CELL - 2) / COMPACT_BAR
        return line.gpus[x // COMPACT_CELL], min(1.0, max(0.0, along))
    return None


def render_gpu(line: GpuLine, width: int, paint: Paint, mark: Optional[Mark] = None
               ) -> list[Segment]:
    wide = width >= 100
    prefix, suffix, bar_width = _gpu_parts(line, width)
    base = _style(paint.muted if line.stale else paint.foreground, paint.background)
    head = _style(paint.foreground, paint.background, reverse=mark is not None)
    util_style = _style(paint.muted, paint.background) if line.util is None else base
    bar = gpu_bar(line, bar_width, paint, mark=mark)
    return [*_unhealthy(prefix, 1, line, paint, head), *bar,
            Segment(suffix[:-len(_util(line, wide))], base), Segment(_util(line, wide), util_style)]


def _unhealthy(text: str, at: int, line: GpuLine, paint: Paint, style: Style) -> list[Segment]:
    """``text`` with cell ``at`` (a space) made a "!" in the warning colour if the GPU is
    unhealthy; the host's header says why."""
    if not line.unhealthy:
        return [Segment(text, style)]
    warn = _style(paint.state("degraded"), paint.background, bold=True)
    return [Segment(text[:at], style), Segment("!", warn), Segment(text[at + 1:], style)]


def _figures(gpu: GpuLine) -> str:
    """Compact mode's memory used and utilisation, ``COMPACT_FIGURES`` cells."""
    util = " n/a" if gpu.util is None else "%3d%%" % gpu.util
    return " %3.0fG %s" % (gpu.used_mib / 1024, util)


def render_group(line: GpuGroupLine, paint: Paint, mark: Optional[Mark] = None
                 ) -> list[Segment]:
    out: list[Segment] = []
    for gpu in line.gpus:
        base = _style(paint.muted if gpu.stale else paint.foreground, paint.background)
        here = mark is not None and mark.gpu == gpu.index
        # unhealthy: "!" where the index leaves room; unhealthy or out of service: in the
        # warning colour
        index = "!%d" % gpu.index if gpu.unhealthy and gpu.index < 10 else "%2d" % gpu.index
        style = _style(paint.state("degraded"), paint.background, bold=True) if (
            gpu.unhealthy or gpu.out_of_service) else base
        out.append(Segment(index, _marked(style) if here else style))
        out += gpu_bar(gpu, COMPACT_BAR, paint, labels=False, mark=mark if here else None)
        out.append(Segment(_figures(gpu), base if gpu.util is not None else
                           _style(paint.muted, paint.background)))
        out.append(Segment("  ", base))
    return out


def render_host(line: HostLine, paint: Paint) -> list[Segment]:
    state = _style(paint.state(line.state), paint.background, bold=True)
    detail = "  %s · %s" % (count(line.gpus, "GPU"), count(line.jobs, "job"))
    if line.simulated:
        detail += " · simulated load"
    bg = paint.background
    out = [Segment("▌", _style(paint.state(line.state), bg)),
           Segment(line.name, _style(paint.foreground, bg, bold=True)),
           Segment(" " + line.state, state)]
    if line.out_of_service:
        out.append(Segment(" · " + line.out_of_service, _style(paint.state("degraded"), bg,
                                                               bold=True)))
    out.append(Segment(detail, _style(paint.muted, bg)))
    if line.unhealthy:
        out.append(Segment("  ! " + "; ".join("gpu %d: %s" % u for u in line.unhealthy),
                           _style(paint.state("degraded"), bg)))
    if line.error:
        out.append(Segment("  " + line.error, _style(paint.state("offline"), bg)))
    return out


def render(line: Line, width: int, paint: Paint, mark: Optional[Mark] = None) -> Strip:
    """One line of the map, exactly ``width`` cells, every cell with its own background (so
    the widget need not restyle it); ``mark``: the cursor, on one of its GPUs."""
    if isinstance(line, HostLine):
        segments = render_host(line, paint)
    elif isinstance(line, GpuGroupLine):
        segments = render_group(line, paint, mark)
    else:
        segments = render_gpu(line, width, paint, mark)
    strip = Strip(segments)
    if isinstance(line, HostLine) and strip.cell_length > width > 1:
        # its end is others' words (the host's error): said cut where it is
        strip = Strip(list(strip.crop(0, width - 1)) + [Segment("…", segments[-1].style)])
    if strip.cell_length != width:
        strip = strip.crop_extend(0, width, _style(None, paint.background))
    return strip


def per_line(width: int) -> int:
    """GPUs per line in compact mode."""
    return max(1, width // COMPACT_CELL)
