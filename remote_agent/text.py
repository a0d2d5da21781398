"""Text the agent says: a count with its noun, plural unless it is one (``count``, fractui's
too); and text that holds what the OS gave it: a path, an environment value, a user's
name, each read by Python with a lone surrogate (``\\udcff``) for a byte that is no UTF-8. Such
text is no Unicode: JSON writes it as an escape many readers refuse (the agent refuses it in a
request), and SQLite cannot store it. What the agent says reads U+FFFD for each such byte, as a
job's output does (docs/decisions.md, "Text the agent says is Unicode"). Kept to ``re``: the
shim imports it, and its start-up time is part of every launch."""

from __future__ import annotations

import re
from typing import Any, Optional, Union

_SURROGATE = re.compile("[\ud800-\udfff]")  # in a str, a surrogate is a lone one
REPLACEMENT = "\ufffd"


def noun_for(n: Union[int, float], noun: str, plural: Optional[str] = None) -> str:
    """``noun`` as ``n`` of it is said: plural unless ``n`` is 1 (``plural``: where "s" is not
    enough). The one rule of it for the agent and fractui both: never "1 CPUs" nor "GPU(s)"."""
    return noun if n == 1 else plural or noun + "s"


def count(n: Union[int, float], noun: str, plural: Optional[str] = None) -> str:
    """``n`` and ``noun`` ("1 GPU", "2 GPUs", "1.5 CPUs"): a whole number as it is, a fraction
    as ``%g`` gives it, its noun as that number is said (0.9999999, a sum of ten 0.1s, is
    said "1": "1 GPU", never "1 GPUs")."""
    said = "%d" % n if isinstance(n, int) else "%g" % n
    return "%s %s" % (said, noun_for(float(said), noun, plural))


def said(text: str) -> str:
    """``text`` with each lone surrogate read as U+FFFD."""
    return _SURROGATE.sub(REPLACEMENT, text)


def said_all(value: Any) -> Any:
    """A copy of ``value`` (JSON's shapes: dicts, lists, text, numbers) with each string in
    it, keys too, as ``said``."""
    if isinstance(value, str):
        return said(value)
    if isinstance(value, dict):
        return {said_all(k): said_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [said_all(v) for v in value]
    return value
