"""What each job runtime runs under the shim: the foreground command a container job's shim
runs, with the GPU given each runtime's way, the job's environment only through the container's
options, and its user; and where a process's cgroup is found."""

from __future__ import annotations

import os

from remote_agent.jobs.env import JobUser
from remote_agent.jobs.runtime import JobRun, cgroup_of
from remote_agent.jobs.runtime.apptainer import Apptainer
from remote_agent.jobs.runtime.oci import Oci
from remote_agent.jobs.runtime.process import Process

USER = JobUser(1234, 99, "alice", "/home/alice", "/bin/sh")


def run(**changes) -> JobRun:
    fields = dict(name="fractui-abc-j7", argv=["python3", "train.py"],
                  env={"FRACTUI_JOB_ID": "j7", "CUDA_VISIBLE_DEVICES": "MIG-1"}, cwd=None,
                  user=USER, run_as=False, image="registry.example/train:1",
                  devices=["MIG-1"])
    fields.update(changes)
    return JobRun(**fields)


def test_podman_runs_the_container_in_the_foreground_with_its_gpu_through_cdi():
    shim = Oci("podman").launch(run(cwd="/work", run_as=True))
    assert shim.argv == [
        "podman", "run", "--rm", "--init", "--name", "fractui-abc-j7",
        "--env", "CUDA_VISIBLE_DEVICES=MIG-1", "--env", "FRACTUI_JOB_ID=j7",
        "--workdir", "/work", "--user", "1234:99", "--device", "nvidia.com/gpu=MIG-1",
        "registry.example/train:1", "python3", "train.py"]
    # the runtime's CLI runs as the agent, in the agent's environment, joining no job cgroup
    assert (shim.user, shim.cgroup, shim.env) == (None, None, dict(os.environ))


def test_docker_takes_its_gpus_by_its_own_flag():
    argv = Oci("docker").launch(run(devices=["GPU-a", "GPU-b"])).argv
    assert argv[argv.index("--gpus") + 1] == "device=GPU-a,GPU-b"
    assert "--device" not in argv


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
    cgroupfs.cgroupfs = True  # a cgroupfs manager, as the runtime's info says
    argv = cgroupfs.launch(run(cgroup=os.path.join(mount, "fractui", "abc-j7"))).argv
    assert argv[argv.index("--cgroup-parent") + 1] == "/fractui/abc-j7"
    systemd = Oci("podman")
    systemd.cgroupfs = False  # a systemd cgroup manager takes only slices
    assert "--cgroup-parent" not in systemd.launch(run(cgroup=mount + "/x")).argv
    assert not systemd.takes_cgroup_parent()


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
