"""Numbers in a team member's request that PostgreSQL's numeric cannot hold (migration 0028),
and numbers no float holds in a request kept from before, against the real PostgreSQL the
fixtures start: refused in the guard's words, and read as damage said with the number."""

from __future__ import annotations

import psycopg
import pytest

from fractui.store.base import StoreDamaged
from tests import test_pg_guard
from tests.test_pg_guard import Guarded, audited, refused

guarded = test_pg_guard.guarded


def insert(guarded: Guarded, request: str) -> str:
    """A job of ann's team as psql would insert it, its request ``request``, at its
    statement's time (no earlier than the team's turn its trigger takes, migration 0039)."""
    return ("INSERT INTO jobs (queue, team, name, argv, request, state, submitted_at, "
            "updated_at, submitted_by, run_as) VALUES ('v', '%s', 'x', '[\"x\"]', '%s', "
            "'pending', extract(epoch FROM statement_timestamp()), extract(epoch FROM "
            "statement_timestamp()), '%s', '%s')" % (guarded.vision, request, guarded.ann,
                                                     guarded.ann))


@pytest.mark.parametrize("request_, said", [
    ('{"gpus": 1e200000}', "gpus is 1e200000"),
    ('{"gpu": 0.5, "cpus": 1e-20000}', "cpus is 1e-20000"),
    ('{"gpus": 1%s}' % ("0" * 140000), "gpus is 1%s" % ("0" * 39)),
    ('{"gpu": 0.5, "memory": 0.%s1}' % ("0" * 16383), "memory is 0.%s" % ("0" * 38)),
    ('{"gpu": 0.5, "later": {"at": [1, 1e131072]}}', "later.at[1] is 1e131072"),
    ('{"gpu": 0.5, "cpus": 12e-0016384}', "cpus is 12e-0016384"),
], ids=["exponent", "exponent-below", "digits", "decimals", "nested", "zeros"])
def test_a_number_numeric_cannot_hold_is_refused_in_the_guards_words(guarded, request_, said):
    """Before 0028 PostgreSQL refused each itself ("value overflows numeric format"), in words
    that name neither the guard nor its rule."""
    refused(guarded, audited(insert(guarded, request_), guarded.ann, "submit"),
            "refused by the store's guard: role %s" % guarded.ann,
            "whose request is not a queue's portion as fractui writes it (%s)" % said)


def test_numbers_at_numerics_bounds_are_judged_by_the_queues_rule(guarded):
    """The largest and smallest numeric holds are read as numbers: out of a key's bounds they
    are refused as 0027 refuses any; within them (a 1e-16383 CPU share) taken."""
    for request, said in (('{"gpu": 0.5, "cpus": 1e131071}', "cpus is 1e131071"),
                          ('{"gpus": 1%s}' % ("0" * 131071), "gpus is 1%s" % ("0" * 39))):
        refused(guarded, audited(insert(guarded, request), guarded.ann, "submit"),
                "whose request is not a queue's portion as fractui writes it (%s)" % said)
    guarded.sql(guarded.ann, audited(insert(guarded, '{"gpu": 0.5, "cpus": 1.5e-16382}'),
                                     guarded.ann, "submit"))
    store = guarded.store()
    try:
        assert [job.request["cpus"] for job in store.jobs()] == [0.0]  # (as Python reads it)
    finally:
        store.close()


@pytest.mark.parametrize("number", ["1e400", "1%s" % ("0" * 400), "1%s" % ("0" * 5000)])
def test_a_kept_request_with_a_number_no_float_holds_is_said_with_that_number(guarded, number):
    """A request kept from before its guard (written here by an admin, whom the guard does
    not hold) whose cpus is a number no float holds: each read of the jobs says the store
    damaged, naming the job and the number as written. Before, 1e400 and 10**400 were read as
    infinity (which the scheduler's pass cannot round), and a number of over 4300 digits said
    the request was not JSON, quoting all of it."""
    guarded.sql(guarded.ops, audited(insert(guarded, '{"gpu": 0.5, "cpus": %s}' % number),
                                     guarded.ops, "submit"))
    store = guarded.store()
    try:
        with pytest.raises(StoreDamaged) as damaged:
            store.jobs()
    finally:
        store.close()
    shown = number if len(number) <= 40 else number[:37] + "..."
    assert "job 1's request's cpus is %s, not what fractui writes there" % shown in str(
        damaged.value), damaged.value
    assert len(str(damaged.value)) < 2000


def calls(conn: psycopg.Connection, function: str) -> int:
    """How many times ``function`` ran in ``conn``'s open transaction (track_functions)."""
    row = conn.execute("SELECT sum(calls) FROM pg_stat_xact_user_functions WHERE funcname = %s",
                       (function,)).fetchone()
    return int(row[0] or 0)


def test_a_request_jsonb_reads_is_not_walked_number_by_number(guarded):
    """Migration 0030: 0028 walked each value of each member's request, several microseconds
    each, so one of a million small arrays took its statement seconds; the walk is made only
    for a request jsonb cannot read for a number, and that one is still named."""
    guarded.server.sql("ALTER ROLE %s SET track_functions = 'all'" % guarded.ann)
    wide = '{"gpu": 0.5, "x": [%s]}' % ", ".join(["[1]"] * 200)
    with psycopg.connect(guarded.url(guarded.ann)) as conn:
        conn.execute(audited(insert(guarded, wide), guarded.ann, "submit"))
        assert calls(conn, "fractui_guard_numeric_holds") == 0
    refused(guarded, audited(insert(guarded, '{"gpu": 0.5, "x": [1, 1e200000]}'), guarded.ann,
                             "submit"), "(x[1] is 1e200000)")
