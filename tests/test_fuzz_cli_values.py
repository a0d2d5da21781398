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
from fractui.words import as_typed, quoted
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


# Each verb's command line with every word right (on NAMED_CONFIG's store and host), and where
# in it each positional word is: one of them, or one option's value, is made hostile.
RIGHT = {
    "status": [], "doctor": ["gpu-a"], "trust": ["gpu-a", "--yes"], "mig": ["gpu-a", "0",
                                                                         "1g.10gb"],
    "launch": ["gpu-a", "0", "--memory-mib", "10", "--", "true"], "stop": ["gpu-a/j1"],
    "jobs": ["1"], "logs": ["1"], "submit": ["--queue", "q", "--", "true"], "cancel": ["1"],
    "requeue": ["1"], "preempt": ["1"], "place": ["1", "gpu-a", "0"],
    "move": ["1", "gpu-a", "0"], "audit": ["1"], "cordon": ["gpu-a", "0"],
    "drain": ["gpu-a", "0"], "uncordon": ["gpu-a", "0"], "report": [], "teams": [],
    "queues": [], "themes": [],
}


@pytest.fixture(scope="module")
def named_config(tmp_path_factory):
    """A store with job 1 in it, queue q, and host gpu-a, reached by a command that fails at
    once (offline: the verbs that reach it end in exit 1, quickly)."""
    d = tmp_path_factory.mktemp("named")
    path = d / "config.toml"
    path.write_text('[store]\nurl = "sqlite://%s"\n[[hosts]]\nname = "gpu-a"\ntransport = '
                    '"exec"\nexec = ["false"]\n[[queues]]\nname = "q"\ngpu = 0.5\n'
                    % (d / "store.db"))
    assert cli.main(["--config", str(path), "submit", "--queue", "q", "--", "x"]) == 0
    return str(path)


WORDED = [s for s in SHAPES if s[1] or any(a.nargs != 0 for a in s[2])]  # a word to make wrong


@st.composite
def one_word_wrong(draw):
    """(command line, the hostile word, the option it is given to: none for a positional
    word, which its refusal must say back)."""
    verb, _, options = draw(st.sampled_from(WORDED))
    words = [verb] + RIGHT[verb]
    cut = words.index("--") if "--" in words else len(words)
    slots = [i for i in range(1, cut) if not words[i].startswith("-")
             and not words[i - 1].startswith("-")]
    valued = [a for a in options if a.nargs != 0]
    word = draw(HOSTILE)
    if slots and (not valued or draw(st.booleans())):
        at = draw(st.sampled_from(slots))
        names = []
        words[at] = word
    else:
        action = draw(st.sampled_from(valued))
        flag = draw(st.sampled_from(action.option_strings))
        names = [flag] + list(action.option_strings)
        if flag in words[:cut]:
            words[words.index(flag) + 1] = word
        else:
            words[cut:cut] = [flag, word]
    return words, word, names


def _named(err: str, word: str, names) -> bool:
    """Whether ``err`` says the word (as messages quote one: ``words.quoted``, or bare), or
    the option it was given to (``names``)."""
    shown = [quoted(word)[:24], as_typed(word)[:24]] + list(names)
    if word.startswith("-"):  # an option-looking value is read as an option: named as one
        shown.append(word.split("=", 1)[0][:24])
    return any(s and s in err for s in shown)


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=one_word_wrong())
def test_one_wrong_word_is_named_in_its_refusal(named_config, capfd, case):
    """Every other word right: a refusal of the command line (exit 2) says the wrong word, or
    the option or argument it was given to, so the user knows which to fix."""
    words, word, names = case
    code, out, err = in_process(capfd, ["--config", named_config, *words])
    assert code in (0, 1, 2) and not leaks(err), (words, code, err[-800:])
    if code:
        assert err.strip(), (words, code)
    if code == 2:
        assert _named(err, word, names), (words, err[-400:])
