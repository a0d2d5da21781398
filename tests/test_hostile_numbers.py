"""Numbers in text others wrote — $COLUMNS, $SUDO_UID, a config's store port, proxy_jump
port, metrics listen and sim spec, a demo's --gpus, a state dir's sudo logins. Python's
``isdigit`` and a regex's ``\\d`` take "²" and "١" too, which ``int`` refuses or reads as
another number, and ``int`` refuses more than 4300 digits: such text once ended fractui in
"internal error" (exit 70), the agent's daemon in a traceback before it served, and a config
port in "٢٢" loaded as 22 to fail at connect. Each is read in ASCII digits
(remote_agent.digits.whole, or [0-9] in a regex): wrong text is no number, ignored where it is
a hint, refused in words where it is asked for."""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fractui.cli import main
from fractui.config import ConfigError
from fractui.servable import load_checked
from remote_agent.daemon.paths import AgentPaths
from remote_agent.digits import whole
from tests.cli_run import in_process, leaks
from tests.conftest import REPO
from tests.test_job_supervision import wait_until
from tests.test_jobs import alive

# What isdigit takes and int does not (or reads as another number), and what is too long.
DIGIT_LIKE = ["²", "①", "١٢", "０", "8_0", " 80", "80 ", "+80", "-1", "9" * 5000,
              "1" + "0" * 31, "", "nan", "1e3"]
LONG = {"9" * 5000: "5000 nines"}


@settings(max_examples=300, derandomize=True)
@given(st.one_of(st.text(alphabet=string.digits + "²③١٢０_+- \t\n", max_size=40),
                 st.sampled_from(DIGIT_LIKE + ["\x00"]), st.binary(max_size=12)))
def test_whole_is_a_number_in_ascii_digits_within_its_bound_or_none(text):
    got = whole(text, 65535)
    plain = text.decode("latin-1") if isinstance(text, bytes) else text
    if plain and len(plain) <= 30 and all(c in string.digits for c in plain) \
            and int(plain) <= 65535:
        assert got == int(plain)
    else:
        assert got is None


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[store]\nurl = "sqlite://%s"\n[[queues]]\nname = "q"\ngpu = 0.5\n'
                    % (tmp_path / "store.db"))
    assert main(["--config", str(path), "submit", "--queue", "q", "--", "x"]) == 0
    return str(path)


@pytest.mark.parametrize("columns", DIGIT_LIKE, ids=lambda v: LONG.get(v, ascii(v)))
def test_columns_that_hold_no_number_are_no_width(config, capfd, monkeypatch, columns):
    """A table is cut to $COLUMNS only where it holds a whole number of columns; else it goes
    out whole into a pipe, as with no $COLUMNS."""
    monkeypatch.setenv("COLUMNS", columns)
    code, out, err = in_process(capfd, ["--config", config, "jobs"])
    assert code == 0 and not leaks(err), err
    assert out.splitlines()[0].endswith("  WHY"), out


@pytest.mark.parametrize("port", ["²", "١", "０", "5²"])
def test_a_store_port_of_other_digits_is_the_configs_error_at_its_line(tmp_path, capfd, port):
    path = tmp_path / "config.toml"
    path.write_text('[store]\nurl = "postgresql://localhost:%s/db"\n' % port)
    code, out, err = in_process(capfd, ["--config", str(path), "jobs"])
    assert code == 2 and not leaks(err), err
    assert err.startswith("fractui: %s:2: store.url has port " % path), err


@pytest.mark.parametrize("count", ["²", "١٢", "9" * 5000], ids=lambda v: LONG.get(v, ascii(v)))
def test_demo_gpus_of_other_digits_says_the_range(capfd, count):
    code, out, err = in_process(capfd, ["demo", "--gpus", count])
    assert code == 2 and not leaks(err), err
    assert "argument --gpus: must be a whole number from 1 to 1000" in err, err


@pytest.mark.parametrize("sudo_uid", ["²", "9" * 5000, "-1", "4294967295"],
                         ids=lambda v: LONG.get(v, ascii(v)))
def test_an_agent_given_a_sudo_uid_that_is_no_uid_serves_and_records_none(
        start_agent, tmp_path, monkeypatch, sudo_uid):
    monkeypatch.setenv("SUDO_UID", sudo_uid)
    state = str(tmp_path / "state")
    agent = start_agent("1xL4", state)
    assert agent.call("daemon.version")["version"]
    assert not os.path.exists(AgentPaths(state).sudo_logins)


def test_a_sudo_login_line_that_is_no_uid_is_passed_over_and_the_next_login_kept(
        start_agent, tmp_path, monkeypatch):
    """The state dir's sudo logins, one uid a line: a line damaged into digits int() refuses
    is no login; the daemon starts and records the login that started it."""
    state = str(tmp_path / "state")
    first = start_agent("1xL4", state)  # the state dir, made as the agent makes it
    pid = first.call("daemon.version")["pid"]
    first.call("daemon.shutdown")
    first.close()
    wait_until(lambda: not alive(pid), "the daemon to stop")
    logins = AgentPaths(state).sudo_logins
    fd = os.open(logins, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"9" * 5000 + b"\n\xc2\xb2\n4242\n")
    os.close(fd)
    monkeypatch.setenv("SUDO_UID", "4343")
    again = start_agent("1xL4", state)
    assert json.dumps(again.call("daemon.version"))
    with open(logins, "rb") as f:
        assert f.read().split()[-2:] == [b"4242", b"4343"]


@pytest.mark.parametrize("line, key", [
    ('[[hosts]]\nname = "a"\nhost = "h"\nproxy_jump = "j@bastion:٢٢"', "hosts[0].proxy_jump"),
    ('[metrics]\nlisten = "127.0.0.1:٩٤٠٢"', "metrics.listen"),
    ('[[hosts]]\nname = "a"\ntransport = "local"\nsim = "٢xL4"', "hosts[0].sim"),
    ('[[hosts]]\nname = "a"\ntransport = "local"\nsim = "2xH100;nvlink=٠-١"', "hosts[0].sim"),
])
def test_a_port_or_gpu_number_in_other_digits_is_refused_at_its_line(tmp_path, line, key):
    """A regex's \\d takes every script's digits, and int() reads them: "٢٢" was port 22 to
    the config, and no port to the SSH connection that read it again (the host offline)."""
    path = tmp_path / "config.toml"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError) as refused:
        load_checked(str(path))
    assert (refused.value.line, refused.value.message.split(" ")[0]) == (
        line.count("\n") + 1, key), str(refused.value)


@pytest.mark.parametrize("spec", ["9" * 5000 + "xL4", "2xL4;nvlink=0-" + "9" * 5000],
                         ids=["count", "nvlink"])
def test_an_agent_sim_spec_of_5000_digits_is_said_as_the_specs_mistake(tmp_path, spec):
    done = subprocess.run([sys.executable, "-m", "remote_agent", "serve", "--stdio",
                           "--state-dir", str(tmp_path / "state"), "--sim", spec],
                          capture_output=True, text=True, cwd=REPO, stdin=subprocess.DEVNULL,
                          timeout=60)
    assert done.returncode == 2 and not leaks(done.stderr), done.stderr
    assert "sim spec" in done.stderr and "4300" not in done.stderr, done.stderr[-300:]


@pytest.mark.parametrize("where, text", [
    ("daemon.pid", "%d" % 2 ** 32),  # no pid_t holds it: os.kill raised OverflowError
    ("daemon.pid", "%d" % (2 ** 22 + 1)),  # past any pid_max
    ("jobs/1/started.json", json.dumps({"pid": "\u0661"})),  # int() read it as 1: init's group
    ("jobs/1/started.json", json.dumps({"pid": 2 ** 32})),
    ("jobs/1/started.json", '{"pid": 12'),  # cut short: json.loads raised
])
def test_a_demo_pid_file_naming_no_pid_is_swept_as_nothing(tmp_path, where, text):
    """The demo's sweep kills what a state dir says still runs (``running_pids``); a pid file
    holding no pid (written short, or by hand) names nothing to kill, never process group 1 or
    a number os.kill cannot take. (The sweep itself is not run here: were this to fail, it
    would kill process group 1.)"""
    import fcntl

    from fractui.demo import running_pids

    state = tmp_path / "state"
    (state / "jobs" / "1").mkdir(parents=True)
    (state / where).write_text(text)
    with open(state / "daemon.lock", "a") as held:  # a daemon holds its lock: its pid is read
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert running_pids(str(state)) == []
