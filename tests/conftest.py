"""Shared fixtures: small simulated pairs and the optional ../shared/data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from clemalign import simulate_pair

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data not available: {path} (the ../shared/data folder is "
                    "only present in the development checkout)")
    return path


@pytest.fixture(scope="session")
def small_pair():
    """A small simulated pair (about 28×38×12 µm EM inside a 68×68×10 µm LM field)."""
    return simulate_pair(seed=7, scale=0.3)
