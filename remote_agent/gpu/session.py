"""The agent's NVML session, which a GPU reset must step out of.

The driver refuses a GPU reset while any client holds the GPU attached, and an NVML session is
such a client: NVIDIA's mig-parted keeps NVML alive for every command but the reset, and its
README says the driver "will block the reset if there are any clients currently attached". So
the agent's NVML calls share the session (``shared``), and a reset holds it alone (``alone``):
it waits for the calls under way, keeps new ones waiting, and lets its holder shut NVML down,
run the reset and start NVML again. ``generation`` counts the session's starts: what was made
in an older one (an XID event set) is gone with it.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional


class Session:
    """Shared by the NVML calls of every thread, or held alone by one; a thread that holds it
    (either way) may take it shared again, so a call inside a call, or the holder's own calls,
    never wait on themselves."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0  # threads in a shared hold
        self._owner: Optional[int] = None  # the thread holding it alone
        self._local = threading.local()
        self.generation = 0

    def _depth(self) -> int:
        return getattr(self._local, "depth", 0)

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        depth = self._depth()
        if depth or self._owner == threading.get_ident():
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth = depth
            return
        with self._cond:
            while self._owner is not None:
                self._cond.wait()
            self._shared += 1
        self._local.depth = 1
        try:
            yield
        finally:
            self._local.depth = 0
            with self._cond:
                self._shared -= 1
                if not self._shared:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        """Held by this thread only: calls under way end first, others wait until it ends."""
        if self._depth():
            raise RuntimeError("the NVML session cannot be held alone from inside an NVML call")
        with self._cond:
            while self._owner is not None:
                self._cond.wait()
            self._owner = threading.get_ident()  # from now on, new shared holds wait
            while self._shared:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._owner = None
                self._cond.notify_all()
