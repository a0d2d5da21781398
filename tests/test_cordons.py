"""Cordon and drain: durable in the store on both backends and audited with who; the admin's
alone (fractui's rule); what placement and the screens make of them (fractui.sched.cordons)."""

from __future__ import annotations

import pytest

from fractui.sched.cordons import (CORDONED, DRAINED, DRAINING, covering, fenced, refusal,
                                   state, summary)
from fractui.sched.model import Gpu, Host
from fractui.store import Slot, open_store
from fractui.store.access import Denied, Roster
from fractui.store.base import Identity
from fractui.store.intents import Asker, cordon, uncordon
from fractui.store.model import CORDON, DRAIN, Cordon, Job


def test_cordons_are_kept_across_a_reopen_replaced_lifted_and_audited_with_who(store_url):
    store = open_store(store_url)
    try:
        assert store.cordons() == []
        host = store.cordon("gpu-a", None, CORDON, "ops@here", "cordoned by ops@here")
        store.cordon("gpu-b", 1, CORDON, "ops@here", "x")
        again = store.cordon("gpu-b", 1, DRAIN, "ann@there", "drained by ann@there")
        store.cordon("gpu-a", 3, DRAIN, "ops@here", "y")
        assert (host.host, host.gpu, host.mode) == ("gpu-a", None, CORDON)
        assert (again.mode, again.actor) == (DRAIN, "ann@there")
    finally:
        store.close()
    store = open_store(store_url)
    try:
        kept = store.cordons()
        assert [(c.host, c.gpu, c.mode, c.actor) for c in kept] == [
            ("gpu-a", None, CORDON, "ops@here"), ("gpu-a", 3, DRAIN, "ops@here"),
            ("gpu-b", 1, DRAIN, "ann@there")]  # the drain replaced gpu-b 1's cordon
        assert kept[0] == host
        assert store.uncordon("gpu-b", 0, "ops@here", "u") == []  # nothing there
        lifted = store.uncordon("gpu-a", None, "ops@here", "uncordoned by ops@here")
        assert [(c.host, c.gpu) for c in lifted] == [("gpu-a", None), ("gpu-a", 3)]
        assert [(c.host, c.gpu) for c in store.cordons()] == [("gpu-b", 1)]
        assert [(c.host, c.gpu) for c in store.uncordon("gpu-b", 1, "x", "u")] == [("gpu-b", 1)]
        assert store.cordons() == []
        log = [(e.actor, e.action, e.job, e.why, e.detail) for e in store.audit_log()]
        assert log == [
            ("ops@here", "cordon", None, "cordoned by ops@here", {"host": "gpu-a", "gpu": None}),
            ("ops@here", "cordon", None, "x", {"host": "gpu-b", "gpu": 1}),
            ("ann@there", "drain", None, "drained by ann@there", {"host": "gpu-b", "gpu": 1}),
            ("ops@here", "drain", None, "y", {"host": "gpu-a", "gpu": 3}),
            ("ops@here", "uncordon", None, "uncordoned by ops@here",
             {"host": "gpu-a", "gpu": None, "lifted": ["gpu-a", "gpu-a gpu3"]}),
            ("x", "uncordon", None, "u", {"host": "gpu-b", "gpu": 1, "lifted": ["gpu-b gpu1"]})]
    finally:
        store.close()


def test_a_cordon_wakes_every_feed_as_a_change_of_the_hosts(store_url):
    store = open_store(store_url)
    feed = store.feed()
    try:
        store.cordon("gpu-a", None, DRAIN, "ops", "x")
        assert "hosts" in feed.wait(5.0)
    finally:
        feed.close()
        store.close()


def test_cordon_and_uncordon_through_fractuis_rule_name_the_admin_in_the_audit(tmp_path):
    store = open_store("sqlite://" + str(tmp_path / "store.db"))  # this process owns it: admin
    try:
        asker = Asker("head-node")
        made = cordon(store, "gpu-a", 2, DRAIN, asker)
        me = "%s@head-node" % store.identity().user
        assert (made.actor, made.why) == (me, "drained by %s" % me)
        assert [c.gpu for c in uncordon(store, "gpu-a", None, asker)] == [2]
        assert store.audit_log()[-1].actor == me
    finally:
        store.close()


@pytest.mark.parametrize("teams", [None, frozenset({"vision"})])
def test_only_an_admin_may_cordon_said_with_who_and_the_role_needed(teams):
    from fractui.store.access import CORDON as ACTION, check
    member = Identity("ann", admin=False, teams=teams)
    with pytest.raises(Denied) as err:
        check(member, Roster(), ACTION, None, "gpu-a gpu1")
    said = str(err.value)
    assert said.startswith("refused: you are ann (in ") and "not an admin" in said, said
    assert "to cordon, drain or uncordon gpu-a gpu1 you must be an admin" in said, said
    check(Identity("ops", admin=True), Roster(), ACTION, None, "gpu-a")  # no refusal


def job(id_: int, state_: str, host: str, gpus: tuple[int, ...]) -> Job:
    return Job(id_, "q", None, "j", ("x",), {}, state_, 0.0, 0.0,
               slot=Slot(host, gpus, memory_mib=100) if host else None)


def test_a_drain_is_draining_while_a_job_is_on_it_and_drained_once_none_is():
    host = Cordon("gpu-a", None, DRAIN, "ops", "x", 1.0)
    gpu1 = Cordon("gpu-a", 1, DRAIN, "ops", "x", 1.0)
    shut = Cordon("gpu-b", None, CORDON, "ops", "x", 1.0)
    on_gpu0 = [job(1, "running", "gpu-a", (0,)), job(2, "pending", "", ())]
    assert (state(host, on_gpu0), state(gpu1, on_gpu0), state(shut, [])) == (
        DRAINING, DRAINED, CORDONED)
    for last in ("placed", "stopping"):  # still there until it has ended
        assert state(gpu1, [job(3, last, "gpu-a", (1,))]) == DRAINING
    assert state(host, [job(1, "done", "gpu-a", (0,))]) == DRAINED
    # hosts and GPUs apart, as the header says them: a host's once, not its GPUs again
    assert summary([host, gpu1, shut], on_gpu0) == ["1 host cordoned", "1 host draining",
                                                    "1 GPU drained"]
    gpu0 = Cordon("gpu-b", 0, CORDON, "ops", "x", 1.0)
    assert summary([shut, gpu0, Cordon("gpu-a", 0, CORDON, "ops", "x", 1.0)], []) == [
        "1 host, 2 GPUs cordoned"]  # a part a state: three at most


def test_placement_sees_no_cordoned_host_and_a_cordoned_gpu_with_nothing_to_give():
    hosts = [Host("gpu-a", 8000, 64000, [Gpu("L4", 24000), Gpu("L4", 24000)]),
             Host("gpu-b", 8000, 64000, [Gpu("L4", 24000)])]
    cordons = [Cordon("gpu-a", 1, CORDON, "ops", "x", 1.0),
               Cordon("gpu-b", None, DRAIN, "ops", "x", 1.0)]
    out = fenced(hosts, cordons)
    assert [h.name for h in out] == ["gpu-a"]
    assert [g.free_milli for g in out[0].gpus] == [1000, 0]
    assert [g.free_milli for g in hosts[0].gpus] == [1000, 1000]  # the fleet given is untouched
    assert covering(cordons, "gpu-a", (0,)) is None
    assert covering(cordons, "gpu-a", (0, 1)) == cordons[0]
    assert refusal(cordons, [], "gpu-a", (0,)) is None
    assert refusal(cordons, [], "gpu-a", (1,)) == (
        "gpu-a gpu1 is cordoned (by ops): it takes no new work until an admin uncordons it "
        "(fractui uncordon gpu-a 1)")
    # a drain in its state, as the map says it: drained while no job of the store is on it
    on_b = [job(1, "running", "gpu-b", (0,))]
    assert refusal(cordons, on_b, "gpu-b", ()) == (
        "gpu-b is draining (by ops): it takes no new work until an admin uncordons it "
        "(fractui uncordon gpu-b)")
    assert refusal(cordons, [], "gpu-b", ()) == (
        "gpu-b is drained (by ops): it takes no new work until an admin uncordons it "
        "(fractui uncordon gpu-b)")


def test_a_damaged_cordon_row_keeps_its_host_out_of_service_until_uncordoned(tmp_path):
    """Rows holding what fractui never writes (a mode, a GPU, a time): each host reads cordoned
    as a whole, saying its row is damaged, so no work goes there and every reader goes on;
    uncordoning the host deletes the row, audited."""
    import sqlite3

    path = tmp_path / "store.db"
    store = open_store("sqlite://" + str(path))
    store.close()
    db = sqlite3.connect(str(path))
    db.executemany("INSERT INTO cordons (host, gpu, mode, actor, why, since) VALUES "
                   "(?, ?, ?, ?, ?, ?)", [("gpu-a", 0, "bogus", "ops", "x", 1.0),
                                          ("gpu-b", "two", CORDON, "ops", "x", 1.0),
                                          ("gpu-c", 1, DRAIN, "ops", "x", "yesterday")])
    db.commit()
    db.close()
    store = open_store("sqlite://" + str(path))
    try:
        kept = store.cordons()
        assert [(c.host, c.gpu, c.mode) for c in kept] == [
            ("gpu-a", None, CORDON), ("gpu-b", None, CORDON), ("gpu-c", None, CORDON)]
        assert kept[0].why == (
            "its row in the store is damaged (the cordon of gpu-a gpu 0 is 'bogus', not one of "
            "cordon, drain): the host is out of service until it is uncordoned")
        assert "gpu-b gpu two's gpu is 'two'" in kept[1].why and kept[1].since == 1.0
        assert "since is 'yesterday'" in kept[2].why and kept[2].since == 0.0
        hosts = [Host(n, 8000, 64000, [Gpu("L4", 24000), Gpu("L4", 24000)])
                 for n in ("gpu-a", "gpu-b", "gpu-c", "gpu-d")]
        assert [h.name for h in fenced(hosts, kept)] == ["gpu-d"]
        assert refusal(kept, [], "gpu-a", (1,)).startswith("gpu-a is cordoned (by ?)")
        for host in ("gpu-a", "gpu-b", "gpu-c"):
            (lifted,) = store.uncordon(host, None, "ops@here", "uncordoned by ops@here")
            assert lifted.host == host
        assert store.cordons() == []
        assert [e.detail["lifted"] for e in store.audit_log()] == [["gpu-a"], ["gpu-b"],
                                                                   ["gpu-c"]]
    finally:
        store.close()
