"""`MoEConfig`: the frozen, validated shape of one model of the Hunyuan-Large family."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from moescale.errors import UserError

Routing = Literal["dropless", "drop", "recycle"]
ROUTINGS: tuple[str, ...] = ("dropless", "drop", "recycle")
ScoreFunc = Literal["softmax", "sigmoid"]
SCORE_FUNCS: tuple[str, ...] = ("softmax", "sigmoid")
Balance = Literal["aux_loss", "bias", "none"]
BALANCES: tuple[str, ...] = ("aux_loss", "bias", "none")
# The recipe fields added after the first release, with their defaults: left out of to_dict
# (and so of every run id) while at them, so the runs planned before them keep their ids.
RECIPE_DEFAULTS: dict[str, Any] = {
    "score_func": "softmax",
    "route_norm": False,
    "balance": "aux_loss",
    "bias_update_rate": 1e-3,
    "seq_aux_loss_coef": 0.0,
    "n_dense_layers": 0,
    "dense_hidden": None,
}


@dataclass(frozen=True)
class MoEConfig:
    """A decoder-only MoE transformer: shared + routed SwiGLU experts, GQA, CLA, RoPE.

    `n_experts = 0` gives the dense baseline: the FFN is then only the shared SwiGLU
    (`n_shared_experts` × `shared_hidden` wide) and `top_k` is ignored.
    """

    vocab_size: int = 256
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 2
    n_kv_heads: int | None = None  # GQA; None = n_heads (plain multi-head attention)
    head_dim: int | None = None  # None = d_model // n_heads
    cla_share: int = 1  # cross-layer attention: each group of this many layers shares one K/V
    qk_norm: bool = False
    rope_base: float = 10000.0
    max_seq_len: int = 2048
    n_shared_experts: int = 1
    n_experts: int = 8  # routed experts; 0 = dense SwiGLU FFN
    top_k: int = 1
    expert_hidden: int = 384  # SwiGLU intermediate size of one routed expert
    shared_hidden: int | None = None  # None = expert_hidden
    capacity_factor: float | None = None  # None = dropless
    routing: Routing = "dropless"
    aux_loss_coef: float = 0.01  # load-balance loss weight (added with balance: aux_loss)
    z_loss_coef: float = 1e-3  # router z-loss weight
    tie_embeddings: bool = True
    # the recipe of DeepSeek-V3 (arXiv 2412.19437, §2.1.2) and Wang et al. 2024 (arXiv
    # 2408.15664): scores by `score_func`, the top-k gate weights renormalised to sum to 1
    # (`route_norm`), and `balance` by an aux loss (Switch), by a per-expert bias added to
    # the scores for selection only and moved by `bias_update_rate` after each step against
    # the expert's load error (no aux loss), or not at all
    score_func: ScoreFunc = "softmax"
    route_norm: bool = False
    balance: Balance = "aux_loss"
    bias_update_rate: float = 1e-3
    # DeepSeek-V3's complementary sequence-wise balance loss (eq. 17-20; 1e-4 there): evens
    # out each sequence's load, beside any balance (0: off)
    seq_aux_loss_coef: float = 0.0
    # the first layers with a dense SwiGLU FFN (DeepSeekMoE, DeepSeek-V3), `dense_hidden`
    # wide (None: the MoE layer's activated width, shared plus top-k routed)
    n_dense_layers: int = 0
    dense_hidden: int | None = None

    def __post_init__(self) -> None:
        positive = ("vocab_size", "d_model", "n_layers", "n_heads", "cla_share", "max_seq_len")
        for name in positive:
            _require(getattr(self, name) >= 1, name, "must be >= 1")
        for name in ("n_experts", "n_shared_experts", "top_k"):
            _require(getattr(self, name) >= 0, name, "must be >= 0")
        _require(self.expert_hidden >= 1, "expert_hidden", "must be >= 1")
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if self.head_dim is None:
            _require(
                self.d_model % self.n_heads == 0,
                "n_heads",
                f"must divide d_model ({self.d_model}) when head_dim is not given",
            )
            object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
        if self.shared_hidden is None:
            object.__setattr__(self, "shared_hidden", self.expert_hidden)
        _require(self.n_kv_heads >= 1, "n_kv_heads", "must be >= 1")
        _require(
            self.n_heads % self.n_kv_heads == 0,
            "n_kv_heads",
            f"must divide n_heads ({self.n_heads})",
        )
        _require(self.head_dim >= 1, "head_dim", "must be >= 1")
        _require(self.head_dim % 2 == 0, "head_dim", "must be even (RoPE rotates pairs)")
        _require(
            self.n_layers % self.cla_share == 0,
            "cla_share",
            f"must divide n_layers ({self.n_layers})",
        )
        _require(self.routing in ROUTINGS, "routing", f"must be one of {', '.join(ROUTINGS)}")
        if self.n_experts == 0:
            _require(
                self.n_shared_experts >= 1,
                "n_shared_experts",
                "must be >= 1 when n_experts is 0 (the dense FFN is the shared expert)",
            )
        else:
            _require(
                1 <= self.top_k <= self.n_experts,
                "top_k",
                f"must be between 1 and n_experts ({self.n_experts})",
            )
        _require(self.shared_hidden >= 1, "shared_hidden", "must be >= 1")
        if self.routing == "dropless":
            _require(
                self.capacity_factor is None,
                "capacity_factor",
                "must be None with routing 'dropless' (a capacity drops tokens)",
            )
        else:
            _require(
                self.capacity_factor is not None and self.capacity_factor > 0,
                "capacity_factor",
                f"must be > 0 with routing '{self.routing}'",
            )
        self._check_recipe()
        _require(self.rope_base > 0, "rope_base", "must be > 0")

    def _check_recipe(self) -> None:
        """The routing recipe's fields (balance, scores, dense first layers)."""
        for name in ("aux_loss_coef", "z_loss_coef", "seq_aux_loss_coef"):
            _require(getattr(self, name) >= 0, name, "must be >= 0")
        _require(
            self.score_func in SCORE_FUNCS, "score_func", f"must be one of {', '.join(SCORE_FUNCS)}"
        )
        _require(self.balance in BALANCES, "balance", f"must be one of {', '.join(BALANCES)}")
        _require(self.bias_update_rate > 0, "bias_update_rate", "must be > 0")
        # one weight renormalised to sum to 1 is 1 whatever the score: the router would get no
        # gradient from the loss (with sigmoid + bias balancing on quick-moe's e8-k1 the busiest
        # expert took 6.5× its share and the variant needed 2× e8-k1's compute)
        _require(
            not (self.is_moe and self.route_norm and self.top_k == 1),
            "route_norm",
            "with top_k 1 makes every gate weight 1: the router learns nothing from the loss",
        )
        _require(
            (0 <= self.n_dense_layers < self.n_layers) if self.is_moe else self.n_dense_layers == 0,
            "n_dense_layers",
            f"must be from 0 to below n_layers ({self.n_layers}): an MoE model keeps an MoE layer"
            if self.is_moe
            else "must be 0 for a dense model (every layer is dense)",
        )
        _require(
            self.dense_hidden is None or self.dense_hidden >= 1, "dense_hidden", "must be >= 1"
        )

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    @property
    def active_experts(self) -> int:
        """Routed experts each token passes through (0 for the dense baseline)."""
        return self.top_k if self.is_moe else 0

    @property
    def n_moe_layers(self) -> int:
        """Layers with routed experts (the first `n_dense_layers` have a dense FFN)."""
        return self.n_layers - self.n_dense_layers if self.is_moe else 0

    @property
    def dense_ffn_hidden(self) -> int:
        """The width of a dense first layer's SwiGLU: `dense_hidden`, or the MoE layer's
        activated width (shared plus top-k routed), so the layer costs what an MoE one does."""
        if self.dense_hidden is not None:
            return self.dense_hidden
        return self.n_shared_experts * self.shared_hidden + self.top_k * self.expert_hidden

    def is_moe_layer(self, layer: int) -> bool:
        return self.is_moe and layer >= self.n_dense_layers

    def makes_kv(self, layer: int) -> bool:
        """With CLA, only the first layer of each group of `cla_share` layers projects K and V."""
        return layer % self.cla_share == 0

    def replace(self, **changes: Any) -> MoEConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every field, less the later recipe fields at their defaults (RECIPE_DEFAULTS)."""
        data = dataclasses.asdict(self)
        for name, default in RECIPE_DEFAULTS.items():
            if data[name] == default:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MoEConfig:
        """Validate a mapping (from YAML, say): unknown keys and wrong types are UserErrors."""
        from moescale.yamlio import validate

        if not isinstance(data, dict):
            raise UserError("MoEConfig: expected a mapping of config keys")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"MoEConfig.{unknown[0]}: unknown key")
        return validate(cls, data, prefix="MoEConfig")

    @classmethod
    def hunyuan_large(cls) -> MoEConfig:
        """The released Hunyuan-Large pre-trained shape (arXiv 2411.02265, Table 1)."""
        return cls(
            vocab_size=128512,
            d_model=6400,
            n_layers=64,
            n_heads=80,
            n_kv_heads=8,
            cla_share=2,
            qk_norm=True,
            max_seq_len=4096,
            n_shared_experts=1,
            n_experts=16,
            top_k=1,
            expert_hidden=18304,
            capacity_factor=1.0,
            routing="recycle",
            tie_embeddings=True,
        )


def load_model_yaml(path) -> tuple[MoEConfig, int]:
    """A model config and its sequence length from YAML: either the MoEConfig keys at the top
    level or under `model:`, with an optional top-level `seq_len` (default max_seq_len)."""
    from moescale.yamlio import load_yaml

    data = load_yaml(path)
    seq_len = data.pop("seq_len", None)
    if "model" in data:
        extra = sorted(set(data) - {"model"})
        if extra:
            raise UserError(f"{path}: {extra[0]}: unknown key")
        data = data["model"]
    try:
        config = MoEConfig.from_dict(data)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    seq_len = config.max_seq_len if seq_len is None else seq_len
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
        raise UserError(f"{path}: seq_len: must be a whole number >= 1")
    return config, seq_len


def _require(ok: bool, field: str, rule: str) -> None:
    if not ok:
        raise UserError(f"MoEConfig.{field} {rule}")
