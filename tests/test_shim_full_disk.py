"""A job's shim on a full disk (a real 2 MiB tmpfs), and where a record cannot be written for
another reason (its folder gone, its temporary name refused): it never leaves a job running that
no daemon can find, nor a claim that makes a job that never ran read as lost."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from remote_agent import text
from remote_agent.daemon.trust import private_dir, write_private
from remote_agent.jobs.region import new_region
from remote_agent.jobs.shim import JobFolder, write_json_until_done
from tests.cli_run import reaped
from tests.conftest import REPO
from tests.test_job_supervision import fill, wait_until
from tests.test_jobs import wait_job
from tests.test_store_damage import _fill, small_fs  # noqa: F401 - the fixture

PAGE = 4096


def _job_dir(folder: Path, argv: list, **more: str) -> str:
    job_dir = str(folder / "j1")
    private_dir(job_dir, "job directory")
    write_private(os.path.join(job_dir, "spec.json"), json.dumps(dict({
        "argv": argv, "env": dict(os.environ), "cwd": "/", "cgroup": None,
        "log_max_bytes": 1 << 20, "user": None}, **more)).encode(), True)
    return job_dir


def _shim(job_dir: str, said: Path) -> subprocess.Popen:
    """The shim, as the daemon starts it (without the daemon's pipe), its stderr to ``said``."""
    with open(said, "w") as err:
        return subprocess.Popen([sys.executable, "-m", "remote_agent.jobs.shim", job_dir],
                                cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                                stdout=subprocess.DEVNULL, stderr=err)


def _exits_0(shim: subprocess.Popen) -> None:
    """The shim ends with exit 0 within 30 s; killed where it does not (a failure), so that
    no test leaves one running."""
    with reaped(shim):
        assert shim.wait(30) == 0


def _end_written(folder: JobFolder, job_dir: str) -> None:
    """The shim's writer of a job's end (``exit.json``, code 3) run until it is done, at most
    30 s, and what it wrote read back."""
    writer = threading.Thread(target=write_json_until_done,
                              args=(folder, "exit.json", {"code": 3}), daemon=True)
    writer.start()
    writer.join(30)
    assert not writer.is_alive()
    assert json.loads((Path(job_dir) / "exit.json").read_text()) == {"code": 3}


def _room_for_the_claim(small_fs) -> str:
    """Fills ``small_fs`` but for a page, the room of the shim's claim (its pid) alone: the
    filler's path, to be removed when there is to be room again."""
    filler = _fill(small_fs)
    os.truncate(filler, os.path.getsize(filler) - PAGE)
    return filler


def test_a_job_whose_start_cannot_be_written_is_recorded_once_there_is_room(small_fs, tmp_path):
    release = tmp_path / "release"
    job_dir = _job_dir(small_fs, [sys.executable, "-c", "import os, time\nwhile not "
                                  "os.path.exists(%r):\n    time.sleep(0.05)" % str(release)])
    filler = _room_for_the_claim(small_fs)
    said = tmp_path / "shim.err"
    shim = _shim(job_dir, said)
    started = Path(job_dir) / "started.json"
    try:
        wait_until(lambda: "cannot write %s yet" % started in said.read_text(),
                   "the shim to find no room for started.json", 30)
        assert not started.exists()
        os.unlink(filler)
        record = json.loads(wait_until(lambda: started.exists() and started.read_text(),
                                       "started.json once there is room", 30))
        os.kill(record["pid"], 0)  # the job, running: a daemon finds and watches it by this
    finally:
        release.touch()
        shim.wait(30)
    assert json.loads((Path(job_dir) / "exit.json").read_text())["code"] == 0


def test_a_shim_whose_own_log_is_full_still_records_the_start_once_there_is_room(small_fs,
                                                                                  tmp_path):
    """As a daemon starts it: its stderr is shim.log, beside the job on the same full disk, so
    not even its line about the retry can be written; the retry goes on regardless."""
    ran, release = tmp_path / "ran", tmp_path / "release"
    job_dir = _job_dir(small_fs, [sys.executable, "-c", "import os, time\nopen(%r, 'w')\nwhile "
                                  "not os.path.exists(%r):\n    time.sleep(0.05)" % (
                                      str(ran), str(release))])
    filler = _room_for_the_claim(small_fs)
    shim = _shim(job_dir, Path(job_dir) / "shim.log")
    started = Path(job_dir) / "started.json"
    try:
        wait_until(ran.exists, "the job to run", 30)
        time.sleep(0.5)  # margin for the shim's first try at started.json, which fails
        assert not started.exists()
        os.unlink(filler)
        record = json.loads(wait_until(lambda: started.exists() and started.read_text(),
                                       "started.json once there is room", 30))
        os.kill(record["pid"], 0)
    finally:
        release.touch()
        shim.wait(30)
    assert json.loads((Path(job_dir) / "exit.json").read_text())["code"] == 0


def test_a_claim_that_cannot_be_written_is_given_up_and_nothing_runs(small_fs, tmp_path):
    ran = tmp_path / "ran"
    job_dir = _job_dir(small_fs, ["touch", str(ran)])
    _fill(small_fs)
    said = tmp_path / "shim.err"
    assert _shim(job_dir, said).wait(30) == 1  # before it forked: nothing ran
    assert "cannot claim the job" in said.read_text()
    assert not os.path.exists(os.path.join(job_dir, "shim.claim"))  # the job may be started
    assert not ran.exists()


def test_a_hami_core_region_that_cannot_be_recorded_is_never_made_and_nothing_runs(small_fs,
                                                                                    tmp_path):
    """The shim records the job's region before the job can make it, so that a daemon removes
    it where the shim is killed; where the record cannot be written, the job does not start."""
    ran = tmp_path / "ran"
    job_dir = _job_dir(small_fs, ["touch", str(ran)],
                       hami_region="CUDA_DEVICE_MEMORY_SHARED_CACHE", region=new_region())
    filler = _room_for_the_claim(small_fs)
    said = tmp_path / "shim.err"
    shim = _shim(job_dir, said)
    ended = Path(job_dir) / "exit.json"
    try:
        wait_until(lambda: "cannot write %s yet" % ended in said.read_text(),
                   "the shim to find no room for exit.json", 30)
    finally:
        os.unlink(filler)
        assert shim.wait(30) == 0
    error = json.loads(ended.read_text())["error"]
    assert error.startswith("cannot record its HAMi-core region /tmp/fractui-hami-"), error
    assert error.endswith(": [Errno 28] No space left on device"), error
    assert not os.path.lexists(error.split()[5].rstrip(":"))
    assert not ran.exists()
    assert not os.path.exists(os.path.join(job_dir, "hami-region.json"))


def test_an_end_that_cannot_be_written_is_said_once_however_often_it_is_tried(small_fs, tmp_path):
    """The job ends on a full disk: ``exit.json`` is tried again and again until it fits, and
    its stderr (shim.log, here on another disk, so each line shows) says so once, then once
    more when it is written, with how many tries failed. Before, a line at each try: a line a
    second into shim.log for as long as the disk was full. Its tries are counted by the job
    dir's changes (each makes and removes a temporary file there): the test sets no clock."""
    release = tmp_path / "release"
    job_dir = _job_dir(small_fs, [sys.executable, "-c", "import os, time\nwhile not "
                                  "os.path.exists(%r):\n    time.sleep(0.05)" % str(release)])
    said = tmp_path / "shim.err"
    shim = _shim(job_dir, said)
    ended = Path(job_dir) / "exit.json"
    try:
        wait_until((Path(job_dir) / "started.json").exists, "the job to start", 30)
        fill(small_fs / "filler")
        release.touch()
        wait_until(lambda: "cannot write %s yet" % ended in said.read_text(),
                   "the shim to find no room for exit.json", 30)
        seen = {os.stat(job_dir).st_mtime_ns}
        wait_until(lambda: seen.add(os.stat(job_dir).st_mtime_ns) or len(seen) > 3,
                   "three more tries at exit.json", 30)
        assert not ended.exists()
    finally:
        os.unlink(small_fs / "filler")
        shim.wait(30)
    assert json.loads(ended.read_text())["code"] == 0
    lines = said.read_text().splitlines()
    assert lines[:1] == ["shim: cannot write %s yet ([Errno 28] No space left on device); trying "
                         "again each 1 s" % ended], lines
    assert len(lines) == 2 and lines[1].startswith("shim: wrote %s after " % ended), lines
    assert int(lines[1].split(" after ")[1].split()[0]) >= 3


def test_a_shim_whose_job_folder_is_gone_gives_its_end_up_and_exits(tmp_path):
    """The job's folder removed by hand while it runs: at its end the shim cannot write
    ``exit.json``, and no room will ever come for it (no daemon would read it there). It says
    so and exits. Before, it tried again each second for as long as it lived, a shim no one
    could find (seen left after a test's teardown, still trying 45 minutes later)."""
    release = tmp_path / "release"
    job_dir = _job_dir(tmp_path, [sys.executable, "-c", "import os, time\nwhile not "
                                  "os.path.exists(%r):\n    time.sleep(0.05)" % str(release)])
    said = tmp_path / "shim.err"
    shim = _shim(job_dir, said)
    with reaped(shim):
        wait_until(lambda: os.path.exists(os.path.join(job_dir, "started.json")),
                   "the job to start", 30)
        shutil.rmtree(job_dir)
        release.touch()
        assert shim.wait(30) == 0
    assert "cannot write %s: its folder is gone" % os.path.join(job_dir, "exit.json") \
        in said.read_text()


def test_a_folder_another_nfs_client_removed_is_given_up_as_gone(tmp_path, monkeypatch, capfd):
    """On NFS a folder another client removed answers every look with ESTALE, fstat of the
    shim's own descriptor included: that is the folder gone, said and given up. Before, the
    ESTALE of the look ended the shim with a traceback, its end unrecorded. (No NFS here: the
    look's ESTALE is raised for the folder's descriptor alone.)"""
    job_dir = _job_dir(tmp_path, ["true"])
    folder = JobFolder.open(job_dir)
    shutil.rmtree(job_dir)
    looked = os.fstat

    def stale(fd: int) -> os.stat_result:
        if fd == folder.fd:
            raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
        return looked(fd)

    monkeypatch.setattr(os, "fstat", stale)
    write_json_until_done(folder, "exit.json", {"code": 0})
    assert "cannot write %s: its folder is gone" % os.path.join(job_dir, "exit.json") \
        in capfd.readouterr().err


def test_an_end_whose_temporary_name_is_a_symlink_removes_it_and_is_written(tmp_path, capfd):
    """A symlink where the record's temporary file goes (the shim's own name: its pid in it)
    is refused (``UnsafePath``, never written through), removed itself (not what it names),
    said once, and the record written at the next try. Before, the refusal ended the shim with
    a traceback; then it was tried again only until someone else removed it."""
    job_dir = _job_dir(tmp_path, ["true"])
    folder = JobFolder.open(job_dir)
    planted = os.path.join(job_dir, "exit.json.tmp.%d" % os.getpid())
    os.symlink(str(tmp_path / "elsewhere"), planted)
    _end_written(folder, job_dir)
    assert not os.path.lexists(planted)
    assert not (tmp_path / "elsewhere").exists()
    ended = os.path.join(job_dir, "exit.json")
    assert capfd.readouterr().err.splitlines() == [
        "shim: cannot write %s yet (refusing temporary file %s: it is a symlink; removed it); "
        "trying again each 1 s" % (ended, planted), "shim: wrote %s after 1 failed pass" % ended]


@pytest.mark.parametrize("kind", ["empty", "full"])
def test_an_end_whose_temporary_name_is_a_directory_sets_it_aside_and_is_written(tmp_path,
                                                                                 capfd, kind):
    """A directory where the record's temporary file goes (empty, or holding a file and a
    symlink to a file elsewhere) is set aside in the job's folder under a fresh name, nothing
    in it touched nor anything it links to, said once, and the record written at the next
    try. Before, its unlink failed (EISDIR) and the shim tried again each second for good:
    the job's end never recorded."""
    job_dir = _job_dir(tmp_path, ["true"])
    folder = JobFolder.open(job_dir)
    planted = os.path.join(job_dir, "exit.json.tmp.%d" % os.getpid())
    os.mkdir(planted)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("kept")
    if kind == "full":
        Path(planted, "inside").write_text("kept too")
        os.symlink(str(elsewhere), os.path.join(planted, "link"))
    _end_written(folder, job_dir)
    aside = [name for name in os.listdir(job_dir) if ".set-aside." in name]
    assert [name.split(".set-aside.")[0] for name in aside] == [os.path.basename(planted)]
    moved = os.path.join(job_dir, aside[0])
    assert sorted(os.listdir(moved)) == ([] if kind == "empty" else ["inside", "link"])
    assert elsewhere.read_text() == "kept"
    ended = os.path.join(job_dir, "exit.json")
    assert capfd.readouterr().err.splitlines() == [
        "shim: cannot write %s yet (refusing temporary file %s: not a regular file: a "
        "directory; set it aside as %s); trying again each 1 s" % (ended, planted, moved),
        "shim: wrote %s after 1 failed pass" % ended]


def test_a_job_that_makes_a_directory_at_its_shims_temporary_name_has_its_end_recorded(
        tmp_path):
    """As a symlink there (below): a job of the agent's user makes a directory, with a file in
    it, at the name its shim writes ``exit.json`` through, and ends: its end is recorded, the
    directory set aside whole."""
    job_dir = _job_dir(tmp_path, [sys.executable, "-c", "import os, sys\nd = os.path.join("
                                  "sys.argv[1], 'exit.json.tmp.%d' % os.getppid())\nos.mkdir(d)"
                                  "\nopen(os.path.join(d, 'f'), 'w').close()\nsys.exit(4)",
                                  str(tmp_path / "j1")])
    said = tmp_path / "shim.err"
    _exits_0(_shim(job_dir, said))
    assert json.loads((Path(job_dir) / "exit.json").read_text())["code"] == 4
    aside = [name for name in os.listdir(job_dir) if ".set-aside." in name]
    assert len(aside) == 1 and os.listdir(os.path.join(job_dir, aside[0])) == ["f"]
    assert "not a regular file: a directory; set it aside as" in said.read_text()


def test_a_directory_a_shim_set_aside_keeps_no_daemon_from_starting(start_agent, tmp_path):
    """The directory a shim set aside stays in its job's folder until the job is pruned: a
    daemon started meanwhile (killed and started again, a handover) checks it as a directory of
    the agent's own and serves, the job's end as recorded. Before, it refused the state dir
    ("refusing job file ...: not a regular file: a directory"), exit 2, until someone removed
    the directory by hand."""
    state = str(tmp_path / "state")
    job_dir = os.path.join(state, "jobs", "j1")
    agent = start_agent("1xL4", state)
    job = agent.call("job.launch", key="k-aside", gpu=0, memory_mib=10, argv=[
        sys.executable, "-c", "import os, sys\nos.mkdir(os.path.join(sys.argv[1], "
        "'exit.json.tmp.%d' % os.getppid()), 0o777)\nsys.exit(4)", job_dir])
    assert wait_job(agent, job["id"])["exit_code"] == 4
    aside = [name for name in os.listdir(job_dir) if ".set-aside." in name]
    assert len(aside) == 1
    os.kill(agent.call("daemon.version")["pid"], signal.SIGKILL)
    agent.proc.wait(timeout=10)
    again = start_agent("1xL4", state)
    assert again.call("job.get", job=job["id"])["exit_code"] == 4
    assert stat.S_IMODE(os.lstat(os.path.join(job_dir, aside[0])).st_mode) == 0o700


def test_a_job_that_plants_a_symlink_at_its_shims_temporary_name_has_its_end_recorded(tmp_path):
    """A job of the agent's user puts a symlink at the name its shim writes ``exit.json``
    through (named for the shim's pid, its parent's) and ends: its end is recorded all the
    same, nothing written through the link. Before, the shim tried again each second until
    someone removed the link: the job's end unrecorded for good."""
    elsewhere = tmp_path / "elsewhere"
    job_dir = _job_dir(tmp_path, [sys.executable, "-c", "import os, sys\nos.symlink(sys.argv[1], "
                                  "os.path.join(sys.argv[2], 'exit.json.tmp.%d' % os.getppid()))\n"
                                  "sys.exit(4)", str(elsewhere), str(tmp_path / "j1")])
    said = tmp_path / "shim.err"
    _exits_0(_shim(job_dir, said))
    assert json.loads((Path(job_dir) / "exit.json").read_text())["code"] == 4
    assert not elsewhere.exists()
    assert "it is a symlink; removed it" in said.read_text()


PID_NAMESPACE = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="the shim is started as pid 1 of a pid namespace: needs root")


@PID_NAMESPACE
def test_a_job_whose_own_start_record_is_refused_runs_and_its_shim_records_it(tmp_path):
    """The job writes ``started.json`` itself before its exec; a symlink at its temporary name
    is refused there (``UnsafePath``), and the job runs on, its shim writing the record (under
    its own temporary name), as where the disk is full. Before, the refusal was taken for a
    failed first step: the job never ran, its end read "cannot start a session". Its shim is
    pid 1 of a namespace of its own, so the job, its first child, is pid 2."""
    ran = tmp_path / "ran"
    job_dir = _job_dir(tmp_path, ["touch", str(ran)])
    os.symlink(str(tmp_path / "elsewhere"), os.path.join(job_dir, "started.json.tmp.2"))
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m",
                           "remote_agent.jobs.shim", job_dir], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads((Path(job_dir) / "exit.json").read_text())["code"] == 0
    assert json.loads((Path(job_dir) / "started.json").read_text())["pid"] == 2
    assert ran.exists()
    assert not (tmp_path / "elsewhere").exists()


@PID_NAMESPACE
@pytest.mark.parametrize("under", ["", os.fsdecode(b"odd\xff")], ids=["utf8", "no-utf8"])
def test_a_hami_core_region_whose_record_is_refused_is_never_made_and_nothing_runs(tmp_path,
                                                                                    under):
    """A symlink at the temporary name of the region's record (the shim is pid 1 of a
    namespace of its own) is refused, and the job does not start, saying why, as on a full
    disk. Before, the refusal ended the shim in a traceback: its job read as lost, whether it
    ran unknown. Its words name the job's folder, whose path may be no UTF-8 (``under``): the
    job's log says them with U+FFFD (before: a traceback as the shim noted them there)."""
    ran = tmp_path / "ran"
    (tmp_path / under).mkdir(exist_ok=True)
    job_dir = _job_dir(tmp_path / under, ["touch", str(ran)],
                       hami_region="CUDA_DEVICE_MEMORY_SHARED_CACHE", region=new_region())
    planted = os.path.join(job_dir, "hami-region.json.tmp.1")
    os.symlink(str(tmp_path / "elsewhere"), planted)
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m",
                           "remote_agent.jobs.shim", job_dir], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    end = json.loads((Path(job_dir) / "exit.json").read_text())
    error = end["error"]
    assert end["fault"] == "host"  # nothing ran: another host may start it
    assert error.startswith("cannot record its HAMi-core region /tmp/fractui-hami-"), error
    assert error.endswith(": refusing temporary file %s: it is a symlink" % planted), error
    assert not os.path.lexists(error.split()[5].rstrip(":"))
    assert not ran.exists()
    assert (Path(job_dir) / "output.log").read_bytes().decode() == text.said(error) + "\n"
