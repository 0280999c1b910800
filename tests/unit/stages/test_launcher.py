"""The launcher's pure parts: the topology from settings and the node's environment, the accelerate command, the
DeepSpeed presets and the exit code the ranks leave behind (the processes themselves: test_distributed_optimize)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sil_stages.core.errors import StageInputError
from sil_stages.core.settings import Distributed
from sil_stages.optimize.launcher import (
    DEEPSPEED_FIELD,
    Topology,
    check_deepspeed,
    deepspeed_config,
    is_launched_rank,
    launch_command,
    needs_launch,
    ranks_exit_code,
    topology,
)


def test_unset_processes_per_node_is_one_per_gpu_and_one_on_cpu() -> None:
    assert topology(Distributed(), {}, cuda_devices=4).processes_per_node == 4
    assert topology(Distributed(), {}, cuda_devices=0).processes_per_node == 1
    assert topology(Distributed(processes_per_node=2), {}, cuda_devices=8).processes_per_node == 2


@pytest.mark.parametrize(
    ("environ", "node_rank"),
    [
        ({}, 0),
        ({"JOB_COMPLETION_INDEX": "2"}, 2),
        ({"SIL_NODE_RANK": "1", "JOB_COMPLETION_INDEX": "2"}, 1),
    ],
)
def test_node_rank_comes_from_sil_node_rank_else_the_indexed_job_index(environ: dict[str, str], node_rank: int) -> None:
    topo = topology(Distributed(nodes=3, processes_per_node=2), environ, cuda_devices=2)
    assert topo.node_rank == node_rank
    assert topo.world_size == 6


def test_several_nodes_meet_at_sil_master_addr_and_port_defaulting_to_29500() -> None:
    settings = Distributed(nodes=2, processes_per_node=1)
    assert (topology(settings, {}, 1).master_addr, topology(settings, {}, 1).master_port) == ("127.0.0.1", 29500)
    topo = topology(settings, {"SIL_MASTER_ADDR": "train-0.loop", "SIL_MASTER_PORT": "29400"}, 1)
    assert (topo.master_addr, topo.master_port) == ("train-0.loop", 29400)


def test_a_node_rank_outside_the_nodes_is_an_input_error() -> None:
    with pytest.raises(StageInputError, match="SIL_NODE_RANK"):
        topology(Distributed(nodes=2), {"SIL_NODE_RANK": "2"}, 1)


def test_launch_happens_for_several_processes_or_deepspeed_and_never_inside_a_rank() -> None:
    one = Topology(processes_per_node=1, nodes=1, node_rank=0, master_addr="127.0.0.1", master_port=1)
    two = Topology(processes_per_node=1, nodes=2, node_rank=0, master_addr="127.0.0.1", master_port=1)
    assert not needs_launch(Distributed(), one)
    assert needs_launch(Distributed(nodes=2), two)
    assert needs_launch(Distributed(deepspeed="zero2"), one)
    assert is_launched_rank({"LOCAL_RANK": "0"}) and is_launched_rank({"RANK": "3"}) and not is_launched_rank({})


def test_the_command_passes_the_topology_and_runs_the_same_stage_module() -> None:
    topo = Topology(processes_per_node=4, nodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29400)
    command = launch_command(topo, cuda=True, deepspeed_file=None, stage_arguments=["optimize", "--config", "@c"])
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    text = " ".join(command)
    for expected in ("--num_processes 8", "--num_machines 2", "--machine_rank 1", "--main_process_ip 10.0.0.1"):
        assert expected in text
    assert "--multi_gpu" in command and "--use_deepspeed" not in command
    assert command[-5:] == ["--module", "sil_stages", "optimize", "--config", "@c"]


def test_deepspeed_uses_its_config_file_and_the_standard_launcher_across_nodes(tmp_path: Path) -> None:
    topo = Topology(processes_per_node=8, nodes=2, node_rank=0, master_addr="a", master_port=1)
    command = launch_command(topo, cuda=True, deepspeed_file=tmp_path / "ds.json", stage_arguments=["optimize"])
    assert ["--use_deepspeed", "--deepspeed_config_file", str(tmp_path / "ds.json")] == command[
        command.index("--use_deepspeed") : command.index("--use_deepspeed") + 3
    ]
    assert "--deepspeed_multinode_launcher" in command and "--multi_gpu" not in command


def test_zero3_presets_gather_a_16_bit_model_on_save_and_offload_moves_state_to_cpu() -> None:
    for preset in ("zero3", "zero3-offload"):
        zero = deepspeed_config(preset)["zero_optimization"]
        assert zero["stage"] == 3
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert deepspeed_config("zero3-offload")["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert deepspeed_config("zero2")["zero_optimization"]["stage"] == 2
    assert deepspeed_config('{"zero_optimization": {"stage": 1}}') == {"zero_optimization": {"stage": 1}}


def test_deepspeed_without_a_gpu_is_an_input_error_naming_the_field() -> None:
    check_deepspeed(Distributed(), cuda_devices=0)
    check_deepspeed(Distributed(deepspeed="zero2"), cuda_devices=1)
    with pytest.raises(StageInputError, match=DEEPSPEED_FIELD.replace(".", r"\.")):
        check_deepspeed(Distributed(deepspeed="zero2"), cuda_devices=0)


@pytest.mark.parametrize(
    ("codes", "launcher", "expected"),
    [
        ({}, 0, 0),
        ({"rank-0": 0, "rank-1": 0}, 0, 0),
        ({"rank-0": 1, "rank-1": 2}, 1, 2),
        ({"rank-0": 143, "rank-1": 143}, 1, 143),
        ({"rank-0": 0}, 1, 1),
        ({}, -9, 137),
    ],
)
def test_the_stage_exits_with_its_ranks_code_a_bad_input_first(
    tmp_path: Path, codes: dict[str, int], launcher: int, expected: int
) -> None:
    for name, code in codes.items():
        (tmp_path / name).write_text(str(code))
    assert ranks_exit_code(tmp_path, launcher) == expected
