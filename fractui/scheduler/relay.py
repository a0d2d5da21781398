"""Job output for users who reach only the store: the lease holder reads the end of a job's
output from its agent and keeps it in the store (at most LOG_TAIL_BYTES, the last whole lines),
when someone asks (``fractui logs`` records a request; the change feed wakes the holder) and
when a job ends (the executor asks for it then, so a finished job's output outlives its
host). The reads run on the host's lane, like any call to a host: a stalled host delays
nothing else, and a request it cannot serve now stays for a later turn.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from functools import partial
from typing import Callable, Dict, Optional

from fractui.fleet.client import AgentCallError
from fractui.fleet.host import AnswerMalformed
from fractui.sched.fleetview import USABLE, HostView, lists
from fractui.scheduler.execute import Call
from fractui.scheduler.lanes import Lanes
from fractui.store.base import JobNotFound, RowsLocked, Store
from fractui.store.model import ENDED, LOG_TAIL_BYTES, Job, tail_bytes, tail_text
from remote_agent import LOG_BYTES

log = logging.getLogger("fractui.scheduler")

TAIL_LINES = 5000  # lines asked of the agent; the tail kept is cut to LOG_TAIL_BYTES
# The line a read the agent did not serve ends the tail with (``_unread``)
UNREAD = "[fractui: the agent on %s did not give job %d's output: %s%s]"
# (a job may print it as its last line: [0-9] of a job's number, not \d, which int() refused
# past 4300 digits)
UNREAD_LINE = re.compile(r"\[fractui: the agent on \S+ did not give job ([0-9]{1,19})'s output: "
                         r".*\]")


class LogRelay:
    def __init__(self, store: Store, call: Call, lanes: Lanes):
        self.store = store
        self.call = call
        self.lanes = lanes
        self.epoch = 0  # the lease's, kept by the scheduler: the tails are the holder's writes

    def serve(self, views: Callable[[], Dict[str, HostView]]) -> bool:
        """Queues a read for each job whose tail is asked for, on its host's lane (the caller
        starts the lanes). A job that never ran is answered with nothing; one whose host is
        out of the config with what is kept of it (its host is asked no more: the request
        stood for ever, read at every pass); one whose host is unreachable, or whose lane is
        busy, waits for a later turn. Returns False if an answer was left for the next turn
        (its row held by another session)."""
        served = True
        asked = self.store.log_requests()
        hosts = views() if asked else {}
        for job_id in asked:
            try:
                job = self.store.get(job_id)
            except JobNotFound:
                continue
            if job.slot is None or job.agent_job is None:
                served = self._answer(job, "", 0) and served  # (its log has no byte yet)
                continue
            view = hosts.get(job.slot.host)
            if view is None:
                served = self._answer(job, None if self.store.log_tail(job.id) else (
                    "[fractui: job %d's host %s is out of the config: its output is not "
                    "read]\n" % (job.id, job.slot.host))) and served
            elif view.state in USABLE:
                self.lanes.add(view.name, partial(self._keep, job, lists(view.hello,
                                                                         LOG_BYTES)))
        return served

    def _answer(self, job: Job, text: Optional[str], offset: Optional[int] = None) -> bool:
        """Answers the request for the job's tail without asking its host: with ``text`` kept
        as its tail, or (None) with the tail kept as it is, its time too (it is no fresher),
        complete where the job has ended;
        whether it was answered (its row held by another session: left for the next turn)."""
        try:
            if text is None:
                self.store.answer_log(job.id, job.state in ENDED, epoch=self.epoch)
            else:
                self.store.keep_log(job.id, text, complete=job.state in ENDED,
                                    epoch=self.epoch, offset=offset)
        except RowsLocked as err:
            self.lanes.left_locked(job.id, err)
            return False
        return True

    def _keep(self, job: Job, exact: bool) -> None:
        """Keeps the job's tail: with an agent that gives its log's bytes (``exact``), the
        bytes as they are and where they end in the log (LogTail.offset); else its lines."""
        host = job.slot.host  # type: ignore[union-attr]
        asked = LOG_TAIL_BYTES + 1  # one more: whether the first byte kept starts a line
        params = dict({"lines": 0, "bytes": asked} if exact else {"lines": TAIL_LINES},
                      job=job.agent_job, key=job.key(self.store.uid))  # (its attempt's copy)
        offset: Optional[int] = None
        whole = False  # (all of it read: its current log's offset cannot say so, rotated)
        try:
            answer = self.call(host, "job.logs", params)
            data = base64.b64decode(answer.get("data") or "", validate=True)
        except (AgentCallError, AnswerMalformed, binascii.Error) as err:  # e.g. the agent
            # keeps it no more, or answers what cannot be read (asked again, the same: left
            # unanswered, the request stood, and the lane said it at every pass)
            text = self._unread(job, host, err)
            answer = None
        now = self.store.get(job.id)
        ended = now.state in ENDED  # else the end asks for it again
        if answer is not None and exact:
            whole = len(data) < asked
            text, cut = tail_bytes(data, whole, ended)
            offset = int(answer["offset"]) - cut
        elif answer is not None:
            text = tail_text(list(answer.get("lines") or []))
        if not self.store.keep_log(job.id, text, complete=ended, epoch=self.epoch,
                                   offset=offset, attempt=job.attempt, whole=whole):
            log.info("job %d: the output read of its attempt %d on %s is not kept: its "
                     "attempt %d began meanwhile (its request stands, for that attempt)",
                     job.id, job.attempt, host, now.attempt)

    def _unread(self, job: Job, host: str, err: Exception) -> str:
        """The answer to a read the agent did not serve: the tail kept last (the job's last
        good output, which ``logs`` and ``submit --wait`` show after a failure), then a line
        saying why it is no fresher — in place of such a line a failed read before left, so
        failures that repeat add none. Kept as lines (no offset: a follower stops there)."""
        kept = self.store.log_tail(job.id)
        lines = kept.text.split("\n") if kept is not None else []
        if lines and not lines[-1]:
            lines.pop()  # (the end of the last line)
        said = UNREAD_LINE.fullmatch(lines[-1]) if (
            lines and kept is not None and kept.offset is None) else None
        if said is not None and int(said.group(1)) == job.id:
            lines.pop()
        above = "; the lines above are its output as last read" if lines else ""
        return tail_text(lines + [UNREAD % (host, job.id, " ".join(str(err).split()), above)])
