"""Reference-policy resets (PRORL_SPEC.md section 9).

pi_ref <- pi_theta when any trigger fires. Triggers are checked after the step's update, in the
order interval, KL spike, validation patience; the first that holds names the reset. A person's
reset is a command the trainer applies between steps (reason "manual"), without asking the policy.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from prorl_engine.config import RunConfig

MANUAL, INTERVAL, KL_SPIKE, PATIENCE = "manual", "interval", "kl_threshold", "validation_patience"


@dataclass
class ResetPolicy:
    """Decides at each step boundary whether to reset the reference, and why.

    interval:     reset at every step s with s % interval == 0 (a fixed grid, so the studio can draw
                  it before launch; manual and KL resets do not move it).
    kl_threshold: reset when the mean of kl/ref over the last `kl_window` steps since the previous
                  reset passes the threshold (a full window is required, so one noisy step is not enough).
    patience:     reset when the validation metric has not improved on its best for `patience`
                  consecutive evaluations.
    """

    interval: int | None = None
    kl_threshold: float | None = None
    kl_window: int = 10
    patience: int | None = None
    recent_kl: deque = field(default_factory=deque)
    best_metric: float | None = None
    evals_without_improvement: int = 0

    @classmethod
    def from_config(cls, config: RunConfig) -> ResetPolicy:
        return cls(config.reset_interval, config.kl_reset_threshold, config.kl_window, config.reset_patience)

    def observe_kl(self, kl: float) -> None:
        self.recent_kl.append(kl)
        while len(self.recent_kl) > self.kl_window:
            self.recent_kl.popleft()

    def observe_eval(self, metric: float) -> None:
        if self.best_metric is None or metric > self.best_metric:
            self.best_metric, self.evals_without_improvement = metric, 0
        else:
            self.evals_without_improvement += 1

    @property
    def kl_moving_average(self) -> float | None:
        return sum(self.recent_kl) / len(self.recent_kl) if self.recent_kl else None

    def reason_to_reset(self, step: int) -> str | None:
        if self.interval and step % self.interval == 0:
            return INTERVAL
        if (
            self.kl_threshold is not None
            and len(self.recent_kl) == self.kl_window
            and self.kl_moving_average > self.kl_threshold
        ):
            return KL_SPIKE
        if self.patience is not None and self.evals_without_improvement >= self.patience:
            return PATIENCE
        return None

    def on_reset(self) -> None:
        """The new reference starts a new KL history and a new patience count (the best is kept)."""
        self.recent_kl.clear()
        self.evals_without_improvement = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "recent_kl": list(self.recent_kl),
            "best_metric": self.best_metric,
            "evals_without_improvement": self.evals_without_improvement,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent_kl = deque(state["recent_kl"])
        self.best_metric = state["best_metric"]
        self.evals_without_improvement = state["evals_without_improvement"]
