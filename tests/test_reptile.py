"""Reptile (`maml_sine.reptile`) against references written here: a plain per-task SGD loop through a matmul network
for its lockstep updates (theta <- theta + epsilon_t * mean(phi - theta), epsilon annealed linearly to 0 over the run),
a one-step case computed by hand, and SGD at its inner step size for its test-time steps. It goes through the
project's machinery like any learner: lockstep lanes, checkpoints (with Adam's moments unused), the evaluation."""

import numpy as np
import pytest
import torch

from helpers import compiled_and_eager_lanes, reference_forward, round_trip_checkpoint, sine_task
from maml_sine.batched import BatchedMAML, initializations_from_seeds
from maml_sine.core import NETWORK
from maml_sine.evaluation import sgd_steps
from maml_sine.learners import LEARNED, LEARNERS, Learner, paper_protocol
from maml_sine.reptile import Reptile
from maml_sine.training import lane_seeds

K, INNER_LR, EPSILON = 5, 0.02, 0.1  # the registry's Reptile: 5 SGD steps at 0.02, epsilon 0.1 at the start


def reference_phi(theta, x, y, steps, lr):
    """`steps` plain SGD steps at `lr` from `theta` on the points (x, y), and the MSE of the result on them."""
    fast = [w.detach().clone().requires_grad_() for w in theta]
    for _ in range(steps):
        loss = ((reference_forward(fast, x) - y) ** 2).mean()
        gradients = torch.autograd.grad(loss, fast)
        fast = [(w - lr * g).detach().requires_grad_() for w, g in zip(fast, gradients, strict=True)]
    with torch.no_grad():
        return [w.detach() for w in fast], ((reference_forward(fast, x) - y) ** 2).mean().item()


def reference_update(theta, tasks, steps, lr, epsilon):
    """One Reptile update over B tasks (each part (B, n, 1)): phi per task on all its points (support and query),
    theta + epsilon * mean(phi - theta); and the mean over the tasks of phi's MSE on its points."""
    moves, losses = [], []
    for support_x, support_y, query_x, query_y in zip(*tasks, strict=True):
        x, y = torch.cat([support_x, query_x]), torch.cat([support_y, query_y])
        phi, loss = reference_phi(theta, x, y, steps, lr)
        moves.append([p - t for p, t in zip(phi, theta, strict=True)])
        losses.append(loss)
    mean_moves = [torch.stack(move).mean(dim=0) for move in zip(*moves, strict=True)]
    return [t + epsilon * m for t, m in zip(theta, mean_moves, strict=True)], float(np.mean(losses))


@pytest.mark.parametrize("updates", [6, None])
def test_lockstep_reptile_takes_the_updates_of_a_plain_loop(updates):
    """Three learners, six updates of 25 tasks each (the paper's protocol at K = 5), each against a plain loop:
    epsilon_t = 0.1 (1 - t / updates) when the run's length is given, 0.1 throughout when it is not."""
    seeds = lane_seeds(3)
    initializations = initializations_from_seeds(seeds)
    learners = BatchedMAML(initializations, Reptile(num_steps=K, inner_lr=INNER_LR, meta_lr=EPSILON), updates=updates)
    streams = paper_protocol(5, 6).streams(seeds)
    batches = [streams.next_batch() for _ in range(6)]
    for tasks in batches:
        learners.train(tasks)
    for lane, initialization in enumerate(initializations):
        theta = [w.detach().clone() for w in initialization]
        losses = []
        for t, tasks in enumerate(batches):
            epsilon = EPSILON * (1 - t / updates) if updates else EPSILON
            theta, loss = reference_update(theta, [part[lane] for part in tasks], K, INNER_LR, epsilon)
            losses.append(loss)
        np.testing.assert_allclose(learners.histories[lane], losses, rtol=1e-5)
        params = learners.params(lane)
        assert set(params) == set(NETWORK), "Reptile learns the network alone"
        for name, weight in zip(NETWORK, theta, strict=True):
            torch.testing.assert_close(params[name], weight, rtol=1e-5, atol=1e-7)


def test_first_order_reptile_is_refused():
    with pytest.raises(ValueError, match="first_order"):
        Reptile(num_steps=5, first_order=True)


def test_one_step_on_one_task_moves_theta_towards_phi_by_hand():
    """A network whose output is b3 + w3 . h2 with h2 = 1 everywhere (W1 = W2 = W3 = 0, b1 = b2 = 1, b3 = 0): on
    points y = 1, 2 (support) and 3 (query), one SGD step at alpha = 0.02 from theta gives phi with b3 and every
    entry of W3 at 2 alpha mean(y) = 0.08 (mean over all three points: the query points are trained on too), the
    rest unchanged (W3 = 0 blocks every other gradient); theta moves by epsilon = 0.1 of phi - theta, so b3 and W3
    become 0.008. phi predicts 41 * 0.08 = 3.28 everywhere, so its MSE is ((2.28)^2 + (1.28)^2 + (0.28)^2) / 3."""
    zeros = [torch.zeros(shape) for shape in [(40, 1), (40,), (40, 40), (40,), (1, 40), (1,)]]
    theta = [zeros[0], torch.ones(40), zeros[2], torch.ones(40), zeros[4], zeros[5]]
    learners = BatchedMAML([theta], Reptile(num_steps=1, inner_lr=0.02, meta_lr=0.1), updates=10)
    support_x, support_y = torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [2.0]])
    query_x, query_y = torch.tensor([[2.0]]), torch.tensor([[3.0]])
    learners.train([part[None, None] for part in (support_x, support_y, query_x, query_y)])  # (N=1, B=1, n, 1)
    params = learners.params(0)
    expected = {**dict(zip(NETWORK, theta)), "w3": torch.full((1, 40), 0.008), "b3": torch.tensor([0.008])}
    for name in NETWORK:
        torch.testing.assert_close(params[name], expected[name], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(learners.histories[0], [(2.28**2 + 1.28**2 + 0.28**2) / 3], rtol=1e-5)  # float32


def test_at_test_time_it_steps_with_sgd_at_its_inner_step_size():
    algorithm = Reptile(num_steps=K, inner_lr=INNER_LR, meta_lr=EPSILON)
    weights = initializations_from_seeds(lane_seeds(1))[0]
    task = sine_task(seed=5, support=5, dtype=torch.float32)
    stepped = list(sgd_steps(weights, task[0][None], task[1][None], 2, algorithm))
    fast = weights
    for mine in stepped[1:]:
        fast, _ = reference_phi(fast, task[0], task[1], 1, INNER_LR)
        for weight, expected in zip(mine, fast, strict=True):
            torch.testing.assert_close(weight[0], expected, rtol=1e-5, atol=1e-7)


def test_a_checkpoint_round_trips_it_with_adam_unused_and_is_not_taken_for_maml(tmp_path):
    """Saved and loaded as it was; its Adam moments stay zero (its outer step is not Adam) and its step count
    counts its updates, as a checkpoint's check of the updates it holds requires."""
    updates = 3
    _, loaded = round_trip_checkpoint("reptile", tmp_path, updates)
    assert loaded.algorithm == Reptile(num_steps=5, inner_lr=0.02, meta_lr=0.1)
    saved = torch.load(tmp_path / "reptile.pt", weights_only=True)
    for state in (saved, loaded.state._asdict()):
        for moments in ("exp_avgs", "exp_avg_sqs"):
            assert set(state[moments]) == set(NETWORK)
            assert all(not moment.any() for moment in state[moments].values()), f"{moments} stay zero"
        assert state["step"].tolist() == [updates] * 2


def test_the_registry_holds_the_papers_sine_demo():
    assert LEARNERS["reptile"] == Learner(Reptile(num_steps=5, inner_lr=0.02, meta_lr=0.1), test_lr=LEARNED)


@pytest.mark.slow
def test_compiled_reptile_lanes_take_the_eager_updates():
    _, fast = compiled_and_eager_lanes(LEARNERS["reptile"].algorithm, updates=4)
    assert not fast.state.exp_avgs["w1"].any() and fast.state.step.tolist() == [4, 4]
