"""MAML++ (Antoniou, Edwards and Storkey, 2019), the two of its changes that apply to a small regression network:

- learned per-layer, per-step inner step sizes (LSLR): step s moves tensor W by alpha_{W,s} * grad_W, each
  alpha learned in the outer loop, starting at `inner_lr`;
- the multi-step loss (MSL): the meta-objective is a weighted sum of the query losses after every inner step,
  the weights starting equal (1/S) and annealed linearly, over the first `multi_step_loss_until` of training, to
  0.03/S for the steps before the last (the floor of the authors' code); from then on the last step's loss alone.

Its other changes (batch-norm per step, cosine-annealed meta step size, first-order at first) do not apply to
this network or are left out. At test time it steps with the step sizes it learned; past step S, with the
last step's.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from maml_sine.core import NETWORK, Algorithm, Params, mse, named, network, sgd_step
from maml_sine.meta_sgd import STEP_SIZE  # named as Meta-SGD names its step sizes: the S of `w1` are `lr_w1`

NON_FINAL_FLOOR = 0.03  # times 1/S: the weight of an earlier step's loss at the end of the annealing


@dataclass(frozen=True)
class MAMLPlusPlus(Algorithm):
    """MAML's fields (`inner_lr`: where every step size starts) and how long the multi-step loss lasts."""

    kind: str = field(default="maml_plus_plus", init=False)
    multi_step_loss_until: float = 0.1  # the share of training over which the loss weights anneal

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_steps < 1 or not 0 < self.multi_step_loss_until <= 1:
            raise ValueError(f"MAML++ needs num_steps >= 1 and 0 < multi_step_loss_until <= 1: {self}")

    def start(self, weights: Sequence[torch.Tensor]) -> Params:
        """The network, and S step sizes per tensor, all `inner_lr`."""
        params = named(weights)
        shape = (*params["b1"].shape[:-1], self.num_steps)  # N learners in front where there are
        return {**params, **{STEP_SIZE + name: params["b1"].new_full(shape, self.inner_lr) for name in NETWORK}}

    def inner_step(self, params: Params, x: torch.Tensor, y: torch.Tensor, index: int) -> Params:
        """One SGD step on (x, y) with step `index`'s step sizes (the last step's beyond S)."""
        step = min(index, self.num_steps - 1)
        step_sizes = [params[STEP_SIZE + name][step] for name in NETWORK]
        return {**params, **named(sgd_step(network(params), x, y, step_sizes, self.first_order))}

    def loss_weights(self, progress: torch.Tensor | float) -> torch.Tensor:
        """The weights (S,) of the query losses after steps 1..S, summing to 1, at `progress` of training."""
        steps = self.num_steps
        # A tensor stays where it is (torch.as_tensor would move it to a default device set apart from the CPU).
        progress = progress if isinstance(progress, torch.Tensor) else torch.tensor(progress)
        annealed = progress / self.multi_step_loss_until
        non_final = torch.where(annealed < 1, ((1 - annealed) / steps).clamp(min=NON_FINAL_FLOOR / steps), 0.0)
        return torch.cat([non_final.expand(steps - 1), (1 - (steps - 1) * non_final)[None]])

    def query_loss(self, params: Params, task: Sequence[torch.Tensor], progress: torch.Tensor) -> torch.Tensor:
        """The multi-step loss: the query MSE after each of the S steps, weighted by `loss_weights`."""
        support_x, support_y, query_x, query_y = task
        losses = []
        for index in range(self.num_steps):
            params = self.inner_step(params, support_x, support_y, index)
            losses.append(mse(network(params), query_x, query_y))
        return (torch.stack(losses) * self.loss_weights(progress)).sum()
