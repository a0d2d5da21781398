"""What the store holds outlives the config it was made under. The config file is rewritten and
the scheduler restarted on it (as `fractui scheduler` is after an edit), on real simulated hosts
and the same store: jobs on a host the config dropped count as lost (requeued after
host_lost_s, their charge released, the audit saying why), as do jobs on a GPU their host no
longer has; a dropped queue starts no more jobs and says so; the running jobs of a dropped
team hold no quota, so a team within its quota may preempt them, as it may a team's jobs that
hold it past a quota lowered since they were placed (its newest first)."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import replace
from typing import Iterator

from fractui.checked_store import heard_inventory
from fractui.config import Config, QueueConfig, TeamConfig, load_config
from fractui.fleet.fleet import Fleet
from fractui.sched.queueing import schedule
from fractui.sched.quota import past_quota_jobs, team_usage
from fractui.scheduler import Scheduler
from fractui.scheduler.execute import AGENT_ENDED
from fractui.store import SqliteStore
from fractui.store.base import StoreUnavailable
from fractui.store.intents import Asker, ask_stop
from fractui.store.model import ACTIVE, OUT_OF_CONFIG, Slot
from tests import localfleet
from tests.conftest import REPO
from fractui.store_url import sqlite_path
from tests.localfleet import POLITE, wait
from tests.test_sched_reserve import job as pure_job, view as pure_view

local_fleet = localfleet.local_fleet
WHOLE = QueueConfig(name="whole", gpus=1)
QUARTER = QueueConfig(name="quarter", gpu=0.25)


def rewritten(f, **changes) -> Config:
    """The fleet's config file written again with ``changes``, loaded as fractui loads it."""
    kept = f.config
    f.config = replace(kept, **changes)
    try:
        path = f.write_config()
    finally:
        f.config = kept  # the fixture still stops every host it started
    return load_config(path)


@contextmanager
def restarted(f, config: Config) -> Iterator[Scheduler]:
    """The scheduler stopped, and started again on ``config`` (its own fleet, the same store)."""
    f.scheduler.stop()
    fleet = Fleet(config, reconnect_max_s=0.5).start()
    fleet.wait_settled(60)
    sched = Scheduler(config, f.store, fleet, name="restarted")
    try:
        yield sched
    finally:
        sched.stop()
        fleet.stop()


def until(f, sched: Scheduler, check) -> None:
    f.scheduler = sched  # f.until drives the scheduler it holds
    f.until(check)


def used(f, team: str) -> float:
    return next(u.used for u in team_usage(f.store.jobs(ACTIVE), f.config.teams)
                if u.name == team)


def test_jobs_on_a_host_dropped_from_the_config_are_lost_requeued_and_uncharged(local_fleet):
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [WHOLE], [TeamConfig("t", 2)],
                    host_lost_s=1.0)
    job = f.submit("whole", "t")
    f.until(lambda: f.store.get(job.id).state == "running")
    first = f.store.get(job.id)
    dropped = first.slot.host
    kept = next(h for h in f.config.hosts if h.name != dropped)
    config = rewritten(f, hosts=(kept,))
    assert [h.name for h in config.hosts] == [kept.name]
    with restarted(f, config) as sched:
        sched.step()
        assert f.store.get(job.id).state == "running"  # not at once: after host_lost_s
        until(f, sched, lambda: f.store.get(job.id).attempt == 1
              and f.store.get(job.id).state == "running")
    again = f.store.get(job.id)
    assert again.slot.host == kept.name
    assert used(f, "t") == 1.0  # charged once: the dropped copy's charge was released
    [requeued] = [e for e in f.store.audit_log(job.id) if e.action == "requeued"]
    assert requeued.why.startswith("host %s no longer in the config for " % dropped)
    assert requeued.actor == "restarted"
    assert [(s.host, s.key) for s in f.store.stale()] == [(dropped, first.key(f.store.uid))]


def test_a_queue_dropped_from_the_config_starts_no_more_jobs_and_says_so(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [WHOLE, QUARTER])
    running = f.submit("quarter")
    f.until(lambda: f.store.get(running.id).state == "running")
    with restarted(f, rewritten(f, queues=(WHOLE,))) as sched:
        waiting = f.submit("quarter")
        for _ in range(3):
            sched.step()
        sched.settle()
    assert f.store.get(waiting.id).state == "pending"
    assert f.store.get(waiting.id).reason == ("queue quarter is no longer in the config: it "
                                              "waits for the queue to come back, or to be "
                                              "cancelled")
    assert f.store.get(running.id).state == "running"  # what runs is left to run


def test_the_running_jobs_of_a_dropped_team_hold_no_quota_and_may_be_preempted(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [WHOLE],
                    [TeamConfig("vision", quota_gpus=1), TeamConfig("nlp", quota_gpus=1)],
                    preempt_grace_s=2.0)
    old = f.submit("whole", "nlp", POLITE)
    f.until(lambda: f.store.get(old.id).state == "running")
    assert not f.store.get(old.id).preemptible  # within nlp's quota while nlp was there
    with restarted(f, rewritten(f, teams=(TeamConfig("vision", quota_gpus=1),))) as sched:
        needy = f.submit("whole", "vision")
        until(f, sched, lambda: f.store.get(needy.id).state == "running")
    back = f.store.get(old.id)
    assert (back.state, back.attempt) == ("pending", 1)
    assert back.reason == "its team 'nlp' is not configured: it has no quota"
    preempted = [e for e in f.store.audit_log(old.id) if e.action == "preempt"]
    assert [e.why for e in preempted] == [
        "preempted: team vision (within quota) needs room for job %d" % needy.id]


def test_a_teams_jobs_past_a_lowered_quota_are_borrowed_newest_first_and_may_be_preempted(
        local_fleet):
    """nlp's quota is cut from 2 GPUs to 1 while it runs two whole-GPU jobs placed within the
    old one: what it holds past the new quota counts as borrowed, its job started last first,
    so vision, within its quota, preempts that one (it waited for one of them to end)."""
    f = local_fleet({"gpu-a": "2xL4"}, [WHOLE],
                    [TeamConfig("vision", quota_gpus=1), TeamConfig("nlp", quota_gpus=2)],
                    preempt_grace_s=2.0)
    old = f.submit("whole", "nlp")
    f.until(lambda: f.store.get(old.id).state == "running")
    new = f.submit("whole", "nlp", POLITE)
    f.until(lambda: f.store.get(new.id).state == "running")
    assert not f.store.get(new.id).preemptible  # within nlp's quota while it was 2
    cut = (TeamConfig("vision", quota_gpus=1), TeamConfig("nlp", quota_gpus=1))
    nlp = next(u for u in team_usage(f.store.jobs(ACTIVE), cut) if u.name == "nlp")
    assert (nlp.used, nlp.within, nlp.borrowed) == (2.0, 1.0, 1.0)
    with restarted(f, rewritten(f, teams=cut)) as sched:
        needy = f.submit("whole", "vision")
        until(f, sched, lambda: f.store.get(needy.id).state == "running")
    assert f.store.get(old.id).state == "running"  # within the new quota: never preempted
    back = f.store.get(new.id)
    assert (back.state, back.attempt) == ("pending", 1)
    assert back.reason == "team nlp is at its quota (1.00 of 1.00 GPUs held)"
    preempted = [e for e in f.store.audit_log(new.id) if e.action == "preempt"]
    assert [e.why for e in preempted] == [
        "preempted: team vision (within quota) needs room for job %d" % needy.id]


def test_a_quota_cut_to_a_part_of_a_job_holds_the_team_at_it_and_lends_its_newest_job():
    """The pure pass: nlp holds two whole GPUs placed within a quota of 2, cut to 1.5. Its
    newest job is preemptible whole (a job is stopped whole), but only the 0.5 past the
    quota counts as borrowed: the team is at its quota, as the store's check sums it, so its
    quarter job waits rather than be placed within a quota the store would refuse; vision's
    whole-GPU job preempts nlp's newest, not its oldest."""
    quarter = QueueConfig(name="quarter", gpu=0.25)
    teams = (TeamConfig("vision", quota_gpus=1), TeamConfig("nlp", quota_gpus=1.5))
    held = [replace(pure_job(i, WHOLE), state="running", started_at=at,
                    slot=Slot("h", (i - 1,), memory_mib=23034, charge=1.0))
            for i, at in ((1, -100.0), (2, -50.0))]
    assert past_quota_jobs(held, teams) == {2}
    nlp = next(u for u in team_usage(held, teams) if u.name == "nlp")
    assert (nlp.within, nlp.borrowed, nlp.room()) == (1.5, 0.5, 0.0)
    result = schedule([pure_view()], held + [pure_job(3, quarter), pure_job(4, WHOLE, "vision")],
                      (WHOLE, quarter), teams, "u")
    assert result.waiting[3] == "team nlp is at its quota (1.50 of 1.50 GPUs held)"
    assert [(p.victim, p.for_job) for p in result.preemptions] == [(2, 4)], result.waiting


def test_a_job_on_a_gpu_its_host_no_longer_has_is_lost_and_runs_again(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER], host_lost_s=1.0)
    job = f.submit("quarter")
    f.until(lambda: f.store.get(job.id).state == "running")
    first = f.store.get(job.id)
    # The store says GPU 1, which this one-GPU host does not report (as when a GPU is gone):
    # no transition moves a running job, so the test writes the file itself.
    with sqlite3.connect(f.store.path) as db:
        db.execute("UPDATE jobs SET gpus = '[1]' WHERE id = ?", (job.id,))
    assert f.store.get(job.id).slot == replace(first.slot, gpus=(1,))
    f.until(lambda: f.store.get(job.id).attempt == 1
            and f.store.get(job.id).state == "running")
    [requeued] = [e for e in f.store.audit_log(job.id) if e.action == "requeued"]
    assert requeued.why.startswith("GPU 1 of gpu-a gone for ")
    assert f.store.get(job.id).slot.gpus == (0,)
    f.until(lambda: not f.store.stale())  # the copy left running there is stopped
    old = next(r for r in f.agent_jobs() if r["key"] == first.key(f.store.uid))
    assert (old["state"], old["reason"]) == (
        "killed", "a stale copy: job %d was requeued while gpu-a was lost" % job.id)


def test_a_job_cancelled_while_its_host_is_lost_ends_and_its_copy_is_stopped_on_return(
        local_fleet):
    """Cancelled while its host is away: after host_lost_s it ends cancelled and its copy is
    recorded as stale in that one step (never requeued to run again); when the host is back,
    the copy is stopped."""
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [WHOLE], host_lost_s=1.0)
    job = f.submit("whole")
    f.until(lambda: f.store.get(job.id).state == "running")
    first = f.store.get(job.id)
    kept = next(h for h in f.config.hosts if h.name != first.slot.host)
    with restarted(f, rewritten(f, hosts=(kept,))) as sched:
        ask_stop(f.store, first, "cancel", Asker("test"))
        until(f, sched, lambda: f.store.get(job.id).state == "cancelled")
    key = first.key(f.store.uid)
    assert [(c.host, c.key) for c in f.store.stale()] == [(first.slot.host, key)]
    assert [(e.action, e.detail.get("stale_on")) for e in f.store.audit_log(job.id)][-2:] == [
        ("cancel", None), ("end", first.slot.host)]
    assert [j["state"] for j in f.agent_jobs() if j["key"] == key] == ["running"]
    with restarted(f, f.config) as sched:  # the host is back
        until(f, sched, lambda: not f.store.stale())
    after = [j["state"] for j in f.agent_jobs() if j["key"] == key]
    assert after and all(state in AGENT_ENDED for state in after), after
    assert f.store.get(job.id).state == "cancelled" and f.store.get(job.id).attempt == 0


def test_the_stops_sent_to_a_host_dropped_from_the_config_are_forgotten_after_host_lost_s(
        local_fleet, caplog):
    """A late copy killed on a host just before the config dropped it: its stop's row, kept
    until the host says the copy ended, is kept while the host may be put back, and forgotten
    once it has been out of the config for host_lost_s, said in the log; the host's lost-host
    clock ends with it, so the passes stop running for it. Before: the row stayed for ever,
    read by every holder that took the lease."""
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [QUARTER], host_lost_s=1.0)
    job = f.submit("quarter")
    ask_stop(f.store, job, "cancel", Asker("test"))  # cancelled before it was ever placed
    key = f.store.get(job.id).key(f.store.uid)
    f.fleet.session("gpu-b").call("job.launch", {"key": key, "argv": localfleet.sleeper(600),
                                                 "gpus": [0], "memory_mib": 1024})
    f.scheduler.step()  # the late copy's stop, sent and recorded; the edit comes before the
    assert f.scheduler.settle()  # next pass sees the copy ended
    assert f.store.holder_memory().stops_sent == {("gpu-b", key)}
    kept = next(h for h in f.config.hosts if h.name == "gpu-a")
    with restarted(f, rewritten(f, hosts=(kept,))) as sched:
        sched.step()
        memory = f.store.holder_memory()
        assert memory.stops_sent == {("gpu-b", key)}  # not at once: the edit may be undone
        assert set(memory.hosts_away) == {"gpu-b"}
        until(f, sched, lambda: not f.store.holder_memory().stops_sent)
        until(f, sched, lambda: not f.store.holder_memory().hosts_away)
        assert not sched._clocks_run()  # a pass only when something changes, as before
    said = [r.getMessage() for r in caplog.records if "is forgotten" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(
        "the stop of %s on gpu-b is forgotten: gpu-b has been out of the config for " % key), \
        said
    assert said[0].endswith(" s, so what became of the copy is not known (a late copy's GPU "
                            "time is charged to no one)"), said


def test_a_held_row_stalls_only_its_own_lost_job_and_stale_copy(local_fleet, pg_server,
                                                                  caplog):
    """PostgreSQL, a psql session left open on one job's row: of two jobs on a host dropped
    from the config, the other is requeued (and runs elsewhere) while the held one waits
    (logged), then goes too once the session ends. With the host back, the stale copy whose
    row is held is forgotten later, the other at once, and the held job runs there again
    meanwhile: the passes never fail on the held rows."""
    url = pg_server.url(pg_server.new_database())
    f = local_fleet({"gpu-a": "2xL4", "gpu-b": "1xL4"}, [WHOLE], store_url=url,
                    host_lost_s=1.0)
    f.store.cordon("gpu-b", None, "cordon", "test", "both jobs on gpu-a")
    held, other = f.submit("whole"), f.submit("whole")
    f.until(lambda: set(f.states().values()) == {"running"})
    f.store.uncordon("gpu-b", None, "test", "room for one of them")
    keys = {j.id: f.store.get(j.id).key(f.store.uid) for j in (held, other)}
    psql = pg_server.connect(url.rsplit("/", 1)[1])
    try:
        psql.execute("BEGIN")
        psql.execute("SELECT * FROM jobs WHERE id = %s FOR UPDATE", (held.id,))
        with restarted(f, rewritten(f, hosts=(f.config.host("gpu-b"),))) as sched:
            until(f, sched, lambda: f.store.get(other.id).attempt == 1
                  and f.states()[other.id] == "running")
            assert "job %d is left for a later pass: " % held.id in caplog.text
            assert f.store.get(held.id).state == "running"  # its row held: it waits
            psql.execute("ROLLBACK")
            until(f, sched, lambda: f.store.get(held.id).attempt == 1)
        assert sorted(c.key for c in f.store.stale()) == sorted(keys.values())
        caplog.clear()
        psql.execute("BEGIN")
        psql.execute("SELECT * FROM stale WHERE job = %s FOR UPDATE", (held.id,))
        with restarted(f, f.config) as sched:  # the host is back
            until(f, sched, lambda: [c.key for c in f.store.stale()] == [keys[held.id]]
                  and f.states()[held.id] == "running")
            assert "job %d is left for a later pass: " % held.id in caplog.text
            psql.execute("ROLLBACK")
            until(f, sched, lambda: not f.store.stale())
    finally:
        psql.close()


def test_the_facts_kept_of_a_host_dropped_from_the_config_are_forgotten_after_host_lost_s(
        local_fleet, store_url, caplog):
    """The facts the store keeps of a host the config dropped are kept while it may be put
    back, and forgotten once it has been out of the config for host_lost_s (its clock ends
    with them). Before: kept for ever, so a member's submit — whose config lists no hosts,
    and so judges a queue by every host the store keeps — took a job no host of the fleet
    could hold, on the dropped host's word."""
    caplog.set_level(logging.INFO, "fractui.scheduler")
    big = QueueConfig(name="big", memory_gib=40)  # an A100's, never an L4's (24 GiB)
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xA100-80GB"}, [QUARTER, big],
                    host_lost_s=1.0, store_url=store_url)
    f.until(lambda: set(f.store.inventory()) == {"gpu-a", "gpu-b"})
    kept = next(h for h in f.config.hosts if h.name == "gpu-a")
    with restarted(f, rewritten(f, hosts=(kept,))) as sched:
        sched.step()
        assert set(f.store.inventory()) == {"gpu-a", "gpu-b"}  # not at once: may be undone
        until(f, sched, lambda: set(f.store.inventory()) == {"gpu-a"})
        until(f, sched, lambda: not f.store.holder_memory().hosts_away)
        assert not sched._clocks_run()  # a pass only when something changes, as before
    assert caplog.text.count("forgot the facts kept of gpu-b: out of the config for ") == 1
    rewritten(f, hosts=())  # a member's config: the store and the queues, no hosts
    member = subprocess.run([sys.executable, "-m", "fractui", "--config", str(
        f.tmp / "config.toml"), "submit", "--queue", "big", "--", "true"], capture_output=True,
        text=True, cwd=REPO, timeout=120, stdin=subprocess.DEVNULL)
    assert member.returncode == 2, (member.stdout, member.stderr)
    assert "no GPU in the fleet could ever hold what queue big asks for (40 GiB, isolation " \
        "any); the fleet has 1x L4;" in member.stderr, member.stderr


def member(f, *argv: str) -> subprocess.CompletedProcess:
    """fractui run with ``argv`` from a member's config (the store and the queues, no hosts)."""
    rewritten(f, hosts=())
    return subprocess.run([sys.executable, "-m", "fractui", "--config", str(
        f.tmp / "config.toml"), *argv], capture_output=True, text=True, cwd=REPO, timeout=120,
        stdin=subprocess.DEVNULL)


def test_a_member_submit_counts_no_host_the_scheduler_dropped_while_its_facts_are_kept(
        local_fleet, store_url):
    """A host dropped from the lease holder's config counts no more for a member's submit
    from the first pass that finds it dropped, though its facts are kept (host_lost_s) in case
    it is put back: a job only it could hold is refused, naming it as not counted; put back,
    it counts again at once. ``status`` from the store says it removed, its facts as of when
    they were heard (the mark, written or taken off, is no new fact). Before: it counted
    until host_lost_s passed, and the job was queued for no host of the fleet to hold."""
    big = QueueConfig(name="big", memory_gib=40)  # an A100's, never an L4's (24 GiB)
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xA100-80GB"}, [QUARTER, big],
                    host_lost_s=3600.0, store_url=store_url)
    f.until(lambda: set(f.store.inventory()) == {"gpu-a", "gpu-b"})
    heard = f.store.inventory_since()
    everyone = f.config.hosts
    with restarted(f, rewritten(f, hosts=everyone[:1])) as sched:
        sched.step()
        assert set(f.store.inventory()) == {"gpu-a", "gpu-b"}  # kept: it may be put back
        assert f.store.inventory()["gpu-b"][OUT_OF_CONFIG]
        refused = member(f, "submit", "--queue", "big", "--", "true")
        assert refused.returncode == 2, (refused.stdout, refused.stderr)
        assert "no GPU in the fleet could ever hold what queue big asks for (40 GiB, " \
            "isolation any); the fleet has 1x L4;" in refused.stderr, refused.stderr
        assert refused.stderr.endswith("; gpu-b, out of the scheduler's config, not counted\n")
        assert "Traceback" not in refused.stderr
        shown = member(f, "status", "--json")
        assert {h["name"]: (h["state"], h["facts_since"]) for h in json.loads(
            shown.stdout)["hosts"]} == {"gpu-a": ("reachable", heard["gpu-a"]),
                                        "gpu-b": ("removed", heard["gpu-b"])}, shown
    with restarted(f, rewritten(f, hosts=everyone)) as sched:
        sched.step()
        assert OUT_OF_CONFIG not in f.store.inventory()["gpu-b"]
        assert f.store.inventory_since() == heard
        taken = member(f, "submit", "--queue", "big", "--", "true")
        assert taken.returncode == 0, (taken.stdout, taken.stderr)
        assert "out of the scheduler's config" not in taken.stderr


def test_the_output_asked_of_a_job_whose_host_was_dropped_is_answered_with_what_is_kept(
        local_fleet):
    """A request for the output of a job whose host is out of the config is answered without
    asking the host: with the tail kept, as it was kept (its time too: it is no fresher), or
    saying its host is out of the config. Before: it stood for ever, read again at every
    turn, and ``logs`` waited on it; then the tail kept was written again, as if read now.
    A tail kept while the job ran is its output's end once the job has ended (complete): left
    not so, ``logs -f`` asked on for ever and ``submit --wait`` found no end to show."""
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [WHOLE], [TeamConfig("t", 2)])
    f.store.cordon("gpu-a", None, "cordon", "ops", "the jobs run on gpu-b")
    jobs = [f.submit("whole", "t", argv=[sys.executable, "-c", "print('all done')"])
            for _ in range(2)]
    f.until(lambda: all(f.store.get(j.id).state == "done" for j in jobs))
    ended = [f.store.get(j.id) for j in jobs]
    assert {j.slot.host for j in ended} == {"gpu-b"}
    f.store.keep_log(ended[0].id, "all done\n", False, epoch=f.scheduler.epoch, offset=9)
    before = f.store.log_tail(ended[0].id)  # as read while it ran
    kept = next(h for h in f.config.hosts if h.name == "gpu-a")
    with restarted(f, rewritten(f, hosts=(kept,))) as sched:
        for job in ended:
            f.store.ask_log(job.id, "alice")
        sched.step()
        sched._turn()
        assert f.store.log_requests() == []
    assert f.store.log_tail(ended[0].id) == replace(before, complete=True)
    assert f.store.log_tail(ended[1].id).text == (
        "[fractui: job %d's host %s is out of the config: its output is not read]\n" % (
            ended[1].id, ended[1].slot.host))


def test_a_host_out_of_the_config_stays_marked_whatever_else_keeps_its_facts(local_fleet,
                                                                              store_url):
    """A verb run on a config that lists hosts the lease holder's does not (it hears them when
    the store's facts would refuse a queue, and keeps what it heard) leaves them marked out of
    the holder's config: one it marked keeps its mark, and one it never had is marked by its
    next pass. Before: the verb wrote the mark off, and one the holder never had was never
    marked; both counted for a member's submit until host_lost_s."""
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4", "gpu-c": "1xL4"}, [QUARTER],
                    host_lost_s=3600.0, store_url=store_url)
    f.until(lambda: set(f.store.inventory()) == {"gpu-a", "gpu-b", "gpu-c"})
    with restarted(f, rewritten(f, hosts=f.config.hosts[:1])) as sched:
        assert f.store.forget_inventory("gpu-c")  # heard by no lease holder yet
        sched.step()
        assert [h for h, facts in f.store.inventory().items() if facts.get(OUT_OF_CONFIG)] == [
            "gpu-b"]
        heard_inventory(f.config, f.store)  # a verb on the config of all three
        assert f.store.inventory()["gpu-b"].get(OUT_OF_CONFIG)
        sched.step()
        kept = f.store.inventory()
    assert sorted(h for h, facts in kept.items() if facts.get(OUT_OF_CONFIG)) == [
        "gpu-b", "gpu-c"], kept


class InventoryUnread(SqliteStore):
    """The real store, whose next ``fail`` reads of the hosts' facts fail (a server gone
    away)."""

    fail = 0

    def inventory(self):
        if self.fail:
            self.fail -= 1
            raise StoreUnavailable(self.where, "cannot reach the server (the test's)")
        return super().inventory()


def test_a_takeover_whose_read_of_the_facts_fails_reads_them_at_the_next_pass(local_fleet,
                                                                              caplog):
    """A scheduler that takes the lease again compares the hosts' facts with the store's rows,
    not with what its earlier lease left: another holder marked gpu-b out of its config
    meanwhile, and this one, whose config has it, takes the mark off. Its first reads of them
    fail: each pass fails (said once while they fail, and once as they work again), and the
    next reads them again. Before: the takeover counted as done before the read, and the rows
    of the earlier lease stood for the whole lease — the mark stayed."""
    caplog.set_level(logging.INFO, "fractui.scheduler")
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [QUARTER])
    store = InventoryUnread(sqlite_path(f.config.store.url) or "")
    sched = Scheduler(f.config, store, f.fleet, name="head")
    try:
        until(f, sched, lambda: set(f.store.inventory()) == {"gpu-a", "gpu-b"})
        store.release_lease("head")
        epoch = f.store.acquire_lease("other", 60.0)
        f.store.record_inventory("gpu-b", dict(f.store.inventory()["gpu-b"], **{
            OUT_OF_CONFIG: True}), epoch=epoch)
        f.store.release_lease("other")
        store.fail = 3
        sched.start()
        wait(lambda: not f.store.inventory()["gpu-b"].get(OUT_OF_CONFIG), f.store.inventory)
        assert store.fail == 0 and sched.leader
    finally:
        sched.stop()
        store.close()
    said = [r.getMessage() for r in caplog.records]
    assert said.count("store %s: cannot reach the server (the test's); the scheduler tries "
                      "again every pass" % store.where) == 1, said
    assert [w for w in said if w.startswith("the store answers the scheduler again")] == [
        "the store answers the scheduler again after 3 failed tries"], said
