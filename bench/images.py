"""The images' build times and sizes, as `make images` / `make image-gpu` build them here (podman, Debian base).

    .venv/bin/python bench/images.py [--images operator stage-cpu] [--cold] [--json bench/results/images.json]

For each image: the cached build (`hack/images/build.sh NAME` with nothing changed: what every `make test` pays),
the build after a change to the source (a comment appended to a copy of the checkout's stage and operator code: the
wheel stage and the last layer rebuilt), and with `--cold` a build with no layer cache (`SIL_IMAGE_NO_CACHE=1`:
every download and install again; minutes). Then the image's size and, for the GPU image, the versions of the
packages that matter as resolved inside it. The machine's load average is printed beside each figure, since this
shared machine's numbers depend on it. Writes the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "hack" / "images" / "build.sh"
REPOSITORY = "localhost/selfimprove"
VERSIONS = ("torch", "transformers", "trl", "peft", "accelerate", "vllm", "deepspeed", "kopf", "kubernetes")


def build(name: str, cwd: Path, **env: str) -> float:
    started = time.monotonic()
    subprocess.run(
        ["bash", str(cwd / "hack" / "images" / "build.sh"), name],
        cwd=cwd,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **env},
    )
    return time.monotonic() - started


def changed_checkout() -> Path:
    """A copy of the build context with one comment added to the code: what a commit that changes code looks like."""
    folder = Path(tempfile.mkdtemp(prefix="sil-bench-images-"))
    for part in ("pyproject.toml", "README.md", ".dockerignore", "images", "hack", "operator", "stages"):
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, folder / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, folder / part)
    for module in ("stages/sil_stages/__init__.py", "operator/sil_operator/__init__.py"):
        with (folder / module).open("a") as handle:
            handle.write(f"# bench/images.py {time.time()}\n")
    return folder


def size_mb(image: str) -> int:
    out = subprocess.run(
        ["podman", "image", "inspect", image, "--format", "{{.Size}}"], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip()) // 1_000_000


def versions(image: str) -> dict[str, str]:
    probe = (
        "import importlib.metadata as m, json, sys\n"
        f"names = {list(VERSIONS)!r}\n"
        "found = {}\n"
        "for n in names:\n"
        "    try: found[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "found['python'] = sys.version.split()[0]\n"
        "print(json.dumps(found))\n"
    )
    sys.path.insert(0, str(REPO / "operator"))
    from sil_operator.local.containers import ulimit_flags

    out = subprocess.run(
        ["podman", "run", "--rm", "--pull=never", *ulimit_flags(), "--entrypoint=python", image, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def load() -> float:
    return os.getloadavg()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", nargs="+", default=["operator", "stage-cpu"])
    parser.add_argument("--cold", action="store_true", help="also build with no layer cache (minutes)")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "images.json")
    args = parser.parse_args()
    console = Console()
    rows: list[dict[str, Any]] = []
    changed = changed_checkout()
    try:
        for name in args.images:
            image = f"{REPOSITORY}/{name}:dev"
            row: dict[str, Any] = {"image": image}
            if args.cold:
                row["load_before_cold"] = load()
                row["cold_s"] = build(name, REPO, SIL_IMAGE_NO_CACHE="1")
            build(name, REPO)  # whatever the cold build left, the cache now holds this checkout
            row["load_before_cached"] = load()
            row["cached_s"] = build(name, REPO)
            row["code_change_s"] = build(name, changed)
            build(name, REPO)  # the image is this checkout's again
            row["size_mb"] = size_mb(image)
            if name == "stage-gpu":
                row["versions"] = versions(image)
            rows.append(row)
    finally:
        shutil.rmtree(changed, ignore_errors=True)
    table = Table(title=f"Images ({platform.node()}, {os.cpu_count()} CPUs)")
    for column in ("image", "cold s", "cached s", "code change s", "size MB", "load"):
        table.add_column(column)
    for row in rows:
        cold = f"{row['cold_s']:.0f}" if "cold_s" in row else "-"
        table.add_row(
            row["image"],
            cold,
            f"{row['cached_s']:.1f}",
            f"{row['code_change_s']:.1f}",
            str(row["size_mb"]),
            f"{row['load_before_cached']:.1f}",
        )
    console.print(table)
    for row in rows:
        if "versions" in row:
            console.print(f"{row['image']}: {row['versions']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    result = {"at": datetime.now().isoformat(timespec="seconds"), "machine": platform.node(), "rows": rows}
    args.json.write_text(json.dumps(result, indent=2))
    console.print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
