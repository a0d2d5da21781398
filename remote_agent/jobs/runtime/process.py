"""A bare job: the shim's child becomes the job's user, enters its cwd, joins its cgroup and
execs the program with the declared environment (remote_agent/jobs/env.py)."""

from __future__ import annotations

import os

from remote_agent.jobs.env import base_env
from remote_agent.jobs.runtime.base import HAMI_REGION, JobRun, Runtime, ShimLaunch


class Process(Runtime):
    kind = "process"

    def launch(self, run: JobRun) -> ShimLaunch:
        env = base_env(os.environ, run.user)
        env.update(run.env)
        return ShimLaunch(argv=run.argv, env=env, cwd=run.cwd or run.user.default_cwd(),
                          user=run.shim_user(), cgroup=run.cgroup,
                          region_env=HAMI_REGION if run.hami else None)
