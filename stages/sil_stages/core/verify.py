"""Checks that stored files are the ones a manifest describes, byte for byte.

A manifest lists every file a stage wrote with its size and sha256 (see `contract`). The store's transfers are
atomic per object, but an object can still change after the stage sealed its manifest: a later write by hand, a
bucket restored from an old backup, a bit flip on a disk. Reading a checkpoint through these functions turns
any of that into a `StoreError` naming the file, instead of a model that loads and quietly behaves differently.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sil_stages.core.contract import FileEntry, Manifest
from sil_stages.core.store import Store, StoreError, in_parallel, inside, join, sha256_of

_RERUN_HINT = "delete its _manifest.json to run the stage again"


def entries_under(manifest: Manifest | Iterable[FileEntry], folder: str) -> list[FileEntry]:
    """The entries below `folder` of the stage dir, with paths relative to `folder` (e.g. the checkpoint's)."""
    files = manifest.files if isinstance(manifest, Manifest) else manifest
    prefix = folder.strip("/") + "/"
    return [
        entry.model_copy(update={"path": entry.path[len(prefix) :]}) for entry in files if entry.path.startswith(prefix)
    ]


def check_sizes(store: Store, stage_dir_uri: str, entries: Iterable[FileEntry], listed_by: str, hint: str) -> None:
    """Every entry exists under `stage_dir_uri` with its listed size (one HEAD each, no content read); else a
    StoreError naming the first bad file, `listed_by` (which manifest lists it) and `hint` (what to do)."""
    for entry in entries:
        uri = join(stage_dir_uri, entry.path)
        size = store.size(uri)
        if size is None:
            raise StoreError(f"{uri}: missing, although {listed_by} lists it; {hint}")
        if size != entry.size:
            raise StoreError(f"{uri}: wrong size, {size} bytes where {listed_by} says {entry.size}; {hint}")


def verify_tree(store: Store, stage_dir_uri: str, manifest: Manifest | Iterable[FileEntry]) -> None:
    """Every listed file exists under `stage_dir_uri` with its size and sha256; else a StoreError on the first bad one.

    Sizes are checked first (one HEAD each), so a missing or truncated file is reported without reading any
    checkpoint bytes; then each file is read back in full and hashed.
    """
    entries = list(manifest.files if isinstance(manifest, Manifest) else manifest)
    check_sizes(store, stage_dir_uri, entries, f"the manifest of {stage_dir_uri}", _RERUN_HINT)
    for entry in entries:
        uri = join(stage_dir_uri, entry.path)
        digest = store.sha256(uri)
        if digest != entry.sha256:
            raise StoreError(
                f"{uri}: corrupted, sha256 {digest} where the manifest of {stage_dir_uri} says {entry.sha256}; "
                f"{_RERUN_HINT}"
            )


def download_verified(store: Store, uri: str, manifest_entries: Iterable[FileEntry], local_dir: Path) -> Path:
    """Downloads the files listed (paths relative to `uri`) into `local_dir` and checks each one's sha256.

    Only listed files are fetched: an object under `uri` that the manifest does not know is not part of the
    checkpoint. A file whose bytes do not match is deleted before the StoreError is raised, so a cache never
    keeps it.
    """
    entries = list(manifest_entries)
    if not entries:
        raise StoreError(f"{uri}: the manifest lists no files under it; nothing to download")
    local_dir.mkdir(parents=True, exist_ok=True)

    def fetch(entry: FileEntry) -> None:
        source = join(uri, entry.path)
        target = store.download_file(source, inside(local_dir, entry.path))
        size, digest = target.stat().st_size, sha256_of(target)
        if (size, digest) != (entry.size, entry.sha256):
            target.unlink()
            raise StoreError(
                f"{source}: corrupted, downloaded {size} bytes with sha256 {digest} where the manifest says "
                f"{entry.size} bytes with sha256 {entry.sha256}; delete the _manifest.json of the stage that "
                "wrote it to run that stage again"
            )

    in_parallel(fetch, entries, cost=lambda entry: entry.size)
    return local_dir
