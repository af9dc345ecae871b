"""Laws fitted to tables: the compute law, isoFLOP optima and their power laws, parametric
and routed laws, the loss envelope, and extrapolation checks. numpy/scipy/pandas only.
Exports load on first use, so the light parts (fitting.options, read by the CLI) import
without numpy or scipy."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CriticalBatchFit": "moescale.fitting.laws.critical_batch",
    "fit_critical_batch": "moescale.fitting.laws.critical_batch",
    "on_minimal_compute": "moescale.fitting.laws.critical_batch",
    "group_budgets": "moescale.fitting.laws.budgets",
    "ComputeLaw": "moescale.fitting.laws.compute_law",
    "fit_compute_law": "moescale.fitting.laws.compute_law",
    "EnvelopeFit": "moescale.fitting.laws.envelope",
    "fit_envelope": "moescale.fitting.laws.envelope",
    "ExtrapolationCheck": "moescale.fitting.studies.extrapolation",
    "extrapolation_check": "moescale.fitting.studies.extrapolation",
    "EdgeOptimumWarning": "moescale.fitting.laws.isoflop",
    "IsoflopFit": "moescale.fitting.laws.isoflop",
    "fit_isoflop": "moescale.fitting.laws.isoflop",
    "ParametricFit": "moescale.fitting.laws.parametric",
    "fit_parametric": "moescale.fitting.laws.parametric",
    "FitOptions": "moescale.fitting.options",
    "FitReport": "moescale.fitting.pipeline",
    "fit_all": "moescale.fitting.pipeline",
    "load_fit": "moescale.fitting.pipeline",
    "PowerLaw": "moescale.fitting.laws.powerlaw",
    "fit_power_law": "moescale.fitting.laws.powerlaw",
    "RoutedFit": "moescale.fitting.laws.routed",
    "fit_routed": "moescale.fitting.laws.routed",
    "saturating_experts": "moescale.fitting.laws.routed",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'moescale.fitting' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
