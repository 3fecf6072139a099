"""Task streams: one stream of sine tasks per seed, drawn as a protocol says, batched for lockstep learners.

Every stream is built as `Stream(seeds, protocol, inputs)` and gives, at each `next_batch()`, the
next update's tasks of every seed: (train_x, train_y, test_x, test_y), each (N seeds, B tasks,
n points, d) with d = 1, or 3 for the oracle (x, amplitude, phase). `np.random` is never touched.
"""

from collections.abc import Sequence

import numpy as np
import torch

from utils import AMPLITUDE_RANGE, PHASE_RANGE, X_RANGE, SineGenerator

DRAWN_AT_ONCE = 500  # updates' worth of tasks drawn per call into numpy by PaperTaskStreams; the tasks depend on it


class TaskStreams:
    """The assignment's stream: each seed's tasks from its own `numpy.random.RandomState(numpy seed)`, drawn
    one by one in `SineGenerator`'s order, so numpy seed 1337 gives the tasks of `python test.py` and
    of the graders' runs."""

    def __init__(self, seeds: Sequence[tuple[int, int]], protocol, inputs: int = 1) -> None:
        if inputs != 1:
            raise ValueError("the assignment's stream gives x alone; a network of more inputs needs another stream")
        self.tasks_per_update = protocol.tasks_per_update
        self.generators = [
            SineGenerator(protocol.support_points, protocol.query_points, rng=np.random.RandomState(seed))
            for seed, _ in seeds
        ]

    def next_batch(self) -> list[torch.Tensor]:
        tasks = [[generator.generate_task()[1] for _ in range(self.tasks_per_update)] for generator in self.generators]
        return [torch.stack([torch.stack([task[part] for task in lane]) for lane in tasks]) for part in range(4)]


def with_amplitude_and_phase(x: torch.Tensor, amplitudes: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
    """The oracle's inputs: each point's x beside its task's amplitude and phase. x (..., m, 1) and
    amplitudes, phases (...) give (..., m, 3)."""
    per_point = [values[..., None, None].expand_as(x).to(x.dtype) for values in (amplitudes, phases)]
    return torch.cat([x, *per_point], dim=-1)


class PaperTaskStreams:
    """Finn et al.'s stream: each seed's tasks from `numpy.random.default_rng(numpy seed)`, each task with
    2K points split into K support and K query points (as the authors' code splits them).

    Tasks are drawn DRAWN_AT_ONCE updates at a time, in whole arrays: 70,000 updates of 25
    tasks are 1.75 million tasks per seed, too many to draw one by one. With 3 `inputs`, the
    x parts carry each task's amplitude and phase as two more inputs (the oracle's).
    """

    def __init__(self, seeds: Sequence[tuple[int, int]], protocol, inputs: int = 1) -> None:
        if protocol.support_points != protocol.query_points or inputs not in (1, 3):
            raise ValueError("the paper's stream has as many query as support points, and 1 or 3 inputs")
        self.generators = [np.random.default_rng(seed) for seed, _ in seeds]
        self.k, self.tasks_per_update, self.oracle = protocol.support_points, protocol.tasks_per_update, inputs == 3
        self.drawn: list[torch.Tensor] = []  # x, y, amplitudes, phases of the next updates, update first
        self.next_update = 0

    def next_batch(self) -> list[torch.Tensor]:
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


class OneTaskStreams:
    """One fixed task per seed, with new points at every update: the stream of a regressor trained on a single
    task with as much of its data as it needs (the paper's multi-task baselines, `maml_sine.multitask`).

    Seed (entropy, _) draws its task's amplitude and phase from `numpy.random.default_rng(entropy)`, then
    `support_points` + `query_points` new x per update; `amplitudes` and `phases` (N,) say which task each is.
    """

    def __init__(self, seeds: Sequence[tuple[object, int]], protocol, inputs: int = 1) -> None:
        if protocol.tasks_per_update != 1 or inputs != 1:
            raise ValueError("a one-task stream has one task per update and gives x alone")
        self.generators = [np.random.default_rng(entropy) for entropy, _ in seeds]
        tasks = np.array([(rng.uniform(*AMPLITUDE_RANGE), rng.uniform(*PHASE_RANGE)) for rng in self.generators])
        self.amplitudes, self.phases = tasks[:, 0], tasks[:, 1]
        self.support_points = protocol.support_points
        self.points = protocol.support_points + protocol.query_points

    def next_batch(self) -> list[torch.Tensor]:
        x = np.stack([rng.uniform(*X_RANGE, (1, self.points, 1)) for rng in self.generators])  # (N, 1, n, 1)
        y = self.amplitudes[:, None, None, None] * np.sin(x + self.phases[:, None, None, None])
        x, y = (torch.from_numpy(part.astype(np.float32)) for part in (x, y))
        k = self.support_points
        return [x[:, :, :k], y[:, :, :k], x[:, :, k:], y[:, :, k:]]


STREAMS = {"assignment": TaskStreams, "paper": PaperTaskStreams, "one_task": OneTaskStreams}
