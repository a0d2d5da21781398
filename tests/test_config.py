"""The admin's config file: valid files load with defaults, every mistake names file and line."""

from __future__ import annotations

import dataclasses
import os
import textwrap

import pytest

from fractui.config import (Config, ConfigError, HostConfig, QueueConfig, SchedulerSettings,
                            SshSettings, TeamConfig, TuiSettings, default_config_path,
                            load_config, tomllib)

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "config.example.toml")
HOME = os.path.expanduser("~")
HOST_KEYS = ("name, host, port, user, identity_file, proxy_jump, become, python, state_dir, "
             "agent_cache, transport, sim, mps, hami_core_lib, cgroup_parent, log_max_mib, "
             "retention_hours, watchdog_grace_s")


def write(tmp_path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def error(tmp_path, text: str) -> str:
    """The error text for a bad file, with the file name replaced by F."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == path
    return str(info.value).replace(path, "F", 1)


def test_a_full_config_loads_into_dataclasses_with_defaults_applied(tmp_path):
    config = load_config(write(tmp_path, """\
        [ssh]
        known_hosts = "~/kh"
        connect_timeout = 3

        [[hosts]]
        name = "a100-a"

        [[hosts]]
        name = "h100-b"
        host = "10.0.0.7"
        port = 2222
        user = "ops"
        identity_file = "~/.ssh/id_h100"
        proxy_jump = "jump@bastion:2200,[fe80::1]:22"
        become = "sudo"
        python = "/opt/py/bin/python3"
        state_dir = "~/fractui-state"
        agent_cache = "~/tools/fractui"
        mps = true
        hami_core_lib = "/usr/lib/libvgpu.so"

        [[hosts]]
        name = "sim"
        transport = "local"
        sim = "2xA100-80GB:mig,1xL4"

        [[queues]]
        name = "train"
        gpu = 0.5
        cpus = 4
        hosts = ["sim"]
        team = "vision"

        [[teams]]
        name = "vision"
        quota_gpus = 2.5

        [scheduler]
        host_lost_s = 60

        [tui]
        theme = "light"
        keys = { "fleet.filter" = "ctrl+f" }
        """))
    assert config.ssh == SshSettings(known_hosts=os.path.join(HOME, "kh"), connect_timeout=3.0,
                                     config_file=os.path.join(HOME, ".ssh", "config"))
    assert isinstance(config.ssh.connect_timeout, float)
    assert config.hosts[0] == HostConfig(name="a100-a", host="a100-a")
    assert (config.hosts[0].port, config.hosts[0].python, config.hosts[0].state_dir,
            config.hosts[0].agent_cache, config.hosts[0].transport, config.hosts[0].mps) == (
        None, "python3", "~/.local/state/fractui-agent", ".cache/fractui", "ssh", False)
    assert config.hosts[1] == HostConfig(
        name="h100-b", host="10.0.0.7", port=2222, user="ops",
        identity_file=os.path.join(HOME, ".ssh", "id_h100"),
        proxy_jump="jump@bastion:2200,[fe80::1]:22", become="sudo",
        python="/opt/py/bin/python3", state_dir="~/fractui-state",  # remote: not expanded
        agent_cache="tools/fractui",  # SFTP paths are relative to the remote home
        mps=True, hami_core_lib="/usr/lib/libvgpu.so")
    assert config.hosts[2] == HostConfig(  # a local host's state is this machine's
        name="sim", transport="local", sim="2xA100-80GB:mig,1xL4",
        state_dir=str(tmp_path / "xdg-state" / "fractui" / "hosts" / "sim"))
    assert config.queues == (QueueConfig(name="train", gpu=0.5, cpus=4, hosts=("sim",),
                                         team="vision"),)
    assert config.queue("train").describe() == "0.5 GPU"
    assert config.teams == (TeamConfig(name="vision", quota_gpus=2.5),)
    assert config.scheduler == SchedulerSettings(host_lost_s=60.0)
    assert config.tui == TuiSettings(theme="light", keys=(("fleet.filter", "ctrl+f"),))
    assert config.host("h100-b") is config.hosts[1]


def test_an_empty_file_is_a_fleet_of_no_hosts_with_default_ssh_settings(tmp_path):
    config = load_config(write(tmp_path, "# nothing yet\n"))
    assert config == Config(path=config.path)
    assert config.ssh.known_hosts == os.path.join(HOME, ".ssh", "known_hosts")
    assert config.ssh.connect_timeout == 10.0


def test_the_example_config_loads_and_sets_every_key():
    config = load_config(EXAMPLE)
    assert [h.name for h in config.hosts] == ["a100-a", "h100-b", "sim-1"]
    # Every key is set somewhere, so the loader has checked each documented example value.
    with open(EXAMPLE, "rb") as f:
        doc = tomllib.load(f)
    host_keys = {key for host in doc["hosts"] for key in host}
    assert host_keys == {f.name for f in dataclasses.fields(HostConfig)}
    assert set(doc["ssh"]) == {f.name for f in dataclasses.fields(SshSettings)}
    for table, cls in (("queues", QueueConfig), ("teams", TeamConfig)):
        assert {key for item in doc[table] for key in item} == {
            f.name for f in dataclasses.fields(cls)}
    assert set(doc["scheduler"]) == {f.name for f in dataclasses.fields(SchedulerSettings)}
    assert set(doc["tui"]) == {f.name for f in dataclasses.fields(TuiSettings)}
    assert [q.describe() for q in config.queues] == ["0.25 GPU", "3g.40gb", "10 GiB", "2 GPUs"]


def test_xdg_config_home_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_config_path() == os.path.join(str(tmp_path), "fractui", "config.toml")


def test_a_missing_file_says_so_without_a_line(tmp_path):
    path = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.path, info.value.line, info.value.message) == (path, None, "no such file")
    assert str(info.value) == f"{path}: no such file"


def test_a_toml_syntax_error_gives_tomllib_line(tmp_path):
    assert error(tmp_path, """\
        [[hosts]]
        name = "a"
        port = 22 22
        """) == ("F:3: invalid TOML: Expected newline or end of document after a statement "
                 "(column 11)")


def test_an_unclosed_value_at_the_end_points_at_the_last_line(tmp_path):
    assert error(tmp_path, """\
        [[hosts]]
        name = "a"
        sim = [
        """) == "F:3: invalid TOML: Invalid value (at end of file)"


def test_text_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b'[[hosts]]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value) == f"{path}:2: not UTF-8 text, which TOML requires"


def test_an_unknown_host_key_names_the_block_and_the_known_keys(tmp_path):
    assert error(tmp_path, """\
        [[hosts]]
        name = "a"

        [[hosts]]
        name = "b"
        prot = 22
        """) == (f"F:6: unknown key 'prot' in [[hosts]] #2 (did you mean 'port'? "
                 f"known: {HOST_KEYS})")


def test_an_unknown_key_is_found_when_quoted_or_spaced(tmp_path):
    assert error(tmp_path, """\
        [[hosts]]   # the first host
        name = "a"
          "colour"   = "red"
        """) == f"F:3: unknown key 'colour' in [[hosts]] #1 (known: {HOST_KEYS})"


def test_an_unknown_sub_table_of_a_host_points_at_its_header(tmp_path):
    assert error(tmp_path, """\
        [[hosts]]
        name = "a"
        [[hosts]]
        name = "b"
        [hosts.extra]
        x = 1
        """) == f"F:5: unknown key 'extra' in [[hosts]] #2 (known: {HOST_KEYS})"


def test_an_unknown_top_level_key_is_an_error(tmp_path):
    assert error(tmp_path, """\
        [[hosts]]
        name = "a"

        [[host]]
        name = "b"
        """) == ("F:4: unknown top-level key 'host' (did you mean 'hosts'? "
                 "known: hosts, ssh, queues, teams, scheduler, tui)")


def test_queues_and_teams_must_be_arrays_of_tables(tmp_path):
    assert error(tmp_path, """\
        [queues]
        name = "train"
        """) == "F:1: queues must be an array of tables ([[queues]]), got a table"


@pytest.mark.parametrize("text, expected", [
    ('[[queues]]\nname = "q"\ngpu = 0.5\nmig = "1g.10gb"\n',
     "F:4: queues[0].mig cannot be given with gpu: a queue asks for one of gpu, mig, "
     "memory_gib, gpus"),
    ('[[queues]]\nname = "q"\ngpu = 1.5\n',
     "F:3: queues[0].gpu must be a fraction between 0 and 1, got 1.5 (use gpus = k for whole "
     "GPUs)"),
    ('[[queues]]\nname = "q"\ncpus = 2\n',
     "F:2: queues[0] asks for no GPU: give one of gpu, mig, memory_gib, gpus"),
    ('[[queues]]\nname = "q"\ngpus = 1\nisolation = "hard"\n',
     "F:4: queues[0].isolation must be one of any, mig, share, got 'hard'"),
    ('[[queues]]\nname = "q"\ngpus = 1\nhosts = ["nowhere"]\n',
     "F:4: queues[0].hosts names 'nowhere', which is not a configured host"),
    ('[[queues]]\nname = "q"\ngpus = 1\nteam = "ghosts"\n',
     "F:4: queues[0].team names 'ghosts', which is not a configured team"),
    ('[[queues]]\nname = "q"\ngpus = 1\n[[queues]]\nname = "q"\n',
     "F:5: duplicate queue name 'q' (first at line 2)"),
    ('[[queues]]\ngpu = 0.5\n',
     "F:1: queues[0] has no name: every [[queues]] needs a unique name"),
    ('[[teams]]\nname = "t"\nquota_gpus = -1\n',
     "F:3: teams[0].quota_gpus must be a non-negative number of GPUs, got -1"),
    ('[[teams]]\nname = "t"\nweight = 0\n',
     "F:3: teams[0].weight must be a positive number, got 0"),
    ('[scheduler]\nlease_s = 0\n',
     "F:2: scheduler.lease_s must be a positive number of seconds, got 0"),
    ('[tui]\nkeys = { quit = 3 }\n',
     "F:2: tui.keys.quit must be a key such as \"ctrl+f\", got an integer"),
])
def test_queue_team_scheduler_and_tui_mistakes_name_the_line(tmp_path, text, expected):
    assert error(tmp_path, text) == expected


def test_an_unknown_ssh_key_is_an_error(tmp_path):
    assert error(tmp_path, """\
        [ssh]
        known_hosts = "~/kh"
        port = 22
        """) == ("F:3: unknown key 'port' in [ssh] (known: known_hosts, connect_timeout, "
                 "config_file)")


@pytest.mark.parametrize("value, got", [('"22"', "a string"), ("true", "a boolean"),
                                        ("22.0", "a float")])
def test_a_port_that_is_not_an_integer_is_an_error(tmp_path, value, got):
    assert error(tmp_path, f"""\
        [[hosts]]
        name = "a"

        [[hosts]]
        name = "b"
        port = {value}
        """) == f"F:6: hosts[1].port must be an integer, got {got}"


def test_a_wrong_type_in_ssh_is_an_error(tmp_path):
    assert error(tmp_path, """\
        [ssh]
        connect_timeout = "10"
        """) == "F:2: ssh.connect_timeout must be a number, got a string"


def test_a_non_positive_connect_timeout_is_an_error(tmp_path):
    assert error(tmp_path, """\
        [ssh]
        connect_timeout = 0
        """) == "F:2: ssh.connect_timeout must be a positive number of seconds, got 0"


def test_hosts_must_be_an_array_of_tables(tmp_path):
    assert error(tmp_path, """\
        # hosts
        hosts = "a100"
        """) == "F:2: hosts must be an array of tables ([[hosts]]), got a string"


def test_a_mistake_inside_an_inline_table_points_at_its_key(tmp_path):
    assert error(tmp_path, """\
        # inline hosts cannot be located more precisely than the key holding them
        hosts = [
          { name = "a", port = "22" },
        ]
        """) == "F:2: hosts[0].port must be an integer, got a string"


def test_a_host_without_a_name_points_at_its_header(tmp_path):
    assert error(tmp_path, """\
        [[hosts]]
        name = "a"

        [[hosts]]
        host = "10.0.0.2"
        """) == "F:4: hosts[1] has no name: every [[hosts]] needs a unique name"


def test_an_empty_string_is_an_error(tmp_path):
    assert error(tmp_path, """\
        [[hosts]]
        name = "a"
        user = ""
        """) == "F:3: hosts[0].user must not be empty"


def test_a_name_with_a_slash_is_an_error(tmp_path):
    assert error(tmp_path, """\
        [[hosts]]
        name = "rack1/a"
        """) == "F:2: hosts[0].name must not contain spaces or '/', got 'rack1/a'"


def test_a_duplicate_name_points_at_the_second_one(tmp_path):
    assert error(tmp_path, """\
        [[hosts]]
        name = "a"

        [[hosts]]
        host = "10.0.0.2"
        name = "a"
        """) == "F:6: duplicate host name 'a' (first at line 2)"


@pytest.mark.parametrize("port", [0, 65536])
def test_a_port_out_of_range_is_an_error(tmp_path, port):
    assert error(tmp_path, f"""\
        [[hosts]]
        name = "a"
        port = {port}
        """) == f"F:3: hosts[0].port must be between 1 and 65535, got {port}"


def test_become_can_only_be_sudo(tmp_path):
    assert error(tmp_path, """\
        [[hosts]]
        name = "a"
        become = "doas"
        """) == "F:3: hosts[0].become must be \"sudo\" or left out, got 'doas'"


def test_transport_is_ssh_or_local(tmp_path):
    assert error(tmp_path, """\
        [[hosts]]
        name = "a"
        transport = "mosh"
        """) == "F:3: hosts[0].transport must be \"ssh\" or \"local\", got 'mosh'"


def test_a_local_host_needs_a_sim(tmp_path):
    assert error(tmp_path, """\
        [[hosts]]
        name = "a"
        transport = "local"
        """) == ("F:3: hosts[0].transport is \"local\" but sim is not set: a local host is a "
                 "simulated one, e.g. sim = \"2xA100-80GB:mig,1xL4\"")


@pytest.mark.parametrize("spec, why", [
    ("2xZ9000", "unknown GPU model 'Z9000'; known: A100-40GB, A100-80GB, H100, H100-NVL, "
                "H200, B200, A30, L4, A10, L40S, T4, RTX4090, V100"),
    ("1xL4:mig", "NVIDIA L4 does not support MIG (sim spec item '1xL4:mig')"),
])
def test_a_bad_sim_spec_says_why(tmp_path, spec, why):
    assert error(tmp_path, f"""\
        [[hosts]]
        name = "a"
        sim = "{spec}"
        """) == f"F:3: hosts[0].sim is not a valid sim spec: {why}"


def test_a_bad_proxy_jump_hop_is_an_error(tmp_path):
    assert error(tmp_path, """\
        [[hosts]]
        name = "a"
        proxy_jump = "bastion,,gw"
        """) == ("F:3: hosts[0].proxy_jump has a bad hop '': expected [user@]host[:port], "
                 "hops separated by commas")


def test_agent_cache_with_another_users_home_is_an_error(tmp_path):
    assert error(tmp_path, """\
        [[hosts]]
        name = "a"
        agent_cache = "~bob/cache"
        """) == ("F:3: hosts[0].agent_cache must be relative to the remote home or absolute, "
                 "got '~bob/cache'")


def test_an_unknown_host_name_lists_the_known_ones(tmp_path):
    config = load_config(write(tmp_path, """\
        [[hosts]]
        name = "a"
        [[hosts]]
        name = "b"
        """))
    with pytest.raises(ConfigError) as info:
        config.host("c")
    assert str(info.value) == f"{config.path}: unknown host 'c' (known: a, b)"


def test_local_hosts_get_their_own_state_dirs_unless_told_one(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    path = tmp_path / "local.toml"
    path.write_text('[[hosts]]\nname = "a"\ntransport = "local"\nsim = "1xL4"\n\n'
                    '[[hosts]]\nname = "b"\ntransport = "local"\nsim = "1xL4"\n')
    assert [h.state_dir for h in load_config(str(path)).hosts] == [
        str(tmp_path / "state" / "fractui" / "hosts" / n) for n in "ab"]
    path.write_text('[[hosts]]\nname = "a"\ntransport = "local"\nsim = "1xL4"\n'
                    'state_dir = "/tmp/x"\n\n'
                    '[[hosts]]\nname = "b"\ntransport = "local"\nsim = "1xL4"\n'
                    'state_dir = "/tmp/x"\n')
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert str(err.value).startswith("%s:11: local hosts 'a' and 'b' have the same state_dir"
                                     % path)
