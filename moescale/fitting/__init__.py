"""Laws fitted to tables: the compute law, isoFLOP optima and their power laws, parametric
and routed laws, the loss envelope, and extrapolation checks. numpy/scipy/pandas only.
Exports load on first use, so the light parts (fitting.options, read by the CLI) import
without numpy or scipy."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "batch_adjusted_budget": "moescale.fitting.budgets",
    "group_budgets": "moescale.fitting.budgets",
    "ComputeLaw": "moescale.fitting.compute_law",
    "fit_compute_law": "moescale.fitting.compute_law",
    "EnvelopeFit": "moescale.fitting.envelope",
    "fit_envelope": "moescale.fitting.envelope",
    "ExtrapolationCheck": "moescale.fitting.extrapolation",
    "extrapolation_check": "moescale.fitting.extrapolation",
    "EdgeOptimumWarning": "moescale.fitting.isoflop",
    "IsoflopFit": "moescale.fitting.isoflop",
    "fit_isoflop": "moescale.fitting.isoflop",
    "ParametricFit": "moescale.fitting.parametric",
    "fit_parametric": "moescale.fitting.parametric",
    "FitOptions": "moescale.fitting.options",
    "FitReport": "moescale.fitting.pipeline",
    "fit_all": "moescale.fitting.pipeline",
    "load_fit": "moescale.fitting.pipeline",
    "PowerLaw": "moescale.fitting.powerlaw",
    "fit_power_law": "moescale.fitting.powerlaw",
    "RoutedFit": "moescale.fitting.routed",
    "fit_routed": "moescale.fitting.routed",
    "saturating_experts": "moescale.fitting.routed",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'moescale.fitting' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
