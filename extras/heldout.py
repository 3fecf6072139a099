"""A fixed set of held-out sine tasks, drawn from a private generator so that `np.random` is never touched.

Meta-training draws its tasks from numpy's global RNG (`utils.SineGenerator`); drawing
the evaluation tasks from `numpy.random.default_rng(seed)` instead keeps the two
streams apart: every run scores the learners on the same tasks, and evaluating
changes nothing that a later seeded run would draw.
"""

from dataclasses import dataclass

import numpy as np
import torch

from utils import AMPLITUDE_RANGE, PHASE_RANGE, X_RANGE


@dataclass(frozen=True)
class HeldOutTasks:
    """n sine tasks y = a * sin(x + p), each with `max_support` support x and a shared grid of x to score on.

    amplitudes, phases: (n,) float64; support_x: (n, max_support, 1) float32; grid_x: (m, 1) float32.
    """

    amplitudes: np.ndarray
    phases: np.ndarray
    support_x: torch.Tensor
    grid_x: torch.Tensor

    def __len__(self) -> int:
        return len(self.amplitudes)

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """Each task's y at x, float32: x of shape (n, m, 1), or (m, 1) shared by all tasks, gives (n, m, 1)."""
        x = x.double().numpy()
        y = self.amplitudes[:, None, None] * np.sin(x + self.phases[:, None, None])
        return torch.from_numpy(y.astype(np.float32))

    def support(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first k support points of every task: x and y, each of shape (n, k, 1).

        Taking a prefix makes each task's K = 5 support set part of its K = 10 one.
        """
        support_x = self.support_x[:, :k]
        return support_x, self.targets(support_x)

    def grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The scoring grid: x of shape (m, 1), shared, and every task's y, (n, m, 1)."""
        return self.grid_x, self.targets(self.grid_x)


def _scale(unit: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    low, high = bounds
    return low + (high - low) * unit


def draw_held_out_tasks(num_tasks: int, max_support: int, seed: int, grid: np.ndarray) -> HeldOutTasks:
    """Draw `num_tasks` tasks from utils' distributions: a ~ U[0.1, 5), p ~ U[0, pi), support x ~ U[-5, 5).

    Task i uses row i of one (num_tasks, 2 + max_support) block of uniform draws, so the
    first tasks are the same whatever `num_tasks` is. `grid` holds the x to score on.
    """
    unit = np.random.default_rng(seed).random((num_tasks, 2 + max_support))
    support_x = _scale(unit[:, 2:, None], X_RANGE).astype(np.float32)
    return HeldOutTasks(
        amplitudes=_scale(unit[:, 0], AMPLITUDE_RANGE),
        phases=_scale(unit[:, 1], PHASE_RANGE),
        support_x=torch.from_numpy(support_x),
        grid_x=torch.from_numpy(np.asarray(grid, dtype=np.float32).reshape(-1, 1)),
    )
