"""A simulated GPU workload for the sim backend: tests and the demo run it as a job.

``python -m remote_agent.simload --mem-mib N --seconds S [--grow-to M] [--util U]
[--util-swing W] [--exit-code C] [--progress-every P [--seed R]] [--fail-with LINE]``

It finds its GPU the way a CUDA program would — from ``CUDA_VISIBLE_DEVICES`` (a GPU or MIG uuid)
— and registers its memory use, growing linearly from N to M MiB over S seconds, with the
simulated host named by ``FRACTUI_SIM_STATE``. Its SM utilisation swings like a training loop's,
between U - W and U + W percent along a sine of UTIL_PERIOD_S from its start (the same run gives
the same values; W = 0 holds it at U). When it ends, for whatever reason, its memory is free again
(the simulator stops counting a dead process), as on a real GPU.

With ``--progress-every`` it prints a training loop's progress line every P seconds (step, loss,
throughput: the values follow from R alone, so the same seed prints the same lines), and with
``--fail-with`` (and a non-zero ``--exit-code``) it ends with that line on stderr in place of
its "done" line, as a program that fails says why last: the demo's jobs have a log to search
and follow, and some fail as a team's do. Without them it prints what it always did.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from typing import Iterator, List, Optional

STEP_S = 0.1
UTIL_STEP_S = 1.0  # utilisation changes at most this often (each change rewrites the sim state)
UTIL_PERIOD_S = 30.0
STEPS_PER_LINE = 50  # training steps a progress line stands for


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m remote_agent.simload",
                                     description="a simulated GPU workload")
    parser.add_argument("--mem-mib", type=int, required=True, help="GPU memory at start (MiB)")
    parser.add_argument("--seconds", type=float, required=True, help="how long to run")
    parser.add_argument("--grow-to", type=int, help="grow linearly to this many MiB")
    parser.add_argument("--exit-code", type=int, default=0, help="exit with this code")
    parser.add_argument("--util", type=int, default=50,
                        help="mean SM utilisation to report, 0..100 (%%)")
    parser.add_argument("--util-swing", type=int, default=15,
                        help="how far it swings either side of the mean, 0..100 (points)")
    parser.add_argument("--progress-every", type=float, default=0.0,
                        help="print a progress line every this many seconds (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="the progress lines' values")
    parser.add_argument("--fail-with", metavar="LINE",
                        help="end with this line on stderr (needs a non-zero --exit-code)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    for name in ("util", "util_swing"):
        if not 0 <= getattr(args, name) <= 100:
            parser.error("--%s must be within 0..100" % name.replace("_", "-"))
    if not 0 <= args.progress_every < math.inf:
        parser.error("--progress-every must be 0 or more seconds")
    if args.fail_with is not None and args.exit_code == 0:
        parser.error("--fail-with needs a non-zero --exit-code")
    from remote_agent.gpu import fake_pynvml as nv

    state = os.environ.get("FRACTUI_SIM_STATE")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if not state or not visible:
        print("simload: needs FRACTUI_SIM_STATE and CUDA_VISIBLE_DEVICES (run it as a job on a "
              "simulated host)", file=sys.stderr)
        return 2
    nv.sim_open(state)
    nv.nvmlInit()
    target = visible.split(",")[0]
    handle = nv.nvmlDeviceGetHandleByUUID(target)
    if target.startswith("MIG-"):
        parent = nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
        gpu, instance = nv.nvmlDeviceGetIndex(parent), target
    else:
        gpu, instance = nv.nvmlDeviceGetIndex(handle), None
    nv.nvmlShutdown()  # a job's GPU use is its process, not an NVML session kept open
    pid = os.getpid()
    used = args.mem_mib
    nv.sim_register_process(gpu, used, instance_uuid=instance, pid=pid, util=args.util)
    print("simload: pid %d on %s using %d MiB" % (pid, target, used), flush=True)
    start = time.monotonic()
    util, util_at = args.util, 0.0
    progress, progress_at = progress_lines(args.seed), args.progress_every
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= args.seconds:
            break
        if args.progress_every and elapsed >= progress_at:
            progress_at += args.progress_every
            print(next(progress), flush=True)
        if args.util_swing and elapsed - util_at >= UTIL_STEP_S:
            util_at = elapsed
            want = util_at_time(args.util, args.util_swing, elapsed)
            if want != util:
                util = want
                nv.sim_set_process_util(pid, util)
        if args.grow_to is not None:
            want = int(args.mem_mib + (args.grow_to - args.mem_mib) * elapsed / args.seconds)
            if want != used:
                used = want
                nv.sim_set_process_memory(pid, used)
                print("simload: using %d MiB" % used, flush=True)
        time.sleep(min(STEP_S, max(0.0, args.seconds - elapsed)))
    nv.sim_remove_process(pid)
    if args.fail_with is not None:
        print(args.fail_with, file=sys.stderr, flush=True)
    else:
        print("simload: done, exit code %d" % args.exit_code, flush=True)
    return args.exit_code


def progress_lines(seed: int) -> Iterator[str]:
    """A training loop's progress lines, without end: the loss falls from where the seed puts
    it towards a floor, with noise, and the throughput wavers about the seed's rate."""
    rng = random.Random(seed)
    start, floor = rng.uniform(2.5, 6.0), rng.uniform(0.2, 0.9)
    rate = rng.uniform(300.0, 4000.0)
    line = 0
    while True:
        line += 1
        loss = floor + (start - floor) * math.exp(-line / 12.0) + rng.gauss(0.0, 0.03)
        yield "step %d  loss %.4f  throughput %.1f samples/s" % (
            line * STEPS_PER_LINE, max(0.0, loss), rate * rng.uniform(0.93, 1.05))


def util_at_time(mean: int, swing: int, elapsed: float) -> int:
    """The utilisation ``elapsed`` seconds into the run, within 0..100."""
    value = mean + swing * math.sin(2 * math.pi * elapsed / UTIL_PERIOD_S)
    return max(0, min(100, int(round(value))))


if __name__ == "__main__":
    sys.exit(main())
