"""No key is ever printed or saved: every provider echoes its key back, the real CLI runs end to end, nothing keeps it.

One loopback server plays the policy, the reader, the judge, Serper and Brave, and the pages. Each answers by a
marker in the request (a query, a page, a question) with 200, 401, 403, 429 or 500, and echoes the key it was sent:
in full in a JSON `message`, in plain text, in part, straddling the 200-character excerpt cut, in 200 bodies
(snippets, reader facts, the judge's rationale, the policy's thinking) and in response headers. Then `ask`, `eval`
(judged, `--web record`, a SQLite cache) and `report` run as a user runs them, with the keys in the documented env
vars, and no stdout, stderr or byte of any file written holds a key or any 8 characters of one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.loopback import chat_completion, serve_app

KEYS = {  # provider -> (env var, key); none shaped like a key, so only the key actually read can redact it
    "policy": ("OPENAI_API_KEY", "pol9Qv2Lx7Rk4Mw8Zt1Hc6Ny3Bd5Fg0"),
    "reader": ("READER_API_KEY", "rdr3Ks8Wp1Xe6Jq9Um4Tz7Gb2Vn5Yh0"),
    "judge": ("JUDGE_API_KEY", "jdg6Ft1Ca9Ro4Dl7Ei2Mx5Sw8Pk3Qz0"),
    "serper": ("SERPER_API_KEY", "srp8Hb5Nu2Gy7Tw0Kc3Vj6Lq9Ad4Xm1"),
    "brave": ("BRAVE_API_KEY", "brv2Je7Pz4Ms9Cx1Wf6Ok3Ug8Ri5Lt0"),
}
KEY_HEADER = {"serper": "x-api-key", "brave": "x-subscription-token"}  # the others send Authorization: Bearer KEY
ERRORS = (401, 403, 429, 500)
PAGES = ("200", *map(str, ERRORS))
REDIS_PASSWORD = "rds5Wq0Ej8Tb3Yn6Hk1Zc4Mv9Gu2Px7"
RESEARCHRL = [sys.executable, "-m", "researchrl.cli"]


def echo(status: int, key: str) -> Response:
    """An error that repeats the key every way a provider might, headers included."""
    headers = {"x-echo-key": key, "www-authenticate": f'Bearer realm="api", key="{key}"', "retry-after": "0"}
    if status == 401:
        return JSONResponse({"error": {"message": f"Incorrect API key provided: {key}.", "type": "auth"}}, 401, headers)
    if status == 403:
        return PlainTextResponse(f"Forbidden: {key} may not call this (Authorization: Bearer {key})", 403, headers=headers)
    if status == 429:  # in a JSON message, starting 12 characters before the excerpt's cut
        return JSONResponse({"error": {"message": "x" * 188 + key + " is over quota"}}, 429, headers)
    return PlainTextResponse(f"{key[:12]} " + "y" * 175 + key + " failed", status, headers=headers)  # a part, then the cut


class EchoProviders:
    """Every upstream of a research run; counts, per provider and status, the requests that carried that provider's key."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: Counter[tuple[str, int]] = Counter()
        self.url = ""

    def answer(self, request: Request, provider: str, status: int) -> Response | None:
        """The echo for an error status (None for 200), after counting the request if it carried the right key."""
        header = request.headers.get(KEY_HEADER.get(provider, "authorization"), "")
        key = KEYS[provider][1]
        if header.removeprefix("Bearer ") == key:
            with self.lock:
                self.seen[(provider, status)] += 1
        return None if status == 200 else echo(status, key)

    async def policy(self, request: Request) -> Response:
        """Scripted turns: two searches, one browse of every page, an answer; "POLICY-<status>" questions fail at once."""
        messages = (await request.json())["messages"]
        question = next(m["content"] for m in messages if m["role"] == "user")
        marker = re.search(r"POLICY-(\d+)", question)
        failed = self.answer(request, "policy", int(marker[1]) if marker else 200)
        if failed is not None:
            return failed
        turn = sum(m["role"] == "assistant" for m in messages[:-1])  # the last one is the "<think>" prefill to continue
        thought = f"<think>thinking aloud about {KEYS['policy'][1]}</think>\n"  # a server echoing the key in a reply
        calls = [("web_search", "query", ["q-401", "q-403", "q-429"]), ("web_search", "query", ["q-500", "q-ok"]),
                 ("browse_webpage", "url_list", [f"{self.url}/pages/{page}" for page in PAGES])]
        if turn >= len(calls) or "ANSWER-NOW" in question:
            return JSONResponse(chat_completion(thought + "<answer>a guess the judge must rule on</answer>"))
        name, argument, values = calls[turn]
        call = json.dumps({"name": name, "arguments": {argument: values}})
        return JSONResponse(chat_completion(f"{thought}<tool_call>\n{call}\n</tool_call>"))

    async def reader(self, request: Request) -> Response:
        """The status a page's READER-<status> marker names; 200 is facts that repeat the key, whole and in part."""
        prompt = (await request.json())["messages"][-1]["content"]
        failed = self.answer(request, "reader", int(re.search(r"READER-(\d+)", prompt)[1]))
        key = KEYS["reader"][1]
        facts = f"<extracted_info>The page names {key} and {key[4:16]}.</extracted_info><page_down>no</page_down>"
        return failed or JSONResponse(chat_completion(facts), headers={"x-echo-key": key})

    async def judge(self, request: Request) -> Response:
        """The status the question's JUDGE-<status> marker names; 200 is a verdict whose rationale repeats the key."""
        prompt = (await request.json())["messages"][-1]["content"]
        failed = self.answer(request, "judge", int(re.search(r"JUDGE-(\d+)", prompt)[1]))
        verdict = {"judgement": "correct", "rationale": f"matched; key {KEYS['judge'][1]}"}
        return failed or JSONResponse(chat_completion(json.dumps(verdict)))

    async def search(self, request: Request, provider: str) -> Response:
        """Query q-<status> fails so; q-ok lists every page, the key in each title and snippet and in a header."""
        query = (await request.json())["q"] if request.method == "POST" else request.query_params["q"]
        failed = self.answer(request, provider, 200 if query == "q-ok" else int(query.removeprefix("q-")))
        key = KEYS[provider][1]
        hits = [{"title": f"Page {page} ({key})", "url": f"{self.url}/pages/{page}", "text": f"about {key}"} for page in PAGES]
        if provider == "serper":
            body = {"organic": [{"title": h["title"], "link": h["url"], "snippet": h["text"]} for h in hits]}
        else:
            body = {"web": {"results": [{"title": h["title"], "url": h["url"], "description": h["text"]} for h in hits]}}
        return failed or JSONResponse(body, headers={"x-echo-key": key})

    async def page(self, request: Request) -> Response:
        """A page whose text tells the reader endpoint which status to answer."""
        marker = request.path_params["status"]
        return HTMLResponse(f"<html><body><p>Marker READER-{marker}. The leak test page {marker} says little.</p></body></html>")

    def app(self) -> Starlette:
        """Each provider under its own path prefix, as each client's base-URL override points at it."""

        async def serper(request: Request) -> Response:
            return await self.search(request, "serper")

        async def brave(request: Request) -> Response:
            return await self.search(request, "brave")

        return Starlette(routes=[
            Route("/policy/v1/chat/completions", self.policy, methods=["POST"]),
            Route("/reader/v1/chat/completions", self.reader, methods=["POST"]),
            Route("/judge/v1/chat/completions", self.judge, methods=["POST"]),
            Route("/serper/search", serper, methods=["POST"]),
            Route("/brave/res/v1/web/search", brave, methods=["GET"]),
            Route("/pages/{status}", self.page),
        ])


@pytest.fixture
def providers() -> Iterator[EchoProviders]:
    """The echoing providers on a free loopback port."""
    fake = EchoProviders()
    with serve_app(fake.app()) as url:
        fake.url = url
        yield fake


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """A `researchrl` command as a user runs it, with every key in its documented env var."""
    full = {**os.environ, "COLUMNS": "200", **{var: key for var, key in KEYS.values()}, **(env or {})}
    return subprocess.Popen([*RESEARCHRL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """Exit code and stdout + stderr together."""
    out, err = proc.communicate(timeout=240)
    return proc.returncode, out + err


def pieces(secret: str) -> set[str]:
    """Every 8-character piece of a secret: none may be printed or saved."""
    return {secret[i : i + 8] for i in range(len(secret) - 7)}


def leaks(blobs: dict[str, bytes], secrets: list[str]) -> list[str]:
    """'where: piece' for every piece of a secret found in a blob."""
    return [f"{where}: {p}" for where, blob in blobs.items() for s in secrets for p in pieces(s) if p.encode() in blob]


def files_under(root: Path) -> dict[str, bytes]:
    """The bytes of every file below `root` (caches, records, configs, pages, saved trajectories)."""
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def questions(path: Path, *texts: str) -> Path:
    """A benchmark JSONL of `texts`, gold "the gold" (never the policy's answer, so the judge is always asked)."""
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": t, "answers": ["the gold"]}) + "\n" for i, t in enumerate(texts)))
    return path


def test_no_key_is_printed_or_saved_by_ask_eval_and_report(providers: EchoProviders, tmp_path: Path) -> None:
    started = time.monotonic()
    url = providers.url
    web = ["--set", f"env.fetch.allow_hosts={url.removeprefix('http://')}", "--set", "env.search_retry.attempts=2"]
    live = ["--search", "serper", "--search-url", f"{url}/serper", "--web", "live"]
    data = questions(tmp_path / "q.jsonl", *(f"Who reads the leak, JUDGE-{s}?" for s in (200, 429, 500)))
    runs = {
        "ask": start("ask", "Who reads the leak?", "--base-url", f"{url}/policy/v1", "--search", "serper", "--search-url",
                     f"{url}/serper", "--reader", "llm", "--reader-url", f"{url}/reader/v1", "--web", "record", "--cache",
                     str(tmp_path / "ask-cache.sqlite"), "--save", str(tmp_path / "ask" / "trajectory.json"), *web),
        "eval": start("eval", "--data", str(data), "--out", str(tmp_path / "eval"), "--base-url", f"{url}/policy/v1",
                      "--env", "web", "--search", "brave", "--search-url", f"{url}/brave", "--judge-url", f"{url}/judge/v1",
                      "--web", "record", "--cache", str(tmp_path / "eval-cache.sqlite"), "--set", "env.reader=llm",
                      "--set", f"env.reader_url={url}/reader/v1", *web),
        **{f"policy-{s}": start("ask", f"POLICY-{s}", "--base-url", f"{url}/policy/v1", *live) for s in ERRORS},
        **{f"judge-{s}": start("eval", "--data", str(questions(tmp_path / f"j{s}.jsonl", f"JUDGE-{s} ANSWER-NOW")),
                               "--out", str(tmp_path / f"eval-judge-{s}"), "--base-url", f"{url}/policy/v1", "--env", "web",
                               "--judge-url", f"{url}/judge/v1", *live)
           for s in (401, 403)},
    }
    results = {name: finish(proc) for name, proc in runs.items()}
    results["report"] = finish(start("report", str(tmp_path / "eval")))
    printed = {f"{name} output": text.encode() for name, (_, text) in results.items()}
    print(f"runs took {time.monotonic() - started:.1f} s")

    codes = {name: code for name, (code, _) in results.items()}
    assert codes == {**{name: 0 for name in runs}, **{f"policy-{s}": 2 for s in ERRORS},
                     "judge-401": 2, "judge-403": 2, "report": 0}, {n: t[-1500:] for n, (_, t) in results.items()}
    # every provider really was sent its key and echoed it back, in every status
    expected = {("policy", s) for s in ERRORS} | {("reader", s) for s in (200, *ERRORS)}
    expected |= {("judge", s) for s in (200, 401, 403, 429, 500)} | {(p, s) for p in ("serper", "brave") for s in (200, *ERRORS)}
    assert expected <= set(providers.seen), sorted(expected - set(providers.seen))
    for s in ERRORS:  # the echo reached the one-line error, masked
        assert f"HTTP {s}" in results[f"policy-{s}"][1] and "[redacted]" in results[f"policy-{s}"][1]
    assert "refused the credentials" in results["judge-401"][1] and "[redacted]" in results["judge-403"][1]
    files = files_under(tmp_path)
    assert b"[redacted]" in files["ask-cache.sqlite"] and b"[redacted]" in files["eval/records.jsonl"]
    assert {"eval/report.html", "eval/eval_config.json", "ask/trajectory.json"} <= set(files)
    assert not leaks({**printed, **files}, [key for _, key in KEYS.values()])


@pytest.fixture
def redis_with_password() -> Iterator[str]:
    """A redis-server on a free loopback port that requires REDIS_PASSWORD; its host:port/db."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not on PATH (apt-get install redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--requirepass", REDIS_PASSWORD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield f"127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_redis_password_is_used_but_never_printed_or_saved(providers: EchoProviders, redis_with_password: str,
                                                             tmp_path: Path) -> None:
    url = providers.url
    data = questions(tmp_path / "q.jsonl", "JUDGE-200 ANSWER-NOW")

    def evaluate(out: str, cache: str, **env: str) -> subprocess.Popen[str]:
        return start("eval", "--data", str(data), "--out", str(tmp_path / out), "--base-url", f"{url}/policy/v1",
                     "--env", "web", "--search", "serper", "--search-url", f"{url}/serper", "--web", "record",
                     "--cache", cache, env=env)

    runs = {
        "literal": evaluate("literal", f"redis://:{REDIS_PASSWORD}@{redis_with_password}"),
        "from env": evaluate("from-env", f"redis://:${{RESEARCH_REDIS_PASSWORD}}@{redis_with_password}",
                             RESEARCH_REDIS_PASSWORD=REDIS_PASSWORD),
        "wrong": evaluate("wrong", f"redis://:{REDIS_PASSWORD[::-1]}@{redis_with_password}"),
    }
    results = {name: finish(proc) for name, proc in runs.items()}
    assert results["literal"][0] == 0 and results["from env"][0] == 0, results
    assert results["wrong"][0] == 2 and "AuthenticationError" in results["wrong"][1]
    saved = {name: json.loads((tmp_path / name / "eval_config.json").read_text())["env"]["cache"]
             for name in ("literal", "from-env")}
    assert saved == {"literal": f"redis://:[redacted]@{redis_with_password}",
                     "from-env": f"redis://:${{RESEARCH_REDIS_PASSWORD}}@{redis_with_password}"}
    printed = {name: text.encode() for name, (_, text) in results.items()}
    assert not leaks({**printed, **files_under(tmp_path)}, [REDIS_PASSWORD, REDIS_PASSWORD[::-1]])


def test_a_runs_config_toml_names_env_vars_and_holds_no_secret(tmp_path: Path) -> None:
    from researchrl.config import nest
    from researchrl.errors import ConfigError
    from researchrl.rl.config import load_config, load_run_config
    from researchrl.web.cache import open_store

    settings = {"env.cache": f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0", "env.search": "searxng",
                "env.search_url": f"https://me:{KEYS['brave'][1]}@searx.example.org",
                "env.reader": "llm", "env.reader_url": f"https://llm.example.org/v1?api_key={KEYS['reader'][1]}"}
    (tmp_path / "config.toml").write_text(load_config("cpu", None, nest(settings)).to_toml())
    text = (tmp_path / "config.toml").read_text()
    assert not leaks({"config.toml": text.encode()}, [REDIS_PASSWORD, KEYS["brave"][1], KEYS["reader"][1]])
    assert 'reader_key_env = "READER_API_KEY"' in text and "https://me:[redacted]@searx.example.org" in text
    with pytest.raises(ConfigError, match="--set env.cache="):  # a resumed run is told how to give the password again
        open_store(load_run_config(tmp_path).env.cache)
