"""The settings an admin gives a host's agent: one rule for the agent and for fractui's config.

fractui keeps them in the host's config entry and starts ``serve --stdio`` with them as options;
the bridge hands them to the daemon it starts and compares them with a running daemon's (its
``daemon.version``), and a daemon running with other settings is handed over, so a change in the
config reaches the host on the next connection. The bounds below are checked by the agent's
command line and by fractui's config alike.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional

from remote_agent.jobs.caps import cgroup2_mount
from remote_agent.jobs.usage import USAGE_SAMPLE_S


@dataclass(frozen=True)
class Bound:
    minimum: float
    maximum: float
    exclusive_minimum: bool = False
    integer: bool = False

    def problem(self, value: Any) -> Optional[str]:
        kind = "an integer" if self.integer else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                self.integer and not isinstance(value, int)):
            return "must be %s" % kind
        low = "above %s" % _num(self.minimum) if self.exclusive_minimum \
            else "at least %s" % _num(self.minimum)
        if not math.isfinite(value) or value > self.maximum or value < self.minimum or (
                self.exclusive_minimum and value == self.minimum):
            return "must be %s, %s and at most %s, got %s" % (kind, low, _num(self.maximum),
                                                              _num(value))
        return None


def _num(value: Any) -> str:
    return ("%d" % value) if isinstance(value, float) and value.is_integer() and \
        abs(value) < 1e15 else str(value)


BOUNDS = {
    "log_max_mib": Bound(1, 1 << 20, integer=True),
    "retention_hours": Bound(0, 24 * 365 * 10, exclusive_minimum=True),
    "watchdog_grace_s": Bound(0, 3600),
    "usage_sample_s": Bound(0.5, 3600),  # the watchdog looks twice a second: no finer
}
CGROUP_CHOICES = ("auto", "none")


@dataclass(frozen=True)
class AgentSettings:
    mps: bool = False
    """MPS runs on the host: memory shares are capped with MPS limits too."""
    hami_core_lib: Optional[str] = None
    """HAMi-core's libvgpu.so on the host (an absolute path), to cap memory shares with it too."""
    cgroup_parent: Optional[str] = None
    """Where per-job cgroups go: "auto" (<cgroup2 mount>/fractui), "none", or an absolute path
    in a cgroup v2 hierarchy. None: "auto" on real GPUs, "none" on the simulator."""
    log_max_mib: int = 64
    """Each job's log is capped at this many MiB."""
    retention_hours: float = 168.0
    """Finished jobs and their logs are kept this long."""
    watchdog_grace_s: float = 5.0
    """Seconds between SIGTERM and SIGKILL for a job over its memory cap."""
    usage_sample_s: float = USAGE_SAMPLE_S
    """Seconds between samples of each running job's GPU memory and utilisation."""

    def words(self) -> List[str]:
        """These settings as the agent's command-line options (defaults left out)."""
        out: List[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            option = "--" + f.name.replace("_", "-")
            out += [option] if value is True else [option, str(value)]
        return out

    def effective(self, backend: str) -> Dict[str, Any]:
        """What a daemon started with these settings runs with (``daemon.version``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["cgroup_parent"] = resolve_cgroup_parent(self.cgroup_parent, backend)
        return out


def texts_digest(effective: Dict[str, Any]) -> str:
    """A digest of the texts (paths) among ``effective`` settings, byte for byte:
    ``daemon.version`` says a byte of one that is no UTF-8 as U+FFFD, so two paths that
    differ only there read alike in it, where their digests differ (json writes each lone
    surrogate as its own escape)."""
    texts = {k: v for k, v in effective.items() if isinstance(v, str)}
    return hashlib.sha256(json.dumps(texts, sort_keys=True).encode()).hexdigest()[:16]


def problem(name: str, value: Any) -> Optional[str]:
    """What is wrong with a setting's value (None: nothing), as "must be ..."."""
    if name in BOUNDS:
        return BOUNDS[name].problem(value)
    if name == "hami_core_lib" and not (isinstance(value, str) and value.startswith("/")):
        return "must be an absolute path on the host, got %r" % (value,)
    if name == "cgroup_parent" and not (isinstance(value, str) and (
            value in CGROUP_CHOICES or value.startswith("/"))):
        return "must be \"auto\", \"none\" or an absolute path, got %r" % (value,)
    return None


def resolve_cgroup_parent(choice: Optional[str], backend: str) -> Optional[str]:
    choice = choice or ("auto" if backend == "nvml" else "none")
    if choice == "none":
        return None
    if choice == "auto":
        mount = cgroup2_mount()
        return os.path.join(mount, "fractui") if mount else None
    return os.path.normpath(choice)


def _checked(name: str, parse: Any) -> Any:
    def check(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            value = text
        why = problem(name, value)
        if why:
            raise argparse.ArgumentTypeError(why)
        return value
    return check


def add_options(parser: argparse.ArgumentParser) -> None:
    """The settings as options of ``serve`` and ``daemon``."""
    parser.add_argument("--mps", action="store_true",
                        help="MPS is enabled on this host: cap shares with MPS limits too")
    parser.add_argument("--hami-core-lib", metavar="PATH", type=_checked("hami_core_lib", str),
                        help="HAMi-core's libvgpu.so: cap shares with it too")
    parser.add_argument("--cgroup-parent", metavar="PATH|auto|none",
                        type=_checked("cgroup_parent", str),
                        help="cgroup v2 directory for per-job cgroups (default: auto on real "
                             "GPUs, i.e. <cgroup2 mount>/fractui; none under simulation)")
    parser.add_argument("--log-max-mib", type=_checked("log_max_mib", int),
                        default=AgentSettings.log_max_mib,
                        help="size cap of each job's log (default 64)")
    parser.add_argument("--retention-hours", type=_checked("retention_hours", float),
                        default=AgentSettings.retention_hours,
                        help="keep finished jobs and their logs this long (default 168)")
    parser.add_argument("--watchdog-grace-s", type=_checked("watchdog_grace_s", float),
                        default=AgentSettings.watchdog_grace_s,
                        help="seconds between SIGTERM and SIGKILL for a job over its cap "
                             "(default 5)")
    parser.add_argument("--usage-sample-s", type=_checked("usage_sample_s", float),
                        default=AgentSettings.usage_sample_s,
                        help="seconds between samples of each job's GPU use (default 5)")


def from_args(args: argparse.Namespace) -> AgentSettings:
    return AgentSettings(**{f.name: getattr(args, f.name) for f in fields(AgentSettings)})
