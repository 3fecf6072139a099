"""The compiled fast path computes what the readable `train` computes, on the same state."""

import copy
import math

import numpy as np
import pytest
import torch

import maml_sine.compiled
from assignment import MAML
from helpers import adam_state, sine_task
from maml_sine.compiled import CompiledMAML, CompiledTrainFromScratch, compiled_trainer
from utils import TrainFromScratch

EPISODES = 200
TOLERANCE = 1e-5  # relative, per episode: what "the same numbers" means here


def tasks(count, support=10, seed=0):
    return [sine_task(seed + i, support, 40, dtype=torch.float32) for i in range(count)]


def relative_deviation(history, reference):
    history, reference = np.array(history), np.array(reference)
    return float(np.max(np.abs(history - reference) / np.abs(reference)))


def twins(make):
    torch.manual_seed(0)
    first = make()
    torch.manual_seed(0)
    return first, make()


@pytest.mark.parametrize(
    "options, support",
    [({"num_steps": 1}, 10), ({"num_steps": 2}, 5), ({"num_steps": 1, "first_order": True}, 10)],
    ids=["S1-K10", "S2-K5", "first-order"],
)
def test_compiled_maml_matches_the_readable_train(options, support):
    readable, compiled = twins(lambda: MAML(**options))
    fast = CompiledMAML(compiled)
    for task in tasks(EPISODES, support):
        readable.train(task)
        fast(task)
    assert relative_deviation(compiled.history, readable.history) < TOLERANCE
    for weight, reference in zip(compiled.initialization, readable.initialization, strict=True):
        torch.testing.assert_close(weight, reference, rtol=TOLERANCE, atol=TOLERANCE)
    for state, reference in zip(adam_state(compiled), adam_state(readable), strict=True):
        assert state["step"].item() == reference["step"].item() == EPISODES
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(state[key], reference[key], rtol=1e-4, atol=1e-9)


def test_paths_can_be_switched_mid_run():
    """The learner holds the state: compiled, then eager, then compiled again continues one run."""
    readable, switched = twins(lambda: MAML(num_steps=1))
    fast = CompiledMAML(switched)
    for episode, task in enumerate(tasks(150)):
        readable.train(task)
        (switched.train if 50 <= episode < 100 else fast)(task)
    assert relative_deviation(switched.history, readable.history) < TOLERANCE
    assert all(state["step"].item() == 150 for state in adam_state(switched))


def test_compiled_from_scratch_matches_the_readable_train():
    readable, compiled = twins(lambda: TrainFromScratch(num_steps=10))
    fast = CompiledTrainFromScratch(compiled)
    for task in tasks(50):
        readable.train(task)
        fast(task)
    assert relative_deviation(compiled.history, readable.history) < TOLERANCE


@pytest.mark.parametrize(
    "corrupt, error, message",
    [
        (lambda task: [*task[:3], task[3].reshape(-1)], ValueError, r"test_y must have shape \(n, 1\)"),
        (lambda task: [*task[:3], torch.full_like(task[3], math.nan)], ValueError, "NaN or infinite values in test_y"),
        (lambda task: [torch.full_like(task[0], math.inf), *task[1:]], ValueError, "NaN or infinite values in train_x"),
        (lambda task: [task[0], task[1] * 1e30, task[2], task[3] * 1e30], FloatingPointError, "overflow"),
    ],
    ids=["shape", "NaN-query", "inf-support", "overflow"],
)
@pytest.mark.parametrize("num_steps", [0, 1])
def test_compiled_path_refuses_bad_tasks_and_changes_nothing(corrupt, error, message, num_steps):
    torch.manual_seed(0)
    maml = MAML(num_steps=num_steps)
    fast = CompiledMAML(maml)
    fast(tasks(1)[0])
    before = copy.deepcopy((maml.initialization, maml.meta_optimizer.state_dict(), maml.history))
    with pytest.raises(error, match=message):
        fast(corrupt(tasks(1, seed=5)[0]))
    weights, optimizer, history = before
    assert all(torch.equal(a, b) for a, b in zip(weights, maml.initialization, strict=True))
    assert history == maml.history
    for key, state in optimizer["state"].items():
        now = maml.meta_optimizer.state_dict()["state"][key]
        assert all(torch.equal(value, now[name]) for name, value in state.items())


def test_falls_back_to_the_eager_train_with_one_line(monkeypatch, capsys):
    def broken_compile(function, **options):
        def fail(*args, **kwargs):
            raise RuntimeError("no C++ compiler here")

        return fail

    monkeypatch.setattr(maml_sine.compiled.torch, "compile", broken_compile)
    readable, fallen_back = twins(lambda: MAML(num_steps=1))
    train = compiled_trainer(fallen_back)
    for task in tasks(5):
        readable.train(task)
        train(task)
    assert fallen_back.history == readable.history
    assert capsys.readouterr().err.count("compiled fast path unavailable (RuntimeError); using the eager train") == 1
