"""optimize: train a candidate from the init model with the configured method on the data select wrote.

The method (`sil_stages.optimize.methods`: sft, dpo, grpo, ...) decides the trainer and the training-data shape; this
stage reads the data, checks its fields, resolves the models, lets the method train in a local temporary directory and
uploads the checkpoint (safetensors weights, config, tokenizer; with LoRA the merged full model, and the adapter
beside it in `adapter/`) to `<output_uri>/` afterwards, so a stage killed mid-training leaves no checkpoint and no
manifest.

Empty training data is not an error for most methods: the init model is copied as the checkpoint with
`train_examples: 0`, and the promotion gate, seeing no improvement, rejects it. A method that cannot do without
data (dpo: no pair) fails with exit 2 and says what to change. The metrics say whether training happened
(`steps`), how it went (`train_loss`, the trainer's own logged metrics under `train/`) and whether the weights
moved at all (`param_delta_l2`); with a Pushgateway configured they are also pushed as `selfimprove_optimize_*`.

With `distributed` asking for several processes (or DeepSpeed), `relaunch` runs the stage again under
`accelerate launch` (`sil_stages.optimize.launcher`); every rank trains, global rank 0 uploads, pushes and writes the
manifest (with `world_size`), the other ranks wait for it. `checkpointEverySteps` saves and resumes the trainer's
state (`sil_stages.optimize.trainer_checkpoints`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sil_stages.core.contract import CHECKPOINT_DIR, Manifest, OptimizeConfig
from sil_stages.core.errors import StageInputError
from sil_stages.core.manifest import StageOutputs
from sil_stages.core.methods import DATA_FIELDS
from sil_stages.core.models import resolve_model
from sil_stages.core.records import read_jsonl, require_field
from sil_stages.core.seeding import derive_seed, seed_everything
from sil_stages.core.store import Store
from sil_stages.optimize import checkpoint_selection, launcher, trainer_checkpoints
from sil_stages.optimize.methods import get_method
from sil_stages.optimize.methods.base import TrainingJob
from sil_stages.optimize.methods.training import copy_init
from sil_stages.optimize.metrics import push_metrics

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"


@contextmanager
def _workdir() -> Iterator[Path]:
    """The launcher's shared folder in a launched rank (it restored the trainer checkpoint), else a new one."""
    shared = os.environ.get(launcher.WORKDIR_VARIABLE)
    if shared and launcher.is_launched_rank(os.environ):
        yield Path(shared)
        return
    with tempfile.TemporaryDirectory(prefix="sil-optimize-") as tmp:
        yield Path(tmp)


def _restore(config: OptimizeConfig, store: Store, workdir: Path) -> None:
    if config.checkpoint_every_steps is not None:
        trainer_checkpoints.restore(store, config.output_uri, workdir)


def relaunch(config: OptimizeConfig, store: Store, stage_arguments: Sequence[str]) -> int | None:
    """Runs the stage under `accelerate launch` when it asks for several processes; its exit code, else None."""
    topo = launcher.plan(config.distributed, os.environ)
    if topo is None:
        return None
    resolve_model(store, config.init_model_uri, field="init_model_uri")  # one download, not one per rank
    with tempfile.TemporaryDirectory(prefix="sil-optimize-") as tmp:
        _restore(config, store, Path(tmp))
        return launcher.launch(topo, config.distributed, stage_arguments, Path(tmp))


def run(config: OptimizeConfig, store: Store) -> Manifest | None:
    """Trains and, on global rank 0, uploads and seals; the manifest there, None on the other ranks."""
    method = get_method(config.method)
    outputs = StageOutputs(store, config.output_uri)
    records = read_jsonl(store, config.train_uri, field="train_uri")
    for name in DATA_FIELDS[method.data]:
        require_field(records, name, uri=config.train_uri, field="train_uri")
    if not records and method.empty_data is not None:
        raise StageInputError(method.empty_data)
    if config.checkpoint_selection is not None:  # its errors before any model is loaded
        checkpoint_selection.check(config)
        checkpoint_selection.read_validation(store, config.checkpoint_selection, config.scorer)
    model_path = resolve_model(store, config.init_model_uri, field="init_model_uri")

    def base_model() -> str:
        if config.base_model_uri is None:
            raise StageInputError("base_model_uri: this method needs the base model (spec.model); set base_model_uri")
        return resolve_model(store, config.base_model_uri, field="base_model_uri")

    seed = derive_seed(config.seed, config.iteration, "optimize")
    with _workdir() as workdir:
        if not launcher.is_launched_rank(os.environ):
            _restore(config, store, workdir)
        job = TrainingJob(
            config=config,
            model_path=model_path,
            base_model=base_model,
            records=records,
            workdir=workdir,
            seed=seed,
            store=store,
        )
        if records:
            seed_everything(seed)
            metrics = method.train(job)
            state = launcher.process_state()
        else:
            state = launcher.process_state()
            log.warning("train_uri %s is empty: the checkpoint is the init model", config.train_uri)
            metrics = copy_init(job) if state.is_main else {}
        if not state.is_main:
            state.wait_for_everyone()
            return None
        metrics["world_size"] = float(state.world_size)
        outputs.upload_dir(job.checkpoint, CHECKPOINT_DIR)
        if job.adapter.is_dir():
            outputs.upload_dir(job.adapter, ADAPTER_DIR)
    if config.pushgateway:
        push_metrics(config, metrics)
    manifest = outputs.seal(stage="optimize", loop=config.loop, iteration=config.iteration, metrics=metrics)
    state.wait_for_everyone()
    return manifest
