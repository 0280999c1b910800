"""A promotion checks the candidate is the checkpoint evaluate measured, without reading checkpoint bytes.

The evaluate stage checks every file of the candidate (size and sha256) against the optimize manifest and records
that manifest's sha256; promotion compares the digest and HEADs each file for its size. These tests run on a
file:// store; `tests/integration/test_promotion_s3.py` runs the same ones on the SeaweedFS S3 server.

Trade-off (documented in `sil_operator.promotion`): bytes changed after evaluate without changing a file's size
pass promotion; the stages that later download the champion verify sha256 and refuse it.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sil_operator.failures import PromotionCheckFailed
from sil_operator.planner import Promote
from sil_operator.promotion import promote
from sil_stages.core.contract import ChampionPointer, Manifest, champion_uri, manifest_uri, stage_uri
from sil_stages.core.errors import StageInputError
from sil_stages.core.manifest import StageOutputs
from sil_stages.core.models import resolve_verified
from sil_stages.core.store import Store, join

NOW = datetime(2026, 1, 1, tzinfo=UTC)
WEIGHTS = "checkpoint/model.safetensors"


class CountingStore(Store):
    """A store that records every URI whose content it reads (sizes and existence are not content)."""

    def __init__(self) -> None:
        super().__init__()
        self.read: list[str] = []

    def read_bytes(self, uri: str) -> bytes:
        self.read.append(uri)
        return super().read_bytes(uri)

    def sha256(self, uri: str) -> str:
        self.read.append(uri)
        return super().sha256(uri)

    def download_file(self, uri: str, local: Path) -> Path:
        self.read.append(uri)
        return super().download_file(uri, local)


@pytest.fixture
def storage(tmp_path: Path) -> str:
    return (tmp_path / "store").as_uri()


def optimize_dir(storage: str) -> str:
    return stage_uri(storage, 1, "optimize")


def seal_optimize(store: Store, storage: str, tmp_path: Path) -> None:
    """What the optimize stage leaves: a checkpoint, then its manifest."""
    checkpoint = tmp_path / "trained"
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes(os.urandom(300_000))
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "llama"}))
    outputs = StageOutputs(store, optimize_dir(storage))
    outputs.upload_dir(checkpoint, "checkpoint")
    outputs.seal(stage="optimize", loop="demo", iteration=1, metrics={})


def seal_evaluate(store: Store, storage: str, verified: str | None) -> None:
    outputs = StageOutputs(store, stage_uri(storage, 1, "evaluate"))
    outputs.write_text("results.json", "{}")
    outputs.seal(stage="evaluate", loop="demo", iteration=1, metrics={}, verified_manifest_sha256=verified)


def evaluated_candidate(store: Store, storage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Optimize, then evaluate's check of the candidate (the stage's own function), then its manifest."""
    monkeypatch.setenv("SIL_MODEL_CACHE", str(tmp_path / "model-cache"))
    seal_optimize(store, storage, tmp_path)
    uri = join(optimize_dir(storage), "checkpoint")
    verified = resolve_verified(store, uri, field="candidate_uri")
    assert verified.manifest_sha256 is not None, "a stage-written checkpoint is verified against its manifest"
    seal_evaluate(store, storage, verified.manifest_sha256)
    return uri


def action(uri: str) -> Promote:
    return Promote(iteration=1, uri=uri, score=0.7)


def overwrite(store: Store, uri: str, data: bytes) -> None:
    store.write_bytes(uri, data)


def test_a_verified_candidate_is_promoted_without_reading_any_checkpoint_byte(
    storage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CountingStore()
    uri = evaluated_candidate(store, storage, tmp_path, monkeypatch)
    store.read.clear()
    pointer = promote(store, storage, action(uri), NOW)
    assert pointer.uri == uri
    assert ChampionPointer.model_validate_json(store.read_text(champion_uri(storage))) == pointer
    assert [read for read in store.read if "/checkpoint/" in read] == []
    assert sorted(read.rsplit("/", 2)[-2] for read in store.read if read.endswith("_manifest.json")) == [
        "evaluate",
        "optimize",
    ]


def test_a_tampered_optimize_manifest_is_refused_and_nothing_is_promoted(
    storage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store()
    uri = evaluated_candidate(store, storage, tmp_path, monkeypatch)
    manifest_file = manifest_uri(optimize_dir(storage))
    manifest = Manifest.model_validate_json(store.read_bytes(manifest_file))
    # Swap in other weights and a manifest that describes them: consistent, but not what evaluate measured.
    other = os.urandom(1000)
    overwrite(store, join(optimize_dir(storage), WEIGHTS), other)
    import hashlib

    files = tuple(
        f.model_copy(update={"size": len(other), "sha256": hashlib.sha256(other).hexdigest()})
        if f.path == WEIGHTS
        else f
        for f in manifest.files
    )
    overwrite(store, manifest_file, manifest.model_copy(update={"files": files}).model_dump_json().encode())
    with pytest.raises(PromotionCheckFailed, match=r"_manifest.json: changed after evaluate verified the candidate"):
        promote(store, storage, action(uri), NOW)
    assert not store.exists(champion_uri(storage))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("missing", r"model.safetensors: missing, although the optimize manifest lists it"),
        ("resized", r"model.safetensors: wrong size, 10 bytes where the optimize manifest says 300000"),
    ],
)
def test_a_missing_or_resized_checkpoint_file_is_refused(
    storage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str, message: str
) -> None:
    store = Store()
    uri = evaluated_candidate(store, storage, tmp_path, monkeypatch)
    weights = join(optimize_dir(storage), WEIGHTS)
    if change == "missing":
        store.delete(weights)
    else:
        overwrite(store, weights, b"0123456789")
    with pytest.raises(PromotionCheckFailed, match=message):
        promote(store, storage, action(uri), NOW)
    assert not store.exists(champion_uri(storage))


def test_bytes_changed_after_evaluate_at_the_same_size_pass_promotion_by_design(
    storage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trade-off: promotion relies on evaluate's byte check; the next download of the champion catches it."""
    store = Store()
    uri = evaluated_candidate(store, storage, tmp_path, monkeypatch)
    overwrite(store, join(optimize_dir(storage), WEIGHTS), os.urandom(300_000))
    assert promote(store, storage, action(uri), NOW).iteration == 1


def test_evaluate_refuses_a_candidate_whose_bytes_do_not_match_its_manifest(
    storage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIL_MODEL_CACHE", str(tmp_path / "model-cache"))
    store = Store()
    seal_optimize(store, storage, tmp_path)
    overwrite(store, join(optimize_dir(storage), WEIGHTS), os.urandom(300_000))
    with pytest.raises(StageInputError, match=r"candidate_uri: .*model.safetensors.*(corrupted|sha256)"):
        resolve_verified(store, join(optimize_dir(storage), "checkpoint"), field="candidate_uri")


def test_an_evaluate_manifest_without_a_digest_falls_back_to_hashing_every_file(
    storage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store()
    seal_optimize(store, storage, tmp_path)
    seal_evaluate(store, storage, None)  # written by an older stage image
    overwrite(store, join(optimize_dir(storage), WEIGHTS), os.urandom(300_000))
    with pytest.raises(PromotionCheckFailed, match=r"model.safetensors: corrupted"):
        promote(store, storage, action(join(optimize_dir(storage), "checkpoint")), NOW)
