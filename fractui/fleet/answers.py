"""What the admin side reads of an agent's answers, checked once where they come in.

A host's hello, its snapshots and its job records are read by the scheduler, the TUI, metrics and
usage accounting for the whole fleet. Each part read there is checked here to have the kind it is
read as, so that one broken or hostile agent cannot stop every scheduling pass or end an admin's
TUI with a traceback: what is malformed is refused at the host's edge, saying where and what
(``problem``). Keys this module does not name are passed on unread (a newer agent adds some);
a key that is missing reads as absent, as every reader takes it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, Iterable, Optional, Tuple

from fractui.fleet.client import host_words

BIG = 2 ** 63  # larger whole numbers than a 64-bit counter holds are nobody's MiB or pid


class Shape(ABC):
    @abstractmethod
    def problem(self, value: Any, where: str) -> Optional[str]:
        """What is wrong with ``value``, found at ``where``, or None."""


@dataclass(frozen=True)
class Kind(Shape):
    """One JSON kind: ``count`` (a whole number from 0), ``int``, ``num`` (finite), ``str``,
    ``bool``; ``null`` allowed too where ``maybe``."""

    name: str
    maybe: bool = False

    def problem(self, value: Any, where: str) -> Optional[str]:
        if value is None:
            return None if self.maybe else "%s: null is not %s" % (where, _WORDS[self.name])
        if _CHECKS[self.name](value):
            return None
        return "%s: %s is not %s" % (where, _said(value), _WORDS[self.name])


_WORDS = {"count": "a whole number from 0", "int": "a whole number", "num": "a number",
          "str": "text", "bool": "true or false"}
_CHECKS: Dict[str, Callable[[Any], bool]] = {  # bool is not a number here, though Python's int
    "count": lambda v: type(v) is int and 0 <= v < BIG,
    "int": lambda v: type(v) is int and -BIG < v < BIG,
    "num": lambda v: (type(v) is int and -BIG < v < BIG) or (
        type(v) is float and math.isfinite(v)),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: type(v) is bool}


def _said(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Parts(Shape):
    """A list or an object (or null, where ``maybe``), then each of its parts."""

    KIND: ClassVar[type] = dict
    WORD: ClassVar[str] = "an object"
    maybe: bool

    def problem(self, value: Any, where: str) -> Optional[str]:
        if value is None and self.maybe:
            return None
        if not isinstance(value, self.KIND):
            return "%s: %s is not %s" % (where, _said(value), self.WORD)
        return self.parts(value, where)

    @abstractmethod
    def parts(self, value: Any, where: str) -> Optional[str]:
        """The first problem of ``value``'s parts, once it is of the kind."""


@dataclass(frozen=True)
class ListOf(_Parts):
    KIND: ClassVar[type] = list
    WORD: ClassVar[str] = "a list"
    item: Shape
    maybe: bool = False

    def parts(self, value: Any, where: str) -> Optional[str]:
        return _first((self.item, item, "%s[%d]" % (where, i)) for i, item in enumerate(value))


@dataclass(frozen=True)
class MapOf(_Parts):
    """An object of any keys, each value of one shape."""

    value: Shape
    maybe: bool = False

    def parts(self, value: Any, where: str) -> Optional[str]:
        return _first((self.value, item, "%s.%s" % (where, host_words(key, True)))
                      for key, item in value.items())


@dataclass(frozen=True)
class Record(_Parts):
    """An object whose named keys, where present, have their shapes; ``needs`` must be there."""

    keys: Dict[str, Shape]
    needs: Tuple[str, ...] = ()
    maybe: bool = False

    def parts(self, value: Any, where: str) -> Optional[str]:
        missing = next((key for key in self.needs if key not in value), None)
        if missing is not None:
            return "%s: no %s" % (where, missing)
        return _first((shape, value[key], "%s.%s" % (where, key))
                      for key, shape in self.keys.items() if key in value)


def _first(checks: Iterable[Tuple[Shape, Any, str]]) -> Optional[str]:
    """The first problem of ``checks``, each a shape, a value and where it is; or None."""
    return next((said for said in (shape.problem(value, where) for shape, value, where in checks)
                 if said), None)


COUNT, INT, NUM, STR, BOOL = (Kind(k) for k in ("count", "int", "num", "str", "bool"))
COUNT_, INT_, NUM_, STR_, BOOL_ = (Kind(k, maybe=True)
                                   for k in ("count", "int", "num", "str", "bool"))
TEXTS = ListOf(STR)

INSTANCE = Record({
    "uuid": STR_, "gi_id": INT, "profile": STR, "start": COUNT, "size": COUNT,
    "memory_mib": COUNT, "memory_used_mib": COUNT_, "busy": BOOL, "pids": ListOf(COUNT)},
    needs=("gi_id", "profile", "start", "size"))

GPU = Record({
    "index": COUNT, "uuid": STR_, "name": STR, "memory_mib": COUNT, "mig_capable": BOOL,
    "mig_mode": BOOL, "mig_pending": BOOL_, "cap_layers": TEXTS,
    "cap_layers_unavailable": MapOf(STR), "mig_profile_mib": MapOf(INT),
    "layout_version": STR_, "degraded": STR_,
    "instances": ListOf(INSTANCE),
    "memory_used_mib": COUNT_, "utilization_gpu": NUM_, "utilization_note": STR_,
    "processes": ListOf(Record({"pid": COUNT, "used_mib": COUNT_, "instance": STR_,
                                "job": STR_, "service": STR_}, needs=("pid",))),
    "health": Record({
        "temperature_c": NUM_, "slowdown_c": NUM_, "power_mw": NUM_, "power_limit_mw": NUM_,
        "ecc_volatile": Record({"corrected": COUNT_, "uncorrected": COUNT},
                               needs=("corrected", "uncorrected"), maybe=True),
        "throttle": ListOf(STR, maybe=True),
        "xid": ListOf(Record({"time": NUM, "xid": INT, "gi_id": INT_, "ci_id": INT_},
                             needs=("time", "xid"))),
        "xid_note": STR_, "unmeasured": TEXTS, "errors": TEXTS}, maybe=True),
}, needs=("index", "name"))

HELLO = Record({
    "protocol": INT, "agent_version": STR_, "backend": STR_, "host": STR_, "cpus": NUM,
    "memory_mib": COUNT, "limits": MapOf(STR), "driver_version": STR_,
    "privileges": Record({"root": BOOL, "mig_changes": BOOL, "reason": STR_}),
    "gpus": ListOf(GPU), "links": ListOf(TEXTS, maybe=True), "links_error": STR_,
    "problems": TEXTS, "methods": TEXTS, "features": TEXTS, "runtimes": MapOf(STR_),
    "runtimes_unavailable": MapOf(STR)}, needs=("protocol", "agent_version", "backend", "gpus"))

SNAPSHOT = Record({"host": STR_, "time": NUM_, "gpus": ListOf(GPU)}, needs=("gpus",))

JOB = Record({
    "id": STR, "key": STR, "name": STR_, "argv": TEXTS, "cwd": STR_, "gpus": ListOf(COUNT),
    "gpu_uuids": TEXTS, "instance": STR_,
    "mig": Record({"profile": STR, "start": COUNT_}, maybe=True), "memory_mib": COUNT_,
    "created_at": NUM_, "state": STR, "caps": TEXTS, "cap_notes": TEXTS, "exit_code": INT_,
    "reason": STR_, "pid": COUNT_, "started_at": NUM_, "ended_at": NUM_, "run_as": STR_,
    "cgroup": STR_, "runtime": STR_, "image": STR_, "container": STR_,
    "container_cgroup": STR_,
    "usage": Record({"since": NUM_, "until": NUM_, "samples": COUNT, "memory_peak_mib": COUNT_,
                     "memory_mean_mib": NUM_, "util_samples": COUNT, "util_mean": NUM_,
                     "util_note": STR_}, maybe=True),
}, needs=("id", "key", "state", "gpus", "pid"))

SUBSCRIBED = Record({"snapshot": Record(SNAPSHOT.keys, SNAPSHOT.needs, maybe=True),
                     "jobs": ListOf(JOB)}, needs=("jobs",))

SHAPES: Dict[str, Shape] = {  # by method: a call's answer, or a notification's params
    "hello": HELLO, "subscribe": SUBSCRIBED, "snapshot": SNAPSHOT, "job": JOB,
    "job.launch": JOB, "job.get": JOB, "job.stop": JOB,
    "job.list": Record({"jobs": ListOf(JOB)}, needs=("jobs",)),
    "job.logs": Record({"lines": TEXTS, "offset": COUNT, "data": STR}, needs=("lines",
                                                                              "offset")),
    "mig.plan": Record({"gpu": COUNT, "start": COUNT, "description": STR,
                        "layout_version": STR}, needs=("gpu", "start", "description",
                                                       "layout_version")),
    "mig.apply": Record({"profile": STR, "start": COUNT, "warning": STR_,
                         "instance": Record({"uuid": STR_}, needs=("uuid",))},
                        needs=("profile", "start", "instance")),
    "mig.destroy": Record({"destroyed": Record(INSTANCE.keys, maybe=True), "warning": STR_}),
    "mig.set_mode": Record({"mig_mode": BOOL_, "reset_required": BOOL_, "reset": BOOL_,
                            "changed": BOOL_, "warning": STR_}),
    "sim.add_process": Record({"pid": COUNT}, needs=("pid",))}  # the demo's load


def problem(method: str, value: Any) -> Optional[str]:
    """What is malformed in ``value``, the agent's answer to ``method`` (or the params of its
    notification ``method``): where and what, or None. Every answer the admin side reads is
    in ``SHAPES``; the others it does not read."""
    shape = SHAPES.get(method)
    return shape.problem(value, method) if shape is not None else None
