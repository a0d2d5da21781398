"""A live copy under this store's key that no job of the store holds — a copy of a job the store
does not have (a store restored from an older backup) — is never killed by the lease holder
(test_scheduler_hung_ssh), and is shown where an admin looks: ``jobs`` (a row of its own, saying
what it is and how to stop it), ``jobs --json`` (``copy_of``), ``status`` (under its host) and
the TUI's jobs view; ``fractui stop HOST/JOB`` stops it. Real agents and processes (local
transport), a real SQLite store."""

from __future__ import annotations

import json
from typing import Dict, List

from fractui.config import QueueConfig
from fractui.fleet.host import HostStatus
from fractui.metrics.exporter import Exporter
from fractui.metrics.families import families
from fractui.metrics.state import PassReport
from fractui.sched.fleetview import HostView
from fractui.store.intents import Asker, ask_stop
from fractui.tui.jobrows import job_rows
from fractui.tui.model import StoreView
from tests.cli_run import closed_port, in_process
from tests.localfleet import local_fleet, sleeper, wait  # noqa: F401 - the fixture


def test_a_copy_of_a_job_the_store_does_not_have_is_shown_and_stopped_by_hand(
        local_fleet, capfd):  # noqa: F811
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.25)])
    config = f.write_config()
    session = f.fleet.session("gpu-a")
    key = "fractui-%s-99.0" % f.store.uid
    copy = session.call("job.launch", {"key": key, "argv": sleeper(600), "gpus": [0],
                                       "memory_mib": 1024, "name": "ghost"})
    ref = "gpu-a/%s" % copy["id"]
    job = f.submit("q")
    f.until(lambda: f.store.get(job.id).state == "running")
    ours = f.store.get(job.id).agent_job
    why = ("a copy of job 99's attempt 0, a job this store does not have (a store restored "
           "from an older backup, or another fractui store of the same id): left running, its "
           "GPU charged to no team; fractui stop %s stops it" % ref)

    code, out, err = in_process(capfd, ["--config", config, "jobs"])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split()[0] == str(job.id)  # the store's job, then the copy: one row each
    assert lines[2].split()[:2] == [ref, "running"] and lines[2].endswith(why), out
    assert len(lines) == 3 and "gpu-a/%s" % ours not in out, out

    code, out, err = in_process(capfd, ["--config", config, "jobs", "--json"])
    assert code == 0, err
    rows = json.loads(out)["jobs"]
    assert [r["ref"] for r in rows] == [str(job.id), ref]
    assert rows[1]["copy_of"] == {"job": 99, "attempt": 0, "why": why}

    code, out, err = in_process(capfd, ["--config", config, "status"])
    assert code == 0, err
    assert "    %s: %s" % (ref, why) in out.splitlines(), out
    code, out, err = in_process(capfd, ["--config", config, "status", "--json"])
    assert json.loads(out)["hosts"][0]["unheld_copies"] == [
        {"ref": ref, "job": 99, "attempt": 0, "why": why}]

    # the TUI's jobs view: the copy's row says what it is, not "launched on the host"
    statuses = {s.name: s for s in f.fleet.statuses()}
    assert all(isinstance(s, HostStatus) for s in statuses.values())
    view = StoreView(f.store.uid, tuple(f.store.jobs()))
    tui = {r.ref: r for r in job_rows(view, statuses, 0.0)}
    assert set(tui) == {str(job.id), ref}
    assert tui[ref].reason == ("a copy of job 99's attempt 0 that no active job of the store "
                               "holds: a late one is killed by the lease holder, any other "
                               "left running (fractui jobs 99 says which)")

    # an admin stops it by hand; the store's job runs on
    code, out, err = in_process(capfd, ["--config", config, "stop", ref, "--grace", "0"])
    assert code == 0, err
    f.until(lambda: session.call("job.get", {"job": copy["id"]})["state"] == "killed")
    assert f.store.get(job.id).state == "running"
    code, out, err = in_process(capfd, ["--config", config, "jobs"])
    assert ref not in out and len(out.splitlines()) == 2, out


def test_a_copy_launched_between_the_stores_read_and_the_hosts_answer_is_its_jobs(
        local_fleet, capfd, monkeypatch):  # noqa: F811
    """``jobs`` reads the store, then asks the hosts: a job launched (or moved) in between
    runs a copy that the first read did not hold. It is its job's own, not a copy to stop by
    hand (the words would tell an admin to stop a job that runs as the store has it): the
    store read again for it holds it, and it is not shown as a copy."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.25)])
    config = f.write_config()
    job = f.submit("q")
    f.until(lambda: f.store.get(job.id).state == "running")
    from fractui import job_commands
    calls = []

    def first_read_before_the_launch(jobs, stale, uid):  # type: ignore[no-untyped-def]
        calls.append(jobs)  # (the read again is judged by copies.judged)
        return set()

    monkeypatch.setattr(job_commands, "held_copies", first_read_before_the_launch)
    code, out, err = in_process(capfd, ["--config", config, "jobs"])
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and lines[1].split()[0] == str(job.id), out
    assert "fractui stop" not in out and len(calls) == 1, out


def _requeued_and_running_again(f, job):  # type: ignore[no-untyped-def]
    """Asks a requeue of the running ``job`` and steps the scheduler until its next attempt
    runs (its first stopped, on the same host: the fleet has one GPU)."""
    f.store.stopping(job.id, ("running",), "requeue", "test", "asked")
    f.until(lambda: (f.store.get(job.id).attempt, f.store.get(job.id).state) == (1, "running"))


def test_a_copy_that_ended_between_the_hosts_answer_and_the_stores_read_is_not_a_late_one(
        local_fleet, capfd, monkeypatch):  # noqa: F811
    """``status`` asks the hosts, then reads the store: a copy a host showed running whose
    job was requeued (or moved) before the store's read, its copy stopped, read as "a late
    copy … the lease holder kills it" of a copy that was its job's own. The store read before
    the hosts answered holds it: not shown."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.25)])
    config = f.write_config()
    job = f.submit("q")
    f.until(lambda: f.store.get(job.id).state == "running")
    from fractui import commands
    real = commands.open_fleet

    def answered_then_requeued(*args):  # type: ignore[no-untyped-def]
        fleet = real(*args)
        stop = fleet.stop

        def then():  # (status stops its fleet once it has the hosts' answer)
            stop()
            _requeued_and_running_again(f, job)
        fleet.stop = then
        return fleet

    monkeypatch.setattr(commands, "open_fleet", answered_then_requeued)
    code, out, err = in_process(capfd, ["--config", config, "status", "--json"])
    assert code == 0, err
    host = json.loads(out)["hosts"][0]
    assert [j["key"] for j in host["jobs"] if j["state"] == "running"] == [
        "fractui-%s-%d.0" % (f.store.uid, job.id)], out  # the hosts' answer: attempt 0 ran
    assert host["unheld_copies"] == [], out


def test_a_copy_the_store_has_not_reached_when_the_tui_last_read_it_is_not_one_to_stop(
        local_fleet):  # noqa: F811
    """The TUI's jobs view judges a copy by its last read of the store, which may be older
    than a host's word: a job's next attempt launched since read as a copy "left running …
    fractui stop … stops it" until the store was read again."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.25)])
    job = f.submit("q")
    f.until(lambda: f.store.get(job.id).state == "running")
    view = StoreView(f.store.uid, tuple(f.store.jobs()))  # read before the next attempt
    _requeued_and_running_again(f, job)
    key = f.store.get(job.id).key(f.store.uid)
    f.until(lambda: any(j.get("key") == key and j.get("state") == "running"
                        for s in f.fleet.statuses() for j in s.jobs.values()))
    rows = job_rows(view, {s.name: s for s in f.fleet.statuses()}, 0.0)
    copy = [r for r in rows if r.job_id is None]
    assert len(copy) == 1 and copy[0].reason == (
        "a copy of job %d's attempt 1, an attempt the store had not reached when last read "
        "here: launched since, it is the job's own once the store is read again (fractui "
        "jobs %d says)" % (job.id, job.id)), rows
    # read again, it is the job's row
    rows = job_rows(StoreView(f.store.uid, tuple(f.store.jobs())),
                    {s.name: s for s in f.fleet.statuses()}, 0.0)
    assert [r.ref for r in rows] == [str(job.id)]


def test_a_stale_copy_is_said_to_be_one(local_fleet, capfd):  # noqa: F811
    """A copy of a lost host's job, recorded stale when its job was requeued without it, is
    stopped by the lease holder once it reaches the host again; ``jobs``, ``status`` and the
    TUI called it "a late copy … the lease holder kills it" (a stale copy was not held)."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.25)])
    config = f.write_config()
    job = f.submit("q")
    f.until(lambda: f.store.get(job.id).state == "running")
    ref = "gpu-a/%s" % f.store.get(job.id).agent_job
    # as the lease holder does when gpu-a is lost for host_lost_s (no pass is run after it:
    # the copy runs on, as it does on a host no lease holder reaches)
    f.store.requeue(job.id, ("running",), "test", "host gpu-a lost", stale_on="gpu-a")
    why = ("a stale copy of job %d's attempt 0: gpu-a was lost while it ran and the job went "
           "on without it; the lease holder stops it once it reaches gpu-a again" % job.id)

    code, out, err = in_process(capfd, ["--config", config, "jobs", "--json"])
    assert code == 0, err
    rows = json.loads(out)["jobs"]
    assert [r["ref"] for r in rows] == [str(job.id), ref]
    assert rows[1]["copy_of"] == {"job": job.id, "attempt": 0, "why": why}
    code, out, err = in_process(capfd, ["--config", config, "status"])
    assert code == 0, err
    assert "    %s: %s" % (ref, why) in out.splitlines(), out
    view = StoreView(f.store.uid, tuple(f.store.jobs()), stale=tuple(f.store.stale()))
    tui = {r.ref: r for r in job_rows(view, {s.name: s for s in f.fleet.statuses()}, 0.0)}
    assert tui[ref].reason == why


def test_a_role_that_may_not_read_the_stale_copies_is_shown_a_stale_one_as_late(tmp_path):
    """A PostgreSQL role granted SELECT on the jobs alone is refused the stale copies
    (StoreForbidden; tests/test_store_postgres.py reads it so on a real server): ``jobs``,
    ``status`` and the TUI then judge the copies without them (a stale copy said as the late
    copy it also is), rather than failing whole."""
    from fractui.copy_words import judged_again, stale_copies
    from fractui.sched.copies import Unheld
    from fractui.store import SqliteStore
    from fractui.store.base import StoreForbidden

    class NoStale(SqliteStore):
        def stale(self, host=None):  # type: ignore[no-untyped-def]
            raise StoreForbidden("here", "role ann may not do this")

    store = NoStale(str(tmp_path / "store.db"))
    try:
        job = store.submit("q", None, "r", ["x"], {}, "test")
        store.requeue(job.id, ("pending",), "test", "asked")  # (attempt 1)
        copy = Unheld("gpu-a", "j1", "fractui-%s-%d.0" % (store.uid, job.id), job.id, 0)
        assert stale_copies(store) == []
        assert judged_again(store, [copy], []) == [(copy, (
            "a late copy of job %d's attempt 0 (the job is at attempt 1 (pending)): the lease "
            "holder kills it" % job.id))]
    finally:
        store.close()


def test_the_copies_the_store_does_not_hold_are_counted_by_host_and_kind_for_prometheus(
        local_fleet):  # noqa: F811
    """fractui_host_unheld_copies, from the lease holder's passes: a stale copy, a late copy
    and a copy of a job the store does not have are each counted on their host while they
    run; the stale and the late one are stopped, and the next passes count them 0, the one
    left running 1 — what an alert reads. The scheduler's own loop, its reports heard by the
    exporter as `fractui scheduler` wires them."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.25)])
    session = f.fleet.session("gpu-a")
    lost = f.submit("q")
    f.until(lambda: f.store.get(lost.id).state == "running")
    # as the lease holder does when gpu-a is lost for host_lost_s: its copy runs on, stale
    f.store.requeue(lost.id, ("running",), "test", "host gpu-a lost", stale_on="gpu-a")
    late = f.submit("q")
    ask_stop(f.store, late, "cancel", Asker("test"))  # cancelled before it was placed
    for key in (f.store.get(late.id).key(f.store.uid), "fractui-%s-99.0" % f.store.uid):
        session.call("job.launch", {"key": key, "argv": sleeper(600), "gpus": [0],
                                    "memory_mib": 1024})
    exporter = Exporter(("127.0.0.1", closed_port()), f.config,
                        lambda: [HostView.of(s) for s in f.fleet.statuses()])
    reports: List[PassReport] = []

    def heard(report: PassReport) -> None:
        reports.append(report)
        exporter.report(report)

    def counted() -> List[Dict[str, int]]:
        return [dict(r.copies["gpu-a"]) for r in list(reports) if r.copies is not None]

    f.scheduler.on_turn = heard
    f.scheduler.start()
    try:
        wait(counted, lambda: "no full pass reported")
        assert counted()[0] == {"late": 1, "stale": 1, "left": 1}  # the first pass's
        wait(lambda: counted()[-1] == {"late": 0, "stale": 0, "left": 1}, counted)
        got = {s.labels["kind"]: s.value for fam in families(exporter.state())
               for s in fam.samples if s.name == "fractui_host_unheld_copies"
               and s.labels["host"] == "gpu-a"}
        assert got == {"late": 0.0, "stale": 0.0, "left": 1.0}
    finally:
        f.scheduler.stop()
        exporter.close()
