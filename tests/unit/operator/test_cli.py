"""`sil validate` and `sil run` refuse a malformed loop with exit status 2, name the field, and write nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sil_operator.cli import main

from .builders import loop_document, with_spec


def write_loop(tmp_path: Path, document: dict[str, Any]) -> Path:
    (tmp_path / "base").mkdir(exist_ok=True)
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "1+1="}\n')
    (tmp_path / "heldout.jsonl").write_text('{"prompt": "1+1=", "answer": "2"}\n')
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def local_document(**overrides: Any) -> dict[str, Any]:
    document = loop_document(model={"uri": "./base"}, storage={"uri": "./store"}, **overrides)
    document["spec"]["acquire"]["prompts"]["uri"] = "./prompts.jsonl"
    document["spec"]["evaluate"]["datasets"][0]["uri"] = "./heldout.jsonl"
    return document


def without(document: dict[str, Any], path: str) -> dict[str, Any]:
    *parents, last = path.split(".")
    node = document
    for part in parents:
        node = node[part]
    del node[last]
    return document


MALFORMED = {
    "wrong type": (with_spec(local_document(), "spec.maxIterations", "five"), "spec.maxIterations"),
    "unknown field": (with_spec(local_document(), "spec.optimize.learningRate", 0.1), "spec.optimize.learningRate"),
    "negative count": (
        with_spec(local_document(), "spec.acquire.samplesPerPrompt", -4),
        "spec.acquire.samplesPerPrompt",
    ),
    "missing required field": (without(local_document(), "spec.storage"), "spec.storage: required field is missing"),
    "unknown scorer": (with_spec(local_document(), "spec.select.scorer.type", "vibes"), "spec.select.scorer.type"),
    "unknown verifier": (with_spec(local_document(), "spec.select.scorer.verifier", "close-enough"), "verifier"),
    "missing input file": (
        with_spec(local_document(), "spec.acquire.prompts.uri", "./nope.jsonl"),
        "spec.acquire.prompts.uri: no such file",
    ),
    "missing reward model": (
        with_spec(local_document(), "spec.select.scorer", {"type": "reward-model", "model": "./no-reward-model"}),
        "spec.select.scorer.model: no such directory",
    ),
}


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("mistake", sorted(MALFORMED))
def test_a_malformed_loop_exits_2_names_the_field_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, mistake: str
) -> None:
    document, expected = MALFORMED[mistake]
    path = write_loop(tmp_path, document)
    assert main([command, str(path)]) == 2
    output = capsys.readouterr().out
    assert expected in output.replace("\n  ", " ").replace("\n", " ")
    assert not (tmp_path / "store").exists(), "nothing may be written for an invalid loop"


def test_a_valid_loop_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_loop(tmp_path, local_document())
    assert main(["validate", str(path)]) == 0
    assert "valid" in capsys.readouterr().out
    assert not (tmp_path / "store").exists()


def test_a_loop_with_a_deprecated_field_validates_with_a_warning_that_says_what_to_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_loop(tmp_path, with_spec(local_document(), "spec.optimize.hyperparameters", {"seed": 3}))
    assert main(["validate", str(path)]) == 0
    output = capsys.readouterr().out.replace("\n", " ")
    assert "warning: spec.optimize.hyperparameters.seed is deprecated: set spec.seed instead" in output
    assert "valid" in output


def test_explain_documents_fields(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "spec.select.keep.topK"]) == 0
    assert "at most this many completions per prompt" in capsys.readouterr().out.lower()
    assert main(["explain", "spec.select.keep.nope"]) == 2


def test_sil_run_takes_a_stage_image_only_from_its_flag_never_from_the_operators_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIL_STAGE_IMAGE is the operator's default image for Jobs; a local run must not start containers because of it."""
    from sil_operator.cli import build_parser

    monkeypatch.setenv("SIL_STAGE_IMAGE", "registry.example/stage:1")
    assert build_parser().parse_args(["run", "loop.yaml"]).stage_image == ""
    parsed = build_parser().parse_args(["run", "--stage-image", "localhost/selfimprove/stage-cpu:dev", "loop.yaml"])
    assert (parsed.stage_image, parsed.container_engine) == ("localhost/selfimprove/stage-cpu:dev", "podman")
