"""Evaluation tables on a small hand-computed record set: every figure, the file schema, and the renderers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from researchrl.eval.behaviour import summarize
from researchrl.eval.judge import Verdict
from researchrl.eval.tables import (
    PAPER_COLUMNS,
    PAPER_REFERENCE,
    TableRow,
    paper_source,
    reference_for,
    render_console_table,
    source_table,
    write_tables,
)


def rec(source: str, qid: int, sample: int, ok: bool, f1: float | None, em: float | None, verdict: Verdict | None,
        turns: int, tools: int, tokens: int) -> dict[str, Any]:
    return {
        "source": source, "question_id": qid, "sample": sample, "format_ok": ok, "f1": f1, "em": em,
        "turns": [{}] * turns, "tool_calls": ["web_search"] * tools, "completion_tokens": tokens,
        **(verdict.record_fields() if verdict else {"mbe": None, "judge": None}),
    }


# k = 2. nq: q1 answered exactly once; q2 has a format failure (carrying the training penalty −1 and an
# "exact" verdict on its stray answer: the table must score both 0) and a judge timeout. hotpotqa: h1 (same
# id as nq's q1, another question) is judged correct once without an exact match, once the reply was unreadable.
RECORDS = [
    rec("hotpotqa", 1, 0, True, 0.0, 0.0, Verdict(True, "judge", "same city"), turns=4, tools=3, tokens=300),
    rec("hotpotqa", 1, 1, True, 0.8, 0.0, Verdict(None, "error", error="bad_judgement"), turns=1, tools=0, tokens=20),
    rec("nq", 1, 0, True, 1.0, 1.0, Verdict(True, "exact"), turns=2, tools=1, tokens=100),
    rec("nq", 1, 1, True, 0.5, 0.0, Verdict(False, "cache", "no"), turns=3, tools=2, tokens=150),
    rec("nq", 2, 0, False, -1.0, 0.0, Verdict(True, "exact"), turns=10, tools=0, tokens=400),
    rec("nq", 2, 1, True, 0.4, 0.0, Verdict(None, "error", error="timeout"), turns=2, tools=1, tokens=50),
]

# By hand:
# nq: F1 (1 + .5 + 0 + .4)/4 = .475; EM 1/4; MBE over 3 judged (1, 0, 0) = 1/3, 1 error; pass@2 EM: q1 only = 1/2;
#     pass@2 MBE: q1 yes, q2 no = 1/2; format errors 1/4; turns 17/4; tool calls 4/4; tokens 700/4.
# hotpotqa: F1 .8/2; EM 0; MBE 1/1, 1 error; pass EM 0; pass MBE 1; turns 5/2; tool calls 3/2; tokens 320/2.
# all: F1 2.7/6; EM 1/6; MBE (1+0+0+1)/4, 2 errors; pass EM 1/3; pass MBE 2/3; format 1/6; turns 22/6;
#      tool calls 7/6; tokens 1020/6. Behaviour: eval.behaviour over the same records (tests/eval/test_behaviour.py).
EXPECTED = [
    TableRow("nq", 2, 4, 0.475, 0.25, 1 / 3, 3, 1, 0.5, 0.5, 0.25, 4.25, 1.0, 175.0, summarize(RECORDS[2:])),
    TableRow("hotpotqa", 1, 2, 0.4, 0.0, 1.0, 1, 1, 0.0, 1.0, 0.0, 2.5, 1.5, 160.0, summarize(RECORDS[:2])),
    TableRow("all", 3, 6, 0.45, 1 / 6, 0.5, 4, 2, 1 / 3, 2 / 3, 1 / 6, 22 / 6, 7 / 6, 170.0, summarize(RECORDS)),
]


def test_source_table_matches_the_hand_computation() -> None:
    rows = source_table(RECORDS, k=2)
    assert [r.source for r in rows] == ["nq", "hotpotqa", "all"]  # the paper's column order, then "all"
    for row, expected in zip(rows, EXPECTED, strict=True):
        for name, want in expected.as_dict().items():  # field by field; 1/3 and friends are not exact
            got = getattr(row, name)
            assert got == pytest.approx(want, abs=1e-12), f"{row.source}.{name}: {got} != {want}"


def test_mbe_is_none_when_nothing_was_judged() -> None:
    records = [rec("tq", 7, s, True, 0.5, 0.0, None, turns=1, tools=0, tokens=10) for s in range(2)]
    tq, everything = source_table(records, k=2)
    assert (tq.mbe, tq.pass_mbe, tq.judged, tq.judge_errors) == (None, None, 0, 0)
    assert everything.f1 == 0.5


def test_sources_map_to_paper_columns_case_insensitively() -> None:
    assert paper_source("Bamboogle") == "bamboogle" and paper_source("NQ") == "nq" and paper_source("2wiki") == "2wiki"
    assert paper_source("triviaqa") == "tq" and paper_source("my_set") is None
    records = [rec(s, 1, 0, True, 1.0, 1.0, Verdict(True, "exact"), 1, 0, 1) for s in ("my_set", "popqa", "Bamboogle", "nq")]
    rows = source_table(records, k=1)
    assert [r.source for r in rows] == ["nq", "Bamboogle", "popqa", "my_set", "all"]
    refs = reference_for(rows)
    assert {r.source for r in refs} == {"nq", "bamboogle", "popqa"}
    assert [r.source for r in refs if r.method == "DeepResearcher"] == ["nq", "bamboogle", "popqa"]


def test_paper_reference_holds_the_published_deepresearcher_figures() -> None:
    ours = {r.source: (r.f1, r.mbe) for r in PAPER_REFERENCE if r.method == "DeepResearcher"}
    assert ours == {
        "nq": (0.396, 0.619), "tq": (0.784, 0.85), "hotpotqa": (0.528, 0.643), "2wiki": (0.597, 0.666),
        "musique": (0.271, 0.293), "bamboogle": (0.71, 0.728), "popqa": (0.485, 0.527),
    }
    assert all(r.source in PAPER_COLUMNS for r in PAPER_REFERENCE)


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (RECORDS[:-1], r"question '2' of 'nq' has samples \[0\], expected 0..1"),
        ([*RECORDS, RECORDS[0]], r"question '1' of 'hotpotqa' has samples \[0, 0, 1\]"),
        ([rec("nq", 1, 0, True, None, None, None, 1, 0, 1), rec("nq", 1, 1, True, 1.0, 1.0, None, 1, 0, 1)],
         "is not scored"),
        ([], "no eval records"),
    ],
)
def test_bad_record_sets_are_refused(records: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        source_table(records, k=2)


def test_write_tables_round_trips_with_the_documented_schema(tmp_path: Path) -> None:
    rows = source_table(RECORDS, k=2)
    judge = {"model": "gpt-4o-mini", "prompt_sha256": "abc"}
    write_tables(tmp_path, rows, 2, judge)
    data = json.loads((tmp_path / "tables.json").read_text())
    assert set(data) == {"k", "judge", "rows", "reference"}
    assert data["k"] == 2 and data["judge"] == judge
    assert [TableRow(**row) for row in data["rows"]] == rows
    assert all(set(ref) == {"method", "source", "f1", "mbe"} for ref in data["reference"])
    assert {"method": "DeepResearcher", "source": "nq", "f1": 0.396, "mbe": 0.619} in data["reference"]
    assert {"method": "DeepResearcher", "source": "hotpotqa", "f1": 0.528, "mbe": 0.643} in data["reference"]
    assert {ref["source"] for ref in data["reference"]} == {"nq", "hotpotqa"}

    write_tables(tmp_path, rows, 2, None)
    assert json.loads((tmp_path / "tables.json").read_text())["judge"] is None


def test_tables_md_shows_our_rows_then_the_reference(tmp_path: Path) -> None:
    write_tables(tmp_path, source_table(RECORDS, k=2), 2, {"model": "judge-x"})
    md = (tmp_path / "tables.md").read_text()
    assert "Judge: model = judge-x" in md
    assert "| source | questions | samples | F1 | EM | MBE | judge errors | pass@2 EM | pass@2 MBE |" in md
    assert "| NQ | 2 | 4 | 47.5 | 25.0 | 33.3 | 1 | 50.0 | 50.0 | 25.0 | 4.25 | 1.00 | 175 |" in md
    assert "| all | 3 | 6 | 45.0 | 16.7 | 50.0 | 2 | 33.3 | 66.7 | 16.7 | 3.67 | 1.17 | 170 |" in md
    assert md.index("| all |") < md.index("| DeepResearcher | NQ | 39.6 | 61.9 |")
    assert "| R1-Searcher | HotpotQA | 44.8 | — |" in md


def test_tables_carry_each_sources_research_behaviour(tmp_path: Path) -> None:
    def hits(query: str, url: str, snippet: str) -> str:
        hit = {"title": "t", "url": url, "quick_summary": snippet}
        return repr([{"search_query": query, "web_page_info_list": [hit]}])

    turns = [{"tool_call": {"name": "web_search", "arguments": {"query": ["director of Inception"]}},
              "observation": hits("director of Inception", "http://w/i", "Inception was directed by Christopher Nolan.")},
             {"tool_call": {"name": "web_search", "arguments": {"query": "Christopher Nolan birthplace"}},
              "observation": hits("Christopher Nolan birthplace", "http://w/n", "Nolan was born in London.")},
             {"answer": "London"}]
    bridged = {**rec("musique", 9, 0, True, 1.0, 1.0, None, turns=3, tools=2, tokens=10), "turns": turns,
               "question": "Where was the director of Inception born?", "golds": ["London"], "answer": "London"}
    rows = source_table([bridged, rec("nq", 1, 0, True, 0.0, 0.0, None, turns=1, tools=0, tokens=5)], k=1)
    assert [(r.source, r.behaviour["behaviour/bridge_rate"], r.behaviour["behaviour/queries"]) for r in rows] == [
        ("nq", 0.0, 0.0), ("musique", 1.0, 2.0), ("all", 0.5, 1.0)]
    write_tables(tmp_path, rows, 1, None)
    assert json.loads((tmp_path / "tables.json").read_text())["rows"][1]["behaviour"] == rows[1].behaviour
    md = (tmp_path / "tables.md").read_text()
    assert ("| source | queries | bridge | search after browse | sources | cross-checked | reflection | grounded | "
            "unsupported | honest | confident wrong | planned |") in md
    assert "| MuSiQue | 2.00 | 100.0 | 0.0 | 0.00 | 0.0 | 0.0 | 100.0 | 0.0 | 0.0 | 0.0 | 0.0 |" in md


def test_console_table_lists_both(tmp_path: Path) -> None:
    rows = source_table(RECORDS, k=2)
    reference = reference_for(rows)
    table = render_console_table(rows, reference)
    assert table.row_count == len(rows) + len(reference)
    console = Console(record=True, width=300)
    console.print(table)
    text = console.export_text()
    assert "47.5" in text and "33.3" in text and "DeepResearcher" in text and "61.9" in text
