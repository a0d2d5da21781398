"""Carry out a MIG plan on a GPU, all or nothing.

Each step is atomic in the backend (an instance and its compute instance come and go together);
if a later step fails, the steps already done are undone in reverse and the original NVML error is
reported — with the undo's own failure beside it if the GPU refused that too, never hidden.
"""

from __future__ import annotations

from typing import List

from remote_agent.gpu.backend import GpuBackend, NvmlCallError
from remote_agent.mig.layout import Instance
from remote_agent.mig.planner import Plan


class ApplyError(Exception):
    """A plan failed midway. ``cause`` is the NVML error that stopped it."""

    def __init__(self, plan: Plan, cause: NvmlCallError, rollback_errors: List[NvmlCallError]):
        self.plan = plan
        self.cause = cause
        self.rollback_errors = rollback_errors
        if rollback_errors:
            tail = "; rolling back ALSO failed (%s): the GPU's layout differs from before" % (
                "; ".join(str(e) for e in rollback_errors))
        else:
            tail = "; every step already done was undone"
        super().__init__("applying '%s' failed: %s%s" % (plan.describe(), cause, tail))

    @property
    def rolled_back(self) -> bool:
        return not self.rollback_errors


def apply_plan(backend: GpuBackend, index: int, plan: Plan) -> Instance:
    """Destroy the plan's idle instances, create its instance; return the created instance."""
    destroyed: List[Instance] = []
    try:
        for victim in plan.destroy:
            backend.destroy_instance(index, victim.gi_id)
            destroyed.append(victim)
        return backend.create_instance(index, plan.profile, plan.start)
    except NvmlCallError as err:
        failures = [e for e in (err.rollback_error,) if e is not None]
        geo = backend.geometry(index)
        for victim in reversed(destroyed):
            try:
                backend.create_instance(index, geo.profile(victim.profile), victim.start)
            except NvmlCallError as undo_err:
                failures.append(undo_err)
        raise ApplyError(plan, err, failures) from err
