"""Items 1-5 of one RL step (PRORL_SPEC.md section 1): take B prompts, sample G responses each,
score them, shape by length, and keep the groups with reward spread (dynamic sampling, section 5),
generating further prompt batches until B groups are kept.

Shapes: B prompts per generation batch, G samples per prompt; a Rollout holds M = groups x G responses.
In a distributed run (prorl_engine/distributed.py) every rank draws the same B prompts and samples
its slice of them; which groups are kept, and when to stop refilling, is decided over all ranks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from prorl_engine import algorithms as alg
from prorl_engine.config import RunConfig
from prorl_engine.data.example import Example
from prorl_engine.distributed import SOLO, Group, owned, prompt_seed
from prorl_engine.events import Sample
from prorl_engine.prompts import decode_response, encode_prompt, format_prompt
from prorl_engine.rewards import Score, score_all
from prorl_engine.rollout import RolloutBackend, SamplingParams


@dataclass
class Rollout:
    """Groups of responses, flattened group by group: N groups x G samples = M sequences."""

    examples: list[Example] = field(default_factory=list)  # (M,) the prompt each response answers
    prompts: list[list[int]] = field(default_factory=list)  # (M,) prompt token ids
    responses: list[list[int]] = field(default_factory=list)  # (M,) response token ids
    scores: list[Score] = field(default_factory=list)  # (M,)
    shaped: list[float] = field(default_factory=list)  # (M,) rewards after length shaping
    # (M,) the rollout engine's log-prob of each response token; empty when the sampler is the policy itself
    rollout_logprobs: list[list[float]] = field(default_factory=list)

    # (M,) (generation batch, prompt index in it) of each response: its place in the step's global order
    origins: list[tuple[int, int]] = field(default_factory=list)

    FIELDS = ("examples", "prompts", "responses", "scores", "shaped", "rollout_logprobs", "origins")

    def extend(self, other: Rollout) -> None:
        for name in self.FIELDS:
            getattr(self, name).extend(getattr(other, name))

    def group(self, index: int, G: int) -> Rollout:
        """The G responses of group `index`."""
        s = slice(index * G, (index + 1) * G)
        return Rollout(*(getattr(self, name)[s] for name in self.FIELDS))

    def __len__(self) -> int:
        return len(self.responses)


@dataclass
class StepStats:
    """Everything generated in one step (kept or not): what the reward metrics describe."""

    all: Rollout = field(default_factory=Rollout)  # this rank's responses
    truncated: list[bool] = field(default_factory=list)  # (all,) hit max_response_tokens without stopping
    groups_generated: int = 0  # over all ranks, as the counts below
    groups_dropped: int = 0  # groups without reward spread (dynamic sampling)
    groups_kept: int = 0
    generation_batches: int = 0

    def reward_metrics(self, group: Group = SOLO) -> dict[str, float]:
        """reward/mean (shaped), reward/verifier_mean, reward/format_fail_frac, reward/<domain>,
        length/mean and length/truncated_frac over every response generated this step (on every rank)."""
        rows = [
            (example.domain, score.reward, shaped, float(not score.verdict.format_ok), len(response), float(cut))
            for example, score, shaped, response, cut in zip(
                self.all.examples, self.all.scores, self.all.shaped, self.all.responses, self.truncated
            )
        ]
        rows = [row for part in group.all_gather(rows) for row in part]
        domains, verifier, shaped, format_fail, lengths, truncated = zip(*rows) if rows else ((),) * 6
        by_domain: dict[str, list[float]] = {}
        for domain, reward in zip(domains, verifier):
            by_domain.setdefault(domain, []).append(reward)
        return {
            "reward/mean": _mean(shaped),
            "reward/verifier_mean": _mean(verifier),
            "reward/format_fail_frac": _mean(format_fail),
            "length/mean": _mean(lengths),
            "length/truncated_frac": _mean(truncated),
            **{f"reward/{domain}": _mean(values) for domain, values in sorted(by_domain.items())},
        }

    def samples(self, step: int, count: int, tokenizer) -> list[Sample]:
        """At most `count` of the step's responses, evenly strided over all generated, to log."""
        count = min(count, len(self.all))
        if not count:
            return []
        stride = max(1, len(self.all) // count)
        rows = []
        for i in range(0, stride * count, stride):
            example, score, response = self.all.examples[i], self.all.scores[i], self.all.responses[i]
            rows.append(
                Sample(
                    step=step,
                    prompt=example.prompt,
                    response=decode_response(tokenizer, response),
                    reward=self.all.shaped[i],
                    verifier_reward=score.reward,
                    task=example.task,
                    domain=example.domain,
                    length=len(response),
                    truncated=self.truncated[i],
                    details={"extracted": score.verdict.extracted, **score.verdict.details},
                )
            )
        return rows


Generate = Callable[[list[Example], list[int] | None], tuple[Rollout, list[bool]]]
"""Prompts (and one seed per prompt, or None) -> their G scored and shaped responses each, and which
of them were truncated."""


def collect(
    draw: Callable[[int], list[Example]],
    generate: Generate,
    config: RunConfig,
    group: Group = SOLO,
    step: int = 0,
) -> tuple[Rollout, StepStats]:
    """Generate batches of B = prompts_per_step prompts until B groups with reward spread are kept
    (or max_generation_batches is reached: then the step trains on what was kept). Without dynamic
    sampling, one batch, all kept. Returns this rank's kept groups (in prompt order) and the stats
    of everything generated. Across ranks: each samples its slice of the B prompts, and the first
    groups with spread in prompt order are kept, as one process would keep them."""
    G, wanted = config.samples_per_prompt, config.prompts_per_step
    kept, stats = Rollout(), StepStats()
    while stats.groups_kept < wanted:
        if config.max_generation_batches and stats.generation_batches >= config.max_generation_batches:
            break  # train on what was kept (logged as sampling/kept_groups)
        number, examples, mine = stats.generation_batches, draw(wanted), owned(wanted, group)
        seeds = [prompt_seed(config.seed, step, number, i) for i in mine] if group.seeds_per_prompt else None
        batch, truncated = generate([examples[i] for i in mine], seeds)
        batch.origins = [(number, mine.start + i // G) for i in range(len(batch))]
        stats.generation_batches += 1
        stats.groups_generated += wanted
        stats.all.extend(batch)
        stats.truncated.extend(truncated)
        rewards = filter_rewards(batch, config.filter_on, G)  # (this rank's prompts, G) float64
        signal = alg.groups_with_signal(rewards, config.filter_tol).tolist()
        keep = [flag or not config.dynamic_sampling for flag in signal]
        keep_all = [flag for part in group.all_gather(keep) for flag in part]  # (B,) in prompt order
        stats.groups_dropped += keep_all.count(False)
        chosen = [i for i, flag in enumerate(keep_all) if flag][: wanted - stats.groups_kept]
        stats.groups_kept += len(chosen)
        for i in chosen:
            if i in mine:
                kept.extend(batch.group(i - mine.start, G))
        if not config.dynamic_sampling:
            break
    return kept, stats


def generate(
    backend: RolloutBackend,
    tokenizer,
    examples: list[Example],
    config: RunConfig,
    penalty_on: bool,
    seeds: list[int] | None = None,
) -> tuple[Rollout, list[bool]]:
    """Sample G responses per prompt, score each with its domain's verifier, and shape the rewards
    with the length penalty when its schedule is on: R' = R + lambda_len * eta(t) (section 4)."""
    prompts = [encode_prompt(tokenizer, e.prompt) for e in examples]
    params = SamplingParams(config.samples_per_prompt, config.max_response_tokens, config.temperature, config.top_p)
    generations = backend.generate(prompts, params, seeds)  # grouped: G per prompt
    owners = [examples[g.prompt_index] for g in generations]
    texts = [decode_response(tokenizer, g.token_ids) for g in generations]
    truncated = [g.truncated for g in generations]
    scores = score_all(owners, texts, truncated, config.format_penalty, config.truncated_reward)
    rewards = torch.tensor([s.reward for s in scores], dtype=torch.float64)  # (B * G,)
    lengths = torch.tensor([len(g.token_ids) for g in generations])
    if penalty_on:
        bonus = alg.length_penalty(
            lengths, config.max_response_tokens, config.eta_min, config.eta_max, config.lambda_len
        )
        if config.penalize_correct_only:  # "correct" is Score.correct, the test pass@k counts
            bonus = bonus * torch.tensor([s.correct for s in scores])
        rewards = rewards + bonus
    batch = Rollout(
        owners,
        [prompts[g.prompt_index] for g in generations],
        [g.token_ids for g in generations],
        scores,
        rewards.tolist(),
        [g.logprobs for g in generations if g.logprobs is not None],
    )
    return batch, truncated


def check_prompt_lengths(tokenizer, examples: list[Example], max_prompt_tokens: int) -> None:
    """Refuse (ValueError on max_prompt_tokens, naming the longest prompt) a mix with any prompt longer
    than max_prompt_tokens once formatted; one batched tokenizer pass."""
    texts = [format_prompt(tokenizer, e.prompt) for e in examples]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    longest = max(range(len(examples)), key=lengths.__getitem__)
    if lengths[longest] > max_prompt_tokens:
        raise ValueError(
            f"max_prompt_tokens: prompt {examples[longest].uid} has {lengths[longest]} tokens "
            f"(> {max_prompt_tokens}); raise the limit or shorten the prompts"
        )


def filter_rewards(batch: Rollout, filter_on: str, G: int) -> torch.Tensor:
    """The rewards dynamic sampling tests for spread, (B, G) float64 (PRORL_SPEC.md section 5).

    filter_on="verifier": the verifier's reward after the format and truncation rules, before
    length shaping (an all-wrong group that differs only by length carries no correctness signal:
    NeMo-RL's fix #2431). filter_on="shaped": after length shaping, so groups whose only spread is
    length are kept. Float64, as the shaping computes them: float32 moves groups near tol across it.
    """
    values = [s.reward for s in batch.scores] if filter_on == "verifier" else batch.shaped
    return torch.tensor(values, dtype=torch.float64).view(-1, G)


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan
