"""The link to a shared PostgreSQL store cut at each statement of each change fractui makes:
before the statement reaches the server (nothing of it runs), or after the server ran it and
answered (the answer lost: a COMMIT made whose reply never came). Each change is then said
made, or refused with a StoreError (never another exception), and the store holds it once or
not at all, never twice; the same store object's next change works once the link carries
again. Real PostgreSQL, a real loopback proxy between (tests/pg_proxy.py)."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import time
import uuid
from typing import Any, Callable, Iterator, List, Optional

import pytest

from fractui.config import QueueConfig
from fractui.mig_by_hand import carry_out
from fractui.sched.mig_change import DESTROY, MigChange
from fractui.store import StoreError, open_store
from fractui.store.access import CANCEL
from fractui.store.intents import Asker, ask_stop, cordon, move_by_hand, place_by_hand, submit
from fractui.store import postgres
from fractui.store.model import DONE, ENDED, Slot, attempt_of
from fractui.store.sql import migrations
from tests import localfleet
from tests.cli_run import leaks, subprocess_run
from tests.conftest import STEP_S
from tests.localfleet import LocalFleet, logged, wait
from tests.pg import PgServer
from tests.pg_proxy import AFTER, BEFORE, PgProxy, Stores, proxied_stores

local_fleet = localfleet.local_fleet

ASKER = Asker("here")
SLOT = Slot("gpu-a", (0,), None, None, 1000, 0.25)
ELSEWHERE = Slot("gpu-b", (1,), None, None, 1000, 0.25)
REQUEST = {"gpu": 0.25}
LEASE_S = 30.0
MOST = 200  # statements one change (or one pass) sends, at the most


@pytest.fixture
def stores(pg_server) -> Iterator[Stores]:
    with proxied_stores(pg_server) as made:
        yield made


def _pending(s: Stores) -> int:
    return s.direct.submit("q", None, "n", ["true"], REQUEST, "root@here").id


def _running(s: Stores) -> int:
    job = _pending(s)
    s.direct.place(job, SLOT, "root@here", "placed by hand", manual=True)
    s.direct.started(job, "j%d" % job, None, "sched", "launched")
    return job


def _audited(sql: Callable[[str], List[tuple]], job: int, action: str) -> int:
    return sql("SELECT count(*) FROM audit WHERE job = %d AND action = '%s'" % (
        job, action))[0][0]


@dataclasses.dataclass(frozen=True)
class Change:
    """One change: ``ready`` makes what it acts on (directly), ``make`` makes it through the
    cut link, ``times`` says how many times the store holds it (0 or 1 is right). Each of
    its transactions cut before its COMMIT is made again on a new connection; ``again``: one
    cut at its COMMIT too (a user's ask, which finds what a first that landed made), so one
    cut never fails it."""
    name: str
    ready: Callable[[Stores], Any]
    make: Callable[[Stores, Any], Any]
    times: Callable[[Stores, Any], int]
    again: bool = True


def _submit_times(s: Stores, key: str) -> int:
    return s.sql("SELECT count(*) FROM jobs WHERE submit_key LIKE '%%:%s'" % key)[0][0] + \
        s.sql("SELECT count(*) FROM audit a JOIN jobs j ON a.job = j.id WHERE a.action = "
              "'submit' AND j.submit_key LIKE '%%:%s'" % key)[0][0] // 2


def _lease(s: Stores) -> int:
    s.direct.release_lease("sched")
    return s.sql("SELECT epoch FROM lease")[0][0] if s.sql("SELECT epoch FROM lease") else 0


def _lease_times(s: Stores, before: int) -> int:
    """How many epochs the lease moved on by: one take is one."""
    return s.sql("SELECT epoch FROM lease")[0][0] - before


CHANGES = [
    Change("submit", lambda s: uuid.uuid4().hex,
           lambda s, key: submit(s.proxied, "q", None, "n", ["true"], REQUEST, ASKER, key=key),
           _submit_times),
    Change("cancel-pending", _pending,
           lambda s, job: ask_stop(s.proxied, s.proxied.get(job), CANCEL, ASKER),
           lambda s, job: _audited(s.sql, job, "cancel")),
    Change("cancel-running", _running,
           lambda s, job: ask_stop(s.proxied, s.proxied.get(job), CANCEL, ASKER),
           lambda s, job: _audited(s.sql, job, "cancel")),
    Change("place", _pending,
           lambda s, job: place_by_hand(s.proxied, s.proxied.get(job), SLOT, ASKER),
           lambda s, job: _audited(s.sql, job, "place")),
    Change("move", _running,
           lambda s, job: move_by_hand(s.proxied, s.proxied.get(job), ELSEWHERE, ASKER),
           lambda s, job: _audited(s.sql, job, "move")),
    Change("cordon", lambda s: "host-%s" % uuid.uuid4().hex[:6],
           lambda s, host: cordon(s.proxied, host, None, "cordon", ASKER),
           lambda s, host: s.sql("SELECT count(*) FROM audit WHERE action = 'cordon' AND "
                                 "detail LIKE '%%%s%%'" % host)[0][0]),
    Change("decide", _pending,  # the scheduler's pass, as the lease holder
           lambda s, job: s.proxied.place(job, SLOT, "sched", "decided",
                                      epoch=s.proxied.acquire_lease("sched", LEASE_S)),
           lambda s, job: _audited(s.sql, job, "decide"), again=False),
    Change("lease", _lease, lambda s, _: s.proxied.acquire_lease("sched", LEASE_S), _lease_times,
           again=False),
    Change("mig-record", lambda s: uuid.uuid4().hex,
           lambda s, said: s.proxied.audit("root@here", "mig", None, said, {}),
           lambda s, said: s.sql("SELECT count(*) FROM audit WHERE why = '%s'" % said)[0][0],
           again=False),
]


def _made_once(s: Stores, change: Change, cut: Callable[[], None]) -> Optional[StoreError]:
    """``change`` made with ``cut`` armed: said made, or a StoreError; held once at most (once
    if said made); and made again, fresh, once the link carries."""
    ready = change.ready(s)
    cut()
    said: Optional[StoreError] = None
    try:
        change.make(s, ready)
    except StoreError as err:
        said = err
    s.proxy.restore()
    times = change.times(s, ready)
    assert times in ((0, 1) if said else (1,)), (change.name, said, times)
    again = change.ready(s)
    change.make(s, again)
    assert change.times(s, again) == 1, change.name
    return said


@pytest.mark.parametrize("change", CHANGES, ids=[c.name for c in CHANGES])
def test_a_change_cut_at_each_statement_is_made_once_or_not_and_said(stores, change):
    for n in range(MOST):
        for where in (BEFORE, AFTER):
            said = _made_once(stores, change, lambda: stores.proxy.cut_at(n, where))
            if stores.proxy.cuts == 0:  # past its last statement: it was made whole
                assert n > 0 and said is None, (change.name, said)
                return
            fell = stores.proxy.fell
            # failed only where its COMMIT was cut and it is not made again: said not known
            assert said is None or not change.again and fell.sql == "COMMIT" and \
                "whether it was recorded is not known" in str(said), (change.name, n, where,
                                                                       fell, said)
    pytest.fail("%s sent over %d statements" % (change.name, MOST))


@pytest.mark.parametrize("change", CHANGES, ids=[c.name for c in CHANGES])
def test_a_commit_whose_reply_is_lost_with_the_server_then_unreachable_is_said_unknown(
        stores, change):
    """The COMMIT ran, its answer lost, and no new connection can be made: the change is
    said to be of unknown outcome, never as if nothing was done."""
    said = _made_once(stores, change, lambda: stores.proxy.cut_on("COMMIT", AFTER, down=True))
    assert said is not None and "not known" in str(said), (change.name, said)


def test_a_verb_whose_commit_reply_is_lost_says_so_in_one_line_and_its_retry_makes_it_once(
        stores, tmp_path):
    """``fractui submit`` and ``cancel`` as a user runs them, their COMMIT's reply lost and
    the server unreachable after: exit 1, one line naming the store and that whether it was
    recorded is not known (a submit: the key to retry with); the same command run again once
    the link carries is exit 0, and the store holds each once."""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[[queues]]\nname = "q"\ngpu = 0.25\n' % (
        stores.proxy.url(stores.db)))

    def cut_run(*verb: str) -> str:
        stores.proxy.cut_on("COMMIT", AFTER, down=True, past="INSERT INTO audit")
        done = subprocess_run(["--config", str(config), *verb])
        stores.proxy.restore()
        lines = done.stderr.splitlines()
        assert (done.returncode, done.stdout, len(lines)) == (1, "", 1), done
        assert lines[0].startswith("fractui: store %s: " % stores.proxied.where), lines
        assert "whether it was recorded is not known" in lines[0] and not leaks(done.stderr)
        return lines[0]

    said = cut_run("submit", "--queue", "q", "--", "true")
    key = said.split("submitting again with --key ")[1].split()[0]
    again = subprocess_run(["--config", str(config), "submit", "--queue", "q", "--key", key,
                            "--", "true"])
    assert again.returncode == 0 and again.stdout.startswith("1 pending"), again
    assert _submit_times(stores, key) == 1
    cut_run("cancel", "1")
    again = subprocess_run(["--config", str(config), "cancel", "1"])
    assert (again.returncode, again.stdout) == (0, "1 cancelled\n"), again
    assert _audited(stores.sql, 1, "cancel") == 1


@pytest.mark.slow  # a fault suite: each statement of a pass cut, both ways
def test_a_scheduler_pass_cut_at_each_statement_decides_and_launches_each_job_once(
        local_fleet, pg_server):
    """The lease holder's store reached through the proxy, a job submitted before each pass
    and the pass cut at its n-th statement (its lease renewal, its reads, its decision, its
    lanes' launch record): once the link carries, the passes run the job to its end, decided
    and launched once, one copy of it on its host — whatever the cut lost."""
    db = pg_server.new_database()
    direct = open_store(pg_server.url(db))
    proxy = PgProxy(pg_server.port)
    try:
        f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.25)],
                        store_url=proxy.url(db))
        passes(f)  # the lease taken, the host's inventory kept
        for n in range(MOST):
            for where in (BEFORE, AFTER):
                job = direct.submit("q", None, "q", ["true"], REQUEST, "test@here")
                proxy.cut_at(n, where)
                passes(f)
                fell = proxy.cuts
                proxy.restore()
                for _ in range(300):
                    if direct.get(job.id).state in ENDED:
                        break
                    passes(f)
                assert direct.get(job.id).state == DONE, (n, where, direct.get(job.id))
                for action in ("decide", "launch"):
                    assert _audited(lambda t: pg_server.sql(t, db=db), job.id, action) == 1, (
                        n, where, action)
                copies = [r for r in f.agent_jobs()
                          if attempt_of(r["key"], direct.uid) == (job.id, 0)]
                assert len(copies) == 1, (n, where, copies)
            if not fell:  # past the pass's last statement
                return
        pytest.fail("a pass sent over %d statements" % MOST)
    finally:
        direct.close()
        proxy.close()


def passes(f: LocalFleet) -> None:
    """One pass and the calls it started, as the service runs them: a store error said and
    the next pass tried (Scheduler.run)."""
    try:
        f.scheduler.step()
    except StoreError:
        pass
    f.scheduler.settle()
    time.sleep(STEP_S)


@pytest.mark.slow  # a fault suite: a process of fractui for each statement, both ways
@pytest.mark.parametrize("verb", ["submit", "cancel"])
def test_a_verb_cut_at_each_statement_says_made_or_one_line_and_its_retry_makes_it_once(
        stores, tmp_path, verb):
    """``fractui submit --key K`` and ``cancel`` as a user runs them, the link cut once at
    each statement each sends (opening the store too), before it or after its answer: exit
    0, or exit 1 in one line naming the store, never a traceback; the same command run again
    is exit 0, and the store holds the change once."""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[[queues]]\nname = "q"\ngpu = 0.25\n' % (
        stores.proxy.url(stores.db)))
    for n in range(MOST):
        for where in (BEFORE, AFTER):
            key = uuid.uuid4().hex
            words = ["submit", "--queue", "q", "--key", key, "--", "true"] if verb == "submit" \
                else ["cancel", str(_pending(stores))]
            stores.proxy.cut_at(n, where)
            done = subprocess_run(["--config", str(config), *words])
            fell = stores.proxy.cuts
            stores.proxy.restore()
            lines = done.stderr.splitlines()
            assert done.returncode in (0, 1) and not leaks(done.stderr), (n, where, done)
            if done.returncode == 1:
                assert done.stdout == "" and len(lines) == 1 and lines[0].startswith(
                    "fractui: store %s: " % stores.proxied.where), (n, where, done)
                again = subprocess_run(["--config", str(config), *words])
                assert again.returncode == 0, (n, where, again)
            if verb == "submit":
                assert _submit_times(stores, key) == 1, (n, where, done)
            else:
                assert _audited(stores.sql, int(words[1]), "cancel") == 1, (n, where, done)
            if not fell:
                assert n > 0 and done.returncode == 0, done
                return
    pytest.fail("%s sent over %d statements" % (verb, MOST))


def test_a_scheduler_stopped_with_its_store_unreachable_says_its_lease_lapses_and_exits_0(
        local_fleet, pg_server):
    """SIGTERM to the lease-holding ``fractui scheduler`` while its store cannot be reached:
    it stops as asked (exit 0), saying the lease was not handed over and lapses by itself;
    no traceback. A standby takes it once it has lapsed."""
    db = pg_server.new_database()
    direct = open_store(pg_server.url(db))
    proxy = PgProxy(pg_server.port)
    try:
        f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.25)],
                        store_url=proxy.url(db), lease_s=3.0)
        sched = f.scheduler_process("s1")
        wait(lambda: direct.lease_holder() is not None, direct.lease_holder, alive=sched)
        proxy.refuse()
        sched.send_signal(signal.SIGTERM)
        err = sched.communicate(timeout=120)[1]
        assert sched.returncode == 0 and not leaks(err), err
        assert any(line.startswith("store postgresql://127.0.0.1:%d/%s: " % (
            proxy.port, db)) and line.endswith(
                "; the lease was not handed over: it lapses within 3 s of its last renewal, "
                "and a standby takes it then") for line in logged(err)), err
        proxy.restore()
        assert direct.acquire_lease("s2", 3.0) is None  # not handed over: s1's still
        wait(lambda: direct.acquire_lease("s2", 3.0) is not None, direct.lease_holder)
    finally:
        direct.close()
        proxy.close()


def test_a_mig_change_whose_audit_commit_reply_is_lost_is_said_maybe_in_the_audit(stores):
    """The agent made a MIG change by hand; its audit entry's COMMIT ran and the reply was lost
    (the server unreachable after): the error says the change was made and that whether it is
    in the audit is not known, never that it is not there (it is)."""
    change = MigChange("gpu-a", 0, DESTROY, "destroy idle 1g.10gb at slot 6", None,
                       "mig.destroy", {"gpu": 0, "instance": "MIG-x"})

    def agent(method, params):  # the agent's answer; the audit's reply lost meanwhile
        stores.proxy.cut_on("COMMIT", AFTER, down=True)
        return {"destroyed": {"profile": "1g.10gb", "start": 6, "uuid": "MIG-x"}}
    with pytest.raises(StoreError) as err:
        carry_out(stores.proxied, ASKER, agent, change)
    stores.proxy.restore()
    assert str(err.value).endswith("; the change was made all the same, and whether it is in "
                                   "the audit is not known: destroyed 1g.10gb at slot 6 (MIG-x) "
                                   "on gpu-a gpu 0"), err.value
    assert stores.sql("SELECT count(*) FROM audit WHERE action = 'mig'")[0][0] == 1


def test_a_stop_sent_whose_record_reply_is_lost_is_logged_as_maybe_recorded(
        local_fleet, pg_server, caplog):
    """The lease holder sent a cancelled job's stop and the COMMIT of its record ran, the reply
    lost: its log says whether the stop was recorded is not known, never that it was not (it
    was)."""
    db = pg_server.new_database()
    direct = open_store(pg_server.url(db))
    proxy = PgProxy(pg_server.port)
    try:
        f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.25)],
                        store_url=proxy.url(db))
        job = direct.submit("q", None, "q", ["sleep", "600"], REQUEST, "test@here")
        for _ in range(300):
            if direct.get(job.id).state == "running":
                break
            passes(f)
        ask_stop(direct, direct.get(job.id), CANCEL, ASKER)
        proxy.cut_on("COMMIT", AFTER, past="INSERT INTO stops_sent")
        with caplog.at_level(logging.ERROR):
            for _ in range(300):
                if proxy.cuts:
                    break
                passes(f)
        proxy.restore()
        said = [r.getMessage() for r in caplog.records if "was sent" in r.getMessage()]
        assert len(said) == 1 and said[0].endswith(
            "; the stop of %s on gpu-a was sent and whether it was recorded is not known: a "
            "scheduler that takes the lease over may send it again" % job.key(direct.uid)), said
        assert pg_server.sql("SELECT count(*) FROM stops_sent", db=db)[0][0] == 1
    finally:
        direct.close()
        proxy.close()


@pytest.mark.parametrize("verb", [["jobs"], ["queues"], ["audit"]])
def test_a_read_only_verb_writes_nothing_to_open_a_store_up_to_date(stores, tmp_path, verb):
    """Every verb opened the store with a write (its migrations, none due): ``fractui jobs``
    whose COMMIT reply was lost, the server unreachable after, said the store's write was
    "whether it was recorded is not known" — of a write its user never asked for. A store
    up to date is opened by reads alone: nothing is committed, so nothing is left unknown."""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[[queues]]\nname = "q"\ngpu = 0.25\n' % (
        stores.proxy.url(stores.db)))
    stores.proxy.cut_on("COMMIT", AFTER, down=True)
    done = subprocess_run(["--config", str(config), *verb])
    stores.proxy.restore()
    assert "not known" not in done.stderr and not leaks(done.stderr), done
    assert (done.returncode, stores.proxy.cuts) == (0, 0), done


def _upgrade_due(pg_server, monkeypatch) -> str:
    """A new database holding a store one migration behind this fractui's: the next open
    upgrades it, in a write of its own (the store's, not its user's)."""
    db = pg_server.new_database()
    with monkeypatch.context() as before:
        before.setattr(postgres, "migrations", lambda dialect: migrations("postgresql")[:-1])
        open_store(pg_server.url(db)).close()
    return db


def _version(pg_server, db: str) -> int:
    return pg_server.sql("SELECT version FROM fractui_schema", db=db)[0][0]


def test_a_read_only_verb_whose_stores_upgrade_lost_its_commit_reply_says_no_unknown_of_its_own(
        pg_server, monkeypatch, tmp_path):
    """``fractui jobs`` on a store a migration behind, the COMMIT of the upgrade its open makes
    run and its reply lost: the upgrade is made again on a new connection (it reads the
    version first, so finds one that landed) and jobs answers (exit 0). With the server
    unreachable after, one line says the upgrade's outcome and that the next open makes it,
    never "whether it was recorded is not known" of a verb that asked nothing to be recorded
    (before: both said so); the next run upgrades the store once and answers."""
    latest = migrations("postgresql")[-1][0]
    proxy = PgProxy(pg_server.port)
    try:
        for down in (False, True):
            db = _upgrade_due(pg_server, monkeypatch)
            config = tmp_path / ("config-%s.toml" % down)
            config.write_text('[store]\nurl = "%s"\n' % proxy.url(db))
            proxy.cut_on("COMMIT", AFTER, down=down)
            done = subprocess_run(["--config", str(config), "jobs"])
            proxy.restore()
            assert proxy.cuts == 1 and "not known" not in done.stderr, done
            assert not leaks(done.stderr), done
            if down:
                lines = done.stderr.splitlines()
                assert (done.returncode, len(lines)) == (1, 1), done
                assert lines[0].endswith(
                    "(the connection was lost as it committed the store's upgrade to this "
                    "fractui's schema, before anything of this command's was sent: the next "
                    "command that opens the store makes the upgrade where it was not made)"), done
                done = subprocess_run(["--config", str(config), "jobs"])
            assert (done.returncode, done.stderr) == (0, ""), done
            assert _version(pg_server, db) == latest
    finally:
        proxy.close()


def test_a_retry_of_a_lost_commit_refused_by_a_server_shutting_down_says_only_not_known():
    """A submit's COMMIT run and its reply lost, the server then shutting down (a smart
    shutdown: the sessions it has go on, new ones are refused with 57P03): the submit made
    again by its key is refused at connect. Its error says whether the submit was recorded is
    not known, never also "nothing was recorded" (the retry's words, not true of the first
    try: it was recorded)."""
    server = PgServer()
    proxy = PgProxy(server.port)
    try:
        db = server.new_database()
        store = open_store(proxy.url(db))
        held = server.connect(db)  # keeps the server shutting down, not down
        try:
            server.pg_ctl("stop", "-m", "smart", "-W")
            proxy.cut_on("COMMIT", AFTER, past="INSERT INTO audit")
            with pytest.raises(StoreError) as failed:
                submit(store, "q", None, "n", ["true"], REQUEST, ASKER, key="k1")
            assert proxy.cuts == 1 and failed.value.unknown, failed.value
            assert "shutting down" in failed.value.what, failed.value
            assert "whether it was recorded is not known" in failed.value.what, failed.value
            assert "nothing was recorded" not in failed.value.what, failed.value
            assert held.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1
        finally:
            store.close()
            held.close()
    finally:
        proxy.close()
        while os.path.exists(os.path.join(server.data, "postmaster.pid")):
            time.sleep(0.05)
        shutil.rmtree(server.root, ignore_errors=True)
