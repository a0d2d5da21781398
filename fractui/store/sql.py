"""The store's logic, written once in SQL both backends run: jobs and their compare-and-set
changes, stale copies, the audit trail, the kept inventory, and the scheduler lease with its
fencing epoch. What differs between SQLite and PostgreSQL — connecting, how a write transaction
takes the store's one write lock, the clock, telling feeds of a change, migrations, and the
driver's errors — is a Dialect (fractui.store.sqlite, fractui.store.postgres).

Every method is one transaction. A write holds the store's write lock from its first read, so
a compare-and-set never races another client between its read and its write, and a fenced
write's epoch is checked in that same transaction. A connection found lost is dropped and the
call made once more on a new one, unless it was lost while committing (then whether it was
recorded is not known, and the caller is told so — but a user's ask, which finds what its first
try made, is made again: ``_write``'s ``again``); a transaction never half-applies.
"""

from __future__ import annotations

import abc
import json
import logging
import math
import re
import threading
import uuid
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, TypeVar, Union

from remote_agent.digits import whole

from fractui.config import DEFAULT_MAX_WAITING
from fractui.store import usage_rows
from fractui.store.access import REQUEUE
from fractui.words import count, quoted
from fractui.store.rows import (FLAG, INT, NUM, TEXT, Unreadable, check, maybe, named,
                                value_problem)
from fractui.store.base import (HOSTS, JOBS, LEASE as LEASE_TOPIC, LOGS, JobNotFound,
                                NOTHING_RECORDED, KeyTaken, LeaseLost, QuotaTaken,
                                StateConflict, Store, StoreDamaged, StoreError, StoreRefused,
                                WaitingFull)
from fractui.store.model import (CORDON, CORDON_MODES, ENDED, FAILED, JOB_MOST, MOVE, ON_HOST,
                                 OUT_OF_CONFIG, PENDING, PLACED, PREEMPTED, QUOTA_EPSILON,
                                 REQUEUED, RUNNING, STATES, STOP_INTENTS, STOPPING, WHOLE_HOST,
                                 AuditEntry, Cordon, GpuTime, Hold, HolderMemory, Job,
                                 KeptTerms, LogTail, LateCopy, ModeHold, Refusal, Sampled, Slot,
                                 StaleCopy, TeamTerms, UsageRecord, adds_within, held_within,
                                 same_place, stops_offered, submitter)

LEASE = "scheduler"  # the one lease's row
TERMS_WRITTEN = "team_terms_written"  # the meta key a lease holder's write of the teams'
# terms sets (keep_team_terms) to a JSON object of their teams and the lease's epoch it was
# written under: kept terms, none among them, are not none kept, and a row of them deleted
# since is told from a team not kept while no other take of the lease wrote the rows again
_NOW = object()  # a field set to the transaction's time (the store's clock)
LINES_AT_ONCE = 500  # jobs whose last line one query reads (SQLite binds 999 at most before 3.32)
_SLOT_COLUMNS = ("host", "gpus", "profile", "start", "memory_mib", "charge", "layout_version")
log = logging.getLogger("fractui.store")
T = TypeVar("T")


def migrations(dialect: str) -> list[tuple[int, str]]:
    """The numbered schema changes of one dialect (migrations/<dialect>/000N_*.sql), in order."""
    folder = resources.files("fractui.store") / "migrations" / dialect
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)


def statements(sql: str) -> list[str]:
    """A migration's statements, one per ``;`` at a line's end outside a ``$$``-quoted body
    (a PostgreSQL function's, whose own statements end so too)."""
    found, part = [], ""
    for piece in sql.split(";\n"):
        part += piece
        if part.count("$$") % 2:  # inside a body: the ``;`` is the body's
            part += ";\n"
            continue
        if part.strip():
            found.append(part)
        part = ""
    return found + ([part] if part.strip() else [])


class Dialect(abc.ABC):
    """What one backend does its own way; the SQL core (SqlStore) does the rest."""

    where: str
    """The store as errors name it: the SQLite file, or postgresql://host:port/db."""

    @abc.abstractmethod
    def connect(self) -> Any:
        """A new connection whose ``execute`` takes ``sql(...)`` text and returns rows that
        are read by column name; the driver's errors raised as they are."""

    @abc.abstractmethod
    def sql(self, text: str) -> str:
        """The core's SQL (``?`` placeholders) as this driver takes it."""

    @abc.abstractmethod
    def begin(self, db: Any) -> None:
        """Starts a write transaction holding the store's one write lock."""

    @abc.abstractmethod
    def commit(self, db: Any) -> None:
        ...

    @abc.abstractmethod
    def rollback(self, db: Any) -> None:
        """Ends a failed transaction, if one is still open; never raises."""

    @abc.abstractmethod
    def now(self, db: Any) -> float:
        """Seconds since the epoch by the clock the store keeps time with."""

    @abc.abstractmethod
    def migrate(self, db: Any) -> None:
        """Brings the schema up to date inside the caller's write transaction; StoreDamaged
        for a schema newer than this fractui knows."""

    def up_to_date(self, db: Any) -> bool:
        """Whether the schema lacks no migration, asked in a read: then the store is opened
        by reads alone, and a lost connection leaves no write of its own unknown. False by
        default (SQLite: a file, no commit's reply to lose; its open takes the write lock)."""
        return False

    @abc.abstractmethod
    def announce(self, db: Any, topic: str) -> None:
        """Tells every feed that ``topic`` changed, in the caller's transaction."""

    @abc.abstractmethod
    def lost(self, db: Any) -> bool:
        """Whether the connection is gone (a server restart), so a new one is needed."""

    def unread_commit(self, err: BaseException) -> bool:
        """Whether ``err``, raised by a commit, says the server ended the session before it
        read the COMMIT (its transaction rolled back): nothing was recorded. False by
        default."""
        return False

    @abc.abstractmethod
    def translate(self, err: BaseException) -> Optional[StoreError]:
        """The store's error for a driver's error; None for an error that is not the
        driver's (it is raised as it is)."""

    def team_turn(self, db: Any, team: str) -> None:
        """Waits for ``team``'s turn to submit where the write begun does not hold the
        store's write lock (a team member's on PostgreSQL); nothing by default."""

    def locked(self) -> str:
        """What a read of a job that the write then changes ends with, to hold its row until
        the commit where writes do not all take the one lock (a team member's on PostgreSQL
        takes none that every team waits for); nothing by default."""
        return ""

    def explained(self, db: Any, err: StoreError) -> StoreError:
        """``err`` with what the still-open connection can tell of it (who holds what the call
        waited for); as it is by default."""
        return err

    @abc.abstractmethod
    def damaged(self, what: str) -> StoreDamaged:
        """A row holding what fractui never wrote, said with what to do about it."""

    def no_id(self, db: Any) -> StoreDamaged:
        """A store that has no id (meta.uid), found on ``db``: every job's key on its hosts
        holds the id, so none is given it after its making (``SqlStore._uid``)."""
        return self.damaged("it has no store id (meta.uid)")

    def close(self, db: Any) -> None:
        try:
            db.close()
        except Exception:  # a connection already lost closes without a word
            pass


UNSENDABLE = (OverflowError, UnicodeEncodeError)
"""What a driver raises for a value it cannot send at all, the server never asked: a whole
number past 64 bits (SQLite's INTEGER), text with a lone surrogate (JSON lets an agent send
one). With the server's own refusals of a value, a StoreRefused (``refused``)."""

REFUSED_MOST = 200  # characters of the driver's words on a refused value (they may quote it)


def _not_known(err: StoreError) -> StoreError:
    """``err`` of a write whose commit was sent and its answer lost. Where ``err`` is its
    retry's (refused at connect: the server shutting down) and says nothing of its try was
    recorded, that is left out: of the first try it is not known."""
    mine = type(err)(err.where, "%s (the connection was lost while committing: whether it "
                     "was recorded is not known; read it back)" % _one_try(err.what))
    mine.unknown = True
    return mine


def _upgrade_not_known(err: StoreError) -> StoreError:
    """``err`` of the opening write (the store's migrations) whose commit's answer was lost:
    no write of the caller's was sent, and each open reads the schema's version and makes
    what is due, so the next makes it where it was not. Not ``unknown``: a caller that says
    its own write may be recorded (a MIG change's audit entry) sent none."""
    return type(err)(err.where, "%s (the connection was lost as it committed the store's "
                     "upgrade to this fractui's schema, before anything of this command's was "
                     "sent: the next command that opens the store makes the upgrade where "
                     "it was not made)" % _one_try(err.what))


def _one_try(what: str) -> str:
    """``what`` less its saying that nothing was recorded (NOTHING_RECORDED), which is of one
    try only."""
    return re.sub(r"[;:] %s(?=[.:;]|$)" % NOTHING_RECORDED, "", what)


def refused(where: str, words: str) -> StoreRefused:
    """The store's refusal of a value, in the driver's words (cut: they may quote the value,
    which may be a host's and as long as it likes)."""
    return StoreRefused(where, "refused a value it was given, so nothing was written: %s" % (
        quoted(" ".join(words.split()), REFUSED_MOST)))


STORE_ID = re.compile(r"[0-9a-f]{8}")  # meta.uid, as new_store_id gives it


def new_store_id() -> str:
    """A new store's id (meta.uid), given in the transaction that makes the store. Every agent
    job's key holds it (``Job.key``): a store given another later would find none of its jobs
    on their hosts, and take each for a copy of a job it does not have."""
    return uuid.uuid4().hex[:8]


# What a submit's key stands for, in the order ``submit`` compares them: a retry with another
# of these is not the same submit, and is told which.
SUBMITTED = ("queue", "team", "name", "command", "cwd", "env", "image", "host user it runs as")


class SqlStore(Store):
    """The Store on any Dialect: one connection, used by the caller's threads in turn."""

    def __init__(self, dialect: Dialect):
        self.dialect = dialect
        self._lock = threading.Lock()
        self._db: Any = None
        try:  # a write only where a migration is due: a verb that reads writes nothing
            self.uid = self._read(self._kept_uid) or self._write(
                self._migrate, again=True, unknown=_upgrade_not_known)
        except BaseException:
            self.close()
            raise
        self.where = dialect.where  # (as its connection found it: a PostgreSQL service's)

    def _kept_uid(self, db: Any) -> Optional[str]:
        """The store's id where its schema is up to date; else None (the opening write,
        ``_migrate``, is due)."""
        return self._uid(db) if self.dialect.up_to_date(db) else None

    def _migrate(self, db: Any) -> str:
        """The store brought up to date, and its id. Made again where its commit's answer was
        lost: it reads the version first, so finds what a first that landed made."""
        self.dialect.migrate(db)
        return self._uid(db)

    def _uid(self, db: Any) -> str:
        """The store's id: given as the store was made (its dialect's), never after, so one
        lost or damaged is said, not replaced by another."""
        row = self._run(db, "SELECT value FROM meta WHERE key = 'uid'").fetchone()
        if row is None:
            raise self.dialect.no_id(db)
        check("its store id (meta.uid)", row, {"value": TEXT})
        if not STORE_ID.fullmatch(row["value"]):
            raise self.dialect.damaged("its store id (meta.uid) is %s, not the 8 hex digits "
                                       "fractui writes" % quoted(row["value"]))
        return str(row["value"])

    # -- transactions --

    def _write(self, work: Callable[[Any], T], again: bool = False,
               unknown: Callable[[StoreError], StoreError] = _not_known) -> T:
        """``work`` in a write transaction; ``again``: it finds what a commit of its own made,
        so a commit whose answer was lost is made again, once, rather than said unknown.
        ``unknown``: the error of one whose commit's answer was lost, said where it is not
        made again or its retry fails."""
        return self._transaction(work, write=True, again=again, unknown=unknown)

    def _read(self, work: Callable[[Any], T]) -> T:
        return self._transaction(work, write=False)

    def _transaction(self, work: Callable[[Any], T], write: bool, again: bool = False,
                     unknown: Callable[[StoreError], StoreError] = _not_known) -> T:
        """Runs ``work`` in one transaction (a write holding the write lock); on a connection
        found lost before the commit (or, ``again``, while committing), once more on a new
        one. A commit lost is said as not known however the try after it fails (its new
        connection refused too): never as if nothing had been recorded."""
        with self._lock:
            retried = doubt = False
            while True:
                fresh = self._db is None
                if fresh:
                    try:
                        self._db = self._connected()
                    except StoreError as err:
                        raise (unknown(err) if doubt else err) from err
                db, committing = self._db, False
                try:
                    if write:
                        self.dialect.begin(db)
                    result = work(db)
                    if write:
                        committing = True
                        self.dialect.commit(db)
                    return result
                except Unreadable as err:
                    self.dialect.rollback(db)
                    raise self.dialect.damaged(str(err)) from err
                except BaseException as err:
                    lost = self.dialect.lost(db)
                    committing = committing and not self.dialect.unread_commit(err)
                    if lost:
                        self._drop()
                    else:
                        self.dialect.rollback(db)
                    mine = self.dialect.translate(err)
                    if mine is None:
                        raise
                    if not lost:
                        mine = self.dialect.explained(db, mine)
                    if lost and not retried and (again and committing or
                                                 not fresh and not committing):
                        retried, doubt = True, committing
                        continue  # nothing was recorded, or ``work`` finds what was: again
                    raise (unknown(mine) if lost and committing or doubt else mine) from err

    def _connected(self) -> Any:
        try:
            return self.dialect.connect()
        except BaseException as err:
            mine = self.dialect.translate(err)
            if mine is None:
                raise
            raise mine from err

    def _drop(self) -> None:
        if self._db is not None:
            self.dialect.close(self._db)
            self._db = None

    def _run(self, db: Any, sql: str, args: Sequence[Any] = ()) -> Any:
        return db.execute(self.dialect.sql(sql), tuple(args))

    def _fence(self, db: Any, epoch: Optional[int]) -> None:
        """Refuses a lease holder's write whose epoch is no longer the lease's (inside the
        write's transaction, under the write lock: no take of the lease slips between)."""
        if epoch is None:
            return
        row = self._run(db, "SELECT holder, epoch FROM lease WHERE name = ?",
                        (LEASE,)).fetchone()
        if row is None or row["epoch"] != epoch:
            now = "epoch %s, held by %s" % (row["epoch"], row["holder"] or "nobody") \
                if row is not None else "never taken"
            raise LeaseLost(self.where, "the scheduler lease is no longer this scheduler's "
                            "(its epoch %d; the lease's is now %s): nothing was written"
                            % (epoch, now))

    # -- jobs --

    def submit(self, queue: str, team: Optional[str], name: str, argv: Sequence[str],
               request: dict[str, Any], actor: str, cwd: Optional[str] = None,
               env: Optional[Mapping[str, str]] = None, image: Optional[str] = None,
               key: Optional[str] = None, run_as: Optional[str] = None,
               bounded_as: Optional[str] = None) -> Job:
        env = dict(env or {})
        detail: dict[str, Any] = {"team": team, "argv": list(argv)}
        detail.update({k: v for k, v in (("env", env), ("image", image)) if v})
        asked = (queue, team, name, tuple(argv), cwd, env, image, run_as)

        def keyed(db: Any) -> Optional[Job]:
            """The job made by this submit's first try (its key's), or None; KeyTaken if that
            job was submitted otherwise."""
            row = self._run(db, "SELECT id FROM jobs WHERE submit_key = ?", (key,)).fetchone()
            if row is None:
                return None
            job = self._get(db, int(row["id"]))
            had = (job.queue, job.team, job.name, job.argv, job.cwd, job.env, job.image,
                   job.run_as)
            differ = [what for what, was, now in zip(SUBMITTED, had, asked) if was != now]
            if differ:
                raise KeyTaken("job %d was submitted with that key and another %s" % (
                    job.id, " and ".join(differ)))
            return job

        def work(db: Any) -> Job:
            if team is not None:  # (a key's first try, and the team's bound, in its turn)
                self.dialect.team_turn(db, team)
            if key is not None:
                job = keyed(db)
                if job is not None:
                    return job
            if bounded_as is not None and team is not None:
                self._within_bound(db, bounded_as, team)
            now = self.dialect.now(db)
            row = self._run(
                db, "INSERT INTO jobs (queue, team, name, argv, cwd, request, state, "
                "submitted_at, updated_at, env, image, submit_key, submitted_by, run_as) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (submit_key) DO NOTHING "
                "RETURNING id",
                (queue, team, name, json.dumps(list(argv)), cwd, json.dumps(request), PENDING,
                 now, now, json.dumps(env, sort_keys=True), image, key, actor, run_as)
                ).fetchone()
            if row is None:  # its key's job was made meanwhile: a team member's submits of
                # one key to two teams take two teams' turns, not one lock (PostgreSQL, 0032)
                job = keyed(db)
                if job is None:
                    raise StateConflict("the job submitted with key %r meanwhile is gone" % key)
                return job
            job_id = int(row["id"])
            self._audit(db, now, actor, "submit", job_id, "submitted to queue %s" % queue,
                        detail)
            self.dialect.announce(db, JOBS)
            return self._get(db, job_id)
        return self._write(work, again=key is not None)

    def _within_bound(self, db: Any, user: str, team: str) -> None:
        """WaitingFull if ``team`` has as many jobs waiting as its bound — pending, or stopping
        to be requeued, which will be: read under the write's lock or the team's turn, so two
        submits or requeues never both take the last place (PostgreSQL's guard, migrations
        0026 and 0038, holds a member on psql to the same bound)."""
        bound = self._waiting_bounds(db).get(team, DEFAULT_MAX_WAITING)
        row = self._run(db, "SELECT count(*) AS n, count(stop_intent) AS requeued FROM jobs "
                        "WHERE team = ? AND (state = ? OR state = ? AND stop_intent = ?)",
                        (team, PENDING, STOPPING, REQUEUE)).fetchone()
        if row["n"] >= bound:
            raise WaitingFull(user, team, bound, int(row["n"]), int(row["requeued"]))

    def keep_waiting_bounds(self, bounds: dict[str, int], epoch: Optional[int] = None) -> None:
        self._replace("waiting_bounds", ("team", "max_waiting"), list(bounds.items()), epoch)

    def _replace(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]],
                 epoch: Optional[int], also: Callable[[Any], None] = lambda db: None) -> None:
        """Every row of ``table`` made ``rows``: what the lease holder keeps in memory, written
        whole (fenced by ``epoch``) for the next holder and every reader; ``also``: what is
        written with them, in the same transaction."""
        insert = "INSERT INTO %s (%s) VALUES (%s)" % (table, ", ".join(columns),
                                                      ", ".join("?" * len(columns)))

        def work(db: Any) -> None:
            self._fence(db, epoch)
            self._run(db, "DELETE FROM %s" % table)
            for row in rows:
                self._run(db, insert, row)
            also(db)
        self._write(work)

    def keep_team_terms(self, terms: Mapping[str, TeamTerms],
                        epoch: Optional[int] = None) -> None:
        """The terms, and the mark (meta TERMS_WRITTEN) that a lease holder wrote them, naming
        their teams and the lease's epoch (read in the same transaction): with none (its
        config has no [[teams]]) the table alone reads as no holder's, and with some, a row
        deleted by hand as a team the holder does not have. An older fractui's write leaves
        the mark as it is (it sets it once, to '1'), but takes the lease first: its rows are
        read under another epoch than the mark's."""
        def mark(db: Any) -> None:
            lease = self._lease(db)
            self._run(db, "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO "
                          "UPDATE SET value = excluded.value", (TERMS_WRITTEN, json.dumps({
                              "teams": sorted(terms),
                              "epoch": None if lease is None else int(lease["epoch"])})))
        self._replace("team_terms", ("team", "quota_gpus", "over_quota", "weight"),
                      [(team, float(t.quota_gpus), bool(t.over_quota), float(t.weight))
                       for team, t in terms.items()], epoch, mark)

    def team_terms(self) -> KeptTerms:
        """The terms kept; a damaged row (a value of another kind, or one no config gives: a
        quota below 0, a weight not above it, either not finite) is no one's terms: it is in
        ``unread``, which names its team as one whose quota is not known, and why. As the
        store's damage it would stop ``teams`` and the lease holder's write of the terms for
        good; so the holder, which reads them at each pass, writes it again. So is a row the
        mark names that is missing (deleted by hand): read as no row, its team was one the
        holder does not have, or all of them none kept. A mark that names no teams (one of
        before it did, or a hand's), or was written under another epoch of the lease than
        the lease's now (an older fractui's take of it, whose write of the rows leaves the
        mark as it was), tells none missing, and the holder writes it again. The rows, the
        mark and the lease's epoch are read in one statement: one snapshot on both stores,
        so a holder's write between two reads never makes a team it just added read as
        deleted."""
        def work(db: Any) -> KeptTerms:
            found, unread = {}, {}
            rows = self._run(db, "SELECT t.team, t.quota_gpus, t.over_quota, t.weight, "
                                 "(SELECT value FROM meta WHERE key = ?) AS mark, "
                                 "(SELECT epoch FROM lease WHERE name = ?) AS lease_epoch "
                                 "FROM (SELECT 1 AS one) AS o LEFT JOIN team_terms AS t "
                                 "ON 1 = 1", (TERMS_WRITTEN, LEASE)).fetchall()
            for r in rows:
                if r["team"] is None:  # (no row: the one the join makes all the same)
                    continue
                try:
                    what = "team %s's quota" % named(r["team"])
                    check(what, r, {"team": TEXT, "quota_gpus": NUM, "over_quota": FLAG,
                                    "weight": NUM})
                    terms = TeamTerms(float(r["quota_gpus"]), bool(r["over_quota"]),
                                      float(r["weight"]))
                    if not (0 <= terms.quota_gpus < math.inf and 0 < terms.weight < math.inf):
                        raise Unreadable("%s is %s at weight %g, which no config gives" % (
                            what, count(terms.quota_gpus, "GPU"), terms.weight))
                except Unreadable as err:  # (said by each reader, the lease holder's log too)
                    unread[str(r["team"])] = "store %s, its row of team_terms: %s" % (
                        self.dialect.where, err)
                    continue
                found[r["team"]] = terms
            mark, epoch = rows[0]["mark"], rows[0]["lease_epoch"]
            listed = None if mark is None else _teams_listed(mark, epoch)
            for team in sorted((listed or set()) - set(found) - set(unread)):
                unread[team] = ("store %s, its row of team_terms: team %s's quota is "
                                "missing (the row deleted since the lease holder wrote it)"
                                % (self.dialect.where, named(team)))
            return KeptTerms(found, unread, mark is not None, listed is not None)
        return self._read(work)

    def keep_team_holds(self, holds: Mapping[str, Hold], epoch: Optional[int] = None) -> None:
        self._replace("team_holds", ("team", "job", "charge", "host"),
                      [(team, h.job, float(h.charge), h.host) for team, h in holds.items()],
                      epoch)

    def team_holds(self) -> dict[str, Hold]:
        """The holds kept; a damaged row is left out, said in the log (as a mode-change hold):
        a hold is only said, and written again only when a pass's holds change, so as the store's
        damage it would stop every screen's read and ``teams`` until then."""
        def work(db: Any) -> dict[str, Hold]:
            found = {}
            for r in self._run(db, "SELECT team, job, charge, host FROM team_holds"):
                try:
                    check("team %s's hold" % named(r["team"]), r, {"team": TEXT, "job": INT,
                                                                    "charge": NUM,
                                                                    "host": maybe(TEXT)})
                except Unreadable as err:
                    log.warning("%s: left out", err)
                    continue
                found[r["team"]] = Hold(r["job"], float(r["charge"]), r["host"])
            return found
        return self._read(work)

    def waiting_bounds(self) -> dict[str, int]:
        return self._read(self._waiting_bounds)

    def _waiting_bounds(self, db: Any) -> dict[str, int]:
        found = {}
        for r in self._run(db, "SELECT team, max_waiting FROM waiting_bounds"):
            check("the bound on team %s's waiting jobs" % named(r["team"]), r,
                  {"team": TEXT, "max_waiting": INT})
            found[r["team"]] = r["max_waiting"]
        return found

    def get(self, job_id: int) -> Job:
        return self._read(lambda db: self._get(db, job_id))

    def jobs(self, states: Optional[Iterable[str]] = None, queue: Optional[str] = None,
             limit: Optional[int] = None, hosts: Optional[Iterable[str]] = None,
             users: Optional[Iterable[str]] = None,
             ended_since: Optional[float] = None,
             other_than: Optional[Iterable[str]] = None) -> list[Job]:
        where, args = [], []  # type: list[str], list[Any]
        if ended_since is not None:
            where.append("ended_at >= ?")
            args.append(ended_since)
        other = list(other_than or ())
        if other:
            where.append("state NOT IN (%s)" % ",".join("?" * len(other)))
            args += other
        for column, values in (("state", states), ("host", hosts)):
            if values is not None:
                values = list(values)
                if not values:
                    return []
                where.append("%s IN (%s)" % (column, ",".join("?" * len(values))))
                args += values
        if users is not None:  # submitted_by is user@where, where holds no @ (submitter)
            users = list(users)
            if not users:
                return []
            where.append("(%s)" % " OR ".join(
                ["(submitted_by = ? OR substr(submitted_by, 1, ?) = ? AND "
                 "replace(substr(submitted_by, ?), '@', '') = substr(submitted_by, ?))"] *
                len(users)))
            args += [x for u in users for x in (u, len(u) + 1, u + "@", len(u) + 2, len(u) + 2)]
        if queue is not None:
            where.append("queue = ?")
            args.append(queue)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        if limit is not None:
            sql = "SELECT * FROM (%s ORDER BY id DESC LIMIT %d) AS newest" % (sql, int(limit))
        return self._read(lambda db: [_job(r) for r in self._run(db, sql + " ORDER BY id",
                                                                  args)])

    def submitters(self) -> frozenset[str]:
        return self._read(lambda db: frozenset(submitter(r["submitted_by"]) for r in self._run(
            db, "SELECT DISTINCT submitted_by FROM jobs WHERE submitted_by IS NOT NULL")))

    def place(self, job_id: int, slot: Slot, actor: str, why: str, manual: bool = False,
              preemptible: bool = False, epoch: Optional[int] = None,
              quota: Optional[float] = None, attempt: Optional[int] = None) -> Job:
        def within(db: Any, job: Job) -> None:
            if not preemptible:
                self._within_quota(db, job, slot, quota, "placed")
        return self._transition(job_id, (PENDING,), epoch, actor, why,
                                "place" if manual else "decide",
                                {"state": PLACED, "slot": slot, "manual": manual,
                                 "preemptible": preemptible, "reason": None}, holds=within,
                                again=manual, attempt=attempt)

    def _within_quota(self, db: Any, job: Job, slot: Slot, quota: Optional[float],
                      done: str) -> None:
        """QuotaTaken unless ``slot`` fits in what ``job``'s team holds within its ``quota``
        now (None: no quota), read under the write lock: what each job holds within it
        (model.held_within: a move holds the larger of its two slots where each is not
        borrowed), the job itself left out. One that adds nothing within the quota
        (model.adds_within: a CPU-only job, a move to a slot no larger) passes: it takes no
        team past its quota, though a team's quota lowered since may leave it past already."""
        if quota is None or job.team is None or adds_within(job, slot.charge) <= QUOTA_EPSILON:
            return
        held = sum(held_within(float(r["charge"] or 0.0), bool(r["preemptible"]),
                               *_move_held(r)) for r in self._run(
            db, "SELECT id, charge, preemptible, move_to FROM jobs WHERE team = ? AND state "
            "IN (?, ?, ?) AND host IS NOT NULL AND id <> ?", (job.team,) + ON_HOST + (job.id,)))
        if held + slot.charge > quota + QUOTA_EPSILON:
            raise QuotaTaken(
                "job %d was not %s: team %s now holds %.2f of its %.2f GPUs within its quota, "
                "and %s adds %.2f (placed meanwhile by another)" % (
                    job.id, done, job.team, held, quota, slot.describe(), slot.charge))

    def move(self, job_id: int, slot: Slot, actor: str, why: str, borrowed: bool = False,
             quota: Optional[float] = None, attempt: Optional[int] = None) -> Job:
        def within(db: Any, job: Job) -> None:
            if job.slot is not None and same_place(job.slot, slot):  # (its attempt there)
                raise StateConflict("job %d is %s on %s" % (job_id, job.state,
                                                             job.slot.describe()))
            if not borrowed:
                self._within_quota(db, job, slot, quota, "moved")
        return self._transition(job_id, (PLACED, RUNNING), None, actor, why, MOVE,
                                {"state": STOPPING, "stop_intent": MOVE, "reason": why,
                                 "move_to": (slot, borrowed)}, holds=within, again=True,
                                attempt=attempt)

    def moved(self, job_id: int, actor: str, why: str, stale_on: Optional[str] = None,
              epoch: Optional[int] = None, sampled: Optional[Sampled] = None) -> Job:
        def work(db: Any) -> Job:
            self._fence(db, epoch)
            now = self.dialect.now(db)
            job = self._expect(db, job_id, (STOPPING,))
            if job.stop_intent != MOVE or job.move_to is None:
                raise StateConflict("job %d is stopping to %s, not to move" % (
                    job_id, job.stop_intent))
            if stale_on is not None:
                self._stale(db, stale_on, job, now)
            fields = self._next_attempt(job, now)
            fields.update(state=PLACED, reason=None, slot=job.move_to, manual=True,
                          preemptible=job.move_borrowed)
            self._set(db, job_id, now, fields)
            usage_rows.close_attempt(self._run, db, job, now, REQUEUED, sampled)
            self._forget_stops(db, job)
            self._audit(db, now, actor, "moved", job_id, why,
                        {"attempt": job.attempt + 1, "stale_on": stale_on,
                         "slot": _detail({"slot": job.move_to})["slot"]})
            self.dialect.announce(db, JOBS)
            return self._get(db, job_id)
        return self._write(work)

    def reslot(self, job_id: int, slot: Slot, epoch: Optional[int] = None) -> Job:
        return self._transition(job_id, (PLACED,), epoch, None, None, None, {"slot": slot})

    def started(self, job_id: int, agent_job: str, started_at: Optional[float], actor: str,
                why: str, epoch: Optional[int] = None, model: Optional[str] = None,
                booked_at: Optional[float] = None) -> Job:
        def unrecorded(db: Any, job: Job) -> None:
            if job.agent_job is not None:  # (stopping: its start was recorded already)
                raise StateConflict("job %d is %s, its start recorded" % (job_id, job.state))

        def fields(job: Job) -> dict[str, Any]:
            ran = {"agent_job": agent_job, "started_at": started_at}
            return dict(ran, state=RUNNING, reason=None) if job.state == PLACED else ran

        def opened(db: Any, job: Job, changed: dict[str, Any]) -> None:
            at = next((t for t in (changed["started_at"], booked_at) if t is not None),
                      changed["updated_at"])
            usage_rows.open_attempt(self._run, db, job, at, model)
        return self._transition(job_id, (PLACED, STOPPING), epoch, actor, why, "launch",
                                fields, then=opened, holds=unrecorded)

    def stopping(self, job_id: int, expect: Iterable[str], intent: str, actor: str, why: str,
                 epoch: Optional[int] = None, attempt: Optional[int] = None,
                 bounded_as: Optional[str] = None) -> Job:
        if intent not in STOP_INTENTS:
            raise ValueError("unknown stop intent %r" % intent)

        def overridable(db: Any, job: Job) -> None:
            if job.state == STOPPING and intent not in stops_offered(STOPPING,
                                                                     job.stop_intent):
                raise StateConflict("job %d is stopping to %s" % (job_id, job.stop_intent))
            if bounded_as is not None and intent == REQUEUE and job.team is not None:
                self.dialect.team_turn(db, job.team)  # (as a submit counts, in its turn)
                self._within_bound(db, bounded_as, job.team)

        def fields(job: Job) -> dict[str, Any]:
            asked = {"state": STOPPING, "stop_intent": intent, "reason": why}
            # a cancel of a job stopping to move lets go of the slot held for it
            return asked if job.move_to is None else dict(asked, move_to=None)
        return self._transition(job_id, tuple(expect), epoch, actor, why, intent, fields,
                                holds=overridable, again=True, attempt=attempt)

    def ended(self, job_id: int, expect: Iterable[str], state: str, reason: Optional[str],
              actor: str, why: str, action: str, exit_code: Optional[int] = None,
              ended_at: Optional[float] = None, refusals: Optional[Sequence[Refusal]] = None,
              stale_on: Optional[str] = None, epoch: Optional[int] = None,
              sampled: Optional[Sampled] = None, again: bool = False,
              last_line: Optional[str] = None, started_at: Optional[float] = None) -> Job:
        if state not in ENDED:
            raise ValueError("%r is not an end (%s)" % (state, ", ".join(ENDED)))
        ends: dict[str, Any] = {"state": state, "reason": reason, "exit_code": exit_code,
                                "ended_at": _NOW if ended_at is None else ended_at}
        if refusals is not None:
            ends["refusals"] = tuple(refusals)
        if stale_on is not None:
            ends["slot"] = None

        def fields(job: Job) -> dict[str, Any]:  # (a known start is never overwritten)
            unknown = job.started_at is None and started_at is not None
            return dict(ends, **({"started_at": started_at} if unknown else {}))

        def closed(db: Any, job: Job, changed: dict[str, Any]) -> None:
            if job.state != PENDING:  # (a pending job never held a slice)
                usage_rows.close_attempt(self._run, db, job, changed["ended_at"], state,
                                         sampled)
            if state == FAILED and job.state != PENDING:  # (an earlier attempt's line goes)
                self._keep_last_line(db, job_id, last_line)
        return self._transition(job_id, tuple(expect), epoch, actor, why, action, fields,
                                stale_on, then=closed, again=again)

    def waiting(self, job_id: int, reason: str, epoch: Optional[int] = None) -> Job:
        return self._transition(job_id, (PENDING,), epoch, None, None, None, {"reason": reason})

    def held(self, job_id: int, reason: Optional[str], started_at: Optional[float],
             epoch: Optional[int] = None) -> Job:
        return self._transition(job_id, (RUNNING, STOPPING), epoch, None, None, None,
                                lambda job: {"started_at": started_at, **(
                                    {"reason": reason} if job.state == RUNNING else {})})

    def _transition(self, job_id: int, expect: tuple[str, ...], epoch: Optional[int],
                    actor: Optional[str], why: Optional[str], action: Optional[str],
                    fields: Union[dict[str, Any], Callable[[Job], dict[str, Any]]],
                    stale_on: Optional[str] = None,
                    then: Optional[Callable[[Any, Job, dict[str, Any]], None]] = None,
                    holds: Optional[Callable[[Any, Job], None]] = None,
                    again: bool = False, attempt: Optional[int] = None) -> Job:
        """The one way a job's columns change (requeue aside): ``fields`` (or those a function
        of the job as it is gives) set (_NOW: the transaction's time) if the job is in one of
        ``expect``; ``stale_on``: its attempt's copy there recorded as stale; with ``action``,
        audited as ``actor`` with ``why``; ``holds``: what else must still hold, read under the
        write lock (raises to write nothing); ``then``: what else the change writes (its usage
        record), given the job as it was and the columns changed. ``again``: a commit whose
        answer was lost is made again, which finds the job moved (StateConflict, for the
        caller to read it as it is) if the first landed: only for callers that answer that so;
        never of another attempt than the first try's. ``attempt``: the one the caller read,
        the only one written to (a user's ask is of the job as they saw it)."""
        seen: list[int] = [] if attempt is None else [attempt]  # the attempt asked of

        def work(db: Any) -> Job:
            self._fence(db, epoch)
            now = self.dialect.now(db)
            job = self._expect(db, job_id, expect)
            if not seen:
                seen.append(job.attempt)
            elif job.attempt != seen[0]:  # back where it was, as a later attempt
                raise StateConflict("job %d is attempt %d now, not %d" % (
                    job_id, job.attempt, seen[0]))
            if holds is not None:
                holds(db, job)
            asked = fields(job) if callable(fields) else fields
            changed = {k: now if v is _NOW else v for k, v in asked.items()}
            detail = _detail(changed)
            if stale_on is not None:
                self._stale(db, stale_on, job, now)
                detail["stale_on"] = stale_on
            self._set(db, job_id, now, changed)
            if then is not None:
                then(db, job, dict(changed, updated_at=now))
            if changed.get("state") in ENDED and job.state != PENDING:
                self._forget_stops(db, job)  # (a pending attempt never ran: none were sent)
            self.dialect.announce(db, JOBS)
            if action is not None:
                self._audit(db, now, actor or "fractui", action, job_id, why or action, detail)
            return self._get(db, job_id)
        return self._write(work, again=again)

    def requeue(self, job_id: int, expect: Iterable[str], actor: str, why: str,
                stale_on: Optional[str] = None, refusal: Optional[Refusal] = None,
                epoch: Optional[int] = None, sampled: Optional[Sampled] = None) -> Job:
        expect = tuple(expect)

        def work(db: Any) -> Job:
            self._fence(db, epoch)
            now = self.dialect.now(db)
            job = self._expect(db, job_id, expect)
            if job.state == STOPPING and job.stop_intent == "cancel":  # (a cancel came since)
                raise StateConflict("job %d is stopping to be cancelled: it ends cancelled, "
                                    "never back in its queue" % job_id)
            if stale_on is not None:
                self._stale(db, stale_on, job, now)
            fields = self._next_attempt(job, now)
            fields.update(state=PENDING, reason=why)
            detail: dict[str, Any] = {"attempt": job.attempt + 1, "stale_on": stale_on}
            if refusal is not None:
                fields["refusals"] = job.refusals + (refusal,)
                detail["refusal"] = refusal.record()
            self._set(db, job_id, now, fields)
            if job.state != PENDING:
                usage_rows.close_attempt(self._run, db, job, now, PREEMPTED if
                                         job.stop_intent == "preempt" else REQUEUED, sampled)
            self._forget_stops(db, job)
            self._audit(db, now, actor, "requeued", job_id, why, detail)
            self.dialect.announce(db, JOBS)
            return self._get(db, job_id)
        return self._write(work)

    @staticmethod
    def _next_attempt(job: Job, now: float) -> dict[str, Any]:
        """The columns of ``job``'s next attempt, begun as its current one leaves its host
        (a requeue, or a move): no slot, start or stop yet."""
        fields: dict[str, Any] = {
            "attempt": job.attempt + 1, "slot": None, "agent_job": None, "preemptible": False,
            "manual": False, "started_at": None, "stop_intent": None, "exit_code": None,
            "move_to": None}
        if job.agent_job is not None:  # it started: its wait starts again (a launch
            fields["queued_at"] = now  # refused before it started: the wait goes on)
        return fields

    def stale(self, host: Optional[str] = None) -> list[StaleCopy]:
        sql, args = "SELECT * FROM stale", ()  # type: str, tuple
        if host is not None:
            sql, args = sql + " WHERE host = ?", (host,)
        return self._read(lambda db: [_stale(r) for r in self._run(
            db, sql + " ORDER BY since", args)])

    def drop_stale(self, host: str, key: str, actor: str, why: str,
                   epoch: Optional[int] = None) -> None:
        def work(db: Any) -> None:
            self._fence(db, epoch)
            row = self._run(db, "SELECT job FROM stale WHERE host = ? AND key = ?",
                            (host, key)).fetchone()
            if row is None:
                return
            self._run(db, "DELETE FROM stale WHERE host = ? AND key = ?", (host, key))
            self._run(db, "DELETE FROM stops_sent WHERE host = ? AND key = ?", (host, key))
            self.dialect.announce(db, JOBS)
            self._audit(db, self.dialect.now(db), actor, "stop-stale", row["job"], why,
                        {"host": host, "key": key})
        self._write(work)

    # -- audit --

    def audit(self, actor: str, action: str, job: Optional[int], why: str,
              detail: Optional[dict[str, Any]] = None) -> None:
        self._write(lambda db: self._audit(db, self.dialect.now(db), actor, action, job, why,
                                           detail or {}))

    def audit_log(self, job: Optional[int] = None, limit: int = 100) -> list[AuditEntry]:
        sql, args = "SELECT * FROM audit", ()  # type: str, tuple
        if job is not None:
            sql, args = sql + " WHERE job = ?", (job,)
        sql = "SELECT * FROM (%s ORDER BY id DESC LIMIT %d) AS newest ORDER BY id" % (
            sql, int(limit))
        return self._read(lambda db: [_audit_entry(r)
                                      for r in self._run(db, sql, args).fetchall()])

    # -- inventory --

    def record_inventory(self, host: str, facts: dict[str, Any],
                         epoch: Optional[int] = None) -> None:
        bare = {k: v for k, v in facts.items() if k != OUT_OF_CONFIG}
        same = [json.dumps(f, sort_keys=True) for f in (bare, dict(bare, **{OUT_OF_CONFIG: True}))]

        def work(db: Any) -> None:
            self._fence(db, epoch)
            self._run(db, "INSERT INTO inventory (host, facts, seen_at) VALUES (?, ?, ?) "
                          "ON CONFLICT (host) DO UPDATE SET facts = excluded.facts, "
                          "seen_at = CASE WHEN inventory.facts IN (?, ?) THEN inventory.seen_at "
                          "ELSE excluded.seen_at END",
                      (host, json.dumps(facts, sort_keys=True), self.dialect.now(db), *same))
            self.dialect.announce(db, HOSTS)
        self._write(work)

    def forget_inventory(self, host: str, epoch: Optional[int] = None) -> bool:
        def work(db: Any) -> bool:
            self._fence(db, epoch)
            kept = self._run(db, "DELETE FROM inventory WHERE host = ?", (host,)).rowcount > 0
            if kept:
                self.dialect.announce(db, HOSTS)
            return kept
        return self._write(work)

    def inventory(self) -> dict[str, dict[str, Any]]:
        return self._read(lambda db: {
            r["host"]: _facts(r) for r in self._run(db, "SELECT host, facts FROM inventory")})

    def inventory_since(self) -> dict[str, float]:
        def work(db: Any) -> dict[str, float]:
            out = {}
            for r in self._run(db, "SELECT host, seen_at FROM inventory"):
                check("the inventory of %s" % named(r["host"]), r, {"host": TEXT, "seen_at": NUM})
                out[r["host"]] = float(r["seen_at"])
            return out
        return self._read(work)

    # -- job output, for users who reach only the store --

    def ask_log(self, job_id: int, actor: str) -> None:
        def work(db: Any) -> None:
            self._get(db, job_id)
            self._run(db, "INSERT INTO log_requests (job, actor, asked_at) VALUES (?, ?, ?) "
                          "ON CONFLICT (job) DO UPDATE SET actor = excluded.actor, "
                          "asked_at = excluded.asked_at", (job_id, actor, self.dialect.now(db)))
            self.dialect.announce(db, LOGS)
        self._write(work, again=True)

    def log_requests(self) -> list[int]:
        return self._read(lambda db: [int(r["job"]) for r in self._run(
            db, "SELECT job FROM log_requests ORDER BY asked_at")])

    def keep_log(self, job_id: int, text: str, complete: bool,
                 epoch: Optional[int] = None, offset: Optional[int] = None,
                 attempt: Optional[int] = None, whole: bool = False) -> bool:
        def work(db: Any) -> bool:
            self._fence(db, epoch)
            if attempt is not None and self._get(db, job_id).attempt != attempt:
                return False
            self._run(db, "INSERT INTO log_tails (job, text, complete, kept_at, log_offset, "
                          "log_whole) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (job) DO UPDATE "
                          "SET text = excluded.text, complete = excluded.complete, "
                          "kept_at = excluded.kept_at, log_offset = excluded.log_offset, "
                          "log_whole = excluded.log_whole",
                      (job_id, text, int(complete), self.dialect.now(db), offset, int(whole)))
            self._answered(db, job_id)
            return True
        return self._write(work)

    def answer_log(self, job_id: int, complete: bool, epoch: Optional[int] = None) -> None:
        def work(db: Any) -> None:
            self._fence(db, epoch)
            if complete:
                self._run(db, "UPDATE log_tails SET complete = 1 WHERE job = ?", (job_id,))
            self._answered(db, job_id)
        self._write(work)

    def _keep_last_line(self, db: Any, job_id: int, line: Optional[str]) -> None:
        """The failed job's last line, kept with its output (behind the same rule): in its
        tail's row, which holds no tail (text NULL) until one is kept."""
        self._run(db, "INSERT INTO log_tails (job, text, complete, kept_at, last_line) "
                      "VALUES (?, NULL, 0, ?, ?) ON CONFLICT (job) DO UPDATE SET "
                      "last_line = excluded.last_line", (job_id, self.dialect.now(db), line))

    def _answered(self, db: Any, job_id: int) -> None:
        """The requests for the job's tail are answered: the askers read what is kept."""
        self._run(db, "DELETE FROM log_requests WHERE job = ?", (job_id,))
        self.dialect.announce(db, LOGS)

    def log_tail(self, job_id: int) -> Optional[LogTail]:
        def work(db: Any) -> Optional[LogTail]:
            row = self._run(db, "SELECT * FROM log_tails WHERE job = ? AND text IS NOT NULL",
                            (job_id,)).fetchone()
            if row is None:
                return None
            check("the output kept of job %d" % job_id, row,
                  {"text": TEXT, "complete": FLAG, "kept_at": NUM, "log_offset": maybe(INT),
                   "log_whole": FLAG})
            offset = row["log_offset"]
            return LogTail(job_id, row["text"], bool(row["complete"]), float(row["kept_at"]),
                           None if offset is None else int(offset), bool(row["log_whole"]))
        return self._read(work)

    def last_lines(self, job_ids: Iterable[int]) -> dict[int, str]:
        ids = sorted(set(job_ids))

        def work(db: Any) -> dict[int, str]:
            found = {}
            for at in range(0, len(ids), LINES_AT_ONCE):
                batch = ids[at:at + LINES_AT_ONCE]
                for r in self._run(db, "SELECT job, last_line FROM log_tails WHERE last_line IS "
                                       "NOT NULL AND job IN (%s)" % ",".join("?" * len(batch)),
                                   batch):
                    check("the last line kept of job %s" % named(r["job"]), r,
                          {"job": INT, "last_line": TEXT})
                    found[int(r["job"])] = r["last_line"]
            return found
        return self._read(work) if ids else {}

    # -- usage --

    def keep_usage(self, sampled: dict[tuple[int, int], Sampled],
                   epoch: Optional[int] = None) -> None:
        def work(db: Any) -> None:
            self._fence(db, epoch)
            for (job, attempt), s in sorted(sampled.items()):
                usage_rows.keep_sampled(self._run, db, job, attempt, s)
        if sampled:
            self._write(work)

    def keep_gpu_time(self, rows: Sequence[GpuTime], epoch: Optional[int] = None) -> None:
        def work(db: Any) -> None:
            self._fence(db, epoch)
            usage_rows.add_gpu_time(self._run, db, rows, self.dialect.locked())
        if rows:
            self._write(work)

    def usage(self, since: float, until: float, to_now: bool = False) -> list[UsageRecord]:
        return self._read(lambda db: usage_rows.read(self._run, db, since, until, to_now))

    def gpu_time(self, since: float, until: float) -> list[GpuTime]:
        return self._read(lambda db: usage_rows.read_gpu_time(self._run, db, since, until))

    def usage_begins(self) -> Optional[float]:
        return self._read(lambda db: usage_rows.begins(self._run, db))

    def usage_forgotten_before(self) -> Optional[float]:
        return self._read(lambda db: usage_rows.forgotten(self._run, db))

    def prune_usage(self, before: float, epoch: Optional[int] = None) -> int:
        def work(db: Any) -> int:
            self._fence(db, epoch)
            return usage_rows.prune(self._run, db, before, self.dialect.now(db))
        return self._write(work)

    def now(self) -> float:
        return self._read(self.dialect.now)

    # -- what the lease holder remembers --

    def keep_lost_clocks(self, hosts_away: dict[str, float], gpus_gone: dict[int, float],
                         epoch: Optional[int] = None) -> None:
        def work(db: Any) -> None:
            self._fence(db, epoch)
            self._run(db, "DELETE FROM lost_clocks")
            for kind, clocks in (("host", hosts_away), ("job", gpus_gone)):
                for name, since in clocks.items():
                    self._run(db, "INSERT INTO lost_clocks (kind, name, since) "
                                  "VALUES (?, ?, ?)", (kind, str(name), float(since)))
        self._write(work)

    def stop_sent(self, host: str, key: str, epoch: Optional[int] = None) -> None:
        def work(db: Any) -> None:
            self._fence(db, epoch)
            self._run(db, "INSERT INTO stops_sent (host, key, sent_at) VALUES (?, ?, ?) "
                          "ON CONFLICT (host, key) DO NOTHING",
                      (host, key, self.dialect.now(db)))
        self._write(work)

    def copy_ended(self, host: str, key: str, actor: str, epoch: Optional[int] = None,
                   late: Optional[LateCopy] = None) -> bool:
        def work(db: Any) -> bool:
            self._fence(db, epoch)
            kept = self._run(db, "DELETE FROM stops_sent WHERE host = ? AND key = ?",
                             (host, key)).rowcount > 0
            if kept and late is not None:
                job = self._get(db, late.job)
                if usage_rows.add_late(self._run, db, job, late):
                    self._audit(db, self.dialect.now(db), actor, "late-copy", job.id,
                                late.describe(), {"host": host, "key": key,
                                                  "attempt": late.attempt})
            return kept
        return self._write(work)

    def keep_mode_holds(self, holds: dict[str, ModeHold], epoch: Optional[int] = None) -> None:
        self._replace("mode_holds", ("uuid", "failures", "until"),
                      [(gpu, hold.failures, float(hold.until)) for gpu, hold in holds.items()],
                      epoch)

    def mode_holds(self) -> dict[str, ModeHold]:
        return self._read(self._mode_holds)

    def _mode_holds(self, db: Any) -> dict[str, ModeHold]:
        """The holds kept; a damaged row is left out, said in the log: a hold is the lease
        holder's memory for an hour at most (without it, one more try of the change), and as
        the store's damage it would stop every pass and screen."""
        found = {}
        for r in self._run(db, "SELECT uuid, failures, until FROM mode_holds"):
            try:
                check("the mode-change hold of %s" % named(r["uuid"]), r,
                      {"uuid": TEXT, "failures": INT, "until": NUM})
            except Unreadable as err:
                log.warning("%s: left out", err)
                continue
            found[r["uuid"]] = ModeHold(r["failures"], float(r["until"]))
        return found

    def holder_memory(self) -> HolderMemory:
        def work(db: Any) -> HolderMemory:
            clocks: dict[str, dict[str, float]] = {"host": {}, "job": {}}
            for r in self._run(db, "SELECT kind, name, since FROM lost_clocks"):
                check("a lost-host clock", r, {"kind": TEXT, "name": TEXT, "since": NUM})
                if r["kind"] not in clocks or (r["kind"] == "job" and  # (isdigit took "²")
                                               whole(r["name"], JOB_MOST) is None):
                    raise Unreadable("a lost-host clock is kept for %s %r" % (
                        named(r["kind"]), r["name"]))
                clocks[r["kind"]][r["name"]] = float(r["since"])
            stops = frozenset((r["host"], r["key"]) for r in self._run(
                db, "SELECT host, key FROM stops_sent"))
            return HolderMemory(clocks["host"], {int(j): t for j, t in clocks["job"].items()},
                                stops, self._mode_holds(db))
        return self._read(work)

    # -- hosts and GPUs out of service --

    def cordon(self, host: str, gpu: Optional[int], mode: str, actor: str,
               why: str) -> Cordon:
        if mode not in CORDON_MODES:
            raise ValueError("unknown cordon mode %r" % mode)
        key = WHOLE_HOST if gpu is None else gpu
        tried: list[bool] = []  # (a try before this one, whose answer was lost)

        def work(db: Any) -> Cordon:
            now = self.dialect.now(db)
            if tried:  # made again: what the first made, if it landed, is its answer
                made = [_cordon(r) for r in self._run(
                    db, "SELECT * FROM cordons WHERE host = ? AND gpu = ?", (host, key))]
                if made and (made[0].mode, made[0].actor, made[0].why) == (mode, actor, why):
                    return made[0]
            tried.append(True)
            self._run(db, "INSERT INTO cordons (host, gpu, mode, actor, why, since) "
                          "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (host, gpu) DO UPDATE SET "
                          "mode = excluded.mode, actor = excluded.actor, why = excluded.why, "
                          "since = excluded.since", (host, key, mode, actor, why, now))
            self._audit(db, now, actor, mode, None, why, {"host": host, "gpu": gpu})
            self.dialect.announce(db, HOSTS)
            return Cordon(host, gpu, mode, actor, why, now)
        return self._write(work, again=True)

    def uncordon(self, host: str, gpu: Optional[int], actor: str, why: str) -> list[Cordon]:
        first: list[list[Cordon]] = []  # what a try before this one, its answer lost, lifted

        def work(db: Any) -> list[Cordon]:
            sql, args = "FROM cordons WHERE host = ?", [host]  # type: str, list[Any]
            if gpu is not None:
                sql, args = sql + " AND gpu = ?", args + [gpu]
            lifted = sorted((_cordon(r) for r in self._run(db, "SELECT * " + sql, args)),
                            key=_where)
            if first and not lifted:  # made again: the first landed, and lifted these
                return first[0]
            first.append(lifted)
            if lifted:
                self._run(db, "DELETE " + sql, args)
                self._audit(db, self.dialect.now(db), actor, "uncordon", None, why,
                            {"host": host, "gpu": gpu, "lifted": [c.where() for c in lifted]})
                self.dialect.announce(db, HOSTS)
            return lifted
        return self._write(work, again=True)

    def cordons(self) -> list[Cordon]:
        return self._read(lambda db: [_cordon(r) for r in self._run(
            db, "SELECT * FROM cordons ORDER BY host, gpu")])

    # -- the scheduler lease --

    def acquire_lease(self, holder: str, ttl_s: float) -> Optional[int]:
        def work(db: Any) -> Optional[int]:
            now = self.dialect.now(db)
            row = self._lease(db)
            if row is not None and row["holder"] == holder:  # a renewal keeps the epoch
                self._run(db, "UPDATE lease SET expires_at = ? WHERE name = ?",
                          (now + ttl_s, LEASE))
                return int(row["epoch"])
            if row is not None and row["holder"] and row["expires_at"] > now:
                return None
            epoch = (int(row["epoch"]) if row is not None else 0) + 1
            self._run(db, "INSERT INTO lease (name, holder, expires_at, epoch, trouble) "
                          "VALUES (?, ?, ?, ?, NULL) ON CONFLICT (name) DO UPDATE SET "
                          "holder = excluded.holder, expires_at = excluded.expires_at, "
                          "epoch = excluded.epoch, trouble = NULL",
                      (LEASE, holder, now + ttl_s, epoch))
            before = row["holder"] if row is not None else ""
            self._audit(db, now, holder, "lease", None, "took the scheduler lease" + (
                " from %s, expired" % before if before else ""), {"epoch": epoch})
            self.dialect.announce(db, LEASE_TOPIC)
            return epoch
        return self._write(work)

    def release_lease(self, holder: str) -> None:
        """The row stays, held by nobody (''), so the next holder's epoch is a new one."""
        def work(db: Any) -> None:
            if self._run(db, "UPDATE lease SET holder = '', expires_at = 0, trouble = NULL "
                             "WHERE name = ? AND holder = ?", (LEASE, holder)).rowcount:
                self.dialect.announce(db, LEASE_TOPIC)
        self._write(work)

    def _lease(self, db: Any) -> Any:
        """The lease's row, its values checked, or None."""
        row = self._run(db, "SELECT holder, expires_at, epoch, trouble FROM lease WHERE name = ?",
                        (LEASE,)).fetchone()
        if row is not None:
            check("the scheduler lease", row, LEASE_COLUMNS)
        return row

    def _held_lease(self, db: Any) -> Any:
        """The lease's row while a holder holds it (by the store's clock), else None."""
        row = self._lease(db)
        if row is None or not row["holder"] or row["expires_at"] <= self.dialect.now(db):
            return None
        return row

    def lease_holder(self) -> Optional[tuple[str, float]]:
        row = self._read(self._held_lease)
        return (row["holder"], float(row["expires_at"])) if row is not None else None

    def keep_trouble(self, trouble: Optional[str], epoch: Optional[int] = None) -> None:
        def work(db: Any) -> None:
            self._fence(db, epoch)
            self._run(db, "UPDATE lease SET trouble = ? WHERE name = ?", (trouble, LEASE))
            self.dialect.announce(db, LEASE_TOPIC)
        self._write(work)

    def trouble(self) -> Optional[str]:
        def work(db: Any) -> Optional[str]:
            row = self._held_lease(db)
            if row is None:
                return None
            check("the scheduler lease", row, {"trouble": maybe(TEXT)})  # (its readers' only)
            return row["trouble"]
        return self._read(work)

    def version(self, topic: str) -> int:
        def work(db: Any) -> int:
            # (the sum of its rows: on PostgreSQL one per role that announced it, 0033)
            row = self._run(db, "SELECT CAST(sum(version) AS BIGINT) AS version, count(*) AS n "
                            "FROM changes WHERE topic = ?", (topic,)).fetchone()
            if not row["n"]:
                raise self.dialect.damaged("no change counter for %r" % topic)
            check("the change counter of %r" % topic, row, {"version": INT})
            return int(row["version"])
        return self._read(work)

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- inside a transaction --

    def _get(self, db: Any, job_id: int, held: bool = False) -> Job:
        """The job; ``held``: its row held until the commit, so that a member's cancel and
        the scheduler's placement of one job take turns by it (Dialect.locked)."""
        row = self._run(db, "SELECT * FROM jobs WHERE id = ?" + (
            self.dialect.locked() if held else ""), (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return _job(row)

    def _expect(self, db: Any, job_id: int, expect: tuple[str, ...]) -> Job:
        job = self._get(db, job_id, held=True)
        if job.state not in expect:
            raise StateConflict("job %d is %s, not %s" % (job_id, job.state,
                                                         " or ".join(expect)))
        return job

    def _set(self, db: Any, job_id: int, now: float, fields: dict[str, Any]) -> None:
        columns = {"updated_at": now}
        for name, value in fields.items():
            if name == "slot":
                slot: Optional[Slot] = value
                columns.update(dict(zip(_SLOT_COLUMNS, (
                    slot.host, json.dumps(list(slot.gpus)), slot.profile, slot.start,
                    slot.memory_mib, slot.charge, slot.layout_version) if slot else
                    (None,) * 5 + (0.0, None))))
            elif name in ("preemptible", "manual"):
                columns[name] = int(bool(value))
            elif name == "refusals":
                columns[name] = json.dumps([r.record() for r in value])
            elif name == "move_to":
                columns[name] = None if value is None else json.dumps(
                    {"slot": value[0].record(), "borrowed": value[1]}, sort_keys=True)
            else:
                columns[name] = value
        self._run(db, "UPDATE jobs SET %s WHERE id = ?" % ", ".join(
            "%s = ?" % c for c in columns), list(columns.values()) + [job_id])

    def _forget_stops(self, db: Any, job: Job) -> None:
        """The job's attempt has ended or left its host: the stops sent to it are no longer
        anyone's to remember (a copy of it left running is a stale copy, stopped anew)."""
        self._run(db, "DELETE FROM stops_sent WHERE key = ?", (job.key(self.uid),))

    def _stale(self, db: Any, host: str, job: Job, now: float) -> None:
        """The job's current attempt may still run on ``host``: a copy to stop on its return."""
        self._run(db, "INSERT INTO stale (host, key, job, since) VALUES (?, ?, ?, ?) "
                      "ON CONFLICT (host, key) DO NOTHING", (host, job.key(self.uid), job.id, now))

    def _audit(self, db: Any, now: float, actor: str, action: str, job: Optional[int],
               why: str, detail: dict[str, Any]) -> None:
        self._run(db, "INSERT INTO audit (time, actor, action, job, why, detail) "
                      "VALUES (?, ?, ?, ?, ?, ?)",
                  (now, actor, action, job, why, json.dumps(detail, sort_keys=True)))


def _detail(fields: dict[str, Any]) -> dict[str, Any]:
    """Changed fields as JSON-able values, for the audit trail."""
    out = {}
    for name, value in fields.items():
        if name == "refusals":
            value = [r.record() for r in value]
        if name == "move_to" and value is not None:
            value = dict(value[0].record(), borrowed=value[1])
        out[name] = value.__dict__ if isinstance(value, Slot) else value
    if isinstance(out.get("slot"), dict):
        out["slot"] = dict(out["slot"], gpus=list(out["slot"]["gpus"]))
    return out


LEASE_COLUMNS = {"holder": TEXT, "expires_at": NUM, "epoch": INT}
AUDIT_COLUMNS = {"id": INT, "time": NUM, "actor": TEXT, "action": TEXT, "job": maybe(INT),
                 "why": TEXT, "detail": maybe(TEXT)}
CORDON_COLUMNS = {"host": TEXT, "gpu": INT, "mode": TEXT, "actor": TEXT, "why": TEXT,
                  "since": NUM}


# JSON nested deeper than Python's reader recurses (a thousand levels): fractui writes two,
# and before migration 0030 a team member's psql could keep more, which every read then met.
NESTED = " is JSON nested deeper than fractui reads"


def _request(what: str, text: str) -> dict[str, Any]:
    """A job's request as kept: a JSON object of what a queue's portion holds, or Unreadable.
    Most of a queue's jobs keep the same text, which is read and checked once (``text`` is
    checked to be text with the row's other columns)."""
    request, problem = _request_text(text)
    if problem is not None:
        raise Unreadable("%s's request%s" % (what, problem))
    return request


class Beyond(float):
    """A number of a request no float holds (1e400, 10**400), as its text: no key a request
    holds takes it (``REQUEST_KEYS``), so a request that gives one to such a key is said with
    the number as written ("cpus is 1e400"), not read as infinity, which the pass cannot use;
    under a key fractui does not read it is passed over, as before."""

    text: str

    def __new__(cls, text: str) -> "Beyond":
        made = super().__new__(cls, text)  # (inf: a float of any digits is one)
        made.text = text
        return made

    def __repr__(self) -> str:
        return self.text


def _float(text: str) -> float:
    value = float(text)
    return value if math.isfinite(value) else Beyond(text)


def _int(text: str) -> Union[int, Beyond]:
    try:
        value = int(text)
        float(value)
    except (ValueError, OverflowError):  # (over Python's digits for a text, a float's range)
        return Beyond(text)
    return value


@lru_cache(maxsize=1024)
def _request_text(text: str) -> tuple[dict[str, Any], Optional[str]]:
    """What ``_request`` reads of ``text``: the request, and what is wrong with it (or None)."""
    try:
        request = json.loads(text, parse_float=_float, parse_int=_int)
    except ValueError:
        return {}, " holds %r, not JSON" % text
    except RecursionError:
        return {}, NESTED
    if not isinstance(request, dict):
        return {}, " is %r, not an object" % text
    problem = value_problem(request, REQUEST_KEYS)
    if problem is not None:
        return {}, "'s " + problem
    if not all(isinstance(v, str) for key in ("hosts", "gpu_models")
               for v in request.get(key) or ()):
        return {}, " names hosts or GPU models by other than text"
    return request, None


def _stale(row: Any) -> StaleCopy:
    check("the stale copy %s on %s" % (named(row["key"]), named(row["host"])), row,
          {"host": TEXT, "key": TEXT, "job": INT, "since": NUM})
    return StaleCopy(row["host"], row["key"], row["job"], row["since"])


def _audit_entry(row: Any) -> AuditEntry:
    what = "audit entry %s" % named(row["id"])
    check(what, row, AUDIT_COLUMNS)
    return AuditEntry(row["id"], row["time"], row["actor"], row["action"], row["job"],
                      row["why"], _decoded(what, row["detail"] or "{}"))


def _cordon(row: Any) -> Cordon:
    """The row's cordon. A damaged row whose host can be read is that whole host cordoned,
    saying so: read as no cordon, work would go where an admin took it away, and read as the
    store damaged, no pass, screen or verb (uncordon included) could go on. Uncordoning the
    host deletes the row."""
    try:
        check("the cordon of %s gpu %s" % (named(row["host"]), named(row["gpu"])), row,
              CORDON_COLUMNS)
        if row["mode"] not in CORDON_MODES or row["gpu"] < WHOLE_HOST:
            raise Unreadable("the cordon of %s gpu %s is %r, not one of %s" % (
                named(row["host"]), named(row["gpu"]), row["mode"], ", ".join(CORDON_MODES)))
    except Unreadable as err:
        if type(row["host"]) not in TEXT:
            raise
        since = row["since"] if type(row["since"]) in NUM else 0.0
        return Cordon(row["host"], None, CORDON, "?", "its row in the store is damaged (%s): "
                      "the host is out of service until it is uncordoned" % err, float(since))
    return Cordon(row["host"], None if row["gpu"] == WHOLE_HOST else int(row["gpu"]),
                  row["mode"], row["actor"], row["why"], float(row["since"]))


def _where(c: Cordon) -> tuple[str, int]:
    return c.host, WHOLE_HOST if c.gpu is None else c.gpu


def _facts(row: Any) -> dict[str, Any]:
    """A host's kept facts: a JSON object, or Unreadable."""
    what = "the inventory of %s" % named(row["host"])
    check(what, row, {"host": TEXT, "facts": TEXT})
    facts = _decoded(what, row["facts"])
    if not isinstance(facts, dict):
        raise Unreadable("%s is %r, not an object" % (what, row["facts"]))
    return facts


def _teams_listed(text: Any, epoch: Any) -> Optional[frozenset[str]]:
    """The teams a mark of kept terms names (TERMS_WRITTEN) where it was written under the
    lease's ``epoch`` now, with the rows there; None where it names none: a mark of before
    it named them ('1', or a list alone), a hand's that is no such object, or one another
    take of the lease wrote the rows since (an older fractui's, which leaves it as it is)."""
    try:
        mark = _decoded("", text)
    except Unreadable:
        return None
    names = mark.get("teams") if isinstance(mark, dict) else None
    written = mark.get("epoch") if isinstance(mark, dict) else None
    same = written == epoch and type(written) is type(epoch)  # (a JSON true is no epoch 1)
    return frozenset(names) if same and isinstance(names, list) and all(
        isinstance(n, str) for n in names) else None


def _decoded(what: str, text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError) as err:
        raise Unreadable("%s holds %r, not JSON" % (what, text)) from err
    except RecursionError as err:
        raise Unreadable(what + NESTED) from err


def _env(what: str, text: Any) -> dict[str, str]:
    """A job's variables as kept: a JSON object of strings, or Unreadable. Most jobs have
    none: their '{}' is not parsed (a scheduler reads thousands of jobs a pass)."""
    if text == "{}":
        return {}
    env = _decoded(what, text)
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise Unreadable("%s's env is %r, not an object of strings" % (what, text))
    return env


JOB_COLUMNS = {
    "id": INT, "queue": TEXT, "team": maybe(TEXT), "name": TEXT, "argv": TEXT, "request": TEXT,
    "state": TEXT, "submitted_at": NUM, "updated_at": NUM, "cwd": maybe(TEXT),
    "reason": maybe(TEXT), "attempt": INT, "started_at": maybe(NUM), "ended_at": maybe(NUM),
    "host": maybe(TEXT), "gpus": maybe(TEXT), "profile": maybe(TEXT), "start": maybe(INT),
    "memory_mib": maybe(INT), "charge": maybe(NUM), "layout_version": maybe(TEXT),
    "preemptible": FLAG, "manual": FLAG, "agent_job": maybe(TEXT), "exit_code": maybe(INT),
    "stop_intent": maybe(TEXT), "refusals": TEXT, "env": maybe(TEXT), "image": maybe(TEXT),
    "submitted_by": maybe(TEXT), "queued_at": maybe(NUM), "run_as": maybe(TEXT),
    "move_to": maybe(TEXT)}
# a queue's portion as a job keeps it (QueueConfig.request)
REQUEST_KEYS = {"gpu": NUM, "mig": maybe(TEXT), "memory_gib": NUM, "gpus": INT, "cpus": NUM,
                "memory": NUM, "hosts": (list,), "gpu_models": (list,), "isolation": TEXT,
                "priority": INT, "team": maybe(TEXT), "image": maybe(TEXT)}


def _move(row: Any) -> Optional[dict[str, Any]]:
    """A job row's ``move_to`` as kept (its slot's record, and whether it is borrowed there),
    or None; Unreadable where it is not JSON."""
    text = row["move_to"]
    return None if text is None else _decoded("job %s's move_to" % named(row["id"]), text)


def _move_held(row: Any) -> tuple[Optional[float], bool]:
    """What the slot a job moves to charges (None: it does not move), and whether it is
    borrowed there; Unreadable where the row holds what fractui never wrote there."""
    move = _move(row)
    try:
        return (None, False) if move is None else (float(move["slot"]["charge"]),
                                                   bool(move.get("borrowed")))
    except (TypeError, KeyError, ValueError, AttributeError) as err:
        raise Unreadable("job %s's move_to is not as fractui wrote it (%r)" % (
            named(row["id"]), err)) from err


def _job(row: Any) -> Job:
    what = "job %s" % named(row["id"])
    check(what, row, JOB_COLUMNS)
    if row["state"] not in STATES:
        raise Unreadable("%s's state is %r, not one of fractui's" % (what, row["state"]))
    request = dict(_request(what, row["request"]))  # its own: a job's request may be changed
    try:
        slot = None
        if row["host"] is not None:
            slot = Slot(row["host"], tuple(_decoded(what, row["gpus"] or "[]")), row["profile"],
                        row["start"], row["memory_mib"], row["charge"], row["layout_version"])
        move = _move(row)
        move_to = None if move is None else Slot(**dict(move["slot"],
                                                        gpus=tuple(move["slot"]["gpus"])))
        return Job(id=row["id"], queue=row["queue"], team=row["team"], name=row["name"],
                   argv=tuple(_decoded(what, row["argv"])),
                   request=request, state=row["state"],
                   submitted_at=row["submitted_at"], updated_at=row["updated_at"],
                   cwd=row["cwd"], reason=row["reason"], attempt=row["attempt"],
                   started_at=row["started_at"], ended_at=row["ended_at"], slot=slot,
                   preemptible=bool(row["preemptible"]), manual=bool(row["manual"]),
                   agent_job=row["agent_job"], exit_code=row["exit_code"],
                   stop_intent=row["stop_intent"],
                   refusals=tuple(Refusal(**r) for r in _decoded(what, row["refusals"])),
                   env=_env(what, row["env"]), image=row["image"],
                   submitted_by=row["submitted_by"], queued_at=row["queued_at"],
                   run_as=row["run_as"], move_to=move_to,
                   move_borrowed=bool(move and move.get("borrowed")))
    except (TypeError, KeyError) as err:  # JSON of another shape than fractui writes
        raise Unreadable("%s is not as fractui wrote it (%s)" % (what, err)) from err
