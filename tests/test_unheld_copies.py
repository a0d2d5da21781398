"""A live copy under this store's key that no job of the store holds — a copy of a job the store
does not have (a store restored from an older backup) — is never killed by the lease holder
(test_scheduler_hung_ssh), and is shown where an admin looks: ``jobs`` (a row of its own, saying
what it is and how to stop it), ``jobs --json`` (``copy_of``), ``status`` (under its host) and
the TUI's jobs view; ``fractui stop HOST/JOB`` stops it. Real agents and processes (local
transport), a real SQLite store."""

from __future__ import annotations

import json

from fractui.config import QueueConfig
from fractui.fleet.host import HostStatus
from fractui.sched.copies import held_copies
from fractui.tui.jobrows import job_rows
from fractui.tui.model import StoreView
from tests.cli_run import in_process
from tests.localfleet import local_fleet, sleeper  # noqa: F401 - the fixture


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
        calls.append(jobs)
        return set() if len(calls) == 1 else held_copies(jobs, stale, uid)

    monkeypatch.setattr(job_commands, "held_copies", first_read_before_the_launch)
    code, out, err = in_process(capfd, ["--config", config, "jobs"])
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and lines[1].split()[0] == str(job.id), out
    assert "fractui stop" not in out and len(calls) == 2, out
