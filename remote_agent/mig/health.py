"""GPUs left degraded by a MIG change that failed and could not be undone.

Such a GPU holds neither the layout it had nor the one asked for. The agent says so — in
``hello``'s problems and in the GPU's inventory and snapshot record — until the GPU reads as it
was expected to be again (someone put it right), or a later change on it succeeds (which reads
the GPU back and vouches for its layout). Kept by the daemon while it runs.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Counter, Dict, List, Optional, Tuple

Mode = Tuple[bool, bool]  # MIG mode (current, pending)
_PROBLEM = re.compile(r"GPU \d+ is degraded: ")


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


class GpuHealth:
    """Degraded marks by GPU index; safe across threads (changes, snapshots, hello)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._marks: Dict[int, Degraded] = {}

    def mark(self, index: int, mark: Degraded) -> None:
        with self._lock:
            self._marks[index] = mark

    def clear(self, index: int) -> None:
        with self._lock:
            self._marks.pop(index, None)

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
                return None
            return mark.reason

    def problems(self) -> List[str]:
        with self._lock:
            return [problem(i, m.reason) for i, m in sorted(self._marks.items())]
