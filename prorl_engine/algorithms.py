"""The recipe's math as pure functions of tensors (PRORL_SPEC.md sections 4-9 and 7b, 11).

Shapes: N groups (prompts), G samples per group, M sequences in a (mini)batch, T response tokens.
`mask` is 1.0 on response tokens and 0.0 on padding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

# --- advantages (section 6) ----------------------------------------------------------------------


def reinforce_pp_baseline_advantages(rewards: torch.Tensor, lengths: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """REINFORCE++-baseline (ProRL v2).

        R~_i = R_i - mean_{j in group(i)} R_j
        A_i  = (R~_i - mu) / (sigma + eps)

    mu and sigma are the mean and (population) standard deviation of R~ over all response tokens
    of the batch: each response weighs as many times as it has tokens, as in the public v2
    implementations, which whiten the per-token advantages. rewards, lengths: (N, G) -> (N, G).
    """
    centered = rewards - rewards.mean(dim=1, keepdim=True)  # (N, G): group baseline removes offsets
    weights = lengths.to(rewards.dtype)
    mu = (centered * weights).sum() / weights.sum()
    sigma = (((centered - mu) ** 2 * weights).sum() / weights.sum()).sqrt()
    return (centered - mu) / (sigma + eps)


def grpo_advantages(rewards: torch.Tensor, lengths: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """GRPO (for comparison): A_i = (R_i - mean_group R) / (std_group R + eps), unbiased std.

    rewards: (N, G) -> (N, G). `lengths` is taken for the estimators' common signature and not
    used: every response weighs once, whatever its length.
    """
    return (rewards - rewards.mean(dim=1, keepdim=True)) / (rewards.std(dim=1, keepdim=True) + eps)


AdvantageEstimator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(rewards (N, G), response lengths (N, G)) -> advantages (N, G), one A_i per response."""

ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {
    "reinforce_pp_baseline": reinforce_pp_baseline_advantages,  # ProRL v2 (the default)
    "grpo": grpo_advantages,  # for comparison
}


# --- PPO-clip with clip-higher (section 7) --------------------------------------------------------


def ppo_clip_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, eps_low: float, eps_high: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token PPO-clip loss with asymmetric bounds (DAPO's clip-higher).

        r_t = exp(log pi_theta - log pi_old)
        L_t = -min(r_t A, clip(r_t, 1 - eps_low, 1 + eps_high) A)

    logp, old_logp: (M, T); advantages: (M, T) (the sequence's A on each of its tokens). old_logp
    must be finite (the sampled token is inside pi_old's nucleus); logp may be -inf where an update
    pushed the token out of pi_theta's nucleus: there r = 0 and the token gives no gradient.
    Returns the per-token loss (M, T) and per-token clip indicators (no grad): `clipped_low` where
    r < 1 - eps_low with A < 0 and `clipped_high` where r > 1 + eps_high with A > 0; exactly there
    the min picks the clipped term and the token's gradient is zero.
    """
    ratio = torch.exp(logp - old_logp)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    pg_loss = torch.maximum(pg_loss1, pg_loss2)
    with torch.no_grad():
        stats = {
            "clipped_low": ((ratio < 1.0 - eps_low) & (advantages < 0)).float(),
            "clipped_high": ((ratio > 1.0 + eps_high) & (advantages > 0)).float(),
        }
    return pg_loss, stats


@dataclass(frozen=True)
class BatchSize:
    """The response tokens and sequences of a whole minibatch: the normalisers its micro-batches share,
    so that their losses, accumulated, sum to the minibatch's loss."""

    tokens: float
    sequences: float


def aggregate_token_mean(values: torch.Tensor, mask: torch.Tensor, whole: BatchSize | None = None) -> torch.Tensor:
    """Token-mean over the whole batch (the default aggregation).

        L = sum_{i, t} mask_it * values_it / sum_{i, t} mask_it

    values, mask: (M, T) -> scalar. `whole`: the denominator is the whole minibatch's token count
    (gradient-accumulation micro-batches); without it, this batch's own count.
    """
    return (values * mask).sum() / (whole.tokens if whole is not None else mask.sum().clamp(min=1))


def aggregate_seq_mean_token_mean(
    values: torch.Tensor, mask: torch.Tensor, whole: BatchSize | None = None
) -> torch.Tensor:
    """Sequence-mean of each sequence's token mean (the option).

        L = (1 / M) sum_i [ sum_t mask_it * values_it / sum_t mask_it ]

    values, mask: (M, T) -> scalar. `whole`: M is the whole minibatch's sequence count; without it,
    this batch's own.
    """
    per_seq = (values * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return per_seq.sum() / (whole.sequences if whole is not None else values.shape[0])


LossAggregation = Callable[[torch.Tensor, torch.Tensor, BatchSize | None], torch.Tensor]
"""(per-token loss (M, T), mask (M, T), the whole minibatch's size) -> the scalar loss."""

LOSS_AGGREGATIONS: dict[str, LossAggregation] = {
    "token_mean": aggregate_token_mean,  # the default
    "seq_mean_token_mean": aggregate_seq_mean_token_mean,  # the option
}


# --- KL to the reference (section 8) ---------------------------------------------------------------

LOG_RATIO_CLAMP = 10.0


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = log pi_theta - log pi_ref (unbiased, high variance; Schulman's "Approximating KL")."""
    return -_clamped_log_ratio(logp, ref_logp)


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k2 = 0.5 * (-log x)^2 with x = exp(clamp(log pi_ref - log pi_theta, -10, 10)) (ProRL v2)."""
    return 0.5 * _clamped_log_ratio(logp, ref_logp) ** 2


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = exp(q) - q - 1, q = log pi_ref - log pi_theta (unbiased, low variance, always >= 0)."""
    q = _clamped_log_ratio(logp, ref_logp)
    return torch.exp(q) - q - 1


KL_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def _clamped_log_ratio(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """q = clamp(log pi_ref - log pi_theta, -10, 10); the gradient flows through pi_theta.

    With top_p < 1 a log-prob is -inf for a token outside that policy's nucleus. Outside one
    nucleus only, q sits at the clamp (+-10, no gradient); outside both, the two policies agree that
    the token is impossible and q = 0 (not -inf - -inf = nan).
    """
    both_outside = torch.isneginf(logp) & torch.isneginf(ref_logp)
    q = torch.where(both_outside, torch.zeros_like(logp), ref_logp - logp)
    return torch.clamp(q, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


# --- the sampling distribution: temperature and nucleus (sections 2, 7b) ---------------------------


def nucleus_logits(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus (top-p) truncation: the logits of the renormalised nucleus, what the sampler draws from.

    The nucleus is the smallest set of most probable tokens whose probabilities sum to at least
    top_p (never empty); every other token gets -inf, so softmax of the result renormalises the
    kept ones. The rule and its tie-breaking are Hugging Face's TopPLogitsWarper (sort ascending,
    drop the tokens whose cumulative probability is <= 1 - top_p), which `generate` applies after
    dividing by the temperature: pass tempered logits. top_p >= 1 returns `logits` unchanged.

    The mask is chosen without grad; the kept logits keep theirs (masked_fill sends no gradient to
    the dropped ones). logits: (..., V) -> (..., V). Cost: a sort of the logits and its int64
    indices, about three times the logits' memory, only when top_p < 1.
    """
    if top_p >= 1.0:
        return logits
    with torch.no_grad():
        sorted_logits, sorted_indices = torch.sort(logits, dim=-1)  # ascending, (..., V)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        sorted_drop = cumulative <= 1.0 - top_p
        sorted_drop[..., -1] = False  # the most probable token stays
        drop = sorted_drop.scatter(-1, sorted_indices, sorted_drop)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H = -sum_v p_v log p_v per position. logits: (M, T, V) -> (M, T)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    return -(p * logp.masked_fill(p == 0, 0.0)).sum(dim=-1)  # 0 log 0 = 0 for masked (-inf) logits


# --- rollout correction: when another engine sampled the responses (section 7b) ------------------


def icepop(
    old_logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor, low: float, high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """ICE-POP, as NeMo-RL's and OpenRLHF's ProRL v2 configs apply it:

        w_t  = exp(log pi_old_trainer(a_t|s_t) - log pi_rollout(a_t|s_t))   # no gradient through w
        keep = low <= w_t <= high                                           # outside: the token leaves the loss

    Returns (w, keep), (M, T) each: `keep` is 1.0 on response tokens inside the bounds and 0.0
    elsewhere (padding included); `w` is w_t where kept and 0.0 elsewhere, so `w * L_PPO_t` is the
    corrected per-token loss and `keep` the new mask (the loss's token count drops with it).
    """
    with torch.no_grad():
        w = torch.exp(old_logp - rollout_logp).masked_fill(mask == 0, 0.0)
        keep = ((w >= low) & (w <= high) & (mask > 0)).to(mask.dtype)
    return w * keep, keep


# --- scheduled cosine length penalty (section 4) --------------------------------------------------


def cosine_eta(t: torch.Tensor | float, T: int, eta_min: float, eta_max: float) -> torch.Tensor:
    """eta(t) = eta_min + 0.5 (eta_max - eta_min) (1 + cos(pi t / T)); eta(0) = eta_max, eta(T) = eta_min."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return eta_min + 0.5 * (eta_max - eta_min) * (1 + torch.cos(math.pi * t.clamp(0, T) / T))


def length_penalty(lengths: torch.Tensor, T: int, eta_min: float, eta_max: float, lambda_len: float) -> torch.Tensor:
    """The term added to the reward: lambda_len * eta(t), t = response length in tokens."""
    return lambda_len * cosine_eta(lengths, T, eta_min, eta_max)


def length_penalty_on(step: int, on_steps: int, off_steps: int, start: int = 0) -> bool:
    """Whether the penalty applies at (1-based) `step`: on for on_steps, then off for off_steps, cycling,
    with the first on-window beginning at step start + 1."""
    if step <= start or on_steps <= 0:
        return False
    return (step - start - 1) % (on_steps + off_steps) < on_steps


def length_penalty_windows(steps: int, on_steps: int, off_steps: int, start: int = 0) -> list[tuple[int, int]]:
    """The inclusive (first, last) step ranges within 1..steps where the penalty is on."""
    windows = []
    if on_steps <= 0:
        return windows
    first = start + 1
    while first <= steps:
        windows.append((first, min(first + on_steps - 1, steps)))
        first += on_steps + off_steps
    return windows


# --- dynamic sampling (section 5) ------------------------------------------------------------------


def groups_with_signal(rewards: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """Keep-mask of the groups whose rewards spread: max(R) - min(R) > tol. (N, G) -> (N,) bool.

    A range test, not a mean test: a constant group of continuous rewards (all 0.5) is dropped.
    The range is taken in float64: float32 rounding moves groups near tol across it, so callers
    build `rewards` in float64 (casting a float32 tensor here cannot bring the lost digits back).
    """
    rewards = rewards.to(torch.float64)
    return (rewards.max(dim=1).values - rewards.min(dim=1).values) > tol


# --- pass@k (section 11) ---------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k = 1 - C(n - c, k) / C(n, k), as a stable product (Chen et al. 2021).

    C(n-c, k) / C(n, k) = prod_{i = n-c+1}^{n} (1 - k / i).
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """pass@k averaged over prompts; counts holds (n, c) per prompt."""
    if not counts:
        raise ValueError("pass@k needs at least one prompt")
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)
