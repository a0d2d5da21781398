"""The pure MIG planner: which placement it chooses, and why it refuses."""

from __future__ import annotations

from dataclasses import replace

import pytest

from remote_agent.gpu import models
from remote_agent.mig import planner
from remote_agent.mig.layout import Geometry, Instance, Layout

A100 = models.model("A100-80GB").geometry()
A30 = models.model("A30").geometry()


def inst(geo, gi_id, name, start, busy=False):
    p = geo.profile(name)
    return Instance(gi_id=gi_id, profile=name, start=start, size=p.size,
                    compute_slices=p.compute_slices, uuid="MIG-%d" % gi_id, busy=busy,
                    pids=(4242,) if busy else ())


def test_small_profiles_go_where_they_keep_the_big_ones_placeable():
    # 1g at slot 6 keeps 4g@0, 3g@0 and all three 2g placements open
    assert planner.plan(Layout(A100), "1g.10gb").start == 6
    # a 3g at slot 4 keeps the 4g (which can only start at 0) placeable
    assert planner.plan(Layout(A100), "3g.40gb").start == 4
    assert planner.plan(Layout(A30), "1g.6gb").start == 3


def test_a_free_placement_never_destroys_anything():
    layout = Layout(A100, (inst(A100, 1, "3g.40gb", 4),))
    made = planner.plan(layout, "2g.20gb", destroy_idle=True)
    assert made.destroy == () and made.start in (0, 2)
    assert made.describe() == "create 2g.20gb at slot %d; no running job touched" % made.start


def test_it_destroys_the_fewest_idle_instances_and_only_when_allowed():
    layout = Layout(A100, (inst(A100, 1, "1g.10gb", 0), inst(A100, 2, "1g.10gb", 1),
                           inst(A100, 3, "2g.20gb", 2), inst(A100, 4, "3g.40gb", 4)))
    with pytest.raises(planner.PlanError) as err:
        planner.plan(layout, "4g.40gb")
    assert err.value.kind == "needs_destroy"
    assert {i.gi_id for i in err.value.destroyable} == {1, 2, 3}
    # 2g at 0 would cost both 1g; at 2 it would only replace its idle twin; at 4 it costs the 3g
    made = planner.plan(layout, "2g.20gb", destroy_idle=True)
    assert ([i.gi_id for i in made.destroy], made.start) == ([4], 4)
    assert made.describe().startswith("destroy idle 3g.40gb at slot 4 (MIG-4); create 2g.20gb")


def test_busy_instances_are_never_planned_away_and_are_named():
    layout = Layout(A100, (inst(A100, 1, "1g.10gb", 3, busy=True),))
    with pytest.raises(planner.PlanError) as err:
        planner.plan(layout, "7g.80gb", destroy_idle=True)
    assert err.value.kind == "busy"
    assert "1g.10gb at slot 3 (MIG-1), pid 4242" in str(err.value)
    # the 4g at slot 0 overlaps the busy 1g; the two 3g placements: one is blocked, one free
    assert planner.plan(layout, "3g.40gb").start == 4
    # busy with no process: a job's, its process not yet started (or its pids unreadable)
    held = Layout(A100, (replace(layout.instances[0], pids=()),))
    with pytest.raises(planner.PlanError) as err:
        planner.plan(held, "7g.80gb", destroy_idle=True)
    assert str(err.value) == "cannot place 7g.80gb: busy instance 1g.10gb at slot 3 (MIG-1) in " \
        "the way; a busy instance (held by a job, or with processes) is never destroyed"


def test_count_and_compute_limits_are_explained():
    layout = Layout(A100, (inst(A100, 1, "1g.10gb+me", 0),))
    with pytest.raises(planner.PlanError) as err:
        planner.plan(layout, "1g.10gb+me")
    assert err.value.kind == "no_room"
    assert "at most 1 1g.10gb+me" in str(err.value)
    assert "can be used as it is" in str(err.value)
    # the compute budget never binds alone on real geometries; a narrow one shows the rule
    narrow = Geometry(model="narrow", memory_slices=8, compute_slices=3,
                      profiles=(A100.profile("1g.10gb"), A100.profile("2g.20gb")))
    two = Layout(narrow, (inst(narrow, 1, "2g.20gb", 0), inst(narrow, 2, "1g.10gb", 2)))
    assert planner.refusal(two, narrow.profile("1g.10gb"), 5) == (
        "1g.10gb needs 1 compute slice and 3 of 3 are in use")
    assert planner.refusal(two.without(two.instances[1:]), narrow.profile("1g.10gb"), 5) is None


def test_the_layout_version_names_what_is_placed_where():
    one = Layout(A100, (inst(A100, 1, "3g.40gb", 4),))
    same = Layout(A100, (inst(A100, 1, "3g.40gb", 4, busy=True),))
    other = Layout(A100, (inst(A100, 1, "3g.40gb", 0),))
    assert one.version == same.version != other.version
    # made again by a rollback: other ids and uuid, the same place; a GPU instance without its
    # compute instance is not one a job can use
    remade = Layout(A100, (inst(A100, 5, "3g.40gb", 4),))
    half = Layout(A100, (replace(inst(A100, 1, "3g.40gb", 4), uuid=None),))
    assert remade.version == one.version != half.version
    assert planner.plan(one, "1g.10gb").layout_version == one.version


def test_unknown_profile_and_bad_start():
    with pytest.raises(planner.PlanError) as err:
        planner.plan(Layout(A30), "3g.40gb")
    assert err.value.kind == "unknown_profile" and "4g.24gb" in str(err.value)
    with pytest.raises(planner.PlanError) as err:
        planner.plan(Layout(A30), "2g.12gb", start=1)
    assert err.value.kind == "bad_start"
