"""``fractui agent-archive DIR``: the zipapp an image carries, written as the user runs it."""

from __future__ import annotations

import hashlib
import subprocess
import sys

from fractui.fleet.zipapp import build_agent_archive
from remote_agent import __version__
from tests.cli_run import leaks, subprocess_run


def test_writes_the_agent_as_dir_agent_pyz_and_it_runs(tmp_path):
    out = tmp_path / "build" / "ctx"  # created, parents too
    done = subprocess_run(["agent-archive", str(out)])
    assert done.returncode == 0, done.stderr
    path = out / "agent.pyz"
    data = path.read_bytes()
    archive = build_agent_archive()
    assert data == archive.data  # the same reproducible bytes fractui uploads over SSH
    digest = hashlib.sha256(data).hexdigest()
    assert done.stdout == "%s  sha256 %s (%s)\n" % (path, digest, archive.name)
    assert [p.name for p in out.iterdir()] == ["agent.pyz"]  # no temporary file left
    ran = subprocess.run([sys.executable, str(path), "--version"], capture_output=True,
                         text=True, cwd=str(tmp_path), timeout=60)
    assert (ran.returncode, ran.stdout.strip()) == (0, __version__)


def test_a_dir_that_cannot_be_written_is_exit_1_with_the_reason(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = subprocess_run(["agent-archive", str(blocker)])
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "fractui: cannot write the agent archive into %s: File exists\n" % (
        blocker)
    assert not leaks(done.stderr)


def test_without_dir_is_a_usage_error():
    done = subprocess_run(["agent-archive"])
    assert done.returncode == 2
    assert "DIR" in done.stderr and not leaks(done.stderr)


def test_a_wrong_config_does_not_stop_it(tmp_path):
    """agent-archive uses nothing of a config: one at the default path that is wrong (a key
    mistyped while it is being written) or a --config that is missing stops no image build."""
    (tmp_path / "fractui").mkdir(mode=0o700)
    (tmp_path / "fractui" / "config.toml").write_text("[[hosts]]\nnmae = 'gpu-a'\n")
    (tmp_path / "fractui" / "config.toml").chmod(0o600)
    missing = str(tmp_path / "none.toml")
    for words in (["agent-archive"], ["--config", missing, "agent-archive"],
                  ["agent-archive", "--config", missing]):
        out = tmp_path / "ctx"
        done = subprocess_run(words + [str(out)], env_extra={"XDG_CONFIG_HOME": str(tmp_path)})
        assert (done.returncode, done.stderr) == (0, ""), words
        assert (out / "agent.pyz").read_bytes() == build_agent_archive().data
        (out / "agent.pyz").unlink()


def test_its_help_offers_no_config():
    """It reads no config, so its help does not list --config, which every verb that reads
    one offers; a --config given to it anyway is still taken, and unused, as above."""
    done = subprocess_run(["agent-archive", "--help"])
    assert (done.returncode, done.stderr) == (0, "")
    assert "DIR" in done.stdout and "--config" not in done.stdout
    assert "--config" in subprocess_run(["status", "--help"]).stdout
