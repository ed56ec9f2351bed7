"""Training with several processes: `accelerate launch --multi_gpu --num_processes 2` on CPU (gloo), and what they share.

Fast: two gloo processes agree on sample indices, budget shares, stats and the run's ledger (no model); processes
opening one fresh SQLite cache at the same instant. Slow (~3 min on 2 cores): a real two-process `researchrl train`
(warm-up, 2 GRPO steps, evaluations), then resumed to a third step over the leftovers of a cut step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from researchrl.policy.vllm_server import free_port

REPO = Path(__file__).resolve().parents[2]
ACCELERATE = Path(sys.executable).parent / "accelerate"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def launch(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Two processes under accelerate launch; `--multi_gpu` is what makes it spawn them on a CPU machine too."""
    command = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "COLUMNS": "250"})


PEERS = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from types import SimpleNamespace
    from researchrl.environment import EnvConfig
    from researchrl.rl import ranks
    from researchrl.rl.rollout import Rollout, Share, batch_sample_indices
    from researchrl.rl.spend import process_env
    from researchrl.web.ledger import Ledger, Prices

    out = Path(sys.argv[1])
    me = ranks.rank()
    indices = batch_sample_indices(["q1", "q1"] if me == 0 else ["q1", "q1", "q2"])  # q1's group split across us
    env = process_env(EnvConfig(run_budget_usd=1.0, step_budget_usd=0.1), out / "ledger.json")  # $0.4 spent before
    ledger = Ledger(Prices({"serper": 0.01}), env.step_budget_usd, env.run_budget_usd)
    if env.ledger_path:
        ledger = Ledger.from_json(env.ledger_path.read_text(), Prices({"serper": 0.01}), env.step_budget_usd, env.run_budget_usd)
    ledger.start_step(1)
    for _ in range(1 + me):
        ledger.charge("search", "serper")
    records = [{"step": 1, "rank": me, "question": q, "tool_calls": ["web_search"] * (1 + me), "tool_errors": [],
                "sampled_tokens": 10} for q in (["q1", "q1"] if me == 0 else ["q1", "q1", "q2"])]
    rollout = Rollout([], SimpleNamespace(tools=SimpleNamespace(ledger=ledger)), None, log_path=out / "trajectories.jsonl")
    rollout._report(ranks.gather(Share(records, 1.0 + me, ledger.metrics(), ledger.to_json(), ledger.run_exhausted)))
    report = {"rank": me, "world": ranks.world_size(), "indices": indices, "run_cap": env.run_budget_usd,
              "step_cap": env.step_budget_usd, "continues_ledger": env.ledger_path is not None,
              "stats": rollout.last_stats, "seconds": rollout.last_seconds, "ledger": json.loads(rollout.ledger_json())}
    (out / f"rank{me}.json").write_text(json.dumps(report))
    """
)


def test_two_processes_agree_on_seeds_budgets_stats_and_the_ledger(tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    (tmp_path / "ledger.json").write_text(json.dumps(
        {"version": 1, "step": 3, "run": [{"kind": "search", "provider": "serper", "calls": 40, "hits": 5, "bytes": 0, "cost": 0.4}]}
    ))
    (tmp_path / "peers.py").write_text(PEERS)
    result = launch(str(tmp_path / "peers.py"), str(tmp_path), timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    main, other = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert main["world"] == other["world"] == 2
    assert main["indices"] == [0, 1] and other["indices"] == [2, 3, 0], "a group split across processes keeps distinct seeds"
    # what the run cap leaves ($0.6) is split; main's ledger carries the $0.4 spent before; the step cap is split too
    assert main["run_cap"] == pytest.approx(0.4 + 0.3) and other["run_cap"] == pytest.approx(0.3)
    assert main["step_cap"] == other["step_cap"] == pytest.approx(0.05)
    assert main["continues_ledger"] and not other["continues_ledger"]
    for report in (main, other):  # every process holds the same stats, over both processes' episodes
        assert report["stats"]["web/calls/search/serper"] == 3
        assert report["stats"]["tools/web_search_per_episode"] == pytest.approx((2 * 1 + 3 * 2) / 5)
        assert report["stats"]["web/cost_usd_run"] == pytest.approx(0.4 + 0.03)
        assert report["seconds"] == 2.0
    (row,) = main["ledger"]["run"]
    assert (row["calls"], row["hits"], row["cost"]) == (43, 5, pytest.approx(0.43)), "each call counted once"
    rows = read_jsonl(tmp_path / "trajectories.jsonl")  # written by main alone, numbered as seeded
    assert [(r["rank"], r["question"], r["sample"]) for r in rows] == [
        (0, "q1", 0), (0, "q1", 1), (1, "q1", 2), (1, "q1", 3), (1, "q2", 0)]


OPENER = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from researchrl.web.sqlite_store import SQLiteStore

    async def main(folder, start_at):
        for i in range(30):
            time.sleep(max(0.0, start_at + 0.1 * i - time.time()))  # every process opens file i at the same instant
            store = SQLiteStore(Path(folder) / f"fresh-{i}.db")
            await store.put("ns", "k", b"v", None)
            await store.take("api", 100.0, 5)
            await store.aclose()

    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
    """
)


def test_processes_opening_one_fresh_sqlite_cache_at_once_all_get_it(tmp_path: Path) -> None:
    """Two training processes start together on `env.cache=PATH`: the switch to WAL must wait, not fail 'locked'."""
    start_at = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(tmp_path), str(start_at)], stderr=subprocess.PIPE,
                              text=True, cwd=REPO) for _ in range(3)]
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], [e[-500:] for e in errors]


SETS = [
    "heldout=1", "eval_questions=1", "threads=1", "group_size=2", "questions_per_step=2", "micro_batch=1",
    "max_steps=2", "save_steps=1", "sft_examples=2", "use_vllm=false",  # paper-mini runs 2 processes on vLLM
    "env.search=local", "env.top_k=2", "env.snippet_chars=120",
    "agent.max_turns=3", "agent.max_observation_chars=1500", "agent.sampling.max_new_tokens=64",
]


@pytest.mark.slow
@pytest.mark.model
def test_two_processes_train_one_run_and_resume_it(tmp_path: Path, shared_data: Path) -> None:
    pytest.importorskip("trl")
    started = time.perf_counter()
    questions = [q for q in read_jsonl(shared_data / "wiki" / "questions.jsonl") if q["answer_in_supporting_docs"]][:5]
    wanted = {doc for q in questions for doc in q["context_doc_ids"]}
    passages = [p for p in read_jsonl(shared_data / "wiki" / "passages.jsonl") if p["id"] in wanted]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(p) + "\n" for p in passages))
    (tmp_path / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    sets = [*SETS, f"questions={tmp_path / 'questions.jsonl'}", f"env.corpus={tmp_path / 'corpus.jsonl'}",
            f"env.cache={tmp_path / 'cache.sqlite'}"]
    result = launch("-m", "researchrl.cli", "train", "--output-dir", str(tmp_path / "runs"),
                    *[a for s in sets for a in ("--set", s)], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()  # both processes wrote into the one directory main named
    assert result.stdout.count(f"run directory: {run}") == 2
    rows = read_jsonl(run / "trajectories.jsonl")
    for step in (1, 2):
        records = [r for r in rows if r["step"] == step]
        assert len(records) == 2 * 2 and {r["rank"] for r in records} == {0, 1}
        assert len({r["question_id"] for r in records}) == 2, "each process ran its own question's group"
    assert len({(r["step"], r["question_id"], r["sample"]) for r in rows}) == len(rows) == 8
    assert [m["step"] for m in read_jsonl(run / "metrics.jsonl")] == [1, 2]
    assert json.loads((run / "grpo" / "checkpoint-2" / "trainer_state.json").read_text())["global_step"] == 2
    assert set(json.loads((run / "eval.json").read_text())) == {"before", "after_sft", "after"}
    assert (run / "sft" / "model" / "config.json").exists() and (run / "curves.png").exists()
    assert json.loads((run / "ledger.json").read_text())["run"], "the expert's searches are in the run's ledger"
    first = time.perf_counter() - started

    # leftovers of a step cut by a kill: its records, a line cut mid-write, a checkpoint without trainer_state.json
    with (run / "trajectories.jsonl").open("a") as f:
        f.write(json.dumps({**rows[-1], "step": 3}) + "\n" + '{"step": 3, "rank": 1, "quest')
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 3, "loss": 0.0}) + "\n")
    (run / "grpo" / "checkpoint-3").mkdir()
    (run / "grpo" / "checkpoint-3" / "model.safetensors").write_bytes(b"cut")
    resumed = launch("-m", "researchrl.cli", "train", "--resume", str(run), "--set", "max_steps=3", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = read_jsonl(run / "trajectories.jsonl")
    assert [r["step"] for r in rows] == [1] * 4 + [2] * 4 + [3] * 4
    assert len({(r["step"], r["question_id"], r["sample"]) for r in rows}) == 12
    assert [m["step"] for m in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3]
    assert json.loads((run / "grpo" / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3
    print(f"\ntwo-process train: {first:.0f} s, resumed to step 3: {time.perf_counter() - started - first:.0f} s")
