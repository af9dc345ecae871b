"""Shared fixtures: a token cache per test session, so tests never touch ~/.cache."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("moescale-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOESCALE_CACHE", str(cache))
        yield cache
