"""Real OpenSSH servers on loopback, and a cuttable TCP proxy, for SSH tests.

Tests that exercise the SSH transport against a fake would only prove the fake; these
helpers run the real ``/usr/sbin/sshd`` in a private directory on 127.0.0.1 so that
host-key checks, ProxyJump (``direct-tcpip``), SFTP and dropped links behave as in the field.
"""

from __future__ import annotations

import base64
import os
import queue
import shlex
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

import paramiko
import pytest

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


def free_port() -> int:
    """A port the kernel just considered free on 127.0.0.1 (bind to port 0, then release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


# ssh-keygen's -t for each host key type a test server may have
KEY_TYPES = {"ed25519": ["-t", "ed25519"], "rsa": ["-t", "rsa", "-b", "2048"],
             "ecdsa": ["-t", "ecdsa", "-b", "256"]}


def _keygen(path: Path, comment: str, key_type: str = "ed25519") -> None:
    """Write an unencrypted key pair (ed25519 unless said) at ``path`` / ``path.pub``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [SSH_KEYGEN, "-q", *KEY_TYPES[key_type], "-N", "", "-C", comment, "-f", str(path)],
        check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, timeout=30)


def public_key_line(path: Path) -> str:
    """``TYPE BASE64`` of the key pair at ``path`` (no comment), as known_hosts wants it."""
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


def make_user_key(dirpath: Path) -> Tuple[Path, str]:
    """Create a client key pair in ``dirpath``; return (private key path, public key text)."""
    dirpath = Path(dirpath)
    path = dirpath / "id_ed25519"
    _keygen(path, "fractui-test-user")
    return path, path.with_name(path.name + ".pub").read_text().strip()


def _children_map() -> Dict[int, List[int]]:
    """ppid -> pids of every process, read from /proc (sshd children call setsid())."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may contain spaces or parentheses: parse after the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def descendants(pid: int) -> List[int]:
    """Every process below ``pid``: per-connection sshds and the sessions they run."""
    children = _children_map()
    found: List[int] = []
    todo = [pid]
    seen: Set[int] = {pid}
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in seen:
                seen.add(child)
                found.append(child)
                todo.append(child)
    return found


def _signal_all(pids: List[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_gone(pids: List[int], timeout_s: float) -> bool:
    """True once none of ``pids`` runs any more (zombies count as gone)."""
    deadline = time.monotonic() + timeout_s
    while any(_alive(p) for p in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def in_mount_namespace(*mounts: List[str]) -> List[str]:
    """The command prefix that runs a command in a mount namespace of its own, after
    ``mounts`` (each a mount command's arguments): the machine's other processes see none."""
    script = " && ".join(shlex.join(["mount"] + list(m)) for m in mounts)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            script + ' && exec "$@"', "sh"]


class SshServer:
    """One ``sshd -D`` on 127.0.0.1 at a free port, everything it needs kept in ``workdir``.

    Passing the ``host_key`` of an earlier server lets a test restart "the same host"; a
    fresh server gets a fresh key, which is how a changed host key is simulated.
    ``key_types`` gives a fresh server host keys of those types instead (e.g. only "rsa").
    ``listen`` names the loopback addresses it listens on (both families: "127.0.0.1", "::1").
    ``prefix`` is a command sshd is run by (``in_mount_namespace``: a host whose files differ
    from this machine's for its logins alone).
    """

    def __init__(self, workdir: Path, user_pubkey: str, host_key: Optional[Path] = None,
                 key_types: Tuple[str, ...] = ("ed25519",),
                 listen: Tuple[str, ...] = (LOOPBACK,), prefix: Sequence[str] = (),
                 sftp: str = "internal-sftp"):
        self.workdir = Path(workdir)
        self.sftp = sftp
        self.listen = listen
        self.prefix = list(prefix)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.user_pubkey = user_pubkey.strip()
        if host_key is not None:
            self.host_key_paths = [Path(host_key)]
        else:
            self.host_key_paths = [self.workdir / ("ssh_host_%s_key" % t) for t in key_types]
            for path, key_type in zip(self.host_key_paths, key_types):
                _keygen(path, "fractui-test-host", key_type)
        self._host_key_path = self.host_key_paths[0]
        self.config_path = self.workdir / "sshd_config"
        self.log_path = self.workdir / "sshd.log"
        self.pid_path = self.workdir / "sshd.pid"
        self.authorized_keys_path = self.workdir / "authorized_keys"
        self._port: Optional[int] = None
        self._proc: Optional[subprocess.Popen] = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def host_key_path(self) -> Path:
        return self._host_key_path

    @property
    def host_public_key(self) -> str:
        """``ssh-ed25519 AAAA...`` (no comment) of the first host key, as known_hosts wants."""
        return public_key_line(self._host_key_path)

    @property
    def host_public_keys(self) -> List[str]:
        """Every host key of this server, as known_hosts lines want them."""
        return [public_key_line(p) for p in self.host_key_paths]

    @property
    def host_key(self) -> paramiko.PKey:
        """The public host key as paramiko sees it, to compare with what a client got."""
        blob = base64.b64decode(self.host_public_key.split()[1])
        return paramiko.Ed25519Key(data=blob)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """The listening sshd's, while it runs (its per-connection sshds are below it)."""
        assert self._proc is not None, "not started"
        return self._proc.pid

    def _write_config(self, port: int) -> None:
        self.authorized_keys_path.write_text(self.user_pubkey + "\n")
        lines = [
            *("ListenAddress %s" % address for address in self.listen),
            "Port %d" % port,
            # (quoted: sshd splits a value at blanks, and a test's folder may have some)
            *('HostKey "%s"' % p.resolve() for p in self.host_key_paths),
            'PidFile "%s"' % self.pid_path.resolve(),
            'AuthorizedKeysFile "%s"' % self.authorized_keys_path.resolve(),
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",
            "AllowTcpForwarding yes",
            "Subsystem sftp %s" % self.sftp,
            "LogLevel ERROR",
            "MaxStartups 100",
            "MaxSessions 100",
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> "SshServer":
        """Launch sshd and wait until it accepts TCP; retry if another process took the port."""
        if self.running:
            return self
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        last_log = ""
        for _attempt in range(3):
            port = free_port()
            self._write_config(port)
            with open(self.log_path, "wb") as log:
                self._proc = subprocess.Popen(
                    self.prefix + [SSHD, "-D", "-e", "-f", str(self.config_path.resolve())],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=str(self.workdir))
            self._port = port
            if self._wait_listening(port):
                return self
            last_log = self.log_path.read_text(errors="replace")
            self.stop()
            if "Address already in use" not in last_log:
                break
        raise RuntimeError("sshd did not start listening on %s:%s; log:\n%s"
                           % (LOOPBACK, self._port, last_log))

    def _wait_listening(self, port: int) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                return False
            try:
                for address in self.listen:
                    socket.create_connection((address, port), timeout=0.5).close()
                return True
            except OSError:
                time.sleep(0.02)
        return False

    def stop(self) -> None:
        """Stop sshd and every per-connection sshd it forked, so none outlives the test."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pids = descendants(proc.pid) if proc.poll() is None else []
        _signal_all(pids, signal.SIGTERM)
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
        if not _wait_gone(pids, STOP_TIMEOUT_S):
            _signal_all([p for p in pids if _alive(p)], signal.SIGKILL)
            _wait_gone(pids, 1.0)

    def __enter__(self) -> "SshServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return "SshServer(%s, port=%s)" % (self.workdir, self._port)


NARROW_RATE = 256 * 1024  # bytes a second up a ``narrow`` proxy's connection


def _flowing() -> threading.Event:
    flowing = threading.Event()
    flowing.set()
    return flowing


class _Link:
    """One proxied TCP connection: a reader and a (delaying) sender thread per direction.

    With ``hold_after`` set, once that many bytes went up, nothing more comes down: the mark
    is set before those bytes are passed on, so no answer to them can ever get through. The
    mark is the link's own (``held``); ``holding``, the proxy's, only tells the test: a held
    link that still sends up after the test cleared it must not hold a later link.

    ``flowing`` is the proxy's: while it is clear, nothing is read or passed on either way
    (a frozen link: nothing closed, the bytes sent stay in the kernel's buffers). With
    ``freeze_after`` set, this link clears it once that many bytes went up (``frozen`` is
    set then, for the test)."""

    def __init__(self, client: socket.socket, upstream: socket.socket, delay_s: float,
                 hold_after: Optional[int] = None,
                 holding: Optional[threading.Event] = None,
                 flowing: Optional[threading.Event] = None,
                 freeze_after: Optional[int] = None,
                 frozen: Optional[threading.Event] = None, up_rate: Optional[float] = None):
        self.client = client
        self.up_rate = up_rate
        self.upstream = upstream
        self.delay_s = delay_s
        self.hold_after = hold_after
        self.holding = holding or threading.Event()
        self.flowing = flowing or _flowing()
        self.freeze_after = freeze_after
        self.frozen = frozen or threading.Event()
        self.held = threading.Event()
        self.sent_up = 0
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self._half_closed = 0
        self.threads: List[threading.Thread] = []
        for src, dst, name in ((client, upstream, "up"), (upstream, client, "down")):
            q: "queue.Queue[Optional[Tuple[float, bytes]]]" = queue.Queue()
            self.threads.append(threading.Thread(
                target=self._read, args=(src, q, name == "up"), name="cutproxy-read-" + name,
                daemon=True))
            self.threads.append(threading.Thread(
                target=self._send, args=(dst, q, name == "down"), name="cutproxy-send-" + name,
                daemon=True))
        for t in self.threads:
            t.start()

    def _read(self, src: socket.socket, q: "queue.Queue[Optional[Tuple[float, bytes]]]",
              up: bool) -> None:
        while self._flows():
            try:
                data = src.recv(65536)
            except OSError:
                self.close()
                break
            if not data:
                break
            if up and (self.hold_after is not None or self.freeze_after is not None):
                self.sent_up += len(data)
                if self.hold_after is not None and self.sent_up >= self.hold_after:
                    self.held.set()
                    self.holding.set()
                if self.freeze_after is not None and self.sent_up >= self.freeze_after:
                    self.freeze_after = None  # (once: a thaw lets the rest through)
                    self.flowing.clear()
                    self.frozen.set()
            if up and self.up_rate and self.closed.wait(len(data) / self.up_rate):
                break
            if not self._flows():
                break
            q.put((time.monotonic() + self.delay_s, data))
        q.put(None)

    def _flows(self) -> bool:
        """Whether to go on: waits while the proxy is frozen; False once the link ended."""
        while not self.flowing.wait(0.1):
            if self.closed.is_set():
                return False
        return not self.closed.is_set()

    def _send(self, dst: socket.socket, q: "queue.Queue[Optional[Tuple[float, bytes]]]",
              down: bool) -> None:
        while not self.closed.is_set():
            try:
                item = q.get(timeout=0.2)
            except queue.Empty:
                continue
            if down and self.held.is_set():
                self.closed.wait()  # held: what came down stays here until the link ends
                return
            if item is None:
                self._finish_direction(dst)
                return
            due, data = item
            wait = due - time.monotonic()
            if wait > 0 and self.closed.wait(wait) or not self._flows():
                return
            try:
                dst.sendall(data)
            except OSError:
                self.close()
                return

    def _finish_direction(self, dst: socket.socket) -> None:
        """Pass a half-close on; once both directions ended, release the sockets."""
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        with self._lock:
            self._half_closed += 1
            done = self._half_closed == 2
        if done:
            self.close()

    def close(self) -> None:
        """Drop both ends at once, as a broken link would (idempotent, any thread)."""
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
        for s in (self.client, self.upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked in recv()
            except OSError:
                pass
            s.close()


class CutProxy:
    """A loopback TCP forwarder whose link a test can cut and restore, with optional latency.

    ``cut()`` drops every open connection and refuses new ones (the listener is closed);
    ``restore()`` listens again on the same port, so clients reconnect to the same address.
    ``freeze()`` stops every byte where it is, closing nothing, until ``thaw()``.

    ``narrow``: the client's side takes as little as a link across a network does before it
    waits for acknowledgements (small segments, a small window), rather than loopback's
    megabytes: a client writing to a frozen link then waits in its writes, as it would in
    the field, instead of handing the whole of what it sends to the kernel.
    """

    def __init__(self, target_port: int, delay_s: float = 0.0, narrow: bool = False):
        self.target_port = target_port
        self.delay_s = delay_s
        self.narrow = narrow
        self.hold_after: Optional[int] = None
        self.holding = threading.Event()
        self.freeze_after: Optional[int] = None
        self.flowing = _flowing()
        self.frozen = threading.Event()
        self._lock = threading.Lock()
        self._links: List[_Link] = []
        self._listener: Optional[socket.socket] = None
        self._accept_thread: Optional[threading.Thread] = None
        self._stop_accept = threading.Event()
        self._port = 0
        self._closed = False
        self._listen()

    @property
    def port(self) -> int:
        return self._port

    @property
    def connections(self) -> int:
        """How many proxied connections are open now."""
        with self._lock:
            self._links = [lk for lk in self._links if not lk.closed.is_set()]
            return len(self._links)

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.narrow:  # (set before listen: a connection accepted takes them from here)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind((LOOPBACK, self._port))
        sock.listen(64)
        sock.settimeout(0.1)  # so the accept loop notices a stop request promptly
        self._port = sock.getsockname()[1]
        self._listener = sock
        self._stop_accept = threading.Event()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, args=(sock, self._stop_accept),
            name="cutproxy-accept-%d" % self._port, daemon=True)
        self._accept_thread.start()

    def _accept_loop(self, sock: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                client, _addr = sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            client.settimeout(None)
            if self.narrow:
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP, 2048)
            try:
                upstream = socket.create_connection((LOOPBACK, self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if stop.is_set():
                    client.close()
                    upstream.close()
                    break
                self._links.append(_Link(client, upstream, self.delay_s, self.hold_after,
                                         self.holding, self.flowing, self.freeze_after,
                                         self.frozen, NARROW_RATE if self.narrow else None))

    def _stop_listening(self) -> None:
        self._stop_accept.set()
        thread, self._accept_thread = self._accept_thread, None
        if thread is not None:
            thread.join(timeout=2)
        sock, self._listener = self._listener, None
        if sock is not None:
            sock.close()

    def _drop_links(self) -> None:
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()
        for link in links:
            for t in link.threads:
                t.join(timeout=2)

    def hold_down_after(self, up_bytes: Optional[int]) -> None:
        """Connections made from now on stop passing anything down once ``up_bytes`` went
        up through them (``holding`` is set then): a request that big gets through, its
        answer never does. None: they pass everything again."""
        self.hold_after = up_bytes
        self.holding.clear()

    def freeze_after_up(self, up_bytes: Optional[int]) -> None:
        """Connections made from now on freeze the proxy (``freeze``; ``frozen`` is set then)
        once ``up_bytes`` went up through one of them. None: they do not."""
        self.freeze_after = up_bytes
        self.frozen.clear()

    def freeze(self) -> None:
        """Stall the link: nothing more is read or passed on, either way, on any connection
        (those made meanwhile too), and nothing is closed: what the ends send waits in their
        kernels' buffers, as on a link that stalled without dropping."""
        self.flowing.clear()
        self.frozen.set()

    def thaw(self) -> None:
        """Let everything through again, from where it stopped; no connection freezes the
        proxy again (``freeze_after_up`` is cleared)."""
        self.freeze_after = None
        with self._lock:
            for link in self._links:
                link.freeze_after = None
        self.flowing.set()

    def sent_up(self) -> List[int]:
        """The bytes each connection open now has passed up, counted while a hold is armed."""
        with self._lock:
            return [link.sent_up for link in self._links]

    def cut(self) -> None:
        """Break the link: open connections drop, new ones are refused."""
        self._stop_listening()
        self._drop_links()

    def restore(self) -> None:
        """Mend the link: accept and forward again on the same port."""
        if self._closed:
            raise RuntimeError("proxy closed")
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        """Stop everything; the proxy cannot be restored afterwards."""
        self._closed = True
        self.cut()

    def __enter__(self) -> "CutProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "CutProxy(%d -> %d, delay_s=%s)" % (self._port, self.target_port, self.delay_s)


class HostileListener:
    """A TCP port on 127.0.0.1 that accepts connections and then misbehaves as told:

    - ``silent``: never says a word;
    - ``close``: hangs up at once;
    - ``garbage``: answers as a web server would, not with an SSH banner, then hangs up;
    - ``banner``: an SSH banner, then silence (the key exchange never starts);
    - ``mid-kex``: relays a real sshd (``target_port``) until the server has sent its banner
      and its first key exchange packet, then passes nothing more down: the exchange stalls
      in its middle.
    Connections are held open until ``close()``."""

    MODES = ("silent", "close", "garbage", "banner", "mid-kex")
    GARBAGE = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"

    def __init__(self, mode: str, target_port: Optional[int] = None):
        assert mode in self.MODES and (mode != "mid-kex" or target_port)
        self.mode = mode
        self.target_port = target_port
        self.accepted = 0
        self._socks: List[socket.socket] = []
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="hostile-%s" % mode, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(None)
            self.accepted += 1
            self._socks.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.mode == "close":
                conn.close()
            elif self.mode == "garbage":
                conn.sendall(self.GARBAGE)
                conn.close()
            elif self.mode == "banner":
                conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
                self._drain(conn)
            elif self.mode == "mid-kex":
                self._relay_until_kexinit(conn)
            else:
                self._drain(conn)
        except OSError:
            pass

    def _drain(self, conn: socket.socket) -> None:
        """Read and drop what the client sends, answering nothing, until it hangs up."""
        while conn.recv(65536):
            pass

    def _relay_until_kexinit(self, conn: socket.socket) -> None:
        upstream = socket.create_connection((LOOPBACK, self.target_port), timeout=5)
        upstream.settimeout(None)
        self._socks.append(upstream)

        def up() -> None:
            try:
                while True:
                    data = conn.recv(65536)
                    if not data:
                        return
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=up, daemon=True).start()
        buf = b""
        while b"\n" not in buf:  # the banner line
            buf += upstream.recv(1)
        conn.sendall(buf)
        head = b""
        while len(head) < 4:  # then one binary packet: its length, then its body
            head += upstream.recv(4 - len(head))
        body = b""
        size = int.from_bytes(head, "big")
        while len(body) < size:
            body += upstream.recv(size - len(body))
        conn.sendall(head + body)
        self._drain(upstream)  # the server's later packets are never passed on

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for sock in self._socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def __enter__(self) -> "HostileListener":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SshEnv:
    """What the ``ssh_env`` fixture hands a test: a user key, a known_hosts file, factories."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.user_key_path, self.user_pubkey = make_user_key(self.root / "user")
        self.known_hosts = self.root / "known_hosts"
        self.known_hosts.write_text("")
        self.servers: List[SshServer] = []
        self.proxies: List[CutProxy] = []
        self.clients: List[paramiko.SSHClient] = []

    def new_server(self, name: str, host_key: Optional[Path] = None,
                   key_types: Tuple[str, ...] = ("ed25519",),
                   listen: Tuple[str, ...] = (LOOPBACK,),
                   prefix: Sequence[str] = (), sftp: str = "internal-sftp") -> SshServer:
        """Start a server in ``root/name``; ``host_key`` reuses a key (same host identity),
        ``key_types`` chooses the types of a fresh server's host keys, ``listen`` its
        addresses, ``prefix`` what runs it, ``sftp`` its SFTP subsystem."""
        server = SshServer(self.root / name, self.user_pubkey, host_key=host_key,
                           key_types=key_types, listen=listen, prefix=prefix, sftp=sftp)
        self.servers.append(server)
        return server.start()

    def proxy(self, port: int, delay_s: float = 0.0, narrow: bool = False) -> CutProxy:
        """A CutProxy in front of ``port``, closed at teardown."""
        proxy = CutProxy(port, delay_s=delay_s, narrow=narrow)
        self.proxies.append(proxy)
        return proxy

    def trust(self, server: SshServer, known_hosts_port: Optional[int] = None) -> None:
        """Record ``server``'s host key under the port the client dials (maybe a proxy's)."""
        port = server.port if known_hosts_port is None else known_hosts_port
        with open(self.known_hosts, "a") as f:
            f.write("[%s]:%d %s\n" % (LOOPBACK, port, server.host_public_key))

    def connect(self, port: int, sock: Optional[object] = None,
                timeout: float = 5.0) -> paramiko.SSHClient:
        """A strict paramiko client (known_hosts only, RejectPolicy), closed at teardown."""
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self.clients.append(client)
        client.connect(LOOPBACK, port=port, username="root",
                       key_filename=str(self.user_key_path), look_for_keys=False,
                       allow_agent=False, sock=sock, timeout=timeout, banner_timeout=timeout,
                       auth_timeout=timeout)
        return client

    def close(self) -> None:
        """Close clients first (so sshd children exit on their own), then proxies, servers."""
        for client in self.clients:
            client.close()
        for proxy in self.proxies:
            proxy.close()
        for server in self.servers:
            server.stop()
        self.clients, self.proxies, self.servers = [], [], []


@pytest.fixture
def ssh_env(tmp_path: Path) -> Iterator[SshEnv]:
    """Real sshd servers on loopback, stopped (with their sessions) after the test."""
    env = SshEnv(tmp_path)
    try:
        yield env
    finally:
        env.close()
