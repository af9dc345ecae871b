"""Exact parameter, FLOP and KV-cache accounting for `MoEConfig`, without building the model.

FLOPs count multiply-accumulates as 2 and cover every matrix product: the linear layers,
the router, and attention scores (Q·Kᵀ) and values (P·V). Element-wise work (norms, RoPE,
softmax, SwiGLU gating) is left out, as in Kaplan et al. 2020 and Chinchilla's Appendix F.
Attention scores and values are counted in full over the sequence, not causally halved:
that is what the fused kernels compute and how Chinchilla counts them. Training FLOPs are
3 × forward (the backward pass computes gradients for inputs and weights: 2 × forward).
"""

from __future__ import annotations

from dataclasses import dataclass

from moescale.models.config import MoEConfig

FORWARD_COMPONENTS = (
    "attention_projections",
    "attention_scores_values",
    "router",
    "shared_experts",
    "routed_experts",
    "dense_layers",  # the dense first layers' FFNs (n_dense_layers)
    "output_projection",
)


@dataclass(frozen=True)
class Accounting:
    """Parameter counts and per-token FLOPs of one model at one sequence length."""

    n_total: int  # every parameter (equals sum(p.numel()))
    n_active: int  # parameters touching one token, input embedding excluded: the N of the laws
    n_embedding: int  # the input embedding table
    flops_per_token: float  # training FLOPs per token: 3 × forward
    forward: dict[str, float]  # forward FLOPs per token by component (FORWARD_COMPONENTS)
    seq_len: int

    @property
    def forward_flops_per_token(self) -> float:
        return sum(self.forward.values())


def count(config: MoEConfig, seq_len: int) -> Accounting:
    """Count the parameters and training FLOPs per token of `config` at `seq_len`."""
    c = config
    d, hd = c.d_model, c.head_dim
    n_kv_layers = c.n_layers // c.cla_share
    q_and_o = 2 * d * c.n_heads * hd
    kv = 2 * d * c.n_kv_heads * hd
    attention = c.n_layers * q_and_o + n_kv_layers * kv
    qk_norms = (c.n_layers + n_kv_layers) * hd if c.qk_norm else 0
    norms = (2 * c.n_layers + 1) * d + qk_norms
    # a dense model's FFN is its shared expert in every layer; an MoE model's dense first
    # layers (n_dense_layers) have their own FFN instead of the shared and routed experts
    moe_layers = c.n_moe_layers if c.is_moe else c.n_layers
    shared = moe_layers * 3 * d * c.n_shared_experts * c.shared_hidden
    dense_layers = c.n_dense_layers * 3 * d * c.dense_ffn_hidden if c.is_moe else 0
    one_expert = 3 * d * c.expert_hidden
    routed_all = c.n_moe_layers * c.n_experts * one_expert
    routed_active = c.n_moe_layers * c.active_experts * one_expert
    router = c.n_moe_layers * d * c.n_experts
    embedding = c.vocab_size * d
    output = c.vocab_size * d  # the same matrix as the embedding when tied

    n_total = embedding + attention + norms + shared + dense_layers + routed_all + router
    if not c.tie_embeddings:
        n_total += output
    n_active = attention + norms + shared + dense_layers + routed_active + router + output

    forward = {
        "attention_projections": 2.0 * attention,
        # Q·Kᵀ and P·V: 2 · seq_len · (n_heads·head_dim) FLOPs each, per token and layer.
        "attention_scores_values": 2.0 * 2 * seq_len * c.n_heads * hd * c.n_layers,
        "router": 2.0 * router,
        "shared_experts": 2.0 * shared,
        "routed_experts": 2.0 * routed_active,
        "dense_layers": 2.0 * dense_layers,
        "output_projection": 2.0 * output,
    }
    return Accounting(
        n_total=n_total,
        n_active=n_active,
        n_embedding=embedding,
        flops_per_token=3.0 * sum(forward.values()),
        forward=forward,
        seq_len=seq_len,
    )


def kv_cache_bytes(config: MoEConfig, seq_len: int, dtype_bytes: int = 2) -> int:
    """Bytes of K and V cached for one sequence of `seq_len` tokens.

    Hunyuan-Large report, Table 2 (per token, bf16): MHA 4·n_heads·d_head·layers, GQA
    4·n_kv·d_head·layers, GQA+CLA 2·n_kv·d_head·layers; i.e. 2 (K and V) · dtype_bytes ·
    n_kv_heads · head_dim · (layers that make their own K/V).
    """
    kv_layers = config.n_layers // config.cla_share
    return 2 * dtype_bytes * config.n_kv_heads * config.head_dim * kv_layers * seq_len
