"""maml_sine.batched: every learner of a batched run is the learner `MAML.train` would have trained."""

import numpy as np
import pytest
import torch

from assignment import MAML
from helpers import weights_of
from maml_sine.batched import (
    BatchedMAML,
    BatchedTrainFromScratch,
    TaskStreams,
    initializations_from_seeds,
)
from maml_sine.training import lane_seeds
from utils import BaseLearner, SineGenerator, TrainFromScratch

EPISODES = 200
TOLERANCE = 1e-5  # relative, per episode, as for the compiled path


def run_batched(num_steps, k, episodes, num_learners=3, first_order=False, compile=False, **options):
    seeds = lane_seeds(num_learners)
    initializations = initializations_from_seeds(seeds)
    learners = BatchedMAML(initializations, num_steps, first_order=first_order, compile=compile, **options)
    streams = TaskStreams(seeds, k, 40)
    batches = [streams.next_batch() for _ in range(episodes)]
    for tasks in batches:
        learners.train(tasks)
    return learners, initializations, batches


def maml_from(initialization, num_steps, first_order=False):
    maml = MAML(num_steps, first_order=first_order)
    with torch.no_grad():
        for weight, start in zip(maml.initialization, initialization, strict=True):
            weight.copy_(start)
    return maml


def relative(mine, reference):
    return ((mine - reference).abs().max() / reference.abs().max()).item()


@pytest.mark.parametrize(
    "num_steps, k, first_order",
    [(1, 10, False), (2, 5, False), (1, 10, True), (0, 10, False)],
    ids=["S1-K10", "S2-K5", "first-order", "S0"],
)
def test_each_learner_takes_the_updates_of_maml_train(num_steps, k, first_order):
    learners, initializations, batches = run_batched(num_steps, k, EPISODES, first_order=first_order)
    for lane, initialization in enumerate(initializations):
        maml = maml_from(initialization, num_steps, first_order)
        for tasks in batches:
            maml.train([part[lane, 0] for part in tasks])
        history = np.array(maml.history)
        assert np.max(np.abs(learners.histories[lane] - history) / history) < TOLERANCE
        for mine, theirs in zip(learners.initialization(lane), weights_of(maml), strict=True):
            assert relative(mine, theirs) < TOLERANCE
        for layer, weight in enumerate(maml.initialization):
            state = maml.meta_optimizer.state[weight]
            assert learners.steps[layer][lane].item() == state["step"].item() == EPISODES
            assert relative(learners.exp_avgs[layer][lane], state["exp_avg"]) < 1e-4
            assert relative(learners.exp_avg_sqs[layer][lane], state["exp_avg_sq"]) < 1e-4


@pytest.mark.parametrize(
    "num_steps, k, options",
    [(1, 10, {}), (2, 5, {"first_order": True, "stop_diverged": True, "max_meta_gradient_norm": 1.0})],
    ids=["S1", "first-order-S2-clipped"],
)
def test_compiled_learners_match_the_eager_ones(num_steps, k, options):
    eager, _, _ = run_batched(num_steps, k, 50, **options)
    compiled, _, _ = run_batched(num_steps, k, 50, compile=True, **options)
    assert np.max(np.abs(compiled.histories - eager.histories) / eager.histories) < TOLERANCE
    for lane in range(len(eager)):
        for mine, theirs in zip(compiled.initialization(lane), eager.initialization(lane), strict=True):
            assert relative(mine, theirs) < TOLERANCE


def test_learner_zero_is_the_learner_of_test_py():
    """The first stream and initialization are the assignment's: numpy 1337, torch 42, MAML built first."""
    np.random.seed(1337)
    torch.manual_seed(42)
    sine = SineGenerator(k=10, k_test=40)
    maml = MAML(num_steps=1)
    contract_tasks = [task for _, task in sine.generator(3)]
    numpy_state = np.random.get_state()[1].copy()
    streams = TaskStreams(lane_seeds(2), 10, 40)
    batches = [streams.next_batch() for _ in range(3)]
    (initialization, _) = initializations_from_seeds(lane_seeds(2))
    assert (np.random.get_state()[1] == numpy_state).all(), "the streams must leave np.random alone"
    assert all(torch.equal(a, b) for a, b in zip(initialization, weights_of(maml), strict=True))
    for tasks, contract_task in zip(batches, contract_tasks, strict=True):
        assert all(torch.equal(tasks[part][0, 0], contract_task[part]) for part in range(4))
        assert not torch.equal(tasks[0][1, 0], contract_task[0]), "learner 1 has a stream of its own"


@pytest.mark.parametrize("num_steps, first_order", [(1, False), (2, False), (2, True)])
def test_meta_gradient_of_several_tasks_is_the_mean_of_their_meta_gradients(float64, num_steps, first_order):
    """B tasks per update: the gradient of the mean query loss, against `MAML.adapt` task by task."""
    seeds = lane_seeds(2)
    initializations = initializations_from_seeds(seeds)
    learners = BatchedMAML(initializations, num_steps, first_order=first_order)
    tasks = TaskStreams(seeds, 5, 40).next_batch(tasks_per_update=4)
    meta_gradients = learners.meta_gradients(tasks)
    for lane, initialization in enumerate(initializations):
        maml = maml_from(initialization, num_steps, first_order)
        per_task = []
        for b in range(4):
            train_x, train_y, test_x, test_y = (part[lane, b].double() for part in tasks)
            query_loss = maml.loss_fn(BaseLearner.forward(test_x, maml.adapt(train_x, train_y)), test_y)
            per_task.append(torch.autograd.grad(query_loss, maml.initialization))
        for layer, gradient in enumerate(meta_gradients):
            expected = torch.stack([gradients[layer] for gradients in per_task]).mean(dim=0)
            torch.testing.assert_close(gradient[lane], expected, rtol=1e-10, atol=1e-12)


def snapshot(learners):
    state = (learners.weights, learners.exp_avgs, learners.exp_avg_sqs, learners.steps)
    return [[tensor.clone() for tensor in tensors] for tensors in state], len(learners.losses)


def assert_unchanged(before, learners):
    (tensors_before, updates_before), (tensors_after, updates_after) = before, snapshot(learners)
    assert updates_before == updates_after
    for group_before, group_after in zip(tensors_before, tensors_after, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(group_before, group_after, strict=True))


def test_a_non_finite_learner_is_named_and_no_learner_changes():
    learners, _, _ = run_batched(1, 10, 3)
    tasks = TaskStreams(lane_seeds(3), 10, 40).next_batch()
    tasks[1][1, 0, 2, 0] = float("nan")  # learner 1's train_y
    before = snapshot(learners)
    with pytest.raises(FloatingPointError, match=r"learner\(s\) \[1\].*no learner was updated"):
        learners.train(tasks)
    assert_unchanged(before, learners)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda tasks: tasks[:3], "tasks must have 4 parts"),
        (lambda tasks: [tasks[0][:2], *tasks[1:]], r"train_x must be a tensor of shape \(N=3, B, n, 1\), got \(2, 1"),
        (lambda tasks: [*tasks[:3], tasks[3][:, :, :7]], r"test_x \(3, 1, 40, 1\) and test_y \(3, 1, 7, 1\) differ"),
    ],
)
def test_a_malformed_batch_is_refused_and_no_learner_changes(corrupt, message):
    learners, _, _ = run_batched(1, 10, 3)
    before = snapshot(learners)
    with pytest.raises(ValueError, match=message):
        learners.train(corrupt(TaskStreams(lane_seeds(3), 10, 40).next_batch()))
    assert_unchanged(before, learners)


def test_each_from_scratch_learner_records_what_train_from_scratch_records():
    seeds = lane_seeds(3)
    initializations = initializations_from_seeds(seeds, skip=1)
    learners = BatchedTrainFromScratch(initializations, num_steps=10)
    streams = TaskStreams(seeds, 10, 40)
    batches = [streams.next_batch() for _ in range(20)]
    for tasks in batches:
        learners.train(tasks)
    for lane, initialization in enumerate(initializations):
        scratch = TrainFromScratch(num_steps=10)
        with torch.no_grad():
            for weight, start in zip(scratch.initialization, initialization, strict=True):
                weight.copy_(start)
        for tasks in batches:
            scratch.train([part[lane, 0] for part in tasks])
        np.testing.assert_allclose(learners.histories[lane], scratch.history, rtol=TOLERANCE)


def test_skip_draws_the_from_scratch_learner_of_test_py():
    torch.manual_seed(42)
    MAML(num_steps=1)
    scratch = TrainFromScratch(num_steps=10)
    (initialization,) = initializations_from_seeds(lane_seeds(1), skip=1)
    assert all(torch.equal(a, b) for a, b in zip(initialization, weights_of(scratch), strict=True))


def test_a_diverged_learner_stops_and_the_others_go_on_when_asked():
    seeds = lane_seeds(3)
    learners = BatchedMAML(initializations_from_seeds(seeds), 1, stop_diverged=True)
    reference = BatchedMAML(initializations_from_seeds(seeds), 1)
    streams = TaskStreams(seeds, 10, 40)
    first, poisoned, last = (streams.next_batch() for _ in range(3))
    for learner_set in (learners, reference):
        learner_set.train(first)
    state_after_first = [w[1].clone() for w in learners.weights]
    poisoned[3][1, 0, 0, 0] = float("inf")  # learner 1's test_y
    learners.train(poisoned)
    learners.train(last)
    reference.train([torch.cat([p[:1], q[1:2], p[2:]]) for p, q in zip(poisoned, first, strict=True)])
    assert learners.diverged_at == {1: 1}
    assert learners.active.tolist() == [True, False, True]
    assert all(torch.equal(w[1], before) for w, before in zip(learners.weights, state_after_first, strict=True))
    assert all(step[1].item() == 1 for step in learners.steps)
    assert np.isnan(learners.histories[1, 1:]).all() and np.isfinite(learners.histories[[0, 2]]).all()
    for lane in (0, 2):  # the others took their updates as if nothing had happened
        np.testing.assert_allclose(learners.histories[lane, :2], reference.histories[lane], rtol=1e-6)


def test_the_record_of_losses_keeps_every_update_in_order():
    from maml_sine.batched import _Record

    record = _Record(3)
    rows = [torch.arange(3.0) + update for update in range(2 * _Record.BLOCK + 5)]
    for row in rows:
        record.append(row)
    assert len(record) == len(rows)
    np.testing.assert_array_equal(record.array(), torch.stack(rows).T.double().numpy())
    assert _Record(2).array().shape == (2, 0)


def test_clipped_meta_gradients_are_scaled_to_the_norm_before_adam():
    seeds = lane_seeds(2)
    initializations = initializations_from_seeds(seeds)
    max_norm = 0.5
    learners = BatchedMAML(initializations, 1, max_meta_gradient_norm=max_norm)
    copies = [[w.detach().clone().requires_grad_() for w in initialization] for initialization in initializations]
    optimizers = [torch.optim.Adam(weights, lr=0.001) for weights in copies]
    streams = TaskStreams(seeds, 10, 40)
    for _ in range(3):
        tasks = streams.next_batch()
        meta_gradients = learners.meta_gradients(tasks)
        for lane, (weights, optimizer) in enumerate(zip(copies, optimizers, strict=True)):
            gradient = [g[lane] for g in meta_gradients]
            norm = torch.sqrt(sum((g * g).sum() for g in gradient))
            assert norm > max_norm, "the test needs gradients to clip"
            for weight, g in zip(weights, gradient, strict=True):
                weight.grad = g * (max_norm / norm)
            optimizer.step()
        learners.train(tasks)
        for lane, weights in enumerate(copies):
            for mine, expected in zip(learners.initialization(lane), weights, strict=True):
                torch.testing.assert_close(mine, expected.detach(), rtol=1e-5, atol=1e-7)
