"""Held-out evaluation: n samples per prompt, unbiased pass@k per task and domain (spec sections 2, 11).

A sample counts as correct when it earns full credit (reward 1 after the format and truncation
rules); continuous domains also report their mean reward. Sampling runs under a forked RNG seeded
from (seed, step), so evaluating never changes what the training run samples next.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field

import torch

from prorl_engine.algorithms import mean_pass_at_k
from prorl_engine.data.example import Example
from prorl_engine.modeling import decode_response, encode_prompt
from prorl_engine.rewards import score_all
from prorl_engine.rollout import RolloutBackend, SamplingParams


@dataclass
class EvalSample:
    uid: str
    task: str
    domain: str
    sample: int
    response: str
    reward: float
    correct: bool
    length: int
    truncated: bool
    details: dict = field(default_factory=dict)


@dataclass
class EvalReport:
    samples: list[EvalSample]
    metrics: dict[str, float]

    def rows(self) -> list[dict]:
        return [asdict(s) for s in self.samples]


def summarize(samples: list[EvalSample], ks: list[int]) -> dict[str, float]:
    """eval/<task>/pass@k, eval/<domain>/pass@k and eval/all/pass@k, plus mean reward and length."""
    by_prompt: dict[str, list[EvalSample]] = defaultdict(list)
    for s in samples:
        by_prompt[s.uid].append(s)
    groups: dict[str, list[list[EvalSample]]] = defaultdict(list)
    for prompt_samples in by_prompt.values():
        first = prompt_samples[0]
        for name in (first.task, first.domain, "all"):
            groups[name].append(prompt_samples)
    metrics = {}
    for name, prompts in sorted(groups.items()):
        counts = [(len(p), sum(s.correct for s in p)) for p in prompts]
        for k in ks:
            if all(n >= k for n, _ in counts):
                metrics[f"eval/{name}/pass@{k}"] = mean_pass_at_k(counts, k)
        flat = [s for p in prompts for s in p]
        metrics[f"eval/{name}/mean_reward"] = sum(s.reward for s in flat) / len(flat)
        metrics[f"eval/{name}/mean_length"] = sum(s.length for s in flat) / len(flat)
    return metrics


def evaluate(
    backend: RolloutBackend, tokenizer, examples: list[Example], *, n: int, ks: list[int], temperature: float,
    top_p: float, max_new_tokens: int, format_penalty: float, truncated_reward: float | None, seed: int,
) -> EvalReport:
    prompts = [encode_prompt(tokenizer, e.prompt) for e in examples]
    params = SamplingParams(n=n, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        torch.manual_seed(seed)  # seeds CUDA too
        generations = backend.generate(prompts, params)
    texts = [decode_response(tokenizer, g.token_ids) for g in generations]
    owners = [examples[g.prompt_index] for g in generations]
    scores = score_all(owners, texts, [g.truncated for g in generations], format_penalty, truncated_reward)
    samples = [
        EvalSample(uid=e.uid, task=e.task, domain=e.domain, sample=i % n, response=text, reward=s.reward,
                   correct=s.correct, length=len(g.token_ids), truncated=g.truncated, details=s.verdict.details)
        for i, (e, text, s, g) in enumerate(zip(owners, texts, scores, generations))
    ]
    return EvalReport(samples, summarize(samples, ks))
