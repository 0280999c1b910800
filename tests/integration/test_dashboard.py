"""The chart's Grafana dashboard (charts/selfimprove/files/dashboard.json) against real metrics.

One scenario feeds a real Prometheus the way a cluster does: `sil operator` serves its metrics on a port that
Prometheus scrapes, two loops run on kwok's fake GPU nodes (one to completion, one whose select stage keeps
failing), and the evaluate stage's series of two iterations are pushed to the Pushgateway. Then every panel
query, with Grafana's template variables filled in, must return data, and the dashboard's variables must find
the loop. The alert expressions are evaluated on the same metrics as well.

Needs the test control plane and `apt-get install prometheus prometheus-pushgateway`; nothing skips.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sil_stages.core.contract import MetricSample
from sil_stages.core.pushgateway import push
from tests.integration.controlplane import ControlPlane, wait_until
from tests.integration.operator_process import running_operator
from tests.integration.test_operator import apply, kwok_loop, phase
from tests.servers.processes import free_port
from tests.servers.prometheus import PrometheusServer, PrometheusServerError, running_prometheus

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FILES = Path(__file__).resolve().parents[2] / "charts" / "selfimprove" / "files"
DASHBOARD = FILES / "dashboard.json"
ALERTS = FILES / "alerts.yaml"

LOOP, FAILING_LOOP, DATASET = "walk", "breaks", "heldout"
ITERATIONS = (1, 2)
SCORES = {  # iteration → model → (score, self-consistency, distinct answers)
    1: {"candidate": (0.61, 0.66, 2.5), "champion": (0.55, 0.6, 2.75)},
    2: {"candidate": (0.7, 0.72, 2.0), "champion": (0.61, 0.66, 2.5)},
}
GRAFANA = {"__rate_interval": "5m", "__interval": "15s", "__range": "1h"}
"""Grafana's built-in variables as a dashboard over the last hour would fill them (the interval a few scrapes
wide; 5m keeps the scenario's events inside the window however slow the machine)."""


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def targets() -> list[tuple[str, dict[str, Any]]]:
    """(panel title / refId, target) of every query of every panel."""
    return [(f"{p['title']} / {t['refId']}", t) for p in dashboard()["panels"] for t in p.get("targets", [])]


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replaces `$name` and `${name}` the way Grafana does; a variable without a value stays (and fails)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


# -- the dashboard's shape (no servers needed) -----------------------------------------------------------------


def test_the_dashboard_is_a_grafana_dashboard_with_a_prometheus_datasource_variable() -> None:
    board = dashboard()

    assert board["title"] and board["uid"]
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    for name in ("namespace", "loop", "dataset"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
        assert variables[name]["definition"].startswith("label_values(")
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels:
        assert panel["title"], panel["id"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("x", "y", "w", "h")), panel["title"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{panel['title']} / {target['refId']} has no expr"
            assert target["datasource"]["uid"] == "${datasource}"


def test_no_two_panels_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


# -- the scenario ------------------------------------------------------------------------------------------------


def query(prometheus: PrometheusServer, promql: str) -> dict[str, Any]:
    """The `data` of an instant query at now; raises AssertionError with Prometheus' error otherwise."""
    url = f"{prometheus.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = json.loads(error.read() or b"{}")
    assert body.get("status") == "success", f"{promql}: {body.get('error', body)}"
    return body["data"]  # type: ignore[no-any-return]


def scalar(prometheus: PrometheusServer, promql: str) -> float | None:
    result = query(prometheus, promql)["result"]
    return float(result[0]["value"][1]) if result else None


GUARDS = {  # the evaluation layer's series of every iteration: healthy values (no alert fires on them)
    "per_model": {"distinct_1": 0.4, "distinct_2": 0.5, "self_bleu": 0.3, "output_length": 3.0, "token_entropy": 1.2}
    | {"proxy_score": 0.6, "proxy_agreement": 0.9, "proxy_gap": 0.02},
    "per_dataset": {"delta": 0.06, "delta_ci_low": 0.01, "delta_ci_high": 0.11, "p_value": 0.02}
    | {"kl_candidate_champion": 0.3, "output_length_drift": 0.1, "contamination": 0.0, "contaminated_items": 0.0}
    | {"proxy_gap_change": -0.01, "proxy_gap_growth_streak": 0.0},
    "acquire": {"distinct_1": 0.45, "distinct_2": 0.55, "self_bleu": 0.25},
}
REFINEMENT = {  # iteration → (pass@1, pass@8, best-of-N, self-refine rounds 1 and 2), both models alike
    1: (0.5, 0.8, 0.7, (0.58, 0.6)),
    2: (0.6, 0.85, 0.78, (0.71, 0.69)),
}


def refinement_series(grouping: dict[str, str], iteration: int) -> list[MetricSample]:
    """Evaluate's inference-refinement series: pass@k by k, best-of-N, self-refine by round."""
    pass_1, pass_8, best_of_n, rounds = REFINEMENT[iteration]
    series: list[MetricSample] = []
    for model in ("candidate", "champion"):
        labels = {**grouping, "dataset": DATASET, "model": model}
        series += [
            MetricSample(name="selfimprove_eval_pass_at_k", labels={**labels, "k": "1"}, value=pass_1),
            MetricSample(name="selfimprove_eval_pass_at_k", labels={**labels, "k": "8"}, value=pass_8),
            MetricSample(name="selfimprove_eval_best_of_n_score", labels=labels, value=best_of_n),
        ]
        series += [
            MetricSample(name="selfimprove_eval_self_refine_score", labels={**labels, "round": str(r)}, value=v)
            for r, v in enumerate(rounds, start=1)
        ]
    return series


def push_evaluations(prometheus: PrometheusServer, namespace: str) -> None:
    """What the evaluate stage of each iteration pushes (one group per iteration), guards included."""
    for iteration in ITERATIONS:
        grouping = {"namespace": namespace, "loop": LOOP, "iteration": str(iteration)}
        series = [
            MetricSample(
                name=f"selfimprove_eval_{name}", labels={**grouping, "dataset": DATASET, "model": model}, value=v
            )
            for model, values in SCORES[iteration].items()
            for name, v in zip(("score", "self_consistency_score", "distinct_answers"), values, strict=True)
        ]
        for model in ("candidate", "champion", "base"):
            names = GUARDS["per_model"] if model != "base" else {"output_length": 2.9}
            series += [
                MetricSample(
                    name=f"selfimprove_eval_{name}", labels={**grouping, "dataset": DATASET, "model": model}, value=v
                )
                for name, v in names.items()
            ]
        series += [
            MetricSample(name=f"selfimprove_eval_{name}", labels={**grouping, "dataset": DATASET}, value=v)
            for name, v in GUARDS["per_dataset"].items()
        ]
        series.append(MetricSample(name="selfimprove_eval_contamination_max", labels=grouping, value=0.0))
        series += refinement_series(grouping, iteration)
        series += [
            MetricSample(name=f"selfimprove_acquire_{name}", labels=grouping, value=v)
            for name, v in GUARDS["acquire"].items()
        ]
        push(prometheus.pushgateway_url, series, grouping, timeout=10)
        push(prometheus.pushgateway_url, select_series(grouping), grouping, timeout=10, job="selfimprove_select")
        acquire = [
            MetricSample(name=f"selfimprove_acquire_{name}", labels=grouping, value=v)
            for name, v in {
                "prompts_from_file": 3000.0,
                "prompts_from_generator": 0.0,
                "self_instruct_generated": 1000.0,
                "self_instruct_novel": 640.0,
                "self_instruct_duplicates": 350.0,
                "self_instruct_empty": 10.0,
                "temperature": 0.6,
                "temperature_probe_seconds": 4.2,
            }.items()
        ]
        push(prometheus.pushgateway_url, acquire, grouping, timeout=10, job="selfimprove_acquire")


def select_series(grouping: dict[str, str]) -> list[MetricSample]:
    """What the select stage of an iteration pushes: its counts, removals, pass-rate histogram and scores (an
    llm-judge scorer's, so the judge parse rate is there too)."""
    labels = {**grouping, "scorer": "llm-judge"}
    values = {
        "kept": 120.0,
        "train_examples": 240.0,
        "removed_min_score": 300.0,
        "removed_difficulty": 80.0,
        "removed_dedupe": 12.0,
        "removed_top_k": 40.0,
        "removed_no_pair": 0.0,
        "score_mean": 3.1,
        "kept_score_mean": 4.2,
        "mean_pass_rate": 0.45,
        "judge_parse_rate": 0.97,
    }
    series = [MetricSample(name=f"selfimprove_select_{name}", labels=labels, value=v) for name, v in values.items()]
    series += [
        MetricSample(name="selfimprove_select_prompts_by_pass_rate", labels={**labels, "pass_rate": bucket}, value=v)
        for bucket, v in {"0": 20, "0-0.25": 30, "0.25-0.5": 40, "0.5-0.75": 35, "0.75-1": 25, "1": 50}.items()
    ]
    return series


@dataclass
class Scenario:
    prometheus: PrometheusServer
    namespace: str
    variables: dict[str, str]


@pytest.fixture(scope="module")
def scenario(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    work = tmp_path_factory.mktemp("dashboard")
    namespace = control_plane.create_namespace("dashboard")
    port = free_port()
    with contextlib.ExitStack() as stack:
        try:
            prometheus = stack.enter_context(running_prometheus(work / "prometheus", [f"127.0.0.1:{port}"]))
        except PrometheusServerError as error:
            pytest.fail(str(error), pytrace=False)
        operator = stack.enter_context(
            running_operator(control_plane, namespace, work / "operator.log", {"SIL_METRICS_PORT": str(port)})
        )
        # The counters' zeroes must be scraped before anything happens, or increase() misses the first events.
        wait_until(
            lambda: scalar(prometheus, "count(selfimprove_jobs_created_total)") == 4,
            60,
            f"Prometheus to scrape the operator's metrics\n{operator.log()}\n{prometheus.logs()}",
        )
        apply(control_plane, kwok_loop(namespace, LOOP, work / "store"))
        failing = kwok_loop(namespace, FAILING_LOOP, work / "store-failing")
        failing["spec"]["runtime"]["stages"] = {
            "select": {"podAnnotations": {"kwok.selfimprove.dev/exit-code": "3", "kwok.selfimprove.dev/run-ms": "100"}}
        }
        apply(control_plane, failing)
        wait_until(
            lambda: (
                phase(control_plane, namespace, LOOP) == "Succeeded"
                and phase(control_plane, namespace, FAILING_LOOP) == "Failed"
            ),
            240,
            f"{LOOP} to succeed and {FAILING_LOOP} to fail\n{operator.log()}",
        )
        push_evaluations(prometheus, namespace)
        expected = {
            'sum(selfimprove_loops{phase="Succeeded"})': 1.0,
            'sum(selfimprove_loops{phase="Failed"})': 1.0,
            "sum(selfimprove_iterations_started_total)": 3.0,  # walk: 2, breaks: 1
            f'count(selfimprove_eval_score{{namespace="{namespace}"}})': 4.0,
            # Each iteration's select and acquire groups are pushed after its evaluate group: wait for the last.
            f'count(selfimprove_select_kept{{namespace="{namespace}"}})': 2.0,
            f'count(selfimprove_acquire_prompts_from_file{{namespace="{namespace}"}})': 2.0,
        }
        wait_until(
            lambda: all(scalar(prometheus, q) == v for q, v in expected.items()),
            60,
            f"Prometheus to see the final state: { {q: scalar(prometheus, q) for q in expected} }",
        )
        yield Scenario(prometheus, namespace, {"namespace": namespace, "loop": LOOP, "dataset": DATASET, **GRAFANA})
    control_plane.delete_namespace(namespace)


def test_every_panel_query_returns_data(scenario: Scenario) -> None:
    empty: list[str] = []
    for name, target in targets():
        promql = substitute(target["expr"], scenario.variables)
        assert "$" not in promql, f"{name}: a variable is left in {promql}"
        data = query(scenario.prometheus, promql)
        assert data["resultType"] == "vector", name
        values = [float(sample["value"][1]) for sample in data["result"]]
        if not any(math.isfinite(v) for v in values):
            empty.append(f"{name}: {promql} -> {data['result']}")

    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_the_template_variables_find_the_loop(scenario: Scenario) -> None:
    """`label_values(selector, label)` as Grafana asks Prometheus for it: the label values API with match[]."""
    found: dict[str, list[str]] = {}
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
        assert match, variable["definition"]
        selector = substitute(match.group(1), scenario.variables)
        params = urllib.parse.urlencode({"match[]": selector})
        with urllib.request.urlopen(f"{scenario.prometheus.url}/api/v1/label/{match.group(2)}/values?{params}") as r:
            found[variable["name"]] = json.loads(r.read())["data"]

    assert scenario.namespace in found["namespace"]
    assert found["loop"] == [LOOP]
    assert found["dataset"] == [DATASET]


def test_the_per_iteration_panels_show_candidate_and_champion_of_every_iteration(scenario: Scenario) -> None:
    scores = re.compile(r"selfimprove_eval_(score|self_consistency_score|distinct_answers)\{")
    per_iteration = [(n, t) for n, t in targets() if "by (iteration)" in t["expr"] and scores.search(t["expr"])]
    assert len(per_iteration) == 7, "score, self-consistency and distinct answers, candidate and champion; greedy again"
    for name, target in per_iteration:
        result = query(scenario.prometheus, substitute(target["expr"], scenario.variables))["result"]
        by_iteration = {int(s["metric"]["iteration"]): float(s["value"][1]) for s in result}
        model = "candidate" if 'model="candidate"' in target["expr"] else "champion"
        metric = re.search(r"selfimprove_eval_(\w+)\{", target["expr"])
        assert metric, name
        column = ("score", "self_consistency_score", "distinct_answers").index(metric.group(1))
        assert by_iteration == {i: SCORES[i][model][column] for i in ITERATIONS}, name


def test_the_evaluation_layer_panels_show_the_interval_and_guards_of_every_iteration(scenario: Scenario) -> None:
    guard_targets = [
        (n, t) for n, t in targets() if re.search(r"selfimprove_(eval_(delta|proxy|kl)|acquire)", t["expr"])
    ]
    assert len(guard_targets) >= 7, [n for n, _ in guard_targets]
    for name, target in guard_targets:
        result = query(scenario.prometheus, substitute(target["expr"], scenario.variables))["result"]
        assert {int(s["metric"]["iteration"]) for s in result} == set(ITERATIONS), name


def test_the_refinement_panel_shows_pass_at_1_the_largest_k_best_of_n_and_the_best_self_refine_round(
    scenario: Scenario,
) -> None:
    panel = next(p for p in dashboard()["panels"] if p["title"].startswith("Inference refinement"))
    expected = {
        "greedy": {i: SCORES[i]["candidate"][0] for i in ITERATIONS},
        "pass@1": {i: REFINEMENT[i][0] for i in ITERATIONS},
        "pass@k, largest k": {i: REFINEMENT[i][1] for i in ITERATIONS},
        "best-of-N": {i: REFINEMENT[i][2] for i in ITERATIONS},
        "self-refine, best round": {i: max(REFINEMENT[i][3]) for i in ITERATIONS},
    }
    shown: dict[str, dict[int, float]] = {}
    for target in panel["targets"]:
        result = query(scenario.prometheus, substitute(target["expr"], scenario.variables))["result"]
        shown[target["legendFormat"]] = {int(s["metric"]["iteration"]): float(s["value"][1]) for s in result}
    assert shown == expected


def test_the_alert_expressions_run_on_the_live_metrics_and_the_failed_loop_alerts(scenario: Scenario) -> None:
    rules = {r["alert"]: r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    firing = {name for name, expr in rules.items() if query(scenario.prometheus, expr)["result"]}

    assert firing == {"SelfImproveLoopFailed"}, "one loop failed; nothing else is wrong"
