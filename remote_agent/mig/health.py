"""GPUs left degraded by a MIG change that failed and could not be undone.

Such a GPU holds neither the layout it had nor the one asked for. The agent says so — in
``hello``'s problems and in the GPU's inventory and snapshot record — until the GPU reads as it
was expected to be again (someone put it right), or a later change on it succeeds (which reads
the GPU back and vouches for its layout). The daemon keeps the marks in its state dir
(remote_agent.daemon.kept: fsync'd at each change, dropped by a reboot), so a restarted daemon
says the same words: the change's own, not the general ones a GPU read afresh would give. A
mark is the GPU's by its UUID: an index names another GPU once one falls off the bus.
"""

from __future__ import annotations

import collections
import re
import threading
from dataclasses import dataclass
from typing import Any, Counter, Dict, List, Optional, Tuple

from remote_agent.daemon.kept import BY_GPU_INDEX, keep, read_kept

Mode = Tuple[bool, bool]  # MIG mode (current, pending)
_PROBLEM = re.compile(r"GPU \d+ is degraded: ")
WHAT = "GPU health marks"


def problem(index: int, reason: str) -> str:
    """How ``hello`` lists a degraded GPU among the host's problems."""
    return "GPU %d is degraded: %s" % (index, reason)


def is_gpu_problem(text: str) -> bool:
    """Whether one of ``hello``'s problems is a degraded GPU (which snapshots update)."""
    return _PROBLEM.match(text) is not None


@dataclass(frozen=True)
class Degraded:
    """Why a GPU is degraded, and what it must read as to be good again."""

    reason: str
    mode: Mode
    placements: Optional[Counter] = None  # as remote_agent.mig.layout.placements counts them


def _record(uuid: str, mark: Degraded) -> Dict[str, Any]:
    return {"gpu_uuid": uuid, "reason": mark.reason, "mode": list(mark.mode),
            "placements": None if mark.placements is None else [
                [*key, count] for key, count in sorted(mark.placements.items())]}


def _mark(rec: Dict[str, Any]) -> Tuple[str, Degraded]:
    """A mark read back (ValueError, KeyError or TypeError if the record holds none)."""
    current, pending = rec["mode"]
    if not all(isinstance(v, bool) for v in (current, pending)):
        raise TypeError("a MIG mode is true or false")
    placed = rec["placements"]
    counts = None if placed is None else collections.Counter(
        {(str(profile), int(start), bool(made)): int(count)
         for profile, start, made, count in placed})
    if not isinstance(rec["gpu_uuid"], str):
        raise TypeError("a GPU's UUID is a string")
    return rec["gpu_uuid"], Degraded(str(rec["reason"]), (current, pending), counts)


class GpuHealth:
    """Degraded marks by GPU UUID; safe across threads (changes, snapshots, hello). With
    ``path``, kept there: read at the start, written at each change."""

    def __init__(self, path: Optional[str] = None) -> None:
        self._lock = threading.Lock()
        self._path = path
        self._marks: Dict[str, Degraded] = {}
        if path is not None:
            self._marks = read_kept(path, WHAT, lambda recs: dict(_mark(r) for r in recs),
                                    "a GPU a failed MIG change left degraded before the "
                                    "agent's restart is not said to be", BY_GPU_INDEX) or {}

    def _keep(self) -> None:
        """Write the marks for the next daemon (the caller holds the lock)."""
        if self._path is not None:
            keep(self._path, WHAT, [_record(i, m) for i, m in sorted(self._marks.items())])

    def mark(self, uuid: str, mark: Degraded) -> None:
        with self._lock:
            self._marks[uuid] = mark
            self._keep()

    def clear(self, uuid: str) -> None:
        with self._lock:
            if self._marks.pop(uuid, None) is not None:
                self._keep()

    def marked(self, uuid: str) -> bool:
        with self._lock:
            return uuid in self._marks

    def check(self, uuid: str, mode: Mode, placements: Optional[Counter]) -> Optional[str]:
        """Why GPU ``uuid`` is degraded, given what it reads as now; reading as expected
        clears the mark."""
        with self._lock:
            mark = self._marks.get(uuid)
            if mark is None:
                return None
            if mode == mark.mode and (mark.placements is None or mark.placements == placements):
                del self._marks[uuid]
                self._keep()
                return None
            return mark.reason

    def problems(self, indexes: Dict[str, int]) -> List[str]:
        """The degraded GPUs of those there now (``indexes``: UUID -> index); the mark of one
        not there (fallen off the bus) is kept, and said if it comes back."""
        with self._lock:
            return [problem(indexes[u], m.reason) for u, m in sorted(
                self._marks.items(), key=lambda um: indexes.get(um[0], -1))
                if u in indexes]
