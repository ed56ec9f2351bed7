"""Capture real wire fixtures from a running OpenAI-compatible server (llama.cpp's llama-server or vLLM).

Sends a fixed set of requests built from the embedded SmolLM2-135M-Instruct tokenizer's chat template and writes each
raw exchange to tests/fixtures/servers/<kind>/<name>.json as
{"request": {"method", "path", "json" | "content"}, "status": N, "headers": {...}, "body": <JSON or raw text>}.
How the servers were built and started is recorded in tests/fixtures/servers/CAPTURED.md.

    .venv/bin/python scripts/capture_servers.py --base-url http://127.0.0.1:8081 --kind llamacpp
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import httpx

SYSTEM = "You are a helpful assistant."
QUESTION = "Who wrote Hamlet?"
STOP_QUESTION = "Who wrote Hamlet? Answer with a search query wrapped in <search></search> tags."
KEPT_HEADERS = ("content-type", "content-length", "server")


def chat(question: str) -> list[dict[str, str]]:
    """The system + user messages for one question."""
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]], prefill: str = "") -> list[int]:
    """Token ids of the chat-templated prompt with the generation prompt and an optional assistant prefill."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefill
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def long_question(tokenizer: Any, n_tokens: int) -> str:
    """A user question of at least n_tokens tokens (for the context overflow requests)."""
    words = " ".join(["Hamlet"] * n_tokens)
    assert len(tokenizer(words, add_special_tokens=False)["input_ids"]) >= n_tokens
    return words


def exchange(client: httpx.Client, method: str, path: str, body: Any = None, content: str | None = None) -> dict:
    """Send one request and return it with the raw status, the headers that matter and the (JSON if possible) body."""
    request: dict[str, Any] = {"method": method, "path": path}
    if content is not None:
        request["content"] = content
        response = client.request(method, path, content=content, headers={"content-type": "application/json"})
    elif body is not None:
        request["json"] = body
        response = client.request(method, path, json=body)
    else:
        response = client.request(method, path)
    try:
        parsed: Any = response.json()
    except ValueError:
        parsed = response.text
    headers = {k: response.headers[k] for k in KEPT_HEADERS if k in response.headers}
    return {"request": request, "status": response.status_code, "headers": headers, "body": parsed}


def context_size(client: httpx.Client, kind: str) -> int:
    """The server's context length: /props default_generation_settings.n_ctx (llama.cpp) or max_model_len (vLLM)."""
    if kind == "llamacpp":
        props = client.get("/props").json()
        return int(props["default_generation_settings"]["n_ctx"])
    return int(client.get("/v1/models").json()["data"][0]["max_model_len"])


def requests_for(kind: str, model: str, tokenizer: Any, n_ctx: int) -> dict[str, tuple[str, str, Any]]:
    """Name -> (method, path, JSON body) of every request captured for this kind of server."""
    ids = prompt_ids(tokenizer, chat(QUESTION))
    text = tokenizer.apply_chat_template(chat(QUESTION), tokenize=False, add_generation_prompt=True)
    vllm = kind == "vllm"
    ids_extra = (
        {"return_tokens_as_token_ids": True, "return_token_ids": True, "skip_special_tokens": False,
         "include_stop_str_in_output": True}
        if vllm else {"return_tokens": True}
    )
    chat_extra = {"return_token_ids": True, "skip_special_tokens": False} if vllm else {}
    prefill_extra = {"continue_final_message": True, "add_generation_prompt": False} if vllm else {}
    base = {"model": model, "max_tokens": 24, "logprobs": 1}
    prefill = chat(QUESTION) + [{"role": "assistant", "content": "<think>"}]
    long = long_question(tokenizer, n_ctx + 64)
    near_full = prompt_ids(tokenizer, chat(long))[: n_ctx - 8]  # 8 tokens of room
    out: dict[str, tuple[str, str, Any]] = {
        "models": ("GET", "/v1/models", None),
        "completions_ids_logprobs": ("POST", "/v1/completions", {**base, "prompt": ids, "temperature": 0, **ids_extra}),
        "completions_ids_logprobs_sampled": (
            "POST", "/v1/completions", {**base, "prompt": ids, "temperature": 1, "seed": 7, **ids_extra}),
        "completions_stop": (
            "POST", "/v1/completions",
            {**base, "prompt": prompt_ids(tokenizer, chat(STOP_QUESTION), "<search>"), "temperature": 0,
             "stop": ["</search>"], **ids_extra}),
        "completions_text_prompt": ("POST", "/v1/completions", {**base, "prompt": text, "temperature": 0}),
        "chat_plain": ("POST", "/v1/chat/completions",
                       {"model": model, "messages": chat(QUESTION), "max_tokens": 24, "temperature": 0}),
        "chat_prefill": ("POST", "/v1/chat/completions",
                         {"model": model, "messages": prefill, "max_tokens": 24, "temperature": 0,
                          **prefill_extra, **chat_extra}),
        "chat_logprobs": ("POST", "/v1/chat/completions",
                          {"model": model, "messages": chat(QUESTION), "max_tokens": 24, "temperature": 0,
                           "logprobs": True, "top_logprobs": 1, **chat_extra}),
        "context_overflow_completions": (
            "POST", "/v1/completions",
            {**base, "prompt": prompt_ids(tokenizer, chat(long)), "temperature": 0, **ids_extra}),
        "context_overflow_chat": ("POST", "/v1/chat/completions",
                                  {"model": model, "messages": chat(long), "max_tokens": 24, "temperature": 0}),
        "context_overflow_max_tokens": (  # the prompt fits, prompt + max_tokens does not (EOS ignored)
            "POST", "/v1/completions",
            {**base, "prompt": near_full, "temperature": 0, "ignore_eos": True, **ids_extra}),
        "error_bad_model": ("POST", "/v1/completions", {**base, "model": "no-such-model", "prompt": ids}),
    }
    if not vllm:
        out["props"] = ("GET", "/props", None)
        out["native_completion_return_tokens"] = (
            "POST", "/completion",
            {"prompt": ids, "n_predict": 24, "temperature": 0, "n_probs": 1, "return_tokens": True})
        out["native_completion_stop"] = (
            "POST", "/completion",
            {"prompt": prompt_ids(tokenizer, chat(STOP_QUESTION), "<search>"), "n_predict": 24, "temperature": 0,
             "n_probs": 1, "return_tokens": True, "stop": ["</search>"]})
    return out


def main() -> None:
    """Parse the flags, send every request and write one fixture file per request."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="the server's base URL, e.g. http://127.0.0.1:8081 (no /v1)")
    parser.add_argument("--kind", required=True, choices=["llamacpp", "vllm"], help="which server this is")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/servers"),
                        help="fixture root; files go to OUT/KIND/NAME.json (default: %(default)s)")
    parser.add_argument("--checkpoint", default="",
                        help="tokenizer directory (default: researchrl's embedded checkpoint)")
    parser.add_argument("--model", default="", help="model name to send (default: the first id in GET /v1/models)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP call (default: %(default)s)")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    checkpoint = args.checkpoint
    if not checkpoint:
        from researchrl.policy.embedded import embedded_checkpoint

        checkpoint = str(embedded_checkpoint())
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    out_dir = args.out / args.kind
    out_dir.mkdir(parents=True, exist_ok=True)
    with httpx.Client(base_url=args.base_url, timeout=args.timeout, trust_env=False) as client:
        model = args.model or client.get("/v1/models").json()["data"][0]["id"]
        n_ctx = context_size(client, args.kind)
        calls = requests_for(args.kind, model, tokenizer, n_ctx)
        records = {name: exchange(client, *call) for name, call in calls.items()}
        bad_json = '{"model": "x", "prompt": [1, 2'  # truncated on purpose
        records["error_bad_json"] = exchange(client, "POST", "/v1/completions", content=bad_json)
    for name, record in records.items():
        (out_dir / f"{name}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        print(f"{record['status']}  {out_dir / f'{name}.json'}")


if __name__ == "__main__":
    main()
