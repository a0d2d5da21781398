"""How a verb ends: the exit codes of docs/cli.md and the exceptions that carry them.

Verbs raise these (or the store's, the fleet's and the config's own errors); ``fractui.cli``
maps every one of them to its code in one place, so no verb picks a code by itself."""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from typing import Any, Iterator

EXIT_FAILED = 1
"""The fleet, an agent or the store refused or failed: a job not in a state the verb can act
on, a host offline, a damaged store, a role that may not do it (fractui.store.access)."""
EXIT_USAGE = 2
"""The command line or the config is wrong: an unknown verb, flag or name, a bad value."""
EXIT_BUG = 70
"""An error fractui does not know (sysexits' EX_SOFTWARE): a bug, reported in one line."""
EXIT_INTERRUPTED = 130
"""Ctrl-C: 128 + SIGINT, as shells report it."""
EXIT_TERMINATED = 143
"""SIGTERM (``timeout``, a batch system's time limit, a CI runner's cancel): 128 + SIGTERM, as
shells report it; the verb ends as Ctrl-C ends it (``Terminated``)."""
EXIT_CLOSED_PIPE = 141
"""stdout was closed by its reader (``fractui jobs | head -1``): 128 + SIGPIPE, what a shell
reports for a program that a closed pipe ended, and nothing is printed about it."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt is, so that what a verb says when
    stopped (``submit --wait``, ``logs -f``: the job goes on, and how to cancel it) is said for
    both; killed by the default action instead, a wait ended without a word."""


@contextlib.contextmanager
def terminated_as_interrupted() -> Iterator[None]:
    """SIGTERM raises Terminated within, as Ctrl-C raises KeyboardInterrupt (around a verb,
    save the scheduler, which handles both itself once it runs); the handler before is put
    back after, for a caller that runs main() in its own process (a test)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # (only the main thread may set a handler; signals arrive there only)
        return

    def terminated(signum: int, frame: Any) -> None:
        raise Terminated()

    before = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


class UsageError(Exception):
    """A command line that cannot be carried out as written (exit 2)."""


class Failed(Exception):
    """The fleet, an agent or the store refused or failed; the message says what (exit 1)."""


def naming(host: str, err: BaseException) -> str:
    """What a host said or how it failed, worded so that it names the host: the agent's own
    words ("no GPU 9 on this host") arrive with the host named already (AgentCallError);
    anything that does not name it gets the host's name in front."""
    text = str(err) or type(err).__name__
    if re.search(r"(?<![\w.-])%s(?![\w.-])" % re.escape(host), text):
        return text
    return "%s: %s" % (host, text)


def gone_words(label: str, host: str, agent_job: str) -> str:
    """A job whose agent refused its key (JOB_KEY_MISMATCH): the host's agent lost it, and
    the id it was known by now names another job there, which is neither shown nor touched."""
    return ("%s is gone from %s's agent (its state dir was likely wiped or lost): %s/%s is "
            "another job now, neither shown nor touched" % (label, host, host, agent_job))
