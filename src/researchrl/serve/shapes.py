"""OpenAI chat-completions shapes for served episodes: request checks, responses, stream chunks and error bodies."""

from __future__ import annotations

import ast
import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any

from researchrl.agent.loop import AgentConfig
from researchrl.bounds import MAX_QUESTION_CHARS
from researchrl.records import sources
from researchrl.types import Answer, FormatError, Observation, ToolCall, Trajectory, Turn

ROLES = ("system", "developer", "user", "assistant", "tool")
FINISH = {"answer": "stop", "format_error": "stop", "turn_budget": "length", "context_budget": "length"}
SUMMARY_CHARS = 160  # one observation's summary line in a stream


class ApiError(Exception):
    """A request refused with an OpenAI-shaped error body."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        self.headers = headers or {}


@dataclass(frozen=True)
class ChatRequest:
    """What the agent takes from a chat-completions body, checked against the server's limits."""

    question: str
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the usage
    agent: AgentConfig  # the server's agent with this request's turns, tokens per turn and decoding


def _number(body: dict[str, Any], name: str, low: float, high: float, integer: bool = False) -> float | int | None:
    """body[name] when present, checked as a number in [low, high] (booleans are not numbers here)."""
    value = body.get(name)
    if value is None:
        return None
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        what = "an integer" if integer else "a number"
        raise ApiError(400, f"'{name}' must be {what} from {low:g} to {high:g}, got {json.dumps(value)[:40]}", param=name)
    return value


def _text(content: Any, index: int) -> str:  # noqa: ANN401
    """A message's text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        parts = [p.get("text") for p in content if p.get("type") == "text"]
        if all(isinstance(p, str) for p in parts):
            return "\n".join(parts)  # type: ignore[arg-type]
    raise ApiError(400, f"messages[{index}].content must be a string or a list of text parts", param=f"messages[{index}].content")


def parse_request(body: Any, agent: AgentConfig, model: str) -> ChatRequest:  # noqa: ANN401
    """The question (the last user message) and this request's settings; anything malformed is a 400."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    if body.get("model") not in (None, model):
        raise ApiError(404, f"model {str(body['model'])[:80]!r} is not served here; this server serves {model!r}",
                       param="model", code="model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    question = None
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ApiError(400, f"messages[{index}] must be an object with a role of {', '.join(ROLES)}", param=f"messages[{index}]")
        if message["role"] == "user":
            question = _text(message.get("content"), index).strip()
    if not question:
        raise ApiError(400, "no user message with text: the last user message is the question", param="messages")
    if len(question) > MAX_QUESTION_CHARS:
        raise ApiError(400, f"the question is {len(question):,} characters; at most {MAX_QUESTION_CHARS:,}", param="messages",
                       code="question_too_long")
    stream = body.get("stream", False)
    options = body.get("stream_options") or {}
    if not isinstance(stream, bool) or not isinstance(options, dict):
        raise ApiError(400, "'stream' must be true or false and 'stream_options' an object", param="stream")
    if _number(body, "n", 1, 1, integer=True) not in (None, 1):
        raise ApiError(400, "'n' must be 1", param="n")
    sampling = agent.sampling
    tokens = _number(body, "max_completion_tokens", 1, sampling.max_new_tokens, integer=True)
    tokens = tokens or _number(body, "max_tokens", 1, sampling.max_new_tokens, integer=True)
    temperature = _number(body, "temperature", 0, 2)
    top_p = _number(body, "top_p", 0.01, 1)
    turns = _number(body, "max_turns", 1, agent.max_turns, integer=True)
    seed = _number(body, "seed", -(2**63), 2**63 - 1, integer=True)
    sampling = dataclasses.replace(
        sampling,
        max_new_tokens=int(tokens or sampling.max_new_tokens),
        temperature=sampling.temperature if temperature is None else float(temperature),
        top_p=sampling.top_p if top_p is None else float(top_p),
    )
    chosen = dataclasses.replace(agent, sampling=sampling, max_turns=int(turns or agent.max_turns),
                                 seed=agent.seed if seed is None else int(seed))
    return ChatRequest(question, stream, bool(options.get("include_usage")), chosen)


def usage(trajectory: Trajectory) -> dict[str, int]:
    """Policy tokens: what it read (prompt and observations) and what it sampled; zeros when its server never said."""
    prompt, completion, sampled = trajectory.token_counts() or (0, 0, 0)
    read = prompt + completion - sampled
    return {"prompt_tokens": read, "completion_tokens": sampled, "total_tokens": read + sampled}


def outcome(trajectory: Trajectory, spent_usd: float, seconds: float) -> dict[str, Any]:
    """The `researchrl` extension field: what the answer rests on and how the episode went."""
    return {
        "sources": sources(trajectory),
        "termination": trajectory.termination,
        "turns": len(trajectory.turns),
        "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in trajectory.tool_calls],
        "tool_errors": trajectory.tool_errors,
        "format_error": trajectory.reward.format_error if trajectory.reward else None,
        "web_cost_usd": round(spent_usd, 6),
        "seconds": round(seconds, 3),
    }


def completion(ident: str, model: str, trajectory: Trajectory, spent_usd: float, seconds: float) -> dict[str, Any]:
    """The non-streaming response: the answer as the assistant message ("" when the agent gave none)."""
    return {
        "id": ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": trajectory.answer or ""},
            "finish_reason": FINISH.get(trajectory.termination, "stop"),
            "logprobs": None,
        }],
        "usage": usage(trajectory),
        "researchrl": outcome(trajectory, spent_usd, seconds),
    }


def chunk(ident: str, model: str, delta: dict[str, Any], event: dict[str, Any] | None = None,
          finish: str | None = None) -> dict[str, Any]:
    """One `chat.completion.chunk`; `event` (the `researchrl` field) names what happened in the episode."""
    out: dict[str, Any] = {
        "id": ident, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    if event is not None:
        out["researchrl"] = event
    return out


def usage_chunk(ident: str, model: str, trajectory: Trajectory) -> dict[str, Any]:
    """The last chunk when the client asked for usage (`stream_options.include_usage`): no choices, the counts."""
    return {"id": ident, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [], "usage": usage(trajectory)}


def thinking(text: str) -> str:
    """The reasoning of a turn: inside <think>…</think>, or up to the next tag when </think> is missing."""
    start = text.find("<think>")
    begin = start + len("<think>") if start >= 0 else 0
    end = text.find("</think>", begin)
    return (text[begin:end] if end >= 0 else text[begin:].split("<", 1)[0]).strip()


def turn_events(turn: Turn) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(delta, event) pairs of a sampled turn: its thinking, then its tool call, answer or format error."""
    events: list[tuple[dict[str, Any], dict[str, Any]]] = []
    thought = thinking(turn.text)
    if thought:
        events.append(({"reasoning_content": thought + "\n"}, {"event": "think"}))
    action = turn.action
    if isinstance(action, ToolCall):
        shown = json.dumps(action.arguments, ensure_ascii=False)
        events.append(({"reasoning_content": f"→ {action.name} {shown}\n"},
                       {"event": "tool_call", "name": action.name, "arguments": action.arguments}))
    elif isinstance(action, Answer):
        events.append(({"content": action.text}, {"event": "answer"}))
    elif isinstance(action, FormatError):
        events.append(({"reasoning_content": f"(format error: {action.reason})\n"},
                       {"event": "format_error", "reason": action.reason}))
    return events


def observation_event(obs: Observation) -> tuple[dict[str, Any], dict[str, Any]]:
    """(delta, event) of a tool's observation: one summary line, never the raw text."""
    line = summarize(obs)
    return {"reasoning_content": f"← {line}\n"}, {"event": "observation", "tool": obs.tool, "summary": line,
                                                  "errors": list(obs.errors)}


def summarize(obs: Observation) -> str:
    """One line saying what a tool returned: results per query, facts per page, or the error kinds."""
    try:
        entries = ast.literal_eval(obs.text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        entries = None
    parts: list[str] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        if "search_query" in entry:
            parts.append(f"{len(entry.get('web_page_info_list') or [])} results for {str(entry['search_query'])[:60]!r}")
        elif "url" in entry:
            facts = len(entry.get("information") or [])
            parts.append(f"{entry['url']}: {entry['error']}" if entry.get("error") else f"{entry['url']}: {facts} facts")
    if not parts:
        lines = obs.text.strip().splitlines()
        parts = [lines[0] if lines else "(empty)"] + ([f"[errors: {', '.join(obs.errors)}]"] if obs.errors else [])
    return "; ".join(parts)[:SUMMARY_CHARS]
