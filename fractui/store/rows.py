"""The kinds of what fractui writes to its store, checked where rows are read.

SQLite keeps whatever is written into any column, so a value of another kind (a hand's
`UPDATE`, a damaged page) would be read as fractui wrote it and fail later, in the scheduler's
pass or a verb, over and over. Each reader names the kinds of the columns it reads; one of
another kind is ``Unreadable``, and the store is then called damaged, naming the row and the
column (PostgreSQL's columns hold their kinds themselves; the check costs it little).
"""

from __future__ import annotations

from typing import Any, Mapping

Kind = tuple  # the Python types a column's value may have, as the database drivers give them

INT: Kind = (int,)
NUM: Kind = (int, float)
TEXT: Kind = (str,)
FLAG: Kind = (int, bool)  # SQLite's 0 and 1; PostgreSQL's booleans


class Unreadable(Exception):
    """A row the database returned whole, holding values fractui never wrote."""


def maybe(kind: Kind) -> Kind:
    """``kind``, or NULL."""
    return kind + (type(None),)


def check(what: str, row: Any, kinds: Mapping[str, Kind]) -> None:
    """That each named column of ``row`` is of its kind; else Unreadable, saying which. A bool
    is no INT or NUM here, though Python's int (no driver returns one for those columns)."""
    for column, kind in kinds.items():
        value = row[column]
        if type(value) not in kind:
            raise Unreadable("%s's %s is %s, not what fractui writes there" % (
                what, column, _said(value)))


def check_values(what: str, values: Mapping[str, Any], kinds: Mapping[str, Kind]) -> None:
    """``check`` for a JSON object read from a column: its keys that ``kinds`` names, where
    present (an older fractui may have left one out)."""
    for key, kind in kinds.items():
        if key in values and type(values[key]) not in kind:
            raise Unreadable("%s's %s is %s, not what fractui writes there" % (
                what, key, _said(values[key])))


def _said(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
