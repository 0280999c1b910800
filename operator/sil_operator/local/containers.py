"""`sil run --stage-image IMAGE`: each stage in a container of the stage image, as the operator's Jobs run it.

A platform team builds its own stage image (its verifier, its packages) and wants to know that it works before a
cluster ever pulls it. With a stage image, `sil run` starts every stage with podman (or another engine with the same
command line) instead of a local process, under the same constraints a stage pod has (`sil_operator.kube.objects`):
the image's own non-root user, a read-only root filesystem, writable /tmp and /scratch (HOME, HF_HOME and the model
cache, as the pod's emptyDirs), no capabilities, no privilege escalation, and no network unless the stage config
names a URL (an S3 endpoint, a Pushgateway). The store folder, the loop's folder (user modules on PYTHONPATH) and
every local file the stage config names are mounted at the same paths as on the host, so the config needs no
rewriting; only the store is writable.

Ownership: as root, the container runs as the image's user and podman's `:U` option hands the store folder to that
user (the host's root still reads and writes it); as another user, the container runs as that user
(`--userns=keep-id`, rootless podman), so what stages write stays the caller's. Only the root case is tested here.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sil_operator.failures import StageInputUnreadable
from sil_operator.kube.objects import SCRATCH_DIR, SCRATCH_ENV, TMP_DIR


def stage_threads() -> str:
    """OMP_NUM_THREADS for a stage unless the environment or spec.runtime.env sets it: torch's CPU kernels
    oversubscribe a small machine shared with the runner (measured: 30x slower training on 2 busy cores), so half the
    cores. The same for a stage process and a stage container."""
    return str(max(1, (os.cpu_count() or 2) // 2))


NPROC_CAP = 32768
"""The most processes a container is given: runc sets the limit, and the kernel refuses one above the caller's hard
limit (seen: 65536 refused under a hard limit of 96367; 32768 accepted)."""


def ulimit_flags() -> list[str]:
    """`--ulimit` flags at or below this process's hard limits, which the OCI runtime must not exceed."""
    flags = []
    for name, which, cap in (
        ("nofile", resource.RLIMIT_NOFILE, 1 << 20),
        ("nproc", resource.RLIMIT_NPROC, NPROC_CAP),
    ):
        _, hard = resource.getrlimit(which)
        value = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
        flags += ["--ulimit", f"{name}={value}:{value}"]
    return flags


def referenced_paths(config: Any) -> Iterator[Path]:
    """Every absolute local path a stage config names: `file://` URIs and absolute paths that exist here."""
    if isinstance(config, Mapping):
        for value in config.values():
            yield from referenced_paths(value)
    elif isinstance(config, list):
        for value in config:
            yield from referenced_paths(value)
    elif isinstance(config, str):
        text = config.removeprefix("file://")
        if text.startswith("/") and "\n" not in text and len(text) < 4096:
            path = Path(text)
            if path.exists():
                yield path


def covering_mounts(paths: list[Path]) -> list[Path]:
    """The fewest folders that hold all `paths` (a file's folder; a folder inside another is dropped)."""
    folders = sorted({(p if p.is_dir() else p.parent).resolve() for p in paths}, key=lambda p: (len(p.parts), str(p)))
    kept: list[Path] = []
    for folder in folders:
        if not any(folder == k or k in folder.parents for k in kept):
            kept.append(folder)
    return kept


INPUT_FILES_CHECKED = 10_000
"""At most this many files under the read-only mounts are checked for readability before a stage starts."""


def unreadable_by_others(folders: list[Path], skip: Path | None = None) -> list[Path]:
    """Files under `folders` (not under `skip`) that a user other than their owner cannot read (mode without o+r)."""
    found: list[Path] = []
    checked = 0
    for folder in folders:
        for path in [folder, *folder.rglob("*")] if folder.is_dir() else [folder]:
            if skip is not None and (path == skip or skip in path.parents):
                continue
            checked += 1
            if checked > INPUT_FILES_CHECKED:
                return found
            try:
                mode = path.stat().st_mode
            except OSError:
                continue
            needed = 0o005 if path.is_dir() else 0o004
            if mode & needed != needed:
                found.append(path)
    return found


@dataclass(frozen=True)
class StageContainers:
    """How to start one stage in a container: the engine's command line, built without running anything."""

    image: str
    store_dir: Path
    """The loop's local store folder: the only writable mount."""
    python_path: list[Path]
    env: Mapping[str, str] = field(default_factory=dict)
    engine: str = "podman"
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)

    def container_name(self, run_name: str, attempt: int) -> str:
        return f"sil-{run_name}-a{attempt}-{os.getpid()}"

    def command(self, stage: str, config_path: Path, run_name: str, attempt: int) -> list[str]:
        text = config_path.read_text(encoding="utf-8")
        config = json.loads(text)
        store = self.store_dir.resolve()
        inputs = list(referenced_paths(config))
        readonly = covering_mounts([config_path, *self.python_path, *inputs])
        # Inside the store: already mounted (writable). Above it: mounted read-only, the store's own mount (deeper)
        # stays writable, as podman orders mounts by depth.
        readonly = [p for p in readonly if p != store and store not in p.parents]
        as_root = self.uid == 0
        if as_root:
            private = unreadable_by_others([*inputs, *self.python_path], skip=store)
            if private:
                shown = ", ".join(f"{p} (mode {p.stat().st_mode & 0o777:04o})" for p in private[:3])
                raise StageInputUnreadable(
                    f"--stage-image: the image's own user cannot read {shown}"
                    + (f" and {len(private) - 3} more" if len(private) > 3 else "")
                    + f" (the {stage} stage reads them). Make them readable, e.g. `chmod -R a+rX "
                    + f"{private[0].parent if private[0].is_file() else private[0]}`, or run without --stage-image"
                )
        command = [
            self.engine,
            "run",
            "--rm",
            "--pull=never",
            f"--name={self.container_name(run_name, attempt)}",
            "--read-only",
            "--cap-drop=all",
            "--security-opt=no-new-privileges",
            f"--tmpfs={TMP_DIR}:rw,mode=1777",
            f"--tmpfs={SCRATCH_DIR}:rw,mode=1777",
            f"--network={'host' if 'http://' in text or 'https://' in text else 'none'}",
            *ulimit_flags(),
        ]
        if not as_root:
            command += ["--userns=keep-id", f"--user={self.uid}:{self.gid}"]
        command.append(f"--volume={store}:{store}:rw" + (",U" if as_root else ""))
        for path in readonly:
            command.append(f"--volume={path}:{path}:ro")
        env = {
            **SCRATCH_ENV,
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": stage_threads(),
            "PYTHONPATH": os.pathsep.join(str(p.resolve()) for p in self.python_path),
            **self.env,
        }
        for key, value in env.items():
            command.append(f"--env={key}={value}")
        command += [self.image, stage, "--config", f"@{config_path.resolve()}"]
        return command

    def remove(self, run_name: str, attempt: int) -> None:
        """Force the container away (a stop that outlived its grace period, or a killed `sil run`)."""
        subprocess.run(
            [self.engine, "rm", "--force", "--time=0", self.container_name(run_name, attempt)],
            capture_output=True,
            timeout=60,
            check=False,
        )
