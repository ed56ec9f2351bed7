"""Rich rendering of a trajectory: each turn's thinking, tool call, observation and answer, then a summary."""

from __future__ import annotations

import re

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from researchrl.types import Answer, FormatError, ToolCall, Trajectory
from researchrl.web.redact import redact

_THINK = re.compile(r"<think>(.*?)(</think>|$)", re.DOTALL)


def _think(text: str) -> str:
    """The thinking part of a turn, or the raw text when there is none."""
    match = _THINK.search(text)
    return (match.group(1) if match else text).strip()


def _text(text: str) -> Text:
    """Model and provider text as the console shows it: redacted, so no key is ever printed."""
    return Text(redact(text))


def print_trajectory(console: Console, trajectory: Trajectory, max_observation_chars: int = 1500) -> None:
    """Print the episode turn by turn (observations shortened) and a summary table."""
    console.print(Panel(_text(trajectory.question.question), title="question", border_style="bold"))
    for n, turn in enumerate(trajectory.turns, 1):
        console.print(Panel(_text(_think(turn.text)), title=f"turn {n} · think", border_style="dim"))
        action = turn.action
        if isinstance(action, ToolCall):
            console.print(Panel(_text(f"{action.name}({action.arguments})"), title="tool call", border_style="cyan"))
        elif isinstance(action, Answer):
            console.print(Panel(_text(action.text), title="answer", border_style="green"))
        elif isinstance(action, FormatError):
            console.print(Panel(_text(f"{action.reason}\n\n{turn.text}"), title="format error", border_style="red"))
        if turn.observation is not None:
            obs = redact(turn.observation.text)  # before the cut, so no piece of a key is kept
            shown = obs if len(obs) <= max_observation_chars else obs[:max_observation_chars] + " …"
            errors = f" · errors: {', '.join(turn.observation.errors)}" if turn.observation.errors else ""
            console.print(Panel(Text(shown), title=f"observation{errors}", border_style="yellow"))
    console.print(summary_table(trajectory))


def summary_table(trajectory: Trajectory) -> Table:
    """One row per fact a user checks first: how it ended, reward, tokens, tools."""
    table = Table(show_header=False, box=None)
    reward = trajectory.reward
    rows = [
        ("termination", trajectory.termination),
        ("answer", trajectory.answer if trajectory.answer is not None else "—"),
        ("gold", " | ".join(trajectory.question.answers) or "— (pass --gold to score)"),
        ("reward", f"{reward.reward:.3f}" + (f" (format: {reward.format_error})" if reward and reward.format_error else "") if reward else "—"),
        ("turns", str(len(trajectory.turns))),
        ("tool calls", ", ".join(c.name for c in trajectory.tool_calls) or "none"),
        ("tool errors", ", ".join(trajectory.tool_errors) or "none"),
        ("tokens", _tokens(trajectory)),
    ]
    for key, value in rows:
        table.add_row(Text(key, style="bold"), _text(value))
    return table


def _tokens(trajectory: Trajectory) -> str:
    """Model tokens as counted (a chat endpoint's by its usage; bytes are never called tokens), and whether exact."""
    counts = trajectory.token_counts()
    if counts is None:
        size = len(trajectory.prompt_ids) + len(trajectory.completion_ids)
        return f"not reported by the server (the transcript is {size} bytes)"
    prompt, completion, sampled = counts
    how = "" if trajectory.token_unit == "token" else ", by the server's usage"
    exact = "" if trajectory.exact_tokens or trajectory.token_unit == "byte" else ", ids re-encoded: not the sampled ones"
    return f"{prompt} prompt + {completion} completion ({sampled} sampled{how}{exact})"


def web_summary(metrics: dict[str, float]) -> str:
    """One line of what the web cost (from Ledger.metrics()): upstream calls by kind, cache hits, USD."""
    calls: dict[str, float] = {}
    hits = 0.0
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 4 and parts[1] == "calls":
            calls[parts[2]] = calls.get(parts[2], 0.0) + value
        elif len(parts) == 4 and parts[1] == "hits":
            hits += value
    made = ", ".join(f"{int(n)} {kind}" for kind, n in sorted(calls.items())) or "none"
    return f"web: upstream calls {made}; {int(hits)} served from cache; ${metrics.get('web/cost_usd_run', 0.0):.4f}"
