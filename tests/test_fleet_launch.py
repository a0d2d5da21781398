"""The host verbs over real sshd: every message about a host names it (the agent's own words
too), and `launch` is safe to run again: after a cut link it answers the job it started
instead of starting a second one, and says so."""

from __future__ import annotations

import glob
import json
import os
import shlex
import subprocess
import sys

import pytest

from fractui.fleet.fleet import Fleet
from tests import sshd
from tests.conftest import REPO
from tests.test_fleet import SshFleet
from tests.test_job_supervision import wait_until
from tests.test_tui_demo import Terminal

ssh_env = sshd.ssh_env

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def fleet_env(ssh_env, tmp_path):
    env = SshFleet(ssh_env, tmp_path)
    yield env
    env.stop()


def refusal(done: subprocess.CompletedProcess) -> str:
    """What a refused verb printed: exit 1, no traceback, every line naming the host."""
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr and "this host" not in done.stderr, done.stderr
    return done.stderr


@pytest.fixture(scope="module")
def refusing_host(tmp_path_factory):
    """gpu-n (an L4) behind its own sshd, shared by the refusals below: each is refused
    without changing what the host has (a job that cannot enter its cwd is one that ended),
    so they need not each start a server and deploy an agent of their own."""
    root = tmp_path_factory.mktemp("refusals")
    env = sshd.SshEnv(root)
    fleet = SshFleet(env, root)
    try:
        fleet.add("gpu-n", "1xL4")
        yield fleet
    finally:
        fleet.stop()
        env.close()


@pytest.mark.parametrize("args, words", [
    (("launch", "gpu-n", "9", "--memory-mib", "10", "--", "true"), "no GPU 9 on gpu-n"),
    (("launch", "gpu-n", "0", "--memory-mib", "10", "--cwd", "/no/such/dir", "--", "true"),
     "gpu-n: the job cannot start: cannot enter its cwd /no/such/dir"),
    (("launch", "gpu-n", "0", "--memory-mib", "999999", "--", "true"), "gpu-n: GPU 0"),
    (("stop", "gpu-n/j404"), "no job 'j404' on gpu-n"),
    (("logs", "gpu-n/j404"), "no job 'j404' on gpu-n"),
    (("mig", "gpu-n", "0", "1g.10gb", "--yes"), "gpu-n: GPU 0 (NVIDIA L4) does not support "
                                               "MIG"),
    (("mig", "gpu-n", "9", "1g.10gb", "--yes"), "no GPU 9 on gpu-n"),
])
def test_refusals_name_the_host(refusing_host, args, words):
    said = refusal(refusing_host.fractui(*args))
    assert said.startswith("fractui: ") and words in said, said


def test_a_refused_mig_change_names_the_host(fleet_env):
    fleet_env.add("gpu-m", "1xA100-40GB:mig")
    assert fleet_env.fractui("mig", "gpu-m", "0", "3g.20gb", "--yes").returncode == 0
    said = refusal(fleet_env.fractui("mig", "gpu-m", "0", "7g.40gb", "--yes"))
    assert said.startswith("fractui: gpu-m: ") and "destroy_idle" not in said
    assert said.endswith("; --destroy-idle allows it (fractui mig gpu-m 0 7g.40gb "
                         "--destroy-idle)\n"), said


def host_jobs(fleet_env: SshFleet, host: str) -> list:
    done = fleet_env.fractui("jobs", host, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["jobs"]


def run_printed(command: str) -> subprocess.CompletedProcess:
    """Run a command line fractui printed, as the user would paste it."""
    words = shlex.split(command)
    assert words[0] == "fractui"
    return subprocess.run([sys.executable, "-m", "fractui"] + words[1:], capture_output=True,
                          text=True, timeout=120, cwd=REPO, stdin=subprocess.DEVNULL)


def test_a_launch_cut_after_it_was_sent_is_answered_by_running_it_again(fleet_env):
    host = fleet_env.add("gpu-l", "1xL4")
    assert fleet_env.fractui("status").returncode == 0  # the agent is deployed and running
    proxy = fleet_env.proxies["gpu-l"]
    # the request is padded well past what a connection sends before it (about 3 KB), so
    # the hold starts with the launch request itself: its answer can never come back
    pad = "x" * 48000
    proxy.hold_down_after(32000)
    words = ["launch", "gpu-l", "0", "--memory-mib", "64", "--env", "PAD=" + pad, "--json",
             "--"] + SLEEP
    first = subprocess.Popen(
        [sys.executable, "-m", "fractui", "--config", fleet_env.write_config()] + words,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        stdin=subprocess.DEVNULL)
    try:
        assert proxy.holding.wait(60)
        started = os.path.join(host.state_dir, "jobs", "*", "started.json")
        while not glob.glob(started):  # the agent got the request and started the job
            assert first.poll() is None, first.communicate()
            proxy.holding.wait(0.05)
        proxy.cut()
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 1 and out == ""
    assert "Traceback" not in err
    assert "gpu-l: the connection was lost waiting for the answer to job.launch" in err
    assert "The job may have started on gpu-l (key cli-" in err
    again = err.split("only if it did not:\n  ", 1)[1].split("\n", 1)[0]
    assert "jobs gpu-l --json" in err

    proxy.hold_down_after(None)
    proxy.restore()
    rerun = run_printed(again)
    assert rerun.returncode == 0, rerun.stderr
    job = json.loads(rerun.stdout)
    assert job["earlier"] is True and job["state"] == "running"
    assert "was launched earlier" in rerun.stderr
    # the user's own words, run again, name the same job too (the key comes from them)
    same = fleet_env.fractui(*words)
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["id"] == job["id"]
    listed = host_jobs(fleet_env, "gpu-l")
    assert [j["ref"] for j in listed] == ["gpu-l/%s" % job["id"]]

    # on purpose, a second one: the notice says how
    another = same.stderr.split("give it a new key:\n  ", 1)[1].split("\n", 1)[0]
    second = run_printed(another)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["earlier"] is False
    assert len(host_jobs(fleet_env, "gpu-l")) == 2


def test_a_repeated_mig_launch_reuses_its_job_and_instance(fleet_env):
    fleet_env.add("gpu-p", "1xA100-40GB:mig")
    words = ("launch", "gpu-p", "0", "--profile", "2g.10gb", "--json", "--") + tuple(SLEEP)
    first = fleet_env.fractui(*words)
    assert first.returncode == 0, first.stderr
    again = fleet_env.fractui(*words)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["id"] == json.loads(first.stdout)["id"]
    assert json.loads(again.stdout)["earlier"] is True
    gpu = fleet_env.status()["gpu-p"]["gpus"][0]
    assert [i["profile"] for i in gpu["instances"]] == ["2g.10gb"]
    # another command (another name) is another job, on another instance
    other = fleet_env.fractui(*words[:5], "--name", "second", "--json", "--", *SLEEP)
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout)["earlier"] is False
    gpu = fleet_env.status()["gpu-p"]["gpus"][0]
    assert [i["profile"] for i in gpu["instances"]] == ["2g.10gb", "2g.10gb"]


def test_a_mig_change_by_hand_whose_answer_is_lost_is_audited_and_not_made_twice(fleet_env,
                                                                                 tmp_path):
    """The SSH link drops while the agent is inside NVML destroying the instance asked: the
    verb says the change may have been made, and the audit says who asked it and that its
    answer was lost (a GPU changed with nothing in the audit before); the agent carries it
    out, and the same destroy asked again is refused as nothing left to destroy."""
    fleet_env.add("gpu-m", "1xA100-40GB:mig")
    made = fleet_env.fractui("mig", "gpu-m", "0", "3g.20gb", "--yes", "--json")
    assert made.returncode == 0, made.stderr
    uuid = json.loads(made.stdout)["instance"]["uuid"]
    gate = tmp_path / "gate"
    with Fleet(fleet_env.config(), reconnect_max_s=0.5) as fleet:
        fleet.wait_settled(60)
        fleet.session("gpu-m").call("sim.hold", {"function": "nvmlGpuInstanceDestroy",
                                                 "gate": str(gate)})
    words = ("mig", "gpu-m", "0", "--destroy", uuid, "--yes")
    first = subprocess.Popen(
        [sys.executable, "-m", "fractui", "--config", fleet_env.write_config(), *words],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: os.path.exists(str(gate) + ".held"), "the destroy held in NVML")
        fleet_env.proxies["gpu-m"].cut()
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 1 and "Traceback" not in err, err
    assert out.startswith("destroy idle 3g.20gb at slot ")  # the plan shown, nothing more
    assert "gpu-m: the connection was lost waiting for the answer to mig.destroy" in err
    assert "The change may have been made on gpu-m: look at gpu 0 there" in err
    gate.touch()  # the agent, whose caller is gone, carries the destroy out
    fleet_env.proxies["gpu-m"].restore()
    wait_until(lambda: fleet_env.status()["gpu-m"]["gpus"][0]["instances"] == [],
               "the destroy carried out")
    audit = json.loads(fleet_env.fractui("audit", "--json").stdout)["audit"]
    assert [(e["action"], e["detail"]["change"]) for e in audit] == [
        ("mig", "create"), ("mig", "destroy")]
    assert audit[1]["why"].startswith("asked to destroy idle 3g.20gb at slot ")
    assert "; the answer was lost (" in audit[1]["why"], audit[1]
    again = refusal(fleet_env.fractui(*words))
    assert "gpu-m gpu 0 has no MIG instance %s" % uuid in again, again
    assert len(json.loads(fleet_env.fractui("audit", "--json").stdout)["audit"]) == 2


OSC_52 = "\x1b]52;c;SGk=\x07"  # sets the terminal's clipboard


def _in_a_terminal(fleet_env: SshFleet, *args: str) -> bytes:
    """What ``fractui ARGS`` writes to a real terminal (a pty), stdout and stderr alike."""
    return Terminal([sys.executable, "-m", "fractui", "--config", fleet_env.write_config(),
                     *args]).to_the_end()


def test_others_words_reach_a_terminal_as_text_and_a_pipe_as_they_are(fleet_env):
    """A job's output and an agent's words about a job's argv, with an escape sequence in
    each: to a terminal, the words without it; into a pipe, every byte as written."""
    fleet_env.add("gpu-n", "1xL4")
    code = "print('out:' + %r + chr(27) + '[1;31mred' + chr(27) + '[0m!')" % OSC_52
    job = json.loads(fleet_env.fractui("launch", "gpu-n", "0", "--memory-mib", "10",
                                       "--json", "--", sys.executable, "-c", code).stdout)
    ref = "gpu-n/%s" % job["id"]
    wait_until(lambda: "out:" in fleet_env.fractui("logs", ref).stdout, "the job's output")
    piped = fleet_env.fractui("logs", ref).stdout
    assert "out:%s\x1b[1;31mred\x1b[0m!" % OSC_52 in piped  # a file gets what the job wrote
    shown = _in_a_terminal(fleet_env, "logs", ref)
    assert b"out:red!" in shown and b"\x1b]52" not in shown
    program = "/no/such/" + OSC_52 + "prog"
    refused = fleet_env.fractui("launch", "gpu-n", "0", "--memory-mib", "10", "--", program)
    assert refused.returncode == 1 and OSC_52 in refused.stderr  # the agent's words, as said
    shown = _in_a_terminal(fleet_env, "launch", "gpu-n", "0", "--memory-mib", "10", "--",
                           program)
    assert b"cannot run /no/such/prog" in shown and b"\x1b]52" not in shown
