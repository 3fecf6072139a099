"""Fixtures: torch's default thread count for every test, float64 mode, and the scripts as modules."""

import pytest
import torch

from helpers import ROOT, import_script

DEFAULT_THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True)
def default_torch_threads():
    """Every test starts with torch's default thread count. The scripts' `main` sets one
    thread, also from module-scoped fixtures that run before this one; the count changes
    rounding, so without this the grader runs' figures would depend on test order."""
    torch.set_num_threads(DEFAULT_THREADS)
    yield
    torch.set_num_threads(DEFAULT_THREADS)


@pytest.fixture
def float64():
    """Run a test with float64 as torch's default dtype, so gradients can be compared tightly."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(scope="session")
def script():
    """`test.py` imported under a name that cannot collide with the standard library's `test`."""
    return import_script(ROOT / "test.py")


@pytest.fixture(scope="session")
def evaluate():
    """`scripts/evaluate.py` imported as a module."""
    return import_script(ROOT / "scripts" / "evaluate.py")
