"""Container jobs through apptainer: ``apptainer exec --cleanenv [--nv] IMAGE ARGV``.

apptainer has no daemon and no container of its own to name: its processes are the shim's
child's, in the job's session and cgroup, so they are found, signalled and ended as a bare job's
are. It runs as the job's user (the shim's child becomes it first). The job's environment goes
in as ``APPTAINERENV_<NAME>`` (kept through ``--cleanenv``, any value, commas included). GPUs on
real NVML: ``--nv`` with CUDA_VISIBLE_DEVICES (in the job's cap environment) naming its GPUs or
MIG instance; on the simulator the state directory is bound at the same path.

Privileges: apptainer needs no option for them. By default it starts the container's processes
with no_new_privs set (PR_SET_NO_NEW_PRIVS) and mounts the image nosuid (its security model;
``--allow-setuid``, root only, would change that and is never passed), so a setuid binary in an
image gains nothing; and its processes have the capabilities of the user it runs as (apptainer
adds none: a job run as a user has none).
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

from remote_agent.jobs.env import base_env
from remote_agent.jobs.runtime.base import HAMI_REGION, ContainerRuntime, JobRun, ShimLaunch, \
    last_line, run_tool


class Apptainer(ContainerRuntime):
    kind = "apptainer"

    def version(self) -> Tuple[Optional[str], Optional[str]]:
        code, out, err = run_tool(["apptainer", "--version"])
        if code != 0 or not out:
            return None, last_line(err or out)
        return out.split()[-1], None

    def launch(self, run: JobRun) -> ShimLaunch:
        argv = ["apptainer", "exec", "--cleanenv"]
        if run.cwd:
            argv += ["--pwd", run.cwd]
        if run.devices:
            argv.append("--nv")
        for mount in run.mounts:
            argv += ["--bind", "%s:%s" % (mount, mount)]
        for mount in run.read_only:
            argv += ["--bind", "%s:%s:ro" % (mount, mount)]
        env = base_env(os.environ, run.user)
        env.update({"APPTAINERENV_%s" % k: v for k, v in run.env.items()})
        return ShimLaunch(argv=argv + [run.image or "", *run.argv], env=env,
                          cwd=run.user.default_cwd(), user=run.shim_user(), cgroup=run.cgroup,
                          region_env="APPTAINERENV_" + HAMI_REGION if run.hami else None)
