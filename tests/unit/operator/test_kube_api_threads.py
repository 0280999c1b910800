"""The operator's Kubernetes calls run on a pool of its own whose size (and HTTP connections) the operator's environment
sets, asyncio's default size unless told."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sil_operator.kube.client import DEFAULT_API_THREADS, KubeApi, api_threads


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, DEFAULT_API_THREADS),
        ({"SIL_KUBE_API_THREADS": ""}, DEFAULT_API_THREADS),
        ({"SIL_KUBE_API_THREADS": "64"}, 64),
    ],
)
def test_the_api_thread_count_comes_from_the_environment(environ: dict[str, str], expected: int) -> None:
    assert api_threads(environ) == expected


@pytest.mark.parametrize("raw", ["0", "-3", "many"])
def test_a_bad_api_thread_count_names_the_variable_and_what_is_expected(raw: str) -> None:
    with pytest.raises(ValueError, match=r"^SIL_KUBE_API_THREADS="):
        api_threads({"SIL_KUBE_API_THREADS": raw})


def test_calls_run_concurrently_on_the_clients_own_pool_and_http_connections_match_it() -> None:
    api = KubeApi(threads=12)
    assert api._client.configuration.connection_pool_maxsize == 12
    barrier = threading.Barrier(12, timeout=10)
    names: set[str] = set()

    def blocking_call() -> None:
        names.add(threading.current_thread().name)
        barrier.wait()  # returns only when 12 calls are in flight at once

    async def twelve_calls() -> None:
        await asyncio.gather(*(api._call(blocking_call) for _ in range(12)))

    asyncio.run(twelve_calls())
    assert len(names) == 12 and all(name.startswith("kube-api") for name in names)
