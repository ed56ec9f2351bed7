"""Raw QA to a clean training parquet in the paper's veRL schema, with a JSON report of every decision.

Stages, in order (paper §4.3, App. A.1; REFERENCE §7):
1. load: .parquet (veRL or flat), .jsonl or .csv through `data.load.scan_questions`; bad rows are reported and
   skipped; a question without a source takes its file's stem.
2. dedup: by `reward.answer.normalize(question)`; the first occurrence keeps its id and gains the gold aliases
   of its duplicates. A different question reusing a kept id is reported as a bad row.
3. limit: the first N distinct questions, to keep the model stages cheap.
4. label (optional): an LLM labels each question with the paper's low-quality prompt; only "good" stays.
5. contamination (optional): pass@k answers from the base model without tools; the question is dropped if ANY
   sample contains a gold answer (rule: `contains_gold`).
6. mix (optional): integer ratios by source and a total size, deterministic given the seed.
7. write: `<out>` (veRL schema, `reward_model.style` "rule") and `<out>.report.json`.

Faults: a question the labeler cannot label (no parsable `<answer>` after `parse_attempts` replies, or an
endpoint fault after bounded retries) is KEPT and listed as "unlabeled"; a question whose pass@k samples cannot
be drawn (PolicyUnavailable) is KEPT and listed as "unchecked". Dropping them instead would let a flaky endpoint
silently shrink and bias the set; their ids are in the report for a re-run or a manual drop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal, TypeVar

from rich.progress import Progress

from researchrl.data.load import BadRow, Scan, scan_questions, write_verl_parquet
from researchrl.errors import ConfigError
from researchrl.policy.base import Context, Message, Policy, Sampling
from researchrl.policy.openai import PolicyUnavailable
from researchrl.prompts import LOW_QUALITY_PROMPT, PASS_AT_K_PROMPT
from researchrl.reward.answer import normalize
from researchrl.types import Question
from researchrl.web.chat import ChatError, complete, openai_client
from researchrl.web.redact import scrub
from researchrl.web.retry import RetryPolicy

T = TypeVar("T")
R = TypeVar("R")

LOW_QUALITY_PROMPT_SHA256 = hashlib.sha256(LOW_QUALITY_PROMPT.encode()).hexdigest()
PASS_AT_K_PROMPT_SHA256 = hashlib.sha256(PASS_AT_K_PROMPT.encode()).hexdigest()

Label = Literal["good", "time_sensitive", "subjective", "harmful", "unlabeled"]
_LABELS: dict[str, Label] = {"time sensitive": "time_sensitive", "subjective": "subjective", "harmful": "harmful", "good": "good"}
_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.IGNORECASE | re.DOTALL)
_THINK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class LabelerConfig:
    """The low-quality filter's endpoint (paper: DeepSeek-R1); the key is read from the env var `api_key_env`."""

    base_url: str
    model: str
    api_key_env: str = "LABELER_API_KEY"
    temperature: float = 0.6  # DeepSeek-R1's recommended sampling temperature (the paper gives none)
    max_tokens: int | None = None  # None: the server's limit (reasoning models think at length first)
    timeout: float = 120.0  # seconds per request; the whole call gets twice that
    parse_attempts: int = 3  # replies without a readable <answer> before the question is "unlabeled"
    concurrency: int = 8  # requests in flight
    retry: RetryPolicy = RetryPolicy()


@dataclass(frozen=True)
class ContaminationConfig:
    """pass@k against the base model without tools (paper: Qwen2.5-7B-Instruct, k = 10, temperature unstated)."""

    model: str  # the base model's name, for the report
    k: int = 10
    temperature: float = 1.0
    max_new_tokens: int = 64  # a "short answer"
    concurrency: int = 16  # questions in flight (a local model batches them)


@dataclass(frozen=True)
class MixConfig:
    """Integer weight per source (paper 1:1:3:3: nq 1, tq 1, hotpotqa 3, 2wiki 3); `size` None = largest exact mix."""

    ratios: dict[str, int]
    size: int | None = None


@dataclass(frozen=True)
class CurateConfig:
    """Every setting of one run; the report repeats it."""

    split: str = "train"  # extra_info.split of every written row
    limit: int | None = None  # keep the first N distinct questions
    seed: int = 0  # mixing draws and pass@k sample seeds
    labeler: LabelerConfig | None = None
    contamination: ContaminationConfig | None = None
    mix: MixConfig | None = None


# ---------------------------------------------------------------- report records


@dataclass(frozen=True)
class InputFile:
    """What one input file held."""

    path: str
    rows: int
    questions: int
    bad_rows: list[BadRow]


@dataclass(frozen=True)
class Duplicate:
    """Questions merged into the kept one, and how many gold aliases they added."""

    kept: str
    dropped: list[str]
    added_answers: int


@dataclass(frozen=True)
class LabelResult:
    """The labeler's verdict on one question; `reason` says why it is "unlabeled"."""

    id: str
    label: Label
    reason: str = ""


@dataclass(frozen=True)
class Check:
    """The pass@k verdict on one question: the first sample containing a gold, or a fault that stopped sampling."""

    id: str
    samples: int  # drawn before the verdict
    sample: str | None = None
    gold: str | None = None
    fault: str = ""


@dataclass(frozen=True)
class SourceShare:
    """One source in the mix: clean questions available, the share asked for, and what it gave."""

    available: int
    target: int
    taken: int

    @property
    def short(self) -> int:
        """How many questions the source lacked for its target."""
        return self.target - self.taken


@dataclass
class CurateReport:
    """Everything the run decided, written beside the parquet as JSON."""

    config: CurateConfig
    inputs: list[InputFile]
    duplicates: list[Duplicate] = field(default_factory=list)
    id_clashes: list[BadRow] = field(default_factory=list)
    labels: list[LabelResult] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    mix: dict[str, SourceShare] = field(default_factory=dict)
    not_in_mix: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # the funnel, stage by stage
    output: str = ""

    def to_json(self) -> dict:
        """The report as JSON-ready data, with the prompt hashes and per-stage id lists spelled out."""
        data = asdict(self)
        data["labels"] = {
            "prompt_sha256": LOW_QUALITY_PROMPT_SHA256 if self.config.labeler else None,
            "counts": dict(Counter(r.label for r in self.labels)),
            "dropped": {lab: [r.id for r in self.labels if r.label == lab] for lab in ("time_sensitive", "subjective", "harmful")},
            "unlabeled": [{"id": r.id, "reason": r.reason} for r in self.labels if r.label == "unlabeled"],
        }
        data["contamination"] = {
            "prompt_sha256": PASS_AT_K_PROMPT_SHA256 if self.config.contamination else None,
            "dropped": [asdict(c) for c in self.checks if c.gold is not None],
            "unchecked": [{"id": c.id, "fault": c.fault} for c in self.checks if c.fault],
        }
        del data["checks"]
        data["mix"] = {s: {**asdict(share), "short": share.short} for s, share in self.mix.items()}
        return data


# ---------------------------------------------------------------- pure steps


def contains_gold(sample: str, golds: Sequence[str]) -> str | None:
    """The first gold whose normalised tokens appear contiguously in the normalised sample, else None.

    Both sides go through `reward.answer.normalize` (lower case, punctuation -> space, whitespace collapsed), so
    "Paris" matches "It is paris." but "1" does not match "10"; golds that normalise to "" never match.
    A yes/no gold matches any sample that says yes/no: such questions rarely survive pass@k (the paper's
    2wiki set lost many yes/no items too).
    """
    haystack = f" {normalize(sample)} "
    for gold in golds:
        needle = normalize(gold)
        if needle and f" {needle} " in haystack:
            return gold
    return None


def parse_label(reply: str) -> Label | None:
    """The label in the reply's last <answer> tag (outside <think>), or None when there is no known value."""
    tags = _ANSWER_TAG.findall(_THINK.sub("", reply or ""))
    if not tags:
        return None
    value = re.sub(r"[\s_-]+", " ", tags[-1].lower()).strip(" .:;,'\"*`")
    found = re.match(r"(time sensitive|subjective|harmful|good)\b", value)
    return _LABELS[found.group(1)] if found else None


def dedup(questions: Sequence[Question]) -> tuple[list[Question], list[Duplicate], list[BadRow]]:
    """Questions unique by normalised text (first kept, gold sets merged), the merges, and id clashes dropped."""
    kept: dict[str, Question] = {}
    merged: dict[str, list[str]] = {}
    added: dict[str, int] = {}
    owner: dict[str, str] = {}  # id -> normalised text of the question that owns it
    clashes: list[BadRow] = []
    for q in questions:
        key = normalize(q.question)
        if key in kept:
            first = kept[key]
            extra = tuple(a for a in dict.fromkeys(q.answers) if a not in first.answers)
            kept[key] = replace(first, answers=first.answers + extra)
            merged.setdefault(key, []).append(q.id)
            added[key] = added.get(key, 0) + len(extra)
        elif q.id in owner:
            clashes.append(BadRow(q.id, f"id already used by another question (source {q.source!r})"))
        else:
            kept[key], owner[q.id] = q, key
    duplicates = [Duplicate(kept[k].id, ids, added.get(k, 0)) for k, ids in merged.items()]
    return list(kept.values()), duplicates, clashes


def parse_mix(text: str) -> dict[str, int]:
    """`hotpotqa=3,2wiki=3,nq=1,tq=1` as {source: weight}; ConfigError saying what is wrong."""
    ratios: dict[str, int] = {}
    for part in text.split(","):
        source, sep, weight = part.strip().partition("=")
        source = source.strip()
        if not sep or not source or not weight.strip().isdigit() or int(weight) < 1:
            raise ConfigError(f"bad mix entry {part.strip()!r}: expected source=positive integer, e.g. hotpotqa=3")
        if source in ratios:
            raise ConfigError(f"source {source!r} appears twice in the mix")
        ratios[source] = int(weight)
    return ratios


def mix_targets(ratios: dict[str, int], available: dict[str, int], size: int | None) -> dict[str, int]:
    """Questions to take per source: `size` split by largest remainder, or (None) the largest exact-ratio mix."""
    if size is None:
        multiple = min(available.get(s, 0) // w for s, w in ratios.items())
        return {s: multiple * w for s, w in ratios.items()}
    total = sum(ratios.values())
    exact = {s: size * w / total for s, w in ratios.items()}
    targets = {s: int(x) for s, x in exact.items()}
    by_remainder = sorted(ratios, key=lambda s: -(exact[s] - targets[s]))  # stable: ties keep the given order
    for s in by_remainder[: size - sum(targets.values())]:
        targets[s] += 1
    return targets


def mix(questions: Sequence[Question], config: MixConfig, seed: int) -> tuple[list[Question], dict[str, SourceShare], dict[str, int]]:
    """The mixed questions (in input order), each source's share, and the counts of sources left out."""
    pools: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        pools.setdefault(q.source, []).append(i)
    targets = mix_targets(config.ratios, {s: len(p) for s, p in pools.items()}, config.size)
    chosen: list[int] = []
    shares: dict[str, SourceShare] = {}
    for source, target in targets.items():
        pool = pools.get(source, [])
        picked = random.Random(f"{seed}:{source}").sample(pool, min(target, len(pool)))
        chosen += picked
        shares[source] = SourceShare(len(pool), target, len(picked))
    left_out = {s: len(p) for s, p in pools.items() if s not in config.ratios}
    return [questions[i] for i in sorted(chosen)], shares, left_out


def report_path(out: Path) -> Path:
    """Where the JSON report of `out` goes: `<out>.report.json`."""
    return out.with_name(out.name + ".report.json")


# ---------------------------------------------------------------- model stages


class Labeler:
    """The paper's low-quality filter on any OpenAI-compatible chat endpoint (bounded retries, a deadline per call)."""

    def __init__(self, config: LabelerConfig):
        self.config = config
        self._rng = random.Random()
        self._client = openai_client(config.base_url, config.api_key_env, config.timeout)

    async def label(self, question: Question) -> LabelResult:
        """Ask until a reply carries a known label; faults and unreadable replies give "unlabeled", never raise."""
        cfg = self.config
        messages = [{"role": "user", "content": LOW_QUALITY_PROMPT.format(question=question.question)}]
        for _ in range(cfg.parse_attempts):
            try:
                reply = await complete(
                    self._client, cfg.model, messages, temperature=cfg.temperature, timeout=cfg.timeout * 2,
                    retry=cfg.retry, max_tokens=cfg.max_tokens, rng=self._rng,
                )
            except ChatError as err:
                reason = f"endpoint {err.kind} after {cfg.retry.attempts} tries" if err.retried else f"endpoint refused: {err.kind}"
                return LabelResult(question.id, "unlabeled", reason)
            label = parse_label(reply)
            if label is not None:
                return LabelResult(question.id, label)
        return LabelResult(question.id, "unlabeled", f"no known label in {cfg.parse_attempts} replies")

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.close()


async def check_contamination(policy: Policy, question: Question, config: ContaminationConfig, seed: int) -> Check:
    """Draw up to k tool-free answers, stopping at the first that contains a gold; a dead endpoint is a fault."""
    messages = [Message("user", PASS_AT_K_PROMPT.format(question=question.question))]
    tok = policy.tokenizer
    ids = tok.encode(tok.render_chat(messages, None, add_generation_prompt=True), trusted=True)
    for i in range(config.k):
        sample_seed = zlib.crc32(f"{seed}:{question.id}:{i}".encode())
        sampling = Sampling(temperature=config.temperature, max_new_tokens=config.max_new_tokens, seed=sample_seed)
        try:
            sample = await policy.generate(Context(ids, messages, ""), sampling)
        except PolicyUnavailable as err:
            return Check(question.id, i, fault=str(err)[:300])
        text = sample.text.replace(tok.eos_token, "").strip()
        gold = contains_gold(text, question.answers)
        if gold is not None:
            return Check(question.id, i + 1, text, gold)
    return Check(question.id, config.k)


async def map_bounded(
    fn: Callable[[T], Awaitable[R]], items: Sequence[T], concurrency: int, advance: Callable[[], None] = lambda: None
) -> list[R]:
    """`fn` over `items` with at most `concurrency` calls in flight, results in input order."""
    results: list[R | None] = [None] * len(items)
    pending = iter(enumerate(items))

    async def worker() -> None:
        for i, item in pending:
            results[i] = await fn(item)
            advance()

    async with asyncio.TaskGroup() as group:
        for _ in range(min(max(1, concurrency), len(items))):
            group.create_task(worker())
    return results  # type: ignore[return-value]


# ---------------------------------------------------------------- the pipeline


async def curate(
    inputs: Sequence[Path],
    out: Path,
    config: CurateConfig,
    base_model: Policy | None = None,
    progress: Progress | None = None,
) -> CurateReport:
    """Run every configured stage, write `out` and its report, and return the report (the caller owns `base_model`)."""
    if config.contamination is not None and base_model is None:
        raise ValueError("the contamination check needs a base model (a Policy)")
    scans = [scan_questions(path) for path in inputs]
    report = CurateReport(config, [InputFile(str(s.path), s.rows, len(s.questions), s.bad_rows) for s in scans])
    questions, report.duplicates, report.id_clashes = dedup([q for s in scans for q in _sourced(s)])
    counts = report.counts
    counts.update(
        rows=sum(s.rows for s in scans),
        bad_rows=sum(len(s.bad_rows) for s in scans),
        duplicates=sum(len(d.dropped) for d in report.duplicates),
        id_clashes=len(report.id_clashes),
        distinct=len(questions),
    )
    if config.limit is not None:
        questions = questions[: config.limit]
    counts["after_limit"] = len(questions)
    if config.labeler is not None:
        labeler = Labeler(config.labeler)
        try:
            report.labels = await _stage(progress, "labeling", questions, labeler.label, config.labeler.concurrency)
        finally:
            await labeler.aclose()
        keep = {r.id for r in report.labels if r.label in ("good", "unlabeled")}
        questions = [q for q in questions if q.id in keep]
        counts["dropped_by_label"] = counts["after_limit"] - len(questions)
        counts["unlabeled"] = sum(r.label == "unlabeled" for r in report.labels)
    if config.contamination is not None and base_model is not None:
        cc = config.contamination

        async def check(q: Question) -> Check:
            return await check_contamination(base_model, q, cc, config.seed)

        report.checks = await _stage(progress, f"pass@{cc.k}", questions, check, cc.concurrency)
        dropped = {c.id for c in report.checks if c.gold is not None}
        questions = [q for q in questions if q.id not in dropped]
        counts.update(contaminated=len(dropped), unchecked=sum(bool(c.fault) for c in report.checks))
    if config.mix is not None:
        before = len(questions)
        questions, report.mix, report.not_in_mix = mix(questions, config.mix, config.seed)
        counts["mixed_out"] = before - len(questions)
    write_verl_parquet(questions, out, config.split)
    counts["written"] = len(questions)
    report.output = str(out)
    text = json.dumps(scrub(report.to_json()), indent=1, ensure_ascii=False, default=str)  # endpoints' faults, URLs
    report_path(out).write_text(text + "\n", encoding="utf-8")
    return report


def _sourced(scan: Scan) -> list[Question]:
    """The scan's questions, those without a source named after their file."""
    return [q if q.source else replace(q, source=scan.path.stem) for q in scan.questions]


async def _stage(
    progress: Progress | None, name: str, questions: list[Question], fn: Callable[[Question], Awaitable[R]], concurrency: int
) -> list[R]:
    """One model stage over the questions, with a progress bar when one is given."""
    if progress is None:
        return await map_bounded(fn, questions, concurrency)
    task = progress.add_task(name, total=len(questions))
    return await map_bounded(fn, questions, concurrency, lambda: progress.advance(task))
