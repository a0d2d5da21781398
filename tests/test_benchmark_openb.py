"""benchmarks/openb.py runs from any folder holding the upstream data (``--data DIR``): the
published results are computed from the FGD simulator's own file, and a folder without the
data is refused, naming what is missing and where to get it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmarks import openb
from tests.conftest import REPO


def test_a_folder_without_the_data_is_refused_saying_what_and_where_from(tmp_path):
    (tmp_path / "openb_node_list_gpu_node.csv").write_text("sn,cpu_milli,memory_mib,gpu,model\n")
    done = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "openb.py"),
                           "--data", str(tmp_path), "--trace", "gpushare40"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "has no fgd_expected_results/analysis_allo_discrete.csv, " \
           "openb_pod_list_gpushare40.csv" in done.stderr
    assert "alibaba/clusterdata" in done.stderr and "expected_results" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_published_numbers_are_the_mean_over_the_simulators_seeds(tmp_path):
    folder = tmp_path / "fgd_expected_results"
    folder.mkdir()
    cols = ["workload", "sc_policy", "tune", "seed", "total_gpus"] + [str(i) for i in range(131)]
    rows = [",".join(cols)]
    for policy, seed, at100, at130 in (("06-FGD", 42, 95.0, 96.0), ("06-FGD", 43, 95.5, 96.5),
                                       ("05-BestFit", 42, 92.0, 93.0),
                                       ("01-Random", 42, 1.0, 1.0)):
        values = ["0"] * 131
        values[100], values[130] = str(at100), str(at130)
        rows.append(",".join(["openb_pod_list_default", policy, "1.3", str(seed), "6212"]
                             + values))
    rows.append(",".join(["openb_pod_list_cpu050", "06-FGD", "1.3", "42", "6212"] + ["9"] * 131))
    (folder / "analysis_allo_discrete.csv").write_text("\n".join(rows) + "\n")
    assert openb.published(str(tmp_path), "default") == {
        "fgd": ("95.25", "96.25"), "best-fit": ("92.00", "93.00")}


def test_a_seeded_share_of_the_one_gpu_requests_asks_for_mig_isolation():
    from fractui.sched import Request
    work = [Request("s%d" % i, gpu=0.3, models=frozenset({"T4"})) for i in range(1000)] + [
        Request("w%d" % i, gpus=2) for i in range(100)] + [Request("c", cpu_milli=1000)]
    tagged = openb.isolated(work, 0.3, 42)
    assert tagged == openb.isolated(work, 0.3, 42)  # seeded
    mig = [r for r in tagged if r.isolation == "mig"]
    assert 250 < len(mig) < 350 and all(r.gpu == 0.3 for r in mig)
    assert all(not r.models for r in tagged) and [r.name for r in tagged] == [r.name for r in work]
    assert len([r for r in openb.isolated(work, 0.6, 42) if r.isolation == "mig"]) > 550


@pytest.mark.skipif(not os.path.isfile(os.path.join(openb.DATA, "openb_node_list_gpu_node.csv")),
                    reason="the openb trace is not in the shared data folder")
@pytest.mark.parametrize("fleet,mig_gpus", [("half", (45, 55)), ("all-mig", (100, 100)),
                                             ("dynamic", (1, 99))])
def test_mixed_fleets_replay_on_a_small_fleet(fleet, mig_gpus):
    r = openb.replay_mixed((openb.DATA, "default", fleet, 0.3, 42, 100))
    assert mig_gpus[0] <= r["mig_gpus"] <= mig_gpus[1]
    assert 50 < r["a100"] <= 100  # (a fleet this small may end short of 130 % arrived)


def test_all_names_every_trace_in_the_folder_and_nothing_else(tmp_path):
    for name in ("openb_pod_list_default.csv", "openb_pod_list_cpu250.csv",
                 "openb_node_list_gpu_node.csv", "openb_pod_list_notes.txt"):
        (tmp_path / name).write_text("")
    assert openb.all_traces(str(tmp_path)) == ["cpu250", "default"]
    assert openb.all_traces(str(tmp_path / "absent")) == []


def _result(trace, policy, seed, a100):
    return {"trace": trace, "policy": policy, "seed": seed, "mig": False, "size": 0,
            "a100": a100}


def test_the_seed_by_seed_table_compares_fractui_with_the_best_other_on_each_seed():
    runs = [_result("t", "first-fit", 42, 90.0), _result("t", "fgd", 42, 91.0),
            _result("t", "fractui", 42, 91.5),
            _result("t", "first-fit", 43, 92.0), _result("t", "fgd", 43, 91.0),
            _result("t", "fractui", 43, 91.75)]
    lines = openb.seed_table(runs, ["t"], ["first-fit", "fgd", "fractui"], [42, 43])
    assert "| t | 91.00 | 91.00 | 91.62 | +0.50 fgd, -0.25 ff | 1 |" in lines
    assert lines[-1] == "fractui below the best of the others on 1 of 2 (trace, seed) runs."


def test_by_seed_without_fractui_or_without_another_policy_is_refused(tmp_path):
    for policies in (["fgd"], ["fractui"]):
        args = ["--by-seed", "--data", str(tmp_path)]
        for p in policies:
            args += ["--policy", p]
        assert openb.main(args) == 2


def test_a_static_mix_gives_seven_g_to_the_hosts_with_most_gpus_first():
    from fractui.sched import Gpu, Host
    hosts = [Host("a", 1000, 1000, [Gpu("A100-80GB")] * 2),
             Host("b", 1000, 1000, [Gpu("A100-80GB")] * 4),
             Host("c", 1000, 1000, [Gpu("A100-80GB")] * 2)]
    mix = openb.static_mix("static:7g=5,4g+3g", hosts)
    seven, four_three = openb.LAYOUTS["7g"], openb.LAYOUTS["4g+3g"]
    assert mix == [[seven, four_three], [seven] * 4, [four_three] * 2]
    assert openb.static_mix("static-balanced", hosts)[1] == [openb.BALANCED] * 4


def test_a_batch_is_placed_largest_first_and_batches_keep_arrival_order():
    from fractui.sched import Request
    work = [Request("a", cpu_milli=1, gpu=0.5), Request("b", cpu_milli=9),
            Request("c", cpu_milli=2, gpus=1), Request("d", cpu_milli=3, gpu=0.5),
            Request("e", cpu_milli=1, gpu=0.2)]
    names = [[r.name for r in p] for p in openb.passes(work, 3)]
    assert names == [["c", "a", "b"], ["d", "e"]]
    assert [[r.name for r in p] for p in openb.passes(work, 1)] == [[n] for n in "abcde"]


def test_the_allocation_at_a_load_no_batch_stops_at_is_read_on_the_line_between():
    """Batches of arrivals may step over 100 % arrived: the reading there is the straight line
    between the passes on either side, and a load never reached is said, not a crash."""
    assert openb.curve_at([(98.9, 90.0), (101.9, 93.0)], 100) == pytest.approx(91.1)
    assert openb.curve_at([(99.0, 1.0), (99.6, 2.0), (100.4, 4.0), (101.9, 9.0)], 100) == 3.0
    assert openb.curve_at([(80.0, 70.0), (97.0, 90.0)], 100) != openb.curve_at(
        [(80.0, 70.0), (97.0, 90.0)], 100)  # NaN: never reached
    assert openb.pct([95.0, float("nan")]) == "n/a"
    assert openb.pct([95.0, 96.0]) == "95.50 ± 0.71"
