"""An SSH link to one host, hop by hop, in the way the admin's own ssh would go.

Each hop is a paramiko Transport whose host key is checked against known_hosts before any
authentication; a later hop rides a ``direct-tcpip`` channel of the one before. Every stage has
the connect timeout and its own words when it fails: a port that takes TCP but never speaks SSH
("no SSH banner from HOST:PORT within N s"), one that closes at once or sends something else, a
key exchange that stalls, an authentication that gets no answer, an ssh-agent that does not
answer (asked by fractui's own client, ``AgentClient``), a command or SFTP whose start gets no
answer. What paramiko's threads say meanwhile is kept with the link (fractui.fleet.sshlog),
never printed. Commands are built from ``shlex.quote``d words, so nothing a user typed is ever
read by a remote shell.
"""

from __future__ import annotations

import functools
import logging
import os
import shlex
import socket
import stat
import struct
import threading
import time
import warnings
from typing import Any, Callable, List, Optional, Sequence, Tuple

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.utils import CryptographyDeprecationWarning
from paramiko.pkey import UnknownKeyType

from fractui.fleet import sshlog
from fractui.fleet.hostkeys import KnownHosts, fingerprint, host_id, preferred_algorithms
from fractui.fleet.sshconfig import Hop, Route
from fractui.fleet.transport.base import LoginShellError, TransportError
from fractui.small_file import not_regular
from fractui.words import printable
from remote_agent.daemon.trust import UnsafePath, check_tree, kind_of
from remote_agent.failing import TRIES, Failures

log = logging.getLogger("fractui.fleet")

KEEPALIVE_S = 5
HANDSHAKE_POLL_S = 0.05  # how often the handshake looks for the banner that starts its own wait
NETWORK_ERRORS = (OSError, EOFError, paramiko.SSHException)
# Echoed by the login shell just before it runs a command: what it printed before is its rc
# files' (``SshLink._past_login_output``), never the command's.
BEGINS = "fractui-command-begins-7f3a"
BEGINS_LINE = BEGINS.encode() + b"\n"
LOGIN_OUTPUT_MAX = 64 * 1024


class LinkError(TransportError):
    """The host cannot be reached or will not let us in; the message says which hop and why."""


def command_line(words: Sequence[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


def last_words(said: bytes) -> str:
    """What a far program printed, as one printable line of at most 200 characters."""
    return printable(" ".join(said.decode("utf-8", "replace").split()))[:200]


def seconds(value: float) -> str:
    return "%g s" % value


class LinkStalled(OSError):
    """What a send says once the link took nothing for the connect timeout (paramiko, given
    an error that is no timeout, ends the write with EOFError)."""


class _Wire:
    """The socket (or jump channel) under a transport, noting what the server sent first and
    whether it hung up, so a failed handshake can say what came instead of a banner; and a
    send that the link takes nothing of for ``timeout_s`` ends the link (``stalled`` says so).

    paramiko sends with a 0.1 s timeout and tries again, without end, for as long as the
    transport is open: a link that stalls without closing, once the kernel's buffer is full,
    held the writer (an agent's upload, a large call, the transport's own keepalive) until
    TCP gave up, minutes to hours later, and a call's writer held every other call's."""

    HEAD = 256

    def __init__(self, sock: Any, timeout_s: float):
        self.sock = sock
        self.timeout_s = timeout_s
        self.head = b""
        self.eof = False
        self.stalled: Optional[str] = None
        self._unsent_since: Optional[float] = None

    def recv(self, n: int) -> bytes:
        data = self.sock.recv(n)
        if not data:
            self.eof = True
        elif len(self.head) < self.HEAD:
            self.head += data[:self.HEAD - len(self.head)]
        return data

    def send(self, data: bytes) -> int:
        if self.stalled:
            raise LinkStalled(self.stalled)
        try:
            sent = self.sock.send(data)
        except socket.timeout:
            now = time.monotonic()
            if self._unsent_since is None:
                self._unsent_since = now
            elif now - self._unsent_since >= self.timeout_s:
                raise self._stall() from None
            raise
        self._unsent_since = None
        return sent

    def _stall(self) -> LinkStalled:
        """End the link: its reader (the transport's thread) sees it end, and with it every
        wait on the link; each later send fails at once."""
        self.stalled = "the link stalled: nothing sent was taken within %s" % seconds(
            self.timeout_s)
        try:
            if isinstance(self.sock, socket.socket):
                self.sock.shutdown(socket.SHUT_RDWR)
            else:  # (a jump host's channel)
                self.sock.close()
        except NETWORK_ERRORS as err:
            log.debug("ending a stalled link: %r", err)
        return LinkStalled(self.stalled)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)

    def first_line(self) -> str:
        line = self.head.split(b"\n", 1)[0].strip()
        text = printable(line.decode("utf-8", errors="replace"))
        return text[:60] + ("..." if len(text) > 60 else "")


def _hung_up(error: Optional[BaseException]) -> bool:
    """Whether the peer closed or reset the connection (paramiko wraps such errors)."""
    while error is not None:
        if isinstance(error, (EOFError, ConnectionResetError, BrokenPipeError,
                              ConnectionAbortedError)):
            return True
        error = error.__cause__ or error.__context__
    return False


def _handshake(transport: paramiko.Transport, wire: _Wire, hop: Hop, timeout_s: float) -> None:
    """Banner and key exchange, each within ``timeout_s``; a LinkError that says which failed.

    paramiko's own timers end a silent banner wait and a key exchange that never starts; a
    key exchange that stalls after the server's first packet has no timer of paramiko's, so
    this one gives up ``timeout_s`` after the banner came (as the words say: not a second
    ``timeout_s`` after the first, whenever the banner came in it)."""
    done = threading.Event()
    started = time.monotonic()
    transport.start_client(event=done)
    # (a silent port: paramiko's banner timer, of the same length, ends it; a second more)
    give_up = started + timeout_s + 1.0
    banner_seen = False
    while not done.wait(min(HANDSHAKE_POLL_S, max(0.0, give_up - time.monotonic()))):
        if transport.remote_version and not banner_seen:
            banner_seen = True
            give_up = time.monotonic() + timeout_s
        if time.monotonic() >= give_up:
            break
    finished = done.is_set()
    if finished and transport.is_active():
        return
    error = transport.get_exception()
    where = hop.address
    if not transport.remote_version:
        if wire.head.strip():
            raise LinkError("%s does not speak SSH: it sent %r instead of an SSH banner" % (
                where, wire.first_line()))
        if wire.eof or _hung_up(error):
            raise LinkError("%s closed the connection without an SSH banner" % where)
        if not finished or time.monotonic() - started >= timeout_s:
            raise LinkError("no SSH banner from %s within %s" % (where, seconds(timeout_s)))
        raise LinkError("no SSH banner from %s: %s" % (where, error or "the link failed"))
    banner = transport.remote_version[:60]
    if not finished or transport.packetizer.handshake_timed_out():
        raise LinkError("the SSH key exchange with %s (%s) stalled: no answer within %s" % (
            where, banner, seconds(timeout_s)))
    if wire.eof or error is None or _hung_up(error):
        raise LinkError("%s (%s) closed the connection during the SSH key exchange" % (
            where, banner))
    raise LinkError("the SSH key exchange with %s (%s) failed: %s" % (where, banner, error))


class _BoundedSftp(paramiko.SFTPClient):
    """Once an answer did not come in time, waits for none again: paramiko, cut short writing
    a file, still asks the server to close it (and takes no answer as closed) and then for the
    file's size, and waited as long for each. A request the server took no more of in time (its
    window did not open again) is such an answer: what would follow it is half a request's
    tail."""

    late = False

    def _read_packet(self) -> Tuple[int, bytes]:
        return self._bounded(super()._read_packet)

    def _send_packet(self, t: int, packet: Any) -> None:
        self._bounded(functools.partial(super()._send_packet, t, packet))

    def _bounded(self, call: Callable[[], Any]) -> Any:
        if self.late:
            raise socket.timeout("an earlier answer did not come in time")
        try:
            return call()
        except socket.timeout:
            self.late = True
            raise


def unprotected(path: str) -> Optional[str]:
    """Why a private key of ours is not used (OpenSSH's rule: one its owner lets others read
    is ignored, "UNPROTECTED PRIVATE KEY FILE"), or None. paramiko reads any."""
    try:
        st = os.stat(path)
    except OSError:
        return None  # paramiko says why it cannot be read
    if st.st_uid == os.geteuid() and st.st_mode & 0o077:
        return ("unprotected: mode %04o lets others read it, so it is ignored as OpenSSH "
                "ignores it; fix it with: chmod 600 %s" % (stat.S_IMODE(st.st_mode), path))
    return None


# a DSA key is said unused in fractui's words (``unusable``): cryptography's warning as paramiko
# reads one would say it again on stderr, in a library's, with a line of its source
warnings.filterwarnings("ignore", "SSH DSA keys are deprecated", CryptographyDeprecationWarning)


def unusable(path: str, err: Exception) -> str:
    """Why a private key paramiko raised ``err`` reading is not used: a type it does not read
    (DSA since paramiko 4.0, a FIDO ``-sk`` key, ...) or a passphrase, which fractui does not
    ask for (cryptography says so with a TypeError naming the password)."""
    if isinstance(err, UnknownKeyType):
        kind = getattr(err.key_type, "__name__", "").replace("PrivateKey", "") or "?"
        return "a %s key, which paramiko does not read: use an ed25519, ECDSA or RSA key" % kind
    if isinstance(err, UnsupportedAlgorithm):
        return "%s: use an ed25519, ECDSA or RSA key" % err
    if "password" in str(err).lower():
        return ("protected by a passphrase, which fractui does not ask for: add it to an "
                "ssh-agent (ssh-add %s)" % path)
    return "%s: %s" % (type(err).__name__, err)


AGENT_REFUSED = Failures(log, TRIES)
"""The ssh-agent socket refused, said once while it is refused for the same reason."""

# The ssh-agent protocol's messages fractui sends and reads (draft-miller-ssh-agent).
AGENT_LIST, AGENT_KEYS, AGENT_SIGN, AGENT_SIGNATURE = 11, 12, 13, 14
AGENT_RSA_FLAGS = {"rsa-sha2-256": 2, "rsa-sha2-512": 4}  # SSH_AGENT_RSA_SHA2_256, _512
CERT_SUFFIX = "-cert-v01@openssh.com"  # of a certificate's type, and of its algorithms
AGENT_MAX_BYTES = 256 << 10  # of one answer (OpenSSH's AGENT_MAX_LEN): more is not an agent


class AgentFailed(paramiko.SSHException):
    """The ssh-agent did not answer within the bound, hung up, or answered nonsense; the
    message names it and says which."""


class AgentClient:
    """The two requests fractui makes of an ssh-agent (its keys; a signature), over a
    connection ``agent_connection`` made and checked, each answer awaited ``timeout_s`` at most:
    an agent that takes the connection and never answers would otherwise hold the connect
    for good (paramiko's own client waits without a bound)."""

    def __init__(self, path: str, conn: socket.socket, timeout_s: float):
        self.path, self.conn, self.timeout_s = path, conn, timeout_s
        self.lock = threading.Lock()  # (a signature is asked for on the transport's thread)
        self.asking = False  # a request is waiting on its answer
        conn.settimeout(timeout_s)

    def silent(self) -> str:
        return "ssh-agent at %s did not answer within %s" % (self.path, seconds(self.timeout_s))

    def ask(self, kind: int, *strings: bytes, flags: Optional[int] = None) -> paramiko.Message:
        """Send one request; its answer, the type byte read."""
        msg = paramiko.Message()
        msg.add_byte(bytes([kind]))
        for value in strings:
            msg.add_string(value)
        if flags is not None:
            msg.add_int(flags)
        data = msg.asbytes()
        with self.lock:
            self.asking = True
            try:
                self.conn.sendall(struct.pack(">I", len(data)) + data)
                size = struct.unpack(">I", self._read(4))[0]
                if size > AGENT_MAX_BYTES:
                    raise AgentFailed("ssh-agent at %s sent an answer of %d bytes, not an "
                                      "agent's" % (self.path, size))
                return paramiko.Message(self._read(size))
            except socket.timeout:
                raise AgentFailed(self.silent()) from None
            except OSError as err:
                raise AgentFailed("ssh-agent at %s: %s" % (
                    self.path, err.strerror or err)) from None
            finally:
                self.asking = False

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            more = self.conn.recv(size - len(data))
            if not more:
                raise AgentFailed("ssh-agent at %s hung up" % self.path)
            data += more
        return data

    def keys(self, tried: List[str]) -> List["AgentKey"]:
        """The keys the agent holds; one paramiko cannot read is said in ``tried``."""
        answer = self.ask(AGENT_LIST)
        if answer.get_byte() != bytes([AGENT_KEYS]):
            raise AgentFailed("ssh-agent at %s refused to list its keys" % self.path)
        count, keys = answer.get_int(), []
        if count * 8 > len(answer.asbytes()):  # (each key's two lengths alone are 8 bytes)
            raise AgentFailed("ssh-agent at %s listed %d keys in an answer of %d bytes: not an "
                              "agent's" % (self.path, count, len(answer.asbytes())))
        for _ in range(count):
            blob, comment = answer.get_binary(), answer.get_text()
            try:
                keys.append(AgentKey(self, blob))
            except UnknownKeyType as err:  # a FIDO -sk key, ...
                tried.append("ssh-agent key %s (a %s key, which paramiko does not read)" % (
                    printable(comment) or "?", printable(str(err.key_type))))
            except (paramiko.SSHException, ValueError) as err:
                tried.append("ssh-agent key %s (%s)" % (printable(comment) or "?", err))
        return keys

    def close(self) -> None:
        self.conn.close()


class AgentKey(paramiko.PKey):
    """A key the ssh-agent holds: its public half read by paramiko (``from_type_string``), its
    signatures asked of the agent. A certificate (``TYPE-cert-v01@openssh.com``, which
    ``ssh-add`` adds beside its key) is read as its key's type, and offered as the certificate
    (paramiko's ``public_blob``), as OpenSSH offers it: a server that trusts its authority
    alone lets it in."""

    def __init__(self, agent: AgentClient, blob: bytes):
        self.agent, self.blob = agent, blob
        self.refused = False  # the agent refused to sign with it
        kind = paramiko.Message(blob).get_text()
        self.key = paramiko.PKey.from_type_string(
            kind[:-len(CERT_SUFFIX)] if kind.endswith(CERT_SUFFIX) else kind, blob)
        self.public_blob = self.key.public_blob  # (a certificate's; None for a plain key)

    def asbytes(self) -> bytes:
        return self.blob

    def get_name(self) -> str:
        return self.key.get_name()

    def get_bits(self) -> int:
        return self.key.get_bits()

    def can_sign(self) -> bool:
        return True

    def sign_ssh_data(self, data: bytes, algorithm: Optional[str] = None) -> bytes:
        """The agent's signature; where it refuses (a key added ``ssh-add -c`` whose use was
        not confirmed, one it holds for other hosts only), an empty one, which the server
        refuses as it refuses a key not authorized: the signature is asked for on the
        transport's thread, and an exception there ended the link, not this key's attempt
        alone (OpenSSH's ``ssh`` goes on to its next key). ``refused`` says so."""
        answer = self.agent.ask(AGENT_SIGN, self.blob, data, flags=AGENT_RSA_FLAGS.get(
            (algorithm or "").replace(CERT_SUFFIX, ""), 0))
        if answer.get_byte() == bytes([AGENT_SIGNATURE]):
            return answer.get_binary()
        self.refused = True
        empty = paramiko.Message()
        empty.add_string(algorithm or self.get_name())
        empty.add_string(b"")
        return empty.asbytes()


def agent_connection(path: str, timeout_s: float) -> socket.socket:
    """A connection to the ssh-agent at ``path`` ($SSH_AUTH_SOCK), once it is seen to be ours:
    an agent signs with every key it holds for whoever asks, and learns which keys we use and
    when, so one another user answers could sign as us, or watch us, or stand in for our own.
    UnsafePath where the socket is another user's, or is reached through a folder or link
    another user could change (a sticky folder such as /tmp is fine: no one else can remove or
    rename our socket in it), or where the process listening on it is another user's (the
    kernel says whose: SO_PEERCRED); OSError where it cannot be reached (no agent there), or
    the socket's backlog is full (BlockingIOError: an agent that accepts no one, where a
    blocking connect would wait for good)."""
    what = "ssh-agent socket (SSH_AUTH_SOCK)"
    check_tree(path, what, runner="fractui", socket=True)
    mode = os.stat(path).st_mode
    if not stat.S_ISSOCK(mode):
        raise UnsafePath("refusing %s %s: not a socket: %s" % (what, path, kind_of(mode)))
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout_s)
        conn.connect(path)
        if not hasattr(socket, "SO_PEERCRED"):  # (Linux's: elsewhere the path's checks alone)
            return conn
        pid, uid, _ = struct.unpack("iII", conn.getsockopt(  # (struct ucred: uid_t unsigned)
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("iII")))
        if uid != os.geteuid():
            raise UnsafePath("refusing %s %s: the process listening on it (pid %d) is uid %d's,"
                             " not uid %d's (the user fractui runs as)" % (
                                 what, path, pid, uid, os.geteuid()))
    except BaseException:
        conn.close()
        raise
    return conn


def _agent(tried: List[str], timeout_s: float) -> Tuple[Optional[AgentClient], List[AgentKey]]:
    """The ssh-agent $SSH_AUTH_SOCK names and its keys, tried last; where there are none, why
    is added to ``tried`` (a refused agent also said once in the log)."""
    path = os.environ.get("SSH_AUTH_SOCK")
    if not path:
        return None, []
    try:
        agent = AgentClient(path, agent_connection(path, timeout_s), timeout_s)
    except UnsafePath as err:
        AGENT_REFUSED.failed(path, "%s; its keys are not used" % err)
        tried.append("ssh-agent (%s)" % err)
        return None, []
    except BlockingIOError:  # its backlog full: a blocking connect would wait for good
        tried.append("ssh-agent (ssh-agent at %s takes no more connections: it accepts none of "
                     "those waiting; is it stopped?)" % path)
        return None, []
    except OSError as err:  # gone: a stale variable
        tried.append("ssh-agent (SSH_AUTH_SOCK %s: %s)" % (path, err.strerror or err))
        return None, []
    AGENT_REFUSED.worked(path, "ssh-agent socket %s (SSH_AUTH_SOCK) is used again" % path)
    try:
        return agent, agent.keys(tried)
    except AgentFailed as err:
        agent.close()
        tried.append("ssh-agent (%s)" % err)
        return None, []


def _authenticate(transport: paramiko.Transport, hop: Hop, timeout_s: float) -> None:
    tried: List[str] = []

    def attempt(key: paramiko.PKey, label: str, agent: Optional[AgentClient] = None) -> bool:
        started = time.monotonic()
        try:
            transport.auth_publickey(hop.user, key)
            return True
        except paramiko.BadAuthenticationType as err:
            raise LinkError("%s@%s takes no key login (it allows: %s)" % (
                hop.user, hop.address, ", ".join(err.allowed_types) or "nothing")) from None
        except paramiko.AuthenticationException:
            if agent is not None and agent.asking:  # paramiko's timer ended as the agent's did
                raise AgentFailed(agent.silent()) from None
            if not transport.is_active():
                raise LinkError("%s closed the connection during authentication" %
                                hop.address) from None
            if time.monotonic() - started >= timeout_s:
                raise LinkError("no answer to authentication from %s within %s" % (
                    hop.address, seconds(timeout_s))) from None
            if isinstance(key, AgentKey) and key.refused:
                label += " (the ssh-agent refused to sign with it)"
            tried.append(label)
            return False

    for path in hop.identity_files:
        special = [(p, why) for p in (path, path + "-cert.pub") for why in [not_regular(p)]
                   if why]  # paramiko reads both, and would wait for good on a FIFO
        if special:
            tried.append("%s (%s)" % special[0])
            continue
        why = unprotected(path)
        if why:
            tried.append("%s (%s)" % (path, why))
            continue
        try:
            key = paramiko.PKey.from_path(path)
        except (OSError, paramiko.SSHException, ValueError) as err:
            tried.append("%s (%s)" % (path, err))
            continue
        except (UnknownKeyType, UnsupportedAlgorithm, TypeError) as err:
            tried.append("%s (%s)" % (path, unusable(path, err)))
            continue
        if attempt(key, path):
            return
    agent, keys = _agent(tried, timeout_s)
    try:
        for key in keys:
            if attempt(key, "ssh-agent key %s" % fingerprint(key), agent):
                return
    except AgentFailed as err:  # asked to sign on the transport's thread, which it ended
        raise LinkError("%s@%s: the link ended waiting on the ssh-agent: %s (tried before: %s)"
                        % (hop.user, hop.address, err, ", ".join(tried) or "nothing")) from None
    finally:
        if agent is not None:
            agent.close()
    raise LinkError("%s@%s accepted none of our keys (tried: %s)" % (
        hop.user, hop.address, ", ".join(tried) or "no keys: set identity_file"))


class SshLink:
    """Transports to every hop of a route; the last one is the host."""

    def __init__(self, route: Route, known_hosts: KnownHosts, timeout_s: float):
        self.route = route
        self.known_hosts = known_hosts
        self.timeout_s = timeout_s
        self.transports: List[paramiko.Transport] = []
        self.wires: List[_Wire] = []
        self.log = sshlog.LinkLog()
        sshlog.keeper()

    def connect(self) -> "SshLink":
        try:
            hops = self.route.hops
            for i, hop in enumerate(hops):
                self._hop(hop, self._dial(hop) if i == 0 else self._channel_to(hops[i - 1], hop))
        except BaseException:
            self.close()  # each transport closes the socket or channel it rode on
            raise
        return self

    def _dial(self, hop: Hop) -> socket.socket:
        try:
            return socket.create_connection((hop.host, hop.port), self.timeout_s)
        except (OSError, UnicodeError, ValueError) as err:
            raise LinkError("cannot reach %s: %s" % (hop.address, getattr(
                err, "strerror", None) or err)) from None

    def _hop(self, hop: Hop, sock: Any) -> None:
        """Handshake, host key check and authentication over ``sock``, which the new
        transport owns from then on."""
        wire = _Wire(sock, self.timeout_s)
        self.wires.append(wire)
        transport = paramiko.Transport(wire)
        sshlog.watch(transport, self.log)
        self.transports.append(transport)
        for attr in ("banner_timeout", "handshake_timeout", "auth_timeout"):
            setattr(transport, attr, self.timeout_s)
        name = hop.key_alias or host_id(hop.host, hop.port)
        options = transport.get_security_options()
        options.key_types = preferred_algorithms(self.known_hosts.key_types(name),
                                                 options.key_types)
        _handshake(transport, wire, hop, self.timeout_s)
        self.known_hosts.check(name, transport.get_remote_server_key(),
                               self.route.name or hop.alias)
        _authenticate(transport, hop, self.timeout_s)
        transport.set_keepalive(KEEPALIVE_S)

    def _channel_to(self, hop: Hop, nxt: Hop) -> paramiko.Channel:
        try:
            return self.transports[-1].open_channel("direct-tcpip", (nxt.host, nxt.port),
                                                    ("127.0.0.1", 0), timeout=self.timeout_s)
        except NETWORK_ERRORS as err:
            raise LinkError("jump host %s could not open a channel to %s: %s" % (
                hop.address, nxt.address, str(err) or type(err).__name__)) from None

    @property
    def transport(self) -> paramiko.Transport:
        return self.transports[-1]

    @property
    def alive(self) -> bool:
        return bool(self.transports) and self.transport.is_active()

    def said(self) -> Optional[str]:
        """Why the link stalled, if it did; else what paramiko last warned of, if anything."""
        return self.stalled or self.log.said()

    @property
    def stalled(self) -> Optional[str]:
        """Why the link was ended as stalled (``_Wire``), if it was: a jump host's or the
        host's."""
        return next((wire.stalled for wire in self.wires if wire.stalled), None)

    def exec(self, words: Sequence[str], timeout_s: float = 30.0) -> paramiko.Channel:
        """Start a command (quoted word by word): its channel, past what the login shell
        printed before it ran the command within ``timeout_s`` (``_past_login_output``)."""
        line = "echo %s; exec %s" % (BEGINS, command_line(words))
        channel = self._session(words[0], lambda channel: channel.exec_command(line))
        try:
            self._past_login_output(channel, words[0], timeout_s)
        except BaseException:
            channel.close()
            raise
        return channel

    def _past_login_output(self, channel: paramiko.Channel, what: str,
                           timeout_s: float) -> None:
        """Read the channel up to BEGINS, which the login shell echoes just before it runs the
        command: what came first is what its rc files printed on a login that is no terminal
        (a ~/.bashrc that greets), which would have been read as the command's output (a
        Python version, the agent's first answer); it is skipped, and said in the log.
        LinkError where the shell ends first, saying what it said (a nologin shell)."""
        target = self.route.target
        seen = bytearray()
        channel.settimeout(timeout_s)
        try:
            while not seen.endswith(BEGINS_LINE):
                byte = channel.recv(1)
                if not byte:
                    said = last_words(bytes(seen) + channel.makefile_stderr("rb").read())
                    raise LoginShellError("%s: the login shell of %s ran no command: %s" % (
                        target.address, target.user, said or "it ended, saying nothing"))
                seen += byte
                if len(seen) > LOGIN_OUTPUT_MAX:
                    raise LoginShellError("%s: the login shell printed more than %d bytes "
                                          "before it ran %s (its rc files, e.g. ~/.bashrc, "
                                          "print on a login that is no terminal: make them "
                                          "quiet there)" % (
                                              target.address, LOGIN_OUTPUT_MAX, what))
        except socket.timeout:  # (the shell runs: sshd answered the request to start it)
            raise LoginShellError(
                "%s: the login shell of %s did not run %s within %s: its rc files (e.g. "
                "~/.bashrc) wait where there is no terminal (for input, a prompt, a slow "
                "command): make them go on at once there" % (
                    target.address, target.user, what, seconds(timeout_s))) from None
        except NETWORK_ERRORS as err:
            raise LinkError("%s: %s: %s" % (target.address, what,
                                            str(err) or type(err).__name__)) from None
        channel.settimeout(None)
        printed = last_words(bytes(seen[:-len(BEGINS_LINE)]))
        if printed:
            log.warning("%s: the login shell printed %s before it ran %s; skipped (its rc files "
                        "print on a login that is no terminal)", target.address, printed, what)

    def _session(self, what: str, request: Callable[[paramiko.Channel], None]
                 ) -> paramiko.Channel:
        """A new session channel, once the server answered ``request`` on it (exec, a
        subsystem). paramiko waits for that answer without a bound, and a link that stalls
        (SSH keepalives only send) held the caller for good: it is waited on for the connect
        timeout here, past which the link is closed, which ends paramiko's wait."""
        where = self.route.target.address
        failed: List[BaseException] = []

        def ask(channel: paramiko.Channel) -> None:
            try:
                request(channel)
            except NETWORK_ERRORS as err:
                failed.append(err)

        try:
            channel = self.transport.open_session(timeout=self.timeout_s)
        except NETWORK_ERRORS as err:
            failed.append(err)
        else:
            asking = threading.Thread(target=ask, args=(channel,), name="fractui-ssh-request",
                                      daemon=True)
            asking.start()
            asking.join(self.timeout_s)
            if asking.is_alive():
                self.close()
                raise LinkError("%s: cannot start %s: no answer within %s; the link is closed"
                                % (where, what, seconds(self.timeout_s)))
        if failed:
            raise LinkError("%s: cannot start %s: %s" % (
                where, what, str(failed[0]) or type(failed[0]).__name__))
        return channel

    def run(self, words: Sequence[str], timeout_s: float = 30.0) -> Tuple[int, str, str]:
        """A short command to completion: (exit status, stdout, stderr)."""
        channel = self.exec(words, timeout_s)
        try:
            channel.settimeout(timeout_s)
            channel.shutdown_write()
            out = channel.makefile("rb").read().decode("utf-8", errors="replace")
            err = channel.makefile_stderr("rb").read().decode("utf-8", errors="replace")
            return channel.recv_exit_status(), out, err
        except socket.timeout:
            raise LinkError("%s: %s gave no answer within %s" % (
                self.route.target.address, words[0], seconds(timeout_s))) from None
        except NETWORK_ERRORS as err:
            raise LinkError("%s: %s: %s" % (self.route.target.address, words[0],
                                            str(err) or type(err).__name__)) from None
        finally:
            channel.close()

    def sftp(self) -> paramiko.SFTPClient:
        """An SFTP client whose every wait on the server is bounded by the connect timeout
        (``from_transport``'s are not: a stalled link held a deploy for good)."""
        channel = self._session("SFTP", lambda channel: channel.invoke_subsystem("sftp"))
        channel.settimeout(self.timeout_s)
        try:
            return _BoundedSftp(channel)
        except socket.timeout:
            channel.close()
            raise LinkError("%s: SFTP did not start: no answer within %s" % (
                self.route.target.address, seconds(self.timeout_s))) from None
        except NETWORK_ERRORS as err:
            channel.close()
            raise LinkError("%s: SFTP did not start: %s" % (
                self.route.target.address, str(err) or type(err).__name__)) from None
        except paramiko.SFTPError as err:  # (text where its first answer's length would be)
            channel.close()
            target = self.route.target
            raise LoginShellError(
                "%s: SFTP did not start: its first answer was no SFTP (%s): sshd runs the SFTP "
                "server through the login shell of %s, whose rc files (e.g. ~/.bashrc) print "
                "on a login that is no terminal: make them quiet there" % (
                    target.address, err, target.user)) from None

    def close(self) -> None:
        for transport in reversed(self.transports):
            transport.close()
        self.transports = []
