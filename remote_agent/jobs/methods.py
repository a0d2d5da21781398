"""The ``job.*`` methods of the protocol, over the supervisor."""

from __future__ import annotations

from typing import Any, Dict

from remote_agent.jobs.supervisor import Supervisor, parse_launch, tail_lines
from remote_agent.rpc.jsonrpc import Method, Params

LAUNCH_PARAMS = ("key", "argv", "env", "cwd", "name", "gpu", "gpus", "instance", "mig",
                 "memory_mib", "torch_fraction", "run_as")
DEFAULT_STOP_GRACE_S = 10


def job_methods(sup: Supervisor) -> Dict[str, Method]:
    def launch(p: Params) -> Dict[str, Any]:
        return sup.launch(parse_launch(p)).record()

    def stop(p: Params) -> Dict[str, Any]:
        job = sup.find(p.text("job"))
        grace = p.integer("grace", DEFAULT_STOP_GRACE_S, minimum=0)
        return sup.stop(job, p.text("reason", None) or "stopped by request", grace).record()

    def get(p: Params) -> Dict[str, Any]:
        return sup.find(p.text("job")).record()

    def list_jobs(p: Params) -> Dict[str, Any]:
        wanted = p.text("state", None)
        jobs = sup.store.all()
        return {"jobs": [j.record() for j in jobs if wanted in (None, j.state)]}

    def logs(p: Params) -> Dict[str, Any]:
        job = sup.find(p.text("job"))
        lines, size = tail_lines(sup.log_paths(job), p.integer("lines", 100, minimum=0))
        return {"job": job.record()["id"], "lines": lines, "offset": size}

    return {
        "job.launch": Method(launch, LAUNCH_PARAMS),
        "job.stop": Method(stop, ("job", "grace", "reason")),
        "job.get": Method(get, ("job",)),
        "job.list": Method(list_jobs, ("state",)),
        "job.logs": Method(logs, ("job", "lines", "follow")),
    }
