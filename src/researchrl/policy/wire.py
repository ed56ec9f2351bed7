"""What an OpenAI-compatible server said, read in whichever shape it answers: sampled tokens, context size, overflow.

Sampled tokens, most direct source first (`SampledTokens.source`):

    token_ids    vLLM: the choice's `token_ids` (return_token_ids) or "token_id:N" in `logprobs.tokens`
    content_ids  llama.cpp's OpenAI-style reply: `logprobs.content[].id` with `.logprob`
    llamacpp_tokens  llama.cpp's native /completion: `tokens` with `completion_probabilities` (what the policy uses
                 on llama.cpp: the OpenAI-style reply drops a stop word's tokens)
    sglang       SGLang's native shape: `meta_info.output_token_logprobs` as [logprob, id, text] (from its docs)
    vocab        servers that name tokens but not ids (OpenAI: `logprobs.content[].bytes`/`.token`, or
                 `logprobs.tokens`): each looked up in the local tokenizer's vocabulary, kept only when the
                 ids decode back to the server's text
    retokenized  none of these: the text encoded again, which need not be what was sampled (exact = False)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

RETOKENIZED = "retokenized"


@dataclass(frozen=True)
class SampledTokens:
    """The sampled ids, their logprobs when the server gave them, and where the ids came from."""

    ids: list[int]
    logprobs: list[float | None] | None
    source: str

    @property
    def exact(self) -> bool:
        """True when the ids are the ones the server sampled (not a re-encoding of its text)."""
        return self.source != RETOKENIZED


def sampled_tokens(choice: dict[str, Any], vocab: dict[str, int]) -> SampledTokens | None:
    """The choice's sampled tokens from the first shape that has them; None when only the text is there.

    Ids looked up by name (`vocab`) are only candidates: the caller keeps them when they decode to the text.
    """
    logprobs = choice.get("logprobs") or {}
    direct = choice.get("token_ids")
    values = _floats(logprobs.get("token_logprobs"))
    if _ints(direct):
        return SampledTokens(direct, values if values and len(values) == len(direct) else None, "token_ids")
    tokens = logprobs.get("tokens")
    if tokens and all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
        return SampledTokens([int(t.split(":", 1)[1]) for t in tokens], values, "token_ids")
    content = logprobs.get("content")
    if content and all(isinstance(c, dict) and isinstance(c.get("id"), int) for c in content):
        return SampledTokens([c["id"] for c in content], _floats([c.get("logprob") for c in content]), "content_ids")
    triples = (choice.get("meta_info") or {}).get("output_token_logprobs")
    if triples and all(isinstance(t, list) and len(t) >= 2 and isinstance(t[1], int) for t in triples):
        return SampledTokens([t[1] for t in triples], _floats([t[0] for t in triples]), "sglang")
    if content and vocab:
        ids = _looked_up([(c.get("token"), c.get("bytes")) for c in content], vocab)
        return SampledTokens(ids, _floats([c.get("logprob") for c in content]), "vocab") if ids is not None else None
    if tokens and vocab:
        ids = _looked_up([(t, None) for t in tokens], vocab)
        return SampledTokens(ids, values, "vocab") if ids is not None else None
    return None


def server_shape(choice: dict[str, Any]) -> str:
    """A short name of what the server put in a choice, for the one line that says why ids are missing."""
    logprobs = choice.get("logprobs") or {}
    if not logprobs:
        return "text only, no logprobs"
    if logprobs.get("content"):
        return "logprobs.content[] with token strings but no ids"
    return "logprobs.tokens as token strings, no ids" if logprobs.get("tokens") else "empty logprobs"


def _ints(value: Any) -> bool:
    """A non-empty list of ints."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _floats(values: Any) -> list[float | None] | None:
    """Logprobs as floats (None where the server gave none); None when there is no list."""
    if not isinstance(values, list):
        return None
    return [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None for v in values]


@cache
def _byte_chars() -> dict[int, str]:
    """Byte-level BPE's byte -> character map (GPT-2, Qwen, Llama 3, SmolLM vocabularies spell bytes this way)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return bytes_to_unicode()


def _looked_up(tokens: list[tuple[Any, Any]], vocab: dict[str, int]) -> list[int] | None:
    """Each (token string, raw bytes) as a vocabulary id: byte-level spelling, the string itself, or <0xNN>; else None."""
    chars = _byte_chars()
    ids = []
    for token, raw in tokens:
        if isinstance(raw, list) and all(isinstance(b, int) and 0 <= b < 256 for b in raw):
            data = bytes(raw)
        elif isinstance(token, str):
            data = token.encode("utf-8")
        else:
            return None
        spellings = ["".join(chars[b] for b in data), *([token] if isinstance(token, str) else [])]
        if len(data) == 1:
            spellings.append(f"<0x{data[0]:02X}>")  # SentencePiece byte fallback
        found = next((vocab[s] for s in spellings if s in vocab), None)
        if found is None:
            return None
        ids.append(found)
    return ids


# ---------------------------------------------------------------- context size and overflow

_OVERFLOW = re.compile(
    r"maximum context length|context length exceeded|context_length_exceeded|exceeds? the available context size"
    r"|exceed_context_size|prompt is too long|too many tokens|longer than the model's context",
    re.IGNORECASE,
)


def is_context_overflow(status: int, body: Any) -> bool:
    """A 400 (or 413) that says the request does not fit the model's context, in any server's words."""
    return status in (400, 413) and bool(_OVERFLOW.search(str(body)))


def is_llamacpp(props: Any) -> bool:
    """llama.cpp's llama-server answers /props with its default generation settings."""
    return isinstance(props, dict) and isinstance(props.get("default_generation_settings"), dict)


def llamacpp_sample(body: dict[str, Any]) -> tuple[SampledTokens, str, str]:
    """llama.cpp's native /completion reply: every sampled id (a stop word's too, which its OpenAI-style reply
    drops from text, ids and logprobs alike), logprobs where given (none for a stop word's tokens), and how it
    stopped: (tokens, stop type "eos" | "word" | "limit", stopping word)."""
    ids = body.get("tokens")
    if not _ints(ids):
        ids = []
    probs = [p.get("logprob") for p in body.get("completion_probabilities") or [] if isinstance(p, dict)]
    logprobs = _floats(probs[: len(ids)] + [None] * (len(ids) - len(probs)))
    return SampledTokens(ids, logprobs, "llamacpp_tokens"), str(body.get("stop_type") or ""), str(body.get("stopping_word") or "")


def context_size(models: Any, props: Any) -> int | None:
    """The server's context length: vLLM's /v1/models `max_model_len`, else llama.cpp's /props `n_ctx`."""
    for row in (models or {}).get("data", []) if isinstance(models, dict) else []:
        if isinstance(row, dict) and isinstance(row.get("max_model_len"), int):
            return row["max_model_len"]
    if isinstance(props, dict):
        settings = props.get("default_generation_settings") or {}
        for value in (settings.get("n_ctx"), props.get("n_ctx")):
            if isinstance(value, int) and value > 0:
                return value
    return None
