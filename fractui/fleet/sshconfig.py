"""Where a host really is: the fractui host entry, completed by the admin's ~/.ssh/config.

paramiko parses ssh_config but hands back ``Include`` and ``ProxyJump`` as plain strings, so
Includes are inlined here (globs, paths relative to ~/.ssh) and ProxyJump is turned into the list
of hops that the SSH link then crosses one ``direct-tcpip`` channel at a time.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, replace
from typing import List, Optional, Tuple

import paramiko

from fractui.config import HostConfig

MAX_INCLUDE_DEPTH = 16
# What OpenSSH tries when nothing names a key.
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
_INCLUDE = re.compile(r"^\s*include\s+(.+?)\s*$", re.IGNORECASE)
_HOP = re.compile(r"^(?:(?P<user>[^@]+)@)?(?P<host>\[[^\]]+\]|[^:]+)(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class Hop:
    """One SSH server to authenticate to on the way."""

    alias: str  # as named in the config; the name known_hosts is checked against is ``host``
    host: str
    port: int
    user: str
    identity_files: Tuple[str, ...]


@dataclass(frozen=True)
class Route:
    target: Hop
    jumps: Tuple[Hop, ...] = ()  # crossed in order; the first is dialled directly

    @property
    def hops(self) -> Tuple[Hop, ...]:
        return self.jumps + (self.target,)


def _inline_includes(path: str, depth: int = 0) -> str:
    if depth > MAX_INCLUDE_DEPTH:
        raise ValueError("%s: Include nested more than %d deep" % (path, MAX_INCLUDE_DEPTH))
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return ""
    out: List[str] = []
    base = os.path.expanduser("~/.ssh")
    for line in lines:
        m = _INCLUDE.match(line)
        if not m:
            out.append(line)
            continue
        for pattern in m.group(1).split():
            pattern = os.path.expanduser(pattern.strip('"'))
            if not os.path.isabs(pattern):
                pattern = os.path.join(base, pattern)
            for included in sorted(glob.glob(pattern)):
                out.append(_inline_includes(included, depth + 1))
    return "\n".join(out)


def load_ssh_config(path: str) -> paramiko.SSHConfig:
    """The admin's ssh_config with every Include inlined where it stands."""
    return paramiko.SSHConfig.from_text(_inline_includes(path))


def _hop(ssh: paramiko.SSHConfig, alias: str, user: Optional[str] = None,
         port: Optional[int] = None, identity: Optional[str] = None) -> Hop:
    found = ssh.lookup(alias)
    identities = [identity] if identity else list(found.get("identityfile", []))
    return Hop(alias=alias, host=found.get("hostname", alias),
               port=int(port or found.get("port", 22)),
               user=user or found.get("user") or _local_user(),
               identity_files=tuple(os.path.expanduser(i) for i in identities))


def parse_jumps(ssh: paramiko.SSHConfig, spec: Optional[str]) -> Tuple[Hop, ...]:
    """``[user@]host[:port],...`` as OpenSSH's ProxyJump; each hop's own ssh_config applies
    (its HostName, Port, User, IdentityFile), but not its own ProxyJump."""
    if not spec or spec.strip().lower() == "none":
        return ()
    hops = []
    for item in spec.split(","):
        m = _HOP.match(item.strip())
        if not m:
            raise ValueError("bad ProxyJump hop %r in %r: expected [user@]host[:port]"
                             % (item, spec))
        host = m.group("host").strip("[]")
        hops.append(_hop(ssh, host, user=m.group("user"),
                         port=int(m.group("port")) if m.group("port") else None))
    return tuple(hops)


def resolve(host: HostConfig, ssh_config_path: str) -> Route:
    """The route to a configured host: fractui's keys win over ~/.ssh/config's."""
    ssh = load_ssh_config(ssh_config_path)
    alias = host.host or host.name
    target = _hop(ssh, alias, user=host.user, port=host.port, identity=host.identity_file)
    jump_spec = host.proxy_jump if host.proxy_jump is not None else ssh.lookup(alias).get(
        "proxyjump")
    defaults = tuple(p for p in (os.path.expanduser(d) for d in DEFAULT_IDENTITIES)
                     if os.path.exists(p))
    # a hop that names no key of its own is offered the host's key, then OpenSSH's defaults
    jumps = tuple(replace(j, identity_files=j.identity_files or target.identity_files + defaults)
                  for j in parse_jumps(ssh, jump_spec))
    if not target.identity_files:
        target = replace(target, identity_files=defaults)
    return Route(target=target, jumps=jumps)


def _local_user() -> str:
    import getpass

    return getpass.getuser()
