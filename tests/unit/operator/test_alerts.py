"""The chart's alerting rules (charts/selfimprove/files/alerts.yaml): promtool accepts them, their unit tests pass,
every alert is tested firing and not firing, and every operator metric they use exists.

Needs promtool (`apt-get install -y prometheus`); without it the tests fail and say so, they never skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sil_operator.metrics import OperatorMetrics
from sil_stages.core.pushgateway import HELP as EVALUATION_HELP

FILES = Path(__file__).resolve().parents[3] / "charts" / "selfimprove" / "files"
ALERTS = FILES / "alerts.yaml"
ALERTS_TEST = FILES / "alerts_test.yaml"
SEVERITIES = {"critical", "warning", "info"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed; install it with: apt-get install -y prometheus", pytrace=False)
    return subprocess.run([found, *args], cwd=FILES, capture_output=True, text=True, timeout=120)


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def test_promtool_check_rules_accepts_the_alerts() -> None:
    result = promtool("check", "rules", ALERTS.name)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = promtool("test", "rules", ALERTS_TEST.name)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_document_is_a_rules_file_the_chart_can_wrap() -> None:
    document = yaml.safe_load(ALERTS.read_text())

    assert list(document) == ["groups"], "a PrometheusRule's spec is exactly {groups: [...]}"
    names = [group["name"] for group in document["groups"]]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_every_alert_has_a_severity_summary_description_and_runbook(alert: dict[str, Any]) -> None:
    assert alert["alert"].startswith("SelfImprove")
    assert alert["labels"]["severity"] in SEVERITIES
    for annotation in ("summary", "description", "runbook"):
        assert alert["annotations"].get(annotation, "").strip(), f"{alert['alert']} has no {annotation}"


def test_every_alert_is_unit_tested_both_firing_and_not_firing() -> None:
    cases = [case for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"] for case in test["alert_rule_test"]]
    for alert in alerts():
        name = alert["alert"]
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name}: no case where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{name}: no case where it does not fire"
        for case in mine:
            for expected in case["exp_alerts"]:
                assert set(expected["exp_annotations"]) == set(alert["annotations"]), f"{name}: check the texts"


def operator_metric_names() -> set[str]:
    exposition = OperatorMetrics().exposition().decode()
    return {line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line and not line.startswith("#")}


def test_the_operator_and_evaluation_metrics_the_alerts_use_exist() -> None:
    """A metric renamed in metrics.py or in evaluate's series must not leave an alert that silently never fires."""
    used = {name for rule in rules() for name in re.findall(r'(?<!")\bselfimprove_\w+', rule["expr"])}
    assert used, "the alerts use the operator's metrics"
    known = operator_metric_names() | set(EVALUATION_HELP)

    assert used <= known, used - known


def test_collapse_and_reward_hacking_are_alerted_on() -> None:
    names = {alert["alert"] for alert in alerts()}
    assert {"SelfImproveDiversityCollapsing", "SelfImproveRewardHacking"} <= names
