"""Model-Agnostic Meta-Learning (Finn et al., 2017) for sine-wave regression.

MAML learns an initialization theta from which a few gradient steps fit a new task:

    phi_0 = theta
    phi_s = phi_{s-1} - LR_BASE * grad L_support(phi_{s-1})      for s = 1..S
    theta <- Adam step (LR_META) on grad_theta L_query(phi_S)

The meta-gradient grad_theta L_query(phi_S) flows back through every inner update,
so it contains second derivatives of the support loss (Hessian-vector products).
First-order MAML drops them by treating each inner gradient as a constant.
"""

from collections.abc import Sequence

import torch

from utils import BaseLearner

LR_BASE = 0.01
LR_META = 0.001


class MAML:
    """Meta-learns `initialization`, one task per meta-update (meta-batch of one).

    Public state: `num_steps` (S), `loss_fn` (MSE), `initialization` (6 leaf tensors,
    see `BaseLearner`), `meta_optimizer` (Adam over them) and `history` (one query
    loss per `train` call). `first_order=True` gives first-order MAML.
    """

    def __init__(
        self,
        num_steps: int,
        *,
        first_order: bool = False,
        inner_lr: float = LR_BASE,
        meta_lr: float = LR_META,
    ) -> None:
        self.num_steps = num_steps
        self.first_order = first_order
        self.inner_lr = inner_lr
        self.loss_fn = torch.nn.MSELoss()
        self.initialization = BaseLearner.random_initial_weights()
        self.meta_optimizer = torch.optim.Adam(self.initialization, lr=meta_lr)
        self.history: list[float] = []

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> list[torch.Tensor]:
        """Take S SGD steps from the initialization on the support set; return the fast weights.

        The fast weights are built out of place, so they remain functions of
        `initialization` and the query loss can be differentiated back to it.
        """
        fast_weights = list(self.initialization)
        for _ in range(self.num_steps):
            support_loss = self.loss_fn(BaseLearner.forward(support_x, fast_weights), support_y)
            # create_graph=True makes the gradient itself differentiable: that is what
            # lets the meta-gradient see how theta changes the inner step (second order).
            gradients = torch.autograd.grad(support_loss, fast_weights, create_graph=not self.first_order)
            fast_weights = [w - self.inner_lr * g for w, g in zip(fast_weights, gradients)]
        return fast_weights

    def train(self, task: Sequence[torch.Tensor]) -> None:
        """One meta-update on `task = (train_x, train_y, test_x, test_y)`, each (n, 1).

        Adapts to the support set (train), scores the fast weights on the query set
        (test), takes one Adam step on the initialization, and records the query loss.
        """
        train_x, train_y, test_x, test_y = task
        fast_weights = self.adapt(train_x, train_y)
        query_loss = self.loss_fn(BaseLearner.forward(test_x, fast_weights), test_y)
        self.meta_optimizer.zero_grad()
        query_loss.backward()
        self.meta_optimizer.step()
        self.history.append(query_loss.item())
