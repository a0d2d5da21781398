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
import os
import random
import statistics
import sys
import time
from dataclasses import replace
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


def curve_at(steps: Sequence[Tuple[float, float]], x: int) -> float:
    """Mean of the second value over the steps whose first value rounds to x."""
    vals = [v for a, v in steps if int(a + 0.5) == x]
    return statistics.fmean(vals) if vals else float("nan")


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


def replay(job: Tuple[str, str, str, int, bool, int]) -> Dict[str, object]:
    """One (trace, policy, seed) run from the data folder: allocation at 100 % and 130 % arrived,
    decision times. A fleet size other than 0 replays on that many GPUs of openb hosts (for
    latency)."""
    data, trace, policy, seed, all_mig, size = job
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
    if policy == "static-balanced":
        steps, times = _replay_static(hosts, work, capacity, seed)
    else:
        placer = Placer(hosts, policy, typical_classes(pods), seed=seed)
        steps, times = place_all(placer, work, capacity, bool(size), all_mig)
    wall = time.perf_counter() - t0
    return {"trace": trace, "policy": policy, "seed": seed, "mig": all_mig, "size": size,
            "gpus": sum(n[3] for n in nodes), "hosts": len(nodes), "wall": wall,
            "a100": curve_at([(a, u) for a, u, _ in steps], 100),
            "a130": curve_at([(a, u) for a, u, _ in steps], 130),
            "s100": curve_at([(a, s) for a, _, s in steps], 100),
            "s130": curve_at([(a, s) for a, _, s in steps], 130),
            "times": sorted(times)}


def place_all(placer: Placer, work: Sequence[Request], capacity: int, stop: bool = False,
              slices: bool = False) -> Tuple[List[Tuple[float, float, float]], List[float]]:
    """Schedule ``work`` in order: per request (arrived %, placed %, compute slices held % near
    100 and 130 % arrived when ``slices``, else 0) and its decision time; ``stop``: at 100 %."""
    steps, times = [], []
    arrived = used = 0
    for r in work:
        g = gpu_milli(r)
        arrived += g
        if stop and arrived > capacity:
            break
        t = time.perf_counter()
        p = placer.schedule(r)
        times.append(time.perf_counter() - t)
        if p is not None:
            used += g
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


def _replay_static(hosts: List[Host], work: Sequence[Request], capacity: int, seed: int):
    """A static all-balanced layout on every GPU: a request takes the smallest idle instance
    that covers its profile, on the first host (fixed random order) that has one."""
    geo = gpu_model(MIG_MODEL).geometry()
    free = [[list(BALANCED) for _ in h.gpus] for h in hosts]
    held = [0] * len(hosts)
    order = list(range(len(hosts)))
    random.Random(seed).shuffle(order)
    slices_total = sum(len(h.gpus) for h in hosts) * geo.compute_slices
    steps, times = [], []
    arrived = used = held_slices = 0
    for r in work:
        g = gpu_milli(r)
        arrived += g
        t = time.perf_counter()
        want = mig.profile_for(r, geo) if r.gpu_count else None
        ok = False
        if r.gpu_count and (want is None or not any(_covers(geo, n, want) for n in BALANCED)):
            order_now: Sequence[int] = ()  # no instance of the layout covers it anywhere
        else:
            order_now = order
        for i in order_now:
            h = hosts[i]
            if h.cpu_free < r.cpu_milli or h.memory_free < r.memory_mib:
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
                held_slices += geo.profile(n).compute_slices  # type: ignore[union-attr]
            h.cpu_free -= r.cpu_milli
            h.memory_free -= r.memory_mib
            held[i] += 1
            ok = True
            break
        times.append(time.perf_counter() - t)
        if ok:
            used += g
        steps.append((100.0 * arrived / capacity, 100.0 * used / capacity,
                      100.0 * held_slices / slices_total))
    return steps, times


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
    m = statistics.fmean(xs)
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return "%.2f ± %.2f" % (m, sd)


def quantile(xs: Sequence[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main(argv: Sequence[str] = ()) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", action="append", help="trace name, e.g. default (repeatable)")
    ap.add_argument("--seeds", type=int, default=10, help="seeds 42.. (default 10)")
    ap.add_argument("--policy", action="append", choices=POLICIES)
    ap.add_argument("--mig", action="store_true", help="also the all-MIG A100-80GB replay")
    ap.add_argument("--mig-seeds", type=int, default=3, help="seeds for the all-MIG replay")
    ap.add_argument("--latency", action="store_true",
                    help="also decision times on 1,000, 10,000 and 50,000 GPUs of openb hosts")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes")
    ap.add_argument("--record", action="store_true", help="write docs/benchmarks.md")
    ap.add_argument("--mixed", action="store_true",
                    help="instead: fleets of MIG-capable GPUs where a share of the requests asks "
                         "for MIG isolation (half MIG, all MIG, fractui's choice per GPU)")
    ap.add_argument("--data", default=DATA, metavar="DIR",
                    help="the folder of the openb trace and the FGD simulator's results "
                         "(default: the project's shared data folder)")
    args = ap.parse_args(list(argv) or None)
    traces = args.trace or ["default"]
    policies = args.policy or list(POLICIES)
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
    if args.mig:
        jobs += [(data, t, p, s, True, 0) for t in traces[:1]
                 for p in ("static-balanced", "first-fit", "fractui")
                 for s in range(42, 42 + args.mig_seeds)]
    t0 = time.time()
    with Pool(args.jobs) as pool:
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
        for p in policies:
            rs = [r for r in results
                  if r["trace"] == t and r["policy"] == p and not r["mig"] and not r["size"]]
            times = sorted(x for r in rs for x in r["times"])  # type: ignore[union-attr]
            pb = pub.get(p, ("", ""))
            lines.append("| %s | %s | %s | %s | %s | %s | %.3f ms | %.3f ms |" % (
                t, p, pct([r["a100"] for r in rs]), pb[0], pct([r["a130"] for r in rs]), pb[1],
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
            for p in ("static-balanced", "first-fit", "fractui"):
                rs = [r for r in results
                      if r["trace"] == t and r["policy"] == p and r["mig"] and not r["size"]]
                lines.append("| %s | %s | %s | %s | %s | %s |" % (
                    t, p, pct([r["a100"] for r in rs]), pct([r["s100"] for r in rs]),
                    pct([r["a130"] for r in rs]), pct([r["s130"] for r in rs])))
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
