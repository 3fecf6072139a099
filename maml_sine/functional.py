"""The base-learner's loss and MAML's inner loop as pure functions, for `torch.func` to transform.

`MAML.adapt` in assignment.py is the specification; `adapted` takes the same steps
with `torch.func.grad` instead of `torch.autograd.grad`, so that the compiled path can
differentiate through it and the evaluation can `vmap` it over many tasks.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from utils import BaseLearner


def mse(weights: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The mean squared error of `BaseLearner.forward(x, weights)` against y; x, y of shape (m, 1)."""
    return F.mse_loss(BaseLearner.forward(x, weights), y)


def adapted(
    weights: Sequence[torch.Tensor],
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    *,
    num_steps: int,
    inner_lr: float,
    first_order: bool = False,
) -> list[torch.Tensor]:
    """The fast weights after `num_steps` SGD steps on (train_x, train_y): w <- w - inner_lr * grad mse(w)."""
    weights = list(weights)
    for _ in range(num_steps):
        # With no grad tracking around it, the inner gradient is a constant to any outer
        # transform: first-order MAML. With tracking, the meta-gradient sees its Hessian terms.
        with torch.no_grad() if first_order else torch.enable_grad():
            gradients = torch.func.grad(mse)(weights, train_x, train_y)
        weights = [w - inner_lr * g for w, g in zip(weights, gradients)]
    return weights
