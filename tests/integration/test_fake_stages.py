"""The fake stage writer (tests/fakestages) drives a kwok loop on S3 with a Prometheus gate to the decisions its
scores predict: it writes every stage's outputs before kwok completes the pod, evaluate's series reach the gate
through the Pushgateway, and promotion's checks pass on its checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.fakestages import expected_decisions, running_fake_stages, score
from tests.fakestages.loops import credentials_secret, s3_prometheus_loop
from tests.integration.controlplane import ControlPlane, wait_until
from tests.integration.operator_process import running_operator
from tests.servers.prometheus import PrometheusServer
from tests.servers.seaweedfs import S3Server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_fake_stages_drive_an_s3_loop_with_a_prometheus_gate_to_the_predicted_decisions(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, s3: S3Server, prometheus: PrometheusServer
) -> None:
    s3.create_bucket("fake")
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(credentials_secret(namespace, s3.env())))
    name, iterations = "fake-01", 2
    document = s3_prometheus_loop(
        namespace,
        name,
        s3_endpoint=s3.endpoint,
        bucket="fake",
        prometheus=prometheus.url,
        pushgateway=prometheus.pushgateway_url,
        max_iterations=iterations,
    )
    with (
        running_fake_stages(control_plane.kubeconfig, tmp_path / "fakestages.log", [namespace], s3.env()) as writer,
        running_operator(control_plane, namespace, tmp_path / "operator.log", extra_env=s3.env()) as operator,
    ):
        control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(document))

        def done() -> bool:
            status = control_plane.get_json("sil", name, "-n", namespace).get("status") or {}
            assert status.get("phase") != "Failed", json.dumps(status, indent=1) + operator.log()[-3000:]
            return status.get("phase") == "Succeeded"

        wait_until(done, 180, f"{name} to finish\n{writer.log()[-3000:]}", interval=1)
        assert "broke" not in writer.log(), "undisturbed, the writer's watch never breaks:\n" + writer.log()[-3000:]
    status = control_plane.get_json("sil", name, "-n", namespace)["status"]
    decisions = [it["decision"] == "Promoted" for it in status["iterations"]]
    assert decisions == expected_decisions(name, iterations), json.dumps(status["iterations"], indent=1)
    for number, iteration in enumerate(status["iterations"], start=1):
        measurement = iteration["gates"][0]["measurements"][-1]
        assert measurement["value"] == score(name, number), "the gate read what the fake evaluate pushed"
    promoted = [number for number, won in enumerate(decisions, start=1) if won]
    bucket = s3.client()
    if promoted:
        champion = json.loads(bucket.get_object(Bucket="fake", Key=f"{name}/champion.json")["Body"].read())
        assert champion["uri"] == f"s3://fake/{name}/iterations/{promoted[-1]}/optimize/checkpoint"
    jobs = control_plane.get_json("jobs", "-n", namespace)["items"]
    assert len(jobs) == 4 * iterations, "every Job found its outputs: no attempt was retried"
