"""What each job runtime runs under the shim: the foreground command a container job's shim
runs, with the GPU given each runtime's way, the job's environment only through the container's
options, and its user; where a process's cgroup is found; and which processes are taken for a
container's runtime client by its name."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from fractui.config import image_problem
from remote_agent.jobs.env import JobUser
from remote_agent.jobs.runtime import JobRun, cgroup_of
from remote_agent.jobs.runtime.base import container_cgroup, holds, named_clients
from remote_agent.jobs.runtime.apptainer import Apptainer
from remote_agent.jobs.runtime.oci import Oci
from remote_agent.jobs.runtime.process import Process

USER = JobUser(1234, 99, "alice", "/home/alice", "/bin/sh")


def run(**changes) -> JobRun:
    fields = dict(name="fractui-abc-j7", argv=["python3", "train.py"],
                  env={"FRACTUI_JOB_ID": "j7", "CUDA_VISIBLE_DEVICES": "MIG-1"}, cwd=None,
                  user=USER, run_as=False, image="registry.example/train:1",
                  devices=["MIG-1"], job_dir="/state/jobs/j7")
    fields.update(changes)
    return JobRun(**fields)


def test_podman_runs_the_container_in_the_foreground_with_its_gpu_through_cdi():
    shim = Oci("podman").launch(run(cwd="/work", run_as=True))
    assert shim.argv == [
        "podman", "run", "--rm", "--init", "--name", "fractui-abc-j7",
        "--security-opt", "no-new-privileges", "--http-proxy=false",
        "--user", "1234:99", "--cap-drop", "all",
        "--env-file", "/state/jobs/j7/container.env", "--env", "NVIDIA_VISIBLE_DEVICES=void",
        "--workdir", "/work", "--device", "nvidia.com/gpu=MIG-1",
        "registry.example/train:1", "python3", "train.py"]
    # the job's variables are in a file of the job's directory, not on the command line
    assert shim.files == {
        "/state/jobs/j7/container.env": b"CUDA_VISIBLE_DEVICES=MIG-1\nFRACTUI_JOB_ID=j7\n"}
    # the runtime's CLI runs as the agent, in the agent's environment, joining no job cgroup
    assert (shim.user, shim.cgroup, shim.env) == (None, None, dict(os.environ))


def test_docker_takes_its_gpus_by_its_own_flag_as_one_csv_field():
    argv = Oci("docker").launch(run(devices=["GPU-a", "GPU-b"])).argv
    word = argv[argv.index("--gpus") + 1]
    assert word == '"device=GPU-a,GPU-b"' and "--device" not in argv
    if shutil.which("docker") is None:
        pytest.skip("docker's CLI is not installed (the flag's parsing is its)")
    # docker's own CLI parses the word; with no daemon here it gets as far as connecting to it
    done = subprocess.run(["docker", "run", "--gpus", word, "--rm", "x", "true"],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, DOCKER_HOST="unix:///nonexistent/docker.sock"))
    assert done.returncode != 0 and "invalid argument" not in done.stderr, done.stderr
    assert "Cannot connect" in done.stderr, done.stderr


def test_nvidia_visible_devices_is_an_env_after_the_job_s_env_file_so_it_cannot_widen_it():
    wider = {"NVIDIA_VISIBLE_DEVICES": "all", "ZZ": "1"}
    for tool, devices, seen in (("docker", ["GPU-a", "GPU-b"], "GPU-a,GPU-b"),
                                ("podman", ["GPU-a"], "void"),  # CDI gives the devices
                                ("docker", [], "void")):  # the simulator: none
        shim = Oci(tool).launch(run(env=wider, devices=devices))
        argv = shim.argv
        envs = [argv[i + 1] for i, word in enumerate(argv) if word == "--env"]
        assert envs == ["NVIDIA_VISIBLE_DEVICES=" + seen], (tool, envs)
        # the job's own, in the file read before every --env (the runtimes' order)
        assert argv.index("--env-file") < argv.index("--env")
        assert shim.files[argv[argv.index("--env-file") + 1]] == \
            b"NVIDIA_VISIBLE_DEVICES=all\nZZ=1\n"


def test_no_value_of_a_container_job_s_environment_is_on_the_runtime_s_command_line():
    env = {"TOKEN": "s3cret-value", "LD_PRELOAD": "/opt/libvgpu.so"}
    for tool in ("podman", "docker"):
        shim = Oci(tool).launch(run(env=env))
        assert not [w for w in shim.argv if "s3cret" in w or "libvgpu" in w], shim.argv
        # nor in the runtime's own environment, where the runtime would read them itself
        assert "TOKEN" not in shim.env and shim.env.get("LD_PRELOAD") == \
            os.environ.get("LD_PRELOAD")
    assert "--env-file" not in Oci("podman").launch(run(env={})).argv  # nothing to give


@pytest.mark.parametrize("env, said", [
    ({"K": "line one\nline two"}, "its variable K cannot be given to a container: its value "
     "holds a line break"),
    ({"K": "ends in CR\r"}, "its value holds a line break"),
    ({"# K": "1"}, "its variable # K cannot be given to a container: a name holding a blank or "
     "starting with '#'"),
    ({"#K": "1"}, "starting with '#'"),
    ({" K": "1"}, "a name holding a blank"),
    ({"K": "é" * 40000}, "NAME=VALUE is 80002 bytes, over the 65535 a container runtime reads"),
])
def test_what_the_runtime_s_env_file_cannot_hold_is_refused_saying_which_and_why(env, said):
    why = Oci("podman").env_problem(dict(env, OK="x"))
    assert why is not None and said in why, why
    assert Oci("podman").env_problem({"OK": "x y = z", "EMPTY": "", "K": "a" * 65533}) is None
    assert Process().env_problem(env) is None  # a bare job's environment takes any


def test_every_container_gets_no_new_privileges_and_a_run_as_one_no_capabilities():
    for tool in ("podman", "docker"):
        argv = Oci(tool).launch(run()).argv
        assert argv[argv.index("--security-opt") + 1] == "no-new-privileges"
        assert "--cap-drop" not in argv and "--user" not in argv  # the agent's own user
        argv = Oci(tool).launch(run(run_as=True)).argv
        assert argv[argv.index("--cap-drop") + 1] == "all"
        assert argv[argv.index("--security-opt") + 1] == "no-new-privileges"


def test_on_the_simulator_the_state_dir_is_mounted_at_its_own_path():
    argv = Oci("podman").launch(run(devices=[], mounts=["/var/lib/fractui/sim"],
                                    read_only=["/opt/libvgpu.so"])).argv
    volumes = [argv[i + 1] for i, word in enumerate(argv) if word == "--volume"]
    assert volumes == ["/var/lib/fractui/sim:/var/lib/fractui/sim",
                       "/opt/libvgpu.so:/opt/libvgpu.so:ro"]
    assert "--device" not in argv and "--gpus" not in argv


def test_a_job_cgroup_becomes_the_container_s_parent_from_its_hierarchy_s_root():
    from remote_agent.jobs.caps import cgroup2_mount

    mount = cgroup2_mount()
    cgroupfs = Oci("podman")
    cgroupfs.manager = "cgroupfs"  # a cgroupfs manager, as the runtime's info says
    argv = cgroupfs.launch(run(cgroup=os.path.join(mount, "fractui", "abc-j7"))).argv
    assert argv[argv.index("--cgroup-parent") + 1] == "/fractui/abc-j7"
    systemd = Oci("podman")
    systemd.manager = "systemd"  # a systemd cgroup manager takes only slices
    assert "--cgroup-parent" not in systemd.launch(run(cgroup=mount + "/x")).argv
    assert "systemd cgroup manager takes only a slice" in systemd.cgroup_parent_problem(
        mount + "/x")


def test_a_failed_info_is_not_kept_and_its_reason_is_the_note():
    if shutil.which("docker") is None:
        pytest.skip("docker's CLI is not installed (its info is what fails here)")
    docker = Oci("docker")
    for _ in range(2):  # asked again each time: a runtime not answering now may answer later
        why = docker.cgroup_parent_problem("/sys/fs/cgroup/j7")
        assert why.startswith("docker info failed, so its cgroup manager is unknown: "), why
        assert "Cannot connect" in why and docker.manager is None


def test_apptainer_is_the_job_s_own_process_with_its_environment_kept_through_cleanenv():
    shim = Apptainer().launch(run(run_as=True, cwd="/work", cgroup="/sys/fs/cgroup/j7"))
    assert shim.argv == ["apptainer", "exec", "--cleanenv", "--pwd", "/work", "--nv",
                         "registry.example/train:1", "python3", "train.py"]
    assert shim.env["APPTAINERENV_CUDA_VISIBLE_DEVICES"] == "MIG-1"
    assert shim.env["HOME"] == "/home/alice" and "CUDA_VISIBLE_DEVICES" not in shim.env
    assert shim.user == {"name": "alice", "uid": 1234, "gid": 99}
    assert shim.cgroup == "/sys/fs/cgroup/j7"  # its processes stay in the job's cgroup


def test_a_bare_job_is_its_program_with_the_base_environment_below_its_own():
    shim = Process().launch(run(image=None, env={"PATH": "/opt/bin", "X": "1"}))
    assert shim.argv == ["python3", "train.py"] and shim.cwd == USER.default_cwd()
    assert (shim.env["PATH"], shim.env["X"], shim.env["USER"]) == ("/opt/bin", "1", "alice")


def host(tmp_path, mounts: str, cgroup: str):
    """A host's /proc/mounts and one process's /proc/PID/cgroup, as files."""
    (tmp_path / "mounts").write_text(mounts)
    (tmp_path / "proc" / "42").mkdir(parents=True)
    (tmp_path / "proc" / "42" / "cgroup").write_text(cgroup)
    return str(tmp_path / "mounts"), str(tmp_path / "proc")


def cgroup_dir(path) -> str:
    path.mkdir(parents=True)
    (path / "cgroup.procs").write_text("")
    return str(path)


def test_a_container_s_cgroup_is_its_v1_pids_one_on_a_hybrid_host_else_its_v2_one(tmp_path):
    v1 = cgroup_dir(tmp_path / "pids" / "libpod_parent" / "libpod-1")
    v2 = cgroup_dir(tmp_path / "unified" / "libpod_parent" / "libpod-1")
    hybrid = host(tmp_path, "cgroup %s/pids cgroup rw,nosuid,pids 0 0\n"
                            "cgroup2 %s/unified cgroup2 rw 0 0\n" % (tmp_path, tmp_path),
                  "8:pids:/libpod_parent/libpod-1\n0::/libpod_parent/libpod-1\n")
    assert cgroup_of(42, *hybrid) == v1
    (tmp_path / "mounts").write_text("cgroup2 %s/unified cgroup2 rw 0 0\n" % tmp_path)
    (tmp_path / "proc" / "42" / "cgroup").write_text("0::/libpod_parent/libpod-1\n")
    assert cgroup_of(42, *hybrid) == v2


def test_a_root_cgroup_is_never_taken_as_a_container_s_own(tmp_path):
    cgroup_dir(tmp_path / "v2")
    found = host(tmp_path, "cgroup2 %s/v2 cgroup2 rw 0 0\n" % tmp_path, "0::/\n")
    assert cgroup_of(42, *found) is None  # finding its processes would find the whole host
    (tmp_path / "proc" / "42" / "cgroup").write_text("0::/gone\n")
    assert cgroup_of(42, *found) is None  # a cgroup that is not there (the container ended)


def test_a_cgroup_holding_the_agent_or_above_it_is_never_a_container_s(tmp_path):
    """A runtime that gives a container no cgroup of its own leaves it in the one it started
    from: taking that one would have stop and the watchdog act on the daemon."""
    mounts, proc = host(tmp_path, "cgroup2 %s/v2 cgroup2 rw 0 0\n" % tmp_path, "0::/c/one\n")
    cgroup_dir(tmp_path / "v2" / "c" / "one")
    cgroup_dir(tmp_path / "v2" / "agent")
    (tmp_path / "proc" / "7").mkdir()
    agent_file = tmp_path / "proc" / "7" / "cgroup"
    agent_file.write_text("0::/agent\n")
    assert container_cgroup(42, 7, mounts, proc) == (str(tmp_path / "v2" / "c" / "one"), None)
    for agent in ("/c/one", "/c/one/sub"):  # the agent's own cgroup, or one below the found
        cgroup_dir(tmp_path / "v2" / agent.lstrip("/")) if agent != "/c/one" else None
        agent_file.write_text("0::%s\n" % agent)
        found, why = container_cgroup(42, 7, mounts, proc)
        assert found is None and "no cgroup of its own" in why, agent
    assert holds("/a/b", "/a/b") and holds("/a/b", "/a/b/c/") and holds("/a", "/a/b")
    assert not holds("/a/b", "/a/bc") and not holds("/a/b/c", "/a/b")


def test_one_image_rule_on_both_sides():
    """What fractui accepts at submit (and in a queue's config) the agent launches, and what it
    refuses the agent refuses: an apptainer image's path is a reference on both."""
    from remote_agent.jobs.methods import LAUNCH_PARAMS
    from remote_agent.jobs.supervisor import parse_launch
    from remote_agent.rpc.jsonrpc import Params, RpcError

    def agent_takes(image: str) -> bool:
        try:
            parse_launch(Params("job.launch", {"key": "k", "argv": ["true"], "gpu": 0,
                                               "memory_mib": 1, "image": image}, LAUNCH_PARAMS))
        except RpcError as err:
            assert "'image'" in err.message
            return False
        return True

    good = ["docker.io/library/python:3.12", "/opt/images/x.sif", "./x.sif", "x.sif",
            "localhost/fractui-test:1@sha256:" + "a" * 64, "oras://reg.example/x:1",
            "x" * 4096]
    bad = ["", "-v/:/host", "--privileged", "a b", "a\tb", "a\x00b", "a\nb", "x" * 4097]
    for image in good + bad:
        assert (image_problem(image) is None) == agent_takes(image) == (image in good), image


def test_a_runtime_client_is_found_by_its_container_s_name_among_the_agent_s_processes_only():
    """A container's runtime client is found by ``--name NAME`` on its command line (its pid
    may be in no record) and SIGKILLed: any user may write those words on a command line of
    theirs, so only the agent's own user's processes are taken."""
    if os.geteuid() != 0:
        pytest.skip("starts a process as another user, which needs root")
    prefix = "fractui-%s-j" % uuid.uuid4().hex[:16]
    shell = ["/bin/sh", "-c", "echo up; read x", "sh"]  # its words after: $1, $2
    procs = [subprocess.Popen(shell + words, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              **extra)  # type: ignore[arg-type]
             for words, extra in ((["--name", prefix + "7"], {}),
                                  (["--name", prefix + "7"], {"user": "nobody"}),
                                  (["--name=" + prefix + "8", prefix + "9"], {}))]
    try:
        assert [p.stdout.readline() for p in procs] == [b"up\n"] * 3  # each has exec'd
        assert named_clients(prefix) == {procs[0].pid: prefix + "7"}
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_a_container_s_cgroup_is_found_under_a_mount_whose_path_is_no_utf8(tmp_path):
    """The cgroup v2 mount's path, and another mount's before it, hold a byte that is no
    UTF-8: the container's cgroup is found, named by its bytes. Before, the read failed
    (UnicodeDecodeError), out of the container job's start."""
    odd = os.fsencode(str(tmp_path)) + b"/v2\xff"
    found = os.fsdecode(odd + b"/libpod_parent/libpod-1")
    os.makedirs(found)
    open(os.path.join(found, "cgroup.procs"), "w").close()
    mounts, proc = host(tmp_path, "", "0::/libpod_parent/libpod-1\n")
    with open(mounts, "wb") as f:
        f.write(b"/dev/sdb1 /media/Jos\xe9 vfat rw 0 0\ncgroup2 " + odd + b" cgroup2 rw 0 0\n")
    assert cgroup_of(42, mounts, proc) == found


def test_a_value_of_the_hosts_in_bytes_that_are_no_utf8_keeps_them_in_the_env_file():
    """A path of the host's (the simulator's state under a state dir so named, a variable of
    the daemon's own environment) keeps its bytes, as exec would pass it; before, the file
    was encoded strictly, and the launch failed inside the agent."""
    odd = os.fsdecode(b"/state/odd\xff/sim/gpus.json")
    shim = Oci("podman").launch(run(env={"FRACTUI_SIM_STATE": odd}))
    assert shim.files == {
        "/state/jobs/j7/container.env": b"FRACTUI_SIM_STATE=/state/odd\xff/sim/gpus.json\n"}
