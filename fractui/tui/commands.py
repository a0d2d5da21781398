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
from typing import Callable, Optional, Sequence

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
        found = [(_match(matcher, e.text)[0], e) for e in self._entries()]
        found = sorted([(score, e) for score, e in found if score > 0],
                       key=lambda f: (-f[0], _distance(matcher, f[1].text)))
        for rank, (score, entry) in enumerate(found):
            yield Hit(score * (1 - TIE_NUDGE * rank / len(found)),
                      _highlight(matcher, entry.text), entry.run, text=entry.text,
                      help=Content(entry.help))  # type: ignore[arg-type]


TIE_NUDGE = 1e-9
"""How much of its score a hit gives up per place in our order (all of them, 1e-9 at most):
Textual sorts by score alone. Our order follows its score, so a hit scored lower gives up more
and never goes over one scored higher, however long the query; so only ties are ordered by it.
Against the hits of Textual's system commands it is less than the least step between two
scores (1/(2·len(query)²), of scores up to 8·len(query)) for queries up to about 390
characters, and no title of theirs, all far shorter, matches a longer one (each character of
the query is one of the text's)."""

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
    _, offsets = _match(matcher, text)
    at = [i for i, c in enumerate(text) for _ in c.lower()]
    return sorted({at[o] for o in offsets})


MATCH_WAYS = 20_000
"""The places Textual's fuzzy search may look at for one entry (tens of milliseconds at most);
past them, an entry is scored by its first match. Textual tries every way the query's
characters can be found in order and keeps the best: a job named ``a-b-`` 128 times took 30 s
to score for ``abab``, the palette and the whole TUI stopped meanwhile, and a name may be 4096
characters (never, then). It looks at each of a character's places once for each partial
match of those before it, the places it cannot take too: those are counted, not the partial
matches alone, which stay few where the places are many (``abc`` in ``ab-``, 3600 ``c``, 118
``a`` then 118 ``b``: 17,643 partial matches, 50 million places, seconds). The texts the
palette matches every day take far fewer: up to 14 characters of an entry of a job of an
everyday name (``open job #1234 lora-1e-4-128-bs32-run7``), a few hundred, and 6 in 4432
such queries past the bound."""


MATCH_LENGTH = 500
"""The longest query Textual's fuzzy search is left: it calls itself once for each of the
query's characters, and fails past Python's bound on that (1000 calls), the palette then
listing none of our hits (it logs a provider's error): a job's long name pasted whole found
nothing. A longer query scores a text by its first match."""


def _match(matcher: Matcher, text: str) -> tuple[float, Sequence[int]]:
    """Textual's score of ``text`` for the query and the offsets it matched (into ``text`` as
    Textual reads it, lower case unless the match is case-sensitive), where Textual's search
    would look at most at MATCH_WAYS places and the query is at most MATCH_LENGTH long; else
    the score of the first match in the order Textual tries them (the query's characters each
    found as early as can be)."""
    search = matcher.fuzzy_search
    query, seen = matcher.query, text
    if not search.case_sensitive:
        query, seen = query.lower(), seen.lower()
    if query in seen:  # (Textual's quick way: one match, where the query is found whole)
        return search.match(matcher.query, text)
    first: list[int] = []  # (each character's first place after the one before's)
    for char in query:
        first.append(seen.find(char, first[-1] + 1 if first else 0))
        if first[-1] < 0:
            return 0.0, ()  # (as Textual's search: a character not found, no match)
    places = _places(query, seen) if len(query) <= MATCH_LENGTH else None
    if places is not None and _ways(places) <= MATCH_WAYS:
        return search.match(matcher.query, text)
    return search.score(seen, first), first


def _places(query: str, text: str) -> Optional[list[list[int]]]:
    """Where Textual's search looks for each of the query's characters (``FuzzySearch._match``:
    from just after the first place of the one before, up to about where the rest would no
    longer fit), each found there (``_match`` saw to it); None past MATCH_WAYS places, which
    it would look at once each at least (each character's first places make a partial match)."""
    places: list[list[int]] = []
    start, count = 0, 0
    for n, char in enumerate(query):
        found, at, end = [], start, len(text) - n
        while (hit := text.find(char, at)) != -1:
            found.append(hit)
            at = hit + 1
            count += 1
            if count > MATCH_WAYS:
                return None
            if at >= end:
                break
        places.append(found)
        start = found[0] + 1
    return places


def _ways(places: list[list[int]]) -> int:
    """The places Textual's search looks at: each character's, once for each partial match
    of those before it (``ways``: how many end at each place), counted to just past
    MATCH_WAYS."""
    ways = [1] * len(places[0])
    total = len(ways)
    for before, found in zip(places, places[1:]):
        total = min(total + sum(ways) * len(found), MATCH_WAYS + 1)
        if total > MATCH_WAYS:
            break
        now, sum_before, k = [], 0, 0
        for at in found:
            while k < len(before) and before[k] < at:
                sum_before, k = min(sum_before + ways[k], MATCH_WAYS + 1), k + 1
            now.append(sum_before)
        ways = now
    return total


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
