"""The two forms of the chaos suite: short (part of `make test`) and long (`SIL_CHAOS=long`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

ENV = "SIL_CHAOS"


@dataclass(frozen=True)
class ChaosSettings:
    form: str
    loops: int
    iterations: int
    operator_kills: int
    kill_interval: tuple[float, float]
    """Seconds between two operator kills, drawn uniformly (seeded)."""
    disruptions: tuple[str, ...]
    """In order, each at the next completed evaluate Job: `s3` (SeaweedFS killed in the promotion window and
    restarted), `prometheus` (stopped while gates measure, then started) and `apiserver` (kube-apiserver restarted)."""
    timeout: float
    """Seconds for every loop to finish."""
    seed: int = 20261201


SHORT = ChaosSettings(
    form="short",
    loops=6,
    iterations=3,
    operator_kills=10,
    kill_interval=(2.0, 6.0),
    disruptions=("s3", "prometheus", "apiserver"),
    timeout=200.0,
)
LONG = ChaosSettings(
    form="long",
    loops=20,
    iterations=4,
    operator_kills=50,
    kill_interval=(2.0, 6.0),
    disruptions=("s3", "prometheus", "apiserver", "s3", "prometheus", "apiserver", "s3"),
    timeout=1500.0,
)


def chosen() -> ChaosSettings:
    """SIL_CHAOS=long: the long form; unset or `short`: the short one."""
    form = os.environ.get(ENV, "short")
    if form not in ("short", "long"):
        raise ValueError(f"{ENV}={form!r}: use short or long")
    return LONG if form == "long" else SHORT
