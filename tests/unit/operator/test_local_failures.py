"""How `sil run` reads a stage process that ended without its manifest: exit 2 is final, the rest are retried.

A stage exits 2 when its input is wrong (sil_stages.core.errors.StageInputError): running it again would fail the same
way, so the local runner reports a permanent failure, as the podFailurePolicy of a stage Job does on Kubernetes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sil_operator.api.status import StagePhase
from sil_operator.local.executor import StageProcess
from sil_operator.local.runner import failed_stage
from sil_operator.planner import StartStage
from sil_operator.stageconfig import LoopRef, build_stage_config
from sil_stages.core.errors import EXIT_INPUT_REJECTED

from .builders import T0, make_spec

MANIFEST = "file:///runs/demo/iterations/1/select/_manifest.json"


def test_a_rejected_input_is_exit_code_2_as_the_stage_contract_documents() -> None:
    """One constant for the stage CLI, both runners and the Jobs' podFailurePolicy; its value is the contract."""
    assert EXIT_INPUT_REJECTED == 2


def stage_process(tmp_path: Path, last_line: str) -> StageProcess:
    spec = make_spec()
    config = build_stage_config(spec, LoopRef("demo", "ml"), 1, "select", "file:///models/base")
    log = tmp_path / "demo-1-select.log"
    log.write_text(f"# attempt 1\nloading\n{last_line}\n\n")
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    action = StartStage(1, "select", "demo-1-select", 1, config)
    return StageProcess(action, process, log, T0)


@pytest.mark.parametrize(
    ("code", "reason", "permanent", "said"),
    [
        pytest.param(2, "InputRejected", True, "select.keep.minScore: must be <= 1; fix the spec", id="bad input"),
        pytest.param(1, "Error", False, "select.keep.minScore: must be <= 1; fix the spec", id="a crash"),
        pytest.param(0, "ManifestMissing", False, f"the stage exited 0 without writing {MANIFEST}", id="no manifest"),
    ],
)
def test_a_stage_process_that_ended_without_its_manifest_failed(
    tmp_path: Path, code: int, reason: str, permanent: bool, said: str
) -> None:
    seen = failed_stage(stage_process(tmp_path, "select.keep.minScore: must be <= 1; fix the spec"), code, MANIFEST, T0)
    assert (seen.phase, seen.reason, seen.permanent, seen.attempts) == (StagePhase.FAILED, reason, permanent, 1)
    assert seen.message is not None
    assert seen.message.startswith(f"exit code {code}: ") and said in seen.message


def test_sil_run_does_not_retry_a_stage_that_rejected_its_input(tmp_path: Path) -> None:
    """Prompts without a `prompt` field: acquire exits 2 at once; with backoffLimit 2 it still runs only once."""
    (tmp_path / "model").mkdir()
    (tmp_path / "prompts.jsonl").write_text('{"text": "1+1="}\n')
    (tmp_path / "heldout.jsonl").write_text('{"prompt": "1+1=", "answer": "2"}\n')
    loop = {
        "apiVersion": "selfimprove.dev/v1alpha1",
        "kind": "SelfImprovementLoop",
        "metadata": {"name": "bad-input"},
        "spec": {
            "model": {"uri": "./model"},
            "storage": {"uri": "./store"},
            "maxIterations": 1,
            "runtime": {"backoffLimit": 2},
            "acquire": {"prompts": {"uri": "./prompts.jsonl"}},
            "evaluate": {"datasets": [{"name": "heldout", "uri": "./heldout.jsonl"}]},
        },
    }
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump(loop))
    done = subprocess.run(
        [sys.executable, "-m", "sil_operator.cli", "run", "loop.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    launches = (tmp_path / "store" / "local" / "launches.jsonl").read_text().splitlines()
    assert len(launches) == 1, launches
    status = yaml.safe_load((tmp_path / "store" / "status.json").read_text())
    assert status["phase"] == "Failed"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "StageRejectedInput"
    assert "no `prompt` field" in status["message"]
    acquire = status["iterations"][0]["stages"][0]
    assert (acquire["reason"], acquire["attempts"]) == ("InputRejected", 1)
