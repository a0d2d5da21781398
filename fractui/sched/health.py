"""Whether a GPU is unhealthy, and why, in words: one judgement of an agent's GPU record
(docs/protocol.md, ``snapshot``), pure, so the map, the GPU detail and later the scheduler
all say the same thing. The thresholds are written down in docs/decisions.md."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from fractui.words import count

XID_RECENT_S = 15 * 60
"""A critical XID error counts for this long after it happened."""
NEAR_SLOWDOWN_C = 3
"""A GPU this close to its slowdown temperature (or above it) is too hot."""
BRAKES = {
    "hw_slowdown": "hardware slowdown",
    "hw_thermal_slowdown": "thermal slowdown (hardware)",
    "sw_thermal_slowdown": "thermal slowdown",
    "hw_power_brake_slowdown": "power brake",
}
"""Throttle reasons that mean something is wrong — not idling, a clock setting or the power
cap a busy GPU reaches in normal work."""


def unhealthy(gpu: Mapping[str, Any], now: float) -> Optional[str]:
    """Why this GPU is unhealthy (each reason, most serious first), or None. ``now`` is on the
    agent's clock — its snapshot's ``time`` — since XID times are too."""
    health = gpu.get("health")
    if not health:
        return None  # an agent that does not report health: nothing to judge
    why = []
    ecc = health.get("ecc_volatile") or {}
    if ecc.get("uncorrected"):
        n = ecc["uncorrected"]
        why.append(count(n, "uncorrected ECC error"))
    recent = [e for e in health.get("xid") or () if now - e.get("time", 0) <= XID_RECENT_S]
    if recent:
        last = recent[-1]
        why.append("XID %d %s ago%s" % (last["xid"], _ago(now - last["time"]),
                                        " (%d in %d min)" % (len(recent), XID_RECENT_S // 60)
                                        if len(recent) > 1 else ""))
    brakes = [BRAKES[r] for r in health.get("throttle") or () if r in BRAKES]
    if brakes:
        why.append("clocks held down: " + ", ".join(brakes))
    temp, slowdown = health.get("temperature_c"), health.get("slowdown_c")
    if temp is not None and slowdown is not None and temp >= slowdown - NEAR_SLOWDOWN_C:
        why.append("%d °C, slows down at %d °C" % (temp, slowdown))
    if health.get("errors"):
        why.append("health unreadable: " + "; ".join(health["errors"]))
    return "; ".join(why) or None


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return "%d s" % seconds if seconds < 120 else "%d min" % (seconds // 60)
