"""The two tiers, and fixtures: torch's default thread count for every test, float64 mode, Python's own
SIGINT handler, the scripts as modules.

`python -m pytest` runs the fast tier: correctness (gradients, the contract, equivalences, bad input),
in about two minutes on two cores. `python -m pytest --slow` adds the slow tier: the 40,000-episode
grader runs, compiling, the scripts end to end, real signals (`-m slow` runs that tier alone).
"""

import signal

import pytest
import torch

from helpers import ROOT, import_script

# One thread in every test: the network's ops are far too small to share between cores, and on a busy
# machine OpenMP threads that wait on each other make each op hundreds of times slower. Scripts run in
# processes of their own keep their own count (the grader runs: torch's default).
TEST_THREADS = 1


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run the slow tier (tests marked slow)")


def pytest_collection_modifyitems(config, items):
    """Without --slow (or a -m that names the tier), the slow tests are deselected."""
    if config.getoption("--slow") or "slow" in config.getoption("-m"):
        return
    slow = [item for item in items if "slow" in item.keywords]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if "slow" not in item.keywords]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test starts with one thread, also after module-scoped fixtures that changed it: the count
    changes rounding, so without this a test's figures could depend on the order the tests run in."""
    torch.set_num_threads(TEST_THREADS)
    yield
    torch.set_num_threads(TEST_THREADS)


@pytest.fixture
def float64():
    """Run a test with float64 as torch's default dtype, so gradients can be compared tightly."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def python_sigint_handler():
    """Python's own SIGINT handler for the test, whatever the process started with (a shell starts
    background jobs with SIGINT ignored); the handler it had is put back after."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session")
def script():
    """`test.py` imported under a name that cannot collide with the standard library's `test`."""
    return import_script(ROOT / "test.py")


@pytest.fixture(scope="session")
def evaluate():
    """`scripts/evaluate.py` imported as a module."""
    return import_script(ROOT / "scripts" / "evaluate.py")
