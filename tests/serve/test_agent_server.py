"""`researchrl serve agent` through the real `openai` client: answers, streams, batching, limits, errors.

Two servers: the real command in a subprocess with the embedded SmolLM2 (batching, the CLI path, bad inputs),
and the app in a thread driven by the scripted expert, which follows the protocol (full episodes with tool
calls, sources and an answer; admission limits, made deterministic by a policy that waits on a gate).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from researchrl.agent.loop import AgentConfig
from researchrl.data.load import load_questions
from researchrl.environment import EnvConfig
from researchrl.policy.base import Context, Sample, Sampling
from researchrl.policy.scripted import ScriptedPolicy, last_observation
from researchrl.policy.tokenizers import ByteChatTokenizer
from researchrl.report.html import write_report
from researchrl.rl.expert import answer_turn, first_urls, tool_turn
from researchrl.serve.agent import ServeConfig, build_app, service_factory

QUESTION = "Little Caesars and Pizza Hut were founded in the 1950s within a year of each other. Which was the first to serve pizza?"


class AppThread:
    """The ASGI app under uvicorn on a free loopback port, in a daemon thread; stopped by `stop`."""

    def __init__(self, app: object):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def expert_policy(shared_data: Path) -> ScriptedPolicy:
    """A one-hop scripted expert for any sandbox question: search, browse the top hit, answer the gold."""
    by_text = {q.question: q for q in load_questions(shared_data / "wiki" / "questions.jsonl")}

    def script(context: Context) -> str:
        asked = next(m.content for m in context.messages if m.role == "user")
        turn = sum(m.role == "assistant" for m in context.messages)
        if turn == 0:
            return tool_turn("Let me search.", "web_search", "query", [asked])
        urls = first_urls(last_observation(context))
        if turn == 1 and urls:
            return tool_turn("Let me read the top hit.", "browse_webpage", "url_list", urls[:1])
        return answer_turn("I found the answer.", by_text[asked].answers[0])

    return ScriptedPolicy(script, ByteChatTokenizer())


@pytest.fixture(scope="module")
def expert_server(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The app with the scripted expert on the offline sandbox, logging its episodes."""
    log = tmp_path_factory.mktemp("serve") / "served.jsonl"
    cfg = ServeConfig("researchrl-agent", max_concurrency=8, max_queue=8, log=log)
    thread = AppThread(build_app(service_factory(expert_policy(shared_data), EnvConfig(), AgentConfig(max_turns=4), cfg)))
    url = thread.start()
    yield url, log
    thread.stop()


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_answer_with_sources_usage_and_log(expert_server: tuple[str, Path]) -> None:
    url, log = expert_server
    reply = client(url).chat.completions.create(model="researchrl-agent", messages=[{"role": "user", "content": QUESTION}])
    choice = reply.choices[0]
    assert choice.message.content == "Pizza Hut"
    assert choice.finish_reason == "stop"
    extra = reply.model_extra["researchrl"]
    assert extra["termination"] == "answer"
    assert [c["name"] for c in extra["tool_calls"]] == ["web_search", "browse_webpage"]
    read = extra["tool_calls"][1]["arguments"]["url_list"][0]
    assert extra["sources"] == [read] and "/wiki/" in read
    assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > reply.usage.completion_tokens
    record = json.loads(log.read_text().splitlines()[-1])  # eval's record shape, so `researchrl report` shows it
    assert record["question"] == QUESTION and record["answer"] == "Pizza Hut" and record["sources"] == [read]
    assert record["request_id"] == reply.id and record["source"] == "serve"
    page = write_report(log).read_text()  # researchrl report FILE
    assert page.count('<details class="traj"') == 1 and "Little Caesars" in page and "browse_webpage" in page


def test_stream_sends_each_turn_as_it_happens(expert_server: tuple[str, Path]) -> None:
    url, _ = expert_server
    stream = client(url).chat.completions.create(
        model="researchrl-agent", messages=[{"role": "user", "content": QUESTION}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    events = [c.model_extra["researchrl"]["event"] for c in chunks if c.model_extra.get("researchrl")]
    assert events == ["think", "tool_call", "observation", "think", "tool_call", "observation", "think", "answer", "done"]
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    assert "→ web_search" in reasoning and "→ browse_webpage" in reasoning
    assert re.search(r"← \d+ results for", reasoning) and re.search(r"← http://\S+: \d+ facts", reasoning)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "Pizza Hut"
    done = next(c for c in chunks if c.model_extra.get("researchrl", {}).get("event") == "done")
    assert done.choices[0].finish_reason == "stop" and done.model_extra["researchrl"]["sources"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_models_and_health(expert_server: tuple[str, Path]) -> None:
    url, _ = expert_server
    assert [m.id for m in client(url).models.list()] == ["researchrl-agent"]
    health = httpx.get(f"{url}/health", timeout=10).json()
    assert health["status"] == "ok" and health["served"] >= 1 and health["admitted"] == 0


class GatedPolicy:
    """A policy whose turns wait until the test opens the gate: requests pile up exactly where the test wants."""

    def __init__(self) -> None:
        self.tokenizer = ByteChatTokenizer()
        self.gate = threading.Event()
        self.waiting = 0

    async def generate(self, context: Context, sampling: Sampling) -> Sample:
        self.waiting += 1
        while not self.gate.is_set():
            await asyncio.sleep(0.01)
        ids = self.tokenizer.encode("\nok\n</think>\n<answer>ok</answer>", trusted=True)
        return Sample(ids, [0.0] * len(ids), self.tokenizer.decode(ids), "eos")

    async def aclose(self) -> None:
        """Nothing to release."""


def test_full_queue_is_429_with_retry_after_and_the_rest_are_answered() -> None:
    policy = GatedPolicy()
    cfg = ServeConfig("researchrl-agent", max_concurrency=1, max_queue=1)
    thread = AppThread(build_app(service_factory(policy, EnvConfig(), AgentConfig(max_turns=2), cfg)))
    url = thread.start()
    try:
        body = {"model": "researchrl-agent", "messages": [{"role": "user", "content": "q"}]}
        with httpx.Client(timeout=60) as http:
            results: list[httpx.Response] = []
            first = [threading.Thread(target=lambda: results.append(http.post(f"{url}/v1/chat/completions", json=body)))
                     for _ in range(2)]
            for t in first:
                t.start()
            deadline = time.monotonic() + 20
            while httpx.get(f"{url}/health").json()["admitted"] < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            with pytest.raises(openai.RateLimitError) as refused:  # one running, one queued: the third is refused
                client(url).chat.completions.create(**body)
            assert refused.value.response.headers["retry-after"].isdigit()
            assert refused.value.body["code"] == "queue_full"
            policy.gate.set()
            for t in first:
                t.join(timeout=30)
        assert [r.status_code for r in results] == [200, 200]
        assert all(r.json()["choices"][0]["message"]["content"] == "ok" for r in results)
        assert client(url).chat.completions.create(**body).choices[0].message.content == "ok"  # room again
    finally:
        thread.stop()


# --- the real command, the embedded model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`researchrl serve agent --port 0` with the embedded model, short turns; its URL read from its first line."""
    pytest.importorskip("transformers")
    log = tmp_path_factory.mktemp("served") / "log.jsonl"
    command = [sys.executable, "-m", "researchrl.cli", "serve", "agent", "--port", "0", "--max-turns", "2",
               "--max-new-tokens", "24", "--max-concurrency", "32", "--threads", "2", "--token-env", "SERVE_TEST_TOKEN",
               "--log", str(log)]
    env = {**os.environ, "SERVE_TEST_TOKEN": "serve-token-0123456789", "COLUMNS": "250"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert found, f"no URL in {line!r}; stderr: {process.stderr.read() if process.poll() is not None else ''}"  # type: ignore[union-attr]
        url = found.group(0)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()  # type: ignore[union-attr]
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            _, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        assert "serve-token-0123456789" not in err


def authed(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="serve-token-0123456789", max_retries=0, timeout=300)


@pytest.mark.model
def test_embedded_model_answers_and_streams_through_the_command(served: str) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(served).models.list()  # no token
    reply = authed(served).chat.completions.create(model="researchrl-agent", messages=[
        {"role": "system", "content": "ignored"}, {"role": "user", "content": "If Gallu is a demon Lilu is what?"}])
    extra = reply.model_extra["researchrl"]
    assert extra["termination"] in ("answer", "format_error", "turn_budget")
    assert reply.usage.completion_tokens > 0 and isinstance(reply.choices[0].message.content, str)
    chunks = list(authed(served).chat.completions.create(
        model="researchrl-agent", messages=[{"role": "user", "content": "Who founded Little Caesars?"}], stream=True))
    events = [c.model_extra["researchrl"]["event"] for c in chunks if c.model_extra.get("researchrl")]
    assert events[-1] == "done" and len(events) >= 2


@pytest.mark.model
async def test_32_concurrent_requests_share_the_policy_batches(served: str, shared_data: Path) -> None:
    questions = [q.question for q in load_questions(shared_data / "wiki" / "questions.jsonl")][:32]
    before = httpx.get(f"{served}/health").json()
    async with openai.AsyncOpenAI(base_url=f"{served}/v1", api_key="serve-token-0123456789", max_retries=0,
                                  timeout=600) as aclient:
        replies = await asyncio.gather(*(
            aclient.chat.completions.create(model="researchrl-agent", messages=[{"role": "user", "content": q}])
            for q in questions))
    assert len(replies) == 32 and all(r.model_extra["researchrl"]["turns"] >= 1 for r in replies)
    after = httpx.get(f"{served}/health").json()
    assert after["served"] - before["served"] == 32
    sizes = {int(k): after["policy_batch_sizes"][k] - before["policy_batch_sizes"].get(k, 0)
             for k in after["policy_batch_sizes"]}
    turns = sum(r.model_extra["researchrl"]["turns"] for r in replies)
    calls = sum(sizes.values())
    assert sum(k * v for k, v in sizes.items()) == turns  # every turn went through a batch
    assert max(k for k, v in sizes.items() if v) >= 8 and calls <= turns / 4, sizes  # ... shared with many others


@pytest.mark.model
def test_bad_requests_are_openai_errors_and_the_server_stays_healthy(served: str) -> None:
    api = authed(served)
    bad = [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "only a system message"}]}, "messages"),
        ({"messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "q"}], "temperature": "hot"}, "temperature"),
        ({"messages": [{"role": "user", "content": "q"}], "extra_body": {"max_turns": 99}}, "max_turns"),
        ({"messages": [{"role": "user", "content": "q" * 9000}]}, "messages"),
    ]
    for body, param in bad:
        with pytest.raises(openai.BadRequestError) as err:
            api.chat.completions.create(model="researchrl-agent", **body)  # type: ignore[arg-type]
        assert err.value.body["type"] == "invalid_request_error" and err.value.body["param"] == param
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "q"}])
    headers = {"Authorization": "Bearer serve-token-0123456789", "Content-Type": "application/json"}
    broken = httpx.post(f"{served}/v1/chat/completions", content=b"{not json", headers=headers)
    assert broken.status_code == 400 and broken.json()["error"]["message"] == "the body is not valid JSON"
    huge = httpx.post(f"{served}/v1/chat/completions", content=b" " * 2_000_000, headers=headers)
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "body_too_large"
    assert httpx.get(f"{served}/health").json()["status"] == "ok"
    reply = api.chat.completions.create(model="researchrl-agent", messages=[{"role": "user", "content": "Who is Lilu?"}])
    assert reply.model_extra["researchrl"]["turns"] >= 1  # still answering


def test_each_request_has_its_own_web_budget() -> None:
    """A paid search costs $0.001 and a request may spend $0.001: its second search is refused, the next request's first is not."""

    def twice(context: Context) -> str:
        turn = sum(m.role == "assistant" for m in context.messages)
        asked = next(m.content for m in context.messages if m.role == "user")
        if turn < 2:
            return tool_turn("Search.", "web_search", "query", [f"{asked} {turn}"])
        return "\nDone.\n</think>\n<answer>done</answer>"

    env = EnvConfig(prices=(("sandbox", 0.001),))
    cfg = ServeConfig("researchrl-agent", request_budget_usd=0.001)
    thread = AppThread(build_app(service_factory(ScriptedPolicy(twice, ByteChatTokenizer()), env, AgentConfig(max_turns=4), cfg)))
    url = thread.start()
    try:
        for question in ("Lilu", "Gallu"):
            reply = client(url).chat.completions.create(model="researchrl-agent", messages=[{"role": "user", "content": question}])
            extra = reply.model_extra["researchrl"]
            assert extra["tool_errors"] == ["search_budget_exhausted"] and extra["web_cost_usd"] == 0.001
            assert reply.choices[0].message.content == "done"
        assert httpx.get(f"{url}/health").json()["web_cost_usd"] == pytest.approx(0.002)
    finally:
        thread.stop()


def test_an_episode_past_its_time_limit_is_a_504_and_frees_its_slot() -> None:
    policy = GatedPolicy()  # never opened: every turn waits
    cfg = ServeConfig("researchrl-agent", max_concurrency=1, max_queue=0, max_seconds=1.0)
    thread = AppThread(build_app(service_factory(policy, EnvConfig(), AgentConfig(max_turns=2), cfg)))
    url = thread.start()
    try:
        body = {"model": "researchrl-agent", "messages": [{"role": "user", "content": "q"}]}
        for _ in range(2):  # the slot came back: the second is a 504 too, not a 429
            answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
            assert answer.status_code == 504 and answer.json()["error"]["code"] == "episode_timeout"
        health = httpx.get(f"{url}/health").json()
        assert health["failed"] == 2 and health["admitted"] == 0 and health["running"] == 0
    finally:
        thread.stop()
