"""The metrics endpoint as Prometheus sees it: real `fractui scheduler` processes on a simulated
fleet, a real Prometheus server (Debian's package) scraping them on loopback, and promtool
checking a raw scrape."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fractui.config import MetricsSettings, QueueConfig, StoreSettings, TeamConfig
from fractui.store import sqlite_url
from tests import localfleet
from tests.cli_run import closed_port
from tests.conftest import REPO
from tests.localfleet import running, wait

from tests import test_store_damage

local_fleet = localfleet.local_fleet
small_fs = test_store_damage.small_fs

PROMETHEUS, PROMTOOL = "/usr/bin/prometheus", "/usr/bin/promtool"
needs_prometheus = pytest.mark.skipif(
    not (os.access(PROMETHEUS, os.X_OK) and os.access(PROMTOOL, os.X_OK)),
    reason="Prometheus is not installed (apt-get install prometheus: .ci/run does)")

QUARTER = QueueConfig(name="quarter", gpu=0.25)
MIG3 = QueueConfig(name="mig3", mig="3g.40gb")
NLP = TeamConfig("nlp", quota_gpus=1.0)
# a job that holds 512 MiB of its GPU (or MIG instance) in the simulator, as a CUDA job would
LOAD = [sys.executable, "-m", "remote_agent.simload", "--mem-mib", "512", "--seconds", "600"]


def scrape(port: int) -> Optional[str]:
    """The text of /metrics on ``port``, or None if nothing serves there."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            return r.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None


def parsed(text: str) -> dict:
    """(name, sorted labels) -> value of every sample of a scrape."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def serving(port: int, holder: str) -> bool:
    text = scrape(port)
    return text is not None and 'fractui_scheduler_lease_held{holder="%s"} 1.0' % holder in text


def query(port: int, promql: str) -> list:
    url = "http://127.0.0.1:%d/api/v1/query?%s" % (port, urllib.parse.urlencode(
        {"query": promql}))
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            answer = json.load(r)
    except urllib.error.HTTPError as err:  # Prometheus answered: a query it refuses
        raise AssertionError("%s: %s" % (promql, err.read().decode())) from None
    except (urllib.error.URLError, ConnectionError):
        return []  # not up yet
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def documented_queries() -> list:
    """The PromQL lines of docs/metrics.md's ```promql block."""
    with open(os.path.join(REPO, "docs", "metrics.md")) as f:
        block = f.read().split("```promql\n", 1)[1].split("```", 1)[0]
    found = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(found) >= 5, block
    return found


def prometheus(tmp_path, port: int, prom_port: int) -> subprocess.Popen:
    """A Prometheus on ``prom_port`` scraping ``port`` every second."""
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: fractui\n    static_configs:\n"
        "      - targets: ['127.0.0.1:%d']\n" % port)
    return subprocess.Popen(
        [PROMETHEUS, "--config.file=%s" % (tmp_path / "prometheus.yml"),
         "--storage.tsdb.path=%s" % (tmp_path / "tsdb"),
         "--web.listen-address=127.0.0.1:%d" % prom_port],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def with_metrics(f, port: int, tui: bool = False) -> str:
    f.config = dataclasses.replace(f.config, metrics=MetricsSettings(
        listen="127.0.0.1:%d" % port, tui=tui))
    return f.write_config()


@needs_prometheus
def test_prometheus_scrapes_the_lease_holder_and_promtool_passes_its_text(local_fleet,
                                                                         tmp_path):
    f = local_fleet({"gpu-a": "1xL4", "gpu-m": "1xA100-80GB:mig"},
                    [dataclasses.replace(QUARTER, hosts=("gpu-a",)), MIG3], [NLP])
    port = closed_port()
    with_metrics(f, port)
    job = f.submit("quarter", "nlp", LOAD)
    mig = f.submit("mig3", "nlp", LOAD)
    head = f.scheduler_process("head")
    prom_port = closed_port()
    prom = prometheus(tmp_path, port, prom_port)
    try:
        wait(lambda: {f.states()[job.id], f.states()[mig.id]} == {"running"}, f.states,
             alive=head)
        charge = f.store.get(job.id).slot.charge
        mig_charge = f.store.get(mig.id).slot.charge
        assert (charge, mig_charge) == (0.25, round(3 / 7, 6))
        wait(lambda: serving(port, "head"), lambda: scrape(port), alive=head)

        promql = "sum by (team) (fractui_job_allocated_gpus)"
        wait(lambda: query(prom_port, promql), lambda: "no answer from Prometheus yet",
             timeout_s=60, step_s=0.5)
        [row] = query(prom_port, promql)
        assert row["metric"] == {"team": "nlp"}
        assert float(row["value"][1]) == pytest.approx(charge + mig_charge)
        [up] = query(prom_port, 'up{job="fractui"}')
        assert up["value"][1] == "1"
        for example in documented_queries():  # each one docs/metrics.md shows, accepted
            query(prom_port, example)

        # what each job uses, from its host's snapshots: its process's, its instance's (each
        # job's series once its host's snapshot says it: a set of the values alone held with
        # one job's series come and the other's not yet)
        wait(lambda: {dict(k[1])["job"]: v for k, v in parsed(scrape(port) or "").items()
                      if k[0] == "fractui_job_memory_used_bytes"} == {
                          str(job.id): 512 * 2 ** 20, str(mig.id): 512 * 2 ** 20},
             lambda: scrape(port), alive=head)
        text = scrape(port)
        assert text is not None
        check = subprocess.run([PROMTOOL, "check", "metrics"], input=text,
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        # each job's own series, labelled as the store and the agent know it
        got = parsed(text)
        share = (("gpu", "0"), ("host", "gpu-a"), ("job", str(job.id)), ("queue", "quarter"),
                 ("slice", "5758MiB"), ("team", "nlp"))
        inst = (("gpu", "0"), ("host", "gpu-m"), ("job", str(mig.id)), ("queue", "mig3"),
                ("slice", "3g.40gb"), ("team", "nlp"))
        assert got[("fractui_job_allocated_gpus", share)] == 0.25
        assert got[("fractui_job_allocated_gpus", inst)] == mig_charge
        assert got[("fractui_job_memory_limit_bytes", share)] == 5758 * 2 ** 20
        assert got[("fractui_job_memory_limit_bytes", inst)] > 0  # its instance's memory
        assert got[("fractui_job_memory_used_bytes", share)] == 512 * 2 ** 20
        assert got[("fractui_job_memory_used_bytes", inst)] == 512 * 2 ** 20
        # the L4's utilisation is reported; the MIG GPU's is not, rather than as 0
        assert ("fractui_gpu_utilization_ratio", (("gpu", "0"), ("host", "gpu-a"))) in got
        assert ("fractui_gpu_utilization_ratio", (("gpu", "0"), ("host", "gpu-m"))) not in got
        assert got[("fractui_gpu_allocated_ratio", (("gpu", "0"), ("host", "gpu-m")))] == \
            mig_charge
        assert got[("fractui_scheduler_pass_duration_seconds_count",
                    (("holder", "head"),))] >= 1

        # an ended job leaves: its series are gone from the next scrape
        assert f.fractui("cancel", str(job.id)).returncode == 0
        wait(lambda: f.store.get(job.id).state == "cancelled", f.states, alive=head)
        wait(lambda: 'job="%d"' % job.id not in (scrape(port) or ""), lambda: scrape(port),
             alive=head)
    finally:
        prom.terminate()
        head.terminate()
        _, err = head.communicate(timeout=60)
        prom.communicate(timeout=30)
    assert "Traceback" not in err, err
    assert scrape(port) is None  # a scheduler that stops stops serving


def test_only_the_lease_holder_serves_and_a_standby_that_takes_the_lease_starts(
        local_fleet):
    """Two schedulers, each with its own port: the holder serves, the standby does not; when
    the holder stops (handing the lease over), its endpoint closes and the standby's opens."""
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER], [NLP], lease_s=3.0)
    first_port, second_port = closed_port(), closed_port()
    with_metrics(f, first_port)
    first = f.scheduler_process("first")
    wait(lambda: serving(first_port, "first"), lambda: scrape(first_port), alive=first)
    with_metrics(f, second_port)  # the second reads the config as it is when it starts
    second = f.scheduler_process("second")
    try:
        assert second.stdout.readline().startswith("scheduler second: ")
        wait(lambda: (f.store.lease_holder() or ("",))[0] == "first", f.states, alive=second)
        assert scrape(second_port) is None  # a standby serves nothing
        first.terminate()
        first.wait(60)
        wait(lambda: serving(second_port, "second"), lambda: scrape(second_port),
             alive=second)
        assert scrape(first_port) is None
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.terminate()
        _, err = second.communicate(timeout=60)
        first.communicate(timeout=10)
    assert "Traceback" not in err, err


def agreed(f, port: int, quota: float) -> None:
    """The holder on ``port`` exports nlp's quota as the one it keeps in the store, and
    ``fractui teams`` shows the reader (f's config as it is) the same, with what nlp holds."""
    assert f.store.team_terms()["nlp"].quota_gpus == quota
    scraped = parsed(scrape(port) or "")
    shown = f.fractui("teams", "--json")
    assert shown.returncode == 0, shown.stderr
    [nlp] = [t for t in json.loads(shown.stdout)["teams"] if t["name"] == "nlp"]
    exported = tuple(scraped[("fractui_team_%s_gpus" % what, (("team", "nlp"),))]
                     for what in ("quota", "allocated", "borrowed"))
    assert exported == (nlp["quota"], nlp["held"], nlp["borrowed"]) == (quota, 0.25, 0.0), (
        scraped, nlp)


def test_the_team_metrics_are_the_quotas_the_holder_keeps_as_fractui_teams_shows_them(
        local_fleet, store_url):
    """Two schedulers whose configs give nlp other quotas (1, then 2 for the standby), and a
    reader whose config gives it 3: whoever holds the lease exports the quota its passes hold
    nlp to, the one it keeps in the store and ``fractui teams`` shows the reader."""
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER], [NLP], lease_s=3.0, store_url=store_url)
    first_port, second_port = closed_port(), closed_port()
    with_metrics(f, first_port)
    first = f.scheduler_process("first")
    second: Optional[subprocess.Popen] = None
    try:
        wait(lambda: serving(first_port, "first"), lambda: scrape(first_port), alive=first)
        job = f.submit("quarter", "nlp")
        wait(lambda: f.store.get(job.id).state == "running", f.states, alive=first)
        f.config = dataclasses.replace(f.config, teams=(TeamConfig("nlp", quota_gpus=2.0),))
        with_metrics(f, second_port)
        second = f.scheduler_process("second")
        assert second.stdout.readline().startswith("scheduler second: ")  # its config read
        f.config = dataclasses.replace(f.config, teams=(TeamConfig("nlp", quota_gpus=3.0),))
        wait(lambda: 'fractui_team_allocated_gpus{team="nlp"} 0.25' in (scrape(first_port)
                                                                       or ""),
             lambda: scrape(first_port), alive=first)  # a pass since the job ran
        agreed(f, first_port, 1.0)
        first.terminate()
        first.wait(60)
        wait(lambda: serving(second_port, "second") and f.store.team_terms()["nlp"].quota_gpus
             == 2.0, lambda: (scrape(second_port), f.store.team_terms()), alive=second)
        wait(lambda: 'fractui_team_allocated_gpus{team="nlp"} 0.25' in (scrape(second_port)
                                                                       or ""),
             lambda: scrape(second_port), alive=second)
        agreed(f, second_port, 2.0)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in (first, second):
            if proc is not None:
                proc.communicate(timeout=60)


def passes(port: int) -> float:
    """The pass count one scrape of ``port`` says, whoever's (0 if none serves)."""
    return sum(v for (name, _), v in parsed(scrape(port) or "").items()
               if name == "fractui_scheduler_pass_duration_seconds_count")


@needs_prometheus
def test_no_counter_steps_back_as_a_standby_takes_over_the_same_address(local_fleet,
                                                                        tmp_path):
    """The holder and its standby on one address, as on one head node: the holder closes its
    port as it hands the lease over and the standby binds it, so Prometheus scrapes one
    target throughout. The holder ran more passes than the standby will have run when first
    scraped; each holder's counts are series of their own, so none steps back (a reset,
    which rate() would read as passes that never ran)."""
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER], [NLP], lease_s=3.0)
    port, prom_port = closed_port(), closed_port()
    with_metrics(f, port)
    prom = prometheus(tmp_path, port, prom_port)
    first = f.scheduler_process("first")
    second: Optional[subprocess.Popen] = None
    try:
        wait(lambda: serving(port, "first"), lambda: scrape(port), alive=first)
        for _ in range(3):  # each submit and each cancel is a pass of the holder's
            job = f.submit("quarter", "nlp")
            wait(lambda: f.store.get(job.id).state == "running", f.states, alive=first)
            assert f.fractui("cancel", str(job.id)).returncode == 0
            wait(lambda: f.store.get(job.id).state == "cancelled", f.states, alive=first)
        wait(lambda: passes(port) >= 6, lambda: scrape(port), alive=first)
        count = "fractui_scheduler_pass_duration_seconds_count"
        wait(lambda: any(float(r["value"][1]) >= 6 for r in query(prom_port, count)),
             lambda: query(prom_port, count), timeout_s=60, alive=first)
        second = f.scheduler_process("second")
        assert second.stdout.readline().startswith("scheduler second: ")
        first.terminate()
        first.wait(60)
        wait(lambda: serving(port, "second"), lambda: scrape(port), alive=second)
        assert passes(port) < 6  # the second's own, fewer
        held = 'fractui_scheduler_lease_held{holder="second"}'
        wait(lambda: query(prom_port, held), lambda: query(prom_port, held), timeout_s=60,
             alive=second)  # Prometheus has scraped the second
        resets = query(prom_port, "resets(%s[10m])" % count)
        assert resets and all(r["value"][1] == "0" for r in resets), resets
    finally:
        for proc in (first, second, prom):
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in (first, second, prom):
            if proc is not None:
                proc.communicate(timeout=60)


@pytest.mark.parametrize("tui", [False, True])
def test_a_tuis_scheduler_serves_only_if_the_config_says_so(local_fleet, tui):
    """The scheduler a TUI runs as its child (``--until-stdin-closes``) holds the lease, and
    serves the endpoint only with [metrics] tui = true."""
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER], [NLP])
    port = closed_port()
    path = with_metrics(f, port, tui=tui)
    child = subprocess.Popen([sys.executable, "-m", "fractui", "--config", path, "scheduler",
                              "--name", "tui", "--until-stdin-closes"], cwd=REPO,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait(lambda: (f.store.lease_holder() or ("",))[0] == "tui", f.states, alive=child)
        if tui:
            wait(lambda: serving(port, "tui"), lambda: scrape(port), alive=child)
        else:
            f.submit("quarter", "nlp")  # a full pass with a job: it has told its listener
            wait(lambda: running(f) == 1, f.states, alive=child)
            assert scrape(port) is None
    finally:
        child.stdin.close()  # as its TUI does on the way out
        child.wait(60)
        err = child.stderr.read()
    assert child.returncode == 0, err
    assert scrape(port) is None


def test_a_holder_that_cannot_write_its_store_says_so_then_stops_serving_until_it_can(
        local_fleet, small_fs):
    """The store's filesystem fills up: the holder's turns fail, its scrape says the store is
    unreachable, and once its lease has run out (it cannot prove it holds it) it closes its
    port; when there is room again it takes the lease and serves again."""
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER], [NLP], lease_s=3.0)
    f.config = dataclasses.replace(f.config, store=StoreSettings(
        sqlite_url(str(small_fs / "store.db"))))
    port = closed_port()
    with_metrics(f, port)
    run = f.scheduler_process("headless")
    try:
        wait(lambda: serving(port, "headless"), lambda: scrape(port), alive=run)
        assert "fractui_store_reachable 1.0" in (scrape(port) or "")
        filler = test_store_damage._fill(small_fs)
        wait(lambda: "fractui_store_reachable 0.0" in (scrape(port) or ""),
             lambda: scrape(port), alive=run, step_s=0.05)
        wait(lambda: scrape(port) is None, lambda: scrape(port), alive=run)
        filler.unlink()
        wait(lambda: "fractui_store_reachable 1.0" in (scrape(port) or ""),
             lambda: scrape(port), alive=run)
    finally:
        run.terminate()
        _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert "Traceback" not in err, err
