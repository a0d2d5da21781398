"""`fractui place` past a team's quota: said, and asked at a terminal (a pty here, answered no
and yes), or agreed in advance with --over-quota; never placed silently from a script. A job
so placed is borrowed: the scheduler preempts it when a team within its quota needs room."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pty
import sqlite3
import subprocess
import sys
from typing import List

import pytest

from fractui.config import QueueConfig, TeamConfig
from fractui.metrics.state import PassReport
from fractui.store import postgres
from fractui.store.intents import Asker, place_by_hand
from fractui.store.model import Slot, TeamTerms
from fractui.terminal import NO_TERMINAL
from tests import localfleet
from tests.conftest import REPO
from tests.localfleet import POLITE, wait
from tests.test_usage_store import _owner_sql


def holding_session(pg_server, url: str):
    """A psql session of the store's database left open inside a transaction: the rows its
    ``SELECT ... FOR UPDATE`` reads stay held until it is closed."""
    psql = pg_server.connect(url.rsplit("/", 1)[1])
    psql.execute("BEGIN")
    return psql


def _left_while_the_other_launches(pg_server, url: str, f, held, other, caplog) -> None:
    """``held``'s row held by a psql session left open, while the passes go on: ``other``
    launches and runs, ``held`` stays placed, left for a later pass (logged); then the session
    ends."""
    psql = holding_session(pg_server, url)
    try:
        psql.execute("SELECT * FROM jobs WHERE id = %s FOR UPDATE", (held.id,))
        f.until(lambda: f.scheduler.settle() and f.states()[other.id] == "running")
        assert f.states()[held.id] == "placed"
        assert "job %d is left for a later pass: " % held.id in caplog.text
    finally:
        psql.close()


local_fleet = localfleet.local_fleet


@pytest.fixture(autouse=True)
def short_row_wait(monkeypatch):
    """A write waits 0.3 s, not the product's 2 s, for a row held by a session outside
    fractui's writers: each pass that meets a held row here waits it out, and what is checked
    is that the pass goes on after it, not how long it waited."""
    monkeypatch.setattr(postgres, "ROW_WAIT_S", 0.3)


HALF = QueueConfig(name="half", gpu=0.5)
TEAMS = [TeamConfig("vision", quota_gpus=0.5), TeamConfig("nlp", quota_gpus=1)]


def place_at_terminal(f, job, answer: str) -> subprocess.CompletedProcess:
    """``fractui place JOB gpu-a 0`` with a terminal as its stdin, answering ``answer``."""
    ours, theirs = pty.openpty()
    try:
        os.write(ours, (answer + "\n").encode())
        return subprocess.run([sys.executable, "-m", "fractui", "--config", f.write_config(),
                               "place", str(job.id), "gpu-a", "0"], stdin=theirs,
                              capture_output=True, text=True, cwd=REPO, timeout=120)
    finally:
        os.close(ours)
        os.close(theirs)


def test_placing_past_the_quota_is_said_and_asked_and_a_no_places_nothing(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [HALF], TEAMS)
    held = f.submit("half", "vision")
    f.until(lambda: f.store.get(held.id).state == "running")  # vision's whole quota
    job = f.submit("half", "vision")
    said = ("fractui: job %d on gpu-a gpu0 takes team vision past its quota: 0.50 of 0.50 "
            "GPUs held within it, and this adds 0.50 (the quota the scheduler holds it to)."
            "\n" % job.id)

    no = place_at_terminal(f, job, "n")
    assert (no.returncode, no.stdout) == (1, "Place it anyway, as a borrowed job that a team "
                                             "within its quota may preempt? [y/N] ")
    assert no.stderr == said + "fractui: not placed: job %d stays pending\n" % job.id
    assert f.store.get(job.id).state == "pending"
    assert [e.action for e in f.store.audit_log(job.id)] == ["submit"]

    script = f.fractui("place", str(job.id), "gpu-a", "0")  # no terminal: never asks, refuses
    assert (script.returncode, script.stderr) == (
        1, said + "fractui: %s\nfractui: not placed: job %d stays pending\n" % (
            NO_TERMINAL, job.id))
    assert f.store.get(job.id).state == "pending"

    yes = place_at_terminal(f, job, "y")
    assert yes.returncode == 0, yes.stderr
    assert yes.stdout.endswith("%d placed on gpu-a gpu0; the scheduler launches it (borrowed: "
                               "preemptible)\n" % job.id)
    placed = f.store.get(job.id)
    assert (placed.state, placed.manual, placed.preemptible, placed.slot.charge) == (
        "placed", True, True, 0.5)
    again = f.fractui("place", str(job.id), "gpu-a", "0")  # a retry: read as the first
    assert (again.returncode, again.stderr) == (0, "") and yes.stdout.endswith(again.stdout)


def test_a_job_placed_past_the_quota_is_preempted_for_a_team_within_its_quota(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [HALF], TEAMS, preempt_grace_s=2.0)
    held = f.submit("half", "vision")
    f.until(lambda: f.store.get(held.id).state == "running")
    extra = f.submit("half", "vision", POLITE)
    agreed = f.fractui("place", str(extra.id), "gpu-a", "0", "--over-quota")
    assert agreed.returncode == 0, agreed.stderr
    f.until(lambda: f.store.get(extra.id).state == "running")  # the GPU is full now
    assert f.store.get(extra.id).preemptible
    needy = f.submit("half", "nlp")
    f.until(lambda: f.store.get(needy.id).state == "running")
    back = f.store.get(extra.id)
    assert (back.state, back.attempt) == ("pending", 1)
    assert [e.why for e in f.store.audit_log(extra.id) if e.action == "preempt"] == [
        "preempted: team nlp (within quota) needs room for job %d" % needy.id]
    assert f.store.get(held.id).state == "running"  # within vision's quota: left alone


def test_a_job_of_two_gpus_placed_by_hand_on_one_is_refused_not_run_on_one(local_fleet,
                                                                          store_url):
    """`place` names one GPU: a job asking for two was recorded there and launched on that
    one alone, charged one. It is refused, saying why, and the scheduler places it on two."""
    f = local_fleet({"gpu-a": "2xL4"}, [QueueConfig(name="two", gpus=2)], store_url=store_url)
    pair = f.submit("two")
    done = f.fractui("place", str(pair.id), "gpu-a", "1")
    assert (done.returncode, done.stdout, done.stderr.splitlines()[-1]) == (
        1, "", "fractui: job %d of queue two asks for 2 GPUs of one host, and the placement "
        "names 1 (gpu1 of gpu-a): a job of several GPUs is placed on all of them at once, by "
        "the scheduler or the TUI's placement, which offers them together" % pair.id), done
    assert (f.store.get(pair.id).state, f.store.get(pair.id).slot) == ("pending", None)
    f.until(lambda: f.states()[pair.id] == "running")
    assert f.store.get(pair.id).slot.gpus == (0, 1)


def test_a_placement_within_the_quota_is_not_asked_about(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [HALF], TEAMS)
    job = f.submit("half", "nlp")
    f.store.acquire_lease("head", 60)  # a scheduler runs (none would be said: test_cli)
    done = f.fractui("place", str(job.id), "gpu-a", "0")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "%d placed on gpu-a gpu0; the scheduler launches it\n" % job.id
    placed = f.store.get(job.id)
    assert (placed.preemptible, placed.slot.charge) == (False, 0.5)


SCHEDULERS = "(the quota the scheduler holds it to)"
PLACERS = (TeamConfig("vision", quota_gpus=2), TeamConfig("nlp", quota_gpus=0.25))
"""An admin's config of other quotas than the scheduler's (TEAMS): vision's raised past what
the scheduler gives it, nlp's cut below."""


def placers_config(f) -> None:
    """From here on, ``f.fractui`` runs with an admin's config that differs from the
    scheduler's (PLACERS): the scheduler in the test keeps its own config, and its terms in
    the store."""
    f.config = dataclasses.replace(f.config, teams=PLACERS)


def test_a_placement_by_hand_is_held_to_the_schedulers_quota_not_the_placers_config(
        local_fleet, store_url):
    """Two admins whose configs give other quotas get the one scheduler's answer: past the
    quota it holds vision to (0.5, held) a placement is asked about, whatever the placer's
    config (2) says; within the quota it holds nlp to (1) one is placed unasked, not
    borrowed, whatever the placer's config (0.25) says."""
    f = local_fleet({"gpu-a": "2xL4"}, [HALF], TEAMS, store_url=store_url)
    held = f.submit("half", "vision")
    f.until(lambda: f.store.get(held.id).state == "running")  # vision's whole quota
    assert f.store.team_terms() == {"vision": TeamTerms(0.5, False, 1.0),
                                    "nlp": TeamTerms(1.0, False, 1.0)}
    placers_config(f)
    vision, nlp = f.submit("half", "vision"), f.submit("half", "nlp")

    past = f.fractui("place", str(vision.id), "gpu-a", "1")
    assert (past.returncode, past.stderr) == (
        1, "fractui: job %d on gpu-a gpu1 takes team vision past its quota: 0.50 of 0.50 GPUs "
        "held within it, and this adds 0.50 %s.\nfractui: %s\nfractui: not placed: job %d "
        "stays pending\n" % (vision.id, SCHEDULERS, NO_TERMINAL, vision.id))
    assert f.store.get(vision.id).state == "pending"

    within = f.fractui("place", str(nlp.id), "gpu-a", "1")
    assert (within.returncode, within.stderr) == (0, ""), within.stderr
    placed = f.store.get(nlp.id)
    assert (placed.state, placed.preemptible) == ("placed", False)


def test_a_move_by_hand_is_held_to_the_schedulers_quota_not_the_movers_config(local_fleet,
                                                                             store_url):
    """A borrowed job of vision moved to a slot of the same size would hold it within a quota
    of 2 (the mover's config): within the scheduler's 0.5, held by another job, it is past,
    and asked about as a placement is."""
    f = local_fleet({"gpu-a": "2xL4"}, [HALF], TEAMS, store_url=store_url)
    held = f.submit("half", "vision")
    f.until(lambda: f.store.get(held.id).state == "running")
    lent = f.submit("half", "vision")
    agreed = f.fractui("place", str(lent.id), "gpu-a", str(1 - held_gpu(f, held)),
                       "--over-quota")
    assert agreed.returncode == 0, agreed.stderr
    f.until(lambda: f.store.get(lent.id).state == "running")
    placers_config(f)
    there = held_gpu(f, held)  # beside the job within the quota: a half is free there

    moved = f.fractui("move", str(lent.id), "gpu-a", str(there))
    assert moved.returncode == 1, moved.stderr
    assert "takes team vision past its quota: 0.50 of 0.50 GPUs held within it, and this adds " \
           "0.50 %s.\n" % SCHEDULERS in moved.stderr, moved.stderr
    assert moved.stderr.endswith("fractui: not moved: job %d stays where it is\n" % lent.id)
    kept = f.store.get(lent.id)
    assert (kept.state, kept.move_to, kept.preemptible) == ("running", None, True)


def held_gpu(f, job) -> int:
    return f.store.get(job.id).slot.gpus[0]


def test_where_no_scheduler_kept_the_quotas_a_placement_is_held_to_the_placers_config(
        local_fleet, store_url):
    """No scheduler has run on the store (it keeps no quotas): the placer's config is all
    there is, and the question says so."""
    f = local_fleet({"gpu-a": "1xL4"}, [HALF], [TeamConfig("vision", quota_gpus=0.25)],
                    store_url=store_url)
    job = f.submit("half", "vision")  # (no pass: none keeps the quotas)
    config = f.write_config()
    done = f.fractui("place", str(job.id), "gpu-a", "0")
    assert (done.returncode, done.stderr.splitlines()[0]) == (
        1, "fractui: job %d on gpu-a gpu0 takes team vision past its quota: 0.00 of 0.25 GPUs "
        "held within it, and this adds 0.50 (the quota this config (%s) gives it, no "
        "scheduler having kept the teams' quotas in the store)." % (job.id, config))
    assert f.store.team_terms() == {} and f.store.get(job.id).state == "pending"


def test_a_scheduler_of_no_teams_is_told_from_none_and_a_placement_is_held_to_no_quota(
        local_fleet, store_url):
    """A scheduler whose config has no [[teams]] keeps no team's terms, and the store read as
    if none had run: a placement by hand of vision was held to the placer's config's quota
    (0.25: past it, asked, not placed from a script) "no scheduler having kept the teams'
    quotas", where the scheduler holds no team to a quota and would place it. The holder now
    writes that it keeps none: the placement is held to no quota, as the scheduler's passes
    are (placed, not borrowed), and ``teams`` says so of each of this config's teams."""
    f = local_fleet({"gpu-a": "1xL4"}, [HALF], (), store_url=store_url)
    f.scheduler.step()  # the lease holder keeps its terms: none
    terms = f.store.team_terms()
    assert (terms, terms.none()) == ({}, True)
    f.config = dataclasses.replace(f.config, teams=(TeamConfig("vision", quota_gpus=0.25),))
    config = f.write_config()
    job = f.submit("half", "vision")
    done = f.fractui("place", str(job.id), "gpu-a", "0")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    placed = f.store.get(job.id)
    assert (placed.state, placed.preemptible) == ("placed", False)
    shown = f.fractui("teams")
    assert shown.returncode == 0 and shown.stderr == (
        "fractui: team vision: the scheduler holds no team to a quota (its config has no "
        "[[teams]]): its jobs are placed by their queue's priority and age, ranked by no "
        "share, where this config (%s) says quota 0.25 GPUs\n" % config), shown.stderr


def test_a_job_row_held_by_a_session_left_open_stalls_that_job_only(local_fleet, pg_server,
                                                                     caplog):
    """A psql session left open inside a transaction holding the oldest pending job's row
    (a member's cancel on psql, never committed): the scheduler's passes go on with every
    other job — the next one is placed and launched — and say, in the log, which session
    holds the one left; once that session ends, that job is placed too."""
    url = pg_server.url(pg_server.new_database())
    f = local_fleet({"gpu-a": "2xL4"}, [QueueConfig(name="whole", gpus=1)], store_url=url)
    held = f.submit("whole")
    psql = holding_session(pg_server, url)
    try:
        psql.execute("SELECT * FROM jobs WHERE id = %s FOR UPDATE", (held.id,))
        other = f.submit("whole")
        f.until(lambda: f.states()[other.id] == "running")
        assert f.states()[held.id] == "pending"
        assert "job %d is left for a later pass: " % held.id in caplog.text
        assert "pg_terminate_backend(%d)" % psql.info.backend_pid in caplog.text
    finally:
        psql.close()
    f.until(lambda: f.states()[held.id] == "running")


def test_a_running_job_row_held_by_a_session_left_open_stalls_that_job_only(local_fleet,
                                                                             pg_server, caplog):
    """The same for a running job whose end the scheduler must record: its row held, its end
    waits (logged), and the passes go on placing and launching the others."""
    url = pg_server.url(pg_server.new_database())
    f = local_fleet({"gpu-a": "2xL4"}, [QueueConfig(name="whole", gpus=1)], store_url=url)
    held = f.submit("whole")
    f.until(lambda: f.states()[held.id] == "running")
    psql = holding_session(pg_server, url)
    try:
        psql.execute("SELECT * FROM jobs WHERE id = %s FOR UPDATE", (held.id,))
        f.fleet.session("gpu-a").call("job.stop", {"job": f.store.get(held.id).agent_job,
                                                    "grace": 0, "reason": "ended on the host"})
        f.until(lambda: "job %d is left for a later pass: " % held.id in caplog.text)
        other = f.submit("whole")
        f.until(lambda: f.states()[other.id] == "running")
        assert f.states()[held.id] == "running"  # its end not yet recorded
    finally:
        psql.close()
    f.until(lambda: f.states()[held.id] not in ("running", "stopping"))


def test_a_placed_job_row_held_stalls_its_launch_only_not_its_hosts_other_launches(
        local_fleet, pg_server, caplog):
    """Two jobs placed by hand on one host, the first one's row held by a psql session left
    open: its launch is recorded later (logged), and the host's lane goes on to launch the
    second rather than leaving every later call to the host for a later pass."""
    url = pg_server.url(pg_server.new_database())
    f = local_fleet({"gpu-a": "2xL4"}, [QueueConfig(name="whole", gpus=1)], store_url=url)
    held, other = f.submit("whole"), f.submit("whole")
    for job, gpu in ((held, "0"), (other, "1")):
        placed = f.fractui("place", str(job.id), "gpu-a", gpu)
        assert placed.returncode == 0, placed.stderr
    _left_while_the_other_launches(pg_server, url, f, held, other, caplog)
    f.until(lambda: f.scheduler.settle() and f.states()[held.id] == "running")


def test_a_hosts_kept_facts_or_the_lost_clocks_held_fail_no_pass(local_fleet, pg_server,
                                                                  caplog):
    """A psql session left open holding a host's kept facts and the lost-host clocks (what a
    pass writes that is no job's): the passes place and launch as ever, the other host's
    facts are kept, and what was held is written once the session ends — each held write
    said once while it is held, not at every pass, and once when it is written."""
    caplog.set_level(logging.INFO, "fractui.scheduler")
    url = pg_server.url(pg_server.new_database())
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [QueueConfig(name="whole", gpus=1)],
                    store_url=url)
    f.store.record_inventory("gpu-a", {})
    f.store.keep_lost_clocks({"gone-host": 1.0}, {})  # forgotten by the first pass
    psql = holding_session(pg_server, url)
    try:
        psql.execute("SELECT * FROM inventory WHERE host = 'gpu-a' FOR UPDATE")
        psql.execute("SELECT * FROM lost_clocks FOR UPDATE")
        job = f.submit("whole")
        f.until(lambda: f.states()[job.id] == "running")
        for _ in range(3):
            f.scheduler.step()
        assert f.store.inventory()["gpu-a"] == {} and f.store.inventory()["gpu-b"]["gpus"]
        assert caplog.text.count("gpu-a's facts are kept by a later pass: ") == 1
        assert caplog.text.count("the lost-host clocks are written by a later pass: ") == 1
    finally:
        psql.close()
    f.until(lambda: f.store.inventory()["gpu-a"] != {}
            and f.store.holder_memory().hosts_away == {})
    assert caplog.text.count("gpu-a's facts are kept after ") == 1
    assert caplog.text.count("the lost-host clocks are written after ") == 1


def test_a_held_stop_of_a_host_out_of_the_config_is_said_once_and_once_when_forgotten(
        local_fleet, pg_server, caplog):
    """The stop sent to a host out of the config for longer than host_lost_s, its row held by
    a psql session left open: forgetting it waits, said once while it is held (not at every
    pass), and it is forgotten once the session ends, said then."""
    caplog.set_level(logging.INFO, "fractui.scheduler")
    url = pg_server.url(pg_server.new_database())
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="whole", gpus=1)], store_url=url)
    f.store.keep_lost_clocks({"gone-host": 1.0}, {})  # out of the config since long ago
    f.store.stop_sent("gone-host", "fractui-%s-9.0" % f.store.uid)
    psql = holding_session(pg_server, url)
    try:
        psql.execute("SELECT * FROM stops_sent FOR UPDATE")
        for _ in range(4):
            f.scheduler.step()
        assert f.scheduler.executor.stops_sent()
    finally:
        psql.close()
    f.until(lambda: not f.scheduler.executor.stops_sent())
    stop = "the stop of fractui-%s-9.0 on gone-host is forgotten" % f.store.uid
    assert caplog.text.count(stop + " by a later pass: ") == 1, caplog.text
    assert caplog.text.count(stop + " after 4 failed tries") == 1, caplog.text


def test_a_held_row_of_a_decision_on_what_was_cordoned_since_stalls_only_it(
        local_fleet, pg_server, caplog):
    """A job placed by hand on a host cordoned since, its row held: sending it back to its
    queue waits (logged) while the pass launches the others."""
    url = pg_server.url(pg_server.new_database())
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [QueueConfig(name="whole", gpus=1)],
                    store_url=url)
    held = f.submit("whole")
    assert f.fractui("place", str(held.id), "gpu-a", "0").returncode == 0
    f.store.cordon("gpu-a", None, "cordon", "test", "maintenance")
    other = f.submit("whole")
    assert f.fractui("place", str(other.id), "gpu-b", "0").returncode == 0
    _left_while_the_other_launches(pg_server, url, f, held, other, caplog)
    f.until(lambda: f.states()[held.id] == "pending")


def test_a_held_row_of_an_output_tail_asked_for_fails_no_turn(local_fleet, pg_server, caplog):
    """The output of a job that never ran is asked for and its request's row held: the
    answer (nothing to show) waits (logged), and the scheduler's turns go on without
    failing."""
    url = pg_server.url(pg_server.new_database())
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="whole", gpus=1),
                                        QueueConfig(name="four", gpus=4)], store_url=url)
    never = f.submit("four")  # no host has four GPUs: it never runs
    f.store.ask_log(never.id, "test")
    psql = holding_session(pg_server, url)
    try:
        psql.execute("SELECT * FROM log_requests WHERE job = %s FOR UPDATE", (never.id,))
        f.scheduler.start()
        job = f.submit("whole")
        wait(lambda: f.states()[job.id] == "running" and "job %d is left for a later pass: "
             % never.id in caplog.text, f.states)
        assert "tries again every pass" not in caplog.text, caplog.text
        psql.close()
        wait(lambda: f.store.log_requests() == [], f.store.log_requests)
    finally:
        psql.close()
        f.scheduler.stop()
    assert f.store.log_tail(never.id).text == ""


def test_a_job_left_for_a_held_row_is_placed_by_the_running_loop_once_the_session_ends(
        local_fleet, pg_server, caplog):
    """The scheduler's own loop (not a test's passes): nothing announces that the session
    holding a row ended, so a pass that left a job for later makes the next turn a full pass
    again — turn after turn while the row is held, not only when something else wakes the
    loop — and the job is placed once the session ends. That the job is left is said once
    while the row stays held, not at every pass (the admin's journal), and once when it is
    left no more."""
    caplog.set_level(logging.INFO, "fractui.scheduler")
    url = pg_server.url(pg_server.new_database())
    f = local_fleet({"gpu-a": "2xL4"}, [QueueConfig(name="whole", gpus=1)], store_url=url)
    held = f.submit("whole")
    left = "job %d is left for a later pass: " % held.id
    passes: List[PassReport] = []
    f.scheduler.on_turn = lambda report: passes.append(report) if report.jobs else None
    psql = holding_session(pg_server, url)
    try:
        psql.execute("SELECT * FROM jobs WHERE id = %s FOR UPDATE", (held.id,))
        f.scheduler.start()
        wait(lambda: len(passes) >= 6, f.states)  # full passes long after its start's wakes
        assert f.states()[held.id] == "pending"
        psql.close()
        wait(lambda: f.states()[held.id] == "running", f.states)
        wait(lambda: "left for a later pass no more" in caplog.text, lambda: caplog.text)
    finally:
        psql.close()
        f.scheduler.stop()
    assert caplog.text.count(left) == 1, caplog.text
    assert caplog.text.count("job %d is left for a later pass no more after " % held.id) == 1


def test_a_damaged_row_of_the_kept_quotas_is_said_not_known_and_written_again_at_a_pass(
        local_fleet, store_url, request):
    """vision's row of the quotas the lease holder keeps (team_terms) damaged by hand after
    the holder wrote them: a value fractui never writes (SQLite: text; PostgreSQL: NaN). It
    was left out, and the team said held to none: `teams` said the scheduler has no team
    vision and does not place its jobs, and a placement by hand said it is held to no quota.
    Now each says vision's quota is not known, naming the store and the row; a placement by
    hand is held as past it (asked, and borrowed if agreed); the holder's next pass writes
    the row again (it wrote the terms only at a lease or a change of its config's)."""
    f = local_fleet({"gpu-a": "1xL4"}, [HALF], TEAMS, store_url=store_url)
    f.scheduler.step()  # the lease holder keeps its terms
    kept = {"vision": TeamTerms(0.5, False, 1.0), "nlp": TeamTerms(1.0, False, 1.0)}
    assert f.store.team_terms() == kept
    _owner_sql(store_url, request, "UPDATE team_terms SET quota_gpus = 'NaN' "
                                   "WHERE team = 'vision'")
    unread = f.store.team_terms()
    assert (unread, list(unread.unread)) == ({"nlp": kept["nlp"]}, ["vision"])
    where = f.store.dialect.where
    row = "store %s, its row of team_terms: team vision's quota" % where

    shown = f.fractui("teams")
    assert shown.returncode == 0, shown.stderr
    assert "fractui: team vision: its quota is not known: %s" % row in shown.stderr, \
        shown.stderr
    assert "no team vision" not in shown.stderr and "no quota" not in shown.stderr, \
        shown.stderr
    assert [line.split()[-1] for line in shown.stdout.splitlines()[1:3]] == ["-", "-"]

    job = f.submit("half", "vision")
    asked = f.fractui("place", str(job.id), "gpu-a", "0")  # no terminal: refused, not placed
    assert (asked.returncode, asked.stderr.splitlines()[-2:]) == (
        1, ["fractui: %s" % NO_TERMINAL, "fractui: not placed: job %d stays pending" % job.id])
    assert asked.stderr.startswith("fractui: job %d on gpu-a gpu0 is of team vision, whose "
                                   "quota (the scheduler's) is not known: %s" % (job.id, row)), \
        asked.stderr
    assert f.store.get(job.id).state == "pending"
    agreed = f.fractui("place", str(job.id), "gpu-a", "0", "--over-quota")
    assert agreed.returncode == 0, agreed.stderr
    assert f.store.get(job.id).preemptible  # borrowed: past a quota not known

    f.scheduler.step()  # its next pass: the same lease, the same config
    mended = f.store.team_terms()
    assert (mended, mended.unread) == (kept, {})


@pytest.mark.parametrize("gone", ["vision", "every"])
def test_a_kept_quota_row_deleted_by_hand_is_said_missing_and_written_again_at_a_pass(
        local_fleet, store_url, request, gone):
    """A row of the quotas the lease holder keeps (team_terms) deleted by hand, the mark that
    the holder wrote them (meta team_terms_written) left: vision read as a team the holder
    does not have (`teams`: "no team vision", its jobs not placed), and with every row gone
    as a holder of no [[teams]] ("holds no team to a quota"), until its next pass wrote them
    again. The mark names the teams written, so the store tells the row missing: vision's
    quota is not known, said with why and who writes it again, and the next pass does."""
    f = local_fleet({"gpu-a": "1xL4"}, [HALF], TEAMS, store_url=store_url)
    f.scheduler.step()  # the lease holder keeps its terms
    kept = {"vision": TeamTerms(0.5, False, 1.0), "nlp": TeamTerms(1.0, False, 1.0)}
    assert f.store.team_terms() == kept
    _owner_sql(store_url, request, "DELETE FROM team_terms%s" % (
        " WHERE team = 'vision'" if gone == "vision" else ""))
    read = f.store.team_terms()
    assert (sorted(read.unread), read.none()) == (
        ["vision"] if gone == "vision" else ["nlp", "vision"], False)
    row = ("store %s, its row of team_terms: team vision's quota is missing (the row deleted "
           "since the lease holder wrote it)" % f.store.dialect.where)

    shown = f.fractui("teams", "--json")
    assert shown.returncode == 0, shown.stderr
    assert "fractui: team vision: its quota is not known: %s (the scheduler holds it to its " \
           "own config's, and writes the row again at its next pass)" % row in shown.stderr, \
        shown.stderr
    assert "no team vision" not in shown.stderr and "no team to a quota" not in shown.stderr
    vision = next(t for t in json.loads(shown.stdout)["teams"] if t["name"] == "vision")
    assert vision["quota_not_known"] == row

    f.scheduler.step()  # its next pass: the same lease, the same config
    mended = f.store.team_terms()
    assert (mended, mended.unread) == (kept, {})


def test_a_mark_of_kept_quotas_naming_no_teams_is_written_again_naming_them(
        local_fleet, store_url, request):
    """A store whose mark that the lease holder wrote the terms names no teams (written before
    it did: '1') cannot tell a deleted row (all deleted: read as none kept); the holder's next
    pass writes the mark again naming them, and a row deleted after is said missing."""
    f = local_fleet({"gpu-a": "1xL4"}, [HALF], TEAMS, store_url=store_url)
    f.scheduler.step()
    _owner_sql(store_url, request, "UPDATE meta SET value = '1' "
                                   "WHERE key = 'team_terms_written'")
    before = f.store.team_terms()
    assert (before.written, before.listed, before.unread) == (True, False, {})
    f.scheduler.step()
    _owner_sql(store_url, request, "DELETE FROM team_terms WHERE team = 'nlp'")
    assert list(f.store.team_terms().unread) == ["nlp"]


def test_an_older_holders_write_of_the_kept_quotas_is_never_read_as_rows_deleted(
        local_fleet, store_url, request):
    """A standby of the release before takes the lease and writes its terms its way: the rows
    replaced, the mark set once ('1', ON CONFLICT DO NOTHING), so the list of teams the new
    holder wrote stays. Read by it, vision (which the older holder's config lacks) was "missing
    (the row deleted since the lease holder wrote it)" for as long as that holder held the
    lease. The mark holds the epoch it was written under: another take's rows are not its,
    so vision reads as before the list, a team that holder does not have; the new holder,
    back, writes the mark again."""
    f = local_fleet({"gpu-a": "1xL4"}, [HALF], TEAMS, store_url=store_url)
    f.scheduler.step()  # the new holder keeps its terms, naming vision and nlp
    f.store.release_lease(f.scheduler.holder)
    assert f.store.acquire_lease("old@standby:1", 60) is not None
    _owner_sql(store_url, request, "DELETE FROM team_terms")  # the older fractui's write
    _owner_sql(store_url, request, "INSERT INTO team_terms (team, quota_gpus, over_quota, "
                                   "weight) VALUES ('nlp', 1.0, %s, 1.0)" % (
                                       "0" if store_url.startswith("sqlite") else "false"))
    _owner_sql(store_url, request, "INSERT INTO meta (key, value) VALUES "
                                   "('team_terms_written', '1') ON CONFLICT (key) DO NOTHING")
    read = f.store.team_terms()
    assert (read, read.unread, read.listed) == ({"nlp": TeamTerms(1.0, False, 1.0)}, {},
                                                False)
    shown = f.fractui("teams")
    assert shown.returncode == 0, shown.stderr
    assert "team vision: the scheduler holds no team vision (its config has none)" in \
        shown.stderr and "deleted" not in shown.stderr, shown.stderr
    f.store.release_lease("old@standby:1")
    f.scheduler.step()  # the new holder takes the lease again, and writes its terms
    _owner_sql(store_url, request, "DELETE FROM team_terms WHERE team = 'vision'")
    assert list(f.store.team_terms().unread) == ["vision"]


def test_a_damaged_kept_row_is_logged_with_its_team_name_escaped(local_fleet, tmp_path, caplog):
    """A damaged row of the kept quotas whose team holds an escape and a line break (written
    by hand): the lease holder's next pass writes the terms again and logs the row it mended,
    its team name as it was: a terminal following the log retitled, a log line forged. It is
    given escaped, as the store gives any name of a damaged row."""
    f = local_fleet({"gpu-a": "1xL4"}, [HALF], TEAMS)
    f.scheduler.step()
    hostile = "vi\x1b]0;owned\x07sion\nfractui: forged"
    with sqlite3.connect(str(tmp_path / "store.db")) as db:
        db.execute("INSERT INTO team_terms (team, quota_gpus, over_quota, weight) "
                   "VALUES (?, 1, 0, -1)", (hostile,))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        f.scheduler.step()
    mended = [r.getMessage() for r in caplog.records if "written again" in r.getMessage()]
    assert len(mended) == 1 and repr(hostile) in mended[0] and mended[0].isprintable(), \
        caplog.text
    assert f.store.team_terms().unread == {}


def test_the_last_room_taken_by_hand_and_by_a_pass_at_once_runs_one_job(local_fleet):
    """An admin's placement on a GPU's last room, chosen before a pass decided another job
    there and written after: the store records both (it checks quota as it writes, not room),
    the agent starts one and refuses the other, which goes back to its queue saying why;
    the GPU never runs more than its memory (docs/decisions.md, "The last room taken at once
    by hand and by a pass")."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.25)])
    for _ in range(3):
        f.submit("q")
    f.until(lambda: set(f.states().values()) == {"running"})
    decided, by_hand = f.submit("q"), f.submit("q")
    seen = f.store.get(by_hand.id)  # as the admin's preview read it: one room left on gpu0
    slot = Slot("gpu-a", (0,), memory_mib=5758, charge=0.25)
    f.scheduler.step()
    assert f.states()[decided.id] == "placed"
    place_by_hand(f.store, seen, slot, Asker("admin"))
    f.until(lambda: "pending" in f.states().values() and "placed" not in f.states().values())
    runs = [r for r in f.agent_jobs() if r["state"] == "running"]
    assert len(runs) == 4 and sum(r["memory_mib"] for r in runs) <= 23034
    [back] = [j for j in f.store.jobs() if j.state == "pending"]
    assert back.id in (decided.id, by_hand.id) and "has 2 MiB free" in back.reason, back
