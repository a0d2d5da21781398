"""What verbs write to the terminal and read from it: JSON, tables that fit the width, yes/no;
and, to a terminal, text only: never a control sequence someone else wrote."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import shutil
import sys
from typing import Any, List, Optional, Sequence, TextIO

from remote_agent.digits import whole

from fractui.cells import cell_len, cut, padded

# C0 and C1 controls, DEL, and the marks that turn text's direction (a name that reads
# backwards, as in "Trojan Source"): all zero cells wide, so taking them changes no layout
CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# an escape sequence as programs write it into their output: CSI (colours, the cursor), OSC
# (titles, links, the clipboard; ended by BEL or ST, or by the text's end), each also in its
# one-byte C1 form, and any other ESC with its intermediates and final byte (ESC ( B, ESC 7)
SEQUENCES = re.compile(
    "(?:\x1b\\[|\x9b)[0-?]*[ -/]*[@-~]"
    "|(?:\x1b\\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\\\|\x9c)?"
    "|\x1b[ -/]*[0-~]")
DROPPED = re.compile(CONTROLS.pattern.replace("\x00-\x1f", "\x00-\x08\x0b-\x1f"))  # but \n, \t


def as_text(text: str) -> str:
    """``text`` as a terminal may be given it: escape sequences out (``_unescaped``), then
    every control character but newline and tab; a carriage return not ending a line starts
    one (a progress bar's each step on a line of its own, never written over the words
    before it)."""
    return DROPPED.sub("", _unescaped(text).replace("\r\n", "\n").replace("\r", "\n"))


def as_shown_line(line: str) -> str:
    """One line of a job's output as a terminal leaves it drawn: escape sequences out, what
    follows its last carriage return (a progress bar's last step), no control character but
    tab."""
    return DROPPED.sub("", _unescaped(line).rstrip("\r").rsplit("\r", 1)[-1])


def _unescaped(text: str) -> str:
    """Each escape sequence taken out whole (colours too, as ``journalctl`` shows a log), and
    again until none is left: taking one may join the bytes around it into another."""
    while True:
        fewer = SEQUENCES.sub("", text)
        if fewer == text:
            return text
        text = fewer


class TerminalText(io.TextIOBase):
    """A terminal's stdout or stderr, given text only. What verbs print holds others' words
    (a job's output, its name and argv in an agent's error, a reason), and an escape sequence
    in them would reach the admin's terminal: its clipboard (OSC 52), its title, its cursor,
    or an answer typed into its input (``as_text``). Into a pipe or a file every byte goes as
    it is (``text_only_to_terminals`` wraps only a terminal)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(as_text(text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stream.encoding


class OutputFailed(OSError):
    """stdout could not be written (ENOSPC, EDQUOT, EIO: ``fractui jobs > /dev/full``), which
    the user is told is the output's: a bare errno read as the store's or a host's. A reader
    gone is BrokenPipeError still (quiet, 141)."""


class CheckedOutput(io.TextIOBase):
    """stdout, whose write errors are OutputFailed (``checked_stdout``)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def write(self, text: str) -> int:
        return _checked(self.stream.write, text)

    def flush(self) -> None:
        _checked(self.stream.flush)

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stream.encoding


def _checked(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except BrokenPipeError:
        raise
    except OSError as err:
        raise OutputFailed(err.errno, err.strerror) from err


def checked_stdout() -> None:
    """Wrap stdout (once; before ``text_only_to_terminals``, which wraps it again where it is a
    terminal) so an error writing it says it is stdout's (OutputFailed)."""
    if not isinstance(sys.stdout, (CheckedOutput, TerminalText)):
        sys.stdout = CheckedOutput(sys.stdout)


def closed_streams_to_devnull() -> None:
    """A standard stream closed as fractui started (``fractui jobs >&-``, ``2>&-``) reads and
    writes /dev/null, as if so redirected: Python leaves its ``sys.stdout`` None, which the
    verbs' writes met as an internal error (exit 70, said on stdout where stderr was the one
    closed), and its descriptor free, for the next file opened — the store's — to take.
    ``sys.__stderr__`` too: Textual draws the TUI there, and met None as a TUI that drew
    nothing and no key ended.
    Inheritable, as a shell's redirect is (os.open's descriptor is close-on-exec): a child left
    fractui's own stream (none is today: a host's agent is given pipes) finds /dev/null there,
    not a closed descriptor for its own first file to take."""
    for fd, name, mode in ((0, "stdin", os.O_RDONLY), (1, "stdout", os.O_WRONLY),
                           (2, "stderr", os.O_WRONLY)):
        try:
            os.fstat(fd)
            continue
        except OSError:  # closed (EBADF)
            pass
        devnull = os.open(os.devnull, mode)
        if devnull != fd:
            os.dup2(devnull, fd)
            os.close(devnull)
        os.set_inheritable(fd, True)
        unset = [n for n in (name, "__%s__" % name) if getattr(sys, n) is None]
        stream = open(fd, "r" if fd == 0 else "w", closefd=False) if unset else None
        for held in unset:
            setattr(sys, held, stream)


# fractui's own marks as an encoding without them (ASCII, Latin-1) writes them: each a mark
# of the same cells, so a table keeps its width and its columns their places
STAND_INS = {"\u2026": "~", "\u2014": "-", "\u00b7": "."}  # "…" a cut, "—" no value, "·" a gap


def own(text: str) -> str:
    """fractui's own words (a table's header, a cell it wrote, its mark of a cut) as stdout's
    encoding holds them: each of its marks that the encoding cannot hold as its stand-in
    (STAND_INS). Put in where the words are made, never on the stream: a job's name or
    output with a "…" in it is theirs, escaped as any other character (a name "a…b" written
    "a~b" read as the job "a~b", and a line to paste ran another command)."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    for mark, stand_in in STAND_INS.items():
        if mark in text:
            try:
                mark.encode(encoding)
            except UnicodeEncodeError:
                text = text.replace(mark, stand_in)
    return text


def escape_what_cannot_be_encoded() -> None:
    """A character stdout's or stderr's encoding cannot hold (a job's name in Unicode under
    PYTHONIOENCODING=ascii or a Latin-1 locale) is written as its escape, ``\\xe9``, rather than
    ending the verb (or the line saying why it failed) with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):  # replaced by a caller, or closed
            pass


def text_only_to_terminals() -> None:
    """Wrap stdout and stderr where each is a terminal (see TerminalText)."""
    if sys.stdout.isatty() and not isinstance(sys.stdout, TerminalText):
        sys.stdout = TerminalText(sys.stdout)
    if sys.stderr.isatty() and not isinstance(sys.stderr, TerminalText):
        sys.stderr = TerminalText(sys.stderr)


def say(message: str) -> None:
    """One line for the user on stderr, after ``fractui:`` — an error, a warning, why a job
    ended — so stdout holds only the data. With no stderr left the line is lost, not the exit
    code."""
    try:
        print("fractui: %s" % message, file=sys.stderr, flush=True)
    except OSError:
        pass


def log_line(message: str) -> None:
    """One line of a long-running verb's own log on stdout (the scheduler's first line, which a
    TUI's child writes into its log file): a line the log's filesystem has no room for (ENOSPC,
    EDQUOT, EIO) is lost, never the process that goes on without it. stdout then points at
    /dev/null, so the line left in its buffer neither comes later nor fails the exit. A reader
    gone (BrokenPipeError) ends the verb quietly, as for any other."""
    try:
        print(message, flush=True)
    except BrokenPipeError:
        raise
    except OSError:
        stdout_to_devnull()


def log_records_to_stderr() -> None:
    """fractui's log records at INFO and above on stderr, each with its time and level: what a
    long-running verb (the headless scheduler) says of what it does, for journald or the TUI's
    scheduler log. Left to Python, only WARNING and above showed, bare: that a scheduler stands
    by, that an agent took a stop, where the metrics are served were said to no one."""
    logger = logging.getLogger("fractui")
    if any(getattr(h, "name", None) == "fractui.stderr" for h in logger.handlers):
        return  # (once per process)
    handler = logging.StreamHandler(sys.stderr)  # (the terminal's text-only one, if a tty)
    handler.set_name("fractui.stderr")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                           "%Y-%m-%dT%H:%M:%S%z"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def stdout_to_devnull() -> None:
    """stdout pointed at /dev/null, where what is left to write cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no file (replaced in-process): nothing to flush
        pass
    os.close(devnull)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def width() -> Optional[int]:
    """The columns a table may use: $COLUMNS where it holds a number of them, else the
    terminal's when stdout is one;
    None (no limit) into a pipe or a file, where nothing is cut for the reader."""
    columns = whole(os.environ.get("COLUMNS", ""), sys.maxsize)
    if columns:
        return columns
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def print_lines(lines: Sequence[str]) -> None:
    """Lines that are no table (``status``'), each cut to ``width()`` as a table's are."""
    columns, mark = width(), own("…")
    for line in lines:
        print(line if columns is None else cut(line, columns, mark))


def table(header: Sequence[str], rows: Sequence[Sequence[str]],
          caps: Sequence[Optional[int]], columns: Optional[int]) -> List[str]:
    """Rows as aligned lines. Each column is as wide as its widest cell, at most its cap: a
    name (a team's, a job's, an actor's) is cut to it, ending in "…"; a column whose cap is
    None is never cut — a time, a job's number, a count, hours: the point of
    the row, of which a cut one says another value (a year after 9999 read 1000-…). The
    last column takes what is left, and a line longer than ``columns`` ends in "…" (each
    mark of fractui's as stdout's encoding holds it: ``own``)."""
    cells = [[own(c) for c in header]] + [[one_line(c) for c in row] for row in rows]
    widths = [min(math.inf if cap is None else cap, max(cell_len(r[i]) for r in cells))
              for i, cap in enumerate(caps)]
    lines: List[str] = []
    mark = own("…")
    for row in cells:
        parts = [padded(cut(c, w, mark), w) for c, w in zip(row, widths)] + row[len(widths):]
        line = "  ".join(parts).rstrip()
        lines.append(line if columns is None else cut(line, columns, mark))
    return lines


def one_line(text: str) -> str:
    """A cell on one line: a reason may hold newlines, a name control characters."""
    return "".join(c if c.isprintable() else " " for c in text)


NO_TERMINAL = "no terminal to ask on: --yes agrees in advance"


def confirm(question: str) -> bool:
    """The person's yes at a terminal; without one, no, saying how to agree in advance (every
    verb that asks takes ``--yes``)."""
    if not sys.stdin.isatty():
        say(NO_TERMINAL)
        return False
    try:
        return input("%s [y/N] " % question).strip().lower() in ("y", "yes")
    except EOFError:
        return False
