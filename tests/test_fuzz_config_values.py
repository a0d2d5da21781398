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
    _loads_or_says_file_and_line(home, text)


def _loads_or_says_file_and_line(home, text: str, errors: str = "strict") -> None:
    """``text`` written (its encoding errors handled as ``errors`` says) as a config in
    ``home`` and loaded: refused naming the file and a line of it, or a config within its
    bounds."""
    path = str(home / "config.toml")
    with open(path, "w", encoding="utf-8", errors=errors) as f:
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


with open(os.path.join(REPO, "config.example.toml"), encoding="utf-8") as _f:
    EXAMPLE_LINES = [line for line in _f.read().splitlines() if line.strip()
                     and not line.lstrip().startswith("#")]
TOKENS = st.sampled_from([
    "", "=", "= 1", "x =", "[", "]", "[[", "]]", "[hosts]", "[[hosts]]", "[[queues]]", "[store]",
    "[queues]", "[[ssh]]", "[tui.keys]", "[[tui]]", "name = 1", 'name = "dup"', "a.b.c = 1",
    "hosts.name = 1", "queues = []", 'gpu = "0.5"', "gpu = nan", "gpu = inf", "gpus = 1e400",
    "priority = -9223372036854775808", "port = 0x16", "port = 0o26", "port = 1_0", 'x = """',
    "x = '''", "x = [1, 'a'", "x = {a = 1", "x = 1979-05-27", "x = 07:32:00", "\x00", "\x7f",
    "\ufeff", "\u202e", "é = 1", '"" = 1', "'' = 1", "x = \"\\u0000\"", "x = \"\\ud800\"",
    "x = \"\\q\""])


@st.composite
def example_texts(draw):
    """config.example.toml's lines (comments left out), a few changed as a hand editing it
    changes them: one dropped, doubled, moved, cut short, its value or a new line put in."""
    lines = list(EXAMPLE_LINES)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(lines) - 1))
        how = draw(st.integers(0, 5))
        if how == 0:
            del lines[at]
        elif how == 1:
            lines.insert(at, lines[at])
        elif how == 2:
            lines.insert(draw(st.integers(0, len(lines))), lines.pop(at))
        elif how == 3:
            lines[at] = lines[at][:draw(st.integers(0, len(lines[at])))]
        elif how == 4 and "=" in lines[at]:
            lines[at] = lines[at].split("=", 1)[0] + "= " + draw(st.one_of(
                TOKENS, st.sampled_from(EXAMPLE_LINES).map(lambda x: x.split("=", 1)[-1])))
        else:
            lines.insert(at, draw(TOKENS))
    return "\n".join(lines) + "\n"


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=example_texts())
def test_the_example_edited_by_hand_loads_or_says_file_and_line(home, text):
    """The text itself changed (test_fuzz_config's damage is to its own base, at fixed
    seeds): a line of the file, or a config within its bounds."""
    _loads_or_says_file_and_line(home, text, errors="surrogatepass")
