"""httpx's connection pool in shards of SHARD_CONNECTIONS connections: per-request pool bookkeeping that stays small.

httpcore 1.0's pool walks all its connections on every request and every response closed, and for each idle
connection counts them all again, so its cost per request grows with the pool (quadratically with the idle ones).
At a few hundred connections that bookkeeping was over half of the event loop's CPU under load (bench/load.py).
The same count also compares all connections, not the idle ones, against the keep-alive limit (20 by default), so
a pool past 20 connections closed each connection the moment it went idle and opened a new one for the next request
(encode/httpcore#1035). Here each shard is its own small pool whose keep-alive limit is its size: connections are
reused, and a request costs one shard's bookkeeping.

A request goes to the shard with the fewest requests in flight (a response holds its shard until it is closed), so
while callers hold at most `max_connections` requests in flight, as Fetcher and the search clients do with their
semaphores, no shard ever queues a request in its own pool.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable

import httpx

SHARD_CONNECTIONS = 16  # connections per shard: its bookkeeping walks at most these


class ShardedTransport(httpx.AsyncBaseTransport):
    """`max_connections` connections in shards of at most SHARD_CONNECTIONS connections, one httpx transport each."""

    def __init__(self, max_connections: int, shard_connections: int = SHARD_CONNECTIONS):
        if max_connections < 1 or shard_connections < 1:
            raise ValueError("a transport needs at least one connection per shard")
        shards = math.ceil(max_connections / shard_connections)
        size = math.ceil(max_connections / shards)  # 100 connections: 7 shards of 15, not 6 of 16 and one of 4
        tls = httpx.create_ssl_context()  # shared: each context loads the CA bundle, tens of ms of CPU
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        self._shards = [httpx.AsyncHTTPTransport(verify=tls, limits=limits) for _ in range(shards)]
        self._busy = [0] * shards  # requests in flight on each shard, their responses not yet closed

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` on the least busy shard; the shard is held until the response is closed."""
        shard = min(range(len(self._shards)), key=self._busy.__getitem__)
        self._busy[shard] += 1
        try:
            response = await self._shards[shard].handle_async_request(request)
        except BaseException:
            self._busy[shard] -= 1
            raise
        response.stream = _Held(response.stream, lambda: self._busy.__setitem__(shard, self._busy[shard] - 1))
        return response

    async def aclose(self) -> None:
        """Close every shard's connections."""
        for shard in self._shards:
            await shard.aclose()


class _Held(httpx.AsyncByteStream):
    """A response body that gives its shard back, once, when it is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]):
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()
