"""maml_sine.checkpoints: an exact round trip, a record that must match field by field, clear refusals of bad
files, and saves that never destroy the old file."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from maml_sine import checkpoints
from maml_sine.batched import BatchedMAML, initializations_from_seeds
from maml_sine.checkpoints import CheckpointError, load, save
from maml_sine.learners import ASSIGNMENT, LEARNERS, paper_protocol
from maml_sine.training import lane_seeds, trained_or_loaded

PROTOCOL = paper_protocol(5, updates=3)


def record_of(name="maml", protocol=None, seeds=None):
    """The record of learners trained under `protocol` (default: the assignment's, 4 updates, as `trained_learners`)."""
    protocol = protocol or replace(ASSIGNMENT, updates=4)
    seeds = seeds or lane_seeds(3)
    return {"learner": LEARNERS[name].training(), "protocol": protocol.record(), "seeds": [list(s) for s in seeds]}


def trained_learners(episodes=4, name="maml"):
    seeds = lane_seeds(3)
    learner = LEARNERS[name]
    learners = BatchedMAML(initializations_from_seeds(seeds), learner.algorithm)
    streams = ASSIGNMENT.streams(seeds)
    for _ in range(episodes):
        learners.train(streams.next_batch())
    return learners, streams


def assert_same_state(first, second):
    for name in ("weights", "exp_avgs", "exp_avg_sqs"):
        pairs = zip(getattr(first.state, name), getattr(second.state, name), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)
    assert torch.equal(first.state.step, second.state.step)


@pytest.mark.parametrize("name", ["maml", "first_order_maml", "pretrained"])
def test_round_trip_rebuilds_the_learners_exactly_and_they_train_on_alike(tmp_path, name):
    learners, streams = trained_learners(name=name)
    save(learners, record_of(name), tmp_path / "learners.pt")
    loaded = load(tmp_path / "learners.pt", record_of(name))
    assert loaded.algorithm == learners.algorithm
    assert_same_state(learners, loaded)
    np.testing.assert_array_equal(loaded.histories, learners.histories)
    tasks = streams.next_batch()
    learners.train(tasks)
    loaded.train(tasks)
    np.testing.assert_array_equal(loaded.histories, learners.histories)
    assert_same_state(learners, loaded)


@pytest.mark.parametrize(
    "expected, differing",
    [
        (record_of("first_order_maml"), "learner"),
        (record_of(protocol=paper_protocol(10)), "protocol"),
        (record_of(seeds=lane_seeds(3, first=1)), "seeds"),
    ],
    ids=["another-learner", "another-protocol", "other-seeds"],
)
def test_a_checkpoint_of_another_run_is_refused_naming_what_differs(tmp_path, expected, differing):
    learners, _ = trained_learners()
    save(learners, record_of(), tmp_path / "learners.pt")
    with pytest.raises(CheckpointError, match=rf"learners\.pt.*holds {{'{differing}': .*expected {{'{differing}'"):
        load(tmp_path / "learners.pt", expected)


def test_an_oracle_round_trips_and_is_not_taken_for_the_pretrained_network(tmp_path):
    """The paper protocol's oracle has 3 inputs: its checkpoint loads as it is, and is refused as another learner."""
    seeds = lane_seeds(2)
    path = tmp_path / "oracle.pt"
    oracle, source = trained_or_loaded("oracle", LEARNERS["oracle"], PROTOCOL, seeds, path)
    assert source == "trained" and oracle.weights[0].shape == (2, 40, 3)
    loaded, source = trained_or_loaded("oracle", LEARNERS["oracle"], PROTOCOL, seeds, path)
    assert source == "checkpoint"
    assert_same_state(oracle, loaded)
    with pytest.raises(CheckpointError, match=r"oracle\.pt.*holds {'learner': .*'inputs': 3.*expected .*'inputs': 1"):
        trained_or_loaded("pretrained", LEARNERS["pretrained"], PROTOCOL, seeds, path)


def test_corrupt_file_is_refused(tmp_path):
    path = tmp_path / "learners.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match=r"learners\.pt.*cannot be read as a torch checkpoint.*truncated"):
        load(path, record_of())


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "learners.pt"
    save(trained_learners()[0], record_of(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cannot be read as a torch checkpoint"):
        load(path, record_of())


@pytest.mark.parametrize(
    "content, message",
    [
        ({"weights": []}, "not a maml-sine-checkpoint file .it holds a dict"),
        (torch.zeros(3), "not a maml-sine-checkpoint file .it holds a Tensor"),
        ({"format": "maml-sine-checkpoint", "version": 1}, "format version 1; this code reads version 2"),
        ({"format": "maml-sine-checkpoint", "version": 2, "record": {}}, "missing field.s. weights, exp_avgs"),
    ],
    ids=["plain-dict", "tensor", "old-version", "fields"],
)
def test_file_of_another_kind_is_refused(tmp_path, content, message):
    torch.save(content, tmp_path / "learners.pt")
    with pytest.raises(CheckpointError, match=message):
        load(tmp_path / "learners.pt", record_of())


def rewritten(tmp_path, change):
    """A checkpoint of three learners, loaded as plain data, changed by `change`, and saved again."""
    save(trained_learners()[0], record_of(), tmp_path / "learners.pt")
    content = torch.load(tmp_path / "learners.pt", weights_only=True)
    change(content)
    torch.save(content, tmp_path / "learners.pt")
    return tmp_path / "learners.pt"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["weights"].pop(), r"its weights must be a list of 6 tensors"),
        (lambda c: c.update(weights=[]), r"its weights must be a list of 6 tensors"),
        (lambda c: c["exp_avgs"].__setitem__(2, torch.zeros(3, 40, 30)), r"its exp_avgs\[2\] is not a \(3, 40, 40\)"),
        (lambda c: c["weights"].__setitem__(0, torch.zeros(3, 40, 1).double()), r"weights\[0\] is not .*float32"),
        (lambda c: c.update(step=torch.zeros(2)), r"its step is not a float tensor of shape \(3,\)"),
        (lambda c: c.update(losses=torch.zeros(5)), r"its losses is not a float tensor of shape \(3, None\)"),
        (lambda c: c.update(losses=c["losses"][:, :1]), r"holds 1 updates of losses and Adam steps \[4.0, 4.0, 4.0\]"),
        (lambda c: c.update(step=torch.full((3,), 7.0)), r"holds 4 updates of losses and Adam steps \[7.0"),
        (lambda c: c.update(record=[1, 2]), "its record is a list, not a dict"),
    ],
    ids=[
        "weight-count",
        "no-weights",
        "moment-shape",
        "dtype",
        "steps",
        "losses",
        "cut-losses",
        "steps-ahead",
        "record",
    ],
)
def test_a_misshapen_checkpoint_is_refused(tmp_path, change, message):
    with pytest.raises(CheckpointError, match=message):
        load(rewritten(tmp_path, change), record_of())


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load(tmp_path / "absent.pt", record_of())


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "learners.pt"
    two_updates = record_of(protocol=replace(ASSIGNMENT, updates=2))
    save(trained_learners(episodes=2)[0], two_updates, path)
    previous = path.read_bytes()

    def save_half_then_fail(content, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save(trained_learners(episodes=4)[0], record_of(), path)
    assert path.read_bytes() == previous
    assert list(tmp_path.iterdir()) == [path], "no temporary file may be left behind"
    monkeypatch.undo()
    assert load(path, two_updates).histories.shape == (3, 2)


def test_stopped_learners_are_not_saved(tmp_path):
    learners, streams = trained_learners()
    learners.stop_diverged = True
    tasks = streams.next_batch()
    tasks[3][2] *= 1e30  # learner 2's query y: its loss overflows
    tasks[1][2] *= 1e30
    learners.train(tasks)
    with pytest.raises(ValueError, match=r"learner\(s\) \[2\] stopped"):
        save(learners, record_of(), tmp_path / "learners.pt")
    assert not (tmp_path / "learners.pt").exists()
