"""What only a real kubelet shows, each visible on the loop: an image that is not there, an image that would run as
root under `runAsNonRoot`, a stage over its memory limit (OOMKilled), and exit code 2 through the real termination
message. Each loop is small and fails or blocks within its first stage.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.integration.controlplane import wait_until
from tests.integration.test_helm_chart import Helm
from tests.node.node import RealNode
from tests.node.test_loop_in_cluster import arithmetic_loop_in_s3
from tests.servers.prometheus import PrometheusServer
from tests.servers.seaweedfs import S3Server

pytestmark = [pytest.mark.timeout(900)]


@pytest.fixture
def loop_namespace(
    node: RealNode, node_namespace: str, operator_release: Helm, s3: S3Server, data_in_s3: dict[str, str]
) -> str:
    node.plane.kubectl(
        "create", "secret", "generic", "s3-credentials", "-n", node_namespace,
        f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}",
        f"--from-literal=AWS_DEFAULT_REGION={s3.region}",
    )  # fmt: skip
    return node_namespace


def apply_loop(node: RealNode, document: dict[str, Any]) -> None:
    node.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(document))


def loop_status(node: RealNode, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = node.plane.get_json("sil", name, "-n", namespace).get("status") or {}
    return status


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def stage_of(status: dict[str, Any], stage: str) -> dict[str, Any]:
    iterations = status.get("iterations") or [{}]
    return next((s for s in iterations[-1].get("stages") or [] if s.get("stage") == stage), {})


def events_of(node: RealNode, namespace: str, name: str) -> list[dict[str, Any]]:
    listed = node.plane.get_json("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")
    return list(listed["items"])


def small_loop(
    namespace: str, name: str, s3: S3Server, prometheus: PrometheusServer, uris: dict[str, str], **runtime: Any
) -> dict[str, Any]:
    document = arithmetic_loop_in_s3(namespace, name, s3, prometheus, uris)
    document["spec"]["maxIterations"] = 1
    document["spec"]["runtime"].update(runtime)
    return document


def test_a_stage_image_that_is_not_there_blocks_the_stage_with_the_kubelets_reason_naming_the_image(
    node: RealNode, loop_namespace: str, s3: S3Server, prometheus: PrometheusServer, data_in_s3: dict[str, str]
) -> None:
    missing = "localhost/selfimprove/never-built:dev"
    apply_loop(node, small_loop(loop_namespace, "noimage", s3, prometheus, data_in_s3, image=missing))

    def blocked() -> bool:
        progressing = condition(loop_status(node, loop_namespace, "noimage"), "Progressing")
        return progressing.get("reason") in ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull")

    wait_until(blocked, 180, "the loop to show the kubelet's image pull reason", interval=2)
    progressing = condition(loop_status(node, loop_namespace, "noimage"), "Progressing")
    assert progressing["status"] == "False"
    assert missing in progressing["message"], progressing
    assert any(e["reason"] == "StageBlocked" for e in events_of(node, loop_namespace, "noimage"))


def test_an_image_that_runs_as_root_is_refused_by_the_kubelet_under_run_as_non_root(
    node: RealNode, loop_namespace: str, s3: S3Server, prometheus: PrometheusServer, data_in_s3: dict[str, str]
) -> None:
    from tests.containers.images import exists

    root_image = "localhost/selfimprove/runs-as-root:dev"
    base = next(name for name in node.podman_images() if name.startswith("localhost/selfimprove/base:"))
    node.tag_and_import(base, root_image)
    assert exists(root_image)
    apply_loop(node, small_loop(loop_namespace, "asroot", s3, prometheus, data_in_s3, image=root_image))

    def refused() -> bool:
        return condition(loop_status(node, loop_namespace, "asroot"), "Progressing").get("reason") == (
            "CreateContainerConfigError"
        )

    wait_until(refused, 180, "the kubelet to refuse an image that runs as root", interval=2)
    message = condition(loop_status(node, loop_namespace, "asroot"), "Progressing")["message"]
    assert "runAsNonRoot" in message and "root" in message, message


def test_a_stage_over_its_memory_limit_is_oomkilled_retried_per_backoff_limit_and_named_on_the_loop(
    node: RealNode, loop_namespace: str, s3: S3Server, prometheus: PrometheusServer, data_in_s3: dict[str, str]
) -> None:
    document = small_loop(loop_namespace, "oom", s3, prometheus, data_in_s3, backoffLimit=1)
    document["spec"]["runtime"]["resources"] = {"limits": {"memory": "120Mi"}, "requests": {"memory": "120Mi"}}
    apply_loop(node, document)

    def failed() -> bool:
        return loop_status(node, loop_namespace, "oom").get("phase") == "Failed"

    wait_until(failed, 600, "the OOMKilled stage to fail the loop", interval=3)
    status = loop_status(node, loop_namespace, "oom")
    acquire = stage_of(status, "acquire")
    assert acquire.get("reason") == "OOMKilled", json.dumps(status, indent=1)
    assert acquire.get("attempts") == 2, "backoffLimit 1: two pods, both killed"
    assert "over its memory limit 120Mi" in status.get("message", "") + json.dumps(acquire), json.dumps(status)
    pods = node.plane.get_json("pods", "-n", loop_namespace, "-l", "selfimprove.dev/loop=oom")["items"]
    reasons = [
        (c.get("state", {}).get("terminated") or {}).get("reason")
        for p in pods
        for c in p["status"]["containerStatuses"]
    ]
    assert reasons.count("OOMKilled") == 2, reasons


def test_exit_code_2_reaches_the_loop_through_the_kubelets_termination_message(
    node: RealNode, loop_namespace: str, s3: S3Server, prometheus: PrometheusServer, data_in_s3: dict[str, str]
) -> None:
    bad_prompts = "s3://models/data/no-prompt-field.jsonl"
    s3.client().put_object(Bucket="models", Key="data/no-prompt-field.jsonl", Body=b'{"question": "1+1="}\n')
    document = small_loop(loop_namespace, "rejects", s3, prometheus, data_in_s3, backoffLimit=3)
    document["spec"]["acquire"]["prompts"]["uri"] = bad_prompts
    apply_loop(node, document)
    wait_until(
        lambda: loop_status(node, loop_namespace, "rejects").get("phase") == "Failed",
        300,
        "the loop to fail on the stage's exit code 2",
        interval=3,
    )
    status = loop_status(node, loop_namespace, "rejects")
    acquire = stage_of(status, "acquire")
    assert acquire.get("reason") == "InputRejected", json.dumps(status, indent=1)
    assert acquire.get("attempts") == 1, "exit 2 is never retried, whatever backoffLimit says"
    assert "prompt" in acquire.get("message", ""), acquire
    pods = node.plane.get_json("pods", "-n", loop_namespace, "-l", "selfimprove.dev/loop=rejects")["items"]
    (terminated,) = [c["state"]["terminated"] for p in pods for c in p["status"]["containerStatuses"]]
    assert terminated["exitCode"] == 2
    assert terminated["message"].strip().splitlines()[-1] in acquire["message"], "the kubelet's termination message"


def test_an_optimize_pod_deleted_mid_training_saves_its_checkpoint_on_sigterm_and_the_retry_resumes_from_it(
    node: RealNode, loop_namespace: str, s3: S3Server, prometheus: PrometheusServer, data_in_s3: dict[str, str]
) -> None:
    document = small_loop(loop_namespace, "resumes", s3, prometheus, data_in_s3, backoffLimit=1)
    optimize = document["spec"]["optimize"]
    optimize["checkpointEverySteps"] = 5
    optimize["hyperparameters"]["epochs"] = 8  # long enough to be caught in the middle
    apply_loop(node, document)
    bucket = s3.client()
    prefix = "resumes/iterations/1/optimize/trainer-checkpoints/"

    def saved_once() -> bool:
        listed = bucket.list_objects_v2(Bucket="loops", Prefix=prefix)
        return any(o["Key"].endswith("latest.json") for o in listed.get("Contents", []))

    wait_until(saved_once, 600, "the first trainer checkpoint in the store", interval=1)
    selector = "selfimprove.dev/loop=resumes,selfimprove.dev/stage=optimize"
    (first,) = node.plane.get_json("pods", "-n", loop_namespace, "-l", selector)["items"]
    node.plane.kubectl("delete", "pod", "-n", loop_namespace, first["metadata"]["name"], "--wait=false")
    wait_until(
        lambda: loop_status(node, loop_namespace, "resumes").get("phase") in ("Succeeded", "Failed"),
        600,
        "the loop to finish after the optimize pod was deleted",
        interval=3,
    )
    status = loop_status(node, loop_namespace, "resumes")
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    manifest = json.loads(
        bucket.get_object(Bucket="loops", Key="resumes/iterations/1/optimize/_manifest.json")["Body"].read()
    )
    resumed = manifest.get("resumed_from_step") or manifest.get("metrics", {}).get("resumed_from_step")
    assert resumed and int(resumed) >= 5, manifest
    assert stage_of(status, "optimize").get("attempts") == 1, "SIGTERM's stop counts once: one failed pod"
