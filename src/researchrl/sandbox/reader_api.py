"""An offline OpenAI-compatible reader: POST /v1/chat/completions plays the paper's reading agent with ExtractiveReader.

It reads the rendered reader prompt (tools/reader.py `render_reader_prompt`) back into a ReadRequest, runs the
deterministic ExtractiveReader on it, and answers in the tag format `parse_reply` reads, so
`LLMReader(base_url=f"{sandbox.url}/v1", model=READER_MODEL)` works with no network and no GPU, and returns
what ExtractiveReader returns. Extracted text that itself contains a reader tag (<page_down>, </extracted_info>,
<think>...) would be cut by `parse_reply`, as it would be from a real model.
"""

from __future__ import annotations

import hashlib
import math
import re
import string
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from researchrl.prompts import READER_PROMPT
from researchrl.tools.reader import ExtractiveReader, ReadRequest, ReadResult

READER_MODEL = "sandbox-reader"
_FIELDS = {"main_question", "context_so_far", "sub_question", "page_index", "total_pages", "page_content"}


def _prompt_pattern(template: str) -> re.Pattern[str]:
    """A regex that matches `template` rendered with str.format, one named group per field."""
    parts = []
    for literal, name, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if name is not None:
            parts.append(rf"(?P<{name}>\d+)" if name in ("page_index", "total_pages") else rf"(?P<{name}>.*?)")
    pattern = re.compile("".join(parts), re.DOTALL)
    if set(pattern.groupindex) != _FIELDS:
        raise ValueError(f"the reader prompt's fields changed: {sorted(pattern.groupindex)}")
    return pattern


_PROMPT = _prompt_pattern(READER_PROMPT)


class NotAReaderPrompt(ValueError):
    """The chat request is not a rendered reader prompt, so the sandbox reader cannot answer it."""


def parse_reader_prompt(prompt: str) -> ReadRequest:
    """The ReadRequest `render_reader_prompt` turned into `prompt`; NotAReaderPrompt for anything else."""
    match = _PROMPT.fullmatch(prompt)
    if match is None:
        raise NotAReaderPrompt("the last user message is not the reader prompt (researchrl.prompts.READER_PROMPT)")
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


def _user_prompt(payload: Any) -> str:
    """The text of the last user message of a chat request; NotAReaderPrompt when there is none."""
    messages = payload.get("messages") if isinstance(payload, dict) else None
    users = [m for m in messages or [] if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise NotAReaderPrompt("the request has no user message")
    content = users[-1].get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    if not isinstance(content, str):
        raise NotAReaderPrompt("the last user message has no text content")
    return content


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


def reader_routes(reader: ExtractiveReader | None = None) -> list[Route]:
    """The OpenAI-compatible routes: POST /v1/chat/completions and GET /v1/models."""
    extractive = reader or ExtractiveReader()

    async def chat_completions(request: Request) -> Response:
        try:
            payload = await request.json()
        except ValueError:
            return _error(400, "the request body is not JSON")
        if isinstance(payload, dict) and payload.get("stream"):
            return _error(400, "the sandbox reader does not stream; send stream=false")
        try:
            prompt = _user_prompt(payload)
            req = parse_reader_prompt(prompt)
        except NotAReaderPrompt as exc:
            return _error(400, str(exc))
        reply = reply_text(await extractive.read(req))
        model = payload.get("model") if isinstance(payload.get("model"), str) else READER_MODEL
        return JSONResponse(_completion(model, prompt, reply))

    async def models(request: Request) -> Response:
        card = {"id": READER_MODEL, "object": "model", "created": 0, "owned_by": "researchrl-sandbox"}
        return JSONResponse({"object": "list", "data": [card]})

    return [Route("/v1/chat/completions", chat_completions, methods=["POST"]), Route("/v1/models", models)]
