"""Which engine runs one stage run's pods on Kubernetes, and the objects each engine creates. Pure: no I/O.

- `job`: one pod, a plain batch/v1 Job (kube/objects.stage_job). Every stage but a multi-node optimize.
- `indexed-job`: N pods that train together (optimize with `distributed.nodes` > 1): an Indexed Job plus the
  headless Service that gives its pods stable DNS names (kube/objects.group_job, group_service). Built into every
  cluster.
- `jobset`: the same group as a JobSet (jobset.x-k8s.io), when the cluster serves that API.

`runtime.engine` (per stage: `runtime.stages.optimize.engine`) asks for one; `auto` (the default) takes a JobSet
when the API server serves it, else an Indexed Job. A JobSet asked for by name on a cluster without it is an
`EngineUnavailable` failure: the loop shows it as Degraded and is retried, so installing JobSet heals it, as does
a spec that asks for indexed-job.
"""

from __future__ import annotations

from typing import Any, Literal

from sil_operator.api.spec import LoopSpec
from sil_operator.failures import LoopProblem
from sil_operator.kube.objects import LoopIdentity, group_job, group_service, stage_job
from sil_operator.planner import StartStage

Engine = Literal["job", "indexed-job", "jobset"]
JOBSET_API = "jobset.x-k8s.io/v1alpha2"


class EngineUnavailable(LoopProblem):
    """The engine the spec asks for is not served by this cluster; installing it, or another engine, heals it."""

    reason = "EngineUnavailable"


def stage_nodes(spec: LoopSpec, stage: str) -> int:
    """The pods a run of `stage` spans: `optimize.distributed.nodes` for optimize, 1 for every other stage."""
    return spec.optimize.distributed.nodes if stage == "optimize" else 1


def choose_engine(requested: str | None, nodes: int, jobset_served: bool) -> Engine:
    """The engine of a stage run of `nodes` pods, given `runtime.engine` (None = auto) and whether the API server
    serves JobSets. Raises EngineUnavailable when a JobSet is asked for by name and not served."""
    if nodes <= 1:
        return "job"
    if requested == "indexed-job":
        return "indexed-job"
    if requested == "jobset" and not jobset_served:
        raise EngineUnavailable(
            f"runtime.engine: jobset, but this cluster does not serve {JOBSET_API} JobSets; install JobSet "
            "(https://jobset.sigs.k8s.io) or set runtime.engine (or runtime.stages.optimize.engine) to "
            "indexed-job or auto"
        )
    return "jobset" if jobset_served else "indexed-job"


def stage_objects(
    engine: Engine, loop: LoopIdentity, spec: LoopSpec, action: StartStage, default_image: str | None
) -> list[dict[str, Any]]:
    """The objects of one stage run besides its ConfigMap, in the order they are created, the workload (the Job that
    runs the pods) last: a group's Service comes first, so the pods' names resolve from their start. Raises
    ValueError when no stage image is set."""
    if engine == "job":
        return [stage_job(loop, spec, action, default_image)]
    if engine == "indexed-job":
        nodes = stage_nodes(spec, action.stage)
        return [group_service(loop, spec, action), group_job(loop, spec, action, default_image, nodes)]
    # The JobSet engine (kube/jobset.py) plugs in here: its manifest, built from the same pod template.
    raise EngineUnavailable(f"runtime.engine: the {engine} engine is not part of this operator; use indexed-job")
