"""The run report on a real (trimmed) run directory: parsed for charts, tables and turns, rendered in headless Chromium."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import lxml.html
import pytest
import typer
from typer.testing import CliRunner

from researchrl.eval.behaviour import TAGS, behaviour, summarize
from researchrl.report import build_report, write_report
from researchrl.report.cli import report
from researchrl.report.html import OBSERVATION_PREVIEW_CHARS, PAGE_JS

FIXTURE = Path(__file__).parent / "fixtures" / "20261122-042940"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
WINDOW = (1280, 2400)
PAYLOAD = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A copy of the fixture run (the report is written into it, never into the checkout)."""
    return Path(shutil.copytree(FIXTURE, tmp_path / FIXTURE.name))


def _records(run: Path) -> list[dict]:
    """Every trajectory record in the order the page shows them: training, eval phases, eval directories."""
    phases = [run / "eval_before.jsonl", run / "eval_after.jsonl"]
    return [r for p in [run / "trajectories.jsonl", *phases, run / "evals/smoke/records.jsonl"] for r in _jsonl(p)]


# ---- parsed page ----------------------------------------------------------------------------------------------

def test_one_chart_per_metric_with_axes_ticks_and_every_step(run_dir: Path) -> None:
    doc = lxml.html.fromstring(build_report(run_dir))
    metrics = _jsonl(run_dir / "metrics.jsonl")
    charts = {svg.get("data-key"): svg for svg in doc.iter("svg")}
    assert list(charts) == ["reward", "rewards/f1/mean", "rewards/format_ok/mean", "rewards/turns/mean",
                            "rewards/tool_calls/mean", "kl", "tokens_per_second/rollout", "seconds/step"]
    for key, svg in charts.items():
        assert [float(c.get("data-step")) for c in svg.iter("circle")] == [m["step"] for m in metrics], key
        assert len(svg.find_class("xtick")) >= 2 and len(svg.find_class("ytick")) >= 2, key
        assert svg.find_class("axis-label")[0].text == "GRPO step"
    format_errors = [float(c.get("data-value")) for c in charts["rewards/format_ok/mean"].iter("circle")]
    assert format_errors == pytest.approx([1 - m["rewards/format_ok/mean"] for m in metrics])
    assert [float(c.get("data-value")) for c in charts["kl"].iter("circle")] == [m["kl"] for m in metrics]
    assert charts["reward"].find_class("band"), "reward_std is logged, so the reward chart has a ± std band"
    assert not charts["kl"].find_class("band")


def test_absent_keys_are_skipped_and_web_cost_keys_get_charts(run_dir: Path) -> None:
    metrics = _jsonl(run_dir / "metrics.jsonl")
    for n, row in enumerate(metrics):
        del row["kl"]
        row["web/search_calls"] = 10 + n
        row["web/cost_usd"] = 0.01 * n
    _write_jsonl(run_dir / "metrics.jsonl", metrics)
    keys = [svg.get("data-key") for svg in lxml.html.fromstring(build_report(run_dir)).iter("svg")]
    assert "kl" not in keys
    assert keys[-2:] == ["web/cost_usd", "web/search_calls"]


def test_eval_tables_carry_the_exact_numbers_with_reference_rows_apart(run_dir: Path) -> None:
    doc = lxml.html.fromstring(build_report(run_dir))
    phases = json.loads((run_dir / "eval.json").read_text())
    table = doc.find_class("eval-phases")[0]
    rows = table.xpath("./tbody/tr")
    assert [r.xpath("./td[@data-key='phase']")[0].text for r in rows] == ["before", "after_sft", "after"]
    for row in rows:
        summary = phases[row.xpath("./td[@data-key='phase']")[0].text]
        for key in ("n", "reward", "f1", "em", "format_error_rate", "tool_call_rate", "answer_rate", "mean_turns"):
            assert float(row.xpath(f"./td[@data-key='{key}']")[0].get("data-value")) == summary[key]
    tables = json.loads((run_dir / "evals/smoke/tables.json").read_text())
    ours = doc.find_class("eval-rows")[0].xpath("./tbody/tr")
    assert len(ours) == len(tables["rows"])
    assert float(ours[0].xpath("./td[@data-key='mbe']")[0].get("data-value")) == tables["rows"][0]["mbe"]
    reference = doc.find_class("reference")[0].xpath("./tbody/tr")
    assert [r.xpath("./td[@data-key='method']")[0].text for r in reference] == [r["method"] for r in tables["reference"]]
    assert {r.xpath("./td[@data-key='source']")[0].text for r in reference} == {"musique"}
    assert not doc.find_class("eval-rows")[0].xpath(".//td[@data-key='method']"), "reference rows are not mixed in"
    sha = tables["judge"]["prompt_sha256"]
    judge = doc.xpath("//div[@data-key='judge prompt sha (evals/smoke)']/span[@class='fact-value']")[0]
    assert judge.get("title") == sha and sha.startswith(judge.text.rstrip("…"))


def test_paired_differences_are_shown_with_their_intervals(run_dir: Path) -> None:
    from researchrl.eval.paired import compare

    paired = {"after - before": compare([_jsonl(run_dir / "eval_after.jsonl")], [_jsonl(run_dir / "eval_before.jsonl")])}
    (run_dir / "paired.json").write_text(json.dumps(paired))
    rows = lxml.html.fromstring(build_report(run_dir)).find_class("paired")[0].xpath("./tbody/tr")
    assert [(r.xpath("./td[@data-key='difference']")[0].text, r.xpath("./td[@data-key='metric']")[0].text)
            for r in rows] == [("after - before", "f1"), ("after - before", "reward")]
    for row, metric in zip(rows, ("f1", "reward")):
        for key in ("mean", "low", "high", "n"):
            assert float(row.xpath(f"./td[@data-key='{key}']")[0].get("data-value")) == paired["after - before"][metric][key]
    assert not lxml.html.fromstring(build_report(FIXTURE)).find_class("paired"), "no paired.json, no table"


def test_the_behaviour_panel_has_each_files_behaviour_over_all_its_records(run_dir: Path) -> None:
    phases = json.loads((run_dir / "eval.json").read_text())
    for phase in phases.values():  # a run that logged behaviour: shown in the panel, not in the phase table
        phase.update(summarize(_jsonl(run_dir / "eval_after.jsonl")))
    (run_dir / "eval.json").write_text(json.dumps(phases))
    doc = lxml.html.fromstring(build_report(run_dir, max_trajectories=5))
    assert not doc.find_class("eval-phases")[0].xpath(".//th[contains(., 'behaviour')]")
    rows = doc.find_class("behaviour")[0].xpath("./tbody/tr")
    files = {"training": "trajectories.jsonl", "eval before": "eval_before.jsonl", "eval after": "eval_after.jsonl",
             "evals/smoke/records.jsonl": "evals/smoke/records.jsonl"}
    assert [r.xpath("./td[@data-key='file']")[0].text for r in rows] == list(files)
    for row, name in zip(rows, files.values()):
        records = _jsonl(run_dir / name)
        assert int(row.xpath("./td[@data-key='episodes']")[0].text) == len(records)
        for key, value in summarize(records).items():
            assert float(row.xpath(f"./td[@data-key='{key.removeprefix('behaviour/')}']")[0].get("data-value")) == value
    assert doc.xpath("//nav/a[@href='#behaviour']")


def test_every_trajectory_names_its_behaviours(run_dir: Path) -> None:
    doc = lxml.html.fromstring(build_report(run_dir))
    tags = [behaviour(record).tags() for record in _records(run_dir)]
    shown = doc.find_class("traj")
    assert [d.get("data-behaviour").split() for d in shown] == tags
    assert {"grounded", "unsupported", "confident_wrong"} <= {t for ts in tags for t in ts}
    for details, names in zip(shown, tags):
        said = details.xpath(".//dt[text()='behaviour']/following-sibling::dd[1]")[0].text
        assert said == (", ".join(TAGS[t] for t in names) or "none of those measured")
    options = doc.get_element_by_id("f-behaviour").xpath("./option/@value")
    assert options == ["", *TAGS]


def test_every_trajectory_is_a_details_with_each_turn_marked_by_kind(run_dir: Path) -> None:
    doc = lxml.html.fromstring(build_report(run_dir))
    records = _records(run_dir)
    shown = doc.find_class("traj")
    assert len(shown) == len(records) == len(doc.xpath("//details[contains(@class, 'traj')]"))
    for details, record in zip(shown, records):
        assert details.find_class("question")[0].text == record["question"]
        assert float(details.xpath(".//span[@data-score='reward']")[0].get("data-value")) == record["reward"]
        turns = details.xpath(".//li[@class='turn']")
        assert len(turns) == len(record["turns"])
        for li, turn in zip(turns, record["turns"]):
            def count(kind: str, li: lxml.html.HtmlElement = li) -> int:
                return len(li.xpath(f"./div[contains(concat(' ', @class, ' '), ' {kind} ')]"))
            assert count("turn-tool") == ("tool_call" in turn)
            assert count("turn-obs") == ("observation" in turn)
            assert count("turn-answer") == ("answer" in turn)
            assert count("turn-error") == ("format_error" in turn)
            assert count("turn-think") == ("format_error" not in turn)
            chips = [s.text for s in li.find_class("err-kind")]
            assert chips == turn.get("observation_errors", [])
            if "tool_call" in turn:
                tool = li.find_class("turn-tool")[0]
                assert tool.find_class("detail")[0].text == turn["tool_call"]["name"]
                assert json.loads(tool.find("pre").text) == turn["tool_call"]["arguments"]
        if "judge" in record:
            verdict = details.xpath(".//dt[text()='judge']/following-sibling::dd[1]")[0].text
            assert verdict.startswith({True: "correct", False: "wrong", None: "undecided"}[record["judge"]["correct"]])
            badge = details.xpath(".//span[@data-score='MBE']")[0]
            assert badge.get("data-value") == (None if record["mbe"] is None else repr(record["mbe"]))
    terminations = {d.get("data-outcome") for d in shown}
    assert {"answer", "format_error", "turn_budget"} <= terminations


def test_long_observations_are_folded_but_kept_whole(run_dir: Path) -> None:
    doc = lxml.html.fromstring(build_report(run_dir))
    observations = [t["observation"] for r in _records(run_dir) for t in r["turns"] if "observation" in t]
    blocks = doc.find_class("turn-obs")
    assert len(blocks) == len(observations)
    folded = 0
    for block, text in zip(blocks, observations):
        shown = "".join(pre.text_content() for pre in block.iter("pre"))
        assert shown == text
        assert bool(block.find_class("more")) == (len(text) > OBSERVATION_PREVIEW_CHARS)
        folded += bool(block.find_class("more"))
    assert folded > 0, "the real run has observations longer than the preview"


def test_trajectories_are_capped_and_spread_over_files(run_dir: Path) -> None:
    page = build_report(run_dir, max_trajectories=5)
    doc = lxml.html.fromstring(page)
    shown = doc.find_class("traj")
    assert len(shown) == 5
    assert f"Showing 5 of {len(_records(run_dir))} trajectories (capped at 5" in page
    assert {d.get("data-set") for d in shown} == {"training", "eval before", "eval after", "evals/smoke/records.jsonl"}
    training = [int(d.get("data-step")) for d in shown if d.get("data-set") == "training"]
    assert training == [1, 3], "two of the eight training records, evenly spaced: the 1st and the 5th"


def test_the_page_is_self_contained(run_dir: Path) -> None:
    doc = lxml.html.fromstring(build_report(run_dir))
    assert not doc.xpath("//*[@src]") and not doc.xpath("//link")
    assert all(a.get("href").startswith("#") for a in doc.xpath("//*[@href]"))


def test_run_text_is_escaped(tmp_path: Path) -> None:
    run = _malicious_run(tmp_path)
    page = build_report(run)
    doc = lxml.html.fromstring(page)
    scripts = doc.xpath("//script")
    assert len(scripts) == 1 and scripts[0].text == PAGE_JS
    assert not doc.xpath("//img") and not doc.xpath("//*[@onerror]")
    obs = doc.find_class("turn-obs")[0].find("pre").text_content()
    assert obs == PAYLOAD
    assert doc.find_class("question")[0].text == f"Who wrote {PAYLOAD}?"


def test_config_only_says_no_metrics_yet(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"preset": "cpu", "model": "embedded"}))
    page = build_report(tmp_path)
    assert "No metrics yet" in page and "No evaluation yet" in page and "No trajectories yet" in page
    doc = lxml.html.fromstring(page)
    assert not list(doc.iter("svg")) and not doc.find_class("traj")
    assert doc.xpath("//div[@data-key='model']/span[@class='fact-value']")[0].text == "embedded"


def test_a_directory_that_is_not_a_run_is_a_value_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a run directory"):
        build_report(tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        build_report(tmp_path / "notes.txt")


def test_a_line_still_being_written_is_skipped_but_a_broken_one_is_an_error(run_dir: Path) -> None:
    metrics = (run_dir / "metrics.jsonl").read_text()
    (run_dir / "metrics.jsonl").write_text(metrics + '{"step": 5, "loss": 0.')
    doc = lxml.html.fromstring(build_report(run_dir))
    assert len(list(next(doc.iter("svg")).iter("circle"))) == len(metrics.splitlines())
    (run_dir / "metrics.jsonl").write_text('{"step": 1\n' + metrics)
    with pytest.raises(ValueError, match=r"metrics.jsonl:1 is not valid JSON"):
        build_report(run_dir)


def test_config_values_that_are_secrets_are_hidden(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"api_key": "sk-live-123", "hf_token": "hf_abc", "api_key_env": "OPENAI_API_KEY"}))
    page = build_report(tmp_path)
    assert "sk-live-123" not in page and "hf_abc" not in page
    assert "OPENAI_API_KEY" in page, "the name of the variable is not a secret"


# ---- command ----------------------------------------------------------------------------------------------------

def _cli() -> typer.Typer:
    app = typer.Typer(add_completion=False)
    app.command()(report)
    return app


def test_cli_writes_the_page_where_asked(run_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(_cli(), [str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / "report.html").read_text().startswith("<!DOCTYPE html>")
    out = tmp_path / "pages" / "r.html"
    result = CliRunner().invoke(_cli(), [str(run_dir), "--out", str(out), "--max-trajectories", "3"])
    assert result.exit_code == 0 and len(lxml.html.fromstring(out.read_text()).find_class("traj")) == 3


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_cli_user_mistakes_are_one_red_line_and_exit_2(tmp_path: Path, make: str) -> None:
    target = tmp_path / "nope" if make == "missing" else tmp_path
    result = CliRunner().invoke(_cli(), [str(target)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_user_error_through_the_real_cli_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    done = subprocess.run([sys.executable, "-m", "researchrl.cli", "report", str(tmp_path)], capture_output=True,
                          text=True, timeout=120, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'config.json'} is not valid JSON"), done.stderr


def test_cli_an_unwritable_out_is_one_red_line(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    result = CliRunner().invoke(_cli(), [str(run_dir), "--out", str(tmp_path / "a-file" / "r.html")])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: cannot write {tmp_path / 'a-file' / 'r.html'}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_a_bug_is_not_turned_into_one_line(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bug = TypeError("a bug")

    def failing(*args: object) -> Path:
        raise bug

    monkeypatch.setattr("researchrl.report.cli.write_report", failing)
    result = CliRunner().invoke(_cli(), [str(run_dir)])
    assert result.exit_code == 1 and result.exception is bug and "error:" not in result.stderr


def test_cli_every_flag_has_help() -> None:
    command = typer.main.get_command(_cli())
    assert {p.name for p in command.params} == {"run_dir", "out", "open_browser", "max_trajectories"}
    assert all(p.help for p in command.params)


# ---- headless Chromium ----------------------------------------------------------------------------------------

def _chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium in its own process group with a fresh profile; kill the group on timeout."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                   "--enable-logging=stderr", "--v=0", *args]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"chromium did not finish in {timeout}s (killed)")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # helpers it left behind, if any
    assert proc.returncode == 0, err[-2000:]
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _dom(url: str) -> tuple[lxml.html.HtmlElement, str]:
    """The DOM after the page's script ran, and Chromium's log (console messages included)."""
    result = _chromium("--dump-dom", url)
    return lxml.html.fromstring(result.stdout), result.stderr


def _png_rows(data: bytes, rows: int) -> tuple[int, int, list[bytes]]:
    """Width, height and the first `rows` unfiltered RGB(A) scanlines of an 8-bit PNG (the whole stream is checked)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = {}, 8
    while pos < len(data):
        (size,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        chunks[kind] = chunks.get(kind, b"") + data[pos + 8:pos + 8 + size]
        pos += 12 + size
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8 and color in (2, 6)
    bpp = 3 if color == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(chunks[b"IDAT"])
    assert len(raw) == height * (stride + 1)
    prev, out = bytearray(stride), []
    for r in range(rows):
        kind, line = raw[r * (stride + 1)], bytearray(raw[r * (stride + 1) + 1:(r + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out.append(bytes(line))
        prev = line
    return width, height, out


def test_chromium_renders_the_report(run_dir: Path) -> None:
    page = write_report(run_dir)
    ARTIFACTS.mkdir(exist_ok=True)
    png = ARTIFACTS / "report.png"
    png.unlink(missing_ok=True)
    _chromium(f"--screenshot={png}", page.as_uri())
    width, height, rows = _png_rows(png.read_bytes(), 900)
    assert (width, height) == WINDOW
    pixels = {line[i:i + 3] for line in rows for i in range(0, len(line), 3 if len(line) == width * 3 else 4)}
    assert len(pixels) > 100, "a blank or flat screenshot"

    dom, log = _dom(page.as_uri())
    assert dom.find("head/title").text == f"researchrl report · {run_dir.name}"
    assert dom.find("body").get("data-js") == "ok" and "Uncaught" not in log
    assert len(dom.xpath("//svg[@class='chart']")) == 8
    assert len(dom.find_class("eval-phases")) == len(dom.find_class("eval-rows")) == len(dom.find_class("reference")) == 1
    panel = dom.get_element_by_id("behaviour")
    assert len(panel.xpath(".//table[@class='behaviour']/tbody/tr")) == 4, "one behaviour row per trajectory file"
    assert dom.get_element_by_id("filters").get("hidden") is None, "the script shows the filters"
    assert dom.get_element_by_id("f-count").text == f"{len(_records(run_dir))} of {len(_records(run_dir))} shown"


def test_chromium_applies_filters_from_the_url(run_dir: Path) -> None:
    page = write_report(run_dir)
    dom, log = _dom(page.as_uri() + "#set=training&outcome=format_error")
    assert "Uncaught" not in log
    wanted = [r for r in _jsonl(run_dir / "trajectories.jsonl") if r["termination"] == "format_error"]
    visible = [d for d in dom.find_class("traj") if d.get("hidden") is None]
    assert len(visible) == len(wanted) > 0
    assert [d.find_class("question")[0].text for d in visible] == [r["question"] for r in wanted]
    dom, _ = _dom(page.as_uri() + "#outcome=positive")
    visible = [d for d in dom.find_class("traj") if d.get("hidden") is None]
    assert visible and all(float(d.get("data-reward")) > 0 for d in visible)
    assert len(visible) == sum(1 for r in _records(run_dir) if r["reward"] > 0)


def test_chromium_filters_trajectories_by_behaviour(run_dir: Path) -> None:
    page = write_report(run_dir)
    dom, log = _dom(page.as_uri() + "#behaviour=grounded&set=eval%20after")
    assert "Uncaught" not in log and dom.get_element_by_id("f-behaviour").get("hidden") is None
    wanted = [r for r in _jsonl(run_dir / "eval_after.jsonl") if "grounded" in behaviour(r).tags()]
    visible = [d for d in dom.find_class("traj") if d.get("hidden") is None]
    assert 0 < len(visible) == len(wanted) < len(_jsonl(run_dir / "eval_after.jsonl"))
    assert [d.find_class("question")[0].text for d in visible] == [r["question"] for r in wanted]
    dom, _ = _dom(page.as_uri() + "#behaviour=unsupported")
    visible = [d for d in dom.find_class("traj") if d.get("hidden") is None]
    assert len(visible) == sum("unsupported" in behaviour(r).tags() for r in _records(run_dir)) > 0
    assert dom.get_element_by_id("f-count").text == f"{len(visible)} of {len(_records(run_dir))} shown"


def test_chromium_shows_a_script_in_an_observation_as_text(tmp_path: Path) -> None:
    page = write_report(_malicious_run(tmp_path))
    dom, log = _dom(page.as_uri())
    assert dom.find("head/title").text == "researchrl report · evil"
    assert dom.find("body").get("data-js") == "ok" and "Uncaught" not in log
    assert dom.find_class("turn-obs")[0].find("pre").text_content() == PAYLOAD
    assert not dom.xpath("//img")


def _malicious_run(tmp_path: Path) -> Path:
    """A run whose trajectory carries HTML in the question, tool arguments, observation and answer."""
    run = tmp_path / "evil"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": PAYLOAD}))
    turns = [
        {"text": f"<think>{PAYLOAD}</think>", "finish_reason": "eos", "sampled_tokens": 9,
         "tool_call": {"name": "web_search", "arguments": {"query": [PAYLOAD]}},
         "observation": PAYLOAD, "observation_errors": ["timeout"]},
        {"text": f"<answer>{PAYLOAD}</answer>", "finish_reason": "eos", "sampled_tokens": 5, "answer": PAYLOAD},
    ]
    record = {"step": 1, "question": f"Who wrote {PAYLOAD}?", "golds": [PAYLOAD], "termination": "answer",
              "answer": PAYLOAD, "reward": 0.0, "format_ok": True, "format_error": None, "f1": 0.0, "em": 0.0,
              "tool_calls": ["web_search"], "tool_errors": ["timeout"], "turns": turns}
    _write_jsonl(run / "trajectories.jsonl", [record])
    return run
