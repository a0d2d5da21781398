"""``python -m remote_agent``: the host agent's command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from remote_agent import __version__
from remote_agent.rpc.jsonrpc import Dispatcher
from remote_agent.serve import serve_stream
from remote_agent.service import Agent

SIM_STATE_FILE = "sim-gpus.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m remote_agent",
                                     description="fractui's host agent")
    parser.add_argument("--version", action="version", version=__version__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    serve = verbs.add_parser("serve", help="answer JSON-RPC 2.0 requests, one per line")
    serve.add_argument("--stdio", action="store_true", required=True,
                       help="read requests on stdin, write responses on stdout")
    serve.add_argument("--state-dir", required=True, help="where the agent keeps its state")
    serve.add_argument("--backend", choices=("nvml", "sim"),
                       help="nvml (real GPUs, the default) or sim (simulated GPUs)")
    serve.add_argument("--sim", metavar="SPEC",
                       help="simulated GPUs on first start, e.g. 2xA100-80GB:mig,1xL4 "
                            "(implies --backend sim)")
    return parser


def make_agent(state_dir: str, backend: str, sim_spec: Optional[str]) -> Agent:
    """The agent for a state dir; raises ValueError with a message for a person."""
    if backend == "sim":
        from remote_agent.gpu import fake_pynvml

        fake_pynvml.sim_open(os.path.join(state_dir, SIM_STATE_FILE), sim_spec)
        return Agent(fake_pynvml, "sim", sim=fake_pynvml)
    try:
        import pynvml
    except ImportError as err:
        raise ValueError("the pynvml module (nvidia-ml-py) is not available: %s" % err) from err
    return Agent(pynvml, "nvml")


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s remote_agent %(levelname)s %(message)s")
    backend = args.backend or ("sim" if args.sim else "nvml")
    if args.sim and backend != "sim":
        print("remote_agent: --sim needs the sim backend, not --backend %s" % backend,
              file=sys.stderr)
        return 2
    os.makedirs(args.state_dir, mode=0o700, exist_ok=True)
    try:
        agent = make_agent(args.state_dir, backend, args.sim)
    except ValueError as err:
        print("remote_agent: %s" % err, file=sys.stderr)
        return 2
    serve_stream(Dispatcher(agent.methods()), sys.stdin.buffer, sys.stdout.buffer)
    return 0
