"""pi_old and pi_ref over the step's responses regrouped by prompt (update.by_prompt): each prompt's
tokens run once per pass instead of once per micro-batch holding one of its responses, and every
token's log-prob is the one its own update micro-batch would have given."""

from __future__ import annotations

import functools

import torch

from prorl_engine import update as upd
from prorl_engine.modeling import load_policy
from prorl_engine.rollout import batched_logprobs


def test_by_prompt_keeps_the_count_and_size_of_micro_batches_and_puts_a_prompts_responses_together():
    prompts = [[1, 2], [3], [1, 2], [3], [4, 4], [1, 2], [3], [4, 4]]  # three prompts: 0 2 5 / 1 3 6 / 4 7
    plan_micro_batches = [[6, 0, 4], [2, 7, 1], [5, 3]]
    assert upd.by_prompt(plan_micro_batches, prompts) == [[6, 1, 3], [0, 2, 5], [4, 7]]
    assert upd.by_prompt([[0, 1], [2], []], [[7], [8], [7]]) == [[0, 2], [1], []]
    assert upd.by_prompt([[1, 0], [], []], [[7], [8]]) == [[1, 0], [], []]  # trailing empties: the count holds


def test_regrouped_passes_give_each_token_its_own_micro_batchs_log_prob(tiny_model):
    """4 prompts x 4 samples dealt at random into 8 micro-batches of 2: each no-grad batch holds one
    prompt (8 prompt passes per pass, not up to 16), and pi_ref and pi_old of every response token
    equal the log-probs of the plan's own micro-batches to float32 rounding."""
    policy = load_policy(tiny_model, "float32", torch.device("cpu"))
    g = torch.Generator().manual_seed(4)
    distinct = [torch.randint(1, 400, (n,), generator=g).tolist() for n in (6, 11, 3, 8)]
    prompts = [distinct[i // 4] for i in range(16)]
    responses = [
        torch.randint(1, 400, (int(n),), generator=g).tolist() for n in torch.randint(1, 14, (16,), generator=g)
    ]
    torch.manual_seed(0)
    plan = upd.plan_minibatches(16, updates=2, micro_batch_size=2)
    assert any(len({tuple(prompts[i]) for i in micro}) > 1 for mb in plan for micro in mb)  # mixed prompts

    seen = []

    def pi(batches):
        for batch in batches:
            lengths = (batch.positions[:, 0] + 1).tolist()
            seen.append({tuple(batch.input_ids[row, :n].tolist()) for row, n in enumerate(lengths)})
        return batched_logprobs(policy, batches, torch.device("cpu"), temperature=1.2)

    minibatches = upd.micro_batches(plan, prompts, responses, torch.zeros(16), 0, pi, pi)

    assert len(seen) == 2 * 8 and all(len(prompts_in_batch) <= 1 for prompts_in_batch in seen)
    own = functools.partial(batched_logprobs, policy, device=torch.device("cpu"), temperature=1.2)
    for minibatch in minibatches:
        for micro in minibatch:
            (expected,) = own([micro.batch])
            on = micro.batch.mask > 0
            assert int(on.sum()) > 0
            torch.testing.assert_close(micro.ref_logp[on], expected[on], rtol=0, atol=1e-5)
            torch.testing.assert_close(micro.old_logp[on], expected[on], rtol=0, atol=1e-5)
            assert (micro.ref_logp[~on] == 0).all()
