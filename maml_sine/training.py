"""Training learners in lockstep: the seeds of a run, the one training loop, and the checkpoint cache.

Every script that trains (many seeds of `python test.py`, the evaluation under either protocol,
the graders' margin) goes through `train_in_lockstep`: one progress bar with its ETA, and a Ctrl-C
that stops it between two updates.
"""

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from maml_sine.batched import BatchedMAML, initializations_from_seeds
from maml_sine.checkpoints import load, save
from maml_sine.interrupts import checked_after_each_step, stop_requested
from maml_sine.learners import Learner, Protocol
from utils import FINAL_WINDOW, NUMPY_SEED, TORCH_SEED

PROGRESS_EVERY = 250  # updates between refreshes of the progress bar's MSE
COMPILE_FROM = 5_000  # updates: below this, compiling an update costs more than it saves


def lane_seeds(count: int, first: int = 0) -> list[tuple[int, int]]:
    """The (numpy seed, torch seed) of seeds `first` .. `first + count - 1`: seed i has (1337 + i, 42 + i), so
    seed 0 is `python test.py`'s and the graders'. A sweep split over processes names its own `first`."""
    return [(NUMPY_SEED + seed, TORCH_SEED + seed) for seed in range(first, first + count)]


def final_mse_per_seed(histories: np.ndarray) -> np.ndarray:
    """The final MSE (the mean of the last FINAL_WINDOW query losses) of every row of (seeds, updates)."""
    return histories[:, -FINAL_WINDOW:].mean(axis=1)


def train_in_lockstep(
    learners: Mapping[str, object], streams, updates: int, description: str, unit: str,
    done: Callable[[], bool] = lambda: False,
) -> None:  # fmt: skip
    """Train every learner of `learners` (lockstep learners, by name) on the next batch of `streams`,
    `updates` times or until `done()`, with a progress bar (`description`, ETA, each learner's median
    final MSE over the seeds still training).

    Ctrl-C (with `interrupts.stop_on_ctrl_c` installed) stops it after the update it is in: it raises
    KeyboardInterrupt there, every learner having taken the same updates, so the caller can save them."""
    with checked_after_each_step(), tqdm(range(updates), unit=unit, desc=description, mininterval=0.5) as progress:
        for update in progress:
            tasks = streams.next_batch()
            for learner in learners.values():
                learner.train(tasks)
            if (update + 1) % PROGRESS_EVERY == 0:
                recent = {f"{name}_median_mse": f"{_median_of_training(learner.histories):.3f}"
                          for name, learner in learners.items()}  # fmt: skip
                progress.set_postfix(recent, refresh=False)
            if stop_requested():
                raise KeyboardInterrupt
            if done():
                break


def _median_of_training(histories: np.ndarray) -> float:
    """The median final MSE of the learners still training (a stopped one records NaN); NaN if none is."""
    final = final_mse_per_seed(histories)
    return float(np.median(final[np.isfinite(final)])) if np.isfinite(final).any() else float("nan")


def meta_trained(name: str, learner: Learner, protocol: Protocol, seeds: Sequence[tuple[int, int]]) -> BatchedMAML:
    """`learner` meta-trained under `protocol`, one lane per seed (its tasks from the numpy seed, its
    initialization from the torch seed), compiled from COMPILE_FROM updates on."""
    initializations = initializations_from_seeds(seeds, inputs=learner.inputs)
    learners = BatchedMAML(initializations, learner.algorithm, compile=protocol.updates >= COMPILE_FROM)
    description = f"{name}, K={protocol.support_points}, seeds {seeds[0][0] - NUMPY_SEED}-{seeds[-1][0] - NUMPY_SEED}"
    train_in_lockstep({"query": learners}, protocol.streams(seeds, learner.inputs), protocol.updates, description,
                      unit="update")  # fmt: skip
    return learners


def trained_or_loaded(
    name: str, learner: Learner, protocol: Protocol, seeds: Sequence[tuple[int, int]], path: str | os.PathLike,
    *, retrain: bool = False,
) -> tuple[BatchedMAML, str]:  # fmt: skip
    """`meta_trained`, or its checkpoint at `path` if there is one (and not `retrain`); a trained learner is
    saved there. Returns the learners and where they came from, "checkpoint" or "trained". A checkpoint
    of another learner, protocol or seeds is refused with a `CheckpointError`."""
    record = {"learner": learner.training(), "protocol": protocol.record(), "seeds": [list(seed) for seed in seeds]}
    if Path(path).exists() and not retrain:
        return load(path, record), "checkpoint"
    learners = meta_trained(name, learner, protocol, seeds)
    save(learners, record, path)
    return learners, "trained"
