"""Key/value caches for HFPolicy: an episode's next turn feeds only its new tokens, and decoding copies no cache.

An agent's context only grows: turn k+1 is turn k's context, its sampled tokens, then the tool's observation.
`TurnCache` keeps each row's keys and values after its turn (bounded in bytes, the oldest dropped first),
and `batch_cache` lays the cached rows of the next batch side by side, so the decode prefills only the observation
and the new turn's header. `GrowingLayer` writes each decoded token into a buffer sized for the whole call, where
transformers' DynamicLayer concatenates (a full copy of the cache per token: 2/3 of a decode step at batch 50 and
800 tokens of context; bench/turns.py times both).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from transformers.cache_utils import Cache, DynamicLayer


def cache_keyword(forward: Any) -> str:
    """The keyword `forward` takes a cache by: transformers 5.2x renamed `past_key_values` to `cache` (the old name
    warns); older 5.x knows only the old one."""
    import inspect

    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


class GrowingLayer(DynamicLayer):
    """A DynamicLayer over buffers with free positions left: each update writes in place, none concatenates."""

    def __init__(self, room: int, buffers: tuple[Any, Any] | None = None, filled: int = 0) -> None:
        super().__init__()
        self.room = room  # free positions a new buffer gets beyond what it is first given
        if buffers is not None:
            self._k, self._v = buffers
            self._show(filled)

    def _show(self, n: int) -> None:
        """keys/values become views of the first `n` positions of the buffers."""
        self.keys, self.values = self._k[:, :, :n], self._v[:, :, :n]
        self.device, self.is_initialized = self._k.device, True

    def _allocate(self, keys: Any, values: Any) -> None:
        """New buffers holding `keys`/`values` and `room` free positions after them."""
        n = keys.shape[-2]
        shape = (*keys.shape[:2], n + self.room, keys.shape[-1])
        self._k, self._v = keys.new_empty(shape), values.new_empty(shape)
        self._k[:, :, :n], self._v[:, :, :n] = keys, values
        self._show(n)

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        """Write the new positions after the filled part (new buffers only when the free room runs out)."""
        if not self.is_initialized:
            self._allocate(key_states, value_states)
            return self.keys, self.values
        n, m = self.keys.shape[-2], key_states.shape[-2]
        if n + m > self._k.shape[-2]:
            self.room = max(self.room, m)
            self._allocate(self.keys, self.values)
        self._k[:, :, n : n + m], self._v[:, :, n : n + m] = key_states, value_states
        self._show(n + m)
        return self.keys, self.values

    def rows(self, lo: int, hi: int, filled: int) -> GrowingLayer:
        """A layer over batch rows lo..hi of these buffers (a view: its writes land here) showing `filled` positions;
        those between what this layer shows and `filled` are zeroed (padding that the rows' masks hide must be finite)."""
        shown = self.keys.shape[-2]
        self._k[lo:hi, :, shown:filled], self._v[lo:hi, :, shown:filled] = 0.0, 0.0
        return GrowingLayer(0, (self._k[lo:hi], self._v[lo:hi]), filled=filled)

    def show(self, n: int) -> None:
        """The first `n` positions are filled (after views of its rows wrote them)."""
        self._show(n)

    def keep_rows(self, index: Any) -> None:
        """Only the batch rows at `index` (a LongTensor) stay: finished rows leave a decode, one copy of the rest."""
        n = self.keys.shape[-2]
        self._k, self._v = self._k.index_select(0, index), self._v.index_select(0, index)
        self._show(n)


@dataclass(eq=False)
class RowKV:
    """One row's keys and values for its tokens after the shared prefix (per layer: [kv_heads, tokens, head_dim])."""

    tokens: tuple[int, ...]
    layers: list[tuple[Any, Any]]

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.layers)


class TurnCache:
    """Rows' KV after their last turn, keyed by their tokens; a hit is taken out (the row extends it), the oldest evicted."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.rows: OrderedDict[tuple[int, ...], RowKV] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0  # rows that found / did not find their previous turn: is reuse working?

    def take(self, tokens: list[int]) -> RowKV | None:
        """The longest cached row that is a strict prefix of `tokens` (at least one token is left to feed)."""
        for length in sorted({len(t) for t in self.rows}, reverse=True):
            if length < len(tokens) and (row := self.rows.pop(tuple(tokens[:length]), None)) is not None:
                self.bytes -= row.nbytes
                self.hits += 1
                return row
        self.misses += 1
        return None

    def put(self, row: RowKV) -> None:
        """Keep `row`, evicting the least recently stored rows past the byte bound (a row over it is not kept)."""
        size = row.nbytes
        if size > self.max_bytes:
            return
        if (old := self.rows.pop(row.tokens, None)) is not None:
            self.bytes -= old.nbytes
        while self.rows and self.bytes + size > self.max_bytes:
            self.bytes -= self.rows.popitem(last=False)[1].nbytes
        self.rows[row.tokens] = row
        self.bytes += size

    def clear(self) -> None:
        """Forget every row (the shared prefix they were computed after has changed)."""
        self.rows.clear()
        self.bytes = 0


def batch_cache(prefix: Any, rows: list[RowKV | None], room: int, n_layers: int) -> Cache:
    """The batch's cache: the shared prefix's KV in every row, then each cached row right-aligned after zeros.

    `prefix` is a Cache of batch 1, or None (no shared prefix, or cascade attention reads it apart: policy/cascade.py);
    the zeros are padding the attention mask hides (they must be finite).
    With neither a prefix nor a cached row, the layers start empty and take their size from the first forward.
    """
    cached = [r for r in rows if r is not None]
    if prefix is None and not cached:
        return Cache(layers=[GrowingLayer(room) for _ in range(n_layers)])
    width = max((len(r.tokens) for r in cached), default=0)
    layers = []
    for i in range(n_layers):
        like = prefix.layers[i].keys if prefix is not None else cached[0].layers[i][0][None]
        p = prefix.layers[i].keys.shape[-2] if prefix is not None else 0
        shape = (len(rows), like.shape[1], p + width + room, like.shape[-1])
        keys, values = like.new_empty(shape), like.new_empty(shape)
        keys[:, :, p : p + width].zero_()
        values[:, :, p : p + width].zero_()
        if prefix is not None:
            keys[:, :, :p], values[:, :, :p] = prefix.layers[i].keys, prefix.layers[i].values
        for b, row in enumerate(rows):
            if row is not None:
                k, v = row.layers[i]
                at = slice(p + width - k.shape[1], p + width)
                keys[b, :, at], values[b, :, at] = k, v
        layers.append(GrowingLayer(room, (keys, values), filled=p + width))
    return Cache(layers=layers)


def row_kv(cache: Cache, b: int, positions: Any, tokens: tuple[int, ...]) -> RowKV:
    """Row `b`'s keys and values at `positions` (a LongTensor of cache positions) as a RowKV for `tokens`."""
    return RowKV(tokens, [(layer.keys[b].index_select(1, positions), layer.values[b].index_select(1, positions)) for layer in cache.layers])
