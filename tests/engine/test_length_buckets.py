"""Length-bucketed micro-batches (update.plan_minibatches with `lengths`): the same minibatches, less
padding, and an update that learns the same as the one cut in dealt order."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from prorl_engine import update as upd
from prorl_engine.config import RunConfig
from prorl_engine.modeling import load_policy
from prorl_engine.rollout import batched_logprobs

PROMPT_LENGTHS = [5, 9, 4, 12, 6, 7, 3, 10, 8, 5, 11, 4]
RESPONSE_LENGTHS = [2, 15, 3, 14, 1, 16, 4, 13, 2, 12, 5, 11]


def _plans(lengths: list[int]) -> tuple[upd.Plan, upd.Plan]:
    """The dealt-order plan and the bucketed one, from the same draw of the global RNG."""
    torch.manual_seed(0)
    dealt = upd.plan_minibatches(len(lengths), updates=2, micro_batch_size=2)
    torch.manual_seed(0)
    return dealt, upd.plan_minibatches(len(lengths), updates=2, micro_batch_size=2, lengths=lengths)


def test_a_bucketed_plan_has_the_same_minibatches_cut_in_order_of_length():
    lengths = [p + r for p, r in zip(PROMPT_LENGTHS, RESPONSE_LENGTHS)]
    dealt, bucketed = _plans(lengths)

    assert [sorted(i for m in mb for i in m) for mb in bucketed] == [sorted(i for m in mb for i in m) for mb in dealt]
    for minibatch in bucketed:
        order = [lengths[i] for micro in minibatch for i in micro]
        assert order == sorted(order)
    padded = {
        name: sum(len(micro) * max(lengths[i] for i in micro) for mb in plan for micro in mb)
        for name, plan in (("dealt", dealt), ("bucketed", bucketed))
    }
    assert padded["bucketed"] < padded["dealt"]


def test_a_bucketed_update_gives_the_loss_metrics_and_weights_of_the_dealt_one(tiny_model):
    """The same 12 responses of 1-16 tokens, two minibatches of three micro-batches: diagnostics
    (losses included) and updated weights agree to float tolerance (gradients summed in another order)."""
    policy = load_policy(tiny_model, "float32", torch.device("cpu"))
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(1, 400, (n,), generator=g).tolist() for n in PROMPT_LENGTHS]
    responses = [torch.randint(1, 400, (n,), generator=g).tolist() for n in RESPONSE_LENGTHS]
    advantages = torch.randn(len(prompts), generator=g)
    config = RunConfig(model_path=str(tiny_model), temperature=1.2, updates_per_step=2, micro_batch_size=2, beta=0.01)
    pi = functools.partial(batched_logprobs, policy, device=torch.device("cpu"), temperature=1.2)
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]

    results = []
    for plan in _plans(lengths):
        model = copy.deepcopy(policy)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        minibatches = upd.micro_batches(plan, prompts, responses, advantages, 0, pi, pi)
        metrics = upd.update(model, optimizer, minibatches, config, torch.device("cpu"))
        results.append((metrics, model.state_dict()))

    (dealt, dealt_weights), (bucketed, bucketed_weights) = results
    assert dealt["loss/policy"] != 0 and dealt["policy/approx_kl_old"] > 0  # the second update moved off pi_old
    for key, value in dealt.items():
        assert bucketed[key] == pytest.approx(value, rel=1e-5, abs=1e-8), key
    for name, tensor in dealt_weights.items():  # Adam moves each weight by up to lr = 1e-3 a step
        torch.testing.assert_close(bucketed_weights[name], tensor, rtol=0, atol=5e-5)
