"""One meta-update, written once: pure functions over a learner's state, for any number of learners.

`MAML.train` in assignment.py is the specification. Here the same update is a pure function
of one learner's state and its tasks, so that `torch.func` can differentiate it, `vmap` can
run N learners as one (their tensors stacked along a leading dimension), and `torch.compile`
can fuse it into a few kernels:

    meta_step        inner SGD steps on each task's support set, the query loss, its gradient
                     with respect to the initialization, Adam written as arithmetic, and the
                     finite guard: a learner whose loss or meta-gradient is not finite keeps its state
    scratch_losses   the from-scratch learner beside it: Adam from a fresh copy on every task
    many             either of them for N learners at once (vmap over the leading dimension)
    compiled         a function compiled on its first call, eager if compiling fails there

Shapes for one learner: weights are `BaseLearner`'s 6 tensors, W1 (40, d), b1 (40), W2 (40, 40),
b2 (40), W3 (1, 40), b3 (1), with d inputs (1 for the sine's x; 3 for the oracle's x, amplitude
and phase); its tasks are (train_x, train_y, test_x, test_y), each (B tasks, n points, d or 1).
"""

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from assignment import INNER_LR, META_LR, all_finite, check_options
from utils import BaseLearner

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, as MAML and TrainFromScratch use them
ADAM_EPS = 1e-8
SCRATCH_LR = 1e-3  # TrainFromScratch's Adam: torch's default lr
# A C++ wrapper calls the generated kernels without Python in between: about 1.5x
# faster per update than inductor's default Python wrapper here, for ~10 s more compiling.
COMPILE_OPTIONS = {"cpp_wrapper": True}
RECOMPILE_LIMIT = 64  # compiled configurations of one function per process (dynamo's default: 8)


@dataclass(frozen=True)
class Algorithm:
    """How a learner is meta-trained: MAML's hyper-parameters (`MAML`'s arguments mean the same).

    `num_steps` 0 is the pretrained network (fitted to the tasks' points directly).
    `max_meta_gradient_norm` scales a longer meta-gradient down to that L2 norm before Adam
    (an experiment against rare spikes; None, the default, as in `MAML.train`).
    `weight_decay` adds an L2 pull towards the learner's anchor (zero unless given) to the
    gradient, as `torch.optim.Adam(weight_decay=...)` adds it towards zero; 0, the default, as in `MAML.train`.
    """

    num_steps: int
    first_order: bool = False
    inner_lr: float = INNER_LR
    meta_lr: float = META_LR
    max_meta_gradient_norm: float | None = None
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        check_options(self.num_steps, self.first_order, self.inner_lr, self.meta_lr)  # as `MAML` checks them
        if self.max_meta_gradient_norm is not None and not 0 < self.max_meta_gradient_norm < float("inf"):
            raise ValueError(f"max_meta_gradient_norm must be positive and finite, got {self.max_meta_gradient_norm}")
        if not 0 <= self.weight_decay < float("inf"):
            raise ValueError(f"weight_decay must be zero or positive and finite, got {self.weight_decay}")


class LearnerState(NamedTuple):
    """A learner's weights and its meta-optimizer's state; with N learners, every tensor has N in front."""

    weights: list[torch.Tensor]  # BaseLearner's 6 tensors
    exp_avgs: list[torch.Tensor]  # Adam's first moment of each weight
    exp_avg_sqs: list[torch.Tensor]  # Adam's second moment of each weight
    step: torch.Tensor  # Adam's step count, 0-d float32 (torch's Adam keeps it as a float tensor)


def fresh_state(weights: Sequence[torch.Tensor]) -> LearnerState:
    """The state of a learner that has not stepped yet: its weights (copied) and zero moments."""
    weights = [weight.detach().clone() for weight in weights]
    zeros = [torch.zeros_like(weight) for weight in weights]
    return LearnerState(weights, zeros, [zero.clone() for zero in zeros], torch.zeros(weights[0].shape[:-2]))


def mse(weights: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The mean squared error of `BaseLearner.forward(x, weights)` against y; x (m, d), y (m, 1)."""
    return F.mse_loss(BaseLearner.forward(x, weights), y)


def adapted(
    weights: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor, *, num_steps: int, inner_lr: float,
    first_order: bool = False,
) -> list[torch.Tensor]:  # fmt: skip
    """`MAML.adapt`: the fast weights after `num_steps` SGD steps w <- w - inner_lr * grad mse(w) on (x, y)."""
    weights = list(weights)
    for _ in range(num_steps):
        # Without grad tracking around it, the inner gradient is a constant to the outer
        # transform: first-order MAML. With tracking, the meta-gradient sees its Hessian terms.
        with torch.no_grad() if first_order else torch.enable_grad():
            gradients = grad(mse)(weights, x, y)
        # `w - lr * g`, as in MAML.adapt. The one-op torch.add(w, g, alpha=-lr), under torch.func
        # inside torch.compile (torch 2.13, inductor, CPU), gave wrong fast weights (loss 21.3, eager 4.33).
        weights = [w - inner_lr * g for w, g in zip(weights, gradients)]
    return weights


def adam(state: LearnerState, gradients: Sequence[torch.Tensor], lr: float) -> LearnerState:
    """torch.optim.Adam's step (default betas and eps, no weight decay), as arithmetic: the state after it."""
    beta1, beta2 = ADAM_BETAS
    step = state.step + 1
    count = step.double()  # bias corrections in float64, as torch's Adam computes them
    dtype = state.weights[0].dtype
    step_size = (lr / (1 - beta1**count)).to(dtype)
    bias_correction2_sqrt = (1 - beta2**count).sqrt().to(dtype)
    weights, exp_avgs, exp_avg_sqs = [], [], []
    for weight, gradient, exp_avg, exp_avg_sq in zip(state.weights, gradients, state.exp_avgs, state.exp_avg_sqs):
        exp_avg = exp_avg.lerp(gradient, 1 - beta1)
        exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * gradient * gradient
        weights.append(weight - step_size * exp_avg / (exp_avg_sq.sqrt() / bias_correction2_sqrt + ADAM_EPS))
        exp_avgs.append(exp_avg)
        exp_avg_sqs.append(exp_avg_sq)
    return LearnerState(weights, exp_avgs, exp_avg_sqs, step)


def meta_gradient(
    weights: Sequence[torch.Tensor], tasks: Sequence[torch.Tensor], *, algorithm: Algorithm
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The gradient of the mean query loss over B tasks with respect to `weights` (through every inner
    step, or first-order), and the B query losses."""
    inner = partial(adapted, num_steps=algorithm.num_steps, inner_lr=algorithm.inner_lr,
                    first_order=algorithm.first_order)  # fmt: skip

    def query_losses(initialization):
        losses = vmap(lambda *task: mse(inner(initialization, *task[:2]), *task[2:]))(*tasks)
        return losses.mean(), losses

    return grad(query_losses, has_aux=True)(list(weights))


def meta_step(
    state: LearnerState, tasks: Sequence[torch.Tensor], active: torch.Tensor, anchor: Sequence[torch.Tensor], *,
    algorithm: Algorithm,
) -> tuple[LearnerState, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """One learner's meta-update on its B tasks: `MAML.train`'s, with the mean of the B query losses.

    Returns the new state, the mean query loss and the meta-gradient's L2 norm (float64, before
    any clipping or weight decay), both NaN unless the update was applied, and whether the tasks, the
    losses and the meta-gradient are all finite. The state changes only if `active` (a 0-d bool) and finite:
    where `MAML.train` raises, it stays. `anchor` (6 tensors like the weights) is where
    `algorithm.weight_decay` pulls the weights.
    """
    meta_gradients, losses = meta_gradient(state.weights, tasks, algorithm=algorithm)
    finite = all_finite([*tasks, losses, *meta_gradients])
    # In float64: a finite float32 gradient can have a norm beyond float32's range.
    norm = sum(gradient.double().square().sum() for gradient in meta_gradients).sqrt()
    if algorithm.max_meta_gradient_norm is not None:
        scale = (algorithm.max_meta_gradient_norm / norm).clamp(max=1.0).to(meta_gradients[0].dtype)
        meta_gradients = [gradient * scale for gradient in meta_gradients]
    if algorithm.weight_decay:  # the gradient of weight_decay / 2 * |weights - anchor|^2
        meta_gradients = [
            g + algorithm.weight_decay * (w - a) for g, w, a in zip(meta_gradients, state.weights, anchor)
        ]
    stepped = adam(state, meta_gradients, algorithm.meta_lr)
    apply = active & finite
    new_state = LearnerState(
        *([torch.where(apply, new, old) for new, old in zip(news, olds)] for news, olds in zip(stepped[:3], state[:3])),
        torch.where(apply, stepped.step, state.step),
    )
    nan = torch.full((), float("nan"))
    return new_state, torch.where(apply, losses.mean(), nan), torch.where(apply, norm, nan.double()), finite


def scratch_losses(weights: Sequence[torch.Tensor], tasks: Sequence[torch.Tensor], *, num_steps: int) -> torch.Tensor:
    """`TrainFromScratch.train` on each of B tasks: `num_steps` Adam steps (lr 0.001) from a fresh copy of
    `weights` on the support set, then the query MSE. Returns the B query losses."""

    def query_loss(*task):
        state = fresh_state(weights)
        for _ in range(num_steps):
            state = adam(state, grad(mse)(state.weights, *task[:2]), SCRATCH_LR)
        return mse(state.weights, *task[2:])

    return vmap(query_loss)(*tasks)


def many(function: Callable) -> Callable:
    """`function` of one learner, for N learners: every tensor argument and result gains a leading N."""
    return vmap(function)


def compiled(function: Callable) -> Callable:
    """`function` compiled (inductor) on its first call, or `function` itself if compiling fails there.

    Compiling fails before anything is computed, so falling back loses nothing; an error about the
    input (ValueError, TypeError, FloatingPointError) is raised, not a reason to fall back, and so is a
    Ctrl-C that the compiler wrapped in an error of its own. This is the project's one call of
    `torch.compile`, with torch's default guards: a call whose tensors or Python objects differ from
    what the compiled code was traced with compiles anew (a new task shape, another algorithm).
    """
    # Every lockstep learner is torch.func's one vmap wrapper, and dynamo keeps the compiled code of one
    # function in one cache of at most `recompile_limit` entries, past which it runs eager: a study of
    # many learners needs more than the default 8.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    fast = torch.compile(function, dynamic=False, options=COMPILE_OPTIONS)
    chosen: list[Callable] = []

    def call(*args, **kwargs):
        if chosen:
            return chosen[0](*args, **kwargs)
        try:
            result = fast(*args, **kwargs)
            chosen.append(fast)
        except (ValueError, TypeError, FloatingPointError):
            raise  # bad input, not a compiler problem
        except Exception as error:  # whatever the compiler raised: the eager function still works
            if _caused_by_ctrl_c(error):
                raise KeyboardInterrupt from error
            print(f"compiling unavailable ({type(error).__name__}); running eager", file=sys.stderr)
            chosen.append(function)
            result = function(*args, **kwargs)
        return result

    return call


def _caused_by_ctrl_c(error: BaseException | None) -> bool:
    """Whether a KeyboardInterrupt is in the chain of causes and contexts of `error`."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False
