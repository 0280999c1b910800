"""What each fake stage leaves in the store: the real stage's file names, a manifest sealed by sil_stages' own
`StageOutputs`, and for evaluate the series pushed to the Pushgateway by sil_stages' own `push`.

Nothing is trained or generated. The files are small but real (the checkpoint's bytes are seeded per loop and
iteration), so the checks that read them (promotion's size check, evaluate's sha256 verification of the candidate,
`sil_stages.core.verify`) run exactly as they do on real stages.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from pathlib import Path

from sil_stages.core.contract import (
    CHECKPOINT_DIR,
    SAMPLES_FILE,
    TRAIN_FILE,
    AcquireConfig,
    EvaluateConfig,
    Manifest,
    OptimizeConfig,
    SelectConfig,
    manifest_uri,
)
from sil_stages.core.manifest import StageOutputs, is_finished
from sil_stages.core.pushgateway import push
from sil_stages.core.store import Store, StoreError
from sil_stages.core.verify import entries_under, verify_tree
from sil_stages.evaluate.comparison import DatasetGuards
from sil_stages.evaluate.scoring import Scores
from sil_stages.evaluate.series import flat_metrics, series_for
from sil_stages.evaluate.significance import PairedComparison
from sil_stages.evaluate.stage import RESULTS_FILE
from tests.fakestages.scores import score

CHECKPOINT_BYTES = 16 * 1024
"""Size of the fake `model.safetensors`: big enough to be a real upload, small enough for hundreds of stages."""

AnyConfig = AcquireConfig | SelectConfig | OptimizeConfig | EvaluateConfig

_CHECKPOINT_ITERATION = re.compile(r"/iterations/(\d+)/optimize/checkpoint/?$")


def champion_iteration(champion_uri: str) -> int:
    """The iteration whose checkpoint `champion_uri` is (`.../iterations/<k>/optimize/checkpoint`); else 0, the base."""
    found = _CHECKPOINT_ITERATION.search(champion_uri)
    return int(found.group(1)) if found else 0


def write_stage(store: Store, config: AnyConfig, seed: int = 0) -> Manifest | None:
    """Writes the stage's outputs and manifest; None when its manifest is there already (a finished stage).

    Raises StoreError or ConnectionError when the store or the Pushgateway fails: the caller retries, and a retry
    rewrites everything (the manifest is still the last write, so a half-written stage is never finished)."""
    if is_finished(store, config.output_uri):
        return None
    outputs = StageOutputs(store, config.output_uri)
    if isinstance(config, AcquireConfig):
        rows = [{"prompt": f"{i}+{config.iteration}=", "completions": [str(i + config.iteration)]} for i in range(4)]
        outputs.write_text(SAMPLES_FILE, "".join(json.dumps(row) + "\n" for row in rows))
        metrics = {"prompts": 4.0, "samples": 4.0}
    elif isinstance(config, SelectConfig):
        rows = [{"prompt": f"{i}+{config.iteration}=", "completion": str(i + config.iteration)} for i in range(4)]
        outputs.write_text(TRAIN_FILE, "".join(json.dumps(row) + "\n" for row in rows))
        metrics = {"kept": 4.0, "scored": 4.0}
    elif isinstance(config, OptimizeConfig):
        _write_checkpoint(outputs, config, seed)
        metrics = {"train_loss": round(1.0 / (1 + config.iteration), 4)}
    else:
        return _write_evaluate(store, outputs, config, seed)
    return outputs.seal(stage=config.stage, loop=config.loop, iteration=config.iteration, metrics=metrics)


def _write_checkpoint(outputs: StageOutputs, config: OptimizeConfig, seed: int) -> None:
    weights = bytearray()
    block = hashlib.sha256(f"{seed}:{config.loop}:{config.iteration}".encode()).digest()
    while len(weights) < CHECKPOINT_BYTES:
        block = hashlib.sha256(block).digest()
        weights.extend(block)
    with tempfile.TemporaryDirectory(prefix="fakestages-") as tmp:
        folder = Path(tmp)
        (folder / "config.json").write_text(json.dumps({"model_type": "fake", "iteration": config.iteration}))
        (folder / "model.safetensors").write_bytes(bytes(weights[:CHECKPOINT_BYTES]))
        outputs.upload_dir(folder, CHECKPOINT_DIR)


def _verified_candidate(store: Store, candidate_uri: str) -> str:
    """As evaluate does before measuring: the candidate's files match its optimize manifest; the manifest's sha256."""
    optimize_dir = candidate_uri.rstrip("/").removesuffix(f"/{CHECKPOINT_DIR}")
    raw = store.read_bytes(manifest_uri(optimize_dir))
    manifest = Manifest.model_validate_json(raw)
    checkpoint = entries_under(manifest, CHECKPOINT_DIR)
    if not checkpoint:
        raise StoreError(f"{manifest_uri(optimize_dir)}: lists no checkpoint files")
    verify_tree(store, candidate_uri, checkpoint)
    return hashlib.sha256(raw).hexdigest()


def _write_evaluate(store: Store, outputs: StageOutputs, config: EvaluateConfig, seed: int) -> Manifest:
    verified = _verified_candidate(store, config.candidate_uri)
    candidate = score(config.loop, config.iteration, seed)
    champion = score(config.loop, champion_iteration(config.champion_uri), seed)
    delta = round(candidate - champion, 4)
    comparison = PairedComparison(
        delta=delta,
        ci_low=round(delta - 0.02, 4),
        ci_high=round(delta + 0.02, 4),
        p_value=0.01 if abs(delta) > 0.02 else 0.5,
        prompts=100,
        candidate_only=0,
        champion_only=0,
    )
    results = {
        dataset.name: {"candidate": Scores(score=candidate), "champion": Scores(score=champion)}
        for dataset in config.datasets
    }
    guards = {dataset.name: DatasetGuards(comparison=comparison) for dataset in config.datasets}
    document = {
        "candidate_uri": config.candidate_uri,
        "champion_uri": config.champion_uri,
        "fake": True,
        "scores": {"candidate": candidate, "champion": champion},
    }
    outputs.write_text(RESULTS_FILE, json.dumps(document, indent=2) + "\n")
    series = series_for(config, results, guards)
    if config.pushgateway:
        grouping = {"namespace": config.namespace, "loop": config.loop, "iteration": str(config.iteration)}
        push(config.pushgateway, series, grouping, timeout=5.0)
    return outputs.seal(
        stage="evaluate",
        loop=config.loop,
        iteration=config.iteration,
        metrics=flat_metrics(results, guards),
        series=series,
        verified_manifest_sha256=verified,
    )
