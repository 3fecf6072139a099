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
none, so it trains unregularized). With `start` "shared", every regressor of a seed starts from
the seed's initialization, the one MAML and the pretrained network start from (parameters
averaged over networks started from different random points average unrelated hidden units);
with "independent", each starts from a random initialization of its own, as Appendix C.1 says
("initialized randomly").
"""

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.func import vmap

from maml_sine.batched import BatchedMAML, initializations_from_seeds
from maml_sine.checkpoints import load_networks, save_networks
from maml_sine.core import Algorithm, mse, network_shapes
from maml_sine.learners import MultiTask
from maml_sine.training import LockstepRun, cached, worth_compiling
from utils import X_RANGE

GRID_X = torch.linspace(*X_RANGE, 100).reshape(1, 100, 1)  # where each regressor's fit to its task is measured


def regressor_seeds(seeds: Sequence[tuple[int, int]], regressors: range) -> list[tuple[list[int], int]]:
    """The lanes of a group of regressors: regressor r of the seed (numpy seed n, torch seed t) draws its task and
    points from `default_rng([n, r])`; all of a seed's regressors share its torch seed (its initialization)."""
    return [([numpy_seed, r], torch_seed) for numpy_seed, torch_seed in seeds for r in regressors]


def regressor_starts(spec: MultiTask, seeds: Sequence[tuple[int, int]], group: range) -> list[list[torch.Tensor]]:
    """Where each regressor of `group` starts, seed by seed: its seed's initialization ("shared"), or one drawn from
    a torch seed of its own ("independent"), mixed from the seed's torch seed and the regressor's number."""
    if spec.start == "shared":
        return [initialization for initialization in initializations_from_seeds(seeds) for _ in group]
    own = [(numpy_seed, int(np.random.SeedSequence([torch_seed, r]).generate_state(1)[0]))
           for numpy_seed, torch_seed in seeds for r in group]  # fmt: skip
    return initializations_from_seeds(own)


def fit(learners: BatchedMAML, grid: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Each regressor's MSE on its task's `grid` (x, y), (N,)."""
    return vmap(mse)(learners.weights, *grid)


def task_grid(streams) -> tuple[torch.Tensor, torch.Tensor]:
    """GRID_X and each regressor's task's values there: (N, 100, 1) each, on the streams' device."""
    x = GRID_X.to(streams.device).expand(len(streams.amplitudes), -1, -1)
    amplitudes, phases = (torch.from_numpy(v).float()[:, None, None].to(streams.device)
                          for v in (streams.amplitudes, streams.phases))  # fmt: skip
    return x, amplitudes * torch.sin(x + phases)


def _fitted(
    run: LockstepRun, spec: MultiTask, starts: list, algorithm: Algorithm, anchors: list | None
) -> tuple[BatchedMAML, torch.Tensor]:
    """A group of regressors (one lane per start) trained in `run` until each fits its task, measured every
    `spec.check_every` updates, or for `spec.max_updates`: the regressors and their final MSEs, (N,)."""
    regressors, grid = run.maml("regressors", starts, algorithm, anchors=anchors), task_grid(run.streams)

    def fitted_all() -> bool:
        if len(regressors.losses) % spec.check_every == 0:
            regressors.stop(fit(regressors, grid) < spec.target_mse)
        return not regressors.active.any()

    run.train(done=fitted_all)
    return regressors, fit(regressors, grid)


def trained_or_loaded(
    name: str, spec: MultiTask, seeds: Sequence[tuple[int, int]], path: str | os.PathLike, *, retrain: bool = False,
    device: torch.device | str = "cpu",
) -> tuple[list[list[torch.Tensor]], torch.Tensor, str]:  # fmt: skip
    """`averaged_regressors` on `device`, `cached` at `path` under the record of the spec and seeds. Returns the
    averages, the regressors' final MSEs, and "checkpoint" or "trained"."""
    record = {"learner": {"algorithm": spec.record(), "inputs": 1}, "seeds": [list(seed) for seed in seeds]}
    (averages, errors), source = cached(
        path, record, lambda: averaged_regressors(spec, seeds, name, device), retrain=retrain,
        load=lambda path, record: load_networks(path, record, device),
        save=lambda trained, record, path: save_networks(*trained, record, path),
    )  # fmt: skip
    return averages, errors, source


def averaged_regressors(
    spec: MultiTask, seeds: Sequence[tuple[int, int]], description: str, device: torch.device | str = "cpu"
) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
    """Each seed's average of its `spec.regressors` regressors, and every regressor's final MSE on its task,
    (seeds, regressors), trained and kept on `device`. Progress bar and Ctrl-C as every training run
    (`LockstepRun`)."""
    count = len(seeds)
    shapes = network_shapes().values()
    sums = [torch.zeros(count, *shape, device=device) for shape in shapes]  # per seed, its regressors' sum
    errors = []
    compile = worth_compiling(spec.max_updates * math.ceil(spec.regressors / spec.at_once))  # one configuration
    for first in range(0, spec.regressors, spec.at_once):
        group = range(first, min(first + spec.at_once, spec.regressors))
        starts = regressor_starts(spec, seeds, group)
        anchors = None
        if spec.regularizer == "running_mean" and first:
            means = [(total / first).repeat_interleave(len(group), dim=0) for total in sums]
            anchors = [list(lane) for lane in zip(*means)]
        pulled = spec.regularizer == "l2" or anchors is not None
        algorithm = Algorithm(num_steps=0, meta_lr=spec.adam_lr, weight_decay=spec.weight_decay if pulled else 0.0)
        streams = spec.protocol().streams(regressor_seeds(seeds, group), device=device)
        run = LockstepRun(streams, spec.max_updates, f"{description}, regressors {group.start}-{group.stop - 1} "
                          f"of {spec.regressors}", compile=compile, chunk=spec.check_every)  # fmt: skip
        regressors, final_errors = _fitted(run, spec, starts, algorithm, anchors)
        for total, weight in zip(sums, regressors.weights):
            total += weight.reshape(count, len(group), *weight.shape[1:]).sum(dim=1)
        errors.append(final_errors.reshape(count, len(group)))
    averages = [total / spec.regressors for total in sums]
    return [list(seed_weights) for seed_weights in zip(*averages)], torch.cat(errors, dim=1)
