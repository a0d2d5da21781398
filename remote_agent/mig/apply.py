"""Carry out a MIG change on a GPU, all or nothing.

The GPU is the only witness of what happened: after the steps of a change, and after any
failure, the layout is read back (a failed read is retried), never inferred from which calls
returned. When a step fails, the GPU is brought back to the layout it had before in rounds of
read, compare, undo the difference — the undo's own calls may fail too, and the next round tries
again. Only what the change touched is ever undone: the instances it destroyed are made again,
the instances it made are destroyed; every other instance is left alone.

The caller learns one of three things: the change stands (with the layout read after it, or why
that read failed); it failed and the GPU is exactly as before; or it failed, the GPU could not be
restored, and what it holds now (or that it cannot be read).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple, TypeVar

from remote_agent.gpu.backend import GpuBackend, NvmlCallError
from remote_agent.gpu.reset import GpuReset, ResetFailed
from remote_agent.mig.layout import Instance, Layout, Profile, placements

READ_TRIES = 3  # a read of the GPU after a change, or during a restore, is tried this often
RESTORE_ROUNDS = 4  # rounds of read, compare, undo the difference before giving up

T = TypeVar("T")


def describe_layout(layout: Optional[Layout]) -> str:
    if layout is None:
        return "(unreadable)"
    if not layout.instances:
        return "no instances"
    return ", ".join("%s@%d%s" % (i.profile, i.start, "" if i.uuid else " without its compute "
                                  "instance") for i in layout.instances)


@dataclass(frozen=True)
class Change:
    """Destroy these idle instances, then create ``create`` at ``start`` (when given)."""

    what: str  # for people, e.g. a plan's description
    destroy: Tuple[Instance, ...] = ()
    create: Optional[Profile] = None
    start: int = 0

    def expected(self, before: Layout) -> Counter:
        want = placements(before.instances) - placements(self.destroy)
        if self.create is not None:
            want[(self.create.name, self.start, True)] += 1
        return want

    def created(self, layout: Optional[Layout]) -> Optional[Instance]:
        """The instance this change made, as ``layout`` shows it (None if it does not)."""
        if self.create is None or layout is None:
            return None
        return next((i for i in layout.instances
                     if (i.profile, i.start) == (self.create.name, self.start)), None)


@dataclass(frozen=True)
class Applied:
    """A change that stands. ``layout`` is the GPU as read after it; None when every read
    failed (``unread`` is the last failure) though every step had succeeded."""

    layout: Optional[Layout]
    unread: Optional[NvmlCallError] = None


class ChangeFailed(Exception):
    """A change failed. ``restored`` says whether the GPU is exactly as before; ``now`` is what
    it holds as last read (None: it could not be read); ``errors`` are the failures met while
    restoring. ``cause`` is the NVML error that stopped the change (None when every step
    succeeded but the GPU did not show the result)."""

    def __init__(self, what: str, cause: Optional[NvmlCallError], problem: str, before: Any,
                 now: Any, restored: bool, errors: List[NvmlCallError],
                 show: Callable[[Any], str]):
        self.what = what
        self.cause = cause
        self.problem = problem
        self.before = before
        self.now = now
        self.restored = restored
        self.errors = errors
        self.in_use = False  # processes or instances on the GPU stopped it
        if restored:
            tail = "every step already done was undone; the GPU is as it was"
        elif now is None:
            tail = "the GPU could NOT be restored and cannot be read (%s); before it held %s" % (
                errors[-1] if errors else "no read succeeded", show(before))
        else:
            tail = "the GPU could NOT be restored%s: it now holds %s; before it held %s" % (
                " (%s)" % errors[-1] if errors else "", show(now), show(before))
        super().__init__("%s failed: %s; %s" % (what, problem, tail))


def apply_change(backend: GpuBackend, index: int, before: Layout, change: Change) -> Applied:
    """Carry out ``change`` on a GPU whose layout is ``before`` (the caller holds the MIG lock)."""
    try:
        for victim in change.destroy:
            backend.destroy_instance(index, victim.gi_id)
        if change.create is not None:
            backend.create_instance(index, change.create, change.start)
    except NvmlCallError as err:
        raise restore(backend, index, before, change, err, str(err)) from err
    want = change.expected(before)
    layout, done, unread = _read_back(lambda: backend.layout(index),
                                      lambda read: placements(read.instances) == want)
    if done or layout is None:
        return Applied(layout, unread)
    raise restore(backend, index, before, change, None, (
        "every step succeeded, yet the GPU then held %s" % describe_layout(layout)))


def restore(backend: GpuBackend, index: int, before: Layout, change: Change,
            cause: Optional[NvmlCallError], problem: str) -> ChangeFailed:
    """Put back what ``change`` touched, in rounds, and say how that ended (as the error to
    raise: ``problem`` says why the change is being undone)."""
    want = placements(before.instances)
    kept = {i.gi_id for i in before.instances} - {v.gi_id for v in change.destroy}
    goal = placements(change.destroy)

    def undo(now: Layout) -> None:
        touched = [i for i in now.instances if i.gi_id not in kept]
        extra = placements(touched) - goal
        for inst in touched:
            if extra[inst.placed] > 0:
                extra[inst.placed] -= 1
                backend.destroy_instance(index, inst.gi_id)
        for (name, start, with_compute), n in (goal - placements(touched)).items():
            for _ in range(n):
                backend.create_instance(index, before.geometry.profile(name), start, with_compute)

    errors: List[NvmlCallError] = []
    now = _settle(lambda: backend.layout(index), lambda read: placements(read.instances) == want,
                  undo, errors)
    restored = now is not None and placements(now.instances) == want
    return ChangeFailed(change.what, cause, problem, before, now, restored, errors,
                        describe_layout)


def remade(backend: GpuBackend, index: int, idle: Layout, failed: ChangeFailed) -> ChangeFailed:
    """MIG off ``failed``: with the mode put back, the idle instances of ``idle`` (the layout
    before) it destroyed first made again at their places, so the GPU is as it was; says how
    that ended (as the error to raise, with ``failed``'s cause and problem). With the mode not
    put back they are not made (the GPU is degraded), and the error says they are gone."""
    if not failed.restored:
        return ChangeFailed(failed.what, failed.cause, "%s (its idle instances, destroyed "
                            "first, are not made again: %s)" % (failed.problem, ", ".join(
                                i.label() for i in idle.instances)), failed.before, failed.now,
                            False, failed.errors, _show_mode)
    again = restore(backend, index, idle, Change(failed.what, destroy=idle.instances),
                    failed.cause, failed.problem)
    again.errors[:0] = failed.errors
    again.in_use = failed.in_use
    return again


def _settle(read: Callable[[], T], settled: Callable[[T], bool], undo: Callable[[T], None],
            errors: List[NvmlCallError]) -> Optional[T]:
    """Rounds of read, then undo what the read shows, until a read shows the GPU settled; a
    failed undo is tried again by the next round. The last round only reads: never trust an
    action without reading what it did. Returns the last read (None if it failed)."""
    now: Optional[T] = None
    for round_no in range(RESTORE_ROUNDS):
        now = _read(read, errors)
        if now is None or settled(now) or round_no == RESTORE_ROUNDS - 1:
            break
        try:
            undo(now)
        except NvmlCallError as err:
            errors.append(err)
    return now


def _read(read: Callable[[], T], errors: List[NvmlCallError]) -> Optional[T]:
    """One read, a failed one tried again; None when every try failed."""
    for _ in range(READ_TRIES):
        try:
            return read()
        except NvmlCallError as err:
            errors.append(err)
    return None


def _read_back(read: Callable[[], T], done: Callable[[T], bool]
               ) -> Tuple[Optional[T], bool, Optional[NvmlCallError]]:
    """Read after a change until a read shows it done, a read that fails or does not show it
    yet being tried again: (the last good read, whether it shows the change, the last failure)."""
    last: Optional[T] = None
    failure: Optional[NvmlCallError] = None
    for _ in range(READ_TRIES):
        try:
            value = read()
        except NvmlCallError as err:
            failure = err
            continue
        if done(value):
            return value, True, failure
        last = value
    return last, False, failure


def set_mode(backend: GpuBackend, index: int, enabled: bool,
             before: Tuple[bool, bool]) -> Optional[Tuple[bool, bool]]:
    """Ask for MIG mode on or off on a GPU whose (current, pending) mode is ``before``; returns
    the mode read after (None if it could not be read), or raises ChangeFailed."""
    what = "turning MIG mode %s on GPU %d" % ("on" if enabled else "off", index)
    try:
        backend.set_mig_mode(index, enabled)
    except NvmlCallError as err:
        raise restore_mode(backend, index, before, what, err, str(err)) from err
    mode, done, _ = _read_back(lambda: backend.mig_mode(index), lambda read: read[1] == enabled)
    if done or mode is None:
        return mode
    raise restore_mode(backend, index, before, what, None,
                       "NVML accepted it, yet the GPU then read %s" % _show_mode(mode))


def reset_to_mode(backend: GpuBackend, resetter: GpuReset, index: int, uuid: str,
                  enabled: bool, before: Tuple[bool, bool],
                  pids: Callable[[], List[int]]) -> Optional[Tuple[bool, bool]]:
    """Reset a GPU (``index``, named to nvidia-smi by its ``uuid``, the board's own name)
    whose MIG mode ``enabled`` is pending, so that it takes effect, if ``pids``
    (the processes on it, anyone's) finds none; the caller holds the MIG lock. The agent's own
    NVML session is shut down meanwhile (``GpuBackend.detached``): the driver refuses a reset
    while any client is attached. Returns the mode read after (None if it could not be read),
    or raises ChangeFailed with the mode asked back to ``before``, the (current, pending) mode
    the GPU had before the call: nothing pending unless it was so before (``in_use`` set when
    processes stopped it)."""
    what = "resetting GPU %d to turn MIG mode %s" % (index, "on" if enabled else "off")
    try:
        running = pids()
    except NvmlCallError as err:
        raise restore_mode(backend, index, before, what, err, "its processes could not be "
                           "read (%s), and a reset needs none" % err) from err
    if running:
        failed = restore_mode(backend, index, before, what, None, (
            "it has processes (pids %s), and a reset needs none" % ", ".join(map(str, running))))
        failed.in_use = True
        raise failed
    try:
        with backend.detached():
            resetter.reset(uuid)
    except ResetFailed as err:
        raise restore_mode(backend, index, before, what, None, str(err)) from err
    except NvmlCallError as err:  # NVML would not shut down: nothing was reset
        raise restore_mode(backend, index, before, what, err, "NVML could not be shut down "
                           "for the reset (%s)" % err) from err
    mode, done, _ = _read_back(lambda: backend.mig_mode(index),
                               lambda read: read == (enabled, enabled))
    if done or mode is None:
        return mode
    raise restore_mode(backend, index, before, what, None,
                       "the reset ran, yet the GPU then read %s" % _show_mode(mode))


def restore_mode(backend: GpuBackend, index: int, before: Tuple[bool, bool], what: str,
                 cause: Optional[NvmlCallError], problem: str) -> ChangeFailed:
    """Ask a GPU's mode back to ``before`` (current, pending), in rounds, and say how that
    ended (as the error to raise: ``problem`` says why the change is being undone)."""
    errors: List[NvmlCallError] = []
    now = _settle(lambda: backend.mig_mode(index), lambda read: read == before,
                  lambda _: backend.set_mig_mode(index, before[1]), errors)
    return ChangeFailed(what, cause, problem, before, now, now == before, errors, _show_mode)


def _show_mode(mode: Tuple[bool, bool]) -> str:
    current, pending = mode
    return "MIG mode %s%s" % ("on" if current else "off", "" if current == pending else
                              " (%s after the next reset)" % ("on" if pending else "off"))
