"""The MoE family: exact parameter and FLOP accounting, routing rules, dispatch, shape rule."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from moescale.errors import UserError
from moescale.models import (
    MoEConfig,
    MoETransformer,
    count,
    family,
    kv_cache_bytes,
    optimal_lr_at_batch,
    param_groups,
)
from moescale.models.experts import RoutedExperts, expert_matmul
from moescale.models.flop_counter import FLOP_FORMULAS
from moescale.models.layers import apply_rope, rope_tables, swiglu_activation
from moescale.models.routing import expert_capacity, route

BASE = dict(vocab_size=256, d_model=64, n_layers=4, n_heads=4, expert_hidden=96, max_seq_len=64)
CONFIGS = {
    "dense": MoEConfig(**BASE, n_experts=0),
    "moe_top1": MoEConfig(**BASE, n_experts=8, top_k=1),
    "moe_top2": MoEConfig(**BASE, n_experts=8, top_k=2, n_shared_experts=2, shared_hidden=64),
    "gqa": MoEConfig(**BASE, n_experts=4, n_kv_heads=1, qk_norm=True),
    "cla": MoEConfig(**BASE, n_experts=4, n_kv_heads=2, cla_share=2, qk_norm=True),
    "untied": MoEConfig(**BASE, n_experts=4, tie_embeddings=False, n_shared_experts=0),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_n_total_equals_the_models_parameter_count(name):
    config = CONFIGS[name]
    model = MoETransformer(config)
    assert count(config, 64).n_total == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", CONFIGS)
def test_n_active_is_what_touches_one_token(name):
    """Rebuild n_active from the module tree: drop the input table, keep only top-k/E of
    each routed expert stack, and count the (possibly tied) output projection."""
    config = CONFIGS[name]
    model = MoETransformer(config)
    active = 0.0
    for module in model.modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        if isinstance(module, RoutedExperts):
            own *= config.top_k / config.n_experts
        if module is model.embedding:
            own = 0
        active += own
    active += config.vocab_size * config.d_model if config.tie_embeddings else 0
    accounting = count(config, 64)
    assert accounting.n_active == round(active)
    assert accounting.n_embedding == config.vocab_size * config.d_model


@pytest.mark.parametrize("name", CONFIGS)
def test_training_flops_match_the_flop_counter(name):
    config = CONFIGS[name]
    torch.manual_seed(0)
    model = MoETransformer(config)
    batch, seq_len = 2, 64
    tokens = torch.randint(0, config.vocab_size, (batch, seq_len))
    counter = FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS)
    with counter:
        model(tokens, tokens).loss.backward()
    measured = counter.get_total_flops() / (batch * seq_len)
    predicted = count(config, seq_len).flops_per_token
    assert measured > 0
    assert predicted == pytest.approx(measured, rel=0.02)


def test_hunyuan_large_accounting_on_the_meta_device():
    config = MoEConfig.hunyuan_large()
    accounting = count(config, 4096)
    assert accounting.n_total == pytest.approx(389e9, rel=0.01)
    assert 50e9 <= accounting.n_active <= 53e9
    with torch.device("meta"):
        model = MoETransformer(config)
    assert sum(p.numel() for p in model.parameters()) == accounting.n_total
    mha = config.replace(n_kv_heads=config.n_heads, cla_share=1)
    gqa = config.replace(cla_share=1)
    assert kv_cache_bytes(config, 1) / kv_cache_bytes(mha, 1) == pytest.approx(0.05)
    # Table 2 of the report, per token in bf16: 4·n_kv·d_head·layers for GQA
    assert kv_cache_bytes(gqa, 1) == 4 * 8 * 80 * 64
    assert kv_cache_bytes(config, 1000) == 1000 * 2 * 8 * 80 * 64


def test_flops_grow_with_sequence_length_only_through_attention():
    config = CONFIGS["cla"]
    short, long = count(config, 128), count(config, 1024)
    diff = {k: long.forward[k] - short.forward[k] for k in short.forward}
    assert diff.pop("attention_scores_values") > 0
    assert all(v == 0 for v in diff.values())


# --- routing on hand-made router outputs ---------------------------------------------


def _logits_for(choices: list[int], n_experts: int) -> torch.Tensor:
    """Router logits that make token t choose expert choices[t] first, then the next expert."""
    logits = torch.zeros(len(choices), n_experts)
    for t, e in enumerate(choices):
        logits[t, e] = 5.0
        logits[t, (e + 1) % n_experts] = 2.0
    return logits


def test_drop_routing_keeps_the_first_tokens_up_to_capacity():
    # 8 tokens, 4 experts, top-1, capacity factor 1 → 2 slots per expert; 6 tokens want expert 0
    choices = [0, 0, 0, 0, 0, 0, 1, 2]
    a = route(_logits_for(choices, 4), top_k=1, routing="drop", capacity_factor=1.0)
    assert expert_capacity(8, 1, 4, 1.0) == 2
    assert torch.bincount(a.expert, minlength=4).tolist() == [2, 1, 1, 0]
    assert sorted(a.token[a.expert == 0].tolist()) == [0, 1]  # earliest tokens win
    assert a.dropped_frac.item() == pytest.approx(4 / 8)
    assert a.recycled_frac.item() == 0


def test_recycle_routing_moves_overflow_to_experts_with_room():
    choices = [0, 0, 0, 0, 0, 0, 1, 2]
    torch.manual_seed(1)
    a = route(_logits_for(choices, 4), top_k=1, routing="recycle", capacity_factor=1.0)
    counts = torch.bincount(a.expert, minlength=4).tolist()
    assert counts == [2, 2, 2, 2]  # 4 overflow tokens filled the 4 free slots
    assert a.dropped_frac.item() == 0
    assert a.recycled_frac.item() == pytest.approx(4 / 8)
    assert sorted(a.token.tolist()) == list(range(8))  # every token still computed once
    probs = torch.softmax(_logits_for(choices, 4), -1)
    assert torch.allclose(a.weight, probs[a.token, a.expert])  # gated by the new expert's prob


def test_recycle_drops_only_when_no_capacity_remains():
    # capacity factor 0.5: 1 slot per expert, 4 slots for 8 tokens → exactly 4 dropped
    a = route(_logits_for([0] * 8, 4), top_k=1, routing="recycle", capacity_factor=0.5)
    assert torch.bincount(a.expert, minlength=4).tolist() == [1, 1, 1, 1]
    assert a.dropped_frac.item() == pytest.approx(0.5)
    assert a.recycled_frac.item() == pytest.approx(3 / 8)


def test_top2_capacity_priority_is_choice_major():
    # 4 tokens, top-2, 2 experts, factor 0.5 → 2 slots each; all first choices are expert 0
    logits = torch.tensor([[3.0, 1.0]] * 4)
    a = route(logits, top_k=2, routing="drop", capacity_factor=0.5)
    kept = {(t, e) for t, e in zip(a.token.tolist(), a.expert.tolist(), strict=True)}
    assert kept == {(0, 0), (1, 0), (0, 1), (1, 1)}


def test_aux_and_z_loss_equal_their_formulas():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [2.0, 0.0, 1.0], [0.0, 0.0, 3.0]])
    a = route(logits, top_k=1)
    probs = torch.softmax(logits, -1)
    f = torch.tensor([2, 1, 1]) / 4  # tokens choosing experts 0, 1, 0, 2
    assert a.aux_loss.item() == pytest.approx(3 * float((f * probs.mean(0)).sum()), rel=1e-6)
    z = torch.logsumexp(logits, -1).square().mean()
    assert a.z_loss.item() == pytest.approx(z.item(), rel=1e-6)
    # perfectly balanced uniform router: the loss is its minimum, 1
    assert route(torch.zeros(6, 3), top_k=1).aux_loss.item() == pytest.approx(
        3 * sum((1 / 3) * (1 / 3) for _ in range(3)), rel=1e-6
    )


def test_model_reports_routing_statistics_per_layer():
    config = CONFIGS["moe_top1"].replace(routing="drop", capacity_factor=0.5)
    model = MoETransformer(config)
    out = model(torch.randint(0, 256, (2, 32)), torch.randint(0, 256, (2, 32)))
    assert len(out.routing) == config.n_layers
    for layer in out.routing:
        assert layer.expert_fraction.shape == (config.n_experts,)
        assert layer.expert_fraction.sum().item() == pytest.approx(1 - layer.dropped_frac)
        assert layer.dropped_frac >= 0.5 - 1e-6  # half the slots at most
    expected = out.ce_loss + config.aux_loss_coef * out.aux_loss + config.z_loss_coef * out.z_loss
    assert out.loss.item() == pytest.approx(expected.item())


# --- dispatch ------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(torch, "_grouped_mm"), reason="this torch has no _grouped_mm")
@pytest.mark.parametrize("top_k", [1, 2])
def test_grouped_and_loop_dispatch_agree(top_k):
    config = CONFIGS["moe_top2"].replace(top_k=top_k)
    torch.manual_seed(0)
    grouped = MoETransformer(config, dispatch="grouped")
    loop = MoETransformer(config, dispatch="loop")
    loop.load_state_dict(grouped.state_dict())
    tokens = torch.randint(0, 256, (3, 48))
    out_g, out_l = grouped(tokens, tokens), loop(tokens, tokens)
    torch.testing.assert_close(out_g.logits, out_l.logits, rtol=1e-5, atol=1e-5)
    out_g.loss.backward()
    out_l.loss.backward()
    for (name, p_g), p_l in zip(grouped.named_parameters(), loop.parameters(), strict=True):
        torch.testing.assert_close(p_g.grad, p_l.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_the_expert_loop_gives_autograds_numbers_bit_for_bit():
    # the reference: autograd through weight[e] and a concatenation; an expert with no rows
    # must get a zero gradient, not stale memory
    torch.manual_seed(0)
    counts = torch.tensor([5, 0, 7, 3])
    x = torch.randn(15, 6)
    weight = torch.randn(4, 6, 10)
    grad = torch.randn(15, 10)
    x_loop, w_loop = x.clone().requires_grad_(), weight.clone().requires_grad_()
    x_ref, w_ref = x.clone().requires_grad_(), weight.clone().requires_grad_()
    out_loop = expert_matmul(x_loop, w_loop, counts, "loop")
    pieces = torch.split(x_ref, counts.tolist())
    out_ref = torch.cat([rows @ w_ref[e] for e, rows in enumerate(pieces)])
    out_loop.backward(grad)
    out_ref.backward(grad)
    assert torch.equal(out_loop, out_ref)
    assert torch.equal(x_loop.grad, x_ref.grad)
    assert torch.equal(w_loop.grad, w_ref.grad)
    assert not w_loop.grad[1].any()


@pytest.mark.parametrize("top_k", [1, 3])
def test_dropless_gather_and_sum_give_the_scatters_numbers_bit_for_bit(top_k):
    # dropless routing moves rows by gathers and sums each token's k rows in the order the
    # serial scatter (index_add_, index_put_) adds them; forcing the scatter must agree
    torch.manual_seed(top_k)
    experts = RoutedExperts(8, 16, 12, dispatch="loop")
    for p in experts.parameters():
        torch.nn.init.normal_(p, 0.0, 0.3)
    x, grad = torch.randn(300, 16), torch.randn(300, 16)
    assignment = route(torch.randn(300, 8), top_k, "dropless", None)
    assert assignment.complete
    results = []
    for complete in (True, False):
        inputs = x.clone().requires_grad_()
        experts.zero_grad()
        out = experts(inputs, dataclasses.replace(assignment, complete=complete))
        out.backward(grad)
        results.append((out, inputs.grad, experts.w_gate_up.grad, experts.w_down.grad))
    for gathered, scattered in zip(*results, strict=True):
        assert torch.equal(gathered, scattered)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_and_swiglu_give_the_plain_formulas_numbers_bit_for_bit(dtype):
    # both are autograd Functions that skip torch.cat; their numbers must be the formula's
    torch.manual_seed(0)
    cos, sin = rope_tables(16, 32, 10_000.0)

    def plain_rope(x):
        x1, x2 = x.float().chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).to(x.dtype)

    def plain_swiglu(gate_up):
        gate, up = gate_up.chunk(2, dim=-1)
        return torch.nn.functional.silu(gate) * up

    for fused, plain, shape in (
        (lambda x: apply_rope(x, cos, sin), plain_rope, (2, 3, 32, 16)),
        (swiglu_activation, plain_swiglu, (40, 24)),
    ):
        x = torch.randn(shape, dtype=dtype)
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_a, out_b = fused(a), plain(b)
        grad = torch.randn_like(out_b)
        out_a.backward(grad)
        out_b.backward(grad)
        assert torch.equal(out_a, out_b)
        assert torch.equal(a.grad, b.grad)


def test_a_compiled_fp32_model_trains_on_the_cpu():
    # recipe.compile: torch.compile's shape propagation refused fp32 grouped_mm on the CPU (a
    # crash before the first step); compiled, the experts take the loop and agree with eager
    config = CONFIGS["moe_top2"]
    torch.manual_seed(0)
    eager = MoETransformer(config)
    compiled = MoETransformer(config)
    compiled.load_state_dict(eager.state_dict())
    tokens = torch.randint(0, 256, (2, 32))
    out_e = eager(tokens, tokens)
    out_c = torch.compile(compiled, backend="aot_eager")(tokens, tokens)
    out_e.loss.backward()
    out_c.loss.backward()
    torch.testing.assert_close(out_c.loss, out_e.loss, rtol=1e-5, atol=1e-6)
    grads = zip(compiled.parameters(), eager.parameters(), strict=True)
    for p_c, p_e in grads:
        torch.testing.assert_close(p_c.grad, p_e.grad, rtol=1e-4, atol=1e-6)


def test_auto_dispatch_falls_back_to_the_loop_for_unaligned_widths():
    # d_model 18 × 4 bytes is no multiple of 16: grouped_mm refuses it, the loop serves
    config = MoEConfig(d_model=18, n_heads=1, n_layers=1, n_experts=4, expert_hidden=22)
    torch.manual_seed(0)
    auto = MoETransformer(config, dispatch="auto")
    loop = MoETransformer(config, dispatch="loop")
    loop.load_state_dict(auto.state_dict())
    tokens = torch.randint(0, 256, (2, 16))
    torch.testing.assert_close(auto(tokens).logits, loop(tokens).logits)


# --- config validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (dict(n_heads=4, n_kv_heads=3), "n_kv_heads"),
        (dict(n_layers=3, cla_share=2), "cla_share"),
        (dict(n_experts=4, top_k=5), "top_k"),
        (dict(routing="dropless", capacity_factor=1.25), "capacity_factor"),
        (dict(routing="drop", capacity_factor=None), "capacity_factor"),
        (dict(routing="sideways", capacity_factor=1.0), "routing"),
        (dict(d_model=64, n_heads=3), "n_heads"),
        (dict(n_experts=0, n_shared_experts=0), "n_shared_experts"),
    ],
)
def test_impossible_shapes_name_the_field(changes, field):
    with pytest.raises(UserError, match=rf"MoEConfig\.{field} "):
        MoEConfig(**{**BASE, **changes})


# --- the family shape rule ------------------------------------------------------------


@pytest.mark.parametrize("target", np.logspace(4, math.log10(2e9), 12).tolist())
def test_family_hits_the_target_within_ten_percent(target):
    config = family(target)
    assert count(config, 256).n_active == pytest.approx(target, rel=0.10)
    assert config.n_experts == 16 and config.top_k == 1 and config.n_shared_experts == 1


def test_family_respects_fixed_rules():
    config = family(1e5, n_layers=2, n_experts=8, top_k=2, cla_share=1)
    assert (config.n_layers, config.n_experts, config.top_k) == (2, 8, 2)
    sizes = [count(family(n, n_layers=2), 1).n_active for n in (2e4, 5e4, 1.2e5)]
    assert sizes == sorted(sizes)


# --- optimizer groups and the batch-size learning-rate rule ----------------------------


def test_param_groups_give_routed_experts_their_own_learning_rate():
    model = MoETransformer(CONFIGS["moe_top1"])
    groups = {g["name"]: g for g in param_groups(model, lr=1e-3, routed_lr_scale=0.31)}
    assert groups["routed_experts"]["lr"] == pytest.approx(3.1e-4)
    assert groups["no_decay"]["weight_decay"] == 0
    assert all(p.dim() == 1 for p in groups["no_decay"]["params"])
    grouped = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each exactly once
    n_routed = sum(p.numel() for p in groups["routed_experts"]["params"])
    assert n_routed == 4 * 8 * 3 * 64 * 96


def test_optimal_lr_peaks_at_the_noise_scale():
    assert optimal_lr_at_batch(1024, 1024, 3e-3) == pytest.approx(3e-3)
    assert optimal_lr_at_batch(256, 1024, 3e-3) < 3e-3
    assert optimal_lr_at_batch(256, 1024, 1.0) == pytest.approx(2 / (2 + 0.5))


# --- design variants at equal activated compute ------------------------------------------


def test_variants_keep_activated_size_and_flops_and_change_total_size():
    from moescale.models import family
    from moescale.models.variants import Variant, apply_variant

    base = family(2e5, n_layers=2, n_experts=8, top_k=1, cla_share=1, gqa_ratio=1, max_seq_len=64)
    variants = {
        "dense": Variant(name="dense", dense=True),
        "e32": Variant(name="e32", experts=32),
        "e8-g4": Variant(name="e8-g4", granularity=4),
    }
    seq_len = 64
    base_count = count(base, seq_len)
    totals = {}
    for name, variant in variants.items():
        config = apply_variant(base, variant)
        counted = count(config, seq_len)
        assert counted.n_active == pytest.approx(base_count.n_active, rel=0.02), name
        assert counted.flops_per_token == pytest.approx(base_count.flops_per_token, rel=0.02), name
        # and torch's counter, watching the real kernels, agrees that the compute is equal
        model = MoETransformer(config)
        tokens = torch.randint(0, config.vocab_size, (2, seq_len))
        counter = FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS)
        with counter:
            model(tokens, tokens).loss.backward()
        measured = counter.get_total_flops() / tokens.numel()
        assert measured == pytest.approx(base_count.flops_per_token, rel=0.02), name
        totals[name] = counted.n_total
    assert totals["dense"] < base_count.n_total < totals["e32"]
    # granularity keeps the experts' parameters (only the router grows with the expert count)
    assert totals["e8-g4"] == pytest.approx(base_count.n_total, rel=0.02)
    assert apply_variant(base, variants["e8-g4"]).top_k == 4 * base.top_k


def test_a_variant_that_cannot_split_its_experts_is_an_error():
    from moescale.errors import UserError
    from moescale.models import family
    from moescale.models.variants import Variant, apply_variant

    base = family(2e5, n_layers=2, n_experts=8, top_k=1, cla_share=1, gqa_ratio=1)
    with pytest.raises(UserError, match="does not split into"):
        apply_variant(base, Variant(name="g7", granularity=7 * base.expert_hidden))
    with pytest.raises(ValueError, match="dense takes no experts"):
        Variant(name="bad", dense=True, experts=8)


# --- the 2026 recipe: sigmoid scores, auxiliary-loss-free balancing, dense first layers ---

RECIPE_CONFIGS = {
    "sigmoid_bias": MoEConfig(
        **BASE, n_experts=8, top_k=2, score_func="sigmoid", route_norm=True, balance="bias"
    ),
    "dense_first": MoEConfig(**BASE, n_experts=8, top_k=2, n_dense_layers=1),
    "dense_first_wide": MoEConfig(**BASE, n_experts=4, n_dense_layers=2, dense_hidden=200),
}


@pytest.mark.parametrize("name", RECIPE_CONFIGS)
def test_the_new_recipe_is_counted_exactly(name):
    """Parameters against sum(p.numel()) and training FLOPs against FlopCounterMode on the
    real module, for each new option."""
    config = RECIPE_CONFIGS[name]
    torch.manual_seed(0)
    model = MoETransformer(config)
    accounting = count(config, 64)
    assert accounting.n_total == sum(p.numel() for p in model.parameters())
    tokens = torch.randint(0, config.vocab_size, (2, 64))
    counter = FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS)
    with counter:
        model(tokens, tokens).loss.backward()
    assert accounting.flops_per_token == pytest.approx(counter.get_total_flops() / 128, rel=0.02)
    dense = sum(1 for b in model.blocks if not hasattr(b.ffn, "router"))
    assert dense == config.n_dense_layers
    if config.n_dense_layers and config.dense_hidden is None:  # as wide as an MoE layer's use
        moe = count(config.replace(n_dense_layers=0), 64)
        assert accounting.n_active == moe.n_active - config.n_dense_layers * config.d_model * 8


def test_the_selection_bias_steers_the_choice_and_never_the_gate_weights():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.5, 0.4, 0.3, 0.2]])
    plain = route(logits, 2, score_func="sigmoid")
    bias = torch.tensor([0.0, 0.0, 5.0, 0.0])  # expert 2 made attractive to select
    biased = route(logits, 2, score_func="sigmoid", bias=bias)
    assert 2 not in plain.expert.tolist()[:2] and set(biased.expert.tolist()) >= {2}
    scores = torch.sigmoid(logits)
    for token, expert, weight in zip(biased.token, biased.expert, biased.weight, strict=True):
        assert weight == pytest.approx(float(scores[token, expert]))  # the score, no bias
    normed = route(logits, 2, score_func="sigmoid", route_norm=True, bias=bias)
    totals = torch.zeros(2).index_add_(0, normed.token, normed.weight)
    assert totals.tolist() == pytest.approx([1.0, 1.0])
    assert biased.selected.sum() == 4 and biased.selected[2] == 2


def test_the_bias_moves_against_the_load_and_keeps_a_zero_mean():
    config = MoEConfig(**BASE, n_experts=4, balance="bias", bias_update_rate=0.1)
    model = MoETransformer(config)
    layer = model.blocks[0].ffn
    layer.load.copy_(torch.tensor([10.0, 2.0, 2.0, 2.0]))  # expert 0 overloaded
    model.update_balance()
    assert layer.expert_bias.tolist() == pytest.approx([-0.15, 0.05, 0.05, 0.05])
    assert float(layer.expert_bias.sum()) == pytest.approx(0.0, abs=1e-7)
    assert layer.load.sum() == 0  # counted afresh each step
    assert "blocks.0.ffn.expert_bias" in model.state_dict()  # checkpointed, resumed
    assert "blocks.0.ffn.load" not in model.state_dict()


def test_the_sequence_wise_balance_loss_is_deepseek_v3s_and_joins_the_loss():
    # two sequences of two tokens, two experts, top-1: the first sends both tokens to expert
    # 0 (f = [2, 0], P = its scores [σ, 1 − σ] with σ = sigmoid(2), the softmax of [2, 0]);
    # the second one to each (f = [1, 1], P = [1/2, 1/2]): DeepSeek-V3 eq. 17-20 by hand
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    sigma = 1 / (1 + math.exp(-2.0))
    found = route(logits, 1, seq_len=2).seq_aux_loss
    assert float(found) == pytest.approx((2 * sigma + 1.0) / 2)
    assert route(logits, 1).seq_aux_loss is None  # no sequences given: none computed
    config = MoEConfig(**BASE, n_experts=4, balance="bias", seq_aux_loss_coef=0.01)
    torch.manual_seed(0)
    model = MoETransformer(config)
    tokens = torch.randint(0, config.vocab_size, (2, 16))
    out = model(tokens, tokens)
    assert out.seq_aux_loss.requires_grad and out.seq_aux_loss.item() > 0
    # under bias balancing only the z-loss and the sequence-wise term join the CE
    expected = out.ce_loss + config.z_loss_coef * out.z_loss + 0.01 * out.seq_aux_loss
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    out.loss.backward()
    with_term = model.blocks[0].ffn.router.weight.grad.clone()
    model.zero_grad()
    plain = MoETransformer(config.replace(seq_aux_loss_coef=0.0))
    plain.load_state_dict(model.state_dict())
    off = plain(tokens, tokens)
    assert off.seq_aux_loss is None  # off: not computed at all
    off.loss.backward()
    assert not torch.allclose(with_term, plain.blocks[0].ffn.router.weight.grad)  # it trains


def test_old_configs_keep_their_run_ids():
    """The new fields at their defaults are left out of to_dict, so every id hashed before
    them holds; set, they are in it (and change the id)."""
    from moescale.models.config import RECIPE_DEFAULTS

    plain = MoEConfig(**BASE)
    assert not set(RECIPE_DEFAULTS) & set(plain.to_dict())
    assert MoEConfig.from_dict(plain.to_dict()) == plain
    sigmoid = plain.replace(score_func="sigmoid")
    assert sigmoid.to_dict()["score_func"] == "sigmoid"
    assert MoEConfig.from_dict(sigmoid.to_dict()) == sigmoid


@pytest.mark.parametrize(
    "change, message",
    [
        ({"score_func": "tanh"}, "score_func must be one of softmax, sigmoid"),
        ({"balance": "magic"}, "balance must be one of aux_loss, bias, none"),
        ({"bias_update_rate": 0}, "bias_update_rate must be > 0"),
        ({"seq_aux_loss_coef": -1.0}, "seq_aux_loss_coef must be >= 0"),
        ({"n_dense_layers": 4}, "n_dense_layers must be from 0 to below n_layers (4)"),
        ({"n_dense_layers": -1}, "n_dense_layers must be from 0 to below n_layers (4)"),
        ({"n_experts": 0, "n_dense_layers": 1}, "n_dense_layers must be 0 for a dense model"),
        ({"top_k": 1, "route_norm": True}, "route_norm with top_k 1 makes every gate weight 1"),
    ],
)
def test_bad_recipe_fields_are_named(change, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MoEConfig(**{**BASE, "n_experts": 4, **change})


# Released shapes (configs/published/, each file cites its source): published total and
# activated parameters, billions. The published "activated" count includes the input
# embedding, which our N leaves out (a lookup, no FLOPs).
PUBLISHED_SHAPES = {
    "mixtral-8x7b": (46.7, 12.9),  # Jiang et al. 2024, arXiv 2401.04088
    "olmoe-1b-7b": (6.9, 1.3),  # Muennighoff et al. 2024, arXiv 2409.02060, Table 1
    "qwen1.5-moe-a2.7b": (14.3, 2.7),  # Qwen team 2024, qwenlm.github.io/blog/qwen-moe
    "deepseekmoe-16b": (16.4, 2.8),  # Dai et al. 2024, arXiv 2401.06066
    "hunyuan-large": (389.0, 52.0),  # Sun et al. 2024, arXiv 2411.02265, Table 1
}


@pytest.mark.parametrize("name", PUBLISHED_SHAPES)
def test_released_shapes_have_their_published_parameter_counts(name):
    from pathlib import Path

    from moescale.models.config import load_model_yaml

    config, seq_len = load_model_yaml(
        Path(__file__).resolve().parents[1] / "configs" / "published" / f"{name}.yaml"
    )
    accounting = count(config, seq_len)
    total, active = PUBLISHED_SHAPES[name]
    assert accounting.n_total / 1e9 == pytest.approx(total, rel=0.01)
    # the published figures are rounded to 0.1B: within 0.05B of it, or 2%
    with_embedding = (accounting.n_active + accounting.n_embedding) / 1e9
    assert abs(with_embedding - active) <= max(0.05, 0.02 * active), with_embedding
    assert accounting.n_active < with_embedding * 1e9  # N leaves the input table out
