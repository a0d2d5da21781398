"""Host keys: checked against known_hosts as OpenSSH checks them, never accepted on their own.

A host is *known* when any line of known_hosts names it — by a pattern (``*``, ``?``, ``!``),
a hashed name, ``[host]:port`` for a port other than 22, or its HostKeyAlias — whatever the type
of the key on that line. A known host that offers a key not on file for it has a CHANGED key,
even when the key on file is of another type (an impostor with only an RSA key must not pass for
a new host of one known by its ed25519 key); a line that names the host but cannot be read
counts as on file, since nothing says the offered key is the one it held. A key on a matching
``@revoked`` line is refused always. Only a host that no line names is UNKNOWN, and only an
unknown key can be trusted: ``fractui trust HOST`` adds exactly one line after the admin
confirms, appended in place as OpenSSH's ``ssh`` appends (the other lines as they were);
``@cert-authority`` lines are left as they are (fractui does not check host certificates).

So that a host known by one type of key is not asked for another, the link offers the key types
on file first, as OpenSSH orders its HostKeyAlgorithms.
"""

from __future__ import annotations

import base64
import binascii
import errno
import fcntl
import hashlib
import hmac
import logging
import os
import resource
import shlex
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from fractui.fleet.patterns import matches_list
from fractui.small_file import NotRead, read_small_file
from fractui.state_files import open_append
from fractui.words import count
from remote_agent.daemon.trust import check_tree
from remote_agent.failing import Failures
from remote_agent.room import NO_ROOM

if TYPE_CHECKING:  # keys come from the link; a fleet with no SSH host never loads paramiko
    import paramiko

log = logging.getLogger("fractui.fleet")

# The signature algorithms that prove each type of key on file (what paramiko negotiates).
ALGORITHMS = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}
MARKERS = ("@revoked", "@cert-authority")
PASSED_OVER = Failures(log, ("read", "reads"))
"""The lines each known_hosts file has that name no host, said once while they are the same:
the file is read at every connect of every SSH host, twice a hop."""


def host_id(host: str, port: int) -> str:
    """How OpenSSH names a host in known_hosts."""
    return host if port == 22 else "[%s]:%d" % (host, port)


def fingerprint(key: paramiko.PKey) -> str:
    return blob_fingerprint(key.asbytes())


def blob_fingerprint(blob: bytes) -> str:
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class KnownLine:
    """One line of known_hosts that names some host."""

    number: int
    marker: Optional[str]  # "@revoked", "@cert-authority" or None
    names: str  # the host field as written
    key_type: str
    blob: Optional[bytes]  # None when the key cannot be read
    problem: Optional[str] = None  # why the key cannot be read

    def names_host(self, name: str) -> bool:
        if self.names.startswith("|"):
            return _hashed_match(self.names, name)
        return matches_list(self.names.split(","), name)

    def describe(self) -> str:
        if self.blob is None:
            return "line %d names it but cannot be read (%s)" % (self.number, self.problem)
        if self.key_type not in ALGORITHMS:
            return "line %d: %s, a key type fractui cannot check" % (self.number, self.key_type)
        return "line %d: %s %s" % (self.number, self.key_type, blob_fingerprint(self.blob))


def _hashed_match(field: str, name: str) -> bool:
    """``|1|salt|hash``: HMAC-SHA1 of the name keyed by the salt (OpenSSH's HashKnownHosts)."""
    parts = field.split("|")
    if len(parts) != 4 or parts[1] != "1":
        return False
    try:
        salt, digest = base64.b64decode(parts[2]), base64.b64decode(parts[3])
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)


def _parse(number: int, line: str, passed: List[str]) -> Optional[KnownLine]:
    """The line, or None with why it was passed over added to ``passed``."""
    words = line.split()
    marker = None
    if words and words[0].startswith("@"):
        marker = words.pop(0)
        if marker not in MARKERS:
            passed.append("line %d: unknown marker %s" % (number, marker))
            return None
    if not words:
        passed.append("line %d: no host field" % number)
        return None
    names, rest = words[0], words[1:]
    if len(rest) < 2:
        return KnownLine(number, marker, names, rest[0] if rest else "?", None,
                         "no key after the host field")
    key_type = rest[0]
    try:
        blob = base64.b64decode(rest[1].encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeError):
        return KnownLine(number, marker, names, key_type, None, "the key is not base64")
    inner = None
    if len(blob) >= 4:
        size = struct.unpack(">I", blob[:4])[0]
        inner = blob[4:4 + size].decode("ascii", errors="replace") if size <= 64 else None
    if inner != key_type:
        return KnownLine(number, marker, names, key_type, None,
                         "the key data is not a %s key" % key_type)
    return KnownLine(number, marker, names, key_type, blob)


class UntrustedHostKey(Exception):
    """The server's key is not one known_hosts vouches for: ``kind`` is "unknown" (no line
    names the host; ``on_file``: the lines that hold its key for other names), "changed"
    (lines name it, none holds this key), "revoked" (a matching
    @revoked line holds it) or "unreadable" (a matching @revoked line cannot be read)."""

    def __init__(self, kind: str, name: str, key: paramiko.PKey, path: str, host: str,
                 on_file: Sequence[KnownLine] = ()):
        self.kind, self.name, self.key, self.path, self.host = kind, name, key, path, host
        self.on_file = tuple(on_file)
        offered = "%s %s" % (key.get_name(), fingerprint(key))
        if kind == "unknown":
            text = "unknown host key for %s: %s; %scheck it, then run fractui trust %s" % (
                name, offered, self.elsewhere(), host)
        elif kind == "unreadable":
            text = ("%s has an @revoked line for %s that cannot be read (%s): whether the key "
                    "it offers (%s) is revoked cannot be told; fix or remove that line" % (
                        path, name, "; ".join(line.describe() for line in self.on_file),
                        offered))
        elif kind == "revoked":
            text = ("the host key of %s is REVOKED: it offers %s, marked @revoked in %s (%s); "
                    "refused" % (name, offered, path, ", ".join(
                        "line %d" % line.number for line in self.on_file)))
        else:
            text = ("the host key of %s CHANGED: it offers %s, which is not on file for it in "
                    "%s (%s). Someone may be impersonating the host. If it was really "
                    "reinstalled, remove the old line on purpose (%s), then run fractui trust "
                    "%s" % (name, offered, path, "; ".join(line.describe() for line in
                                                            self.on_file),
                            self.removal(), host))
        super().__init__(text)

    def elsewhere(self) -> str:
        """For an unknown key: the lines that hold it for other names (given as ``on_file``),
        as "localhost" is another name of 127.0.0.1 and of ::1, and [::1]:2222 another of
        [127.0.0.1]:2222. OpenSSH looks a key up by the name dialled alone (CheckHostIP is
        off by default), and so does fractui: these lines say why it is unknown all the same."""
        if not self.on_file:
            return ""
        return ("%s holds this very key for %s: the same host under another name or address "
                "family? The key is looked up by the name dialled alone, as OpenSSH looks it "
                "up; " % (self.path, ", ".join("%s (line %d)" % (
                    "a hashed name" if line.names.startswith("|") else line.names, line.number)
                    for line in self.on_file)))

    @property
    def trustable(self) -> bool:
        return self.kind == "unknown"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)

    def fix(self) -> str:
        """What the admin does about it, in one line."""
        if self.kind == "unknown":
            return "check the fingerprint, then fractui trust %s" % self.host
        if self.kind == "changed":
            return "find out why it changed; if the host was really reinstalled, %s, then " \
                   "fractui trust %s" % (self.removal(), self.host)
        if self.kind == "revoked":
            return "give the host a new key (this one is revoked), then fractui trust %s" % (
                self.host)
        return "fix or remove %s in %s" % (", ".join(
            "line %d" % line.number for line in self.on_file), self.path)

    def removal(self) -> str:
        """The command that removes the lines naming this host, as OpenSSH suggests it."""
        return "ssh-keygen -f %s -R %s" % (shlex.quote(self.path), shlex.quote(self.name))


# A known_hosts of a few hundred thousand hosts; a bigger file (or /dev/zero) is refused.
MAX_KNOWN_HOSTS_BYTES = 64 << 20


class KnownHostsUnreadable(OSError):
    """The known_hosts file cannot be read: no host key can be checked (said with its path)."""


class WriteCutShort(OSError):
    """A line's write cut short with no cause the system said: no errno, only its words."""


@dataclass
class KnownHosts:
    path: str

    def lines(self) -> List[KnownLine]:
        """Every line that names a host. Damaged lines are kept (with their problem) when
        the host field can be read, so that a host they name never passes for unknown."""
        try:
            data = read_small_file(self.path, MAX_KNOWN_HOSTS_BYTES, "a known_hosts file")
        except FileNotFoundError:
            return []
        except NotRead as err:
            raise KnownHostsUnreadable("known_hosts %s: %s" % (self.path, err)) from None
        found: List[KnownLine] = []
        passed: List[str] = []
        for number, raw in enumerate(data.decode("utf-8", "replace").split("\n"), 1):
            line = raw.strip()
            if line and not line.startswith("#"):
                parsed = _parse(number, line, passed)
                if parsed is not None:
                    found.append(parsed)
        if passed:
            PASSED_OVER.failed(self.path, "known_hosts %s: passed over: %s%s" % (
                self.path, "; ".join(passed[:3]), "; and %s more" % count(len(passed) - 3, "line")
                if len(passed) > 3 else ""))
        else:
            PASSED_OVER.worked(self.path, "known_hosts %s: every line is read" % self.path)
        return found

    def about(self, name: str) -> Tuple[List[KnownLine], List[KnownLine]]:
        """(the lines that vouch for or against ``name``'s keys, its @revoked lines)."""
        on_file, revoked = [], []
        for line in self.lines():
            if line.names_host(name):
                if line.marker is None:
                    on_file.append(line)
                elif line.marker == "@revoked":
                    revoked.append(line)
        return on_file, revoked

    def key_types(self, name: str) -> List[str]:
        """The types of the readable keys on file for ``name``."""
        return [line.key_type for line in self.about(name)[0] if line.blob is not None]

    def check(self, name: str, key: paramiko.PKey, host: str) -> None:
        """Return if known_hosts vouches for this key of ``name``; raise UntrustedHostKey
        otherwise. ``host`` is the host's name in fractui's config, for the messages."""
        on_file, revoked = self.about(name)
        blob = key.asbytes()
        bad = [line for line in revoked if line.blob == blob]
        if bad:
            raise UntrustedHostKey("revoked", name, key, self.path, host, bad)
        unreadable = [line for line in revoked if line.blob is None]
        if unreadable:
            raise UntrustedHostKey("unreadable", name, key, self.path, host, unreadable)
        if any(line.blob == blob for line in on_file):
            return
        if on_file:
            raise UntrustedHostKey("changed", name, key, self.path, host, on_file)
        raise UntrustedHostKey("unknown", name, key, self.path, host, [
            line for line in self.lines() if line.marker is None and line.blob == blob])

    def append(self, name: str, key: paramiko.PKey) -> str:
        """Add one line for this key at the end of the file, in place, as OpenSSH's ``ssh``
        adds one: a single write to the file opened O_APPEND, which the kernel puts at the end
        whole, after whatever another writer (a second fractui, an ``ssh`` that takes no lock
        of ours) added meanwhile, and which keeps the file itself: a hard link, or the target
        of a symlink of ours (a dotfiles checkout's), is written, not replaced; nothing is left
        beside it. fsync'd before it returns. A write cut short (a full disk, a file size
        limit) is an OSError (``_cut_short``), the part written made a comment line in place
        (never cut off:
        another writer's line may follow it already). UnsafePath where another
        user could have made the file or its folder, or could change them: they could pass
        their machine off as a host, or have the line written through a link of theirs."""
        line = "%s %s %s\n" % (name, key.get_name(), key.get_base64())
        check_tree(self.path, "known_hosts file", runner="fractui")  # then no one else's
        # link is on the way, and ours are followed; the file itself is opened with no link
        real = os.path.realpath(self.path)
        made = not os.path.lexists(real)
        fd = open_append(real, "known_hosts file", os.O_RDWR, readable=True)
        try:
            size = os.fstat(fd).st_size
            if size > MAX_KNOWN_HOSTS_BYTES:
                raise KnownHostsUnreadable("known_hosts %s: over %d MiB: not a known_hosts "
                                           "file" % (real, MAX_KNOWN_HOSTS_BYTES >> 20))
            data = (b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b"") + \
                line.encode()
            written = os.write(fd, data)
            if written < len(data):  # (writing the rest would fail, or at a file size
                # limit have the kernel kill us with the part written)
                end = os.lseek(fd, 0, os.SEEK_CUR)
                cut = _cut_short(fd, end, written, len(data))
                _comment_out(fd, end - written, written)
                raise cut
            os.fsync(fd)
        finally:
            os.close(fd)
        if made:  # its name too, before trust says the key is added
            folder = os.open(os.path.dirname(real), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        return line


def _cut_short(fd: int, end: int, written: int, size: int) -> OSError:
    """The error of a write of ``size`` bytes that wrote ``written``, up to ``end``: a short
    write gives no cause. This process's file size limit is known exactly, and the kernel cuts
    a write at it: EFBIG where the write reached it. Else the filesystem's free space, read
    just after (it may have changed since, and a quota is not in it), is said as that reading,
    the likely cause, never as the write's error: an ENOSPC said for a quota's EDQUOT, or an
    EFBIG for a disk emptied since, misled the admin."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and end >= limit:
        return OSError(errno.EFBIG, "%s: this process's file size limit, %d bytes" % (
            os.strerror(errno.EFBIG), limit))
    disk = os.fstatvfs(fd)
    room = disk.f_bfree if os.geteuid() == 0 else disk.f_bavail
    return WriteCutShort("the write was cut short, %d bytes of %d written, its cause not said%s"
                         % (written, size, NO_ROOM if room * disk.f_frsize < size - written
                            else ""))


def _comment_out(fd: int, start: int, size: int) -> None:
    """Make the ``size`` bytes of a line cut short at ``start`` a comment line in place: a
    newline, '#'s, a newline (one newline where only one byte was written). Truncating the
    file back to ``start`` would cut a line another writer (a ``ssh``, which takes no lock of
    ours) appended after them meanwhile; written over, they take no room the disk lacks, and
    end their line whether or not the next writer began its own with a newline. fsync'd, as
    a line added is: else a crash could leave the part written, a line naming the host with
    no key it offers (read as a changed key), on disk without the comment over it."""
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_APPEND)  # (else
    # Linux's pwrite appends)
    os.pwrite(fd, b"\n" if size == 1 else b"\n" + b"#" * (size - 2) + b"\n", start)
    os.fsync(fd)


def preferred_algorithms(known_types: Sequence[str], available: Sequence[str]) -> List[str]:
    """``available`` with the algorithms for the key types on file first (OpenSSH's
    order_hostkeyalgs), so a host with several keys proves the one we know."""
    wanted = [a for t in known_types for a in ALGORITHMS.get(t, ())]
    return [a for a in available if a in wanted] + [a for a in available if a not in wanted]
