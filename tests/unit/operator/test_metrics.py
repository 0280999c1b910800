"""The operator's own metrics: what Prometheus accepts (promtool), and values that move with what happens."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Callable

import pytest

from sil_operator.metrics import STAGE_DURATION_BUCKETS, OperatorMetrics


def value(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def promtool_check(exposition: bytes) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed; install it with: apt-get install -y prometheus", pytrace=False)
    return subprocess.run(
        [promtool, "check", "metrics"], input=exposition.decode(), capture_output=True, text=True, timeout=60
    )


def busy_metrics() -> OperatorMetrics:
    metrics = OperatorMetrics()
    metrics.set_loop_phases({"Running": 2, "Succeeded": 1})
    metrics.iteration_started()
    metrics.decided("Promoted")
    metrics.stage_finished("optimize", 5400.0)
    metrics.gate_measured("Successful")
    metrics.reconcile_failed()
    metrics.job_created("acquire")
    return metrics


@pytest.mark.parametrize("make", [OperatorMetrics, busy_metrics], ids=["fresh", "busy"])
def test_promtool_finds_nothing_to_complain_about(make: Callable[[], OperatorMetrics]) -> None:
    checked = promtool_check(make().exposition())
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")


def test_every_name_is_selfimprove_and_counters_end_in_total() -> None:
    metrics = busy_metrics()
    families = list(metrics.registry.collect())
    assert {f.name for f in families} == {
        "selfimprove_loops",
        "selfimprove_iterations_started",
        "selfimprove_promotion_decisions",
        "selfimprove_stage_duration_seconds",
        "selfimprove_gate_measurements",
        "selfimprove_reconcile_errors",
        "selfimprove_jobs_created",
        "selfimprove_operator_leader",
    }
    text = metrics.exposition().decode()
    for family in families:
        if family.type == "counter":
            assert f"# TYPE {family.name}_total counter" in text


def test_known_label_values_exist_at_zero_before_anything_happens() -> None:
    """So that rate() sees the first promotion, and dashboards show every phase from the start."""
    metrics = OperatorMetrics()
    assert value(metrics, "selfimprove_loops", phase="Running") == 0
    assert value(metrics, "selfimprove_promotion_decisions_total", decision="Rejected") == 0
    assert value(metrics, "selfimprove_gate_measurements_total", phase="Error") == 0
    assert value(metrics, "selfimprove_jobs_created_total", stage="evaluate") == 0
    assert value(metrics, "selfimprove_stage_duration_seconds_count", stage="select") == 0


def test_loop_phases_are_set_as_a_whole_and_a_phase_that_empties_reads_zero() -> None:
    metrics = OperatorMetrics()
    metrics.set_loop_phases({"Running": 3, "Pending": 1})
    assert value(metrics, "selfimprove_loops", phase="Running") == 3
    assert value(metrics, "selfimprove_loops", phase="Pending") == 1

    metrics.set_loop_phases({"Running": 2, "Succeeded": 2})
    assert value(metrics, "selfimprove_loops", phase="Running") == 2
    assert value(metrics, "selfimprove_loops", phase="Succeeded") == 2
    assert value(metrics, "selfimprove_loops", phase="Pending") == 0


def test_counters_count_what_happened() -> None:
    metrics = OperatorMetrics()
    for _ in range(3):
        metrics.iteration_started()
    metrics.decided("Promoted")
    metrics.decided("Rejected")
    metrics.decided("Rejected")
    metrics.gate_measured("Successful")
    metrics.gate_measured("Error")
    metrics.gate_measured("Error")
    metrics.reconcile_failed()
    metrics.job_created("acquire")
    metrics.job_created("acquire")
    metrics.job_created("optimize")

    assert value(metrics, "selfimprove_iterations_started_total") == 3
    assert value(metrics, "selfimprove_promotion_decisions_total", decision="Promoted") == 1
    assert value(metrics, "selfimprove_promotion_decisions_total", decision="Rejected") == 2
    assert value(metrics, "selfimprove_gate_measurements_total", phase="Successful") == 1
    assert value(metrics, "selfimprove_gate_measurements_total", phase="Error") == 2
    assert value(metrics, "selfimprove_reconcile_errors_total") == 1
    assert value(metrics, "selfimprove_jobs_created_total", stage="acquire") == 2
    assert value(metrics, "selfimprove_jobs_created_total", stage="optimize") == 1


def test_stage_durations_fall_into_buckets_from_seconds_to_hours() -> None:
    metrics = OperatorMetrics()
    metrics.stage_finished("select", 3.0)
    metrics.stage_finished("optimize", 2.5 * 3600)

    def bucket(stage: str, le: str) -> float | None:
        return value(metrics, "selfimprove_stage_duration_seconds_bucket", stage=stage, le=le)

    assert bucket("select", "1.0") == 0
    assert bucket("select", "5.0") == 1
    assert bucket("optimize", "7200.0") == 0
    assert bucket("optimize", "14400.0") == 1
    assert value(metrics, "selfimprove_stage_duration_seconds_sum", stage="optimize") == 9000
    assert STAGE_DURATION_BUCKETS[0] <= 1 and STAGE_DURATION_BUCKETS[-1] >= 86400


def test_two_instances_do_not_share_values() -> None:
    """Each has its own registry: no clash with the process-wide default registry, independent tests."""
    first, second = OperatorMetrics(), OperatorMetrics()
    first.iteration_started()
    assert value(second, "selfimprove_iterations_started_total") == 0


def test_serve_answers_a_scrape_on_loopback_with_the_exposition() -> None:
    metrics = busy_metrics()
    server, thread = metrics.serve(0)
    try:
        address, port = server.server_address[:2]
        assert address == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            scraped = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert "selfimprove_iterations_started_total 1.0" in scraped
    assert 'selfimprove_jobs_created_total{stage="acquire"} 1.0' in scraped


def test_the_leader_gauge_says_whether_this_replica_acts() -> None:
    metrics = OperatorMetrics()
    metrics.leading(False)
    assert value(metrics, "selfimprove_operator_leader") == 0
    metrics.leading(True)
    assert value(metrics, "selfimprove_operator_leader") == 1
