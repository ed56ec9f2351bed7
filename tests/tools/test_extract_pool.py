"""The extraction pool: the same text as in-process, on several workers; a page that crashes or hangs its worker
costs that page only, and no worker outlives the pool."""

from __future__ import annotations

import asyncio
import gzip
import os
import time
import uuid
from pathlib import Path

import psutil
import pytest

from researchrl.tools import extract_pool
from researchrl.tools.extract_pool import ExtractPool, extract_uncached, pool_workers
from researchrl.tools.pages import extract_main, extract_text
from researchrl.types import Page
from researchrl.web.errors import FetchError

HTML = Path(__file__).resolve().parents[3] / "shared" / "data" / "html"
READABILITY = HTML / "mozilla_readability_test_pages" / "pages"
AEB = HTML / "scrapinghub_aeb" / "html"
# news, blogs, an encyclopedia, a book chapter, tech news, pages in French, Portuguese, Czech and Chinese
READABILITY_PAGES = [
    "bbc-1", "cnn", "guardian-1", "nytimes-1", "breitbart", "medium-1", "blogger", "daringfireball-1", "dropbox-blog",
    "gitlab-blog", "wikipedia", "google-sre-book-1", "ars-1", "engadget", "lemonde-1", "folha", "aktualne", "gmw",
]
AEB_PAGES = 6  # the first few of the article-body benchmark's pages (news sites of many countries)
TIMEOUT = 5.0  # the scripted pools' time limit per page: long enough for a worker to start on a busy machine
SLACK = 3.0  # killing and joining the hung worker, on a busy machine
CRASH, HANG, OOM, PID = "<!--crash-->", "<!--hang-->", "<!--oom-->", "<!--pid-->"
GALLU = "Gallu is a demon of the Sumerian underworld. " * 20
ARTICLE = f"<html><body><article><h1>Gallu</h1><p>{GALLU}</p></article></body></html>"


def scripted_extract(page: Page) -> str:
    """A worker that crashes, hangs, runs out of memory or names its process when the page says so, else extracts."""
    if CRASH in page.text:
        os._exit(70)
    if HANG in page.text:
        time.sleep(3600)
    if OOM in page.text:
        raise MemoryError
    if PID in page.text:
        time.sleep(0.3)  # long enough for the pages in flight to overlap
        return str(os.getpid())
    return extract_uncached(page)


def html_page(name: str, html: str) -> Page:
    """An HTML page at a URL of its own, so no earlier test's cached text answers for it."""
    return Page(f"https://pool.test/{uuid.uuid4().hex}/{name}", 200, "text/html", html)


def new_processes(before: set[int]) -> list[psutil.Process]:
    """Child processes of this test not in `before`, less multiprocessing's resource tracker (one per process)."""
    return [
        child for child in psutil.Process().children(recursive=True)
        if child.pid not in before and "resource_tracker" not in " ".join(child.cmdline())
    ]


@pytest.fixture
async def pool():
    """Two scripted workers; closed after the test."""
    pool = ExtractPool(2, timeout=TIMEOUT, worker=scripted_extract)
    yield pool
    await pool.aclose()


@pytest.mark.skipif(not READABILITY.is_dir() or not AEB.is_dir(), reason="shared data not present")
async def test_the_pool_gives_the_same_text_as_this_process() -> None:
    from .test_pages import THREAD_MARKUP, forum_thread  # here: a scripted worker imports this module, not that one

    sources = [READABILITY / name / "source.html.gz" for name in READABILITY_PAGES]
    sources += sorted(AEB.glob("*.html.gz"))[:AEB_PAGES]
    pages = [html_page(str(path.relative_to(HTML)), gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace"))
             for path in sources]
    pages += [html_page(f"forum {name}", forum_thread(*markup)) for name, markup in THREAD_MARKUP.items()]  # comments
    pool = ExtractPool(2)
    try:
        texts = await asyncio.gather(*(pool.extract(page) for page in pages))
    finally:
        await pool.aclose()
    assert pool.submitted == len(pages) == 27  # every page went to a worker, once
    for page, text in zip(pages, texts):
        assert text == extract_main(page.text, page.url), page.url  # what extract_text computes on a cache miss
        assert text and extract_text(page) == text  # and the pool left its text in this process's cache


async def test_a_page_extracted_once_never_reaches_a_worker_again(pool: ExtractPool) -> None:
    page = html_page("gallu", ARTICLE)
    first = await pool.extract(page)
    again = await pool.extract(Page(page.url, 200, page.content_type, page.text))
    assert first == again == extract_main(ARTICLE, page.url) and pool.submitted == 1
    notes = Page("https://pool.test/notes.txt", 200, "text/plain", CRASH)
    assert await pool.extract(notes) == CRASH  # plain text stays here
    assert pool.submitted == 1


async def test_pages_in_parallel_run_on_several_workers(pool: ExtractPool) -> None:
    pids = await asyncio.gather(*(pool.extract(html_page(f"pid {i}", f"<p>{PID} {i}</p>")) for i in range(8)))
    assert len(set(pids)) == 2 and str(os.getpid()) not in pids


async def test_a_page_that_crashes_its_worker_gets_extract_crash_and_the_pool_goes_on(pool: ExtractPool) -> None:
    crash = html_page("crash", f"<html><body>{CRASH}</body></html>")
    started = time.monotonic()
    with pytest.raises(FetchError) as failed:
        await pool.extract(crash)
    assert (failed.value.kind, failed.value.url) == ("extract_crash", crash.url)
    assert time.monotonic() - started < TIMEOUT  # two worker start-ups, no time limit waited out
    assert pool.submitted == 2  # tried once more, on a fresh pool
    page = html_page("after", ARTICLE)
    assert await pool.extract(page) == extract_main(ARTICLE, page.url)


async def test_a_worker_out_of_memory_fails_that_page_only(pool: ExtractPool) -> None:
    with pytest.raises(FetchError, match="out of memory") as failed:
        await pool.extract(html_page("oom", f"<p>{OOM}</p>"))
    assert failed.value.kind == "extract_crash" and pool.submitted == 1
    page = html_page("after", ARTICLE)
    assert await pool.extract(page) == extract_main(ARTICLE, page.url)


async def test_a_page_that_hangs_its_worker_times_out_and_no_worker_is_left(pool: ExtractPool) -> None:
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    warm = html_page("warm", ARTICLE)
    await pool.extract(warm)  # the workers' start-up is not charged to the hanging page
    hang, innocent = html_page("hang", f"<p>{HANG}</p>"), html_page("innocent", f"<p>{PID}</p>")
    started = time.monotonic()
    hanging = asyncio.create_task(pool.extract(hang))
    await asyncio.sleep(0.5)
    assert int(await pool.extract(innocent)) != os.getpid()  # the other worker still extracts
    workers = new_processes(before)
    assert len(workers) == 2
    with pytest.raises(FetchError) as failed:
        await hanging
    assert (failed.value.kind, failed.value.url) == ("extract_timeout", hang.url)
    assert TIMEOUT <= time.monotonic() - started < TIMEOUT + SLACK
    assert not any(worker.is_running() for worker in workers)  # killed and reaped, the idle one with it
    page = html_page("after", ARTICLE)
    assert await pool.extract(page) == extract_main(ARTICLE, page.url)  # a fresh pool
    await pool.aclose()
    assert new_processes(before) == []


async def test_a_closed_pool_leaves_no_process_and_one_never_used_starts_none() -> None:
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    unused = ExtractPool(2)
    await unused.aclose()
    assert new_processes(before) == []
    pool = ExtractPool(2, timeout=TIMEOUT, worker=scripted_extract)
    hanging = asyncio.create_task(pool.extract(html_page("hang", f"<p>{HANG}</p>")))
    await asyncio.sleep(0.5)
    await pool.aclose()  # a page still in a worker when the environment closes
    with pytest.raises(FetchError) as failed:
        await hanging
    assert failed.value.kind == "extract_closed" and new_processes(before) == []


def test_the_pool_takes_one_worker_per_usable_core_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract_pool.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert (pool_workers(None), pool_workers(2), pool_workers(0)) == (4, 2, 0)  # 0: extraction stays in a thread
    monkeypatch.setattr(extract_pool.os, "sched_getaffinity", lambda pid: {0})
    assert pool_workers(None) == 1


async def test_where_no_worker_can_start_pages_are_extracted_in_a_thread(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_semaphores(*args: object, **kwargs: object) -> None:
        raise OSError(38, "Function not implemented")  # what a pool's queues meet without /dev/shm

    monkeypatch.setattr(extract_pool, "ProcessPoolExecutor", no_semaphores)
    pool = ExtractPool(2)
    page = html_page("gallu", ARTICLE)
    assert await pool.extract(page) == extract_main(ARTICLE, page.url) and pool.submitted == 0
    assert "runs in threads" in caplog.text  # said once, not hidden
    await pool.aclose()


async def test_the_local_environment_extracts_on_a_pool_it_closes_unless_told_not_to(shared_data: Path) -> None:
    from researchrl.environment import EnvConfig, open_environment  # here: spawned scripted workers need not import it

    for workers in (1, 0):
        async with open_environment(EnvConfig(extract_workers=workers)) as tools:
            extract = tools.tools["browse_webpage"].extract
            assert isinstance(getattr(extract, "__self__", None), ExtractPool) == (workers == 1)
        if workers:
            with pytest.raises(FetchError, match="closed"):  # closed with the environment
                await extract(html_page("late", ARTICLE))
