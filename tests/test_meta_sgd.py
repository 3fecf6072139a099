"""Meta-SGD (`maml_sine.meta_sgd`) against references written here: an eager autograd loop with torch's own Adam
for its updates, float64 finite differences for its meta-gradient, and a per-task loop for its test-time steps.
It goes through the project's machinery like any learner: lockstep lanes, checkpoints, the evaluation."""

import numpy as np
import pytest
import torch

from helpers import (
    assert_directional_derivative,
    compiled_and_eager_lanes,
    eager_adam_losses,
    evaluated_by_the_script,
    reference_forward,
    round_trip_checkpoint,
    sine_task,
    trained_lanes,
)
from maml_sine.batched import initializations_from_seeds
from maml_sine.core import NETWORK, network
from maml_sine.evaluation import sgd_steps
from maml_sine.learners import LEARNED, LEARNERS, Learner
from maml_sine.meta_sgd import STEP_SIZE, MetaSGD
from maml_sine.training import lane_seeds

ALPHA = 0.01  # where the step sizes start


def reference_query_loss(weights, step_sizes, task, steps):
    """The query MSE after `steps` steps w <- w - alpha * grad (elementwise), differentiable in both."""
    support_x, support_y, query_x, query_y = task
    fast = list(weights)
    for _ in range(steps):
        support_loss = ((reference_forward(fast, support_x) - support_y) ** 2).mean()
        gradients = torch.autograd.grad(support_loss, fast, create_graph=True)
        fast = [w - alpha * g for w, alpha, g in zip(fast, step_sizes, gradients)]
    return ((reference_forward(fast, query_x) - query_y) ** 2).mean()


@pytest.mark.parametrize("steps", [1, 2])
def test_lockstep_meta_sgd_takes_the_updates_of_an_eager_loop(steps):
    """Three learners, four updates, each against autograd through a matmul network and torch.optim.Adam over
    the weights and the step sizes."""
    learners, initializations, batches = trained_lanes(MetaSGD(num_steps=steps))
    for lane, initialization in enumerate(initializations):
        weights = [w.detach().clone().requires_grad_() for w in initialization]
        step_sizes = [torch.full_like(w, ALPHA, requires_grad=True) for w in weights]
        lane_tasks = [[part[lane, 0] for part in tasks] for tasks in batches]
        learned = [*weights, *step_sizes]
        losses = eager_adam_losses(
            learned,
            lane_tasks,
            lambda task, learned=learned: reference_query_loss(learned[:6], learned[6:], task, steps),
        )
        np.testing.assert_allclose(learners.histories[lane], losses, rtol=1e-5)
        params = learners.params(lane)
        for name, weight, alpha in zip(NETWORK, weights, step_sizes, strict=True):
            torch.testing.assert_close(params[name], weight.detach(), rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(params[STEP_SIZE + name], alpha.detach(), rtol=1e-5, atol=1e-7)


def test_the_meta_gradient_matches_float64_finite_differences(float64):
    """The directional derivative of the mean query loss along a random direction in (weights, step sizes)."""
    torch.manual_seed(3)
    weights = [torch.randn(shape) * 0.3 for shape in [(40, 1), (40,), (40, 40), (40,), (1, 40), (1,)]]
    algorithm = MetaSGD(num_steps=2)
    params = {name: tensor * (1 + torch.rand_like(tensor)) for name, tensor in algorithm.start(weights).items()}
    tasks = [torch.stack([part, part + 0.1]) for part in sine_task(seed=4)]  # B = 2 tasks
    gradient, _ = algorithm.meta_gradient(params, tasks)
    direction = {name: torch.randn_like(tensor) for name, tensor in params.items()}

    def loss(shifted):
        step_sizes = [shifted[STEP_SIZE + name] for name in NETWORK]
        per_task = [reference_query_loss(network(shifted), step_sizes, [p[b] for p in tasks], 2) for b in range(2)]
        return torch.stack(per_task).mean()

    assert_directional_derivative(loss, params, gradient, direction)
    assert any((gradient[STEP_SIZE + name] != 0).any() for name in NETWORK), "the step sizes are learned"


def test_at_test_time_it_steps_with_the_step_sizes_it_learned():
    weights = initializations_from_seeds(lane_seeds(1))[0]
    params = MetaSGD(num_steps=1).start(weights)
    params = {**params, **{STEP_SIZE + name: torch.rand_like(params[name]) * 0.02 for name in NETWORK}}
    task = sine_task(seed=5, support=5, dtype=torch.float32)
    support_x, support_y = (part[None] for part in task[:2])
    *_, stepped = sgd_steps(params, support_x, support_y, 2, MetaSGD(num_steps=1))
    fast = [w.detach().clone().requires_grad_() for w in weights]
    for _ in range(2):
        loss = ((reference_forward(fast, task[0]) - task[1]) ** 2).mean()
        gradients = torch.autograd.grad(loss, fast)
        fast = [
            (w - params[STEP_SIZE + name] * g).detach().requires_grad_() for name, w, g in zip(NETWORK, fast, gradients)
        ]
    for mine, expected in zip(stepped, fast, strict=True):
        torch.testing.assert_close(mine[0], expected.detach(), rtol=1e-5, atol=1e-7)


def test_a_checkpoint_round_trips_its_step_sizes_and_is_not_taken_for_maml(tmp_path):
    _, loaded = round_trip_checkpoint("meta_sgd", tmp_path)
    assert set(loaded.state.params) == {*NETWORK, *(STEP_SIZE + name for name in NETWORK)}


def test_the_evaluation_trains_and_scores_it_with_its_own_step_sizes(tmp_path, monkeypatch):
    evaluated_by_the_script(tmp_path, monkeypatch, ("maml", "meta_sgd"))
    assert LEARNERS["meta_sgd"] == Learner(MetaSGD(num_steps=1), test_lr=LEARNED)


@pytest.mark.slow
def test_compiled_meta_sgd_lanes_take_the_eager_updates():
    compiled_and_eager_lanes(MetaSGD(1), updates=20)
