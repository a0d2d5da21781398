"""The per-job shim: owns one job's process, outlives the agent daemon, records the exit status.

``python -m remote_agent.jobs.shim JOB_DIR [REPORT_FD]``. The daemon writes ``JOB_DIR/spec.json``
and starts the shim in its own session; the shim starts the job in a session (and process group)
of its own, copies its output into a size-capped log, and writes ``exit.json`` when it ends. Kept
to the standard library and light imports: its start-up time is part of every launch.

Files in JOB_DIR: ``shim.claim`` (the one shim that may run this job: created exclusively),
``shim.lock`` (held for the shim's life: a daemon tells a live shim by failing to lock it),
``started.json`` (the job's pid), ``output.log`` and ``output.log.1``, ``exit.json``.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Dict, Optional


def write_json(path: str, data: Dict[str, Any]) -> None:
    """Atomically, so a reader sees the whole file or none of it."""
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class CappedLog:
    """Appends to ``output.log``; past half the cap it becomes ``output.log.1`` and a new one
    starts, so the two together never exceed the cap."""

    def __init__(self, path: str, max_bytes: int):
        self.path = path
        self.half = max(4096, max_bytes // 2)
        self.f = open(path, "ab")

    def write(self, data: bytes) -> None:
        if self.f.tell() + len(data) > self.half:
            self.f.close()
            os.replace(self.path, self.path + ".1")
            self.f = open(self.path, "ab")
        self.f.write(data)
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def run(job_dir: str, report_fd: Optional[int]) -> int:
    try:
        fd = os.open(os.path.join(job_dir, "shim.claim"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return 0  # another shim owns this job: never start it twice
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    lock = open(os.path.join(job_dir, "shim.lock"), "a")
    fcntl.flock(lock, fcntl.LOCK_EX)

    with open(os.path.join(job_dir, "spec.json"), encoding="utf-8") as f:
        spec = json.load(f)
    log = CappedLog(os.path.join(job_dir, "output.log"), int(spec["log_max_bytes"]))
    cgroup_procs = spec.get("cgroup_procs")

    def join_cgroup() -> None:
        # in the child, before exec: the job is inside its cgroup from its first instruction
        with open(cgroup_procs, "w") as procs:
            procs.write("0")

    try:
        child = subprocess.Popen(spec["argv"], env=spec["env"], cwd=spec.get("cwd") or None,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 close_fds=True, preexec_fn=join_cgroup if cgroup_procs else None)
    except (OSError, subprocess.SubprocessError) as err:
        message = "cannot start %r: %s" % (spec["argv"][0], err)
        log.write((message + "\n").encode())
        write_json(os.path.join(job_dir, "exit.json"),
                   {"error": message, "ended_at": time.time()})
        _report(report_fd, {"error": message})
        return 0

    def forward(signum: int, _frame: Any) -> None:
        # SIGTERM asks the job to stop; SIGUSR1 means stop now (SIGKILL).
        try:
            os.killpg(child.pid, signal.SIGKILL if signum == signal.SIGUSR1 else signal.SIGTERM)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGUSR1, forward)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    started_at = time.time()
    write_json(os.path.join(job_dir, "started.json"), {"pid": child.pid, "started_at": started_at})
    _report(report_fd, {"pid": child.pid, "started_at": started_at})

    out = child.stdout.fileno()
    while True:
        try:
            chunk = os.read(out, 65536)
        except InterruptedError:
            continue
        if not chunk:
            break
        log.write(chunk)
    code = child.wait()
    log.close()
    result: Dict[str, Any] = {"ended_at": time.time()}
    if code < 0:
        result["signal"] = -code
    else:
        result["code"] = code
    write_json(os.path.join(job_dir, "exit.json"), result)
    return 0


def _report(report_fd: Optional[int], data: Dict[str, Any]) -> None:
    """Tell the launching daemon at once, so a launch needs no polling."""
    if report_fd is None:
        return
    try:
        os.write(report_fd, (json.dumps(data) + "\n").encode())
        os.close(report_fd)
    except OSError as err:  # the daemon is gone; started.json / exit.json tell the next one
        print("shim: could not report to the daemon: %s" % err, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None))
