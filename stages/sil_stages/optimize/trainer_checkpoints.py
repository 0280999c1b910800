"""Trainer checkpoints (`optimize.checkpointEverySteps`): save during training, upload, resume a retried stage.

With `checkpointEverySteps: N` the trainer saves its whole state (weights, optimizer, scheduler, RNG) every N
optimizer steps into the work folder; global rank 0 uploads each save to `<output_uri>/trainer-checkpoints/`
(`checkpoint-<step>/`, then `latest.json` naming it, then the older one is deleted). On SIGTERM (a pod being
evicted or deleted, `sil run` stopped) the trainer finishes the current step, saves, uploads and stops; the stage
then exits 143 without a manifest. A retried attempt of the stage (same output_uri, no manifest yet) downloads the
latest checkpoint and passes it to `trainer.train(resume_from_checkpoint=...)`, so it continues from that step; the
manifest records `resumed_from_step`. These files are not part of the manifest's checkpoint.

Across several nodes with DeepSpeed, each node holds its own ranks' optimizer shards and only node 0's are
uploaded: resuming such a run is not supported (plain data parallel keeps everything on rank 0 and resumes).
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
from pathlib import Path
from types import FrameType
from typing import Any

from sil_stages.core.store import Store, join

log = logging.getLogger(__name__)

TRAINER_CHECKPOINTS = "trainer-checkpoints"
LATEST = "latest.json"
SAVE_TOTAL_LIMIT = 2
EXIT_STOPPED = 143
"""128 + SIGTERM: the stage was stopped after saving a trainer checkpoint; a retry resumes from it."""


class TrainingStopped(RuntimeError):
    """Training stopped on SIGTERM after saving a trainer checkpoint; no manifest is written."""


def trainer_dir(workdir: Path) -> Path:
    return workdir / "trainer"


def remote_dir(output_uri: str) -> str:
    return join(output_uri, TRAINER_CHECKPOINTS)


def save_arguments(every_steps: int | None) -> dict[str, Any]:
    """The `TrainingArguments` of saving: every N steps with a small local limit, or never."""
    if every_steps is None:
        return {"save_strategy": "no"}
    return {"save_strategy": "steps", "save_steps": every_steps, "save_total_limit": SAVE_TOTAL_LIMIT}


def restore(store: Store, output_uri: str, workdir: Path) -> str | None:
    """Downloads the latest uploaded trainer checkpoint into the work folder; its name, or None when there is none."""
    latest_uri = join(remote_dir(output_uri), LATEST)
    if not store.exists(latest_uri):
        return None
    name = str(store.read_json(latest_uri)["checkpoint"])
    target = trainer_dir(workdir) / name
    found = store.download_dir(join(remote_dir(output_uri), name), target)
    if found != target:  # a file:// store lends its folder in place: the trainer must not write into it
        shutil.copytree(found, target)
    log.info("downloaded trainer checkpoint %s from %s", name, remote_dir(output_uri))
    return name


def latest_local(workdir: Path) -> str | None:
    """The newest `checkpoint-<step>` folder in the trainer's output folder, or None."""
    folder = trainer_dir(workdir)
    if not folder.is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    found: str | None = get_last_checkpoint(str(folder))  # type: ignore[no-untyped-call]
    return found


def step_of(checkpoint: str) -> int:
    return int(Path(checkpoint).name.rsplit("-", 1)[1])


def _callbacks(store: Store, output_uri: str, workdir: Path) -> tuple[Any, Any]:
    """The uploading callback and the stop-on-SIGTERM callback (TrainerCallback subclasses, built lazily)."""
    import torch
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

    class UploadCheckpoints(TrainerCallback):
        """After each save, global rank 0 uploads the checkpoint and points `latest.json` at it."""

        def __init__(self) -> None:
            self.uploaded: str | None = None

        def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            name = f"checkpoint-{state.global_step}"
            local = trainer_dir(workdir) / name
            if not local.is_dir():
                return
            base = remote_dir(output_uri)
            store.upload_dir(local, join(base, name))
            store.write_text(join(base, LATEST), json.dumps({"checkpoint": name, "step": state.global_step}) + "\n")
            if self.uploaded is not None and self.uploaded != name:
                previous = join(base, self.uploaded)
                for relative in list(store.list_files(previous)):
                    store.delete(join(previous, relative))
            self.uploaded = name
            log.info("uploaded trainer checkpoint %s (step %d) to %s", name, state.global_step, base)

    class StopOnSignal(TrainerCallback):
        """Once SIGTERM arrived (on any rank), save at the end of the current step and stop training."""

        def __init__(self) -> None:
            self.requested = False
            self.stopped = False

        def on_step_end(
            self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
        ) -> None:
            requested = self.requested
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                # every rank must stop at the same step, or the others wait for it in the next all-reduce
                flag = torch.tensor([1.0 if requested else 0.0], device=args.device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                requested = bool(flag.item() > 0)
            if requested:
                log.info("stopping at step %d on SIGTERM: saving a trainer checkpoint first", state.global_step)
                control.should_save = True
                control.should_training_stop = True
                self.stopped = True

    return UploadCheckpoints(), StopOnSignal()


def train(
    trainer: Any, *, every_steps: int | None, store: Store | None, output_uri: str, workdir: Path
) -> tuple[Any, int | None]:
    """`trainer.train()`, resuming from a restored checkpoint and saving as configured.

    Returns the train output and the step it resumed from (None: it started at step 0).

    Raises `TrainingStopped` when a SIGTERM stopped it (after the checkpoint was saved and uploaded).
    """
    if every_steps is None or store is None:
        return trainer.train(), None
    upload, stop = _callbacks(store, output_uri, workdir)
    trainer.add_callback(upload)
    trainer.add_callback(stop)
    resume = latest_local(workdir)
    if resume is not None:
        log.info("resuming from trainer checkpoint %s (step %d)", Path(resume).name, step_of(resume))

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.requested = True

    previous = signal.signal(signal.SIGTERM, request_stop)
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if stop.stopped:
        raise TrainingStopped(
            f"stopped by SIGTERM at step {trainer.state.global_step}; the trainer checkpoint is in "
            f"{remote_dir(output_uri)} and a retry of the stage resumes from it"
        )
    return result, (step_of(resume) if resume is not None else None)
