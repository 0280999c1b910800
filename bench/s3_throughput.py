"""Measures checkpoint upload and download throughput through the store against a real S3 server.

    .venv/bin/python bench/s3_throughput.py [--weights-mib 256] [--repeats 3] [--sweep]
                                            [--json bench/results/s3_throughput.json]

Starts SeaweedFS on 127.0.0.1 (tests/servers/seaweedfs.py, data in a temporary folder) and builds a tree shaped
like a `save_pretrained` checkpoint: one large `model.safetensors` of random bytes (`--weights-mib`) and a few
small json files. Then, `--repeats` times each, in one run so that both see the same machine and server:

- store upload: `Store.upload_dir` (sha256 of every file, multipart transfers with the store's `TransferConfig`,
  the files in parallel): what a stage does to write a checkpoint; MB/s over the whole tree's bytes;
- store download: `Store.download_dir` of the same tree (ranged GETs in parallel, files in parallel);
- raw put / raw get: one `put_object` of the weights file (streamed from disk) and one `get_object` streamed to a
  file: the simplest way to move the same bytes, the baseline the store's tuning must beat.

MB/s is 10^6 bytes per second of wall time, median over the repeats. `--sweep` also times the store's upload and
download for a grid of part sizes and concurrencies (one repeat each), the evidence for `TRANSFER_CHUNK_BYTES` and
`TRANSFER_CONCURRENCY` in `stages/sil_stages/core/store.py`. Prints a table and writes everything as JSON.

Caveat: server and client share this machine's cores, so the numbers say how the transfer settings compare here,
not what a remote S3 delivers (there, per-request latency makes parallel parts matter more, not less).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import sil_stages.core.store as store_module  # noqa: E402
from sil_stages.core.store import MIB, Store, join  # noqa: E402
from tests.servers.seaweedfs import S3Server, running_seaweedfs  # noqa: E402

SWEEP_CHUNKS_MIB = (8, 16, 32, 64)
SWEEP_CONCURRENCY = (2, 4, 8, 10)


def checkpoint_tree(root: Path, weights_mib: int) -> Path:
    """One large weights file and the small json files a checkpoint carries."""
    root.mkdir(parents=True)
    with (root / "model.safetensors").open("wb") as handle:
        for _ in range(weights_mib):
            handle.write(os.urandom(MIB))
    (root / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 2048, "layers": 16}))
    (root / "generation_config.json").write_text(json.dumps({"max_new_tokens": 32}))
    (root / "tokenizer.json").write_text(json.dumps({"vocab": {f"t{i}": i for i in range(50_000)}}))
    (root / "tokenizer_config.json").write_text("{}")
    (root / "special_tokens_map.json").write_text("{}")
    return root


def tree_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


@contextmanager
def store_env(server: S3Server) -> Iterator[None]:
    """The environment a stage pod gets (endpoint, region, credentials), for the store's boto3 client."""
    saved = {key: os.environ.get(key) for key in server.env()}
    os.environ.update(server.env())
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def transfer_settings(chunk_mib: int, concurrency: int) -> Iterator[None]:
    """The store's transfers with another part size and concurrency (the sweep)."""
    saved = store_module.TRANSFER_CHUNK_BYTES, store_module.TRANSFER_CONCURRENCY
    store_module.TRANSFER_CHUNK_BYTES, store_module.TRANSFER_CONCURRENCY = chunk_mib * MIB, concurrency
    try:
        yield
    finally:
        store_module.TRANSFER_CHUNK_BYTES, store_module.TRANSFER_CONCURRENCY = saved


def store_round(store: Store, tree: Path, uri: str, down: Path) -> tuple[float, float]:
    """Seconds for one upload_dir and one download_dir of the tree."""
    up = timed(lambda: store.upload_dir(tree, uri))
    shutil.rmtree(down, ignore_errors=True)
    down_s = timed(lambda: store.download_dir(uri, down))
    return up, down_s


def raw_round(server: S3Server, weights: Path, bucket: str, down: Path) -> tuple[float, float]:
    """Seconds for one put_object and one get_object of the weights file, both streamed."""
    client = server.client()

    def put() -> None:
        with weights.open("rb") as body:
            client.put_object(Bucket=bucket, Key="raw/model.safetensors", Body=body)

    def get() -> None:
        body = client.get_object(Bucket=bucket, Key="raw/model.safetensors")["Body"]
        with down.open("wb") as handle:
            for chunk in body.iter_chunks(MIB):
                handle.write(chunk)

    return timed(put), timed(get)


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights-mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep", action="store_true", help="also time a grid of part sizes and concurrencies")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "s3_throughput.json")
    args = parser.parse_args()
    console = Console()
    started = datetime.now(UTC)
    info = machine()

    with tempfile.TemporaryDirectory(prefix="s3-throughput-") as tmp_name:
        tmp = Path(tmp_name)
        tree = checkpoint_tree(tmp / "checkpoint", args.weights_mib)
        weights = tree / "model.safetensors"
        total, weights_size = tree_bytes(tree), weights.stat().st_size
        with running_seaweedfs(tmp / "seaweedfs") as server, store_env(server):
            bucket_uri = server.create_bucket("bench")
            bucket = bucket_uri.removeprefix("s3://")
            store = Store()
            samples: dict[str, list[float]] = {"store_up": [], "store_down": [], "raw_put": [], "raw_get": []}
            # One untimed round first: the server grows its volumes on the first writes.
            store_round(store, tree, join(bucket_uri, "warmup"), tmp / "down")
            raw_round(server, weights, bucket, tmp / "raw.bin")
            for repeat in range(args.repeats):
                up, down = store_round(store, tree, join(bucket_uri, f"store-{repeat}"), tmp / "down")
                put, get = raw_round(server, weights, bucket, tmp / "raw.bin")
                samples["store_up"].append(mbps(total, up))
                samples["store_down"].append(mbps(total, down))
                samples["raw_put"].append(mbps(weights_size, put))
                samples["raw_get"].append(mbps(weights_size, get))
                console.print(
                    f"repeat {repeat + 1}: store up {samples['store_up'][-1]:.0f} MB/s, down "
                    f"{samples['store_down'][-1]:.0f} MB/s; raw put {samples['raw_put'][-1]:.0f} MB/s, "
                    f"get {samples['raw_get'][-1]:.0f} MB/s"
                )
            sweep: list[dict[str, Any]] = []
            if args.sweep:
                for chunk_mib in SWEEP_CHUNKS_MIB:
                    for concurrency in SWEEP_CONCURRENCY:
                        with transfer_settings(chunk_mib, concurrency):
                            uri = join(bucket_uri, f"sweep-{chunk_mib}-{concurrency}")
                            up, down = store_round(Store(), tree, uri, tmp / "down")
                        row = {
                            "chunk_mib": chunk_mib,
                            "concurrency": concurrency,
                            "up_mbps": mbps(total, up),
                            "down_mbps": mbps(total, down),
                        }
                        sweep.append(row)
                        console.print(
                            f"sweep {chunk_mib} MiB x {concurrency}: up {row['up_mbps']:.0f} MB/s, "
                            f"down {row['down_mbps']:.0f} MB/s"
                        )
            sha_s = timed(lambda: store_module.sha256_of(weights))

    median = {name: statistics.median(values) for name, values in samples.items()}
    table = Table(
        title=f"checkpoint of {total / MIB:.0f} MiB ({args.weights_mib} MiB weights), median of {args.repeats}"
    )
    for column in ("direction", "store (tuned) MB/s", "raw single request MB/s", "store / raw"):
        table.add_column(column, justify="right" if "MB/s" in column or "/" in column else "left")
    table.add_row(
        "upload",
        f"{median['store_up']:.0f}",
        f"{median['raw_put']:.0f}",
        f"{median['store_up'] / median['raw_put']:.2f}",
    )
    table.add_row(
        "download",
        f"{median['store_down']:.0f}",
        f"{median['raw_get']:.0f}",
        f"{median['store_down'] / median['raw_get']:.2f}",
    )
    console.print(table)
    console.print(
        f"sha256 of the weights file alone (part of every store upload): {mbps(weights_size, sha_s):.0f} MB/s"
    )

    result = {
        "started_at": started.isoformat(),
        "machine": info,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "tree_bytes": total,
        "weights_bytes": weights_size,
        "transfer": {
            "chunk_bytes": store_module.TRANSFER_CHUNK_BYTES,
            "concurrency": store_module.TRANSFER_CONCURRENCY,
            "tree_workers": store_module.TREE_WORKERS,
        },
        "samples_mbps": samples,
        "median_mbps": median,
        "ratio": {
            "upload": median["store_up"] / median["raw_put"],
            "download": median["store_down"] / median["raw_get"],
        },
        "sha256_mbps": mbps(weights_size, sha_s),
        "sweep": sweep,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
