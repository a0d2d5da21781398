"""Host keys: checked against known_hosts, never accepted on their own.

An unknown or changed key is refused with its SHA256 fingerprint; ``fractui trust HOST`` adds
exactly one line to known_hosts after the admin confirms. The file is only ever appended to:
paramiko's ``HostKeys.save`` would rewrite it and drop comments and markers.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from dataclasses import dataclass

import paramiko
import paramiko.hostkeys

log = logging.getLogger("fractui.fleet")


def host_id(host: str, port: int) -> str:
    """How OpenSSH names a host in known_hosts."""
    return host if port == 22 else "[%s]:%d" % (host, port)


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class UntrustedHostKey(Exception):
    """The server's key is not one known_hosts vouches for."""

    def __init__(self, host: str, port: int, key: paramiko.PKey, changed: bool):
        self.host, self.port, self.key, self.changed = host, port, key, changed
        if changed:
            text = ("the host key of %s CHANGED: it is now %s %s; if that is expected, remove "
                    "the old line from known_hosts, then run fractui trust")
        else:
            text = "unknown host key for %s: %s %s; check it, then run fractui trust"
        super().__init__(text % (host_id(host, port), key.get_name(), fingerprint(key)))

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)


@dataclass
class KnownHosts:
    path: str

    def _entries(self) -> paramiko.HostKeys:
        """The file's keys. Lines paramiko cannot use (markers such as @cert-authority, keys of
        types it does not know, damaged lines) are passed over, as they are not ours to judge;
        hashed host names are understood."""
        keys = paramiko.HostKeys()
        if not os.path.exists(self.path):
            return keys
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for number, raw in enumerate(f, 1):
                line = raw.strip()
                if not line or line.startswith(("#", "@")):
                    continue
                try:
                    entry = paramiko.hostkeys.HostKeyEntry.from_line(line, number)
                except paramiko.hostkeys.InvalidHostKey as err:
                    log.warning("%s:%d: skipping a line paramiko cannot read: %s",
                                self.path, number, err)
                    continue
                if entry is not None:
                    for name in entry.hostnames:
                        keys.add(name, entry.key.get_name(), entry.key)
        return keys

    def check(self, host: str, port: int, key: paramiko.PKey) -> None:
        """Return if known_hosts vouches for this key; raise UntrustedHostKey otherwise."""
        known = self._entries().lookup(host_id(host, port))
        if known is None:
            raise UntrustedHostKey(host, port, key, changed=False)
        same_type = known.get(key.get_name())
        if same_type is None:  # known by a key of another type only: new to us, not changed
            raise UntrustedHostKey(host, port, key, changed=False)
        if same_type.asbytes() != key.asbytes():
            raise UntrustedHostKey(host, port, key, changed=True)

    def append(self, host: str, port: int, key: paramiko.PKey) -> str:
        """Add one line for this key, leaving every other line as it was."""
        line = "%s %s %s\n" % (host_id(host, port), key.get_name(), key.get_base64())
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), mode=0o700, exist_ok=True)
        needs_newline = False
        if os.path.exists(self.path) and os.path.getsize(self.path):
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                needs_newline = f.read(1) != b"\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(("\n" if needs_newline else "") + line)
        return line
