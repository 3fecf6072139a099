"""Finn et al.'s own sine protocol (Section 5.1 of the paper and, where it is silent, the authors' code).

Meta-training, one model per K (5 and 10), as the authors train one per `update_batch_size`:
every meta-update takes 25 new tasks per learner, each with K support and K query points
(the code draws 2K points per task and splits them in half); 70,000 updates; Adam at 0.001.
Three learners see the very same tasks and start, where their shapes allow, from the same
initialization:

    maml        one inner SGD step (lr 0.01) on the support points, second-order
    pretrained  the network fitted to the tasks' points directly (S = 0), then fine-tuned at test time
    oracle      the pretrained network given each task's amplitude and phase as two more inputs,
                which tell it everything about the task: the floor no learner can beat

Meta-testing: the held-out tasks of `maml_sine.evaluation`, 0..10 SGD steps (lr 0.01) on K
support points, scored on K new random points of each task (as the authors' code scores) and on
the 100-point grid (as the rest of this project scores). docs/paper_protocol.md lists every
place where this differs from the paper or the code, and why.

Shapes: a batch of tasks is four tensors (N learners, B tasks, K points, d inputs) with d = 1,
or 3 for the oracle (x, amplitude, phase); amplitudes and phases are (N, B).
"""

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import torch

from assignment import INNER_LR
from maml_sine.batched import BatchedMAML, initializations_from_seeds
from maml_sine.evaluation import (
    MAX_STEPS,
    HeldOutTasks,
    mse_per_task,
    predictions_after_each_step,
    sgd_steps,
    summarize,
)
from maml_sine.training import COMPILE_FROM, ORACLE_INPUTS, LearnerSpec, lane_seeds, meta_train_in_lockstep
from utils import AMPLITUDE_RANGE, LAYER_SIZES, PHASE_RANGE, X_RANGE

TASKS_PER_UPDATE = 25  # the code's meta_batch_size
UPDATES = 70_000  # the code's --metatrain_iterations for the sine
ORACLE_LAYER_SIZES = (ORACLE_INPUTS, *LAYER_SIZES[1:])  # x, amplitude, phase -> 40 -> 40 -> y
DRAWN_AT_ONCE = 500  # updates' worth of tasks drawn per call into numpy; the tasks depend on it
K10_MODEL_AT_K5 = "5, trained at K=10"  # the key of the results of the K = 10 models fine-tuned on K = 5 points
SECTIONS = {
    "5": "K = 5",
    "10": "K = 10",
    K10_MODEL_AT_K5: "K = 5, fine-tuning the models trained at K = 10 (as the paper's text does)",
}
LEARNERS = {
    "maml": LearnerSpec("MAML, S=1", "tab:blue", num_steps=1),
    "pretrained": LearnerSpec("pretrained (S=0)", "tab:orange", num_steps=0),
    "oracle": LearnerSpec("oracle (given a and p)", "tab:purple", num_steps=0, oracle=True),
}


def with_amplitude_and_phase(x: torch.Tensor, amplitudes: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
    """The oracle's inputs: each point's x beside its task's amplitude and phase. x (..., m, 1) and
    amplitudes, phases (...) give (..., m, 3)."""
    per_point = [values[..., None, None].expand_as(x).to(x.dtype) for values in (amplitudes, phases)]
    return torch.cat([x, *per_point], dim=-1)


class PaperTaskStreams:
    """One stream of task batches per learner: `tasks_per_update` sine tasks y = a sin(x + p) per update,
    each with k support and k query points, from `numpy.random.default_rng(numpy seed)`.

    Tasks are drawn DRAWN_AT_ONCE updates at a time, in whole arrays: 70,000 updates of 25
    tasks are 1.75 million tasks per learner, too many to draw one by one. With `oracle`, the
    x parts carry each task's amplitude and phase as two more inputs.
    """

    def __init__(self, numpy_seeds: Sequence[int], k: int, *, tasks_per_update: int = TASKS_PER_UPDATE,
                 oracle: bool = False) -> None:  # fmt: skip
        self.generators = [np.random.default_rng(seed) for seed in numpy_seeds]
        self.k, self.tasks_per_update, self.oracle = k, tasks_per_update, oracle
        self.drawn: list[torch.Tensor] = []  # x, y, amplitudes, phases of the next updates, update first
        self.next_update = 0

    def next_batch(self) -> list[torch.Tensor]:
        """The next update's tasks of every learner: (train_x, train_y, test_x, test_y), each (N, B, k, d)."""
        if not self.drawn or self.next_update == DRAWN_AT_ONCE:
            self.drawn, self.next_update = self._draw(), 0
        x, y, amplitudes, phases = (part[self.next_update] for part in self.drawn)
        self.next_update += 1
        if self.oracle:
            x = with_amplitude_and_phase(x, amplitudes, phases)
        return [x[:, :, : self.k], y[:, :, : self.k], x[:, :, self.k :], y[:, :, self.k :]]

    def _draw(self) -> list[torch.Tensor]:
        """x, y (DRAWN_AT_ONCE, N, B, 2k, 1) and amplitudes, phases (DRAWN_AT_ONCE, N, B), float32."""
        shape = (DRAWN_AT_ONCE, self.tasks_per_update)
        per_learner = [
            (rng.uniform(*AMPLITUDE_RANGE, shape), rng.uniform(*PHASE_RANGE, shape),
             rng.uniform(*X_RANGE, (*shape, 2 * self.k, 1)))
            for rng in self.generators
        ]  # fmt: skip
        amplitudes, phases, x = (np.stack(part, axis=1) for part in zip(*per_learner))
        y = amplitudes[..., None, None] * np.sin(x + phases[..., None, None])
        return [torch.from_numpy(part.astype(np.float32)) for part in (x, y, amplitudes, phases)]


def oracle_initializations(seeds: Sequence[tuple[int, int]]) -> list[list[torch.Tensor]]:
    """Each seed's oracle network, 3-40-40-1, drawn as `BaseLearner.random_initial_weights` draws the
    1-40-40-1 one (torch.nn.Linear's default weights, zero biases) after `torch.manual_seed(its torch
    seed)`, leaving torch's global RNG as it was."""
    initializations = []
    with torch.random.fork_rng(devices=[]):
        for _, torch_seed in seeds:
            torch.manual_seed(torch_seed)
            layers = [torch.nn.Linear(fan_in, fan_out) for fan_in, fan_out in pairwise(ORACLE_LAYER_SIZES)]
            initializations.append(
                [t for layer in layers for t in (layer.weight.detach(), torch.zeros(layer.out_features))]
            )
    return initializations


def meta_train(learner: LearnerSpec, num_seeds: int, updates: int, *, k: int) -> tuple[BatchedMAML, list]:
    """`learner` meta-trained for `num_seeds` seeds at once under the paper's protocol with K = `k`:
    seed i draws its tasks from numpy seed 1337 + i and its initialization from torch seed 42 + i,
    whatever the learner, so MAML and the pretrained network of a seed share both. Returns the
    `BatchedMAML` and the seeds; Ctrl-C raises KeyboardInterrupt saying how far it got."""
    seeds = lane_seeds(num_seeds)
    initializations = oracle_initializations(seeds) if learner.oracle else initializations_from_seeds(seeds)
    learners = BatchedMAML(initializations, learner.num_steps, compile=updates >= COMPILE_FROM)
    streams = PaperTaskStreams([numpy_seed for numpy_seed, _ in seeds], k, oracle=learner.oracle)
    what = f"{learner.label}, K={k}"
    description = f"{what}, seeds 0-{num_seeds - 1}"
    # The bar names the learner; its figure is the median over seeds of the recent query MSE.
    meta_train_in_lockstep(learners, streams, updates, what=what, description=description, unit="update", name="query")
    return learners, seeds


def scored_sets(tasks: HeldOutTasks, k: int, oracle: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The held-out tasks' points for K = k, as the learner takes them: "support" (x, y), and the two
    sets every learner is scored on: "query", k new points per task, and "grid", the 100-point grid."""
    grid_x, grid_y = tasks.grid()
    sets = {"support": tasks.support(k), "query": tasks.query(k), "grid": (grid_x.expand(len(tasks), -1, -1), grid_y)}
    if oracle:
        amplitudes, phases = (torch.from_numpy(values) for values in (tasks.amplitudes, tasks.phases))
        sets = {name: (with_amplitude_and_phase(x, amplitudes, phases), y) for name, (x, y) in sets.items()}
    return sets


def evaluate_paper(
    initializations: Sequence[Sequence[torch.Tensor]], tasks: HeldOutTasks, k: int, oracle: bool
) -> dict[str, dict[str, list]]:
    """Every seed's initialization fine-tuned on each held-out task's k support points for 0..MAX_STEPS SGD
    steps, scored on "query" and on "grid": for each, `summarize`'s statistics, one entry per step."""
    sets = scored_sets(tasks, k, oracle)
    errors: dict[str, list[np.ndarray]] = {"query": [], "grid": []}  # every seed's (steps + 1, tasks) MSEs
    for initialization in initializations:
        weights_each_step = list(sgd_steps(initialization, *sets["support"], MAX_STEPS, INNER_LR))
        for score, per_seed in errors.items():
            per_seed.append(torch.stack([mse_per_task(w, *sets[score]) for w in weights_each_step]).numpy())
    return {score: summarize(per_seed) for score, per_seed in errors.items()}


def predictions_on_one_task(
    initialization: Sequence[torch.Tensor], tasks: HeldOutTasks, task: int, k: int, oracle: bool
) -> np.ndarray:
    """The prediction on the grid for held-out `task` after 0..MAX_STEPS SGD steps on its k support points:
    (steps + 1, grid points); for the oracle, which is not fine-tuned, before adaptation only: (1, grid points)."""
    sets = scored_sets(tasks, k, oracle)
    support = tuple(tensor[task : task + 1] for tensor in sets["support"])
    grid_x = sets["grid"][0][task]  # (grid points, d)
    steps = 0 if oracle else MAX_STEPS
    return predictions_after_each_step(initialization, support, grid_x, steps, INNER_LR)[:, 0, :, 0].numpy()
