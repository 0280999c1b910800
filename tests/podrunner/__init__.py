"""A test-only node whose pods run as local processes in the project's Python environment."""

from typing import Any

from tests.podrunner.runner import POD_DIR_ANNOTATION, RUNNER_LABEL, RUNNER_LABEL_VALUE, PodRunner

__all__ = ["POD_DIR_ANNOTATION", "RUNNER_LABEL", "RUNNER_LABEL_VALUE", "PodRunner", "target_pod_runner"]


def target_pod_runner(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of pod_spec (API JSON) with the node selector and toleration that send it to the runner."""
    spec = dict(pod_spec)
    selector = dict(spec.get("nodeSelector") or {})
    selector[RUNNER_LABEL] = RUNNER_LABEL_VALUE
    tolerations = list(spec.get("tolerations") or [])
    tolerations.append({"key": RUNNER_LABEL, "operator": "Equal", "value": RUNNER_LABEL_VALUE, "effect": "NoSchedule"})
    spec["nodeSelector"] = selector
    spec["tolerations"] = tolerations
    return spec
