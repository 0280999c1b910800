"""The store: URIs in, atomic writes, trees up and down. (S3 against a real server: tests/integration.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sil_stages.core.contract import champion_uri, manifest_uri, stage_uri
from sil_stages.core.store import Store, StoreError, join, sha256_of, to_uri


def test_the_layout_follows_the_design(tmp_path: Path) -> None:
    storage = tmp_path.as_uri()
    assert stage_uri(storage, 3, "select") == f"{storage}/iterations/3/select"
    assert manifest_uri(stage_uri(storage, 3, "select")) == f"{storage}/iterations/3/select/_manifest.json"
    assert champion_uri(storage + "/") == f"{storage}/champion.json"


def test_plain_paths_become_file_uris_relative_to_a_base(tmp_path: Path) -> None:
    assert to_uri("data/x.jsonl", tmp_path) == (tmp_path / "data" / "x.jsonl").as_uri()
    assert to_uri("s3://bucket/key") == "s3://bucket/key"
    assert to_uri("hf://org/model") == "hf://org/model"


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path: Path) -> None:
    store = Store()
    uri = join(tmp_path.as_uri(), "a", "b.json")
    store.write_text(uri, "one")
    store.write_text(uri, "two")
    assert store.read_text(uri) == "two"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.json"]


def test_a_failed_write_keeps_the_previous_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store()
    uri = join(tmp_path.as_uri(), "state.json")
    store.write_text(uri, "previous")

    def crash(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.write_text(uri, "next")
    monkeypatch.undo()
    assert store.read_text(uri) == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_trees_upload_with_sizes_and_hashes(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "model.safetensors").write_bytes(b"\x00" * 1000)
    (source / "sub" / "config.json").write_text("{}")
    store = Store()
    target = join(tmp_path.as_uri(), "out", "checkpoint")
    entries = store.upload_dir(source, target)
    assert [(e.path, e.size) for e in entries] == [("model.safetensors", 1000), ("sub/config.json", 2)]
    assert entries[0].sha256 == sha256_of(source / "model.safetensors")
    assert sorted(store.list_files(target)) == ["model.safetensors", "sub/config.json"]
    assert store.download_dir(target, tmp_path / "unused") == tmp_path / "out" / "checkpoint"


def test_missing_things_are_reported_with_their_uri(tmp_path: Path) -> None:
    store = Store()
    missing = join(tmp_path.as_uri(), "nope.json")
    assert not store.exists(missing)
    with pytest.raises(StoreError, match=r"nope\.json: no such file"):
        store.read_text(missing)
    with pytest.raises(StoreError, match="no such directory"):
        store.download_dir(join(tmp_path.as_uri(), "nodir"), tmp_path / "x")
    with pytest.raises(StoreError, match="expected s3://bucket/key"):
        store.read_text("s3://")


@pytest.mark.parametrize("uri", ["ftp://host/runs", "gs://bucket/runs", "http://host/x.jsonl"])
def test_an_unknown_scheme_is_refused_not_taken_for_a_local_folder(tmp_path: Path, uri: str) -> None:
    """Validation rejects these first; the store refuses them too rather than writing under ./ftp:/host/..."""
    with pytest.raises(StoreError, match=r"unknown scheme .*: the store reads s3://bucket/key, file:///path or a path"):
        to_uri(uri, tmp_path)
    store = Store()
    for action in (store.exists, store.read_text, lambda u: store.write_text(u, "x")):
        with pytest.raises(StoreError, match=r"unknown scheme"):
            action(uri)
    assert list(tmp_path.iterdir()) == [], "nothing was written locally"


def test_an_atomic_write_to_a_file_store_gets_the_mode_of_a_plain_write_not_mkstemps_0600(tmp_path: Path) -> None:
    """Another user (a serving process, the user of a stage image) must be able to read a file store's artifacts."""
    import os

    from sil_stages.core.store import process_umask

    target = tmp_path / "out" / "manifest.json"
    Store().write_text(target.as_uri(), "{}")
    assert target.stat().st_mode & 0o777 == 0o666 & ~process_umask()
    assert os.stat(target).st_mode & 0o004, "readable by others under the usual umask 022"
