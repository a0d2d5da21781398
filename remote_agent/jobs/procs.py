"""Every process of a job, found and signalled with or without its shim.

A job's processes are those in its cgroup where the host gives it one (a process cannot leave a
cgroup without privileges), else those in its session: the job's first process starts a session
and a process group, both numbered by its pid. Linux never hands out a pid number while a process
still uses it as a session or group id, so while any member lives the number stays the job's; once
the leader is gone and a process of that pid exists again, it is another one if its start time
differs from the leader's recorded one. A process that starts a session of its own leaves the
job's session, not its cgroup: on hosts without cgroups it escapes (docs/decisions.md).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterable, List, Optional, Set

PID_MOST = 2 ** 22  # Linux's pid_max is at most this (PID_MAX_LIMIT): every pid is below it
PROC_FDS = "/proc/self/fd"


def proc_missing() -> Optional[str]:
    """Why jobs cannot be run here, where /proc is not mounted (a container or a chroot
    without it), or None. Without it every process reads as ended (``proc_info``): a daemon
    would find each job it adopts gone, and a shim cannot open its job's output pipe."""
    if os.path.isdir(PROC_FDS):
        return None
    return ("/proc is not mounted here (no %s), and the agent finds its jobs' processes and "
            "their output pipes through it; mount it (mount -t proc proc /proc), or run the "
            "agent where it is mounted" % PROC_FDS)


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    pgid: int
    sid: int
    start_ticks: int  # clock ticks after boot: with the pid, names one process for good


def _parse_stat(pid: int, raw: bytes, ended_too: bool) -> Optional[ProcInfo]:
    fields = _stat_fields(raw)
    if not ended_too and _has_ended(pid, fields[0]):
        return None  # ended, waiting to be reaped
    return ProcInfo(pid, int(fields[2]), int(fields[3]), int(fields[19]))


def _stat_fields(raw: bytes) -> List[bytes]:
    # the command name may hold spaces and parentheses: fields follow the last ')'
    return raw[raw.rindex(b")") + 2:].split()


def _has_ended(pid: int, state: bytes) -> bool:
    """Whether the process whose first thread's /proc state is ``state`` has ended: it reads Z
    (or X) and none of its other threads runs."""
    return state in (b"Z", b"X") and not _other_threads_run(pid)


def _other_threads_run(pid: int) -> bool:
    """Whether a process whose first thread reads Z runs on in other threads: its main thread
    ended (pthread_exit) and the rest go on, GPU memory and all, so it has not ended. Read only
    for a process that reads Z, which is rare."""
    try:
        tids = [int(t) for t in os.listdir("/proc/%d/task" % pid) if int(t) != pid]
    except (OSError, ValueError):
        return False
    for tid in tids:
        try:
            with open("/proc/%d/task/%d/stat" % (pid, tid), "rb") as f:
                if _stat_fields(f.read())[0] not in (b"Z", b"X"):
                    return True
        except (OSError, ValueError, IndexError):
            continue  # that thread ended meanwhile
    return False


def proc_info(pid: int, ended_too: bool = False) -> Optional[ProcInfo]:
    """The process ``pid`` if it runs (a zombie does not, unless ``ended_too``)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return _parse_stat(pid, f.read(), ended_too)
    except (OSError, ValueError, IndexError):
        return None


def scan() -> Dict[int, ProcInfo]:
    """Every running process of the host, read once for all the jobs of a pass."""
    found: Dict[int, ProcInfo] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            info = proc_info(int(name))
            if info is not None:
                found[info.pid] = info
    return found


def cgroup_pids(path: str) -> List[int]:
    """The processes in a cgroup and the groups below it (none once it is removed)."""
    pids: List[int] = []
    for folder, _dirs, _files in os.walk(path):
        try:
            with open(os.path.join(folder, "cgroup.procs"), "rb") as f:
                pids += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            continue
    return sorted(p for p in pids if proc_info(p) is not None)


@dataclass(frozen=True)
class Seen:
    """The processes a watchdog pass found on the GPUs, each read once: each running one by its
    pid, and each session or process group id among them with its members."""

    infos: Dict[int, ProcInfo]
    groups: Dict[int, FrozenSet[int]]

    @classmethod
    def read(cls, pids: Iterable[int]) -> "Seen":
        infos = [i for i in map(proc_info, set(pids)) if i is not None]
        groups: Dict[int, Set[int]] = {}
        for info in infos:
            for group in {info.sid, info.pgid}:
                groups.setdefault(group, set()).add(info.pid)
        return cls({i.pid: i for i in infos},
                   {g: frozenset(members) for g, members in groups.items()})


@dataclass(frozen=True)
class JobProcs:
    """How to find one job's processes: its cgroup, else its leader's session; and the cgroup
    of its container, where it runs one (a container's processes are in no session of ours)."""

    leader: Optional[int]
    start_ticks: Optional[int]
    cgroup: Optional[str]
    container: Optional[str] = None

    def pids(self, table: Optional[Dict[int, ProcInfo]] = None) -> List[int]:
        """The job's running processes; ``table`` is a ``scan()`` to share between jobs."""
        found = cgroup_pids(self.cgroup) if self.cgroup else self._session(table)
        if self.container:
            return sorted(set(found) | set(cgroup_pids(self.container)))
        return found

    def members(self, seen: "Seen") -> Set[int]:
        """Which of the processes a pass ``seen`` on the GPUs are the job's: a watchdog pass
        that only matches GPU processes to jobs reads each of those once, and a job's first
        process only where it is not one of them but heads their session or group (to tell a
        reused number), not every process of the host."""
        if not seen.infos:
            return set()
        if self.cgroup:
            found = set(cgroup_pids(self.cgroup)).intersection(seen.infos)
        elif not self.leader or self.leader not in seen.groups:
            found = set()  # none of them is in its session or group
        elif self._replaced(seen.infos.get(self.leader) or proc_info(self.leader)):
            found = set()
        else:
            found = set(seen.groups[self.leader])
        if self.container:
            found |= set(cgroup_pids(self.container)).intersection(seen.infos)
        return found

    def _replaced(self, lead: Optional[ProcInfo]) -> bool:
        """Whether the process under the leader's number (``lead``) is another one: the job's
        session is gone."""
        return lead is not None and self.start_ticks is not None and \
            lead.start_ticks != self.start_ticks

    def _session(self, table: Optional[Dict[int, ProcInfo]]) -> List[int]:
        if not self.leader:
            return []
        table = scan() if table is None else table
        if self._replaced(table.get(self.leader)):
            return []
        return sorted(p.pid for p in table.values() if self.leader in (p.sid, p.pgid))

    def leader_alive(self) -> bool:
        """Whether the job's first process still runs (a job ends when it ends)."""
        lead = proc_info(self.leader) if self.leader else None
        return lead is not None and not self._replaced(lead)

    def signal(self, sig: int) -> int:
        """Send ``sig`` to every process of the job; returns how many there were."""
        pids = self.pids()
        if sig == signal.SIGKILL and pids:
            whole = [c for c in (self.cgroup, self.container) if c]
            if whole and all(_kill_cgroup(c) for c in whole) and self.cgroup:
                return len(pids)  # every process was in a cgroup the kernel killed whole
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass  # it ended meanwhile
        return len(pids)


def _kill_cgroup(path: str) -> bool:
    """SIGKILL to all of a cgroup v2 group at once, forks in flight included; False where the
    kernel cannot (cgroup v1, a kernel before 5.14)."""
    try:
        with open(os.path.join(path, "cgroup.kill"), "w") as f:
            f.write("1")
    except OSError:
        return False
    return True
