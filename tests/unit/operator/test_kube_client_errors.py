"""Which client errors mean "the API server did not answer" (retried within seconds) and which are answers."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from sil_operator.kube.client import unreachable

NOT_ANSWERED = {
    "connection refused": MaxRetryError(None, "/apis", NewConnectionError(None, "Connection refused")),  # type: ignore[arg-type]
    "connection reset": ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")),
    "a bare socket error": ConnectionRefusedError(111, "Connection refused"),
    "service unavailable": ApiException(status=503, reason="Service Unavailable"),
    "bad gateway": ApiException(status=502, reason="Bad Gateway"),
    "gateway timeout": ApiException(status=504, reason="Gateway Timeout"),
}
ANSWERED = {
    "not found": ApiException(status=404, reason="Not Found"),
    "conflict": ApiException(status=409, reason="Conflict"),
    "forbidden": ApiException(status=403, reason="Forbidden"),
    "invalid": ApiException(status=422, reason="Unprocessable Entity"),
    "internal error": ApiException(status=500, reason="Internal Server Error"),
    "a bug of ours": KeyError("metadata"),
}


@pytest.mark.parametrize("case", sorted(NOT_ANSWERED))
def test_errors_that_say_nothing_about_the_request_are_unreachable(case: str) -> None:
    assert unreachable(NOT_ANSWERED[case])


@pytest.mark.parametrize("case", sorted(ANSWERED))
def test_answers_and_our_own_errors_are_not(case: str) -> None:
    assert not unreachable(ANSWERED[case])
