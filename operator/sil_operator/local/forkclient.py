"""The runner's side of the fork server (`sil_stages.forkserver`): start it, ask it for stage runs, read
their exit codes, stop it.

A stage run here is a `ForkedStage`, which answers the questions the executor asks a `subprocess.Popen` (poll,
wait, send_signal, kill) by talking to the server, the stage's parent and only reaper, so a signal never reaches a
recycled pid. The server is started in its own session (Ctrl-C reaches only the runner, which stops the stages
itself) with a parent-death signal, and it ends when the runner closes its stdin or dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

SERVER_MODULE = "sil_stages.forkserver"
SERVER_GONE = -signal.SIGKILL
"""The exit code reported for a stage whose server died: the server's death killed it (parent-death signal)."""


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait (blocked, then delivered) until the block ends; in the main thread only, where
    Python runs signal handlers (elsewhere nothing to hold)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class ForkServer:
    """One fork server process, started with the stages' environment, and the stage runs it was asked for."""

    def __init__(
        self, run_dir: Path, env: Mapping[str, str], log_path: Path, preexec_fn: Callable[[], None] | None
    ) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", SERVER_MODULE, str(run_dir)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=dict(env),
                start_new_session=True,
                preexec_fn=preexec_fn,
            )
        if self.process.stdin is None or self.process.stdout is None:
            raise RuntimeError("the fork server was started without its pipes")
        self._stdin: IO[bytes] = self.process.stdin
        self._stdout_fd = self.process.stdout.fileno()
        self._buffer = b""
        self._next_id = 0
        self._codes: dict[int, int] = {}
        self._pids: dict[int, int] = {}
        self._logs: dict[int, Path] = {}
        self._gone = False

    @property
    def alive(self) -> bool:
        return not self._gone and self.process.poll() is None

    def start(self, argv: list[str], log_path: Path) -> ForkedStage:
        self._next_id += 1
        run = self._next_id
        self._logs[run] = log_path
        self._send({"start": run, "argv": argv, "log": str(log_path)})
        return ForkedStage(self, run)

    def signal(self, run: int, signum: int) -> None:
        if run not in self._codes:
            self._send({"signal": run, "sig": int(signum)})

    def code(self, run: int) -> int | None:
        self.pump(0)
        return self._codes.get(run)

    def pid(self, run: int) -> int | None:
        return self._pids.get(run)

    def pump(self, timeout: float) -> None:
        """Reads what the server said within `timeout` seconds (0: only what is already there)."""
        if self._gone:
            return
        ready, _, _ = select.select([self._stdout_fd], [], [], max(0.0, timeout))
        if not ready:
            return
        with _signals_held():  # a Ctrl-C between the read and the bookkeeping would lose what was read
            data = os.read(self._stdout_fd, 65536)
            if not data:
                self._server_gone()
                return
            self._buffer += data
            *lines, self._buffer = self._buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    self._receive(json.loads(line))

    def wait_for(self, run: int, timeout: float | None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while run not in self._codes:
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return None
            self.pump(min(left, 1.0))
        return self._codes[run]

    def close(self, timeout: float = 10.0) -> None:
        """Ends the server: end of its input kills what still runs there (the executor stopped it first)."""
        if not self._stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self._stdin.close()
        deadline = time.monotonic() + timeout
        while not self._gone and time.monotonic() < deadline:
            self.pump(deadline - time.monotonic())  # the last exit codes, then end of output
        try:
            self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._server_gone()

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self._stdin.write((json.dumps(message) + "\n").encode())
            self._stdin.flush()
        except (BrokenPipeError, ValueError):
            self._server_gone()

    def _receive(self, message: dict[str, Any]) -> None:
        if "started" in message:
            self._pids[int(message["started"])] = int(message["pid"])
        elif "exited" in message:
            self._codes[int(message["exited"])] = int(message["code"])

    def _server_gone(self) -> None:
        """Every run without an exit code died with the server: say so in its log, where the runner looks."""
        self._gone = True
        for run, log_path in self._logs.items():
            if run not in self._codes:
                self._codes[run] = SERVER_GONE
                with log_path.open("a", encoding="utf-8") as log:
                    log.write(f"the fork server of this run ended, and this stage with it (log: {self.log_path})\n")


class ForkedStage:
    """A stage run in the fork server, with the part of `subprocess.Popen` the executor uses."""

    def __init__(self, server: ForkServer, run: int) -> None:
        self._server = server
        self._run = run

    @property
    def pid(self) -> int | None:
        """The stage's process id, once the server has forked it."""
        self._server.pump(0)
        return self._server.pid(self._run)

    def poll(self) -> int | None:
        return self._server.code(self._run)

    def wait(self, timeout: float | None = None) -> int:
        code = self._server.wait_for(self._run, timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"stage run {self._run}", timeout or 0.0)
        return code

    def send_signal(self, sig: int) -> None:
        self._server.signal(self._run, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
