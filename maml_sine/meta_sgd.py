"""Meta-SGD (Li et al., 2017): MAML that also learns its inner step size, one for every parameter.

    phi_0 = theta
    phi_s = phi_{s-1} - alpha * grad L_support(phi_{s-1})      (alpha * g elementwise), s = 1..S
    (theta, alpha) <- Adam step on grad L_query(phi_S)

alpha has the shape of theta, and the query loss differentiates with respect to both: the
meta-gradient of alpha is -g * (the query loss's gradient at phi), summed over the steps.
Here alpha starts at `inner_lr` (0.01) everywhere; the paper draws it at random, which would
cost torch RNG draws that every seeded initialization here is defined without. At test time
a Meta-SGD learner adapts with the step sizes it learned (`Learner.test_lr` LEARNED).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from maml_sine.core import NETWORK, Algorithm, Params, named, network, sgd_step

STEP_SIZE = "lr_"  # alpha of the network's tensor `w1` is the learner's tensor `lr_w1`


@dataclass(frozen=True)
class MetaSGD(Algorithm):
    """MAML's fields; `inner_lr` is where alpha starts."""

    kind: str = field(default="meta_sgd", init=False)

    def start(self, weights: Sequence[torch.Tensor]) -> Params:
        """The network, and alpha: `inner_lr` for every parameter."""
        params = named(weights)
        return {**params, **{STEP_SIZE + name: torch.full_like(params[name], self.inner_lr) for name in NETWORK}}

    def inner_step(self, params: Params, x: torch.Tensor, y: torch.Tensor, index: int) -> Params:
        """One step w <- w - alpha * grad mse(w) on (x, y), with the step sizes alpha it learns."""
        step_sizes = [params[STEP_SIZE + name] for name in NETWORK]
        return {**params, **named(sgd_step(network(params), x, y, step_sizes, self.first_order))}
