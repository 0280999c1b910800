"""The fake stage writer as a subprocess of the test: it outlives whatever the test kills around it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.fakestages.writer import READY

REPO = Path(__file__).resolve().parents[2]
READY_SECONDS = 120.0
"""How long the writer may take to import and start watching (its log says READY then)."""


@dataclass
class FakeStagesProcess:
    """`python -m tests.fakestages` against `kubeconfig`; `env` adds the S3 credentials (S3Server.env())."""

    kubeconfig: Path
    log_path: Path
    namespaces: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    seed: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "tests.fakestages", "--kubeconfig", str(self.kubeconfig)]
        command += ["--seed", str(self.seed)]
        for namespace in self.namespaces:
            command += ["--namespace", namespace]
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        environment = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **self.env}
        before = len(self.log())
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=environment
            )
        # Ready before any loop is applied: a writer still importing when the first Job runs would miss its run time.
        deadline = time.monotonic() + READY_SECONDS
        while READY not in self.log()[before:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the fake stage writer did not start:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def running_fake_stages(
    kubeconfig: Path,
    log_path: Path,
    namespaces: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    seed: int = 0,
) -> Iterator[FakeStagesProcess]:
    """A fake stage writer for the stage Jobs of `namespaces` (empty: all), stopped on exit."""
    process = FakeStagesProcess(kubeconfig, log_path, list(namespaces), dict(env or {}), seed)
    process.start()
    try:
        yield process
    finally:
        process.stop()
