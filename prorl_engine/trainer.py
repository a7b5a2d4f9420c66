"""The ProRL step loop (PRORL_SPEC.md section 1), reading top to bottom as the recipe.

    for each step:  commands -> rollout (+ dynamic sampling refill) -> rewards -> length shaping
                    -> filter -> advantages -> minibatch PPO updates with the KL term
                    -> maybe reset the reference -> maybe evaluate -> log -> maybe checkpoint

The Trainer reports through an EventSink and reads a ControlSource between steps. A run folder
with checkpoints is resumed from its latest one: same weights, reference, optimizer, RNG streams,
data position and reset history, so the resumed run continues as the uninterrupted one would.

One run may span ranks (`group`, prorl_engine/distributed.py: torchrun + FSDP2): every rank runs
this loop on its share of the prompts, only rank 0 reports and reads commands, and it hands the
commands to every rank so that they act at the same step boundary.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prorl_engine import checkpoint as ckpt
from prorl_engine import collect
from prorl_engine import distributed_checkpoint as dckpt
from prorl_engine import update as upd
from prorl_engine.backends import backend_for_run, sampler_gives_pi_old
from prorl_engine.builders import resolve_model_path
from prorl_engine.collect import Rollout, StepStats
from prorl_engine.config import RunConfig
from prorl_engine.data.example import Example
from prorl_engine.data.sources import TrainingMix
from prorl_engine.distributed import SOLO, Group, owned
from prorl_engine.evaluation import EvalReport, evaluate, spread_across_tasks, summarize
from prorl_engine.events import Command, CommandKind, ControlSource, Event, EventSink, NoControl, NullSink
from prorl_engine.modeling import load_policy, load_tokenizer, pick_device
from prorl_engine.novelty import reference_index
from prorl_engine.reset import ResetPolicy
from prorl_engine.rollout import PackedBatch, batched_logprobs
from prorl_engine.runlock import holding_run_lock
from prorl_engine.schedule import length_penalty_on

log = logging.getLogger(__name__)
PAUSE_POLL_S = 0.5


class Trainer:
    def __init__(
        self,
        config: RunConfig,
        run_dir: str | Path,
        sink: EventSink,
        control: ControlSource | None = None,
        fork_from: str | Path | None = None,
        group: Group = SOLO,
        paused: bool = False,
    ):
        """`fork_from`: a checkpoint of another run to start from (weights, reference, optimizer, step,
        reset history), with this run's possibly edited config. Ignored once this run has its own checkpoint.
        `group`: the ranks of a distributed run; the sink and control of ranks other than 0 are unused.
        `paused`: the run was paused when its last attempt ended (its worker was lost): this attempt
        restores it and waits, paused, for a resume or a stop (only with a `control` to send them)."""
        self.config = config
        self.fork_from = Path(fork_from) if fork_from else None
        self.run_dir = Path(run_dir)
        self.group = group
        self.sink = sink if group.is_main else NullSink()
        self.control = (control or NoControl()) if group.is_main else NoControl()
        self.steered = control is not None  # someone can resume a pause (rank 0's word counts: `_steered`)
        self.device = pick_device(config.device)
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        np.random.seed(config.seed)

        model_path = resolve_model_path(config.model_path)
        self.tokenizer = load_tokenizer(model_path)
        self.policy = group.shard(load_policy(model_path, config.dtype, self.device))
        self.reference = group.shard(load_policy(model_path, config.dtype, self.device)).requires_grad_(False)
        self.optimizer = self._new_optimizer()
        self.mix = TrainingMix(config.data, config.seed)
        collect.check_prompt_lengths(  # refuse the run before it starts
            self.tokenizer,
            [e for stream in self.mix.streams for e in stream.examples] + self.mix.held_out,
            config.max_prompt_tokens,
        )
        self.backend = backend_for_run(config, self.policy, self.tokenizer, model_path)  # after the checks above
        training = (e for stream in self.mix.streams for e in stream.examples)
        self.novelty = reference_index(config.novelty_corpus, training) if config.eval_every else None
        self.reset_policy = ResetPolicy.from_config(config)
        self.reset_history: list[dict] = []
        self.step = 0
        self.start_paused = paused
        self.paused = False

    def _new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.policy.parameters(), lr=self.config.learning_rate, weight_decay=self.config.weight_decay
        )

    # ------------------------------------------------------------------------------------------
    @holding_run_lock  # one trainer per run folder: a second one is refused (runlock.py)
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
        self.paused = self.start_paused and self._steered()  # every rank alike: they wait together
        self._status(
            "paused" if self.paused else "running",  # a paused run taken up again stays paused
            resumed_from=self.step if latest else None,
            reason="it was paused when its last attempt ended: resume or stop it" if self.paused else None,
            forked_from=str(self.fork_from) if self.fork_from and not latest else None,
            **({"ranks": self.group.world, "devices": self._devices()} if self.group is not SOLO else {}),
        )
        status = "finished"
        while self.step < self.config.steps:
            if self._apply_commands() == "stop":
                status = "stopped"
                break
            self.step += 1
            self._train_step()
            if self.step % self.config.checkpoint_every == 0 and self.step < self.config.steps:
                if self._checkpoint() == "stop":
                    status = "stopped"
                    break
        if status == "finished" or ckpt.latest_step(self.run_dir) != self.step:
            if self._checkpoint(wait=status == "finished") == "stop":
                status = "stopped"
        self._status(status)
        return status

    def _train_step(self) -> None:
        """One RL step, in the order of PRORL_SPEC.md section 1 (its item numbers in the comments)."""
        config, step = self.config, self.step
        penalty_on = length_penalty_on(config, step)
        if penalty_on != length_penalty_on(config, step - 1) or (step == 1 and penalty_on):
            self.sink.event(Event("length_penalty", step, {"on": penalty_on}))

        # 1-5. Take B prompts, sample G responses each, score them, shape by length, drop groups
        #      without spread (dynamic sampling), refilling until B groups are kept
        t0 = time.perf_counter()
        kept, stats = self._collect(penalty_on)
        self.backend.sleep()  # a sampler with its own memory frees it for the update (vLLM's sleep mode)
        rollout_s = time.perf_counter() - t0
        generated_tokens = sum(len(r) for r in stats.all.responses)  # kept or not: what sampling cost
        generated_tokens, slowest, fastest = (
            *self.group.sum([generated_tokens]),
            *self.group.max([rollout_s]),
            *self.group.min([rollout_s]),
        )

        # 6-7. Advantages and minibatch PPO-clip + KL updates (nothing to learn from if no group was kept)
        t1 = time.perf_counter()
        update = self._update(kept) if stats.groups_kept else dict.fromkeys(self._update_keys())
        train_s = time.perf_counter() - t1

        # 8. Maybe reset the reference (interval, KL spike, stalled evaluation); maybe evaluate
        if update["kl/ref"] is not None:
            self.reset_policy.observe_kl(update["kl/ref"])
        eval_metrics = self._maybe_evaluate()
        reason = self.reset_policy.reason_to_reset(step)
        if reason:
            self.reset_reference(reason)

        # Log (section 10)
        metrics = {
            **stats.reward_metrics(self.group),
            **update,
            "policy/lr": self.optimizer.param_groups[0]["lr"],
            "sampling/filtered_frac": stats.groups_dropped / stats.groups_generated,
            "sampling/generation_batches": stats.generation_batches,
            "sampling/kept_groups": stats.groups_kept,
            "sampling/generated_tokens": generated_tokens,
            "schedule/length_penalty_on": float(penalty_on),
            "timing/rollout_s": slowest,  # the step waits for the slowest rank
            "timing/train_s": train_s,
            "throughput/tokens_per_s": generated_tokens / max(slowest + train_s, 1e-9),
            **({"timing/rollout_spread_s": slowest - fastest} if self.group.world > 1 else {}),
            **eval_metrics,
        }
        self.sink.metrics(step, metrics)
        self.sink.samples(step, stats.samples(step, self.config.samples_per_step_logged, self.tokenizer))

    # --- rollout -------------------------------------------------------------------------------
    def _collect(self, penalty_on: bool) -> tuple[Rollout, StepStats]:
        """1-5: the step's kept groups and the stats of all it generated (collect.py)."""
        generate = functools.partial(self._generate, penalty_on=penalty_on)
        return collect.collect(self.mix.draw, generate, self.config, self.group, self.step)

    def _generate(
        self, examples: list[Example], seeds: list[int] | None, penalty_on: bool
    ) -> tuple[Rollout, list[bool]]:
        with self._sampling():
            return collect.generate(self.backend, self.tokenizer, examples, self.config, penalty_on, seeds)

    def _sampling(self):
        """Sampling with `generate` on a sharded policy holds its whole weights on each rank (no
        collective per token); vLLM has its own copy, and one process has nothing to gather."""
        whole = self.config.rollout_backend == "hf"
        return self.group.whole(self.policy) if whole else contextlib.nullcontext()

    # --- update --------------------------------------------------------------------------------
    def _update(self, kept: Rollout) -> dict[str, float]:
        """6-7: advantages of the kept responses, then `updates_per_step` minibatch updates (update.py)."""
        config, pad = self.config, self.tokenizer.pad_token_id
        lengths = [len(r) for r in kept.responses]
        G, group = config.samples_per_prompt, self.group
        advantages, owners = upd.global_advantages(
            config.advantage_estimator, kept.shaped, lengths, kept.origins, G, group
        )  # (M,) this rank's, whitened over every rank's
        sizes = [len(p) + len(r) for p, r in zip(kept.prompts, kept.responses)]  # micro-batches by length
        if group.world == 1:
            plan = upd.plan_minibatches(len(kept), config.updates_per_step, config.micro_batch_size, lengths=sizes)
        else:
            plan = upd.plan_minibatches(
                len(owners), config.updates_per_step, config.micro_batch_size, owners, group.rank, sizes
            )
        pi_old, pi_ref = (functools.partial(self._logprobs, model) for model in (self.policy, self.reference))
        if sampler_gives_pi_old(config) and len(kept.rollout_logprobs) == len(kept):
            pi_old = None  # the float32 sampler's own log-probs are pi_old (backends.py)
        minibatches = upd.micro_batches(
            plan, kept.prompts, kept.responses, advantages, pad, pi_old, pi_ref, kept.rollout_logprobs
        )
        mismatch = upd.correct_for_rollout_engine(minibatches, config, group)  # {} when the sampler is the policy
        metrics = upd.update(self.policy, self.optimizer, minibatches, config, self.device, group)
        self.backend.sync_weights(self.policy)
        return {**metrics, **mismatch}

    def _update_keys(self) -> tuple[str, ...]:
        """The keys `_update` logs (as None on a step that kept no group)."""
        own_sampler = self.config.rollout_backend != "hf"
        return (*upd.METRIC_KEYS, *(upd.ROLLOUT_METRIC_KEYS if own_sampler else ()))

    def _logprobs(self, model: torch.nn.Module, batches: list[PackedBatch]) -> list[torch.Tensor]:
        """log pi of every response token (no grad), of the distribution the rollouts were sampled
        from: softmax(logits / temperature), nucleus-truncated at top_p and renormalised (spec
        section 7b). With top_p < 1 a token outside `model`'s nucleus has -inf; the sampled token is
        inside the sampler's, so pi_old is finite but for float noise at the nucleus boundary (the
        sampler's cached forward and this one round differently): such tokens leave the loss.
        Under bfloat16 autocast with `bf16_autocast`, as the update's pi_theta, so that the KL
        compares two passes of the same precision (0 right after a reset)."""
        config = self.config
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=config.bf16_autocast):
            return batched_logprobs(model, batches, self.device, config.temperature, config.top_p)

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

    def evaluate(self) -> EvalReport:
        """pass@k of the current policy on `eval_prompts` held-out prompts, spread across the tasks."""
        config = self.config
        held_out = spread_across_tasks(self.mix.held_out, config.eval_prompts)
        if self.group.world > 1:  # each rank answers its share; everyone gets every answer
            mine = owned(len(held_out), self.group)
            with self._sampling():
                part = self._evaluate([held_out[i] for i in mine])
            samples = [sample for share in self.group.all_gather(part.samples) for sample in share]
            return EvalReport(samples, summarize(samples, config.eval_k, self.novelty))
        with self._sampling():
            return self._evaluate(held_out)

    def _evaluate(self, held_out: list[Example]) -> EvalReport:
        config = self.config
        return evaluate(
            self.backend,
            self.tokenizer,
            held_out,
            n=config.eval_samples,
            ks=config.eval_k,
            temperature=config.eval_temperature,
            top_p=config.eval_top_p,
            max_new_tokens=config.max_response_tokens,
            format_penalty=config.format_penalty,
            truncated_reward=config.truncated_reward,
            seed=config.seed * 7919 + self.step,
            novelty=self.novelty,
        )

    def _apply_commands(self) -> str | None:
        """Apply the commands that arrived; while paused, wait here for resume or stop."""
        while True:
            for command in self.group.broadcast(self.control.poll()):  # rank 0's, on every rank
                if self._apply(command) == "stop":
                    return "stop"
            if not self.paused:
                return None
            time.sleep(PAUSE_POLL_S)

    def _apply(self, command: Command) -> str | None:
        who = command.requested_by
        self.sink.event(
            Event("command", self.step, {"kind": command.kind.value, "requested_by": who, "id": command.id})
        )
        if command.kind == CommandKind.RESET_REFERENCE:
            self.reset_reference("manual", requested_by=who)
        elif command.kind == CommandKind.SAVE_CHECKPOINT:
            return self._checkpoint()
        elif command.kind == CommandKind.PAUSE and not self.paused:
            self.paused = True
            self._status("paused", requested_by=who)
        elif command.kind == CommandKind.RESUME and self.paused:
            self.paused = False
            self._status("running", requested_by=who)
        elif command.kind == CommandKind.STOP:
            return "stop"
        return None

    def _devices(self) -> list[str]:
        """Each rank's device, in rank order (what a distributed run's page shows)."""
        index = torch.cuda.current_device() if self.device.type == "cuda" else None
        return self.group.all_gather(f"{self.device.type}:{index}" if index is not None else self.device.type)

    def _status(self, status: str, **data) -> None:
        self.sink.event(
            Event("status", self.step, {"status": status, **{k: v for k, v in data.items() if v is not None}})
        )

    # --- checkpoints ---------------------------------------------------------------------------
    def _checkpoint(self, wait: bool = True) -> str | None:
        """Save a checkpoint. When the disk refuses it (full, or a folder that is not writable) the
        run pauses, with the reason, until a person fixes the disk and resumes it; then the same
        checkpoint is written again. Returns "stop" when a stop came meanwhile, or at once when not
        `wait`ing (a stopping run: it resumes later from its last good checkpoint). A run nobody
        steers (the CLI) cannot be resumed from inside: the CheckpointWriteError ends it."""
        while True:
            try:
                self.save_checkpoint()
                return None
            except ckpt.CheckpointWriteError as refused:
                needed_mb = math.ceil(refused.needed_bytes / 1e6)
                details = {"error": str(refused), "reason": refused.reason, "needed_mb": needed_mb}
                self.sink.event(Event("checkpoint_failed", self.step, details))
                if not wait:
                    return "stop"
                if not self._steered():
                    raise
                self.paused = True
                self._status("paused", error=str(refused))
            if self._apply_commands() == "stop":
                return "stop"

    def _steered(self) -> bool:
        """Whether a person can resume this run (rank 0's control, on every rank)."""
        return self.group.broadcast(self.steered)

    def save_checkpoint(self) -> Path:
        if self.group is not SOLO:
            path = dckpt.save(
                self.run_dir,
                self.step,
                self.policy,
                self.tokenizer,
                self.reference,
                self.optimizer,
                self.state_dict(sharded=True),
                self.group,
            )
        else:
            path = ckpt.save(self.run_dir, self.step, self.policy, self.tokenizer, self.reference, self.state_dict())
        self.sink.event(Event("checkpoint", self.step, {"path": str(path)}))
        for step, removed in ckpt.prune(self.run_dir, self.config.keep_checkpoints) if self.group.is_main else ():
            self.sink.event(Event("checkpoint_removed", self.step, {"checkpoint_step": step, "path": str(removed)}))
        return path

    def _restore(self, path: Path, fork: bool = False) -> None:
        """Continue from a checkpoint: its weights (loaded in place), then the rest of its state. A
        distributed run loads a distributed checkpoint's shards (on any number of ranks); one
        process loads the consolidated weights, and the optimizer from the shards if it has them."""
        if self.group is not SOLO:
            load = dckpt.load if (Path(path) / "sharded").is_dir() else dckpt.load_whole
            self.load_state_dict(load(path, self.policy, self.reference, self.optimizer), fork=fork)
        else:
            self.load_state_dict(ckpt.load(path, self.policy, self.reference), fork=fork, path=path)
        self.backend.sync_weights(self.policy)  # a sampler with its own copy of the weights must see them

    def state_dict(self, sharded: bool = False) -> dict[str, Any]:
        """What a resumed run needs besides the policy and reference weights to continue exactly:
        step, optimizer, RNG streams, data position, reset policy and history, and the config.
        `sharded`: the optimizer is saved apart, by distributed_checkpoint.py."""
        return {
            "step": self.step,
            "optimizer": dckpt.SHARDED if sharded else self.optimizer.state_dict(),
            "rng": ckpt.rng_state(),
            "data": self.mix.state_dict(),
            "reset_policy": self.reset_policy.state_dict(),
            "reset_history": self.reset_history,
            "config": self.config.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], fork: bool = False, path: Path | None = None) -> None:
        """The inverse of `state_dict`. For a fork (a new run from another run's checkpoint, with an
        edited config) the data position carries over only when the data mix is unchanged. A
        distributed checkpoint's optimizer is read from its shards in `path` (if not already loaded)."""
        if self.group is SOLO:
            if dckpt.is_sharded(state):
                dckpt.load_optimizer(path, self.policy, self.optimizer)
            else:
                self.optimizer.load_state_dict(state["optimizer"])
        ckpt.set_rng_state(state["rng"])
        if not fork or state["config"]["data"] == self.config.to_dict()["data"]:
            self.mix.load_state_dict(state["data"])
        self.reset_policy.load_state_dict(state["reset_policy"])
        self.reset_history = state["reset_history"]
        self.step = state["step"]
