"""The map's cursor, without widgets: a GPU's slices, the slice at a point (what a key and a
click both resolve), and the moves across slices and GPUs, in compact mode too."""

from __future__ import annotations

from fractui.store.model import Slot
from fractui.tui.bars import COMPACT_CELL, Mark, bar_at, render
from fractui.tui.cursor import Cursor, Moves, slice_at, slices_of
from fractui.tui.model import GpuGroupLine, HostLine
from tests.test_tui_model import PAINT, UID, a100, build, inst, job, l4


def _mig():
    """An A100: a 2g at slices 0-1 (idle), job #9's 1g at 2, slice 3 free, a 3g at 4-7."""
    store_job = job(9, team="nlp", slot=Slot("h", (1,), profile="1g.10gb", start=2))
    agent = [{"id": "j1", "key": store_job.key(UID), "gpus": [1], "instance": "MIG-b",
              "state": "running"}]
    (gpu,) = build([a100([inst("2g.20gb", 0, 2, "MIG-a"), inst("1g.10gb", 2, 1, "MIG-b"),
                          inst("3g.40gb", 4, 4, "MIG-c")])], agent, [store_job]).hosts["h"].gpus
    return gpu


def test_a_mig_gpu_s_slices_are_its_instances_and_each_free_memory_slice():
    gpu = _mig()
    parts = slices_of(gpu)
    assert [(p.start * 8, p.size * 8) for p in parts] == [(0, 2), (2, 1), (3, 1), (4, 4)]
    assert [p.job_id for p in parts] == [None, 9, None, None]
    assert parts[2].block is None  # free
    empty = build([a100([])]).hosts["h"].gpus[0]
    assert len(slices_of(empty)) == 8


def test_a_shared_gpu_s_free_room_is_one_slice():
    (gpu,) = build([l4([{"pid": 5, "used_mib": 6000}])]).hosts["h"].gpus
    parts = slices_of(gpu)
    assert len(parts) == 2 and parts[0].block.kind == "other" and parts[1].block is None
    assert abs(parts[1].start + parts[1].size - 1.0) < 1e-9


def test_a_click_and_a_key_resolve_the_same_slice():
    """The finding of the issue: a click on a 1g slice opened the first job of the GPU."""
    gpu = _mig()
    width = 140
    for x in range(width):
        hit = bar_at(gpu, width, x)
        if hit is None:
            continue
        g, along = hit
        i = slice_at(g, along)
        assert slices_of(g)[i].start <= along + 1e-9
    # the 1g.10gb job's cells: slice 2 of 8 of the bar
    moves = Moves([HostLine("h", "online", None, 1, 1), gpu])
    cursor = moves.across(moves.first(), 1)  # from the 2g to the 1g
    assert moves.slice(cursor).job_id == 9
    prefix_end = next(x for x in range(width) if bar_at(gpu, width, x)[1] > 0)
    bar = width - prefix_end - len(" 0.0/80  GiB   util n/a: MIG")
    x = prefix_end + int(bar * 2.5 / 8)  # the middle of slice 2
    g, along = bar_at(gpu, width, x)
    assert slices_of(g)[slice_at(g, along)] == moves.slice(cursor)


def test_moves_cross_slices_then_gpus_and_keep_their_place_down():
    host = HostLine("h", "online", None, 2, 1)
    gpu = _mig()
    (share,) = build([l4()]).hosts["h"].gpus
    moves = Moves([host, share, gpu])
    c = moves.first()
    assert (c.gpu, moves.slice(c).block) == (0, None)  # the L4's one free slice
    c = moves.across(c, 1)  # past its edge: the next GPU's first slice
    assert (c.gpu, moves.slice(c).start) == (1, 0.0)
    c = moves.across(c, 3)
    assert moves.slice(c).start == 0.5  # the 3g
    assert moves.across(c, 1) == c  # the last slice of the last GPU: stays
    up = moves.down(c, -1)
    assert up.gpu == 0 and moves.down(up, 1).gpu == 1
    assert moves.across(moves.down(up, 1), -1).gpu == 1
    assert moves.last().gpu == 1 and moves.first().gpu == 0


def test_compact_rows_move_down_by_column():
    gpus = [build([dict(l4(), index=i)]).hosts["h"].gpus[0] for i in range(5)]
    lines = [HostLine("h", "online", None, 5, 0), GpuGroupLine(tuple(gpus[:3])),
             GpuGroupLine(tuple(gpus[3:]))]
    moves = Moves(lines)
    c = Cursor("h", 2, 0.5)
    assert moves.down(c, 1).gpu == 4  # the last of the shorter row
    assert moves.down(Cursor("h", 1, 0.5), 1).gpu == 4
    assert moves.down(Cursor("h", 0, 0.5), 1).gpu == 3
    assert moves.across(Cursor("h", 0, 0.5), 1).gpu == 1  # beside it
    assert moves.by_lines(Cursor("h", 0, 0.5), 10).gpu == 3


def test_the_cursor_s_cells_are_reversed_in_the_bar_and_compact_keeps_figures():
    gpu = _mig()
    strip = render(gpu, 120, PAINT, Mark(1, 2 / 8, 3 / 8))
    marked = [seg.text for seg in strip if seg.style and seg.style.reverse]
    assert marked and any("1g" in t for t in marked)  # the 1g's label is under the cursor
    assert not [s for s in render(gpu, 120, PAINT) if s.style and s.style.reverse]
    group = render(GpuGroupLine((gpu,)), 2 * COMPACT_CELL, PAINT)
    text = "".join(s.text for s in group)
    assert " 0G  n/a" in text  # memory used and utilisation stay in compact mode
    (share,) = build([l4()]).hosts["h"].gpus
    assert "40%" in "".join(s.text for s in render(GpuGroupLine((share,)), 40, PAINT))
