"""The sandbox worker as a stage that is not root runs it (a restricted pod): no namespace, no other uid, the
runs sharing the stage's uid. Run as uid 65534 with the system Python through `setpriv`, so only where the tests
run as root and both exist; the worker and pyseccomp are copied where that uid can read them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sil_stages.select.code_sandbox.pool import WORKER

NOBODY = 65534
SYSTEM_PYTHON = Path("/usr/bin/python3")
SETPRIV = shutil.which("setpriv")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None or not SYSTEM_PYTHON.exists(),
    reason="needs root, setpriv and /usr/bin/python3 to start the worker as another, unprivileged user",
)


class Worker:
    def __init__(self, directory: Path) -> None:
        import pyseccomp

        for source in (WORKER, Path(pyseccomp.__file__)):
            shutil.copy(source, directory / source.name)
        directory.chmod(0o755)
        config = {
            "uid": None,
            "maxProcesses": 8,
            "memoryBytes": 256 << 20,
            "timeoutS": 2.0,
            "maxFileBytes": 1 << 20,
            "maxOutputBytes": 1 << 16,
            "workParent": str(directory),
            "seccompPath": str(directory),
        }
        os.chown(directory, NOBODY, NOBODY)
        self.process = subprocess.Popen(
            [str(SETPRIV), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", str(SYSTEM_PYTHON), "-I", "-S",
             str(directory / WORKER.name), json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd="/",
            env={"PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        assert self.process.stdout is not None and self.process.stdin is not None
        self.first: dict[str, Any] = json.loads(self.process.stdout.readline())

    def values(self, code: str, *exprs: str) -> list[Any]:
        assert self.process.stdout is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps({"code": code, "setup": [], "exprs": list(exprs)}) + "\n")
        self.process.stdin.flush()
        lines = json.loads(self.process.stdout.readline())["lines"]
        first: dict[int, Any] = {}
        for line in lines:
            report = json.loads(line)
            first.setdefault(report["i"], report.get("value", report.get("error")))
        return [first.get(index) for index in range(len(exprs))]


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    directory = Path(tempfile.mkdtemp(prefix="sil-nonroot-"))  # pytest's own temp dirs are root's alone (0700)
    try:
        started = Worker(directory)
        yield started
        assert started.process.stdin is not None
        started.process.stdin.close()
        assert started.process.wait(timeout=30) == 0
        assert not Path(started.first["workRoot"]).exists()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


ATTEMPT = (
    "def attempt(action):\n    try:\n        return action()\n    except OSError as error:\n"
    "        return type(error).__name__\n"
)


def test_both_protections_hold_without_privileges(worker: Worker) -> None:
    protections = worker.first["protections"]
    assert protections["seccomp"] is True and protections["landlock"] is True
    assert protections["separate-uid"] != True  # noqa: E712 - a reason, not True
    assert protections["network-namespace"] != True  # noqa: E712


def test_an_unprivileged_run_reaches_no_socket_no_parent_environ_and_no_signal(worker: Worker) -> None:
    code = ATTEMPT + "import os, socket\n"
    assert worker.values(
        code,
        "attempt(lambda: socket.socket() and 'socket')",
        "attempt(lambda: open(f'/proc/{os.getppid()}/environ').read())",
        "attempt(lambda: os.kill(os.getppid(), 0) or 'signalled')",
        "attempt(lambda: open('/etc/passwd').read())",
    ) == ["PermissionError", "PermissionError", "PermissionError", "PermissionError"]


def test_an_unprivileged_fork_bomb_stops_at_the_process_limit(worker: Worker) -> None:
    code = "import os\nforks = 0\ntry:\n    while True:\n        os.fork()\n        forks += 1\n"
    code += "except OSError:\n    pass\n"
    # Every process of the bomb reports; whichever is read first, none forked more than the limit allows.
    [forks] = worker.values(code, "forks")
    assert isinstance(forks, int) and forks < 8
