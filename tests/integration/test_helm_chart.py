"""The Helm chart (charts/selfimprove): lint, render, schema, install/uninstall on the test control plane, and RBAC.

The RBAC tests run `sil operator` as a local process with a kubeconfig holding a token of the chart's
ServiceAccount (TokenRequest API), so the operator has exactly the permissions the chart grants it: a loop must
run to Succeeded with them, and `kubectl auth can-i` with the same token shows what it must not be able to do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.controlplane import REPO_ROOT, ControlPlane, find_bin_dir, wait_until
from tests.integration.operator_process import OperatorProcess, leader_election_args
from tests.integration.test_operator import STAGES, apply, events, get_loop, kwok_loop, phase

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CHART = REPO_ROOT / "charts" / "selfimprove"
CRD_NAME = "selfimprovementloops.selfimprove.dev"
IMAGES = [
    "--set",
    "operator.image.repository=selfimprove/operator",
    "--set",
    "operator.image.tag=test",
    "--set",
    "stageImage.repository=selfimprove/stage",
    "--set",
    "stageImage.tag=test",
]
ALL_ON = [
    "--set",
    "pushgateway.enabled=true",
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "metrics.prometheusRule.enabled=true",
    "--set",
    "jobset.enabled=true",
]
# What kopf's scanning asks for (rbac.scanning): forbidden without it, and then retried and logged by kopf.
SCANNING_URLS = ("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "/api/v1/namespaces ")
SCANNING_WARNINGS = ("Not enough permissions to list namespaces", "Not enough permissions to watch for")


class Helm:
    def __init__(self, binary: Path, home: Path, kubeconfig: Path | None = None) -> None:
        self.binary = binary
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        if kubeconfig is not None:
            self.env["KUBECONFIG"] = str(kubeconfig)

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    def template(self, *args: str, namespace: str = "sil-system") -> list[dict[str, Any]]:
        rendered = self("template", "rel", str(CHART), "-n", namespace, *IMAGES, *args).stdout
        return [doc for doc in yaml.safe_load_all(rendered) if doc]


@pytest.fixture(scope="module")
def chart_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """files/alerts.yaml and files/dashboard.json come from elsewhere; a checkout without them gets placeholders."""
    placeholders = {
        CHART / "files" / "dashboard.json": '{"title": "selfimprove", "panels": []}\n',
        CHART / "files" / "alerts.yaml": "groups:\n  - name: selfimprove\n    rules: []\n",
    }
    created = []
    for path, text in placeholders.items():
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            created.append(path)
    yield
    for path in created:
        path.unlink()


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory, chart_files: None) -> Helm:
    return Helm(find_bin_dir() / "helm", tmp_path_factory.mktemp("helm"))


@pytest.fixture
def cluster_helm(control_plane: ControlPlane, tmp_path: Path, chart_files: None) -> Helm:
    return Helm(control_plane.bin_dir / "helm", tmp_path / "helm", control_plane.kubeconfig)


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] == kind]


def one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(documents, kind)
    assert len(found) == 1, f"{len(found)} {kind}s rendered"
    return found[0]


def deployment_of(documents: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in by_kind(documents, "Deployment") if d["metadata"]["name"] == "rel-selfimprove")


def container_of(documents: list[dict[str, Any]]) -> dict[str, Any]:
    return deployment_of(documents)["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def loop_roles(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The Roles (or RoleBindings) for serving loops: all but the leader election's."""
    return [doc for doc in by_kind(documents, kind) if not doc["metadata"]["name"].endswith("-leader-election")]


LEADER_ELECTION = leader_election_args("sil-system", "rel-selfimprove")


# ---------------------------------------------------------------------------------------------------------------
# Lint, render, schema


@pytest.mark.parametrize(
    "values",
    [[], ["--set", "rbac.scope=namespaced", "--set", "rbac.watchNamespaces={ml,research}", *ALL_ON]],
    ids=["defaults", "namespaced-all-on"],
)
def test_helm_lint_is_clean(helm: Helm, values: list[str]) -> None:
    for strict in ([], ["--strict"]):
        result = helm("lint", str(CHART), *strict, *values)
        output = result.stdout + result.stderr
        assert "[WARNING]" not in output and "[ERROR]" not in output, output
        assert "0 chart(s) failed" in output, output


def test_cluster_scope_renders_a_cluster_role_and_a_hardened_deployment(helm: Helm) -> None:
    documents = helm.template()
    role = one(documents, "ClusterRole")
    binding = one(documents, "ClusterRoleBinding")
    assert not loop_roles(documents, "Role") and not loop_roles(documents, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rel-selfimprove", "namespace": "sil-system"}]
    assert one(documents, "ServiceAccount")["metadata"]["name"] == "rel-selfimprove"

    container = container_of(documents)
    assert container["image"] == "selfimprove/operator:test"
    assert container["command"] == [
        "sil",
        "operator",
        "--liveness",
        "http://0.0.0.0:8080/healthz",
        "--metrics-port",
        "9090",
        "--metrics-address",
        "0.0.0.0",
        *LEADER_ELECTION,
    ], "scope cluster: no --namespace, the operator serves every namespace"
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["SIL_STAGE_IMAGE"] == "selfimprove/stage:test"
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert container["resources"]["limits"] and container["resources"]["requests"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]

    service = one(documents, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    dashboard = one(documents, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["selfimprove.json"].strip() == (CHART / "files" / "dashboard.json").read_text().strip()
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert not by_kind(documents, kind), f"{kind} is off by default"
    assert len(by_kind(documents, "Deployment")) == 1, "no Pushgateway by default"


def test_namespaced_scope_renders_a_role_per_namespace_and_namespace_flags(helm: Helm) -> None:
    documents = helm.template("--set", "rbac.scope=namespaced", "--set", "rbac.watchNamespaces={ml,research}")
    roles = {doc["metadata"]["namespace"]: doc for doc in loop_roles(documents, "Role")}
    bindings = {doc["metadata"]["namespace"]: doc for doc in loop_roles(documents, "RoleBinding")}
    assert sorted(roles) == sorted(bindings) == ["ml", "research"]
    for binding in bindings.values():
        assert binding["subjects"][0]["namespace"] == "sil-system"
    assert container_of(documents)["command"][-4:] == ["--namespace", "ml", "--namespace", "research"]
    without_scanning = one(helm.template("--set", "rbac.scanning=false"), "ClusterRole")["rules"]
    assert roles["ml"]["rules"] == without_scanning, "the same namespaced rules in both scopes"

    scanning = one(documents, "ClusterRole")
    assert scanning["metadata"]["name"] == "rel-selfimprove-scanning"
    assert scanning["rules"] == [
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    ], "the only cluster-wide rules of the namespaced scope: read-only, for kopf's scanning"
    assert one(documents, "ClusterRoleBinding")["roleRef"]["name"] == "rel-selfimprove-scanning"
    strict = helm.template(
        "--set", "rbac.scope=namespaced", "--set", "rbac.watchNamespaces={ml}", "--set", "rbac.scanning=false"
    )
    assert not by_kind(strict, "ClusterRole") and not by_kind(strict, "ClusterRoleBinding")


def test_leader_election_is_on_by_default_with_a_lease_role_for_one_lease_and_rolling_updates(helm: Helm) -> None:
    documents = helm.template("--set", "operator.replicas=3")
    deployment = deployment_of(documents)
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate"}, "the Lease keeps old and new pods apart"
    container = container_of(documents)
    assert container["command"][-len(LEADER_ELECTION) :] == LEADER_ELECTION
    pod_name = next(item for item in container["env"] if item["name"] == "POD_NAME")
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, "holderIdentity is the pod name"

    role = one(by_kind(documents, "Role"), "Role")
    assert role["metadata"]["name"] == "rel-selfimprove-leader-election"
    assert role["metadata"]["namespace"] == "sil-system", "the Lease lives in the release namespace only"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["rel-selfimprove"],
            "verbs": ["get", "update"],
        },
    ]
    binding = next(d for d in by_kind(documents, "RoleBinding") if d["metadata"]["name"] == role["metadata"]["name"])
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rel-selfimprove", "namespace": "sil-system"}]
    namespaced = helm.template("--set", "rbac.scope=namespaced", "--set", "rbac.watchNamespaces={ml}")
    assert sorted(d["metadata"]["namespace"] for d in by_kind(namespaced, "Role")) == ["ml", "sil-system"]


def test_without_leader_election_one_replica_at_most_and_recreate(helm: Helm) -> None:
    documents = helm.template("--set", "operator.leaderElection.enabled=false")
    assert deployment_of(documents)["spec"]["strategy"] == {"type": "Recreate"}
    container = container_of(documents)
    assert "--leader-elect" not in container["command"]
    assert "POD_NAME" not in {item["name"] for item in container["env"]}
    assert not by_kind(documents, "Role") and not by_kind(documents, "RoleBinding")
    stopped = helm.template("--set", "operator.leaderElection.enabled=false", "--set", "operator.replicas=0")
    assert deployment_of(stopped)["spec"]["replicas"] == 0


JOBSET_RULE = {"apiGroups": ["jobset.x-k8s.io"], "resources": ["jobsets"], "verbs": ["list", "watch", "create"]}


def test_jobsets_are_granted_and_enabled_only_with_jobset_enabled(helm: Helm) -> None:
    default = helm.template()
    assert JOBSET_RULE not in one(default, "ClusterRole")["rules"]
    assert {e["name"]: e.get("value") for e in container_of(default)["env"]}["SIL_JOBSETS"] == "disabled"
    enabled = helm.template("--set", "jobset.enabled=true")
    assert JOBSET_RULE in one(enabled, "ClusterRole")["rules"]
    assert {e["name"]: e.get("value") for e in container_of(enabled)["env"]}["SIL_JOBSETS"] == "enabled"
    namespaced = helm.template(
        "--set", "rbac.scope=namespaced", "--set", "rbac.watchNamespaces={ml}", "--set", "jobset.enabled=true"
    )
    (role,) = loop_roles(namespaced, "Role")
    assert JOBSET_RULE in role["rules"]


def test_the_optional_prometheus_objects_render_when_enabled(helm: Helm) -> None:
    documents = helm.template(*ALL_ON, "--set", "grafana.dashboard.label=my_dashboards")
    monitors = {doc["metadata"]["name"]: doc for doc in by_kind(documents, "ServiceMonitor")}
    assert sorted(monitors) == ["rel-selfimprove", "rel-selfimprove-pushgateway"]
    assert monitors["rel-selfimprove-pushgateway"]["spec"]["endpoints"][0]["honorLabels"] is True
    rule = one(documents, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert {doc["metadata"]["name"] for doc in by_kind(documents, "Deployment")} == {
        "rel-selfimprove",
        "rel-selfimprove-pushgateway",
    }
    services = {doc["metadata"]["name"] for doc in by_kind(documents, "Service")}
    assert services == {"rel-selfimprove-metrics", "rel-selfimprove-pushgateway"}
    labels = one(documents, "ConfigMap")["metadata"]["labels"]
    assert labels["my_dashboards"] == "1" and "grafana_dashboard" not in labels


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["--set", "bogus=1"], "bogus"),
        (["--set", "operator.replicas=many"], "replicas"),
        (["--set-json", 'operator.metricsPort="9090"'], "metricsPort"),
        (["--set", "rbac.scope=everywhere"], "scope"),
        (["--set", "rbac.scope=namespaced"], "watchNamespaces"),
        (["--set", "rbac.watchNamespaces={ml}"], "watchNamespaces"),
        (["--set", "operator.image.pullPolicy=Sometimes"], "pullPolicy"),
        (["--set", "operator.replicas=2", "--set", "operator.leaderElection.enabled=false"], "replicas"),
        (["--set", "operator.replicas=-1"], "replicas"),
        (["--set", "operator.leaderElection.enable=true"], "enable"),
    ],
    ids=[
        "unknown-key",
        "replicas-string",
        "port-string",
        "bad-scope",
        "namespaced-without-list",
        "list-with-cluster",
        "bad-pull-policy",
        "replicas-without-leader-election",
        "negative-replicas",
        "unknown-leader-election-key",
    ],
)
def test_bad_values_are_rejected(helm: Helm, values: list[str], expected: str) -> None:
    result = helm("template", "rel", str(CHART), *values, check=False)
    assert result.returncode != 0, result.stdout
    assert "schema" in result.stderr and expected in result.stderr, result.stderr


# ---------------------------------------------------------------------------------------------------------------
# Install and uninstall


def test_install_passes_server_dry_run_and_uninstall_keeps_only_the_crd(
    control_plane: ControlPlane, cluster_helm: Helm
) -> None:
    release_ns = control_plane.create_namespace("helm-install")
    try:
        installed = cluster_helm(
            "install", "rel", str(CHART), "-n", release_ns, *IMAGES, "--set", "pushgateway.enabled=true"
        )
        assert "kubectl apply -n default -f loop.yaml" in installed.stdout, "NOTES tell the next command"
        assert "kubectl get sil -n default" in installed.stdout
        assert f"http://rel-selfimprove-pushgateway.{release_ns}.svc:9091" in installed.stdout
        manifest = cluster_helm("get", "manifest", "rel", "-n", release_ns).stdout
        control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest)

        kinds = {"serviceaccount", "deployment", "service", "configmap"}
        names = _chart_objects(control_plane, release_ns)
        assert {kind for kind, _ in names} >= kinds, names
        assert ("clusterrole", "rel-selfimprove") in names and ("clusterrolebinding", "rel-selfimprove") in names
        deployment = control_plane.get_json("deployment", "rel-selfimprove", "-n", release_ns)
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "rel-selfimprove"
        crd = control_plane.get_json("crd", CRD_NAME)
        assert crd["spec"]["group"] == "selfimprove.dev"

        cluster_helm("uninstall", "rel", "-n", release_ns, "--wait", "--timeout", "60s")
        wait_until(lambda: not _chart_objects(control_plane, release_ns), 60, "the chart's objects to go")
        assert control_plane.get_json("crd", CRD_NAME)["metadata"]["name"] == CRD_NAME, "CRDs are never deleted"
        assert cluster_helm("list", "-n", release_ns, "-q").stdout.strip() == ""
    finally:
        cluster_helm("uninstall", "rel", "-n", release_ns, check=False)
        control_plane.delete_namespace(release_ns)


def _chart_objects(plane: ControlPlane, namespace: str) -> set[tuple[str, str]]:
    selector = "app.kubernetes.io/instance=rel,app.kubernetes.io/name=selfimprove"
    found = set()
    namespaced = plane.get_json(
        "serviceaccounts,deployments,services,configmaps,roles,rolebindings", "-n", namespace, "-l", selector
    )
    cluster = plane.get_json("clusterroles,clusterrolebindings", "-l", selector)
    for item in namespaced["items"] + cluster["items"]:
        found.add((item["kind"].lower(), item["metadata"]["name"]))
    return found


# ---------------------------------------------------------------------------------------------------------------
# RBAC: sufficient and minimal


def service_account_kubeconfig(plane: ControlPlane, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount, with a token from the TokenRequest API."""
    token = plane.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "test", "cluster": {"server": plane.server, "certificate-authority": str(plane.ca_file)}}
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "test", "user": account}}],
        "current-context": account,
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def can_i(plane: ControlPlane, kubeconfig: Path, *args: str) -> bool:
    argv = [str(plane.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}", "auth", "can-i", *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i {' '.join(args)}: {result.stdout}{result.stderr}"
    return answer == "yes"


def assert_minimal(
    plane: ControlPlane,
    kubeconfig: Path,
    served: str,
    other: str,
    *,
    cluster: bool,
    release: str,
    lease: str,
    scanning: bool = True,
) -> None:
    assert can_i(plane, kubeconfig, "list", "namespaces") is (scanning and not cluster)
    assert can_i(plane, kubeconfig, "watch", "customresourcedefinitions.apiextensions.k8s.io") is scanning
    assert can_i(plane, kubeconfig, "create", "jobs.batch", "-n", served)
    assert can_i(
        plane, kubeconfig, "patch", "selfimprovementloops.selfimprove.dev", "--subresource=status", "-n", served
    )
    assert can_i(plane, kubeconfig, "get", "secrets", "-n", served), "promotion.prometheus token/CA Secrets"
    assert not can_i(plane, kubeconfig, "list", "secrets", "-n", served), "get by name only"
    assert not can_i(plane, kubeconfig, "create", "pods", "-n", served), "stages run as Jobs, never bare pods"
    assert can_i(plane, kubeconfig, "list", "pods", "-n", served), "why a stage Job's pod cannot start"
    assert can_i(plane, kubeconfig, "list", "events", "-n", served), "why a stage Job has no pod (FailedCreate)"
    assert not can_i(plane, kubeconfig, "delete", "nodes")
    assert not can_i(plane, kubeconfig, "delete", f"customresourcedefinitions.apiextensions.k8s.io/{CRD_NAME}")
    assert not can_i(plane, kubeconfig, "update", "selfimprovementloops.selfimprove.dev", "-n", served)
    assert not can_i(plane, kubeconfig, "delete", "selfimprovementloops.selfimprove.dev", "-n", served)
    assert not can_i(plane, kubeconfig, "update", "configmaps", "-n", served)
    assert can_i(plane, kubeconfig, "create", "services", "-n", served), "a multi-node stage's headless Service"
    assert not can_i(plane, kubeconfig, "delete", "services", "-n", served), "garbage-collected with the loop"
    assert not can_i(plane, kubeconfig, "create", "rolebindings.rbac.authorization.k8s.io", "-n", served)
    for verb in ("create", "get", "update"):
        assert can_i(plane, kubeconfig, verb, f"leases.coordination.k8s.io/{lease}", "-n", release), verb
    assert not can_i(plane, kubeconfig, "update", "leases.coordination.k8s.io/kube-scheduler", "-n", release)
    assert not can_i(plane, kubeconfig, "delete", f"leases.coordination.k8s.io/{lease}", "-n", release)
    assert not can_i(plane, kubeconfig, "list", "leases.coordination.k8s.io", "-n", release)
    assert not can_i(plane, kubeconfig, "create", "leases.coordination.k8s.io", "-n", served), "release ns only"
    if not cluster:
        assert not can_i(plane, kubeconfig, "get", "secrets", "-n", other), "no Secrets outside the served namespaces"
        assert not can_i(plane, kubeconfig, "create", "jobs.batch", "-n", other)
        # and a real request, not only the authorizer's answer
        argv = [str(plane.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}", "get", "secret", "anything", "-n", other]
        denied = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert denied.returncode != 0 and "Forbidden" in denied.stderr, denied.stderr


class ClusterwideOperator(OperatorProcess):
    """`sil operator` without --namespace: it serves every namespace (the chart's cluster scope)."""

    def start(self) -> None:
        env = {
            **os.environ,
            **self.plane.env(),
            "SIL_STAGE_IMAGE": "selfimprove/stage:test",
            "SIL_RESYNC_SECONDS": "30",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sil_operator.cli", "operator", *self.extra_args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )


def run_a_loop_with_the_chart_rbac(
    plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path, *, scanning: bool = True
) -> None:
    operator.start()
    try:
        apply(plane, kwok_loop(namespace, "rbac", tmp_path / "store", maxIterations=1))
        try:
            wait_until(lambda: phase(plane, namespace, "rbac") == "Succeeded", 180, "the loop to succeed")
        except AssertionError as error:
            raise AssertionError(f"{error}; operator log:\n{operator.log()}") from None
    finally:
        operator.stop()
    status = get_loop(plane, namespace, "rbac")["status"]
    assert status["iteration"] == 1 and status["iterations"][0]["decision"] == "Rejected"
    jobs = {job["metadata"]["name"] for job in plane.get_json("jobs", "-n", namespace)["items"]}
    assert jobs == {f"rbac-1-{stage}" for stage in STAGES}
    reasons = {event["reason"] for event in events(plane, namespace, "rbac")}
    assert {"StageStarted", "StageSucceeded", "Completed"} <= reasons, reasons
    log = operator.log()
    assert "Failed to post an event" not in log, log
    forbidden = [line for line in log.splitlines() if "forbidden" in line.lower() or "permissions" in line]
    if not scanning:  # kopf's scanning is refused, retried, then given up: expected, and nothing else
        forbidden = [line for line in forbidden if not any(m in line for m in SCANNING_URLS + SCANNING_WARNINGS)]
    assert not forbidden, "\n".join(forbidden)


@pytest.mark.parametrize("scanning", [True, False], ids=["with-scanning", "roles-only"])
def test_namespaced_rbac_is_enough_to_run_a_loop_and_no_more(
    control_plane: ControlPlane, cluster_helm: Helm, namespace: str, tmp_path: Path, scanning: bool
) -> None:
    release_ns = control_plane.create_namespace("helm-ns-scope")
    other = control_plane.create_namespace("helm-unserved")
    try:
        cluster_helm(
            "install", "rel", str(CHART), "-n", release_ns, *IMAGES,
            "--set", "rbac.scope=namespaced", "--set", f"rbac.watchNamespaces={{{namespace}}}",
            "--set", f"rbac.scanning={str(scanning).lower()}",
        )  # fmt: skip
        kubeconfig = service_account_kubeconfig(
            control_plane, release_ns, "rel-selfimprove", tmp_path / "sa.kubeconfig"
        )
        assert_minimal(
            control_plane, kubeconfig, namespace, other,
            cluster=False, release=release_ns, lease="rel-selfimprove", scanning=scanning,
        )  # fmt: skip
        assert not can_i(control_plane, kubeconfig, "create", "jobs.batch", "-n", release_ns), "not its own namespace"
        operator = OperatorProcess(
            control_plane,
            tmp_path / "operator.log",
            namespace,
            {"KUBECONFIG": str(kubeconfig)},
            leader_election_args(release_ns, "rel-selfimprove"),
        )
        run_a_loop_with_the_chart_rbac(control_plane, operator, namespace, tmp_path, scanning=scanning)
        if not scanning:  # kopf's refused requests name who asked: the chart's ServiceAccount, not the admin
            assert f"system:serviceaccount:{release_ns}:rel-selfimprove" in operator.log()
    finally:
        cluster_helm("uninstall", "rel", "-n", release_ns, check=False)
        control_plane.delete_namespace(release_ns)
        control_plane.delete_namespace(other)


def test_cluster_rbac_is_enough_to_run_a_loop_clusterwide(
    control_plane: ControlPlane, cluster_helm: Helm, namespace: str, tmp_path: Path
) -> None:
    release_ns = control_plane.create_namespace("helm-cluster-scope")
    try:
        cluster_helm("install", "clusterwide", str(CHART), "-n", release_ns, *IMAGES)
        kubeconfig = service_account_kubeconfig(
            control_plane, release_ns, "clusterwide-selfimprove", tmp_path / "sa.kubeconfig"
        )
        assert_minimal(
            control_plane, kubeconfig, namespace, release_ns,
            cluster=True, release=release_ns, lease="clusterwide-selfimprove",
        )  # fmt: skip
        operator = ClusterwideOperator(
            control_plane,
            tmp_path / "operator.log",
            namespace,
            {"KUBECONFIG": str(kubeconfig)},
            leader_election_args(release_ns, "clusterwide-selfimprove"),
        )
        run_a_loop_with_the_chart_rbac(control_plane, operator, namespace, tmp_path)
    finally:
        cluster_helm("uninstall", "clusterwide", "-n", release_ns, check=False)
        control_plane.delete_namespace(release_ns)
