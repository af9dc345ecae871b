"""The MoE transformer family of Hunyuan-Large and its exact accounting."""

from moescale.models.accounting import Accounting, count, kv_cache_bytes
from moescale.models.config import MoEConfig
from moescale.models.family import ShapeRules, family
from moescale.models.optim import HUNYUAN_ROUTED_LR_SCALE, optimal_lr_at_batch, param_groups
from moescale.models.transformer import ModelOutput, MoETransformer

__all__ = [
    "HUNYUAN_ROUTED_LR_SCALE",
    "Accounting",
    "MoEConfig",
    "MoETransformer",
    "ModelOutput",
    "ShapeRules",
    "count",
    "family",
    "kv_cache_bytes",
    "optimal_lr_at_batch",
    "param_groups",
]
