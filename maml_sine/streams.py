"""Task streams: one stream of sine tasks per seed, drawn as a protocol says, batched for lockstep learners.

Every stream is built as `Stream(seeds, protocol, inputs)` and gives, at each `next_batch()`, the
next update's tasks of every seed: (train_x, train_y, test_x, test_y), each (N seeds, B tasks,
n points, d) with d = 1, or 3 for the oracle (x, amplitude, phase). `np.random` is never touched.

Every stream draws its tasks with numpy on the host, as it always has, and gives them on its `device`
(`Stream(seeds, protocol, inputs, device)`, default the CPU): each chunk of draws is copied there at once
(`on_device`: one update's tasks for the assignment's stream, DRAWN_AT_ONCE updates' for the paper's). The
numpy draws define every seeded result, so a seed's tasks are bitwise the same on every device, and so is
a seeded run up to the device's rounding; a generator on the device would draw other tasks.

The streams a long learner resumes on (the assignment's and the paper's) give their position as
`state()`, plain data (lists, dicts, numbers) that a checkpoint stores and digests, and take it
back with `restore(state)`: a stream restored to a state gives the batches it gave after it. The
generators' states are kept rather than a count of batches to draw again on resume: drawing
70,000 updates' batches again takes about 10 s for 10 seeds, a state a few kilobytes and no time.
"""

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from utils import AMPLITUDE_RANGE, PHASE_RANGE, X_RANGE, SineGenerator

FREQUENCY_RANGE = (0.8, 1.2)  # Meta-SGD's sines: y = a sin(w x + b), w ~ U[0.8, 1.2)
DRAWN_AT_ONCE = 500  # updates' worth of tasks drawn per call into numpy by PaperTaskStreams; the tasks depend on it


def on_device(parts: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """`parts` (host tensors of one dtype) on `device`, in one copy: packed into one buffer, copied there, and viewed
    back in their shapes. The same on every device (the CPU's packing costs little), so the CPU runs what a GPU
    runs."""
    copied = torch.cat([part.reshape(-1) for part in parts]).to(device)
    return [chunk.view(part.shape) for chunk, part in zip(copied.split([part.numel() for part in parts]), parts)]


class TaskStreams:
    """The assignment's stream: each seed's tasks from its own `numpy.random.RandomState(numpy seed)`, drawn
    one by one in `SineGenerator`'s order, so numpy seed 1337 gives the tasks of `python test.py` and
    of the graders' runs."""

    def __init__(
        self, seeds: Sequence[tuple[int, int]], protocol, inputs: int = 1, device: torch.device | str = "cpu"
    ) -> None:  # fmt: skip
        if inputs != 1:
            raise ValueError("the assignment's stream gives x alone; a network of more inputs needs another stream")
        self.device = torch.device(device)
        self.tasks_per_update = protocol.tasks_per_update
        self.rngs = [np.random.RandomState(seed) for seed, _ in seeds]
        self.generators = [SineGenerator(protocol.support_points, protocol.query_points, rng=rng) for rng in self.rngs]

    def next_batch(self) -> list[torch.Tensor]:
        tasks = [[generator.generate_task()[1] for _ in range(self.tasks_per_update)] for generator in self.generators]
        parts = [torch.stack([torch.stack([task[part] for task in lane]) for lane in tasks]) for part in range(4)]
        return on_device(parts, self.device)

    def state(self) -> dict[str, Any]:
        """Where the stream is, as plain data: each seed's Mersenne Twister state, its key as a list of ints."""
        return {"generators": [_with_key(rng.get_state(legacy=False), np.ndarray.tolist) for rng in self.rngs]}

    def restore(self, state: dict[str, Any]) -> None:
        """Put the stream back where `state()` said it was; a ValueError if it is not a state of as many seeds."""
        for rng, generator in zip(self.rngs, _states_of(state, len(self.rngs))):
            rng.set_state(_with_key(generator, lambda key: np.array(key, dtype=np.uint32)))


def _with_key(state: dict[str, Any], convert: Callable[[Any], Any]) -> dict[str, Any]:
    """A `RandomState` state (as `get_state(legacy=False)` gives it) with its key converted by `convert`."""
    return {**state, "state": {**state["state"], "key": convert(state["state"]["key"])}}


def with_amplitude_and_phase(x: torch.Tensor, amplitudes: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
    """The oracle's inputs: each point's x beside its task's amplitude and phase. x (..., m, 1) and
    amplitudes, phases (...) give (..., m, 3)."""
    per_point = [values[..., None, None].expand_as(x).to(x.dtype) for values in (amplitudes, phases)]
    return torch.cat([x, *per_point], dim=-1)


class PaperTaskStreams:
    """Finn et al.'s stream: each seed's tasks from `numpy.random.default_rng(numpy seed)`, each task with
    2K points split into K support and K query points (as the authors' code splits them).

    Tasks are drawn DRAWN_AT_ONCE updates at a time, in whole arrays: 70,000 updates of 25
    tasks are 1.75 million tasks per seed, too many to draw one by one; each block goes to the device in one
    copy. With 3 `inputs`, the x parts carry each task's amplitude and phase as two more inputs (the oracle's).
    """

    def __init__(
        self, seeds: Sequence[tuple[int, int]], protocol, inputs: int = 1, device: torch.device | str = "cpu"
    ) -> None:  # fmt: skip
        if protocol.support_points != protocol.query_points or inputs not in (1, 3):
            raise ValueError("the paper's stream has as many query as support points, and 1 or 3 inputs")
        self.device = torch.device(device)
        self.generators = [np.random.default_rng(seed) for seed, _ in seeds]
        self.k, self.tasks_per_update, self.oracle = protocol.support_points, protocol.tasks_per_update, inputs == 3
        self.drawn: list[torch.Tensor] = []  # x, y, amplitudes, phases of the next updates, update first
        self.next_update = 0
        self.drawn_from = self._generator_states()  # the generators' states before `drawn` was drawn

    def next_batch(self) -> list[torch.Tensor]:
        if not self.drawn or self.next_update == DRAWN_AT_ONCE:
            self.drawn_from = self._generator_states()
            self.drawn, self.next_update = self._draw(), 0
        x, y, amplitudes, phases = (part[self.next_update] for part in self.drawn)
        self.next_update += 1
        if self.oracle:
            x = with_amplitude_and_phase(x, amplitudes, phases)
        return [x[:, :, : self.k], y[:, :, : self.k], x[:, :, self.k :], y[:, :, self.k :]]

    def state(self) -> dict[str, Any]:
        """Where the stream is, as plain data: each seed's generator state before the block of updates in use was
        drawn, and how many of the block's updates were given (the block itself is drawn again on `restore`)."""
        return {"generators": self.drawn_from, "next_update": self.next_update if self.drawn else None}

    def restore(self, state: dict[str, Any]) -> None:
        """Put the stream back where `state()` said it was; a ValueError if it is not a state of as many seeds."""
        generators, next_update = _states_of(state, len(self.generators)), state.get("next_update")
        if next_update is not None and not (isinstance(next_update, int) and 0 <= next_update <= DRAWN_AT_ONCE):
            raise ValueError(f"a stream's next_update must be None or 0 to {DRAWN_AT_ONCE}, got {next_update!r}")
        for rng, generator in zip(self.generators, generators):
            rng.bit_generator.state = generator
        self.drawn_from = self._generator_states()
        self.drawn, self.next_update = ([], 0) if next_update is None else (self._draw(), next_update)

    def _generator_states(self) -> list[dict[str, Any]]:
        return [rng.bit_generator.state for rng in self.generators]

    def _draw(self) -> list[torch.Tensor]:
        """x, y (DRAWN_AT_ONCE, N, B, 2k, 1) and amplitudes, phases (DRAWN_AT_ONCE, N, B), float32, on the device."""
        shape = (DRAWN_AT_ONCE, self.tasks_per_update)
        per_learner = [
            (rng.uniform(*AMPLITUDE_RANGE, shape), rng.uniform(*PHASE_RANGE, shape),
             rng.uniform(*X_RANGE, (*shape, 2 * self.k, 1)), self._frequencies(rng, shape))
            for rng in self.generators
        ]  # fmt: skip
        amplitudes, phases, x, frequencies = (np.stack(part, axis=1) for part in zip(*per_learner))
        y = amplitudes[..., None, None] * np.sin(frequencies[..., None, None] * x + phases[..., None, None])
        return on_device(
            [torch.from_numpy(part.astype(np.float32)) for part in (x, y, amplitudes, phases)], self.device
        )

    def _frequencies(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Finn et al.'s sines all have frequency 1 (and draw nothing for it)."""
        return np.ones(shape)


class FrequencyTaskStreams(PaperTaskStreams):
    """Li et al.'s (Meta-SGD's) stream: y = a sin(w x + b), as Finn et al.'s, with a frequency w ~ U[0.8, 1.2) per task
    too, drawn after each block's x (so a block's amplitudes, phases and x are drawn as the paper's stream draws
    them, the first block's equal to its)."""

    def __init__(
        self, seeds: Sequence[tuple[int, int]], protocol, inputs: int = 1, device: torch.device | str = "cpu"
    ) -> None:  # fmt: skip
        if inputs != 1:
            raise ValueError("Meta-SGD's stream gives x alone")
        super().__init__(seeds, protocol, inputs, device)

    def _frequencies(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return rng.uniform(*FREQUENCY_RANGE, shape)


class OneTaskStreams:
    """One fixed task per seed, with new points at every update: the stream of a regressor trained on a single
    task with as much of its data as it needs (the paper's multi-task baselines, `maml_sine.multitask`).

    Seed (entropy, _) draws its task's amplitude and phase from `numpy.random.default_rng(entropy)`, then
    `support_points` + `query_points` new x per update; `amplitudes` and `phases` (N,) say which task each is.
    The x of DRAWN_AT_ONCE updates are drawn in one call per seed, the numbers one call per update would draw.
    """

    def __init__(
        self, seeds: Sequence[tuple[object, int]], protocol, inputs: int = 1, device: torch.device | str = "cpu"
    ) -> None:  # fmt: skip
        if protocol.tasks_per_update != 1 or inputs != 1:
            raise ValueError("a one-task stream has one task per update and gives x alone")
        self.device = torch.device(device)
        self.generators = [np.random.default_rng(entropy) for entropy, _ in seeds]
        tasks = np.array([(rng.uniform(*AMPLITUDE_RANGE), rng.uniform(*PHASE_RANGE)) for rng in self.generators])
        self.amplitudes, self.phases = tasks[:, 0], tasks[:, 1]
        self.support_points = protocol.support_points
        self.points = protocol.support_points + protocol.query_points
        self.drawn: list[torch.Tensor] = []  # x, y of the next updates, update first
        self.next_update = 0

    def next_batch(self) -> list[torch.Tensor]:
        if not self.drawn or self.next_update == DRAWN_AT_ONCE:
            self.drawn, self.next_update = self._draw(), 0
        x, y = (part[self.next_update] for part in self.drawn)
        self.next_update += 1
        k = self.support_points
        return [x[:, :, :k], y[:, :, :k], x[:, :, k:], y[:, :, k:]]

    def _draw(self) -> list[torch.Tensor]:
        """x, y (DRAWN_AT_ONCE, N, 1, n, 1), float32, on the device."""
        x = np.stack([rng.uniform(*X_RANGE, (DRAWN_AT_ONCE, 1, self.points, 1)) for rng in self.generators], axis=1)
        y = self.amplitudes[:, None, None, None] * np.sin(x + self.phases[:, None, None, None])
        return on_device([torch.from_numpy(part.astype(np.float32)) for part in (x, y)], self.device)


def _states_of(state: dict[str, Any], seeds: int) -> list[dict[str, Any]]:
    """The generator states of a stream's `state`, one per seed; a ValueError if there are not `seeds` of them."""
    generators = state.get("generators") if isinstance(state, dict) else None
    if not isinstance(generators, list) or len(generators) != seeds or not all(isinstance(g, dict) for g in generators):
        raise ValueError(f"a stream's state must hold the generator states of its {seeds} seed(s)")
    return generators


STREAMS = {"assignment": TaskStreams, "paper": PaperTaskStreams, "frequency": FrequencyTaskStreams,
           "one_task": OneTaskStreams}  # fmt: skip
