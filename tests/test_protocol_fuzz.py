"""A protocol fuzzer: hostile lines to every method of a real agent (``serve --stdio`` on the
sim backend, through its daemon's socket), at fixed seeds.

Wrong types (the string "false" for a boolean, 1.0 for an integer), huge numbers, NaN and
Infinity, odd Unicode, NUL and lone surrogates, deep nesting, duplicate keys, stray members,
batches and notifications. For every line: each answer owed is one well-formed JSON-RPC line
(never -32603, an error always with its class), no answer is owed to a notification, the agent
stays up, and neither the GPUs nor the set of running jobs change unless a request validly asked
for it and was answered with success.
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any, Dict, Iterable, List, Set, Tuple

import pytest

from remote_agent.rpc import jsonrpc as rpc

pytestmark = pytest.mark.slow  # a fault suite: README, "the slow fault suites"

SEEDS = (1, 2, 3)
CASES_PER_SEED = 300
SLEEPER = json.dumps([sys.executable, "-c", "import time; time.sleep(120)"])

# Hostile JSON values, as text (NaN and friends cannot be made by json.dumps).
HOSTILE = [
    '"false"', '"true"', '"0"', '"1"', "1.0", "0.5", "-0", "1E2", "1e400", "-1e400", "NaN",
    "Infinity", "-Infinity", "-1", "2147483648", "9" * 30, "-" + "9" * 30, "null", "[]", "{}",
    "true", "false", '""', '"\\u0000"', '"a\\u0000b"', '"\\ud800"', '"\\udfff\\ud800"',
    '"\u00e9\u2713\U0001F600"', '"\\u202e\\u200b"', '"' + "x" * 5000 + '"', '["x", 1]',
    '{"a": 1}', '{"profile": "1g.10gb", "start": "0"}', "[" * 40 + "]" * 40,
    '{"a": {"b": {"c": [[[[1]]]]}}}', '[NaN]', '{"x": Infinity}', '"j' + "9" * 25 + '"',
    '"j\u0661"', '"\uff11"', '"0x10"', '" "', '"-1"', '"../../etc/passwd"',
    '"MIG-00000000-0000-0000-0000-000000000000"', '"GPU-ffffffff"',
]
# Values of the wrong type, or out of range, for a kind of param: what a client that means
# well gets wrong.
CONFUSED = {
    "bool": ['"false"', '"true"', "0", "1", '"no"', "NaN", "[false]"],
    "int": ["1.0", '"1"', "true", "1e400", "9" * 30, "-1", "NaN", "Infinity", "2147483648"],
    "str": ["1", "true", '"\\u0000"', '"\\ud800"', '"' + "s" * 5000 + '"', '["x"]'],
    "gpu": ["-1", '"0"', "0.0", "true", "9" * 30, '"GPU-nope"', "[0]"],
    "job": ['"j' + "9" * 25 + '"', '"j\\u0661"', '"\\uff11"', "1", '"j-1"', '"j1.0"'],
}
# Hostile values inside the params that are objects or lists: (template, the kind inside).
HOSTILE_INSIDE = {
    "mig": [('{"profile": "4g.40gb", "start": 0, "destroy_idle": %s}', "bool"),
            ('{"profile": "1g.10gb", "start": 6, "destroy_idle": %s}', "bool"),
            ('{"profile": "1g.10gb", "start": %s}', "int"),
            ('{"profile": %s, "start": 6}', "str"),
            ('{"profile": "1g.10gb", "start": 6, "layout_version": %s}', "str"),
            ('{"profile": "1g.10gb", "start": 6, "extra": %s}', "int")],
    "env": [('{"A": %s}', "str"), ('{"": "x", "B": %s}', "str"), ('{"A=B": "x", "C": %s}', "str")],
    "argv": [("[%s]", "str"), ('["python3", %s]', "str")],
    "gpus": [("[%s]", "gpu"), ("[1, %s]", "gpu")],
    "throttle": [("[%s]", "str"), ('["sw_power_cap", %s]', "str")],
}
# Valid values by kind; "gpu" 1 is the L4, 0 the A100 in MIG mode.
VALID = {
    "int": ["0", "1", "4", "100"], "bool": ["true", "false"], "str": ['"x"', '"fuzz"'],
    "gpu": ["0", "1"], "profile": ['"1g.10gb"', '"2g.20gb"', '"3g.40gb"'],
    "job": ['"j1"', '"1"', '"j999"'], "argv": [SLEEPER], "env": ['{"A": "b"}', "{}"],
    "gpus": ["[1]", "[0, 1]"], "dir": ['"/tmp"', '"/"'],
    "mig": ['{"profile": "1g.10gb", "start": 6}', '{"profile": "4g.40gb", "start": 0}'],
    "state": ['"running"', '"exited"'], "error": ['"NVML_ERROR_UNKNOWN"'],
    "function": ['"nvmlDeviceGetCount"'], "throttle": ['["sw_power_cap"]', "[]"],
}
SCHEMA: Dict[str, Dict[str, str]] = {
    "hello": {"protocol": "int", "client": "str"},
    "inventory": {}, "snapshot": {}, "subscribe": {}, "unsubscribe": {},
    "daemon.version": {}, "daemon.shutdown": {},
    "mig.plan": {"gpu": "gpu", "profile": "profile", "start": "int", "destroy_idle": "bool"},
    "mig.apply": {"gpu": "gpu", "profile": "profile", "start": "int", "destroy_idle": "bool",
                  "layout_version": "str"},
    "mig.destroy": {"gpu": "gpu", "instance": "str", "gi_id": "int"},
    "mig.set_mode": {"gpu": "gpu", "enabled": "bool", "reset": "bool", "destroy_idle": "bool"},
    "sim.add_process": {"gpu": "gpu", "used_mib": "int", "instance": "str", "pid": "int",
                        "util": "int"},
    "sim.set_process_memory": {"pid": "int", "used_mib": "int"},
    "sim.set_process_util": {"pid": "int", "util": "int"},
    "sim.remove_process": {"pid": "int"},
    "sim.fault": {"function": "function", "error": "error", "skip": "int", "count": "int"},
    "sim.hold": {"function": "function", "gate": "str"},
    "sim.clear_faults": {},
    "sim.health": {"gpu": "gpu", "reset": "bool", "temperature_c": "int", "power_mw": "int",
                   "power_limit_mw": "int", "throttle": "throttle"},
    "sim.ecc": {"gpu": "gpu", "corrected": "int", "uncorrected": "int"},
    "sim.xid": {"gpu": "gpu", "xid": "int", "instance": "str"},
    "sim.mode_waits_for_reset": {"gpu": "gpu", "waits": "bool"},
    "sim.reset_gpu": {"gpu": "gpu"},
    "job.launch": {"key": "str", "argv": "argv", "env": "env", "cwd": "dir", "name": "str",
                   "gpu": "gpu", "gpus": "gpus", "instance": "str", "mig": "mig",
                   "memory_mib": "int", "torch_fraction": "bool", "run_as": "str"},
    "job.stop": {"job": "job", "grace": "int", "reason": "str"},
    "job.get": {"job": "job"},
    "job.list": {"state": "state"},
    "job.logs": {"job": "job", "lines": "int", "follow": "bool", "bytes": "int"},
}
# The params that make a valid request together, where not all of a method's params do.
FORMS = {
    "job.launch": [("key", "argv", "gpu", "memory_mib", "env", "cwd", "name", "torch_fraction"),
                   ("key", "argv", "gpu", "mig"), ("key", "argv", "gpus", "memory_mib"),
                   ("key", "argv", "gpu", "instance")],
    "mig.destroy": [("gpu", "instance"), ("gpu", "gi_id")],
}
# Never carried out validly by the fuzzer: stopping the daemon, failing or holding NVML calls on
# purpose, or resetting a GPU under its jobs would end the run's meaning. They always carry a
# param they do not take.
NEVER_VALID = ("daemon.shutdown", "sim.fault", "sim.hold", "sim.mode_waits_for_reset",
               "sim.reset_gpu")
CHANGING = ("mig.apply", "mig.destroy", "mig.set_mode", "job.launch", "job.stop")
SIM_CHANGING = ("sim.add_process", "sim.set_process_memory", "sim.set_process_util",
                "sim.remove_process")


def hostile_value(rng: random.Random, kind: str) -> str:
    roll = rng.random()
    if kind in HOSTILE_INSIDE and roll < 0.4:
        template, inner = rng.choice(HOSTILE_INSIDE[kind])
        return template % hostile_value(rng, inner)
    if kind in CONFUSED and roll < 0.7:
        return rng.choice(CONFUSED[kind])
    return rng.choice(HOSTILE)


def hostile_params(rng: random.Random, method: str, refused: bool) -> str:
    """A params member as text; with ``refused`` it surely holds a param the method does not
    take, so the request is surely refused."""
    if rng.random() < 0.05:
        return rng.choice(['"params": [1, 2]', '"params": "x"', '"params": 7', '"params": true'])
    schema = SCHEMA.get(method, {})
    parts: List[str] = []
    if schema and rng.random() < 0.5:  # a valid request but for one param
        form = rng.choice(FORMS.get(method, [tuple(schema)]))
        target = rng.choice(form)
        for name in form:
            parts.append('"%s": %s' % (name, hostile_value(rng, schema[name]) if name == target
                                       else rng.choice(VALID[schema[name]])))
    else:
        for name, kind in schema.items():
            roll = rng.random()
            if roll < 0.3:
                continue
            parts.append('"%s": %s' % (name, hostile_value(rng, kind) if roll < 0.6
                                       else rng.choice(VALID[kind])))
    if refused or rng.random() < 0.15:
        parts.append('"%s": %s' % (rng.choice(["profil", "x", "__proto__", "\u00e9", ""]),
                                   rng.choice(HOSTILE + ["1"])))
    if parts and rng.random() < 0.1:  # a key twice
        parts.append(parts[0])
    return '"params": {%s}' % ", ".join(parts)


def hostile_request(rng: random.Random) -> Tuple[str, bool]:
    """One request object as text, and whether it has an id."""
    method = rng.choice(sorted(SCHEMA) + ["nope", "Hello", "mig.", "job.delete", "sim.*",
                                          "hello ", "daemon.restart"])
    method_text = json.dumps(method) if rng.random() > 0.05 else rng.choice(
        ["7", "null", "[]", '"\\ud800"', "NaN"])
    id_roll = rng.random()
    if id_roll < 0.15:
        id_text = None  # a notification
    elif id_roll < 0.25:
        id_text = rng.choice(["1.5", "true", "[1]", "{}", "NaN", '"' + "i" * 300 + '"', "null",
                              "1e400", "9" * 25, '"\\ud800"'])
    else:
        id_text = json.dumps(rng.choice([rng.randint(-5, 10 ** 6), "id-%d" % rng.randint(0, 99)]))
    # a notification is never answered: one that could change things is surely refused, so
    # that what it did is known (nothing)
    params = hostile_params(rng, method, method in NEVER_VALID or (
        id_text is None and method in CHANGING + SIM_CHANGING))
    members = ['"jsonrpc": %s' % ('"2.0"' if rng.random() > 0.05 else rng.choice(
        ['"1.0"', "2.0", "null"])), '"method": %s' % method_text, params]
    if id_text is not None:
        members.append('"id": %s' % id_text)
    if rng.random() < 0.05:
        members.append('"extra": 1')
    rng.shuffle(members)
    return "{%s}" % ", ".join(members), id_text is not None


def hostile_line(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.08:
        return rng.choice([
            "[" * 1000 + "]" * 1000, "[" * 100000, '{"a":' * 5000 + "1" + "}" * 5000,
            "not json", "{", "[]", "[[]]", '"hello"', "42", "null", "\\u0000",
            '{"jsonrpc": "2.0", "id": 1, "method": "hello"' + ', "id": 2}',
            "[" + ", ".join(['{"jsonrpc": "2.0", "id": %d, "method": "hello"}' % i
                             for i in range(rpc.MAX_BATCH + 1)]) + "]",
        ])
    if roll < 0.25:  # a batch
        return "[%s]" % ", ".join(hostile_request(rng)[0] for _ in range(rng.randint(1, 6)))
    return hostile_request(rng)[0]


def strict_json(raw: bytes) -> Any:
    """JSON as RFC 8259 has it: NaN, Infinity and -Infinity are not JSON."""
    def refuse(name: str) -> Any:
        raise AssertionError("the agent wrote %s, which is not JSON: %r" % (name, raw[:200]))
    return json.loads(raw, parse_constant=refuse)


def well_formed(answer: Any) -> List[Dict[str, Any]]:
    """The answers in one line (a batch answers with an array), each checked for shape."""
    answers = answer if isinstance(answer, list) else [answer]
    assert answers, "an empty array is never an answer"
    for one in answers:
        assert set(one) in ({"jsonrpc", "id", "result"}, {"jsonrpc", "id", "error"}), one
        assert one["jsonrpc"] == "2.0"
        assert one["id"] is None or isinstance(one["id"], (str, int))
        if "error" in one:
            err = one["error"]
            assert isinstance(err["code"], int) and isinstance(err["message"], str)
            assert err["code"] != rpc.INTERNAL_ERROR, err["message"]
            assert err["data"]["class"] == rpc.error_class(err["code"])
    return answers


class Session:
    """The agent under fuzz, read line by line; pushed notifications are set aside."""

    def __init__(self, agent):
        self.agent = agent
        self.sentinels = 0

    def lines_until_sentinel(self) -> List[Any]:
        """Answers to what was sent, up to the answer of a sentinel sent after it."""
        self.sentinels += 1
        tag = "sentinel-%d" % self.sentinels
        self.agent.send_raw(json.dumps({"jsonrpc": "2.0", "id": tag,
                                        "method": "daemon.version"}).encode() + b"\n")
        out = []
        while True:
            raw = self.agent.proc.stdout.readline()
            assert raw, "the agent closed its output: %s" % self.agent.proc.stderr.read()
            assert raw.endswith(b"\n")
            line = strict_json(raw)
            if isinstance(line, dict) and "id" not in line and "method" in line:
                continue  # pushed: snapshot, job, log
            if isinstance(line, dict) and line.get("id") == tag:
                assert "result" in line, line
                return out
            out.append(line)


def gpu_state(agent, stopping: Iterable[str] = ()) -> Any:
    """What must not change unless asked: each GPU's MIG mode and instances, and the running
    jobs but those asked to stop (a stopped job ends in its own time, after its answer)."""
    gpus = [(g["mig_mode"], g["mig_pending"], sorted(
        (i["uuid"] or "", i["profile"], i["start"]) for i in g.get("instances", [])))
        for g in agent.call("inventory")["gpus"]]
    running = sorted(j["id"] for j in agent.call("job.list")["jobs"]
                     if j["state"] == "running" and j["id"] not in stopping)
    return gpus, running




def succeeded(line: str, answers: List[Dict[str, Any]]) -> List[Tuple[str, Any]]:
    """(method, result) of each request of the line answered with success (matched by id)."""
    results = {a["id"]: a["result"] for a in answers if "result" in a}
    if not results:
        return []
    sent = json.loads(line)  # answered with success, so it parsed as the agent's JSON does
    return [(r["method"], results[r["id"]]) for r in (sent if isinstance(sent, list) else [sent])
            if isinstance(r, dict) and isinstance(r.get("id"), (str, int))
            and r["id"] in results]


@pytest.fixture
def fuzzed(start_agent):
    agent = start_agent("1xA100-80GB:mig,1xL4")
    agent.call("mig.apply", gpu=0, profile="3g.40gb", start=0)
    busy = agent.call("mig.apply", gpu=0, profile="1g.10gb", start=4)["instance"]
    agent.call("sim.add_process", gpu=0, instance=busy["uuid"], used_mib=100)
    agent.call("job.launch", key="fuzz-j1", gpu=1, memory_mib=100, argv=json.loads(SLEEPER))
    return agent


def test_the_fuzzer_covers_every_method_the_agent_serves(fuzzed):
    assert sorted(SCHEMA) == fuzzed.call("hello")["methods"]


@pytest.mark.parametrize("seed", SEEDS)
def test_hostile_lines_get_well_formed_answers_and_change_nothing_unasked(fuzzed, seed):
    rng = random.Random(seed)
    session = Session(fuzzed)
    stopping: Set[str] = set()
    before = gpu_state(fuzzed)
    for case in range(CASES_PER_SEED):
        line = hostile_line(rng)
        fuzzed.send_raw(line.encode("utf-8", "surrogatepass") + b"\n")
        got = session.lines_until_sentinel()
        assert len(got) <= 1, "one line, one answer line at most: %r" % line[:200]
        done = succeeded(line, well_formed(got[0]) if got else [])
        stopping |= {result["id"] for method, result in done if method == "job.stop"}
        after = gpu_state(fuzzed, stopping)
        if after != before:
            assert any(method in CHANGING for method, _ in done), \
                "case %d changed the GPU or the jobs unasked: %r" % (case, line[:300])
        before = after
    assert fuzzed.call("hello")["backend"] == "sim"


def test_a_bad_boolean_never_counts_as_true(fuzzed):
    """The string "false" once destroyed an instance; every wrong-typed flag is refused."""
    before = gpu_state(fuzzed)
    for flag in ('"false"', '"true"', "1", "0", '"no"', "[]", "{}"):
        for method, params in (
                ("mig.apply", '{"gpu": 0, "profile": "4g.40gb", "destroy_idle": %s}'),
                ("mig.plan", '{"gpu": 0, "profile": "4g.40gb", "destroy_idle": %s}'),
                ("mig.set_mode", '{"gpu": 0, "enabled": %s}'),
                ("job.launch", '{"key": "b", "gpu": 0, "argv": ["x"], "mig": {"profile": '
                               '"7g.80gb", "start": 0, "destroy_idle": %s}}'),
                ("job.logs", '{"job": "j1", "follow": %s}'),
                ("job.launch", '{"key": "t", "gpu": 1, "argv": ["x"], "memory_mib": 1, '
                               '"torch_fraction": %s}')):
            fuzzed.send_raw(('{"jsonrpc": "2.0", "id": 1, "method": "%s", "params": %s}\n' % (
                method, params % flag)).encode())
            error = fuzzed.read_reply()["error"]
            assert error["code"] == rpc.INVALID_PARAMS, (method, flag, error)
            assert "must be true or false" in error["message"]
    assert gpu_state(fuzzed) == before


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
def test_non_finite_numbers_anywhere_are_parse_errors(fuzzed, text):
    for line in ('{"jsonrpc": "2.0", "id": %s, "method": "hello"}',
                 '{"jsonrpc": "2.0", "id": 1, "method": "hello", "params": {"protocol": %s}}',
                 '[{"jsonrpc": "2.0", "id": 1, "method": "job.launch", "params": {"env": '
                 '{"a": [%s]}}}]'):
        fuzzed.send_raw((line % text).encode() + b"\n")
        reply = strict_json(fuzzed.proc.stdout.readline())
        assert reply["error"]["code"] == rpc.PARSE_ERROR and reply["id"] is None
        assert text.lstrip("-") in reply["error"]["message"] or "out of range" in reply[
            "error"]["message"]
    assert fuzzed.call("hello")["protocol"] == 1


# Values of the wrong type (or out of bounds) for each kind of param: each one must be refused
# as invalid params, whatever the method, with every other param valid.
WRONG_TYPE = {
    "bool": ['"false"', '"true"', "0", "1", "1.0", "[true]", "{}"],
    "int": ["1.0", '"1"', "true", "[1]", "{}", "2147483648", "-2147483649"],
    "str": ["1", "true", '["x"]', "{}", '"a\\u0000b"', '"\\ud800"', '"' + "s" * 5000 + '"'],
    "gpu": ["-1", "0.0", "true", "[0]", "{}", "2147483648", '"\\u0000"'],
    "profile": ["1", "true", "[]", '"\\ud800"'],
    "job": ["1", "true", "[]", "{}", '"\\u0000"'],
    "state": ['"nope"', "1", '"RUNNING"'],
    "dir": ["1", '"/tmp\\u0000"', '"tmp"', '"./x"'],
    "argv": ['"python3"', "[]", "[1]", "[true]", "{}", '["a\\u0000"]', '["\\ud800"]'],
    "env": ["[]", '"A=b"', '{"A": 1}', '{"A": true}', '{"": "x"}', '{"A=B": "x"}',
            '{"A": "\\u0000"}'],
    "gpus": ["[]", "1", "[true]", "[1.0]", '["\\u0000"]', "[-1]"],
    "mig": ["[]", '"4g.40gb"', '{"profile": "4g.40gb"}',
            '{"profile": "4g.40gb", "start": 0, "destroy_idle": "false"}',
            '{"profile": "4g.40gb", "start": 0, "destroy_idle": 1}',
            '{"profile": "4g.40gb", "start": "0", "destroy_idle": true}',
            '{"profile": 4, "start": 0}', '{"profile": "4g.40gb", "start": 0, "x": 1}',
            '{"profile": "4g.40gb", "start": 0, "layout_version": 7}'],
    "error": ["1.5", "true", "[]"], "function": ["1", "true", "[]"],
    "throttle": ['"sw_power_cap"', "1", "{}", "[1]", '["nope"]', '[{"a": 1}]', "[null]"],
}


def valid_requests(agent) -> List[Tuple[str, Dict[str, str]]]:
    """A valid request of every form of every method (params as JSON text); each param a
    kind of SCHEMA's. The wrong value of one param is all that is wrong then."""
    gpu0 = agent.call("inventory")["gpus"][0]
    idle = next(i for i in gpu0["instances"] if not i["busy"])
    busy = next(i for i in gpu0["instances"] if i["busy"])
    pid = agent.call("snapshot")["gpus"][0]["processes"][0]["pid"]
    launch = {"key": '"sweep"', "argv": SLEEPER, "gpu": "1", "memory_mib": "100", "env": "{}",
              "cwd": '"/tmp"', "name": '"x"', "torch_fraction": "false"}
    return [
        ("hello", {"protocol": "1", "client": '"x"'}),
        ("mig.plan", {"gpu": "0", "profile": '"1g.10gb"', "start": "6", "destroy_idle": "false"}),
        ("mig.apply", {"gpu": "0", "profile": '"1g.10gb"', "start": "6", "destroy_idle": "true",
                       "layout_version": json.dumps(gpu0["layout_version"])}),
        ("mig.destroy", {"gpu": "0", "instance": json.dumps(idle["uuid"])}),
        ("mig.destroy", {"gpu": "0", "gi_id": str(idle["gi_id"])}),
        ("mig.set_mode", {"gpu": "0", "enabled": "true"}),
        ("sim.add_process", {"gpu": "0", "used_mib": "1", "instance": json.dumps(busy["uuid"]),
                             "pid": "4000000", "util": "0"}),
        ("sim.set_process_memory", {"pid": str(pid), "used_mib": "100"}),
        ("sim.set_process_util", {"pid": str(pid), "util": "50"}),
        ("sim.remove_process", {"pid": "4000001"}),
        ("sim.fault", {"function": '"nvmlDeviceSetMigMode"', "error": '"NVML_ERROR_UNKNOWN"',
                       "skip": "100000", "count": "1"}),
        ("sim.hold", {"function": '"nvmlDeviceGetCount"', "gate": '"/"'}),  # "/" is: no wait
        ("sim.health", {"gpu": "0", "reset": "false", "temperature_c": "40", "power_mw": "1000",
                        "power_limit_mw": "400000", "throttle": '["sw_power_cap"]'}),
        ("sim.ecc", {"gpu": "0", "corrected": "1", "uncorrected": "0"}),
        ("sim.xid", {"gpu": "0", "xid": "79", "instance": json.dumps(busy["uuid"])}),
        ("sim.mode_waits_for_reset", {"gpu": "0", "waits": "false"}),
        ("sim.reset_gpu", {"gpu": "0"}),
        ("job.launch", launch),
        ("job.launch", dict({k: launch[k] for k in ("key", "argv", "memory_mib")}, gpus="[1]")),
        ("job.launch", {"key": '"sweep-mig"', "argv": SLEEPER, "gpu": "0",
                        "mig": '{"profile": "4g.40gb", "start": 0, "destroy_idle": true}'}),
        ("job.launch", {"key": '"sweep-inst"', "argv": SLEEPER, "gpu": "0",
                        "instance": json.dumps(idle["uuid"])}),
        ("job.stop", {"job": '"j1"', "grace": "5", "reason": '"x"'}),
        ("job.get", {"job": '"j1"'}),
        ("job.list", {"state": '"running"'}),
        ("job.logs", {"job": '"j1"', "lines": "5", "follow": "false"}),
    ]


def test_every_param_of_every_method_refuses_a_value_of_the_wrong_type(fuzzed):
    """Exhaustive: each param of each valid request, in turn, given each wrong value of its
    kind; and every method given a param it does not take. Every one is invalid params and
    changes nothing."""
    before = gpu_state(fuzzed)
    requests = valid_requests(fuzzed)
    assert {m for m, _ in requests} | {m for m, s in SCHEMA.items() if not s} == set(SCHEMA)
    cases = [(method, dict(params, **{name: wrong}))
             for method, params in requests for name in params
             for wrong in WRONG_TYPE[SCHEMA[method][name]]]
    cases += [(method, {"not_a_param": "1"}) for method in sorted(SCHEMA)]
    for n, (method, params) in enumerate(cases):
        if params.get("key", "").startswith('"sweep'):  # a key of its own: never a retry
            params = dict(params, key='"sweep-%d"' % n)
        line = '{"jsonrpc": "2.0", "id": %d, "method": "%s", "params": {%s}}' % (
            n, method, ", ".join('"%s": %s' % kv for kv in params.items()))
        fuzzed.send_raw(line.encode() + b"\n")
        answer = strict_json(fuzzed.proc.stdout.readline())
        assert answer.get("error", {}).get("code") == rpc.INVALID_PARAMS, (line[:300], answer)
        assert answer["error"]["data"]["class"] == rpc.REQUEST
    assert gpu_state(fuzzed) == before
    assert len(cases) > 300
