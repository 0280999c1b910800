"""The code-tests sandbox against crafted completions: real worker processes, real confinement, no mocks.

Each attack is a completion whose tests would pass only if the attack worked (it reads the canary, reaches the
server, finds the expected value...); it must score 0, or exactly what it really passed, finish within the run's
timeout, and leave the stage, the other runs and the files around them as they were. Verdicts never depend on
the machine's speed: a run that loops is killed by its timeout and scores 0 however fast it loops.
"""

from __future__ import annotations

import os
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from sil_stages.core.settings import Scorer as ScorerSettings
from sil_stages.select.code_sandbox.pool import WORKER
from sil_stages.select.scorers import PromptSamples, ScorerContext
from sil_stages.select.scorers.code_tests import CodeTestsScorer

CANARY = "sil-canary-5f1e2d"
TIMEOUT_S = 2.0
WORKERS = 2


def _worker_processes() -> list[int]:
    """Processes whose command line is the sandbox worker's (workers and their forked children)."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if str(WORKER).encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                    pids.append(int(name))
            except OSError:
                continue
    return pids


@pytest.fixture(scope="module")
def scorer() -> Iterator[CodeTestsScorer]:
    os.environ["SIL_CODE_TESTS_CANARY"] = CANARY
    settings = ScorerSettings.model_validate(
        {
            "type": "code-tests",
            "codeTests": {"timeoutS": TIMEOUT_S, "memoryMb": 256, "maxProcesses": 8, "concurrency": WORKERS},
        }
    )
    built = CodeTestsScorer(ScorerContext(settings=settings))
    assert built.protections["seccomp"] is True and built.protections["landlock"] is True, built.protections
    yield built
    built.close()
    del os.environ["SIL_CODE_TESTS_CANARY"]


@pytest.fixture(autouse=True)
def nothing_left_behind(scorer: CodeTestsScorer) -> Iterator[None]:
    """After each attack: only the workers (WORKERS + the reference one) remain; no child of a run survives."""
    yield
    assert len(_worker_processes()) == WORKERS + 1


def _score(scorer: CodeTestsScorer, code: str, tests: list[str]) -> tuple[float | None, str]:
    [[score]] = scorer.score([PromptSamples("p", (textwrap.dedent(code),), {"tests": tests})])
    return score.value, str(score.details["run"])


def _still_scores_honestly(scorer: CodeTestsScorer) -> None:
    value, _ = _score(scorer, "def add(a, b):\n    return a + b\n", ["assert add(1, 2) == 3", "assert add(2, 2) == 4"])
    assert value == 1.0


def test_the_stage_environment_is_not_in_the_run(scorer: CodeTestsScorer) -> None:
    code = """
        import os
        def leak():
            return "\\n".join(f"{k}={v}" for k, v in os.environ.items())
    """
    assert _score(scorer, code, [f"assert {CANARY!r} in leak()", "assert leak() == 'PATH=/usr/bin:/bin'"]) == (
        0.0,
        "ok",
    )


def test_proc_environ_of_the_stage_and_of_the_worker_cannot_be_read(scorer: CodeTestsScorer) -> None:
    code = f"""
        import os
        def leak(pid):
            try:
                return open(f"/proc/{{pid}}/environ", "rb").read().decode(errors="replace")
            except OSError as error:
                return type(error).__name__
        stage, worker = {os.getpid()}, os.getppid()
    """
    assert _score(scorer, code, [f"assert {CANARY!r} in leak(stage)", "assert 'PATH' in leak(worker)"]) == (0.0, "ok")


def test_files_outside_the_work_dir_cannot_be_read(scorer: CodeTestsScorer, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(CANARY)
    code = f"""
        def read(path):
            try:
                return open(path).read()
            except OSError as error:
                return type(error).__name__
        TOKEN = {str(token)!r}
    """
    tests = [
        f"assert read(TOKEN) == {CANARY!r}",
        "assert 'root' in read('/etc/passwd')",
        "assert read('/var/run/secrets/kubernetes.io/serviceaccount/token') != 'FileNotFoundError'",
    ]
    assert _score(scorer, code, tests) == (0.0, "ok")


def test_nothing_can_be_written_outside_the_work_dir(scorer: CodeTestsScorer, tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    code = """
        def write(path):
            try:
                with open(path, "w") as out:
                    out.write("x")
                return True
            except OSError:
                return False
        def local():
            return write("inside.txt") and open("inside.txt").read() == "x"
    """
    tests = [f"assert write({str(target)!r})", "assert write('/tmp/sil-pwned')", "assert local()"]
    assert _score(scorer, code, tests) == (1 / 3, "ok")  # writing its own work dir is allowed
    assert not target.exists()
    assert not Path("/tmp/sil-pwned").exists()


def test_no_network_not_even_loopback(scorer: CodeTestsScorer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        code = """
            import socket
            def reach(family, address):
                try:
                    with socket.socket(family, socket.SOCK_STREAM) as client:
                        client.settimeout(0.5)
                        client.connect(address)
                        client.sendall(b"hello")
                    return "connected"
                except OSError as error:
                    return type(error).__name__
            def unix():
                try:
                    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    return "created"
                except OSError as error:
                    return type(error).__name__
        """
        tests = [
            f"assert reach(socket.AF_INET, ('127.0.0.1', {server.getsockname()[1]})) == 'connected'",
            "assert reach(socket.AF_INET6, ('::1', 80)) == 'connected'",
            "assert reach(socket.AF_INET, ('8.8.8.8', 53)) == 'connected'",
            "assert unix() == 'created'",
        ]
        assert _score(scorer, code, tests) == (0.0, "ok")
        with pytest.raises(BlockingIOError):
            server.accept()


def test_a_fork_bomb_is_bounded_and_killed_whole(scorer: CodeTestsScorer) -> None:
    code = """
        import os
        def add(a, b):
            return a + b
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """
    assert _score(scorer, code, ["assert add(1, 2) == 3"]) == (0.0, "timeout")
    _still_scores_honestly(scorer)


def test_a_memory_bomb_fails_inside_the_run_only(scorer: CodeTestsScorer) -> None:
    code = """
        def add(a, b):
            return a + b
        hoard = []
        while True:
            hoard.append(bytearray(16 << 20))
    """
    value, status = _score(scorer, code, ["assert add(1, 2) == 3", "assert len(hoard) > 100"])
    assert (value, status) == (0.5, "ok")  # the allocation failed (MemoryError); the honest test still passes


def test_an_infinite_loop_is_killed_by_the_timeout(scorer: CodeTestsScorer) -> None:
    assert _score(scorer, "def add(a, b):\n    while True:\n        pass\n", ["assert add(1, 2) == 3"]) == (
        0.0,
        "timeout",
    )


def test_a_sleeping_run_is_killed_by_the_timeout(scorer: CodeTestsScorer) -> None:
    code = "import time\ndef add(a, b):\n    return a + b\ntime.sleep(3600)\n"
    assert _score(scorer, code, ["assert add(1, 2) == 3"]) == (0.0, "timeout")


def test_a_flood_of_printed_output_means_nothing(scorer: CodeTestsScorer) -> None:
    code = """
        import sys
        for _ in range(100000):
            print("all tests passed " * 100)
            sys.stderr.write("OK\\n")
    """
    assert _score(scorer, code, ["assert add(1, 2) == 3"]) == (0.0, "ok")


def test_a_flood_of_the_result_channel_fails_the_run(scorer: CodeTestsScorer) -> None:
    code = """
        import os
        def add(a, b):
            return a + b
        while True:
            os.write(3, b'{"i": 0, "value": 3}\\n' * 4096)
    """
    assert _score(scorer, code, ["assert add(1, 2) == 3"]) == (0.0, "output-limit")


def test_a_huge_file_is_stopped_at_the_file_size_limit(scorer: CodeTestsScorer) -> None:
    code = """
        import os
        def add(a, b):
            return a + b
        def size():
            return os.path.getsize("big")
        with open("big", "wb") as out:
            while True:
                out.write(b"x" * (1 << 20))
    """
    # Python ignores SIGXFSZ: the write fails with EFBIG at 16 MiB (maxFileMb's default), and the run goes on.
    assert _score(scorer, code, ["assert add(1, 2) == 3", "assert size() > 16 << 20"]) == (0.5, "ok")


def test_a_thread_bomb_is_bounded(scorer: CodeTestsScorer) -> None:
    code = """
        import threading, time
        def add(a, b):
            return a + b
        started = 0
        try:
            while True:
                threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
                started += 1
        except (RuntimeError, MemoryError):
            pass
    """
    assert _score(scorer, code, ["assert add(1, 2) == 3", "assert started >= 8"]) == (0.5, "ok")


def test_the_stage_the_worker_and_other_runs_cannot_be_signalled_or_traced(scorer: CodeTestsScorer) -> None:
    # Signal 0 asks the kernel whether the signal would be delivered, and delivers none: were the filter ever to
    # regress, this test fails without killing anything (kill(-1, SIGKILL) from an unconfined root process ends
    # every process of the machine).
    code = f"""
        import ctypes, os
        def attempt(action):
            try:
                action()
                return "done"
            except OSError as error:
                return type(error).__name__
        def add(a, b):
            return a + b
        STAGE = {os.getpid()}
        results = [
            attempt(lambda: os.kill(STAGE, 0)),
            attempt(lambda: os.kill(os.getppid(), 0)),
            attempt(lambda: os.kill(-1, 0)),
            attempt(lambda: os.killpg(os.getpgid(os.getppid()), 0)),
            attempt(lambda: os.setsid()),
            attempt(lambda: os.setpgid(0, 0)),
        ]
        traced = ctypes.CDLL(None).ptrace(16, os.getppid(), 0, 0)
    """
    tests = ["assert add(1, 2) == 3", "assert 'done' in results", "assert traced == 0"]
    assert _score(scorer, code, tests) == (1 / 3, "ok")
    _still_scores_honestly(scorer)


def test_exiting_early_with_success_scores_nothing(scorer: CodeTestsScorer) -> None:
    code = """
        import os, sys
        print("OK: 2 tests passed")
        sys.stdout.flush()
        os._exit(0)
    """
    assert _score(scorer, code, ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]) == (0.0, "ok")


@pytest.mark.parametrize("raised", ["SystemExit(0)", "KeyboardInterrupt()", "AssertionError"])
def test_raising_out_of_a_test_fails_it(scorer: CodeTestsScorer, raised: str) -> None:
    code = f"def add(a, b):\n    raise {raised}\n"
    assert _score(scorer, code, ["assert add(1, 2) == 3"]) == (0.0, "ok")


def test_an_object_equal_to_everything_is_not_a_value(scorer: CodeTestsScorer) -> None:
    code = """
        class Anything:
            def __eq__(self, other):
                return True
            __hash__ = object.__hash__
        class Three(int):
            def __eq__(self, other):
                return True
        def add(a, b):
            return Anything()
        def mul(a, b):
            return Three(0)
    """
    assert _score(scorer, code, ["assert add(1, 2) == 3", "assert mul(2, 2) == 4", "assert add(1, 1)"]) == (0.0, "ok")


def test_replacing_assert_builtins_or_the_runner_fakes_nothing(scorer: CodeTestsScorer) -> None:
    code = """
        import builtins, json, os, sys
        builtins.AssertionError = type("Never", (Exception,), {})
        builtins.eval = lambda *args, **kwargs: True
        builtins.compile = lambda *args, **kwargs: "True"
        json.dumps = lambda *args, **kwargs: '{"i": 0, "value": true}'
        for name, module in list(sys.modules.items()):
            if hasattr(module, "run_untrusted"):
                module.run_untrusted = lambda job: None
                module.encode = lambda value, depth=0: True
        for index in range(2):
            os.write(3, b'{"i": %d, "value": true}\\n{"i": %d, "passed": true}\\n' % (index, index))
    """
    assert _score(scorer, code, ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]) == (0.0, "ok")


def test_the_expected_values_are_nowhere_in_the_run(scorer: CodeTestsScorer) -> None:
    code = """
        import gc, sys
        def find():
            for thing in gc.get_objects():
                values = thing.values() if isinstance(thing, dict) else thing if type(thing) in (list, tuple) else ()
                for value in values:
                    if isinstance(value, str) and "expected-" in value and "find()" not in value:
                        return value
            frame = sys._getframe()
            while frame is not None:
                for value in frame.f_locals.values():
                    if isinstance(value, str) and "expected-" in value and "find()" not in value:
                        return value
                frame = frame.f_back
            return "nothing"
    """
    assert _score(scorer, code, ["assert find() == 'expected-91c3'", "assert find() == sorted(['expected-7'])[0]"]) == (
        0.0,
        "ok",
    )
