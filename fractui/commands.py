"""What each ``fractui`` verb does. Each takes the config and the parsed arguments and returns the
exit code; ``fractui/cli.py`` owns parsing and the usage errors."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import replace
from typing import Any, Dict, List, Optional

from fractui.cli import (EXIT_FAILED, UsageError, confirm, gpu_ref, new_key, parse_env,
                         print_json, split_job)
from fractui.config import Config
from fractui.fleet.client import AgentCallError
from fractui.fleet.doctor import diagnose
from fractui.fleet.fleet import Fleet
from fractui.fleet.host import HostSession, HostUnavailable
from fractui.fleet.hostkeys import KnownHosts, UntrustedHostKey, fingerprint, host_id
from fractui.fleet.link import LinkError, SshLink
from fractui.fleet.sshconfig import resolve
from fractui.store.model import ACTIVE, PENDING, PLACED


def _settle_time(config: Config) -> float:
    return config.ssh.connect_timeout * 2 + 30


def _open(config: Config, names: Optional[List[str]] = None) -> Fleet:
    """A fleet of the named hosts (all when none are named), each connected or failed once."""
    if names:
        config = replace(config, hosts=tuple(config.host(n) for n in names))
    fleet = Fleet(config).start()
    fleet.wait_settled(_settle_time(config))
    return fleet


def _one(config: Config, name: str) -> "tuple[Fleet, HostSession]":
    fleet = _open(config, [name])
    return fleet, fleet.session(name)


def _fail(message: str) -> int:
    print("fractui: %s" % message, file=sys.stderr)
    return EXIT_FAILED


# -- status, doctor, trust --

def status(config: Config, args: argparse.Namespace) -> int:
    fleet = _open(config)
    try:
        records = [s.record() for s in fleet.statuses()]
    finally:
        fleet.stop()
    if args.json:
        print_json({"hosts": records})
    else:
        for r in records:
            print("%-16s %-10s %s" % (r["name"], r["state"], r["error"] or ""))
            for g in r["gpus"]:
                print("    gpu%-3s %-28s %s" % (g["index"], g["name"], _gpu_summary(g)))
    bad = [r for r in records if r["state"] in ("offline", "untrusted", "connecting")]
    return EXIT_FAILED if bad else 0


def _gpu_summary(gpu: Dict[str, Any]) -> str:
    if gpu.get("mig_mode"):
        parts = ["%s@%d" % (i["profile"], i["start"]) for i in gpu.get("instances", [])]
        return "MIG: " + (" ".join(parts) or "no instances")
    used = gpu.get("memory_used_mib")
    return "%s/%d MiB" % ("?" if used is None else used, gpu.get("memory_mib", 0))


def doctor(config: Config, args: argparse.Namespace) -> int:
    hosts = [config.host(n) for n in args.hosts] if args.hosts else list(config.hosts)
    reports = [diagnose(config, h) for h in hosts]
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
    """Connect hop by hop; each key known_hosts does not vouch for is shown and, on
    confirmation, added as one line. Never accepted without the admin's word (or --yes)."""
    host = config.host(args.host)
    if host.transport == "local":
        raise UsageError("%s is a local simulated host: it has no host key" % host.name)
    known = KnownHosts(config.ssh.known_hosts)
    route = resolve(host, config.ssh.config_file)
    while True:
        try:
            SshLink(route, known, config.ssh.connect_timeout).connect().close()
        except UntrustedHostKey as err:
            print("%s presents %s key %s" % (host_id(err.host, err.port), err.key.get_name(),
                                             fingerprint(err.key)))
            if err.changed:
                return _fail("the key CHANGED from the one in %s; remove the old line yourself "
                             "if the change is expected" % known.path)
            if not (args.yes or confirm("Trust it?")):
                return _fail("not trusted")
            known.append(err.host, err.port, err.key)
            print("added to %s" % known.path)
            continue
        except LinkError as err:
            return _fail("%s: %s" % (host.name, err))
        print("%s: host key trusted" % host.name)
        return 0


# -- MIG --

def mig(config: Config, args: argparse.Namespace) -> int:
    fleet, session = _one(config, args.host)
    try:
        params = {"gpu": gpu_ref(args.gpu), "profile": args.profile,
                  "destroy_idle": args.destroy_idle}
        plan = session.call("mig.plan", params)
        print("%s gpu %s: %s" % (args.host, plan["gpu"], plan["description"]))
        if not (args.yes or confirm("Apply?")):
            return _fail("not applied")
        done = session.call("mig.apply", dict(params, start=plan["start"],
                                              layout_version=plan["layout_version"]))
    except (HostUnavailable, AgentCallError) as err:
        return _fail(str(err))
    finally:
        fleet.stop()
    if args.json:
        print_json(done)
    else:
        print("created %s at slot %d: %s" % (done["profile"], done["start"],
                                              done["instance"]["uuid"] or done["warning"]))
    return 0


# -- jobs --

def launch(config: Config, args: argparse.Namespace) -> int:
    argv = args.argv
    if not argv:
        raise UsageError("launch needs the program to run after --, e.g. "
                         "fractui launch gpu-a 0 --memory-mib 4096 -- python train.py")
    if args.start is not None and args.profile is None:
        raise UsageError("--start goes with --profile")
    params: Dict[str, Any] = {"key": args.key or new_key(), "gpu": gpu_ref(args.gpu),
                              "argv": argv, "env": parse_env(args.env)}
    if args.name:
        params["name"] = args.name
    if args.cwd:
        params["cwd"] = args.cwd
    if args.instance:
        params["instance"] = args.instance
    elif args.memory_mib is not None:
        params["memory_mib"] = args.memory_mib
    fleet, session = _one(config, args.host)
    try:
        if args.profile:
            start = args.start
            if start is None:
                start = session.call("mig.plan", {"gpu": params["gpu"],
                                                  "profile": args.profile})["start"]
            params["mig"] = {"profile": args.profile, "start": start}
        job = session.call("job.launch", params)
    except (HostUnavailable, AgentCallError) as err:
        return _fail(str(err))
    finally:
        fleet.stop()
    if args.json:
        print_json(dict(job, ref="%s/%s" % (args.host, job["id"])))
    else:
        print("%s/%s %s (pid %s) on gpu %s%s" % (
            args.host, job["id"], job["state"], job["pid"], ",".join(map(str, job["gpus"])),
            " instance " + job["instance"] if job.get("instance") else ""))
    return 0


def jobs(config: Config, args: argparse.Namespace) -> int:
    """Queued jobs from the store (by number), then jobs launched directly on the hosts (as
    host/agent-id). Naming hosts shows only theirs."""
    from fractui.store_commands import jobs_table, open_store

    queued: List[Any] = []
    uid = None
    if not args.hosts:
        store = open_store(config.scheduler.store)
        try:
            uid = store.uid
            queued = store.jobs(None if args.all else ACTIVE, limit=args.limit if args.all
                                else None)
        finally:
            store.close()
    rows, failed = [], False
    if config.hosts:
        fleet = _open(config, args.hosts or None)
        try:
            answers = fleet.fan_out("job.list")
        finally:
            fleet.stop()
        mine = "fractui-%s-" % uid
        for host, answer in answers.items():
            if isinstance(answer, Exception):
                failed = True
                print("fractui: %s" % answer, file=sys.stderr)
                continue
            rows += [dict(j, host=host, ref="%s/%s" % (host, j["id"])) for j in answer["jobs"]
                     if not (uid and (j.get("key") or "").startswith(mine))]
    if args.json:
        print_json({"jobs": [dict(j.record(), ref=str(j.id)) for j in queued] + rows})
    else:
        if queued:
            print("\n".join(jobs_table(queued, time.time())))
        for j in rows:
            print("%-20s %-8s %-6s %s" % (j["ref"], j["state"], "" if j["exit_code"] is None
                                          else j["exit_code"], " ".join(j["argv"])))
        if not queued and not rows and not failed:  # say so: a blank line reads as a hang
            print("no jobs" if args.all or args.hosts else
                  "no active jobs (--all lists ended ones too)")
    return EXIT_FAILED if failed else 0


def _job_ref(config: Config, ref: str, wait: bool = False) -> List[str]:
    """[host, agent job] of a queued job's number or of a HOST/JOB. With ``wait`` (logs -f), a
    job that is still waiting or being placed is waited for until it starts."""
    if not ref.isdigit():
        return split_job(ref)
    from fractui.store_commands import open_store, queued

    store = open_store(config.scheduler.store)
    try:
        job = queued(store, ref)
        if wait and job.agent_job is None and job.state in (PENDING, PLACED):
            print("fractui: job %d is %s; waiting for it to start" % (job.id, job.state),
                  file=sys.stderr, flush=True)
            while job.agent_job is None and job.state in (PENDING, PLACED):
                time.sleep(0.5)
                job = store.get(job.id)
    finally:
        store.close()
    if job.slot is None or job.agent_job is None:
        raise UsageError("job %d is %s: it has not run yet%s" % (
            job.id, job.state, " (%s)" % job.reason if job.reason else ""))
    return [job.slot.host, job.agent_job]


def logs(config: Config, args: argparse.Namespace) -> int:
    host, job = _job_ref(config, args.job, wait=args.follow)
    fleet, session = _one(config, host)
    try:
        done = threading.Event()

        def on_log(method: str, params: Dict[str, Any]) -> None:
            if method != "log" or params.get("job") != job:
                return
            if params.get("eof"):
                done.set()
            else:
                sys.stdout.write(params.get("data", ""))
                sys.stdout.flush()

        session.listeners.append(on_log)
        first = session.call("job.logs", {"job": job, "lines": args.lines,
                                          "follow": args.follow})
        for line in first["lines"]:
            print(line)
        sys.stdout.flush()
        if args.follow:
            while not done.wait(0.5):
                if session.status.state not in ("online", "degraded"):
                    return _fail("%s went %s while following" % (host, session.status.state))
    except (HostUnavailable, AgentCallError) as err:
        return _fail(str(err))
    finally:
        fleet.stop()
    return 0


def stop(config: Config, args: argparse.Namespace) -> int:
    host, job = split_job(args.job)
    fleet, session = _one(config, host)
    try:
        record = session.call("job.stop", {"job": job, "grace": args.grace})
    except (HostUnavailable, AgentCallError) as err:
        return _fail(str(err))
    finally:
        fleet.stop()
    if args.json:
        print_json(record)
    else:
        print("%s/%s: stopping (SIGTERM, SIGKILL after %d s)" % (host, job, args.grace))
    return 0
