"""The few Kubernetes API calls the operator makes, idempotent, and never blocking the event loop.

The official client is synchronous; every call runs in a worker thread of the client's own pool, so kopf's event
loop keeps serving watches while a request is in flight. The pool (and the HTTP connection pool) holds
`SIL_KUBE_API_THREADS` threads, by default what asyncio's default executor has: min(32, CPUs + 4). More is not
better everywhere: on a 2-core node with 100 loops, 32 threads made reconciles interleave more (more reads per
stage transition) and raised the operator's CPU per transition from 0.10 to 0.17 s and the handoff p99 from 22 to
36 s (bench/RESULTS.md); raise it on a large node with a fast API server. Since reconciles read from the watches
(no GET or LIST per wake) the pool is what a handoff waits for: on the same machine 32 threads cut the 100-loop
handoff p50 from 5.9 to 1.1 s but drained the loops later (the API server's cores went to the operator's writes).
Create treats 409 (already exists) as success and delete treats 404 as success: with deterministic names that is
what makes a replayed action harmless. A call the API server does not answer (connection refused or reset, 502,
503, 504) raises `ApiServerUnreachable`, whose retry is capped at seconds (`failures.retry_delay`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sil_operator.api.spec import API_GROUP, API_VERSION
from sil_operator.crd import PLURAL
from sil_operator.failures import ApiServerUnreachable
from sil_operator.kube.jobset import JOBSET_GROUP, JOBSET_KIND, JOBSET_NAME_LABEL, JOBSET_PLURAL, JOBSET_VERSION
from sil_operator.kube.objects import LABEL_LOOP

log = logging.getLogger("selfimprove.operator")

API_THREADS_ENV = "SIL_KUBE_API_THREADS"
DEFAULT_API_THREADS = min(32, (os.cpu_count() or 1) + 4)
"""asyncio's default executor size."""


def api_threads(environ: dict[str, str] | None = None) -> int:
    """Requests the operator keeps in flight at once: SIL_KUBE_API_THREADS (at least 1), default min(32, CPUs + 4)."""
    raw = (os.environ if environ is None else environ).get(API_THREADS_ENV, "")
    if not raw:
        return DEFAULT_API_THREADS
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{API_THREADS_ENV}={raw!r}: expected a whole number of threads, e.g. 16") from None
    if value < 1:
        raise ValueError(f"{API_THREADS_ENV}={raw!r}: expected at least 1 thread")
    return value


UNREACHABLE_STATUSES = frozenset({502, 503, 504})
"""What a proxy or an API server that is starting or stopping answers: nothing about the request itself."""


def unreachable(error: BaseException) -> bool:
    """True when `error` says the API server did not answer, not that it refused the request."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError as Urllib3Error

    if isinstance(error, ApiException):
        return error.status in UNREACHABLE_STATUSES
    return isinstance(error, Urllib3Error | ConnectionError)


def _short(error: BaseException) -> str:
    """The error's first line, without urllib3's repeated pool description."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


@dataclass
class Created:
    name: str
    created: bool
    """False when it already existed (a replayed create)."""


class KubeApi:
    def __init__(self, api_client: Any = None, threads: int | None = None) -> None:
        from kubernetes import client

        self.threads = threads or api_threads()
        if api_client is None:
            configuration = client.Configuration.get_default_copy()
            configuration.connection_pool_maxsize = self.threads
            api_client = client.ApiClient(configuration)
        self._client = api_client
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="kube-api")
        self.core = client.CoreV1Api(self._client)
        self.batch = client.BatchV1Api(self._client)
        self.custom = client.CustomObjectsApi(self._client)

    async def _call(self, function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Runs one blocking client call on the client's own thread pool."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, functools.partial(function, *args, **kwargs)
            )
        except Exception as error:
            if unreachable(error):
                raise ApiServerUnreachable(f"the Kubernetes API server did not answer: {_short(error)}") from error
            raise

    @staticmethod
    def from_kubeconfig(path: str | None = None) -> KubeApi:
        from kubernetes import config

        if path is None:
            try:
                config.load_incluster_config()
                return KubeApi()
            except config.ConfigException:
                pass
        config.load_kube_config(config_file=path)
        return KubeApi()

    async def get_loop(self, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            body: dict[str, Any] = await self._call(
                self.custom.get_namespaced_custom_object, API_GROUP, API_VERSION, namespace, PLURAL, name
            )
            return body
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def patch_loop_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Merge-patches the status subresource; returns the loop as the API server stored it."""
        patched: dict[str, Any] = await self._call(
            self.custom.patch_namespaced_custom_object_status,
            API_GROUP,
            API_VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
        )
        return patched

    async def _secret_data(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's data, base64 as the API gives it. Raises KeyError naming the Secret when it cannot be read."""
        from kubernetes.client.exceptions import ApiException

        try:
            secret = await self._call(self.core.read_namespaced_secret, name, namespace)
        except ApiException as error:
            raise KeyError(f"Secret {namespace}/{name}: {error.reason} ({error.status})") from error
        return dict(secret.data or {})

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        """One key of a Secret, decoded. Raises KeyError naming the Secret and key when it is not there."""
        import base64

        data = await self._secret_data(namespace, name)
        if key not in data:
            raise KeyError(f"Secret {namespace}/{name} has no key {key!r}")
        try:
            return base64.b64decode(data[key]).decode("utf-8")
        except (ValueError, UnicodeDecodeError) as error:
            raise KeyError(f"Secret {namespace}/{name} key {key!r} is not UTF-8 text") from error

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        """Every key of a Secret, decoded (keys that are not UTF-8 text are left out). Raises KeyError naming the
        Secret when it cannot be read."""
        import base64

        decoded: dict[str, str] = {}
        for key, value in (await self._secret_data(namespace, name)).items():
            try:
                decoded[key] = base64.b64decode(value).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                continue
        return decoded

    async def secret_problem(self, namespace: str, name: str) -> str | None:
        """None when the Secret exists; else what is wrong with it, naming it."""
        from kubernetes.client.exceptions import ApiException

        try:
            await self._call(self.core.read_namespaced_secret, name, namespace)
        except ApiException as error:
            return f"Secret {namespace}/{name}: {error.reason} ({error.status})"
        return None

    async def list_jobs(self, namespace: str, loop: str) -> list[dict[str, Any]]:
        result = await self._call(self.batch.list_namespaced_job, namespace, label_selector=f"{LABEL_LOOP}={loop}")
        return [self._client.sanitize_for_serialization(job) for job in result.items]

    async def list_job_events(self, namespace: str, job: str, uid: str) -> list[dict[str, Any]]:
        """The Warning events of one Job (e.g. the Job controller's FailedCreate), selected on the server."""
        selector = f"involvedObject.kind=Job,involvedObject.name={job},involvedObject.uid={uid},type=Warning"
        return await self._list_for_diagnosis(self.core.list_namespaced_event, namespace, field_selector=selector)

    async def list_job_pods(self, namespace: str, job: str, jobset: bool = False) -> list[dict[str, Any]]:
        """The pods of one Job (or of every child Job of a JobSet), by the label their controller puts on them."""
        selector = f"{JOBSET_NAME_LABEL}={job}" if jobset else f"batch.kubernetes.io/job-name={job}"
        return await self._list_for_diagnosis(self.core.list_namespaced_pod, namespace, label_selector=selector)

    async def list_jobset_child_events(self, namespace: str, jobset: str) -> list[dict[str, Any]]:
        """The Warning events of a JobSet's child Jobs (named `<jobset>-<replicated job>-<index>`; a field selector
        cannot match a prefix, so the namespace's Job Warnings are filtered here). Read only for a stuck JobSet."""
        selector = "involvedObject.kind=Job,type=Warning"
        events = await self._list_for_diagnosis(self.core.list_namespaced_event, namespace, field_selector=selector)
        prefix = f"{jobset}-"
        return [e for e in events if str((e.get("involvedObject") or {}).get("name", "")).startswith(prefix)]

    async def _list_for_diagnosis(self, list_call: Any, namespace: str, **selector: str) -> list[dict[str, Any]]:
        """A read that only explains a stage: when it is forbidden (RBAC without pods/events list), the loop goes
        on without the explanation, and the log says which permission is missing."""
        from kubernetes.client.exceptions import ApiException

        try:
            result = await self._call(list_call, namespace, **selector)
        except ApiException as error:
            if error.status != 403:
                raise
            log.warning("cannot diagnose stage Jobs in %s: %s (grant list on pods and events)", namespace, error.reason)
            return []
        return [self._client.sanitize_for_serialization(item) for item in result.items]

    async def serves(self, group: str, version: str, plural: str) -> bool:
        """Whether the API server serves `plural` in group/version (discovery; 404 when the group is absent)."""
        from kubernetes.client.exceptions import ApiException

        try:
            resources = await self._call(self.custom.get_api_resources, group, version)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return any(resource.name == plural for resource in resources.resources or [])

    async def list_jobsets(self, namespace: str, loop: str) -> list[dict[str, Any]]:
        """The loop's JobSets (its multi-node stage runs), by the same label as its Jobs."""
        result = await self._call(
            self.custom.list_namespaced_custom_object,
            JOBSET_GROUP,
            JOBSET_VERSION,
            namespace,
            JOBSET_PLURAL,
            label_selector=f"{LABEL_LOOP}={loop}",
        )
        return list(result.get("items") or [])

    async def create(self, manifest: dict[str, Any]) -> Created:
        from kubernetes.client.exceptions import ApiException

        namespace = manifest["metadata"]["namespace"]
        name = manifest["metadata"]["name"]
        create = {
            "ConfigMap": self.core.create_namespaced_config_map,
            "Service": self.core.create_namespaced_service,
            "Job": self.batch.create_namespaced_job,
            JOBSET_KIND: self._create_jobset,
        }[manifest["kind"]]
        try:
            await self._call(create, namespace, manifest)
        except ApiException as error:
            if error.status == 409:
                return Created(name, created=False)
            raise
        return Created(name, created=True)

    def _create_jobset(self, namespace: str, manifest: dict[str, Any]) -> Any:
        return self.custom.create_namespaced_custom_object(
            JOBSET_GROUP, JOBSET_VERSION, namespace, JOBSET_PLURAL, manifest
        )

    async def delete_job(self, namespace: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            await self._call(self.batch.delete_namespaced_job, name, namespace, propagation_policy="Background")
        except ApiException as error:
            if error.status != 404:
                raise
