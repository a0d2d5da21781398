"""The long waits of a researcher's verbs, ``fractui submit --wait`` and ``fractui logs -f``,
through a store lost wherever the loss falls: at the start, between a job's attempts, as the
end of its job is read. Each read they make goes through the one wait (fractui.store_outage):
said once when lost and once when back, and the verb goes on to its job's end. The store is
lost by a loopback proxy that cuts the link at a statement and refuses every connection after
(tests/pg_proxy.py), until the test lets them through again; a real PostgreSQL, a real
``fractui scheduler``, simulated hosts."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from fractui.config import QueueConfig
from fractui.store import open_store
from tests import localfleet
from tests.cli_run import fractui_process, leaks, reaped, subprocess_run
from tests.conftest import REPO
from tests.localfleet import LocalFleet, wait
from tests.pg_proxy import BEFORE, PgProxy
from tests.resolver import EAI_AGAIN, Resolver
from tests.test_logs_store import _following, _store_only
from tests.test_pg_restart_watchers import _said_until

local_fleet = localfleet.local_fleet
LOST = "; waiting for the store to come back (%s)\n"


@dataclasses.dataclass
class Cut:
    """A fleet (gpu-a, queue q, a lease of 3 s) on a database of its own, and a proxy to that
    database, which the test cuts, for the researcher's verbs."""
    f: LocalFleet
    proxy: PgProxy
    db: str

    def through(self, name: str) -> str:
        """The fleet's config, written as ``name``, with its store reached through the proxy."""
        path = self.f.tmp / name
        path.write_text(Path(self.f.write_config()).read_text().replace(
            json.dumps(self.f.config.store.url), json.dumps(self.proxy.url(self.db))))
        return str(path)


@pytest.fixture
def cut(local_fleet, pg_server) -> Iterator[Cut]:
    db = pg_server.new_database()
    proxy = PgProxy(pg_server.port)
    try:
        yield Cut(local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.125)],
                              store_url=pg_server.url(db), lease_s=3.0), proxy, db)
    finally:
        proxy.close()


def test_submit_wait_rides_out_a_store_lost_as_it_reads_how_its_job_ended(cut):
    """``submit --wait`` of a job that fails: the store lost as the waiter reads the job's last
    lines, after the job ended (before: exit 1, "stopped waiting", of a job that had ended).
    It says the store lost and back, then how the job ended and its output, exit 1 as the
    job's failure gives."""
    f, proxy = cut.f, cut.proxy
    with reaped(f.scheduler_process("s1"), signal.SIGTERM) as sched:
        wait(lambda: "gpu-a" in f.store.inventory(), f.store.inventory, alive=sched)
        proxy.cut_on("SELECT * FROM log_tails", BEFORE, down=True)
        with reaped(fractui_process(["--config", cut.through("user.toml"), "submit",
                                     "--queue", "q", "--wait", "--", "sh", "-c",
                                     "echo hello; exit 3"])) as waiter:
            lost = _said_until(waiter.stderr, "waiting for the store")
            proxy.restore()
            out, err = waiter.communicate(timeout=120)
    assert lost[-1].endswith(LOST % "job 1 has ended; how it ended is read once it is"), lost
    assert (waiter.returncode, out) == (1, "1 pending in queue q\n"), (lost, err)
    assert err == ("fractui: the store is back; reading how job 1 ended\n"
                   "fractui: job 1 ended: exited 3: hello\n"
                   "fractui: all of its output (1 line):\n  hello\n"), err
    assert not leaks("".join(lost) + err)


def test_logs_follow_rides_out_a_store_lost_at_its_start_and_between_attempts(
        cut, tmp_path: Path):
    """``logs -f`` through the store of a running job, the store lost as it starts (every
    connection refused), and again as it reads the end of the attempt it followed, the job
    requeued (before: exit 1 with the store's words, each time). Each time it says the store
    lost and back; it follows the next attempt and ends as the job does (exit 0)."""
    f, proxy = cut.f, cut.proxy
    go = tmp_path / "go"
    job = f.submit("q", argv=[sys.executable, "-c", "import os, time\nprint('one', "
                              "flush=True)\nwhile not os.path.exists(%r):\n    "
                              "time.sleep(0.05)\nprint('two', flush=True)" % str(go)])
    with reaped(f.scheduler_process("s1"), signal.SIGTERM) as sched:
        wait(lambda: f.states()[job.id] == "running", f.states, timeout_s=60, alive=sched)
        proxy.refuse()
        with reaped(_following(_store_only(f, proxy.url(cut.db)), job.id,
                               wait_s=60.0)) as follower:
            at_start = _said_until(follower.stderr, "waiting for the store")
            proxy.restore()
            back = follower.stderr.readline()
            first = follower.stdout.readline()
            proxy.cut_on("SELECT has_schema_privilege", BEFORE, down=True)  # the next open
            requeued = subprocess_run(["--config", f.write_config(), "requeue", str(job.id)])
            assert requeued.returncode == 0, requeued
            between = _said_until(follower.stderr, "waiting for the store")
            proxy.restore()
            wait(lambda: f.store.get(job.id).attempt == 1 and f.states()[job.id] == "running",
                 f.states, timeout_s=60, alive=sched)
            go.touch()
            out, err = follower.communicate(timeout=120)
    meanwhile = LOST % "job %d goes on meanwhile" % job.id
    assert at_start[-1].endswith(meanwhile) and len(at_start) == 1, at_start
    assert (back, first) == ("fractui: the store is back; following job %d\n" % job.id,
                             "one\n"), (back, first)
    assert between[-1].endswith(meanwhile) and len(between) == 1, between
    lines = err.splitlines()
    assert lines[0] == "fractui: the store is back; following job %d" % job.id, err
    assert lines[1].startswith("fractui: job %d went back to its queue (requeued by " % job.id)
    assert lines[-1] == "fractui: job %d ended: exited 0" % job.id, err
    assert (follower.returncode, out) == (0, "one\ntwo\n"), err
    assert not leaks("".join(at_start + between) + err)


def test_submit_without_wait_whose_lease_read_fails_says_its_job_queued(pg_server, tmp_path):
    """A submit that does not wait reads the lease once its job is queued, to say whether a
    scheduler serves it; that read lost (the link cut as it goes up, every connection refused
    after): it says the job queued and that whether one serves it could not be read, exit 0
    with the job's number on stdout (before: exit 1, "stopped waiting", of a submit that never
    waited — and a script would have submitted it again). The job is in the store, once."""
    db = pg_server.new_database()
    made = open_store(pg_server.url(db))  # (made: the submit's own reads are the lease's only)
    proxy = PgProxy(pg_server.port)
    try:
        config = tmp_path / "user.toml"
        config.write_text('[store]\nurl = %s\n[[queues]]\nname = "q"\ngpu = 0.5\n'
                          % json.dumps(proxy.url(db)))
        proxy.cut_on("SELECT holder, expires_at, epoch, trouble FROM lease", BEFORE, down=True)
        done = subprocess_run(["--config", str(config), "submit", "--queue", "q", "--",
                               "true"])
        assert proxy.cuts == 1, (proxy.fell, done.stderr)
        assert (done.returncode, done.stdout) == (0, "1 pending in queue q\n"), done.stderr
        said = done.stderr.splitlines()[-1]
        assert said.startswith("fractui: job 1 is queued; whether a scheduler serves it could "
                               "not be read: store "), done.stderr
        assert "stopped waiting" not in done.stderr and not leaks(done.stderr), done.stderr
        assert [j.id for j in made.jobs()] == [1]
    finally:
        proxy.close()
        made.close()


def test_a_scheduler_started_while_its_store_is_away_waits_and_then_schedules(cut):
    """``fractui scheduler`` started while its PostgreSQL store takes no connection (a
    restart, a head node up before the database server): it says the store's words once and
    waits, takes the lease once the store answers and places what waits (before: exit 1, and
    systemd's restarts of it give up after StartLimitBurst; the stress run of many teams saw
    a scheduler started again in the server's crash recovery end so)."""
    f, proxy = cut.f, cut.proxy
    job = f.submit("q")
    proxy.refuse()
    sched = fractui_process(["--config", cut.through("away.toml"), "scheduler", "--name", "s1"])
    try:
        lost = _said_until(sched.stderr, "waiting for the store")
        assert sched.poll() is None, (lost, sched.communicate())
        proxy.restore()
        assert sched.stderr.readline() == "fractui: the store is back; the scheduler starts\n"
        wait(lambda: f.states()[job.id] == "running", f.states, timeout_s=60, alive=sched)
        assert (f.store.lease_holder() or ("",))[0] == "s1"
    finally:
        proxy.close()  # first: the scheduler ends with its store away
        sched.terminate()
        err = sched.communicate(timeout=60)[1]
    assert len(lost) == 1 and lost[0].endswith(
        LOST % "the scheduler starts once it answers"), lost
    assert "Traceback" not in err and not leaks("".join(lost)), err


def test_a_scheduler_whose_store_host_the_resolver_cannot_look_up_yet_waits_for_it(
        cut, pg_server):
    """``fractui scheduler`` whose store's host name the resolver cannot look up for now
    (EAI_AGAIN: a name server not up yet at boot, or not reached) is waited for as a store
    away, never ended as a URL naming no host (EAI_NONAME: exit 1 at once); once the name
    resolves, it takes the lease and places what waits. A resolver of the test's own
    (tests/resolver.py), no network."""
    f, name = cut.f, "fractui-store.test"
    job = f.submit("q")
    resolver = Resolver(f.tmp / "resolver")
    assert resolver.answer(name) == EAI_AGAIN
    path = f.tmp / "by-name.toml"
    path.write_text(Path(f.write_config()).read_text().replace(
        json.dumps(f.config.store.url), json.dumps("postgresql://postgres@%s:%d/%s" % (
            name, pg_server.port, cut.db))))
    with reaped(fractui_process(["--config", str(path), "scheduler", "--name", "s1"],
                                resolver.command), signal.SIGTERM) as sched:
        lost = _said_until(sched.stderr, "waiting for the store")
        assert sched.poll() is None, (lost, sched.communicate())
        resolver.knows(name)
        back = sched.stderr.readline()
        assert back == "fractui: the store is back; the scheduler starts\n", (
            lost, back, sched.communicate(timeout=60))
        wait(lambda: f.states()[job.id] == "running", f.states, timeout_s=60, alive=sched)
        assert (f.store.lease_holder() or ("",))[0] == "s1"
    assert len(lost) == 1 and name in lost[0] and "cannot reach the PostgreSQL server" in \
        lost[0] and lost[0].endswith(LOST % "the scheduler starts once it answers"), lost
    assert "Traceback" not in lost[0], lost


def test_submit_wait_rides_out_a_store_host_the_resolver_cannot_look_up_for_a_while(cut):
    """``submit --wait`` whose store's host name the resolver cannot look up for a while, as
    its job runs (EAI_AGAIN): waited for as a store away, said in the resolver's words, never
    ended as a URL naming no host; once the name resolves again it waits on, and says how
    the job ended, exit 1 as the job's failure gives."""
    f, name = cut.f, "fractui-store.test"
    resolver = Resolver(f.tmp / "resolver")
    resolver.knows(name)
    path = f.tmp / "by-name.toml"
    path.write_text(Path(cut.through("user.toml")).read_text().replace(
        cut.proxy.url(cut.db), "postgresql://postgres@%s:%d/%s" % (
            name, cut.proxy.port, cut.db)))
    go = f.tmp / "go"
    with reaped(f.scheduler_process("s1"), signal.SIGTERM) as sched:
        wait(lambda: "gpu-a" in f.store.inventory(), f.store.inventory, alive=sched)
        with reaped(fractui_process(["--config", str(path), "submit", "--queue", "q",
                                     "--wait", "--", "sh", "-c", "while [ ! -e %s ]; do "
                                     "sleep 0.1; done; echo hello; exit 3" % go],
                                    resolver.command)) as waiter:
            assert waiter.stdout.readline() == "1 pending in queue q\n"
            resolver.forgets(name)
            lost = _said_until(waiter.stderr, "waiting for the store")
            assert waiter.poll() is None, (lost, waiter.communicate(timeout=60))
            resolver.knows(name)
            back = _said_until(waiter.stderr, "the store is back")
            go.touch()
            out, err = waiter.communicate(timeout=120)
    assert lost[-1].endswith(LOST % "job 1 goes on meanwhile") and \
        "Temporary failure in name resolution" in lost[-1], lost
    assert back[-1] == "fractui: the store is back; waiting for job 1 to end\n", back
    assert (waiter.returncode, out) == (1, ""), (lost, back, err)
    assert "fractui: job 1 ended: exited 3: hello\n" in err, err
    assert not leaks("".join(lost + back) + err)


def test_the_resolvers_tests_are_skipped_saying_why_where_root_may_not_unshare(tmp_path):
    """Root without CAP_SYS_ADMIN (a default Docker container's root) may not make a mount
    namespace: the tests with a resolver of their own are skipped, saying why, where they
    failed with "unshare failed: Operation not permitted". Such a root made here: the
    capability dropped from a process's bounding and inheritable sets."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("drops a capability of root's: needs root and setpriv")
    done = subprocess.run(
        ["setpriv", "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin", sys.executable,
         "-c", "import sys\nfrom pathlib import Path\nfrom tests.resolver import Resolver\n"
               "try:\n    Resolver(Path(sys.argv[1]))\nexcept BaseException as err:\n"
               "    print(type(err).__name__, err)", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done
    assert done.stdout.startswith("Skipped a resolver of the test's own is mounted over "
                                  "/etc/resolv.conf and /etc/hosts in a mount namespace: "
                                  "this root may not make one here (no CAP_SYS_ADMIN?): "
                                  "unshare: "), done.stdout
    assert "Operation not permitted" in done.stdout, done.stdout


def test_a_scheduler_whose_store_goes_away_as_it_asks_who_it_is_waits_for_it(cut):
    """The store lost after the scheduler opened it and before it read who it runs as (the
    rule that lets it schedule): waited for as a store away at the open, then it schedules
    (before: exit 1, the window between the open and the check)."""
    f, proxy = cut.f, cut.proxy
    job = f.submit("q")
    proxy.cut_on("WITH RECURSIVE member_of", BEFORE, down=True)
    sched = fractui_process(["--config", cut.through("away.toml"), "scheduler", "--name", "s1"])
    try:
        lost = _said_until(sched.stderr, "waiting for the store")
        assert len(lost) == 1 and lost[0].endswith(
            LOST % "the scheduler starts once it answers") and proxy.cuts == 1, lost
        proxy.restore()
        assert sched.stderr.readline() == "fractui: the store is back; the scheduler starts\n"
        wait(lambda: f.states()[job.id] == "running", f.states, timeout_s=60, alive=sched)
    finally:
        proxy.close()  # first: the scheduler ends with its store away
        sched.terminate()
        err = sched.communicate(timeout=60)[1]
    assert "Traceback" not in err and not leaks("".join(lost)), err


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_scheduler_waiting_for_its_store_is_stopped_by_a_signal_with_exit_0(cut, stop):
    """SIGTERM (``systemctl stop``) or Ctrl-C while a scheduler waits for its store to come
    back: it ends at once with exit 0, as docs/cli.md says the scheduler ends at either; it
    holds no lease to hand over (before: killed by SIGTERM's default action, exit 130 at
    Ctrl-C)."""
    cut.proxy.refuse()
    with reaped(fractui_process(["--config", cut.through("away.toml"), "scheduler"])) as sched:
        lost = _said_until(sched.stderr, "waiting for the store")
        sched.send_signal(stop)
        err = sched.communicate(timeout=60)[1]
    assert sched.returncode == 0 and "Traceback" not in err, (sched.returncode, lost, err)
    assert cut.f.store.lease_holder() is None


@pytest.mark.parametrize("url, said", [
    ("postgresql://postgres@127.0.0.1:%(port)d/%(db)s?sslmode=require",
     "the server at 127.0.0.1 answers, but not with the encryption this URL asks for "
     "(sslmode=require)"),
    ("postgresql://postgres@%(db)s.invalid:%(port)d/%(db)s",
     "the resolver says no host has the name"),
    ("postgresql://postgres@127.0.0.1:%(port)d/%(db)s?sslmode=nope",
     "libpq refuses a value of this URL"),
])
def test_a_scheduler_whose_store_url_can_never_reach_it_ends_at_once(cut, pg_server, url, said):
    """``fractui scheduler`` whose URL reaches no server as it is written — encryption the
    server does not offer, a host name no resolver knows, a value libpq refuses — is not
    waited for as a server away (before: said once and waited for ever, the service looking
    up): exit 1 at once with the store's words, as a database not there."""
    path = cut.f.tmp / "wrong.toml"
    path.write_text(Path(cut.f.write_config()).read_text().replace(
        json.dumps(cut.f.config.store.url),
        json.dumps(url % {"port": pg_server.port, "db": cut.db})))
    with reaped(fractui_process(["--config", str(path), "scheduler", "--name", "s1"])) as sched:
        err = sched.communicate(timeout=60)[1]
    assert sched.returncode == 1 and said in err, err
    assert "waiting for the store" not in err and "Traceback" not in err, err
