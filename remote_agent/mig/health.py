"""GPUs left degraded by a MIG change that failed and could not be undone.

Such a GPU holds neither the layout it had nor the one asked for. The agent says so — in
``hello``'s problems and in the GPU's inventory and snapshot record — until the GPU reads as it
was expected to be again (someone put it right), or a later change on it succeeds (which reads
the GPU back and vouches for its layout). The daemon keeps the marks in its state dir (each
change written whole, fsync'd, 0600), so a restarted daemon says the same words: the change's
own, not the general ones a GPU read afresh would give. Marks written in another boot are
dropped: MIG instances do not outlive a reboot, so what a failed change left is gone with it.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import collections
from dataclasses import dataclass
from typing import Any, Counter, Dict, List, Optional, Tuple

from remote_agent.daemon.trust import UnsafePath, read_private, write_private
from remote_agent.mig.journal import boot_id

log = logging.getLogger(__name__)

Mode = Tuple[bool, bool]  # MIG mode (current, pending)
_PROBLEM = re.compile(r"GPU \d+ is degraded: ")
VERSION = 1  # of the file the marks are kept in


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
    placements: Optional[Counter] = None  # as remote_agent.mig.apply.placements counts them


def _record(index: int, mark: Degraded) -> Dict[str, Any]:
    return {"gpu": index, "reason": mark.reason, "mode": list(mark.mode),
            "placements": None if mark.placements is None else [
                [*key, count] for key, count in sorted(mark.placements.items())]}


def _mark(rec: Dict[str, Any]) -> Tuple[int, Degraded]:
    """A mark read back (ValueError, KeyError or TypeError if the record holds none)."""
    current, pending = rec["mode"]
    if not all(isinstance(v, bool) for v in (current, pending)):
        raise TypeError("a MIG mode is true or false")
    placed = rec["placements"]
    counts = None if placed is None else collections.Counter(
        {(str(profile), int(start), bool(made)): int(count)
         for profile, start, made, count in placed})
    return int(rec["gpu"]), Degraded(str(rec["reason"]), (current, pending), counts)


class GpuHealth:
    """Degraded marks by GPU index; safe across threads (changes, snapshots, hello). With
    ``path``, kept there: read at the start, written at each change."""

    def __init__(self, path: Optional[str] = None) -> None:
        self._lock = threading.Lock()
        self._path = path
        self._marks: Dict[int, Degraded] = self._read() if path is not None else {}

    def _read(self) -> Dict[int, Degraded]:
        """The marks a daemon before this one left, in this boot; a file that cannot be read
        is said, and the GPUs are judged afresh (UnsafePath, someone else's file, is refused
        as the daemon's other files are)."""
        path = self._path or ""
        try:
            data = json.loads((read_private(path, "GPU health marks") or b"{}").decode())
            if not data or data.get("boot") != boot_id():
                return {}  # none, or written before a reboot, which ended what they said
            return dict(_mark(rec) for rec in data["gpus"])
        except UnsafePath:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            log.error("the GPU health marks kept in %s cannot be read (%s: %s); a GPU a failed "
                      "MIG change left degraded before the agent's restart is not said to be",
                      path, type(err).__name__, err)
            return {}

    def _keep(self) -> None:
        """Write the marks (the caller holds the lock). A write that fails is said: the marks
        hold on in this daemon, and the next reads those last written."""
        if self._path is None:
            return
        data = {"version": VERSION, "boot": boot_id(),
                "gpus": [_record(i, m) for i, m in sorted(self._marks.items())]}
        try:
            write_private(self._path, json.dumps(data, sort_keys=True).encode(), durable=True)
        except OSError as err:
            log.error("the GPU health marks cannot be kept in %s (%s: %s); a restarted agent "
                      "would say what was written there last", self._path,
                      type(err).__name__, err)

    def mark(self, index: int, mark: Degraded) -> None:
        with self._lock:
            self._marks[index] = mark
            self._keep()

    def clear(self, index: int) -> None:
        with self._lock:
            if self._marks.pop(index, None) is not None:
                self._keep()

    def marked(self, index: int) -> bool:
        with self._lock:
            return index in self._marks

    def check(self, index: int, mode: Mode, placements: Optional[Counter]) -> Optional[str]:
        """Why GPU ``index`` is degraded, given what it reads as now; reading as expected
        clears the mark."""
        with self._lock:
            mark = self._marks.get(index)
            if mark is None:
                return None
            if mode == mark.mode and (mark.placements is None or mark.placements == placements):
                del self._marks[index]
                self._keep()
                return None
            return mark.reason

    def problems(self) -> List[str]:
        with self._lock:
            return [problem(i, m.reason) for i, m in sorted(self._marks.items())]
