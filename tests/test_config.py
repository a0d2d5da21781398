"""The admin's config file: valid files load with defaults, every mistake names file and line."""

from __future__ import annotations

import dataclasses
import os
import socket
import socket
import textwrap

import pytest

from fractui.config import (BOUNDS, Config, ConfigError, HostConfig, QueueConfig,
                            SchedulerSettings, SshSettings, StoreSettings, TeamConfig,
                            TuiSettings, MetricsSettings,
                            default_config_path, load_config, tomllib)
from fractui.servable import load_checked
from fractui.store import SqliteStore
from fractui.checked_store import open_checked_store
from tests.cli_run import leaks, subprocess_run

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "config.example.toml")
HOME = os.path.expanduser("~")
HOST_KEYS = ("name, host, port, user, identity_file, proxy_jump, become, python, state_dir, "
             "agent_cache, transport, exec, exec_target, agent, agent_path, sim, mig_mode, mps, "
             "hami_core_lib, cgroup_parent, log_max_mib, retention_hours, watchdog_grace_s, "
             "usage_sample_s")


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
        state_dir = "/srv/fractui-state"
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
        members = ["alice", "bob_2"]

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
        python="/opt/py/bin/python3", state_dir="/srv/fractui-state",
        agent_cache="tools/fractui",  # SFTP paths are relative to the remote home
        mps=True, hami_core_lib="/usr/lib/libvgpu.so")
    assert config.hosts[2] == HostConfig(  # a local host's state is this machine's
        name="sim", transport="local", sim="2xA100-80GB:mig,1xL4",
        state_dir=str(tmp_path / "xdg-state" / "fractui" / "hosts" / "sim"))
    assert config.queues == (QueueConfig(name="train", gpu=0.5, cpus=4, hosts=("sim",),
                                         team="vision"),)
    assert config.queue("train").describe() == "0.5 GPU"
    assert config.teams == (TeamConfig(name="vision", quota_gpus=2.5,
                                       members=("alice", "bob_2")),)
    assert config.scheduler == SchedulerSettings(host_lost_s=60.0)
    assert config.tui == TuiSettings(theme="light", keys=(("fleet.filter", "ctrl+f"),))
    assert config.host("h100-b") is config.hosts[1]


def test_an_empty_file_is_a_fleet_of_no_hosts_with_default_ssh_settings(tmp_path):
    config = load_config(write(tmp_path, "# nothing yet\n"))
    assert config == Config(path=config.path)
    assert config.ssh.known_hosts == os.path.join(HOME, ".ssh", "known_hosts")
    assert config.ssh.connect_timeout == 10.0


def test_a_config_of_no_hosts_takes_queues_that_name_the_schedulers_hosts(tmp_path):
    """A researcher's config (the store, the teams, the queues, no hosts) copies the admin's
    queues, whose hosts only the scheduler's config lists: not a mistake there."""
    config = load_config(write(tmp_path, '[[queues]]\nname = "q"\ngpus = 1\n'
                                         'hosts = ["gpu-a"]\n'))
    assert config.queue("q").hosts == ("gpu-a",) and config.hosts == ()


def test_a_scheduler_refuses_a_config_of_no_hosts_whose_queues_name_hosts(tmp_path):
    """What a member's config may leave unchecked a scheduler may not: it places on the
    hosts its own config lists, so a queue's hosts there (a typo, or the [[hosts]] left out)
    would leave every job of it waiting, and every running job requeued as its host's."""
    path = write(tmp_path, '[store]\nurl = "sqlite:///%s"\n[[queues]]\nname = "q"\n'
                           'gpus = 1\nhosts = ["gpu-a"]\n' % (tmp_path / "s.db"))
    run = subprocess_run(["--config", path, "scheduler"])
    assert (run.returncode, run.stderr) == (2, "fractui: %s:6: queues[0].hosts names "
                                               "'gpu-a', but the config lists no hosts "
                                               "([[hosts]]): a scheduler places jobs on the "
                                               "hosts its own config lists\n" % path)
    assert not (tmp_path / "s.db").exists()


def test_the_example_config_loads_and_sets_every_key():
    config = load_config(EXAMPLE)
    assert [h.name for h in config.hosts] == ["a100-a", "h100-b", "gpu-node1", "sim-1"]
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
    assert set(doc["store"]) == {f.name for f in dataclasses.fields(StoreSettings)
                                 if f.compare}  # (origin: where url was read, no key)
    assert config.store.url == "sqlite://" + os.path.join(HOME, ".local/state/fractui/store.db")
    assert set(doc["tui"]) == {f.name for f in dataclasses.fields(TuiSettings)}
    assert set(doc["metrics"]) == {f.name for f in dataclasses.fields(MetricsSettings)}
    assert config.metrics.address == ("127.0.0.1", 9402)
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


def test_a_byte_order_mark_is_named_not_taken_for_a_statement(tmp_path):
    """An editor that writes UTF-8 with a BOM (Windows' Notepad did): TOML forbids it, and
    the parser's own words ("Invalid statement (column 1)") point at nothing the eye sees."""
    path = tmp_path / "config.toml"
    path.write_bytes(b'\xef\xbb\xbf[[hosts]]\nname = "a"\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value) == (f"{path}:1: starts with a byte order mark (U+FEFF), which TOML "
                               "does not allow: save it as UTF-8 without one")


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
                 "known: hosts, ssh, queues, teams, scheduler, store, tui, usage, "
                 "metrics, fairshare)")


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
     "F:3: queues[0].gpu must be from 0.001 to 0.999 of a GPU (gpus = k asks for whole GPUs), "
     "got 1.5"),
    ('[[queues]]\nname = "q"\ncpus = 2\n',
     "F:2: queues[0] asks for no GPU: give one of gpu, mig, memory_gib, gpus"),
    ('[[queues]]\nname = "q"\ngpus = 1\nisolation = "hard"\n',
     "F:4: queues[0].isolation must be one of any, mig, share, got 'hard'"),
    ('[[hosts]]\nname = "gpu-a"\n[[queues]]\nname = "q"\ngpus = 1\nhosts = ["nowhere"]\n',
     "F:6: queues[0].hosts names 'nowhere', which is not a configured host"),
    ('[[queues]]\nname = "q"\ngpus = 1\nteam = "ghosts"\n',
     "F:4: queues[0].team names 'ghosts', which is not a configured team"),
    ('[[queues]]\nname = "q"\ngpus = 1\n[[queues]]\nname = "q"\n',
     "F:5: duplicate queue name 'q' (first at line 2)"),
    ('[[queues]]\ngpu = 0.5\n',
     "F:1: queues[0] has no name: every [[queues]] needs a unique name"),
    ('[[teams]]\nname = "t"\nquota_gpus = -1\n',
     "F:3: teams[0].quota_gpus must be from 0 to 1000000 GPUs, got -1"),
    ('[[teams]]\nname = "t"\nweight = 0\n',
     "F:3: teams[0].weight must be from 0.001 to 1000, got 0"),
    ('[[teams]]\nname = "t"\nmembers = "alice"\n',
     "F:3: teams[0].members must be an array of strings, got a string"),
    ('[[teams]]\nname = "t"\n\nmembers = ["alice", "bob smith"]\n',
     "F:4: teams[0].members[1] must be an OS user name (1 to 64 of A-Z a-z 0-9 . _ -, not "
     "starting with '.' or '-'), got 'bob smith'"),
    ('[[teams]]\nname = "t"\nmembers = ["-rf"]\n',
     "F:3: teams[0].members[0] must be an OS user name (1 to 64 of A-Z a-z 0-9 . _ -, not "
     "starting with '.' or '-'), got '-rf'"),
    ('[[teams]]\nname = "t"\nmembers = ["alice", "bob", "alice"]\n',
     "F:3: teams[0].members names 'alice' twice"),
    ('[[teams]]\nname = "t"\nmembers = [""]\n',
     "F:3: teams[0].members must not be empty"),
    ('[scheduler]\nlease_s = 0\n',
     "F:2: scheduler.lease_s must be from 1 to 3600 seconds, got 0"),
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


def test_a_connect_timeout_out_of_bounds_is_an_error(tmp_path):
    assert error(tmp_path, """\
        [ssh]
        connect_timeout = 0
        """) == "F:2: ssh.connect_timeout must be from 0.5 to 600 seconds, got 0"


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
        """) == ("F:2: hosts[0].name must be 1 to 64 of A-Z a-z 0-9 . _ -, not starting with "
                 "'.' or '-', got 'rack1/a'")


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
        """) == f"F:3: hosts[0].port must be from 1 to 65535, got {port}"


def test_become_can_only_be_sudo(tmp_path):
    assert error(tmp_path, """\
        [[hosts]]
        name = "a"
        become = "doas"
        """) == "F:3: hosts[0].become must be \"sudo\" or left out, got 'doas'"


def test_become_keeps_the_state_dir_out_of_the_logins_home(tmp_path):
    """Root's agent refuses a state dir its login owns a step of: one in that home (the
    default's place) would keep the host offline; become's default is root's."""
    config = load_config(write(tmp_path, """\
        [[hosts]]
        name = "a"
        become = "sudo"
        """))
    assert config.hosts[0].state_dir == "/var/lib/fractui-agent"
    for state_dir in ("~/.local/state/fractui-agent", "state"):
        assert error(tmp_path, f"""\
            [[hosts]]
            name = "a"
            become = "sudo"
            state_dir = "{state_dir}"
            """) == (f"F:4: hosts[0].state_dir must be an absolute path with become = \"sudo\","
                     f" got '{state_dir}': the agent runs as root, and refuses a state dir in "
                     f"the login's home (that user could change what root runs); leave it out "
                     f"for /var/lib/fractui-agent, or name another directory of root's")


def test_transport_is_ssh_local_or_exec(tmp_path):
    assert error(tmp_path, """\
        [[hosts]]
        name = "a"
        transport = "mosh"
        """) == ("F:3: hosts[0].transport must be \"ssh\", \"local\" or \"exec\", got "
              "'mosh'")


def test_a_host_pins_its_mig_modes_or_leaves_them_to_the_scheduler(tmp_path):
    config = load_config(write(tmp_path, """\
        [[hosts]]
        name = "a"
        mig_mode = "fixed"
        [[hosts]]
        name = "b"
        """))
    assert [h.mig_mode for h in config.hosts] == ["fixed", "auto"]
    assert (config.mode_fixed("a"), config.mode_fixed("b"), config.mode_fixed("gone")) == \
        (True, False, False)
    assert error(tmp_path, """\
        [[hosts]]
        name = "a"
        mig_mode = "on"
        """) == "F:3: hosts[0].mig_mode must be \"auto\" or \"fixed\", got 'on'"


def test_a_local_host_needs_a_sim(tmp_path):
    assert error(tmp_path, """\
        [[hosts]]
        name = "a"
        transport = "local"
        """) == ("F:3: hosts[0].transport is \"local\" but sim is not set: a local host is a "
                 "simulated one, e.g. sim = \"2xA100-80GB:mig,1xL4\"")


def test_an_exec_host_gets_tuples_and_absolute_defaults(tmp_path):
    config = load_config(write(tmp_path, """\
        [[hosts]]
        name = "n1"
        transport = "exec"
        exec = ["kubectl", "exec", "-i", "-n", "gpu", "{target}", "--"]
        exec_target = ["kubectl", "get", "pods", "-o", "name"]
        agent = "image"

        [[hosts]]
        name = "n2"
        transport = "exec"
        exec = ["podman", "exec", "-i", "agent"]
        """))
    n1, n2 = config.hosts
    assert (n1.exec, n1.exec_target, n1.agent, n1.agent_path, n1.state_dir) == (
        ("kubectl", "exec", "-i", "-n", "gpu", "{target}", "--"),
        ("kubectl", "get", "pods", "-o", "name"), "image", "/opt/fractui/agent.pyz",
        "/var/lib/fractui-agent")
    assert (n2.exec_target, n2.agent, n2.agent_cache) == (None, "upload", "/var/cache/fractui")


@pytest.mark.parametrize("body, message", [
    ('transport = "exec"', "3: hosts[0].transport is \"exec\" but exec is not set: it is the "
     "program that reaches the agent, e.g. exec = [\"podman\", \"exec\", \"-i\", \"agent\"]"),
    ('transport = "exec"\nexec = []', "4: hosts[0].exec is empty: it must name the program that "
     "reaches the agent, e.g. [\"podman\", \"exec\", \"-i\", \"agent\"]"),
    ('transport = "exec"\nexec = ["podman", 3]', "4: hosts[0].exec must be an array of strings, "
     "got an array"),
    ('transport = "exec"\nexec = ["podman", ""]', "4: hosts[0].exec must not be empty"),
    ('exec = ["podman"]', "3: hosts[0].exec is a setting of exec hosts; this host's transport "
     "is \"ssh\" (set transport = \"exec\")"),
    ('transport = "local"\nsim = "1xL4"\nagent = "image"', "5: hosts[0].agent is a setting of "
     "exec hosts; this host's transport is \"local\" (set transport = \"exec\")"),
    ('transport = "exec"\nexec = ["x"]\nport = 22', "5: hosts[0].port is an SSH setting; this "
     "host's transport is \"exec\""),
    ('transport = "exec"\nexec = ["x", "{target}"]', "4: hosts[0].exec names {target} but "
     "exec_target is not set: it finds the target at each connect"),
    ('transport = "exec"\nexec = ["x"]\nexec_target = ["ls"]', "4: hosts[0].exec has no "
     "{target} word for exec_target's answer to fill"),
    ('transport = "exec"\nexec = ["x", "{target}"]\nexec_target = []', "5: hosts[0].exec_target "
     "is empty: it must name a program that prints the target, or be left out"),
    ('transport = "exec"\nexec = ["x"]\nagent = "baked"', "5: hosts[0].agent must be "
     "\"upload\" or \"image\", got 'baked'"),
    ('transport = "exec"\nexec = ["x"]\nagent_path = "/a.pyz"', "5: hosts[0].agent_path is "
     "only used with agent = \"image\" (an uploaded agent lives in agent_cache)"),
    ('transport = "exec"\nexec = ["x"]\nstate_dir = "~/state"', "5: hosts[0].state_dir must "
     "be an absolute path on an exec host (nothing expands ~ or a home there), got '~/state'"),
    ('transport = "exec"\nexec = ["x"]\nagent = "image"\nagent_path = "agent.pyz"',
     "6: hosts[0].agent_path must be an absolute path on an exec host (nothing expands ~ or a "
     "home there), got 'agent.pyz'"),
])
def test_a_bad_exec_host_names_the_key(tmp_path, body, message):
    assert error(tmp_path, '[[hosts]]\nname = "a"\n%s\n' % body) == "F:" + message


def test_two_exec_hosts_on_one_agent_are_refused(tmp_path):
    host = '[[hosts]]\nname = "%s"\ntransport = "exec"\nexec = ["podman", "exec", "-i", "c"]\n'
    assert error(tmp_path, host % "a" + host % "b") == (
        "F:5: hosts 'a' and 'b' have the same state_dir on one machine "
        "(/var/lib/fractui-agent); give each its own")
    load_config(write(tmp_path, host % "a" + host % "b" + 'state_dir = "/var/lib/b"\n'))


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


def test_a_mistyped_queue_or_team_name_is_answered_with_the_close_one(tmp_path):
    """``submit --queue hlaf``: the name meant comes first, found among every queue, though
    only the first 20 are listed."""
    config = load_config(write(tmp_path, "".join(
        '[[queues]]\nname = "q%02d"\ngpu = 0.5\n' % i for i in range(24)) + """\
        [[queues]]
        name = "half"
        gpu = 0.5
        [[teams]]
        name = "vision"
        """))
    with pytest.raises(ConfigError) as info:
        config.queue("hlaf")
    assert str(info.value) == (
        f"{config.path}: unknown queue 'hlaf' (did you mean 'half'? known: %s and 5 more)"
        % ", ".join("q%02d" % i for i in range(20)))
    with pytest.raises(ConfigError) as info:
        config.team("visoin")
    assert str(info.value) == (
        f"{config.path}: unknown team 'visoin' (did you mean 'vision'? known: vision)")


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


# --- Bounded and safe values -----------------------------------------------------------------

def _doc_for(table: str, key: str, value: str) -> str:
    """The smallest file that sets ``key`` of ``table`` to ``value`` (TOML text); the key is
    always on the last line."""
    if table == "queues":  # 0 GiB, 0 GPUs: not that form, so the queue needs another
        form = "" if key in ("gpu", "memory_gib", "gpus") and value != "0" else (
            "cpus = 1\ngpu = 0.5\n" if key == "gpus" else "gpus = 1\n")
        return f'[[queues]]\nname = "q"\n{form}{key} = {value}\n'
    if table in ("hosts", "teams"):
        return f'[[{table}]]\nname = "x"\n{key} = {value}\n'
    if table == "scheduler":  # a lease long enough for any interval, passes short for any lease
        other = {"lease_s": "interval_s = 0.05", "interval_s": "lease_s = 3600",
                 "call_timeout_s": "lease_s = 3600"}.get(key, "")
        return f"[scheduler]\n{other}\n{key} = {value}\n"
    if table == "fairshare":  # a window as long as usage may be kept, for any half-life
        other = {"half_life_h": "window_h = 876000", "window_h": "half_life_h = 0.01"}.get(
            key, "")
        return f"[usage]\nkeep_days = 36500\n[fairshare]\n{other}\n{key} = {value}\n"
    return f"[{table}]\n{key} = {value}\n"


BOUND_CASES = [(table, key, lo, hi) for (table, key), (lo, hi, _unit) in BOUNDS.items()]


@pytest.mark.parametrize("table, key, lo, hi", BOUND_CASES)
def test_every_number_is_bounded_finite_and_exact(tmp_path, table, key, lo, hi):
    integer = isinstance(lo, int) and isinstance(hi, int) and key not in (
        "memory_gib", "cpus", "memory", "quota_gpus", "connect_timeout") and (
        table != "scheduler" or key == "max_attempts")

    def shown(x):
        return repr(int(x)) if integer or float(x).is_integer() else repr(x)

    for ok in (lo, hi):
        load_config(write(tmp_path, _doc_for(table, key, shown(ok))))
    step = 1 if integer else 0.0001 if hi < 1 else 0.5
    for bad in (shown(lo - step), shown(hi + step), "1e308", "-1e308", "10" + "0" * 400,
                "inf", "-inf", "nan"):
        text = _doc_for(table, key, bad)
        line = text.count("\n")
        message = error(tmp_path, text)
        assert message.startswith(f"F:{line}: ") and f"{key} must be" in message, (bad, message)


@pytest.mark.parametrize("name", ["..", ".", "-rf", "a/b", "a b", "é", "x" * 65, "a\\u0000b",
                                  ".hidden", "tab\\there", "back\\\\slash", "~", "a:b"])
@pytest.mark.parametrize("table", ["hosts", "queues", "teams"])
def test_names_are_safe_path_parts(tmp_path, table, name):
    text = f'[[{table}]]\nname = "{name}"\n' + ("gpus = 1\n" if table == "queues" else "")
    message = error(tmp_path, text)
    assert message.startswith(f"F:2: {table}[0].name must be 1 to 64 of A-Z a-z 0-9 . _ -, "
                              "not starting with '.' or '-', got "), message


@pytest.mark.parametrize("name", ["a", "gpu-01", "A_b.c", "x" * 50, "1", "_x", "10g"])
def test_names_of_the_portable_file_name_characters_are_fine(tmp_path, name):
    config = load_config(write(tmp_path, f'[[hosts]]\nname = "{name}"\n[[queues]]\n'
                                         f'name = "{name}"\ngpus = 1\n[[teams]]\n'
                                         f'name = "{name}"\n'))
    assert (config.hosts[0].name, config.queues[0].name, config.teams[0].name) == (name,) * 3
    assert load_config(write(tmp_path, f'[[hosts]]\nname = "{name:x<64}"\n')).hosts[0].name \
        == f"{name:x<64}"


def test_a_team_name_leaves_its_postgresql_role_whole(tmp_path):
    """fractui_team_<team> is the team's role: PostgreSQL cuts a name at 63 bytes, and a team
    cut there would be no team of the config's."""
    message = error(tmp_path, '[[teams]]\nname = "%s"\n' % ("t" * 51))
    assert message == ("F:2: teams[0].name is 51 characters: at most 50, so that its "
                       "PostgreSQL role, fractui_team_<team>, is not cut at 63"), message


def test_local_state_dirs_that_are_one_after_normalising_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    home = os.path.expanduser("~")
    default_b = tmp_path / "xdg" / "fractui" / "hosts" / "b"
    for first, second in ((str(tmp_path / "real"), str(tmp_path / "link")),
                          (str(tmp_path / "real"), str(tmp_path / "real") + "/"),
                          (str(tmp_path / "x" / ".." / "real"), str(tmp_path / "real")),
                          ("~/fractui-one", os.path.join(home, "fractui-one")),
                          (str(default_b), None)):
        b = f'state_dir = "{second}"\n' if second else ""
        message = error(tmp_path, f'[[hosts]]\nname = "a"\ntransport = "local"\nsim = "1xL4"\n'
                                  f'state_dir = "{first}"\n[[hosts]]\nname = "b"\n'
                                  f'transport = "local"\nsim = "1xL4"\n{b}')
        assert message.startswith("F:%d: local hosts 'a' and 'b' have the same state_dir"
                                  % (10 if second else 6)), message


def test_hosts_that_reach_one_agent_are_refused(tmp_path):
    text = ('[[hosts]]\nname = "a"\nhost = "gpu.example"\nstate_dir = "~/s"\n'
            '[[hosts]]\nname = "b"\nhost = "gpu.example"\nstate_dir = "~/s/"\n')
    assert error(tmp_path, text).startswith(
        "F:8: hosts 'a' and 'b' have the same state_dir on one machine")
    load_config(write(tmp_path, text.replace('state_dir = "~/s/"', 'state_dir = "~/s"\n'
                                                                   'port = 2222')))


@pytest.mark.parametrize("line, says", [
    ('store = "store.db"', "scheduler.store must be an absolute path or start with ~, got "
                           "'store.db'"),
    ('store = "~no-such-user-here/s.db"', "scheduler.store names a home directory this "
                                          "machine does not have"),
    ('store = "/tmp/a\\u0007b"', "scheduler.store must not contain control or invisible "
                                 "characters ('\\x07')"),
    ('store = "/tmp/\\u202etxt.db"', "scheduler.store must not contain control or invisible"),
    ('store = "/%s"' % ("x" * 5000), "scheduler.store is 5001 characters long; at most 4096"),
])
def test_local_paths_are_absolute_files_of_plain_text(tmp_path, line, says):
    message = error(tmp_path, "[scheduler]\n" + line + "\n")
    assert message.startswith("F:2: " + says), message


@pytest.mark.parametrize("text, says", [
    ('[store]\nurl = "postgresql://alice:s3cret@db.example/fractui"\n',
     "F:2: store.url carries a password, which a config file must not hold: give it in "
     "PGPASSWORD or ~/.pgpass instead"),
    ('[store]\nurl = "postgresql://alice@db.example/fractui?password=s3cret"\n',
     "F:2: store.url carries a password"),
    ('[store]\nurl = "postgresql://alice@db.example/fractui?sslpassword=s3cret"\n',
     "F:2: store.url carries the passphrase of its client key (sslpassword), which a "
     "config file must not hold: give it in a service of your own ~/.pg_service.conf (0600; "
     "service=NAME in the url), which libpq reads"),
    ('[store]\nurl = "postgresql://alice@db.example:70000/fractui"\n',
     "F:2: store.url has port '70000': must be from 1 to 65535"),
    ('[store]\nurl = "postgresql://alice@a:5432,b:70000/fractui"\n',  # each of its hosts'
     "F:2: store.url has port '70000': must be from 1 to 65535"),
    ('[store]\nurl = "postgresql://db.example/fractui?no_such_option=1"\n',
     "F:2: store.url is not a URL libpq can read: invalid URI query parameter"),
    ('[store]\nurl = "mysql://db.example/fractui"\n',
     "F:2: store.url must start with sqlite:// (sqlite:///path/to/store.db) or postgresql://"),
    ('[store]\nurl = "sqlite://store.db"\n',
     "F:2: store.url must be an absolute path or start with ~, got 'store.db'"),
    ('[store]\nurl = 5\n', "F:2: store.url must be a string, got an integer"),
    ('[store]\nuri = "sqlite:///tmp/s.db"\n', "F:2: unknown key 'uri' in [store] (did you mean "
                                               "'url'?"),
    ('[store]\nurl = "sqlite:///tmp/s.db"\n\n[scheduler]\nstore = "/tmp/t.db"\n',
     "F:5: scheduler.store cannot be given with store.url (line 2): say where the store is "
     "once, as [store] url"),
])
def test_the_store_url_is_checked_and_never_holds_a_password(tmp_path, text, says):
    message = error(tmp_path, text)
    assert message.startswith(says), message
    assert "s3cret" not in message


@pytest.mark.parametrize("url, what, part", [
    ("sqlite:///D/s.db?mode=ro", "a query string", "?mode=ro"),
    ("sqlite:///D/s.db?", "a query string", "?"),
    ("sqlite:///D/s%00.db", "a percent-escape", "%00"),
    ("sqlite:///D/s%2Fx.db", "a percent-escape", "%2F"),
    ("sqlite:///D/s.db#frag", "a fragment", "#frag"),
    ("sqlite://~/s.db?cache=shared&mode=ro", "a query string", "?cache=shared&mode=ro"),
])
def test_an_sqlite_url_with_a_query_fragment_or_escape_is_refused_through_the_cli(
        tmp_path, url, what, part):
    """What another reader of SQLite URLs takes as its grammar is refused (exit 2, the file,
    the line, the URL and what is wrong), never made a file's name (``s.db?mode=ro``) nor, from
    ``%00``, a NUL on its way to the filesystem; the file at the path is not made either."""
    url = url.replace("/D/", str(tmp_path) + "/")
    path = write(tmp_path, '[store]\nurl = "%s"\n' % url)
    run = subprocess_run(["--config", path, "jobs"])
    assert run.returncode == 2, run
    assert not leaks(run.stderr), run.stderr
    assert run.stderr == (
        "fractui: %s:2: store.url %r holds %s (%r): an SQLite URL is sqlite:// and the file's "
        "path, with no query, fragment or percent-escape, none of which fractui reads; a file "
        "whose name holds ?, # or %% is named by [scheduler] store = \"/its/path\"\n" % (
            path, url, what, part))
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(path)]  # no store was made
    # a file so named is still a store, by the path of [scheduler] store, read as written
    odd = os.path.join(str(tmp_path), "s.db?mode=ro")
    assert load_config(write(tmp_path, '[scheduler]\nstore = "%s"\n' % odd)).store.url == \
        "sqlite://" + odd


def test_the_store_is_named_by_url_or_by_the_older_scheduler_store_path(tmp_path):
    def url(text: str) -> str:
        return load_config(write(tmp_path, text)).store.url
    assert url("") is None  # the default file
    assert url('[store]\nurl = "sqlite://~/s.db"\n') == "sqlite://" + os.path.join(HOME, "s.db")
    assert url('[scheduler]\nstore = "/tmp/old.db"\n') == "sqlite:///tmp/old.db"
    # what is at the path is the store's to judge as it opens it (exit 1), not the config's
    assert url('[store]\nurl = "sqlite:///tmp"\n') == "sqlite:///tmp"
    assert url('[scheduler]\nstore = "/tmp"\n') == "sqlite:///tmp"
    assert url('[store]\nurl = "postgresql://fractui@db.example:5433/fleet"\n') == \
        "postgresql://fractui@db.example:5433/fleet"


def test_ssh_words_are_one_word_and_never_an_option(tmp_path):
    for key in ("host", "user"):
        for value in ("-oProxyCommand=x", "two words"):
            assert error(tmp_path, f'[[hosts]]\nname = "a"\n{key} = "{value}"\n').startswith(
                f"F:3: hosts[0].{key} must be one word not starting with '-'")


def test_passes_must_come_within_a_third_of_the_lease(tmp_path):
    assert error(tmp_path, "[scheduler]\nlease_s = 2\n") == (
        "F:2: scheduler.interval_s (1 s) must be at most a third of scheduler.lease_s (2 s), "
        "which is renewed once a pass")
    assert load_config(write(tmp_path, "[scheduler]\nlease_s = 3\n")).scheduler.lease_s == 3.0


def test_too_many_entries_and_too_big_files_are_refused(tmp_path):
    text = "".join(f'[[queues]]\nname = "q{i}"\ngpus = 1\n' for i in range(1001))
    assert error(tmp_path, text) == "F:3001: 1001 [[queues]]: at most 1000"
    hosts = ", ".join('"h"' for _ in range(10001))
    assert error(tmp_path, f'[[queues]]\nname = "q"\ngpus = 1\nhosts = [{hosts}]\n') == (
        "F:4: queues[0].hosts has 10001 entries; at most 10000")
    big = tmp_path / "big.toml"
    with open(big, "wb") as f:
        f.truncate(4 * 2 ** 20 + 1)
    with pytest.raises(ConfigError) as err:
        load_config(str(big))
    assert str(err.value) == "%s: larger than 4 MiB: not a config file" % big
    deep = 'a = 1\nb = 2\nc = ' + "[" * 5000 + "]" * 5000 + "\n"
    assert error(tmp_path, deep) == ("F:3: arrays or tables nested too deeply (TOML is read "
                                     "by recursion)")


# --- Queues no GPU could ever serve ------------------------------------------------------------

def checked_error(tmp_path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_checked(path)
    return str(info.value).replace(path, "F", 1)


@pytest.mark.parametrize("text, expected", [
    ('[[queues]]\nname = "q"\nmig = "3g.41gb"\n',
     "F:3: queues[0].mig names '3g.41gb', a MIG profile no GPU model has (close: 3g.71gb, "
     "3g.47gb, 3g.40gb)"),
    ('[[queues]]\nname = "q"\nmig = "3g.40gb"\nisolation = "share"\n',
     'F:4: queues[0].isolation is "share" (memory shares only), which never gives the MIG '
     "slice that mig asks for"),
    ('[[queues]]\nname = "q"\ngpus = 2\nisolation = "mig"\n',
     'F:4: queues[0].isolation is "mig", but a job runs on one MIG instance: gpus = 2 can '
     "only be whole GPUs without MIG"),
])
def test_a_queue_no_gpu_model_could_serve_is_refused_at_load(tmp_path, text, expected):
    assert checked_error(tmp_path, text) == expected


SIM_HOSTS = ('[[hosts]]\nname = "l4s"\ntransport = "local"\nsim = "2xL4"\n'
             '[[hosts]]\nname = "a100"\ntransport = "local"\nsim = "1xA100-80GB"\n')


@pytest.mark.parametrize("queue, says", [
    ('mig = "7g.80gb"\nhosts = ["l4s"]', "(7g.80gb, isolation any, hosts l4s); the fleet has "
                                         "2x L4"),
    # 3 GPUs, of a fleet of 3: a job's are one host's (no GPU could hold 3 read as wrong)
    ("gpus = 3", "(3 GPUs, isolation any): a job's GPUs are all on one host and of one model, "
                 "and the most of one model a host has is 2; the fleet has 1x A100-80GB, 2x L4"),
    ("memory_gib = 100", "(100 GiB, isolation any); the fleet has 1x A100-80GB, 2x L4"),
    ('gpu = 0.5\ngpu_models = ["H100"]', "(0.5 GPU, isolation any, models H100)"),
    ('gpu = 0.5\nisolation = "mig"\nhosts = ["l4s"]', "(0.5 GPU, isolation mig, hosts l4s)"),
])
def test_a_queue_the_sim_specs_cannot_serve_is_refused_at_load(tmp_path, monkeypatch, queue,
                                                              says):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    message = checked_error(tmp_path, SIM_HOSTS + '[[queues]]\nname = "q"\n' + queue + "\n")
    assert message.startswith("F:11: no %s in the fleet could ever hold what queue q asks for "
                              % ("host" if "gpus" in queue else "GPU") + says), message
    assert message.endswith(" (from their sim specs)")


@pytest.mark.parametrize("queue, says", [
    # four GPUs on one host, but two of each model: a job's GPUs are of one model
    ("gpus = 3", "(3 GPUs, isolation any): a job's GPUs are all on one host and of one model, "
                 "and the most of one model a host has is 2; the fleet has 2x A100-80GB, 2x L4"),
    ('gpus = 2\ngpu_models = ["L4"]', "(2 GPUs, isolation any, models L4): a job's GPUs are "
     "all on one host and of one model, and the most of one model it may use a host has is 1; "
     "the fleet has 2x A100-80GB, 2x L4")])
def test_a_queue_of_more_gpus_of_one_model_than_a_host_has_says_the_placers_rule(
        tmp_path, monkeypatch, queue, says):
    """Where a host has enough GPUs but not of one model (of those the queue may use), the
    words count the GPUs of one model, as the placer does: "the most one has is 4" was no
    reason for a job of 3, and none was said."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    hosts = ('[[hosts]]\nname = "mix"\ntransport = "local"\nsim = "1xL4,2xA100-80GB"\n'
             '[[hosts]]\nname = "l4"\ntransport = "local"\nsim = "1xL4"\n')
    message = checked_error(tmp_path, hosts + '[[queues]]\nname = "q"\n' + queue + "\n")
    assert message.startswith("F:11: no host in the fleet could ever hold what queue q asks "
                              "for " + says), message


@pytest.mark.parametrize("queue", [
    'mig = "3g.40gb"',  # the A100 has MIG off now, but could turn it on
    "gpus = 2", "memory_gib = 80", 'gpu = 0.5\ngpu_models = ["L4"]',
    'mig = "7g.80gb"\nhosts = ["l4s", "elsewhere"]',  # elsewhere is not known: it may serve
])
def test_a_queue_some_gpu_could_serve_loads(tmp_path, monkeypatch, queue):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    config = load_checked(write(tmp_path, SIM_HOSTS + '[[hosts]]\nname = "elsewhere"\n'
                                                      '[[queues]]\nname = "q"\n' + queue + "\n"))
    assert [q.name for q in config.queues] == ["q"]


def test_a_queue_the_kept_inventory_cannot_serve_is_refused_where_the_store_opens(tmp_path):
    store_path = tmp_path / "store.db"
    with socket.socket() as s:  # a host that does not answer: its kept facts stand
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = write(tmp_path, f'[ssh]\nconnect_timeout = 1\n[scheduler]\nstore = "{store_path}"\n'
                           f'[[hosts]]\nname = "gpu-x"\nhost = "127.0.0.1"\nport = {port}\n'
                           '[[queues]]\nname = "big"\nmig = "7g.80gb"\n')
    config = load_checked(path)  # gpu-x is not known yet: nothing to say
    store = SqliteStore(str(store_path))
    l4 = {"index": 0, "name": "NVIDIA L4", "memory_mib": 23034, "mig_mode": False,
          "mig_pending": False}
    store.record_inventory("gpu-x", {"cpus": 8, "memory_mib": 65536, "mig_changes": True,
                                     "gpus": [l4, dict(l4, index=1)]})
    store.close()
    with pytest.raises(ConfigError) as info:
        open_checked_store(config)
    assert str(info.value) == (
        f"{path}:11: no GPU in the fleet could ever hold what queue big asks for (7g.80gb, "
        "isolation any); the fleet has 2x L4 (from what they last reported, kept in the "
        "store)")
    store = SqliteStore(str(store_path))
    a100 = dict(l4, name="NVIDIA A100-SXM4-80GB", memory_mib=81920, mig_mode=True)
    store.record_inventory("gpu-x", {"cpus": 8, "memory_mib": 65536, "mig_changes": True,
                                     "gpus": [a100]})
    store.close()
    open_checked_store(config).close()


@pytest.mark.parametrize("folder", ["demo", "a%41b?c#d"])
def test_a_config_built_in_code_written_as_a_file_loads_back_to_itself(tmp_path, folder):
    """The demo's scheduler, a child process, reads the demo's in-code config as a file. Its
    store's path may hold what [store] url refuses (a TMPDIR with %, ? or #): written as that
    URL, the file did not load ("holds a percent-escape"), the demo's scheduler never ran."""
    from fractui.config import load_config, toml_text
    from fractui.demo import demo_config, fleet_layout

    config = demo_config(fleet_layout(40), str(tmp_path / folder))
    path = tmp_path / "config.toml"
    path.write_text(toml_text(config))
    again = load_config(str(path))
    assert (again.hosts, again.queues, again.teams, again.scheduler, again.ssh,
            again.fairshare, again.store) == (config.hosts, config.queues, config.teams,
                                              config.scheduler, config.ssh, config.fairshare,
                                              config.store)
    assert config.fairshare.usage_weight > 0  # the demo shows fair share over time


def test_a_config_that_is_not_a_regular_file_is_refused_never_read(tmp_path):
    """A FIFO with no writer would hold the read for good and /dev/zero never ends: each is
    refused at once, saying what it is. /dev/null is the empty file by name, and loads."""
    assert load_config(os.devnull).hosts == load_config(write(tmp_path, "")).hosts
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(tmp_path / "socket.toml"))  # (no open can reach it: said all the same)
    for path, why in ((str(fifo), "not a regular file: a FIFO"),
                      (str(tmp_path / "socket.toml"), "not a regular file: a socket"),
                      ("/dev/zero", "not a regular file: a character device"),
                      (str(tmp_path), "is a directory")):
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert str(err.value) == "%s: %s" % (path, why)


@pytest.mark.parametrize("attack", ["file writable by all", "file of another user",
                                    "folder writable by all"])
def test_a_config_another_user_could_change_is_refused(tmp_path, attack):
    """The config says what runs as us (a host's exec, its agent_path) and where the store is,
    so one that another local user could rewrite is refused, as OpenSSH's StrictModes would."""
    folder = tmp_path / "conf"
    folder.mkdir()
    path = folder / "config.toml"
    path.write_text('[[hosts]]\nname = "a"\nhost = "a.example"\n')
    load_config(str(path))  # ours, 0644 in a folder of ours: read
    if attack == "file writable by all":
        path.chmod(0o666)
        why = "%s is writable by its group and all users (mode 0666), who could replace what " \
              "fractui reads there; fix it with: chmod go-w %s" % (path, path)
    elif attack == "file of another user":
        os.chown(path, 54321, 54321)
        why = "%s is owned by uid 54321, not by root or uid %d; that user could change what " \
              "fractui runs" % (path, os.getuid())
    else:
        folder.chmod(0o777)
        why = "%s is writable by its group and all users (mode 0777), who could replace what " \
              "fractui reads there" % folder
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value).startswith("%s: refusing config file %s: %s" % (path, path, why)), \
        str(info.value)
