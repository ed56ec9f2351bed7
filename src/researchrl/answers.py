"""`researchrl ask --file`: answers to a file of questions, one JSON line each as it lands, resumable like eval."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from researchrl.agent.loop import AgentConfig, run_episode
from researchrl.config import flatten, to_dict
from researchrl.data.load import to_question
from researchrl.data.rows import InputError, jsonl_rows
from researchrl.environment import EnvConfig, open_environment
from researchrl.errors import UserError
from researchrl.eval.benchmark import _settled, changed_settings, load_done
from researchrl.outputs import check_file
from researchrl.policy.base import Policy
from researchrl.records import trajectory_record
from researchrl.types import Question, Trajectory
from researchrl.web.redact import scrub

# settings (dotted, as in the config file) that must match for a rerun to add to the answers already in --out
RESUME_KEYS = ("model", "bf16", "agent.protocol", "agent.max_turns", "agent.sampling.max_new_tokens",
               "agent.sampling.temperature", "env.search")


@dataclass(frozen=True)
class AnswerJob:
    """A file of questions answered into a JSONL file: what is asked, where the answers go, how they are made."""

    questions: Path
    out: Path
    model: str  # a label for the config file and the resume check
    agent: AgentConfig
    env: EnvConfig
    concurrency: int = 16  # episodes in flight (a local model batches their turns)
    bf16: bool = False  # a local model decodes with bfloat16 weights

    @property
    def config_path(self) -> Path:
        """The job's settings beside the answers (`answers.jsonl.config.json`): every answers line is a record."""
        return self.out.with_name(self.out.name + ".config.json")

    def settings(self) -> dict[str, Any]:
        """What the config file records (no secret: URLs' passwords and keys redacted); its RESUME_KEYS must match."""
        return scrub({"model": self.model, "bf16": self.bf16, "questions": str(self.questions), "env": to_dict(self.env),
                      "agent": to_dict(self.agent)})


@dataclass(frozen=True)
class Outcome:
    """What one invocation did: questions in the file, answers found from before, answers written now, web cost."""

    total: int
    earlier: int
    written: int
    web: dict[str, float]


def read_questions(path: Path) -> list[Question]:
    """Every question of a .jsonl file, golds optional; a bad line or a repeated id is an InputError naming the line."""
    if path.suffix != ".jsonl":
        raise InputError(f"{path}: --file takes a .jsonl file, one {{\"question\": ...}} object a line")
    questions: list[Question] = []
    seen: dict[str, str] = {}  # id -> where it was first given
    for index, (where, row) in enumerate(jsonl_rows(path)):
        question = to_question(row, where, f"{path.stem}_{index}", golds=False)  # bare questions welcome
        if question.id in seen:  # ids key the resume: a repeat would be skipped as answered
            raise InputError(f"{where}: id {question.id!r} repeats {seen[question.id].removeprefix(f'{path}: ')}")
        seen[question.id] = where
        questions.append(question)
    if not questions:
        raise InputError(f"{path} holds no questions")
    return questions


def pending(job: AnswerJob) -> tuple[list[Question], int]:
    """The questions not yet answered in --out and how many of the file's are, after every check a user can fail."""
    check_file(job.out, "--out")
    if job.out.resolve() == job.questions.resolve():
        raise UserError("--out must be another file than --file: answers are appended to it")
    questions = read_questions(job.questions)
    _check_same_job(job)
    done = {record.get("id") for record in load_done(job.out) if isinstance(record, dict)}
    todo = [q for q in questions if q.id not in done]
    return todo, len(questions) - len(todo)


def _check_same_job(job: AnswerJob) -> None:
    """Answers already in --out were made with the same RESUME_KEYS, else a rerun would mix two jobs in one file."""
    if not job.out.exists() or job.out.stat().st_size == 0:
        return
    if not job.config_path.exists():
        raise UserError(f"--out {job.out} holds lines but no {job.config_path.name} beside it: it is not answers "
                        "written by researchrl ask --file; give another --out")
    try:
        before = flatten(json.loads(job.config_path.read_text()))
    except (ValueError, AttributeError):
        raise UserError(f"{job.config_path} is not the JSON object researchrl ask --file writes") from None
    changed = changed_settings(before, flatten(job.settings()), RESUME_KEYS)
    if changed:
        raise UserError(f"--out {job.out} holds answers of a different job ({'; '.join(changed)}); "
                        "use another --out, or the same settings to resume")


def answer_record(trajectory: Trajectory) -> dict[str, Any]:
    """The eval record of the episode under the question's id; with no golds the scores are null, not a zero."""
    record = trajectory_record(trajectory, id=trajectory.question.id)
    if not trajectory.question.answers:
        record.update(reward=None, f1=None, em=None)
    return record


async def answer_all(
    job: AnswerJob, questions: list[Question], policy: Policy, on_answer: Callable[[], None] = lambda: None
) -> dict[str, float]:
    """Run the questions concurrently on one environment, appending each record to --out as it ends; the web's cost."""
    slots = asyncio.Semaphore(job.concurrency)
    written = 0
    async with open_environment(job.env, job.agent.protocol) as tools:

        async def one(question: Question) -> None:
            nonlocal written
            async with slots:
                trajectory = await run_episode(question, policy, tools, job.agent)
            if not written:  # the settings come with the first answer: a run that fails before one leaves nothing
                job.out.parent.mkdir(parents=True, exist_ok=True)
                job.config_path.write_text(json.dumps(job.settings(), indent=2))
            with job.out.open("a", encoding="utf-8") as sink:  # closed at once: an interrupted run loses no answer
                sink.write(json.dumps(answer_record(trajectory)) + "\n")
            written += 1
            on_answer()

        tasks = [asyncio.ensure_future(one(q)) for q in questions]
        try:
            await asyncio.gather(*tasks)
        finally:
            await _settled(tasks)
        return tools.ledger.metrics()


def answer_file(job: AnswerJob, base_url: str | None, api_key_env: str, tokenizer: str | None,
                threads: int | None) -> Outcome:
    """Check the job, then load the policy only if a question is left and answer it under a progress bar."""
    todo, earlier = pending(job)
    web = asyncio.run(_answer(job, todo, earlier, base_url, api_key_env, tokenizer, threads)) if todo else {}
    return Outcome(earlier + len(todo), earlier, len(todo), web)


async def _answer(job, todo, earlier, base_url, api_key_env, tokenizer, threads) -> dict[str, float]:  # noqa: ANN001
    """Load the policy, answer with a progress bar, close the policy; what the web cost."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from researchrl.cli import _policy

    policy = _policy(job.model, base_url, api_key_env, tokenizer, threads, max_batch=job.concurrency, bf16=job.bf16)
    try:
        with Progress(TextColumn("answers"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as progress:
            bar = progress.add_task("answers", total=earlier + len(todo), completed=earlier)
            return await answer_all(job, todo, policy, on_answer=lambda: progress.advance(bar))
    finally:
        await policy.aclose()
