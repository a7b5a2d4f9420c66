"""The recipe's pure math (PRORL_SPEC.md sections 4-8, 11) against hand numbers and independent references."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest
import torch

from prorl_engine import algorithms as alg
from prorl_engine import schedule
from prorl_engine import update as upd
from prorl_engine.config import RunConfig
from prorl_engine.rollout import PackedBatch
from prorl_engine.update import MicroBatch

# --- section 6: REINFORCE++-baseline and GRPO -----------------------------------------------------

# Two prompts, three samples each, responses of unequal lengths (tokens).
REWARDS = torch.tensor([[1.0, 0.0, -0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
LENGTHS = torch.tensor([[2, 1, 3], [1, 2, 1]])


def token_weighted_reference(rewards: list[list[float]], lengths: list[list[int]]) -> list[list[float]]:
    """An independent REINFORCE++-baseline: centre in the group, repeat R~ once per token, whiten over tokens."""
    centred = [[r - statistics.fmean(group) for r in group] for group in rewards]
    tokens = [c for cs, ls in zip(centred, lengths) for c, n in zip(cs, ls) for _ in range(n)]
    mu, sigma = statistics.fmean(tokens), statistics.pstdev(tokens)
    return [[(c - mu) / (sigma + 1e-8) for c in cs] for cs in centred]


def test_reinforce_pp_baseline_matches_the_hand_computation():
    # Centred: [5/6, -1/6, -2/3], [-1/3, -1/3, 2/3]; 10 tokens; mu = -1/12;
    # R~ - mu = [11, -1, -7], [-3, -3, 9] / 12; sigma^2 = (2*121 + 1 + 3*49 + 9 + 2*9 + 81) / 144 / 10.
    sigma = math.sqrt(498 / 144 / 10)
    expected = torch.tensor([[11, -1, -7], [-3, -3, 9]], dtype=torch.float64) / 12 / (sigma + 1e-8)

    advantages = alg.reinforce_pp_baseline_advantages(REWARDS, LENGTHS)

    torch.testing.assert_close(advantages, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        advantages,
        torch.tensor(token_weighted_reference(REWARDS.tolist(), LENGTHS.tolist()), dtype=torch.float64),
        rtol=1e-12,
        atol=1e-12,
    )


def test_reinforce_pp_baseline_whitening_is_token_weighted_not_sequence_weighted():
    advantages = alg.reinforce_pp_baseline_advantages(REWARDS, LENGTHS)
    weights = LENGTHS.double()
    # Token-weighted mean 0 and token-weighted population std 1 ...
    assert float((advantages * weights).sum() / weights.sum()) == pytest.approx(0.0, abs=1e-12)
    assert float(((advantages**2) * weights).sum() / weights.sum()) == pytest.approx(1.0, abs=1e-6)  # sigma + 1e-8
    # ... while the plain mean over sequences is not 0 when lengths differ.
    assert float(advantages.mean()) != pytest.approx(0.0, abs=1e-3)


def test_reinforce_pp_baseline_on_a_random_batch_matches_the_reference():
    generator = torch.Generator().manual_seed(0)
    rewards = torch.rand(5, 4, generator=generator, dtype=torch.float64)
    lengths = torch.randint(1, 40, (5, 4), generator=generator)
    expected = torch.tensor(token_weighted_reference(rewards.tolist(), lengths.tolist()), dtype=torch.float64)
    torch.testing.assert_close(alg.reinforce_pp_baseline_advantages(rewards, lengths), expected)


@pytest.mark.parametrize("offset", [1.0, -0.5, 7.25])
def test_reinforce_pp_baseline_ignores_a_constant_added_to_every_reward(offset):
    base = alg.reinforce_pp_baseline_advantages(REWARDS, LENGTHS)
    torch.testing.assert_close(alg.reinforce_pp_baseline_advantages(REWARDS + offset, LENGTHS), base)


def test_reinforce_pp_baseline_ignores_a_different_offset_in_each_group():
    shifted = REWARDS + torch.tensor([[3.0], [-2.0]], dtype=torch.float64)
    torch.testing.assert_close(
        alg.reinforce_pp_baseline_advantages(shifted, LENGTHS), alg.reinforce_pp_baseline_advantages(REWARDS, LENGTHS)
    )


def test_binary_schemes_0_1_and_minus1_1_train_the_same_but_the_format_penalty_breaks_the_equivalence():
    """The spec's "0/1/-0.5 or -1/1/-0.5 train the same" holds exactly for offsets (and, through the
    whitening, for one global scale): 0/1 -> -1/1 is R -> 2R - 1, so binary batches agree. Mapping a
    wrong answer 0 -> -1 while the format penalty stays -0.5 is not an offset, so batches with format
    failures get different advantages."""
    binary = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(
        alg.reinforce_pp_baseline_advantages(2 * binary - 1, LENGTHS),
        alg.reinforce_pp_baseline_advantages(binary, LENGTHS),
        rtol=1e-6,
        atol=1e-6,
    )  # eps 1e-8 vs sigma

    with_format_fail = REWARDS  # [1, 0, -0.5], [0, 0, 1]
    minus_one_scheme = torch.where(with_format_fail == 0.0, -1.0, with_format_fail)
    assert not torch.allclose(
        alg.reinforce_pp_baseline_advantages(minus_one_scheme, LENGTHS),
        alg.reinforce_pp_baseline_advantages(with_format_fail, LENGTHS),
    )


def test_reinforce_pp_baseline_gives_zero_to_a_group_without_spread_when_the_batch_is_centred():
    rewards = torch.tensor([[0.5, 0.5], [1.0, 0.0]], dtype=torch.float64)
    lengths = torch.tensor([[3, 3], [2, 2]])
    advantages = alg.reinforce_pp_baseline_advantages(rewards, lengths)
    # Centred [0, 0], [0.5, -0.5]; mu = 0; sigma^2 = (2*0.25 + 2*0.25) / 10 = 0.1.
    expected = torch.tensor([[0.0, 0.0], [0.5, -0.5]], dtype=torch.float64) / (math.sqrt(0.1) + 1e-8)
    torch.testing.assert_close(advantages, expected)


def test_grpo_divides_by_the_groups_unbiased_std():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 0.0, -0.5, -0.5], [0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)
    # Group 1: mean 0.5, unbiased std sqrt(4 * 0.25 / 3). Group 2: mean 0, deviations [1, 0, -0.5, -0.5],
    # unbiased std sqrt(1.5 / 3). Group 3: no spread, so 0 / (0 + eps) = 0.
    std1, std2 = math.sqrt(1 / 3), math.sqrt(0.5)
    expected = torch.tensor(
        [
            [0.5 / (std1 + 1e-6), -0.5 / (std1 + 1e-6), -0.5 / (std1 + 1e-6), 0.5 / (std1 + 1e-6)],
            [1 / (std2 + 1e-6), 0.0, -0.5 / (std2 + 1e-6), -0.5 / (std2 + 1e-6)],
            [0.0, 0.0, 0.0, 0.0],
        ],
        dtype=torch.float64,
    )
    advantages = alg.grpo_advantages(rewards)
    torch.testing.assert_close(advantages, expected, rtol=1e-12, atol=1e-12)
    assert advantages[0, 0].item() == pytest.approx(0.8660254, abs=1e-5)  # sqrt(3) / 2, up to eps


def test_the_advantage_estimators_are_looked_up_by_the_names_the_config_accepts():
    """Both take (rewards, lengths): GRPO ignores the lengths, REINFORCE++-baseline weighs by them."""
    from prorl_engine import config

    assert tuple(alg.ADVANTAGE_ESTIMATORS) == config.ADVANTAGE_ESTIMATORS
    torch.testing.assert_close(
        alg.ADVANTAGE_ESTIMATORS["reinforce_pp_baseline"](REWARDS, LENGTHS),
        alg.reinforce_pp_baseline_advantages(REWARDS, LENGTHS),
    )
    rewards = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    for lengths in (torch.tensor([[1, 1]]), torch.tensor([[1, 99]])):  # std of (1, 0) is sqrt(0.5)
        torch.testing.assert_close(
            alg.ADVANTAGE_ESTIMATORS["grpo"](rewards, lengths),
            torch.tensor([[0.5, -0.5]], dtype=torch.float64) / (math.sqrt(0.5) + 1e-6),
        )


# --- section 7: PPO-clip with clip-higher ----------------------------------------------------------

EPS_LOW, EPS_HIGH = 0.2, 0.28
#          clipped high, clipped low, inside, inside, high r but A < 0, low r but A > 0
RATIOS = [1.5, 0.5, 1.1, 0.9, 1.5, 0.5]
ADVS = [1.0, -1.0, 1.0, -1.0, -1.0, 1.0]


def ppo_inputs(ratios, advantages):
    old_logp = torch.full((1, len(ratios)), -1.3, dtype=torch.float64)
    logp = (old_logp + torch.log(torch.tensor([ratios], dtype=torch.float64))).requires_grad_(True)
    return logp, old_logp, torch.tensor([advantages], dtype=torch.float64)


def test_ppo_clip_loss_on_hand_numbers():
    logp, old_logp, advantages = ppo_inputs(RATIOS, ADVS)
    loss, stats = alg.ppo_clip_loss(logp, old_logp, advantages, EPS_LOW, EPS_HIGH)
    # -min(rA, clip(r)A): -1.28 | -min(-0.5, -0.8) = 0.8 | -1.1 | 0.9 | -min(-1.5, -1.28) = 1.5 | -min(0.5, 0.8) = -0.5
    torch.testing.assert_close(loss.detach(), torch.tensor([[-1.28, 0.8, -1.1, 0.9, 1.5, -0.5]], dtype=torch.float64))
    assert stats["clipped_high"].tolist() == [[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    assert stats["clipped_low"].tolist() == [[0.0, 1.0, 0.0, 0.0, 0.0, 0.0]]


def test_ppo_clip_gradient_is_exactly_zero_where_the_clip_acts_and_minus_r_a_elsewhere():
    logp, old_logp, advantages = ppo_inputs(RATIOS, ADVS)
    loss, _ = alg.ppo_clip_loss(logp, old_logp, advantages, EPS_LOW, EPS_HIGH)
    (grad,) = torch.autograd.grad(loss.sum(), logp)
    # d(-rA)/dlogp = -rA on unclipped tokens.
    torch.testing.assert_close(grad, torch.tensor([[0.0, 0.0, -1.1, 0.9, 1.5, -0.5]], dtype=torch.float64))
    assert grad[0, 0].item() == 0.0 and grad[0, 1].item() == 0.0


def test_ppo_clip_gradient_vanishes_exactly_on_the_clip_indicators_for_random_tokens():
    generator = torch.Generator().manual_seed(1)
    old_logp = -torch.rand(8, 50, generator=generator, dtype=torch.float64) * 3
    logp = (old_logp + (torch.rand(8, 50, generator=generator, dtype=torch.float64) - 0.5)).requires_grad_(True)
    advantages = torch.randn(8, 50, generator=generator, dtype=torch.float64)
    loss, stats = alg.ppo_clip_loss(logp, old_logp, advantages, EPS_LOW, EPS_HIGH)
    (grad,) = torch.autograd.grad(loss.sum(), logp)

    ratio = torch.exp(logp.detach() - old_logp)
    high = (ratio > 1 + EPS_HIGH) & (advantages > 0)
    low = (ratio < 1 - EPS_LOW) & (advantages < 0)
    assert high.any() and low.any() and (~(high | low)).any()
    assert torch.equal(stats["clipped_high"].bool(), high) and torch.equal(stats["clipped_low"].bool(), low)
    assert torch.all(grad[high | low] == 0)
    assert torch.all(grad[~(high | low)] != 0)
    torch.testing.assert_close(grad[~(high | low)], (-ratio * advantages)[~(high | low)])


def test_ppo_clip_with_policy_equal_to_old_is_plain_policy_gradient():
    """With one update per batch r = 1: the loss is -A and nothing is clipped (why the config wants >= 2)."""
    advantages = torch.tensor([[0.7, -1.2, 0.0]])
    logp = torch.tensor([[-0.5, -2.0, -1.0]])
    loss, stats = alg.ppo_clip_loss(logp, logp.clone(), advantages, EPS_LOW, EPS_HIGH)
    torch.testing.assert_close(loss, -advantages)
    assert stats["clipped_low"].sum() == 0 and stats["clipped_high"].sum() == 0


def test_clip_fractions_are_token_means_of_the_indicators_over_the_mask():
    logp, old_logp, advantages = ppo_inputs(RATIOS, ADVS)
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    _, stats = alg.ppo_clip_loss(logp, old_logp, advantages, EPS_LOW, EPS_HIGH)
    assert alg.aggregate_token_mean(stats["clipped_high"], mask).item() == pytest.approx(1 / 5)
    assert alg.aggregate_token_mean(stats["clipped_low"], mask).item() == pytest.approx(1 / 5)


VALUES = torch.tensor(
    [[1.0, 2.0, 3.0, 100.0], [4.0, 100.0, 100.0, 100.0], [2.0, 2.0, 100.0, 100.0], [0.0, 6.0, 3.0, 3.0]],
    dtype=torch.float64,
)
MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float64)


def test_token_mean_and_seq_mean_token_mean_on_hand_numbers():
    # Padding (100) never counts. Tokens: 1+2+3 + 4 + 2+2 + 0+6+3+3 = 26 over 10 tokens.
    assert alg.aggregate_token_mean(VALUES, MASK).item() == pytest.approx(2.6)
    # Sequence means 2, 4, 2, 3 -> 11 / 4.
    assert alg.aggregate_seq_mean_token_mean(VALUES, MASK).item() == pytest.approx(2.75)


def test_micro_batch_losses_sum_to_the_whole_batch_loss_with_whole_batch_normalisers():
    values = VALUES.clone().requires_grad_(True)
    whole_token = alg.aggregate_token_mean(values, MASK)
    whole_seq = alg.aggregate_seq_mean_token_mean(values, MASK)
    whole = alg.BatchSize(tokens=MASK.sum().item(), sequences=MASK.shape[0])

    micro_token = sum(alg.aggregate_token_mean(values[i : i + 2], MASK[i : i + 2], whole) for i in (0, 2))
    micro_seq = sum(alg.aggregate_seq_mean_token_mean(values[i : i + 2], MASK[i : i + 2], whole) for i in (0, 2))
    assert micro_token.item() == pytest.approx(whole_token.item(), abs=1e-12)
    assert micro_seq.item() == pytest.approx(whole_seq.item(), abs=1e-12)
    # Gradients accumulate to the same as well.
    (g_whole,) = torch.autograd.grad(whole_token, values)
    (g_micro,) = torch.autograd.grad(micro_token, values)
    torch.testing.assert_close(g_micro, g_whole)

    # Each micro-batch normalised by its own count would weigh tokens differently: (6+4)/4 and (4+12)/6.
    naive = sum(alg.aggregate_token_mean(VALUES[i : i + 2], MASK[i : i + 2]) for i in (0, 2)) / 2
    assert naive.item() == pytest.approx((10 / 4 + 16 / 6) / 2)
    assert naive.item() != pytest.approx(2.6)


def test_the_loss_aggregations_are_looked_up_by_the_names_the_config_accepts():
    from prorl_engine import config

    assert tuple(alg.LOSS_AGGREGATIONS) == config.LOSS_AGGREGATIONS
    whole = alg.BatchSize(tokens=10.0, sequences=4)
    assert alg.LOSS_AGGREGATIONS["token_mean"](VALUES, MASK, whole).item() == pytest.approx(2.6)
    assert alg.LOSS_AGGREGATIONS["seq_mean_token_mean"](VALUES, MASK, whole).item() == pytest.approx(2.75)


# --- section 8: KL estimators -----------------------------------------------------------------------


def test_kl_estimators_on_hand_numbers():
    logp = torch.tensor([-1.0, -2.0, -0.7], dtype=torch.float64)
    ref_logp = torch.tensor([-1.5, -1.7, -0.7], dtype=torch.float64)
    q = [-0.5, 0.3, 0.0]  # log pi_ref - log pi_theta
    torch.testing.assert_close(alg.kl_k1(logp, ref_logp), torch.tensor([0.5, -0.3, 0.0], dtype=torch.float64))
    torch.testing.assert_close(alg.kl_k2(logp, ref_logp), torch.tensor([0.125, 0.045, 0.0], dtype=torch.float64))
    torch.testing.assert_close(
        alg.kl_k3(logp, ref_logp), torch.tensor([math.exp(x) - x - 1 for x in q], dtype=torch.float64)
    )
    assert alg.kl_k3(logp, ref_logp)[0].item() == pytest.approx(0.1065307, abs=1e-7)
    assert alg.KL_ESTIMATORS == {"k1": alg.kl_k1, "k2": alg.kl_k2, "k3": alg.kl_k3}


def test_k2_is_zero_with_zero_gradient_when_the_policies_agree():
    logp = torch.tensor([[-0.3, -2.5, -7.0]], requires_grad=True)
    kl = alg.kl_k2(logp, logp.detach().clone())
    assert torch.equal(kl, torch.zeros_like(kl))
    (grad,) = torch.autograd.grad(kl.sum(), logp)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_k2_gradient_flows_through_the_current_policy():
    logp = torch.tensor([-1.0, -2.0], dtype=torch.float64, requires_grad=True)
    ref_logp = torch.tensor([-1.5, -1.7], dtype=torch.float64)
    (grad,) = torch.autograd.grad(alg.kl_k2(logp, ref_logp).sum(), logp)
    # d/dlogp 0.5 (ref - logp)^2 = logp - ref
    torch.testing.assert_close(grad, torch.tensor([0.5, -0.3], dtype=torch.float64))


def test_the_log_ratio_is_clamped_at_plus_minus_10_before_squaring():
    logp = torch.tensor([-60.0, -1.0, -1.0], dtype=torch.float64, requires_grad=True)
    ref_logp = torch.tensor([-10.0, -51.0, -1.0 + 10.0], dtype=torch.float64)  # q = 50, -50, 10
    k2 = alg.kl_k2(logp, ref_logp)
    torch.testing.assert_close(k2, torch.tensor([50.0, 50.0, 50.0], dtype=torch.float64))  # 0.5 * 10^2
    torch.testing.assert_close(alg.kl_k1(logp, ref_logp), torch.tensor([-10.0, 10.0, -10.0], dtype=torch.float64))
    torch.testing.assert_close(
        alg.kl_k3(logp, ref_logp),
        torch.tensor([math.exp(10) - 11, math.exp(-10) + 9, math.exp(10) - 11], dtype=torch.float64),
    )
    assert torch.isfinite(alg.kl_k3(logp, ref_logp)).all()
    # Past the clamp the estimator is constant in logp, so no gradient reaches it there.
    (grad,) = torch.autograd.grad(k2[:2].sum(), logp)
    assert grad[:2].tolist() == [0.0, 0.0]


def test_a_token_outside_both_nuclei_has_zero_log_ratio_not_nan():
    """With top_p < 1 a log-prob is -inf outside that policy's nucleus (-inf - -inf would be nan)."""
    inf = float("inf")
    logp = torch.tensor([-inf, -inf, -1.0], dtype=torch.float64, requires_grad=True)
    ref_logp = torch.tensor([-inf, -2.0, -inf], dtype=torch.float64)
    for estimator in (alg.kl_k1, alg.kl_k2, alg.kl_k3):
        kl = estimator(logp, ref_logp)
        assert torch.isfinite(kl).all(), estimator
        assert kl[0].item() == 0.0  # both policies give the token probability 0: they agree
    # outside one nucleus only: the log-ratio sits at the clamp, q = +10 and -10, so k2 = 50
    torch.testing.assert_close(alg.kl_k2(logp, ref_logp)[1:], torch.tensor([50.0, 50.0], dtype=torch.float64))
    (grad,) = torch.autograd.grad(alg.kl_k2(logp, ref_logp).sum(), logp)
    assert grad.tolist() == [0.0, 0.0, 0.0]


def test_ppo_clip_on_a_token_pushed_out_of_the_policys_nucleus_is_finite_with_zero_gradient():
    """logp = -inf: r = 0, so A > 0 gives min(0, 0.8 A) = 0 and A < 0 gives the clipped -0.8 A."""
    logp = torch.tensor([[-float("inf"), -float("inf")]], dtype=torch.float64, requires_grad=True)
    old_logp = torch.tensor([[-1.0, -1.0]], dtype=torch.float64)
    advantages = torch.tensor([[2.0, -2.0]], dtype=torch.float64)
    loss, stats = alg.ppo_clip_loss(logp, old_logp, advantages, EPS_LOW, EPS_HIGH)
    assert loss.tolist() == [[0.0, pytest.approx(1.6)]]
    assert stats["clipped_low"].tolist() == [[0.0, 1.0]]
    (grad,) = torch.autograd.grad(loss.sum(), logp)
    assert grad.tolist() == [[0.0, 0.0]]


def test_k3_is_never_negative():
    generator = torch.Generator().manual_seed(2)
    logp = -torch.rand(1000, generator=generator, dtype=torch.float64) * 30
    ref_logp = -torch.rand(1000, generator=generator, dtype=torch.float64) * 30
    assert (alg.kl_k3(logp, ref_logp) >= 0).all()
    assert (alg.kl_k2(logp, ref_logp) >= 0).all()


def test_entropy_from_logits_on_hand_numbers():
    logits = torch.tensor([[[0.0] * 8, [0.0, math.log(3.0)] + [-float("inf")] * 6]], requires_grad=True)
    entropy = alg.entropy_from_logits(logits)
    (grad,) = torch.autograd.grad(entropy.sum(), logits)
    assert torch.isfinite(grad).all()  # masked (-inf) logits: 0 log 0 = 0, no NaN
    assert entropy.shape == (1, 2)
    assert entropy[0, 0].item() == pytest.approx(math.log(8), abs=1e-6)
    # p = [1/4, 3/4]
    assert entropy[0, 1].item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), abs=1e-6)


# --- sections 2, 7b: the nucleus the sampler draws from ------------------------------------------------


def test_the_nucleus_on_hand_numbers():
    """p = 0.5, 0.3, 0.15, 0.05. Cumulative from the least likely: 0.05, 0.2, 0.5, 1.0; tokens whose
    cumulative mass is <= 1 - top_p leave. top_p 0.7 keeps {0.5, 0.3} -> 0.625, 0.375; top_p 0.9
    keeps three -> p / 0.95; top_p 0.1 keeps the most likely alone; top_p 1 keeps everything."""
    probs = torch.tensor([0.3, 0.05, 0.5, 0.15], dtype=torch.float64)  # not sorted: order must not matter
    logits = probs.log() + 2.0  # any offset: softmax is the same
    inf = float("inf")
    cases = {
        0.7: [math.log(0.375), -inf, math.log(0.625), -inf],
        0.9: [math.log(0.3 / 0.95), -inf, math.log(0.5 / 0.95), math.log(0.15 / 0.95)],
        0.1: [-inf, -inf, 0.0, -inf],
        1.0: probs.log().tolist(),
    }
    for top_p, expected in cases.items():
        logp = torch.log_softmax(alg.nucleus_logits(logits, top_p), dim=-1)
        torch.testing.assert_close(logp, torch.tensor(expected, dtype=torch.float64), msg=f"top_p={top_p}")


def test_the_nucleus_equals_hugging_faces_top_p_warper_on_tempered_random_logits():
    """The sampler (`generate`) applies TopPLogitsWarper to logits / tau: the same cut, token for token."""
    from transformers.generation.logits_process import TopPLogitsWarper

    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 7, 50, generator=generator) * 3 / 1.2  # (M, T, V), tempered
    for top_p in (0.3, 0.8, 0.95, 0.99):
        ours = alg.nucleus_logits(logits, top_p)
        theirs = TopPLogitsWarper(top_p)(None, logits.reshape(-1, 50)).reshape(3, 7, 50)
        assert torch.equal(ours, theirs), top_p
        kept = torch.isfinite(ours).sum(dim=-1)
        assert (kept >= 1).all() and (kept < 50).any()  # the cut acts, and never empties a row


def test_the_nucleus_passes_gradient_to_the_kept_logits_only():
    """d log q_a / d z_j = [j = a] - q_j over the kept j (q the renormalised nucleus), 0 for the dropped."""
    logits = torch.tensor([0.3, 0.05, 0.5, 0.15], dtype=torch.float64).log().requires_grad_(True)
    logq = torch.log_softmax(alg.nucleus_logits(logits, 0.7), dim=-1)
    (grad,) = torch.autograd.grad(logq[0], logits)  # token 0 (p = 0.3) is kept, q = 0.375
    torch.testing.assert_close(grad, torch.tensor([1 - 0.375, 0.0, -0.625, 0.0], dtype=torch.float64))


# --- section 4: cosine length penalty and its on/off schedule ---------------------------------------


# --- rollout correction: ICE-POP (section 7b) ------------------------------------------------------
def test_icepop_on_hand_numbers():
    # pi_old / pi_rollout per token: 1.0, 0.4 (below 0.5), 9.0 (above 5), 2.0, and padding
    old = torch.log(torch.tensor([[0.5, 0.2, 0.9, 0.4, 0.3]]))
    rollout = torch.log(torch.tensor([[0.5, 0.5, 0.1, 0.2, 0.9]]))
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    weights, keep = alg.icepop(old, rollout, mask, low=0.5, high=5.0)
    torch.testing.assert_close(keep, torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0]]))
    torch.testing.assert_close(weights, torch.tensor([[1.0, 0.0, 0.0, 2.0, 0.0]]))


def test_icepop_bounds_are_inclusive_and_send_no_gradient():
    old = torch.log(torch.tensor([[0.25, 0.5, 1.0]])).requires_grad_()
    rollout = torch.log(torch.tensor([[0.5, 0.1, 1.0]]))  # w = 0.5, 5.0, 1.0: all on or inside the bounds
    weights, keep = alg.icepop(old, rollout, torch.ones(1, 3), low=0.5, high=5.0)
    torch.testing.assert_close(keep, torch.ones(1, 3))
    torch.testing.assert_close(weights, torch.tensor([[0.5, 5.0, 1.0]]))
    assert not weights.requires_grad


def packed_for(mask: torch.Tensor) -> PackedBatch:
    """A packed batch with this response mask (the correction reads only the mask)."""
    rows, width = mask.shape
    ids = torch.zeros(rows, width + 1, dtype=torch.long)
    return PackedBatch(
        ids, torch.ones_like(ids), torch.zeros(rows, width, dtype=torch.long), mask, torch.zeros_like(ids)
    )


def test_the_rollout_correction_masks_weighs_and_reports_on_hand_numbers():
    """Two responses of 2 and 3 tokens; pi_old / pi_rollout = 1, 0.25 | 2, 1, 8: ICE-POP over [0.5, 5]
    drops 2 of the 5 tokens; |log diff| and k3 (of KL(pi_rollout || pi_old): r - 1 - log r) by hand."""
    ratios = torch.tensor([[1.0, 0.25, 1.0], [2.0, 1.0, 8.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    rollout_logp = torch.full((2, 3), math.log(0.1))
    old_logp = (rollout_logp + ratios.log()) * mask
    rollout_logp = rollout_logp * mask
    batch = PackedBatch(
        torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 4), torch.zeros(2, 3), mask, torch.zeros(2, 3)
    )
    micro = MicroBatch(batch, old_logp, old_logp.clone(), torch.tensor([1.0, -1.0]), rollout_logp)
    config = RunConfig(rollout_backend="vllm")

    metrics = upd.correct_for_rollout_engine([[micro]], config)

    kept_ratios = [1.0, 0.25, 2.0, 1.0, 8.0]
    assert metrics["rollout/logprob_abs_diff"] == pytest.approx(sum(abs(math.log(r)) for r in kept_ratios) / 5)
    assert metrics["rollout/mismatch_k3"] == pytest.approx(sum(r - 1 - math.log(r) for r in kept_ratios) / 5)
    assert metrics["rollout/masked_frac"] == pytest.approx(2 / 5)
    torch.testing.assert_close(micro.batch.mask, torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
    torch.testing.assert_close(micro.weights, torch.tensor([[1.0, 0.0, 0.0], [2.0, 1.0, 0.0]]))

    # the loss: w_t * L_PPO_t on the kept tokens, token mean over the 3 kept (theta = old: L_PPO_t = -A)
    scalar, _ = upd.loss(micro, old_logp, torch.zeros(2, 3), config, alg.BatchSize(tokens=3.0, sequences=2.0))
    assert float(scalar) == pytest.approx((1.0 * -1.0 + 2.0 * 1.0 + 1.0 * 1.0) / 3)


def test_without_correction_the_mismatch_is_reported_and_nothing_is_masked():
    mask = torch.ones(1, 2)
    batch = PackedBatch(
        torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3), torch.zeros(1, 2), mask, torch.zeros(1, 2)
    )
    old = torch.log(torch.tensor([[0.5, 0.9]]))
    micro = MicroBatch(batch, old, old, torch.tensor([1.0]), torch.log(torch.tensor([[0.05, 0.9]])))
    metrics = upd.correct_for_rollout_engine([[micro]], RunConfig(rollout_backend="vllm", rollout_correction="none"))
    assert metrics["rollout/logprob_abs_diff"] == pytest.approx(math.log(10) / 2)
    assert metrics["rollout/masked_frac"] == 0.0
    assert micro.weights is None and torch.equal(micro.batch.mask, mask)
    assert upd.correct_for_rollout_engine([[MicroBatch(batch, old, old, torch.tensor([1.0]))]], RunConfig()) == {}


def test_auto_correction_is_icepop_for_vllm_and_none_for_hf():
    assert RunConfig(rollout_backend="vllm").correction == "icepop"
    assert RunConfig(rollout_backend="hf").correction == "none"
    assert RunConfig(rollout_backend="vllm", rollout_correction="none").correction == "none"


def test_eta_runs_from_eta_max_at_zero_to_eta_min_at_the_context_limit():
    T, eta_min, eta_max = 100, -1.0, 0.0
    assert alg.cosine_eta(0, T, eta_min, eta_max).item() == pytest.approx(eta_max)
    assert alg.cosine_eta(T, T, eta_min, eta_max).item() == pytest.approx(eta_min)
    assert alg.cosine_eta(T / 2, T, eta_min, eta_max).item() == pytest.approx((eta_min + eta_max) / 2)
    assert alg.cosine_eta(0, 64, -0.3, 0.9).item() == pytest.approx(0.9)
    assert alg.cosine_eta(64, 64, -0.3, 0.9).item() == pytest.approx(-0.3)
    assert alg.cosine_eta(32, 64, -0.3, 0.9).item() == pytest.approx(0.3)
    etas = alg.cosine_eta(torch.arange(0, 101), T, eta_min, eta_max)
    assert torch.all(etas[1:] <= etas[:-1])  # never rises with length


def test_length_penalty_on_hand_numbers():
    lengths = torch.tensor([0, 25, 50, 100])
    # lambda * (eta_min + 0.5 (eta_max - eta_min)(1 + cos(pi t / T))) with eta_min = -1, eta_max = 0
    expected = [0.0, 0.1 * (-1 + 0.5 * (1 + math.cos(math.pi / 4))), -0.05, -0.1]
    torch.testing.assert_close(
        alg.length_penalty(lengths, 100, -1.0, 0.0, 0.1), torch.tensor(expected, dtype=torch.float64)
    )
    assert alg.length_penalty(lengths, 100, -1.0, 0.0, 0.1)[1].item() == pytest.approx(-0.0146447, abs=1e-7)


def test_length_penalty_is_on_exactly_in_the_configured_windows():
    # on = 2, off = 3, start = 1: step 1 is before the start,
    # then on 2-3, off 4-6, on 7-8, off 9-11, on 12-13, off 14-15.
    on_steps = {step for step in range(1, 16) if alg.length_penalty_on(step, on_steps=2, off_steps=3, start=1)}
    assert on_steps == {2, 3, 7, 8, 12, 13}
    assert alg.length_penalty_windows(15, on_steps=2, off_steps=3, start=1) == [(2, 3), (7, 8), (12, 13)]
    assert alg.length_penalty_windows(12, on_steps=2, off_steps=3, start=1) == [(2, 3), (7, 8), (12, 12)]
    assert [alg.length_penalty_on(s, 100, 500) for s in (1, 100, 101, 600, 601, 700, 701)] == [
        True,
        True,
        False,
        False,
        True,
        True,
        False,
    ]


def test_windows_agree_with_the_on_function_for_random_schedules():
    rng = random.Random(3)
    for _ in range(300):
        steps, on, off, start = rng.randint(1, 40), rng.randint(0, 6), rng.randint(0, 6), rng.randint(0, 8)
        from_windows = {
            s for first, last in alg.length_penalty_windows(steps, on, off, start) for s in range(first, last + 1)
        }
        from_on = {s for s in range(1, steps + 1) if alg.length_penalty_on(s, on, off, start)}
        assert from_windows == from_on, (steps, on, off, start)
        assert all(first <= last for first, last in alg.length_penalty_windows(steps, on, off, start))


def test_schedule_preview_follows_the_config():
    config = RunConfig(model_path="unused", steps=15, on_steps=2, off_steps=3, length_penalty_start=1)
    assert schedule.length_penalty_windows(config) == [(2, 3), (7, 8), (12, 13)]
    assert [s for s in range(1, 16) if schedule.length_penalty_on(config, s)] == [2, 3, 7, 8, 12, 13]
    off = RunConfig(model_path="unused", steps=15, on_steps=2, off_steps=3, length_penalty=False)
    assert schedule.length_penalty_windows(off) == []
    assert not any(schedule.length_penalty_on(off, s) for s in range(1, 16))


# --- section 5: dynamic sampling ---------------------------------------------------------------------


def test_dynamic_sampling_drops_groups_without_spread_and_keeps_the_rest():
    rewards = torch.tensor(
        [
            [0.5, 0.5, 0.5, 0.5],  # constant continuous rewards: no signal (a mean test would keep it)
            [0.3, 0.3 + 1e-9, 0.3 - 1e-9, 0.3],  # float noise below tol
            [0.0, 1.0, 0.0, 0.0],  # binary with a success
            [1.0, 1.0, 1.0, 1.0],  # all correct
            [0.0, 0.0, 0.0, 0.0],  # all wrong
            [-0.5, -0.5, 0.0, -0.5],  # format failures versus a wrong answer still differ
            [0.2, 0.2, 0.2, 0.2 + 1e-5],  # a small but real spread (above tol)
        ],
        dtype=torch.float64,
    )
    keep = alg.groups_with_signal(rewards, tol=1e-6)
    assert keep.tolist() == [False, False, True, False, False, True, True]
    assert alg.groups_with_signal(rewards, tol=1e-4).tolist() == [False, False, True, False, False, True, False]


def test_dynamic_sampling_puts_groups_near_tol_on_the_side_their_float64_spread_says():
    """Spreads 1.001e-6 (above tol) and 0.99e-6 (below); in float32 they round to 9.83e-7 and
    1.013e-6, and both groups would land on the wrong side."""
    rewards = torch.tensor([[0.3, 0.3 + 1.001e-6], [0.7, 0.7 + 0.99e-6]], dtype=torch.float64)
    assert alg.groups_with_signal(rewards, tol=1e-6).tolist() == [True, False]
    assert alg.groups_with_signal(rewards.float(), tol=1e-6).tolist() == [False, True]  # what float32 did


# --- section 11: pass@k ------------------------------------------------------------------------------


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in subset) for subset in subsets) / len(subsets)


def test_pass_at_k_equals_brute_force_enumeration_for_small_n():
    for n in range(1, 9):
        for c in range(0, n + 1):
            for k in range(1, n + 1):
                assert alg.pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_on_hand_numbers_and_large_n():
    assert alg.pass_at_k(16, 0, 4) == 0.0
    assert alg.pass_at_k(16, 16, 1) == 1.0
    assert alg.pass_at_k(16, 4, 1) == pytest.approx(0.25)
    assert alg.pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    # 256 samples (the boundary study) stays finite and matches exact integer arithmetic.
    assert alg.pass_at_k(256, 3, 64) == pytest.approx(1 - math.comb(253, 64) / math.comb(256, 64), rel=1e-12)
    assert alg.mean_pass_at_k([(4, 1), (4, 0), (4, 4)], 2) == pytest.approx((0.5 + 0.0 + 1.0) / 3)


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5), (0, 0, 1)])
def test_pass_at_k_refuses_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        alg.pass_at_k(n, c, k)


def test_mean_pass_at_k_refuses_an_empty_list():
    with pytest.raises(ValueError):
        alg.mean_pass_at_k([], 1)
