"""The demo's arithmetic loop as a SelfImprovementLoop whose stage Jobs run on the local pod runner.

The settings are the calibrated ones of examples/arithmetic/loop.yaml; tests change what they are about
(storage, model, iterations, gates) on the returned document.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.podrunner import RUNNER_LABEL, RUNNER_LABEL_VALUE
from tests.servers.prometheus import PrometheusServer

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "arithmetic"
HELDOUT_QUERY = (
    'selfimprove_eval_score{namespace="{{namespace}}",loop="{{loop}}",iteration="{{iteration}}",'
    'dataset="heldout",model="{{model}}"}'
)
"""The held-out score evaluate pushes, as a gate asks Prometheus for it."""


def arithmetic_loop(namespace: str, name: str, model_uri: str, storage: dict[str, Any]) -> dict[str, Any]:
    data = EXAMPLE / "data"
    return {
        "apiVersion": "selfimprove.dev/v1alpha1",
        "kind": "SelfImprovementLoop",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"uri": model_uri},
            "storage": storage,
            "maxIterations": 2,
            "runtime": {
                "backoffLimit": 0,
                "nodeSelector": {RUNNER_LABEL: RUNNER_LABEL_VALUE},
                "tolerations": [
                    {"key": RUNNER_LABEL, "operator": "Equal", "value": RUNNER_LABEL_VALUE, "effect": "NoSchedule"}
                ],
                # The verifier module `arithmetic` ships with the example; a stage image would carry it. The
                # test's own PYTHONPATH follows, so the stage processes run the checkout under test.
                "env": {
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(EXAMPLE), os.environ.get("PYTHONPATH")])),
                    "OMP_NUM_THREADS": "1",
                },
            },
            "acquire": {
                "prompts": {"uri": (data / "train_prompts.jsonl").as_uri(), "perIteration": 4000},
                "samplesPerPrompt": 4,
                "sampling": {"temperature": 1.0, "maxNewTokens": 8},
                "batchSize": 256,
            },
            "select": {
                "scorer": {"type": "verifier", "verifier": "arithmetic:verify"},
                "keep": {"minScore": 1.0, "topK": 2},
            },
            "optimize": {
                "hyperparameters": {
                    "learningRate": 1.0e-3,
                    "warmupRatio": 0.1,
                    "epochs": 3,
                    "batchSize": 32,
                    "maxLength": 32,
                }
            },
            "evaluate": {
                "datasets": [{"name": "heldout", "uri": (data / "heldout.jsonl").as_uri()}],
                "refinement": {"method": "self-consistency", "samples": 4},
                "maxNewTokens": 8,
            },
        },
    }


def gated_on_prometheus(spec: dict[str, Any], prometheus: PrometheusServer, success_condition: str) -> None:
    """Evaluate pushes to `prometheus`'s Pushgateway and one held-out gate reads Prometheus, on `success_condition`."""
    spec["pushgateway"] = {"address": prometheus.pushgateway_url}
    spec["promotion"] = {
        "prometheus": {"address": prometheus.url},
        "gates": [
            {
                "name": "heldout-improves",
                "query": HELDOUT_QUERY,
                "successCondition": success_condition,
                # Prometheus scrapes the Pushgateway every second: give it a few before the first look.
                "initialDelaySeconds": 3,
                "inconclusiveLimit": 2,
                "count": 1,
                "intervalSeconds": 2,
            }
        ],
    }
