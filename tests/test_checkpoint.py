"""maml_sine.checkpoints: an exact round trip, clear refusals of bad files, saves that never destroy the old file."""

import numpy as np
import pytest
import torch

from assignment import MAML
from helpers import adam_state
from maml_sine import checkpoints, paper
from maml_sine.batched import BatchedMAML, TaskStreams, initializations_from_seeds
from maml_sine.checkpoints import CheckpointError, load_batched, load_maml, save_batched, save_maml
from maml_sine.training import lane_seeds, trained_or_loaded_seeds
from utils import SineGenerator


def trained_maml(num_steps=1, first_order=False, episodes=5):
    """A MAML with a few meta-updates behind it, so Adam has state worth saving."""
    np.random.seed(0)
    torch.manual_seed(0)
    maml = MAML(num_steps, first_order=first_order)
    for _, task in SineGenerator(k=10, k_test=40).generator(episodes):
        maml.train(task)
    return maml


@pytest.mark.parametrize("num_steps, first_order", [(1, False), (1, True), (0, False)])
def test_round_trip_rebuilds_the_learner_exactly(tmp_path, num_steps, first_order):
    original = trained_maml(num_steps, first_order)
    path = tmp_path / "learner.pt"
    save_maml(original, path)
    rng_before = torch.get_rng_state()
    loaded = load_maml(path)

    assert torch.equal(torch.get_rng_state(), rng_before), "loading must not draw from torch's RNG"
    assert (loaded.num_steps, loaded.first_order, loaded.inner_lr) == (num_steps, first_order, original.inner_lr)
    assert loaded.history == original.history
    for saved, rebuilt in zip(original.initialization, loaded.initialization, strict=True):
        assert torch.equal(saved, rebuilt) and rebuilt.is_leaf and rebuilt.requires_grad
    assert all(a is b for a, b in zip(loaded.meta_optimizer.param_groups[0]["params"], loaded.initialization))
    saved_groups, rebuilt_groups = (maml.meta_optimizer.state_dict()["param_groups"] for maml in (original, loaded))
    assert saved_groups == rebuilt_groups
    for index, (state, rebuilt) in enumerate(zip(adam_state(original), adam_state(loaded), strict=True)):
        assert state.keys() == rebuilt.keys()
        for key, value in state.items():
            assert torch.equal(value, rebuilt[key]), (index, key)

    np.random.seed(1)
    _, task = SineGenerator(k=10, k_test=40).generate_task()
    original.train(task)
    loaded.train(task)
    assert loaded.history == original.history
    assert all(torch.equal(a, b) for a, b in zip(original.initialization, loaded.initialization))


def save_raw(path, content):
    torch.save(content, path)
    return path


def broken_checkpoint(tmp_path, change):
    """A real checkpoint, loaded as a plain dict, changed by `change`, and saved again."""
    path = tmp_path / "learner.pt"
    save_maml(trained_maml(), path)
    content = torch.load(path, weights_only=True)
    change(content)
    return save_raw(path, content)


def wrong_weight_shape(content):
    content["initialization"][2] = torch.zeros(40, 30)


def wrong_adam_shape(content):
    content["meta_optimizer"]["state"][0]["exp_avg"] = torch.zeros(3)


def test_corrupt_file_is_refused(tmp_path):
    path = tmp_path / "learner.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(
        CheckpointError, match=r"learner\.pt.*cannot be read as a torch checkpoint.*truncated or corrupt"
    ):
        load_maml(path)


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "learner.pt"
    save_maml(trained_maml(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cannot be read as a torch checkpoint"):
        load_maml(path)


@pytest.mark.parametrize(
    "content, message",
    [
        ({"initialization": []}, "not a maml-sine-checkpoint file .it holds a dict"),
        (torch.zeros(3), "not a maml-sine-checkpoint file .it holds a Tensor"),
        ({"format": "maml-sine-checkpoint", "version": 99}, "format version 99; this code reads version 1"),
        ({"format": "maml-sine-checkpoint", "version": 1, "kind": "TrainFromScratch"}, "holds a 'TrainFromScratch'"),
        ({"format": "maml-sine-checkpoint", "version": 1, "kind": "MAML"}, "missing field.s. num_steps, first_order"),
    ],
    ids=["plain-dict", "tensor", "version", "kind", "fields"],
)
def test_file_of_another_kind_is_refused(tmp_path, content, message):
    path = save_raw(tmp_path / "learner.pt", content)
    with pytest.raises(CheckpointError, match=message):
        load_maml(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (wrong_weight_shape, r"initialization tensor 2 is \(40, 30\) torch.float32, expected \(40, 40\)"),
        (lambda content: content["initialization"].pop(), "must be a list of 6 tensors"),
        (wrong_adam_shape, "Adam's exp_avg for weight 0 does not match the weight's shape"),
        (lambda content: content.update(num_steps=-1), "num_steps -1"),
        (lambda content: content.update(history=torch.zeros(2, 2)), "history is not a 1-D tensor"),
    ],
    ids=["weight-shape", "weight-count", "adam-shape", "num-steps", "history"],
)
def test_checkpoint_of_the_wrong_shape_is_refused(tmp_path, change, message):
    path = broken_checkpoint(tmp_path, change)
    with pytest.raises(CheckpointError, match=message):
        load_maml(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_maml(tmp_path / "absent.pt")


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "learner.pt"
    save_maml(trained_maml(episodes=2), path)
    previous = path.read_bytes()

    def save_half_then_fail(content, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_maml(trained_maml(episodes=4), path)
    assert path.read_bytes() == previous
    assert list(tmp_path.iterdir()) == [path], "no temporary file may be left behind"
    assert len(load_maml(path).history) == 2


def trained_learners(episodes=4):
    seeds = lane_seeds(3)
    learners = BatchedMAML(initializations_from_seeds(seeds), 1)
    streams = TaskStreams(seeds, 10, 40)
    for _ in range(episodes):
        learners.train(streams.next_batch())
    return learners, seeds, streams


def test_many_learners_round_trip_exactly_and_train_on_alike(tmp_path):
    learners, seeds, streams = trained_learners()
    save_batched(learners, seeds, tmp_path / "learners.pt")
    loaded, loaded_seeds = load_batched(tmp_path / "learners.pt")
    assert loaded_seeds == seeds and (loaded.num_steps, loaded.first_order) == (1, False)
    for name in ("weights", "exp_avgs", "exp_avg_sqs", "steps"):
        assert all(torch.equal(a, b) for a, b in zip(getattr(learners, name), getattr(loaded, name), strict=True))
    np.testing.assert_array_equal(loaded.histories, learners.histories)
    tasks = streams.next_batch()
    learners.train(tasks)
    loaded.train(tasks)
    np.testing.assert_array_equal(loaded.histories, learners.histories)
    assert all(torch.equal(a, b) for a, b in zip(learners.weights, loaded.weights, strict=True))


def test_a_single_learner_checkpoint_is_not_taken_for_many(tmp_path):
    save_maml(trained_maml(), tmp_path / "one.pt")
    with pytest.raises(CheckpointError, match=r"one\.pt.*holds a 'MAML' learner; expected 'BatchedMAML'"):
        load_batched(tmp_path / "one.pt")


def test_many_learners_of_the_wrong_shape_are_refused(tmp_path):
    learners, seeds, _ = trained_learners()
    save_batched(learners, seeds[:2], tmp_path / "learners.pt")  # three learners, two seeds
    with pytest.raises(CheckpointError, match=r"its weights\[0\] is not a \(2, 40, 1\) torch.float32 tensor"):
        load_batched(tmp_path / "learners.pt")


def test_stopped_learners_are_not_saved(tmp_path):
    learners, seeds, streams = trained_learners()
    learners.stop_diverged = True
    tasks = streams.next_batch()
    tasks[1][2, 0, 0, 0] = float("nan")
    learners.train(tasks)
    with pytest.raises(ValueError, match=r"learner\(s\) \[2\] stopped"):
        save_batched(learners, seeds, tmp_path / "learners.pt")
    assert not (tmp_path / "learners.pt").exists()


def test_an_oracle_round_trips_and_is_not_taken_for_the_pretrained_network(tmp_path):
    """The paper protocol's oracle has 3 inputs: its checkpoint loads as it is, and is refused as another learner."""
    oracle, seeds = paper.meta_train(paper.LEARNERS["oracle"], 2, 3, k=5)
    path = tmp_path / "oracle.pt"
    save_batched(oracle, seeds, path)
    loaded, _, source = trained_or_loaded_seeds(paper.LEARNERS["oracle"], path, 3, 2)
    assert source == "checkpoint"
    assert all(torch.equal(a, b) for a, b in zip(oracle.weights, loaded.weights, strict=True))
    with pytest.raises(CheckpointError, match=r"oracle\.pt.*inputs\) = .*, 3\), expected .*, 1\)"):
        trained_or_loaded_seeds(paper.LEARNERS["pretrained"], path, 3, 2)


def test_a_checkpoint_with_no_weights_is_refused(tmp_path):
    learners, seeds, _ = trained_learners()
    save_batched(learners, seeds, tmp_path / "learners.pt")
    checkpoint = torch.load(tmp_path / "learners.pt", weights_only=True)
    torch.save({**checkpoint, "weights": []}, tmp_path / "learners.pt")
    with pytest.raises(CheckpointError, match=r"its weights must be a list of 6 tensors"):
        load_batched(tmp_path / "learners.pt")
