"""The kinds of what fractui writes to its store, checked where rows are read.

SQLite keeps whatever is written into any column, so a value of another kind (a hand's
`UPDATE`, a damaged page) would be read as fractui wrote it and fail later, in the scheduler's
pass or a verb, over and over. Each reader names the kinds of the columns it reads; one of
another kind is ``Unreadable``, and the store is then called damaged, naming the row and the
column (PostgreSQL's columns hold their kinds themselves; the check costs it little).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from fractui.words import as_typed

Kind = tuple  # the Python types a column's value may have, as the database drivers give them

INT: Kind = (int,)
NUM: Kind = (int, float)
TEXT: Kind = (str,)
FLAG: Kind = (int, bool)  # SQLite's 0 and 1; PostgreSQL's booleans


class Unreadable(Exception):
    """A row the database returned whole, holding values fractui never wrote."""


def named(value: Any) -> str:
    """A value that names a row (a team, a host, a GPU's UUID, a job's number) as the words
    about that row give it: bare where printable, else quoted with its escapes
    (``words.as_typed``). A damaged row may hold anything there, and its words go to the
    scheduler's log and a user's terminal: an escape or a line break of it forged lines."""
    return as_typed(str(value))


def maybe(kind: Kind) -> Kind:
    """``kind``, or NULL."""
    return kind + (type(None),)


def check(what: str, row: Any, kinds: Mapping[str, Kind]) -> None:
    """That each column of ``row`` that ``kinds`` names is of its kind; else Unreadable, saying
    which. A bool is no INT or NUM here, though Python's int (no driver returns one for those
    columns). One pass over the row's own columns: a scheduler reads thousands of jobs a pass,
    and SQLite's rows find a column by name by looking through them all."""
    for column, value in row.items() if isinstance(row, dict) else zip(row.keys(), row):
        kind = kinds.get(column)
        if kind is not None and type(value) not in kind:
            raise Unreadable("%s's %s is %s, not what fractui writes there" % (
                what, column, _said(value)))


def value_problem(values: Mapping[str, Any], kinds: Mapping[str, Kind]) -> Optional[str]:
    """What is of another kind in a JSON object read from a column, among its keys that
    ``kinds`` names, where present (an older fractui may have left one out): "gpu is 'lots',
    ..."; or None."""
    for key, kind in kinds.items():
        if key in values and type(values[key]) not in kind:
            return "%s is %s, not what fractui writes there" % (key, _said(values[key]))
    return None


def _said(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
