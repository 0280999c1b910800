"""A loop document for kwok's nodes with its store on S3 and a promotion gate on Prometheus, for the fake stages."""

from __future__ import annotations

from typing import Any

from tests.fakestages.scores import GATE_CONDITION
from tests.fakestages.writer import pod_annotations

CREDENTIALS_SECRET = "s3-credentials"
"""The Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION) the loop's storage names."""
SCORE_QUERY = (
    'selfimprove_eval_score{namespace="{{namespace}}",loop="{{loop}}",iteration="{{iteration}}",'
    'dataset="heldout",model="{{model}}"}'
)


def score_gate(**overrides: Any) -> dict[str, Any]:
    """The gate `result > champion` on the held-out score evaluate pushed; Prometheus scrapes the Pushgateway every
    second, so the first look waits a little and an empty answer is asked again."""
    gate: dict[str, Any] = {
        "name": "heldout-improves",
        "query": SCORE_QUERY,
        "successCondition": GATE_CONDITION,
        "initialDelaySeconds": 2,
        "intervalSeconds": 1,
        "inconclusiveLimit": 5,
        "count": 1,
    }
    gate.update(overrides)
    return gate


def s3_prometheus_loop(
    namespace: str,
    name: str,
    *,
    s3_endpoint: str,
    bucket: str,
    prometheus: str,
    pushgateway: str,
    max_iterations: int = 3,
    run_ms: int | None = None,
    gate: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A loop whose stage Jobs land on kwok's GPU nodes, storing under `s3://<bucket>/<name>`, pushing to
    `pushgateway` and gated on `prometheus` with `score_gate()` (or `gate`). `spec` overrides top-level fields."""
    body: dict[str, Any] = {
        "model": {"uri": f"s3://{bucket}/base-model"},
        "storage": {"uri": f"s3://{bucket}/{name}", "endpoint": s3_endpoint, "credentialsSecret": CREDENTIALS_SECRET},
        "maxIterations": max_iterations,
        "runtime": {
            "backoffLimit": 1,
            "resources": {"limits": {"nvidia.com/gpu": 1}},
            "podAnnotations": pod_annotations() if run_ms is None else pod_annotations(run_ms),
        },
        "acquire": {"prompts": {"uri": f"s3://{bucket}/prompts.jsonl"}},
        "evaluate": {"datasets": [{"name": "heldout", "uri": f"s3://{bucket}/heldout.jsonl"}]},
        "pushgateway": {"address": pushgateway},
        "promotion": {"prometheus": {"address": prometheus}, "gates": [gate or score_gate()]},
    }
    body.update(spec)
    return {
        "apiVersion": "selfimprove.dev/v1alpha1",
        "kind": "SelfImprovementLoop",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def credentials_secret(namespace: str, env: dict[str, str]) -> dict[str, Any]:
    """The Secret `s3_prometheus_loop` names, from `S3Server.env()`."""
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": CREDENTIALS_SECRET, "namespace": namespace},
        "stringData": {key: env[key] for key in keys},
    }
