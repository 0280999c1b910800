"""The data select kept in this loop's earlier iterations: what `accumulate` trains on again and what
`keep.dedupe.acrossIterations` deduplicates against.

Each select writes its own iteration's kept examples to `kept.jsonl` (and what optimize trains on, possibly
accumulated, to `train.jsonl`), so accumulating reads every earlier `kept.jsonl` once and never counts an example
twice. An iteration is read only when its select manifest exists and lists `kept.jsonl` with the size and sha256
that are stored: a select that never finished, or data changed after it did, is skipped with a warning, not
trained on.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sil_stages.core.contract import KEPT_FILE, Manifest, manifest_uri
from sil_stages.core.records import Record, parse_jsonl
from sil_stages.core.store import Store, StoreError, join

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EarlierKept:
    uri: str
    rows: list[Record]


def read_verified_rows(
    store: Store, stage_dir: str, name: str, *, stage: str, purpose: str, field: str, expected: bool = True
) -> list[Record] | None:
    """The JSONL rows of `stage_dir/name` when the stage's manifest lists that file with the size and sha256 that
    are stored; None (with a warning naming `purpose`) when there is no manifest, the file is not listed (warned
    only when `expected`), or it changed after the stage."""
    try:
        raw = store.read_bytes(manifest_uri(stage_dir))
    except StoreError:
        log.warning("%s: %s has no %s manifest (the stage never finished); skipped", purpose, stage_dir, stage)
        return None
    entry = next((f for f in Manifest.model_validate_json(raw).files if f.path == name), None)
    if entry is None:
        if expected:
            log.warning("%s: %s lists no %s; skipped", purpose, stage_dir, name)
        return None
    data = store.read_bytes(join(stage_dir, name))
    if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
        log.warning("%s: %s/%s differs from its manifest (changed after the stage); skipped", purpose, stage_dir, name)
        return None
    return parse_jsonl(data.decode("utf-8"), uri=join(stage_dir, name), field=field)


def read_earlier_kept(store: Store, select_uris: Sequence[str], shape_keys: frozenset[str]) -> list[EarlierKept]:
    """The kept examples of each earlier iteration (oldest first) whose rows have the keys of this data shape."""
    found: list[EarlierKept] = []
    for uri in select_uris:
        rows = read_verified_rows(
            store, uri, KEPT_FILE, stage="select", purpose="accumulate", field="earlier_select_uris"
        )
        if rows is None:
            continue
        if rows and not shape_keys <= set(rows[0]):
            log.warning("accumulate: %s holds another data shape (%s); skipped", uri, ", ".join(sorted(rows[0])))
            continue
        found.append(EarlierKept(uri, rows))
    return found


def accumulate(current: list[Record], earlier: Sequence[EarlierKept], max_examples: int | None) -> list[Record]:
    """Earlier iterations' kept data, oldest first, then this iteration's; over `max_examples`, the oldest go first
    (this iteration's own data is cut last)."""
    rows = [row for kept in earlier for row in kept.rows] + current
    if max_examples is not None and len(rows) > max_examples:
        rows = rows[len(rows) - max_examples :]
    return rows
