"""PrometheusProvider without a server: what an `/api/v1/query` answer means for a gate (canned JSON)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from sil_operator.gates.prometheus import PrometheusProvider, parse_response
from sil_operator.gates.providers import QueryError, Sample

ADDRESS = "http://prometheus.monitoring:9090"
QUERY = 'selfimprove_eval_score{loop="arith",iteration="3",dataset="heldout",model="candidate"}'


def answer(document: Any) -> list[Sample]:
    return parse_response(json.dumps(document).encode(), QUERY, ADDRESS)


def success(result_type: str, result: Any) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": result_type, "result": result}}


def test_an_instant_vector_is_one_sample_per_series_with_its_labels() -> None:
    samples = answer(
        success(
            "vector",
            [
                {"metric": {"__name__": "selfimprove_eval_score", "model": "candidate"}, "value": [1700000000, "0.82"]},
                {"metric": {"__name__": "selfimprove_eval_score", "model": "champion"}, "value": [1700000000, "0.7"]},
            ],
        )
    )
    assert samples == [
        Sample({"__name__": "selfimprove_eval_score", "model": "candidate"}, 0.82),
        Sample({"__name__": "selfimprove_eval_score", "model": "champion"}, 0.7),
    ]


def test_a_scalar_is_one_sample_without_labels() -> None:
    assert answer(success("scalar", [1700000000.5, "0.25"])) == [Sample({}, 0.25)]


def test_an_empty_vector_is_no_samples_which_a_gate_calls_inconclusive() -> None:
    assert answer(success("vector", [])) == []


def test_special_values_arrive_as_strings_and_stay_exact() -> None:
    samples = answer(success("vector", [{"metric": {}, "value": [1, v]} for v in ("NaN", "+Inf", "-Inf")]))
    assert math.isnan(samples[0].value)
    assert [s.value for s in samples[1:]] == [math.inf, -math.inf]


def test_an_error_answer_names_the_address_the_query_and_the_server_s_reason() -> None:
    with pytest.raises(QueryError) as raised:
        answer({"status": "error", "errorType": "bad_data", "error": "1:5: parse error: unclosed left parenthesis"})
    message = str(raised.value)
    assert ADDRESS in message
    assert QUERY in message
    assert "bad_data: 1:5: parse error: unclosed left parenthesis" in message


@pytest.mark.parametrize(
    ("result_type", "result", "reason"),
    [
        ("matrix", [{"metric": {}, "values": [[1, "1"]]}], "needs an instant vector or a scalar"),
        ("string", [1, "hello"], "needs an instant vector or a scalar"),
    ],
)
def test_results_a_gate_cannot_judge_are_query_errors(result_type: str, result: Any, reason: str) -> None:
    with pytest.raises(QueryError, match=reason):
        answer(success(result_type, result))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>502 Bad Gateway</html>", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"status": "success"}', "no data"),
        (b'{"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "1"]}]}}', "malformed"),
        (b'{"status": "success", "data": {"resultType": "scalar", "result": [1, "one"]}}', "malformed"),
    ],
)
def test_answers_that_are_not_prometheus_answers_are_query_errors(body: bytes, reason: str) -> None:
    with pytest.raises(QueryError, match=reason):
        parse_response(body, QUERY, ADDRESS)


@pytest.mark.parametrize("address", ["prometheus:9090", "ftp://prometheus", "http://"])
def test_the_address_must_be_an_http_url(address: str) -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        PrometheusProvider(address)
