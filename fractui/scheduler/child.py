"""The scheduler as a child process of a TUI or the demo: ``fractui scheduler`` on the same
config file and store, so no pass ever runs on the interpreter that draws the screen.

It ends with its parent, however the parent ends: its stdin is a pipe only the parent holds,
and it stops (handing the lease over) when that pipe closes — on ``q``, on SIGHUP or SIGTERM,
and on a kill -9 of the parent too, since the kernel closes a dead process's pipes. It runs in
a session of its own, so the terminal's signals reach only the parent, which then stops it.
"""

from __future__ import annotations

import os
import subprocess
from typing import IO, Optional

import fractui
from fractui.state_files import open_append
from remote_agent.daemon.trust import python_module

STOP_S = 30.0  # a clean stop waits for the calls in flight (each within a third of the lease)


class ChildScheduler:
    """One ``fractui scheduler --until-stdin-closes`` process; its output goes to ``log``."""

    def __init__(self, config_path: str, name: str, log: str):
        self.config_path = config_path
        self.name = name
        """Its holder name in the lease and the audit."""
        self.log = log
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self._out: Optional[IO[bytes]] = None

    def open_log(self) -> None:
        """Opens its log, the admin's alone as the SSH debug log beside it (refused where
        another user could reach it): before it starts, so a refusal comes before anything
        is started (``start`` opens it where this was not called)."""
        if self._out is None:
            self._out = os.fdopen(open_append(self.log, "TUI's scheduler log"), "ab")

    def start(self) -> "ChildScheduler":
        code_root = os.path.dirname(os.path.dirname(os.path.abspath(fractui.__file__)))
        path = os.environ.get("PYTHONPATH")
        env = dict(os.environ, PYTHONPATH=code_root + (os.pathsep + path if path else ""))
        self.open_log()
        self.proc = subprocess.Popen(
            python_module("fractui") + ["--config", self.config_path, "scheduler", "--name",
                                        self.name, "--until-stdin-closes"],
            stdin=subprocess.PIPE, stdout=self._out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
        return self

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    def exit_code(self) -> Optional[int]:
        """None while it runs (or before it started); its exit code once it ended."""
        return self.proc.poll() if self.proc is not None else None

    def stop(self) -> None:
        """Closes its pipe (it hands the lease over and ends), waits for it, and kills it
        only if it does not end within STOP_S."""
        proc = self.proc
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(STOP_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._out is not None:  # (its log, opened even where it never started)
            self._out.close()
