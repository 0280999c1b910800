"""Taking one measurement of a gate: run its queries, then judge the values with its conditions."""

from __future__ import annotations

from datetime import datetime

from sil_operator.api.spec import GateSpec
from sil_operator.api.status import GatePhase, Measurement
from sil_operator.gates.analysis import ResolvedGate, measurement_phase
from sil_operator.gates.cel import ConditionError
from sil_operator.gates.providers import MetricsProvider, QueryError


class _Inconclusive(Exception):
    pass


def _single_value(provider: MetricsProvider, query: str) -> float:
    samples = provider.query(query)
    if not samples:
        raise _Inconclusive(f"{query} returned no data")
    if len(samples) > 1:
        raise QueryError(f"{query} returned {len(samples)} series; narrow the selector to one")
    return samples[0].value


def measure(gate: GateSpec, resolved: ResolvedGate, provider: MetricsProvider, now: datetime) -> Measurement:
    """Never raises: an unanswerable query is an Error measurement, an empty one Inconclusive."""
    try:
        result = _single_value(provider, resolved.candidate)
        champion = _single_value(provider, resolved.champion) if resolved.champion else None
        phase = measurement_phase(gate, result, champion)
    except _Inconclusive as empty:
        return Measurement(phase=GatePhase.INCONCLUSIVE, query=resolved.candidate, message=str(empty), at=now)
    except (QueryError, ConditionError) as error:
        return Measurement(phase=GatePhase.ERROR, query=resolved.candidate, message=str(error), at=now)
    return Measurement(phase=phase, value=result, champion=champion, query=resolved.candidate, at=now)
