"""Where a host really is: the fractui host entry, completed by the admin's ~/.ssh/config.

fractui reads the part of ssh_config that says where a host is and how to log in: ``Host`` and
``Match`` blocks, ``Include``, and ``HostName``, ``Port``, ``User``, ``IdentityFile``,
``ProxyJump`` and ``HostKeyAlias``, with OpenSSH's rules (the first value obtained wins,
IdentityFile accumulates, an Include inside a block applies only when the block does). Other
keywords are OpenSSH's business and are not read. Every mistake becomes an ``SshConfigError``
that says ``file:line: what``: a file fractui cannot read, a line it cannot split, an Include
loop, or a value of a block that applies to the host (a Port that is not a port, a ProxyJump
hop that is not ``[user@]host[:port]``). A mistake in a block for other hosts does not stop
this one. ProxyJump becomes the list of hops that the SSH link crosses, one ``direct-tcpip``
channel at a time.
"""

from __future__ import annotations

import glob
import os
import re
import socket
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple, Union

from fractui.config import HostConfig
from fractui.fleet.patterns import matches_list
from fractui.small_file import NotRead, read_small_file
from fractui.whoami import os_user

# OpenSSH's own limit on Include nesting (READCONF_MAX_DEPTH)
MAX_INCLUDE_DEPTH = 16
# No ssh_config is this big; a bigger file (or /dev/zero) is refused rather than read.
MAX_FILE_BYTES = 4 << 20
# Includes can repeat a file without a loop (A includes B twice, B includes C twice, ...).
MAX_FILES = 1000
# What OpenSSH tries when nothing names a key.
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
_HOP = re.compile(r"^(?:ssh://)?(?:(?P<user>[^@/]+)@)?(?P<host>\[[^\]]+\]|[^:@/\[\]]+)"
                  r"(?::(?P<port>[^:@/]*))?/?$")
_READ = ("hostname", "port", "user", "identityfile", "proxyjump", "hostkeyalias")


class SshConfigError(Exception):
    """A mistake in the admin's ssh_config (``file:line: what``), or one it includes."""


@dataclass(frozen=True)
class Hop:
    """One SSH server to authenticate to on the way."""

    alias: str  # as named in the config
    host: str  # the address dialled
    port: int
    user: str
    identity_files: Tuple[str, ...]
    key_alias: Optional[str] = None  # HostKeyAlias: the name known_hosts knows it by

    @property
    def address(self) -> str:
        """host:port, an IPv6 address in brackets ([::1]:2222), as known_hosts writes it."""
        return "[%s]:%d" % (self.host, self.port) if ":" in self.host else "%s:%d" % (
            self.host, self.port)


@dataclass(frozen=True)
class Route:
    target: Hop
    jumps: Tuple[Hop, ...] = ()  # crossed in order; the first is dialled directly
    name: str = ""  # the host's name in fractui's config

    @property
    def hops(self) -> Tuple[Hop, ...]:
        return self.jumps + (self.target,)


# --- reading the files ---------------------------------------------------------------------

@dataclass(frozen=True)
class _Line:
    where: str  # file:line
    keyword: str  # lower case
    args: Tuple[str, ...]
    problem: Optional[str] = None  # what is wrong with it, said if it applies to the host


@dataclass(frozen=True)
class _Include:
    where: str
    files: Tuple[Tuple[Union[_Line, "_Include"], ...], ...]  # each file's lines, glob order


_Entries = Tuple[Union[_Line, _Include], ...]


def split_words(text: str, where: str) -> List[str]:
    """A line's words as OpenSSH splits them: blanks (and one ``=`` after the keyword)
    separate, double quotes group, an unquoted ``#`` starts a comment."""
    words: List[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t\r":
            i += 1
        if i >= n or text[i] == "#":
            break
        word: List[str] = []
        while i < n and text[i] not in " \t\r":
            c = text[i]
            if c == '"':
                end = text.find('"', i + 1)
                if end < 0:
                    raise SshConfigError("%s: unterminated quote" % where)
                word.append(text[i + 1:end])
                i = end + 1
            elif c == "\\" and i + 1 < n and text[i + 1] in ' "\\':
                word.append(text[i + 1])
                i += 2
            else:
                word.append(c)
                i += 1
        words.append("".join(word))
    if words and "=" in words[0] and not words[0].startswith("="):
        keyword, _, rest = words[0].partition("=")  # Keyword=value
        words[0:1] = [keyword] + ([rest] if rest else [])
    elif len(words) > 1 and words[1].startswith("="):  # Keyword = value, Keyword =value
        rest = words[1][1:]
        words[1:2] = [rest] if rest else []
    return words


class _Reader:
    def __init__(self) -> None:
        self.files = 0

    def read(self, path: str, chain: Tuple[str, ...] = (),
             included_at: Optional[str] = None) -> _Entries:
        """The file's lines; ``included_at`` is the Include line that names it, where a
        problem with the file itself (a loop, its size, its kind) is reported."""
        def refuse(what: str) -> SshConfigError:
            if included_at is None:
                return SshConfigError("%s: %s" % (path, what))
            return SshConfigError("%s: Include %s: %s" % (included_at, path, what))

        real = os.path.realpath(path)
        if real in chain:
            return_to = list(chain[chain.index(real):]) + [real]
            raise refuse("Include loop: %s" % " -> ".join(return_to))
        if len(chain) > MAX_INCLUDE_DEPTH:
            raise refuse("Include nested more than %d deep" % MAX_INCLUDE_DEPTH)
        self.files += 1
        if self.files > MAX_FILES:
            raise refuse("Include brings in more than %d files" % MAX_FILES)
        data = _read_file(path)
        if isinstance(data, str):
            raise refuse(data)
        entries: List[Union[_Line, _Include]] = []
        for number, raw in enumerate(data.split(b"\n"), 1):
            where = "%s:%d" % (path, number)
            text = raw.decode("utf-8", errors="surrogateescape").strip()
            if not text or text.startswith("#"):
                continue
            first = text.replace("=", " ").split()[:1]
            keyword = first[0].lower() if first else ""
            if keyword not in _READ + ("host", "match", "include"):
                continue  # OpenSSH's business, not read here
            problem = None
            if any("\udc80" <= c <= "\udcff" or c == "\0" for c in text):
                problem = "%s: not UTF-8 text" % where
            try:
                words = split_words(text, where)
            except SshConfigError as err:
                problem = problem or str(err)
                words = [keyword]
            args = tuple(words[1:])
            if not args and problem is None:
                problem = "%s: %s needs a value" % (where, words[0])
            if problem is not None and keyword in _READ:  # a value: wrong only where it applies
                entries.append(_Line(where, keyword, args, problem))
                continue
            if problem is not None:  # Host, Match, Include: the file's structure is unclear
                raise SshConfigError(problem)
            if keyword == "include":
                entries.append(_Include(where, tuple(
                    self.read(p, chain + (real,), where) for p in _include_paths(args))))
            else:
                entries.append(_Line(where, keyword, args))
        return tuple(entries)


def _read_file(path: str) -> Union[bytes, str]:
    """The file's bytes, or why it is not read (fractui.small_file); a missing file is an empty
    one, as for OpenSSH."""
    try:
        return read_small_file(path, MAX_FILE_BYTES, "an ssh_config")
    except FileNotFoundError:
        return b""
    except NotRead as err:
        return str(err)


def _include_paths(args: Sequence[str]) -> List[str]:
    """Relative Includes are in ~/.ssh, as for OpenSSH's user config; each glob sorted."""
    found: List[str] = []
    base = os.path.expanduser("~/.ssh")
    for pattern in args:
        pattern = os.path.expanduser(pattern)
        if not os.path.isabs(pattern):
            pattern = os.path.join(base, pattern)
        found += sorted(glob.glob(pattern))
    return found


# --- looking a host up -----------------------------------------------------------------------

@dataclass
class _Found:
    """What the blocks that apply say, each value with the line it came from."""

    alias: str
    user: Optional[str] = None  # the user fractui's config names, as ssh's -l would
    values: Dict[str, Tuple[str, str]] = field(default_factory=dict)  # keyword -> (value, where)
    identities: List[Tuple[str, str]] = field(default_factory=list)
    wants_final: bool = False

    def get(self, keyword: str) -> Optional[str]:
        value = self.values.get(keyword)
        return value[0] if value else None

    def where(self, keyword: str) -> str:
        return self.values[keyword][1]


class SshConfig:
    """An ssh_config with its Includes read: ``lookup(alias)`` as OpenSSH would see it."""

    def __init__(self, entries: _Entries):
        self.entries = entries

    def lookup(self, alias: str, user: Optional[str] = None) -> _Found:
        found = _Found(alias, user)
        self._walk(self.entries, found, final=False, never=False)
        if found.wants_final:  # Match final: OpenSSH reads the files once more
            self._walk(self.entries, found, final=True, never=False)
        return found

    def _walk(self, entries: _Entries, found: _Found, final: bool, never: bool) -> None:
        active = not never
        for entry in entries:
            if isinstance(entry, _Include):
                for body in entry.files:  # each file starts in the including block's state
                    self._walk(body, found, final, never or not active)
            elif entry.keyword == "host":
                active = not never and matches_list(entry.args, found.alias)
            elif entry.keyword == "match":
                active = not never and _match(entry, found, final)
            elif active and entry.problem is not None and (
                    entry.keyword == "identityfile" or entry.keyword not in found.values):
                raise SshConfigError(entry.problem)
            elif active and entry.keyword == "identityfile":
                if (entry.args[0], entry.where) not in found.identities:  # once, if read twice
                    found.identities.append((entry.args[0], entry.where))
            elif active and entry.keyword not in found.values:
                found.values[entry.keyword] = (entry.args[0], entry.where)


def _match(line: _Line, found: _Found, final: bool) -> bool:
    """A ``Match`` line's criteria, all of which must hold (OpenSSH's match_cfg_line)."""
    args = list(line.args)
    result = True
    while args:
        word = args.pop(0)
        negate = word.startswith("!")
        criterion = word[1:].lower() if negate else word.lower()
        if criterion == "all":
            hit = True
        elif criterion == "final":
            found.wants_final = True
            hit = final
        elif criterion == "canonical":
            hit = False  # fractui does not canonicalize host names
        elif criterion in ("host", "originalhost", "user", "localuser", "tagged"):
            if not args:
                raise SshConfigError("%s: Match %s needs a pattern" % (line.where, word))
            patterns = args.pop(0).split(",")
            subject = {"host": found.get("hostname") or found.alias,
                       "originalhost": found.alias,
                       "user": found.user or found.get("user") or _local_user(),
                       "localuser": _local_user(), "tagged": ""}[criterion]
            if criterion == "host" and "%" in subject:
                subject = subject.replace("%h", found.alias).replace("%%", "%")
            hit = matches_list(patterns, subject)
        elif criterion in ("exec", "localnetwork"):
            raise SshConfigError(
                "%s: Match %s is not supported: fractui runs no commands and reads no "
                "interfaces for its ssh_config; give the host's address, port, user and key "
                "in fractui's config instead" % (line.where, criterion))
        else:
            raise SshConfigError("%s: unknown Match criterion %r" % (line.where, word))
        if hit == negate:
            result = False
    return result


def load_ssh_config(path: str) -> SshConfig:
    """The admin's ssh_config with every Include read; a missing file is an empty config."""
    return SshConfig(_Reader().read(os.path.expanduser(path)))


# --- values ----------------------------------------------------------------------------------

def parse_port(text: str, where: str) -> int:
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 1 <= int(text) <= 65535:
        raise SshConfigError("%s: port %r is not a number from 1 to 65535" % (where, text))
    return int(text)


def _expand(text: str, where: str, tokens: Dict[str, str]) -> str:
    def one(m: "re.Match[str]") -> str:
        if m.group(1) not in tokens:
            raise SshConfigError("%s: unknown token %%%s in %r" % (where, m.group(1), text))
        return tokens[m.group(1)]

    if text.endswith("%") and not text.endswith("%%"):
        raise SshConfigError("%s: a lone %% at the end of %r" % (where, text))
    return re.sub(r"%(.)", one, text)


def _usable(text: str) -> bool:
    return bool(text) and not any(c.isspace() or ord(c) < 32 or c == "\x7f" for c in text)


def _hop(ssh: SshConfig, alias: str, named_at: str, user: Optional[str] = None,
         port: Optional[int] = None, identity: Optional[str] = None) -> Hop:
    """One hop: what fractui's config says, else what the ssh_config blocks for ``alias``
    say. ``named_at`` says where the alias itself was written, for errors."""
    found = ssh.lookup(alias, user)
    host, host_at = alias, named_at
    if found.get("hostname"):
        host_at = found.where("hostname")
        host = _expand(found.get("hostname") or "", host_at, {"h": alias, "%": "%"})
    if not _usable(host):
        raise SshConfigError("%s: %r is not a host name or address" % (host_at, host))
    if port is None:
        port = parse_port(found.get("port") or "", found.where("port")) if found.get(
            "port") else 22
    if user is None and found.get("user"):
        user = found.get("user")
        if not _usable(user or ""):
            raise SshConfigError("%s: %r is not a user name" % (found.where("user"), user))
    user = user or _local_user()
    if identity:
        identities = [os.path.expanduser(identity)]
    else:
        tokens = {"%": "%", "d": os.path.expanduser("~"), "u": _local_user(), "h": host,
                  "r": user, "p": str(port), "n": alias, "i": str(os.getuid()),
                  "l": socket.gethostname().split(".")[0], "L": socket.gethostname()}
        identities = [os.path.expanduser(_expand(value, where, tokens))
                      for value, where in found.identities if value.lower() != "none"]
    return Hop(alias=alias, host=host, port=port, user=user,
               identity_files=tuple(identities), key_alias=found.get("hostkeyalias"))


def parse_jumps(ssh: SshConfig, spec: Optional[str], where: str) -> Tuple[Hop, ...]:
    """``[user@]host[:port],...`` (or ``ssh://`` URIs) as OpenSSH's ProxyJump; each hop's own
    ssh_config applies (its HostName, Port, User, IdentityFile), but not its own ProxyJump."""
    if not spec or spec.strip().lower() == "none":
        return ()
    hops = []
    for item in spec.split(","):
        m = _HOP.match(item.strip())
        if not m:
            raise SshConfigError("%s: bad ProxyJump hop %r in %r: expected [user@]host[:port]"
                                 % (where, item, spec))
        port = parse_port(m.group("port"), where) if m.group("port") is not None else None
        hops.append(_hop(ssh, m.group("host").strip("[]"), where, user=m.group("user"),
                         port=port))
    return tuple(hops)


def resolve(host: HostConfig, ssh_config_path: str) -> Route:
    """The route to a configured host: fractui's keys win over ~/.ssh/config's."""
    ssh = load_ssh_config(ssh_config_path)
    alias = host.host or host.name
    named_at = "host %s in fractui's config" % host.name
    target = _hop(ssh, alias, named_at, user=host.user, port=host.port,
                  identity=host.identity_file)
    if host.proxy_jump is not None:
        jump_spec, where = host.proxy_jump, "proxy_jump of " + named_at
    else:
        found = ssh.lookup(alias, host.user)
        jump_spec = found.get("proxyjump")
        where = found.where("proxyjump") if jump_spec else ""
    defaults = tuple(p for p in (os.path.expanduser(d) for d in DEFAULT_IDENTITIES)
                     if os.path.exists(p))
    # a hop that names no key of its own is offered the host's key, then OpenSSH's defaults
    jumps = tuple(replace(j, identity_files=j.identity_files or target.identity_files + defaults)
                  for j in parse_jumps(ssh, jump_spec, where))
    if not target.identity_files:
        target = replace(target, identity_files=defaults)
    return Route(target=target, jumps=jumps, name=host.name)


def _local_user() -> str:
    return os_user()  # as OpenSSH: the local account, never $USER
