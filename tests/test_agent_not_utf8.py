"""Bytes that are no UTF-8, on a real agent: in what the host gives it (its state dir's name, a
directory on its PATH, a setting's path), which Python reads with a lone surrogate for each
such byte, and in a job's output. What the agent says reads U+FFFD for each, as a job's output
does, and nothing it does fails for them (docs/decisions.md, "Text the agent says is
Unicode"). What a client sends is refused where it holds a lone surrogate (and
tests/test_protocol_fuzz.py): a job's argv, env and cwd cannot carry one in."""

from __future__ import annotations

import os
import time

import pytest

from remote_agent import text
from remote_agent.daemon.paths import AgentPaths
from remote_agent.jobs import store as job_store
from remote_agent.rpc import jsonrpc as rpc
from tests.conftest import AgentError
from tests import podman as containers
from tests.test_agent_handover import handover_words
from tests.test_jobs import PY, script, until_file, wait_job

podman = containers.podman  # the fixture


def _odd(path) -> str:
    """``path`` followed by a folder whose name is the byte 0xff, as Python names it."""
    return os.fsdecode(os.fsencode(str(path)) + b"/odd\xff")


def _raw_answer(agent, method: str) -> bytes:
    """The agent's answer line to ``method``, as it came."""
    agent.send(method)
    return agent.proc.stdout.readline()


def test_an_answer_says_a_path_that_is_no_utf8_with_replacement_characters(start_agent,
                                                                            tmp_path):
    """The state dir's name holds the byte 0xff: ``daemon.version`` says it with U+FFFD, its
    line valid UTF-8 for a strict reader; before, JSON's escape of the lone surrogate
    (``\\udcff``), which such a reader refuses. A second connection, with the same settings (a
    path of the same kind), uses the same daemon: its bridge reads its settings as the daemon
    says them, and sees no change to hand over for."""
    state = _odd(tmp_path)
    lib = _odd(tmp_path) + "/libvgpu.so"
    agent = start_agent("1xL4", state, "--hami-core-lib", lib)
    line = _raw_answer(agent, "daemon.version")
    assert b"\\udc" not in line, line
    said = rpc.parse(line)["result"]
    assert said["state_dir"] == str(tmp_path) + "/odd\ufffd"
    assert said["settings"]["hami_core_lib"] == str(tmp_path) + "/odd\ufffd/libvgpu.so"
    again = start_agent("1xL4", state, "--hami-core-lib", lib)
    assert again.call("daemon.version")["pid"] == said["pid"]
    assert agent.call("daemon.version")["pid"] == said["pid"]  # still served by it


def test_a_setting_s_path_that_differs_only_in_bytes_that_are_no_utf8_hands_over(start_agent,
                                                                                  tmp_path):
    """Two paths whose names differ only in a byte that is no UTF-8 (0xfe, 0xff) both read
    U+FFFD in ``daemon.version``; a bridge given the other one hands the daemon over all the
    same, and names the setting. Before, the two read the same to the bridge: it used the
    daemon started with the other library, and said nothing."""
    state = str(tmp_path / "state")
    first = os.fsdecode(os.fsencode(str(tmp_path)) + b"/odd\xfe/libvgpu.so")
    other = _odd(tmp_path) + "/libvgpu.so"
    agent = start_agent("1xL4", state, "--hami-core-lib", first)
    old = agent.call("daemon.version")
    again = start_agent("1xL4", state, "--hami-core-lib", other)
    info = again.call("daemon.version")
    assert info["pid"] != old["pid"]
    assert info["settings"]["hami_core_lib"] == old["settings"]["hami_core_lib"]  # (said alike)
    kept = start_agent("1xL4", state, "--hami-core-lib", other)  # the same bytes: kept
    assert kept.call("daemon.version")["pid"] == info["pid"]
    said = handover_words(again)
    assert "its settings differ: hami_core_lib" in said, said


def test_a_start_that_fails_on_a_path_that_is_no_utf8_says_why(start_agent, tmp_path,
                                                                monkeypatch):
    """A program found on the agent's PATH in a folder whose name is no UTF-8 names an
    interpreter that is missing: the launch fails saying so, the folder with U+FFFD. Before,
    the job's words could not be encoded, so none reached its shim: the job read as run,
    exit code 127, no reason."""
    folder = _odd(tmp_path)
    os.makedirs(folder)
    program = os.path.join(folder, "prog")
    with open(program, "w") as f:
        f.write("#!/nonexistent/interpreter\n")
    os.chmod(program, 0o755)
    monkeypatch.setenv("PATH", folder + os.pathsep + os.environ["PATH"])
    agent = start_agent("1xL4")
    try:
        job = agent.call("job.launch", key="k-odd", gpu=0, memory_mib=10, argv=["prog"])
    except AgentError as err:
        assert err.code == rpc.START_FAILED, err
        reason = err.data["reason"]
    else:
        reason = wait_job(agent, job["id"])["reason"]
    assert reason == ("cannot run prog: its first line names the interpreter "
                      "/nonexistent/interpreter, which is missing (%s/odd\ufffd/prog)"
                      % tmp_path), reason


def test_output_that_is_no_utf8_reads_the_same_followed_and_asked_for(start_agent, tmp_path):
    """A job writes a byte that is no UTF-8 and a character in two halves, a while apart: its
    followed log says each as ``job.logs`` does, U+FFFD for the byte and the character whole.
    Before, the push of what was there decoded the half character alone, and the rest
    after it: two U+FFFD where ``job.logs`` said é."""
    agent = start_agent("1xL4")
    go = tmp_path / "go"
    job = agent.call("job.launch", key="k-halves", gpu=0, memory_mib=10, argv=script(
        "import os, sys, time\nsys.stdout.buffer.write(b'a\\xff\\xc3'); sys.stdout.flush()\n"
        "while not os.path.exists(%r):\n    time.sleep(0.05)\n"
        "sys.stdout.buffer.write(b'\\xa9b\\n')" % str(go)))
    agent.call("job.logs", job=job["id"], follow=True, lines=0)
    texts = []
    while True:  # the first push (what the job wrote before it waits), then the rest
        msg = agent.next_notification()
        assert msg["method"] == "log" and msg["params"]["job"] == job["id"], msg
        if msg["params"].get("eof"):
            break
        texts.append(msg["params"]["data"])
        go.touch()
    text = "".join(texts)
    assert text == "a\ufffd\u00e9b\n"
    assert agent.call("job.logs", job=job["id"])["lines"] == ["a\ufffd\u00e9b"]


def test_the_job_table_keeps_words_that_name_a_path_that_is_no_utf8(tmp_path):
    """A job's reason naming a path of the host's that is no UTF-8 (a state dir's: "see
    .../shim.log") is kept with U+FFFD. Before, SQLite refused it (UnicodeEncodeError), so
    the job's end could not be recorded: it stayed running, its end tried again each pass."""
    db = job_store.JobStore(str(tmp_path / "jobs.db"))
    try:
        job = db.insert(job_store.Job(0, "k", "f", "n", ["true"], {}, None, [0], ["GPU-x"], None,
                                      None, 10, time.time(), state="running"))
        db.update(job, state="lost", reason="its shim died (see %s/shim.log)" % _odd("/s"),
                  stop_reason="asked \udcff")
        kept = db.get(job.id)
    finally:
        db.close()
    assert (kept.reason, kept.stop_reason) == ("its shim died (see /s/odd\ufffd/shim.log)",
                                               "asked \ufffd")
    assert (job.reason, job.stop_reason) == (kept.reason, kept.stop_reason)


@pytest.mark.parametrize("given, param", [
    ({"argv": [PY, "-c", "pass", "x\udcff"]}, "argv"),
    ({"env": {"ODD": "x\udcff"}}, "env"),
    ({"cwd": "/tmp/odd\udcff"}, "cwd"),
])
def test_a_launch_naming_bytes_that_are_no_utf8_is_refused_naming_its_param(start_agent, given,
                                                                            param):
    """A client that reads a host's bytes with surrogateescape sends a lone surrogate: the
    launch is refused, naming the param, and nothing is recorded (no path, argument or
    value is guessed at: U+FFFD there would name another file, pass another word)."""
    agent = start_agent("1xL4")
    with pytest.raises(AgentError) as err:
        agent.call("job.launch", **{"key": "k-odd", "gpu": 0, "memory_mib": 10,
                                    "argv": [PY, "-c", "pass"], **given})
    assert err.value.code == rpc.INVALID_PARAMS, err.value
    assert "'%s'" % param in err.value.message and "valid Unicode" in err.value.message, \
        err.value.message
    assert agent.call("job.list")["jobs"] == []


def test_a_cgroup_parent_named_in_bytes_that_are_no_utf8_gives_jobs_their_cgroup_in_it(
        start_agent, tmp_path, cgroup_parent):
    """The job table keeps a job's cgroup named under such a parent as its bytes (SQLite
    takes no lone surrogate): the job joins it before it runs, its driver limit is set on it,
    and its end, read from the table, removes it. Before, jobs got no cgroup there (found by
    their session, which a process leaves by setsid; no driver limit), said only in hello."""
    os.mkdir(cgroup_parent)  # (the agent makes the parent, not the folder above it)
    parent = os.fsdecode(os.fsencode(cgroup_parent) + b"/odd\xff")
    state = str(tmp_path / "state")
    agent = start_agent("1xL4", state, "--cgroup-parent", parent)
    assert agent.call("daemon.version")["job_tracking"] == "cgroup"
    assert "driver_limit" in agent.call("hello")["gpus"][0]["cap_layers"]
    release = tmp_path / "release"
    job = agent.call("job.launch", key="k-odd", gpu=0, memory_mib=10,
                     argv=until_file(release, 0))
    cgroup = os.path.join(parent, "%s-%s" % (AgentPaths(state).digest, job["id"]))
    assert (job["cgroup"], job["caps"][:2]) == (text.said(cgroup),
                                                ["visible_devices", "driver_limit"])
    with open(os.path.join(cgroup, "cgroup.procs")) as procs:
        assert [int(pid) for pid in procs.read().split()] == [job["pid"]]
    assert agent.call("job.get", job=job["id"])["cgroup"] == text.said(cgroup)
    release.touch()
    assert wait_job(agent, job["id"])["exit_code"] == 0
    deadline = time.monotonic() + 10
    while os.path.exists(cgroup):
        assert time.monotonic() < deadline, "the job's cgroup outlived it"
        time.sleep(0.05)


def test_a_container_job_under_a_cgroup_parent_that_is_no_utf8_says_its_driver_limit_unset(
        start_agent, tmp_path, cgroup_parent, podman):
    """A share job of a real podman (cgroupfs) gets its cgroup under such a parent, but its
    container cannot go below it: the runtime's OCI spec is JSON, which reads the byte as
    U+FFFD. So no ``--cgroup-parent`` is given, and its notes say the driver's limit was not
    applied and why; the job runs, its container found and watched. Before, the runtime was
    given the job's cgroup: it made another, named with U+FFFD beside the parent, and ran the
    container there, outside the driver's limit, which the job's caps said applied."""
    os.mkdir(cgroup_parent)
    parent = _odd(cgroup_parent)
    state = str(tmp_path / "state")
    agent = start_agent("1xL4", state, "--cgroup-parent", parent)
    try:
        job = agent.call("job.launch", key="k-odd-cg", gpu=0, memory_mib=100,
                         image=podman.image, env={"PYTHONPATH": containers.IMAGE_CODE},
                         argv=[containers.PYTHON, "-c", "import time; time.sleep(600)"])
        assert (job["cgroup"], "driver_limit" in job["caps"]) == (
            text.said(os.path.join(parent, "%s-%s" % (AgentPaths(state).digest, job["id"]))),
            False)
        assert job["cap_notes"] == [
            "driver_limit not applied: the job's cgroup %s is named in bytes that are no "
            "UTF-8, which podman's OCI spec (JSON) cannot name: its container would go into "
            "another cgroup" % job["cgroup"]]
        deadline = time.monotonic() + 60
        while not agent.call("job.get", job=job["id"])["container_cgroup"]:
            assert time.monotonic() < deadline, "the container's cgroup was never found"
            time.sleep(0.1)
        assert os.listdir(cgroup_parent.encode()).count("odd\ufffd".encode()) == 0
        agent.call("job.stop", job=job["id"], grace=1)
        assert wait_job(agent, job["id"], timeout=60)["state"] == "killed"
    finally:
        prefix = "fractui-%s-" % AgentPaths(state).digest
        for name in podman.run(["ps", "-a", "--format", "{{.Names}}"]).stdout.split():
            if name.startswith(prefix):
                podman.remove(name)


def test_a_container_job_s_env_file_keeps_the_bytes_of_a_path_that_is_no_utf8(start_agent,
                                                                               podman, tmp_path):
    """A simulated host whose state dir's name is no UTF-8: a container job's environment
    names its GPUs' state there, and goes to the runtime in an env file, which keeps that
    path's very bytes. Before, the file was encoded strictly: the launch failed inside the
    agent (UnicodeEncodeError). (The runtime itself cannot take such a path: its OCI spec is
    JSON, which reads the byte as U+FFFD, and runc finds no folder of that name to mount; the
    job ends in its words.)"""
    state = _odd(tmp_path)
    agent = start_agent("1xL4", state)
    try:
        job = agent.call("job.launch", key="k-odd-c", gpu=0, memory_mib=10, image=podman.image,
                         env={"PYTHONPATH": containers.IMAGE_CODE},
                         argv=[containers.PYTHON, "-c", "pass"])
        env_file = os.path.join(os.fsencode(state), b"jobs", b"j1", b"container.env")
        with open(env_file, "rb") as f:
            assert b"FRACTUI_SIM_STATE=%s\n" % os.fsencode(AgentPaths(state).sim_state) \
                in f.read().splitlines(keepends=True)
        wait_job(agent, job["id"], timeout=60)
    finally:
        prefix = "fractui-%s-" % AgentPaths(state).digest
        for name in podman.run(["ps", "-a", "--format", "{{.Names}}"]).stdout.split():
            if name.startswith(prefix):
                podman.remove(name)
