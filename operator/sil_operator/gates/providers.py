"""Where gate queries are answered. One small interface, one class per backend (as Argo's metricproviders/).

- `ManifestProvider` (local runs, no Prometheus): answers instant-vector selectors from the series that the
  evaluate stage recorded in its manifest, which are the same series it pushes to the Pushgateway. So a gate
  means the same thing locally and on a cluster.
- A Prometheus provider answers full PromQL over HTTP (see `prometheus.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from sil_operator.manifests import read_manifest
from sil_stages.core.store import Store, StoreError


class QueryError(RuntimeError):
    """The query could not be answered (unreachable backend, bad query): the measurement is Error."""


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


class MetricsProvider(Protocol):
    def query(self, promql: str) -> list[Sample]:
        """The instant vector the query returns (possibly empty); raises QueryError."""
        ...


_SELECTOR = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*$", re.DOTALL)
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = re.fullmatch(self.value, actual) is not None
        return found if self.op == "=~" else not found


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: tuple[Matcher, ...]

    def matches(self, name: str, labels: dict[str, str]) -> bool:
        return name == self.name and all(m.matches(labels) for m in self.matchers)

    def equals(self, label: str) -> str | None:
        return next((m.value for m in self.matchers if m.label == label and m.op == "="), None)


def parse_selector(promql: str) -> Selector:
    """Parses `name{label="v", other=~"re"}`; anything else (functions, operators) raises QueryError."""
    match = _SELECTOR.match(promql)
    if match is None:
        raise QueryError(
            f"{promql!r}: without promotion.prometheus a gate query must be an instant-vector selector like "
            'metric{label="value"}; set promotion.prometheus to use full PromQL'
        )
    name, body = match.group(1), (match.group(2) or "").strip()
    matchers: list[Matcher] = []
    position = 0
    while position < len(body):
        item = _MATCHER.match(body, position)
        if item is None:
            raise QueryError(f"{promql!r}: cannot parse label matchers at {body[position:]!r}")
        value = item.group(3).replace('\\"', '"').replace("\\\\", "\\")
        matchers.append(Matcher(item.group(1), item.group(2), value))
        position = item.end()
    return Selector(name, tuple(matchers))


class ManifestProvider:
    """Answers selectors from `iterations/<k>/evaluate/_manifest.json`; the selector must pin `iteration`."""

    def __init__(self, store: Store, storage_uri: str) -> None:
        self._store = store
        self._storage_uri = storage_uri

    def query(self, promql: str) -> list[Sample]:
        selector = parse_selector(promql)
        iteration = selector.equals("iteration")
        if iteration is None or not iteration.isdigit():
            raise QueryError(
                f'{promql!r}: a local gate query must select one iteration, e.g. iteration="{{{{iteration}}}}"'
            )
        try:
            manifest = read_manifest(self._store, self._storage_uri, int(iteration), "evaluate")
        except StoreError as error:
            raise QueryError(str(error)) from error
        if manifest is None:
            return []
        return [
            Sample(dict(series.labels), series.value)
            for series in manifest.series
            if selector.matches(series.name, dict(series.labels))
        ]
