"""Learning-rate schedules as multipliers of the peak rate, by step.

- cosine: linear warmup, then cosine decay to `min_ratio` of the peak.
- wsd: warmup–stable–decay (Hu et al. 2024, MiniCPM): warmup, a constant plateau, then a
  cooldown over the last `cooldown_steps` steps to `min_ratio` of the peak, linear or
  (1 − sqrt) shaped (Hägele et al. 2024 find the latter best). Before its cooldown a WSD run
  is on the plateau, whatever its length: its state there is a valid branch point for any
  shorter run that shares its warmup (sweeps/ branches several budgets off one trunk).
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
CooldownShape = Literal["linear", "sqrt"]


def lr_multiplier(
    kind: ScheduleKind,
    step: int,
    total_steps: int | None,
    warmup_steps: int,
    min_ratio: float = 0.1,
    cooldown_steps: int = 0,
    cooldown_shape: CooldownShape = "linear",
    hunyuan_mid: float = 0.3,
    anneal_frac: float = 0.05,
) -> float:
    """The multiplier of the peak learning rate at `step` (0-based) of `total_steps`.
    `total_steps` None is a WSD trunk: warmup, then the plateau without end."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    if kind == "wsd":
        start = math.inf if total_steps is None else total_steps - cooldown_steps
        if step < start:
            return 1.0
        # the first cooldown step is already below the peak; the last reaches min_ratio
        progress = min(1.0, (step - start + 1) / cooldown_steps)
        shaped = math.sqrt(progress) if cooldown_shape == "sqrt" else progress
        return 1.0 - (1 - min_ratio) * shaped
    if total_steps is None:
        raise ValueError(f"a '{kind}' schedule needs its total steps")
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if kind == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if kind == "hunyuan":
        anneal_start = 1.0 - anneal_frac
        if progress <= anneal_start:
            phase = progress / anneal_start
            return hunyuan_mid + (1 - hunyuan_mid) * 0.5 * (1 + math.cos(math.pi * phase))
        phase = (progress - anneal_start) / anneal_frac
        return hunyuan_mid + (0.1 - hunyuan_mid) * phase
    raise ValueError(f"unknown schedule '{kind}'")
