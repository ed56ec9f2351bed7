"""HFPolicy's decode on an evaluation's turns: cascade attention over the shared prefix, finished rows leaving.

An evaluation runs 50 episodes as one batch per turn, and each row's turn ends at its own length. The rows here
replay those lengths: row i's turn k is given a budget of exactly the tokens that a recorded evaluation's episode i
sampled in its turn k (--lengths, the main job's seed-0 after_sft evaluation by default), and rows stop after their
episode's last turn. Each turn appends corpus text as the observation, as bench/turns.py does, of the lengths real
observations had (--observation-lengths: the cpu preset's rollouts, 47-325 tokens), or all of --observation-tokens.
Four arms run the same rows greedy on the embedded model in this process, in turn, with the turn cache on: cascade
attention (policy/cascade.py), retiring rows and the prefill grouped by length (policy/decode.py); the same with
every row's prefill padded to the longest; retiring rows with the prefix copied into every row; and none of these
(every row decodes to the batch's last, as `model.generate` does). The script checks that all sample the
same tokens, and samples the process's RSS (the first arm starts on the freshest heap, so its peak is the least
flattered). --bf16 adds an arm: cascade, grouping and retiring rows on a bfloat16 copy of the model (`eval_bf16`, how
the cpu preset's evaluations decode where `amp` is on); its greedy tokens differ from float32's, so it is counted
apart. --arms runs a subset.

    .venv/bin/python bench/decode.py [--rows 50] [--turns 5] [--rounds 1] [--bf16] [--arms A B] [--out FILE] [--note TEXT]
        [--observation-lengths FILE | --observation-tokens N]

Prints and writes bench/results/decode.json (--out). Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from amp import cpu_times  # bench/ is the script's directory
from train_step import RssSampler
from turns import passage_observations, turns

from researchrl.agent import render
from researchrl.agent.protocols.deepresearcher import DeepResearcherProtocol
from researchrl.data.load import load_questions
from researchrl.policy.hf import HFPolicy
from researchrl.prompts import BROWSE_WEBPAGE_SCHEMA, WEB_SEARCH_SCHEMA
from researchrl.sandbox.config import shared_data_dir

RESULTS = Path(__file__).parent / "results"
ARMS = {"cascade_retire": dict(cascade=True, retire=True), "padded_prefill": dict(cascade=True, retire=True, group_prefill=False),
        "retire": dict(cascade=False, retire=True, group_prefill=False),
        "to_the_last_row": dict(cascade=False, retire=False, group_prefill=False)}  # HFPolicy's settings per float32 arm
BF16_ARM = "cascade_retire_bf16"  # cascade_retire's settings on a bfloat16 copy of the model
SETTINGS = {**ARMS, BF16_ARM: ARMS["cascade_retire"]}


def recorded_lengths(path: Path, rows: int, turns: int) -> list[list[int]]:
    """Per episode, the tokens each of its first `turns` turns sampled in a recorded evaluation."""
    episodes = [json.loads(line) for line in path.open()][:rows]
    return [[t["sampled_tokens"] for t in e["turns"][:turns]] for e in episodes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50, help="episodes, one batch per turn (the evaluation's 50)")
    parser.add_argument("--turns", type=int, default=5, help="turns per episode at most (the cpu preset's max_turns)")
    parser.add_argument("--rounds", type=int, default=1, help="times each arm runs, alternating")
    parser.add_argument("--observation-lengths", type=Path, default=Path(__file__).parent / "data" / "observation_tokens.json",
                        help="JSON whose observation_tokens list the observations' lengths: row i's turn k takes entry i*turns+k (cycled)")
    parser.add_argument("--observation-tokens", type=int, help="every observation this many tokens instead (older runs: 200)")
    parser.add_argument("--lengths", type=Path, default=RESULTS / "recipe_runs" / "no-checkpointing-seed0" / "eval_after_sft.jsonl",
                        help="an evaluation's eval_<phase>.jsonl whose turn lengths the rows replay")
    parser.add_argument("--bf16", action="store_true", help="add the arm on a bfloat16 copy of the model (eval_bf16)")
    parser.add_argument("--arms", nargs="+", choices=list(SETTINGS), help="run only these arms (default: all, --bf16 adding its own)")
    parser.add_argument("--out", type=Path, default=RESULTS / "decode.json", help="where the JSON result is written")
    parser.add_argument("--note", default="", help="free text kept as \"note\" in the JSON (e.g. other load on the machine)")
    args = parser.parse_args()
    policy = HFPolicy.load("embedded", max_batch=args.rows)
    tok = policy.tokenizer
    lengths = recorded_lengths(args.lengths, args.rows, args.turns)
    questions = load_questions(shared_data_dir() / "wiki" / "questions.jsonl")[: len(lengths)]
    protocol = DeepResearcherProtocol()
    starts = [render.start(tok, protocol, q.question, [WEB_SEARCH_SCHEMA, BROWSE_WEBPAGE_SCHEMA]).ids for q in questions]
    sizes = [args.observation_tokens] if args.observation_tokens else json.loads(args.observation_lengths.read_text())["observation_tokens"]
    observations = [passage_observations(tok, [sizes[(i * args.turns + k) % len(sizes)] for k in range(args.turns)]) for i in range(len(lengths))]
    names = args.arms or [*ARMS, *([BF16_ARM] if args.bf16 else [])]
    models = {name: policy.model for name in names}
    if BF16_ARM in names:
        import copy

        import torch

        models[BF16_ARM] = copy.deepcopy(policy.model).to(torch.bfloat16)
    settings = {name: SETTINGS[name] for name in names}
    arms: dict[str, list[dict[str, Any]]] = {name: [] for name in settings}
    streams: dict[str, Any] = {}
    sampler = RssSampler()
    sampler.start()
    cpu_start = cpu_times()
    for _ in range(args.rounds):
        for name, kwargs in settings.items():
            sampler.mark(f"before {name}")
            time.sleep(0.1)
            sampler.mark(name)
            arm = HFPolicy(models[name], tok.hf, max_batch=args.rows, **kwargs)
            run = asyncio.run(turns(arm, starts, observations, lengths))
            streams[name] = run.pop("streams")
            run["peak_rss_gb"] = sampler.peaks[name]
            run["prefill_forwards"] = arm.prefill_forwards
            arms[name].append(run)
            print(name, json.dumps(run), flush=True)
            del arm
    busy = [b - a for a, b in zip(cpu_start, cpu_times())]
    best = {name: min(r["seconds"] for r in runs) for name, runs in arms.items()}
    base = next(name for name in ("to_the_last_row", *names) if name in arms)  # float32 tokens and time to compare with
    result: dict[str, Any] = {
        "rows": len(lengths), "turns": args.turns, "lengths": str(args.lengths), "observation_tokens": args.observation_tokens or str(args.observation_lengths),
        "arms": arms, "rows_with_identical_tokens": {name: sum(a == b for a, b in zip(streams[name], streams[base]))
                                                     for name in settings},
        f"speedup_vs_{base}": {name: best[base] / best[name] for name in settings},
        "steal_percent": 100 * busy[7] / sum(busy), "load_average_end": os.getloadavg(),
    }
    if {"retire", "to_the_last_row"} <= set(arms):
        result["row_steps_ratio_retire"] = arms["retire"][0]["row_steps"] / arms["to_the_last_row"][0]["row_steps"]
    if {"retire", "padded_prefill"} <= set(arms):
        result["speedup_cascade_vs_copied_prefix"] = best["retire"] / best["padded_prefill"]
    if {"padded_prefill", "cascade_retire"} <= set(arms):
        result["speedup_grouped_vs_padded_prefill"] = best["padded_prefill"] / best["cascade_retire"]
    if {BF16_ARM, "cascade_retire"} <= set(arms):
        result["speedup_bf16_vs_float32"] = best["cascade_retire"] / best[BF16_ARM]
    if args.note:
        result["note"] = args.note
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
