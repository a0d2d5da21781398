"""Text the agent says that holds what the OS gave it: a path, an environment value, a user's
name, each read by Python with a lone surrogate (``\\udcff``) for a byte that is no UTF-8. Such
text is no Unicode: JSON writes it as an escape many readers refuse (the agent refuses it in a
request), and SQLite cannot store it. What the agent says reads U+FFFD for each such byte, as a
job's output does (docs/decisions.md, "Text the agent says is Unicode"). Kept to ``re``: the
shim imports it, and its start-up time is part of every launch."""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")  # in a str, a surrogate is a lone one
REPLACEMENT = "\ufffd"


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
