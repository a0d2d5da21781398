"""The fleet: every configured host kept connected in its own worker thread.

Nothing here blocks a caller on the network for longer than the call it makes; fan-out calls go
to all hosts at once, so refreshing 32 hosts costs about what one does.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Sequence

from fractui.config import Config, ConfigError
from fractui.fleet.host import HostSession, HostStatus
from fractui.fleet.zipapp import AgentArchive, build_agent_archive


class Fleet:
    def __init__(self, config: Config, reconnect_max_s: float = 30.0,
                 on_change: Optional[Callable[[HostStatus], None]] = None):
        self.config = config
        self._archive: Optional[AgentArchive] = None
        self._archive_lock = threading.Lock()
        self.sessions: Dict[str, HostSession] = {
            h.name: HostSession(h, config.ssh, self.archive, on_change, reconnect_max_s)
            for h in config.hosts}
        # one thread per host, kept: a fan-out must not pay for starting threads each time
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.sessions)),
                                        thread_name_prefix="fan-out")

    def archive(self) -> AgentArchive:
        """The agent zipapp, built once per fleet, when the first host that uploads it (SSH, exec)
        needs it."""
        with self._archive_lock:
            if self._archive is None:
                self._archive = build_agent_archive()
            return self._archive

    def start(self) -> "Fleet":
        for session in self.sessions.values():
            session.start()
        return self

    def stop(self) -> None:
        try:
            list(self._pool.map(lambda s: s.stop(), self.sessions.values()))
        finally:  # a second Ctrl-C in the map must not leave a worker that exit then waits for
            self._pool.shutdown()

    def __enter__(self) -> "Fleet":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def session(self, name: str) -> HostSession:
        try:
            return self.sessions[name]
        except KeyError:
            raise ConfigError(self.config.path, None, "no host %r in the config (hosts: %s)" % (
                name, ", ".join(self.sessions) or "none")) from None

    def wait_settled(self, timeout_s: float) -> None:
        """Until every host has tried to connect once (or the time is up)."""
        deadline = time.monotonic() + timeout_s
        for session in self.sessions.values():
            session.settled.wait(max(0.0, deadline - time.monotonic()))

    def statuses(self) -> List[HostStatus]:
        return [s.status for s in self.sessions.values()]

    def fan_out(self, method: str, params: Optional[Dict[str, Any]] = None,
                timeout_s: float = 60.0) -> Dict[str, Any]:
        """Call every host at once; each answer, or the exception that host gave."""
        def one(session: HostSession) -> Any:
            try:
                return session.call(method, params, timeout_s)
            except Exception as err:  # reported per host, never as one failure for all
                return err

        sessions = list(self.sessions.values())
        return dict(zip([s.cfg.name for s in sessions], self._pool.map(one, sessions)))


def open_fleet(config: Config, names: Optional[Sequence[str]] = None) -> Fleet:
    """A started fleet of the named hosts (all when none are named; a name not in the config
    is the config's error), each of which has connected or failed once."""
    if names:
        config = replace(config, hosts=tuple(config.host(n) for n in names))
    fleet = Fleet(config).start()
    fleet.wait_settled(config.ssh.settle_s)
    return fleet
