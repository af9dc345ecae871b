"""Published scaling-law tables shipped with the package (citations in README.md beside)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from moescale.published.constants import (  # noqa: F401  (re-exported)
    DENSE_A,
    EPOCH_CHINCHILLA,
    HOFFMANN_APPROACH3,
    HUNYUAN_COMPUTE_A,
    HUNYUAN_COMPUTE_B,
    HUNYUAN_D_OPT,
    HUNYUAN_N_OPT,
    HUNYUAN_REF,
    HUNYUAN_TARGET,
    MUENNIGHOFF_BASE,
    MUENNIGHOFF_FREE_EPOCHS,
    MUENNIGHOFF_R_STAR_D,
    MUENNIGHOFF_R_STAR_N,
)

HERE = Path(__file__).parent


def epoch_chinchilla() -> pd.DataFrame:
    """Chinchilla's Figure 4 points as extracted by Besiroglu et al. 2024 (arXiv 2404.10102),
    with our names added: n_active = N, flops = C, tokens = C/(6N), final_loss."""
    table = pd.read_csv(HERE / "epoch_chinchilla_svg.csv")
    table["n_active"] = table["Model Size"]
    table["flops"] = table["Training FLOP"]
    table["tokens"] = table["flops"] / (6 * table["n_active"])
    table["final_loss"] = table["loss"]
    return table


def clark2022_routing() -> pd.DataFrame:
    """Final validation losses of Clark et al. 2022's routed and dense models (arXiv 2202.01169)."""
    return pd.read_csv(HERE / "clark2022_routing_final.csv")
