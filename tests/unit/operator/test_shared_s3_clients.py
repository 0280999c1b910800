"""The operator holds one Store per loop; the loops share S3 clients (a boto3 session each cost ~12 MB and 0.3 s
of CPU, so a thousand loops held gigabytes: bench/scale.py). Making a client connects to nothing."""

from __future__ import annotations

from typing import Any

import pytest

from sil_operator.kube.controller import Controller
from sil_stages.core.contract import StorageOptions
from sil_stages.core.store import S3Clients, Store, StoreTimeouts
from tests.unit.operator.builders import make_loop

ENDPOINT = "http://127.0.0.1:1"


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")


def s3_loop(bucket_path: str, endpoint: str = ENDPOINT) -> Any:
    return make_loop(storage={"uri": f"s3://{bucket_path}", "endpoint": endpoint})


def test_loops_of_one_operator_with_the_same_endpoint_share_one_s3_client() -> None:
    controller = Controller(api=None, emit=lambda *_: None)  # type: ignore[arg-type]
    first = controller._memory("ns", "a", s3_loop("loops/a")).manifests.store
    second = controller._memory("ns", "b", s3_loop("loops/b")).manifests.store
    other = controller._memory("ns", "c", s3_loop("loops/c", "http://127.0.0.1:2")).manifests.store
    assert first._client() is second._client()
    assert other._client() is not first._client()


def test_stores_without_shared_clients_each_make_their_own() -> None:
    options = StorageOptions(uri="s3://loops/a", endpoint=ENDPOINT)
    assert Store(options)._client() is not Store(options)._client()


def test_shared_clients_differ_by_region_timeouts_and_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    clients = S3Clients()
    quick = StoreTimeouts(connect_seconds=1.0)
    base = clients.get(ENDPOINT, "us-east-1", StoreTimeouts())
    assert clients.get(ENDPOINT, "us-east-1", StoreTimeouts()) is base
    assert clients.get(ENDPOINT, "eu-west-1", StoreTimeouts()) is not base
    assert clients.get(ENDPOINT, "us-east-1", quick) is not base
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "another-key")
    rotated = clients.get(ENDPOINT, "us-east-1", StoreTimeouts())
    assert rotated is not base, "changed credentials in the environment get a client that uses them"
    assert rotated._request_signer._credentials.access_key == "another-key"


def test_explicit_credentials_get_a_client_of_their_own_whatever_the_environment_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator reads a loop's credentials Secret and gives its Store those keys: two loops with different
    Secrets must not share a client, and the operator's own environment must not leak into either."""
    from sil_stages.core.store import S3Credentials

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "operator-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "operator-secret")
    shared = S3Clients()
    timeouts = StoreTimeouts()
    team_a = shared.get("http://127.0.0.1:1", "us-east-1", timeouts, S3Credentials("team-a", "secret-a"))
    team_b = shared.get("http://127.0.0.1:1", "us-east-1", timeouts, S3Credentials("team-b", "secret-b"))
    own = shared.get("http://127.0.0.1:1", "us-east-1", timeouts)
    assert len({id(team_a), id(team_b), id(own)}) == 3
    assert shared.get("http://127.0.0.1:1", "us-east-1", timeouts, S3Credentials("team-a", "secret-a")) is team_a
    assert team_a._request_signer._credentials.access_key == "team-a"
    assert own._request_signer._credentials.access_key == "operator-key"
    assert "secret-a" not in repr(S3Credentials("team-a", "secret-a"))
