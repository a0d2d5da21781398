"""Placement mode: a pending job's ghost moved across the slots it could take, each with its
plan and score, then confirmed — by keyboard, or by dragging the job onto a GPU. A placed or
running job is moved the same way (``m``): the bar says it is stopped first (its grace), then
placed there, the slot held for it meanwhile.

``Placement`` is the state (pure: candidates in map order, which one the ghost is on);
``PreviewBar`` shows the plan and holds the mode's keys while it has focus, so leaving the mode
is only giving focus back. Candidates come from ``fractui.sched.preview`` in a thread worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from rich.text import Text
from textual.message import Message
from textual.widget import Widget

from fractui.sched.cordons import refusal
from fractui.sched.fleetview import USABLE, HostView, facts, model_name, request_of
from fractui.sched.manual import Unfit, by_hand
from fractui.sched.preview import Candidate
from fractui.sched.quota import HeldTo
from fractui.store.model import ON_HOST, Cordon, Job, ModeHold, Slot, adds_within, movable
from fractui.tui.actions import Action, Modal, bindings
from fractui.tui.themes import RichVariables


MOVE_WORDS = ("stops it on %s (its grace), then places it here, the slot held for it meanwhile "
              "(by no one else, scheduler or admin): ")


def same_slot(a: Candidate, b: Candidate) -> bool:
    """Whether two previews put the job in the same place, on the same MIG layout, to the same
    end: the MIG mode its launch turns the GPU to first (a reset), whether a change is pending
    there (made now or undone), whether its launch would be refused. Then what was shown is
    still what will happen (a share's free MiB may differ; its size may not)."""
    return _what_is_done(a) == _what_is_done(b)


def _what_is_done(c: Candidate) -> tuple:
    return (c.host, c.gpus, c.profile, c.start, c.memory_mib, c.layout_version, c.turns,
            c.pending, c.refusal)


def pending_slots(views: Sequence[HostView], jobs: Sequence[Job], cordons: Sequence[Cordon],
                  store_uid: str, job: Job, holds: Mapping[str, ModeHold], now: float
                  ) -> list[Candidate]:
    """The slot ``job`` takes on each GPU whose MIG mode change is pending (it waits for a GPU
    reset), which the preview's candidates leave out (such a GPU takes no new work, and a
    pass offers it no change): the one ``fractui place JOB HOST GPU`` records there, whose
    launch makes the change now (a reset) or undoes it, as the job's queue takes the GPU; with
    the same words and checks (``manual.by_hand``), so one its launch would refuse (a host
    that pins its modes, a job on the GPU) is shown with ``place``'s reason, never recorded.
    Only where the preview would look (the queue's hosts and GPU models, a GPU in service); a
    GPU of which the job can take nothing there (``Unfit``: no room left beside the jobs
    placed there for the same change, too) has none."""
    req = request_of(job)
    on_hosts = [j for j in jobs if j.state in ON_HOST and j.id != job.id]
    out = []
    for view in views:
        if view.state not in USABLE or not view.hello or (req.hosts and
                                                           view.name not in req.hosts):
            continue
        known = facts(view)
        for rec in view.gpu_records():
            index = int(rec.get("index", 0))
            pending = rec.get("mig_pending")
            if pending is None or bool(pending) == bool(rec.get("mig_mode")) or (
                    req.models and model_name(rec.get("name") or "") not in req.models) or \
                    refusal(cordons, jobs, view.name, (index,)) is not None:
                continue
            try:
                judged = by_hand(job, Slot(view.name, (index,)), known, store_uid, on_hosts,
                                 view.mode_fixed, holds, now, view.jobs.values(), rec)
            except Unfit:
                continue
            slot = judged.slot
            done = "made now" if (slot.profile is not None) == bool(pending) else "undone"
            said = "MIG %s is pending on %s gpu %d (MIG now %s, until a GPU reset); " \
                "placed here, %s" % (
                    "on" if pending else "off", view.name, index,
                    "on" if rec.get("mig_mode") else "off",
                    "it is %s: %s" % (done, judged.first(job)) if judged.refusal is None else
                    "it would be %s; %s" % (done, judged.refused(job)))
            out.append(Candidate(slot.host, slot.gpus, slot.profile, slot.start,
                                 slot.memory_mib, slot.charge, 0.0, said, pending=True,
                                 refusal=judged.refusal, turns=judged.turns))
    return out


@dataclass
class Placement:
    job: Job
    candidates: list[Candidate] = field(default_factory=list)
    """In map order: GPU (as the map draws them now: ``in_order``), start."""
    at: int = 0
    note: Optional[str] = None
    """What the admin must know before confirming (e.g. the GPU changed: a new plan)."""
    busy: Optional[str] = None
    """Work in flight ("finding slots…", "checking…"): nothing to confirm meanwhile."""
    held: HeldTo = field(default_factory=HeldTo)
    """The teams' quotas and use as the store was read (the scheduler's quotas, or this
    config's where it keeps none): what the job's charge is counted against."""
    agreed: Optional[Candidate] = None
    """The slot the admin agreed to place past the team's quota (a second confirm)."""

    @classmethod
    def of(cls, job: Job, found: Sequence[Candidate], rank: Mapping[tuple[str, int], int],
           held: HeldTo) -> "Placement":
        """The ghost starts on the scheduler's choice."""
        p = cls(job, list(found), held=held)
        p.in_order(rank)
        p.at = next((i for i, c in enumerate(p.candidates) if c.chosen), next(
            (i for i, c in enumerate(p.candidates) if c.refusal is None), 0))
        return p

    def in_order(self, rank: Mapping[tuple[str, int], int]) -> None:
        """The candidates in the map's order of GPUs (``rank``: each GPU's place as drawn,
        ``FleetModel.gpu_rank``), the ghost kept on its slot: ``j``/``k`` go to the GPU drawn
        below or above it whichever order ``o`` set, and as live updates reorder the map."""
        here = self.current
        self.candidates.sort(key=lambda c: (rank.get((c.host, c.gpus[0]), len(rank)),
                                            c.host, c.gpus, c.start or 0))
        self.at = next((i for i, c in enumerate(self.candidates) if c is here), 0)

    @property
    def current(self) -> Optional[Candidate]:
        return self.candidates[self.at] if self.candidates else None

    @property
    def moving(self) -> bool:
        """Whether this is a move: the job is placed or running somewhere already."""
        return movable(self.job.state)

    def past_quota(self) -> Optional[str]:
        """Why the slot the ghost is on takes the job's team past its quota, or None; a move
        lets go of what the job holds within the quota as it goes."""
        c = self.current
        if c is None:
            return None
        return self.held.past(self.job.team, adds_within(self.job, c.charge))

    def needs_consent(self) -> bool:
        """Whether confirming here must first be agreed to (past the quota, not yet agreed)."""
        return self.past_quota() is not None and self.agreed != self.current

    def step(self, by: int) -> None:
        """The next (or previous) slot, wrapping."""
        if self.candidates:
            self.at = (self.at + by) % len(self.candidates)

    def gpu_step(self, by: int) -> None:
        """The first slot of the next (or previous) GPU that has one, wrapping."""
        if not self.candidates:
            return
        here = self._gpu(self.at)
        n = len(self.candidates)
        i = self.at
        for _ in range(n):
            i = (i + by) % n
            if self._gpu(i) != here:
                break
        gpu = self._gpu(i)
        self.at = next(k for k, c in enumerate(self.candidates) if (c.host, c.gpus) == gpu)

    def _gpu(self, i: int) -> tuple[str, tuple[int, ...]]:
        c = self.candidates[i]
        return c.host, c.gpus

    def to_chosen(self) -> bool:
        for i, c in enumerate(self.candidates):
            if c.chosen:
                self.at = i
                return True
        return False

    def nearest(self, host: str, gpu: int, fraction: float, slices: int) -> bool:
        """The slot on ``host``'s ``gpu`` nearest ``fraction`` of its width (a drag's pointer);
        False if the job cannot go on that GPU."""
        on = [i for i, c in enumerate(self.candidates) if c.host == host and gpu in c.gpus]
        if not on:
            return False
        self.at = min(on, key=lambda i: abs((self.candidates[i].start or 0) / max(1, slices)
                                            - fraction))
        return True


class PlacementDone(Message):
    """The admin confirmed (``confirm``) or left the mode."""

    def __init__(self, confirm: bool) -> None:
        super().__init__()
        self.confirm = confirm


class PreviewBar(Widget, Modal, can_focus=True):
    """The plan of the slot the ghost is on, and the mode's keys while focused; as tall as
    its text, wrapped, so the whole plan shows at every width. A key that would do nothing
    now (a check under way, no slot, one slot) is not bound, and ``enter`` and ``esc`` say
    what they do in this placement: place or move, ask first past the quota, borrow."""

    ACTIONS = (
        Action("placement.next", "right,l", "move(1)", "next slot"),
        Action("placement.previous", "left,h", "move(-1)", "previous slot"),
        Action("placement.down", "down,j", "move_gpu(1)", "next GPU"),
        Action("placement.up", "up,k", "move_gpu(-1)", "previous GPU"),
        Action("placement.choice", "a", "chosen", "scheduler's choice"),
        Action("placement.confirm", "enter", "done(True)", "place here", dangerous=True),
        Action("placement.cancel", "escape", "done(False)", "cancel"),
    )
    BINDINGS = bindings(ACTIONS)
    DEFAULT_CSS = """
    PreviewBar {
        dock: bottom;
        height: auto;
        max-height: 12;
        background: $panel;
        border-top: hkey $accent;
        padding: 0 1;
        display: none;
    }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.placement: Optional[Placement] = None

    def show(self, placement: Optional[Placement]) -> None:
        self.placement = placement
        self.display = placement is not None
        self.changed()

    def changed(self) -> None:
        """Its placement changed (the slot, a note, a check under way): drawn again as tall as
        its text now is, so the plan is never cut, and its keys listed as they are now."""
        self.refresh(layout=True)
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> Optional[bool]:
        """Only the keys that do something now are bound (``esc`` always is)."""
        p = self.placement
        if p is None or action == "done" and parameters == (False,):
            return True
        if p.busy or p.current is None:
            return False
        if action == "move":
            return len(p.candidates) > 1
        if action == "move_gpu":
            return len({(c.host, c.gpus) for c in p.candidates}) > 1
        if action == "chosen":
            return any(c.chosen for c in p.candidates)
        if action == "done":  # a slot its launch would refuse is shown, never confirmed
            return p.current.refusal is None
        return True

    def what_now(self, binding_id: str) -> Optional[str]:
        p = self.placement
        if p is None:
            return None
        verb = "move" if p.moving else "place"
        if binding_id == "placement.cancel":
            return "don't " + verb
        if binding_id != "placement.confirm":
            return None
        if p.needs_consent():
            return verb + " past quota…"
        return verb + (" borrowed" if p.past_quota() is not None else " here")

    def render(self) -> Text:
        p = self.placement
        if p is None:
            return Text("")
        v = RichVariables(self.app)
        out = Text()
        out.append("%s #%d %s" % ("move" if p.moving else "place", p.job.id, p.job.name),
                   style="bold " + v["accent"])
        c = p.current
        if p.busy:
            out.append("  " + p.busy, style="dim")
        elif c is None:
            out.append("  no slot of the fleet can take it now" + (
                " (%s)" % p.job.reason if p.job.reason else ""), style=v["warning"])
        else:
            out.append("  slot %d of %d · %s · charge %.2f GPU%s" % (
                p.at + 1, len(p.candidates), "not scored" if c.pending else
                "score %.3f" % c.score, c.charge,
                " · the scheduler's choice" if c.chosen else ""), style="dim")
            past = p.past_quota()
            if past is not None:
                out.append(" · %s" % past, style="bold " + v["warning"])
        out.append("\n")
        if p.note:
            out.append(p.note + " ", style="bold " + v["warning"])
        if c is not None:
            if p.moving:
                out.append(MOVE_WORDS % p.job.slot.describe())  # type: ignore[union-attr]
            out.append(c.plan, style="" if c.refusal is None else v["warning"])
        return out

    def action_move(self, by: int) -> None:
        if self.placement is not None and not self.placement.busy:
            self.placement.step(by)
            self.post_message(GhostMoved())

    def action_move_gpu(self, by: int) -> None:
        if self.placement is not None and not self.placement.busy:
            self.placement.gpu_step(by)
            self.post_message(GhostMoved())

    def action_chosen(self) -> None:
        if self.placement is not None and self.placement.to_chosen():
            self.post_message(GhostMoved())

    def action_done(self, confirm: bool) -> None:
        self.post_message(PlacementDone(confirm))


class GhostMoved(Message):
    """The ghost is on another slot: redraw it and the plan."""
