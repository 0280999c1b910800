"""Answering gate queries from Prometheus over its HTTP API (`GET /api/v1/query`, an instant query).

Gates judge one number, so the answer must be an instant vector (each series becomes a Sample) or a scalar (one
Sample without labels). Everything that keeps the query from being answered — Prometheus unreachable, slow, an
HTTP error, a PromQL error, an answer of another type — is a QueryError whose message names the address, the
query and the reason, because that message is what the user reads in the gate's measurement.

The standard library's urllib is used on purpose: no extra dependency in the operator image, and the few things
needed (a bearer token header, a CA file or skipped verification, a timeout) are a few lines.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from sil_operator.gates.providers import QueryError, Sample

_REASON_LIMIT = 500
"""Characters of a non-JSON error body kept in a message (an HTML page from a proxy can be long)."""


def parse_response(body: bytes, promql: str, address: str) -> list[Sample]:
    """The samples of an `/api/v1/query` answer; QueryError for an error answer or an unusable result type."""
    where = f"Prometheus at {address}, query {promql!r}"
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise QueryError(f"{where}: the answer is not JSON ({error}): {_shorten(body)}") from error
    if not isinstance(document, dict):
        raise QueryError(f"{where}: the answer is not a JSON object: {_shorten(body)}")
    if document.get("status") != "success":
        kind = document.get("errorType") or "error"
        message = document.get("error") or _shorten(body)
        raise QueryError(f"{where}: {kind}: {message}")
    data = document.get("data")
    if not isinstance(data, dict):
        raise QueryError(f"{where}: the answer has no data: {_shorten(body)}")
    result_type, result = data.get("resultType"), data.get("result", [])
    try:
        if result_type == "vector":
            return [Sample(labels=dict(item["metric"]), value=_number(item["value"])) for item in result]
        if result_type == "scalar":
            return [Sample(labels={}, value=_number(result))]
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise QueryError(f"{where}: malformed {result_type} result ({error!r}): {_shorten(body)}") from error
    raise QueryError(
        f"{where}: the result is a {result_type}, but a gate needs an instant vector or a scalar "
        "(a range selector like [5m] needs a function around it, e.g. avg_over_time)"
    )


def _number(pair: Any) -> float:
    """Prometheus sends a value as [timestamp, "string"]: strings keep NaN and ±Inf exact."""
    _timestamp, text = pair
    return float(text)


def _shorten(body: bytes | str) -> str:
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text if len(text) <= _REASON_LIMIT else text[:_REASON_LIMIT] + "…"


class PrometheusProvider:
    """A MetricsProvider backed by a Prometheus server (or anything that speaks its query API, e.g. Thanos)."""

    def __init__(
        self,
        address: str,
        bearer_token: str | None = None,
        ca_file: str | None = None,
        insecure_skip_verify: bool = False,
        timeout: float = 10.0,
    ) -> None:
        parsed = urllib.parse.urlsplit(address)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"{address!r}: the Prometheus address must be an http:// or https:// URL")
        self.address = address.rstrip("/")
        self.timeout = timeout
        self._headers = {"Accept": "application/json"}
        if bearer_token:
            self._headers["Authorization"] = f"Bearer {bearer_token.strip()}"
        self._tls: ssl.SSLContext | None = None
        if parsed.scheme == "https":
            self._tls = ssl.create_default_context(cafile=ca_file)
            if insecure_skip_verify:
                self._tls.check_hostname = False
                self._tls.verify_mode = ssl.CERT_NONE

    def query(self, promql: str) -> list[Sample]:
        """The instant vector (or scalar) `promql` evaluates to now; raises QueryError when it cannot be answered."""
        # Prometheus's own evaluation timeout is set to ours, so that it gives up when we stop waiting.
        parameters = urllib.parse.urlencode({"query": promql, "timeout": f"{self.timeout:g}s"})
        request = urllib.request.Request(f"{self.address}/api/v1/query?{parameters}", headers=self._headers)
        where = f"Prometheus at {self.address}, query {promql!r}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._tls) as response:
                body: bytes = response.read()
        except urllib.error.HTTPError as error:
            raise QueryError(self._http_error(error, promql)) from error
        except urllib.error.URLError as error:
            reason = error.reason
            if isinstance(reason, TimeoutError):
                raise QueryError(f"{where}: no answer within {self.timeout:g} s") from error
            raise QueryError(f"{where}: cannot reach it: {reason}") from error
        except TimeoutError as error:
            raise QueryError(f"{where}: no answer within {self.timeout:g} s") from error
        except OSError as error:  # a connection reset while reading, and the like
            raise QueryError(f"{where}: {error}") from error
        return parse_response(body, promql, self.address)

    def _http_error(self, error: urllib.error.HTTPError, promql: str) -> str:
        """Prometheus answers 400/422/503 with its JSON error (bad PromQL, evaluation errors); proxies do not."""
        where = f"Prometheus at {self.address}, query {promql!r}"
        try:
            body = error.read()
        except OSError:
            body = b""
        if body.lstrip().startswith(b"{"):
            try:
                parse_response(body, promql, self.address)
            except QueryError as answer:
                return f"{answer} (HTTP {error.code})"
        hint = ""
        if error.code in (401, 403):
            hint = "; check the bearer token (promotion.prometheus.bearerTokenSecret) and its permissions"
        detail = f": {_shorten(body)}" if body.strip() else ""
        return f"{where}: HTTP {error.code} {error.reason}{hint}{detail}"
