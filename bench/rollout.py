"""Rollout throughput: our batched HF generation vs a naive one-episode loop vs a vLLM (CPU) server, plus forced decode.

Episodes: the same questions, seeds and AgentConfig through our batched HFPolicy, a one-at-a-time HFPolicy loop and
a real `vllm serve` of the same checkpoint (fp32) driven by our completions-mode OpenAIPolicy. Forced decode: the
same first-turn prompts, N = --max-new-tokens tokens per row at batch --episodes, through raw `model.generate`,
our HFPolicy (which may stop at EOS) and concurrent vLLM /v1/completions (`ignore_eos`, min_tokens = max_tokens = N).

    .venv/bin/python bench/rollout.py [--episodes 16] [--max-new-tokens 64] [--no-vllm] [--note TEXT]

The bench starts the server (60-120 s on 2 cores, log in a temporary file), sends one warm-up token, and always
stops it. Without vLLM (`bash scripts/vllm.sh` builds it) it prints one line saying so and runs the other columns.
Prints seconds, tokens, tokens/s and ratios per engine as JSON (with the load average at start and end, and --note)
and writes the same to bench/results/rollout.json. Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from researchrl.agent import render
from researchrl.agent.loop import AgentConfig, run_episode
from researchrl.agent.protocols.deepresearcher import DeepResearcherProtocol
from researchrl.data.load import load_questions
from researchrl.environment import EnvConfig, open_environment
from researchrl.errors import ConfigError
from researchrl.policy.base import Context, Policy, Sampling
from researchrl.policy.embedded import resolve_model_path
from researchrl.policy.hf import HFPolicy
from researchrl.policy.openai import OpenAIPolicy
from researchrl.policy.vllm_server import SERVED_NAME, ServerSpec, VLLMServer, find_vllm
from researchrl.prompts import BROWSE_WEBPAGE_SCHEMA, WEB_SEARCH_SCHEMA
from researchrl.sandbox.config import shared_data_dir


async def episodes(policy: Policy, questions, cfg: AgentConfig, concurrent: bool) -> tuple[float, int]:  # noqa: ANN001
    """Wall seconds and policy-sampled tokens for all episodes, concurrently or one after another."""
    async with open_environment(EnvConfig(top_k=3, snippet_chars=160)) as tools:
        start = time.perf_counter()
        if concurrent:
            done = await asyncio.gather(*(run_episode(q, policy, tools, cfg, sample_index=i) for i, q in enumerate(questions)))
        else:
            done = [await run_episode(q, policy, tools, cfg, sample_index=i) for i, q in enumerate(questions)]
        return time.perf_counter() - start, sum(sum(t.mask) for t in done)


def raw_generate(policy: HFPolicy, contexts: list[list[int]], new_tokens: int) -> tuple[float, int]:
    """Plain left-padded `model.generate` (no prefix cache, no logprobs), forced to `new_tokens` each."""
    import torch

    pad = policy.tokenizer.pad_token_id
    width = max(map(len, contexts))
    ids = torch.tensor([[pad] * (width - len(c)) + c for c in contexts])
    mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts])
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.inference_mode():
        policy.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              do_sample=True, temperature=1.0, top_k=0, pad_token_id=pad)
    return time.perf_counter() - start, new_tokens * len(contexts)


async def ours_generate(policy: HFPolicy, contexts: list[list[int]], new_tokens: int) -> tuple[float, int]:
    """The same prompts through HFPolicy (batched, prefix cache, logprobs), counting the tokens it sampled."""
    sampling = Sampling(temperature=1.0, max_new_tokens=new_tokens, seed=0)
    start = time.perf_counter()
    out = await asyncio.gather(*(policy.generate(Context(c, [], "<think>"), sampling) for c in contexts))
    return time.perf_counter() - start, sum(len(s.token_ids) for s in out)


def vllm_missing() -> str:
    """Why vLLM cannot run here ('' when it can): it lives in its own venv, which may not be built."""
    try:
        find_vllm()
    except ConfigError as err:
        return str(err)
    return ""


def forced(context: list[int], new_tokens: int) -> dict[str, Any]:
    """A /v1/completions body sampling exactly `new_tokens` at T = 1 under the server's seed, like raw_generate."""
    return {"model": SERVED_NAME, "prompt": context, "max_tokens": new_tokens, "min_tokens": new_tokens,
            "ignore_eos": True, "temperature": 1.0}


async def vllm_generate(url: str, contexts: list[list[int]], new_tokens: int) -> tuple[float, int]:
    """The raw_generate prompts as concurrent forced completions, counting the tokens the server reports."""
    async with httpx.AsyncClient(base_url=f"{url}/v1", timeout=600.0) as client:
        start = time.perf_counter()
        replies = await asyncio.gather(*(client.post("/completions", json=forced(c, new_tokens)) for c in contexts))
        seconds = time.perf_counter() - start
    return seconds, sum(r.raise_for_status().json()["usage"]["completion_tokens"] for r in replies)


async def vllm_episodes(url: str, tokenizer: Any, questions, cfg: AgentConfig) -> tuple[float, int]:  # noqa: ANN001
    """The episodes through our completions-mode OpenAIPolicy against the server, the client always closed."""
    policy = OpenAIPolicy(f"{url}/v1", SERVED_NAME, tokenizer=tokenizer)
    try:
        return await episodes(policy, questions, cfg, concurrent=True)
    finally:
        await policy.aclose()


def vllm_columns(
    tokenizer: Any, questions, cfg: AgentConfig, contexts: list[list[int]], new_tokens: int  # noqa: ANN001
) -> dict[str, Any]:
    """Episodes and forced decode through a vLLM server of the same checkpoint, started here and always stopped."""
    spec = ServerSpec(resolve_model_path("embedded"), dtype="float32", max_model_len=8192)
    with tempfile.TemporaryDirectory() as tmp, VLLMServer(spec, Path(tmp) / "vllm.log") as server:
        asyncio.run(vllm_generate(server.url, contexts[:1], 1))  # a fresh server's first request pays one-off setup
        e_s, e_tok = asyncio.run(vllm_episodes(server.url, tokenizer, questions, cfg))
        d_s, d_tok = asyncio.run(vllm_generate(server.url, contexts, new_tokens))
    return {"vllm": figures(e_s, e_tok, "sampled_tokens"), "vllm_decode_only": figures(d_s, d_tok, "tokens")}


def figures(seconds: float, tokens: int, counted: str) -> dict[str, float]:
    """One engine's row: seconds, tokens under the name its section already uses, tokens/s."""
    return {"seconds": seconds, counted: tokens, "tokens_per_s": tokens / seconds}


def ratio(result: dict[str, Any], a: str, b: str) -> float:
    """How many times the tokens/s of `a` is that of `b`."""
    return result[a]["tokens_per_s"] / result[b]["tokens_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=16, help="concurrent episodes (and forced-decode batch size)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens per policy turn (and per forced-decode row)")
    parser.add_argument("--no-vllm", action="store_true", help="skip the vLLM column (no server is started)")
    parser.add_argument("--note", default="", help="free text kept as \"note\" in the JSON (e.g. other load on the machine)")
    args = parser.parse_args()
    load_start = os.getloadavg()
    skipped = "--no-vllm" if args.no_vllm else vllm_missing()
    if skipped:
        print(f"vLLM column skipped: {skipped}")
    questions = load_questions(shared_data_dir() / "wiki" / "questions.jsonl")[: args.episodes]
    cfg = AgentConfig(max_turns=4, max_context_tokens=4096, max_observation_chars=700,
                      sampling=Sampling(temperature=1.0, max_new_tokens=args.max_new_tokens))
    batched = HFPolicy.load("embedded", max_batch=args.episodes)
    naive = HFPolicy(batched.model, batched.tokenizer.hf, max_batch=1, prefix_cache=False)
    b_s, b_tok = asyncio.run(episodes(batched, questions, cfg, concurrent=True))
    n_s, n_tok = asyncio.run(episodes(naive, questions, cfg, concurrent=False))
    protocol = DeepResearcherProtocol()
    contexts = [render.start(batched.tokenizer, protocol, q.question, [WEB_SEARCH_SCHEMA, BROWSE_WEBPAGE_SCHEMA]).ids for q in questions]
    r_s, r_tok = raw_generate(batched, contexts, args.max_new_tokens)
    o_s, o_tok = asyncio.run(ours_generate(HFPolicy(batched.model, batched.tokenizer.hf, max_batch=args.episodes), contexts, args.max_new_tokens))
    result: dict[str, Any] = {
        "episodes": args.episodes,
        "max_new_tokens": args.max_new_tokens,
        "batched": figures(b_s, b_tok, "sampled_tokens"),
        "naive": figures(n_s, n_tok, "sampled_tokens"),
        "raw_generate": figures(r_s, r_tok, "tokens"),
        "ours_same_prompts": figures(o_s, o_tok, "tokens"),
    }
    result["ratio_batched_vs_naive"] = ratio(result, "batched", "naive")
    result["ratio_ours_vs_raw_generate"] = ratio(result, "ours_same_prompts", "raw_generate")
    if skipped:
        result["vllm_skipped"] = skipped
    else:
        result |= vllm_columns(batched.tokenizer.hf, questions, cfg, contexts, args.max_new_tokens)
        result["ratio_vllm_vs_naive"] = ratio(result, "vllm", "naive")
        result["ratio_vllm_vs_batched"] = ratio(result, "vllm", "batched")
        result["ratio_vllm_decode_vs_raw_generate"] = ratio(result, "vllm_decode_only", "raw_generate")
    result["load_average"] = {"start": load_start, "end": os.getloadavg()}
    if args.note:
        result["note"] = args.note
    out = Path(__file__).parent / "results" / "rollout.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
