"""Web spend when several processes train one run: each process keeps its own ledger; ledger.json is their sum.

Caps are split, never negotiated call by call: at each launch, what the run cap leaves (cap − the spend already in
ledger.json) is divided evenly between the processes, and so is the step cap, so together they cannot pass either
cap and no tool call waits on another process. Main's ledger continues ledger.json's totals (its earlier spend);
the others start at zero, so the sum counts every call exactly once. The others report their totals with each
step's trajectories (`Rollout`); main writes the sum after every rollout and evaluation. When one process's share
of the run cap is spent, the whole run checkpoints and stops (a conservative cap). A resume may use another number
of processes: the split is recomputed from ledger.json. In a world of one this is the ledger as it always was.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from researchrl.environment import EnvConfig
from researchrl.rl import ranks
from researchrl.web.ledger import Ledger


def process_env(env: EnvConfig, ledger_path: Path) -> EnvConfig:
    """This process's environment: its share of the caps; main counts on from the run's ledger.json."""
    if ranks.world_size() == 1:
        return dataclasses.replace(env, ledger_path=ledger_path)
    spent = ranks.broadcast(Ledger.from_json(ledger_path.read_text()).run_cost if ledger_path.exists() else 0.0)
    share, main = 1 / ranks.world_size(), ranks.is_main()
    run_cap = None if env.run_budget_usd is None else max(0.0, env.run_budget_usd - spent) * share + (spent if main else 0.0)
    step_cap = None if env.step_budget_usd is None else env.step_budget_usd * share
    return dataclasses.replace(env, ledger_path=ledger_path if main else None, run_budget_usd=run_cap, step_budget_usd=step_cap)


def merged(ledgers: list[str]) -> str:
    """One ledger (Ledger.to_json format) summing every process's run totals per (kind, provider)."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    step = 0
    for text in ledgers:
        data = json.loads(text)
        step = max(step, int(data["step"]))
        for row in data["run"]:
            total = rows.setdefault((row["kind"], row["provider"]), {"calls": 0, "hits": 0, "bytes": 0, "cost": 0.0})
            for field in total:
                total[field] += row[field]
    run = [{"kind": kind, "provider": provider, **usage} for (kind, provider), usage in sorted(rows.items())]
    return json.dumps({"version": 1, "step": step, "run": run})
