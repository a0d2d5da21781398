"""The store's guard on PostgreSQL (migration 0004): a team member who connects with psycopg
as their own role, not through fractui, can do no more than fractui's rule lets them; fractui's
own submit, cancel, requeue and logs still work as that role; admins and superusers are not
held. On the test server's loopback, where the URL names the role (tests/test_teams_postgres.py
runs the same roles under peer authentication, where it cannot be forged)."""

from __future__ import annotations

import pathlib
import re
import threading
import unicodedata
import uuid
from dataclasses import dataclass, replace
from typing import Callable

import psycopg
import pytest

from fractui.store import RowsLocked, StoreDamaged, StoreDenied, open_store, postgres
from fractui.store.access import CANCEL, REQUEUE
from fractui.store.base import Store
from fractui.store.intents import Asker, ask_stop, last_lines as intents_last_lines, submit
from fractui.store.model import CANCELLED, PENDING, STOPPING, GpuTime, Job, Slot
from remote_agent.jobs.runtime.image import image_problem
from fractui.config import QueueConfig
from fractui.sched.fleetview import request_of
from tests.conftest import REPO

# The grants docs/decisions.md tells an admin to run, with its team's role names (UPDATE on
# the columns a member's cancel and stop set, which keeps LOCK TABLE from her); the earlier
# advice, UPDATE on the whole of jobs and log_requests; and every privilege to everyone but
# TRIGGER, which fractui refuses. A store set up by either of the last two is guarded all the
# same: the guard's own refusals are reached only where a grant lets the statement through.
LEAST = ("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {admin}",
         "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {teams}",
         "GRANT INSERT, UPDATE (state, reason, exit_code, ended_at, updated_at, stop_intent, "
         "move_to) ON jobs TO {teams}",
         "GRANT INSERT, UPDATE (actor, asked_at) ON log_requests TO {teams}",
         "GRANT INSERT ON audit TO {teams}")
EARLIER = LEAST[:2] + ("GRANT INSERT, UPDATE ON jobs, log_requests TO {teams}",) + LEAST[-1:]
BROAD = ("GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES ON ALL TABLES IN SCHEMA "
         "public TO {admin}, {teams}",)
SLOT = Slot("gpu-a", (0,), None, None, 1000, 0.25)
# How far ahead a job is dated (by an admin on psql) that a statement begun after a server's
# restart (tests/pg.py's wrap_around_to, a second or two) must still be before: waited out.
AHEAD_S = 10


@dataclass
class Guarded:
    """One store and its roles: ann in team vision<tag>, ops an admin by fractui_admin."""

    server: object
    db: str
    tag: str
    ann: str
    ops: str
    vision: str
    nlp: str

    def url(self, role: str) -> str:
        return self.server.url(self.db, user=role)  # type: ignore[attr-defined]

    def store(self, role: str = "postgres") -> Store:
        return open_store(self.url(role))

    def sql(self, role: str, statement: str) -> None:
        """One statement as ``role``, straight to the server (autocommit), as psql would."""
        with psycopg.connect(self.url(role), autocommit=True) as conn:
            conn.execute(statement)


def _guarded(pg_server, grants: tuple[str, ...]) -> Guarded:
    """A store of the superuser's with ann, ops and the teams' roles, given ``grants``."""
    tag = uuid.uuid4().hex[:6]
    db = pg_server.new_database()
    made = Guarded(pg_server, db, tag, "ann_" + tag, "ops_" + tag, "vision" + tag, "nlp" + tag)
    made.store().close()  # the schema, made by the superuser who owns the database
    pg_server.admin_role()
    for team in (made.vision, made.nlp):
        pg_server.sql("CREATE ROLE fractui_team_%s" % team)
    pg_server.sql("CREATE ROLE %s LOGIN IN ROLE fractui_team_%s" % (made.ann, made.vision))
    pg_server.sql("CREATE ROLE %s LOGIN IN ROLE fractui_admin" % made.ops)
    teams = "fractui_team_%s, fractui_team_%s" % (made.vision, made.nlp)
    for grant in grants:
        pg_server.sql(grant.format(admin="fractui_admin", teams=teams), db=db)
    return made


@pytest.fixture(params=[EARLIER, BROAD], ids=["earlier-grants", "broad-grants"])
def guarded(request, pg_server) -> Guarded:
    """A member given UPDATE on every column of jobs: what the guard itself refuses."""
    return _guarded(pg_server, request.param)


@pytest.fixture(params=[LEAST, EARLIER, BROAD],
                ids=["least-grants", "earlier-grants", "broad-grants"])
def any_grants(request, pg_server) -> Guarded:
    """Each way a store's teams are granted: fractui's own verbs work as a member in all."""
    return _guarded(pg_server, request.param)


def audited(statement: str, actor: str, action: str, job: str = "(SELECT max(id) FROM jobs)"
            ) -> str:
    """``statement`` then the audit entry of it that a team member's change needs in the same
    transaction (migration 0016); ``job`` the SQL of its number, the newest job's unless said."""
    return ("%s; INSERT INTO audit (time, actor, action, job, why) VALUES (extract(epoch FROM "
            "clock_timestamp()), '%s', '%s', %s, 'by psql')" % (statement, actor, action, job))


def refused(guarded: Guarded, statement: str, *words: str) -> None:
    """Refused as ann, with SQLSTATE 42501 naming her role and saying ``words``."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
        guarded.sql(guarded.ann, statement)
    said = str(err.value)
    assert all(w in said for w in words), said


def test_a_team_member_on_psql_is_held_to_fractuis_rule(guarded):
    admin = guarded.store()
    try:
        mine = admin.submit("v", guarded.vision, "mine", ["sleep", "9"], {}, "x")
        theirs = admin.submit("n", guarded.nlp, "theirs", ["sleep", "9"], {}, "x")
        running = admin.submit("v", guarded.vision, "running", ["sleep", "9"], {}, "x")
        admin.place(running.id, SLOT, "sched", "decided")
        admin.started(running.id, "a1", None, "sched", "launched")
        admin.acquire_lease("sched", 600)
        before = ({j.id: j for j in admin.jobs()}, admin.audit_log(limit=1000),
                  admin.lease_holder())
        guard = "refused by the store's guard: role %s" % guarded.ann
        refused(guarded, "UPDATE jobs SET state = 'cancelled' WHERE id = %d" % theirs.id,
                guard, "change job %d of team %s" % (theirs.id, guarded.nlp),
                "not a member of fractui_team_%s" % guarded.nlp)
        refused(guarded, "UPDATE jobs SET state = 'placed', host = 'gpu-a', gpus = '[0]' "
                "WHERE id = %d" % mine.id, guard, "from pending to placed")
        refused(guarded, "UPDATE jobs SET state = 'stopping', stop_intent = 'preempt' "
                "WHERE id = %d" % running.id, guard, "from running to stopping (preempt)")
        refused(guarded, "UPDATE jobs SET state = 'stopping', stop_intent = 'requeue', "
                "host = 'gpu-b', preemptible = 1 WHERE id = %d" % running.id,
                guard, "change host, preemptible of job %d" % running.id)
        # a move is an admin's: neither its intent nor the room it holds is a member's to set
        refused(guarded, "UPDATE jobs SET state = 'stopping', stop_intent = 'move', move_to = "
                "'{}' WHERE id = %d" % running.id, guard, "from running to stopping (move)")
        refused(guarded, "UPDATE jobs SET state = 'stopping', stop_intent = 'requeue', "
                "move_to = '{}' WHERE id = %d" % running.id,
                guard, "change move_to of job %d" % running.id)
        refused(guarded, "INSERT INTO jobs (queue, team, name, argv, request, state, "
                "submitted_at, updated_at, move_to) VALUES ('v', '%s', 'x', '[\"x\"]', '{}', "
                "'pending', 0, 0, '{}')" % guarded.vision, guard, "submit a job with move_to")
        refused(guarded, "UPDATE jobs SET state = 'cancelled', updated_at = 0, ended_at = 0 "
                "WHERE id = %d" % mine.id, guard, "a time other than the server's now")
        refused(guarded, "INSERT INTO jobs (queue, team, name, argv, request, state, host, "
                "submitted_at, updated_at) VALUES ('v', '%s', 'x', '[\"x\"]', '{}', 'placed', "
                "'gpu-a', 0, 0)" % guarded.vision, guard, "submit a job with host, state set")
        refused(guarded, "INSERT INTO jobs (queue, team, name, argv, request, state, "
                "submitted_at, updated_at) VALUES ('n', '%s', 'x', '[\"x\"]', '{}', "
                "'pending', 0, 0)" % guarded.nlp, guard, "submit a job of team %s" % guarded.nlp)
        now = "extract(epoch FROM transaction_timestamp())"
        refused(guarded, "INSERT INTO jobs (id, queue, team, name, argv, request, state, "
                "submitted_at, updated_at, submitted_by, run_as) VALUES (%d, 'v', '%s', 'x', "
                "'[\"x\"]', '{}', 'pending', %s, %s, '%s', '%s')" % (
                    running.id + 1, guarded.vision, now, now, guarded.ann, guarded.ann), guard,
                "submit a job numbered %d: the store numbers jobs" % (running.id + 1))
        refused(guarded, "INSERT INTO jobs (queue, team, name, argv, request, state, "
                "submitted_at, updated_at) VALUES ('v', '%s', 'x', 'not json', '{}', "
                "'pending', extract(epoch FROM clock_timestamp()), "
                "extract(epoch FROM clock_timestamp()))" % guarded.vision, guard,
                "argv is not a JSON list of strings")
        refused(guarded, "INSERT INTO jobs (queue, team, name, argv, request, state, "
                "submitted_at, updated_at, submitted_by) VALUES ('v', '%s', 'x', '[\"x\"]', "
                "'{}', 'pending', %s, %s, '%s@head')" % (guarded.vision, now, now, guarded.ops),
                guard, "submit a job as '%s@head': the actor must be" % guarded.ops)
        for key in ("%d:%s:k" % (len(guarded.ops), guarded.ops), "k", "%d:%s" % (
                len(guarded.ann), guarded.ann)):  # another's key, or none of her own shape
            refused(guarded, "INSERT INTO jobs (queue, team, name, argv, request, state, "
                    "submitted_at, updated_at, submit_key) VALUES ('v', '%s', 'x', '[\"x\"]', "
                    "'{}', 'pending', %s, %s, '%s')" % (guarded.vision, now, now, key), guard,
                    "submit a job with the key '%s'" % key)
        refused(guarded, "INSERT INTO audit (time, actor, action, job, why) VALUES "
                "(extract(epoch FROM clock_timestamp()), '%s@host', 'cancel', %d, 'forged')"
                % (guarded.ops, mine.id), guard, "as '%s@host'" % guarded.ops)
        refused(guarded, "INSERT INTO audit (time, actor, action, job, why) VALUES "
                "(extract(epoch FROM clock_timestamp()), '%s@host', 'place', %d, 'x')"
                % (guarded.ann, mine.id), guard, "audit entry of 'place'")
        refused(guarded, "UPDATE audit SET actor = '%s'" % guarded.ann, "audit")
        refused(guarded, "DELETE FROM audit", "audit")
        refused(guarded, "DELETE FROM jobs WHERE id = %d" % mine.id, "jobs")
        refused(guarded, "UPDATE lease SET holder = '%s', epoch = epoch + 1" % guarded.ann,
                "table lease")
        refused(guarded, "INSERT INTO inventory (host, facts, seen_at) VALUES ('h', '{}', 0)",
                "table inventory")
        refused(guarded, "DELETE FROM stale", "table stale")
        refused(guarded, "INSERT INTO lost_clocks (kind, name, since) VALUES ('host', 'h', 0)",
                "table lost_clocks")
        refused(guarded, "DELETE FROM stops_sent", "table stops_sent")
        refused(guarded, "INSERT INTO mode_holds (uuid, failures, until) VALUES ('GPU-x', 1, "
                "9e12)", "table mode_holds")  # (a team member's TUI reads them, below)
        refused(guarded, "INSERT INTO team_holds (team, job, charge) VALUES ('vision', %d, "
                "1)" % mine.id, "table team_holds")  # (the lease holder's, read by teams)
        refused(guarded, "INSERT INTO team_terms (team, quota_gpus, over_quota, weight) "
                "VALUES ('vision', 9, true, 1)", "table team_terms")  # (likewise)
        refused(guarded, "UPDATE team_terms SET quota_gpus = 9", "team_terms")
        refused(guarded, "DELETE FROM team_terms", "team_terms")
        refused(guarded, "TRUNCATE team_terms", "team_terms")
        refused(guarded, "UPDATE fractui_schema SET version = 1", "table fractui_schema")
        refused(guarded, "TRUNCATE jobs", "table jobs")
        after = ({j.id: j for j in admin.jobs()}, admin.audit_log(limit=1000),
                 admin.lease_holder())
        assert after == before  # nothing of any of them landed
    finally:
        admin.close()


def test_a_team_member_cannot_pass_for_a_role_named_after_hers_with_an_at(guarded):
    """A user is the actor before its last ``@`` (model.submitter): ann's actor is ann alone or
    ann@<where>, where holding no ``@``, so she cannot write ``ann@corp@head``, which reads as
    the role ``ann@corp`` (a jobs --user, a usage record, the audit of another person)."""
    admin = guarded.store()
    try:
        mine = admin.submit("v", guarded.vision, "mine", ["sleep", "9"], {}, "x")
        before = ({j.id: j for j in admin.jobs()}, admin.audit_log(limit=1000))
        now = "extract(epoch FROM transaction_timestamp())"
        other = "%s@corp@head" % guarded.ann
        guard = "refused by the store's guard: role %s" % guarded.ann
        refused(guarded, audited(
            "INSERT INTO jobs (queue, team, name, argv, request, state, submitted_at, "
            "updated_at, submitted_by) VALUES ('v', '%s', 'x', '[\"x\"]', '{}', 'pending', "
            "%s, %s, '%s')" % (guarded.vision, now, now, other), other, "submit"),
            guard, "submit a job as '%s'" % other)
        refused(guarded, "INSERT INTO audit (time, actor, action, job, why) VALUES "
                "(extract(epoch FROM clock_timestamp()), '%s', 'cancel', %d, 'forged')"
                % (other, mine.id), guard, "as '%s'" % other)
        assert ({j.id: j for j in admin.jobs()}, admin.audit_log(limit=1000)) == before
        guarded.sql(guarded.ann, audited(  # her own, from anywhere without an @: as before
            "INSERT INTO jobs (queue, team, name, argv, request, state, submitted_at, "
            "updated_at, submitted_by, run_as) VALUES ('v', '%s', 'x', '[\"x\"]', '{}', "
            "'pending', %s, %s, '%s@head (tui)', '%s')" % (guarded.vision, now, now, guarded.ann,
                                                         guarded.ann),
            "%s@head (tui)" % guarded.ann, "submit"))
        assert admin.jobs()[-1].user == guarded.ann
    finally:
        admin.close()


def test_a_team_members_job_runs_as_her_on_the_hosts_whoever_writes_it(guarded):
    """Migration 0019: a team member's job runs on the hosts as her own name (``run_as``),
    never as the agent's user (root where the agent is): through fractui, and on psql, where
    she may neither leave it to the agent nor name another; an admin's runs as the agent's
    user, as an admin's launch does."""
    ann, ops = guarded.store(guarded.ann), guarded.store(guarded.ops)
    try:
        mine = submit(ann, "v", guarded.vision, "mine", ["true"], {}, Asker("here"))
        assert mine.run_as == guarded.ann
        assert submit(ops, "v", guarded.vision, "ops", ["true"], {}, Asker("here")).run_as \
            is None
        before = ({j.id: j for j in ops.jobs()}, ops.audit_log(limit=1000))
        guard = "refused by the store's guard: role %s" % guarded.ann
        now = "extract(epoch FROM transaction_timestamp())"
        for run_as, said in (("NULL", "the agent's user"), ("'root'", "root"),
                             ("'%s'" % guarded.ops, guarded.ops)):
            refused(guarded, audited(
                "INSERT INTO jobs (queue, team, name, argv, request, state, submitted_at, "
                "updated_at, submitted_by, run_as) VALUES ('v', '%s', 'x', '[\"x\"]', '{}', "
                "'pending', %s, %s, '%s', %s)" % (guarded.vision, now, now, guarded.ann,
                                                  run_as), guarded.ann, "submit"),
                guard, "submit a job run on the hosts as %s: a team member's job runs as %s"
                % (said, guarded.ann))
        refused(guarded, audited("UPDATE jobs SET state = 'cancelled', run_as = NULL, "
                                 "updated_at = %s, ended_at = %s WHERE id = %d"
                                 % (now, now, mine.id), guarded.ann, "cancel", str(mine.id)),
                guard, "change run_as of job %d" % mine.id)
        assert ({j.id: j for j in ops.jobs()}, ops.audit_log(limit=1000)) == before
    finally:
        ann.close()
        ops.close()


def test_a_members_job_not_ended_from_before_runs_as_the_member_once_upgraded(pg_server):
    """Migration 0019 on a store of schema 18: a job a team member submitted runs as her from
    then on, whether it waits or is placed, running or stopping (each comes back to its queue
    as it is, by her own requeue too, and would run as the agent at every later attempt); one
    whose submitter's role was dropped is no admin's. An admin's job, one ended, and one of
    no known submitter keep the agent's user."""
    db, tag = _store_of_schema(pg_server, 18)
    pg_server.admin_role()
    ann, ops, gone = "ann_" + tag, "ops_" + tag, "gone_" + tag
    pg_server.sql("CREATE ROLE %s LOGIN" % ann)
    pg_server.sql("CREATE ROLE %s LOGIN IN ROLE fractui_admin" % ops)
    for name, state, by in (("ann", "pending", ann + "@head"), ("ops", "pending", ops + "@h"),
                            ("placed", "placed", ann + "@head"),
                            ("running", "running", ann + "@head"),
                            ("stopping", "stopping", ann + "@head"),
                            ("done", "done", ann + "@head"),
                            ("gone", "pending", gone + "@head"),
                            ("unknown", "pending", None)):
        pg_server.sql("INSERT INTO jobs (queue, team, name, argv, request, state, "
                      "submitted_at, updated_at, submitted_by) VALUES ('v', NULL, '%s', "
                      "'[\"x\"]', '{}', '%s', 0, 0, %s)" % (
                          name, state, "NULL" if by is None else "'%s'" % by), db=db)
    store = open_store(pg_server.url(db))  # the superuser's open applies migration 19
    try:
        assert {j.name: j.run_as for j in store.jobs()} == {
            "ann": ann, "ops": None, "placed": ann, "running": ann, "stopping": ann,
            "done": None, "gone": gone, "unknown": None}
    finally:
        store.close()


def test_a_member_of_a_store_granted_before_the_turns_submits_once_upgraded(pg_server):
    """A store whose teams were granted SELECT on every table before migration 0032 made
    team_turns: the teams may not read it (0032 granted it no one), and 0039's guard of a
    submit's time read it as the member, so after the upgrade each of ann's submits was
    refused ("role ann may not do this: permission denied for table team_turns"). The guard
    reads her turn as the store's owner (0041): her submit, on fractui and psql, and her
    requeue pass."""
    db, tag = _store_of_schema(pg_server, 31)
    pg_server.admin_role()
    vision, ann = "vision" + tag, "ann_" + tag
    pg_server.sql("CREATE ROLE fractui_team_%s" % vision)
    pg_server.sql("CREATE ROLE %s LOGIN IN ROLE fractui_team_%s" % (ann, vision))
    for grant in LEAST:
        pg_server.sql(grant.format(admin="fractui_admin", teams="fractui_team_" + vision),
                      db=db)
    admin = open_store(pg_server.url(db))  # the superuser's open upgrades it
    ann_store = open_store(pg_server.url(db, user=ann))
    try:
        running = admin.submit("v", vision, "running", ["true"], {}, "bob")
        admin.place(running.id, SLOT, "sched", "decided")
        admin.started(running.id, "a1", None, "sched", "launched")
        mine = submit(ann_store, "v", vision, "mine", ["true"], {}, Asker("here"))
        now = "extract(epoch FROM statement_timestamp())"
        with psycopg.connect(pg_server.url(db, user=ann), autocommit=True) as conn:
            conn.execute(audited("INSERT INTO jobs (queue, team, name, argv, request, state, "
                                 "submitted_at, updated_at, submitted_by, run_as) VALUES ('v', "
                                 "'%s', 'x', '[\"x\"]', '{}', 'pending', %s, %s, '%s', '%s')" % (
                                     vision, now, now, ann, ann), ann, "submit"))
        ask_stop(ann_store, ann_store.get(running.id), REQUEUE, Asker("here"))
        assert [(j.name, j.state) for j in admin.jobs()] == [
            ("running", STOPPING), ("mine", PENDING), ("x", PENDING)]
        assert mine.submitted_by == ann + "@here"
    finally:
        ann_store.close()
        admin.close()


def test_a_team_members_cancel_on_psql_names_no_one_else(guarded):
    """The reason a cancel or a stop leaves is what ``jobs`` shows and what the lease holder's
    own audit entry repeats when it ends the job: ann cannot make it name ops (migration 0015),
    nor anything but who asked, nor leave no audit entry of it (0016)."""
    admin = guarded.store()
    try:
        pending = admin.submit("v", guarded.vision, "p", ["sleep", "9"], {}, "x")
        running = admin.submit("v", guarded.vision, "r", ["sleep", "9"], {}, "x")
        admin.place(running.id, SLOT, "sched", "decided")
        admin.started(running.id, "a1", None, "sched", "launched")
        before = {j.id: j for j in admin.jobs()}
        now = "extract(epoch FROM transaction_timestamp())"
        guard = "refused by the store's guard: role %s" % guarded.ann
        refused(guarded, "UPDATE jobs SET state = 'stopping', stop_intent = 'cancel', "
                "reason = 'cancelled by %s@head', updated_at = %s WHERE id = %d"
                % (guarded.ops, now, running.id), guard,
                "as '%s@head': the actor must be %s" % (guarded.ops, guarded.ann))
        refused(guarded, "UPDATE jobs SET state = 'stopping', stop_intent = 'requeue', "
                "reason = 'the admin asked', updated_at = %s WHERE id = %d" % (now, running.id),
                guard, "'requeued by ' followed by who asked")
        refused(guarded, "UPDATE jobs SET state = 'cancelled', reason = 'cancelled by %s', "
                "updated_at = %s, ended_at = %s WHERE id = %d"
                % (guarded.ops, now, now, pending.id), guard, "the actor must be")
        assert {j.id: j for j in admin.jobs()} == before
        requeue = ("UPDATE jobs SET state = 'stopping', stop_intent = 'requeue', "
                   "reason = 'requeued by %s@head', updated_at = %s WHERE id = %d"
                   % (guarded.ann, now, running.id))
        # her own name, but no audit entry of it in the same transaction (migration 0016)
        refused(guarded, requeue, guard, "change job %d without an audit entry of it "
                "('requeue', about job %d, as %s)" % (running.id, running.id, guarded.ann))
        me = "%s@head" % guarded.ann
        # an entry of another action does not do, nor one about another job: each is refused
        # itself, as of nothing this transaction did (0040)
        refused(guarded, audited(requeue, me, "cancel", str(running.id)), guard,
                "of 'cancel' about job %d, which this transaction has not done" % running.id)
        refused(guarded, audited(requeue, me, "requeue", str(pending.id)), guard,
                "of 'requeue' about job %d, which this transaction has not done" % pending.id)
        entries = admin.audit_log(limit=1000)
        assert {j.id: j for j in admin.jobs()} == before
        guarded.sql(guarded.ann, audited(requeue, me, "requeue", str(running.id)))
        assert admin.get(running.id).reason == "requeued by %s@head" % guarded.ann
        assert [(e.actor, e.action, e.job) for e in admin.audit_log(limit=1000)[len(entries):]
                ] == [(me, "requeue", running.id)]
    finally:
        admin.close()


def test_a_refusal_that_quotes_a_full_servers_words_is_the_refusal(pg_server):
    """The guard's refusal quotes a member's value: one holding the words of a server out of
    connection slots, or of a role at its limit, was said as such ("takes no more
    connections"), sending the member to wait for slots that were never short. Those words
    are the server's only at connect, where libpq gives no SQLSTATE."""
    guarded = _guarded(pg_server, LEAST)
    ann = guarded.store(guarded.ann)
    try:
        for words in ("sorry, too many clients already", "too many connections for role x",
                      "too many connections for database x"):
            with pytest.raises(StoreDenied, match="role %s may not do this: refused by the "
                               "store's guard: .* may not submit a job with the key '%s'"
                               % (guarded.ann, words)):
                ann.submit("v", guarded.vision, "x", ["true"], {}, guarded.ann, key=words)
        assert ann.jobs() == []
    finally:
        ann.close()


def test_a_team_members_cancel_takes_over_a_stop_that_would_bring_her_job_back(any_grants):
    """Migration 0023: ann's cancel, through fractui as her role, of her job stopping to be
    requeued, preempted or moved makes it stopping to cancel, a move's held slot let go (with
    the least grants too: move_to is among the columns she may update). On psql she can
    neither keep that slot while she cancels, nor turn a cancel back into a requeue."""
    guarded = any_grants
    admin = guarded.store()
    ann = guarded.store(guarded.ann)
    try:
        jobs = {}
        for intent in ("requeue", "preempt", "move", "move "):
            job = admin.submit("v", guarded.vision, intent, ["true"], {}, "x")
            admin.place(job.id, SLOT, "sched", "decided")
            admin.started(job.id, "a%d" % job.id, None, "sched", "launched")
            if intent.startswith("move"):
                admin.move(job.id, replace(SLOT, host="gpu-b"), "ops@head", "moved by ops")
            else:
                admin.stopping(job.id, ("running",), intent, "sched", "by the scheduler")
            jobs[intent] = job.id
        for intent in ("requeue", "preempt", "move"):
            done = ask_stop(ann, ann.get(jobs[intent]), CANCEL, Asker("here"))
            assert (done.state, done.stop_intent, done.move_to) == (STOPPING, CANCEL, None)
        guard = "refused by the store's guard: role %s" % guarded.ann
        said = "reason = 'cancelled by %s'" % guarded.ann
        refused(guarded, audited("UPDATE jobs SET stop_intent = 'cancel', %s WHERE id = %d" % (
            said, jobs["move "]), guarded.ann, CANCEL, str(jobs["move "])),
            guard, "cancel job %d keeping the slot its move held" % jobs["move "])
        refused(guarded, audited("UPDATE jobs SET stop_intent = 'requeue', reason = 'requeued "
                                 "by %s' WHERE id = %d" % (guarded.ann, jobs["requeue"]),
                                 guarded.ann, REQUEUE, str(jobs["requeue"])),
                guard, "from stopping (cancel) to stopping (requeue)")
    finally:
        ann.close()
        admin.close()


def test_fractuis_own_team_actions_work_as_a_team_member_and_the_rest_is_storedenied(
        any_grants):
    guarded = any_grants
    asker = Asker("here")
    ann = guarded.store(guarded.ann)
    admin = guarded.store()
    try:
        pending = submit(ann, "v", guarded.vision, "p", ["true"], {}, asker, key="k1")
        assert submit(ann, "v", guarded.vision, "p", ["true"], {}, asker, key="k1") == pending
        placed = submit(ann, "v", guarded.vision, "q", ["true"], {}, asker)
        running = submit(ann, "v", guarded.vision, "r", ["true"], {}, asker)
        assert pending.state == PENDING
        admin.place(placed.id, SLOT, "sched", "decided")
        admin.place(running.id, SLOT, "sched", "decided")
        admin.started(running.id, "a1", None, "sched", "launched")
        assert ask_stop(ann, ann.get(pending.id), CANCEL, asker).state == CANCELLED
        stopped = ask_stop(ann, ann.get(placed.id), CANCEL, asker)
        assert (stopped.state, stopped.stop_intent) == (STOPPING, CANCEL)
        stopped = ask_stop(ann, ann.get(running.id), REQUEUE, asker)
        assert (stopped.state, stopped.stop_intent) == (STOPPING, REQUEUE)
        ann.ask_log(running.id, guarded.ann)
        ann.ask_log(running.id, guarded.ann)  # asked again: the row's actor and time updated
        assert ann.log_requests() == [running.id]
        me = "%s@here" % guarded.ann
        assert [(e.actor, e.action, e.job) for e in admin.audit_log() if e.actor == me] == [
            (me, "submit", pending.id), (me, "submit", placed.id), (me, "submit", running.id),
            (me, CANCEL, pending.id), (me, CANCEL, placed.id), (me, REQUEUE, running.id)]
        # what only the scheduler or an admin does, asked through fractui's store as ann: the
        # store's StoreDenied, naming the role (the guard's words, or the grant's)
        for attempt in (lambda: ann.acquire_lease("ann-sched", 60),
                        lambda: ann.place(ann.submit("v", guarded.vision, "x", ["true"], {},
                                                     guarded.ann).id, SLOT, guarded.ann, "me"),
                        lambda: ann.requeue(running.id, (STOPPING,), guarded.ann, "again"),
                        lambda: ann.record_inventory("h", {})):
            with pytest.raises(StoreDenied, match="role %s may not do this: " % guarded.ann
                               ) as err:
                attempt()
            assert "CONTEXT" not in str(err.value) and "\n" not in str(err.value), err.value
        assert admin.lease_holder() is None and admin.inventory() == {}
    finally:
        ann.close()
        admin.close()


def test_a_team_member_moves_the_change_counters_only_as_a_change_does(guarded):
    """Migration 0024: the counters (0005) had no guard, so a member granted every privilege
    set one back (a reader holding it took a new job for no change) or deleted them, and every
    reader, a scheduler's pass first, failed on "no change counter" until an admin put them
    back. Now each is refused (by the grant, where the least grants were given), and a
    member's submit still moves the jobs counter."""
    admin = guarded.store()
    try:
        before = {t: admin.version(t) for t in ("jobs", "hosts", "lease", "logs")}
        for statement in ("UPDATE changes SET version = 0 WHERE topic = 'jobs'",
                          "UPDATE changes SET version = version + 2 WHERE topic = 'jobs'",
                          "UPDATE changes SET topic = 'gone' WHERE topic = 'hosts'",
                          "DELETE FROM changes", "TRUNCATE changes",
                          "INSERT INTO changes (topic, version) VALUES ('x', 1)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
                guarded.sql(guarded.ann, statement)
            assert "permission denied for table changes" in str(err.value) or (
                "refused by the store's guard: role %s" % guarded.ann) in str(err.value), err
        assert {t: admin.version(t) for t in before} == before
        # the counters' one SECURITY DEFINER function, called with what no change sends,
        # on a search path of ann's that names her own changes table first
        with psycopg.connect(guarded.url(guarded.ann), autocommit=True) as conn:
            conn.execute("CREATE TEMP TABLE changes (topic text, version bigint)")
            conn.execute("INSERT INTO changes VALUES ('jobs', 0)")
            conn.execute("SET search_path = pg_temp, public")
            for topic in (None, "jobs' OR true; DELETE FROM public.changes; --", "x" * 7000):
                conn.execute("SELECT fractui_announce(%s)", (topic,))
            with pytest.raises(psycopg.errors.InvalidParameterValue):  # NOTIFY's limit
                conn.execute("SELECT fractui_announce(%s)", ("jobs" * 3000,))
            conn.execute("SELECT fractui_announce('hosts')")
            assert conn.execute("SELECT * FROM changes").fetchall() == [("jobs", 0)]
        assert {t: admin.version(t) for t in before} == dict(before, hosts=before["hosts"] + 1)
        ann = guarded.store(guarded.ann)
        try:
            ann.submit("v", guarded.vision, "mine", ["true"], {}, guarded.ann,
                       run_as=guarded.ann)
        finally:
            ann.close()
        assert admin.version("jobs") == before["jobs"] + 1
    finally:
        admin.close()


def test_a_team_members_audit_entry_takes_the_number_the_store_gives_it(guarded):
    """Migration 0024, as 0006 for jobs: an audit entry ann numbered ahead of the sequence was
    the number a later write of the store drew, and that write failed (a duplicate key: here
    an admin's submit, in a scheduler's pass every decision), once per number she chose."""
    admin = guarded.store()
    try:
        mine = admin.submit("v", guarded.vision, "mine", ["true"], {}, "x")
        ahead = max(e.id for e in admin.audit_log(limit=1000)) + 1
        refused(guarded, audited("SELECT 1", guarded.ann, "cancel").replace(
            "INSERT INTO audit (time,", "INSERT INTO audit (id, time,").replace(
            "VALUES (extract", "VALUES (%d, extract" % ahead), "role %s" % guarded.ann,
            "add an audit entry numbered %d: the store numbers audit entries" % ahead)
        ann = guarded.store(guarded.ann)
        try:
            ask_stop(ann, ann.get(mine.id), CANCEL, Asker("here"))  # numbered by the store
        finally:
            ann.close()
        assert admin.submit("v", guarded.vision, "after", ["true"], {}, "x").state == PENDING
        assert [e.action for e in admin.audit_log(limit=1000)][-2:] == [CANCEL, "submit"]
    finally:
        admin.close()


def test_a_team_members_audit_entry_is_of_a_change_she_made(guarded):
    """Migration 0040: ann's entry is of a change to its job in the same transaction, as
    fractui writes one. On psql she wrote "ann cancel" of a teammate's job never touched, and
    "ann submit" of one another had submitted, and the audit said both; an entry before its
    change, or of another action than the change, is refused too. fractui's own pass."""
    admin = guarded.store()
    ann = guarded.store(guarded.ann)
    try:
        theirs = admin.submit("v", guarded.vision, "bobs", ["true"], {}, "bob")
        running = admin.submit("v", guarded.vision, "running", ["true"], {}, "bob")
        admin.place(running.id, SLOT, "sched", "decided")
        admin.started(running.id, "a1", None, "sched", "launched")
        before = admin.audit_log(limit=1000)
        now = "extract(epoch FROM statement_timestamp())"
        cancel = ("UPDATE jobs SET state = 'cancelled', reason = 'cancelled by %s', ended_at = "
                  "%s, updated_at = %s WHERE id = %d" % (guarded.ann, now, now, theirs.id))
        for statement in (audited("SELECT 1", guarded.ann, "cancel", str(theirs.id)),
                          audited("SELECT 1", guarded.ann, "submit", str(theirs.id)),
                          audited("SELECT 1", guarded.ann, "requeue", str(running.id)),
                          audited(cancel, guarded.ann, "requeue", str(theirs.id)),
                          audited("SELECT 1", guarded.ann, "cancel", str(theirs.id)) + "; " +
                          cancel):
            refused(guarded, statement, "role %s" % guarded.ann, "which this transaction has "
                    "not done: an entry is of a change written before it")
        assert admin.audit_log(limit=1000) == before
        guarded.sql(guarded.ann, audited(cancel, guarded.ann, "cancel", str(theirs.id)))
        ask_stop(ann, ann.get(running.id), REQUEUE, Asker("here"))
        submit(ann, "v", guarded.vision, "mine", ["true"], {}, Asker("here"))
        assert [(e.actor.split("@")[0], e.action) for e in admin.audit_log(limit=1000)][-3:] == [
            (guarded.ann, CANCEL), (guarded.ann, REQUEUE), (guarded.ann, "submit")]
    finally:
        ann.close()
        admin.close()


def _wrap_around_to_job(server, guarded: Guarded, job: int) -> int:
    """The server restarted 2^32 transactions on, its next transaction numbered as ``job``'s
    row's xmin in its low 32 bits (tests/pg.py): that xmin."""
    xmin = int(server.sql("SELECT xmin::text FROM jobs WHERE id = %d" % job, db=guarded.db)[0][0])
    server.wrap_around_to(xmin, [guarded.db])
    return xmin


LOW_32_BITS = "SELECT txid_current() % 4294967296"  # (this transaction's xmin, of a row it wrote)


def _anns_job(guarded: Guarded) -> Job:
    """A job of team vision an admin submitted as ann's."""
    admin = guarded.store()
    try:
        return admin.submit("v", guarded.vision, "old", ["true"], {}, guarded.ann)
    finally:
        admin.close()


def _submit_audit_refused(url: Callable[[str], str], guarded: Guarded, job_id: int,
                          number_sql: str, number: int) -> None:
    """Ann, at ``url``, in the transaction ``number_sql`` reads as ``number``, is refused an
    audit entry "ann submit" of job ``job_id``, which that transaction has not done."""
    with psycopg.connect(url(guarded.ann)) as conn:
        assert conn.execute(number_sql).fetchone()[0] == number
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
            conn.execute(audited("SELECT 1", guarded.ann, "submit", str(job_id)))
    assert ("add an audit entry of 'submit' about job %d, which this transaction has not "
            "done" % job_id) in str(err.value)


def test_a_team_members_audit_entry_is_not_of_a_job_written_2_to_the_32_transactions_ago():
    """Migration 0042: 0040 knew this transaction's change by the job's xmin, 32 bits of a
    transaction's number, and a job untouched since 2^32 transactions ago (frozen, its xmin
    kept) read as written by this one: ann audited "ann submit" of a job submitted as hers
    long before (seen, on a server restarted into the next epoch at that xmin). Refused now,
    the job dated before this transaction began; her own cancel of it there is audited."""
    from tests.pg import PgServer
    server = PgServer()
    try:
        guarded = _guarded(server, EARLIER)
        old = _anns_job(guarded)
        xmin = _wrap_around_to_job(server, guarded, old.id)
        _submit_audit_refused(guarded.url, guarded, old.id, LOW_32_BITS, xmin)
        ann = guarded.store(guarded.ann)
        try:
            ask_stop(ann, ann.get(old.id), CANCEL, Asker("here"))
        finally:
            ann.close()
        admin = guarded.store()
        try:
            assert admin.get(old.id).state == CANCELLED
            assert [(e.actor.split("@")[0], e.action) for e in admin.audit_log(limit=1000)] == [
                (guarded.ann, "submit"), (guarded.ann, CANCEL)]
        finally:
            admin.close()
    finally:
        server.close()


def test_a_team_members_audit_entry_is_not_of_a_job_dated_ahead_2_to_the_32_transactions_ago():
    """Migration 0043: 0042 held the job to its time too, but a time is its writer's: a job
    submitted as ann's that an admin on psql dated a day ahead, untouched 2^32 transactions
    since, read as written by ann's transaction, and she audited "ann submit" of it (seen).
    The job's written_in, the writing transaction's number in 64 bits, tells it apart."""
    from tests.pg import PgServer
    server = PgServer()
    try:
        guarded = _guarded(server, EARLIER)
        old = _anns_job(guarded)
        server.sql("UPDATE jobs SET submitted_at = submitted_at + 86400, updated_at = "
                   "updated_at + 86400 WHERE id = %d" % old.id, db=guarded.db)
        xmin = _wrap_around_to_job(server, guarded, old.id)
        _submit_audit_refused(guarded.url, guarded, old.id, LOW_32_BITS, xmin)
        assert server.sql("SELECT count(*) FROM audit", db=guarded.db) == [(1,)]  # (the submit)
    finally:
        server.close()


def _restored_at(server, guarded: Guarded, number: str) -> tuple[Guarded, int]:
    """``guarded``'s store restored on ``server`` as an admin moves a store (pg_dump), which
    then runs on to the old server's transaction that the SQL ``number`` reads there (a job's
    written_in, a turn's taken_in): its store, and that number."""
    xid = guarded.server.sql(number, db=guarded.db)[0][0]  # type: ignore[attr-defined]
    server.restore(guarded.server, guarded.db)
    server.run_to(xid)
    return replace(guarded, server=server), xid


def _restored_at_job(server, guarded: Guarded, job: int) -> tuple[Guarded, int]:
    """The same, run on to ``job``'s written_in."""
    return _restored_at(server, guarded, "SELECT written_in FROM jobs WHERE id = %d" % job)


def test_a_team_members_audit_entry_is_not_of_a_job_written_before_a_restore():
    """A store an admin dumped (pg_dump) and restored on another server keeps each job's
    written_in, the old server's transaction numbers, which the new server, numbering its own
    from its start, comes to: a job submitted as ann's in the old server's transaction N read as
    written by the new server's N, and she audited "ann submit" of it (seen)."""
    from tests.pg import PgServer
    old_server, new_server = PgServer(), PgServer()
    try:
        guarded = _guarded(old_server, EARLIER)
        old_server.run_to(2 ** 20)  # (a server that has run a while: past the new one's start)
        old = _anns_job(guarded)
        restored, written_in = _restored_at_job(new_server, guarded, old.id)
        _submit_audit_refused(restored.url, guarded, old.id, "SELECT txid_current()", written_in)
        assert new_server.sql("SELECT count(*) FROM audit", db=guarded.db) == [(1,)]
    finally:
        new_server.close()
        old_server.close()


def test_a_team_members_change_in_a_subtransaction_is_her_transactions(guarded):
    """Migration 0043: psql's ON_ERROR_ROLLBACK makes each statement a subtransaction, whose
    xmin is its own: ann's cancel in one, then its audit entry, was refused as a change this
    transaction had not done (0040's xmin, seen). Its written_in is the transaction's."""
    admin = guarded.store()
    try:
        mine = admin.submit("v", guarded.vision, "mine", ["true"], {}, guarded.ann)
        now = "extract(epoch FROM statement_timestamp())"
        with psycopg.connect(guarded.url(guarded.ann)) as conn:  # (one transaction, as psql's)
            for step, statement in enumerate(audited(
                    "UPDATE jobs SET state = 'cancelled', reason = 'cancelled by %s', ended_at = "
                    "%s, updated_at = %s WHERE id = %d" % (guarded.ann, now, now, mine.id),
                    guarded.ann, "cancel", str(mine.id)).split("; ")):
                conn.execute("SAVEPOINT psql_%d" % step)
                conn.execute(statement)
                conn.execute("RELEASE psql_%d" % step)
        assert admin.get(mine.id).state == CANCELLED
        assert [(e.actor, e.action) for e in admin.audit_log(limit=1000)][-1] == (
            guarded.ann, CANCEL)
    finally:
        admin.close()


def test_the_guard_refuses_nulls_odd_numbers_and_other_teams_names_of_a_team_member(guarded):
    """What a client that is not fractui may send: NULLs where fractui writes a value, times
    that are no time (NaN, infinity), the largest job number, a team named as another role
    would be. Each is the guard's refusal, naming ann; nothing changes."""
    admin = guarded.store()
    try:
        mine = admin.submit("v", guarded.vision, "mine", ["true"], {}, "x")
        before = (admin.jobs(), admin.audit_log(limit=1000), admin.log_requests())
        now = "extract(epoch FROM transaction_timestamp())"

        def new_job(team: str = "'%s'" % guarded.vision, at: str = now) -> str:
            return ("INSERT INTO jobs (queue, team, name, argv, request, state, submitted_at, "
                    "updated_at, submitted_by, run_as) VALUES ('v', %s, 'x', '[\"x\"]', '{}', "
                    "'pending', %s, %s, '%s', '%s')" % (team, at, at, guarded.ann, guarded.ann))
        guard = "refused by the store's guard: role %s" % guarded.ann
        for statement in (
                new_job(team="NULL"), new_job(team="'%s'" % guarded.vision.upper()),
                new_job(team="'%s '" % guarded.vision), new_job(at="'NaN'"),
                new_job(at="'Infinity'"),
                audited("UPDATE jobs SET state = NULL WHERE id = %d" % mine.id,
                        guarded.ann, "cancel"),
                audited("UPDATE jobs SET state = 'cancelled', updated_at = 'NaN', ended_at = "
                        "'NaN' WHERE id = %d" % mine.id, guarded.ann, "cancel"),
                "UPDATE jobs SET id = 9223372036854775807 WHERE id = %d" % mine.id,
                "INSERT INTO log_requests (job, actor, asked_at) VALUES (NULL, '%s', %s)" % (
                    guarded.ann, now),
                "INSERT INTO audit (time, actor, action, job, why) VALUES (%s, NULL, 'submit', "
                "%d, 'x')" % (now, mine.id)):
            refused(guarded, statement, guard)
        assert (admin.jobs(), admin.audit_log(limit=1000), admin.log_requests()) == before
    finally:
        admin.close()


def test_a_team_members_job_is_submitted_no_earlier_than_her_teams_turn(guarded):
    """Migration 0039: the scheduler places the oldest submitted first, and ann's time was
    held to her transaction's span only: she began one, left it open while team nlp
    submitted, then submitted with the time it began, and her job went ahead of theirs. Nor
    may she write her turn's time herself; fractui's submit, and psql's at its statement's
    time, pass."""
    admin = guarded.store()
    try:
        began = "extract(epoch FROM transaction_timestamp())"

        def submit(at: str) -> str:
            return audited("INSERT INTO jobs (queue, team, name, argv, request, state, "
                           "submitted_at, updated_at, submitted_by, run_as) VALUES ('v', '%s', "
                           "'x', '[\"x\"]', '{}', 'pending', %s, %s, '%s', '%s')" % (
                               guarded.vision, at, at, guarded.ann, guarded.ann),
                           guarded.ann, "submit")
        with psycopg.connect(guarded.url(guarded.ann)) as conn:  # (not autocommit: left open)
            for first in ("", "SELECT fractui_team_turn('%s'); " % guarded.vision):
                conn.execute("SELECT 1")
                theirs = admin.submit("n", guarded.nlp, "theirs", ["true"], {}, "x")
                with pytest.raises(psycopg.errors.InsufficientPrivilege,
                                   match="refused by the store's guard: role %s .*submit a job "
                                   "to team %s with a time before its turn" % (
                                       guarded.ann, guarded.vision)):
                    conn.execute(first + submit(began))
                conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege,  # (a grant's, or the guard's)
                           match="permission denied for table team_turns|take the turn to "
                           "submit of team %s at a time other than the server's now" %
                           guarded.vision):
            guarded.sql(guarded.ann, "INSERT INTO team_turns (team, taken_at, taken_in) VALUES "
                        "('%s', 0, txid_current())" % guarded.vision)
        assert {j.team for j in admin.jobs()} == {guarded.nlp}
        guarded.sql(guarded.ann, submit("extract(epoch FROM statement_timestamp())"))
        ann = guarded.store(guarded.ann)
        try:
            mine = ann.submit("v", guarded.vision, "mine", ["true"], {}, guarded.ann,
                              run_as=guarded.ann)
        finally:
            ann.close()
        assert min(admin.jobs(), key=lambda j: (j.submitted_at, j.id)).team == guarded.nlp
        assert mine.submitted_at > theirs.submitted_at
    finally:
        admin.close()


def _slow_insert(guarded: Guarded, meanwhile: Callable[[psycopg.Connection], None]
                 ) -> list[BaseException]:
    """Ann's INSERT of a job (and its audit entry) dated when its statement began, as psql's
    of statement_timestamp(), whose rows are written only once a lock of this test's is let
    go: ``meanwhile`` is given the holder's connection while it waits. What it was told."""
    key = int(guarded.tag, 16)  # (an advisory lock of this test's own)
    now = "extract(epoch FROM statement_timestamp())"
    slow = audited("INSERT INTO jobs (queue, team, name, argv, request, state, submitted_at, "
                   "updated_at, submitted_by, run_as) SELECT 'v', '%s', 'x', '[\"x\"]', '{}', "
                   "'pending', %s, %s, '%s', '%s' FROM (SELECT pg_advisory_xact_lock(%d)) "
                   "AS waited" % (guarded.vision, now, now, guarded.ann, guarded.ann, key),
                   guarded.ann, "submit")
    said: list[BaseException] = []

    def insert() -> None:
        try:
            guarded.sql(guarded.ann, slow)
        except psycopg.Error as err:
            said.append(err)
    with psycopg.connect(guarded.url("postgres"), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (key,))
        waiting = threading.Thread(target=insert)
        waiting.start()
        while not holder.execute("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                                 "AND objid::bigint = %s AND NOT granted", (key,)).fetchone():
            assert waiting.is_alive(), said
        meanwhile(holder)
        holder.execute("SELECT pg_advisory_unlock(%s)", (key,))
        waiting.join()
    return said


def test_a_team_members_slow_insert_is_not_dated_before_the_jobs_it_waited_behind(guarded):
    """Migration 0041: one statement that takes the turn may date its job when it began, which
    0039 allowed for psql's INSERT of statement_timestamp(); but a statement that waits before
    its rows are written (a slow subquery, a DO block) began long before. Ann's INSERT waited
    on a lock of her own while team nlp submitted to the same queue, then wrote her job with
    its statement's time, ahead of theirs. Refused, naming the job submitted meanwhile."""
    admin = guarded.store()
    try:
        theirs: list[Job] = []
        said = _slow_insert(guarded, lambda holder: theirs.append(
            admin.submit("v", guarded.nlp, "theirs", ["true"], {}, "x")))
        assert len(said) == 1 and isinstance(said[0], psycopg.errors.InsufficientPrivilege), said
        assert ("refused by the store's guard: role %s" % guarded.ann) in str(said[0])
        assert ("submit a job to team %s with a time before job %d's, submitted before this "
                "statement took the turn" % (guarded.vision, theirs[0].id)) in str(said[0])
        assert [j.id for j in admin.jobs()] == [theirs[0].id]
    finally:
        admin.close()


def _dated_ahead(server, guarded: Guarded, job_id: int) -> float:
    """Job ``job_id`` dated AHEAD_S ahead of the server's clock, as an admin on psql may date
    it: its submit time now."""
    return server.sql("UPDATE jobs SET submitted_at = extract(epoch FROM clock_timestamp()) + "
                      "%d, updated_at = extract(epoch FROM clock_timestamp()) + %d WHERE id = "
                      "%d RETURNING submitted_at" % (AHEAD_S, AHEAD_S, job_id),
                      db=guarded.db)[0][0]


def _waits_past(guarded: Guarded, ahead: float,
                what: str) -> Callable[[psycopg.Connection], None]:
    """What holds ann's slow INSERT (``_slow_insert``): her statement, begun before ``ahead``
    (else ``what`` took longer than AHEAD_S, said), waits until the server's clock is past it."""
    def past_its_time(holder: psycopg.Connection) -> None:
        began = holder.execute("SELECT extract(epoch FROM query_start) FROM pg_stat_activity "
                               "WHERE usename = %s", (guarded.ann,)).fetchone()[0]
        assert began < ahead, "%s took longer than AHEAD_S: ann's statement began after the " \
            "job's time" % what
        while not holder.execute("SELECT extract(epoch FROM clock_timestamp()) > %s",
                                 (ahead,)).fetchone()[0]:
            holder.execute("SELECT pg_sleep(0.1)")
    return past_its_time


def _refused_behind(server, guarded: Guarded, job_id: int, said: list) -> None:
    """Ann's slow INSERT was refused as dated before job ``job_id``'s, and nothing written."""
    assert len(said) == 1 and isinstance(said[0], psycopg.errors.InsufficientPrivilege), said
    assert ("submit a job to team %s with a time before job %d's, submitted before this "
            "statement took the turn" % (guarded.vision, job_id)) in str(said[0])
    assert server.sql("SELECT id FROM jobs", db=guarded.db) == [(job_id,)]


def test_a_team_members_slow_insert_is_not_dated_before_a_job_written_2_to_the_32_ago():
    """Migration 0043: 0041 passed over a pending job of this transaction's xmin, taking it
    for one of the statement's own: a job an admin on psql dated ahead (AHEAD_S), untouched
    2^32 transactions since, read as ann's, and her slow INSERT, begun before its time and
    ending after it, went ahead of it (seen). No time tells it apart (its time lies in her
    statement, as the check asks); its written_in, 64 bits of its transaction's number, does."""
    from tests.pg import PgServer
    server = PgServer()
    try:
        guarded = _guarded(server, EARLIER)
        admin = guarded.store()
        try:
            old = admin.submit("n", guarded.nlp, "old", ["true"], {}, "x")
        finally:
            admin.close()
        ahead = _dated_ahead(server, guarded, old.id)
        xmin = _wrap_around_to_job(server, guarded, old.id)
        said = _slow_insert(guarded, _waits_past(guarded, ahead, "the restart"))
        assert server.sql(LOW_32_BITS, db=guarded.db)[0][0] == xmin + 1
        _refused_behind(server, guarded, old.id, said)
    finally:
        server.close()


def test_a_team_members_slow_insert_is_not_dated_before_a_job_written_before_a_restore():
    """The same of a store restored on another server (pg_dump): a pending job dated ahead
    (AHEAD_S) before the restore kept the old server's written_in, and in the new server's
    transaction of that number ann's slow INSERT passed over it as her own (seen)."""
    from tests.pg import PgServer
    old_server, new_server = PgServer(), PgServer()
    try:
        guarded = _guarded(old_server, EARLIER)
        old_server.run_to(2 ** 20)  # (a server that has run a while: past the new one's start)
        admin = guarded.store()
        try:
            old = admin.submit("n", guarded.nlp, "old", ["true"], {}, "x")
        finally:
            admin.close()
        ahead = _dated_ahead(old_server, guarded, old.id)
        restored, written_in = _restored_at_job(new_server, guarded, old.id)
        said = _slow_insert(restored, _waits_past(guarded, ahead, "the restore"))
        assert new_server.sql("SELECT txid_current()")[0][0] == written_in + 1
        _refused_behind(new_server, guarded, old.id, said)
    finally:
        new_server.close()
        old_server.close()


def test_a_team_members_turn_taken_before_a_restore_is_not_hers():
    """Migration 0045: a store restored on another server (pg_dump) keeps its turns' taken_in,
    the old server's numbers, which the new server comes to in turn. In its transaction of a
    turn's number fractui_team_turn took the turn without its time, the turn read as taken
    then, before the restore: ann began that transaction, left it open while nlp submitted,
    then inserted her job with the time it began, and it went ahead of theirs (seen), as
    0039's open transaction had."""
    from tests.pg import PgServer
    old_server, new_server = PgServer(), PgServer()
    try:
        guarded = _guarded(old_server, EARLIER)
        old_server.run_to(2 ** 20)  # (a server that has run a while: past the new one's start)
        ann = guarded.store(guarded.ann)
        try:
            ann.submit("v", guarded.vision, "old", ["true"], {}, guarded.ann, run_as=guarded.ann)
        finally:
            ann.close()
        restored, taken_in = _restored_at(new_server, guarded, "SELECT taken_in FROM "
                                          "team_turns WHERE team = '%s'" % guarded.vision)
        began = "extract(epoch FROM transaction_timestamp())"
        admin = restored.store()
        try:
            with psycopg.connect(restored.url(guarded.ann)) as conn:  # (not autocommit)
                assert conn.execute("SELECT txid_current()").fetchone()[0] == taken_in
                admin.submit("n", guarded.nlp, "theirs", ["true"], {}, "x")
                with pytest.raises(psycopg.errors.InsufficientPrivilege,
                                   match="submit a job to team %s with a time before its turn"
                                   % guarded.vision):
                    conn.execute(audited(
                        "INSERT INTO jobs (queue, team, name, argv, request, state, "
                        "submitted_at, updated_at, submitted_by, run_as) VALUES ('v', '%s', "
                        "'x', '[\"x\"]', '{}', 'pending', %s, %s, '%s', '%s')" % (
                            guarded.vision, began, began, guarded.ann, guarded.ann),
                        guarded.ann, "submit"))
            assert [j.name for j in sorted(admin.jobs(), key=lambda j: (j.submitted_at, j.id))
                    ] == ["old", "theirs"]
        finally:
            admin.close()
    finally:
        new_server.close()
        old_server.close()


def test_every_table_of_the_store_is_guarded(pg_server):
    """So that no later migration adds a table a broad grant leaves open, as the counters
    were: each has triggers of the guard's for INSERT, UPDATE, DELETE and TRUNCATE (the
    bits 4, 16, 8 and 32 of pg_trigger.tgtype), not only some of them."""
    db = pg_server.new_database()
    open_store(pg_server.url(db)).close()
    rows = pg_server.sql(
        "SELECT c.relname, coalesce(bit_or(t.tgtype::int) & 60, 0) FROM pg_class c LEFT JOIN "
        "pg_trigger t ON t.tgrelid = c.oid AND t.tgname LIKE 'fractui\\_guard%' "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' GROUP BY c.relname",
        db=db)
    assert len(rows) >= 15
    assert [r for r in rows if r[1] != 60] == []


def test_a_jobs_kept_output_is_read_by_its_team_and_the_admins_alone(guarded):
    """Migration 0021: ann (team vision) reads the output kept of her team's job, not of team
    nlp's, by fractui's store or by psql, nor asks for it; an admin reads both."""
    admin = guarded.store()
    ann = guarded.store(guarded.ann)
    ops = guarded.store(guarded.ops)
    try:
        ours = admin.submit("v", guarded.vision, "ours", ["true"], {}, "x")
        theirs = admin.submit("n", guarded.nlp, "theirs", ["true"], {}, "x")
        for job in (ours, theirs):
            admin.keep_log(job.id, "output of %d\n" % job.id, True)
        assert ann.log_tail(ours.id).text == "output of %d\n" % ours.id
        assert ann.log_tail(theirs.id) is None
        assert ops.log_tail(theirs.id).text == "output of %d\n" % theirs.id
        with psycopg.connect(guarded.url(guarded.ann), autocommit=True) as conn:
            assert conn.execute("SELECT job FROM log_tails ORDER BY job").fetchall() == [
                (ours.id,)]
        ann.ask_log(ours.id, guarded.ann)
        with pytest.raises(StoreDenied, match="ask for the output of job %d of team %s: it is "
                           "not a member of fractui_team_%s" % (theirs.id, guarded.nlp,
                                                                guarded.nlp)):
            ann.ask_log(theirs.id, guarded.ann)
        assert admin.log_requests() == [ours.id]
    finally:
        ann.close()
        ops.close()
        admin.close()


def test_a_failed_jobs_last_line_is_read_by_its_team_and_the_admins_alone(any_grants):
    """Migration 0044: the last line the scheduler keeps of a failed job is in its output's
    row, so 0021's row security holds it: ann (team vision) reads her team's job's, not team
    nlp's, by fractui's store or by psql; she writes none, whatever she was granted; an admin
    reads both. Kept before the tail, it is no tail; the tail kept after keeps it."""
    guarded = any_grants
    admin = guarded.store()
    ann = guarded.store(guarded.ann)
    try:
        jobs = []
        for q, t in (("v", guarded.vision), ("n", guarded.nlp)):
            job = admin.submit(q, t, "failing", ["false"], {}, "x")
            admin.place(job.id, SLOT, "ops", "by hand", manual=True)
            jobs.append(admin.ended(job.id, ("placed",), "failed", "exited 1", "ops",
                                    "exited 1", "end", exit_code=1,
                                    last_line="ValueError: bad token of %d" % job.id))
        ours, theirs = (j.id for j in jobs)
        assert admin.last_lines([ours, theirs]) == {
            ours: "ValueError: bad token of %d" % ours,
            theirs: "ValueError: bad token of %d" % theirs}
        assert ann.last_lines([ours, theirs]) == {ours: "ValueError: bad token of %d" % ours}
        assert intents_last_lines(ann, Asker("here"), jobs) == {
            ours: "ValueError: bad token of %d" % ours}
        assert admin.log_tail(ours) is None  # (no tail kept yet)
        with psycopg.connect(guarded.url(guarded.ann), autocommit=True) as conn:
            assert conn.execute("SELECT job, last_line FROM log_tails ORDER BY job").fetchall(
                ) == [(ours, "ValueError: bad token of %d" % ours)]
        for statement in ("UPDATE log_tails SET last_line = 'forged' WHERE job = %d" % ours,
                          "INSERT INTO log_tails (job, complete, kept_at, last_line) VALUES "
                          "(%d, 0, 0, 'forged')" % theirs):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                guarded.sql(guarded.ann, statement)
        admin.keep_log(ours, "the tail\n", True)
        assert ann.log_tail(ours).text == "the tail\n"
        assert admin.last_lines([ours, theirs])[ours] == "ValueError: bad token of %d" % ours
    finally:
        ann.close()
        admin.close()


@pytest.mark.parametrize("who", ["ops", "postgres"])
def test_admins_and_superusers_are_not_held(guarded, who):
    role = guarded.ops if who == "ops" else "postgres"
    store = guarded.store(role)
    try:
        job = store.submit("n", None, "no team", ["true"], {}, role)
        store.place(job.id, SLOT, role, "by hand", manual=True)
        assert store.acquire_lease(role, 60) == 1
        store.record_inventory("h", {"gpus": 1})
        store.requeue(job.id, ("placed",), role, "again")
        store.audit("someone-else@x", "note", job.id, "an admin writes any entry")
    finally:
        store.close()
    guarded.sql(role, "UPDATE jobs SET state = 'done', host = 'gpu-z' WHERE id = %d" % job.id)
    guarded.sql(role, "DELETE FROM jobs WHERE id = %d" % job.id)
    guarded.sql(role, "DELETE FROM audit")
    left = guarded.server.sql(  # type: ignore[attr-defined]
        "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM audit)", db=guarded.db)
    assert left == [(0, 0)]  # deleted indeed: a guard that answered NULL would skip them


def test_a_cordon_is_an_admins_act_in_the_database_too(guarded):
    from fractui.store.access import Denied
    from fractui.store.intents import cordon, uncordon
    from fractui.store.model import CORDON, DRAIN

    ops, ann = guarded.store(guarded.ops), guarded.store(guarded.ann)
    try:
        made = cordon(ops, "gpu-a", 1, DRAIN, Asker("here"))
        assert made.actor == "%s@here" % guarded.ops
        guard = "refused by the store's guard: role %s" % guarded.ann
        refused(guarded, "INSERT INTO cordons (host, gpu, mode, actor, why, since) VALUES "
                "('gpu-b', -1, 'cordon', '%s', 'x', 0)" % guarded.ann, "table cordons")
        refused(guarded, "DELETE FROM cordons", "table cordons")  # (the guard's or the
        refused(guarded, "UPDATE cordons SET mode = 'cordon'", "table cordons")  # grant's)
        refused(guarded, "INSERT INTO audit (time, actor, action, job, why) VALUES "
                "(extract(epoch FROM clock_timestamp()), '%s@host', 'uncordon', NULL, 'x')"
                % guarded.ann, guard, "audit entry of 'uncordon'")
        with pytest.raises(Denied, match="to cordon, drain or uncordon gpu-a you must be an "
                                         "admin"):
            uncordon(ann, "gpu-a", None, Asker("here"))  # fractui's rule, before the store
        with pytest.raises(StoreDenied, match="role %s may not do this: " % guarded.ann):
            ann.cordon("gpu-b", None, CORDON, guarded.ann, "straight to the store")
        assert ann.cordons() == [made]  # read by a team member (its TUI and status show it)
        assert ann.mode_holds() == {}  # and the GPUs held back from mode changes
        assert [c.gpu for c in uncordon(ops, "gpu-a", None, Asker("here"))] == [1]
        assert ops.cordons() == []
    finally:
        ops.close()
        ann.close()


def _store_of_schema_4(pg_server) -> tuple:
    """A new database holding a store of schema 4 (as fractui's migrations 1 to 4 made it, no
    role granted anything yet), and a tag for this test's role names: (database, tag)."""
    return _store_of_schema(pg_server, 4)


def _store_of_schema(pg_server, version: int) -> tuple:
    """A new database holding a store of schema ``version``, as fractui's migrations made it,
    with its id: (database, a tag for this test's role names)."""
    from fractui.store.sql import migrations, statements

    db = pg_server.new_database()
    tag = uuid.uuid4().hex[:6]
    pg_server.sql("CREATE TABLE fractui_schema (version INTEGER NOT NULL)", db=db)
    pg_server.sql("INSERT INTO fractui_schema VALUES (%d)" % version, db=db)
    for number, sql in migrations("postgresql"):
        if number <= version:
            for statement in statements(sql):
                pg_server.sql(statement, db=db)
    pg_server.sql("INSERT INTO meta (key, value) VALUES ('uid', '01d00001')", db=db)
    return db, tag


def test_a_team_role_granted_before_the_cordons_existed_may_read_them(pg_server):
    """A store of schema 4 whose team roles were granted SELECT on every table then: migration 5
    grants its new table to whoever could read the jobs."""
    db, tag = _store_of_schema_4(pg_server)
    pg_server.sql("CREATE ROLE fractui_team_old%s" % tag)
    pg_server.sql("CREATE ROLE old_%s LOGIN IN ROLE fractui_team_old%s" % (tag, tag))
    pg_server.sql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO fractui_team_old%s" % tag,
                  db=db)
    open_store(pg_server.url(db)).close()  # the superuser's open applies migration 5
    reader = open_store(pg_server.url(db, user="old_%s" % tag))
    try:
        assert reader.cordons() == []
    finally:
        reader.close()


def test_usage_is_the_schedulers_record_a_member_reads_and_cannot_write(guarded):
    """`fractui report` as a team member reads every team's usage, as the jobs; writing it is
    the lease holder's (an admin's) alone, on psql as through fractui."""
    admin, ops = guarded.store(), guarded.store(guarded.ops)
    member = guarded.store(guarded.ann)
    try:
        job = admin.submit("v", guarded.vision, "ran", ["sleep", "9"], {}, "x")
        admin.place(job.id, SLOT, "sched", "fits")
        admin.started(job.id, "j1", None, "sched", "started")
        assert [r.job for r in member.usage(0, 9e12)] == [job.id]
        assert member.gpu_time(0, 9e12) == []
        # the least grants give no write on them; given all the same, the guard refuses
        for statement, table in (("UPDATE usage SET charge = 0", "usage"),
                                 ("DELETE FROM usage", "usage"),
                                 ("INSERT INTO gpu_time (host, gpu, bucket) VALUES ('h', 0, 0)",
                                  "gpu_time")):
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
                guarded.sql(guarded.ann, statement)
            assert ("permission denied for table %s" % table in str(err.value)) or (
                "role %s" % guarded.ann in str(err.value)
                and "write table %s" % table in str(err.value)), str(err.value)
        with pytest.raises(StoreDenied, match="usage"):
            member.prune_usage(9e12)
        assert [r.charge for r in admin.usage(0, 9e12)] == [SLOT.charge]
        # an admin of the least grants forgets, and keeps where it forgot (meta), which a
        # member reads with the rest
        ops.keep_gpu_time([GpuTime("h", 0, 0.0, None, online_s=300.0)])
        assert ops.prune_usage(600.0) == 1 and member.usage_begins() == admin.usage(
            0, 9e12)[0].started_at and member.usage_forgotten_before() == 600.0
    finally:
        member.close()
        admin.close()
        ops.close()


def test_a_team_member_submits_env_and_an_image_of_fractuis_shape_and_never_changes_them(
        guarded):
    """Migration 0009: a submit may set a job's env and image, each as fractui writes them; a
    cancel or a stop leaves both as they were, on psql as through fractui."""
    ann, admin = guarded.store(guarded.ann), guarded.store()
    try:
        job = submit(ann, "v", guarded.vision, "boxed", ["true"], {}, Asker("here"),
                     env={"LR": "0.1"}, image="docker.io/x/train:1")
        assert (admin.get(job.id).env, admin.get(job.id).image) == ({"LR": "0.1"},
                                                                    "docker.io/x/train:1")
        guard = "refused by the store's guard: role %s" % guarded.ann
        insert = ("INSERT INTO jobs (queue, team, name, argv, request, state, submitted_at, "
                  "updated_at, submitted_by, run_as, env, image) VALUES ('v', '%s', 'x', "
                  "'[\"x\"]', '{}', 'pending', extract(epoch FROM transaction_timestamp()), "
                  "extract(epoch FROM transaction_timestamp()), '%s', '%s', %%s, %%s)" % (
                      guarded.vision, guarded.ann, guarded.ann))
        for env, image in (("'[]'", "NULL"), ("'{\"A\": 1}'", "NULL"), ("'{\"\": \"x\"}'", "NULL"),
                           ("'{\"A=B\": \"x\"}'", "NULL"), ("'{}'", "''"),
                           ("'{}'", "'--privileged'")):
            refused(guarded, insert % (env, image), guard, "whose env is not a JSON object")
        guarded.sql(guarded.ann, audited(insert % ("'{\"A\": \"1\"}'", "'img'"), guarded.ann,
                                         "submit"))  # fractui's shape
        refused(guarded, "UPDATE jobs SET env = '{\"A\": \"2\"}' WHERE id = %d" % job.id,
                guard, "from pending to pending")
        refused(guarded, "UPDATE jobs SET state = 'cancelled', image = 'other' WHERE id = %d"
                % job.id, guard, "change image of job %d" % job.id)
        assert ask_stop(ann, ann.get(job.id), CANCEL, Asker("here")).image == \
            "docker.io/x/train:1"
    finally:
        ann.close()
        admin.close()



def test_a_team_members_request_is_a_queues_portion_that_every_reader_takes(guarded):
    """Migration 0027: a request fractui's config gives (each GPU portion, hosts, an image) is
    submitted as a member through fractui and on psql; on psql one of a kind the readers call
    damaged (which stopped every read of the jobs, the scheduler's passes too), a number the
    pass cannot use, or more than any config asks for is refused, and the jobs read as before."""
    ann, admin = guarded.store(guarded.ann), guarded.store()
    try:
        for queue in (QueueConfig("a", gpu=0.25, priority=-5), QueueConfig("b", mig="1g.10gb"),
                      QueueConfig("c", memory_gib=10, cpus=2, memory=8.5),
                      QueueConfig("d", gpus=2, hosts=("gpu-a",), gpu_models=("H100",),
                                  isolation="share", image="img", team=guarded.vision)):
            submit(ann, queue.name, guarded.vision, "x", ["true"], queue.request(),
                   Asker("here"))
        insert = ("INSERT INTO jobs (queue, team, name, argv, request, state, submitted_at, "
                  "updated_at, submitted_by, run_as) VALUES ('v', '%s', 'x', '[\"x\"]', '%%s', "
                  "'pending', extract(epoch FROM transaction_timestamp()), extract(epoch FROM "
                  "transaction_timestamp()), '%s', '%s')" % (guarded.vision, guarded.ann,
                                                             guarded.ann))
        guard = "refused by the store's guard: role %s" % guarded.ann
        for request, said in (('{"gpus": "x"}', 'gpus is "x"'),
                              ('{"gpu": 0.5, "hosts": [1]}', "hosts is [1]"),
                              ('{"gpu": 0.5, "gpu_models": "H100"}', 'gpu_models is "H100"'),
                              ('{"gpu": 0.5, "isolation": "all"}', 'isolation is "all"'),
                              ('{"gpu": 0.5, "mig": 7}', "mig is 7"),
                              ('{"gpu": 0.5, "cpus": 1e400}', "cpus is 1e400"),
                              ('{"gpu": -1}', "gpu is -1"), ('{"gpus": 2.0}', "gpus is 2.0"),
                              ('{"gpus": 2, "gpus": "x"}', 'gpus is "x"'),
                              ('{"gpu": 0.5, "priority": 10000000}', "priority is 10000000"),
                              ('{"mig": "7g.80gb", "isolation": "share"}',
                               "mig with isolation share"),
                              ('{"gpus": 2, "isolation": "mig"}',
                               "gpus above 1 with isolation mig"),
                              ('{"gpu": 0.5, "gpus": 8}', "2 of gpu, mig, memory_gib, gpus asked")):
            refused(guarded, audited(insert % request, guarded.ann, "submit"), guard,
                    "whose request is not a queue's portion as fractui writes it (%s)" % said)
        guarded.sql(guarded.ann, audited(insert % '{"gpus": 1, "cpus": 0.5}', guarded.ann,
                                         "submit"))
        jobs = admin.jobs()  # not damaged: each reads, and each is a request the pass takes
        assert len(jobs) == 5 and [request_of(j).gpus for j in jobs] == [0, 0, 0, 2, 1]
    finally:
        ann.close()
        admin.close()

def guard_image_class() -> "re.Pattern[str]":
    """The character class migration 0010 refuses in an image, as Python reads the same escapes."""
    sql = (migrations_dir() / "0010_guard_image.sql").read_text()
    expression = sql[sql.index("NEW.image ~ (") + len("NEW.image ~ ("):sql.index("|| ']')")]
    return re.compile("".join(re.findall(r"'([^']*)'", expression)) + "]")


def migrations_dir() -> pathlib.Path:
    return pathlib.Path(REPO) / "fractui" / "store" / "migrations" / "postgresql"


def test_the_guards_image_characters_are_the_agents_rule():
    """Every character the guard refuses the agent refuses too, and every character Unicode
    assigns that the agent refuses the guard refuses (only unassigned ones pass it, and on a
    Python of another Unicode version the format characters that version added)."""
    refused_here = guard_image_class()
    missed = []
    for code in range(1, 0x110000):
        if 0xD800 <= code <= 0xDFFF:  # surrogates: never in a PostgreSQL text
            continue
        ch = chr(code)
        agent = image_problem("a" + ch) is not None
        if refused_here.match(ch):
            assert agent, "the guard refuses U+%04X, which the agent takes" % code
        elif agent and unicodedata.category(ch) != "Cn":
            missed.append(code)
    if unicodedata.unidata_version == "14.0.0":
        assert missed == []
    else:
        assert all(unicodedata.category(chr(c)) == "Cf" for c in missed), missed


def test_a_team_member_submits_no_image_the_agent_would_refuse(guarded):
    """Migration 0010: on psql, an image the agent would refuse at launch is refused at submit;
    what the agent takes, an apptainer path in any script included, goes in; an admin is not
    held."""
    insert = ("INSERT INTO jobs (queue, team, name, argv, request, state, submitted_at, "
              "updated_at, submitted_by, run_as, env, image) VALUES ('v', '%s', 'x', '[\"x\"]', "
              "'{}', 'pending', extract(epoch FROM transaction_timestamp()), extract(epoch FROM "
              "transaction_timestamp()), '%s', '%s', '{}', %s)")

    def submit_as(role: str, image: str) -> None:
        guarded.sql(role, audited(insert % (guarded.vision, role, role,
                                            psycopg.sql.quote(image)),
                                  role, "submit"))
    for image in ("a b", "x\ty", "x\u00a0y", "img\u202e1:gat", "x\u200by", "x\x7f", "x\U000e0041",
                  "a" * 4097):
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
            submit_as(guarded.ann, image)
        assert "image is longer than 4096 characters or holds a space" in str(err.value)
        assert image_problem(image) is not None
    for image in ("docker.io/x/train:1@sha256:" + "0" * 64, "/opt/ünïcode/모델.sif", "a" * 4096):
        submit_as(guarded.ann, image)
        assert image_problem(image) is None
    submit_as(guarded.ops, "a b")  # an admin's psql is not held; fractui's CLI checks theirs


def test_a_team_members_temporary_tables_do_not_fool_the_guard(guarded):
    """Migration 0011: a session's temporary tables are searched before pg_catalog unless the
    path names pg_temp; the guard runs as its caller, so a TEMP TABLE pg_roles that said ann
    was a superuser let her change any job, and a TEMP TABLE jobs could make another team's
    job hers for the audit."""
    admin = guarded.store()
    try:
        theirs = admin.submit("n", guarded.nlp, "theirs", ["sleep", "9"], {}, "x")
        before = (admin.get(theirs.id), admin.audit_log(limit=1000))
        with psycopg.connect(guarded.url(guarded.ann), autocommit=True) as conn:
            conn.execute("CREATE TEMP TABLE pg_roles (oid oid, rolname name, rolsuper bool)")
            conn.execute("INSERT INTO pg_roles VALUES (0, session_user, true)")
            conn.execute("CREATE TEMP TABLE jobs (id bigint, team text)")
            conn.execute("INSERT INTO jobs VALUES (%s, %s)", (theirs.id, guarded.vision))
            for statement in (
                    "UPDATE public.jobs SET argv = '[\"evil\"]' WHERE id = %d" % theirs.id,
                    "INSERT INTO public.audit (time, actor, action, job, why) VALUES "
                    "(extract(epoch FROM clock_timestamp()), '%s', 'cancel', %d, 'forged')"
                    % (guarded.ann, theirs.id)):
                with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
                    conn.execute(statement)
                assert "refused by the store's guard: role %s" % guarded.ann in str(err.value)
        assert (admin.get(theirs.id), admin.audit_log(limit=1000)) == before
    finally:
        admin.close()


def test_every_function_of_the_store_searches_the_callers_temporary_tables_last(pg_server):
    """So that no later migration brings the hole back: each fractui function's search_path
    is pg_catalog, the store's schema, pg_temp."""
    db = pg_server.new_database()
    open_store(pg_server.url(db)).close()
    rows = pg_server.sql("SELECT p.proname, p.proconfig FROM pg_proc p WHERE p.pronamespace = "
                         "'public'::regnamespace AND p.proname LIKE 'fractui\\_%'", db=db)
    assert len(rows) >= 10
    for name, config in rows:
        assert "search_path=pg_catalog, public, pg_temp" in (config or []), (name, config)


def forged_cancel(job: int) -> str:
    """A cancel of ``job`` by psql said to be the superuser's, its reason and audit entry
    naming postgres@host: what the guard refuses of a member unless she changed its calls."""
    now = "extract(epoch FROM statement_timestamp())"
    return audited("UPDATE jobs SET state = 'cancelled', reason = 'cancelled by postgres@host', "
                   "ended_at = %s, updated_at = %s WHERE id = %d" % (now, now, job),
                   "postgres@host", "cancel", str(job))


def test_a_database_where_every_role_may_create_in_public_is_refused(pg_server):
    """PostgreSQL before 15 lets every role create in the schema public. A function a team
    member puts there with argument types closer than PostgreSQL's own (length(name),
    left(text, bigint)) is the one the guard calls: with it, ann cancels a job as the admin,
    audited so. fractui refuses such a database, saying what to run."""
    tag = uuid.uuid4().hex[:6]
    db = pg_server.new_database()
    open_store(pg_server.url(db)).close()
    ann, team = "ann_" + tag, "fractui_team_v" + tag
    pg_server.admin_role()
    pg_server.sql("CREATE ROLE %s" % team)
    pg_server.sql("CREATE ROLE %s LOGIN IN ROLE %s" % (ann, team))
    for grant in LEAST:
        pg_server.sql(grant.format(admin="fractui_admin", teams=team), db=db)
    pg_server.sql("GRANT CREATE ON SCHEMA public TO PUBLIC", db=db)
    with pytest.raises(StoreDamaged, match="every role may create objects in its "
                       "schema public .* REVOKE CREATE ON SCHEMA public FROM PUBLIC"):
        open_store(pg_server.url(db))
    admin = psycopg.connect(pg_server.url(db), autocommit=True)
    job = admin.execute("INSERT INTO jobs (queue, team, name, argv, request, state, "
                        "submitted_at, updated_at) VALUES ('v', %s, 'x', '[\"x\"]', '{}', "
                        "'pending', 1, 1) RETURNING id", ("v" + tag,)).fetchone()[0]
    forge = forged_cancel(job)
    with psycopg.connect(pg_server.url(db, user=ann), autocommit=True) as conn:
        conn.execute("CREATE FUNCTION public.length(name) RETURNS bigint LANGUAGE sql AS "
                     "'SELECT 1::bigint'")
        conn.execute("CREATE FUNCTION public.left(text, bigint) RETURNS text LANGUAGE sql AS "
                     "$$ SELECT session_user || '@' $$")
        conn.execute(forge)  # the hole the refusal points at
        conn.execute("DROP FUNCTION public.length(name), public.left(text, bigint)")
    pg_server.sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC", db=db)
    open_store(pg_server.url(db)).close()
    with psycopg.connect(pg_server.url(db, user=ann), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE FUNCTION public.length(name) RETURNS bigint LANGUAGE sql AS "
                         "'SELECT 1::bigint'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(forge)
    admin.close()



@pytest.mark.parametrize("grantee", ["team", "ann"])
def test_a_database_where_a_team_or_member_may_create_in_public_is_refused(pg_server, grantee):
    """PUBLIC's CREATE on the schema public given to a team's role (GRANT ALL ON SCHEMA) or to
    a member's own role instead: ann puts the same functions there and forges an audit entry
    as the admin, as on a server before 15. fractui refuses such a database on every open,
    for every role, saying the REVOKE; an admin's grant, or the owner's, is no one else's."""
    tag = uuid.uuid4().hex[:6]
    db = pg_server.new_database()
    open_store(pg_server.url(db)).close()
    ann, team, ops = "ann_" + tag, "fractui_team_v" + tag, "ops_" + tag
    pg_server.admin_role()
    pg_server.sql("CREATE ROLE %s" % team)
    pg_server.sql("CREATE ROLE %s LOGIN IN ROLE %s" % (ann, team))
    pg_server.sql("CREATE ROLE %s LOGIN IN ROLE fractui_admin" % ops)
    for grant in LEAST:
        pg_server.sql(grant.format(admin="fractui_admin", teams=team), db=db)
    pg_server.sql("GRANT CREATE ON SCHEMA public TO fractui_admin, %s" % ops, db=db)
    open_store(pg_server.url(db)).close()  # an admin may create there
    given = {"team": team, "ann": ann}[grantee]
    pg_server.sql("GRANT ALL ON SCHEMA public TO %s" % given, db=db)
    job = pg_server.sql("INSERT INTO jobs (queue, team, name, argv, request, state, "
                        "submitted_at, updated_at) VALUES ('v', 'v%s', 'x', '[\"x\"]', '{}', "
                        "'pending', 1, 1) RETURNING id" % tag, db=db)[0][0]
    forge = forged_cancel(job)
    plant = ("CREATE FUNCTION public.length(name) RETURNS bigint LANGUAGE sql AS "
             "'SELECT 1::bigint'; CREATE FUNCTION public.left(text, bigint) RETURNS text "
             "LANGUAGE sql AS $$ SELECT session_user || '@' $$")
    with psycopg.connect(pg_server.url(db, user=ann), autocommit=True) as conn:
        conn.execute(plant)
        conn.execute(forge)  # the hole the refusal points at
        conn.execute("DROP FUNCTION public.length(name), public.left(text, bigint)")
    for role in ("postgres", ops, ann):
        with pytest.raises(StoreDamaged) as err:
            open_store(pg_server.url(db, user=role))
        assert ("role %s, not an admin, may create objects in the schema public" % given
                in str(err.value)), err.value
        revoke = re.search(r"runs (REVOKE CREATE ON SCHEMA public FROM \S+ CASCADE) in the "
                           r"database", str(err.value))
        assert revoke is not None, err.value
    pg_server.sql(revoke.group(1), db=db)
    open_store(pg_server.url(db, user=ann)).close()
    with psycopg.connect(pg_server.url(db, user=ann), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(plant)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(forge)

def test_a_team_members_row_is_at_most_4_mib(guarded):
    """Migration 0025: ann's job of 5 MiB (a command no host takes: an agent's request line is
    1 MiB, and fractui's submit refuses more than 960 KiB), through fractui's store or psql,
    and her audit entry of as much are refused, saying the size; her job of 896 KiB, near the
    most fractui submits, goes, and an admin's is not held."""
    ann = guarded.store(guarded.ann)
    admin = guarded.store()
    big = ["x" * 2 ** 17] * 40  # each as long as Linux takes one argument
    try:
        said = ("refused by the store's guard: role %s (not in fractui_admin) may not write a "
                "row of" % guarded.ann)
        with pytest.raises(StoreDenied, match=re.escape(said) + r" 5\d{6} bytes to jobs: at "
                           "most 4 MiB"):
            submit(ann, "v", guarded.vision, "big", big, {}, Asker("here"))
        mine = submit(ann, "v", guarded.vision, "mine", big[:7], {}, Asker("here"))
        refused(guarded, "INSERT INTO audit (time, actor, action, job, why) VALUES (extract("
                "epoch FROM clock_timestamp()), '%s', 'submit', %d, repeat('x', 5 * 1048576))"
                % (guarded.ann, mine.id), said, "bytes to audit")
        assert admin.submit("v", guarded.vision, "big", big, {}, "x").argv == tuple(big)
    finally:
        ann.close()
        admin.close()


def test_a_team_members_lock_of_the_jobs_is_said_with_her_role_and_pid(guarded, monkeypatch):
    """UPDATE on the whole of jobs (the earlier advice, or a broad grant) lets a member LOCK
    TABLE jobs in any mode, which no guard sees (docs/decisions.md). While her
    session holds it, the scheduler's reads and writes of the jobs are refused RowsLocked
    naming her role and pid and how an admin ends it, not left waiting or said as another."""
    monkeypatch.setattr(postgres, "ROW_WAIT_S", 0.5)
    monkeypatch.setattr(postgres, "LOCK_TIMEOUT_S", 0.5)  # (a read waits this long)
    admin = guarded.store()
    with psycopg.connect(guarded.url(guarded.ann)) as conn:
        conn.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        said = "held by role %s (pid %d, " % (guarded.ann, conn.info.backend_pid)
        try:
            for call in (admin.jobs, lambda: admin.submit("v", guarded.vision, "x", ["true"],
                                                          {}, "x")):
                with pytest.raises(RowsLocked, match=re.escape(said)) as locked:
                    call()
                assert str(locked.value).endswith("SELECT pg_terminate_backend(%d); try again"
                                                  % conn.info.backend_pid), locked.value
        finally:
            conn.rollback()
            admin.close()


def test_the_least_grants_keep_a_member_from_locking_out_the_jobs(pg_server):
    """With UPDATE on the columns a member's cancel and stop set, and not on the table, LOCK
    TABLE jobs is refused in every mode that would stall a read or a write (PostgreSQL lets
    table-level UPDATE, DELETE or TRUNCATE take any mode, INSERT no more than ROW EXCLUSIVE),
    and the ROW EXCLUSIVE she may take stalls neither the scheduler's reads nor its writes.
    The store was granted by the earlier advice, then made the least as docs/decisions.md
    says (the REVOKE of table-level UPDATE takes the columns' too, then the columns'), by the
    superuser: the same statements run by ops, an admin not the store's owner, change nothing
    (PostgreSQL only warns), and ann could still lock the jobs."""
    least = _guarded(pg_server, EARLIER)
    teams = "fractui_team_%s, fractui_team_%s" % (least.vision, least.nlp)
    made_least = [grant.format(teams=teams) for grant in (
        "REVOKE UPDATE ON jobs, log_requests FROM {teams}",) + LEAST[2:4]]
    for statement in made_least:
        least.sql(least.ops, statement)
    with psycopg.connect(least.url(least.ann)) as conn:
        conn.execute("LOCK TABLE jobs IN EXCLUSIVE MODE")  # (granted: nothing was revoked)
    for statement in made_least:
        pg_server.sql(statement, db=least.db)
    admin = least.store()
    with psycopg.connect(least.url(least.ann)) as conn:
        try:
            for mode in ("SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege,
                                   match="permission denied for table jobs"):
                    conn.execute("LOCK TABLE jobs IN %s MODE" % mode)
                conn.rollback()
            conn.execute("LOCK TABLE jobs, log_requests IN ROW EXCLUSIVE MODE")
            job = admin.submit("v", least.vision, "x", ["true"], {}, "x")
            assert [j.id for j in admin.jobs()] == [job.id]
        finally:
            conn.rollback()
            admin.close()


def test_a_member_locks_no_job_but_her_teams(any_grants):
    """Migration 0029: the UPDATE ann is granted lets her SELECT ... FOR UPDATE (or SHARE),
    and on psql she held every team's job rows so, for as long as her session lived: every
    write to another team's job waited and failed (RowsLocked), pass after pass. Her lock of
    a row of team nlp, or of no team, is refused in the guard's words and holds nothing, and so
    is her lock of a request for the output of nlp's job (log_requests); her own team's she
    may hold, and the admin's writes of the others go through meanwhile."""
    guarded = any_grants
    admin = guarded.store()
    conn = psycopg.connect(guarded.url(guarded.ann))
    try:
        mine = admin.submit("v", guarded.vision, "mine", ["true"], {}, "x")
        theirs = [admin.submit("n", guarded.nlp, "theirs", ["true"], {}, "x") for _ in "ab"]
        nobodys = admin.submit("q", None, "nobody's", ["true"], {}, "x")
        guard = "refused by the store's guard: role %s" % guarded.ann
        for lock in ("UPDATE", "NO KEY UPDATE", "SHARE", "KEY SHARE"):
            for job, words in ((None, "of team %s: it is not a member" % guarded.nlp),
                               (theirs[0], "change job %d of team %s" % (theirs[0].id,
                                                                          guarded.nlp)),
                               (nobodys, "change job %d of no team" % nobodys.id)):
                with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
                    conn.execute("SELECT id FROM jobs %s FOR %s" % (
                        "" if job is None else "WHERE id = %d" % job.id, lock))
                assert guard in str(err.value) and words in str(err.value), (lock, err.value)
                conn.rollback()
        for job in (mine, theirs[1]):
            admin.ask_log(job.id, "ops")
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
            conn.execute("SELECT job FROM log_requests FOR UPDATE")
        assert guard in str(err.value) and "ask for the output of job %d of team %s" % (
            theirs[1].id, guarded.nlp) in str(err.value), err.value
        conn.rollback()
        assert conn.execute("SELECT job FROM log_requests WHERE job = %s FOR UPDATE",
                            (mine.id,)).fetchall() == [(mine.id,)]
        held = conn.execute("SELECT id FROM jobs WHERE team = %s FOR UPDATE",
                            (guarded.vision,)).fetchall()
        assert held == [(mine.id,)]  # her session holds it, open, as the writes below run
        admin.keep_log(theirs[1].id, "out", True)  # the other team's request served
        assert admin.log_requests() == [mine.id]
        done = admin.ended(theirs[0].id, (PENDING,), CANCELLED, "cancelled by ops", "ops",
                           "cancelled by ops", "cancel")
        assert done.state == CANCELLED
        for job, gpu in ((theirs[1], 0), (nobodys, 1)):
            placed = admin.place(job.id, replace(SLOT, gpus=(gpu,)), "sched", "decided")
            assert (placed.state, placed.slot) == ("placed", replace(SLOT, gpus=(gpu,)))
        with pytest.raises(RowsLocked, match="held by role %s" % guarded.ann):
            admin.place(mine.id, replace(SLOT, gpus=(2,)), "sched", "decided")
    finally:
        conn.close()
        admin.close()

def test_an_admins_update_of_many_jobs_asks_no_row_of_the_policy(guarded):
    """Migration 0030: 0029's UPDATE policy called its function on every row an admin's or
    the scheduler's statement reached, each asking again whether the role is an admin; it is
    asked once, and no row's function runs. Ann's own row still goes to it, and hers alone
    where her statement names it by id as fractui's do (PostgreSQL weighs a leakproof
    condition first), with the planner held to reading every row of the table."""
    admin = guarded.store()
    try:
        for team in (guarded.nlp, guarded.vision, None):
            admin.submit("v", team, "x", ["true"], {}, "x")
        mine = admin.submit("v", guarded.vision, "mine", ["true"], {}, "x")
        admin.submit("v", guarded.nlp, "x", ["true"], {}, "x")
    finally:
        admin.close()
    for role in (guarded.ops, guarded.ann):
        guarded.server.sql("ALTER ROLE %s SET track_functions = 'all'" % role)
    for scan in ("indexscan", "indexonlyscan", "bitmapscan"):
        guarded.server.sql("ALTER ROLE %s SET enable_%s = off" % (guarded.ann, scan))
    asked = ("SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions "
             "WHERE funcname IN ('fractui_guard_changes_job', 'fractui_guard_asks_output')")
    with psycopg.connect(guarded.url(guarded.ops)) as conn:
        conn.execute("UPDATE jobs SET reason = 'x'; UPDATE log_requests SET actor = 'x'")
        conn.execute("SELECT id FROM jobs FOR UPDATE")
        assert conn.execute(asked).fetchone()[0] == 0
    with psycopg.connect(guarded.url(guarded.ann)) as conn:
        conn.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (mine.id,))
        assert conn.execute(asked).fetchone()[0] == 1
    ann = guarded.store(guarded.ann)
    try:
        assert ask_stop(ann, ann.get(mine.id), CANCEL, Asker("here")).state == CANCELLED
    finally:
        ann.close()


def test_an_admins_update_of_many_jobs_queues_no_audit_check_and_reads_no_role_by_name(
        guarded):
    """Migration 0034: an admin's UPDATE of every job asked fractui_guard_admin() four times a
    row, each a SQL function that read pg_roles by name and was planned anew (10,000 rows:
    6.4 s, a superuser's 0.55 s), and queued the audit check (0016) of each row until the
    commit, where it returned at once. Now no row's audit check is queued for an admin, and
    whether she is one is asked of her membership without reading a role by its name
    (fractui_guard_member, which a team's check still uses). A member's change is still
    checked at commit: ann's stop with no audit entry is refused."""
    admin = guarded.store()
    try:
        jobs = [admin.submit("v", guarded.vision, "x", ["true"], {}, "x") for _ in range(3)]
        running = admin.place(jobs[0].id, SLOT, "sched", "decided")
        running = admin.started(running.id, "a1", None, "sched", "started")
    finally:
        admin.close()
    guarded.server.sql("ALTER ROLE %s SET track_functions = 'all'" % guarded.ops)
    asked = ("SELECT funcname, calls FROM pg_stat_xact_user_functions WHERE funcname IN "
             "('fractui_guard_job_audited', 'fractui_guard_member') ORDER BY funcname")
    with psycopg.connect(guarded.url(guarded.ops)) as conn:
        assert conn.execute("UPDATE jobs SET reason = 'x'").rowcount == 3
        conn.execute("SET CONSTRAINTS ALL IMMEDIATE")  # (the deferred checks: run now)
        assert conn.execute(asked).fetchall() == []
    refused(guarded, "UPDATE jobs SET state = 'stopping', stop_intent = 'requeue', reason = "
            "'requeued by %s', updated_at = extract(epoch FROM clock_timestamp()) WHERE id = "
            "%d" % (guarded.ann, running.id), "without an audit entry")


def test_a_store_where_a_team_may_add_triggers_is_refused_saying_the_revoke(guarded):
    """GRANT ALL gives TRIGGER too: ann adds a trigger to jobs on a function of her session's
    pg_temp, and it runs as whoever writes the table, so the admin's next write of any job
    renames team nlp's. Every open of such a store is refused, naming the roles and the
    REVOKE; run as said, the store opens, ann's trigger is refused and her submit works."""
    teams = "fractui_team_%s, fractui_team_%s" % (guarded.vision, guarded.nlp)
    guarded.server.sql("GRANT ALL ON ALL TABLES IN SCHEMA public TO fractui_admin, %s" % teams,
                       db=guarded.db)
    admin = psycopg.connect(guarded.url("postgres"), autocommit=True)
    submit_sql = ("INSERT INTO jobs (queue, team, name, argv, request, state, submitted_at, "
                  "updated_at) VALUES ('q', %s, 'x', '[\"x\"]', '{}', 'pending', 1, 1) "
                  "RETURNING id")
    theirs, mine = (admin.execute(submit_sql, (team,)).fetchone()[0]
                    for team in (guarded.nlp, guarded.vision))
    add = ("CREATE TRIGGER zz_mine BEFORE UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION "
           "pg_temp.mine()")
    with psycopg.connect(guarded.url(guarded.ann), autocommit=True) as conn:
        conn.execute("CREATE FUNCTION pg_temp.mine() RETURNS trigger LANGUAGE plpgsql AS $$ "
                     "BEGIN IF NEW.id <> %d THEN UPDATE jobs SET name = 'renamed by ' || "
                     "current_user WHERE id = %d; END IF; RETURN NEW; END $$" % (theirs, theirs))
        conn.execute(add)  # the hole the refusal points at
        admin.execute("UPDATE jobs SET name = 'y' WHERE id = %d" % mine)
        assert admin.execute("SELECT name FROM jobs WHERE id = %d" % theirs).fetchone() == (
            "renamed by postgres",)
    roles = sorted("fractui_team_" + t for t in (guarded.vision, guarded.nlp))
    for role in (guarded.ann, guarded.ops, "postgres"):
        with pytest.raises(StoreDamaged) as damaged:
            guarded.store(role)
        assert str(damaged.value).endswith(postgres.TEAM_TRIGGERS % (
            "roles " + ", ".join(roles), "the store's tables", "postgres",
            "REVOKE TRIGGER ON %s FROM %s CASCADE" % (
                ", ".join('"%s"' % t for t in postgres._TABLES),
                ", ".join('"%s"' % r for r in roles)))), damaged.value
    revoke, = said_fixes(damaged)
    with psycopg.connect(guarded.url(guarded.ops), autocommit=True) as conn:
        conn.execute(revoke)  # (an admin not the owner: PostgreSQL revokes nothing, warning)
    with pytest.raises(StoreDamaged):
        guarded.store(guarded.ops)
    guarded.server.sql(revoke, db=guarded.db)
    with psycopg.connect(guarded.url(guarded.ann), autocommit=True) as conn:
        conn.execute("CREATE FUNCTION pg_temp.mine() RETURNS trigger LANGUAGE plpgsql AS $$ "
                     "BEGIN RETURN NEW; END $$")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(add)
    ann = guarded.store(guarded.ann)
    try:
        assert submit(ann, "v", guarded.vision, "mine", ["true"], {}, Asker("h")).name == "mine"
    finally:
        ann.close()
        admin.close()


def said_fixes(damaged: pytest.ExceptionInfo) -> list[str]:
    """The statements a TEAM_TRIGGERS refusal says to run, one by one."""
    return str(damaged.value).split("a superuser runs ", 1)[1].split(" (docs/", 1)[0].split(
        " and ")


def test_the_tables_checked_for_trigger_grants_are_every_table_the_store_has(guarded):
    """The TRIGGER check reads the store's tables from its migrations' text: a table made
    some other way (a migration that words its CREATE TABLE otherwise) would go unchecked."""
    made = guarded.server.sql("SELECT relname FROM pg_class WHERE relkind IN ('r', 'p') AND "
                              "relnamespace = 'public'::regnamespace", db=guarded.db)
    assert sorted(name for name, in made) == postgres._TABLES


def test_a_trigger_grant_on_a_table_not_the_stores_refuses_nothing(guarded):
    """TRIGGER on a table in public that is no table of the store (another program's, or an
    admin's own) lets no one's trigger run in the store's writes: the store opens."""
    guarded.server.sql("CREATE TABLE notes (x int); GRANT ALL ON notes TO fractui_team_%s, "
                       "PUBLIC" % guarded.vision, db=guarded.db)
    guarded.store(guarded.ann).close()


def test_default_privileges_that_give_trigger_are_said_with_what_removes_them(guarded):
    """ALTER DEFAULT PRIVILEGES ... GRANT ALL gives TRIGGER on each table the store's owner
    makes next, a migration's too: a REVOKE on the tables leaves it to come back. Every open
    is refused, naming the default privileges and the ALTER DEFAULT PRIVILEGES that removes
    them; run as said, the store opens and a table the owner makes then gives no TRIGGER."""
    vision, nlp = ("fractui_team_%s" % t for t in (guarded.vision, guarded.nlp))
    guarded.server.sql("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO %s; "
                       "ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO %s; GRANT ALL ON jobs "
                       "TO %s" % (vision, nlp, vision), db=guarded.db)
    with pytest.raises(StoreDamaged) as damaged:
        guarded.store(guarded.ann)
    assert postgres.TEAM_TRIGGERS % (
        "roles %s, %s" % tuple(sorted((nlp, vision))),
        "the store's tables, and to " + postgres.TRIGGERS_BY_DEFAULT % "postgres", "postgres",
        'REVOKE TRIGGER ON "jobs" FROM "%s" CASCADE and ALTER DEFAULT PRIVILEGES FOR ROLE '
        '"postgres" REVOKE TRIGGER ON TABLES FROM "%s" and ALTER DEFAULT PRIVILEGES FOR ROLE '
        '"postgres" IN SCHEMA public REVOKE TRIGGER ON TABLES FROM "%s"' % (vision, nlp, vision)
    ) in str(damaged.value), damaged.value
    revoke, *defaults = said_fixes(damaged)
    guarded.server.sql(revoke, db=guarded.db)
    with pytest.raises(StoreDamaged, match="every table role postgres makes next"):
        guarded.store(guarded.ann)  # (the default privileges are still there)
    for statement in defaults:
        guarded.server.sql(statement, db=guarded.db)
    guarded.store(guarded.ann).close()
    guarded.server.sql("CREATE TABLE later (x int)", db=guarded.db)
    assert guarded.server.sql(
        "SELECT has_table_privilege('%s', 'later', 'TRIGGER'), has_table_privilege('%s', "
        "'later', 'TRIGGER'), has_table_privilege('%s', 'later', 'SELECT')" % (vision, nlp, nlp),
        db=guarded.db) == [(False, False, True)]


def test_the_said_revoke_takes_back_a_trigger_grant_given_on_by_a_team(guarded):
    """TRIGGER given to team vision WITH GRANT OPTION, and given on by it to team nlp: the
    REVOKE the refusal said, run by the owner, failed ("dependent privileges exist") and the
    store stayed refused. As said now it takes back both, and the store opens."""
    vision, nlp = ("fractui_team_%s" % t for t in (guarded.vision, guarded.nlp))
    guarded.server.sql("GRANT TRIGGER ON jobs TO %s WITH GRANT OPTION" % vision, db=guarded.db)
    with psycopg.connect(guarded.url(guarded.ann), autocommit=True) as conn:
        conn.execute("SET ROLE %s" % vision)
        conn.execute("GRANT TRIGGER ON jobs TO %s" % nlp)
    with pytest.raises(StoreDamaged) as damaged:
        guarded.store(guarded.ann)
    for statement in said_fixes(damaged):
        guarded.server.sql(statement, db=guarded.db)
    guarded.store(guarded.ann).close()


def test_an_admin_role_granted_before_the_newer_tables_may_write_them(pg_server):
    """A store of schema 4 set up as docs/decisions.md says (every table granted to the admins'
    role, SELECT to a team's), upgraded by its owner: another admin may write what came since
    — a cordon, usage, the scheduler's mode holds and what fails its passes — and the team
    member read them, as the TUI and `report` do."""
    from fractui.store.model import CORDON, GpuTime, ModeHold
    db, tag = _store_of_schema_4(pg_server)
    admins, team = "fractui_admin", "fractui_team_old%s" % tag  # the guard's admins' role
    pg_server.admin_role()
    pg_server.sql("CREATE ROLE %s" % team)
    pg_server.sql("CREATE ROLE ops_%s LOGIN IN ROLE %s" % (tag, admins))
    pg_server.sql("CREATE ROLE ann_%s LOGIN IN ROLE %s" % (tag, team))
    pg_server.sql("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO %s"
                  % admins, db=db)
    pg_server.sql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO %s" % team, db=db)
    open_store(pg_server.url(db)).close()  # the owner's open applies what came since
    ops = open_store(pg_server.url(db, user="ops_%s" % tag))
    ann = open_store(pg_server.url(db, user="ann_%s" % tag))
    try:
        epoch = ops.acquire_lease("ops", 30.0)
        ops.keep_mode_holds({"GPU-1": ModeHold(1, 9e12)}, epoch=epoch)
        ops.keep_trouble("ZeroDivisionError: x", epoch=epoch)
        ops.cordon("gpu-a", None, CORDON, "ops", "cordoned by ops")
        ops.keep_gpu_time([GpuTime("gpu-a", 0, 600.0, "L4", online_s=30)], epoch=epoch)
        assert ann.mode_holds() == {"GPU-1": ModeHold(1, 9e12)}
        assert ann.trouble() == "ZeroDivisionError: x"
        assert [c.host for c in ann.cordons()] == ["gpu-a"]
        assert [g.host for g in ann.gpu_time(0, 9e12)] == ["gpu-a"]
    finally:
        ops.close()
        ann.close()
