"""Bad input gets an error that names the problem, and the learner is left exactly as it was."""

import copy
import math

import numpy as np
import pytest
import torch

from assignment import MAML
from helpers import sine_task, weights_of
from utils import SineGenerator, TrainFromScratch


def snapshot(learner):
    """Everything a failed call must leave alone: weights, optimizer state, history."""
    optimizer = getattr(learner, "meta_optimizer", None)
    return (
        weights_of(learner),
        copy.deepcopy(optimizer.state_dict()) if optimizer else None,
        list(learner.history),
    )


def assert_same(before, after):
    weights_before, optimizer_before, history_before = before
    weights_after, optimizer_after, history_after = after
    assert all(torch.equal(a, b) for a, b in zip(weights_before, weights_after, strict=True))
    assert history_before == history_after
    if optimizer_before is not None:
        states_before, states_after = optimizer_before["state"], optimizer_after["state"]
        assert states_before.keys() == states_after.keys()
        for key, state in states_before.items():
            assert all(torch.equal(value, states_after[key][name]) for name, value in state.items())


def task32(seed=0, support=10, query=40):
    return sine_task(seed, support, query, dtype=torch.float32)


def replace(task, index, value):
    return [value if i == index else part for i, part in enumerate(task)]


def change(index, how):
    """A corruption of a task: part `index` becomes `how(part)`."""
    return lambda task: replace(task, index, how(task[index]))


def poison(index, value):
    """A corruption of a task: one value of part `index` becomes `value`."""
    return change(index, lambda part: part.index_fill(0, torch.tensor([3]), value))


LEARNERS = {
    "maml-S1": lambda: MAML(num_steps=1),
    "maml-S0": lambda: MAML(num_steps=0),
    "scratch": lambda: TrainFromScratch(num_steps=2),
}


@pytest.fixture(params=list(LEARNERS))
def learner(request):
    """A learner that has already trained on one task, so its optimizer has state to lose."""
    torch.manual_seed(0)
    learner = LEARNERS[request.param]()
    learner.train(task32(seed=1))
    return learner


BAD_TASKS = {
    "not a sequence": (lambda task: 42, TypeError, "task must be a sequence"),
    "a string": (lambda task: "abcd", TypeError, "task must be a sequence"),
    "three parts": (lambda task: task[:3], ValueError, "task must have 4 parts"),
    "five parts": (lambda task: [*task, task[0]], ValueError, "task must have 4 parts"),
    "x of rank 1": (change(0, lambda x: x.reshape(-1)), ValueError, "train_x must have shape (n, 1), got (10,)"),
    "y of width 2": (change(3, lambda y: y.repeat(1, 2)), ValueError, "test_y must have shape (n, 1), got (40, 2)"),
    "x of rank 3": (change(2, lambda x: x[None]), ValueError, "test_x must have shape (n, 1), got (1, 40, 1)"),
    "lengths differ": (change(1, lambda y: y[:9]), ValueError, "train_x has 10 rows but train_y has 9"),
    "empty support": (lambda task: [task[0][:0], task[1][:0], *task[2:]], ValueError, "train_x and train_y are empty"),
    "empty query": (lambda task: [*task[:2], task[2][:0], task[3][:0]], ValueError, "test_x and test_y are empty"),
    "a list": (change(0, lambda x: x.tolist()), TypeError, "train_x must be a torch.Tensor or numpy array"),
    "int tensor": (change(2, lambda x: x.long()), TypeError, "test_x must hold floating-point numbers, got torch.int"),
    "int array": (change(1, lambda y: y.long().numpy()), TypeError, "train_y must hold floating-point .*numpy int"),
    "NaN in train_x": (poison(0, math.nan), ValueError, "NaN or infinite values in train_x"),
    "inf in train_y": (poison(1, math.inf), ValueError, "NaN or infinite values in train_y"),
    "NaN in test_x": (poison(2, math.nan), ValueError, "NaN or infinite values in test_x"),
    "-inf in test_y": (poison(3, -math.inf), ValueError, "NaN or infinite values in test_y"),
    "amplitude 1e30": (
        lambda task: [task[0], task[1] * 1e30, task[2], task[3] * 1e30],
        FloatingPointError,
        "the losses overflow torch.float32",
    ),
}


@pytest.mark.parametrize("case", list(BAD_TASKS))
def test_bad_task_is_refused_and_changes_nothing(learner, case):
    corrupt, error, message = BAD_TASKS[case]
    before = snapshot(learner)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        learner.train(corrupt(task32(seed=2)))
    assert_same(before, snapshot(learner))


def test_a_refused_task_leaves_the_learner_able_to_go_on(learner):
    """After a refused task, training continues exactly as if the task had never been offered."""
    twin = copy.deepcopy(learner)
    with pytest.raises(ValueError):
        learner.train(replace(task32(seed=2), 3, torch.full((40, 1), math.nan)))
    for seed in (3, 4):
        learner.train(task32(seed))
        twin.train(task32(seed))
    assert learner.history == twin.history
    assert all(torch.equal(a, b) for a, b in zip(learner.initialization, twin.initialization, strict=True))


def test_a_non_finite_meta_gradient_is_not_applied():
    """A hook makes the meta-gradient infinite while the loss stays finite (S = 0: no inner gradient)."""
    torch.manual_seed(0)
    maml = MAML(num_steps=0)
    maml.train(task32(seed=1))
    before = snapshot(maml)
    maml.initialization[2].register_hook(lambda gradient: gradient * math.inf)
    with pytest.raises(FloatingPointError, match="the meta-gradient is not finite"):
        maml.train(task32(seed=2))
    assert_same(before, snapshot(maml))
    assert all(weight.grad is None for weight in maml.initialization), "no bad gradient may be left behind"


def twin_learners(name):
    """Two learners with the same initialization."""
    torch.manual_seed(0)
    first = LEARNERS[name]()
    torch.manual_seed(0)
    return first, LEARNERS[name]()


@pytest.mark.parametrize("name", list(LEARNERS))
def test_numpy_arrays_give_the_same_results_as_tensors(name):
    with_tensors, with_arrays = twin_learners(name)
    for seed in range(3):
        with_tensors.train(task32(seed))
        with_arrays.train([part.numpy() for part in task32(seed)])
    assert with_tensors.history == with_arrays.history
    assert all(torch.equal(a, b) for a, b in zip(with_tensors.initialization, with_arrays.initialization))


@pytest.mark.parametrize("name", list(LEARNERS))
def test_float64_tasks_are_cast_to_the_weights_dtype(name):
    from_float32, from_float64 = twin_learners(name)
    for seed in range(3):
        task64 = sine_task(seed, dtype=torch.float64)
        from_float32.train([part.float() for part in task64])
        from_float64.train(task64)
    assert from_float32.history == from_float64.history
    assert all(weight.dtype == torch.float32 for weight in from_float64.initialization)


SUPPORT_CASES = {
    "x of rank 1": BAD_TASKS["x of rank 1"][0],
    "int tensor": change(0, lambda x: x.int()),
    "int array": BAD_TASKS["int array"][0],
    "a list": BAD_TASKS["a list"][0],
    "lengths differ": BAD_TASKS["lengths differ"][0],
    "empty support": BAD_TASKS["empty support"][0],
    "NaN in train_x": BAD_TASKS["NaN in train_x"][0],
    "inf in train_y": BAD_TASKS["inf in train_y"][0],
}


@pytest.mark.parametrize("num_steps", [0, 1])
@pytest.mark.parametrize("case", list(SUPPORT_CASES))
def test_adapt_refuses_a_bad_support_set_as_train_refuses_the_task(num_steps, case):
    """The same error as `train`'s, up to what it says was not done; the learner is left alone."""
    torch.manual_seed(0)
    maml = MAML(num_steps=num_steps)
    task = SUPPORT_CASES[case](task32(seed=2))
    before = snapshot(maml)
    with pytest.raises((TypeError, ValueError)) as refused_by_train:
        maml.train(task)
    with pytest.raises(refused_by_train.type) as refused_by_adapt:
        maml.adapt(task[0], task[1])
    assert str(refused_by_adapt.value).split(";")[0] == str(refused_by_train.value).split(";")[0]
    assert_same(before, snapshot(maml))
    assert all(weight.grad is None for weight in maml.initialization)


def test_adapt_refuses_inner_steps_that_overflow():
    """Amplitude 1e30: the first step leaves huge but finite weights, the second overflows them."""
    torch.manual_seed(0)
    train_x, train_y, *_ = task32(seed=2)
    with pytest.raises(FloatingPointError, match=r"the inner steps overflow torch\.float32; no fast weights"):
        MAML(num_steps=2).adapt(train_x, train_y * 1e30)


@pytest.mark.parametrize("num_steps", [0, 2])
def test_adapt_casts_float64_and_numpy_support_sets_to_the_weights_dtype(num_steps):
    torch.manual_seed(0)
    maml = MAML(num_steps=num_steps)
    task64 = sine_task(3, dtype=torch.float64)
    expected = maml.adapt(task64[0].float(), task64[1].float())
    for support in (task64[:2], [part.numpy() for part in task64[:2]]):
        fast = maml.adapt(*support)
        assert all(f.dtype == torch.float32 and torch.equal(f, e) for f, e in zip(fast, expected, strict=True))


def test_train_checks_a_task_once(monkeypatch):
    """`train` adapts through the unchecked inner loop: each of the four parts is checked once, not again."""
    import assignment

    checked = []
    as_column = assignment._as_column
    monkeypatch.setattr(assignment, "_as_column", lambda name, *args: checked.append(name) or as_column(name, *args))
    MAML(num_steps=1).train(task32(seed=2))
    assert checked == ["train_x", "train_y", "test_x", "test_y"]


COUNTS = [
    (-1, ValueError, "must be >= 0, got -1"),
    (1.5, TypeError, "must be an int, got float 1.5"),
    ("1", TypeError, "must be an int, got str '1'"),
    (True, TypeError, "must be an int, got bool True"),
]


@pytest.mark.parametrize("learner_class", [MAML, TrainFromScratch])
@pytest.mark.parametrize("value, error, message", COUNTS)
def test_bad_num_steps_is_refused_before_any_random_draw(learner_class, value, error, message):
    torch_state = torch.get_rng_state()
    with pytest.raises(error, match=f"num_steps {message}"):
        learner_class(num_steps=value)
    assert torch.equal(torch_state, torch.get_rng_state())


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"first_order": "yes"}, TypeError, "first_order must be True or False, got 'yes'"),
        ({"inner_lr": -0.01}, ValueError, "inner_lr must be finite and >= 0, got -0.01"),
        ({"inner_lr": math.nan}, ValueError, "inner_lr must be finite and >= 0, got nan"),
        ({"meta_lr": "0.001"}, TypeError, "meta_lr must be a number, got str '0.001'"),
        ({"meta_lr": math.inf}, ValueError, "meta_lr must be finite and >= 0, got inf"),
    ],
)
def test_bad_maml_options_are_refused(options, error, message):
    torch_state = torch.get_rng_state()
    with pytest.raises(error, match=message):
        MAML(1, **options)
    assert torch.equal(torch_state, torch.get_rng_state())


@pytest.mark.parametrize("name", ["k", "k_test"])
@pytest.mark.parametrize("value, error, message", [(0, ValueError, "must be >= 1, got 0"), *COUNTS[1:]])
def test_bad_sine_generator_sizes_are_refused(name, value, error, message):
    sizes = {"k": 10, "k_test": 40, name: value}
    with pytest.raises(error, match=f"{name} {message}"):
        SineGenerator(**sizes)


@pytest.mark.parametrize("value, error, message", [(-1, ValueError, "must be >= 0, got -1"), *COUNTS[1:]])
def test_bad_episode_counts_are_refused_before_any_task_is_drawn(value, error, message):
    numpy_state = np.random.get_state()
    with pytest.raises(error, match=f"episodes {message}"):
        SineGenerator(k=10, k_test=40).generator(episodes=value)
    assert all(np.array_equal(a, b) for a, b in zip(numpy_state, np.random.get_state()))
