"""Simulated hosts over the local transport (real agent daemons, real job processes), a real
SQLite store, and a scheduler whose passes a test drives: the fixture the scheduler tests share."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

import pytest

from fractui.config import Config, HostConfig, SchedulerSettings, StoreSettings, UsageSettings
from fractui.fleet.fleet import Fleet
from fractui.scheduler import Scheduler
from fractui.store import open_store, sqlite_url
from fractui.store.model import Job
from fractui.store.sqlite import SqliteStore
from remote_agent.daemon.settings import AgentSettings
from tests.conftest import REPO, STEP_S, stop_host

# A job that says when it is asked to stop, and takes a moment to do so (its grace).
POLITE = [sys.executable, "-c",
          "import signal, sys, time\n"
          "def bye(*_):\n    print('got SIGTERM', flush=True)\n    time.sleep(0.3)\n"
          "    sys.exit(0)\n"
          "signal.signal(signal.SIGTERM, bye)\nprint('up', flush=True)\ntime.sleep(600)"]


# A line fractui.terminal.log_records_to_stderr writes: its time, level and logger, then words
LOGGED = re.compile(r"\S+ [A-Z]+ [\w.]+: (.*)")


def logged(err: str) -> List[str]:
    """The words of each record a scheduler process logged on ``err`` (its stderr), without
    their time, level and logger: two records saying the same read the same."""
    return [m.group(1) for m in map(LOGGED.fullmatch, err.splitlines()) if m]


def sleeper(seconds: float) -> List[str]:
    return [sys.executable, "-c", "import time; time.sleep(%r)" % seconds]


class LocalFleet:
    """Simulated hosts, a store and a scheduler whose passes the test runs one by one."""

    def __init__(self, tmp_path, hosts: Dict[str, str], queues, teams=(),
                 store_url: Optional[str] = None, usage: Optional[UsageSettings] = None,
                 agent: Optional[dict] = None, **settings):
        """``store_url``: the store (by default an SQLite file in ``tmp_path``); ``usage``:
        the usage settings; ``agent``: each host's agent settings; ``settings``: the
        scheduler's."""
        self.tmp = tmp_path
        store_url = store_url or sqlite_url(str(tmp_path / "store.db"))
        self.config = Config(
            path=None,
            hosts=tuple(HostConfig(name=n, transport="local", sim=spec,
                                   state_dir=str(tmp_path / "state" / n), **(agent or {}))
                        for n, spec in hosts.items()),
            queues=tuple(queues), teams=tuple(teams),
            scheduler=SchedulerSettings(**dict(dict(interval_s=0.2, preempt_grace_s=5.0),
                                               **settings)),
            store=StoreSettings(store_url), usage=usage or UsageSettings())
        self.store = open_store(store_url)
        self.fleet = Fleet(self.config, reconnect_max_s=0.5).start()
        self.fleet.wait_settled(60)
        assert {s.state for s in self.fleet.statuses()} == {"online"}, [
            (s.name, s.error) for s in self.fleet.statuses()]
        self.scheduler = Scheduler(self.config, self.store, self.fleet, name="test")

    def on_clocks(self, store_clock: Callable[[], float],
                  scheduler_clock: Callable[[], float]) -> None:
        """The store (this fleet's SQLite file) on ``store_clock`` — the time every process
        shares, which dates what the store keeps — and a new scheduler on ``scheduler_clock``,
        its head node's own: a test moves either."""
        self.store.close()
        self.store = SqliteStore(str(self.tmp / "store.db"), clock=store_clock)
        self.scheduler = Scheduler(self.config, self.store, self.fleet, name="test",
                                   clock=scheduler_clock)

    def submit(self, queue: str, team: Optional[str] = None,
               argv: Optional[List[str]] = None) -> Job:
        return self.store.submit(queue, team, queue, argv or sleeper(600),
                                 self.config.queue(queue).request(), "test")

    def until(self, check: Callable[[], bool], timeout_s: float = 30.0) -> None:
        """Run passes until ``check()`` holds."""
        deadline = time.time() + timeout_s
        while not check():
            assert time.time() < deadline, "never happened; jobs: %s" % self.states()
            self.scheduler.step()
            time.sleep(STEP_S)

    def states(self) -> Dict[int, str]:
        return {j.id: j.state for j in self.store.jobs()}

    def said(self, job: Job) -> List[str]:
        """The lines of the job's output so far, as its host's agent keeps them."""
        job = self.store.get(job.id)
        return self.fleet.session(job.slot.host).call("job.logs", {"job": job.agent_job})[
            "lines"]

    def until_up(self, job: Job) -> None:
        """Until the job (POLITE, or one like it) says ``up``: it hears SIGTERM from then, so
        a stop has its grace; one sent before it set its handler ends it at once."""
        self.until(lambda: "up" in self.said(job))

    def agent_jobs(self) -> List[dict]:
        """Every job record of every host's agent, with its host."""
        out = []
        for name, answer in self.fleet.fan_out("job.list").items():
            out += [dict(j, host=name) for j in answer["jobs"]]
        return out

    def write_config(self) -> str:
        """The same fleet as a config file, for ``fractui`` run as a command."""
        lines = ["[scheduler]"] + ["%s = %s" % (k, json.dumps(v)) for k, v in
                                   dataclasses.asdict(self.config.scheduler).items()
                                   if v is not None]
        if self.config.store.url is not None:
            lines += ["[store]", "url = %s" % json.dumps(self.config.store.url)]
        if self.config.metrics.listen is not None:
            lines += ["[metrics]", "listen = %s" % json.dumps(self.config.metrics.listen),
                      "tui = %s" % json.dumps(self.config.metrics.tui)]
        for h in self.config.hosts:
            lines += ["[[hosts]]", "name = %s" % json.dumps(h.name), 'transport = "local"',
                      "sim = %s" % json.dumps(h.sim),
                      "state_dir = %s" % json.dumps(h.state_dir)]
            if h.mig_mode != "auto":
                lines.append("mig_mode = %s" % json.dumps(h.mig_mode))
            if h.log_max_mib != AgentSettings.log_max_mib:
                lines.append("log_max_mib = %d" % h.log_max_mib)
        for table, items in (("queues", self.config.queues), ("teams", self.config.teams)):
            for item in items:
                lines.append("[[%s]]" % table)
                lines += ["%s = %s" % (k, json.dumps(v)) for k, v in
                          dataclasses.asdict(item).items() if v not in (None, (), 0, 0.0)
                          and not (k == "isolation" and v == "any")]
        path = self.tmp / "config.toml"
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    def fractui(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fractui", "--config", self.write_config(),
                               *args], capture_output=True, text=True, cwd=REPO, timeout=120,
                              stdin=subprocess.DEVNULL)

    def scheduler_process(self, name: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "fractui", "--config",
                                 self.write_config(), "scheduler", "--name", name], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def close(self) -> None:
        self.fleet.stop()
        self.store.close()
        for h in self.config.hosts:
            stop_host(h.state_dir)


@pytest.fixture
def local_fleet(tmp_path):
    made: List[LocalFleet] = []

    def make(*args, **kwargs) -> LocalFleet:
        made.append(LocalFleet(tmp_path, *args, **kwargs))
        return made[-1]

    yield make
    for f in made:
        f.close()


def wait(check: Callable[[], bool], what: Callable[[], object], timeout_s: float = 30.0,
         alive: Optional[subprocess.Popen] = None, step_s: float = STEP_S) -> None:
    """Until ``check()`` holds, while a scheduler process runs (the test does not step)."""
    deadline = time.time() + timeout_s
    while not check():
        assert time.time() < deadline, what()
        assert alive is None or alive.poll() is None, alive.stderr.read()  # type: ignore
        time.sleep(step_s)


def running(f: LocalFleet) -> int:
    return list(f.states().values()).count("running")
