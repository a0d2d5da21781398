"""The SFTP client fractui uploads the agent with: once the server left an answer unsent past
the timeout, the client asks nothing more and waits for nothing more. Before, paramiko, cut
short writing the agent, still asked the server to close the file and then for its size, and
waited the timeout again for each: an upload stalled for twice the time its words said."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Iterator, Tuple

import pytest

from fractui.fleet.link import _BoundedSftp

SFTP_VERSION = 2  # the server's answer to the client's SSH_FXP_INIT
SFTP_OPEN = 3
SFTP_HANDLE = 102  # the server's answer to SSH_FXP_OPEN


class Plain:
    """One end of a socket pair as paramiko's SFTP takes a channel: not a ``socket.socket``,
    which it polls with select and never lets time out."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, data: bytes) -> int:
        return self.sock.send(data)

    def recv(self, n: int) -> bytes:
        return self.sock.recv(n)

    def close(self) -> None:
        self.sock.close()

    def get_name(self) -> str:  # (in paramiko's log lines)
        return "pair"


def packet(kind: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, kind) + body


@contextlib.contextmanager
def connected() -> Iterator[Tuple[_BoundedSftp, socket.socket]]:
    """A client whose every answer is waited on 0.2 s, and the server's end of its socket
    pair, the SFTP versions exchanged."""
    ours, server = socket.socketpair()
    try:
        ours.settimeout(0.2)
        server.settimeout(5)
        server.sendall(packet(SFTP_VERSION, struct.pack(">I", 3)))  # answered before it asks
        sftp = _BoundedSftp(Plain(ours))
        assert server.recv(1024)  # its INIT
        yield sftp, server
    finally:
        ours.close()
        server.close()


def test_an_answer_not_come_in_time_ends_every_later_wait_and_asks_nothing_more():
    with connected() as (sftp, server):
        with pytest.raises(socket.timeout):
            sftp.stat("/agent.part")  # asked, and never answered
        asked = server.recv(1024)
        assert b"/agent.part" in asked
        for later in (lambda: sftp.stat("/agent"), lambda: sftp.remove("/agent.part")):
            with pytest.raises(socket.timeout, match="an earlier answer did not come in time"):
                later()
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.recv(1024)  # nothing more was asked


def test_a_request_the_server_took_no_more_of_in_time_ends_every_later_wait_too():
    """The server stops taking what is sent (an SSH server's window that does not open again
    reads the same): the agent's write gives up at the timeout, half a request sent. Before,
    the client then wrote the file's close after that half, and waited the timeout again for
    room to; now it asks nothing more."""
    with connected() as (sftp, server):
        reply = threading.Thread(target=lambda: server.sendall(packet(SFTP_HANDLE, open_id(
            server) + struct.pack(">I", 1) + b"h")))
        reply.start()
        remote = sftp.open("/agent.part", "wb")
        reply.join()
        with pytest.raises(socket.timeout):
            with remote:  # as paramiko's putfo writes: its close asks the server too
                remote.set_pipelined(True)
                remote.write(b"x" * (8 << 20))  # more than the pair holds: never all taken
        with pytest.raises(socket.timeout, match="an earlier answer did not come in time"):
            sftp.stat("/agent.part")


def open_id(server: socket.socket) -> bytes:
    """The request id of the client's SSH_FXP_OPEN, read whole from ``server``."""
    body = exactly(server, struct.unpack(">I", exactly(server, 4))[0])
    assert body[0] == SFTP_OPEN, body
    return body[1:5]


def exactly(server: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = server.recv(size - len(data))
        assert chunk, "the client hung up"
        data += chunk
    return data
