"""``transport = "local"``: a simulated host run as a subprocess of ours (the demo, tests).

No link and nothing to deploy: this checkout's ``remote_agent`` runs under our own Python."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable, List, Optional, Sequence, Tuple

from fractui.fleet.transport.base import RUN_TIMEOUT_S, Ran, Stream, Transport, run_process
from fractui.fleet.zipapp import AgentArchive
from remote_agent.daemon.trust import python_module


class LocalTransport(Transport):

    @property
    def state_dir(self) -> str:
        return os.path.expanduser(self.cfg.state_dir)

    @property
    def python(self) -> str:
        return sys.executable

    def run(self, words: Sequence[str], stdin: bytes = b"",
            timeout_s: float = RUN_TIMEOUT_S) -> Ran:
        return run_process(words, stdin, timeout_s)

    def agent_command(self, archive: Callable[[], AgentArchive]) -> Tuple[List[str],
                                                                          Optional[bool]]:
        return python_module("remote_agent"), None

    def start(self, words: Sequence[str]) -> Stream:
        return process_stream(words)


def process_stream(argv: Sequence[str], start_new_session: bool = False) -> Stream:
    """A local process as the agent's stream; closing it closes its stdin (the bridge ends
    on that) and kills it if it has not ended within 10 s."""
    proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=start_new_session)

    def write(data: bytes) -> None:
        proc.stdin.write(data)
        proc.stdin.flush()

    def close() -> None:
        if proc.stdin and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except OSError:  # it is gone already: the end we wanted
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    return Stream(proc.stdout, write, proc.stderr, close, proc)
