"""The sharded transport: requests spread over small pools, each shard given back when its response closes, and
idle connections kept for reuse (httpx's single pool closed them past 20 connections)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from researchrl.web.transport import ShardedTransport


def connections(transport: ShardedTransport) -> list[int]:
    """Open connections per shard."""
    return [len(shard._pool.connections) for shard in transport._shards]


async def test_a_burst_spreads_over_the_shards_and_keeps_its_connections_for_the_next(page_server) -> None:
    transport = ShardedTransport(40)  # 3 shards of 14
    async with httpx.AsyncClient(transport=transport) as client:
        first = await asyncio.gather(*(client.get(page_server.url(f"/slow?s=0.3&i={i}")) for i in range(40)))
        assert all(r.status_code == 200 for r in first)
        assert transport._busy == [0, 0, 0] and sorted(connections(transport)) == [13, 13, 14]
        again = await asyncio.gather(*(client.get(page_server.url(f"/slow?s=0.3&i={i}")) for i in range(40)))
        assert all(r.status_code == 200 for r in again) and sum(connections(transport)) == 40  # reused, not reopened


async def test_a_shard_is_given_back_when_a_stream_closes_early_or_a_request_fails(page_server) -> None:
    transport = ShardedTransport(4, shard_connections=2)
    async with httpx.AsyncClient(transport=transport) as client:
        async with client.stream("GET", page_server.url("/big?mb=1")) as response:
            assert response.status_code == 200 and sum(transport._busy) == 1
            async for _ in response.aiter_bytes():
                break  # closed unread
        assert transport._busy == [0, 0]
        with pytest.raises(httpx.ReadTimeout):
            await client.get(page_server.url("/slow?s=2"), timeout=0.2)
        assert transport._busy == [0, 0]
