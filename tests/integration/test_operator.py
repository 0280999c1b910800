"""The operator on a real control plane: Jobs per stage, status, events, failures and restarts.

Stage Jobs without a node selector land on kwok's fake GPU nodes, which complete them without running anything.
A Job that completes without its stage's manifest is a failed attempt, so `kwok_loop` writes every stage's
manifest into the loop's file:// store beforehand (no files, no metrics), as if each stage had finished with no
output: the loop walks through its stages, and the gates find nothing and never promote.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from sil_stages.core.contract import Manifest, manifest_uri, stage_uri
from sil_stages.core.store import local_path
from tests.integration.controlplane import ControlPlane, wait_until
from tests.integration.operator_process import OperatorProcess, running_operator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

STAGES = ["acquire", "select", "optimize", "evaluate"]


def write_manifests(storage: Path, loop: str, iterations: range, stages: list[str] = STAGES) -> None:
    """Each stage's manifest (no files, no metrics) in a file:// store: what a stage writes last, when done."""
    at = datetime.now(UTC)
    for iteration in iterations:
        for stage in stages:
            path = local_path(manifest_uri(stage_uri(storage.as_uri(), iteration, stage)))
            path.parent.mkdir(parents=True, exist_ok=True)
            manifest = Manifest(
                stage=stage, iteration=iteration, loop=loop, started_at=at, finished_at=at, duration_seconds=0.0
            )
            path.write_text(manifest.model_dump_json())


def kwok_loop(namespace: str, name: str, storage: Path, *, manifests: bool = True, **spec: Any) -> dict[str, Any]:
    """A loop for kwok's nodes; with `manifests`, every stage's manifest for up to maxIterations (or 5) is in its
    store already, so each completed Job is a finished stage."""
    body: dict[str, Any] = {
        "model": {"uri": "file:///models/base"},
        "storage": {"uri": storage.as_uri()},
        "maxIterations": 2,
        "runtime": {
            "backoffLimit": 1,
            "resources": {"limits": {"nvidia.com/gpu": 1}},
            "podAnnotations": {"kwok.selfimprove.dev/run-ms": "200"},
        },
        "acquire": {"prompts": {"uri": "file:///data/prompts.jsonl"}},
        "evaluate": {"datasets": [{"name": "heldout", "uri": "file:///data/heldout.jsonl"}]},
    }
    body.update(spec)
    if manifests:
        write_manifests(storage, name, range(1, max(int(body["maxIterations"]), 5) + 1))
    return {
        "apiVersion": "selfimprove.dev/v1alpha1",
        "kind": "SelfImprovementLoop",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def apply(plane: ControlPlane, document: dict[str, Any]) -> None:
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(document))


def get_loop(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return plane.get_json("sil", name, "-n", namespace)  # type: ignore[no-any-return]


def phase(plane: ControlPlane, namespace: str, name: str) -> str | None:
    return (get_loop(plane, namespace, name).get("status") or {}).get("phase")


class JobWatch:
    """Records every Job ADDED in a namespace (name → uids), to prove no Job was created twice."""

    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        from kubernetes import client, config, watch

        self._api = client.BatchV1Api(config.new_client_from_config(str(plane.kubeconfig)))
        self._watch = watch.Watch()
        self.created: dict[str, list[str]] = {}
        self.order: list[str] = []
        self._namespace = namespace
        self._stopped = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from urllib3.exceptions import HTTPError

        try:
            for event in self._watch.stream(self._api.list_namespaced_job, self._namespace, timeout_seconds=280):
                job = event["object"]
                if event["type"] == "ADDED":
                    uids = self.created.setdefault(job.metadata.name, [])
                    if job.metadata.uid not in uids:
                        uids.append(job.metadata.uid)
                        self.order.append(job.metadata.name)
        except HTTPError:
            if not self._stopped:  # the connection may only end when the test is over
                raise

    def stop(self) -> None:
        self._stopped = True
        self._watch.stop()


@pytest.fixture
def job_watch(control_plane: ControlPlane, namespace: str) -> Iterator[JobWatch]:
    watch = JobWatch(control_plane, namespace)
    yield watch
    watch.stop()


@pytest.fixture
def operator(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    with running_operator(control_plane, namespace, tmp_path / "operator.log") as process:
        yield process


def events(plane: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    listed = plane.get_json("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")
    return sorted(listed["items"], key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


def test_a_loop_on_fake_gpu_nodes_walks_every_stage_rejects_without_data_and_stops(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, operator: OperatorProcess, job_watch: JobWatch
) -> None:
    apply(control_plane, kwok_loop(namespace, "walk", tmp_path / "store"))
    wait_until(
        lambda: phase(control_plane, namespace, "walk") == "Succeeded", 180, "the loop to succeed\n" + operator.log()
    )
    loop = get_loop(control_plane, namespace, "walk")
    status = loop["status"]
    assert status["iteration"] == 2
    assert [it["decision"] for it in status["iterations"]] == ["Rejected", "Rejected"]
    assert status["champion"]["iteration"] == 0, "never promotes without data"
    complete = next(c for c in status["conditions"] if c["type"] == "Complete")
    assert (complete["status"], complete["reason"]) == ("True", "MaxIterationsReached")
    assert status["observedGeneration"] == loop["metadata"]["generation"]
    gate = status["iterations"][0]["gates"][0]
    assert gate["phase"] == "Inconclusive"
    expected = [f"walk-{i}-{stage}" for i in (1, 2) for stage in STAGES]
    assert job_watch.order == expected, "one Job per stage, in stage order"
    jobs = control_plane.get_json("jobs", "-n", namespace)["items"]
    job = next(j for j in jobs if j["metadata"]["name"] == "walk-1-optimize")
    assert job["metadata"]["labels"]["selfimprove.dev/stage"] == "optimize"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "SelfImprovementLoop"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["command"] == ["python", "-m", "sil_stages", "optimize"]
    pods = control_plane.get_json("pods", "-n", namespace, "-l", "job-name=walk-1-optimize")["items"]
    assert pods[0]["spec"]["nodeName"].startswith("kwok-gpu"), "scheduled on a fake GPU node"
    posted = events(control_plane, namespace, "walk")
    reasons = [e["reason"] for e in posted]
    for reason in ("IterationStarted", "StageStarted", "StageSucceeded", "Rejected", "Completed"):
        assert reason in reasons, reasons
    said = [(e["reason"], e["message"]) for e in posted for _ in range(int(e.get("count") or 1))]
    assert sorted(said) == sorted(set(said)), "no event posted twice (a reconcile planning from a stale status would)"
    assert reasons.count("StageStarted") == reasons.count("StageSucceeded") == 8
    printed = control_plane.kubectl("get", "sil", "walk", "-n", namespace).stdout
    assert "Succeeded" in printed.splitlines()[1]


def test_a_loop_written_with_deprecated_fields_runs_and_gets_one_warning_per_field_saying_what_to_write(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, operator: OperatorProcess
) -> None:
    document = kwok_loop(namespace, "oldfields", tmp_path / "store", maxIterations=1)
    document["spec"]["runtime"]["engine"] = "auto"
    document["spec"]["optimize"] = {"hyperparameters": {"seed": 3}}
    apply(control_plane, document)
    wait_until(lambda: phase(control_plane, namespace, "oldfields") == "Succeeded", 120, "the loop to succeed")
    warnings = [e for e in events(control_plane, namespace, "oldfields") if e["reason"] == "DeprecatedField"]
    assert sorted(e["message"].split(" is deprecated: ")[0] for e in warnings) == [
        "spec.optimize.hyperparameters.seed",
        "spec.runtime.engine",
    ], "one event per deprecated field, once per generation"
    assert all(e["type"] == "Warning" and "instead" in e["message"] for e in warnings)
    stored = get_loop(control_plane, namespace, "oldfields")["spec"]
    assert stored["runtime"]["engine"] == "auto", "the API server keeps the old field (the CRD still has it)"


def test_a_stage_that_keeps_failing_fails_the_loop_naming_the_stage(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, operator: OperatorProcess
) -> None:
    document = kwok_loop(namespace, "breaks", tmp_path / "store")
    document["spec"]["runtime"]["stages"] = {
        "select": {"podAnnotations": {"kwok.selfimprove.dev/exit-code": "3", "kwok.selfimprove.dev/run-ms": "100"}}
    }
    apply(control_plane, document)
    wait_until(lambda: phase(control_plane, namespace, "breaks") == "Failed", 120, "the loop to fail")
    status = get_loop(control_plane, namespace, "breaks")["status"]
    assert "select" in status["message"] and "breaks-1-select" in status["message"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "StageFailed")
    pods = control_plane.get_json("pods", "-n", namespace, "-l", "job-name=breaks-1-select")["items"]
    assert len(pods) == 2, "backoffLimit 1: the pod is retried once"
    jobs = {j["metadata"]["name"] for j in control_plane.get_json("jobs", "-n", namespace)["items"]}
    assert jobs == {"breaks-1-acquire", "breaks-1-select"}, "nothing starts after a stage failed for good"


def test_operator_killed_mid_stage_resumes_without_creating_any_job_twice(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, job_watch: JobWatch
) -> None:
    document = kwok_loop(namespace, "restart", tmp_path / "store")
    document["spec"]["runtime"]["podAnnotations"] = {"kwok.selfimprove.dev/run-ms": "1500"}
    log = tmp_path / "operator.log"
    first = OperatorProcess(control_plane, log, namespace)
    first.start()
    try:
        apply(control_plane, document)
        wait_until(lambda: "restart-1-optimize" in job_watch.created, 120, "optimize to start\n" + first.log())
    finally:
        first.kill()
    time.sleep(2)  # the optimize Job finishes while no operator runs
    with running_operator(control_plane, namespace, log):
        wait_until(lambda: phase(control_plane, namespace, "restart") == "Succeeded", 180, "the loop to finish")
    assert all(len(uids) == 1 for uids in job_watch.created.values()), job_watch.created
    assert sorted(job_watch.created) == sorted(f"restart-{i}-{s}" for i in (1, 2) for s in STAGES)


def test_suspend_starts_nothing_new_and_resume_continues(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, operator: OperatorProcess, job_watch: JobWatch
) -> None:
    document = kwok_loop(namespace, "pause", tmp_path / "store", suspend=True, maxIterations=1)
    apply(control_plane, document)
    wait_until(lambda: phase(control_plane, namespace, "pause") == "Suspended", 60, "the loop to be suspended")
    time.sleep(2)
    assert job_watch.created == {}
    control_plane.kubectl("patch", "sil", "pause", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    wait_until(lambda: phase(control_plane, namespace, "pause") == "Succeeded", 120, "the loop to finish")
    assert len(job_watch.created) == 4


def test_deleting_a_loop_deletes_its_jobs_and_keeps_its_artifacts(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, operator: OperatorProcess
) -> None:
    store = tmp_path / "store"
    apply(control_plane, kwok_loop(namespace, "gone", store, maxIterations=1))
    wait_until(lambda: phase(control_plane, namespace, "gone") == "Succeeded", 120, "the loop to finish")
    store.mkdir(parents=True, exist_ok=True)
    (store / "keep.txt").write_text("artifacts stay")
    control_plane.kubectl("delete", "sil", "gone", "-n", namespace)
    wait_until(
        lambda: not control_plane.get_json("jobs", "-n", namespace)["items"], 60, "the Jobs to be garbage-collected"
    )
    assert (store / "keep.txt").exists()
    assert (
        json.loads(
            json.dumps(control_plane.get_json("configmaps", "-n", namespace, "-l", "selfimprove.dev/loop=gone"))
        )["items"]
        == []
    ), "the stage ConfigMaps go with the loop"
