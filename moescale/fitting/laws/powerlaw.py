"""Power laws y = coef · x^exponent fitted by (weighted) least squares in log space, with
bootstrap samples kept so that predictions carry intervals."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

INTERVAL = (2.5, 97.5)  # percentiles of a 95% bootstrap interval


def percentile_interval(values: np.ndarray) -> tuple[float, float] | None:
    """The 95% percentile interval of bootstrap values (NaN ignored); None with fewer than 2."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return None
    low, high = np.percentile(values, INTERVAL)
    return float(low), float(high)


@dataclass(frozen=True)
class PowerLaw:
    """y = coef · x^exponent; `samples` are bootstrap (log coef, exponent) pairs, if any."""

    coef: float
    exponent: float
    samples: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __call__(self, x: float | np.ndarray) -> float | np.ndarray:
        return self.coef * np.asarray(x, dtype=float) ** self.exponent

    def interval(self, x: float) -> tuple[float, float] | None:
        """95% bootstrap interval of the prediction at x."""
        if self.samples is None or len(self.samples) < 2:
            return None
        predictions = np.exp(self.samples[:, 0] + self.samples[:, 1] * np.log(x))
        low, high = np.percentile(predictions, INTERVAL)
        return float(low), float(high)

    @property
    def coef_interval(self) -> tuple[float, float] | None:
        if self.samples is None or len(self.samples) < 2:
            return None
        low, high = np.percentile(np.exp(self.samples[:, 0]), INTERVAL)
        return float(low), float(high)

    @property
    def exponent_interval(self) -> tuple[float, float] | None:
        if self.samples is None or len(self.samples) < 2:
            return None
        low, high = np.percentile(self.samples[:, 1], INTERVAL)
        return float(low), float(high)

    def to_dict(self) -> dict:
        return {
            "coef": self.coef,
            "exponent": self.exponent,
            "coef_interval": self.coef_interval,
            "exponent_interval": self.exponent_interval,
            "bootstrap_samples": 0 if self.samples is None else len(self.samples),
            "samples": None if self.samples is None else self.samples.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> PowerLaw:
        return cls(data["coef"], data["exponent"], _samples(data.get("samples")))


def fit_log_linear(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None
) -> tuple[float, float]:
    """(log coef, exponent) of y = coef·x^exponent by weighted least squares on logs."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    w = np.ones_like(lx) if weights is None else np.asarray(weights, float)
    design = np.stack([np.ones_like(lx), lx], axis=1) * np.sqrt(w)[:, None]
    (log_coef, exponent), *_ = np.linalg.lstsq(design, ly * np.sqrt(w), rcond=None)
    return float(log_coef), float(exponent)


def fit_power_law(
    x: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray | None = None,
    samples: np.ndarray | None = None,
) -> PowerLaw:
    log_coef, exponent = fit_log_linear(x, y, weights)
    return PowerLaw(float(np.exp(log_coef)), exponent, samples)


@dataclass(frozen=True)
class SaturatingLaw:
    """y = floor + scale · (x / x_ref)^(-decay): a power law that levels off at `floor`, the
    shape of the optimal loss against compute (an irreducible loss plus a shrinking term).
    `samples` are bootstrap (floor, scale, decay) triples, if any."""

    floor: float
    scale: float
    decay: float
    x_ref: float
    samples: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __call__(self, x: float | np.ndarray) -> float | np.ndarray:
        return self.floor + self.scale * (np.asarray(x, dtype=float) / self.x_ref) ** (-self.decay)

    def interval(self, x: float) -> tuple[float, float] | None:
        if self.samples is None or len(self.samples) < 2:
            return None
        floor, scale, decay = self.samples.T
        low, high = np.percentile(floor + scale * (x / self.x_ref) ** (-decay), INTERVAL)
        return float(low), float(high)

    def to_dict(self) -> dict:
        return {
            "form": "floor + scale * (C / x_ref)^(-decay)",
            "floor": self.floor,
            "scale": self.scale,
            "decay": self.decay,
            "x_ref": self.x_ref,
            "bootstrap_samples": 0 if self.samples is None else len(self.samples),
            "samples": None if self.samples is None else self.samples.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> SaturatingLaw:
        return cls(
            data["floor"],
            data["scale"],
            data["decay"],
            data["x_ref"],
            _samples(data.get("samples")),
        )


def loss_law_from_dict(data: dict | None) -> SaturatingLaw | PowerLaw | None:
    """The optimal-loss law as written by `to_dict`: saturating when it has a floor."""
    if data is None:
        return None
    return SaturatingLaw.from_dict(data) if "floor" in data else PowerLaw.from_dict(data)


def _samples(values) -> np.ndarray | None:
    return None if values is None else np.asarray(values, float)


def fit_saturating_params(
    x: np.ndarray, y: np.ndarray, x_ref: float, weights: np.ndarray | None = None
) -> tuple[float, float, float]:
    """(floor, scale, decay) by weighted least squares: linear in (floor, scale) for a given
    decay, so the decay alone is searched (bounded, 0 to 2)."""
    from scipy.optimize import minimize_scalar

    z = np.log(np.asarray(x, float) / x_ref)
    y = np.asarray(y, float)
    w = np.sqrt(np.ones_like(y) if weights is None else np.asarray(weights, float))

    def solve(decay: float) -> tuple[float, np.ndarray]:
        design = np.stack([np.ones_like(z), np.exp(-decay * z)], axis=1)
        coeffs, *_ = np.linalg.lstsq(design * w[:, None], y * w, rcond=None)
        return float(np.sum((w * (design @ coeffs - y)) ** 2)), coeffs

    decay = minimize_scalar(lambda g: solve(g)[0], bounds=(1e-4, 2.0), method="bounded").x
    floor, scale = solve(decay)[1]
    return float(floor), float(scale), float(decay)
