"""A failed job's last words: the last line of its output with anything in it, made safe to
carry in how its end is said ("exited 1: RuntimeError: CUDA out of memory").

A job's output is anyone's bytes: huge, binary, no UTF-8, no newline at its end, a terminal's
escape sequences. So only the log's last READ_BYTES are read, never the whole log; they are
decoded with replacement, every escape sequence and every character a terminal would act on or
not show is taken out, blanks are collapsed, and at most MOST characters are kept. The admin
side keeps an agent's words to the same rule (``shown``): an agent may be anyone's too.
"""

from __future__ import annotations

import re
from typing import Optional

READ_BYTES = 8192  # of a log's end, read to find its last line
MOST = 160  # characters kept of it
CUT = "\u2026"  # where a line was cut: at its end, or (its start not read) at its start

# ECMA-48's sequences, 7-bit (ESC ...) and 8-bit (C1): a string one (OSC, DCS, SOS, PM, APC)
# up to its terminator, or to the line's end where it has none, as a terminal swallows it;
# a CSI to its final byte; any other escape with its intermediate and final bytes.
_ESCAPES = re.compile(
    r"(?:\x1b[]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|\x1b[ -/]*[0-~]?")
_LINES = re.compile(r"[\r\n]")  # a carriage return too: a progress bar's last state


def _plain(text: str) -> str:
    """``text`` with no escape sequence, each character a terminal would act on or not show
    (a control character, a bidi override) a blank, and blanks collapsed to one space."""
    text = _ESCAPES.sub(" ", text)
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def shown(text: str) -> str:
    """``text`` as a reason carries it: plain (``_plain``), and cut to MOST characters."""
    text = _plain(text)
    return text if len(text) <= MOST else text[:MOST - 1].rstrip() + CUT


def last_line(data: bytes, whole: bool) -> Optional[str]:
    """The last line of ``data`` that has anything once plain, as ``shown`` keeps it; None
    where no line has. ``data``: a log's last bytes; ``whole``: all of the log, so its first
    line starts where ``data`` does (else that line's start was not read: a line cut there
    keeps its end, after CUT)."""
    cut = 0  # the rest of a character cut where the read began is no character of its own
    while not whole and cut < 3 and data[cut:cut + 1] and data[cut] & 0xC0 == 0x80:
        cut += 1  # (a UTF-8 continuation byte)
    lines = _LINES.split(data[cut:].decode("utf-8", errors="replace"))
    for number in range(len(lines) - 1, -1, -1):
        text = _plain(lines[number])
        if not text:
            continue
        if number == 0 and not whole:  # its start was not read
            return CUT + text[-(MOST - 1):].lstrip()
        return shown(text)
    return None
