"""Many MAML learners at once: N independent learners trained in lockstep, B tasks per meta-update.

An episode of one learner costs operator dispatches, not arithmetic, so N learners whose
weights are stacked along a leading dimension cost little more than one. Learner i has
its own initialization, its own task stream and its own Adam state; with B = 1 and the
same initialization and tasks, it takes exactly the updates of `MAML.train` (up to
rounding, which the tests hold to 1e-5). With B > 1 each update follows the mean of the
B query losses, as Finn et al. do (25 tasks per update in their sine experiment).

Shapes: weights are `BaseLearner`'s 6 tensors with a leading learner dimension N, e.g.
W1 (N, 40, 1); a batch of tasks is (train_x, train_y, test_x, test_y), each (N, B, n, 1).
A network with d inputs (W1 (N, 40, d), the paper protocol's oracle) takes x parts (N, B, n, d).

    learners = BatchedMAML(initializations, num_steps=1)       # one initialization per learner
    streams = TaskStreams(seeds, k=10, k_test=40)               # one task stream per learner
    for _ in range(episodes):
        learners.train(streams.next_batch(tasks_per_update=1))
    learners.histories                                           # (N, episodes) query losses
"""

from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import torch
from torch.func import grad_and_value, vmap

from assignment import INNER_LR, META_LR, TASK_PARTS, all_finite
from maml_sine.compiled import ADAM_DEFAULTS, COMPILE_OPTIONS, scratch_query_loss, with_eager_fallback
from maml_sine.functional import adam_update_, adapted, mse
from utils import BaseLearner, SineGenerator

TaskBatch = Sequence[torch.Tensor]


def initializations_from_seeds(seeds: Sequence[tuple[int, int]], skip: int = 0) -> list[list[torch.Tensor]]:
    """Each learner's `BaseLearner.random_initial_weights()` drawn after `torch.manual_seed(its torch seed)`
    and `skip` draws discarded, leaving torch's global RNG as it was. With seed 42, `skip=0` is where
    `python test.py`'s MAML starts and `skip=1` is its from-scratch learner, which is built next."""
    initializations = []
    with torch.random.fork_rng(devices=[]):
        for _, torch_seed in seeds:
            torch.manual_seed(torch_seed)
            for _ in range(skip):
                BaseLearner.random_initial_weights()
            initializations.append(BaseLearner.random_initial_weights())
    return initializations


class TaskStreams:
    """One stream of sine tasks per learner, each from its own `numpy.random.RandomState(numpy seed)`.

    A stream draws in `SineGenerator`'s order, so the stream of numpy seed 1337 is the task
    stream of `python test.py` and of the graders' runs. `np.random` is never touched.
    """

    def __init__(self, seeds: Sequence[tuple[int, int]], k: int, k_test: int) -> None:
        self.generators = [SineGenerator(k, k_test, rng=np.random.RandomState(seed)) for seed, _ in seeds]

    def next_batch(self, tasks_per_update: int = 1) -> list[torch.Tensor]:
        """The next `tasks_per_update` tasks of every stream: four tensors, each (N, B, n, 1)."""
        tasks = [[generator.generate_task()[1] for _ in range(tasks_per_update)] for generator in self.generators]
        return [torch.stack([torch.stack([task[part] for task in lane]) for lane in tasks]) for part in range(4)]


def _query_losses(weights, train_x, train_y, test_x, test_y, *, num_steps, inner_lr, first_order):
    """One learner on its B tasks: (mean query loss, the B query losses). Tasks are (B, n, 1)."""

    def query_loss(support_x, support_y, query_x, query_y):
        fast_weights = adapted(
            weights, support_x, support_y, num_steps=num_steps, inner_lr=inner_lr, first_order=first_order
        )
        return mse(fast_weights, query_x, query_y)

    losses = vmap(query_loss)(train_x, train_y, test_x, test_y)
    return losses.mean(), losses


def _meta_gradients(weights, tasks, *, num_steps, inner_lr, first_order):
    """Every learner's meta-gradient and query losses: vmap over learners of grad over its B tasks."""
    loss = partial(_query_losses, num_steps=num_steps, inner_lr=inner_lr, first_order=first_order)
    meta_gradients, (_, losses) = vmap(grad_and_value(loss, has_aux=True))(weights, *tasks)
    return meta_gradients, losses


def _meta_step(
    weights, exp_avgs, exp_avg_sqs, steps, tasks, active, *, num_steps, inner_lr, first_order, adam, stop_diverged,
    max_norm,
):  # fmt: skip
    """One meta-update of the `active` learners (N,), in place: with `stop_diverged`, of each one whose
    loss and meta-gradient are finite; without, of all of them, or of none if one is not finite.

    A meta-gradient whose norm exceeds `max_norm` (if not None) is scaled down to it first.
    Returns the query losses (N, B), the norm of each learner's meta-gradient (N, before any
    scaling) and, per learner, whether its numbers were finite (N,).
    """
    meta_gradients, losses = _meta_gradients(
        weights, tasks, num_steps=num_steps, inner_lr=inner_lr, first_order=first_order
    )
    finite = vmap(all_finite)([losses, *meta_gradients])
    # In float64: a finite float32 gradient can have a norm beyond float32's range.
    norms = sum(gradient.double().flatten(start_dim=1).square().sum(dim=1) for gradient in meta_gradients).sqrt()
    if max_norm is not None:
        scale = (max_norm / norms).clamp(max=1.0).to(meta_gradients[0].dtype)
        meta_gradients = [gradient * scale.reshape(-1, *[1] * (gradient.ndim - 1)) for gradient in meta_gradients]
    with torch.no_grad():
        apply = active & finite if stop_diverged else active & (finite | ~active).all()
        adam_update_(weights, meta_gradients, exp_avgs, exp_avg_sqs, steps, **adam, apply=apply)
    return losses, norms, finite


class _Record:
    """One (N,) row per update, kept compactly: rows are stacked into blocks of BLOCK, so that
    40,000 updates cost 40,000 x N numbers, not 40,000 tensor objects."""

    BLOCK = 1024

    def __init__(self, num_learners: int) -> None:
        self.num_learners = num_learners
        self.blocks: list[torch.Tensor] = []
        self.rows: list[torch.Tensor] = []

    def __len__(self) -> int:
        return self.BLOCK * len(self.blocks) + len(self.rows)

    def append(self, row: torch.Tensor) -> None:
        self.rows.append(row)
        if len(self.rows) == self.BLOCK:
            self.blocks.append(torch.stack(self.rows))
            self.rows = []

    def array(self) -> np.ndarray:
        """(N, updates), float64."""
        parts = [*self.blocks, *([torch.stack(self.rows)] if self.rows else [])]
        if not parts:
            return np.zeros((self.num_learners, 0))
        return torch.cat(parts).T.double().numpy()


class _Lockstep:
    """What N learners trained in lockstep share: BaseLearner's 6 tensors of each, stacked along a
    leading learner dimension (W1 (N, 40, 1), ...), and the record of their query losses."""

    def __init__(self, initializations: Sequence[Sequence[torch.Tensor]]) -> None:
        if not initializations:
            raise ValueError(f"{type(self).__name__} needs at least one initialization")
        self.weights = [torch.stack([w.detach() for w in layer]).clone() for layer in zip(*initializations)]
        self.losses = _Record(len(self))  # each learner's query loss (mean over its tasks) of every update

    def __len__(self) -> int:
        return self.weights[0].shape[0]

    @property
    def histories(self) -> np.ndarray:
        """(N, updates): each learner's query loss of every update, as `MAML.history` holds it."""
        return self.losses.array()


class BatchedMAML(_Lockstep):
    """N MAML learners, trained in lockstep on their own tasks, each with its own Adam state.

    `initializations`: one list of BaseLearner's 6 tensors per learner (copied). The other
    arguments mean what they mean for `MAML`. `compile=True` runs each update as one
    `torch.compile`d function, and falls back to eager with one line if compiling fails.

    A learner whose loss or meta-gradient is not finite raises, as in `MAML.train`, and no
    learner is updated. With `stop_diverged=True` that learner stops instead: it keeps the
    state it had before that update, records NaN from then on, and the others go on
    (`diverged_at` says where each one stopped).

    `max_meta_gradient_norm` (off by default) scales each learner's meta-gradient down to
    that L2 norm when it is larger, before Adam: an experiment against the rare spikes
    that knock a learner off course (docs/seeds.md).
    """

    def __init__(
        self,
        initializations: Sequence[Sequence[torch.Tensor]],
        num_steps: int,
        *,
        first_order: bool = False,
        inner_lr: float = INNER_LR,
        meta_lr: float = META_LR,
        compile: bool = False,
        stop_diverged: bool = False,
        max_meta_gradient_norm: float | None = None,
    ) -> None:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
            raise ValueError(f"num_steps must be an int >= 0, got {num_steps!r}")
        super().__init__(initializations)
        self.num_steps, self.first_order, self.inner_lr, self.meta_lr = num_steps, first_order, inner_lr, meta_lr
        self.exp_avgs = [torch.zeros_like(w) for w in self.weights]
        self.exp_avg_sqs = [torch.zeros_like(w) for w in self.weights]
        # One Adam step count per learner, shaped to broadcast against each weight.
        self.steps = [torch.zeros((len(self), *[1] * (w.ndim - 1)), dtype=torch.float32) for w in self.weights]
        self.gradient_norms = _Record(len(self))  # each learner's meta-gradient norm of every update
        self.stop_diverged = stop_diverged
        self.max_meta_gradient_norm = max_meta_gradient_norm
        self.active = torch.ones(len(self), dtype=torch.bool)
        self.diverged_at: dict[int, int] = {}  # learner -> the update (0-based) it stopped at
        self._step = _compiled(_meta_step) if compile else _meta_step

    @property
    def gradient_norm_histories(self) -> np.ndarray:
        """(N, updates): the L2 norm of each learner's meta-gradient at every update, before Adam."""
        return self.gradient_norms.array()

    def initialization(self, learner: int) -> list[torch.Tensor]:
        """Learner `learner`'s current weights, as BaseLearner's 6 tensors (copies)."""
        return [w[learner].clone() for w in self.weights]

    def meta_gradients(self, tasks: TaskBatch) -> list[torch.Tensor]:
        """Each learner's meta-gradient on `tasks` (the gradient of its mean query loss), without a step."""
        meta_gradients, _ = _meta_gradients(
            self.weights, self._checked(tasks), num_steps=self.num_steps, inner_lr=self.inner_lr,
            first_order=self.first_order,
        )  # fmt: skip
        return meta_gradients

    def train(self, tasks: TaskBatch) -> None:
        """One meta-update of every learner on its B tasks: four tensors, each (N, B, n, 1).

        A learner whose task is malformed, or whose loss or meta-gradient is not finite,
        is named in the error, and no learner changes.
        """
        tasks = self._checked(tasks)
        adam = {**ADAM_DEFAULTS, "lr": self.meta_lr}
        with torch.no_grad():  # the weights are updated in place; torch.func tracks its own gradients
            losses, norms, finite = self._step(
                self.weights, self.exp_avgs, self.exp_avg_sqs, self.steps, tasks, self.active,
                num_steps=self.num_steps, inner_lr=self.inner_lr, first_order=self.first_order, adam=adam,
                stop_diverged=self.stop_diverged, max_norm=self.max_meta_gradient_norm,
            )  # fmt: skip
        diverged = self.active & ~finite
        if diverged.any() and not self.stop_diverged:
            bad = torch.flatten(torch.nonzero(diverged)).tolist()
            raise FloatingPointError(
                f"learner(s) {bad}: the query loss or meta-gradient is not finite; no learner was updated"
            )
        for learner in torch.flatten(torch.nonzero(diverged)).tolist():
            self.diverged_at[learner] = len(self.losses)
        self.active &= finite
        nan = torch.tensor(float("nan"))
        self.losses.append(torch.where(self.active, losses.mean(dim=1), nan))
        self.gradient_norms.append(torch.where(self.active, norms, nan))

    def _checked(self, tasks: TaskBatch) -> list[torch.Tensor]:
        """The four parts as tensors of the weights' dtype; a clear error naming the part if one does not fit."""
        if len(tasks) != len(TASK_PARTS):
            raise ValueError(f"tasks must have 4 parts {TASK_PARTS}, got {len(tasks)}")
        checked = []
        inputs = self.weights[0].shape[-1]  # 1 for the sine's x; more for a network given more about the task
        for name, part, width in zip(TASK_PARTS, tasks, (inputs, 1, inputs, 1)):
            if (
                not isinstance(part, torch.Tensor)
                or part.ndim != 4
                or part.shape[0] != len(self)
                or part.shape[3] != width
            ):
                shape = tuple(part.shape) if isinstance(part, torch.Tensor) else type(part).__name__
                raise ValueError(f"{name} must be a tensor of shape (N={len(self)}, B, n, {width}), got {shape}")
            checked.append(part.to(self.weights[0].dtype))
        for x_name, y_name, x, y in ((*TASK_PARTS[:2], *checked[:2]), (*TASK_PARTS[2:], *checked[2:])):
            if x.shape[:3] != y.shape[:3]:
                raise ValueError(f"{x_name} {tuple(x.shape)} and {y_name} {tuple(y.shape)} differ: every x needs its y")
        return checked


def _scratch_losses(initializations, train_x, train_y, test_x, test_y, *, num_steps, adam):
    """Every from-scratch learner on its one task: (N,) query losses. Tasks are (N, n, 1)."""
    fit = partial(scratch_query_loss, num_steps=num_steps, adam=adam)
    return vmap(lambda weights, *task: fit(weights, task))(initializations, train_x, train_y, test_x, test_y)


class BatchedTrainFromScratch(_Lockstep):
    """N from-scratch learners (`utils.TrainFromScratch`): each task starts again from the learner's own
    fixed initialization and takes `num_steps` Adam steps (lr 0.001) on its support set."""

    def __init__(
        self, initializations: Sequence[Sequence[torch.Tensor]], num_steps: int, *, compile: bool = False
    ) -> None:
        super().__init__(initializations)
        self.num_steps = num_steps
        self._losses = _compiled(_scratch_losses) if compile else _scratch_losses

    def train(self, tasks: TaskBatch) -> None:
        """Fit every learner to its task (four tensors, each (N, 1, n, 1)); record the query losses."""
        if tasks[0].ndim != 4 or tasks[0].shape[1] != 1:
            raise ValueError(f"the from-scratch learners take one task per update, got {tuple(tasks[0].shape)}")
        with torch.no_grad():
            losses = self._losses(
                self.weights, *(part[:, 0] for part in tasks), num_steps=self.num_steps, adam=ADAM_DEFAULTS
            )
        if not torch.isfinite(losses).all():
            bad = torch.flatten(torch.nonzero(~torch.isfinite(losses))).tolist()
            raise FloatingPointError(f"learner(s) {bad}: the query loss is not finite; nothing was recorded")
        self.losses.append(losses)


def _compiled(function: Callable) -> Callable:
    """`function` compiled on its first call, or `function` itself if compiling fails there."""
    compiled = torch.compile(function, dynamic=False, options=COMPILE_OPTIONS)
    return with_eager_fallback(compiled, function, what="batched step", instead="eager")
