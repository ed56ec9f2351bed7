"""Small inline SVG line charts of training curves, written by hand so a report needs no plotting library."""

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
