"""The arithmetic behind bench/scale.py's table: percentiles, request counters, audit lines, /proc samples."""

from __future__ import annotations

import json

import pytest

from bench.scale_stats import (
    audited_requests,
    by_verb,
    count_requests,
    delta,
    distribution,
    percentile,
    proc_cpu_seconds,
    proc_rss_bytes,
    request_totals,
    writes,
)


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0, 1.0), (50, 50.0), (90, 90.0), (99, 99.0), (100, 100.0), (99.5, 100.0)],
)
def test_a_percentile_is_the_nearest_rank_value_that_was_measured(q: float, expected: float) -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, q) == expected


def test_the_p99_of_few_values_is_their_maximum() -> None:
    assert percentile([0.1, 0.3, 0.2], 99) == 0.3
    assert percentile([0.1, 0.3, 0.2], 50) == 0.2


def test_a_percentile_of_no_values_is_an_error_not_zero() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    assert distribution([]) == {"n": 0}


def test_a_distribution_names_count_extremes_and_percentiles() -> None:
    row = distribution([1.0, 2.0, 3.0, 4.0])
    assert row == {"n": 4, "min": 1.0, "p50": 2.0, "p90": 4.0, "p99": 4.0, "max": 4.0, "mean": 2.5}


def sample(verb: str, group: str, resource: str, subresource: str, code: str, value: str) -> str:
    labels = (
        f'code="{code}",component="apiserver",dry_run="",group="{group}",resource="{resource}",scope="resource",'
        f'subresource="{subresource}",verb="{verb}",version="v1"'
    )
    return f"apiserver_request_total{{{labels}}} {value}"


EXPOSITION = "\n".join(
    [
        "# HELP apiserver_request_total [STABLE] Counter of apiserver requests",
        "# TYPE apiserver_request_total counter",
        sample("POST", "batch", "jobs", "", "201", "7"),
        sample("POST", "batch", "jobs", "", "409", "1"),
        sample("PATCH", "selfimprove.dev", "selfimprovementloops", "status", "200", "3"),
        sample("LIST", "", "pods", "", "200", "2e+00"),
        'apiserver_request_duration_seconds_count{group="batch",resource="jobs",verb="POST"} 99',
    ]
)


def test_request_totals_sum_every_code_and_scope_per_verb_and_resource() -> None:
    totals = request_totals(EXPOSITION)
    assert totals == {
        ("POST", "batch/jobs"): 8,
        ("PATCH", "selfimprove.dev/selfimprovementloops/status"): 3,
        ("LIST", "/pods"): 2,
    }
    assert by_verb(totals) == {"POST": 8, "PATCH": 3, "LIST": 2}
    assert writes(totals) == 11


def test_a_delta_keeps_only_what_grew_between_scrapes() -> None:
    before = request_totals(EXPOSITION)
    after = request_totals(EXPOSITION.replace("} 7", "} 17"))
    assert delta(before, after) == {("POST", "batch/jobs"): 10}


def test_the_audit_log_counts_one_users_completed_requests() -> None:
    def line(user: str, verb: str, resource: str, stage: str = "ResponseComplete", **ref: str) -> str:
        return json.dumps(
            {
                "stage": stage,
                "verb": verb,
                "user": {"username": user},
                "userAgent": "kopf/1",
                "objectRef": {"resource": resource, **ref},
            }
        )

    lines = [
        line("sil-operator", "create", "jobs", apiGroup="batch"),
        line("sil-operator", "patch", "selfimprovementloops", apiGroup="selfimprove.dev", subresource="status"),
        line("sil-operator", "get", "selfimprovementloops", stage="ResponseStarted", apiGroup="selfimprove.dev"),
        line("admin", "create", "jobs", apiGroup="batch"),
        line("sil-operator", "create", "events"),
        "",
    ]
    counted = count_requests(audited_requests(lines, "sil-operator"))
    assert counted == {
        ("create", "batch/jobs"): 1,
        ("patch", "selfimprove.dev/selfimprovementloops/status"): 1,
        ("create", "/events"): 1,
    }
    assert writes(counted) == 3


def test_rss_and_cpu_come_from_proc_texts() -> None:
    assert proc_rss_bytes("Name:\tpython\nVmRSS:\t  123456 kB\nThreads: 9\n") == 123456 * 1024
    stat = "4242 (python -m (x)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100"
    assert proc_cpu_seconds(stat, 100) == 3.0
    with pytest.raises(ValueError, match="VmRSS"):
        proc_rss_bytes("Name:\tkthreadd\n")
