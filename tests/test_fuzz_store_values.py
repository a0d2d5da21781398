"""A store whose rows hold what fractui never writes, by hypothesis: each read-only verb says
it as the store's damage (exit 1, the store named) or shows it, never a traceback, and
writes nothing."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fractui.store.sqlite import SqliteStore
from tests.cli_run import in_process, leaks
from tests.test_usage_report import Clock, stream

HEADER = 100  # bytes of SQLite's database header
READING = [("jobs",), ("jobs", "--all"), ("jobs", "--all", "--json"), ("jobs", "--me"),
           ("audit",), ("audit", "1"), ("audit", "--json"), ("logs", "1"),
           ("report",), ("report", "--json"), ("report", "--by", "host"), ("report", "--csv"),
           ("teams",), ("teams", "--json"), ("status",), ("status", "--json"), ("queues",),
           ("jobs", "1", "2")]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    d = tmp_path_factory.mktemp("store")
    clock = Clock()
    store = SqliteStore(str(d / "store.db"), clock=clock)
    stream(store, clock, 12, seed=3)
    clock.t += 100
    store.record_inventory("gpu-a", {"cpus": 8, "memory_mib": 65536, "mig_changes": True,
                                     "gpus": [{"index": 0, "uuid": "GPU-0", "name": "NVIDIA L4",
                                               "memory_mib": 23034, "mig_mode": False}]})
    store.cordon("gpu-a", 0, "cordon", "ann", "fans")
    store.keep_log(1, "hello\nworld\n", True)
    store.close()
    return d / "store.db"


def _columns(path):
    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        return [(t, c[1]) for t in tables for c in db.execute("PRAGMA table_info(%s)" % t)]
    finally:
        db.close()


VALUES = st.one_of(
    st.none(), st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1), st.floats(),
    st.text(max_size=20), st.binary(max_size=8),
    st.sampled_from(["", "[]", "{}", "[1]", '{"gpu": "x"}', "null", "nan", "1e999", "-1",
                     '["x"]', "[[]]", '{"a": 1}', "true", "x" * 5000, "\x00", "\ud800"]))


@pytest.fixture(scope="module")
def columns(template):
    return _columns(template)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_a_value_fractui_never_writes_is_said_or_shown(template, columns, tmp_path, capfd,
                                                       data):
    where = Path(tempfile.mkdtemp(dir=tmp_path))
    store = where / "store.db"
    shutil.copy(template, store)
    table, column = data.draw(st.sampled_from(columns), label="column")
    value = data.draw(VALUES, label="value")
    db = sqlite3.connect(store)
    try:
        db.execute('UPDATE "%s" SET "%s" = ?' % (table, column) + (
            " WHERE rowid = (SELECT min(rowid) FROM \"%s\")" % table), (value,))
        db.commit()
    except (sqlite3.Error, UnicodeEncodeError, OverflowError):
        return  # a constraint SQLite keeps: not damage fractui can meet
    finally:
        db.close()
    before = store.read_bytes()
    config = where / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n[[queues]]\nname = "q0"\ngpu = 0.25\n'
                      '[[queues]]\nname = "q1"\ngpu = 0.5\n[[queues]]\nname = "q2"\ngpus = 1\n'
                      % store)
    verb = data.draw(st.sampled_from(READING), label="verb")
    code, out, err = in_process(capfd, ["--config", str(config), *verb])
    assert code in (0, 1) and not leaks(err), (table, column, value, verb, code, err[-800:])
    if code == 1:
        assert str(store) in err or "job" in err, (table, column, value, verb, err)
    if verb[0] != "logs":  # (which asks the lease holder for the job's output: a write)
        assert store.read_bytes() == before, (table, column, value, verb)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_a_store_file_with_bytes_flipped_or_cut_is_said_or_read(template, tmp_path, capfd,
                                                               data):
    """Bytes of the file changed where a bad disk or a copy cut short changes them: each read
    is refused naming the store, or reads what SQLite still finds whole; none writes."""
    where = Path(tempfile.mkdtemp(dir=tmp_path))
    store = where / "store.db"
    damaged = bytearray(template.read_bytes())
    if data.draw(st.booleans(), label="cut"):
        damaged = damaged[:data.draw(st.integers(0, len(damaged) - 1), label="at")]
    else:
        for _ in range(data.draw(st.integers(1, 8), label="flips")):
            at = data.draw(st.integers(0, len(damaged) - 1), label="at")
            damaged[at] = data.draw(st.integers(0, 255), label="byte")
    store.write_bytes(bytes(damaged))
    config = where / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n[[queues]]\nname = "q0"\ngpu = 0.25\n'
                      % store)
    verb = data.draw(st.sampled_from(READING), label="verb")
    code, out, err = in_process(capfd, ["--config", str(config), *verb])
    assert code in (0, 1) and not leaks(err), (verb, code, err[-800:])
    if code == 1:
        assert str(store) in err or "job" in err, (verb, err)
    if verb[0] != "logs":  # (SQLite mends its own header's page count and change counter,
        # where they disagree, as it opens a transaction: the header's bytes are SQLite's)
        assert store.read_bytes()[HEADER:] == bytes(damaged)[HEADER:], verb
