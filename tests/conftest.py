"""Shared fixtures: one embedded Ray runtime per test session (starting Ray costs seconds)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_runtime():
    """A real local Ray runtime shared by every test that needs one."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()
