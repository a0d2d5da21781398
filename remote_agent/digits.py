"""Whole numbers in text that others wrote: an environment variable, a file, a tool's output,
a config's word. ``str.isdigit`` takes "²" and "١" too, which ``int`` refuses or reads as
another number, and ``int`` refuses more than 4300 digits: a test of ``isdigit`` before
``int`` turns such text into a crash where it is merely wrong. Here it is no number."""

from __future__ import annotations

import re
from typing import Optional, Union

_DIGITS = re.compile(r"[0-9]{1,30}")  # ASCII digits, few enough for any bound we keep


def whole(text: Union[str, bytes], most: int) -> Optional[int]:
    """``text`` as a whole number from 0 to ``most`` written in ASCII digits; None where it is
    not one (bytes are read as ASCII)."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    if not _DIGITS.fullmatch(text):
        return None
    number = int(text)
    return number if number <= most else None
