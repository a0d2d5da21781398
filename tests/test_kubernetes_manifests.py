"""deploy/kubernetes checked against what the agent needs, and its image built and run for real.

The manifests are read as YAML and their fields compared with the agent's: the DaemonSet's
command and probe parse as the agent's own command line, its state dir is the hostPath's mount,
the Containerfile puts the agent where the DaemonSet runs it. Then the Containerfile is built
with podman from the tests' own base image (no registry), run as the DaemonSet runs it, with a
CPU and memory limit, and its liveness probe's exact command must answer.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import shlex
import uuid
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import yaml

from fractui.config import HostConfig, load_config, tomllib  # tomli on Python 3.10
from remote_agent.cli import _parser as agent_parser
from tests.cli_run import subprocess_run
from tests.conftest import REPO
from tests.podman import IMAGE_AGENT, Podman, podman  # noqa: F401 - the fixture

DEPLOY = os.path.join(REPO, "deploy", "kubernetes")
DOCS = os.path.join(REPO, "docs", "kubernetes.md")


def documents() -> Dict[str, List[Dict[str, Any]]]:
    out = {}
    for path in sorted(glob.glob(os.path.join(DEPLOY, "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            out[os.path.basename(path)] = [d for d in yaml.safe_load_all(f) if d is not None]
    return out


def objects() -> List[Dict[str, Any]]:
    return [d for name, docs in documents().items() if name != "kustomization.yaml"
            for d in docs]


def one(kind: str) -> Dict[str, Any]:
    found = [o for o in objects() if o["kind"] == kind]
    assert len(found) == 1, "%d %s objects" % (len(found), kind)
    return found[0]


def containerfile() -> List[Tuple[str, str]]:
    """(instruction, rest) per instruction, continuation lines joined, comments left out."""
    with open(os.path.join(DEPLOY, "Containerfile"), encoding="utf-8") as f:
        text = f.read().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def instruction(word: str) -> str:
    found = [rest for w, rest in containerfile() if w == word]
    assert len(found) == 1, "%d %s instructions" % (len(found), word)
    return found[0]


def agent_container() -> Dict[str, Any]:
    containers = one("DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def state_dir_of(argv: List[str]) -> str:
    return argv[argv.index("--state-dir") + 1]


def test_every_manifest_parses_and_the_kustomization_lists_them_all():
    docs = documents()
    assert set(docs) == {"daemonset.yaml", "kustomization.yaml", "namespace.yaml", "rbac.yaml"}
    for name, found in docs.items():
        assert found, "%s holds no object" % name
        for d in found:
            assert {"apiVersion", "kind"} <= set(d), name
    kustomization = docs["kustomization.yaml"][0]
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(n for n in docs
                                                        if n != "kustomization.yaml")


def test_everything_lives_in_the_one_namespace():
    namespace = one("Namespace")["metadata"]["name"]
    for o in objects():
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == namespace, o["metadata"]["name"]
    labels = one("Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"  # hostPID, privileged


def test_the_daemonset_runs_on_gpu_nodes_in_the_hosts_pid_namespace():
    spec = one("DaemonSet")["spec"]["template"]["spec"]
    assert spec["hostPID"] is True
    assert spec["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        spec["tolerations"]
    assert one("DaemonSet")["spec"]["updateStrategy"] == {"type": "OnDelete"}  # jobs end
    security = agent_container()["securityContext"]
    assert security["privileged"] is True and security["runAsUser"] == 0


def test_the_state_dir_is_on_the_node_and_mounted_where_the_agent_keeps_it():
    spec = one("DaemonSet")["spec"]["template"]["spec"]
    container = agent_container()
    state = state_dir_of(container["command"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    named = [n for n, path in mounts.items() if path == state]
    assert len(named) == 1, "no volume is mounted at the agent's state dir %s" % state
    assert volumes[named[0]]["hostPath"]["type"] == "DirectoryOrCreate"
    assert volumes[named[0]]["hostPath"]["path"].startswith("/")


def test_the_command_and_the_probe_are_the_agents_own_command_line():
    container = agent_container()
    command = container["command"]
    probe = container["livenessProbe"]["exec"]["command"]
    for argv in (command, probe):
        assert argv[:2] == ["python3", IMAGE_AGENT]
    entry = agent_parser().parse_args(command[2:])
    assert entry.verb == "pod" and entry.backend is None and entry.sim is None  # real GPUs
    hello = agent_parser().parse_args(probe[2:])
    assert hello.verb == "hello" and hello.state_dir == entry.state_dir


def test_the_containerfile_puts_the_agent_where_the_daemonset_runs_it():
    copy = shlex.split(instruction("COPY"))
    assert copy[-2:] == ["agent.pyz", IMAGE_AGENT]  # what `fractui agent-archive DIR` writes
    entrypoint = json.loads(instruction("ENTRYPOINT"))
    cmd = json.loads(instruction("CMD"))
    assert entrypoint + cmd == agent_container()["command"]  # `podman run IMAGE` = the pod
    assert not [w for w, _ in containerfile() if w == "RUN"]  # builds with no shell, no network


def test_rbac_grants_exec_into_the_namespace_only():
    role = one("Role")
    assert not [o for o in objects() if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    rules = {r["resources"][0]: set(r["verbs"]) for r in role["rules"]}
    assert "create" in rules["pods/exec"] and {"get", "list"} <= rules["pods"]
    binding = one("RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}


def docs_host_entry() -> Dict[str, Any]:
    """The ``[[hosts]]`` example of docs/kubernetes.md."""
    with open(DOCS, encoding="utf-8") as f:
        blocks = re.findall(r"```toml\n(.*?)```", f.read(), re.S)
    assert len(blocks) == 1, "docs/kubernetes.md should hold one TOML example"
    return tomllib.loads(blocks[0])["hosts"][0]


def test_the_docs_config_entry_reaches_these_pods():
    """Its exec names the namespace, its pod lookup the DaemonSet's label, its state dir and
    agent path the DaemonSet's."""
    entry = docs_host_entry()
    daemonset = one("DaemonSet")
    namespace = daemonset["metadata"]["namespace"]
    assert entry["transport"] == "exec" and entry["agent"] == "image"
    assert entry["exec"][:2] == ["kubectl", "exec"] and "-i" in entry["exec"]
    assert entry["exec"][entry["exec"].index("-n") + 1] == namespace
    assert "{target}" in entry["exec"] and entry["exec"][-1] == "--"
    target = entry["exec_target"]
    assert target[target.index("-n") + 1] == namespace
    label = ",".join("%s=%s" % kv for kv in
                     daemonset["spec"]["selector"]["matchLabels"].items())
    assert target[target.index("-l") + 1] == label
    assert "spec.nodeName=%s" % entry["name"] in target and target[-2:] == ["-o", "name"]
    assert entry["state_dir"] == state_dir_of(agent_container()["command"])
    assert entry["agent_path"] == IMAGE_AGENT


def test_the_docs_config_entry_loads_and_the_image_path_is_the_default(tmp_path):
    """Against fractui's own config."""
    defaults = {f.name: f.default for f in dataclasses.fields(HostConfig)}
    assert defaults["agent_path"] == IMAGE_AGENT
    with open(DOCS, encoding="utf-8") as f:
        example = re.findall(r"```toml\n(.*?)```", f.read(), re.S)[0]
    path = tmp_path / "config.toml"
    path.write_text(example)
    host = load_config(str(path)).hosts[0]
    assert (host.transport, host.state_dir) == ("exec", "/var/lib/fractui-agent")


@pytest.fixture
def agent_image(podman: Podman, tmp_path) -> Iterator[str]:  # noqa: F811
    """deploy/kubernetes/Containerfile built with podman, on the tests' own image as BASE, from
    a context that ``fractui agent-archive`` wrote; removed afterwards."""
    context = tmp_path / "build"
    done = subprocess_run(["agent-archive", str(context)])
    assert done.returncode == 0, done.stderr
    tag = "localhost/fractui-agent-test:%s" % uuid.uuid4().hex[:10]
    podman.run(["build", "-q", "-f", os.path.join(DEPLOY, "Containerfile"), "--build-arg",
                "BASE=%s" % podman.image, "-t", tag, str(context)], timeout=300)
    try:
        yield tag
    finally:
        podman.run(["rmi", "-f", tag], check=False)


def test_the_image_runs_as_the_daemonset_and_its_probe_answers_with_the_pods_limits(
        podman: Podman, agent_image: str):  # noqa: F811
    """The image's own entry (what the DaemonSet's command repeats), limited as a pod would be:
    the liveness probe's exact command answers hello, with the limits, not the machine's."""
    probe = agent_container()["livenessProbe"]["exec"]["command"]
    name = "fractui-test-%s" % uuid.uuid4().hex[:10]
    try:
        podman.run(["run", "-d", "--name", name, "--cpus", "1.5", "--memory", "512m",
                    agent_image])
        answer = _probe_until_answered(podman, name, probe)
        # no GPU here: the agent runs its real (NVML) backend, which says why it has none
        assert answer["backend"] == "nvml"
        assert any("NVML did not start" in p for p in answer["problems"])
        assert (answer["cpus"], answer["memory_mib"]) == (1.5, 512)
        assert answer["limits"]["cpus"].startswith("cgroup cpu.")
        assert answer["limits"]["memory_mib"].startswith("cgroup memory.")
        other = podman.run(["exec", name, *probe[:-1], "/var/lib/nothing-here"], check=False)
        assert other.returncode == 1 and "no agent daemon answers" in other.stderr
    finally:
        podman.remove(name)


def test_in_the_image_a_bridge_hands_over_and_the_entry_reaps_the_old_daemon(
        podman: Podman, agent_image: str):  # noqa: F811
    """fractui's bridge (serve --stdio through exec) with other settings than the pod's replaces
    the daemon: the container lives on, and the old daemon, orphaned to the entry (pid 1 here,
    without hostPID), is reaped rather than left a zombie."""
    container = agent_container()
    probe = container["livenessProbe"]["exec"]["command"]
    state = state_dir_of(container["command"])
    name = "fractui-test-%s" % uuid.uuid4().hex[:10]
    try:
        podman.run(["run", "-d", "--name", name, agent_image])
        _probe_until_answered(podman, name, probe)
        first = int(podman.run(["exec", name, "python3", "-c",
                                "print(open('%s/daemon.pid').read())" % state]).stdout)
        request = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "daemon.version"}) + "\n"
        bridged = podman.run(["exec", "-i", name, "python3", IMAGE_AGENT, "serve", "--stdio",
                              "--state-dir", state, "--log-max-mib", "32"],
                             input_text=request)
        info = json.loads(bridged.stdout)["result"]
        assert info["pid"] != first and info["settings"]["log_max_mib"] == 32
        assert "handing over" in bridged.stderr
        _probe_until_answered(podman, name, probe)
        status = podman.run(["exec", name, "python3", "-c",
                             "import os; p = '/proc/%d/stat'; "
                             "print(open(p).read().rsplit(')', 1)[1].split()[0] "
                             "if os.path.exists(p) else 'gone')" % first]).stdout.strip()
        assert status == "gone"  # reaped: a zombie would show "Z"
        assert podman.run(["inspect", "-f", "{{.State.Running}}", name]).stdout.strip() == \
            "true"
    finally:
        podman.remove(name)


def _probe_until_answered(podman: Podman, name: str, probe: List[str]) -> Dict[str, Any]:
    """The probe's answer once the entry has started the daemon (as a kubelet retries it)."""
    last = None
    for _ in range(60):
        last = podman.run(["exec", name, *probe], check=False)
        if last.returncode == 0:
            return json.loads(last.stdout)
        logs = podman.run(["logs", name], check=False)
        if podman.run(["inspect", "-f", "{{.State.Running}}", name]).stdout.strip() != "true":
            pytest.fail("the container ended: %s" % (logs.stderr or logs.stdout))
    pytest.fail("the probe never answered: %s" % last.stderr)
