"""fractui's placement core: fleet state and a request in, a placement (and MIG plan) out.
Pure and I/O-free so the scheduler, the TUI's preview and the trace benchmark share it."""

from fractui.sched.model import MILLI, Gpu, Host, Placement, Request
from fractui.sched.place import POLICIES, Placer, TypicalClass, host_frag, typical_classes

__all__ = ["MILLI", "Gpu", "Host", "Placement", "Request", "POLICIES", "Placer", "TypicalClass",
           "host_frag", "typical_classes"]
