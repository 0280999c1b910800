"""The local pod runner: a Kubernetes node whose pods run as local processes.

It registers a Node (Ready, renewing its Lease like a kubelet), watches the pods bound to it and,
for each, runs every container's ``command`` + ``args`` with the pod's environment in the project's
Python environment instead of the image. It reports the pod Running, then Succeeded or Failed with
each container's exit code, and kills the processes when the pod is deleted. See README.md.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

log = logging.getLogger("podrunner")

# How a pod targets the runner's node: this node selector plus a toleration of this taint.
RUNNER_LABEL = "selfimprove.dev/pod-runner"
RUNNER_LABEL_VALUE = "local"
# Annotation the runner puts on each pod it runs: the folder with the work dir and the logs.
POD_DIR_ANNOTATION = "podrunner.selfimprove.dev/dir"

POD_UID_ENV = "PODRUNNER_POD_UID"
"""Every process of a pod carries the pod's uid in this variable, children in sessions of their own too: how the
runner finds all of a pod's processes to kill them, as a kubelet kills a container's cgroup."""
LOCAL_ADDRESS = "127.0.0.1"

STRATEGIC_MERGE = "application/strategic-merge-patch+json"
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10.0

Pod = dict[str, Any]  # a pod as the API serves it (JSON, camelCase field names)


def now() -> str:
    """The current time as the API writes it (RFC 3339, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """The current time with microseconds, as Lease.spec.renewTime wants it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known variables are replaced, ``$$`` escapes a ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(replace, text)


_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_runner() -> None:
    """In a pod's process, before exec: get SIGKILL when the runner thread that waits for it dies."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ConfigError(Exception):
    """The container's configuration cannot be resolved (a missing ConfigMap key, say)."""


@dataclass
class _PodRun:
    """The processes of one pod, so that a deletion can kill them."""

    uid: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    deleted: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


class PodRunner:
    """Runs the pods bound to ``node_name`` as local processes under ``root``."""

    def __init__(
        self,
        api_client: client.ApiClient,
        node_name: str,
        root: Path,
        *,
        kubeconfig: Path | None = None,
        capacity: Mapping[str, str] | None = None,
    ) -> None:
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.node_name = node_name
        self.root = root
        self.kubeconfig = kubeconfig
        self.capacity = dict(capacity or {"cpu": "8", "memory": "32Gi", "pods": "50", "nvidia.com/gpu": "8"})
        self.stop_event = threading.Event()
        self._runs: dict[str, _PodRun] = {}
        self._runs_lock = threading.Lock()

    # ---------------------------------------------------------------------------------------------
    # The node

    def register_node(self) -> None:
        """Create (or take over) the Node and report it Ready."""
        labels = {
            RUNNER_LABEL: RUNNER_LABEL_VALUE,
            "kubernetes.io/hostname": self.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        }
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node_name, "labels": labels},
            "spec": {"taints": [{"key": RUNNER_LABEL, "value": RUNNER_LABEL_VALUE, "effect": "NoSchedule"}]},
        }
        try:
            self.core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.core.patch_node(self.node_name, body, _content_type=STRATEGIC_MERGE)
        self._report_node_status()
        self._renew_lease()

    def _report_node_status(self) -> None:
        stamp = now()
        conditions = [
            {"type": kind, "status": "False", "reason": f"No{kind}", "message": "pod runner"}
            for kind in ("MemoryPressure", "DiskPressure", "PIDPressure")
        ]
        conditions.append({"type": "Ready", "status": "True", "reason": "PodRunnerReady", "message": "pod runner"})
        for condition in conditions:
            condition.update(lastHeartbeatTime=stamp, lastTransitionTime=stamp)
        version = "podrunner"
        status = {
            "capacity": self.capacity,
            "allocatable": self.capacity,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node_name},
            ],
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "local processes",
                "containerRuntimeVersion": version,
                "kubeletVersion": version,
                "kubeProxyVersion": version,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "phase": "Running",
        }
        self.core.patch_node_status(self.node_name, {"status": status}, _content_type=STRATEGIC_MERGE)

    def _renew_lease(self) -> None:
        spec = {"holderIdentity": self.node_name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now_micro()}
        try:
            self.coordination.patch_namespaced_lease(
                self.node_name, "kube-node-lease", {"spec": spec}, _content_type=STRATEGIC_MERGE
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = {"metadata": {"name": self.node_name, "namespace": "kube-node-lease"}, "spec": spec}
            self.coordination.create_namespaced_lease("kube-node-lease", body)

    def _heartbeat(self) -> None:
        while not self.stop_event.wait(HEARTBEAT_SECONDS):
            try:
                self._renew_lease()
                self._report_node_status()
            except Exception:  # keep beating; the next round may succeed
                log.exception("heartbeat failed")

    # ---------------------------------------------------------------------------------------------
    # Watching pods

    def run(self) -> None:
        """Register the node and run pods until ``stop_event`` is set; then kill what still runs."""
        self.register_node()
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        threading.Thread(target=self._watch, name="watch", daemon=True).start()
        self.stop_event.wait()
        self.shutdown()

    def _watch(self) -> None:
        selector = f"spec.nodeName={self.node_name}"
        while not self.stop_event.is_set():
            try:
                response = self.core.list_pod_for_all_namespaces(field_selector=selector, _preload_content=False)
                listing = json.loads(response.data)
                for pod in listing["items"]:
                    self._on_pod("ADDED", pod)
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector=selector,
                    resource_version=listing["metadata"]["resourceVersion"],
                    timeout_seconds=30,
                )
                for event in stream:
                    if self.stop_event.is_set():
                        break
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self._on_pod(event["type"], event["raw_object"])
            except Exception:  # a 410 Gone, a dropped connection: list again
                if not self.stop_event.is_set():
                    log.exception("watch failed; listing again")
                    time.sleep(1)

    def shutdown(self) -> None:
        """Kill every pod's processes."""
        with self._runs_lock:
            runs = list(self._runs.values())
        for run in runs:
            run.deleted.set()
            self._kill(run, grace=5)

    def _on_pod(self, event: str, pod: Pod) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        with self._runs_lock:
            run = self._runs.get(uid)
            start = run is None and event != "DELETED" and not meta.get("deletionTimestamp")
            start = start and pod.get("status", {}).get("phase", "Pending") == "Pending"
            if start:
                run = self._runs[uid] = _PodRun(uid)
        if start and run is not None:
            threading.Thread(
                target=self._run_pod_safely, args=(pod, run), name=f"pod-{meta['name']}", daemon=True
            ).start()
        elif event == "DELETED" and run is not None:
            run.deleted.set()
            self._kill(run, grace=0)
        elif meta.get("deletionTimestamp") and (run is None or not run.deleted.is_set()):
            # Graceful deletion: stop the processes, then finish the deletion as a kubelet does.
            if run is None:
                with self._runs_lock:
                    run = self._runs.setdefault(uid, _PodRun(uid))
                run.done.set()
            run.deleted.set()
            grace = min(pod["spec"].get("terminationGracePeriodSeconds", 30), 10)
            threading.Thread(target=self._finish_deletion, args=(pod, run, grace), daemon=True).start()

    def _finish_deletion(self, pod: Pod, run: _PodRun, grace: float) -> None:
        self._kill(run, grace)
        run.done.wait(grace + 5)
        meta = pod["metadata"]
        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
                grace_period_seconds=0,
            )

    def _kill(self, run: _PodRun, grace: float) -> None:
        """SIGTERM to each container's process group, SIGKILL after `grace`; then no process of the pod is left,
        not even one that started a session of its own (as when a kubelet stops a container)."""
        with run.lock:
            processes = [p for p in run.processes if p.poll() is None]
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        kill_leftovers(run.uid)

    # ---------------------------------------------------------------------------------------------
    # Running a pod

    def _run_pod_safely(self, pod: Pod, run: _PodRun) -> None:
        try:
            self._run_pod(pod, run)
        except Exception:  # an API error mid-run: log it, let a deletion proceed
            log.exception("pod %s/%s", pod["metadata"]["namespace"], pod["metadata"]["name"])
        finally:
            run.done.set()

    def _run_pod(self, pod: Pod, run: _PodRun) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        name, namespace = meta["name"], meta["namespace"]
        pod_dir = self.root / namespace / name
        work_dir = pod_dir / "work"
        work_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.core.patch_namespaced_pod(
                name,
                namespace,
                {"metadata": {"annotations": {POD_DIR_ANNOTATION: str(pod_dir)}}},
                _content_type=STRATEGIC_MERGE,
            )
            if spec.get("initContainers"):
                raise ConfigError("the pod runner does not run initContainers")
            argvs = [self._argv(pod, container) for container in spec["containers"]]
        except ConfigError as exc:
            self._report_config_error(pod, str(exc))
            return

        started = now()
        self._report(pod, "Running", [self._status(c, {"running": {"startedAt": started}}) for c in spec["containers"]])
        results: list[tuple[int, int]] = [(0, 0)] * len(argvs)

        def run_container(index: int) -> None:
            container = spec["containers"][index]
            results[index] = self._run_container(pod, run, container, argvs[index], work_dir, pod_dir)

        threads = [threading.Thread(target=run_container, args=(i,)) for i in range(len(argvs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        kill_leftovers(run.uid)  # a container's processes end with it
        run.done.set()
        if run.deleted.is_set():
            return  # the pod is going away; its deletion is finished elsewhere
        finished = now()
        statuses = []
        for container, (code, restarts) in zip(spec["containers"], results, strict=True):
            terminated = {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": started,
                "finishedAt": finished,
            }
            if code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
                terminated["message"] = log_tail(pod_dir / f"{container['name']}.log")
            statuses.append(self._status(container, {"terminated": terminated}, restarts=restarts))
        phase = "Succeeded" if all(code == 0 for code, _ in results) else "Failed"
        self._report(pod, phase, statuses)
        log.info("pod %s/%s %s (exit codes %s)", namespace, name, phase, [code for code, _ in results])

    def _run_container(
        self,
        pod: Pod,
        run: _PodRun,
        container: dict[str, Any],
        argv_env: tuple[list[str], dict[str, str]],
        work_dir: Path,
        pod_dir: Path,
    ) -> tuple[int, int]:
        """Run the container's process (again, as restartPolicy says); return (exit code, restarts)."""
        argv, env = argv_env
        policy = pod["spec"].get("restartPolicy", "Always")
        restarts = 0
        with (pod_dir / f"{container['name']}.log").open("ab") as log_file:
            while True:
                with run.lock:
                    if run.deleted.is_set():
                        return 137, restarts
                    try:
                        process = subprocess.Popen(
                            argv,
                            cwd=work_dir,
                            env=env,
                            stdin=subprocess.DEVNULL,
                            stdout=log_file,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                            preexec_fn=_die_with_runner,
                        )
                    except OSError as exc:  # no such executable: what a runtime reports as 127
                        log_file.write(f"pod runner: cannot start {argv[0]!r}: {exc}\n".encode())
                        log_file.flush()
                        return 127, restarts
                    run.processes.append(process)
                code = process.wait()
                code = 128 - code if code < 0 else code  # killed by a signal: 128 + signal number
                again = policy == "Always" or (policy == "OnFailure" and code != 0)
                if not again or run.deleted.is_set():
                    return code, restarts
                restarts += 1
                if run.deleted.wait(min(10.0, 0.5 * 2**restarts)):
                    return code, restarts

    def _argv(self, pod: Pod, container: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        """The container's command line and environment, resolved as a kubelet would."""
        pod_env = self._resolve_env(pod, container)
        argv = [expand(arg, pod_env) for arg in [*container.get("command", []), *container.get("args", [])]]
        if not argv:
            raise ConfigError(
                f"container {container['name']} has neither command nor args (the pod runner has no image entrypoint)"
            )
        env = dict(os.environ)
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        pod_dir = self.root / pod["metadata"]["namespace"] / pod["metadata"]["name"]
        env.update(local_dns(pod, local_mounts(pod, container, pod_dir, pod_env)))
        python_bin = str(Path(sys.executable).parent)  # the project's venv: `python` means its python
        env["PATH"] = os.pathsep.join([python_bin, pod_env.get("PATH", os.environ.get("PATH", ""))])
        env["HOSTNAME"] = hostname(pod)
        env[POD_UID_ENV] = pod["metadata"]["uid"]
        return argv, env

    def _resolve_env(self, pod: Pod, container: dict[str, Any]) -> dict[str, str]:
        namespace = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                ref = source["configMapRef"]
                data = self._config_map(namespace, ref["name"], ref.get("optional", False))
            else:
                ref = source["secretRef"]
                data = self._secret(namespace, ref["name"], ref.get("optional", False))
            env.update({prefix + key: value for key, value in data.items()})
        for var in container.get("env", []):
            value_from = var.get("valueFrom")
            if value_from is None:
                env[var["name"]] = expand(var.get("value", ""), env)
                continue
            value: str | None
            optional = False
            if "configMapKeyRef" in value_from:
                ref = value_from["configMapKeyRef"]
                optional = ref.get("optional", False)
                value = self._config_map(namespace, ref["name"], optional).get(ref["key"])
            elif "secretKeyRef" in value_from:
                ref = value_from["secretKeyRef"]
                optional = ref.get("optional", False)
                value = self._secret(namespace, ref["name"], optional).get(ref["key"])
            elif "fieldRef" in value_from:
                value = field_value(pod, value_from["fieldRef"]["fieldPath"])
            else:
                raise ConfigError(f"env {var['name']}: unsupported valueFrom {sorted(value_from)}")
            if value is None:
                if optional:
                    continue
                raise ConfigError(f"env {var['name']}: {json.dumps(value_from)} has no value")
            env[var["name"]] = value
        return env

    def _config_map(self, namespace: str, name: str, optional: bool) -> dict[str, str]:
        return self._read(
            lambda: self.core.read_namespaced_config_map(name, namespace).data, "ConfigMap", name, optional
        )

    def _secret(self, namespace: str, name: str, optional: bool) -> dict[str, str]:
        data = self._read(lambda: self.core.read_namespaced_secret(name, namespace).data, "Secret", name, optional)
        return {key: base64.b64decode(value).decode() for key, value in data.items()}

    @staticmethod
    def _read(read: Callable[[], dict[str, str] | None], kind: str, name: str, optional: bool) -> dict[str, str]:
        try:
            return read() or {}
        except ApiException as exc:
            if exc.status == 404 and optional:
                return {}
            raise ConfigError(f"{kind} {name}: {exc.reason}") from exc

    # ---------------------------------------------------------------------------------------------
    # Reporting

    @staticmethod
    def _status(container: dict[str, Any], state: dict[str, Any], restarts: int = 0) -> dict[str, Any]:
        running = "running" in state
        return {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "containerID": f"podrunner://{container['name']}",
            "ready": running,
            "started": running,
            "restartCount": restarts,
            "state": state,
        }

    def _report(self, pod: Pod, phase: str, statuses: list[dict[str, Any]]) -> None:
        stamp = now()
        ready = "True" if phase == "Running" else "False"
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": pod.get("status", {}).get("startTime") or stamp,
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": stamp},
                {"type": "Ready", "status": ready, "lastTransitionTime": stamp},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": stamp},
            ],
            "containerStatuses": statuses,
        }
        meta = pod["metadata"]
        pod.setdefault("status", {})["startTime"] = status["startTime"]
        try:
            self.core.patch_namespaced_pod_status(
                meta["name"], meta["namespace"], {"status": status}, _content_type=STRATEGIC_MERGE
            )
        except ApiException as exc:
            if exc.status != 404:  # a pod deleted meanwhile needs no status
                log.error("status of pod %s/%s: %s", meta["namespace"], meta["name"], exc)

    def _report_config_error(self, pod: Pod, message: str) -> None:
        log.error("pod %s/%s: %s", pod["metadata"]["namespace"], pod["metadata"]["name"], message)
        stamp = now()
        statuses = [
            self._status(
                c,
                {
                    "terminated": {
                        "exitCode": 128,
                        "reason": "CreateContainerConfigError",
                        "message": message,
                        "startedAt": stamp,
                        "finishedAt": stamp,
                    }
                },
            )
            for c in pod["spec"]["containers"]
        ]
        self._report(pod, "Failed", statuses)


def local_mounts(pod: Pod, container: dict[str, Any], pod_dir: Path, env: Mapping[str, str]) -> dict[str, str]:
    """emptyDir volumes become folders under the pod dir. There is no mount namespace, so an env value that is a
    mount path (or lies under one) is pointed at that folder instead: HOME=/scratch reaches the process as
    <pod dir>/volumes/scratch. A value that names something existing on this machine is left alone (e.g. a
    PYTHONPATH entry of a checkout under /tmp, where a stage's /tmp is mounted): the pod's processes run on the
    host, not in an image, and need the host's files. Other volume types are ignored."""
    empty_dirs = {v["name"] for v in pod["spec"].get("volumes") or [] if "emptyDir" in v}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts") or []:
        if mount["name"] in empty_dirs:
            folder = pod_dir / "volumes" / mount["name"]
            folder.mkdir(parents=True, exist_ok=True)
            mounts[mount["mountPath"].rstrip("/")] = folder
    resolved = dict(env)
    for key, value in env.items():
        for path, folder in mounts.items():
            if (value == path or value.startswith(path + "/")) and not Path(value).exists():
                resolved[key] = str(folder) + value[len(path) :]
    return resolved


_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"


def local_dns(pod: Pod, env: Mapping[str, str]) -> dict[str, str]:
    """The pods of a group (an Indexed Job, a JobSet) find each other by DNS: pod `h` of a pod's `subdomain` is
    `h.<subdomain>[.<namespace>[.svc[.cluster.local]]]`. Here every pod runs on this machine and there is no
    cluster DNS, so an env value that is exactly such a name in the pod's own subdomain and namespace becomes
    127.0.0.1 (SIL_MASTER_ADDR reaches rank 0); any other value is left alone."""
    subdomain = pod["spec"].get("subdomain")
    if not subdomain:
        return dict(env)
    namespace = re.escape(pod["metadata"]["namespace"])
    name = re.compile(rf"{_DNS_LABEL}\.{re.escape(subdomain)}(\.{namespace}(\.svc(\.cluster\.local)?)?)?")
    return {key: LOCAL_ADDRESS if name.fullmatch(value) else value for key, value in env.items()}


def hostname(pod: Pod) -> str:
    """HOSTNAME as a kubelet sets it: the pod's `spec.hostname` (an Indexed Job's pod i: `<job>-<i>`), else its name."""
    return str(pod["spec"].get("hostname") or pod["metadata"]["name"])


def pod_processes(uid: str) -> list[int]:
    """The processes (pids) whose environment carries `PODRUNNER_POD_UID=<uid>`: all of one pod's processes."""
    needle = f"{POD_UID_ENV}={uid}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return sorted(found)


def kill_leftovers(uid: str) -> None:
    """SIGKILL whatever process of the pod is still there (children that outlived the container's main process)."""
    for pid in pod_processes(uid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def log_tail(path: Path, limit: int = 4096) -> str:
    """What a kubelet reports as the termination message with FallbackToLogsOnError: the end of the log."""
    try:
        data = path.read_bytes()[-limit:]
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace").strip()


def field_value(pod: Pod, path: str) -> str | None:
    """The value of a downward-API ``fieldRef`` (the paths a kubelet supports for env)."""
    meta = pod["metadata"]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        value: str | None = meta.get(match.group(1), {}).get(match.group(2))
        return value
    simple: dict[str, str | None] = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": pod["spec"].get("nodeName"),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName"),
        "status.hostIP": "127.0.0.1",
        "status.podIP": "127.0.0.1",
    }
    if path not in simple:
        raise ConfigError(f"fieldRef {path} is not supported by the pod runner")
    return simple[path]
