"""Hostile command lines for every verb, from a seeded generator: unknown flags, missing
values, huge and negative numbers, malformed job and GPU references, unknown names, unicode,
control characters, empty words, NUL, undecodable bytes, ``--`` where it does not belong,
times and groupings ``report`` cannot read, config files that are missing, empty or
directories.

Each case is built from values whose class is known — a word the command line must refuse, or
one it must accept — so its exit code is known by the rule of docs/cli.md: 2 if any word is
wrong, else 0 or 1 (what the fleet and the store answer). Every case runs through the real
``main`` on a real config, store and simulated fleet; a sample also as ``python -m fractui``.
None may end in a traceback, an unknown error (exit 70), or a non-zero exit without a word.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Tuple

import pytest

from fractui.config import QueueConfig
from tests.cli_run import closed_port, in_process, leaks, subprocess_run
from tests.localfleet import local_fleet  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow  # a fault suite: README, "the slow fault suites"

SEED = 20260613
PER_VERB = 24  # cases per verb; the count run is asserted below and written in reliability.md
SUBPROCESS_EVERY = 40  # every Nth case also runs as a process

PY = sys.executable
# (words a slot accepts, words it must refuse), by the kind of word
POOLS: Dict[str, Tuple[List[str], List[str]]] = {
    "host": (["gpu-a", "down"], ["nope", "", "..", "-x", "é", "x" * 300, "gpu-a/", "a\x07b"]),
    "ssh-host": (["down"], ["gpu-a", "nope", ""]),
    "gpu": (["0", "1", "GPU-abc"], ["-1", "99999999999", "", " 0", "\x01", "x" * 300]),
    "gpu-index": (["0", "1"], ["x", "-1", "", "GPU-abc", "1e3", "\u0663", "70000"]),
    "profile": (["1g.10gb", "3g.40gb", "7g.80gb"], ["3g.41gb", "", "x", "1G.10GB", "é"]),
    "job": (["1", "2", "3", "4", "5", "6", "999", str(2 ** 63 - 1)],
            ["0", "-1", "abc", "", "1.5", str(2 ** 64), "\u0663", "1 ", "x" * 500]),
    "job-ref": (["1", "3", "999", "gpu-a/j1", "gpu-a/j999", "down/j1"],
                ["abc", "nope/j1", "/j1", "gpu-a/", "", "-3"]),
    "host-job": (["gpu-a/j999", "down/j1", "gpu-a/j1"], ["gpu-a", "nope/j1", "", "/"]),
    "count": (["1", "10", "1000000"], ["0", "-1", "x", "", "1e9", "9" * 40]),
    "lines": (["0", "5", "1000000"], ["-1", "x", "", "1000001"]),
    "grace": (["0", "1", "3600"], ["-1", "3601", "x", ""]),
    "mib": (["1", "1024", "999999"], ["0", "-5", "x", "2147483649"]),
    "start": (["0", "3"], ["-1", "64", "x"]),
    "queue": (["quarter", "mig-small"], ["nope", "", "x" * 100, "QUARTER"]),
    "team": ([], ["vision", "", "nope", "v\x1b[2J"]),  # the config has no teams: all wrong
    "text": (["n", "é x", "x" * 500, "a=b", "/tmp/nowhere"], ["-x", "--x"]),
    "key": (["k1", "sweep-7 é", "x" * 256], ["x" * 257, "-x", "a\ud800b", ""]),
    "user": (["root", "ann", "ann@corp", "é"], ["", "-x", "a\x1b[2Jb", "a\nb"]),
    "cwd": (["/tmp/nowhere", "/", "/é x", "/" + "x" * 500], ["-x", "--x", "rel/dir", "n"]),
    "env": (["A=1", "B=", "PATH=/x"], ["noequals", "=x", ""]),
    "image": (["docker.io/library/python:3.12", "localhost/x@sha256:00", "/opt/i.sif"],
              ["", "two words", "-x", "a\tb"]),
    "uuid": (["MIG-abc", "GPU-0"], [""]),
    # a MIG layout's version as the agent derives it: 12 lowercase hex digits
    "layout": (["0123456789ab", "ffffffffffff"], ["v1", "", "0123456789AB", "0123456789abc",
                                                  "0123456789a\n"]),
    # --since (its --until is now): a time before now; now itself is an empty range
    "since": (["90s", "30m", "24h", "7d", "2w", "2026-01-01", "2026-01-01T14:00Z"],
              ["now", "", "x", "-1h", "24 h", "9999999w", "2026-13-01", "1969-12-31",
               "\x1b[2J"]),
    "by": (["team", "queue", "user", "host", "model", "gpu"], ["", "teams", "TEAM"]),
}
ARGVS = ([[PY, "-c", "pass"]], [[]])  # a job's argv after --: fine, missing
NO_DIR = "/proc/no-such/d"
GOOD, BAD = 0, 1


@dataclass
class Case:
    argv: List[str] = field(default_factory=list)
    bad: List[str] = field(default_factory=list)  # why the command line is wrong, if it is

    def word(self, rng: random.Random, kind: str, p_bad: float = 0.25) -> str:
        good, bad = POOLS[kind]
        if bad and (not good or rng.random() < p_bad):
            word = rng.choice(bad)
            self.bad.append("%s %r" % (kind, word))
            return word
        return rng.choice(good)

    def add(self, *words: str) -> None:
        self.argv += words


def _maybe(rng: random.Random, p: float = 0.5) -> bool:
    return rng.random() < p


def _whose(c: Case, rng: random.Random) -> None:
    """--user U, --me, neither, or both (which argparse refuses): jobs' and report's."""
    whose = rng.randrange(6)
    if whose in (1, 3):
        c.add("--user", c.word(rng, "user", 0.3))
    if whose in (2, 3):
        c.add("--me")
    if whose == 3:
        c.bad.append("--user and --me")


def _flags(c: Case, rng: random.Random, *names: str) -> None:
    for name in names:
        if _maybe(rng, 0.3):
            c.add(name)


def _status(c: Case, rng: random.Random) -> None:
    _flags(c, rng, "--json")


def _doctor(c: Case, rng: random.Random) -> None:
    for _ in range(rng.randrange(3)):
        c.add(c.word(rng, "host", 0.2))
    _flags(c, rng, "--json")


def _trust(c: Case, rng: random.Random) -> None:
    c.add(c.word(rng, "ssh-host"), "--yes")


def _mig(c: Case, rng: random.Random) -> None:
    c.add(c.word(rng, "host", 0.15), c.word(rng, "gpu", 0.15), c.word(rng, "profile", 0.15))
    _flags(c, rng, "--destroy-idle", "--yes", "--json")


def _launch(c: Case, rng: random.Random) -> None:
    c.add(c.word(rng, "host", 0.1), c.word(rng, "gpu", 0.1))
    form = rng.randrange(3)
    if form == 0:
        c.add("--memory-mib", c.word(rng, "mib", 0.2))
    elif form == 1:
        c.add("--profile", c.word(rng, "profile", 0.2))
        if _maybe(rng):
            c.add("--start", c.word(rng, "start", 0.2))
    else:
        c.add("--instance", c.word(rng, "uuid", 0.1))
    for flag, kind in (("--name", "text"), ("--key", "text"), ("--cwd", "cwd")):
        if _maybe(rng, 0.25):
            c.add(flag, c.word(rng, kind, 0.2))
    if _maybe(rng, 0.25):
        c.add("--env", c.word(rng, "env", 0.3))
    _argv(c, rng, "launch needs the program")


def _argv(c: Case, rng: random.Random, missing: str) -> None:
    argv = rng.choice(ARGVS[0]) if _maybe(rng, 0.85) else rng.choice(ARGVS[1])
    if not argv:
        c.bad.append(missing)
    c.add("--", *argv)


def _submit(c: Case, rng: random.Random) -> None:
    c.add("--queue", c.word(rng, "queue", 0.2))
    if _maybe(rng, 0.15):
        c.add("--team", c.word(rng, "team"))
    for flag, kind in (("--name", "text"), ("--cwd", "cwd"), ("--key", "key")):
        if _maybe(rng, 0.25):
            bad = len(c.bad)
            word = c.word(rng, kind, 0.2)
            if kind == "key" and len(c.bad) == bad:  # a key of its own: the same key with
                word = ("%d-%s" % (rng.getrandbits(24), word))[:256]  # another job is exit 2
            c.add(flag, word)
    if _maybe(rng, 0.25):
        c.add("--image", c.word(rng, "image", 0.3))
    names: List[str] = []
    for _ in range(rng.randrange(1, 4) if _maybe(rng, 0.3) else 0):
        pair = c.word(rng, "env", 0.3)
        c.add("--env", pair)
        names.append(pair.partition("=")[0])
    if len([n for n in names if n]) > len({n for n in names if n}):
        c.bad.append("a variable given twice")
    _flags(c, rng, "--json")
    _argv(c, rng, "submit needs the program")


def _jobs(c: Case, rng: random.Random) -> None:
    for _ in range(rng.randrange(3) if _maybe(rng, 0.4) else 0):
        c.add(c.word(rng, "host", 0.2))
    if _maybe(rng):
        c.add("--all")
        if _maybe(rng):
            c.add("--limit", c.word(rng, "count", 0.3))
    _whose(c, rng)
    _flags(c, rng, "--json")


def _stop_like(c: Case, rng: random.Random) -> None:
    c.add(c.word(rng, "job", 0.35))


def _place(c: Case, rng: random.Random) -> None:
    c.add(c.word(rng, "job", 0.15), c.word(rng, "host", 0.15), c.word(rng, "gpu-index", 0.15))
    if _maybe(rng, 0.4):
        c.add("--profile", c.word(rng, "profile", 0.2))
        if _maybe(rng):
            c.add("--start", c.word(rng, "start", 0.2))
            if _maybe(rng, 0.3):
                c.add("--layout-version", c.word(rng, "layout", 0.3))
    elif _maybe(rng, 0.15):
        c.add("--start", "0")
        c.bad.append("--start without --profile")


def _move(c: Case, rng: random.Random) -> None:
    c.add(c.word(rng, "job", 0.15), c.word(rng, "host", 0.15), c.word(rng, "gpu-index", 0.15))
    if _maybe(rng, 0.4):
        c.add("--profile", c.word(rng, "profile", 0.2))
        if _maybe(rng):
            c.add("--start", c.word(rng, "start", 0.2))
    elif _maybe(rng, 0.15):
        c.add("--start", "0")
        c.bad.append("--start without --profile")
    _flags(c, rng, "--over-quota", "--yes")


def _audit(c: Case, rng: random.Random) -> None:
    if _maybe(rng):
        c.add(c.word(rng, "job", 0.3))
    if _maybe(rng):
        c.add("-n", c.word(rng, "count", 0.3))
    _flags(c, rng, "--json")


def _cordon(c: Case, rng: random.Random) -> None:
    c.add(c.word(rng, "host", 0.2))
    if _maybe(rng):
        c.add(c.word(rng, "gpu-index", 0.2))
    if c.argv[0] != "uncordon":
        _flags(c, rng, "--json")


def _logs(c: Case, rng: random.Random) -> None:  # not -f: it waits for a pending job
    c.add(c.word(rng, "job-ref", 0.3))
    if _maybe(rng):
        c.add("-n", c.word(rng, "lines", 0.3))


def _stop(c: Case, rng: random.Random) -> None:
    c.add(c.word(rng, "host-job", 0.3))
    if _maybe(rng):
        c.add("--grace", c.word(rng, "grace", 0.3))
    _flags(c, rng, "--json")


def _report(c: Case, rng: random.Random) -> None:
    if _maybe(rng):
        c.add("--since", c.word(rng, "since", 0.3))
    if _maybe(rng, 0.3):
        c.add("--by", c.word(rng, "by", 0.2))
    _whose(c, rng)
    if _maybe(rng, 0.15):
        c.add("--team", c.word(rng, "team"))  # no job of the store has a team either
    form = rng.randrange(4)
    c.add(*(["--json"], ["--csv"], [], ["--json", "--csv"])[form])
    if form == 3:
        c.bad.append("--json and --csv")


def _teams(c: Case, rng: random.Random) -> None:
    if _maybe(rng, 0.3):
        c.add("--team", c.word(rng, "team"))
    _flags(c, rng, "--json")


def _refused(words: List[List[str]]) -> Callable[[Case, random.Random], None]:
    """A verb whose accepted command lines run until stopped (the scheduler, the TUI) or
    write where they are told (agent-archive): only command lines it must refuse are
    generated."""
    def make(c: Case, rng: random.Random) -> None:
        c.add(*rng.choice(words))
        c.bad.append("refused by construction")
    return make


VERBS: Dict[str, Callable[[Case, random.Random], None]] = {
    "status": _status, "doctor": _doctor, "trust": _trust, "mig": _mig, "launch": _launch,
    "submit": _submit, "jobs": _jobs, "cancel": _stop_like, "requeue": _stop_like,
    "preempt": _stop_like, "place": _place, "move": _move, "audit": _audit, "logs": _logs,
    "stop": _stop,
    "cordon": _cordon, "drain": _cordon, "uncordon": _cordon,
    "report": _report, "teams": _teams, "queues": _status, "themes": _status,
    "scheduler": _refused([["--bogus"], ["--name"], ["extra"], ["--", "x"], ["-n", "1"],
                           ["--name", ""], ["--name", " "], ["--name", "a\nb"],
                           ["--name", "\x1b[2J"], ["--name", "x" * 300]]),
    # (a folder no one can make: should one of these be taken, nothing is written)
    "agent-archive": _refused([["--bogus", NO_DIR], [NO_DIR, "extra"], ["--json", NO_DIR],
                               [NO_DIR, "--", "x"], ["--yes", NO_DIR]]),
    "demo": _refused([["--gpus", "0"], ["--gpus", "1001"], ["--gpus", "x"], ["--seed", "-1"],
                      ["--seed", "9" * 30], ["--bogus"], ["extra"], ["--", "x"]]),
}
TUI = _refused([["--readonly", "status"], ["--bogus"], ["--readonly", "jobs", "--json"]])


REQUIRED = {"trust": 1, "mig": 3, "launch": 2, "cancel": 1, "requeue": 1, "preempt": 1,
            "place": 3, "move": 3, "logs": 1, "stop": 1, "cordon": 1, "drain": 1,
            "uncordon": 1}  # positional words each verb cannot do without
VALUED = {"--limit", "-n", "--grace", "--memory-mib", "--profile", "--start", "--instance",
          "--name", "--key", "--cwd", "--env", "--queue", "--team", "--layout-version",
          "--image", "--since", "--by", "--user"}


def _hostile(c: Case, rng: random.Random) -> None:
    """One more thing wrong with the whole command line, now and then."""
    if not _maybe(rng, 0.2):
        return
    cut = c.argv.index("--") if "--" in c.argv else len(c.argv)
    how = rng.randrange(5)
    if how == 0:
        c.argv.insert(rng.randrange(1, cut + 1), rng.choice(["--bogus", "-z", "--jsonx"]))
    elif how == 1:
        c.argv.insert(cut, "extra-word")  # no verb takes another word here (a host: unknown)
    elif how == 2:
        c.argv.insert(rng.randrange(1, cut + 1), rng.choice(["a\x00b", "\udcff"]))
    elif how == 3:  # a required word, or a flag's value, gone
        needed = [i for i in range(1, cut) if c.argv[i - 1] in VALUED
                  or i <= REQUIRED.get(c.argv[0], 0)]
        if not needed:
            return
        del c.argv[rng.choice(needed)]
    else:  # a program where the verb takes none
        if c.argv[0] in ("launch", "submit"):
            return
        c.argv[cut:cut] = ["--", "x"]
    c.bad.append("hostile #%d" % how)


def cases(seed: int = SEED) -> List[Case]:
    rng = random.Random(seed)
    out = []
    for verb, make in sorted(VERBS.items()):
        for _ in range(PER_VERB):
            c = Case([verb])
            make(c, rng)
            _hostile(c, rng)
            out.append(c)
    for _ in range(PER_VERB // 3):
        c = Case()
        TUI(c, rng)
        out.append(c)
    return out


def test_the_generator_is_fixed_and_tries_each_verb_both_ways():
    first, again = cases(), cases()
    assert [c.argv for c in first] == [c.argv for c in again]
    for verb in VERBS:
        mine = [c for c in first if c.argv[:1] == [verb]]
        assert len(mine) == PER_VERB and any(c.bad for c in mine)
        if verb not in ("scheduler", "demo", "agent-archive"):
            assert any(not c.bad for c in mine), verb


@pytest.fixture
def fleet_config(local_fleet, tmp_path):  # noqa: F811
    """gpu-a (an L4 and an A100 in MIG mode), down (offline), six pending jobs, a real store."""
    f = local_fleet({"gpu-a": "1xL4,1xA100-80GB:mig"},
                    [QueueConfig(name="quarter", gpu=0.25),
                     QueueConfig(name="mig-small", mig="1g.10gb")])
    for queue in ("quarter", "quarter", "mig-small", "quarter", "mig-small", "quarter"):
        f.submit(queue)
    for user in POOLS["user"][0]:  # each right --user a name the store knows (one of none is
        # a typo, exit 2): a job of theirs, cancelled at once
        job = f.store.submit("quarter", None, "theirs", [PY, "-c", "pass"], {"gpu": 0.25},
                             "%s@fuzz" % user)
        f.store.ended(job.id, ("pending",), "cancelled", "by them", "%s@fuzz" % user,
                      "by them", "cancel")
    path = tmp_path / "fuzz.toml"
    path.write_text(open(f.write_config()).read() + (
        '[ssh]\nconnect_timeout = 1\n[[hosts]]\nname = "down"\nhost = "127.0.0.1"\n'
        'port = %d\n' % closed_port()))
    return str(path)


def _verdict(c: Case, code: object, out: str, err: str) -> str:
    """What is wrong with how a case ended, or ""."""
    if leaks(err):
        return "leaked %s" % leaks(err)
    if not isinstance(code, int) or code in (70,) or code not in (0, 1, 2):
        return "exit %r" % code
    if c.bad and code != 2:
        return "exit %d for a wrong command line (%s)" % (code, "; ".join(c.bad))
    if not c.bad and code == 2:
        return "exit 2 for a right command line"
    said = out + err if c.argv[:1] in (["status"], ["doctor"]) else err
    if code and not said.strip():
        return "exit %d without a word" % code
    return ""


def test_hostile_command_lines_for_every_verb(fleet_config, capfd, tmp_path):
    generated = cases()
    failures = []
    for c in generated:
        argv = ["--config", fleet_config, *c.argv]
        try:
            code, out, err = in_process(capfd, argv)
        except BaseException as exc:  # noqa: BLE001 - main must return, whatever happens
            code, out, err = repr(exc), "", ""
        why = _verdict(c, code, out, err)
        if why:
            failures.append("%r: %s\n%s" % (c.argv, why, err[-600:]))
    # the config file itself: missing, a directory, empty words where a file is named
    for argv, expected in ((["--config", "", "jobs"], 2), (["--config", str(tmp_path), "jobs"], 2),
                           (["--config", str(tmp_path / "none.toml"), "status"], 2),
                           (["--config"], 2), (["--config", "/dev/null", "jobs", "--json"], 1)):
        code, out, err = in_process(capfd, argv)
        if argv[1:2] == ["/dev/null"] and "there is no store here yet" not in err:
            code = "%r, not the store's absence" % code  # (read as an empty config, as it is)
        if code != expected or leaks(err):
            failures.append("%r: exit %r %s" % (argv, code, err[-300:]))
    sampled = generated[::SUBPROCESS_EVERY]
    for c in sampled:
        if any("\x00" in w or "\udcff" in w for w in c.argv):
            continue  # no process can be given these words; main refuses them in-process
        done = subprocess_run(["--config", fleet_config, *c.argv])
        why = _verdict(c, done.returncode, done.stdout, done.stderr)
        if why:
            failures.append("process %r: %s\n%s" % (c.argv, why, done.stderr[-600:]))
    assert len(generated) == len(VERBS) * PER_VERB + PER_VERB // 3 == 608
    assert not failures, "%d of %d failed:\n%s" % (len(failures), len(generated),
                                                   "\n".join(failures))
