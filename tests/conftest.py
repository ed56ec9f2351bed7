"""Fixtures shared across the suite: the shared data folder, the embedded model's tokenizer, a tiny Llama, a real Redis server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from researchrl.sandbox.config import shared_data_dir
from tests.redis_server import RedisServer


@pytest.fixture(autouse=True)
def _forget_registered_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no secret registered by an earlier one (the registry is process-wide by design)."""
    from researchrl.web import redact

    monkeypatch.setattr(redact, "_registered", ())


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout (or $RESEARCHRL_SHARED_DATA)."""
    path = shared_data_dir()
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture(scope="session")
def smol_tokenizer():  # noqa: ANN201
    """The embedded SmolLM2 tokenizer (converted once by the set-up, offline)."""
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    from researchrl.policy.embedded import embedded_checkpoint
    from researchrl.policy.tokenizers import HFChatTokenizer

    return HFChatTokenizer(AutoTokenizer.from_pretrained(embedded_checkpoint()))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:  # noqa: ANN001
    """A 2-layer Llama (seed 0) with SmolLM2's tokenizer, saved: trainer and attention tests in seconds, with real vocabulary ids."""
    pytest.importorskip("transformers")
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from researchrl.policy.embedded import embedded_checkpoint

    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(embedded_checkpoint())
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server on a free loopback port, no persistence; stopped when the session ends."""
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()
