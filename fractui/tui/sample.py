"""A frozen fleet, built without agents: the snapshot tests and the benchmark draw it.

Statuses, snapshots and job records have exactly the shape the agent sends (docs/protocol.md),
and the store jobs match the agent jobs by key as live ones do, so the screen code under test
is the code the live fleet runs. Deterministic for a given seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from fractui.config import QueueConfig, TeamConfig
from fractui.fleet.host import HostStatus
from fractui.sched.quota import charge
from fractui.store.model import PENDING, RUNNING, Job, Slot, UsageRecord
from fractui.tui.model import StoreView
from remote_agent import FEATURES
from remote_agent.gpu.models import model as model_facts

NOW = 1_795_000_000.0  # the fixed clock of snapshot tests
UID = "c0ffee00"

QUEUES = (QueueConfig("quarter", gpu=0.25), QueueConfig("mig-3g", mig="3g.40gb"),
          QueueConfig("10g", memory_gib=10), QueueConfig("whole", gpus=1))
TEAMS = (TeamConfig("vision", quota_gpus=4), TeamConfig("nlp", quota_gpus=3),
         TeamConfig("speech", quota_gpus=1, over_quota=True))
PEOPLE = {"vision": "ana", "nlp": "chen", "speech": "eli"}  # who submitted each team's jobs

# MIG layouts as (profile, start, size): valid placements on A100-80GB and H100 alike.
_LAYOUTS = (
    (("3g.40gb", 4, 4), ("2g.20gb", 0, 2), ("1g.10gb", 2, 1)),
    (("7g.80gb", 0, 8),),
    (("4g.40gb", 0, 4), ("3g.40gb", 4, 4)),
    (("1g.10gb", 6, 1), ("1g.10gb", 5, 1), ("2g.20gb", 0, 2)),
    (),
)
_KINDS = ("A100-80GB", "H100", "L4", "A10")
FOREIGN_PID = 31337  # on each L4's GPU 0: memory used outside fractui
# why the sample's pending jobs wait, in the scheduler's words (fractui.sched.queueing)
WAITING = ("no room: no GPU in the fleet has a free slice for it",
           "team nlp is at its quota (3.00 of 3.00 GPUs held)",
           "no room outside the hosts that refused it lately (l4-1)")


@dataclass
class SampleFleet:
    statuses: list[HostStatus]
    store: StoreView

    def usage(self) -> list[UsageRecord]:
        """The usage records of a day on this fleet: vision held two GPUs until two hours
        ago, nlp one until an hour ago, and every running job since its start."""
        past = [UsageRecord(0, 0, team, "whole", "u", "a10-1", (0,), "A10", None, None, held,
                            start - 60, start, end, "done")
                for team, held, start, end in (("vision", 2.0, NOW - 24 * 3600, NOW - 7200),
                                               ("nlp", 1.0, NOW - 6 * 3600, NOW - 3600))]
        return past + [UsageRecord(j.id, j.attempt, j.team, j.queue, "u", j.slot.host,
                                   j.slot.gpus, None, j.slot.profile, j.slot.memory_mib,
                                   j.slot.charge, j.submitted_at, j.updated_at)
                       for j in self.store.jobs if j.state == RUNNING and j.slot is not None]


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.jobs: list[Job] = []
        self.next_id = 1

    def store_job(self, host: str, gpu: int, queue: QueueConfig, **slot: object) -> Job:
        team = TEAMS[self.rng.randrange(len(TEAMS))].name
        job = Job(id=self.next_id, queue=queue.name, team=team, name="train-%d" % self.next_id,
                  argv=("python", "train.py"), request={}, state=RUNNING,
                  submitted_at=NOW - 600, updated_at=NOW - 300, started_at=NOW - 300,
                  slot=Slot(host, (gpu,), **slot),  # type: ignore[arg-type]
                  submitted_by="%s@login1" % PEOPLE[team])
        self.next_id += 1
        self.jobs.append(job)
        return job

    def agent_job(self, job: Job, n: int, gpu: int, **fields: object) -> dict:
        record = {"id": "j%d" % n, "key": job.key(UID), "name": job.name, "gpus": [gpu],
                  "instance": None, "memory_mib": None, "state": "running", "pid": 1000 + n,
                  "created_at": NOW - 300 + n}
        record.update(fields)
        return record

    def gpu(self, host: str, kind: str, index: int, jobs: dict) -> dict:
        facts = model_facts(kind)
        uuid = "GPU-%s-%d" % (host, index)
        record = {"index": index, "uuid": uuid, "name": facts.name,
                  "memory_mib": facts.memory_mib, "mig_capable": facts.mig_capable,
                  "mig_mode": facts.mig_capable, "processes": []}
        used = 0
        if facts.mig_capable:
            instances = []
            for k, (profile, start, size) in enumerate(
                    _LAYOUTS[self.rng.randrange(len(_LAYOUTS))]):
                inst_uuid = "MIG-%s-%d-%d" % (host, index, start)
                mem = facts.geometry().profile(profile).memory_mib
                held = self.rng.random() < 0.75
                inst_used = self.rng.randrange(mem // 4, mem // 2) if held else 0
                used += inst_used
                instances.append({"uuid": inst_uuid, "gi_id": k + 1, "profile": profile,
                                  "start": start, "size": size, "memory_mib": mem,
                                  "busy": held, "pids": [], "memory_used_mib": inst_used})
                if held:
                    job = self.store_job(host, index, QUEUES[1], profile=profile, start=start,
                                         charge=charge(profile, None,
                                                       [(facts.memory_mib, facts.geometry())]))
                    n = len(jobs) + 1
                    jobs["j%d" % n] = self.agent_job(job, n, index, instance=inst_uuid)
                    instances[-1]["pids"] = [1000 + n]
                    record["processes"].append({"pid": 1000 + n, "used_mib": inst_used,
                                                "instance": inst_uuid})
            record.update(instances=instances, layout_version="v%d" % index,
                          utilization_gpu=None,
                          utilization_note="not reported by NVML for MIG instances")
        else:
            free = facts.memory_mib
            for _ in range(self.rng.randrange(0, 4)):
                share = self.rng.choice((2048, 4096, 6144, 10240))
                if share > free:
                    break
                free -= share
                queue = QUEUES[2] if share == 10240 else QUEUES[0]
                job = self.store_job(host, index, queue, memory_mib=share,
                                     charge=charge(None, share, [(facts.memory_mib, None)]))
                n = len(jobs) + 1
                jobs["j%d" % n] = self.agent_job(job, n, index, memory_mib=share)
                record["processes"].append({"pid": 1000 + n, "used_mib": share // 2,
                                            "instance": None})
                used += share // 2
            if kind == "L4" and index == 0:  # a process fractui did not start
                record["processes"].append({"pid": FOREIGN_PID, "used_mib": 3072,
                                            "instance": None})
                used += 3072
            record.update(utilization_gpu=self.rng.randrange(0, 100))
        record["memory_used_mib"] = used
        record["health"] = health(facts.name, used * 100 // facts.memory_mib if facts.mig_capable
                                  else record["utilization_gpu"])
        return record


def health(model: str, load: int) -> dict:
    """A healthy GPU's health record at ``load`` percent, in the shape the agent sends."""
    facts = model_facts(model)
    limit = facts.power_limit_w * 1000
    return {"temperature_c": 30 + load * 45 // 100, "slowdown_c": facts.slowdown_c,
            "power_mw": limit // 8 + (limit - limit // 8) * load // 100, "power_limit_mw": limit,
            "ecc_volatile": {"corrected": 0, "uncorrected": 0} if facts.ecc else None,
            "throttle": [] if load else ["gpu_idle"], "xid": [],
            "unmeasured": [] if facts.ecc else ["ECC errors"], "errors": []}


def sample_fleet(gpus: int = 16, seed: int = 7, per_host: int = 4,
                 states: dict[str, tuple[str, str]] | None = None) -> SampleFleet:
    """``gpus`` GPUs over hosts of ``per_host``, models in turn (A100 and H100 in MIG mode,
    L4 and A10 without); ``states`` sets some hosts' (state, error)."""
    b = _Builder(seed)
    statuses = []
    for h in range((gpus + per_host - 1) // per_host):
        kind = _KINDS[h % len(_KINDS)]
        name = "%s-%d" % (kind.split("-")[0].lower(), h // len(_KINDS) + 1)
        jobs: dict = {}
        count = min(per_host, gpus - h * per_host)
        snapshot = {"host": name, "time": NOW,
                    "gpus": [b.gpu(name, kind, i, jobs) for i in range(count)]}
        state, error = (states or {}).get(name, ("online", None))
        hello = {"host": name, "cpus": 64, "memory_mib": 512 * 1024, "gpus": snapshot["gpus"],
                 "privileges": {"root": True, "mig_changes": True, "reason": None},
                 "features": list(FEATURES)}
        statuses.append(HostStatus(name, state=state, error=error, since=NOW - 3600,
                                   hello=hello, snapshot=snapshot, jobs=jobs))
    for k in range(min(5, gpus)):  # a few waiting jobs, so the queue panel has waits
        queue = QUEUES[k % len(QUEUES)]
        b.jobs.append(Job(id=b.next_id, queue=queue.name, team=TEAMS[k % len(TEAMS)].name,
                          name="wait-%d" % k, argv=("python", "x.py"),
                          request=queue.request(),
                          state=PENDING, submitted_at=NOW - 60 * (k + 1), updated_at=NOW,
                          reason=WAITING[k % len(WAITING)],
                          submitted_by="%s@login1" % PEOPLE[TEAMS[k % len(TEAMS)].name]))
        b.next_id += 1
    return SampleFleet(statuses, StoreView(UID, tuple(b.jobs)))
