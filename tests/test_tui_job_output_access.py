"""The job screen reads a job's output under the one rule of who may (access.READ, a team
action, as ``fractui logs`` checks it): a member of another team is told why not, before any
host is asked; and a config of the store alone, which names no host, says how the output is
read instead of showing none without a word."""

from __future__ import annotations

import time

from fractui.config import Config, QueueConfig, TeamConfig
from fractui.store.base import Identity
from fractui.store.model import Slot
from fractui.store.sqlite import SqliteStore
from fractui.tui.app import FractuiApp
from fractui.tui.jobs import JobScreen
from fractui.tui.source import LiveSource
from tests.test_tui_jobs import text_of
from tests.tui_frozen import pilot_test
from tests.tui_live import fleet, until

QUEUES = (QueueConfig(name="quarter", gpu=0.25),)
TEAMS = (TeamConfig(name="vision", members=("bob",)), TeamConfig(name="nlp"))


class Bobs(SqliteStore):
    """A real SQLite store that says its user is bob, no admin (his own process's word)."""

    def identity(self) -> Identity:
        return Identity("bob", admin=False)


def running(store: SqliteStore, team: str, gpu: int) -> int:
    job = store.submit("quarter", team, "train", ["true", "--secret-%s" % team], {}, "ann@ws",
                       env={"TOKEN": "token-%s" % team})
    store.place(job.id, Slot("gpu-x", (gpu,), None, None, 5000, 0.25), "root@ws", "placed")
    store.started(job.id, "j%d" % job.id, time.time(), "root@ws", "started")
    return job.id


def output_state(store: SqliteStore, job_id: int) -> str:
    """What the job screen of ``job_id`` says of its output (its log's state line, hints
    left out) once it has word of it, opened by bob in a TUI over ``store`` alone."""
    return screen_said(store, job_id)[0]


def screen_said(store: SqliteStore, job_id: int) -> tuple[str, str]:
    """What the job screen of ``job_id``, opened by bob in a TUI over ``store`` alone, says
    of its output (its log's state line, hints left out) once it has word of it, and its
    details then."""
    config = Config(path=None, queues=QUEUES, teams=TEAMS)
    source = LiveSource(config, store)
    source.start()
    app = FractuiApp(source, config)
    said: list[str] = []

    @pilot_test
    async def drive() -> None:
        async with app.run_test(size=(160, 40)) as pilot:
            await until(pilot, lambda: fleet(app).model.store is not None, "the store read")
            app.open_job(job_id)
            await until(pilot, lambda: isinstance(app.screen, JobScreen)
                        and app.screen.job is not None, "the job read")
            state = app.screen.query_one("#logstate")
            await until(pilot, lambda: "no output" in state.render().plain, "a word on it")
            said.append(state.render().plain.split("\n")[0])
            screen = app.screen
            await until(pilot, lambda: screen.job is not None and screen.readable == (
                screen.job.team == "vision"), "who may read it known")
            said.append(text_of(screen.details(screen.agent_record())))

    try:
        drive()
    finally:
        source.stop()
        store.close()
    return said[0], said[1]


def test_a_member_is_refused_another_teams_output_and_told_why(tmp_path):
    store = Bobs(str(tmp_path / "store.db"))
    theirs = running(store, "nlp", 0)
    assert output_state(store, theirs) == (
        "0 lines · no output: refused: you are bob (in team vision, not an admin); to read "
        "the output of job %d of team nlp you must be in team nlp, or an admin" % theirs)


def test_a_config_of_the_store_alone_says_how_the_output_is_read(tmp_path):
    store = Bobs(str(tmp_path / "store.db"))
    mine = running(store, "vision", 1)
    assert output_state(store, mine) == (
        "0 lines · no output: job %d runs on gpu-x, which this config does not name: "
        "fractui logs %d reads its output through the store" % (mine, mine))


def test_a_members_screen_shows_argv_and_env_only_of_jobs_whose_output_it_reads(tmp_path):
    """A job's argv and env (its tokens) are its output's readers' (its team and the admins),
    as ``fractui jobs`` shows them: the job screen showed every job's to any reader."""
    store = Bobs(str(tmp_path / "store.db"))
    theirs, mine = running(store, "nlp", 0), running(store, "vision", 1)
    _, details = screen_said(store, theirs)
    assert "secret-nlp" not in details and "token-nlp" not in details, details
    assert "not shown: its argv and env are team nlp's and the admins' to read" in details
    store = Bobs(str(tmp_path / "store.db"))
    _, details = screen_said(store, mine)
    assert "--secret-vision" in details and "TOKEN=token-vision" in details, details
