"""Sine-wave tasks, the functional base-learner, the from-scratch baseline and the learning-curve plot.

Everything MAML itself needs from here is `BaseLearner`. The from-scratch baseline checks
its tasks with `assignment.check_task` and `assignment.check_finite`, imported where they
are used: `assignment.py` imports this file, and must run beside the assignment's own
`utils.py`, so the checks live there and this file borrows them.
"""

# This file runs unchanged from Python 3.8, torch 1.6 and matplotlib 3.1 (the assignment's own
# environment) on: annotations are never evaluated, and nothing newer is called unguarded.
from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

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

        The task is checked as `MAML.train` checks it; a non-finite query loss raises
        and is not recorded.
        """
        from assignment import check_finite, check_task  # not at the top: assignment.py imports this file

        train_x, train_y, test_x, test_y = task = check_task(task, self.initialization[0].dtype)
        weights = [w.detach().clone().requires_grad_() for w in self.initialization]
        optimizer = _fused_adam_if_offered(weights)
        for _ in range(self.num_steps):
            optimizer.zero_grad()
            self.loss_fn(BaseLearner.forward(train_x, weights), train_y).backward()
            optimizer.step()
        with torch.no_grad():
            query_loss_value = self.loss_fn(BaseLearner.forward(test_x, weights), test_y).item()
        check_finite(task, query_loss_value, support_used=self.num_steps > 0, consequence="nothing was recorded")
        self.history.append(query_loss_value)


def _fused_adam_if_offered(weights: list[torch.Tensor]) -> torch.optim.Adam:
    """Adam at its default lr; fused (one kernel per step for all six tensors) where this torch
    offers it for CPU tensors: torch before 2.0 has no `fused` argument, 2.0 to 2.3 fuse on GPUs only.
    (assignment.py has its own copy for MAML: each of the two files must stand alone.)"""
    try:
        return torch.optim.Adam(weights, fused=True)
    except (TypeError, RuntimeError, ValueError):
        return torch.optim.Adam(weights)


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
