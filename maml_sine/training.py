"""Training learners in lockstep: the seeds of a run, the one training loop, and the checkpoint cache.

Every script that trains (many seeds of `python test.py`, the evaluation under either protocol, the
multi-task baselines, the graders' margin) builds its learners in a `LockstepRun` and trains them with
its one loop: one compile rule, one progress bar with its ETA, and a Ctrl-C that stops it between two
chunks of updates (CHUNK, one call of compiled code each). What is trained once and loaded after goes
through `cached`.

The evaluation's learners (`trained_or_loaded`) are long: 70,000 updates each under the paper's
protocol. They save their progress to their checkpoint every SAVE_EVERY seconds of training and
when Ctrl-C stops them, and a rerun resumes from the last save and ends bitwise equal to a run
that was never stopped. The multi-task baselines train groups of at most a few thousand updates
and are saved whole only.
"""

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from maml_sine.batched import CHUNK, BatchedMAML, BatchedTrainFromScratch, initializations_from_seeds
from maml_sine.checkpoints import Progress, load_progress, save
from maml_sine.core import Algorithm
from maml_sine.interrupts import checked_after_each_step, stop_requested
from maml_sine.learners import Learner, Protocol
from utils import FINAL_WINDOW, NUMPY_SEED, TORCH_SEED

PROGRESS_EVERY = 250  # updates between refreshes of the progress bar's MSE
COMPILE_FROM = 5_000  # updates: below this, compiling an update costs more than it saves
SAVE_EVERY = 120.0  # seconds of training between two saves of a long learner's progress (`meta_trained`)
SHOW_PROGRESS = True  # the loop's progress bar; off in worker processes, whose main process shows one for all
T = TypeVar("T")


def lane_seeds(count: int, first: int = 0) -> list[tuple[int, int]]:
    """The (numpy seed, torch seed) of seeds `first` .. `first + count - 1`: seed i has (1337 + i, 42 + i), so
    seed 0 is `python test.py`'s and the graders'. A sweep split over processes names its own `first`."""
    return [(NUMPY_SEED + seed, TORCH_SEED + seed) for seed in range(first, first + count)]


def final_mse_per_seed(histories: np.ndarray) -> np.ndarray:
    """The final MSE (the mean of the last FINAL_WINDOW query losses) of every row of (seeds, updates)."""
    return histories[:, -FINAL_WINDOW:].mean(axis=1)


def worth_compiling(updates: int) -> bool:
    """Whether a run of `updates` lockstep updates of one configuration pays for compiling them: the one rule."""
    return updates >= COMPILE_FROM


class LockstepRun:
    """Lockstep learners trained side by side on one task stream: each built here, on the stream's device,
    compiled or eager by one rule, and all trained by one loop (`train`).

        run = LockstepRun(protocol.streams(seeds), protocol.updates, "maml, K=10")
        maml = run.maml("maml", initializations, Algorithm(num_steps=1))
        run.train()

    `compile`: None decides by `worth_compiling(updates)`; True or False decides for the caller (`--fast`, or a
    configuration that runs many times in several runs). `chunk`: the updates drawn and taken between two looks
    at `done`, Ctrl-C and the progress bar (default CHUNK, the most a compiled learner takes in one call)."""

    def __init__(
        self, streams, updates: int, description: str, unit: str = "update", *, compile: bool | None = None,
        chunk: int | None = None,
    ) -> None:  # fmt: skip
        self.streams, self.updates, self.description, self.unit = streams, updates, description, unit
        self.compile = worth_compiling(updates) if compile is None else compile
        self.chunk = CHUNK if chunk is None else chunk
        self.learners: dict[str, BatchedMAML | BatchedTrainFromScratch] = {}

    def maml(self, name: str, initializations: Sequence[Sequence[torch.Tensor]], algorithm: Algorithm,
             **options) -> BatchedMAML:  # fmt: skip
        """A `BatchedMAML` of `algorithm` (with `options`: stop_diverged, anchors) trained in this run as `name`,
        annealing (where its algorithm anneals) over the run's `updates`."""
        self.learners[name] = BatchedMAML(initializations, algorithm, compile=self.compile, updates=self.updates,
                                          device=self.streams.device, **options)  # fmt: skip
        return self.learners[name]

    def from_scratch(
        self, name: str, initializations: Sequence[Sequence[torch.Tensor]], num_steps: int
    ) -> BatchedTrainFromScratch:
        """A `BatchedTrainFromScratch` of `num_steps` Adam steps per task, trained in this run as `name`."""
        self.learners[name] = BatchedTrainFromScratch(initializations, num_steps, compile=self.compile,
                                                      device=self.streams.device)  # fmt: skip
        return self.learners[name]

    @property
    def taken(self) -> int:
        """The updates every learner of the run has taken: 0, or more once the run `resume`s."""
        return min((len(learner.losses) for learner in self.learners.values()), default=0)

    def resume(self, saved: Mapping[str, BatchedMAML], streams: dict[str, Any]) -> None:
        """Go on from part of this run: each learner named in `saved` takes over the state and records of the
        learners saved (`BatchedMAML.go_on_from`), and the task streams go back to `streams`, their `state()`
        when those were saved, so `train` takes the remaining updates on the tasks they would have had."""
        for name, learners in saved.items():
            self.learners[name].go_on_from(learners)
        self.streams.restore(streams)

    def train(self, done: Callable[[], bool] = lambda: False, keep: Callable[[], None] | None = None) -> None:
        """Train every learner on the stream's next batches, `chunk` updates at a time (each learner's `train_many`:
        one call of compiled code, where compiled), until it has taken `updates` updates or `done()` (asked after
        each chunk), with a progress bar (the description, ETA, each learner's median final MSE over the seeds
        still training).

        Ctrl-C (with `interrupts.stop_on_ctrl_c` installed) stops it after the chunk it is in (well under a second
        of training): it raises KeyboardInterrupt there, every learner having taken the same updates, so the
        caller can save them. `keep`, if given, is where the caller saves them during training: it is called
        there, before the KeyboardInterrupt, and every SAVE_EVERY seconds of training, after a chunk short of the
        last update."""
        update, kept = self.taken, time.monotonic()
        bar = tqdm(total=self.updates, initial=update, unit=self.unit, desc=self.description, mininterval=0.5,
                   disable=not SHOW_PROGRESS)  # fmt: skip
        with checked_after_each_step(), bar as progress:
            while update < self.updates:
                batches = [self.streams.next_batch() for _ in range(min(self.chunk, self.updates - update))]
                for learner in self.learners.values():
                    learner.train_many(batches)
                progress.update(len(batches))
                if update // PROGRESS_EVERY < (update + len(batches)) // PROGRESS_EVERY:
                    recent = {f"{name}_median_mse": f"{_median_of_training(learner.histories):.3f}"
                              for name, learner in self.learners.items()}  # fmt: skip
                    progress.set_postfix(recent, refresh=False)
                update += len(batches)
                if stop_requested():
                    if keep is not None:
                        keep()
                    raise KeyboardInterrupt
                if done():
                    break
                if keep is not None and update < self.updates and time.monotonic() - kept >= SAVE_EVERY:
                    keep()
                    kept = time.monotonic()


def _median_of_training(histories: np.ndarray) -> float:
    """The median final MSE of the learners still training (a stopped one records NaN); NaN if none is."""
    final = final_mse_per_seed(histories)
    return float(np.median(final[np.isfinite(final)])) if np.isfinite(final).any() else float("nan")


def meta_trained(
    name: str, learner: Learner, protocol: Protocol, seeds: Sequence[tuple[int, int]], *,
    saved: Progress | None = None, keep: Callable[[BatchedMAML, dict[str, Any]], None] | None = None,
    device: torch.device | str = "cpu",
) -> BatchedMAML:  # fmt: skip
    """`learner` meta-trained under `protocol` on `device`, one lane per seed (its tasks from the numpy seed, its
    initialization from the torch seed): from the start, or from `saved`, part of this run saved earlier.
    `keep(learners, the streams' state)` saves progress where `LockstepRun.train` calls its `keep`. A lane whose
    loss or meta-gradient stops being finite stops there (`BatchedMAML.stop_diverged`), and the others go on."""
    description = f"{name}, K={protocol.support_points}, seeds {seeds[0][0] - NUMPY_SEED}-{seeds[-1][0] - NUMPY_SEED}"
    run = LockstepRun(protocol.streams(seeds, learner.inputs, device), protocol.updates, description)
    initializations = initializations_from_seeds(
        seeds, inputs=learner.network_inputs, initialization=learner.initialization
    )
    learners = run.maml("query", initializations, learner.algorithm, stop_diverged=True)
    if saved is not None:
        run.resume({"query": saved.learners}, saved.streams)
    run.train(keep=None if keep is None else lambda: keep(learners, run.streams.state()))
    return learners


def cached(
    path: str | os.PathLike, record: Mapping[str, Any], train: Callable[[], T], *,
    save: Callable[[T, Mapping, Path], None], load: Callable[[Path, Mapping], T | Progress], retrain: bool = False,
    resume: Callable[[Progress], T] | None = None,
) -> tuple[T, str]:  # fmt: skip
    """`load(path, record)` if a checkpoint is at `path` (and not `retrain`), else `train()`, saved there with
    `save(trained, record, path)`. Returns what was trained or loaded, and where from: "checkpoint", "trained"
    or "resumed". `load` refuses a checkpoint of another record with a `CheckpointError`.

    Learners that save their progress at `path` as they train go with a `load` that gives a `Progress` for a
    checkpoint of part of the run: `resume(progress)` then trains the rest, saved as `train()`'s would be."""
    path = Path(path)
    loaded = load(path, record) if path.exists() and not retrain else None
    if loaded is None:
        trained, source = train(), "trained"
    elif isinstance(loaded, Progress):
        trained, source = resume(loaded), "resumed"
    else:
        return loaded, "checkpoint"
    save(trained, record, path)
    return trained, source


def trained_or_loaded(
    name: str, learner: Learner, protocol: Protocol, seeds: Sequence[tuple[int, int]], path: str | os.PathLike,
    *, retrain: bool = False, device: torch.device | str = "cpu",
) -> tuple[BatchedMAML, str]:  # fmt: skip
    """`meta_trained` learners on `device`, `cached` at `path` under the record of the learner, protocol and seeds
    (loaded onto `device` from a checkpoint saved on any). They save their progress there as they train, and a
    checkpoint of part of their run is resumed from."""
    record = {"learner": learner.training(), "protocol": protocol.record(), "seeds": [list(seed) for seed in seeds]}

    def keep(learners: BatchedMAML, streams: dict[str, Any]) -> None:
        save(learners, record, path, streams)

    def train(saved: Progress | None = None) -> BatchedMAML:
        return meta_trained(name, learner, protocol, seeds, saved=saved, keep=keep, device=device)

    def load(path: Path, record: Mapping[str, Any]) -> BatchedMAML | Progress:
        return load_progress(path, record, device)

    return cached(path, record, train, save=save, load=load, retrain=retrain, resume=train)
