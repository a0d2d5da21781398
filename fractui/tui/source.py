"""Where the screen's data comes from: the live fleet and store, or a frozen fleet for tests.

Host updates arrive on the fleet's worker threads. The source copies each one there and keeps
only the latest per host; the first change after the screen took its updates wakes the screen
once (a thread-safe ``post_message``), however many follow before it looks. So a busy fleet of
1,000 GPUs costs the UI one wake-up per frame at most, and no widget is touched off its thread.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Callable, Optional

from fractui.config import Config
from fractui.fleet.fleet import Fleet
from fractui.fleet.host import HostStatus
from fractui.store.base import Store
from fractui.store.model import ACTIVE
from fractui.tui.model import StoreView


class Source:
    """The frozen source: given statuses and store jobs, unchanging (snapshot tests, the
    benchmark). The live one below changes them as the fleet reports."""

    note: Optional[str] = None
    """A line for the header (the demo says what is simulated)."""

    def __init__(self, statuses: list[HostStatus], store: Optional[StoreView] = None,
                 simulated: Optional[dict[str, frozenset[str]]] = None) -> None:
        self._lock = threading.Lock()
        self._latest = {s.name: s for s in statuses}
        self._names = [s.name for s in statuses]
        self._store = store
        self._simulated = simulated or {}
        self._wake: Optional[Callable[[], None]] = None
        self._woken = False

    def hosts(self) -> list[str]:
        return list(self._names)

    def attach(self, wake: Callable[[], None]) -> None:
        """From now on ``wake`` is called (from any thread) when hosts have news."""
        with self._lock:
            self._wake = wake
            self._woken = bool(self._latest)
        if self._latest:
            wake()

    def take(self) -> list[HostStatus]:
        """The hosts that changed since the last take (the UI thread calls this)."""
        with self._lock:
            changed, self._latest = list(self._latest.values()), {}
            self._woken = False
        return changed

    def changed(self, status: HostStatus) -> None:
        """A host's news, on the thread it came on: copied there (a plain-dict copy is atomic
        under the GIL, so a job update racing it cannot break it)."""
        copy = dataclasses.replace(status, jobs=dict(status.jobs))
        with self._lock:
            self._latest[status.name] = copy
            wake = self._wake if not self._woken else None
            self._woken = self._woken or wake is not None
        if wake is not None:
            wake()

    def read_store(self) -> Optional[StoreView]:
        """The store's active jobs; called in a worker thread, never on the UI thread."""
        return self._store

    def simulated(self, host: str) -> frozenset[str]:
        """Agent pids (as strings) of the demo's simulated load on ``host``."""
        return self._simulated.get(host, frozenset())


class LiveSource(Source):
    """The configured fleet (its sessions started here) and the store, if there is one."""

    def __init__(self, config: Config, store: Optional[Store]) -> None:
        super().__init__([])
        self.store = store
        self.fleet = Fleet(config, on_change=self.changed)
        self._names = [h.name for h in config.hosts]
        self._latest = {s.name: dataclasses.replace(s) for s in self.fleet.statuses()}

    def start(self) -> None:
        self.fleet.start()

    def stop(self) -> None:
        self.fleet.stop()

    def read_store(self) -> Optional[StoreView]:
        if self.store is None:
            return None
        return StoreView(self.store.uid, tuple(self.store.jobs(states=ACTIVE)))

    def set_simulated(self, host: str, pids: frozenset[str]) -> None:
        """The demo's simulated load changed on ``host`` (its pids, as strings)."""
        self._simulated = {**self._simulated, host: pids}
