"""Fleet benchmark: snapshot fan-out over real SSH, and connect + deploy for a new host.

    python benchmarks/fleet.py [--hosts 1,8,32] [--delay-ms 20] [--rounds 20] [--record]

Each simulated host is its own SSH connection (through its own TCP proxy, which adds the delay
each way) to a real sshd on 127.0.0.1, and its own agent daemon (sim backend, 2 GPUs). The
fan-out is ``Fleet.fan_out("snapshot")``: every host asked at once, timed until the last answer.
``--record`` writes the table into docs/benchmarks.md with the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.record import machine, record_section  # noqa: E402
from fractui.config import Config, HostConfig, SshSettings  # noqa: E402
from fractui.fleet.fleet import Fleet  # noqa: E402
from fractui.fleet.host import HostSession  # noqa: E402
from fractui.fleet.zipapp import build_agent_archive  # noqa: E402
from tests.conftest import stop_host  # noqa: E402
from tests.sshd import SshServer, make_user_key  # noqa: E402

SERVERS = 4  # sshd instances shared by the hosts (each host still has its own connection)
# The delaying proxies run in a process of their own: the network is not in the admin's
# process, and proxy threads there would compete with the fleet for its interpreter lock.
PROXY_FARM = """
import sys
from tests.sshd import CutProxy
proxies = []
for line in sys.stdin:
    port, delay = line.split()
    proxies.append(CutProxy(int(port), delay_s=float(delay)))
    print(proxies[-1].port, flush=True)
"""


class Lab:
    def __init__(self, root: Path):
        self.root = root
        self.key, pubkey = make_user_key(root / "user")
        self.known = root / "known_hosts"
        self.known.write_text("")
        self.servers = [SshServer(root / ("sshd%d" % i), pubkey).start() for i in range(SERVERS)]
        self.farm = subprocess.Popen([sys.executable, "-c", PROXY_FARM], cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.proxies = 0
        self.state_dirs: List[str] = []

    def proxy(self, port: int, delay_s: float) -> int:
        self.farm.stdin.write("%d %f\n" % (port, delay_s))
        self.farm.stdin.flush()
        self.proxies += 1
        return int(self.farm.stdout.readline())

    def host(self, n: int, delay_s: float) -> HostConfig:
        server = self.servers[n % SERVERS]
        port = self.proxy(server.port, delay_s)
        with open(self.known, "a") as f:
            f.write("[127.0.0.1]:%d %s\n" % (port, server.host_public_key))
        state = str(self.root / "state" / ("h%d-%d" % (n, self.proxies)))
        self.state_dirs.append(state)
        return HostConfig(name="h%d" % n, host="127.0.0.1", port=port, user="root",
                          identity_file=str(self.key), python=sys.executable, state_dir=state,
                          agent_cache=str(self.root / "cache"), sim="1xA100-80GB:mig,1xL4")

    def config(self, hosts: List[HostConfig]) -> Config:
        return Config(path=None, hosts=tuple(hosts), ssh=SshSettings(
            known_hosts=str(self.known), connect_timeout=30.0,
            config_file=str(self.root / "ssh_config")))

    def close(self) -> None:
        for state in self.state_dirs:
            stop_host(state)
        self.farm.stdin.close()
        self.farm.wait(timeout=10)
        for server in self.servers:
            server.stop()


def fan_out_ms(lab: Lab, count: int, delay_s: float, rounds: int) -> Dict[str, float]:
    hosts = [lab.host(n, delay_s) for n in range(count)]
    with Fleet(lab.config(hosts), reconnect_max_s=1.0) as fleet:
        fleet.wait_settled(120)
        bad = [s.name for s in fleet.statuses() if s.state != "online"]
        if bad:
            raise RuntimeError("hosts not online: %s" % bad)
        fleet.fan_out("snapshot")  # warm up
        times, cpu = [], []
        for _ in range(rounds):
            t0, c0 = time.perf_counter(), time.process_time()
            answers = fleet.fan_out("snapshot")
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
            failed = [n for n, a in answers.items() if isinstance(a, Exception)]
            if failed:
                raise RuntimeError("snapshot failed on %s" % failed)
    return {"median": statistics.median(times), "max": max(times),
            "cpu": statistics.median(cpu)}


def connect_deploy_ms(lab: Lab, delay_s: float) -> Dict[str, float]:
    """A host never seen before: SSH handshake, python check, agent upload, daemon start,
    hello and subscribe — until it is online."""
    host = lab.host(999, delay_s)
    host = HostConfig(**{**host.__dict__, "agent_cache": str(lab.root / ("fresh-%d" %
                                                                         lab.proxies))})
    archive = build_agent_archive()
    session = HostSession(host, lab.config([host]).ssh, lambda: archive)
    t0 = time.perf_counter()
    session.start()
    session.settled.wait(120)
    elapsed = (time.perf_counter() - t0) * 1000
    uploaded = session.status.uploaded
    state = session.status.state
    session.stop()
    if state != "online" or not uploaded:
        raise RuntimeError("new host did not come online with an upload: %s" % state)
    return {"ms": elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,8,32")
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    counts = [int(c) for c in args.hosts.split(",")]
    rows = ["| hosts | added delay (each way) | fan-out median | fan-out max | "
            "vs 1 host (median) | fleet process CPU per fan-out |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="fractui-fleet-bench-") as tmp:
        lab = Lab(Path(tmp))
        try:
            for delay_ms in (0.0, args.delay_ms):
                base = None
                for count in counts:
                    r = fan_out_ms(lab, count, delay_ms / 1000.0, args.rounds)
                    base = base or r["median"]
                    rows.append("| %d | %.0f ms | %.1f ms | %.1f ms | %.2fx | %.1f ms |" % (
                        count, delay_ms, r["median"], r["max"], r["median"] / base, r["cpu"]))
                    print(rows[-1], flush=True)
            fresh = [connect_deploy_ms(lab, d / 1000.0) for d in (0.0, args.delay_ms)]
        finally:
            lab.close()
    table = "\n".join(rows) + "\n\n| new host: connect + deploy until online | time |\n" \
        "|---|---|\n| no added delay | %.0f ms |\n| %.0f ms each way | %.0f ms |" % (
            fresh[0]["ms"], args.delay_ms, fresh[1]["ms"])
    print(table)
    if args.record:
        record_section("Fleet over SSH (benchmarks/fleet.py)", table + (
            "\n\nEach host: its own SSH connection through its own delaying TCP proxy (in a "
            "separate process) to one of %d real sshd on 127.0.0.1, and its own agent daemon "
            "(sim backend, 2 GPUs). All of it shares this machine's cores with the fleet; the "
            "last column is the CPU time of the fleet's own process. "
            "%d rounds per row. Target with the delay: 32 hosts within 1.5x of one.\n"
            % (SERVERS, args.rounds)), machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
