"""ANIL (`maml_sine.anil`) against references written here, apart from the project's functions: an eager autograd
loop (a matmul network, inner SGD steps on the head alone through `torch.autograd.grad(create_graph=True)`) with
torch's own Adam over all six tensors for its updates, float64 finite differences of that loop's query loss for its
meta-gradient, and the same loop without a graph for its test-time steps. It goes through the project's machinery
like any learner: lockstep lanes, checkpoints, the evaluation."""

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
from maml_sine.anil import ANIL
from maml_sine.batched import initializations_from_seeds
from maml_sine.core import NETWORK, network
from maml_sine.evaluation import sgd_steps
from maml_sine.learners import LEARNED, LEARNERS, Learner
from maml_sine.training import lane_seeds

ALPHA = 0.01  # the inner step size (MAML's)
SHAPES = [(40, 1), (40,), (40, 40), (40,), (1, 40), (1,)]


def support_loss(weights, x, y):
    return ((reference_forward(weights, x) - y) ** 2).mean()


def reference_query_loss(weights, task, steps):
    """The query MSE after `steps` SGD steps of the head (W3, b3) alone on the support set; the body stays."""
    support_x, support_y, query_x, query_y = task
    body, head = list(weights[:4]), list(weights[4:])
    for _ in range(steps):
        gradients = torch.autograd.grad(support_loss([*body, *head], support_x, support_y), head, create_graph=True)
        head = [w - ALPHA * g for w, g in zip(head, gradients, strict=True)]
    return ((reference_forward([*body, *head], query_x) - query_y) ** 2).mean()


TOLERANCES = {  # float32, the project's dtype; float64, where no rounding hides a difference
    torch.float32: {"losses": 1e-5, "rtol": 1e-5, "atol": 1e-7},
    torch.float64: {"losses": 1e-12, "rtol": 1e-10, "atol": 1e-12},
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("steps", [1, 2])
def test_lockstep_anil_takes_the_updates_of_an_eager_loop(steps, dtype):
    """Three learners, four updates, each against autograd through a matmul network (inner steps on the head alone)
    and torch.optim.Adam over all six tensors."""
    tolerance = TOLERANCES[dtype]
    learners, initializations, batches = trained_lanes(ANIL(num_steps=steps), dtype=dtype)
    for lane, initialization in enumerate(initializations):
        weights = [w.detach().clone().requires_grad_() for w in initialization]
        lane_tasks = [[part[lane, 0] for part in tasks] for tasks in batches]
        losses = eager_adam_losses(
            weights, lane_tasks, lambda task, weights=weights: reference_query_loss(weights, task, steps)
        )
        np.testing.assert_allclose(learners.histories[lane], losses, rtol=tolerance["losses"])
        params = learners.params(lane)
        assert set(params) == set(NETWORK), "ANIL learns the network and nothing else"
        for name, weight, start in zip(NETWORK, weights, initialization, strict=True):
            assert params[name].dtype == dtype
            torch.testing.assert_close(params[name], weight.detach(), rtol=tolerance["rtol"], atol=tolerance["atol"])
            assert not torch.equal(params[name], start), f"{name} is learned in the outer loop"


def test_the_meta_gradient_matches_float64_finite_differences(float64):
    """The directional derivative of the mean query loss (2 head steps, B = 2) along a random direction in all six
    tensors: the body's gradient comes through the query loss and through the head's inner steps."""
    torch.manual_seed(3)
    weights = [torch.randn(shape) * 0.3 for shape in SHAPES]
    algorithm = ANIL(num_steps=2)
    params = algorithm.start(weights)
    tasks = [torch.stack([part, part + 0.1]) for part in sine_task(seed=4)]  # B = 2 tasks
    gradient, losses = algorithm.meta_gradient(params, tasks)
    direction = {name: torch.randn_like(tensor) for name, tensor in params.items()}

    def loss(shifted):
        per_task = [reference_query_loss(network(shifted), [p[b] for p in tasks], 2) for b in range(2)]
        return torch.stack(per_task)

    torch.testing.assert_close(losses, loss({name: p.clone().requires_grad_() for name, p in params.items()}))
    assert_directional_derivative(lambda point: loss(point).mean(), params, gradient, direction)
    assert all((gradient[name] != 0).any() for name in NETWORK), "every tensor is meta-learned"


def test_at_test_time_it_steps_the_head_alone():
    """`sgd_steps` with ANIL itself: two SGD steps at alpha on the head; the body stays as it started, bit for bit."""
    weights = initializations_from_seeds(lane_seeds(1))[0]
    algorithm = ANIL(num_steps=1)
    params = algorithm.start(weights)
    task = sine_task(seed=5, support=5, dtype=torch.float32)
    support_x, support_y = (part[None] for part in task[:2])
    *_, stepped = sgd_steps(params, support_x, support_y, 2, algorithm)
    body, head = list(weights[:4]), [w.detach().clone() for w in weights[4:]]
    for _ in range(2):
        head = [w.requires_grad_() for w in head]
        gradients = torch.autograd.grad(support_loss([*body, *head], task[0], task[1]), head)
        head = [(w - ALPHA * g).detach() for w, g in zip(head, gradients, strict=True)]
    for mine, start in zip(stepped[:4], body, strict=True):
        assert torch.equal(mine[0], start), "the body does not move at test time"
    for mine, expected, start in zip(stepped[4:], head, weights[4:], strict=True):
        torch.testing.assert_close(mine[0], expected, rtol=1e-5, atol=1e-7)
        assert not torch.equal(mine[0], start), "the head moves"


def test_a_checkpoint_round_trips_it_and_is_not_taken_for_maml(tmp_path):
    _, loaded = round_trip_checkpoint("anil", tmp_path)
    assert isinstance(loaded.algorithm, ANIL) and set(loaded.state.params) == set(NETWORK)


def test_the_evaluation_trains_and_scores_it_adapting_its_head(tmp_path, monkeypatch):
    evaluated_by_the_script(tmp_path, monkeypatch, ("maml", "anil"))
    assert LEARNERS["anil"] == Learner(ANIL(num_steps=1), test_lr=LEARNED)


@pytest.mark.slow
def test_compiled_anil_lanes_take_the_eager_updates(capfd):
    compiled_and_eager_lanes(ANIL(1), updates=20, capfd=capfd)
