"""A local transformers policy that batches every concurrent episode's turn into one `generate` call."""

from __future__ import annotations

import asyncio
import inspect
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

from researchrl.errors import MissingDependency
from researchrl.policy.base import Context, Sample, Sampling
from researchrl.policy.tokenizers import HFChatTokenizer

MIN_PREFIX = 32  # shorter shared prefixes are not worth a cache
TURN_CACHE_BYTES = 4 << 30  # rows' KV kept between turns: 50 five-turn SmolLM2-135M episodes hold ~2.5 GB at the end
TRAIN_INSTALL = "a local model needs the [train] extra: pip install torch==2.13.0 && pip install -e '.[train]'"


def default_threads() -> int:
    """Torch threads default to the cores this process may use (oversubscription is 10-100x slower on CPU)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


@dataclass(eq=False)
class _Request:
    ids: list[int]
    sampling: Sampling
    future: asyncio.Future[Sample]


class _LogprobRecorder:
    """Logits processor keeping one step of log-softmax so memory stays O(batch x vocab), not O(steps x vocab)."""

    def __init__(self) -> None:
        self.prev: Any = None
        self.rows: list[list[float]] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        """Record the logprob of the token chosen at the previous step, then keep this step's distribution."""
        import torch

        if self.prev is not None:
            self.take(input_ids[:, -1])
        self.prev = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def take(self, chosen: Any) -> None:
        """Append the logprobs of `chosen` under the stored distribution."""
        picked = self.prev.gather(1, chosen.view(-1, 1)).squeeze(1).tolist()
        if not self.rows:
            self.rows = [[] for _ in picked]
        for row, value in zip(self.rows, picked):
            row.append(value)


class HFPolicy:
    """transformers causal LM; `generate` calls from many episodes are gathered into left-padded batches."""

    def __init__(
        self, model: Any, tokenizer: Any, max_batch: int = 16, prefix_cache: bool = True, turn_cache_bytes: int = TURN_CACHE_BYTES
    ):
        from researchrl.policy.kvcache import TurnCache

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
        # transformers 5.2x renamed `past_key_values` to `cache` (the old name warns); older 5.x knows only the old
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self._pending: list[_Request] = []
        self.batch_sizes: Counter[int] = Counter()  # generate calls by rows (at most max_batch keys): is batching working?
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None

    @classmethod
    def load(cls, name: str = "embedded", threads: int | None = None, max_batch: int = 16) -> HFPolicy:
        """Load the embedded SmolLM2 (converted once, offline) or any HF path/directory, in float32 on CPU."""
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as err:
            raise MissingDependency("torch/transformers", "train", TRAIN_INSTALL) from err
        from researchrl.policy.embedded import from_pretrained

        torch.set_num_threads(threads or default_threads())
        tokenizer = from_pretrained(AutoTokenizer, name)
        model = from_pretrained(AutoModelForCausalLM, name, dtype=torch.float32)
        return cls(model, tokenizer, max_batch=max_batch)

    async def generate(self, context: Context, sampling: Sampling) -> Sample:
        """Queue this turn; the worker batches it with every other waiting turn."""
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._run())
        request = _Request(list(context.ids), sampling, loop.create_future())
        self._pending.append(request)
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

    def _take_batch(self) -> list[_Request]:
        """Up to max_batch waiting requests that share decoding settings (stop strings and seed may differ)."""
        key = _decode_key(self._pending[0].sampling)
        batch = [r for r in self._pending if _decode_key(r.sampling) == key][: self.max_batch]
        taken = {id(r) for r in batch}
        self._pending = [r for r in self._pending if id(r) not in taken]
        self.batch_sizes[len(batch)] += 1
        return batch

    def _generate_batch(self, batch: list[_Request]) -> list[Sample]:
        """One `generate` over the batch, each row cut after. The shared prefix and each row's previous turn come
        from caches, so only new tokens are prefilled (left-padded; the mask hides the padding between parts)."""
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
        width, lead, pad = max(map(len, suffixes)), max(cached), tok.pad_token_id
        input_ids, attention = [], []
        for r, c, x in zip(batch, cached, suffixes):
            input_ids.append(shared + [pad] * (lead - c) + r.ids[len(shared) : len(shared) + c] + [pad] * (width - len(x)) + x)
            attention.append([1] * len(shared) + [0] * (lead - c) + [1] * c + [0] * (width - len(x)) + [1] * len(x))
        first = batch[0].sampling
        stops = sorted({s for r in batch for s in r.sampling.stop})
        recorder = _LogprobRecorder()
        max_new = max(r.sampling.max_new_tokens for r in batch)
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new,
            do_sample=first.temperature > 0,
            pad_token_id=pad,
            eos_token_id=tok.eos_token_id,
            logits_processor=[recorder],
            return_dict_in_generate=True,
        )
        if first.temperature > 0:
            kwargs.update(temperature=first.temperature, top_p=first.top_p, top_k=0)
            if first.seed is not None:
                torch.manual_seed(first.seed)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if stops:
            kwargs.update(stop_strings=stops, tokenizer=tok.hf)
        with torch.inference_mode():
            cache = batch_cache(prefix, rows, width + max_new, self.model.config.num_hidden_layers)
            kwargs[self._cache_arg] = cache
            out = self.model.generate(input_ids=torch.tensor(input_ids), attention_mask=torch.tensor(attention), **kwargs)
        start = len(shared) + lead + width
        generated = out.sequences[:, start:]
        if recorder.prev is not None and generated.shape[1] > 0:
            recorder.take(generated[:, -1])
        samples = [self._cut(generated[i].tolist(), recorder.rows[i] if recorder.rows else [], r.sampling) for i, r in enumerate(batch)]
        if self.turn_cache:
            for b, (r, sample, c, x) in enumerate(zip(batch, samples, cached, suffixes)):
                fed = sample.token_ids[: generated.shape[1] - 1]  # the last sampled token was never fed back: no KV
                positions = [*range(start - width - c, start - width), *range(start - len(x), start + len(fed))]
                self._turns.put(row_kv(cache, b, torch.tensor(positions), tuple(r.ids[len(shared) :]) + tuple(fed)))
        return samples

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

    def _cut(self, ids: list[int], logprobs: list[float], sampling: Sampling) -> Sample:
        """Trim one row to what this request really sampled."""
        tok = self.tokenizer
        end, reason = min(len(ids), sampling.max_new_tokens), "length"
        if tok.eos_token_id in ids[:end]:
            end, reason = ids.index(tok.eos_token_id) + 1, "eos"
        if sampling.stop:
            text = ""
            for j, token in enumerate(ids[:end]):
                text += tok.hf.decode([token], skip_special_tokens=False)
                if any(text.endswith(s) or s in text[-64:] for s in sampling.stop):
                    end, reason = j + 1, "stop"
                    break
        kept = ids[:end]
        shown = kept[:-1] if reason == "eos" else kept
        return Sample(kept, logprobs[:end], tok.decode(shown), reason)  # type: ignore[arg-type]

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
