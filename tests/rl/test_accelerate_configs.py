"""Every accelerate config in configs/ goes as far through `accelerate launch` as a machine without a GPU allows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("accelerate")

from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file  # noqa: E402
from accelerate.commands.launch import _validate_launch_command, launch_command_parser  # noqa: E402
from accelerate.utils import DeepSpeedPlugin, DistributedType, PrecisionType  # noqa: E402
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env  # noqa: E402

from researchrl.rl.dryrun import deepspeed_plugin  # noqa: E402

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
CPU_2PROC = CONFIGS[0].parent / "accelerate_cpu_2proc.yaml"
# what TrainingArguments(use_cpu=True) does on a machine without a GPU (rl/grpo.py sets use_cpu there)
PROBE = """from pathlib import Path
from accelerate import PartialState
s = PartialState(cpu=True)
Path(f"rank{s.process_index}.txt").write_text(f"rank {s.process_index} of {s.num_processes} {s.distributed_type.value} {s.backend}")
"""


def launched(config: Path):  # noqa: ANN201 - argparse.Namespace
    """The arguments `accelerate launch --config_file CONFIG train.py` runs with, after accelerate's own checks."""
    args = launch_command_parser().parse_args(["--config_file", str(config), "train.py"])
    args, defaults, from_config = _validate_launch_command(args)
    return args, defaults, from_config


def test_the_configs_are_found() -> None:
    assert {p.name for p in CONFIGS} >= {"accelerate_zero3_8gpu.yaml", "accelerate_cpu_2proc.yaml"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_loads_with_known_keys_and_values(config: Path) -> None:
    cluster = load_config_from_file(str(config))  # unknown top-level keys raise here
    assert isinstance(cluster, ClusterConfig)
    assert isinstance(cluster.distributed_type, DistributedType)
    assert cluster.mixed_precision in PrecisionType.list()
    assert cluster.num_processes >= 1 and cluster.num_machines >= 1
    # accelerate copies these sections onto launch arguments without checking their names: we do
    dests = {action.dest for action in launch_command_parser()._actions}
    assert not set(cluster.deepspeed_config) - dests, "deepspeed_config keys accelerate launch does not know"
    args, _, _ = launched(config)
    assert args.num_processes == cluster.num_processes and args.mixed_precision == cluster.mixed_precision


@pytest.mark.parametrize("config", [c for c in CONFIGS if "DEEPSPEED" in c.read_text()], ids=lambda p: p.name)
def test_deepspeed_plugin_as_a_launched_process_builds_it(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment accelerate launch hands each process, then the DeepSpeedPlugin a process builds from it."""
    args, defaults, from_config = launched(config)
    assert args.use_deepspeed
    args.deepspeed_fields_from_accelerate_config = ",".join([*defaults.deepspeed_config, *(["mixed_precision"] * from_config)])
    _, env = prepare_deepspeed_cmd_env(args)
    for key, value in env.items():
        if key.startswith("ACCELERATE_"):
            monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()
    settings = defaults.deepspeed_config
    assert plugin.zero_stage == settings["zero_stage"] in (0, 1, 2, 3)
    assert {plugin.offload_optimizer_device, plugin.offload_param_device} <= {"none", "cpu", "nvme"}
    assert env["ACCELERATE_MIXED_PRECISION"] == defaults.mixed_precision
    ours = deepspeed_plugin(settings)  # what --dry-run reads is what a launched process gets
    assert (ours.zero_stage, ours.offload_optimizer_device, ours.offload_param_device) == (
        plugin.zero_stage, plugin.offload_optimizer_device, plugin.offload_param_device)


def test_cpu_config_asks_torchrun_for_two_processes() -> None:
    args, _, _ = launched(CPU_2PROC)
    assert args.multi_gpu and not args.cpu and args.use_cpu
    env = prepare_multi_gpu_env(args)
    assert args.nproc_per_node == "2" and env["OMP_NUM_THREADS"] == str(args.num_cpu_threads_per_process)


def accelerate_launch(tmp_path: Path, *flags: str) -> list[str]:
    """What each process started by `accelerate launch FLAGS probe.py` says it is, by rank."""
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    command = [sys.executable, "-m", "accelerate.commands.launch", *flags, str(probe)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return [path.read_text() for path in sorted(tmp_path.glob("rank*.txt"))]


def test_cpu_config_starts_two_gloo_processes(tmp_path: Path) -> None:
    lines = accelerate_launch(tmp_path, "--config_file", str(CPU_2PROC), "--main_process_port", "0")  # a free port
    assert lines == ["rank 0 of 2 MULTI_CPU gloo", "rank 1 of 2 MULTI_CPU gloo"]


def test_cpu_flag_starts_one_process_whatever_num_processes_says(tmp_path: Path) -> None:
    """Why the CPU config is not `--cpu --num_processes 2`: accelerate's simple launcher runs one process (no mpirun)."""
    assert accelerate_launch(tmp_path, "--cpu", "--num_processes", "2") == ["rank 0 of 1 NO None"]
