"""A user's TUI in a process of its own, for end-to-end tests:

    python -m tests.tui_probe USER CONFIG

starts as root (the interpreter lives under root's 0700 home), loads every module the TUI
needs by running the same commands once on a scratch store, becomes USER for good, then opens
the TUI as ``fractui --config CONFIG`` does (``fractui.tui.run.fleet_app``: a child scheduler
only where the store's rule lets USER schedule), headless, and answers each line read on stdin
with one JSON line on stdout:

    jobs              {"jobs": {"ID": "STATE", ...}}   the active jobs its screen holds
    stop ID INTENT    {"said": [[SEVERITY, MESSAGE], ...]}   the job screen's key for INTENT
                      (cancel, requeue, preempt) pressed and confirmed: what the screen said
    reason ID         {"row": WHY, "screen": WHY}   job ID's reason as the jobs view's row
                      says it (the ended read, as its ``a`` reads them) and as its screen does
                      ("": it draws none)
    quit              (no answer) the TUI closes as ``q`` closes it

It prints ``ready`` once the TUI has read the store.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Dict, List

from rich.console import Console

from fractui.config import Config
from fractui.servable import load_checked
from fractui.store import Slot, SqliteStore, open_store
from fractui.tui.app import FractuiApp
from fractui.tui.jobrows import job_rows
from fractui.tui.jobs import ConfirmScreen, JobScreen
from fractui.tui.run import fleet_app
from fractui.tui.source import LiveSource
from tests.tui_frozen import notices

KEYS = {"cancel": "s", "requeue": "r", "preempt": "p"}  # the job screen's (fractui.tui.jobs)
WAIT_S = 30.0


async def _until(pilot: Any, check: Any, what: str) -> None:
    for _ in range(int(WAIT_S / 0.05)):
        if check():
            return
        await pilot.pause(0.05)
    raise AssertionError("never happened: %s" % what)


async def stop(app: FractuiApp, pilot: Any, job_id: int, intent: str) -> List[List[str]]:
    """The job screen of ``job_id``, ``intent``'s key, yes: what the screen said."""
    mark = len(app.notices.kept)
    app.open_job(job_id)
    await _until(pilot, lambda: isinstance(app.screen, JobScreen) and
                 app.screen.job is not None, "job %d's screen" % job_id)
    await pilot.press(KEYS[intent])
    await _until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
    await pilot.press("y")
    await _until(pilot, lambda: notices(app, mark), "an answer")
    said = [[n.severity, n.message] for n in notices(app, mark)]
    await pilot.press("escape")
    return said


async def reason(app: FractuiApp, pilot: Any, job_id: int) -> Dict[str, str]:
    """Job ``job_id``'s reason in the jobs view's row and on its screen, as they draw it."""
    view = await asyncio.get_running_loop().run_in_executor(
        None, lambda: app.source.read_store(ended=True))
    row = next(r.reason for r in job_rows(view, {}, 0.0, ended=True) if r.job_id == job_id)
    app.open_job(job_id)
    await _until(pilot, lambda: isinstance(app.screen, JobScreen) and
                 app.screen.job is not None, "job %d's screen" % job_id)
    drawn = Console(width=200, file=io.StringIO(), record=True)
    drawn.print(app.screen.details(app.screen.agent_record()))
    await pilot.press("escape")
    screen = next((line.split(None, 1)[1].strip() for line in drawn.export_text().splitlines()
                   if line.startswith("reason ")), "")
    return {"row": row, "screen": screen}


def jobs(app: FractuiApp) -> Dict[str, str]:
    view = app.fleet.model.store
    return {str(j.id): j.state for j in (view.jobs if view else ())}


async def serve(app: FractuiApp, lines: Any, answer: Any) -> None:
    """Runs ``app`` headless, answering each line ``lines()`` gives until quit or the end."""
    loop = asyncio.get_running_loop()
    async with app.run_test(size=(160, 48)) as pilot:
        await _until(pilot, lambda: app.fleet.model.store is not None, "the store read")
        answer("ready")
        while True:
            line = (await loop.run_in_executor(None, lines)).split()
            if not line or line[0] == "quit":
                return
            if line[0] == "jobs":
                answer(json.dumps({"jobs": jobs(app)}))
            elif line[0] == "reason":
                answer(json.dumps(await reason(app, pilot, int(line[1]))))
            elif line[0] == "stop":
                answer(json.dumps({"said": await stop(app, pilot, int(line[1]), line[2])}))
            else:
                answer(json.dumps({"error": "unknown command %r" % line[0]}))


def _warm_up() -> None:
    """The commands once, as root, on a scratch SQLite store: every module they load lazily
    is loaded before the process can no longer read them."""
    folder = tempfile.mkdtemp(prefix="fractui-probe-")
    try:
        scratch = SqliteStore(os.path.join(folder, "store.db"))
        job = scratch.submit("q", None, "warm-up", ["x"], {"gpu": 0.5}, "root@probe")
        scratch.place(job.id, Slot("h", (0,), memory_mib=100), "root@probe", "warm-up",
                      manual=True)
        scratch.started(job.id, "1", None, "root@probe", "warm-up")
        config = Config(path=None)
        source = LiveSource(config, scratch)
        source.start()
        said: List[str] = []
        script = iter(["jobs", "reason %d" % job.id, "stop %d cancel" % job.id, "quit"])
        try:
            asyncio.run(serve(FractuiApp(source, config), lambda: next(script), said.append))
        finally:
            source.stop()
        assert said[0] == "ready" and scratch.get(job.id).state == "stopping", said
        scratch.close()
    finally:
        shutil.rmtree(folder)


class Probe:
    """The test's side: a probe process as ``user`` on ``config``, asked one line at a time."""

    def __init__(self, user: str, config: str):
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.tui_probe", user, config], cwd=repo, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.expect("ready")

    def expect(self, what: str) -> None:
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if line != what + "\n":
            self.process.kill()
            raise AssertionError("the probe said %r, not %r: %s" % (
                line, what, self.process.communicate(timeout=60)[1]))

    def ask(self, line: str) -> Dict[str, Any]:
        self.process.stdin.write(line + "\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        said = self.process.stdout.readline()  # type: ignore[union-attr]
        if not said:
            raise AssertionError("the probe ended: %s" % self.process.communicate(
                timeout=60)[1])
        return json.loads(said)

    def close(self) -> str:
        """Quits the TUI; what the process said on stderr (it must have exited 0)."""
        if self.process.poll() is None:
            self.process.stdin.write("quit\n")  # type: ignore[union-attr]
        err = self.process.communicate(timeout=60)[1]
        assert self.process.returncode == 0, err
        return err


# what fleet_app imports as it runs, loaded while they can be read
LAZY = ("fractui.checked_store", "fractui.scheduler.child", "fractui.scheduler.service",
        "fractui.store.access", "fractui.store.intents", "fractui.store.url")


def main(user: str, config_path: str) -> int:
    for name in LAZY:
        importlib.import_module(name)
    config = load_checked(config_path)
    _warm_up()
    if not config.store.url.startswith("sqlite:"):  # (a file root opened would be root's)
        open_store(config.store.url).close()  # the driver's own lazy parts, as root
    who = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(who.pw_gid)
    os.setuid(who.pw_uid)

    def answer(text: str) -> None:
        print(text, flush=True)

    with fleet_app(config, readonly=False) as app:
        asyncio.run(serve(app, sys.stdin.readline, answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
