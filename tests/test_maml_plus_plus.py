"""MAML++ (`maml_sine.maml_plus_plus`) against references written here: the authors' annealing of the multi-step
loss weights as a formula, an eager autograd loop with torch's own Adam over the weights and the per-layer per-step
step sizes for its updates, float64 finite differences for its meta-gradient, and a per-task loop for its test-time
steps (past step S, the last step's sizes). It goes through the project's machinery like any learner: lockstep lanes,
compiled lanes, the evaluation (beside Reptile)."""

import dataclasses

import numpy as np
import pytest
import torch

from helpers import (
    assert_directional_derivative,
    compiled_and_eager_lanes,
    evaluated_by_the_script,
    reference_forward,
    sine_task,
)
from maml_sine.batched import BatchedMAML, initializations_from_seeds
from maml_sine.core import NETWORK, network
from maml_sine.evaluation import sgd_steps
from maml_sine.learners import LEARNED, LEARNERS, Learner, paper_protocol
from maml_sine.maml_plus_plus import MAMLPlusPlus
from maml_sine.training import lane_seeds

ALPHA = 0.01  # where every step size starts (MAML's inner_lr)
SHAPES = [(40, 1), (40,), (40, 40), (40,), (1, 40), (1,)]


def step_size_name(name: str) -> str:
    return f"lr_{name}"


def reference_loss_weights(steps: int, progress: float, until: float) -> list[float]:
    """The authors' per-step loss importance (MAML++'s `get_per_step_loss_importance_vector`), with the epoch's
    share of the annealing as `progress / until`: every step 1/S at first; the steps before the last lose
    1/S of their weight over the annealing, down to a floor of 0.03/S, and the last takes what they lose; after
    it, the last step's loss alone."""
    if progress >= until:
        return [0.0] * (steps - 1) + [1.0]
    non_final = max((1 - progress / until) / steps, 0.03 / steps)
    return [non_final] * (steps - 1) + [1 - (steps - 1) * non_final]


def reference_query_loss(weights, step_sizes, task, loss_weights):
    """The multi-step loss: S steps w <- w - alpha_{w,s} * grad (step s with each tensor's step size [s]), the query
    MSE after each, weighted; differentiable in the weights and the step sizes."""
    support_x, support_y, query_x, query_y = task
    fast, total = list(weights), 0.0
    for step, weight in enumerate(loss_weights):
        support_loss = ((reference_forward(fast, support_x) - support_y) ** 2).mean()
        gradients = torch.autograd.grad(support_loss, fast, create_graph=True)
        fast = [w - alpha[step] * g for w, alpha, g in zip(fast, step_sizes, gradients, strict=True)]
        total = total + weight * ((reference_forward(fast, query_x) - query_y) ** 2).mean()
    return total


@pytest.mark.parametrize("steps", [1, 2, 3, 5])
@pytest.mark.parametrize("until", [0.1, 0.5, 1.0])
def test_the_loss_weights_follow_the_authors_annealing(steps, until):
    algorithm = MAMLPlusPlus(num_steps=steps, multi_step_loss_until=until)
    # the start, inside the annealing, past its floor (p / until > 0.97), at its end and after
    for share in [0.0, 0.1, 0.37, 0.5, 0.9, 0.985, 1.0, 1.5, 10.0]:
        progress = min(share * until, 1.0)
        weights = algorithm.loss_weights(progress)
        assert weights.shape == (steps,)
        expected = reference_loss_weights(steps, progress, until)
        np.testing.assert_allclose(weights.double().numpy(), expected, rtol=1e-6, atol=1e-7, err_msg=f"{progress=}")
        assert weights.sum().item() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(algorithm.loss_weights(0.0).numpy(), [1 / steps] * steps, rtol=1e-6)
    np.testing.assert_array_equal(algorithm.loss_weights(torch.tensor(1.0)).numpy(), [0.0] * (steps - 1) + [1.0])
    if steps > 1:  # at the floor: each earlier step 0.03/S
        np.testing.assert_allclose(algorithm.loss_weights(0.99 * until)[:-1].numpy(), 0.03 / steps, rtol=1e-5)


def test_it_starts_every_step_size_at_inner_lr_and_the_registry_holds_five_steps():
    weights = initializations_from_seeds(lane_seeds(1))[0]
    params = MAMLPlusPlus(num_steps=3, inner_lr=0.02).start(weights)
    assert set(params) == {*NETWORK, *map(step_size_name, NETWORK)}
    for name in NETWORK:
        assert torch.equal(params[step_size_name(name)], torch.full((3,), 0.02))
    assert LEARNERS["maml_plus_plus"] == Learner(
        MAMLPlusPlus(num_steps=5, max_meta_gradient_norm=100.0), test_lr=LEARNED
    )
    assert MAMLPlusPlus(num_steps=5).multi_step_loss_until == 0.1 and MAMLPlusPlus(num_steps=5).inner_lr == ALPHA
    for bad in [{"num_steps": 0}, {"num_steps": 1, "multi_step_loss_until": 0.0}]:
        with pytest.raises(ValueError, match="MAML\\+\\+"):
            MAMLPlusPlus(**bad)


@pytest.mark.parametrize("steps", [2, 3])
def test_lockstep_maml_plus_plus_takes_the_updates_of_an_eager_loop(steps):
    """Three learners, five updates of four tasks each, annealed over half of the run (so the loss weights change
    from update to update, and the last two take the last step's loss alone), each against autograd through a
    matmul network and torch.optim.Adam over the weights and the step sizes."""
    updates, until = 5, 0.5
    schedule = [reference_loss_weights(steps, t / updates, until) for t in range(updates)]
    assert len({tuple(weights) for weights in schedule}) == 4, "the weights change across the updates"
    seeds = lane_seeds(3)
    initializations = initializations_from_seeds(seeds)
    algorithm = MAMLPlusPlus(num_steps=steps, multi_step_loss_until=until)
    learners = BatchedMAML(initializations, algorithm, updates=updates)
    streams = dataclasses.replace(paper_protocol(5, updates), tasks_per_update=4).streams(seeds)
    batches = [streams.next_batch() for _ in range(updates)]
    for tasks in batches:
        learners.train(tasks)
    for lane, initialization in enumerate(initializations):
        weights = [w.detach().clone().requires_grad_() for w in initialization]
        step_sizes = [torch.full((steps,), ALPHA, requires_grad=True) for _ in weights]
        optimizer = torch.optim.Adam([*weights, *step_sizes], lr=0.001)
        losses = []
        for tasks, loss_weights in zip(batches, schedule, strict=True):
            per_task = [
                reference_query_loss(weights, step_sizes, [part[lane, b] for part in tasks], loss_weights)
                for b in range(tasks[0].shape[1])
            ]
            loss = torch.stack(per_task).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        np.testing.assert_allclose(learners.histories[lane], losses, rtol=1e-5)
        params = learners.params(lane)
        for name, weight, alpha in zip(NETWORK, weights, step_sizes, strict=True):
            torch.testing.assert_close(params[name], weight.detach(), rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(params[step_size_name(name)], alpha.detach(), rtol=1e-5, atol=1e-7)
        assert all((params[step_size_name(name)] != ALPHA).all() for name in NETWORK), "every step size is learned"


def test_the_meta_gradient_matches_float64_finite_differences(float64):
    """The directional derivative of the mean multi-step loss along a random direction in (weights, step sizes),
    at a progress inside the annealing (every step's loss weighted), with three steps of their own step sizes."""
    torch.manual_seed(3)
    steps, progress = 3, 0.04
    weights = [torch.randn(shape) * 0.3 for shape in SHAPES]
    algorithm = MAMLPlusPlus(num_steps=steps, multi_step_loss_until=0.1)
    # each step its own step sizes, about inner_lr (larger ones make the loss curve too much for h below)
    step_sizes = {step_size_name(name): ALPHA * (0.5 + torch.rand(steps)) for name in NETWORK}
    params = {**algorithm.start(weights), **step_sizes}
    tasks = [torch.stack([part, part + 0.1]) for part in sine_task(seed=4)]  # B = 2 tasks
    gradient, losses = algorithm.meta_gradient(params, tasks, progress)
    loss_weights = reference_loss_weights(steps, progress, 0.1)
    assert 0 < loss_weights[0] < loss_weights[-1] < 1, "inside the annealing"
    direction = {name: torch.randn_like(tensor) for name, tensor in params.items()}

    def loss(shifted):
        """The B tasks' multi-step losses at `shifted`."""
        step_sizes = [shifted[step_size_name(name)] for name in NETWORK]
        per_task = [
            reference_query_loss(network(shifted), step_sizes, [p[b] for p in tasks], loss_weights) for b in range(2)
        ]
        return torch.stack(per_task)

    assert_directional_derivative(lambda point: loss(point).mean(), params, gradient, direction)
    at_params = loss({name: p.clone().requires_grad_() for name, p in params.items()})
    torch.testing.assert_close(losses, at_params.detach(), rtol=1e-6, atol=1e-9)
    for name in NETWORK:
        assert (gradient[step_size_name(name)] != 0).all(), f"every step's size of {name} is learned"


def test_at_test_time_it_steps_with_its_step_sizes_and_the_last_ones_past_step_s():
    steps, test_steps = 2, 4
    weights = initializations_from_seeds(lane_seeds(1))[0]
    algorithm = MAMLPlusPlus(num_steps=steps)
    torch.manual_seed(6)
    params = {**algorithm.start(weights), **{step_size_name(name): torch.rand(steps) * 0.02 for name in NETWORK}}
    task = sine_task(seed=5, support=5, dtype=torch.float32)
    stepped = list(sgd_steps(params, task[0][None], task[1][None], test_steps, algorithm))
    assert len(stepped) == test_steps + 1
    fast = [w.detach().clone().requires_grad_() for w in weights]
    for index, mine in enumerate(stepped[1:]):
        loss = ((reference_forward(fast, task[0]) - task[1]) ** 2).mean()
        gradients = torch.autograd.grad(loss, fast)
        step = min(index, steps - 1)
        fast = [
            (w - params[step_size_name(name)][step] * g).detach().requires_grad_()
            for name, w, g in zip(NETWORK, fast, gradients, strict=True)
        ]
        for weight, expected in zip(mine, fast, strict=True):
            torch.testing.assert_close(weight[0], expected.detach(), rtol=1e-5, atol=1e-7)


def test_the_evaluation_trains_and_scores_maml_plus_plus_and_reptile_as_they_learned(tmp_path, monkeypatch):
    evaluated_by_the_script(tmp_path, monkeypatch, ("maml_plus_plus", "reptile"))


@pytest.mark.slow
def test_compiled_maml_plus_plus_lanes_take_the_eager_updates():
    algorithm = dataclasses.replace(LEARNERS["maml_plus_plus"].algorithm, multi_step_loss_until=0.5)
    compiled_and_eager_lanes(algorithm, updates=4)
