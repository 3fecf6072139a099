"""CAVIA (`maml_sine.cavia`) against references written here, apart from the project's functions: a matmul network
of 1 + 5 inputs that takes a context vector c (zero for every task) as extra input columns beside x, inner SGD steps
on c alone at step size 1.0 through `torch.autograd.grad(create_graph=True)`, and torch's own Adam over the six
network tensors (the first layer whole, 40 x 6) for its updates; float64 finite differences of that loop's query
loss for its meta-gradient; the same loop without a graph for its test-time steps. The project folds W_c c into the
first layer's bias, so its fast weights are a 1-input network: the references check that the fold is exact. It
goes through the project's machinery like any learner: lockstep lanes, checkpoints, the evaluation."""

import dataclasses

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
from maml_sine.cavia import CAVIA, CONTEXT
from maml_sine.checkpoints import CheckpointError, load
from maml_sine.core import NETWORK, network
from maml_sine.evaluation import sgd_steps
from maml_sine.learners import ASSIGNMENT, LEARNED, LEARNERS, Learner
from maml_sine.training import lane_seeds
from utils import BaseLearner

ALPHA = 1.0  # the inner step size of CAVIA's code
CONTEXT_SIZE = 5
INPUTS = 1 + CONTEXT_SIZE  # the network's: x and the context
SHAPES = [(40, INPUTS), (40,), (40, 40), (40,), (1, 40), (1,)]


def with_context(x, context):
    """x (m, 1) with the context (CONTEXT_SIZE,) as extra input columns: (m, 1 + CONTEXT_SIZE)."""
    return torch.cat([x, context.expand(len(x), -1)], dim=1)


def support_loss(weights, context, x, y):
    return ((reference_forward(weights, with_context(x, context)) - y) ** 2).mean()


def adapted_context(weights, x, y, steps, create_graph=True):
    """The context after `steps` SGD steps from zero on the support set (x, y); the network stays."""
    context = x.new_zeros(CONTEXT_SIZE, requires_grad=True)
    for _ in range(steps):
        (gradient,) = torch.autograd.grad(support_loss(weights, context, x, y), context, create_graph=create_graph)
        context = context - ALPHA * gradient
        if not create_graph:
            context = context.detach().requires_grad_()
    return context.detach() if not create_graph else context


def reference_query_loss(weights, task, steps):
    """The query MSE of the network with the context adapted on the support set, differentiable in the weights."""
    support_x, support_y, query_x, query_y = task
    context = adapted_context(weights, support_x, support_y, steps)
    return ((reference_forward(weights, with_context(query_x, context)) - query_y) ** 2).mean()


def whole(params):
    """The reference's six tensors from the project's params: the first layer's columns put back together."""
    return [torch.cat([params["w1"], params[CONTEXT]], dim=-1), *network(params)[1:]]


# In float32, the project's dtype, an entry of W_c whose meta-gradient is of the order of Adam's eps (1e-8) takes a
# step lr * g / (|g| + eps) that float32 rounding of g moves by up to ~1% of a step: seen with 2 inner steps, lane 2,
# W_c[38, 0] (first gradient -5.2e-9) 9e-6 apart after four updates, the float64 truth between the two. In float64
# the lanes and the loop agree to 1e-15.
TOLERANCES = {
    torch.float32: {"losses": 1e-5, "rtol": 1e-5, "atol": 1e-7, "context_atol": 3e-5},
    torch.float64: {"losses": 1e-12, "rtol": 1e-10, "atol": 1e-12, "context_atol": 1e-12},
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("steps", [1, 2])
def test_lockstep_cavia_takes_the_updates_of_an_eager_loop(steps, dtype):
    """Three learners, four updates, each against autograd through a matmul network of x and the context (inner
    steps on the context alone) and torch.optim.Adam over the six network tensors, the first layer whole."""
    tolerance = TOLERANCES[dtype]
    assert LEARNERS["cavia"].network_inputs == INPUTS
    learners, initializations, batches = trained_lanes(CAVIA(num_steps=steps), inputs=INPUTS, dtype=dtype)
    for lane, initialization in enumerate(initializations):
        weights = [w.detach().clone().requires_grad_() for w in initialization]
        lane_tasks = [[part[lane, 0] for part in tasks] for tasks in batches]
        losses = eager_adam_losses(
            weights, lane_tasks, lambda task, weights=weights: reference_query_loss(weights, task, steps)
        )
        np.testing.assert_allclose(learners.histories[lane], losses, rtol=tolerance["losses"])
        params = learners.params(lane)
        assert set(params) == {*NETWORK, CONTEXT} and params[CONTEXT].dtype == dtype
        close = {"rtol": tolerance["rtol"], "atol": tolerance["atol"]}
        first_layer = weights[0].detach()
        torch.testing.assert_close(params["w1"], first_layer[:, :1], **close)
        context_close = {**close, "atol": tolerance["context_atol"]}
        torch.testing.assert_close(params[CONTEXT], first_layer[:, 1:], **context_close)
        for name, weight in zip(NETWORK[1:], weights[1:], strict=True):
            torch.testing.assert_close(params[name], weight.detach(), **close)
        assert not torch.equal(params[CONTEXT], initialization[0][:, 1:]), "W_c is learned in the outer loop"


def test_the_meta_gradient_matches_float64_finite_differences(float64):
    """The directional derivative of the mean query loss (2 context steps, B = 2) along a random direction in all
    the params: W_c's gradient comes through the context's steps alone (the context starts at zero)."""
    torch.manual_seed(3)
    weights = [torch.randn(shape) * 0.3 for shape in SHAPES]
    algorithm = CAVIA(num_steps=2)
    params = algorithm.start(weights)
    assert params["w1"].shape == (40, 1) and params[CONTEXT].shape == (40, CONTEXT_SIZE)
    tasks = [torch.stack([part, part + 0.1]) for part in sine_task(seed=4)]  # B = 2 tasks
    gradient, losses = algorithm.meta_gradient(params, tasks)
    direction = {name: torch.randn_like(tensor) for name, tensor in params.items()}

    def loss(shifted):
        per_task = [reference_query_loss(whole(shifted), [p[b] for p in tasks], 2) for b in range(2)]
        return torch.stack(per_task)

    torch.testing.assert_close(losses, loss({name: p.clone().requires_grad_() for name, p in params.items()}))
    assert_directional_derivative(lambda point: loss(point).mean(), params, gradient, direction)
    assert all((gradient[name] != 0).any() for name in params), "every tensor is meta-learned, W_c included"


def test_the_fold_of_the_context_into_the_bias_is_exact(float64):
    """Each of two inner steps (the second from the first's folded bias, its context at zero again) predicts as the
    reference network with inputs [x, c] and the context adapted from zero, c nonzero; only b1 moves."""
    torch.manual_seed(6)
    weights = [torch.randn(shape) * 0.3 for shape in SHAPES]
    algorithm = CAVIA(num_steps=2)
    params = algorithm.start(weights)
    support_x, support_y, query_x, _ = sine_task(seed=7)
    fast = params
    for index in range(2):
        fast = algorithm.inner_step(fast, support_x, support_y, index)
        context = adapted_context(weights, support_x, support_y, index + 1, create_graph=False)
        assert context.abs().min() > 1e-6, "a context step that moves every entry"
        for x in (support_x, query_x):
            expected = reference_forward(weights, with_context(x, context))
            torch.testing.assert_close(reference_forward(network(fast), x), expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(fast["b1"], weights[1] + weights[0][:, 1:] @ context, rtol=1e-10, atol=1e-12)
        for name in (*NETWORK, CONTEXT):
            assert (name == "b1") != (fast[name] is params[name]), f"{name}: only the bias moves"
    assert algorithm.adapt(params, support_x, support_y)[1].equal(fast["b1"])


def test_a_context_of_no_numbers_is_refused():
    with pytest.raises(ValueError, match="context_size"):
        CAVIA(num_steps=1, context_size=0)
    with pytest.raises(ValueError, match="context_size"):
        CAVIA(num_steps=1, context_size=2.0)


def test_at_test_time_it_adapts_the_context_it_learned_to_adapt():
    """`sgd_steps` with CAVIA itself: two context steps at 1.0; the returned 1-input network predicts as the reference
    network of x and the adapted context, and only its bias differs from the start's."""
    weights = initializations_from_seeds(lane_seeds(1), inputs=INPUTS)[0]
    algorithm = CAVIA(num_steps=1)
    params = algorithm.start(weights)
    task = sine_task(seed=5, support=5, dtype=torch.float32)
    support_x, support_y = (part[None] for part in task[:2])
    *_, stepped = sgd_steps(params, support_x, support_y, 2, algorithm)
    stepped = [tensor[0] for tensor in stepped]
    context = adapted_context(weights, task[0], task[1], 2, create_graph=False)
    assert context.abs().max() > 1e-3, "the context moves"
    for x in (task[0], task[2]):
        expected = reference_forward(weights, with_context(x, context))
        torch.testing.assert_close(BaseLearner.forward(x, stepped), expected, rtol=1e-5, atol=1e-6)
    for name, mine, start in zip(NETWORK, stepped, network(params), strict=True):
        assert (name == "b1") != torch.equal(mine, start), f"{name}: only the bias moves"


def test_a_checkpoint_round_trips_its_context_weights_and_is_not_taken_for_maml(tmp_path):
    _, loaded = round_trip_checkpoint("cavia", tmp_path)
    assert isinstance(loaded.algorithm, CAVIA) and set(loaded.state.params) == {*NETWORK, CONTEXT}
    record = {"learner": LEARNERS["anil"].training(), "protocol": dataclasses.replace(ASSIGNMENT, updates=2).record(),
              "seeds": [list(seed) for seed in lane_seeds(2)]}  # fmt: skip
    with pytest.raises(CheckpointError, match="'kind': 'cavia'"):
        load(tmp_path / "cavia.pt", record)


def test_the_evaluation_trains_and_scores_it_adapting_its_context(tmp_path, monkeypatch):
    report = evaluated_by_the_script(tmp_path, monkeypatch, ("maml", "cavia"))
    assert report["learners"]["cavia"]["learner"]["algorithm"]["context_size"] == CONTEXT_SIZE
    assert LEARNERS["cavia"] == Learner(CAVIA(num_steps=1), test_lr=LEARNED)


@pytest.mark.slow
def test_compiled_cavia_lanes_take_the_eager_updates(capfd):
    compiled_and_eager_lanes(CAVIA(1), updates=20, inputs=INPUTS, capfd=capfd)
