"""The command palette (``:``): jump to a host, a queue or a job, switch theme, change the view.

As Posting's providers do, it offers only what fits the fleet now: the hosts configured, the
queues, the jobs the store has active (and the newest ended, to open), the themes registered.
From any screen, as k9s's ``:`` works from any view: that screen's own entries (a job's stops
on its screen), then the fleet screen's, each of which goes back to the fleet screen first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import re
from dataclasses import dataclass
from typing import Callable

from textual.command import DiscoveryHit, Hit, Hits, Matcher, Provider
from textual.content import Content
from textual.screen import Screen

from fractui.store.model import Job


@dataclass(frozen=True)
class Entry:
    text: str
    help: str
    run: Callable[[], None]
    discover: bool = True
    """Listed before anything is typed (hosts, queues, themes; not every job)."""
    anywhere: bool = False
    """Run over the screen the palette is on, as its key does (a view of the whole app's:
    jobs, report, messages), not on the map with the screens over it closed."""


def place_entry(job: Job, run: Callable[[], None]) -> Entry:
    """``place job #N name``: a pending job's placement mode, as its screen's ``P`` and the
    queue panel's ``p`` (the fleet's entry, and the job screen's own)."""
    return Entry("place job #%d %s" % (job.id, job.name), "on a slot you choose on the map",
                 run, discover=False)


def move_entry(job: Job, run: Callable[[], None]) -> Entry:
    """``move job #N name``: a placed or running job's move, as its screen's ``m``."""
    return Entry("move job #%d %s" % (job.id, job.name), "stop it, then place it on a slot "
                 "you choose on the map, held for it meanwhile", run, discover=False)


class FleetCommands(Provider):
    async def startup(self) -> None:
        """What the fleet screen reads only for the palette (the ended jobs). Textual cancels
        a provider's startup when a key is typed before it has ended (the new search aborts
        the one waiting for it), and a provider whose startup was cancelled lists nothing
        while that palette is open: so the read runs apart, and a cancel ends only the wait
        for it (the searches list what was read before, and the read's answer once it is
        in)."""
        opened = getattr(self._fleet(), "palette_opened", None)
        if opened is None:
            return
        reading = asyncio.ensure_future(opened())
        try:
            await asyncio.shield(reading)
        except asyncio.CancelledError:  # a key typed: searched now, not cancelled
            uncancel = getattr(asyncio.current_task(), "uncancel", None)  # (Python 3.11+)
            if uncancel is not None:
                uncancel()

    def _fleet(self) -> Screen[object]:
        """The fleet screen under every other (the app's), or the screen the palette is on."""
        return getattr(self.app, "fleet", self.screen)

    def _entries(self) -> list[Entry]:
        screen, fleet = self.screen, self._fleet()
        own = screen.palette_entries() if hasattr(screen, "palette_entries") else []
        if fleet is screen or not hasattr(fleet, "palette_entries"):
            return own
        mine = {e.text for e in own}  # (a job's place or move: its screen's comes back to it)
        return own + [e if e.anywhere else dataclasses.replace(
            e, run=functools.partial(from_fleet, fleet, e.run))
            for e in fleet.palette_entries() if e.text not in mine]

    async def discover(self) -> Hits:
        for entry in self._entries():
            if entry.discover:
                yield DiscoveryHit(Content(entry.text), entry.run, text=entry.text,
                                   help=Content(entry.help))  # type: ignore[arg-type]

    async def search(self, query: str) -> Hits:
        """The entries that match, the closest first among those Textual scores alike: it
        keeps the order they come in, and ``cordon host a10`` ran on a100-1, listed first."""
        matcher = self.matcher(query)
        found = [(matcher.match(e.text), e) for e in self._entries()]
        found = sorted([(score, e) for score, e in found if score > 0],
                       key=lambda f: (-f[0], _distance(matcher, f[1].text)))
        for rank, (score, entry) in enumerate(found):
            yield Hit(score * (1 - TIE_NUDGE * rank / len(found)),
                      _highlight(matcher, entry.text), entry.run, text=entry.text,
                      help=Content(entry.help))  # type: ignore[arg-type]


TIE_NUDGE = 1e-9
"""How much of its score a hit gives up per place in our order (all of them, 1e-9 at most):
Textual sorts by score alone, and its scores for one query differ by far more (multiples of
1/(2·len(query)²)), so only ties are ordered by it."""

_WORD = re.compile(r"\w")


def _distance(matcher: Matcher, text: str) -> tuple[int, int]:
    """How far ``text`` is from what was typed, among texts scored alike: the words the
    match cuts through (``a10`` cuts ``a100-1``'s first, not ``a10-1``'s), then its length."""
    matched = set(_matched(matcher, text))
    edges = {o for o in matched if o - 1 not in matched} | {o + 1 for o in matched
                                                              if o + 1 not in matched}
    cuts = sum(1 for i in edges if 0 < i < len(text)
               and _WORD.match(text[i - 1]) and _WORD.match(text[i]))
    return cuts, len(text)


def _matched(matcher: Matcher, text: str) -> list[int]:
    """The characters of ``text`` the query matched. Textual's offsets are into its lower
    case, where a character can be two ('İ', as a job's name may hold): read as ``text``'s,
    they fell one off after it, and past its end (an IndexError, the palette gone)."""
    _, offsets = matcher.fuzzy_search.match(matcher.query, text)
    at = [i for i, c in enumerate(text) for _ in c.lower()]
    return sorted({at[o] for o in offsets})


def from_fleet(fleet: Screen[object], run: Callable[[], None]) -> None:
    """Back to the fleet screen (the screens over it closed, as ``esc`` closes them), then
    ``run``: a jump shows the map, a theme or a cordon is the same from there."""
    app = fleet.app
    while app.screen is not fleet and len(app.screen_stack) > 1:
        app.pop_screen()
    run()


def _highlight(matcher: Matcher, text: str) -> Content:
    """``matcher.highlight``, but of the text as written: that reads it as markup, and a job's
    name, a host's or a queue's is not (see FractuiApp.__init__)."""
    content = Content(text)
    for offset in _matched(matcher, text):
        if not text[offset].isspace():
            content = content.stylize(matcher.match_style, offset, offset + 1)
    return content
