"""`researchrl eval`: run an agent or a baseline over a benchmark, k samples a question, resumable, judged, tabulated.

The output directory holds `eval_config.json` (what was run), `records.jsonl` (one line per question and sample,
appended as each finishes, so an interrupted run loses nothing and a rerun skips what is done; both are made with
the first record, so a run that fails before any episode ends leaves nothing behind), and the tables
(`tables.json`, `tables.md`) over the questions of this run, and what this run's web calls cost (`web.json`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from researchrl.agent.loop import AgentConfig, run_episode
from researchrl.config import to_dict
from researchrl.data.load import load_questions
from researchrl.environment import EnvConfig, open_environment
from researchrl.errors import UserError
from researchrl.eval.judge import Judge
from researchrl.eval.tables import source_table, write_tables
from researchrl.outputs import check_dir
from researchrl.policy.base import Policy
from researchrl.records import trajectory_record
from researchrl.tools.base import Toolset
from researchrl.tools.web_search import render_search_r1
from researchrl.types import Question
from researchrl.web.cache import endpoint_id
from researchrl.web.redact import scrub

RESUME_KEYS = ("data", "model", "policy_endpoint", "policy_mode", "bf16", "protocol", "k", "temperature", "max_turns",
               "max_new_tokens", "search", "heldout")
LATER_KEYS = {"bf16": False}  # what an eval_config.json written before the key existed ran with


@dataclass(frozen=True)
class EvalJob:
    """One evaluation: which questions, how many samples each, where the results go."""

    data: Path
    out: Path
    model: str  # a label for the records and the resume check
    agent: AgentConfig
    env: EnvConfig
    k: int = 1  # samples per question (avg@k, pass@k); k > 1 needs a temperature above 0
    limit: int | None = None  # first N questions of the file
    concurrency: int = 16  # episodes in flight (a local model batches their turns)
    rag_k: int = 5  # snippets the RAG baseline puts in the prompt
    heldout: int | None = None  # only the last N questions of the file (a training run's held-out set), before `limit`
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)  # eval --run: the run, phase and overrides
    endpoint: str | None = None  # the policy's OpenAI-compatible base URL (--base-url; None: a model in this process)
    tokenizer: str | None = None  # with an endpoint: the served model's tokenizer (--tokenizer), for completions mode
    bf16: bool = False  # a local model decodes with bfloat16 weights (--bf16; always False with an endpoint)

    @property
    def mode(self) -> str:
        """How the policy is asked: local (a model in this process), chat, or completions (an endpoint and its tokenizer)."""
        if self.endpoint is None:
            return "local"
        return "completions" if self.tokenizer else "chat"

    def settings(self) -> dict[str, Any]:
        """What eval_config.json records (no secret: URLs' passwords and keys redacted); RESUME_KEYS must match to resume."""
        return scrub({
            "data": str(self.data),
            "model": self.model,
            "policy_endpoint": endpoint_id(self.endpoint) if self.endpoint else None,
            "policy_mode": self.mode,
            "bf16": self.bf16,
            "protocol": self.agent.protocol,
            "k": self.k,
            "temperature": self.agent.sampling.temperature,
            "max_turns": self.agent.max_turns,
            "max_new_tokens": self.agent.sampling.max_new_tokens,
            "search": self.env.search,
            "web": self.env.web,
            "limit": self.limit,
            "heldout": self.heldout,
            "rag_k": self.rag_k,
            **self.provenance,
            "env": to_dict(self.env),
            "agent": to_dict(self.agent),
        })


def check_job(job: EvalJob) -> list[Question]:
    """The questions to run, after every check a user can fail (so nothing starts before a mistake is reported)."""
    if job.k < 1:
        raise UserError(f"--k must be at least 1, got {job.k}")
    if job.k > 1 and job.agent.sampling.temperature == 0:
        raise UserError("--k > 1 needs --temperature above 0: greedy decoding gives the same answer k times")
    if not job.data.exists():
        raise UserError(f"{job.data} not found (--data takes a .parquet or .jsonl QA file)")
    check_dir(job.out, "--out")
    questions = load_questions(job.data, None if job.heldout else job.limit)
    if job.heldout:
        questions = questions[-job.heldout:][: job.limit]
    if not questions:
        raise UserError(f"{job.data} holds no questions")
    seen: set[str] = set()
    duplicates = [q.id for q in questions if q.id in seen or seen.add(q.id)]
    if duplicates:
        raise UserError(f"{job.data}: question ids repeat ({', '.join(duplicates[:3])}…): ids key the resumable records")
    saved = job.out / "eval_config.json"
    if saved.exists():
        changed = changed_settings(json.loads(saved.read_text()), job.settings(), RESUME_KEYS)
        if changed:
            raise UserError(
                f"{job.out} holds a different evaluation ({'; '.join(changed)}); use another --out to start a new one"
            )
    return questions


def changed_settings(before: dict[str, Any], now: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """A "key X there, Y now" for each of `keys` that differs between a saved job and this one (LATER_KEYS fill in
    what an older file lacks), so a resumed job never mixes records made two ways."""
    before = {**LATER_KEYS, **before}
    return [f"{key} {before.get(key)!r} there, {now.get(key)!r} now" for key in keys if before.get(key) != now.get(key)]


class _Records:
    """records.jsonl, a line per finished sample; the directory and eval_config.json come with the first record."""

    def __init__(self, job: EvalJob) -> None:
        self.job = job
        self.sink: TextIO | None = None

    def __enter__(self) -> _Records:
        return self

    def write(self, record: dict[str, Any]) -> None:
        """Append one record and flush it (an interrupted run loses nothing)."""
        if self.sink is None:
            self.job.out.mkdir(parents=True, exist_ok=True)
            (self.job.out / "eval_config.json").write_text(json.dumps(self.job.settings(), indent=2))
            self.sink = (self.job.out / "records.jsonl").open("a")
        self.sink.write(json.dumps(record) + "\n")
        self.sink.flush()

    def __exit__(self, *exc: object) -> None:
        if self.sink is not None:
            self.sink.close()


async def _settled(tasks: list[asyncio.Future[Any]]) -> None:
    """Cancel the tasks still running and await them all, so a failed one leaves no exception unretrieved."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def load_done(path: Path) -> list[dict[str, Any]]:
    """Records already written; a line cut short by an interruption is dropped (that sample runs again)."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    records, kept = [], []
    for line in lines:
        try:
            records.append(json.loads(line))
            kept.append(line)
        except ValueError:
            continue
    if len(kept) != len(lines):
        path.write_text("".join(line + "\n" for line in kept))
    return records


async def rag_context(tools: Toolset, question: Question, k: int) -> Question:
    """The question with its top-k search snippets attached (one search of the question, as the RAG baseline does)."""
    search = tools.tools["web_search"]
    hits, error = await search.search_one(question.question, k)  # type: ignore[attr-defined]
    documents = render_search_r1(hits) if not error else f"(search failed: {error})"
    return dataclasses.replace(question, context=documents)


async def run_benchmark(
    job: EvalJob,
    policy: Policy,
    judge: Judge | None,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
) -> tuple[list[dict[str, Any]], list[Any], dict[str, float]]:
    """Run every (question, sample) not yet in records.jsonl: all records of this run's questions, the table, web spend.

    `on_progress(done, total)` is called once before the first episode and after each one.
    """
    questions = check_job(job)
    records_path = job.out / "records.jsonl"
    wanted = {q.id for q in questions}
    done = [r for r in load_done(records_path) if r.get("question_id") in wanted]
    finished = {(r["question_id"], r["sample"]) for r in done}
    pending = [(q, s) for q in questions for s in range(job.k) if (q.id, s) not in finished]
    slots = asyncio.Semaphore(job.concurrency)
    total = len(questions) * job.k
    on_progress(len(done), total)

    async with open_environment(job.env, job.agent.protocol) as tools:

        async def one(question: Question, sample: int) -> dict[str, Any]:
            async with slots:
                if job.agent.protocol == "rag":
                    question = await rag_context(tools, question, job.rag_k)
                trajectory = await run_episode(question, policy, tools, job.agent, sample_index=sample)
                answer = trajectory.answer if trajectory.reward and trajectory.reward.format_ok else None
                verdict = await judge.judge(question.question, question.answers, answer) if judge else None
            judged = verdict.record_fields() if verdict else {"mbe": None, "judge": None}
            return trajectory_record(
                trajectory, source=question.source or "unknown", sample=sample, protocol=job.agent.protocol,
                model=job.model, **judged,
            )

        tasks = [asyncio.ensure_future(one(q, s)) for q, s in pending]
        try:
            with _Records(job) as sink:
                for next_done in asyncio.as_completed(tasks):
                    record = await next_done
                    sink.write(record)
                    done.append(record)
                    on_progress(len(done), total)
        finally:
            await _settled(tasks)
        web = tools.ledger.metrics()
        (job.out / "web.json").write_text(tools.ledger.to_json())
    rows = source_table(done, job.k)
    write_tables(job.out, rows, job.k, judge.info() if judge else None, job.provenance)
    return done, rows, web
