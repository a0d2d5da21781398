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
from typing import Any, Dict, List, Optional, Tuple

from remote_agent.digits import whole
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
class MeasuredProfile:
    """What NVML reported for one profile on a real GPU of the model (mig_profiles.json
    "measured"): the simulator answers it and the planner books it."""

    memory_mib: int
    copy_engines: int
    decoders: int
    encoders: int
    jpegs: int
    ofas: int


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
    nvlinks: int = 0  # NVLink links of the part (mig_profiles.json "nvlink"); 0: none
    profile_sms: Tuple[Tuple[str, int], ...] = ()  # key -> SMs, where NVIDIA publishes them
    measured: Tuple[Tuple[str, MeasuredProfile], ...] = ()  # key -> as read on a real GPU

    @property
    def mig_capable(self) -> bool:
        return bool(self.profiles)

    def profile_name(self, key: str) -> str:
        return dict(self.profile_names)[key]

    def profile_memory_mib(self, p: ProfileFacts) -> int:
        """NVML's memorySizeMB for the profile where it was measured; else the GPU's memory in
        proportion to the profile's memory slices (above NVML's figure: an estimate)."""
        found = self.measured_profile(p.key)
        return found.memory_mib if found else self.memory_mib * p.size // self.memory_slices

    def measured_profile(self, key: str) -> Optional[MeasuredProfile]:
        return dict(self.measured).get(key)

    def profile_sm_count(self, p: ProfileFacts) -> int:
        """The profile's SMs as published; else the GPU's in proportion to its compute slices."""
        return (dict(self.profile_sms).get(p.key)
                or self.sms * p.compute_slices // self.compute_slices)

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
                               profile_sms=tuple(sorted(
                                   (k, v) for k, v in m["profile_sms"].items() if v)),
                               measured=tuple(sorted(
                                   (k, MeasuredProfile(**v))
                                   for k, v in m.get("measured", {}).items())),
                               nvlinks=data["nvlink"]["models"][name],
                               **data["health"]["models"][name])
    for name, m in data["non_mig_models"].items():
        out[name] = ModelFacts(name=name, memory_mib=m["memory_mib"], sms=m["sms"],
                               nvlinks=data["nvlink"]["models"][name],
                               **data["health"]["models"][name])
    return out


def model(name_or_alias: str) -> ModelFacts:
    """Look a model up by its NVML name or its short alias, case-insensitively."""
    wanted = name_or_alias.strip().upper().replace("NVIDIA ", "").replace(" ", "-")
    for alias, full in ALIASES.items():
        if wanted in (alias.upper(), full.upper().replace("NVIDIA ", "").replace(" ", "-")):
            return models()[full]
    raise ValueError("unknown GPU model %r; known: %s" % (name_or_alias, ", ".join(ALIASES)))


@lru_cache(maxsize=256)
def mig_geometry(name: str) -> Optional[Geometry]:
    """The MIG geometry of a GPU named as NVML names it; None if the model is unknown or has
    no MIG."""
    try:
        facts = model(name)
    except ValueError:
        return None
    return facts.geometry() if facts.mig_capable else None


@dataclass(frozen=True)
class SimGpu:
    model: ModelFacts
    mig: bool  # MIG mode on at first start


MAX_SIM_GPUS = 1024  # of one model in one item of a sim spec
_SPEC_ITEM = re.compile(r"^(?:([0-9]+)\s*[xX*]\s*)?([A-Za-z0-9 ._-]+?)(:mig)?$")
# A topology clause after the GPUs: "nvlink=0-3/4-7", "nvswitch", "pix=0-1/2-3", ...
_CLAUSE = re.compile(r"^(nvlink|nvswitch|pix|pxb|phb|numa)(?:=(.*))?$")
# PCIe levels from the innermost out, as nvidia-smi topo -m names them; SYS is what is left.
PCIE_LEVELS = ("PIX", "PXB", "PHB", "NODE", "SYS")
Groups = Tuple[Tuple[int, ...], ...]


@dataclass(frozen=True)
class SimTopology:
    """How a simulated host's GPUs connect. ``nvlink``: islands whose GPUs all link to each
    other directly; ``nvswitch``: GPUs whose links all go to NVSwitches (each reaches every
    other one of them); the PCIe tree as groups of GPUs under one PCIe switch (``pix``),
    under switches below one host bridge (``pxb``), under one host bridge (``phb``), in one
    NUMA node (``numa``). The default: no NVLink, every GPU under one host bridge (PHB)."""

    count: int
    nvlink: Groups = ()
    nvswitch: Tuple[int, ...] = ()
    pix: Groups = ()
    pxb: Groups = ()
    phb: Groups = ()
    numa: Groups = ()

    def _levels(self) -> Tuple[Groups, ...]:
        """The groups of each PCIe level, innermost first, with the defaults filled in."""
        everyone = (tuple(range(self.count)),)
        numa = self.numa or everyone
        return (self.pix, self.pxb, self.phb or numa, numa)

    def pcie(self, a: int, b: int) -> str:
        """The PCIe path between two GPUs, by nvidia-smi topo -m's name."""
        for name, groups in zip(PCIE_LEVELS, self._levels()):
            if any(a in g and b in g for g in groups):
                return name
        return "SYS"

    def nvlinks(self, a: int, b: int, links_a: int, links_b: int) -> int:
        """Direct NVLink links between two GPUs of ``links_a`` and ``links_b`` links."""
        for island in self.nvlink:
            if a in island and b in island and a != b:
                return min(links_a, links_b) // (len(island) - 1)
        return 0


def _groups(value: str, count: int, where: str) -> Groups:
    """"0-3/4-7" or "0,2/1,3" -> ((0, 1, 2, 3), (4, 5, 6, 7)): disjoint groups of GPU indices."""
    out: List[Tuple[int, ...]] = []
    seen: set = set()
    for part in value.split("/"):
        members: List[int] = []
        for item in part.split(","):
            m = re.match(r"^\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?$", item)
            if not m:
                raise ValueError("bad GPU group %r in %s: expected indices and ranges such as "
                                 "0-3/4-7 or 0,2/1,3" % (part, where))
            lo, hi = whole(m.group(1), count), whole(m.group(2) or m.group(1), count)
            if lo is None or hi is None or hi < lo or hi >= count:
                raise ValueError("GPUs %s in %s: the host has GPUs 0-%d"
                                 % (item.strip(), where, count - 1))
            members.extend(range(lo, hi + 1))
        if seen & set(members) or len(set(members)) != len(members):
            raise ValueError("GPU group %r in %s names a GPU twice" % (part, where))
        seen |= set(members)
        out.append(tuple(sorted(members)))
    return tuple(out)


def _nested(inner: Groups, outer: Groups, names: Tuple[str, str], where: str) -> None:
    for g in inner:
        if outer and not any(set(g) <= set(o) for o in outer):
            raise ValueError("%s group %s spans %s groups in %s: a PCIe tree nests"
                             % (names[0], "-".join(map(str, g)), names[1], where))


def _topology(clauses: List[str], gpus: List["SimGpu"], spec: str) -> SimTopology:
    count = len(gpus)
    found: Dict[str, Any] = {}
    for raw in clauses:
        m = _CLAUSE.match(raw.strip())
        if not m:
            raise ValueError("bad topology clause %r in sim spec %r: expected nvlink=GROUPS, "
                             "nvswitch[=GROUP], pix=, pxb=, phb= or numa=GROUPS, "
                             "e.g. 8xH100;nvlink=0-3/4-7" % (raw, spec))
        name, value = m.group(1), m.group(2)
        if name in found:
            raise ValueError("topology clause %s given twice in sim spec %r" % (name, spec))
        where = "%s= of sim spec %r" % (name, spec)
        if name == "nvswitch":
            group = _groups(value, count, where) if value else (tuple(range(count)),)
            if len(group) != 1:
                raise ValueError("nvswitch names one group of GPUs in %s" % where)
            found[name] = group[0]
        elif value is None:
            raise ValueError("topology clause %s needs groups of GPUs in sim spec %r, e.g. "
                             "%s=0-3/4-7" % (name, spec, name))
        else:
            found[name] = _groups(value, count, where)
    topo = SimTopology(count=count, **found)
    for island in topo.nvlink:
        if len(island) < 2:
            raise ValueError("NVLink island %d in sim spec %r has one GPU: an island links two "
                             "or more" % (island[0], spec))
        for i in island:
            links = gpus[i].model.nvlinks
            if links < len(island) - 1:
                raise ValueError("GPU %d (%s) has %s NVLink links: too few for an island of %d "
                                 "in sim spec %r" % (i, gpus[i].model.name, links or "no",
                                                     len(island), spec))
            if i in topo.nvswitch:
                raise ValueError("GPU %d is in an NVLink island and on NVSwitches in sim spec "
                                 "%r: its links go one way" % (i, spec))
    for i in topo.nvswitch:
        if not gpus[i].model.nvlinks:
            raise ValueError("GPU %d (%s) has no NVLink to reach an NVSwitch (sim spec %r)"
                             % (i, gpus[i].model.name, spec))
    levels = topo._levels()
    where = "sim spec %r" % spec
    for k in range(len(levels) - 1):
        for outer in range(k + 1, len(levels)):
            _nested(levels[k], levels[outer], (PCIE_LEVELS[k], PCIE_LEVELS[outer]), where)
    return topo


@dataclass(frozen=True)
class SimHost:
    gpus: Tuple[SimGpu, ...]
    topology: SimTopology


def parse_sim_host(spec: str) -> SimHost:
    """``8xH100;nvlink=0-3/4-7`` -> the simulated GPUs, in index order, and how they connect:
    GPU items separated by commas, then topology clauses separated by semicolons."""
    items, *clauses = spec.split(";")
    gpus: List[SimGpu] = []
    for raw_item in items.split(","):
        item = raw_item.strip()
        m = _SPEC_ITEM.match(item)
        if not item or not m:
            raise ValueError("bad sim spec item %r in %r: expected COUNTxMODEL[:mig], "
                             "e.g. 2xA100-80GB:mig" % (raw_item, spec))
        count = whole(m.group(1) or "1", MAX_SIM_GPUS)
        facts = model(m.group(2))
        mig = bool(m.group(3))
        if mig and not facts.mig_capable:
            raise ValueError("%s does not support MIG (sim spec item %r)" % (facts.name, item))
        if not count:
            raise ValueError("bad GPU count %s in sim spec item %r: from 1 to %d" % (
                m.group(1), item, MAX_SIM_GPUS))
        gpus.extend(SimGpu(facts, mig) for _ in range(count))
    return SimHost(tuple(gpus), _topology(clauses, gpus, spec))


def parse_sim_spec(spec: str) -> List[SimGpu]:
    """``2xA100-80GB:mig,1xL4`` -> the simulated GPUs, in index order (topology clauses, which
    ``parse_sim_host`` reads, are checked too)."""
    return list(parse_sim_host(spec).gpus)


def short_name(full: str) -> Optional[str]:
    for alias, name in ALIASES.items():
        if name == full:
            return alias
    return None
