"""Real server replies captured by scripts/capture_servers.py (tests/fixtures/servers/CAPTURED.md says how)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SERVERS = Path(__file__).resolve().parents[1] / "fixtures" / "servers"


def captured(kind: str, name: str) -> dict[str, Any]:
    """One captured exchange: {"request": ..., "status": N, "body": ...}."""
    return json.loads((SERVERS / kind / f"{name}.json").read_text())


def without_ids(shape: str) -> dict[str, Any]:
    """A completion body that names its tokens but states no ids, in OpenAI's two shapes, from real vLLM replies.

    legacy: vLLM asked without return_tokens_as_token_ids (`logprobs.tokens` as strings, as OpenAI's completions);
    chat: vLLM's chat logprobs (`logprobs.content[].token/.bytes`, as OpenAI's chat) with vLLM's `token_ids` removed.
    """
    if shape == "legacy":
        return captured("vllm", "completions_text_prompt")["body"]
    body = captured("vllm", "chat_logprobs")["body"]
    choice = body["choices"][0]
    body["choices"] = [{"index": 0, "text": choice["message"]["content"], "logprobs": choice["logprobs"],
                        "finish_reason": choice["finish_reason"]}]
    return body
