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

from tests.integration.arithmetic_loop import EXAMPLE, REPO, arithmetic_loop
from tests.integration.controlplane import ControlPlane, wait_until
from tests.integration.operator_process import running_operator

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

STAGES = ["acquire", "select", "optimize", "evaluate"]
HELDOUT_SCORE = 'selfimprove_eval_score{loop="{{loop}}",iteration="{{iteration}}",dataset="heldout",model="{{model}}"}'


@pytest.fixture(scope="module")
def base_model() -> Path:
    subprocess.run([sys.executable, str(EXAMPLE / "make_base_model.py")], check=True, cwd=REPO)
    return EXAMPLE / ".base-model"


def pod_runner_loop(namespace: str, name: str, storage: Path, base_model: Path) -> dict[str, Any]:
    document = arithmetic_loop(namespace, name, base_model.as_uri(), {"uri": storage.as_uri()})
    document["spec"]["promotion"] = {
        "gates": [{"name": "heldout-improves", "query": HELDOUT_SCORE, "successCondition": "result > champion"}]
    }
    return document


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
