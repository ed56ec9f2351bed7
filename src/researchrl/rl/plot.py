"""One PNG of a run's curves: reward, format-error rate and turns per GRPO step, where each step's seconds went, and
the rollouts' research behaviour (`eval.behaviour`)."""

from __future__ import annotations

import json
from pathlib import Path

from researchrl.report.charts import PHASES, step_phases

BEHAVIOUR_LINES = (("bridge query", "behaviour/bridge_rate"), ("search after browse", "behaviour/iterative_rate"),
                   ("grounded answer", "behaviour/grounded_rate"), ("planned", "behaviour/planning_rate"))


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl rows in step order."""
    if not path.exists():
        return []
    return sorted((json.loads(line) for line in path.read_text().splitlines() if line.strip()), key=lambda r: r["step"])


def plot_run(metrics: Path, out: Path) -> Path:
    """Draw the three curves (matplotlib, headless), a panel of stacked seconds per phase when the steps logged the
    rollout's time/ keys and one of behaviour rates when they logged those; a run with no steps yet gets empty axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics)
    steps = [r["step"] for r in rows]
    series = [
        ("reward (mean)", [r.get("rewards/deepresearcher_reward/mean") for r in rows]),
        ("format-error rate", [1.0 - r["rewards/format_ok/mean"] if "rewards/format_ok/mean" in r else None for r in rows]),
        ("turns (mean)", [r.get("rewards/turns/mean") for r in rows]),
    ]
    timed = [(r["step"], parts) for r in rows if (parts := step_phases(r)) is not None]
    behaved = any(key in r for r in rows for _, key in BEHAVIOUR_LINES)
    fig, axes = plt.subplots(1, 3 + bool(timed) + behaved, figsize=(12 + 5.5 * bool(timed) + 5 * behaved, 3.2))
    for ax, (title, values) in zip(axes, series):
        points = [(s, v) for s, v in zip(steps, values) if v is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        ax.set_title(title)
        ax.set_xlabel("GRPO step")
        ax.grid(alpha=0.3)
    if timed:
        _phase_bars(axes[3], timed)
    if behaved:
        _behaviour_lines(axes[-1], rows)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _phase_bars(ax, timed: list[tuple[int, dict[str, float]]]) -> None:  # noqa: ANN001
    """Seconds per step stacked by phase (report.charts.PHASES), with a legend."""
    bottoms = [0.0] * len(timed)
    for name, colour in PHASES:
        heights = [parts.get(name, 0.0) for _, parts in timed]
        if any(name in parts for _, parts in timed):
            ax.bar([s for s, _ in timed], heights, bottom=bottoms, color=colour, label=name, width=0.7)
            bottoms = [b + h for b, h in zip(bottoms, heights)]
    ax.set_title("seconds per step by phase")
    ax.set_xlabel("GRPO step")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(alpha=0.3, axis="y")


def _behaviour_lines(ax, rows: list[dict]) -> None:  # noqa: ANN001
    """Shares of each step's rollouts showing a behaviour (grounding: of answered ones), one line each, 0 to 1."""
    for label, key in BEHAVIOUR_LINES:
        points = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("research behaviour")
    ax.set_xlabel("GRPO step")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(alpha=0.3)
