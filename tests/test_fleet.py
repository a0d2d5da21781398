"""The fleet over real SSH: sshd instances on 127.0.0.1, the agent deployed as a zipapp, the
``fractui`` command run as a user would run it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from typing import Dict, List, Optional, Sequence

import pytest

from fractui.config import Config, HostConfig, SshSettings
from fractui.fleet.client import AgentCallError
from fractui.fleet.fleet import Fleet
from fractui.fleet.host import HostSession
from fractui.fleet.zipapp import build_agent_archive
from remote_agent import __version__
from remote_agent.rpc import jsonrpc as rpc
from tests import sshd
from tests.conftest import REPO, stop_host

ssh_env = sshd.ssh_env

SPECS = ["1xA100-80GB:mig", "2xL4", "1xH100:mig,1xA10"]


class SshFleet:
    """Hosts behind real sshd (each behind a cuttable proxy), their config as a file and as
    objects, and a way to run the ``fractui`` command on it."""

    def __init__(self, env, tmp_path):
        self.env = env
        self.tmp = tmp_path
        self.hosts: List[HostConfig] = []
        self.servers: Dict[str, sshd.SshServer] = {}
        self.proxies: Dict[str, sshd.CutProxy] = {}
        self.ssh_config = tmp_path / "ssh_config"
        self.ssh_config.write_text("")
        self.connect_timeout = 5.0

    def add(self, name: str, spec: Optional[str], trust: bool = True, delay_s: float = 0.0,
            key_types=("ed25519",), prefix: Sequence[str] = (), sftp: str = "internal-sftp",
            narrow: bool = False, **extra) -> HostConfig:
        """A host behind its own sshd (run by ``prefix``, its SFTP subsystem ``sftp``:
        ``SshServer``) and a proxy (``narrow``: ``CutProxy``'s)."""
        server = self.env.new_server(name, key_types=key_types, prefix=prefix, sftp=sftp)
        proxy = self.env.proxy(server.port, delay_s=delay_s, narrow=narrow)
        if trust:
            self.env.trust(server, known_hosts_port=proxy.port)
        self.servers[name], self.proxies[name] = server, proxy
        return self.add_port(name, proxy.port, spec, **extra)

    def add_port(self, name: str, port: int, spec: Optional[str] = "1xL4",
                 **extra) -> HostConfig:
        """A host entry for whatever listens on ``port`` (our sshd's proxy, or a port that
        is no SSH server at all)."""
        fields = dict(name=name, host="127.0.0.1", port=port, user="root",
                      identity_file=str(self.env.user_key_path), python=sys.executable,
                      state_dir=str(self.tmp / "state" / name),
                      agent_cache=str(self.tmp / "cache" / name), sim=spec)
        host = HostConfig(**{**fields, **extra})
        self.hosts.append(host)
        return host

    def settings(self) -> SshSettings:
        return SshSettings(known_hosts=str(self.env.known_hosts),
                           connect_timeout=self.connect_timeout,
                           config_file=str(self.ssh_config))

    def config(self) -> Config:
        return Config(path=str(self.tmp / "config.toml"), hosts=tuple(self.hosts),
                      ssh=self.settings())

    def write_config(self) -> str:
        path = self.tmp / "config.toml"
        ssh = self.settings()
        lines = ["[ssh]", "known_hosts = %s" % json.dumps(ssh.known_hosts),
                 "connect_timeout = %r" % ssh.connect_timeout,
                 "config_file = %s" % json.dumps(ssh.config_file), ""]
        for h in self.hosts:
            lines.append("[[hosts]]")
            for key in ("name", "host", "port", "user", "identity_file", "proxy_jump",
                        "python", "state_dir", "agent_cache", "sim", "become"):
                value = getattr(h, key)
                if value is not None:
                    lines.append("%s = %s" % (key, json.dumps(value)))
            lines.append("")
        path.write_text("\n".join(lines))
        return str(path)

    def fractui(self, *args: str, timeout: float = 120,
                env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        return self.side_by_side([args], env, timeout)[0]

    def side_by_side(self, calls: Sequence[Sequence[str]],
                     env: Optional[Dict[str, str]] = None,
                     timeout: float = 120) -> List[subprocess.CompletedProcess]:
        """``fractui`` run with each of ``calls`` at once, as admins at their terminals would
        (where each waits out a port's timeout, together they take about one)."""
        config = self.write_config()  # once: a process may read it as another writes it
        running = [subprocess.Popen([sys.executable, "-m", "fractui", "--config", config, *args],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    cwd=REPO, stdin=subprocess.DEVNULL, env=env)
                   for args in calls]
        try:
            said = [p.communicate(timeout=timeout) for p in running]
            return [subprocess.CompletedProcess(p.args, p.returncode, out, err)
                    for p, (out, err) in zip(running, said)]
        finally:
            for p in running:
                if p.poll() is None:
                    p.kill()
                    p.wait()

    def status(self) -> dict:
        """``fractui status --json``, by host name."""
        done = self.fractui("status", "--json")
        assert done.stdout, "no output; stderr: %s" % done.stderr
        return {h["name"]: h for h in json.loads(done.stdout)["hosts"]}

    def stop(self) -> None:
        for h in self.hosts:
            stop_host(h.state_dir)


@pytest.fixture
def fleet_env(ssh_env, tmp_path):
    env = SshFleet(ssh_env, tmp_path)
    yield env
    env.stop()


def wait_state(session: HostSession, state: str, timeout_s: float = 30.0) -> None:
    deadline = time.time() + timeout_s
    while session.status.state != state:
        assert time.time() < deadline, "%s is %s (%s), not %s" % (
            session.cfg.name, session.status.state, session.status.error, state)
        time.sleep(0.05)


def test_three_hosts_show_their_gpus_and_one_cut_goes_offline_then_comes_back(fleet_env):
    for n, spec in enumerate(SPECS):
        fleet_env.add("gpu-%d" % n, spec)
    hosts = fleet_env.status()
    assert {n: h["state"] for n, h in hosts.items()} == {
        "gpu-0": "online", "gpu-1": "online", "gpu-2": "online"}
    assert [g["name"] for g in hosts["gpu-2"]["gpus"]] == ["NVIDIA H100 80GB HBM3", "NVIDIA A10"]
    assert len(hosts["gpu-1"]["gpus"]) == 2 and hosts["gpu-0"]["agent"]["backend"] == "sim"

    with Fleet(fleet_env.config(), reconnect_max_s=0.5) as fleet:
        fleet.wait_settled(30)
        assert {s.state for s in fleet.statuses()} == {"online"}
        fleet_env.proxies["gpu-1"].cut()
        wait_state(fleet.session("gpu-1"), "offline")
        assert fleet.session("gpu-1").status.error
        assert fleet.session("gpu-0").status.state == "online"
        assert fleet.session("gpu-2").status.state == "online"
        answers = fleet.fan_out("inventory")
        assert isinstance(answers["gpu-1"], Exception) and "offline" in str(answers["gpu-1"])
        assert answers["gpu-0"]["gpus"][0]["name"] == "NVIDIA A100-SXM4-80GB"
        assert fleet_env.fractui("status").returncode == 1
        cut = fleet_env.status()["gpu-1"]
        assert cut["state"] == "offline" and cut["error"]
        fleet_env.proxies["gpu-1"].restore()
        wait_state(fleet.session("gpu-1"), "online")
        assert fleet.session("gpu-1").call("inventory")["gpus"][1]["name"] == "NVIDIA L4"


def test_an_unknown_key_is_refused_until_trusted_and_a_changed_key_again(fleet_env):
    host = fleet_env.add("gpu-new", "1xL4", trust=False)
    known = fleet_env.env.known_hosts
    other = sshd.make_user_key(fleet_env.tmp / "other-key")[1].split()[:2]
    known.write_text("# my fleet\n@cert-authority *.example.org %s\n"
                     "other.example.org %s\nthis line is damaged\n" % (
                         " ".join(other), " ".join(other)))
    before = known.read_text()
    status = fleet_env.status()["gpu-new"]
    assert status["state"] == "untrusted"
    assert "SHA256:" in status["error"] and status["gpus"] == []
    assert not os.path.exists(host.agent_cache)  # nothing was sent to an untrusted host

    trusted = fleet_env.fractui("trust", "gpu-new", "--yes")
    assert trusted.returncode == 0, trusted.stderr
    assert "SHA256:" in trusted.stdout
    after = known.read_text()
    assert after.startswith(before) and len(after.splitlines()) == len(before.splitlines()) + 1
    assert after.splitlines()[-1] == "[127.0.0.1]:%d %s" % (
        host.port, fleet_env.servers["gpu-new"].host_public_key)
    assert fleet_env.status()["gpu-new"]["state"] == "online"

    # the host is reinstalled: same address, new key
    old = fleet_env.servers["gpu-new"]
    old.stop()
    new = fleet_env.env.new_server("gpu-new-reinstalled")
    proxy = fleet_env.proxies["gpu-new"]
    proxy.close()
    fleet_env.proxies["gpu-new"] = fleet_env.env.proxy(new.port)
    fleet_env.hosts[0] = replace(host, port=fleet_env.proxies["gpu-new"].port)
    fleet_env.env.known_hosts.write_text(after.replace(":%d " % host.port, ":%d " % (
        fleet_env.proxies["gpu-new"].port)))
    status = fleet_env.status()["gpu-new"]
    assert status["state"] == "untrusted" and "CHANGED" in status["error"]
    refused = fleet_env.fractui("trust", "gpu-new", "--yes")
    assert refused.returncode == 1 and "CHANGED" in refused.stderr
    assert "# my fleet" in known.read_text() and "@cert-authority" in known.read_text()


def test_the_agent_is_uploaded_once_and_a_new_version_takes_over_keeping_jobs(fleet_env):
    host = fleet_env.add("gpu-up", "1xL4")
    config = fleet_env.config()
    first = HostSession(host, config.ssh, build_agent_archive)
    first.start()
    wait_state(first, "online")
    assert first.status.uploaded is True
    job = first.call("job.launch", {"key": "k-up", "gpu": 0, "memory_mib": 100,
                                    "argv": [sys.executable, "-c", "import time; time.sleep(30)"]})
    first.stop()
    again = HostSession(host, config.ssh, build_agent_archive)
    again.start()
    wait_state(again, "online")
    assert again.status.uploaded is False
    assert len(os.listdir(host.agent_cache)) == 1
    again.stop()

    newer_pkg = fleet_env.tmp / "newer" / "remote_agent"
    shutil.copytree(os.path.join(REPO, "remote_agent"), newer_pkg,
                    ignore=shutil.ignore_patterns("__pycache__"))
    init = newer_pkg / "__init__.py"
    bumped = __version__ + ".1"
    init.write_text(init.read_text().replace('"%s"' % __version__, '"%s"' % bumped))
    newer = HostSession(host, config.ssh, lambda: build_agent_archive(str(newer_pkg)))
    newer.start()
    try:
        wait_state(newer, "online")
        assert newer.status.uploaded is True
        assert len(os.listdir(host.agent_cache)) == 2
        assert newer.call("daemon.version")["version"] == bumped
        kept = newer.call("job.get", {"job": job["id"]})
        assert (kept["state"], kept["pid"]) == ("running", job["pid"])
    finally:
        newer.stop()


def test_a_client_that_sends_a_control_character_in_a_cwd_is_refused_over_ssh(fleet_env):
    """Another client (or an older fractui, before its command line refused them) sends a
    job's cwd with an escape sequence in it, over a real sshd: the agent refuses it, naming
    the param, records nothing, and the host stays online."""
    host = fleet_env.add("gpu-esc", "1xL4")
    session = HostSession(host, fleet_env.config().ssh, build_agent_archive)
    session.start()
    try:
        wait_state(session, "online")
        with pytest.raises(AgentCallError) as err:
            session.call("job.launch", {"key": "k-esc", "gpu": 0, "memory_mib": 10,
                                        "cwd": "/tmp/\x1b]0;owned\x07", "argv": ["true"]})
        assert err.value.code == rpc.INVALID_PARAMS
        assert "job.launch param 'cwd' must be a string free of control characters" in \
            err.value.message
        assert session.call("job.list", {})["jobs"] == []
        assert session.status.state == "online"
    finally:
        session.stop()


def test_proxy_jump_through_a_second_sshd_from_config_and_from_ssh_config(fleet_env):
    target = fleet_env.add("gpu-far", "1xA30:mig")
    jump = fleet_env.env.new_server("bastion")
    fleet_env.env.trust(jump)
    # the far host is reached from the bastion at its own sshd port: no proxy in between
    fleet_env.env.trust(fleet_env.servers["gpu-far"])
    far_port = fleet_env.servers["gpu-far"].port
    fleet_env.hosts[0] = replace(target, port=far_port,
                                 proxy_jump="root@127.0.0.1:%d" % jump.port)
    assert fleet_env.status()["gpu-far"]["state"] == "online"

    # the same route, this time from ~/.ssh/config (with an Include) and an alias
    (fleet_env.tmp / "ssh_config.d").mkdir()
    (fleet_env.tmp / "ssh_config.d" / "bastion.conf").write_text(
        "Host bastion\n  HostName 127.0.0.1\n  Port %d\n  User root\n  IdentityFile %s\n" % (
            jump.port, fleet_env.env.user_key_path))
    fleet_env.ssh_config.write_text(
        "Include %s/ssh_config.d/*.conf\n\nHost far\n  HostName 127.0.0.1\n  Port %d\n"
        "  User root\n  IdentityFile %s\n  ProxyJump bastion\n" % (
            fleet_env.tmp, far_port, fleet_env.env.user_key_path))
    fleet_env.hosts[0] = HostConfig(name="gpu-far", host="far", python=sys.executable,
                                    state_dir=target.state_dir, agent_cache=target.agent_cache,
                                    sim=target.sim)
    far = fleet_env.status()["gpu-far"]
    assert far["state"] == "online", far["error"]
    assert far["gpus"][0]["name"] == "NVIDIA A30"
    # without the bastion the far host cannot be reached through this alias's route
    jump.stop()
    down = fleet_env.status()["gpu-far"]
    assert down["state"] == "offline" and "127.0.0.1" in down["error"]


def test_launch_logs_and_stop_a_real_process_through_the_cli(fleet_env, tmp_path):
    fleet_env.add("gpu-run", "1xL4")
    tricky = ["two words", "it's \"quoted\"", "$(touch %s)" % (tmp_path / "pwned"), "`id`", ";"]
    launched = fleet_env.fractui("launch", "gpu-run", "0", "--memory-mib", "512", "--json",
                                 "--", sys.executable, "-c",
                                 "import sys, time; print(repr(sys.argv[1:]), flush=True); "
                                 "time.sleep(60)", *tricky)
    # nothing on stderr: no library's warning either (paramiko 3 warned of DSA at each key)
    assert (launched.returncode, launched.stderr) == (0, "")
    job = json.loads(launched.stdout)
    assert job["ref"] == "gpu-run/%s" % job["id"] and job["state"] == "running"
    deadline = time.time() + 15
    while True:
        logs = fleet_env.fractui("logs", job["ref"])
        if logs.stdout.strip():
            break
        assert time.time() < deadline
        time.sleep(0.2)
    assert logs.stdout.strip() == repr(tricky)
    assert not (tmp_path / "pwned").exists()
    listed = json.loads(fleet_env.fractui("jobs", "--json").stdout)["jobs"]
    assert [(j["ref"], j["state"]) for j in listed] == [(job["ref"], "running")]
    assert fleet_env.fractui("stop", job["ref"], "--grace", "1").returncode == 0
    deadline = time.time() + 15
    while True:
        listed = json.loads(fleet_env.fractui("jobs", "--json").stdout)["jobs"]
        if listed[0]["state"] != "running":
            break
        assert time.time() < deadline
        time.sleep(0.2)
    assert (listed[0]["state"], listed[0]["reason"]) == ("killed", "stopped by request")


def test_logs_follow_prints_output_until_the_job_ends(fleet_env):
    fleet_env.add("gpu-tail", "1xL4")
    job = json.loads(fleet_env.fractui(
        "launch", "gpu-tail", "0", "--memory-mib", "10", "--json", "--", sys.executable, "-c",
        "import time\nfor i in range(4):\n    print('tick', i, flush=True)\n"
        "    time.sleep(0.4)").stdout)
    followed = fleet_env.fractui("logs", job["ref"], "-f", timeout=60)
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.split("\n")[:4] == ["tick %d" % i for i in range(4)]


def test_mig_plans_shows_and_applies_on_a_remote_host(fleet_env):
    fleet_env.add("gpu-mig", "1xA100-40GB:mig")
    done = fleet_env.fractui("mig", "gpu-mig", "0", "3g.20gb", "--yes")
    assert done.returncode == 0, done.stderr
    assert "create 3g.20gb at slot 4; no running job touched" in done.stdout
    refused = fleet_env.fractui("mig", "gpu-mig", "0", "7g.40gb", "--yes")
    assert refused.returncode == 1 and "--destroy-idle allows it" in refused.stderr
    asked = fleet_env.fractui("mig", "gpu-mig", "0", "1g.5gb")  # no terminal to confirm on
    assert asked.returncode == 1 and "not applied" in asked.stderr


@pytest.mark.parametrize("cpus, said", [(1, "1 CPU"), (0.5, "0.5 CPUs"), (2, "2 CPUs")])
def test_doctor_says_one_cpu_in_the_singular(cpus, said):
    from fractui.fleet.doctor import _resources
    assert _resources({"cpus": cpus, "memory_mib": 512, "limits": {"cpus": "cpuset"}}) == \
        "%s (cpuset), 512 MiB RAM: what jobs here may use" % said


@pytest.mark.parametrize("root", [True, False])
def test_doctor_says_nothing_of_mig_where_nvml_did_not_start(root):
    """An agent whose NVML did not start knows no GPU: its MIG check waits for NVML (skipped,
    as a check after a failed one is), never "no MIG-capable GPU" of a host full of them; and
    one not root is not told that no GPU there needs MIG changes, which it cannot know."""
    from fractui.fleet.doctor import Report, _check_hello
    from remote_agent.gpu import fake_pynvml as nv
    from remote_agent.rpc.jsonrpc import Params
    from remote_agent.service import Agent
    nv.sim_open(None, "2xA100-80GB:mig")
    nv.sim_inject_fault("nvmlInitWithFlags", nv.NVML_ERROR_DRIVER_NOT_LOADED)
    agent = Agent(nv, "sim", nv)
    report = Report("gpu-a")
    hello = agent.hello(Params("hello", {}, ()), [])
    if not root:  # as an agent on a real host, not root, says it
        hello["privileges"] = {"root": False, "mig_changes": False, "reason": (
            "the agent runs as uid 1000 without root, and MIG changes need root")}
    _check_hello(hello, HostConfig(name="gpu-a"), report)
    checks = {c.name: c for c in report.checks}
    assert checks["nvml"].status == "fail" and "NVML did not start" in checks["nvml"].detail
    assert (checks["mig"].status, checks["mig"].detail) == ("skip", "needs NVML")
    assert root or (checks["privileges"].status, checks["privileges"].detail) == (
        "skip", "not root; whether a GPU here needs MIG changes needs NVML")


def test_an_unreachable_host_is_reported_for_that_host_not_as_a_traceback(fleet_env):
    fleet_env.add("gpu-ok", "1xL4")
    fleet_env.add("gpu-gone", "1xL4")
    fleet_env.proxies["gpu-gone"].cut()
    done = fleet_env.fractui("jobs")
    assert done.returncode == 1
    assert "gpu-gone" in done.stderr and "Traceback" not in done.stderr
    doctor = fleet_env.fractui("doctor", "--json")
    reports = {r["name"]: r for r in json.loads(doctor.stdout)["hosts"]}
    assert reports["gpu-ok"]["ok"] is True
    resources = {c["name"]: c for c in reports["gpu-ok"]["checks"]}["resources"]
    assert re.fullmatch(r"(1 CPU|\d+(\.\d+)? CPUs) \((machine|cpuset|cgroup cpu\.\S+)\), \d+ MiB RAM "
                        r"\((machine|cgroup memory\.\S+)\): what jobs here may use",
                        resources["detail"]), resources
    gone = {c["name"]: c for c in reports["gpu-gone"]["checks"]}
    assert gone["ssh"]["status"] == "fail" and gone["ssh"]["fix"]
    assert gone["agent"]["status"] == "skip"


@pytest.mark.parametrize("body, line, words", [
    ('[[hosts]]\nname = "a"\nprot = 22\n', 3, "unknown key 'prot'"),
    ('[[hosts]]\nname = "a"\nport = "22"\n', 3, "must be an integer"),
])
def test_a_bad_config_names_file_and_line_and_exits_2(tmp_path, body, line, words):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    done = subprocess.run([sys.executable, "-m", "fractui", "--config", str(path), "status"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2
    assert done.stderr.startswith("fractui: %s:%d: " % (path, line))
    assert words in done.stderr
