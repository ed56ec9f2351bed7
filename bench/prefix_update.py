"""A GRPO update's scoring with the rows' shared prompt prefix run once (rl/shared_prefix.py) against every row whole.

The cpu preset's update: 8 rows (2 questions x G = 4), each the real prompt of a held-out question (system prompt
and tool schemas, ~700 tokens) and a completion as long as a recorded evaluation's episode (--lengths; random ids).
Per arm, on the embedded model in this process, arms alternating: the reference pass (no gradient, one row at a
time) and the policy's forward and backward one row per micro-batch, as LeanGRPOTrainer runs them, then the prefix's
backward. The script checks that both arms give the same log-probs and gradient.

    .venv/bin/python bench/prefix_update.py [--rounds 2] [--out FILE]

Prints and writes bench/results/prefix_update.json (--out). Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from researchrl.agent import render
from researchrl.agent.protocols.deepresearcher import DeepResearcherProtocol
from researchrl.data.load import load_questions
from researchrl.policy.embedded import resolve_model_path
from researchrl.policy.tokenizers import HFChatTokenizer
from researchrl.prompts import BROWSE_WEBPAGE_SCHEMA, WEB_SEARCH_SCHEMA
from researchrl.rl.config import checkpointing_flag
from researchrl.sandbox.config import shared_data_dir

RESULTS = Path(__file__).parent / "results"


def trainer(out: Path) -> Any:
    """LeanGRPOTrainer on the embedded model as the cpu preset sets it up (own LM head, no checkpointing, fp32)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from researchrl.rl.grpo import LeanGRPOTrainer

    path = resolve_model_path("embedded")
    args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=1, gradient_accumulation_steps=8,
                      steps_per_generation=8, num_generations=4, beta=0.001, use_cpu=True, report_to="none",
                      max_steps=1, disable_dropout=True, bf16=False, **checkpointing_flag(False))
    lean = LeanGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), args=args,
                           reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
                           train_dataset=Dataset.from_list([{"prompt": "q"}] * 8),
                           processing_class=AutoTokenizer.from_pretrained(path))
    lean.fused_head = False
    return lean


def batch(tokenizer: Any, lengths: list[int], group: int) -> tuple[Any, Any, int]:
    """TRL's layout: prompts left-padded to the longest, completions right-padded; `group` rows per question."""
    import torch

    questions = load_questions(shared_data_dir() / "wiki" / "questions.jsonl")[-len(lengths) // group :]
    schemas = [WEB_SEARCH_SCHEMA, BROWSE_WEBPAGE_SCHEMA]
    prompts = [render.start(tokenizer, DeepResearcherProtocol(), q.question, schemas).ids for q in questions for _ in range(group)]
    rng = random.Random(0)
    width, keep = max(map(len, prompts)), max(lengths)
    ids = torch.zeros(len(prompts), width + keep, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, (prompt, n) in enumerate(zip(prompts, lengths)):
        ids[row, width - len(prompt) : width] = torch.tensor(prompt)
        ids[row, width : width + n] = torch.tensor([rng.randrange(100, 40000) for _ in range(n)])
        mask[row, width - len(prompt) : width + n] = 1
    return ids, mask, keep


def update(lean: Any, ids: Any, mask: Any, keep: int, share: bool) -> dict[str, Any]:
    """The reference pass, then each row's forward and backward and the prefix's backward; seconds and results."""
    import torch

    lean.share_prefix = share
    model = lean.model
    model.zero_grad()
    started = time.perf_counter()
    with torch.no_grad():
        ref, _, _ = lean._get_per_token_logps_and_entropies(lean.ref_model, ids, mask, keep, 1)
    reference = time.perf_counter() - started
    scored = mask[:, -keep:]
    logps = []
    for row in range(ids.size(0)):
        with lean.loss_pass():
            lp, _, _ = lean._get_per_token_logps_and_entropies(model, ids[row : row + 1], mask[row : row + 1], keep,
                                                               compute_entropy=True)
        (-(lp * scored[row]).sum() / scored.sum()).backward()
        logps.append(lp.detach())
    lean.send_prefix_gradient()
    policy = time.perf_counter() - started - reference
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])
    return {"seconds": {"reference": reference, "policy": policy, "both": reference + policy},
            "_ref": ref, "_logps": torch.cat(logps), "_grad": grad}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="times each arm runs, alternating")
    parser.add_argument("--group-size", type=int, default=4, help="rows per question (the cpu preset's G)")
    parser.add_argument("--rows", type=int, default=8, help="rows of the update (G x questions per step)")
    parser.add_argument("--lengths", type=Path, default=RESULTS / "recipe_runs" / "cascade-seed0" / "eval_after_sft.jsonl",
                        help="an evaluation's eval_<phase>.jsonl whose episodes' completion lengths the rows take")
    parser.add_argument("--out", type=Path, default=RESULTS / "prefix_update.json", help="where the JSON result is written")
    args = parser.parse_args()
    if args.group_size < 1 or args.rows < args.group_size or args.rows % args.group_size:
        parser.error(f"--rows ({args.rows}) must be a positive multiple of --group-size ({args.group_size}): whole groups")
    lengths = [e["completion_tokens"] for e in map(json.loads, args.lengths.open())][: args.rows]
    with tempfile.TemporaryDirectory() as tmp:
        lean = trainer(Path(tmp))
        ids, mask, keep = batch(HFChatTokenizer(lean.processing_class), lengths, args.group_size)
        arms: dict[str, list[dict[str, Any]]] = {"shared_prefix": [], "every_row_whole": []}
        for _ in range(args.rounds):
            for name in arms:
                arms[name].append(update(lean, ids, mask, keep, share=name == "shared_prefix"))
    shared, whole = arms["shared_prefix"][-1], arms["every_row_whole"][-1]
    scored = mask[:, -keep:].bool()
    mean = {name: {part: sum(r["seconds"][part] for r in runs) / len(runs) for part in ("reference", "policy", "both")}
            for name, runs in arms.items()}
    result = {
        "rows": args.rows,
        "prompt_tokens": [int(n) for n in mask[:, :-keep].sum(dim=1)],
        "completion_tokens": lengths,
        "seconds_mean": mean,
        "seconds_per_round": {name: [r["seconds"] for r in runs] for name, runs in arms.items()},
        "speedup": {part: mean["every_row_whole"][part] / mean["shared_prefix"][part] for part in ("reference", "policy", "both")},
        "max_abs_diff": {"reference_logps": float((shared["_ref"] - whole["_ref"])[scored].abs().max()),
                         "policy_logps": float((shared["_logps"] - whole["_logps"])[scored].abs().max()),
                         "gradient": float((shared["_grad"] - whole["_grad"]).abs().max()),
                         "gradient_norm": float(whole["_grad"].norm())},
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
