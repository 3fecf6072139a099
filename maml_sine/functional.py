"""The base-learner's loss and MAML's inner loop as pure functions, for `torch.func` to transform.

`MAML.adapt` in assignment.py is the specification; `adapted` takes the same steps
with `torch.func.grad` instead of `torch.autograd.grad`, so that the compiled and batched
paths can differentiate through it and `vmap` it over tasks and learners. `adam_update_`
is `torch.optim.Adam`'s step written out as tensor arithmetic, for the same paths.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from utils import BaseLearner


def mse(weights: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The mean squared error of `BaseLearner.forward(x, weights)` against y; x of shape (m, d), y (m, 1).
    d is 1 for the sine's x, 3 for the paper protocol's oracle (x, amplitude, phase)."""
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
        # `w - lr * g`, as in MAML.adapt. The one-op torch.add(w, g, alpha=-lr), under torch.func
        # inside torch.compile (torch 2.13, inductor, CPU), gave wrong fast weights (loss 21.3, eager 4.33).
        weights = [w - inner_lr * g for w, g in zip(weights, gradients)]
    return weights


def adam_update_(weights, gradients, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, apply):
    """torch.optim.Adam's step (no weight decay, no amsgrad), written in place into the given tensors where `apply`.

    Every tensor may carry leading learner dimensions: `steps` holds one count per weight,
    shaped to broadcast against it (0-d for one learner, (N, 1, ...) for N), and `apply` is
    a bool tensor, 0-d or one per learner (N,). Where it is False, nothing is written.
    """
    for weight, gradient, exp_avg, exp_avg_sq, step in zip(weights, gradients, exp_avgs, exp_avg_sqs, steps):
        weight_mask, step_mask = _broadcastable(apply, weight), _broadcastable(apply, step)
        new_step = step + 1
        new_exp_avg = exp_avg.lerp(gradient, 1 - beta1)
        new_exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * gradient * gradient
        count = new_step.double()  # bias corrections in float64, as torch's Adam computes them
        bias_correction1 = (1 - beta1**count).to(weight.dtype)
        bias_correction2_sqrt = (1 - beta2**count).sqrt().to(weight.dtype)
        denominator = new_exp_avg_sq.sqrt() / bias_correction2_sqrt + eps
        new_weight = weight - (lr / bias_correction1) * new_exp_avg / denominator
        for tensor, new in ((weight, new_weight), (exp_avg, new_exp_avg), (exp_avg_sq, new_exp_avg_sq)):
            tensor.copy_(torch.where(weight_mask, new, tensor))
        step.copy_(torch.where(step_mask, new_step, step))


def _broadcastable(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`mask`, 0-d or one entry per learner (N,), with trailing ones to broadcast against `like`."""
    return mask.reshape(tuple(mask.shape) + (1,) * (like.ndim - mask.ndim))
