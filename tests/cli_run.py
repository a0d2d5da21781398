"""``fractui`` run as the user runs it — the real ``main`` in this process, or ``python -m
fractui`` as a subprocess — and what every run must show: an exit code by the rule of
docs/cli.md, and a message, never a traceback."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, List, Sequence, Tuple

from fractui.cli import main
from tests.conftest import REPO

# What must never reach the user: Python's own reports of an error, and our last resort.
NEVER = ("Traceback (most recent call last)", "Exception ignored", "internal error")


def in_process(capfd, argv: Sequence[str]) -> Tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``main(argv)``; stderr is read at the descriptor, so
    what any thread writes there is seen too."""
    code = main(list(argv))
    out, err = capfd.readouterr()
    return code, out, err


def subprocess_run(argv: Sequence[str], env_extra: dict | None = None,
                   timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fractui", *argv], capture_output=True,
                          text=True, cwd=REPO, timeout=timeout, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, **(env_extra or {})))


def fractui_process(argv: Sequence[str],
                    under: Callable[[List[str]], List[str]] = list) -> subprocess.Popen:
    """``python -m fractui`` with ``argv`` started, its stdout and stderr piped as text, for a
    verb the test reads while it runs (``submit --wait``, ``logs -f``); ``under`` makes the
    command line it runs from that one (tests/resolver.py: in a namespace of its own)."""
    return subprocess.Popen(under([sys.executable, "-m", "fractui", *argv]), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


@contextlib.contextmanager
def reaped(process: subprocess.Popen,
           how: signal.Signals = signal.SIGKILL) -> Iterator[subprocess.Popen]:
    """``process`` for the block; after it, where it still runs, sent ``how`` and waited for,
    so that no process a test started outlives it (SIGKILL for one the test meant to see end,
    left by a failure; SIGTERM for a scheduler, which hands its lease over)."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(how)
            process.communicate(timeout=60)


def store_report(capfd: Any, tmp_path: Path, where: str, more: str = "",
                 first: Sequence[str] = ()) -> Callable[..., str]:
    """``fractui report`` run in this process on a config naming the SQLite store at
    ``where`` (and ``more`` of the config): its output for ``first`` and the words given,
    once it exited 0 with nothing of NEVER said."""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n%s' % (where, more))

    def report(*argv: str) -> str:
        code, out, err = in_process(capfd, ["--config", str(config), "report", *first, *argv])
        assert code == 0 and not leaks(err), err
        return out
    return report


def leaks(err: str) -> List[str]:
    """What of NEVER shows in ``err``."""
    return [sign for sign in NEVER if sign in err]


def closed_port() -> int:
    """A loopback port nothing listens on: a host there is offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
