"""The MoE transformer family of Hunyuan-Large and its exact accounting. The config, the
family and the accounting import without torch (planning a sweep and checking a spec stay
light); the module and the optimizer load torch on first use."""

from __future__ import annotations

import importlib

from moescale.models.accounting import Accounting, count, kv_cache_bytes
from moescale.models.config import MoEConfig
from moescale.models.family import ShapeRules, family

_TORCH_EXPORTS = {
    "AdamW": "moescale.models.optim",
    "HUNYUAN_ROUTED_LR_SCALE": "moescale.models.optim",
    "optimal_lr_at_batch": "moescale.models.optim",
    "param_groups": "moescale.models.optim",
    "ModelOutput": "moescale.models.transformer",
    "MoETransformer": "moescale.models.transformer",
}
__all__ = [  # the light names, then those that load torch
    "Accounting", "MoEConfig", "ShapeRules", "count", "family", "kv_cache_bytes",
    "AdamW", "HUNYUAN_ROUTED_LR_SCALE", "ModelOutput", "MoETransformer", "optimal_lr_at_batch",
    "param_groups",
]  # fmt: skip


def __getattr__(name: str):
    if name not in _TORCH_EXPORTS:
        raise AttributeError(f"module 'moescale.models' has no attribute '{name}'")
    return getattr(importlib.import_module(_TORCH_EXPORTS[name]), name)
