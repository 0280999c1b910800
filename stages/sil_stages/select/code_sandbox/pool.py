"""The stage's side of the sandbox: a pool of worker processes (`worker.py`), started clean, that run jobs in
parallel; and the refusal to run untrusted code where a protection is missing and the spec did not accept that.

Each worker is `python -I -S worker.py` with an environment of PATH alone, in its own session, its stdin and
stdout the job channel. It probes what holds on this machine (see `worker.probe`); the pool compares that with the
protections the spec requires. The stage process itself becomes non-dumpable (`PR_SET_DUMPABLE 0`): its
`/proc/<pid>/environ` and memory are then root's alone, whatever a child manages.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import queue
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sil_stages.core.errors import StageInputError

WORKER = Path(__file__).with_name("worker.py")
REQUIRED_PROTECTIONS = ("seccomp", "landlock")
"""Without these the sandbox does not hold (network, signals, namespaces; files, credentials, other runs): a
missing one refuses to run untrusted code unless the spec accepts it (`codeTests.acceptMissingProtections`)."""
EXTRA_PROTECTIONS = ("network-namespace", "separate-uid")
"""Used where available (root), reported, never required: the required ones already cover what they add."""
WHY = {
    "seccomp": "without it a completion can open network sockets (any address, loopback included), signal the "
    "stage and other runs, start a new session to escape the timeout's kill, or create namespaces",
    "landlock": "without it a completion can read files outside its work dir (the service account token, "
    "credentials, /proc/<pid>/environ of other processes of its uid) and write outside it",
}
FIRST_UID = 60000
"""When the stage runs as root, worker k's children run as uid FIRST_UID + k (no process of theirs is another's)."""
_GRACE_S = 10.0
_PR_SET_DUMPABLE = 4


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    memory_bytes: int
    max_processes: int
    max_file_bytes: int
    max_output_bytes: int


@dataclass(frozen=True)
class Job:
    code: str
    setup: tuple[str, ...]
    exprs: tuple[str, ...]


@dataclass(frozen=True)
class RunResult:
    status: str
    """ok, timeout, output-limit, or lost (the worker itself failed: nothing counts)."""
    lines: tuple[str, ...]


def make_stage_undumpable() -> None:
    """PR_SET_DUMPABLE 0 for this process: /proc/<pid>/environ, mem and ptrace become root's alone."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def _seccomp_path() -> str | None:
    spec = importlib.util.find_spec("pyseccomp")
    return os.path.dirname(spec.origin) if spec is not None and spec.origin else None


class _Worker:
    def __init__(self, limits: Limits, uid: int | None) -> None:
        self._config: dict[str, Any] = {
            "uid": uid,
            "timeoutS": limits.timeout_s,
            "memoryBytes": limits.memory_bytes,
            "maxProcesses": limits.max_processes,
            "maxFileBytes": limits.max_file_bytes,
            "maxOutputBytes": limits.max_output_bytes,
            "workParent": tempfile.gettempdir(),
            "seccompPath": _seccomp_path(),
        }
        self._deadline_s = limits.timeout_s + _GRACE_S
        self.protections: dict[str, Any] = {}
        self._start()

    def _start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-S", str(WORKER), json.dumps(self._config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
            cwd="/",
            start_new_session=True,
            close_fds=True,
        )
        self._buffer = b""
        self._work_root: str | None = None
        line = self._readline(time.monotonic() + self._deadline_s + 30.0)
        if line is None:
            self.close()
            raise StageInputError("select.scorer: the code-tests sandbox worker did not start (no probe report)")
        first = json.loads(line)
        self.protections, self._work_root = first["protections"], first["workRoot"]

    def _readline(self, deadline: float) -> str | None:
        assert self._process.stdout is not None
        fd = self._process.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    return None
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    return None
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def run(self, job: Job) -> RunResult:
        assert self._process.stdin is not None
        message = {"code": job.code, "setup": list(job.setup), "exprs": list(job.exprs)}
        try:
            self._process.stdin.write((json.dumps(message) + "\n").encode())
            self._process.stdin.flush()
            line = self._readline(time.monotonic() + self._deadline_s)
        except (BrokenPipeError, OSError):
            line = None
        if line is None:
            self.close()
            self._start()
            return RunResult("lost", ())
        reply = json.loads(line)
        return RunResult(str(reply["status"]), tuple(reply["lines"]))

    def close(self) -> None:
        """Ends the worker (its job channel closed: it removes its work root and exits; killed if it does not) and
        every process of its session (children it could not kill if it died)."""
        sid = self._process.pid
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            self._process.wait(timeout=_GRACE_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        _kill_session(sid)
        if self._work_root is not None:
            shutil.rmtree(self._work_root, ignore_errors=True)


def _kill_session(sid: int) -> None:
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # field 6 of stat: the session id
            try:
                os.kill(int(name), signal.SIGKILL)
            except OSError:
                continue


def missing_protections(protections: dict[str, Any], accepted: frozenset[str]) -> dict[str, str]:
    """The required protections this machine lacks and the spec did not accept, each with why it is missing."""
    return {
        name: str(protections.get(name, "not reported"))
        for name in REQUIRED_PROTECTIONS
        if protections.get(name) is not True and name not in accepted
    }


class SandboxPool:
    """`workers` sandbox workers for completions, and one more for reference expressions (it never runs a
    completion, so nothing of a completion's run can see what it computed)."""

    def __init__(self, limits: Limits, workers: int, accepted: frozenset[str], *, field: str) -> None:
        make_stage_undumpable()
        root = os.geteuid() == 0
        self._workers: list[_Worker] = []
        try:
            self._reference = _Worker(limits, FIRST_UID if root else None)
            missing = missing_protections(self._reference.protections, accepted)
            if missing:
                raise StageInputError(
                    f"{field}.acceptMissingProtections: the code-tests sandbox refuses to run untrusted code here: "
                    + "; ".join(f"{name} is missing ({reason}); {WHY[name]}" for name, reason in missing.items())
                    + ". Run the stage where they hold (Linux >= 5.13 with Landlock enabled, libseccomp.so.2 and "
                    "pyseccomp installed), run the tests in a separate sandbox pod, or list them in "
                    f"{field}.acceptMissingProtections to accept the weaker isolation"
                )
            for k in range(workers):
                self._workers.append(_Worker(limits, FIRST_UID + 1 + k if root else None))
        except BaseException:
            self.close()
            raise
        self._idle: queue.Queue[_Worker] = queue.Queue()
        for worker in self._workers:
            self._idle.put(worker)

    @property
    def protections(self) -> dict[str, Any]:
        return dict(self._reference.protections)

    def run(self, jobs: Sequence[Job]) -> list[RunResult]:
        """Each job's result, in order; jobs run in parallel, one per worker at a time."""

        def one(job: Job) -> RunResult:
            worker = self._idle.get()
            try:
                return worker.run(job)
            finally:
                self._idle.put(worker)

        with ThreadPoolExecutor(max_workers=len(self._workers)) as executor:
            return list(executor.map(one, jobs))

    def run_reference(self, job: Job) -> RunResult:
        return self._reference.run(job)

    def close(self) -> None:
        for worker in [*self._workers, *([self._reference] if hasattr(self, "_reference") else [])]:
            worker.close()
        self._workers = []
