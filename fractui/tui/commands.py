"""The command palette (``:``): jump to a host, a queue or a job, switch theme, change the view.

As Posting's providers do, it offers only what fits the fleet now: the hosts configured, the
queues, the jobs the store has active, the themes registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from textual.command import DiscoveryHit, Hit, Hits, Provider


@dataclass(frozen=True)
class Entry:
    text: str
    help: str
    run: Callable[[], None]
    discover: bool = True
    """Listed before anything is typed (hosts, queues, themes; not every job)."""


class FleetCommands(Provider):
    def _entries(self) -> list[Entry]:
        screen = self.screen
        return screen.palette_entries() if hasattr(screen, "palette_entries") else []

    async def discover(self) -> Hits:
        for entry in self._entries():
            if entry.discover:
                yield DiscoveryHit(entry.text, entry.run, help=entry.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for entry in self._entries():
            score = matcher.match(entry.text)
            if score > 0:
                yield Hit(score, matcher.highlight(entry.text), entry.run, help=entry.help)
