"""The trainer's weights pushed to a vLLM server on CPU after every optimizer step, and checked each time.

TRL's own server sync goes through vLLM's NCCL weight-transfer engine, which needs CUDA. On CPU, `ReloadSync`
stands in for TRL's `VLLMGeneration` (TRL calls its `sync_weights()` before each new step's rollout): main saves the
policy as safetensors, the server reloads them in place through our worker extension (`reload_weights_exact`, which
also re-packs tied output layers that vLLM's plain reload leaves stale), and its prefix cache is dropped. Then the
server's log-probabilities of a fixed sequence are compared with the trainer's own forward pass; a gap over the
tolerance restarts a managed server on the saved weights (an external one fails the run), so a rollout never samples
from weights other than the ones TRL trains. TRL then computes its importance ratio from our rollouts' logprobs.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from researchrl.errors import ConfigError, UserError
from researchrl.policy.vllm_server import SERVED_NAME, ServerSpec, VLLMServer, VLLMStartError, find_vllm
from researchrl.rl import ranks
from researchrl.rl.config import TrainConfig

PROBE = (
    "Question: Which river flows through the city where the Eiffel Tower stands?\n"
    "<think>The Eiffel Tower is in Paris; the Seine flows through Paris.</think>\n<answer>the Seine</answer>"
)  # the fixed sequence both sides score after a sync


def http(url: str) -> httpx.Client:
    """A client for the server at `url`; a loopback server is reached directly, never through a proxy."""
    return httpx.Client(trust_env=httpx.URL(url).host not in ("127.0.0.1", "localhost", "::1"))


class WeightSyncError(UserError):
    """The server's weights differ from the trainer's after a sync (or the sync itself failed)."""


@dataclass
class Endpoint:
    """The vLLM server rollouts sample from, as of the last sync (a restart moves it)."""

    url: str  # base URL; the OpenAI API is under /v1
    model: str  # the name the server serves the policy under
    weights: Path  # where main saves the policy for the server to reload (removed after training)
    stats: dict[str, float] = field(default_factory=dict)  # the last sync's timings and logprob gap, for metrics.jsonl


def cuda() -> bool:
    """Whether TRL's own (NCCL) weight sync is available."""
    import torch

    return torch.cuda.is_available()


def resolve_engine(cfg: TrainConfig) -> TrainConfig:
    """`use_vllm` unset: vLLM where its CPU engine is installed (faster rollouts, bench/rollout.py), else transformers."""
    if cfg.use_vllm is not None:
        return cfg
    try:
        installed = cfg.vllm == "managed" and not cuda() and bool(find_vllm(cfg.vllm_bin or ""))
    except ConfigError:
        installed = False
    return dataclasses.replace(cfg, use_vllm=installed)


def check_vllm(cfg: TrainConfig) -> None:
    """Refuse a use_vllm setting that cannot sync exactly, in one line, before any work starts."""
    if not cfg.use_vllm:
        return
    if cfg.vllm == "managed" and cuda():
        raise ConfigError(
            "a managed vLLM server is the CPU path; on GPUs start TRL's server (`trl vllm-serve --model MODEL`) "
            "and set vllm=external and vllm_server_base_url=http://HOST:8000 (TRL syncs weights over NCCL)"
        )
    if cfg.vllm == "managed":
        find_vllm(cfg.vllm_bin or "")
        return
    url = (cfg.vllm_server_base_url or "").rstrip("/")
    try:
        with http(url) as client:
            client.get(f"{url}/health", timeout=10.0).raise_for_status()
    except httpx.HTTPError as err:
        raise ConfigError(f"vllm_server_base_url {url} does not answer /health: {err}") from None
    if cuda():
        return  # TRL's `trl vllm-serve`: TRL's client checks it
    check_sampled_ids(url)
    try:
        with http(url) as client:
            status = client.post(f"{url}/collective_rpc", json={"method": "researchrl_ready"}, timeout=30.0).status_code
    except httpx.HTTPError as err:
        raise ConfigError(f"vllm_server_base_url {url} does not answer /collective_rpc: {err}") from None
    if status != 200:
        raise ConfigError(
            f"the vLLM server at {url} cannot take researchrl's CPU weight sync (/collective_rpc answered {status}): "
            "start it with VLLM_SERVER_DEV_MODE=1 and --worker-extension-cls researchrl_vllm_ext.ExactReload "
            "(README 'Scale out'), or use vllm = \"managed\""
        )


def check_sampled_ids(url: str) -> None:
    """Refuse, in one line, a server whose completions carry no sampled token ids: GRPO would train on guesses."""
    from researchrl.policy.openai import EXACT_IDS
    from researchrl.policy.wire import sampled_tokens, server_shape

    try:
        body = {"model": served_model(url), "prompt": [0, 1, 2], "max_tokens": 2, "logprobs": 1, "temperature": 0, **EXACT_IDS}
        with http(url) as client:
            response = client.post(f"{url}/v1/completions", json=body, timeout=60.0)
        response.raise_for_status()
        choice = response.json()["choices"][0]
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as err:
        raise ConfigError(f"the server at {url} did not answer a token-id completion: {err}") from None
    if sampled_tokens(choice, {}) is None:
        raise ConfigError(
            f"the server at {url} returns no sampled token ids ({server_shape(choice)}): training needs the ids it "
            "sampled, not a re-encoding of its text; serve the policy with vLLM or llama.cpp (README 'Servers')"
        )


def served_model(url: str) -> str:
    """The model name an external server serves (its first /v1/models entry)."""
    with http(url) as client:
        response = client.get(f"{url}/v1/models", timeout=30.0)
    response.raise_for_status()
    return response.json()["data"][0]["id"]


@contextmanager
def rollout_server(cfg: TrainConfig, model_dir: str, run_dir: Path) -> Iterator[tuple[Endpoint | None, VLLMServer | None]]:
    """The endpoint GRPO's rollouts use (None without use_vllm); a managed server is started by main and always stopped."""
    if not cfg.use_vllm:
        yield None, None
        return
    weights = run_dir / "vllm_weights"
    if cfg.vllm == "external":
        url = (cfg.vllm_server_base_url or "").rstrip("/")
        try:
            yield Endpoint(url, ranks.broadcast(served_model(url) if ranks.is_main() else ""), weights), None
        finally:
            shutil.rmtree(weights, ignore_errors=True)
        return
    server, failure, url = None, "", ""
    if ranks.is_main():
        spec = ServerSpec(model_dir, dtype="bfloat16" if cfg.bf16 else "float32", seed=cfg.agent.seed,
                          max_model_len=max_model_len(model_dir, cfg.agent.max_context_tokens), vllm_bin=cfg.vllm_bin or "")
        server = VLLMServer(spec, run_dir / "vllm.log")
        try:
            url = server.start()
        except UserError as err:
            failure = str(err)
    failure, url = ranks.broadcast((failure, url))
    if failure:
        raise VLLMStartError(failure)
    try:
        yield Endpoint(url, SERVED_NAME, weights), server
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(weights, ignore_errors=True)


def attach(trainer: Any, endpoint: Endpoint, server: VLLMServer | None, tolerance: float) -> None:
    """On CPU, make TRL treat rollouts as vLLM's: it calls our sync each step and corrects with our logprobs."""
    if cuda():
        return  # TRL built its own VLLMGeneration (grpo_args), synced over NCCL
    trainer.use_vllm = True
    trainer.vllm_generation = ReloadSync(trainer, endpoint, server, tolerance)
    trainer._last_loaded_step = -1  # TRL's marker: sync before the first rollout of every new step


def trainer_logprobs(model: Any, ids: list[int]) -> list[float]:
    """log p(ids[i] | ids[:i]) for i ≥ 1 under the trainer's model (no grad, eval mode, restored afterwards)."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.tensor([ids], device=model.device)).logits[0, :-1].float()
    finally:
        model.train(was_training)
    return logits.log_softmax(-1).gather(1, torch.tensor(ids[1:], device=logits.device)[:, None])[:, 0].tolist()


def server_logprobs(url: str, ids: list[int], model: str = SERVED_NAME, timeout: float = 120.0) -> list[float]:
    """The same log-probabilities from the server (`prompt_logprobs`, temperature 1 so they are the model's own)."""
    body = {"model": model, "prompt": ids, "max_tokens": 1, "prompt_logprobs": 0, "temperature": 1.0}
    with http(url) as client:
        response = client.post(f"{url}/v1/completions", json=body, timeout=timeout)
    response.raise_for_status()
    scored = response.json()["choices"][0]["prompt_logprobs"]
    return [position[str(token)]["logprob"] for position, token in zip(scored[1:], ids[1:])]


def reload(url: str, weights: Path, timeout: float = 600.0) -> None:
    """The server reloads `weights` in place and forgets cached prefixes computed with the old ones."""
    body = {"method": "reload_weights_exact", "kwargs": {"weights_path": str(weights)}}
    with http(url) as client:
        response = client.post(f"{url}/collective_rpc", json=body, timeout=timeout)
        if response.status_code == 200:
            client.post(f"{url}/reset_prefix_cache", timeout=timeout).raise_for_status()
    if response.status_code == 404:
        raise WeightSyncError(
            f"the vLLM server at {url} has no /collective_rpc: start it with VLLM_SERVER_DEV_MODE=1 and "
            "--worker-extension-cls researchrl_vllm_ext.ExactReload, or use vllm = \"managed\""
        )
    if response.status_code != 200:
        raise WeightSyncError(f"weight reload on {url} answered {response.status_code}: {response.text[:300]}")


class ReloadSync:
    """TRL's `vllm_generation` on CPU: `sync_weights()` before each step's rollout; `stats` for the step's log."""

    def __init__(self, trainer: Any, endpoint: Endpoint, server: VLLMServer | None, tolerance: float):
        self.trainer = trainer
        self.endpoint = endpoint
        self.server = server  # managed: restartable on the saved weights; None: external
        self.tolerance = tolerance

    def sync_weights(self) -> None:
        """Push the trainer's weights (main), check them, and agree on the outcome across processes."""
        failure, stats = "", {}
        if ranks.is_main():
            try:
                stats = self._sync()
            except (WeightSyncError, VLLMStartError, httpx.HTTPError) as err:
                failure = f"vLLM weight sync failed: {err}"
        failure, self.endpoint.stats, self.endpoint.url = ranks.broadcast((failure, stats, self.endpoint.url))
        if failure:
            raise WeightSyncError(failure)

    def _sync(self) -> dict[str, float]:
        """Save, reload, verify; a managed server that still disagrees is restarted on the saved weights."""
        started = time.perf_counter()
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        tokenizer = self.trainer.processing_class
        if not (self.endpoint.weights / "config.json").exists():
            tokenizer.save_pretrained(str(self.endpoint.weights))
        model.save_pretrained(str(self.endpoint.weights), safe_serialization=True)
        saved = time.perf_counter()
        reload(self.endpoint.url, self.endpoint.weights)
        ids = tokenizer(PROBE)["input_ids"]
        expected = trainer_logprobs(model, ids)
        gap = self._gap(expected, ids)
        restarted = 0.0
        if gap > self.tolerance and self.server is not None:
            self.server.stop()
            self.server.spec = dataclasses.replace(self.server.spec, model=str(self.endpoint.weights))
            self.endpoint.url = self.server.start()
            gap, restarted = self._gap(expected, ids), 1.0
        if gap > self.tolerance:
            raise WeightSyncError(
                f"after the weight reload the server's logprobs differ from the trainer's by up to {gap:.2e} "
                f"(tolerance {self.tolerance:.0e}); the server would sample from other weights than TRL trains"
            )
        return {
            "vllm/sync_seconds": time.perf_counter() - started,
            "vllm/save_seconds": saved - started,
            "vllm/sync_logprob_gap": gap,
            "vllm/restarts": restarted,
        }

    def _gap(self, expected: list[float], ids: list[int]) -> float:
        """Largest |Δ logprob| between the server and the trainer on the probe."""
        got = server_logprobs(self.endpoint.url, ids, self.endpoint.model)
        return max(abs(a - b) for a, b in zip(got, expected))


def max_model_len(model_dir: str, wanted: int) -> int:
    """The agent's context budget, capped by what the checkpoint's position embeddings allow."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return min(wanted, int(config.get("max_position_embeddings", wanted)))
