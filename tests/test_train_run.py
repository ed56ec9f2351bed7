"""A tiny real `researchrl train` in a non-default environment, then the run evaluated and asked exactly as it trained.

One module-scoped run (~2.5 min on 2 cores): the embedded model; `env.search=local` over a small corpus file;
`env.reader=llm`, the paper's reading agent, on the sandbox's OpenAI-compatible reader at its URL (as any endpoint
would be given); a warm-up on 2 expert trajectories, two GRPO steps, and the three held-out evaluations.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli import run as researchrl

pytestmark = pytest.mark.model


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, shared_data) -> Iterator[Path]:  # noqa: ANN001
    pytest.importorskip("trl")
    from researchrl.sandbox.server import SandboxServer

    root = tmp_path_factory.mktemp("run")
    questions = [q for q in read_jsonl(shared_data / "wiki" / "questions.jsonl") if q["answer_in_supporting_docs"]][:6]
    wanted = {doc for q in questions for doc in q["context_doc_ids"]}
    passages = [p for p in read_jsonl(shared_data / "wiki" / "passages.jsonl") if p["id"] in wanted]
    (root / "corpus.jsonl").write_text("".join(json.dumps(p) + "\n" for p in passages))
    (root / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    sets = [
        f"questions={root / 'questions.jsonl'}", "heldout=2", "eval_questions=2", "threads=2",
        "group_size=2", "questions_per_step=1", "micro_batch=2", "max_steps=2", "save_steps=1", "sft_examples=2",
        "env.search=local", f"env.corpus={root / 'corpus.jsonl'}", "env.top_k=2", "env.snippet_chars=120",
        "env.reader=llm", "env.reader_model=sandbox-reader",
        "agent.max_turns=3", "agent.max_observation_chars=1500", "agent.sampling.max_new_tokens=96",
        "use_vllm=false",  # transformers rollouts even where vLLM is built (tests/rl/test_vllm.py covers that engine)
    ]
    with SandboxServer() as reader:
        sets.append(f"env.reader_url={reader.url}/v1")
        result = researchrl("train", "--output-dir", str(root / "runs"), *[a for s in sets for a in ("--set", s)], timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        (run_dir,) = (root / "runs").iterdir()
        yield run_dir


def test_the_run_trained_on_the_local_corpus_and_saved_its_resolved_config(finished: Path) -> None:
    saved = tomllib.loads((finished / "config.toml").read_text())
    assert saved["env"]["search"] == "local" and saved["env"]["corpus"].endswith("corpus.jsonl")
    assert saved["agent"]["max_turns"] == 3 and saved["agent"]["sampling"]["max_new_tokens"] == 96
    phases = json.loads((finished / "eval.json").read_text())
    assert set(phases) == {"before", "after_sft", "after"}
    paired = json.loads((finished / "paired.json").read_text())  # later minus earlier, question by question
    assert set(paired) == {"after - after_sft", "after_sft - before", "after - before"}
    for name, diff in paired.items():
        later, earlier = name.split(" - ")
        for metric in ("f1", "reward"):
            assert diff[metric]["n"] == 2 and diff[metric]["low"] <= diff[metric]["mean"] <= diff[metric]["high"]
            assert diff[metric]["mean"] == pytest.approx(phases[later][metric] - phases[earlier][metric], abs=1e-4)
    rollouts = read_jsonl(finished / "trajectories.jsonl")
    assert [r["step"] for r in rollouts] == [1, 1, 2, 2]
    metrics = read_jsonl(finished / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2] and all(math.isfinite(m["loss"]) for m in metrics)
    from researchrl.eval.behaviour import summarize  # research behaviour per phase and per step, from the records

    for phase, summary in phases.items():
        logged = {k: v for k, v in summary.items() if k.startswith("behaviour/")}
        assert logged == summarize(read_jsonl(finished / f"eval_{phase}.jsonl"))
    for m in metrics:
        assert m["behaviour/queries"] == summarize([r for r in rollouts if r["step"] == m["step"]])["behaviour/queries"]
    ledger = json.loads((finished / "ledger.json").read_text())
    used = {(row["kind"], row["provider"]): row["calls"] + row["hits"] for row in ledger["run"]}
    assert used[("read", "reader:sandbox-reader")] >= 2, "browsing in this run went through the LLM reader"
    assert used[("search", "local")] >= 2 and ("search", "sandbox") not in used
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(finished / "sft" / "model")
    demos = [tokenizer.decode(row["input_ids"]) for row in read_jsonl(finished / "sft" / "demonstrations.jsonl")]
    assert len(demos) == 2 and all("corpus://" in demo for demo in demos), "the expert searched and browsed the corpus"
    assert saved["env"]["reader"] == "llm" and saved["env"]["reader_url"].endswith("/v1")


def test_eval_run_reproduces_the_runs_own_evaluation_token_for_token(finished: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    result = researchrl("eval", "--run", str(finished), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    ours = {r["question_id"]: r for r in read_jsonl(out / "records.jsonl")}
    theirs = {r["question_id"]: r for r in read_jsonl(finished / "eval_after.jsonl")}
    assert ours.keys() == theirs.keys() and len(ours) == 2
    for qid, record in theirs.items():
        assert ours[qid]["tokens_sha256"] == record["tokens_sha256"], qid
        assert [t["text"] for t in ours[qid]["turns"]] == [t["text"] for t in record["turns"]]
        assert ours[qid]["reward"] == record["reward"]
    tables = json.loads((out / "tables.json").read_text())
    assert tables["evaluated"] == {"run": str(finished), "phase": "after", "overrides": {}}
    settings = json.loads((out / "eval_config.json").read_text())
    assert settings["env"]["search"] == "local" and settings["agent"]["sampling"]["temperature"] == 0.0
    run_config = tomllib.loads((finished / "config.toml").read_text())
    assert settings["bf16"] is run_config["eval_bf16"]  # the run's own precision, whichever this CPU resolved


def test_explicit_flags_override_the_run_and_are_recorded(finished: Path, tmp_path: Path) -> None:
    out = tmp_path / "one_turn"
    result = researchrl("eval", "--run", str(finished), "--phase", "before", "--out", str(out), "--max-turns", "1",
                        "--set", "env.top_k=1", "--limit", "1", "--bf16")
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = read_jsonl(out / "records.jsonl")
    assert len(record["turns"]) == 1
    tables = json.loads((out / "tables.json").read_text())
    assert tables["evaluated"]["phase"] == "before"
    assert tables["evaluated"]["overrides"] == {"agent.max_turns": 1, "env.top_k": "1"}
    settings = json.loads((out / "eval_config.json").read_text())
    assert settings["env"]["top_k"] == 1 and settings["env"]["corpus"].endswith("corpus.jsonl")
    assert settings["bf16"] is True  # --bf16 over the run's eval_bf16, recorded


def test_ask_run_uses_the_runs_model_and_environment(finished: Path) -> None:
    result = researchrl("ask", "If Gallu is a demon Lilu is what?", "--run", str(finished))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "termination" in result.stdout and "web: upstream calls" in result.stdout


def test_ask_run_decodes_in_the_precision_of_the_runs_evaluations(finished: Path, tmp_path: Path) -> None:
    """A run whose evaluations decoded in bf16 (its config.toml says so) is asked in bf16; --no-bf16 overrides."""
    run = tmp_path / "run"
    run.mkdir()
    for entry in finished.iterdir():
        if entry.name != "config.toml":
            (run / entry.name).symlink_to(entry)
    config = (finished / "config.toml").read_text()
    (run / "config.toml").write_text(config.replace(f"eval_bf16 = {str(tomllib.loads(config)['eval_bf16']).lower()}",
                                                     "eval_bf16 = true"))
    assert tomllib.loads((run / "config.toml").read_text())["eval_bf16"] is True
    (tmp_path / "q.jsonl").write_text(json.dumps({"question": "If Gallu is a demon Lilu is what?"}) + "\n")
    for flags, want in (([], True), (["--no-bf16"], False)):
        out = tmp_path / f"answers{len(flags)}.jsonl"
        result = researchrl("ask", "--file", str(tmp_path / "q.jsonl"), "--out", str(out), "--run", str(run),
                            "--max-turns", "1", *flags)
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.loads(out.with_name(out.name + ".config.json").read_text())["bf16"] is want


def test_resume_keeps_the_runs_settings(finished: Path) -> None:
    refused = researchrl("train", "--resume", str(finished), "--set", "agent.max_turns=5")
    assert refused.returncode == 2 and "agent.max_turns cannot change mid-run" in refused.stderr
    assert "Traceback" not in refused.stderr
    resumed = researchrl("train", "--resume", str(finished), "--set", "env.run_budget_usd=5")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert tomllib.loads((finished / "config.toml").read_text())["env"]["run_budget_usd"] == 5.0
