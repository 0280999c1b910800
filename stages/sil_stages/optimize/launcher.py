"""Runs the optimize stage as several training processes: it re-executes itself under `accelerate launch`.

The command stays `python -m sil_stages optimize --config ...` on every runner. When `optimize.distributed` asks
for more than one process in all (processesPerNode x nodes), or for DeepSpeed, and this process is not already a
launched rank (no `LOCAL_RANK` or `RANK` in its environment), the stage runs `accelerate launch` (torchrun
underneath) with the same command as a module, waits for it and exits with the ranks' exit code (2 stays 2).
SIGTERM and SIGINT are forwarded to the launcher's process group, so a stopped pod's ranks save and stop.

Every rank trains (TRL's trainers are accelerate-aware); global rank 0 uploads the checkpoint, pushes the metrics
and writes the manifest, the other ranks wait for it and exit 0.

Environment contract of a node (what the operator's multi-node engine sets; a single node needs none of it):
- `SIL_NODE_RANK`: this node's rank, 0 .. nodes-1; else `JOB_COMPLETION_INDEX` (set by Kubernetes in Indexed
  Jobs); else 0.
- `SIL_MASTER_ADDR`: the address of node 0, where rank 0 listens. Default 127.0.0.1.
- `SIL_MASTER_PORT`: its port. Default 29500; on a single node without it, a free local port (so that two stages
  on one machine do not collide).

On CPU the ranks use the gloo backend (`ACCELERATE_USE_CPU`); DeepSpeed is GPU only and refused on CPU (exit 2).
`processesPerNode` unset means one process per visible GPU, and 1 on CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from sil_stages.core.errors import StageInputError
from sil_stages.core.settings import DEEPSPEED_PRESETS, Distributed

log = logging.getLogger(__name__)

RANK_VARIABLES = ("LOCAL_RANK", "RANK")
EXIT_DIR_VARIABLE = "SIL_RANK_EXIT_DIR"
"""Where each launched rank writes its exit code (`rank-<RANK>`): torchrun reports any failure as 1."""
WORKDIR_VARIABLE = "SIL_OPTIMIZE_WORKDIR"
"""The node's shared work folder (trainer checkpoints of all local ranks), made by the launching process."""
DEFAULT_MASTER_ADDR = "127.0.0.1"
DEFAULT_MASTER_PORT = 29500
DEEPSPEED_FIELD = "optimize.distributed.deepspeed"


@dataclass(frozen=True)
class Topology:
    processes_per_node: int
    nodes: int
    node_rank: int
    master_addr: str
    master_port: int

    @property
    def world_size(self) -> int:
        return self.processes_per_node * self.nodes


def is_launched_rank(environ: Mapping[str, str]) -> bool:
    """True inside a process that a launcher (accelerate, torchrun) started as one rank of a group."""
    return any(name in environ for name in RANK_VARIABLES)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _int_variable(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError as error:
        raise StageInputError(f"environment variable {name}: {value!r} is not an integer") from error


def topology(distributed: Distributed, environ: Mapping[str, str], cuda_devices: int) -> Topology:
    """The processes of this run from the settings and the node's environment (pure: no I/O but a free port)."""
    per_node = distributed.processes_per_node or max(1, cuda_devices)
    node_rank = _int_variable(environ, "SIL_NODE_RANK")
    if node_rank is None:
        node_rank = _int_variable(environ, "JOB_COMPLETION_INDEX") or 0
    if not 0 <= node_rank < distributed.nodes:
        raise StageInputError(
            f"SIL_NODE_RANK: {node_rank} is outside 0..{distributed.nodes - 1} (optimize.distributed.nodes)"
        )
    port = _int_variable(environ, "SIL_MASTER_PORT")
    if port is None:
        port = free_port() if distributed.nodes == 1 else DEFAULT_MASTER_PORT
    return Topology(
        processes_per_node=per_node,
        nodes=distributed.nodes,
        node_rank=node_rank,
        master_addr=environ.get("SIL_MASTER_ADDR") or DEFAULT_MASTER_ADDR,
        master_port=port,
    )


def deepspeed_config(value: str) -> dict[str, Any]:
    """The DeepSpeed JSON of a preset (as TRL's examples/accelerate_configs), or the user's JSON object.

    "auto" values are filled in by transformers from the trainer's arguments (batch size, accumulation, clipping,
    precision), so the hyperparameters stay the one place they are set. ZeRO-3 gathers the shards into one 16-bit
    model on save, so the checkpoint loads like any other in evaluate and vLLM.
    """
    common: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
    }
    if value == "zero2":
        return {**common, "zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True}}
    if value in ("zero3", "zero3-offload"):
        zero: dict[str, Any] = {
            "stage": 3,
            "overlap_comm": True,
            "contiguous_gradients": True,
            "stage3_gather_16bit_weights_on_model_save": True,
        }
        if value == "zero3-offload":
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
        return {**common, "zero_optimization": zero}
    parsed: dict[str, Any] = json.loads(value)
    return parsed


def launch_command(
    topo: Topology, *, cuda: bool, deepspeed_file: Path | None, stage_arguments: Sequence[str]
) -> list[str]:
    """`accelerate launch ... --module sil_stages <stage arguments>` for this node (pure)."""
    command = [
        # `accelerate launch`, run by this interpreter (no dependence on PATH or on where pip put its scripts)
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(topo.world_size),
        "--num_machines",
        str(topo.nodes),
        "--machine_rank",
        str(topo.node_rank),
        "--main_process_ip",
        topo.master_addr,
        "--main_process_port",
        str(topo.master_port),
        "--mixed_precision",
        "no",  # the trainer's bf16 setting decides; the DeepSpeed JSON follows it ("auto")
        "--dynamo_backend",
        "no",
    ]
    if deepspeed_file is not None:
        command += ["--use_deepspeed", "--deepspeed_config_file", str(deepspeed_file)]
        if topo.nodes > 1:
            command += ["--deepspeed_multinode_launcher", "standard"]
    elif cuda or topo.world_size > 1:
        # torchrun; on CPU too (with ACCELERATE_USE_CPU: gloo): accelerate's --cpu starts a single process.
        command += ["--multi_gpu"]
    return [*command, "--module", "sil_stages", *stage_arguments]


def needs_launch(distributed: Distributed, topo: Topology) -> bool:
    return topo.world_size > 1 or distributed.deepspeed is not None


def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_deepspeed(distributed: Distributed, cuda_devices: int) -> None:
    if distributed.deepspeed is not None and cuda_devices == 0:
        raise StageInputError(
            f"{DEEPSPEED_FIELD}: DeepSpeed needs CUDA GPUs and this stage sees none; remove "
            f"{DEEPSPEED_FIELD} (plain data parallel works on CPU) or give the optimize stage GPUs"
        )


def plan(distributed: Distributed, environ: Mapping[str, str]) -> Topology | None:
    """The topology to launch, or None when this process trains alone (or already is a launched rank)."""
    if is_launched_rank(environ):
        return None
    devices = cuda_device_count()
    check_deepspeed(distributed, devices)
    topo = topology(distributed, environ, devices)
    return topo if needs_launch(distributed, topo) else None


def record_exit_code(code: int, environ: Mapping[str, str]) -> None:
    """In a launched rank: leave the exit code where the launching process reads it."""
    folder = environ.get(EXIT_DIR_VARIABLE)
    if folder and is_launched_rank(environ):
        rank = environ.get("RANK", environ.get("LOCAL_RANK", "0"))
        Path(folder, f"rank-{rank}").write_text(str(code), encoding="utf-8")


def ranks_exit_code(folder: Path, launcher_code: int) -> int:
    """The stage's exit code: a rank's 2 (bad input) wins, then a rank's other failure, then the launcher's."""
    codes = [int(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("rank-*"))]
    if 2 in codes:
        return 2
    failed = [code for code in codes if code != 0]
    if failed:
        return failed[0]
    if launcher_code < 0:  # killed by a signal
        return 128 - launcher_code
    return launcher_code


def run_launcher(command: Sequence[str], environ: Mapping[str, str], exit_dir: Path) -> int:
    """Runs the launcher in its own process group, forwarding SIGTERM and SIGINT to it; returns the exit code."""
    child = subprocess.Popen(list(command), env=dict(environ), start_new_session=True)

    def forward(signum: int, frame: FrameType | None) -> None:
        log.info("forwarding signal %d to the training processes", signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        launcher_code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return ranks_exit_code(exit_dir, launcher_code)


def launch(topo: Topology, distributed: Distributed, stage_arguments: Sequence[str], workdir: Path) -> int:
    """Starts this node's ranks of the stage under `accelerate launch` and returns the stage's exit code."""
    cuda = cuda_device_count() > 0
    with tempfile.TemporaryDirectory(prefix="sil-launch-") as tmp:
        exit_dir = Path(tmp, "exit")
        exit_dir.mkdir()
        deepspeed_file: Path | None = None
        if distributed.deepspeed is not None:
            deepspeed_file = Path(tmp, "deepspeed.json")
            deepspeed_file.write_text(json.dumps(deepspeed_config(distributed.deepspeed), indent=2), "utf-8")
        command = launch_command(topo, cuda=cuda, deepspeed_file=deepspeed_file, stage_arguments=stage_arguments)
        environ = {**os.environ, EXIT_DIR_VARIABLE: str(exit_dir), WORKDIR_VARIABLE: str(workdir)}
        if not cuda:
            environ["ACCELERATE_USE_CPU"] = "true"
        log.info(
            "launching %d training processes (%d per node, node %d of %d, rank 0 at %s:%d)%s",
            topo.world_size,
            topo.processes_per_node,
            topo.node_rank,
            topo.nodes,
            topo.master_addr,
            topo.master_port,
            _deepspeed_text(distributed.deepspeed),
        )
        return run_launcher(command, environ, exit_dir)


def _deepspeed_text(deepspeed: str | None) -> str:
    if deepspeed is None:
        return ""
    return f" with DeepSpeed {deepspeed}" if deepspeed in DEEPSPEED_PRESETS else " with a DeepSpeed JSON config"


@dataclass(frozen=True)
class ProcessState:
    """This process's place among the ranks (one process alone: rank 0 of 1)."""

    is_main: bool
    world_size: int

    def wait_for_everyone(self) -> None:
        if self.world_size > 1:
            from accelerate import PartialState

            PartialState().wait_for_everyone()


def process_state() -> ProcessState:
    """accelerate's view of the ranks; on CPU the gloo group the launcher asked for (ACCELERATE_USE_CPU)."""
    if not is_launched_rank(os.environ):
        return ProcessState(is_main=True, world_size=1)
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return ProcessState(is_main=state.is_main_process, world_size=state.num_processes)
