"""A killed run always resumes: real `researchrl train` processes SIGKILLed (the whole process group), then resumed.

Fast: which checkpoint a resume trusts, on checkpoint directories cut short file by file (no model). With the
embedded model: a tiny run (warmup off, G=2, 1 question per step, 8 new tokens, a checkpoint every step) killed
at chosen moments and resumed after each kill until it finishes; then exactly one metrics line and G trajectory
lines per step, every checkpoint whole, the final model there. Kill moments: `startup` (a delay after launch),
`step` (a delay after step N's rollouts were logged: its update, log lines or checkpoint), `checkpoint` (step N's
checkpoint directory seen without trainer_state.json, holding its first file or optimizer.pt), `final`
(grpo/model.partial being written), `eval` (a delay into the last evaluation); N is the next step or the one
after. Both are slow (CI runs them): one kills twice, at a checkpoint write and the final save; the other ten
times, in a fixed order of moments whose delays and steps are seeded; each kill is printed (pytest -s).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from researchrl.rl.checkpoints import problem, resumable, safetensors_problem
from researchrl.rl.train import drop_steps_after

REPO = Path(__file__).resolve().parents[2]
G = 2
TINY = [
    "group_size=2", "questions_per_step=1", "micro_batch=2", "save_steps=1", "warmup=false", "use_vllm=false",
    "threads=2", "gradient_checkpointing=false", "beta=0.0", "eval_questions=1", "env.search=local", "env.top_k=1",
    "env.snippet_chars=80", "agent.protocol=search_r1", "agent.max_turns=1", "agent.sampling.max_new_tokens=8",
]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- which checkpoint a resume trusts (no model) ---


def fake_checkpoint(grpo: Path, step: int) -> Path:
    """A checkpoint directory with the files a TRL save writes, real formats, tiny tensors."""
    import torch
    from safetensors.torch import save_file

    path = grpo / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file({"w": torch.zeros(64, 64), "b": torch.ones(64)}, str(path / "model.safetensors"))
    torch.save({"state": {0: {"exp_avg": torch.zeros(4096)}}}, path / "optimizer.pt")
    torch.save({"last_epoch": step}, path / "scheduler.pt")
    torch.save({"cpu": torch.random.get_rng_state()}, path / "rng_state.pth")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return path


def cut(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def test_a_checkpoint_is_complete_only_when_every_file_a_resume_loads_is_whole(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    assert problem(fake_checkpoint(tmp_path, 1)) is None
    cases = {
        "model.safetensors": "model.safetensors is cut short", "optimizer.pt": "optimizer.pt is cut short",
        "scheduler.pt": "scheduler.pt is cut short", "rng_state.pth": "rng_state.pth is cut short",
        "trainer_state.json": "trainer_state.json is cut short", "config.json": "config.json is missing or cut short",
    }
    for step, (name, why) in enumerate(cases.items(), 2):
        checkpoint = fake_checkpoint(tmp_path, step)
        cut(checkpoint / name)
        assert problem(checkpoint) == why, name
    gone = fake_checkpoint(tmp_path, 20)
    (gone / "optimizer.pt").unlink()  # transformers would resume on a fresh optimizer without a word
    assert problem(gone) == "no optimizer.pt"
    (gone / "trainer_state.json").unlink()
    assert problem(gone) == "no trainer_state.json"
    moved = fake_checkpoint(tmp_path, 21)
    moved.rename(tmp_path / "checkpoint-22")
    assert problem(tmp_path / "checkpoint-22") == "trainer_state.json is not at step 22"
    sharded = fake_checkpoint(tmp_path, 23)
    (sharded / "model.safetensors").rename(sharded / "model-00001-of-00001.safetensors")
    index = {"weight_map": {"w": "model-00001-of-00001.safetensors", "b": "model-00001-of-00001.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    assert problem(sharded) is None
    cut(sharded / "model-00001-of-00001.safetensors", keep=0.99)
    assert problem(sharded) == "model-00001-of-00001.safetensors is cut short"


def test_resume_takes_the_newest_complete_checkpoint_and_deletes_cut_saves_after_it(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    grpo = tmp_path / "grpo"
    old_cut = fake_checkpoint(grpo, 1)
    (old_cut / "scheduler.pt").unlink()
    for step in (2, 3, 4, 10):
        fake_checkpoint(grpo, step)
    (grpo / "checkpoint-4" / "trainer_state.json").unlink()
    cut(grpo / "checkpoint-10" / "optimizer.pt")
    said: list[str] = []
    assert resumable(grpo, said.append) == grpo / "checkpoint-3"
    assert said == [
        "skipping grpo/checkpoint-10: optimizer.pt is cut short (its save was cut short); deleted, step 10 runs again",
        "skipping grpo/checkpoint-4: no trainer_state.json (its save was cut short); deleted, step 4 runs again",
    ]
    assert sorted(p.name for p in grpo.iterdir()) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"], "older ones stay"
    assert resumable(tmp_path / "none", said.append) is None


def test_a_resume_keeps_the_log_lines_of_the_steps_it_keeps_and_drops_a_line_cut_mid_write(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 0.5}) + "\n" for s in (1, 2, 3)) + '{"step": 3, "lo')
    drop_steps_after(log, 2)
    assert [row["step"] for row in read_jsonl(log)] == [1, 2] and log.read_text().endswith("}\n")
    drop_steps_after(log, 0)
    assert log.read_text() == ""


# --- real processes, killed ---


@dataclass(frozen=True)
class Round:
    """One launch: how it was stopped and what it printed."""

    strategy: str  # the kill moment chosen, or "none" for the launch left to finish
    step: int  # the step whose rollouts or checkpoint the `step` and `checkpoint` moments wait for
    killed_at: float | None  # seconds after launch; None when it ended on its own
    returncode: int
    output: str
    cut_saves: tuple[str, ...]  # incomplete checkpoints after the newest complete one, left when it ended
    cut_files: tuple[str, ...]  # the files they held


class Launches:
    """A run directory under `root`, launched and resumed again and again."""

    def __init__(self, root: Path, sets: list[str], max_steps: int):
        self.root = root
        self.sets = [*sets, f"max_steps={max_steps}"]
        self.max_steps = max_steps

    @property
    def run(self) -> Path | None:
        """The run directory, once its config.toml exists (before that, a launch starts the run afresh)."""
        return next((p.parent for p in (self.root / "runs").glob("*/config.toml")), None)

    def progress(self) -> tuple[int, list[str]]:
        """The newest complete checkpoint's step and the incomplete checkpoints after it."""
        grpo = self.run / "grpo" if self.run else self.root / "none"
        steps = sorted(int(p.name.split("-")[1]) for p in grpo.glob("checkpoint-*"))
        complete = max((s for s in steps if problem(grpo / f"checkpoint-{s}") is None), default=0)
        return complete, [f"checkpoint-{s}" for s in steps if s > complete]

    def launch(self, log: IO[str]) -> subprocess.Popen:
        """`researchrl train` in a process group of its own, resuming once the run directory has its config."""
        args = ["--resume", str(self.run)] if self.run else ["--output-dir", str(self.root / "runs"),
                                                             *[a for s in self.sets for a in ("--set", s)]]
        return subprocess.Popen(
            [sys.executable, "-m", "researchrl.cli", "train", *args], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=REPO, env={**os.environ, "COLUMNS": "250", "PYTHONUNBUFFERED": "1"},
        )

    def moment(self, strategy: str, step: int, started: float, rng: random.Random) -> Callable[[], bool]:
        """A predicate that turns true at the kill moment of `strategy` (the next step to run is `step`)."""
        delay = {"startup": rng.uniform(0.5, 8.0), "step": rng.uniform(0.0, 2.0), "eval": rng.uniform(0.0, 1.5)}.get(strategy, 0.0)
        first_file = rng.random() < 0.5  # checkpoint: kill at its first file, or once optimizer.pt is being written
        seen: list[float] = []

        def after(condition: bool) -> bool:
            """True `delay` seconds after `condition` first held."""
            if condition and not seen:
                seen.append(time.time())
            return bool(seen) and time.time() - seen[0] >= delay

        def fresh(path: Path) -> bool:
            """Written by this launch (a file renamed or deleted under us counts as not there)."""
            try:
                return path.stat().st_mtime >= started
            except OSError:
                return False

        def now() -> bool:
            run = self.run
            if strategy == "startup" or run is None:
                return strategy == "startup" and after(True)
            grpo = run / "grpo"
            if strategy == "step":
                log = run / "trajectories.jsonl"
                return after(fresh(log) and f'"step": {step},' in log.read_text())
            if strategy == "checkpoint":
                folder = grpo / f"checkpoint-{step}"
                files = [p for p in folder.glob("*") if fresh(p)] if folder.is_dir() else []
                wanted = bool(files) if first_file else fresh(folder / "optimizer.pt")
                return wanted and not (folder / "trainer_state.json").exists()
            if strategy == "final":
                return any((grpo / "model.partial").glob("*"))
            return after((grpo / "model").is_dir())  # eval

        return now

    def round(self, strategy: str, rng: random.Random, timeout: float = 600) -> Round:
        """Launch (or resume) and kill the process group at the strategy's moment; "none" waits for the end."""
        n = len(list(self.root.glob("round-*.log")))
        log = self.root / f"round-{n}.log"
        done = self.progress()[0]
        step = done + (2 if done + 2 <= self.max_steps and rng.random() < 0.5 else 1)  # step/checkpoint: this one's
        started = time.time()
        with log.open("w") as out:
            proc = self.launch(out)
        moment = self.moment(strategy, step, started, rng)
        killed_at = None
        try:
            while proc.poll() is None and time.time() - started < timeout:
                if strategy != "none" and moment():
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed_at = time.time() - started
                    break
                time.sleep(0.01)
            else:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    pytest.fail(f"round {n} ({strategy}) still running after {timeout} s: {log.read_text()[-2000:]}")
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        cut = self.progress()[1]
        files = tuple(f"{name}/{p.name}" for name in cut for p in sorted((self.run / "grpo" / name).iterdir()))
        return Round(strategy, step, killed_at, proc.returncode, log.read_text(), tuple(cut), files)

    def available(self, strategy: str) -> bool:
        """Whether this strategy's moment can still come in this run's next launch."""
        run, (done, _) = self.run, self.progress()
        if strategy in ("step", "checkpoint"):
            return done < self.max_steps
        if strategy == "final":
            return run is None or not (run / "grpo" / "model").is_dir()
        if strategy == "eval":
            return run is not None and "after" not in json.loads((run / "eval.json").read_text() if (run / "eval.json").exists() else "{}")
        return True


def kill_and_resume(root: Path, shared: Path, plan: list[str], max_steps: int, heldout: int, seed: int) -> None:
    """Launch the tiny run, kill it at each planned moment (an unavailable one becomes `startup`), then let it finish."""
    questions = [q for q in read_jsonl(shared / "wiki" / "questions.jsonl") if q["answer_in_supporting_docs"]][: 2 + heldout]
    wanted = {doc for q in questions for doc in q["context_doc_ids"]}
    passages = [p for p in read_jsonl(shared / "wiki" / "passages.jsonl") if p["id"] in wanted]
    (root / "corpus.jsonl").write_text("".join(json.dumps(p) + "\n" for p in passages))
    (root / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    sets = [*TINY, f"heldout={heldout}", f"questions={root / 'questions.jsonl'}", f"env.corpus={root / 'corpus.jsonl'}"]
    launches = Launches(root, sets, max_steps)
    rng = random.Random(seed)
    rounds: list[Round] = []
    for n, planned in enumerate(plan):
        strategy = planned if launches.available(planned) else "startup"
        started = time.perf_counter()
        rounds.append(launches.round(strategy, rng))
        r = rounds[-1]
        target = f" of step {r.step}" if strategy in ("step", "checkpoint") else ""
        print(f"round {n}: {strategy}{target}{'' if strategy == planned else f' (planned {planned})'}: "
              + (f"killed at {r.killed_at:.1f} s" if r.killed_at is not None else f"ended by itself, rc {r.returncode}")
              + f"; newest complete checkpoint {launches.progress()[0]}, cut saves left {list(r.cut_files) or 'none'}"
              + f" ({time.perf_counter() - started:.0f} s)")
        assert r.killed_at is not None and r.returncode == -signal.SIGKILL, r.output[-3000:]
    rounds.append(launches.round("none", rng))
    final = rounds[-1]
    print(f"final round: rc {final.returncode}")
    assert final.returncode == 0 and "Traceback" not in final.output, final.output[-3000:]
    cut_saves = {name for r in rounds for name in r.cut_saves}
    for name in cut_saves:  # each was said, with why, by the launch that deleted it
        assert any(f"skipping grpo/{name}: " in r.output for r in rounds), name
    for before, after in zip(rounds, rounds[1:]):  # the last checkpoint became the final model, without a step more
        if before.strategy == "final":
            assert f"GRPO finished at grpo/checkpoint-{max_steps}: its model becomes grpo/model" in after.output
    check_finished_run(launches.run, max_steps, heldout)
    shutil.rmtree(launches.run / "grpo")  # passed: give the disk its gigabytes of checkpoints back


def check_finished_run(run: Path, max_steps: int, heldout: int) -> None:
    """One metrics line and G trajectory lines per step, every checkpoint whole, the final model whole."""
    steps = list(range(1, max_steps + 1))
    assert [m["step"] for m in read_jsonl(run / "metrics.jsonl")] == steps
    rows = read_jsonl(run / "trajectories.jsonl")
    assert Counter(r["step"] for r in rows) == {s: G for s in steps}
    assert len({(r["step"], r["sample"]) for r in rows}) == len(rows)
    grpo = run / "grpo"
    assert sorted(p.name for p in grpo.glob("checkpoint-*")) == [f"checkpoint-{s}" for s in steps]
    assert all(problem(grpo / f"checkpoint-{s}") is None for s in steps)
    assert safetensors_problem(grpo / "model" / "model.safetensors") is None
    assert json.loads((grpo / "model" / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert not (grpo / "model.partial").exists()
    if heldout:
        assert set(json.loads((run / "eval.json").read_text())) == {"before", "after"}
        assert len(read_jsonl(run / "eval_after.jsonl")) == heldout


@pytest.mark.slow
@pytest.mark.model
def test_a_run_killed_at_a_checkpoint_write_and_at_the_final_save_resumes_to_the_end(tmp_path: Path, shared_data: Path) -> None:
    pytest.importorskip("trl")
    kill_and_resume(tmp_path, shared_data, ["checkpoint", "final"], max_steps=1, heldout=0, seed=0)


@pytest.mark.slow
@pytest.mark.model
def test_a_run_killed_ten_times_at_random_moments_resumes_to_the_end(tmp_path: Path, shared_data: Path) -> None:
    pytest.importorskip("trl")
    plan = ["startup", "checkpoint", "step", "checkpoint", "startup", "step", "checkpoint", "step", "final", "eval"]
    kill_and_resume(tmp_path, shared_data, plan, max_steps=3, heldout=1, seed=11)
