"""The assignment's sine tasks, functional base-learner, from-scratch baseline and learning-curve plot. It imports
nothing of the project. `assignment.py` takes only `BaseLearner` from here and may run beside the assignment's
original `utils.py` instead, so each of the two files checks its own input."""

# Runs from Python 3.8, torch 1.6 and matplotlib 3.1 on: annotations are never evaluated.
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # matplotlib is imported only when a figure is drawn: `import utils` stays light
    from matplotlib.figure import Figure

AMPLITUDE_RANGE, PHASE_RANGE, X_RANGE = (0.1, 5.0), (0.0, np.pi), (-5.0, 5.0)  # the task distribution
LAYER_SIZES = (1, 40, 40, 1)
PLOT_WINDOW = 300
TASK_PARTS = ("train_x", "train_y", "test_x", "test_y")  # the support set, then the query set
# The assignment's run (`python test.py`, the graders'): seeds set before anything draws, tasks of
# SUPPORT_POINTS and QUERY_POINTS points, the final MSE over the last FINAL_WINDOW query losses.
NUMPY_SEED, TORCH_SEED = 1337, 42
SUPPORT_POINTS, QUERY_POINTS, EPISODES, FINAL_WINDOW = 10, 40, 40_000, 500
TFS_STEPS = 10  # the from-scratch learner's Adam steps per task in `python test.py --plot-tfs`


def _require_count(name: str, value: object, minimum: int) -> None:
    """Refuse anything but an integer >= minimum (a bool is not one here)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


class SineGenerator:
    """Tasks y = a sin(x + p): `k` support points to learn from, `k_test` query points to be judged on.
    Draws from numpy's global RNG, or from `rng` (a `numpy.random.RandomState`) in the same order."""

    def __init__(self, k: int, k_test: int, *, rng: np.random.RandomState | None = None) -> None:
        _require_count("k", k, minimum=1)
        _require_count("k_test", k_test, minimum=1)
        self.k, self.k_test = k, k_test
        self._random = np.random if rng is None else rng

    def generate_task(self) -> tuple[Callable[[np.ndarray], np.ndarray], list[torch.Tensor]]:
        """`(fn, [train_x, train_y, test_x, test_y])`, float32 tensors of shapes (k, 1) and (k_test, 1).
        Draws amplitude, phase, support x and query x, in that order: seeded runs depend on it."""
        amplitude, phase = self._random.uniform(*AMPLITUDE_RANGE), self._random.uniform(*PHASE_RANGE)

        def fn(x: np.ndarray) -> np.ndarray:
            return amplitude * np.sin(x + phase)

        train_x = self._random.uniform(*X_RANGE, size=(self.k, 1)).astype(np.float32)
        test_x = self._random.uniform(*X_RANGE, size=(self.k_test, 1)).astype(np.float32)
        arrays = [train_x, fn(train_x), test_x, fn(test_x)]  # a float times float32 stays float32
        return fn, [torch.from_numpy(array) for array in arrays]

    def generator(self, episodes: int) -> Iterator[tuple[Callable, list[torch.Tensor]]]:
        """Yield `generate_task()` `episodes` times; a bad count is refused now, not at the first task."""
        _require_count("episodes", episodes, minimum=0)
        return (self.generate_task() for _ in range(episodes))


class BaseLearner:
    """The 1-40-40-1 ReLU regressor as pure functions of `[W1 (40, 1), b1 (40), W2 (40, 40), b2 (40), W3 (1, 40),
    b3 (1)]`: no module holds the weights, so MAML runs it on fast weights that are functions of them."""

    @staticmethod
    def random_initial_weights(*, inputs: int = LAYER_SIZES[0]) -> list[torch.Tensor]:
        """Six leaves drawn from torch's RNG exactly as building the three `nn.Linear` layers draws them (biases
        too, then zeros). More `inputs` widen the first layer: the project's networks given more than x use it."""
        weights, sizes = [], (inputs, *LAYER_SIZES[1:])
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            weights.append(torch.nn.Linear(fan_in, fan_out).weight.detach().requires_grad_())
            weights.append(torch.zeros(fan_out, requires_grad=True))
        return weights

    @staticmethod
    def forward(x: torch.Tensor, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        """Predict y (batch, 1) for x (batch, 1). Never changes `weights`."""
        for weight, bias in zip(weights[0:-2:2], weights[1:-2:2]):
            x = F.relu(F.linear(x, weight, bias))
        return F.linear(x, weights[-2], weights[-1])


class TrainFromScratch:
    """The naive baseline: every task starts again from one fixed initialization, takes `num_steps` Adam steps
    (lr 0.001) on the support MSE and appends the query MSE to `history`."""

    def __init__(self, num_steps: int) -> None:
        _require_count("num_steps", num_steps, minimum=0)
        self.num_steps = num_steps
        self.loss_fn = torch.nn.MSELoss()
        self.initialization = BaseLearner.random_initial_weights()
        self.history: list[float] = []

    def train(self, task: Sequence[torch.Tensor]) -> None:
        """Fit a copy of the initialization to the support set, record the query MSE. A malformed task, or one
        whose query loss is not finite, raises and is not recorded."""
        train_x, train_y, test_x, test_y = _checked_task(task, self.initialization[0].dtype)
        weights = [w.detach().clone().requires_grad_() for w in self.initialization]
        optimizer = torch.optim.Adam(weights)
        for _ in range(self.num_steps):
            optimizer.zero_grad()
            self.loss_fn(BaseLearner.forward(train_x, weights), train_y).backward()
            optimizer.step()
        with torch.no_grad():
            mse = self.loss_fn(BaseLearner.forward(test_x, weights), test_y).item()
        if not math.isfinite(mse):
            message = f"the query loss is {mse}: the losses overflow {test_y.dtype}; nothing was recorded"
            raise FloatingPointError(message)
        self.history.append(mse)


def _checked_task(task: object, dtype: torch.dtype) -> list[torch.Tensor]:
    """`task`'s parts as detached (n, 1) tensors of `dtype`, or a TypeError or ValueError naming the part.
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
    """The graders' figure: the mean of the last FINAL_WINDOW query losses (of all, if there are fewer)."""
    return float(np.mean(history[-FINAL_WINDOW:]))


def windowed_mean(history: Sequence[float], window: int = PLOT_WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """(episodes, means): means[i] averages the `window` losses up to 1-based episode episodes[i] (all, if fewer)."""
    window = max(1, min(window, len(history)))
    sums = np.cumsum(np.concatenate([[0.0], np.asarray(history, dtype=np.float64)]))
    return np.arange(window, len(history) + 1), (sums[window:] - sums[:-window]) / window


def plot_history(
    tfs_history: Sequence[float] | None,
    maml_history: Sequence[float],
    *,
    maml_steps: int | None = None,
    tfs_steps: int | None = None,
    show: bool = True,
) -> Figure:
    """Plot each learner's query MSE, a PLOT_WINDOW-episode sliding mean, against the episode; `tfs_history`
    may be None. The log scale keeps the from-scratch learner (units) and MAML (tenths) readable. Opens a
    window if `show` and a display exists; returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, StrMethodFormatter

    figure, axes = plt.subplots(figsize=(8, 4.5))
    maml_label = "MAML" if maml_steps is None else f"MAML, S={maml_steps} inner SGD step{'s' * (maml_steps != 1)}"
    axes.plot(*windowed_mean(maml_history), label=maml_label, color="tab:blue")
    title = "MAML: query MSE after adapting to each new task"
    if tfs_history is not None:
        tfs_label = "from scratch" if tfs_steps is None else f"from scratch, {tfs_steps} Adam steps"
        axes.plot(*windowed_mean(tfs_history), label=tfs_label, color="tab:orange")
        title = "MAML vs. learning each task from scratch: query MSE per new task"
    axes.set(yscale="log", title=title, xlabel="meta-training episode (one task each)")
    axes.set_ylabel(f"query MSE, mean of last {PLOT_WINDOW} episodes (log)")
    axes.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    axes.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    axes.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    if show:
        show_figures()
    return figure


def show_figures() -> None:
    """Open pyplot's figures, except on a headless machine (matplotlib's Agg), where pyplot would only warn."""
    import matplotlib
    import matplotlib.pyplot as plt

    if matplotlib.get_backend().lower() != "agg":
        plt.show()
