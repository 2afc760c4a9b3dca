"""Fixtures for the model tests: tiny trained detectors, one per configuration (each trained
once per session and shared by the contract tests)."""

from __future__ import annotations

import sys
from pathlib import Path

# This folder is named "model" like the package under test; with pytest's default "prepend"
# import mode tests/ is on sys.path and tests/model can shadow the real package as a namespace
# package (depending on which test folders are collected first). Put the repository root first
# and drop a namespace-package `model` that may already have been imported by mistake.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
if getattr(sys.modules.get("model"), "__file__", "") is None:
    for _name in [m for m in sys.modules if m == "model" or m.startswith("model.")]:
        del sys.modules[_name]

import pytest
import torch
from model_support import CASES, Case, fit_case

from model import AMADetector

torch.set_num_threads(1)

_CACHE: dict[str, AMADetector] = {}


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def fitted(case: Case) -> AMADetector:
    if case.name not in _CACHE:
        _CACHE[case.name] = fit_case(case)
    return _CACHE[case.name]
