"""optimize: train a candidate from the init model with the configured method on the data select wrote.

The method (`sil_stages.methods`: sft, dpo, grpo, ...) decides the trainer and the training-data shape; this stage
reads the data, checks its fields, resolves the models, lets the method train in a local temporary directory and
uploads the checkpoint (safetensors weights, config, tokenizer; with LoRA the merged full model, and the adapter
beside it in `adapter/`) to `<output_uri>/` afterwards, so a stage killed mid-training leaves no checkpoint and no
manifest.

Empty training data is not an error for most methods: the init model is copied as the checkpoint with
`train_examples: 0`, and the promotion gate, seeing no improvement, rejects it. A method that cannot do without
data (dpo: no pair) fails with exit 2 and says what to change. The metrics say whether training happened
(`steps`), how it went (`train_loss`, the trainer's own logged metrics under `train/`) and whether the weights
moved at all (`param_delta_l2`); with a Pushgateway configured they are also pushed as `selfimprove_optimize_*`.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from sil_stages.contract import Manifest, OptimizeConfig
from sil_stages.errors import StageInputError
from sil_stages.manifest import StageOutputs
from sil_stages.methods import get_method
from sil_stages.methods.base import DATA_FIELDS, TrainingJob
from sil_stages.methods.training import copy_init
from sil_stages.models import resolve_model
from sil_stages.optimize_metrics import push_metrics
from sil_stages.records import read_jsonl, require_field
from sil_stages.seeding import derive_seed, seed_everything
from sil_stages.store import Store

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
ADAPTER_DIR = "adapter"


def run(config: OptimizeConfig, store: Store) -> Manifest:
    method = get_method(config.method)
    outputs = StageOutputs(store, config.output_uri)
    records = read_jsonl(store, config.train_uri, field="train_uri")
    for name in DATA_FIELDS[method.data]:
        require_field(records, name, uri=config.train_uri, field="train_uri")
    if not records and method.empty_data is not None:
        raise StageInputError(method.empty_data)
    model_path = resolve_model(store, config.init_model_uri, field="init_model_uri")

    def base_model() -> str:
        if config.base_model_uri is None:
            raise StageInputError("base_model_uri: this method needs the base model (spec.model); set base_model_uri")
        return resolve_model(store, config.base_model_uri, field="base_model_uri")

    seed = derive_seed(config.seed + config.hyperparameters.seed, config.iteration, "optimize")
    with tempfile.TemporaryDirectory(prefix="sil-optimize-") as tmp:
        job = TrainingJob(
            config=config,
            model_path=model_path,
            base_model=base_model,
            records=records,
            workdir=Path(tmp),
            seed=seed,
            store=store,
        )
        if records:
            seed_everything(seed)
            metrics = method.train(job)
        else:
            log.warning("train_uri %s is empty: the checkpoint is the init model", config.train_uri)
            metrics = copy_init(job)
        outputs.upload_dir(job.checkpoint, CHECKPOINT_DIR)
        if job.adapter.is_dir():
            outputs.upload_dir(job.adapter, ADAPTER_DIR)
    if config.pushgateway:
        push_metrics(config, metrics)
    return outputs.seal(stage="optimize", loop=config.loop, iteration=config.iteration, metrics=metrics)
