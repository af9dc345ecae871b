"""What a fit may be asked to do: the methods, the defaults, and `FitOptions`, the one record of
them that `fit_all` takes and fit.json keeps. Light (no numpy), so the CLI reads its defaults
from here."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from moescale.errors import OptionError

METHODS = ("isoflop", "parametric", "envelope", "all")
ISOFLOP_METHODS = ("auto", "slices", "akima", "parabola")  # the per-budget fit (isoflop.py)
DEFAULT_ISOFLOP_METHOD = "auto"
DEFAULT_BOOTSTRAP = 200
DEFAULT_TARGET_FACTOR = 100.0  # the default target: 100 × the largest budget
# what the laws are fitted on: the held-out loss in nats per token, or in bits per byte of
# the held-out text (comparable across tokenizers); each metric's runs-table column and unit
METRICS = {"loss": ("final_loss", "nats/token"), "bpb": ("final_bpb", "bits/byte")}


def check_target_flops(target: float | None) -> None:
    """A budget to predict at is a positive, finite number of FLOPs (or None: the default)."""
    if target is not None and not (math.isfinite(target) and target > 0):
        raise OptionError(f"{{target_flops}} must be a positive number, got {target}")


@dataclass(frozen=True, kw_only=True)
class FitOptions:
    """The choices a fit is made with, checked when made; fit.json records them (the
    bootstrap seed is fixed at 0)."""

    method: str = "all"
    target_flops: float | None = None  # None: DEFAULT_TARGET_FACTOR × the largest budget
    bootstrap: int = DEFAULT_BOOTSTRAP
    isoflop_method: str = DEFAULT_ISOFLOP_METHOD
    n_nearest: int | None = None  # per-budget fit on only the k sizes nearest the lowest loss
    variant: str | None = None  # a sweep of MoE variants: whose laws lead (None: the first)
    metric: str = "loss"  # METRICS: what every law is fitted on
    # the hold-out check (studies/extrapolation.py) refits the laws without the largest
    # budgets; it only words the headline's reach, so a study that scores the predictions
    # alone may leave it out (about a third of a fit's time)
    holdout_check: bool = True
    # every law on the batch-adjusted budget C_min = C/(1 + B/B_crit(L)) (Kaplan et al. 2020
    # eq. 5.4, as the Hunyuan-Large report fitted), B_crit(L) fitted to the runs' noise scales
    batch_adjusted: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise OptionError(
                f"{{method}} must be one of {', '.join(METHODS)}, got '{self.method}'"
            )
        if self.isoflop_method not in ISOFLOP_METHODS:
            raise OptionError(
                f"{{isoflop_method}} must be one of {', '.join(ISOFLOP_METHODS)}, "
                f"got '{self.isoflop_method}'",
            )
        check_target_flops(self.target_flops)
        if self.metric not in METRICS:
            raise OptionError(
                f"{{metric}} must be one of {', '.join(METRICS)}, got '{self.metric}'"
            )
        if self.bootstrap < 0:
            raise OptionError(f"{{bootstrap}} must be at least 0, got {self.bootstrap}")
        if self.n_nearest is not None and self.n_nearest < 3:
            raise OptionError(f"{{n_nearest}} must be at least 3, got {self.n_nearest}")
        # JSON gives ints where floats were written (1e24 stays float, but 0 would not)
        target = self.target_flops
        object.__setattr__(self, "target_flops", None if target is None else float(target))
        object.__setattr__(self, "bootstrap", int(self.bootstrap))

    @property
    def file_name(self) -> str:
        """Where `moescale fit` writes in a results folder: fit.json is the nats fit on the
        counted budget that the report, compare and validate read; the others their own."""
        metric = "" if self.metric == "loss" else f".{self.metric}"
        return f"fit{metric}{'.cmin' if self.batch_adjusted else ''}.json"

    def to_dict(self) -> dict:
        """Every choice, less `holdout_check` while on and `batch_adjusted` while off (so a
        fit.json written before they existed reads as made with the same options)."""
        data = asdict(self)
        if self.holdout_check:
            del data["holdout_check"]
        if not self.batch_adjusted:
            del data["batch_adjusted"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> FitOptions:
        """fit.json's options; keys it does not know (or an older file lacks) are left out."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known and v is not None})
