"""isoFLOP sweeps: spec, planning, Ray scheduling, and the results they consolidate."""

from moescale.sweeps.plan import Plan, PlannedRun, plan_sweep
from moescale.sweeps.spec import SweepSpec, load_sweep_spec

__all__ = ["Plan", "PlannedRun", "SweepSpec", "load_sweep_spec", "plan_sweep"]
