"""The GPU detail view (``d`` on the map, or ``enter`` on a free slice): one GPU's instances
(MIG) or shares, every process on it as its agent reports them — which job it is, or none
(outside fractui) — and its host's state and error in full, which the map cuts to a line.

It reads what the fleet screen already holds, once a second: no I/O of its own. Between the
GPU's line and its tables, its health (temperature, power, ECC, throttling, XID errors) over
sparklines of its utilisation and memory (fractui.tui.health).

What an admin does to the GPU: take it out of service (``C`` cordon, ``D`` drain, ``U`` back),
and MIG by hand (``M`` mode on/off, ``X`` destroy an idle instance) — each change planned by
fractui.sched.mig_change, shown and confirmed, carried out and audited as ``fractui mig`` does
(fractui.mig_by_hand), on a worker thread. None is bound ``--readonly``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from textual import work
from textual.worker import Worker, WorkerState
from textual.app import ComposeResult
from textual.message import Message
from textual.containers import VerticalScroll
from textual.geometry import Region
from textual.screen import ModalScreen, Screen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from fractui.fleet.client import AgentCallError
from fractui.fleet.host import AnswerLost, HostStatus, HostUnavailable
from fractui.mig_by_hand import carry_out
from fractui.sched.copies import judged, unheld
from fractui.sched.cordons import gpu_service, refusal
from fractui.sched.fleetview import (ACTIVE_AGENT_STATES, booked_layout, gpu_geometry, lists,
                                     mps_layer, jobs_by_host, not_started, outside_mib, unshown)
from fractui.sched.mig_change import (Fit, MigChange, create_refused, fits, free_runs,
                                      placement_layout, plan_create, plan_destroy, plan_mode,
                                      unfit_run)
from fractui.store.access import Denied
from fractui.store.base import StoreError
from fractui.store.intents import Asker
from fractui.store.model import Job
from fractui.tui.actions import Action, KeyLine, Keyed, bind, bindings, key_named
from fractui.tui.health import HealthPanel, gpu_series
from fractui.tui.history import History
from fractui.tui.jobrows import gpu_of, mib_text
from fractui.tui.jobs import ConfirmScreen
from fractui.tui.model import StoreView, short_model
from fractui.tui.oneatatime import unforeseen
from fractui.tui.parts import BetweenParts
from fractui.tui.source import Source
from fractui.tui.themes import RichVariables
from remote_agent import MODE_RESET
from remote_agent.mig.layout import Geometry

REFRESH_S = 1.0
TABLE_TOP = 3
"""The lines of the tables' text above the first row of the instances or shares: a blank
line, the table's title, its columns' names."""
MIG_CALL_S = 120.0  # a MIG change may wait on NVML (creating, destroying, a mode change)
LABEL_W = max(len(label) for label in ("host", "error", "gpu 0", "uuid", "service", "health"))
"""The view's labels' column (its lines above the health's and the health's own), so every
line's words begin in one column whichever labels the GPU has."""
WHY_INDENT = 2
"""The MIG picker's indent of why a profile does not fit, under its line."""
NONE_FITS = "none fits"
"""The profile column of a run of free MIG slices in which no profile can be made alone now
(mig_change.unfit_run): free, but of no use until an instance beside it goes."""
log = logging.getLogger("fractui.tui")


@dataclass(frozen=True)
class Judgement:
    """Each MIG profile of a GPU's model (``geometry``) judged on the GPU as it is now: the
    model is kept with them, since a picker listing another model's profiles acts on none."""
    geometry: Geometry
    fits: Sequence[Fit]


Judged = Union[Judgement, str]
"""Each MIG profile judged on a GPU as it is now, or why no instance can be made there."""


@dataclass(frozen=True)
class Holder:
    """What a row of the instances or shares holds: ``enter`` opens ``job_id``'s screen, or
    says ``why`` there is none. ``row`` names the row (its instance, its agent job), so the
    cursor stays on it while rows above it come and go."""
    job_id: Optional[int]
    why: str = ""
    row: str = ""
    slices: frozenset[int] = frozenset()
    """A run of free MIG slices: its slices, by which the cursor keeps to the run as it grows
    or shrinks (an instance beside it destroyed or made), its name changing with it."""


def _job_names(status: HostStatus, store: Optional[StoreView]
               ) -> dict[str, tuple[str, Holder]]:
    """Agent job id -> its name and what its row holds: "#12 train-3", the store's job 12;
    else "host/j3 name", with no job screen: a copy of a store job that no active job of the
    store holds (a late or stale one, in ``copies.judged``'s words, as the jobs view says
    it), or a job launched by hand."""
    by_key = {j.key(store.uid): j for j in store.jobs} if store else {}
    shown = {j.id: j for j in store.jobs + (store.ended or ())} if store else {}
    out: dict[str, tuple[str, Holder]] = {}
    for record in status.jobs.values():
        agent_id = str(record.get("id"))
        job: Optional[Job] = by_key.get(record.get("key") or "")
        if job is not None:
            out[agent_id] = ("#%d %s" % (job.id, job.name), Holder(job.id, row=agent_id))
            continue
        name = "%s/%s %s" % (status.name, agent_id, record.get("name") or "")
        copy = judged(unheld(status.name, (record,), set(), store.uid), shown, store.stale,
                      store.uid, after=False) if store else []
        out[agent_id] = (name, Holder(None, "%s is %s: it has no job screen of its own" % (
            name, copy[0][1]) if copy else "%s was launched on its host, not through the "
            "store: it has no job screen" % name, agent_id))
    return out


def absent(status: Optional[HostStatus], host: str, index: int) -> str:
    """Why GPU ``index`` of ``host`` is not shown, naming what is missing: the host (not in
    the fleet: a name no config lists, or one taken out of it), its snapshot (the host not
    reachable now), or the GPU in it. ``enter`` and the MIG keys said the GPU was not in its
    host's snapshot when there was no host."""
    if status is None:
        return "%s is not in the fleet" % host
    if status.snapshot is None:
        return "%s is not reachable now (%s): its GPUs are not known" % (host, status.state)
    return "gpu %d is not in %s's snapshot" % (index, host)


def free_share(gpu: Mapping[str, Any], live: list[dict],
               placed: Sequence[Job] = ()) -> Optional[int]:
    """The MiB of a GPU without MIG that no share holds, nor a process outside fractui
    (``outside_mib``), nor a job ``placed`` there and not yet started (placement books its
    slot): the room left for another share; none beside a whole-GPU job; None where the
    snapshot has no memory figure for the GPU (0 read as full)."""
    if not gpu.get("memory_mib"):
        return None
    shares = [r.get("memory_mib") for r in live] + [j.slot.memory_mib for j in placed
                                                    if j.slot is not None]
    if not all(shares):
        return 0
    return max(0, int(gpu["memory_mib"]) - sum(map(int, shares)) - outside_mib(gpu))


def placed_on(status: HostStatus, index: int, store: Optional[StoreView]) -> list[Job]:
    """The store's jobs decided onto GPU ``index`` of the host (placed; a move's held target)
    that its agent does not run yet: their room is booked (as placement and the map count
    it), though no row of the view is theirs."""
    if store is None:
        return []
    return [j for j in not_started(jobs_by_host(store.jobs).get(status.name, ()),
                                   status.jobs.values(), store.uid)
            if index in j.slot.gpus]  # type: ignore[union-attr]


def describe(status: Optional[HostStatus], host: str, index: int, store: Optional[StoreView],
             warning: str, cursor: Optional[int] = None
             ) -> tuple[RenderableType, RenderableType, list[Holder]]:
    """The view's text: the GPU and its host (above the health widget); its instances or
    shares and its processes (below it), the row ``cursor`` of the instances or shares drawn
    reversed; and what each of those rows holds, in order (``enter`` opens its job)."""
    if status is None:
        return Text(absent(status, host, index), style=warning), Text(""), []
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold", no_wrap=True, min_width=LABEL_W)
    head.add_column(overflow="fold")
    head.add_row("host", Text.assemble((status.name, "bold"), "  " + status.state))
    if status.error:
        head.add_row("error", Text(status.error, style=warning))
    gpu = gpu_of(status, index)
    if gpu is None:
        head.add_row("gpu %d" % index, Text("not reported by the host", style=warning))
        return head, Text(""), []
    util = gpu.get("utilization_gpu")
    pending = gpu.get("mig_pending")
    head.add_row("gpu %d" % index, BetweenParts(Text("%s · %s%s · %s used of %s · util %s" % (
        short_model(gpu.get("name", "?")), "MIG on" if gpu.get("mig_mode") else "MIG off"
        if gpu.get("mig_capable") else "no MIG", "" if pending is None or bool(pending) == bool(
            gpu.get("mig_mode")) else " (%s after the next GPU reset)" % (
                "on" if pending else "off"), mib_text(gpu.get("memory_used_mib")),
        mib_text(gpu.get("memory_mib")),
        "n/a (%s)" % (gpu.get("utilization_note") or "not reported") if util is None
        else "%d%%" % util))))  # (on at 80 columns between parts, not inside one)
    head.add_row("uuid", gpu.get("uuid") or "—")
    out = gpu_service(store.cordons, store.jobs, status.name, index) if store else None
    shut = barred = ""
    if out is not None and store is not None:
        # what C, D and U here change: seen here, not only on the map; out of service,
        # placement gives it nothing (cordons.fenced): the free rows' room stays said, in the
        # service line's words, with why no job goes there
        head.add_row("service", Text(out, style=warning))
        shut = " — " + out
        barred = "; %s" % refusal(store.cordons, store.jobs, status.name, (index,))
    names = _job_names(status, store)
    live = [r for r in status.jobs.values() if r.get("state") in ACTIVE_AGENT_STATES
            and index in (r.get("gpus") or ())]
    by_pid = {r.get("pid"): names[str(r.get("id"))][0] for r in live}
    by_instance = {r.get("instance"): names[str(r.get("id"))] for r in live
                   if r.get("instance")}
    place = "%s gpu %d" % (status.name, index)
    held: list[Holder] = []
    parts: list[RenderableType] = [Text("")]
    if gpu.get("mig_mode"):
        t = Table(title="instances", title_justify="left", box=None, padding=(0, 2, 0, 0),
                  header_style="bold")
        for col in ("profile", "slices", "memory used/total", "job", "pids"):
            t.add_column(col, no_wrap=True)
        # an instance its agent makes for a job, not in the snapshot yet: the job's row, where
        # placement books it (an idle twin there its own, idle ones in its way gone), as the
        # map draws it
        full = booked_layout(gpu, live)
        booked = full if unshown(gpu, live) else None
        instances = list(gpu.get("instances") or ())
        if booked is not None:
            kept = {i.gi_id for i in booked.layout.instances}
            owner = {gi: str(r.get("id")) for gi, r in booked.making.items()}
            instances = [dict(i, made_for=owner[i["gi_id"]]) if i.get("gi_id") in owner else i
                         for i in instances if i.get("gi_id") in kept] + [
                {"start": i.start, "size": i.size, "profile": i.profile,
                 "made_for": owner[i.gi_id]} for i in booked.made]
        # the slices no instance holds are rows among them, as the map draws them: free, and
        # whether a profile can be made in them alone now (the planner's rules)
        layout = placement_layout(full, placed_on(status, index, store))[0]
        free = [{"start": a, "size": b - a + 1, "free": True,
                 "unfit": None if layout is None else unfit_run(layout, a, b)}
                for a, b in free_runs(dict(gpu, instances=instances), layout)]
        for inst in sorted(instances + free, key=lambda i: i.get("start", 0)):
            slots = "%d-%d" % (inst.get("start", 0),
                               inst.get("start", 0) + inst.get("size", 1) - 1)
            if inst.get("free"):
                unfit = inst["unfit"]
                held.append(Holder(None, "no job on %s's slices %s: no instance holds them, "
                                   "they are free%s%s" % (
                                       place, slots, "" if unfit is None else
                                       ", but no MIG profile fits in them alone now: %s" % unfit,
                                       barred), "free " + slots,
                                   frozenset(range(inst["start"],
                                                   inst["start"] + inst["size"]))))
                t.add_row("—" if unfit is None else NONE_FITS, slots, "—", "free" + shut, "—",
                          style=_at(cursor, len(held) - 1))
                continue
            holder = names[inst["made_for"]] if "made_for" in inst else by_instance.get(
                inst.get("uuid"))
            job = holder[0] + (" (being made)" if "made_for" in inst else "") if holder else (
                "being made" if inst.get("uuid") is None else
                "in use outside fractui" if inst.get("busy") else "idle")
            row = inst.get("uuid") or "slices " + slots  # (one being made has no uuid)
            held.append(dataclasses.replace(holder[1], row=row) if holder else Holder(
                None, "no job on %s's %s at slices %s: it is %s" % (
                    place, inst.get("profile", "?"), slots, job), row))
            t.add_row(inst.get("profile", "?"), slots,
                      "%s/%s" % (mib_text(inst.get("memory_used_mib")),
                                 mib_text(inst.get("memory_mib"))),
                      job, ",".join(map(str, inst.get("pids") or ())) or "—",
                      style=_at(cursor, len(held) - 1))
        if not held:  # (no instance, and no MIG table to say which slices are free)
            held.append(Holder(None, "no job on %s: it has no MIG instance" % place))
            t.add_row("none", "", "", "", "", style=_at(cursor, 0))
        parts.append(t)
    else:
        t = Table(title="shares", title_justify="left", box=None, padding=(0, 2, 0, 0),
                  header_style="bold")
        for col in ("job", "share", "pid"):
            t.add_column(col, no_wrap=True)
        for r in live:
            name, holder = names[str(r.get("id"))]
            held.append(holder)
            t.add_row(name, mib_text(r.get("memory_mib")) if r.get(
                "memory_mib") else "whole GPU", str(r.get("pid") or "—"),
                style=_at(cursor, len(held) - 1))
        # the room left, a row as an idle MIG instance is: what another share could take
        left = free_share(gpu, live, placed_on(status, index, store))
        room = mib_text(left)
        held.append(Holder(None, "no job on the free memory of %s%s: %s" % (
            place, " (nothing holds a share of it)" if not live else "",
            "its memory is not in the snapshot" if left is None
            else "%s left for a share" % room) + barred, "free"))
        t.add_row("free", room + shut, "—", style=_at(cursor, len(held) - 1))
        parts.append(t)
    parts.append(Text(""))
    p = Table(title="processes", title_justify="left", box=None, padding=(0, 2, 0, 0),
              header_style="bold")
    for col in ("pid", "user", "memory", "instance", "job"):
        p.add_column(col, no_wrap=True)
    where = {i.get("uuid"): "%s@%s" % (i.get("profile"), i.get("start"))
             for i in gpu.get("instances") or ()}
    for proc in sorted(gpu.get("processes") or (), key=lambda q: -(q.get("used_mib") or 0)):
        inst = proc.get("instance")
        p.add_row(str(proc.get("pid")), "—", mib_text(proc.get("used_mib")),
                  "—" if inst is None else where.get(inst, str(inst)),
                  by_pid.get(proc.get("pid")) or by_instance.get(inst, ("",))[0]
                  or names.get(str(proc.get("job")), ("",))[0] or Text(
                      "the jobs' MPS server" if mps_layer(proc)
                      else "outside fractui", style="dim"))
    if not gpu.get("processes"):
        p.add_row("none", "", "", "", "")
    parts.append(p)
    parts.append(Text("user: the agent does not report processes' users", style="dim"))
    return head, Group(*parts), held


def _at(cursor: Optional[int], row: int) -> str:
    """The style of ``row``: reversed under the cursor, as the map's cursor is drawn."""
    return "reverse bold" if row == cursor else ""


class MigDone(Message):
    """A MIG change by hand was made (or refused, or failed: ``error``)."""

    def __init__(self, change: MigChange, said: str, error: bool = False) -> None:
        super().__init__()
        self.change = change
        self.said = said
        self.error = error


class MigPlanned(Message):
    """The agent's plan for an instance asked for by hand, or why there is none."""

    def __init__(self, change: Optional[MigChange], error: str = "") -> None:
        super().__init__()
        self.change = change
        self.error = error


class ProfileList(OptionList, inherit_bindings=False):
    """The profiles to pick from, with keys of fractui's: an id each (``[tui] keys``) and what
    each does in the picker's hints and ``?``."""

    ACTIONS = (
        Action("profile.choose", "enter", "select", "choose",
               "Make an instance of this profile (the agent's plan shown and asked first); "
               "on one that does not fit now, say why"),
        Action("profile.down", "down,j", "cursor_down", "next profile", show=False),
        Action("profile.up", "up,k", "cursor_up", "previous profile", show=False),
        Action("profile.top", "home,g", "first", "first profile", show=False),
        Action("profile.bottom", "end,G", "last", "last profile", show=False),
    )
    BINDINGS = bindings(ACTIONS)


class ProfileScreen(ModalScreen[Optional[str]], Keyed, inherit_bindings=False):
    """Which MIG profile to make an instance of: the GPU model's, each with its share of the
    GPU, those that fit now first with the slot they would start at, then the others dimmed
    with why not (judged on the snapshot: an admin chose 7g.80gb beside a busy instance and
    learnt only after), judged again once a second while it is open (the scheduler makes
    and ends instances meanwhile). ``enter`` picks one that fits, and on one that does not
    says why and stays; ``esc`` makes nothing. Its keys are listed under it, where the GPU
    view's were (no screen lists its keys while another is over it)."""

    DEFAULT_CSS = """
    ProfileScreen { align: center middle; }
    ProfileScreen > OptionList { width: 72; max-width: 100%; height: auto; max-height: 80%;
                                 border: round $accent; background: $panel; }
    """
    ACTIONS = (
        Action("profile.cancel", "escape", "dismiss(None)", "cancel", "Make no instance"),
        # a modal screen ends the chain of bindings before the app's: its ? and ctrl+c here
        Action("profile.help", "question_mark", "app.help", "help",
               "Every key here, with its id for [tui] keys"),
        Action("profile.quit", "ctrl+c", "app.quit", "quit", show=False),
    )
    BINDINGS = bindings(ACTIONS)

    def __init__(self, where: str, judge: Callable[[], Judged], judged: Judgement,
                 allowed_by: Callable[[str], str]) -> None:
        """``judge``: each profile judged on the GPU as its snapshot is now (``judged``, as
        ``N`` was pressed), or why none can be made there now; ``allowed_by``: for a
        profile, how this admin destroys the idle instances in its way (said with why it
        does not fit)."""
        super().__init__()
        self.where = where
        self.geometry = judged.geometry
        """The model whose profiles are listed: the GPU's as ``N`` was pressed."""
        self.judge = judge
        self.judged = {f.profile.name: f for f in judged.fits}
        self.allowed_by = allowed_by

    def compose(self) -> ComposeResult:
        yield KeyLine(("profile.",))
        menu = ProfileList(*self._options())
        menu.border_title = "new MIG instance on %s" % self.where
        yield menu

    def on_mount(self) -> None:
        self.set_interval(REFRESH_S, self.judge_again)

    def _options(self) -> list[Option]:
        return [Option(self._line(f), id=name) for name, f in self.judged.items()]

    def judge_again(self) -> bool:
        """The profiles judged on the GPU as it is now, the cursor kept on its profile;
        where none can be made there any more (its host gone, MIG turned off), or the GPU
        is another model now (its card changed: a profile listed is not its own, and enter
        on one raised), that is said and the picker closed, making nothing. Whether it is
        still open. Not while ``?`` is over it: a dismiss pops whichever screen is on top."""
        if not self.is_active:
            return True
        now = self.judge()
        if not isinstance(now, str) and now.geometry.model != self.geometry.model:
            now = ("%s changed model while its profiles were listed (%s, now %s): nothing was "
                   "made; %s lists its own" % (self.where, self.geometry.model,
                                              now.geometry.model, key_named(self, "gpu.create")))
        if isinstance(now, str):
            self.notify(now, severity="warning")
            self.dismiss(None)
            return False
        judged = {f.profile.name: f for f in now.fits}
        if list(judged.items()) != list(self.judged.items()):
            self.judged = judged
            menu = self.query_one(ProfileList)
            at = menu.highlighted
            chosen = menu.get_option_at_index(at).id if at is not None else None
            menu.clear_options()
            menu.add_options(self._options())
            menu.highlighted = list(judged).index(chosen) if chosen in judged else at
        return True

    def _line(self, fit: Fit) -> RenderableType:
        """A profile's line; one that does not fit now dim, why under it, each of its
        wrapped lines indented as its first (at 80 columns "at slot 6" began at the edge)."""
        geo, p = self.geometry, fit.profile
        line = Text("%-10s %d/%d compute, %s" % (
            p.name, p.compute_slices, geo.compute_slices, mib_text(p.memory_mib)
            if p.memory_mib else "%d/%d memory" % (p.size, geo.memory_slices)))
        if fit.start is not None:
            return line.append("  at slot %d" % fit.start)
        line.stylize("dim")
        return Group(line, Padding(Text(fit.why, style="dim"), (0, 0, 0, WHY_INDENT)))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if not self.judge_again():  # (as the GPU is now, not as at the last snapshot drawn)
            return
        fit = self.judged[event.option.id or ""]
        if fit.start is not None:
            self.dismiss(fit.profile.name)
            return
        how = "; %s" % self.allowed_by(fit.profile.name) if fit.destroys else ""
        self.notify("%s does not fit on %s now: %s%s" % (fit.profile.name, self.where, fit.why,
                                                         how), severity="warning")


class GpuBody(VerticalScroll, inherit_bindings=False):
    """The view's text, scrolled by page: ``up``/``down`` move the cursor over its instances
    or shares (the screen's), as they move it on the map, not the text a line."""

    BINDINGS = bindings((
        Action("gpu.page_up", "pageup", "page_up", "page up", show=False),
        Action("gpu.page_down", "pagedown,space", "page_down", "page down", show=False),
        Action("gpu.top", "home", "scroll_home", "top", show=False),
        Action("gpu.bottom", "end", "scroll_end", "bottom", show=False),
    ))


class GpuScreen(Screen[None], Keyed, inherit_bindings=False):
    ACTIONS = (
        Action("gpu.back", "escape,q", "back", "back", "Back to the fleet"),
        Action("gpu.open", "enter", "open", "open job",
               "The job screen of the job on the instance or share under the cursor"),
        Action("gpu.down", "down,j", "move(1)", "next instance or share", show=False),
        Action("gpu.up", "up,k", "move(-1)", "previous instance or share", show=False),
        Action("gpu.cordon", "C", "service('cordon')", "cordon",
               "Cordon this GPU: no new work lands on it", dangerous=True),
        Action("gpu.drain", "D", "service('drain')", "drain",
               "Drain this GPU: no new work, and say when it is empty", dangerous=True),
        Action("gpu.uncordon", "U", "service('')", "uncordon", "Put this GPU back in service",
               dangerous=True),
        Action("gpu.mig_mode", "M", "mig_mode", "MIG mode",
               "Turn MIG mode on or off (an idle GPU only; shown and asked first)",
               dangerous=True),
        Action("gpu.destroy", "X", "destroy", "destroy instance",
               "Destroy an idle MIG instance (shown and asked first)", dangerous=True),
        Action("gpu.create", "N", "create", "new instance",
               "Make a MIG instance of a profile you pick (the agent's plan shown and asked "
               "first)", dangerous=True),
    )
    BINDINGS = bindings(ACTIONS)
    DEFAULT_CSS = """
    GpuScreen #gpu-body { background: $surface; padding: 0 1; }
    GpuScreen #health { height: auto; padding: 0 1 0 0; }
    """

    def __init__(self, host: str, index: int,
                 statuses: Callable[[], Mapping[str, HostStatus]],
                 store: Callable[[], Optional[StoreView]], history: History,
                 source: Source, asker: Asker,
                 service: Callable[[str, Optional[int], Optional[str]], None],
                 open_job: Callable[[int], None], readonly: bool, cursor: int = 0,
                 held: Sequence[Holder] = ()) -> None:
        super().__init__()
        bind(self, self.ACTIONS, readonly)
        self.open_job = open_job
        self.cursor = cursor
        """The row of the instances or shares under the cursor: kept while a job screen
        opened from it is over the view, so ``esc`` there comes back to the same row (and
        given to the view made anew when ``esc`` leaves a placement begun there)."""
        self.held: list[Holder] = list(held)
        """What each of those rows holds, as last drawn (by the view this one replaces, till
        it is drawn: so its cursor stays on its row as rows above it went meanwhile)."""
        self.source = source
        self.asker = asker
        self.service = service
        self.host = host
        self.index = index
        self.statuses = statuses
        self.store = store
        self.history = history
        self.under_way: Optional[MigChange] = None
        """The change being carried out: no other is planned meanwhile, since the GPU as
        shown is still the one before it (an ``X`` pressed again planned the same instance's
        destroy a second time)."""
        self.destroyed: set[str] = set()
        """Instances this view destroyed: not offered again while a snapshot taken before it
        still lists them."""

    def compose(self) -> ComposeResult:
        with GpuBody(id="gpu-body"):
            yield Static(id="gpu-head", markup=False)
            yield HealthPanel(id="health")
            yield Static(id="gpu-tables", markup=False)
        # what may be done to the GPU is seen (--readonly: none of the changes, none is bound)
        yield KeyLine(("gpu.",), id="gpu-keys")

    def on_mount(self) -> None:
        self.query_one("#gpu-body").focus()
        self.reload()
        self.set_interval(REFRESH_S, self.reload)

    def reload(self) -> None:
        v = RichVariables(self.app)
        status = self.statuses().get(self.host)
        store = self.store()
        was = self.held[self.cursor] if self.cursor < len(self.held) else None
        head, tables, held = describe(status, self.host, self.index, store, v["warning"],
                                      self.cursor)
        # the cursor stays on its row as rows above it come and go (a job ended, an instance
        # made), a free run's as it grows or shrinks: else enter would open the job that slid
        # under it; where its row went, the same place (the last row if that is gone too)
        same = [n for n, h in enumerate(held) if was is not None and (
            h.row == was.row or h.slices & was.slices)]
        cursor = same[0] if same else min(self.cursor, max(0, len(held) - 1))
        if cursor != self.cursor:
            self.cursor = cursor
            head, tables, held = describe(status, self.host, self.index, store,
                                          v["warning"], cursor)
        self.held = held
        self.query_one("#gpu-head", Static).update(head)
        self.query_one("#gpu-tables", Static).update(tables)
        gpu = gpu_of(status, self.index) if status is not None else None
        panel = self.query_one(HealthPanel)
        panel.display = gpu is not None
        if gpu is not None:
            panel.show("health", gpu, (status.snapshot or {}).get("time") or 0.0,
                       *gpu_series(self.history, self.host, gpu), title_width=LABEL_W)

    def action_back(self) -> None:
        self.dismiss()

    def action_move(self, by: int) -> None:
        """The cursor to the next (``by`` 1) or previous row of the instances or shares."""
        self.cursor = max(0, min(self.cursor + by, len(self.held) - 1))
        self.reload()
        tables = self.query_one("#gpu-tables", Static)  # its row in sight (at 80x24 too)
        row = tables.virtual_region.y + TABLE_TOP + self.cursor
        self.query_one(GpuBody).scroll_to_region(Region(0, row, 1, 1), animate=False)

    def action_open(self) -> None:
        """The job on the cursor's row, over this view (whose ``esc`` comes back here); a
        row that holds no job of the store's says so."""
        if not self.held:
            self.notify("no job to open: %s" % absent(self.statuses().get(self.host),
                                                      self.host, self.index),
                        severity="warning")
            return
        holder = self.held[self.cursor]
        if holder.job_id is None:
            self.notify(holder.why, severity="warning")
            return
        self.open_job(holder.job_id)

    def action_service(self, mode: str) -> None:
        self.service(self.host, self.index, mode or None)

    def _gpu(self) -> tuple[Optional[Mapping[str, Any]], tuple]:
        """The GPU's record, and what a MIG plan reads besides it: the agent's jobs on its
        host, the store's jobs and the store's uid."""
        status = self.statuses().get(self.host)
        view = self.store()
        gpu = gpu_of(status, self.index) if status is not None else None
        return gpu, (list(status.jobs.values()) if status is not None else [],
                     view.jobs if view else (), view.uid if view else "")

    def _ask(self, change: Union[MigChange, str],
             again: Optional[Callable[[], Union[MigChange, str]]] = None) -> None:
        """The plan shown and asked; carried out only on yes, and then only if ``again``,
        planning it anew on the GPU as it is then, plans what was asked: the GPU changed
        under the question (a job placed there, the instance taken, the host gone) is said,
        and nothing is done. A create has none: its agent refuses a layout changed since."""
        if isinstance(change, str) or change.refusal is not None:
            self.notify(change if isinstance(change, str) else change.refusal,
                        severity="warning")
            return
        if self.under_way is not None:
            self.notify("a MIG change of %s gpu %d is under way: wait for its outcome" % (
                self.host, self.index), severity="warning")
            return

        def answered(yes: Optional[bool]) -> None:
            if not yes or self.under_way is not None:
                return
            changed = None if again is None else self._changed(change, again())
            if changed is not None:
                self.notify(changed, severity="warning")
                return
            self.under_way = change
            self.carry(change)

        self.app.push_screen(ConfirmScreen(change.text[:1].upper() + change.text[1:] + "?"),
                             answered)

    def _changed(self, asked: MigChange, now: Union[MigChange, str]) -> Optional[str]:
        """Why ``asked``, confirmed, is not carried out: the GPU as it is ``now`` (its plan
        made anew, or why none can be) no longer gives that plan; None where it does."""
        if isinstance(now, MigChange) and now.refusal is None and (
                now.text, now.params) == (asked.text, asked.params):
            return None
        return "%s gpu %d changed while the change was asked; nothing was done: %s" % (
            self.host, self.index, now if isinstance(now, str) else now.refusal or
            "its plan now would %s; ask again to have it so" % now.text)

    def _plan_mode(self) -> Union[MigChange, str]:
        """MIG mode turned the other way on the GPU as it is now; on a GPU whose change
        waits for a reset, that reset made by the agent (``fractui mig --mode --reset``), so
        the pending mode takes effect. Or why the GPU is not there."""
        gpu, jobs = self._gpu()
        status = self.statuses().get(self.host)
        if gpu is None:
            return absent(status, self.host, self.index)
        current = bool(gpu.get("mig_mode"))
        pending = bool(gpu.get("mig_pending", current))
        if pending == current:
            return plan_mode(self.host, gpu, not current, *jobs)
        return plan_mode(self.host, gpu, pending, *jobs, reset=True, can_reset=lists(
            status.hello if status is not None else None, MODE_RESET))

    def action_mig_mode(self) -> None:
        """MIG mode turned the other way (``_plan_mode``), planned again as it is confirmed."""
        self._ask(self._plan_mode(), self._plan_mode)

    def _plan_destroy(self, uuid: str) -> Union[MigChange, str]:
        """Instance ``uuid``'s destroy planned on the GPU as it is now, or why the GPU is not
        there."""
        gpu, jobs = self._gpu()
        if gpu is None:
            return absent(self.statuses().get(self.host), self.host, self.index)
        return plan_destroy(self.host, gpu, uuid, *jobs)

    def action_destroy(self) -> None:
        """The first idle instance (no job, no process on it): each ``X`` one, each asked,
        and planned again as it is confirmed."""
        gpu, _jobs = self._gpu()
        idle = [i for i in (gpu or {}).get("instances") or ()
                if i.get("uuid") and not i.get("busy") and not i.get("pids")
                and i["uuid"] not in self.destroyed]
        if gpu is None or not idle:
            self.notify("%s: it has no instance to destroy" % self._no_mig(gpu)
                        if gpu is not None and not gpu.get("mig_capable") else
                        "no idle MIG instance on %s gpu %d" % (self.host, self.index),
                        severity="warning")
            return
        uuid = idle[0]["uuid"]
        self._ask(self._plan_destroy(uuid), lambda: self._plan_destroy(uuid))

    def _no_mig(self, gpu: Mapping[str, Any]) -> str:
        """A GPU without MIG said as ``M`` says it: ``N`` told the admin to turn MIG on with
        ``M`` there, which then said the GPU has none."""
        return "%s gpu %d (%s) does not support MIG" % (self.host, self.index, gpu.get("name"))

    def action_create(self) -> None:
        """A profile picked, then the agent's plan for an instance of it asked (``fractui mig
        HOST GPU PROFILE``): never on a GPU out of MIG mode, nor while a change is under way."""
        where = "%s gpu %d" % (self.host, self.index)
        judged = self._judged()
        if isinstance(judged, str):
            self.notify(judged, severity="warning")
            return
        if self.under_way is not None:
            self.notify("a MIG change of %s is under way: wait for its outcome" % where,
                        severity="warning")
            return
        self.app.push_screen(ProfileScreen(where, self._judged, judged, self._allowed_by),
                             lambda profile: profile and self.plan(profile))

    def _judged(self) -> Judged:
        """Each MIG profile judged on the GPU's layout as placement books it (fractui.sched.
        mig_change.fits), its placed jobs not started yet booked as the free rows book them
        (``placement_layout``): the snapshot held, no call to the agent; or why no instance
        can be made on the GPU now."""
        gpu, jobs = self._gpu()
        where = "%s gpu %d" % (self.host, self.index)
        geo = gpu_geometry(gpu) if gpu is not None else None
        refused = (absent(self.statuses().get(self.host), self.host, self.index)
                   if gpu is None else
                   self._no_mig(gpu) if not gpu.get("mig_capable") else
                   "%s is not in MIG mode (M turns it on, on an idle GPU)" % where
                   if not gpu.get("mig_mode") else "fractui has no MIG table for %s (%s)" % (
                       where, gpu.get("name")) if geo is None else None)
        if refused is not None or gpu is None:
            return "%s: no instance can be made on it" % refused
        status = self.statuses().get(self.host)
        placed = placed_on(status, self.index, self.store()) if status is not None else []
        live = [j for j in jobs[0] if j.get("state") in ACTIVE_AGENT_STATES]
        layout = placement_layout(booked_layout(gpu, live), placed)[0]
        if layout is None:  # (a launch its snapshot does not show yet, or a broken record)
            return ("what the instances of %s hold is not known now: %s again after its next "
                    "snapshot" % (where, key_named(self, "gpu.create")))
        return Judgement(layout.geometry, fits(layout))

    def _allowed_by(self, profile: str) -> str:
        """How this admin makes an instance of ``profile`` where idle instances are in its
        way: the picker says it, and so does the agent's refusal of a plan."""
        return "X on an idle instance in the way destroys it, or fractui mig %s %d %s " \
               "--destroy-idle makes it" % (self.host, self.index, profile)

    @work(thread=True, exit_on_error=False, group="mig")
    def plan(self, profile: str) -> None:
        """The agent's plan for an instance of ``profile``, or its refusal (no room)."""
        params = {"gpu": self.index, "profile": profile, "destroy_idle": False}
        try:
            answer = self.source.call(self.host, "mig.plan", params, MIG_CALL_S)
        except HostUnavailable as err:  # (its words begin with the host's name)
            self.post_message(MigPlanned(None, str(err)))
            return
        except AgentCallError as err:
            self.post_message(MigPlanned(None, "%s: %s" % (self.host, create_refused(
                str(err), self._allowed_by(profile)))))
            return
        self.post_message(MigPlanned(plan_create(self.host, params, answer)))

    def on_mig_planned(self, message: MigPlanned) -> None:
        if message.change is None:
            self.notify(message.error, severity="warning")
        else:
            self._ask(message.change)

    @work(thread=True, exit_on_error=False, group="mig")
    def carry(self, change: MigChange) -> None:
        store = self.source.store
        if store is None:
            self.post_message(MigDone(change, "no store here: nothing can be recorded", True))
            return
        try:
            said, _answer = carry_out(store, self.asker, lambda method, params:
                                      self.source.call(self.host, method, params, MIG_CALL_S),
                                      change)
        except AnswerLost as err:  # (audited as asked: carry_out)
            self.post_message(MigDone(change, "%s; the change may have been made: look at the "
                                      "GPU here, read again as its agent answers, before "
                                      "asking for it again" % err, True))
            return
        except (Denied, StoreError, HostUnavailable, AgentCallError) as err:
            self.post_message(MigDone(change, str(err), True))
            return
        self.post_message(MigDone(change, said))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A plan or a change that failed in a way not foreseen (a bug): said, logged with
        its traceback, and the GPU free for the next change (it would otherwise read as under
        way until the view is left)."""
        worker = event.worker
        if worker.group == "mig" and event.state == WorkerState.ERROR:
            log.error("a MIG change on %s gpu %d failed", self.host, self.index,
                      exc_info=worker.error)
            self.under_way = None
            self.notify(unforeseen("the MIG change on %s gpu %d" % (self.host, self.index),
                                   worker.error, "look at the GPU before asking again"),
                        severity="error")

    def on_mig_done(self, message: MigDone) -> None:
        self.under_way = None
        if not message.error and message.change.method == "mig.destroy":
            self.destroyed.add(message.change.params["instance"])
        self.notify(message.said, severity="warning" if message.error else "information")


def one_gpu_words(shown: Sequence[tuple[str, str, str]], named: Callable[[str], str]) -> str:
    """For ``?`` on the map, whose ``C``, ``D`` and ``U`` act on the cursor's whole host: how
    one GPU is taken out of service, by the keys as ``[tui] keys`` maps them, each named by
    ``named`` (``actions.key_named``: its first key as the key lines write it, ``^k``, not
    ``ctrl+k``; the help listed ``C`` as "cordon host" and the admin looked for a GPU's cordon
    in vain). Nothing where the map's are not bound (``--readonly``): there is nothing to say."""
    if "map.cordon" not in {bid for _key, _what, bid in shown}:
        return ""
    return ("%s, %s and %s cordon, drain and put back the cursor's whole host. One GPU: %s "
            "opens it, then %s, %s or %s there; or in the palette (%s) cordon gpu HOST N, "
            "drain gpu HOST N, uncordon gpu HOST N." % tuple(map(named, (
                "map.cordon", "map.drain", "map.uncordon", "map.gpu", "gpu.cordon", "gpu.drain",
                "gpu.uncordon", "app.command"))))
