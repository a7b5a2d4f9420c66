"""`bf16_autocast`: the update's forward and backward passes in bfloat16 on float32 weights. Not
exact: each figure of one update stays within a bound measured on the tiny model (about 10x what
was seen), and the weights and optimizer stay float32."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from prorl_engine import update as upd
from prorl_engine.config import RunConfig
from prorl_engine.modeling import load_policy
from prorl_engine.rollout import batched_logprobs, pack, response_logprobs


def _responses(count: int = 8):
    g = torch.Generator().manual_seed(3)
    prompts = [
        torch.randint(1, 400, (int(n),), generator=g).tolist() for n in torch.randint(4, 12, (count,), generator=g)
    ]
    responses = [
        torch.randint(1, 400, (int(n),), generator=g).tolist() for n in torch.randint(2, 16, (count,), generator=g)
    ]
    return prompts, responses, torch.randn(count, generator=g)


def test_bf16_log_probs_stay_near_the_float32_ones(tiny_model):
    policy = load_policy(tiny_model, "float32", torch.device("cpu"))
    prompts, responses, _ = _responses()
    batch = pack(prompts, responses, 0)
    with torch.no_grad():
        full, _ = response_logprobs(policy, batch, temperature=1.2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half, _ = response_logprobs(policy, batch, temperature=1.2)
    on = batch.mask > 0
    assert half.dtype == torch.float32
    difference = (half - full)[on].abs()
    assert 0 < float(difference.max()) < 0.05  # bfloat16 did act, and its error is far inside the clip (0.2)


def test_a_bf16_update_stays_within_its_measured_bound_and_keeps_float32_weights(tiny_model):
    policy = load_policy(tiny_model, "float32", torch.device("cpu"))
    prompts, responses, advantages = _responses()
    pi = functools.partial(batched_logprobs, policy, device=torch.device("cpu"), temperature=1.2)
    torch.manual_seed(0)
    plan = upd.plan_minibatches(len(prompts), updates=2, micro_batch_size=2)
    minibatches = upd.micro_batches(plan, prompts, responses, advantages, 0, pi, pi)

    results = {}
    for autocast in (False, True):
        config = RunConfig(model_path=str(tiny_model), temperature=1.2, beta=0.01, bf16_autocast=autocast)
        model = copy.deepcopy(policy)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        results[autocast] = upd.update(model, optimizer, copy.deepcopy(minibatches), config, torch.device("cpu"))
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert all(s.dtype == torch.float32 for state in optimizer.state.values() for s in state.values() if s.dim())

    full, half = results[False], results[True]
    # measured: |differences| 2.6e-5 (loss/policy), 8e-7 (approx_kl_old), 2e-4 relative (grad_norm)
    assert half["policy/entropy"] == pytest.approx(full["policy/entropy"], rel=1e-4)
    assert half["policy/grad_norm"] == pytest.approx(full["policy/grad_norm"], rel=3e-3)
    assert half["loss/policy"] == pytest.approx(full["loss/policy"], abs=3e-4)
    assert half["policy/approx_kl_old"] == pytest.approx(full["policy/approx_kl_old"], abs=1e-5)
    assert half["policy/approx_kl_old"] != full["policy/approx_kl_old"]  # bfloat16 did act
