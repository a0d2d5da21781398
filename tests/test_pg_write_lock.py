"""The store's write lock on PostgreSQL is one only fractui's admins may take (migration 0032):
a team member on psql who holds what she can of it stalls no other team. Before 0032 it was
an advisory lock, which PostgreSQL lets any role take: a member who took it in a transaction
left open made every other team's writes, and the scheduler's, wait and fail StoreBusy."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from fractui.store import RowsLocked, StoreDenied, postgres
from fractui.store.access import CANCEL
from fractui.store.base import KeyTaken
from fractui.store.intents import Asker, ask_stop, submit
from fractui.store.model import CANCELLED
from tests.test_pg_guard import LEAST, SLOT, _guarded

OLD_LOCK = 0x66726163  # the advisory key every write took before 0032


def waiting(pg_server, db: str, n: int) -> None:
    """Returns once ``n`` sessions of the store's database wait for a lock."""
    for _ in range(500):
        if pg_server.sql("SELECT count(*) FROM pg_locks WHERE NOT granted", db=db) == [(n,)]:
            return
        time.sleep(0.01)
    raise AssertionError("%d sessions never waited" % n)


def test_a_member_holding_what_she_can_of_the_write_lock_stalls_no_other_team(
        pg_server, monkeypatch):
    """ann (team vision), on psql with the least grants, takes the advisory lock fractui's
    writes took (in her transaction and her session) and moves every change counter (whose
    row she held until 0033, which gave each role its own), may not lock the write lock's table in
    any mode that stalls a write, nor take team nlp's turn to submit (the guard's words), and
    holds her own team's turn. Meanwhile bob's submit and cancel (team nlp, through fractui)
    and the admin's submit and placement (the scheduler's kind of write) go through; only her
    own team's submit (cy's) waits for her, and is told it is her session."""
    monkeypatch.setattr(postgres, "LOCK_TIMEOUT_S", 1.0)  # (before 0032: StoreBusy in 1 s)
    monkeypatch.setattr(postgres, "ROW_WAIT_S", 0.5)
    guarded = _guarded(pg_server, LEAST)
    bob_role, cy_role = "bob_" + guarded.tag, "cy_" + guarded.tag
    pg_server.sql("CREATE ROLE %s LOGIN IN ROLE fractui_team_%s" % (bob_role, guarded.nlp))
    pg_server.sql("CREATE ROLE %s LOGIN IN ROLE fractui_team_%s" % (cy_role, guarded.vision))
    admin, bob, cy = guarded.store(), guarded.store(bob_role), guarded.store(cy_role)
    hostile = psycopg.connect(guarded.url(guarded.ann))
    try:
        hostile.execute("SELECT pg_advisory_lock(%s)", (OLD_LOCK,))
        hostile.execute("SELECT pg_advisory_xact_lock(%s)", (OLD_LOCK,))
        for topic in ("jobs", "logs", "hosts", "lease"):  # (each counter's, before 0033)
            hostile.execute("SELECT fractui_announce(%s)", (topic,))
        theirs = submit(bob, "n", guarded.nlp, "theirs", ["true"], {}, Asker("here"))
        other = admin.submit("n", guarded.nlp, "other", ["true"], {}, "ops")
        assert admin.place(other.id, SLOT, "sched", "decided").state == "placed"
        assert ask_stop(bob, theirs, CANCEL, Asker("here")).state == CANCELLED
        bob.ask_log(theirs.id, bob_role)
        assert admin.acquire_lease("sched", 60) is not None
        admin.record_inventory("gpu-a", {"gpus": []})
        with psycopg.connect(guarded.url(guarded.ann)) as tries:
            for mode in ("ROW SHARE", "SHARE", "EXCLUSIVE", "ACCESS EXCLUSIVE"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege,
                                   match="permission denied for table write_lock"):
                    tries.execute("LOCK TABLE write_lock IN %s MODE" % mode)
                tries.rollback()
            with pytest.raises(psycopg.errors.InsufficientPrivilege,
                               match="refused by the store's guard: role %s .* may not take "
                               "the turn to submit of team %s" % (guarded.ann, guarded.nlp)):
                tries.execute("SELECT fractui_team_turn(%s)", (guarded.nlp,))
        hostile.execute("SELECT fractui_team_turn(%s)", (guarded.vision,))
        hostile.execute("LOCK TABLE write_lock IN ACCESS SHARE MODE")  # (her SELECT's)
        assert submit(bob, "n", guarded.nlp, "again", ["true"], {}, Asker("here")).id
        with pytest.raises(RowsLocked, match="held by role %s \\(pid %d" % (
                guarded.ann, hostile.info.backend_pid)):
            submit(cy, "v", guarded.vision, "mine", ["true"], {}, Asker("here"))
    finally:
        hostile.close()
        cy.close()
        bob.close()
        admin.close()


def test_an_admin_who_may_not_take_the_write_lock_is_told_what_to_grant(pg_server):
    """An admin's writes are not held by the guard, so each must hold the write lock: a
    member of fractui_admin without UPDATE on write_lock (the GRANTs run before 0032, then
    revoked) is refused each write, not let write unordered. A store up to date is opened by
    reads alone (docs/decisions.md, "A store up to date is opened by reads alone"), so its
    reads go on: the refusal is its first write's, and nothing is written."""
    guarded = _guarded(pg_server, LEAST)
    pg_server.sql("REVOKE UPDATE ON write_lock FROM fractui_admin", db=guarded.db)
    store = guarded.store(guarded.ops)
    try:
        assert store.jobs() == []
        with pytest.raises(StoreDenied, match="role %s is an admin but may not take the "
                           "store's write lock .*GRANT UPDATE ON write_lock TO fractui_admin"
                           % guarded.ops):
            store.submit("n", guarded.nlp, "unordered", ["true"], {}, "ops")
        assert store.jobs() == []
    finally:
        store.close()


def test_one_key_submitted_to_two_teams_at_once_is_said_taken(pg_server):
    """A member's submits take their team's turn, not one lock: ann's two submits of one key,
    to her two teams at once, each looked for the key and found none. The one that came second
    waited for the first's row in the key's index and then broke it (said as a store fractui
    cannot use: "duplicate key value"); it is told the key's job was submitted to another
    team (KeyTaken), as when one lock ordered them. Her counter's row, held on psql, keeps the
    first from committing until the second waits on its key."""
    guarded = _guarded(pg_server, LEAST)
    pg_server.sql("GRANT fractui_team_%s TO %s" % (guarded.nlp, guarded.ann))
    first, second = guarded.store(guarded.ann), guarded.store(guarded.ann)
    hostile = psycopg.connect(guarded.url(guarded.ann))
    made: dict = {}

    def submits(store, team: str) -> None:
        try:
            made[team] = submit(store, "q", team, "once", ["true"], {}, Asker("here"),
                                key="k1")
        except Exception as err:  # (said below)
            made[team] = err

    threads = [threading.Thread(target=submits, args=(store, team))
               for store, team in ((first, guarded.vision), (second, guarded.nlp))]
    try:
        hostile.execute("SELECT fractui_announce('jobs')")  # (her role's counter, held)
        threads[0].start()
        waiting(pg_server, guarded.db, 1)  # the first, at its announce
        threads[1].start()
        waiting(pg_server, guarded.db, 2)  # the second, at the first's key
        hostile.commit()
        for thread in threads:
            thread.join()
        assert made[guarded.vision].team == guarded.vision, made
        assert isinstance(made[guarded.nlp], KeyTaken), made
        assert str(made[guarded.nlp]) == "job %d was submitted with that key and another " \
            "team" % made[guarded.vision].id
    finally:
        hostile.close()
        first.close()
        second.close()


def test_an_admin_deletes_a_teams_turn_and_a_member_may_not(pg_server):
    """A team's turn is a row of team_turns, made at its first submit; an admin removes a
    gone team's by DELETE. The guard's row trigger returned NEW, null on a DELETE, which
    PostgreSQL takes for "skip this row": the admin's and the superuser's DELETE said 0 rows
    and kept it. A member's DELETE is refused in the guard's words, as before."""
    guarded = _guarded(pg_server, LEAST)
    ann = guarded.store(guarded.ann)
    try:
        submit(ann, "v", guarded.vision, "first", ["true"], {}, Asker("here"))
    finally:
        ann.close()
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for "
                       "table team_turns|refused by the store's guard"):
        guarded.sql(guarded.ann, "DELETE FROM team_turns")
    for role in (guarded.ops, "postgres"):
        pg_server.sql("INSERT INTO team_turns VALUES ('%s') ON CONFLICT DO NOTHING"
                      % guarded.vision, db=guarded.db)
        with psycopg.connect(guarded.url(role), autocommit=True) as conn:
            assert conn.execute("DELETE FROM team_turns WHERE team = %s",
                                (guarded.vision,)).rowcount == 1, role
        assert pg_server.sql("SELECT team FROM team_turns", db=guarded.db) == []


def test_a_teammates_submit_waits_its_turn_past_the_row_wait(pg_server, monkeypatch):
    """A member's submit waits for her team's turn as a write waits for the write lock, not
    ROW_WAIT_S as for a row held outside fractui's turns: a teammate's submit in its turn is
    one of fractui's writers, and a burst of one team's submits queues there. A turn held
    three times ROW_WAIT_S (ann's, on psql, let go by the test) is waited for: cy's submit is
    made once it is let go, where it was refused RowsLocked after ROW_WAIT_S."""
    monkeypatch.setattr(postgres, "ROW_WAIT_S", 0.3)
    guarded = _guarded(pg_server, LEAST)
    cy_role = "cy_" + guarded.tag
    pg_server.sql("CREATE ROLE %s LOGIN IN ROLE fractui_team_%s" % (cy_role, guarded.vision))
    cy = guarded.store(cy_role)
    turn = psycopg.connect(guarded.url(guarded.ann))
    made: list = []

    def submits() -> None:
        try:
            made.append(submit(cy, "v", guarded.vision, "mine", ["true"], {}, Asker("here")))
        except Exception as err:  # (said below)
            made.append(err)

    thread = threading.Thread(target=submits)
    try:
        turn.execute("SELECT fractui_team_turn(%s)", (guarded.vision,))
        thread.start()
        waiting(pg_server, guarded.db, 1)  # cy's submit, for the turn
        time.sleep(3 * postgres.ROW_WAIT_S)  # (held past a row's wait)
        turn.commit()
        thread.join()
        assert [getattr(job, "team", job) for job in made] == [guarded.vision]
    finally:
        turn.close()
        cy.close()
