"""The ``job.*`` methods of the protocol, over the supervisor."""

from __future__ import annotations

import base64
from typing import Any, Callable, Dict, Optional

from remote_agent.jobs.store import ACTIVE, FINISHED
from remote_agent.jobs.supervisor import Supervisor, log_bytes, parse_launch, tail_lines
from remote_agent.rpc import jsonrpc as rpc
from remote_agent.rpc.jsonrpc import Method, Params

LAUNCH_PARAMS = ("key", "argv", "env", "cwd", "name", "gpu", "gpus", "instance", "mig",
                 "memory_mib", "torch_fraction", "run_as", "image")
DEFAULT_STOP_GRACE_S = 10
MAX_LOG_LINES = 100000  # job.logs lines; the answer's size is bounded too (MAX_ANSWER_BYTES)
MAX_LOG_BYTES = 1 << 20  # job.logs bytes: its base64 stays far below MAX_ANSWER_BYTES


def _key(p: Params) -> Optional[str]:
    """The key of the job the client means (feature ``job.<method>.key``), if it says one."""
    return p.text("key", None, max_len=rpc.MAX_ID)


def job_methods(sup: Supervisor, follow: Callable[[int, bool, int], None]) -> Dict[str, Method]:
    """The job methods over a supervisor; ``follow(job id, on, offset)`` starts or ends
    following a job's log on the connection that asked (``job.logs`` with ``follow``)."""
    def launch(p: Params) -> Dict[str, Any]:
        return sup.launch(parse_launch(p)).record()

    def stop(p: Params) -> Dict[str, Any]:
        ref = p.text("job")  # every param checked before the job is looked up
        key = _key(p)
        grace = p.integer("grace", DEFAULT_STOP_GRACE_S, minimum=0)
        reason = p.text("reason", None) or "stopped by request"
        return sup.stop(sup.find(ref, key), reason, grace).record()

    def get(p: Params) -> Dict[str, Any]:
        return sup.find(p.text("job"), _key(p)).record()

    def list_jobs(p: Params) -> Dict[str, Any]:
        wanted = p.text("state", None, choices=ACTIVE + FINISHED)
        jobs = sup.store.all()
        return {"jobs": [j.record() for j in jobs if wanted in (None, j.state)]}

    def logs(p: Params) -> Dict[str, Any]:
        job = sup.find(p.text("job"), _key(p))
        wanted = p.flag("follow", False)
        count = p.integer("lines", 100, minimum=0, maximum=MAX_LOG_LINES)
        last = p.integer("bytes", None, minimum=0, maximum=MAX_LOG_BYTES)
        with sup.logs(job) as (paths, dir_fd):
            data, size = log_bytes(paths, None if count else last, dir_fd)  # lines: all
        lines = tail_lines(data, count)
        follow(job.id, wanted, size)  # without follow, also how a client stops following
        answer = {"job": job.record()["id"], "lines": lines, "offset": size, "follow": wanted}
        if last is not None:  # the end of the output as it is, ending at ``offset``
            answer["data"] = base64.b64encode(data[max(0, len(data) - last):]).decode("ascii")
        return answer

    return {
        "job.launch": Method(launch, LAUNCH_PARAMS),
        "job.stop": Method(stop, ("job", "key", "grace", "reason")),
        "job.get": Method(get, ("job", "key")),
        "job.list": Method(list_jobs, ("state",)),
        "job.logs": Method(logs, ("job", "key", "lines", "follow", "bytes")),
    }
