"""How fractui words what it counts: "1 GPU", "2 GPUs", never "1 GPUs" or "GPU(s)" (``count``,
the agent's own: remote_agent/text.py, with ``noun_for`` for a noun said without its number);
and how it quotes back a word it was given (``quoted``)."""

from __future__ import annotations

import difflib
import re
import shlex
import time
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence

from remote_agent.jobs.last_line import shown
from remote_agent.text import count

if TYPE_CHECKING:  # (the store's package reads the config, which words its counts here)
    from fractui.store.model import Job


def first_of(names: Sequence[str], most: int) -> str:
    """The first ``most`` of ``names``, the rest counted ("job 1, job 2 and 3 more"): a list
    said in one line however long it grows."""
    return ", ".join(names[:most]) + (
        " and %d more" % (len(names) - most) if len(names) > most else "")


# in repr's form of a word: an escaped backslash, or a byte that was not UTF-8 (Python hands
# one over as a lone surrogate, U+DC80 to U+DCFF: os.fsdecode's surrogateescape)
_REPR_BYTE = re.compile(r"\\(\\|udc([89a-f][0-9a-f]))")
QUOTED_MOST = 40  # characters of a long word quoted; the rest is counted, not echoed


def close_to(word: str, names: Iterable[str], n: int = 1) -> List[str]:
    """The names (at most ``n``) a "did you mean" offers for ``word``, the closest first: one
    that differs from it only in case before any other, and case counts for nothing in the
    rest (difflib alone finds "V" and "v" nothing alike, and offered nothing for --queue V
    beside a queue v); of names alike but for case (queues ``q`` and ``Q``), the one nearest
    as typed first (``Q2`` means ``Q``, whatever the config's order). The one place every
    did-you-mean finds its names."""
    by_folded: Dict[str, List[str]] = {}
    for name in names:
        by_folded.setdefault(name.casefold(), []).append(name)
    folded = word.casefold()
    near = [folded] if folded in by_folded else []
    near += difflib.get_close_matches(folded, list(by_folded), n=n)

    def unlike(name: str) -> float:
        return -difflib.SequenceMatcher(None, word, name).ratio()
    return list(dict.fromkeys(name for f in near for name in sorted(by_folded[f], key=unlike)
                              if name != word))[:n]


def local_time(t: float, to_minute: bool = False) -> str:
    """``t`` as every time of day fractui prints in text says it: local time with its offset
    from UTC (``2026-12-07 10:01:02 +0100``). What is printed is pasted and forwarded across
    zones, and a bare "10:01:02" is another time in each (``--json`` keeps seconds since the
    epoch). ``to_minute``: a time on a whole minute without its seconds (a report's range,
    mostly given to the minute). A time no date here can hold (beyond time_t, NaN: a store
    written by hand, never by fractui) is said as its seconds, ``1e+300 s since 1970-01-01``,
    where it failed the verb as a bug in fractui."""
    try:
        return time.strftime("%Y-%m-%d %H:%M" + (
            "" if to_minute and int(t) % 60 == 0 else ":%S") + " %z", time.localtime(t))
    except (OverflowError, OSError, ValueError):
        return "%g s since 1970-01-01" % t


def gib(mib: int) -> float:
    """MiB as GiB to a tenth, as the words about a size give it."""
    return round(mib / 1024, 1)


def quoted(text: str, most: int = QUOTED_MOST) -> str:
    """A word someone gave (an argument, a path, a config value), as a message quotes it: in
    quotes with its escapes, so a terminal is shown no control character and a line break
    stays one word; a byte that was not UTF-8 as the byte, ``\\xff``, as the user would know
    it (Python's own repr says ``\\udcff``); a word longer than ``most`` cut, saying its
    length (a 100,000-character argument is not said back whole)."""
    cut = len(text) > most
    shown = _REPR_BYTE.sub(_byte, repr(text[:most] if cut else text))
    return "%s…%s (%s)" % (shown[:-1], shown[-1], count(len(text), "character")) if cut else shown


def as_typed(word: str, most: int = QUOTED_MOST) -> str:
    """A word named back bare, as typed, where a terminal shows it so (printable, and no
    longer than ``most``); else ``quoted``."""
    return word if word.isprintable() and len(word) <= most else quoted(word, most)


def _byte(escape: "re.Match[str]") -> str:
    return "\\x" + escape.group(2) if escape.group(2) else escape.group(0)


def duration(seconds: Optional[float]) -> str:
    """ "42s", "3m05s", "2h14m": short, for a narrow column."""
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    if s < 60:
        return "%ds" % s
    if s < 3600:
        return "%dm%02ds" % (s // 60, s % 60)
    return "%dh%02dm" % (s // 3600, s % 3600 // 60)


def failing_passes(trouble: str, whose: str = "the scheduler's") -> str:
    """What ``jobs`` and the TUI's header say while the scheduler's passes fail (the header
    after the scheduler's name, so ``whose`` is "its")."""
    return "%s passes fail: %s; nothing new is placed until one goes through " \
           "(the scheduler's log has the rest)" % (whose, trouble)


NO_SCHEDULER = ("no scheduler is running for this store (none holds its lease): nothing is "
                "placed, launched or stopped until one runs (fractui scheduler, an admin's)")
"""What ``jobs`` and ``submit`` say while no one carries decisions out: a pending job would
otherwise wait with no why at all (the TUI's header says "scheduler: none")."""


def exited(code: int, last_line: Optional[str]) -> str:
    """How a job that exited with ``code`` ended: "exited 1", and where it failed, the last
    line of its output its agent gave, as an agent's words are shown (remote_agent/jobs/
    last_line.py): "exited 1: RuntimeError: CUDA out of memory". An older agent gives none."""
    said = shown(last_line) if code and last_line else ""
    return "exited %d: %s" % (code, said) if said else "exited %d" % code


def why(job: Job, last_line: Optional[str] = None) -> str:
    """Why a queued job is where it is: how it ended (the exit code, the watchdog's or the
    agent's words, who cancelled it), or why it waits or stops; "" while it simply runs.
    ``last_line``: the failed job's kept last line (intents.last_lines), given only to a
    reader who may read its output: "exited 1: ..." in place of the store's "exited 1"."""
    code = job.exit_code
    if code is not None and job.reason in (None, exited(code, None)):
        return exited(code, last_line)
    return job.reason or ""


def printable(text: str) -> str:
    """``text`` with each character a terminal would not show as written (a line break, an
    escape) a "?": for words shown or sent where only printable ones are taken (an agent
    refuses any other in a name or a stop's reason)."""
    return "".join(c if c.isprintable() else "?" for c in text)


def shell_line(words: Sequence[str]) -> str:
    """``words`` as one command line a shell reads back to the same words, to be pasted: each
    quoted as ``shlex.join`` does, but one holding a character a terminal would act on or not
    show (a line break, an escape, a bidi override) in ANSI-C quotes, ``$'a\\nb'`` (bash, zsh
    and ksh read them; POSIX since 2024), so the line shown is the command it runs, on one
    line, and a terminal is given no escape sequence of someone else's."""
    return " ".join(shlex.quote(w) if w.isprintable() else _ansi_c(w) for w in words)


def _ansi_c(word: str) -> str:
    """``word`` in ``$'…'``: what is not printable as the bytes the job is given for it, each
    ``\\xHH`` (a stray byte, os.fsdecode's lone surrogate, as that byte). Never ``\\x85``
    for U+0085, which bash reads as the byte 0x85, not the character; nor ``\\u0085``,
    which it leaves as written outside a UTF-8 locale."""
    out = []
    for c in word:
        if c in "\\'":
            out.append("\\" + c)
        elif c.isprintable():
            out.append(c)
        else:
            out.extend("\\x%02x" % b for b in c.encode("utf-8", "surrogateescape"))
    return "$'%s'" % "".join(out)


def portion(gpu: float, mig: Optional[str], memory_gib: float, gpus: int) -> str:
    """A GPU portion (a queue's, a job's request) as an admin writes it: "0.25 GPU",
    "3g.40gb", "10 GiB", "2 GPUs"."""
    if mig:
        return mig
    if memory_gib:
        return f"{memory_gib:g} GiB"
    if gpus:
        return count(gpus, "GPU")
    return f"{gpu:g} GPU"
