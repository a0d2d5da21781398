"""What a job runs in, from submit to launch (issue 17): the variables it adds to its
environment and the container image it runs in, kept by the store on both backends (and by
stores of before, migrated), given by ``fractui submit --env/--image`` or the queue's image,
and sent in the scheduler's launch — with a bare job's launch what it always was. Real SQLite,
a real PostgreSQL, real agents on a simulated local fleet, and — once the agent runs container
jobs — a real podman (until then that one test skips, saying why)."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import sys
from dataclasses import replace

import pytest

from remote_agent.gpu.models import models

from fractui.config import QueueConfig, TeamConfig
from fractui.scheduler.execute import launch_params
from fractui.sched.fleetview import HostView
from fractui.sched.queueing import schedule
from fractui.sched.quota import team_usage
from fractui.store import SqliteStore, StoreDamaged, open_store
from fractui.store.model import PENDING, PLACED, Job, Slot
from fractui.store.sql import migrations, statements
from fractui.store.sqlite import _migrations
from fractui.tui.jobrows import filter_rows, job_rows
from fractui.tui.sample import NOW, sample_fleet
from fractui.tui.typed import Clocked
from tests.cli_run import in_process, leaks
from tests.localfleet import local_fleet, sleeper  # noqa: F401 - the fixture
from tests.podman import podman  # noqa: F401 - the fixture
from tests.test_sched_charge import view_of
from tests.test_tui_jobs import text_of
from tests.test_tui_small import app_with_job_1_as, open_job_1
from tests.tui_frozen import pilot_test

PY = sys.executable
GREETING = "hello; $HOME `id` 'quoted' *"


def test_env_and_image_are_kept_read_back_and_survive_a_requeue(store_url):
    store = open_store(store_url)
    try:
        boxed = store.submit("q", "t", "boxed", ["python", "x"], {"gpu": 0.5}, "me",
                             env={"LR": "0.1", "EMPTY": ""}, image="docker.io/x/train:1")
        bare = store.submit("q", "t", "bare", ["true"], {"gpu": 0.5}, "me")
        assert (boxed.env, boxed.image) == ({"LR": "0.1", "EMPTY": ""}, "docker.io/x/train:1")
        assert (bare.env, bare.image) == ({}, None)
        assert store.get(boxed.id) == boxed and store.jobs() == [boxed, bare]
        record = store.get(boxed.id).record()
        assert (record["env"], record["image"]) == ({"LR": "0.1", "EMPTY": ""},
                                                    "docker.io/x/train:1")
        assert (bare.record()["env"], bare.record()["image"]) == ({}, None)
        submitted = store.audit_log(boxed.id)[0].detail
        assert (submitted["env"], submitted["image"]) == (boxed.env, boxed.image)
        assert "env" not in store.audit_log(bare.id)[0].detail  # a bare job's as before
        store.place(boxed.id, Slot("h", (0,), memory_mib=100, charge=0.5), "s", "placed")
        store.started(boxed.id, "j1", None, "s", "started")
        again = store.requeue(boxed.id, ("running",), "s", "host lost")
        assert (again.attempt, again.env, again.image) == (1, boxed.env, boxed.image)
    finally:
        store.close()
    reopened = open_store(store_url)
    try:
        assert reopened.get(boxed.id).env == {"LR": "0.1", "EMPTY": ""}
    finally:
        reopened.close()


@pytest.mark.parametrize("env", ["[]", '{"A": 1}', "not json"])
def test_a_kept_env_fractui_never_wrote_is_the_stores_damage(tmp_path, env):
    path = str(tmp_path / "store.db")
    made = SqliteStore(path)
    made.submit("q", None, "n", ["x"], {}, "me")
    made.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE jobs SET env = ?", (env,))
    db.commit()
    db.close()
    store = SqliteStore(path)
    try:
        with pytest.raises(StoreDamaged, match="job 1"):
            store.get(1)
    finally:
        store.close()


def test_an_sqlite_store_of_schema_10_keeps_its_jobs_bare(tmp_path):
    path = str(tmp_path / "store.db")
    db = sqlite3.connect(path)
    for number, sql in _migrations():
        if number <= 10:
            db.executescript(sql)
    db.execute("PRAGMA user_version = 10")
    db.execute("INSERT INTO meta (key, value) VALUES ('uid', '01d00001')")  # (given as made)
    db.execute("INSERT INTO jobs (queue, name, argv, request, state, submitted_at, updated_at) "
               "VALUES ('q', 'old', '[\"x\"]', '{}', 'pending', 1, 1)")
    db.commit()
    db.close()
    store = SqliteStore(path)
    try:
        old = store.get(1)
        assert (old.name, old.env, old.image) == ("old", {}, None)
        new = store.submit("q", None, "new", ["x"], {}, "me", env={"A": "1"}, image="img")
        assert (store.get(new.id).env, store.get(new.id).image) == ({"A": "1"}, "img")
    finally:
        store.close()


def test_a_postgresql_store_of_schema_8_keeps_its_jobs_bare(pg_server):
    db = pg_server.new_database()
    pg_server.sql("CREATE TABLE fractui_schema (version INTEGER NOT NULL)", db=db)
    pg_server.sql("INSERT INTO fractui_schema VALUES (8)", db=db)
    for number, sql in migrations("postgresql"):
        if number <= 8:
            for statement in statements(sql):
                pg_server.sql(statement, db=db)
    pg_server.sql("INSERT INTO meta (key, value) VALUES ('uid', '01d00001')", db=db)
    pg_server.sql("INSERT INTO jobs (queue, name, argv, request, state, submitted_at, "
                  "updated_at) VALUES ('q', 'old', '[\"x\"]', '{}', 'pending', 1, 1)", db=db)
    pg_server.sql("INSERT INTO audit (time, actor, action, job, why) VALUES "
                  "(1, 'ann@h', 'submit', 1, 'submitted')", db=db)
    store = open_store(pg_server.url(db))
    try:
        old = store.get(1)
        assert (old.name, old.env, old.image) == ("old", {}, None)
        assert old.user == "ann"  # 0017: who submitted it, from its audit entry
        new = store.submit("q", None, "new", ["x"], {}, "me", env={"A": "1"}, image="img")
        assert (store.get(new.id).env, store.get(new.id).image) == ({"A": "1"}, "img")
        assert pg_server.sql("SELECT version FROM fractui_schema", db=db) == [
            (migrations("postgresql")[-1][0],)]
    finally:
        store.close()


def _job(slot: Slot, cwd=None, **runtime) -> Job:
    return Job(id=7, queue="q", team="t", name="train", argv=("python", "x y"), request={},
               state=PLACED, submitted_at=1.0, updated_at=1.0, cwd=cwd, attempt=2, slot=slot,
               **runtime)


SHARE = Slot("gpu-a", (0, 1), memory_mib=2048, charge=0.5)
MIG = Slot("gpu-a", (1,), "3g.40gb", 4, layout_version="v7", charge=3 / 7)


def test_a_bare_jobs_launch_is_byte_for_byte_what_it_was():
    """As fractui sent it before jobs had env and image (the agent fingerprints a key's
    launch: a different one under the same key would be refused as another job)."""
    assert json.dumps(launch_params(_job(SHARE, "/work"), "abcd1234")) == (
        '{"key": "fractui-abcd1234-7.2", "argv": ["python", "x y"], "name": "train", '
        '"env": {"FRACTUI_STORE_JOB": "7"}, "cwd": "/work", "gpus": [0, 1], '
        '"memory_mib": 2048}')
    assert json.dumps(launch_params(_job(MIG), "abcd1234")) == (
        '{"key": "fractui-abcd1234-7.2", "argv": ["python", "x y"], "name": "train", '
        '"env": {"FRACTUI_STORE_JOB": "7"}, "gpu": 1, "mig": {"profile": "3g.40gb", '
        '"start": 4, "destroy_idle": true, "layout_version": "v7"}}')


def test_a_jobs_launch_carries_its_env_and_image_and_fractuis_own_variable_wins():
    params = launch_params(_job(SHARE, env={"LR": "0.1", "FRACTUI_STORE_JOB": "mine"},
                                image="docker.io/x/train:1"), "abcd1234")
    assert params["env"] == {"LR": "0.1", "FRACTUI_STORE_JOB": "7"}
    assert params["image"] == "docker.io/x/train:1"
    assert "image" not in launch_params(_job(SHARE, env={"LR": "0.1"}), "abcd1234")


@pytest.mark.parametrize("queue", [QueueConfig(name="q", gpu=0.25),
                                   QueueConfig(name="q", memory_gib=10),
                                   QueueConfig(name="q", mig="3g.40gb"),
                                   QueueConfig(name="q", gpus=1)], ids=lambda q: q.describe())
def test_a_container_job_is_charged_as_a_bare_one(queue):
    """The slice is what is charged: the same decision, the same charge and the same quota
    standing whatever the job runs in."""
    a100 = models()["NVIDIA A100-SXM4-80GB"]
    view = with_runtime(view_of(a100, queue.mig is not None, 2))
    teams = [TeamConfig("t", quota_gpus=100)]
    bare = Job(1, "q", "t", "n", ("x",), queue.request(), PENDING, 0.0, 0.0)
    boxed = replace(bare, image="docker.io/x/train:1", env={"A": "1"})
    decided = [schedule([view], [job], [queue], teams, "u").decisions[0].slot
               for job in (bare, boxed)]
    assert decided[0] == decided[1] and decided[0].charge > 0
    held = [team_usage([replace(j, state=PLACED, slot=s)], teams)[0].used
            for j, s in zip((bare, boxed), decided)]
    assert held[0] == held[1] == decided[0].charge


def with_runtime(view: HostView, name: str = "h") -> HostView:
    return replace(view, name=name, hello=dict(view.hello, runtimes={
        "podman": "4.3.1", "docker": None, "apptainer": None}))


def test_a_container_job_goes_only_where_a_runtime_can_run_it_and_says_why_it_waits():
    """A host whose agent found no runtime would refuse it as a job that can never start: the
    pass places it on a host with one, and with none, it waits saying why (a bare job still runs
    anywhere)."""
    l4 = models()["NVIDIA L4"]
    bare_host = replace(view_of(l4, False, 1), name="plain")  # hello without runtimes
    boxed_host = with_runtime(view_of(l4, False, 1), "boxed")
    queue = QueueConfig(name="q", gpus=1)
    bare = Job(1, "q", None, "n", ("x",), queue.request(), PENDING, 0.0, 0.0)
    boxed = replace(bare, id=2, image="localhost/train:1", submitted_at=1.0)
    both = schedule([bare_host, boxed_host], [boxed, bare], [queue], [], "u")
    assert {d.job: d.slot.host for d in both.decisions} == {2: "boxed", 1: "plain"}
    alone = schedule([bare_host], [boxed, bare], [queue], [], "u")
    assert [d.job for d in alone.decisions] == [1]
    assert "no host it may use has a container runtime" in alone.waiting[2]
    assert "localhost/train:1" in alone.waiting[2]
    gone = with_runtime(bare_host, "plain")  # runtimes all missing: each is None
    gone = replace(gone, hello=dict(gone.hello, runtimes={"podman": None}))
    assert not schedule([gone], [boxed], [queue], [], "u").decisions


# -- fractui submit --

def _config(tmp_path, image_line: str = "") -> str:
    path = tmp_path / "fractui.toml"
    path.write_text('[scheduler]\nstore = "%s"\n[[queues]]\nname = "bare"\ngpu = 0.25\n'
                    '[[queues]]\nname = "boxed"\ngpu = 0.25\nimage = "docker.io/x/base:1"\n%s'
                    % (tmp_path / "store.db", image_line))
    return str(path)


def test_submit_keeps_env_and_image_and_the_queues_image_unless_given(tmp_path, capfd):
    config = _config(tmp_path)

    def submit(*argv: str) -> dict:
        code, out, err = in_process(capfd, ["--config", config, "submit", "--json", *argv])
        assert code == 0 and not leaks(err), err
        return json.loads(out)

    given = submit("--queue", "bare", "--image", "localhost/mine:2", "--env", "LR=0.1",
                   "--env", "ARGS=--a=1 --b $X", "--env", "EMPTY=", "--", "python", "t.py")
    assert (given["env"], given["image"]) == (
        {"LR": "0.1", "ARGS": "--a=1 --b $X", "EMPTY": ""}, "localhost/mine:2")
    assert given["request"]["image"] is None
    bare = submit("--queue", "bare", "--", "true")
    assert (bare["env"], bare["image"]) == ({}, None)
    default = submit("--queue", "boxed", "--", "true")
    assert (default["image"], default["request"]["image"]) == ("docker.io/x/base:1",) * 2
    chosen = submit("--queue", "boxed", "--image", "localhost/mine:2", "--", "true")
    assert (chosen["image"], chosen["request"]["image"]) == ("localhost/mine:2",
                                                            "docker.io/x/base:1")
    code, out, _ = in_process(capfd, ["--config", config, "submit", "--queue", "boxed", "--",
                                      "true"])
    assert out == "5 pending in queue boxed, in image docker.io/x/base:1\n"
    code, out, _ = in_process(capfd, ["--config", config, "jobs"])
    names = {line.split()[0]: line.split("  ")[-1].strip() for line in out.splitlines()[1:]}
    assert code == 0 and names == {"1": "python [localhost/mine:…", "2": "true",  # cut at 24
                                   "3": "true [docker.io/x/base:…",
                                   "4": "true [localhost/mine:2]",
                                   "5": "true [docker.io/x/base:…"}, out


@pytest.mark.parametrize("argv, says", [
    (["--env", "LR"], "--env #1 ('LR') takes NAME=VALUE: there is no '='"),
    (["--env", "A=1", "--env", "=x"], "--env #2 ('=x') takes NAME=VALUE: the name before '=' "
                                      "is empty"),
    (["--env", "A=1", "--env", "A=2"], "--env #2 ('A=2') gives A again (--env #1 gave it)"),
    (["--image", ""], "argument --image: must name a container image"),
    (["--image=-v/:/host"], "starts with '-'"),
    (["--image", "two words"], "holds a space or a control character; got 'two words'"),
    # a container's variables reach it through its runtime's env file, off every command line
    (["--image", "localhost/x:1", "--env", "PEM=a\nb"], "--env PEM cannot be given to a "
     "container: its value holds a line break"),
    (["--image", "localhost/x:1", "--env", "#A=1"], "--env #A cannot be given to a container: "
     "a name holding a blank or starting with '#'"),
])
def test_a_bad_env_or_image_is_a_usage_error_saying_what_and_where(tmp_path, capfd, argv,
                                                                   says):
    config = _config(tmp_path)
    code, out, err = in_process(capfd, ["--config", config, "submit", "--queue", "bare",
                                        *argv, "--", "true"])
    assert (code, out) == (2, "") and says in err and not leaks(err), err
    assert not (tmp_path / "store.db").exists()  # refused before the store was reached


def test_a_multi_line_value_is_refused_for_a_queue_s_container_not_for_a_bare_job(tmp_path,
                                                                                   capfd):
    config = _config(tmp_path)
    code, _, err = in_process(capfd, ["--config", config, "submit", "--queue", "boxed",
                                      "--env", "PEM=a\nb", "--", "true"])
    assert code == 2 and "--env PEM cannot be given to a container" in err, err
    code, out, err = in_process(capfd, ["--config", config, "submit", "--queue", "bare",
                                        "--env", "PEM=a\nb", "--", "true"])
    assert (code, out) == (0, "1 pending in queue bare\n"), err


def test_a_queues_bad_image_is_a_config_error(tmp_path, capfd):
    config = tmp_path / "fractui.toml"
    config.write_text('[[queues]]\nname = "q"\ngpu = 0.5\nimage = "--privileged"\n')
    code, _, err = in_process(capfd, ["--config", str(config), "submit", "--queue", "q", "--",
                                      "true"])
    assert code == 2 and "queues[0].image must name a container image" in err, err


def test_launch_image_joins_the_derived_key_only_when_given(capfd):
    """A bare `fractui launch` derives the key it always did (running it again after an
    upgrade answers the job it started); --image makes it another launch."""
    from fractui.cli import _parser
    from fractui.commands import launch_key, os_user

    words = ["launch", "gpu-a", "0", "--memory-mib", "512", "--env", "A=1"]
    bare = _parser().parse_args(words)
    bare.argv = ["python", "t.py"]
    boxed = _parser().parse_args(words + ["--image", "localhost/x:1"])
    boxed.argv = bare.argv
    before = [os_user(), "gpu-a", "0", None, None, None, 512, None, None, {"A": "1"},
              ["python", "t.py"]]
    assert launch_key(bare, {"A": "1"}) == "cli-" + hashlib.sha256(
        json.dumps(before, sort_keys=True).encode()).hexdigest()[:32]
    assert launch_key(boxed, {"A": "1"}) != launch_key(bare, {"A": "1"})
    code, out, err = in_process(capfd, ["launch", "gpu-a", "0", "--memory-mib", "5",
                                        "--image", "a b", "--", "true"])
    assert (code, out) == (2, "") and "argument --image: must name a container image" in err


# -- the scheduler's launch reaches the job --

def test_a_bare_jobs_env_reaches_it_untouched_by_any_shell(local_fleet):  # noqa: F811
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", memory_gib=1)])
    printer = [PY, "-c", "import os, json; print(json.dumps({k: os.environ.get(k) for k in "
               "('GREETING', 'EMPTY', 'FRACTUI_STORE_JOB')}), flush=True)"]
    job = f.store.submit("q", None, "env", printer, f.config.queue("q").request(), "test",
                         env={"GREETING": GREETING, "EMPTY": ""})
    f.until(lambda: f.states()[job.id] == "done", timeout_s=60)
    ran = f.store.get(job.id)
    lines = f.fleet.session("gpu-a").call("job.logs", {"job": ran.agent_job,
                                                       "lines": 10})["lines"]
    assert json.loads(lines[-1]) == {"GREETING": GREETING, "EMPTY": "",
                                     "FRACTUI_STORE_JOB": str(job.id)}



def test_a_container_job_runs_in_its_image_with_its_env_charged_as_a_bare_one(
        request, local_fleet):  # noqa: F811
    """The whole way: submit with an image and env, the scheduler's launch, the agent's
    container, the charge."""
    podman = request.getfixturevalue("podman")  # before the agents start: they use its conf
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", memory_gib=1)])
    printer = ["/usr/bin/python3", "-c", "import os, json; print(json.dumps({"
               "'GREETING': os.environ.get('GREETING'), "
               "'in_container': os.path.exists('/run/.containerenv')}), flush=True)"]
    boxed = f.store.submit("q", None, "boxed", printer, f.config.queue("q").request(), "test",
                           env={"GREETING": GREETING}, image=podman.image)
    bare = f.store.submit("q", None, "bare", sleeper(600), f.config.queue("q").request(),
                          "test")
    f.until(lambda: f.states()[boxed.id] == "done" and f.states()[bare.id] == "running",
            timeout_s=120)
    ran = f.store.get(boxed.id)
    lines = f.fleet.session("gpu-a").call("job.logs", {"job": ran.agent_job,
                                                       "lines": 10})["lines"]
    assert json.loads(lines[-1]) == {"GREETING": GREETING, "in_container": True}
    charged = {r.job: r.charge for r in f.store.usage(0, 9e12)}
    assert charged[boxed.id] == charged[bare.id] == f.store.get(bare.id).slot.charge > 0


# -- the TUI --

@pilot_test
async def test_the_job_screen_shows_the_image_and_env_where_set():
    for changes, shown in (({"image": "docker.io/x/train:1", "env": {"LR": "0.1", "B": "a b"}},
                            ["image docker.io/x/train:1", "env 'B=a b' LR=0.1"]),
                           ({}, [])):
        app = app_with_job_1_as("running", **changes)
        async with app.run_test(size=(160, 48)) as pilot:
            screen = await open_job_1(app, pilot)
            lines = text_of(screen.details(screen.agent_record())).splitlines()
            said = [re.sub(r"^(\w+) +", r"\1 ", line.rstrip()) for line in lines
                    if line.startswith(("image ", "env "))]
            assert said == shown


def test_the_jobs_views_filter_finds_a_job_by_its_image():
    store = sample_fleet(16).store
    jobs = tuple(replace(j, image="docker.io/x/train:1") if j.id == 2 else j
                 for j in store.jobs)
    rows = job_rows(replace(store, jobs=jobs), {}, NOW)
    assert [r.job_id for r in filter_rows(rows, Clocked(re.compile("x/train"), None), False)] == [2]
