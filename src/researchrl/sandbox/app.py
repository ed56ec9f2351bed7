"""The sandbox's routes: a Serper-compatible search API, article pages, real HTML pages, an offline reader LLM,
health and fault counters."""

from __future__ import annotations

import functools
import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from researchrl.sandbox.config import SandboxConfig
from researchrl.sandbox.faults import FaultCounters, FaultInjector
from researchrl.sandbox.pages import article_page, message_page, page_path
from researchrl.sandbox.reader_api import reader_routes
from researchrl.search.local import BM25Index, Corpus, Document, snippet

MAX_NUM = 100  # Serper's largest page of results
HTML_LAYOUTS = {  # collection -> where a named page lives inside it (optionally .gz)
    "mozilla_readability_test_pages": "pages/{name}/source.html",
    "scrapinghub_aeb": "html/{name}.html",
}
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Article:
    """All passages that share a title, in corpus order."""

    title: str
    paragraphs: list[str]


@dataclass(frozen=True)
class Site:
    """Everything built from one passages file: the index and the articles by URL slug."""

    index: BM25Index
    articles: dict[str, Article]
    titles: list[str]


@functools.lru_cache(maxsize=4)
def load_site(passages: Path) -> Site:
    """Index the passages once per process per path (servers started by many tests share it)."""
    index = BM25Index(Corpus.load(passages))
    grouped: dict[str, list[str]] = {}
    for doc in index.corpus:
        grouped.setdefault(doc.title, []).append(doc.text)
    articles = {title.replace(" ", "_"): Article(title, texts) for title, texts in grouped.items()}
    return Site(index, articles, list(grouped))


class BadRequest(Exception):
    """A search request the API refuses with 400."""


def _best_per_title(index: BM25Index, query: str, num: int) -> list[Document]:
    """The best passage of each of the top `num` titles, widening the passage search until enough titles."""
    k = num * 4
    while True:
        hits = index.search(query, k)
        best: dict[str, Document] = {}
        for doc, _ in hits:
            best.setdefault(doc.title, doc)
        if len(best) >= num or len(hits) < k:
            return list(best.values())[:num]
        k *= 2


def _serp(site: Site, params: Any, base_url: str) -> dict[str, Any]:
    """One Serper-shaped response: searchParameters echoed back and organic results."""
    if not isinstance(params, dict):
        raise BadRequest("Each query must be a JSON object")
    query, num = params.get("q"), params.get("num", 10)
    if not isinstance(query, str):
        raise BadRequest("Missing query parameter")
    if not isinstance(num, int) or isinstance(num, bool) or not 1 <= num <= MAX_NUM:
        raise BadRequest(f"num must be an integer from 1 to {MAX_NUM}")
    docs = _best_per_title(site.index, query, num) if query.strip() else []
    organic = [
        {"title": doc.title, "link": base_url + page_path(doc.title), "snippet": snippet(doc.text), "position": i}
        for i, doc in enumerate(docs, start=1)
    ]
    parameters = {"q": query, "gl": params.get("gl", "us"), "hl": params.get("hl", "en"), "num": num,
                  "type": "search"}
    return {"searchParameters": parameters, "organic": organic}


def _real_page(root: Path, collection: str, name: str) -> bytes | None:
    """A real page's HTML from its collection's layout (plain or .gz file), None if there is none."""
    layout, name = HTML_LAYOUTS.get(collection), name.removesuffix(".gz").removesuffix(".html")
    if layout is None or not SAFE_NAME.fullmatch(name):
        return None
    path = root / collection / layout.format(name=name)
    if path.is_file():
        return path.read_bytes()
    gz = path.with_name(path.name + ".gz")
    return gzip.decompress(gz.read_bytes()) if gz.is_file() else None


def _html_type(content: bytes) -> str:
    """text/html, with charset=utf-8 only when the bytes decode as UTF-8."""
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return "text/html"
    return "text/html; charset=utf-8"


def create_app(config: SandboxConfig, counters: FaultCounters) -> Starlette:
    """The ASGI app for one sandbox; `counters` records the faults it injects."""
    site = load_site(config.passages.resolve())

    async def search(request: Request) -> Response:
        try:
            payload = json.loads(await request.body())
            base_url = str(request.base_url).rstrip("/")
            if isinstance(payload, list):
                return JSONResponse([_serp(site, item, base_url) for item in payload])
            return JSONResponse(_serp(site, payload, base_url))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return JSONResponse({"message": "Invalid JSON body", "statusCode": 400}, status_code=400)
        except BadRequest as exc:
            return JSONResponse({"message": str(exc), "statusCode": 400}, status_code=400)

    async def wiki(request: Request) -> Response:
        article = site.articles.get(request.path_params["slug"].replace(" ", "_"))
        if article is None:
            raise HTTPException(404)
        return HTMLResponse(article_page(article.title, article.paragraphs, site.titles))

    async def html(request: Request) -> Response:
        content = _real_page(config.html_root, request.path_params["collection"], request.path_params["name"])
        if content is None:
            raise HTTPException(404)
        return Response(content, media_type=_html_type(content))

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def faults(request: Request) -> Response:
        return JSONResponse(counters.snapshot())

    async def not_found(request: Request, exc: Exception) -> Response:
        return HTMLResponse(message_page(404, "Not Found", "There is no page at this address."), 404)

    routes = [
        Route("/search", search, methods=["POST"]),
        Route("/wiki/{slug:path}", wiki),
        Route("/html/{collection}/{name}", html),
        Route("/healthz", healthz),
        Route("/_faults", faults),
        *reader_routes(),
    ]
    middleware = [Middleware(FaultInjector, config=config.faults, counters=counters)]
    return Starlette(routes=routes, middleware=middleware, exception_handlers={404: not_found})
