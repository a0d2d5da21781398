"""The ``fractui`` command: DESIGN's verb table.

Every verb that prints data has ``--json`` (formats in docs/cli.md). Usage errors and a bad config
exit 2 with ``file:line: what is wrong``; an unreachable host is reported for that host, never
as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from typing import Any, Dict, List, Optional, Sequence

from fractui import __version__
from fractui.config import ConfigError, default_config_path, load_config
from fractui.store.base import StoreError

EXIT_USAGE = 2
EXIT_FAILED = 1


class UsageError(Exception):
    """A command line that cannot be carried out as written (exit 2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fractui", description="Share every GPU of a fleet between many jobs.")
    parser.add_argument("--version", action="version", version="fractui %s" % __version__)
    parser.add_argument("--config", metavar="FILE",
                        help="config file (default: %s)" % default_config_path())
    readonly = "the TUI binds no key that changes the fleet (place, stop, requeue, preempt)"
    parser.add_argument("--readonly", action="store_true", help=readonly)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    p = verbs.add_parser("status", help="every host's state, agent and GPUs")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = verbs.add_parser("doctor", help="what is wrong on each host, and how to fix it")
    p.add_argument("hosts", nargs="*", metavar="HOST")
    p.add_argument("--json", action="store_true")

    p = verbs.add_parser("trust", help="show a host's key fingerprint and trust it")
    p.add_argument("host", metavar="HOST")
    p.add_argument("--yes", action="store_true", help="trust without asking (for scripts)")

    p = verbs.add_parser("mig", help="plan a MIG instance, show the plan, apply it on confirm")
    p.add_argument("host", metavar="HOST")
    p.add_argument("gpu", metavar="GPU", help="GPU index or uuid")
    p.add_argument("profile", metavar="PROFILE", help="e.g. 3g.40gb")
    p.add_argument("--destroy-idle", action="store_true",
                   help="the plan may destroy idle instances to make room")
    p.add_argument("--yes", action="store_true", help="apply without asking")
    p.add_argument("--json", action="store_true")

    p = verbs.add_parser("launch", help="start a job on a host: fractui launch HOST GPU -- ARGV")
    p.add_argument("host", metavar="HOST")
    p.add_argument("gpu", metavar="GPU", help="GPU index or uuid")
    slice_ = p.add_mutually_exclusive_group(required=True)
    slice_.add_argument("--instance", metavar="UUID", help="an idle MIG instance")
    slice_.add_argument("--profile", metavar="P", help="create a MIG instance of this profile")
    slice_.add_argument("--memory-mib", type=int, metavar="N", help="a memory share (no MIG)")
    p.add_argument("--start", type=int, metavar="S", help="with --profile: the slot to use")
    p.add_argument("--name", help="the job's name")
    p.add_argument("--key", help="idempotency key (default: a new one)")
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--cwd", help="working directory on the host")
    p.add_argument("--json", action="store_true")

    p = verbs.add_parser("submit", help="queue a job: fractui submit --queue Q -- ARGV")
    p.add_argument("--queue", required=True, metavar="Q")
    p.add_argument("--team", metavar="T", help="the team charged (default: the queue's)")
    p.add_argument("--name", help="the job's name (default: the program's)")
    p.add_argument("--cwd", help="working directory on the host")
    p.add_argument("--json", action="store_true")

    p = verbs.add_parser("jobs", help="queued jobs, then jobs launched directly on hosts")
    p.add_argument("hosts", nargs="*", metavar="HOST", help="only these hosts' jobs")
    p.add_argument("--all", action="store_true", help="ended queued jobs too")
    p.add_argument("--limit", type=int, default=200, help="with --all: the newest N")
    p.add_argument("--json", action="store_true")

    for verb, what in (("cancel", "cancel a queued job (stopping it if it runs)"),
                       ("requeue", "stop a running queued job and put it back in its queue"),
                       ("preempt", "as requeue, recorded as a preemption")):
        p = verbs.add_parser(verb, help=what)
        p.add_argument("job", metavar="JOB")

    p = verbs.add_parser("place", help="place a queued job by hand: JOB HOST GPU")
    p.add_argument("job", metavar="JOB")
    p.add_argument("host", metavar="HOST")
    p.add_argument("gpu", metavar="GPU", help="GPU index")
    p.add_argument("--profile", metavar="P", help="MIG profile (default: the queue's rule)")
    p.add_argument("--start", type=int, metavar="S", help="with --profile: the slot")
    p.add_argument("--layout-version", metavar="V", help="with --start: the GPU layout the "
                   "plan was previewed on; the launch is refused if it changed")
    p.add_argument("--over-quota", "--yes", action="store_true", dest="over_quota",
                   help="place it even past its team's quota, without asking (it is then "
                   "borrowed: preemptible)")

    p = verbs.add_parser("audit", help="who decided, placed, preempted what, and why")
    p.add_argument("job", nargs="?", metavar="JOB", help="only this job")
    p.add_argument("-n", "--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")

    p = verbs.add_parser("scheduler", help="the headless placement loop (head node, systemd)")
    p.add_argument("--name", help="this scheduler's name in the lease and the audit")

    p = verbs.add_parser("logs", help="a job's output: fractui logs JOB|HOST/JOB [-f]")
    p.add_argument("job", metavar="JOB")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    p.add_argument("-n", "--lines", type=int, default=100)

    p = verbs.add_parser("demo", help="the TUI on a simulated local fleet (no GPU, no SSH)")
    p.add_argument("--gpus", type=_demo_gpus, default=16, metavar="N",
                   help="GPUs in the simulated fleet, 1 to 1000 (default 16)")
    p.add_argument("--seed", type=int, default=1, help="seed of the simulated job stream")
    p.add_argument("--readonly", action="store_true", default=argparse.SUPPRESS, help=readonly)

    p = verbs.add_parser("stop", help="stop a job: SIGTERM, then SIGKILL after the grace")
    p.add_argument("job", metavar="HOST/JOB")
    p.add_argument("--grace", type=int, default=10, metavar="S")
    p.add_argument("--json", action="store_true")
    return parser


def _demo_gpus(text: str) -> int:
    from fractui.demo import gpu_count

    return gpu_count(text)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    words = list(sys.argv[1:] if argv is None else argv)
    # everything after the first "--" is the job's argv, untouched (argparse would read
    # options in it, e.g. a job's own --help)
    job_argv: List[str] = []
    if "--" in words:
        cut = words.index("--")
        words, job_argv = words[:cut], words[cut + 1:]
    args = parser.parse_args(words)
    args.argv = job_argv
    if job_argv and args.verb not in ("launch", "submit"):
        parser.error("only launch and submit take a program after --")
    if args.readonly and args.verb not in (None, "demo"):
        parser.error("--readonly is for the TUI: fractui --readonly, fractui demo --readonly")
    if args.verb in (None, "demo"):  # the TUI
        from fractui.tui.run import run

        return run(args)
    try:
        config = load_config(args.config or default_config_path())
    except ConfigError as err:
        print("fractui: %s" % err, file=sys.stderr)
        return EXIT_USAGE
    from fractui import commands, store_commands

    verb = getattr(commands, args.verb, None) or getattr(store_commands, args.verb)
    try:
        return verb(config, args)
    except (UsageError, ConfigError) as err:
        print("fractui: %s" % err, file=sys.stderr)
        return EXIT_USAGE
    except StoreError as err:  # damaged, read-only, full, locked: said with its path
        print("fractui: %s" % err, file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def split_job(ref: str) -> List[str]:
    host, sep, job = ref.partition("/")
    if not sep or not host or not job:
        raise UsageError("a job is named HOST/JOB, e.g. gpu-a/j12, not %r" % ref)
    return [host, job]


def parse_env(pairs: List[str]) -> Dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError("--env takes KEY=VALUE, not %r" % pair)
        env[key] = value
    return env


def new_key() -> str:
    return "cli-%s" % uuid.uuid4().hex


def gpu_ref(text: str) -> Any:
    return int(text) if text.isdigit() else text


def confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    try:
        return input("%s [y/N] " % question).strip().lower() in ("y", "yes")
    except EOFError:
        return False
