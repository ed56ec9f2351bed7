"""The default persistent store: one SQLite file that several processes share (WAL, busy timeout, BEGIN IMMEDIATE)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from researchrl.web.cache import StoreError, StoreStats, _check_bucket, reserve

T = TypeVar("T")

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY, ns TEXT NOT NULL, key TEXT NOT NULL, size INTEGER NOT NULL,
    expires REAL, accessed REAL NOT NULL, UNIQUE (ns, key));
CREATE INDEX IF NOT EXISTS entries_accessed ON entries (accessed);
CREATE INDEX IF NOT EXISTS entries_expires ON entries (expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS blobs (id INTEGER PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY CHECK (id = 0), entries INTEGER NOT NULL, bytes INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES (0, 0, 0);
CREATE TRIGGER IF NOT EXISTS entries_added AFTER INSERT ON entries BEGIN
    UPDATE totals SET entries = entries + 1, bytes = bytes + new.size; END;
CREATE TRIGGER IF NOT EXISTS entries_removed AFTER DELETE ON entries BEGIN
    UPDATE totals SET entries = entries - 1, bytes = bytes - old.size; DELETE FROM blobs WHERE id = old.id; END;
CREATE TRIGGER IF NOT EXISTS entries_resized AFTER UPDATE OF size ON entries BEGIN
    UPDATE totals SET bytes = bytes + new.size - old.size; END;
CREATE TABLE IF NOT EXISTS buckets (name TEXT PRIMARY KEY, tokens REAL NOT NULL, stamp REAL NOT NULL, full_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS buckets_full_at ON buckets (full_at);
"""


class SQLiteStore:
    """The default persistent store: one SQLite file that several processes may share at once.

    WAL mode lets readers run beside the one writer; `busy_timeout` makes writers queue rather than fail;
    read-modify-write steps run under `BEGIN IMMEDIATE`. Values live in their own table so the access
    time an LRU read updates does not rewrite a multi-MB page. Running totals are kept by triggers, so
    every process sees the same bounds. All SQLite calls run on one worker thread with its own
    connection, so thousands of waiting coroutines never block the event loop.
    """

    def __init__(
        self,
        path: str | Path,
        max_entries: int = 1_000_000,
        max_bytes: int = 8 * 2**30,
        busy_timeout: float = 30.0,
    ):
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("a store needs max_entries >= 1 and max_bytes >= 1")
        self.path = Path(path)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._busy_timeout = busy_timeout
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._db: sqlite3.Connection | None = None
        self._closed = False
        try:
            self._worker.submit(self._guarded, self._open).result()
        except BaseException:
            self._worker.shutdown(wait=True)
            raise

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    async def get(self, ns: str, key: str) -> bytes | None:
        """The value, its access time refreshed; an expired row is a miss and is deleted."""
        return await self._run(self._get, ns, key)

    async def put(self, ns: str, key: str, value: bytes, ttl: float | None) -> None:
        """Store, then evict expired rows and least recently used ones past either bound."""
        await self._run(self._put, ns, key, bytes(value), ttl)

    async def take(self, bucket: str, rate: float, burst: float) -> float:
        """Token bucket shared by every process using this file (wall-clock time)."""
        _check_bucket(rate, burst)
        return await self._run(self._take, bucket, rate, burst)

    async def stats(self) -> StoreStats:
        """Entries and bytes held, as every process sees them."""
        return await self._run(self._stats)

    async def aclose(self) -> None:
        """Close the connection and stop the worker thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(self._worker, self._close)
        self._worker.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call `fn` on the worker thread."""
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        return await asyncio.get_running_loop().run_in_executor(self._worker, self._guarded, fn, *args)

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        """SQLite failures as StoreError naming the file."""
        try:
            return fn(*args)
        except sqlite3.Error as err:
            raise StoreError(f"sqlite store {self.path}: {err}") from err

    # The methods below run on the worker thread only.

    def _open(self) -> None:
        """Connect (autocommit: transactions are explicit), switch to WAL, create the schema if missing."""
        self._db = db = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            self._switch_to_wal(db)
            db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across process crashes, fast commits
            with self._write() as tx:
                for statement in _SQLITE_SCHEMA.split(";\n"):
                    if statement.strip():
                        tx.execute(statement)
        except BaseException:
            self._close()
            raise

    def _switch_to_wal(self, db: sqlite3.Connection) -> None:
        """WAL mode, retried until the busy timeout: SQLite refuses the switch at once, without its busy handler,
        while another process is opening (or writing) the same fresh file."""
        deadline = time.monotonic() + self._busy_timeout
        delay = 0.005
        while True:
            try:
                db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(2 * delay, 0.2)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock up front, so read-then-write steps are atomic."""
        assert self._db is not None
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _get(self, ns: str, key: str) -> bytes | None:
        assert self._db is not None
        now = time.time()
        row = self._db.execute(
            "UPDATE entries SET accessed = ? WHERE ns = ? AND key = ? AND (expires IS NULL OR expires > ?) RETURNING id",
            (now, ns, key, now),
        ).fetchone()
        if row is None:
            self._db.execute("DELETE FROM entries WHERE ns = ? AND key = ? AND expires <= ?", (ns, key, now))
            return None
        # Joined on (ns, key) so a row evicted and its id reused since the UPDATE reads as a miss, not as another value.
        found = self._db.execute(
            "SELECT b.value FROM blobs b JOIN entries e ON e.id = b.id WHERE e.id = ? AND e.ns = ? AND e.key = ?",
            (row[0], ns, key),
        ).fetchone()
        return None if found is None else bytes(found[0])

    def _put(self, ns: str, key: str, value: bytes, ttl: float | None) -> None:
        now = time.time()
        with self._write() as tx:
            (entry_id,) = tx.execute(
                "INSERT INTO entries (ns, key, size, expires, accessed) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (ns, key) DO UPDATE SET size = excluded.size, expires = excluded.expires, "
                "accessed = excluded.accessed RETURNING id",
                (ns, key, len(value), None if ttl is None else now + ttl, now),
            ).fetchone()
            tx.execute("INSERT OR REPLACE INTO blobs (id, value) VALUES (?, ?)", (entry_id, value))
            self._evict(tx, entry_id, now)

    def _evict(self, tx: sqlite3.Connection, keep: int, now: float) -> None:
        """Inside a write: purge expired rows, then the least recently used until both bounds hold (never `keep`)."""
        entries, size = tx.execute("SELECT entries, bytes FROM totals").fetchone()
        if entries <= self.max_entries and size <= self.max_bytes:
            return
        tx.execute("DELETE FROM entries WHERE expires <= ?", (now,))
        entries, size = tx.execute("SELECT entries, bytes FROM totals").fetchone()
        extra_entries, extra_bytes = entries - self.max_entries, size - self.max_bytes
        victims = []
        for entry_id, entry_size in tx.execute("SELECT id, size FROM entries WHERE id != ? ORDER BY accessed", (keep,)):
            if extra_entries <= 0 and extra_bytes <= 0:
                break
            victims.append((entry_id,))
            extra_entries, extra_bytes = extra_entries - 1, extra_bytes - entry_size
        tx.executemany("DELETE FROM entries WHERE id = ?", victims)

    def _take(self, bucket: str, rate: float, burst: float) -> float:
        with self._write() as tx:
            now = time.time()  # read under the write lock: reservations are ordered like their clock readings
            row = tx.execute("SELECT tokens, stamp FROM buckets WHERE name = ?", (bucket,)).fetchone()
            tokens, stamp = row if row is not None else (burst, now)
            tokens, wait = reserve(tokens, stamp, now, rate, burst)
            stamp = max(stamp, now)  # a clock step backwards must not refill the same interval twice
            full_at = stamp + (burst - tokens) / rate
            tx.execute("INSERT OR REPLACE INTO buckets VALUES (?, ?, ?, ?)", (bucket, tokens, stamp, full_at))
            tx.execute("DELETE FROM buckets WHERE full_at < ?", (now,))  # a full bucket is the same as none
            return wait

    def _stats(self) -> StoreStats:
        assert self._db is not None
        entries, size = self._db.execute("SELECT entries, bytes FROM totals").fetchone()
        return StoreStats(entries, size)
