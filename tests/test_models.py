"""GPU model facts and the --sim host spec."""

from __future__ import annotations

from ctypes import byref, c_uint

import pytest

from remote_agent.gpu import fake_pynvml as nv
from remote_agent.gpu import models


def test_every_model_of_the_facts_file_is_known():
    names = set(models.models())
    assert {"NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3",
            "NVIDIA H100 NVL", "NVIDIA H200", "NVIDIA B200", "NVIDIA A30", "NVIDIA L4",
            "NVIDIA A10", "NVIDIA L40S", "Tesla T4", "NVIDIA GeForce RTX 4090",
            "Tesla V100-SXM2-32GB"} == names
    assert set(models.ALIASES.values()) == names


def test_spec_counts_models_and_mig_mode():
    gpus = models.parse_sim_spec("2xA100-80GB:mig, 1xL4,h100")
    assert [(g.model.name, g.mig) for g in gpus] == [
        ("NVIDIA A100-SXM4-80GB", True), ("NVIDIA A100-SXM4-80GB", True), ("NVIDIA L4", False),
        ("NVIDIA H100 80GB HBM3", False)]


@pytest.mark.parametrize("spec, words", [
    ("1xL4:mig", "does not support MIG"),
    ("2xQ9000", "unknown GPU model"),
    ("", "bad sim spec item"),
    ("0xL4", "bad GPU count"),
])
def test_bad_specs_say_what_is_wrong(spec, words):
    with pytest.raises(ValueError, match=words):
        models.parse_sim_spec(spec)


def test_geometry_profiles_carry_names_and_memory():
    geo = models.model("H200").geometry()
    assert [p.name for p in geo.by_size()][:2] == ["7g.141gb", "4g.71gb"]
    # measured on a real H200 (NVML's memorySizeMB), not the GPU's memory divided by 8 slices
    assert [geo.profile(n).memory_mib for n in ("1g.18gb", "1g.35gb", "3g.71gb", "7g.141gb")] \
        == [16384, 33280, 71424, 143360]
    assert (geo.memory_slices, geo.compute_slices) == (8, 7)
    # a model no GPU of which was read: its memory in proportion to the memory slices
    assert models.model("A100-80GB").geometry().profile("1g.10gb").memory_mib == 81920 // 8


def test_the_simulator_answers_a_gpu_with_mig_off_as_a_real_one_did():
    """What a real H200 with MIG mode off answered (docs/real-gpu.md, tools/device_check.py)."""
    nv.sim_open(None, "1xH200")
    nv.nvmlInit()
    try:
        h = nv.nvmlDeviceGetHandleByIndex(0)
        assert nv.nvmlDeviceGetMigMode(h) == [0, 0]
        info = nv.nvmlDeviceGetGpuInstanceProfileInfo(h, nv.NVML_GPU_INSTANCE_PROFILE_7_SLICE)
        assert (info.version, info.id, info.multiprocessorCount, info.copyEngineCount,
                info.decoderCount, info.jpegCount, info.ofaCount, info.memorySizeMB,
                info.name) == (0, 0, 132, 8, 7, 7, 1, 143360, b"MIG 7g.141gb")
        count = c_uint(0)
        nv.nvmlDeviceGetGpuInstancePossiblePlacements(h, 9, None, byref(count))
        assert count.value == 2  # 3g.71gb at 0 and 4
        assert nv.nvmlDeviceGetGpuInstances(h, 9, (nv.c_nvmlGpuInstance_t * 2)(),
                                            byref(count)) == nv.NVML_SUCCESS
        assert count.value == 0
        assert nv.nvmlDeviceGetMaxMigDeviceCount(h) == 0
        with pytest.raises(nv.NVMLError_NotFound):
            nv.nvmlDeviceGetMigDeviceHandleByIndex(h, 0)
        with pytest.raises(nv.NVMLError_InvalidArgument):  # newer than the driver
            nv.nvmlDeviceGetGpuInstanceProfileInfo(h, nv.NVML_GPU_INSTANCE_PROFILE_3_SLICE_GFX)
        with pytest.raises(nv.NVMLError_NotSupported):  # not a profile of this GPU
            nv.nvmlDeviceGetGpuInstanceProfileInfo(h, nv.NVML_GPU_INSTANCE_PROFILE_6_SLICE)
        assert nv.nvmlDeviceGetSupportedEventTypes(h) == 0xff9f
    finally:
        nv.nvmlShutdown()
