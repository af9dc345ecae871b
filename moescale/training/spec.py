"""`RunSpec`: one training run — model, recipe, data and token budget — and its stable id."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from moescale.models import MoEConfig
from moescale.training.data import DataSpec
from moescale.training.recipe import Recipe, resolve_recipe


class RunSpec(BaseModel):
    """Everything that determines a run's curve (plus where and how fast it runs)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    model: MoEConfig
    recipe: Recipe = Field(default_factory=lambda: resolve_recipe("tiny-cpu"))
    data: DataSpec = Field(default_factory=DataSpec)
    tokens: int = Field(gt=0)  # the token budget D
    seed: int = 0
    # execution only: not part of the run's identity
    device: str = "auto"
    num_threads: int | None = Field(None, ge=1)
    world_size: int = Field(1, ge=1)  # processes (devices) the run is sharded over, FSDP2

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, value: Any) -> MoEConfig:
        return value if isinstance(value, MoEConfig) else MoEConfig.from_dict(value)

    @field_validator("recipe", mode="before")
    @classmethod
    def _recipe(cls, value: Any) -> Recipe:
        return resolve_recipe(value)

    @field_serializer("model")
    def _dump_model(self, model: MoEConfig) -> dict:
        return model.to_dict()

    def identity(self) -> dict:
        """What the run's id hashes: the spec less its execution details."""
        data = self.model_dump(mode="json", exclude={"device", "num_threads", "world_size"})
        data["recipe"] = self.recipe.identity()
        return data

    @property
    def trunk_id(self) -> str:
        """The WSD trunk a run of this spec can branch from: the spec less its length, so
        every budget's run of one size, seed and batch shares it."""
        identity = {k: v for k, v in self.identity().items() if k != "tokens"}
        canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return "t" + hashlib.sha256(canonical.encode()).hexdigest()[:11]

    @property
    def run_id(self) -> str:
        """A stable hash of the spec: the same run gets the same id on every machine."""
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]
