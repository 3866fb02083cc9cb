"""Fixtures of the experiment tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.experiments.sandbox import Sandbox


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    """A scratch folder with its own MLflow store."""
    return Sandbox(tmp_path)
