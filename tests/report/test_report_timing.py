"""The report shows where each step's seconds went when metrics.jsonl holds the rollout's time/ keys."""

from __future__ import annotations

import json
from pathlib import Path

import lxml.html
import pytest

from researchrl.report import build_report

STEPS = [  # step 2 lacks the update; step 3 was logged before the time/ keys existed
    {"step": 1, "time/rollout_s": 10.0, "time/generation_s": 6.0, "time/tools_s": 5.0, "time/tools_overlap_s": 2.0,
     "time/other_s": 1.0, "time/tool/web_search_s": 1.5, "time/tool/browse_webpage_s": 4.0,
     "seconds/update": 20.0, "seconds/step": 30.0},
    {"step": 2, "time/rollout_s": 8.0, "time/generation_s": 8.0, "time/tools_s": 0.0, "time/tools_overlap_s": 0.0,
     "time/other_s": 0.0},
    {"step": 3, "seconds/step": 25.0},
]


def _page(tmp_path: Path, rows: list[dict]) -> lxml.html.HtmlElement:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return lxml.html.fromstring(build_report(run))


def test_a_stacked_bar_per_timed_step_adds_up_to_the_step(tmp_path: Path) -> None:
    doc = _page(tmp_path, STEPS)
    (chart,) = doc.xpath('//section[@id="curves"]//svg[@data-key="time"]')
    bars: dict[str, dict[str, float]] = {}
    for rect in chart.xpath('.//rect[@class="phase"]'):
        bars.setdefault(rect.get("data-step"), {})[rect.get("data-phase")] = float(rect.get("data-value"))
    assert list(bars) == ["1", "2"]  # step 3 has no time/ keys
    assert bars["1"] == pytest.approx({"generation only": 4.0, "generation and tools": 2.0, "tools only": 3.0,
                                       "rest of rollout": 1.0, "update": 20.0})
    assert sum(bars["1"].values()) == pytest.approx(30.0)  # rollout + update
    assert sum(bars["2"].values()) == pytest.approx(8.0) and "update" not in bars["2"]
    legend = [t.text for t in chart.xpath('.//text[contains(@class, "legend")]')]
    assert legend == ["generation only", "generation and tools", "tools only", "rest of rollout", "update"]


def test_the_table_holds_the_exact_seconds_per_step(tmp_path: Path) -> None:
    doc = _page(tmp_path, STEPS)
    (table,) = doc.xpath('//table[@class="timing"]')
    rows = [{td.get("data-key"): td.get("data-value") for td in tr.xpath("td")} for tr in table.xpath(".//tbody/tr")]
    assert [r["step"] for r in rows] == ["1", "2"]
    assert rows[0]["generation s"] == "6.0" and rows[0]["browse_webpage s"] == "4.0" and rows[0]["update s"] == "20.0"
    assert rows[1]["rest s"] == "0.0" and rows[1]["web_search s"] is None  # not logged: a dash


def test_a_run_without_time_keys_has_no_timing_section(tmp_path: Path) -> None:
    doc = _page(tmp_path, [STEPS[2]])
    assert not doc.xpath('//svg[@data-key="time"]') and not doc.xpath('//table[@class="timing"]')
    assert doc.xpath('//svg[@data-key="seconds/step"]')
