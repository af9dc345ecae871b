"""Learning-rate schedules as multipliers of the peak rate, by step.

- cosine: linear warmup, then cosine decay to `min_ratio` of the peak.
- wsd: warmup–stable–decay (Hu et al. 2024, MiniCPM): warmup, a constant plateau, then a
  linear decay to `min_ratio` over the last `decay_frac` of the steps. A plateau's state is
  a valid branch point for a shorter run (a later mode can take several budgets from one run).
- hunyuan: Hunyuan-Large's three phases (report §3.1): warmup, a long gradual decay, and an
  annealing phase over the final 5% of tokens that ends at 1/10 of the peak. The report does
  not give the gradual phase's shape; ours is a cosine from the peak to `hunyuan_mid` × peak,
  then a linear anneal from there to 0.1 × peak.
- constant: warmup, then the peak.
"""

from __future__ import annotations

import math
from typing import Literal

ScheduleKind = Literal["cosine", "wsd", "hunyuan", "constant"]


def lr_multiplier(
    kind: ScheduleKind,
    step: int,
    total_steps: int,
    warmup_steps: int,
    min_ratio: float = 0.1,
    decay_frac: float = 0.2,
    hunyuan_mid: float = 0.3,
    anneal_frac: float = 0.05,
) -> float:
    """The multiplier of the peak learning rate at `step` (0-based) of `total_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if kind == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if kind == "wsd":
        decay_start = 1.0 - decay_frac
        if progress <= decay_start:
            return 1.0
        return 1.0 - (1 - min_ratio) * (progress - decay_start) / decay_frac
    if kind == "hunyuan":
        anneal_start = 1.0 - anneal_frac
        if progress <= anneal_start:
            phase = progress / anneal_start
            return hunyuan_mid + (1 - hunyuan_mid) * 0.5 * (1 + math.cos(math.pi * phase))
        phase = (progress - anneal_start) / anneal_frac
        return hunyuan_mid + (0.1 - hunyuan_mid) * phase
    raise ValueError(f"unknown schedule '{kind}'")
