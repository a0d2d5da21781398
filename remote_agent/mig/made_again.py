"""The instances rolled-back MIG changes made again, each with the uuids it stands in place of.

A rollback makes an idle instance the change destroyed again at its place, and the GPU gives it
a new uuid; a retry of what named the old one (``mig.destroy``) finds it by this link (made
again twice, it stands for both). The daemon keeps the links in its state dir
(remote_agent.daemon.kept: fsync'd before the answer that rolled the change back, dropped by a
reboot, which ends every MIG instance), so the retry of a change rolled back before the
daemon's restart finds the instance made again too.
"""

from __future__ import annotations

import threading
import typing
from collections import OrderedDict
from dataclasses import replace
from typing import Any, Dict, Iterable, List, Optional, Tuple

from remote_agent.daemon.kept import keep, read_kept
from remote_agent.mig.layout import Instance, Layout

WHAT = "links of the MIG instances made again"

Links = typing.OrderedDict[str, Tuple[str, ...]]  # by the uuid made again, the latest last


class MadeAgain:
    """The links, by the uuid the GPU gave each instance anew; safe across threads. Bounded:
    the ``keep`` latest, each with the ``chain`` latest uuids it stands for (a place rolled back
    again and again would grow its chain, sent in every snapshot, for as long as the host runs;
    a retry names the last uuid it saw). With ``path``, kept there: read at the start, written
    at each change."""

    def __init__(self, keep: int = 256, chain: int = 16, path: Optional[str] = None):
        self.keep = keep
        self.chain = chain
        self._path = path
        self._of: Links = OrderedDict()
        self._lock = threading.Lock()
        if path is not None:
            self._of = read_kept(path, WHAT, self._links, "a retry of a change rolled back "
                                 "before the agent's restart, naming an instance made again "
                                 "since, is refused as of an unknown instance") or OrderedDict()

    def _links(self, kept: Any) -> Links:
        """The links a record read back holds, bounded as this one's (TypeError, KeyError or
        ValueError if it holds none)."""
        if not isinstance(kept, list):
            raise TypeError("not a list but %s" % type(kept).__name__)
        links: Links = OrderedDict()
        for rec in kept:
            uuid, olds = rec["uuid"], rec["remade_of"]
            if not (isinstance(uuid, str) and isinstance(olds, list) and olds and
                    all(isinstance(o, str) for o in olds)):
                raise TypeError("a link is a uuid and the uuids it was made again in place of")
            links[uuid] = tuple(olds[-self.chain:])
            links.move_to_end(uuid)
        while len(links) > self.keep:
            links.popitem(last=False)
        return links

    def _records(self) -> List[Dict[str, Any]]:
        return [{"uuid": new, "remade_of": list(olds)} for new, olds in self._of.items()]

    def saw(self, before: Layout, now: Layout) -> Tuple[Instance, ...]:
        """``now``, read after a rollback of a change made on ``before``: each instance of
        ``before`` gone, with one of its profile at its start that ``before`` did not hold
        (the one made again there), is stood in for by it. Returns those made again, each
        ``marked``. Kept (fsync'd) before it returns, where any was linked anew. Seen again
        (a daemon killed after it kept them, before its journal let the change go), it links
        nothing twice and loses nothing of a chain."""
        was = {i.uuid for i in before.instances if i.uuid}
        new = {(i.profile, i.start): i for i in now.instances
               if i.uuid and i.uuid not in was}
        there = {i.uuid for i in now.instances if i.uuid}
        again = []
        with self._lock:
            linked = False
            for old in before.instances:
                remade = new.get((old.profile, old.start))
                if not (old.uuid and old.uuid not in there and remade is not None):
                    continue
                uuid = remade.uuid or ""  # (it has one: ``new``)
                chain = self._of.get(uuid, ())
                if old.uuid not in chain:
                    self._of[uuid] = (chain + self._of.pop(old.uuid, ()) + (old.uuid,))[
                        -self.chain:]
                    self._of.move_to_end(uuid)
                    linked = True
                again.append(remade)
            while len(self._of) > self.keep:
                self._of.popitem(last=False)
            if linked and self._path is not None:
                keep(self._path, WHAT, self._records())
        return tuple(map(self.marked, again))

    def of(self, uuid: Optional[str]) -> Tuple[str, ...]:
        """The uuids the instance ``uuid`` was made again in place of (none: it was not)."""
        with self._lock:
            return self._of.get(uuid or "", ())

    def marked(self, inst: Instance) -> Instance:
        """``inst`` with the uuids it was made again in place of (``Instance.remade_of``), so
        that its words name them."""
        return replace(inst, remade_of=self.of(inst.uuid))

    def standing_for(self, old: str, instances: Iterable[Instance]) -> Optional[Instance]:
        """Of ``instances``, the one made again in place of ``old``, if any."""
        with self._lock:
            return next((i for i in instances if old in self._of.get(i.uuid or "", ())), None)
