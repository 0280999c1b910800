"""`sil run` reports a failure it cannot get past as one line naming what failed and what to do, never a
traceback: a store it cannot use, a manifest that does not parse, a candidate that fails its promotion check."""

from __future__ import annotations

from pathlib import Path

import pytest

from sil_operator.cli import main
from sil_stages.core.contract import Manifest, MetricSample, manifest_uri, stage_uri

from .builders import T0
from .test_cli import local_document, write_loop


def one_error_line(output: str) -> str:
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


def write_manifest(store: Path, stage: str, **fields: object) -> None:
    folder = Path(manifest_uri(stage_uri(store.as_uri(), 1, stage)).removeprefix("file://"))
    folder.parent.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.model_validate(
        {
            "stage": stage,
            "iteration": 1,
            "loop": "demo",
            "started_at": T0,
            "finished_at": T0,
            "duration_seconds": 1.0,
            **fields,
        }
    )
    folder.write_text(manifest.model_dump_json())


def test_an_unreadable_manifest_is_one_line_naming_it_and_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_loop(tmp_path, local_document())
    broken = tmp_path / "store" / "iterations" / "1" / "acquire" / "_manifest.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"stage": "acquire", "iter')
    assert main(["run", str(path)]) == 1
    line = one_error_line(capsys.readouterr().out.replace("\n  ", " "))
    assert "ManifestUnreadable" in line
    assert "iterations/1/acquire/_manifest.json: not a stage manifest" in line
    assert "delete it to run the acquire stage of iteration 1 again" in line


def test_a_store_without_credentials_is_one_line_naming_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    document = local_document()
    document["spec"]["storage"] = {"uri": "s3://bucket/loops/demo", "endpoint": "http://127.0.0.1:9"}
    path = write_loop(tmp_path, document)
    assert main(["run", str(path)]) == 1
    line = one_error_line(capsys.readouterr().out.replace("\n  ", " "))
    assert "StoreError" in line and "s3://bucket/loops/demo/status.json" in line
    assert "no S3 credentials found" in line


def test_a_candidate_failing_its_promotion_check_is_one_line_and_nothing_is_promoted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every stage of iteration 1 finished, the gate passes, but optimize's manifest lists no checkpoint."""
    store = tmp_path / "store"
    for stage in ("acquire", "select", "optimize"):
        write_manifest(store, stage)
    labels = {"loop": "demo", "iteration": "1"}
    series = [
        MetricSample(name="selfimprove_eval_score", labels={**labels, "model": model}, value=value)
        for model, value in (("candidate", 0.9), ("champion", 0.5))
    ]
    write_manifest(store, "evaluate", series=series, metrics={"candidate_score": 0.9, "champion_score": 0.5})
    path = write_loop(tmp_path, local_document())
    assert main(["run", str(path)]) == 1
    line = one_error_line(capsys.readouterr().out.replace("\n  ", " "))
    assert "PromotionCheckFailed" in line and "optimize/_manifest.json: lists no checkpoint files" in line
    assert not (store / "champion.json").exists()
