"""The words of a command line that verbs read further than argparse does: job references,
GPU references, numbers with bounds, ``--env`` pairs, launch keys. Each bad word is a
UsageError (exit 2) that quotes it."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import posixpath
import re
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence

from fractui.config import image_problem, profile_problem, suggest
from fractui.outcome import UsageError
from fractui.words import as_typed, printable, quoted
from remote_agent.jobs.runtime.oci import env_file_problem
from remote_agent.mig.layout import VERSION_DIGITS
from remote_agent.rpc.jsonrpc import (MAX_ARG, MAX_ID, MAX_ITEMS, MAX_LINE_BYTES, MAX_TEXT,
                                      text_problem)

if TYPE_CHECKING:  # (the store's modules are not loaded for a command line's words)
    from fractui.store.access import Team
    from fractui.store.base import Store

_NUMBER = re.compile(r"-?[0-9]{1,30}")  # ASCII digits only: int() also takes "١" and "_"
_DIGITS = re.compile(r"-?[0-9]+")  # a number of any length: one too long is still no name
MAX_JOB_NUMBER = 2 ** 63 - 1  # SQLite's largest integer
MAX_GPU_INDEX = 65535
MAX_REF = 256  # characters of a GPU uuid or an agent job id
JOBS_LIMIT = 200  # jobs --all: the newest this many, unless --limit says


def check_words(words: Sequence[str]) -> None:
    """Every word must be text that can travel: no NUL (no C string holds one) and no bytes
    that are not UTF-8 (Python hands them over as lone surrogates, which the store, the
    protocol and the terminal cannot carry)."""
    for n, word in enumerate(words, start=1):
        if "\x00" in word:
            raise UsageError("argument %d contains a NUL character: %s" % (n, quoted(word)))
        try:
            word.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(_not_utf8(n, word)) from None


def _not_utf8(n: int, word: str) -> str:
    """Why argument ``n`` is refused: bytes that are not UTF-8, or UTF-8 that the locale's
    encoding could not read (ASCII, where PYTHONUTF8=0 keeps Python from its own UTF-8 under
    the C locale): that word is as the user typed it, and the locale is what to change."""
    encoding = sys.getfilesystemencoding()
    try:
        os.fsencode(word).decode("utf-8")
    except UnicodeError:
        return "argument %d is not UTF-8 text: %s" % (n, quoted(word))
    return ("argument %d is UTF-8 text that this locale's encoding, %s, cannot read: %s (run "
            "fractui in a UTF-8 locale, e.g. LC_ALL=C.UTF-8, or without PYTHONUTF8=0)" % (
                n, encoding, quoted(word)))


def bounded(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: a whole number from lo to hi (argparse turns the error into exit 2)."""
    def parse(text: str) -> int:
        if not _NUMBER.fullmatch(text) or not lo <= int(text) <= hi:
            raise argparse.ArgumentTypeError("must be a whole number from %d to %d, got %s"
                                             % (lo, hi, quoted(text)))
        return int(text)

    parse.__name__ = "number"
    return parse


_AGO = re.compile(r"([0-9]{1,7})(s|m|h|d|w)")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Moment:
    """A time a command line names: ``ago_s`` before now, or ``at`` (seconds since the
    epoch)."""

    ago_s: float | None = None
    at: float | None = None

    def resolve(self, now: float) -> float:
        return now - self.ago_s if self.ago_s is not None else float(self.at or 0.0)


def moment(text: str) -> Moment:
    """An argparse type: ``now``, a time ago (``90s``, ``30m``, ``24h``, ``7d``, ``2w``), or a
    local date and time (``2026-12-01``, ``2026-12-01T14:00``)."""
    if text == "now":
        return Moment(ago_s=0.0)
    ago = _AGO.fullmatch(text)
    if ago:
        seconds = float(int(ago.group(1)) * _UNIT_S[ago.group(2)])
        if seconds > time.time():
            raise argparse.ArgumentTypeError(_BEFORE_EPOCH % quoted(text))
        return Moment(ago_s=seconds)
    try:  # "Z" for UTC, as --help shows it: Python 3.10's fromisoformat takes only "+00:00"
        when = datetime.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z")
                                               else text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "must be now, a time ago (a whole number then s, m, h, d or w: 90s, 30m, 24h, 7d, "
            "2w) or a date and time (2026-12-01, 2026-12-01T14:00), got %s" % quoted(text)
        ) from None
    if when.year < 1970:  # (before the epoch some platforms cannot convert at all)
        raise argparse.ArgumentTypeError(_BEFORE_EPOCH % quoted(text))
    try:
        at = when.timestamp()
        datetime.datetime.fromtimestamp(at)  # said back in local time (a report's heading,
        # its --csv): a time given with an offset may be in a year local time cannot hold
    except (OverflowError, OSError, ValueError) as err:
        raise argparse.ArgumentTypeError("%s is not a time this machine can use: %s"
                                         % (quoted(text), err)) from None
    if at < 0:
        raise argparse.ArgumentTypeError(_BEFORE_EPOCH % quoted(text))
    return Moment(at=at)


_BEFORE_EPOCH = "%s is before 1970-01-01, earlier than any time a store keeps"


def name_of(what: str, shown: str) -> Callable[[str], str]:
    """An argparse type: the name of a ``what`` (a user, a team) as ``shown`` says where one is
    seen; never empty, which would read as no filter at all, nor holding a character that is
    not printable, which no user or team name has (and a terminal would act on in the
    heading that names it), nor longer than MAX_REF (which the heading would say whole)."""
    def parse(text: str) -> str:
        if not text or not text.isprintable() or len(text) > MAX_REF:
            raise argparse.ArgumentTypeError("takes a %s's name, as %s, not %s"
                                             % (what, shown, quoted(text)))
        return text

    parse.__name__ = what
    return parse


user_name = name_of("user", "jobs shows it under USER")
team_name = name_of("team", "the config's [[teams]] name it")


def known_user(name: str, store: "Store", teams: Iterable["Team"]) -> None:
    """UsageError (exit 2) for a ``--user`` nobody of that name is known by in ``store``: who
    submitted a job it keeps, a member the config's [[teams]] list or the store holds in a team
    (Store.members: PostgreSQL's roles), or the caller (the store's word on who). A typo is said, with the close name, rather than answered as an
    empty list, which reads as "no jobs"; a known user with no jobs is a plain empty answer.
    Asked only where the filter found nothing, so a list that found some reads no more."""
    members = store.members()  # (PostgreSQL's roles: the config's members are not its word)
    known = (store.submitters() | {m for t in teams for m in t.members} |
             (members or frozenset()) | {store.identity().user})
    if name not in known:
        raise UsageError("--user %s: no user of that name is known in this store (none "
                         "submitted a job it keeps, and %s)%s" % (
                             quoted(name), "no [[teams]] lists them" if members is None else
                             "no role of the store's teams or admins is theirs",
                             suggest(name, sorted(known), shown=20)))


def scheduler_name(text: str) -> str:
    """An argparse type: a scheduler's name, which the lease, the audit, ``jobs`` and the TUI's
    header show: printable, so none of them is given a line break or an escape to show."""
    if not text.strip() or len(text) > MAX_REF or not text.isprintable():
        raise argparse.ArgumentTypeError("a scheduler's name is 1 to %d printable characters, "
                                         "not only blanks, got %s" % (MAX_REF, quoted(text)))
    return text


def job_number(text: str) -> int:
    """A queued job's number, as ``fractui jobs`` shows it."""
    if "/" in text:  # HOST/JOB: a job this verb does not take; say which verbs do
        raise UsageError("a queued job is named by its number (see fractui jobs), not %s: "
                         "that names a job launched directly on a host, which fractui logs "
                         "shows and fractui stop stops (an admin's)" % quoted(text))
    if not _NUMBER.fullmatch(text) or not 1 <= int(text) <= MAX_JOB_NUMBER:
        raise UsageError("a queued job is named by its number (see fractui jobs), not %s; "
                         "jobs launched directly on a host are HOST/JOB" % quoted(text))
    return int(text)


def is_job_number(text: str) -> bool:
    return bool(_NUMBER.fullmatch(text)) and not text.startswith("-")


def split_job(ref: str) -> List[str]:
    """HOST/JOB: a job launched directly on a host."""
    host, sep, job = ref.partition("/")
    if not sep or not host or not job or len(job) > MAX_REF or not job.isprintable():
        raise UsageError("a job is named HOST/JOB, e.g. gpu-a/j12, not %s" % quoted(ref))
    return [host, job]


def gpu_ref(text: str) -> Any:
    """A GPU: its index, or its uuid as the agent reports it."""
    if _DIGITS.fullmatch(text):  # (too many digits for _NUMBER: no uuid either)
        if not _NUMBER.fullmatch(text) or not 0 <= int(text) <= MAX_GPU_INDEX:
            raise UsageError("GPU index %s is out of range (0 to %d)" % (as_typed(text),
                                                                         MAX_GPU_INDEX))
        return int(text)
    if not text or len(text) > MAX_REF or not text.isprintable() or text != text.strip():
        raise UsageError("a GPU is named by its index or uuid, not %s" % quoted(text))
    return text


def gpu_index(text: str) -> int:
    """A GPU named by its index only (a placement in the store)."""
    ref = gpu_ref(text)
    if not isinstance(ref, int):
        raise UsageError("GPU is an index here, not %s" % quoted(text))
    return ref


def instance_uuid(text: str) -> str:
    """An argparse type: a MIG instance as the agent names it (its uuid, as ``status --json``
    shows it): one printable word."""
    if not text or len(text) > MAX_REF or not text.isprintable() or text.split() != [text]:
        raise argparse.ArgumentTypeError("a MIG instance is named by its uuid (fractui status "
                                         "--json shows them), not %s" % quoted(text))
    return text


def mig_profile(text: str) -> str:
    """An argparse type: a MIG profile some GPU model has, e.g. 3g.40gb."""
    problem = profile_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


_LAYOUT_VERSION = re.compile("[0-9a-f]{%d}" % VERSION_DIGITS)


def layout_version(text: str) -> str:
    """An argparse type: a MIG GPU's layout version as its agent derives it (``status --json``
    shows each GPU's): any other word matches no layout, so the launch would be refused at
    the host and the job sent back to its queue."""
    if not _LAYOUT_VERSION.fullmatch(text):
        raise argparse.ArgumentTypeError(
            "a layout version is %d lowercase hex digits, as fractui status --json shows a MIG "
            "GPU's layout_version, not %s" % (VERSION_DIGITS, quoted(text)))
    return text


def container_image(text: str) -> str:
    """An argparse type: a container image reference (config.image_problem)."""
    problem = image_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


REQUEST_ROOM = 64 * 1024  # of a launch's request line, for all but the command and variables
STORE_VARIABLES = 1  # the scheduler's own variable beside a job's (FRACTUI_STORE_JOB)


def default_name(argv: Sequence[str]) -> str:
    """A job's name where none is given: its program's file name, each character a terminal
    would not show as written (a line break, an escape) a "?", as --name must be printable;
    the command itself runs as given."""
    return printable(argv[0].rsplit("/", 1)[-1])


def job_problem(argv: Sequence[str], env: Dict[str, str], name: Optional[str] = None,
                cwd: Optional[str] = None, key: Optional[str] = None,
                added: int = 0, image: Optional[str] = None) -> Optional[str]:
    """Why a host's agent would refuse to launch this job, or None: what submit and launch
    check before anything is queued or sent (the agent's own bounds, jsonrpc.Params), so that
    a job that could never start is refused as it is asked for, not failed when it is tried.
    ``name``: as it will be sent (submit's default, the program's name, included); ``added``:
    variables the launch adds to ``env``; ``image``: the container it runs in, whose variables
    go through an env file (env_file_problem). An empty program runs nothing, and an empty
    key is no key: ``--key "$K"`` with K unset would make a new job at each retry. The name,
    the cwd, the key and each variable's name are printable (no control or invisible
    character): they are shown and said back as written, where a line break or an escape
    would read as something else; the command's words and the variables' values may hold
    anything, and reach the job as given."""
    if argv and not argv[0]:
        return "the program to run after -- is an empty word"
    if key == "":
        return "--key is an empty word: give the key, or leave --key out"
    for flag, word, why in [
            ("--name", name, "a job's name is shown in jobs, the TUI and messages as written"),
            ("--cwd", cwd, "the directory is shown with the job and in its host's errors as "
                           "written"),
            ("--key", key, "a key is said back to be typed again, so it is printable")] + [
            ("--env", k, "a variable's name is shown with the job as written (its value may "
                         "hold anything)") for k in env]:
        if word is not None and not word.isprintable():
            return "%s %s holds a character that is not printable (a control or invisible " \
                   "character): %s" % (flag, quoted(word), why)
    words = [("the name", name, MAX_TEXT), ("--cwd", cwd, MAX_TEXT), ("--key", key, MAX_ID)] + [
        ("word %d of the command" % n, word, MAX_ARG) for n, word in enumerate(argv, 1)] + [
        ("--env %s's name" % k[:40], k, MAX_TEXT) for k in env] + [
        ("--env %s" % k[:40], v, MAX_ARG) for k, v in env.items()]
    for what, text, most in words:
        problem = text_problem(text, most) if text is not None else None
        if problem:
            return "%s must be %s" % (what, problem)
    boxed = env_file_problem(env) if image is not None else None
    if boxed:
        return "--env %s %s" % boxed
    if cwd is not None and not posixpath.isabs(cwd):
        return "--cwd must be an absolute path (a directory on the host the job runs on), " \
               "not %s" % quoted(cwd)
    for what, count, most in (("the command", len(argv), MAX_ITEMS),
                              ("--env", len(env), MAX_ITEMS - added)):
        if count > most:
            return "%s has %d words; a host takes at most %d" % (what, count, most)
    size = len(json.dumps([list(argv), env]))  # as the request line will carry them
    if size > MAX_LINE_BYTES - REQUEST_ROOM:
        return "the command and its variables are %d bytes; a host takes at most %d in one " \
               "request" % (size, MAX_LINE_BYTES - REQUEST_ROOM)
    return None


def parse_env(pairs: List[str]) -> Dict[str, str]:
    """The ``--env NAME=VALUE`` words, in order, as a job's variables. The value is everything
    after the first '=', kept as given (no shell ever reads it); a name is never empty, and
    each is given once."""
    env: Dict[str, str] = {}
    first: Dict[str, int] = {}
    for n, pair in enumerate(pairs, start=1):
        name, sep, value = pair.partition("=")
        where = "--env #%d (%s)" % (n, quoted(pair))
        if not sep:
            raise UsageError("%s takes NAME=VALUE: there is no '='" % where)
        if not name:
            raise UsageError("%s takes NAME=VALUE: the name before '=' is empty" % where)
        if name in env:
            raise UsageError("%s gives %s again (--env #%d gave it): give each variable once"
                             % (where, name, first[name]))
        env[name], first[name] = value, n
    return env

