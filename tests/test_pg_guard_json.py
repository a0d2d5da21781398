"""JSON a team member's psql writes that fractui's readers could not read, against the real
PostgreSQL the fixtures start (migration 0030): text jsonb refuses, and JSON nested deeper than
fractui reads, refused in the guard's words; such a row kept from before is read as damage."""

from __future__ import annotations

import pytest

from fractui.store import open_store
from fractui.store.base import StoreDamaged
from fractui.store.sql import migrations, statements
from tests import test_pg_guard
from tests.test_pg_guard import Guarded, audited, refused
from tests.test_pg_guard_numbers import insert

guarded = test_pg_guard.guarded
DEEP = "refused by the store's guard: role %s (not in fractui_admin) may not write JSON nested "


def nested(depth: int) -> str:
    """A request whose innermost value is at ``depth`` levels below it (fractui's: 2)."""
    return '{"gpu": 0.5, "x": %s1%s}' % ("[" * (depth - 1), "]" * (depth - 1))


def detail(guarded: Guarded, text: str) -> str:
    """ann's audit entry about the newest job, its detail ``text``."""
    return ("INSERT INTO audit (time, actor, action, job, why, detail) VALUES (extract(epoch "
            "FROM clock_timestamp()), '%s', 'submit', (SELECT max(id) FROM jobs), 'x', '%s')"
            % (guarded.ann, text))


@pytest.mark.parametrize("column, value, said", [
    ("argv", '["\\ud800"]', "whose argv is not a JSON list of strings"),
    ("env", '{"A": "\\ud800"}', "whose env is not a JSON object of strings"),
])
def test_json_that_jsonb_refuses_is_refused_in_the_guards_words(guarded, column, value, said):
    """Migration 0030: 0028 asked json, not jsonb, whether argv and env were JSON, and a lone
    surrogate, which json takes and jsonb refuses, failed the submit in PostgreSQL's words
    ("invalid input syntax for type json"), not the guard's."""
    statement = insert(guarded, '{"gpu": 0.5}').replace(
        "(queue, ", "(%s, queue, " % column, 1).replace("VALUES (", "VALUES ('%s', " % value, 1)
    if column == "argv":  # (given first: insert's own argv is taken out)
        statement = statement.replace("name, argv, ", "name, ", 1).replace("'x', '[\"x\"]', ",
                                                                          "'x', ", 1)
    refused(guarded, audited(statement, guarded.ann, "submit"), said)


def test_an_audit_detail_jsonb_refuses_is_refused(guarded):
    """Migration 0030: after 0028 a member's audit entry whose detail holds a lone surrogate
    (JSON to json, not to jsonb, nor a text any reader holds) was kept."""
    guarded.sql(guarded.ann, audited(insert(guarded, '{"gpu": 0.5}'), guarded.ann, "submit"))
    refused(guarded, detail(guarded, '{"a": "\\ud800"}'), "a detail that is not a JSON object")


def test_json_nested_deeper_than_fractui_reads_is_refused(guarded):
    """Migration 0030: a member's request (under a key fractui does not read) or audit detail
    nested a thousand deep was kept, and every read of the jobs or the audit then failed on
    Python's recursion, the scheduler's pass first. 64 levels are taken, 65 refused."""
    guarded.sql(guarded.ann, audited(insert(guarded, nested(64)), guarded.ann, "submit"))
    for depth in (65, 2000):
        refused(guarded, audited(insert(guarded, nested(depth)), guarded.ann, "submit"),
                DEEP % guarded.ann)
        refused(guarded, detail(guarded, nested(depth)), DEEP % guarded.ann)
    store = guarded.store()
    try:
        assert [job.name for job in store.jobs()] == ["x"]  # (the 64 levels' job, read)
    finally:
        store.close()


@pytest.mark.parametrize("where", ["request", "detail"])
def test_a_kept_row_nested_deeper_than_fractui_reads_is_damage(guarded, where):
    """Such a row kept from before 0030 (written here by an admin, whom the guard does not
    hold): each read says the store damaged, naming the row, where it was a traceback."""
    guarded.sql(guarded.ops, audited(insert(guarded, nested(2000) if where == "request" else
                                            '{"gpu": 0.5}'), guarded.ops, "submit"))
    if where == "detail":
        guarded.sql(guarded.ops, detail(guarded, nested(2000)).replace(guarded.ann, guarded.ops))
    store = guarded.store()
    try:
        with pytest.raises(StoreDamaged, match="is JSON nested deeper than fractui reads"):
            store.jobs() if where == "request" else store.audit_log()
    finally:
        store.close()


def test_an_audit_detail_holding_a_number_numeric_cannot_hold_is_refused(guarded):
    """Migration 0030: 0028 asked json whether an audit detail was a JSON object, and one
    holding a number numeric cannot hold was kept (before 0028 PostgreSQL refused it); fractui's
    reads of the audit then said the store damaged, quoting the whole detail."""
    guarded.sql(guarded.ann, audited(insert(guarded, '{"gpu": 0.5}'), guarded.ann, "submit"))
    refused(guarded, detail(guarded, '{"a": [1, 1%s]}' % ("0" * 140000)),
            "refused by the store's guard: role %s" % guarded.ann,
            "(a[1] is 1%s)" % ("0" * 39))


def argv_or_env(guarded: Guarded, column: str, value: str) -> str:
    """ann's submit (with its audit entry) whose ``column`` (argv or env) is ``value``."""
    statement = insert(guarded, '{"gpu": 0.5}')
    if column == "argv":
        statement = statement.replace("'[\"x\"]'", "'%s'" % value, 1)
    else:
        statement = statement.replace("(queue, ", "(env, queue, ", 1).replace(
            "VALUES (", "VALUES ('%s', " % value, 1)
    return audited(statement, guarded.ann, "submit")


@pytest.mark.parametrize("where, value, said", [
    ("argv", '["\\u0000"]', "whose argv is not a JSON list of strings"),
    ("env", '{"A": "\\u0000"}', "whose env is not a JSON object of strings"),
    ("detail", '{"a": "\\u0000"}', "a detail that is not a JSON object"),
    ("request", '{"gpu": 0.5, "x": "\\u0000"}', "whose argv is not a JSON list of strings"),
    ("argv", '[1e999999, ', "whose argv is not a JSON list of strings"),
    ("env", '{"A": 1e999999 ', "whose env is not a JSON object of strings"),
    ("detail", '{"a": 1e999999 ', "a detail that is not a JSON object"),
    ("request", '{"gpu": 0.5, "x": 1e999999 ', "whose argv is not a JSON list of strings"),
    ("argv", '["x", 1e999999]', "whose argv or env holds a number PostgreSQL's numeric cannot "
     "hold (argv: [1] is 1e999999)"),
    ("env", '{"A": "x", "B": [1e-999999]}', "whose argv or env holds a number PostgreSQL's "
     "numeric cannot hold (env: B[0] is 1e-999999)"),
    ("request", '{"gpus": 1e999999, "\\u0000": 1}', "whose argv is not a JSON list of strings"),
    ("detail", '{"a": 1e999999, "b": "\\u0000"}', "a detail that is not a JSON object"),
    ("env", '{"A": 1e999999, "\\u0000": "x"}', "whose env is not a JSON object of strings"),
    ("request", '{"gpus": 1e999999, "x": "\\\\u0000"}', "gpus is 1e999999"),  # (no escape)
])
def test_json_jsonb_cannot_read_is_refused_in_the_guards_words(guarded, where, value, said):
    """Migration 0031: after 0030 an escape jsonb's text cannot hold (\\u0000), a text whose
    number numeric cannot hold comes before its syntax error (or before a \\u0000), and such a
    number in argv or env each failed a member's write in PostgreSQL's words, not the
    guard's. A backslash written as such before u0000 is no escape: the number is named."""
    guarded.sql(guarded.ann, audited(insert(guarded, '{"gpu": 0.5}'), guarded.ann, "submit"))
    statement = (detail(guarded, value) if where == "detail" else
                 audited(insert(guarded, value), guarded.ann, "submit") if where == "request"
                 else argv_or_env(guarded, where, value))
    refused(guarded, statement, "role %s (not in fractui_admin) may not" % guarded.ann, said)


def test_a_store_at_0029_holding_rows_the_new_rules_refuse_is_migrated_unchanged(pg_server):
    """Migrations 0030 and 0031 only change what a member's later write is asked: a store at
    0029 whose rows (two teams', written before) hold JSON they refuse is migrated, each row's
    text as it was; a read of such a row says the store damaged, naming it."""
    db = pg_server.new_database()
    pg_server.sql("CREATE TABLE fractui_schema (version INTEGER NOT NULL)", db=db)
    pg_server.sql("INSERT INTO fractui_schema VALUES (29)", db=db)
    for number, sql in migrations("postgresql"):
        if number <= 29:
            for statement in statements(sql):
                pg_server.sql(statement, db=db)
    pg_server.sql("INSERT INTO meta (key, value) VALUES ('uid', '01d00001')", db=db)
    rows = [("a", '["\\ud800"]', nested(2000), '{"A": 1e999999}'),
            ("b", '["x"]', '{"gpus": 1e999999}', '{"\\u0000": "x"}')]
    for team, argv, request, env in rows:
        pg_server.sql("INSERT INTO jobs (queue, team, name, argv, request, env, state, "
                      "submitted_at, updated_at) VALUES ('q', '%s', 'old', '%s', '%s', '%s', "
                      "'pending', 1, 1)" % (team, argv, request, env), db=db)
        pg_server.sql("INSERT INTO audit (time, actor, action, job, why, detail) VALUES (1, "
                      "'ann', 'submit', (SELECT max(id) FROM jobs), 'x', '%s')" % request, db=db)
    pg_server.sql("INSERT INTO log_requests (job, actor, asked_at) VALUES (1, 'ann', 1)", db=db)
    kept = "SELECT team, argv, request, env FROM jobs ORDER BY id"
    assert pg_server.sql(kept, db=db) == rows
    store = open_store(pg_server.url(db))
    try:
        assert pg_server.sql("SELECT version FROM fractui_schema", db=db) == [
            (migrations("postgresql")[-1][0],)]
        assert pg_server.sql(kept, db=db) == rows
        assert pg_server.sql("SELECT detail FROM audit ORDER BY id", db=db) == [
            (r[2],) for r in rows]
        with pytest.raises(StoreDamaged, match="is JSON nested deeper than fractui reads"):
            store.jobs()
    finally:
        store.close()
