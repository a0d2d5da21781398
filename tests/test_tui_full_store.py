"""The admin's TUI on an SQLite store whose filesystem fills up (a real 8 MiB tmpfs) under it
and a running scheduler: a stop asked from the TUI is refused saying the store and that no
space is left, nothing recorded and the job running on; the TUI keeps showing the jobs; once
there is room the same stop goes through and the scheduler carries it out."""

from __future__ import annotations

from typing import Any

from fractui.config import QueueConfig
from fractui.store import sqlite_url
from fractui.tui.app import FractuiApp
from fractui.tui.jobs import ConfirmScreen, JobScreen
from tests import localfleet
from tests.localfleet import POLITE
from tests.test_store_damage import _fill_past_the_wal
from tests.test_tui_shared_store import admin
from tests.tui_frozen import notices, pilot_test, said
from tests.tui_live import fleet, until

local_fleet = localfleet.local_fleet


async def ask_cancel(app: FractuiApp, pilot: Any, job_id: int) -> str:
    """Cancel from the job's screen, agreed to; what the TUI then says."""
    mark = len(app.notices.kept)
    app.open_job(job_id)
    await until(pilot, lambda: isinstance(app.screen, JobScreen) and app.screen.job is not None,
                "the job's screen")
    await pilot.press("s")
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
    await pilot.press("y")
    await until(pilot, lambda: notices(app, mark), "an answer")
    answer = said(app, mark)[-1]
    await pilot.press("escape")
    await pilot.pause()
    return answer


def test_a_stop_asked_from_the_tui_on_a_full_store_is_said_and_goes_through_with_room(
        local_fleet, small_fs):
    path = small_fs / "store.db"
    url = sqlite_url(str(path))
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.25)], store_url=url)
    jobs = [f.submit("q", argv=POLITE) for _ in range(2)]
    f.until(lambda: all(f.store.get(j.id).state == "running" for j in jobs))
    f.scheduler.settle()

    @pilot_test
    async def drive() -> None:
        async with admin(f, url) as (app, pilot):
            filler = _fill_past_the_wal(path, small_fs)
            try:
                said = await ask_cancel(app, pilot, jobs[0].id)
                assert "store %s" % path in said and "no space is left" in said, said
                assert f.store.get(jobs[0].id).state == "running"  # nothing recorded
                assert f.store.get(jobs[1].id).state == "running"
                shown = {j.id: j.state for j in fleet(app).model.store.jobs}
                assert shown == {j.id: "running" for j in jobs}  # still shown as read
            finally:
                filler.unlink()
            said = await ask_cancel(app, pilot, jobs[0].id)  # the same ask, with room
            assert said == "cancel of #%d recorded: the scheduler carries it out" % jobs[0].id

    drive()
    f.until(lambda: f.store.get(jobs[0].id).state == "cancelled")
    assert f.store.get(jobs[1].id).state == "running"
    cancels = [e for e in f.store.audit_log(jobs[0].id) if e.action == "cancel"]
    assert len(cancels) == 1 and cancels[0].actor.endswith("(tui)")
