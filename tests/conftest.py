"""Shared test setup: the `gpu` marker skips without CUDA; Triton runs interpreted on a CPU machine."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


HAS_CUDA = _cuda_available()

# Triton chooses interpreted or compiled kernels when a kernel is decorated, so this must be set
# before any test module imports triton: on a CPU machine kernels run in the interpreter.
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (runs in `gpuprobe selftest --gpu`)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """tests/fixtures: the real H100 data the tests use (copied from the project's shared fixtures)."""
    return FIXTURES


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
