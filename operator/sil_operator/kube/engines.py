"""Which engine runs one stage run's pods on Kubernetes, and the objects each engine creates. Pure: no I/O.

- `job`: one pod, a plain batch/v1 Job (kube/objects.stage_job). Every stage but a multi-node optimize.
- `indexed-job`: N pods that train together (optimize with `distributed.nodes` > 1): an Indexed Job plus the
  headless Service that gives its pods stable DNS names (kube/objects.group_job, group_service). Built into every
  cluster.
- `jobset`: the same group as a JobSet (jobset.x-k8s.io), when the cluster serves that API.

`runtime.workload` (per stage: `runtime.stages.optimize.workload`) asks for one; `auto` (the default) takes a JobSet
when the API server serves it, else an Indexed Job. A JobSet asked for by name on a cluster without it is an
`EngineUnavailable` failure: the loop shows it as Degraded and is retried, so installing JobSet heals it, as does
a spec that asks for indexed-job.
"""

from __future__ import annotations

from typing import Any, Literal

from sil_operator.api.spec import LoopSpec
from sil_operator.failures import LoopProblem
from sil_operator.kube.jobset import stage_jobset
from sil_operator.kube.objects import LoopIdentity, group_job, group_service, stage_job, stage_nodes
from sil_operator.planner import StartStage

Engine = Literal["job", "indexed-job", "jobset"]
JOBSET_API = "jobset.x-k8s.io/v1alpha2"


class EngineUnavailable(LoopProblem):
    """The engine the spec asks for is not served by this cluster; installing it, or another engine, heals it."""

    reason = "EngineUnavailable"


def choose_engine(requested: str | None, nodes: int, jobset_served: bool, field: str = "runtime.workload") -> Engine:
    """The engine of a stage run of `nodes` pods, given `runtime.workload` (None = auto) and whether the operator may
    use JobSets (served by the API server, and not disabled with SIL_JOBSETS=disabled). Raises EngineUnavailable
    naming `field` (the spec path that set the engine) when a JobSet is asked for by name and not usable."""
    if nodes <= 1:
        return "job"
    if requested == "indexed-job":
        return "indexed-job"
    if requested == "jobset" and not jobset_served:
        raise EngineUnavailable(
            f"{field}: jobset, but the operator cannot use {JOBSET_API} JobSets: the API server does not serve them, "
            "or the operator runs with SIL_JOBSETS=disabled (the chart's jobset.enabled false); install JobSet "
            f"(https://jobset.sigs.k8s.io) and enable it, or set {field} to indexed-job or auto"
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
    return [stage_jobset(loop, spec, action, default_image)]
