"""`researchrl eval` on the command line, in process: the reader and judge flags reach the sandbox episode and the wire."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import CliRunner

from researchrl.cli import app
from researchrl.policy.scripted import ScriptedPolicy
from researchrl.policy.tokenizers import ByteChatTokenizer
from tests.agent.test_episode_sandbox import expert
from tests.loopback import chat_completion, serve_app

QUESTION_ID = "musique_2hop__205146_62031"  # gold "Victoria Falls": the answer below is no exact match, so the judge is asked
ANSWER = "the Victoria waterfall"
READ = "<extracted_info>Victoria Falls is a waterfall.</extracted_info><page_down>no</page_down>"
VERDICT = '{"rationale": "the same falls", "judgement": "correct"}'


@pytest.fixture
def data(tmp_path: Path, shared_data: Path) -> Path:
    rows = [json.loads(line) for line in (shared_data / "wiki" / "questions.jsonl").read_text().splitlines()]
    path = tmp_path / "one.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows if row["id"] == QUESTION_ID))
    return path


@pytest.fixture
def chat_site() -> Iterator[tuple[str, list[dict]]]:
    """A loopback chat API answering the reader model with tags and any other model with a verdict; the bodies it saw."""
    bodies: list[dict] = []

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        bodies.append(body)
        return JSONResponse(chat_completion(READ if body["model"] == "reader-x" else VERDICT, body["model"]))

    with serve_app(Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])) as url:
        yield f"{url}/v1", bodies


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The expert (search, browse the first hit, answer) stands in for the policy `eval` would load."""
    monkeypatch.setattr("researchrl.cli._policy", lambda *args, **kwargs: ScriptedPolicy(expert(ANSWER), ByteChatTokenizer()))


@pytest.mark.parametrize("command", [["eval"], ["ask"], ["serve", "agent"]])
def test_the_reader_flags_are_listed(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in ("--reader ", "--reader-url", "--reader-model", "--reader-max-tokens"):
        assert flag in result.stdout, flag
    assert ("--judge-max-tokens" in result.stdout) == (command == ["eval"])


def test_eval_reads_and_judges_on_the_endpoints_its_flags_name(data: Path, tmp_path: Path, chat_site, scripted) -> None:  # noqa: ANN001
    url, bodies = chat_site
    out = tmp_path / "out"
    args = ["eval", "--data", str(data), "--out", str(out), "--max-turns", "4", "--reader", "llm", "--reader-url", url,
            "--reader-model", "reader-x", "--reader-max-tokens", "64", "--judge-url", url, "--judge-model", "judge-x",
            "--judge-max-tokens", "32"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, (result.exception, result.stderr[-2000:])
    reads = [body for body in bodies if body["model"] == "reader-x"]
    verdicts = [body for body in bodies if body["model"] == "judge-x"]
    assert reads and all(body["max_tokens"] == 64 for body in reads)
    assert len(verdicts) == 1 and verdicts[0]["max_tokens"] == 32
    (record,) = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert record["tool_calls"] == ["web_search", "browse_webpage"] and record["tool_errors"] == [] and record["mbe"] == 1.0
    saved = json.loads((out / "eval_config.json").read_text())
    assert (saved["env"]["reader"], saved["env"]["reader_url"], saved["env"]["reader_max_tokens"]) == ("llm", url, 64)
    assert (saved["policy_endpoint"], saved["policy_mode"]) == (None, "local")


def test_eval_with_the_llm_reader_and_no_url_reads_with_the_sandbox_reader(data: Path, tmp_path: Path, scripted) -> None:  # noqa: ANN001
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", "--data", str(data), "--out", str(out), "--reader", "llm"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, (result.exception, result.stderr[-2000:])
    reads = [row for row in json.loads((out / "web.json").read_text())["run"] if row["kind"] == "read"]
    assert [(row["provider"], row["calls"]) for row in reads] == [("reader:sandbox-reader", 1)]
    (record,) = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert record["tool_calls"] == ["web_search", "browse_webpage"] and record["tool_errors"] == []
