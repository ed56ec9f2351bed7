"""Loaded inside the vLLM server (its own venv; imports only torch): an exact in-place weight reload on CPU.

vLLM's `reload_weights` refreshes every layer that loads a tensor, but a layer whose weight is tied to another
(the output projection of SmolLM2, Qwen2.5-0.5B...) loads nothing, so its packed CPU GEMM copy stays stale and the
server samples from the old output layer. `reload_weights_exact` re-packs those tied layers after the reload.
"""

from collections import Counter

import torch


class ExactReload:
    """Worker extension (`vllm serve --worker-extension-cls researchrl_vllm_ext.ExactReload`)."""

    def researchrl_ready(self) -> bool:
        """Answers when this extension is loaded: researchrl checks an external server with it before a run starts."""
        return True

    def reload_weights_exact(self, weights_path: str) -> int:
        """Reload from a safetensors dir, then re-pack tied layers; returns how many were re-packed."""
        self.reload_weights(weights_path=weights_path)
        model = self.model_runner.get_model()
        weighted = [m for m in model.modules() if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.numel()]
        owners = Counter(m.weight.data_ptr() for m in weighted)
        tied = [m for m in weighted if owners[m.weight.data_ptr()] > 1 and hasattr(m, "cpu_linear")]
        for module in tied:
            module.quant_method.process_weights_after_loading(module)
        return len(tied)
