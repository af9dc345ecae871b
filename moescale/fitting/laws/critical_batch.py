"""The critical batch as a law of the loss, B_crit(L) = B*·L^(−1/α_B) (Kaplan et al. 2020,
eq. 5.3), fitted to the gradient noise scale every run logs (curves' `grad_noise_scale`:
McCandlish et al. 2018's simple noise scale, their estimate of B_crit); and the budget a
run would have needed far below that batch, C_min = C/(1 + B/B_crit(L)) (Kaplan eq. 5.4, as
the Hunyuan-Large report fitted its law on).

Conventions: B in tokens; L the training loss in nats per token, averaged over the last
LOSS_WINDOW logged points (a single batch's loss is noisy, and noise in L would flatten the
fitted slope); only points past MIN_STEP, where the noise scale's EMA has warmed up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from moescale.errors import UserError
from moescale.fitting.laws.budgets import group_budgets
from moescale.fitting.laws.powerlaw import PowerLaw, fit_log_linear, percentile_interval

MIN_STEP = 60  # three times the EMA's memory (training/noise_scale.py: decay 0.95)
LOSS_WINDOW = 3  # logged points the training loss is averaged over
MIN_RUNS = 3


@dataclass(frozen=True)
class CriticalBatchFit:
    """B_crit(L) = b_star · L^(−1/alpha_b) in tokens, L in nats/token; the law's bootstrap
    draws (runs resampled with replacement: points within a run are not independent)."""

    law: PowerLaw  # coef = B*, exponent = −1/α_B
    n_runs: int
    n_points: int
    loss_range: tuple[float, float]

    @property
    def b_star(self) -> float:
        return self.law.coef

    @property
    def alpha_b(self) -> float:
        return -1.0 / self.law.exponent

    def __call__(self, loss: float | np.ndarray) -> float | np.ndarray:
        return self.law(loss)

    def interval(self, loss: float) -> tuple[float, float] | None:
        """95% interval of B_crit at `loss`."""
        return self.law.interval(loss)

    @property
    def alpha_b_interval(self) -> tuple[float, float] | None:
        if self.law.samples is None:
            return None
        return percentile_interval(-1.0 / self.law.samples[:, 1])

    def to_dict(self) -> dict:
        return {
            "form": "B_crit(L) = b_star * L^(-1/alpha_b)",
            "units": "B in tokens; L: training loss, nats/token",
            "estimator": "the simple gradient noise scale tr(Sigma)/|G|^2 (McCandlish et al. "
            "2018, appendix A.1), EMA-smoothed, logged by every run",
            "b_star": self.b_star,
            "alpha_b": self.alpha_b,
            "alpha_b_interval": self.alpha_b_interval,
            "b_star_interval": self.law.coef_interval,
            "n_runs": self.n_runs,
            "n_points": self.n_points,
            "loss_range": list(self.loss_range),
            "law": self.law.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> CriticalBatchFit:
        return cls(
            PowerLaw.from_dict(data["law"]),
            data["n_runs"],
            data["n_points"],
            tuple(data["loss_range"]),
        )


def noise_points(curves: pd.DataFrame) -> pd.DataFrame:
    """(run_id, loss, grad_noise_scale) of every usable logged point: past MIN_STEP, a
    finite, positive noise scale, the loss averaged over its run's last LOSS_WINDOW points."""
    if curves is None or "grad_noise_scale" not in curves:
        return pd.DataFrame(columns=["run_id", "loss", "grad_noise_scale"])
    table = curves.sort_values(["run_id", "step"])
    loss = table.groupby("run_id", sort=False)["train_loss"].transform(
        lambda values: values.rolling(LOSS_WINDOW, min_periods=1).mean()
    )
    table = table.assign(loss=loss)
    noise = table["grad_noise_scale"].to_numpy(float)
    usable = (
        (table["step"] >= MIN_STEP)
        & np.isfinite(noise)
        & (noise > 0)
        & np.isfinite(table["loss"].to_numpy(float))
        & (table["loss"] > 0)
    )
    return table.loc[usable, ["run_id", "loss", "grad_noise_scale"]].reset_index(drop=True)


def fit_critical_batch(
    curves: pd.DataFrame, bootstrap: int = 200, seed: int = 0
) -> CriticalBatchFit:
    """B_crit(L) by least squares of log B_noise on log L, each run weighing the same however
    many points it logged; the interval from resampling whole runs."""
    points = noise_points(curves)
    runs = points["run_id"].unique()
    if len(runs) < MIN_RUNS:
        raise UserError(
            f"the critical batch needs the gradient noise scale of at least {MIN_RUNS} runs "
            f"past step {MIN_STEP}; the curves have {len(runs)} (runs trained before moescale "
            "measured it, or with recipe.noise_scale off, have none)"
        )
    codes, runs = pd.factorize(points["run_id"])
    loss = points["loss"].to_numpy(float)
    noise = points["grad_noise_scale"].to_numpy(float)
    per_run = np.bincount(codes)
    weights = 1.0 / per_run[codes]
    log_coef, exponent = fit_log_linear(loss, noise, weights)
    rng = np.random.default_rng(seed)
    rows_of = [np.flatnonzero(codes == run) for run in range(len(runs))]
    samples = []
    for _ in range(bootstrap):
        pick = rng.integers(0, len(runs), len(runs))
        if len(np.unique(pick)) < 2:
            continue
        rows = np.concatenate([rows_of[run] for run in pick])
        counts = np.concatenate([np.full(len(rows_of[run]), len(rows_of[run])) for run in pick])
        samples.append(fit_log_linear(loss[rows], noise[rows], 1.0 / counts))
    law = PowerLaw(float(np.exp(log_coef)), exponent, np.asarray(samples) if samples else None)
    return CriticalBatchFit(law, len(runs), len(points), (float(loss.min()), float(loss.max())))


def batch_penalty(runs: pd.DataFrame, law: CriticalBatchFit) -> np.ndarray:
    """1 + B/B_crit(L) of every run, B its batch in tokens and L its final loss: the factor its
    compute and tokens exceed what a batch far below the critical one would have needed."""
    batch = runs["batch_tokens"].to_numpy(float)
    return 1.0 + batch / law(runs["final_loss"].to_numpy(float))


def on_minimal_compute(runs: pd.DataFrame, law: CriticalBatchFit) -> pd.DataFrame:
    """The runs with `tokens`, `flops` and `budget_flops` as the batch-adjusted E_min, C_min
    (Kaplan eq. 5.4): each run's own penalty on its tokens and FLOPs, and each budget its
    runs' geometric mean penalty, so an isoFLOP group stays one group. Runs without a final
    loss (not completed) keep their nominal numbers: nothing is fitted on them."""
    penalty = batch_penalty(runs, law)
    penalty = np.where(np.isfinite(penalty), penalty, 1.0)
    group, _ = group_budgets(runs["budget_flops"].to_numpy(float))
    mean_log = np.bincount(group, np.log(penalty)) / np.bincount(group)
    return runs.assign(
        tokens=runs["tokens"].to_numpy(float) / penalty,
        flops=runs["flops"].to_numpy(float) / penalty,
        budget_flops=runs["budget_flops"].to_numpy(float) / np.exp(mean_log[group]),
        batch_penalty=penalty,
    )
