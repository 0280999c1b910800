"""Carrying out a promotion: check the candidate is the checkpoint evaluate measured, then point `champion.json`
at it.

Both runners call this, so the rule holds everywhere. The evaluate stage already read every byte of the candidate
and checked it against the optimize manifest (size and sha256 per file), and recorded the sha256 of that manifest
(`verified_manifest_sha256`). A promotion then reads no checkpoint content, which for a 15 GB checkpoint would
take minutes in the operator's small pod; it checks:

- the optimize manifest's sha256 equals what evaluate verified (the file list and digests did not change since);
- every checkpoint file it lists exists with the listed size (one HEAD or stat per file).

The trade-off: a file rewritten after evaluate with different bytes of the same size is not caught here; it is
caught by the next stage that downloads the champion (acquire and optimize verify sha256 per file on S3, see
`sil_stages.core.models`). An evaluate manifest without the digest (written by an older stage image) falls back to
re-hashing every file here, the old rule.

Writing the pointer is one atomic put, and doing it twice with the same content is harmless (a replayed Promote
after a crash).
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sil_operator.failures import PromotionCheckFailed
from sil_operator.manifests import read_manifest
from sil_operator.planner import Promote
from sil_stages.core.contract import ChampionPointer, Manifest, champion_uri, manifest_uri, stage_uri
from sil_stages.core.store import Store, StoreError
from sil_stages.core.verify import check_sizes, verify_tree

_RERUN_HINT = "delete the optimize stage's _manifest.json of this iteration to train and evaluate it again"


def promote(store: Store, storage_uri: str, action: Promote, now: datetime) -> ChampionPointer:
    """Raises PromotionCheckFailed (nothing promoted) when the candidate is not the checkpoint evaluate measured."""
    check_candidate(store, storage_uri, action.iteration)
    pointer = ChampionPointer(iteration=action.iteration, uri=action.uri, score=action.score, promoted_at=now)
    store.write_text(champion_uri(storage_uri), pointer.model_dump_json(indent=2))
    return pointer


def check_candidate(store: Store, storage_uri: str, iteration: int) -> None:
    optimize_dir = stage_uri(storage_uri, iteration, "optimize")
    uri = manifest_uri(optimize_dir)
    if not store.exists(uri):
        raise PromotionCheckFailed(f"{uri}: missing; the candidate of iteration {iteration} cannot be promoted")
    raw = store.read_bytes(uri)
    manifest = Manifest.model_validate_json(raw)
    checkpoint = [entry for entry in manifest.files if entry.path.startswith("checkpoint/")]
    if not checkpoint:
        raise PromotionCheckFailed(f"{uri}: lists no checkpoint files; the candidate cannot be promoted")
    evaluate = read_manifest(store, storage_uri, iteration, "evaluate")
    verified = evaluate.verified_manifest_sha256 if evaluate is not None else None
    if verified is None:
        try:
            verify_tree(store, optimize_dir, checkpoint)
        except StoreError as error:
            raise PromotionCheckFailed(f"the candidate of iteration {iteration}: {error}") from error
        return
    digest = hashlib.sha256(raw).hexdigest()
    if digest != verified:
        raise PromotionCheckFailed(
            f"{uri}: changed after evaluate verified the candidate (sha256 {digest}, evaluate checked {verified}); "
            f"nothing is promoted; {_RERUN_HINT}"
        )
    try:
        check_sizes(store, optimize_dir, checkpoint, "the optimize manifest", _RERUN_HINT)
    except StoreError as error:
        raise PromotionCheckFailed(str(error)) from error
