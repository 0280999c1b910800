"""The operator end to end: stage Jobs really run the stage programs (on the local pod runner), train and promote.

This is `make demo` on Kubernetes, shrunk: the same stage command a container runs, the same store layout, the
same planner; only the node is a local process runner instead of a kubelet.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.controlplane import ControlPlane, wait_until
from tests.integration.operator_process import running_operator
from tests.podrunner import RUNNER_LABEL, RUNNER_LABEL_VALUE

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "arithmetic"
STAGES = ["acquire", "select", "optimize", "evaluate"]
HELDOUT_SCORE = 'selfimprove_eval_score{loop="{{loop}}",iteration="{{iteration}}",dataset="heldout",model="{{model}}"}'


@pytest.fixture(scope="module")
def base_model() -> Path:
    subprocess.run([sys.executable, str(EXAMPLE / "make_base_model.py")], check=True, cwd=REPO)
    return EXAMPLE / ".base-model"


def pod_runner_loop(namespace: str, name: str, storage: Path, base_model: Path) -> dict[str, Any]:
    data = EXAMPLE / "data"
    return {
        "apiVersion": "selfimprove.dev/v1alpha1",
        "kind": "SelfImprovementLoop",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"uri": base_model.as_uri()},
            "storage": {"uri": storage.as_uri()},
            "maxIterations": 2,
            "runtime": {
                "backoffLimit": 0,
                "nodeSelector": {RUNNER_LABEL: RUNNER_LABEL_VALUE},
                "tolerations": [
                    {"key": RUNNER_LABEL, "operator": "Equal", "value": RUNNER_LABEL_VALUE, "effect": "NoSchedule"}
                ],
                # The verifier module `arithmetic` ships with the example; a stage image would carry it.
                "env": {"PYTHONPATH": str(EXAMPLE), "OMP_NUM_THREADS": "1"},
            },
            "acquire": {
                # The demo's calibrated settings (examples/arithmetic/loop.yaml), two iterations.
                "prompts": {"uri": (data / "train_prompts.jsonl").as_uri(), "perIteration": 4000},
                "samplesPerPrompt": 4,
                "sampling": {"temperature": 1.0, "maxNewTokens": 8},
                "batchSize": 256,
            },
            "select": {
                "scorer": {"type": "verifier", "verifier": "arithmetic:verify"},
                "keep": {"minScore": 1.0, "maxPerPrompt": 2},
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
                "refinement": {"method": "self-consistency", "samples": 8},
                "maxNewTokens": 8,
            },
            "promotion": {
                "gates": [{"name": "heldout-improves", "query": HELDOUT_SCORE, "successCondition": "result > champion"}]
            },
        },
    }


def test_a_two_iteration_loop_trains_on_the_pod_runner_and_promotes(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, base_model: Path
) -> None:
    store = tmp_path / "store"
    document = pod_runner_loop(namespace, "arith", store, base_model)
    with running_operator(control_plane, namespace, tmp_path / "operator.log") as operator:
        control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(document))

        def finished() -> bool:
            status = control_plane.get_json("sil", "arith", "-n", namespace).get("status") or {}
            assert status.get("phase") != "Failed", json.dumps(status, indent=1) + operator.log()[-3000:]
            return status.get("phase") == "Succeeded"

        wait_until(finished, 800, "the loop to succeed", interval=2)
    status = control_plane.get_json("sil", "arith", "-n", namespace)["status"]
    decisions = [it["decision"] for it in status["iterations"]]
    assert len(decisions) == 2
    assert "Promoted" in decisions, json.dumps(status["iterations"], indent=1)
    champion = json.loads((store / "champion.json").read_text())
    promoted = [it for it in status["iterations"] if it["decision"] == "Promoted"]
    assert champion["iteration"] == promoted[-1]["index"] == status["champion"]["iteration"]
    for it in promoted:
        assert it["candidateScore"] > it["championScore"]
    for iteration in (1, 2):
        for stage in STAGES:
            assert (store / "iterations" / str(iteration) / stage / "_manifest.json").is_file()
    jobs = control_plane.get_json("jobs", "-n", namespace)["items"]
    assert sorted(j["metadata"]["name"] for j in jobs) == sorted(f"arith-{i}-{s}" for i in (1, 2) for s in STAGES)
    assert all(any(c["type"] == "Complete" for c in j["status"]["conditions"]) for j in jobs)
    reasons = {e["reason"] for e in control_plane.get_json("events", "-n", namespace)["items"]}
    assert {"StageStarted", "StageSucceeded", "Promoted", "Completed"} <= reasons
