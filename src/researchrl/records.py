"""JSON-ready records of trajectories for trajectories.jsonl, eval records and reports (no token ids: counts only)."""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from researchrl.errors import UserError
from researchrl.types import Answer, FormatError, ToolCall, Trajectory
from researchrl.web.redact import scrub


def trajectory_record(trajectory: Trajectory, **extra: Any) -> dict[str, Any]:
    """Question, every turn (text, action, observation), reward parts and token counts; every string redacted."""
    turns = []
    for turn in trajectory.turns:
        action = turn.action
        row: dict[str, Any] = {"text": turn.text, "finish_reason": turn.finish_reason}
        if trajectory.token_unit == "token":
            row["sampled_tokens"] = len(turn.token_ids)
        elif turn.usage is not None:
            row["sampled_tokens"] = turn.usage[1]
        if isinstance(action, ToolCall):
            row["tool_call"] = {"name": action.name, "arguments": action.arguments}
        elif isinstance(action, Answer):
            row["answer"] = action.text
        elif isinstance(action, FormatError):
            row["format_error"] = action.reason
        if turn.observation is not None:
            row["observation"] = turn.observation.text
            row["observation_errors"] = list(turn.observation.errors)
            if trajectory.token_unit == "token":
                row["observation_tokens"] = len(turn.observation_ids)
        turns.append(row)
    reward = trajectory.reward
    prompt, completion, sampled = trajectory.token_counts() or (None, None, None)
    return scrub({
        **extra,
        "question_id": trajectory.question.id,
        "question": trajectory.question.question,
        "golds": list(trajectory.question.answers),
        "termination": trajectory.termination,
        "answer": trajectory.answer,
        "reward": reward.reward if reward else None,
        "format_ok": reward.format_ok if reward else None,
        "format_error": reward.format_error if reward else None,
        "f1": reward.f1 if reward else None,
        "em": reward.em if reward else None,
        "tool_calls": [c.name for c in trajectory.tool_calls],
        "tool_errors": trajectory.tool_errors,
        "sources": sources(trajectory),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "sampled_tokens": sampled,
        "exact_tokens": trajectory.exact_tokens,
        **({"transcript_bytes": len(trajectory.prompt_ids) + len(trajectory.completion_ids)}
           if trajectory.token_unit == "byte" else {}),
        "tokens_sha256": tokens_digest(trajectory),
        "turns": turns,
    })


_READ = re.compile(r"""\{'url': (?:'([^']*)'|"([^"]*)"), 'information': \[\{""")  # an entry with information


def sources(trajectory: Trajectory) -> list[str]:
    """The URLs the answer rests on: every page a browse call read something from, in first-read order."""
    urls: list[str] = []
    for turn in trajectory.turns:
        action, obs = turn.action, turn.observation
        if isinstance(action, ToolCall) and action.name == "browse_webpage" and obs is not None:
            urls += [url for url in read_urls(obs.text) if url not in urls]
    return urls


def read_urls(observation: str) -> list[str]:
    """URLs a browse observation (a repr of [{'url', 'information', 'error'?}, ...]) read something from."""
    try:
        entries = ast.literal_eval(observation)
    except (ValueError, SyntaxError, MemoryError, RecursionError):  # cut short past the observation limit
        return [single or double for single, double in _READ.findall(observation)]
    return [str(e["url"]) for e in entries if isinstance(e, dict) and e.get("information")] if isinstance(entries, list) else []


def tokens_digest(trajectory: Trajectory) -> str:
    """One hash of the exact prompt ids, completion ids and loss mask: equal digests mean token-identical episodes."""
    payload = json.dumps([trajectory.prompt_ids, trajectory.completion_ids, trajectory.mask], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def write_records(path: Path, trajectories: list[Trajectory], append: bool, **extra: Any) -> None:
    """One JSON line per trajectory; `append` for logs that grow step by step, else the file is replaced."""
    with path.open("a" if append else "w") as f:
        for t in trajectories:
            f.write(json.dumps(trajectory_record(t, **extra)) + "\n")


def iter_jsonl(path: Path, keep: set[int] | None = None) -> Iterator[dict[str, Any]]:
    """A JSONL file's records one at a time (only the `keep` indices when given); a last line still being written
    (no newline yet) is skipped, any other malformed line is a UserError naming the file and line."""
    if not path.exists():
        return
    index = 0
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            if keep is None or index in keep:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as err:
                    if line.endswith("\n"):
                        raise UserError(f"{path}:{number} is not valid JSON: {err}") from None
            index += 1
