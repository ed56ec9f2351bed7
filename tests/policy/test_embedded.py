"""The embedded model's cached checkpoint: a config.json every loader reads, and old caches repaired in place.

`researchrl train --set warmup=false` used to stop with "TypeError: 'NoneType' object is not subscriptable":
GRPOTrainer loads its reference model with TRL's `create_model_from_path`, which picks the class from
config.json's `architectures`, and the GGUF conversion wrote none.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.model


def old_cache(cache: Path) -> Path:
    """The cache as an older researchrl converted it: no `architectures` in config.json (the weights linked, not copied)."""
    from researchrl.policy.embedded import embedded_checkpoint

    real = embedded_checkpoint()
    target = cache / "models" / real.name
    target.mkdir(parents=True)
    for path in real.iterdir():
        if path.name != "config.json":
            (target / path.name).symlink_to(path)
    config = json.loads((real / "config.json").read_text())
    config.pop("architectures", None)
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_an_old_cache_is_repaired_before_trl_loads_the_reference_model(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    pytest.importorskip("trl")
    from trl.trainer.utils import create_model_from_path

    from researchrl.policy.embedded import embedded_checkpoint

    target = old_cache(tmp_path)
    with pytest.raises(TypeError):
        create_model_from_path(str(target))  # the failure, as GRPOTrainer met it
    monkeypatch.setenv("RESEARCHRL_CACHE", str(tmp_path))
    assert embedded_checkpoint() == target
    assert json.loads((target / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert (target / "model.safetensors").is_symlink(), "repaired in place, not converted again"
    assert type(create_model_from_path(str(target))).__name__ == "LlamaForCausalLM"


@pytest.mark.slow
def test_a_fresh_conversion_writes_a_complete_config(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    from transformers import AutoConfig

    from researchrl.policy.embedded import convert_gguf, gguf_path

    target = convert_gguf(gguf_path(), tmp_path / "SmolLM2-135M-Instruct")
    config = json.loads((target / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    assert AutoConfig.from_pretrained(target).architectures == ["LlamaForCausalLM"]
    assert not (tmp_path / "SmolLM2-135M-Instruct.partial").exists()
