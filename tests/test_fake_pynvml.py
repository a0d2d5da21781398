"""The fake NVML enforces the real MIG rules, keeps state like a GPU does, and fails on demand."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from ctypes import byref, c_uint

import pytest

from remote_agent.daemon.trust import UnsafePath
from remote_agent.gpu import fake_pynvml as nv
from remote_agent.gpu.models import model
from tests.cli_run import reaped


@pytest.fixture
def gpu():
    nv.sim_open(None, "1xA100-80GB:mig,1xL4")
    nv.nvmlInit()
    yield nv.nvmlDeviceGetHandleByIndex(0)
    nv.sim_open(None, "1xL4")


def profile_id(handle, const):
    return nv.nvmlDeviceGetGpuInstanceProfileInfo(handle, const).id


def create(handle, const, start):
    info = nv.nvmlDeviceGetGpuInstanceProfileInfo(handle, const)
    possible = (nv.c_nvmlGpuInstancePlacement_t * 8)()
    nv.nvmlDeviceGetGpuInstancePossiblePlacements(handle, info.id, possible, byref(c_uint(8)))
    placement = nv.c_nvmlGpuInstancePlacement_t()
    placement.start, placement.size = start, possible[0].size
    return nv.nvmlDeviceCreateGpuInstanceWithPlacement(handle, info.id, byref(placement))


def with_ci(gi, slices_const):
    info = nv.nvmlGpuInstanceGetComputeInstanceProfileInfo(
        gi, slices_const, nv.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
    return nv.nvmlGpuInstanceCreateComputeInstance(gi, info.id)


def test_calls_before_init_are_uninitialized():
    nv.sim_open(None, "1xL4")
    with pytest.raises(nv.NVMLError_Uninitialized):
        nv.nvmlDeviceGetCount()


def test_possible_placements_follow_the_caller_allocated_array_convention(gpu):
    pid = profile_id(gpu, nv.NVML_GPU_INSTANCE_PROFILE_1_SLICE)
    count = c_uint(0)
    nv.nvmlDeviceGetGpuInstancePossiblePlacements(gpu, pid, None, byref(count))
    assert count.value == 7
    short = (nv.c_nvmlGpuInstancePlacement_t * 3)()
    count = c_uint(3)
    with pytest.raises(nv.NVMLError_InsufficientSize):
        nv.nvmlDeviceGetGpuInstancePossiblePlacements(gpu, pid, short, byref(count))
    assert count.value == 7
    full = (nv.c_nvmlGpuInstancePlacement_t * 7)()
    nv.nvmlDeviceGetGpuInstancePossiblePlacements(gpu, pid, full, byref(count))
    assert [(p.start, p.size) for p in full] == [(s, 1) for s in range(7)]


def test_profile_info_matches_the_geometry(gpu):
    info = nv.nvmlDeviceGetGpuInstanceProfileInfo(gpu, nv.NVML_GPU_INSTANCE_PROFILE_3_SLICE)
    assert (info.id, info.sliceCount, info.instanceCount, info.name) == (9, 3, 2, b"MIG 3g.40gb")
    with pytest.raises(nv.NVMLError_NotSupported):  # A100 has no 2-slice+me profile
        nv.nvmlDeviceGetGpuInstanceProfileInfo(gpu, nv.NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1)
    with pytest.raises(nv.NVMLError_InvalidArgument):
        nv.nvmlDeviceGetGpuInstanceProfileInfo(gpu, nv.NVML_GPU_INSTANCE_PROFILE_COUNT)
    with pytest.raises(nv.NVMLError_NotSupported):
        nv.nvmlDeviceGetGpuInstanceProfileInfo(nv.nvmlDeviceGetHandleByIndex(1),
                                               nv.NVML_GPU_INSTANCE_PROFILE_1_SLICE)


def test_overlap_is_insufficient_resources_and_a_bad_start_is_invalid(gpu):
    create(gpu, nv.NVML_GPU_INSTANCE_PROFILE_3_SLICE, 4)
    with pytest.raises(nv.NVMLError_InsufficientResources):
        create(gpu, nv.NVML_GPU_INSTANCE_PROFILE_1_SLICE, 5)
    with pytest.raises(nv.NVMLError_InvalidArgument):
        create(gpu, nv.NVML_GPU_INSTANCE_PROFILE_3_SLICE, 2)
    with pytest.raises(nv.NVMLError_InvalidArgument):  # 1-slice profiles never start at 7
        create(gpu, nv.NVML_GPU_INSTANCE_PROFILE_1_SLICE, 7)


def test_instance_counts_and_the_compute_budget_are_enforced(gpu):
    create(gpu, nv.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1, 0)  # 1g.10gb+me: one per GPU
    with pytest.raises(nv.NVMLError_InsufficientResources):
        create(gpu, nv.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1, 1)
    nv.sim_open(None, "1xA100-80GB:mig")
    nv.nvmlInit()
    gpu = nv.nvmlDeviceGetHandleByIndex(0)
    create(gpu, nv.NVML_GPU_INSTANCE_PROFILE_4_SLICE, 0)
    create(gpu, nv.NVML_GPU_INSTANCE_PROFILE_2_SLICE, 4)
    create(gpu, nv.NVML_GPU_INSTANCE_PROFILE_1_SLICE, 6)  # 4 + 2 + 1 = all 7 compute slices
    assert nv.nvmlDeviceGetGpuInstanceProfileInfo(gpu, 0).instanceCount == 7


def test_compute_budget_refuses_what_memory_would_allow():
    nv.sim_open(None, "1xA100-80GB:mig")
    nv.nvmlInit()
    gpu = nv.nvmlDeviceGetHandleByIndex(0)
    for start in (0, 2, 4, 6):  # four 1g.20gb: 4 compute slices, all 8 memory slices
        create(gpu, nv.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2, start)
    with pytest.raises(nv.NVMLError_InsufficientResources):
        create(gpu, nv.NVML_GPU_INSTANCE_PROFILE_1_SLICE, 1)


def test_destroy_is_in_use_while_compute_instances_or_processes_remain(gpu):
    gi = create(gpu, nv.NVML_GPU_INSTANCE_PROFILE_3_SLICE, 0)
    ci = with_ci(gi, nv.NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE)
    mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(gpu, 0)
    mig_uuid = nv.nvmlDeviceGetUUID(mig)
    assert mig_uuid.startswith("MIG-")
    assert nv.nvmlDeviceGetName(mig) == "NVIDIA A100-SXM4-80GB MIG 3g.40gb"
    pid = nv.sim_register_process(0, 2048, instance_uuid=mig_uuid)
    with pytest.raises(nv.NVMLError_InUse):
        nv.nvmlGpuInstanceDestroy(gi)
    with pytest.raises(nv.NVMLError_InUse):
        nv.nvmlComputeInstanceDestroy(ci)
    procs = nv.nvmlDeviceGetComputeRunningProcesses(mig)
    assert [(p.pid, p.usedGpuMemory) for p in procs] == [(pid, 2048 * 1024 * 1024)]
    assert nv.nvmlDeviceGetMemoryInfo(mig).used == 2048 * 1024 * 1024
    nv.sim_remove_process(pid)
    nv.nvmlComputeInstanceDestroy(ci)
    nv.nvmlGpuInstanceDestroy(gi)
    with pytest.raises(nv.NVMLError_InvalidArgument):  # the handle now points at nothing
        nv.nvmlGpuInstanceGetInfo(gi)
    with pytest.raises(nv.NVMLError_NotFound):
        nv.nvmlDeviceGetMigDeviceHandleByIndex(gpu, 0)


def test_utilisation_is_not_supported_under_mig(gpu):
    with pytest.raises(nv.NVMLError_NotSupported):
        nv.nvmlDeviceGetUtilizationRates(gpu)
    l4 = nv.nvmlDeviceGetHandleByIndex(1)
    nv.sim_register_process(1, 100, util=70)
    nv.sim_register_process(1, 100, util=70)
    assert nv.nvmlDeviceGetUtilizationRates(l4).gpu == 100


def test_process_utilisation_samples_the_busy_processes_newer_than_asked(gpu, monkeypatch):
    """On a clock the test moves: with the real one, a pause between two asks (a loaded
    machine's) crossed into the next sample period, which has a newer sample."""
    now = [time.time()]
    monkeypatch.setattr(nv.time, "time", lambda: now[0])
    l4 = nv.nvmlDeviceGetHandleByIndex(1)
    with pytest.raises(nv.NVMLError_NotFound):  # no process at all
        nv.nvmlDeviceGetProcessUtilization(l4, 0)
    busy = nv.sim_register_process(1, 100, util=30)
    idle = nv.sim_register_process(1, 100, util=0)
    samples = nv.nvmlDeviceGetProcessUtilization(l4, 0)
    assert [(s.pid, s.smUtil, s.memUtil) for s in samples] == [(busy, 30, 0)]  # idle: left out
    assert isinstance(samples[0], nv.c_nvmlProcessUtilizationSample_t)
    last = samples[0].timeStamp  # microseconds of the CPU clock: its period's start
    assert now[0] * 1e6 - nv.SIM_UTIL_PERIOD_US < last <= now[0] * 1e6
    with pytest.raises(nv.NVMLError_NotFound):  # nothing newer than what was seen
        nv.nvmlDeviceGetProcessUtilization(l4, last)
    nv.sim_set_process_util(idle, 55)
    now[0] += nv.SIM_UTIL_PERIOD_US / 1e6  # the next sample period
    newer = nv.nvmlDeviceGetProcessUtilization(l4, last)
    assert sorted((s.pid, s.smUtil) for s in newer) == [(busy, 30), (idle, 55)]
    assert all(s.timeStamp > last for s in newer)
    assert nv.nvmlDeviceGetUtilizationRates(l4).gpu == 85  # the whole GPU: their sum
    nv.sim_set_process_util(busy, 60)
    assert nv.nvmlDeviceGetUtilizationRates(l4).gpu == 100  # capped
    with pytest.raises(ValueError):
        nv.sim_set_process_util(busy, 101)


def test_process_utilisation_is_not_supported_under_mig(gpu):
    gi = create(gpu, nv.NVML_GPU_INSTANCE_PROFILE_3_SLICE, 4)
    with_ci(gi, nv.NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE)
    device = nv.nvmlDeviceGetMigDeviceHandleByIndex(gpu, 0)
    nv.sim_register_process(0, 100, instance_uuid=nv.nvmlDeviceGetUUID(device), util=40)
    for handle in (gpu, device):
        with pytest.raises(nv.NVMLError_NotSupported):
            nv.nvmlDeviceGetProcessUtilization(handle, 0)


def test_mig_processes_must_name_their_instance(gpu):
    with pytest.raises(ValueError, match="name the MIG instance"):
        nv.sim_register_process(0, 100)


def test_injected_faults_fire_after_skips_then_stop(gpu):
    nv.sim_inject_fault("nvmlDeviceGetCount", nv.NVML_ERROR_GPU_IS_LOST, skip=1, count=2)
    assert nv.nvmlDeviceGetCount() == 2
    for _ in range(2):
        with pytest.raises(nv.NVMLError_GpuIsLost):
            nv.nvmlDeviceGetCount()
    assert nv.nvmlDeviceGetCount() == 2
    with pytest.raises(ValueError):
        nv.sim_inject_fault("notAFunction", nv.NVML_ERROR_UNKNOWN)


def test_state_persists_and_is_shared_between_processes(tmp_path):
    path = str(tmp_path / "gpus.json")
    nv.sim_open(path, "1xH100:mig")
    nv.nvmlInit()
    gi = create(nv.nvmlDeviceGetHandleByIndex(0), nv.NVML_GPU_INSTANCE_PROFILE_2_SLICE, 2)
    with_ci(gi, nv.NVML_COMPUTE_INSTANCE_PROFILE_2_SLICE)
    mig_uuid = nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetMigDeviceHandleByIndex(
        nv.nvmlDeviceGetHandleByIndex(0), 0))
    # another process (a workload) registers memory use on the instance while it runs
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from remote_agent.gpu import fake_pynvml as nv\n"
        "nv.sim_open(%r)\n"
        "import os; nv.sim_register_process(0, 777, instance_uuid=%r, pid=os.getpid())\n"
        "print('up', flush=True); sys.stdin.readline()\n") % (path, mig_uuid)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout.readline() == b"up\n"
    mig = nv.nvmlDeviceGetHandleByUUID(mig_uuid)
    assert [p.pid for p in nv.nvmlDeviceGetComputeRunningProcesses(mig)] == [child.pid]
    child.stdin.close()
    child.wait(timeout=10)
    assert nv.nvmlDeviceGetComputeRunningProcesses(mig) == []  # a dead process holds nothing
    nv.sim_open(path)  # a restart: the layout is still there
    nv.nvmlInit()
    assert nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetHandleByUUID(mig_uuid)) == mig_uuid


def _plant_link(path: str) -> None:
    os.rename(path, path + ".planted")
    os.symlink(path + ".planted", path)


@pytest.mark.parametrize("plant, said", [
    (_plant_link, "it is a symlink"),
    (lambda path: (os.unlink(path), os.mkfifo(path, 0o600)), "not a regular file: a FIFO"),
    (lambda path: os.chown(path, 4242, -1), "it is owned by uid 4242, not by uid 0"),
    (lambda path: os.chmod(path, 0o620), "it is writable by its group"),
])
def test_the_state_file_is_refused_as_the_agent_refuses_its_own_files(tmp_path, plant, said):
    """The simulated GPUs' state, changed under a simulator that reads it: a link (to the state
    it held), a FIFO (whose read would wait for a writer for good), another user's file, one
    its group may write. Each is refused, as the agent refuses any file of its state dir, and
    nothing is read from it; before, each was followed and read (the FIFO waited)."""
    path = str(tmp_path / "gpus.json")
    nv.sim_open(path, "1xL4")
    nv.nvmlInit()
    assert nv.nvmlDeviceGetCount() == 1
    held = open(path, "rb").read()
    plant(path)
    with pytest.raises(UnsafePath) as err:
        nv.nvmlDeviceGetCount()
    assert str(err.value).startswith("refusing simulator state %s: %s" % (path, said)), err.value
    os.unlink(path)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
        f.write(held)
    nv.nvmlShutdown()  # (its session's end is written to the state)


@pytest.mark.parametrize("name, what", [(".lock", "simulator lock"),
                                        (".tmp.{pid}", "temporary file")])
def test_a_link_planted_for_a_state_write_is_refused_and_its_target_left_alone(tmp_path, name,
                                                                              what):
    """A symlink where the simulator makes its lock or the copy that replaces its state: the
    write is refused, and the file it leads to is neither made nor cut. Before, the simulator
    wrote through it (as root, to any file of the host). (The pid is the test process's, read
    as it runs: in the test's id it would differ between the workers that collect it.)"""
    name = name.format(pid=os.getpid())
    path = str(tmp_path / "gpus.json")
    nv.sim_open(path, "1xL4")
    victim = tmp_path / "victim"
    victim.write_text("not the simulator's\n")
    os.unlink(path + ".lock")
    os.symlink(victim, path + name)
    with pytest.raises(UnsafePath) as err:
        nv.sim_register_process(0, 100)
    assert str(err.value) == "refusing %s %s%s: it is a symlink" % (what, path, name)
    assert victim.read_text() == "not the simulator's\n"
    os.unlink(path + name)


def test_a_mig_mode_change_resets_an_ampere_gpu_and_not_a_hopper_one():
    """As the MIG User Guide says: the driver resets an A100 or A30 to change its MIG mode (a
    reset clears the volatile ECC counters), while an H100 changes without one."""
    nv.sim_open(None, "1xA100-80GB,1xH100,1xA30")
    nv.nvmlInit()
    try:
        assert [model(m).mode_reset for m in ("A100-80GB", "H100", "A30", "B200")] \
            == [True, False, True, False]
        nv.sim_add_ecc_errors(0, corrected=3)
        nv.sim_add_ecc_errors(1, corrected=3)
        for i in range(3):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            assert nv.nvmlDeviceSetMigMode(h, nv.NVML_DEVICE_MIG_ENABLE) == nv.NVML_SUCCESS
            assert nv.nvmlDeviceGetMigMode(h) == [1, 1]
        assert [nv.sim_reset_count(i) for i in range(3)] == [1, 0, 1]
        volatile = [nv.nvmlDeviceGetTotalEccErrors(nv.nvmlDeviceGetHandleByIndex(i),
                                                   nv.NVML_MEMORY_ERROR_TYPE_CORRECTED,
                                                   nv.NVML_VOLATILE_ECC) for i in range(2)]
        assert volatile == [0, 3]
        # asked again for the mode it has: nothing to do, no reset
        h = nv.nvmlDeviceGetHandleByIndex(0)
        assert nv.nvmlDeviceSetMigMode(h, nv.NVML_DEVICE_MIG_ENABLE) == nv.NVML_SUCCESS
        assert nv.sim_reset_count(0) == 1
    finally:
        nv.nvmlShutdown()


def test_a_gpu_in_use_keeps_its_mig_mode_on_every_model():
    nv.sim_open(None, "1xA100-80GB,1xH100")
    nv.nvmlInit()
    try:
        for i in range(2):
            nv.sim_register_process(i, 100)
            h = nv.nvmlDeviceGetHandleByIndex(i)
            with pytest.raises(nv.NVMLError_InUse):
                nv.nvmlDeviceSetMigMode(h, nv.NVML_DEVICE_MIG_ENABLE)
            assert nv.nvmlDeviceGetMigMode(h) == [0, 0]
            assert nv.sim_reset_count(i) == 0
    finally:
        nv.nvmlShutdown()


def test_the_override_makes_any_model_wait_for_a_reset_and_can_be_lifted():
    nv.sim_open(None, "1xH100")
    nv.nvmlInit()
    try:
        h = nv.nvmlDeviceGetHandleByIndex(0)
        nv.sim_mode_waits_for_reset(0)
        assert nv.nvmlDeviceSetMigMode(h, nv.NVML_DEVICE_MIG_ENABLE) == \
            nv.NVML_ERROR_RESET_REQUIRED
        assert nv.nvmlDeviceGetMigMode(h) == [0, 1]
        pid = nv.sim_register_process(0, 10)
        with pytest.raises(ValueError, match="has processes"):
            nv.sim_reset_gpu(0)
        nv.sim_remove_process(pid)
        nv.nvmlShutdown()  # the reset is another program's: this session must end first
        nv.sim_reset_gpu(0)
        nv.nvmlInit()
        h = nv.nvmlDeviceGetHandleByIndex(0)
        assert nv.nvmlDeviceGetMigMode(h) == [1, 1]
        assert nv.sim_reset_count(0) == 1
        nv.sim_mode_waits_for_reset(0, False)
        assert nv.nvmlDeviceSetMigMode(h, nv.NVML_DEVICE_MIG_DISABLE) == nv.NVML_SUCCESS
        assert nv.nvmlDeviceGetMigMode(h) == [0, 0]
        assert nv.sim_reset_count(0) == 1
    finally:
        nv.nvmlShutdown()


SESSION = """\
import sys
from remote_agent.gpu import fake_pynvml as nv
nv.sim_open(sys.argv[1])
nv.nvmlInitWithFlags(int(sys.argv[2]))
print("attached", flush=True)
sys.stdin.read()
"""


def test_a_reset_waits_for_every_attached_nvml_session_to_end(tmp_path):
    """The driver refuses a GPU reset while any client holds the GPU attached: a session of
    another process (until it shuts NVML down or ends), or of this one; not one that asked for
    no attachment (NVML_INIT_FLAG_NO_ATTACH)."""
    state = str(tmp_path / "gpus.json")
    nv.sim_open(state, "1xA100-80GB")

    def session(flags: int) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", SESSION, state, str(flags)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "attached\n"
        return proc

    other = session(0)
    with pytest.raises(ValueError, match=r"GPU 0 is in use by another client \(the NVML session "
                                         r"of pid %d\)" % other.pid):
        nv.sim_reset_gpu(0)
    other.kill()
    other.wait()
    nv.sim_reset_gpu(0)  # a session ends with its process
    unattached = session(nv.NVML_INIT_FLAG_NO_ATTACH)
    try:
        nv.sim_reset_gpu(0)
        nv.nvmlInit()
        nv.nvmlInit()  # counted: attached until the last shutdown
        nv.nvmlShutdown()
        with pytest.raises(ValueError, match="the NVML session of pid %d" % os.getpid()):
            nv.sim_reset_gpu(0)
        nv.nvmlShutdown()
        nv.sim_reset_gpu(0)
        assert nv.sim_reset_count(0) == 3
    finally:
        unattached.communicate("")


def _used_by_processes(handle):
    return sorted((p.pid, p.usedGpuMemory // (1024 * 1024))
                  for p in nv.nvmlDeviceGetComputeRunningProcesses(handle))


def _pidfds_here() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


needs_pidfds = pytest.mark.skipif(not _pidfds_here(), reason="no pidfds on this kernel")


@needs_pidfds
def test_a_process_holds_its_memory_until_it_exits_zombie_or_reaped():
    """The fake answers liveness from a pidfd held per process (one poll, not a /proc read):
    each way a process ends must free its memory at once, as a real GPU does."""
    nv.sim_open(None, "1xL4")
    nv.nvmlInit()
    handle = nv.nvmlDeviceGetHandleByIndex(0)
    free_before = nv.nvmlDeviceGetMemoryInfo(handle).free
    sleeper = subprocess.Popen(["sleep", "60"])
    nv.sim_register_process(0, 300, pid=sleeper.pid)
    assert _used_by_processes(handle) == [(sleeper.pid, 300)]
    assert sleeper.pid in nv._PIDFDS._fds  # answered from its pidfd from now on
    assert _used_by_processes(handle) == [(sleeper.pid, 300)]
    assert nv.nvmlDeviceGetMemoryInfo(handle).free == free_before - 300 * 1024 * 1024
    sleeper.kill()
    os.waitid(os.P_PID, sleeper.pid, os.WEXITED | os.WNOWAIT)  # ended, not yet reaped: a zombie
    assert _used_by_processes(handle) == []
    assert nv.nvmlDeviceGetMemoryInfo(handle).free == free_before
    sleeper.wait()
    assert _used_by_processes(handle) == []


def test_without_pidfds_a_process_whose_main_thread_ended_holds_its_memory(monkeypatch,
                                                                         tmp_path):
    """Where no pidfd is to be had the fake reads /proc. A process whose main thread ended
    (pthread_exit) while another runs on reads Z there, yet it holds its GPU memory, as on a
    real GPU; it frees it when its last thread ends."""
    monkeypatch.setattr(nv._PIDFDS, "_usable", False)
    nv.sim_open(None, "1xL4")
    nv.nvmlInit()
    handle = nv.nvmlDeviceGetHandleByIndex(0)
    release = tmp_path / "release"
    proc = subprocess.Popen([sys.executable, "-c", (
        "import ctypes, os, threading, time, sys\n"
        "def wait():\n"
        "    while not os.path.exists(sys.argv[1]):\n"
        "        time.sleep(0.02)\n"
        "threading.Thread(target=wait).start()\n"
        "ctypes.CDLL(None).pthread_exit(None)\n"), str(release)])
    with reaped(proc):
        nv.sim_register_process(0, 300, pid=proc.pid)
        deadline = time.monotonic() + 10
        while _state(proc.pid) != b"Z":
            assert time.monotonic() < deadline, "the main thread never ended"
            time.sleep(0.02)
        assert _used_by_processes(handle) == [(proc.pid, 300)]
        release.touch()
        proc.wait(timeout=10)
        assert _used_by_processes(handle) == []


def _state(pid: int) -> bytes:
    with open("/proc/%d/stat" % pid, "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0]


@needs_pidfds
def test_a_pid_whose_held_process_ended_is_asked_about_again():
    """A pidfd kept for an ended process must not answer for a later process with its number:
    the number is looked up again."""
    live = subprocess.Popen(["sleep", "60"])
    ended = subprocess.Popen(["true"])
    table = nv._PidFds()
    with reaped(live):
        table._fds[live.pid] = os.pidfd_open(ended.pid)  # as if live.pid had been its number
        ended.wait()
        assert table.ended(live.pid) is False  # the live process now under that number
        assert table.ended(ended.pid) is True
    assert table.ended(live.pid) is True


@needs_pidfds
def test_the_pidfds_of_ended_processes_are_let_go():
    table = nv._PidFds()
    for _ in range(150):
        child = subprocess.Popen(["sleep", "60"])
        assert table.ended(child.pid) is False
        child.kill()
        child.wait()
    assert len(table._fds) < 64
    table._let_go()


def _pidfds_open() -> int:
    return sum(os.readlink("/proc/self/fd/" + n) == "anon_inode:[pidfd]"
               for n in os.listdir("/proc/self/fd") if _still_open(n))


def _still_open(name: str) -> bool:
    return os.path.exists("/proc/self/fd/" + name)


@needs_pidfds
def test_the_pidfds_kept_are_bounded_and_a_forked_child_closes_its_copies(monkeypatch):
    monkeypatch.setattr(nv._PidFds, "KEPT", 3)
    table = nv._PidFds()
    sleepers = [subprocess.Popen(["sleep", "60"]) for _ in range(5)]
    try:
        assert [table.ended(p.pid) for p in sleepers] == [False] * 5  # answered, 3 kept
        assert len(table._fds) == 3
        table._let_go()
        nv._PIDFDS.ended(sleepers[0].pid)
        held = _pidfds_open()
        assert nv._PIDFDS._fds
        others = held - len(nv._PIDFDS._fds)  # the test process's own, if any
        child = os.fork()
        if child == 0:  # the child: every copy closed, the table empty, still answering
            code = 0 if (_pidfds_open() == others and nv._PIDFDS._fds == {} and
                         nv._PIDFDS.ended(sleepers[0].pid) is False) else 1
            os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert _pidfds_open() == held  # the parent's own are its own still
    finally:
        for p in sleepers:
            p.kill()
            p.wait()


@needs_pidfds
def test_out_of_file_descriptors_every_live_process_still_counts():
    """With the process's file limit reached, the table lets go of its pidfds so that the
    /proc read that answers instead can open its file: no live process is said to have
    ended, and a registration still goes through."""
    script = (
        "import os, resource, subprocess\n"
        "from remote_agent.gpu import fake_pynvml as nv\n"
        "nv.sim_open(None, '1xL4'); nv.nvmlInit()\n"
        "sleepers = [subprocess.Popen(['sleep', '60']) for _ in range(12)]\n"
        "for p in sleepers: nv.sim_register_process(0, 10, pid=p.pid)\n"
        "gpu = nv.nvmlDeviceGetHandleByIndex(0)\n"
        "assert len(nv.nvmlDeviceGetComputeRunningProcesses(gpu)) == 12\n"
        "nv._PIDFDS._let_go()  # none kept yet: a few fit under the limit, then none\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir('/proc/self/fd')) + 3,\n"
        "                   resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
        "nv.sim_register_process(0, 20, pid=sleepers[0].pid)  # a registration goes through\n"
        "print(len(nv.nvmlDeviceGetComputeRunningProcesses(gpu)),\n"
        "      len(nv.nvmlDeviceGetComputeRunningProcesses(gpu)), flush=True)\n"
        "for p in sleepers: p.kill()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["12", "12"], done.stdout
