"""Runs stage programs as local subprocesses: the same command a stage Job's container runs.

A stage process is tied to the runner's life: it is started in its own session (Ctrl-C reaches only the runner,
which then stops the stage itself) and with a parent-death signal, so `kill -9` of `sil run` also ends the stage
instead of leaving an orphan writing into the store. The next `sil run` restarts that stage from scratch; the
stage's atomic writes and manifest-last rule make the half-done attempt harmless.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sil_operator.planner import StartStage

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class StageProcess:
    action: StartStage
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: datetime

    @property
    def key(self) -> tuple[int, str]:
        return (self.action.iteration, self.action.stage)

    def last_error_line(self) -> str:
        """The last non-empty log line: stage programs end a failure with one line saying what to do."""
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return next((line.strip() for line in reversed(lines) if line.strip()), "")


class LocalExecutor:
    """Starts and watches at most one stage process at a time (stages of a loop run in order)."""

    def __init__(self, run_dir: Path, env: Mapping[str, str], python_path: list[Path]) -> None:
        self.run_dir = run_dir
        self._env = dict(env)
        self._python_path = python_path
        self.processes: dict[tuple[int, str], StageProcess] = {}

    def start(self, action: StartStage, now: datetime) -> StageProcess:
        configs = self.run_dir / "configs"
        logs = self.run_dir / "logs"
        configs.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        config_path = configs / f"{action.run_name}.json"
        config_path.write_text(action.config.model_dump_json(indent=2), encoding="utf-8")
        log_path = logs / f"{action.run_name}.log"
        env = {**os.environ, **self._env, "PYTHONUNBUFFERED": "1"}
        # Torch's CPU kernels oversubscribe a small machine shared with the runner (measured: 30x slower training
        # on 2 busy cores). Half the cores is a safe default; the environment or spec.runtime.env wins.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))
        env["PYTHONPATH"] = os.pathsep.join(
            [str(p) for p in self._python_path] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        command = [sys.executable, "-m", "sil_stages", action.stage, "--config", f"@{config_path}"]
        with log_path.open("ab") as log:
            log.write(f"# attempt {action.attempt}: {' '.join(command)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        self._journal(action, now)
        running = StageProcess(action, process, log_path, now)
        self.processes[running.key] = running
        return running

    def _journal(self, action: StartStage, now: datetime) -> None:
        """One line per launch: the record that shows which stage ran how often (also across restarts)."""
        entry = {
            "iteration": action.iteration,
            "stage": action.stage,
            "attempt": action.attempt,
            "at": now.isoformat(),
        }
        with (self.run_dir / "launches.jsonl").open("a", encoding="utf-8") as journal:
            journal.write(json.dumps(entry) + "\n")

    def running(self) -> list[StageProcess]:
        return [p for p in self.processes.values() if p.process.poll() is None]

    def wait(self, timeout: float) -> None:
        """Returns when a stage process exits or after `timeout` seconds."""
        active = self.running()
        if not active:
            return
        try:
            active[0].process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return

    def stop_all(self, grace_seconds: float = 10.0) -> None:
        for stage in self.running():
            stage.process.send_signal(signal.SIGTERM)
        for stage in self.processes.values():
            try:
                stage.process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                stage.process.kill()
                stage.process.wait()
