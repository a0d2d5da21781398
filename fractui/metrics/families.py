"""The metric families of one scrape, made from a ``MetricsState``: pure, so a test can check
every sample without HTTP. Names, units and labels are listed in docs/metrics.md.

Cardinality follows what is live: one series set per configured host, per GPU of a reachable
host, per running job, per queue and per team. An ended job is not among the active jobs, so
its series leave with it. A value NVML does not give (utilisation on MIG) has no sample at
all, never a 0.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional

from prometheus_client.core import GaugeMetricFamily, Metric

from fractui.fleet.host import STATES
from fractui.metrics.state import MetricsState
from fractui.sched.copies import COPY_KINDS
from fractui.sched.fleetview import (ACTIVE_AGENT_STATES, USABLE, HostView, held_by_gpu,
                                     job_memory_cap_mib, job_memory_mib)
from fractui.sched.health import unhealthy
from fractui.sched.quota import team_usage, teams_gone
from fractui.store.model import PENDING, Job
from fractui.usage.report import gpus_in_use, unshared

MIB = 1024 * 1024
GPU_LABELS = ["host", "gpu"]
JOB_LABELS = ["job", "team", "queue", "host", "gpu", "slice"]


def _gauge(name: str, doc: str, labels: Iterable[str] = (), unit: str = "") -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels), unit=unit)


def slice_label(job: Job) -> str:
    """What a job runs on, as one label: its MIG profile, or its memory share per GPU."""
    slot = job.slot
    if slot is None:
        return ""
    if slot.profile:
        return slot.profile
    return "%dMiB" % slot.memory_mib if slot.memory_mib else "whole"


def families(state: MetricsState) -> List[Metric]:
    """Every family of one scrape (the pass duration histogram is the exporter's own)."""
    return (_scheduler(state) + _hosts(state.hosts) + _copies(state) + _gpus(state)
            + _jobs(state) + _queues(state) + _teams(state))


def _scheduler(state: MetricsState) -> List[Metric]:
    held = _gauge("fractui_scheduler_lease_held", "1 while this scheduler (holder: its name "
                  "in the lease) holds the store's lease: it serves these metrics only then",
                  ["holder"])
    held.add_metric([state.holder], 1.0 if state.lease_held else 0.0)
    store = _gauge("fractui_store_reachable", "1 if the store answered the scheduler's last "
                   "turn, else 0")
    store.add_metric([], 1.0 if state.store_reachable else 0.0)
    out: List[Metric] = [held, store]
    if state.last_pass is not None:
        last = _gauge("fractui_scheduler_last_pass_timestamp_seconds",
                      "When the scheduler's last full pass ended (Unix time)")
        last.add_metric([], state.last_pass)
        out.append(last)
    return out


def _hosts(hosts: Iterable[HostView]) -> List[Metric]:
    st = _gauge("fractui_host_state", "1 for the state the host is in, 0 for the others",
                ["host", "state"])
    up = _gauge("fractui_host_agent_reachable", "1 if the host's agent answers (online or "
                "degraded), else 0", ["host"])
    for view in hosts:
        for name in STATES:
            st.add_metric([view.name, name], 1.0 if view.state == name else 0.0)
        up.add_metric([view.name], 1.0 if view.state in USABLE else 0.0)
    return [st, up]


def _copies(state: MetricsState) -> List[Metric]:
    """Each kind's count, 0 included, on each host the last full pass reached: what an alert
    reads (a copy left running, or one the lease holder has not managed to stop)."""
    unheld = _gauge("fractui_host_unheld_copies", "Live copies under the store's key that no "
                    "job of the store holds, on a host the last full pass reached, by kind: "
                    "late (of an attempt the store moved past: the lease holder kills it), "
                    "stale (of a lost host's job that went on without it: the lease holder "
                    "stops it), left (of a job the store does not have, or has elsewhere or "
                    "nowhere: left running, for an admin to stop)", ["host", "kind"])
    for host, kinds in sorted(state.copies.items()):
        for kind in COPY_KINDS:
            unheld.add_metric([host, kind], float(kinds.get(kind, 0)))
    return [unheld]


def _reachable(state: MetricsState) -> Dict[str, HostView]:
    return {v.name: v for v in state.hosts if v.state in USABLE and v.snapshot}


def _gpus(state: MetricsState) -> List[Metric]:
    info = _gauge("fractui_gpu_info", "A GPU of a reachable host: its uuid, model and MIG "
                  "mode as labels; always 1", GPU_LABELS + ["uuid", "model", "mig"])
    total = _gauge("fractui_gpu_memory", "The GPU's memory", GPU_LABELS, "bytes")
    used = _gauge("fractui_gpu_memory_used", "GPU memory in use, by anyone", GPU_LABELS,
                  "bytes")
    capped = _gauge("fractui_gpu_memory_allocated", "GPU memory the caps of the jobs on the "
                    "GPU allow them (their shares or MIG instances)", GPU_LABELS, "bytes")
    util = _gauge("fractui_gpu_utilization", "Utilisation of the whole GPU as NVML reports "
                  "it (0 to 1); absent where NVML reports none (MIG)", GPU_LABELS, "ratio")
    alloc = _gauge("fractui_gpu_allocated", "The part of the GPU charged to jobs placed or "
                   "running on it, or held for a job moving to it (0 to 1)", GPU_LABELS,
                   "ratio")
    healthy = _gauge("fractui_gpu_healthy", "1 if the GPU reads healthy (ECC, XID, clocks, "
                     "temperature: fractui.sched.health), 0 if not; absent where the agent "
                     "reports no health", GPU_LABELS)
    charged = held_by_gpu(state.jobs)
    for view in _reachable(state).values():
        snap = view.snapshot or {}
        now = float(snap.get("time") or state.now)
        active = [j for j in view.jobs.values() if j.get("state") in ACTIVE_AGENT_STATES]
        for g in snap.get("gpus") or ():
            index = g.get("index")
            labels = [view.name, str(index)]
            info.add_metric(labels + [str(g.get("uuid") or ""), str(g.get("name") or ""),
                                      "on" if g.get("mig_mode") else "off"], 1.0)
            if g.get("memory_mib") is not None:
                total.add_metric(labels, g["memory_mib"] * MIB)
            if g.get("memory_used_mib") is not None:
                used.add_metric(labels, g["memory_used_mib"] * MIB)
            if g.get("utilization_gpu") is not None:
                util.add_metric(labels, g["utilization_gpu"] / 100.0)
            caps = [job_memory_cap_mib(j, g) for j in active if index in (j.get("gpus") or ())]
            capped.add_metric(labels, sum(c for c in caps if c is not None) * MIB)
            alloc.add_metric(labels, round(charged.get((view.name, index), 0.0), 6))
            if g.get("health"):
                healthy.add_metric(labels, 0.0 if unhealthy(g, now) else 1.0)
    return [info, total, used, capped, util, alloc, healthy]


def _jobs(state: MetricsState) -> List[Metric]:
    """One series set per job holding its slice (running, or stopping within its grace: what
    the usage records charge), and the GPUs sharing saves now (docs/usage.md's definition)."""
    alloc = _gauge("fractui_job_allocated_gpus", "GPUs a running job is charged (its slice's "
                   "compute share on MIG, its memory share's fraction otherwise)", JOB_LABELS)
    used = _gauge("fractui_job_memory_used", "GPU memory a running job's processes use (its "
                  "MIG instance's, or its processes' on shared GPUs)", JOB_LABELS, "bytes")
    cap = _gauge("fractui_job_memory_limit", "GPU memory a running job's cap allows it (its "
                 "share on each GPU, or its MIG instance)", JOB_LABELS, "bytes")
    util = _gauge("fractui_job_utilization_mean", "Mean SM utilisation of a running job's "
                  "processes since it started, as its agent samples it (1 = one whole GPU "
                  "busy); absent where NVML gives none per process (MIG)", JOB_LABELS, "ratio")
    demand = _gauge("fractui_sharing_demand_gpus", "Whole GPUs the jobs holding slices "
                    "would need without sharing: one per GPU each uses")
    in_use = _gauge("fractui_sharing_used_gpus", "GPUs with a job holding a slice on them")
    reachable = _reachable(state)
    needed, on = 0, set()
    for job in state.jobs:
        slot = job.slot
        if not job.holds_slice or slot is None:
            continue
        needed += unshared(slot.gpus)
        on.update(gpus_in_use(slot.host, slot.gpus))
        labels = [str(job.id), job.team or "", job.queue, slot.host,
                  ",".join(str(g) for g in slot.gpus), slice_label(job)]
        alloc.add_metric(labels, slot.charge)
        view = reachable.get(slot.host)
        record = view.jobs.get(job.agent_job) if view and job.agent_job else None
        if record is None:
            continue  # its host is not heard from: nothing measured to say
        gpus = {g.get("index"): g for g in (view.snapshot or {}).get("gpus") or ()}
        memory = job_memory_mib(record, gpus)
        if memory is not None:
            used.add_metric(labels, memory * MIB)
        limit = _limit(record, [gpus[i] for i in slot.gpus if i in gpus])
        if limit is not None:
            cap.add_metric(labels, limit * MIB)
        mean = _util_mean(record)
        if mean is not None:
            util.add_metric(labels, mean / 100.0)
    demand.add_metric([], float(needed))
    in_use.add_metric([], float(len(on)))
    return [alloc, used, cap, util, demand, in_use]


def _limit(record: Mapping[str, Any], gpus: List[Mapping[str, Any]]) -> Optional[int]:
    caps = [job_memory_cap_mib(record, g) for g in gpus]
    return sum(caps) if caps and None not in caps else None  # type: ignore[arg-type]


def _util_mean(record: Mapping[str, Any]) -> Optional[float]:
    """The agent's mean SM utilisation of the job (percent of one GPU), or None."""
    usage = record.get("usage")
    mean = usage.get("util_mean") if isinstance(usage, Mapping) else None
    return float(mean) if isinstance(mean, (int, float)) and not isinstance(mean, bool) else None


def _queues(state: MetricsState) -> List[Metric]:
    depth = _gauge("fractui_queue_pending_jobs", "Jobs waiting in the queue", ["queue"])
    oldest = _gauge("fractui_queue_oldest_wait_seconds", "How long the queue's oldest pending "
                    "job has waited (0 when none waits)", ["queue"])
    longest: Dict[str, float] = {}
    count: Dict[str, int] = {q: 0 for q in state.queues}
    now = state.now + state.store_lead  # (the store's clock, which dated the waits' starts)
    for job in state.jobs:
        if job.state == PENDING:
            count[job.queue] = count.get(job.queue, 0) + 1
            longest[job.queue] = max(longest.get(job.queue, 0.0), job.waited(now))
    for queue, n in count.items():
        depth.add_metric([queue], float(n))
        oldest.add_metric([queue], longest.get(queue, 0.0))
    return [depth, oldest]


def _teams(state: MetricsState) -> List[Metric]:
    quota = _gauge("fractui_team_quota_gpus", "The team's quota, in GPUs", ["team"])
    held = _gauge("fractui_team_allocated_gpus", "GPUs the team's placed and running jobs are "
                  "charged", ["team"])
    borrowed = _gauge("fractui_team_borrowed_gpus", "The part of those held over quota "
                      "(preemptible, borrowed from idle capacity)", ["team"])
    configured = {t.name for t in state.teams}  # (a team gone from the config whose jobs
    # hold GPUs still holds them, all borrowed: it has no quota to say)
    for u in team_usage(state.jobs, [*state.teams, *teams_gone(state.jobs, state.teams)]):
        if u.name in configured:
            quota.add_metric([u.name], u.quota)
        held.add_metric([u.name], round(u.used, 6))
        borrowed.add_metric([u.name], round(u.borrowed, 6))
    return [quota, held, borrowed]
