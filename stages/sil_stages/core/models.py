"""Resolves a model URI to something `from_pretrained` can load, and loads model and tokenizer.

`file://` checkpoints are used in place (no copy of gigabytes on a local run), `s3://` ones are downloaded
once into a cache directory keyed by the URI (a second stage on the same node reuses them), and
`hf://org/name` is handed to `from_pretrained` as `org/name` for clusters that can reach the hub.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from sil_stages.core.contract import MANIFEST_NAME, Manifest
from sil_stages.core.errors import StageInputError
from sil_stages.core.store import Store, StoreError, is_remote, local_path
from sil_stages.core.verify import download_verified, entries_under, verify_tree

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CACHE_ENV = "SIL_MODEL_CACHE"
"""Where s3:// checkpoints are cached; default `~/.cache/selfimprove/models`."""


def cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "selfimprove" / "models"


@dataclass(frozen=True)
class VerifiedCheckpoint:
    path: str
    """What `from_pretrained` loads."""
    manifest_sha256: str | None
    """The sha256 of the stage manifest (its bytes as stored) every file was checked against; None for a model
    that no stage wrote (a base model), which has no manifest to check."""


def _manifest_of(store: Store, uri: str) -> tuple[str, bytes] | None:
    """The folder name and the raw manifest of the stage that wrote the checkpoint at `uri`, when one did."""
    parent, _, folder = uri.rstrip("/").rpartition("/")
    manifest_uri = f"{parent}/{MANIFEST_NAME}"
    if not folder or not store.exists(manifest_uri):
        return None
    return folder, store.read_bytes(manifest_uri)


def resolve_verified(store: Store, uri: str, *, field: str) -> VerifiedCheckpoint:
    """As `resolve_model`, and a checkpoint written by a stage is checked file by file (size and sha256) against
    that stage's manifest even when it is local; the digest of the manifest used is returned, so the evaluate
    stage can record which checkpoint it measured and a promotion can refuse any other."""
    if urlparse(uri).scheme == "hf":
        return VerifiedCheckpoint(resolve_model(store, uri, field=field), None)
    if is_remote(uri):
        path = resolve_model(store, uri, field=field)
        marker = (Path(path) / ".complete").read_text().splitlines()
        return VerifiedCheckpoint(path, marker[1] if len(marker) > 1 else None)
    path = resolve_model(store, uri, field=field)
    found = _manifest_of(store, uri)
    if found is None:
        return VerifiedCheckpoint(path, None)
    folder, raw = found
    entries = entries_under(Manifest.model_validate_json(raw), folder)
    if not entries:
        return VerifiedCheckpoint(path, None)
    try:
        verify_tree(store, uri, entries)
    except StoreError as error:
        raise StageInputError(f"{field}: {error}") from error
    return VerifiedCheckpoint(path, hashlib.sha256(raw).hexdigest())


def resolve_model(store: Store, uri: str, *, field: str) -> str:
    """A local directory or a hub id for `uri`; `field` names the config field, for the error message."""
    parsed = urlparse(uri)
    if parsed.scheme == "hf":
        name = f"{parsed.netloc}{parsed.path}".strip("/")
        if not name:
            raise StageInputError(f"{field}: {uri} names no model; write hf://org/name")
        return name
    if is_remote(uri):
        key = hashlib.sha256(uri.encode()).hexdigest()[:16]
        target = cache_root() / key
        marker = target / ".complete"
        try:
            found = _manifest_of(store, uri)
            digest = hashlib.sha256(found[1]).hexdigest() if found else ""
            if not marker.exists() or marker.read_text().splitlines()[1:2] != ([digest] if digest else []):
                if target.exists():  # cached against another manifest (or before digests were kept)
                    shutil.rmtree(target)
                _download(store, uri, target, found)
                marker.write_text(uri + "\n" + (digest + "\n" if digest else ""))
        except StoreError as error:
            raise StageInputError(f"{field}: cannot download {uri} ({error})") from error
        return str(target)
    try:
        path = local_path(uri)
    except StoreError as error:
        raise StageInputError(f"{field}: {uri} is not a model URI; use file://, s3:// or hf://") from error
    if not (path / "config.json").is_file():
        raise StageInputError(f"{field}: {uri} holds no config.json; point it at a save_pretrained directory")
    return str(path)


def _download(store: Store, uri: str, target: Path, found: tuple[str, bytes] | None) -> None:
    """A checkpoint written by the optimize stage is checked file by file against its manifest (sha256), so a
    corrupted object is never cached; any other model directory (a base model uploaded by hand) is copied as is."""
    if found is not None:
        folder, raw = found
        entries = entries_under(Manifest.model_validate_json(raw), folder)
        if entries:
            download_verified(store, uri, entries, target)
            return
    store.download_dir(uri, target)


def load_tokenizer(name_or_path: str, *, padding_side: str = "left") -> PreTrainedTokenizerBase:
    """The tokenizer with a pad token (EOS when the checkpoint has none), padded on `padding_side`."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_model(name_or_path: str, *, device: str | None = None) -> PreTrainedModel:
    """The causal LM in eval mode on `device` (CUDA when available)."""
    import torch
    from transformers import AutoModelForCausalLM

    target = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if target == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    model: Any = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype)
    model.to(target)
    model.eval()
    loaded: PreTrainedModel = model
    return loaded
