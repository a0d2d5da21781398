"""Critical XID errors of a host's GPUs, kept as they come.

NVML delivers an XID event only to an event set that was registered before it happened and
that waits for it, so a thread of the daemon's waits on one set for every GPU, and the snapshot
reads the newest few of each GPU from here. The agent shuts NVML down for a GPU reset (a MIG mode
change; see remote_agent.gpu.session): the set is freed first and made anew, every GPU
registered, once NVML started again. The daemon keeps them in its state dir too
(remote_agent.daemon.kept), so a restarted one still says a GPU's recent critical XID. They are
a GPU's by its UUID: an index names another GPU once one falls off the bus.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Deque, Dict, List, Optional

from remote_agent.daemon.kept import BY_GPU_INDEX, keep, read_kept
from remote_agent.failing import Failures
from remote_agent.gpu.backend import GpuBackend, NvmlCallError, XidEvent

log = logging.getLogger("remote_agent.xid")

KEPT = 16  # the newest XID events kept per GPU
WAIT_MS = 500  # one wait's longest time, so the thread sees the daemon stop
RETRY_S = 5.0  # after a failed wait, before the next
WHAT = "XID events"
Events = Dict[str, Deque[Dict[str, Any]]]  # by GPU UUID


def _optional_int(value: Any) -> Optional[int]:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError("an instance id is an integer or null, not %r" % (value,))
    return value


def _events(kept: Dict[str, List[Dict[str, Any]]]) -> Events:
    """The events a daemon before this one kept (ValueError, KeyError or TypeError if they
    are not events)."""
    return {uuid: collections.deque(
        ({"time": float(e["time"]), "xid": int(e["xid"]), "gi_id": _optional_int(e["gi_id"]),
          "ci_id": _optional_int(e["ci_id"])} for e in events), maxlen=KEPT)
        for uuid, events in kept.items()}


class XidWatcher:
    def __init__(self, backend: GpuBackend):
        self.backend = backend
        self._lock = threading.Lock()
        self._events: Events = {}
        self._path: Optional[str] = None  # where they are kept for the next daemon
        self._refused: Dict[int, str] = {}
        self._uuids: Dict[int, str] = {}  # of the GPUs in the set, by their index in its session
        self._set: Any = None  # the event set the thread waits on, while it runs
        self._generation = 0  # of the NVML session the set was made in
        self._set_lock = threading.Lock()  # the set is made, read and freed one at a time
        self._running = False
        self.problem: Optional[str] = "XID events are not watched yet"
        self.failures = Failures(log)  # a wait failing each RETRY_S is said once
        backend.on_restart(self._free, self._renew)

    def keep_in(self, path: str) -> None:
        """Keep the events at ``path`` from now on, starting with those a daemon before this
        one kept there in this boot."""
        kept = read_kept(path, WHAT, _events, "a GPU's XID errors from before the agent's "
                         "restart are not said", BY_GPU_INDEX)
        with self._lock:
            self._path = path
            self._events.update(kept or {})

    def recent(self, uuid: str) -> List[Dict[str, Any]]:
        """The newest XID events of a GPU, oldest first."""
        with self._lock:
            return list(self._events.get(uuid, ()))

    def note(self, index: int) -> Optional[str]:
        """Why this GPU's XID events are not watched, if they are not."""
        with self._lock:
            if self.problem:
                return self.problem
            if index in self._refused:
                return "XID events are not watched on this GPU: " + self._refused[index]
            return None

    def run(self, stopping: threading.Event) -> None:
        """Wait for XID events until ``stopping`` is set (the daemon's watcher thread)."""
        with self._set_lock:
            self._running = True
        if not self._make():  # said as the problem; no thread waits, so none is made later
            with self._set_lock:
                self._running = False
            return
        try:
            while not stopping.is_set():
                with self._set_lock:
                    events, generation = self._set, self._generation
                if events is None:  # freed for a reset and NVML refused a new one: tried again
                    if not self._make():
                        stopping.wait(RETRY_S)
                    continue
                try:
                    event = self.backend.wait_xid(events, WAIT_MS, generation)
                except NvmlCallError as err:
                    self.failures.failed("waiting", "waiting for XID events failed: %s; tried "
                                         "again each %.0f s" % (err, RETRY_S))
                    stopping.wait(RETRY_S)
                    continue
                self.failures.worked("waiting", "waiting for XID events works again")
                if event is not None:
                    self._record(event)
        finally:
            with self._set_lock:
                self._running = False
            self._free()

    def _record(self, event: XidEvent) -> None:
        with self._lock:
            uuid = self._uuids[event.index]  # (only a GPU registered in the set has events)
            log.warning("GPU %d (%s): XID %d", event.index, uuid, event.xid)
            self._events.setdefault(uuid, collections.deque(maxlen=KEPT)).append(
                {"time": time.time(), "xid": event.xid, "gi_id": event.gi_id,
                 "ci_id": event.ci_id})
            if self._path is not None:  # not fsync'd: a crash that loses it is a reboot
                keep(self._path, WHAT, {u: list(e) for u, e in self._events.items()},
                     durable=False)

    def _make(self) -> bool:
        """The event set of the NVML session now, every GPU registered, unless it is made
        already; False (said as the problem) when NVML refused it. NVML is started first where
        a reset left it down (which makes the set, through ``_renew``), and the session is
        taken before the set's lock, everywhere: a reset waiting for the session must not find
        the lock held by a call waiting for it."""
        with self.backend.held(), self._set_lock:
            if not self._running:
                return False
            if self._set is not None and self._generation == self.backend.session.generation:
                return True
            try:
                events, refused, uuids = self.backend.xid_events(
                    list(range(self.backend.count())))
            except NvmlCallError as err:
                with self._lock:
                    self.problem = "XID events cannot be watched: %s" % err
                self.failures.failed("making", self.problem)
                return False
            self._set, self._generation = events, self.backend.session.generation
            with self._lock:  # before the set is waited on: its events are of these GPUs
                self.problem, self._refused, self._uuids = None, refused, uuids
        self.failures.worked("making", "XID events are watched again")
        return True

    def _renew(self) -> None:
        """NVML started again after a reset: the set made anew (the old one went with it)."""
        self._make()

    def _free(self) -> None:
        """The set freed (NVML is about to shut down, or the thread ends)."""
        with self.backend.session.shared(), self._set_lock:
            events, self._set = self._set, None
            if events is None:
                return
            try:  # what came while a reset waited for the session is kept first
                for event in iter(lambda: self.backend.wait_xid(events, 0), None):
                    self._record(event)
            except NvmlCallError as err:
                log.warning("reading the XID events left in the set failed: %s", err)
            try:
                self.backend.free_events(events)
            except NvmlCallError as err:
                log.warning("freeing the XID event set failed: %s", err)
        with self._lock:
            if self._running:
                self.problem = "XID events are not watched while NVML restarts"
