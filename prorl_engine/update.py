"""The policy update of one RL step (PRORL_SPEC.md section 1, items 6-7), as recipe parts.

    advantages      one A_i per kept response, by the configured estimator (algorithms.py)
    minibatch plan  which responses go in which of the `updates_per_step` updates and micro-batches
    micro-batches   packed sequences with pi_old and pi_ref taken before any update (no grad)
    correction      the rollout engine's log-probs against pi_old: mismatch metrics and ICE-POP
    loss            PPO-clip + beta * KL per token, aggregated by the configured rule
    diagnostics     token means of the step, each metric named once in DIAGNOSTICS

Shapes: M kept responses, m in a micro-batch, T response tokens of that micro-batch.

Across ranks (prorl_engine/distributed.py), each rank updates on the responses it sampled while the
recipe's statistics stay global: advantages are whitened over the tokens of all ranks, the
minibatch plan is drawn over all kept responses, the loss is normalised by the whole minibatch's
token count, and every rank runs as many micro-batches as the busiest one (FSDP's collectives need
every rank in every forward and backward pass; the extra ones carry no tokens). With one process,
all of this is what a single process always did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from prorl_engine import algorithms as alg
from prorl_engine.config import RunConfig
from prorl_engine.distributed import SOLO, Group
from prorl_engine.rollout import PackedBatch, pack, response_logprobs

Plan = list[list[list[int]]]
"""update -> micro-batch -> the indices of its responses among the step's kept ones."""


def advantages(estimator: str, shaped: Sequence[float], lengths: Sequence[int], G: int) -> torch.Tensor:
    """A_i of every kept response, (M,) float32, from its shaped reward; groups of G are consecutive."""
    rewards = torch.tensor(shaped, dtype=torch.float64).view(-1, G)  # (N, G)
    token_counts = torch.tensor(lengths).view(-1, G)  # (N, G)
    return alg.ADVANTAGE_ESTIMATORS[estimator](rewards, token_counts).flatten().float()


Owners = list[tuple[int, int]]
"""(rank, index among that rank's kept responses) of each response in the step's global order."""


def global_advantages(
    estimator: str,
    shaped: Sequence[float],
    lengths: Sequence[int],
    origins: Sequence[tuple[int, int]],
    G: int,
    group: Group = SOLO,
) -> tuple[torch.Tensor, Owners]:
    """A_i of this rank's kept responses, (M_local,), computed over the kept responses of every rank
    in their global order (generation batch, prompt index: the order one process keeps them in),
    and that order as owners. One process: `advantages` of its own responses, in its own order."""
    rows = [
        (origin, rank, index, reward, length)
        for rank, part in enumerate(group.all_gather(list(zip(origins, shaped, lengths))))
        for index, (origin, reward, length) in enumerate(part)
    ]
    rows.sort(key=lambda row: row[0])  # stable: a group's responses keep their order
    everyone = advantages(estimator, [row[3] for row in rows], [row[4] for row in rows], G)  # (M,)
    owners = [(rank, index) for _, rank, index, _, _ in rows]
    mine = torch.zeros(len(shaped))
    for position, (rank, index) in enumerate(owners):
        if rank == group.rank:
            mine[index] = everyone[position]
    return mine, owners


def plan_minibatches(
    M: int,
    updates: int,
    micro_batch_size: int,
    owners: Owners | None = None,
    rank: int = 0,
    lengths: Sequence[int] | None = None,
) -> Plan:
    """Deal a random permutation of the M responses round-robin into `updates` minibatches, and cut
    each into micro-batches of at most `micro_batch_size` (gradient accumulation). Minibatches left
    empty (M < updates) are not planned. Draws one torch.randperm from the global RNG.

    With `owners` (several ranks: M is the global count), each minibatch keeps `rank`'s own
    responses, as indices among its kept ones, and gets as many micro-batches as the rank with the
    most; the missing ones are empty lists (micro-batches without tokens).

    `lengths`: the sequence length (prompt + response) of each of this rank's responses. Each
    minibatch's responses are then cut in order of length, so a micro-batch holds sequences of
    similar lengths and pads less (length bucketing). The minibatches, and so their losses, stay
    the same: a micro-batch's loss is already normalised by its whole minibatch."""
    order = torch.randperm(M).tolist()
    minibatches = [order[i::updates] for i in range(updates) if order[i::updates]]
    if owners is None:
        return [_cut(minibatch, micro_batch_size, lengths) for minibatch in minibatches]
    plan = []
    for minibatch in minibatches:
        by_rank: dict[int, list[int]] = {}
        for position in minibatch:
            by_rank.setdefault(owners[position][0], []).append(owners[position][1])
        most = max(len(_cut(indices, micro_batch_size)) for indices in by_rank.values())
        mine = _cut(by_rank.get(rank, []), micro_batch_size, lengths)
        plan.append(mine + [[] for _ in range(most - len(mine))])
    return plan


def _cut(indices: list[int], size: int, lengths: Sequence[int] | None = None) -> list[list[int]]:
    if lengths is not None and len(indices) > size:  # one micro-batch pads the same in any order
        indices = sorted(indices, key=lengths.__getitem__)  # stable: equal lengths keep the dealt order
    return [indices[i : i + size] for i in range(0, len(indices), size)]


@dataclass
class MicroBatch:
    """Responses updated in one forward and backward pass, with what their loss needs."""

    batch: PackedBatch  # prompt + response ids (m, L); response targets and mask (m, T)
    old_logp: torch.Tensor  # (m, T) log pi_old, the rollout policy before this step's updates
    ref_logp: torch.Tensor  # (m, T) log pi_ref
    advantages: torch.Tensor  # (m,) A_i of each response
    rollout_logp: torch.Tensor | None = None  # (m, T) the rollout engine's log-probs, when it has its own
    weights: torch.Tensor | None = None  # (m, T) ICE-POP's w_t on kept tokens (None: no correction)
    empty: bool = False  # a stand-in without tokens: this rank has fewer micro-batches than another

    def to(self, device: torch.device) -> MicroBatch:
        optional = [t.to(device) if t is not None else None for t in (self.rollout_logp, self.weights)]
        return MicroBatch(
            self.batch.to(device),
            self.old_logp.to(device),
            self.ref_logp.to(device),
            self.advantages.to(device),
            *optional,
            self.empty,
        )


LogProbs = Callable[[list[PackedBatch]], list[torch.Tensor]]
"""Packed micro-batches -> log pi of their response tokens, (m, T) each, without grad."""


def micro_batches(
    plan: Plan,
    prompts: Sequence[list[int]],
    responses: Sequence[list[int]],
    advantages: torch.Tensor,
    pad_token_id: int,
    pi_old: LogProbs | None,
    pi_ref: LogProbs,
    rollout_logprobs: Sequence[list[float]] = (),
) -> list[list[MicroBatch]]:
    """Pack the plan's micro-batches and take pi_old and pi_ref on every response token, before any
    update; returned grouped as the plan groups them (one list per minibatch). `rollout_logprobs`:
    the rollout engine's log-probs of each response's tokens, when it has its own (else empty).
    `pi_old` None: the sampler was the trainer's own float32 model (backends.sampler_gives_pi_old),
    and its `rollout_logprobs` are pi_old itself, with no correction to make.

    The no-grad passes need no minibatch: they run over the same responses regrouped by prompt
    (`by_prompt`), as many micro-batches as the plan has (a sharded model's ranks run the same
    number of forward passes), so each prompt's tokens run once per pass rather than once per
    micro-batch that holds one of its responses (response_head.py shares a prompt inside a batch).
    A token's log-prob does not depend on its batch, but for float rounding."""

    def packed_for(idx: list[int]) -> PackedBatch:
        if not idx:  # an empty micro-batch: one padding token, masked out
            batch = pack([[pad_token_id]], [[pad_token_id]], pad_token_id)
            batch.mask.zero_()
            return batch
        return pack([prompts[i] for i in idx], [responses[i] for i in idx], pad_token_id)

    packed = [[packed_for(idx) for idx in minibatch] for minibatch in plan]
    flat = [batch for minibatch in packed for batch in minibatch]
    flat_idx = [idx for minibatch in plan for idx in minibatch]
    grouped_idx = by_prompt(flat_idx, prompts)
    grouped = [packed_for(idx) for idx in grouped_idx]

    def regrouped(logprobs: LogProbs) -> Iterator[torch.Tensor]:
        """`logprobs` of the prompt-grouped batches, laid out as the plan's micro-batches."""
        values = {}
        for idx, logp in zip(grouped_idx, logprobs(grouped), strict=True):
            for row, i in enumerate(idx):
                values[i] = logp[row, : len(responses[i])].tolist()
        return iter([_padded(b, [values[i] for i in idx]) for b, idx in zip(flat, flat_idx)])

    if pi_old is None:  # the sampler's log-probs are pi_old: no forward pass, and nothing to correct
        old = iter([_padded(b, [rollout_logprobs[i] for i in idx]) for b, idx in zip(flat, flat_idx)])
        engine_logprobs: Sequence[list[float]] = ()
    else:
        old = regrouped(pi_old)  # all of pi_old's forward passes, then all of pi_ref's
        engine_logprobs = rollout_logprobs
    ref = regrouped(pi_ref)

    def rollout_logp(batch: PackedBatch, idx: list[int]) -> torch.Tensor | None:
        if not engine_logprobs or not idx:
            return None
        return _padded(batch, [engine_logprobs[i] for i in idx])

    return [
        [
            _micro_batch(batch, next(old), next(ref), advantages[idx], rollout_logp(batch, idx))
            if idx
            else MicroBatch(batch, next(old), next(ref), torch.zeros(1), empty=True)
            for batch, idx in zip(batches, minibatch)
        ]
        for batches, minibatch in zip(packed, plan)
    ]


def by_prompt(micro_batches: list[list[int]], prompts: Sequence[list[int]]) -> list[list[int]]:
    """The responses of `micro_batches` (indices), as many micro-batches again, none larger than the
    largest of them, each response once, a prompt's responses side by side (prompts in the order
    they first appear); trailing ones may be empty."""
    indices = [i for idx in micro_batches for i in idx]
    first: dict[tuple[int, ...], int] = {}
    for i in indices:
        first.setdefault(tuple(prompts[i]), len(first))
    indices.sort(key=lambda i: first[tuple(prompts[i])])  # stable: a prompt's responses keep their order
    size = max(1, max((len(idx) for idx in micro_batches), default=1))
    return [indices[k * size : (k + 1) * size] for k in range(len(micro_batches))]


def _padded(batch: PackedBatch, values: list[list[float]]) -> torch.Tensor:
    """Per-token values of a micro-batch's responses, one list per response, as (m, T): 0.0 on padding."""
    padded = torch.zeros_like(batch.mask)
    for row, row_values in enumerate(values):
        padded[row, : len(row_values)] = torch.tensor(row_values)
    return padded


def _micro_batch(
    batch: PackedBatch,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    advantages: torch.Tensor,
    rollout_logp: torch.Tensor | None,
) -> MicroBatch:
    """A token pi_old gives probability 0 (-inf: float noise at the nucleus boundary, with top_p < 1)
    leaves the loss and its token count: its mask becomes 0 and its log pi_old 0."""
    outside = (batch.mask > 0) & torch.isneginf(old_logp)
    batch.mask = batch.mask.masked_fill(outside, 0.0)
    return MicroBatch(batch, old_logp.masked_fill(outside, 0.0), ref_logp, advantages, rollout_logp)


ROLLOUT_METRIC_KEYS = ("rollout/logprob_abs_diff", "rollout/mismatch_k3", "rollout/masked_frac")
"""What `correct_for_rollout_engine` returns: the mismatch over every response token before the
correction, and the fraction of them ICE-POP took out of the loss."""


def correct_for_rollout_engine(
    minibatches: list[list[MicroBatch]], config: RunConfig, group: Group = SOLO
) -> dict[str, float]:
    """Compare the rollout engine's log-probs with the trainer's pi_old and, with
    `rollout_correction` icepop, apply ICE-POP (PRORL_SPEC.md section 7b): tokens whose
    w = pi_old / pi_rollout lies outside [icepop_low, icepop_high] leave the loss and its token
    count; the rest weigh their L_PPO_t by w. Nothing to do (and no metrics) when the sampler was
    the policy itself. Metrics are token means over the step: mean |log pi_old - log pi_rollout|,
    k3 of pi_rollout from pi_old, and the masked fraction."""
    if config.rollout_backend == "hf":  # the sampler is the policy: w = 1
        return {}
    micros = [m for minibatch in minibatches for m in minibatch if m.rollout_logp is not None]
    tokens = abs_diff = k3 = masked = 0.0
    for micro in micros:
        mask = micro.batch.mask
        tokens += float(mask.sum())
        abs_diff += float(((micro.old_logp - micro.rollout_logp).abs() * mask).sum())
        k3 += float((alg.kl_k3(micro.rollout_logp, micro.old_logp) * mask).sum())  # k3 of KL(pi_rollout || pi_old)
        if config.correction == "icepop":
            micro.weights, keep = alg.icepop(
                micro.old_logp, micro.rollout_logp, mask, config.icepop_low, config.icepop_high
            )
            masked += float(mask.sum() - keep.sum())
            micro.batch.mask = keep
    tokens, abs_diff, k3, masked = group.sum([tokens, abs_diff, k3, masked])
    n = max(tokens, 1.0)
    return dict(zip(ROLLOUT_METRIC_KEYS, (abs_diff / n, k3 / n, masked / n)))


@dataclass
class TokenTerms:
    """Per-token quantities of one micro-batch's loss, (m, T) each: what the diagnostics read."""

    logp: torch.Tensor  # log pi_theta, with grad
    old_logp: torch.Tensor  # log pi_old
    ref_logp: torch.Tensor  # log pi_ref
    entropy: torch.Tensor  # H of pi_theta's sampling distribution
    pg_loss: torch.Tensor  # L_PPO_t
    kl: torch.Tensor  # the configured KL estimator
    clip: dict[str, torch.Tensor]  # clipped_low / clipped_high indicators


def loss(
    micro: MicroBatch, logp: torch.Tensor, entropy: torch.Tensor, config: RunConfig, whole: alg.BatchSize
) -> tuple[torch.Tensor, TokenTerms]:
    """L = aggregate(L_PPO_t + beta * KL_t) over the micro-batch, normalised by the whole minibatch.

    logp, entropy: (m, T) of pi_theta. Returns the scalar loss and its per-token terms.
    """
    A = micro.advantages.unsqueeze(1).expand_as(logp)  # (m, T): the same A_i on every token of response i
    pg_loss, clip = alg.ppo_clip_loss(logp, micro.old_logp, A, config.eps_low, config.eps_high)
    if micro.weights is not None:  # ICE-POP: w_t * L_PPO_t (w is 0 where the mask is)
        pg_loss = micro.weights * pg_loss
    kl = alg.KL_ESTIMATORS[config.kl_estimator](logp, micro.ref_logp)
    per_token = pg_loss + config.beta * kl
    scalar = alg.LOSS_AGGREGATIONS[config.loss_aggregation](per_token, micro.batch.mask, whole)
    return scalar, TokenTerms(logp, micro.old_logp, micro.ref_logp, entropy, pg_loss, kl, clip)


# Metric key -> its per-token value; the step logs each as a mean over all its response tokens.
DIAGNOSTICS: dict[str, Callable[[TokenTerms], torch.Tensor]] = {
    # k2 between the rollout policy and the reference: exactly 0 on the step after a reset
    "kl/ref": lambda t: alg.kl_k2(t.old_logp, t.ref_logp),
    "policy/entropy": lambda t: t.entropy,
    "policy/clip_frac_low": lambda t: t.clip["clipped_low"],
    "policy/clip_frac_high": lambda t: t.clip["clipped_high"],
    "policy/approx_kl_old": lambda t: alg.kl_k3(t.logp, t.old_logp),  # how far this update moved from pi_old
    "loss/policy": lambda t: t.pg_loss,
    "loss/kl": lambda t: t.kl,
}
METRIC_KEYS = (*DIAGNOSTICS, "policy/grad_norm")
"""Every key `update` returns; the step logs them as None when no group was kept."""


def update(
    policy: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    minibatches: list[list[MicroBatch]],
    config: RunConfig,
    device: torch.device,
    group: Group = SOLO,
) -> dict[str, float]:
    """One optimizer step per minibatch (gradients accumulated over its micro-batches, clipped to
    max_grad_norm), then the diagnostics: DIAGNOSTICS as token means over the step, and the mean
    gradient norm. Across ranks, the minibatch's size and the diagnostics are summed over all of
    them; FSDP averages the ranks' gradients, and each rank's loss is its share of the global
    mean, so the loss is scaled by the number of ranks to make that average their sum. (FSDP's
    own divide factor would need ReduceOp.PREMUL_SUM, which gloo lacks.) With `bf16_autocast` the
    policy's forward (and so its backward) pass runs in bfloat16 where autocast allows, on float32
    weights and optimizer state."""
    sums, tokens, grad_norms = dict.fromkeys(DIAGNOSTICS, 0.0), 0.0, []
    for minibatch in minibatches:
        size = [
            float(sum(m.batch.mask.sum() for m in minibatch)),
            float(sum(len(m.advantages) for m in minibatch if not m.empty)),
        ]
        whole = alg.BatchSize(*group.sum(size))
        optimizer.zero_grad(set_to_none=True)
        for micro in minibatch:
            micro = micro.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16_autocast):
                logp, entropy = response_logprobs(
                    policy, micro.batch, with_entropy=True, temperature=config.temperature, top_p=config.top_p
                )  # (m, T), float32 from the head's logits up, whatever the autocast
            scalar, terms = loss(micro, logp, entropy, config, whole)
            (scalar * group.world if group.world > 1 else scalar).backward()
            with torch.no_grad():
                mask = micro.batch.mask
                tokens += float(mask.sum())  # CPU-GPU sync, as every float() below
                for key, value in DIAGNOSTICS.items():
                    sums[key] += float((value(terms) * mask).sum())
        norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
        grad_norms.append(float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm))  # a DTensor when sharded
        optimizer.step()
    *diagnostics, tokens = group.sum([*sums.values(), tokens])
    n = max(tokens, 1.0)
    means = {key: total / n for key, total in zip(sums, diagnostics)}
    return {**means, "policy/grad_norm": sum(grad_norms) / len(grad_norms)}
