"""Published constants, each once and with its citation. Plain numbers: anything that fits or
draws builds its own objects from them.

Units are the publication's own. Hunyuan-Large counts its FLOPs and parameters its own way
(its C and N are not this toolkit's counted `flops` and `n_active`), so its laws are a
reference in another unit, not a point on our axes, unless converted.
"""

from __future__ import annotations

# Hunyuan-Large technical report (Sun et al. 2024, arXiv 2411.02265), §2.3.1.
HUNYUAN_REF = "Hunyuan-Large report (arXiv 2411.02265, §2.3.1)"
HUNYUAN_COMPUTE_A = 9.59  # C ≈ 9.59·N·D + 2.3e8·D for its MoE family
HUNYUAN_COMPUTE_B = 2.3e8
HUNYUAN_N_OPT = (5.9e-3, 0.5305)  # N_opt = 5.9e-3 · C^0.5305 (on the batch-adjusted C_min)
HUNYUAN_D_OPT = (3.2, 0.50)  # D_opt = 3.2 · C^0.50
HUNYUAN_TARGET = (3.1e24, 58.1e9, 5.6e12)  # (C, N_opt, D_opt) of its training run

DENSE_A = 6.0  # the 6·N·D rule of dense transformers (Kaplan et al. 2020, arXiv 2001.08361)

# Besiroglu, Erdil, Barnett, You (2024), "Chinchilla Scaling: A replication attempt",
# arXiv 2404.10102: Huber fit to Chinchilla's Figure 4 points (5 highest losses dropped).
EPOCH_CHINCHILLA = {
    "E": 1.8172,
    "A": 482.01,
    "B": 2085.43,
    "alpha": 0.3478,
    "beta": 0.3658,
    "allocation_exponent": 0.513,
}
# Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models", Approach 3.
HOFFMANN_APPROACH3 = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}

# Muennighoff et al. (2023), "Scaling Data-Constrained Language Models", arXiv 2305.16264,
# §4 and their repository's plotstables/return.ipynb: the decay constants of repeated data
# and excess parameters, and the fresh-data law they were fitted with (α = β there).
MUENNIGHOFF_FREE_EPOCHS = (
    4.0  # up to ~4 passes, repeated tokens are worth almost as much as fresh (§5)
)
MUENNIGHOFF_R_STAR_D = 15.387756
MUENNIGHOFF_R_STAR_N = 5.309743
MUENNIGHOFF_BASE = {
    "log_A": 6.255414,
    "log_B": 7.3049974,
    "log_E": 0.6254804,
    "alpha": 0.3526596,
    "beta": 0.3526596,
}
