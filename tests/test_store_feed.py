"""The store's change feed: a reader learns what another client changed without polling the
tables, and which topics moved (jobs, hosts, the lease), so a scheduler or a TUI re-reads only
what it must."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import psycopg
import pytest

from fractui.store import JobNotFound, Slot, StoreError, open_store
from fractui.store.base import HOSTS, JOBS, LEASE, LOGS
from fractui.store.intents import Asker, ask_stop, place_by_hand
from fractui.store.postgres import PostgresDialect, PostgresFeed
from tests.conftest import REPO


def test_each_change_wakes_a_feed_with_its_topic(store_url):
    writer, reader = open_store(store_url), open_store(store_url)
    feed = reader.feed()
    try:
        assert feed.wait(0.1) == frozenset()  # nothing yet
        job = writer.submit("q", None, "a", ["true"], {"gpu": 0.5}, "alice")
        assert feed.wait(5) == {JOBS}
        place_by_hand(writer, job, Slot("h", (0,), memory_mib=100), Asker("bob"))
        assert feed.wait(5) == {JOBS}
        ask_stop(writer, writer.get(job.id), "cancel", Asker("bob"))
        assert feed.wait(5) == {JOBS}
        writer.record_inventory("h", {"gpus": []})
        assert feed.wait(5) == {HOSTS}
        assert writer.acquire_lease("s1", 30)
        assert feed.wait(5) == {LEASE}
        assert writer.acquire_lease("s1", 30)  # a renewal by the holder is no change
        writer.audit("bob", "note", None, "an audit entry alone is no change")
        assert feed.wait(0.3) == frozenset()
        writer.release_lease("s1")
        assert feed.wait(5) == {LEASE}
        writer.release_lease("s1")  # nothing to release: no change
        assert feed.wait(0.3) == frozenset()
    finally:
        feed.close()
        writer.close()
        reader.close()


def test_changes_made_together_are_told_together_and_own_writes_count(store_url):
    store = open_store(store_url)
    feed = store.feed()
    try:
        store.submit("q", None, "a", ["true"], {}, "alice")
        store.record_inventory("h", {"gpus": [1]})
        # (PostgreSQL hands each committed change to the listening session as that session
        # gets to it: the wake below is to come after both arrived, which takes milliseconds)
        time.sleep(1.0)
        assert feed.wait(5) == {JOBS, HOSTS}  # both, in one wake: a reader re-reads once
        assert feed.wait(0.2) == frozenset()
    finally:
        feed.close()
        store.close()


def test_a_topics_counter_moves_with_each_change_of_it_and_only_then(store_url):
    """What a reader holds from when the counter said N is current while it says N: every
    change of jobs, by any client, moves the jobs counter; other topics' changes do not."""
    writer, reader = open_store(store_url), open_store(store_url)
    try:
        seen = {t: reader.version(t) for t in (JOBS, HOSTS, LEASE, LOGS)}
        job = writer.submit("q", None, "a", ["true"], {"gpu": 0.5}, "alice")
        assert reader.version(JOBS) > seen[JOBS]
        seen[JOBS] = reader.version(JOBS)
        writer.record_inventory("h", {"gpus": []})
        writer.audit("bob", "note", None, "an audit entry alone is no change")
        assert reader.version(JOBS) == seen[JOBS]
        assert reader.version(HOSTS) > seen[HOSTS]
        for change in (lambda: writer.waiting(job.id, "still"),
                       lambda: place_by_hand(writer, job, Slot("h", (0,), memory_mib=100),
                                             Asker("bob")),
                       lambda: ask_stop(writer, writer.get(job.id), "cancel", Asker("bob"))):
            change()
            assert reader.version(JOBS) > seen[JOBS]
            seen[JOBS] = reader.version(JOBS)
        assert reader.version(LEASE) == seen[LEASE]
        with pytest.raises(JobNotFound):
            writer.waiting(job.id + 1000, "no such job")
        assert reader.version(JOBS) == seen[JOBS]  # a refused change moved nothing
    finally:
        writer.close()
        reader.close()


def test_a_submit_by_another_process_wakes_a_waiting_feed(store_url):
    store = open_store(store_url)
    feed = store.feed()
    woke: list = []
    waiter = threading.Thread(target=lambda: woke.append(feed.wait(30)))
    waiter.start()
    try:
        code = ("from fractui.store import open_store\n"
                "s = open_store(%r)\n"
                "s.submit('q', None, 'other', ['true'], {}, 'carol')\n"
                "s.close()\n" % store_url)
        subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
        waiter.join(30)
        assert woke == [{JOBS}]
        assert [j.name for j in store.jobs()] == ["other"]
    finally:
        waiter.join(30)
        feed.close()
        store.close()


def test_a_log_tail_asked_for_and_kept_moves_the_logs_topic_and_nothing_else(store_url):
    writer, reader = open_store(store_url), open_store(store_url)
    job = writer.submit("q", None, "a", ["true"], {}, "alice")
    feed = reader.feed()
    try:
        assert reader.log_tail(job.id) is None
        writer.ask_log(job.id, "alice")
        assert feed.wait(5) == {LOGS}
        assert reader.log_requests() == [job.id]
        writer.keep_log(job.id, "hello\n", complete=False)
        assert feed.wait(5) == {LOGS}
        assert reader.log_requests() == []  # kept: the request is answered
        tail = reader.log_tail(job.id)
        assert (tail.job, tail.text, tail.complete) == (job.id, "hello\n", False)
        writer.keep_log(job.id, "hello\nbye\n", complete=True)  # replaces the last one
        assert (reader.log_tail(job.id).text, reader.log_tail(job.id).complete) == (
            "hello\nbye\n", True)
        with pytest.raises(JobNotFound):  # a tail of a job the store does not have
            writer.ask_log(job.id + 1, "alice")
    finally:
        feed.close()
        writer.close()
        reader.close()


def test_a_feed_whose_listen_fails_leaves_no_connection_open(pg_server):
    """A feed's LISTEN refused (a store URL that reaches a hot standby: "cannot execute LISTEN
    during recovery") closes the connection it opened for it: a feed opened again at each try
    (the scheduler's and the TUI's, every interval) left one open a try on the server while
    its error lived (before: three tries, three sessions of the standby's held)."""
    db = pg_server.new_database()
    open_store(pg_server.url(db)).close()  # (the store made on the primary: the standby's copy)
    with pg_server.standby() as port:
        dialect = PostgresDialect("postgresql://postgres@127.0.0.1:%d/%s" % (port, db))
        told = []  # what a caller keeps of each failure (the error, as a log record holds it)
        for _ in range(3):
            with pytest.raises(StoreError) as failed:
                PostgresFeed(dialect)
            told.append(failed.value)
        assert all("cannot execute LISTEN during recovery" in str(e) for e in told), told
        with psycopg.connect(dialect.url) as watcher:
            left = watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE "
                                   "application_name = 'fractui'").fetchone()[0]
        assert left == 0, told
