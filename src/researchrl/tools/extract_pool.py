"""Page-text extraction on the free cores: a process pool behind this process's extraction cache.

trafilatura holds the GIL, so extraction in threads uses one core however many browse calls wait for it; here
it runs in worker processes, so a call never waits behind another call's extraction while a core is free. The
LRU cache stays in this process (`pages.cached_text`): a hit is never extracted again. Workers are spawned (this
process has threads, so fork is unsafe; a spawned worker costs ~0.3 s, mostly importing trafilatura) when the
first page arrives, so commands that never browse start none.

For the extractive reader a page's one task also segments the text and ranks each segment's sentences
(`extract_and_rank`): the reader's BM25 runs beside the extraction, and this process only drops the sentences its
episode's memory holds. A page whose text is cached goes to a worker as that text, to be ranked.

Faults, per page:
- past `timeout` seconds the call gets FetchError(url, "extract_timeout"); a running task cannot be cancelled,
  so the pool's workers are killed and the next page starts a fresh pool;
- a worker that dies (segfault, os._exit, the OOM killer) breaks its pool: the pool is replaced and every page
  that was in flight on it is tried once more on the new one, then gets FetchError(url, "extract_crash"); a
  MemoryError raised in a worker is an extract_crash too (this process is not out of memory).
At most IN_FLIGHT_PER_WORKER pages per worker are handed to the pool at once; the rest wait here, so the pool's
queues never hold thousands of pages and the time limit measures a page's own extraction, plus at most one
other page's ahead of it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from multiprocessing import get_context
from typing import TypeVar

from researchrl.tools.pages import cache_key, cached_text, extract_main, remember_text, segment
from researchrl.tools.ranking import rank_sentences
from researchrl.types import Page
from researchrl.web.errors import FetchError
from researchrl.web.http import HTML_TYPES

IN_FLIGHT_PER_WORKER = 2  # pages handed to the pool per worker: one extracting, one ready to start
DEFAULT_TIMEOUT = 30.0  # seconds one page may take in a worker (the largest Readability test page, 1.6 MB: 0.05 s)

_log = logging.getLogger("researchrl")
_T = TypeVar("_T")


def pool_workers(requested: int | None) -> int:
    """Worker processes: as requested (0: extract in threads), else one per core this process may use.

    Not one fewer for this process's event loop: the loop waits on the network much of the time, and a worker per
    core lets extraction use that core meanwhile (bench/load.py, 2 cores, 4,096 calls: 22.2 s against 25.7 s).
    """
    if requested is not None:
        return requested
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def extract_uncached(page: Page) -> str:
    """What a worker runs for an HTML page: its main text, uncached (the cache lives in the parent)."""
    return extract_main(page.text, page.url or None)


Ranked = dict[int, tuple[str, ...]]  # segment number -> its sentences ranked for the reader (rank_sentences)


def extract_and_rank(page: Page, question: str, sub_query: str, window: range, size: int) -> tuple[str, Ranked]:
    """What a worker runs for the extractive reader: the page's main text (a plain-text page's own text), and the
    ranked sentences of its segments of `size` characters numbered in `window` (the ones a browse may read)."""
    text = extract_uncached(page) if page.content_type in HTML_TYPES else page.text
    segments = segment(text, size)
    return text, {i: rank_sentences(segments[i], question, sub_query) for i in window if i < len(segments)}


class ExtractPool:
    """Main-text extraction in `workers` spawned processes started on first use; `extract` is BrowseTool's extractor."""

    def __init__(
        self,
        workers: int,
        timeout: float = DEFAULT_TIMEOUT,
        worker: Callable[[Page], str] = extract_uncached,
        ranker: Callable[[Page, str, str, range, int], tuple[str, Ranked]] = extract_and_rank,
    ):
        if workers < 1:
            raise ValueError("an extraction pool needs at least one worker (0 workers: extract in threads)")
        self.workers = workers
        self.timeout = timeout
        self.worker = worker  # module-level, so a spawned process can import it; tests pass a scripted one
        self.ranker = ranker  # the same, for extract_and_rank
        self.submitted = 0  # tasks handed to a worker, retries included (an extract's cache hit never is)
        self._slots = asyncio.Semaphore(workers * IN_FLIGHT_PER_WORKER)  # pages in the pool's queues at once
        self._executor: ProcessPoolExecutor | None = None
        self._in_threads = False  # no worker process could start here: extraction runs in threads, as without a pool
        self._closed = False

    async def extract(self, page: Page) -> str:
        """The page's main text: from the cache, else from a worker; plain text passes through unchanged."""
        if page.content_type not in HTML_TYPES:
            return page.text
        key = cache_key(page)
        main = cached_text(key)
        if main is None:
            main = await self._in_worker(page.url, self.worker, page)
            remember_text(key, main)
        return main

    async def extract_and_rank(
        self, page: Page, question: str, sub_query: str, window: range, size: int
    ) -> tuple[str, Ranked]:
        """`extract(page)`, and the extractive reader's ranking of the page's segments in `window`: one worker task."""
        key = cache_key(page) if page.content_type in HTML_TYPES else None
        main = None if key is None else cached_text(key)
        job = page if main is None else replace(page, content_type="text/plain", text=main)  # ranked, not extracted
        text, ranked = await self._in_worker(page.url, self.ranker, job, question, sub_query, window, size)
        if key is not None and main is None:
            remember_text(key, text)
        return text, ranked

    async def _in_worker(self, url: str, task: Callable[..., _T], *args: object) -> _T:
        """`task(*args)` for the page at `url` in a worker; tried again on a fresh pool if its pool broke under it."""
        for _ in range(2):
            if self._closed:
                raise FetchError(url, "extract_closed", "the environment closed while the page was extracted")
            executor = self._pool()
            if executor is None:
                return await asyncio.to_thread(task, *args)
            try:
                return await self._run(executor, url, task, *args)
            except BrokenProcessPool:
                await self._discard(executor)
        raise FetchError(url, "extract_crash", "the extraction worker died twice while extracting this page")

    def _pool(self) -> ProcessPoolExecutor | None:
        """The running pool, made on first use; None when no worker process can start here."""
        if self._executor is None and not self._in_threads:
            try:
                self._executor = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"))
            except OSError as err:  # the pool's queues need POSIX semaphores (/dev/shm)
                self._give_up(err)
        return self._executor

    async def _run(self, executor: ProcessPoolExecutor, url: str, task: Callable[..., _T], *args: object) -> _T:
        """`task(*args)` run by `executor`; BrokenProcessPool when that pool broke (or was replaced) meanwhile.

        The pool's task is never cancelled from here, not even when the call is: Python 3.11's pool, breaking, fails
        on a cancelled task and leaves the others unanswered. So a slot is given back when the task ends.
        """
        await self._slots.acquire()
        try:
            future = executor.submit(task, *args)  # starts a worker when none is idle
        except BaseException as err:
            self._slots.release()
            if isinstance(err, OSError):  # a process limit: no worker could start
                self._give_up(err)
                raise BrokenProcessPool("no extraction worker could start") from err
            raise
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._slots.release))
        self.submitted += 1
        result = asyncio.wrap_future(future)
        result.add_done_callback(_retrieve)
        done, _ = await asyncio.wait({result}, timeout=self.timeout)  # unlike wait_for, cancels nothing
        if not done:
            if executor is not self._executor:  # another page hung or crashed this pool: not this page's fault
                raise BrokenProcessPool("the pool was replaced while this page waited")
            await self._discard(executor)
            raise FetchError(url, "extract_timeout", f"extraction ran past {self.timeout:g} s")
        try:
            return result.result()
        except MemoryError:
            raise FetchError(url, "extract_crash", "the extraction worker ran out of memory") from None

    def _give_up(self, err: OSError) -> None:
        """From now on extract in threads: this machine cannot start worker processes."""
        _log.warning("page extraction runs in threads, on one core: no extraction worker could start (%s)", err)
        self._in_threads = True

    async def _discard(self, executor: ProcessPoolExecutor) -> None:
        """Stop a broken or hung pool, once, by whichever call saw it first; the next page starts a fresh one."""
        if executor is self._executor:
            self._executor = None
            await asyncio.to_thread(_stop, executor)

    async def aclose(self) -> None:
        """Kill the workers and wait for them (pages in flight get extract_closed); nothing to do if never used."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(_stop, executor)


def _retrieve(result: asyncio.Future[object]) -> None:
    """Mark a task's error as seen: nobody awaits the task of a call that stopped waiting, and asyncio would log it."""
    if not result.cancelled():
        result.exception()


def _stop(executor: ProcessPoolExecutor) -> None:
    """Kill the pool's workers, then wait for them and its manager thread; tasks still pending fail BrokenProcessPool.

    Killing is the only way to stop a running task; `shutdown` alone would wait for a hung one forever.
    """
    for process in list((executor._processes or {}).values()):  # private: Python 3.14 adds executor.kill_workers()
        process.kill()
    executor.shutdown(wait=True)
