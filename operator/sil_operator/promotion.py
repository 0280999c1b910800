"""Carrying out a promotion: verify the candidate checkpoint, then point `champion.json` at it.

Both runners call this, so the rule holds everywhere: `champion.json` is replaced only after every file of the
checkpoint it points to is in the store with the size and sha256 its optimize manifest lists. Writing the pointer
is one atomic put, and doing it twice with the same content is harmless (a replayed Promote after a crash).
"""

from __future__ import annotations

from datetime import datetime

from sil_operator.manifests import read_manifest
from sil_operator.planner import Promote
from sil_stages.contract import ChampionPointer, champion_uri, manifest_uri, stage_uri
from sil_stages.store import Store, StoreError
from sil_stages.verify import verify_tree


def promote(store: Store, storage_uri: str, action: Promote, now: datetime) -> ChampionPointer:
    optimize_dir = stage_uri(storage_uri, action.iteration, "optimize")
    uri = manifest_uri(optimize_dir)
    manifest = read_manifest(store, storage_uri, action.iteration, "optimize")
    if manifest is None:
        raise StoreError(f"{uri}: missing; the candidate of iteration {action.iteration} cannot be promoted")
    checkpoint = [entry for entry in manifest.files if entry.path.startswith("checkpoint/")]
    if not checkpoint:
        raise StoreError(f"{uri}: lists no checkpoint files; the candidate cannot be promoted")
    verify_tree(store, optimize_dir, checkpoint)
    pointer = ChampionPointer(iteration=action.iteration, uri=action.uri, score=action.score, promoted_at=now)
    store.write_text(champion_uri(storage_uri), pointer.model_dump_json(indent=2))
    return pointer
