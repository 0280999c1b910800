"""Runs stage programs as local subprocesses: the same command a stage Job's container runs.

A stage process is tied to the runner's life: it is started in its own session (Ctrl-C reaches only the runner,
which then stops the stage itself) and with a parent-death signal, so `kill -9` of `sil run` also ends the stage
instead of leaving an orphan writing into the store. The next `sil run` restarts that stage from scratch; the
stage's atomic writes and manifest-last rule make the half-done attempt harmless.

By default the stage processes are forked from a fork server (`sil_stages.forkserver`) that imported the
stage libraries once, which saves each stage the seconds of importing torch and transformers; the child is set up
as the subprocess would be (session, parent-death signal, log, environment). `SIL_FORK_SERVER=0` in the
environment of `sil run` starts each stage as a plain subprocess instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sil_operator.local.containers import StageContainers, stage_threads
from sil_operator.local.forkclient import ForkServer
from sil_operator.planner import StartStage

_PR_SET_PDEATHSIG = 1
KILL_WAIT_SECONDS = 5.0
"""How long a stop waits for a stage it SIGKILLed before it closes the fork server, which ends it too."""
FORK_SERVER_VARIABLE = "SIL_FORK_SERVER"
_OFF = ("0", "false", "no", "off")


def fork_server_enabled(environ: Mapping[str, str]) -> bool:
    """The fork server is the default; `SIL_FORK_SERVER=0` (or false, no, off) opts out."""
    return environ.get(FORK_SERVER_VARIABLE, "").strip().lower() not in _OFF


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _parent_death() -> Callable[[], None] | None:
    return _die_with_parent if sys.platform == "linux" else None


class StageHandle(Protocol):
    """What the runner asks of a stage process: a `subprocess.Popen`, or a `ForkedStage` of the fork server."""

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


@dataclass
class StageProcess:
    action: StartStage
    process: StageHandle
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

    def __init__(
        self,
        run_dir: Path,
        env: Mapping[str, str],
        python_path: list[Path],
        fork_server: bool | None = None,
        containers: StageContainers | None = None,
    ) -> None:
        self.run_dir = run_dir
        self._env = dict(env)
        self._python_path = python_path
        self.containers = containers
        # A stage in a container is a process of the container engine: there is nothing to fork from.
        self.fork_server = containers is None and (
            fork_server_enabled(os.environ) if fork_server is None else fork_server
        )
        self._server: ForkServer | None = None
        self.processes: dict[tuple[int, str], StageProcess] = {}

    def stage_env(self) -> dict[str, str]:
        """The environment of every stage process (and of the fork server, which imports with it)."""
        env = {**os.environ, **self._env, "PYTHONUNBUFFERED": "1"}
        env.setdefault("OMP_NUM_THREADS", stage_threads())  # the environment or spec.runtime.env wins
        env["PYTHONPATH"] = os.pathsep.join(
            [str(p) for p in self._python_path] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        return env

    def start(self, action: StartStage, now: datetime) -> StageProcess:
        configs = self.run_dir / "configs"
        logs = self.run_dir / "logs"
        configs.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        config_path = configs / f"{action.run_name}.json"
        config_path.write_text(action.config.model_dump_json(indent=2), encoding="utf-8")
        log_path = logs / f"{action.run_name}.log"
        arguments = [action.stage, "--config", f"@{config_path}"]
        command = [sys.executable, "-m", "sil_stages", *arguments]
        if self.containers is not None:
            command = self.containers.command(action.stage, config_path, action.run_name, action.attempt)
        process: StageHandle
        with log_path.open("ab") as log:
            log.write(f"# attempt {action.attempt}: {' '.join(command)}\n".encode())
            log.flush()
            if self.fork_server:
                process = self._fork_server().start(arguments, log_path)
            else:
                # A container's engine client gets this process's environment (the stage's own is in the command)
                # and forwards signals to the container; `stop_all` removes one that outlives its grace period.
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=None if self.containers is not None else self.stage_env(),
                    start_new_session=True,
                    preexec_fn=_parent_death(),
                )
        self._journal(action, now)
        running = StageProcess(action, process, log_path, now)
        self.processes[running.key] = running
        return running

    def _fork_server(self) -> ForkServer:
        """The running fork server, started at the first stage (and again if it died: its log says why)."""
        if self._server is None or not self._server.alive:
            log_path = self.run_dir / "logs" / "forkserver.log"
            self._server = ForkServer(self.run_dir, self.stage_env(), log_path, _parent_death())
        return self._server

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
        """SIGTERM to every running stage, SIGKILL after the grace period, then the fork server ends."""
        running = self.running()
        for stage in running:
            stage.process.send_signal(signal.SIGTERM)
        for stage in self.processes.values():
            try:
                stage.process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                stage.process.kill()
                # Bounded: a Ctrl-C that landed while the fork server's report of an exit was being read can lose
                # that report, and an unbounded wait would then never return; closing the server below ends
                # whatever still runs there.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    stage.process.wait(timeout=KILL_WAIT_SECONDS)
            if self.containers is not None and stage in running:
                self.containers.remove(stage.action.run_name, stage.action.attempt)
        if self._server is not None:
            self._server.close()
            self._server = None
