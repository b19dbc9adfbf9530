import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))  # tests/oracles.py

# "default" (make test, CI) draws the same examples every run, so a red run is reproducible;
# HYPOTHESIS_PROFILE=thorough explores fresh random examples, five times as many.
settings.register_profile(
    "default", max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def shared_dir():
    """../shared (the steering repo's read-only folder); tests using it skip when it is absent."""
    path = os.environ.get("CONVMATRIX_SHARED", SHARED)
    if not os.path.isdir(path):
        pytest.skip("../shared is not present")
    return os.path.abspath(path)
