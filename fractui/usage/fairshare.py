"""Each team's recent usage for fair share over time (docs/scheduler.md, "Fair share over
time"): the GPUs it held lately, recent time counting more. Pure: usage records in, numbers out.

With ``now`` the time of the ranking, ``h`` the half-life and ``W`` the window, a moment ``t``
weighs ``w(t) = 2^(-(now - t) / h)``. An attempt holding ``c`` GPUs (its charge) over [a, b],
clipped to [now - W, now], counts ``c · ∫_a^b w(t) dt``, in closed form
``c · h/ln 2 · (w(b) - w(a))``. A team's **recent GPUs** is the sum over its attempts divided by
the decayed length of the window, ``∫_{now-W}^{now} w(t) dt = h/ln 2 · (1 - 2^(-W/h))``: the GPUs
it held on average over the window, each moment weighed by its age. So c GPUs held the whole
window read as c (like ``within``, what it holds now), usage a half-life older counts half as
much, and an infinite half-life is the plain mean over the window.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable

from fractui.store.model import UsageRecord

LN2 = math.log(2)


def decayed_s(start: float, end: float, now: float, half_life_s: float) -> float:
    """``∫_start^end 2^(-(now - t)/half_life_s) dt``, in seconds (``end`` ≤ ``now``): exact,
    and stable for a half-life long against the interval (expm1), infinite included."""
    if end <= start:
        return 0.0
    if math.isinf(half_life_s):
        return end - start
    k = LN2 / half_life_s
    return math.exp(-k * (now - end)) * -math.expm1(-k * (end - start)) / k


def recent_gpus(records: Iterable[UsageRecord], now: float, half_life_s: float,
                window_s: float) -> Dict[str, float]:
    """Each team's recent GPUs (the module's formula) from the attempts that held a slice in
    the window; a running attempt counts up to ``now``. Attempts of no team count for none."""
    since = now - window_s
    length = decayed_s(since, now, now, half_life_s)
    held: Dict[str, float] = {}
    for r in records:
        if r.team is None:
            continue
        end = min(now, r.ended_at if r.ended_at is not None else now)
        seconds = decayed_s(max(since, r.started_at), end, now, half_life_s)
        held[r.team] = held.get(r.team, 0.0) + r.charge * seconds
    return {team: s / length for team, s in held.items()} if length > 0 else {}
