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
    """Seconds after its stage completion that a kill lands, drawn uniformly (seeded): each kill is due at a seeded
    count of completed stage Jobs within the first KILLS_WITHIN of the run's stages, so the schedule follows the
    loops' progress, not the clock, and every kill is done before the loops can end, however fast the machine."""
    disruptions: tuple[str, ...]
    """In order, each at the next completed evaluate Job: `s3` (SeaweedFS killed in the promotion window and
    restarted), `prometheus` (stopped while gates measure, then started) and `apiserver` (kube-apiserver restarted)."""
    timeout: float
    """Seconds for every loop to finish."""
    seed: int = 20261201

    @property
    def stage_jobs(self) -> int:
        """Stage Jobs that complete in an undisturbed run: 4 per iteration of every loop."""
        return self.loops * self.iterations * 4


KILLS_WITHIN = 0.6
"""Kills are due within this share of the run's stage completions: the rest of the run outlasts the last kill."""


SHORT = ChaosSettings(
    form="short",
    loops=6,
    iterations=3,
    operator_kills=10,
    kill_interval=(0.2, 1.5),
    disruptions=("s3", "prometheus", "apiserver"),
    timeout=200.0,
)
LONG = ChaosSettings(
    form="long",
    loops=20,
    iterations=4,
    operator_kills=50,
    kill_interval=(0.2, 1.5),
    disruptions=("s3", "prometheus", "apiserver", "s3", "prometheus", "apiserver", "s3"),
    timeout=1500.0,
)


def chosen() -> ChaosSettings:
    """SIL_CHAOS=long: the long form; unset or `short`: the short one."""
    form = os.environ.get(ENV, "short")
    if form not in ("short", "long"):
        raise ValueError(f"{ENV}={form!r}: use short or long")
    return LONG if form == "long" else SHORT
