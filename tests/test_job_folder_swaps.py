"""A job runs as the agent's user, so between two watchdog passes it can put a symlink in
place of its own folder, or of a file in it. Every read and write the daemon makes in a job's
folder goes through that folder opened once, no link followed (``Supervisor.folder``), never
through its name again: nothing the job points its folder's name at is read or written
(docs/decisions.md, "A job that changes its own folder"). The daemon's parts run in this
process, with no watchdog, so each look is made exactly when the test says."""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any, Callable, Dict, List

import pytest

from remote_agent.daemon.trust import UnsafePath
from remote_agent.rpc.jsonrpc import RpcError
from tests.test_job_supervision import wait_until
from tests import test_launch_concurrency
from tests.test_launch_concurrency import launch_request

in_process = test_launch_concurrency.in_process  # the daemon's parts in this process (a fixture)
ELSEWHERE = {"exit.json": {"ended_at": 1.0, "code": 0},
             "started.json": {"pid": 1, "started_at": 1.0},
             "outlived.json": {"seen_at": 1.0}}


def _elsewhere(tmp_path) -> str:
    """A folder of the agent's own (this test runs as the agent's user) holding what a job's
    folder holds, each of it saying it is not the job's."""
    folder = tmp_path / "elsewhere"
    folder.mkdir(mode=0o700)
    for name, data in ELSEWHERE.items():
        (folder / name).write_text(json.dumps(data))
    (folder / "output.log").write_text("ELSEWHERE\n")
    (folder / "shim.lock").write_text("")
    return str(folder)


def _looks(sup, job) -> Dict[str, Callable[[], Any]]:
    """Each of the daemon's by-name looks into a job's folder, as the watchdog, a launch and
    ``job.logs`` make them."""
    from remote_agent.jobs.supervisor import OUTLIVED, log_bytes, shim_alive

    def logs() -> Any:
        with sup.logs(job) as (paths, dir_fd):
            return log_bytes(paths, None, dir_fd)[0]
    return {"exit.json": lambda: sup.read_job_file(job, "exit.json"),
            "started.json": lambda: sup.read_job_file(job, "started.json"),
            "damaged": lambda: sup.damaged(job, "exit.json"),
            "outlived written": lambda: sup.write_job_file(job, OUTLIVED, {"seen_at": 2.0}),
            "shim lock": lambda: shim_alive(sup.job_dir(job)),
            "fence": lambda: sup._fence(job),
            "logs": logs,
            "last line": lambda: sup.last_line(job)}


def _untouched(elsewhere: str) -> None:
    assert sorted(os.listdir(elsewhere)) == sorted(list(ELSEWHERE) + ["output.log",
                                                                      "shim.lock"])
    for name, data in ELSEWHERE.items():
        with open(os.path.join(elsewhere, name)) as f:
            assert json.load(f) == data, name


def _read_elsewhere(got: Any) -> bool:
    """Whether a look's answer is what the folder elsewhere holds."""
    return got in (ELSEWHERE["exit.json"], ELSEWHERE["started.json"]) or (
        isinstance(got, bytes) and b"ELSEWHERE" in got) or got == "ELSEWHERE"


def _launch(sup, argv: List[str]):
    return sup.launch(launch_request(key="k-swap", gpu=1, memory_mib=10, argv=argv))


def test_a_symlink_a_job_put_in_place_of_its_folder_is_never_followed(in_process, tmp_path):
    """The job's folder is swapped for a symlink to a folder of the agent's own holding a job's
    files, between two passes: each of the daemon's looks into it refuses it (or, for the last
    line of its output, says it is not read), and nothing there is read or written. Before,
    each read by name through the link, took that folder's exit.json for the job's end and
    wrote outlived.json and shim.claim there."""
    sup, _ = in_process("1xA100-80GB:mig,1xL4")
    elsewhere = _elsewhere(tmp_path)
    job = _launch(sup, ["sleep", "600"])
    folder = sup.job_dir(job)
    try:
        wait_until(lambda: sup.read_job_file(job, "started.json") is not None, "its start")
        os.rename(folder, folder + ".away")
        os.symlink(elsewhere, folder)
        for what, look in _looks(sup, job).items():
            try:
                got = look()
            except UnsafePath as err:
                assert "it is a symlink, not a directory" in str(err), (what, err)
            else:
                assert what == "last line" and got is None, (what, got)
        _untouched(elsewhere)
    finally:
        os.kill(job.pid, signal.SIGKILL)
        if os.path.islink(folder):
            os.unlink(folder)
            os.rename(folder + ".away", folder)


@pytest.mark.parametrize("name", ["exit.json", "output.log", "shim.lock"])
def test_a_symlink_a_job_put_in_place_of_a_file_in_its_folder_is_never_followed(
        in_process, tmp_path, name):
    """The same for one file in the folder swapped for a symlink to that file elsewhere."""
    sup, _ = in_process("1xA100-80GB:mig,1xL4")
    elsewhere = _elsewhere(tmp_path)
    job = _launch(sup, ["sleep", "600"])
    path = os.path.join(sup.job_dir(job), name)
    try:
        wait_until(lambda: sup.read_job_file(job, "started.json") is not None, "its start")
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(os.path.join(elsewhere, name), path)
        for what, look in _looks(sup, job).items():
            try:
                got = look()
            except (UnsafePath, RpcError) as err:
                assert "it is a symlink" in str(err), (what, err)
            else:
                assert not _read_elsewhere(got), (what, got)
        _untouched(elsewhere)
    finally:
        os.kill(job.pid, signal.SIGKILL)


def test_a_folder_swapped_for_a_symlink_just_after_it_is_opened_is_still_the_one_used(
        in_process, tmp_path, monkeypatch):
    """The race the loop below runs by chance, made at its point each time: the job's folder
    is swapped for a symlink to a folder of the agent's own just after the daemon opened it,
    before the look reads or writes in it. Each look goes on in the folder it opened (the
    job's own start is read, no other), and nothing is read or written in the folder the link
    names. A look that named a file by its path again, once its folder was open, went through
    the link."""
    from remote_agent.jobs.shim import JobFolder

    sup, _ = in_process("1xA100-80GB:mig,1xL4")
    elsewhere = _elsewhere(tmp_path)
    job = _launch(sup, ["sh", "-c", "echo mine; exec sleep 600"])
    folder = sup.job_dir(job)
    opened = JobFolder.open

    def open_then_swap(path: str) -> JobFolder:
        held = opened(path)
        if path == folder:
            os.rename(folder, folder + ".away")
            os.symlink(elsewhere, folder)
        return held

    def swap_back() -> None:
        if os.path.islink(folder):
            os.unlink(folder)
            os.rename(folder + ".away", folder)

    try:
        wait_until(lambda: os.path.exists(os.path.join(folder, "output.log")), "its output")
        monkeypatch.setattr(JobFolder, "open", staticmethod(open_then_swap))
        own = {"started.json": lambda got: got["pid"] == job.pid,
               "damaged": lambda got: got is None,  # (its exit.json is not written yet)
               "shim lock": lambda got: got is True,  # (its shim holds its own)
               "logs": lambda got: got == b"mine\n", "last line": lambda got: got == "mine"}
        for what, look in _looks(sup, job).items():
            try:
                got = look()
            finally:
                swap_back()
            assert not _read_elsewhere(got), (what, got)
            assert own.get(what, lambda _: True)(got), (what, got)
        _untouched(elsewhere)
    finally:
        monkeypatch.undo()
        swap_back()
        os.kill(job.pid, signal.SIGKILL)


SWAPPER = """import os, sys
d, elsewhere = sys.argv[1], sys.argv[2]
while True:
    os.rename(d, d + '.away')
    os.symlink(elsewhere, d)
    os.unlink(d)
    os.rename(d + '.away', d)
"""


def test_a_job_swapping_its_folder_for_a_symlink_in_a_loop_never_leads_a_look_out(
        in_process, tmp_path):
    """For real: the job itself swaps its folder for a symlink to a folder of the agent's own
    and back, over and over, while the daemon's looks run: each reads the job's own folder or
    refuses it, never that folder; nothing is written there."""
    sup, _ = in_process("1xA100-80GB:mig,1xL4")
    elsewhere = _elsewhere(tmp_path)
    folder = os.path.join(sup.paths.jobs_dir, "j1")
    job = _launch(sup, [sys.executable, "-c", SWAPPER, folder, elsewhere])
    refused = 0
    try:
        wait_until(lambda: os.path.islink(folder), "the job's swaps")
        looks = _looks(sup, job)
        for _ in range(300):
            for what, look in looks.items():
                try:
                    got = look()
                except (UnsafePath, RpcError, FileNotFoundError):
                    refused += 1
                    continue
                assert not _read_elsewhere(got), (what, got)
        _untouched(elsewhere)
        assert refused, "no look met the symlink: the race was never run"
    finally:
        os.kill(job.pid, signal.SIGKILL)
        wait_until(lambda: not os.path.islink(folder) or os.path.isdir(folder + ".away"),
                   "the job's end")
        if os.path.islink(folder):
            os.unlink(folder)
            os.rename(folder + ".away", folder)


def test_the_log_a_daemon_keeps_for_a_dead_shim_stays_in_the_folder_it_took_over(tmp_path):
    """The daemon copies a job's output into its log once its shim died (``Outputs.take_over``):
    the job then swaps its folder for a symlink to a folder of the agent's own and writes on,
    past the log's rotation. The log is kept, and rotated, in the folder taken over, never in
    the one the link names. Before, each rotation and reopen went by the log's path, through
    the link: the output was written in that folder."""
    from remote_agent.jobs.output import Outputs

    jobs = tmp_path / "jobs"
    folder = jobs / "j1"
    folder.mkdir(parents=True, mode=0o700)
    jobs.chmod(0o700)
    os.mkfifo(str(folder / "output.pipe"), 0o600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    outputs = Outputs(str(jobs), 8192)  # (rotated past 4 KiB)
    outputs.hold(1)
    writer = os.open(str(folder / "output.pipe"), os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(writer, b"before\n")
        assert outputs.take_over(1)
        os.rename(str(folder), str(folder) + ".away")
        os.symlink(str(elsewhere), str(folder))
        os.write(writer, b"x" * 5000 + b"\n")
        outputs.take_over(1)
    finally:
        os.close(writer)
        outputs.release(1)
    assert os.listdir(str(elsewhere)) == []
    away = tmp_path / "jobs" / "j1.away"
    assert (away / "output.log.1").read_bytes().endswith(b"before\n")
    assert (away / "output.log").read_bytes() == b"x" * 5000 + b"\n"
