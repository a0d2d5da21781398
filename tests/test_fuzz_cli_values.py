"""Every option and word of every verb, as the parser lists them (test_fuzz_cli's pools
leave some out: mig --destroy and --mode, report --until, audit --limit...), given hostile
text by hypothesis, repeated and in any order, on a real store: exit 0, 1 or 2, a word on
stderr for each non-zero exit, never a traceback or an internal error."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fractui import cli
from tests.cli_run import in_process, leaks

HOSTILE = st.one_of(
    st.sampled_from(["", " ", "-", "--", "-1", "0", "nan", "inf", "-inf", "1e309", "9" * 400,
                     str(2 ** 64), "\u0663", "\x1b[2J", "a\nb", "\t", "x" * 5000, "é", "🙂",
                     "\u202e", "\ufeff", "=", "a=b", "/", "..", "1.5", "0x10", "+1", "1_0"]),
    st.text(max_size=30),
    st.text(alphabet=string.printable, max_size=12),
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70).map(str),
    st.floats().map(str),
)
# run until stopped, or write where told (agent-archive DIR): their refusals are test_fuzz_cli's
SKIP = {"scheduler", "demo", "agent-archive"}
NEVER_WAIT = {"--wait", "-f", "--follow", "-h", "--help", "--until-stdin-closes"}


def _shapes():
    """(verb, its positional arguments, its options) for each verb tried."""
    parser = cli._parser()
    out = []
    for verb, sub in sorted(cli._verb_parsers(parser).items()):
        if verb in SKIP:
            continue
        positional = [a for a in sub._actions if not a.option_strings]
        options = [a for a in sub._actions if a.option_strings
                   and not set(a.option_strings) & NEVER_WAIT and a.dest != "config"]
        out.append((verb, positional, options))
    return out


SHAPES = _shapes()


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    d = tmp_path_factory.mktemp("fz")
    path = d / "config.toml"
    path.write_text('[store]\nurl = "sqlite://%s"\n[[queues]]\nname = "q"\ngpu = 0.5\n'
                    % (d / "store.db"))
    assert cli.main(["--config", str(path), "submit", "--queue", "q", "--", "x"]) == 0
    return str(path)


@st.composite
def command_lines(draw):
    verb, positional, options = draw(st.sampled_from(SHAPES))
    words = [verb]
    for action in positional:
        n = {None: 1, "?": draw(st.integers(0, 1)), "*": draw(st.integers(0, 2)),
             "+": draw(st.integers(1, 2))}[action.nargs]
        words += [draw(HOSTILE) for _ in range(n)]
    for action in draw(st.lists(st.sampled_from(options), max_size=4)) if options else []:
        flag = draw(st.sampled_from(action.option_strings))
        if action.nargs == 0:
            words.append(flag)
        else:
            words += [flag, draw(HOSTILE)]
    if verb in ("submit", "launch"):
        words += ["--", "true"]
    return words


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(words=command_lines())
def test_hostile_values_of_every_option(config, capfd, words):
    code, out, err = in_process(capfd, ["--config", config, *words])
    assert code in (0, 1, 2) and not leaks(err), (words, code, err[-800:])
    if code:
        assert err.strip(), (words, code)
