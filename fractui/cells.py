"""Text measured in terminal cells, as Rich measures it (``rich.cells``), never in characters.

A job's name, a reason or a user comes from anyone, in any script: an accent written as a mark
after its letter ("e\u0301") or a Devanagari vowel sign takes no cell of its own, a CJK
character or an emoji (with its zero-width joiners and variation selectors) takes two. A
column padded or cut by ``len`` shifts every column after such a name; these pad and cut by
cells, so the table's columns stay where its header says.
"""

from __future__ import annotations

from rich.cells import cell_len, chop_cells, set_cell_size

__all__ = ["cell_len", "each_cell", "cut", "padded"]


def each_cell(text: str) -> list[str]:
    """``text`` one terminal cell to an item: a character with the marks that join it (an
    accent, a virama, a zero-width joiner and what it joins, a variation selector), then
    ``""`` for each further cell it covers (a wide character's second)."""
    out: list[str] = []
    for chunk in chop_cells(text, 1):
        if chunk:  # (Rich puts an empty chunk before a character two cells wide)
            out += [chunk] + [""] * (cell_len(chunk) - 1)
    return out


def padded(text: str, width: int) -> str:
    """``text`` exactly ``width`` cells: cut where it is wider (a wide character cut in half
    becomes a space), padded with spaces where it is narrower."""
    return set_cell_size(text, max(0, width))


def cut(text: str, width: int, mark: str = "…") -> str:
    """``text`` at most ``width`` cells, ending in ``mark`` (one cell) where it was cut (a
    wide character that would be cut in half left out whole)."""
    if cell_len(text) <= width:
        return text
    return chop_cells(text, width - 1)[0] + mark if width > 1 else mark[:width]
