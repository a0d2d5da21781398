"""Every agent setting is reachable from a host's config entry, bounded the same way in the
config and on the agent's command line, and becomes the words fractui starts the agent with."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from fractui.config import ConfigError, load_config
from fractui.fleet.host import agent_args
from remote_agent.daemon.settings import AgentSettings
from tests.conftest import REPO


def load(tmp_path, host_lines: str):
    path = tmp_path / "config.toml"
    path.write_text("[[hosts]]\nname = \"gpu-a\"\n" + textwrap.dedent(host_lines))
    return str(path)


def test_the_agent_settings_of_a_host_become_the_agents_words(tmp_path):
    config = load_config(load(tmp_path, """\
        mps = true
        hami_core_lib = "/usr/local/lib/libvgpu.so"
        cgroup_parent = "/sys/fs/cgroup/gpu-jobs"
        log_max_mib = 16
        retention_hours = 24
        watchdog_grace_s = 2
        usage_sample_s = 1
        """))
    host = config.hosts[0]
    assert host.agent_settings() == AgentSettings(
        mps=True, hami_core_lib="/usr/local/lib/libvgpu.so",
        cgroup_parent="/sys/fs/cgroup/gpu-jobs", log_max_mib=16, retention_hours=24.0,
        watchdog_grace_s=2.0, usage_sample_s=1.0)
    assert agent_args(host, "st") == [
        "serve", "--stdio", "--state-dir", "st", "--mps", "--hami-core-lib",
        "/usr/local/lib/libvgpu.so", "--cgroup-parent", "/sys/fs/cgroup/gpu-jobs",
        "--log-max-mib", "16", "--retention-hours", "24.0", "--watchdog-grace-s", "2.0",
        "--usage-sample-s", "1.0"]
    default = load_config(load(tmp_path, "")).hosts[0]
    assert agent_args(default, "st") == ["serve", "--stdio", "--state-dir", "st"]


@pytest.mark.parametrize("line, message", [
    ("log_max_mib = 0", "hosts[0].log_max_mib must be an integer, at least 1 and at most "
                        "1048576, got 0"),
    ("log_max_mib = 4194304", "hosts[0].log_max_mib must be an integer, at least 1 and at "
                              "most 1048576, got 4194304"),
    ("log_max_mib = 1.5", "hosts[0].log_max_mib must be an integer, got a float"),
    ("retention_hours = 0", "hosts[0].retention_hours must be a number, above 0 and at most "
                            "87600, got 0"),
    ("retention_hours = -1", "hosts[0].retention_hours must be a number, above 0 and at most "
                             "87600, got -1"),
    ("retention_hours = 1e308", "hosts[0].retention_hours must be a number, above 0 and at "
                                "most 87600, got 1e+308"),
    ("retention_hours = nan", "hosts[0].retention_hours must be a number, above 0 and at most "
                              "87600, got nan"),
    ("watchdog_grace_s = inf", "hosts[0].watchdog_grace_s must be a number, at least 0 and at "
                               "most 3600, got inf"),
    ("watchdog_grace_s = -0.5", "hosts[0].watchdog_grace_s must be a number, at least 0 and at "
                                "most 3600, got -0.5"),
    ("watchdog_grace_s = true", "hosts[0].watchdog_grace_s must be a number, got a boolean"),
    ("usage_sample_s = 0.1", "hosts[0].usage_sample_s must be a number, at least 0.5 and at "
                             "most 3600, got 0.1"),
    ("cgroup_parent = \"fractui\"", "hosts[0].cgroup_parent must be \"auto\", \"none\" or an "
                                    "absolute path, got 'fractui'"),
    ("hami_core_lib = \"libvgpu.so\"", "hosts[0].hami_core_lib must be an absolute path on the "
                                       "host, got 'libvgpu.so'"),
    ("mps = \"yes\"", "hosts[0].mps must be a boolean, got a string"),
])
def test_a_bad_agent_setting_names_file_line_and_bounds(tmp_path, line, message):
    path = load(tmp_path, "python = \"python3\"\n" + line + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == "%s:4: %s" % (path, message)


@pytest.mark.parametrize("words, message", [
    (["--log-max-mib", "0"], "argument --log-max-mib: must be an integer, at least 1"),
    (["--retention-hours", "nan"], "argument --retention-hours: must be a number, above 0"),
    (["--watchdog-grace-s", "1e9"], "argument --watchdog-grace-s: must be a number, at least 0 "
                                    "and at most 3600, got 1000000000"),
    (["--cgroup-parent", "rel"], "argument --cgroup-parent: must be \"auto\", \"none\" or an "
                                 "absolute path"),
    (["--usage-sample-s", "0"], "argument --usage-sample-s: must be a number, at least 0.5"),
])
def test_the_agent_refuses_the_same_values_on_its_command_line(tmp_path, words, message):
    done = subprocess.run([sys.executable, "-m", "remote_agent", "serve", "--stdio",
                           "--state-dir", str(tmp_path / "st"), "--sim", "1xL4"] + words,
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "st").exists()  # refused before anything was made
