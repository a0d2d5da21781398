"""The admin's ssh_config as fractui reads it: OpenSSH's rules for what it uses, and every
mistake — hostile or merely odd — told as `file:line: what`, never a traceback. A fuzz run at a
fixed seed over generated ssh_configs (Include loops, huge and special files, bad ports and
ProxyJump values, unknown options, bytes that are not UTF-8) checks the parser, and the
`status` verb end to end on a share of them."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple, Union

import pytest

from fractui.config import HostConfig
from fractui.fleet.sshconfig import MAX_FILE_BYTES, Route, SshConfigError, resolve
from tests.cli_run import closed_port, leaks, subprocess_run
from tests.conftest import REPO

SEED = 13
CASES = 400  # generated ssh_configs, each looked up for every alias below
STATUS_CASES = 24  # of which this many also go through `fractui status` as a subprocess
ALIASES = ("gpu-f", "jump", "j2")


def host(alias: str = "gpu-f", **extra) -> HostConfig:
    return HostConfig(name="gpu-f", host=alias, **extra)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def refused(path: Path, alias: str = "gpu-f", **extra) -> str:
    with pytest.raises(SshConfigError) as caught:
        resolve(host(alias, **extra), str(path))
    return str(caught.value)


def test_openssh_rules_for_what_fractui_reads(tmp_path):
    cfg = write(tmp_path / "config", "\n".join([
        '# first value wins, IdentityFile adds up; Key=value and quotes as OpenSSH splits',
        'Host gpu-* !gpu-x',
        '  HostName=10.0.0.%h',
        '  Port = 2222',
        '  IdentityFile "%d/key one"',
        '  User ops # a comment',
        'Host gpu-f',
        '  Port 22',
        '  IdentityFile ~/.ssh/k2',
        '  ProxyJump ssh://admin@bastion:2200,j2',
        'Match originalhost j2 user root',
        '  HostName 192.0.2.2',
        'Host j2',
        '  HostKeyAlias j2.lab',
        'Match final host bastion',
        '  HostName 192.0.2.1',
        'Host *',
        '  User root',
    ]))
    route = resolve(host("gpu-f"), str(cfg))
    home = os.path.expanduser("~")
    assert (route.target.host, route.target.port, route.target.user) == (
        "10.0.0.gpu-f", 2222, "ops")
    assert route.target.identity_files == ("%s/key one" % home, "%s/.ssh/k2" % home)
    bastion, j2 = route.jumps
    assert (bastion.user, bastion.host, bastion.port) == ("admin", "192.0.2.1", 2200)
    assert (j2.host, j2.user, j2.key_alias) == ("192.0.2.2", "root", "j2.lab")
    # fractui's config wins; a negated pattern keeps a block off its host
    assert resolve(host("gpu-f", port=23, user="me"), str(cfg)).target.port == 23
    assert resolve(host("gpu-x"), str(cfg)).target.host == "gpu-x"


def test_match_user_sees_the_user_fractuis_config_names(tmp_path):
    cfg = write(tmp_path / "config", "Match user ops\n  Port 7\n")
    assert resolve(host("gpu-f", user="ops"), str(cfg)).target.port == 7
    assert resolve(host("gpu-f", user="someone"), str(cfg)).target.port == 22


def test_an_include_applies_only_where_its_block_does(tmp_path):
    write(tmp_path / "inc.conf", "Port 2001\nHost other\n  Port 2002\n")
    cfg = write(tmp_path / "config", "Host gpu-f\n  Include %s/inc.conf\n  User after\n"
                "Host jump\n  Include %s/inc.conf\n" % (tmp_path, tmp_path))
    route = resolve(host("gpu-f"), str(cfg))
    # the Include's own Host line ends inside the file: "User after" is gpu-f's again
    assert (route.target.port, route.target.user) == (2001, "after")
    assert resolve(host("j2"), str(cfg)).target.port == 22


@pytest.mark.parametrize("text, line, words", [
    ("Host gpu-f\n  Port 70000\n", 2, "port '70000' is not a number from 1 to 65535"),
    ("Host gpu-f\n  Port abc\n", 2, "port 'abc' is not a number"),
    ("Host gpu-f\n  Port \u00b2\n", 2, "port '\u00b2' is not a number"),
    ("Host gpu-f\n  Port\n", 2, "Port needs a value"),
    ("\nHost gpu-f\n  ProxyJump a@@b\n", 3, "bad ProxyJump hop 'a@@b'"),
    ("Host gpu-f\n  ProxyJump j:99999\n", 2, "port '99999'"),
    ("Host gpu-f\n  HostName \"bad host\"\n", 2, "'bad host' is not a host name"),
    ("Host gpu-f\n  HostName x%z\n", 2, "unknown token %z"),
    ("Host gpu-f\n  IdentityFile ~/k%\n", 2, "a lone % at the end"),
    ("Host \"gpu-f\n", 1, "unterminated quote"),
    ("Match exec \"test -f /x\"\n  Port 1\n", 1, "Match exec is not supported"),
    ("Match nosuch x\n", 1, "unknown Match criterion 'nosuch'"),
    ("Match host\n", 1, "Match host needs a pattern"),
    (b"Host gpu-f\n  User r\xf6\xf6t\n", 2, "not UTF-8 text"),
])
def test_a_mistake_is_told_with_its_file_and_line(tmp_path, text, line, words):
    cfg = tmp_path / "config"
    if isinstance(text, bytes):
        cfg.write_bytes(text)
    else:
        cfg.write_text(text)
    said = refused(cfg)
    assert said.startswith("%s:%d: " % (cfg, line)) and words in said, said


def test_mistakes_in_blocks_for_other_hosts_and_unknown_options_do_not_matter(tmp_path):
    cfg = write(tmp_path / "config", "Host other\n  Port abc\n  ProxyJump @@\nHost *\n"
                "  FooBar yes\n  ProxyCommand nc %h %p\n  CanonicalizeHostname yes\n")
    (tmp_path / "config").write_bytes(cfg.read_bytes() + b"# caf\xe9 (latin-1 comment)\n"
                                      b"SendEnv \xff\xfe\n")
    assert resolve(host("gpu-f"), str(cfg)).target.port == 22


def test_hostile_includes_are_refused_at_the_include_line(tmp_path):
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    write(a, "Include %s\n" % b)
    write(b, "# b\nInclude %s\n" % a)
    cfg = write(tmp_path / "config", "Host *\nInclude %s\n" % a)
    said = refused(cfg)
    assert said.startswith("%s:2: Include %s: " % (b, a)) and "Include loop" in said
    write(tmp_path / "self.conf", "Include %s/self.conf\n" % tmp_path)
    assert "Include loop" in refused(write(cfg, "Include %s/self.conf\n" % tmp_path))
    # a diamond that doubles at every level is bounded too
    for level in range(12):
        write(tmp_path / ("d%d.conf" % level), "Include %s/d%d.conf %s/d%d.conf\n" % (
            tmp_path, level + 1, tmp_path, level + 1))
    assert "more than 1000 files" in refused(write(cfg, "Include %s/d0.conf\n" % tmp_path))
    big = tmp_path / "big.conf"
    with open(big, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)
    for target, words in ((big, "larger than 4 MiB: not an ssh_config"),
                          ("/dev/zero", "not a regular file: a character device"),
                          (tmp_path, "is a directory")):
        said = refused(write(cfg, "\nInclude %s\n" % target))
        assert said.startswith("%s:2: Include %s: %s" % (cfg, target, words)), said
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "not a regular file: a FIFO" in refused(write(cfg, "Include %s\n" % fifo))
    assert "larger than 4 MiB" in refused(big)  # the config file itself


def test_an_ssh_config_another_user_could_change_is_refused_as_openssh_does(tmp_path):
    """An ssh_config says where a host is and by which jump host it is reached; OpenSSH
    refuses one another user could change ("Bad owner or permissions"), and so does fractui,
    the file itself, an Include and the folder that holds one."""
    inc = write(tmp_path / "inc.conf", "Host gpu-f\n  HostName 10.0.0.9\n")
    cfg = write(tmp_path / "config", "Include %s\n" % inc)
    assert resolve(host(), str(cfg)).target.host == "10.0.0.9"  # all ours: read
    inc.chmod(0o646)
    said = refused(cfg)
    assert said.startswith("%s:1: Include %s: refusing ssh_config %s: %s is writable by all "
                           "users (mode 0646)" % (cfg, inc, inc, inc)), said
    inc.chmod(0o644)
    os.chown(cfg, 54321, 54321)
    said = refused(cfg)
    assert said.startswith("%s: refusing ssh_config %s: %s is owned by uid 54321" % (
        cfg, cfg, cfg)), said
    os.chown(cfg, os.getuid(), os.getgid())
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)  # not sticky: anyone may rename a file of ours away and put theirs
    moved = write(folder / "config", "Host gpu-f\n  HostName 10.0.0.8\n")
    assert "%s is writable by its group and all users (mode 0777)" % folder in refused(moved)


# --- the fuzz run ---------------------------------------------------------------------------

VALUES = {
    "HostName": ["127.0.0.1", "127.0.0.2", "localhost", "bad host", '""', "x\ty", "%z",
                 "127.0.0.1%", "%%", "\x01"],
    "Port": ["1", "2", "22", "0", "65536", "-1", "abc", "", "99999999999999999999", "1e3",
             "2 2"],
    "User": ["root", "", "a b", "\u00fcser", "x" * 300, '"q"'],
    "IdentityFile": ["~/.ssh/id_x", "%d/k", "%h_%r_%p", "%Q", "none", "", "/dev/null",
                     '"a b"'],
    "ProxyJump": ["none", "jump", "root@jump:1", "jump,j2", "@@", "a:b:c", "[::1]:1",
                  "ssh://root@127.0.0.1:1", "jump:", ",", "jump:99999", "user@", "x y",
                  "[", "jump,,j2"],
    "HostKeyAlias": ["alias", "", "a b"],
    "FooBar": ["yes"], "ProxyCommand": ["nc %h %p"], "CanonicalizeHostname": ["yes"],
    "SendEnv": ["LANG"],
}
PATTERNS = ["*", "gpu-f", "gpu-*", "!gpu-f", "jump", "j?", "*.lab", "gpu-f,jump", '"*"']
MATCHES = ["all", "host gpu-f", "originalhost gpu-*", "user root", "localuser *", "final",
           "canonical", "exec true", "localnetwork 10.0.0.0/8", "bogus x", "host", "!all",
           "final host jump", "tagged x", "!host j2 all"]
RAW = [b"\xff\xfe bad bytes", b"Host \xc3\x28", b"Port=22", b"Port = 2", b"Port =1",
       b"=", b'"Host gpu-f', b"HostName 127.0.0.1\x00", b"\tPort\t2", b"Host gpu-f\r",
       b"IdentityFile " + b"k" * 100000, b"#" + b"x" * 1000, b"   ", b"Host", b"Match",
       b"Include", b"\\", b'User "unterminated']


def _line(rng: random.Random, files: List[Path], here: Path, specials: List[str]) -> bytes:
    kind = rng.random()
    if kind < 0.15:
        return ("Host %s" % " ".join(rng.sample(PATTERNS, rng.randint(1, 3)))).encode()
    if kind < 0.22:
        return ("Match %s" % rng.choice(MATCHES)).encode()
    if kind < 0.32:
        later = files[files.index(here) + 1:]
        pick = rng.random()
        if pick < 0.1:  # maybe a loop
            targets = [str(rng.choice(files))]
        elif pick < 0.25:
            targets = [rng.choice(specials)]
        else:
            targets = [str(rng.choice(later)) for _ in range(rng.randint(1, 2))] if later \
                else [str(here.parent / "*.none")]
        return ("Include %s" % " ".join(targets)).encode()
    if kind < 0.37:
        return rng.choice(RAW)
    key = rng.choice(sorted(VALUES))
    return ("  %s%s%s" % (key, rng.choice([" ", "=", " = "]),
                          rng.choice(VALUES[key]))).encode("utf-8")


def generate(rng: random.Random, where: Path, specials: List[str]) -> Path:
    """A main file and up to three files it may include (which may include each other, or
    themselves), each a mix of good and hostile lines. The main file ends with a block that
    points every alias at 127.0.0.1 port 1, so a run never asks DNS about made-up names and
    never reaches a real server."""
    where.mkdir()
    files = [where / "config"] + [where / ("inc%d.conf" % i) for i in range(rng.randint(0, 3))]
    for path in files:
        lines = [_line(rng, files, path, specials) for _ in range(rng.randint(1, 15))]
        if path == files[0]:
            lines += [b"Host *", b"  HostName 127.0.0.1", b"  Port 1"]
        path.write_bytes(rng.choice([b"\n", b"\r\n"]).join(lines) + b"\n")
    return files[0]


def check_route(route: Route) -> None:
    for hop in route.hops:
        assert hop.host and not re.search(r"\s|[\x00-\x1f]", hop.host)
        assert isinstance(hop.port, int) and 1 <= hop.port <= 65535
        assert hop.user and not re.search(r"\s", hop.user)


def check_refusal(said: str, files: List[str]) -> None:
    """``file:line: what`` of a generated file and a line it has, or ``file: what`` for a
    file read as a whole, or the host entry of fractui's config."""
    m = re.match(r"^(?P<file>/[^:\n]*?)(?::(?P<line>\d+))?: \S", said)
    assert m, said
    assert m.group("file") in files, said
    if m.group("line"):
        with open(m.group("file"), "rb") as f:
            assert 1 <= int(m.group("line")) <= f.read().count(b"\n") + 1, said


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> List[Tuple[Path, List[str]]]:
    root = tmp_path_factory.mktemp("ssh-configs")
    big = root / "big.conf"
    with open(big, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)
    fifo = root / "fifo"
    os.mkfifo(fifo)
    specials = [str(big), str(fifo), "/dev/zero", str(root), str(root / "*.conf"),
                str(root / "missing.conf"), "relative-missing.conf"]
    rng = random.Random(SEED)
    cases = []
    for n in range(CASES):
        main = generate(rng, root / ("case%03d" % n), specials)
        cases.append((main, sorted(str(p) for p in main.parent.iterdir()) + [str(big)]))
    return cases


def outcome(main: Path, alias: str) -> Union[Route, str]:
    """What resolve says for ``alias``: a route (checked), or its refusal."""
    try:
        route = resolve(host(alias), str(main))
    except SshConfigError as err:
        return str(err)
    check_route(route)
    return route


def test_fuzzed_ssh_configs_give_a_route_or_a_clear_refusal(corpus):
    refusals = 0
    for main, files in corpus:
        for alias in ALIASES:
            said = outcome(main, alias)
            if isinstance(said, str):
                check_refusal(said, files)
                refusals += 1
    # the generator must reach both outcomes often, or it tests too little
    assert 0.2 * CASES * len(ALIASES) < refusals < 0.8 * CASES * len(ALIASES), refusals


@pytest.mark.slow  # a fault suite: README, "the slow fault suites"
def test_the_status_verb_on_fuzzed_ssh_configs_reports_the_host_never_a_traceback(
        corpus, tmp_path):
    for main, files in corpus[:STATUS_CASES]:
        config = tmp_path / ("%s.toml" % main.parent.name)
        config.write_text("[ssh]\nknown_hosts = %s\nconnect_timeout = 1.0\nconfig_file = %s\n"
                          "\n[[hosts]]\nname = \"gpu-f\"\nhost = \"gpu-f\"\n" % (
                              json.dumps(str(tmp_path / "known_hosts")),
                              json.dumps(str(main))))
        done = subprocess.run([sys.executable, "-m", "fractui", "--config", str(config),
                               "status", "--json"], capture_output=True, text=True,
                              timeout=120, cwd=REPO, stdin=subprocess.DEVNULL)
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode == 1, (main, done.stderr)
        (record,) = json.loads(done.stdout)["hosts"]
        assert record["state"] in ("offline", "untrusted") and record["error"], record
        said = outcome(main, "gpu-f")
        if isinstance(said, str):
            assert record["error"] == said
        else:  # the first hop was dialled and did not let us in
            assert said.hops[0].host in record["error"], record


def test_doctor_s_ssh_command_by_hand_takes_the_route_fractui_took(tmp_path):
    """An unreachable host's fix names the ssh command with the config's port, user, key,
    jump hosts and ssh_config: a bare `ssh -v HOST` tries port 22 directly, as oneself, and
    says nothing of the route that failed."""
    port = closed_port()
    ssh_config = write(tmp_path / "ssh_config", "")
    config = write(tmp_path / "config.toml", """
[ssh]
config_file = "%s"
connect_timeout = 2
[[hosts]]
name = "far"
host = "127.0.0.1"
port = %d
user = "gpuadmin"
identity_file = "%s"
proxy_jump = "ops@127.0.0.1:%d"
[[hosts]]
name = "near"
host = "127.0.0.1"
port = %d
""" % (ssh_config, port, tmp_path / "id key", port, port))
    done = subprocess_run(["--config", str(config), "doctor", "--json"])
    assert done.returncode == 1 and not leaks(done.stderr), done.stderr
    fixes = {h["name"]: next(c["fix"] for c in h["checks"] if c["name"] == "ssh")
             for h in json.loads(done.stdout)["hosts"]}
    said = "check host, port, user and identity_file; `%s` shows what ssh itself does"
    assert fixes == {
        "far": said % ("ssh -v -F %s -p %d -l gpuadmin -i '%s' -J ops@127.0.0.1:%d 127.0.0.1"
                       % (ssh_config, port, tmp_path / "id key", port)),
        "near": said % ("ssh -v -F %s -p %d 127.0.0.1" % (ssh_config, port))}
