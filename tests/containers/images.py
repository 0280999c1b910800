"""The project's images for the tests that run them: built (layers cached) by hack/images/build.sh, run with podman.

`make test` builds them first (`make images`) and sets SIL_IMAGES_BUILT=1; a test run started otherwise builds them
itself (seconds when nothing changed, about 10 minutes the first time on a 2-core machine, most of it pip).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from sil_operator.local.containers import ulimit_flags

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "hack" / "images" / "build.sh"
REPOSITORY = "localhost/selfimprove"
TAG = "dev"
PODMAN_HINT = "podman is not installed: `make images` installs podman, buildah, runc and debootstrap (apt)"


def image_name(name: str) -> str:
    return f"{REPOSITORY}/{name}:{TAG}"


def podman() -> str:
    found = shutil.which("podman")
    if found is None:
        raise RuntimeError(PODMAN_HINT)
    return found


def build(names: list[str], log: Path) -> list[str]:
    """Build (or find cached) the named images; their names. The build's output goes to `log`."""
    if os.environ.get("SIL_IMAGES_BUILT") == "1" and all(exists(image_name(n)) for n in names):
        return [image_name(n) for n in names]
    podman()
    with log.open("ab") as output:
        done = subprocess.run(
            ["bash", str(BUILD), *names],
            stdout=subprocess.PIPE,
            stderr=output,
            timeout=3600,
            check=False,
            env={**os.environ, "SIL_IMAGE_TAG": TAG, "SIL_IMAGE_REPOSITORY": REPOSITORY},
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"hack/images/build.sh {' '.join(names)} failed ({done.returncode}):\n{tail}")
    return done.stdout.decode().split()


def exists(image: str) -> bool:
    return subprocess.run([podman(), "image", "exists", image], check=False).returncode == 0


def run_flags() -> list[str]:
    """What every `podman run` here needs: rlimits within this process's hard limits; never a pull."""
    return ["--pull=never", *ulimit_flags()]


def run(
    image: str, *arguments: str, flags: list[str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`podman run --rm` of the image's entrypoint (or `--entrypoint X` in `flags`) with `arguments`."""
    return subprocess.run(
        [podman(), "run", "--rm", *run_flags(), *(flags or []), image, *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
