"""MIG changes in progress, kept in the state dir, so that one the daemon could not finish —
killed (kill -9, OOM) between its NVML steps — is rolled back by the next daemon.

A change's steps are several NVML calls (destroy idle instances, make a GPU instance, make its
compute instance). In process, a failed step is undone (remote_agent.mig.apply); a daemon that
dies between steps undoes nothing, and left alone the GPU keeps the half: idle instances
destroyed and nothing made in their place, or a GPU instance without its compute instance, which
no job can use and which holds its slots. So before its first step a change is written here (the
GPU's uuid, its layout before, what it destroys and makes), fsync'd; once it is settled (made,
or undone, or said to be unrestorable) the entry is removed. An entry the next daemon finds is a
change cut short: it is rolled back with the same undo, before any client is served.

A MIG mode change is kept here too (the GPU's (current, pending) mode before, and the mode
asked): cut short after NVML took it but before it took effect (a GPU whose change waits for a
reset, killed before the reset), it would leave the new mode pending, to take effect unasked at
the GPU's next reset, whoever makes it. The next daemon asks the old mode back. MIG off that
destroys the GPU's idle instances first holds them in its entry, written before the first of
them is destroyed: the next daemon makes them again unless the mode went off.

MIG instances do not outlive a reboot, so an entry written in another boot is only dropped.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from remote_agent.daemon.trust import DAMAGE, UnsafePath, private_dir, read_private, \
    write_private
from remote_agent.mig.apply import Change
from remote_agent.mig.layout import Geometry, Instance, Layout

log = logging.getLogger(__name__)

BOOT_ID = "/proc/sys/kernel/random/boot_id"
VERSION = 1


def boot_id() -> Optional[str]:
    """This boot's id (Linux), or None where it cannot be read."""
    try:
        with open(BOOT_ID) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _instance(inst: Instance) -> Dict[str, Any]:
    return {"gi_id": inst.gi_id, "profile": inst.profile, "start": inst.start,
            "uuid": inst.uuid}


Mode = Tuple[bool, bool]  # a GPU's MIG mode: (current, pending)


@dataclass(frozen=True)
class Begun:
    """A change cut short, as written before its first step: where, in which boot, what."""

    path: str
    index: int
    gpu_uuid: str
    boot: Optional[str]
    what: str


@dataclass(frozen=True)
class ModeEntry(Begun):
    """A MIG mode change cut short; ``destroyed``: the idle instances MIG off destroys first."""

    before: Mode
    enabled: bool
    destroyed: Tuple[Dict[str, Any], ...] = ()

    def destroying(self, geo: Geometry) -> Tuple[Layout, Change]:
        """The layout before the idle instances were destroyed, and their destroying, on the
        GPU's geometry (ValueError for a profile the geometry lacks)."""
        instances = tuple(_instance_on(geo, r) for r in self.destroyed)
        return Layout(geo, instances), Change(self.what, destroy=instances)


@dataclass(frozen=True)
class Entry(Begun):
    """A change of a GPU's MIG instances cut short."""

    before: Tuple[Dict[str, Any], ...]
    destroy: Tuple[Dict[str, Any], ...]
    create: Optional[str]
    start: int

    def layout_and_change(self, geo: Geometry) -> Tuple[Layout, Change]:
        """The layout before and the change, on the GPU's geometry (ValueError for a profile
        the geometry lacks)."""
        create = None
        if self.create is not None:
            create = geo.profile(self.create)
            if create is None:
                raise ValueError("profile %r is not one of %s's" % (self.create, geo.model))
        before = Layout(geo, tuple(_instance_on(geo, r) for r in self.before))
        destroy = tuple(_instance_on(geo, r) for r in self.destroy)
        return before, Change(self.what, destroy=destroy, create=create, start=self.start)


def _instance_on(geo: Geometry, rec: Dict[str, Any]) -> Instance:
    """An instance as a record holds it, on the GPU's geometry (ValueError for a profile the
    geometry lacks)."""
    prof = geo.profile(rec["profile"])
    if prof is None:
        raise ValueError("profile %r is not one of %s's" % (rec["profile"], geo.model))
    return Instance(gi_id=int(rec["gi_id"]), profile=prof.name, start=int(rec["start"]),
                    size=prof.size, compute_slices=prof.compute_slices, uuid=rec.get("uuid"))


class MigJournal:
    """One file per GPU (by index) under ``folder``: the change in progress there. Changes
    on one GPU are serialised by its MIG lock, so a GPU has one at most."""

    def __init__(self, folder: str):
        self.folder = folder

    def _path(self, index: int) -> str:
        return os.path.join(self.folder, "gpu%d.json" % index)

    def begin(self, index: int, gpu_uuid: str, before: Layout, change: Change) -> str:
        """Writes the change (fsync'd) before its first step; returns the entry's path, for
        ``drop`` once it is settled: made, undone, or said to be unrestorable. OSError (the
        state dir full) before anything is made."""
        return self._write(index, gpu_uuid, change.what, {
            "before": [_instance(i) for i in before.instances],
            "destroy": [_instance(i) for i in change.destroy],
            "create": change.create.name if change.create is not None else None,
            "start": change.start})

    def begin_mode(self, index: int, gpu_uuid: str, what: str, before: Mode,
                   enabled: bool, destroyed: Tuple[Instance, ...] = ()) -> str:
        """``begin`` for a MIG mode change: from ``before`` to ``enabled``, the idle instances
        ``destroyed`` first."""
        return self._write(index, gpu_uuid, what, {"kind": "mode", "before": list(before),
                                                   "enabled": enabled, "destroyed": [
                                                       _instance(i) for i in destroyed]})

    def _write(self, index: int, gpu_uuid: str, what: str, fields: Dict[str, Any]) -> str:
        record = {"version": VERSION, "gpu": index, "gpu_uuid": gpu_uuid, "boot": boot_id(),
                  "what": what, **fields}
        private_dir(self.folder, "MIG change journal")
        path = self._path(index)
        write_private(path, json.dumps(record, sort_keys=True).encode(), durable=True)
        return path

    def drop(self, path: str) -> None:
        """Removes a settled entry. One that cannot be removed is logged: the next daemon finds
        its change made in full, or held by a job, and leaves it."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            log.error("cannot remove MIG change journal entry %s (%s); the next daemon will "
                      "find its change settled", path, err)

    def left(self) -> List[Begun]:
        """The changes a daemon before this one began and never settled. An entry that cannot
        be read is logged and removed (there is nothing it could be rolled back by)."""
        if not os.path.isdir(self.folder):
            return []
        private_dir(self.folder, "MIG change journal")
        found = []
        for name in sorted(os.listdir(self.folder)):
            path = os.path.join(self.folder, name)
            if not (name.startswith("gpu") and name.endswith(".json")):
                if ".json.tmp." in name:  # a write the daemon died in: nothing was changed
                    self.drop(path)
                continue
            try:
                rec = json.loads((read_private(path, "MIG change journal entry") or b"{}"
                                  ).decode())
                found.append(_entry(path, rec))
            except UnsafePath:
                raise  # someone else's file: the daemon refuses it, as its other files
            except DAMAGE as err:
                log.error("MIG change journal entry %s cannot be read (%s: %s); it is removed, "
                          "and what it held is not rolled back", path, type(err).__name__, err)
                self.drop(path)
        return found


def _entry(path: str, rec: Dict[str, Any]) -> Begun:
    """The entry a record read back holds (ValueError, KeyError or TypeError if it holds none)."""
    where = (path, int(rec["gpu"]), str(rec["gpu_uuid"]), rec.get("boot"), str(rec["what"]))
    if rec.get("kind") == "mode":
        current, pending = rec["before"]
        if not all(isinstance(v, bool) for v in (current, pending, rec["enabled"])):
            raise TypeError("a MIG mode is true or false")
        return ModeEntry(*where, (current, pending), rec["enabled"],
                         tuple(rec.get("destroyed", ())))
    return Entry(*where, tuple(rec["before"]), tuple(rec["destroy"]), rec.get("create"),
                 int(rec["start"]))
