"""The assignment's three files, `assignment.py`, `utils.py` and `test.py`, run the way a student or grader runs them.

Each test copies them into an empty folder (or `assignment.py` beside `minimal_utils.py`,
renamed `utils.py`) and runs a script there with this interpreter. So the same tests prove
the files under the pinned requirements and, when CI runs this module under Python 3.8
with torch 1.6.0, numpy 1.19.2 and matplotlib 3.1.3 and nothing else (no tqdm, not the
project's package), in the assignment's own environment. For that reason this module is
Python 3.8 code and imports nothing of the project.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
UTILS_FILES = {"project": ROOT / "utils.py", "minimal": TESTS / "minimal_utils.py"}

pytestmark = pytest.mark.graded_files

# The grader's check: seeds 1337 / 42, 40,000 tasks, the mean of the last 500 query losses.
GRADER_RUN = """
import json, sys
import numpy as np
import torch
from assignment import MAML
from utils import SineGenerator

k, num_steps, episodes = map(int, sys.argv[1:])
np.random.seed(1337)
torch.manual_seed(42)
sine = SineGenerator(k=k, k_test=40)
maml = MAML(num_steps=num_steps)
for _, task in sine.generator(episodes):
    maml.train(task)
print(json.dumps(float(np.mean(maml.history[-500:]))))
"""

# What the assignment's own test.py does with these files: both learners on one task stream, then the plot.
ASSIGNMENT_TEST_SCRIPT = """
import json, sys
import matplotlib.pyplot as plt
import numpy as np
import torch
from assignment import MAML
from utils import SineGenerator, TrainFromScratch, plot_history

np.random.seed(1337)
torch.manual_seed(42)
sine = SineGenerator(k=10, k_test=40)
maml = MAML(num_steps=1)
scratch = TrainFromScratch(num_steps=10)
for _, task in sine.generator(int(sys.argv[1])):
    maml.train(task)
    scratch.train(task)
plot_history(scratch.history, maml.history)
plt.savefig("learning_curve.png")
plot_history(None, maml.history)
print(json.dumps({"maml": maml.history, "scratch": scratch.history}))
"""


# The skeleton's helper `MAML.copy_params`: new leaves that require grad, cut off from the originals.
COPY_PARAMS = """
import torch
from assignment import MAML

maml = MAML(num_steps=1)
fast = [2 * weight for weight in maml.initialization]
copies = MAML.copy_params(fast)
assert isinstance(copies, list) and len(copies) == len(fast)
for copy, weight in zip(copies, fast):
    assert copy is not weight and torch.equal(copy, weight.detach())
    assert copy.is_leaf and copy.requires_grad and copy.data_ptr() != weight.data_ptr()
sum(copy.sum() for copy in copies).backward()
assert all(weight.grad is None for weight in maml.initialization)
print("copies are independent leaves")
"""

# `python test.py` run as a script, which then says which of the project's modules it imported.
TEST_PY_ALONE = """
import runpy, sys
sys.argv = ["test.py", *sys.argv[1:]]
try:
    runpy.run_path("test.py", run_name="__main__")
finally:
    print("imported:", sorted(name for name in sys.modules if name.split(".")[0] == "maml_sine"))
"""


def run_beside(utils_file: Path, folder: Path, script: str, *args: object, one_thread: bool = True) -> str:
    """Run `script` in `folder` holding only `assignment.py`, `test.py` and `utils_file` (as `utils.py`);
    return its stdout. `one_thread`: with one OpenMP thread, which a short check runs fastest with;
    a grader run keeps torch's default, as a grader's would (the count changes the rounding)."""
    shutil.copy(ROOT / "assignment.py", folder / "assignment.py")
    shutil.copy(ROOT / "test.py", folder / "test.py")
    shutil.copy(utils_file, folder / "utils.py")
    environment = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH="")
    if one_thread:
        environment["OMP_NUM_THREADS"] = "1"
    else:
        environment.pop("OMP_NUM_THREADS", None)
    completed = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def environment_name() -> str:
    return f"Python {platform.python_version()}, torch {torch.__version__}"


def test_the_assignments_test_script_trains_and_draws(tmp_path):
    output = json.loads(run_beside(UTILS_FILES["project"], tmp_path, ASSIGNMENT_TEST_SCRIPT, 200))
    for history in output.values():
        assert len(history) == 200
        assert all(math.isfinite(loss) and loss >= 0 for loss in history)
    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "learning_curve.png").stat().st_size > 10_000


def test_test_py_runs_alone_and_imports_nothing_of_the_project(tmp_path):
    arguments = ["--episodes", "300", "--steps", "1", "--plot-tfs", "--no-show", "--out", "curve.png"]
    output = run_beside(UTILS_FILES["project"], tmp_path, TEST_PY_ALONE, *arguments)
    assert "MAML (S=1): query MSE" in output and "from scratch (10 Adam steps): query MSE" in output
    assert "imported: []" in output, output
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("utils", sorted(UTILS_FILES))
def test_copy_params_gives_independent_leaves(utils, tmp_path):
    assert run_beside(UTILS_FILES[utils], tmp_path, COPY_PARAMS).strip() == "copies are independent leaves"


@pytest.mark.slow
@pytest.mark.parametrize("utils", sorted(UTILS_FILES))
@pytest.mark.parametrize("k, num_steps, threshold", [(10, 1, 0.7), (5, 5, 0.8)], ids=["K10-S1", "K5-S5"])
def test_grader_run_meets_its_threshold(utils, k, num_steps, threshold, tmp_path, capsys):
    final_mse = json.loads(run_beside(UTILS_FILES[utils], tmp_path, GRADER_RUN, k, num_steps, 40_000, one_thread=False))
    with capsys.disabled():  # the figure belongs in the CI log, pass or fail
        print(
            f"\ngrader run K={k}, S={num_steps} beside the {utils} utils.py ({environment_name()}): "
            f"mean of the last 500 query losses = {final_mse:.4f}"
        )
    assert final_mse < threshold
