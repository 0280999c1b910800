"""Writes a stage's outputs, then its manifest as the very last write.

The manifest is the stage's completion (see `contract`): runners look for it and for nothing else. So outputs
go first, each one atomically, and the manifest lists what was written with sizes and sha256 so that a reader
can tell a later, foreign change from the stage's own output.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from sil_stages.core.contract import FileEntry, Manifest, MetricSample, StageName, manifest_uri, utcnow
from sil_stages.core.store import Store, join


def is_finished(store: Store, output_uri: str) -> bool:
    """True when the stage directory already holds a manifest: the stage must not run again."""
    return store.exists(manifest_uri(output_uri))


class StageOutputs:
    """Collects the files a stage writes under its directory and seals them with the manifest."""

    def __init__(self, store: Store, output_uri: str) -> None:
        self._store = store
        self._output_uri = output_uri
        self._files: list[FileEntry] = []
        self._started_at = utcnow()
        self._started = time.monotonic()

    def write_text(self, name: str, text: str) -> FileEntry:
        data = text.encode("utf-8")
        self._store.write_bytes(join(self._output_uri, name), data)
        entry = FileEntry(path=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())
        self._files.append(entry)
        return entry

    def upload_dir(self, local_dir: Path, name: str) -> list[FileEntry]:
        entries = self._store.upload_dir(local_dir, join(self._output_uri, name))
        prefixed = [entry.model_copy(update={"path": f"{name}/{entry.path}"}) for entry in entries]
        self._files.extend(prefixed)
        return prefixed

    def seal(
        self,
        *,
        stage: StageName,
        loop: str,
        iteration: int,
        metrics: dict[str, float],
        series: tuple[MetricSample, ...] = (),
        verified_manifest_sha256: str | None = None,
        findings: dict[str, list[str]] | None = None,
    ) -> Manifest:
        """Writes the manifest; call it once, after every output is written."""
        manifest = Manifest(
            stage=stage,
            iteration=iteration,
            loop=loop,
            files=tuple(self._files),
            metrics=metrics,
            series=series,
            started_at=self._started_at,
            finished_at=utcnow(),
            duration_seconds=round(time.monotonic() - self._started, 3),
            verified_manifest_sha256=verified_manifest_sha256,
            findings=findings or {},
        )
        self._store.write_text(manifest_uri(self._output_uri), manifest.model_dump_json(indent=2) + "\n")
        return manifest
