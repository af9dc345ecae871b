"""One training run: data, tokenizers, recipes, the trainer and its curve. Never imports ray."""

from moescale.training.data import DataSpec
from moescale.training.recipe import RECIPES, Recipe, resolve_recipe
from moescale.training.spec import RunSpec
from moescale.training.trainer import RunResult, train_run

__all__ = ["RECIPES", "DataSpec", "Recipe", "RunResult", "RunSpec", "resolve_recipe", "train_run"]
