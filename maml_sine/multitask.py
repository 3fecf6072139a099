"""The paper's multi-task baselines (Finn et al. 2017, Appendix C.1, Table 2): the average of many regressors.

Each seed trains `regressors` separate networks, each on one sine task of its own with new
points at every update, until its MSE on its task is under `target_mse`; the seed's model is
the average of their parameters, fine-tuned at test time like any other initialization. The
paper trained them "one-by-one in sequence" with one of three regularizers:

    "none"           no regularization
    "l2"             weight decay: an L2 pull towards zero
    "running_mean"   an L2 pull towards the mean of the regressors trained so far

Here the regressors are lanes of the batched learner (`Algorithm(num_steps=0)`: Adam on the
MSE of each update's points), `at_once` of them per seed in lockstep, groups one after the
other; "the regressors trained so far" are those of the earlier groups (the first group has
none, so it trains unregularized). Every regressor of a seed starts from the seed's
initialization, the one MAML and the pretrained network start from: parameters averaged
over networks started from different random points would average unrelated hidden units.
"""

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.func import vmap

from maml_sine.batched import BatchedMAML, initializations_from_seeds
from maml_sine.checkpoints import load_networks, save_networks
from maml_sine.core import Algorithm, mse
from maml_sine.learners import MultiTask
from maml_sine.training import COMPILE_FROM, train_in_lockstep
from utils import X_RANGE

GRID_X = torch.linspace(*X_RANGE, 100).reshape(1, 100, 1)  # where each regressor's fit to its task is measured


def regressor_seeds(seeds: Sequence[tuple[int, int]], regressors: range) -> list[tuple[list[int], int]]:
    """The lanes of a group of regressors: regressor r of the seed (numpy seed n, torch seed t) draws its task and
    points from `default_rng([n, r])`; all of a seed's regressors share its torch seed (its initialization)."""
    return [([numpy_seed, r], torch_seed) for numpy_seed, torch_seed in seeds for r in regressors]


class _UntilFitted:
    """A group of regressors in lockstep that stops each one once its MSE on its task is under the target."""

    def __init__(self, learners: BatchedMAML, streams, spec: MultiTask) -> None:
        self.learners, self.spec = learners, spec
        x = GRID_X.expand(len(learners), -1, -1)
        amplitudes, phases = (torch.from_numpy(v).float()[:, None, None] for v in (streams.amplitudes, streams.phases))
        self.grid = (x, amplitudes * torch.sin(x + phases))

    @property
    def losses(self):
        return self.learners.losses

    @property
    def histories(self) -> np.ndarray:
        return self.learners.histories

    def fit(self) -> torch.Tensor:
        """Each regressor's MSE on its task, (N,)."""
        return vmap(mse)(self.learners.weights, *self.grid)

    def train(self, tasks) -> None:
        self.learners.train(tasks)
        if len(self.learners.losses) % self.spec.check_every == 0:
            self.learners.stop(self.fit() < self.spec.target_mse)

    def done(self) -> bool:
        return not self.learners.active.any()


def trained_or_loaded(
    name: str, spec: MultiTask, seeds: Sequence[tuple[int, int]], path: str | os.PathLike, *, retrain: bool = False
) -> tuple[list[list[torch.Tensor]], torch.Tensor, str]:  # fmt: skip
    """`averaged_regressors`, or its checkpoint at `path` if there is one (and not `retrain`); what is trained
    is saved there. Returns the averages, the regressors' final MSEs, and "checkpoint" or "trained"."""
    record = {"learner": {"algorithm": spec.record(), "inputs": 1}, "seeds": [list(seed) for seed in seeds]}
    if Path(path).exists() and not retrain:
        return *load_networks(path, record), "checkpoint"
    averages, errors = averaged_regressors(spec, seeds, name)
    save_networks(averages, errors, record, path)
    return averages, errors, "trained"


def averaged_regressors(
    spec: MultiTask, seeds: Sequence[tuple[int, int]], description: str
) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
    """Each seed's average of its `spec.regressors` regressors, and every regressor's final MSE on its task,
    (seeds, regressors). Progress bar and Ctrl-C as every training run (`train_in_lockstep`)."""
    initializations = initializations_from_seeds(seeds)
    count = len(seeds)
    sums = [torch.zeros(count, *w.shape) for w in initializations[0]]  # per seed, the sum of its trained regressors
    errors = []
    compile = spec.max_updates * math.ceil(spec.regressors / spec.at_once) >= COMPILE_FROM
    for first in range(0, spec.regressors, spec.at_once):
        group = range(first, min(first + spec.at_once, spec.regressors))
        starts = [initialization for initialization in initializations for _ in group]
        anchors = None
        if spec.regularizer == "running_mean" and first:
            means = [(total / first).repeat_interleave(len(group), dim=0) for total in sums]
            anchors = [list(lane) for lane in zip(*means)]
        pulled = spec.regularizer == "l2" or anchors is not None
        algorithm = Algorithm(num_steps=0, meta_lr=spec.adam_lr, weight_decay=spec.weight_decay if pulled else 0.0)
        lanes = regressor_seeds(seeds, group)
        streams = spec.protocol().streams(lanes)
        learners = BatchedMAML(starts, algorithm, anchors=anchors, compile=compile)
        regressors = _UntilFitted(learners, streams, spec)
        label = f"{description}, regressors {group.start}-{group.stop - 1} of {spec.regressors}"
        train_in_lockstep({"regressors": regressors}, streams, spec.max_updates, label, unit="update",
                          done=regressors.done)  # fmt: skip
        for total, weight in zip(sums, regressors.learners.weights):
            total += weight.reshape(count, len(group), *weight.shape[1:]).sum(dim=1)
        errors.append(regressors.fit().reshape(count, len(group)))
    averages = [total / spec.regressors for total in sums]
    return [list(seed_weights) for seed_weights in zip(*averages)], torch.cat(errors, dim=1)
