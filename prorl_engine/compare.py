"""Side-by-side evaluation of several checkpoints (or base models) on the same prompts.

Every model answers the same held-out prompts with the same sampling seed, so differences in
pass@k and in the completions come from the weights alone. The result is JSON-ready: the studio's
comparison page shows the metrics with their differences and the completions prompt by prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prorl_engine.data.example import Example
from prorl_engine.evaluation import EvalReport, evaluate_model_folders
from prorl_engine.novelty import NgramIndex


@dataclass
class Comparison:
    labels: list[str]
    reports: dict[str, EvalReport]
    prompts: dict[str, str]  # uid -> prompt text

    def metric_table(self) -> dict[str, dict[str, float]]:
        """metric -> {label: value, ...} with "delta" = last label - first label where both exist."""
        keys = sorted({k for r in self.reports.values() for k in r.metrics})
        table = {}
        for key in keys:
            row = {label: self.reports[label].metrics.get(key) for label in self.labels}
            first, last = row[self.labels[0]], row[self.labels[-1]]
            row["delta"] = last - first if first is not None and last is not None else None
            table[key] = row
        return table

    def by_prompt(self) -> list[dict]:
        """One entry per prompt: its text and, per label, that model's samples (response, reward, details)."""
        prompts: dict[str, dict] = {}
        for label in self.labels:
            for sample in self.reports[label].samples:
                entry = prompts.setdefault(
                    sample.uid,
                    {
                        "uid": sample.uid,
                        "prompt": self.prompts.get(sample.uid, ""),
                        "task": sample.task,
                        "domain": sample.domain,
                        "answers": {name: [] for name in self.labels},
                    },
                )
                entry["answers"][label].append(
                    {
                        "response": sample.response,
                        "reward": sample.reward,
                        "correct": sample.correct,
                        "length": sample.length,
                        "details": sample.details,
                    }
                )
        return list(prompts.values())

    def to_dict(self) -> dict:
        return {"labels": self.labels, "metrics": self.metric_table(), "prompts": self.by_prompt()}


def compare(
    models: dict[str, str | Path],
    examples: list[Example],
    *,
    n: int,
    ks: list[int],
    temperature: float = 0.6,
    top_p: float = 0.95,
    max_new_tokens: int = 1024,
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 64,
    format_penalty: float = -0.5,
    truncated_reward: float | None = 0.0,
    backend: str = "hf",
    novelty: NgramIndex | None = None,
) -> Comparison:
    """Evaluate each labelled model folder on `examples` (`evaluation.evaluate_model_folders`;
    `novelty`: the reference corpus's index, for novelty@n)."""
    reports = evaluate_model_folders(
        models,
        examples,
        n=n,
        ks=ks,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        format_penalty=format_penalty,
        truncated_reward=truncated_reward,
        seed=seed,
        device=device,
        batch_size=batch_size,
        backend=backend,
        novelty=novelty,
    )
    return Comparison(list(models), reports, {e.uid: e.prompt for e in examples})
