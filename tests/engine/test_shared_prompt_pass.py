"""Responses to one prompt scored from one prompt pass (response_head.response_states): the same
log-probs, entropies and gradients as the full-logits forward pass over every whole sequence."""

from __future__ import annotations

import pytest
import torch

from prorl_engine.modeling import load_policy
from prorl_engine.response_head import chunked_response_logprobs
from prorl_engine.rollout import full_logits_logprobs, pack


def _groups(vocab_size: int, prompt_lengths: list[int], response_lengths: list[list[int]], seed: int = 0):
    """Prompts of different lengths, each with several responses of different lengths, interleaved
    as a length-bucketed micro-batch interleaves them."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for prompt_length, lengths in zip(prompt_lengths, response_lengths):
        prompt = torch.randint(1, vocab_size, (prompt_length,), generator=g).tolist()
        rows += [(prompt, torch.randint(1, vocab_size, (n,), generator=g).tolist()) for n in lengths]
    order = torch.randperm(len(rows), generator=g).tolist()
    return pack([rows[i][0] for i in order], [rows[i][1] for i in order], pad_token_id=0)


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("model_name", ["tiny_model", "tiny_llama"])
def test_a_shared_prompt_pass_gives_the_full_passes_log_probs_entropies_and_gradients(request, model_name):
    """Three prompts (lengths 6, 11, 3) with 3, 2 and 1 responses (1 to 9 tokens), one response
    masked out of the loss in its middle (as a token outside pi_old's nucleus is): in float32 the
    log-probs, entropies and the gradient of a weighted log-prob sum equal the full pass's."""
    model = load_policy(request.getfixturevalue(model_name), "float32", torch.device("cpu"))
    vocab = model.get_output_embeddings().weight.shape[0]
    batch = _groups(vocab, [6, 11, 3], [[7, 1, 9], [4, 8], [5]])
    first_long = int((batch.mask.sum(dim=1) >= 7).nonzero()[0])
    batch.mask[first_long, 3] = 0.0  # out of the loss, still in the sequence the later tokens attend to
    weights = torch.randn(batch.mask.shape, generator=torch.Generator().manual_seed(1)) * batch.mask

    results = {}
    for name, score in (("full", full_logits_logprobs), ("shared", chunked_response_logprobs)):
        model.zero_grad(set_to_none=True)
        logp, entropy = score(model, batch, with_entropy=True, temperature=1.2)
        (logp * weights).sum().backward()
        results[name] = (logp.detach(), entropy, _grads(model))

    (full_logp, full_entropy, full_grads), (logp, entropy, grads) = results["full"], results["shared"]
    on = batch.mask > 0
    assert int(on.sum()) == 34 - 1
    torch.testing.assert_close(logp[on], full_logp[on], rtol=0, atol=2e-5)
    torch.testing.assert_close(entropy[on], full_entropy[on], rtol=0, atol=2e-5)
    assert (logp[~on] == 0).all()
    assert full_grads.keys() == grads.keys() and len(grads) > 10
    for name in full_grads:
        torch.testing.assert_close(grads[name], full_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_the_prompt_runs_once_per_distinct_prompt(tiny_model):
    """Six responses to two prompts: the decoder sees two prompt rows, then six response rows."""
    model = load_policy(tiny_model, "float32", torch.device("cpu"))
    vocab = model.get_output_embeddings().weight.shape[0]
    batch = _groups(vocab, [6, 11], [[7, 2, 9], [4, 8, 3]])
    shapes = []
    hook = model.get_decoder().register_forward_hook(
        lambda module, args, kwargs, out: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    with torch.no_grad():
        chunked_response_logprobs(model, batch, temperature=1.2)
    hook.remove()
    assert shapes == [(2, 11), (6, 8)]  # the longest response (9) needs its first 8 tokens as inputs
