"""GPU model facts and the --sim host spec."""

from __future__ import annotations

import pytest

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
    assert geo.profile("1g.18gb").memory_mib == 143771 // 8
    assert (geo.memory_slices, geo.compute_slices) == (8, 7)
