"""The shared store: one Redis server, every operation a Lua script (TTL, LRU bounds, token buckets on its clock)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from researchrl.web.cache import StoreError, StoreStats, _check_bucket

T = TypeVar("T")

# KEYS: value, lru, sizes, expiries, bytes   ARGV: member
_REDIS_GET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local value = redis.call('GET', KEYS[1])
if value then
  redis.call('ZADD', KEYS[2], 'XX', now, ARGV[1])
  return value
end
local size = redis.call('HGET', KEYS[3], ARGV[1])
if size then
  redis.call('DECRBY', KEYS[5], size)
  redis.call('HDEL', KEYS[3], ARGV[1])
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return false
"""

# KEYS: value, lru, sizes, expiries, bytes   ARGV: member, value, ttl ms (0: none), max entries, max bytes, value prefix
_REDIS_PUT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function forget(member)
  local size = redis.call('HGET', KEYS[3], member)
  if size then
    redis.call('DECRBY', KEYS[5], size)
    redis.call('HDEL', KEYS[3], member)
  end
  redis.call('ZREM', KEYS[2], member)
  redis.call('ZREM', KEYS[4], member)
  redis.call('DEL', ARGV[6] .. member)
end
forget(ARGV[1])
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
  redis.call('ZADD', KEYS[4], now + ttl * 1000, ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], #ARGV[2])
redis.call('INCRBY', KEYS[5], #ARGV[2])
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 100)) do
  forget(member)
end
local max_entries, max_bytes = tonumber(ARGV[4]), tonumber(ARGV[5])
while true do
  local entries = redis.call('ZCARD', KEYS[2])
  local size = tonumber(redis.call('GET', KEYS[5]) or '0')
  if entries <= max_entries and size <= max_bytes then break end
  local victim = nil
  for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, 1)) do
    if member ~= ARGV[1] and not victim then victim = member end
  end
  if not victim then break end
  forget(victim)
end
return 1
"""

# reserve() in Lua, on the server's clock.   KEYS: bucket   ARGV: rate, burst
_REDIS_TAKE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1]) or burst
local stamp = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate) - 1
stamp = math.max(stamp, now)
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'stamp', string.format('%.17g', stamp))
redis.call('PEXPIRE', KEYS[1], math.ceil((stamp - now + (burst - tokens) / rate) * 1000) + 1000)
if tokens >= 0 then return '0' end
return string.format('%.17g', -tokens / rate)
"""


class RedisStore:
    """A store on one Redis server (not Cluster) shared by every worker; each step is one atomic Lua script.

    Values expire by Redis TTL; a sorted set of access times (µs), a hash of sizes and a byte total bound the
    store, trimming the least recently used past `max_entries` or `max_bytes`. Token buckets use the
    server's clock, so workers on different machines share one rate limit.
    """

    def __init__(
        self,
        url: str,
        max_entries: int = 1_000_000,
        max_bytes: int = 8 * 2**30,
        prefix: str = "researchrl:",
        timeout: float = 5.0,
        max_connections: int = 64,
    ):
        try:
            from redis.asyncio import BlockingConnectionPool, Redis
            from redis.backoff import ExponentialWithJitterBackoff
            from redis.asyncio.retry import Retry  # not redis.retry.Retry: the asyncio client would never retry
        except ImportError as err:
            raise ImportError("RedisStore needs the redis package: pip install 'redis>=5'") from err
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("a store needs max_entries >= 1 and max_bytes >= 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.prefix = prefix
        self._pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,  # waiting callers queue for a connection instead of opening thousands
            timeout=timeout * 4,  # seconds to wait for a free connection
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=2),
        )
        kwargs = self._pool.connection_kwargs
        self._where = f"{kwargs.get('host', kwargs.get('path', '?'))}:{kwargs.get('port', '')}/{kwargs.get('db', 0)}"
        self._redis = Redis(connection_pool=self._pool)
        self._get_script = self._redis.register_script(_REDIS_GET)
        self._put_script = self._redis.register_script(_REDIS_PUT)
        self._take_script = self._redis.register_script(_REDIS_TAKE)
        self._index = [f"{prefix}lru", f"{prefix}size", f"{prefix}exp", f"{prefix}bytes"]

    def __repr__(self) -> str:
        return f"RedisStore({self._where!r}, prefix={self.prefix!r})"  # never the URL: it may hold a password

    async def get(self, ns: str, key: str) -> bytes | None:
        """The value, its access time refreshed; a vanished value's bookkeeping is dropped."""
        member = f"{ns}:{key}"
        return await self._call(self._get_script(keys=[self._value_key(member), *self._index], args=[member]))

    async def put(self, ns: str, key: str, value: bytes, ttl: float | None) -> None:
        """Store with PX expiry, then trim expired bookkeeping and the least recently used past either bound."""
        member = f"{ns}:{key}"
        ttl_ms = 0 if ttl is None else max(1, round(ttl * 1000))
        args = [member, bytes(value), ttl_ms, self.max_entries, self.max_bytes, f"{self.prefix}v:"]
        await self._call(self._put_script(keys=[self._value_key(member), *self._index], args=args))

    async def take(self, bucket: str, rate: float, burst: float) -> float:
        """Token bucket shared by every client of this server (server TIME as the clock)."""
        _check_bucket(rate, burst)
        keys = [f"{self.prefix}bucket:{bucket}"]
        return float(await self._call(self._take_script(keys=keys, args=[repr(float(rate)), repr(float(burst))])))

    async def stats(self) -> StoreStats:
        """Entries and bytes held under this prefix."""
        entries = await self._call(self._redis.zcard(self._index[0]))
        size = await self._call(self._redis.get(self._index[3]))
        return StoreStats(int(entries), int(size or 0))

    async def aclose(self) -> None:
        """Close the client and its connection pool."""
        await self._redis.aclose()
        await self._pool.aclose()

    def _value_key(self, member: str) -> str:
        return f"{self.prefix}v:{member}"

    async def _call(self, pending: Awaitable[T]) -> T:
        """Redis failures as StoreError naming the server (not the URL, which may carry a password)."""
        from redis.exceptions import RedisError

        try:
            return await pending
        except RedisError as err:
            raise StoreError(f"redis store {self._where}: {type(err).__name__}: {err}") from err
