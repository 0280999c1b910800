"""The arithmetic loop on the control plane with data and checkpoints in S3 and promotion gates on Prometheus.

Everything is real: SeaweedFS as the S3 server, the stage programs on the local pod runner reading credentials
from a Secret, evaluate pushing to a Pushgateway that Prometheus scrapes, the operator querying Prometheus.
A loop that can improve is promoted; the same loop with learning rate 0 cannot improve and is rejected, and its
`champion.json` is never written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sil_stages.core.contract import StorageOptions
from sil_stages.core.store import Store
from tests.integration.arithmetic_loop import EXAMPLE, REPO, arithmetic_loop, gated_on_prometheus
from tests.integration.controlplane import ControlPlane, wait_until
from tests.integration.operator_process import running_operator
from tests.servers.prometheus import PrometheusServer
from tests.servers.seaweedfs import S3Server

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def base_model_uri(s3: S3Server) -> str:
    """The demo's base model, uploaded to S3: the loop reads its model from the store like everything else."""
    subprocess.run([sys.executable, str(EXAMPLE / "make_base_model.py")], check=True, cwd=REPO)
    s3.create_bucket("models")
    uri = "s3://models/arithmetic-base"
    store = Store(StorageOptions(uri=uri, endpoint=s3.endpoint, region=s3.region))
    with pytest.MonkeyPatch.context() as env:
        for key, value in s3.env().items():
            env.setenv(key, value)
        store.upload_dir(EXAMPLE / ".base-model", uri)
    return uri


def loop(
    namespace: str, name: str, s3: S3Server, prometheus: PrometheusServer, model: str, lr: float
) -> dict[str, Any]:
    storage = {"uri": f"s3://loops/{name}", "endpoint": s3.endpoint, "credentialsSecret": "s3-credentials"}
    document = arithmetic_loop(namespace, name, model, storage)
    spec = document["spec"]
    spec["maxIterations"] = 1
    spec["optimize"]["hyperparameters"]["learningRate"] = lr
    gated_on_prometheus(spec, prometheus, "result >= champion + 0.01")
    return document


def run_loop(plane: ControlPlane, namespace: str, document: dict[str, Any], s3: S3Server, log: Path) -> dict[str, Any]:
    name = document["metadata"]["name"]
    with running_operator(plane, namespace, log, extra_env=s3.env()) as operator:
        plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(document))

        def done() -> bool:
            status = plane.get_json("sil", name, "-n", namespace).get("status") or {}
            assert status.get("phase") != "Failed", json.dumps(status, indent=1) + operator.log()[-3000:]
            return status.get("phase") == "Succeeded"

        wait_until(done, 600, f"{name} to finish", interval=2)
    status: dict[str, Any] = plane.get_json("sil", name, "-n", namespace)["status"]
    return status


def test_a_loop_on_s3_with_prometheus_gates_promotes_and_a_loop_that_cannot_improve_is_rejected(
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    s3: S3Server,
    prometheus: PrometheusServer,
    base_model_uri: str,
) -> None:
    s3.create_bucket("loops")
    control_plane.kubectl(
        "create", "secret", "generic", "s3-credentials", "-n", namespace,
        f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}",
        f"--from-literal=AWS_DEFAULT_REGION={s3.region}",
    )  # fmt: skip
    bucket = s3.client()

    improves = run_loop(
        control_plane,
        namespace,
        loop(namespace, "improves", s3, prometheus, base_model_uri, 1.0e-3),
        s3,
        tmp_path / "operator-improves.log",
    )
    iteration = improves["iterations"][0]
    measurement = iteration["gates"][0]["measurements"][-1]
    assert iteration["decision"] == "Promoted", json.dumps(iteration, indent=1)
    assert measurement["phase"] == "Successful"
    assert measurement["value"] == pytest.approx(iteration["candidateScore"]), "the gate read what evaluate pushed"
    assert measurement["champion"] == pytest.approx(iteration["championScore"])
    champion = json.loads(bucket.get_object(Bucket="loops", Key="improves/champion.json")["Body"].read())
    assert champion["iteration"] == 1
    assert champion["uri"] == "s3://loops/improves/iterations/1/optimize/checkpoint"
    keys = {o["Key"] for o in bucket.list_objects_v2(Bucket="loops", Prefix="improves/")["Contents"]}
    assert "improves/iterations/1/optimize/checkpoint/model.safetensors" in keys
    assert {f"improves/iterations/1/{s}/_manifest.json" for s in ("acquire", "select", "optimize", "evaluate")} <= keys

    frozen = run_loop(
        control_plane,
        namespace,
        loop(namespace, "frozen", s3, prometheus, base_model_uri, 0.0),
        s3,
        tmp_path / "operator-frozen.log",
    )
    iteration = frozen["iterations"][0]
    assert iteration["decision"] == "Rejected", json.dumps(iteration, indent=1)
    assert iteration["gates"][0]["phase"] == "Failed"
    assert iteration["candidateScore"] == pytest.approx(iteration["championScore"]), "lr 0 leaves the model as it was"
    assert frozen["champion"]["iteration"] == 0
    listed = bucket.list_objects_v2(Bucket="loops", Prefix="frozen/champion.json")
    assert listed.get("KeyCount", 0) == 0, "champion.json is written only by a promotion"
