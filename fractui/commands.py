"""The host verbs of ``fractui``: status, doctor, trust, mig, launch, stop. Each takes the config
and the parsed arguments and returns the exit code; what fails is raised (fractui.outcome), and
``fractui/cli.py`` says it and maps it to its code."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, TextIO, Tuple

from fractui import kept_status
from fractui.arguments import gpu_ref, job_problem, parse_env, split_job
from fractui.checked_store import no_store_to_ask, store_of_a_host_verb
from fractui.config import Config
from fractui.copy_words import judged_again, stale_copies, unread
from fractui.fleet.client import AgentCallError
from fractui.fleet.doctor import diagnose
from fractui.fleet.fleet import open_fleet
from fractui.fleet.host import AnswerLost, HostSession, HostUnavailable
from fractui.fleet.hostkeys import KnownHosts, UntrustedHostKey
from fractui.fleet.sshconfig import SshConfigError, resolve
from fractui.job_commands import agent_why, host_output, typed_ref
from fractui.outcome import EXIT_FAILED, Failed, UsageError, gone_words, naming
from fractui.sched.cordons import marks
from fractui.sched.copies import held_copies, unheld
from fractui.mig_by_hand import carry_out
from fractui.sched.fleetview import held_why, lists
from fractui.sched.mig_change import (MigChange, create_refused, plan_create,
                                      plan_destroy, plan_mode)
from fractui.store import Store, open_store
from fractui.store.access import LAUNCH, MIG, STOP
from fractui.store.base import StoreError
from fractui.store.model import ON_HOST, StaleCopy
from fractui.store.intents import Asker, authorize, reads_host_output
from fractui.terminal import confirm, print_json, print_lines, say
from fractui.whoami import os_user
from fractui.words import shell_line
from remote_agent import MODE_RESET
from remote_agent.daemon.trust import UnsafePath
from remote_agent.rpc.jsonrpc import JOB_KEY_MISMATCH


# -- status, doctor, trust --

def _no_hosts(config: Config) -> None:
    """Said where a host verb has nothing to show: an empty list would say nothing of why."""
    if not config.hosts:
        say("the config lists no hosts ([[hosts]]): nothing to show")


def status(config: Config, args: argparse.Namespace) -> int:
    if not config.hosts:  # a researcher who reaches only the store: what it keeps of them
        return kept_status.status(config, args)
    # (the store before the hosts: what it holds is their copies' own)
    first, readable = _store_first(config)
    fleet = open_fleet(config)
    try:
        records = [s.record() for s in fleet.statuses()]
    finally:
        fleet.stop()
    for r in records:  # (each host's jobs, as jobs HOST lists them: their output the rule's)
        r["jobs"] = host_output(r["jobs"], readable)
    out = first.out if first else {}
    copies = _copies(config, records, first) if first else {}
    for r in records:
        r["out_of_service"] = out.get((r["name"], None))
        r["unheld_copies"] = copies.get(r["name"], [])
        for g in r["gpus"]:
            g["out_of_service"] = out.get((r["name"], g["index"]))
    if args.json:
        print_json({"hosts": records})
    else:
        lines = []
        for r in records:
            lines.append("%-16s %-10s %s" % (r["name"], r["state"], " ".join(
                w for w in (_mark(r["out_of_service"]), r["error"]) if w)))
            lines += [kept_status.gpu_line(g, (_mark(g["out_of_service"]), _gpu_summary(g)))
                      for g in r["gpus"]]
            lines += ["    %s: %s" % (c["ref"], c["why"]) for c in r["unheld_copies"]]
        print_lines(lines)
    bad = [r for r in records if r["state"] in ("offline", "untrusted", "connecting")]
    return EXIT_FAILED if bad else 0


@dataclass(frozen=True)
class StoreFirst:
    """What ``status`` reads of the store before it asks the hosts: (host, GPU or None) ->
    cordoned, draining or drained; the copies its jobs hold (``copies.held_copies``); its
    stale copies; its uid."""

    out: Dict[Any, str]
    held: Set[Tuple[str, str]]
    stale: List[StaleCopy]
    uid: str


def _store_first(config: Config) -> Tuple[Optional[StoreFirst], bool]:
    """The store's word, read before the hosts answer: a copy a host then shows that this
    read holds is its job's own, whatever became of it by a later read (it stopped with its
    grace and its job moved on). None where the store cannot be read (said on stderr: the
    hosts are shown all the same). And whether the hosts' jobs' output is the reader's
    (intents.reads_host_output; where the store cannot be read, only with no store to ask:
    checked_store.no_store_to_ask)."""
    try:
        store = open_store(config.store.url, origin=config.store.origin)
        try:
            on_host = store.jobs(ON_HOST)
            return StoreFirst(marks(store.cordons(), on_host),
                              held_copies(on_host, [], store.uid), stale_copies(store),
                              store.uid), reads_host_output(store, Asker.here(config.teams))
        finally:
            store.close()
    except StoreError as err:
        say("cordons and unheld copies not shown: %s" % err)
        return None, no_store_to_ask(err)


def _copies(config: Config, records: List[Dict[str, Any]], first: StoreFirst
            ) -> Dict[str, List[Dict[str, Any]]]:
    """Per host, the live copies under the store's key that no job of the store holds there
    (``copies.unheld``), each with what it is, by the store read again (``copy_words``)."""
    found = [c for r in records for c in unheld(r["name"], r["jobs"], first.held, first.uid)]
    if not found:
        return {}
    try:
        store = open_store(config.store.url, origin=config.store.origin)
        try:
            said = judged_again(store, found, first.stale)
        finally:
            store.close()
    except StoreError as err:
        say("unheld copies said as unread: %s" % err)
        said = unread(found, first.stale, first.uid)
    copies: Dict[str, List[Dict[str, Any]]] = {}
    for c, why in said:
        copies.setdefault(c.host, []).append({"ref": c.ref, "job": c.job,
                                              "attempt": c.attempt, "why": why})
    return copies


def _mark(state: Optional[str]) -> str:
    return "[%s]" % state if state else ""


def _gpu_summary(gpu: Dict[str, Any]) -> str:
    if gpu.get("mig_mode"):
        parts = ["%s@%d" % (i["profile"], i["start"]) for i in gpu.get("instances", [])]
        return "MIG: " + (" ".join(parts) or "no instances")
    used, total = gpu.get("memory_used_mib"), gpu.get("memory_mib")
    if total is None:
        return kept_status.memory(None) if used is None else \
            "%s MiB used, its total unknown" % used
    return "%s/%s MiB" % ("?" if used is None else used, total)


def doctor(config: Config, args: argparse.Namespace) -> int:
    hosts = [config.host(n) for n in args.hosts] if args.hosts else list(config.hosts)
    _no_hosts(config)
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:  # a silent host
        reports = list(pool.map(lambda h: diagnose(config, h), hosts))  # delays no other
    if args.json:
        print_json({"hosts": [r.record() for r in reports]})
    else:
        for report in reports:
            print(report.name)
            for check in report.checks:
                print("  [%s] %-12s %s" % (check.mark, check.name, check.detail))
                if check.fix:
                    print("       fix: %s" % check.fix)
    return EXIT_FAILED if any(not r.ok for r in reports) else 0


def trust(config: Config, args: argparse.Namespace) -> int:
    """Connect hop by hop; each key of a host that known_hosts does not know yet is shown and,
    on confirmation, added as one line. Never accepted without the admin's word (or --yes);
    a changed or revoked key is never accepted at all."""
    host = config.host(args.host)
    if host.transport != "ssh":
        raise UsageError("%s is a%s host: it has no host key" % (host.name, {
            "local": " local simulated", "exec": "n exec"}[host.transport]))
    from fractui.fleet.link import LinkError, SshLink  # paramiko: the other verbs go without
    known = KnownHosts(config.ssh.known_hosts)
    try:
        route = resolve(host, config.ssh.config_file)
    except SshConfigError as err:
        raise Failed(naming(host.name, err)) from None
    added = set()
    while True:
        try:
            SshLink(route, known, config.ssh.connect_timeout).connect().close()
        except UntrustedHostKey as err:
            print("%s presents %s key %s" % (err.name, err.key.get_name(), err.fingerprint))
            if not err.trustable:
                raise Failed(str(err)) from None
            if (err.name, err.fingerprint) in added:
                raise Failed("%s: the key just added to %s is still refused" % (
                    host.name, known.path)) from None
            if not (args.yes or confirm("Trust it?")):
                raise Failed("%s: not trusted" % host.name) from None
            try:
                known.append(err.name, err.key)
            except UnsafePath as unsafe:
                raise Failed("%s: its key is not added: %s" % (host.name, unsafe)) from None
            except OSError as err:  # a full disk, a read-only one: the file left as it was
                raise Failed("%s: its key is not added to %s: %s" % (
                    host.name, known.path, err.strerror or err)) from None
            added.add((err.name, err.fingerprint))
            print("added to %s" % known.path)
            continue
        except LinkError as err:
            raise Failed(naming(host.name, err)) from None
        print("%s: host key trusted" % host.name)
        return 0


def admin_only(config: Config, action: str, what: str, host: str) -> None:
    """The store's rule, asked before any host is reached: launch, stop and MIG changes
    steer the fleet, so they are the admin's (access.Denied, exit 1, says who and what
    role). ``host`` is looked up first where the config lists hosts (a typo is exit 2, the
    store up or not), after the rule in a config of none, so a member is told the verb is
    the admin's rather than that her config has no such host
    (checked_store.store_of_a_host_verb)."""
    with _admins_store(config, action, what, host):
        pass


@contextlib.contextmanager
def _admins_store(config: Config, action: str, what: str, host: str) -> Iterator[Store]:
    """The store, once ``admin_only`` let this user ``action`` on ``host``."""
    store = _store_of(config, host)
    try:
        authorize(store, Asker.here(config.teams), action, None, what)
        config.host(host)
        yield store
    finally:
        store.close()


def _store_of(config: Config, host: str) -> Store:
    """The store as an admin's verb on ``host`` opens it (store_of_a_host_verb)."""
    return store_of_a_host_verb(config, host, lambda make: open_store(
        config.store.url, make=make, origin=config.store.origin))


# -- MIG --

def mig(config: Config, args: argparse.Namespace) -> int:
    """One MIG change, planned, shown and applied on confirmation: an instance created
    (PROFILE), one destroyed (--destroy), or MIG mode turned on or off (--mode)."""
    asked = [w for w, v in (("PROFILE", args.profile), ("--destroy", args.destroy),
                            ("--mode", args.mode)) if v is not None]
    if len(asked) != 1:
        raise UsageError("mig takes one of PROFILE (create an instance), --destroy INSTANCE or "
                         "--mode on|off; got %s" % (" and ".join(asked) or "none"))
    if args.reset and args.mode is None:
        raise UsageError("--reset goes with --mode on|off (the GPU reset a mode change may wait "
                         "for)")
    if args.destroy_idle and args.profile is None:
        raise UsageError("--destroy-idle goes with PROFILE (a plan that may destroy idle "
                         "instances to make room)")
    if args.profile is None:
        return _mig_by_hand(config, args)
    params = {"gpu": gpu_ref(args.gpu), "profile": args.profile,
              "destroy_idle": args.destroy_idle}
    return _mig_change(config, args, "mig.apply", lambda store, session: plan_create(
        args.host, params, session.call("mig.plan", params)), lambda words: create_refused(
            words, "--destroy-idle allows it (fractui mig %s %s %s --destroy-idle)" % (
                args.host, args.gpu, args.profile)))


def _mig_change(config: Config, args: argparse.Namespace, method: str,
                plan: Callable[[Store, HostSession], MigChange],
                refused: Callable[[str], str] = lambda words: words) -> int:
    """The one way every MIG verb runs: the rule asked first, before any host is reached; the
    change planned on the host (``plan``), refused with its reason, shown, confirmed, applied
    by the agent (calling ``method``; it rolls back a change that half happened), audited
    with who (fractui.mig_by_hand) and said. ``refused`` words the host's refusal."""
    asker = Asker.here(config.teams)
    store = _store_of(config, args.host)
    try:
        authorize(store, asker, MIG, None, "%s gpu %s" % (args.host, args.gpu))  # first
        config.host(args.host)
        fleet = open_fleet(config, [args.host])
        session = fleet.session(args.host)
        try:
            change = plan(store, session)
            if change.refusal is not None:
                raise Failed("not changed: %s" % change.refusal)
            print(change.text, file=_plan_out(args))
            if not (args.yes or confirm("Apply?")):
                raise Failed("%s: not applied" % args.host)
            said, answer = carry_out(store, asker, session.call, change)
        except AnswerLost as err:
            raise _maybe_made(args, err, method) from None
        except (HostUnavailable, AgentCallError) as err:
            raise Failed(refused(naming(args.host, err))) from None
        finally:
            fleet.stop()
    finally:
        store.close()
    if args.json:
        print_json(answer)
    else:
        print(said)
    return 0


def _plan_out(args: argparse.Namespace) -> TextIO:
    """Where the plan is shown: stdout, but for --json, whose stdout is the answer alone."""
    return sys.stderr if args.json else sys.stdout


def _maybe_made(args: argparse.Namespace, err: AnswerLost, changing: str) -> Failed:
    if err.method != changing:
        return Failed(naming(args.host, err))
    return Failed("%s\nThe change may have been made on %s: look at gpu %s there (fractui "
                  "status) before applying it again" % (naming(args.host, err), args.host,
                                                        args.gpu))


def _mig_by_hand(config: Config, args: argparse.Namespace) -> int:
    """--destroy or --mode: planned on the GPU as its agent reports it and the jobs the agent
    and the store have there (fractui.sched.mig_change); refused while a job holds it."""
    ref = gpu_ref(args.gpu)

    def plan(store: Store, session: HostSession) -> MigChange:
        gpus = session.call("snapshot")["gpus"]
        gpu = next((g for g in gpus if ref in (g.get("index"), g.get("uuid"))), None)
        if gpu is None:
            raise Failed("%s has no GPU %s: it has %s" % (args.host, args.gpu, ", ".join(
                "%s (%s)" % (g.get("index"), g.get("uuid")) for g in gpus) or "none"))
        on_host = session.call("job.list")["jobs"]
        mine = store.jobs(ON_HOST)  # all: which hold this GPU is plan_*'s to read, a move's
        # target too (Job.holding)
        if args.destroy is not None:
            return plan_destroy(args.host, gpu, args.destroy, on_host, mine, store.uid)
        return plan_mode(args.host, gpu, args.mode == "on", on_host, mine, store.uid,
                         reset=args.reset, can_reset=lists(session.status.hello, MODE_RESET))
    return _mig_change(config, args, "mig.destroy" if args.destroy is not None else
                       "mig.set_mode", plan)


# -- jobs --

def launch_key(args: argparse.Namespace, env: Dict[str, str]) -> str:
    """The key of a launch without --key: a digest of who launches what, where and how, so the
    same command run again (after a cut link) names the same job on the agent instead of
    starting a second one."""
    what = [os_user(), args.host, args.gpu, args.instance, args.profile, args.start,
            args.memory_mib, args.name, args.cwd, env, args.argv]
    if args.image:  # only then: a bare launch keeps the key it always had
        what.append(args.image)
    return "cli-" + hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def _launch_command(args: argparse.Namespace, key: str) -> str:
    """The launch as a command line with this key, for the user to run."""
    words = ["fractui"] + (["--config", args.config] if args.config else []) + [
        "launch", args.host, args.gpu]
    for flag, value in (("--instance", args.instance), ("--profile", args.profile),
                        ("--start", args.start), ("--memory-mib", args.memory_mib),
                        ("--name", args.name), ("--cwd", args.cwd), ("--image", args.image)):
        if value is not None:
            words += [flag, str(value)]
    for pair in args.env:
        words += ["--env", pair]
    return shell_line(words + ["--key", key] + (["--json"] if args.json else []) + ["--"]
                      + list(args.argv))


def _job_with_key(session: HostSession, key: str) -> "tuple[Optional[Dict[str, Any]], set]":
    """The host's job under ``key`` (None if none), and every key the host knows."""
    listed = session.call("job.list")["jobs"]
    keys = {j.get("key") for j in listed}
    return next((j for j in listed if j.get("key") == key), None), keys


def launch(config: Config, args: argparse.Namespace) -> int:
    """Start a job under an idempotency key (``--key``, else one derived from the command):
    a job the key already names is answered instead of starting another, and a launch whose
    answer was lost says that the job may have started and how to look."""
    argv = args.argv
    if not argv:
        raise UsageError("launch needs the program to run after --, e.g. "
                         "fractui launch gpu-a 0 --memory-mib 4096 -- python train.py")
    if args.start is not None and args.profile is None:
        raise UsageError("--start goes with --profile")
    env = parse_env(args.env)
    problem = job_problem(argv, env, args.name, args.cwd, args.key, image=args.image)
    if problem is not None:
        raise UsageError(problem)
    key = args.key or launch_key(args, env)
    params: Dict[str, Any] = {"key": key, "gpu": gpu_ref(args.gpu), "argv": argv, "env": env}
    if args.name:
        params["name"] = args.name
    if args.cwd:
        params["cwd"] = args.cwd
    if args.image:
        params["image"] = args.image
    if args.instance:
        params["instance"] = args.instance
    elif args.memory_mib is not None:
        params["memory_mib"] = args.memory_mib
    admin_only(config, LAUNCH, "a job on %s" % args.host, args.host)
    fleet = open_fleet(config, [args.host])
    session = fleet.session(args.host)
    try:
        earlier, keys = _job_with_key(session, key)
        if args.profile:
            start = args.start
            if start is None and earlier is not None:  # where the first try put it
                start = (earlier.get("mig") or {}).get("start")
            if start is None:
                start = session.call("mig.plan", {"gpu": params["gpu"],
                                                  "profile": args.profile})["start"]
            params["mig"] = {"profile": args.profile, "start": start}
        job = session.call("job.launch", params)
    except AnswerLost as err:
        if err.method != "job.launch":
            raise Failed(naming(args.host, err)) from None
        raise Failed("%s\nThe job may have started on %s (key %s). Running the launch again "
                     "is safe: it answers that job if it started, and starts it only if it "
                     "did not:\n  %s\nTo look without launching: fractui%s jobs %s --json "
                     "(the job's \"key\" is %s)" % (
                         naming(args.host, err), args.host, key, _launch_command(args, key),
                         " --config " + shlex.quote(args.config) if args.config else "",
                         args.host, key)) from None
    except (HostUnavailable, AgentCallError) as err:
        raise Failed(naming(args.host, err)) from None
    finally:
        fleet.stop()
    ref = "%s/%s" % (args.host, job["id"])
    is_earlier = earlier is not None and earlier.get("id") == job["id"]
    if is_earlier:
        n = 2
        while "%s-%d" % (key, n) in keys:
            n += 1
        say("%s (%s) was launched earlier %s (key %s); nothing new was started. To start "
            "another, give it a new key:\n  %s" % (
                ref, job["state"], "with this key" if args.key else "by this same command",
                key, _launch_command(args, "%s-%d" % (key, n))))
    if args.json:
        print_json(dict(job, ref=ref, earlier=is_earlier))
    else:
        print(launched_words(ref, job))
    return 0


def launched_words(ref: str, job: Dict[str, Any]) -> str:
    """A launched job (its agent's record) in a line."""
    return "%s %s (pid %s) on gpu %s%s%s" % (
        ref, job["state"], job["pid"], ",".join(map(str, job["gpus"])),
        " instance " + job["instance"] if job.get("instance") else "",
        " in %s image %s" % (job.get("runtime"), job["image"]) if job.get("image") else "")


def stop(config: Config, args: argparse.Namespace) -> int:
    """Stops a job by its HOST/JOB: by its key too while the store holds a job of its own
    there by that id (``typed_ref``), so a host's agent that lost it stops no other."""
    host, job = split_job(args.job)
    with _admins_store(config, STOP, args.job, host) as store:
        label, key = typed_ref(store, args.job, host, job)
    fleet = open_fleet(config, [host])
    session = fleet.session(host)
    try:
        record = session.call("job.stop", {"job": job, "key": key, "grace": args.grace})
    except AgentCallError as err:
        if err.code == JOB_KEY_MISMATCH:
            raise Failed(gone_words(label, host, job)) from None
        raise Failed(naming(host, err)) from None
    except HostUnavailable as err:
        raise Failed(naming(host, err)) from None
    finally:
        fleet.stop()
    if record.get("state") in ("exited", "lost"):  # it ended on its own: nothing was stopped
        raise Failed("%s/%s had already ended (%s): nothing to stop"
                     % (host, job, agent_why(record)))
    if args.json:
        print_json(record)
    elif record.get("state") == "killed":  # a stop asked again, or the watchdog's before it
        print("%s/%s was already stopped: %s" % (host, job, agent_why(record)))
    elif held_why(record):  # recorded, carried out once the agent reads the job again
        print("%s/%s: held starting, so it is stopped once its agent can read it again: %s"
              % (host, job, held_why(record)))
    else:
        print("%s/%s: stopping (SIGTERM, SIGKILL after %d s)" % (host, job, args.grace))
    return 0
