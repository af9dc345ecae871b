"""Training memory of one run, estimated without building the model: parameters, gradients and
AdamW states (exact byte counts), and the activations autograd saves for backward at one
micro-batch (counted per tensor from this model's own forward pass, see `activation_bytes`),
per device when the states are sharded over several (FSDP)."""

from __future__ import annotations

from dataclasses import dataclass

from moescale.models import MoEConfig, count

MASTER_BYTES = 4  # fp32 weights, gradients and AdamW moments, in fp32 and in bf16 training
ADAM_STATES = 2  # exp_avg, exp_avg_sq
# what a CUDA context, allocator fragmentation and temporary buffers take beyond the estimate
HEADROOM = 0.10


def activation_bytes(
    config: MoEConfig, seq_len: int, sequences: int, precision: str = "fp32"
) -> float:
    """Bytes autograd keeps for backward in one forward pass of `sequences` × `seq_len` tokens.

    Counted tensor by tensor from this model's forward (measured with saved_tensors_hooks in
    the tests): per layer the two RMSNorms (input and normalised input, fp32), attention (its
    linears' inputs; q, k, v and the output of SDPA and its log-sum-exp; K/V only in layers
    that make their own under CLA), the router (logits and probabilities, fp32) and routed
    experts (gathered rows, gate/up, activation, product and outputs), the shared experts, or
    in a dense first layer (`n_dense_layers`) its own SwiGLU; then the final norm and the fp32
    log-softmax over the vocabulary. Under bf16 autocast the linears save bf16 copies of their
    inputs (each its own copy) and the weights they use once per pass.
    """
    c = config
    tokens = seq_len * sequences
    a = 2 if precision == "bf16" else 4  # bytes of what the autocast matmuls save
    d, hd, heads, kv, k = c.d_model, c.head_dim, c.n_heads, c.n_kv_heads, c.active_experts
    hidden_shared = c.n_shared_experts * c.shared_hidden
    per_token = 0.0
    for layer in range(c.n_layers):
        makes_kv = c.makes_kv(layer)
        per_token += 2 * 4 * (2 * d + 1)  # two RMSNorms: input, normalised input, 1/rms
        inputs = 2 if (makes_kv and a == 2) else 1  # bf16: wq and wkv cast x separately
        # q at SDPA, SDPA's output and wo's copy of it, and under qk_norm the projected q the
        # norm reads; wkv's whole output (k and v, one storage) and SDPA's k and v
        q_tensors = 3 if c.qk_norm else 2
        attention = inputs * d + q_tensors * heads * hd + (3 * kv * hd if makes_kv else 0)
        if c.qk_norm:  # the norms keep fp32 input and output (under bf16, k's input too)
            k_terms = (2 if a == 2 else 1) * kv * hd if makes_kv else 0
            per_token += 4 * (2 * heads * hd + k_terms + heads + (kv if makes_kv else 0))
        per_token += a * attention + 4 * heads  # + SDPA's log-sum-exp, fp32
        if c.is_moe and layer < c.n_dense_layers:  # a dense first layer's own SwiGLU
            per_token += a * (d + 4 * c.dense_ffn_hidden)
        elif c.is_moe:
            per_token += 4 * (d + 2 * c.n_experts + 1)  # normalised input, logits, probs
            # routed: gathered rows, gate/up, activation, product, outputs (at the autocast
            # precision), and the sort and token indices (dropless: and each token's slots);
            # a scatter into the tokens (drop, recycle) keeps the gated output too (fp32)
            per_token += a * k * (4 * c.expert_hidden + 2 * d + 1)
            if c.routing == "dropless":
                per_token += 8 * 4 * k
            else:
                per_token += 4 * k * d + 8 * 3 * k + 8 * k  # + the kept assignments' copies
            if hidden_shared:  # (under bf16 their input is a copy of its own)
                per_token += a * (4 * hidden_shared + (d if a == 2 else 0))
        else:
            per_token += a * (d + 4 * hidden_shared)
    per_token += 4 * (2 * d + 1) + a * d + 4 * c.vocab_size + 8  # final norm, head, CE, ids
    total = per_token * tokens
    if precision == "bf16":  # bf16 copies of every weight but the (fp32) router's
        router = c.n_moe_layers * c.n_experts * d
        total += 2 * (count(c, seq_len).n_total - router)
    return float(total)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device for one run trained data-parallel over `devices` with FSDP (states
    sharded evenly; activations are per device, at its micro-batch)."""

    parameters: float  # all parameters, fp32
    gradients: float
    optimizer: float
    activations: float  # per device, at the micro-batch
    gathered: float  # FSDP: one block's full parameters, all-gathered while it runs (×2: prefetch)
    devices: int
    micro_batch_tokens: int

    @property
    def states(self) -> float:
        return self.parameters + self.gradients + self.optimizer

    @property
    def per_device(self) -> float:
        return (self.states / self.devices + self.activations + self.gathered) * (1 + HEADROOM)


def estimate_memory(
    config: MoEConfig,
    seq_len: int,
    micro_batch_tokens: int,
    precision: str = "fp32",
    devices: int = 1,
) -> MemoryEstimate:
    n_total = count(config, seq_len).n_total
    params = MASTER_BYTES * n_total
    block = (n_total - config.vocab_size * config.d_model) / config.n_layers
    return MemoryEstimate(
        parameters=params,
        gradients=params,
        optimizer=ADAM_STATES * params,
        activations=activation_bytes(config, seq_len, micro_batch_tokens // seq_len, precision),
        gathered=0.0 if devices == 1 else 2 * block * (2 if precision == "bf16" else 4),
        devices=devices,
        micro_batch_tokens=micro_batch_tokens,
    )


@dataclass(frozen=True)
class Fit:
    """How one run fits a device: its devices, micro-batch, memory, and what was changed."""

    memory: MemoryEstimate | None  # None: nothing fits
    changed: str  # "" as planned; else what was changed, or why it cannot fit


def fit_to_device(
    config: MoEConfig,
    seq_len: int,
    micro_batch_tokens: int,
    precision: str,
    device_bytes: float,
    max_devices: int = 64,
    batch_tokens: int | None = None,
) -> Fit:
    """The fewest devices (1, 2, 4, …, `max_devices`, FSDP beyond one) on which the run fits,
    halving the micro-batch down to one sequence before adding devices."""
    devices = 1
    while devices <= max_devices:
        micro = micro_batch_tokens
        while micro >= seq_len:
            estimate = estimate_memory(config, seq_len, micro, precision, devices)
            if estimate.per_device <= device_bytes:
                changes = []
                if devices > 1:
                    changes.append(f"{devices} devices (FSDP)")
                if micro != micro_batch_tokens:
                    changes.append(f"micro-batch ÷{micro_batch_tokens // micro}")
                return Fit(estimate, ", ".join(changes))
            if micro // 2 < seq_len or (micro // 2) % seq_len:
                break
            micro //= 2
        devices *= 2
    one = estimate_memory(config, seq_len, seq_len, precision, max_devices)
    return Fit(
        None,
        f"does not fit {max_devices} devices of {device_bytes / 2**30:.0f} GiB even at one "
        f"sequence per micro-batch ({one.per_device / 2**30:.1f} GiB per device)",
    )
