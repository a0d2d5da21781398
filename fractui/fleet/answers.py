"""What the admin side reads of an agent's answers, checked once where they come in.

A host's hello, its snapshots and its job records are read by the scheduler, the TUI, metrics and
usage accounting for the whole fleet. Each part read there is checked here to have the kind it is
read as, so that one broken or hostile agent cannot stop every scheduling pass or end an admin's
TUI with a traceback: what is malformed is refused at the host's edge, saying where and what
(``problem``). Keys this module does not name are passed on unread (a newer agent adds some);
a key that is missing reads as absent, as every reader takes it.

What is well formed is then mended (``mended``) to what every store keeps, so that no value
a host sends is one the store refuses (``StoreRefused`` stays the last defence): its text with
no NUL or lone surrogate, and each whole number the store keeps in a 32-bit column within it,
by the field's own rule (docs/decisions.md, "A host's values mended where they come in"). Its
lists and texts are taken to bounds far above what a host has (``ListOf.most``, ``Text.most``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, Iterable, List, Optional, Tuple

from fractui.fleet.client import host_words
from fractui.store.model import storable
from remote_agent.jobs.methods import MAX_LOG_BYTES
from remote_agent.jobs.output import PUSH_MAX_BYTES
from remote_agent.jobs.store import FINISHED
from remote_agent.rpc.jsonrpc import MAX_ANSWER_BYTES, MAX_ARG, MAX_ID, MAX_TEXT

BIG = 2 ** 63  # larger whole numbers than a 64-bit counter holds are nobody's MiB or pid
COLUMN_MOST = 2 ** 31 - 1  # the most a store's 32-bit column (PostgreSQL's INTEGER) keeps

Said = List[Tuple[str, str, bool]]
"""What ``mended`` changed that is to be said: where (its list indexes left out, so that it
is said once however many parts have it), what, and whether parts were left out (a list past
its bound, ``ListOf.most``): that is said in the host's state too, while its answers are so."""


class Shape(ABC):
    @abstractmethod
    def problem(self, value: Any, where: str) -> Optional[str]:
        """What is wrong with ``value``, found at ``where``, or None."""

    def mended(self, value: Any, where: str, said: Said) -> Any:
        """``value``, well formed (``problem`` found nothing), as every store keeps it: the
        same object where nothing changed; what is to be said of a change added to ``said``."""
        return value


@dataclass(frozen=True)
class Kind(Shape):
    """One JSON kind: ``count`` (a whole number from 0), ``int``, ``num`` (finite), ``bool``;
    ``null`` allowed too where ``maybe``. (Text is ``Text``'s.)"""

    name: str
    maybe: bool = False

    def problem(self, value: Any, where: str) -> Optional[str]:
        if value is None:
            return None if self.maybe else "%s: null is not %s" % (where, _WORDS[self.name])
        if _CHECKS[self.name](value):
            return None
        return "%s: %s is not %s" % (where, _said(value), _WORDS[self.name])


_WORDS = {"count": "a whole number from 0", "int": "a whole number", "num": "a number",
          "bool": "true or false", "small": "a whole number from 0 to %d" % COLUMN_MOST}
_CHECKS: Dict[str, Callable[[Any], bool]] = {  # bool is not a number here, though Python's int
    "count": lambda v: type(v) is int and 0 <= v < BIG,
    "small": lambda v: type(v) is int and 0 <= v <= COLUMN_MOST,
    "int": lambda v: type(v) is int and -BIG < v < BIG,
    "num": lambda v: (type(v) is int and -BIG < v < BIG) or (
        type(v) is float and math.isfinite(v)),
    "bool": lambda v: type(v) is bool}


@dataclass(frozen=True)
class Within(Shape):
    """A whole number of ``kind`` that the store keeps in a 32-bit column, from ``least`` to
    ``most``: past them ``clamped`` to the nearer (a count that only grew too large for the
    column), or else read as unknown (null: no ``what`` is past them, so the record that says
    one is malformed there, but the rest of it, a job's end, still stands); said either way."""

    kind: Kind
    what: str
    least: int = 0
    most: int = COLUMN_MOST
    clamped: bool = True

    def problem(self, value: Any, where: str) -> Optional[str]:
        return self.kind.problem(value, where)

    def mended(self, value: Any, where: str, said: Said) -> Any:
        if value is None or self.least <= value <= self.most:
            return value
        if self.clamped:
            kept = min(max(value, self.least), self.most)
            said.append((where, "%s: %s %d is past the %d to %d the store keeps: kept as %d"
                         % (where, self.what, value, self.least, self.most, kept), False))
            return kept
        said.append((where, "%s: malformed: %s is no %s (%d to %d): read as unknown" % (
            where, _said(value), self.what, self.least, self.most), False))
        return None


@dataclass(frozen=True)
class Text(Shape):
    """Text (or null, where ``maybe``) of at most ``most`` characters, as every store keeps it.
    What a host says is kept in memory, written to the store (read by every pass) and drawn by
    the TUI: past ``most``, far above what an agent sends there, it is cut, saying so (once
    for each place it is in) and in the text itself (``CUT``). Not where ``whole``: text that
    names something (a GPU's uuid, a profile, a layout's version, a job's id or key), which
    cut would name another, or that is read as a whole (a log's bytes in base64), is malformed
    past ``most`` instead; where ``exact``, also where mending it would change it; where
    ``ascii``, where it is not ASCII (a word of the protocol's, as a link's)."""

    most: int = MAX_TEXT
    maybe: bool = False
    whole: bool = False
    exact: bool = False
    ascii: bool = False

    CUT: ClassVar[str] = "\u2026 (cut: %d more characters)"

    def problem(self, value: Any, where: str) -> Optional[str]:
        if value is None:
            return None if self.maybe else "%s: null is not text" % where
        if not isinstance(value, str):
            return "%s: %s is not text" % (where, _said(value))
        if self.whole and len(value) > self.most:
            return "%s: %s is %d characters, more than the %d any agent sends there" % (
                where, _said(value), len(value), self.most)
        if self.ascii and not value.isascii():
            return "%s: %s is not ASCII" % (where, _said(value))
        if self.exact and storable(value) != value:
            return "%s: %s is not text with no NUL or lone surrogate (mended, it would name " \
                "another)" % (where, _said(value))
        return None

    def mended(self, value: Any, where: str, said: Said) -> Any:
        if value is None:
            return value
        kept = storable(value)
        if len(kept) <= self.most:
            return kept
        said.append((where, "%s: %d characters, past the %d kept: cut there" % (
            where, len(kept), self.most), False))
        return cut(kept, self.most)


def cut(text: str, most: int, more: int = 0) -> str:
    """``text`` kept to ``most`` characters: past them, or where ``more`` of it were left out
    already (a line that came in parts), cut there with ``Text.CUT`` saying how many more."""
    more += max(0, len(text) - most)
    return text[:most] + Text.CUT % more if more else text


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

    def mended(self, value: Any, where: str, said: Said) -> Any:
        return value if value is None else self.parts_mended(value, where, said)

    @abstractmethod
    def parts_mended(self, value: Any, where: str, said: Said) -> Any:
        """``value``, of the kind, with each of its parts ``mended``."""


@dataclass(frozen=True)
class ListOf(_Parts):
    """A list of ``item``s, of which the first ``most`` are taken: a host lists as many as it
    likes, and each is kept in memory, walked by every pass and drawn by the TUI; the rest
    are left out, said (and checked no further: a flood costs no more than its bound). Not
    where ``whole``: a list whose parts left out would change what it says (what a MIG plan
    destroys) is malformed past its bound."""

    KIND: ClassVar[type] = list
    WORD: ClassVar[str] = "a list"
    item: Shape
    maybe: bool = False
    most: int = 256
    whole: bool = False

    LEFT_OUT: ClassVar[str] = "the last %d left out"

    def parts(self, value: Any, where: str) -> Optional[str]:
        if self.whole and len(value) > self.most:
            return "%s: %d listed, more than the %d any host has" % (where, len(value),
                                                                   self.most)
        return _first((self.item, value[i], "%s[%d]" % (where, i)) for i in self.taken(value))

    def taken(self, value: List[Any]) -> Iterable[int]:
        """The indexes of the items taken, in order: past ``most``, the first."""
        return range(min(len(value), self.most))

    def history(self, left: List[Any]) -> bool:
        """Whether the items ``left`` out are history only, said in the log but not in the
        host's state (a host that keeps much of it is not failing): none here."""
        return False

    def parts_mended(self, value: Any, where: str, said: Said) -> Any:
        kept = list(self.taken(value))
        taken = [value[i] for i in kept]
        if len(value) > self.most:
            chosen = set(kept)
            left = [item for i, item in enumerate(value) if i not in chosen]
            said.append((where, "%s: %d listed, past the %d taken: %s" % (
                where, len(value), self.most, self.LEFT_OUT % (len(value) - self.most)),
                not self.history(left)))
        items = [self.item.mended(item, where + "[]", said) for item in taken]
        return value if len(taken) == len(value) and all(
            a is b for a, b in zip(items, value)) else items


@dataclass(frozen=True)
class JobsOf(ListOf):
    """A list of job records, of which past ``most`` those of jobs not ended are taken
    first, then those that ended last, as a host's status keeps them (``HostStatus.take``):
    an agent lists its jobs oldest first, and keeps the ended ones for days (its retention),
    so the first ``most`` taken left out the newest, those that run among them, which would
    read as jobs the agent does not have (the scheduler fails them)."""

    LEFT_OUT: ClassVar[str] = "%d left out (taken first: the records of jobs not ended, then " \
        "of those that ended last)"

    def history(self, left: List[Any]) -> bool:
        """Records of jobs that ended are history: a busy host keeps more of them than are
        taken for all of its retention, and read failing for that, it would read so for
        days while every job of it is known."""
        return all(_ended_last(record)[0] == 1 for record in left)

    def taken(self, value: List[Any]) -> Iterable[int]:
        if len(value) <= self.most:
            return range(len(value))
        return sorted(sorted(range(len(value)), key=lambda i: _ended_last(value[i]))[
            :self.most])


def _ended_last(record: Any) -> Tuple[int, float]:
    """How a job record ranks to be taken (lowest first): a job not ended, then those that
    ended last; what is no record, or says no end, last of all."""
    if not isinstance(record, dict):
        return 2, 0.0
    if record.get("state") not in FINISHED:
        return 0, 0.0
    when = record.get("ended_at")
    return 1, -when if type(when) in (int, float) and math.isfinite(when) else 0.0


@dataclass(frozen=True)
class MapOf(_Parts):
    """An object of any keys, each value of one shape; its first ``most`` keys taken, as a
    list's first items (``ListOf``)."""

    value: Shape
    maybe: bool = False
    most: int = 256

    def parts(self, value: Any, where: str) -> Optional[str]:
        taken = list(value.items())[:self.most]
        long = next((key for key, _item in taken if len(key) > IDENT_MOST), None)
        if long is not None:  # a key names its value (a profile, a runtime): never cut
            return "%s: a key of %d characters, more than the %d any agent sends there" % (
                where, len(long), IDENT_MOST)
        return _first((self.value, item, "%s.%s" % (where, host_words(key, True)))
                      for key, item in taken)

    def parts_mended(self, value: Any, where: str, said: Said) -> Any:
        # (its keys as they are: none is kept in a store's column but as JSON, which escapes)
        taken = dict(list(value.items())[:self.most]) if len(value) > self.most else value
        if taken is not value:
            said.append((where, "%s: %d keys, past the %d taken: the last %d left out" % (
                where, len(value), self.most, len(value) - self.most), True))
        items = {key: self.value.mended(item, where + ".*", said) for key, item in taken.items()}
        return value if taken is value and all(items[key] is value[key] for key in value) \
            else items


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

    def parts_mended(self, value: Any, where: str, said: Said) -> Any:
        changed = {key: shape.mended(value[key], "%s.%s" % (where, key), said)
                   for key, shape in self.keys.items() if key in value}
        return value if all(changed[key] is value[key] for key in changed) else dict(
            value, **changed)


def _first(checks: Iterable[Tuple[Shape, Any, str]]) -> Optional[str]:
    """The first problem of ``checks``, each a shape, a value and where it is; or None."""
    return next((said for said in (shape.problem(value, where) for shape, value, where in checks)
                 if said), None)


COUNT, INT, NUM, BOOL = (Kind(k) for k in ("count", "int", "num", "bool"))
COUNT_, INT_, NUM_, BOOL_ = (Kind(k, maybe=True) for k in ("count", "int", "num", "bool"))
SMALL = Kind("small")  # a GPU's index, a MIG slot, a profile's MiB: an INTEGER column's, if any
SMALL_ = Kind("small", maybe=True)

# The most characters of each text of one answer kept (Text.most): far above what an agent
# sends there, and below what a flood of them costs each pass, the store and the TUI. Cut
# past them, but for what names something, refused past them (docs/decisions.md).
IDENT_MOST = MAX_ID  # a name: a uuid, a profile, a layout's version, a job's id or key, a key
WORD_MOST = MAX_ID  # a word: a GPU's name (NVML's are at most 96 bytes), a feature, a method
LINK_MOST = 16  # a link between two GPUs: NV18, NVSWITCH, PIX, SYS (docs/protocol.md)
WORDS_MOST = MAX_TEXT  # other words, or a path: a state, a cwd (PATH_MAX), an image
WHY_MOST = 64 * 1024  # words that say why: a job's reason (a runtime's stderr), a problem
ARG_MOST = MAX_ARG  # a word of a job's argv (Linux's MAX_ARG_STRLEN)
LINE_MOST = PUSH_MAX_BYTES  # a push of a job's output (and a line of it kept to read): its most
ANSWERED_MOST = MAX_ANSWER_BYTES  # a line job.logs answers: a job's own, in one answer line
DATA_MOST = (MAX_LOG_BYTES + 2) // 3 * 4  # job.logs' bytes in base64

STR, STR_ = Text(), Text(maybe=True)
WORD, WORDS = Text(WORD_MOST), ListOf(Text(WORD_MOST))
WHY, WHY_ = Text(WHY_MOST), Text(WHY_MOST, maybe=True)
# what names something (a GPU's or an instance's uuid, a profile, a layout's version), and
# a job's id or key, what calls and the store name it by: never cut nor mended, as either
# would name another
IDENT = Text(IDENT_MOST, whole=True, exact=True)
IDENT_ = Text(IDENT_MOST, maybe=True, whole=True, exact=True)
WHYS = ListOf(WHY)

# The most of each list of one answer taken (ListOf.most; 256 where not named): far above
# what a host has (NVML's GPUs, a GPU's MIG instances, the agent's 16 XID events), and below
# what a flood of them costs each pass, the store and the TUI.
GPUS_MOST = 256
INSTANCES_MOST = 64
PROCESSES_MOST = 4096  # a GPU's processes, an instance's pids
XID_MOST = 16  # the agent keeps 16 (docs/protocol.md)
JOBS_MOST = 20000  # one answer's job records, and those a host's status keeps (HostStatus)
ARGV_MOST = 4096  # the agent takes no longer argv
LINES_MOST = 100000  # the most job.logs answers

INSTANCE = Record({
    "uuid": IDENT_, "gi_id": INT, "profile": IDENT, "start": SMALL, "size": SMALL,
    "memory_mib": COUNT, "memory_used_mib": COUNT_, "busy": BOOL,
    "pids": ListOf(COUNT, most=PROCESSES_MOST), "remade_of": ListOf(IDENT)},
    needs=("gi_id", "profile", "start", "size"))

GPU = Record({
    "index": SMALL, "uuid": IDENT_, "name": WORD, "memory_mib": COUNT, "mig_capable": BOOL,
    "mig_mode": BOOL, "mig_pending": BOOL_, "cap_layers": WORDS,
    "cap_layers_unavailable": MapOf(WHY), "mig_profile_mib": MapOf(SMALL),
    "layout_version": IDENT_, "degraded": WHY_,
    "instances": ListOf(INSTANCE, most=INSTANCES_MOST),
    "memory_used_mib": COUNT_, "utilization_gpu": NUM_, "utilization_note": WHY_,
    "processes": ListOf(Record({"pid": COUNT, "used_mib": COUNT_, "instance": IDENT_,
                                "job": IDENT_, "service": STR_}, needs=("pid",)),
                        most=PROCESSES_MOST),
    "health": Record({
        "temperature_c": NUM_, "slowdown_c": NUM_, "power_mw": NUM_, "power_limit_mw": NUM_,
        "ecc_volatile": Record({"corrected": COUNT_, "uncorrected": COUNT},
                               needs=("corrected", "uncorrected"), maybe=True),
        "throttle": ListOf(STR, maybe=True),
        "xid": ListOf(Record({"time": NUM, "xid": INT, "gi_id": INT_, "ci_id": INT_},
                             needs=("time", "xid")), most=XID_MOST),
        "xid_note": WHY_, "unmeasured": WHYS, "errors": WHYS}, maybe=True),
}, needs=("index", "name"))
GPUS = ListOf(GPU, most=GPUS_MOST)

HELLO = Record({
    "protocol": INT, "agent_version": STR_, "backend": STR_, "host": STR_, "cpus": NUM,
    "memory_mib": COUNT, "limits": MapOf(STR), "driver_version": STR_,
    "privileges": Record({"root": BOOL, "mig_changes": BOOL, "reason": WHY_}),
    "gpus": GPUS, "links": ListOf(ListOf(Text(LINK_MOST, whole=True, ascii=True), most=GPUS_MOST),
                    maybe=True, most=GPUS_MOST),
    "links_error": WHY_, "problems": WHYS, "methods": WORDS, "features": WORDS,
    "runtimes": MapOf(STR_), "runtimes_unavailable": MapOf(WHY)},
    needs=("protocol", "agent_version", "backend", "gpus"))

SNAPSHOT = Record({"host": STR_, "time": NUM_, "gpus": GPUS}, needs=("gpus",))

JOB = Record({
    "id": IDENT, "key": IDENT, "name": STR_, "argv": ListOf(Text(ARG_MOST), most=ARGV_MOST),
    "cwd": STR_,
    "gpus": ListOf(COUNT, most=GPUS_MOST), "gpu_uuids": ListOf(IDENT, most=GPUS_MOST),
    "instance": IDENT_, "mig": Record({"profile": IDENT, "start": SMALL_}, maybe=True),
    "memory_mib": COUNT_, "created_at": NUM_, "state": STR, "caps": WORDS, "cap_notes": WHYS,
    "exit_code": Within(INT_, "exit code a process returns", most=255, clamped=False),
    "reason": WHY_, "pid": COUNT_, "started_at": NUM_, "ended_at": NUM_, "run_as": STR_,
    "cgroup": STR_, "runtime": STR_, "image": STR_, "container": STR_,
    "container_cgroup": STR_, "last_line": WHY_,
    "usage": Record({"since": NUM_, "until": NUM_, "samples": Within(COUNT, "samples"),
                     "memory_peak_mib": Within(COUNT_, "MiB"), "memory_mean_mib": NUM_,
                     "util_samples": Within(COUNT, "samples"), "util_mean": NUM_,
                     "util_note": WHY_}, maybe=True),
}, needs=("id", "key", "state", "gpus", "pid"))
JOBS = JobsOf(JOB, most=JOBS_MOST)

SUBSCRIBED = Record({"snapshot": Record(SNAPSHOT.keys, SNAPSHOT.needs, maybe=True),
                     "jobs": JOBS}, needs=("jobs",))

SHAPES: Dict[str, Shape] = {  # by method: a call's answer, or a notification's params
    "hello": HELLO, "subscribe": SUBSCRIBED, "snapshot": SNAPSHOT, "job": JOB,
    "job.launch": JOB, "job.get": JOB, "job.stop": JOB,
    "job.list": Record({"jobs": JOBS}, needs=("jobs",)),
    "job.logs": Record({"lines": ListOf(Text(ANSWERED_MOST), most=LINES_MOST), "offset": COUNT,
                        "data": Text(DATA_MOST, whole=True)},
                       needs=("lines", "offset")),
    "mig.plan": Record({"gpu": SMALL, "gpu_uuid": IDENT_, "profile": IDENT, "start": SMALL,
                        "size": SMALL, "destroy": ListOf(INSTANCE, most=INSTANCES_MOST,
                                                               whole=True),
                        "description": WHY, "layout_version": IDENT},
                       needs=("gpu", "start", "description", "layout_version")),
    "mig.apply": Record({"profile": IDENT, "start": SMALL, "warning": WHY_,
                         "instance": Record({"uuid": IDENT_}, needs=("uuid",)),
                         "destroy": ListOf(INSTANCE, most=INSTANCES_MOST)},
                        needs=("profile", "start", "instance")),
    "mig.destroy": Record({"destroyed": Record(INSTANCE.keys, maybe=True), "warning": WHY_}),
    "mig.set_mode": Record({"mig_mode": BOOL_, "reset_required": BOOL_, "reset": BOOL_,
                            "changed": BOOL_, "warning": WHY_}),
    "sim.add_process": Record({"pid": COUNT}, needs=("pid",)),  # the demo's load
    # a followed job's new output: at most PUSH_MAX_BYTES of it a push (docs/protocol.md)
    "log": Record({"job": IDENT, "data": Text(LINE_MOST), "eof": BOOL_, "error": WHY_},
                  needs=("job",))}


def mended(method: str, value: Any, said: Said) -> Any:
    """``value``, the agent's well-formed answer to ``method`` (``problem`` found nothing), as
    every store keeps it (``Shape.mended``); what is to be said of it added to ``said``."""
    shape = SHAPES.get(method)
    return shape.mended(value, method, said) if shape is not None else value


def problem(method: str, value: Any) -> Optional[str]:
    """What is malformed in ``value``, the agent's answer to ``method`` (or the params of its
    notification ``method``): where and what, or None. Every answer the admin side reads is
    in ``SHAPES``; the others it does not read."""
    shape = SHAPES.get(method)
    return shape.problem(value, method) if shape is not None else None
