"""The local pod runner runs a Job's pods as real processes, so end-to-end tests can run stage programs.

A pod lands on the runner's node through a node selector and a toleration (``target_pod_runner``);
its command runs in the project's Python environment, and its exit code drives the Job controller.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.controlplane import ControlPlane, wait_until
from tests.podrunner import POD_DIR_ANNOTATION, target_pod_runner

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def local_job(
    name: str,
    command: list[str],
    *,
    backoff_limit: int = 0,
    env: list[dict[str, Any]] | None = None,
    env_from: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Job whose pod runs ``command`` on the local pod runner."""
    container: dict[str, Any] = {"name": "main", "image": "selfimprove/stages:test", "command": command}
    container |= {"env": env or [], "envFrom": env_from or []}
    pod_spec = {"restartPolicy": "Never", "containers": [container]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": backoff_limit, "template": {"spec": target_pod_runner(pod_spec)}},
    }


def job_pods(plane: ControlPlane, namespace: str, job: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = plane.get_json("pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={job}")[
        "items"
    ]
    return pods


def test_job_on_the_pod_runner_runs_its_command_with_the_pods_environment(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """The command really runs: it writes a file with values from a literal, a ConfigMap (one key, and all
    keys through envFrom), a Secret and the downward API; `python` is the project's interpreter, the Job is
    Complete and the command's output is kept in the pod's log file."""
    out = tmp_path / "out.json"
    control_plane.kubectl("create", "configmap", "settings", "-n", namespace, "--from-literal=model=tiny")
    control_plane.kubectl("create", "secret", "generic", "creds", "-n", namespace, "--from-literal=token=s3cret")
    script = (
        "import json, os, sys; "
        "keys = ('OUT', 'MODEL', 'TOKEN', 'POD', 'CFG_model'); "
        "json.dump({k: os.environ.get(k) for k in keys} | {'python': sys.prefix}, open(os.environ['OUT'], 'w')); "
        "print('wrote', os.environ['OUT'])"
    )
    env: list[dict[str, Any]] = [
        {"name": "OUT", "value": str(out)},
        {"name": "MODEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "model"}}},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    env_from = [{"prefix": "CFG_", "configMapRef": {"name": "settings"}}]
    job = local_job("write", ["python", "-c", script], env=env, env_from=env_from)
    control_plane.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(job))
    control_plane.kubectl("wait", "-n", namespace, "--for=condition=Complete", "--timeout=60s", "job/write")

    (pod,) = job_pods(control_plane, namespace, "write")
    assert pod["spec"]["nodeName"] == control_plane.pod_runner_node
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    written = json.loads(out.read_text())
    assert written == {
        "OUT": str(out),
        "MODEL": "tiny",
        "TOKEN": "s3cret",
        "POD": pod["metadata"]["name"],
        "CFG_model": "tiny",
        "python": sys.prefix,
    }
    log = Path(pod["metadata"]["annotations"][POD_DIR_ANNOTATION]) / "main.log"
    assert log.read_text().strip() == f"wrote {out}"


def test_a_failing_command_fails_its_pod_with_the_exit_code_and_the_job_retries_per_backoff_limit(
    control_plane: ControlPlane, namespace: str
) -> None:
    """Exit code 3 gives a Failed pod whose container terminated with exitCode 3; with backoffLimit 1 the
    Job controller makes a second pod, and after it fails too the Job fails with BackoffLimitExceeded."""
    job = local_job("exit3", ["python", "-c", "import sys; sys.exit(3)"], backoff_limit=1)
    control_plane.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(job))
    control_plane.kubectl("wait", "-n", namespace, "--for=condition=Failed", "--timeout=120s", "job/exit3")

    pods = job_pods(control_plane, namespace, "exit3")
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Failed"
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    status = control_plane.get_json("job", "exit3", "-n", namespace)["status"]
    assert status["failed"] == 2
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Failed"]["reason"] == "BackoffLimitExceeded"


def test_a_pod_whose_environment_cannot_be_resolved_fails_with_a_config_error(
    control_plane: ControlPlane, namespace: str
) -> None:
    """A reference to a missing ConfigMap fails the pod (CreateContainerConfigError) instead of hanging."""
    env = [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "x"}}}]
    control_plane.kubectl(
        "create", "-n", namespace, "-f", "-", input=json.dumps(local_job("bad-env", ["true"], env=env))
    )
    control_plane.kubectl("wait", "-n", namespace, "--for=condition=Failed", "--timeout=60s", "job/bad-env")
    (pod,) = job_pods(control_plane, namespace, "bad-env")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "CreateContainerConfigError"
    assert "absent" in terminated["message"]


def test_deleting_a_running_pod_kills_its_process(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> None:
    """A pod deleted while its command runs has its process killed, and the pod object goes away."""
    pid_file = tmp_path / "pid"
    script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sleeper"},
        "spec": target_pod_runner(
            {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "none", "command": ["python", "-c", script]}],
            }
        ),
    }
    control_plane.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(pod))
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), 60, "the pod's process to start")
    pid = int(pid_file.read_text())
    assert control_plane.get_json("pod", "sleeper", "-n", namespace)["status"]["phase"] == "Running"

    started = time.monotonic()
    control_plane.kubectl("delete", "pod", "sleeper", "-n", namespace, "--wait=true", "--timeout=60s")
    assert time.monotonic() - started < 30

    def process_gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(process_gone, 15, f"process {pid} to be killed")
