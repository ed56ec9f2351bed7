"""An offline OpenAI-compatible reader: POST /v1/chat/completions plays the paper's reading agent with ExtractiveReader.

It reads a reader prompt back into a ReadRequest, runs the deterministic ExtractiveReader on it, and answers in
the tag format `parse_reply` reads, so `LLMReader(base_url=f"{sandbox.url}/v1", model=READER_MODEL)` works with
no network and no GPU, and returns what ExtractiveReader returns. Extracted text that itself contains a reader tag
(<page_down>, </extracted_info>, <think>...) would be cut by `parse_reply`, as it would be from a real model.

Only the prompt's tagged fields are read, so any client of the paper's reader is answered: our prompt
(`render_reader_prompt`) and the official one, whose <current_sub_question> is never closed; the prompt in the
last message that holds one, whatever its role, as a string or as content parts; streamed or not.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from researchrl.tools.reader import ExtractiveReader, ReadRequest, ReadResult

READER_MODEL = "sandbox-reader"
# The fields of the reader prompt (prompts.READER_PROMPT), each value optionally on lines of its own; the text before
# them is not read. The official prompt leaves <current_sub_question> unclosed (REFERENCE-deepresearcher.md §3.6),
# so either tag ends it. The page comes last and runs to the last </current_page_content>, so it may hold any text.
_PROMPT = re.compile(
    r"<main_question>\n?(?P<main_question>.*?)\n?</main_question>\s*"
    r"<context_so_far>\n?(?P<context_so_far>.*?)\n?</context_so_far>\s*"
    r"<current_sub_question>\n?(?P<sub_question>.*?)\n?</?current_sub_question>\s*"
    r"<webpage_content>\s*<page_index>\s*(?P<page_index>\d+)\s*</page_index>\s*"
    r"<total_page_number>\s*(?P<total_pages>\d+)\s*</total_page_number>\s*"
    r"<current_page_content>(?P<page_content>.*)</current_page_content>\s*</webpage_content>",
    re.DOTALL,
)


class NotAReaderPrompt(ValueError):
    """The chat request is not a rendered reader prompt, so the sandbox reader cannot answer it."""


def parse_reader_prompt(prompt: str) -> ReadRequest:
    """The ReadRequest a reader prompt (ours or the official one) was rendered from; NotAReaderPrompt for anything else."""
    match = _PROMPT.search(prompt)
    if match is None:
        raise NotAReaderPrompt("no message holds the reader prompt (<main_question>, <context_so_far>, "
                               "<current_sub_question>, <webpage_content>: researchrl.prompts.READER_PROMPT)")
    return ReadRequest(
        question=match["main_question"],
        sub_query=match["sub_question"],
        memory=match["context_so_far"],
        segment=match["page_content"],
        page_index=int(match["page_index"]),
        total_pages=int(match["total_pages"]),
    )


def reply_text(result: ReadResult) -> str:
    """The reader model's reply for `result`, in the three tags the paper's reader prompt asks for."""
    summary = "Found new information on this page." if result.info else "Didn't find useful information here."
    verdict = "yes" if result.page_down else "no"
    return (f"<extracted_info>\n{result.info}\n</extracted_info>\n<page_down>{verdict}</page_down>\n"
            f"<short_summary>{summary}</short_summary>")


def _tokens(text: str) -> int:
    """A rough token count (4 characters a token), enough for `usage`."""
    return math.ceil(len(text) / 4)


def _error(status: int, message: str) -> JSONResponse:
    """An OpenAI-shaped error response."""
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    return JSONResponse({"error": error}, status_code=status)


def _text(content: Any) -> str:  # noqa: ANN401
    """A message's text: the string, or its text parts joined (a part may be a string or {"text": ...})."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "".join(p if isinstance(p, str) else str(p.get("text", "")) for p in parts if isinstance(p, (str, dict)))


def _prompt(payload: Any) -> tuple[str, ReadRequest]:  # noqa: ANN401
    """The last message that holds a reader prompt, whatever its role (the official client sends one user message)."""
    messages = payload.get("messages") if isinstance(payload, dict) else None
    texts = [_text(m.get("content")) for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    if not texts:
        raise NotAReaderPrompt("the request has no messages")
    text = next((t for t in reversed(texts) if "<main_question>" in t), texts[-1])
    return text, parse_reader_prompt(text)


def _completion(model: str, prompt: str, reply: str) -> dict[str, Any]:
    """A chat.completion object; its id is a hash of the prompt, so equal requests get equal ids."""
    usage = {"prompt_tokens": _tokens(prompt), "completion_tokens": _tokens(reply)}
    return {
        "id": "chatcmpl-" + hashlib.sha256(prompt.encode()).hexdigest()[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop",
                     "logprobs": None}],
        "usage": {**usage, "total_tokens": sum(usage.values())},
    }


def _stream(completion: dict[str, Any]) -> Response:
    """The completion as server-sent events, as a streaming client reads it: the whole reply in one chunk, then [DONE]."""
    choice = completion["choices"][0]
    chunk = {**completion, "object": "chat.completion.chunk"}
    chunk.pop("usage")
    events = [
        {**chunk, "choices": [{"index": 0, "delta": choice["message"], "finish_reason": None, "logprobs": None}]},
        {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}]},
    ]
    body = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
    return Response(body, media_type="text/event-stream")


def reader_routes(reader: ExtractiveReader | None = None) -> list[Route]:
    """The OpenAI-compatible routes: POST /v1/chat/completions and GET /v1/models."""
    extractive = reader or ExtractiveReader()

    async def chat_completions(request: Request) -> Response:
        try:
            payload = await request.json()
        except ValueError:
            return _error(400, "the request body is not JSON")
        try:
            prompt, req = _prompt(payload)
        except NotAReaderPrompt as exc:
            return _error(400, str(exc))
        reply = reply_text(await extractive.read(req))
        model = payload.get("model") if isinstance(payload.get("model"), str) else READER_MODEL
        completion = _completion(model, prompt, reply)
        return _stream(completion) if payload.get("stream") else JSONResponse(completion)

    async def models(request: Request) -> Response:
        card = {"id": READER_MODEL, "object": "model", "created": 0, "owned_by": "researchrl-sandbox"}
        return JSONResponse({"object": "list", "data": [card]})

    return [Route("/v1/chat/completions", chat_completions, methods=["POST"]), Route("/v1/models", models)]
