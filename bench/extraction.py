"""Page-text extraction with comments dropped (include_comments=False), kept (True, trafilatura's default), and kept
only on pages that declare themselves forum threads or Q&A pages ("auto", what `extract_text` does), on the shared
real HTML pages with ground-truth main text: word-level F1 per page type and overall, and pages/s.

    .venv/bin/python bench/extraction.py [--limit N]

Pages (../shared/data/html/):
- scrapinghub_aeb: 181 news/blog article pages, ground truth `articleBody` (type "news").
- mozilla_readability_test_pages: 130 pages, ground truth Readability's expected article HTML, as text. Typed from
  the page itself: "encyclopedia" (a Wikipedia title), "synthetic" (the small hand-made unit cases, source under
  5 KB), else "article".
Neither set has forum or Q&A pages (none is `is_discussion`), and both ground truths leave reader comments out.

F1 is `researchrl.reward.answer.f1(text, [truth], squad=True)`: SQuAD normalisation (lower-case, punctuation and
a/an/the deleted), F1 over word multisets; precision and recall are over the same words. Each setting runs
`researchrl.tools.pages.extract_main` (the uncached production path, with its visible-text fallback and, comments
kept, its removal of comment lines that repeat the main text: 2 of the 311 pages); pages/s is
per CPU second of this process (the machine is shared): the least of `--repeat` runs, the settings taking turns.
"comments found" is the cross-cut of pages whose text differs between off and on, where the choice matters.
Prints figures and ratios, writes bench/results/extraction.json. Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lxml.html

from researchrl.reward.answer import f1, normalize
from researchrl.sandbox.config import shared_data_dir
from researchrl.tools.pages import extract_main, is_discussion

HERE = Path(__file__).parent
SETTINGS = {"off": False, "on": True, "auto": None}  # include_comments; None: `is_discussion` decides
TYPES = ("news", "article", "encyclopedia", "synthetic")
SYNTHETIC_BYTES = 5000  # the Readability set's unit cases are all under this; its smallest real page is 10 KB
CANONICAL = re.compile(r'<link[^>]+rel="canonical"[^>]+href="([^"]+)"')
WIKIPEDIA = re.compile(r"<title>[^<]*Wikipedia\s*</title>")


@dataclass
class Sample:
    """One page with its ground truth and type."""

    name: str
    kind: str
    url: str | None
    html: str
    truth: str


def gunzip(path: Path) -> str:
    return gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")


def load_pages(root: Path) -> list[Sample]:
    """Both collections, in a fixed order."""
    samples = []
    aeb = root / "scrapinghub_aeb"
    truth = json.loads(gunzip(aeb / "ground-truth.json.gz"))
    for key in sorted(truth):
        html = gunzip(aeb / "html" / f"{key}.html.gz")
        samples.append(Sample(f"aeb/{key[:12]}", "news", truth[key]["url"], html, truth[key]["articleBody"]))
    for folder in sorted((root / "mozilla_readability_test_pages" / "pages").iterdir()):
        html = gunzip(folder / "source.html.gz")
        expected = " ".join(lxml.html.fromstring(gunzip(folder / "expected.html.gz")).itertext())
        canonical = CANONICAL.search(html)
        url = canonical.group(1) if canonical else None
        if WIKIPEDIA.search(html):
            kind = "encyclopedia"
        elif len(html.encode()) < SYNTHETIC_BYTES:
            kind = "synthetic"
        else:
            kind = "article"
        samples.append(Sample(f"readability/{folder.name}", kind, url, html, expected))
    return samples


def precision_recall(text: str, truth: str) -> tuple[float, float]:
    """Shares of the extracted words that are true, and of the true words that were extracted (same words as f1)."""
    got, want = Counter(normalize(text, squad=True).split()), Counter(normalize(truth, squad=True).split())
    common = sum((got & want).values())
    return common / max(1, sum(got.values())), common / max(1, sum(want.values()))


def measure(samples: list[Sample], repeat: int) -> list[dict[str, Any]]:
    """Per page and setting: F1, precision, recall, CPU seconds and whether the two texts differ."""
    extract_main(samples[0].html, samples[0].url)  # imports and lazy tables outside the timings
    rows = []
    for i, sample in enumerate(samples):
        row: dict[str, Any] = {"name": sample.name, "kind": sample.kind}
        texts = {}
        order = list(SETTINGS)[i % 3 :] + list(SETTINGS)[: i % 3]
        for setting in order:
            seconds = float("inf")
            for _ in range(repeat):
                start = time.process_time()
                texts[setting] = extract_main(sample.html, sample.url, include_comments=SETTINGS[setting])
                seconds = min(seconds, time.process_time() - start)
            precision, recall = precision_recall(texts[setting], sample.truth)
            row[setting] = {"f1": f1(texts[setting], [sample.truth], squad=True), "precision": precision,
                            "recall": recall, "cpu_s": seconds}
        row["differs"] = texts["off"] != texts["on"]
        row["discussion"] = is_discussion(sample.html)
        rows.append(row)
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean F1/precision/recall (over pages) and pages per CPU second, per setting."""
    out: dict[str, Any] = {"pages": len(rows)}
    for setting in SETTINGS:
        cells = [r[setting] for r in rows]
        seconds = sum(c["cpu_s"] for c in cells)
        out[setting] = {k: round(sum(c[k] for c in cells) / len(cells), 4) for k in ("f1", "precision", "recall")}
        out[setting]["pages_per_s"] = round(len(cells) / seconds, 1) if seconds else None
    out["f1_on_minus_off"] = round(out["on"]["f1"] - out["off"]["f1"], 4)
    out["f1_auto_minus_off"] = round(out["auto"]["f1"] - out["off"]["f1"], 4)
    out["speed_on_over_off"] = round(out["on"]["pages_per_s"] / out["off"]["pages_per_s"], 3)
    out["speed_auto_over_off"] = round(out["auto"]["pages_per_s"] / out["off"]["pages_per_s"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, help="only the first N pages (a quick look)")
    parser.add_argument("--repeat", type=int, default=3, help="extractions per page and setting; the fastest is timed")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "extraction.json")
    args = parser.parse_args()
    samples = load_pages(shared_data_dir() / "html")[: args.limit]
    started = time.perf_counter()
    rows = measure(samples, args.repeat)
    groups = {kind: [r for r in rows if r["kind"] == kind] for kind in TYPES}
    groups["comments found"] = [r for r in rows if r["differs"]]
    groups["overall"] = rows
    results: dict[str, Any] = {"f1": "researchrl.reward.answer.f1(squad=True), mean over pages",
                                "pages_per_s": "pages per CPU second", "by_type": {}}
    print(f"{'':22s} {'F1':^20s}  {'precision':^20s}  {'recall':^20s}  {'pages/s':^20s}")
    settings = " ".join(f"{name:>6s}" for name in SETTINGS)
    print(f"{'page type':16s} {'n':>4s}  {settings}  {settings}  {settings}  {settings}  {'on-off F1':>9s} "
          f"{'on/off speed':>12s}")
    for kind, group in groups.items():
        if not group:
            continue
        s = summarize(group)
        results["by_type"][kind] = s
        cells = [s[setting] for setting in SETTINGS]
        print(f"{kind:16s} {s['pages']:4d}  " + " ".join(f"{c['f1']:6.4f}" for c in cells) + "  "
              + " ".join(f"{c['precision']:6.3f}" for c in cells) + "  "
              + " ".join(f"{c['recall']:6.3f}" for c in cells) + "  "
              + " ".join(f"{c['pages_per_s']:6.1f}" for c in cells)
              + f"  {s['f1_on_minus_off']:+9.4f} {s['speed_on_over_off']:12.2f}")
    results["discussion_pages"] = [r["name"] for r in rows if r["discussion"]]
    print(f"pages `is_discussion` keeps comments on: {len(results['discussion_pages'])} of {len(rows)}")
    changed = sorted((r for r in rows if r["differs"]), key=lambda r: r["on"]["f1"] - r["off"]["f1"])
    results["changed_pages"] = [
        {"name": r["name"], "kind": r["kind"], "f1_off": round(r["off"]["f1"], 4), "f1_on": round(r["on"]["f1"], 4)}
        for r in changed
    ]
    print(f"{len(changed)} of {len(rows)} pages change with comments on; the largest losses and gains (F1 off -> on):")
    for r in changed[:5] + changed[-5:] if len(changed) > 10 else changed:
        print(f"  {r['name']:30s} {r['kind']:12s} {r['off']['f1']:.3f} -> {r['on']['f1']:.3f}")
    print(f"({time.perf_counter() - started:.0f} s wall)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
