"""The admin's configuration file: the fleet's hosts, queues, teams, scheduler and TUI settings.

The file is TOML, read with ``tomllib``. Every mistake an admin can make in it becomes a
``ConfigError`` whose text is ``file:line: what is wrong``, so the CLI can print it and exit 2.
tomllib gives no line numbers for values, so ``_Locator`` finds them by scanning the text.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
import json
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from typing import Any, Callable, Sequence

import platformdirs

from remote_agent.gpu.models import models as gpu_models
from remote_agent.daemon import settings as agent_settings
from remote_agent.daemon.settings import AgentSettings
from remote_agent.daemon.bridge import CONNECT_TIMEOUT_S as BRIDGE_WAIT_S
from remote_agent.jobs.runtime.image import image_problem as agent_image_problem
from remote_agent.gpu.models import parse_sim_spec

from fractui.small_file import NotRead, read_small_file
from fractui.store_url import sqlite_path, sqlite_url, url_problem
from fractui.words import as_typed, close_to, portion, quoted

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib


class ConfigError(Exception):
    """A mistake in the config file, with the line to fix so the admin need not hunt for it."""

    def __init__(self, path: str | None, line: int | None, message: str) -> None:
        super().__init__(path, line, message)
        self.path = path
        self.line = line
        self.message = message

    def __str__(self) -> str:
        if self.path is None:  # a Config built in code (the demo) has no file to point at
            return self.message
        if self.line is None:
            return f"{shown_path(self.path)}: {self.message}"
        return f"{shown_path(self.path)}:{self.line}: {self.message}"


MAX_SHOWN_PATH = 256  # characters of a path a message names as it is; a longer one is cut


def shown_path(path: str) -> str:
    """A path typed by someone, as a message names it: as it is, or quoted as every word given
    is (``words.quoted``) where it holds a character that is not printable, which a terminal
    would act on or lose (messages to one are text only), so the message named another path,
    or where it is longer than any real one needs to be told apart."""
    return as_typed(path, MAX_SHOWN_PATH)


class NoConfig(ConfigError):
    """The config file does not exist: the CLI says where it looked and what to do instead."""


@dataclass(frozen=True)
class HostConfig:
    """One GPU host of the fleet: how to reach it (SSH, a local pipe, or an exec program) and
    how to run the agent there."""

    name: str
    """Unique, stable name shown in the TUI and typed on the command line."""
    host: str | None = None
    """Hostname or ~/.ssh/config alias; None means the name itself (filled in on creation)."""
    port: int | None = None
    """None leaves the port to ~/.ssh/config, then 22."""
    user: str | None = None
    """None leaves the user to ~/.ssh/config, then the local user."""
    identity_file: str | None = None
    """A local private key, with ~ expanded."""
    proxy_jump: str | None = None
    """OpenSSH ProxyJump syntax: comma-separated [user@]host[:port] hops, first hop first."""
    become: str | None = None
    """Only "sudo": runs the agent as root, which MIG changes and driver memory limits need."""
    python: str = "python3"
    """The remote interpreter that runs the agent (Python >= 3.9)."""
    state_dir: str = "~/.local/state/fractui-agent"
    """The agent's --state-dir, kept as written: it is a path on the remote host (with become,
    absolute: /var/lib/fractui-agent unless the entry says)."""
    agent_cache: str = ".cache/fractui"
    """Where the agent is uploaded: relative to the remote home unless absolute (over exec,
    absolute)."""
    transport: str = "ssh"
    """"ssh"; "local": a simulated host run as a subprocess on this machine; or "exec": the
    agent reached through the argv ``exec`` (kubectl exec, podman exec)."""
    exec: tuple[str, ...] | None = None
    """The exec transport's argv prefix; the agent's words follow it. Run without a shell."""
    exec_target: tuple[str, ...] | None = None
    """An argv run at each connect whose one line of output replaces {target} in ``exec``."""
    agent: str = "upload"
    """"upload": fractui puts its agent zipapp in agent_cache; "image": the exec'd container
    has the agent already, at agent_path."""
    agent_path: str = "/opt/fractui/agent.pyz"
    """Where an image keeps the agent (agent = "image")."""
    sim: str | None = None
    """A --sim spec such as "2xA100-80GB:mig,1xL4": the agent simulates these GPUs."""
    mig_mode: str = "auto"
    """"auto": the scheduler may turn MIG on or off on an idle GPU when the waiting jobs call
    for it; "fixed": each GPU keeps the mode it has (only an admin changes it)."""
    # The agent's settings (remote_agent/daemon/settings.py holds their meaning and bounds).
    mps: bool = AgentSettings.mps
    hami_core_lib: str | None = AgentSettings.hami_core_lib
    cgroup_parent: str | None = AgentSettings.cgroup_parent
    log_max_mib: int = AgentSettings.log_max_mib
    retention_hours: float = AgentSettings.retention_hours
    watchdog_grace_s: float = AgentSettings.watchdog_grace_s
    usage_sample_s: float = AgentSettings.usage_sample_s

    def __post_init__(self) -> None:
        # Every HostConfig, from the file or built in code, has an address to dial.
        if self.host is None:
            object.__setattr__(self, "host", self.name)

    def agent_settings(self) -> AgentSettings:
        """What this host's agent runs with."""
        return AgentSettings(**{key: getattr(self, key) for key in _AGENT_KEYS})


def _expanded(path: str) -> str:
    return os.path.expanduser(path)


# How long a host's agent may take to start, within hello's wait (the call is sent as the agent
# starts): its bridge starts the daemon, handing over from an old one first, each within its own
# deadline, and says why where it cannot. A hello that gave up first said only that nothing
# answered (its wait was the connect timeout alone, 10 s by default, under the bridge's 15 s).
AGENT_START_S = 2 * BRIDGE_WAIT_S


@dataclass(frozen=True)
class SshSettings:
    """SSH behaviour shared by every host; paths are local and have ~ expanded."""

    known_hosts: str = field(default_factory=lambda: _expanded("~/.ssh/known_hosts"))
    """Host keys are checked against this file; `fractui trust HOST` adds to it."""
    connect_timeout: float = 10.0
    """Seconds to wait for a TCP connection and the SSH handshake before a host is offline."""
    config_file: str = field(default_factory=lambda: _expanded("~/.ssh/config"))
    """The admin's OpenSSH config, honoured for aliases, users, ports, keys and ProxyJump."""

    @property
    def hello_wait_s(self) -> float:
        """How long hello and subscribe wait for the agent's answer: the connect timeout, and
        the time its bridge may take to start the daemon (``AGENT_START_S``), which comes
        first for hello; subscribe's answer is every job record the host keeps (about 10 MB
        at 20,000), which a slow link takes longer than a round trip to carry."""
        return self.connect_timeout + AGENT_START_S

    @property
    def settle_s(self) -> float:
        """How long a host's first connection may take before it is taken as failed: the
        connect timeout for the link, and hello's wait."""
        return self.connect_timeout + self.hello_wait_s


ISOLATIONS = ("any", "mig", "share")


@dataclass(frozen=True)
class QueueConfig:
    """A queue: the portion of a GPU each of its jobs gets, and where it may run.

    The GPU part is exactly one of ``gpu`` (any fraction below 1), ``mig`` (an exact profile),
    ``memory_gib`` (GPU memory) or ``gpus`` (whole GPUs)."""

    name: str
    gpu: float = 0.0
    mig: str | None = None
    memory_gib: float = 0.0
    gpus: int = 0
    cpus: float = 0.0
    """CPU cores each job books on its host."""
    memory: float = 0.0
    """Host RAM in GiB each job books on its host."""
    hosts: tuple[str, ...] = ()
    """Hosts its jobs may run on; empty: any."""
    gpu_models: tuple[str, ...] = ()
    """GPU models (e.g. "A100-80GB") its jobs may run on; empty: any."""
    isolation: str = "any"
    """"mig": MIG slices only; "share": memory shares of GPUs without MIG only; "any"."""
    priority: int = 0
    """Higher first, among jobs the quota rules treat alike."""
    team: str | None = None
    """The team charged for jobs submitted without --team."""
    image: str | None = None
    """The container image its jobs run in unless submit gives --image; None: bare processes.
    A queue with an image runs every job in a container, never bare (docs/decisions.md)."""

    def request(self) -> dict[str, Any]:
        """The portion as a store job keeps it: the queue's keys without its name, so later
        config edits never change a submitted job."""
        record = asdict(self)
        del record["name"]
        return record

    def describe(self) -> str:
        """The portion as an admin writes it (``words.portion``)."""
        return portion(self.gpu, self.mig, self.memory_gib, self.gpus)


# How many pending jobs a team may have waiting where its [[teams]] entry says nothing, and
# where the store holds no bound for it: the scheduler reads every pending job at each pass,
# so each team's are bounded (docs/decisions.md, "How many jobs a team may have waiting").
# PostgreSQL migration 0026's guard says the same number.
DEFAULT_MAX_WAITING = 10_000


@dataclass(frozen=True)
class TeamConfig:
    """A team: how many GPUs it is guaranteed (fractions count) and whether it may borrow."""

    name: str
    quota_gpus: float = 0.0
    over_quota: bool = False
    """May borrow idle capacity beyond the quota; such jobs are preemptible."""
    weight: float = 1.0
    """Its share against the other teams within quota (weighted fair share)."""
    members: tuple[str, ...] = ()
    """OS user names in the team, for a store that keeps no membership of its own (SQLite):
    they may submit to it and cancel and requeue its jobs (fractui.store.access)."""
    max_waiting: int = DEFAULT_MAX_WAITING
    """How many of its jobs may wait (pending) at once: a member's submit past it is refused;
    an admin's is not. The scheduler writes it into the store, which holds members to it."""


@dataclass(frozen=True)
class SchedulerSettings:
    """The scheduler service: how patient it is."""

    lease_s: float = 15.0
    """A scheduler that has not renewed its lease for this long is replaced by a standby."""
    host_lost_s: float = 120.0
    """A host offline this long has its jobs requeued elsewhere."""
    preempt_grace_s: float = 30.0
    """Seconds between SIGTERM and SIGKILL for a preempted job."""
    interval_s: float = 1.0
    """Seconds between scheduling passes (a change in the fleet or store also wakes it)."""
    call_timeout_s: float | None = None
    """Seconds a launch or stop waits for a host's answer; None: a third of lease_s. At most
    a third of lease_s, so no call outlives the lease it was made under."""
    max_attempts: int = 3
    """Launches hosts may refuse a job (no room, a failing host) before it fails."""
    reserve_after_s: float = 300.0
    """A job that has waited this long for its team's quota or for room holds the quota it
    needs: the team's later jobs take only what is left beside it (0: never)."""

    def call_timeout(self) -> float:
        return self.call_timeout_s or self.lease_s / 3


@dataclass(frozen=True)
class StoreSettings:
    """Where the store of queues and jobs is, as a URL: ``sqlite:///abs/path`` or
    ``postgresql://user@host:port/db`` (never with a password: libpq reads PGPASSWORD or
    ~/.pgpass). None: the SQLite file $XDG_STATE_HOME/fractui/store.db."""

    url: str | None = None
    origin: str | None = field(default=None, compare=False)
    """Where the config gives the URL (its key, file and line), for the store to name it in a
    refusal the URL caused; None for one built in code."""


@dataclass(frozen=True)
class UsageSettings:
    """Usage accounting (docs/usage.md): how finely GPU time is kept, how long usage is kept,
    and how often the lease holder reads what the agents sampled of running jobs."""

    bucket_s: float = 300.0
    """Each GPU's online, idle and busy seconds are kept per bucket of this many seconds."""
    keep_days: float = 90.0
    """Usage of attempts that ended, and GPU time, older than this is forgotten."""
    refresh_s: float = 60.0
    """Seconds between reads of the running jobs' sampled memory and utilisation."""


@dataclass(frozen=True)
class FairShareSettings:
    """Fair share over time (docs/scheduler.md): how much each team's recent usage, decayed
    with a half-life over a window, counts against what it holds now in the order teams are
    served. Off by default (docs/decisions.md): an upgrade does not change who runs next."""

    half_life_h: float = 24.0
    """Hours after which usage counts half as much."""
    window_h: float = 168.0
    """Hours of usage counted (at least half_life_h; at most what [usage] keeps, which
    bounds the default)."""
    usage_weight: float = 0.0
    """0 to 1: the part of a team's share that is its recent usage rather than what it holds
    now; 0 ranks by weights and present holdings only."""

    @property
    def half_life_s(self) -> float:
        return self.half_life_h * 3600

    @property
    def window_s(self) -> float:
        return self.window_h * 3600


@dataclass(frozen=True)
class TuiSettings:
    """The TUI: its theme and remapped keys, checked against the known ones by the TUI."""

    theme: str | None = None
    keys: tuple[tuple[str, str], ...] = ()
    """(binding id, keys) pairs, e.g. ("fleet.filter", "ctrl+f")."""


@dataclass(frozen=True)
class MetricsSettings:
    """The Prometheus endpoint the lease holder serves (docs/metrics.md); off without
    ``listen``. It has no authentication: exposed beyond loopback, the network must guard it."""

    listen: str | None = None
    """"host:port" ("[::1]:9402" for IPv6), as written; ``address`` is it parsed."""
    tui: bool = False
    """Whether a TUI's own scheduler serves it too while it holds the lease."""

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to bind, or None when off."""
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Config:
    """The whole file, validated."""

    path: str | None
    hosts: tuple[HostConfig, ...] = ()
    ssh: SshSettings = field(default_factory=SshSettings)
    queues: tuple[QueueConfig, ...] = ()
    teams: tuple[TeamConfig, ...] = ()
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    tui: TuiSettings = field(default_factory=TuiSettings)
    usage: UsageSettings = field(default_factory=UsageSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    fairshare: FairShareSettings = field(default_factory=FairShareSettings)
    lines: Callable[[str, int | None, str | None], int | None] = field(
        default=lambda table, index=None, key=None: None, compare=False, repr=False)
    """Where a key is written in the file, for errors found after loading (a theme name)."""

    def fail(self, message: str, table: str = "", index: int | None = None,
             key: str | None = None) -> "ConfigError":
        """A ConfigError pointing at ``key`` of ``table``, for checks made outside this module."""
        return ConfigError(self.path, self.lines(table, index, key), message)

    def queue(self, name: str) -> QueueConfig:
        return _named(self.queues, name, "queue", self.path)

    def team(self, name: str, also: Sequence[str] = ()) -> TeamConfig:
        """The team called ``name``; a ConfigError names the known ones, for a CLI typo, and
        ``also``, the teams known beside the config's (a report's usage names teams since
        renamed or left out of it, which it reports)."""
        return _named(self.teams, name, "team", self.path, also)

    def host(self, name: str) -> HostConfig:
        """The host called ``name``; a ConfigError names the known ones, for a CLI typo."""
        return _named(self.hosts, name, "host", self.path)

    def mode_fixed(self, name: str) -> bool:
        """Whether host ``name``'s GPUs keep their MIG modes (``mig_mode = "fixed"``); a host
        no longer in the config takes no new work anyway."""
        return any(h.name == name and h.mig_mode == "fixed" for h in self.hosts)


def _named(items: tuple[Any, ...], name: str, what: str, path: str | None,
           also: Sequence[str] = ()) -> Any:
    """The item called ``name``; else a ConfigError naming the known ones, the config's then
    ``also`` (known elsewhere), with the close one."""
    for item in items:
        if item.name == name:
            return item
    names = [i.name for i in items]
    names += sorted(set(also) - set(names))
    if not names:  # (a researcher's config of the store alone: "known: none" named nothing)
        raise ConfigError(path, None,
                          f"unknown {what} {_shown(name)}: the config has no [[{what}s]]")
    raise ConfigError(path, None, f"unknown {what} {_shown(name)}"
                                  f"{suggest(name, names, shown=20)}")


def default_config_path() -> str:
    """``$XDG_CONFIG_HOME/fractui/config.toml`` wherever XDG_CONFIG_HOME is set (DESIGN names
    that path; terminal users set it on macOS too), else the platform's config dir."""
    xdg = os.environ.get("XDG_CONFIG_HOME")
    if xdg and os.path.isabs(xdg):  # a relative value is invalid under the XDG spec
        return os.path.join(xdg, "fractui", "config.toml")
    return os.path.join(platformdirs.user_config_dir("fractui"), "config.toml")


def toml_text(config: Config) -> str:
    """``config`` as a file that loads back to it (its [tui] table left out): how a child
    process reads the config its parent built in code (the demo's scheduler). An SQLite
    store whose path [store] url refuses (a ?, # or %: url_problem) as [scheduler] store."""
    out = []
    url = config.store.url
    path = sqlite_path(url) if url is not None else None
    older = url is not None and path is not None and url_problem(url) is not None
    for table, item in (("ssh", config.ssh), ("scheduler", config.scheduler),
                        ("store", config.store), ("usage", config.usage),
                        ("metrics", config.metrics), ("fairshare", config.fairshare)):
        keys = [] if table == "store" and older else _toml_keys(item)
        out += ["[%s]" % table] + keys + (
            ["store = %s" % json.dumps(path)] if table == "scheduler" and older else [])
    for table, items in (("hosts", config.hosts), ("queues", config.queues),
                         ("teams", config.teams)):
        for item in items:
            out += ["[[%s]]" % table] + _toml_keys(item)
    return "\n".join(out) + "\n"


def _toml_keys(item: Any) -> list[str]:
    """``key = value`` for each field that differs from its default (JSON's strings, numbers
    and arrays are TOML's); not one outside the item's value (compare=False: where the file
    gave it, StoreSettings.origin), which is no key of the file."""
    lines = []
    for f in fields(item):
        if not f.compare:
            continue
        value = getattr(item, f.name)
        default = f.default_factory() if callable(f.default_factory) else f.default
        if value is None or value == default:
            continue
        lines.append("%s = %s" % (f.name, json.dumps(list(value) if isinstance(value, tuple)
                                                     else value)))
    return lines


def state_home() -> str:
    """``$XDG_STATE_HOME/fractui`` (DESIGN's place for the store), else the platform's state
    dir: what fractui keeps on the admin's machine."""
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "fractui")
    return platformdirs.user_state_dir("fractui")


# --- Finding lines ---------------------------------------------------------------------------

# One key segment: bare, "basic" or 'literal' (escapes inside quotes are not handled).
_KEY_PART = r"""[A-Za-z0-9_-]+|"[^"\\]*"|'[^']*'"""
_DOTTED_KEY = rf"\s*(?:{_KEY_PART})\s*(?:\.\s*(?:{_KEY_PART})\s*)*"
_ARRAY_HEADER = re.compile(rf"\s*\[\[({_DOTTED_KEY})\]\]\s*(?:#.*)?")
_TABLE_HEADER = re.compile(rf"\s*\[({_DOTTED_KEY})\]\s*(?:#.*)?")
_KEY_LINE = re.compile(rf"({_DOTTED_KEY})=")

_BlockId = tuple[str, int | None]  # (dotted table name, index of an array of tables or None)
_TOP: _BlockId = ("", None)


def _parts(dotted: str) -> list[str]:
    """``hosts."a.b"`` -> ["hosts", "a.b"]: the segments of a dotted key, quotes removed."""
    return [p.strip("\"'") for p in re.findall(_KEY_PART, dotted)]


@dataclass
class _Block:
    header_line: int | None  # None for the top level, which has no header
    keys: dict[str, int] = field(default_factory=dict)  # key -> line of its first mention


class _Locator:
    """Where keys are written in the file text, by table block.

    The Nth ``[[hosts]]`` header starts block ("hosts", N-1); ``[ssh]`` starts ("ssh", None);
    lines before any header are the top level. Within a block, ``key =`` (also ``"key" =`` and
    dotted ``key.sub =``, which count as ``key``) records its line. A sub-table header such as
    ``[hosts.extra]`` counts as a mention of ``extra`` in the enclosing block and of ``hosts`` at
    the top level, so unknown sub-tables are located too. Values inside inline tables are not
    located: lookups fall back to the block's header, or for an inline ``key = [...]`` to that key.
    Multi-line strings are not tracked; a line inside one that looks like a key could mislead.
    """

    def __init__(self, text: str) -> None:
        self._blocks: dict[_BlockId, _Block] = {_TOP: _Block(None)}
        counts: dict[str, int] = {}  # array-of-tables name -> headers seen so far
        current = self._blocks[_TOP]
        # TOML lines end at \n only; str.splitlines would also split at \x0c, \u2028 and more.
        for number, line in enumerate(text.split("\n"), start=1):
            array = _ARRAY_HEADER.fullmatch(line)
            header = array or _TABLE_HEADER.fullmatch(line)
            if header:
                parts = _parts(header.group(1))
                self._mention(_TOP, parts[0], number)
                if len(parts) > 1:  # a sub-table: a key of the latest block of its parent
                    parent_index = counts[parts[0]] - 1 if parts[0] in counts else None
                    self._mention((parts[0], parent_index), parts[1], number)
                name = ".".join(parts)
                index = None
                if array:
                    index = counts.get(name, 0)
                    counts[name] = index + 1
                current = self._blocks.setdefault((name, index), _Block(number))
                continue
            key = _KEY_LINE.match(line)
            if key:
                current.keys.setdefault(_parts(key.group(1))[0], number)

    def _mention(self, block: _BlockId, key: str, line: int) -> None:
        if block in self._blocks:
            self._blocks[block].keys.setdefault(key, line)

    def line(self, table: str, index: int | None = None, key: str | None = None) -> int | None:
        """The line of ``key`` in the block, else the block's header, else where it was set."""
        block = self._blocks.get((table, index))
        if block is None:  # an inline table or array: point at the top-level key holding it
            return self._blocks[_TOP].keys.get(table) if table else None
        if key is not None and key in block.keys:
            return block.keys[key]
        return block.header_line


# --- Checking values -------------------------------------------------------------------------

def _describe(value: object) -> str:
    """A TOML value's type, as the admin would say it."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"  # datetime, date and time are the only other TOML values


# Expected kinds: the phrase for messages and the test. Booleans are not integers here.
_KINDS: dict[str, tuple[str, Callable[[object], bool]]] = {
    "string": ("a string", lambda v: isinstance(v, str)),
    "integer": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "number": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "boolean": ("a boolean", lambda v: isinstance(v, bool)),
    "table": ("a table", lambda v: isinstance(v, dict)),
    "strings": ("an array of strings",
                lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
}

# Keys of [[hosts]] and [ssh] with their kinds, in the order the error messages list them.
_HOST_KEYS = {
    "name": "string", "host": "string", "port": "integer", "user": "string",
    "identity_file": "string", "proxy_jump": "string", "become": "string", "python": "string",
    "state_dir": "string", "agent_cache": "string", "transport": "string", "exec": "strings",
    "exec_target": "strings", "agent": "string", "agent_path": "string", "sim": "string",
    "mig_mode": "string",
    "mps": "boolean", "hami_core_lib": "string", "cgroup_parent": "string",
    "log_max_mib": "integer", "retention_hours": "number", "watchdog_grace_s": "number",
    "usage_sample_s": "number",
}
_AGENT_KEYS = ("mps", "hami_core_lib", "cgroup_parent", "log_max_mib", "retention_hours",
               "watchdog_grace_s", "usage_sample_s")
_SSH_KEYS = {"known_hosts": "string", "connect_timeout": "number", "config_file": "string"}
_QUEUE_KEYS = {
    "name": "string", "gpu": "number", "mig": "string", "memory_gib": "number",
    "gpus": "integer", "cpus": "number", "memory": "number", "hosts": "strings",
    "gpu_models": "strings", "isolation": "string", "priority": "integer", "team": "string",
    "image": "string",
}
_TEAM_KEYS = {"name": "string", "quota_gpus": "number", "over_quota": "boolean",
              "weight": "number", "members": "strings", "max_waiting": "integer"}
_SCHEDULER_KEYS = {"store": "string", "lease_s": "number", "host_lost_s": "number",
                   "preempt_grace_s": "number", "interval_s": "number",
                   "call_timeout_s": "number", "max_attempts": "integer",
                   "reserve_after_s": "number"}
_STORE_KEYS = {"url": "string"}
_TUI_KEYS = {"theme": "string", "keys": "table"}
_USAGE_KEYS = {"bucket_s": "number", "keep_days": "number", "refresh_s": "number"}
_METRICS_KEYS = {"listen": "string", "tui": "boolean"}
_FAIRSHARE_KEYS = {"half_life_h": "number", "window_h": "number", "usage_weight": "number"}
_TOP_KEYS = ("hosts", "ssh", "queues", "teams", "scheduler", "store", "tui", "usage",
             "metrics", "fairshare")
_BECOME = ("sudo",)
_TRANSPORTS = ("ssh", "local", "exec")
MIG_MODES = ("auto", "fixed")  # [[hosts]] mig_mode
_AGENTS = ("upload", "image")
_SSH_ONLY = ("host", "port", "user", "identity_file", "proxy_jump")  # not for an exec host
_EXEC_ONLY = ("exec", "exec_target", "agent", "agent_path")
# Where an agent run as root (an exec host's, an SSH host's with become) keeps its state, and
# an exec host its uploads, unless its entry says: absolute, since nothing expands ~ there and
# root's agent refuses a state dir in its login's home.
ROOT_STATE_DIR = "/var/lib/fractui-agent"
EXEC_TARGET = "{target}"  # the word of exec that exec_target's answer replaces
EXEC_AGENT_CACHE = "/var/cache/fractui"
# One ProxyJump hop: [user@]host[:port], the host possibly an [IPv6] literal.
_HOP = re.compile(r"(?:[^@\s,]+@)?(?:\[[0-9A-Fa-f:.]+\]|[^@:\s,\[\]]+)(?::([0-9]+))?")

# Bounds of every number (inclusive), by (table, key), and its unit for messages. A number
# with no entry here must still be finite. The agent's settings of a host entry are bounded by
# the agent's own rule (remote_agent.daemon.settings.BOUNDS), which its command line shares.
BOUNDS: dict[tuple[str, str], tuple[float, float, str]] = {
    ("ssh", "connect_timeout"): (0.5, 600, " seconds"),
    ("hosts", "port"): (1, 65535, ""),
    ("queues", "gpu"): (0.001, 0.999, " of a GPU (gpus = k asks for whole GPUs)"),
    ("queues", "memory_gib"): (0, 1024, " GiB"),
    ("queues", "gpus"): (0, 1024, " GPUs"),
    ("queues", "cpus"): (0, 4096, " CPUs"),
    ("queues", "memory"): (0, 65536, " GiB"),
    ("queues", "priority"): (-1_000_000, 1_000_000, ""),
    ("teams", "quota_gpus"): (0, 1_000_000, " GPUs"),
    ("teams", "weight"): (0.001, 1000, ""),
    ("teams", "max_waiting"): (0, 1_000_000, " jobs"),
    ("scheduler", "lease_s"): (1, 3600, " seconds"),
    ("scheduler", "host_lost_s"): (1, 7 * 86400, " seconds"),
    ("scheduler", "preempt_grace_s"): (1, 3600, " seconds"),
    ("scheduler", "interval_s"): (0.05, 600, " seconds"),
    ("scheduler", "call_timeout_s"): (0.1, 1200, " seconds"),
    ("scheduler", "max_attempts"): (1, 100, " attempts"),
    ("scheduler", "reserve_after_s"): (0, 7 * 86400, " seconds"),
    ("usage", "bucket_s"): (10, 86400, " seconds"),
    ("usage", "keep_days"): (1, 36500, " days"),
    ("usage", "refresh_s"): (1, 3600, " seconds"),
    ("fairshare", "half_life_h"): (0.01, 87600, " hours"),
    ("fairshare", "window_h"): (0.01, 876000, " hours"),
    ("fairshare", "usage_weight"): (0, 1, ""),
}
# How many entries a file may hold, and how big it may be.
MAX_ITEMS = {"hosts": 10_000, "queues": 1000, "teams": 1000}
MAX_LIST = 10_000  # entries of an array (a queue's hosts, gpu_models)
MAX_TEXT = 4096  # characters of any string (PATH_MAX)
MAX_CONFIG_BYTES = 4 * 1024 * 1024
# A name that becomes a path part, a CLI word and a job id's prefix: the POSIX portable file
# name characters, not starting with "." (so never "." or "..") or "-" (never an option).
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
NAME_RULE = "1 to 64 of A-Z a-z 0-9 . _ -, not starting with '.' or '-'"
TEAM_NAME_MAX = 63 - len("fractui_team_")  # PostgreSQL cuts a longer role's name at 63 bytes


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a host, queue or team (NAME), or None."""
    if NAME.fullmatch(name):
        return None
    return f"must be {NAME_RULE}, got {_shown(name)}"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _shown(value: object) -> str:
    """A value for a message: a string quoted as every word given is (``words.quoted``)."""
    return quoted(value) if isinstance(value, str) else str(value)


class TomlChecker:
    """Checks a parsed TOML file, raising ConfigError at the line of the first mistake: the
    config's rules for keys, kinds and values, shared with other files of ours (themes)."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.where = _Locator(text)

    def fail(self, message: str, table: str = "", index: int | None = None,
             key: str | None = None) -> ConfigError:
        return ConfigError(self.path, self.where.line(table, index, key), message)

    def table(self, doc: dict[str, Any], name: str) -> dict[str, Any]:
        value = doc.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(f"{name} must be a table ([{name}]), got {_describe(value)}",
                            key=name)
        return value

    def values(self, raw: dict[str, Any], known: dict[str, str], label: str, table: str,
               index: int | None, prefix: str) -> dict[str, Any]:
        """Checks keys and kinds of one table; returns its values with unset keys left out."""
        for key in raw:
            if key not in known:
                raise self.fail(f"unknown key {_shown(key)} in {label}{suggest(key, known)}",
                                table, index, key)
        for key, kind in known.items():
            if key not in raw:
                continue
            value = raw[key]
            phrase, fits = _KINDS[kind]
            if not fits(value):
                raise self.fail(f"{prefix}{key} must be {phrase}, got {_describe(value)}",
                                table, index, key)
            problem = _value_problem(value, (table, key))
            if problem is not None:
                raise self.fail(f"{prefix}{key} {problem}", table, index, key)
        return dict(raw)


class _Checker(TomlChecker):
    """Validates the config document."""

    def config(self, doc: dict[str, Any]) -> Config:
        for key in doc:
            if key not in _TOP_KEYS:
                raise self.fail(f"unknown top-level key '{key}'{suggest(key, _TOP_KEYS)}",
                                key=key)
        hosts = self.hosts(self.array_of_tables(doc, "hosts"))
        teams = self.teams(self.array_of_tables(doc, "teams"))
        usage = UsageSettings(**_floats(self.values(
            self.table(doc, "usage"), _USAGE_KEYS, "[usage]", "usage", None, "usage."),
            tuple(_USAGE_KEYS)))
        return Config(path=self.path, hosts=hosts, ssh=self.ssh(self.table(doc, "ssh")),
                      queues=self.queues(self.array_of_tables(doc, "queues"), hosts, teams),
                      teams=teams, scheduler=self.scheduler(self.table(doc, "scheduler")),
                      store=self.store(self.table(doc, "store"), self.table(doc, "scheduler")),
                      tui=self.tui(self.table(doc, "tui")),
                      usage=usage, fairshare=self.fairshare(self.table(doc, "fairshare"),
                                                            usage),
                      metrics=self.metrics(self.table(doc, "metrics")), lines=self.where.line)

    def array_of_tables(self, doc: dict[str, Any], name: str) -> tuple[dict[str, Any], ...]:
        value = doc.get(name, [])
        if not isinstance(value, list):
            raise self.fail(f"{name} must be an array of tables ([[{name}]]), "
                            f"got {_describe(value)}", key=name)
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.fail(f"{name}[{i}] must be a table, got {_describe(item)}", key=name)
        return tuple(value)

    def ssh(self, raw: dict[str, Any]) -> SshSettings:
        values = self.values(raw, _SSH_KEYS, "[ssh]", "ssh", None, "ssh.")
        for key in ("known_hosts", "config_file"):
            if key in values:
                values[key] = self.local_file(values[key], "ssh", None, key, "ssh.")
        return SshSettings(**_floats(values, ("connect_timeout",)))

    def named(self, raws: tuple[dict[str, Any], ...], table: str, what: str
              ) -> list[tuple[int, dict[str, Any]]]:
        """Checks every item of an array of tables has a unique name; returns (index, raw)."""
        if len(raws) > MAX_ITEMS[table]:
            raise self.fail(f"{len(raws)} [[{table}]]: at most {MAX_ITEMS[table]}", table,
                            MAX_ITEMS[table])
        seen: dict[str, int] = {}
        for i, raw in enumerate(raws):
            name = raw.get("name")
            if name is None:
                raise self.fail(f"{table}[{i}] has no name: every [[{table}]] needs a unique "
                                "name", table, i, "name")
            if not isinstance(name, str):
                raise self.fail(f"{table}[{i}].name must be a string, got {_describe(name)}",
                                table, i, "name")
            problem = name_problem(name)
            if problem is not None:
                raise self.fail(f"{table}[{i}].name {problem}", table, i, "name")
            if name in seen:
                first = self.where.line(table, seen[name], "name")
                at = f" (first at line {first})" if first is not None else ""
                raise self.fail(f"duplicate {what} name '{name}'{at}", table, i, "name")
            seen[name] = i
        return list(enumerate(raws))

    def teams(self, raws: tuple[dict[str, Any], ...]) -> tuple[TeamConfig, ...]:
        teams = []
        for i, raw in self.named(raws, "teams", "team"):
            if len(raw["name"]) > TEAM_NAME_MAX:
                raise self.fail(f"teams[{i}].name is {len(raw['name'])} characters: at most "
                                f"{TEAM_NAME_MAX}, so that its PostgreSQL role, "
                                f"fractui_team_<team>, is not cut at 63", "teams", i, "name")
            values = self.values(raw, _TEAM_KEYS, f"[[teams]] #{i + 1}", "teams", i,
                                 f"teams[{i}].")
            if "members" in values:
                values["members"] = self.members(values["members"], i)
            teams.append(TeamConfig(**_floats(values, ("quota_gpus", "weight"))))
        return tuple(teams)

    def members(self, names: list[str], i: int) -> tuple[str, ...]:
        """A team's members: OS user names, each once."""
        seen: set[str] = set()
        for n, name in enumerate(names):
            if not NAME.fullmatch(name):
                raise self.fail(f"teams[{i}].members[{n}] must be an OS user name "
                                f"({NAME_RULE}), got {_shown(name)}", "teams", i, "members")
            if name in seen:
                raise self.fail(f"teams[{i}].members names '{name}' twice", "teams", i,
                                "members")
            seen.add(name)
        return tuple(names)

    def queues(self, raws: tuple[dict[str, Any], ...], hosts: tuple[HostConfig, ...],
               teams: tuple[TeamConfig, ...]) -> tuple[QueueConfig, ...]:
        queues = []
        for i, raw in self.named(raws, "queues", "queue"):
            prefix = f"queues[{i}]."
            values = self.values(raw, _QUEUE_KEYS, f"[[queues]] #{i + 1}", "queues", i, prefix)

            def bad(key: str, message: str) -> ConfigError:
                return self.fail(f"{prefix}{key} {message}", "queues", i, key)

            forms = [k for k in ("gpu", "mig", "memory_gib", "gpus") if values.get(k)]
            if not forms:
                raise self.fail(f"queues[{i}] asks for no GPU: give one of gpu, mig, memory_gib, "
                                "gpus", "queues", i, "name")
            if len(forms) > 1:
                raise bad(forms[1], f"cannot be given with {forms[0]}: a queue asks for one "
                          "of gpu, mig, memory_gib, gpus")
            isolation = values.get("isolation", "any")
            if isolation not in ISOLATIONS:
                raise bad("isolation", f"must be one of {', '.join(ISOLATIONS)}, got "
                          f"{_shown(isolation)}")
            if "mig" in values:
                problem = profile_problem(values["mig"])
                if problem is not None:
                    raise bad("mig", problem)
                if isolation == "share":
                    raise bad("isolation", "is \"share\" (memory shares only), which never "
                              "gives the MIG slice that mig asks for")
            if values.get("gpus", 0) > 1 and isolation == "mig":
                raise bad("isolation", f"is \"mig\", but a job runs on one MIG instance: "
                          f"gpus = {values['gpus']} can only be whole GPUs without MIG")
            known_hosts = {h.name for h in hosts}
            # a config of no hosts is a researcher's (docs/cli.md, "Self-serve"): its queues,
            # the admin's copied, name hosts that only the scheduler's config lists
            for host in values.get("hosts", []) if hosts else ():
                if host not in known_hosts:
                    raise bad("hosts", f"names '{host}', which is not a configured host")
            if "team" in values and values["team"] not in {t.name for t in teams}:
                raise bad("team", f"names '{values['team']}', which is not a configured team")
            problem = image_problem(values["image"]) if "image" in values else None
            if problem is not None:
                raise bad("image", problem)
            for key in ("hosts", "gpu_models"):
                if key in values:
                    values[key] = tuple(values[key])
            queues.append(QueueConfig(**_floats(values, ("gpu", "memory_gib", "cpus",
                                                         "memory"))))
        return tuple(queues)

    def scheduler(self, raw: dict[str, Any]) -> SchedulerSettings:
        values = self.values(raw, _SCHEDULER_KEYS, "[scheduler]", "scheduler", None,
                             "scheduler.")
        values.pop("store", None)  # where the store is: read by store()
        settings = SchedulerSettings(**_floats(values, ("lease_s", "host_lost_s",
                                                        "preempt_grace_s", "interval_s",
                                                        "call_timeout_s",
                                                        "reserve_after_s")))
        # The lease is renewed once a pass: passes further apart than a third of it would let
        # it lapse between two, and a standby take over from a scheduler that is alive.
        if settings.interval_s > settings.lease_s / 3:
            key = "interval_s" if "interval_s" in values else "lease_s"
            raise self.fail(f"scheduler.interval_s ({settings.interval_s:g} s) must be at most "
                            f"a third of scheduler.lease_s ({settings.lease_s:g} s), which is "
                            "renewed once a pass", "scheduler", None, key)
        if settings.call_timeout() > settings.lease_s / 3:
            key = "call_timeout_s" if "call_timeout_s" in values else "lease_s"
            raise self.fail(f"scheduler.call_timeout_s ({settings.call_timeout():g} s) must be "
                            f"at most a third of scheduler.lease_s ({settings.lease_s:g} s), so "
                            "no call outlives the lease it was made under", "scheduler", None,
                            key)
        return settings

    def fairshare(self, raw: dict[str, Any], usage: UsageSettings) -> FairShareSettings:
        """[fairshare]: a window of at least one half-life (a shorter one is mostly cut off),
        and no longer than usage is kept (what is forgotten would count as unused)."""
        values = self.values(raw, _FAIRSHARE_KEYS, "[fairshare]", "fairshare", None,
                             "fairshare.")
        kept_h = usage.keep_days * 24
        if "window_h" not in values:  # the default window, within what usage keeps
            values["window_h"] = min(FairShareSettings.window_h, kept_h)
        settings = FairShareSettings(**_floats(values, tuple(_FAIRSHARE_KEYS)))
        if settings.window_h < settings.half_life_h:
            key = "window_h" if "window_h" in raw else "half_life_h"
            raise self.fail(f"fairshare.window_h ({settings.window_h:g} h) must be at least "
                            f"fairshare.half_life_h ({settings.half_life_h:g} h)", "fairshare",
                            None, key)
        if settings.window_h > kept_h:
            raise self.fail(f"fairshare.window_h ({settings.window_h:g} h) is longer than usage "
                            f"is kept (usage.keep_days = {usage.keep_days:g}: {kept_h:g} h)",
                            "fairshare", None, "window_h")
        return settings

    def store(self, raw: dict[str, Any], scheduler: dict[str, Any]) -> StoreSettings:
        """[store] url, or the older [scheduler] store (an SQLite file's path): one of them.
        A URL's SQLite path is checked as any local path (what is there, the store's open
        judges: exit 1); a PostgreSQL URL by libpq's rules, and never with a password in it."""
        values = self.values(raw, _STORE_KEYS, "[store]", "store", None, "store.")
        if "store" in scheduler:  # checked as a string by scheduler()
            if "url" in values:
                raise self.fail("scheduler.store cannot be given with store.url (line %s): "
                                "say where the store is once, as [store] url" % self.where.line(
                                    "store", None, "url"), "scheduler", None, "store")
            return StoreSettings(sqlite_url(self.local_path(
                scheduler["store"], "scheduler", None, "store", "scheduler.")))
        if "url" not in values:
            return StoreSettings()
        url = values["url"]
        problem = url_problem(url)
        if problem is not None:
            raise self.fail(f"store.url {problem}", "store", None, "url")
        path = sqlite_path(url)
        if path is not None:
            url = sqlite_url(self.local_path(path, "store", None, "url", "store."))
        return StoreSettings(url, "store.url in %s, line %s" % (
            shown_path(self.path), self.where.line("store", None, "url")))

    def tui(self, raw: dict[str, Any]) -> TuiSettings:
        values = self.values(raw, _TUI_KEYS, "[tui]", "tui", None, "tui.")
        keys = values.get("keys", {})
        if len(keys) > MAX_LIST:
            raise self.fail(f"tui.keys has {len(keys)} entries; at most {MAX_LIST}", "tui",
                            None, "keys")
        for action, key in keys.items():
            problem = (_value_problem(action, ("tui", "keys")) or
                       (None if isinstance(key, str) else f"must be a key such as \"ctrl+f\", "
                        f"got {_describe(key)}") or _value_problem(key, ("tui", "keys")))
            if problem is not None:
                line = self.where.line("tui.keys", None, action) or self.where.line(
                    "tui", None, "keys")  # [tui.keys] as a table, or keys = { ... } inline
                raise ConfigError(self.path, line, f"{keys_entry(action)} {problem}")
        return TuiSettings(theme=values.get("theme"), keys=tuple(sorted(keys.items())))

    def metrics(self, raw: dict[str, Any]) -> MetricsSettings:
        values = self.values(raw, _METRICS_KEYS, "[metrics]", "metrics", None, "metrics.")
        listen = values.get("listen")
        if listen is not None:
            problem = listen_problem(listen)
            if problem is not None:
                raise self.fail(f"metrics.listen {problem}", "metrics", None, "listen")
        return MetricsSettings(**values)

    def hosts(self, raws: tuple[dict[str, Any], ...]) -> tuple[HostConfig, ...]:
        hosts: list[HostConfig] = []
        agents: dict[tuple[str | int | None, ...], HostConfig] = {}  # agent_place -> host
        for i, raw in self.named(raws, "hosts", "host"):
            host = self.host(i, raw)
            # one state dir is one agent: two entries for it would count its GPUs twice
            twin = agents.setdefault(agent_place(host), host)
            if twin is not host:
                local = host.transport == "local"
                raise self.fail(f"{'local hosts' if local else 'hosts'} '{twin.name}' and "
                                f"'{host.name}' have the same state_dir"
                                f"{'' if local else ' on one machine'} ({host.state_dir}); "
                                "give each its own", "hosts", i, "state_dir")
            hosts.append(host)
        return tuple(hosts)

    def host(self, i: int, raw: dict[str, Any]) -> HostConfig:
        prefix = f"hosts[{i}]."
        values = self.values(raw, _HOST_KEYS, f"[[hosts]] #{i + 1}", "hosts", i, prefix)

        def bad(key: str, message: str) -> ConfigError:
            return self.fail(f"{prefix}{key} {message}", "hosts", i, key)

        name = values["name"]  # named() checked it
        for key in ("host", "user"):  # words of an SSH destination
            word = values.get(key)
            if word is not None and (word.startswith("-") or re.search(r"\s", word)):
                raise bad(key, f"must be one word not starting with '-', got {_shown(word)}")
        if "proxy_jump" in values:
            self.proxy_jump(values["proxy_jump"], bad)
        if values.get("become", "sudo") not in _BECOME:
            raise bad("become", f"must be \"sudo\" or left out, got '{values['become']}'")
        if values.get("mig_mode", "auto") not in MIG_MODES:
            raise bad("mig_mode", f"must be \"auto\" or \"fixed\", got "
                      f"{_shown(values['mig_mode'])}")
        if values.get("transport", "ssh") not in _TRANSPORTS:
            raise bad("transport", f"must be \"ssh\", \"local\" or \"exec\", got "
                      f"'{values['transport']}'")
        if values.get("transport") == "exec":
            self.exec_host(values, bad)
        else:
            for key in _EXEC_ONLY:
                if key in values:
                    raise bad(key, "is a setting of exec hosts; this host's transport is "
                              f"\"{values.get('transport', 'ssh')}\" (set transport = \"exec\")")
        if "become" in values and values.get("transport", "ssh") == "ssh":
            self.become_state_dir(values, bad)
        if "sim" in values:
            try:
                parse_sim_spec(values["sim"])
            except ValueError as err:
                raise bad("sim", f"is not a valid sim spec: {err}") from None
        elif values.get("transport") == "local":
            raise bad("transport", "is \"local\" but sim is not set: a local host is a "
                      "simulated one, e.g. sim = \"2xA100-80GB:mig,1xL4\"")
        if values.get("transport") == "local":
            if "state_dir" in values:  # a path on this machine, then
                values["state_dir"] = self.local_path(values["state_dir"], "hosts", i,
                                                      "state_dir", prefix)
            else:  # a simulated host lives on this machine: its own dir, so several just work
                values["state_dir"] = os.path.join(state_home(), "hosts", name)
        if "agent_cache" in values and values.get("transport") != "exec":
            values["agent_cache"] = self.agent_cache(values["agent_cache"], bad)
        if "identity_file" in values:
            values["identity_file"] = self.local_file(values["identity_file"], "hosts", i,
                                                      "identity_file", prefix)
        for key in _AGENT_KEYS:
            why = agent_settings.problem(key, values[key]) if key in values else None
            if why:
                raise bad(key, why)
        return HostConfig(**_floats(values, ("retention_hours", "watchdog_grace_s",
                                             "usage_sample_s")))

    def local_path(self, value: str, table: str, index: int | None, key: str,
                   prefix: str) -> str:
        """A path on this machine: ``~`` expanded, and absolute then, so it does not depend on
        the directory fractui is started in."""
        path = _expanded(value)
        if path.startswith("~"):
            raise self.fail(f"{prefix}{key} names a home directory this machine does not "
                            f"have: {_shown(value)}", table, index, key)
        if not os.path.isabs(path):
            raise self.fail(f"{prefix}{key} must be an absolute path or start with ~, got "
                            f"{_shown(value)}", table, index, key)
        return path

    def local_file(self, value: str, table: str, index: int | None, key: str,
                   prefix: str) -> str:
        """A file on this machine (it may not exist yet): a local path, not a directory."""
        path = self.local_path(value, table, index, key, prefix)
        if os.path.isdir(path):
            raise self.fail(f"{prefix}{key} is a directory, not a file: {_shown(value)}",
                            table, index, key)
        return path

    @staticmethod
    def exec_host(values: dict[str, Any], bad: Callable[[str, str], ConfigError]) -> None:
        """An exec host's keys: an argv to exec, a lookup that fills its {target}, where the
        agent comes from; absolute paths (no shell expands ~ on the far side); no SSH keys.
        The arrays become tuples (a HostConfig is frozen)."""
        for key in _SSH_ONLY:
            if key in values:
                raise bad(key, "is an SSH setting; this host's transport is \"exec\"")
        argv = values.get("exec")
        if argv is None:
            raise bad("transport", "is \"exec\" but exec is not set: it is the program that "
                      "reaches the agent, e.g. exec = [\"podman\", \"exec\", \"-i\", \"agent\"]")
        if not argv:
            raise bad("exec", "is empty: it must name the program that reaches the agent, e.g. "
                      "[\"podman\", \"exec\", \"-i\", \"agent\"]")
        named = any(EXEC_TARGET in word for word in argv)
        if "exec_target" in values:
            if not values["exec_target"]:
                raise bad("exec_target", "is empty: it must name a program that prints the "
                          "target, or be left out")
            if not named:
                raise bad("exec", f"has no {EXEC_TARGET} word for exec_target's answer to "
                          "fill")
            values["exec_target"] = tuple(values["exec_target"])
        elif named:
            raise bad("exec", f"names {EXEC_TARGET} but exec_target is not set: it finds the "
                      "target at each connect")
        values["exec"] = tuple(argv)
        if values.get("agent", "upload") not in _AGENTS:
            raise bad("agent", f"must be \"upload\" or \"image\", got {_shown(values['agent'])}")
        if "agent_path" in values and values.get("agent") != "image":
            raise bad("agent_path", "is only used with agent = \"image\" (an uploaded agent "
                      "lives in agent_cache)")
        values.setdefault("state_dir", ROOT_STATE_DIR)
        values.setdefault("agent_cache", EXEC_AGENT_CACHE)
        for key in ("state_dir", "agent_cache", "agent_path"):
            if key in values and not values[key].startswith("/"):
                raise bad(key, f"must be an absolute path on an exec host (nothing expands ~ "
                          f"or a home there), got {_shown(values[key])}")

    @staticmethod
    def become_state_dir(values: dict[str, Any], bad: Callable[[str, str], ConfigError]) -> None:
        """With become the agent runs as root, and refuses a state dir another user owns a
        step of: one in the login's home (relative, or ~) would never start. Absolute, then,
        and root's by default."""
        path = values.setdefault("state_dir", ROOT_STATE_DIR)
        if not path.startswith("/"):
            raise bad("state_dir", f"must be an absolute path with become = \"sudo\", got "
                      f"{_shown(path)}: the agent runs as root, and refuses a state dir in the "
                      f"login's home (that user could change what root runs); leave it out for "
                      f"{ROOT_STATE_DIR}, or name another directory of root's")

    @staticmethod
    def proxy_jump(value: str, bad: Callable[[str, str], ConfigError]) -> None:
        for hop in value.split(","):
            m = _HOP.fullmatch(hop.strip())
            if not m:
                raise bad("proxy_jump", f"has a bad hop '{hop.strip()}': expected "
                          "[user@]host[:port], hops separated by commas")
            if m.group(1) is not None and not 1 <= int(m.group(1)) <= 65535:
                raise bad("proxy_jump", f"has a bad port in hop '{hop.strip()}'")

    @staticmethod
    def agent_cache(value: str, bad: Callable[[str, str], ConfigError]) -> str:
        """SFTP does not expand ~, so "~/x" is rewritten as "x", which SFTP reads from home."""
        if value == "~" or value.startswith("~/"):
            return value[2:] or "."
        if value.startswith("~"):
            raise bad("agent_cache", f"must be relative to the remote home or absolute, "
                      f"got '{value}'")
        return value


# What [metrics] listen may be: a host name or IPv4 address, or an [IPv6] literal, and a port.
_LISTEN = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})")


def listen_problem(value: str) -> str | None:
    """Why ``value`` is no "host:port" to serve on, or None."""
    m = _LISTEN.fullmatch(value)
    if m is None:
        return (f"must be host:port (e.g. \"127.0.0.1:9402\", \"[::1]:9402\"), "
                f"got {_shown(value)}")
    if not 1 <= int(m.group(2)) <= 65535:
        return f"has port {int(m.group(2))}; a port is from 1 to 65535"
    return None


def _floats(values: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``values`` with these keys as floats (TOML writes 15 for 15.0)."""
    return {k: float(v) if k in keys else v for k, v in values.items()}


def agent_place(host: HostConfig) -> tuple[str | int | None, ...]:
    """Where a host's agent keeps its state: one place, one agent. A local host's state dir
    is compared as this machine resolves it (``~``, ``..``, symlinks); a remote one by its
    address and the path written, normalised."""
    if host.transport == "local":
        return ("local", os.path.realpath(_expanded(host.state_dir)))
    if host.transport == "exec":
        return ("exec", *(host.exec or ()), "|", *(host.exec_target or ()),
                posixpath.normpath(host.state_dir))
    return ("ssh", host.host, host.port, host.user, posixpath.normpath(host.state_dir))


@lru_cache(maxsize=1)
def mig_profiles() -> tuple[str, ...]:
    """Every MIG profile some GPU model has (remote_agent's model facts)."""
    return tuple(sorted({name for facts in gpu_models().values()
                         for _key, name in facts.profile_names}))


def profile_problem(name: str) -> str | None:
    """Why no GPU could ever give MIG profile ``name``, or None if some model has it."""
    if name in mig_profiles():
        return None
    close = close_to(name, mig_profiles(), n=3)
    return (f"names {_shown(name)}, a MIG profile no GPU model has"
            + (f" (close: {', '.join(close)})" if close else ""))


def image_problem(image: str) -> str | None:
    """Why ``image`` cannot name a job's container image, or None: the agent's own rule
    (remote_agent/jobs/runtime/image.py), so what is submitted is what an agent launches."""
    why = agent_image_problem(image)
    if why is None:
        return None
    return ("must name a container image (e.g. docker.io/library/python:3.12, or an "
            f"apptainer image's path), but {why}; got {_shown(image)}")


def _value_problem(value: Any, where: tuple[str, str]) -> str | None:
    """What is wrong with one value of a known kind, or None: strings are printable and not
    too long, arrays not too long, numbers finite and within BOUNDS."""
    if isinstance(value, str):
        if not value.strip():
            return "must not be empty"
        if len(value) > MAX_TEXT:
            return f"is {len(value)} characters long; at most {MAX_TEXT}"
        if not value.isprintable():
            bad = next(c for c in value if not c.isprintable())
            return (f"must not contain control or invisible characters ({bad!r}), got "
                    f"{_shown(value)}")
        return None
    if isinstance(value, list):
        if len(value) > MAX_LIST:
            return f"has {len(value)} entries; at most {MAX_LIST}"
        return next((p for p in (_value_problem(v, where) for v in value) if p), None)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if where[0] == "hosts" and where[1] in agent_settings.BOUNDS:  # the agent's own rule
        return agent_settings.problem(where[1], value)
    lo, hi, unit = BOUNDS.get(where, (-2 ** 53, 2 ** 53, ""))  # else: exact as a float
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if not lo <= value <= hi:  # exact for any int, however large
        return f"must be from {_number(lo)} to {_number(hi)}{unit}, got {_shown(value)}"
    return None


def keys_entry(binding_id: str) -> str:
    """``[tui] keys``'s entry of ``binding_id`` as a message names it: ``tui.keys.quit``,
    quoted where it is no bare TOML key (``tui.keys.'fleet.filter'``)."""
    return "tui.keys." + (binding_id if re.fullmatch(_KEY_PART, binding_id) else
                          _shown(binding_id))


def suggest(key: str, known: Sequence[str] | dict[str, str],
             shown: int | None = None) -> str:
    """The "(did you mean 'port'? known: ...)" tail: a close match first, as typos are common
    (among all the names, though only the first ``shown`` are listed)."""
    names = list(known)
    close = close_to(key, names)
    hint = f"did you mean '{close[0]}'? " if close else ""
    listed = ", ".join(names[:shown]) or "none"
    more = f" and {len(names) - shown} more" if shown is not None and len(names) > shown else ""
    return f" ({hint}known: {listed}{more})"


def load_config(path: str) -> Config:
    """Reads and validates the config file at ``path``; any mistake raises ConfigError. A file
    another user could change is refused: it says which programs run as us (a host's exec,
    its agent_path) and where the store is."""
    text, doc = read_toml(path)  # (a file another user could change is not read)
    return _Checker(path, text).config(doc)


def read_toml(path: str, max_mib: int = MAX_CONFIG_BYTES // 2 ** 20,
              what: str = "config file") -> tuple[str, dict[str, Any]]:
    """The text of the TOML file at ``path`` and what it holds; a file that cannot be read or
    parsed raises ConfigError at the line at fault."""
    try:
        data = read_small_file(path, max_mib * 2 ** 20, "a " + what)
    except FileNotFoundError:
        raise NoConfig(path, None, "no such file") from None
    except NotRead as err:
        raise ConfigError(path, None, str(err)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ConfigError(path, line, "not UTF-8 text, which TOML requires") from None
    if text.startswith("\ufeff"):  # (the parser says "Invalid statement (column 1)")
        raise ConfigError(path, 1, "starts with a byte order mark (U+FEFF), which TOML does "
                          "not allow: save it as UTF-8 without one")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise _syntax_error(path, text, err) from None
    except RecursionError:  # tomllib reads nested arrays and tables by recursion
        raise ConfigError(path, _deepest_line(text), "arrays or tables nested too deeply "
                          "(TOML is read by recursion)") from None
    return text, doc


def _deepest_line(text: str) -> int:
    """The line where brackets nest deepest (strings not told apart: a hint for the eye)."""
    depth, deepest, line, at = 0, 0, 1, 1
    for c in text:
        if c in "[{":
            depth += 1
            if depth > deepest:
                deepest, at = depth, line
        elif c in "]}":
            depth -= 1
        elif c == "\n":
            line += 1
    return at


_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)")
_AT_END = re.compile(r"\s*\(at end of document\)")


def _syntax_error(path: str, text: str, err: Exception) -> ConfigError:
    """tomllib says "... (at line N, column M)": the line moves to the front, the column stays."""
    message = str(err).splitlines()[0]
    at = _AT.search(message)
    if at:
        line: int | None = int(at.group(1))
        message = f"{message[:at.start()]} (column {at.group(2)})"
    elif _AT_END.search(message):
        line = text.count("\n") + (0 if text.endswith("\n") else 1)
        message = _AT_END.sub(" (at end of file)", message)
    else:
        line = None
    return ConfigError(path, line, f"invalid TOML: {message}")
