"""Save a `MAML` learner to one file and rebuild it exactly, refusing damaged or foreign files.

A checkpoint holds what `MAML(...)` needs to be rebuilt (num_steps, first_order,
inner_lr, meta_lr), the 6 initialization tensors, Adam's state (so meta-training can
go on exactly where it stopped) and the query-loss history (its length is the number
of episodes trained), under a format name and version. It is written atomically and
read with `torch.load(weights_only=True)`, which unpickles tensors and plain
containers only, never arbitrary objects.
"""

import os
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch

from assignment import MAML
from maml_sine.files import write_atomically
from utils import LAYER_SIZES

FORMAT = "maml-sine-checkpoint"
VERSION = 1
KIND = "MAML"
FIELDS = ("num_steps", "first_order", "inner_lr", "meta_lr", "initialization", "meta_optimizer", "history")
WEIGHT_SHAPES = [shape for fan_in, fan_out in pairwise(LAYER_SIZES) for shape in [(fan_out, fan_in), (fan_out,)]]
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


def _read(path: Path) -> dict[str, Any]:
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
    _check_format(path, checkpoint)
    _check_hyperparameters(path, checkpoint)
    _check_weights(path, checkpoint["initialization"])
    _check_adam_moments(path, checkpoint["meta_optimizer"])
    if not isinstance(checkpoint["history"], torch.Tensor) or checkpoint["history"].ndim != 1:
        raise CheckpointError(path, "its history is not a 1-D tensor")
    return checkpoint


def _check_format(path: Path, checkpoint: object) -> None:
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(path, f"not a {FORMAT} file (it holds a {type(checkpoint).__name__})")
    if checkpoint.get("version") != VERSION:
        raise CheckpointError(path, f"format version {checkpoint.get('version')!r}; this code reads version {VERSION}")
    if checkpoint.get("kind") != KIND:
        raise CheckpointError(path, f"holds a {checkpoint.get('kind')!r} learner; expected {KIND!r}")
    missing = [field for field in FIELDS if field not in checkpoint]
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
