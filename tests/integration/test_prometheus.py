"""Prometheus gates against a real Prometheus: the evaluate stage's push, a scrape, the gate's query, its phase.

The series go the way they go on a cluster: `sil_stages.core.pushgateway.push` (what the evaluate stage calls) puts
them on a Pushgateway, Prometheus scrapes it every second, and `PrometheusProvider` answers the gate query that
`resolve_gate` renders from the README's gate. Auth, TLS and timeouts, which Prometheus 2.42 cannot exercise
(it has no auth of its own), are checked against a canned stand-in of its query API.

Needs `apt-get install prometheus prometheus-pushgateway` (and openssl); a missing binary fails the test and
names the package.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sil_operator.api.spec import GateSpec
from sil_operator.api.status import GatePhase, GateStatus, Measurement
from sil_operator.gates.analysis import QueryContext, assess, record, resolve_gate
from sil_operator.gates.measure import measure
from sil_operator.gates.prometheus import PrometheusProvider
from sil_operator.gates.providers import QueryError, Sample
from sil_operator.metrics import OperatorMetrics
from sil_stages.core.contract import MetricSample
from sil_stages.core.pushgateway import push
from tests.servers.processes import free_port
from tests.servers.prometheus import (
    PrometheusServer,
    PrometheusServerError,
    canned_query_api,
    running_prometheus,
    self_signed_certificate,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LOOP, NAMESPACE = "arith", "ml"
GATE_QUERY = 'selfimprove_eval_score{loop="{{loop}}",iteration="{{iteration}}",dataset="heldout",model="{{model}}"}'
"""The README's gate query."""
SCRAPE_WAIT_SECONDS = 30.0


def gate(**fields: Any) -> GateSpec:
    spec: dict[str, Any] = {
        "name": "heldout-improves",
        "query": GATE_QUERY,
        "successCondition": "result >= champion + 0.01",
    }
    spec.update(fields)
    return GateSpec.model_validate(spec)


def now() -> datetime:
    return datetime.now(UTC)


def measure_gate(spec: GateSpec, provider: PrometheusProvider, iteration: int) -> Measurement:
    return measure(spec, resolve_gate(spec, QueryContext(LOOP, NAMESPACE, iteration)), provider, now())


def push_scores(server: PrometheusServer, iteration: int, scores: dict[tuple[str, str], float]) -> None:
    """Pushes selfimprove_eval_score for (dataset, model) pairs, as the evaluate stage of `iteration` does."""
    grouping = {"namespace": NAMESPACE, "loop": LOOP, "iteration": str(iteration)}
    series = [
        MetricSample(name="selfimprove_eval_score", labels={**grouping, "dataset": dataset, "model": model}, value=v)
        for (dataset, model), v in scores.items()
    ]
    push(server.pushgateway_url, series, grouping, timeout=10)


def wait_for(provider: PrometheusProvider, promql: str, expected: int = 1) -> list[Sample]:
    """Polls until the query returns `expected` series (Prometheus scrapes every second)."""
    deadline = time.monotonic() + SCRAPE_WAIT_SECONDS
    samples: list[Sample] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(QueryError):
            samples = provider.query(promql)
            if len(samples) == expected:
                return samples
        time.sleep(0.2)
    raise AssertionError(f"{promql} returned {samples} after {SCRAPE_WAIT_SECONDS:g} s, wanted {expected} series")


def wait_for_iteration(server: PrometheusServer, iteration: int, series: int = 2) -> None:
    wait_for(PrometheusProvider(server.url), f'selfimprove_eval_score{{loop="{LOOP}",iteration="{iteration}"}}', series)


@contextlib.contextmanager
def started_prometheus(tmp_dir: Path, scrape_targets: tuple[str, ...] = ()) -> Iterator[PrometheusServer]:
    """`running_prometheus`, failing (never skipping) with the apt package to install when a binary is missing."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(running_prometheus(tmp_dir, scrape_targets))
        except PrometheusServerError as error:
            pytest.fail(str(error), pytrace=False)
        yield server


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """One Prometheus + Pushgateway for the tests that leave it running; each uses iterations of its own."""
    with started_prometheus(tmp_path_factory.mktemp("prometheus")) as server:
        yield server


# -- gates over pushed series ----------------------------------------------------------------------------------


def test_a_candidate_that_beats_the_champion_passes_the_gate(prometheus: PrometheusServer) -> None:
    push_scores(prometheus, 3, {("heldout", "candidate"): 0.82, ("heldout", "champion"): 0.7})
    wait_for_iteration(prometheus, 3)

    taken = measure_gate(gate(), PrometheusProvider(prometheus.url), 3)

    assert (taken.phase, taken.value, taken.champion) == (GatePhase.SUCCESSFUL, 0.82, 0.7)
    assert taken.query == 'selfimprove_eval_score{loop="arith",iteration="3",dataset="heldout",model="candidate"}'


def test_a_candidate_that_does_not_beat_the_champion_fails_the_gate(prometheus: PrometheusServer) -> None:
    push_scores(prometheus, 4, {("heldout", "candidate"): 0.7, ("heldout", "champion"): 0.705})
    wait_for_iteration(prometheus, 4)

    taken = measure_gate(gate(), PrometheusProvider(prometheus.url), 4)

    assert (taken.phase, taken.value, taken.champion) == (GatePhase.FAILED, 0.7, 0.705)


def test_an_iteration_nobody_pushed_is_inconclusive(prometheus: PrometheusServer) -> None:
    taken = measure_gate(gate(), PrometheusProvider(prometheus.url), 99)

    assert taken.phase is GatePhase.INCONCLUSIVE
    assert taken.message is not None and "returned no data" in taken.message


def test_a_gate_can_use_full_promql_not_only_selectors(prometheus: PrometheusServer) -> None:
    """What the manifest provider cannot do: aggregate, here the mean score over two datasets."""
    push_scores(
        prometheus,
        5,
        {
            ("heldout", "candidate"): 0.8,
            ("heldout", "champion"): 0.6,
            ("hard", "candidate"): 0.4,
            ("hard", "champion"): 0.4,
        },
    )
    wait_for_iteration(prometheus, 5, series=4)
    mean = gate(query='avg(selfimprove_eval_score{loop="{{loop}}",iteration="{{iteration}}",model="{{model}}"})')

    taken = measure_gate(mean, PrometheusProvider(prometheus.url), 5)

    assert taken.phase is GatePhase.SUCCESSFUL
    assert taken.value == pytest.approx(0.6)
    assert taken.champion == pytest.approx(0.5)


def test_a_scalar_answer_is_one_value_without_labels(prometheus: PrometheusServer) -> None:
    assert PrometheusProvider(prometheus.url).query("scalar(vector(0.5)) * 2") == [Sample({}, 1.0)]


def test_bad_promql_is_an_error_measurement_with_prometheus_s_own_message(prometheus: PrometheusServer) -> None:
    unclosed = gate(query='selfimprove_eval_score{loop="{{loop}}",model="{{model}}"', successCondition="true")

    taken = measure_gate(unclosed, PrometheusProvider(prometheus.url), 3)

    assert taken.phase is GatePhase.ERROR
    assert taken.message is not None
    assert "bad_data" in taken.message and "parse error" in taken.message
    assert prometheus.url in taken.message


def test_a_query_returning_a_range_vector_is_an_error(prometheus: PrometheusServer) -> None:
    ranged = gate(query='selfimprove_eval_score{loop="{{loop}}",model="{{model}}"}[1m]', successCondition="true")

    taken = measure_gate(ranged, PrometheusProvider(prometheus.url), 3)

    assert taken.phase is GatePhase.ERROR
    assert taken.message is not None and "instant vector or a scalar" in taken.message


def test_a_gate_rides_out_a_prometheus_outage_within_its_error_limit(tmp_path: Path) -> None:
    """Prometheus goes away mid-gate: errors, the gate keeps Running; it comes back: the gate succeeds."""
    spec = gate(count=1, consecutiveErrorLimit=2)
    with started_prometheus(tmp_path / "prometheus") as server:
        provider = PrometheusProvider(server.url, timeout=5)
        push_scores(server, 3, {("heldout", "candidate"): 0.82, ("heldout", "champion"): 0.7})
        wait_for_iteration(server, 3)
        status = GateStatus(name=spec.name)

        server.stop()
        for _ in range(2):
            taken = measure_gate(spec, provider, 3)
            assert taken.phase is GatePhase.ERROR
            assert taken.message is not None and "cannot reach" in taken.message and server.url in taken.message
            status = record(status, taken)
            assert assess(spec, status) is GatePhase.RUNNING

        server.start()
        wait_for_iteration(server, 3)
        status = record(status, measure_gate(spec, provider, 3))

        assert assess(spec, status) is GatePhase.SUCCESSFUL
        assert (status.error, status.consecutive_error, status.successful) == (2, 0, 1)


def test_a_longer_outage_than_the_error_limit_errors_the_gate(tmp_path: Path) -> None:
    spec = gate(consecutiveErrorLimit=1)
    with started_prometheus(tmp_path / "prometheus") as server:
        provider = PrometheusProvider(server.url, timeout=5)
        server.stop()
        status = GateStatus(name=spec.name)
        for _ in range(2):
            status = record(status, measure_gate(spec, provider, 3))

    assert assess(spec, status) is GatePhase.ERROR


# -- the operator's own metrics, scraped --------------------------------------------------------------------


def test_prometheus_scrapes_the_operator_s_metrics(tmp_path: Path) -> None:
    metrics = OperatorMetrics()
    port = free_port()
    http_server, thread = metrics.serve(port)
    try:
        with started_prometheus(tmp_path / "prometheus", scrape_targets=(f"127.0.0.1:{port}",)) as server:
            provider = PrometheusProvider(server.url)
            metrics.decided("Promoted")
            metrics.job_created("optimize")

            promoted = 'selfimprove_promotion_decisions_total{decision="Promoted"} == 1'
            (sample,) = wait_for(provider, promoted)
            assert sample.labels["job"] == "targets"
            wait_for(provider, 'selfimprove_jobs_created_total{stage="optimize"} == 1')
    finally:
        http_server.shutdown()
        http_server.server_close()
        thread.join(10)


def test_a_new_pushgateway_starts_empty_whatever_an_earlier_one_was_pushed(tmp_path: Path) -> None:
    """Debian's Pushgateway persists its groups to one system-wide file by default; a test's groups must not
    reach another test's alerts."""
    grouping = {"namespace": NAMESPACE, "loop": LOOP, "iteration": "1"}
    sample = MetricSample(name="selfimprove_eval_score", labels={**grouping, "dataset": "heldout"}, value=0.5)
    for run in ("first", "second"):
        with running_prometheus(tmp_path / run) as server:
            with urllib.request.urlopen(f"{server.pushgateway_url}/api/v1/metrics", timeout=10) as response:
                groups = json.loads(response.read())["data"]
            assert groups == [], f"the {run} Pushgateway starts with no groups"
            push(server.pushgateway_url, [sample], grouping, timeout=10)


# -- what Prometheus 2.42 cannot exercise: auth, TLS, slowness, absence ------------------------------------------

CANNED = {
    "status": "success",
    "data": {"resultType": "vector", "result": [{"metric": {"model": "candidate"}, "value": [1700000000, "0.9"]}]},
}


def test_the_bearer_token_is_sent_in_the_authorization_header() -> None:
    with canned_query_api(CANNED, token="s3cret") as api:
        samples = PrometheusProvider(api.url, bearer_token="s3cret").query("up")

    assert samples == [Sample({"model": "candidate"}, 0.9)]
    assert api.requests[0]["authorization"] == "Bearer s3cret"
    assert api.requests[0]["path"].startswith("/api/v1/query?query=up&")


@pytest.mark.parametrize("token", [None, "wrong"], ids=["no-token", "wrong-token"])
def test_a_refused_token_is_a_query_error_that_points_at_the_token(token: str | None) -> None:
    with canned_query_api(CANNED, token="s3cret") as api, pytest.raises(QueryError) as raised:
        PrometheusProvider(api.url, bearer_token=token).query("up")

    message = str(raised.value)
    assert "HTTP 401" in message and "bearerTokenSecret" in message and api.url in message


def test_tls_is_verified_against_the_given_ca_file(tmp_path: Path) -> None:
    certificate, key = self_signed_certificate(tmp_path)
    with canned_query_api(CANNED, tls=(certificate, key)) as api:
        assert api.url.startswith("https://")
        assert PrometheusProvider(api.url, ca_file=str(certificate)).query("up") == [
            Sample({"model": "candidate"}, 0.9)
        ]


def test_an_unknown_certificate_is_refused_unless_verification_is_skipped(tmp_path: Path) -> None:
    with canned_query_api(CANNED, tls=self_signed_certificate(tmp_path)) as api:
        with pytest.raises(QueryError, match="CERTIFICATE_VERIFY_FAILED"):
            PrometheusProvider(api.url).query("up")
        assert PrometheusProvider(api.url, insecure_skip_verify=True).query("up") == [
            Sample({"model": "candidate"}, 0.9)
        ]


def test_a_slow_answer_is_a_query_error_after_the_timeout() -> None:
    with canned_query_api(CANNED, delay_seconds=3) as api, pytest.raises(QueryError, match=r"no answer within 0\.5 s"):
        PrometheusProvider(api.url, timeout=0.5).query("up")


def test_nobody_listening_is_a_query_error_naming_the_address() -> None:
    address = f"http://127.0.0.1:{free_port()}"

    with pytest.raises(QueryError, match=rf"Prometheus at {address}.*cannot reach it.*Connection refused"):
        PrometheusProvider(address).query("up")
