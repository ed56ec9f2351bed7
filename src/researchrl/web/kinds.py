"""The kinds of tool call (search, page, read, extract): what the cache, the guard and the Ray pool need to know of each.

One generic layer of each sort (`web/cached.py` Cached, `web/guard.py` Guarded, `distributed/tools.py` RemoteTool)
serves every kind from its ToolKind; a new kind of call is one more ToolKind here. A layer answers its kind's own
method (`search`, `fetch`, `read` or `extract`), so it stands wherever a SearchBackend, PageSource or Reader does.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from researchrl.errors import EnvironmentFault
from researchrl.search.base import SearchError
from researchrl.tools.reader import ReaderError, ReadRequest, ReadResult, render_reader_prompt
from researchrl.types import Page, SearchResult
from researchrl.web.errors import FetchError

DAY = 86_400.0
Args = tuple[Any, ...]


@dataclass(frozen=True)
class Codec:
    """How the cache keys one kind's calls and stores its answers (as JSON, a large body stored once by its hash)."""

    namespace: str  # the store's namespace for the entries
    field: str  # the entry's field holding an answer (a fault is held under "error")
    ttl: float  # seconds an entry stays fresh in cache mode
    identity: Callable[[str], str | None]  # the key's identity from the provider, when no cache_id names one
    key: Callable[[str, Args], tuple[object, ...]]  # the parts hashed into the key, from the identity and the call
    label: Callable[[str, Args], str]  # the key for people (replay misses name it)
    encode: Callable[[Any], Any]  # an answer as JSON
    decode: Callable[[Any, bytes | None], Any]  # the answer from its JSON and its body (None: the codec has none)
    body: Callable[[Any], bytes] | None = None  # a part stored under "blob" by content hash, however many keys share it
    version: int = 1  # hashed into every key: bump it when the key's parts or the encoding change, so old entries miss


@dataclass(frozen=True)
class ToolKind:
    """One kind of tool call: its method, its fault type, how the guard judges and prices it, how the cache stores it."""

    name: str  # what the ledger and the store call it: search, page, read, extract
    method: str  # the protocol method that makes the call
    args: Callable[..., Args]  # the method's signature: its arguments as a tuple, defaults filled in
    fault: type[EnvironmentFault]  # what the upstream raises for environment faults
    blame: Callable[[str, Args, str, str], EnvironmentFault]  # (source, call, kind, message) -> a fault of this call
    provider: str | None = None  # the ledger's provider when none is given (None: the upstream's name)
    outages: frozenset[str] = frozenset()  # fault kinds that count against a circuit breaker (any 5xx too)
    sent: Callable[[Args, Any], int] = lambda args, answer: 0  # bytes the ledger counts for a call
    scope: Callable[[Args], str] = lambda args: ""  # which breaker of a per-key set answers for a call
    codec: Codec | None = None  # how the cache stores answers; None: they are never stored


class Layer(ABC):
    """Base of the generic layers: the kind's method (`search`, `fetch`, `read`, `extract`) is the layer's `call`."""

    kind: ToolKind

    @abstractmethod
    async def call(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        """One call of the kind's method, its arguments as that method takes them."""

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        """`call`, under the name of the kind's method; any other missing attribute is missing."""
        kind = vars(self).get("kind")
        if kind is None or name != kind.method:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        return self.call


# ---------------------------------------------------------------- search

_WIDTH_FORMS = str.maketrans({
    chr(c): unicodedata.normalize("NFKC", chr(c))
    for c in (0x3000, *range(0xFF00, 0xFFF0))
    if unicodedata.decomposition(chr(c)).startswith(("<wide>", "<narrow>"))
})


def normalize_query(query: str) -> str:
    """The form queries are keyed by: full/half-width forms unified, NFC, case-folded, whitespace collapsed.

    Not NFKC: it would merge queries that differ in meaning, such as `10⁶` and `106`, or `x²` and `x2`.
    """
    return " ".join(unicodedata.normalize("NFC", query.translate(_WIDTH_FORMS)).casefold().split())


def _search_args(query: str, num: int = 10) -> tuple[str, int]:
    return query, num


def _search_key(provider: str, args: Args) -> tuple[object, ...]:
    query, num = args
    return provider, normalize_query(query), num


def _search_label(provider: str, args: Args) -> str:
    query, num = args
    return f"search {provider} {json.dumps(normalize_query(query), ensure_ascii=False)} num={num}"


SEARCH = ToolKind(
    name="search",
    method="search",
    args=_search_args,
    fault=SearchError,
    blame=lambda provider, args, kind, message: SearchError(provider, kind, message),
    outages=frozenset({"timeout", "connect", "network", "http_429", "bad_response", "engines_unresponsive"}),
    sent=lambda args, results: sum(len(f"{r.title}{r.url}{r.snippet}".encode()) for r in results),
    codec=Codec(
        namespace="search",
        field="results",
        ttl=7 * DAY,  # paper: search results cached for 7 days
        identity=lambda provider: provider,  # only for a backend with no cache_id (a local index, a test fake)
        key=_search_key,
        label=_search_label,
        encode=lambda results: [asdict(r) for r in results],
        decode=lambda data, body: [SearchResult(**item) for item in data],
        version=2,  # 2: the provider's endpoint joined the identity (1 keyed a provider by its name alone)
    ),
)

# ---------------------------------------------------------------- pages


def _one(arg: Any) -> Args:  # noqa: ANN401
    return (arg,)


def _page_meta(page: Page) -> dict[str, Any]:
    return {"url": page.url, "status": page.status, "content_type": page.content_type}


def _page(meta: dict[str, Any], body: bytes) -> Page:
    text = body.decode("utf-8", "surrogatepass")
    return Page(url=meta["url"], status=meta["status"], content_type=meta["content_type"], text=text)


def host_of(url: str) -> str:
    """A URL's host for its breaker; '' for one no parser accepts (the SSRF guard then refuses it as an observation)."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:  # e.g. a model's "http://[truncated]/..." copied from an observation
        return ""


PAGE = ToolKind(
    name="page",
    method="fetch",
    args=_one,
    fault=FetchError,
    blame=lambda source, args, kind, message: FetchError(args[0], kind, message),
    provider="fetch",
    outages=frozenset({"timeout", "connect", "network", "dns", "incomplete_body", "http_429"}),
    sent=lambda args, page: len(page.text.encode()),
    scope=lambda args: host_of(args[0]),  # one breaker per host
    codec=Codec(
        namespace="url",
        field="page",
        ttl=7 * DAY,
        identity=lambda provider: "",  # the URL alone
        key=lambda identity, args: args,
        label=lambda identity, args: f"page {args[0]}",
        encode=_page_meta,
        decode=_page,
        body=lambda page: page.text.encode("utf-8", "surrogatepass"),
    ),
)

# ---------------------------------------------------------------- reader


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _read_key(reader_id: str, args: Args) -> tuple[object, ...]:
    req: ReadRequest = args[0]
    return req.url, _sha(req.segment), req.sub_query, reader_id, _sha(render_reader_prompt(req))


def _read_label(reader_id: str, args: Args) -> str:
    req: ReadRequest = args[0]
    return (
        f"read {reader_id} {req.url or '(no url)'} segment {req.page_index}/{req.total_pages} "
        f"sub_query {json.dumps(req.sub_query, ensure_ascii=False)}"
    )


READ = ToolKind(
    name="read",
    method="read",
    args=_one,
    fault=ReaderError,
    blame=lambda source, args, kind, message: ReaderError(kind, message),
    provider="reader",
    outages=frozenset({"timeout", "connect", "network", "http_429", "bad_response"}),
    sent=lambda args, result: len(args[0].segment.encode()),  # the segment sent
    codec=Codec(
        namespace="read",
        field="result",
        ttl=30 * DAY,  # a reader's answer only changes with its inputs, which the key holds
        identity=lambda provider: None,  # only a reader with a cache_id (LLMReader) is stored; local ones are not
        key=_read_key,
        label=_read_label,
        encode=asdict,
        decode=lambda data, body: ReadResult(**data),
    ),
)

# ---------------------------------------------------------------- extraction (on Ray workers only)

EXTRACT = ToolKind(
    name="extract",
    method="extract",
    args=_one,
    fault=FetchError,
    blame=lambda source, args, kind, message: FetchError(args[0].url, kind, message),  # the page's fault
)
