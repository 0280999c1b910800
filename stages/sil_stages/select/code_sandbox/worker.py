"""The sandbox worker: a fresh interpreter that forks one confined child per completion and reports what it returned.

Run as a file (`python -I -S worker.py CONFIG`), never imported by the stage: it starts from a fresh exec with a
scrubbed environment, so its memory holds no credential, no test's expected value and nothing of the stage; the
untrusted children are forks of it, never of the stage. It imports only the standard library (and pyseccomp, whose
directory the config names).

Protocol (one JSON object per line): the worker first writes `{"protections": {...}}` (what a probe child could
apply here: seccomp, landlock, network-namespace, separate-uid; each true or the reason it is missing); then for
each job line `{"code", "setup", "exprs"}` read from stdin it writes `{"status", "lines"}`: `status` is `ok`,
`timeout` or `output-limit`, `lines` the raw result lines the child wrote (the parent trusts none of them: it
decodes values strictly and compares them with the expected values, which never come here).

A child: its own process group (killed whole on timeout or when it is done), a fresh work dir, stdin/stdout/stderr
on /dev/null (what it prints means nothing), fd 3 the result channel, another uid when the worker is root,
rlimits (address space, CPU, processes, file size, open files, no core), then Landlock (reads only the standard
library and system libraries, writes only its work dir, no TCP, no signals or abstract sockets outside it) and a
seccomp filter (no sockets, no ptrace, no signals but to itself, no new session or process group, no namespaces,
no io_uring, no uid change, no mounts).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import resource
import select
import shutil
import signal
import struct
import sys
import sysconfig
import tempfile
import time
from typing import Any

RESULT_FD = 3
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWNET = 0x40000000
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_READ_ONLY = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kill", "tkill", "tgkill", "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "setsid", "setpgid", "unshare", "setns", "mount", "umount2",
    "pivot_root", "chroot", "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "setuid", "setgid", "setreuid", "setregid",
    "setresuid", "setresgid", "setgroups", "setfsuid", "setfsgid", "capset", "kexec_load", "init_module",
    "finit_module", "delete_module", "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "mknod",
    "mknodat", "open_by_handle_at", "name_to_handle_at", "fanotify_init", "move_pages", "migrate_pages",
    "iopl", "ioperm", "modify_ldt", "uselib", "vhangup", "sethostname", "setdomainname", "settimeofday",
    "clock_settime", "clock_adjtime", "adjtimex", "personality", "fsopen", "fsmount", "fsconfig", "move_mount",
    "open_tree", "mount_setattr",
)  # fmt: skip

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is absent or disabled."""
    version = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), LANDLOCK_CREATE_RULESET_VERSION)
    return max(int(version), 0)


def _fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1  # ABI 1: execute ... make_sym
    if abi >= 2:
        rights |= 1 << 13  # refer
    if abi >= 3:
        rights |= 1 << 14  # truncate
    if abi >= 5:
        rights |= 1 << 15  # ioctl_dev
    return rights


def _read_only_paths() -> tuple[str, ...]:
    paths = {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
    paths.update(("/usr/lib", "/lib", "/lib64", "/usr/lib64"))
    return tuple(sorted(os.path.realpath(path) for path in paths if os.path.isdir(path)))


READ_ONLY_PATHS = _read_only_paths()
"""What a child may read: the standard library and the system's shared libraries, nothing else (found once, in
the worker: a child that changed uid may not read sysconfig's files)."""
PRELOADED = (
    "math", "cmath", "collections", "itertools", "functools", "re", "heapq", "bisect", "string", "typing",
    "operator", "fractions", "decimal", "statistics", "random", "copy", "dataclasses", "enum", "numbers",
)  # fmt: skip
"""Imported by the worker so that its children have them without reading a file (and start faster)."""


def stdlib_readable_by_others() -> str | None:
    """None when another uid can read the standard library (every folder above it searchable by others), else why
    not: a child that drops to another uid must still import it."""
    import stat

    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
    path = stdlib
    while True:
        mode = os.stat(path).st_mode
        if not mode & stat.S_IXOTH or (path == stdlib and not mode & stat.S_IROTH):
            return f"the standard library {stdlib} is not readable by other users ({path} is {stat.filemode(mode)})"
        if path == "/":
            return None
        path = os.path.dirname(path)


def drop_capabilities() -> None:
    """A root child that keeps uid 0 gives up every capability (effective, permitted, inheritable)."""
    header = struct.pack("=Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = ctypes.create_string_buffer(24)
    if _libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def apply_landlock(work_dir: str) -> None:
    abi = landlock_abi()
    if abi < 1:
        raise OSError(errno.ENOSYS, "Landlock is not available in this kernel")
    fs = _fs_rights(abi)
    net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    attr = struct.pack("=QQQ", fs, net, scoped)[: 8 if abi < 4 else 16 if abi < 6 else 24]
    ruleset = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, attr, ctypes.c_size_t(len(attr)), 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        for path, rights in [(path, FS_READ_ONLY) for path in READ_ONLY_PATHS] + [(work_dir, fs)]:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = struct.pack("=Qi", rights & fs, fd)
                if _libc.syscall(SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), LANDLOCK_RULE_PATH_BENEATH, rule, 0) < 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule({path}) failed")
            finally:
                os.close(fd)
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        if _libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), 0) < 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)


def build_seccomp() -> Any:
    """The seccomp filter (a libseccomp context), built once in the worker; each child loads it (building it is
    ten times the cost of a fork). Default allow, these denied: what a confined test never needs and an escape
    would."""
    import pyseccomp  # a ctypes binding of libseccomp.so.2

    deny = pyseccomp.ERRNO(errno.EPERM)
    rules = pyseccomp.SyscallFilter(defaction=pyseccomp.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            rules.add_rule(deny, name)
        except Exception:
            continue
    rules.add_rule(pyseccomp.ERRNO(errno.EACCES), "socket")
    rules.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")  # glibc falls back to clone, whose flags are checked
    for flag in NAMESPACE_FLAGS:
        rules.add_rule(deny, "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, flag, flag))
    return rules


_SECCOMP: list[bytes] = []
"""The filter as a compiled BPF program (libseccomp's export): loading it is one prctl, where libseccomp's own
load compiles it again in every child."""
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def compile_seccomp() -> bytes:
    with tempfile.TemporaryFile() as file:
        build_seccomp().export_bpf(file)
        file.seek(0)
        return file.read()


def apply_seccomp() -> None:
    if not _SECCOMP:
        _SECCOMP.append(compile_seccomp())
    program = _SECCOMP[0]
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


def _count_tasks(uid: int) -> int:
    """Tasks (threads included) of `uid` visible here: RLIMIT_NPROC counts them all."""
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                count += int(fields["Threads"])
        except (OSError, KeyError, ValueError):
            continue
    return count


_TASKS: dict[str, float] = {}


def tasks_of_this_uid() -> int:
    """`_count_tasks` of the worker's uid, counted at most every second (a scan of /proc costs a few ms): the
    children share the stage's uid when it is not root, and RLIMIT_NPROC counts every task of a uid."""
    now = time.monotonic()
    if now - _TASKS.get("at", -1e9) > 1.0:
        _TASKS.update(at=now, count=_count_tasks(os.getuid()))
    return int(_TASKS["count"])


def confine(config: dict[str, Any], work_dir: str, protections: dict[str, Any], tasks: int = 0) -> None:
    """Everything a child gives up before it runs untrusted code; any failure ends the child (no results)."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(RESULT_FD + 1, 1 << 16)
    os.chdir(work_dir)
    uid = config["uid"]
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    elif os.geteuid() == 0:
        drop_capabilities()
    processes = config["maxProcesses"] + tasks
    memory, seconds = config["memoryBytes"], int(config["timeoutS"]) + 1
    for limit, value in (
        (resource.RLIMIT_AS, memory),
        (resource.RLIMIT_CPU, seconds),
        (resource.RLIMIT_NPROC, processes),
        (resource.RLIMIT_FSIZE, config["maxFileBytes"]),
        (resource.RLIMIT_NOFILE, 64),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(limit, (value, value))
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if protections.get("landlock") is True:
        apply_landlock(work_dir)
    if protections.get("seccomp") is True:
        apply_seccomp()
    sys.path[:] = [path for path in sys.path if path.startswith(READ_ONLY_PATHS)]


def encode(value: Any, depth: int = 0) -> Any:
    """A value as plain JSON, tagged where JSON would blur what `==` tells apart; anything else is refused.

    Exact types only (`type(x) is int`): a subclass could carry its own `__eq__`, and the parent must compare
    nothing the completion defined."""
    if depth > 32:
        raise ValueError("too deep")
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return value
    if kind is float:
        return value if value == value and value not in (float("inf"), float("-inf")) else {"$float": repr(value)}
    if kind is list:
        return [encode(item, depth + 1) for item in value]
    if kind is tuple:
        return {"$tuple": [encode(item, depth + 1) for item in value]}
    if kind in (set, frozenset):
        return {"$set": [encode(item, depth + 1) for item in value]}
    if kind is dict:
        return {"$dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if kind is bytes:
        return {"$bytes": value.hex()}
    raise TypeError(f"{kind.__name__} is not plain data")


def run_untrusted(job: dict[str, Any]) -> None:
    """Runs the completion, then each test expression, writing one result line per expression to fd 3.

    What the code does to this process (replacing builtins, json, this function, writing to fd 3 itself) can only
    change the values reported; the parent compares them with expected values this process never had."""
    write, dumps = os.write, json.dumps
    namespace: dict[str, Any] = {"__name__": "solution"}
    try:  # noqa: SIM105 - a failing program still gets its tests run (and failed)
        exec(compile(job["code"], "<completion>", "exec"), namespace)
    except BaseException:
        pass
    for statement in job["setup"]:
        try:  # noqa: SIM105
            exec(compile(statement, "<setup>", "exec"), namespace)
        except BaseException:
            pass
    for index, source in enumerate(job["exprs"]):
        try:
            line = dumps({"i": index, "value": encode(eval(compile(source, f"<test {index}>", "eval"), namespace))})
        except BaseException as error:
            line = dumps({"i": index, "error": type(error).__name__})
        write(RESULT_FD, (line + "\n").encode())


def _child(
    config: dict[str, Any], job: dict[str, Any], work_dir: str, result_fd: int, protections: dict[str, Any], tasks: int
) -> None:
    try:
        os.setpgid(0, 0)
        if result_fd != RESULT_FD:
            os.dup2(result_fd, RESULT_FD)
        confine(config, work_dir, protections, tasks)
        run_untrusted(job)
    finally:
        os._exit(0)


def _kill_group(pid: int) -> None:
    """SIGKILL to the child's whole process group until none is left (the worker is their subreaper: the
    orphans of the group become its children, and reaping them is what empties the group)."""
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    for _ in range(10000):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        except PermissionError:  # a member already changed uid on its way out: its pid still names the group
            pass
        _reap()
        time.sleep(0.0005)
    _reap()


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run_job(config: dict[str, Any], job: dict[str, Any], protections: dict[str, Any]) -> dict[str, Any]:
    work_dir = tempfile.mkdtemp(prefix="run-", dir=config["workRoot"])
    if config["uid"] is not None:
        os.chown(work_dir, config["uid"], config["uid"])
    tasks = 0 if config["uid"] is not None else tasks_of_this_uid()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(config, job, work_dir, write_end, protections, tasks)
    os.close(write_end)
    with contextlib.suppress(OSError):  # the child did it first, or is already gone
        os.setpgid(pid, pid)
    deadline = time.monotonic() + config["timeoutS"]
    limit, received, status = config["maxOutputBytes"], bytearray(), "ok"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            status = "timeout"
            break
        ready, _, _ = select.select([read_end], [], [], left)
        if not ready:
            continue
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        received += chunk
        if len(received) > limit:
            status = "output-limit"
            break
    os.close(read_end)
    _kill_group(pid)
    shutil.rmtree(work_dir, ignore_errors=True)
    lines = received.decode("utf-8", "replace").splitlines() if status != "output-limit" else []
    return {"status": status, "lines": lines}


def probe(config: dict[str, Any]) -> dict[str, Any]:
    """What holds here, found by doing it: a child applies each protection and checks its effect."""
    protections: dict[str, Any] = {}
    try:
        _SECCOMP.append(compile_seccomp())
        protections["seccomp"] = True
    except Exception as error:
        protections["seccomp"] = f"pyseccomp or libseccomp.so.2 cannot be loaded ({type(error).__name__}: {error})"
    abi = landlock_abi()
    protections["landlock"] = (
        True
        if abi >= 1
        else f"the kernel ({os.uname().release}) has no Landlock or it is disabled (errno {ctypes.get_errno()})"
    )
    protections["separate-uid"] = (
        True if config["uid"] is not None else config.get("noSeparateUid", "the stage does not run as root")
    )
    protections["network-namespace"] = config.get("networkNamespace", "not tried")
    probe_job = {"code": _PROBE, "setup": [], "exprs": ["RESULT"]}
    result = run_job({**config, "timeoutS": max(config["timeoutS"], 5.0)}, probe_job, protections)
    try:
        seen = json.loads(result["lines"][0])["value"]["$dict"]
        found = {key: value for key, value in seen}
    except (IndexError, KeyError, TypeError, ValueError):
        found = {}
    for name, check in (("seccomp", "socket"), ("landlock", "read")):
        if protections[name] is True and found.get(check) is not True:
            protections[name] = f"applying it failed here ({found.get(check, result['status'])})"
    return protections


_PROBE = """
import socket, os
RESULT = {}
try:
    socket.socket(socket.AF_UNIX)
    RESULT["socket"] = "a socket could be created"
except OSError:
    RESULT["socket"] = True
try:
    open("/proc/self/status").read()
    RESULT["read"] = "/proc could be read"
except OSError:
    RESULT["read"] = True
"""


def _network_namespace() -> Any:
    if os.geteuid() != 0:
        return "the stage does not run as root (no unshare(CLONE_NEWNET) without privileges here)"
    if _libc.unshare(CLONE_NEWNET) != 0:
        return f"unshare(CLONE_NEWNET) failed (errno {ctypes.get_errno()})"
    return True


def main() -> None:
    config = json.loads(sys.argv[1])
    if config.get("seccompPath"):
        sys.path.append(config["seccompPath"])
    _prctl(PR_SET_DUMPABLE, 0)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    config["networkNamespace"] = _network_namespace()
    if config["uid"] is not None and (reason := stdlib_readable_by_others()) is not None:
        config["uid"], config["noSeparateUid"] = None, reason  # then root without capabilities
    for module in PRELOADED:
        __import__(module)
    out = sys.stdout
    # The worker owns its work root: it removes it when the stage closes the job channel, however the stage ends.
    config["workRoot"] = tempfile.mkdtemp(prefix="sil-code-tests-", dir=config["workParent"])
    os.chmod(config["workRoot"], 0o711)
    try:
        protections = probe(config)
        out.write(json.dumps({"protections": protections, "workRoot": config["workRoot"]}) + "\n")
        out.flush()
        for line in sys.stdin:
            out.write(json.dumps(run_job(config, json.loads(line), protections)) + "\n")
            out.flush()
    finally:
        shutil.rmtree(config["workRoot"], ignore_errors=True)


if __name__ == "__main__":
    main()
