"""The command palette (``:``): jump to a host, a queue or a job, switch theme, change the view.

As Posting's providers do, it offers only what fits the fleet now: the hosts configured, the
queues, the jobs the store has active (and the newest ended, to open), the themes registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from textual.command import DiscoveryHit, Hit, Hits, Matcher, Provider
from textual.content import Content


@dataclass(frozen=True)
class Entry:
    text: str
    help: str
    run: Callable[[], None]
    discover: bool = True
    """Listed before anything is typed (hosts, queues, themes; not every job)."""


class FleetCommands(Provider):
    async def startup(self) -> None:
        """What the screen reads only for the palette (the fleet screen: the ended jobs)."""
        opened = getattr(self.screen, "palette_opened", None)
        if opened is not None:
            await opened()

    def _entries(self) -> list[Entry]:
        screen = self.screen
        return screen.palette_entries() if hasattr(screen, "palette_entries") else []

    async def discover(self) -> Hits:
        for entry in self._entries():
            if entry.discover:
                yield DiscoveryHit(Content(entry.text), entry.run, text=entry.text,
                                   help=Content(entry.help))  # type: ignore[arg-type]

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for entry in self._entries():
            score = matcher.match(entry.text)
            if score > 0:
                yield Hit(score, _highlight(matcher, entry.text), entry.run, text=entry.text,
                          help=Content(entry.help))  # type: ignore[arg-type]


def _highlight(matcher: Matcher, text: str) -> Content:
    """``matcher.highlight``, but of the text as written: that reads it as markup, and a job's
    name, a host's or a queue's is not (see FractuiApp.__init__)."""
    content = Content(text)
    _, offsets = matcher.fuzzy_search.match(matcher.query, text)
    for offset in offsets:
        if not text[offset].isspace():
            content = content.stylize(matcher.match_style, offset, offset + 1)
    return content
