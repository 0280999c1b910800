"""Harness task folders in the store (`evaluate.datasets[].harness.includePath: s3://...`), against a real S3 server
(SeaweedFS on 127.0.0.1): the stage downloads the prefix and loads the tasks from the copy, offline; an empty prefix
is an error naming the field, before any model."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from sil_stages.core.contract import EvaluateConfig
from sil_stages.core.errors import StageInputError
from sil_stages.core.store import Store, join
from sil_stages.evaluate.harness import prepare_suites
from tests.servers.seaweedfs import S3Server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TASKS = Path(__file__).resolve().parents[1] / "unit" / "stages" / "testdata" / "harness"


@pytest.fixture
def bucket(s3: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A fresh bucket, and the environment a stage pod gets (endpoint, region, credentials; no local profile)."""
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return s3.create_bucket(f"harness-{secrets.token_hex(3)}")


def _config(bucket: str, include: str) -> EvaluateConfig:
    data: dict[str, Any] = {
        "loop": "l",
        "iteration": 1,
        "storage": {"uri": bucket},
        "output_uri": join(bucket, "iterations/1/evaluate"),
        "candidate_uri": "s3://models/m",
        "champion_uri": "s3://models/m",
        "datasets": [
            {"name": "heldout", "uri": join(bucket, "heldout.jsonl")},
            {"name": "general", "harness": {"tasks": ["tiny-arith"], "includePath": include}},
        ],
    }
    return EvaluateConfig.model_validate(data)


def test_a_task_folder_in_the_store_is_downloaded_and_its_tasks_load_offline(bucket: str, tmp_path: Path) -> None:
    store = Store()
    for path in sorted(TASKS.iterdir()):
        store.write_bytes(join(bucket, "tasks", path.name), path.read_bytes())
    config = _config(bucket, join(bucket, "tasks"))
    (suite,) = prepare_suites(store, config, scratch=tmp_path)
    assert suite.folder.parent == tmp_path, "a copy in the scratch folder"
    assert sorted(p.name for p in suite.folder.iterdir()) == sorted(p.name for p in TASKS.iterdir())
    assert [(t.name, t.metric) for t in suite.tasks] == [("tiny-arith", "acc")]


def test_an_empty_task_prefix_is_an_error_naming_the_field(bucket: str, tmp_path: Path) -> None:
    with pytest.raises(StageInputError, match=r"^datasets\[1\]\.harness\.includePath: .* holds no files"):
        prepare_suites(Store(), _config(bucket, join(bucket, "nothing-here")), scratch=tmp_path)
