"""The `paper-mini` preset as two training processes with a vLLM server researchrl starts and stops (slow, ~11 min).

A module of its own: test_vllm.py's fixture server (3.7 GB) is not alive beside this run's server and its two
training processes (up to 5 GB each), which together overflowed CI's 24 GB and got a rank OOM-killed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rl.test_vllm import REPO, read_jsonl, vllm_servers

pytestmark = [pytest.mark.slow, pytest.mark.model]


def test_paper_mini_runs_as_two_processes_with_a_managed_server(tmp_path: Path) -> None:
    """Every code path of the paper preset (vLLM with weight sync, LLM reader, 10 turns, 2 processes), in miniature."""
    before = vllm_servers()
    from researchrl.policy.vllm_server import free_port

    port = free_port()
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
               "-m", "researchrl.cli", "train", "--preset", "paper-mini", "--output-dir", str(tmp_path / "runs")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=REPO, env={**os.environ, "COLUMNS": "250"})
    assert result.returncode == 0, result.stderr[-4000:]
    (run,) = (tmp_path / "runs").iterdir()
    rows = read_jsonl(run / "trajectories.jsonl")
    assert [r["step"] for r in rows] == [1] * 4 + [2] * 4 and {r["rank"] for r in rows} == {0, 1}
    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["vllm/sync_logprob_gap"] < 1e-3 for m in metrics)
    assert all(m["sampling/importance_sampling_ratio/mean"] == pytest.approx(1.0, abs=1e-2) for m in metrics)
    assert set(json.loads((run / "eval.json").read_text())) == {"before", "after_sft", "after"}
    ledger = json.loads((run / "ledger.json").read_text())["run"]
    assert any(row["kind"] == "read" for row in ledger), "the LLM reading agent ran (the sandbox's reader)"
    assert (run / "vllm.log").exists() and (run / "grpo" / "checkpoint-2" / "trainer_state.json").exists()
    assert vllm_servers() <= before, "the managed server was stopped"
    print(f"\npaper-mini: {[round(m['seconds/step']) for m in metrics]} s per step")
