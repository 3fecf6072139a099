"""Save a `MAML` learner, or a `BatchedMAML` set of them, to one file and rebuild it exactly,
refusing damaged or foreign files.

A checkpoint holds what `MAML(...)` needs to be rebuilt (num_steps, first_order,
inner_lr, meta_lr), the 6 initialization tensors, Adam's state (so meta-training can
go on exactly where it stopped) and the query-loss history (its length is the number
of episodes trained), under a format name and version. It is written atomically and
read with `torch.load(weights_only=True)`, which unpickles tensors and plain
containers only, never arbitrary objects.
"""

import os
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from assignment import MAML
from maml_sine.files import write_atomically
from utils import LAYER_SIZES

if TYPE_CHECKING:
    from maml_sine.batched import BatchedMAML

FORMAT = "maml-sine-checkpoint"
VERSION = 1
KIND = "MAML"
SETTINGS = ("num_steps", "first_order", "inner_lr", "meta_lr")
FIELDS = {
    "MAML": (*SETTINGS, "initialization", "meta_optimizer", "history"),
    "BatchedMAML": (*SETTINGS, "seeds", "weights", "exp_avgs", "exp_avg_sqs", "steps", "losses"),
}


def weight_shapes(inputs: int = 1) -> list[tuple[int, ...]]:
    """The shapes of BaseLearner's 6 tensors for a network of `inputs` inputs (the sine's x alone: 1)."""
    layer_sizes = (inputs, *LAYER_SIZES[1:])
    return [shape for fan_in, fan_out in pairwise(layer_sizes) for shape in [(fan_out, fan_in), (fan_out,)]]


WEIGHT_SHAPES = weight_shapes()
ADAM_MOMENTS = ("exp_avg", "exp_avg_sq")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, of another kind or format, or of the wrong shape."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(f"checkpoint {str(path)!r}: {problem}")


def save_maml(maml: MAML, path: str | os.PathLike) -> None:
    """Write `maml` to `path`, atomically: an interrupted save leaves any previous checkpoint whole."""
    checkpoint = {
        "format": FORMAT,
        "version": VERSION,
        "kind": KIND,
        "num_steps": maml.num_steps,
        "first_order": maml.first_order,
        "inner_lr": float(maml.inner_lr),
        "meta_lr": float(maml.meta_optimizer.param_groups[0]["lr"]),
        "initialization": [w.detach().clone() for w in maml.initialization],
        "meta_optimizer": maml.meta_optimizer.state_dict(),
        "history": torch.tensor(maml.history, dtype=torch.float64),
    }
    write_atomically(path, lambda file: torch.save(checkpoint, file))


def load_maml(path: str | os.PathLike) -> MAML:
    """Rebuild the `MAML` learner saved at `path`: same initialization, Adam state and history.

    Building the learner does not draw from torch's global RNG, so loading leaves any
    seeded run that follows unchanged. Raises `CheckpointError` naming the file and the problem.
    """
    checkpoint = _read(Path(path))
    try:
        with torch.random.fork_rng(devices=[]):  # MAML() draws a random initialization we overwrite at once
            maml = MAML(
                checkpoint["num_steps"],
                first_order=checkpoint["first_order"],
                inner_lr=checkpoint["inner_lr"],
                meta_lr=checkpoint["meta_lr"],
            )
    except (ValueError, TypeError) as error:
        raise CheckpointError(path, f"its settings are not valid for MAML ({error})") from error
    with torch.no_grad():
        for weight, saved in zip(maml.initialization, checkpoint["initialization"]):
            weight.copy_(saved)
    try:
        maml.meta_optimizer.load_state_dict(checkpoint["meta_optimizer"])
    except (KeyError, ValueError, TypeError) as error:
        raise CheckpointError(path, f"its Adam state does not fit the learner ({error})") from error
    maml.history = checkpoint["history"].tolist()
    return maml


def save_batched(learners: "BatchedMAML", seeds: Sequence[tuple[int, int]], path: str | os.PathLike) -> None:
    """Write every learner of `learners` (weights, Adam state, losses) and their `seeds` to `path`, atomically.

    Only learners that all still train are saved: a checkpoint holds no stopped learner (`stop_diverged`).
    """
    if not learners.active.all():
        stopped = sorted(learners.diverged_at)
        raise ValueError(f"learner(s) {stopped} stopped; a checkpoint holds training learners only")
    checkpoint = {
        "format": FORMAT,
        "version": VERSION,
        "kind": "BatchedMAML",
        "num_steps": learners.num_steps,
        "first_order": learners.first_order,
        "inner_lr": float(learners.inner_lr),
        "meta_lr": float(learners.meta_lr),
        "seeds": [[int(numpy_seed), int(torch_seed)] for numpy_seed, torch_seed in seeds],
        **{name: [t.clone() for t in getattr(learners, name)] for name in ("weights", "exp_avgs", "exp_avg_sqs")},
        "steps": [step.clone() for step in learners.steps],
        "losses": torch.from_numpy(learners.histories),
    }
    write_atomically(path, lambda file: torch.save(checkpoint, file))


def load_batched(path: str | os.PathLike) -> tuple["BatchedMAML", list[tuple[int, int]]]:
    """Rebuild the learners saved at `path` and return them with their seeds. Raises `CheckpointError`."""
    from maml_sine.batched import BatchedMAML  # not at the top: batched -> training -> checkpoints

    checkpoint = _read(Path(path), kind="BatchedMAML")
    num_learners = len(checkpoint["seeds"])
    initializations = [[weight[learner] for weight in checkpoint["weights"]] for learner in range(num_learners)]
    try:
        learners = BatchedMAML(initializations, checkpoint["num_steps"], first_order=checkpoint["first_order"],
                               inner_lr=checkpoint["inner_lr"], meta_lr=checkpoint["meta_lr"])  # fmt: skip
    except (ValueError, TypeError) as error:
        raise CheckpointError(path, f"its settings are not valid for BatchedMAML ({error})") from error
    for name in ("exp_avgs", "exp_avg_sqs", "steps"):
        for mine, saved in zip(getattr(learners, name), checkpoint[name]):
            mine.copy_(saved)
    for losses in checkpoint["losses"].T.float():
        learners.losses.append(losses)
    return learners, [tuple(seed) for seed in checkpoint["seeds"]]


def _read(path: Path, kind: str = KIND) -> dict[str, Any]:
    """Load and check the checkpoint at `path`; every problem becomes a `CheckpointError`."""
    if not path.is_file():
        raise CheckpointError(path, "no such file")
    try:
        checkpoint = torch.load(path, weights_only=True)
    except Exception as error:
        problem = (
            f"cannot be read as a torch checkpoint, it may be truncated or corrupt ({type(error).__name__}: {error})"
        )
        raise CheckpointError(path, problem) from error
    _check_format(path, checkpoint, kind)
    _check_hyperparameters(path, checkpoint)
    if kind == "BatchedMAML":
        _check_batched(path, checkpoint)
        return checkpoint
    _check_weights(path, checkpoint["initialization"])
    _check_adam_moments(path, checkpoint["meta_optimizer"])
    if not isinstance(checkpoint["history"], torch.Tensor) or checkpoint["history"].ndim != 1:
        raise CheckpointError(path, "its history is not a 1-D tensor")
    return checkpoint


def _check_format(path: Path, checkpoint: object, kind: str) -> None:
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(path, f"not a {FORMAT} file (it holds a {type(checkpoint).__name__})")
    if checkpoint.get("version") != VERSION:
        raise CheckpointError(path, f"format version {checkpoint.get('version')!r}; this code reads version {VERSION}")
    if checkpoint.get("kind") != kind:
        raise CheckpointError(path, f"holds a {checkpoint.get('kind')!r} learner; expected {kind!r}")
    missing = [field for field in FIELDS[kind] if field not in checkpoint]
    if missing:
        raise CheckpointError(path, f"missing field(s) {', '.join(missing)}")


def _check_weights(path: Path, weights: object) -> None:
    if not isinstance(weights, list) or len(weights) != len(WEIGHT_SHAPES):
        raise CheckpointError(path, f"the initialization must be a list of {len(WEIGHT_SHAPES)} tensors")
    for index, (weight, shape) in enumerate(zip(weights, WEIGHT_SHAPES)):
        if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != shape or weight.dtype != torch.float32:
            found = (
                f"{tuple(weight.shape)} {weight.dtype}" if isinstance(weight, torch.Tensor) else type(weight).__name__
            )
            raise CheckpointError(path, f"initialization tensor {index} is {found}, expected {shape} torch.float32")


def _check_hyperparameters(path: Path, checkpoint: dict[str, Any]) -> None:
    num_steps, first_order = checkpoint["num_steps"], checkpoint["first_order"]
    if type(num_steps) is not int or num_steps < 0 or type(first_order) is not bool:
        raise CheckpointError(path, f"num_steps {num_steps!r} / first_order {first_order!r} are not a count / a bool")
    for rate in ("inner_lr", "meta_lr"):
        if type(checkpoint[rate]) is not float:
            raise CheckpointError(path, f"{rate} {checkpoint[rate]!r} is not a float")


def _check_adam_moments(path: Path, optimizer_state: object) -> None:
    """Adam's moment estimates must have their weight's shape (`load_state_dict` does not check)."""
    if not isinstance(optimizer_state, dict) or not isinstance(optimizer_state.get("state"), dict):
        raise CheckpointError(path, "its Adam state is not an optimizer state_dict")
    for index, state in optimizer_state["state"].items():
        shape = WEIGHT_SHAPES[index] if isinstance(index, int) and 0 <= index < len(WEIGHT_SHAPES) else None
        for moment in ADAM_MOMENTS:
            tensor = state.get(moment) if isinstance(state, dict) else None
            if shape is None or not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape:
                raise CheckpointError(path, f"Adam's {moment} for weight {index} does not match the weight's shape")


def _check_batched(path: Path, checkpoint: dict[str, Any]) -> None:
    """Every tensor of N learners must have its weight's shape with N in front, and the seeds must be N pairs.
    The network's number of inputs is read from the first layer (the oracle has 3)."""
    seeds = checkpoint["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(_is_seed_pair(seed) for seed in seeds):
        raise CheckpointError(path, "its seeds are not a list of (numpy seed, torch seed) pairs")
    count = len(seeds)
    weights = checkpoint["weights"]
    first_layer = weights[0] if isinstance(weights, list) and weights else None
    inputs = first_layer.shape[-1] if isinstance(first_layer, torch.Tensor) and first_layer.ndim == 3 else 1
    for name in ("weights", "exp_avgs", "exp_avg_sqs", "steps"):
        tensors = checkpoint[name]
        if not isinstance(tensors, list) or len(tensors) != len(WEIGHT_SHAPES):
            raise CheckpointError(path, f"its {name} must be a list of {len(WEIGHT_SHAPES)} tensors")
        for index, (tensor, shape) in enumerate(zip(tensors, weight_shapes(inputs))):
            expected = (count, *shape) if name != "steps" else (count, *[1] * len(shape))
            if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != expected or tensor.dtype != torch.float32:
                raise CheckpointError(path, f"its {name}[{index}] is not a {expected} torch.float32 tensor")
    losses = checkpoint["losses"]
    if not isinstance(losses, torch.Tensor) or losses.ndim != 2 or losses.shape[0] != count:
        raise CheckpointError(path, f"its losses are not a ({count}, updates) tensor")


def _is_seed_pair(seed: object) -> bool:
    return isinstance(seed, list) and len(seed) == 2 and all(type(part) is int for part in seed)
