"""The loop end to end on a real node: the operator installed with the Helm chart runs in-cluster from its image
(the chart's ServiceAccount, leader election, probes), and a loop applied with kubectl in a namespace that enforces
the restricted Pod Security Standard runs every stage in a stage image on the real kubelet, with S3 on SeaweedFS,
evaluate pushing to the Pushgateway and the gates querying Prometheus, all at the node address inside the tier's
network namespace.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.arithmetic_loop import arithmetic_loop, gated_on_prometheus
from tests.integration.controlplane import wait_until
from tests.integration.test_helm_chart import Helm
from tests.node.conftest import TIMINGS
from tests.node.node import RELEASE_NAMESPACE, TASK_IMAGE, RealNode
from tests.servers.prometheus import PrometheusServer
from tests.servers.seaweedfs import S3Server

pytestmark = [pytest.mark.timeout(2400)]


def operator_pod(node: RealNode) -> dict[str, Any]:
    pods = node.plane.get_json("pods", "-n", RELEASE_NAMESPACE)["items"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    pod: dict[str, Any] = pods[0]
    return pod


def test_the_chart_runs_the_operator_in_cluster_from_its_image_with_leader_election_and_passing_probes(
    node: RealNode, operator_release: Helm
) -> None:
    pod = operator_pod(node)
    (container,) = pod["status"]["containerStatuses"]
    assert container["ready"] is True and container["restartCount"] == 0, json.dumps(pod["status"], indent=1)
    assert pod["spec"]["nodeName"] == "sil-node"
    assert pod["spec"]["serviceAccountName"].startswith("selfimprove")
    leases = node.plane.get_json("leases", "-n", RELEASE_NAMESPACE)["items"]
    holders = {lease["spec"].get("holderIdentity") for lease in leases}
    assert pod["metadata"]["name"] in " ".join(filter(None, holders)), holders


def arithmetic_loop_in_s3(
    namespace: str, name: str, s3: S3Server, prometheus: PrometheusServer, uris: dict[str, str]
) -> dict[str, Any]:
    """The demo loop of the integration tests (its first iterations promote), with every input in S3 and the verifier
    in the stage image: no pod runner to target, no PYTHONPATH to pass."""
    storage = {"uri": f"s3://loops/{name}", "endpoint": s3.endpoint, "credentialsSecret": "s3-credentials"}
    document = arithmetic_loop(namespace, name, uris["model"], storage)
    spec = document["spec"]
    spec["runtime"] = {
        "backoffLimit": 0,
        "env": {"OMP_NUM_THREADS": "1"},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "4Gi"}},
    }
    spec["acquire"]["prompts"]["uri"] = uris["prompts"]
    spec["evaluate"]["datasets"] = [{"name": "heldout", "uri": uris["heldout"]}]
    gated_on_prometheus(spec, prometheus, "result > champion")
    return document


def test_a_loop_applied_with_kubectl_runs_every_stage_in_the_stage_image_on_the_kubelet_and_succeeds(
    node: RealNode,
    node_namespace: str,
    operator_release: Helm,
    s3: S3Server,
    prometheus: PrometheusServer,
    data_in_s3: dict[str, str],
    tmp_path: Path,
) -> None:
    plane = node.plane
    plane.kubectl(
        "create", "secret", "generic", "s3-credentials", "-n", node_namespace,
        f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}",
        f"--from-literal=AWS_DEFAULT_REGION={s3.region}",
    )  # fmt: skip
    document = arithmetic_loop_in_s3(node_namespace, "arith", s3, prometheus, data_in_s3)
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(document))

    def finished() -> bool:
        status = plane.get_json("sil", "arith", "-n", node_namespace).get("status") or {}
        if status.get("phase") == "Failed":
            logs = plane.kubectl("logs", "-n", RELEASE_NAMESPACE, operator_pod(node)["metadata"]["name"], check=False)
            raise AssertionError(json.dumps(status, indent=1) + "\noperator:\n" + logs.stdout[-4000:])
        return status.get("phase") == "Succeeded"

    started = time.monotonic()
    wait_until(finished, 1800, "the loop to finish on the real node", interval=5)
    TIMINGS["in-cluster loop, apply to Succeeded"] = time.monotonic() - started
    status = plane.get_json("sil", "arith", "-n", node_namespace)["status"]
    for iteration in status["iterations"]:
        for stage in iteration["stages"]:
            began, ended = stage.get("startedAt"), stage.get("finishedAt")
            if began and ended:
                seconds = (datetime.fromisoformat(ended) - datetime.fromisoformat(began)).total_seconds()
                TIMINGS[f"iteration {iteration['index']} {stage['stage']} (Job start to manifest seen)"] = seconds
    assert [it["index"] for it in status["iterations"]] == [1, 2]
    assert any(it["decision"] == "Promoted" for it in status["iterations"]), json.dumps(status["iterations"], indent=1)
    pods = plane.get_json("pods", "-n", node_namespace)["items"]
    stages = {p["metadata"]["labels"].get("selfimprove.dev/stage") for p in pods}
    assert stages == {"acquire", "select", "optimize", "evaluate"}
    for pod in pods:
        assert pod["spec"]["nodeName"] == "sil-node"
        assert pod["spec"]["containers"][0]["image"] == TASK_IMAGE
        assert pod["status"]["phase"] == "Succeeded"
    acquire = next(p for p in pods if p["metadata"]["labels"]["selfimprove.dev/stage"] == "acquire")
    logs = plane.kubectl("logs", "-n", node_namespace, acquire["metadata"]["name"]).stdout
    assert "sil_stages acquire" in logs, logs[-2000:]
