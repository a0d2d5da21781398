"""The job screen: one job's details (where it runs, its slice, the cap layers the agent applied,
state, reason, attempt), its history from the audit, and its output live; and the actions on it
— stop, requeue, preempt, each confirmed in a modal first; a move or a placement, on the map —
none bound ``--readonly``.

The store and the agent are read in thread workers; the agent pushes new output as ``log``
notifications on the host session's reader thread, which reach the screen as messages.
"""

from __future__ import annotations

import dataclasses
import shlex
import threading
from typing import Any, Callable, Optional, Sequence

from rich.table import Table
from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Input, Static
from textual.worker import Worker

from fractui.config import ConfigError
from fractui.fleet.client import AgentCallError
from fractui.fleet.host import HostStatus, HostUnavailable
from fractui.outcome import gone_words
from fractui.store.base import JobNotFound, StoreError, WaitingFull
from fractui.store.access import CANCEL, READ, Denied
from fractui.store.intents import (Asker, Refused, as_it_is, ask_stop, authorize,
                                   stop_refusal, stop_why)
from fractui.store.model import (CANCELLED, ON_HOST, PENDING, START_NOT_KNOWN, STOPPING,
                                 AuditEntry, Job, movable, stops_offered)
from fractui.terminal import one_line
from fractui.tui.commands import Entry, move_entry, place_entry
from fractui.tui.actions import (Action, KeyLine, Keyed, Modal, bind, bindings, key_named,
                                 refused_now)
from fractui.tui.health import HealthPanel, Series, gpu_series
from fractui.sched.fleetview import job_memory_mib, seen_state
from fractui.tui.history import job_key
from fractui.tui.jobrows import connected
from fractui.tui.logview import LogView
from fractui.tui.oneatatime import OneAtATime
from fractui.tui.parts import Folded
from fractui.tui.source import Source
from fractui.tui.themes import RichVariables
from fractui.words import NO_SCHEDULER, count, duration, why
from remote_agent.rpc.jsonrpc import JOB_KEY_MISMATCH

REFRESH_S = 1.0
HISTORY = 6  # the newest audit entries shown
FOLDED_LINES = 3  # an argv, image or env on at most this many lines: the output keeps the rest

STOP_WORDS = {"cancel": ("stop", "SIGTERM, then SIGKILL after its grace; it ends cancelled"),
              "requeue": ("requeue", "stop it and put it back in its queue as a new attempt"),
              "preempt": ("preempt", "as requeue, with the preemption grace, recorded as a "
                                     "preemption")}


def stop_words(intent: str, state: str) -> tuple[str, str]:
    """``intent``'s word and what it does to a job in ``state``: a pending job's cancel ends
    it at once (intents.ask_stop), with no process to signal."""
    word, what = STOP_WORDS[intent]
    if intent == CANCEL and state == PENDING:
        return word, "It has not started: it ends cancelled at once, no process to signal"
    return word, what


class Loaded(Message):
    def __init__(self, job: Optional[Job], history: Sequence[AuditEntry], uid: Optional[str],
                 error: Optional[str] = None, last_line: Optional[str] = None,
                 readable: Optional[bool] = None) -> None:
        super().__init__()
        self.job = job
        self.history = history
        self.uid = uid
        self.error = error
        self.last_line = last_line
        """The failed job's last line kept, where the reader may read its output."""
        self.readable = readable
        """Whether the reader may read its output, argv and env (intents.readable; None: not
        known yet)."""


class Following(Message):
    """The followed job's last lines, how to stop following it, and what was followed (the
    screen's ``followed`` as it asked)."""

    def __init__(self, lines: list[str], stop: Callable[[], None],
                 followed: tuple[str, str, Optional[float]]) -> None:
        super().__init__()
        self.lines = lines
        self.stop = stop
        self.followed = followed


class LogData(Message):
    """Output of the followed job (``lines`` at first, then chunks), or that it ended."""

    def __init__(self, data: str, ended: bool = False, error: Optional[str] = None) -> None:
        super().__init__()
        self.data = data
        self.ended = ended
        self.error = error


def stop_said(intent: str, now: Job, unled: bool, ours: bool
              ) -> tuple[str, SeverityLevel]:
    """What was done of ``intent``, said with its severity, from ``now``, the job as the
    store answered the ask (intents.ask_stop), never as the screen read it before: a job
    read running that went back to its queue meanwhile ended cancelled at once, and was
    said "recorded"; one read pending and placed meanwhile is stopping. ``ours``: ``now``
    ended by this ask (its reason is this ask's, intents.stop_why), not by another's
    meanwhile, which a job read pending is too. ``unled``: no scheduler holds the store's
    lease, so none carries out a stop recorded now (said as ``fractui cancel`` says it: the
    header's "scheduler: none")."""
    if now.state == CANCELLED:
        return ("#%d cancelled: it had not started" % now.id
                if ours and now.started_at is None else
                "#%d was cancelled meanwhile (%s): nothing left to stop" % (
                    now.id, now.reason or "its stop carried out"), "information")
    if now.state != STOPPING:  # (the same ask of the same attempt, carried out already)
        return "%s of #%d done already: %s" % (intent, now.id, as_it_is(now)), "information"
    if unled:
        return "%s of #%d recorded; %s" % (intent, now.id, NO_SCHEDULER), "warning"
    return "%s of #%d recorded: the scheduler carries it out" % (intent, now.id), "information"


class Asked(Message):
    """A stop, requeue or preemption asked: the job as the store answered (``now``), or why
    it was refused (``error``); ``ours``: ``now`` ended by this ask (``stop_said``)."""

    def __init__(self, what: str, now: Optional[Job], error: str = "",
                 ours: bool = False) -> None:
        super().__init__()
        self.what = what
        self.now = now
        self.error = error
        self.ours = ours


class ConfirmScreen(ModalScreen[bool]):
    """Yes or no to a dangerous action, by key (``y``/``n``, ``esc``) or by mouse. ``no`` has
    the focus: ``enter`` (pressed to open the job a moment before, or twice by habit) never
    says yes; only ``y``, or ``tab`` to yes and then ``enter``, does."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical {
        width: 64; max-width: 100%; height: auto; max-height: 100%;
        background: $panel; border: round $warning; padding: 0 1;
    }
    ConfirmScreen VerticalScroll { height: auto; scrollbar-size-vertical: 1; }
    ConfirmScreen Horizontal { dock: bottom; height: auto; align-horizontal: right; }
    ConfirmScreen Button { margin: 1 0 0 2; }
    """
    BINDINGS = [
        Binding("y", "answer(True)", "yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "no", id="confirm.no"),
        Binding("ctrl+c", "app.quit", "quit", id="confirm.quit", show=False),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():  # (the buttons docked: a question taller than the screen scrolls)
            with Horizontal():
                yield Button("yes (%s)" % key_named(self, "confirm.yes"), variant="warning",
                             id="yes")
                yield Button("no (%s)" % key_named(self, "confirm.no"), id="no")
            with VerticalScroll(can_focus=False):
                yield Static(self.question, markup=False)

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


def job_cap_mib(record: dict[str, Any], gpus: dict[int, dict[str, Any]]) -> Optional[int]:
    """The GPU memory a job may use: its MIG instance's, its share (per GPU, on each of its
    GPUs), or its whole GPUs'."""
    shown = [gpus[i] for i in record.get("gpus") or () if i in gpus]
    if record.get("instance"):
        return next((inst.get("memory_mib") for g in shown for inst in g.get("instances") or ()
                     if inst.get("uuid") == record["instance"]), None)
    if record.get("memory_mib"):
        return int(record["memory_mib"]) * max(1, len(shown))
    return sum(int(g.get("memory_mib") or 0) for g in shown) or None


class JobScreen(Screen[None], Modal, Keyed, inherit_bindings=False):
    ACTIONS = (
        Action("job.back", "escape,q", "back", "back", "Back to the fleet"),
        Action("job.search", "slash", "search", "search", "Search the output (a regex)"),
        Action("job.copy", "ctrl+c,super+c", "screen.copy_text",
               "copy selected text (else: quit)", show=False),
        Action("job.stop", "s", "ask('cancel')", "stop",
               "Stop the job: it ends cancelled (asks first)", dangerous=True),
        Action("job.requeue", "r", "ask('requeue')", "requeue",
               "Stop it and put it back in its queue (asks first)", dangerous=True),
        Action("job.preempt", "p", "ask('preempt')", "preempt",
               "Requeue it as a preemption, with the preemption grace (asks first)",
               dangerous=True),
        Action("job.move", "m", "move", "move",
               "Move it by hand: back to the map, in placement mode; it is stopped, then "
               "placed on the slot chosen, held for it meanwhile", dangerous=True),
        Action("job.place", "P", "place", "place",
               "Place it by hand: back to the map, in placement mode, as the queue panel's p",
               dangerous=True),
    )
    BINDINGS = bindings(ACTIONS)
    DEFAULT_CSS = """
    JobScreen #head { height: auto; background: $panel; scrollbar-size-vertical: 1; }
    JobScreen #details { height: auto; max-height: 14; background: $panel; padding: 0 1; }
    JobScreen #logstate { height: auto; background: $panel; padding: 0 1; color: $text-muted; }
    JobScreen #search { height: 3; display: none; }
    """
    def __init__(self, job_id: int, source: Source, statuses: Callable[[], dict[str, HostStatus]],
                 asker: Asker, clock: Callable[[], float], readonly: bool,
                 move: Callable[[int], None] = lambda _job: None,
                 place: Callable[[int], None] = lambda _job: None,
                 left: Optional[Callable[[Optional[Job]], None]] = None,
                 unled: Callable[[], bool] = lambda: False) -> None:
        super().__init__()
        bind(self, self.ACTIONS, readonly)
        self.readonly = readonly
        self.unled = unled
        """Whether no scheduler holds the store's lease now (the fleet screen's last read):
        a stop recorded then is carried out by none until one runs."""
        self.left = left
        """Handed the job as last read as the screen is left, by ``esc``, ``J`` or a
        placement (the jobs view it was opened from lists it ended, before its own read of
        the ended jobs); kept for the screen made anew."""
        self.job_id = job_id
        self.move = move
        """Placement mode to move a job, on the map (the app's ``move_job``)."""
        self.place = place
        """Placement mode to place a pending job, on the map (the app's ``place_job``)."""
        self.source = source
        self.statuses = statuses
        """The fleet screen's latest host statuses (for the agent's record of the job)."""
        self.asker = asker
        self.clock = clock
        """The store's clock (the fleet screen's ``store_clock``): what the job's ages count
        to, as fractui jobs counts them."""
        self.job: Optional[Job] = None
        self.uid: Optional[str] = None
        self.history: Sequence[AuditEntry] = ()
        self.error: Optional[str] = None
        self.last_line: Optional[str] = None
        """Its last line kept, where it failed and the reader may read its output."""
        self.readable: Optional[bool] = None
        """Whether the reader may read its output, argv and env (its team and the admins:
        intents.readable, as ``fractui jobs`` shows them); read once (who reads and the job's
        team do not change), None until then: neither shown nor said hidden."""
        self.followed: Optional[tuple[str, str, Optional[float]]] = None
        """(host, agent job, since when the host was connected) of the output followed: a
        host that connected again has lost the follow, and is asked anew."""
        self._unfollow: Callable[[], None] = lambda: None
        self._handed: list[Callable[[], None]] = []
        """The stops of follows handed to this screen (``Following``) and not yet taken."""
        self._left = False
        """Whether the screen was left: a follow answered since is ended by its worker."""
        self._follows_lock = threading.Lock()
        self.log_error: Optional[str] = None
        """Why the output followed is not shown (refused, or not reached), said on the log's
        state line until it is asked anew."""
        self._loads = OneAtATime(self._load, "reading the job", lambda said: self.post_message(
            Loaded(self.job, self.history, self.uid, said, self.last_line, self.readable)))

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="head", can_focus=False):
            yield Static(id="details", markup=False)
            yield HealthPanel(id="health")
        yield Static(id="logstate", markup=False)
        yield LogView(id="log")
        yield Input(placeholder="search: a regex; enter finds, %s/%s next/previous, %s closes" % (
            key_named(self, "log.next"), key_named(self, "log.previous"),
            key_named(self, "job.back")), id="search")
        yield KeyLine(("job.", "log."), id="job-keys")  # the job's and its output's

    @property
    def logview(self) -> LogView:
        return self.query_one(LogView)

    def on_mount(self) -> None:
        self.logview.focus()
        self.load()
        self.set_interval(REFRESH_S, self.load)
        self.show_state()

    def on_resize(self, _event: events.Resize) -> None:
        self.call_after_refresh(self._fit_head)

    def _fit_head(self) -> None:
        """The head (the job's details, its GPU's health) takes at most half the screen, and
        only the rows left once what is below it is drawn (the output's state line, the
        search's box when open, the key line, as tall as they are at this width) and one
        line of output: scrolling within that, down to none. At 40x10 it filled the screen,
        the output drawn below its edge, and the search's box typed into out of sight; at
        40x7 a head kept at 2 rows at least, below a room assumed of 7, still did."""
        below = sum(w.outer_size.height for w in (self.query_one("#logstate"),
                                                  self.query_one("#search"),
                                                  self.query_one("#job-keys")) if w.display)
        rows = self.size.height
        room = max(0, min(rows // 2, rows - below - 1))
        self.query_one("#head").styles.max_height = room  # (the same: no new layout)

    def on_unmount(self) -> None:
        with self._follows_lock:
            self._left = True
            handed, self._handed = self._handed, []
        for stop in [self._unfollow] + handed:  # (a message not yet taken is never handled)
            stop()
        if self.left is not None:
            self.left(self.job)

    # -- data in --

    def load(self) -> None:
        """The job and its history read again, in a thread worker, one read at a time
        (``OneAtATime``)."""
        self._loads.ask()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        self._loads.changed(event)

    @work(thread=True, exit_on_error=False, group="job")
    def _load(self) -> None:
        try:
            job, uid = self.source.read_job(self.job_id)
            line = self.source.read_last_lines([job]).get(self.job_id) if job else None
            reads = self.readable
            if reads is None and job is not None:
                reads = job.id in self.source.read_readable([job])
            self.post_message(Loaded(job, self.source.audit(self.job_id), uid, None, line,
                                     reads))
        except (StoreError, JobNotFound) as err:
            self.post_message(Loaded(self.job, self.history, self.uid, "store: %s" % err,
                                     self.last_line, self.readable))

    def agent_record(self) -> Optional[dict[str, Any]]:
        """The agent's record of the job, where its host is connected (its last word is not
        how the job is now)."""
        job = self.job
        if job is None or job.slot is None:
            return None
        return self.last_word() if connected(self.statuses().get(job.slot.host)) else None

    def last_word(self) -> Optional[dict[str, Any]]:
        """The agent's record of the job as its host last reported it, connected or not: what
        the job is drawn as (``seen_state``), as the map and the jobs view draw it."""
        job = self.job
        if job is None or job.slot is None or self.uid is None:
            return None
        status = self.statuses().get(job.slot.host)
        key = job.key(self.uid)
        return next((r for r in status.jobs.values() if r.get("key") == key), None) \
            if status is not None else None

    def drawn(self) -> Job:
        """The job in the state it is drawn in (``seen_state``): what a refusal of its keys,
        which the store's state decides, says it is."""
        assert self.job is not None
        return dataclasses.replace(self.job, state=seen_state(self.job, self.last_word()))

    def stops(self) -> tuple[str, ...]:
        """The stops offered now: those the job's state allows (none ``--readonly``)."""
        if self.readonly or self.job is None:
            return ()
        return stops_offered(self.job.state, self.job.stop_intent)

    def movable(self) -> bool:
        """Whether a move is offered now: the job placed or running (not ``--readonly``)."""
        return not self.readonly and self.job is not None and movable(self.job.state)

    def placeable(self) -> bool:
        """Whether a placement is offered now: the job pending (not ``--readonly``)."""
        return not self.readonly and self.job is not None and self.job.state == PENDING

    def offered(self) -> tuple[tuple[str, ...], bool, bool]:
        """What the job's state offers now: its stops, a move, a placement."""
        return self.stops(), self.movable(), self.placeable()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> Optional[bool]:
        """A stop, a move or a placement the job's state does not allow is not bound:
        neither pressable nor listed."""
        if action == "move":
            return self.movable()
        if action == "place":
            return self.placeable()
        return action != "ask" or parameters[0] in self.stops()

    def on_key(self, event: events.Key) -> None:
        """A stop's, a move's or a placement's key the job's state refuses now (it ended a
        moment ago, the key still listed then): said why, as a palette entry kept from before
        is, rather than nothing done and nothing said."""
        refused = refused_now(self, event.key)
        if refused is not None:
            event.stop()
            name, parameters = refused
            getattr(self, "action_" + name)(*parameters)  # each says its refusal

    def palette_entries(self) -> list[Entry]:
        """What ``:`` offers here: the stops, the move and the placement that apply
        (Posting's way: only what fits)."""
        job = self.job
        if job is None:
            return []
        return [Entry("%s job #%d %s" % (stop_words(i, job.state)[0], job.id, job.name),
                      stop_words(i, job.state)[1], lambda i=i: self.action_ask(i))
                for i in self.stops()] + (
            [move_entry(job, self.action_move)] if self.movable() else []) + (
            [place_entry(job, self.action_place)] if self.placeable() else [])

    def action_move(self) -> None:
        self._to_map(self.move, movable, "only a placed or running job is moved")

    def action_place(self) -> None:
        self._to_map(self.place, lambda state: state == PENDING,
                     "only a pending job is placed by hand")

    def _to_map(self, start: Callable[[int], None], fits: Callable[[str], bool],
                only: str) -> None:
        """Placement mode on the map (``start``), where the job's state ``fits`` it; else
        said, with ``only`` (a palette entry chosen after the job changed)."""
        if self.job is None:
            self.notify(self.unread(), severity="warning")
        elif not fits(self.job.state):
            self.notify("%s: %s" % (as_it_is(self.drawn()), only), severity="warning")
        else:
            start(self.job_id)

    def unread(self) -> str:
        """Why nothing is asked of the job while its record is not there: not read yet (a
        key pressed as the screen opens did nothing, said nothing), or the read failed."""
        if self.error is None:
            return "job %d is still loading…: nothing done; its keys act once it is shown" % (
                self.job_id)
        return "job %d: nothing done: %s" % (self.job_id, self.error)

    def on_loaded(self, message: Loaded) -> None:
        before = self.offered()
        self.job, self.history, self.error = message.job, message.history, message.error
        self.last_line, self.readable = message.last_line, message.readable
        if self.job is None and self.error is None:
            self.error = "no job %d in the store" % self.job_id
        self.uid = message.uid or self.uid
        record = self.agent_record()
        self.query_one("#details", Static).update(self.details(record))
        self.show_health(record)
        agent_job = (record or {}).get("id") or (self.job.agent_job if self.job else None)
        if self.job is not None and self.job.slot is not None and agent_job:
            self._follow_now(self.job.slot.host, agent_job,
                             self.job.key(self.uid) if self.uid else None, self.job.team)
        if self.offered() != before:
            self.refresh_bindings()
        self.show_state()

    def _follow_now(self, host: str, agent_job: str, key: Optional[str],
                    team: Optional[str]) -> None:
        """Follows the job's output unless it is followed already on the host's connection as
        it is now. The agent's follow ends with the connection it was asked on: once the host
        is connected again (after an outage, or opened while it was down), it is asked anew,
        else the screen would say "following" over output that stopped coming."""
        status = self.statuses().get(host)
        since = status.since if connected(status) else (
            self.followed[2] if self.followed and self.followed[:2] == (host, agent_job)
            else None)
        if (host, agent_job, since) == self.followed:
            return
        self._unfollow()
        self.followed = (host, agent_job, since)
        self.logview.clear()
        self.log_error = None
        self.follow(self.followed, key, team)

    @work(thread=True, exit_on_error=False, group="logs")
    def follow(self, followed: tuple[str, str, Optional[float]], key: Optional[str],
               team: Optional[str]) -> None:
        """The job's output (``followed``'s host and agent job), once the store's rule lets
        this user read it (a team action, access.READ, as ``fractui logs`` checks), from the
        agent of its host; asked by the job's ``key``, so an agent that lost it shows no other
        job of that id."""
        def sink(data: str, ended: bool) -> None:  # on the session's reader thread
            self.post_message(LogData(data, ended))

        host, agent_job, _ = followed
        what = "job %d" % self.job_id
        try:
            if self.source.store is not None:  # (a frozen fleet has no store to say who)
                authorize(self.source.store, self.asker, READ, team, what)
            lines, stop = self.source.follow_logs(host, agent_job, key, sink)
        except ConfigError:  # a config of the store alone names no host
            self.post_message(LogData("", error="%s runs on %s, which this config does not "
                                      "name: fractui logs %d reads its output through the "
                                      "store" % (what, host, self.job_id)))
            return
        except AgentCallError as err:
            self.post_message(LogData("", error=gone_words(what, host, agent_job) if
                                      err.code == JOB_KEY_MISMATCH else str(err)))
            return
        except (HostUnavailable, Denied, StoreError) as err:
            self.post_message(LogData("", error=str(err)))
            return
        with self._follows_lock:  # the screen left meanwhile: none would end this follow
            if not self._left:
                self._handed.append(stop)
                self.post_message(Following(lines, stop, followed))
                return
        stop()

    def on_following(self, message: Following) -> None:
        with self._follows_lock:
            if message.stop not in self._handed:  # ended as the screen was left
                return
            self._handed.remove(message.stop)
        if message.followed != self.followed:  # asked anew meanwhile (its host connected
            message.stop()  # again): followed no more, and only its screen would end it
            return
        self._unfollow = message.stop
        self.logview.write("".join(line + "\n" for line in message.lines))
        self.show_state()

    def on_log_data(self, message: LogData) -> None:
        if message.error:
            self.log_error = message.error
        if message.data:
            self.logview.write(message.data)
        self.logview.ended = self.logview.ended or message.ended
        self.show_state()

    # -- drawing --

    def details(self, record: Optional[dict[str, Any]]) -> Table:
        job = self.job
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        if job is None:
            grid.add_row("job #%d" % self.job_id, self.error or "reading the store…")
            return grid
        now = self.clock()
        grid.add_row("job #%d" % job.id, Text.assemble(
            (job.name, "bold"), "  %s · attempt %d%s" % (
                self.drawn().state, job.attempt,
                " · preemptible" if job.preemptible else "")))
        grid.add_row("queue", "%s · team %s · submitted %s ago%s%s" % (
            job.queue, job.team or "—", duration(now - job.submitted_at),
            " by %s" % job.user if job.user else "",
            " · started %s ago" % duration(now - job.started_at) if job.started_at is not None
            else " · %s" % START_NOT_KNOWN if job.start_unknown
            else " · back in its queue %s ago" % duration(now - job.queued_at)
            if job.queued_at is not None else ""))
        if job.slot is not None:
            slot = job.slot
            what = (("%s at slot %s" % (slot.profile, slot.start)) if slot.profile else
                    "%d MiB share" % slot.memory_mib if slot.memory_mib else "whole GPU")
            grid.add_row("where", "%s · gpu %s · %s · charge %.2f GPU%s" % (
                slot.host, ",".join(map(str, slot.gpus)), what, slot.charge,
                " · placed by hand" if job.manual else ""))
            status = self.statuses().get(slot.host)
            if job.state in ON_HOST and not connected(status):
                said = "%s is %s" % (slot.host, status.state if status else "not in the fleet")
                if status is not None and status.error:
                    said += ": " + status.error
                grid.add_row("host", Text(said + " (how the job is there is not known now)",
                                          style=RichVariables(self.app)["warning"]))
        memory = self.memory_text(record)
        if memory is not None:
            grid.add_row("memory", memory)
        if record is not None:
            caps = ", ".join(record.get("caps") or ()) or "none"
            notes = "; ".join(record.get("cap_notes") or ())
            grid.add_row("agent", "%s/%s %s · pid %s · caps: %s%s" % (
                job.slot.host if job.slot else "?", record.get("id"), record.get("state"),
                record.get("pid"), caps, " (%s)" % notes if notes else ""))
            if record.get("image"):
                grid.add_row("image", "%s · %s" % (record["image"], record.get("runtime")))
        reason = why(job, self.last_line) if self.last_line else job.reason
        if reason or self.error:
            grid.add_row("reason", Text(" · ".join(filter(None, (reason, self.error))),
                                        style=RichVariables(self.app)["warning"]))
        if self.readable:  # (None: who may read them is being read, neither shown nor hidden)
            grid.add_row("argv", Folded(Text(one_line(shlex.join(job.argv))), FOLDED_LINES))
        elif self.readable is False:  # (its output is refused too, on the log's state line)
            whose = ("team %s's and the admins'" % job.team) if job.team else "the admins'"
            grid.add_row("argv", Text("not shown: its argv and env are %s to read, as its "
                                      "output" % whose, style="dim"))
        if job.image:
            grid.add_row("image", Folded(Text(job.image), FOLDED_LINES))
        if job.env and self.readable:
            grid.add_row("env", Folded(Text(" ".join(shlex.quote("%s=%s" % kv) for kv in
                                                     sorted(job.env.items()))), FOLDED_LINES))
        newest = list(self.history)[::-1][:HISTORY]
        if newest:  # a table of its own, so its columns line up whatever their widths
            history = Table.grid(padding=(0, 2))
            history.add_column(justify="right", no_wrap=True)
            history.add_column(no_wrap=True)
            history.add_column(no_wrap=True)
            history.add_column(overflow="fold")
            for entry in newest:
                history.add_row("%s ago" % duration(now - entry.time), entry.actor,
                                entry.action, entry.why)
            grid.add_row(Text("history", style="dim"), history)
        return grid

    def _gpus(self) -> tuple[str, dict[int, dict[str, Any]], float]:
        """The job's host, the GPU records of its latest snapshot by index, and its time."""
        job = self.job
        if job is None or job.slot is None:
            return "", {}, 0.0
        status = self.statuses().get(job.slot.host)
        snapshot = (status.snapshot if connected(status) else None) or {}
        return job.slot.host, {g.get("index"): g for g in snapshot.get("gpus") or ()}, \
            snapshot.get("time") or 0.0

    def memory_text(self, record: Optional[dict[str, Any]]) -> Optional[Text]:
        """The running job's GPU memory in use against its cap, from the latest snapshot."""
        if record is None or record.get("state") != "running":
            return None
        _, gpus, _ = self._gpus()
        used = job_memory_mib(record, gpus)
        cap = job_cap_mib(record, gpus)
        if used is None or not cap:
            return None
        share = used / cap
        style = RichVariables(self.app)["warning"] if share > 0.9 else ""
        return Text("%d MiB used of its %d MiB cap (%d%%)" % (used, cap, round(share * 100)),
                    style=style)

    def show_health(self, record: Optional[dict[str, Any]]) -> None:
        """The job's GPU's health, its utilisation and the job's memory over the last minutes."""
        panel = self.query_one(HealthPanel)
        job = self.job
        host, gpus, now = self._gpus()
        panel.display = job is not None and job.slot is not None
        if not panel.display:
            return
        index = job.slot.gpus[0]
        gpu = gpus.get(index)
        title = "%s gpu %d%s" % (host, index, " (1 of %d)" % len(job.slot.gpus)
                                 if len(job.slot.gpus) > 1 else "")
        util, gpu_memory = gpu_series(self.source.history, host, gpu or {"index": index})
        memory = gpu_memory
        if record is not None and record.get("state") == "running":
            used = job_memory_mib(record, gpus)
            cap = job_cap_mib(record, gpus)
            memory = Series("job memory %s/%s MiB" % ("?" if used is None else used,
                                                      cap or "?"), tuple(
                self.source.history.buckets(job_key(host, record.get("id")), "used_mib")))
        panel.show(title, gpu, now, util, memory)

    def show_state(self) -> None:
        log = self.logview
        words = [count(log.count, "line")]
        if not log.following:
            words.append("line %d" % (log.cursor + 1))
        elif self.log_error is None and self.followed is not None:  # (else nothing comes)
            words.append("following")
        if log.ended:
            words.append("the job ended")
        if log.pattern is not None:
            words.append("search /%s/" % log.pattern.text)
        if self.log_error is not None:
            words.append("no output: %s" % self.log_error)
        elif self.followed is None:
            words.append("no output yet: the job has not run")
        self.query_one("#logstate", Static).update(" · ".join(words))
        self.show_keys()  # (following or not, the job's state: what its keys do changed)

    def on_log_view_moved(self, _message: LogView.Moved) -> None:
        self.show_state()

    # -- actions --

    def action_back(self) -> None:
        box = self.query_one("#search", Input)
        if box.display:
            box.display = False
            self.logview.focus()
            return
        self.dismiss()

    def action_search(self) -> None:
        box = self.query_one("#search", Input)
        box.display = True
        box.focus()

    def on_descendant_focus(self, _event: events.DescendantFocus) -> None:
        """The search's box opened or closed: its keys listed (``esc`` closes it, the
        letters type), or the output's again, and the head fitted to what is left."""
        self.show_keys()
        self.call_after_refresh(self._fit_head)

    def what_now(self, binding_id: str) -> Optional[str]:
        """``esc`` closes the search while it is typed."""
        if binding_id == "job.back" and self.query_one("#search", Input).display:
            return "close search"
        return None

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.input.display = False
        self.logview.focus()
        if not self.logview.search(event.value):
            self.notify("no line matches /%s/" % event.value, severity="warning")
        self.show_state()

    def action_ask(self, intent: str) -> None:
        job = self.job
        if job is None:
            self.notify(self.unread(), severity="warning")
            return
        word, what = stop_words(intent, job.state)
        refused = stop_refusal(job, intent)
        if refused:  # asked anyway (a palette entry of a job that ended since): said
            self.notify(refused, severity="warning")
            return

        def answered(yes: Optional[bool]) -> None:
            if yes:
                self.record_stop(job, intent)

        self.app.push_screen(ConfirmScreen("%s job #%d %s (%s)?\n\n%s." % (
            word.capitalize(), job.id, job.name, job.state, what)), answered)

    @work(thread=True, exit_on_error=False, group="ask")
    def record_stop(self, job: Job, intent: str) -> None:
        """Asks the stop of ``job`` as the admin confirmed it: a requeue or preemption of the
        attempt shown, never of a later one the scheduler made meanwhile (intents.ask_stop)."""
        store = self.source.store
        if store is None:
            self.post_message(Asked(intent, None, "no store here: nothing can be recorded"))
            return
        try:
            # (who asks, read first: once the stop is recorded, a store gone meanwhile would
            # be said as though it were not)
            actor = authorize(store, self.asker, intent, job.team, "job %d" % job.id)
            now = ask_stop(store, job, intent, self.asker)
        except (Refused, Denied, JobNotFound, StoreError, WaitingFull) as err:  # (WaitingFull:
            # a member's requeue past her team's bound)
            self.post_message(Asked(intent, None, str(err)))
            return
        self.post_message(Asked(intent, now, ours=now.state == CANCELLED and
                                now.reason == stop_why(intent, actor)))

    def on_asked(self, message: Asked) -> None:
        if message.now is None:
            self.notify(message.error, severity="warning")
        else:
            words, severity = stop_said(message.what, message.now, self.unled(),
                                        message.ours)
            self.notify(words, severity=severity)
        self.load()
