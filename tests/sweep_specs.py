"""The small sweeps the tests run for real, each defined once."""

from __future__ import annotations

# the family and recipe of every real sweep here: a 2-layer, 4-expert MoE on bytes, 64-token
# sequences, 16 to a batch
FAMILY = {"n_layers": 2, "n_experts": 4, "cla_share": 1, "gqa_ratio": 1, "qk_norm": False}
RECIPE = {"base": "tiny-cpu", "seq_len": 64, "batch_tokens": 1024, "eval_every": 50,
          "eval_tokens": 4096, "log_every": 10}  # fmt: skip

# Three budgets of three sizes (1,377 steps in all): enough runs for every fitting method, so
# one real sweep serves the sweep tests and `moescale validate`'s (tests/conftest.py).
TINY_SWEEP = {
    "name": "tinyval",
    "budgets": [4.0e9, 8.0e9, 1.6e10],
    "family": FAMILY,
    "sizes": {"n_active": [4000, 8000, 16000]},
    "recipe": RECIPE,
    "resources": {"cpus": 1},
    "min_steps": 10,
    "tokens_per_param": [1, 100000],
    "bracket": {"enabled": False},
}
