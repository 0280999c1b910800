"""The command line contract every runner relies on: exit codes, one-line errors, and the no-op rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sil_stages.cli import main
from tests.unit.stages.conftest import StageConfig, output_dir


def test_bad_config_value_exits_2_naming_the_field(
    stage_config: StageConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    config = stage_config("acquire", model_uri="file:///m", prompts_uri="file:///p", samples_per_prompt="many")
    assert main(["acquire", "--config", json.dumps(config)]) == 2
    assert "config field `samples_per_prompt`" in capsys.readouterr().err


def test_missing_required_field_exits_2_naming_it(
    stage_config: StageConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    config = stage_config("acquire", prompts_uri="file:///p")
    assert main(["acquire", "--config", json.dumps(config)]) == 2
    assert "config field `model_uri`: Field required" in capsys.readouterr().err


def test_config_for_another_stage_exits_2(stage_config: StageConfig, capsys: pytest.CaptureFixture[str]) -> None:
    config = stage_config("select", samples_uri="file:///s")
    assert main(["acquire", "--config", json.dumps(config)]) == 2
    assert "config field `stage`" in capsys.readouterr().err


def test_config_from_a_file_with_at_sign(
    tmp_path: Path, stage_config: StageConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--config @path` reads the JSON from a file (long configs, ConfigMaps mounted as files)."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(stage_config("select", samples_uri=(tmp_path / "none.jsonl").as_uri())))
    assert main(["select", "--config", f"@{path}"]) == 2
    assert "samples_uri: cannot read" in capsys.readouterr().err


def test_missing_input_exits_2_naming_the_config_field_and_uri(
    tmp_path: Path, stage_config: StageConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = (tmp_path / "nowhere.jsonl").as_uri()
    config = stage_config("acquire", model_uri="file:///m", prompts_uri=missing)
    assert main(["acquire", "--config", json.dumps(config)]) == 2
    assert f"prompts_uri: cannot read {missing}" in capsys.readouterr().err


def test_a_stage_with_a_manifest_is_a_no_op_even_if_its_inputs_are_gone(
    stage_config: StageConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runners may start a finished stage again (a restart, a retried Job): it must do nothing and succeed."""
    config = stage_config("acquire", model_uri="file:///gone", prompts_uri="file:///gone.jsonl")
    manifest = output_dir(config) / "_manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")
    assert main(["acquire", "--config", json.dumps(config)]) == 0
    assert "already finished" in capsys.readouterr().err
    assert manifest.read_text() == "{}"


def test_a_bad_nested_setting_is_named_as_in_the_config(
    stage_config: StageConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    """The settings models are shared with the spec (camelCase there); the stage config names them snake_case."""
    config = stage_config("select", samples_uri="file:///s", scorer={"min_vote_share": 2})
    assert main(["select", "--config", json.dumps(config)]) == 2
    assert "config field `scorer.min_vote_share`" in capsys.readouterr().err
