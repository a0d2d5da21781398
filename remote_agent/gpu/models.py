"""GPU model facts (MIG geometry, memory) and the ``--sim`` host spec.

The facts ship inside the package and are read with ``pkgutil.get_data`` so they load from the
zipapp the fleet deploys, where ``__file__`` paths do not exist.
"""

from __future__ import annotations

import json
import pkgutil
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

from remote_agent.mig.layout import Geometry, Profile


@dataclass(frozen=True)
class ProfileFacts:
    key: str  # geometry-wide key, e.g. "1g.2x"
    nvml_profile: str  # name of the NVML_GPU_INSTANCE_PROFILE_* constant
    profile_id: int
    compute_slices: int
    size: int
    starts: Tuple[int, ...]
    max_instances: int


@dataclass(frozen=True)
class ModelFacts:
    name: str  # as nvmlDeviceGetName reports it
    memory_mib: int
    sms: int
    memory_slices: int = 0  # 0: no MIG
    compute_slices: int = 0
    profiles: Tuple[ProfileFacts, ...] = ()
    profile_names: Tuple[Tuple[str, str], ...] = ()  # key -> "3g.40gb"
    power_limit_w: int = 0  # the simulator's health defaults (mig_profiles.json "health")
    slowdown_c: int = 0
    shutdown_c: int = 0
    ecc: bool = False
    # Its MIG mode changes through a GPU reset (mig_profiles.json "mode_reset"). NVIDIA's MIG
    # User Guide, "Enable MIG Mode": on Ampere GPUs (A100, A30) the driver resets the GPU so
    # that the mode takes effect, and where it cannot (a pass-through VM, another client on the
    # GPU) the mode stays pending until a reset; from Hopper on no reset is needed.
    mode_reset: bool = False

    @property
    def mig_capable(self) -> bool:
        return bool(self.profiles)

    def profile_name(self, key: str) -> str:
        return dict(self.profile_names)[key]

    def profile_memory_mib(self, p: ProfileFacts) -> int:
        return self.memory_mib * p.size // self.memory_slices

    def geometry(self) -> Geometry:
        """The planner's view of this model, as the NVML backend would read it from the GPU."""
        return Geometry(
            model=self.name,
            memory_slices=self.memory_slices,
            compute_slices=self.compute_slices,
            profiles=tuple(
                Profile(name=self.profile_name(p.key), profile_id=p.profile_id,
                        compute_slices=p.compute_slices, size=p.size, starts=p.starts,
                        max_instances=p.max_instances, memory_mib=self.profile_memory_mib(p))
                for p in self.profiles),
        )


# Short names an admin types in a --sim spec or a demo config.
ALIASES = {
    "A100-40GB": "NVIDIA A100-SXM4-40GB",
    "A100-80GB": "NVIDIA A100-SXM4-80GB",
    "H100": "NVIDIA H100 80GB HBM3",
    "H100-NVL": "NVIDIA H100 NVL",
    "H200": "NVIDIA H200",
    "B200": "NVIDIA B200",
    "A30": "NVIDIA A30",
    "L4": "NVIDIA L4",
    "A10": "NVIDIA A10",
    "L40S": "NVIDIA L40S",
    "T4": "Tesla T4",
    "RTX4090": "NVIDIA GeForce RTX 4090",
    "V100": "Tesla V100-SXM2-32GB",
}


@lru_cache(maxsize=1)
def models() -> Dict[str, ModelFacts]:
    raw = pkgutil.get_data("remote_agent.gpu", "mig_profiles.json")
    if raw is None:
        raise RuntimeError("remote_agent/gpu/mig_profiles.json is missing from the package")
    data = json.loads(raw.decode("utf-8"))
    out: Dict[str, ModelFacts] = {}
    for name, m in data["mig_models"].items():
        geo = data["geometries"][m["geometry"]]
        profiles = tuple(
            ProfileFacts(key=p["key"], nvml_profile=p["nvml_profile"], profile_id=p["id"],
                         compute_slices=p["compute_slices"], size=p["placement_size"],
                         starts=tuple(p["starts"]), max_instances=p["max_instances"])
            for p in geo["profiles"] if p["key"] in m["names"])
        out[name] = ModelFacts(name=name, memory_mib=m["memory_mib"], sms=m["sms"],
                               memory_slices=geo["memory_slices"],
                               compute_slices=geo["compute_slices"], profiles=profiles,
                               profile_names=tuple(sorted(m["names"].items())),
                               mode_reset=bool(m.get("mode_reset", False)),
                               **data["health"]["models"][name])
    for name, m in data["non_mig_models"].items():
        out[name] = ModelFacts(name=name, memory_mib=m["memory_mib"], sms=m["sms"],
                               **data["health"]["models"][name])
    return out


def model(name_or_alias: str) -> ModelFacts:
    """Look a model up by its NVML name or its short alias, case-insensitively."""
    wanted = name_or_alias.strip().upper().replace("NVIDIA ", "").replace(" ", "-")
    for alias, full in ALIASES.items():
        if wanted in (alias.upper(), full.upper().replace("NVIDIA ", "").replace(" ", "-")):
            return models()[full]
    raise ValueError("unknown GPU model %r; known: %s" % (name_or_alias, ", ".join(ALIASES)))


@dataclass(frozen=True)
class SimGpu:
    model: ModelFacts
    mig: bool  # MIG mode on at first start


_SPEC_ITEM = re.compile(r"^(?:(\d+)\s*[xX*]\s*)?([A-Za-z0-9 ._-]+?)(:mig)?$")


def parse_sim_spec(spec: str) -> List[SimGpu]:
    """``2xA100-80GB:mig,1xL4`` -> the simulated GPUs, in index order."""
    gpus: List[SimGpu] = []
    for raw_item in spec.split(","):
        item = raw_item.strip()
        m = _SPEC_ITEM.match(item)
        if not item or not m:
            raise ValueError("bad sim spec item %r in %r: expected COUNTxMODEL[:mig], "
                             "e.g. 2xA100-80GB:mig" % (raw_item, spec))
        count = int(m.group(1) or 1)
        facts = model(m.group(2))
        mig = bool(m.group(3))
        if mig and not facts.mig_capable:
            raise ValueError("%s does not support MIG (sim spec item %r)" % (facts.name, item))
        if count < 1 or count > 1024:
            raise ValueError("bad GPU count %d in sim spec item %r" % (count, item))
        gpus.extend(SimGpu(facts, mig) for _ in range(count))
    return gpus


def short_name(full: str) -> Optional[str]:
    for alias, name in ALIASES.items():
        if name == full:
            return alias
    return None
