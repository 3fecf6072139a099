"""ANIL (Raghu et al., 2020, "Almost No Inner Loop"): MAML whose inner loop adapts the network's head alone.

    body = (W1, b1, W2, b2), head_0 = (W3, b3)
    head_s = head_{s-1} - alpha * grad_head L_support(body, head_{s-1}),  s = 1..S
    (body, head_0) <- Adam step on grad L_query(body, head_S)

The body is learned in the outer loop only: the meta-gradient reaches it through the query loss and
through the head's inner steps, whose gradients depend on the body's features. At test time ANIL adapts
as it learned to: SGD on the head at `inner_lr`.
"""

from dataclasses import dataclass, field

import torch

from maml_sine.core import Algorithm, Params, inner_gradient, mse, network

HEAD = ("w3", "b3")  # the last layer: the part of the network the inner loop moves


@dataclass(frozen=True)
class ANIL(Algorithm):
    """MAML's fields; the inner steps move the head alone."""

    kind: str = field(default="anil", init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_steps < 1:
            raise ValueError(f"ANIL adapts its head in at least one inner step: {self}")

    def inner_step(self, params: Params, x: torch.Tensor, y: torch.Tensor, index: int) -> Params:
        """One SGD step of the head on (x, y); the body stays."""
        head = {name: params[name] for name in HEAD}
        gradients = inner_gradient(lambda head: mse(network({**params, **head}), x, y), head, self.first_order)
        return {**params, **{name: head[name] - self.inner_lr * gradients[name] for name in HEAD}}
