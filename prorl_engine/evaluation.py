"""Held-out evaluation: n samples per prompt, unbiased pass@k per task and domain (spec sections 2, 11).

A sample counts as correct when it earns full credit (reward 1 after the format and truncation
rules); continuous domains also report their mean reward. Sampling runs under a forked RNG seeded
from (seed, step), so evaluating never changes what the training run samples next.

The one held-out selection (`held_out_examples`, `spread_across_tasks`) and the one way to
evaluate saved models (`evaluate_model_folders`) live here: the trainer, `prorl eval`, the
studio's comparison job and the demo model's build all use them.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from prorl_engine.algorithms import mean_pass_at_k
from prorl_engine.backends import make_backend
from prorl_engine.builders import resolve_model_path
from prorl_engine.config import DataSource
from prorl_engine.data.example import Example
from prorl_engine.data.sources import load_source
from prorl_engine.modeling import load_policy, load_tokenizer, pick_device
from prorl_engine.novelty import NgramIndex, pooled_shares
from prorl_engine.prompts import decode_response, encode_prompt
from prorl_engine.rewards import score_all
from prorl_engine.rollout import Generation, HFGenerateBackend, RolloutBackend, SamplingParams


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


def summarize(samples: list[EvalSample], ks: list[int], novelty: NgramIndex | None = None) -> dict[str, float]:
    """eval/<task>/pass@k, eval/<domain>/pass@k and eval/all/pass@k, plus mean reward and length;
    with a `novelty` index, eval/<scope>/novelty@n too (the share of the scope's response n-grams
    the reference corpus never holds, each response's n-grams counted once)."""
    metrics = {}
    ngrams = {id(s): novelty.counts(s.response) for s in samples} if novelty is not None else {}  # once each
    for name, prompts in sorted(_scopes(samples).items()):
        counts = [(len(p), sum(s.correct for s in p)) for p in prompts]
        for k in ks:
            if all(n >= k for n, _ in counts):
                metrics[f"eval/{name}/pass@{k}"] = mean_pass_at_k(counts, k)
        flat = [s for p in prompts for s in p]
        metrics[f"eval/{name}/mean_reward"] = sum(s.reward for s in flat) / len(flat)
        metrics[f"eval/{name}/mean_length"] = sum(s.length for s in flat) / len(flat)
        if ngrams:
            for n, share in pooled_shares(ngrams[id(s)] for s in flat).items():
                metrics[f"eval/{name}/novelty@{n}"] = share
    return metrics


def _scopes(samples: list[EvalSample]) -> dict[str, list[list[EvalSample]]]:
    """Each scope (a task, a domain, "all") -> the samples of each of its prompts."""
    by_prompt: dict[str, list[EvalSample]] = defaultdict(list)
    for s in samples:
        by_prompt[s.uid].append(s)
    groups: dict[str, list[list[EvalSample]]] = defaultdict(list)
    for prompt_samples in by_prompt.values():
        first = prompt_samples[0]
        for name in (first.task, first.domain, "all"):
            groups[name].append(prompt_samples)
    return groups


def evaluate(
    backend: RolloutBackend,
    tokenizer,
    examples: list[Example],
    *,
    n: int,
    ks: list[int],
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    format_penalty: float,
    truncated_reward: float | None,
    seed: int,
    progress: Callable[[int], None] | None = None,
    novelty: NgramIndex | None = None,
) -> EvalReport:
    """`progress`, if given, is called with the number of prompts of each batch once it is sampled
    (a progress bar's `update`); `novelty`, the reference corpus's index (`summarize`)."""
    prompts = [encode_prompt(tokenizer, e.prompt) for e in examples]
    params = SamplingParams(n=n, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        torch.manual_seed(seed)  # seeds CUDA too
        generations = _generate(backend, prompts, params, progress)
    texts = [decode_response(tokenizer, g.token_ids) for g in generations]
    owners = [examples[g.prompt_index] for g in generations]
    scores = score_all(owners, texts, [g.truncated for g in generations], format_penalty, truncated_reward)
    samples = [
        EvalSample(
            uid=e.uid,
            task=e.task,
            domain=e.domain,
            sample=i % n,
            response=text,
            reward=s.reward,
            correct=s.correct,
            length=len(g.token_ids),
            truncated=g.truncated,
            details=s.verdict.details,
        )
        for i, (e, text, s, g) in enumerate(zip(owners, texts, scores, generations))
    ]
    return EvalReport(samples, summarize(samples, ks, novelty))


def _generate(
    backend: RolloutBackend, prompts: list[list[int]], params: SamplingParams, progress: Callable[[int], None] | None
) -> list[Generation]:
    """`backend.generate(prompts, params)`, reporting to `progress` as batches finish. An
    HFGenerateBackend is called once per batch of its own size: the calls it would make itself, in
    the same order, so the samples are the same as in one call. Another backend (vLLM schedules
    every prompt at once, drawing its seeds once per call) is called once."""
    if progress is None:
        return backend.generate(prompts, params)
    per_call = max(1, backend.batch_size // params.n) if isinstance(backend, HFGenerateBackend) else len(prompts)
    generations = []
    for start in range(0, len(prompts), per_call):
        batch = prompts[start : start + per_call]
        generations.extend(replace(g, prompt_index=start + g.prompt_index) for g in backend.generate(batch, params))
        progress(len(batch))
    return generations


def spread_across_tasks(examples: Sequence[Example], count: int) -> list[Example]:
    """At most `count` of `examples`, taken evenly across their tasks: the first of each task (in the
    order tasks first appear), then the second of each, and so on."""
    by_task: dict[str, list[Example]] = {}
    for example in examples:
        by_task.setdefault(example.task, []).append(example)
    chosen, position = [], 0
    while len(chosen) < min(count, len(examples)):
        for items in by_task.values():
            if position < len(items) and len(chosen) < count:
                chosen.append(items[position])
        position += 1
    return chosen


def held_out_examples(sources: Sequence[DataSource], seed: int, count: int | None = None) -> list[Example]:
    """The held-out examples of a data mix, split as a run with this `seed` splits them (source i
    seeded seed + i, as `TrainingMix`): all of them, or at most `count` spread across the tasks."""
    examples = [example for index, source in enumerate(sources) for example in load_source(source, seed + index)[1]]
    return examples if count is None else spread_across_tasks(examples, count)


def evaluate_model_folders(
    models: Mapping[str, str | Path],
    examples: list[Example],
    *,
    n: int,
    ks: list[int],
    temperature: float = 0.6,
    top_p: float = 0.95,
    max_new_tokens: int = 1024,
    format_penalty: float = -0.5,
    truncated_reward: float | None = 0.0,
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 64,
    dtype: str = "float32",
    backend: str = "hf",
    progress: bool = False,
    novelty: NgramIndex | None = None,
) -> dict[str, EvalReport]:
    """label -> the report of that model on `examples`, every model with the same prompts and
    sampling seed, one model in memory at a time. A model is a `save_pretrained` folder (a
    checkpoint's works) or a `builder:folder` model path, built on first use. `backend`: hf or
    vllm (one vLLM engine serves every model of one architecture, its weights synced per model;
    its context is the longest prompt + max_new_tokens). `progress`: a progress bar per model over
    its prompts, on stderr. `novelty`: the reference corpus's index, for novelty@n (`summarize`)."""
    reports = {}
    for label, path in models.items():
        folder = resolve_model_path(str(path))
        tokenizer = load_tokenizer(folder)
        model = load_policy(folder, dtype, pick_device(device))
        sampler = make_backend(
            backend,
            model,
            tokenizer,
            folder,
            batch_size=batch_size,
            dtype=dtype,
            max_model_len=max(len(encode_prompt(tokenizer, e.prompt)) for e in examples) + max_new_tokens,
        )
        bar = _progress_bar(label, len(examples)) if progress else None
        reports[label] = evaluate(
            sampler,
            tokenizer,
            examples,
            n=n,
            ks=ks,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            format_penalty=format_penalty,
            truncated_reward=truncated_reward,
            seed=seed,
            progress=bar.update if bar else None,
            novelty=novelty,
        )
        if bar:
            bar.close()
        del model, sampler
    return reports


def _progress_bar(label: str, prompts: int):
    """A tqdm bar on stderr counting the prompts of one model's evaluation."""
    from tqdm import tqdm

    return tqdm(total=prompts, desc=f"eval {label}", unit="prompt", dynamic_ncols=True, file=sys.stderr)
