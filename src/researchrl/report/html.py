"""One self-contained HTML page for a run directory: header, training curves, evaluation tables, research behaviour
per trajectory file, trajectories.

Every string taken from the run is redacted and escaped (trajectories hold model output and web text). The page
loads nothing from the network: CSS, SVG charts and a little JS (filters, expand all) are inline, and it reads fine
without JS.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

from researchrl.errors import UserError
from researchrl.eval.behaviour import TAGS, aggregate, behaviour
from researchrl.records import iter_jsonl
from researchrl.report.charts import line_chart, phase_chart, timing_rows, training_series
from researchrl.report.style import PAGE_CSS, PAGE_JS
from researchrl.web.redact import scrub

MAX_TRAJECTORIES = 500  # per page, spread evenly over the files so huge runs stay a few MB
OBSERVATION_PREVIEW_CHARS = 600  # longer observations show this much and fold the rest
MAX_TEXT_CHARS = 20_000  # beyond this a single text is cut, with a pointer to the file holding it all
PHASE_ORDER = ("before", "after_sft", "after")
KEY_SETTINGS = ("preset", "model", "group_size", "questions_per_step", "max_steps", "learning_rate", "beta",
                "loss_type", "temperature", "max_turns", "max_new_tokens", "max_context_tokens", "seed")
_SECRET_KEY = re.compile(r"(^|_)(api_key|secret|password|token)$", re.IGNORECASE)
_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL)
_STARTED = re.compile(r"(\d{8}-\d{6})")


class RunDirError(UserError):
    """A run directory the page cannot be made of: not a directory, no run files, a file that is not valid JSON."""


@dataclass(frozen=True)
class TrajectoryFile:
    """A JSONL of trajectory records: where it is, how it is labelled on the page, how many records it holds."""

    path: Path
    label: str
    total: int


@dataclass(frozen=True)
class EvalTables:
    """One eval directory's tables.json: our rows per source, and published reference rows kept apart."""

    name: str
    k: int | None
    judge: dict[str, Any] | None
    rows: list[dict[str, Any]]
    reference: list[dict[str, Any]]


@dataclass(frozen=True)
class RunFiles:
    """What a run (or eval) directory holds, read once; absent pieces are empty."""

    dir: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    phases: dict[str, dict[str, Any]]
    paired: dict[str, dict[str, Any]]  # paired.json: "later - earlier" -> metric -> bootstrap interval
    evals: list[EvalTables]
    trajectory_files: list[TrajectoryFile]


def build_report(run_dir: Path, max_trajectories: int = MAX_TRAJECTORIES) -> str:
    """The whole page as one string; RunDirError when `run_dir` holds none of a run's files or a malformed one."""
    run = read_run(Path(run_dir))
    shown = _spread(run.trajectory_files, max_trajectories)
    body = [_header(run), _curves(run), _evaluation(run), _behaviour(run), _trajectories(run, shown, max_trajectories)]
    name = escape(run.dir.name)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>researchrl report · {name}</title><style>{PAGE_CSS}</style></head>"
            f'<body><main>{"".join(body)}</main><script>{PAGE_JS}</script></body></html>\n')


def write_report(run_dir: Path, out: Path | None = None, max_trajectories: int = MAX_TRAJECTORIES) -> Path:
    """Write the page (default `<run_dir>/report.html`) and return where it went; RunDirError when it cannot be."""
    default = Path(run_dir).with_suffix(".html") if Path(run_dir).is_file() else Path(run_dir) / "report.html"
    target = Path(out) if out is not None else default
    text = build_report(Path(run_dir), max_trajectories)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as err:  # a read-only directory, a full disk, a file where a directory should be
        raise RunDirError(f"cannot write {target}: {err.strerror or err}") from None
    return target


# ---- reading the directory ----------------------------------------------------------------------------------

def read_run(run_dir: Path) -> RunFiles:
    """Read config, metrics, eval summaries and find every trajectory file and eval directory under `run_dir`.

    A `.jsonl` file of trajectory records (a served log, `ask --file` answers) is a page of those trajectories alone.
    """
    if run_dir.is_file() and run_dir.suffix == ".jsonl":
        return RunFiles(run_dir.resolve(), {}, [], {}, {}, [], [TrajectoryFile(run_dir, run_dir.name, _count_lines(run_dir))])
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a directory (nor a .jsonl file of trajectory records)")
    eval_dirs = sorted({p.parent for name in ("tables.json", "records.jsonl") for p in run_dir.rglob(name)})
    phase_files = sorted(run_dir.glob("eval_*.jsonl"), key=lambda p: _phase_rank(p.stem.removeprefix("eval_")))
    found = [p for p in (run_dir / "config.json", run_dir / "metrics.jsonl", run_dir / "eval.json",
                         run_dir / "trajectories.jsonl") if p.exists()]
    if not found and not phase_files and not eval_dirs:
        raise RunDirError(f"{run_dir} is not a run directory: no config.json, metrics.jsonl, eval.json, "
                         "trajectories.jsonl, eval_*.jsonl or tables.json/records.jsonl found")
    files = [(run_dir / "trajectories.jsonl", "training")]
    files += [(p, f"eval {p.stem.removeprefix('eval_')}") for p in phase_files]
    files += [(d / "records.jsonl", _relative(d / "records.jsonl", run_dir)) for d in eval_dirs]
    phases = _read_json(run_dir / "eval.json", {})
    if not all(isinstance(summary, dict) for summary in phases.values()):
        raise RunDirError(f"{run_dir / 'eval.json'} should map each phase to a summary object")
    return RunFiles(
        dir=run_dir.resolve(),
        config=_read_json(run_dir / "config.json", {}),
        metrics=sorted(read_jsonl(run_dir / "metrics.jsonl"), key=lambda r: r.get("step", 0)),
        phases=dict(sorted(phases.items(), key=lambda kv: _phase_rank(kv[0]))),
        paired=_read_json(run_dir / "paired.json", {}),
        evals=[_read_tables(d, run_dir) for d in eval_dirs if (d / "tables.json").exists()],
        trajectory_files=[TrajectoryFile(p, label, _count_lines(p)) for p, label in files if p.exists()],
    )


def read_jsonl(path: Path, keep: set[int] | None = None) -> list[dict[str, Any]]:
    """Records of a JSONL (only the `keep` indices when given), redacted; a final line still being written is ignored."""
    return [scrub(row) for row in iter_jsonl(path, keep)]  # files written before redaction, or by hand


def _read_json(path: Path, default: dict[str, Any]) -> dict[str, Any]:
    """A JSON object file, redacted, or `default` when absent; a malformed one is a RunDirError naming the file."""
    if not path.exists():
        return default
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunDirError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise RunDirError(f"{path} should hold a JSON object")
    return scrub(value)


def _read_tables(eval_dir: Path, run_dir: Path) -> EvalTables:
    """tables.json in the documented shape: {"k", "judge", "rows", "reference"}."""
    data = _read_json(eval_dir / "tables.json", {})
    return EvalTables(_relative(eval_dir, run_dir), data.get("k"), data.get("judge"),
                      list(data.get("rows") or []), list(data.get("reference") or []))


def _count_lines(path: Path) -> int:
    """Non-blank lines, streamed (trajectory logs can be large)."""
    with path.open(encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def _relative(path: Path, root: Path) -> str:
    """A path as shown on the page: relative to the run directory, '.' for the directory itself."""
    return str(path.relative_to(root)) if path != root else "."


def _phase_rank(phase: str) -> tuple[int, str]:
    """before, after_sft, after first, in that order; any other phase after them by name."""
    return (PHASE_ORDER.index(phase) if phase in PHASE_ORDER else len(PHASE_ORDER), phase)


def _spread(files: list[TrajectoryFile], cap: int) -> list[tuple[TrajectoryFile, list[dict[str, Any]]]]:
    """At most `cap` records over all files: small files whole, the rest share the budget, evenly spaced in each."""
    budget, left, takes = cap, len(files), {}
    for f in sorted(files, key=lambda f: f.total):
        takes[f.path] = min(f.total, budget // left)
        budget, left = budget - takes[f.path], left - 1
    picked = []
    for f in files:
        take = takes[f.path]
        keep = {i * f.total // take for i in range(take)} if take else set()
        picked.append((f, read_jsonl(f.path, keep)))
    return picked


# ---- sections -----------------------------------------------------------------------------------------------

def _header(run: RunFiles) -> str:
    """Run name, when, the key settings, judge prompt hashes, and the full config folded."""
    started = _STARTED.search(run.dir.name)
    when = datetime.strptime(started.group(1), "%Y%m%d-%H%M%S").strftime("%Y-%m-%d %H:%M:%S") if started else "—"
    mtimes = [p.stat().st_mtime for p in (run.dir.iterdir() if run.dir.is_dir() else [run.dir]) if p.is_file()]
    updated = datetime.fromtimestamp(max(mtimes), timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if mtimes else "—"
    facts = [("started", when), ("last written", updated), ("steps logged", str(len(run.metrics)))]
    facts += [(k, _show_config(k, run.config[k])) for k in KEY_SETTINGS if k in run.config]
    for ev in run.evals:
        sha = next((str(v) for k, v in (ev.judge or {}).items() if k.startswith("prompt_sha") and v), None)
        if sha:
            facts.append((f"judge prompt sha ({ev.name})", sha))
    grid = "".join(f'<div class="fact" data-key="{escape(k)}"><span class="fact-key">{escape(k)}</span>'
                   f'<span class="fact-value" title="{escape(v)}">{escape(_short(v))}</span></div>' for k, v in facts)
    config = "".join(f"<tr><th>{escape(k)}</th><td>{escape(_show_config(k, v))}</td></tr>" for k, v in run.config.items())
    full = (f'<details class="config"><summary>full config ({len(run.config)} keys)</summary>'
            f"<table>{config}</table></details>") if run.config else '<p class="missing">no config.json</p>'
    nav = ('<nav><a href="#curves">curves</a><a href="#evaluation">evaluation</a><a href="#behaviour">behaviour</a>'
           '<a href="#trajectories">trajectories</a></nav>')
    return (f'<header><h1>researchrl report <span class="run-name">{escape(run.dir.name)}</span></h1>'
            f'<p class="path">{escape(str(run.dir))}</p>{nav}<div class="facts-grid">{grid}</div>{full}</header>')


def _short(text: str, limit: int = 28) -> str:
    """A header value cut to fit its box (hashes, long paths); the full text stays in the title attribute."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _show_config(key: str, value: Any) -> str:
    """A config value as text; keys that name a secret itself are masked (a report never shows one)."""
    if _SECRET_KEY.search(key) and value:
        return "•••• (hidden)"
    return value if isinstance(value, str) else json.dumps(value)


def _curves(run: RunFiles) -> str:
    """One small chart per metric present, then where each step's seconds went; a note when no step is logged yet."""
    series = training_series(run.metrics)
    if not series:
        body = '<p class="missing">No metrics yet: metrics.jsonl is missing or empty (no GRPO step logged).</p>'
    else:
        body = f'<div class="charts">{"".join(line_chart(s) for s in series)}</div>'
    timing = phase_chart(run.metrics)
    if timing:  # the rollout's time/ keys: where each step's seconds went
        body += (f'<h3>Where each step’s seconds went</h3><div class="phases">{timing}</div>'
                 f'<details class="config"><summary>seconds per step by phase (table)</summary>'
                 f'{_table(timing_rows(run.metrics), "timing")}</details>')
    return f'<section id="curves"><h2>Training curves</h2>{body}</section>'


def _evaluation(run: RunFiles) -> str:
    """eval.json phases, then each eval directory's tables with published reference rows shown apart."""
    parts = ['<section id="evaluation"><h2>Evaluation</h2>']
    if not run.phases and not run.evals:
        parts.append('<p class="missing">No evaluation yet: no eval.json and no eval directory with tables.json.</p>')
    if run.phases:
        rows = [{"phase": phase, **{k: v for k, v in summary.items() if not k.startswith("behaviour/")}}
                for phase, summary in run.phases.items()]  # behaviour: its own panel, from the phases' records
        parts.append("<h3>Held-out evaluation by phase <small>eval.json</small></h3>")
        parts.append(_table(rows, "eval-phases"))
    if run.paired:
        rows = [{"difference": name, "metric": metric, **interval} for name, metrics in run.paired.items()
                for metric, interval in metrics.items() if isinstance(interval, dict)]
        parts.append("<h3>Paired differences <small>paired.json</small></h3>")
        parts.append(_table(rows, "paired") + '<p class="meta">Later phase minus earlier on the same held-out '
                     "questions; low/high: paired bootstrap percentile interval at the given level.</p>")
    for ev in run.evals:
        judge = ", ".join(f"{k} {v}" for k, v in (ev.judge or {}).items()) or "none (MBE = EM)"
        parts.append(f'<h3>Eval <code>{escape(ev.name)}</code></h3><p class="meta">k = {escape(str(ev.k))} · '
                     f"judge: {escape(judge)}</p>")
        rows = [{k: v for k, v in row.items() if k != "behaviour"} for row in ev.rows]  # shown in the behaviour panel
        parts.append(_table(rows, "eval-rows") if rows else '<p class="missing">tables.json has no rows yet.</p>')
        if ev.reference:
            parts.append('<p class="meta">Published reference numbers, not produced by this run:</p>')
            parts.append(_table(ev.reference, "reference"))
    parts.append("</section>")
    return "".join(parts)


def _behaviour(run: RunFiles) -> str:
    """Research behaviour (`eval.behaviour`) of every trajectory file, over all its records, not only those shown."""
    rows = []
    for f in run.trajectory_files:
        found = [behaviour(record) for record in iter_jsonl(f.path)]
        if found:
            summary = {k.removeprefix("behaviour/"): v for k, v in aggregate(found).items()}
            rows.append({"file": f.label, "episodes": len(found), **summary})
    body = (_table(rows, "behaviour") + '<p class="meta">Means per episode; rates of episodes, except cross_checked, '
            "grounded, unsupported and gold_unseen (of answered episodes), honest and confident_wrong (of answered "
            "episodes whose gold no observation held) and reflection (of failed browses). Rules: "
            "<code>researchrl.eval.behaviour</code>.</p>") if rows else '<p class="missing">No trajectories yet.</p>'
    return f'<section id="behaviour"><h2>Research behaviour</h2>{body}</section>'


def _table(rows: list[dict[str, Any]], kind: str) -> str:
    """A table over the union of the rows' keys (first-seen order); numbers keep their exact value in data-value."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f'<th>{escape(c).replace("_", "_<wbr>")}</th>' for c in columns)  # long names may wrap
    body = []
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                text = str(value) if isinstance(value, int) else f"{value:.{3 if abs(value) < 10 else 1}f}"
                cells.append(f'<td class="num" data-key="{escape(c)}" data-value="{value!r}">{text}</td>')
            else:
                cells.append(f'<td data-key="{escape(c)}">{escape("—" if value is None else str(value))}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<div class="table-wrap"><table class="{kind}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _trajectories(run: RunFiles, shown: list[tuple[TrajectoryFile, list[dict[str, Any]]]], cap: int) -> str:
    """Filters, a count that says how many are shown of how many, then one <details> per trajectory."""
    total = sum(f.total for f in run.trajectory_files)
    count = sum(len(records) for _, records in shown)
    parts = ['<section id="trajectories"><h2>Trajectories</h2>']
    if total == 0:
        parts.append('<p class="missing">No trajectories yet: no trajectories.jsonl, eval_*.jsonl or records.jsonl.</p>')
        return "".join(parts) + "</section>"
    capped = f" (capped at {cap}, evenly spaced in each file)" if count < total else ""
    files = ", ".join(f"{escape(f.label)}: {len(r)} of {f.total}" for f, r in shown)
    parts.append(f'<p class="meta">Showing {count} of {total} trajectories{capped}. {files}.</p>')
    steps = sorted({r["step"] for _, records in shown for r in records if isinstance(r.get("step"), int)})
    outcomes = sorted({str(r.get("termination")) for _, records in shown for r in records})
    parts.append(_filters([f.label for f, _ in shown], steps, outcomes, list(TAGS.items())))
    for f, records in shown:
        parts.extend(_trajectory(record, f) for record in records)
    parts.append("</section>")
    return "".join(parts)


def _filters(labels: list[str], steps: list[int], outcomes: list[str], behaviours: list[tuple[str, str]]) -> str:
    """Select boxes the inline script wires up; hidden until it runs, so a page without JS shows no dead controls."""
    def select(name: str, title: str, options: list[tuple[str, str]]) -> str:
        opts = "".join(f'<option value="{escape(v)}">{escape(t)}</option>' for v, t in options)
        return f'<label>{title} <select id="f-{name}" data-filter="{name}"><option value="">all</option>{opts}</select></label>'

    outcome_options = [("positive", "reward > 0"), ("nonpositive", "reward ≤ 0")] + [(o, o) for o in outcomes]
    return ('<div id="filters" class="filters" hidden>' + select("set", "file", [(x, x) for x in labels])
            + select("step", "step", [(str(s), str(s)) for s in steps]) + select("outcome", "outcome", outcome_options)
            + select("behaviour", "behaviour", behaviours)
            + '<button type="button" id="expand-all">expand all</button>'
            '<button type="button" id="collapse-all">collapse all</button><span id="f-count"></span></div>')


def _trajectory(record: dict[str, Any], source: TrajectoryFile) -> str:
    """One collapsible trajectory: badges and question in the summary; golds, answer and every turn inside."""
    reward, step = record.get("reward"), record.get("step")
    where = f"{source.label} · step {step}" if step is not None else source.label
    if record.get("source") is not None:
        where += f" · {record['source']}"
    badges = [f'<span class="badge where">{escape(where)}</span>', _score_badge("reward", reward, signed=True),
              _score_badge("F1", record.get("f1")), _score_badge("EM", record.get("em"))]
    if "mbe" in record:
        badges.append(_score_badge("MBE", record["mbe"]))
    termination = str(record.get("termination"))
    badges.append(f'<span class="badge term term-{escape(termination)}">{escape(termination)}</span>')
    golds = " | ".join(str(g) for g in record.get("golds") or []) or "—"
    answer = record.get("answer")
    facts = [("gold", golds), ("answer", "—" if answer is None else str(answer)),
             ("tool calls", ", ".join(map(str, record.get("tool_calls") or [])) or "none"),
             ("tool errors", ", ".join(map(str, record.get("tool_errors") or [])) or "none")]
    if record.get("format_error"):
        facts.append(("format error", str(record["format_error"])))
    tags = behaviour(record).tags()
    facts.append(("behaviour", ", ".join(TAGS[t] for t in tags) or "none of those measured"))
    verdict = record.get("judge")
    if isinstance(verdict, dict):
        said = {True: "correct", False: "wrong", None: "undecided"}.get(verdict.get("correct"), str(verdict.get("correct")))
        notes = " · ".join(str(verdict[k]) for k in ("rationale", "error") if verdict.get(k))
        facts.append(("judge", f"{said} ({verdict.get('source')})" + (f": {notes}" if notes else "")))
    dl = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts)
    turns = "".join(_turn(n, turn, source) for n, turn in enumerate(record.get("turns") or [], 1))
    data = (f'data-set="{escape(source.label)}" data-step="{escape(str(step if step is not None else ""))}" '
            f'data-reward="{escape(repr(reward))}" data-outcome="{escape(termination)}" '
            f'data-behaviour="{" ".join(tags)}"')
    return (f'<details class="traj" {data}><summary>{"".join(badges)}'
            f'<span class="question">{escape(str(record.get("question", "")))}</span></summary>'
            f'<div class="traj-body"><dl class="facts">{dl}</dl><ol class="turns">{turns}</ol></div></details>')


def _score_badge(name: str, value: Any, signed: bool = False) -> str:
    """A coloured number: green above zero, red below (reward only), grey otherwise or when absent."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return f'<span class="badge score none" data-score="{name}">{name} —</span>'
    tone = "pos" if value > 0 else ("neg" if signed and value < 0 else "zero")
    return f'<span class="badge score {tone}" data-score="{name}" data-value="{value!r}">{name} {value:.2f}</span>'


def _turn(number: int, turn: dict[str, Any], source: TrajectoryFile) -> str:
    """Think text, then the action (tool call, answer or format error), then the observation, each marked by kind."""
    text = str(turn.get("text", ""))
    blocks = []
    if turn.get("format_error") is not None:
        blocks.append(_block("turn-error", "format error", text, source, str(turn["format_error"])))
    else:
        match = _THINK.search(text)
        blocks.append(_block("turn-think", "think" if match else "output", match.group(1).strip() if match else text, source))
    call = turn.get("tool_call")
    if isinstance(call, dict):
        arguments = json.dumps(call.get("arguments"), indent=1, ensure_ascii=False)
        blocks.append(_block("turn-tool", "tool call", arguments, source, str(call.get("name"))))
    if turn.get("answer") is not None:
        blocks.append(_block("turn-answer", "answer", str(turn["answer"]), source))
    if turn.get("observation") is not None:
        blocks.append(_observation(str(turn["observation"]), [str(e) for e in turn.get("observation_errors") or []], source))
    meta = f"turn {number} · {escape(str(turn.get('sampled_tokens', '?')))} tokens · {escape(str(turn.get('finish_reason', '?')))}"
    return f'<li class="turn"><div class="turn-meta">{meta}</div>{"".join(blocks)}</li>'


def _block(kind: str, label: str, text: str, source: TrajectoryFile, detail: str = "") -> str:
    """A labelled block of preformatted, escaped text; `detail` (a tool name, an error reason) keeps its case."""
    extra = f' <span class="detail">{escape(detail)}</span>' if detail else ""
    return f'<div class="{kind}"><div class="kind">{label}{extra}</div><pre>{_clipped(text, source)}</pre></div>'


def _observation(text: str, errors: list[str], source: TrajectoryFile) -> str:
    """The observation with its error kinds as chips and marked in the text; the part past the preview folded."""
    chips = "".join(f'<span class="err-kind">{escape(e)}</span>' for e in errors)
    head, rest = text[:OBSERVATION_PREVIEW_CHARS], text[OBSERVATION_PREVIEW_CHARS:]
    body = f"<pre>{_mark_errors(_clipped(head, source), errors)}</pre>"
    if rest:
        body += (f'<details class="more"><summary>show the remaining {len(rest):,} characters</summary>'
                 f"<pre>{_mark_errors(_clipped(rest, source), errors)}</pre></details>")
    kind = "turn-obs has-errors" if errors else "turn-obs"
    return f'<div class="{kind}"><div class="kind">observation {chips}</div>{body}</div>'


def _clipped(text: str, source: TrajectoryFile) -> str:
    """Escaped text, cut at MAX_TEXT_CHARS with a note naming the file that holds all of it."""
    if len(text) <= MAX_TEXT_CHARS:
        return escape(text)
    note = f"\n… {len(text) - MAX_TEXT_CHARS:,} more characters not included here (full text in {source.path.name})"
    return escape(text[:MAX_TEXT_CHARS]) + f'<span class="clip">{escape(note)}</span>'


def _mark_errors(escaped: str, errors: list[str]) -> str:
    """Highlight error-kind identifiers (like http_404) where they appear in already-escaped text."""
    for kind in {e for e in errors if re.fullmatch(r"[A-Za-z0-9_.:-]{3,}", e)}:
        escaped = re.sub(rf"(?<![\w&#]){re.escape(kind)}(?![\w;])", f'<mark class="err">{kind}</mark>', escaped)
    return escaped
