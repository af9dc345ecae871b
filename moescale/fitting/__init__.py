"""Laws fitted to tables: the compute law, isoFLOP optima and their power laws, parametric
and routed laws, the loss envelope, and extrapolation checks. numpy/scipy/pandas only."""

from moescale.fitting.budgets import batch_adjusted_budget, group_budgets
from moescale.fitting.compute_law import ComputeLaw, fit_compute_law
from moescale.fitting.envelope import EnvelopeFit, fit_envelope
from moescale.fitting.extrapolation import ExtrapolationCheck, extrapolation_check
from moescale.fitting.isoflop import EdgeOptimumWarning, IsoflopFit, fit_isoflop
from moescale.fitting.parametric import ParametricFit, fit_parametric
from moescale.fitting.pipeline import FitReport, fit_all, load_fit
from moescale.fitting.powerlaw import PowerLaw, fit_power_law
from moescale.fitting.routed import RoutedFit, fit_routed, saturating_experts

__all__ = [
    "ComputeLaw",
    "EdgeOptimumWarning",
    "EnvelopeFit",
    "ExtrapolationCheck",
    "FitReport",
    "IsoflopFit",
    "ParametricFit",
    "PowerLaw",
    "RoutedFit",
    "batch_adjusted_budget",
    "extrapolation_check",
    "fit_compute_law",
    "fit_all",
    "fit_envelope",
    "fit_isoflop",
    "fit_parametric",
    "fit_power_law",
    "fit_routed",
    "group_budgets",
    "load_fit",
    "saturating_experts",
]
