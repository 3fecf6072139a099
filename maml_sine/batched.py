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

The learners live on one `device` (default the CPU): their state, anchors and records are made there, and
tasks are taken there. The records (each update's losses and meta-gradient norms) stay on the device
while they train and are copied to the host when read (`histories`), so no update waits for a copy.

    learners = BatchedMAML(initializations, Algorithm(num_steps=1))   # one initialization per learner
    streams = ASSIGNMENT.streams(seeds)                                 # one task stream per learner
    for _ in range(episodes):
        learners.train(streams.next_batch())
    learners.histories                                                  # (N, episodes) query losses

Eager, an update is one call of `core.meta_step` (vmapped), as written. Compiled (`compile=True`), `train_many`
takes up to CHUNK updates in one call of compiled code (`core.chunked`), as a JAX `lax.scan` would, with the
same guard on every update: the one call per update, not the arithmetic, was what an update cost.
"""

from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import torch

from assignment import TASK_PARTS, all_finite
from maml_sine.core import (
    Algorithm,
    Params,
    chunked,
    compiled,
    fresh_state,
    many,
    meta_step,
    named,
    network,
    network_shapes,
    scratch_losses,
)
from utils import BaseLearner

TaskBatch = Sequence[torch.Tensor]
CHUNK = 100  # the most updates one call of a compiled learner takes (`core.chunked`)


def initializations_from_seeds(
    seeds: Sequence[tuple[int, int]], skip: int = 0, inputs: int = 1, initialization: str = "torch"
) -> list[list[torch.Tensor]]:
    """Each learner's `BaseLearner.random_initial_weights()` drawn after `torch.manual_seed(its torch seed)`
    and `skip` draws discarded, leaving torch's global RNG as it was. With seed 42, `skip=0` is where
    `python test.py`'s MAML starts and `skip=1` is its from-scratch learner, which is built next.

    A network of more `inputs` (the oracle's 3: x, amplitude, phase) is drawn the same way:
    `torch.nn.Linear` layers (inputs -> 40 -> 40 -> 1) with their biases set to zero. `initialization`
    "truncated_normal" draws every weight instead as Finn et al.'s code does (`tf.truncated_normal`, std 0.01:
    a normal cut at two standard deviations), biases zero.

    Drawn on the host by torch's CPU generator whatever the default device, so a seed's initialization is the
    same for learners on any device (they copy it there)."""
    initializations = []
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        for _, torch_seed in seeds:
            torch.manual_seed(torch_seed)
            for _ in range(skip):
                BaseLearner.random_initial_weights()
            if initialization == "truncated_normal":
                initializations.append(_truncated_normal_network(inputs))
            else:
                initializations.append(BaseLearner.random_initial_weights(inputs=inputs))
    return initializations


def _truncated_normal_network(inputs: int, std: float = 0.01) -> list[torch.Tensor]:
    """Weights from a normal of `std` cut at two standard deviations, drawn layer by layer; biases zero."""
    return [torch.nn.init.trunc_normal_(torch.empty(shape), std=std, a=-2 * std, b=2 * std) if name[0] == "w"
            else torch.zeros(shape) for name, shape in network_shapes(inputs).items()]  # fmt: skip


class _Record:
    """One (N,) row per update, kept compactly on the rows' device: rows are stacked into blocks of BLOCK, so
    that 40,000 updates cost 40,000 x N numbers, not 40,000 tensor objects."""

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
        """(N, updates), float64, on the host: the one copy from the device."""
        parts = [*self.blocks, *([torch.stack(self.rows)] if self.rows else [])]
        if not parts:
            return np.zeros((self.num_learners, 0))
        return torch.cat(parts).T.to("cpu", torch.float64).numpy()


class _Lockstep:
    """What N learners trained in lockstep share: their state, every tensor with a leading learner
    dimension N (W1 (N, 40, 1), ...) on their `device`, the record of their query losses, and the check of
    their tasks."""

    def __init__(
        self,
        initializations: Sequence[Sequence[torch.Tensor]],
        start: Callable[[Sequence[torch.Tensor]], Params] = named,
        device: torch.device | str = "cpu",
    ) -> None:
        if not initializations:
            raise ValueError(f"{type(self).__name__} needs at least one initialization")
        self.state = fresh_state(start(_stacked(initializations, device)))
        self.losses = _Record(len(self))  # each learner's query loss (mean over its tasks) of every update

    def __len__(self) -> int:
        return self.state.params["w1"].shape[0]

    @property
    def device(self) -> torch.device:
        """Where the learners' state, records and tasks are."""
        return self.state.params["w1"].device

    @property
    def weights(self) -> list[torch.Tensor]:
        """The network's 6 tensors of every learner, N in front."""
        return network(self.state.params)

    def params(self, learner: int) -> Params:
        """Learner `learner`'s params (copies): its network and whatever else its algorithm learns."""
        return {name: tensor[learner].clone() for name, tensor in self.state.params.items()}

    @property
    def histories(self) -> np.ndarray:
        """(N, updates): each learner's query loss of every update, as `MAML.history` holds it."""
        return self.losses.array()

    def initialization(self, learner: int) -> list[torch.Tensor]:
        """Learner `learner`'s current weights, as BaseLearner's 6 tensors (copies)."""
        return [w[learner].clone() for w in self.weights]

    def checked(self, tasks: TaskBatch) -> list[torch.Tensor]:
        """`shaped` tasks, or a clear error naming the learners whose tasks hold NaN or infinity."""
        tasks = self.shaped(tasks)
        self.refuse_non_finite(tasks)
        return tasks

    def shaped(self, tasks: TaskBatch) -> list[torch.Tensor]:
        """The four parts as tensors of the weights' dtype on their device (copied there if they are elsewhere;
        a stream of these learners' device gives them there), each (N, B, n, d or 1), or a clear error naming
        the part that does not fit."""
        if len(tasks) != len(TASK_PARTS):
            raise ValueError(f"tasks must have 4 parts {TASK_PARTS}, got {len(tasks)}")
        shaped = []
        dtype = self.weights[0].dtype
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
            if not part.is_floating_point() or 0 in part.shape:
                got = f"{part.dtype} of shape {tuple(part.shape)}"
                raise ValueError(f"{name} must hold floating-point numbers, at least one task and point, got {got}")
            shaped.append(part.to(self.device, dtype))
        for x_name, y_name, x, y in ((*TASK_PARTS[:2], *shaped[:2]), (*TASK_PARTS[2:], *shaped[2:])):
            if x.shape[:3] != y.shape[:3]:
                raise ValueError(f"{x_name} {tuple(x.shape)} and {y_name} {tuple(y.shape)} differ: every x needs its y")
        if shaped[0].shape[1] != shaped[2].shape[1]:
            raise ValueError(f"train_x has {shaped[0].shape[1]} tasks per learner but test_x {shaped[2].shape[1]}")
        return shaped

    def train_many(self, batches: Sequence[TaskBatch]) -> None:
        """One update per batch of `batches`, in order: `train` on each."""
        for tasks in batches:
            self.train(tasks)

    def refuse_non_finite(self, tasks: Sequence[torch.Tensor]) -> None:
        """A ValueError naming the learners whose (shaped) tasks hold NaN or infinity, if any do."""
        if not all_finite(tasks):  # one sum over everything; which learner, only when something is wrong
            finite = torch.stack([torch.isfinite(part).flatten(start_dim=1).all(dim=1) for part in tasks]).all(dim=0)
            raise ValueError(
                f"learner(s) {_indices(~finite)}: the tasks hold NaN or infinite values; no learner changed"
            )


class BatchedMAML(_Lockstep):
    """N MAML learners of one `algorithm`, trained in lockstep on their own tasks, each with its own Adam state.

    `initializations`: one list of BaseLearner's 6 tensors per learner (copied). `compile=True`
    runs each update as one compiled function (eager, said in one line, if compiling fails).

    A learner whose loss or meta-gradient is not finite raises, as in `MAML.train`, and no
    learner changes; so does one whose update would overflow Adam's second moment (where torch's Adam would
    go on with an infinity). With `stop_diverged=True` that learner stops instead: it keeps the
    state it had before that update, records NaN from then on, and the others go on
    (`diverged_at` says where each one stopped). `stop(learners)` stops learners on purpose.

    `anchors` (one list of 6 tensors per learner) is where `algorithm.weight_decay` pulls each
    learner's weights; zero if not given, and for whatever else the algorithm learns. `updates`, how many
    updates the run will take, is what an algorithm that anneals over training (Reptile, MAML++) anneals over.
    `device`: where the learners are (initializations and anchors are copied there).

    One host sync per update remains: whether every learner's update was finite (`train` must raise, or stop
    the learners, before anything changes).
    """

    def __init__(
        self,
        initializations: Sequence[Sequence[torch.Tensor]],
        algorithm: Algorithm,
        *,
        compile: bool = False,
        stop_diverged: bool = False,
        anchors: Sequence[Sequence[torch.Tensor]] | None = None,
        updates: int | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(initializations, algorithm.start, device)
        self.anchors = {name: torch.zeros_like(tensor) for name, tensor in self.state.params.items()}
        if anchors is not None:
            stacked = _stacked(anchors, self.device)
            if [a.shape for a in stacked] != [w.shape for w in self.weights]:
                raise ValueError("anchors must be shaped as the initializations: one list of 6 tensors per learner")
            self.anchors.update(named(stacked))
        self._algorithm = algorithm
        self.gradient_norms = _Record(len(self))  # each learner's meta-gradient norm of every update
        self.stop_diverged = stop_diverged
        self.active = torch.ones(len(self), dtype=torch.bool, device=self.device)
        self.diverged_at: dict[int, int] = {}  # learner -> the update (0-based) it stopped at
        # Eager, one update per call, as written; compiled, up to CHUNK updates per call.
        self._step = many(partial(meta_step, algorithm=algorithm, updates=updates))
        self._chunk = compiled(chunked(self._step, stop_diverged=stop_diverged)) if compile else None
        self._buffers: list[torch.Tensor] = []  # the tasks of a compiled chunk (`_stacked_in_buffers`)

    @property
    def algorithm(self) -> Algorithm:
        """How these learners are meta-trained; fixed when they are built (their update is built from it)."""
        return self._algorithm

    @property
    def gradient_norm_histories(self) -> np.ndarray:
        """(N, updates): the L2 norm of each learner's meta-gradient at every update, before Adam."""
        return self.gradient_norms.array()

    def go_on_from(self, saved: "BatchedMAML") -> None:
        """Take over the state, records and stops of `saved` (as many learners of this algorithm on this device,
        e.g. loaded from a checkpoint of part of a run), shared, not copied: the next update is the one `saved`
        would have taken next, run by these learners' own update (compiled or not)."""
        if (saved.algorithm != self.algorithm or len(saved) != len(self) or saved.device != self.device
                or (not saved.active.all() and not self.stop_diverged)):  # fmt: skip
            raise ValueError(f"{len(self)} learners go on only from as many of their algorithm on their device "
                             "(stopped ones only if these stop the diverged)")  # fmt: skip
        self.state, self.losses, self.gradient_norms = saved.state, saved.losses, saved.gradient_norms
        self.active, self.diverged_at = saved.active.clone(), dict(saved.diverged_at)

    def train(self, tasks: TaskBatch) -> None:
        """One meta-update of every learner on its B tasks: four tensors, each (N, B, n, d or 1).

        A learner whose task is malformed, or whose loss or meta-gradient is not finite,
        is named in the error, and no learner changes (unless `stop_diverged`: see the class).
        """
        self.train_many([tasks])

    def train_many(self, batches: Sequence[TaskBatch]) -> None:
        """One meta-update per batch of `batches` (each as `train` takes it), in order: as many calls of `train`,
        and, compiled, one call of compiled code per CHUNK of them. An update that raises leaves the learners as
        the updates before it left them."""
        if self._chunk is None:
            for tasks in batches:
                self._update(self.shaped(tasks))
            return
        while batches:  # a chunk of the batches shaped as its first, which is checked; one shaped otherwise starts one
            signatures = [_signature(tasks) for tasks in batches[:CHUNK]]
            count = next((at for at, signature in enumerate(signatures) if signature != signatures[0]), len(signatures))
            self.shaped(batches[0])
            self._update_chunk(batches[:count])
            batches = batches[count:]

    def _update(self, tasks: list[torch.Tensor]) -> None:
        """One meta-update on shaped tasks, one learner's update (vmapped) at a time, eager."""
        if not self.active.any():  # every learner has stopped: nothing to compute
            nan = torch.full((len(self),), float("nan"), device=self.device)
            self.losses.append(nan)
            self.gradient_norms.append(nan.double())
            return
        with torch.no_grad():  # torch.func tracks its own gradients
            state, losses, norms, finite = self._step(self.state, tasks, self.active, self.anchors)
        if not finite.all():  # rare, so sorted out only here, before anything changes
            self.refuse_non_finite(tasks)
            self._stop_or_raise(self.active & ~finite)
        self.state = state
        self.losses.append(losses)  # NaN for a learner that has stopped
        self.gradient_norms.append(norms)

    def _update_chunk(self, batches: Sequence[TaskBatch]) -> None:
        """Meta-updates on up to CHUNK batches shaped alike (the first checked by `shaped`), in one call of the
        compiled `core.chunked`."""
        tasks = self._stacked_in_buffers(batches)
        start, end = (torch.tensor(row, device=self.device) for row in (0, len(batches)))
        done_before = len(self.losses)
        with torch.no_grad():
            taken, self.state, self.active, losses, norms, halted, bad, stopped_at = self._chunk(
                self.state, tasks, self.active, self.anchors, start, end
            )
        taken = int(taken)
        for row in range(taken):
            self.losses.append(losses[row])
            self.gradient_norms.append(norms[row])
        for learner in _indices(stopped_at >= 0):
            self.diverged_at[learner] = done_before + int(stopped_at[learner])
        if halted:  # the update it halted before raises, as it would have alone
            self.refuse_non_finite([part[taken] for part in tasks])
            self._stop_or_raise(bad)

    def _stacked_in_buffers(self, batches: Sequence[TaskBatch]) -> list[torch.Tensor]:
        """The batches' four parts stacked into this learner's buffers, (CHUNK, N, B, n, d or 1) each, in its dtype
        on its device: the same tensors every call (new ones for batches of another shape), whose rows past the
        batches are never run, so the compiled chunk runs the same code for any number of batches."""
        shapes = [(CHUNK, *part.shape) for part in batches[0]]
        if [buffer.shape for buffer in self._buffers] != shapes:
            self._buffers = [self.weights[0].new_zeros(shape) for shape in shapes]
        for buffer, parts in zip(self._buffers, zip(*batches), strict=True):
            buffer[: len(parts)].copy_(torch.stack(parts))
        return self._buffers

    def _stop_or_raise(self, diverged: torch.Tensor) -> None:
        """Stop the `diverged` learners (N bools) if `stop_diverged`, else raise naming them."""
        if not diverged.any():
            return
        if not self.stop_diverged:
            raise FloatingPointError(
                f"learner(s) {_indices(diverged)}: the query loss or meta-gradient is not finite; no learner changed"
            )
        for learner in _indices(diverged):
            self.diverged_at[learner] = len(self.losses)
        self.stop(diverged)

    def stop(self, learners: torch.Tensor) -> None:
        """Stop the learners where `learners` (N bools) is True: they keep their weights and record NaN from now on."""
        self.active = self.active & ~learners


class BatchedTrainFromScratch(_Lockstep):
    """N from-scratch learners (`utils.TrainFromScratch`): each task starts again from the learner's own
    fixed initialization and takes `num_steps` Adam steps (lr 0.001) on its support set."""

    def __init__(
        self, initializations: Sequence[Sequence[torch.Tensor]], num_steps: int, *, compile: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:  # fmt: skip
        super().__init__(initializations, device=device)
        self.num_steps = num_steps
        losses = many(partial(scratch_losses, num_steps=num_steps))
        self._losses = compiled(losses) if compile else losses

    def train(self, tasks: TaskBatch) -> None:
        """Fit every learner to its tasks (four tensors, each (N, B, n, 1)); record the mean query losses."""
        tasks = self.checked(tasks)
        with torch.no_grad():
            losses = self._losses(self.weights, tasks).mean(dim=1)
        if not torch.isfinite(losses).all():
            raise FloatingPointError(
                f"learner(s) {_indices(~torch.isfinite(losses))}: the query loss is not finite; nothing was recorded"
            )
        self.losses.append(losses)


def _stacked(networks: Sequence[Sequence[torch.Tensor]], device: torch.device | str) -> list[torch.Tensor]:
    """N networks' 6 tensors as 6 tensors with N in front (detached), on `device`."""
    return [torch.stack([w.detach() for w in layer]).to(device) for layer in zip(*networks)]


def _signature(tasks: TaskBatch) -> list | None:
    """What `shaped` checks of a batch, as a value: batches of one signature are shaped alike (None: not tensors)."""
    if not all(isinstance(part, torch.Tensor) for part in tasks):
        return None
    return [(part.shape, part.dtype, part.device) for part in tasks]


def _indices(mask: torch.Tensor) -> list[int]:
    """The positions where a (N,) bool tensor is True."""
    return torch.flatten(torch.nonzero(mask)).tolist()
