"""Sine-wave tasks, the functional base-learner, the from-scratch baseline and the learning-curve plot.

This is the bottom layer: it imports nothing of the project. Everything MAML itself needs
from here is `BaseLearner`, so `assignment.py` also runs beside the assignment's original
`utils.py`; for the same reason each of the two files checks its own input.
"""

# This file runs unchanged from Python 3.8, torch 1.6 and matplotlib 3.1 (the assignment's own
# environment) on: annotations are never evaluated, and nothing newer is called unguarded.
from __future__ import annotations

import argparse
import contextlib
import math
import numbers
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # matplotlib is imported only when a figure is drawn: `import utils` stays light
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, np.pi)
X_RANGE = (-5.0, 5.0)
LAYER_SIZES = (1, 40, 40, 1)
PLOT_WINDOW = 300
TASK_PARTS = ("train_x", "train_y", "test_x", "test_y")  # the support set, then the query set

# The assignment's run (`python test.py` and the graders'): numpy and torch seeded before anything
# draws, SUPPORT_POINTS and QUERY_POINTS per task, one meta-update per task. A learner's final MSE
# is the mean of its last FINAL_WINDOW query losses, the figure the graders check.
NUMPY_SEED = 1337
TORCH_SEED = 42
SUPPORT_POINTS = 10
QUERY_POINTS = 40
EPISODES = 40_000
FINAL_WINDOW = 500
TFS_STEPS = 10  # the from-scratch learner's Adam steps per task in `python test.py --plot-tfs`


def _require_count(name: str, value: object, minimum: int) -> None:
    """Refuse anything but an integer >= minimum (bool is not an integer here)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


class SineGenerator:
    """Draws sine-wave regression tasks y = a * sin(x + p) from numpy's global RNG.

    Each task has `k` support points (to learn from) and `k_test` query points
    (to be judged on), all with x ~ U[-5, 5). `rng`, a `numpy.random.RandomState`,
    draws them instead of the global RNG, in the same order: a stream of its own
    (`RandomState(seed)` draws what `np.random.seed(seed)` would).
    """

    def __init__(self, k: int, k_test: int, *, rng: np.random.RandomState | None = None) -> None:
        _require_count("k", k, minimum=1)
        _require_count("k_test", k_test, minimum=1)
        self.k = k
        self.k_test = k_test
        self._random = np.random if rng is None else rng

    def generate_task(self) -> tuple[Callable[[np.ndarray], np.ndarray], list[torch.Tensor]]:
        """Return `(fn, [train_x, train_y, test_x, test_y])`, tensors of shape (k, 1) / (k_test, 1).

        The draws happen in a fixed order (amplitude, phase, support x, query x):
        seeded runs, and the graders' thresholds, depend on it.
        """
        amplitude = self._random.uniform(*AMPLITUDE_RANGE)
        phase = self._random.uniform(*PHASE_RANGE)

        def fn(x: np.ndarray) -> np.ndarray:
            return amplitude * np.sin(x + phase)

        train_x = self._random.uniform(*X_RANGE, size=(self.k, 1)).astype(np.float32)
        test_x = self._random.uniform(*X_RANGE, size=(self.k_test, 1)).astype(np.float32)
        arrays = [train_x, fn(train_x), test_x, fn(test_x)]  # a float times float32 stays float32
        return fn, [torch.from_numpy(array) for array in arrays]

    def generator(self, episodes: int) -> Iterator[tuple[Callable, list[torch.Tensor]]]:
        """Yield `generate_task()` `episodes` times (a bad count is refused here, not at the first task)."""
        _require_count("episodes", episodes, minimum=0)
        return (self.generate_task() for _ in range(episodes))


class BaseLearner:
    """The 1-40-40-1 ReLU regressor as pure functions over a list of 6 tensors.

    The weights are `[W1 (40, 1), b1 (40), W2 (40, 40), b2 (40), W3 (1, 40), b3 (1)]`,
    in `torch.nn.Linear`'s (out, in) layout. No module holds them, so MAML can run
    the same network on fast weights that are functions of the initialization.
    """

    @staticmethod
    def random_initial_weights() -> list[torch.Tensor]:
        """A fresh initialization: nn.Linear's default weights, zero biases, all leaves.

        Building the three `nn.Linear` layers draws from torch's global RNG exactly
        as the contract fixes (weight, then bias, layer by layer); their biases are
        drawn, then replaced by zeros.
        """
        weights = []
        for fan_in, fan_out in zip(LAYER_SIZES[:-1], LAYER_SIZES[1:]):
            layer = torch.nn.Linear(fan_in, fan_out)
            weights.append(layer.weight.detach().requires_grad_())
            weights.append(torch.zeros(fan_out, requires_grad=True))
        return weights

    @staticmethod
    def forward(x: torch.Tensor, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        """Predict y for x of shape (batch, 1); returns (batch, 1). Never changes `weights`."""
        hidden = x
        for weight, bias in zip(weights[0:-2:2], weights[1:-2:2]):
            hidden = F.relu(F.linear(hidden, weight, bias))
        return F.linear(hidden, weights[-2], weights[-1])


class TrainFromScratch:
    """The naive baseline: every task starts again from one fixed random initialization.

    For each task it takes `num_steps` Adam steps (default lr 0.001) on the support
    MSE and records the query MSE. Nothing is carried from one task to the next.
    """

    def __init__(self, num_steps: int) -> None:
        _require_count("num_steps", num_steps, minimum=0)
        self.num_steps = num_steps
        self.loss_fn = torch.nn.MSELoss()
        self.initialization = BaseLearner.random_initial_weights()
        self.history: list[float] = []

    def train(self, task: Sequence[torch.Tensor]) -> None:
        """Fit a copy of the initialization to the support set; append the query MSE.

        A malformed task, or one whose query loss is not finite, raises and is not recorded.
        """
        train_x, train_y, test_x, test_y = task = _checked_task(task, self.initialization[0].dtype)
        weights = [w.detach().clone().requires_grad_() for w in self.initialization]
        optimizer = torch.optim.Adam(weights)
        for _ in range(self.num_steps):
            optimizer.zero_grad()
            self.loss_fn(BaseLearner.forward(train_x, weights), train_y).backward()
            optimizer.step()
        with torch.no_grad():
            query_loss_value = self.loss_fn(BaseLearner.forward(test_x, weights), test_y).item()
        if not math.isfinite(query_loss_value):
            raise FloatingPointError(
                f"the query loss is {query_loss_value}: the losses overflow {train_x.dtype}; nothing was recorded"
            )
        self.history.append(query_loss_value)


def _checked_task(task: object, dtype: torch.dtype) -> list[torch.Tensor]:
    """`task`'s four parts as (n, 1) tensors of `dtype`, detached; TypeError or ValueError naming the part.
    Values are checked too: a from-scratch fit costs far more than a look at a hundred numbers."""
    if isinstance(task, (str, bytes)) or not isinstance(task, Sequence):
        raise TypeError(f"task must be a sequence (train_x, train_y, test_x, test_y), got {type(task).__name__}")
    if len(task) != len(TASK_PARTS):
        raise ValueError(f"task must have 4 parts (train_x, train_y, test_x, test_y), got {len(task)}")
    parts = [torch.from_numpy(part) if isinstance(part, np.ndarray) else part for part in task]
    for name, part, given in zip(TASK_PARTS, parts, task):
        if not isinstance(part, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape (n, 1), got {type(part).__name__}")
        if not part.is_floating_point():
            kind = f"numpy {given.dtype}" if isinstance(given, np.ndarray) else str(part.dtype)
            raise TypeError(f"{name} must hold floating-point numbers, got {kind}")
        if part.ndim != 2 or part.shape[1] != 1:
            raise ValueError(f"{name} must have shape (n, 1), got {tuple(part.shape)}")
    for x_name, y_name, x, y in ((*TASK_PARTS[:2], *parts[:2]), (*TASK_PARTS[2:], *parts[2:])):
        if len(x) != len(y) or len(x) == 0:
            problem = f"has {len(x)} rows but {y_name} has {len(y)}" if len(x) != len(y) else f"and {y_name} are empty"
            raise ValueError(f"{x_name} {problem}: a task needs as many y as x, and at least one of each")
    bad_parts = [name for name, part in zip(TASK_PARTS, parts) if not torch.isfinite(part).all()]
    if bad_parts:
        raise ValueError(f"task has NaN or infinite values in {', '.join(bad_parts)}; nothing was recorded")
    return [part.detach().to(dtype) for part in parts]


def final_mse(history: Sequence[float]) -> float:
    """The mean of the last FINAL_WINDOW query losses (of all of them, if there are fewer): the graders' figure."""
    return float(np.mean(history[-FINAL_WINDOW:]))


def windowed_mean(history: Sequence[float], window: int = PLOT_WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Sliding mean over `window` episodes: returns (episode numbers, means).

    Entry i is the mean of the `window` losses that end at episode `episodes[i]`
    (1-based). A history shorter than the window is averaged over what there is.
    """
    losses = np.asarray(history, dtype=np.float64)
    window = max(1, min(window, len(losses)))
    sums = np.cumsum(np.concatenate([[0.0], losses]))
    means = (sums[window:] - sums[:-window]) / window
    return np.arange(window, len(losses) + 1), means


def show_figures() -> None:
    """Open pyplot's figures in windows where a display exists; on a headless machine, do nothing.

    (pyplot falls back to the non-interactive Agg backend there, and `plt.show()`
    would only warn that it cannot show anything.)
    """
    import matplotlib
    import matplotlib.pyplot as plt

    if matplotlib.get_backend().lower() in _interactive_backends():
        plt.show()


def _interactive_backends() -> list[str]:
    """The names of matplotlib's built-in interactive backends, lower case, on matplotlib 3.1 and later."""
    try:
        from matplotlib.backends import BackendFilter, backend_registry  # matplotlib >= 3.9
    except ImportError:
        from matplotlib.rcsetup import interactive_bk  # matplotlib < 3.9

        return [name.lower() for name in interactive_bk]
    return backend_registry.list_builtin(BackendFilter.INTERACTIVE)


def plot_history(
    tfs_history: Sequence[float] | None,
    maml_history: Sequence[float],
    *,
    maml_steps: int | None = None,
    tfs_steps: int | None = None,
    show: bool = True,
) -> Figure:
    """Plot the 300-episode sliding mean of each learner's query MSE against the episode.

    `tfs_history` may be None (MAML alone). Opens a window only if `show` and a display
    exists. Returns the matplotlib Figure (`figure.savefig` writes it to a file).
    """
    import matplotlib.pyplot as plt

    maml_label = "MAML" if maml_steps is None else f"MAML, S={maml_steps} inner SGD step{'s' * (maml_steps != 1)}"
    curves = {maml_label: maml_history}
    if tfs_history is not None:
        curves["from scratch" if tfs_steps is None else f"from scratch, {tfs_steps} Adam steps"] = tfs_history
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for (label, history), color in zip(curves.items(), ["tab:blue", "tab:orange"]):
        axes.plot(*windowed_mean(history), label=label, color=color)
    _label_learning_curve(axes, compared=tfs_history is not None)
    figure.tight_layout()
    if show:
        show_figures()
    return figure


def _label_learning_curve(axes: Axes, compared: bool) -> None:
    """Title, labels, grid and legend. The y axis is logarithmic so that the from-scratch
    learner (MSE of a few units) and MAML (tenths) both stay readable."""
    from matplotlib.ticker import FormatStrFormatter, StrMethodFormatter

    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    axes.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    axes.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axes.set_xlabel("meta-training episode (one task each)")
    axes.set_ylabel(f"query MSE, mean of last {PLOT_WINDOW} episodes (log)")
    if compared:
        axes.set_title("MAML vs. learning each task from scratch: query MSE per new task")
    else:
        axes.set_title("MAML: query MSE after adapting to each new task")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()


# Files and command lines, shared by test.py and the project's scripts: every file is written whole
# or not at all, and a bad argument ends a script (status 2) before any training.


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call `write(file)` on a temporary binary file beside `path`, then move it onto `path`.

    The temporary file is in the same folder and reaches the disk before `os.replace`
    renames it, which is atomic: readers see either the old file or the complete new
    one. If `write` or the disk fails, or the write is interrupted, the old file stays
    as it was and the temporary file is removed.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes files readable by their owner only
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def save_figure(figure: Figure, path: str | os.PathLike) -> None:
    """Write `figure` as a PNG at `path`, atomically (see `write_atomically`)."""
    write_atomically(path, lambda file: figure.savefig(file, format="png", dpi=150))


def probe_writable(folder: str | os.PathLike) -> None:
    """Create and delete a temporary file in `folder`; raise OSError if that is not possible.

    Trying is the only reliable test: root ignores permission bits, read-only mounts do not.
    """
    with tempfile.TemporaryFile(dir=folder):
        pass


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse `type=`: the text of an integer of at least `minimum`, refused with a message otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def check_png_path(parser: argparse.ArgumentParser, option: str, path: Path) -> None:
    """Refuse (status 2) a PNG path that cannot be written: a folder, a missing folder, not .png, no write access."""
    if path.is_dir():
        parser.error(f"{option}: {str(path)!r} is a folder; give the path of a PNG file")
    if not path.parent.is_dir():
        parser.error(f"{option}: folder {str(path.parent)!r} does not exist")
    if path.suffix.lower() != ".png":
        parser.error(f"{option}: {str(path)!r} must end in .png (the figure is saved as a PNG)")
    check_writable(parser, option, path.parent)


def check_writable(parser: argparse.ArgumentParser, option: str, folder: Path) -> None:
    """Refuse (status 2) a folder that cannot be written in."""
    try:
        probe_writable(folder)
    except OSError as error:
        parser.error(f"{option}: cannot write in folder {str(folder)!r} ({error.strerror})")
