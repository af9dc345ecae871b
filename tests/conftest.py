"""Shared fixtures: a token cache per test session, so tests never touch ~/.cache; and the
order in which `make test`'s two workers (pytest-xdist, --dist loadgroup) take the tests."""

from __future__ import annotations

import os

import pytest

# `make test` runs two workers on two cores, and each starts Ray trials, CLI runs and notebook
# kernels of its own: the cores are always shared. torch's OpenMP threads spin while they wait
# for each other, and a spinning thread holds a core the other worker needs: measured here under
# one busy core, a tiny run's step took 105 ms on two threads, 23 ms on one, and 23 ms on two
# that yield while they wait. So every process the tests start runs torch on one thread unless
# it asks for more, and threads that wait give their core back. Set before torch is imported
# (libgomp reads these once), and inherited by every process the tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# a process the tests start that hangs can be asked where (SIGABRT: every thread's traceback)
os.environ.setdefault("PYTHONFAULTHANDLER", "1")


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory):
    """A real sweep on local Ray (sweep_specs.TINY_SWEEP: 9 runs), made once for the sweep tests
    and `moescale validate`'s; tests that change the folder work on a copy. The tests that
    take it are in the xdist group "sweeps", so one worker makes it. (spec, root, outcome)."""
    from sweep_specs import TINY_SWEEP

    from moescale.sweeps.runner import run_sweep
    from moescale.sweeps.spec import SweepSpec

    root = tmp_path_factory.mktemp("sweeps")
    spec = SweepSpec.model_validate(TINY_SWEEP)
    return spec, root, run_sweep(spec, root, show_progress=False)


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """One cache for the whole run: under pytest-xdist the workers' temp folders share a
    parent, so the default corpus is tokenized (and the matmul peak measured) once, not once a
    worker; every cache write is a private file or folder renamed into place."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        cache = tmp_path_factory.getbasetemp().parent / "moescale-cache"
        cache.mkdir(exist_ok=True)
    else:
        cache = tmp_path_factory.mktemp("moescale-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOESCALE_CACHE", str(cache))
        yield cache


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules that hold a slow end-to-end check first, each module's tests in their own
    order. pytest-xdist (--dist loadgroup) sends the grouped modules first, largest first, then
    single tests in this order: the two workers start on the long checks and finish together,
    where one left with the longest check last would run alone for minutes."""
    heavy = {item.module for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module not in heavy)  # stable: each module's own order
