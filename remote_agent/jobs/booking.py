"""What a launch may have of a GPU: the daemon refuses anything that would double-book one.

An instance already held by a job or used by processes outside fractui is refused; so is a memory
share above what is still free (the GPU's memory less the shares booked and what processes outside
fractui use, the jobs' MPS server not among them: ``caps.mps_server``). What NVML says is read
first, without the supervisor's lock (``read_facts``); the table is then checked and the job
recorded in one step under it (``check``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from remote_agent.gpu.backend import GpuInfo
from remote_agent.jobs.caps import mps_server
from remote_agent.jobs.store import Job
from remote_agent.rpc import jsonrpc as rpc
from remote_agent.rpc.jsonrpc import RpcError


@dataclass
class Facts:
    """What NVML says about a launch's GPUs."""

    outside_mib: Dict[int, int] = field(default_factory=dict)  # per GPU: not fractui's
    instance: Optional[Tuple[str, bool, Tuple[int, ...]]] = None  # (uuid, busy, pids)
    made_again: Optional[str] = None  # the instance asked not there: one made in its place


def read_facts(gpus: Any, memory_mib: Optional[int], instance: Optional[str],
               infos: List[GpuInfo], job_pids: Callable[[], List[int]]) -> Facts:
    """``gpus`` is the agent; ``job_pids`` every process of fractui's jobs on the host."""
    facts = Facts()
    if memory_mib is not None:
        ours = set(job_pids())
        for info in infos:
            if not info.mig_mode:
                found = gpus.call_nvml(lambda: gpus.backend.processes(info.index))
                facts.outside_mib[info.index] = sum(p.used_mib or 0 for p in found
                                                    if p.pid not in ours
                                                    and not mps_server(p.pid, p.used_mib))
    elif instance is not None and infos[0].mig_mode:
        index = infos[0].index
        layout = gpus.call_nvml(lambda: gpus.backend.layout(index))
        inst = next((i for i in layout.instances if i.uuid == instance), None)
        if inst is not None:
            facts.instance = (inst.uuid, inst.busy, inst.pids)
        else:  # a rollback's: said, not taken (the job asked for that uuid, and runs on it)
            again = gpus.made_again.standing_for(instance, layout.instances)
            facts.made_again = gpus.made_again.marked(again).label() if again is not None \
                else None
    return facts


def check(active: List[Job], memory_mib: Optional[int], instance: Optional[str],
          infos: List[GpuInfo], facts: Facts) -> None:
    """Refuse a launch that would double-book a GPU, given the active jobs."""
    if memory_mib is not None:
        for info in infos:
            if info.mig_mode:
                raise RpcError(rpc.NOT_SUPPORTED, "GPU %d (%s) is in MIG mode: give the job an "
                               "instance or a MIG profile, not a memory share" % (
                                   info.index, info.name), {"gpu": info.index})
            booked = [j for j in active if info.index in j.gpus and j.memory_mib is not None]
            foreign = facts.outside_mib.get(info.index, 0)
            free = info.memory_mib - sum(j.memory_mib for j in booked) - foreign
            if memory_mib > free:
                held = ", ".join("j%d (%d MiB)" % (j.id, j.memory_mib) for j in booked)
                raise RpcError(rpc.NO_ROOM, (
                    "GPU %d (%s) has %d MiB free for shares and the job asks %d MiB "
                    "(%d MiB total%s%s)" % (
                        info.index, info.name, max(free, 0), memory_mib, info.memory_mib,
                        "; booked: " + held if held else "",
                        "; %d MiB used by processes outside fractui" % foreign
                        if foreign else "")),
                    {"gpu": info.index, "free_mib": max(free, 0)})
        return
    info = infos[0]
    if not info.mig_mode:
        raise RpcError(rpc.NOT_MIG, "GPU %d (%s) has no MIG instances (MIG mode is off or "
                       "unsupported): give the job a memory_mib share" % (
                           info.index, info.name), {"gpu": info.index})
    if instance is not None:
        if facts.instance is None:
            raise RpcError(rpc.INSTANCE_NOT_FOUND, "no MIG instance %s on GPU %d%s" % (
                instance, info.index, "" if facts.made_again is None else (
                    "; in its place stands %s: launch the job on that one" % facts.made_again)))
        refuse_if_held(active, *facts.instance)


def holders(active: List[Job], uuid: str, but: Optional[int] = None) -> List[Job]:
    """The active jobs (other than job ``but``) on MIG instance ``uuid``."""
    return [j for j in active if j.instance == uuid and j.id != but]


def refuse_if_held(active: List[Job], uuid: str, busy: bool, pids: Tuple[int, ...],
                   but: Optional[int] = None) -> None:
    held = holders(active, uuid, but)
    if held:
        raise RpcError(rpc.INSTANCE_BUSY, "MIG instance %s is already in use by job j%d" % (
            uuid, held[0].id), {"job": held[0].record()})
    if busy:
        raise RpcError(rpc.INSTANCE_BUSY, "MIG instance %s is in use by processes %s outside "
                       "fractui" % (uuid, ", ".join(map(str, pids)) or "(unreadable)"))
