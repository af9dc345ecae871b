"""`MoETransformer`: the decoder-only LM of the Hunyuan-Large family."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moescale.models.config import MoEConfig
from moescale.models.experts import Dispatch, RoutedExperts
from moescale.models.layers import Attention, RMSNorm, SwiGLU, rope_tables
from moescale.models.routing import route, router_logits


@dataclass
class LayerRouting:
    """Routing health of one MoE layer for one forward pass (detached)."""

    expert_fraction: Tensor  # [E] share of assignments each routed expert processed
    dropped_frac: float
    recycled_frac: float


@dataclass
class ModelOutput:
    logits: Tensor  # [B, S, V]
    loss: Tensor | None  # ce_loss + aux_loss_coef·aux_loss + z_loss_coef·z_loss (+ seq's)
    ce_loss: Tensor | None  # natural-log cross-entropy per token
    aux_loss: Tensor  # load-balance loss, mean over MoE layers (0 for dense)
    z_loss: Tensor  # router z-loss, mean over MoE layers (0 for dense)
    routing: list[LayerRouting]
    seq_aux_loss: Tensor | None = None  # sequence-wise balance loss, mean over MoE layers (if on)


@dataclass
class MoEOutput:
    """What an MoE feed-forward layer returns: its output and its routing's losses and health."""

    out: Tensor  # same shape as the input
    aux_loss: Tensor | None  # load-balance loss of this layer (None: dense, nothing routed)
    z_loss: Tensor | None  # router z-loss of this layer
    routing: LayerRouting | None
    seq_aux_loss: Tensor | None = None  # sequence-wise balance loss (seq_aux_loss_coef > 0)


class DenseFeedForward(SwiGLU):
    """A dense SwiGLU feed-forward that answers as the MoE layer does (nothing routed), so a
    block runs either kind the same way."""

    def forward(self, x: Tensor) -> MoEOutput:
        return MoEOutput(super().forward(x), None, None, None)


class MoEFeedForward(nn.Module):
    """Shared SwiGLU experts that see every token, plus top-k routed experts."""

    def __init__(self, config: MoEConfig, dispatch: Dispatch):
        super().__init__()
        self.config = config
        # n shared experts of width h are one SwiGLU of width n·h: same parameters, same FLOPs.
        hidden = config.n_shared_experts * config.shared_hidden
        self.shared = SwiGLU(config.d_model, hidden) if hidden else None
        self.router = nn.Linear(config.d_model, config.n_experts, bias=False)
        self.experts = RoutedExperts(
            config.n_experts, config.d_model, config.expert_hidden, dispatch
        )
        if config.balance == "bias":
            # the selection bias is state, not a parameter: no gradient, checkpointed with the
            # weights; the top-k choices it counts are summed over a step's micro-batches
            self.register_buffer("expert_bias", torch.zeros(config.n_experts))
            self.register_buffer("load", torch.zeros(config.n_experts), persistent=False)

    def forward(self, x: Tensor) -> MoEOutput:
        flat = x.reshape(-1, x.shape[-1])
        c = self.config
        bias = self.expert_bias if c.balance == "bias" else None
        assignment = route(
            router_logits(flat, self.router.weight),
            c.top_k,
            c.routing,
            c.capacity_factor,
            score_func=c.score_func,
            route_norm=c.route_norm,
            bias=bias,
            seq_len=x.shape[-2] if c.seq_aux_loss_coef > 0 and x.dim() == 3 else None,
        )
        if bias is not None and self.training:
            self.load += assignment.selected.detach().to(self.load.dtype)
        out = self.experts(flat, assignment)
        if self.shared is not None:
            out = out + self.shared(flat)
        stats = LayerRouting(
            expert_fraction=assignment.expert_fraction.detach(),
            dropped_frac=float(assignment.dropped_frac),
            recycled_frac=float(assignment.recycled_frac),
        )
        return MoEOutput(
            out.view_as(x), assignment.aux_loss, assignment.z_loss, stats, assignment.seq_aux_loss
        )

    @torch.no_grad()
    def update_bias(self) -> None:
        """After an optimizer step: each expert's bias moves by `bias_update_rate` against the
        sign of its load error (load above the mean: down), the loads summed over every rank
        first so that all keep one bias; kept at zero mean (Wang et al. 2024, Algorithm 1)."""
        load = self.load
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(load)
        self.expert_bias += self.config.bias_update_rate * torch.sign(load.mean() - load)
        self.expert_bias -= self.expert_bias.mean()
        load.zero_()


class Block(nn.Module):
    """One pre-norm layer: x + attention(norm(x)), then + feed-forward(norm(x)). It runs
    itself (so that wrappers such as FSDP's per-block sharding see every call)."""

    def __init__(self, config: MoEConfig, layer: int, dispatch: Dispatch):
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model)
        self.attn = Attention(config, makes_kv=config.makes_kv(layer))
        self.ffn_norm = RMSNorm(config.d_model)
        if config.is_moe_layer(layer):
            self.ffn = MoEFeedForward(config, dispatch)
        elif config.is_moe:  # one of the dense first layers
            self.ffn = DenseFeedForward(config.d_model, config.dense_ffn_hidden)
        else:
            self.ffn = DenseFeedForward(
                config.d_model, config.n_shared_experts * config.shared_hidden
            )

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, kv: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor], MoEOutput]:
        """→ the new residual stream, the K/V this layer used (for CLA), and the feed-forward's
        record (its routing None for a dense layer)."""
        attn_out, kv = self.attn(self.attn_norm(x), cos, sin, kv)
        x = x + attn_out
        ffn = self.ffn(self.ffn_norm(x))
        return x + ffn.out, kv, ffn


class MoETransformer(nn.Module):
    """Pre-norm decoder: embedding → n_layers × (attention, MoE FFN) → RMSNorm → logits."""

    def __init__(self, config: MoEConfig, dispatch: Dispatch = "auto"):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config, i, dispatch) for i in range(config.n_layers))
        self.final_norm = RMSNorm(config.d_model)
        self.output = (
            None
            if config.tie_embeddings
            else nn.Linear(config.d_model, config.vocab_size, bias=False)
        )
        cos, sin = rope_tables(config.head_dim, config.max_seq_len, config.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02) -> None:
        """GPT-2 initialisation: N(0, 0.02), residual-branch outputs scaled by 1/sqrt(2·layers)."""
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        for name, param in self.named_parameters():
            if param.dim() == 1:
                nn.init.ones_(param)
            elif name.endswith(("wo.weight", "w_down.weight", "w_down")):
                nn.init.normal_(param, 0.0, residual_std)
            else:
                nn.init.normal_(param, 0.0, std)

    def forward(self, tokens: Tensor, targets: Tensor | None = None) -> ModelOutput:
        """tokens [B, S] int → logits [B, S, V]; with targets [B, S], the losses too."""
        if tokens.shape[1] > self.config.max_seq_len:
            raise ValueError(
                f"sequence length {tokens.shape[1]} exceeds max_seq_len {self.config.max_seq_len}"
            )
        x = self.embedding(tokens)
        aux_losses, z_losses, seq_losses, routing = [], [], [], []
        kv = None
        for block in self.blocks:
            x, kv, moe = block(x, self.rope_cos, self.rope_sin, kv)
            if moe.routing is not None:
                aux_losses.append(moe.aux_loss)
                z_losses.append(moe.z_loss)
                if moe.seq_aux_loss is not None:  # only asked for (seq_aux_loss_coef > 0)
                    seq_losses.append(moe.seq_aux_loss)
                routing.append(moe.routing)
        x = self.final_norm(x)
        weight = self.embedding.weight if self.output is None else self.output.weight
        logits = F.linear(x, weight)

        zero = logits.new_zeros((), dtype=torch.float32)
        aux_loss = torch.stack(aux_losses).mean() if aux_losses else zero
        z_loss = torch.stack(z_losses).mean() if z_losses else zero
        seq_aux_loss = torch.stack(seq_losses).mean() if seq_losses else None
        ce_loss = loss = None
        if targets is not None:
            ce_loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
            # the aux loss balances only under balance: aux_loss (else it is reported alone)
            aux_coef = self.config.aux_loss_coef if self.config.balance == "aux_loss" else 0.0
            loss = ce_loss + aux_coef * aux_loss + self.config.z_loss_coef * z_loss
            if seq_aux_loss is not None:  # with any balance (DeepSeek-V3: with bias)
                loss = loss + self.config.seq_aux_loss_coef * seq_aux_loss
        return ModelOutput(logits, loss, ce_loss, aux_loss, z_loss, routing, seq_aux_loss)

    def bias_spread(self) -> float:
        """Routing health under balance: bias — the largest max − min of a layer's selection
        biases (how hard the balancing pushes); NaN under any other balance."""
        spreads = [
            float(m.expert_bias.max() - m.expert_bias.min())
            for m in self.modules()
            if isinstance(m, MoEFeedForward) and m.config.balance == "bias"
        ]
        return max(spreads) if spreads else math.nan

    def update_balance(self) -> None:
        """What a training loop calls after each optimizer step: the selection biases of
        auxiliary-loss-free balancing move (nothing to do under any other balance)."""
        for module in self.modules():
            if isinstance(module, MoEFeedForward) and module.config.balance == "bias":
                module.update_bias()
