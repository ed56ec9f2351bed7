"""The default recipe over several seeds: held-out F1, reward and research behaviour per phase, with intervals.

Each seed is the main job itself, `researchrl train` with the default preset (`--set agent.seed=S`; transformers
rollouts, as a fresh `scripts/setup.sh` has no vLLM), in a subprocess; `--runs` adds run directories that
already exist (e.g. the README's main job). Per run it reports eval.json's figures per phase (before / after_sft /
after) and GRPO's steps (seconds, training reward and F1); over the runs, the mean of every metric and behaviour
with a bootstrap 95 % interval over the held-out questions (each question's value averaged over the seeds first),
and the paired differences after - after_sft and after_sft - before (`researchrl.eval.paired`). Writes
bench/results/recipe.json.

    .venv/bin/python bench/recipe.py [--seeds 0 1 2] [--root runs/recipe] [--runs RUN_DIR ...] [--set KEY=VALUE ...]

A seed whose run directory under --root already has paired.json is read, not run again. Not a test: nothing
here passes or fails; it prints what it found, including whether GRPO's F1 gain over the warm-up excludes zero.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from researchrl.eval.behaviour import behaviour
from researchrl.eval.paired import averaged, compare, interval
from researchrl.records import iter_jsonl

RESULTS = Path(__file__).parent / "results" / "recipe.json"
PHASES = ("before", "after_sft", "after")
PER_EPISODE = {  # what each held-out episode contributes, by name in the results
    "f1": lambda r, b: r["f1"], "reward": lambda r, b: r["reward"], "em": lambda r, b: r["em"],
    "format_error": lambda r, b: float(not r["format_ok"]), "queries": lambda r, b: b.queries,
    "searches_after_browse": lambda r, b: b.searches_after_browse, "bridge_queries": lambda r, b: b.bridge_queries,
    "bridge": lambda r, b: float(b.bridge_queries > 0), "sources": lambda r, b: b.sources,
    "grounded": lambda r, b: float(b.grounded), "planned": lambda r, b: float(b.planned),
}


def run_seed(seed: int, root: Path, sets: list[str]) -> tuple[Path, float | None]:
    """The main job for one seed (skipped when its run already finished); its run directory and wall seconds."""
    out = root / f"seed{seed}"
    done = [d for d in sorted(out.glob("*")) if (d / "paired.json").exists()]
    if done:
        return done[-1], None
    command = [sys.executable, "-m", "researchrl.cli", "train", "--output-dir", str(out), "--set", f"agent.seed={seed}",
               "--set", "use_vllm=false", *[a for s in sets for a in ("--set", s)]]
    print("$", " ".join(command[1:]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "TQDM_DISABLE": "1"})
    return max(out.glob("*"), key=lambda d: d.stat().st_mtime), round(time.perf_counter() - started, 1)


def per_question(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """metric -> question id -> value, for one phase of one run."""
    found: dict[str, dict[str, float]] = {name: {} for name in PER_EPISODE}
    for record in records:
        shown = behaviour(record)
        for name, value in PER_EPISODE.items():
            found[name][str(record["question_id"])] = float(value(record, shown))
    return found


def pooled(runs: list[Path], phase: str) -> dict[str, dict[str, float]]:
    """Each metric's mean over seeds and held-out questions, with a bootstrap interval over the questions."""
    seeds = [per_question(list(iter_jsonl(run / f"eval_{phase}.jsonl"))) for run in runs]
    return {name: interval(averaged([s[name] for s in seeds])) for name in PER_EPISODE}


def grpo_steps(run: Path) -> list[dict[str, float]]:
    """Each GRPO step's seconds and training-rollout figures, from the run's metrics.jsonl (none if it has none)."""
    log = run / "metrics.jsonl"
    keys = {"rollout_s": "seconds/rollout", "update_s": "seconds/update", "reward": "reward", "f1": "rewards/f1/mean",
            "format_ok": "rewards/format_ok/mean", "turns": "rewards/turns/mean"}
    return [{name: round(line[key], 3) for name, key in keys.items() if key in line}
            for line in iter_jsonl(log)] if log.exists() else []


def summary(runs: list[Path], walls: dict[str, float | None]) -> dict[str, Any]:
    """Everything recipe.json holds."""
    evals = [json.loads((run / "eval.json").read_text()) for run in runs]
    phases = [p for p in PHASES if all((run / f"eval_{p}.jsonl").exists() for run in runs)]  # a run stopped early
    records = {p: [list(iter_jsonl(run / f"eval_{p}.jsonl")) for run in runs] for p in phases}
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["bench/recipe.py", *sys.argv[1:]]),
        "cores": os.cpu_count(),
        "runs": [{"dir": str(run), "wall_s": walls.get(str(run)),
                  "phases": {p: e[p] for p in PHASES if p in e}, "grpo_steps": grpo_steps(run)} for run, e in zip(runs, evals)],
        "pooled": {p: pooled(runs, p) for p in phases},
        "paired": {f"{a} - {b}": compare(records[a], records[b]) for a, b in (("after", "after_sft"), ("after_sft", "before"))
                   if a in records and b in records},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="seeds to run (agent.seed)")
    parser.add_argument("--root", type=Path, default=Path("runs/recipe"), help="where each seed's run directory goes")
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="finished run directories to include as they are")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="a setting for every seed's run (KEY=VALUE)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args()
    walls: dict[str, float | None] = {}
    runs = list(args.runs)
    for seed in args.seeds:
        run, wall = run_seed(seed, args.root, args.sets)
        walls[str(run)] = wall
        runs.append(run)
    result = summary(runs, walls)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for phase, metrics in result["pooled"].items():
        print(phase, "  ".join(f"{k} {v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]" for k, v in metrics.items()))
    for name, diff in result["paired"].items():
        f1 = diff["f1"]
        print(f"{name}: F1 {f1['mean']:+.3f} [{f1['low']:+.3f}, {f1['high']:+.3f}] (excludes zero: "
              f"{f1['low'] > 0 or f1['high'] < 0}), reward {diff['reward']['mean']:+.3f} "
              f"[{diff['reward']['low']:+.3f}, {diff['reward']['high']:+.3f}]")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
