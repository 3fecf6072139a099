"""Meta-training on the assignment's seeded task stream, with a progress bar, and the one "final MSE".

The stream is the one `python test.py` and the graders' runs use: numpy seeded with 1337
and torch with 42 before anything else draws, `SineGenerator(k=10, k_test=40)`, 40,000
tasks, one meta-update each. A learner's **final MSE** is the mean of its last 500
query losses, the figure the graders check; every script reports that one.
"""

import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from assignment import MAML
from maml_sine.checkpoints import CheckpointError, load_batched, load_maml, save_batched, save_maml
from utils import SineGenerator, TrainFromScratch

NUMPY_SEED = 1337
TORCH_SEED = 42
EPISODES = 40_000
SUPPORT_POINTS = 10
QUERY_POINTS = 40
FINAL_WINDOW = 500
TFS_STEPS = 10  # the from-scratch learner's Adam steps per task in `python test.py --plot-tfs`
PROGRESS_EVERY = 250  # episodes between updates of the progress bar's MSE
ORACLE_INPUTS = 3  # x, the task's amplitude and its phase
COMPILE_FROM = 5_000  # episodes: below this, compiling a batched update costs more than it saves


def seed_the_stream() -> None:
    """Seed numpy and torch as `python test.py` and the graders do: the seeded figures depend on it."""
    np.random.seed(NUMPY_SEED)
    torch.manual_seed(TORCH_SEED)


def lane_seeds(num_learners: int) -> list[tuple[int, int]]:
    """(numpy seed, torch seed) of each of many learners: learner 0 has the stream's own (1337, 42),
    learner i has (1337 + i, 42 + i)."""
    return [(NUMPY_SEED + lane, TORCH_SEED + lane) for lane in range(num_learners)]


def final_mse(history: Sequence[float]) -> float:
    """The mean of the last FINAL_WINDOW query losses (of all of them, if there are fewer)."""
    return float(np.mean(history[-FINAL_WINDOW:]))


@dataclass(frozen=True)
class LearnerSpec:
    """A learner of an experiment: how it is meta-trained (`num_steps` None: not at all) and how it is drawn."""

    label: str
    color: str
    num_steps: int | None = None
    first_order: bool = False
    oracle: bool = False  # given each task's amplitude and phase as two more inputs

    @property
    def inputs(self) -> int:
        """The number of inputs of the learner's network."""
        return ORACLE_INPUTS if self.oracle else 1


def train_on_tasks(
    learners: Mapping[str, MAML | TrainFromScratch],
    tasks: Iterable,
    episodes: int,
    *,
    fast: bool = False,
    description: str | None = None,
) -> None:
    """Train every learner on every `(fn, task)` of `tasks`, with a progress bar showing each one's final MSE.

    `fast` trains through the compiled path of `maml_sine.compiled` (the same updates up to rounding).
    """
    if fast:
        from maml_sine.compiled import compiled_trainer  # torch.compile is loaded only when asked for

        print("compiling the meta-update on the first episode (about 10-20 s, once)", file=sys.stderr)
        trainers = [compiled_trainer(learner) for learner in learners.values()]
    else:
        trainers = [learner.train for learner in learners.values()]
    with tqdm(tasks, total=episodes, desc=description, unit="episode", mininterval=0.5) as progress:
        for episode, (_, task) in enumerate(progress, start=1):
            for train in trainers:
                train(task)
            if episode % PROGRESS_EVERY == 0:
                recent = {f"{name}_mse": f"{final_mse(learner.history):.3f}" for name, learner in learners.items()}
                progress.set_postfix(recent, refresh=False)


def meta_train(learner: LearnerSpec, episodes: int = EPISODES, fast: bool = False) -> MAML:
    """A fresh MAML meta-trained on the seeded stream, seeded anew here: with S=1 it is `python test.py`'s learner.

    Ctrl-C raises KeyboardInterrupt with a message that says how far it got.
    """
    seed_the_stream()
    tasks = SineGenerator(k=SUPPORT_POINTS, k_test=QUERY_POINTS)
    maml = MAML(learner.num_steps, first_order=learner.first_order)
    try:
        train_on_tasks({"maml": maml}, tasks.generator(episodes), episodes, fast=fast, description=learner.label)
    except KeyboardInterrupt:
        done = f"meta-training {learner.label}, after {len(maml.history):,} of {episodes:,} episodes"
        raise KeyboardInterrupt(done) from None
    return maml


def trained_or_loaded(
    learner: LearnerSpec, path: str | os.PathLike, episodes: int, *, retrain: bool = False, fast: bool = False
) -> tuple[MAML, str]:
    """The learner from its checkpoint at `path` if there is one (and not `retrain`), else meta-trained and saved there.

    Returns the learner and where it came from, "checkpoint" or "trained". A checkpoint of
    another learner or length is refused with a `CheckpointError`.
    """
    path = Path(path)
    if path.exists() and not retrain:
        maml = load_maml(path)
        found = (maml.num_steps, maml.first_order, len(maml.history))
        expected = (learner.num_steps, learner.first_order, episodes)
        _refuse_if_other(path, "S, first_order, episodes", found, expected)
        return maml, "checkpoint"
    maml = meta_train(learner, episodes, fast)
    save_maml(maml, path)
    return maml, "trained"


def _refuse_if_other(path: Path, what: str, found: tuple, expected: tuple) -> None:
    """Raise CheckpointError if a checkpoint holds another learner (or run) than the one asked for."""
    if found != expected:
        raise CheckpointError(path, f"holds ({what}) = {found}, expected {expected}; delete it or use --retrain")


def train_in_lockstep(learners: Mapping, streams, episodes: int, description: str, unit: str = "episode") -> None:
    """Train batched learners together on the next batch of every stream (`streams.next_batch()`), with a
    progress bar (`description`, ETA) showing each one's median final MSE over seeds. Ctrl-C propagates;
    the callers say how far it got."""
    with tqdm(range(episodes), unit=unit, desc=description, mininterval=0.5) as progress:
        for episode in progress:
            tasks = streams.next_batch()
            for learner in learners.values():
                learner.train(tasks)
            if (episode + 1) % PROGRESS_EVERY == 0:
                recent = {f"{name}_median_mse": f"{np.median(final_mse_per_seed(learner.histories)):.3f}"
                          for name, learner in learners.items()}  # fmt: skip
                progress.set_postfix(recent, refresh=False)


def train_seeds(
    num_seeds: int, maml_steps: int, with_scratch: bool, episodes: int = EPISODES, *, compile: bool = True
) -> dict[str, np.ndarray]:
    """`python test.py`'s run with `num_seeds` seeds at once: seed i draws its tasks from numpy seed
    1337 + i and its initializations from torch seed 42 + i, so seed 0 is `python test.py`'s own.

    Returns each learner's query losses, "maml" and (if `with_scratch`) "scratch", as
    (num_seeds, episodes) arrays. Ctrl-C raises KeyboardInterrupt with the losses so far as its
    second argument. `compile` runs each update as one compiled function (with an eager fallback).
    """
    from maml_sine.batched import (  # the compiled path is imported only for many seeds
        BatchedMAML,
        BatchedTrainFromScratch,
        TaskStreams,
        initializations_from_seeds,
    )

    seeds = lane_seeds(num_seeds)
    learners = {"maml": BatchedMAML(initializations_from_seeds(seeds), maml_steps, compile=compile)}
    if with_scratch:
        scratch_initializations = initializations_from_seeds(seeds, skip=1)  # built after MAML, as in test.py
        learners["scratch"] = BatchedTrainFromScratch(scratch_initializations, TFS_STEPS, compile=compile)
    streams = TaskStreams(seeds, SUPPORT_POINTS, QUERY_POINTS)
    try:
        train_in_lockstep(learners, streams, episodes, f"{num_seeds} seeds")
    except KeyboardInterrupt:
        done = f"interrupted after {len(learners['maml'].losses):,} of {episodes:,} episodes"
        raise KeyboardInterrupt(done, {name: learner.histories for name, learner in learners.items()}) from None
    return {name: learner.histories for name, learner in learners.items()}


def final_mse_per_seed(histories: np.ndarray) -> np.ndarray:
    """The final MSE of every row of a (seeds, episodes) array of query losses."""
    return histories[:, -FINAL_WINDOW:].mean(axis=1)


def meta_train_seeds(learner: LearnerSpec, num_seeds: int, episodes: int = EPISODES):
    """`meta_train` for `num_seeds` seeds at once (seed i: numpy 1337 + i, torch 42 + i), as a `BatchedMAML`,
    compiled from COMPILE_FROM episodes on.

    Ctrl-C raises KeyboardInterrupt with a message that says how far it got.
    """
    from maml_sine.batched import BatchedMAML, TaskStreams, initializations_from_seeds

    seeds = lane_seeds(num_seeds)
    learners = BatchedMAML(
        initializations_from_seeds(seeds),
        learner.num_steps,
        first_order=learner.first_order,
        compile=episodes >= COMPILE_FROM,
    )
    streams = TaskStreams(seeds, SUPPORT_POINTS, QUERY_POINTS)
    description = f"{learner.label}, {num_seeds} seeds"
    meta_train_in_lockstep(learners, streams, episodes, what=learner.label, description=description)
    return learners, seeds


def meta_train_in_lockstep(
    learners, streams, count: int, *, what: str, description: str, unit: str = "episode", name: str = "maml"
) -> None:
    """`train_in_lockstep` for one `BatchedMAML` (`name` in the progress bar); Ctrl-C raises KeyboardInterrupt
    saying how far `what` got."""
    try:
        train_in_lockstep({name: learners}, streams, count, description, unit)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"meta-training {what}, after {len(learners.losses):,} of {count:,} {unit}s") from None


def trained_or_loaded_seeds(
    learner: LearnerSpec,
    path: str | os.PathLike,
    episodes: int,
    num_seeds: int,
    *,
    retrain: bool = False,
    train: Callable = meta_train_seeds,
):
    """`trained_or_loaded` for `num_seeds` seeds: a `BatchedMAML` and its seeds, from the checkpoint at `path`
    or meta-trained by `train(learner, num_seeds, episodes)` and saved there; and where they came from,
    "checkpoint" or "trained". A checkpoint of another learner, length, seeds or network is refused."""
    path = Path(path)
    if path.exists() and not retrain:
        learners, seeds = load_batched(path)
        found = (learners.num_steps, learners.first_order, len(learners.losses), seeds, learners.weights[0].shape[-1])
        expected = (learner.num_steps, learner.first_order, episodes, lane_seeds(num_seeds), learner.inputs)
        _refuse_if_other(path, "S, first_order, episodes, seeds, inputs", found, expected)
        return learners, seeds, "checkpoint"
    learners, seeds = train(learner, num_seeds, episodes)
    save_batched(learners, seeds, path)
    return learners, seeds, "trained"
