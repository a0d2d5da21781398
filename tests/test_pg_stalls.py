"""A link to PostgreSQL that stalls rather than drops: open, passing nothing (a server stopped
or hung, a link that holds), which TCP keepalives never find, the kernel at the other end
answering them. A statement whose answer has not come for ANSWER_WAIT_S is given up, its
connection closed, and the call goes on as at a dropped link: a read asked again on a new
connection, a user's write made again and found by its key (never made twice), a COMMIT whose
answer stalled said not known, and a server that stays stalled said in the store's words —
never a wait without end. The bounds are shortened here (a test checks what is said and kept,
not how long it took). A loopback proxy that reads the protocol (tests/pg_proxy.py) stalls
the link at a statement of the test's choosing; a real PostgreSQL."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import uuid
from typing import IO, Callable, Iterator, List, TypeVar

import pytest

from fractui.config import QueueConfig
from fractui.store import Slot, StoreError, StoreUnavailable, open_store
from fractui.store import postgres
from fractui.store.postgres import TEAM_ROLE
from fractui.store.intents import Asker, submit
from tests import localfleet
from tests.cli_run import fractui_process, leaks
from tests.conftest import REPO
from tests.localfleet import logged, wait
from tests.pg_proxy import AFTER, BEFORE, PgProxy, Stores, proxied_stores
from tests.test_store_postgres import _least_grants

local_fleet = localfleet.local_fleet
ASKER = Asker("here")
REQUEST = {"gpu": 0.25}
ANSWER_WAIT_S = 1.0  # the bounds as a test sets them
CONNECT_TIMEOUT_S = 2  # (libpq's least)
GUARD_S = 60.0  # a call that has not ended by then fails its test (a guard, not a timing)
STALLED = "the server sent nothing for 1 s while a statement waited for its answer"
# ``python -m fractui`` with the bounds shortened as above
SHORT = ("import sys\nfrom fractui.store import postgres\nfrom fractui.cli import main\n"
         "postgres.ANSWER_WAIT_S, postgres.CONNECT_TIMEOUT_S = %r, %r\nsys.exit(main())" % (
             ANSWER_WAIT_S, CONNECT_TIMEOUT_S))


@pytest.fixture
def stores(pg_server, monkeypatch) -> Iterator[Stores]:
    monkeypatch.setattr(postgres, "ANSWER_WAIT_S", ANSWER_WAIT_S)
    monkeypatch.setattr(postgres, "CONNECT_TIMEOUT_S", CONNECT_TIMEOUT_S)
    monkeypatch.setattr(postgres, "IDLE_IN_WRITE_S", 1.0)  # (read as each session opens)
    with proxied_stores(pg_server) as made:
        yield made


T = TypeVar("T")


def _begun(call: Callable[[], T]) -> "queue.Queue[tuple]":
    """``call()`` run on a thread of its own; what it returned or raised is put on the queue
    (``_ended`` reads it) once it ends."""
    got: "queue.Queue[tuple]" = queue.Queue()

    def run() -> None:
        try:
            got.put((True, call()))
        except BaseException as err:  # (raised again by _ended, in the test's thread)
            got.put((False, err))
    threading.Thread(target=run, daemon=True).start()
    return got


def _ended(call: "Callable[[], T] | queue.Queue[tuple]") -> T:
    """What ``call()`` returns, or raises, once it ends (a queue: of one ``_begun``): one still
    waiting after GUARD_S fails the test rather than hang the run (a store that waits for
    ever, as one did before the bound, is what these tests look for)."""
    got = call if isinstance(call, queue.Queue) else _begun(call)
    try:
        ok, value = got.get(timeout=GUARD_S)
    except queue.Empty:
        pytest.fail("the store's call still waited after %g s" % GUARD_S)
    if not ok:
        raise value
    return value


def _jobs_of(s: Stores, key: str) -> int:
    """How many jobs were made by a submit of ``key``."""
    return s.sql("SELECT count(*) FROM jobs WHERE submit_key LIKE '%%:%s'" % key)[0][0]


def test_a_read_whose_answer_stalls_is_asked_again_and_a_stalled_server_is_said(stores):
    """A read whose link stalls after the server ran it (its answer held) is given up and
    asked again on a new connection, which answers. Where every link stalls (new ones taken
    and never answered), the read ends in a StoreUnavailable naming the server; once the
    link passes again, the next read answers."""
    job = stores.direct.submit("q", None, "n", ["true"], REQUEST, "root@here")
    stores.proxy.cut_on("SELECT", AFTER, stall=True)
    assert _ended(lambda: stores.proxied.get(job.id)).id == job.id
    assert stores.proxy.cuts == 1
    stores.proxy.restore()
    stores.proxy.cut_on("SELECT", AFTER, down=True, stall=True)
    with pytest.raises(StoreUnavailable) as failed:
        _ended(lambda: stores.proxied.get(job.id))
    assert str(failed.value).startswith("store %s: cannot reach the PostgreSQL server: " % (
        stores.proxied.where)), failed.value
    stores.proxy.restore()
    assert stores.proxied.get(job.id).id == job.id


@pytest.mark.parametrize("as_team", [False, True])
def test_a_statement_the_server_is_running_past_the_bound_is_waited_for(stores, pg_server,
                                                                       as_team):
    """A read that waits, under lock_timeout, behind a table's lock (another fractui's
    upgrade of the store holds it, as a migration that builds an index on a big store does)
    is silent for several ANSWER_WAIT_S: the server, asked on a connection of its own, says
    the statement is running, so it is waited for and answers once the lock is let go — never
    given up and asked again, to be given up again, for as long as the work takes. So too for
    a member whose URL acts as her team's role (options=-c role=…), which may not see her
    sessions' state."""
    tag = uuid.uuid4().hex[:6]
    team, reader = "v" + tag, stores.proxied
    if as_team:
        ann, role = "ann_" + tag, TEAM_ROLE + "v" + tag
        pg_server.admin_role()
        pg_server.sql("CREATE ROLE %s" % role)
        pg_server.sql("CREATE ROLE %s LOGIN NOINHERIT IN ROLE %s" % (ann, role))
        _least_grants(pg_server, stores.db, role)
        reader = open_store(stores.proxy.url(stores.db, user=ann) + "?options=-c%20role%3D"
                            + role)
    job = stores.direct.submit("q", team, "n", ["true"], REQUEST, "root@here")
    with pg_server.connect(stores.db) as holder:
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        got = _begun(lambda: reader.get(job.id))
        wait(lambda: stores.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                "current_database() AND wait_event_type = 'Lock'")[0][0] == 1,
             lambda: stores.sql("SELECT pid, state, wait_event FROM pg_stat_activity"))
        with pytest.raises(queue.Empty):  # three bounds of silence, and still waiting
            got.get(timeout=3 * ANSWER_WAIT_S + 2 * CONNECT_TIMEOUT_S)
        holder.execute("COMMIT")
    try:
        assert _ended(got).id == job.id
    finally:
        if reader is not stores.proxied:
            reader.close()


@pytest.mark.parametrize("where", [BEFORE, AFTER])
def test_a_submit_whose_commit_stalls_is_made_once(stores, where):
    """A submit by its key whose COMMIT stalls, before it reaches the server or after the
    server ran it (its answer held): given up, and made again on a new connection, which finds
    the job a COMMIT that landed made (after), or waits for the stalled session's write lock
    until the server ends that session for idling in its write (before): one job either way,
    said made."""
    key = uuid.uuid4().hex
    stores.proxy.cut_on("COMMIT", where, stall=True, past="INSERT INTO audit")
    made = _ended(lambda: submit(stores.proxied, "q", None, "n", ["true"], REQUEST, ASKER,
                                 key=key))
    stores.proxy.restore()
    assert stores.proxy.cuts == 1 and _jobs_of(stores, key) == 1
    assert stores.direct.get(made.id).state == "pending"


@pytest.mark.parametrize("where", [BEFORE, AFTER])
def test_a_submit_whose_commit_stalls_with_the_server_is_said_not_known(stores, where):
    """As above, every link stalled from the COMMIT on: the submit ends in the store's error
    saying whether it was recorded is not known (it was after, not before); the same submit
    made again by its key once the link passes makes one job."""
    key = uuid.uuid4().hex
    stores.proxy.cut_on("COMMIT", where, down=True, stall=True, past="INSERT INTO audit")
    with pytest.raises(StoreError) as failed:
        _ended(lambda: submit(stores.proxied, "q", None, "n", ["true"], REQUEST, ASKER,
                              key=key))
    assert failed.value.unknown and "whether it was recorded is not known" in str(
        failed.value), failed.value
    stores.proxy.restore()
    assert _jobs_of(stores, key) == (1 if where == AFTER else 0)
    submit(stores.proxied, "q", None, "n", ["true"], REQUEST, ASKER, key=key)
    assert _jobs_of(stores, key) == 1


def test_a_lease_renewal_that_stalls_ends_in_the_stores_words(stores):
    """The lease holder's renewal, its answer stalled with the server: it ends in the store's
    error (the scheduler says it and tries again at its next pass), the lease held once."""
    assert stores.proxied.acquire_lease("sched", 30.0) is not None
    stores.proxy.cut_on("COMMIT", AFTER, down=True, stall=True)
    with pytest.raises(StoreError) as failed:
        _ended(lambda: stores.proxied.acquire_lease("sched", 30.0))
    assert "whether it was recorded is not known" in str(failed.value), failed.value
    stores.proxy.restore()
    assert stores.proxied.acquire_lease("sched", 30.0) is not None
    assert stores.direct.lease_holder()[0] == "sched"  # type: ignore[index]


def _fractui(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SHORT, *argv], capture_output=True,
                          text=True, cwd=REPO, timeout=120, stdin=subprocess.DEVNULL)


def test_a_verb_on_a_stalled_server_ends_in_one_line(stores, tmp_path):
    """``fractui jobs`` whose first read stalls, and ``fractui submit`` whose COMMIT's answer
    stalls, with the server: each ends, exit 1, in one line naming the store (the stall, or the
    submit's outcome not known with the key to submit again with); the submit made again with
    it once the link passes makes one job."""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[[queues]]\nname = "q"\ngpu = 0.25\n' % (
        stores.proxy.url(stores.db)))
    stores.proxy.cut_on("SELECT has_schema_privilege", BEFORE, down=True, stall=True)
    done = _fractui("--config", str(config), "jobs")
    stores.proxy.restore()
    assert (done.returncode, done.stdout, len(done.stderr.splitlines())) == (1, "", 1), done
    assert done.stderr.startswith("fractui: store %s: cannot reach the PostgreSQL server: %s" % (
        stores.proxied.where, STALLED)) and not leaks(done.stderr), done
    stores.proxy.cut_on("COMMIT", AFTER, down=True, stall=True, past="INSERT INTO audit")
    done = _fractui("--config", str(config), "submit", "--queue", "q", "--", "true")
    stores.proxy.restore()
    assert (done.returncode, done.stdout, len(done.stderr.splitlines())) == (1, "", 1), done
    assert "whether it was recorded is not known" in done.stderr and not leaks(done.stderr)
    key = done.stderr.split("submitting again with --key ")[1].split()[0]
    again = _fractui("--config", str(config), "submit", "--queue", "q", "--key", key, "--",
                     "true")
    assert (again.returncode, again.stdout) == (0, "1 pending in queue q\n"), again
    assert _jobs_of(stores, key) == 1


def _lines(stream: IO[str]) -> "queue.Queue[str]":
    """The lines of ``stream`` as they come, read on a thread of their own ("" at its end)."""
    lines: "queue.Queue[str]" = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)
        lines.put("")
    threading.Thread(target=read, daemon=True).start()
    return lines


def _until(lines: "queue.Queue[str]", part: str) -> List[str]:
    """The lines up to the first holding ``part``; fails where none comes (a guard, not a
    timing: the bound under test is 1 s)."""
    seen: List[str] = []
    while not seen or part not in seen[-1]:
        try:
            seen.append(lines.get(timeout=60))
        except queue.Empty:
            pytest.fail("no line holding %r came: %s" % (part, seen))
        if seen[-1] == "":
            pytest.fail("its stderr ended before a line holding %r: %s" % (part, seen))
    return seen


def test_a_scheduler_whose_server_stalls_says_so_and_goes_on(local_fleet, pg_server):
    """The lease-holding ``fractui scheduler``, every link to its server stalled (each held
    open, new ones taken and never answered): its passes end in the store's words, logged,
    and it goes on; once the link passes again, a job submitted then is placed and runs, and
    SIGTERM stops it (exit 0), no traceback."""
    db = pg_server.new_database()
    direct = open_store(pg_server.url(db))
    proxy = PgProxy(pg_server.port)
    sched = None
    try:
        f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.25)],
                        store_url=proxy.url(db), lease_s=3.0)
        sched = subprocess.Popen([sys.executable, "-c", SHORT, "--config", f.write_config(),
                                  "scheduler", "--name", "s1"], cwd=REPO, text=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        said = _lines(sched.stderr)  # type: ignore[arg-type]
        wait(lambda: direct.lease_holder() is not None, direct.lease_holder, alive=sched)
        proxy.stall()
        stalled = _until(said, "the scheduler tries again every pass")
        proxy.restore()
        job = direct.submit("q", None, "n", localfleet.sleeper(600), REQUEST, "root@here")
        wait(lambda: direct.get(job.id).state == "running", lambda: direct.get(job.id),
             timeout_s=60, alive=sched)
        sched.terminate()
        assert sched.wait(timeout=60) == 0
        err = "".join(stalled) + "".join(iter(said.get, ""))
    finally:
        if sched is not None and sched.poll() is None:
            sched.kill()
            sched.wait()
        direct.close()
        proxy.close()
    assert not leaks(err) and "Traceback" not in err, err
    assert any(line.startswith("store postgresql://127.0.0.1:%d/%s: cannot reach the "
                               "PostgreSQL server: " % (proxy.port, db))
               for line in logged(err)), err


def test_a_submit_interrupted_after_its_commit_still_gives_its_json_record(stores, tmp_path):
    """``submit --json`` whose read of the scheduler's lease (after the job was recorded) stalls
    with the server, ended by Ctrl-C there: the job is queued, so its --json record is printed
    all the same, then exit 130. It exited 130 with no record, a script's parse of its output
    failing on a job that was queued (and would be submitted again)."""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[[queues]]\nname = "q"\ngpu = 0.25\n' % (
        stores.proxy.url(stores.db)))
    stores.proxy.cut_on("SELECT holder, expires_at", BEFORE, down=True, stall=True,
                        past="COMMIT")
    submitting = fractui_process(["--config", str(config), "submit", "--json", "--queue", "q",
                                  "--", "true"])
    try:
        wait(lambda: stores.proxy.cuts == 1, lambda: "the lease was never read",
             timeout_s=GUARD_S, alive=submitting)
        submitting.send_signal(signal.SIGINT)
        out, err = submitting.communicate(timeout=GUARD_S)
    finally:
        submitting.kill()
        stores.proxy.restore()
    assert submitting.returncode == 130 and not leaks(err), err
    (number,), = stores.sql("SELECT id FROM jobs")
    record = json.loads(out)
    assert (record["id"], record["state"]) == (number, "pending"), out


def test_a_cordon_whose_read_of_the_jobs_there_fails_is_said_recorded(stores, tmp_path):
    """``cordon --json`` whose read of the jobs on the host (after the cordon was recorded)
    stalls with the server: the cordon is recorded, so it is no failure: its --json record is
    printed (its state and jobs null: not read) and a line says what could not be read, exit
    0. It exited 1 in the store's words, no record: a script took the cordon for not made
    (and an admin's retry, or worse, an uncordon "to be safe")."""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[[queues]]\nname = "q"\ngpu = 0.25\n[[hosts]]\n'
                      'name = "gpu-a"\nhost = "127.0.0.1"\n' % stores.proxy.url(stores.db))
    stores.proxy.cut_on("SELECT * FROM jobs WHERE state IN", BEFORE, down=True, stall=True,
                        past="INSERT INTO cordons")
    done = _fractui("--config", str(config), "cordon", "gpu-a", "--json")
    stores.proxy.restore()
    assert [c.where() for c in stores.direct.cordons()] == ["gpu-a"]
    assert done.returncode == 0 and not leaks(done.stderr), done
    record = json.loads(done.stdout)
    assert (record["host"], record["mode"], record["state"], record["jobs"]) == (
        "gpu-a", "cordon", None, None), record
    assert done.stderr.startswith("fractui: gpu-a: the cordon is recorded; which of the "
                                  "store's jobs are there could not be read: store %s: " % (
                                      stores.proxied.where)), done.stderr


def test_a_stop_asked_whose_read_of_the_lease_fails_is_no_failure(stores, tmp_path):
    """``cancel`` of a running job: the stop is recorded (the scheduler stops it), then the
    read of whether a scheduler holds the lease stalls with the server. It exited 1 in the
    store's words after saying the job stopping, and a script cancelled it again; the read's
    failure is said, as submit says it, and the cancel exits 0."""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[[queues]]\nname = "q"\ngpu = 0.25\n' % (
        stores.proxy.url(stores.db)))
    job = submit(stores.direct, "q", None, "n", ["true"], REQUEST, ASKER)
    stores.direct.place(job.id, Slot("gpu-a", (0,), memory_mib=1024), "sched", "decided")
    stores.direct.started(job.id, "j1", None, "sched", "launched")
    stores.proxy.cut_on("SELECT holder, expires_at", BEFORE, down=True, stall=True,
                        past="INSERT INTO audit")
    done = _fractui("--config", str(config), "cancel", str(job.id))
    stores.proxy.restore()
    assert stores.direct.get(job.id).state == "stopping"
    assert (done.returncode, done.stdout) == (0, "%d stopping (the scheduler stops it)\n" % (
        job.id)) and not leaks(done.stderr), done
    assert done.stderr.startswith("fractui: job %d asked to stop; whether a scheduler serves "
                                  "it could not be read: store %s: " % (
                                      job.id, stores.proxied.where)), done.stderr


def test_a_placement_whose_read_of_the_lease_fails_is_no_failure(stores, tmp_path):
    """``place``: the placement is recorded (the scheduler launches it), then the read of
    whether a scheduler holds the lease stalls with the server. It exited 1 in the store's
    words after saying the job placed, as cancel did; the read's failure is said, as cancel
    and submit say it, and the place exits 0."""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[[queues]]\nname = "q"\ngpu = 0.25\n[[hosts]]\n'
                      'name = "gpu-a"\nhost = "127.0.0.1"\n' % stores.proxy.url(stores.db))
    stores.direct.record_inventory("gpu-a", {"cpus": 8, "memory_mib": 65536, "gpus": [
        {"index": 0, "uuid": "GPU-0", "name": "NVIDIA L4", "memory_mib": 23034,
         "mig_mode": False}]})
    job = submit(stores.direct, "q", None, "n", ["true"], REQUEST, ASKER)
    stores.proxy.cut_on("SELECT holder, expires_at", BEFORE, down=True, stall=True,
                        past="INSERT INTO audit")
    done = _fractui("--config", str(config), "place", str(job.id), "gpu-a", "0")
    stores.proxy.restore()
    assert stores.direct.get(job.id).state == "placed"
    assert done.returncode == 0 and done.stdout.startswith("%d placed on " % job.id) and \
        not leaks(done.stderr), done
    assert done.stderr.startswith("fractui: job %d is placed; whether a scheduler serves it "
                                  "could not be read: store %s: " % (
                                      job.id, stores.proxied.where)), done.stderr


def test_a_move_whose_read_of_the_lease_fails_is_no_failure(local_fleet, stores):
    """``move`` of a running job: the move is recorded (the scheduler stops it, then launches
    it there), then the read of whether a scheduler holds the lease stalls with the server.
    It exited 1 in the store's words, and its line saying the job moves never came; the
    line comes, the read's failure is said as cancel says it, and the move exits 0."""
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [QueueConfig(name="whole", gpus=1)],
                    store_url=stores.proxy.url(stores.db))
    job = f.submit("whole", argv=localfleet.sleeper(600))
    f.until(lambda: f.store.get(job.id).state == "running")
    there = "gpu-b" if f.store.get(job.id).slot.host == "gpu-a" else "gpu-a"
    stores.proxy.cut_on("SELECT holder, expires_at", BEFORE, down=True, stall=True,
                        past="INSERT INTO audit")
    done = _fractui("--config", f.write_config(), "move", str(job.id), there, "0")
    stores.proxy.restore()
    assert stores.direct.get(job.id).state == "stopping"
    assert (done.returncode, done.stdout) == (0, "%d moving to %s gpu0 23034 MiB: the "
                                              "scheduler stops it, then launches it there; "
                                              "the slot is held for it meanwhile\n" % (
                                                  job.id, there)) and \
        not leaks(done.stderr), done
    assert done.stderr.splitlines()[-1].startswith(
        "fractui: job %d is asked to move; whether a scheduler serves it could not be read: "
        "store %s: " % (job.id, stores.proxied.where)), done.stderr


def test_an_uncordon_whose_read_after_fails_is_said_recorded(stores, tmp_path):
    """``uncordon`` whose read of what is still out of service (after the uncordon was
    recorded) stalls with the server: the host is back in service, so it is said and is no
    failure, as cordon's read after is. It exited 1 in the store's words, no line: a script
    took the host for still out of service."""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[[queues]]\nname = "q"\ngpu = 0.25\n[[hosts]]\n'
                      'name = "gpu-a"\nhost = "127.0.0.1"\n' % stores.proxy.url(stores.db))
    stores.direct.cordon("gpu-a", None, "cordon", "root", "")
    stores.proxy.cut_on("SELECT * FROM cordons ORDER BY", BEFORE, down=True, stall=True,
                        past="DELETE FROM cordons")
    done = _fractui("--config", str(config), "uncordon", "gpu-a")
    stores.proxy.restore()
    assert stores.direct.cordons() == []
    assert (done.returncode, done.stdout) == (0, "back in service: gpu-a\n") and \
        not leaks(done.stderr), done
    assert done.stderr.startswith("fractui: gpu-a: the uncordon is recorded; whether it is "
                                  "still out of service as a whole could not be read: store "
                                  "%s: " % stores.proxied.where), done.stderr
