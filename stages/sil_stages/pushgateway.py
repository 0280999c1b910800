"""Pushes evaluate's series to a Prometheus Pushgateway, where the operator's gates query them.

A batch Job lives too short to be scraped, so it pushes: one PUT per evaluate run, grouped by namespace, loop
and iteration, so that a retried Job replaces its own group and never touches another iteration's numbers.
Plain `urllib` and the text exposition format keep prometheus-client out of the stage image.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable, Mapping
from urllib.error import URLError
from urllib.parse import quote

from sil_stages.contract import MetricSample

JOB = "selfimprove_eval"

HELP = {
    "selfimprove_eval_score": "Held-out accuracy with greedy decoding, by dataset and model (candidate|champion).",
    "selfimprove_eval_self_consistency_score": "Held-out accuracy of the majority answer of k samples.",
    "selfimprove_eval_distinct_answers": "Mean number of distinct answers among the k samples of a prompt.",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


DEFAULT_HELP = "Evaluation metric of a self-improvement loop."


def exposition(series: Iterable[MetricSample], default_help: str = DEFAULT_HELP) -> str:
    """The Prometheus text format of `series`: every metric a gauge, samples grouped under one TYPE line."""
    by_name: dict[str, list[MetricSample]] = {}
    for sample in series:
        by_name.setdefault(sample.name, []).append(sample)
    lines: list[str] = []
    for name, samples in by_name.items():
        lines.append(f"# HELP {name} {HELP.get(name, default_help)}")
        lines.append(f"# TYPE {name} gauge")
        for sample in samples:
            labels = ",".join(f'{key}="{_escape(value)}"' for key, value in sorted(sample.labels.items()))
            lines.append(f"{name}{{{labels}}} {sample.value!r}")
    return "\n".join(lines) + "\n"


def group_url(address: str, grouping: Mapping[str, str], job: str = JOB) -> str:
    """`<address>/metrics/job/<job>/<key>/<value>...`, each path part URL-escaped."""
    path = "".join(f"/{quote(key, safe='')}/{quote(value, safe='')}" for key, value in grouping.items())
    return f"{address.rstrip('/')}/metrics/job/{quote(job, safe='')}{path}"


def push(
    address: str,
    series: Iterable[MetricSample],
    grouping: Mapping[str, str],
    timeout: float = 30.0,
    job: str = JOB,
    default_help: str = DEFAULT_HELP,
) -> None:
    """PUTs the series (replacing the group's previous push); raises `ConnectionError` when that fails.

    Each stage pushes under its own `job` (a PUT replaces the whole group, so evaluate and optimize must not share
    one)."""
    url = group_url(address, grouping, job)
    request = urllib.request.Request(
        url,
        data=exposition(series, default_help).encode("utf-8"),
        method="PUT",
        headers={"Content-Type": "text/plain; version=0.0.4"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except (URLError, OSError) as error:
        raise ConnectionError(f"pushgateway: cannot push to {url} ({error}); is the Pushgateway reachable?") from error
