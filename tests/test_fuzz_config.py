"""Hostile config files, from a seeded generator: a valid config with one to three things
wrong — a value of the wrong type, too big, too small, inf or nan, a control character, a long
string, an unsafe name; a key gone or unknown; an entry twice; a table where an array belongs;
an empty table — or the text itself broken: cut short, bytes that are not UTF-8, a line twice,
brackets nested thousands deep.

Every file is loaded as fractui loads it (``fractui.servable.load_checked``: the config and its
queues against the sim specs). Each must either load — and then every value is within its
bounds and every name safe — or be refused with ``file:line: what is wrong``, the line inside
the file and, where one value was changed, that value's line. Nothing else may happen. A sample
also goes through ``python -m fractui`` to see exit 2 and the same one line.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import pytest

from fractui.config import (BOUNDS, MAX_TEXT, NAME, TEAM_NAME_MAX, Config, ConfigError,
                            agent_place, mig_profiles)
from fractui.servable import load_checked
from fractui.store_url import sqlite_path, url_problem
from tests.cli_run import leaks, subprocess_run

pytestmark = pytest.mark.slow  # a fault suite: README, "the slow fault suites"

SEED = 20260613
CASES = 1500
SUBPROCESS_EVERY = 100


class Raw(str):
    """TOML text written as is (a date, a bare inf)."""


HOSTILE: List[Any] = [
    0, -1, 1, 2, 7, 65536, 2 ** 63 - 1, -(2 ** 63), 10 ** 30, 10 ** 400, -(10 ** 400),
    0.0, -0.5, 0.0005, 0.5, 0.9995, 1.5, 1e308, -1e308, 5e-324, math.inf, -math.inf, math.nan,
    "", " ", ".", "..", "/", "a/b", "-rf", "~", "~nobody-here/x", "x" * (MAX_TEXT + 1), "é",
    "\u202e", "\x00", "\x07", "\n", "a b", "3g.41gb", "1g.10gb", "7g.80gb", "sudo", "local",
    "ssh", "any", "mig", "share", "2xL4", "1xA100-80GB:mig", "9xNOPE", "h1", "q1", "t1",
    "/tmp", "relative/path", True, False,
    [], [1, "a"], ["h1"], ["h1", "h1"], ["nope"], ["L4"], [[]], {}, {"a": 1},
    Raw("1979-05-27T07:32:00Z"), Raw("07:32:00"),
]
UNKNOWN_KEYS = ["bogus", "Name", "port ", "é", "lease"]


def base(tmp: str) -> Dict[str, Any]:
    """A valid config: two simulated hosts, a real one and one reached by exec, a team, three
    queues."""
    return {
        "ssh": {"known_hosts": "~/kh", "connect_timeout": 3, "config_file": "~/ssh_config"},
        "hosts": [
            {"name": "h1", "transport": "local", "sim": "2xL4", "state_dir": tmp + "/s1"},
            {"name": "h2", "host": "10.0.0.2", "port": 22, "user": "ops", "sim":
             "1xA100-80GB:mig", "become": "sudo", "python": "python3", "state_dir": "/var/lib/st",
             "agent_cache": ".cache/f", "proxy_jump": "j@bastion:22", "identity_file": "~/k"},
            {"name": "h3", "host": "10.0.0.3"},
            {"name": "h4", "transport": "exec", "exec": ["kubectl", "exec", "-i", "{target}"],
             "exec_target": ["kubectl", "get", "pods", "-o", "name"], "agent": "image",
             "agent_path": "/opt/fractui/agent.pyz", "state_dir": "/var/lib/f", "sim": "1xL4"},
        ],
        "teams": [{"name": "t1", "quota_gpus": 1.5, "over_quota": True, "weight": 2,
                   "members": ["alice", "bob"]}],
        "queues": [
            {"name": "q1", "gpu": 0.5, "cpus": 2, "memory": 4, "hosts": ["h1", "h2"],
             "isolation": "any", "priority": 1, "team": "t1", "gpu_models": ["L4"]},
            {"name": "q2", "mig": "1g.10gb", "hosts": ["h2"]},
            {"name": "q3", "memory_gib": 10},
        ],
        "scheduler": {"lease_s": 15, "host_lost_s": 60, "preempt_grace_s": 5, "interval_s": 1},
        "store": {"url": "sqlite://" + tmp + "/store.db"},
        "tui": {"theme": "dark", "keys": {"app.quit": "x"}},
    }


def toml_value(v: Any) -> str:
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if v != v else "inf" if v == math.inf else "-inf" if v == -math.inf \
            else repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # TOML basic strings take JSON's escapes
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join("%s = %s" % (json.dumps(k), toml_value(x)) for k, x in v.items()) + "}"


def render(doc: Dict[str, Any]) -> Tuple[str, Dict[Tuple[str, Optional[int], str], int]]:
    """The document as TOML text, and the line each (table, index, key) is written on."""
    top, rest = [], []  # type: List[str], List[str]
    at: Dict[Tuple[str, Optional[int], str], int] = {}
    for name, value in doc.items():
        if isinstance(value, dict):
            rest.append("[%s]" % name)
            for k, v in value.items():
                rest.append("%s = %s" % (json.dumps(k), toml_value(v)))
                at[(name, None, k)] = len(rest)
        elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            for i, item in enumerate(value):
                rest.append("[[%s]]" % name)
                for k, v in item.items():
                    rest.append("%s = %s" % (json.dumps(k), toml_value(v)))
                    at[(name, i, k)] = len(rest)
        else:
            top.append("%s = %s" % (json.dumps(name), toml_value(value)))
    at = {key: line + len(top) for key, line in at.items()}
    return "\n".join(top + rest) + "\n", at


@dataclass
class Case:
    doc: Dict[str, Any]
    changes: List[str] = field(default_factory=list)
    target: Optional[Tuple[str, Optional[int], str]] = None  # the one value changed, if so
    text_damage: Optional[str] = None


def _item(doc: Dict[str, Any], rng: random.Random) -> Tuple[str, Optional[int], Dict]:
    table = rng.choice([t for t in doc if isinstance(doc[t], (dict, list))])
    value = doc[table]
    if isinstance(value, list):
        if not value or not all(isinstance(x, dict) for x in value):
            return table, None, {}
        i = rng.randrange(len(value))
        return table, i, value[i]
    return table, None, value


def mutate(case: Case, rng: random.Random) -> None:
    doc = case.doc
    how = rng.choices(["value", "unknown", "drop", "twice", "nesting", "empty"],
                      [12, 1, 2, 1, 1, 1])[0]
    table, index, item = _item(doc, rng)
    if how == "value" and item:
        key = rng.choice(list(item))
        item[key] = copy.deepcopy(rng.choice(HOSTILE))  # a later change may edit it
        case.target = (table, index, key)
        case.changes.append("%s[%s].%s = %r" % (table, index, key, item[key]))
    elif how == "unknown" and isinstance(item, dict):
        key = rng.choice(UNKNOWN_KEYS)
        item[key] = copy.deepcopy(rng.choice(HOSTILE))
        case.changes.append("%s[%s] +%r" % (table, index, key))
    elif how == "drop" and item:
        key = rng.choice(list(item))
        del item[key]
        case.changes.append("%s[%s] -%s" % (table, index, key))
    elif how == "twice" and index is not None:
        doc[table].append(copy.deepcopy(item))
        case.changes.append("%s[%s] twice" % (table, index))
    elif how == "nesting":
        doc[table] = copy.deepcopy(rng.choice(HOSTILE + [[{}], {"x": {"y": 1}}]))
        case.changes.append("%s = %r" % (table, doc[table]))
    else:
        doc[table] = [{}] if isinstance(doc[table], list) else {}
        case.changes.append("%s emptied" % table)


def damage(text: str, rng: random.Random) -> Tuple[bytes, str]:
    """The text broken as a file can be: cut, bytes that are not UTF-8, a line twice, deep."""
    data = text.encode("utf-8")
    how = rng.randrange(5)
    if how == 0:
        cut = rng.randrange(len(data))
        return data[:cut], "cut at %d" % cut
    if how == 1:
        at = rng.randrange(len(data))
        return data[:at] + bytes([rng.choice([0xff, 0xc3, 0x80, 0x00, 0x7f])]) + data[at:], \
            "byte at %d" % at
    lines = text.split("\n")
    i = rng.randrange(len(lines))
    if how == 2:
        lines.insert(i, lines[i])
        return "\n".join(lines).encode(), "line %d twice" % (i + 1)
    if how == 3:
        lines.insert(i, "deep = " + "[" * 3000 + "]" * 3000)
        return "\n".join(lines).encode(), "deep at %d" % (i + 1)
    lines[i] = rng.choice(["[[", "= 1", "[hosts", "x = ", '"a" = """', "[[hosts]] x"])
    return "\n".join(lines).encode(), "garbage at %d" % (i + 1)


def cases(tmp: str, seed: int = SEED) -> List[Tuple[Case, bytes]]:
    rng = random.Random(seed)
    out = []
    for _ in range(CASES):
        case = Case(base(tmp))
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            mutate(case, rng)
        if len(case.changes) > 1:
            case.target = None  # several changes: any of them may be the one reported
        text, at = render(case.doc)
        data = text.encode("utf-8")
        if rng.random() < 0.1:
            data, case.text_damage = damage(text, rng)
            case.target = None
        case.target_line = at.get(case.target) if case.target else None  # type: ignore
        out.append((case, data))
    return out


def safe(config: Config) -> List[str]:
    """What a loaded config holds that it must not."""
    wrong = []
    for what, items in (("host", config.hosts), ("queue", config.queues),
                        ("team", config.teams)):
        wrong += ["%s name %r" % (what, i.name) for i in items if not NAME.fullmatch(i.name)]
    values = {("ssh", "connect_timeout"): config.ssh.connect_timeout}
    for h in config.hosts:
        if h.port is not None:
            values[("hosts", "port")] = h.port
    for q in config.queues:
        values.update({("queues", k): getattr(q, k) for k in (
            "gpu", "memory_gib", "gpus", "cpus", "memory", "priority") if getattr(q, k)})
        if q.mig and q.mig not in mig_profiles():
            wrong.append("mig %r" % q.mig)
    for t in config.teams:
        values.update({("teams", "quota_gpus"): t.quota_gpus, ("teams", "weight"): t.weight})
        wrong += ["member %r" % m for m in t.members if not NAME.fullmatch(m)]
        if len(t.name) > TEAM_NAME_MAX:
            wrong.append("team name %r, longer than its role allows" % t.name)
        if len(set(t.members)) != len(t.members):
            wrong.append("members twice: %r" % (t.members,))
    for k in ("lease_s", "host_lost_s", "preempt_grace_s", "interval_s"):
        values[("scheduler", k)] = getattr(config.scheduler, k)
    for where, v in values.items():
        lo, hi, _ = BOUNDS[where]
        if not (math.isfinite(v) and lo <= v <= hi):
            wrong.append("%s = %r" % (".".join(where), v))
    for h in config.hosts:
        if h.transport == "exec" and not (
                h.exec and all(h.exec) and any("{target}" in w for w in h.exec) == bool(
                    h.exec_target) and h.agent in ("upload", "image") and all(
                    p.startswith("/") for p in (h.state_dir, h.agent_cache, h.agent_path))):
            wrong.append("exec host %r: %r" % (h.name, h))
        if h.transport != "exec" and (h.exec, h.exec_target) != (None, None):
            wrong.append("exec words on a %s host %r" % (h.transport, h.name))
    places = [agent_place(h) for h in config.hosts]
    if len(set(places)) != len(places):
        wrong.append("two hosts, one state dir")
    for path in (config.ssh.known_hosts, config.ssh.config_file,
                 config.store.url and sqlite_path(config.store.url)):
        if path is not None and (not os.path.isabs(path) or not path.isprintable()):
            wrong.append("local path %r" % path)
    if config.store.url is not None and sqlite_path(config.store.url) is None and (
            url_problem(config.store.url) is not None):
        wrong.append("store url %r" % config.store.url)
    return wrong


def test_the_base_config_loads(home):
    """Every case changes a valid config: one the loader refuses as it is would have each
    case refused for the base's fault, whatever it changed."""
    path = str(home / "config.toml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(base(str(home)))[0])
    assert [h.name for h in load_checked(path).hosts] == ["h1", "h2", "h3", "h4"]


def test_the_generator_is_fixed(tmp_path):
    first = [data for _, data in cases(str(tmp_path))]
    assert first == [data for _, data in cases(str(tmp_path))]
    assert len(set(first)) > CASES * 0.8  # mostly different files


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path


def test_hostile_configs_load_safely_or_say_file_and_line(home):
    path = str(home / "config.toml")
    failures, refused, loaded = [], [], 0
    for case, data in cases(str(home)):
        with open(path, "wb") as f:
            f.write(data)
        lines = data.count(b"\n") + 1
        try:
            config = load_checked(path)
        except ConfigError as err:
            refused.append((case, data, str(err)))
            line = err.line
            if err.path != path or line is None or not 1 <= line <= lines:
                failures.append("%s: no line within the file: %s" % (case.changes, err))
            elif case.target_line is not None and _names(err.message, case.target) \
                    and line != case.target_line:
                failures.append("%s: line %d, not %d: %s" % (case.changes, line,
                                                              case.target_line, err))
            continue
        except Exception as err:  # noqa: BLE001 - the defect this test exists to find
            failures.append("%s %s: %s: %s" % (case.changes, case.text_damage,
                                               type(err).__name__, err))
            continue
        loaded += 1
        wrong = safe(config)
        if wrong:
            failures.append("%s: loaded with %s" % (case.changes, wrong))
    assert refused and loaded, (len(refused), loaded)  # the generator tries both ways
    for case, data, said in refused[::SUBPROCESS_EVERY]:
        with open(path, "wb") as f:
            f.write(data)
        done = subprocess_run(["--config", path, "audit"],
                              env_extra={"HOME": str(home / "home")})
        if (done.returncode, done.stderr) != (2, "fractui: %s\n" % said) or leaks(done.stderr):
            failures.append("process %s: exit %d %r, not %r" % (case.changes, done.returncode,
                                                                done.stderr, said))
    assert not failures, "%d of %d failed:\n%s" % (len(failures), CASES, "\n".join(failures))


def _names(message: str, target: Optional[Tuple[str, Optional[int], str]]) -> bool:
    """Whether the message is about the changed value itself."""
    if target is None:
        return False
    table, index, key = target
    label = "%s[%d].%s" % (table, index, key) if index is not None else "%s.%s" % (table, key)
    return message.startswith(label + " ")
