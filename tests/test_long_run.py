"""What the fleet and the scheduler keep over weeks of running: nothing that only grows, and no
worker thread that a failure ends for good. Real agent daemons over the local transport, a real
SQLite store; sizes are counted, never timed."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any, Dict, List, Tuple

import pytest

from fractui.config import Config, HostConfig, QueueConfig
from fractui.fleet import client as client_module
from fractui.fleet import host as host_module
from fractui.fleet.client import AgentCallError, AgentClient, ConnectionLost
from fractui.fleet.fleet import Fleet
from fractui.fleet.host import HostSession
from fractui.fleet.transport.local import process_stream
from fractui.scheduler import Scheduler
from fractui.scheduler.service import UNHELD
from remote_agent import PROTOCOL_VERSION
from remote_agent.rpc.jsonrpc import MAX_ANSWER_BYTES, START_FAILED
from tests import localfleet
from tests.conftest import stop_host
from tests.localfleet import sleeper, wait

local_fleet = localfleet.local_fleet


def one_host(tmp_path, **agent: Any) -> Config:
    """A config of one simulated host (its agent settings ``agent``)."""
    return Config(path=None, hosts=(HostConfig(name="gpu-a", transport="local", sim="1xL4",
                                               state_dir=str(tmp_path / "state" / "gpu-a"),
                                               **agent),))


def launch(session: HostSession, key: str) -> Dict[str, Any]:
    """A job that ends at once, on a quarter of the host's GPU 0."""
    return session.call("job.launch", {"key": key, "argv": sleeper(0), "gpus": [0],
                                       "memory_mib": 1024})


def test_a_listener_of_a_hosts_changes_that_fails_ends_no_worker_and_is_said_once(
        tmp_path, caplog):
    """A watcher of a host's changes (the scheduler's wakes, the TUI's) that raises, at every
    change, keeps the host's worker going: the host connects, and connects again after its
    connection is lost; the failure is logged once with its stack while it repeats, and once
    more when the watcher goes through again. Before: the first failure ended the worker
    thread, and the host read "connecting" for ever."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    config = one_host(tmp_path)
    fleet = Fleet(config, reconnect_max_s=0.5)
    session = fleet.sessions["gpu-a"]
    heard: List[str] = []
    failing = [True]

    def watcher(status: Any) -> None:
        heard.append(status.state)
        if failing[0]:
            raise ValueError("a watcher's bug")

    session.watchers.append(watcher)
    fleet.start()
    try:
        wait(lambda: session.status.state == "online", lambda: session.status)
        session.call("daemon.shutdown", {})  # the connection is lost: the worker reconnects
        wait(lambda: heard.count("online") >= 2, lambda: heard)
        failing[0] = False
        launch(session, "k0")  # its record is a change
        wait(lambda: any("hears them again" in r.getMessage() for r in caplog.records),
             lambda: caplog.text)
    finally:
        fleet.stop()
        stop_host(config.hosts[0].state_dir)
    failures = [r for r in caplog.records if "what listens to its changes failed" in
                r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None, caplog.text
    assert "ValueError: a watcher's bug" in caplog.text


def test_a_connection_that_lasts_keeps_no_record_of_a_job_its_agent_forgot(tmp_path):
    """The agent forgets an ended job after its retention and tells no one; the host's
    session forgets it too, by the same retention (the host's config sets the agent's), as
    the next record comes. Before: a connection kept every job it ever ran, for as long as it
    lasted (weeks), and every pass walked them all."""
    config = one_host(tmp_path, retention_hours=0.0005)  # 1.8 s
    fleet = Fleet(config, reconnect_max_s=0.5).start()
    session = fleet.sessions["gpu-a"]
    try:
        wait(lambda: session.status.state == "online", lambda: session.status)
        ran = [launch(session, "k%d" % n)["id"] for n in range(5)]
        exited: set = set()  # each seen ended once: the first may be forgotten before the last

        def all_exited() -> bool:
            jobs = session.status.jobs
            exited.update(j for j in ran if jobs.get(j, {}).get("state") == "exited")
            return exited == set(ran)

        wait(all_exited, lambda: (exited, session.status.jobs))
        wait(lambda: not session.call("job.list", {})["jobs"], lambda: "never forgotten")
        last = launch(session, "k5")["id"]
        wait(lambda: session.status.jobs.get(last, {}).get("state") == "exited",
             lambda: session.status.jobs)
        assert list(session.status.jobs) == [last]  # 6 jobs run over one connection
    finally:
        fleet.stop()
        stop_host(config.hosts[0].state_dir)


def test_a_host_whose_clock_is_behind_keeps_the_record_of_a_job_that_just_ended(
        tmp_path, monkeypatch):
    """A host's clock a day behind the admin's, its agent's retention an hour: the record of a
    job that just ended is kept, so the scheduler reads how it ended (a running job whose
    record its host lacks is ended as lost, its exit code and output not taken). The session
    dates the drop by the agent's clock, as its snapshots give it. Before: by the admin's
    clock, which dropped the record as it came."""
    ahead = SimpleNamespace(**{**vars(time), "time": lambda: time.time() + 24 * 3600})
    monkeypatch.setattr(host_module, "time", ahead)  # the admin's clock, a day on
    config = one_host(tmp_path, retention_hours=1.0)
    fleet = Fleet(config, reconnect_max_s=0.5).start()
    session = fleet.sessions["gpu-a"]
    ended = threading.Event()
    after: List[List[Any]] = []  # the job's states the session kept, once its end was heard
    session.listeners.append(lambda method, params: method == "job" and params.get(
        "key") == "k0" and params.get("state") == "exited" and ended.set())
    session.watchers.append(lambda status: ended.is_set() and after.append(
        [r.get("state") for r in status.jobs.values() if r.get("key") == "k0"]))
    try:
        wait(lambda: session.status.state == "online", lambda: session.status)
        launch(session, "k0")
        wait(lambda: bool(after), lambda: session.status.jobs)
        assert after[0] == ["exited"], session.status.jobs
    finally:
        fleet.stop()
        stop_host(config.hosts[0].state_dir)


def test_a_stopped_scheduler_leaves_nothing_on_the_fleet(local_fleet):
    """Each scheduler made on a fleet hooks itself to every host's session (its wakes, and
    the stale copies it stops when a host returns); one stopped unhooks itself, its lease
    handed over or not, so schedulers made and stopped one after another on one fleet leave
    the hooks as they were. Before: every scheduler ever made stayed hooked, and one stopped
    without handing its lease over still stopped the stale copies of a host that returned."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)])
    session = f.fleet.session("gpu-a")
    before = (list(session.watchers), list(session.connect_hooks))
    for n in range(5):
        sched = Scheduler(f.config, f.store, f.fleet, name="s%d" % n)
        assert sched.step()
        sched.stop(release=n % 2 == 0)
        sched.stop()  # a second stop changes nothing
    assert (session.watchers, session.connect_hooks) == before


def test_what_is_said_of_copies_of_no_job_is_forgotten_as_they_end(local_fleet, caplog):
    """A copy under the store's key of a job the store does not have (a store restored from
    a backup) is said once while it runs, left running; once it has ended, the pass says so
    and forgets it. Copies started and ended round after round leave nothing kept. Before:
    each copy ever said was kept for as long as the scheduler ran, and its end was not said."""
    caplog.set_level(logging.INFO, "fractui.scheduler")
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)])
    session = f.fleet.session("gpu-a")
    keys = []
    for round_ in range(3):
        made = ["fractui-%s-%d.0" % (f.store.uid, 900 + 2 * round_ + n) for n in range(2)]
        keys += made
        copies = [session.call("job.launch", {
            "key": key, "argv": sleeper(600), "gpus": [0], "memory_mib": 1024})["id"]
            for key in made]
        wait(lambda: all(session.status.jobs[c].get("state") == "running" for c in copies),
             lambda: session.status.jobs)
        for _ in range(3):
            assert f.scheduler.step()
        assert sorted(f.scheduler.failures.failing(UNHELD)) == [
            (UNHELD, "gpu-a", key) for key in made]
        for c in copies:
            session.call("job.stop", {"job": c, "grace": 0})
        wait(lambda: all(session.status.jobs[c].get("state") == "killed" for c in copies),
             lambda: session.status.jobs)
        for _ in range(2):
            assert f.scheduler.step()
        assert f.scheduler.failures.failing(UNHELD) == []
    said = [(r.levelno, r.getMessage()) for r in caplog.records
            if "which the store does not hold" in r.getMessage()]
    left = "gpu-a runs %s, which the store does not hold and has no later word of: left running"
    gone = "gpu-a: %s, which the store does not hold, is seen running no more after 3 failed " \
        "tries"
    assert said == [  # each copy once while it runs, and once as it ends
        (level, words % key) for n in range(0, 6, 2)
        for level, words in ((logging.WARNING, left), (logging.INFO, gone))
        for key in keys[n:n + 2]], caplog.text


def test_a_pass_that_fails_at_every_turn_is_logged_once_and_once_when_it_mends(
        local_fleet, monkeypatch, caplog):
    """A bug that fails every pass is logged with its stack once, not at every turn of a
    loop that turns every interval for weeks; once the passes go through again, that is said
    once. Before: a stack per turn."""
    from fractui.scheduler import service

    caplog.set_level(logging.INFO, "fractui.scheduler")
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)])
    real = service.schedule

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("a bug in the placement core")

    monkeypatch.setattr(service, "schedule", broken)
    job = f.submit("quarter")
    turns: List[Any] = []
    f.scheduler.on_turn = turns.append
    f.scheduler.start()
    try:
        wait(lambda: len(turns) >= 6, lambda: turns)
        monkeypatch.setattr(service, "schedule", real)
        wait(lambda: f.store.get(job.id).state == "running", f.states)
        wait(lambda: "go through again" in caplog.text, lambda: caplog.text)
    finally:
        f.scheduler.stop()
    failed = [r for r in caplog.records if r.getMessage().startswith("scheduling pass failed")]
    assert len(failed) == 1 and failed[0].exc_info is not None, caplog.text
    assert caplog.text.count("the scheduling passes go through again") == 1


def test_a_change_feed_that_fails_with_a_bug_is_opened_again(local_fleet, monkeypatch,
                                                             caplog):
    """The store's change feed fails once with an error of no known kind (a bug, not a store
    error): said once with its stack, and opened again as a lost feed is (the passes poll
    meanwhile), so it is waited on again. Before: the feed's thread ended, and until the
    scheduler stopped it heard of no change but by its poll."""
    from fractui.store.sqlite import SqliteFeed

    caplog.set_level(logging.WARNING, "fractui.scheduler")
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)])
    real = SqliteFeed.wait
    waits: List[float] = []

    def fails_first(feed: SqliteFeed, timeout_s: float) -> frozenset:
        waits.append(timeout_s)
        if len(waits) == 1:
            raise KeyError("a bug in the feed")
        return real(feed, timeout_s)

    monkeypatch.setattr(SqliteFeed, "wait", fails_first)
    f.scheduler.start()
    try:
        wait(lambda: len(waits) >= 3, lambda: waits)  # the feed opened again, and waited on
        job = f.submit("quarter")
        wait(lambda: f.store.get(job.id).state == "running", f.states)
    finally:
        f.scheduler.stop()
    said = [r for r in caplog.records if "change feed is back" in r.getMessage()]
    assert len(said) == 1 and said[0].exc_info is not None, caplog.text
    assert said[0].getMessage().startswith("KeyError: 'a bug in the feed'; the scheduler polls")


def test_a_call_on_a_connection_closed_meanwhile_is_a_lost_connection(tmp_path):
    """A call whose connection another thread has just closed (the host's worker dropping
    it, a stop) is a lost connection, as any other: before, writing to the closed pipe raised
    ValueError, which ended the host's worker thread when its probe met it, and reached a
    scheduler's lane as a bug."""
    stream = process_stream([sys.executable, "-m", "remote_agent", "serve", "--stdio",
                             "--state-dir", str(tmp_path / "state"), "--sim", "1xL4"])
    client = AgentClient(stream.reader, stream.write, name="gpu-a")
    try:
        assert client.call("hello", {"protocol": PROTOCOL_VERSION}, 30.0)["protocol"] == \
            PROTOCOL_VERSION
        assert stream.process is not None
        os.kill(stream.process.pid, signal.SIGSTOP)  # its end unseen yet: stdout stays open
        stream.process.stdin.close()  # (as the worker's drop does, on another thread)
        with pytest.raises(ConnectionLost, match="sending daemon.version failed"):
            client.call("daemon.version", None, 30.0)
    finally:
        if stream.process is not None:
            os.kill(stream.process.pid, signal.SIGCONT)
        stream.close()
        stop_host(str(tmp_path / "state"))


def test_a_notification_listener_that_fails_each_time_is_said_once_and_once_when_it_mends(
        tmp_path, caplog):
    """A real agent's pushes (a job's news, for each of the jobs of weeks) to a listener that
    raises at every one: its stack logged once while it fails so, not once a notification,
    and once more when the listener goes through again; the connection goes on."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    stream = process_stream([sys.executable, "-m", "remote_agent", "serve", "--stdio",
                             "--state-dir", str(tmp_path / "state"), "--sim", "1xL4"])
    heard: List[str] = []
    failing = [True]

    def listener(method: str, params: Dict[str, Any]) -> None:
        heard.append(method)
        if failing[0]:
            raise ValueError("a listener's bug")

    client = AgentClient(stream.reader, stream.write, on_notify=listener, name="gpu-a")
    try:
        client.call("hello", {"protocol": PROTOCOL_VERSION}, 30.0)
        client.call("subscribe", None, 30.0)
        for n in range(4):
            client.call("job.launch", {"key": "k%d" % n, "argv": sleeper(0), "gpus": [0],
                                       "memory_mib": 1024}, 30.0)
        wait(lambda: heard.count("job") >= 4, lambda: heard)
        failing[0] = False
        mended = len(heard)
        client.call("job.launch", {"key": "k4", "argv": sleeper(0), "gpus": [0],
                                   "memory_mib": 1024}, 30.0)
        wait(lambda: "job" in heard[mended:], lambda: heard)
    finally:
        stream.close()
        stop_host(str(tmp_path / "state"))
    said = [r for r in caplog.records if "'job' notification from gpu-a" in r.getMessage()]
    assert len(said) == 1 and said[0].exc_info is not None, caplog.text
    assert said[0].getMessage() == ("handling a 'job' notification from gpu-a failed "
                                    "(ValueError: a listener's bug)")
    assert caplog.text.count("the 'job' notifications from gpu-a are handled again") == 1


def failing_listener_client() -> Tuple[AgentClient, List[str], int]:
    """A client of host gpu-a reading a pipe whose write end the test holds, whose listener
    fails on every notification (a bug of ours a host found): the client, the methods heard,
    the write end."""
    read_end, write_end = os.pipe()
    heard: List[str] = []

    def listener(method: str, params: Dict[str, Any]) -> None:
        heard.append(method)
        raise ValueError("a listener's bug")

    return AgentClient(os.fdopen(read_end, "rb"), lambda _line: None, on_notify=listener,
                       name="gpu-a"), heard, write_end


def test_a_host_naming_a_new_notification_at_each_push_grows_no_failures_past_the_cap(caplog):
    """A hostile host pushes a notification of a new method at each push, and handling each
    fails (a bug of ours it found): SAID_ONE_BY_ONE methods are said, then once that there
    are more; neither the log nor what the client keeps grows with the methods named."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    client, heard, write_end = failing_listener_client()
    pushes = client_module.SAID_ONE_BY_ONE * 10
    with os.fdopen(write_end, "wb") as host:
        for n in range(pushes):
            host.write(b'{"jsonrpc": "2.0", "method": "m%d", "params": {}}\n' % n)
    wait(lambda: len(heard) == pushes, lambda: len(heard))
    said = [r.getMessage() for r in caplog.records if "notification from gpu-a" in
            r.getMessage()]
    assert len(said) == client_module.SAID_ONE_BY_ONE + 1, said
    assert said[-1].startswith("more than %d failing at once" % client_module.SAID_ONE_BY_ONE)
    assert len(client._failures.failing("notify")) == client_module.SAID_ONE_BY_ONE + 1


def test_a_hosts_long_method_names_are_logged_cut_with_their_length(caplog):
    """A hostile host's notifications whose methods are as long as a line may be (1 MiB),
    each failing to be handled: each said cut, with its length, not whole. Before: up to
    SAID_ONE_BY_ONE lines of a MiB each in the admin's journal."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    client, heard, write_end = failing_listener_client()
    long = 2 ** 20 - 100
    with os.fdopen(write_end, "wb") as host:
        for n in range(3):
            host.write(b'{"jsonrpc": "2.0", "method": "%d%s", "params": {}}\n' % (
                n, b"m" * (long - 1)))
    wait(lambda: len(heard) == 3, lambda: len(heard))
    said = [r.getMessage() for r in caplog.records if "notification from gpu-a" in
            r.getMessage()]
    assert len(said) == 3, said
    for n, words in enumerate(said):
        assert words == "handling a '%d%s…' (%d characters) notification from gpu-a failed " \
            "(ValueError: a listener's bug)" % (n, "m" * (client_module.HOST_WORDS_MOST - 1),
                                                long), words[:300]
    client.closed.wait(30)


def test_a_line_longer_than_any_answer_is_read_no_further_and_said_once(caplog):
    """A hostile host writes a line longer than any the agent writes (MAX_ANSWER_BYTES): the
    client reads no more of it at once than an answer may be, drops the rest as it comes,
    says it once, and reads the next line. Before: the whole line was read into memory
    before anything was said, and a line without end grew the admin's memory without end."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    read_end, write_end = os.pipe()
    heard: List[str] = []
    client = AgentClient(os.fdopen(read_end, "rb"), lambda _line: None,
                         on_notify=lambda method, _params: heard.append(method), name="gpu-a")
    longest = MAX_ANSWER_BYTES

    def write() -> None:
        with os.fdopen(write_end, "wb") as host:
            for _ in range(3):  # three answers' worth, and more, of one line
                host.write(b"x" * longest)
            host.write(b'\n{"jsonrpc": "2.0", "method": "after", "params": {}}\n')

    writer = threading.Thread(target=write)
    writer.start()
    assert client.closed.wait(60)
    writer.join(60)
    assert heard == ["after"]
    kind = "within the %d bytes of an answer line" % longest
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("gpu-a: ")]
    assert said == [
        "gpu-a: ignoring lines from its agent that are not %s (said once a connection), the "
        "first: '%s…' (%d characters)" % (kind, "x" * client_module.HOST_WORDS_MOST,
                                         longest + 1),
        "gpu-a: the connection ended, and with it the lines that are not %s after 1 failed "
        "line" % kind], [w[:300] for w in said]


def test_an_agents_long_error_words_are_kept_cut_with_their_length():
    """An agent that answers a call with error words as long as a line may be (a failed
    start's reason too): what the error says, and so what is logged, kept in the store and
    shown, is cut with the words' length. Before: the whole MiB, at every answer."""
    read_end, write_end = os.pipe()
    sent: List[bytes] = []
    client = AgentClient(os.fdopen(read_end, "rb"), sent.append, name="gpu-a")
    long = "no " * (2 ** 18)
    with os.fdopen(write_end, "wb") as host:
        answered = threading.Thread(target=lambda: host.write(json.dumps({
            "jsonrpc": "2.0", "id": 1, "error": {"code": START_FAILED, "message": long, "data": {
                "reason": long}}}).encode() + b"\n"))
        answered.start()
        with pytest.raises(AgentCallError) as refused:
            client.call("job.launch", {}, 30.0)
        answered.join(30)
    cut = "…' (%d characters)" % len(long)
    for words in (str(refused.value), refused.value.reason()):
        assert len(words) < 2100 and words.startswith("'no no ") and words.endswith(cut), \
            words[:100]


def test_an_agents_stderr_without_line_ends_is_kept_in_parts_of_a_bounded_size():
    """An agent (or what a hostile host runs in its place) that writes its stderr without a
    line end: what the connection keeps of it, and says as its last words, is bounded.
    Before: the whole of it was read as one line, into memory."""
    read_end, write_end = os.pipe()

    def write() -> None:
        with os.fdopen(write_end, "wb") as agent:
            for _ in range(64):
                agent.write(b"e" * (1 << 16))

    writer = threading.Thread(target=write)
    writer.start()
    conn = host_module._Conn(SimpleNamespace(), lambda: None, os.fdopen(read_end, "rb"),
                             SimpleNamespace())
    writer.join(60)
    said = conn.why_it_ended()
    assert 0 < len(said) <= 100_000, len(said)  # of the 4 MiB written


def test_a_connect_that_fails_with_a_bug_at_every_try_is_said_once(tmp_path, monkeypatch,
                                                                    caplog):
    """Connecting to a host fails with an error of no known kind (a bug of ours) at every
    try of the worker's: its stack logged once while it fails so, not at every try, and once
    more when the host connects again."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    fleet = Fleet(one_host(tmp_path), reconnect_max_s=0.1)
    session = fleet.sessions["gpu-a"]
    real, tries = session._connect, []

    def broken() -> Any:
        tries.append(1)
        if len(tries) <= 4:
            raise KeyError("a bug in connecting")
        return real()

    monkeypatch.setattr(session, "_connect", broken)
    fleet.start()
    try:
        wait(lambda: session.status.state == "online", lambda: session.status)
    finally:
        fleet.stop()
        stop_host(str(tmp_path / "state" / "gpu-a"))
    said = [r for r in caplog.records if r.getMessage().startswith("connecting to gpu-a")]
    assert [r.getMessage() for r in said] == [
        "connecting to gpu-a failed (KeyError: 'a bug in connecting')",
        "connecting to gpu-a works again after 4 failed tries"], caplog.text
    assert said[0].exc_info is not None


def test_a_listener_of_the_turns_that_fails_at_every_turn_is_said_once(local_fleet, caplog):
    """The scheduler's listener of its turns (the metrics exporter) raises at every turn: its
    stack logged once while it fails so, not at every turn, and once more when it goes
    through again; the scheduler places as ever."""
    caplog.set_level(logging.INFO, "fractui.scheduler")
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)])
    turns: List[Any] = []

    def listener(report: Any) -> None:
        turns.append(report)
        if len(turns) <= 6:
            raise ValueError("a listener's bug")

    f.scheduler.on_turn = listener
    job = f.submit("quarter")
    f.scheduler.start()
    try:
        wait(lambda: len(turns) > 6 and f.store.get(job.id).state == "running", f.states)
    finally:
        f.scheduler.stop()
    said = [r for r in caplog.records if "the scheduler's listener" in r.getMessage()]
    assert [r.getMessage() for r in said] == [
        "the scheduler's listener failed (ValueError: a listener's bug)",
        "the scheduler's listener goes through again after 6 failed tries"], caplog.text
    assert said[0].exc_info is not None


def test_a_store_that_fails_the_fence_at_every_return_is_said_once(local_fleet, monkeypatch,
                                                                    caplog):
    """A host that comes back, again and again, while the store cannot say its stale copies
    (full, locked): said once while it fails so, not at every return, and once when a return
    is fenced again."""
    from fractui.store.base import StoreError

    caplog.set_level(logging.INFO, "fractui.scheduler")
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)])
    f.scheduler.step()  # the lease holder: it fences a returning host
    session = f.fleet.session("gpu-a")
    real = f.store.stale

    def failing(host: Any = None) -> Any:
        raise StoreError("/srv/store.db", "database is locked")

    monkeypatch.setattr(f.store, "stale", failing)
    for _ in range(3):
        f.scheduler._fence_returning("gpu-a", session.call, {})
    monkeypatch.setattr(f.store, "stale", real)
    f.scheduler._fence_returning("gpu-a", session.call, {})
    assert caplog.text.count("database is locked; gpu-a's stale copies are left to the next "
                             "passes") == 1, caplog.text
    assert caplog.text.count("gpu-a's stale copies are stopped on its return again after 3 "
                             "failed tries") == 1, caplog.text
