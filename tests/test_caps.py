"""Cap layers: what a host can enforce on a GPU without MIG, and the environment a share gets."""

from __future__ import annotations

import os
import shutil
import subprocess
import types
from pathlib import Path
from typing import Tuple

import pytest

from remote_agent.gpu import fake_pynvml as nv
from remote_agent.gpu.backend import GpuBackend
from remote_agent.jobs import caps
from remote_agent.jobs.cgroups import JobCgroups
from remote_agent.jobs.env import JobUser, base_env
from remote_agent.rpc import jsonrpc as rpc
from tests.conftest import AgentError, AgentProcess
from tests.test_agent_security import OTHER_UID
from tests.test_jobs import script, wait_job


def test_probe_lists_what_the_host_has_and_why_not_the_rest(tmp_path, monkeypatch):
    lib = tmp_path / "libvgpu.so"
    lib.write_bytes(b"")
    pipes = tmp_path / "mps"
    pipes.mkdir()
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(pipes))
    no_limits = types.SimpleNamespace()
    found = caps.probe(no_limits, caps.CapSettings(mps=True, hami_core_lib=str(lib)), True)
    assert found.layers == ["visible_devices", "mps", "hami", "framework", "watchdog"]
    assert "nvmlDeviceSetMemoryLimits_v1" in found.unavailable["driver_limit"]
    missing = caps.probe(no_limits, caps.CapSettings(mps=True, hami_core_lib="/no/lib.so"), True)
    assert missing.layers == ["visible_devices", "mps", "framework", "watchdog"]
    assert "/no/lib.so does not exist" in missing.unavailable["hami"]
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path / "none"))
    assert "no MPS control daemon" in caps.probe(
        no_limits, caps.CapSettings(mps=True), True).unavailable["mps"]
    with_limits = types.SimpleNamespace(nvmlDeviceSetMemoryLimits_v1=None)
    assert "need root" in caps.probe(with_limits, caps.CapSettings(), False).unavailable[
        "driver_limit"]


def test_an_mps_directory_another_user_could_change_is_neither_used_nor_handed_on(
        tmp_path, monkeypatch):
    """Whoever owns or can write the MPS pipe directory, or a directory or symlink on its way,
    can stand in for the control daemon, and the jobs' memory caps would go through their
    server: the layer is refused with why, and jobs are not handed the directory."""
    monkeypatch.delenv("CUDA_MPS_LOG_DIRECTORY", raising=False)
    pipes = tmp_path / "mps"
    pipes.mkdir(mode=0o755)
    user = JobUser.named(None)

    def refusal(path) -> str:
        monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(path))
        found = caps.probe(types.SimpleNamespace(), caps.CapSettings(mps=True), True)
        handed = base_env(os.environ, user).get("CUDA_MPS_PIPE_DIRECTORY")
        assert ("mps" in found.layers) == (handed == str(path)) == ("mps" not in found.unavailable)
        return found.unavailable.get("mps", "")

    assert refusal(pipes) == ""  # root's (the agent's own user), 0755
    mine = tmp_path / "link"
    mine.symlink_to(pipes)
    assert refusal(mine) == ""  # through a symlink of the agent's user
    os.chown(pipes, OTHER_UID, -1)
    why = refusal(pipes)
    assert why.startswith("mps = true, but another user could stand in for the MPS control "
                          "daemon: refusing the MPS pipe directory %s: " % pipes), why
    assert "owned by uid %d" % OTHER_UID in why
    assert "owned by uid %d" % OTHER_UID in refusal(mine)  # the symlink's target is checked
    os.chown(pipes, 0, -1)
    os.chmod(pipes, 0o1777)  # sticky does not help: anyone may make the control pipe there
    assert "writable by its group and all users (mode 1777)" in refusal(pipes)
    os.chmod(pipes, 0o755)
    os.lchown(mine, OTHER_UID, -1)
    assert "reached through the symlink %s, owned by uid %d" % (mine, OTHER_UID) in refusal(mine)
    parent = tmp_path / "open"
    parent.mkdir()
    os.chmod(parent, 0o777)
    (parent / "mps").mkdir(mode=0o755)
    assert "%s is writable by its group and all users" % parent in refusal(parent / "mps")
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY")  # the default is checked as well
    monkeypatch.setattr(caps, "MPS_PIPE_DEFAULT", str(parent / "mps"))
    assert "%s is writable by its group" % parent in caps.probe(
        types.SimpleNamespace(), caps.CapSettings(mps=True), True).unavailable["mps"]


def test_a_refused_mps_pipe_directory_leaves_jobs_no_way_to_the_default_one(tmp_path,
                                                                             monkeypatch):
    """The CUDA library reaches MPS through CUDA_MPS_PIPE_DIRECTORY, else /tmp/nvidia-mps: a
    job not handed a refused directory would go to the default — the very one refused, where
    it is unset, or one that anyone may make in /tmp. A refused one is replaced by a directory
    that can never be made, so the job's CUDA finds no control daemon and runs without MPS."""
    monkeypatch.delenv("CUDA_MPS_LOG_DIRECTORY", raising=False)
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    theirs = tmp_path / "nvidia-mps"
    theirs.mkdir(mode=0o755)
    monkeypatch.setattr(caps, "MPS_PIPE_DEFAULT", str(theirs))
    user = JobUser.named(None)
    assert "CUDA_MPS_PIPE_DIRECTORY" not in base_env(os.environ, user)  # sound: the default
    os.chown(theirs, OTHER_UID, -1)
    for named in (None, str(theirs)):  # the default, or named as it
        if named is not None:
            monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", named)
        handed = base_env(os.environ, user)["CUDA_MPS_PIPE_DIRECTORY"]
        assert handed == caps.NO_MPS_PIPES, handed
        with pytest.raises(NotADirectoryError):  # no one can make it, root included
            os.makedirs(handed)


def test_an_mps_log_directory_another_user_could_change_refuses_the_layer(tmp_path, monkeypatch):
    pipes = tmp_path / "mps"
    logs = tmp_path / "mps-log"
    pipes.mkdir(mode=0o755)
    logs.mkdir(mode=0o755)
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(pipes))
    monkeypatch.setenv("CUDA_MPS_LOG_DIRECTORY", str(logs))
    user = JobUser.named(None)
    assert "mps" in caps.probe(types.SimpleNamespace(), caps.CapSettings(mps=True), True).layers
    assert base_env(os.environ, user)["CUDA_MPS_LOG_DIRECTORY"] == str(logs)
    os.chown(logs, OTHER_UID, -1)
    found = caps.probe(types.SimpleNamespace(), caps.CapSettings(mps=True), True)
    assert "mps" not in found.layers
    assert "refusing the MPS log directory %s: %s is owned by uid %d" % (
        logs, logs, OTHER_UID) in found.unavailable["mps"]
    env = base_env(os.environ, user)
    assert "CUDA_MPS_LOG_DIRECTORY" not in env and env["CUDA_MPS_PIPE_DIRECTORY"] == str(pipes)


def test_a_relative_mps_directory_is_refused_for_each_job_would_read_it_from_its_own_cwd(
        tmp_path, monkeypatch):
    """The check runs against the daemon's working directory, the job's CUDA library against
    the job's: a relative directory is not the one checked."""
    (tmp_path / "mps").mkdir(mode=0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", "mps")
    monkeypatch.delenv("CUDA_MPS_LOG_DIRECTORY", raising=False)
    found = caps.probe(types.SimpleNamespace(), caps.CapSettings(mps=True), True)
    assert "mps" not in found.layers
    assert "the MPS pipe directory mps (CUDA_MPS_PIPE_DIRECTORY) is not an absolute path" in \
        found.unavailable["mps"]
    assert base_env(os.environ, JobUser.named(None))["CUDA_MPS_PIPE_DIRECTORY"] == \
        caps.NO_MPS_PIPES


@pytest.mark.parametrize("attack", ["of another user", "writable by its group",
                                    "in a folder all may write"])
def test_a_hami_core_library_another_user_could_change_is_not_preloaded(tmp_path, attack):
    """Every share job preloads the library, root's jobs too: whoever could change it, or the
    folder it is in, would run their code in them."""
    folder = tmp_path / "lib"
    folder.mkdir(mode=0o755)
    lib = folder / "libvgpu.so"
    lib.write_bytes(b"")
    lib.chmod(0o644)
    settings = caps.CapSettings(hami_core_lib=str(lib))
    assert "hami" in caps.probe(types.SimpleNamespace(), settings, True).layers
    if attack == "of another user":
        os.chown(lib, OTHER_UID, -1)
        why = "%s is owned by uid %d, not by root or uid 0" % (lib, OTHER_UID)
    elif attack == "writable by its group":
        lib.chmod(0o664)
        why = "%s is writable by its group (mode 0664)" % lib
    else:
        folder.chmod(0o777)
        why = "%s is writable by its group and all users (mode 0777)" % folder
    found = caps.probe(types.SimpleNamespace(), settings, True)
    assert "hami" not in found.layers
    assert found.unavailable["hami"].startswith(
        "another user could run code in every share job, which preloads the library: refusing "
        "the HAMi-core library %s: " % lib), found.unavailable["hami"]
    assert why in found.unavailable["hami"], found.unavailable["hami"]


def test_a_cgroup_parent_another_user_could_change_takes_no_job(cgroup_parent):
    """Whoever may write the cgroup parent could make a job's cgroup before the agent (it is
    made with exist_ok), and stop, freeze or limit the job there: jobs are found by their
    session instead, saying why."""
    os.mkdir(cgroup_parent, 0o755)
    assert JobCgroups(cgroup_parent, "d").parent == cgroup_parent
    os.chown(cgroup_parent, OTHER_UID, -1)
    cgroups = JobCgroups(cgroup_parent, "d")
    assert cgroups.parent is None and cgroups.kind == "session"
    assert cgroups.problem == (
        "refusing cgroup parent {0}: {0} is owned by uid {1}, not by root or uid 0; that user "
        "could change what the agent runs. Use a directory of your own (chown it, or pick "
        "another path)".format(cgroup_parent, OTHER_UID))
    os.chown(cgroup_parent, 0, -1)
    os.chmod(cgroup_parent, 0o775)
    assert "is writable by its group (mode 0775)" in JobCgroups(cgroup_parent, "d").problem


def test_share_env_sets_every_layer_for_the_share():
    env = caps.share_env(["visible_devices", "mps", "hami", "framework", "watchdog"],
                         caps.CapSettings(mps=True, hami_core_lib="/opt/libvgpu.so"),
                         ["GPU-a", "GPU-b"], 6000, 24000, torch_fraction=True)
    assert env == {
        "CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b",
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=6000M,1=6000M",
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "25",
        "LD_PRELOAD": "/opt/libvgpu.so",
        "CUDA_DEVICE_MEMORY_LIMIT": "6000m",
        "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.2233",  # (6000 - 640) / 24000, rounded down
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        "PYTORCH_CUDA_ALLOC_CONF": "per_process_memory_fraction:0.2233",
    }
    plain = caps.share_env(["visible_devices", "framework", "watchdog"], caps.CapSettings(),
                           ["GPU-a"], 100, 1000, torch_fraction=False)
    assert "PYTORCH_CUDA_ALLOC_CONF" not in plain and "LD_PRELOAD" not in plain


def test_a_driver_without_per_cgroup_limits_is_said_where_the_binding_has_them():
    """nvidia-ml-py 13.615 has the limit calls; a driver before r615 has no such function, and
    NVML answers FUNCTION_NOT_FOUND when asked: the layer is then not offered, and why is said,
    rather than offered in hello and failing at every launch."""
    nv.sim_open(None, "1xL4")
    backend = GpuBackend(nv)
    backend.open()
    try:
        assert caps.driver_refusal(backend, "/sys/fs/cgroup/fractui") is None
        for code in (nv.NVML_ERROR_FUNCTION_NOT_FOUND, nv.NVML_ERROR_NOT_SUPPORTED):
            nv.sim_inject_fault("nvmlDeviceGetMemoryLimits_v1", code)
            why = caps.driver_refusal(backend, "/sys/fs/cgroup/fractui")
            assert why.startswith("the driver takes no per-cgroup GPU memory limits "
                                  "(nvmlDeviceGetMemoryLimits_v1 failed: "), why
        nv.sim_inject_fault("nvmlDeviceGetMemoryLimits_v1", nv.NVML_ERROR_UNKNOWN)
        assert caps.driver_refusal(backend, "/sys/fs/cgroup/fractui") is None  # left to launch
    finally:
        nv.sim_clear_faults()
        backend.close()
    settings = caps.CapSettings(cgroup_parent="/sys/fs/cgroup/fractui")
    assert "driver_limit" in caps.probe(nv, settings, True).layers
    refused = caps.probe(nv, settings, True, driver_refuses="the driver takes none")
    assert "driver_limit" not in refused.layers
    assert refused.unavailable["driver_limit"] == "the driver takes none"


def test_a_framework_is_given_its_share_less_a_cuda_context():
    """On a real H200 a JAX job limited to its whole 2048 MiB share reached 2556 MiB, its CUDA
    context (528 MiB) beside its allocator's limit, and the watchdog killed it
    (docs/real-gpu.md): the allocator's limit leaves the context room, rounded down."""
    assert caps.CUDA_CONTEXT_MIB >= 548  # the most measured
    # (2048 - 640) / 143771 = 0.009793...: rounded down, not to the nearest (0.0098)
    assert caps.framework_fraction(2048, 143771) == "0.0097"
    assert caps.framework_fraction(600, 24000) == "0.0000"  # not even a context fits
    assert caps.framework_fraction(24000, 24000) == "0.9733"  # a whole GPU: all but a context


def test_cgroup2_mount_is_found_on_hybrid_hosts(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("cgroup /sys/fs/cgroup/memory cgroup rw 0 0\n"
                      "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n")
    assert caps.cgroup2_mount(str(mounts)) == "/sys/fs/cgroup/unified"
    mounts.write_text("cgroup /sys/fs/cgroup/memory cgroup rw 0 0\n")
    assert caps.cgroup2_mount(str(mounts)) is None


def mps_and_hami_host(start_agent, tmp_path: Path, monkeypatch
                      ) -> Tuple[AgentProcess, Path, Path]:
    """An agent of one L4 with MPS (its pipe directory ``tmp_path/mps``) and HAMi-core (an
    empty stand-in library) to cap its jobs: (the agent, the library, the pipe directory)."""
    lib = tmp_path / "libvgpu.so"
    lib.write_bytes(b"")
    pipes = tmp_path / "mps"
    pipes.mkdir()
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(pipes))
    agent = start_agent("1xL4", str(tmp_path / "host"), "--mps", "--hami-core-lib", str(lib))
    return agent, lib, pipes


def test_a_job_on_an_mps_and_hami_host_gets_their_limits(start_agent, tmp_path, monkeypatch):
    agent, _, _ = mps_and_hami_host(start_agent, tmp_path, monkeypatch)
    job = agent.call("job.launch", key="k-caps", gpu=0, memory_mib=11517, torch_fraction=True,
                     argv=script("import os\nfor k in ('CUDA_MPS_PINNED_DEVICE_MEM_LIMIT', "
                                 "'CUDA_DEVICE_MEMORY_LIMIT', 'PYTORCH_CUDA_ALLOC_CONF'):"
                                 " print(k, os.environ[k])"))
    assert job["caps"] == ["visible_devices", "mps", "hami", "framework", "torch_fraction",
                           "watchdog"]
    wait_job(agent, job["id"])
    lines = agent.call("job.logs", job=job["id"])["lines"]
    # (the stand-in library is empty, so ld.so warns that it cannot preload it: not our line)
    assert [line for line in lines if not line.startswith("ERROR: ld.so")] == [
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT 0=11517M", "CUDA_DEVICE_MEMORY_LIMIT 11517m",
        "PYTORCH_CUDA_ALLOC_CONF per_process_memory_fraction:0.4722"]


def test_an_agent_with_another_users_mps_pipes_offers_no_mps_and_hands_them_to_no_job(
        start_agent, tmp_path, monkeypatch):
    pipes = tmp_path / "mps"
    pipes.mkdir()
    os.chown(pipes, OTHER_UID, -1)
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(pipes))
    agent = start_agent("1xL4", str(tmp_path / "host"), "--mps")
    gpu = agent.call("hello")["gpus"][0]
    assert "mps" not in gpu["cap_layers"]
    assert "refusing the MPS pipe directory %s: %s is owned by uid %d" % (
        pipes, pipes, OTHER_UID) in gpu["cap_layers_unavailable"]["mps"]
    job = agent.call("job.launch", key="k-no-mps", gpu=0, memory_mib=1000, argv=script(
        "import os\nprint(sorted(k + '=' + v for k, v in os.environ.items() "
        "if k.startswith('CUDA_MPS')))"))
    assert "mps" not in job["caps"]
    wait_job(agent, job["id"])  # (not the default's /tmp/nvidia-mps either: none)
    assert agent.call("job.logs", job=job["id"])["lines"] == [
        str(["CUDA_MPS_PIPE_DIRECTORY=" + caps.NO_MPS_PIPES])]


def test_an_mps_pipe_directory_refused_since_the_probe_is_the_cap_of_no_job(
        start_agent, tmp_path, monkeypatch):
    """The pipe directory is asked of at each launch, not only when the agent starts: one
    another user holds since (removed, made anew by them) caps no job — bare, its directory
    not handed on, nor a container's, which would have it mounted — and no job is told its
    memory is capped by MPS."""
    pipes = tmp_path / "mps"
    pipes.mkdir()
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(pipes))
    agent = start_agent("1xL4", str(tmp_path / "host"), "--mps")
    assert "mps" in agent.call("hello")["gpus"][0]["cap_layers"]
    os.chown(pipes, OTHER_UID, -1)
    job = agent.call("job.launch", key="k-since", gpu=0, memory_mib=1000, argv=script(
        "import os\nprint(os.environ['CUDA_MPS_PIPE_DIRECTORY'])"))
    assert "mps" not in job["caps"], job["caps"]
    wait_job(agent, job["id"])
    assert agent.call("job.logs", job=job["id"])["lines"] == [caps.NO_MPS_PIPES]


def test_a_hami_core_library_refused_since_the_probe_is_preloaded_in_no_job(start_agent,
                                                                             tmp_path):
    """The library is asked of at each launch, as the MPS directories are: one another user
    may change since the agent started (its mode changed, or removed and made anew by them
    in a folder such as /tmp) would run their code in every share job, root's too."""
    lib = tmp_path / "libvgpu.so"
    lib.write_bytes(b"")
    lib.chmod(0o644)
    agent = start_agent("1xL4", str(tmp_path / "host"), "--hami-core-lib", str(lib))
    assert "hami" in agent.call("hello")["gpus"][0]["cap_layers"]
    lib.chmod(0o666)
    job = agent.call("job.launch", key="k-since", gpu=0, memory_mib=1000, argv=script(
        "import os\nprint(os.environ.get('LD_PRELOAD'))"))
    assert "hami" not in job["caps"], job["caps"]
    wait_job(agent, job["id"])
    assert agent.call("job.logs", job=job["id"])["lines"] == ["None"]


def test_hello_says_why_jobs_get_no_cgroup_where_one_was_asked_for(start_agent, tmp_path):
    plain = tmp_path / "not-a-cgroup"
    plain.mkdir()
    agent = start_agent("1xL4", str(tmp_path / "host"), "--cgroup-parent", str(plain))
    assert agent.call("daemon.version")["job_tracking"] == "session"
    why = agent.call("hello")["gpus"][0]["cap_layers_unavailable"]["driver_limit"]
    assert why == "%s is not in a cgroup v2 hierarchy" % plain


def _running(argv0: str, **kw) -> subprocess.Popen:
    """A real process whose program name (argv[0]) is ``argv0``: cat under another name, handed
    back once it has echoed a line, i.e. runs. Popen returns as soon as the exec closes its
    pipe, before the kernel has set the new program's arguments: /proc/PID/cmdline reads empty
    till then, and a loaded machine's reader saw that."""
    proc = subprocess.Popen([argv0], executable=shutil.which("cat"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, **kw)
    proc.stdin.write(b"running\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == b"running\n", "%s ended at once" % argv0
    return proc


def _stopped(*procs: subprocess.Popen) -> None:
    for proc in procs:
        with proc:  # closes its pipes and waits for it
            proc.kill()


def test_an_mps_server_is_known_by_its_program_and_owner():
    """Each is asked of as soon as it is handed back: one that runs is known from the start."""
    procs = []
    try:
        for argv0, server in (("nvidia-cuda-mps-server", True),
                              ("/usr/bin/nvidia-cuda-mps-server", True), ("cat", False)):
            procs.append(_running(argv0))
            assert caps.mps_server(procs[-1].pid, 66) == server, argv0
        named = procs[0]
        # holding more than a CUDA context, or an amount NVML did not say, it is anyone's: a
        # process of the jobs' own user that names itself so hides no more than that
        assert caps.mps_server(named.pid, caps.CUDA_CONTEXT_MIB)
        assert not caps.mps_server(named.pid, caps.CUDA_CONTEXT_MIB + 1)
        assert not caps.mps_server(named.pid, None)
    finally:
        _stopped(*procs)
    assert not caps.mps_server(procs[0].pid, 66)  # gone


@pytest.mark.skipif(os.getuid() != 0, reason="starting another user's process needs root")
def test_another_users_process_cannot_pass_for_the_mps_server():
    theirs = _running("nvidia-cuda-mps-server", user=OTHER_UID)
    try:
        assert not caps.mps_server(theirs.pid, 66)
    finally:
        _stopped(theirs)


def test_the_jobs_mps_server_keeps_no_whole_gpu_from_them(start_agent, tmp_path):
    """The MPS server stays once its clients end, holding a little of each GPU they used: a
    whole GPU (a share of all its memory) still fits there. Anyone else's process, however
    small, is counted: the whole GPU is refused beside it, and said so; so is one of that name
    that holds more than an MPS server does."""
    agent = start_agent("3xL4", str(tmp_path / "host"))
    server, other, big = (_running("nvidia-cuda-mps-server"), _running("cat"),
                          _running("nvidia-cuda-mps-server"))
    try:
        agent.call("sim.add_process", gpu=0, used_mib=66, pid=server.pid)
        agent.call("sim.add_process", gpu=1, used_mib=66, pid=other.pid)
        agent.call("sim.add_process", gpu=2, used_mib=20000, pid=big.pid)
        listed = [g["processes"] for g in agent.call("snapshot")["gpus"]]
        assert listed == [[{"pid": server.pid, "used_mib": 66, "instance": None, "job": None,
                            "service": "mps"}],
                          [{"pid": other.pid, "used_mib": 66, "instance": None, "job": None}],
                          [{"pid": big.pid, "used_mib": 20000, "instance": None, "job": None}]]
        for gpu, used in ((1, 66), (2, 20000)):
            with pytest.raises(AgentError) as refused:
                agent.call("job.launch", key="k-beside-%d" % gpu, gpu=gpu, memory_mib=23034,
                           argv=["true"])
            assert refused.value.code == rpc.NO_ROOM
            assert "%d MiB used by processes outside fractui" % used in str(refused.value)
        job = agent.call("job.launch", key="k-whole", gpu=0, memory_mib=23034, argv=["true"])
        assert wait_job(agent, job["id"])["state"] == "exited"
    finally:
        _stopped(server, other, big)


def test_cgroup2_mount_is_found_past_a_mount_whose_path_is_no_utf8(tmp_path):
    """A mount elsewhere on the host whose path is no UTF-8 (a stick's Latin-1 name) is read
    as any path is, its bytes kept: so is the cgroup v2 mount's own. Before, the line failed
    the read (UnicodeDecodeError), out of the agent's start where its cgroup_parent is "auto"
    (a real GPU's default)."""
    mounts = tmp_path / "mounts"
    mounts.write_bytes(b"/dev/sdb1 /media/Jos\xe9 vfat rw 0 0\n"
                       b"cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n")
    assert caps.cgroup2_mount(str(mounts)) == "/sys/fs/cgroup"
    mounts.write_bytes(b"cgroup2 /cg\xff cgroup2 rw 0 0\n")
    assert os.fsencode(caps.cgroup2_mount(str(mounts))) == b"/cg\xff"
