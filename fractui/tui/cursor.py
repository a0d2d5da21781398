"""The map's cursor: which slice of which GPU it is on, and where a key moves it.

Pure. A GPU's slices are its blocks (jobs, instances, outside processes, slots being made) and
the free room between them — on a MIG GPU each free memory slice on its own, on a shared GPU
the free room as one. A key and a click resolve a slice by one function, ``slice_at``, so what
a click selects is what ``enter`` opens.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

from fractui.tui.model import GHOST, Block, GpuGroupLine, GpuLine, Line

EPSILON = 1e-9


@dataclass(frozen=True)
class Slice:
    """A part of a GPU the cursor can rest on: ``start`` and ``size`` as fractions of it."""

    start: float
    size: float
    block: Optional[Block] = None
    """What holds it; None: free."""

    @property
    def middle(self) -> float:
        return self.start + self.size / 2

    @property
    def job_id(self) -> Optional[int]:
        """The store job on it (``#12 host/j3``), or None (free, idle, outside fractui)."""
        return block_job_id(self.block)


def block_job_id(block: Optional[Block]) -> Optional[int]:
    tag = (block.job or "").split(" ")[0] if block is not None else ""
    return int(tag[1:]) if tag.startswith("#") and tag[1:].isdigit() else None


@lru_cache(maxsize=4096)
def slices_of(gpu: GpuLine) -> tuple[Slice, ...]:
    """The GPU's slices left to right (the placement ghost is no slice)."""
    blocks = sorted((b for b in gpu.blocks if b.kind != GHOST), key=lambda b: b.start)
    step = 1.0 / gpu.slices if gpu.mig and gpu.slices else None
    out: list[Slice] = []

    def free(a: float, b: float) -> None:
        if b - a <= EPSILON:
            return
        if step is None:
            out.append(Slice(a, b - a))
            return
        at = a
        while b - at > EPSILON:
            out.append(Slice(at, min(step, b - at)))
            at += step

    at = 0.0
    for block in blocks:
        free(at, block.start)
        out.append(Slice(block.start, block.size, block))
        at = max(at, block.start + block.size)
    free(at, 1.0)
    return tuple(out) or (Slice(0.0, 1.0),)


def slice_at(gpu: GpuLine, along: float) -> int:
    """The index of the slice at ``along`` (0 to 1) of the GPU's bar."""
    slices = slices_of(gpu)
    for i, s in enumerate(slices):
        if along < s.start + s.size - EPSILON:
            return i
    return len(slices) - 1


@dataclass(frozen=True)
class Cursor:
    """Where the cursor is: a GPU by host and index, and a point along its bar (the middle of
    the slice it is on), so it stays put while lines are rebuilt around it."""

    host: str
    gpu: int
    along: float = 0.0


def cursor_at(gpu: GpuLine, along: float) -> Cursor:
    """The cursor on the middle of the slice at ``along`` of ``gpu`` (a key's move, a click)."""
    return Cursor(gpu.host, gpu.index, slices_of(gpu)[slice_at(gpu, along)].middle)


@dataclass(frozen=True)
class Place:
    """A GPU as the map draws it: its line, its place on that line (compact mode), itself."""

    line: int
    column: int
    gpu: GpuLine


def places(lines: Sequence[Line]) -> list[Place]:
    """Every GPU drawn, in map order."""
    out = []
    for i, line in enumerate(lines):
        if isinstance(line, GpuLine):
            out.append(Place(i, 0, line))
        elif isinstance(line, GpuGroupLine):
            out += [Place(i, k, g) for k, g in enumerate(line.gpus)]
    return out


class Moves:
    """The cursor's moves over one drawing of the map."""

    def __init__(self, lines: Sequence[Line]) -> None:
        self.places = places(lines)
        self._at = {(p.gpu.host, p.gpu.index): k for k, p in enumerate(self.places)}
        self._rows = sorted({p.line for p in self.places})

    def find(self, cursor: Optional[Cursor]) -> Optional[int]:
        """The place the cursor is on, or None (its GPU is not drawn)."""
        return None if cursor is None else self._at.get((cursor.host, cursor.gpu))

    def place(self, cursor: Optional[Cursor]) -> Optional[Place]:
        k = self.find(cursor)
        return None if k is None else self.places[k]

    def first(self) -> Optional[Cursor]:
        return self._to(0, 0.0) if self.places else None

    def last(self) -> Optional[Cursor]:
        return self._to(len(self.places) - 1, 0.0) if self.places else None

    def _to(self, k: int, along: float) -> Cursor:
        return cursor_at(self.places[k].gpu, along)

    def on(self, cursor: Optional[Cursor]) -> Optional[Cursor]:
        """The cursor put on the middle of its slice as the GPU is now; the first GPU if its
        own is not drawn."""
        k = self.find(cursor)
        if k is None or cursor is None:
            return self.first()
        return self._to(k, cursor.along)

    def slice(self, cursor: Optional[Cursor]) -> Optional[Slice]:
        place = self.place(cursor)
        if place is None or cursor is None:
            return None
        return slices_of(place.gpu)[slice_at(place.gpu, cursor.along)]

    def across(self, cursor: Optional[Cursor], by: int) -> Optional[Cursor]:
        """``by`` slices right (left if negative); past a GPU's edge, into the next GPU in map
        order (on a compact line, the one beside it)."""
        k = self.find(cursor)
        if k is None or cursor is None:
            return self.first()
        gpu = self.places[k].gpu
        i = slice_at(gpu, cursor.along) + by
        slices = slices_of(gpu)
        if 0 <= i < len(slices):
            return cursor_at(gpu, slices[i].middle)
        k2 = k + (1 if by > 0 else -1)
        if not 0 <= k2 < len(self.places):
            return cursor
        return self._to(k2, 0.0 if by > 0 else 1.0)

    def down(self, cursor: Optional[Cursor], rows: int) -> Optional[Cursor]:
        """``rows`` map rows of GPUs down (up if negative), to the GPU in the same column (the
        last of a shorter row), at the same point along its bar."""
        k = self.find(cursor)
        if k is None or cursor is None:
            return self.first()
        here = self.places[k]
        r = self._rows.index(here.line)
        target = self._rows[max(0, min(len(self._rows) - 1, r + rows))]
        row = [j for j, p in enumerate(self.places) if p.line == target]
        j = row[min(here.column, len(row) - 1)]
        return self._to(j, cursor.along)

    def by_lines(self, cursor: Optional[Cursor], lines: int) -> Optional[Cursor]:
        """A page: the GPU row about ``lines`` map lines away (host lines count)."""
        k = self.find(cursor)
        if k is None or cursor is None:
            return self.first()
        line = self.places[k].line + lines
        if lines > 0:
            target = next((r for r in self._rows if r >= line), self._rows[-1])
        else:
            target = next((r for r in reversed(self._rows) if r <= line), self._rows[0])
        return self.down(cursor, self._rows.index(target) - self._rows.index(
            self.places[k].line))
