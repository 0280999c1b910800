"""The CRD alone keeps invalid loops out of the cluster, and documents the valid ones.

The CRD (crds/selfimprove.dev_selfimprovementloops.yaml, generated from the API models) carries a structural schema
with bounds, enums, patterns, list-map keys and CEL rules. A user who applies a bad loop must be told by the API
server, naming the field, before any operator sees it (every row of the shared table tests/invalid_specs.py, which
`sil validate` rejects too); a good loop is stored with the schema's defaults, listed with
the printer columns and explained by `kubectl explain`. No operator runs in these tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sil_operator.api.spec import SelectSpec
from sil_stages.core.settings import Refinement
from tests.integration.controlplane import ControlPlane, wait_until
from tests.integration.operator_process import running_operator
from tests.integration.test_operator import kwok_loop
from tests.invalid_specs import GATE, INVALID, Invalid, patched
from tests.invalid_specs import valid_loop as shared_valid_loop

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def loops_namespace(control_plane: ControlPlane) -> Iterator[str]:
    """One namespace for the whole table: rejected loops are never stored, so the rows cannot disturb each other."""
    name = control_plane.create_namespace("crd-validation")
    yield name
    control_plane.delete_namespace(name)


def valid_loop(namespace: str, name: str) -> dict[str, Any]:
    """The loop of the operator tests: valid, with no optional sections."""
    return kwok_loop(namespace, name, Path("/var/lib/selfimprove/runs") / name, manifests=False)


def apply(plane: ControlPlane, document: dict[str, Any], *flags: str) -> tuple[int, str]:
    result = plane.kubectl("apply", *flags, "-f", "-", input=yaml.safe_dump(document), check=False)
    return result.returncode, result.stdout + result.stderr


def names(answer: str, field: str) -> bool:
    """The API server names a field as `spec.x.y: ...` (or `unknown field "spec.x.y"` when decoding strictly)."""
    return re.search(re.escape(field) + r'[:"]', answer) is not None


BOTH = [row for row in INVALID if not row.sil_validate_only]
SIL_ONLY = [row for row in INVALID if row.sil_validate_only]


@pytest.mark.parametrize("row", BOTH, ids=[row.id for row in BOTH])
def test_the_api_server_rejects_every_invalid_loop_of_the_shared_table_naming_the_field(
    control_plane: ControlPlane, loops_namespace: str, row: Invalid
) -> None:
    """The rows of tests/invalid_specs.py, which `sil validate` rejects too: `kubectl apply` fails, names the field
    (and says the same words for a CEL rule), and nothing is stored."""
    code, answer = apply(control_plane, patched(shared_valid_loop("rejected", loops_namespace), row.changes))
    assert code != 0, f"accepted:\n{answer}"
    assert names(answer, row.api_server_field()), f"{row.api_server_field()} not named in:\n{answer}"
    assert row.says in answer, f"{row.says!r} not in the API server's answer:\n{answer}"
    stored = control_plane.kubectl("get", "sil", "-n", loops_namespace, "-o", "name", check=False)
    assert stored.stdout.strip() == "", "a rejected loop must not be stored"


@pytest.mark.parametrize("row", SIL_ONLY, ids=[row.id for row in SIL_ONLY])
def test_rows_marked_sil_validate_only_are_indeed_accepted_by_the_api_server(
    control_plane: ControlPlane, loops_namespace: str, row: Invalid
) -> None:
    """Keeps the marking honest: if the API server learns to reject one of these, the row must lose its mark."""
    document = patched(shared_valid_loop("accepted", loops_namespace), row.changes)
    code, answer = apply(control_plane, document, "--dry-run=server")
    assert code == 0 and "created (server dry run)" in answer, answer


def test_the_operator_marks_a_loop_past_the_crd_failed_invalid_spec_naming_the_field(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """What the API server cannot check (the sil-validate-only rows), the operator's parse_loop still catches: the
    loop is Failed with reason InvalidSpec, the message names the field, and no Job is created."""
    loops = {f"past-crd-{index}": row for index, row in enumerate(SIL_ONLY)}
    for name, row in loops.items():
        code, answer = apply(control_plane, patched(shared_valid_loop(name, namespace), row.changes))
        assert code == 0, answer

    def status(name: str) -> dict[str, Any]:
        return control_plane.get_json("sil", name, "-n", namespace).get("status") or {}

    with running_operator(control_plane, namespace, tmp_path / "operator.log") as process:
        wait_until(
            lambda: all(status(name).get("phase") == "Failed" for name in loops), 60, "InvalidSpec\n" + process.log()
        )
    for name, row in loops.items():
        failed = next(c for c in status(name)["conditions"] if c["type"] == "Failed")
        assert failed["reason"] == "InvalidSpec"
        assert f"{row.field}:" in failed["message"], failed["message"]
    assert control_plane.get_json("jobs", "-n", namespace)["items"] == []


def test_the_base_documents_of_the_table_are_themselves_valid(
    control_plane: ControlPlane, loops_namespace: str
) -> None:
    """Otherwise the rows above would prove nothing: each must be rejected for its own change alone."""
    for document in (shared_valid_loop("rejected", loops_namespace), valid_loop(loops_namespace, "rejected")):
        code, answer = apply(control_plane, document, "--dry-run=server")
        assert code == 0 and "created (server dry run)" in answer, answer


def test_a_valid_loop_is_stored_with_the_schema_defaults_filled_in(control_plane: ControlPlane, namespace: str) -> None:
    """Omitted fields come back with their documented defaults, so `kubectl get -o yaml` shows what will run.

    The API server fills the defaults of fields whose parent object is present: `select: {scorer: {}, keep: {}}`
    gets its scorer and keep defaults.
    """
    document = valid_loop(namespace, "defaults")
    document["spec"]["select"] = {"scorer": {}, "keep": {}}
    document["spec"]["promotion"] = {"gates": [GATE]}
    code, answer = apply(control_plane, document)
    assert code == 0, answer
    spec = control_plane.get_json("sil", "defaults", "-n", namespace)["spec"]
    assert spec["suspend"] is False
    assert spec["acquire"]["samplesPerPrompt"] == 4
    assert spec["acquire"]["engine"] == "transformers"
    assert spec["acquire"]["batchSize"] == 64
    assert spec["select"]["scorer"]["type"] == "verifier"
    assert spec["select"]["keep"]["dedupe"]["method"] == "exact"
    assert spec["select"] == SelectSpec().model_dump(by_alias=True, exclude_none=True), (
        "the API server fills in the defaults sil validate applies"
    )
    assert spec["evaluate"]["verifier"] == "exact-match"
    assert spec["evaluate"]["batchSize"] == 64
    gate = spec["promotion"]["gates"][0]
    assert {k: gate[k] for k in ("count", "intervalSeconds", "failureLimit", "consecutiveErrorLimit", "dryRun")} == {
        "count": 1,
        "intervalSeconds": 0,
        "failureLimit": 0,
        "consecutiveErrorLimit": 4,
        "dryRun": False,
    }
    assert spec["runtime"]["resources"] == {"limits": {"nvidia.com/gpu": 1}}, "given values are kept as written"


def test_objects_left_out_entirely_are_stored_with_their_defaults(control_plane: ControlPlane, namespace: str) -> None:
    """An omitted optional object (select, optimize, sampling, ...) defaults to {} and then to its fields' defaults."""
    document = valid_loop(namespace, "bare")
    document["spec"].pop("select", None)
    document["spec"].pop("optimize", None)
    code, answer = apply(control_plane, document)
    assert code == 0, answer
    spec = control_plane.get_json("sil", "bare", "-n", namespace)["spec"]
    assert spec["select"] == SelectSpec().model_dump(by_alias=True, exclude_none=True)
    assert spec["optimize"]["method"] == "sft"
    assert spec["optimize"]["initFrom"] == "champion"
    assert spec["optimize"]["hyperparameters"]["learningRate"] == pytest.approx(1e-4)
    assert spec["acquire"]["sampling"]["temperature"] == 1
    assert spec["evaluate"]["refinement"] == Refinement().model_dump(by_alias=True, exclude_none=True)
    assert spec["evaluate"]["refinement"]["selfRefine"] == {"rounds": 0}, "self-refine is off, its template unset"
    assert "passAtK" not in spec["evaluate"]["refinement"], "unset: pass@1 and pass@samples"


def test_a_loop_at_the_limits_is_accepted(control_plane: ControlPlane, namespace: str) -> None:
    """The bounds are inclusive: a 40-character name, topP 1, one iteration, majority-vote with two samples."""
    document = valid_loop(namespace, "x" * 40)
    document["spec"].update(
        maxIterations=1,
        acquire={"prompts": {"uri": "file:///p.jsonl"}, "samplesPerPrompt": 2, "sampling": {"topP": 1.0}},
        select={"scorer": {"type": "majority-vote"}},
        promotion={"gates": [{"name": "floor", "query": "up", "failureCondition": "result < 0.5"}]},
    )
    code, answer = apply(control_plane, document)
    assert code == 0, answer


@pytest.mark.parametrize(
    "temperatures",
    [
        {"spec.acquire.sampling": {"temperature": "auto"}},
        {"spec.acquire.sampling": {"temperature": 0.5, "autoTemperature": {"min": 0.2, "max": 0.8, "points": 3}}},
        {
            "spec.acquire.sampling": {"temperature": 0},
            "spec.optimize": {"method": "grpo", "grpo": {"temperature": "auto"}},
        },
    ],
    ids=["auto", "a number", "greedy acquire, grpo auto"],
)
def test_a_temperature_is_a_number_or_auto(
    control_plane: ControlPlane, loops_namespace: str, temperatures: dict[str, Any]
) -> None:
    document = patched(shared_valid_loop("temperature", loops_namespace), temperatures)
    code, answer = apply(control_plane, document, "--dry-run=server")
    assert code == 0 and "created (server dry run)" in answer, answer


@pytest.mark.parametrize(
    "optimize",
    [
        {"method": "dpo", "dpo": {"lossType": ["sigmoid", "sft"], "reference": "base"}, "lora": {"r": 8}},
        {"method": "grpo", "grpo": {"numGenerations": 4}, "hyperparameters": {"batchSize": 12}},
        {"method": "grpo", "hyperparameters": {"batchSize": 16, "gradientAccumulationSteps": 2}},
        {"method": "sft", "lora": {"targetModules": ["q_proj", "v_proj"]}},
    ],
    ids=["dpo with its block and lora", "grpo with 3 groups a step", "grpo with the default groups", "sft with lora"],
)
def test_each_method_with_its_own_settings_is_accepted(
    control_plane: ControlPlane, loops_namespace: str, optimize: dict[str, Any]
) -> None:
    document = patched(shared_valid_loop("method", loops_namespace), {"spec.optimize": optimize})
    code, answer = apply(control_plane, document, "--dry-run=server")
    assert code == 0 and "created (server dry run)" in answer, answer


def test_kubectl_get_shows_the_printer_columns_filled_from_the_status(
    control_plane: ControlPlane, namespace: str
) -> None:
    """PHASE, ITERATION, CHAMPION, SCORE, PROGRESS and AGE by default; MAX and MESSAGE with -o wide."""
    code, answer = apply(control_plane, valid_loop(namespace, "columns"))
    assert code == 0, answer
    status = {
        "phase": "Running",
        "iteration": 3,
        "champion": {"iteration": 2, "uri": "file:///runs/columns/iterations/2/optimize/checkpoint", "score": 0.75},
        "message": "gates-running",
        "conditions": [
            {
                "type": "Progressing",
                "status": "True",
                "reason": "StagePreempted",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    control_plane.kubectl(
        "patch",
        "sil",
        "columns",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        yaml.safe_dump({"status": status}),
    )
    header, row = control_plane.kubectl("get", "sil", "-n", namespace).stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "ITERATION", "CHAMPION", "SCORE", "PROGRESS", "AGE"]
    assert row.split()[:6] == ["columns", "Running", "3", "2", "0.75", "StagePreempted"]
    header, row = control_plane.kubectl("get", "sil", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "ITERATION", "MAX", "CHAMPION", "SCORE", "PROGRESS", "MESSAGE", "AGE"]
    assert row.split()[:8] == ["columns", "Running", "3", "2", "2", "0.75", "StagePreempted", "gates-running"]


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("sil.spec.select.keep", ["Which scored completions become training data.", "minScore", "Default: 1.0."]),
        (
            "sil.spec.promotion.gates.successCondition",
            ["CEL expression over `result` and `champion`", "result >= champion + 0.01"],
        ),
        ("selfimprovementloop.spec.acquire.samplesPerPrompt", ["Completions per prompt. Default: 4."]),
        ("sil.spec.optimize.method", ["trl.SFTTrainer", "trl.DPOTrainer", "trl.GRPOTrainer", "Default: sft."]),
        ("sil.spec.optimize.grpo.numGenerations", ["must be divisible by it. Default: 8."]),
        ("sil.spec.select.pairs.minMargin", ["at least this", "Default: 0.5."]),
    ],
)
def test_kubectl_explain_shows_the_field_documentation(
    control_plane: ControlPlane, field: str, expected: list[str]
) -> None:
    """The descriptions of the API models reach `kubectl explain` (long lines are wrapped, so compare words)."""
    text = " ".join(control_plane.kubectl("explain", field).stdout.split())
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not in kubectl explain {field}:\n{text}"
