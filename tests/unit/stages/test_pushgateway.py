"""Evaluate's push to the Pushgateway: the format Prometheus parses and the group a retry replaces."""

from __future__ import annotations

import pytest

from sil_stages.core.contract import MetricSample
from sil_stages.core.pushgateway import HELP, exposition, group_url, push

SAMPLE = MetricSample(
    name="selfimprove_eval_score",
    labels={"loop": "arith", "model": "candidate", "dataset": 'held"out'},
    value=0.5,
)


def test_exposition_is_prometheus_text_with_help_and_one_type_line_per_metric() -> None:
    other = SAMPLE.model_copy(update={"labels": {**SAMPLE.labels, "model": "champion"}, "value": 0.25})
    assert exposition([SAMPLE, other]) == (
        "# HELP selfimprove_eval_score Held-out accuracy with greedy decoding, by dataset and model "
        "(candidate|champion).\n"
        "# TYPE selfimprove_eval_score gauge\n"
        'selfimprove_eval_score{dataset="held\\"out",loop="arith",model="candidate"} 0.5\n'
        'selfimprove_eval_score{dataset="held\\"out",loop="arith",model="champion"} 0.25\n'
    )


def test_group_url_groups_by_namespace_loop_and_iteration() -> None:
    """One group per iteration: a retried evaluate replaces its own numbers and nobody else's."""
    url = group_url("http://pg:9091/", {"namespace": "ml", "loop": "arith", "iteration": "3"})
    assert url == "http://pg:9091/metrics/job/selfimprove_eval/namespace/ml/loop/arith/iteration/3"


def test_push_puts_the_series_to_the_group(pushgateway: tuple[str, list[tuple[str, str, str]]]) -> None:
    address, received = pushgateway
    push(address, [SAMPLE], {"namespace": "ml", "loop": "arith", "iteration": "1"})
    assert received == [
        ("PUT", "/metrics/job/selfimprove_eval/namespace/ml/loop/arith/iteration/1", exposition([SAMPLE]))
    ]


def test_unreachable_pushgateway_is_a_connection_error_naming_the_url() -> None:
    with pytest.raises(ConnectionError, match=r"cannot push to http://127\.0\.0\.1:9/metrics"):
        push("http://127.0.0.1:9", [SAMPLE], {"loop": "arith"}, timeout=2)


def test_exposition_passes_promtool() -> None:
    """`promtool check metrics` has nothing to say about what evaluate pushes (names, HELP, TYPE)."""
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (make test does)"
    series = [SAMPLE.model_copy(update={"name": name}) for name in sorted(HELP)]
    checked = subprocess.run([promtool, "check", "metrics"], input=exposition(series), capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""


def test_every_series_evaluate_pushes_has_its_own_help_text() -> None:
    """A user reading /metrics or Grafana's tooltip learns what each guard measures, not a generic line."""
    from sil_stages.evaluate.series import ACQUIRE_PREFIX, COMPARISON_SERIES, METRIC_PREFIX, SERIES

    per_dataset = (*COMPARISON_SERIES, "kl_candidate_champion", "output_length_drift", "contamination")
    names = [f"{METRIC_PREFIX}{name}" for name in (*SERIES, *per_dataset, "contaminated_items", "contamination_max")]
    names += [f"{METRIC_PREFIX}{name}" for name in ("pass_at_k", "self_refine_score")]
    names += [f"{ACQUIRE_PREFIX}{name}" for name in ("distinct_1", "distinct_2", "self_bleu")]
    assert [name for name in names if name not in HELP] == []
