"""Reptile (Nichol, Achiam and Schulman, 2018): move the initialization towards the weights that SGD on a task
reaches. Nothing is differentiated through the inner steps and there is no query split: a task's support and
query points are all trained on.

    phi = k SGD steps (inner_lr) from theta on all the task's points
    theta <- theta + epsilon (phi - theta),  epsilon = meta_lr * (1 - progress)     (mean phi over B tasks)

Its sine demo: inner SGD 0.02 for 5 steps, epsilon 0.1 annealed linearly to 0 over training; the demo's 5 steps
are minibatches of 10 of a task's 50 points, here they are full steps on the task's 2K points. Here the
direction theta - phi is the learner's meta-gradient, so the project's clipping and weight decay act on it
as on MAML's, and the outer optimizer is that plain annealed step, not Adam. A learner's recorded loss is
the MSE of phi on the points it was trained on. At test time Reptile adapts with SGD at `inner_lr`.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.func import vmap

from maml_sine.core import NETWORK, Algorithm, LearnerState, Params, mse


@dataclass(frozen=True)
class Reptile(Algorithm):
    """MAML's fields, read as Reptile's: `num_steps` k, `inner_lr` its SGD's, `meta_lr` epsilon at the start."""

    kind: str = field(default="reptile", init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.first_order or self.num_steps < 1:
            raise ValueError(
                f"Reptile takes at least one inner step and differentiates none (first_order False): {self}"
            )

    def meta_gradient(
        self, params: Params, tasks: Sequence[torch.Tensor], progress: torch.Tensor | float = 0.0
    ) -> tuple[Params, torch.Tensor]:
        """theta - phi, the mean over the B tasks, and each task's MSE of phi on its points."""

        def moved(support_x, support_y, query_x, query_y):
            x, y = torch.cat([support_x, query_x]), torch.cat([support_y, query_y])
            fast = self.adapt(params, x, y)
            return {name: params[name] - weight for name, weight in zip(NETWORK, fast)}, mse(fast, x, y)

        differences, losses = vmap(moved)(*tasks)
        return {name: difference.mean(dim=0) for name, difference in differences.items()}, losses

    def meta_update(self, state: LearnerState, gradients: Params, progress: torch.Tensor) -> LearnerState:
        """theta <- theta - epsilon (theta - phi), epsilon annealed linearly from `meta_lr` to 0; Adam's moments
        are kept (as zeros) so every learner's state has one shape."""
        epsilon = self.meta_lr * (1 - progress)
        params = {name: state.params[name] - epsilon * gradient for name, gradient in gradients.items()}
        return state._replace(params=params, step=state.step + 1)
