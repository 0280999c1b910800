"""Fake stages for kwok loops: real store outputs and Pushgateway series for Jobs that run nothing.

Stage Jobs on kwok's fake GPU nodes run no program. This package plays the stage programs' part from outside:
it watches the stage Jobs (label `selfimprove.dev/stage`), reads each Job's StageConfig from its ConfigMap
(`<run name>`, key `config.json`) and writes what the real stage would write, with sil_stages' own code: the
outputs under the stage directory, then the manifest (`StageOutputs.seal`), a checkpoint with real files and
sha256 for optimize, and for evaluate the candidate checked against the optimize manifest
(`verified_manifest_sha256`) and the `selfimprove_eval_*` series pushed to the Pushgateway (`pushgateway.push`),
so Prometheus gates measure them and promotion's checks pass. Scores are deterministic per (seed, loop,
iteration) (`scores.score`); `scores.expected_decisions` says what an undisturbed loop with the gate
`result > champion` decides.

Stable API (used by tests/chaos and bench/scale.py):

- `running_fake_stages(kubeconfig, log_path, namespaces=(), env=None, seed=0)`: a context manager running the
  writer as a subprocess (`python -m tests.fakestages`); `env` carries the S3 credentials (`S3Server.env()`).
- `FakeStageWriter(kubeconfig, namespaces=None, seed=0)`: the same in threads (`start()`, `stop()`, `written`).
- `pod_annotations(run_ms=RUN_MS)`: the loop's `spec.runtime.podAnnotations`, a kwok run time that covers the
  write (the operator fails a Job that completes before its manifest exists).
- `score(loop, iteration, seed=0)`, `expected_decisions(loop, iterations, seed=0)`, `GATE_CONDITION`.
- `write_stage(store, config, seed=0)`: one stage's outputs, for callers with their own Job source.

See README.md for how to wire it into a loop.
"""

from tests.fakestages.outputs import champion_iteration, write_stage
from tests.fakestages.process import FakeStagesProcess, running_fake_stages
from tests.fakestages.scores import GATE_CONDITION, expected_decisions, score
from tests.fakestages.writer import RUN_MS, FakeStageWriter, pod_annotations

__all__ = [
    "GATE_CONDITION",
    "RUN_MS",
    "FakeStageWriter",
    "FakeStagesProcess",
    "champion_iteration",
    "expected_decisions",
    "pod_annotations",
    "running_fake_stages",
    "score",
    "write_stage",
]
