"""MAML's meta-update checked against a meta-gradient computed independently.

The reference below writes the network with explicit matrix products and takes every
derivative with `torch.func` (pure function transforms), in float64; it shares no code
with `assignment.py` or `utils.py`. Finite differences check the reference itself.
Adam's first step is known in closed form, and Adam's state exposes the gradient it
was fed, so both the gradient and the applied update can be compared exactly.
"""

import pytest
import torch
from torch.func import grad

from assignment import MAML
from helpers import reference_forward, sine_task, weights_of

INNER_LR, META_LR = 0.01, 0.001  # the assignment's rates, restated here rather than imported
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults


def mse(params, x, y):
    return ((reference_forward(params, x) - y) ** 2).mean()


def fast_weights(params, support_x, support_y, steps):
    for _ in range(steps):
        gradients = grad(mse)(params, support_x, support_y)
        params = tuple(p - INNER_LR * g for p, g in zip(params, gradients))
    return params


def query_loss_after_adaptation(params, task, steps):
    support_x, support_y, query_x, query_y = task
    return mse(fast_weights(params, support_x, support_y, steps), query_x, query_y)


def second_order_meta_gradient(params, task, steps):
    """d L_query(phi_S(theta)) / d theta, through every inner step."""
    return grad(query_loss_after_adaptation)(params, task, steps)


def first_order_meta_gradient(params, task, steps):
    """d L_query / d phi evaluated at phi_S: the inner gradients taken as constants."""
    support_x, support_y, query_x, query_y = task
    return grad(mse)(fast_weights(params, support_x, support_y, steps), query_x, query_y)


META_GRADIENT = {False: second_order_meta_gradient, True: first_order_meta_gradient}


def assert_all_close(actual, expected, **tolerance):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, **tolerance)


@pytest.mark.parametrize("steps", [1, 3])
def test_reference_meta_gradient_matches_finite_differences(float64, steps):
    torch.manual_seed(1)
    params = tuple(torch.randn(shape) * 0.3 for shape in [(40, 1), (40,), (40, 40), (40,), (1, 40), (1,)])
    task = sine_task(seed=2)
    direction = tuple(torch.randn_like(p) for p in params)
    h = 1e-6
    shifted = [tuple(p + sign * h * d for p, d in zip(params, direction)) for sign in (1, -1)]
    loss_plus, loss_minus = (query_loss_after_adaptation(p, task, steps) for p in shifted)
    numeric = (loss_plus - loss_minus) / (2 * h)
    analytic = sum((g * d).sum() for g, d in zip(second_order_meta_gradient(params, task, steps), direction))
    torch.testing.assert_close(numeric, analytic, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("first_order", [False, True], ids=["second-order", "first-order"])
@pytest.mark.parametrize("steps", [0, 1, 3])
def test_train_applies_one_adam_step_on_the_meta_gradient(float64, steps, first_order):
    torch.manual_seed(3)
    maml = MAML(num_steps=steps, first_order=first_order)
    theta = weights_of(maml)
    task = sine_task(seed=4)
    expected_gradient = META_GRADIENT[first_order](theta, task, steps)

    maml.train(task)

    adam_state = [maml.meta_optimizer.state[w] for w in maml.initialization]
    fed_gradient = [state["exp_avg"] / (1 - BETA1) for state in adam_state]
    assert_all_close(fed_gradient, expected_gradient, rtol=1e-9, atol=1e-13)
    # Adam's first step, bias-corrected, is lr * g / (|g| + eps) for every coordinate.
    expected_theta = [t - META_LR * g / (g.abs() + EPS) for t, g in zip(theta, expected_gradient)]
    assert_all_close(weights_of(maml), expected_theta, rtol=1e-12, atol=1e-14)
    assert maml.history == [pytest.approx(query_loss_after_adaptation(theta, task, steps).item(), rel=1e-12)]
    assert type(maml.history[0]) is float


@pytest.mark.parametrize("first_order", [False, True], ids=["second-order", "first-order"])
def test_second_update_sees_only_the_second_task_gradient(float64, first_order):
    """A stale or accumulated `.grad` from the first task would show up in Adam's average."""
    torch.manual_seed(5)
    maml = MAML(num_steps=2, first_order=first_order)
    first_task, second_task = sine_task(seed=6), sine_task(seed=7)
    first_gradient = META_GRADIENT[first_order](weights_of(maml), first_task, 2)
    maml.train(first_task)
    second_gradient = META_GRADIENT[first_order](weights_of(maml), second_task, 2)
    maml.train(second_task)

    averages = [maml.meta_optimizer.state[w]["exp_avg"] for w in maml.initialization]
    expected = [BETA1 * (1 - BETA1) * g1 + (1 - BETA1) * g2 for g1, g2 in zip(first_gradient, second_gradient)]
    assert_all_close(averages, expected, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("steps", [1, 3])
def test_first_order_option_changes_the_meta_gradient(float64, steps):
    task = sine_task(seed=9)
    fed_gradients = {}
    for first_order in (False, True):
        torch.manual_seed(8)
        maml = MAML(num_steps=steps, first_order=first_order)
        maml.train(task)
        fed_gradients[first_order] = torch.cat(
            [maml.meta_optimizer.state[w]["exp_avg"].flatten() for w in maml.initialization]
        )
    second, first = fed_gradients[False], fed_gradients[True]
    relative_gap = ((second - first).norm() / second.norm()).item()
    assert relative_gap > 1e-3, f"first- and second-order meta-gradients nearly equal ({relative_gap:.1e})"


def test_zero_steps_trains_the_initialization_on_the_query_set(float64):
    torch.manual_seed(10)
    maml = MAML(num_steps=0)
    theta = weights_of(maml)
    task = sine_task(seed=11)
    _, _, query_x, query_y = task
    maml.train(task)
    direct_gradient = grad(mse)(theta, query_x, query_y)
    fed_gradient = [maml.meta_optimizer.state[w]["exp_avg"] / (1 - BETA1) for w in maml.initialization]
    assert_all_close(fed_gradient, direct_gradient, rtol=1e-9, atol=1e-13)


def test_initialization_stays_a_set_of_leaves(float64):
    maml = MAML(num_steps=2)
    maml.train(sine_task(seed=12))
    assert all(w.is_leaf and w.requires_grad and w.grad_fn is None for w in maml.initialization)


@pytest.mark.parametrize("steps", [0, 1, 3])
def test_adapt_returns_new_fast_weights_that_differentiate_back_to_the_initialization(float64, steps):
    """`adapt`'s fast weights, S = 0 included, are new tensors; a query loss on them has the reference meta-gradient."""
    torch.manual_seed(14)
    maml = MAML(num_steps=steps)
    task = sine_task(seed=15)
    fast = maml.adapt(*task[:2])
    assert all(f is not w and not f.is_leaf for f, w in zip(fast, maml.initialization, strict=True))
    query_loss = maml.loss_fn(reference_forward(fast, task[2]), task[3])
    meta_gradient = torch.autograd.grad(query_loss, maml.initialization)
    assert_all_close(meta_gradient, second_order_meta_gradient(weights_of(maml), task, steps), rtol=1e-9, atol=1e-13)
