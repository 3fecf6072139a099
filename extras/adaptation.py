"""Plain SGD from one initialization on many tasks at once: `torch.func.vmap` over `torch.func.grad`.

Batched weights are `BaseLearner`'s 6 tensors, each with a leading task dimension n:
W1 (n, 40, 1), b1 (n, 40), W2 (n, 40, 40), b2 (n, 40), W3 (n, 1, 40), b3 (n, 1).
Every task's step is the one a per-task loop would take; there is just no Python loop.
"""

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from utils import BaseLearner


def mse(weights: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One task's mean squared error of `BaseLearner.forward(x, weights)` against y; x, y of shape (m, 1)."""
    return F.mse_loss(BaseLearner.forward(x, weights), y)


_mse_per_task = vmap(mse, in_dims=(0, None, 0))  # every task scored on one shared x
_gradient_per_task = vmap(grad(mse))  # every task's own support set
_predict_per_task = vmap(BaseLearner.forward, in_dims=(None, 0))


def sgd_steps(
    initialization: Sequence[torch.Tensor], support_x: torch.Tensor, support_y: torch.Tensor, steps: int, lr: float
) -> Iterator[list[torch.Tensor]]:
    """Yield the batched weights before adaptation and after each of `steps` SGD steps (steps + 1 in all).

    support_x, support_y: (n, k, 1). Every task starts from `initialization` (6 unbatched
    tensors, left untouched) and steps w <- w - lr * grad of its own support MSE.
    """
    weights = [w.detach().expand(len(support_x), *w.shape) for w in initialization]
    yield weights
    for _ in range(steps):
        gradients = _gradient_per_task(weights, support_x, support_y)
        weights = [w - lr * g for w, g in zip(weights, gradients)]
        yield weights


def mse_after_each_step(
    initialization: Sequence[torch.Tensor],
    support: tuple[torch.Tensor, torch.Tensor],
    grid: tuple[torch.Tensor, torch.Tensor],
    steps: int,
    lr: float,
) -> torch.Tensor:
    """Each task's MSE on the grid after 0, 1, ..., `steps` SGD steps on its support set: shape (steps + 1, n).

    support: x and y of shape (n, k, 1); grid: x of shape (m, 1), shared, and y of shape (n, m, 1).
    """
    grid_x, grid_y = grid
    return torch.stack([_mse_per_task(w, grid_x, grid_y) for w in sgd_steps(initialization, *support, steps, lr)])


def predictions_after_each_step(
    initialization: Sequence[torch.Tensor],
    support: tuple[torch.Tensor, torch.Tensor],
    x: torch.Tensor,
    steps: int,
    lr: float,
) -> torch.Tensor:
    """Each task's prediction at x, shape (m, 1), after 0, 1, ..., `steps` SGD steps: shape (steps + 1, n, m, 1)."""
    return torch.stack([_predict_per_task(x, w) for w in sgd_steps(initialization, *support, steps, lr)])
