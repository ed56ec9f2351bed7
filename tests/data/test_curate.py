"""curate on the real benchmark files, against loopback OpenAI-compatible servers, and the embedded model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from researchrl.data.curate import (
    LOW_QUALITY_PROMPT,
    LOW_QUALITY_PROMPT_SHA256,
    PASS_AT_K_PROMPT,
    PASS_AT_K_PROMPT_SHA256,
    ContaminationConfig,
    CurateConfig,
    LabelerConfig,
    MixConfig,
    contains_gold,
    curate,
    map_bounded,
    mix_targets,
    parse_label,
    parse_mix,
    report_path,
)
from researchrl.data.load import VERL_SCHEMA, BadRow, load_questions, scan_questions
from researchrl.data.rows import InputError
from researchrl.policy.openai import OpenAIPolicy
from researchrl.reward.answer import normalize
from researchrl.types import Question
from researchrl.web.retry import RetryPolicy
from tests.loopback import serve_app

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)
PAPER_MIX = {"hotpotqa": 3, "2wiki": 3, "nq": 1, "tq": 1}


@pytest.fixture(scope="module")
def dev_path(shared_data: Path) -> Path:
    return shared_data / "benchmarks" / "deepresearcher_dev.parquet"


@pytest.fixture(scope="module")
def test_path(shared_data: Path) -> Path:
    return shared_data / "benchmarks" / "deepresearcher_test.parquet"


@pytest.fixture(scope="module")
def dev(dev_path: Path) -> list[Question]:
    return load_questions(dev_path)


def read_report(out: Path) -> dict:
    return json.loads(report_path(out).read_text(encoding="utf-8"))


# ---------------------------------------------------------------- a loopback OpenAI-compatible chat server


class FakeChat:
    """/v1/chat/completions answering `reply(prompt, body) -> (status, text)`; records requests and peak concurrency."""

    def __init__(self, reply: Callable[[str, dict], tuple[int, str]], delay: float = 0.0) -> None:
        self.reply = reply
        self.delay = delay
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = 0
        self.peak = 0
        self.url = ""

    async def handle(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            status, text = self.reply(body["messages"][-1]["content"], body)
        finally:
            self.in_flight -= 1
        if status != 200:
            return JSONResponse({"error": {"message": text, "type": "test"}}, status_code=status)
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        return JSONResponse({"id": "c", "object": "chat.completion", "created": 0, "model": body["model"], "choices": [choice]})

    def prompts(self) -> list[str]:
        return [b["messages"][-1]["content"] for b in self.bodies]


@contextlib.contextmanager
def chat_servers() -> Iterator[Callable[..., FakeChat]]:
    """A starter of FakeChat servers on loopback; every one is stopped on exit."""
    with contextlib.ExitStack() as stack:

        def start(reply: Callable[[str, dict], tuple[int, str]], delay: float = 0.0) -> FakeChat:
            fake = FakeChat(reply, delay)
            app = Starlette(routes=[Route("/v1/chat/completions", fake.handle, methods=["POST"])])
            fake.url = stack.enter_context(serve_app(app)) + "/v1"
            return fake

        yield start


@pytest.fixture
def chat_server() -> Iterator[Callable[..., FakeChat]]:
    with chat_servers() as start:
        yield start


def labeled_question(prompt: str) -> str:
    """The question inside the low-quality prompt."""
    found = re.search(r"<question>(.*?)</question>", prompt, re.DOTALL)
    assert found, prompt
    return found.group(1)


def asked_question(prompt: str) -> str:
    """The question inside the pass@k prompt."""
    found = re.fullmatch(r"Give a short answer .*?\n\nQuestion: (.*)\n\nYour answer:", prompt, re.DOTALL)
    assert found, prompt
    return found.group(1)


# ---------------------------------------------------------------- real data: schema, round trip, dedup


async def test_dev_round_trips_in_the_paper_schema(dev_path: Path, dev: list[Question], tmp_path: Path) -> None:
    out = tmp_path / "train.parquet"
    report = await curate([dev_path], out, CurateConfig(split="dev"))
    table = pq.read_table(out)
    benchmark = pq.read_table(dev_path)
    assert table.schema.remove_metadata().equals(benchmark.schema.remove_metadata())
    assert table.schema.equals(VERL_SCHEMA)
    assert load_questions(out) == dev  # same questions, answers, ids and sources, in order
    rows = table.to_pylist()
    assert {r["ability"] for r in rows} == {"search & question answering"}
    assert {r["reward_model"]["style"] for r in rows} == {"rule"}
    assert {r["extra_info"]["split"] for r in rows} == {"dev"}
    # the answer strings are byte-identical to the paper's file (case and aliases preserved)
    assert [r["reward_model"]["ground_truth"] for r in rows] == [r["reward_model"]["ground_truth"] for r in benchmark.to_pylist()]
    assert report.counts == {"rows": 875, "bad_rows": 0, "duplicates": 0, "id_clashes": 0, "distinct": 875, "after_limit": 875, "written": 875}
    saved = read_report(out)
    assert saved["counts"]["written"] == 875 and saved["config"]["split"] == "dev"
    assert saved["output"] == str(out) and saved["labels"]["prompt_sha256"] is None


async def test_dedup_on_dev_plus_test(dev_path: Path, test_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "both.parquet"
    report = await curate([dev_path, test_path], out, CurateConfig())
    dev_ids = {q.id for q in load_questions(dev_path)}
    test_qs = load_questions(test_path)
    shared_ids = dev_ids & {q.id for q in test_qs}
    assert len(shared_ids) == 188
    written = load_questions(out)
    by_text = Counter(normalize(q.question) for q in written)
    assert max(by_text.values()) == 1  # no duplicate question text is left
    assert len({q.id for q in written}) == len(written)
    assert report.counts["rows"] == 875 + 3197
    assert report.counts["duplicates"] == 875 + 3197 - len(written)
    dropped = {i for d in report.duplicates for i in d.dropped}
    assert shared_ids <= dropped  # every shared id came back from test and was merged into its dev twin
    # different ids, same text: "Who was the director of Pilot?"-style popqa items; their gold sets were merged
    raw = {q.id: q for q in test_qs}
    merged = [d for d in report.duplicates if d.added_answers]
    assert merged
    kept = {q.id: q for q in written}
    for d in merged:
        extra = {a for i in d.dropped for a in raw[i].answers}
        assert extra <= set(kept[d.kept].answers)
        assert len(kept[d.kept].answers) == len(set(kept[d.kept].answers))
    assert read_report(out)["counts"]["duplicates"] == report.counts["duplicates"]


async def test_limit_applies_after_dedup(dev_path: Path, dev: list[Question], tmp_path: Path) -> None:
    out = tmp_path / "five.parquet"
    report = await curate([dev_path, dev_path], out, CurateConfig(limit=5))
    assert [q.id for q in load_questions(out)] == [q.id for q in dev[:5]]
    assert report.counts["duplicates"] == 875 and report.counts["after_limit"] == 5


# ---------------------------------------------------------------- other inputs: CSV, JSONL, bad rows


def test_scan_csv_and_jsonl_report_bad_rows(tmp_path: Path) -> None:
    csv_path = tmp_path / "raw.csv"
    csv_path.write_text(
        "question,answers,source\n"
        'Who wrote Hamlet?,"[""Shakespeare"", ""William Shakespeare""]",lit\n'
        "Capital of France?,Paris<|answer_split|>paris,\n"
        "No gold here?,,geo\n"
        '"[Bracketed] answer?",[not json,geo\n',
        encoding="utf-8",
    )
    scan = scan_questions(csv_path)
    assert scan.rows == 4
    assert scan.questions == [
        Question("raw_0", "Who wrote Hamlet?", ("Shakespeare", "William Shakespeare"), "lit"),
        Question("raw_1", "Capital of France?", ("Paris", "paris"), ""),
        Question("raw_3", "[Bracketed] answer?", ("[not json",), "geo"),
    ]
    assert scan.bad_rows == [BadRow(f"{csv_path} row 2", "no answers (expected one of answers, answer, golden_answers or reward_model.ground_truth)")]
    jsonl = tmp_path / "raw.jsonl"
    jsonl.write_text('{"question": "q1?", "answer": "a"}\n{broken\n{"question": "q2?"}\n', encoding="utf-8")
    scan = scan_questions(jsonl)
    assert scan.rows == 3 and [q.question for q in scan.questions] == ["q1?"]
    assert [b.where for b in scan.bad_rows] == [f"{jsonl}: line 2", f"{jsonl}: line 3"]
    assert scan.bad_rows[0].reason.startswith("invalid JSON")


def test_scan_refuses_a_table_without_question_columns(tmp_path: Path) -> None:
    path = tmp_path / "wrong.csv"
    path.write_text("query,label\nq,a\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no question/answer columns.*found query, label"):
        scan_questions(path)


async def test_bad_rows_and_id_clashes_are_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    lines = [
        {"id": "x", "question": "First?", "answers": ["1"]},
        {"id": "x", "question": "Another question, same id?", "answers": ["2"]},
        {"question": "No answers?"},
        {"id": "y", "question": "first ?", "answers": ["one"], "source": "s"},  # same text as "First?" once normalised
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n", encoding="utf-8")
    out = tmp_path / "out.parquet"
    report = await curate([path], out, CurateConfig())
    assert load_questions(out) == [Question("x", "First?", ("1", "one"), "mixed")]  # source from the file stem
    assert report.counts["bad_rows"] == 2 and report.counts["id_clashes"] == 1 and report.counts["duplicates"] == 1
    saved = read_report(out)
    assert [b["where"] for b in saved["inputs"][0]["bad_rows"]] == [f"{path}: line 5", f"{path}: line 3"]
    assert saved["id_clashes"][0]["where"] == "x"
    with pytest.raises(InputError, match="unsupported file type"):
        await curate([tmp_path / "x.txt"], out, CurateConfig())


# ---------------------------------------------------------------- low-quality labeler


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ("<answer>time sensitive</answer>", "time_sensitive"),
        ("<think>maybe <answer>good</answer></think>\n<answer>Time-Sensitive</answer>", "time_sensitive"),
        ("<answer> Subjective. </answer>", "subjective"),
        ("<answer>harmful: if the question may cause harmful answers</answer>", "harmful"),
        ("<answer>**good**</answer>", "good"),
        ("reasoning...\n<answer>good", "good"),  # unclosed at the end
        ("<answer>good</answer> then <answer>harmful</answer>", "harmful"),  # the last tag wins
        ("<answer>goodness</answer>", None),
        ("The question is good.", None),
        ("<answer></answer>", None),
        ("", None),
    ],
)
def test_parse_label(reply: str, label: str | None) -> None:
    assert parse_label(reply) == label


def test_prompts_are_pinned() -> None:
    core = [
        "Please identify whether the given question is time-sensitive, subjective, or may cause harmful answers.",
        "- Time-sensitive: The answer to the question may change over time.",
        "- Harmful: The answer to the question may be harmful or offensive.",
        "- Subjective: The answer to the question may be subjective and not based on facts.",
        "Here is the question: <question>{question}</question>",
        "Wrap your answer in <answer> tags with one of the following values:",
        "- good: if the question is none of the above",
    ]
    assert all(line in LOW_QUALITY_PROMPT for line in core)
    assert LOW_QUALITY_PROMPT_SHA256 == "d2cfd824f26c8c978f1d465af79a5e8f9d29789c317a8b981ce99871e27231b6"
    assert PASS_AT_K_PROMPT.format(question="Q?") == (
        "Give a short answer to the following question. The answer should be in English.\n\nQuestion: Q?\n\nYour answer:"
    )
    assert PASS_AT_K_PROMPT_SHA256 == "3acd1f031689096a035e8f6894182a6ab4d61a754a90b51febad4378e46a4ef1"


async def test_labeler_against_a_loopback_server(dev_path: Path, dev: list[Question], tmp_path: Path, chat_server, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("CURATE_TEST_KEY", "sk-labeler-secret")
    q = [x.question for x in dev[:9]]
    calls: Counter[str] = Counter()

    def reply(prompt: str, body: dict) -> tuple[int, str]:
        question = labeled_question(prompt)
        calls[question] += 1
        return {
            q[0]: (200, "<think>Depends on the year.</think>\n<answer>time sensitive</answer>"),
            q[1]: (200, "<answer>subjective</answer>"),
            q[2]: (200, "<answer>Harmful</answer>"),
            q[3]: (200, "I refuse to use tags."),  # garbage every time
            q[4]: (500, "overloaded"),  # a dead endpoint for this one
            q[5]: (400, "content policy"),  # refused for good
            q[6]: (200, "<answer>good</answer>") if calls[question] > 1 else (200, "<answer>maybe</answer>"),
        }.get(question, (200, "<think>A fact.</think><answer>good</answer>"))

    server = chat_server(reply, delay=0.02)
    labeler = LabelerConfig(server.url, "judge-r1", api_key_env="CURATE_TEST_KEY", temperature=0.3, parse_attempts=3, concurrency=3, retry=FAST)
    out = tmp_path / "labeled.parquet"
    report = await curate([dev_path], out, CurateConfig(limit=9, labeler=labeler))

    assert [x.id for x in load_questions(out)] == [dev[i].id for i in (3, 4, 5, 6, 7, 8)]
    saved = read_report(out)
    labels = saved["labels"]
    assert labels["dropped"] == {"time_sensitive": [dev[0].id], "subjective": [dev[1].id], "harmful": [dev[2].id]}
    assert labels["unlabeled"] == [
        {"id": dev[3].id, "reason": "no known label in 3 replies"},
        {"id": dev[4].id, "reason": "endpoint http_500 after 3 tries"},
        {"id": dev[5].id, "reason": "endpoint refused: http_400"},
    ]
    assert labels["counts"] == {"time_sensitive": 1, "subjective": 1, "harmful": 1, "unlabeled": 3, "good": 3}
    assert labels["prompt_sha256"] == LOW_QUALITY_PROMPT_SHA256
    assert saved["config"]["labeler"]["model"] == "judge-r1"
    assert report.counts["dropped_by_label"] == 3 and report.counts["unlabeled"] == 3
    # bounded: garbage is asked parse_attempts times, a 500 retry.attempts times, a 400 once, a second try fixes q6
    assert (calls[q[3]], calls[q[4]], calls[q[5]], calls[q[6]], calls[q[0]]) == (3, 3, 1, 2, 1)
    assert server.peak <= 3
    assert server.prompts()[0] in {LOW_QUALITY_PROMPT.format(question=x) for x in q}
    assert {b["model"] for b in server.bodies} == {"judge-r1"} and {b["temperature"] for b in server.bodies} == {0.3}
    assert {h["authorization"] for h in server.headers} == {"Bearer sk-labeler-secret"}
    assert "sk-labeler-secret" not in report_path(out).read_text(encoding="utf-8")


async def test_labeler_endpoint_down_keeps_everything(dev_path: Path, tmp_path: Path, chat_server) -> None:  # noqa: ANN001
    server = chat_server(lambda prompt, body: (200, "<answer>good</answer>"))
    dead_url = server.url.replace("/v1", "/nowhere/v1")  # 404 for every request: refused, not retried
    out = tmp_path / "down.parquet"
    labeler = LabelerConfig(dead_url, "m", retry=FAST)
    report = await curate([dev_path], out, CurateConfig(limit=4, labeler=labeler))
    assert report.counts["written"] == 4 and report.counts["unlabeled"] == 4
    assert {r.reason for r in report.labels} == {"endpoint refused: http_404"}


# ---------------------------------------------------------------- contamination (pass@k)


@given(
    prefix=st.lists(st.sampled_from(["it", "is", "1", "10", "paris", "the", "new", "york"]), max_size=4),
    gold=st.lists(st.sampled_from(["paris", "1", "new", "york", "it"]), min_size=1, max_size=3),
    suffix=st.lists(st.sampled_from(["it", "1", "10", "paris", "city"]), max_size=4),
    seps=st.sampled_from([" ", ", ", ". ", " - ", "!  "]),
    upper=st.booleans(),
)
def test_contains_gold_matches_contiguous_normalised_tokens(prefix, gold, suffix, seps, upper) -> None:  # noqa: ANN001
    sample = seps.join(prefix + gold + suffix)
    gold_text = " ".join(gold)
    sample = sample.upper() if upper else sample
    assert contains_gold(sample, [gold_text]) == gold_text  # embedded gold always matches
    other = seps.join(prefix + suffix)
    tokens, needle = normalize(other).split(), gold_text.split()
    oracle = any(tokens[i : i + len(needle)] == needle for i in range(len(tokens) - len(needle) + 1))
    assert (contains_gold(other, [gold_text]) is not None) == oracle


@given(digits=st.lists(st.integers(10, 999), min_size=1, max_size=6), gold=st.integers(1, 9))
def test_contains_gold_never_matches_inside_a_token(digits: list[int], gold: int) -> None:
    assert contains_gold(" ".join(map(str, digits)), [str(gold)]) is None


@pytest.mark.parametrize(
    ("sample", "golds", "match"),
    [
        ("It is Paris.", ["paris"], "paris"),
        ("10", ["1"], None),
        ("The answer: New-York city", ["new york"], "new york"),
        ("Anything", ["", "...", "  "], None),  # golds that normalise to empty are ignored
        ("no, he was not", ["yes", "No"], "No"),
        ("", ["a"], None),
    ],
)
def test_contains_gold_table(sample: str, golds: list[str], match: str | None) -> None:
    assert contains_gold(sample, golds) == match


async def test_contamination_through_openai_policy(dev_path: Path, dev: list[Question], tmp_path: Path, chat_server) -> None:  # noqa: ANN001
    picked = dev[:6]
    by_text = {x.question: x for x in picked}
    calls: Counter[str] = Counter()

    def reply(prompt: str, body: dict) -> tuple[int, str]:
        q = by_text[asked_question(prompt)]
        calls[q.id] += 1
        if q is picked[0]:
            return 200, f"I believe it is {q.answers[0].upper()}."
        if q is picked[2]:
            return 200, q.answers[0] if calls[q.id] == 3 else "No idea."  # only the third sample knows
        if q is picked[4]:
            return 503, "down"
        return 200, "I do not know the answer."

    server = chat_server(reply)
    policy = OpenAIPolicy(server.url, "qwen-base", retry=FAST)
    out = tmp_path / "clean.parquet"
    cc = ContaminationConfig("qwen-base", k=4, temperature=0.7, max_new_tokens=20, concurrency=2)
    try:
        report = await curate([dev_path], out, CurateConfig(limit=6, contamination=cc, seed=3), base_model=policy)
    finally:
        await policy.aclose()
    assert [x.id for x in load_questions(out)] == [picked[i].id for i in (1, 3, 4, 5)]
    saved = read_report(out)["contamination"]
    assert saved["prompt_sha256"] == PASS_AT_K_PROMPT_SHA256
    assert saved["dropped"] == [
        {"id": picked[0].id, "samples": 1, "sample": f"I believe it is {picked[0].answers[0].upper()}.", "gold": picked[0].answers[0], "fault": ""},
        {"id": picked[2].id, "samples": 3, "sample": picked[2].answers[0], "gold": picked[2].answers[0], "fault": ""},
    ]
    assert [u["id"] for u in saved["unchecked"]] == [picked[4].id]
    assert report.counts["contaminated"] == 2 and report.counts["unchecked"] == 1
    # a clean question costs k samples, a hit stops sampling, a dead endpoint is retried boundedly then given up
    assert calls[picked[1].id] == 4 and calls[picked[0].id] == 1 and calls[picked[2].id] == 3 and calls[picked[4].id] == 3
    bodies = server.bodies
    assert {b["temperature"] for b in bodies} == {0.7} and {b["max_tokens"] for b in bodies} == {20}
    assert all(b["messages"] == [{"role": "user", "content": PASS_AT_K_PROMPT.format(question=asked_question(b["messages"][0]["content"]))}] for b in bodies)
    assert len({b["seed"] for b in bodies if asked_question(b["messages"][0]["content"]) == picked[1].question}) == 4


@pytest.mark.model
async def test_contamination_with_the_embedded_model(dev_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from researchrl.policy.hf import HFPolicy

    policy = HFPolicy.load("embedded", threads=1)  # one thread: the shared 2-core machine is 10-100x slower with 2
    out = tmp_path / "smol.parquet"
    cc = ContaminationConfig("embedded", k=2, max_new_tokens=16)
    try:
        report = await curate([dev_path], out, CurateConfig(limit=3, contamination=cc), base_model=policy)
    finally:
        await policy.aclose()
    assert len(report.checks) == 3 and not any(c.fault for c in report.checks)
    for c in report.checks:
        assert (c.gold is None and c.samples == 2) or (1 <= c.samples <= 2 and contains_gold(c.sample or "", [c.gold or ""]))
    assert report.counts["written"] == 3 - report.counts["contaminated"] == len(load_questions(out))
    assert read_report(out)["config"]["contamination"]["k"] == 2


# ---------------------------------------------------------------- mixing


def test_parse_mix() -> None:
    assert parse_mix("hotpotqa=3, 2wiki=3,nq=1,tq=1") == PAPER_MIX
    for bad in ("hotpotqa", "hotpotqa=0", "hotpotqa=1.5", "=3", "nq=1,nq=2", "nq=-1", ""):
        with pytest.raises(ValueError):
            parse_mix(bad)


@pytest.mark.parametrize(
    ("size", "available", "targets"),
    [
        (80, {"hotpotqa": 125, "2wiki": 125, "nq": 125, "tq": 125}, {"hotpotqa": 30, "2wiki": 30, "nq": 10, "tq": 10}),
        (10, {}, {"hotpotqa": 4, "2wiki": 4, "nq": 1, "tq": 1}),  # 3.75, 3.75, 1.25, 1.25: largest remainders first
        (None, {"hotpotqa": 125, "2wiki": 125, "nq": 125, "tq": 125}, {"hotpotqa": 123, "2wiki": 123, "nq": 41, "tq": 41}),
        (None, {"hotpotqa": 35077, "2wiki": 24923, "nq": 10000, "tq": 10000}, {"hotpotqa": 24921, "2wiki": 24921, "nq": 8307, "tq": 8307}),
        (None, {"hotpotqa": 10}, {"hotpotqa": 0, "2wiki": 0, "nq": 0, "tq": 0}),
    ],
)
def test_mix_targets(size: int | None, available: dict[str, int], targets: dict[str, int]) -> None:
    assert mix_targets(PAPER_MIX, available, size) == targets


async def test_mixing_ratios_are_exact_on_real_data(dev_path: Path, dev: list[Question], tmp_path: Path) -> None:
    out = tmp_path / "mix.parquet"
    report = await curate([dev_path], out, CurateConfig(mix=MixConfig(PAPER_MIX, size=80), seed=7))
    written = load_questions(out)
    assert Counter(q.source for q in written) == {"hotpotqa": 30, "2wiki": 30, "nq": 10, "tq": 10}
    order = [q.id for q in dev]
    assert [q.id for q in written] == sorted((q.id for q in written), key=order.index)  # input order kept
    assert report.not_in_mix == {"popqa": 125, "musique": 125, "Bamboogle": 125}
    saved = read_report(out)["mix"]
    assert saved["hotpotqa"] == {"available": 125, "target": 30, "taken": 30, "short": 0}
    # deterministic given the seed; another seed draws other questions
    again, other = tmp_path / "again.parquet", tmp_path / "other.parquet"
    await curate([dev_path], again, CurateConfig(mix=MixConfig(PAPER_MIX, size=80), seed=7))
    await curate([dev_path], other, CurateConfig(mix=MixConfig(PAPER_MIX, size=80), seed=8))
    assert load_questions(again) == written and load_questions(other) != written
    # no size: the largest mix with exact ratios
    largest = tmp_path / "largest.parquet"
    await curate([dev_path], largest, CurateConfig(mix=MixConfig(PAPER_MIX)))
    assert Counter(q.source for q in load_questions(largest)) == {"hotpotqa": 123, "2wiki": 123, "nq": 41, "tq": 41}


async def test_a_short_source_is_reported(dev_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "short.parquet"
    report = await curate([dev_path], out, CurateConfig(mix=MixConfig({"nq": 1, "tq": 1, "squad": 2}, size=400)))
    assert {s: (x.target, x.taken, x.short) for s, x in report.mix.items()} == {
        "nq": (100, 100, 0), "tq": (100, 100, 0), "squad": (200, 0, 200),
    }
    assert report.counts["written"] == 200
    assert read_report(out)["mix"]["squad"]["short"] == 200


async def test_map_bounded_keeps_order_and_bound() -> None:
    active, peak = 0, 0

    async def slow(x: int) -> int:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.001 * (x % 3))
        active -= 1
        return x * x

    assert await map_bounded(slow, list(range(20)), concurrency=4) == [x * x for x in range(20)]
    assert peak == 4
    assert await map_bounded(slow, [], concurrency=4) == []
