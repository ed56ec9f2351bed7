"""The policy client against real servers' replies (llama.cpp's llama-server and vLLM's CPU build, captured by
scripts/capture_servers.py; tests/fixtures/servers/CAPTURED.md says how), replayed by a loopback server."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from researchrl.agent.loop import AgentConfig, run_episode
from researchrl.policy.base import Context, ContextOverflow, Message, Sampling
from researchrl.policy.openai import OpenAIPolicy, PolicyUnavailable
from researchrl.policy.wire import context_size, is_context_overflow, sampled_tokens
from researchrl.tools.base import Toolset
from researchrl.types import Question
from researchrl.web.retry import RetryPolicy
from tests.loopback import serve_app
from tests.policy.server_fixtures import SERVERS, captured

FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)
KINDS = sorted(p.name for p in SERVERS.iterdir() if p.is_dir() and p.name in ("llamacpp", "vllm"))


def having(*names: str, refused: bool = False) -> list[Any]:
    """(kind, name) pairs for every server that has a capture of each name (refused: only where it answered ≥ 400)."""
    return [pytest.param(kind, name, id=f"{kind}-{name}") for kind in KINDS for name in names
            if (SERVERS / kind / f"{name}.json").exists() and (not refused or captured(kind, name)["status"] >= 400)]


class Replay:
    """Answers each path with a captured exchange and keeps the bodies it was sent."""

    def __init__(self, replies: dict[str, dict[str, Any]]):
        self.replies = replies
        self.received: list[tuple[str, Any]] = []

    async def handle(self, request: Request) -> JSONResponse:
        body = await request.json() if request.method == "POST" else None
        self.received.append((request.url.path, body))
        exchange = self.replies.get(request.url.path)
        if exchange is None:
            return JSONResponse({"error": {"message": "not found"}}, status_code=404)
        return JSONResponse(exchange["body"], status_code=exchange["status"])

    def sent(self, path: str) -> Any:
        """The first body POSTed to `path` (the context-size probes before it are GETs)."""
        return next(body for where, body in self.received if where == path and body is not None)

    def app(self) -> Starlette:
        paths = ("/v1/completions", "/v1/chat/completions", "/v1/models", "/props", "/completion")
        return Starlette(routes=[Route(p, self.handle, methods=["GET", "POST"]) for p in paths])


def servers_ids(kind: str, choice: dict[str, Any]) -> tuple[list[int], list[float]]:
    """The sampled ids and logprobs exactly where each server puts them (read here independently of the client)."""
    if kind == "vllm":
        return choice["token_ids"], choice["logprobs"]["token_logprobs"]
    content = choice["logprobs"]["content"]
    return [c["id"] for c in content], [c["logprob"] for c in content]


@pytest.mark.parametrize(("kind", "name"), having("completions_ids_logprobs", "completions_ids_logprobs_sampled", "completions_stop"))
# completions_stop on llama.cpp: its OpenAI-style reply lists the ids before the stop word (the policy goes native there)
async def test_sampled_ids_and_logprobs_are_the_servers_own(kind: str, name: str, smol_tokenizer) -> None:  # noqa: ANN001
    exchange = captured(kind, name)
    request, choice = exchange["request"]["json"], exchange["body"]["choices"][0]
    replay = Replay({"/v1/completions": exchange})
    with serve_app(replay.app()) as url:
        policy = OpenAIPolicy(url + "/v1", "policy", tokenizer="embedded", retry=FAST, context_tokens=2048)
        sample = await policy.generate(Context(request["prompt"], [], ""),
                                       Sampling(max_new_tokens=request["max_tokens"], stop=tuple(request.get("stop") or ())))
        await policy.aclose()
    ids, logprobs = servers_ids(kind, choice)
    assert sample.exact and sample.token_ids[: len(ids)] == ids
    assert sample.token_ids[len(ids) :] in ([], [smol_tokenizer.eos_token_id])  # an EOS the server did not list
    assert sample.logprobs[: len(ids)] == logprobs
    assert smol_tokenizer.decode(ids) == sample.text
    sent = replay.sent("/v1/completions")
    assert sent["prompt"] == request["prompt"] and sent["logprobs"] == 1


async def test_vllm_keeps_a_stop_string_in_the_text_and_ids() -> None:
    exchange = captured("vllm", "completions_stop")
    stop = tuple(exchange["request"]["json"]["stop"])
    with serve_app(Replay({"/v1/completions": exchange}).app()) as url:
        policy = OpenAIPolicy(url + "/v1", "policy", tokenizer="embedded", retry=FAST, context_tokens=2048)
        sample = await policy.generate(Context(exchange["request"]["json"]["prompt"], [], ""), Sampling(stop=stop))
        await policy.aclose()
    assert sample.finish_reason == "stop" and sample.text.endswith(stop[0])


async def test_llamacpp_goes_native_and_keeps_the_stop_words_tokens_its_openai_reply_drops(smol_tokenizer) -> None:  # noqa: ANN001
    """llama.cpp's OpenAI-style reply drops a stop word from text, ids and logprobs; its /completion keeps the ids."""
    native, openai_style = captured("llamacpp", "native_completion_stop"), captured("llamacpp", "completions_stop")
    assert openai_style["body"]["choices"][0]["text"] == "Hamlet"  # what the OpenAI-style reply says: no "</search>"
    request = native["request"]["json"]
    replay = Replay({"/props": captured("llamacpp", "props"), "/completion": native})
    with serve_app(replay.app()) as url:
        policy = OpenAIPolicy(url + "/v1", "policy", tokenizer="embedded", retry=FAST)
        sample = await policy.generate(Context(request["prompt"], [], ""), Sampling(temperature=0.0, stop=("</search>",)))
        await policy.aclose()
    ids = native["body"]["tokens"]
    assert policy.llamacpp and sample.exact and sample.token_ids == ids and sample.finish_reason == "stop"
    assert sample.text == smol_tokenizer.decode(ids) == "Hamlet</search>"
    given = [p["logprob"] for p in native["body"]["completion_probabilities"]]
    assert sample.logprobs == given + [None] * (len(ids) - len(given))  # the stop word's tokens come without
    sent = replay.sent("/completion")
    assert sent["prompt"] == request["prompt"] and sent["return_tokens"] is True and sent["stop"] == ["</search>"]
    assert (sent["top_k"], sent["min_p"], sent["repeat_penalty"]) == (0, 0.0, 1.0)  # the policy's own distribution


def test_token_strings_without_ids_map_to_the_ids_the_server_sampled(smol_tokenizer) -> None:  # noqa: ANN001
    """vLLM asked with a text prompt names tokens as strings; the same greedy turn asked with ids states the ids."""
    named = captured("vllm", "completions_text_prompt")["body"]["choices"][0]
    stated = captured("vllm", "completions_ids_logprobs")["body"]["choices"][0]
    tokens = sampled_tokens(named, smol_tokenizer.hf.get_vocab())
    assert tokens is not None and tokens.source == "vocab" and tokens.ids == stated["token_ids"]
    assert smol_tokenizer.decode(tokens.ids) == named["text"]
    assert sampled_tokens(named, {}) is None  # without a vocabulary nothing is stated: training refuses this shape


@pytest.mark.parametrize("kind", [k for k in KINDS if (SERVERS / k / "chat_logprobs.json").exists()])
def test_openai_shaped_token_bytes_map_to_the_sampled_ids(kind: str, smol_tokenizer) -> None:  # noqa: ANN001
    """OpenAI names each token by its bytes (`logprobs.content[].bytes`), without ids: looked up, they are the ids."""
    choice = captured(kind, "chat_logprobs")["body"]["choices"][0]
    truth = choice.get("token_ids") or [c["id"] for c in choice["logprobs"]["content"]]
    openai_shape = {"logprobs": {"content": [{k: v for k, v in c.items() if k != "id"} for c in choice["logprobs"]["content"]]}}
    tokens = sampled_tokens(openai_shape, smol_tokenizer.hf.get_vocab())
    assert tokens is not None and tokens.source == "vocab" and tokens.ids == truth[: len(tokens.ids)]
    assert tokens.logprobs == [c["logprob"] for c in choice["logprobs"]["content"]]


@pytest.mark.parametrize(("kind", "name"), having("context_overflow_completions", "context_overflow_chat"))
async def test_a_context_overflow_ends_the_episode_as_context_budget(kind: str, name: str) -> None:
    exchange = captured(kind, name)
    assert exchange["status"] == 400 and is_context_overflow(exchange["status"], exchange["body"])
    chat = name.endswith("chat")
    path = "/v1/chat/completions" if chat else "/v1/completions"
    with serve_app(Replay({path: exchange}).app()) as url:
        policy = OpenAIPolicy(url + "/v1", "policy", tokenizer=None if chat else "embedded", retry=FAST, context_tokens=10**6)
        trajectory = await run_episode(Question("q", "Who wrote Hamlet?", ("Shakespeare",)), policy, Toolset([]), AgentConfig())
        with pytest.raises(ContextOverflow):
            await policy.generate(Context([1, 2], [Message("user", "q")], ""), Sampling())
        await policy.aclose()
    assert trajectory.termination == "context_budget" and trajectory.turns == []
    assert trajectory.reward.reward == -1.0  # scored by the budget rule: no answer


@pytest.mark.parametrize(("kind", "name"), having("error_bad_model", "error_bad_json", refused=True))
def test_other_refusals_are_not_read_as_an_overflow(kind: str, name: str) -> None:
    exchange = captured(kind, name)
    assert exchange["status"] >= 400 and not is_context_overflow(exchange["status"], exchange["body"])


@pytest.mark.parametrize(("kind", "name"), having("error_bad_model", refused=True))  # llama.cpp serves any model name
async def test_a_wrong_model_name_is_one_line_naming_the_servers_words(kind: str, name: str) -> None:
    exchange = captured(kind, name)
    with serve_app(Replay({"/v1/completions": exchange}).app()) as url:
        policy = OpenAIPolicy(url + "/v1", "no-such-model", tokenizer="embedded", retry=FAST, context_tokens=2048)
        with pytest.raises(PolicyUnavailable, match=f"HTTP {exchange['status']}") as err:
            await policy.generate(Context([1, 2], [], ""), Sampling())
        await policy.aclose()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kind", KINDS)
async def test_the_context_size_is_asked_of_the_server(kind: str) -> None:
    replies = {path: captured(kind, name) for path, name in (("/v1/models", "models"), ("/props", "props"))
               if (SERVERS / kind / f"{name}.json").exists()}
    expected = context_size(replies.get("/v1/models", {}).get("body"), replies.get("/props", {}).get("body"))
    assert expected is not None and expected > 0
    replay = Replay(replies)
    with serve_app(replay.app()) as url:
        policy = OpenAIPolicy(url + "/v1", "policy", tokenizer="embedded", retry=FAST)
        with pytest.raises(ContextOverflow, match=f"limit is {expected}"):  # refused here, never sent
            await policy.generate(Context(list(range(expected)), [], ""), Sampling())
        await policy.aclose()
    assert policy.context_limit == expected
    assert all(path in ("/v1/models", "/props") for path, _ in replay.received)


@pytest.mark.parametrize(("kind", "name"), having("chat_prefill"))
async def test_chat_sends_the_prefill_as_a_message_to_continue_and_reads_the_continuation(kind: str, name: str) -> None:
    exchange = captured(kind, name)
    request = exchange["request"]["json"]
    replay = Replay({"/v1/chat/completions": exchange})
    messages = [Message(m["role"], m["content"]) for m in request["messages"][:-1]]
    with serve_app(replay.app()) as url:
        policy = OpenAIPolicy(url + "/v1", "policy", retry=FAST, context_tokens=2048)
        sample = await policy.generate(Context([], messages, "<think>"), Sampling(max_new_tokens=request["max_tokens"]))
        await policy.aclose()
    sent = replay.sent("/v1/chat/completions")
    assert sent["messages"] == request["messages"] and sent["messages"][-1] == {"role": "assistant", "content": "<think>"}
    assert sent["continue_final_message"] is True and sent["add_generation_prompt"] is False
    content = exchange["body"]["choices"][0]["message"]["content"]
    assert sample.text == content.removeprefix("<think>") and not sample.text.startswith("<think>")
    usage = exchange["body"]["usage"]
    assert sample.usage == (usage["prompt_tokens"], usage["completion_tokens"]) and not sample.exact
