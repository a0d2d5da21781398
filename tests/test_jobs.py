"""Jobs through the real bridge and daemon: launch, logs, idempotency, caps, the watchdog,
surviving dropped connections, daemon crashes and version handovers."""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import List

import pytest

from remote_agent import __version__
from remote_agent.daemon.paths import AgentPaths
from remote_agent.gpu import fake_pynvml as nv
from remote_agent.jobs.output import PUSH_MAX_BYTES
from remote_agent.rpc import jsonrpc as rpc
from tests.conftest import REPO, STEP_S, AgentError

PY = sys.executable


def simload(*args: str):
    return [PY, "-m", "remote_agent.simload", *args]


def slow_to_stop_simload(mem_mib: int) -> List[str]:
    """A simulated workload that ignores SIGTERM, so only the watchdog's SIGKILL ends it."""
    return [PY, "-c", "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "from remote_agent import simload\nsimload.main(['--mem-mib', '%d', '--seconds', "
            "'600'])\n" % mem_mib]


def script(code: str):
    return [PY, "-c", code]


def until_file(path, code: int):
    """A job that runs until ``path`` exists, then exits with ``code``: the test decides when."""
    return script("import os, sys, time\nwhile not os.path.exists(%r):\n    time.sleep(0.05)\n"
                  "sys.exit(%d)" % (str(path), code))


def wait_job(agent, job_id, states=("exited", "killed", "lost"), timeout=20.0):
    deadline = time.time() + timeout
    while True:
        job = agent.call("job.get", job=job_id)
        if job["state"] in states:
            return job
        assert time.time() < deadline, "job %s still %s" % (job_id, job["state"])
        time.sleep(STEP_S)


def daemon_pid(agent) -> int:
    return agent.call("daemon.version")["pid"]


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it has ended; so has one reaped between
    the open of its stat and the read, which the kernel answers with ESRCH)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.fixture
def host(start_agent, tmp_path):
    state = str(tmp_path / "host")
    return start_agent("1xA100-80GB:mig,1xL4", state), state


def test_launch_then_logs_then_exit_code(host):
    agent, _ = host
    job = agent.call("job.launch", key="k-hello", gpu=1, memory_mib=2048,
                     argv=script("print('hello from the job'); import sys; sys.exit(3)"))
    assert job["state"] == "running" and job["pid"] > 0 and job["id"].startswith("j")
    assert job["caps"] == ["visible_devices", "framework", "watchdog"]
    done = wait_job(agent, job["id"])
    assert (done["state"], done["exit_code"]) == ("exited", 3)
    assert agent.call("job.logs", job=job["id"])["lines"] == ["hello from the job"]


def test_logs_with_bytes_answers_the_logs_end_as_it_is_ending_at_its_offset(host):
    """job.logs.bytes: the log's last bytes, nothing decoded or split (a \\r\\n, a byte that
    is no UTF-8, a last line not ended), ending at ``offset``; listed in hello."""
    agent, _ = host
    assert "job.logs.bytes" in agent.call("hello")["features"]
    written = b"one\r\ntwo \xff\nthree, not ended"
    job = agent.call("job.launch", key="k-bytes", gpu=1, memory_mib=10, argv=script(
        "import sys; sys.stdout.buffer.write(%r)" % written))
    wait_job(agent, job["id"])
    answer = agent.call("job.logs", job=job["id"], lines=0, bytes=len(written) + 10)
    assert (base64.b64decode(answer["data"]), answer["offset"]) == (written, len(written))
    assert answer["lines"] == []
    last = agent.call("job.logs", job=job["id"], bytes=5)
    assert base64.b64decode(last["data"]) == b"ended" and last["offset"] == len(written)
    assert "data" not in agent.call("job.logs", job=job["id"])  # asked for lines only


def test_a_logs_last_bytes_span_the_rotated_log_and_read_no_more_than_asked(tmp_path):
    """log_bytes: the rotated log's end, then the current one's, and the current one's size
    (the offset), asked for a few bytes or for all."""
    from remote_agent.jobs.supervisor import log_bytes

    rotated, current = tmp_path / "output.log.1", tmp_path / "output.log"
    for path, data in ((rotated, b"0123456789"), (current, b"abcdef")):
        path.write_bytes(data)
        path.chmod(0o600)
    paths = [str(rotated), str(current)]
    assert log_bytes(paths) == (b"0123456789abcdef", 6)
    assert [log_bytes(paths, n) for n in (0, 3, 8, 100)] == [
        (b"", 6), (b"def", 6), (b"89abcdef", 6), (b"0123456789abcdef", 6)]
    assert log_bytes([], 5) == (b"", 0)


def test_the_job_sees_its_slice_and_caps_in_its_environment(host):
    agent, _ = host
    gpus = agent.call("inventory")["gpus"]
    job = agent.call("job.launch", key="k-env", gpu=1, memory_mib=5758, env={"MINE": "yes"},
                     argv=script("import os\nfor k in ('CUDA_VISIBLE_DEVICES', "
                                 "'XLA_PYTHON_CLIENT_MEM_FRACTION', 'MINE', 'FRACTUI_JOB_ID'):"
                                 " print(k, os.environ[k])"))
    wait_job(agent, job["id"])
    assert agent.call("job.logs", job=job["id"])["lines"] == [
        "CUDA_VISIBLE_DEVICES %s" % gpus[1]["uuid"], "XLA_PYTHON_CLIENT_MEM_FRACTION 0.2221",
        "MINE yes", "FRACTUI_JOB_ID %s" % job["id"]]


def test_an_argv_is_run_verbatim_never_by_a_shell(host, tmp_path):
    agent, _ = host
    tricky = ["two words", "it's \"quoted\"", "$(touch %s)" % (tmp_path / "pwned"), "; ls"]
    job = agent.call("job.launch", key="k-argv", gpu=1, memory_mib=10,
                     argv=script("import sys; print(repr(sys.argv[1:]))") + tricky)
    wait_job(agent, job["id"])
    assert agent.call("job.logs", job=job["id"])["lines"] == [repr(tricky)]
    assert not (tmp_path / "pwned").exists()


def test_the_same_key_twice_is_one_job_and_one_process(host):
    agent, state = host
    argv = script("import time; time.sleep(30)")
    first = agent.call("job.launch", key="k-once", gpu=1, memory_mib=100, argv=argv)
    again = agent.call("job.launch", key="k-once", gpu=1, memory_mib=100, argv=argv)
    assert (again["id"], again["pid"]) == (first["id"], first["pid"])
    assert [j["id"] for j in agent.call("job.list")["jobs"]] == [first["id"]]
    assert os.listdir(os.path.join(state, "jobs")) == [first["id"]]
    with pytest.raises(AgentError) as err:
        agent.call("job.launch", key="k-once", gpu=1, memory_mib=100, argv=script("pass"))
    assert err.value.code == rpc.INVALID_PARAMS and "other params" in err.value.message


def test_a_retried_key_is_its_job_even_once_it_could_no_longer_start(host, tmp_path):
    agent, _ = host
    workdir = tmp_path / "work"
    workdir.mkdir()
    params = dict(key="k-retry", gpu=1, memory_mib=100, cwd=str(workdir),
                  argv=script("import time; time.sleep(30)"))
    first = agent.call("job.launch", **params)
    workdir.rmdir()  # a new launch there could not start now; this one runs
    again = agent.call("job.launch", **params)
    assert (again["id"], again["pid"], again["state"]) == (first["id"], first["pid"], "running")


def test_a_mig_launch_retried_after_a_dropped_connection_makes_one_instance_one_process(
        start_agent, tmp_path):
    state = str(tmp_path / "host")
    first = start_agent("1xA100-80GB:mig", state)
    params = dict(key="k-mig", gpu=0, mig={"profile": "3g.40gb", "start": 4},
                  argv=simload("--mem-mib", "1000", "--seconds", "30"))
    first.call("daemon.version")
    first.send("job.launch", **params)
    deadline = time.time() + 10
    while not os.path.isdir(os.path.join(state, "jobs", "j1")):  # the launch is under way
        assert time.time() < deadline
        time.sleep(0.005)
    first.proc.kill()  # the SSH channel drops before the reply arrives
    first.proc.wait()
    second = start_agent(None, state)
    job = second.call("job.launch", **params)
    again = second.call("job.launch", **params)
    assert again["pid"] == job["pid"] and job["state"] == "running"
    instances = second.call("inventory")["gpus"][0]["instances"]
    assert [(i["profile"], i["start"]) for i in instances] == [("3g.40gb", 4)]
    assert job["instance"] == instances[0]["uuid"] and job["caps"] == ["mig"]
    assert len(second.call("job.list")["jobs"]) == 1
    # the instance is the job's: nobody else may take it, and the planner will not destroy it
    with pytest.raises(AgentError) as err:
        second.call("job.launch", key="k-other", gpu=0, instance=job["instance"],
                    argv=script("pass"))
    assert err.value.code == rpc.INSTANCE_BUSY and job["id"] in err.value.message
    with pytest.raises(AgentError) as err:
        second.call("mig.apply", gpu=0, profile="7g.80gb", destroy_idle=True)
    assert err.value.code == rpc.INSTANCE_BUSY


def test_the_watchdog_stops_a_job_over_its_cap_with_the_reason(host):
    agent, _ = host
    over = agent.call("job.launch", key="k-over", gpu=1, memory_mib=1024,
                      argv=simload("--mem-mib", "1391", "--seconds", "30"))
    grows = agent.call("job.launch", key="k-grows", gpu=1, memory_mib=1024,
                       argv=simload("--mem-mib", "200", "--grow-to", "3000", "--seconds", "4"))
    under = agent.call("job.launch", key="k-under", gpu=1, memory_mib=1024,
                       argv=simload("--mem-mib", "900", "--seconds", "3", "--exit-code", "0"))
    killed = wait_job(agent, over["id"], timeout=10)
    assert killed["state"] == "killed"
    assert killed["reason"] == "exceeded its 1024 MiB cap: used 1391 MiB"
    assert killed["ended_at"] - killed["started_at"] < 30  # before its own end
    grown = wait_job(agent, grows["id"], timeout=10)
    used = int(re.fullmatch(r"exceeded its 1024 MiB cap: used (\d+) MiB", grown["reason"])[1])
    assert grown["state"] == "killed" and used > 1024  # (ended on its own, it had "exited")
    fine = wait_job(agent, under["id"], timeout=10)
    assert (fine["state"], fine["exit_code"], fine["reason"]) == ("exited", 0, None)


# what a failed job printed, and the last line its agent gives with its end (last_line)
LAST_WORDS = {
    "traceback": (b"Traceback (most recent call last):\n  File \"t.py\", line 1\n"
                  b"RuntimeError: CUDA out of memory\n", "RuntimeError: CUDA out of memory"),
    "escape sequences": (  # colours, a title (OSC), a C1 CSI, a bidi override, a NUL, a tab
        b"\x1b[1;31mError:\x1b[0m \x1b]0;owned\x07disk\tfull\x00!\xc2\x9b2J \xe2\x80\xaeok"
        b"\x1b[2K\r\n\x1b[0m\n \t \n", "Error: disk full ! ok"),
    "progress bar": (b"step 1\n\r 10%|#   |\r100%|####|\r", "100%|####|"),
    "invalid UTF-8": (b"caf\xc3\xa9 \xff\xfe boom\n", "caf\u00e9 \ufffd\ufffd boom"),
    "no newline at its end": (b"first\nlast words", "last words"),
    "long": (b"E: " + b"y" * 500 + b"\n", "E: " + "y" * 156 + "\u2026"),
    "empty": (b"", None),
    # the read's 8 KiB: a log of exactly that is read whole (its first line's start read too);
    # one a byte longer is read from inside its first character (its start not read), and
    # that character's rest is no character of its own
    "8 KiB exactly": (b" " * 8187 + b"boom\n", "boom"),
    "8 KiB and a byte, cut in a character": (b"\xc3\xa9" + b" " * 8186 + b"boom\n",
                                             "\u2026boom"),
    "blank": (b"\n\n  \x1b[0m\n", None),
}


def test_a_failed_jobs_end_carries_its_outputs_last_line_made_safe_and_bounded(host):
    """A job that exits non-zero ends with the last line of its output that has anything in
    it (``last_line``): decoded with replacement, its escape sequences and characters a
    terminal acts on taken out, blanks collapsed, 160 characters at most; only the log's end
    is read (a 1 MB line is given from its end, its start unread). A job that exits 0, or is
    killed by a signal or over its cap, keeps its end as it was, and no line."""
    agent, _ = host
    jobs = {}
    for n, (case, (data, _)) in enumerate(sorted(LAST_WORDS.items())):
        jobs[case] = agent.call("job.launch", key="k-last-%d" % n, gpu=1, memory_mib=10,
                                argv=script("import os, sys\nsys.stdout.buffer.write(%r)\n"
                                            "sys.stdout.flush()\nos._exit(1)" % data))
    jobs["1 MB line"] = agent.call("job.launch", key="k-last-huge", gpu=1, memory_mib=10,
                                   argv=script("import sys\nsys.stdout.write('x' * (1 << 20) + "
                                               "' the end')\nsys.exit(2)"))
    jobs["fine"] = agent.call("job.launch", key="k-last-fine", gpu=1, memory_mib=10,
                              argv=script("print('all went well')"))
    jobs["signal"] = agent.call("job.launch", key="k-last-signal", gpu=1, memory_mib=10,
                                argv=script("import os, signal\nprint('about to go', flush=True)"
                                            "\nos.kill(os.getpid(), signal.SIGKILL)"))
    jobs["cap"] = agent.call("job.launch", key="k-last-cap", gpu=1, memory_mib=1024,
                             argv=simload("--mem-mib", "1391", "--seconds", "30"))
    ended = {case: wait_job(agent, job["id"], timeout=30) for case, job in jobs.items()}
    said = {case: (ended[case]["state"], ended[case]["exit_code"], ended[case]["reason"],
                   ended[case]["last_line"]) for case in LAST_WORDS}
    assert said == {case: ("exited", 1, None, line) for case, (_, line) in LAST_WORDS.items()}
    huge = ended["1 MB line"]
    assert (huge["state"], huge["exit_code"]) == ("exited", 2)
    assert huge["last_line"] == "\u2026" + "x" * 151 + " the end"
    assert (ended["fine"]["exit_code"], ended["fine"]["last_line"]) == (0, None)
    assert (ended["signal"]["state"], ended["signal"]["reason"], ended["signal"]["last_line"]
            ) == ("killed", "terminated by signal SIGKILL", None)
    assert (ended["cap"]["state"], ended["cap"]["reason"], ended["cap"]["last_line"]) == (
        "killed", "exceeded its 1024 MiB cap: used 1391 MiB", None)
    assert [j["last_line"] for j in agent.call("job.list")["jobs"]] == [
        ended[case]["last_line"] for case in jobs]  # (listed in the order launched)


def test_a_job_whose_main_thread_ended_while_another_grows_its_memory_is_still_capped(host):
    """A job whose first thread exits (pthread_exit) while another thread holds and grows its GPU
    memory reads as a zombie in /proc, but runs on: the watchdog still charges it and stops it
    over its cap (it escaped the cap, uncounted, while zombies were taken for ended)."""
    agent, _ = host
    job = agent.call("job.launch", key="k-thread", gpu=1, memory_mib=1024, argv=script(
        "import ctypes, threading, time\n"
        "from remote_agent import simload\n"
        "threading.Thread(target=simload.main, args=(['--mem-mib', '200', '--grow-to', '3000',"
        " '--seconds', '6'],)).start()\n"
        "time.sleep(0.5)\n"
        "ctypes.CDLL(None).pthread_exit(None)\n"))
    with open("/proc/%d/stat" % job["pid"], "rb") as f:
        assert f.read()  # it started
    done = wait_job(agent, job["id"], timeout=15)
    assert done["state"] == "killed", done
    assert re.fullmatch(r"exceeded its 1024 MiB cap: used \d+ MiB", done["reason"])
    assert any(line.startswith("simload: using") for line in
               agent.call("job.logs", job=job["id"])["lines"])


def launch_held_jobs(agent, release, codes):
    """Jobs that run until ``release`` exists, each then exiting with its code: {id: code}."""
    launched = {}
    for code in codes:
        job = agent.call("job.launch", key="k-held-%d" % code, gpu=1, memory_mib=100,
                         argv=until_file(release, code))
        launched[job["id"]] = code
    return launched


def assert_adopted_then_exit(agent, release, launched):
    """All still listed running, and once released each ends with its real exit code."""
    jobs = agent.call("job.list")["jobs"]
    assert {j["id"]: j["state"] for j in jobs} == {j: "running" for j in launched}
    release.touch()
    for job_id, code in launched.items():
        done = wait_job(agent, job_id)
        assert (done["state"], done["exit_code"]) == ("exited", code)


def test_the_job_table_survives_kill_9_of_the_daemon(host, tmp_path, start_agent):
    agent, state = host
    release = tmp_path / "release"
    launched = launch_held_jobs(agent, release, (0, 4, 7))
    os.kill(daemon_pid(agent), signal.SIGKILL)
    agent.proc.wait(timeout=10)  # the bridge sees its daemon gone
    assert_adopted_then_exit(start_agent(None, state), release, launched)


def test_a_newer_agent_takes_over_the_daemon_and_adopts_every_job(host, tmp_path, start_agent):
    agent, state = host
    old_pid = daemon_pid(agent)
    release = tmp_path / "release"
    launched = launch_held_jobs(agent, release, (0, 5, 9))
    newer_root = tmp_path / "newer"
    shutil.copytree(os.path.join(REPO, "remote_agent"), newer_root / "remote_agent",
                    ignore=shutil.ignore_patterns("__pycache__"))
    init = newer_root / "remote_agent" / "__init__.py"
    bumped = __version__.rsplit(".", 1)[0] + "." + str(int(__version__.rsplit(".", 1)[1]) + 1)
    init.write_text(init.read_text().replace('"%s"' % __version__, '"%s"' % bumped))
    newer = start_agent(None, state, code_root=str(newer_root))
    info = newer.call("daemon.version")
    assert info["version"] == bumped and info["pid"] != old_pid
    assert not alive(old_pid)
    assert_adopted_then_exit(newer, release, launched)
    # an older bridge now uses the newer daemon rather than replacing it
    older = start_agent(None, state)
    assert older.call("daemon.version")["version"] == bumped


def test_closing_the_bridge_leaves_jobs_running(host, start_agent, tmp_path):
    agent, state = host
    release = tmp_path / "release"
    job = agent.call("job.launch", key="k-stay", gpu=1, memory_mib=100,
                     argv=until_file(release, 6))
    assert agent.close() == 0
    assert alive(job["pid"])
    later = start_agent(None, state)
    assert later.call("job.get", job=job["id"])["state"] == "running"
    release.touch()
    assert wait_job(later, job["id"])["exit_code"] == 6


def test_subscribe_pushes_job_changes_and_snapshots_without_polling(host):
    agent, _ = host
    first = agent.call("subscribe")
    assert first["jobs"] == [] and len(first["snapshot"]["gpus"]) == 2
    agent.send("job.launch", key="k-sub", gpu=1, memory_mib=300,
               argv=simload("--mem-mib", "300", "--seconds", "1", "--exit-code", "2"))
    seen = []
    deadline = time.time() + 15
    while time.time() < deadline:
        msg = agent.read_reply()
        if "id" in msg:
            continue  # the launch's own reply
        seen.append(msg)
        if msg["method"] == "job" and msg["params"]["state"] == "exited":
            break
    states = [m["params"]["state"] for m in seen if m["method"] == "job"]
    assert states[0] == "running" and states[-1] == "exited"
    assert seen[-1]["params"]["exit_code"] == 2
    used = [m["params"]["gpus"][1]["memory_used_mib"] for m in seen if m["method"] == "snapshot"]
    assert 300 in used


def test_logs_follow_pushes_new_output_then_eof(host):
    agent, _ = host
    job = agent.call("job.launch", key="k-follow", gpu=1, memory_mib=10, argv=script(
        "import time\nfor i in range(5):\n    print('line', i, flush=True)\n    time.sleep(0.3)"))
    first = agent.call("job.logs", job=job["id"], follow=True, lines=10)
    text = "\n".join(first["lines"]) + "\n"
    while True:
        msg = agent.next_notification()
        assert msg["method"] == "log" and msg["params"]["job"] == job["id"]
        if msg["params"].get("eof"):
            break
        text += msg["params"]["data"]
    assert [line for line in text.splitlines() if line] == ["line %d" % i for i in range(5)]


def test_a_followed_log_comes_in_bounded_whole_characters(host, tmp_path):
    """A job that prints megabytes at once is pushed in notifications of at most
    PUSH_MAX_BYTES, each cut between two UTF-8 characters, adding up to exactly its output."""
    agent, _ = host
    go = tmp_path / "go"
    many = 3 * PUSH_MAX_BYTES // 2
    text = "a" + "\u00e9" * many + "\n"  # é is two bytes at odd offsets: cuts fall inside one
    job = agent.call("job.launch", key="k-big-follow", gpu=1, memory_mib=10, argv=script(
        "import os, sys, time\nwhile not os.path.exists(%r):\n    time.sleep(0.05)\n"
        "sys.stdout.write('a' + '\\u00e9' * %d + '\\n')" % (str(go), many)))
    agent.call("job.logs", job=job["id"], follow=True, lines=0)
    go.touch()
    chunks = []
    while True:
        msg = agent.next_notification()
        assert msg["method"] == "log" and msg["params"]["job"] == job["id"]
        if msg["params"].get("eof"):
            break
        chunks.append(msg["params"]["data"])
    assert len(chunks) >= 3 and "\ufffd" not in "".join(chunks)
    assert all(len(c.encode()) <= PUSH_MAX_BYTES for c in chunks)
    assert "".join(chunks) == text


def test_a_log_that_cannot_be_read_holds_up_no_other_jobs_followed_log(host, tmp_path):
    """One client follows two jobs and the first one's log becomes a thing nobody can read, root
    neither (a socket in its place: ENXIO): the other's lines are pushed all the same (once, one
    failed read ended that tick's pushes for every follower, every tick), and the first one's
    follow ends saying what is in its log's place (it is refused as seen, never opened)."""
    agent, state = host
    go = tmp_path / "go"
    broken = agent.call("job.launch", key="k-unreadable", gpu=1, memory_mib=10,
                        argv=until_file(go, 0))
    talker = agent.call("job.launch", key="k-talker", gpu=1, memory_mib=10, argv=script(
        "import os, time\nwhile not os.path.exists(%r):\n    time.sleep(0.05)\n"
        "for i in range(3):\n    print('line', i, flush=True)" % str(go)))
    agent.call("job.logs", job=broken["id"], follow=True, lines=0)  # followed first
    agent.call("job.logs", job=talker["id"], follow=True, lines=0)
    job_dir = os.path.join(AgentPaths(state).jobs_dir, broken["id"])
    subprocess.run([PY, "-c", "import socket\nsocket.socket(socket.AF_UNIX).bind('output.log')"],
                   cwd=job_dir, check=True)  # where its log would be: it printed nothing yet
    go.touch()
    deadline = time.time() + 20
    while not any(n["params"].get("eof") for n in agent.notifications
                  if n["method"] == "log" and n["params"]["job"] == talker["id"]):
        assert time.time() < deadline, "no end of %s's log: %s" % (talker["id"],
                                                                   agent.notifications)
        agent.call("daemon.version")
        time.sleep(0.1)
    logs = [n["params"] for n in agent.notifications if n["method"] == "log"]
    assert [p for p in logs if p["job"] == broken["id"]] == [{
        "job": broken["id"], "eof": True, "error": "refusing log %s: not a regular file: a "
        "socket" % os.path.join(job_dir, "output.log")}]
    talked = [p for p in logs if p["job"] == talker["id"]]
    assert "".join(p.get("data", "") for p in talked) == "line 0\nline 1\nline 2\n"


def test_logs_without_follow_ends_a_follow_of_that_job(host):
    agent, _ = host
    job = agent.call("job.launch", key="k-unfollow", gpu=1, memory_mib=10, argv=script(
        "import time\nfor i in range(6):\n    print('line', i, flush=True)\n    time.sleep(0.3)"))
    agent.call("job.logs", job=job["id"], follow=True, lines=0)
    first = agent.next_notification()
    assert first["method"] == "log" and first["params"]["job"] == job["id"]
    agent.notifications.clear()
    agent.call("job.logs", job=job["id"], follow=False, lines=0)
    agent.notifications.clear()  # pushed before the reply: sent while it was still followed
    while agent.call("job.get", job=job["id"])["state"] == "running":
        time.sleep(0.2)
    agent.call("daemon.version")  # one more round trip: anything pushed would be before it
    assert [n for n in agent.notifications if n["method"] == "log"] == []


def test_a_chunk_read_as_the_client_unfollows_is_not_sent_nor_the_follow_taken_up_again():
    """The pusher reads a chunk, the client unfollows, the pusher goes to send it: nothing is
    sent and the job stays unfollowed (the pusher once wrote its offset back, following it
    again for good). The client takes the first chunk while it follows: its connection then
    wakes the daemon's pusher (``logs_taken``), and sends on."""
    import json
    import socket
    import threading
    import types

    from remote_agent.daemon.server import Connection

    ours, theirs = socket.socketpair()
    try:
        daemon = types.SimpleNamespace(logs_taken=threading.Event())  # (no methods served)
        conn = Connection(ours, daemon)  # type: ignore[arg-type]
        conn.follow(1, True, 0)
        assert conn.push_log(1, {"job": "j1", "data": "a\n"}, 2)
        assert conn.follows == {1: 2}
        received = theirs.makefile("rb")
        sent = [received.readline()]  # taken while it follows: the pusher is woken
        assert daemon.logs_taken.wait(10)
        conn.follow(1, False, 0)  # the client's unfollow, between the read and the send
        assert not conn.push_log(1, {"job": "j1", "data": "b\n"}, 4)
        assert conn.follows == {}
        conn.follow(2, True, 0)
        assert conn.push_log(2, {"job": "j2", "eof": True}, None) and conn.follows == {}
        conn.finish()
        sent += received.read().splitlines()
        assert [json.loads(line)["params"] for line in sent] == [
            {"job": "j1", "data": "a\n"}, {"job": "j2", "eof": True}]
    finally:
        ours.close()
        theirs.close()


def test_stop_terminates_with_grace_then_kills(host):
    agent, _ = host
    polite = agent.call("job.launch", key="k-polite", gpu=1, memory_mib=10,
                        argv=script("import time; time.sleep(60)"))
    stubborn = agent.call("job.launch", key="k-stubborn", gpu=1, memory_mib=10, argv=script(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\ntime.sleep(60)"))
    deadline = time.time() + 10
    while agent.call("job.logs", job=stubborn["id"])["lines"] != ["ready"]:
        assert time.time() < deadline
        time.sleep(0.05)
    agent.call("job.stop", job=polite["id"])
    asked = time.time()
    agent.call("job.stop", job=stubborn["id"], grace=1, reason="make room for j9")
    done = wait_job(agent, polite["id"])
    assert (done["state"], done["reason"]) == ("killed", "stopped by request")
    hard = wait_job(agent, stubborn["id"])
    assert (hard["state"], hard["reason"]) == ("killed", "make room for j9")
    # it ignored SIGTERM, so it lived through the 1 s grace, then SIGKILL ended it before
    # its own end
    assert 0.9 <= hard["ended_at"] - asked < 60
    assert not alive(stubborn["pid"])


def test_bad_launches_are_refused_clearly_and_launch_nothing(host):
    agent, state = host
    holder = agent.call("mig.apply", gpu=0, profile="1g.10gb")["instance"]["uuid"]
    foreign = agent.call("mig.apply", gpu=0, profile="2g.20gb")["instance"]["uuid"]
    agent.call("sim.add_process", gpu=0, instance=foreign, used_mib=10)
    agent.call("job.launch", key="k-holder", gpu=0, instance=holder,
               argv=script("import time; time.sleep(30)"))
    agent.call("job.launch", key="k-big", gpu=1, memory_mib=20000,
               argv=script("import time; time.sleep(30)"))
    gpu1_uuid = agent.call("inventory")["gpus"][1]["uuid"]
    cases = [
        (dict(gpu=1, memory_mib=10), rpc.INVALID_PARAMS, "needs param 'argv'"),
        (dict(gpu=1, memory_mib=10, argv="echo hi"), rpc.INVALID_PARAMS, "never by a shell"),
        (dict(gpu=1, memory_mib=10, argv=[]), rpc.INVALID_PARAMS, "non-empty list"),
        (dict(gpu=1, argv=["true"]), rpc.INVALID_PARAMS, "exactly one of"),
        (dict(gpu=1, memory_mib=10, instance=holder, argv=["true"]), rpc.INVALID_PARAMS,
         "exactly one of"),
        (dict(gpu=0, instance="MIG-nope", argv=["true"]), rpc.INSTANCE_NOT_FOUND, "MIG-nope"),
        (dict(gpu=0, instance=holder, argv=["true"]), rpc.INSTANCE_BUSY, "in use by job j1"),
        (dict(gpu=0, instance=foreign, argv=["true"]), rpc.INSTANCE_BUSY, "outside fractui"),
        (dict(gpu=1, memory_mib=4000, argv=["true"]), rpc.NO_ROOM, "3034 MiB free"),
        (dict(gpu=0, memory_mib=100, argv=["true"]), rpc.NOT_SUPPORTED, "MIG mode"),
        (dict(gpu=5, memory_mib=100, argv=["true"]), rpc.GPU_NOT_FOUND, "no GPU 5"),
        (dict(gpus=[1, 1], memory_mib=10, argv=["true"]), rpc.INVALID_PARAMS,
         "'gpus' names GPU 1 more than once"),
        (dict(gpus=[1, gpu1_uuid], memory_mib=10, argv=["true"]), rpc.INVALID_PARAMS,
         "'gpus' names GPU 1 more than once"),
        (dict(gpu=0, mig={"profile": "3g.40gb"}, argv=["true"]), rpc.INVALID_PARAMS, "start"),
        (dict(gpu=0, mig={"profile": "9g.1gb", "start": 0}, argv=["true"]),
         rpc.UNKNOWN_PROFILE, "9g.1gb"),
    ]
    before = agent.call("job.list")["jobs"]
    for n, (params, code, words) in enumerate(cases):
        with pytest.raises(AgentError) as err:
            agent.call("job.launch", key="k-bad-%d" % n, **params)
        assert err.value.code == code, (params, err.value.message)
        assert words in err.value.message, (params, err.value.message)
    assert agent.call("job.list")["jobs"] == before
    assert sorted(os.listdir(os.path.join(state, "jobs"))) == sorted(j["id"] for j in before)


def test_a_job_that_can_never_start_is_a_job_fault_with_the_agents_words(host, tmp_path):
    agent, state = host
    plain = tmp_path / "plain.txt"
    plain.write_text("not a program\n")
    bad_interpreter = tmp_path / "script"
    bad_interpreter.write_text("#!/no/such/interpreter\n")
    bad_interpreter.chmod(0o755)
    windows = tmp_path / "windows-script"  # its lines end in "\r\n": the kernel's interpreter
    windows.write_bytes(b"#!/bin/sh\r\ntrue\r\n")  # is "/bin/sh\r" (spaces and tabs end
    windows.chmod(0o755)  # it, nothing else)
    cases = [  # (params, the agent's exact reason, recorded as an exited job)
        (dict(argv=["/no/such/program", "x"]),
         "cannot run /no/such/program: No such file or directory", False),
        (dict(argv=["no-such-program-on-path"]),
         "cannot run no-such-program-on-path: No such file or directory", False),
        (dict(argv=[str(plain)]), "cannot run %s: Permission denied" % plain, False),
        (dict(argv=[str(tmp_path)]), "cannot run %s: Permission denied" % tmp_path, False),
        (dict(argv=["true"], cwd="/no/such/dir"),
         "cannot enter its cwd /no/such/dir: No such file or directory", False),
        (dict(argv=["true"], cwd=str(plain)),
         "cannot enter its cwd %s: Not a directory" % plain, False),
        (dict(argv=["true"], run_as="no-such-user-xyz"),
         "no user 'no-such-user-xyz' on this host", False),
        # found and executable, yet exec fails: only the started process can tell, and says
        # it as the missing interpreter's (the script is there)
        (dict(argv=[str(bad_interpreter)]),
         "cannot run %s: its first line names the interpreter /no/such/interpreter, which "
         "is missing" % bad_interpreter, True),
        (dict(argv=[str(windows)]),
         "cannot run %s: its first line names the interpreter /bin/sh\\r (it ends in a "
         "carriage return, as a line written on Windows does), which is missing" % windows,
         True),
    ]
    for n, (params, reason, recorded) in enumerate(cases):
        for attempt in range(2):  # a retry of the same key answers the same way
            with pytest.raises(AgentError) as err:
                agent.call("job.launch", key="k-never-%d" % n, gpu=1, memory_mib=10, **params)
            assert (err.value.code, rpc.error_class(err.value.code)) == (rpc.START_FAILED, "job")
            assert err.value.data["reason"] == reason, params
            assert reason in err.value.message
            if recorded:
                job = err.value.data["job"]
                assert (job["state"], job["exit_code"], job["reason"]) == ("exited", 127, reason)
            else:
                assert "job" not in err.value.data
    listed = agent.call("job.list")["jobs"]
    assert sorted((j["key"], j["state"], j["exit_code"]) for j in listed) == [
        ("k-never-%d" % n, "exited", 127) for n, case in enumerate(cases) if case[2]]
    # a GPU that cannot take it now is another class: capacity, not the job's fault
    with pytest.raises(AgentError) as err:
        agent.call("job.launch", key="k-too-big", gpu=1, memory_mib=10 ** 6, argv=["true"])
    assert (err.value.code, rpc.error_class(err.value.code)) == (rpc.NO_ROOM, "capacity")


def test_two_bridges_starting_at_once_give_one_daemon(start_agent, tmp_path):
    state = str(tmp_path / "race")
    bridges = [start_agent("1xL4", state) for _ in range(4)]
    pids = {b.call("daemon.version")["pid"] for b in bridges}
    assert len(pids) == 1
    assert int(open(os.path.join(state, "daemon.pid")).read()) in pids


def test_the_daemon_socket_is_private(host):
    agent, state = host
    paths = AgentPaths(state)
    agent.call("hello")  # the daemon is up
    assert len(paths.socket) < 108
    assert os.stat(paths.socket_dir).st_mode & 0o777 == 0o700
    assert os.stat(paths.socket).st_mode & 0o777 == 0o600


def test_logs_are_capped_and_finished_jobs_pruned(start_agent, tmp_path):
    state = str(tmp_path / "host")
    agent = start_agent("1xL4", state, "--log-max-mib", "1", "--retention-hours", "0.0005")
    job = agent.call("job.launch", key="k-noisy", gpu=0, memory_mib=10, argv=script(
        "import sys\nfor i in range(40000):\n    sys.stdout.write('%08d ' % i + 'x' * 90 + '\\n')"))
    job_dir = os.path.join(state, "jobs", job["id"])
    wait_job(agent, job["id"])
    sizes = [os.path.getsize(os.path.join(job_dir, f)) for f in os.listdir(job_dir)
             if f.startswith("output.log")]
    assert len(sizes) == 2 and sum(sizes) <= 1 << 20
    assert agent.call("job.logs", job=job["id"], lines=1)["lines"][0].startswith("00039999 ")
    deadline = time.time() + 10
    while os.path.exists(job_dir):
        assert time.time() < deadline, "a finished job outlived its retention"
        time.sleep(0.2)
    with pytest.raises(AgentError) as err:
        agent.call("job.get", job=job["id"])
    assert err.value.code == rpc.JOB_NOT_FOUND


def test_a_share_job_whose_cgroup_cannot_be_made_says_why_in_its_notes(start_agent, tmp_path,
                                                                       cgroup_parent):
    """The parent takes no more cgroups (its ``cgroup.max.descendants`` 0, a real cgroup v2
    limit): the job runs, found by its session, and its notes say the driver's limit was not
    applied and why, in the kernel's words. Before, the why was in the daemon's log alone."""
    os.mkdir(cgroup_parent)
    with open(os.path.join(cgroup_parent, "cgroup.max.descendants"), "w") as limit:
        limit.write("0")
    state = str(tmp_path / "host")
    agent = start_agent("1xL4", state, "--cgroup-parent", cgroup_parent)
    assert "driver_limit" in agent.call("hello")["gpus"][0]["cap_layers"]
    job = agent.call("job.launch", key="k-no-cg", gpu=0, memory_mib=3000, argv=[PY, "-c", "0"])
    cgroup = os.path.join(cgroup_parent, "%s-%s" % (AgentPaths(state).digest, job["id"]))
    assert (job["cgroup"], "driver_limit" in job["caps"]) == (None, False)
    assert job["cap_notes"] == ["driver_limit not applied: the job has no cgroup of its own "
                                "(cannot make %s: Resource temporarily unavailable)" % cgroup]
    assert wait_job(agent, job["id"])["exit_code"] == 0


def test_a_share_job_gets_its_own_cgroup_with_the_driver_memory_limit(start_agent, tmp_path,
                                                                     cgroup_parent):
    # a real cgroup v2 directory; the driver side is the simulator, which records the limits set
    state = str(tmp_path / "host")
    agent = start_agent("1xL4", state, "--cgroup-parent", cgroup_parent)
    assert agent.call("daemon.version")["job_tracking"] == "cgroup"
    assert "driver_limit" in agent.call("hello")["gpus"][0]["cap_layers"]
    release = tmp_path / "release"
    job = agent.call("job.launch", key="k-cg", gpu=0, memory_mib=3000,
                     argv=until_file(release, 0))
    assert job["caps"][:2] == ["visible_devices", "driver_limit"]
    cgroup = os.path.join(cgroup_parent, "%s-%s" % (AgentPaths(state).digest, job["id"]))
    assert job["cgroup"] == cgroup
    assert [d.name for d in os.scandir(cgroup_parent) if d.is_dir()] == [os.path.basename(cgroup)]
    # the job joined it before it ran a line of its own
    with open(os.path.join(cgroup, "cgroup.procs")) as f:
        assert [int(x) for x in f.read().split()] == [job["pid"]]
    nv.sim_open(AgentPaths(state).sim_state)
    nv.nvmlInit()
    limits = nv.c_nvmlGetMemoryLimits_v1_t()
    limits.nameSpace = cgroup.encode()
    nv.nvmlDeviceGetMemoryLimits_v1(nv.nvmlDeviceGetHandleByIndex(0), limits)
    assert limits.hardLimit == limits.softLimit == 3000 << 20
    release.touch()
    wait_job(agent, job["id"])
    deadline = time.time() + 5
    while True:
        nv.nvmlDeviceGetMemoryLimits_v1(nv.nvmlDeviceGetHandleByIndex(0), limits)
        if limits.hardLimit == nv.NVML_DEVICE_MEMORY_LIMIT_MAX and not os.path.exists(cgroup):
            break
        assert time.time() < deadline, "the limit or the cgroup outlived its job"
        time.sleep(0.1)


def launch_with_a_worker(agent, tmp_path, **launch):
    """A job whose first process starts a worker, both running until stopped: (job, the first
    process's pid, the worker's)."""
    pids = tmp_path / "pids"
    code = ("import os, subprocess, sys, time\n"
            "kid = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            "open(%r + '.tmp', 'w').write('%%d %%d' %% (os.getpid(), kid.pid))\n"
            "os.replace(%r + '.tmp', %r)\n"
            "time.sleep(600)\n" % (str(pids), str(pids), str(pids)))
    job = agent.call("job.launch", argv=script(code), **launch)
    deadline = time.time() + 20
    while not pids.exists():
        assert time.time() < deadline, "the job's processes never started"
        time.sleep(0.05)
    leader, kid = map(int, pids.read_text().split())
    return job, leader, kid


def test_a_share_on_several_gpus_is_capped_on_each_gpu_not_in_total(start_agent, tmp_path):
    agent = start_agent("2xL4", str(tmp_path / "host"))
    job, leader, kid = launch_with_a_worker(agent, tmp_path, key="k-two", gpus=[0, 1],
                                            memory_mib=1000)
    # 600 MiB on each GPU: within its 1000 MiB share of each, 1200 MiB in all
    agent.call("sim.add_process", gpu=0, used_mib=600, pid=leader)
    agent.call("sim.add_process", gpu=1, used_mib=600, pid=kid)
    agent.call("sim.set_process_memory", pid=kid, used_mib=1100)
    done = wait_job(agent, job["id"])
    assert (done["state"], done["reason"]) == ("killed",
                                               "exceeded its 1000 MiB cap: used 1100 MiB on GPU 1")


def test_the_snapshot_says_which_job_each_gpu_process_is_of(start_agent, tmp_path):
    """Each process NVML lists is said to be a job's (its leader or any process of it, as the
    watchdog matches them) or no one's: the scheduler counts the latter's memory as taken."""
    agent = start_agent("1xL4", str(tmp_path / "host"))
    job, leader, kid = launch_with_a_worker(agent, tmp_path, key="k-owned", gpu=0,
                                            memory_mib=2000)
    agent.call("sim.add_process", gpu=0, used_mib=600, pid=leader)
    agent.call("sim.add_process", gpu=0, used_mib=300, pid=kid)
    other = agent.call("sim.add_process", gpu=0, used_mib=700)["pid"]
    listed = {p["pid"]: p for p in agent.call("snapshot")["gpus"][0]["processes"]}
    assert {pid: p["job"] for pid, p in listed.items()} == {
        leader: job["id"], kid: job["id"], other: None}
    agent.call("job.stop", job=job["id"], grace=0)
    wait_job(agent, job["id"])
    assert [p["job"] for p in agent.call("snapshot")["gpus"][0]["processes"]] == [None]


def test_a_snapshot_stands_when_whose_its_processes_are_cannot_be_read(caplog):
    """Reading which job a process is of may fail (the job table, /proc): the snapshot is taken
    all the same, saying nothing of whose they are rather than "no one's", and says why once."""
    from remote_agent.service import Agent
    caplog.set_level(logging.INFO, logger="remote_agent.service")
    nv.sim_open(None, "1xL4")
    agent = Agent(nv, "sim", nv)
    pid = nv.sim_register_process(0, 500)

    def broken(pids):
        raise OSError("the job table is on a full disk")
    agent.owners = broken
    for _ in range(3):
        [listed] = agent.take_snapshot()["gpus"][0]["processes"]
        assert listed["pid"] == pid and "job" not in listed
    said = [r.getMessage() for r in caplog.records if "whose" in r.getMessage()]
    assert said == ["the snapshot cannot say whose its GPU processes are: OSError: the job "
                    "table is on a full disk"]
    agent.owners = lambda pids: {}
    assert agent.take_snapshot()["gpus"][0]["processes"][0]["job"] is None
    assert [r.getMessage() for r in caplog.records if "again" in r.getMessage()] == [
        "the snapshot says whose its GPU processes are again after 3 failed passes"]
