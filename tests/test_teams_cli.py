"""``fractui teams``: each team's standing as the scheduler sees it, for a researcher whose
config names the store, the teams and the queues and no host. Real stores (an SQLite file, and
a PostgreSQL database read as a team member's role) holding jobs of two teams in every state;
what the verb prints is checked against numbers worked out by hand, against ``team_usage``,
and against what the TUI's Teams table is built from (``sched.standing.standing``)."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional

from fractui.config import QueueConfig, TeamConfig, load_config
from fractui.sched.queueing import Reserve, _fair, schedule, team_order
from fractui.sched.quota import Recent, team_usage
from fractui.store import Store, open_store
from fractui.store.model import (ACTIVE, CANCELLED, DONE, PENDING, RUNNING, Hold, Job, Slot,
                                 TeamTerms)
from fractui.sched.standing import UsageRead, standing
from tests.cli_run import in_process, leaks
from tests.conftest import REPO
from tests.test_pg_guard import LEAST
from tests.test_sched_reserve import BOUND, view
from tests import localfleet

local_fleet = localfleet.local_fleet
NO_ROOM = "no room: no GPU in the fleet has a free slice for it"
QUEUES = '[[queues]]\nname = "quarter"\ngpu = 0.25\n[[queues]]\nname = "half"\ngpu = 0.5\n'


def _config(path: Path, url: str, teams: Dict[str, float], tail: str = "") -> Path:
    """A researcher's config: the store, the teams and the queues, no host."""
    text = "[store]\nurl = %s\n" % json.dumps(url) + "".join(
        '[[teams]]\nname = "%s"\nquota_gpus = %s\n' % tq for tq in teams.items())
    path.write_text(text + QUEUES + tail)
    return path


def _share(charge: float) -> Slot:
    return Slot("gpu-a", (0,), memory_mib=int(charge * 24000), charge=charge)


def fill(store: Store, vision: str, nlp: str) -> Dict[str, int]:
    """Jobs of two teams in every state, by the store's own transitions. vision (quota 1.5):
    a running 0.25, b placed 0.5, c running 0.5 borrowed (preemptible), s stopping 0.25, d
    pending, e done; nlp (quota 2): f running 0.25 since an hour, h and i pending, k
    cancelled."""
    now = store.now()
    ids: Dict[str, int] = {}

    def job(name: str, team: str, queue: str = "quarter") -> int:
        ids[name] = store.submit(queue, team, name, ["sleep", "600"], {"gpu": 0.25},
                                 "ops").id
        return ids[name]

    def run(name: str, team: str, charge: float, queue: str = "quarter",
            borrowed: bool = False, at: Optional[float] = None) -> int:
        number = job(name, team, queue)
        store.place(number, _share(charge), "ops", "fits", preemptible=borrowed)
        store.started(number, "j" + name, at, "ops", "started")
        return number

    run("a", vision, 0.25)
    store.place(job("b", vision, "half"), _share(0.5), "ops", "fits")
    run("c", vision, 0.5, "half", borrowed=True)
    store.stopping(run("s", vision, 0.25), (RUNNING,), "cancel", "ops", "cancel asked")
    job("d", vision)
    store.ended(run("e", vision, 0.25, at=now - 1800), (RUNNING,), DONE, None, "ops",
                "exited 0", "end", exit_code=0, ended_at=now - 600)
    run("f", nlp, 0.25, at=now - 3600)
    store.waiting(job("h", nlp), NO_ROOM)
    job("i", nlp)
    store.ended(job("k", nlp), (PENDING,), CANCELLED, "cancelled by ops", "ops", "cancelled",
                "cancel")
    return ids


# (held, borrowed, running, pending) of each team, by hand from ``fill``; vision's SHARE is
# its 1.00 held within quota, nlp's 0.25: nlp's waiting jobs are taken up first.
BY_HAND = {"vision": (1.5, 0.5, 4, 1, 2), "nlp": (0.25, 0.0, 1, 2, 1)}


def check_against_the_tui(record: dict, store: Store, config_path: Path,
                          names: Dict[str, str]) -> None:
    """``teams --json`` is the hand-worked numbers, ``team_usage``'s, and the TUI's standing
    (its Teams table's numbers and starved teams) as of the same moment of the store."""
    config = load_config(str(config_path))
    now = record["as_of"]
    jobs = store.jobs(ACTIVE)
    usage = UsageRead.of(store.usage(now - config.fairshare.window_s, now), config, now)
    tui, starved = standing(jobs, config, usage, now)
    counted = team_usage(jobs, config.teams, usage.recent)
    assert [r["name"] for r in record["teams"]] == [t.name for t in config.teams]
    for row, shown, plain in zip(record["teams"], tui, counted):
        assert shown == plain, (shown, plain)  # the TUI's rows are team_usage's
        team = next(k for k, v in names.items() if v == row["name"])
        held, borrowed, running, pending, next_ = BY_HAND[team]
        assert (row["held"], row["borrowed"], row["running"], row["pending"], row["next"]) \
            == (held, borrowed, running, pending, next_), row
        assert (row["quota"], row["held"], row["borrowed"], row["within"], row["running"],
                row["pending"], row["recent"], row["weight"], row["over_quota"],
                row["share"]) == (shown.quota, shown.used, shown.borrowed, shown.within,
                                  shown.running, shown.pending, shown.recent, shown.weight,
                                  shown.over_quota, shown.share(0.0)), (row, shown)
        assert row["recent"] > 0, row  # each has a usage record in the window
        said = next((s for s in starved if s.team == row["name"]), None)
        assert row["starved"] == (None if said is None else {
            "waiting": said.waiting, "waited_s": said.waited_s, "room": said.room,
            "reason": said.reason}), row


def _rows(out: str) -> Dict[str, List[str]]:
    lines = out.splitlines()
    assert lines[0].split() == ["TEAM", "QUOTA", "HELD", "BORROWED", "RUNNING", "PENDING",
                                "RECENT", "SHARE", "NEXT"], out
    return {line.split()[0]: line.split() for line in lines[1:] if not line.startswith(
        ("starved ", "SHARE:"))}


def test_a_researcher_sees_each_teams_standing_as_the_tui_shows_it(tmp_path, capfd):
    """An SQLite store with jobs of two teams in every state: the verb's numbers are the
    hand-worked ones and the TUI's, nlp (starved: two waiting, the oldest 15 minutes for the
    fleet, nothing of it started in the last hour) is said so in the TUI's words, and is taken
    up next (the lower share)."""
    db = tmp_path / "store.db"
    store = open_store("sqlite://%s" % db)
    ids = fill(store, "vision", "nlp")
    store.keep_waiting_bounds({"nlp": 5})  # as a scheduler of nlp's max_waiting 5 writes it
    store.close()
    with sqlite3.connect(str(db)) as conn:  # h has waited 15 minutes for the fleet
        conn.execute("UPDATE jobs SET submitted_at = submitted_at - 900 WHERE id = ?",
                     (ids["h"],))
    config = _config(tmp_path / "config.toml", "sqlite://%s" % db,
                     {"vision": 1.5, "nlp": 2})
    code, out, err = in_process(capfd, ["--config", str(config), "teams", "--json"])
    assert (code, err) == (0, "fractui: no scheduler is running for this store (none holds "
                              "its lease): nothing is placed, launched or stopped until one "
                              "runs (fractui scheduler, an admin's)\n"), err
    record = json.loads(out)
    assert record["scheduler"] is None and record["usage_weight"] == 0.0
    assert [t["max_waiting"] for t in record["teams"]] == [10000, 5]  # vision's the default
    store = open_store("sqlite://%s" % db, make=False)
    try:
        check_against_the_tui(record, store, config, {"vision": "vision", "nlp": "nlp"})
    finally:
        store.close()
    nlp = record["teams"][1]
    assert nlp["starved"]["waiting"] == 2 and nlp["starved"]["room"] == 1.75
    assert nlp["starved"]["reason"] == NO_ROOM and nlp["starved"]["waited_s"] >= 900

    code, out, err = in_process(capfd, ["--config", str(config), "teams"])
    assert code == 0 and not leaks(err), err
    rows = _rows(out)
    recent = {r["name"]: "%.2f" % r["recent"] for r in record["teams"]}
    assert rows == {
        "vision": ["vision", "1.5", "1.50", "0.50", "4", "1/10000", recent["vision"], "1.00",
                   "2"],
        "nlp": ["nlp", "2", "0.25", "0.00", "1", "2/5", recent["nlp"], "0.25", "1"]}, out
    assert re.search(r"^starved nlp: 2 waiting 1[5-9]m[0-9]{2}s, 1\.75 of its quota free: "
                     r"%s$" % NO_ROOM, out, re.M), out
    assert out.splitlines()[-1].startswith("SHARE: GPUs held within quota (RECENT does not "
                                           "count: [fairshare] usage_weight 0)"), out

    code, out, err = in_process(capfd, ["--config", str(config), "teams", "--team", "vision",
                                        "--json"])
    only = json.loads(out)["teams"]
    assert code == 0 and [t["name"] for t in only] == ["vision"] and only[0]["next"] == 2


@dataclass(frozen=True)
class Member:
    """A PostgreSQL store ``fill``ed for two teams (``names``: each team's name there, by its
    name in ``fill``), and a role in team nlp alone, no admin, granted the least (LEAST)."""

    db: str
    names: Dict[str, str]
    ids: Dict[str, int]
    role: str


def member_of_nlp(pg_server, bounds: Dict[str, int] = {}) -> Member:
    """``fill``ed by the superuser (who makes the tables), with the waiting ``bounds`` (by the
    team's name in ``fill``) a scheduler would write, then the member's role made."""
    tag = uuid.uuid4().hex[:6]
    db = pg_server.new_database()
    names = {"vision": "vision" + tag, "nlp": "nlp" + tag}
    store = open_store(pg_server.url(db))
    try:
        ids = fill(store, names["vision"], names["nlp"])
        store.keep_waiting_bounds({names[t]: n for t, n in bounds.items()})
    finally:
        store.close()
    return Member(db, names, ids, nlp_role(pg_server, db, names, tag))


def nlp_role(pg_server, db: str, names: Dict[str, str], tag: str) -> str:
    """A role in team nlp alone (of ``names``, by the team's name), made once the tables are:
    the teams' roles given docs/decisions.md's least GRANTs."""
    member = "cat_" + tag
    pg_server.admin_role()
    for team in names.values():
        pg_server.sql("CREATE ROLE fractui_team_%s" % team)
    pg_server.sql("CREATE ROLE %s LOGIN IN ROLE fractui_team_%s" % (member, names["nlp"]))
    teams = "fractui_team_%s, fractui_team_%s" % (names["vision"], names["nlp"])
    for grant in LEAST:
        pg_server.sql(grant.format(admin="fractui_admin", teams=teams), db=db)
    return member


def test_an_old_copy_of_the_config_is_shown_the_quotas_the_scheduler_holds_teams_to(
        tmp_path, capfd, pg_server, local_fleet):
    """The admin lowered nlp's quota (and let it borrow, weighed it double) and raised
    vision's; a member's config is the copy of before. What ``teams`` shows her is what the
    scheduler holds the teams to, as its job's reason says, with a line naming both."""
    tag = uuid.uuid4().hex[:6]
    db = pg_server.new_database()
    names = {"vision": "vision" + tag, "nlp": "nlp" + tag}
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig("quarter", gpu=0.25)],
                    [TeamConfig(names["vision"], quota_gpus=3),
                     TeamConfig(names["nlp"], quota_gpus=0.5, over_quota=True, weight=2)],
                    store_url=pg_server.url(db))
    job = f.submit("quarter", names["nlp"])
    f.until(lambda: f.store.get(job.id).state == RUNNING)
    config = _config(tmp_path / "member.toml",
                     pg_server.url(db, user=nlp_role(pg_server, db, names, tag)),
                     {names["vision"]: 2, names["nlp"]: 1.5})
    code, out, err = in_process(capfd, ["--config", str(config), "teams"])
    assert code == 0 and [r[:2] + r[-2:] for r in _rows(out).values()] == [
        [names["vision"], "3", "0.00", "-"], [names["nlp"], "0.5", "0.12", "-"]], out
    assert err == (
        "fractui: team %s: the scheduler holds it to quota 3 GPUs, where this config (%s) "
        "says quota 2 GPUs: the scheduler's are shown\n"
        "fractui: team %s: the scheduler holds it to quota 0.5 GPUs, over_quota on, weight 2, "
        "where this config (%s) says quota 1.5 GPUs, over_quota off, weight 1: the "
        "scheduler's are shown\n" % (names["vision"], config, names["nlp"], config)), err
    code, out, err = in_process(capfd, ["--config", str(config), "teams", "--json",
                                        "--team", names["nlp"]])
    nlp, = json.loads(out)["teams"]
    assert (nlp["quota"], nlp["over_quota"], nlp["weight"], nlp["share"]) == (
        0.5, True, 2.0, 0.125), nlp
    assert err.count("\n") == 1 and err.startswith("fractui: team %s: " % names["nlp"]), err


def test_a_team_the_schedulers_config_has_not_is_said_so_not_shown_as_held(tmp_path, capfd):
    """The admin took nlp out of the config; a member's old copy still has it. The lease
    holder's terms list vision alone: nlp's row was shown at the copy's quota, silently, while
    no pass places its jobs (their team is not configured). Before any holder kept terms
    (none listed), nothing is said: the config's are all there is."""
    db = tmp_path / "store.db"
    config = _config(tmp_path / "config.toml", "sqlite://%s" % db, {"vision": 1.5, "nlp": 1})
    store = open_store("sqlite://%s" % db)
    try:
        code, out, err = in_process(capfd, ["--config", str(config), "teams"])
        assert (code, err) == (0, ""), err
        store.keep_team_terms({"vision": TeamTerms(1.5, False, 1.0)})
    finally:
        store.close()
    code, out, err = in_process(capfd, ["--config", str(config), "teams"])
    assert code == 0 and list(_rows(out)) == ["vision", "nlp"], out
    assert err == ("fractui: team nlp: the scheduler holds no team nlp (its config has none): "
                   "its jobs are not placed, where this config (%s) says quota 1 GPU\n"
                   % config), err


def test_a_team_whose_kept_row_is_damaged_is_said_not_known_in_its_json_too(tmp_path, capfd):
    """vision's row of the terms the lease holder keeps holds what fractui never writes: the
    table shows this config's quota with a line on stderr saying the kept one is not known;
    ``--json`` gave this config's quota as the scheduler's, nothing in it saying otherwise
    (a script reads stdout). Its "quota_not_known" says why, naming the store and the row;
    null for a team whose row was read."""
    db = tmp_path / "store.db"
    config = _config(tmp_path / "config.toml", "sqlite://%s" % db, {"vision": 1.5, "nlp": 1})
    store = open_store("sqlite://%s" % db)
    try:
        store.keep_team_terms({"vision": TeamTerms(1.5, False, 1.0),
                               "nlp": TeamTerms(1.0, False, 1.0)})
    finally:
        store.close()
    with sqlite3.connect(str(db)) as conn:
        conn.execute("UPDATE team_terms SET quota_gpus = 'lots' WHERE team = 'vision'")
    code, out, err = in_process(capfd, ["--config", str(config), "teams", "--json"])
    assert code == 0 and "team vision: its quota is not known" in err, err
    said = {t["name"]: t["quota_not_known"] for t in json.loads(out)["teams"]}
    assert said == {"vision": "store %s, its row of team_terms: team vision's quota's "
                              "quota_gpus is 'lots', not what fractui writes there" % db,
                    "nlp": None}, said


def test_who_writes_a_damaged_kept_row_again_is_said_by_whether_a_scheduler_holds_the_lease(
        tmp_path, capfd):
    """A damaged row of the kept terms: ``teams`` said the scheduler "writes the row again at
    its next pass" where no scheduler held the lease, so none would. It says so where one
    holds it, and where none does that none writes it until one takes the lease."""
    db = tmp_path / "store.db"
    config = _config(tmp_path / "config.toml", "sqlite://%s" % db, {"vision": 1.5})
    store = open_store("sqlite://%s" % db)
    try:
        store.keep_team_terms({"vision": TeamTerms(1.5, False, 1.0)})
        with sqlite3.connect(str(db)) as conn:
            conn.execute("UPDATE team_terms SET weight = -1 WHERE team = 'vision'")
        row = "store %s, its row of team_terms: team vision's quota is 1.5 GPUs at weight -1, " \
            "which no config gives" % db
        code, out, err = in_process(capfd, ["--config", str(config), "teams"])
        assert (code, err) == (0, "fractui: team vision: its quota is not known: %s (no "
                               "scheduler holds the store's lease now: none writes the row "
                               "again until one takes the lease, holding it to its own "
                               "config's from its first pass); this config's (%s) quota 1.5 "
                               "GPUs is shown\n" % (row, config)), err
        assert store.acquire_lease("sched", 60.0) is not None
        code, out, err = in_process(capfd, ["--config", str(config), "teams"])
        assert (code, err) == (0, "fractui: team vision: its quota is not known: %s (the "
                               "scheduler holds it to its own config's, and writes the row "
                               "again at its next pass); this config's (%s) quota 1.5 GPUs is "
                               "shown\n" % (row, config)), err
    finally:
        store.close()


def test_a_team_member_on_postgresql_reads_every_teams_standing(tmp_path, capfd, pg_server):
    """A role in team nlp alone, no admin (a cancel of vision's job is refused), reads both
    teams' standing: reading the store's usage is everyone's who may open it."""
    m = member_of_nlp(pg_server, {"vision": 7})
    db, names, ids, member = m.db, m.names, m.ids, m.role
    config = _config(tmp_path / "member.toml", pg_server.url(db, user=member),
                     {names["vision"]: 1.5, names["nlp"]: 2})
    code, out, err = in_process(capfd, ["--config", str(config), "cancel", str(ids["a"])])
    assert code == 1 and "refused: you are %s (in team %s, not an admin)" % (
        member, names["nlp"]) in err, err
    code, out, err = in_process(capfd, ["--config", str(config), "teams", "--json"])
    assert code == 0 and not leaks(err), err
    assert [t["max_waiting"] for t in json.loads(out)["teams"]] == [7, 10000]  # the store's
    store = open_store(pg_server.url(db), make=False)
    try:
        check_against_the_tui(json.loads(out), store, config, names)
    finally:
        store.close()


def kept_pass(store: Store, config_path: Path) -> Dict[str, Hold]:
    """The pass a lease holder makes on ``fill``'s jobs (their host, gpu-a, one L4 that its
    jobs fill; holds after BOUND), its holds kept in the store as the lease holder keeps them
    (``Scheduler._keep_team_holds``): nlp's h, waiting for room past the bound, holds."""
    config = load_config(str(config_path))
    result = schedule([view("gpu-a", 1)], store.jobs(ACTIVE), config.queues, config.teams,
                      store.uid, reserve=Reserve(BOUND, store.now()))
    store.keep_team_holds(result.held)
    return result.held


def said_reserved(out: str, hold: Hold, team: str, name: str) -> None:
    """``teams`` said the hold on one line of its own, in the TUI's words."""
    assert hold.host == "gpu-a", hold
    said = [line for line in out.splitlines() if line.startswith("reserved ")]
    assert len(said) == 1 and re.fullmatch(
        r"reserved %s: %.2f of its quota and its room on gpu-a held for job %d \(%s, waiting "
        r"1[5-9]m[0-9]{2}s\): its later jobs take only what is left beside it, off that host"
        % (team, hold.charge, hold.job, re.escape(name)), said[0]), out


def test_a_teams_hold_for_a_job_past_the_bound_is_said_and_none_without(tmp_path, capfd):
    """An SQLite store: nlp's h has waited 15 minutes for room, past reserve_after_s, and the
    pass holds nlp's quota and gpu-a for it. Nothing said that an admin who saw nlp's quota
    partly idle, or gpu-a skipped by its later jobs, could tell why from; now a line says
    which job holds what, and ``--json`` the same. Before any pass kept a hold, none."""
    db = tmp_path / "store.db"
    store = open_store("sqlite://%s" % db)
    ids = fill(store, "vision", "nlp")
    with sqlite3.connect(str(db)) as conn:
        conn.execute("UPDATE jobs SET submitted_at = submitted_at - 900 WHERE id = ?",
                     (ids["h"],))
    config = _config(tmp_path / "config.toml", "sqlite://%s" % db,
                     {"vision": 1.5, "nlp": 2})
    try:
        code, out, err = in_process(capfd, ["--config", str(config), "teams", "--json"])
        assert code == 0 and [t["reserved"] for t in json.loads(out)["teams"]] == [None] * 2
        code, out, err = in_process(capfd, ["--config", str(config), "teams"])
        assert code == 0 and "reserved" not in out, out
        held = kept_pass(store, config)
    finally:
        store.close()
    assert list(held) == ["nlp"] and held["nlp"].job == ids["h"], held
    code, out, err = in_process(capfd, ["--config", str(config), "teams"])
    assert code == 0 and not leaks(err), err
    said_reserved(out, held["nlp"], "nlp", "h")
    code, out, err = in_process(capfd, ["--config", str(config), "teams", "--json"])
    nlp = json.loads(out)["teams"][1]
    assert nlp["reserved"] == {"job": ids["h"], "name": "h", "charge": held["nlp"].charge,
                               "host": "gpu-a", "waited_s": nlp["reserved"]["waited_s"]}
    assert 900 <= nlp["reserved"]["waited_s"] < 1200, nlp
    code, out, err = in_process(capfd, ["--config", str(config), "teams", "--team", "vision"])
    assert code == 0 and "reserved" not in out, out  # vision's standing alone


def test_a_hold_of_a_job_that_no_longer_waits_is_not_said(tmp_path, capfd):
    """The store keeps the last pass's holds: once h has started (or is cancelled), before a
    pass writes them again (or with no scheduler), its hold is not said."""
    db = tmp_path / "store.db"
    store = open_store("sqlite://%s" % db)
    ids = fill(store, "vision", "nlp")
    store.keep_team_holds({"nlp": Hold(ids["h"], 0.25, "gpu-a")})
    store.place(ids["h"], _share(0.25), "ops", "fits")
    store.started(ids["h"], "jh", None, "ops", "started")
    store.close()
    config = _config(tmp_path / "config.toml", "sqlite://%s" % db, {"vision": 1.5, "nlp": 2})
    code, out, err = in_process(capfd, ["--config", str(config), "teams"])
    assert code == 0 and "reserved" not in out, out


def test_a_hostile_job_name_or_host_forges_no_line_of_teams(tmp_path, capfd):
    """A job's name is a researcher's, and the host a hold names is read from the store: a
    line break and an escape in them are shown as "?", never as a line "starved vision: ..."
    of their own or a colour."""
    db = tmp_path / "store.db"
    store = open_store("sqlite://%s" % db)
    ids = fill(store, "vision", "nlp")
    store.keep_team_holds({"nlp": Hold(ids["h"], 0.25, "gpu-a\nstarved vision: forged")})
    store.close()
    with sqlite3.connect(str(db)) as conn:
        conn.execute("UPDATE jobs SET name = ? WHERE id = ?",
                     ("h\nstarved vision: 9 waiting\x1b[31m", ids["h"]))
    config = _config(tmp_path / "config.toml", "sqlite://%s" % db, {"vision": 1.5, "nlp": 2})
    code, out, err = in_process(capfd, ["--config", str(config), "teams"])
    assert code == 0 and "\x1b" not in out, out
    assert not [line for line in out.splitlines() if line.startswith("starved vision")], out
    said = [line for line in out.splitlines() if line.startswith("reserved ")]
    assert len(said) == 1 and "room on gpu-a?starved vision: forged held for job %d (h?starved " \
        "vision: 9 waiting?[31m, waiting" % ids["h"] in said[0], out


def test_a_team_member_on_postgresql_reads_her_teams_hold(tmp_path, capfd, pg_server):
    """PostgreSQL: the lease holder (an admin's role) keeps the pass's hold for nlp's h, past
    the bound; a role in team nlp alone, no admin, reads it in ``teams`` as on SQLite."""
    m = member_of_nlp(pg_server)
    pg_server.sql("UPDATE jobs SET submitted_at = submitted_at - 900 WHERE id = %d"
                  % m.ids["h"], db=m.db)
    admin = _config(tmp_path / "admin.toml", pg_server.url(m.db),
                    {m.names["vision"]: 1.5, m.names["nlp"]: 2})
    member = _config(tmp_path / "member.toml", pg_server.url(m.db, user=m.role),
                     {m.names["vision"]: 1.5, m.names["nlp"]: 2})
    code, out, err = in_process(capfd, ["--config", str(member), "teams"])
    assert code == 0 and "reserved" not in out, out
    store = open_store(pg_server.url(m.db), make=False)
    try:
        held = kept_pass(store, admin)
    finally:
        store.close()
    assert list(held) == [m.names["nlp"]] and held[m.names["nlp"]].job == m.ids["h"], held
    code, out, err = in_process(capfd, ["--config", str(member), "teams"])
    assert code == 0 and not leaks(err), err
    said_reserved(out, held[m.names["nlp"]], m.names["nlp"], "h")


def test_no_teams_a_typo_an_empty_name_and_no_store_are_said_never_a_traceback(
        tmp_path, capfd):
    store_path = tmp_path / "typo" / "store.db"
    url = "sqlite://%s" % store_path
    config = _config(tmp_path / "config.toml", url, {"vision": 1, "nlp": 2})
    none = tmp_path / "none.toml"
    none.write_text("[store]\nurl = %s\n" % json.dumps(url) + QUEUES)
    for argv, code, said in (
            ([config, "--team", "nlpp"], 2, "fractui: %s: unknown team 'nlpp' (did you mean "
             "'nlp'? known: vision, nlp)\n" % config),
            ([config, "--team", ""], 2, "argument --team: takes a team's name, as the "
             "config's [[teams]] name it"),
            ([config, "--tema", "nlp"], 2, "unrecognized arguments: --tema nlp (did you mean "
             "--team?)"),
            ([none, "--team", "nlp"], 2, "fractui: %s: unknown team 'nlp': the config has no "
             "[[teams]]\n" % none),
            # (of this config, not of the fleet: the scheduler's config may have quotas)
            ([none], 0, "fractui: the config has no [[teams]]: no team's standing to show (an "
             "admin's config lists them; copy its [[teams]] into yours; fractui jobs shows "
             "what runs and waits)\n"),
            ([config], 1, "fractui: store %s: there is no store here yet" % store_path)):
        got, out, err = in_process(capfd, ["--config", str(argv[0]), "teams", *argv[1:]])
        assert (got, out) == (code, "") and said in err and not leaks(err), (argv, err)
    assert not store_path.parent.exists()  # a verb that only reads makes no store
    got, out, err = in_process(capfd, ["--config", str(none), "teams", "--json"])
    assert got == 0 and json.loads(out) == {"teams": [], "as_of": None, "scheduler": None,
                                            "usage_weight": 0.0}, out


def test_the_verb_loads_no_textual(tmp_path):
    """It reads the TUI's standing module, which is pure: Textual is not loaded (a third of a
    second on each run, as for the other store verbs)."""
    db = tmp_path / "store.db"
    open_store("sqlite://%s" % db).close()
    config = _config(tmp_path / "config.toml", "sqlite://%s" % db, {"vision": 1})
    done = subprocess.run([sys.executable, "-c", (
        "import sys\nfrom fractui.cli import main\ncode = main(sys.argv[1:])\n"
        "sys.stdout.flush()\nprint(code, 'textual' in sys.modules, file=sys.stderr)"),
        "--config", str(config), "teams", "--json"], capture_output=True, text=True, cwd=REPO,
        timeout=120, stdin=subprocess.DEVNULL)
    assert done.stderr == "0 False\n", done.stderr


def _pending(i: int, team: Optional[str], queue: str = "q") -> Job:
    return Job(i, queue, team, "n", ("x",), {}, "pending", 1000.0, 1000.0)


def _held(i: int, team: str, charge: float) -> Job:
    return Job(i, "q", team, "n", ("x",), {}, "running", 900.0, 900.0, started_at=900.0,
               slot=Slot("h", (0,), charge=charge))


def test_next_is_the_order_the_pass_takes_the_teams_up_in():
    """``team_order`` is ``_fair``'s first pick of each team, on the pass's inputs: the
    weighted share first (held within quota over weight, blended with recent usage where
    [fairshare] counts it), then priority and age; a team the config lacks, a job of no team
    and a queue the config lacks are left out, as no pass places them."""
    teams = [TeamConfig("a", quota_gpus=2), TeamConfig("b", quota_gpus=2, weight=2),
             TeamConfig("c", quota_gpus=2)]
    queues = [QueueConfig(name="q", gpu=0.25), QueueConfig(name="hi", gpu=0.25, priority=5)]
    jobs = [_held(1, "a", 1.0), _held(2, "b", 1.5), _held(3, "c", 0.5),
            _pending(4, "a"), _pending(5, "b"), _pending(6, "c", "hi"), _pending(7, "c"),
            _pending(8, "x"), _pending(9, None), _pending(10, "a", "gone")]
    # shares now: a 1.0, b 0.75 (1.5 over weight 2), c 0.5
    assert team_order(jobs, queues, teams, Recent()) == ["c", "b", "a"]
    recent = Recent.of(0.8, {"c": 3.0, "a": 0.1})  # c held 3 GPUs lately: last now
    assert team_order(jobs, queues, teams, recent) == ["b", "a", "c"]
    for r in (Recent(), recent):
        usage = {u.name: u for u in team_usage(jobs, teams, dict(r.gpus))}
        priority = {q.name: q.priority for q in queues}
        waiting = [j for j in jobs if j.state == PENDING and j.queue in priority and
                   j.team in usage]
        served = _fair(waiting, lambda: usage, priority, r.usage_weight)
        assert list(dict.fromkeys(j.team for j in served)) == team_order(jobs, queues, teams,
                                                                          r)


def test_a_team_gone_from_the_config_whose_jobs_hold_gpus_is_shown_marked(tmp_path, capfd):
    """A team removed from the config while its jobs still held GPUs was in no line of
    ``teams`` (``queues`` lists a queue gone from the config that has active jobs): its GPUs
    held were nowhere. It is shown after the configured teams, its numbers from the store
    (team_usage's counting), the config's (quota, share, next) unknown, and said not in this
    config, in text and --json; the configured teams' numbers are as without it. All it holds
    is borrowed: it has no quota, and a pass may preempt its jobs (queueing.borrowed)."""
    db = tmp_path / "store.db"
    store = open_store("sqlite://%s" % db)
    fill(store, "vision", "nlp")
    gone = store.submit("quarter", "audio", "old", ["sleep", "600"], {"gpu": 0.25}, "ops").id
    store.place(gone, _share(0.25), "ops", "fits")
    store.started(gone, "jold", None, "ops", "started")
    store.submit("quarter", "audio", "new", ["sleep", "600"], {"gpu": 0.25}, "ops")
    store.close()
    config = _config(tmp_path / "config.toml", "sqlite://%s" % db, {"vision": 1.5, "nlp": 2})
    code, out, err = in_process(capfd, ["--config", str(config), "teams", "--json"])
    assert code == 0 and not leaks(err), err
    got = {t["name"]: t for t in json.loads(out)["teams"]}
    assert list(got) == ["vision", "nlp", "audio"]
    assert set(got["audio"]) == set(got["vision"]), got
    assert (got["vision"]["configured"], got["audio"]["configured"]) == (True, False)
    assert (got["audio"]["held"], got["audio"]["borrowed"], got["audio"]["running"],
            got["audio"]["pending"]) == (0.25, 0.25, 1, 1)
    assert (got["audio"]["quota"], got["audio"]["share"], got["audio"]["next"]) == (
        None, None, None)
    assert got["vision"]["held"] == 1.5 and got["nlp"]["held"] == 0.25
    code, out, err = in_process(capfd, ["--config", str(config), "teams"])
    assert code == 0 and not leaks(err), err
    row = next(line.split() for line in out.splitlines() if line.startswith("audio"))
    assert row[:6] == ["audio", "?", "0.25", "0.25", "1", "1"], out
    assert "audio: not in this config: the store holds active jobs of it (0.25 GPUs held), " \
        "submitted under a config that had it" in out, out


def test_a_team_this_config_lacks_that_the_scheduler_holds_is_shown_as_held(tmp_path, capfd):
    """A member's old copy lacks audio, which the admin added: the lease holder keeps its
    terms (quota 2) and its passes give it its quota, share and turn. ``teams`` showed it as a
    team no config has (quota and share "?", NEXT "-", "submitted under a config that had
    it"), and ranked the configured teams without it: not what the scheduler does. It is
    shown as the scheduler holds it, as a team whose terms differ from this config's is, with
    a line on stderr saying this config lacks it; ``"configured": false`` in --json."""
    db = tmp_path / "store.db"
    store = open_store("sqlite://%s" % db)
    try:
        fill(store, "vision", "nlp")
        running = store.submit("quarter", "audio", "old", ["sleep", "600"], {"gpu": 0.25},
                               "ops").id
        store.place(running, _share(0.25), "ops", "fits")
        store.started(running, "jold", None, "ops", "started")
        store.submit("quarter", "audio", "new", ["sleep", "600"], {"gpu": 0.25}, "ops")
        store.keep_team_terms({"vision": TeamTerms(1.5, False, 1.0),
                               "nlp": TeamTerms(2.0, False, 1.0),
                               "audio": TeamTerms(2.0, False, 1.0)})
    finally:
        store.close()
    config = _config(tmp_path / "config.toml", "sqlite://%s" % db, {"vision": 1.5, "nlp": 2})
    code, out, err = in_process(capfd, ["--config", str(config), "teams", "--json"])
    assert code == 0 and not leaks(err), err
    got = {t["name"]: t for t in json.loads(out)["teams"]}
    assert list(got) == ["vision", "nlp", "audio"], got
    assert (got["audio"]["configured"], got["audio"]["quota"], got["vision"]["configured"]
            ) == (False, 2.0, True), got["audio"]
    assert got["audio"]["share"] is not None and got["audio"]["next"] is not None, got
    held = load_config(str(config))
    held = replace(held, teams=held.teams + (TeamConfig("audio", 2.0),))
    store = open_store("sqlite://%s" % db, make=False)
    try:
        usage = UsageRead.of([], held, store.now())
        jobs = store.jobs(ACTIVE)
    finally:
        store.close()
    assert [t["name"] for t in sorted(got.values(), key=lambda t: t["next"] or 99)
            if t["next"] is not None] == team_order(jobs, held.queues, held.teams,
                                                     Recent.of(held.fairshare.usage_weight,
                                                               usage.recent))
    code, out, err = in_process(capfd, ["--config", str(config), "teams"])
    assert code == 0 and "not in this config: the store holds" not in out, out
    assert _rows(out)["audio"][:2] == ["audio", "2"], out
    assert ("fractui: team audio: not in this config (%s): the scheduler holds it to quota 2 "
            "GPUs, over_quota off, weight 1: the scheduler's are shown" % config) in err, err


def test_a_team_the_scheduler_holds_no_terms_of_has_no_turn(tmp_path, capfd):
    """nlp is in this config, not in the lease holder's (its terms list vision alone): its
    line says its jobs are not placed, yet NEXT gave it the first turn, and vision the second,
    where the passes take up vision's alone. NEXT is the scheduler's order: nlp's "-"."""
    db = tmp_path / "store.db"
    store = open_store("sqlite://%s" % db)
    try:
        store.submit("quarter", "nlp", "n", ["sleep", "600"], {"gpu": 0.25}, "ops")
        store.submit("quarter", "vision", "v", ["sleep", "600"], {"gpu": 0.25}, "ops")
        store.keep_team_terms({"vision": TeamTerms(1.0, False, 1.0)})
    finally:
        store.close()
    config = _config(tmp_path / "config.toml", "sqlite://%s" % db, {"nlp": 1, "vision": 1})
    code, out, err = in_process(capfd, ["--config", str(config), "teams"])
    assert code == 0 and "its jobs are not placed" in err, err
    assert (_rows(out)["nlp"][-1], _rows(out)["vision"][-1]) == ("-", "1"), out


def test_a_team_the_scheduler_holds_no_terms_of_is_not_said_starved_nor_holding(tmp_path,
                                                                                 capfd):
    """nlp is in this config, not in the lease holder's terms (vision's alone), and its h has
    waited 15 minutes for the fleet with its quota free, an old pass's hold kept for it: it
    was said starved and reserved, and given a SHARE, from this config's quota, where the
    scheduler takes up none of its jobs. Its line says it is not placed; nothing else does."""
    db = tmp_path / "store.db"
    store = open_store("sqlite://%s" % db)
    try:
        ids = fill(store, "vision", "nlp")
        store.keep_team_holds({"nlp": Hold(ids["h"], 0.25, "gpu-a")})
        store.keep_team_terms({"vision": TeamTerms(1.5, False, 1.0)})
    finally:
        store.close()
    with sqlite3.connect(str(db)) as conn:
        conn.execute("UPDATE jobs SET submitted_at = submitted_at - 900 WHERE id = ?",
                     (ids["h"],))
    config = _config(tmp_path / "config.toml", "sqlite://%s" % db, {"vision": 1.5, "nlp": 2})
    code, out, err = in_process(capfd, ["--config", str(config), "teams"])
    assert code == 0 and "its jobs are not placed" in err, err
    assert not [line for line in out.splitlines()
                if line.startswith(("starved nlp", "reserved nlp"))], out
    assert _rows(out)["nlp"][-2:] == ["-", "-"] and _rows(out)["vision"][-1] == "1", out
    code, out, err = in_process(capfd, ["--config", str(config), "teams", "--json"])
    nlp = next(t for t in json.loads(out)["teams"] if t["name"] == "nlp")
    assert (nlp["starved"], nlp["reserved"], nlp["share"], nlp["next"], nlp["held"]) == (
        None, None, None, None, 0.25), nlp


def test_a_damaged_rows_quota_of_one_gpu_is_said_one_gpu(tmp_path):
    """The damaged row's words count its quota as every count is said ("1 GPU", never
    "1 GPUs")."""
    db = tmp_path / "store.db"
    store = open_store("sqlite://%s" % db)
    try:
        store.keep_team_terms({"vision": TeamTerms(1.0, False, 1.0)})
        with sqlite3.connect(str(db)) as conn:
            conn.execute("UPDATE team_terms SET weight = 0 WHERE team = 'vision'")
        assert store.team_terms().unread == {
            "vision": "store %s, its row of team_terms: team vision's quota is 1 GPU at "
                      "weight 0, which no config gives" % db}
    finally:
        store.close()
