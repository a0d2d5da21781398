"""A pod's limits, not the node's: hello's ``cpus`` and ``memory_mib`` from the agent's cgroup.

The readers take a root path, so these lay out /proc/self/{mountinfo,cgroup} and cgroup files as
a pure cgroup v2 host, a cgroup v1 container and a hybrid host show them.
"""

from __future__ import annotations

import os

from remote_agent.limits import cgroup_dirs, cgroup_mounts, cgroup_paths, host_limits

MACHINE = ((16, "machine"), 64 * 1024)  # 16 CPUs and 64 GiB RAM
GIB = 1 << 30


def lay_out(root, mountinfo: str, cgroup: str, files: dict) -> str:
    os.makedirs(root / "proc/self")
    (root / "proc/self/mountinfo").write_text(mountinfo)
    (root / "proc/self/cgroup").write_text(cgroup)
    for path, text in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text + "\n")
    return str(root)


V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
POD = "/kubepods.slice/kubepods-burstable.slice/pod1"
CTR = POD + "/cri-containerd-abc.scope"

V1_CONTAINER = """\
91 83 0:48 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
92 91 0:29 /libpod_parent/libpod-1 /sys/fs/cgroup/cpu ro - cgroup cgroup rw,cpu
93 91 0:30 /libpod_parent/libpod-1 /sys/fs/cgroup/cpuacct ro - cgroup cgroup rw,cpuacct
95 91 0:32 /libpod_parent/libpod-1 /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory
"""
V1_CGROUP = "4:memory:/libpod_parent/libpod-1\n2:cpuacct:/libpod_parent/libpod-1\n" \
            "1:cpu:/libpod_parent/libpod-1\n0::/libpod_parent/libpod-1\n"


def test_a_bare_host_reports_the_machine(tmp_path):
    root = lay_out(tmp_path, V2_MOUNT, "0::/user.slice/session-1.scope\n", {
        "/sys/fs/cgroup/user.slice/memory.max": "max",
        "/sys/fs/cgroup/user.slice/cpu.max": "max 100000",
    })
    limits = host_limits(root, MACHINE)
    assert (limits.cpus, limits.memory_mib) == (16, 64 * 1024)
    assert limits.sources == {"cpus": "machine", "memory_mib": "machine"}


def test_cgroup_v2_pod_limits_and_the_tightest_ancestor(tmp_path):
    """The container's cgroup caps CPUs, its pod's (an ancestor) caps memory harder."""
    root = lay_out(tmp_path, V2_MOUNT, "0::%s\n" % CTR, {
        "/sys/fs/cgroup%s/cpu.max" % CTR: "150000 100000",
        "/sys/fs/cgroup%s/memory.max" % CTR: str(8 * GIB),
        "/sys/fs/cgroup%s/cpu.max" % POD: "max 100000",
        "/sys/fs/cgroup%s/memory.max" % POD: str(6 * GIB),
    })
    limits = host_limits(root, MACHINE)
    assert limits.cpus == 1.5
    assert limits.memory_mib == 6 * 1024
    assert limits.sources == {"cpus": "cgroup cpu.max", "memory_mib": "cgroup memory.max"}


def test_cgroup_v2_inside_a_cgroup_namespace(tmp_path):
    """A pod with its own cgroup namespace sees its cgroup as ``/`` and mounted there."""
    root = lay_out(tmp_path, V2_MOUNT, "0::/\n", {
        "/sys/fs/cgroup/cpu.max": "400000 100000",
        "/sys/fs/cgroup/memory.max": str(512 << 20),
    })
    limits = host_limits(root, MACHINE)
    assert (limits.cpus, limits.memory_mib) == (4, 512)
    assert isinstance(limits.cpus, int)  # a whole quota is reported as an integer


def test_cgroup_v1_container(tmp_path):
    """What podman with runc shows inside a container on a cgroup v1 host: each controller's
    mount shows the container's own cgroup as its root."""
    root = lay_out(tmp_path, V1_CONTAINER, V1_CGROUP, {
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "250000",
        "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes": str(3 * GIB),
    })
    limits = host_limits(root, MACHINE)
    assert (limits.cpus, limits.memory_mib) == (2.5, 3 * 1024)
    assert limits.sources == {"cpus": "cgroup cpu.cfs_quota_us",
                              "memory_mib": "cgroup memory.limit_in_bytes"}


def test_cgroup_v1_without_limits_is_the_machine(tmp_path):
    """v1 writes "no quota" as -1 and "no memory limit" as a huge number."""
    root = lay_out(tmp_path, V1_CONTAINER, V1_CGROUP, {
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1",
        "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712",
    })
    limits = host_limits(root, MACHINE)
    assert (limits.cpus, limits.memory_mib) == (16, 64 * 1024)
    assert limits.sources == {"cpus": "machine", "memory_mib": "machine"}


def test_a_limit_above_the_machine_is_the_machine(tmp_path):
    root = lay_out(tmp_path, V2_MOUNT, "0::/big\n", {
        "/sys/fs/cgroup/big/cpu.max": "3200000 100000",  # 32 CPUs on a 16-CPU machine
        "/sys/fs/cgroup/big/memory.max": str(128 * GIB),
    })
    limits = host_limits(root, MACHINE)
    assert (limits.cpus, limits.memory_mib) == (16, 64 * 1024)
    assert limits.sources == {"cpus": "machine", "memory_mib": "machine"}


def test_hybrid_host_reads_the_v1_controllers(tmp_path):
    """Hybrid: v1 controllers under /sys/fs/cgroup/<ctl>, v2 (no controllers) at .../unified."""
    mountinfo = """\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
    cgroup = "4:memory:/process_api/9a\n2:cpuacct:/\n1:cpu:/\n0::/\n"
    root = lay_out(tmp_path, mountinfo, cgroup, {
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1",
        "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000",
        "/sys/fs/cgroup/memory/process_api/9a/memory.limit_in_bytes": str(2 * GIB),
        "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712",
        "/sys/fs/cgroup/unified/cgroup.procs": "1",
    })
    limits = host_limits(root, MACHINE)
    assert (limits.cpus, limits.memory_mib) == (16, 2 * 1024)
    assert limits.sources == {"cpus": "machine", "memory_mib": "cgroup memory.limit_in_bytes"}


def test_a_sliver_of_a_cpu_is_not_none(tmp_path):
    root = lay_out(tmp_path, V2_MOUNT, "0::/\n", {"/sys/fs/cgroup/cpu.max": "10 100000"})
    assert host_limits(root, MACHINE).cpus == 0.001


def test_a_cpuset_narrower_than_the_machine_is_kept(tmp_path):
    root = lay_out(tmp_path, V2_MOUNT, "0::/\n", {"/sys/fs/cgroup/cpu.max": "600000 100000"})
    limits = host_limits(root, ((4, "cpuset"), 1024))
    assert (limits.cpus, limits.sources["cpus"]) == (4, "cpuset")


def test_unreadable_or_odd_files_change_nothing(tmp_path):
    root = lay_out(tmp_path, V2_MOUNT, "0::/x/y\n", {
        "/sys/fs/cgroup/x/y/cpu.max": "lots 100000",
        "/sys/fs/cgroup/x/y/memory.max": "",
        "/sys/fs/cgroup/x/cpu.max": "100000 0",
        "/sys/fs/cgroup/x/memory.max": "many",
    })
    limits = host_limits(root, MACHINE)
    assert (limits.cpus, limits.memory_mib) == (16, 64 * 1024)
    empty = tmp_path / "nothing"
    empty.mkdir()
    assert host_limits(str(empty), MACHINE).sources == {"cpus": "machine",
                                                         "memory_mib": "machine"}


def test_outside_the_namespace_root_no_directory_is_ours(tmp_path):
    mount = cgroup_mounts(V2_MOUNT)[0]
    assert cgroup_dirs("/r", mount, "/../other") == []
    assert cgroup_dirs("/r", mount, "/a/b") == ["/r/sys/fs/cgroup/a/b", "/r/sys/fs/cgroup/a",
                                                "/r/sys/fs/cgroup"]
    v1 = cgroup_mounts(V1_CONTAINER)
    assert [(m.point, m.version, sorted(m.controllers)) for m in v1] == [
        ("/sys/fs/cgroup/cpu", 1, ["cpu"]), ("/sys/fs/cgroup/cpuacct", 1, ["cpuacct"]),
        ("/sys/fs/cgroup/memory", 1, ["memory"])]
    assert cgroup_dirs("/", v1[0], "/elsewhere") == []
    assert cgroup_paths(V1_CGROUP) == {"memory": "/libpod_parent/libpod-1",
                                       "cpuacct": "/libpod_parent/libpod-1",
                                       "cpu": "/libpod_parent/libpod-1",
                                       "": "/libpod_parent/libpod-1"}


def test_this_machine_reads_without_error():
    """On the machine the tests run on: numbers within what the machine has."""
    limits = host_limits()
    assert 0 < limits.cpus <= (os.cpu_count() or 1)
    assert 0 < limits.memory_mib


def test_a_pods_limits_are_read_past_mounts_whose_paths_are_not_ascii(tmp_path):
    """Mounts elsewhere on the host named in UTF-8 (/media/José) or in bytes that are no UTF-8
    are lines of mountinfo like any other. Before, mountinfo was read as ASCII, and such a line
    left the whole file unread: a pod's limits read as the machine's, said as such."""
    root = lay_out(tmp_path, "", "0::%s\n" % CTR, {
        "/sys/fs/cgroup%s/cpu.max" % CTR: "150000 100000",
        "/sys/fs/cgroup%s/memory.max" % CTR: str(8 * GIB),
    })
    (tmp_path / "proc/self/mountinfo").write_bytes(
        "40 23 8:17 / /media/Jos\u00e9 rw - ext4 /dev/sdb1 rw\n".encode()
        + b"41 23 8:33 / /media/odd\xff rw - vfat /dev/sdc1 rw\n" + V2_MOUNT.encode())
    limits = host_limits(root, MACHINE)
    assert (limits.cpus, limits.memory_mib) == (1.5, 8 * 1024)
    assert limits.sources == {"cpus": "cgroup cpu.max", "memory_mib": "cgroup memory.max"}
