"""The LM head at response positions only, in chunks (prorl_engine/response_head.py): the same
log-probs, entropies and gradients as the full-logits forward pass, and memory that does not hold
(tokens x vocabulary) logits for the whole batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from prorl_engine.modeling import load_policy
from prorl_engine.response_head import chunked_response_logprobs, head_apart
from prorl_engine.rollout import full_logits_logprobs, pack


def _batch(vocab_size: int, prompt_lengths: list[int], response_lengths: list[int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(1, vocab_size, (n,), generator=g).tolist() for n in prompt_lengths]
    responses = [torch.randint(1, vocab_size, (n,), generator=g).tolist() for n in response_lengths]
    return pack(prompts, responses, pad_token_id=0)


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_response_position_logprobs_equal_the_full_logits_ones(tiny_model, top_p):
    """Three positions per chunk, so the 23 response tokens take eight chunks; log-probs, entropies
    and the gradient of a weighted sum of log-probs match the full forward pass in float32."""
    model = load_policy(tiny_model, "float32", torch.device("cpu"))
    vocab = model.get_output_embeddings().weight.shape[0]
    batch = _batch(vocab, [5, 9, 3, 7], [8, 2, 6, 7])
    weights = torch.randn(batch.mask.shape, generator=torch.Generator().manual_seed(1)) * batch.mask

    results = {}
    for name, compute in {
        "chunked": lambda: chunked_response_logprobs(model, batch, True, 1.2, top_p, chunk_bytes=3 * 4 * vocab),
        "full": lambda: full_logits_logprobs(model, batch, True, 1.2, top_p),
    }.items():
        model.zero_grad(set_to_none=True)
        logp, entropy = compute()
        kept = (batch.mask > 0) & torch.isfinite(logp)  # with top_p < 1, some random tokens lie outside the nucleus
        (logp.masked_fill(~kept, 0.0) * weights).sum().backward()
        results[name] = (logp.detach(), entropy, _grads(model))

    (logp, entropy, grads), (full_logp, full_entropy, full_grads) = results["chunked"], results["full"]
    on = batch.mask > 0
    assert torch.equal(torch.isneginf(logp[on]), torch.isneginf(full_logp[on]))  # the same nucleus
    assert torch.isfinite(full_logp[on]).sum() >= 20  # the comparisons below are not vacuous
    torch.testing.assert_close(logp[on], full_logp[on], rtol=0, atol=1e-5)
    torch.testing.assert_close(entropy[on], full_entropy[on], rtol=0, atol=1e-5)
    assert (logp[~on] == 0).all()
    assert grads.keys() == full_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], full_grads[name], rtol=1e-4, atol=1e-6)


def test_a_micro_batch_without_tokens_gives_a_zero_gradient(tiny_model):
    """ICE-POP can take every token of a micro-batch out of the loss: the backward pass must still
    run (the graph reaches the weights through an empty chunk) and move nothing."""
    model = load_policy(tiny_model, "float32", torch.device("cpu"))
    batch = _batch(64, [4], [3])
    batch.mask.zero_()
    logp, _ = chunked_response_logprobs(model, batch)
    logp.sum().backward()
    assert all(float(p.grad.abs().sum()) == 0.0 for p in model.parameters() if p.grad is not None)
    assert model.get_output_embeddings().weight.grad is not None


def test_models_that_transform_their_logits_keep_the_full_forward_pass(tiny_model):
    model = load_policy(tiny_model, "float32", torch.device("cpu"))
    assert head_apart(model)
    model.config.final_logit_softcapping = 30.0  # Gemma 2: tanh soft-capping after the head
    assert not head_apart(model)


MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config
    from prorl_engine.response_head import HEAD_CHUNK_BYTES, chunk_tokens
    from prorl_engine.rollout import pack, response_logprobs

    torch.set_num_threads(1)
    V, H, M, P, T = json.loads(sys.argv[1])
    config = Qwen2Config(vocab_size=V, hidden_size=H, intermediate_size=4 * H, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    g = torch.Generator().manual_seed(1)
    batch = pack([torch.randint(V, (P,), generator=g).tolist() for _ in range(M)],
                 [torch.randint(V, (T,), generator=g).tolist() for _ in range(M)], 0)
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    before = peak()
    logp, entropy = response_logprobs(model, batch, with_entropy=True, temperature=1.2)
    (logp * batch.mask).sum().backward()
    print(json.dumps({"delta": peak() - before, "chunk": chunk_tokens(V) * V * 4}))
    """
)


def test_a_step_on_a_151936_token_vocabulary_never_holds_the_batch_logits():
    """A random Qwen2 with Qwen's real vocabulary: the forward and backward pass of 16 responses of
    96 tokens after 32-token prompts raise the process's peak memory by less than a few chunks of
    logits plus the head's weight and its gradient, far below one copy of the batch's
    (M, L, V) float32 logits (1,187 MiB), which the full forward pass makes (and several more).

    Measured in a fresh process by its peak resident memory, with glibc serving every allocation
    over 64 KiB by mmap (MALLOC_MMAP_THRESHOLD_), so freed memory leaves the count at once and the
    peak is what was live at once, not what heap fragmentation kept."""
    V, H, M, P, T = 151_936, 64, 16, 32, 96
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    probe = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, json.dumps([V, H, M, P, T])],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    measured = json.loads(probe.stdout.strip().splitlines()[-1])
    batch_logits = M * (P + T) * V * 4
    head_weight = V * H * 4
    bound = 6 * measured["chunk"] + 4 * head_weight + 32 * 2**20  # chunk intermediates, weight + grads, activations
    assert bound < batch_logits / 2  # the bound would catch even one copy of the batch's logits
    assert measured["delta"] < bound, (measured, bound)
