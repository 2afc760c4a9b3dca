"""Fixtures for the worker tests: the tiny bundle loaded as a detector."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.detector import AMADetector


@pytest.fixture
def detector(tiny_bundle: Path) -> AMADetector:
    return AMADetector.load(tiny_bundle, device="cpu")
