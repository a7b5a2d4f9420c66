"""The ProRL step loop (PRORL_SPEC.md section 1), reading top to bottom as the recipe.

    for each step:  commands -> rollout (+ dynamic sampling refill) -> rewards -> length shaping
                    -> filter -> advantages -> minibatch PPO updates with the KL term
                    -> maybe reset the reference -> maybe evaluate -> log -> maybe checkpoint

The Trainer reports through an EventSink and reads a ControlSource between steps. A run folder
with checkpoints is resumed from its latest one: same weights, reference, optimizer, RNG streams,
data position and reset history, so the resumed run continues as the uninterrupted one would.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from prorl_engine import algorithms as alg
from prorl_engine import checkpoint as ckpt
from prorl_engine.config import RunConfig
from prorl_engine.data.example import Example
from prorl_engine.data.sources import TrainingMix
from prorl_engine.evaluation import evaluate
from prorl_engine.events import Command, CommandKind, ControlSource, Event, EventSink, NoControl, Sample
from prorl_engine.modeling import decode_response, encode_prompt, format_prompt, load_policy, load_tokenizer, pick_device, resolve_model_path
from prorl_engine.reset import ResetPolicy
from prorl_engine.rewards import Score, score_all
from prorl_engine.rollout import HFGenerateBackend, PackedBatch, SamplingParams, batched_logprobs, pack, response_logprobs
from prorl_engine.schedule import length_penalty_on

log = logging.getLogger(__name__)
PAUSE_POLL_S = 0.5


@dataclass
class Rollout:
    """The kept groups of one step, flattened group by group: N groups x G samples = M sequences."""

    examples: list[Example] = field(default_factory=list)   # (M,) the prompt each response answers
    prompts: list[list[int]] = field(default_factory=list)  # (M,) prompt token ids
    responses: list[list[int]] = field(default_factory=list)  # (M,) response token ids
    scores: list[Score] = field(default_factory=list)        # (M,)
    shaped: list[float] = field(default_factory=list)        # (M,) rewards after length shaping

    def extend(self, other: Rollout) -> None:
        for name in ("examples", "prompts", "responses", "scores", "shaped"):
            getattr(self, name).extend(getattr(other, name))

    def __len__(self) -> int:
        return len(self.responses)


@dataclass
class StepStats:
    """Everything generated in one step (kept or not): what the reward metrics describe."""

    all: Rollout = field(default_factory=Rollout)
    truncated: list[bool] = field(default_factory=list)
    groups_generated: int = 0
    groups_dropped: int = 0  # groups without reward spread (dynamic sampling)
    generation_batches: int = 0


class Trainer:
    def __init__(self, config: RunConfig, run_dir: str | Path, sink: EventSink, control: ControlSource | None = None,
                 fork_from: str | Path | None = None):
        """`fork_from`: a checkpoint of another run to start from (weights, reference, optimizer, step,
        reset history), with this run's possibly edited config. Ignored once this run has its own checkpoint."""
        self.config = config
        self.fork_from = Path(fork_from) if fork_from else None
        self.run_dir = Path(run_dir)
        self.sink = sink
        self.control = control or NoControl()
        self.device = pick_device(config.device)
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        np.random.seed(config.seed)

        model_path = resolve_model_path(config.model_path)
        self.tokenizer = load_tokenizer(model_path)
        self.policy = load_policy(model_path, config.dtype, self.device)
        self.reference = load_policy(model_path, config.dtype, self.device).requires_grad_(False)
        self.optimizer = self._new_optimizer()
        self.backend = HFGenerateBackend(
            self.policy, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id, config.rollout_batch_size)
        self.mix = TrainingMix(config.data_sources, config.seed)
        self._check_prompt_lengths()
        self.reset_policy = ResetPolicy.from_config(config)
        self.reset_history: list[dict] = []
        self.step = 0
        self.paused = False

    def _new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.policy.parameters(), lr=self.config.learning_rate, weight_decay=self.config.weight_decay)

    def _check_prompt_lengths(self) -> None:
        """Refuse the run before it starts if any prompt exceeds max_prompt_tokens (one batched pass)."""
        examples = [e for stream in self.mix.streams for e in stream.examples] + self.mix.held_out
        texts = [format_prompt(self.tokenizer, e.prompt) for e in examples]
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        longest = max(range(len(examples)), key=lengths.__getitem__)
        if lengths[longest] > self.config.max_prompt_tokens:
            raise ValueError(f"max_prompt_tokens: prompt {examples[longest].uid} has {lengths[longest]} tokens "
                             f"(> {self.config.max_prompt_tokens}); raise the limit or shorten the prompts")

    # ------------------------------------------------------------------------------------------
    def train(self) -> str:
        """Run to the end (or until a stop command). Returns the final status."""
        latest = ckpt.latest(self.run_dir)
        if latest is not None:
            self._restore(latest)
            self.sink.rewind(self.step)
        elif self.fork_from is not None:
            self._restore(self.fork_from, fork=True)
            if self.step >= self.config.steps:
                raise ValueError(f"steps: the fork starts after step {self.step} of its parent; set steps above it")
        self._status("running", resumed_from=self.step if latest else None,
                     forked_from=str(self.fork_from) if self.fork_from and not latest else None)
        status = "finished"
        while self.step < self.config.steps:
            if self._apply_commands() == "stop":
                status = "stopped"
                break
            self.step += 1
            self._train_step()
            if self.step % self.config.checkpoint_every == 0 and self.step < self.config.steps:
                self.save_checkpoint()
        if status == "finished" or ckpt.latest_step(self.run_dir) != self.step:
            self.save_checkpoint()
        self._status(status)
        return status

    def _train_step(self) -> None:
        config, step = self.config, self.step
        penalty_on = length_penalty_on(config, step)
        if penalty_on != length_penalty_on(config, step - 1) or (step == 1 and penalty_on):
            self.sink.event(Event("length_penalty", step, {"on": penalty_on}))

        # 1-5. Rollout, rewards, length shaping and dynamic sampling (refill until B groups are kept)
        t0 = time.perf_counter()
        kept, stats = self._collect(penalty_on)
        rollout_s = time.perf_counter() - t0

        # 6-7. Advantages and minibatch updates (nothing to learn from if no group was kept)
        t1 = time.perf_counter()
        update = self._update(kept) if len(kept) else {}
        train_s = time.perf_counter() - t1

        # 8. Maybe reset the reference; maybe evaluate; log
        if "kl/ref" in update:
            self.reset_policy.observe_kl(update["kl/ref"])
        eval_metrics = self._maybe_evaluate()
        reason = self.reset_policy.reason_to_reset(step)
        if reason:
            self.reset_reference(reason)
        generated_tokens = sum(len(r) for r in stats.all.responses)
        metrics = {
            **self._reward_metrics(stats), **self._policy_metrics(update),
            "sampling/filtered_frac": stats.groups_dropped / stats.groups_generated,
            "sampling/generation_batches": stats.generation_batches,
            "sampling/kept_groups": len(kept) // config.samples_per_prompt,
            "schedule/length_penalty_on": float(penalty_on),
            "timing/rollout_s": rollout_s, "timing/train_s": train_s,
            "throughput/tokens_per_s": generated_tokens / max(rollout_s + train_s, 1e-9),
            **eval_metrics,
        }
        self.sink.metrics(step, metrics)
        self.sink.samples(step, self._samples(stats))

    # --- rollout -------------------------------------------------------------------------------
    def _collect(self, penalty_on: bool) -> tuple[Rollout, StepStats]:
        config = self.config
        kept, stats = Rollout(), StepStats()
        wanted = config.prompts_per_step
        while len(kept) < wanted * config.samples_per_prompt:
            if config.max_generation_batches and stats.generation_batches >= config.max_generation_batches:
                break  # train on what was kept (logged as sampling/kept_groups)
            batch, truncated = self._generate(self.mix.draw(wanted), penalty_on)
            stats.generation_batches += 1
            stats.groups_generated += wanted
            stats.all.extend(batch)
            stats.truncated.extend(truncated)
            rewards = filter_rewards(batch, config.filter_on, config.samples_per_prompt)  # (B, G) float64
            keep = alg.groups_with_signal(rewards, config.filter_tol) if config.dynamic_sampling else torch.ones(wanted, dtype=torch.bool)
            stats.groups_dropped += int((~keep).sum())
            room = wanted - len(kept) // config.samples_per_prompt
            for group in keep.nonzero().flatten().tolist()[:room]:
                kept.extend(_group_slice(batch, group, config.samples_per_prompt))
            if not config.dynamic_sampling:
                break
        return kept, stats

    def _generate(self, examples: list[Example], penalty_on: bool) -> tuple[Rollout, list[bool]]:
        config = self.config
        prompts = [encode_prompt(self.tokenizer, e.prompt) for e in examples]
        params = SamplingParams(config.samples_per_prompt, config.max_response_tokens, config.temperature, config.top_p)
        generations = self.backend.generate(prompts, params)  # grouped: G per prompt
        owners = [examples[g.prompt_index] for g in generations]
        texts = [decode_response(self.tokenizer, g.token_ids) for g in generations]
        truncated = [g.truncated for g in generations]
        scores = score_all(owners, texts, truncated, config.format_penalty, config.truncated_reward)
        rewards = torch.tensor([s.reward for s in scores], dtype=torch.float64)
        lengths = torch.tensor([len(g.token_ids) for g in generations])
        if penalty_on:  # R' = R + lambda_len * eta(t)
            bonus = alg.length_penalty(lengths, config.max_response_tokens, config.eta_min, config.eta_max, config.lambda_len)
            if config.penalize_correct_only:  # "correct" is Score.correct, the test pass@k counts
                bonus = bonus * torch.tensor([s.correct for s in scores])
            rewards = rewards + bonus
        batch = Rollout(owners, [prompts[g.prompt_index] for g in generations],
                        [g.token_ids for g in generations], scores, rewards.tolist())
        return batch, truncated

    # --- update --------------------------------------------------------------------------------
    def _update(self, kept: Rollout) -> dict[str, float]:
        config, device = self.config, self.device
        G = config.samples_per_prompt
        rewards = torch.tensor(kept.shaped, dtype=torch.float64).view(-1, G)                  # (N, G)
        lengths = torch.tensor([len(r) for r in kept.responses]).view(-1, G)                  # (N, G)
        if config.advantage_estimator == "grpo":
            advantages = alg.grpo_advantages(rewards)
        else:
            advantages = alg.reinforce_pp_baseline_advantages(rewards, lengths)
        advantages = advantages.flatten().float()                                             # (M,)

        M = len(kept)
        order = torch.randperm(M).tolist()
        minibatches = [order[i::config.updates_per_step] for i in range(config.updates_per_step)]
        micro = [[mb[i:i + config.micro_batch_size] for i in range(0, len(mb), config.micro_batch_size)]
                 for mb in minibatches if mb]
        packed = {tuple(idx): pack([kept.prompts[i] for i in idx], [kept.responses[i] for i in idx],
                                   self.tokenizer.pad_token_id) for mbs in micro for idx in mbs}
        # pi_old and pi_ref on every response token, before any update (no grad)
        batches = list(packed.values())
        old = dict(zip(packed, self._logprobs(self.policy, batches)))
        ref = dict(zip(packed, self._logprobs(self.reference, batches)))
        for key, sequences in packed.items():  # tokens pi_old gives probability 0 leave the loss and its count
            outside = (sequences.mask > 0) & torch.isneginf(old[key])
            sequences.mask = sequences.mask.masked_fill(outside, 0.0)
            old[key] = old[key].masked_fill(outside, 0.0)

        totals = {"entropy": 0.0, "clip_low": 0.0, "clip_high": 0.0, "approx_kl_old": 0.0, "kl_ref": 0.0, "tokens": 0.0,
                  "pg_loss": 0.0, "kl_loss": 0.0}
        grad_norms = []
        for microbatches in micro:
            mb_tokens = float(sum(packed[tuple(idx)].mask.sum() for idx in microbatches))
            mb_seqs = float(sum(len(idx) for idx in microbatches))
            self.optimizer.zero_grad(set_to_none=True)
            for idx in microbatches:
                key = tuple(idx)
                batch = packed[key].to(device)
                logp, entropy = response_logprobs(self.policy, batch, with_entropy=True,
                                                  temperature=config.temperature, top_p=config.top_p)  # (m, T)
                old_logp, ref_logp = old[key].to(device), ref[key].to(device)
                A = advantages[idx].to(device).unsqueeze(1).expand_as(logp)                        # same A on every token
                pg_loss, clip = alg.ppo_clip_loss(logp, old_logp, A, config.eps_low, config.eps_high)
                kl = alg.KL_ESTIMATORS[config.kl_estimator](logp, ref_logp)
                per_token = pg_loss + config.beta * kl
                if config.loss_aggregation == "token_mean":
                    loss = alg.aggregate_token_mean(per_token, batch.mask, total_tokens=mb_tokens)
                else:
                    loss = alg.aggregate_seq_mean_token_mean(per_token, batch.mask, total_seqs=mb_seqs)
                loss.backward()
                with torch.no_grad():
                    mask = batch.mask
                    totals["tokens"] += float(mask.sum())
                    totals["entropy"] += float((entropy * mask).sum())
                    totals["clip_low"] += float((clip["clipped_low"] * mask).sum())
                    totals["clip_high"] += float((clip["clipped_high"] * mask).sum())
                    totals["approx_kl_old"] += float((alg.kl_k3(logp, old_logp) * mask).sum())
                    totals["pg_loss"] += float((pg_loss * mask).sum())
                    totals["kl_loss"] += float((kl * mask).sum())
            grad_norms.append(float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), config.max_grad_norm)))
            self.optimizer.step()
        self.backend.sync_weights(self.policy)

        # kl/ref: k2 between the rollout policy (pi_old) and the reference, over the step's tokens.
        # Right after a reset pi_old == pi_ref, so the next step reports exactly 0.
        kl_ref = sum(float((alg.kl_k2(old[k], ref[k]) * packed[k].mask).sum()) for k in packed)
        n = max(totals["tokens"], 1.0)
        return {
            "kl/ref": kl_ref / n, "policy/entropy": totals["entropy"] / n,
            "policy/clip_frac_low": totals["clip_low"] / n, "policy/clip_frac_high": totals["clip_high"] / n,
            "policy/approx_kl_old": totals["approx_kl_old"] / n, "policy/grad_norm": sum(grad_norms) / len(grad_norms),
            "loss/policy": totals["pg_loss"] / n, "loss/kl": totals["kl_loss"] / n,
        }

    def _logprobs(self, model: torch.nn.Module, batches: list[PackedBatch]) -> list[torch.Tensor]:
        """log pi of every response token (no grad), of the distribution the rollouts were sampled
        from: softmax(logits / temperature), nucleus-truncated at top_p and renormalised (spec
        section 7b). With top_p < 1 a token outside `model`'s nucleus has -inf; the sampled token is
        inside the sampler's, so pi_old is finite but for float noise at the nucleus boundary (the
        sampler's cached forward and this one round differently): such tokens leave the loss."""
        return batched_logprobs(model, batches, self.device, self.config.temperature, self.config.top_p)

    # --- reference resets, evaluation, control ------------------------------------------------
    def reset_reference(self, reason: str, requested_by: str = "") -> None:
        """pi_ref <- pi_theta (spec section 9)."""
        self.reference.load_state_dict(self.policy.state_dict())
        if self.config.reset_optimizer:
            self.optimizer = self._new_optimizer()
        self.reset_policy.on_reset()
        record = {"step": self.step, "reason": reason, "requested_by": requested_by}
        self.reset_history.append(record)
        self.sink.event(Event("reset", self.step, {"reason": reason, "requested_by": requested_by}))

    def _maybe_evaluate(self) -> dict[str, float]:
        config = self.config
        if not config.eval_every or self.step % config.eval_every:
            return {}
        report = self.evaluate()
        pass1 = report.metrics.get("eval/all/pass@1")
        if pass1 is not None:
            self.reset_policy.observe_eval(pass1)
        self.sink.event(Event("eval", self.step, {"metrics": report.metrics}))
        return report.metrics

    def evaluate(self):
        config = self.config
        held_out = _spread(self.mix.held_out, config.eval_prompts)
        return evaluate(
            self.backend, self.tokenizer, held_out, n=config.eval_samples, ks=config.eval_k,
            temperature=config.eval_temperature, top_p=config.eval_top_p, max_new_tokens=config.max_response_tokens,
            format_penalty=config.format_penalty, truncated_reward=config.truncated_reward, seed=config.seed * 7919 + self.step,
        )

    def _apply_commands(self) -> str | None:
        """Apply the commands that arrived; while paused, wait here for resume or stop."""
        while True:
            for command in self.control.poll():
                if self._apply(command) == "stop":
                    return "stop"
            if not self.paused:
                return None
            time.sleep(PAUSE_POLL_S)

    def _apply(self, command: Command) -> str | None:
        who = command.requested_by
        self.sink.event(Event("command", self.step, {"kind": command.kind.value, "requested_by": who, "id": command.id}))
        if command.kind == CommandKind.RESET_REFERENCE:
            self.reset_reference("manual", requested_by=who)
        elif command.kind == CommandKind.SAVE_CHECKPOINT:
            self.save_checkpoint()
        elif command.kind == CommandKind.PAUSE and not self.paused:
            self.paused = True
            self._status("paused", requested_by=who)
        elif command.kind == CommandKind.RESUME and self.paused:
            self.paused = False
            self._status("running", requested_by=who)
        elif command.kind == CommandKind.STOP:
            return "stop"
        return None

    def _status(self, status: str, **data) -> None:
        self.sink.event(Event("status", self.step, {"status": status, **{k: v for k, v in data.items() if v is not None}}))

    # --- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        path = ckpt.save(self)
        self.sink.event(Event("checkpoint", self.step, {"path": str(path)}))
        for step, removed in ckpt.prune(self.run_dir, self.config.keep_checkpoints):
            self.sink.event(Event("checkpoint_removed", self.step, {"checkpoint_step": step, "path": str(removed)}))
        return path

    def _restore(self, path: Path, fork: bool = False) -> None:
        ckpt.load(self, path, fork=fork)
        self.backend.sync_weights(self.policy)

    # --- metrics -------------------------------------------------------------------------------
    def _reward_metrics(self, stats: StepStats) -> dict[str, float]:
        scores, lengths = stats.all.scores, [len(r) for r in stats.all.responses]
        metrics = {
            "reward/mean": _mean(stats.all.shaped),
            "reward/verifier_mean": _mean([s.reward for s in scores]),
            "reward/format_fail_frac": _mean([float(not s.verdict.format_ok) for s in scores]),
            "length/mean": _mean(lengths),
            "length/truncated_frac": _mean([float(t) for t in stats.truncated]),
            "policy/lr": self.optimizer.param_groups[0]["lr"],
        }
        by_domain: dict[str, list[float]] = {}
        for example, s in zip(stats.all.examples, scores):
            by_domain.setdefault(example.domain, []).append(s.reward)
        metrics.update({f"reward/{domain}": _mean(values) for domain, values in sorted(by_domain.items())})
        return metrics

    @staticmethod
    def _policy_metrics(update: dict[str, float]) -> dict[str, float | None]:
        keys = ("kl/ref", "policy/entropy", "policy/clip_frac_low", "policy/clip_frac_high", "policy/approx_kl_old",
                "policy/grad_norm", "loss/policy", "loss/kl")
        return {key: update.get(key) for key in keys}  # None when no group was kept (no update)

    def _samples(self, stats: StepStats) -> list[Sample]:
        count = min(self.config.samples_per_step_logged, len(stats.all))
        if not count:
            return []
        stride = max(1, len(stats.all) // count)
        rows = []
        for i in range(0, stride * count, stride):
            example, score = stats.all.examples[i], stats.all.scores[i]
            rows.append(Sample(
                step=self.step, prompt=example.prompt, response=decode_response(self.tokenizer, stats.all.responses[i]),
                reward=stats.all.shaped[i], verifier_reward=score.reward, task=example.task, domain=example.domain,
                length=len(stats.all.responses[i]), truncated=stats.truncated[i],
                details={"extracted": score.verdict.extracted, **score.verdict.details},
            ))
        return rows


def filter_rewards(batch: Rollout, filter_on: str, G: int) -> torch.Tensor:
    """The rewards dynamic sampling tests for spread, (B, G) float64 (PRORL_SPEC.md section 5).

    filter_on="verifier": the verifier's reward after the format and truncation rules, before
    length shaping (an all-wrong group that differs only by length carries no correctness signal:
    NeMo-RL's fix #2431). filter_on="shaped": after length shaping, so groups whose only spread is
    length are kept. Float64, as the shaping computes them: float32 moves groups near tol across it.
    """
    values = [s.reward for s in batch.scores] if filter_on == "verifier" else batch.shaped
    return torch.tensor(values, dtype=torch.float64).view(-1, G)


def _group_slice(batch: Rollout, group: int, G: int) -> Rollout:
    s = slice(group * G, (group + 1) * G)
    return Rollout(batch.examples[s], batch.prompts[s], batch.responses[s], batch.scores[s], batch.shaped[s])


def _spread(examples: list[Example], count: int) -> list[Example]:
    """At most `count` held-out examples, taken evenly across the mix's tasks."""
    by_task: dict[str, list[Example]] = {}
    for e in examples:
        by_task.setdefault(e.task, []).append(e)
    chosen, index = [], 0
    while len(chosen) < min(count, len(examples)):
        for items in by_task.values():
            if index < len(items) and len(chosen) < count:
                chosen.append(items[index])
        index += 1
    return chosen


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan
