"""The lean sampling loop (prorl_engine/decode.py) against Hugging Face `generate` on the same
weights: the same tokens greedy and sampled under one seed, the same recorded log-probs, the same
stop at eos; and `generate` for the layouts the loop does not know."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

from prorl_engine.decode import lean_decoding
from prorl_engine.rollout import HFGenerateBackend, SamplingParams

PAD = 0


def _model(config_cls, **changes) -> torch.nn.Module:
    settings = {
        "vocab_size": 96,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 256,
        "pad_token_id": PAD,
        **changes,
    }
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config_cls(**settings)).eval()


LAYOUTS = {
    "qwen2": lambda: _model(Qwen2Config),
    "qwen2-gqa": lambda: _model(Qwen2Config, num_key_value_heads=2),
    "llama-gqa-untied": lambda: _model(LlamaConfig, num_key_value_heads=1, tie_word_embeddings=False),
}

PROMPTS = [[5, 17, 33, 8, 61, 2, 40], [9, 71], [12, 44, 3, 90, 27]]  # three lengths: left padding in the cache


def _sample(model, params, eos, lean, record=True, seed=7):
    backend = HFGenerateBackend(model, eos, PAD, batch_size=64, record_logprobs=record, lean=lean)
    torch.manual_seed(seed)
    return backend.generate(PROMPTS, params)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("temperature, top_p", [(0.0, 1.0), (1.2, 1.0), (1.2, 0.9)])
def test_the_lean_loop_samples_what_generate_samples(layout, temperature, top_p):
    """Token for token, with multi-query and grouped-query attention, tied and untied heads; and
    each recorded log-prob equal to the one read off `generate`'s own scores."""
    model = LAYOUTS[layout]()
    assert lean_decoding(model)
    params = SamplingParams(n=4, max_new_tokens=20, temperature=temperature, top_p=top_p)
    eos = 95  # rarely sampled here: most rows run to the token budget
    expected = _sample(model, params, eos, lean=False)
    actual = _sample(model, params, eos, lean=True)

    assert [g.token_ids for g in actual] == [g.token_ids for g in expected]
    assert [g.truncated for g in actual] == [g.truncated for g in expected]
    assert [g.prompt_index for g in actual] == [i for i in range(3) for _ in range(4)]
    if temperature > 0:
        assert len({tuple(g.token_ids) for g in actual}) > 3  # the samples of one prompt differ
        for got, want in zip(actual, expected):
            torch.testing.assert_close(torch.tensor(got.logprobs), torch.tensor(want.logprobs), rtol=0, atol=1e-5)
    else:
        assert all(g.logprobs is None for g in actual)  # greedy records nothing


def test_rows_stop_at_eos_and_the_loop_ends_when_every_row_has():
    """An eos the greedy rows reach at different steps: each response ends with it, the shorter
    ones are not padded into the token budget, and the tokens are `generate`'s."""
    model = LAYOUTS["qwen2"]()
    params = SamplingParams(n=1, max_new_tokens=30, temperature=0.0, top_p=1.0)
    free = _sample(model, params, eos=-1, lean=False, record=False)  # no eos: the full greedy paths
    eos = free[1].token_ids[3]  # prompt 1's fourth token: it stops there (or earlier, if it repeats)
    expected = _sample(model, params, eos, lean=False, record=False)
    actual = _sample(model, params, eos, lean=True, record=False)

    assert [g.token_ids for g in actual] == [g.token_ids for g in expected]
    assert actual[1].token_ids[-1] == eos and not actual[1].truncated and len(actual[1].token_ids) <= 4
    assert all(eos not in g.token_ids[:-1] for g in actual)


def test_layouts_the_loop_does_not_know_sample_with_generate():
    torch.manual_seed(0)
    gpt2 = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=96, n_embd=32, n_layer=1, n_head=2)).eval()
    sliding = _model(Qwen2Config, use_sliding_window=True, sliding_window=4, max_window_layers=0)
    assert not lean_decoding(gpt2)
    assert not lean_decoding(sliding)
    params = SamplingParams(n=2, max_new_tokens=6, temperature=0.0, top_p=1.0)
    assert [len(g.token_ids) for g in _sample(gpt2, params, eos=95, lean=True, record=False)] == [6] * 6
