"""The OpenAI-compatible policy against a loopback server speaking the chat and completions APIs."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from researchrl.agent.loop import AgentConfig, run_episode
from researchrl.policy.base import Context, Message, Sampling
from researchrl.display import _tokens
from researchrl.policy.openai import InexactTokens, OpenAIPolicy, PolicyUnavailable
from researchrl.records import trajectory_record
from researchrl.tools.base import Toolset
from researchrl.types import Question
from researchrl.web.retry import RetryPolicy
from tests.loopback import serve_app

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)


class Server:
    """Answers chat and completion requests from a queue of (status, body) and records what it received."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, dict]] = []
        self.received: list[tuple[str, dict, dict]] = []

    async def handle(self, request: Request) -> JSONResponse:
        headers = dict(request.headers)
        self.received.append((request.url.path, await request.json(), headers))
        status, body = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        echoed = json.dumps(body).replace("{authorization}", headers.get("authorization", ""))  # a server echoing the key
        return JSONResponse(json.loads(echoed), status_code=status)


def chat_reply(content: str, finish: str = "stop") -> dict:
    return {
        "id": "c1", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
    }


@pytest.fixture
def server():  # noqa: ANN201
    fake = Server()
    app = Starlette(routes=[Route("/v1/chat/completions", fake.handle, methods=["POST"]),
                            Route("/v1/completions", fake.handle, methods=["POST"])])
    with serve_app(app) as url:
        fake.url = url + "/v1"
        yield fake


async def test_chat_mode_runs_an_episode_and_sends_the_key_from_env(server, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("MY_POLICY_KEY", "sk-test-123")
    server.replies = [(200, chat_reply("<think>easy</think>\n<answer>a spirit</answer>"))]
    policy = OpenAIPolicy(server.url, "served-model", api_key_env="MY_POLICY_KEY", retry=FAST)
    trajectory = await run_episode(Question("q", "If Gallu is a demon Lilu is what?", ("a spirit",)), policy, Toolset([]), AgentConfig())
    await policy.aclose()
    assert trajectory.termination == "answer" and trajectory.reward.reward == 1.0
    path, body, headers = server.received[0]
    assert path == "/v1/chat/completions" and body["model"] == "served-model"
    assert headers["authorization"] == "Bearer sk-test-123"
    # the protocol's prefill goes as a final assistant message the server is asked to continue
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant"]
    assert body["messages"][-1]["content"] == "<think>" and body["continue_final_message"] is True
    assert body["add_generation_prompt"] is False
    assert "# Tools" in body["messages"][0]["content"]
    # byte-level ids keep the mask invariant even for text-only endpoints
    assert sum(trajectory.mask) == len(trajectory.turns[0].token_ids)


async def test_chat_mode_does_not_double_an_echoed_prefill(server) -> None:  # noqa: ANN001
    server.replies = [(200, chat_reply("<think>x</think><answer>y</answer>"))]
    policy = OpenAIPolicy(server.url, "m", retry=FAST)
    sample = await policy.generate(Context([], [Message("user", "q")], "<think>"), Sampling())
    await policy.aclose()
    assert sample.text == "x</think><answer>y</answer>" and sample.finish_reason == "eos"


async def test_completions_mode_is_token_exact(server, smol_tokenizer) -> None:  # noqa: ANN001
    sampled = smol_tokenizer.encode("x</think><answer>y</answer>", trusted=True)
    server.replies = [(200, {
        "id": "c", "object": "text_completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "text": "x</think><answer>y</answer>", "finish_reason": "stop", "stop_reason": None,
                     "logprobs": {"tokens": [f"token_id:{i}" for i in sampled], "token_logprobs": [-0.5] * len(sampled),
                                  "top_logprobs": None, "text_offset": None}}],
    })]
    policy = OpenAIPolicy(server.url, "m", tokenizer="embedded", retry=FAST)
    sample = await policy.generate(Context([1, 2, 3], [], "<think>"), Sampling(max_new_tokens=50))
    await policy.aclose()
    _, body, _ = server.received[0]
    assert body["prompt"] == [1, 2, 3] and body["logprobs"] == 1 and body["return_tokens_as_token_ids"] is True
    assert sample.token_ids == sampled + [smol_tokenizer.eos_token_id]
    assert sample.logprobs == [-0.5] * len(sampled) + [None]


async def test_rate_limit_is_retried_then_succeeds(server) -> None:  # noqa: ANN001
    server.replies = [(429, {"error": {"message": "slow down"}}), (200, chat_reply("<think>t</think><answer>a</answer>"))]
    policy = OpenAIPolicy(server.url, "m", retry=FAST)
    sample = await policy.generate(Context([], [Message("user", "q")], "<think>"), Sampling())
    await policy.aclose()
    assert sample.text.endswith("<answer>a</answer>") and len(server.received) == 2


async def test_persistent_500_gives_up_after_the_bound(server) -> None:  # noqa: ANN001
    server.replies = [(500, {"error": {"message": "boom"}})]
    policy = OpenAIPolicy(server.url, "m", retry=FAST)
    with pytest.raises(PolicyUnavailable, match="after 3 tries"):
        await policy.generate(Context([], [Message("user", "q")], ""), Sampling())
    await policy.aclose()
    assert len(server.received) == 3


async def test_auth_error_is_not_retried_and_hides_the_key(server, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-999")
    server.replies = [(401, {"error": {"message": "bad key"}})]
    policy = OpenAIPolicy(server.url, "m", retry=FAST)
    with pytest.raises(PolicyUnavailable, match="HTTP 401") as info:
        await policy.generate(Context([], [Message("user", "q")], ""), Sampling())
    await policy.aclose()
    assert len(server.received) == 1 and "sk-secret-999" not in str(info.value)


def fragments(secret: str, size: int = 8) -> list[str]:
    """Every `size`-character piece of the secret: none may survive anywhere in an error."""
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


KEY_IN_FULL = "sk-proj-Zq8x0123456789abcdefghijklmnopqrstuv"
KEY_UNSHAPED = "live0123456789ABCDEFGHIJKLMN"  # no sk- prefix: only the key actually sent can redact it


@pytest.mark.parametrize("key", [KEY_IN_FULL, KEY_UNSHAPED])
@pytest.mark.parametrize("template", ["Incorrect API key provided: {authorization}", "{key} is not a valid key"])
@pytest.mark.parametrize("straddle", [False, True])
@pytest.mark.parametrize("status", [401, 500])
async def test_a_provider_echoing_the_key_never_puts_it_in_the_error(
    server, monkeypatch, key: str, template: str, straddle: bool, status: int  # noqa: ANN001
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", key)
    message = template.replace("{key}", key)
    if straddle:  # the echoed key starts 12 characters before the 200-character cut
        lead = message.replace("{authorization}", f"Bearer {key}").index(key)
        message = "x" * (200 - 12 - lead) + message
        sent = message.replace("{authorization}", f"Bearer {key}")
        assert key[:12] in sent[:200] and key not in sent[:200], "the unredacted cut would hold part of the key"
    server.replies = [(status, {"error": {"message": message, "type": "invalid_request_error"}})]
    policy = OpenAIPolicy(server.url, "m", retry=FAST)
    with pytest.raises(PolicyUnavailable) as info:
        await policy.generate(Context([], [Message("user", "q")], ""), Sampling())
    await policy.aclose()
    assert server.received[0][2]["authorization"] == f"Bearer {key}"  # the server did see (and echo) it
    assert f"HTTP {status}" in str(info.value) and "[redacted]" in str(info.value)
    text = f"{info.value} {info.value!r} {info.value.args}"
    assert not [piece for piece in fragments(key) if piece in text], text
    assert info.value.__cause__ is None and info.value.__context__ is None


async def test_unreachable_endpoint_fails_fast_with_one_message() -> None:
    policy = OpenAIPolicy("http://127.0.0.1:9/v1", "m", timeout=1.0, retry=FAST)
    start = time.monotonic()
    with pytest.raises(PolicyUnavailable, match="cannot connect"):
        await asyncio.wait_for(policy.generate(Context([], [Message("user", "q")], ""), Sampling()), 10)
    await policy.aclose()
    assert time.monotonic() - start < 5


async def test_rollout_vllm_path_is_token_exact_against_the_servers_completions_api(server, smol_tokenizer, tmp_path) -> None:  # noqa: ANN001
    """vLLM answers /v1/completions with `token_ids` (EOS kept); a loopback stand-in speaks the same."""
    from researchrl.rl.rollout import vllm_policy
    from researchrl.rl.vllm_sync import Endpoint

    sampled = smol_tokenizer.encode("x</think>\n<answer>a spirit</answer>", trusted=True) + [smol_tokenizer.eos_token_id]
    server.replies = [(200, {
        "id": "c", "object": "text_completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "text": "x</think>\n<answer>a spirit</answer>", "finish_reason": "stop", "stop_reason": None,
                     "token_ids": sampled, "prompt_token_ids": [1],
                     "logprobs": {"tokens": [f"token_id:{i}" for i in sampled], "token_logprobs": [-0.25] * len(sampled),
                                  "top_logprobs": None, "text_offset": None}}],
    })]
    policy = vllm_policy(Endpoint(server.url.removesuffix("/v1"), "m", tmp_path), smol_tokenizer.hf)
    trajectory = await run_episode(Question("q", "If Gallu is a demon Lilu is what?", ("a spirit",)), policy, Toolset([]), AgentConfig())
    await policy.aclose()
    _, body, _ = server.received[0]
    assert body["prompt"] == trajectory.prompt_ids and body["return_token_ids"] is True
    assert body["include_stop_str_in_output"] is True and body["model"] == "m"
    assert trajectory.completion_ids == sampled and trajectory.mask == [1] * len(sampled)  # EOS not doubled
    assert trajectory.logprobs == [-0.25] * len(sampled) and trajectory.reward.reward == 1.0


def models_route(max_model_len: int) -> Route:
    """vLLM's /v1/models, which names the served context length."""
    async def models(_request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "m", "object": "model", "max_model_len": max_model_len}]})

    return Route("/v1/models", models)


def completion_reply(ids: list[int], text: str) -> dict:
    return {"id": "c", "object": "text_completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "text": text, "finish_reason": "length", "token_ids": ids,
                         "logprobs": {"tokens": [f"token_id:{i}" for i in ids], "token_logprobs": [-0.1] * len(ids)}}]}


async def test_the_servers_context_size_caps_each_turn_and_a_full_context_ends_the_episode(smol_tokenizer) -> None:  # noqa: ANN001
    fake = Server()
    ids = smol_tokenizer.encode("hello", trusted=True)
    fake.replies = [(200, completion_reply(ids, "hello"))]
    app = Starlette(routes=[Route("/v1/completions", fake.handle, methods=["POST"]), models_route(40)])
    with serve_app(app) as url:
        policy = OpenAIPolicy(url + "/v1", "m", tokenizer="embedded", retry=FAST)
        await policy.generate(Context(list(range(30)), [], ""), Sampling(max_new_tokens=2000))
        assert policy.context_limit == 40 and fake.received[0][1]["max_tokens"] == 10
        trajectory = await run_episode(Question("q", "a question far longer than forty tokens " * 8, ("x",)), policy,
                                       Toolset([]), AgentConfig())
        await policy.aclose()
    assert len(fake.received) == 1  # the full context was refused here, not sent
    assert trajectory.termination == "context_budget" and trajectory.turns == [] and trajectory.reward.reward == -1.0


async def test_completions_without_ids_are_reencoded_with_one_warning_and_refused_for_training(server, caplog) -> None:  # noqa: ANN001
    reply = {"id": "c", "object": "text_completion", "created": 0, "model": "m",
             "choices": [{"index": 0, "text": "x</think><answer>y</answer>", "finish_reason": "stop",
                          "logprobs": {"tokens": ["x", "</", "think"], "token_logprobs": [-1.0, -1.0, -1.0]}}]}
    server.replies = [(200, reply)]
    policy = OpenAIPolicy(server.url, "m", tokenizer="embedded", retry=FAST, context_tokens=4096)
    with caplog.at_level("WARNING"):
        first = await policy.generate(Context([1], [], "<think>"), Sampling())
        await policy.generate(Context([1], [], "<think>"), Sampling())
    await policy.aclose()
    assert not first.exact and first.logprobs is None
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "no sampled token ids" in caplog.records[0].getMessage() and len(caplog.records) == 1
    strict = OpenAIPolicy(server.url, "m", tokenizer="embedded", retry=FAST, context_tokens=4096, require_exact=True)
    with pytest.raises(InexactTokens, match="returned no sampled token ids .*logprobs.tokens as token strings"):
        await strict.generate(Context([1], [], "<think>"), Sampling())
    await strict.aclose()


async def test_chat_counts_tokens_by_the_servers_usage_never_by_bytes(server) -> None:  # noqa: ANN001
    reply = chat_reply("<think>easy</think>\n<answer>a spirit</answer>")
    reply["usage"] = {"prompt_tokens": 687, "completion_tokens": 12, "total_tokens": 699}
    server.replies = [(200, reply)]
    policy = OpenAIPolicy(server.url, "m", retry=FAST)
    trajectory = await run_episode(Question("q", "If Gallu is a demon Lilu is what?", ("a spirit",)), policy, Toolset([]), AgentConfig())
    await policy.aclose()
    record = trajectory_record(trajectory)
    assert trajectory.token_counts() == (687, 12, 12)
    assert (record["prompt_tokens"], record["completion_tokens"], record["sampled_tokens"]) == (687, 12, 12)
    assert record["exact_tokens"] is False and record["transcript_bytes"] > 687
    assert "687 prompt + 12 completion (12 sampled, by the server's usage)" in _tokens(trajectory)


async def test_chat_without_usage_says_tokens_are_unknown(server) -> None:  # noqa: ANN001
    server.replies = [(200, chat_reply("<think>easy</think>\n<answer>a spirit</answer>"))]
    policy = OpenAIPolicy(server.url, "m", retry=FAST)
    trajectory = await run_episode(Question("q", "Lilu?", ("a spirit",)), policy, Toolset([]), AgentConfig())
    await policy.aclose()
    assert trajectory.token_counts() is None and trajectory_record(trajectory)["prompt_tokens"] is None
    assert _tokens(trajectory).startswith("not reported by the server")


async def test_a_server_that_cannot_continue_a_message_gets_the_prefill_dropped_once_with_a_warning(server, caplog) -> None:  # noqa: ANN001
    refusal = {"error": {"message": "Unrecognized request argument supplied: continue_final_message", "type": "invalid_request_error"}}
    server.replies = [(400, refusal), (200, chat_reply("<think>t</think><answer>a</answer>")),
                      (200, chat_reply("<think>t</think><answer>b</answer>"))]
    policy = OpenAIPolicy(server.url, "m", retry=FAST)
    with caplog.at_level("WARNING"):
        first = await policy.generate(Context([], [Message("user", "q")], "<think>"), Sampling())
        await policy.generate(Context([], [Message("user", "q")], "<think>"), Sampling())
    await policy.aclose()
    assert first.text == "t</think><answer>a</answer>"
    bodies = [body for _, body, _ in server.received]
    assert bodies[0]["messages"][-1] == {"role": "assistant", "content": "<think>"}
    assert [m["role"] for m in bodies[1]["messages"]] == ["user"] and "continue_final_message" not in bodies[1]
    assert [m["role"] for m in bodies[2]["messages"]] == ["user"]
    assert len(caplog.records) == 1 and "cannot continue an assistant message" in caplog.records[0].getMessage()
