"""Pure arithmetic of bench/scale.py: percentiles, the API server's request counters, the operator's audit log
and /proc samples, each turned into the per-transition numbers of its table. No I/O here (callers read the text),
so every rule is unit tested (tests/unit/bench/test_scale_stats.py).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
"""Audit-log verbs that change something (lower case, as the audit log and RBAC spell them)."""
METRIC_WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""The same for `apiserver_request_total`, which names verbs in upper case HTTP-like terms."""


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100): a value that was measured, never an interpolation.

    Raises ValueError on no values: a table cell with no samples must say so, not show 0.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, not {q}")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def distribution(values: Sequence[float]) -> dict[str, float | int]:
    """n, min, p50, p90, p99, max and mean of the values ({"n": 0} when there are none)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": min(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": sum(values) / len(values),
    }


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')


def request_totals(exposition: str) -> dict[tuple[str, str], float]:
    """`apiserver_request_total` from the API server's /metrics text, summed by (verb, resource), where resource
    is `group/resource[/subresource]` ("" group for the core API)."""
    totals: dict[tuple[str, str], float] = {}
    for line in exposition.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] != "apiserver_request_total":
            continue
        labels = {m["key"]: m["value"] for m in _LABEL.finditer(match["labels"] or "")}
        resource = f"{labels.get('group', '')}/{labels.get('resource', '')}"
        if labels.get("subresource"):
            resource += f"/{labels['subresource']}"
        key = (labels.get("verb", ""), resource)
        totals[key] = totals.get(key, 0.0) + float(match["value"])
    return totals


def by_verb(counts: Mapping[tuple[str, str], float]) -> dict[str, float]:
    """(verb, resource) counts summed per verb, largest first."""
    verbs: dict[str, float] = {}
    for (verb, _), value in counts.items():
        verbs[verb] = verbs.get(verb, 0.0) + value
    return dict(sorted(verbs.items(), key=lambda item: -item[1]))


def delta(
    before: Mapping[tuple[str, str], float], after: Mapping[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    """Requests made between two scrapes (counters only grow while the API server runs), largest first."""
    grown = {key: value - before.get(key, 0.0) for key, value in after.items() if value > before.get(key, 0.0)}
    return dict(sorted(grown.items(), key=lambda item: -item[1]))


@dataclass(frozen=True)
class AuditedRequest:
    verb: str
    resource: str
    """`group/resource[/subresource]`, as in `request_totals`."""
    user_agent: str


def audited_requests(lines: Iterable[str], user: str) -> list[AuditedRequest]:
    """The requests of one user in an API server audit log (JSON lines, ResponseComplete stage)."""
    found = []
    for line in lines:
        if not line.strip():
            continue
        event = json.loads(line)
        if event.get("stage") != "ResponseComplete" or (event.get("user") or {}).get("username") != user:
            continue
        ref = event.get("objectRef") or {}
        resource = f"{ref.get('apiGroup', '')}/{ref.get('resource', '')}"
        if ref.get("subresource"):
            resource += f"/{ref['subresource']}"
        found.append(AuditedRequest(event.get("verb", ""), resource, event.get("userAgent", "")))
    return found


def count_requests(requests: Iterable[AuditedRequest]) -> Counter[tuple[str, str]]:
    """Audited requests per (verb, resource)."""
    return Counter((r.verb, r.resource) for r in requests)


def writes(counts: Mapping[tuple[str, str], float]) -> float:
    """How many of the counted requests change something (audit or metric verbs)."""
    return sum(v for (verb, _), v in counts.items() if verb in WRITE_VERBS or verb in METRIC_WRITE_VERBS)


def proc_rss_bytes(status: str) -> int:
    """VmRSS of a /proc/PID/status text, in bytes."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected VmRSS unit {unit!r}")
            return int(value) * 1024
    raise ValueError("no VmRSS line (the process is a zombie or a kernel thread)")


def proc_cpu_seconds(stat: str, ticks_per_second: int) -> float:
    """utime + stime of a /proc/PID/stat text (its own threads; children not included), in seconds."""
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return (int(fields[11]) + int(fields[12])) / ticks_per_second
