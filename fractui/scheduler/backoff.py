"""GPUs held back from MIG mode changes after one failed: the lease holder's memory of them.

A mode change the agent refused or failed (a process came first, the reset was refused, NVML
failed and rolled back) would otherwise be offered again by the next pass, to the same job or
the next, each failing the same way. Each such GPU, by UUID (the board's own name: an index
follows the host's enumeration order), is offered no mode change for a while — FIRST_HOLD_S,
doubled at each failure in a row, at most LONGEST_HOLD_S — and its jobs take it in the mode it
has, or go elsewhere, or wait; a decision made before the hold began is not asked meanwhile
(execute.py). A change that succeeds forgets its failures. The lease holder keeps them in the
store (Store.keep_mode_holds), so a holder that takes over goes on from them, and the placement
preview and `fractui place` offer no change the holder would not make. Every ``now`` here is the
store's clock (the holder's ``Executor.clock``), to which those readers, on other machines,
count the holds too.
"""

from __future__ import annotations

import threading
from typing import Dict, FrozenSet, Mapping, Optional

from fractui.store.model import ModeHold

FIRST_HOLD_S = 120.0
LONGEST_HOLD_S = 3600.0
DOUBLINGS = 5  # 120 s doubled 5 times is past the longest: more only overflows a float


class ModeBackoff:
    """The GPUs whose MIG mode change failed lately (recorded from the hosts' lanes, read by
    the passes: thread-safe)."""

    def __init__(self) -> None:
        self._holds: Dict[str, ModeHold] = {}
        self._lock = threading.Lock()

    def failed(self, uuid: str, now: float) -> float:
        """A change of GPU ``uuid`` failed at ``now``: held back longer than last time; returns
        for how long (seconds)."""
        with self._lock:
            last = self._holds.get(uuid)
            failures = last.failures + 1 if last is not None else 1
            wait = min(LONGEST_HOLD_S, FIRST_HOLD_S * 2.0 ** min(failures - 1, DOUBLINGS))
            self._holds[uuid] = ModeHold(failures, now + wait)
            return wait

    def succeeded(self, uuid: str) -> None:
        """A change of GPU ``uuid`` was made: its failures are forgotten."""
        with self._lock:
            self._holds.pop(uuid, None)

    def left(self, uuid: str, now: float) -> float:
        """How long GPU ``uuid`` is still held back at ``now`` (0: it is not)."""
        with self._lock:
            hold = self._holds.get(uuid)
            return hold.left(now) if hold is not None else 0.0

    def held(self, now: float) -> FrozenSet[str]:
        """The GPUs (UUIDs) offered no mode change at ``now``."""
        with self._lock:
            return frozenset(u for u, h in self._holds.items() if h.until > now)

    def next_end(self, now: float) -> Optional[float]:
        """When the first hold still running at ``now`` ends (a pass is due then: the GPU may
        be offered again); None if none runs."""
        with self._lock:
            return min((h.until for h in self._holds.values() if h.until > now), default=None)

    def holds(self) -> Dict[str, ModeHold]:
        """Every GPU's hold, ended ones too (their failures in a row count on): what the
        lease holder keeps in the store."""
        with self._lock:
            return dict(self._holds)

    def recall(self, holds: Mapping[str, ModeHold]) -> None:
        """The holds the lease holders before this one kept (read on taking the lease)."""
        with self._lock:
            self._holds = dict(holds)
