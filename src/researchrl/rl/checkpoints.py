"""Which TRL checkpoint a resume can trust: the newest one whose every file the resume loads is whole.

`Trainer._save_checkpoint` (transformers 5.x) writes grpo/checkpoint-N in place, in this order: the model
(config.json, model.safetensors or shards and their index, tokenizer files, training_args.bin), optimizer.pt,
scheduler.pt, rng_state.pth (under several processes each writes its own rng_state_R.pth, with no barrier before
main's next file), trainer_state.json (main), then deletes checkpoints past save_total_limit (unset here). A kill
can stop it anywhere and cut the file being written short, so a file being there proves little. A checkpoint is
complete when trainer_state.json parses and names step N, config.json parses, every safetensors file is as long
as its header says, and every torch.save file a resume loads (optimizer, scheduler, RNG states) is a whole zip
archive (its central directory is written last). Transformers would resume without optimizer.pt on a fresh
optimizer, silently: here that checkpoint is incomplete. Under DeepSpeed the engine saves the model and optimizer
states in global_stepN/, named by a `latest` file (this branch is not run here: no DeepSpeed on these machines).

Incomplete checkpoints after the one resumed from are deleted: their steps run again and are saved under the same
names, which must not land in a directory holding a cut save's leftovers. A run killed after its last step's
checkpoint but before its final model was saved takes that checkpoint's model (`export_model`): resumed from a
checkpoint at max_steps, transformers trains one step more. A complete checkpoint is never written again, so
the final model may share its files (hard links).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from researchrl.atomic import publish_dir, remove_dir, write_text

NAME = re.compile(r"checkpoint-(\d+)")
TRAINER_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth", "trainer_state.json", "latest", "global_step*",
                 "zero_to_fp32.py")  # what a checkpoint holds beyond the model: the trainer's state to resume


def resumable(grpo_dir: Path, say: Callable[[str], None]) -> Path | None:
    """The newest complete checkpoint; each incomplete one after it is said, with why, and deleted."""
    found = sorted((int(m.group(1)), p) for p in grpo_dir.glob("checkpoint-*") if (m := NAME.fullmatch(p.name)) and p.is_dir())
    for step, path in reversed(found):
        why = problem(path)
        if why is None:
            return path
        say(f"skipping {grpo_dir.name}/{path.name}: {why} (its save was cut short); deleted, step {step} runs again")
        shutil.rmtree(path)
    return None


def export_model(checkpoint: Path, final: Path) -> None:
    """A checkpoint's model files (hard links) published whole as `final`, the model a run saves when it ends."""
    partial = final.with_name(final.name + ".partial")
    remove_dir(partial)
    shutil.copytree(checkpoint, partial, ignore=shutil.ignore_patterns(*TRAINER_FILES), copy_function=os.link)
    publish_dir(partial, final)


def save_final(trainer: Any, tokenizer: Any, final: Path, notes: dict[str, str] | None = None) -> None:  # noqa: ANN401
    """The trained model (and `notes`: file name -> text, beside it) published whole as `final` once it is all written."""
    partial = final.with_name(final.name + ".partial")
    if trainer.args.should_save:
        remove_dir(partial)  # left by a kill during an earlier save
    trainer.save_model(str(partial))  # on every process: under DeepSpeed they gather the weights together
    if trainer.args.should_save:
        tokenizer.save_pretrained(str(partial))
        for name, text in (notes or {}).items():
            write_text(final.parent / name, text)
        publish_dir(partial, final)


def problem(checkpoint: Path) -> str | None:
    """Why a resume cannot use this checkpoint directory, or None when every file it loads is whole."""
    state = read_json(checkpoint / "trainer_state.json")
    if state is None:
        return "no trainer_state.json" if not (checkpoint / "trainer_state.json").exists() else "trainer_state.json is cut short"
    step = int(NAME.fullmatch(checkpoint.name).group(1))  # resumable() lists only names NAME matches
    if not isinstance(state, dict) or state.get("global_step") != step:
        return f"trainer_state.json is not at step {step}"
    if read_json(checkpoint / "config.json") is None:
        return "config.json is missing or cut short"
    if (checkpoint / "latest").exists():  # DeepSpeed
        states = sorted((checkpoint / (checkpoint / "latest").read_text().strip()).glob("*_states.pt"))
        return first([*map(torch_file_problem, states), None if states else "no DeepSpeed states"])
    return first([weights_problem(checkpoint), *map(torch_file_problem, resume_loads(checkpoint))])


def resume_loads(checkpoint: Path) -> list[Path]:
    """The torch.save files a resume loads: optimizer, scheduler and every process's RNG state."""
    return [checkpoint / "optimizer.pt", checkpoint / "scheduler.pt", *sorted(checkpoint.glob("rng_state*.pth"))]


def weights_problem(checkpoint: Path) -> str | None:
    """What is wrong with the saved weights: one safetensors file, or shards listed by an index written after them."""
    index = checkpoint / "model.safetensors.index.json"
    if not index.exists():
        return safetensors_problem(checkpoint / "model.safetensors")
    saved = read_json(index)
    if not isinstance(saved, dict) or not isinstance(saved.get("weight_map"), dict):
        return f"{index.name} is cut short"
    return first(safetensors_problem(checkpoint / name) for name in sorted(set(saved["weight_map"].values())))


def safetensors_problem(path: Path) -> str | None:
    """A safetensors file is whole when its size is 8 + the header's length + the end of its last tensor."""
    if not path.exists():
        return f"no {path.name}"
    size = path.stat().st_size
    with path.open("rb") as f:
        length = int.from_bytes(f.read(8), "little")
        try:
            header = json.loads(f.read(length)) if 8 + length <= size else None
        except ValueError:
            header = None
    if not isinstance(header, dict):
        return f"{path.name} is cut short"
    end = max((t["data_offsets"][1] for name, t in header.items() if name != "__metadata__"), default=0)
    return None if size == 8 + length + end else f"{path.name} is cut short"


def torch_file_problem(path: Path) -> str | None:
    """A torch.save file is a zip archive: whole when its central directory, written last, can be read."""
    if not path.exists():
        return f"no {path.name}"
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return f"{path.name} is cut short"
    return None


def read_json(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or cut short."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def first(problems: Iterable[str | None]) -> str | None:
    """The first problem found, if any."""
    return next((p for p in problems if p is not None), None)
