"""Resetting one GPU: what a MIG mode change waits for when NVML cannot do the reset itself.

One interface, one implementation per kind of backend: on a real host ``nvidia-smi
--gpu-reset -i UUID`` (run as an argv, never through a shell), on a simulated one the fake
pynvml's own reset. The GPU is named by its UUID (nvidia-smi's ``-i`` takes an index, a PCI
bus id or a UUID): the UUID names the board whatever the host's enumeration order, as every
record of fractui's does. Callers reset only a GPU with no processes and no MIG
instances; the driver refuses anything else all the same.
"""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from types import ModuleType

from remote_agent.programs import not_found

RESET_TIMEOUT_S = 120  # a reset takes seconds; one that has not ended by then is reported
OUTPUT_CHARS = 400  # of nvidia-smi's words kept in an error


class ResetFailed(Exception):
    """The GPU was not reset; the message says why, in the tool's words where it gave some."""


class GpuReset(ABC):
    @abstractmethod
    def reset(self, uuid: str) -> None:
        """Reset the GPU of this UUID (``GPU-...``, as NVML names it), or raise ResetFailed."""


class SmiReset(GpuReset):
    """A real host: nvidia-smi, which ships with the driver, resets the GPU."""

    def reset(self, uuid: str) -> None:
        argv = ["nvidia-smi", "--gpu-reset", "-i", uuid]
        shown = " ".join(argv)
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, universal_newlines=True,
                                  timeout=RESET_TIMEOUT_S, check=False)
        except FileNotFoundError:
            raise ResetFailed("%s: %s" % (shown, not_found("nvidia-smi"))) from None
        except subprocess.TimeoutExpired:
            raise ResetFailed("%s had not ended after %d s" % (shown, RESET_TIMEOUT_S)) from None
        except OSError as err:
            raise ResetFailed("%s could not run: %s" % (shown, err)) from None
        if done.returncode != 0:
            words = " ".join(done.stdout.split())[-OUTPUT_CHARS:]
            raise ResetFailed("%s exited %d: %s" % (shown, done.returncode,
                                                    words or "(no output)"))


class SimReset(GpuReset):
    """A simulated host: the fake pynvml's reset, refused as the driver refuses it."""

    def __init__(self, sim: ModuleType):
        self.sim = sim

    def reset(self, uuid: str) -> None:
        try:
            self.sim.sim_reset_gpu(uuid)
        except ValueError as err:
            raise ResetFailed(str(err)) from None
