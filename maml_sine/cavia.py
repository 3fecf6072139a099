"""CAVIA (Zintgraf et al., 2019): fast context adaptation. The network takes, beside x, a context vector of
`context_size` numbers that starts at zero for every task; the inner loop adapts the context alone and the
network's weights are learned in the outer loop only.

    c_0 = 0
    c_s = c_{s-1} - alpha * grad_c L_support(theta, c_{s-1}),  s = 1..S       (alpha 1.0 in CAVIA's code)
    theta <- Adam step on grad L_query(theta, c_S)

The context enters through the first layer's weights of its inputs, W_c (40, context_size): W1 [x; c] + b1 =
W1_x x + (b1 + W_c c). So the network with context c is the plain 1-input network with the first layer's
bias moved by W_c c, and that is what an inner step returns: every consumer of fast weights (the query loss,
the evaluation, the fits) sees an ordinary network. The next step starts its context at zero again on the
moved bias, which is the same as going on from c. The network is drawn with 1 + context_size inputs, as
CAVIA's code draws its first layer (`torch.nn.Linear`), with zero biases as the project draws them.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from maml_sine.core import Algorithm, Params, inner_gradient, mse, named, network

CONTEXT = "w_context"  # the first layer's weights of the context inputs, (40, context_size)


@dataclass(frozen=True)
class CAVIA(Algorithm):
    """MAML's fields, with CAVIA's inner step size; `context_size` numbers of context per task."""

    kind: str = field(default="cavia", init=False)
    inner_lr: float = 1.0
    context_size: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_steps < 1:
            raise ValueError(f"CAVIA adapts its context in at least one inner step: {self}")
        if not isinstance(self.context_size, int) or self.context_size < 1:
            raise ValueError(f"context_size must be a whole number of at least 1, got {self.context_size!r}")

    def network_inputs(self, inputs: int) -> int:
        """The task's inputs and the context's."""
        return inputs + self.context_size

    def start(self, weights: Sequence[torch.Tensor]) -> Params:
        """The network of `network_inputs` inputs, its first layer split into the task's columns and W_c."""
        params = named(weights)
        first_layer = params["w1"]
        return {**params, "w1": first_layer[..., : -self.context_size], CONTEXT: first_layer[..., -self.context_size :]}

    def inner_step(self, params: Params, x: torch.Tensor, y: torch.Tensor, index: int) -> Params:
        """One SGD step of the context (from zero) on (x, y), folded into the first layer's bias."""

        def with_context(context: torch.Tensor) -> Params:
            return {**params, "b1": params["b1"] + params[CONTEXT] @ context}

        context = params["b1"].new_zeros(self.context_size)
        gradient = inner_gradient(lambda context: mse(network(with_context(context)), x, y), context, self.first_order)
        return with_context(context - self.inner_lr * gradient)
