"""One charge rule: what a job is charged is the same whoever counts it — the scheduler's own
decision, the preview the TUI shows and confirms, ``fractui place`` (on the host's kept facts),
the executor completing a decision by hand on the live GPU, and the quota the queue panel sums —
on every GPU model, with MIG on and off, for every portion form."""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from remote_agent.gpu.models import models

from fractui.config import QueueConfig, TeamConfig
from fractui.sched.fleetview import HostView, facts, geometry
from fractui.sched.manual import complete, hand_slot
from fractui.sched.preview import candidates
from fractui.sched.queueing import schedule
from fractui.sched.quota import charge, team_usage
from fractui.store.model import PENDING, PLACED, Job, Slot

MODELS = sorted(models().values(), key=lambda m: m.name)
UID = "charge00"


def view_of(model, mig_mode: bool, count: int) -> HostView:
    gpus = [{"index": i, "uuid": "GPU-%d" % i, "name": model.name,
             "memory_mib": model.memory_mib, "mig_mode": mig_mode, "instances": [],
             "layout_version": "v0", "processes": []} for i in range(count)]
    hello = {"cpus": 64, "memory_mib": 512 * 1024, "privileges": {"mig_changes": True},
             "gpus": gpus}
    return HostView("h", "online", hello, {"gpus": gpus}, {})


@st.composite
def cases(draw):
    model = draw(st.sampled_from(MODELS))
    mig_mode = model.mig_capable and draw(st.booleans())
    count = draw(st.integers(1, 4))
    forms = ["gpu", "memory_gib"] + (["mig"] if mig_mode else ["gpus"])
    form = draw(st.sampled_from(forms))
    if form == "gpu":
        value = draw(st.one_of(st.sampled_from([0.125, 0.25, 1 / 3, 0.5, 0.75]),
                               st.floats(0.01, 0.99)))
    elif form == "memory_gib":
        value = draw(st.floats(0.1, model.memory_mib / 1024 * 0.99))
    elif form == "mig":
        value = draw(st.sampled_from([p.name for p in model.geometry().profiles]))
    else:
        value = draw(st.integers(1, count))
    return model, mig_mode, count, QueueConfig(name="q", **{form: value})


def expected(model, mig_mode: bool, slot: Slot) -> float:
    """DESIGN's words, counted by hand: a MIG slice its compute share, a memory share its
    thousandths of the GPU rounded up, a whole GPU 1."""
    if mig_mode:
        geo = model.geometry()
        return round(geo.profile(slot.profile).compute_slices / geo.compute_slices, 6)
    per = min(1000, math.ceil(round(slot.memory_mib * 1000 / model.memory_mib, 6))) / 1000
    return round(per * len(slot.gpus), 6)


@settings(max_examples=400, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_every_path_charges_the_same(case):
    model, mig_mode, count, queue = case
    view = view_of(model, mig_mode, count)
    job = Job(1, "q", "t", "n", ("x",), queue.request(), PENDING, 0.0, 0.0)
    teams = [TeamConfig("t", quota_gpus=100)]
    decided = schedule([view], [job], [queue], teams, UID).decisions
    assert decided, "an idle host of the model takes every portion it has"
    event("placed: %s" % ("MIG" if mig_mode else "share"))
    slot = decided[0].slot
    shown = next(c for c in candidates([view], [job], UID, job)
                 if (c.host, c.gpus, c.start) == (slot.host, slot.gpus, slot.start))
    by_hand = Slot("h", slot.gpus)  # what `fractui place JOB h GPU` leaves open
    executor = complete(replace(job, slot=by_hand, state=PLACED, manual=True), view, UID, [])
    cli = hand_slot(job, by_hand, facts(view), UID)
    panel = team_usage([replace(job, state=PLACED, slot=slot)], teams)[0].used
    counted = {"scheduler": slot.charge, "preview": shown.charge, "executor": executor.charge,
               "place": cli.charge, "queue panel": panel,
               "by hand": expected(model, mig_mode, slot)}
    assert len(set(counted.values())) == 1, counted
    assert (executor.profile, executor.memory_mib) == (slot.profile, slot.memory_mib)


def test_the_l4_share_that_was_counted_two_ways():
    """10 GiB of an L4 (23034 MiB): 0.445 everywhere (it was 0.44456 where a decision by hand
    was completed, 0.445 where the scheduler decided)."""
    l4 = models()["NVIDIA L4"]
    assert charge(None, 10240, [(l4.memory_mib, None)]) == 0.445
    queue = QueueConfig(name="q", memory_gib=10)
    job = Job(1, "q", "t", "n", ("x",), queue.request(), PENDING, 0.0, 0.0)
    view = view_of(l4, False, 1)
    assert complete(replace(job, slot=Slot("h", (0,))), view, UID, []).charge == 0.445
    assert schedule([view], [job], [queue], [], UID).decisions[0].slot.charge == 0.445
    a100 = models()["NVIDIA A100-SXM4-80GB"]
    assert charge("3g.40gb", None, [(a100.memory_mib, geometry(a100.name))]) == round(3 / 7, 6)


