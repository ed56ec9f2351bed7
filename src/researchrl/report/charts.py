"""Small inline SVG charts of training curves, and a stacked bar of where each step's seconds went, written by hand so
a report needs no plotting library."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Any

WIDTH, HEIGHT = 380, 230
LEFT, RIGHT, TOP, BOTTOM = 58, 14, 30, 40  # plot margins in px: room for tick labels, title and x label


@dataclass(frozen=True)
class Series:
    """One chart: y over GRPO steps, with an optional (low, high) band such as mean ± std."""

    key: str  # the metrics.jsonl key it comes from (tests and CSS find the chart by it)
    title: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    band: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    band_label: str = ""


@dataclass(frozen=True)
class Curve:
    """Which metrics.jsonl key to draw; `std_key` adds a ± band, `complement` draws 1 - value (a rate of failures)."""

    title: str
    key: str
    std_key: str | None = None
    complement: bool = False


CURVES = (
    Curve("reward (mean ± std)", "reward", std_key="reward_std"),
    Curve("F1 (mean)", "rewards/f1/mean"),
    Curve("format-error rate", "rewards/format_ok/mean", complement=True),
    Curve("turns per episode", "rewards/turns/mean"),
    Curve("tool calls per episode", "rewards/tool_calls/mean"),
    Curve("KL to reference", "kl"),
    Curve("rollout tokens / second", "tokens_per_second/rollout"),
    Curve("seconds / step", "seconds/step"),
    Curve("search queries per episode", "behaviour/queries"),
    Curve("episodes with a bridge query", "behaviour/bridge_rate"),
    Curve("answers grounded in what was read", "behaviour/grounded_rate"),
)


def _number(value: Any) -> float | None:
    """A finite float, or None for absent, non-numeric or NaN/inf values (those points are skipped)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _curve(rows: list[dict[str, Any]], curve: Curve) -> Series | None:
    """The series of one key over steps; None when no row has a number for it."""
    xs, ys, lows, highs = [], [], [], []
    for row in rows:
        step, value = _number(row.get("step")), _number(row.get(curve.key))
        if step is None or value is None:
            continue
        value = 1.0 - value if curve.complement else value
        std = _number(row.get(curve.std_key)) if curve.std_key else None
        xs.append(step)
        ys.append(value)
        lows.append(value - std if std is not None else value)
        highs.append(value + std if std is not None else value)
    if not xs:
        return None
    has_band = any(lo != hi for lo, hi in zip(lows, highs))
    band = (tuple(lows), tuple(highs)) if has_band else None
    return Series(curve.key, curve.title, tuple(xs), tuple(ys), band, "± 1 std over the step's rollouts" if band else "")


def training_series(rows: list[dict[str, Any]]) -> list[Series]:
    """The standard curves present in metrics.jsonl, then one chart per numeric "web/..." cost key."""
    web_keys = sorted({k for row in rows for k, v in row.items() if k.startswith("web/") and _number(v) is not None})
    found = [_curve(rows, curve) for curve in (*CURVES, *(Curve(key, key) for key in web_keys))]
    return [s for s in found if s is not None]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values (1, 2, 2.5 or 5 × 10^k apart) covering [lo, hi]."""
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    ticks = [round(math.floor(lo / step) * step, 12)]
    while ticks[-1] < hi - step * 1e-9:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def tick_label(value: float, ticks: list[float]) -> str:
    """Enough decimals to tell neighbouring ticks apart; thousands get a k suffix."""
    if abs(value) >= 10_000:
        return f"{value / 1000:g}k"
    spacing = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = next(d for d in range(7) if abs(round(spacing, d) - spacing) < 1e-9 * max(1.0, spacing) or d == 6)
    text = f"{value:.{decimals}f}"
    return text.lstrip("-") if float(text) == 0 else text


def _scale(lo: float, hi: float, out_lo: float, out_hi: float):  # noqa: ANN202
    """Linear map from data range to pixel range."""
    span = (hi - lo) or 1.0
    return lambda v: out_lo + (v - lo) / span * (out_hi - out_lo)


def line_chart(series: Series) -> str:
    """One <svg> with title, both axes, ticks with labels, grid lines, the band, the line and point tooltips."""
    lows = series.band[0] if series.band else series.ys
    highs = series.band[1] if series.band else series.ys
    yticks = nice_ticks(min(lows), max(highs))
    xs_int = all(x == int(x) for x in series.xs)
    xticks = nice_ticks(min(series.xs), max(series.xs), count=min(6, max(2, len(series.xs))))
    if xs_int:
        xticks = sorted({float(round(t)) for t in xticks if t == int(t)} | {min(series.xs), max(series.xs)})
    x = _scale(xticks[0], xticks[-1], LEFT, WIDTH - RIGHT)
    y = _scale(yticks[0], yticks[-1], HEIGHT - BOTTOM, TOP)
    parts = [
        f'<svg class="chart" data-key="{escape(series.key)}" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{escape(series.title)}">',
        f'<text class="chart-title" x="{LEFT}" y="18">{escape(series.title)}</text>',
    ]
    for t in yticks:
        py = y(t)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py:.1f}" y2="{py:.1f}"/>')
        parts.append(f'<text class="tick ytick" x="{LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">{tick_label(t, yticks)}</text>')
    for t in xticks:
        px = x(t)
        parts.append(f'<line class="axis" x1="{px:.1f}" x2="{px:.1f}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM + 4}"/>')
        label = str(int(t)) if xs_int else tick_label(t, xticks)
        parts.append(f'<text class="tick xtick" x="{px:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{label}</text>')
    parts.append(f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{HEIGHT - BOTTOM}"/>')
    parts.append(f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM}"/>')
    parts.append(f'<text class="axis-label" x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 6}" text-anchor="middle">GRPO step</text>')
    if series.band:
        upper = [f"{x(a):.1f},{y(b):.1f}" for a, b in zip(series.xs, series.band[1])]
        lower = [f"{x(a):.1f},{y(b):.1f}" for a, b in zip(reversed(series.xs), reversed(series.band[0]))]
        parts.append(f'<polygon class="band" points="{" ".join(upper + lower)}"><title>{escape(series.band_label)}</title></polygon>')
    points = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(series.xs, series.ys))
    parts.append(f'<polyline class="line" points="{points}"/>')
    for a, b in zip(series.xs, series.ys):
        parts.append(f'<circle class="point" cx="{x(a):.1f}" cy="{y(b):.1f}" r="3" data-step="{a:g}" data-value="{b!r}">'
                     f"<title>step {a:g}: {b:.4g}</title></circle>")
    parts.append("</svg>")
    return "".join(parts)


# ---- where a step's seconds went --------------------------------------------------------------------------------

PHASES = (  # disjoint parts of a step's seconds, bottom to top of its bar, with their colours
    ("generation only", "#0969da"),
    ("generation and tools", "#8250df"),
    ("tools only", "#bf8700"),
    ("rest of rollout", "#8c959f"),
    ("update", "#1a7f37"),
)
TIMING_COLUMNS = (  # the per-step table: (column, metrics.jsonl key)
    ("rollout s", "time/rollout_s"), ("generation s", "time/generation_s"), ("tools s", "time/tools_s"),
    ("overlap s", "time/tools_overlap_s"), ("web_search s", "time/tool/web_search_s"),
    ("browse_webpage s", "time/tool/browse_webpage_s"), ("rest s", "time/other_s"),
    ("update s", "seconds/update"),
)


def step_phases(row: dict[str, Any]) -> dict[str, float] | None:
    """A step's seconds split into the PHASES (update only when logged); None without the rollout's time/ keys."""
    gen, tools, both, rollout = (_number(row.get(f"time/{k}_s")) for k in ("generation", "tools", "tools_overlap", "rollout"))
    if gen is None or tools is None or both is None or rollout is None:
        return None
    parts = {"generation only": gen - both, "generation and tools": both, "tools only": tools - both,
             "rest of rollout": max(0.0, rollout - (gen + tools - both))}
    update = _number(row.get("seconds/update"))
    if update is not None:
        parts["update"] = update
    return parts


def timing_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per step that logged the rollout's time/ keys, with the TIMING_COLUMNS it has."""
    return [{"step": row.get("step"), **{name: row[key] for name, key in TIMING_COLUMNS if _number(row.get(key)) is not None}}
            for row in rows if step_phases(row) is not None]


def phase_chart(rows: list[dict[str, Any]]) -> str | None:
    """A stacked bar of seconds per GRPO step, one colour per phase, with a legend; None when no step has time/ keys."""
    steps = [(_number(row.get("step")), step_phases(row)) for row in rows]
    steps = [(s, parts) for s, parts in steps if s is not None and parts is not None]
    if not steps:
        return None
    width, legend_y = 2 * WIDTH, HEIGHT + 8
    shown = [(name, colour) for name, colour in PHASES if any(name in parts for _, parts in steps)]
    yticks = nice_ticks(0.0, max(sum(parts.values()) for _, parts in steps) or 1.0)
    y = _scale(yticks[0], yticks[-1], HEIGHT - BOTTOM, TOP)
    slot = (width - RIGHT - LEFT) / len(steps)
    svg = [
        f'<svg class="chart phases" data-key="time" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {HEIGHT + 22}" '
        f'width="{width}" height="{HEIGHT + 22}" role="img" aria-label="seconds per step by phase">',
        f'<text class="chart-title" x="{LEFT}" y="18">seconds per step by phase</text>',
    ]
    for t in yticks:
        svg.append(f'<line class="grid" x1="{LEFT}" x2="{width - RIGHT}" y1="{y(t):.1f}" y2="{y(t):.1f}"/>')
        svg.append(f'<text class="tick ytick" x="{LEFT - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{tick_label(t, yticks)}</text>')
    label_every = math.ceil(len(steps) / 16)
    for i, (step, parts) in enumerate(steps):
        x, bottom = LEFT + slot * (i + 0.15), 0.0
        for name, colour in shown:
            if name in parts:
                top = bottom + parts[name]
                svg.append(f'<rect class="phase" data-step="{step:g}" data-phase="{name}" data-value="{parts[name]!r}" '
                           f'x="{x:.1f}" y="{y(top):.1f}" width="{slot * 0.7:.1f}" height="{y(bottom) - y(top):.1f}" '
                           f'fill="{colour}"><title>step {step:g}: {name} {parts[name]:.3g} s</title></rect>')
                bottom = top
        if i % label_every == 0:
            svg.append(f'<text class="tick xtick" x="{x + slot * 0.35:.1f}" y="{HEIGHT - BOTTOM + 16}" '
                       f'text-anchor="middle">{step:g}</text>')
    svg.append(f'<line class="axis" x1="{LEFT}" x2="{width - RIGHT}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM}"/>')
    svg.append(f'<text class="axis-label" x="{(LEFT + width - RIGHT) / 2}" y="{HEIGHT - 6}" text-anchor="middle">GRPO step</text>')
    x = LEFT
    for name, colour in shown:
        svg.append(f'<rect x="{x}" y="{legend_y}" width="10" height="10" fill="{colour}"/>'
                   f'<text class="tick legend" x="{x + 14}" y="{legend_y + 9}">{name}</text>')
        x += 14 + 6.5 * len(name) + 14
    svg.append("</svg>")
    return "".join(svg)
