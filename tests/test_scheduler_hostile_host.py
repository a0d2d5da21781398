"""A value one host's agent sends that the store refuses (a number past a column's range, text
with a NUL or a lone surrogate, which JSON lets an agent send) leaves that write out, said once
with the host's name and what was refused: the passes go through, and every other host's jobs
are placed and its usage kept. Before, the refusal failed every pass (or every usage write), and
no host's jobs were placed. Real agents over the local fleet, real SQLite and PostgreSQL.

The fleet mends such values where it reads them (test_scheduler_host_values): the tests of
the store's refusal, its last defence, take that mending away (``unmended``), as a value it
does not mend (a part a newer agent adds, a mistake of fractui's) would come through."""

from __future__ import annotations

import copy
import sys
import logging
from typing import Any, Dict, Tuple

import pytest

from fractui.config import QueueConfig
from fractui.fleet import answers
from fractui.fleet.client import SAID_ONE_BY_ONE
from fractui.scheduler.service import UNHELD
from fractui.store.model import FAILED, PLACED, RUNNING, Sampled
from tests import localfleet

local_fleet = localfleet.local_fleet

# what an agent may send that a store may refuse, and which stores do: a lone surrogate is
# text neither driver can send; PostgreSQL's text holds no NUL, its exit code is an INTEGER
HOSTILE = {"surrogate": ({"reason": "oops \ud800"}, {"sqlite", "postgresql"}),
           "nul": ({"reason": "oops \x00 there"}, {"postgresql"}),
           "huge exit code": ({"exit_code": 2 ** 40}, {"postgresql"})}


@pytest.fixture
def unmended(monkeypatch) -> None:
    """What a host's agent says reaches the store as it is said (``answers.mended`` taken
    away): the store's refusal is then all that stands between it and the passes."""
    monkeypatch.setattr(answers, "mended", lambda method, value, said: value)


def one_host_busy(local_fleet, store_url: str) -> Tuple[Any, Any, str, Dict[str, Any]]:
    """Two one-GPU hosts, one running a whole-GPU job of the store's, that host's pushes no
    longer listened to (the test hands its session what the agent would push): the fleet,
    the job, its host's name and its record as its agent has it."""
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [QueueConfig(name="whole", gpus=1)],
                    store_url=store_url)
    job = f.submit("whole")
    f.until(lambda: f.store.get(job.id).state == RUNNING)
    busy = f.store.get(job.id).slot.host
    session = f.fleet.session(busy)
    session.call("unsubscribe")
    [record] = session.call("job.list")["jobs"]
    return f, job, busy, record


def refusals(caplog) -> list:
    return [r.getMessage() for r in caplog.records if "the store refused" in r.getMessage()]


@pytest.mark.parametrize("hostile", sorted(HOSTILE))
def test_a_record_the_store_refuses_fails_its_host_only(local_fleet, store_url, caplog,
                                                        hostile, unmended):
    caplog.set_level(logging.INFO, "fractui.scheduler")
    f, job, busy, record = one_host_busy(local_fleet, store_url)
    values, refusing = HOSTILE[hostile]
    backend = store_url.split(":")[0]
    session = f.fleet.session(busy)
    session._notify("job", dict(record, **dict(dict(state="exited", exit_code=1), **values)))
    other = f.submit("whole")
    for _ in range(3):  # each pass goes through, the other host's job is placed
        assert f.scheduler.step() is True
    f.until(lambda: f.store.get(other.id).state == RUNNING)
    assert f.store.get(other.id).slot.host != busy
    if backend not in refusing:  # the store takes it: the job ends as its agent says
        assert f.store.get(job.id).state == FAILED and refusals(caplog) == []
        return
    assert f.store.get(job.id).state == RUNNING  # left as the store has it
    [said] = refusals(caplog)  # once, however many passes
    assert said.startswith("%s: the store refused what its agent said of job %d, left out "
                           "(said once while the store refuses any of its job records): "
                           "store " % (busy, job.id)), said
    assert "refused a value it was given, so nothing was written: " in said
    session._notify("job", record)  # its agent's word the store takes: said so
    f.scheduler.step()
    assert "%s: the store takes what its agent says of its job records again after" % busy \
        in caplog.text


def test_usage_the_store_refuses_leaves_out_its_host_only(local_fleet, store_url, caplog,
                                                          unmended):
    """A GPU's model as one host names it (text with a lone surrogate) is refused with that
    host's GPU time: the other host's is kept, and the refused is not kept to be written again
    at every write (the GPU time waiting grew with each bucket, and no host's was kept)."""
    caplog.set_level(logging.INFO, "fractui.scheduler")
    f, _job, busy, _record = one_host_busy(local_fleet, store_url)
    session = f.fleet.session(busy)
    snapshot = copy.deepcopy(session.call("snapshot"))
    snapshot["gpus"][0]["name"] = "NVIDIA L4 \ud800"
    session._notify("snapshot", snapshot)
    keeper, scheduler = f.scheduler.usage, f.scheduler
    views, jobs = scheduler._views(), f.store.jobs()
    for at in (1000.0, 1005.0, 1010.0):
        keeper.gpus.observe(views, jobs, at)
    for _ in range(2):
        keeper._write(scheduler.epoch)
        assert keeper.gpus.pending == {}
    kept = f.store.gpu_time(0, 9e12)
    assert {t.host for t in kept} == {"gpu-a", "gpu-b"} - {busy}
    assert sum(t.online_s for t in kept) == 10
    [said] = refusals(caplog)
    assert said.startswith("%s: the store refused what its agent said of its GPUs' time, "
                           "left out (said once while the store refuses any of its GPU time): "
                           % busy), said


def test_copies_of_no_job_a_host_lists_without_end_are_said_within_the_cap(local_fleet,
                                                                           caplog):
    """An agent that lists ever more copies under the store's key of jobs the store does not
    have (and one naming a job past any number the store gives, which a read of it could not
    even ask for): the first SAID_ONE_BY_ONE said one by one, then once that there are more;
    the failures kept stay within the cap, the passes go through, and as they end each said
    is said ended. Before: every copy a line and a name kept, and the number past 64 bits
    failed every pass on SQLite."""
    caplog.set_level(logging.INFO, "fractui.scheduler")
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="whole", gpus=1)])
    session = f.fleet.session("gpu-a")
    session.call("unsubscribe")
    cap = SAID_ONE_BY_ONE
    copies = [{"id": "j%d" % n, "key": "fractui-%s-%d.0" % (f.store.uid, 900 + n),
               "state": "running", "gpus": [0], "pid": None} for n in range(cap * 3)]
    huge = dict(copies[0], id="j-huge", key="fractui-%s-%s.0" % (f.store.uid, "9" * 30))
    for rec in copies + [huge]:
        session._notify("job", rec)
    for _ in range(3):
        assert f.scheduler.step() is True
    said = [r.getMessage() for r in caplog.records
            if "which the store does not hold" in r.getMessage()]
    assert len(said) == cap + 1, said
    assert said[-1].startswith("more than %d failing at once" % cap), said[-1]
    assert len(f.scheduler.failures.failing(UNHELD)) == cap + 1
    for rec in copies:
        session._notify("job", dict(rec, state="killed"))
    for _ in range(2):
        assert f.scheduler.step() is True
    assert f.scheduler.failures.failing(UNHELD) == []
    assert caplog.text.count("is seen running no more") == cap
    assert "failures past the cap unsaid" in caplog.text


def test_a_jobs_output_with_a_nul_is_kept_with_it_as_any_stray_byte(local_fleet, store_url):
    """A job that writes a NUL (binary output): its tail is kept on every store, the NUL read
    as "?" as a byte that is no UTF-8 is. Before: PostgreSQL refused its tail at every read,
    and the job's output was never kept."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="whole", gpus=1)],
                    store_url=store_url)
    job = f.submit("whole", argv=[sys.executable, "-c",
                                  "import sys; sys.stdout.buffer.write(b'a\\x00b\\xff\\n')"])

    def kept() -> bool:  # (a turn of the loop, which serves the tails asked for)
        f.scheduler._turn()
        f.scheduler.settle()
        tail = f.store.log_tail(job.id)
        return tail is not None and tail.complete

    f.until(kept, timeout_s=15)
    assert f.store.log_tail(job.id).text == "a?b?\n"


def test_a_launch_whose_start_the_store_refuses_leaves_its_hosts_other_calls_going(
        local_fleet, caplog, unmended):
    """A host naming one of its GPUs with a lone surrogate: the start of the job launched on
    that GPU is refused by the store (its model), said once as that host's refusal; the job
    stays placed, holding its GPU, and its launch (by its key: the same job) is asked again.
    The job launched after it on the host's other GPU runs. Before: the refusal ended the
    host's calls of every pass, and the other job was never launched."""
    caplog.set_level(logging.INFO, "fractui.scheduler")
    f = local_fleet({"gpu-a": "2xL4"}, [QueueConfig(name="whole", gpus=1)])
    session = f.fleet.session("gpu-a")
    session.call("unsubscribe")
    snapshot = copy.deepcopy(session.call("snapshot"))
    named = snapshot["gpus"][0]["name"]
    snapshot["gpus"][0]["name"] = named + " \ud800"
    session._notify("snapshot", snapshot)
    first, second = f.submit("whole"), f.submit("whole")
    for _ in range(4):
        assert f.scheduler.step() is True
        f.scheduler.settle()
    assert f.store.get(first.id).slot.gpus == (0,)  # (launched first on the host's lane)
    assert f.store.get(first.id).state == PLACED
    assert f.store.get(second.id).state == RUNNING
    assert f.store.get(second.id).slot.gpus == (1,)
    assert sorted(r["key"] for r in f.agent_jobs()) == sorted(
        j.key(f.store.uid) for j in (first, second))  # the first's launch asked again: one
    [said] = refusals(caplog)
    assert said.startswith("gpu-a: the store refused what its agent said of job %d, left out"
                           % first.id), said
    assert "wait for a later pass" not in caplog.text
    snapshot["gpus"][0]["name"] = named  # the store takes it: its start is recorded
    session._notify("snapshot", snapshot)
    f.until(lambda: f.store.get(first.id).state == RUNNING)
    f.scheduler.step()
    assert "gpu-a: the store takes what its agent says of its job records again" in caplog.text


def test_usage_refused_is_said_taken_again_only_once_its_kind_is_taken(local_fleet, caplog):
    """A job's usage its host samples (a note with a lone surrogate) is refused at each write
    that has it; a write between two reads of the host's records has none of its samples, only
    its GPU time, which the store takes: that is no word on the samples, so nothing is said
    then, and the refusal is said once, not again at each read. Before: "takes ... again"
    after each write without the samples, and the refusal said anew at the next."""
    caplog.set_level(logging.INFO, "fractui.scheduler")
    f, job, busy, _record = one_host_busy(local_fleet, None)
    keeper, scheduler = f.scheduler.usage, f.scheduler
    views, jobs = scheduler._views(), f.store.jobs()
    key = (job.id, f.store.get(job.id).attempt)
    clock = iter(range(1000, 2000, 5))

    def write(sampled: Dict[Tuple[int, int], Any]) -> None:
        for _ in range(2):  # GPU time of each host to keep
            keeper.gpus.observe(views, jobs, float(next(clock)))
        with keeper._lock:  # as a read of the host's running jobs leaves them
            keeper._sampled.update(sampled)
        keeper._write(scheduler.epoch)

    bad = {key: (busy, Sampled(samples=3, util_note="MIG \ud800"))}
    for sampled in (bad, {}, bad, {}):
        write(sampled)
    assert len(refusals(caplog)) == 1, refusals(caplog)
    assert "the store takes what its agent says" not in caplog.text
    write({key: (busy, Sampled(samples=4))})
    assert "%s: the store takes what its agent says of its jobs' usage again" % busy \
        in caplog.text
    assert f.store.usage(0, 9e12)[0].sampled.samples == 4


def test_gpu_time_kept_host_by_host_before_a_failed_write_is_not_kept_twice(local_fleet,
                                                                           pg_server,
                                                                           unmended):
    """A write of the GPU time that goes host by host (one host's refused) and then fails
    on a later host (its row held by a psql session): the hosts kept before the failure are
    not written again by the next write, which adds the rest. Before: every row of the write
    was put back, and the hosts kept were counted twice."""
    url = pg_server.url(pg_server.new_database())
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4", "gpu-c": "1xL4"},
                    [QueueConfig(name="whole", gpus=1)], store_url=url)
    keeper, scheduler = f.scheduler.usage, f.scheduler
    assert scheduler.step() is True

    def write(*at: float) -> None:
        views, jobs = scheduler._views(), f.store.jobs()
        for each in at:
            keeper.gpus.observe(views, jobs, each)
        keeper._write(scheduler.epoch)

    write(1000.0, 1005.0)  # each host's row of the bucket made
    session = f.fleet.session("gpu-b")
    session.call("unsubscribe")
    snapshot = copy.deepcopy(session.call("snapshot"))
    snapshot["gpus"][0]["name"] += " \ud800"
    session._notify("snapshot", snapshot)
    psql = pg_server.connect(url.rsplit("/", 1)[1])
    try:
        psql.execute("BEGIN")
        psql.execute("SELECT * FROM gpu_time WHERE host = 'gpu-c' FOR UPDATE")
        write(1010.0)  # gpu-a kept, gpu-b refused, gpu-c held: left for the next write
    finally:
        psql.close()
    write()
    kept: Dict[str, float] = {}
    for row in f.store.gpu_time(0, 9e12):
        kept[row.host] = kept.get(row.host, 0.0) + row.online_s
    assert kept == {"gpu-a": 10.0, "gpu-b": 5.0, "gpu-c": 10.0}, kept
