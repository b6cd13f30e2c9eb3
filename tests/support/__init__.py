"""Test-only machinery the test modules share (fixtures live in tests/conftest.py); no test module imports
another. Never part of the installed package."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
