"""One meta-update, written once: pure functions over a learner's state, for any number of learners.

`MAML.train` in assignment.py is the specification. Here the same update is a pure function
of one learner's state and its tasks, so that `torch.func` can differentiate it, `vmap` can
run N learners as one (their tensors stacked along a leading dimension), and `torch.compile`
can fuse it into a few kernels:

    Algorithm        a learner of the MAML family as pure functions: MAML itself, and the base of the others
    meta_step        inner SGD steps on each task's support set, the query loss, its gradient
                     with respect to the initialization, Adam written as arithmetic, and the
                     finite guard: a learner whose loss or meta-gradient is not finite, or whose update
                     would overflow Adam's state, keeps its state
    scratch_losses   the from-scratch learner beside it: Adam from a fresh copy on every task
    many             either of them for N learners at once (vmap over the leading dimension)
    chunked          N learners' meta_step for a chunk of pre-drawn batches in one call (torch.while_loop)
    compiled         a function compiled on its first call, eager if compiling fails there

Every tensor these functions make is made beside their inputs (`new_zeros`, `zeros_like`), so a learner runs
on whatever device its state is on.

Shapes for one learner: weights are `BaseLearner`'s 6 tensors, W1 (40, d), b1 (40), W2 (40, 40),
b2 (40), W3 (1, 40), b3 (1), with d inputs (1 for the sine's x; 3 for the oracle's x, amplitude
and phase); its tasks are (train_x, train_y, test_x, test_y), each (B tasks, n points, d or 1).
"""

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from assignment import INNER_LR, META_LR, all_finite, check_options
from utils import LAYER_SIZES, BaseLearner

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, as MAML and TrainFromScratch use them
ADAM_EPS = 1e-8
SCRATCH_LR = 1e-3  # TrainFromScratch's Adam: torch's default lr
# A C++ wrapper calls the generated kernels without Python in between: about 1.5x
# faster per update than inductor's default Python wrapper here, for ~10 s more compiling.
COMPILE_OPTIONS = {"cpp_wrapper": True}
RECOMPILE_LIMIT = 64  # compiled configurations of one function per process (dynamo's default: 8)


def network_shapes(inputs: int = LAYER_SIZES[0]) -> dict[str, tuple[int, ...]]:
    """BaseLearner's tensors by name, in its order, and their shapes in a network of `inputs` inputs: a weight
    (out, in) and a bias (out,) for each layer of utils' LAYER_SIZES, as `torch.nn.Linear` holds them."""
    layers = enumerate(pairwise((inputs, *LAYER_SIZES[1:])), start=1)
    return {
        name: shape
        for layer, (fan_in, fan_out) in layers
        for name, shape in ((f"w{layer}", (fan_out, fan_in)), (f"b{layer}", (fan_out,)))
    }


NETWORK = tuple(network_shapes())  # BaseLearner's tensors by name, in its order: w1, b1, w2, b2, w3, b3

T = TypeVar("T")  # what an inner gradient is taken at: a tensor, or a list or dict of them
Params = dict[str, torch.Tensor]  # what a learner learns, by name: the network's NETWORK tensors and its own


def network(params: Params) -> list[torch.Tensor]:
    """The network's 6 tensors of a learner's `params`, in BaseLearner's order."""
    return [params[name] for name in NETWORK]


def named(weights: Sequence[torch.Tensor]) -> Params:
    """BaseLearner's 6 tensors by their names."""
    return dict(zip(NETWORK, weights, strict=True))


@dataclass(frozen=True)
class Algorithm:
    """A learner's algorithm: what it learns, how it adapts to a task and how it is meta-trained, as pure
    functions of its params. This class is MAML (`MAML`'s arguments mean the same); another learner of the
    family is a subclass with a `kind` of its own and its own fields, overriding what it does differently:

        start(weights)                            the params it learns, from the network it starts from
        inner_step(params, x, y, index)           one adaptation step on a support set (only the network moves)
        query_loss(params, task, progress)        what its meta-update lowers on one task
        meta_gradient(params, tasks, progress)    the direction of its meta-update over B tasks, and their losses
        meta_update(state, gradients, progress)   its outer optimizer: Adam at `meta_lr`
        network_inputs(inputs)                    the inputs of the network it starts from

    `progress` is the share of its training already done (0 at the first update, towards 1 at the last; 0 when
    the length of the run is not given), for algorithms that anneal over training.

    `num_steps` 0 is the pretrained network (fitted to the tasks' points directly).
    `max_meta_gradient_norm` scales a longer meta-gradient down to that L2 norm before the meta-update
    (an experiment against rare spikes; None, the default, as in `MAML.train`).
    `weight_decay` adds an L2 pull towards the learner's anchor (zero unless given) to the
    gradient, as `torch.optim.Adam(weight_decay=...)` adds it towards zero; 0, the default, as in `MAML.train`.
    """

    kind: str = field(default="maml", init=False)  # in every record, so a file says which learner it holds
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

    @staticmethod
    def from_record(record: Mapping) -> "Algorithm":
        """The algorithm `dataclasses.asdict` wrote as `record` (its class found by its `kind`)."""
        fields, classes, kinds = dict(record), [Algorithm], {}
        while classes:  # the family, subclasses of subclasses included
            kind = classes.pop()
            kinds[kind.kind] = kind
            classes += kind.__subclasses__()
        return kinds[fields.pop("kind")](**fields)

    def start(self, weights: Sequence[torch.Tensor]) -> Params:
        """What a learner of this algorithm learns, starting from the network `weights`: MAML, the network alone."""
        return named(weights)

    def inner_step(self, params: Params, x: torch.Tensor, y: torch.Tensor, index: int) -> Params:
        """`params` after inner step number `index` (0 first) on the support set (x, y): MAML's, one SGD step of
        the network at `inner_lr`."""
        return {**params, **named(sgd_step(network(params), x, y, [self.inner_lr] * len(NETWORK), self.first_order))}

    def adapt(
        self, params: Params, x: torch.Tensor, y: torch.Tensor, num_steps: int | None = None
    ) -> list[torch.Tensor]:
        """The network's fast weights after `num_steps` (default: S) inner steps on the support set (x, y)."""
        for index in range(self.num_steps if num_steps is None else num_steps):
            params = self.inner_step(params, x, y, index)
        return network(params)

    def query_loss(self, params: Params, task: Sequence[torch.Tensor], progress: torch.Tensor) -> torch.Tensor:
        """MAML's: the query MSE of the fast weights `adapt` gives on the task's support set."""
        support_x, support_y, query_x, query_y = task
        return mse(self.adapt(params, support_x, support_y), query_x, query_y)

    def meta_gradient(
        self, params: Params, tasks: Sequence[torch.Tensor], progress: torch.Tensor | float = 0.0
    ) -> tuple[Params, torch.Tensor]:
        """The gradient of the mean `query_loss` over B tasks (each part (B, n, d)) with respect to `params`
        (through every inner step, or first-order), and the B losses."""

        def mean_query_loss(params):
            losses = vmap(lambda *task: self.query_loss(params, task, progress))(*tasks)
            return losses.mean(), losses

        return grad(mean_query_loss, has_aux=True)(dict(params))

    def meta_update(self, state: "LearnerState", gradients: Params, progress: torch.Tensor) -> "LearnerState":
        """The state after one step of the outer optimizer on `gradients`: torch's Adam at `meta_lr`."""
        return adam(state, gradients, self.meta_lr)

    def network_inputs(self, inputs: int) -> int:
        """The inputs of the network a learner starts from, for tasks whose x has `inputs` columns: as many."""
        return inputs


class LearnerState(NamedTuple):
    """A learner's params and its meta-optimizer's state, each a mapping of the same names; with N learners,
    every tensor has N in front."""

    params: Params
    exp_avgs: Params  # Adam's first moment of each
    exp_avg_sqs: Params  # Adam's second moment of each
    step: torch.Tensor  # Adam's step count, 0-d float32 (torch's Adam keeps it as a float tensor)


def fresh_state(params: Params) -> LearnerState:
    """The state of a learner that has not stepped yet: its params (copied) and zero moments."""
    params = {name: tensor.detach().clone() for name, tensor in params.items()}
    zeros = {name: torch.zeros_like(tensor) for name, tensor in params.items()}
    step = params["w1"].new_zeros(params["w1"].shape[:-2])
    return LearnerState(params, zeros, {name: zero.clone() for name, zero in zeros.items()}, step)


def mse(weights: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The mean squared error of `BaseLearner.forward(x, weights)` against y; x (m, d), y (m, 1)."""
    return F.mse_loss(BaseLearner.forward(x, weights), y)


def inner_gradient(loss: Callable[[T], torch.Tensor], at: T, first_order: bool = False) -> T:
    """The gradient of an inner step's `loss` at `at` (a tensor, or a list or dict of them), shaped as `at`."""
    # Without grad tracking around it, the inner gradient is a constant to the outer
    # transform: first-order MAML. With tracking, the meta-gradient sees its Hessian terms.
    with torch.no_grad() if first_order else torch.enable_grad():
        return grad(loss)(at)


def sgd_step(
    weights: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor, step_sizes: Sequence[float | torch.Tensor],
    first_order: bool = False,
) -> list[torch.Tensor]:  # fmt: skip
    """One step of `MAML.adapt`: w <- w - lr * grad mse(w) on (x, y), with one step size per weight (a number,
    or a tensor: a step size per parameter, as Meta-SGD learns)."""
    gradients = inner_gradient(lambda weights: mse(weights, x, y), list(weights), first_order)
    # `w - lr * g`, as in MAML.adapt. The one-op torch.add(w, g, alpha=-lr), under torch.func
    # inside torch.compile (torch 2.13, inductor, CPU), gave wrong fast weights (loss 21.3, eager 4.33).
    return [w - lr * g for w, g, lr in zip(weights, gradients, step_sizes, strict=True)]


def adam(state: LearnerState, gradients: Params, lr: float) -> LearnerState:
    """torch.optim.Adam's step (default betas and eps, no weight decay), as arithmetic: the state after it."""
    beta1, beta2 = ADAM_BETAS
    step = state.step + 1
    count = step.double()  # bias corrections in float64, as torch's Adam computes them
    dtype = state.params["w1"].dtype
    step_size = (lr / (1 - beta1**count)).to(dtype)
    bias_correction2_sqrt = (1 - beta2**count).sqrt().to(dtype)
    params, exp_avgs, exp_avg_sqs = {}, {}, {}
    for name, gradient in gradients.items():
        exp_avgs[name] = state.exp_avgs[name].lerp(gradient, 1 - beta1)
        exp_avg_sqs[name] = state.exp_avg_sqs[name] * beta2 + (1 - beta2) * gradient * gradient
        denominator = exp_avg_sqs[name].sqrt() / bias_correction2_sqrt + ADAM_EPS
        params[name] = state.params[name] - step_size * exp_avgs[name] / denominator
    return LearnerState(params, exp_avgs, exp_avg_sqs, step)


def meta_step(
    state: LearnerState, tasks: Sequence[torch.Tensor], active: torch.Tensor, anchor: Params, *,
    algorithm: Algorithm, updates: int | None = None,
) -> tuple[LearnerState, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """One learner's meta-update on its B tasks: `MAML.train`'s, with the mean of the B query losses (or
    whatever else `algorithm` does: its meta-gradient and its meta-update).

    Returns the new state, the mean query loss and the meta-gradient's L2 norm (float64, before
    any clipping or weight decay), both NaN unless the update was applied, and whether the tasks, the
    losses, the meta-gradient and the state after the update are all finite. The state changes only if
    `active` (a 0-d bool) and finite: where `MAML.train` raises, it stays. `anchor` (named as the params) is
    where `algorithm.weight_decay` pulls them. `updates`, the length of the run, is what the algorithm's
    `progress` counts towards.
    """
    progress = (state.step / updates).clamp(max=1.0) if updates else state.step.new_zeros(())
    meta_gradients, losses = algorithm.meta_gradient(state.params, tasks, progress)
    finite = all_finite([*tasks, losses, *meta_gradients.values()])
    # In float64: a finite float32 gradient can have a norm beyond float32's range.
    norm = sum(gradient.double().square().sum() for gradient in meta_gradients.values()).sqrt()
    if algorithm.max_meta_gradient_norm is not None:
        scale = (algorithm.max_meta_gradient_norm / norm).clamp(max=1.0).to(losses.dtype)
        meta_gradients = {name: gradient * scale for name, gradient in meta_gradients.items()}
    if algorithm.weight_decay:  # the gradient of weight_decay / 2 * |params - anchor|^2
        meta_gradients = {name: gradient + algorithm.weight_decay * (state.params[name] - anchor[name])
                          for name, gradient in meta_gradients.items()}  # fmt: skip
    stepped = algorithm.meta_update(state, meta_gradients, progress)
    # A finite meta-gradient beyond about 1e19 overflows Adam's second moment (g * g) in float32: torch's Adam
    # would carry the infinity and freeze those weights silently; here that update is refused like a non-finite one.
    finite = finite & all_finite([*stepped.params.values(), *stepped.exp_avg_sqs.values()])
    apply = active & finite
    new_state = LearnerState(
        *({name: torch.where(apply, new[name], old[name]) for name in old} for new, old in zip(stepped[:3], state[:3])),
        torch.where(apply, stepped.step, state.step),
    )
    nan = losses.new_full((), float("nan"))
    return new_state, torch.where(apply, losses.mean(), nan), torch.where(apply, norm, nan.double()), finite


def chunked(step: Callable, *, stop_diverged: bool) -> Callable:
    """`step` (N learners' one update: `many(meta_step)` with its options bound) for updates `start` .. `end - 1`
    of a chunk of pre-drawn batches, in one call: a `torch.while_loop` that carries the learners' state. Compiled,
    one call runs them all, as a JAX `lax.scan` does, instead of paying for a call of compiled code per update.

        chunk(state, tasks, active, anchor, start, end)
            -> (taken, state, active, losses, norms, halted, bad, diverged_at)

    `tasks`: the four parts, each (T, N, B, n, d or 1); `start`, `end`: 0-d int64 tensors, so a chunk of fewer than
    T batches (padded to T) runs the same compiled code. Each update is `step`'s, guarded as `BatchedMAML.train`
    guards it. A learner whose update is not finite (`bad`, (N,)) stops there if `stop_diverged`: `diverged_at`
    (N,) is that update's row in the chunk, -1 for the others. Otherwise the chunk halts before that update, as it
    does in both modes before an update whose tasks are not finite: `halted` (0-d) is then True, `taken` (0-d) is
    that update's row, and the state is the one before it. `losses`, `norms` (T, N): each update's records, NaN
    in the rows not taken.
    """

    def chunk(state, tasks, active, anchor, start, end):
        rows = torch.arange(tasks[0].shape[0], device=start.device)
        losses = tasks[0].new_full(tasks[0].shape[:2], float("nan"))
        no, diverged_at = torch.zeros_like(active), torch.full_like(active, -1, dtype=torch.int64)
        carried = (start.clone(), state, active, losses, losses.double(), no.any(), no, diverged_at)

        def going_on(update, state, active, losses, norms, halted, bad, diverged_at):
            return (update < end) & ~halted

        def one_update(update, state, active, losses, norms, halted, bad, diverged_at):
            batch = [part.index_select(0, update.view(1)).squeeze(0) for part in tasks]
            stepped, loss, norm, finite = step(state, batch, active, anchor)
            bad = active & ~finite
            tasks_not_finite = ~all_finite(batch) & active.any()  # as `train` checks them: while a learner goes on
            halted = tasks_not_finite if stop_diverged else tasks_not_finite | bad.any()
            state = LearnerState(
                *({name: torch.where(halted, old[name], new[name]) for name in old}
                  for new, old in zip(stepped[:3], state[:3])),
                torch.where(halted, state.step, stepped.step),
            )  # fmt: skip
            if stop_diverged:  # the learners that diverged stop here; the others go on
                stopping = bad & ~halted
                diverged_at = torch.where(stopping, update, diverged_at)
                active = active & ~stopping
            recorded = (rows == update).unsqueeze(1) & ~halted
            losses = torch.where(recorded, loss.unsqueeze(0), losses)
            norms = torch.where(recorded, norm.unsqueeze(0), norms)
            return update + (~halted).long(), state, active.clone(), losses, norms, halted, bad, diverged_at.clone()

        return torch.while_loop(going_on, one_update, carried)

    return chunk


def scratch_losses(weights: Sequence[torch.Tensor], tasks: Sequence[torch.Tensor], *, num_steps: int) -> torch.Tensor:
    """`TrainFromScratch.train` on each of B tasks: `num_steps` Adam steps (lr 0.001) from a fresh copy of
    `weights` on the support set, then the query MSE. Returns the B query losses."""

    def query_loss(*task):
        state = fresh_state(named(weights))
        for _ in range(num_steps):
            state = adam(state, named(grad(mse)(network(state.params), *task[:2])), SCRATCH_LR)
        return mse(network(state.params), *task[2:])

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
