"""A cgroup of its own for every job, where the host has a cgroup v2 hierarchy the agent may use.

A job's processes cannot leave their cgroup without privileges, so the agent finds and kills all
of them through it (``cgroup.procs``, ``cgroup.kill``) even after the job's shim died; the driver's
per-cgroup GPU memory limit of a share job is set on the same group. Where there is none (no
cgroup v2, no root), jobs are found by their session instead (remote_agent/jobs/procs.py).
"""

from __future__ import annotations

import logging
import os
from typing import Iterable, List, Optional, Tuple

from remote_agent.jobs.caps import refusal
from remote_agent.text import said

log = logging.getLogger("remote_agent.jobs")


class JobCgroups:
    """Job cgroups ``<prefix>-j<id>`` under ``parent``; ``problem`` says why there are none."""

    def __init__(self, parent: Optional[str], prefix: str):
        self.prefix = prefix
        self.parent: Optional[str] = None
        self.problem: Optional[str] = None
        if not parent:
            self.problem = "no cgroup parent is set (cgroup_parent = \"none\", or no cgroup v2 " \
                           "hierarchy on this host)"
            return
        # made with the first job's cgroup, so a daemon that runs no job leaves nothing behind
        where = parent if os.path.isdir(parent) else os.path.dirname(parent)
        if not os.path.exists(os.path.join(where, "cgroup.procs")):
            self.problem = "%s is not in a cgroup v2 hierarchy" % parent
            return
        if not os.access(where, os.W_OK):
            self.problem = "cannot create cgroups in %s (it needs root)" % where
            return
        # whoever may write it could make a job's cgroup first, and stop, freeze or limit it
        self.problem = refusal(parent, "cgroup parent")
        if self.problem is None:
            self.parent = parent

    @property
    def kind(self) -> str:
        """How this host finds a job's processes: "cgroup" or "session"."""
        return "cgroup" if self.parent else "session"

    def path(self, job_id: int) -> str:
        return os.path.join(self.parent or "", "%s-j%d" % (self.prefix, job_id))

    def create(self, job_id: int) -> Tuple[Optional[str], Optional[str]]:
        """(the job's new cgroup, None), or (None, why) where it cannot have one (said in the
        log too; the job is found by its session); (None, None) on a host with none."""
        if self.parent is None:
            return None, None
        path = self.path(job_id)
        try:
            os.makedirs(path, 0o700, exist_ok=True)
        except OSError as err:
            why = "cannot make %s: %s" % (said(path), err.strerror or err)
        else:
            if os.path.exists(os.path.join(path, "cgroup.procs")):
                return path, None
            why = "%s is not a cgroup" % said(path)
        log.warning("job j%d: no cgroup of its own (%s); found by its session instead",
                    job_id, why)
        return None, why

    def remove(self, path: str) -> bool:
        """Remove an ended job's cgroup; False while processes are still leaving it."""
        try:
            os.rmdir(path)
        except FileNotFoundError:
            return True
        except OSError as err:
            log.debug("cgroup %s stays for now: %s", path, err)
            return False
        return True

    def leftovers(self, active: Iterable[int]) -> List[str]:
        """Cgroups of this agent's jobs that are no longer active (left by an earlier daemon)."""
        if self.parent is None or not os.path.isdir(self.parent):
            return []
        keep = {self.path(i) for i in active}
        mine = self.prefix + "-j"
        return sorted(os.path.join(self.parent, name) for name in os.listdir(self.parent)
                      if name.startswith(mine) and os.path.join(self.parent, name) not in keep)
