"""A local transformers policy that batches every concurrent episode's turn into one decode (policy/decode.py)."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

from researchrl.errors import MissingDependency
from researchrl.policy.base import Context, Sample, Sampling
from researchrl.policy.cascade import fits
from researchrl.policy.decode import Decoded, decode, prefill_groups
from researchrl.policy.tokenizers import HFChatTokenizer

MIN_PREFIX = 32  # shorter shared prefixes are not worth a cache
TURN_CACHE_BYTES = 4 << 30  # rows' KV kept between turns: 50 five-turn SmolLM2-135M episodes hold ~2.5 GB at the end
LINGER = 0.5  # seconds a batch waits for the next request while episodes it served may still come back
TRAIN_INSTALL = "a local model needs the [train] extra: pip install torch==2.13.0 && pip install -e '.[train]'"


def default_threads() -> int:
    """Torch threads default to the cores this process may use (oversubscription is 10-100x slower on CPU)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


@dataclass(eq=False)
class _Request:
    ids: list[int]
    sampling: Sampling
    future: asyncio.Future[Sample]


class HFPolicy:
    """transformers causal LM; `generate` calls from many episodes are gathered into left-padded batches."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        max_batch: int = 16,
        prefix_cache: bool = True,
        turn_cache_bytes: int = TURN_CACHE_BYTES,
        retire: bool = True,
        cascade: bool = True,
        group_prefill: bool = True,
        linger: float = LINGER,
    ):
        from researchrl.policy.kvcache import TurnCache, cache_keyword

        self.model = model.eval()
        self.tokenizer = HFChatTokenizer(tokenizer)
        self.max_batch = max_batch
        # Both caches hold keys/values of this instance's weights: valid while the weights do not change, so the
        # trainer builds a new policy per rollout. The prefix every row shares (system prompt + tools) is computed
        # once; each row's KV after it is kept until the row's next turn (0 bytes turns that cache off).
        self.prefix_cache = prefix_cache
        self._prefix: tuple[tuple[int, ...], Any] | None = None
        self.turn_cache = turn_cache_bytes > 0
        self._turns = TurnCache(turn_cache_bytes)
        self._turns_after: tuple[int, ...] = ()  # the prefix the cached turns were computed after
        self._cache_arg = cache_keyword(model.forward)
        self._pending: list[_Request] = []
        self.batch_sizes: Counter[int] = Counter()  # decode calls by rows (at most max_batch keys): is batching working?
        self.retire = retire  # finished rows leave the batch mid-decode (policy/decode.py); off: every row to the last
        self.row_steps = 0  # rows fed per decode step, summed: is retiring working?
        self.cascade = cascade and fits(model)  # the shared prefix attended once per step, not copied per row (CPU)
        self.group_prefill = group_prefill  # rows sorted by new tokens, prefilled in groups of similar widths (decode.py)
        self.prefill_forwards = 0  # forwards that prefilled a batch's new tokens, summed: is grouping working?
        # Episodes served come back for their next turn after their tool calls, which end at different times: a batch
        # taken at the first arrival splits them into cohorts that stay apart (13 decodes for 5 turns of a 50-question
        # evaluation). So a batch waits while rows it handed out have not come back, until `linger` s pass with no
        # arrival (those episodes ended) or max_batch rows wait.
        self.linger = linger
        self._out = 0  # rows handed out whose episodes have not asked again (some never will: they ended)
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None

    @classmethod
    def load(cls, name: str = "embedded", threads: int | None = None, max_batch: int = 16, bf16: bool = False) -> HFPolicy:
        """Load the embedded SmolLM2 (converted once, offline) or any HF path/directory, in float32 (or bf16) on CPU."""
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as err:
            raise MissingDependency("torch/transformers", "train", TRAIN_INSTALL) from err
        from researchrl.policy.embedded import from_pretrained

        torch.set_num_threads(threads or default_threads())
        tokenizer = from_pretrained(AutoTokenizer, name)
        model = from_pretrained(AutoModelForCausalLM, name, dtype=torch.bfloat16 if bf16 else torch.float32)
        return cls(model, tokenizer, max_batch=max_batch)

    async def generate(self, context: Context, sampling: Sampling) -> Sample:
        """Queue this turn; the worker batches it with every other waiting turn."""
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._run())
        request = _Request(list(context.ids), sampling, loop.create_future())
        self._pending.append(request)
        self._out = max(0, self._out - 1)
        assert self._wake is not None
        self._wake.set()
        return await request.future

    async def _run(self) -> None:
        """Drain the queue batch by batch; generation runs in a thread so tools keep working meanwhile."""
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0)
            while self._pending:
                await self._gather()
                batch = self._take_batch()
                try:
                    samples = await asyncio.to_thread(self._generate_batch, batch)
                except Exception as err:  # a bug or OOM: every waiting episode sees it
                    for request in batch:
                        if not request.future.done():
                            request.future.set_exception(err)
                    continue
                for request, sample in zip(batch, samples):
                    if not request.future.done():
                        request.future.set_result(sample)
                self._out += len(batch)

    async def _gather(self) -> None:
        """Wait for more requests while rows handed out are still out, until `linger` s pass without one."""
        assert self._wake is not None
        while self._out > 0 and len(self._pending) < self.max_batch:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.linger)
            except TimeoutError:
                self._out = 0  # the rest ended
                return

    def _take_batch(self) -> list[_Request]:
        """Up to max_batch waiting requests that share decoding settings (stop strings and seed may differ)."""
        key = _decode_key(self._pending[0].sampling)
        batch = [r for r in self._pending if _decode_key(r.sampling) == key][: self.max_batch]
        taken = {id(r) for r in batch}
        self._pending = [r for r in self._pending if id(r) not in taken]
        self.batch_sizes[len(batch)] += 1
        return batch

    def _generate_batch(self, batch: list[_Request]) -> list[Sample]:
        """One decode over the batch. The shared prefix and each row's previous turn come from caches, so only new
        tokens are prefilled (left-padded; the mask hides the padding between parts); finished rows leave early."""
        import torch

        from researchrl.policy.kvcache import batch_cache, row_kv

        tok = self.tokenizer
        shared = self._shared_prefix([r.ids for r in batch])
        prefix = self._prefix_kv(shared) if shared else None
        if tuple(shared) != self._turns_after:
            self._turns.clear()
            self._turns_after = tuple(shared)
        rows = [self._turns.take(r.ids[len(shared) :]) if self.turn_cache else None for r in batch]
        cached = [len(row.tokens) if row else 0 for row in rows]
        suffixes = [r.ids[len(shared) + c :] for r, c in zip(batch, cached)]
        order = sorted(range(len(batch)), key=lambda i: len(suffixes[i])) if self.group_prefill else list(range(len(batch)))
        batch, rows, cached, suffixes = ([x[i] for i in order] for x in (batch, rows, cached, suffixes))
        width, lead, pad = max(map(len, suffixes)), max(cached), tok.pad_token_id
        cascade = self.cascade and prefix is not None
        laid = [] if cascade else shared  # the shared prefix in every row's columns, unless attended by cascade
        input_ids, attention = [], []
        for r, c, x in zip(batch, cached, suffixes):
            input_ids.append(laid + [pad] * (lead - c) + r.ids[len(shared) : len(shared) + c] + [pad] * (width - len(x)) + x)
            attention.append([1] * len(laid) + [0] * (lead - c) + [1] * c + [0] * (width - len(x)) + [1] * len(x))
        start = len(laid) + lead + width  # the cache column of each row's first sampled token

        def keep_turn(i: int, b: int, row: Decoded) -> None:
            """Cache row i's KV for its next turn: its cached part, its new tokens, and the sampled ones fed back."""
            fed = row.tokens[:-1]  # the last sampled token was never fed back: no KV
            c, x = cached[i], suffixes[i]
            positions = [*range(start - width - c, start - width), *range(start - len(x), start + len(fed))]
            self._turns.put(row_kv(cache, b, torch.tensor(positions), tuple(batch[i].ids[len(shared) :]) + tuple(fed)))

        max_new = max(r.sampling.max_new_tokens for r in batch)
        with torch.inference_mode():
            cache = batch_cache(None if cascade else prefix, rows, width + max_new, self.model.config.num_hidden_layers)
            laid_out = cache.layers[0].is_initialized  # an empty cache takes its size from one first forward
            groups = prefill_groups([len(x) for x in suffixes]) if self.group_prefill and laid_out else None
            self.prefill_forwards += len(groups) if groups else 1
            decoded, row_steps = decode(
                self.model, cache, torch.tensor(input_ids), torch.tensor(attention), [r.sampling for r in batch],
                tok.eos_token_id, lambda t: tok.hf.decode([t], skip_special_tokens=False),
                keep_turn if self.turn_cache else lambda *_: None, self._cache_arg, retire=self.retire,
                prefix=prefix if cascade else None, groups=groups,
            )
        self.row_steps += row_steps
        by_request = dict(zip(order, decoded))  # decoded rows are in sorted order; callers get theirs back in theirs
        return [self._sample(by_request[i]) for i in range(len(batch))]

    def _shared_prefix(self, rows: list[list[int]]) -> list[int]:
        """The longest prefix all rows share (at least one token of each row left to feed); [] when caching is off."""
        if not self.prefix_cache:
            return []
        limit = min(len(r) for r in rows) - 1
        first = rows[0]
        n = 0
        while n < limit and all(r[n] == first[n] for r in rows):
            n += 1
        if self._prefix is not None and len(self._prefix[0]) <= n and list(self._prefix[0]) == first[: len(self._prefix[0])]:
            return list(self._prefix[0])  # reuse the cached prefix rather than recomputing a slightly longer one
        return first[:n] if n >= MIN_PREFIX else []

    def _prefix_kv(self, prefix: list[int]) -> Any:
        """The prefix's KV cache (batch 1), computed once per prefix."""
        import torch

        key = tuple(prefix)
        if self._prefix is None or self._prefix[0] != key:
            with torch.inference_mode():
                kv = getattr(self.model(input_ids=torch.tensor([prefix]), use_cache=True), self._cache_arg)
            self._prefix = (key, kv)
        return self._prefix[1]

    def _sample(self, row: Decoded) -> Sample:
        """The row as a Sample: its text leaves out a final EOS."""
        shown = row.tokens[:-1] if row.reason == "eos" else row.tokens
        return Sample(row.tokens, row.logprobs, self.tokenizer.decode(shown), row.reason)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        """Stop the batching worker."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None


def _decode_key(sampling: Sampling) -> tuple[float, float]:
    """Requests can share a batch when temperature and top-p agree."""
    return (sampling.temperature, sampling.top_p)
