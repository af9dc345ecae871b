"""One training run: data, tokenizers, recipes, the trainer and its curve. Never imports ray.
The specs and recipes import without torch (checking a spec stays light); the trainer loads
it on first use."""

from __future__ import annotations

import importlib

from moescale.training.data import DataSpec
from moescale.training.recipe import RECIPES, Recipe, resolve_recipe
from moescale.training.spec import RunSpec

_TORCH_EXPORTS = {
    "RunResult": "moescale.training.trainer",
    "train_run": "moescale.training.trainer",
}
__all__ = ["DataSpec", "RECIPES", "Recipe", "RunSpec", "resolve_recipe", "RunResult", "train_run"]


def __getattr__(name: str):
    if name not in _TORCH_EXPORTS:
        raise AttributeError(f"module 'moescale.training' has no attribute '{name}'")
    return getattr(importlib.import_module(_TORCH_EXPORTS[name]), name)
