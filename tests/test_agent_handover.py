"""A running daemon always runs the agent's current code and settings: the bridge hands over on
any difference (re-adopting every job); the settings come from the host's config entry; the job
table is migrated in place; a job starts from a declared environment."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time

import pytest

from fractui.config import HostConfig
from fractui.fleet.host import agent_args
from remote_agent.daemon.paths import AgentPaths, code_hash, runtime_dir, tmp_socket_dir
from remote_agent.daemon.settings import AgentSettings
from remote_agent.jobs import store as job_store
from tests.agent_table import set_back
from tests.conftest import REPO, AgentProcess
from tests.test_agent_full_disk import NO_ROOM, NO_ROOM_READ
from tests.test_job_supervision import daemon_pid_of, fill, wait_until
from tests.test_jobs import alive, assert_adopted_then_exit, launch_held_jobs, script, wait_job


def copy_of_the_agent(tmp_path, change: str = "", module: str = "jobs/env.py") -> str:
    """The agent's code in another place, with ``change`` appended to one module."""
    root = tmp_path / "code"
    shutil.copytree(os.path.join(REPO, "remote_agent"), root / "remote_agent",
                    ignore=shutil.ignore_patterns("__pycache__"))
    if change:
        with open(root / "remote_agent" / module, "a") as f:
            f.write(change)
    return str(root)


def test_the_code_hash_is_stable_and_follows_any_change(start_agent, tmp_path):
    first = start_agent("1xL4", str(tmp_path / "a"))
    info = first.call("daemon.version")
    assert info["code_hash"] == code_hash()
    second = start_agent("1xL4", str(tmp_path / "b"))  # another daemon, started later
    assert second.call("daemon.version")["code_hash"] == info["code_hash"]
    same = start_agent("1xL4", str(tmp_path / "c"), code_root=copy_of_the_agent(tmp_path / "1"))
    assert same.call("daemon.version")["code_hash"] == info["code_hash"]  # content, not place
    changed = start_agent("1xL4", str(tmp_path / "d"),
                          code_root=copy_of_the_agent(tmp_path / "2", "# a comment\n"))
    assert changed.call("daemon.version")["code_hash"] != info["code_hash"]


def test_changed_code_of_the_same_version_takes_over_and_adopts_every_job(start_agent,
                                                                          tmp_path):
    state = str(tmp_path / "host")
    agent = start_agent("1xA100-80GB:mig,1xL4", state)
    old = agent.call("daemon.version")
    release = tmp_path / "release"
    launched = launch_held_jobs(agent, release, (0, 3, 8))
    code = copy_of_the_agent(tmp_path, "# changed\n")
    changed = start_agent(None, state, code_root=code)
    info = changed.call("daemon.version")
    assert info["version"] == old["version"] and info["code_hash"] != old["code_hash"]
    assert info["pid"] != old["pid"] and not alive(old["pid"])
    assert "it runs other code" in handover_words(changed)
    assert_adopted_then_exit(start_agent(None, state, code_root=code), release, launched)


@pytest.mark.skipif(runtime_dir().path == tmp_socket_dir(),
                    reason="agents here keep their sockets in /tmp/fractui-UID, as earlier ones")
def test_a_daemon_of_an_earlier_agent_listening_in_tmp_is_found_and_handed_over(start_agent,
                                                                                tmp_path):
    """Agents up to 0.1.0 kept every socket in /tmp/fractui-UID: a daemon of one still running
    there is found, and the bridge hands over from it (its jobs re-adopted) as from any other
    code, to a daemon listening in the runtime dir."""
    state = str(tmp_path / "host")
    earlier = copy_of_the_agent(tmp_path, "AgentPaths.socket_dir = property("
                                "lambda self: tmp_socket_dir())\n", "daemon/paths.py")
    agent = start_agent("1xA100-80GB:mig,1xL4", state, code_root=earlier)
    old = agent.call("daemon.version")
    paths = AgentPaths(state)
    assert stat.S_ISSOCK(os.lstat(paths.socket_in(tmp_socket_dir())).st_mode)
    release = tmp_path / "release"
    launched = launch_held_jobs(agent, release, (0, 5))
    current = start_agent(None, state)
    info = current.call("daemon.version")
    assert info["pid"] != old["pid"] and not alive(old["pid"])
    assert "it runs other code" in handover_words(current)
    assert stat.S_ISSOCK(os.lstat(paths.socket).st_mode)
    assert paths.socket_dir == runtime_dir().path
    assert not os.path.lexists(paths.socket_in(tmp_socket_dir()))  # the old daemon took it
    assert_adopted_then_exit(start_agent(None, state), release, launched)


def handover_words(agent: AgentProcess) -> str:
    """What a bridge said on stderr about handing over (it is closed to read it all)."""
    agent.proc.stdin.close()
    agent.proc.wait(timeout=10)
    return agent.proc.stderr.read().decode()


def test_changed_settings_reach_the_running_daemon(start_agent, tmp_path, monkeypatch):
    pipes = tmp_path / "mps"
    pipes.mkdir()
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(pipes))
    state = str(tmp_path / "host")
    agent = start_agent("1xA100-80GB:mig,1xL4", state)
    old = agent.call("daemon.version")
    assert old["settings"] == AgentSettings().effective("sim")
    assert "mps" not in agent.call("hello")["gpus"][1]["cap_layers"]
    release = tmp_path / "release"
    launched = launch_held_jobs(agent, release, (0, 6))
    words = ["--mps", "--watchdog-grace-s", "2.5", "--retention-hours", "12",
             "--log-max-mib", "8"]
    newer = start_agent(None, state, *words)
    info = newer.call("daemon.version")
    assert info["pid"] != old["pid"] and info["code_hash"] == old["code_hash"]
    assert info["settings"] == AgentSettings(mps=True, watchdog_grace_s=2.5,
                                             retention_hours=12.0,
                                             log_max_mib=8).effective("sim")
    assert "mps" in newer.call("hello")["gpus"][1]["cap_layers"]  # in force, not just told
    again = start_agent(None, state, *words)  # the same settings: the same daemon
    assert again.call("daemon.version")["pid"] == info["pid"]
    assert_adopted_then_exit(again, release, launched)
    said = handover_words(newer)
    assert "its settings differ: log_max_mib 64, now 8; mps False, now True" in said


def test_every_agent_setting_of_a_host_entry_reaches_its_daemon(tmp_path):
    cfg = HostConfig(name="sim", transport="local", sim="1xL4",
                     state_dir=str(tmp_path / "host"), cgroup_parent="none", log_max_mib=3,
                     retention_hours=2.0, watchdog_grace_s=0.5, usage_sample_s=2.0,
                     hami_core_lib=str(tmp_path / "libvgpu.so"), mps=True)
    args = agent_args(cfg, cfg.state_dir)
    proc = subprocess.Popen([sys.executable, "-m", "remote_agent"] + args, cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        proc.stdin.write(b'{"jsonrpc": "2.0", "id": 1, "method": "daemon.version"}\n')
        proc.stdin.flush()
        info = json.loads(proc.stdout.readline())["result"]
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
        from tests.conftest import stop_host
        stop_host(cfg.state_dir)
    assert info["settings"] == cfg.agent_settings().effective("sim") == {
        "mps": True, "hami_core_lib": str(tmp_path / "libvgpu.so"), "cgroup_parent": None,
        "log_max_mib": 3, "retention_hours": 2.0, "watchdog_grace_s": 0.5,
        "usage_sample_s": 2.0}


# The job table as the first release of the agent created it (before numbered migrations).
FIRST_SCHEMA = """CREATE TABLE IF NOT EXISTS jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL UNIQUE,
        fingerprint TEXT NOT NULL,
        name TEXT NOT NULL,
        argv TEXT NOT NULL,
        env TEXT NOT NULL,
        cwd TEXT,
        gpus TEXT NOT NULL,
        gpu_uuids TEXT NOT NULL,
        instance TEXT,
        mig TEXT,
        memory_mib INTEGER,
        caps TEXT NOT NULL DEFAULT '[]',
        cap_notes TEXT NOT NULL DEFAULT '[]',
        state TEXT NOT NULL,
        exit_code INTEGER,
        reason TEXT,
        stop_reason TEXT,
        pid INTEGER,
        created_at REAL NOT NULL,
        started_at REAL,
        ended_at REAL
    );
    CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);"""


def first_release_table(path: str) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(FIRST_SCHEMA)
        db.execute("INSERT INTO jobs (key, fingerprint, name, argv, env, cwd, gpus, gpu_uuids, "
                   "memory_mib, caps, state, exit_code, created_at, started_at, ended_at) "
                   "VALUES ('k-old', 'f', 'old', '[\"true\"]', '{}', NULL, '[0]', '[\"GPU-x\"]', "
                   "100, '[\"watchdog\"]', 'exited', 0, ?, ?, ?)",
                   (time.time() - 3, time.time() - 2, time.time() - 1))
    os.chmod(path, 0o600)


def test_a_table_of_the_first_release_is_upgraded_in_place(start_agent, tmp_path):
    state = tmp_path / "host"
    state.mkdir(mode=0o700)
    first_release_table(str(state / "jobs.db"))
    agent = start_agent("1xL4", str(state))
    (old,) = agent.call("job.list")["jobs"]
    assert (old["id"], old["key"], old["state"], old["exit_code"], old["run_as"],
            old["cgroup"], old["usage"]) == ("j1", "k-old", "exited", 0, None, None, None)
    job = agent.call("job.launch", key="k-new", gpu=0, memory_mib=10, argv=script("pass"))
    assert job["id"] == "j2" and wait_job(agent, job["id"])["exit_code"] == 0
    with sqlite3.connect(str(state / "jobs.db")) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == job_store.VERSION == len(
            job_store.MIGRATIONS)


@pytest.mark.parametrize("damage, words", [
    ("newer", "is version 99, newer than this agent knows"),
    ("garbage", "file is not a database"),
    ("foreign", "is not an agent's job table (it holds tables jobs, other)"),
    # a version set back by hand, or a file half restored: no restart mends its columns
    ("set-back", "cannot be used: it is version 3, but its columns are not that version's "
                 "(step 4 finds: duplicate column name: runtime); move it aside"),
    # its steps ran from MIGRATIONS[-1], moving every stop's deadline once more, first
    ("negative", "is version -1, which no agent writes; move it aside"),
])
def test_a_job_table_the_agent_cannot_use_is_refused_and_kept(start_agent, tmp_path, damage,
                                                               words):
    state = tmp_path / "host"
    state.mkdir(mode=0o700)
    db_path = str(state / "jobs.db")
    if damage == "garbage":
        with open(db_path, "wb") as f:
            f.write(b"not sqlite at all, " * 100)
    elif damage in ("set-back", "negative"):
        job_store.JobStore(db_path).close()  # a table of this agent's version
        db = sqlite3.connect(db_path)
        db.execute("PRAGMA user_version = %d" % (3 if damage == "set-back" else -1))
        db.commit()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # all of it in the file compared below
        db.close()
    else:
        first_release_table(db_path)
        with sqlite3.connect(db_path) as db:
            if damage == "newer":
                db.execute("PRAGMA user_version = 99")
            else:
                db.execute("CREATE TABLE other (x)")
    os.chmod(db_path, 0o600)
    before = open(db_path, "rb").read()
    agent = start_agent("1xL4", str(state))
    with pytest.raises(EOFError) as ended:
        agent.call("hello")
    said = str(ended.value)  # with the bridge's stderr, where the daemon's refusal went
    assert words in said and db_path in said, said
    assert "Traceback" not in said
    assert agent.proc.wait(timeout=10) == 2
    assert open(db_path, "rb").read() == before  # nothing lost: it is left as it was


def test_a_job_starts_from_the_declared_base_environment(start_agent, tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "do-not-leak")
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/ssh-agent.sock")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("TZ", "Europe/Paris")
    state = str(tmp_path / "host")
    agent = start_agent("1xL4", state)
    code = ("import json, os\n"
            "fds = sorted(int(f) for f in os.listdir('/proc/self/fd'))\n"
            "mask = os.umask(0); os.umask(mask)\n"
            "print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd(), 'umask': mask,\n"
            "                  'stdin': os.readlink('/proc/self/fd/0'), 'fds': fds}))\n")
    job = agent.call("job.launch", key="k-env", gpu=0, memory_mib=100, env={"MINE": "yes"},
                     argv=script(code))
    wait_job(agent, job["id"])
    seen = json.loads(agent.call("job.logs", job=job["id"])["lines"][0])
    env = seen["env"]
    home = os.path.expanduser("~root")
    assert {k: env[k] for k in ("HOME", "USER", "LOGNAME", "LC_ALL", "TZ", "MINE",
                                "FRACTUI_JOB_ID")} == {
        "HOME": home, "USER": "root", "LOGNAME": "root", "LC_ALL": "C.UTF-8",
        "TZ": "Europe/Paris", "MINE": "yes", "FRACTUI_JOB_ID": job["id"]}
    assert env["PATH"] == os.environ["PATH"]
    assert env["PYTHONPATH"] == REPO  # a simulated host's jobs reach the simulator
    assert "SECRET_TOKEN" not in env and "SSH_AUTH_SOCK" not in env
    allowed = {"PATH", "LANG", "LANGUAGE", "TZ", "HOME", "USER", "LOGNAME", "SHELL", "MINE",
               "FRACTUI_JOB_ID", "FRACTUI_SIM_STATE", "PYTHONPATH", "CUDA_VISIBLE_DEVICES",
               "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_PREALLOCATE"}
    assert {k for k in env if not k.startswith("LC_")} <= allowed
    assert (seen["cwd"], seen["umask"], seen["stdin"]) == (home, 0o022, "/dev/null")
    assert seen["fds"][:3] == [0, 1, 2] and len(seen["fds"]) <= 5  # + its pipe's read end,
    # + the listing's own descriptor



def test_a_table_that_cannot_be_upgraded_on_a_full_disk_is_kept_for_when_there_is_room(
        small_fs, start_agent):
    """The state dir's filesystem full (a real 8 MiB tmpfs) when a newer agent's daemon must
    bring the job table up to its version: it does not start, saying the disk is full and the
    table is kept — not to move the table aside, which forgets every job. With room, the next
    start upgrades it and adopts the job, which ran on meanwhile."""
    state = str(small_fs / "state")
    agent = start_agent("1xL4", state)
    job = agent.call("job.launch", key="k-kept", gpu=0, memory_mib=10,
                     argv=script("import time\ntime.sleep(120)"))
    daemon = daemon_pid_of(state)
    agent.call("daemon.shutdown")
    agent.close()
    wait_until(lambda: not alive(daemon), "the daemon to stop")
    db_path = os.path.join(state, "jobs.db")
    with sqlite3.connect(db_path) as db:  # as an agent one version older left it
        set_back(db, job_store.VERSION - 1)
    db.close()
    filler = small_fs / "filler"
    fill(filler)
    refused = start_agent(None, state)
    with pytest.raises(EOFError) as err:
        refused.call("job.get", job=job["id"])
    said = str(err.value)
    assert "the job table %s cannot be opened now: " % db_path in said
    assert any(room + "; it is kept as it is" in said for room in (NO_ROOM, NO_ROOM_READ)), said
    assert "move it aside" not in said
    filler.unlink()
    later = start_agent(None, state)
    assert later.call("job.get", job=job["id"])["state"] == "running"
    assert alive(job["pid"])
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == job_store.VERSION
    db.close()


def test_a_file_of_the_agent_named_in_bytes_that_are_no_utf8_is_hashed_by_its_bytes(
        start_agent, tmp_path):
    """A stray file in the agent's source tree whose name is no UTF-8 (``odd\\xff.py``): the
    daemon starts, and its code hash follows the file. Before, the name was encoded strictly
    as the code was hashed, and the daemon ended in a traceback before it served."""
    root = copy_of_the_agent(tmp_path / "1")
    with open(os.path.join(os.fsencode(root), b"remote_agent", b"odd\xff.py"), "w") as f:
        f.write("# a stray file\n")
    odd = start_agent("1xL4", str(tmp_path / "a"), code_root=root)
    plain = start_agent("1xL4", str(tmp_path / "b"))
    assert odd.call("daemon.version")["code_hash"] != plain.call("daemon.version")["code_hash"]
