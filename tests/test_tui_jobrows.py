"""The jobs view's rows and the GPU detail's text, without widgets: memory used against the
cap from the agent's snapshot, jobs the store does not know, foreign processes, the columns
that fit a width, sorting and filtering."""

from __future__ import annotations

import dataclasses

from fractui.fleet.host import HostStatus
from fractui.store.model import PENDING, PLACED, Slot
from fractui.tui.gpu_screen import describe
from fractui.tui.jobrows import COLUMNS, filter_rows, fit, job_rows, memory, sort_rows
from fractui.tui.jobs_view import cell, grown
from fractui.tui.model import StoreView, compile_filter
from fractui.tui.typed import Clocked
from tests.test_tui_cursor_pilot import plain
from tests.test_tui_model import UID, a100, inst, job, l4


def _fleet():
    share = job(7, team="nlp", queue="10g", slot=Slot("h", (0,), memory_mib=6000))
    share = share.__class__(**{**share.__dict__, "started_at": 40.0})
    mig = job(8, slot=Slot("h", (1,), profile="3g.40gb", start=4))
    waiting = job(9, state=PENDING, submitted_at=10.0)
    waiting = waiting.__class__(**{**waiting.__dict__, "reason": "no room: no GPU"})
    gpus = [l4([{"pid": 11, "used_mib": 3000, "instance": None},
                {"pid": 99, "used_mib": 500, "instance": None}]),
            a100([dict(inst("3g.40gb", 4, 4, "MIG-a", busy=True, pids=[12]),
                       memory_mib=40000, memory_used_mib=9000)])]
    agent = {"j1": {"id": "j1", "key": share.key(UID), "gpus": [0], "memory_mib": 6000,
                    "state": "running", "pid": 11, "name": "train"},
             "j2": {"id": "j2", "key": mig.key(UID), "gpus": [1], "instance": "MIG-a",
                    "state": "running", "pid": 12},
             "j3": {"id": "j3", "key": "by-hand", "gpus": [0], "memory_mib": 1000,
                    "state": "running", "pid": 13, "name": "notebook", "created_at": 70.0}}
    status = HostStatus("h", state="degraded", error="MIG is read-only: " + "x" * 150,
                        snapshot={"gpus": gpus}, jobs=agent)
    return StoreView(UID, (share, mig, waiting)), {"h": status}


def test_rows_carry_memory_against_cap_util_age_and_reason():
    store, statuses = _fleet()
    rows = {r.ref: r for r in job_rows(store, statuses, now=100.0)}
    assert (rows["7"].used_mib, rows["7"].cap_mib, rows["7"].util) == (3000, 6000, 40)
    assert memory(rows["7"]) == "2.9G/5.9G" and rows["7"].age_s == 60.0
    assert (rows["8"].used_mib, rows["8"].cap_mib, rows["8"].util) == (9000, 40000, None)
    assert rows["8"].where == "h/1/3g.40gb@4"
    assert rows["9"].reason == "no room: no GPU" and rows["9"].age_s == 90.0
    assert rows["9"].where == "queue quarter" and memory(rows["9"]) == "—"
    foreign = rows["h/j3"]  # launched on the host, not through the store
    assert rows["7"].where == "h/0/5.9G share"
    assert foreign.job_id is None and foreign.age_s == 30.0 and foreign.used_mib is None
    assert len(rows) == 4


def test_every_job_launched_on_a_host_is_a_row_of_its_own():
    """Two or more on one host (the second's GPUs were once read from a name the first had
    taken over, and the view failed)."""
    store, statuses = _fleet()
    statuses["h"].jobs["j4"] = {"id": "j4", "key": "by-hand-2", "gpus": [0], "pid": 11,
                                "memory_mib": 2000, "state": "running", "created_at": 90.0}
    rows = {r.ref: r for r in job_rows(store, statuses, now=100.0)}
    assert (rows["h/j3"].where, rows["h/j4"].where) == ("h/0", "h/0")
    assert (rows["h/j4"].used_mib, rows["h/j4"].cap_mib, rows["h/j4"].util) == (3000, 2000, 40)
    assert len(rows) == 5


def test_the_id_name_and_place_widen_to_their_longest_cell_where_there_is_room():
    """HOST/JOB names and long job names were cut to 6 and 12 cells at every width, so a job
    launched on a host read as the host's name."""
    store, statuses = _fleet()
    statuses["gpu-node-17"] = HostStatus("gpu-node-17", state="online", snapshot={"gpus": []},
                                         jobs={"j12345": {
                                             "id": "j12345", "key": "k", "gpus": [0],
                                             "state": "running", "pid": 5,
                                             "name": "a-much-longer-job-name"}})
    rows = job_rows(store, statuses, now=100.0)
    wide = dict(zip([c.key for c in fit(219)], grown(fit(219), rows, 219)))
    assert (wide["id"], wide["name"]) == (len("gpu-node-17/j12345"), len("a-much-longer-job-name"))
    assert sum(w + 2 for w in wide.values()) == 219  # the rest to the reason
    narrow = dict(zip([c.key for c in fit(78)], grown(fit(78), rows, 78)))
    assert narrow == {c.key: c.width for c in fit(78)} | {"reason": narrow["reason"]}
    assert sum(w + 2 for w in narrow.values()) <= 78


def test_a_host_not_connected_gives_no_live_figures_and_its_own_jobs_say_so():
    """What the agent of a host gone offline said last (its memory in use, its GPU's
    utilisation) read as live in the jobs view."""
    store, statuses = _fleet()
    statuses["h"].state, statuses["h"].error = "offline", "connection lost: reset by peer"
    rows = {r.ref: r for r in job_rows(store, statuses, now=100.0)}
    assert (rows["7"].used_mib, rows["7"].cap_mib, rows["7"].util) == (None, 6000, None)
    assert (rows["8"].used_mib, rows["8"].util) == (None, None)
    assert rows["h/j3"].reason == ("launched on the host, not through the store; its host is "
                                   "offline, so this is what its agent said last")


def test_a_job_the_store_still_shows_pending_is_one_row_when_its_host_runs_it():
    """While the store cannot be read, its last read shows a job pending that the scheduler
    has since launched: the agent's record of its key is that job, not a second one."""
    store, statuses = _fleet()
    waiting = next(j for j in store.jobs if j.slot is None)
    statuses["h"].jobs["j5"] = {"id": "j5", "key": waiting.key(UID), "gpus": [0], "pid": 15,
                                "state": "running", "name": waiting.name}
    rows = job_rows(store, statuses, now=100.0)
    assert [r.ref for r in rows].count("h/j5") == 0 and len(rows) == 4


def test_a_job_its_agent_runs_is_a_running_row_though_the_store_still_has_it_placed():
    """The state column is the one every view draws (fleetview.seen_state): the agent's
    running job is running, the store's record of its launch still to come; a job placed and
    not yet started is placed."""
    store, statuses = _fleet()
    store = StoreView(UID, tuple(dataclasses.replace(j, state=PLACED) if j.id in (7, 8) else j
                                 for j in store.jobs))
    rows = {r.ref: r for r in job_rows(store, statuses, now=100.0)}
    assert (rows["7"].state, rows["8"].state) == ("running", "running")
    del statuses["h"].jobs["j1"]  # its share not started yet
    assert {r.ref: r.state for r in job_rows(store, statuses, now=100.0)}["7"] == PLACED


def test_sort_by_any_column_and_filter_by_regex():
    store, statuses = _fleet()
    rows = job_rows(store, statuses, now=100.0)
    for column in COLUMNS:
        assert len(sort_rows(rows, column.key, False)) == 4
    # (#8 runs with its start not known: no age, last either way)
    assert [r.ref for r in sort_rows(rows, "age", True)] == ["9", "7", "h/j3", "8"]
    assert [r.ref for r in sort_rows(rows, "memory", True)][0] == "8"
    typed, inverse = compile_filter("!running")
    assert [r.ref for r in filter_rows(rows, Clocked(typed.regex, None), inverse)] == ["9"]


def test_a_job_is_found_by_who_submitted_it():
    """The user is the submit's actor less where it was asked from; a job launched on the
    host has none."""
    store, statuses = _fleet()
    mine = store.jobs[0].__class__(**{**store.jobs[0].__dict__, "submitted_by": "chen@login1"})
    rows = job_rows(StoreView(UID, (mine,) + store.jobs[1:]), statuses, now=100.0)
    assert {r.ref: r.user for r in rows} == {"7": "chen", "8": "", "9": "", "h/j3": ""}
    typed, inverse = compile_filter("chen")
    assert [r.ref for r in filter_rows(rows, Clocked(typed.regex, None), inverse)] == ["7"]
    assert [r.ref for r in sort_rows(rows, "user", False)][0] == "7"  # the unknown sort last


def test_columns_dropped_least_useful_first():
    keys = [c.key for c in fit(78)]
    assert keys == ["id", "name", "state", "where", "age", "reason"]  # 80 columns
    assert len(fit(400)) == len(COLUMNS)
    assert [c.key for c in fit(10)] == ["id"]
    assert sum(c.width + 2 for c in fit(78)) <= 78


def test_gpu_detail_names_each_process_s_job_or_none_and_the_error_in_full():
    store, statuses = _fleet()
    head, tables, held = describe(statuses["h"], "h", 0, store, "red")
    text = plain(head) + plain(tables)
    # what enter opens on each share: the store's job, or why a job by hand has no screen
    assert 7 in [h.job_id for h in held], held
    assert any(h.job_id is None and h.why.startswith("h/j3 notebook was launched on its host")
               for h in held), held
    assert statuses["h"].error in text  # in full: the map cuts it at the line's end
    lines = text.splitlines()
    assert any("11" in ln and "#7 j7" in ln for ln in lines)
    assert any("99" in ln and "outside fractui" in ln for ln in lines)
    assert any("h/j3 notebook" in ln for ln in lines)  # a share of a job not in the store
    # a worker of a job (another pid), where the agent says whose each process is
    statuses["h"].snapshot["gpus"][0]["processes"].append(
        {"pid": 21, "used_mib": 700, "instance": None, "job": "j1"})
    statuses["h"].snapshot["gpus"][0]["processes"].append(  # the MPS layer, named as such
        {"pid": 22, "used_mib": 66, "instance": None, "job": None, "service": "mps"})
    _head, tables, _held = describe(statuses["h"], "h", 0, store, "red")
    assert any("21" in ln and "#7 j7" in ln for ln in plain(tables).splitlines())
    assert any("22" in ln and "the jobs' MPS server" in ln for ln in plain(tables).splitlines())
    _head, mig, _held = describe(statuses["h"], "h", 1, store, "red")
    text = plain(mig)
    assert any("3g.40gb" in ln and "#8 j8" in ln and "8.8G/39.1G" in ln
               for ln in text.splitlines())


def test_a_mig_job_s_slices_its_agent_is_making_its_instance_on_are_not_free_rows():
    """A MIG job its agent is starting (drawn running: fleetview.seen_state), its instance
    not in the snapshot yet (its record's ``mig``): its slices were free rows in the GPU view,
    ``enter`` there saying nothing held them, while the map draws them the job's. Its row
    says the job, being made, and ``enter`` opens it."""
    store, statuses = _fleet()
    placed = job(4, state=PLACED, slot=Slot("h", (1,), profile="2g.20gb", start=0))
    store = StoreView(UID, store.jobs + (placed,))
    statuses["h"].jobs["j4"] = {"id": "j4", "key": placed.key(UID), "gpus": [1],
                                "state": "starting", "instance": None, "name": "j4",
                                "mig": {"profile": "2g.20gb", "start": 0}}
    _head, tables, held = describe(statuses["h"], "h", 1, store, "red")
    rows = [ln.split() for ln in plain(tables).splitlines()]
    assert ["2g.20gb", "0-1", "—/—", "#4", "j4", "(being", "made)", "—"] in rows, rows
    assert ["—", "2-3", "—", "free", "—"] in rows, rows
    assert not any(r[1:2] == ["0-3"] for r in rows if r), rows
    assert [h.job_id for h in held][:2] == [4, None], held


def test_a_start_its_agent_holds_says_the_agents_reason():
    """A start the agent holds (its folder left unread, none of its processes found: it keeps
    its slice till an admin mends the folder) read as any start: the store's job with no
    reason, one launched on the host as only that. Each now says the agent's words."""
    store, statuses = _fleet()
    held = "its directory /s/jobs/j1 holds what the agent did not make, …: one may still " \
        "run, so it holds its GPU slice until that folder is mended (…)"
    for ident in ("j1", "j3"):
        statuses["h"].jobs[ident] = dict(statuses["h"].jobs[ident], state="starting",
                                         pid=None, reason=held)
    rows = {r.ref: r for r in job_rows(store, statuses, now=100.0)}
    assert rows["7"].reason == held
    assert rows["h/j3"].reason == "launched on the host, not through the store; " + held
    assert rows["8"].reason == ""  # (running: the agent's reason is no word of its start)
    # the scheduler copies the agent's words into the store's job (as it reflects it): said once
    copied = StoreView(UID, tuple(dataclasses.replace(j, reason=held) if j.id == 7 else j
                                  for j in store.jobs))
    assert {r.ref: r for r in job_rows(copied, statuses, now=100.0)}["7"].reason == held


def test_a_running_job_whose_start_is_not_known_shows_no_age():
    """A job running with no start time (a start its agent holds unread, a launch answered
    ``starting``) read as if it had run since its submit, or its requeue: its age is not
    known, said "—", never a run made up from its wait's start."""
    store, statuses = _fleet()
    requeued = dataclasses.replace(store.jobs[1], queued_at=20.0)  # (#8: no start time)
    for view in (store, StoreView(UID, (store.jobs[0], requeued, store.jobs[2]))):
        rows = {r.ref: r for r in job_rows(view, statuses, now=100.0)}
        assert rows["8"].age_s is None and cell("age", rows["8"]) == "—"
        assert rows["7"].age_s == 60.0 and rows["9"].age_s == 90.0  # (started; waiting)
        assert [r.ref for r in sort_rows(list(rows.values()), "age", True)][-1] == "8"
