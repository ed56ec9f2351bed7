"""LeanGRPOTrainer scores tokens as TRL does, in less memory: cut padding, a smaller LM-head tile or the model's own
head, a reference model read from disk for its pass. The 2-layer Llama of tests/rl/conftest.py keeps it to seconds."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def trainer(tmp_path_factory, tiny_llama):  # noqa: ANN001, ANN201
    pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from researchrl.rl.grpo import LeanGRPOTrainer

    root = tmp_path_factory.mktemp("lean")
    args = GRPOConfig(output_dir=str(root / "out"), per_device_train_batch_size=2, num_generations=2, beta=0.001,
                      use_cpu=True, report_to="none", max_steps=1, disable_dropout=True, bf16=False)  # TRL defaults to bf16
    lean = LeanGRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_llama), args=args,
        reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
        train_dataset=Dataset.from_list([{"prompt": "q"}] * 2), processing_class=AutoTokenizer.from_pretrained(tiny_llama),
    )
    return lean, str(tiny_llama)


def padded_batch():  # noqa: ANN201
    """Three rows: prompts left-padded to 6, completions right-padded to 9, of different lengths."""
    import torch

    torch.manual_seed(1)
    prompt_lengths, completion_lengths = [6, 2, 4], [3, 9, 5]
    ids = torch.randint(5, 1000, (3, 15))
    mask = torch.zeros(3, 15, dtype=torch.long)
    for row, (p, c) in enumerate(zip(prompt_lengths, completion_lengths)):
        mask[row, 6 - p : 6 + c] = 1
    return ids.masked_fill(mask == 0, 0), mask, 9


@pytest.mark.parametrize("fused_head", [True, False], ids=["trl-fused-head", "own-head"])
@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_cut_padding_and_either_head_give_trls_log_probs_and_entropies(trainer, batch_size: int, fused_head: bool) -> None:  # noqa: ANN001
    import torch
    import trl.trainer.utils as trl_utils
    from trl import GRPOTrainer

    from researchrl.rl.grpo import logprob_chunk

    lean, _ = trainer
    ids, mask, keep = padded_batch()
    model = lean.model
    trl_scores = GRPOTrainer._get_per_token_logps_and_entropies  # TRL's own, on the whole padded width
    want_lp, want_entropy, _ = trl_scores(lean, model, ids, mask, keep, batch_size, compute_entropy=True)
    default = trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE
    lean.fused_head = fused_head
    try:
        with logprob_chunk(1000):
            assert trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE == 1000
            lp, entropy, _ = lean._get_per_token_logps_and_entropies(model, ids, mask, keep, batch_size,
                                                                     compute_entropy=True)
    finally:
        lean.fused_head = True
    assert trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE == default
    scored = mask[:, -keep:].bool()
    assert lp.shape == want_lp.shape == entropy.shape
    # RoPE sees the same relative positions: equal up to fp32 rounding of the absolute ones
    torch.testing.assert_close(lp[scored], want_lp[scored], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(entropy[scored], want_entropy[scored], rtol=1e-4, atol=1e-5)
    assert (lp[~scored] == 0).all()
    lp[scored].sum().backward()  # the loss still reaches the weights
    assert model.model.embed_tokens.weight.grad is not None
    model.zero_grad()


def test_the_reference_holds_no_weights_outside_its_pass_and_scores_as_loaded(trainer) -> None:  # noqa: ANN001
    import torch

    lean, path = trainer
    ids, mask, keep = padded_batch()
    with torch.no_grad():
        want, _, _ = lean._get_per_token_logps_and_entropies(lean.ref_model, ids, mask, keep, 2)
    lean.reference_path = path
    lean.release_reference()
    try:
        assert all(p.numel() == 0 for p in lean.ref_model.parameters())
        with torch.no_grad():
            got, _, _ = lean._get_per_token_logps_and_entropies(lean.ref_model, ids, mask, keep, 2)
        assert torch.equal(got, want)
        assert all(p.numel() == 0 for p in lean.ref_model.parameters())
    finally:
        lean.reference_path = None


def test_amp_scores_in_bf16_over_fp32_weights_and_its_gradient_follows_fp32s(trainer) -> None:  # noqa: ANN001
    import torch

    lean, _ = trainer
    ids, mask, keep = padded_batch()
    model = lean.model
    scored = mask[:, -keep:].bool()
    seen: list[torch.dtype] = []
    hook = model.model.layers[0].mlp.down_proj.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))

    def score(amp: bool) -> tuple[torch.Tensor, torch.Tensor]:
        lean.amp = amp
        try:
            lp, _, _ = lean._get_per_token_logps_and_entropies(model, ids, mask, keep, 3)
        finally:
            lean.amp = False
        lp[scored].sum().backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters()])
        model.zero_grad()
        return lp.detach(), grad

    try:
        want, want_grad = score(False)
        got, grad = score(True)
    finally:
        hook.remove()
    assert seen == [torch.float32, torch.bfloat16]  # the second pass really computed in bf16
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay fp32
    assert got.dtype == torch.float32 and not torch.equal(got, want)
    torch.testing.assert_close(got[scored], want[scored], rtol=0, atol=0.05)  # bf16 rounding, not another model
    assert grad.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(grad, want_grad, dim=0) > 0.99


def test_amp_unset_follows_the_cpu_and_explicit_settings_win() -> None:
    from researchrl.rl.config import TrainConfig
    from researchrl.rl.precision import native_bf16, resolve_amp

    assert resolve_amp(TrainConfig()).amp is native_bf16()  # on CPU: autocast exactly where bf16 is native
    assert resolve_amp(TrainConfig(bf16=True)).amp is False  # bf16 weights need no autocast
    assert resolve_amp(TrainConfig(use_vllm=True)).amp is False  # the server samples in fp32: TRL's IS ratio stays exact
    assert resolve_amp(TrainConfig(amp=False)).amp is False
    assert resolve_amp(TrainConfig(amp=True)).amp is True


def test_evaluations_run_in_bf16_where_training_computes_in_it_and_explicit_settings_win() -> None:
    from researchrl.rl.config import TrainConfig
    from researchrl.rl.precision import resolve_eval_bf16

    assert resolve_eval_bf16(TrainConfig(amp=True)).eval_bf16 is True
    assert resolve_eval_bf16(TrainConfig(bf16=True, amp=False)).eval_bf16 is True
    assert resolve_eval_bf16(TrainConfig(amp=False)).eval_bf16 is False
    assert resolve_eval_bf16(TrainConfig(amp=True, eval_bf16=False)).eval_bf16 is False
    assert resolve_eval_bf16(TrainConfig(amp=False, eval_bf16=True)).eval_bf16 is True


def test_the_own_head_is_used_on_cpu_and_only_for_models_whose_logits_are_the_heads(trainer) -> None:  # noqa: ANN001
    import copy

    import torch

    from researchrl.rl.config import TrainConfig
    from researchrl.rl.lm_head import plain_head_fits, resolve_lm_head

    assert resolve_lm_head(TrainConfig()).fused_lm_head is torch.cuda.is_available()
    assert resolve_lm_head(TrainConfig(fused_lm_head=True)).fused_lm_head is True
    assert resolve_lm_head(TrainConfig(fused_lm_head=False)).fused_lm_head is False
    lean, _ = trainer
    assert plain_head_fits(lean.model)
    capped = copy.deepcopy(lean.model)
    capped.config.final_logit_softcapping = 30.0  # Gemma-2 style: TRL's fused head applies it, the own head would not
    assert not plain_head_fits(capped)
    capped.config.final_logit_softcapping, capped.config.logit_scale = None, 0.5
    assert not plain_head_fits(capped)


def shared_prefix_batch():  # noqa: ANN201
    """The padded_batch rows, each starting with the same 4 tokens (prompts of 6, 2 and 4 real tokens)."""
    ids, mask, keep = padded_batch()
    for row, start in enumerate((0, 4, 2)):
        ids[row, start : start + min(4, 6 - start)] = ids.new_tensor([11, 12, 13, 14])[: 6 - start]
    return ids, mask, keep


def test_the_shared_prefix_scores_and_trains_as_every_row_whole(trainer) -> None:  # noqa: ANN001
    import torch

    from researchrl.rl.shared_prefix import SharedPrefix

    lean, _ = trainer
    ids, mask, keep = shared_prefix_batch()
    model, scored = lean.model, mask[:, -keep:].bool()
    ran: list[int] = []
    scores = SharedPrefix.scored_logits

    def counted(self, model, row, shared, keep):  # noqa: ANN001, ANN202
        ran.append(shared)
        return scores(self, model, row, shared, keep)

    def score(share: bool) -> tuple[torch.Tensor, ...]:
        """The reference pass over the batch, then each row's loss pass and backward, as one optimizer step runs them."""
        lean.share_prefix, lean.fused_head = share, False
        try:
            with torch.no_grad():
                ref, _, _ = lean._get_per_token_logps_and_entropies(model, ids, mask, keep, 1)
            parts = []
            for row in range(3):
                with lean.loss_pass():
                    lp, entropy, _ = lean._get_per_token_logps_and_entropies(model, ids[row : row + 1],
                                                                             mask[row : row + 1], keep, compute_entropy=True)
                (lp[scored[row : row + 1]] * (row + 1)).sum().backward()
                parts.append(torch.cat([lp.detach(), entropy.detach()]))
            lean.send_prefix_gradient()
            grad = torch.cat([p.grad.flatten() for p in model.parameters()])
            model.zero_grad()
            return ref, torch.cat(parts), grad
        finally:
            lean.share_prefix, lean.fused_head = True, True

    args = lean.args.gradient_checkpointing
    lean.args.gradient_checkpointing = False
    SharedPrefix.scored_logits = counted
    try:
        want, got = score(False), score(True)
    finally:
        SharedPrefix.scored_logits = scores
        lean.args.gradient_checkpointing = args
    # the reference pass shares the 1 token all three prompts can spare (the 2-token prompt keeps its last); the loss
    # pass keeps the first row's 5 spare tokens for the step, and the others share as many as they can spare: 1 and 3
    assert ran == [1, 1, 1, 5, 1, 3]
    torch.testing.assert_close(got[0][scored], want[0][scored], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[2], want[2], rtol=1e-4, atol=1e-6)  # the prefix's share of the gradient included


def test_a_grpo_step_trains_the_same_weights_with_the_shared_prefix(tmp_path, tiny_llama) -> None:  # noqa: ANN001
    """Two real optimizer steps through TRL (reference pass, loss, backward, clip, AdamW): the prefix's gradient is
    added before the step, and the second step computes its prefix again with the new weights."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from researchrl.rl.config import checkpointing_flag
    from researchrl.rl.grpo import LeanGRPOTrainer
    from researchrl.rl.shared_prefix import SharedPrefix

    def rollout(prompts, trainer):  # noqa: ANN001, ANN202
        """Fixed rows: a shared 6-token system part, a per-question token, completions of different lengths."""
        rows = [[3, 4, 5, 6, 7, 8, 100 + len(p)] for p in prompts]
        completions = [[200 + i + j for j in range(3 + 2 * i)] for i in range(len(prompts))]
        return {"prompt_ids": rows, "completion_ids": completions, "logprobs": [[0.0] * len(c) for c in completions]}

    computed: list[int] = []
    compute = SharedPrefix.compute.__func__

    def counted(cls, model, tokens):  # noqa: ANN001, ANN202
        computed.append(len(tokens))
        return compute(cls, model, tokens)

    def train(share: bool) -> torch.Tensor:
        args = GRPOConfig(output_dir=str(tmp_path / f"out-{share}"), per_device_train_batch_size=1,
                          gradient_accumulation_steps=4, steps_per_generation=4, num_generations=2, max_steps=2,
                          learning_rate=1e-2, beta=0.01, use_cpu=True, report_to="none", disable_dropout=True,
                          bf16=False, save_strategy="no", logging_steps=1, seed=0, **checkpointing_flag(False))
        lean = LeanGRPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(tiny_llama), args=args, rollout_func=rollout,
            reward_funcs=[lambda completion_ids, **_: [float(len(c)) for c in completion_ids]],
            train_dataset=Dataset.from_list([{"prompt": "q" * n} for n in range(1, 5)]),
            processing_class=AutoTokenizer.from_pretrained(tiny_llama),
        )
        lean.fused_head, lean.share_prefix = False, share
        lean.train()
        return torch.cat([p.detach().flatten() for p in lean.model.parameters()])

    start = torch.cat([p.detach().flatten() for p in AutoModelForCausalLM.from_pretrained(tiny_llama).parameters()])
    whole = train(False)
    SharedPrefix.compute = classmethod(counted)
    try:
        shared = train(True)
    finally:
        SharedPrefix.compute = classmethod(compute)
    assert computed == [6, 6, 6, 6]  # per step: the reference pass's prefix, the loss pass's (first row's spare tokens)
    assert (whole - start).abs().max() > 1e-3  # the steps moved the weights
    torch.testing.assert_close(shared, whole, rtol=1e-4, atol=1e-5)


def test_micro_batches_of_zero_advantage_skip_their_pass_and_train_the_same_weights(tmp_path, tiny_llama) -> None:  # noqa: ANN001
    """Two real optimizer steps, beta = 0: the first has one group that scored the same (zero advantage), the second
    only such groups. Skipping their forward and backward gives the same weights as TRL's whole pass, AdamW's momentum
    step on the second included; with a KL term nothing is skipped."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from researchrl.rl.grpo import LeanGRPOTrainer

    def rollout(prompts, trainer):  # noqa: ANN001, ANN202
        completions = [[200 + i + j for j in range(3 + 2 * i)] for i in range(len(prompts))]
        return {"prompt_ids": [[3, 4, 100 + len(p)] for p in prompts], "completion_ids": completions,
                "logprobs": [[0.0] * len(c) for c in completions]}

    def train(skip: bool, beta: float) -> tuple[torch.Tensor, int, list[float]]:
        calls = {"reward": 0, "scored": 0}

        def reward(completion_ids, **_):  # noqa: ANN001, ANN202
            """Step 1: the first group's two rollouts differ, the second group's score the same; step 2: all the same."""
            calls["reward"] += 1
            if calls["reward"] > 1:
                return [1.0] * len(completion_ids)
            return [float(len(c)) for c in completion_ids[:2]] + [1.0] * (len(completion_ids) - 2)

        args = GRPOConfig(output_dir=str(tmp_path / f"out-{skip}-{beta}"), per_device_train_batch_size=1,
                          gradient_accumulation_steps=4, steps_per_generation=4, num_generations=2, max_steps=2,
                          learning_rate=1e-2, beta=beta, use_cpu=True, report_to="none", disable_dropout=True,
                          bf16=False, save_strategy="no", logging_steps=1, seed=0, shuffle_dataset=False)
        lean = LeanGRPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(tiny_llama), args=args, rollout_func=rollout,
            reward_funcs=[reward], train_dataset=Dataset.from_list([{"prompt": "q" * n} for n in range(1, 5)]),
            processing_class=AutoTokenizer.from_pretrained(tiny_llama),
        )
        lean.fused_head, lean.skip_zero_advantage = False, skip
        score = lean._trimmed_logps

        def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls["scored"] += torch.is_grad_enabled()
            return score(*args, **kwargs)

        lean._trimmed_logps = counted
        lean.train()
        skipped = [row["frac_micro_batches_skipped"] for row in lean.state.log_history if "frac_micro_batches_skipped" in row]
        return torch.cat([p.detach().flatten() for p in lean.model.parameters()]), calls["scored"], skipped

    start = torch.cat([p.detach().flatten() for p in AutoModelForCausalLM.from_pretrained(tiny_llama).parameters()])
    whole, whole_passes, _ = train(False, 0.0)
    skipped, skipped_passes, fractions = train(True, 0.0)
    assert whole_passes == 8 and skipped_passes == 2  # step 1: the differing group's two rows; step 2: none
    assert fractions == [0.5, 1.0]
    moved = (skipped - start).abs().max()
    assert moved > 1e-3
    torch.testing.assert_close(skipped, whole, rtol=1e-5, atol=1e-6)
    _, kl_passes, kl_fractions = train(True, 0.01)
    assert kl_passes == 8 and kl_fractions == [0.0, 0.0]
