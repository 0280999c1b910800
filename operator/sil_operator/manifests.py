"""Reading stage manifests from the store: the one place that knows where a stage's manifest is.

A manifest is written once, last, and never changes, so a reader may keep every manifest it found; a missing one
is looked up again next time (the stage may finish in between).
"""

from __future__ import annotations

from pydantic import ValidationError

from sil_stages.core.contract import Manifest, manifest_uri, stage_uri
from sil_stages.core.store import Store, StoreError


class ManifestUnreadable(StoreError):
    """A stage manifest exists but does not parse (written by hand, cut short by a foreign tool)."""


def read_manifest(store: Store, storage_uri: str, iteration: int, stage: str) -> Manifest | None:
    """The stage's manifest, or None when the stage has not finished; ManifestUnreadable when it does not parse."""
    uri = manifest_uri(stage_uri(storage_uri, iteration, stage))
    if not store.exists(uri):
        return None
    try:
        return Manifest.model_validate_json(store.read_bytes(uri))
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "the document"
        raise ManifestUnreadable(
            f"{uri}: not a stage manifest ({where}: {problem['msg']}); delete it to run the {stage} stage of "
            f"iteration {iteration} again"
        ) from error


class ManifestCache:
    """Manifests of one loop's store, each read at most once."""

    def __init__(self, store: Store, storage_uri: str) -> None:
        self.store = store
        self.storage_uri = storage_uri
        self._found: dict[tuple[int, str], Manifest] = {}

    def get(self, iteration: int, stage: str) -> Manifest | None:
        key = (iteration, stage)
        if key not in self._found:
            manifest = read_manifest(self.store, self.storage_uri, iteration, stage)
            if manifest is None:
                return None
            self._found[key] = manifest
        return self._found[key]
