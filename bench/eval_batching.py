"""A run's held-out evaluation as `researchrl train` runs it, real tools included, under HFPolicy's batching arms.

bench/decode.py replays turn lengths with every row arriving at once; in an evaluation the episodes come back from
their tool calls at different times, and a batch taken at the first arrival splits them into cohorts. Each arm here
runs the run's evaluation of --phase (its model, held-out questions, env and agent settings, greedy) in a fresh
sandbox environment (no cache shared between runs), in this process, the arms alternating for --rounds rounds (this
host's speed drifted by up to 40 % within an hour, so compare runs next to each other):
  head           the prefill grouped by length, and a batch waiting up to `linger` s for episodes still out
  no_linger      grouped prefill, a batch taken at the first arrival
  padded         lingering, every row's prefill padded to the longest
  before         neither (HFPolicy before both)
It prints and writes, per run, seconds, decode batches by size, prefill forwards, row-steps, reward/F1/format
errors, and how many episodes answered as the first arm's first run did; per round, each arm's time over the first's.

    .venv/bin/python bench/eval_batching.py RUN_DIR [--phase after_sft] [--arms head before] [--rounds 2] [--out FILE]

Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from amp import cpu_times  # bench/ is the script's directory

from researchrl.data.load import load_questions
from researchrl.environment import RunningEnvironment
from researchrl.eval.runner import evaluate
from researchrl.policy.hf import LINGER, HFPolicy
from researchrl.rl.config import load_run_config
from researchrl.rl.train import env_config, split

ARMS = {"head": dict(group_prefill=True, linger=LINGER), "no_linger": dict(group_prefill=True, linger=0.0),
        "padded": dict(group_prefill=False, linger=LINGER), "before": dict(group_prefill=False, linger=0.0)}
MODELS = {"before": "", "after_sft": "sft/model", "after": "grpo/model"}  # a phase's model inside the run directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run directory made by researchrl train (its config.toml and models)")
    parser.add_argument("--phase", choices=list(MODELS), default="after_sft", help="which model evaluates (before: the run's base model)")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=["head", "before"], help="HFPolicy settings to run, in this order")
    parser.add_argument("--rounds", type=int, default=2, help="times each arm runs, alternating")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "eval_batching.json", help="where the JSON result is written")
    parser.add_argument("--note", default="", help="free text kept as \"note\" in the JSON (e.g. other load on the machine)")
    args = parser.parse_args()
    cfg = load_run_config(args.run)
    _, held = split(load_questions(cfg.questions), cfg.heldout)
    held = held[: cfg.eval_questions]
    model = str(args.run / MODELS[args.phase]) if MODELS[args.phase] else cfg.model
    loaded = HFPolicy.load(model, max_batch=len(held), bf16=bool(cfg.eval_bf16))
    arms: dict[str, list[dict[str, Any]]] = {name: [] for name in args.arms}
    answers: list[str | None] = []
    cpu_start = cpu_times()
    for name in [name for _ in range(args.rounds) for name in args.arms]:
        policy = HFPolicy(loaded.model, loaded.tokenizer.hf, max_batch=len(held), **ARMS[name])  # type: ignore[arg-type]
        with tempfile.TemporaryDirectory() as scratch:
            env = RunningEnvironment(env_config(cfg, Path(scratch)), cfg.agent.protocol)
            try:
                started = time.perf_counter()
                summary, trajectories = evaluate(policy, held, env, cfg.greedy_agent())
                seconds = time.perf_counter() - started
                env.loop.run(policy.aclose())
            finally:
                env.close()
        answers = answers or [t.answer for t in trajectories]
        arms[name].append({
            "seconds": round(seconds, 1), "decode_batches": dict(sorted(policy.batch_sizes.items(), reverse=True)),
            "prefill_forwards": policy.prefill_forwards, "row_steps": policy.row_steps, "reward": summary.reward,
            "f1": summary.f1, "format_error_rate": summary.format_error_rate,
            "mean_turns": sum(len(t.turns) for t in trajectories) / len(trajectories),
            "same_answer_as_first": sum(a == t.answer for a, t in zip(answers, trajectories)),
        })
        print(name, json.dumps(arms[name][-1]), flush=True)
    busy = [b - a for a, b in zip(cpu_start, cpu_times())]
    first = args.arms[0]
    result: dict[str, Any] = {
        "run": str(args.run), "phase": args.phase, "questions": len(held), "arms": arms,
        f"seconds_over_{first}_by_round": {name: [round(a["seconds"] / b["seconds"], 3) for a, b in zip(runs, arms[first])]
                                           for name, runs in arms.items()},
        "steal_percent": 100 * busy[7] / sum(busy), "load_average_end": os.getloadavg(), "note": args.note,
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
