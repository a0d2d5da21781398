"""The PostgreSQL store's own ways, on a real server the tests start: a restart under an open
store and feed, who the caller is by role, the lease on the server's clock, and every way a
server can refuse said in the store's words (where, never a password)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from fractui.store import (LeaseLost, RowsLocked, StateConflict, StoreBusy, StoreDamaged,
                           StoreDenied, StoreUnavailable, open_store)
from fractui.copy_words import stale_copies
from fractui.mig_by_hand import carry_out
from fractui.sched.mig_change import DESTROY, MigChange
from fractui.store import postgres
from fractui.store.base import EVERYTHING, NO_STORE, Identity
from fractui.store.intents import (Asker, ask_stop, cordon, move_by_hand, place_by_hand, submit,
                                   uncordon)
from fractui.store.model import Slot
from fractui.store.sql import migrations
from fractui.store_url import postgresql_url, url_problem
from fractui.whoami import os_user
from tests.cli_run import reaped
from tests.conftest import REPO
from tests.test_pg_guard import EARLIER, LEAST
from tests.sshd import free_port


@pytest.fixture
def pg_url(pg_server) -> str:
    return pg_server.url(pg_server.new_database())


def test_a_restarted_server_is_reconnected_to_and_an_outage_is_said_with_where(pg_server,
                                                                                pg_url):
    store = open_store(pg_url)
    feed = store.feed()
    try:
        job = store.submit("q", None, "before", ["true"], {}, "alice")
        pg_server.pg_ctl("restart", "-m", "fast")
        # no call was made while it was down: the next one finds its connection gone, makes a
        # new one and is made again (nothing of it was recorded the first time)
        assert store.get(job.id).name == "before"
        assert feed.wait(5) == EVERYTHING  # notifications may have been missed: re-read all
        pg_server.stop()
        where = "127.0.0.1:%d" % pg_server.port
        with pytest.raises(StoreUnavailable, match="cannot reach the PostgreSQL server") as err:
            store.submit("q", None, "during", ["true"], {}, "alice")
        assert where in str(err.value)
        with pytest.raises(StoreUnavailable, match=where):
            feed.wait(1)
        pg_server.start()
        store.submit("q", None, "after", ["true"], {}, "alice")
        assert [j.name for j in store.jobs()] == ["before", "after"]  # "during" never landed
        assert feed.wait(5) == EVERYTHING
        store.record_inventory("h", {})
        assert feed.wait(5) == {"hosts"}  # listening again
    finally:
        feed.close()
        store.close()


def test_the_lease_runs_on_the_servers_clock_not_the_clients(pg_server, pg_url, monkeypatch):
    """A client whose clock is an hour behind gets the same lease as any other: its expiry is
    the server's time plus the lease's length."""
    store = open_store(pg_url)
    try:
        monkeypatch.setattr(time, "time", lambda real=time.time: real() - 3600)
        assert store.acquire_lease("slow-clock", 60) == 1
        holder, until = store.lease_holder()
        server_now = pg_server.sql("SELECT extract(epoch FROM clock_timestamp())::float8",
                                   db=pg_url.rsplit("/", 1)[1])[0][0]
        assert holder == "slow-clock"
        assert server_now < until <= server_now + 60  # not an hour early
        assert store.audit_log()[-1].time == pytest.approx(until - 60)
    finally:
        store.close()


def test_the_identity_is_the_connected_role_its_teams_and_admin_by_role(pg_server, pg_url):
    tag = uuid.uuid4().hex[:6]
    alice, bob, carol = "alice_" + tag, "bob_" + tag, "carol_" + tag
    vision, nlp = "fractui_team_vision" + tag, "fractui_team_nlp" + tag
    db = pg_url.rsplit("/", 1)[1]
    open_store(pg_url).close()  # the schema, made by its owner
    pg_server.admin_role()
    for role in (vision, nlp):
        pg_server.sql("CREATE ROLE %s" % role)
    for role in (alice, bob, carol):
        pg_server.sql("CREATE ROLE %s LOGIN" % role)
    pg_server.sql("GRANT %s TO %s" % (vision, alice))
    pg_server.sql("GRANT %s TO %s" % (nlp, vision))  # a team inside a team: alice in both
    pg_server.sql("GRANT fractui_admin TO %s" % bob)
    pg_server.sql("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "
                  "%s, %s" % (alice, bob), db=db)
    seen = {}
    for role in (alice, bob):
        store = open_store(pg_server.url(db, user=role))
        try:
            seen[role] = store.identity()
            job = store.submit("q", "vision" + tag, "by " + role, ["true"], {}, role,
                               run_as=None if role == bob else role)
            why = "cancelled by " + role
            assert store.ended(job.id, ("pending",), "cancelled", why, role, why,
                               "cancel").reason == why  # the grants (and the guard) let them
        finally:
            store.close()
    assert seen[alice] == Identity(alice, admin=False,
                                   teams=frozenset({"vision" + tag, "nlp" + tag}))
    assert seen[bob] == Identity(bob, admin=True, teams=frozenset())
    store = open_store(pg_url)  # the superuser who made the cluster
    try:
        me = store.identity()
        assert (me.user, me.admin) == ("postgres", True)
        assert not any(t.endswith(tag) for t in me.teams)  # a superuser is in no team by that
    finally:
        store.close()
    # a role that may log in but was granted nothing on the store: refused, said with its name
    # and what an admin gives it, not the server's words alone (they name a table)
    with pytest.raises(StoreDenied) as denied:
        open_store(pg_server.url(db, user=carol))
    assert str(denied.value) == "store %s: role %s may not do this: %s" % (
        postgresql_url("127.0.0.1", str(pg_server.port), db), carol,
        "permission denied for table fractui_schema (it was granted nothing on the store's "
        "tables: an admin makes it a member of a team's role, fractui_team_<team>, given the "
        "GRANTs of docs/decisions.md, \"Who the caller is on PostgreSQL\")")


def test_a_noinherit_member_of_a_granted_team_is_told_it_does_not_inherit_its_rights(
        pg_server, pg_url):
    """ann is in a team's role given the least GRANTs, but NOINHERIT: the store was refused
    saying her team "was granted nothing", which an admin checking the grants found untrue.
    She is told she does not inherit its rights, and both ways the words give work: the URL's
    SET ROLE (the guard still knows her as ann), and the ALTER ROLE said (PostgreSQL 15)."""
    tag = uuid.uuid4().hex[:6]
    ann, team = "ann_" + tag, "fractui_team_v" + tag
    db = pg_url.rsplit("/", 1)[1]
    open_store(pg_url).close()
    pg_server.admin_role()
    pg_server.sql("CREATE ROLE %s" % team)
    pg_server.sql("CREATE ROLE %s LOGIN NOINHERIT IN ROLE %s" % (ann, team))
    _least_grants(pg_server, db, team)
    with pytest.raises(StoreDenied) as denied:
        open_store(pg_server.url(db, user=ann))
    options = "-c%20role%3D" + team
    assert str(denied.value).endswith(postgres.NOT_INHERITED % (
        ann, "permission denied for table fractui_schema", team,
        'ALTER ROLE "%s" INHERIT' % ann, options)), denied.value
    assert "granted nothing" not in str(denied.value)
    store = open_store(pg_server.url(db, user=ann) + "?options=" + options)
    try:
        job = store.submit("q", "v" + tag, "as the team", ["true"], {}, ann, run_as=ann)
        assert (store.identity().user, store.get(job.id).submitted_by) == (ann, ann)
    finally:
        store.close()
    pg_server.sql(_advised(str(denied.value), "CREATEROLE runs ", "; or it acts"))
    open_store(pg_server.url(db, user=ann)).close()


def test_every_refusal_of_the_server_is_the_stores_error_naming_where(pg_server, pg_url):
    port = free_port()
    with pytest.raises(StoreUnavailable, match="store postgresql://127.0.0.1:%d/x: cannot reach "
                       "the PostgreSQL server: .*Connection refused" % port):
        open_store("postgresql://postgres@127.0.0.1:%d/x" % port)
    with pytest.raises(StoreUnavailable, match="has no such database: .*no_such_db"):
        open_store(pg_server.url("no_such_db"))
    with pytest.raises(StoreDenied, match="refuses role nobody_%s" % port):
        open_store(pg_server.url(pg_url.rsplit("/", 1)[1], user="nobody_%d" % port))
    with pytest.raises(ValueError, match="carries a password"):
        open_store("postgresql://postgres:secret@127.0.0.1:%d/x" % pg_server.port)


def test_a_pg_services_role_and_server_are_named_as_libpq_reads_them(pg_server, pg_url,
                                                                    tmp_path, monkeypatch):
    """A URL that names a service of pg_service.conf (``service=``, or PGSERVICE): libpq
    connects as the service's role to its server and database. A refusal named the OS user and
    localhost:5432 (psycopg reads no service file), and told an admin to CREATE ROLE root."""
    db, tag = pg_url.rsplit("/", 1)[1], uuid.uuid4().hex[:6]
    unknown, reader = "nobody_" + tag, "reader_" + tag
    pg_server.sql("CREATE ROLE %s LOGIN" % reader)
    open_store(pg_url).close()  # the store, made by its owner
    services = tmp_path / "pg_service.conf"
    services.write_text("".join("[%s]\nhost=127.0.0.1\nport=%d\ndbname=%s\nuser=%s\n" % (
        role, pg_server.port, db, role) for role in (unknown, reader, "postgres")))
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    monkeypatch.delenv("PGUSER", raising=False)
    where = postgresql_url("127.0.0.1", str(pg_server.port), db)
    for url, service, role in (("postgresql:///?service=%s" % unknown, None, unknown),
                               ("postgresql://", unknown, unknown),
                               ("postgresql:///?service=%s" % reader, None, reader)):
        if service is None:
            monkeypatch.delenv("PGSERVICE", raising=False)
        else:
            monkeypatch.setenv("PGSERVICE", service)
        with pytest.raises(StoreDenied) as denied:
            open_store(url)
        said = str(denied.value)
        assert said.startswith("store %s: " % where), said
        assert "role %s" % role in said and "role %s" % os_user() not in said, said
        if role == unknown:
            assert 'CREATE ROLE "%s" LOGIN' % unknown in said, said
    store = open_store("postgresql:///?service=postgres")
    try:
        assert store.where == where
    finally:
        store.close()


def test_a_pg_service_whose_server_never_answers_is_named_as_libpq_reads_it(tmp_path,
                                                                           monkeypatch):
    """psycopg keeps no connection of one its connect timeout ended (err.pgconn None), so a
    service's server that took the TCP connection and never answered was said as the guess:
    "store postgresql://localhost:5432/root: cannot reach the PostgreSQL server"."""
    with socket.create_server(("127.0.0.1", 0)) as mute:  # (its backlog takes, none answers)
        port = mute.getsockname()[1]
        services = tmp_path / "pg_service.conf"
        services.write_text("[mute]\nhost=127.0.0.1\nport=%d\ndbname=far\nuser=ann\n" % port)
        monkeypatch.setenv("PGSERVICEFILE", str(services))
        monkeypatch.delenv("PGSERVICE", raising=False)
        with pytest.raises(StoreUnavailable) as failed:
            open_store("postgresql:///?service=mute&connect_timeout=1")
    assert str(failed.value).startswith("store %s: cannot reach the PostgreSQL server: " %
                                        postgresql_url("127.0.0.1", str(port), "far")), \
        str(failed.value)


def test_stale_copies_none_only_where_the_role_is_not_granted_them(pg_server, pg_url):
    """stale_copies reads none where the role may not read the table (a reader granted the
    jobs alone): its copies are said as late copies. It read none for any StoreDenied, so a
    role refused at a reconnect had its stale copies said as late ones, and the refusal was
    said by no one; it is the caller's now, as its other reads' are."""
    tag = uuid.uuid4().hex[:6]
    reader = "reader_" + tag
    db = pg_url.rsplit("/", 1)[1]
    admin = open_store(pg_url)
    try:
        job = admin.submit("q", None, "j", ["true"], {}, "x")
        admin.place(job.id, Slot("gpu-a", (0,), None, None, 1000, 0.25), "sched", "decided")
        admin.started(job.id, "a1", None, "sched", "launched")
        admin.requeue(job.id, ("running",), "sched", "host lost", stale_on="gpu-a")
    finally:
        admin.close()
    pg_server.sql("CREATE ROLE %s LOGIN" % reader)
    pg_server.sql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO %s" % reader, db=db)
    store = open_store(pg_server.url(db, user=reader))
    try:
        assert [c.job for c in stale_copies(store)] == [job.id]
        pg_server.sql("REVOKE SELECT ON stale FROM %s" % reader, db=db)
        assert stale_copies(store) == []
        pg_server.refuse_at_reconnect(reader)
        with pytest.raises(StoreDenied, match="refuses role %s: .*not permitted to log in" %
                           reader):
            stale_copies(store)
    finally:
        store.close()


def test_a_role_that_may_not_apply_a_pending_migration_is_told_which_and_who_may(
        pg_server, monkeypatch):
    """The database is ops's (docs/cli.md's setup) and its first run made the tables, so they
    are ops's too. After an upgrade of fractui, another admin's role (a scheduler's own) and a
    team member cannot apply the new migration: each is told which and who can, not the
    server's "must be owner of table jobs"; nothing changes until ops has opened it."""
    tag = uuid.uuid4().hex[:6]
    ops, sched, ann, team = "ops_" + tag, "sched_" + tag, "ann_" + tag, "fractui_team_v" + tag
    db = "t_" + tag
    pg_server.admin_role()
    pg_server.sql("CREATE ROLE %s" % team)
    pg_server.sql("CREATE ROLE %s LOGIN IN ROLE fractui_admin" % ops)
    pg_server.sql("CREATE ROLE %s LOGIN IN ROLE fractui_admin" % sched)
    pg_server.sql("CREATE ROLE %s LOGIN IN ROLE %s" % (ann, team))
    pg_server.sql("CREATE DATABASE %s OWNER %s" % (db, ops))
    *older, (latest, _) = migrations("postgresql")
    with monkeypatch.context() as before:  # the store as the fractui before this one made it
        before.setattr(postgres, "migrations", lambda dialect: older)
        open_store(pg_server.url(db, user=ops)).close()
    _least_grants(pg_server, db, team)
    for role in (sched, ann):
        with pytest.raises(StoreDenied) as denied:
            open_store(pg_server.url(db, user=role))
        said = str(denied.value)
        assert said.startswith("store %s: this fractui applies PostgreSQL migration %04d to "
                               "it (its schema is at version %d), and role %s may not: " % (
                                   postgresql_url("127.0.0.1", str(pg_server.port), db),
                                   latest, older[-1][0], role)), said
        assert said.endswith("; a schema change needs the owner of the store's tables and "
                             "functions (role %s), a member of that role, or a superuser, who "
                             "applies it by opening the store once with this fractui (fractui "
                             "jobs --me as that role); nothing was changed" % ops), said
        assert pg_server.sql("SELECT version FROM fractui_schema", db=db) == [(older[-1][0],)]
    open_store(pg_server.url(db, user=ops)).close()  # the owner applies it
    for role in (sched, ann):
        open_store(pg_server.url(db, user=role)).close()
    assert pg_server.sql("SELECT version FROM fractui_schema", db=db) == [(latest,)]


def _least_grants(pg_server, db: str, team: str, grants: tuple[str, ...] = LEAST) -> None:
    """docs/decisions.md's GRANTs, to fractui_admin and one team's role; on a store of a
    schema before 0022, whose jobs have not every column they name, the earlier advice's."""
    for grant in grants:
        pg_server.sql(grant.format(admin="fractui_admin", teams=team), db=db)


def _owners(pg_server, db: str) -> dict[str, str]:
    """Every object of the schema public (tables, indexes, sequences, row types, functions)
    by its owner."""
    return dict(pg_server.sql(
        "SELECT 'relation ' || relname, pg_get_userbyid(relowner) FROM pg_class "
        "WHERE relnamespace = 'public'::regnamespace UNION ALL "
        "SELECT 'type ' || typname, pg_get_userbyid(typowner) FROM pg_type "
        "WHERE typnamespace = 'public'::regnamespace UNION ALL "
        "SELECT 'function ' || proname, pg_get_userbyid(proowner) FROM pg_proc "
        "WHERE pronamespace = 'public'::regnamespace", db))


# docs/cli.md's statements that give ops's store to the group, run as ops in its database
GIVEN_TO_THE_GROUP = ("GRANT CREATE ON SCHEMA public TO {group}",
                      "REASSIGN OWNED BY {ops} TO {group}",
                      "REVOKE CREATE ON SCHEMA public FROM {group}")


@dataclass
class Group:
    """A store's owning group (NOLOGIN), two admins in it and in fractui_admin, a team and its
    member outside the group, and the store's database."""

    group: str
    ops: str
    sched: str
    ann: str
    team: str
    db: str

    @classmethod
    def make(cls, pg_server, db_owner: str) -> "Group":
        tag = uuid.uuid4().hex[:6]
        made = cls("fractui_owner_" + tag, "ops_" + tag, "sched_" + tag, "ann_" + tag,
                   "fractui_team_v" + tag, "t_" + tag)
        pg_server.admin_role()
        pg_server.sql("CREATE ROLE %s NOLOGIN" % made.group)
        pg_server.sql("CREATE ROLE %s" % made.team)
        for admin in (made.ops, made.sched):
            pg_server.sql("CREATE ROLE %s LOGIN IN ROLE fractui_admin, %s" % (admin, made.group))
        pg_server.sql("CREATE ROLE %s LOGIN IN ROLE %s" % (made.ann, made.team))
        pg_server.sql("CREATE DATABASE %s OWNER %s" % (made.db, getattr(made, db_owner)))
        return made

    def made_by_ops(self, pg_server, monkeypatch, made_to: int) -> None:
        """The store as ops made it with a fractui of migration ``made_to``."""
        with monkeypatch.context() as before:
            before.setattr(postgres, "migrations",
                           lambda dialect: migrations("postgresql")[:made_to])
            open_store(pg_server.url(self.db, user=self.ops)).close()

    def given_to_the_group(self, pg_server, monkeypatch, made_to: int) -> None:
        """The store as ops made it, then given to the group by docs/cli.md's statements, run
        as ops; the earlier GRANTs (an older schema's)."""
        self.made_by_ops(pg_server, monkeypatch, made_to)
        with psycopg.connect(pg_server.url(self.db, user=self.ops), autocommit=True) as conn:
            for statement in GIVEN_TO_THE_GROUP:
                conn.execute(statement.format(ops=self.ops, group=self.group))
        _least_grants(pg_server, self.db, self.team, EARLIER)
        assert set(_owners(pg_server, self.db).values()) == {self.group}


# a later migration that changes what 0021 made
CHANGES_0021 = ("COMMENT ON FUNCTION fractui_guard_reads_output(BIGINT) IS 'whether the caller "
                "reads the job''s kept output';\n")


def test_an_admin_in_the_owning_group_migrates_as_the_group_and_the_next_admin_too(
        pg_server, monkeypatch):
    """A store made by ops, then given to a group role of the admins. An admin of the group
    applies the pending migrations as the group, so what they make (0021's function) is the
    group's, not that admin's: the next migration, which changes it, is applied by the other
    admin; a team member, outside the group, is still told who may, and cannot act as the
    group or as an owner. Before, 0021's function was sched's, and ops was refused the next
    migration: "must be owner of function …"."""
    g = Group.make(pg_server, "ops")
    known = migrations("postgresql")
    latest = known[-1][0]
    g.given_to_the_group(pg_server, monkeypatch, made_to=20)
    # the tables the group's, the database not (given one by one): said before any migration
    pg_server.sql("ALTER DATABASE %s OWNER TO %s" % (g.db, g.ops))
    with pytest.raises(StoreDenied) as denied:
        open_store(pg_server.url(g.db, user=g.sched))
    advised = 'ALTER DATABASE "%s" OWNER TO "%s"' % (g.db, g.group)
    assert str(denied.value).endswith(postgres.OWNER_MAY_NOT_CREATE % (
        g.group, g.sched, g.group, postgres.DATABASE_TO % (
            g.ops, g.group, '"%s"' % g.db, '"%s"' % g.group)))
    assert pg_server.sql("SELECT version FROM fractui_schema", db=g.db) == [(20,)]
    # as the words say: ops, the database's owner and in the group, an admin, may not without
    # CREATEDB (the words said "an admin runs"); with it, it may
    with psycopg.connect(pg_server.url(g.db, user=g.ops), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(advised)
        pg_server.sql("ALTER ROLE %s CREATEDB" % g.ops)
        conn.execute(advised)
    open_store(pg_server.url(g.db, user=g.sched)).close()  # 0021 to 0024
    owners = _owners(pg_server, g.db)
    assert owners["function fractui_guard_reads_output"] == g.group  # 0021's
    assert set(owners.values()) == {g.group}
    assert pg_server.sql("SELECT version FROM fractui_schema", db=g.db) == [(latest,)]
    monkeypatch.setattr(postgres, "migrations",
                        lambda dialect: known + [(latest + 1, CHANGES_0021)])
    with pytest.raises(StoreDenied) as denied:
        open_store(pg_server.url(g.db, user=g.ann))
    assert str(denied.value) == "store %s: %s" % (
        postgresql_url("127.0.0.1", str(pg_server.port), g.db), postgres.NOT_OWNER % (
            latest + 1, latest, g.ann, "must be owner of function fractui_guard_reads_output",
            "role " + g.group))
    store = open_store(pg_server.url(g.db, user=g.ops))  # the next admin's upgrade
    try:
        assert store.identity() == Identity(g.ops, admin=True, teams=frozenset())
        job = store.submit("q", None, "after the upgrade", ["true"], {}, g.ops)
        assert store.get(job.id).name == "after the upgrade"
    finally:
        store.close()
    assert pg_server.sql("SELECT version FROM fractui_schema", db=g.db) == [(latest + 1,)]
    with psycopg.connect(pg_server.url(g.db, user=g.ann), autocommit=True) as conn:
        for power in ("SET ROLE " + g.group, "ALTER TABLE jobs DISABLE TRIGGER USER"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(power)


def test_a_store_of_several_owners_is_said_so_and_reassign_owned_makes_it_one(
        pg_server, monkeypatch):
    """What a member's upgrade before this fractui left (0021's function sched's, the rest the
    group's): the next admin is told of both owners and that one should own them all; once
    sched gives its objects to the group (docs/cli.md's REASSIGN OWNED), ops upgrades."""
    g = Group.make(pg_server, "ops")
    known = migrations("postgresql")
    latest = known[-1][0]
    g.given_to_the_group(pg_server, monkeypatch, made_to=latest)
    pg_server.sql("ALTER FUNCTION fractui_guard_reads_output(BIGINT) OWNER TO " + g.sched,
                  db=g.db)
    monkeypatch.setattr(postgres, "migrations",
                        lambda dialect: known + [(latest + 1, CHANGES_0021)])
    with pytest.raises(StoreDenied) as denied:
        open_store(pg_server.url(g.db, user=g.ops))
    assert str(denied.value).endswith(
        "(roles %s, %s, where one should own them all: a superuser, or a role that inherits "
        "the rights of each of %s, %s (REASSIGN OWNED asks those of the old owners and the "
        "new, not membership alone), gives the others' to the first with REASSIGN "
        "OWNED BY \"%s\" TO \"%s\" in the store's "
        "database, docs/cli.md, "
        "\"A shared PostgreSQL store\"), a member of that role, or a superuser, who applies it "
        "by opening the store once with this fractui (fractui jobs --me as that role); "
        "nothing was changed" % (g.group, g.sched, g.group, g.sched, g.sched, g.group)
    ), str(denied.value)
    assert pg_server.sql("SELECT version FROM fractui_schema", db=g.db) == [(latest,)]
    # a member of both that does not inherit their rights (NOINHERIT) is refused, as the
    # words say: membership alone is not enough
    apart = "apart_" + uuid.uuid4().hex[:6]
    pg_server.sql("CREATE ROLE %s LOGIN NOINHERIT IN ROLE %s, %s" % (apart, g.group, g.sched))
    with psycopg.connect(pg_server.url(g.db, user=apart), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege,
                           match="permission denied to reassign objects"):
            conn.execute("REASSIGN OWNED BY %s TO %s" % (g.sched, g.group))
    with psycopg.connect(pg_server.url(g.db, user=g.sched), autocommit=True) as conn:
        conn.execute("REASSIGN OWNED BY %s TO %s" % (g.sched, g.group))
    open_store(pg_server.url(g.db, user=g.ops)).close()
    assert pg_server.sql("SELECT version FROM fractui_schema", db=g.db) == [(latest + 1,)]


def test_a_superusers_upgrade_makes_what_it_makes_the_stores_owners(pg_server, monkeypatch):
    """The superuser, whom the refusal names too, applies a migration as the store's owner: its
    function was the superuser's before, and no admin could change it in a later migration."""
    g = Group.make(pg_server, "ops")
    g.given_to_the_group(pg_server, monkeypatch, made_to=20)
    open_store(pg_server.url(g.db)).close()  # as postgres: 0021 to 0024
    assert set(_owners(pg_server, g.db).values()) == {g.group}
    assert pg_server.sql("SELECT version FROM fractui_schema", db=g.db) == [
        (migrations("postgresql")[-1][0],)]


TRIES = 10


def _functions_ahead_of_the_database(pg_server, monkeypatch) -> Optional["Group"]:
    """A store made by ops where pg_shdepend keeps a function of ops's ahead of its database,
    as a server does that had room ahead of the database's row (rows of dropped objects); None
    where the server put the functions after it this time."""
    filler = "filler_" + uuid.uuid4().hex[:6]
    scratch = pg_server.new_database()
    pg_server.sql("CREATE ROLE " + filler)
    pg_server.sql("DO $$ BEGIN FOR i IN 1..400 LOOP EXECUTE format('CREATE TABLE f%%s () ; "
                  "ALTER TABLE f%%s OWNER TO %s', i, i); END LOOP; END $$" % filler, db=scratch)
    g = Group.make(pg_server, "ops")  # the database's row after the filler's
    pg_server.sql("DROP DATABASE " + scratch)
    pg_server.sql("DROP ROLE " + filler)
    pg_server.sql("VACUUM pg_shdepend")  # (their room for the store's rows, ahead)
    g.made_by_ops(pg_server, monkeypatch, made_to=20)
    order = [kind for kind, in pg_server.sql(
        "SELECT classid::regclass::text FROM pg_shdepend WHERE refobjid = %s::regrole "
        "ORDER BY ctid" % _q(g.ops).replace('"', "'"))]
    return g if order.index("pg_proc") < order.index("pg_database") else None


def test_ops_gives_the_store_to_the_group_whatever_order_the_server_keeps_it_in(
        pg_server, monkeypatch):
    """REASSIGN OWNED moves what ops owns in the order pg_shdepend keeps it, which its free
    space decides: a function moved before the database needs the group to create in the
    schema public, which it may only once the database is its. docs/cli.md's GRANT comes
    first, so the statements hold in any order. Before, docs/cli.md said REASSIGN alone, and
    ops was refused "permission denied for schema public" on a server whose pg_shdepend had
    room ahead of the database's row (as this test makes it: rows of dropped objects)."""
    for _ in range(TRIES):  # (the free space map picks the page: made again till it is so)
        g = _functions_ahead_of_the_database(pg_server, monkeypatch)
        if g is not None:
            break
    else:
        pytest.fail("in %d tries, no store's functions came ahead of its database in "
                    "pg_shdepend" % TRIES)
    ops = pg_server.url(g.db, user=g.ops)
    acl = "SELECT nspacl FROM pg_namespace WHERE nspname = 'public'"
    was = pg_server.sql(acl, db=g.db)
    with psycopg.connect(ops, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege,
                           match="permission denied for schema public"):
            conn.execute(GIVEN_TO_THE_GROUP[1].format(ops=g.ops, group=g.group))  # (before)
        for statement in GIVEN_TO_THE_GROUP:
            conn.execute(statement.format(ops=g.ops, group=g.group))
    assert set(_owners(pg_server, g.db).values()) == {g.group}
    assert pg_server.sql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = "
                         "'%s'" % g.db) == [(g.group,)]
    assert pg_server.sql(acl, db=g.db) == was  # (the GRANT taken back: as the schema was)
    _least_grants(pg_server, g.db, g.team, EARLIER)
    open_store(pg_server.url(g.db, user=g.sched)).close()  # the later migrations, as the group
    assert set(_owners(pg_server, g.db).values()) == {g.group}
    with open(os.path.join(REPO, "docs", "cli.md")) as docs:
        said = docs.read()
    statements = [s.format(ops="ops", group="fractui_owner") + ";" for s in GIVEN_TO_THE_GROUP]
    assert "\n".join(statements) in said  # (the docs say these, in this order)


def test_a_store_made_by_a_member_of_the_databases_owning_group_is_the_groups(pg_server):
    """The setup for a group of admins: the database is the group's, and the first run of an
    admin in it makes the store as the group, every table, sequence, row type and function, so
    that every admin of the group can apply later migrations; a team member's submit goes
    through the guard's functions, SECURITY DEFINER ones among them, now the group's. Where
    the group may not create in the schema public (its owner is another role, as on a server
    before 15), the admin is told the statement that lets it, before anything is made."""
    g = Group.make(pg_server, "group")
    pg_server.sql("ALTER SCHEMA public OWNER TO postgres", db=g.db)
    with pytest.raises(StoreDenied) as denied:
        open_store(pg_server.url(g.db, user=g.ops))
    assert str(denied.value) == "store %s: %s" % (
        postgresql_url("127.0.0.1", str(pg_server.port), g.db),
        postgres.OWNER_MAY_NOT_CREATE % (g.group, g.ops, g.group, postgres.SCHEMA_TO % (
            "postgres", g.group, _q(g.group))))
    assert _owners(pg_server, g.db) == {}
    pg_server.sql("ALTER SCHEMA public OWNER TO pg_database_owner", db=g.db)
    open_store(pg_server.url(g.db, user=g.ops)).close()
    owners = _owners(pg_server, g.db)
    assert {"relation jobs", "relation jobs_id_seq", "type jobs",
            "function fractui_announce", "function fractui_guard_number"} <= set(owners)
    assert set(owners.values()) == {g.group}
    _least_grants(pg_server, g.db, g.team)
    open_store(pg_server.url(g.db, user=g.sched)).close()
    team = g.team[len("fractui_team_"):]
    store = open_store(pg_server.url(g.db, user=g.ann))
    try:
        job = store.submit("q", team, "by ann", ["true"], {}, g.ann, run_as=g.ann)
        assert (store.get(job.id).team, store.get(job.id).state) == (team, "pending")
    finally:
        store.close()


def _q(name: str) -> str:
    """A name as PostgreSQL reads it in a statement, by its rule, written here apart from the
    store's own."""
    return '"%s"' % name.replace('"', '""')


def _odd_url(pg_server, db: str, role: str) -> str:
    from urllib.parse import quote
    return "postgresql://%s@127.0.0.1:%d/%s" % (quote(role, safe=""), pg_server.port,
                                                quote(db, safe=""))


def _advised(said: str, start: str, end: str) -> str:
    """The statement a refusal advises, as a user copies it out of the words."""
    return said.split(start, 1)[1].split(end, 1)[0]


@dataclass
class OddGroup:
    """A group of admins owning the store, its admin, a team and its member, and the database,
    each named with capitals, a space or a double quote, as PostgreSQL allows."""

    group: str
    ops: str
    team: str
    ann: str
    db: str

    @classmethod
    def make(cls, pg_server) -> "OddGroup":
        tag = uuid.uuid4().hex[:6]
        made = cls('Owners "%s"' % tag, "Ops %s" % tag, "fractui_team_ML %s" % tag,
                   "Ann %s" % tag, "Fractui %s" % tag)
        pg_server.admin_role()
        pg_server.sql("CREATE ROLE %s NOLOGIN" % _q(made.group))
        pg_server.sql("CREATE ROLE %s" % _q(made.team))
        pg_server.sql("CREATE ROLE %s LOGIN IN ROLE fractui_admin, %s" % (_q(made.ops),
                                                                        _q(made.group)))
        pg_server.sql("CREATE ROLE %s LOGIN IN ROLE %s" % (_q(made.ann), _q(made.team)))
        pg_server.sql("CREATE DATABASE %s OWNER %s" % (_q(made.db), _q(made.group)))
        return made

    def open(self, pg_server, role: str) -> None:
        open_store(_odd_url(pg_server, self.db, role)).close()


def test_the_statements_a_refusal_advises_name_any_role_and_database_as_pasted(
        pg_server, monkeypatch):
    """Each statement the store's refusals advise, copied out and run as the words say, does
    what they say for a role and a database named with capitals, a space and a quote: bare,
    PostgreSQL folded them to lower case and failed to read the rest."""
    g = OddGroup.make(pg_server)
    known = migrations("postgresql")
    with monkeypatch.context() as before:
        before.setattr(postgres, "migrations", lambda dialect: known[:-1])
        g.open(pg_server, g.ops)
    # the database given to ops: the group may not create in public, whose owner it is
    pg_server.sql("ALTER DATABASE %s OWNER TO %s" % (_q(g.db), _q(g.ops)))
    with pytest.raises(StoreDenied) as denied:
        g.open(pg_server, g.ops)
    statement = _advised(str(denied.value), ", runs ", " in the database")
    assert statement == "ALTER DATABASE %s OWNER TO %s" % (_q(g.db), _q(g.group))
    pg_server.sql(statement)
    g.open(pg_server, g.ops)  # the last migration, as the group
    # one of the store's functions another's (a member's upgrade before this fractui)
    kim = "Kim's %s" % g.db
    pg_server.sql("CREATE ROLE %s" % _q(kim))
    pg_server.sql("ALTER FUNCTION fractui_guard_reads_output(BIGINT) OWNER TO " + _q(kim),
                  db=g.db)
    monkeypatch.setattr(postgres, "migrations",
                        lambda dialect: known + [(known[-1][0] + 1, CHANGES_0021)])
    with pytest.raises(StoreDenied) as denied:
        g.open(pg_server, g.ops)
    statement = _advised(str(denied.value), "gives the others' to the first with ",
                         " in the store's database")
    assert statement == "REASSIGN OWNED BY %s TO %s" % (_q(kim), _q(g.group))
    pg_server.sql(statement, db=g.db)
    g.open(pg_server, g.ops)
    assert pg_server.sql("SELECT version FROM fractui_schema", db=g.db) == [(known[-1][0] + 1,)]
    # a role the server does not know: the CREATE ROLE said makes it
    stranger = 'New "%s" User' % g.db
    with pytest.raises(StoreDenied) as denied:
        g.open(pg_server, stranger)
    statement = _advised(str(denied.value), "an admin makes it: ", ", and grants")
    assert statement == "CREATE ROLE %s LOGIN" % _q(stranger)
    pg_server.sql(statement)
    with pytest.raises(StoreDenied, match="granted nothing on the store's tables"):
        g.open(pg_server, stranger)  # known now, and granted nothing


def test_the_cluster_superusers_objects_are_given_one_by_one_not_by_reassign(
        pg_server, monkeypatch):
    """REASSIGN OWNED refuses the objects of the superuser that made the cluster ("required by
    the database system"): where it owns one of the store's, the refusal says what moves it."""
    g = OddGroup.make(pg_server)
    known = migrations("postgresql")
    g.open(pg_server, g.ops)
    pg_server.sql("ALTER FUNCTION fractui_guard_reads_output(BIGINT) OWNER TO postgres",
                  db=g.db)
    monkeypatch.setattr(postgres, "migrations",
                        lambda dialect: known + [(known[-1][0] + 1, CHANGES_0021)])
    with pytest.raises(StoreDenied) as denied:
        g.open(pg_server, g.ops)
    assert ("gives the others' to the first with " + postgres.BOOTSTRAP_OWNS % (
        _q(g.group), "postgres") + " in the store's database") in str(denied.value)
    assert "REASSIGN OWNED BY" not in str(denied.value)
    pg_server.sql("ALTER FUNCTION fractui_guard_reads_output(BIGINT) OWNER TO " + _q(g.group),
                  db=g.db)
    g.open(pg_server, g.ops)


def test_a_store_whose_owner_a_team_may_act_as_is_refused_saying_the_revoke(pg_server):
    """A table's owner may turn the guard's triggers and row security off, so a team's role in
    the group that owns the store made every member of that team able to change any team's
    jobs. Every open of such a store is refused, naming the roles and the REVOKE that ends it;
    run as said, the store opens and the member may not touch the guard again. Where the
    owning role is itself in a team, the REVOKE takes it out."""
    g = OddGroup.make(pg_server)
    g.open(pg_server, g.ops)
    for grant in LEAST:
        pg_server.sql(grant.format(admin="fractui_admin", teams=_q(g.team)), db=g.db)
    disable = "ALTER TABLE jobs DISABLE TRIGGER USER"
    pg_server.sql("GRANT %s TO %s" % (_q(g.group), _q(g.team)))
    with psycopg.connect(_odd_url(pg_server, g.db, g.ann)) as conn:
        conn.execute(disable)  # what the guard is against (rolled back)
        conn.rollback()
    for role in (g.ops, g.ann, "postgres"):
        with pytest.raises(StoreDamaged) as damaged:
            g.open(pg_server, role)
        assert str(damaged.value).endswith(postgres.TEAM_OWNS % (
            "roles %s, %s" % (g.ann, g.team), g.group,
            "REVOKE %s FROM %s" % (_q(g.group), _q(g.team)))), str(damaged.value)
    pg_server.sql(_advised(str(damaged.value), "a superuser runs ", " (no team's role"))
    g.open(pg_server, g.ann)
    with psycopg.connect(_odd_url(pg_server, g.db, g.ann)) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(disable)
    pg_server.sql("GRANT %s TO %s" % (_q(g.team), _q(g.group)))  # the owner in a team
    with pytest.raises(StoreDamaged) as damaged:
        g.open(pg_server, g.ops)
    assert str(damaged.value).endswith(postgres.TEAM_OWNS % (
        "role " + g.group, g.group, "REVOKE %s FROM %s" % (_q(g.team), _q(g.group))))
    pg_server.sql(_advised(str(damaged.value), "a superuser runs ", " (no team's role"))
    g.open(pg_server, g.ops)


def test_a_store_owned_by_a_teams_role_is_given_to_the_admins_whatever_else_it_is_in(
        pg_server):
    """A store whose owner is a team's role (its version table given to it by hand) that is
    in another team's role too: the statement said is the REASSIGN OWNED that ends it. Before,
    only the owner's own membership was said, whose REVOKE left the owner a team's role, and
    the next open was refused again."""
    g = OddGroup.make(pg_server)
    g.open(pg_server, g.ops)
    other = "fractui_team_other %s" % g.db
    pg_server.sql("CREATE ROLE %s" % _q(other))
    pg_server.sql("GRANT %s TO %s" % (_q(other), _q(g.team)))
    pg_server.sql("ALTER TABLE fractui_schema OWNER TO " + _q(g.team), db=g.db)
    with pytest.raises(StoreDamaged) as damaged:
        g.open(pg_server, g.ops)
    assert str(damaged.value).endswith(postgres.TEAM_OWNS % (
        "roles %s, %s" % (g.ann, g.team), g.team, 'REASSIGN OWNED BY %s TO "fractui_admin" in '
        "the store's database" % _q(g.team))), str(damaged.value)
    advised = _advised(str(damaged.value), "a superuser runs ", " in the store's database")
    with psycopg.connect(_odd_url(pg_server, g.db, g.ops), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege,
                           match="permission denied to reassign objects"):
            conn.execute(advised)  # an admin in neither the team's role: why the superuser
    pg_server.sql(advised, db=g.db)
    g.open(pg_server, g.ops)


def test_tables_changed_under_an_open_store_are_said_so_not_a_cached_plan(pg_server, pg_url):
    """A newer fractui's migration, applied while an older scheduler still runs, changes a
    table under that scheduler's statements, which psycopg has prepared by then: each pass
    failed with the server's "cached plan must not change result type" for as long as it ran.
    The store is said to have changed under it, which stops a scheduler (StoreDamaged)."""
    store = open_store(pg_url)
    try:
        for _ in range(8):  # (psycopg prepares a statement at its fifth run)
            store.jobs()
        pg_server.sql("ALTER TABLE jobs ADD COLUMN later TEXT", db=pg_url.rsplit("/", 1)[1])
        with pytest.raises(StoreDamaged) as damaged:
            store.jobs()
        assert str(damaged.value) == (
            "store %s: its tables were changed under this fractui (PostgreSQL: cached plan "
            "must not change result type), as a newer fractui's schema upgrade does: start "
            "this one again (one older than the store's schema refuses it then, saying so)"
            % postgresql_url("127.0.0.1", str(pg_server.port), pg_url.rsplit("/", 1)[1]))
    finally:
        store.close()


def test_a_database_of_a_newer_fractui_or_of_another_program_is_refused(pg_server, pg_url):
    db = pg_url.rsplit("/", 1)[1]
    open_store(pg_url).close()
    pg_server.sql("UPDATE fractui_schema SET version = 99", db=db)
    with pytest.raises(StoreDamaged, match="written by a newer fractui \\(schema version 99; "
                       "this one knows up to %d\\)" % migrations("postgresql")[-1][0]):
        open_store(pg_url)
    other = pg_server.new_database()
    pg_server.sql("CREATE TABLE accounts (id int)", db=other)
    with pytest.raises(StoreDamaged, match="holds tables fractui did not make \\(accounts\\)"):
        open_store(pg_server.url(other))
    assert pg_server.sql("SELECT to_regclass('jobs') IS NULL", db=other) == [(True,)]


@pytest.mark.parametrize("change, says", [
    ("UPDATE fractui_schema SET version = 3", "its schema version (fractui_schema) is 3, but its "
     "tables are not that version's: PostgreSQL says 'function \"fractui_guard_member\" "
     "already exists with same argument types' as it migrates it"),
    ("UPDATE fractui_schema SET version = -1", "its schema version (fractui_schema) is -1"),
    ("DELETE FROM fractui_schema", "its schema version (fractui_schema) is none"),
])
def test_a_database_whose_schema_version_was_set_back_is_said_damaged_and_kept(
        pg_server, pg_url, change, says):
    """A version set back by hand or a dump half restored: the migrations it seemed to lack
    failed on what was there, said in the server's words alone ("relation "meta" already
    exists"), or a version below 0 was taken for a store not made yet."""
    db = pg_url.rsplit("/", 1)[1]
    open_store(pg_url).close()
    pg_server.sql(change, db=db)
    kept = pg_server.sql("SELECT version FROM fractui_schema", db=db)
    with pytest.raises(StoreDamaged) as damaged:
        open_store(pg_url)
    assert str(damaged.value).endswith(": holds what fractui never wrote: %s; restore the "
                                       "database from a backup" % says), str(damaged.value)
    assert pg_server.sql("SELECT version FROM fractui_schema", db=db) == kept


@pytest.mark.parametrize("change, says", [
    ("DELETE FROM meta WHERE key = 'uid'", "it has no store id (meta.uid)"),
    ("UPDATE meta SET value = 'x y' WHERE key = 'uid'",
     "its store id (meta.uid) is 'x y', not the 8 hex digits fractui writes"),
])
def test_a_database_whose_store_id_is_lost_is_refused_by_a_read_too(pg_server, pg_url, change,
                                                                     says):
    """An up-to-date store opens by reads alone; the id it reads there is checked as the
    opening write checks it, never taken as it is (every job's key on the hosts is made of
    it), nor replaced."""
    db = pg_url.rsplit("/", 1)[1]
    open_store(pg_url).close()
    pg_server.sql(change, db=db)
    kept = pg_server.sql("SELECT key, value FROM meta ORDER BY key", db=db)
    with pytest.raises(StoreDamaged, match=re.escape(says)):
        open_store(pg_url)
    assert pg_server.sql("SELECT key, value FROM meta ORDER BY key", db=db) == kept


def test_a_database_not_in_utf8_is_refused_and_a_utf8_one_is_spoken_in_utf8(
        pg_server, pg_url, monkeypatch, tmp_path):
    """Names, commands and images are any Unicode, and the guard's checks read characters: a
    database in another encoding would fail mid-write or let the guard read bytes. It is
    refused before anything is written, through the CLI too; a UTF8 one is spoken to in UTF8
    whatever the client's environment says."""
    for encoding in ("SQL_ASCII", "LATIN1"):
        other = "t_" + uuid.uuid4().hex[:12]
        pg_server.sql("CREATE DATABASE %s ENCODING '%s' LC_COLLATE 'C' LC_CTYPE 'C' "
                      "TEMPLATE template0" % (other, encoding))
        with pytest.raises(StoreDamaged, match="store postgresql://127.0.0.1:%d/%s: the "
                           "database is encoded %s; fractui needs a UTF8 one" % (
                               pg_server.port, other, encoding)):
            open_store(pg_server.url(other))
        assert pg_server.sql("SELECT to_regclass('jobs') IS NULL", db=other) == [(True,)]
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n' % pg_server.url(other))
    done = subprocess.run([sys.executable, "-m", "fractui", "--config", str(config), "jobs"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done
    assert "the database is encoded LATIN1; fractui needs a UTF8 one" in done.stderr
    monkeypatch.setenv("PGCLIENTENCODING", "LATIN1")
    store = open_store(pg_url)
    try:
        job = submit(store, "half", None, "训练 ✓", ["echo", "모델"], {"gpu": 0.5}, Asker("here"))
        assert (store.get(job.id).name, store.get(job.id).argv) == ("训练 ✓", ("echo", "모델"))
    finally:
        store.close()


def test_the_databases_and_roles_defaults_leave_the_store_as_it_is(pg_server, pg_url):
    """Settings an admin may give a database or a role (ALTER ... SET) do not change which
    store fractui uses, what it reads back, or the lease's fence: a search_path that reaches
    another program's jobs table or a schema of the role's own name first, repeatable read by
    default, a statement_timeout shorter than a write's wait for the lock, a negative
    extra_float_digits, and an idle_session_timeout shorter than the feed's idle waits."""
    db = pg_url.rsplit("/", 1)[1]
    first = open_store(pg_url)
    job = first.submit("q", None, "first", ["x"], {}, "alice")
    uid = first.uid
    first.close()
    for statement in ("CREATE SCHEMA app", "CREATE TABLE app.jobs (id int, title text)",
                      "INSERT INTO app.jobs VALUES (1, 'not fractui''s')",
                      "CREATE TABLE app.meta (key text, value text)",
                      "CREATE SCHEMA postgres AUTHORIZATION postgres"):
        pg_server.sql(statement, db=db)
    for name, value in (("search_path", 'app, "$user"'),
                        ("default_transaction_isolation", "repeatable read"),
                        ("statement_timeout", "200ms"), ("extra_float_digits", "-15"),
                        ("idle_session_timeout", "300ms")):
        pg_server.sql("ALTER DATABASE %s SET %s = %s" % (
            db, name, value if name == "search_path" else "'%s'" % value))
    store, other = open_store(pg_url), open_store(pg_url)
    blocker = psycopg.connect(pg_url, autocommit=True, options="-c idle_session_timeout=0")
    feed = store.feed()
    try:
        assert feed.wait(1.0) == frozenset()  # idle past the timeout: nothing changed, and
        assert feed.wait(0.1) == frozenset()  # its connection was not ended meanwhile
        assert store.uid == uid and [j.name for j in store.jobs()] == ["first"]
        assert store.get(job.id).name == "first"
        assert pg_server.sql("SELECT count(*) FROM app.meta", db=db) == [(0,)]
        second = store.submit("q", None, "second", ["x"], {}, "alice")
        assert second.id == job.id + 1 and abs(second.submitted_at - time.time()) < 5
        assert second.submitted_at != round(second.submitted_at)  # not rounded on the way back
        old = store.acquire_lease("s1", 0)  # lapses at once
        assert other.acquire_lease("s2", 600) == old + 1
        assert other.lease_holder()[0] == "s2"
        # a write of the old epoch that waited for the lock while the lease changed hands:
        # its fence must see the change (a snapshot from before the wait did not)
        blocker.execute("BEGIN")
        blocker.execute("SELECT public.fractui_write_turn()")
        blocker.execute("UPDATE public.lease SET holder = 's3', epoch = epoch + 1, expires_at = "
                        "extract(epoch FROM clock_timestamp()) + 600")
        outcome: list = []
        waiting = threading.Thread(target=lambda: outcome.append(_try(
            lambda: other.stop_sent("h", "k", epoch=old + 1))))
        waiting.start()
        for _ in range(200):  # until the write waits for the lock (past the 200 ms timeout)
            if pg_server.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND "
                             "NOT granted AND relation = 'public.write_lock'::regclass",
                             db=db) == [(1,)]:
                break
            time.sleep(0.05)
        time.sleep(0.5)
        blocker.execute("COMMIT")
        waiting.join(60)
        assert isinstance(outcome[0], LeaseLost), outcome
    finally:
        feed.close()
        blocker.close()
        store.close()
        other.close()


def _try(call):
    try:
        return call()
    except Exception as err:  # the outcome is what the test looks at
        return err


def test_a_verb_on_an_unreachable_server_exits_1_with_where_and_no_traceback(tmp_path):
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "postgresql://postgres@127.0.0.1:%d/fleet"\n'
                      '[[queues]]\nname = "half"\ngpu = 0.5\n' % port)
    for verb in (["jobs"], ["audit"], ["cancel", "1"]):
        done = subprocess.run([sys.executable, "-m", "fractui", "--config", str(config), *verb],
                              capture_output=True, text=True, cwd=REPO, timeout=60)
        assert done.returncode == 1, (verb, done)
        assert "Traceback" not in done.stderr
        assert done.stderr.startswith("fractui: store postgresql://127.0.0.1:%d/fleet: cannot "
                                      "reach the PostgreSQL server" % port), done.stderr
    config.write_text('[store]\nurl = "postgresql://postgres:hunter2@127.0.0.1:%d/fleet"\n'
                      % port)
    done = subprocess.run([sys.executable, "-m", "fractui", "--config", str(config), "jobs"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 2 and "hunter2" not in done.stderr
    assert done.stderr.startswith("fractui: %s:2: store.url carries a password" % config), \
        done.stderr


def test_a_socket_stores_address_as_said_is_a_url_that_names_it_again(pg_server, tmp_path):
    """A store reached through the server's Unix socket (its directory as the URL's host):
    the address an error names it by is a URL libpq reads back to the same socket, port and
    database, so it can be pasted as [store] url and opens that store (not a socket path
    glued to a port, which read as host '' and database '/tmp/...:5432/db')."""
    name = "t_" + uuid.uuid4().hex[:12]
    config = tmp_path / "config.toml"

    def jobs(url: str) -> subprocess.CompletedProcess:
        config.write_text('[store]\nurl = "%s"\n' % url)
        return subprocess.run([sys.executable, "-m", "fractui", "--config", str(config),
                               "jobs"], capture_output=True, text=True, cwd=REPO, timeout=60)

    missing = jobs("postgresql:///%s?host=%s&port=%d&user=postgres" % (
        name, pg_server.sockets, pg_server.port))
    assert missing.returncode == 1, missing
    where = missing.stderr.split("fractui: store ", 1)[1].split(": has no such database", 1)[0]
    assert conninfo_to_dict(where) == {"host": pg_server.sockets, "port": str(pg_server.port),
                                       "dbname": name}, where
    pg_server.sql("CREATE DATABASE %s" % name)
    open_store(where + "?user=postgres").close()  # (made: jobs alone never makes one)
    again = jobs(where + "?user=postgres")
    assert (again.returncode, again.stderr) == (0, ""), again
    assert again.stdout == "no active jobs (--all lists ended ones too)\n"


@pytest.mark.parametrize("host, port, parsed_port", [
    ("db.example", "5432", "5432"), ("10.0.0.7", "6432", "6432"), ("::1", "5432", "5432"),
    ("/run/post gres", "5433", "5433"), ("@abstract", "5432", "5432"),
    ("a,b", "5432,5433", "5432,5433"), ("a,/run/pg", "5432", "5432,5432")])
def test_a_stores_address_reads_back_as_the_same_server_and_database(host, port, parsed_port):
    """Whatever libpq was given (an IPv6 address, a socket directory, an abstract socket,
    several hosts with one port or one each): the address said reads back to it."""
    where = postgresql_url(host, port, "fleet/é ?x")
    assert conninfo_to_dict(where) == {"host": host, "port": parsed_port,
                                       "dbname": "fleet/é ?x"}, where
    assert url_problem(where) is None


def test_a_session_of_ours_paused_inside_a_write_lets_the_lock_go(pg_url, monkeypatch):
    """A client of the store paused mid-write (its transaction open, the write lock held, no
    statement coming) is ended by the server once it has idled IDLE_IN_WRITE_S: the other
    writers go on, and the paused one's write is never made."""
    monkeypatch.setattr(postgres, "IDLE_IN_WRITE_S", 0.5)
    monkeypatch.setattr(postgres, "LOCK_TIMEOUT_S", 20.0)
    store = open_store(pg_url)
    paused = postgres.PostgresDialect(pg_url).connect()  # as the store's own connections are
    try:
        paused.execute("BEGIN")
        paused.execute("SELECT public.fractui_write_turn()")
        paused.execute("INSERT INTO meta (key, value) VALUES ('paused', 'never')")
        # ... and nothing more from it, as a SIGSTOPped process sends nothing
        assert store.submit("q", None, "goes on", ["true"], {}, "alice").id == 1
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
            paused.execute("COMMIT")  # the server ended it
        assert store.jobs()[0].name == "goes on"
        reader = postgres.PostgresDialect(pg_url).connect()
        assert reader.execute("SELECT count(*) AS n FROM meta WHERE key = 'paused'"
                              ).fetchone()["n"] == 0
        reader.close()
    finally:
        paused.close()
        store.close()


def test_a_session_an_admin_ends_is_said_so_and_tried_once_more(pg_server, pg_url):
    """pg_terminate_backend of the store's connection: the call is made once more on a new one
    where nothing was recorded (here, as it waited for the write lock), so one end goes
    unseen; ended again on the new one, it is said as what it is (the server ended this
    connection: an admin, or a shutdown), not as a server fractui cannot reach, and nothing
    was recorded. The store's next call works."""
    store = open_store(pg_url)
    holder = pg_server.connect(pg_url.rsplit("/", 1)[1])
    ended: list = []
    done = threading.Event()

    def terminator() -> None:  # ends each session of the store that waits for the lock
        while not done.is_set() and len(ended) < 2:
            for pid, in pg_server.sql(
                    "SELECT pid FROM pg_locks WHERE locktype = 'relation' AND NOT granted AND "
                    "relation = 'public.write_lock'::regclass", db=pg_url.rsplit("/", 1)[1]):
                if pid not in ended:  # (one ended may still show, waiting, for a moment)
                    pg_server.sql("SELECT pg_terminate_backend(%d)" % pid)
                    ended.append(pid)
            time.sleep(0.05)

    try:
        assert store.jobs() == []  # (its connection is made: the first try is not a fresh one's)
        holder.execute("BEGIN")
        holder.execute("SELECT public.fractui_write_turn()")
        ending = threading.Thread(target=terminator)
        ending.start()
        with pytest.raises(StoreUnavailable) as err:
            store.submit("q", None, "ended", ["true"], {}, "alice")
        done.set()
        ending.join()
        assert len(ended) == 2 and ended[0] != ended[1], ended  # once more, on a new one
        said = str(err.value)
        assert "the PostgreSQL server ended this connection (an admin's pg_terminate_backend, " \
            "or the server shutting down): terminating connection due to administrator " \
            "command" in said and "cannot reach" not in said, said
        holder.execute("ROLLBACK")
        assert store.jobs() == []
        assert store.submit("q", None, "then", ["true"], {}, "alice").name == "then"
    finally:
        done.set()
        holder.close()
        store.close()


def test_a_write_waits_for_the_write_lock_only_so_long(pg_server, pg_url, monkeypatch):
    """Another client holding the store's write lock (a transaction left open) keeps a write
    waiting at most the lock timeout: then StoreBusy naming the role and session that hold it
    and how an admin ends it, nothing written; reads go on."""
    monkeypatch.setattr(postgres, "LOCK_TIMEOUT_S", 0.5)
    store = open_store(pg_url)
    holder = pg_server.connect(pg_url.rsplit("/", 1)[1])
    try:
        holder.execute("BEGIN")
        holder.execute("SELECT public.fractui_write_turn()")
        with pytest.raises(StoreBusy) as busy:
            store.submit("q", None, "blocked", ["true"], {}, "alice")
        pid = holder.info.backend_pid
        assert str(busy.value).startswith(
            "store %s: no write for 0.5 s: the store's write lock is held by role %s (pid %d, "
            % (store.where, holder.info.user, pid)), str(busy.value)
        assert str(busy.value).endswith("an admin ends it with SELECT pg_terminate_backend(%d)"
                                        "; try again" % pid), str(busy.value)
        assert store.jobs() == []
        holder.execute("ROLLBACK")
        assert store.submit("q", None, "then", ["true"], {}, "alice").id == 1
    finally:
        holder.close()
        store.close()


class CommitCutter:
    """A loopback TCP relay to the server that, once armed, passes the next COMMIT on and, when
    the server answers that it committed, drops the client's connection instead of passing
    that answer: a write that landed, whose acknowledgement was lost. ``on_cut`` runs once the
    server has committed and before the client's connection is dropped (what another client
    does meanwhile)."""

    def __init__(self, port: int, on_cut: Callable[[], None] = lambda: None):
        self.target = port
        self.on_cut = on_cut
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.cut = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            committing = threading.Event()  # this connection's armed COMMIT is on its way
            threading.Thread(target=self._pipe, args=(client, server, committing, True),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, committing, False),
                             daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, committing: threading.Event,
              upstream: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if upstream and self.armed.is_set() and b"COMMIT\x00" in data:
                    self.armed.clear()
                    committing.set()  # before it is sent: the answer comes after
                elif not upstream and committing.is_set() and b"COMMIT\x00" in data:
                    self.on_cut()
                    self.cut.set()  # the server's CommandComplete: committed, never told
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.listener.close()


def test_a_submit_whose_commit_answer_was_lost_is_found_by_its_key_not_made_twice(pg_server):
    """The server committed, the answer never came: a keyed submit (fractui submit keys every
    one) asks again on a new connection and finds the job it made; one without a key can only
    say that whether it was recorded is not known."""
    db = pg_server.new_database()
    cutter = CommitCutter(pg_server.port)
    store = open_store(pg_server.url(db).replace(":%d/" % pg_server.port, ":%d/" % cutter.port))
    try:
        cutter.armed.set()
        job = store.submit("q", None, "keyed", ["true"], {}, "alice", key="5:alice:k1")
        assert cutter.cut.is_set()  # its first commit's answer was lost
        cutter.cut.clear()
        cutter.armed.set()
        with pytest.raises(StoreUnavailable, match="whether it was recorded is not known"):
            store.submit("q", None, "bare", ["true"], {}, "alice")
        assert cutter.cut.is_set()
        assert [(j.id, j.name) for j in store.jobs()] == [(job.id, "keyed"), (job.id + 1, "bare")]
        assert [e.job for e in store.audit_log() if e.action == "submit"] == [job.id, job.id + 1]
    finally:
        store.close()
        cutter.close()


def test_a_requeue_whose_commit_answer_was_lost_is_asked_again_and_answered_as_done(pg_server):
    """The server committed the requeue, the answer never came: the store asks again on a new
    connection at once and answers as done, not 'whether it was recorded is not known' —
    both when the job is still stopping, and when the lease holder carried the requeue out
    meanwhile (the job back in its queue since this user's own ask, not refused as a job
    with nothing to requeue). One requeue in the audit each time."""
    db = pg_server.new_database()
    holder = open_store(pg_server.url(db))
    carried_out: list = []

    def meanwhile() -> None:
        for job_id in carried_out:
            holder.requeue(job_id, ("stopping",), "sched", "requeued")

    cutter = CommitCutter(pg_server.port, meanwhile)
    store = open_store(pg_server.url(db).replace(":%d/" % pg_server.port, ":%d/" % cutter.port))
    try:
        for requeued_meanwhile in (False, True):
            job = holder.submit("q", None, "j", ["true"], {}, "alice")
            holder.place(job.id, Slot("h", (0,), memory_mib=512), "sched", "decided")
            holder.started(job.id, "a%d" % job.id, None, "sched", "launched")
            carried_out[:] = [job.id] if requeued_meanwhile else []
            cutter.cut.clear()
            cutter.armed.set()
            answer = ask_stop(store, store.get(job.id), "requeue", Asker("here"))
            assert cutter.cut.is_set()  # its commit's answer was lost
            assert (answer.state, answer.attempt) == (("pending", 1) if requeued_meanwhile else
                                                     ("stopping", 0))
            assert answer == holder.get(job.id)
            assert [e.action for e in holder.audit_log(job.id)] == [
                "submit", "decide", "launch", "requeue"] + ["requeued"] * requeued_meanwhile
    finally:
        store.close()
        holder.close()
        cutter.close()


def test_a_verb_that_must_not_make_a_store_makes_none_in_an_empty_database(pg_server):
    """make=False (jobs --me, report, audit, logs, cancel...) on a database that holds no
    store: said, as on an SQLite path where nothing is, and nothing made in it — the reader
    made fractui's tables there (in a mistyped url's database, postgres say) whenever its
    role may create them, and became the first to open that store. A store made, it opens."""
    db = pg_server.new_database()
    with pytest.raises(StoreUnavailable) as none:
        open_store(pg_server.url(db), make=False)
    where = postgresql_url("127.0.0.1", str(pg_server.port), db)
    assert str(none.value) == "store %s: %s" % (where, NO_STORE)
    assert pg_server.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
                         db) == []
    open_store(pg_server.url(db)).close()
    open_store(pg_server.url(db), make=False).close()


def test_a_store_made_between_an_opens_two_reads_is_opened_not_called_anothers(pg_server,
                                                                              monkeypatch):
    """An open that reads alone (a verb that makes no store, or any verb's first look) while
    another fractui makes the store: that one's commit, after the reader found no version
    table and before it listed the tables, was said "holds tables fractui did not make ...
    not a fractui store" — its tables and that table are committed together."""
    url = pg_server.url(pg_server.new_database())
    committing, go, made = threading.Event(), threading.Event(), threading.Event()
    commit = postgres.PostgresDialect.commit

    def held_commit(self, db):  # the maker's, held until the reader is between its reads
        committing.set()
        assert go.wait(30)
        commit(self, db)
        made.set()

    execute = psycopg.Connection.execute
    reading = threading.current_thread()

    def read(self, query, *args, **kwargs):
        if threading.current_thread() is reading and "FROM pg_tables" in str(query) \
                and committing.is_set() and not made.is_set():
            go.set()
            assert made.wait(30)
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(postgres.PostgresDialect, "commit", held_commit)
    monkeypatch.setattr(psycopg.Connection, "execute", read)
    maker: dict = {}
    thread = threading.Thread(target=lambda: maker.update(store=open_store(url)))
    thread.start()
    try:
        assert committing.wait(30)
        reader = open_store(url, make=False)
    finally:
        go.set()
        thread.join(60)
    assert made.is_set() and reader.uid == maker["store"].uid
    reader.close()
    maker["store"].close()


def test_a_member_who_submits_before_the_admin_made_the_store_is_told_so(pg_server):
    """A team member's submit to a database with no store yet, where their role may not create
    tables (the docs' setup: the database is the admin's): told there is no store yet and who
    makes it, not the server's bare "permission denied for schema public"; nothing made. Once
    the owner has made it, the same role's open goes through."""
    tag = uuid.uuid4().hex[:6]
    db = pg_server.new_database()
    pg_server.sql("CREATE ROLE ann_%s LOGIN" % tag)
    with pytest.raises(StoreDenied) as denied:
        open_store(pg_server.url(db, user="ann_" + tag))
    where = postgresql_url("127.0.0.1", str(pg_server.port), db)
    assert str(denied.value) == "store %s: %s" % (where, postgres.NO_STORE_TO_MAKE % (
        "ann_" + tag))
    assert str(denied.value).startswith("store %s: there is no store here yet, and role "
                                        "ann_%s may not make one (" % (where, tag))
    assert pg_server.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
                         db) == []
    open_store(pg_server.url(db)).close()
    pg_server.sql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO ann_%s" % tag, db)
    open_store(pg_server.url(db, user="ann_" + tag), make=False).close()


def test_every_intent_whose_commit_answer_was_lost_answers_as_the_first_time(pg_server):
    """The server committed each user's ask, the answer never came: the store asks again on a
    new connection and answers as the first ask would have — a pending job's cancel, a
    placement by hand, an admin's move, a drain, an uncordon, a log asked for — never 'whether
    it was recorded is not known' (nor, asked again, 'nothing to uncordon', 'only a pending
    job can be placed' or 'only a placed or running job is moved'). Each is in the audit
    once."""
    db = pg_server.new_database()
    holder = open_store(pg_server.url(db))
    cutter = CommitCutter(pg_server.port)
    store = open_store(pg_server.url(db).replace(":%d/" % pg_server.port, ":%d/" % cutter.port))
    asker, slot = Asker("here"), Slot("h", (0,), memory_mib=512)

    def lost(ask: Callable[[], object]) -> object:
        cutter.cut.clear()
        cutter.armed.set()
        answer = ask()
        assert cutter.cut.is_set()  # its commit's answer was lost
        return answer

    try:
        waiting = holder.submit("q", None, "w", ["true"], {}, "alice")
        cancelled = lost(lambda: ask_stop(store, store.get(waiting.id), "cancel", asker))
        assert cancelled == holder.get(waiting.id) and cancelled.state == "cancelled"
        job = holder.submit("q", None, "p", ["true"], {}, "alice")
        placed = lost(lambda: place_by_hand(store, store.get(job.id), slot, asker))
        assert placed == holder.get(job.id)
        assert (placed.state, placed.slot, placed.manual) == ("placed", slot, True)
        there = Slot("h", (1,), memory_mib=512)
        moving = lost(lambda: move_by_hand(store, store.get(job.id), there, asker))
        assert moving == holder.get(job.id)
        assert (moving.state, moving.stop_intent, moving.move_to) == ("stopping", "move", there)
        drained = lost(lambda: cordon(store, "h", 0, "drain", asker))
        assert holder.cordons() == [drained] and drained.mode == "drain"
        assert lost(lambda: uncordon(store, "h", 0, asker)) == [drained]
        assert holder.cordons() == []
        lost(lambda: store.ask_log(job.id, "alice@here"))
        assert holder.log_requests() == [job.id]
        assert sorted(e.action for e in holder.audit_log() if e.action not in ("submit",)
                      ) == ["cancel", "drain", "move", "place", "uncordon"]
    finally:
        store.close()
        holder.close()
        cutter.close()


def test_a_stop_made_again_after_a_lost_answer_never_stops_a_later_attempt(pg_server):
    """The requeue landed and its answer was lost; before the store asks again the job was put
    back, placed and launched again (a later attempt, running as the ask expects): the second
    try does not stop that attempt, it says the job moved on."""
    db = pg_server.new_database()
    holder = open_store(pg_server.url(db))
    slot = Slot("h", (0,), memory_mib=512)
    job = holder.submit("q", None, "j", ["true"], {}, "alice")

    def run_again() -> None:
        holder.requeue(job.id, ("stopping",), "sched", "requeued")
        holder.place(job.id, slot, "sched", "decided")
        holder.started(job.id, "a2", None, "sched", "launched")

    cutter = CommitCutter(pg_server.port, run_again)
    store = open_store(pg_server.url(db).replace(":%d/" % pg_server.port, ":%d/" % cutter.port))
    try:
        holder.place(job.id, slot, "sched", "decided")
        holder.started(job.id, "a1", None, "sched", "launched")
        cutter.armed.set()
        with pytest.raises(StateConflict, match="job %d is attempt 1 now, not 0" % job.id):
            store.stopping(job.id, ("running",), "requeue", "alice@here", "requeued by alice")
        assert cutter.cut.is_set()
        again = holder.get(job.id)
        assert (again.state, again.attempt) == ("running", 1)
        assert [e.action for e in holder.audit_log(job.id)].count("requeue") == 1
    finally:
        store.close()
        holder.close()
        cutter.close()


def test_a_row_held_by_a_session_left_open_stalls_only_what_needs_it_and_names_it(
        pg_server, pg_url, monkeypatch):
    """A psql session left open inside a transaction that locked job 1's row (a member's
    cancel by hand, never committed): a write to job 1 waits only ROW_WAIT_S, holding the
    store's write lock no longer, then is refused naming that session and how an admin ends
    it; another client's submit meanwhile, waiting its turn for the write lock less long than
    a write waits for it, goes through."""
    monkeypatch.setattr(postgres, "ROW_WAIT_S", 0.5)
    monkeypatch.setattr(postgres, "LOCK_TIMEOUT_S", 20.0)
    writer = open_store(pg_url)  # (its sessions wait 20 s for a lock...)
    monkeypatch.setattr(postgres, "LOCK_TIMEOUT_S", 5.0)
    submitter = open_store(pg_url)  # (... this one's 5 s)
    psql = pg_server.connect(pg_url.rsplit("/", 1)[1])
    try:
        job = writer.submit("q", None, "held", ["true"], {}, "alice")
        psql.execute("BEGIN")
        psql.execute("SELECT * FROM jobs WHERE id = %s FOR UPDATE", (job.id,))
        refused: list = []

        def write() -> None:
            try:
                writer.waiting(job.id, "no room")
            except Exception as err:  # (said below)
                refused.append(err)

        thread = threading.Thread(target=write)
        thread.start()
        pid = writer._db.info.backend_pid
        seen = pg_server.connect(pg_url.rsplit("/", 1)[1])
        try:
            while thread.is_alive() and not seen.execute(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                    (pid,)).fetchone()[0]:
                time.sleep(0.01)
        finally:
            seen.close()
        other = submitter.submit("q", None, "goes on", ["true"], {}, "bob")
        thread.join(30)
        assert submitter.get(other.id).name == "goes on"
        assert len(refused) == 1 and isinstance(refused[0], RowsLocked), refused
        words = str(refused[0])
        assert words.startswith("store %s: what this needs of the store is locked by a session "
                                "outside fractui's turns (" % writer.where), words
        holder = psql.info.backend_pid
        assert "held by role postgres (pid %d, " % holder in words, words
        assert words.endswith("SELECT pg_terminate_backend(%d); try again" % holder), words
        assert writer.get(job.id).reason is None  # nothing written
        psql.execute("ROLLBACK")
        assert writer.waiting(job.id, "no room").reason == "no room"
    finally:
        psql.close()
        writer.close()
        submitter.close()


def test_a_mig_change_made_whose_audit_entry_cannot_be_written_is_said_made(pg_server, pg_url):
    """The agent made the change, then the store went away before its audit entry: the error
    says the change was made all the same (and what it was), so no one makes it a second time
    believing it failed."""
    store = open_store(pg_url)
    change = MigChange("gpu-a", 0, DESTROY, "destroy idle 1g.10gb at slot 6", None,
                       "mig.destroy", {"gpu": 0, "instance": "MIG-x"})

    def agent(method, params):  # the agent's answer, and the store's server gone meanwhile
        pg_server.stop()
        return {"destroyed": {"profile": "1g.10gb", "start": 6, "uuid": "MIG-x"}}
    try:
        with pytest.raises(StoreUnavailable) as err:
            carry_out(store, Asker("here"), agent, change)
        assert str(err.value).endswith("; the change was made all the same, and is not in the "
                                       "audit: destroyed 1g.10gb at slot 6 (MIG-x) on gpu-a "
                                       "gpu 0"), err.value
    finally:
        pg_server.start()
        store.close()


def test_a_session_ended_for_idling_in_its_write_is_said_not_recorded_not_unknown(
        pg_server, monkeypatch):
    """A write that idles inside its transaction past the server's limit (its process frozen
    or starved: IDLE_IN_WRITE_S, shortened here) finds its session ended at its COMMIT: the
    server ended it before reading the COMMIT (25P03), so nothing was recorded, and it is
    never said as "whether it was recorded is not known". Made again on a new session, as a
    write whose connection was lost before its commit: recorded once."""
    monkeypatch.setattr(postgres, "IDLE_IN_WRITE_S", 1.0)  # (read as each session opens)
    db = pg_server.new_database()
    store = open_store(pg_server.url(db))
    tries = []

    def work(db):  # one row, then a pause past the limit, its first time only
        store._run(db, "INSERT INTO stops_sent (host, key, sent_at) VALUES ('h', ?, 0)",
                   (str(len(tries)),))
        tries.append(1)
        if len(tries) == 1:
            time.sleep(2.5)
    try:
        store._write(work)
        assert pg_server.sql("SELECT key FROM stops_sent", db=db) == [("1",)]
    finally:
        store.close()


def _submit_waiting(config: Path) -> Tuple[subprocess.Popen, int]:
    """``fractui submit --wait`` of a job no scheduler places, once it waits: the process and
    the job's number."""
    waiting = subprocess.Popen([sys.executable, "-m", "fractui", "--config", str(config),
                                "submit", "--wait", "--queue", "q", "--", "true"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=REPO, stdin=subprocess.DEVNULL)
    try:
        number = int(waiting.stdout.readline().split()[0])  # queued: now it waits
        while "no scheduler is running" not in waiting.stderr.readline():
            pass  # (the notes of a queue no scheduler has looked at yet)
    except BaseException:
        waiting.kill()
        waiting.communicate()
        raise
    return waiting, number


def test_submit_wait_losing_its_store_waits_for_it_and_goes_on(pg_server, pg_url, tmp_path):
    """The store's server goes away while ``submit --wait`` waits: it says so in the store's
    words, that the job goes on, and waits for the store; back, it says so and waits for the
    job's end as before (a server restarting is no end of the wait, nor the job's)."""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[[queues]]\nname = "q"\ngpu = 0.5\n' % pg_url)
    waiting, number = _submit_waiting(config)
    try:
        pg_server.stop()
        lost = waiting.stderr.readline()
    finally:
        pg_server.start()
    try:
        assert lost.endswith("; waiting for the store to come back (job %d goes on meanwhile)"
                             "\n" % number), lost
        # the server gone, in the words of when the wait found it so: a poll on the open
        # connection as the server shut down is told it ended it (57P01, said so since the
        # session's own end by an admin was told apart), a reconnect while it shuts down is
        # told it takes none now (its ping said 57P03), one after that cannot reach it
        assert "cannot reach the PostgreSQL server" in lost or "the PostgreSQL server ended " \
            "this connection (an admin's pg_terminate_backend, or the server shutting down)" \
            in lost or postgres.NOT_NOW.split("%s")[0] in lost, lost
        assert waiting.stderr.readline() == "fractui: the store is back; waiting for job %d " \
            "to end\n" % number
        store = open_store(pg_url)
        try:
            store.ended(number, ("pending",), "cancelled", "by the test", "test", "cancel",
                        "cancel")
        finally:
            store.close()
        out, err = waiting.communicate(timeout=120)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert (waiting.returncode, out) == (1, ""), err
    assert err == "fractui: job %d ended: by the test\n" % number, err


def test_submit_wait_whose_database_is_dropped_stops_waiting_and_says_so(pg_server, tmp_path):
    """The store's database dropped while ``submit --wait`` waits: not a server restarting, so
    not waited for (it would be for ever): exit 1, the store's words, then that it stopped."""
    db = pg_server.new_database()
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[[queues]]\nname = "q"\ngpu = 0.5\n'
                      % pg_server.url(db))
    waiting, number = _submit_waiting(config)
    with reaped(waiting):
        pg_server.sql("DROP DATABASE %s WITH (FORCE)" % db)
        out, err = waiting.communicate(timeout=120)
    assert (waiting.returncode, out) == (1, ""), err
    assert "has no such database" in err and "Traceback" not in err, err
    assert err.endswith("; stopped waiting: job %d goes on (fractui jobs --me shows it, fractui "
                        "cancel %d cancels it)\n" % (number, number)), err


def test_an_object_in_use_is_said_as_the_servers_refusal_not_as_a_lost_server(pg_server):
    """SQLSTATE class 55 (an object in use, not in the state asked: psycopg's
    OperationalError, as a lost connection is) comes from a server that was reached: its words,
    never "cannot reach the PostgreSQL server"."""
    store = open_store(pg_server.url(pg_server.new_database()))
    try:
        said = str(store.dialect.translate(psycopg.errors.ObjectInUse(
            'cannot ALTER TABLE "jobs" because it has pending trigger events')))
        assert "cannot reach" not in said, said
        assert said.endswith("the PostgreSQL server cannot do this now: cannot ALTER TABLE "
                             '"jobs" because it has pending trigger events; nothing was '
                             "recorded"), said
    finally:
        store.close()


def test_a_connection_whose_session_statements_fail_is_closed(pg_server):
    """The statements that set a new session up (its settings, the durable commit) refused
    after the connection was made — here a set_config of the role's search_path's own, which
    raises: the connection was left open (held by the error's traceback, which a caller keeps,
    and by the server: one session a try while its error lived). It is closed: none is left."""
    db = pg_server.new_database()
    role = "r_" + uuid.uuid4().hex[:12]
    pg_server.sql("CREATE ROLE %s LOGIN" % role)
    pg_server.sql("CREATE FUNCTION public.set_config(text, text, boolean) RETURNS text "
                  "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'no settings here'; END $$",
                  db=db)
    pg_server.sql("ALTER ROLE %s IN DATABASE %s SET search_path = public, pg_catalog" % (
        role, db))
    dialect = postgres.PostgresDialect(pg_server.url(db, role))
    told = []  # what a caller keeps of each failure (the error, as a log record holds it)
    for _ in range(3):
        with pytest.raises(psycopg.Error) as failed:
            dialect.connect()
        told.append(failed.value)
    assert all("no settings here" in str(e) for e in told), told
    assert pg_server.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = '%s'"
                         % role) == [(0,)], told
