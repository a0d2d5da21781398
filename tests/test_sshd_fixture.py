"""The loopback sshd fixture itself: real OpenSSH, real paramiko, no fakes.

Later SSH tests trust these helpers to behave like a real fleet (host keys, jumps, broken
links, latency), so each of those behaviours is checked here first.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import List

import paramiko
import pytest

from tests import sshd
from tests.test_job_supervision import wait_until

# The fixture lives in tests/sshd.py; binding it here makes pytest find it in this module.
ssh_env = sshd.ssh_env


def run(client: paramiko.SSHClient, command: str) -> str:
    """Run ``command`` and return its stdout, failing on a non-zero exit."""
    _stdin, stdout, stderr = client.exec_command(command, timeout=5)
    out = stdout.read().decode()
    assert stdout.channel.recv_exit_status() == 0, stderr.read().decode()
    return out


def test_echo_with_trusted_host_key(ssh_env: sshd.SshEnv) -> None:
    server = ssh_env.new_server("a")
    ssh_env.trust(server)
    client = ssh_env.connect(server.port)
    assert run(client, "echo hi") == "hi\n"
    assert client.get_transport().get_remote_server_key() == server.host_key
    assert server.host_public_key.startswith("ssh-ed25519 AAAA")


def test_untrusted_host_key_is_rejected(ssh_env: sshd.SshEnv) -> None:
    server = ssh_env.new_server("a")
    assert ssh_env.known_hosts.read_text() == ""
    with pytest.raises(paramiko.SSHException):
        ssh_env.connect(server.port)


def test_changed_and_same_host_key(ssh_env: sshd.SshEnv) -> None:
    """A restart with a new key is a mismatch; with the old key it is the same host."""
    first = ssh_env.new_server("first")
    changed = ssh_env.new_server("changed")
    same = ssh_env.new_server("same", host_key=first.host_key_path)
    assert changed.host_public_key != first.host_public_key
    assert same.host_public_key == first.host_public_key
    ssh_env.trust(first, known_hosts_port=changed.port)
    ssh_env.trust(first, known_hosts_port=same.port)
    with pytest.raises(paramiko.BadHostKeyException):
        ssh_env.connect(changed.port)
    assert run(ssh_env.connect(same.port), "echo same") == "same\n"


def test_proxy_cut_and_restore(ssh_env: sshd.SshEnv) -> None:
    server = ssh_env.new_server("a")
    proxy = ssh_env.proxy(server.port)
    ssh_env.trust(server, known_hosts_port=proxy.port)
    client = ssh_env.connect(proxy.port)
    assert run(client, "echo hi") == "hi\n"

    chan = client.get_transport().open_session(timeout=5)
    chan.settimeout(3)
    chan.exec_command("cat")
    chan.sendall(b"ping\n")
    assert chan.recv(5) == b"ping\n"

    proxy.cut()
    try:
        assert chan.recv(1) == b""
    except (OSError, EOFError, paramiko.SSHException):
        pass
    with pytest.raises((OSError, paramiko.SSHException)):
        ssh_env.connect(proxy.port, timeout=2)

    proxy.restore()
    assert run(ssh_env.connect(proxy.port), "echo back") == "back\n"


def test_sftp_put_get(ssh_env: sshd.SshEnv, tmp_path: Path) -> None:
    server = ssh_env.new_server("a")
    ssh_env.trust(server)
    sftp = ssh_env.connect(server.port).open_sftp()
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(10000))
    remote = str(tmp_path / "remote.bin")
    sftp.put(str(src), remote)
    back = tmp_path / "back.bin"
    sftp.get(remote, str(back))
    sftp.close()
    assert back.read_bytes() == src.read_bytes()


def test_direct_tcpip_jump(ssh_env: sshd.SshEnv) -> None:
    """A channel from A to B's port carries a second SSH session: what ProxyJump does."""
    jump = ssh_env.new_server("jump")
    target = ssh_env.new_server("target")
    ssh_env.trust(jump)
    ssh_env.trust(target)
    jump_client = ssh_env.connect(jump.port)
    chan = jump_client.get_transport().open_channel(
        "direct-tcpip", (sshd.LOOPBACK, target.port), (sshd.LOOPBACK, 0), timeout=5)
    target_client = ssh_env.connect(target.port, sock=chan)
    assert target_client.get_transport().get_remote_server_key() == target.host_key
    assert run(target_client, "echo jumped") == "jumped\n"


def test_proxy_delay_slows_round_trip(ssh_env: sshd.SshEnv) -> None:
    server = ssh_env.new_server("a")
    proxy = ssh_env.proxy(server.port, delay_s=0.05)
    ssh_env.trust(server, known_hosts_port=proxy.port)
    client = ssh_env.connect(proxy.port)
    start = time.monotonic()
    assert run(client, "echo hi") == "hi\n"
    assert time.monotonic() - start >= 0.1


def test_proxy_delay_does_not_serialise_chunks() -> None:
    """Latency, not bandwidth: 20 chunks sent together arrive about one delay later, not one
    delay each (10 s here): the bound is half that, far from what a loaded machine adds."""
    listener = socket.socket()
    listener.bind((sshd.LOOPBACK, 0))
    listener.listen(1)
    received: List[bytes] = []

    def sink() -> None:
        conn, _ = listener.accept()
        conn.settimeout(5)
        with conn:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                received.append(data)

    thread = threading.Thread(target=sink, daemon=True)
    thread.start()
    delay_s = 0.5
    with sshd.CutProxy(listener.getsockname()[1], delay_s=delay_s) as proxy:
        start = time.monotonic()
        with socket.create_connection((sshd.LOOPBACK, proxy.port), timeout=5) as out:
            for i in range(20):
                out.sendall(b"%02d" % i)
                time.sleep(0.005)
        thread.join(timeout=30)
        elapsed = time.monotonic() - start
    listener.close()
    assert b"".join(received) == b"".join(b"%02d" % i for i in range(20))
    assert delay_s <= elapsed < 20 * delay_s / 2, elapsed


def _sleepers(marker: str) -> List[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_stop_ends_open_sessions(ssh_env: sshd.SshEnv) -> None:
    """stop() leaves no per-connection sshd or session behind, even with a client attached."""
    server = ssh_env.new_server("a")
    ssh_env.trust(server)
    client = ssh_env.connect(server.port)
    marker = "29.%d" % server.port
    client.exec_command("sleep %s" % marker)
    session = wait_until(lambda: [p for p in _sleepers(marker) if p in sshd.descendants(
        server.pid)], "the session's sleep to start")
    server.stop()
    assert not server.running
    # the session's own process, by its pid: a marker matched by chance in another test's
    # command line (a float of a time, in the other worker) is not this session's
    assert [p for p in session if sshd._alive(p)] == []
    with pytest.raises(OSError):
        socket.create_connection((sshd.LOOPBACK, server.port), timeout=1).close()
