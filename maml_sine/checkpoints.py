"""Learners trained in lockstep, saved to one file and rebuilt exactly; damaged or foreign files refused.

A checkpoint holds a record of what was trained (the learner, the protocol it was trained
under, the seeds) and the learners' state: their params by name, Adam's moments and step count (so
training can go on exactly where it stopped), every query loss and meta-gradient norm, and how
many updates it holds. Loading compares the record with the one expected, field by field, and
refuses any difference: a file name is not a record.

A checkpoint may hold part of a run: a long learner saves itself every few minutes and when
Ctrl-C stops it (`training.meta_trained`), with fewer updates than its protocol's and the state
of its task streams (`streams.TaskStreams.state`, plain data), so that a rerun draws the tasks
the rest of the run would have drawn and ends bitwise equal to a run that was never stopped.
`load` refuses such a file as "not one whole run"; `load_progress` gives it to resume from.

Files are written atomically and read with `torch.load(weights_only=True)`, which unpickles
tensors and plain containers only, never arbitrary objects. They hold CPU tensors, whatever device the
learners trained on, and load onto any device (`map_location`): a file is the same file from any device.

A file also proves its content. Beside every tensor it holds the SHA-256 digest of the
tensor's dtype, shape and bytes, checked on load: one flipped bit (a weight of 0.8 read as
2e38, finite, so no check of values sees it) is refused, not evaluated as a learner that
diverges. The fields of plain data (the updates held, the streams' state) have the digest of
their JSON text. Values are checked too, on save and on load: every value finite, and Adam's
second moments, the losses (mean squared errors) and the meta-gradient norms non-negative. A loss or
gradient norm may be NaN only where a learner stopped (`stop_diverged`): from the update it stopped at on,
and nowhere else; networks' scores are their final MSEs, finite as their weights are. A file that fails is
refused with a `CheckpointError` naming it and the tensor.

One run at a time writes in a checkpoint folder (`one_writer`): two runs on one folder
would train the same learners twice and overwrite each other's files, so a second one is
refused, naming the first, or waits for it, and then loads what it trained.
"""

import fcntl
import hashlib
import json
import os
import shlex
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import torch

from maml_sine.batched import BatchedMAML
from maml_sine.core import Algorithm, LearnerState, network_shapes
from maml_sine.files import write_atomically

FORMAT = "maml-sine-checkpoint"
VERSION = 5  # 3: a digest of every tensor; 4: named tensors, whatever the learner learns; 5: part of a run
STATE = ("params", "exp_avgs", "exp_avg_sqs")  # each a mapping of the learner's named tensors
RECORDS = {"losses": torch.float32, "gradient_norms": torch.float64}  # (learners, updates); each update's dtype
PROGRESS = ("updates", "streams")  # plain data: the updates held, the streams' state (None once a run is whole)
NON_NEGATIVE = {
    "exp_avg_sqs": "Adam's second moments (means of squares)",
    "losses": "losses (mean squared errors)",
    "gradient_norms": "meta-gradient norms",
}
LOCK_FILE = ".lock"  # in a checkpoint folder while a run uses it; it names that run


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, of another format, of another run, misshapen or damaged."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(f"checkpoint {str(path)!r}: {problem}")


class FolderInUseError(CheckpointError):
    """A checkpoint folder that another run holds (`one_writer`)."""


def digest(tensor: torch.Tensor) -> str:
    """The SHA-256 (hex) of `tensor`'s dtype, shape and bytes: the same bytes read as another dtype or
    reshaped give another digest, so a retyped or reshaped tensor does not pass for the one written."""
    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    sha256 = hashlib.sha256(f"{tensor.dtype} {tuple(tensor.shape)}\n".encode())
    sha256.update(data)
    return sha256.hexdigest()


class Progress(NamedTuple):
    """Learners saved part way through their run, and the state of their task streams then: what a rerun
    resumes from (`LockstepRun.resume`)."""

    learners: BatchedMAML
    streams: dict[str, Any]


def save(
    learners: BatchedMAML, record: Mapping[str, Any], path: str | os.PathLike, streams: dict[str, Any] | None = None
) -> None:  # fmt: skip
    """Write `learners` and the `record` of what they are to `path`, atomically: an interrupted save leaves
    any previous checkpoint whole. A learner that stopped (`stop_diverged`) is saved as it stopped: its state before
    the update that diverged, its step count that of the updates it took, and NaN records from there on.

    Learners that have taken fewer updates than `record["protocol"]["updates"]` are part of a run: `streams`,
    the state of their task streams after the last update they took, must come with them."""
    updates, planned = len(learners.losses), record["protocol"]["updates"]
    if updates > planned or (updates < planned and streams is None):
        raise ValueError(f"{updates} of {planned} updates: part of a run is saved with its streams' state, no more")
    tensors = {
        **{field: {name: _on_host(t) for name, t in getattr(learners.state, field).items()} for field in STATE},
        "step": _on_host(learners.state.step),
        "losses": torch.from_numpy(learners.histories),
        "gradient_norms": torch.from_numpy(learners.gradient_norm_histories),
    }
    _write(Path(path), record, tensors, {"updates": updates, "streams": streams}, stopped=RECORDS)


def _on_host(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of `tensor` on the CPU, as a checkpoint holds it."""
    return tensor.detach().to("cpu", copy=True)


def load(path: str | os.PathLike, record: Mapping[str, Any], device: torch.device | str = "cpu") -> BatchedMAML:
    """The learners saved at `path`, on `device`, if its record is `record` and they have taken every update of its
    protocol; raises `CheckpointError` naming the file and the problem otherwise (a run saved part way is "not one
    whole run"). `record["learner"]` holds the learner's algorithm and inputs, `record["seeds"]` one (numpy seed,
    torch seed) pair per learner."""
    learners = load_progress(path, record, device)
    if isinstance(learners, Progress):
        updates, planned = len(learners.learners.losses), record["protocol"]["updates"]
        raise CheckpointError(path, f"holds {updates} of its protocol's {planned} updates: not one whole run")
    return learners


def load_progress(
    path: str | os.PathLike, record: Mapping[str, Any], device: torch.device | str = "cpu"
) -> BatchedMAML | Progress:
    """The learners saved at `path`, on `device`, if its record is `record`: whole (as `load` gives them) or, if
    they were saved part way through their run, a `Progress` to resume from; a `CheckpointError` otherwise."""
    path, fields = Path(path), (*STATE, "step", *RECORDS)
    checkpoint = _read(path, record, (*fields, *PROGRESS), device)
    if record["learner"]["algorithm"] is None:
        raise CheckpointError(path, "holds a learner that is never trained; nothing to load")
    count, algorithm = len(record["seeds"]), Algorithm.from_record(record["learner"]["algorithm"])
    shapes = network_shapes(algorithm.network_inputs(record["learner"]["inputs"])).values()
    learned = {name: tuple(t.shape) for name, t in algorithm.start([torch.zeros(s) for s in shapes]).items()}
    _check_shapes(path, checkpoint, {field: learned for field in STATE}, count)
    _check_content(path, checkpoint, fields, PROGRESS, stopped=RECORDS)
    updates, planned, streams = checkpoint["updates"], record["protocol"]["updates"], checkpoint["streams"]
    held = [checkpoint[field].shape[1] for field in RECORDS]
    steps = checkpoint["step"].tolist()
    if type(updates) is not int or not 0 <= updates <= planned or held != [updates] * 2 or max(steps) > updates:
        losses, norms = held
        problem = f"holds {updates!r} of {planned} updates, {losses} losses, {norms} gradient norms, Adam steps {steps}"
        raise CheckpointError(path, f"{problem}: they do not agree")
    stopped = _stopped_learners(path, checkpoint, steps, updates)
    if updates < planned and not isinstance(streams, dict):
        raise CheckpointError(path, f"holds {updates} of {planned} updates but not its streams' state to resume from")
    placeholder = [torch.zeros(shape, device=device) for shape in shapes]  # the state is the file's
    learners = BatchedMAML([placeholder] * count, algorithm, device=device)
    learners.state = LearnerState(*(checkpoint[field] for field in STATE), step=checkpoint["step"].float())
    for field, dtype in RECORDS.items():
        for row in checkpoint[field].T.to(dtype):
            getattr(learners, field).append(row)
    learners.stop_diverged = bool(stopped)
    learners.diverged_at = stopped
    learners.active = torch.tensor([learner not in stopped for learner in range(count)], device=learners.device)
    return learners if updates == planned else Progress(learners, streams)


def _stopped_learners(path: Path, checkpoint: dict[str, Any], steps: list[float], updates: int) -> dict[int, int]:
    """The learners that stopped, each with the update it stopped at (its step count, below the `updates` held), if
    their records are finite before it and NaN from it on, as a stopped learner's are; a `CheckpointError`
    otherwise. Every learner may have stopped."""
    stopped = {}
    for learner, step in enumerate(steps):
        if step != int(step):
            raise CheckpointError(path, f"learner {learner} took {step:g} updates: a count of updates is whole")
        for field in RECORDS:
            taken = checkpoint[field][learner, : int(step)]
            if not torch.isfinite(taken).all():
                index = int((~torch.isfinite(taken)).nonzero()[0])
                value = f"{taken[index].item():g}"
                raise CheckpointError(path, f"its {field} holds {value} at ({learner}, {index}): learner {learner} "
                                            f"took {step:g} updates, and records a finite value for each")  # fmt: skip
            if step < updates and not torch.isnan(checkpoint[field][learner, int(step) :]).all():
                raise CheckpointError(path, f"learner {learner} stopped at update {step:g} but records values after it")
        if step < updates:
            stopped[learner] = int(step)
    return stopped


def save_networks(
    networks: Sequence[Sequence[torch.Tensor]], scores: torch.Tensor, record: Mapping[str, Any], path: str | os.PathLike
) -> None:  # fmt: skip
    """Write networks that are not trained any further (one per seed, BaseLearner's 6 tensors each) with
    `scores` (float, (N, m): what they were measured at) and the `record` of what they are, atomically."""
    tensors = {
        "weights": [_on_host(torch.stack([w.detach() for w in layer])) for layer in zip(*networks)],
        "losses": _on_host(scores),
    }
    _write(Path(path), record, tensors)


def load_networks(
    path: str | os.PathLike, record: Mapping[str, Any], device: torch.device | str = "cpu"
) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
    """The networks and scores `save_networks` wrote at `path`, on `device`, if its record is `record` (with one
    entry of `record["seeds"]` per network); a `CheckpointError` otherwise."""
    path, fields = Path(path), ("weights", "losses")
    checkpoint = _read(path, record, fields, device)
    _check_shapes(path, checkpoint, {"weights": list(network_shapes().values())}, len(record["seeds"]))
    _check_content(path, checkpoint, fields)
    return [list(network) for network in zip(*checkpoint["weights"])], checkpoint["losses"]


@contextmanager
def one_writer(folder: str | os.PathLike, *, wait: bool = False) -> Iterator[None]:
    """Hold the lock of checkpoint folder `folder` for the block: while it is held, no other run trains into the
    folder. A run that finds it held gets a `FolderInUseError` naming the process that holds it (its ID and command),
    or, if `wait`, says so on stderr and waits until it is let go.

    The lock is a `flock` on LOCK_FILE in the folder, which holds the holder's name. The operating system lets go
    of it when the holder ends, however it ends, so a run that was killed leaves no stale lock; a holder that
    ends normally also removes the file.
    """
    path = Path(folder) / LOCK_FILE
    descriptor = _locked(path, wait)
    try:
        command = " ".join(shlex.join(sys.orig_argv).split())  # on one line, as the refusal that quotes it
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"process {os.getpid()} ({command})\n".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked: a run that then gets this file's lock sees it gone
        os.close(descriptor)


def data_digest(value: Any) -> str:
    """The SHA-256 (hex) of plain data (dicts, lists, strings, numbers, None) as JSON text with sorted keys: the
    digest of the fields of a checkpoint that are not tensors."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _write(
    path: Path, record: Mapping[str, Any], tensors: Mapping[str, torch.Tensor | list | dict],
    data: Mapping[str, Any] | None = None, stopped: Sequence[str] = (),
) -> None:  # fmt: skip
    """Write `tensors` (by field: a tensor, or a list or mapping of them) and `data` (by field: plain data) with
    the format, the `record` and the digest of every tensor and field of data to `path`, atomically. Values that
    loading would refuse raise a `CheckpointError` here, before anything is written, so the error comes where the
    values were made and no training is saved to be refused. `stopped` names the records that may hold NaN for a
    stopped learner."""
    named, data = _named_tensors(tensors), data or {}
    _check_values(path, named, stopped)
    checkpoint = {
        "format": FORMAT,
        "version": VERSION,
        "record": dict(record),
        **tensors,
        **data,
        "digests": {
            **{name: digest(tensor) for name, tensor in named.items()},
            **{field: data_digest(value) for field, value in data.items()},
        },
    }
    write_atomically(path, lambda file: torch.save(checkpoint, file))


def _read(
    path: Path, record: Mapping[str, Any], fields: Sequence[str], device: torch.device | str = "cpu"
) -> dict[str, Any]:  # fmt: skip
    """Load the checkpoint at `path` with its tensors on `device`, check its format, that it has `fields` and that
    its record is `record`, field by field; every problem becomes a `CheckpointError`."""
    if not path.is_file():
        raise CheckpointError(path, "no such file")
    try:
        checkpoint = torch.load(path, weights_only=True, map_location=device)
    except Exception as error:
        problem = (
            f"cannot be read as a torch checkpoint, it may be truncated or corrupt ({type(error).__name__}: {error})"
        )
        raise CheckpointError(path, problem) from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(path, f"not a {FORMAT} file (it holds a {type(checkpoint).__name__})")
    if checkpoint.get("version") != VERSION:
        raise CheckpointError(path, f"format version {checkpoint.get('version')!r}; this code reads version {VERSION}")
    missing = [field for field in ("record", *fields, "digests") if field not in checkpoint]
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


def _check_shapes(
    path: Path, checkpoint: dict[str, Any], expected: Mapping[str, Mapping[str, tuple] | Sequence[tuple]], count: int
) -> None:  # fmt: skip
    """Every field of `expected` must hold, of `count` learners, the tensors it names (a mapping of names, or a
    list of 6) in the shapes it gives with `count` in front, float32; and the step count (if any) and the
    losses one row per learner."""
    for field, shapes in expected.items():
        tensors = checkpoint[field]
        keys = list(shapes) if isinstance(shapes, Mapping) else list(range(len(shapes)))
        found = list(tensors) if isinstance(tensors, Mapping) else list(range(len(tensors)))
        if type(tensors) is not (dict if isinstance(shapes, Mapping) else list) or found != keys:
            raise CheckpointError(path, f"its {field} must hold the tensors {keys}")
        for key, shape in zip(keys, shapes.values() if isinstance(shapes, Mapping) else shapes):
            tensor, want = tensors[key], (count, *shape)
            if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != want or tensor.dtype != torch.float32:
                raise CheckpointError(path, f"its {field}[{key}] is not a {want} torch.float32 tensor")
    for name, shape in (("step", (count,)), *((field, (count, None)) for field in RECORDS)):
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


def _check_content(
    path: Path, checkpoint: dict[str, Any], fields: Sequence[str], data: Sequence[str] = (), stopped: Sequence[str] = ()
) -> None:  # fmt: skip
    """Every tensor of `fields` (shapes already checked) and every field of plain `data` must match the digest
    written with it, and the tensors' values must be legal (`_check_values`, NaN allowed in the `stopped` fields)."""
    digests = checkpoint["digests"]
    if not isinstance(digests, dict):
        raise CheckpointError(path, f"its digests are a {type(digests).__name__}, not a dict")
    named = _named_tensors({field: checkpoint[field] for field in fields})
    found = {**{name: digest(tensor) for name, tensor in named.items()},
             **{field: data_digest(checkpoint[field]) for field in data}}  # fmt: skip
    for name, computed in found.items():
        if name not in digests:
            raise CheckpointError(path, f"has no digest of its {name}")
        if digests[name] != computed:
            raise CheckpointError(path, f"its {name} does not match its SHA-256 digest: the file is damaged")
    _check_values(path, named, stopped)


def _check_values(path: Path, named: Mapping[str, torch.Tensor], stopped: Sequence[str] = ()) -> None:
    """Every value finite (NaN allowed in the `stopped` fields: a stopped learner's records, which `_stopped_learners`
    checks), and those of the fields in NON_NEGATIVE not negative; a `CheckpointError` naming the tensor, the first
    value that is not, and where, otherwise."""
    for name, tensor in named.items():
        field = name.partition("[")[0]
        if not (torch.isfinite(tensor) | (torch.isnan(tensor) if field in stopped else False)).all():
            bad, rule = ~torch.isfinite(tensor), "a checkpoint holds finite values only"
        elif field in NON_NEGATIVE and (tensor < 0).any():
            bad, rule = tensor < 0, f"{NON_NEGATIVE[field]} cannot be negative"
        else:
            continue
        where = tuple(bad.nonzero()[0].tolist())
        raise CheckpointError(path, f"its {name} holds {tensor[where].item():g} at {where}: {rule}")


def _named_tensors(fields: Mapping[str, torch.Tensor | list | dict]) -> dict[str, torch.Tensor]:
    """Every tensor of `fields` (a tensor, or a list or mapping of them) under the name errors and digests give
    it: "params[w1]", "exp_avgs[b3]", "weights[0]", "step", "losses", "gradient_norms"."""
    named = {}
    for field, value in fields.items():
        if isinstance(value, list | dict):
            keys = value.keys() if isinstance(value, dict) else range(len(value))
            named.update({f"{field}[{key}]": value[key] for key in keys})
        else:
            named[field] = value
    return named


def _locked(path: Path, wait: bool) -> int:
    """A descriptor of the lock file `path` (created if need be), locked by this process alone; a `FolderInUseError`
    naming the holder if another process holds it, unless `wait`, which waits for it to be let go."""
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(descriptor, 4096, 0).decode(errors="replace").strip() or "a process that is starting"
                if not wait:
                    again = "run again once it has finished, or with --wait-for-lock"
                    problem = f"in use by {holder}; one run at a time writes here: {again}"
                    raise FolderInUseError(path.parent, problem) from None
                print(f"waiting for {holder} to finish with checkpoint folder {str(path.parent)!r}", file=sys.stderr)
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            if _is_at(descriptor, path):
                return descriptor
        except BaseException:
            os.close(descriptor)
            raise
        os.close(descriptor)  # the holder removed this file as it let go: lock the one at `path` now


def _is_at(descriptor: int, path: Path) -> bool:
    """Whether the file open as `descriptor` is still the one at `path` (not removed, nor replaced)."""
    try:
        return os.path.samestat(os.fstat(descriptor), os.stat(path))
    except FileNotFoundError:
        return False
