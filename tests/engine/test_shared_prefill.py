"""HFGenerateBackend's prompt prefill once per prompt (not once per sample): the same samples as
Hugging Face's own `generate` on the prompts repeated n times, which runs each prompt's prefill n times."""

from __future__ import annotations

import pytest
import torch

from prorl_engine.modeling import load_policy, load_tokenizer
from prorl_engine.rollout import HFGenerateBackend, SamplingParams


def _reference(model, tokenizer, prompts, params, seed):
    """`generate` on the left-padded prompts, each repeated n times before the prefill, as
    `num_return_sequences=n` repeats them (which refuses greedy decoding)."""
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts]).repeat_interleave(params.n, dim=0)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts]).repeat_interleave(params.n, dim=0)
    sampling = (
        {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
        if params.temperature > 0
        else {"do_sample": False}
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            **sampling,
            max_new_tokens=params.max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=pad,
        )
    rows = out[:, width:].tolist()
    return [r[: r.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in r else r for r in rows]


@pytest.mark.parametrize("lean", [False, True])
@pytest.mark.parametrize("temperature", [0.0, 1.2])
def test_prefilling_each_prompt_once_samples_what_generate_samples(tiny_model, temperature, lean):
    """Prompts of different lengths (left padding inside the shared cache), greedy and sampled at
    the spec's temperature under one seed: every response is token for token HF's own, through
    `generate` restarted from the shared cache and through the lean loop (decode.py)."""
    model = load_policy(tiny_model, "float32", torch.device("cpu")).eval()
    tokenizer = load_tokenizer(tiny_model)
    prompts = [tokenizer(text)["input_ids"] for text in ("What is 3 + 4?", "Add 12 and 7, then double it.", "Hi")]
    assert len({len(p) for p in prompts}) == 3
    params = SamplingParams(n=4, max_new_tokens=16, temperature=temperature, top_p=1.0)
    expected = _reference(model, tokenizer, prompts, params, seed=3)

    backend = HFGenerateBackend(model, tokenizer.eos_token_id, tokenizer.pad_token_id, batch_size=12, lean=lean)
    prefills = []
    if lean:  # the loop runs the decoder's modules, not its forward: count the embedded token ids
        hook = model.get_decoder().embed_tokens.register_forward_hook(
            lambda m, args, out: prefills.append(args[0].shape)
        )
    else:
        hook = model.get_decoder().register_forward_hook(
            lambda m, args, kwargs, out: prefills.append(kwargs["input_ids"].shape), with_kwargs=True
        )
    torch.manual_seed(3)
    generations = backend.generate(prompts, params)
    hook.remove()

    assert [g.token_ids for g in generations] == expected
    assert [g.prompt_index for g in generations] == [i for i in range(3) for _ in range(4)]
    longest = max(len(p) for p in prompts)
    assert prefills[0] == (3, longest if lean else longest - 1)  # one row per prompt, not per sample
    assert prefills[1] == (12, 1)  # then each sample starts from its prompt's last token
    if temperature > 0:
        assert len({tuple(g.token_ids) for g in generations}) > 3  # samples of one prompt differ
