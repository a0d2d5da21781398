"""Critical XID errors of a host's GPUs, kept as they come.

NVML delivers an XID event only to an event set that was registered before it happened and
that waits for it, so a thread of the daemon's waits on one set for every GPU, and the snapshot
reads the newest few of each GPU from here. A GPU the agent resets (a MIG mode change) is
registered again after the reset: NVML does not document whether a registration outlives one.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Deque, Dict, List, Optional

from remote_agent.gpu.backend import GpuBackend, NvmlCallError

log = logging.getLogger("remote_agent.xid")

KEPT = 16  # the newest XID events kept per GPU
WAIT_MS = 500  # one wait's longest time, so the thread sees the daemon stop
RETRY_S = 5.0  # after a failed wait, before the next


class XidWatcher:
    def __init__(self, backend: GpuBackend):
        self.backend = backend
        self._lock = threading.Lock()
        self._events: Dict[int, Deque[Dict[str, Any]]] = {}
        self._refused: Dict[int, str] = {}
        self._set: Any = None  # the event set the thread waits on, while it runs
        self._set_lock = threading.Lock()  # no registration into a set being freed
        self._renewed: Dict[int, str] = {}  # registering again after a reset failed: why
        self.problem: Optional[str] = "XID events are not watched yet"

    def recent(self, index: int) -> List[Dict[str, Any]]:
        """The newest XID events of a GPU, oldest first."""
        with self._lock:
            return list(self._events.get(index, ()))

    def note(self, index: int) -> Optional[str]:
        """Why this GPU's XID events are not watched, if they are not."""
        with self._lock:
            if self.problem:
                return self.problem
            if index in self._refused:
                return "XID events are not watched on this GPU: " + self._refused[index]
            if index in self._renewed:  # the first registration may have outlived the reset
                return ("XID events may not be watched on this GPU since its reset: registering "
                        "them again failed: " + self._renewed[index])
            return None

    def run(self, stopping: threading.Event) -> None:
        """Wait for XID events until ``stopping`` is set (the daemon's watcher thread)."""
        try:
            events, refused = self.backend.xid_events(list(range(self.backend.count())))
        except NvmlCallError as err:
            with self._lock:
                self.problem = "XID events cannot be watched: %s" % err
            log.warning("%s", self.problem)
            return
        with self._set_lock:
            self._set = events
        with self._lock:
            self.problem, self._refused = None, refused
        try:
            while not stopping.is_set():
                try:
                    event = self.backend.wait_xid(events, WAIT_MS)
                except NvmlCallError as err:
                    log.warning("waiting for XID events failed: %s", err)
                    stopping.wait(RETRY_S)
                    continue
                if event is None:
                    continue
                log.warning("GPU %d: XID %d", event.index, event.xid)
                with self._lock:
                    self._events.setdefault(event.index, collections.deque(maxlen=KEPT)).append(
                        {"time": time.time(), "xid": event.xid, "gi_id": event.gi_id,
                         "ci_id": event.ci_id})
        finally:
            with self._set_lock:  # after a registration under way, before any other
                self._set = None
                try:
                    self.backend.free_events(events)
                except NvmlCallError as err:
                    log.warning("freeing the XID event set failed: %s", err)

    def register_again(self, index: int) -> None:
        """After the agent reset GPU ``index``: its XID events registered again in the set the
        thread waits on. Where the registration outlived the reset this adds nothing (the set
        records each type once per GPU); where it did not, the GPU is watched again. One that
        fails is said as the GPU's note (the snapshot's ``xid_note``)."""
        with self._set_lock:  # the set cannot be freed meanwhile
            if self._set is None:
                return  # not watching (yet, or NVML refused): nothing registered to renew
            try:
                self.backend.register_xid(self._set, index)
            except NvmlCallError as err:
                with self._lock:
                    self._renewed[index] = str(err)
                log.warning("GPU %d: XID events not registered again after its reset: %s",
                            index, err)
                return
        with self._lock:
            self._refused.pop(index, None)
            self._renewed.pop(index, None)
