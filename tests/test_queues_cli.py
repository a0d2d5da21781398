"""``fractui queues``: each queue of a researcher's config (the store, the teams and the queues,
no host) with what a job of it gets, its jobs waiting and on hosts and the longest wait, and
whether a host could serve it, as ``submit`` judges it. Real stores (an SQLite file, and a
PostgreSQL database read as a team member's role) holding ``test_teams_cli.fill``'s jobs in
every state; the counts are checked against numbers worked out by hand."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sqlite3
from typing import Dict, List

from fractui.cells import cell_len
from fractui.config import HostConfig
from fractui.servable import sim_facts
from fractui.store import open_store
from tests.cli_run import in_process, leaks
from tests.conftest import REPO
from tests.test_teams_cli import _config, fill, member_of_nlp

# beside test_teams_cli's quarter and half: a MIG profile on one host's A100s, more whole GPUs
# than any host has, and a host the store keeps nothing of
MORE = ('[[queues]]\nname = "mig3"\nmig = "3g.40gb"\nisolation = "mig"\npriority = 5\n'
        'hosts = ["gpu-a"]\ngpu_models = ["A100-80GB"]\nteam = "vision"\n'
        '[[queues]]\nname = "whole8"\ngpus = 8\n'
        '[[queues]]\nname = "c-only"\ngpu = 0.5\nhosts = ["gpu-c"]\n')
# (waiting, running) of each queue, by hand from ``fill``: quarter holds a, s (stopping), f
# on hosts and d, h, i waiting; half b (placed) and c; "gone" the job of a queue the config
# lacks
BY_HAND = {"quarter": (3, 3), "half": (0, 2), "mig3": (0, 0), "whole8": (0, 0),
           "c-only": (0, 0)}
NEVER = ("never served: no host in the fleet could ever hold what queue whole8 asks for (8 "
         "GPUs, isolation any): a job's GPUs are all on one host and of one model, and the most "
         "of one model a host has is 2; "
         "the fleet has 2x A100-80GB (MIG), 1x L4; at most 32 CPUs and 256 GiB RAM on a host")
UNKNOWN = ("not known yet: the store keeps no inventory of gpu-c (a scheduler records a host "
           "once it reaches it)")


def _kept(store) -> None:
    """What a lease holder keeps of gpu-a (two A100s in MIG mode) and gpu-b (an L4)."""
    for name, sim in (("gpu-a", "2xA100-80GB:mig"), ("gpu-b", "1xL4")):
        store.record_inventory(name, dict(sim_facts(HostConfig(name=name, sim=sim)),
                                          cpus=32, memory_mib=262144))


def _rows(out: str) -> Dict[str, List[str]]:
    lines = out.splitlines()
    assert lines[0].split() == ["QUEUE", "PORTION", "TEAM", "WAITING", "RUNNING", "LONGEST",
                                "SERVABLE", "ISOLATION", "PRIORITY", "WHERE"], out
    return {line.split()[0]: line.split() for line in lines[1:]
            if ": " not in line.split("  ")[0]}


def test_a_researcher_lists_each_queue_what_it_gives_and_its_waits(tmp_path, capfd,
                                                                   monkeypatch):
    """A researcher's config of no host: each queue with its portion, team, filters, the jobs
    waiting and on hosts (the hand-worked numbers), h's 15 minutes the longest wait, and
    whether a host could serve it by what the store keeps: whole8 never (and submit refuses it
    in the same words), c-only not known, the job of a queue gone from the config listed
    too."""
    db = tmp_path / "store.db"
    store = open_store("sqlite://%s" % db)
    ids = fill(store, "vision", "nlp")
    store.submit("gone", "vision", "old", ["sleep", "1"], {"gpu": 0.25}, "ops")
    _kept(store)
    store.close()
    with sqlite3.connect(str(db)) as conn:  # h has waited 15 minutes
        conn.execute("UPDATE jobs SET submitted_at = submitted_at - 900 WHERE id = ?",
                     (ids["h"],))
    config = _config(tmp_path / "config.toml", "sqlite://%s" % db, {"vision": 1.5, "nlp": 2},
                     MORE)
    code, out, err = in_process(capfd, ["--config", str(config), "queues", "--json"])
    assert code == 0 and not leaks(err), err
    record = json.loads(out)
    assert record["scheduler"] is None and record["as_of"] > 0
    got = {q["name"]: q for q in record["queues"]}
    assert list(got) == ["quarter", "half", "mig3", "whole8", "c-only", "gone"]
    for name, (waiting, running) in BY_HAND.items():
        assert (got[name]["waiting"], got[name]["running"]) == (waiting, running), got[name]
    assert got["quarter"]["longest_wait_s"] >= 900 and got["half"]["longest_wait_s"] is None
    assert {n: (q["servable"], q["servable_why"]) for n, q in got.items()} == {
        "quarter": (True, None), "half": (True, None), "mig3": (True, None),
        "whole8": (False, NEVER), "c-only": (None, UNKNOWN),
        "gone": (None, "not in this config: the store holds active jobs of it, submitted "
                       "under a config that had it")}
    assert got["mig3"] == dict(got["mig3"], mig="3g.40gb", portion="3g.40gb", isolation="mig",
                               priority=5, hosts=["gpu-a"], gpu_models=["A100-80GB"],
                               team="vision", gpu=0.0, gpus=0, configured=True)
    assert set(got["gone"]) == set(got["quarter"]) and got["gone"]["configured"] is False
    assert (got["gone"]["waiting"], got["gone"]["portion"], got["gone"]["gpu"]) == (1, None, None)

    code, out, err = in_process(capfd, ["--config", str(config), "queues"])
    assert code == 0 and not leaks(err), err
    rows = _rows(out)
    assert re.fullmatch(r"1[5-9]m[0-9]{2}s", rows["quarter"][6]), out  # h's, the longest
    assert rows["quarter"] == ["quarter", "0.25", "GPU", "-", "3", "3", rows["quarter"][6],
                               "yes", "any", "0", "any", "host"], out
    assert rows["mig3"] == ["mig3", "3g.40gb", "vision", "0", "0", "—", "yes", "mig", "5",
                            "hosts", "gpu-a;", "models", "A100-80GB"], out
    assert rows["whole8"] == ["whole8", "8", "GPUs", "-", "0", "0", "—", "no", "any", "0",
                              "any", "host"], out
    assert rows["gone"] == ["gone", "?", "?", "1", "0", rows["gone"][5]] + ["?"] * 4, out
    assert "whole8: " + NEVER in out.splitlines() and "c-only: " + UNKNOWN in out.splitlines()

    code, out, err = in_process(capfd, ["--config", str(config), "submit", "--queue", "whole8",
                                        "--team", "vision", "--", "x"])
    assert code == 2 and NEVER[len("never served: "):] in err, err  # the same judgment

    monkeypatch.setenv("COLUMNS", "50")  # the table is cut to the terminal's width
    code, out, err = in_process(capfd, ["--config", str(config), "queues"])
    table = out.splitlines()[:7]
    assert code == 0 and all(cell_len(line) <= 50 for line in table), out
    assert table[0].startswith("QUEUE") and table[0].endswith("…"), out


def test_a_team_member_on_postgresql_reads_every_queue(tmp_path, capfd, pg_server):
    """A role in team nlp alone, no admin, reads every queue's waits, vision's jobs too:
    reading the store's jobs is everyone's who may open it."""
    m = member_of_nlp(pg_server)
    store = open_store(pg_server.url(m.db))
    try:
        _kept(store)
    finally:
        store.close()
    config = _config(tmp_path / "member.toml", pg_server.url(m.db, user=m.role),
                     {m.names["vision"]: 1.5, m.names["nlp"]: 2}, MORE.replace(
                         '"vision"', json.dumps(m.names["vision"])))
    code, out, err = in_process(capfd, ["--config", str(config), "queues", "--json"])
    assert code == 0 and not leaks(err), err
    got = {q["name"]: q for q in json.loads(out)["queues"]}
    assert {n: (q["waiting"], q["running"]) for n, q in got.items()} == BY_HAND
    assert got["whole8"]["servable_why"] == NEVER and got["quarter"]["servable"] is True


def test_no_queues_bad_words_and_no_store_are_said_never_a_traceback(tmp_path, capfd):
    store_path = tmp_path / "none" / "store.db"
    url = "sqlite://%s" % store_path
    config = _config(tmp_path / "config.toml", url, {"vision": 1})
    bare = tmp_path / "bare.toml"
    bare.write_text("[store]\nurl = %s\n" % json.dumps(url))
    for argv, code, said in (
            ([bare], 0, "fractui: the config has no [[queues]]: nothing to submit to (an "
             "admin's config lists them; copy its [[queues]] into yours)\n"),
            ([config, "--jsn"], 2, "unrecognized arguments: --jsn (did you mean --json?)"),
            ([config, "quarter"], 2, "unrecognized arguments: quarter"),
            ([config], 1, "fractui: store %s: there is no store here yet" % store_path)):
        got, out, err = in_process(capfd, ["--config", str(argv[0]), "queues", *argv[1:]])
        assert (got, out) == (code, "") and said in err and not leaks(err), (argv, err)
    assert not store_path.parent.exists()  # a verb that only reads makes no store
    got, out, err = in_process(capfd, ["--config", str(bare), "queues", "--json"])
    assert got == 0 and json.loads(out) == {"queues": [], "as_of": None, "scheduler": None}


def test_queues_is_in_the_help(capfd):
    code, out, _ = in_process(capfd, ["--help"])
    assert code == 0 and "queues" in out.split() and "whether any host could serve it" in " ".join(
        out.split()), out



def test_the_verb_loads_neither_textual_nor_ssh(tmp_path):
    """It reads the TUI's standing module, which is pure, and reaches only the store: neither
    Textual nor paramiko is loaded (a third of a second on each run)."""
    db = tmp_path / "store.db"
    open_store("sqlite://%s" % db).close()
    config = _config(tmp_path / "config.toml", "sqlite://%s" % db, {"vision": 1})
    done = subprocess.run([sys.executable, "-c", (
        "import sys\nfrom fractui.cli import main\ncode = main(sys.argv[1:])\n"
        "sys.stdout.flush()\nprint(code, 'textual' in sys.modules, 'paramiko' in sys.modules, "
        "file=sys.stderr)"), "--config", str(config), "queues", "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=120, stdin=subprocess.DEVNULL)
    assert done.stderr == "0 False False\n", done.stderr


def test_a_queue_the_config_lacks_is_named_on_one_line_without_its_escapes(tmp_path, capfd):
    """A store's queue name is the store's word, not the config's: one with an escape and a
    line break in it (a job of it still active) is said on one line, the table's and the
    line after it alike, so it can neither colour the terminal nor forge a line of its own
    (here, one saying quarter is never served); --json keeps it whole."""
    db = tmp_path / "store.db"
    hostile = "ev\x1b[31mil\nquarter: never served: forged"
    store = open_store("sqlite://%s" % db)
    store.submit(hostile, "vision", "old", ["sleep", "1"], {"gpu": 0.25}, "ops")
    store.close()
    config = _config(tmp_path / "config.toml", "sqlite://%s" % db, {"vision": 1})
    code, out, err = in_process(capfd, ["--config", str(config), "queues"])
    assert code == 0 and "\x1b" not in out, out
    assert not any(line.startswith("quarter: never") for line in out.splitlines()), out
    assert "ev [31mil quarter: never served: forged: not in this config" in out, out
    code, out, err = in_process(capfd, ["--config", str(config), "queues", "--json"])
    assert code == 0 and [q["name"] for q in json.loads(out)["queues"]][-1] == hostile, out
