"""Every key of config.example.toml (each table test_fuzz_config's base lacks: [usage],
[metrics], [fairshare], an agent's settings, a binding in [tui] keys) given, by hypothesis,
values of every TOML type, of its own kind most often: the config loads with every value
within its bounds, or is refused at a line of the file, never otherwise."""

from __future__ import annotations

import copy
import datetime
import os
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fractui.config import ConfigError
from fractui.servable import load_checked
from tests.conftest import REPO
from tests.test_fuzz_config import Raw, render, safe

with open(os.path.join(REPO, "config.example.toml"), "rb") as _f:
    EXAMPLE = tomllib.load(_f)


def _paths(value, at=()):
    """The path of every key, into tables and arrays of tables."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield at + (k,)
            yield from _paths(v, at + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, dict):
                yield from _paths(v, at + (i,))


PATHS = list(_paths(EXAMPLE)) + [("tui", "keys", "app.quit"), ("tui", "keys", "bogus")]
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
SCALARS = st.one_of(
    st.booleans(), st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1),
    st.floats(), TEXT,
    st.sampled_from(["", "x" * 5000, "\x00", "\x7f", "\u202e", "~", "/", "-", "..", "a b",
                     "sqlite://", "sqlite:///", "postgresql://", "1g.10gb", "auto", "sudo"]),
    st.datetimes().map(lambda d: d.replace(microsecond=0)),
    st.dates(), st.times().map(lambda t: t.replace(microsecond=0)))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=6)


def _alike(value):
    """Values of the kind the example has there: the ones most likely to be let through."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, (int, float)):
        return st.one_of(st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1), st.floats(),
                         st.sampled_from([0, -1, 1, 2 ** 31, 2 ** 53 + 1, 1e-300, 0.5]))
    if isinstance(value, str):
        return st.one_of(TEXT, st.sampled_from(["", "x" * 5000, "\x00", "\x7f", "\u202e", "~",
                                                "~/x", "/", "-", "..", "a b", value + "\n"]))
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return st.lists(st.one_of(st.sampled_from(value or [""]), TEXT), max_size=4)
    return VALUES


def _get(doc, path):
    for step in path:
        doc = doc[step]
    return doc


def _set(doc, path, value):
    for step in path[:-1]:
        doc = doc[step]
    doc[path[-1]] = value


@st.composite
def docs(draw):
    doc = copy.deepcopy(EXAMPLE)
    for path in draw(st.lists(st.sampled_from(PATHS), min_size=1, max_size=2)):
        try:
            old = _get(doc, path) if path[-1] != "bogus" and path[:2] != ("tui", "keys") \
                else ""
            _set(doc, path, draw(st.one_of(_alike(old), VALUES)))
        except (KeyError, TypeError, IndexError):
            pass  # an earlier change took the table away
    return doc


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(doc=docs())
def test_every_key_of_the_example_loads_or_says_file_and_line(home, doc):
    text, _ = render(_plain(doc))
    path = str(home / "config.toml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    try:
        config = load_checked(path)
    except ConfigError as err:
        assert err.path == path and err.line is not None, str(err)
        assert 1 <= err.line <= text.count("\n") + 1, str(err)
        return
    assert not safe(config), safe(config)


def _plain(v):
    """The document as test_fuzz_config renders it: TOML's dates and times written as is."""
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return Raw(v.isoformat())
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v
