"""Host keys checked as OpenSSH checks them, against real sshd servers on 127.0.0.1: a known
host that offers a key not on file is CHANGED whatever the key types, under every name
OpenSSH matches (patterns, hashed names, [host]:port, HostKeyAlias), on every hop; @revoked
keys and damaged lines never let a key through; `fractui trust` accepts only unknown keys."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Optional, Tuple

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ed25519
from cryptography.utils import CryptographyDeprecationWarning

from fractui.config import HostConfig, SshSettings
from fractui.fleet.hostkeys import KnownHosts, UntrustedHostKey
from fractui.fleet.link import LinkError, SshLink, agent_connection
from fractui.fleet.sshconfig import resolve
from fractui.fleet.transport.base import AgentProcessError
from fractui.fleet.transport.ssh import SshTransport
from fractui.fleet.zipapp import build_agent_archive
from tests import sshd
from tests.conftest import REPO
from tests.test_fleet import SshFleet
from tests.test_job_supervision import fill

ssh_env = sshd.ssh_env


def other_key(tmp: Path, key_type: str = "ed25519") -> str:
    """A key that is not the server's, as known_hosts holds it (TYPE BASE64)."""
    path = tmp / ("other-%s" % key_type) / "key"
    if not path.exists():
        sshd._keygen(path, "someone-else", key_type)
    return sshd.public_key_line(path)


# The connect timeout where a test waits it out (a stall is the behaviour under test): short,
# yet long past what the real sshd on loopback takes for each step it also bounds
STALL_S = 2.0


def connect(env: sshd.SshEnv, server: sshd.SshServer, ssh_config: Optional[Path] = None,
            timeout_s: float = 5.0, **extra) -> SshLink:
    host = HostConfig(**{**dict(name="gpu-k", host=sshd.LOOPBACK, port=server.port, user="root",
                                identity_file=str(env.user_key_path)), **extra})
    route = resolve(host, str(ssh_config or env.root / "no-ssh-config"))
    return SshLink(route, KnownHosts(str(env.known_hosts)), timeout_s).connect()


def refused(env: sshd.SshEnv, server: sshd.SshServer, **extra) -> UntrustedHostKey:
    with pytest.raises(UntrustedHostKey) as caught:
        connect(env, server, **extra).close()
    return caught.value


def name(server: sshd.SshServer) -> str:
    return "[%s]:%d" % (sshd.LOOPBACK, server.port)


@pytest.mark.parametrize("on_file, offered", [
    ("ed25519", ("rsa",)), ("rsa", ("ed25519",)), ("ecdsa", ("rsa", "ed25519")),
    ("ed25519", ("ed25519",)), ("rsa", ("rsa",)),
])
def test_a_known_host_offering_a_key_not_on_file_is_changed_whatever_the_types(
        ssh_env, tmp_path, on_file, offered):
    server = ssh_env.new_server("h", key_types=offered)
    ssh_env.known_hosts.write_text("%s %s\n" % (name(server), other_key(tmp_path, on_file)))
    err = refused(ssh_env, server)
    assert err.kind == "changed" and not err.trustable
    assert "CHANGED" in str(err) and "gpu-k" in str(err)
    assert "line 1: %s SHA256:" % other_key(tmp_path, on_file).split()[0] in str(err)
    assert "ssh-keygen -f %s -R '%s'" % (ssh_env.known_hosts, name(server)) in str(err)


@pytest.mark.parametrize("offered, on_file", [
    (("ed25519", "rsa"), "rsa"), (("rsa", "ed25519"), "ed25519"),
    (("ed25519", "ecdsa", "rsa"), "ecdsa"), (("ed25519", "rsa"), "ed25519"),
])
def test_a_host_with_several_keys_proves_the_one_on_file(ssh_env, offered, on_file):
    """The link asks for the types on file first, as OpenSSH orders HostKeyAlgorithms."""
    server = ssh_env.new_server("multi", key_types=offered)
    line = server.host_public_keys[offered.index(on_file)]
    ssh_env.known_hosts.write_text("%s %s\n" % (name(server), line))
    link = connect(ssh_env, server)
    try:
        assert link.transport.get_remote_server_key().get_base64() == line.split()[1]
    finally:
        link.close()


def test_every_name_openssh_matches_makes_the_host_known(ssh_env, tmp_path):
    server = ssh_env.new_server("names", key_types=("rsa",))
    stranger = other_key(tmp_path)
    for field in ("[127.0.0.?]:%d" % server.port, "nothere,!other,[127.0.0.*]:%d" % server.port,
                  "[127.0.0.1]:*"):
        ssh_env.known_hosts.write_text("%s %s\n" % (field, stranger))
        assert refused(ssh_env, server).kind == "changed", field
    # a negated pattern that names it means the line is not about it
    ssh_env.known_hosts.write_text("*,!%s %s\n" % (name(server), stranger))
    assert refused(ssh_env, server).kind == "unknown"
    # hashed by OpenSSH's own tool
    ssh_env.known_hosts.write_text("%s %s\n" % (name(server), stranger))
    subprocess.run(["ssh-keygen", "-H", "-f", str(ssh_env.known_hosts)], check=True,
                   capture_output=True)
    assert ssh_env.known_hosts.read_text().startswith("|1|")
    err = refused(ssh_env, server)
    assert err.kind == "changed" and "line 1: ssh-ed25519" in str(err)
    # the same host on another port, or port 22, is another host: its key is unknown here
    ssh_env.known_hosts.write_text("%s %s\n[%s]:%d %s\n" % (
        sshd.LOOPBACK, stranger, sshd.LOOPBACK, server.port + 1, stranger))
    assert refused(ssh_env, server).kind == "unknown"


def test_host_key_alias_is_the_name_checked(ssh_env, tmp_path):
    server = ssh_env.new_server("alias", key_types=("rsa",))
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host gpu-alias\n  HostName %s\n  Port %d\n  HostKeyAlias gpu-k.lab\n"
                          % (sshd.LOOPBACK, server.port))
    ssh_env.known_hosts.write_text("gpu-k.lab %s\n%s %s\n" % (
        other_key(tmp_path), name(server), server.host_public_key))
    # on file under its address, but OpenSSH checks the alias: CHANGED there
    with pytest.raises(UntrustedHostKey) as caught:
        connect(ssh_env, server, ssh_config=ssh_config, host="gpu-alias", port=None).close()
    assert caught.value.kind == "changed" and caught.value.name == "gpu-k.lab"
    ssh_env.known_hosts.write_text("gpu-k.lab %s\n" % server.host_public_key)
    connect(ssh_env, server, ssh_config=ssh_config, host="gpu-alias", port=None).close()


def test_a_revoked_key_is_refused_even_when_also_trusted(ssh_env, tmp_path):
    server = ssh_env.new_server("rev")
    ssh_env.known_hosts.write_text("%s %s\n@revoked * %s\n" % (
        name(server), server.host_public_key, server.host_public_key))
    err = refused(ssh_env, server)
    assert err.kind == "revoked" and "REVOKED" in str(err) and "line 2" in str(err)
    # a revoked key of someone else changes nothing for this host
    ssh_env.known_hosts.write_text("%s %s\n@revoked * %s\n" % (
        name(server), server.host_public_key, other_key(tmp_path)))
    connect(ssh_env, server).close()


@pytest.mark.parametrize("damage, kind", [
    ("{name} ssh-ed25519 not*base64", "changed"),
    ("{name} ssh-ed25519", "changed"),
    ("{name} ssh-rsa {ed25519_blob}", "changed"),  # the data is not the type it says
    ("{name} ssh-dss AAAAB3NzaC1kc3MAAAA=", "changed"),  # a type fractui cannot check
    ("@revoked {name} ssh-ed25519 broken!", "unreadable"),
])
def test_a_damaged_line_that_names_the_host_never_lets_a_key_through(
        ssh_env, tmp_path, damage, kind):
    server = ssh_env.new_server("dmg")
    line = damage.format(name=name(server), ed25519_blob=other_key(tmp_path).split()[1])
    if kind == "unreadable":  # the key is on file too: only the unreadable revocation stops it
        line += "\n%s %s" % (name(server), server.host_public_key)
    ssh_env.known_hosts.write_text("# comment\n\n%s\n" % line)
    err = refused(ssh_env, server)
    assert err.kind == kind and not err.trustable
    assert "line 3" in str(err)


def test_damaged_lines_about_other_hosts_do_not_matter(ssh_env, caplog):
    """The host passes on its own line, at each connect; the lines that name no host are said
    once while they stay (the file is read at every connect, twice a hop), and once more when
    they are mended. Before: a warning a line, each read."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    server = ssh_env.new_server("fine")
    own = ("%s %s\n" % (name(server), server.host_public_key)).encode()
    ssh_env.known_hosts.write_bytes(
        b"this line is damaged\n@bogus-marker x ssh-ed25519 AAAA\n@revoked\nother.example "
        b"ssh-ed25519 !!\n\xff\xfe garbage\n" + own)
    for _ in range(3):
        connect(ssh_env, server).close()
    ssh_env.known_hosts.write_bytes(own)
    connect(ssh_env, server).close()
    said = [r.getMessage() for r in caplog.records if "passed over" in r.getMessage()
            or "every line is read" in r.getMessage()]
    assert len(said) == 2, said
    assert said[0] == "known_hosts %s: passed over: line 2: unknown marker @bogus-marker; " \
        "line 3: no host field" % ssh_env.known_hosts, said
    assert said[1].startswith("known_hosts %s: every line is read after " %
                              ssh_env.known_hosts), said


def test_each_jump_host_is_checked_the_same(ssh_env, tmp_path):
    jump = ssh_env.new_server("jump", key_types=("rsa",))
    target = ssh_env.new_server("target")
    ssh_env.known_hosts.write_text("%s %s\n%s %s\n" % (
        name(jump), other_key(tmp_path), name(target), target.host_public_key))
    err = refused(ssh_env, target, proxy_jump="root@%s:%d" % (sshd.LOOPBACK, jump.port))
    assert err.kind == "changed" and err.name == name(jump)
    ssh_env.known_hosts.write_text("%s %s\n%s %s\n" % (
        name(jump), jump.host_public_key, name(target), other_key(tmp_path, "rsa")))
    err = refused(ssh_env, target, proxy_jump="root@%s:%d" % (sshd.LOOPBACK, jump.port))
    assert err.kind == "changed" and err.name == name(target)


@pytest.fixture
def fleet_env(ssh_env, tmp_path):
    env = SshFleet(ssh_env, tmp_path)
    yield env
    env.stop()


def test_status_says_untrusted_and_trust_refuses_a_changed_key(fleet_env):
    """The issue's case: known by ed25519, the host now offers only RSA."""
    host = fleet_env.add("gpu-imp", None, trust=False, key_types=("rsa",))
    old = other_key(fleet_env.tmp)
    known = fleet_env.env.known_hosts
    known.write_text("# fleet\n[%s]:%d %s\n" % (sshd.LOOPBACK, host.port, old))
    before = known.read_text()
    status = fleet_env.status()["gpu-imp"]
    assert status["state"] == "untrusted" and "CHANGED" in status["error"]
    assert "ssh-rsa SHA256:" in status["error"] and "ssh-keygen -f" in status["error"]
    assert not Path(host.agent_cache).exists()  # nothing was sent to it
    refused = fleet_env.fractui("trust", "gpu-imp", "--yes")
    assert refused.returncode == 1, refused.stderr
    assert "CHANGED" in refused.stderr and "ssh-keygen -f %s -R" % known in refused.stderr
    assert "Traceback" not in refused.stderr
    assert known.read_text() == before
    doctor = fleet_env.fractui("doctor", "gpu-imp")
    assert doctor.returncode == 1 and "ssh-keygen -f %s -R" % known in doctor.stdout
    # removed on purpose, as the message says: then it is a new host, and trust takes it
    subprocess.run(["ssh-keygen", "-f", str(known), "-R", "[%s]:%d" % (
        sshd.LOOPBACK, host.port)], check=True, capture_output=True)
    trusted = fleet_env.fractui("trust", "gpu-imp", "--yes")
    assert trusted.returncode == 0, trusted.stderr
    assert "ssh-rsa" in known.read_text() and old not in known.read_text()


def test_trust_on_a_full_disk_adds_nothing_and_the_key_whole_once_there_is_room(
        fleet_env, small_fs):
    """known_hosts on a real filesystem filled to the last byte, with room in its last page
    for part of the line ``trust`` adds: exit 1 naming the file, the write cut short, and the
    free space read just after as the likely cause (said as the cause, ENOSPC, before: a quota
    reads so too), the part written a comment line; with room, the key is added and the host
    is reached. A line cut short names the host with no key it offers: the host then read
    CHANGED ("someone may be impersonating the host") and ``trust`` refused it for good."""
    known = small_fs / "known_hosts"
    known.write_text("# fleet\n%s\n" % ("#" * 4030))  # 57 bytes left in its one page
    before = known.read_bytes()
    fleet_env.env.known_hosts = known
    fleet_env.add("gpu-full", None, trust=False)
    filler = small_fs / "filler"
    fill(filler)
    refused = fleet_env.fractui("trust", "gpu-full", "--yes")
    assert refused.returncode == 1, refused.stderr
    said = re.fullmatch(r"fractui: gpu-full: its key is not added to (.*): the write was cut "
                        r"short, 57 bytes of (\d+) written, its cause not said \(its "
                        r"filesystem, read just after, has no room left: the likely cause\)\n",
                        refused.stderr)
    assert said and said.group(1) == str(known), refused.stderr
    refused_left = known.read_bytes()
    assert refused_left == before + b"\n" + b"#" * 55 + b"\n"  # (the page's 57 bytes)
    filler.unlink()  # room again
    trusted = fleet_env.fractui("trust", "gpu-full", "--yes")
    assert trusted.returncode == 0, trusted.stderr
    assert known.read_bytes().startswith(refused_left)
    assert known.read_bytes().count(b"\n") == refused_left.count(b"\n") + 1
    assert fleet_env.status()["gpu-full"]["state"] in ("online", "degraded")


# One of the processes the next tests start: it adds ``count`` lines named ``who``-N once the
# test closes its stdin, and prints which it added. A failing one is refused every byte it
# writes (a file size limit of 1 byte: EFBIG, as a full disk's ENOSPC). A limited one may write
# 10 bytes past the file's size, and is killed by the kernel (SIGXFSZ) if it writes more; it
# prints each error it met. A
# racing one is limited, and the instant its write returns, an ``ssh`` (a shell's ``>>``, no
# file size limit) appends a line "ssh-0 KEY" after the part it wrote.
APPENDER = """
import json, os, resource, signal, subprocess, sys
import paramiko
from fractui.fleet.hostkeys import KnownHosts
path, key_file, who, count, failing = sys.argv[1:]
known, key = KnownHosts(path), paramiko.Ed25519Key(filename=key_file)
if failing == "yes":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, 1))
if failing in ("limited", "racing"):
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # (Python's own start ignores it)
    limit = os.path.getsize(path) + 10
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
def ssh_appends(frame, event, arg):
    if event == "c_return" and arg is os.write:
        sys.setprofile(None)
        line = "ssh-0 %s %s" % (key.get_name(), key.get_base64())
        subprocess.run(["sh", "-c", 'echo "$2" >> "$1"', "sh", path, line], check=True,
                       preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard)))
if failing == "racing":
    sys.setprofile(ssh_appends)
print("ready", flush=True)
sys.stdin.read()
added = []
for i in range(int(count)):
    try:
        known.append("%s-%d" % (who, i), key)
        added.append(i)
    except OSError as err:
        assert failing in ("yes", "limited", "racing"), err
        if failing != "yes":
            print(err)
print(json.dumps(added))
"""


def appender(known: Path, key: Path, who: str, count: int,
             failing: str = "no") -> subprocess.Popen:
    """A process running APPENDER, its stdin and stdout pipes."""
    return subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(known), str(key), who, str(count), failing],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO))


# What OpenSSH's ssh does to add a host (StrictHostKeyChecking=accept-new, or a "yes"): open
# known_hosts to append, one line, close; no lock of fractui's. ``count`` lines, once stdin ends.
OPENSSH_APPENDER = """
echo ready
cat >/dev/null
i=0
while [ "$i" -lt "$2" ]; do
    echo "ssh-$i $3" >> "$1"
    i=$((i + 1))
done
echo '"done"'
"""


def test_appends_at_once_lose_no_line_though_one_of_them_fails(small_fs, tmp_path):
    """Three processes adding lines for distinct hosts to one known_hosts at once (started
    together: each waits on its stdin, closed for all of them when all are ready) while a
    fourth's writes fail, and a fifth appends as OpenSSH's ssh does, taking no lock of ours.
    Every line the others were told was added is there, whole, once. When trust wrote the
    file anew and renamed it over the old one, a line ssh appended meanwhile was lost (and,
    without the lock beside the file, one of another trust's)."""
    known = small_fs / "known_hosts"  # (a tmpfs: the appends' fsyncs cost nothing)
    known.write_text("# fleet\n")
    key = tmp_path / "key" / "id"
    sshd._keygen(key, "a-host")
    count = 1000
    pub = sshd.public_key_line(key)
    writers = {who: appender(known, key, who, count, "yes" if who == "failing" else "no")
               for who in ("failing", "a", "b", "c")}
    writers["ssh"] = subprocess.Popen(
        ["sh", "-c", OPENSSH_APPENDER, "sh", str(known), str(count), pub],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    for writer in writers.values():
        assert writer.stdout.readline() == "ready\n"
    for writer in writers.values():
        writer.stdin.close()
    added = {}
    for who, writer in writers.items():
        assert writer.wait(120) == 0
        added[who] = json.loads(writer.stdout.read())
        writer.stdout.close()
    assert added == {"failing": [], "ssh": "done",
                     **{who: list(range(count)) for who in "abc"}}
    want = ["# fleet"] + ["%s-%d %s" % (who, i, pub) for who in ("a", "b", "c", "ssh")
                          for i in range(count)]
    # (a blank line, which every reader passes over, where a writer saw another's line half
    # written and began its own with a newline, as OpenSSH's ssh does)
    assert sorted(line for line in known.read_text().split("\n") if line) == sorted(want)
    assert known.read_text().endswith("\n")


@pytest.mark.parametrize("link", ["a hard link", "a symlink of ours"])
def test_trust_writes_known_hosts_through_its_links_and_leaves_nothing_beside_it(
        tmp_path, link):
    """A known_hosts that is a hard link (or a symlink a dotfiles manager made) is written,
    not replaced: the line is seen under every name of the file, the link is still one, and
    no lock or temporary file is left beside it. Before, the file was written anew and renamed
    over the old one, which broke a hard link, and left a lock file beside it."""
    folder, dotfiles = tmp_path / "ssh", tmp_path / "dotfiles"
    for path in (folder, dotfiles):
        path.mkdir(mode=0o700)
    known, kept = folder / "known_hosts", dotfiles / "known_hosts"
    kept.write_text("# fleet\n")
    if link == "a hard link":
        os.link(kept, known)
    else:
        known.symlink_to(kept)
    key = tmp_path / "key" / "id"
    sshd._keygen(key, "a-host")
    KnownHosts(str(known)).append("gpu-new", paramiko.Ed25519Key(filename=str(key)))
    want = "# fleet\ngpu-new %s\n" % sshd.public_key_line(key)
    assert (known.read_text(), kept.read_text()) == (want, want)
    assert known.is_symlink() if link == "a symlink of ours" else \
        os.path.samefile(known, kept) and kept.stat().st_nlink == 2
    assert (os.listdir(folder), os.listdir(dotfiles)) == (["known_hosts"], ["known_hosts"])


# What a line cut short 10 bytes in is left as: a comment line, in the bytes it took
CUT_SHORT = "\n########\n"
# What a limited APPENDER says of a known_hosts of "# fleet\n" (8 bytes), 10 bytes past it
AT_LIMIT = "[Errno 27] File too large: this process's file size limit, 18 bytes"


def known_hosts_and_key(tmp_path: Path) -> Tuple[Path, Path]:
    """A known_hosts of one comment line in a private folder, and a key pair to trust."""
    folder = tmp_path / "ssh"
    folder.mkdir(mode=0o700)
    known = folder / "known_hosts"
    known.write_text("# fleet\n")
    key = tmp_path / "key" / "id"
    sshd._keygen(key, "a-host")
    return known, key


def test_a_trust_cut_short_while_writing_leaves_known_hosts_whole(tmp_path):
    """A write of the line cut short (here at the process's file size limit, 10 bytes in; as
    well a full disk) is made a comment line, and is not followed by one of the rest, at which
    the kernel would kill the process (SIGXFSZ) with part of the line written: a line cut short
    would name the host with no key it offers, which reads as CHANGED ("someone may be
    impersonating the host") and is never trustable. known_hosts' lines are as they were, its
    mode too."""
    known, key = known_hosts_and_key(tmp_path)
    known.chmod(0o644)  # OpenSSH's own mode for it
    limited = appender(known, key, "limited", 1, "limited")
    out, _ = limited.communicate(timeout=60)
    assert (limited.returncode, out) == (0, "ready\n%s\n[]\n" % AT_LIMIT)
    assert known.read_text() == "# fleet\n" + CUT_SHORT
    added = appender(known, key, "added", 1)
    out, _ = added.communicate(timeout=60)
    assert (added.returncode, out) == (0, "ready\n[0]\n")
    assert known.read_text() == "# fleet\n%sadded-0 %s\n" % (CUT_SHORT,
                                                              sshd.public_key_line(key))
    assert stat.S_IMODE(known.stat().st_mode) == 0o644
    assert os.listdir(known.parent) == ["known_hosts"]  # nothing beside it


def test_a_trust_cut_short_at_its_file_size_limit_on_a_full_disk_says_the_limit(small_fs,
                                                                               tmp_path):
    """A write cut short at the process's file size limit, on a filesystem that is full
    besides: EFBIG, which the limit says exactly. Before, the free space read after (none)
    was said as the cause: "No space left on device"."""
    known = small_fs / "known_hosts"
    known.write_text("# fleet\n")  # (its page has room for the 10 bytes the limit lets in)
    key = tmp_path / "key" / "id"
    sshd._keygen(key, "a-host")
    fill(small_fs / "filler")
    limited = appender(known, key, "limited", 1, "limited")
    out, _ = limited.communicate(timeout=60)
    assert (limited.returncode, out) == (0, "ready\n%s\n[]\n" % AT_LIMIT)
    assert known.read_text() == "# fleet\n" + CUT_SHORT


def test_a_trust_cut_short_keeps_the_line_another_writer_added_after_it(tmp_path):
    """A write cut short, then, before trust can take it back, an ``ssh`` appends its line
    after the part written: that line is kept whole, and the part is a comment line that ends
    before it. When trust truncated the file back to where its line began, the ssh's line went
    with it."""
    known, key = known_hosts_and_key(tmp_path)
    racing = appender(known, key, "racing", 1, "racing")
    out, _ = racing.communicate(timeout=60)
    assert (racing.returncode, out) == (0, "ready\n%s\n[]\n" % AT_LIMIT)
    assert known.read_text() == "# fleet\n%sssh-0 %s\n" % (CUT_SHORT,
                                                            sshd.public_key_line(key))
    assert [line.names for line in KnownHosts(str(known)).lines()] == ["ssh-0"]


def test_trusts_of_distinct_hosts_at_once_each_add_their_key(fleet_env, tmp_path):
    """Three `fractui trust --yes` processes at once, each of its own host behind a real sshd,
    into a known_hosts not there yet, in a folder not there yet (each process makes what is
    missing): every host's key is there once, the file and the lock beside it the admin's
    alone, nothing beside it. (Their failing test is test_appends_at_once_...: three processes
    seldom meet here.)"""
    names = ["gpu-t%d" % n for n in range(3)]
    for host in names:
        fleet_env.add(host, None, trust=False)
    known = tmp_path / "home" / ".ssh" / "known_hosts"
    fleet_env.env.known_hosts = known
    config = fleet_env.write_config()
    trusts = [subprocess.Popen([sys.executable, "-m", "fractui", "--config", config, "trust",
                                host, "--yes"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True, cwd=REPO)
              for host in names]
    for trust in trusts:
        out, err = trust.communicate(timeout=120)
        assert trust.returncode == 0, out + err
    want = ["[%s]:%d %s" % (sshd.LOOPBACK, fleet_env.proxies[host].port,
                            fleet_env.servers[host].host_public_key) for host in names]
    assert sorted(known.read_text().splitlines()) == sorted(want)
    assert os.listdir(known.parent) == ["known_hosts"]
    for path in (known, known.parent):
        st = path.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.getuid(), 0o700 if path.is_dir()
                                                          else 0o600), path


def test_a_known_hosts_that_is_not_a_regular_file_is_said_never_waited_on(fleet_env):
    """A FIFO with no writer in known_hosts' place would hold the host's connect for good:
    the host reads offline saying so, and trust and doctor end with it, exit 1."""
    fleet_env.add("gpu-fifo", None, trust=False)
    known = fleet_env.env.known_hosts
    known.unlink()
    os.mkfifo(known)
    said = "known_hosts %s: not a regular file: a FIFO" % known
    status = fleet_env.status()["gpu-fifo"]
    assert (status["state"], status["error"]) == ("offline", said), status
    for verb in ("trust", "doctor"):
        done = fleet_env.fractui(verb, "gpu-fifo", *(["--yes"] if verb == "trust" else []))
        assert done.returncode == 1 and said in done.stdout + done.stderr, (verb, done)
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize("attack", ["writable by all", "of another user"])
def test_a_known_hosts_another_user_could_change_vouches_for_no_host(fleet_env, attack):
    """known_hosts says which keys are the fleet's hosts: another user who could add a line
    could pass their machine off as one, and get the agent (run as root) sent to it."""
    fleet_env.add("gpu-kh", None, trust=True)
    known = fleet_env.env.known_hosts
    # ours: it vouches for the host (degraded: a sim host of a plain user, no MIG changes)
    assert fleet_env.status()["gpu-kh"]["state"] in ("online", "degraded")
    before = known.read_text()
    if attack == "writable by all":
        known.chmod(0o666)
        why = "writable by its group and all users (mode 0666)"
    else:
        os.chown(known, 54321, 54321)
        why = "owned by uid 54321, not by root or uid %d" % os.getuid()
    said = "known_hosts %s: refusing known_hosts file %s: %s is %s" % (known, known, known, why)
    status = fleet_env.status()["gpu-kh"]
    assert status["state"] == "offline" and status["error"].startswith(said), status
    for verb in ("trust", "doctor"):
        done = fleet_env.fractui(verb, "gpu-kh", *(["--yes"] if verb == "trust" else []))
        assert done.returncode == 1 and said in done.stdout + done.stderr, (verb, done)
        assert "Traceback" not in done.stderr
    assert known.read_text() == before  # nothing added to it


@pytest.mark.parametrize("attack", ["a folder all may write", "a folder of another user",
                                    "their link in a folder like /tmp", "none: a link of ours"])
def test_trust_adds_no_key_where_another_user_could_change_known_hosts(fleet_env, tmp_path,
                                                                       attack):
    """A known_hosts not there yet is made by trust, and no read has checked it: in a folder
    another user could write, they could add their machine as a host after, or have the line
    written through a link of theirs, wherever it points. A link of ours is followed."""
    fleet_env.add("gpu-new", None, trust=False)
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o755)
    known = folder / "known_hosts"
    fleet_env.env.known_hosts = known
    target = tmp_path / "elsewhere"
    if attack == "a folder all may write":
        folder.chmod(0o777)
        why = "%s is writable by its group and all users (mode 0777)" % folder
    elif attack == "a folder of another user":
        os.chown(folder, 54321, -1)
        why = "%s is owned by uid 54321, not by root or uid %d" % (folder, os.getuid())
    else:
        folder.chmod(0o1777)
        known.symlink_to(target)
        if attack == "none: a link of ours":
            trusted = fleet_env.fractui("trust", "gpu-new", "--yes")
            assert trusted.returncode == 0, trusted.stdout + trusted.stderr
            assert known.is_symlink() and "ssh-ed25519" in target.read_text()
            return
        os.lchown(known, 54321, -1)
        why = "it is reached through the symlink %s, owned by uid 54321" % known
    done = fleet_env.fractui("trust", "gpu-new", "--yes")
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "gpu-new: its key is not added: refusing known_hosts file %s: %s" % (
        known, why) in said, said
    assert "Traceback" not in done.stderr
    assert not target.exists() and (attack.startswith("their") or not known.exists())


def test_an_identity_file_that_is_not_a_regular_file_is_passed_over_never_read(
        ssh_env, tmp_path):
    """paramiko reads an identity file and its ``-cert.pub`` itself, and would wait for good on
    a FIFO: each such is passed over, named in what was tried."""
    server = ssh_env.new_server("fifo-key")
    ssh_env.known_hosts.write_text("%s %s\n" % (name(server), server.host_public_key))
    fifo = tmp_path / "id_fifo"
    os.mkfifo(fifo)
    key = tmp_path / "id_copy"
    key.write_bytes(ssh_env.user_key_path.read_bytes())
    key.chmod(0o600)
    os.mkfifo(str(key) + "-cert.pub")
    for path, special in ((fifo, fifo), (key, str(key) + "-cert.pub")):
        with pytest.raises(LinkError) as err:
            connect(ssh_env, server, identity_file=str(path)).close()
        assert "%s (not a regular file: a FIFO)" % special in str(err.value), str(err.value)
    connect(ssh_env, server).close()  # the key itself, beside no FIFO, still lets us in


def test_a_private_key_others_may_read_is_ignored_as_openssh_ignores_it(ssh_env, tmp_path):
    """OpenSSH ignores a key of ours that its mode lets others read ("UNPROTECTED PRIVATE KEY
    FILE"), so the admin learns it leaked; paramiko would use it without a word."""
    server = ssh_env.new_server("open-key")
    ssh_env.known_hosts.write_text("%s %s\n" % (name(server), server.host_public_key))
    key = tmp_path / "id_open"
    key.write_bytes(ssh_env.user_key_path.read_bytes())
    key.chmod(0o644)
    with pytest.raises(LinkError) as err:
        connect(ssh_env, server, identity_file=str(key)).close()
    assert "accepted none of our keys (tried: %s (unprotected: mode 0644 lets others read it, " \
        "so it is ignored as OpenSSH ignores it; fix it with: chmod 600 %s)" % (key, key) in \
        str(err.value), str(err.value)
    key.chmod(0o600)
    connect(ssh_env, server, identity_file=str(key)).close()  # once fixed, it lets us in


def test_an_identity_file_paramiko_cannot_use_is_named_with_why_never_a_traceback(
        ssh_env, tmp_path):
    """An admin's identity file may be a DSA key (paramiko reads none since 4.0, nor OpenSSH
    since 10), a FIDO ``-sk`` key (paramiko reads none) or one protected by a passphrase
    (fractui asks for none): each is passed over, named in what was tried with what to do, as
    a key the host refuses is."""
    server = ssh_env.new_server("odd-keys")
    ssh_env.known_hosts.write_text("%s %s\n" % (name(server), server.host_public_key))
    dsa_key = tmp_path / "id_dsa"
    dsa_key.write_bytes(dsa.generate_private_key(1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    sk_key = tmp_path / "id_ed25519_sk"  # an ed25519 key's file, its type named as an -sk's
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()).decode().splitlines()
    body = base64.b64decode("".join(pem[1:-1])).replace(
        b"\x00\x00\x00\x0bssh-ed25519", b"\x00\x00\x00\x1ask-ssh-ed25519@openssh.com")
    sk_key.write_text("%s\n%s%s\n" % (pem[0], base64.encodebytes(body).decode(), pem[-1]))
    locked = tmp_path / "id_locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f",
                    str(locked)], check=True)
    for key, why in ((dsa_key, "a DSA key, which paramiko does not read: use an ed25519, "
                               "ECDSA or RSA key"),
                     (sk_key, "sk-ssh-ed25519 private keys cannot be loaded: use an ed25519, "
                              "ECDSA or RSA key"),
                     (locked, "protected by a passphrase, which fractui does not ask for: "
                              "add it to an ssh-agent (ssh-add %s)" % locked)):
        key.chmod(0o600)
        with pytest.raises(LinkError) as err:
            connect(ssh_env, server, identity_file=str(key)).close()
        assert "accepted none of our keys (tried: %s (%s)" % (key, why) in str(err.value), \
            str(err.value)


def test_a_dsa_identity_file_reads_the_host_offline_with_why_and_nothing_else_said(
        fleet_env, tmp_path):
    """``status`` of a host whose identity file is an admin's old DSA key (as ``ssh-keygen -t
    dsa`` wrote it): the host's error names the key and what to do, and stderr holds nothing,
    no library's warning of DSA either (fractui says it, once, in its own words)."""
    key = tmp_path / "id_dsa"
    with warnings.catch_warnings():  # (cryptography's own, as it writes one: not fractui's)
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        key.write_bytes(dsa.generate_private_key(1024).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption()))
    key.chmod(0o600)
    fleet_env.add("gpu-dsa", "1xL4", identity_file=str(key))
    done = fleet_env.fractui("status", "--json")
    host = json.loads(done.stdout)["hosts"][0]
    assert host["state"] == "offline" and "%s (a DSA key, which paramiko does not read: " \
        "use an ed25519, ECDSA or RSA key)" % key in host["error"], host
    assert done.stderr == ""


NOBODY = 65534  # a real user of the machine, to run another user's ssh-agent as


def ssh_add(sock: Path, *words: str) -> None:
    """OpenSSH's ``ssh-add WORDS`` on the agent at ``sock``."""
    subprocess.run(["ssh-add", *words], check=True, capture_output=True,
                   env=dict(os.environ, SSH_AUTH_SOCK=str(sock)))


@pytest.fixture
def agents(ssh_env, monkeypatch):
    """Starts real ssh-agents holding the test's user key (``start(path, as_uid)``), each
    named by $SSH_AUTH_SOCK; stopped at teardown."""
    started = []

    def start(path: Path, as_uid: int = 0) -> Path:
        agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(path)], stdout=subprocess.PIPE,
                                 text=True, user=as_uid, group=as_uid,
                                 stderr=subprocess.DEVNULL)
        started.append(agent)
        assert agent.stdout.readline().startswith("SSH_AUTH_SOCK=%s;" % path)  # listening
        ssh_add(path, str(ssh_env.user_key_path))
        monkeypatch.setenv("SSH_AUTH_SOCK", str(path))
        return path

    yield start
    for agent in started:
        agent.terminate()
        agent.wait(30)
        agent.stdout.close()


AGENT_ATTACKS = ["a socket of another user", "a folder all may write",
                 "a listener of another user", "a link of another user"]


@pytest.mark.parametrize("attack", AGENT_ATTACKS)
def test_an_ssh_agent_another_user_could_answer_is_never_asked(ssh_env, agents, tmp_path,
                                                               monkeypatch, caplog, attack):
    """An ssh-agent signs with the keys it holds for whoever asks, and learns which keys we use
    and when: one another user answers could sign as us, or watch us. $SSH_AUTH_SOCK naming a
    socket another user owns or listens on, or one in a folder (or through a link) another
    user could change, is not used: each agent here holds the key that lets us in, so using
    it would connect. Said once in the log, and in what was tried. One of ours is used."""
    server = ssh_env.new_server("agent")
    ssh_env.known_hosts.write_text("%s %s\n" % (name(server), server.host_public_key))
    no_key = str(tmp_path / "no-such-key")  # so the agent alone could let us in
    folder = tmp_path / "ssh-agent"
    folder.mkdir(mode=0o700)
    sock = agents(folder / "sock")
    sock.chmod(0o777)  # (who may connect to it is its folder's to say, 0700 here)
    connect(ssh_env, server, identity_file=no_key).close()  # ours: used
    what = "refusing ssh-agent socket (SSH_AUTH_SOCK) %s: " % sock
    if attack == "a socket of another user":
        os.chown(sock, NOBODY, NOBODY)
        why = "%s is owned by uid %d, not by uid %d (the user fractui runs as)" % (
            sock, NOBODY, os.getuid())
    elif attack == "a folder all may write":
        folder.chmod(0o777)
        why = "%s is writable by its group and all users (mode 0777)" % folder
    elif attack == "a listener of another user":
        # their agent, bound in a folder of theirs, then moved into ours and made root's:
        # only the kernel's word on who listens tells it from ours
        theirs = Path(tempfile.mkdtemp(dir="/tmp"))
        os.chown(theirs, NOBODY, NOBODY)
        try:
            agents(theirs / "sock", NOBODY)
            sock = folder / "theirs"
            os.rename(theirs / "sock", sock)
        finally:
            theirs.rmdir()
        os.chown(sock, os.getuid(), os.getgid())
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        what = "refusing ssh-agent socket (SSH_AUTH_SOCK) %s: the process listening on it " \
            "(pid " % sock
        why = ") is uid %d's, not uid %d's (the user fractui runs as)" % (NOBODY, os.getuid())
    else:
        link = tmp_path / "link"
        link.symlink_to(sock)
        os.lchown(link, NOBODY, NOBODY)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(link))
        what = "refusing ssh-agent socket (SSH_AUTH_SOCK) %s: " % link
        why = "it is reached through the symlink %s, owned by uid %d" % (link, NOBODY)
    caplog.set_level(logging.INFO, logger="fractui.fleet")
    for _ in range(2):
        with pytest.raises(LinkError) as err:
            connect(ssh_env, server, identity_file=no_key).close()
        assert "accepted none of our keys (tried: %s (" % no_key in str(err.value)
        tried = str(err.value).split(", ssh-agent (", 1)[-1]
        assert tried.startswith(what) and why in tried, str(err.value)
    said = [r.getMessage() for r in caplog.records if what in r.getMessage()]
    assert len(said) == 1 and said[0].endswith("; its keys are not used"), said


def test_an_ssh_agent_of_a_user_whose_uid_is_past_2_to_the_31_is_used(agents):
    """A uid is unsigned (uid_t): sites whose directory maps users to uids past 2**31 exist.
    The kernel's word on who listens (SO_PEERCRED) is read so, and such a user's own agent is
    theirs. Before, the uid was read as a signed int, negative, and their agent was refused
    as another user's. (Root here takes that uid as its effective one for the check.)"""
    if os.geteuid() != 0:
        pytest.skip("needs root, to be a user whose uid is past 2**31")
    big = 3000000000
    folder = Path(tempfile.mkdtemp(dir="/tmp"))  # (a test's tmp_path is root's alone)
    try:
        os.chown(folder, big, big)
        sock = agents(folder / "sock", big)
        os.seteuid(big)
        try:
            agent_connection(str(sock), 5.0).close()
        finally:
            os.seteuid(0)
    finally:
        shutil.rmtree(folder)


def test_an_ssh_auth_sock_that_names_no_agent_is_said_in_what_was_tried(ssh_env, tmp_path,
                                                                        monkeypatch):
    """An agent gone (its variable left behind in a shell) is said, not passed over unsaid as
    paramiko does: the admin learns why the keys they added are not offered."""
    server = ssh_env.new_server("gone-agent")
    ssh_env.known_hosts.write_text("%s %s\n" % (name(server), server.host_public_key))
    gone = tmp_path / "agent.gone"
    monkeypatch.setenv("SSH_AUTH_SOCK", str(gone))
    with pytest.raises(LinkError) as err:
        connect(ssh_env, server, identity_file=str(tmp_path / "no-such-key")).close()
    assert str(err.value).endswith(
        ", ssh-agent (SSH_AUTH_SOCK %s: No such file or directory))" % gone), str(err.value)


def _in_a_thread(call) -> BaseException:
    """What ``call`` raised, run on a thread waited on for a minute: a call that waits
    without a bound fails the test rather than hanging the suite."""
    caught = []

    def run() -> None:
        try:
            call()
        except BaseException as err:  # (handed to the test, which checks it)
            caught.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "still waiting, with no bound"
    assert caught, "the connect did not fail"
    return caught[0]


def _frozen_agent(path: Path, answer_list: Optional[bytes] = None) -> socket.socket:
    """A socket at ``path`` that takes connections and never answers (an ssh-agent stopped
    with SIGSTOP, or wedged): with ``answer_list``, one connection is taken, its request for
    keys answered so, and then nothing more (a freeze between listing and signing)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(0)  # one connection waits unaccepted; a second's connect waits for room
    if answer_list is not None:
        def serve() -> None:
            conn, _ = listener.accept()
            size = struct.unpack(">I", conn.recv(4))[0]
            conn.recv(size)
            conn.sendall(struct.pack(">I", len(answer_list)) + answer_list)
            while conn.recv(65536):  # the sign request, never answered, till the link ends
                pass
            conn.close()
        threading.Thread(target=serve, daemon=True).start()
    return listener


def test_a_frozen_ssh_agent_is_said_and_the_other_keys_are_tried(ssh_env, tmp_path,
                                                               monkeypatch):
    """An agent that takes the connection and never answers held the connect for good, and
    with it the host's thread. Each wait on it has the connect timeout: the key that lets us
    in still does; where none does, what was tried says the agent did not answer. The second
    connect meets an agent whose backlog is full, so its connect to the socket waits too."""
    server = ssh_env.new_server("frozen-agent")
    ssh_env.known_hosts.write_text("%s %s\n" % (name(server), server.host_public_key))
    sock = tmp_path / "agent.sock"
    listener = _frozen_agent(sock)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
    try:
        no_key = str(tmp_path / "no-such-key")
        for said in ("did not answer within 2 s",
                     "takes no more connections: it accepts none of those waiting; is it "
                     "stopped?"):
            err = _in_a_thread(lambda: connect(ssh_env, server, timeout_s=STALL_S,
                                               identity_file=no_key).close())
            assert isinstance(err, LinkError), repr(err)
            assert str(err).endswith(", ssh-agent (ssh-agent at %s %s))" % (sock, said)), err
        connect(ssh_env, server).close()  # its own key: the agent is never asked
    finally:
        listener.close()


def test_an_ssh_agent_key_paramiko_cannot_read_is_named_in_what_was_tried(ssh_env, tmp_path,
                                                                        monkeypatch):
    """A key the agent holds that paramiko does not read (a FIDO ``-sk`` key here) is passed
    over and said, with its comment; paramiko's own client offered it to the server all the
    same, and asked the agent to sign with it."""
    server = ssh_env.new_server("sk-agent")
    ssh_env.known_hosts.write_text("%s %s\n" % (name(server), server.host_public_key))
    blob = paramiko.Message()
    blob.add_string("sk-ssh-ed25519@openssh.com")
    blob.add_string(b"\x01" * 32)
    blob.add_string("ssh:")
    answer = paramiko.Message()
    answer.add_byte(bytes([12]))  # SSH2_AGENT_IDENTITIES_ANSWER, one key
    answer.add_int(1)
    answer.add_string(blob.asbytes())
    answer.add_string("yubikey")
    sock = tmp_path / "agent.sock"
    listener = _frozen_agent(sock, answer.asbytes())
    monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
    try:
        with pytest.raises(LinkError) as err:
            connect(ssh_env, server, identity_file=str(tmp_path / "no-such-key")).close()
        assert str(err.value).endswith(", ssh-agent key yubikey (a sk-ssh-ed25519@openssh.com "
                                       "key, which paramiko does not read))"), str(err.value)
    finally:
        listener.close()


def test_an_ssh_agent_answer_listing_more_keys_than_it_holds_is_said_never_looped_on(
        ssh_env, tmp_path, monkeypatch):
    """An answer that says it lists 2**32 - 1 keys and holds none: each missing key was read
    as an empty one, said in what was tried, for hours and without a bound on memory."""
    server = ssh_env.new_server("lying-agent")
    ssh_env.known_hosts.write_text("%s %s\n" % (name(server), server.host_public_key))
    sock = tmp_path / "agent.sock"
    listener = _frozen_agent(sock, bytes([12]) + struct.pack(">I", 2**32 - 1))
    monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
    try:
        no_key = str(tmp_path / "no-such-key")
        err = _in_a_thread(lambda: connect(ssh_env, server, identity_file=no_key).close())
        assert str(err).endswith(", ssh-agent (ssh-agent at %s listed 4294967295 keys in an "
                                 "answer of 5 bytes: not an agent's))" % sock), str(err)
    finally:
        listener.close()


def test_an_ssh_agent_that_freezes_before_signing_ends_the_connect_saying_so(
        ssh_env, tmp_path, monkeypatch):
    """The agent lists its key, then never signs: the signature is asked for on the link's
    own thread, which waited for good; now the connect ends naming the agent and the wait."""
    server = ssh_env.new_server("frozen-sign")
    ssh_env.known_hosts.write_text("%s %s\n" % (name(server), server.host_public_key))
    blob = base64.b64decode(ssh_env.user_pubkey.split()[1])
    answer = paramiko.Message()
    answer.add_byte(bytes([12]))  # SSH2_AGENT_IDENTITIES_ANSWER, one key
    answer.add_int(1)
    answer.add_string(blob)
    answer.add_string("the user's key")
    sock = tmp_path / "agent.sock"
    listener = _frozen_agent(sock, answer.asbytes())
    monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
    try:
        no_key = str(tmp_path / "no-such-key")
        err = _in_a_thread(lambda: connect(ssh_env, server, timeout_s=STALL_S,
                                           identity_file=no_key).close())
        assert isinstance(err, LinkError), repr(err)
        assert str(err).startswith(
            "root@%s:%d: the link ended waiting on the ssh-agent: ssh-agent at %s did not "
            "answer within 2 s (tried before: %s (" % (sshd.LOOPBACK, server.port, sock, no_key)
        ), str(err)
    finally:
        listener.close()


def test_a_key_the_ssh_agent_refuses_to_sign_with_is_passed_over_for_the_next(
        ssh_env, agents, tmp_path, monkeypatch):
    """An agent refuses to sign with a key added ``ssh-add -c`` whose use no one confirmed
    (its askpass fails here). The signature is asked for on the link's own thread, where the
    refusal ended the link; now the next key is tried, as OpenSSH's ``ssh`` tries it, and the
    refused key is said in what was tried."""
    server = ssh_env.new_server("refused-sign")
    ssh_env.known_hosts.write_text("%s %s\n" % (name(server), server.host_public_key))
    monkeypatch.setenv("SSH_ASKPASS", "/bin/false")
    monkeypatch.delenv("DISPLAY", raising=False)
    sock = agents(tmp_path / "agent.sock")

    other = tmp_path / "other" / "key"
    sshd._keygen(other, "to-confirm", "rsa")
    ssh_add(sock, "-D")
    ssh_add(sock, "-c", str(other))  # listed first, so asked first
    ssh_add(sock, str(ssh_env.user_key_path))
    no_key = str(tmp_path / "no-such-key")
    link = connect(ssh_env, server, identity_file=no_key)
    assert link.run(["echo", "in"])[:2] == (0, "in\n")
    link.close()
    ssh_add(sock, "-D")
    ssh_add(sock, "-c", str(ssh_env.user_key_path))  # the one key that lets us in, refused
    with pytest.raises(LinkError) as err:
        connect(ssh_env, server, identity_file=no_key).close()
    user_key = paramiko.PKey.from_path(str(ssh_env.user_key_path))
    assert str(err.value).endswith(", ssh-agent key %s (the ssh-agent refused to sign with "
                                   "it))" % user_key.fingerprint), str(err.value)


@pytest.mark.parametrize("key_type", ["ed25519", "rsa"])
def test_a_certificate_in_the_ssh_agent_lets_us_in_where_its_authority_is_trusted(
        ssh_env, agents, tmp_path, key_type):
    """``ssh-add`` adds a key's certificate beside it; a server that trusts the certificate's
    authority, and not the key, lets OpenSSH's ``ssh`` in with it, and now fractui: an ed25519
    certificate was passed over as a key paramiko does not read, and an RSA one offered under
    the plain key's algorithm, which the server refuses."""
    server = ssh_env.new_server("cert-agent")
    ssh_env.known_hosts.write_text("%s %s\n" % (name(server), server.host_public_key))
    sock = agents(tmp_path / "agent.sock")
    authority, key = tmp_path / "ca" / "key", tmp_path / "certified" / "key"
    sshd._keygen(authority, "authority", "ed25519")
    sshd._keygen(key, "certified", key_type)
    subprocess.run(["ssh-keygen", "-q", "-s", str(authority), "-I", "certified", "-n", "root",
                    "%s.pub" % key], check=True, capture_output=True)
    ssh_add(sock, "-D")
    ssh_add(sock, str(key))  # the key and its certificate
    server.authorized_keys_path.write_text(
        "cert-authority %s\n" % sshd.public_key_line(authority))
    link = connect(ssh_env, server, identity_file=str(tmp_path / "no-such-key"))
    assert link.run(["echo", "in"])[:2] == (0, "in\n")
    link.close()


def test_a_link_that_stalls_as_a_command_starts_ends_saying_so(ssh_env):
    """The server's answer to the request that starts a command never comes (the proxy holds
    everything coming down once the request, padded past what the connect sent, went up):
    paramiko waited for it for good, and with it the host's thread. Now the wait has the
    connect timeout, and the link is closed. (SFTP's start is the same wait.)"""
    server = ssh_env.new_server("stall")
    proxy = ssh_env.proxy(server.port)
    ssh_env.known_hosts.write_text("[%s]:%d %s\n" % (sshd.LOOPBACK, proxy.port,
                                                     server.host_public_key))
    proxy.hold_down_after(32000)
    link = connect(ssh_env, server, timeout_s=STALL_S, port=proxy.port)
    err = _in_a_thread(lambda: link.exec(["true", "x" * 48000]))
    assert str(err) == "%s:%d: cannot start true: no answer within 2 s; the link is closed" % (
        sshd.LOOPBACK, proxy.port), str(err)
    assert isinstance(err, LinkError) and not link.alive and proxy.holding.is_set()


def uploader(env: sshd.SshEnv, tmp_path: Path, port: int) -> SshTransport:
    """gpu-k's transport by ``port``, its agent_cache ``tmp_path/cache``, the connect timeout
    (which bounds each SFTP answer) ``STALL_S``: these tests wait it out."""
    host = HostConfig(name="gpu-k", host=sshd.LOOPBACK, port=port, user="root",
                      identity_file=str(env.user_key_path), agent_cache=str(tmp_path / "cache"))
    return SshTransport(host, SshSettings(known_hosts=str(env.known_hosts),
                                          connect_timeout=STALL_S,
                                          config_file=str(tmp_path / "no-ssh-config")))


def test_an_agent_upload_whose_answers_stop_coming_says_so_and_uses_nothing_half_sent(
        ssh_env, tmp_path):
    """The link stalls part way through the agent's upload (the proxy holds everything coming
    down once 100 kB went up): SFTP's wait for an answer ends at the connect timeout, and the
    failure says that, not that the cache is not writable (with no reason: the timeout's
    words are none). The part sent is never the agent, and the next deploy puts it whole."""
    server = ssh_env.new_server("stall-upload")
    proxy = ssh_env.proxy(server.port)
    ssh_env.known_hosts.write_text("[%s]:%d %s\n" % (sshd.LOOPBACK, proxy.port,
                                                     server.host_public_key))
    cache = tmp_path / "cache"
    transport = uploader(ssh_env, tmp_path, proxy.port)
    archive = build_agent_archive()
    proxy.hold_down_after(100000)
    for stalls in (True, False):
        transport.open()
        try:
            if stalls:
                err = _in_a_thread(lambda: transport.deploy(archive))
            else:
                assert transport.deploy(archive) == ("%s/%s" % (cache, archive.name), True)
        finally:
            transport.close()
        if stalls:
            assert str(err) == "cannot put the agent in %s on gpu-k: no answer from SFTP " \
                "within 2 s" % cache, str(err)
            assert isinstance(err, AgentProcessError) and proxy.holding.is_set()
            assert not (cache / archive.name).exists()
            proxy.hold_down_after(None)
    assert (cache / archive.name).read_bytes() == archive.data


def test_agents_left_half_uploaded_are_removed_at_the_next_upload_and_only_they(
        ssh_env, tmp_path, caplog):
    """An upload cut short (the link stalls) leaves its partial in agent_cache; the next
    upload removes it, said in the log, and leaves what is not such a partial of the login
    user's: a file of another user's of that name, one of another name, a link. Before:
    nothing removed them, and a link that drops often filled the folder."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    server = ssh_env.new_server("stale-parts")
    proxy = ssh_env.proxy(server.port)
    for port in (proxy.port, server.port):
        ssh_env.trust(server, port)
    cache = tmp_path / "cache"
    archive = build_agent_archive()
    proxy.hold_down_after(100000)
    transport = uploader(ssh_env, tmp_path, proxy.port)
    transport.open()
    try:
        assert isinstance(_in_a_thread(lambda: transport.deploy(archive)), AgentProcessError)
    finally:
        transport.close()
    [left] = [p.name for p in cache.iterdir()]
    assert left.startswith(archive.name + ".part-"), left
    others = cache / ("agent-%s.pyz.part-0123abcd" % ("0" * 16))
    others.write_bytes(b"half")
    os.chown(others, 65534, 65534)
    kept = [others, cache / ("%s.part-x" % archive.name), cache / "notes.part-0123abcd"]
    kept[1].write_bytes(b"mine")
    kept[2].write_bytes(b"mine")
    kept.append(cache / ("agent-%s.pyz.part-4567cdef" % ("1" * 16)))
    kept[3].symlink_to(cache / left)
    stuck = cache / ("agent-%s.pyz.part-89abcdef" % ("2" * 16))  # ours, but not removable:
    stuck.write_bytes(b"half")  # said and left, the upload goes on
    kept.append(stuck)
    subprocess.run(["chattr", "+i", str(stuck)], check=True)
    # (not through the proxy: still armed, it would hold this upload too)
    transport = uploader(ssh_env, tmp_path, server.port)
    transport.open()
    try:
        assert transport.deploy(archive) == ("%s/%s" % (cache, archive.name), True)
    finally:
        transport.close()
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [archive.name] + [p.name for p in kept])
    assert (cache / archive.name).read_bytes() == archive.data
    removed = [r.getMessage() for r in caplog.records if "half uploaded" in r.getMessage()]
    said_stuck = [line for line in removed if line.startswith("gpu-k: cannot remove ")]
    assert len(said_stuck) == 1 and said_stuck[0].startswith(
        "gpu-k: cannot remove %s, an agent left half uploaded (" % stuck) and said_stuck[
        0].endswith("); it stays there, unused"), removed
    assert [line for line in removed if line not in said_stuck] == [
        "gpu-k: removed %s/%s, an agent left half uploaded" % (cache, left)], removed


def openssh(env: sshd.SshEnv, host: str, port: int) -> subprocess.CompletedProcess:
    """OpenSSH's own ssh to ``host``, strict, with the test's known_hosts and key only."""
    return subprocess.run(
        ["ssh", "-F", "none", "-p", str(port), "-l", "root", "-i", str(env.user_key_path),
         "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
         "-o", "IdentityAgent=none", "-o", "UserKnownHostsFile=%s" % env.known_hosts,
         "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", host, "true"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)


def test_a_key_known_for_one_address_family_is_unknown_under_another_name_as_for_openssh(
        ssh_env):
    """A server on both loopbacks, its key on file for [127.0.0.1]:PORT only. Reached as ::1
    or as localhost, OpenSSH looks the key up by the name dialled (CheckHostIP is off) and
    refuses it; so does fractui, as unknown, and says the same key is on file under the
    other name. On file for [::1]:PORT, both go in by ::1."""
    server = ssh_env.new_server("families", listen=(sshd.LOOPBACK, "::1"))
    ssh_env.known_hosts.write_text("%s %s\n" % (name(server), server.host_public_key))
    for host in ("::1", "localhost"):
        err = refused(ssh_env, server, host=host)
        assert err.kind == "unknown" and err.name == "[%s]:%d" % (host, server.port)
        assert ("%s holds this very key for %s (line 1): the same host under another name or "
                "address family? The key is looked up by the name dialled alone, as OpenSSH "
                "looks it up; check it, then run fractui trust gpu-k" % (
                    ssh_env.known_hosts, name(server))) in str(err), str(err)
        ran = openssh(ssh_env, host, server.port)
        assert ran.returncode == 255 and "Host key verification failed" in ran.stderr, ran
    ssh_env.known_hosts.write_text("[::1]:%d %s\n" % (server.port, server.host_public_key))
    connect(ssh_env, server, host="::1").close()
    ran = openssh(ssh_env, "::1", server.port)
    assert ran.returncode == 0, ran


def test_a_host_whose_sshd_listens_on_the_other_family_only_is_named_as_known_hosts_names_it(
        ssh_env):
    """sshd on 127.0.0.1 only, the host given as ::1: refused, and the address is written as
    known_hosts and OpenSSH write it ([::1]:PORT), not as ::1:PORT, which reads as a port of
    another address."""
    server = ssh_env.new_server("v4-only")
    with pytest.raises(LinkError) as err:
        connect(ssh_env, server, host="::1").close()
    assert str(err.value) == "cannot reach [::1]:%d: Connection refused" % server.port
