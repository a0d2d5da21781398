"""The ``fractui`` command: DESIGN's verb table, and the one place where a verb's end becomes
its exit code (docs/cli.md): 0 done; 1 the fleet, an agent or the store refused or failed;
2 the command line or the config is wrong. Whatever happens, the user reads one line that says
what and where, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import sys
import textwrap
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from fractui import __version__
from fractui.arguments import (JOBS_LIMIT, bounded, check_words, container_image,
                                instance_uuid, layout_version, mig_profile, moment,
                                scheduler_name, team_name, user_name)
from fractui.config import Config, ConfigError, NoConfig, default_config_path, shown_path
from fractui.outcome import (EXIT_BUG, EXIT_CLOSED_PIPE, EXIT_FAILED, EXIT_INTERRUPTED,
                             EXIT_TERMINATED, EXIT_USAGE, Failed, Terminated, UsageError,
                             terminated_as_interrupted)
from fractui.terminal import (OutputFailed, checked_stdout, closed_streams_to_devnull,
                              escape_what_cannot_be_encoded, say, stdout_to_devnull,
                              text_only_to_terminals)
from fractui.usage import BY
from fractui.words import as_typed, close_to, quoted

# verb -> the module of fractui that carries it out (each verb is a function of that name)
VERBS = {
    "status": "commands", "doctor": "commands", "trust": "commands", "mig": "commands",
    "launch": "commands", "stop": "commands", "jobs": "job_commands", "logs": "job_commands",
    "submit": "store_commands", "cancel": "store_commands", "requeue": "store_commands",
    "preempt": "store_commands", "place": "store_commands", "move": "store_commands",
    "audit": "store_commands",
    "scheduler": "store_commands", "themes": "theme_commands",
    "cordon": "store_commands", "drain": "store_commands", "uncordon": "store_commands",
    "report": "report_commands", "teams": "team_commands", "queues": "queue_commands",
    "agent-archive": "agent_commands",
}
TUI = (None, "demo")  # no verb: the TUI on the configured fleet; demo: on a simulated one
# verbs that handle SIGTERM themselves (the scheduler hands its lease over, exit 0): until
# they do, its default action ends them, as a service manager counts clean, never exit 143
OWN_SIGNALS = ("scheduler",)
# verbs that run without a config file (one that is there is still checked: its [tui])
NO_CONFIG_NEEDED = ("demo", "themes")
# verbs that use nothing of a config: none is read, so a wrong one never stops them
NO_CONFIG_READ = ("agent-archive",)
MAX_LINES = 1_000_000  # --limit, -n: more than any screen or script reads at once
MAX_GRACE_S = 3600
ENV_HELP = "a variable for the job (repeatable); the value is passed as is, never by a shell"
IMAGE_HELP = "run the job in a container of this image, through the host's runtime"
JSON_HELP = "machine-readable output"
HOST_HELP = "a host of the config, by its name"
JOB_HELP = "a queued job, by its number as fractui jobs shows it"
READONLY_HELP = ("the TUI changes nothing: no key places, moves, stops, requeues or preempts a "
                 "job, cordons, drains or uncordons, or changes MIG")


class _Formatter(argparse.HelpFormatter):
    """argparse's help, wrapped at spaces only: a path or an option with a hyphen in it
    (/home/jean-luc/..., --destroy-idle) stays in one piece, to be copied."""

    def _split_lines(self, text: str, width: int) -> List[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False,
                             break_long_words=False)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, but printing as Python 3.11's does on every Python: --help or
    --version into a pipe whose reader is gone exits 0, quietly (3.10's let BrokenPipeError
    out: 141); and a word that is none of an argument's choices (a verb, --by) is named back
    as every word given is (``words.quoted``): argparse said it whole, a 100,000-character
    one too, with the choice meant where one is close (``fractui job``: did you mean 'jobs'?),
    as an unknown option is. Its help is wrapped by ``_Formatter``, its verbs' too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            close = close_to(value, action.choices) if isinstance(value, str) else []
            raise argparse.ArgumentError(action, "invalid choice: %s (%schoose from %s)" % (
                quoted(value), "did you mean %r? " % close[0] if close else "",
                ", ".join(map(repr, action.choices))))

    def _print_message(self, message: str, file: Optional[IO[str]] = None) -> None:
        if not message:
            return
        out = file or sys.stderr
        try:  # (not argparse's own: 3.11's drops every OSError, stdout's with no room too)
            out.write(message)
            out.flush()  # (a buffered stdout meets a closed pipe here, not at main's flush)
        except OutputFailed:  # stdout has no room: said by main, exit 1
            raise
        except OSError:  # its reader is gone (a closed pipe), or stderr failed: no one to tell
            if out is sys.stdout:  # what its buffer keeps cannot fail main's flush (141)
                stdout_to_devnull()


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fractui", description="Share every GPU of a fleet between many jobs.")
    parser.add_argument("--version", action="version", version="fractui %s" % __version__)
    parser.add_argument("--config", metavar="FILE",
                        help="config file (default: %s)" % default_config_path())
    parser.add_argument("--readonly", action="store_true", help=READONLY_HELP + "; it runs no "
                        "scheduler of its own")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    p = _verb_parser(verbs, "status", "every host's state, agent and GPUs")
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = _verb_parser(verbs, "doctor", "what is wrong on each host, and how to fix it")
    p.add_argument("hosts", nargs="*", metavar="HOST", help="only these hosts (default: all)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = _verb_parser(verbs, "trust", "show a host's key fingerprint and trust it")
    p.add_argument("host", metavar="HOST", help=HOST_HELP)
    p.add_argument("--yes", action="store_true", help="trust without asking (for scripts)")

    p = _verb_parser(verbs, "mig", "a MIG change — create an instance (PROFILE), destroy one "
                         "(--destroy), turn MIG mode on or off (--mode) — planned, shown, "
                         "applied on confirm")
    p.add_argument("host", metavar="HOST", help=HOST_HELP)
    p.add_argument("gpu", metavar="GPU", help="GPU index or uuid")
    p.add_argument("profile", metavar="PROFILE", type=mig_profile, nargs="?",
                   help="create an instance of this profile, e.g. 3g.40gb")
    p.add_argument("--destroy", metavar="INSTANCE", type=instance_uuid,
                   help="destroy this idle MIG instance (its MIG- uuid)")
    p.add_argument("--mode", choices=("on", "off"),
                   help="turn MIG mode on or off (an idle GPU only; says if a reset is needed)")
    p.add_argument("--reset", action="store_true",
                   help="with --mode: where the change waits for a GPU reset, the agent makes it "
                        "(only while nothing uses the GPU)")
    p.add_argument("--destroy-idle", action="store_true",
                   help="with PROFILE: the plan may destroy idle instances to make room")
    p.add_argument("--yes", action="store_true", help="apply without asking")
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = _verb_parser(verbs, "launch", "start a job on a host: fractui launch HOST GPU -- ARGV")
    p.add_argument("host", metavar="HOST", help=HOST_HELP)
    p.add_argument("gpu", metavar="GPU", help="GPU index or uuid")
    slice_ = p.add_mutually_exclusive_group(required=True)
    slice_.add_argument("--instance", metavar="UUID", type=instance_uuid,
                        help="an idle MIG instance")
    slice_.add_argument("--profile", metavar="P", type=mig_profile,
                        help="create a MIG instance of this profile")
    slice_.add_argument("--memory-mib", type=bounded(1, 2 ** 31), metavar="N",
                        help="a memory share (no MIG)")
    p.add_argument("--start", type=bounded(0, 63), metavar="S",
                   help="with --profile: the slot to use")
    p.add_argument("--name", help="the job's name")
    p.add_argument("--key", help="idempotency key (default: derived from the command, so "
                   "running the same command again answers the same job)")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help=ENV_HELP)
    p.add_argument("--cwd", help="working directory on the host (in the container, with "
                   "--image)")
    p.add_argument("--image", type=container_image, metavar="IMAGE", help=IMAGE_HELP)
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = _verb_parser(verbs, "submit", "queue a job: fractui submit --queue Q -- ARGV; it runs "
                         "on its host as you (an admin's, as the host's agent)")
    p.add_argument("--queue", required=True, metavar="Q", help="the queue (a [[queues]] of the "
                   "config): the GPU portion the job gets")
    p.add_argument("--team", metavar="T", help="the team charged (default: the queue's)")
    p.add_argument("--name", help="the job's name (default: the program's)")
    p.add_argument("--cwd", help="working directory on the host (an absolute path)")
    p.add_argument("--image", type=container_image, metavar="IMAGE",
                   help=IMAGE_HELP + " (default: the queue's image, else a bare process)")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help=ENV_HELP)
    p.add_argument("--key", help="your name for this submit: submitting again with the same "
                   "key (a retry) finds its job, never makes a second (default: a new one)")
    p.add_argument("--wait", action="store_true",
                   help="wait for the job to end, saying each step; exit 0 only if it exited 0")
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = _verb_parser(verbs, "jobs", "queued jobs, then jobs launched directly on hosts; "
                         "fractui jobs 12: job 12, whatever its state")
    p.add_argument("hosts", nargs="*", metavar="HOST|JOB", help="only these hosts' jobs, or "
                   "only these queued jobs by number (ended ones too)")
    whose = p.add_mutually_exclusive_group()
    whose.add_argument("--user", metavar="U", type=user_name,
                       help="only the queued jobs U submitted")
    whose.add_argument("--me", action="store_true", help="only the queued jobs you submitted")
    p.add_argument("--all", action="store_true", help="ended queued jobs too")
    p.add_argument("--limit", type=bounded(1, MAX_LINES), default=None, metavar="N",
                   help="with --all: the newest N ended jobs (%d); every active one is "
                   "listed whatever N is" % JOBS_LIMIT)
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    for verb, what in (("cancel", "cancel a queued job (stopping it if it runs)"),
                       ("requeue", "stop a placed or running queued job and put it back in its "
                                   "queue, as its next attempt"),
                       ("preempt", "as requeue, recorded as a preemption")):
        p = _verb_parser(verbs, verb, what)
        p.add_argument("job", metavar="JOB", nargs="+", help=JOB_HELP + "; several may be "
                       "named, each asked in turn")

    p = _by_hand_parser(verbs, "place", "place a queued job by hand: JOB HOST GPU",
                        "with --profile: the slot")
    p.add_argument("--layout-version", metavar="V", type=layout_version,
                   help="with --start: the GPU layout the plan was previewed on (its "
                   "layout_version in status --json); the launch is refused if it changed")
    _by_hand_parser(verbs, "move", "move a placed or running queued job by hand: JOB HOST GPU; "
                    "it is stopped, then placed there, the slot held for it meanwhile",
                    "with --profile: the slot (default: the best one free)")

    for verb, what in (("cordon", "take a host, or one GPU of it, out of service: no new work "
                                  "lands there; what runs there runs on"),
                       ("drain", "as cordon, and say drained once nothing is left there"),
                       ("uncordon", "put a host (and each of its GPUs) or one GPU back in "
                                    "service")):
        p = _verb_parser(verbs, verb, what)
        p.add_argument("host", metavar="HOST", help=HOST_HELP)
        p.add_argument("gpu", nargs="?", metavar="GPU", help="a GPU index (default: the whole "
                       "host)")
        if verb != "uncordon":
            p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = _verb_parser(verbs, "audit", "who decided, placed, preempted what, and why")
    p.add_argument("job", nargs="?", metavar="JOB", help="only this job")
    p.add_argument("-n", "--limit", type=bounded(1, MAX_LINES), default=100, metavar="N",
                   help="the newest N entries (default 100)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = _verb_parser(verbs, "report", "what jobs held and used over a time range, their "
                         "waits, and the GPUs sharing saved")
    p.add_argument("--since", type=moment, default=moment("24h"), metavar="WHEN",
                   help="start of the range: now, a time ago (90s, 30m, 24h, 7d, 2w) or a "
                   "local date and time, 2026-12-01[T14:00] (a zone too: 2026-12-01T14:00Z) "
                   "(default 24h ago)")
    p.add_argument("--until", type=moment, default=moment("now"), metavar="WHEN",
                   help="end of the range, as --since (default now)")
    p.add_argument("--by", choices=BY, default="team", help="group by (default team)")
    whose = p.add_mutually_exclusive_group()
    whose.add_argument("--user", metavar="U", type=user_name,
                       help="only the jobs U submitted")
    whose.add_argument("--me", action="store_true", help="only the jobs you submitted")
    p.add_argument("--team", metavar="T", type=team_name,
                   help="only the jobs charged to team T (with --me or --user: theirs in T)")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help=JSON_HELP)
    form.add_argument("--csv", action="store_true", help="one row per group, then the total")

    p = _verb_parser(verbs, "teams", "each team's standing as the scheduler sees it: quota, "
                         "GPUs held and borrowed, jobs running and waiting, and who is served "
                         "next")
    p.add_argument("--team", metavar="T", type=team_name, help="only team T")
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = _verb_parser(verbs, "queues", "each queue: what a job of it gets, where it may run, its "
                         "jobs waiting and running, the longest wait, and whether any host "
                         "could serve it")
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = _verb_parser(verbs, "scheduler", "the headless placement loop (head node, systemd)")
    p.add_argument("--name", type=scheduler_name, help="this scheduler's name in the lease and "
                   "the audit (default USER@HOST:PID)")
    p.add_argument("--until-stdin-closes", action="store_true",
                   help="stop (handing the lease over) when stdin closes: how a TUI or the "
                   "demo runs its scheduler as a child that ends with it")

    p = _verb_parser(verbs, "logs", "a job's output: fractui logs JOB|HOST/JOB [-f]")
    p.add_argument("job", metavar="JOB", help=JOB_HELP + ", or HOST/JOB for one launched "
                   "on a host by hand")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output "
                   "until the job ends (over SSH: its host must be in the config)")
    p.add_argument("-n", "--lines", type=bounded(0, MAX_LINES), default=100, metavar="N",
                   help="the last N lines (default 100)")

    p = _verb_parser(verbs, "demo", "the TUI on a simulated local fleet (no GPU, no SSH)")
    p.add_argument("--gpus", type=_demo_gpus, default=16, metavar="N",
                   help="GPUs in the simulated fleet, 1 to 1000 (default 16)")
    p.add_argument("--seed", type=bounded(0, 2 ** 32 - 1), default=1, metavar="S",
                   help="seed of the simulated job stream (default 1)")
    p.add_argument("--readonly", action="store_true", default=argparse.SUPPRESS,
                   help=READONLY_HELP + " (the demo's scheduler still places its jobs)")

    p = _verb_parser(verbs, "themes", "the TUI's themes: which loaded, which did not and why")
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = _verb_parser(verbs, "agent-archive", "write the agent zipapp as DIR/agent.pyz, for an "
                         "image (deploy/kubernetes)")
    p.add_argument("dir", metavar="DIR", help="the folder to write agent.pyz in (made if "
                   "missing)")

    p = _verb_parser(verbs, "stop", "stop a job: SIGTERM, then SIGKILL after the grace")
    p.add_argument("job", metavar="HOST/JOB", help="a job launched on a host by hand, as "
                   "fractui jobs shows it, e.g. gpu-a/j12")
    p.add_argument("--grace", type=bounded(0, MAX_GRACE_S), default=10, metavar="S",
                   help="seconds from SIGTERM to SIGKILL (default 10)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    for name, p in verbs.choices.items():  # after the verb too: fractui report --config FILE
        # taken by every verb alike, but not offered in the help of one that reads none
        p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS if name in NO_CONFIG_READ else
                       "config file, as before the verb")
        if name in ("launch", "submit"):  # the job's command, cut off before argparse reads
            p.usage = p.format_usage()[len("usage: "):].rstrip("\n") + " -- ARGV..."
    return parser


def _by_hand_parser(verbs: Any, verb: str, what: str, start: str) -> argparse.ArgumentParser:
    """``place``'s and ``move``'s words: a job, where to put it by hand, and the questions
    agreed to in advance (``start``: what --start says)."""
    p = _verb_parser(verbs, verb, what)
    p.add_argument("job", metavar="JOB", help=JOB_HELP)
    p.add_argument("host", metavar="HOST", help=HOST_HELP + ": where to %s it" % verb)
    p.add_argument("gpu", metavar="GPU", help="GPU index")
    p.add_argument("--profile", metavar="P", type=mig_profile,
                   help="MIG profile (default: the queue's rule)")
    p.add_argument("--start", type=bounded(0, 63), metavar="S", help=start)
    p.add_argument("--over-quota", action="store_true",
                   help="%s it past its team's quota without asking (it is then borrowed: "
                   "preemptible)" % verb)
    p.add_argument("--yes", action="store_true",
                   help="agree to every question in advance: past the quota, and a launch that "
                   "first changes the GPU's MIG mode (a GPU reset on an A100 or A30)")
    return p


def _verb_parser(verbs: Any, name: str, what: str) -> argparse.ArgumentParser:
    """A verb's parser: what it does is its line in ``fractui --help`` and the head of its
    own ``--help``."""
    return verbs.add_parser(name, help=what, description=what)


def _verb_parsers(parser: argparse.ArgumentParser) -> Dict[str, argparse.ArgumentParser]:
    """Each verb's parser, by its name (argparse keeps no public handle on them)."""
    return dict(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


@contextlib.contextmanager
def _nothing_required(parser: argparse.ArgumentParser) -> Iterator[None]:
    """Within: no option or group of options of ``parser`` or its verbs is required, so a
    parse leaves the words it does not know for ``_run`` to say, where argparse says a
    missing required option before an unknown one (which is often the same option, mistyped:
    ``submit -q quarter``). Their own ``required`` is put back after."""
    held = [(a, a.required) for p in [parser, *_verb_parsers(parser).values()]
            for a in p._actions] + [(g, g.required) for p in _verb_parsers(parser).values()
                                   for g in p._mutually_exclusive_groups]  # (no public list)
    for item, _ in held:
        item.required = False
    try:
        yield
    finally:
        for item, required in held:
            item.required = required


def _close_option(parser: argparse.ArgumentParser, words: List[str], letters: bool = True,
                  taken: Optional[Dict[str, Set[str]]] = None) -> str:
    """" (did you mean --me?)" for the first unknown option close to one of the parser's,
    as typos are common (--mine, --wiat), or with ``letters`` a letter: one that other verbs
    take (``taken``, ``_letters``) means what it means there (-n: --limit, as audit's), else
    one that begins only one of its long options (-q for --queue); "" where none is close."""
    # by their names without dashes, which would make every long option look alike
    options = {o.lstrip("-"): o for o in parser._option_string_actions}  # (no public list)
    for word in words:
        flag = word.split("=", 1)[0]
        name = flag.lstrip("-")
        if letters and flag in (taken or {}):
            close = [n for n, o in options.items() if o in taken[flag]]  # type: ignore[index]
        elif letters and re.fullmatch("-[A-Za-z]", flag):
            close = [o for o in options if len(o) > 1 and o.startswith(name)]
            close = close if len(close) == 1 else []
        else:
            close = close_to(name, options) if word.startswith("-") else []
        if close:
            return " (did you mean %s?)" % options[close[0]]
    return ""


def _letters(parser: argparse.ArgumentParser) -> Dict[str, Set[str]]:
    """Each letter a verb takes as an option, and the long options it is short for in the
    verbs that take it (-n: --limit in audit, --lines in logs): typed to a verb that does not
    take it, it is meant as there (``submit -n 4`` is no --name)."""
    taken: Dict[str, Set[str]] = {}
    for verb in _verb_parsers(parser).values():
        for action in verb._actions:  # (no public list)
            longs = {o for o in action.option_strings if o.startswith("--")}
            for letter in set(action.option_strings) - longs:
                taken.setdefault(letter, set()).update(longs)
    return taken


def _demo_gpus(text: str) -> int:
    from fractui.demo import gpu_count

    return gpu_count(text)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs one command line; returns its exit code, whatever happened."""
    closed_streams_to_devnull()
    escape_what_cannot_be_encoded()
    checked_stdout()
    try:
        try:
            code = _run(list(sys.argv[1:] if argv is None else argv))
        except SystemExit as done:  # argparse: --help, --version, a usage error (said)
            code = done.code if isinstance(done.code, int) else EXIT_USAGE
        sys.stdout.flush()  # a reader gone before the last line shows here, not at exit
        return code
    except BrokenPipeError:
        return _closed_pipe()
    except OutputFailed as err:  # (no room, an I/O error): the output is not whole, so exit 1
        stdout_to_devnull()  # what is left in its buffer cannot fail the exit
        say("cannot write the output (stdout): %s" % err.strerror)
        return EXIT_FAILED
    except KeyboardInterrupt as stopped:
        return EXIT_TERMINATED if isinstance(stopped, Terminated) else EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - every error ends as one line and its code
        code, message = _outcome(err)
        say(message)
        return code


def _run(words: List[str]) -> int:
    # first: argparse's own errors quote the words typed (an unknown option), and Textual
    # draws through its own handle (tui/controls.py)
    text_only_to_terminals()
    check_words(words)
    parser = _parser()
    # everything after the first "--" is the job's argv, untouched (argparse would read
    # options in it, e.g. a job's own --help); only launch and submit take one
    job_argv: List[str] = []
    cut_at_dashes = "--" in words
    only_theirs = "only launch and submit take a program after --"
    if cut_at_dashes:
        cut = words.index("--")
        words, job_argv = words[:cut], words[cut + 1:]
        if not {"launch", "submit"} & set(words):  # before argparse finds a word missing that
            parser.error(only_theirs)  # the dashes cut off: cancel -- 12 ("requires JOB")
    with _nothing_required(parser):  # an unknown option is said first, as the likelier cause
        args, extra = parser.parse_known_args(words)  # (submit -q x: not "--queue is required")
    if extra:
        words_left = " ".join(map(as_typed, extra))
        verb = _verb_parsers(parser).get(args.verb, parser)  # its usage, not fractui's
        ours = args.verb in ("launch", "submit") and not job_argv
        # a program's name first is a command typed without "--": a letter after it is the
        # program's own (nvidia-smi -q), not ours mistyped
        command = ours and not extra[0].startswith("-")
        close = _close_option(verb, extra, letters=not command, taken=_letters(parser))
        hint = " (the job's command goes after --: fractui %s ... -- %s)" % (
            args.verb, words_left) if command or (ours and not close) else ""
        verb.error("unrecognized arguments: %s%s%s" % (words_left, close, hint))
    args = parser.parse_args(words)  # again, for what is required
    args.argv = job_argv
    if cut_at_dashes and args.verb not in ("launch", "submit"):
        parser.error(only_theirs)
    if args.readonly and args.verb not in TUI:
        parser.error("--readonly is for the TUI: fractui --readonly, fractui demo --readonly")
    if args.config == "":
        parser.error("--config needs a file name")
    config = _config(args)
    if args.verb in TUI:
        from fractui.tui.run import run

        return run(args, config)
    verb = _verb(args.verb)
    if args.verb in OWN_SIGNALS:
        return verb(config, args)
    with terminated_as_interrupted():
        return verb(config, args)


def _verb(name: str) -> Callable[[Config, argparse.Namespace], int]:
    """The verb's function, from its own module only: a verb loads none of the others' (the
    themes' Textual, the fleet commands' SSH), which would cost each run of it a third of a
    second or more."""
    module = importlib.import_module("fractui." + VERBS[name])
    return getattr(module, name.replace("-", "_"))


def _config(args: argparse.Namespace) -> Config:
    """The admin's config, checked, queues included (fractui.servable). The demo and themes
    need none: only its [tui] table is used, when there is a file; agent-archive reads none."""
    from fractui.servable import load_checked

    if args.verb in NO_CONFIG_READ:
        return Config(path=None)
    path = args.config or default_config_path()
    if args.verb in NO_CONFIG_NEEDED and args.config is None and not os.path.exists(path):
        return Config(path=None)
    return load_checked(path)


def _outcome(err: Exception) -> Tuple[int, str]:
    """The exit code and the line to print for an error that ended a verb."""
    if isinstance(err, NoConfig):
        return EXIT_USAGE, "%s\n%s" % (err, _no_config_help(err.path))
    if isinstance(err, (ConfigError, UsageError)):
        return EXIT_USAGE, str(err)
    if isinstance(err, _failures()):
        return EXIT_FAILED, str(err) or type(err).__name__
    if os.environ.get("FRACTUI_DEBUG"):
        raise err
    return EXIT_BUG, ("internal error: %s: %s (a bug in fractui; FRACTUI_DEBUG=1 shows where)"
                      % (type(err).__name__, err))


def _failures() -> Tuple[type, ...]:
    """Refusals and failures of the fleet, the agents and the store (its rule of who may do
    what included): exit 1. Imported here, on an error only, so a command that fails on its
    command line stays quick."""
    from fractui.fleet.client import AgentCallError, ConnectionLost
    from fractui.fleet.host import HostUnavailable
    from fractui.fleet.transport.base import TransportError
    from fractui.store.access import Denied
    from fractui.store.base import JobNotFound, StateConflict, StoreError
    from fractui.store.intents import Refused
    from remote_agent.daemon.trust import UnsafePath

    return (Failed, Refused, Denied, JobNotFound, StateConflict, HostUnavailable, AgentCallError,
            ConnectionLost, TransportError, StoreError, OSError, UnsafePath)


def _no_config_help(path: Optional[str]) -> str:
    example = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "config.example.toml")
    where = example if os.path.exists(example) else "config.example.toml in fractui's source"
    return ("  fractui reads --config FILE, else %s ($XDG_CONFIG_HOME/fractui/config.toml)\n"
            "  to try fractui without a config: fractui demo  (a simulated fleet, no GPU, "
            "no SSH)\n"
            "  to write one: start from %s, which documents every key"
            % (shown_path(default_config_path()), where))


def _closed_pipe() -> int:
    """stdout's reader has gone: stop quietly. stdout now points at /dev/null, so the
    interpreter's own flush at exit has nowhere to fail."""
    stdout_to_devnull()
    return EXIT_CLOSED_PIPE
