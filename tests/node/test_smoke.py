"""The real node serves pods: the kubelet registered, Ready, and a pod of the stage image (the task image built on
the CPU stage image) runs to completion as the image's user, on a read-only root."""

from __future__ import annotations

import json

from tests.integration.controlplane import wait_until
from tests.node.node import NODE_NAME, RealNode

PROBE = """
import os, sil_stages.cli
print("uid", os.getuid())
try:
    open("/opt/venv/written-by-a-stage", "w")
except OSError as error:
    print("root filesystem", error.strerror)
"""


def test_the_kubelet_runs_a_pod_in_the_stage_image_as_its_non_root_user_on_a_read_only_root(
    node: RealNode, task_image: str, node_namespace: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "whoami", "namespace": node_namespace},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "stage",
                    "image": task_image,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", PROBE],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                    },
                }
            ],
        },
    }
    node.plane.kubectl("apply", "-f", "-", input=json.dumps(pod))

    def finished() -> str | None:
        phase = node.plane.get_json("pod", "whoami", "-n", node_namespace).get("status", {}).get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    wait_until(finished, 180, "the pod to finish on the real node")
    status = node.plane.get_json("pod", "whoami", "-n", node_namespace)
    assert status["spec"]["nodeName"] == NODE_NAME
    assert status["status"]["phase"] == "Succeeded", json.dumps(status["status"], indent=1)
    logs = node.plane.kubectl("logs", "whoami", "-n", node_namespace).stdout
    assert "uid 65532" in logs
    assert "root filesystem Read-only file system" in logs, "readOnlyRootFilesystem enforced by the kubelet"
