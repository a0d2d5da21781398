"""An SSH link to one host, hop by hop, in the way the admin's own ssh would go.

Each hop is a paramiko Transport whose host key is checked against known_hosts before any
authentication; a later hop rides a ``direct-tcpip`` channel of the one before. Commands are built
from ``shlex.quote``d words, so nothing a user typed is ever read by a remote shell.
"""

from __future__ import annotations

import shlex
import socket
from typing import List, Optional, Sequence, Tuple

import paramiko

from fractui.fleet.hostkeys import KnownHosts
from fractui.fleet.sshconfig import Hop, Route

KEEPALIVE_S = 5


class LinkError(Exception):
    """The host cannot be reached or will not let us in; the message says which hop and why."""


def command_line(words: Sequence[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


def _authenticate(transport: paramiko.Transport, hop: Hop) -> None:
    tried: List[str] = []
    for path in hop.identity_files:
        try:
            key = paramiko.PKey.from_path(path)
        except (OSError, paramiko.SSHException) as err:
            tried.append("%s (%s)" % (path, err))
            continue
        try:
            transport.auth_publickey(hop.user, key)
            return
        except paramiko.AuthenticationException:
            tried.append(path)
    try:
        agent_keys = paramiko.Agent().get_keys()
    except paramiko.SSHException as err:
        agent_keys = ()
        tried.append("ssh-agent (%s)" % err)
    for key in agent_keys:
        try:
            transport.auth_publickey(hop.user, key)
            return
        except paramiko.AuthenticationException:
            tried.append("an ssh-agent key")
    raise LinkError("%s@%s:%d accepted none of our keys (tried: %s)" % (
        hop.user, hop.host, hop.port, ", ".join(tried) or "no keys: set identity_file"))


class SshLink:
    """Transports to every hop of a route; the last one is the host."""

    def __init__(self, route: Route, known_hosts: KnownHosts, timeout_s: float):
        self.route = route
        self.known_hosts = known_hosts
        self.timeout_s = timeout_s
        self.transports: List[paramiko.Transport] = []

    def connect(self) -> "SshLink":
        sock: Optional[object] = None
        try:
            hops = self.route.hops
            for i, hop in enumerate(hops):
                if sock is None:
                    try:
                        sock = socket.create_connection((hop.host, hop.port), self.timeout_s)
                    except OSError as err:
                        raise LinkError("cannot reach %s:%d: %s" % (hop.host, hop.port, err))
                transport = paramiko.Transport(sock)
                self.transports.append(transport)
                try:
                    transport.start_client(timeout=self.timeout_s)
                except (paramiko.SSHException, OSError, EOFError) as err:
                    raise LinkError("SSH handshake with %s:%d failed: %s" % (
                        hop.host, hop.port, err or type(err).__name__))
                self.known_hosts.check(hop.host, hop.port, transport.get_remote_server_key())
                _authenticate(transport, hop)
                transport.set_keepalive(KEEPALIVE_S)
                sock = None
                if i + 1 < len(hops):
                    nxt = hops[i + 1]
                    try:
                        sock = transport.open_channel("direct-tcpip", (nxt.host, nxt.port),
                                                      ("127.0.0.1", 0), timeout=self.timeout_s)
                    except (paramiko.SSHException, OSError) as err:
                        raise LinkError("jump host %s could not open a channel to %s:%d: %s" % (
                            hop.host, nxt.host, nxt.port, err))
        except BaseException:
            self.close()
            raise
        return self

    @property
    def transport(self) -> paramiko.Transport:
        return self.transports[-1]

    @property
    def alive(self) -> bool:
        return bool(self.transports) and self.transport.is_active()

    def exec(self, words: Sequence[str]) -> paramiko.Channel:
        """Start a command (quoted word by word) and return its channel."""
        channel = self.transport.open_session(timeout=self.timeout_s)
        channel.exec_command(command_line(words))
        return channel

    def run(self, words: Sequence[str], timeout_s: float = 30.0) -> Tuple[int, str, str]:
        """A short command to completion: (exit status, stdout, stderr)."""
        channel = self.exec(words)
        channel.settimeout(timeout_s)
        channel.shutdown_write()
        out = channel.makefile("rb").read().decode("utf-8", errors="replace")
        err = channel.makefile_stderr("rb").read().decode("utf-8", errors="replace")
        return channel.recv_exit_status(), out, err

    def sftp(self) -> paramiko.SFTPClient:
        return paramiko.SFTPClient.from_transport(self.transport)

    def close(self) -> None:
        for transport in reversed(self.transports):
            transport.close()
        self.transports = []
