"""Replay the openb GPU-sharing traces (Alibaba, 2023) the way the FGD simulator does, and compare
first-fit, best-fit, FGD and fractui's policy with the published numbers.

Details matched (see ../shared/data/openb/README.md): pods sorted by name then shuffled per seed,
inflated to 130 % of GPU capacity by appending pods sampled with replacement, no departures, CPU
and RAM counted, ties to a fixed random host order per seed, and the value at X % arrived the mean
allocation over the steps whose arrived load rounds to X.

    python -m benchmarks.openb --seeds 10 --trace default --trace gpushare40 --record

``--mixed`` replays instead on MIG-capable GPUs where a share of the requests asks for MIG
isolation: a fixed half-MIG fleet, an all-MIG one, and fractui's choice of mode per GPU.

The data is not shipped (the trace's licence allows research and study use only; see DATA_HELP):
``--data DIR`` names a folder holding it, by default the project's shared data folder beside the
checkout where there is one.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import replace
from functools import lru_cache
from multiprocessing import Pool
from typing import Dict, List, Sequence, Tuple

from remote_agent.gpu.models import model as gpu_model
from remote_agent.mig.layout import Layout

from fractui.sched import Gpu, Host, Placer, Request, typical_classes
from fractui.sched import mig

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                    "data", "openb")
PUBLISHED_FILE = os.path.join("fgd_expected_results", "analysis_allo_discrete.csv")
DATA_HELP = """\
The folder needs, as the upstream projects publish them (unchanged):
  - openb_node_list_gpu_node.csv and openb_pod_list_<trace>.csv: Alibaba's openb trace, GitHub
    alibaba/clusterdata, folder cluster-trace-gpu-v2023/csv/ (commit 7a6c496e4f4b, or the same
    files in hkust-adsl/kubernetes-scheduler-simulator, data/csv/). Its README allows use for
    research or study and asks you to cite the FGD paper (Weng et al., USENIX ATC '23).
  - %s: the FGD simulator's published results, GitHub
    hkust-adsl/kubernetes-scheduler-simulator (Apache-2.0), experiments/analysis/
    expected_results/analysis_allo_discrete.csv (commit 8f3d6417353c).""" % PUBLISHED_FILE
POLICIES = ("first-fit", "best-fit", "fgd", "fractui")
PUBLISHED = {"best-fit": "05-BestFit", "fgd": "06-FGD"}
TUNE = 1.3
MIG_MODEL = "A100-80GB"
BALANCED = ("1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb")  # mig-parted all-balanced, A100-80GB
MIXED_FLEETS = ("half", "all-mig", "dynamic")
MIXED_SHARES = (0.3, 0.6)  # of the requests that take one GPU or part of one: MIG isolation


def all_traces(data: str) -> List[str]:
    """Every trace the data folder holds (``openb_pod_list_<trace>.csv``), sorted by name."""
    names = os.listdir(data) if os.path.isdir(data) else []
    return sorted(n[len("openb_pod_list_"):-len(".csv")] for n in names
                  if n.startswith("openb_pod_list_") and n.endswith(".csv"))


def data_files(traces: Sequence[str]) -> List[str]:
    """The files of the data folder a run with these traces reads."""
    return ["openb_node_list_gpu_node.csv", PUBLISHED_FILE] + [
        "openb_pod_list_%s.csv" % t for t in traces]


def load_nodes(data: str) -> List[Tuple[str, int, int, int, str]]:
    with open(os.path.join(data, "openb_node_list_gpu_node.csv")) as f:
        return [(r["sn"], int(r["cpu_milli"]), int(r["memory_mib"]), int(r["gpu"]), r["model"])
                for r in csv.DictReader(f)]


def load_pods(data: str, trace: str) -> List[Request]:
    path = os.path.join(data, "openb_pod_list_%s.csv" % trace)
    out = []
    with open(path) as f:
        for r in csv.DictReader(f):
            n, milli = int(r["num_gpu"]), int(r["gpu_milli"])
            spec = r.get("gpu_spec") or ""
            out.append(Request(
                name=r["name"], cpu_milli=int(r["cpu_milli"]), memory_mib=int(r["memory_mib"]),
                gpu=milli / 1000 if n == 1 and milli < 1000 else 0.0,
                gpus=n if milli >= 1000 else 0,
                models=frozenset(spec.split("|")) if spec else frozenset()))
    return sorted(out, key=lambda r: r.name)


def gpu_milli(r: Request) -> int:
    return r.gpus * 1000 if r.gpus else r.milli if r.gpu else 0


def workload(pods: Sequence[Request], capacity: int, seed: int) -> List[Request]:
    """The shuffled trace, then pods sampled with replacement up to TUNE x capacity."""
    rng = random.Random(seed)
    order = list(pods)
    rng.shuffle(order)
    total = sum(gpu_milli(r) for r in order)
    target = TUNE * capacity
    while total > target:  # already above the target: drop random pods
        total -= gpu_milli(order.pop(rng.randrange(len(order))))
    k = 0
    while True:
        r = pods[rng.randrange(len(pods))]
        if total + gpu_milli(r) > target:
            break
        total += gpu_milli(r)
        order.append(Request(**{**r.__dict__, "name": "%s-tuned-%d" % (r.name, k)}))
        k += 1
    return order


def passes(work: Sequence[Request], batch: int) -> List[List[Request]]:
    """The arrivals as scheduling passes see them: ``batch`` at a time, each pass placing the
    largest first (GPU milli, then CPU); one at a time in arrival order for a batch of 1."""
    if batch <= 1:
        return [[r] for r in work]
    return [sorted(work[b:b + batch], key=lambda r: (-gpu_milli(r), -r.cpu_milli))
            for b in range(0, len(work), batch)]


def curve_at(steps: Sequence[Tuple[float, float]], x: int) -> float:
    """Mean of the second value over the steps whose first value rounds to x; where none does
    (batches that arrive more than a point at a time step over it), the straight line between
    the steps on either side; NaN if the steps do not reach x."""
    vals = [v for a, v in steps if int(a + 0.5) == x]
    if vals:
        return statistics.fmean(vals)
    below = [(a, v) for a, v in steps if a < x]
    above = [(a, v) for a, v in steps if a >= x]
    if not below or not above:
        return float("nan")
    (a0, v0), (a1, v1) = below[-1], above[0]
    return v0 + (v1 - v0) * (x - a0) / (a1 - a0)


def fleet(nodes, all_mig: bool) -> List[Host]:
    geo = gpu_model(MIG_MODEL).geometry()
    mem = gpu_model(MIG_MODEL).memory_mib
    return [Host(sn, cpu, ram, [Gpu(MIG_MODEL, mem, layout=Layout(geo)) if all_mig
                                else Gpu(model) for _ in range(n)])
            for sn, cpu, ram, n, model in nodes]


def scaled(nodes, gpus: int, seed: int):
    """About ``gpus`` GPUs of openb hosts: a random subset, or copies of the whole list."""
    rng = random.Random(seed)
    pool, out, n = list(nodes), [], 0
    while n < gpus:
        rng.shuffle(pool)
        for sn, cpu, ram, k, m in pool:
            if n >= gpus:
                break
            out.append(("%s-%d" % (sn, len(out)), cpu, ram, k, m))
            n += k
    return out


def replay(job: tuple) -> Dict[str, object]:
    """One (trace, policy, seed) run from the data folder: allocation at 100 % and 130 % arrived,
    decision times. A fleet size other than 0 replays on that many GPUs of openb hosts (for
    latency). An optional seventh item, a batch of k > 1: the arrivals come k at a time, as a
    scheduling pass would find k jobs waiting, and are placed largest first (GPU, then CPU);
    the allocation is read once per batch."""
    data, trace, policy, seed, all_mig, size, *more = job
    batch = more[0] if more else 1
    nodes = load_nodes(data)
    if size:
        nodes = scaled(nodes, size, seed)
    pods = load_pods(data, trace)
    if all_mig:  # one GPU model: model constraints mean nothing on this fleet
        pods = [Request(**{**r.__dict__, "models": frozenset()}) for r in pods]
    capacity = 1000 * sum(n[3] for n in nodes)
    work = workload(pods, capacity, seed)
    hosts = fleet(nodes, all_mig)
    t0 = time.perf_counter()
    if policy.startswith("static"):
        steps, times = _replay_static(hosts, work, capacity, seed, static_mix(policy, hosts))
    else:
        placer = Placer(hosts, policy, typical_classes(pods), seed=seed)
        steps, times = place_all(placer, work, capacity, bool(size), all_mig, batch)
    wall = time.perf_counter() - t0
    return {"trace": trace, "policy": policy, "seed": seed, "mig": all_mig, "size": size,
            "batch": batch,
            "gpus": sum(n[3] for n in nodes), "hosts": len(nodes), "wall": wall,
            "a100": curve_at([(a, u) for a, u, _ in steps], 100),
            "a130": curve_at([(a, u) for a, u, _ in steps], 130),
            "s100": curve_at([(a, s) for a, _, s in steps], 100),
            "s130": curve_at([(a, s) for a, _, s in steps], 130),
            "times": sorted(times)}


def place_all(placer: Placer, work: Sequence[Request], capacity: int, stop: bool = False,
              slices: bool = False, batch: int = 1
              ) -> Tuple[List[Tuple[float, float, float]], List[float]]:
    """Schedule ``work`` as ``passes`` of ``batch`` find it: per pass (arrived %, placed %,
    compute slices held % near 100 and 130 % arrived when ``slices``, else 0) and each
    decision's time; ``stop``: at 100 %."""
    steps, times = [], []
    arrived = used = 0
    for now in passes(work, batch):
        arrived += sum(gpu_milli(r) for r in now)
        if stop and arrived > capacity:
            break
        for r in now:
            t = time.perf_counter()
            p = placer.schedule(r)
            times.append(time.perf_counter() - t)
            if p is not None:
                used += gpu_milli(r)
        steps.append((100.0 * arrived / capacity, 100.0 * used / capacity,
                      _slices(placer.hosts) if slices and _near(arrived, capacity) else 0.0))
    return steps, times


def mixed_fleet(nodes, how: str) -> List[Host]:
    """The openb hosts with every GPU an A100-80GB. ``half``: every other GPU of each host in
    MIG mode for good (GPU j of host i when i + j is even: half of every host with an even
    number of GPUs, every other one-GPU host); ``all-mig``: every GPU; ``dynamic``: every GPU
    flexible, MIG off at the start, the placer turns it on or off while it is idle."""
    geo = gpu_model(MIG_MODEL).geometry()
    mem = gpu_model(MIG_MODEL).memory_mib

    def gpu(i: int, j: int) -> Gpu:
        if how == "dynamic":
            return Gpu(MIG_MODEL, mem, mig_geometry=geo)
        return Gpu(MIG_MODEL, mem, layout=Layout(geo)) if how == "all-mig" or (i + j) % 2 == 0 \
            else Gpu(MIG_MODEL, mem)
    return [Host(sn, cpu, ram, [gpu(i, j) for j in range(n)])
            for i, (sn, cpu, ram, n, _) in enumerate(nodes)]


def isolated(work: Sequence[Request], share: float, seed: int) -> List[Request]:
    """``work`` with a seeded ``share`` of the requests that take one GPU or part of one asking
    for MIG isolation, the rest for either (a job on several GPUs cannot run on MIG instances);
    GPU-model constraints dropped: the fleet has one model."""
    rng = random.Random(seed * 1000 + round(share * 100))
    return [replace(r, models=frozenset(),
                    isolation="mig" if r.gpu_count == 1 and rng.random() < share else "any")
            for r in work]


def replay_mixed(job: Tuple[str, str, str, float, int, int]) -> Dict[str, object]:
    """One (trace, fleet, share asking for MIG, seed) run of fractui's policy on a fleet of
    MIG-capable GPUs: requested GPU at 100 % and 130 % arrived, and the GPUs in MIG mode at the
    end. A size other than 0 replays on that many GPUs of openb hosts."""
    data, trace, how, share, seed, size = job
    nodes = load_nodes(data)
    if size:
        nodes = scaled(nodes, size, seed)
    capacity = 1000 * sum(n[3] for n in nodes)
    work = isolated(workload(load_pods(data, trace), capacity, seed), share, seed)
    hosts = mixed_fleet(nodes, how)
    t0 = time.perf_counter()
    steps, _ = place_all(Placer(hosts, "fractui", typical_classes(work), seed=seed), work,
                         capacity)
    gpus = [g for h in hosts for g in h.gpus]
    return {"trace": trace, "fleet": how, "share": share, "seed": seed,
            "wall": time.perf_counter() - t0,
            "a100": curve_at([(a, u) for a, u, _ in steps], 100),
            "a130": curve_at([(a, u) for a, u, _ in steps], 130),
            "mig_gpus": 100.0 * sum(g.mig for g in gpus) / len(gpus)}


def _near(arrived: int, capacity: int) -> bool:
    x = int(100.0 * arrived / capacity + 0.5)
    return x in (100, 130)


def _slices(hosts: Sequence[Host]) -> float:
    """Compute slices held by jobs, % of all compute slices."""
    held = total = 0
    for h in hosts:
        for g in h.gpus:
            geo = g.layout.geometry  # type: ignore[union-attr]
            total += geo.compute_slices
            held += sum(i.compute_slices for i in g.layout.instances if i.busy)  # type: ignore
    return 100.0 * held / total


# Whole-GPU layouts of an A100-80GB a static fleet may be cut into (each fills its memory
# slices or its compute slices; 3g+3g leaves the seventh compute slice without memory).
LAYOUTS = {
    "7g": ("7g.80gb",),
    "4g+3g": ("4g.40gb", "3g.40gb"),
    "4g+2g+1g": ("4g.40gb", "2g.20gb", "1g.10gb"),
    "4g+1gx3": ("4g.40gb",) + ("1g.10gb",) * 3,
    "3g+3g": ("3g.40gb", "3g.40gb"),
    "balanced": BALANCED,
    "3g+2g+2g": ("3g.40gb", "2g.20gb", "2g.20gb"),
    "2gx3+1g": ("2g.20gb",) * 3 + ("1g.10gb",),
    "1gx7": ("1g.10gb",) * 7,
}


def static_mix(policy: str, hosts: Sequence[Host]) -> List[List[Tuple[str, ...]]]:
    """Each GPU's static layout, per host. ``static-balanced``: all-balanced everywhere;
    ``static:7g=N,4g+3g`` (layouts from LAYOUTS, a count of GPUs each, the last one takes the
    rest): the first N GPUs, hosts with the most GPUs first, take 7g, and so on."""
    if policy == "static-balanced":
        return [[BALANCED] * len(h.gpus) for h in hosts]
    parts = [p.partition("=") for p in policy[len("static:"):].split(",")]
    plan = [(LAYOUTS[name], int(n) if n else sum(len(h.gpus) for h in hosts))
            for name, _, n in parts]
    out: List[List[Tuple[str, ...]]] = [[] for _ in hosts]
    k = 0
    for i in sorted(range(len(hosts)), key=lambda i: -len(hosts[i].gpus)):  # stable: file order
        for _ in hosts[i].gpus:
            while plan[k][1] == 0:
                k += 1
            out[i].append(plan[k][0])
            plan[k] = (plan[k][0], plan[k][1] - 1)
    return out


def _replay_static(hosts: List[Host], work: Sequence[Request], capacity: int, seed: int,
                   layouts: List[List[Tuple[str, ...]]]):
    """A static layout on every GPU (``layouts``, per host and GPU): a request takes the
    smallest idle instance that covers its profile, on the first host (fixed random order) that
    has one."""
    geo = gpu_model(MIG_MODEL).geometry()
    free = [[list(lay) for lay in per_host] for per_host in layouts]
    left = Counter(n for per_host in layouts for lay in per_host for n in lay)  # idle ones
    held = [Counter(n for lay in per_host for n in lay) for per_host in layouts]  # per host
    where: Dict[str, set] = {n: {i for i, c in enumerate(held) if c[n]} for n in left}
    order = list(range(len(hosts)))
    random.Random(seed).shuffle(order)
    rank = {i: k for k, i in enumerate(order)}
    slices_total = sum(len(h.gpus) for h in hosts) * geo.compute_slices
    steps, times = [], []
    arrived = used = held_slices = 0
    for r in work:
        g = gpu_milli(r)
        arrived += g
        t = time.perf_counter()
        want = mig.profile_for(r, geo) if r.gpu_count else None
        ok = False
        cover_names = [n for n in left if want and _covers(geo, n, want)]
        if not r.gpu_count:
            order_now: Sequence[int] = order
        elif sum(left[n] for n in cover_names) < r.gpu_count:
            order_now = ()  # too few idle instances cover it, fleet-wide
        else:  # the hosts with one that covers it, in the fixed order
            order_now = sorted(set().union(*(where[n] for n in cover_names)),
                               key=rank.__getitem__)
        for i in order_now:
            h = hosts[i]
            if h.cpu_free < r.cpu_milli or h.memory_free < r.memory_mib or (
                    r.gpu_count and sum(held[i][n] for n in cover_names) < r.gpu_count):
                continue
            picks = []
            for gi, insts in enumerate(free[i]):
                cover = [n for n in insts if _covers(geo, n, want)] if want else []
                if cover:
                    picks.append((gi, min(cover, key=lambda n: geo.profile(n).size)))
                if len(picks) == r.gpu_count:
                    break
            if len(picks) < r.gpu_count:
                continue
            for gi, n in picks:
                free[i][gi].remove(n)
                left[n] -= 1
                held[i][n] -= 1
                if not held[i][n]:
                    where[n].discard(i)
                held_slices += geo.profile(n).compute_slices  # type: ignore[union-attr]
            h.cpu_free -= r.cpu_milli
            h.memory_free -= r.memory_mib
            ok = True
            break
        times.append(time.perf_counter() - t)
        if ok:
            used += g
        steps.append((100.0 * arrived / capacity, 100.0 * used / capacity,
                      100.0 * held_slices / slices_total))
    return steps, times


COARSE = 10  # the static search's first grid, % of the GPUs on 7g
SEARCHED = (len(LAYOUTS) - 1) * (100 // COARSE + 1) + 2 * COARSE + 1


def hindsight(pool, data: str, trace: str, seed: int) -> str:
    """The static layout (``static:7g=N,L``) that allocates most at 100 % arrived on this trace
    and seed: every other layout L of LAYOUTS beside 7g on a share of the GPUs in steps of
    COARSE %, then 1 % steps around the best share (at most SEARCHED replays in all)."""
    gpus = sum(n[3] for n in load_nodes(data))

    def best(policies: List[str]) -> Tuple[float, str]:
        runs = pool.map(replay, [(data, trace, p, seed, True, 0) for p in policies], chunksize=1)
        return max((r["a100"], r["policy"]) for r in runs)  # type: ignore[return-value]

    others = [x for x in LAYOUTS if x != "7g"]
    _, top = best(["static:7g=%d,%s" % (gpus * k // 100, x)
                   for x in others for k in range(0, 101, COARSE)])
    head, _, layout = top.partition(",")
    share = round(100 * int(head.split("=")[1]) / gpus)
    return best(["static:7g=%d,%s" % (gpus * k // 100, layout)
                 for k in range(max(0, share - COARSE), min(100, share + COARSE) + 1)])[1]


@lru_cache(maxsize=None)
def _covers(geo, have: str, want) -> bool:
    p = geo.profile(have)
    return p.compute_slices >= want.compute_slices and p.size >= want.size


def published(data: str, trace: str) -> Dict[str, Tuple[str, str]]:
    """The FGD simulator's own results for this trace: the mean over its seeds at 100 % and
    130 % arrived, per policy it ran that we run too."""
    runs: Dict[str, List[Dict[str, str]]] = {}
    with open(os.path.join(data, PUBLISHED_FILE)) as f:
        for r in csv.DictReader(f):
            if r["workload"] == "openb_pod_list_%s" % trace:
                runs.setdefault(r["sc_policy"], []).append(r)
    return {ours: tuple("%.2f" % statistics.fmean(float(r[at]) for r in runs[theirs])
                        for at in ("100", "130"))  # type: ignore[misc]
            for ours, theirs in PUBLISHED.items() if theirs in runs}


def pct(xs: Sequence[float]) -> str:
    if not xs or any(math.isnan(x) for x in xs):
        return "n/a"  # a replay that never reached the load
    m = statistics.fmean(xs)
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return "%.2f ± %.2f" % (m, sd)


def quantile(xs: Sequence[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))]


SHORT = {"first-fit": "ff", "best-fit": "bf"}
BY_SEED = "Placement on every openb trace, seed by seed (benchmarks/openb.py --by-seed)"


def seed_table(results: Sequence[Dict[str, object]], traces: Sequence[str],
               policies: Sequence[str], seeds: Sequence[int]) -> List[str]:
    """Per trace: each policy's mean at 100 % arrived, and per seed fractui minus the best of
    the other policies on that seed (the one it had to beat, by initial), with the count of
    seeds where fractui is below."""
    others = [p for p in policies if p != "fractui"]
    at = {(r["trace"], r["policy"], r["seed"]): r["a100"] for r in results
          if not r["mig"] and not r["size"] and r.get("batch", 1) == 1}
    lines = ["GPU allocation %% at 100 %% arrived, mean over seeds %s; per seed: fractui minus "
             "the best of %s on that seed (ff first-fit, bf best-fit: the best one); "
             "below: seeds where fractui is under it." % (
                 ", ".join(map(str, seeds)), ", ".join(others)), "",
             "| trace | %s | fractui − best, per seed | below |" % " | ".join(policies),
             "|---|%s---|---|" % ("---|" * len(policies))]
    below_all = 0
    for t in traces:
        margins = []
        for s in seeds:
            best = max(others, key=lambda p: at[t, p, s])
            margins.append((at[t, "fractui", s] - at[t, best, s], SHORT.get(best, best)))
        below = sum(1 for m, _ in margins if m < 0)
        below_all += below
        lines.append("| %s | %s | %s | %d |" % (
            t, " | ".join("%.2f" % statistics.fmean(at[t, p, s] for s in seeds)
                          for p in policies),
            ", ".join("%+.2f %s" % m for m in margins), below))
    lines += ["", "fractui below the best of the others on %d of %d (trace, seed) runs." % (
        below_all, len(traces) * len(seeds))]
    return lines


def main(argv: Sequence[str] = ()) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", action="append",
                    help="trace name, e.g. default (repeatable); all: every trace in the folder")
    ap.add_argument("--seeds", type=int, default=10, help="seeds 42.. (default 10)")
    ap.add_argument("--policy", action="append", choices=POLICIES)
    ap.add_argument("--mig", action="store_true", help="also the all-MIG A100-80GB replay")
    ap.add_argument("--mig-seeds", type=int, default=3, help="seeds for the all-MIG replay")
    ap.add_argument("--latency", action="store_true",
                    help="also decision times on 1,000, 10,000 and 50,000 GPUs of openb hosts")
    ap.add_argument("--batch", type=int, action="append", metavar="K",
                    help="also fractui with the arrivals in batches of K, each placed largest "
                         "first, as a pass that finds K jobs waiting (repeatable)")
    ap.add_argument("--by-seed", action="store_true",
                    help="per trace and seed, fractui against the best of the other policies at "
                         "100 %% arrived (recorded in a section of its own)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes")
    ap.add_argument("--record", action="store_true", help="write docs/benchmarks.md")
    ap.add_argument("--mixed", action="store_true",
                    help="instead: fleets of MIG-capable GPUs where a share of the requests asks "
                         "for MIG isolation (half MIG, all MIG, fractui's choice per GPU)")
    ap.add_argument("--data", default=DATA, metavar="DIR",
                    help="the folder of the openb trace and the FGD simulator's results "
                         "(default: the project's shared data folder)")
    args = ap.parse_args(list(argv) or None)
    if any(k < 2 for k in args.batch or ()):
        print("benchmarks/openb.py: --batch K needs K >= 2 (K = 1 is the plain replay)",
              file=sys.stderr)
        return 2
    traces = args.trace or ["default"]
    if "all" in traces:
        traces = all_traces(args.data) or ["default"]  # none: the check below names the files
    policies = args.policy or list(POLICIES)
    if args.by_seed and ("fractui" not in policies or len(policies) < 2):
        print("benchmarks/openb.py: --by-seed compares fractui with other policies: give "
              "--policy fractui and at least one other, or no --policy", file=sys.stderr)
        return 2
    seeds = range(42, 42 + args.seeds)
    missing = [f for f in data_files(traces) if not os.path.isfile(os.path.join(args.data, f))]
    if missing:
        print("benchmarks/openb.py: %s has no %s\n%s" % (
            args.data, ", ".join(missing), DATA_HELP), file=sys.stderr)
        return 2
    data = args.data
    if args.mixed:
        return mixed(data, traces, seeds, args.jobs, args.record)
    jobs = [(data, t, p, s, False, 0) for t in traces for p in policies for s in seeds]
    jobs += [(data, t, "fractui", s, False, 0, k) for t in traces for k in args.batch or ()
             for s in seeds]
    if args.mig:
        jobs += [(data, t, p, s, True, 0) for t in traces[:1]
                 for p in ("static-balanced", "first-fit", "fractui")
                 for s in range(42, 42 + args.mig_seeds)]
    t0 = time.time()
    with Pool(args.jobs) as pool:
        static = hindsight(pool, data, traces[0], 42) if args.mig else ""
        jobs += [(data, traces[0], static, s, True, 0) for s in range(42, 42 + args.mig_seeds)
                 if static]
        results = pool.map(replay, jobs, chunksize=1)
    if args.latency:  # after the pool, one at a time: none of our own replays competes for a core
        results += [replay((data, traces[0], p, 42, False, n))
                    for n in (1000, 10000, 50000) for p in ("fgd", "fractui")]
    wall = time.time() - t0
    lines = ["GPU allocation %% at 100 %% and 130 %% arrived load, mean ± sd over %d seeds (%s); "
             "published: FGD simulator's expected results, mean of 10 seeds." % (
                 args.seeds, ", ".join(map(str, seeds))), "",
             "| trace | policy | alloc @100% | published @100% | alloc @130% | published @130% "
             "| decision median | p99 |", "|---|---|---|---|---|---|---|---|"]
    for t in traces:
        pub = published(data, t)
        for p, k in [(p, 1) for p in policies] + [("fractui", k) for k in args.batch or ()]:
            rs = [r for r in results if r["trace"] == t and r["policy"] == p
                  and r["batch"] == k and not r["mig"] and not r["size"]]
            times = sorted(x for r in rs for x in r["times"])  # type: ignore[union-attr]
            pb = pub.get(p, ("", "")) if k == 1 else ("", "")
            lines.append("| %s | %s | %s | %s | %s | %s | %.3f ms | %.3f ms |" % (
                t, p if k == 1 else "%s, batches of %d" % (p, k), pct([r["a100"] for r in rs]),
                pb[0], pct([r["a130"] for r in rs]), pb[1],
                1e3 * quantile(times, 0.5), 1e3 * quantile(times, 0.99)))
    if args.mig:
        lines += ["", "All-MIG fleet: the same hosts, every GPU an %s in MIG mode; each sharing "
                  "request rounded up to the smallest profile whose compute and memory shares "
                  "both cover it (DESIGN's rule), whole GPUs take 7g.80gb; GPU-model constraints "
                  "dropped. requested = GPU the placed requests asked for, occupied = compute "
                  "slices held, both %% of capacity; mean ± sd over %d seeds." % (
                      MIG_MODEL, args.mig_seeds), "",
                  "| trace | placement | requested @100% | occupied @100% | requested @130% "
                  "| occupied @130% |", "|---|---|---|---|---|---|"]
        for t in traces[:1]:
            for p in ("static-balanced", static, "first-fit", "fractui"):
                rs = [r for r in results
                      if r["trace"] == t and r["policy"] == p and r["mig"] and not r["size"]]
                lines.append("| %s | %s | %s | %s | %s | %s |" % (
                    t, p if p != static else "static, best in hindsight: " + p[len("static:"):],
                    pct([r["a100"] for r in rs]), pct([r["s100"] for r in rs]),
                    pct([r["a130"] for r in rs]), pct([r["s130"] for r in rs])))
        lines += ["", "Static layouts: each GPU cut once into a whole-GPU layout that no job "
                  "changes; a request takes the smallest idle instance covering its profile, "
                  "first host that has one in the seeded order. `7g=N,L`: 7g.80gb on N GPUs "
                  "(hosts with the most GPUs first, for the multi-GPU requests), layout L on the "
                  "rest. Best in hindsight: searched on seed 42 over L in %s and N in steps of "
                  "%d %% of the GPUs, then of 1 %% around the best, by allocation at 100 %% "
                  "arrived (at most %d static replays); the layout found is then replayed on every "
                  "seed." % (", ".join(x for x in LAYOUTS if x != "7g"), COARSE, SEARCHED)]
    if args.latency:
        lines += ["", "Decision time (place + commit) from an empty fleet to 100 %% arrived, %s "
                  "trace scaled to the fleet, seed 42, one process, run after the replays above "
                  "so that none of them shares the cores:" % traces[0], "",
                  "| GPUs | hosts | policy | decisions | median | p99 | max |",
                  "|---|---|---|---|---|---|---|"]
        for r in results:
            if r["size"]:
                ts = r["times"]
                lines.append("| %d | %d | %s | %d | %.3f ms | %.3f ms | %.1f ms |" % (
                    r["gpus"], r["hosts"], r["policy"], len(ts), 1e3 * quantile(ts, 0.5),
                    1e3 * quantile(ts, 0.99), 1e3 * ts[-1]))
    lines += ["", "Decision time: place + commit per request over the whole replay (6,212 GPUs), "
              "one process. Run time %.0f s with %d worker processes." % (wall, args.jobs),
              "", "The data is not in the project (the trace is for research or study use): "
              "`--data DIR` names a folder holding it; run the script without it to be told "
              "which files and where to get them. The published figures are computed from the "
              "FGD simulator's own analysis_allo_discrete.csv (the mean over its seeds)."]
    body = "\n".join(lines)
    print(body)
    if args.by_seed:
        by_seed = "\n".join(seed_table(results, traces, policies, list(seeds)) + [
            "", "Run time %.0f s with %d worker processes." % (wall, args.jobs)])
        print("\n" + by_seed)
        if args.record:
            from benchmarks.record import machine, record_section
            record_section(BY_SEED, by_seed, machine())
        return 0
    if args.record:
        from benchmarks.record import machine, record_section
        record_section("Placement on the openb trace (benchmarks/openb.py)", body, machine())
    return 0


def mixed(data: str, traces: Sequence[str], seeds: Sequence[int], jobs: int,
          record: bool) -> int:
    """The mixed-isolation comparison: every fleet of MIXED_FLEETS at every share of
    MIXED_SHARES, fractui's policy, a table of requested GPU per fleet."""
    runs = [(data, t, f, p, s, 0) for t in traces for p in MIXED_SHARES for f in MIXED_FLEETS
            for s in seeds]
    t0 = time.time()
    with Pool(jobs) as pool:
        results = pool.map(replay_mixed, runs, chunksize=1)
    wall = time.time() - t0
    lines = ["The openb hosts with every GPU an %s (MIG-capable), GPU-model constraints "
             "dropped; a seeded share of the requests that take one GPU or part of one asks "
             "for MIG isolation (isolation \"mig\"), the rest take either (\"any\"). Fleets: "
             "**half**: every other GPU of each host in MIG mode for good (a one-GPU host: "
             "every other host); **all-mig**: every GPU in MIG mode; **dynamic**: every GPU "
             "flexible, MIG off at the start, fractui turns an idle GPU's MIG on or off when a "
             "request needs it. fractui's policy on each. requested = GPU the placed requests "
             "asked for, %% of capacity, mean ± sd over %d seeds (%s); MIG GPUs: %% of the "
             "GPUs in MIG mode at the end (130 %% arrived)." % (
                 MIG_MODEL, len(seeds), ", ".join(map(str, seeds))), "",
             "| trace | asking for MIG | fleet | requested @100% | requested @130% | MIG GPUs |",
             "|---|---|---|---|---|---|"]
    for t in traces:
        for p in MIXED_SHARES:
            for f in MIXED_FLEETS:
                rs = [r for r in results if r["trace"] == t and r["share"] == p
                      and r["fleet"] == f]
                lines.append("| %s | %d %% | %s | %s | %s | %.1f %% |" % (
                    t, round(100 * p), f, pct([r["a100"] for r in rs]),
                    pct([r["a130"] for r in rs]), statistics.fmean(r["mig_gpus"] for r in rs)))
    at = {(r["trace"], r["share"], r["fleet"], r["seed"]): r["a100"] for r in results}
    fixed = [f for f in MIXED_FLEETS if f != "dynamic"]
    lines += ["", "Seed by seed at 100 %% arrived: dynamic minus the better fixed fleet (%s) on "
              "that seed." % " or ".join(fixed), ""]
    for t in traces:
        for p in MIXED_SHARES:
            diffs = [at[t, p, "dynamic", s] - max(at[t, p, f, s] for f in fixed) for s in seeds]
            lines.append("- %s, %d %% asking for MIG: %s (mean %+.2f; below on %d of %d)" % (
                t, round(100 * p), ", ".join("%+.2f" % d for d in diffs),
                statistics.fmean(diffs), sum(1 for d in diffs if d < 0), len(diffs)))
    lines += ["", "Run time %.0f s with %d worker processes." % (wall, jobs)]
    body = "\n".join(lines)
    print(body)
    if record:
        from benchmarks.record import machine, record_section
        record_section("Placement across MIG and memory shares (benchmarks/openb.py --mixed)",
                       body, machine())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
