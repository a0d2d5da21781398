"""``fractui cordon|drain|uncordon HOST [GPU]`` and what the other verbs make of a cordon
(status, place), as real processes on a simulated fleet and a real SQLite store."""

from __future__ import annotations

import json
import sqlite3

from fractui.config import QueueConfig
from fractui.store import SqliteStore, sqlite_url
from tests import localfleet
from fractui.words import local_time
from tests.cli_run import in_process

local_fleet = localfleet.local_fleet
WHOLE = QueueConfig(name="whole", gpus=1)


def said(done) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout + done.stderr


def test_cordon_drain_uncordon_as_the_admin_recorded_shown_and_lifted(local_fleet):
    f = local_fleet({"gpu-a": "2xL4", "gpu-b": "1xL4"}, [WHOLE])
    job = f.submit("whole")
    f.until(lambda: f.states()[job.id] == "running")
    host = f.store.get(job.id).slot.host
    gpu = f.store.get(job.id).slot.gpus[0]
    done = f.fractui("drain", host)
    assert done.returncode == 0, said(done)
    assert done.stdout == "%s draining: the scheduler places and launches nothing new there; " \
        "what runs there runs on (job %d); fractui status says drained once it has ended\n" % (
            host, job.id)
    other = "gpu-b" if host == "gpu-a" else "gpu-a"
    done = f.fractui("cordon", other, "0", "--json")
    assert done.returncode == 0, said(done)
    record = json.loads(done.stdout)
    assert (record["host"], record["gpu"], record["mode"], record["state"], record["jobs"]) == (
        other, 0, "cordon", "cordoned", [])
    assert record["actor"].endswith("@" + __import__("socket").gethostname())
    done = f.fractui("status")
    assert done.returncode == 0, said(done)
    lines = done.stdout.splitlines()
    assert any(line.startswith(host) and "[draining]" in line for line in lines), done.stdout
    assert any(line.strip().startswith("gpu0") and "[cordoned]" in line
               for line in lines[[l.split()[0] for l in lines].index(other):]), done.stdout
    status = {h["name"]: h for h in json.loads(f.fractui("status", "--json").stdout)["hosts"]}
    assert status[host]["out_of_service"] == "draining"
    assert [g["out_of_service"] for g in status[other]["gpus"]][0] == "cordoned"
    f.store.ended(job.id, ("running",), "done", None, "test", "over", "end")
    status = {h["name"]: h for h in json.loads(f.fractui("status", "--json").stdout)["hosts"]}
    assert status[host]["out_of_service"] == "drained"
    assert [e.action for e in f.store.audit_log() if e.job is None and e.action != "lease"] == [
        "drain", "cordon"]
    done = f.fractui("uncordon", host, str(gpu))
    assert done.stdout == "%s gpu%d was in service: nothing to uncordon\n" % (host, gpu)
    assert done.stderr == "fractui: %s is still drained as a whole: fractui uncordon " \
        "%s puts it back\n" % (host, host)
    done = f.fractui("uncordon", host)
    assert (done.returncode, done.stdout) == (0, "back in service: %s\n" % host)
    assert [(c.host, c.gpu) for c in f.store.cordons()] == [(other, 0)]


def test_audit_says_which_host_or_gpu_a_cordon_drain_or_uncordon_named(local_fleet,
                                                                       monkeypatch):
    """audit's WHY of a cordon read "cordoned by ops@head", naming no host or GPU (only
    --json's detail had them): the table now begins it with the one named, a host's name
    from the store with each character a terminal would not show as written a "?"."""
    f = local_fleet({"gpu-a": "2xL4", "gpu-b": "1xL4"}, [WHOLE])
    f.scheduler.step()  # the inventory kept
    for argv in (["drain", "gpu-b"], ["cordon", "gpu-a", "1"], ["uncordon", "gpu-a"]):
        done = f.fractui(*argv)
        assert done.returncode == 0, (argv, said(done))
    f.store.cordon("gpu-\x1b[2Jz", None, "cordon", "ops@x", "fan")  # (no host of the config)
    monkeypatch.setenv("COLUMNS", "200")  # (lines whole, whatever the process inherits)
    done = f.fractui("audit")
    assert done.returncode == 0 and "\x1b" not in done.stdout, said(done)
    whys = {}
    for line in done.stdout.splitlines()[1:]:
        action, why = line.split(None, 5)[4:]  # (TIME is 3 words; none of these has a JOB)
        whys.setdefault(action, []).append(why)
    actor = [e.actor for e in f.store.audit_log() if e.action == "drain"][0]
    assert whys["drain"] == ["gpu-b: drained by %s" % actor], done.stdout
    assert whys["cordon"] == ["gpu-a gpu1: cordoned by %s" % actor, "gpu-?[2Jz: fan"], done.stdout
    assert whys["uncordon"] == ["gpu-a: uncordoned by %s" % actor], done.stdout
    # --json keeps the words as recorded, the host and GPU in the detail
    records = json.loads(f.fractui("audit", "--json").stdout)["audit"]
    assert [(r["why"], r["detail"]) for r in records if r["action"] == "drain"] == [
        ("drained by %s" % actor, {"host": "gpu-b", "gpu": None})]


def test_audit_of_a_cordon_whose_detail_is_no_object_says_its_words_as_recorded(tmp_path,
                                                                               capfd):
    """A cordon's audit entry whose detail is JSON but no object (a store written by hand or
    by another program: a list, null, a string; fractui writes an object) made ``audit`` an
    internal error, "a bug in fractui" (exit 70), as the WHY looked up its host there; before
    the WHY named its host it was printed. Its words are shown as recorded, as of a detail
    that names no host."""
    path = tmp_path / "store.db"
    store = SqliteStore(str(path))
    for why in ("a list", "null", "a string"):
        store.cordon("gpu-a", None, "cordon", "ops@head", why)
    store.close()
    with sqlite3.connect(str(path)) as db:
        for why, detail in (("a list", '["gpu-a", 1]'), ("null", "null"),
                            ("a string", '"gpu-a"')):
            db.execute("UPDATE audit SET detail = ? WHERE why = ?", (detail, why))
    db.close()
    config = tmp_path / "config.toml"
    config.write_text("[store]\nurl = %s\n" % json.dumps(sqlite_url(str(path))))
    code, out, err = in_process(capfd, ["--config", str(config), "audit"])
    assert (code, err) == (0, ""), (code, err)
    assert sorted(line.split("  ops@head  cordon  ")[1].strip()
                  for line in out.splitlines()[1:]) == ["a list", "a string", "null"], out


def test_placing_by_hand_on_a_cordoned_gpu_is_refused_with_the_reason(local_fleet):
    f = local_fleet({"gpu-a": "2xL4"}, [WHOLE])
    f.scheduler.step()  # the inventory kept
    job = f.submit("whole")
    f.store.cordon("gpu-a", 1, "cordon", "ops@x", "fan")
    done = f.fractui("place", str(job.id), "gpu-a", "1")
    assert done.returncode == 1, said(done)
    assert said(done) == "fractui: not placed: gpu-a gpu1 is cordoned (by ops@x): it takes no " \
        "new work until an admin uncordons it (fractui uncordon gpu-a 1)\n"
    assert f.store.get(job.id).state == "pending"
    done = f.fractui("place", str(job.id), "gpu-a", "0")
    assert done.returncode == 0, said(done)


TYPO = "unknown host 'gpu-z' (did you mean 'gpu-a'? known: gpu-a)"


def test_usage_errors_exit_2_with_a_clear_message_and_touch_nothing(local_fleet):
    f = local_fleet({"gpu-a": "2xL4"}, [WHOLE])
    f.scheduler.step()  # the inventory kept: gpu-a has two GPUs
    for argv, words in ((["cordon"], "the following arguments are required: HOST"),
                        (["drain", "gpu-z"], TYPO),
                        (["uncordon", "gpu-z"], TYPO),
                        (["cordon", "gpu-a", "two"], "GPU is an index here, not 'two'"),
                        (["cordon", "gpu-a", "0", "1"], "unrecognized arguments: 1")):
        done = f.fractui(*argv)
        assert done.returncode == 2, (argv, said(done))
        assert words in done.stderr, (argv, done.stderr)
        assert "Traceback" not in done.stderr
    # a GPU the host does not have is the fleet's fact, as in place, move, launch and mig
    done = f.fractui("drain", "gpu-a", "5")
    assert done.returncode == 1, said(done)
    assert "gpu-a has no GPU 5: it has GPUs 0 to 1" in done.stderr, done.stderr
    assert f.store.cordons() == []


def test_status_shows_the_hosts_when_the_store_cannot_be_read_and_says_why(local_fleet, tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    f = local_fleet({"gpu-a": "1xL4"}, [WHOLE])
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"PK\x03\x04 not a store" * 64)
    config = tmp_path / "junk.toml"
    config.write_text(open(f.write_config()).read().replace(
        f.config.store.url, "sqlite://" + str(junk)))
    done = subprocess.run([sys.executable, "-m", "fractui", "--config", str(config), "status"],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, said(done)
    assert done.stdout.startswith("gpu-a            online")
    assert done.stderr.startswith(
        "fractui: cordons and unheld copies not shown: store %s: " % junk), done.stderr
    assert "[" not in done.stdout  # nothing marked


def test_audit_cuts_no_time_action_or_job_number_however_long(tmp_path, capfd):
    """TIME was cut to 25 characters: an entry dated after the year 9999 (a store written by
    hand, a clock far ahead) read "10001-02-04 00:00:00 +00…", another time. A time, an
    action and a job's number are the row's point and never cut; the actor, a name, is
    still cut at 40, said with "…"."""
    path = tmp_path / "store.db"
    store = SqliteStore(str(path))
    store.cordon("gpu-a", None, "cordon", "ops@" + "h" * 60, "fan")
    store.close()
    far, job = 253402300800.0 + 86400 * 400, 2 ** 63 - 1
    with sqlite3.connect(str(path)) as db:
        db.execute("UPDATE audit SET time = ?, job = ?", (far, job))
    db.close()
    config = tmp_path / "config.toml"
    config.write_text("[store]\nurl = %s\n" % json.dumps(sqlite_url(str(path))))
    code, out, err = in_process(capfd, ["--config", str(config), "audit"])
    assert (code, err) == (0, ""), (code, err)
    row = out.splitlines()[1].split()
    assert row[:3] == local_time(far).split() and row[0].startswith("1000"), out
    assert row[4:6] == ["cordon", str(job)], out
    assert row[3] == "ops@" + "h" * 35 + "…", out
