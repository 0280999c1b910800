"""The fork server of `sil run`: imports the stage libraries once, then forks a fresh child per stage run.

    python -m sil_stages.forkserver <run dir>

Importing torch, transformers and trl takes seconds; a stage process started from scratch pays them every time.
This process imports them once (never computing, so no OpenMP pool or CUDA context exists before a fork) and
forks one child per request. The child is what `python -m sil_stages <stage> --config ...` would be: its own
session, a parent-death signal, default signal handlers, stdin from /dev/null, stdout and stderr appended to the
stage log, then `sil_stages.cli.main` and its exit code. A crash of a child (segfault, os._exit, kill -9) is an
exit status the server reports; it never reaches the server or the runner.

Why not `multiprocessing`'s "forkserver" context: it is one server per Python process, started with the runner's
environment, while this one must import with the stages' environment (OMP_NUM_THREADS, HF_HOME and the like are
read at import time) and lives and dies with one executor; its children run a pickled target behind a pipe
protocol of their own and would still need the session, parent-death and log set-up done here; and it also
starts a resource tracker process the stages do not need.

The protocol, one JSON object per line, runner to server on stdin, server to runner on stdout:
- `{"start": id, "argv": [...], "log": path}`: fork a child that runs the stage with these arguments;
- `{"signal": id, "sig": n}`: send signal n to that child, if it has not been reaped;
- answers `{"started": id, "pid": pid}` and `{"exited": id, "code": code}` (negative: killed by that signal).
End of input (the runner closed the pipe or died) kills the remaining children and ends the server. The server
itself has the runner's parent-death signal (set by the runner) and each child has the server's, so `kill -9` of
`sil run` leaves no stage behind.

When the imports brought up the CUDA driver (a library asked for a device count at import time), forking would
hand each child a driver it cannot use: the server then execs a fresh `python -m sil_stages` in each child, which
is the plain subprocess path with the same protocol.

Only the standard library is imported at module level: the stage libraries are the preload, chosen here. It lives
in `sil_stages` because it is a way of running stage programs (like `sil_stages.optimize.launcher`) and imports them;
the runner's side, `sil_operator.local.forkclient`, only starts it as a program.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import select
import signal
import sys
import time
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1

PRELOAD: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sil_stages.cli", ()),
    ("sil_stages.acquire.stage", ()),
    ("sil_stages.select.stage", ()),
    ("sil_stages.optimize.stage", ()),
    ("sil_stages.evaluate.stage", ()),
    ("numpy", ()),
    ("torch", ()),
    ("transformers", ("AutoModelForCausalLM", "AutoTokenizer", "Trainer", "TrainingArguments")),
    ("datasets", ("Dataset",)),
    ("peft", ("LoraConfig", "PeftModel")),
    ("trl", ("SFTConfig", "SFTTrainer", "DPOConfig", "DPOTrainer", "GRPOConfig", "GRPOTrainer")),
    ("sacrebleu.metrics.bleu", ("BLEU",)),
)
"""Modules (and the names whose first access imports their real code: transformers and trl load lazily) that
the stages import. A missing one is skipped: the stage imports it itself, as it would in a fresh process."""

PRELOAD_VARIABLE = "SIL_FORK_SERVER_PRELOAD"
"""Comma-separated modules to import instead of PRELOAD (say, to add a user's verifier module, or to import
nothing heavy in a test)."""
STAGE_MODULE = "sil_stages"


def preload_entries(environ: Mapping[str, str]) -> list[tuple[str, tuple[str, ...]]]:
    """PRELOAD, or the modules that the environment names instead."""
    named = environ.get(PRELOAD_VARIABLE)
    if named is None:
        return list(PRELOAD)
    return [(module.strip(), ()) for module in named.split(",") if module.strip()]


def die_with_parent() -> None:  # pragma: no cover - runs in a child between fork and exec or fork and stage
    """SIGKILL when the parent dies (Linux); a parent already gone means exit now."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def cuda_driver_loaded(maps: str) -> bool:
    """Whether a process map (`/proc/self/maps`) shows the CUDA driver library: then fork is unsafe."""
    return any("/libcuda.so" in line for line in maps.splitlines())


def preload(entries: Iterable[tuple[str, tuple[str, ...]]], say: Any) -> list[str]:
    """Imports what the stages use; returns what failed. torch is asked to count devices through NVML meanwhile,
    so a library that checks for a GPU at import time does not bring up the CUDA driver (which poisons fork)."""
    failed: list[str] = []
    previous = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    try:
        for module_name, names in entries:
            started = time.monotonic()
            try:
                module = importlib.import_module(module_name)
                for name in names:
                    getattr(module, name)
            except Exception as error:  # a library that fails to import is the stage's to report
                failed.append(module_name)
                say(f"preload {module_name}: skipped ({type(error).__name__}: {error})")
                continue
            say(f"preload {module_name}: {time.monotonic() - started:.2f}s")
    finally:
        if previous is None:
            os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        else:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = previous
    return failed


class Server:
    """Reads requests, forks children, reaps them and reports their exit codes."""

    def __init__(self, fork_in_place: bool) -> None:
        self.fork_in_place = fork_in_place
        self.pids: dict[int, int] = {}
        """Child pid -> request id, for children not yet reaped."""
        self.by_id: dict[int, int] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self._wake_w)
        self._pending = b""

    def serve(self) -> None:
        while True:
            ready, _, _ = select.select([0, self._wake_r], [], [])
            if self._wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 4096):
                        pass
            self.reap()
            if 0 in ready:
                data = os.read(0, 65536)
                if not data:
                    return
                self._pending += data
                *lines, self._pending = self._pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        self.handle(json.loads(line))

    def handle(self, request: dict[str, Any]) -> None:
        if "start" in request:
            pid = self.fork(request["argv"], request["log"])
            self.pids[pid] = request["start"]
            self.by_id[request["start"]] = pid
            answer({"started": request["start"], "pid": pid})
        elif "signal" in request:
            target = self.by_id.get(request["signal"])
            if target is not None:  # else reaped already: its pid may be someone else's by now
                with contextlib.suppress(ProcessLookupError):
                    os.kill(target, int(request["sig"]))

    def reap(self) -> None:
        while self.pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            request = self.pids.pop(pid, None)
            if request is not None:
                self.by_id.pop(request, None)
                answer({"exited": request, "code": os.waitstatus_to_exitcode(status)})

    def shutdown(self) -> None:
        """The runner is gone or done: no child outlives the server."""
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(self.pids):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.pids.clear()
        self.by_id.clear()

    def fork(self, argv: list[str], log: str) -> int:
        server = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; covered by the tests that run stages through the server
            code = 1
            try:
                code = self.child(argv, log, server)
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            except BaseException:
                traceback.print_exc()
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        return pid

    def child(self, argv: list[str], log: str, server: int) -> int:  # pragma: no cover - the forked child
        """Becomes the stage process: what `python -m sil_stages <argv>` would be, started from here."""
        os.setsid()
        die_with_parent()
        if os.getppid() != server:
            os._exit(137)
        signal.set_wakeup_fd(-1)
        os.close(self._wake_r)
        os.close(self._wake_w)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        if not self.fork_in_place:
            os.execv(sys.executable, [sys.executable, "-m", STAGE_MODULE, *argv])
        fresh_random_state()
        import sil_stages.cli

        sys.argv = [str(Path(sil_stages.cli.__file__).with_name("__main__.py")), *argv]
        code: int = sil_stages.cli.main(argv)
        import logging

        logging.shutdown()
        return code


def fresh_random_state() -> None:  # pragma: no cover - runs in the forked child
    """A fresh process seeds numpy's global generator from the OS; a forked one would share the server's.
    (Python's `random` reseeds itself after fork; stages seed what they rely on anyway.)"""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def answer(message: dict[str, Any]) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m sil_stages.forkserver <run dir>", file=sys.stderr)
        return 2
    started = time.monotonic()

    def say(line: str) -> None:
        print(f"forkserver {os.getpid()}: {line}", file=sys.stderr, flush=True)

    failed = preload(preload_entries(os.environ), say)
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    in_place = not cuda_driver_loaded(maps)
    say(
        f"ready in {time.monotonic() - started:.1f}s for {argv[0]}"
        + (f" ({', '.join(failed)} not preloaded)" if failed else "")
        + ("" if in_place else "; the CUDA driver was loaded during the imports: each stage execs a fresh interpreter")
    )
    server = Server(fork_in_place=in_place)
    try:
        server.serve()
    except BrokenPipeError:
        say("the runner closed its end; stopping")
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
