"""The simple gradient noise scale B_noise = tr(Σ)/|G|², in tokens (McCandlish et al. 2018,
"An empirical model of large-batch training", §2.2 and appendix A.1): the batch above which
a step's gradient is mostly signal, and the estimate of the critical batch size B_crit.

Each step gives |g|² at two batch sizes (half the batch, then all of it); since
E|g_B|² = |G|² + tr(Σ)/B, the two solve for unbiased estimates of |G|² and tr(Σ). Both are
noisy (|G|² can come out negative), so each is smoothed by an EMA before the ratio is taken,
as the paper does. Plain Python: the trainer feeds it, fitting/ reads what it logged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EMA_DECAY = 0.95  # the EMA's memory: about 1 / (1 − 0.95) = 20 steps


def noise_terms(
    small_sq: float, big_sq: float, small_tokens: float, big_tokens: float
) -> tuple[float, float]:
    """(|G|², tr Σ), unbiased, from the squared gradient norms of one step at a batch of
    `small_tokens` and of `big_tokens` (appendix A.1: E|g_B|² = |G|² + tr(Σ)/B at each)."""
    g_sq = (big_tokens * big_sq - small_tokens * small_sq) / (big_tokens - small_tokens)
    trace = (small_sq - big_sq) / (1.0 / small_tokens - 1.0 / big_tokens)
    return g_sq, trace


@dataclass
class NoiseScale:
    """The EMAs of |G|² and tr Σ over the steps so far; `value` is their ratio, B_noise."""

    g_sq: float = 0.0
    trace: float = 0.0
    steps: int = 0

    def update(
        self, small_sq: float, big_sq: float, small_tokens: float, big_tokens: float
    ) -> None:
        """Fold in one step (skipped when the two batches are one, or a norm is not finite)."""
        if small_tokens >= big_tokens or not math.isfinite(small_sq + big_sq):
            return
        g_sq, trace = noise_terms(small_sq, big_sq, small_tokens, big_tokens)
        self.g_sq = EMA_DECAY * self.g_sq + (1 - EMA_DECAY) * g_sq
        self.trace = EMA_DECAY * self.trace + (1 - EMA_DECAY) * trace
        self.steps += 1

    @property
    def value(self) -> float:
        """B_noise in tokens; NaN before the first step and while either smoothed estimate
        is not positive (early in training the noise can come out below zero: too small to
        measure, and |G|² likewise when the noise drowns the signal)."""
        # both EMAs share the same start-up bias (1 − decay^steps), which cancels here
        measured = self.steps and self.g_sq > 0 and self.trace > 0
        return self.trace / self.g_sq if measured else math.nan

    def state(self) -> list[float]:
        return [self.g_sq, self.trace, float(self.steps)]

    @classmethod
    def from_state(cls, state: list[float] | None) -> NoiseScale:
        """From a checkpoint (one saved before moescale measured the noise scale: a fresh one)."""
        return cls() if not state else cls(state[0], state[1], int(state[2]))
