"""The one judgement of a GPU's health (fractui.sched.health.unhealthy): each threshold of
docs/decisions.md on its own, several at once, and a GPU whose agent reports no health."""

from __future__ import annotations

from fractui.sched.health import NEAR_SLOWDOWN_C, XID_RECENT_S, unhealthy
from fractui.tui.sample import health

NOW = 1_000_000.0


def gpu(**changes) -> dict:
    record = health("A100-80GB", 40)
    record.update(changes)
    return {"index": 0, "name": "NVIDIA A100-SXM4-80GB", "health": record}


def test_a_healthy_busy_gpu_is_not_unhealthy():
    assert unhealthy(gpu(), NOW) is None
    assert unhealthy(gpu(throttle=["sw_power_cap", "gpu_idle", "applications_clocks"]),
                     NOW) is None  # a power cap reached in normal work is no fault


def test_an_agent_without_health_reports_is_not_judged():
    assert unhealthy({"index": 0, "name": "x"}, NOW) is None


def test_any_uncorrected_ecc_error_is_unhealthy_corrected_ones_are_not():
    assert unhealthy(gpu(ecc_volatile={"corrected": 120, "uncorrected": 0}), NOW) is None
    assert unhealthy(gpu(ecc_volatile={"corrected": 0, "uncorrected": 1}), NOW) == \
        "1 uncorrected ECC error"
    assert unhealthy(gpu(ecc_volatile={"corrected": 0, "uncorrected": 3}), NOW) == \
        "3 uncorrected ECC errors"


def test_a_critical_xid_counts_for_its_window_only():
    old = {"time": NOW - XID_RECENT_S - 1, "xid": 13, "gi_id": None, "ci_id": None}
    assert unhealthy(gpu(xid=[old]), NOW) is None
    fresh = [old, {"time": NOW - 30, "xid": 79, "gi_id": None, "ci_id": None}]
    assert unhealthy(gpu(xid=fresh), NOW) == "XID 79 30 s ago"
    fresh.append({"time": NOW - 600, "xid": 48, "gi_id": 1, "ci_id": 0})
    assert unhealthy(gpu(xid=fresh), NOW) == "XID 48 10 min ago (2 in 15 min)"


def test_thermal_and_power_brake_throttling_is_unhealthy():
    assert unhealthy(gpu(throttle=["hw_power_brake_slowdown"]), NOW) == \
        "clocks held down: power brake"
    assert unhealthy(gpu(throttle=["hw_thermal_slowdown", "hw_slowdown"]), NOW) == \
        "clocks held down: thermal slowdown (hardware), hardware slowdown"


def test_near_the_slowdown_temperature_is_unhealthy():
    slowdown = gpu()["health"]["slowdown_c"]
    assert unhealthy(gpu(temperature_c=slowdown - NEAR_SLOWDOWN_C - 1), NOW) is None
    assert unhealthy(gpu(temperature_c=slowdown - NEAR_SLOWDOWN_C), NOW) == \
        "%d °C, slows down at %d °C" % (slowdown - NEAR_SLOWDOWN_C, slowdown)
    assert unhealthy(gpu(temperature_c=None), NOW) is None  # not measured: not judged


def test_a_failed_health_read_is_unhealthy_and_every_reason_is_given_in_order():
    why = unhealthy(gpu(ecc_volatile={"corrected": 0, "uncorrected": 2}, temperature_c=None,
                        xid=[{"time": NOW - 5, "xid": 79, "gi_id": None, "ci_id": None}],
                        throttle=["sw_thermal_slowdown"],
                        errors=["nvmlDeviceGetTemperature failed: GPU is lost "
                                "(NVML_ERROR_GPU_IS_LOST)"]), NOW)
    assert why == ("2 uncorrected ECC errors; XID 79 5 s ago; clocks held down: thermal "
                   "slowdown; health unreadable: nvmlDeviceGetTemperature failed: GPU is lost "
                   "(NVML_ERROR_GPU_IS_LOST)")
