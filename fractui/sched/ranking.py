"""Hosts ranked per request class, kept up to date by the hosts that changed since.

A decision wants the host with the best score for its request class, ties to a fixed host order.
Scanning every host per decision costs the fleet; here each class keeps a heap of (score, tie
order) over the hosts that can take it, and before answering takes in only the hosts changed
(committed to) since that class last asked. A decision then costs the changes since, not the
fleet: on a steady stream the classes that come often see a handful of changes each. A class not
asked for long, or never, is built from scratch once (what a scan costs), and only the
``keep`` classes used most recently keep a heap. Pure bookkeeping: the scores come from the
caller.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Hashable, List, Optional, Sequence, Tuple

KEEP = 128  # class heaps kept (least recently used dropped first)

# (-score, tie order, host, host stamp): a host's stamp counts its changes, so an entry of an
# older stamp is stale and skipped. Numbers only, so the garbage collector never walks the heaps
# (an entry holding the caller's answer made the collector's pauses the slowest decisions).
Entry = Tuple[float, int, int, int]
Evaluate = Callable[[int], Optional[Tuple[float, object]]]


@dataclass
class _Heap:
    entries: List[Entry] = field(default_factory=list)
    seen: int = 0  # changes (absolute log position) taken in


class Ranking:
    """The best host per request class among ``len(order)`` hosts; ``order[p]`` is the host
    at tie position p (earlier wins a tie)."""

    def __init__(self, order: Sequence[int], keep: int = KEEP):
        self._pos = [0] * len(order)
        for p, i in enumerate(order):
            self._pos[i] = p
        self._stamp = [0] * len(order)
        self._log: List[int] = []  # hosts changed, oldest first; _log[0] is change _base
        self._base = 0
        self._heaps: "OrderedDict[Hashable, _Heap]" = OrderedDict()
        self.keep = keep

    def changed(self, i: int) -> None:
        """Host i's state changed: every class re-scores it before its next answer."""
        self._stamp[i] += 1
        self._log.append(i)
        n = len(self._pos)
        if len(self._log) > 2 * n + 1024:  # drop what every kept heap has taken in
            end = self._base + len(self._log)
            for key in [k for k, h in self._heaps.items() if h.seen < end - n]:
                del self._heaps[key]  # far behind: cheaper rebuilt than caught up
            low = min((h.seen for h in self._heaps.values()), default=end)
            del self._log[:low - self._base]
            self._base = low

    def best(self, key: Hashable, evaluate: Evaluate, fits: Callable[[int], bool]
             ) -> Optional[int]:
        """The best-scored host for class ``key`` that ``fits`` (checks what the class does not
        fix, e.g. the request's RAM), or None. ``evaluate(i)``: host i's (score, answer) for the
        class, None if it cannot take it; the caller keeps the answers."""
        heap = self._heap(key, evaluate)
        entries, stamp = heap.entries, self._stamp
        skipped: List[Entry] = []
        found = None
        while entries:
            e = entries[0]
            if e[3] != stamp[e[2]]:
                heapq.heappop(entries)
            elif not fits(e[2]):
                skipped.append(heapq.heappop(entries))
            else:
                found = e[2]
                break
        for e in skipped:
            heapq.heappush(entries, e)
        return found

    def _heap(self, key: Hashable, evaluate: Evaluate) -> _Heap:
        end = self._base + len(self._log)
        n = len(self._pos)
        heap = self._heaps.get(key)
        if heap is not None and end - heap.seen <= n:
            self._heaps.move_to_end(key)
            entries = heap.entries
            for i in set(self._log[heap.seen - self._base:]):
                self._push(entries, i, evaluate)
            heap.seen = end
            if len(entries) > 2 * n + 64:  # mostly stale: keep the live ones
                live = self._stamp
                entries[:] = [e for e in entries if e[3] == live[e[2]]]
                heapq.heapify(entries)
            return heap
        heap = _Heap(seen=end)
        for i in range(n):
            res = evaluate(i)
            if res is not None:
                heap.entries.append((-res[0], self._pos[i], i, self._stamp[i]))
        heapq.heapify(heap.entries)
        self._heaps[key] = heap
        self._heaps.move_to_end(key)
        while len(self._heaps) > self.keep:
            self._heaps.popitem(last=False)
        return heap

    def _push(self, entries: List[Entry], i: int, evaluate: Evaluate) -> None:
        res = evaluate(i)
        if res is not None:
            heapq.heappush(entries, (-res[0], self._pos[i], i, self._stamp[i]))
