"""Learners trained in lockstep, saved to one file and rebuilt exactly; damaged or foreign files refused.

A checkpoint holds a record of what was trained (the learner, the protocol it was trained
under, the seeds) and the learners' state: weights, Adam's moments and step count (so
training can go on exactly where it stopped) and every query loss. Loading compares the
record with the one expected, field by field, and refuses any difference: a file name is
not a record. Files are written atomically and read with `torch.load(weights_only=True)`,
which unpickles tensors and plain containers only, never arbitrary objects.
"""

import os
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch

from maml_sine.batched import BatchedMAML
from maml_sine.core import Algorithm
from utils import LAYER_SIZES, write_atomically

FORMAT = "maml-sine-checkpoint"
VERSION = 2
STATE = ("weights", "exp_avgs", "exp_avg_sqs")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, of another format, of another run, or misshapen."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(f"checkpoint {str(path)!r}: {problem}")


def weight_shapes(inputs: int = 1) -> list[tuple[int, ...]]:
    """The shapes of BaseLearner's 6 tensors for a network of `inputs` inputs (the sine's x alone: 1)."""
    layer_sizes = (inputs, *LAYER_SIZES[1:])
    return [shape for fan_in, fan_out in pairwise(layer_sizes) for shape in [(fan_out, fan_in), (fan_out,)]]


def save(learners: BatchedMAML, record: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write `learners` and the `record` of what they are to `path`, atomically: an interrupted save leaves
    any previous checkpoint whole. Only learners that all still train are saved (see `stop_diverged`)."""
    if not learners.active.all():
        raise ValueError(
            f"learner(s) {sorted(learners.diverged_at)} stopped; a checkpoint holds training learners only"
        )
    checkpoint = {
        "format": FORMAT,
        "version": VERSION,
        "record": dict(record),
        **{name: [t.clone() for t in getattr(learners.state, name)] for name in STATE},
        "step": learners.state.step.clone(),
        "losses": torch.from_numpy(learners.histories),
    }
    write_atomically(path, lambda file: torch.save(checkpoint, file))


def load(path: str | os.PathLike, record: Mapping[str, Any]) -> BatchedMAML:
    """The learners saved at `path`, if its record is `record`; raises `CheckpointError` naming the file and
    the problem otherwise. `record["learner"]` holds the learner's algorithm and inputs, `record["seeds"]`
    one (numpy seed, torch seed) pair per learner."""
    path = Path(path)
    checkpoint = _read(path, record, (*STATE, "step", "losses"))
    if record["learner"]["algorithm"] is None:
        raise CheckpointError(path, "holds a learner that is never trained; nothing to load")
    count, inputs = len(record["seeds"]), record["learner"]["inputs"]
    _check_shapes(path, checkpoint, STATE, count, inputs)
    updates = checkpoint["losses"].shape[1]
    if updates != record["protocol"]["updates"] or not (checkpoint["step"] == updates).all():
        steps = checkpoint["step"].tolist()
        raise CheckpointError(path, f"holds {updates} updates of losses and Adam steps {steps}: not one whole run")
    learners = BatchedMAML(list(zip(*checkpoint["weights"])), Algorithm(**record["learner"]["algorithm"]))
    learners.state = learners.state._replace(
        **{name: checkpoint[name] for name in STATE[1:]}, step=checkpoint["step"].float()
    )
    for losses in checkpoint["losses"].T.float():
        learners.losses.append(losses)
    return learners


def save_networks(
    networks: Sequence[Sequence[torch.Tensor]], scores: torch.Tensor, record: Mapping[str, Any], path: str | os.PathLike
) -> None:  # fmt: skip
    """Write networks that are not trained any further (one per seed, BaseLearner's 6 tensors each) with
    `scores` (float, (N, m): what they were measured at) and the `record` of what they are, atomically."""
    checkpoint = {
        "format": FORMAT,
        "version": VERSION,
        "record": dict(record),
        "weights": [torch.stack([w.detach() for w in layer]) for layer in zip(*networks)],
        "losses": scores.detach().clone(),
    }
    write_atomically(path, lambda file: torch.save(checkpoint, file))


def load_networks(path: str | os.PathLike, record: Mapping[str, Any]) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
    """The networks and scores `save_networks` wrote at `path`, if its record is `record` (with one entry of
    `record["seeds"]` per network); a `CheckpointError` otherwise."""
    path = Path(path)
    checkpoint = _read(path, record, ("weights", "losses"))
    _check_shapes(path, checkpoint, ("weights",), len(record["seeds"]), inputs=1)
    return [list(network) for network in zip(*checkpoint["weights"])], checkpoint["losses"]


def _read(path: Path, record: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """Load the checkpoint at `path`, check its format, that it has `fields` and that its record is `record`,
    field by field; every problem becomes a `CheckpointError`."""
    if not path.is_file():
        raise CheckpointError(path, "no such file")
    try:
        checkpoint = torch.load(path, weights_only=True)
    except Exception as error:
        problem = (
            f"cannot be read as a torch checkpoint, it may be truncated or corrupt ({type(error).__name__}: {error})"
        )
        raise CheckpointError(path, problem) from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(path, f"not a {FORMAT} file (it holds a {type(checkpoint).__name__})")
    if checkpoint.get("version") != VERSION:
        raise CheckpointError(path, f"format version {checkpoint.get('version')!r}; this code reads version {VERSION}")
    missing = [field for field in ("record", *fields) if field not in checkpoint]
    if missing:
        raise CheckpointError(path, f"missing field(s) {', '.join(missing)}")
    if not isinstance(checkpoint["record"], dict):
        raise CheckpointError(path, f"its record is a {type(checkpoint['record']).__name__}, not a dict")
    if checkpoint["record"] != record:
        differences = sorted(key for key in {*record, *checkpoint["record"]}
                             if checkpoint["record"].get(key) != record.get(key))  # fmt: skip
        found = {key: checkpoint["record"].get(key) for key in differences}
        expected = {key: record.get(key) for key in differences}
        raise CheckpointError(path, f"holds {found}, expected {expected}; delete it or use --retrain")
    return checkpoint


def _check_shapes(path: Path, checkpoint: dict[str, Any], names: Sequence[str], count: int, inputs: int) -> None:
    """Every tensor of `names` (lists of 6) of `count` learners must have its weight's shape with `count` in
    front, and the step count (if any) and losses one row per learner."""
    for name in names:
        tensors = checkpoint[name]
        if not isinstance(tensors, list) or len(tensors) != len(LAYER_SIZES) * 2 - 2:
            raise CheckpointError(path, f"its {name} must be a list of {len(LAYER_SIZES) * 2 - 2} tensors")
        for index, (tensor, shape) in enumerate(zip(tensors, weight_shapes(inputs))):
            expected = (count, *shape)
            if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != expected or tensor.dtype != torch.float32:
                raise CheckpointError(path, f"its {name}[{index}] is not a {expected} torch.float32 tensor")
    for name, shape in (("step", (count,)), ("losses", (count, None))):
        if name not in checkpoint:
            continue
        tensor = checkpoint[name]
        if (
            not isinstance(tensor, torch.Tensor)
            or not tensor.is_floating_point()
            or tensor.ndim != len(shape)
            or tensor.shape[0] != count
        ):
            raise CheckpointError(path, f"its {name} is not a float tensor of shape {shape} (None: any length)")
