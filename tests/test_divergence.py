"""The paper study's additions for a careful reader: the warnings of test-time SGD's divergence (each predictor
against a computation of its own, the threshold rule, Wilson intervals), the authors' code's initialization, the
multi-task regressors' independent starts, records that keep older checkpoints valid, and the cached evaluation."""

import json
import math

import numpy as np
import pytest
import torch

from maml_sine.batched import initializations_from_seeds
from maml_sine.divergence import chosen_threshold, median_alpha_lambda, predictors, warning_record, wilson
from maml_sine.evaluation import DIVERGED, draw_held_out_tasks, scored_sets, top_hessian_eigenvalues
from maml_sine.learners import LEARNERS, Learner, MultiTask
from maml_sine.multitask import regressor_starts
from maml_sine.studies import cached_evaluation
from utils import BaseLearner

SEEDS = [(1337, 42), (1338, 43)]


def support_loss(weights, x, y):
    return torch.mean((BaseLearner.forward(x, weights) - y) ** 2)


@pytest.fixture(scope="module")
def found():
    """Predictors of two random initializations on 12 tasks at a step size large enough for some to diverge."""
    models = initializations_from_seeds(SEEDS)
    tasks = draw_held_out_tasks(12, 10)
    sets = scored_sets(tasks, 5)
    return models, sets, predictors(models, sets, 0.15)


def test_each_predictor_is_what_it_says_for_every_seed_and_task(found):
    models, sets, values = found
    (support_x, support_y), (query_x, query_y) = sets["support"], sets["query"]
    for seed, model in enumerate(models):
        for task in (0, 7):
            x, y = support_x[task], support_y[task]
            weights = [w.detach().clone().requires_grad_() for w in model]
            gradient = torch.autograd.grad(support_loss(weights, x, y), weights)
            length = 0.15 * math.sqrt(sum(float(g.square().sum()) for g in gradient))
            assert values["first_step"][seed, task] == pytest.approx(length, rel=1e-4)
            stepped = [w.detach() - 0.15 * g for w, g in zip(weights, gradient)]
            batched = [w[None] for w in stepped]
            lam = float(top_hessian_eigenvalues(batched, x[None], y[None])[0])
            assert values["lambda_step_1"][seed, task] == pytest.approx(0.15 * lam, rel=1e-3)
            assert values["support_amplitude"][seed, task] == pytest.approx(float(y.abs().max()))
            fast, first = [w.detach() for w in model], -1  # SGD task by task: the step its query MSE passes 100
            for step in range(11):
                with torch.no_grad():
                    query = float(support_loss(fast, query_x[task], query_y[task]))
                if first < 0 and not query <= DIVERGED:
                    first = step
                fast = [w.requires_grad_() for w in fast]
                fast = [
                    w.detach() - 0.15 * g for w, g in zip(fast, torch.autograd.grad(support_loss(fast, x, y), fast))
                ]
            assert values["diverged_at"][seed, task] == first
    assert (values["diverged_at"] >= 0).any() and (values["diverged_at"] < 0).any(), "the fixture needs both kinds"


def test_the_median_alpha_lambda_is_the_median_of_each_seeds_tasks(found):
    models, sets, values = found
    np.testing.assert_allclose(median_alpha_lambda(models, sets, 0.15), np.median(values["lambda_start"], axis=1),
                               rtol=1e-3)  # fmt: skip


def test_the_threshold_separates_best_and_a_warning_counts_pairs_tasks_and_steps_ahead():
    values = np.array([[0.1, 0.5, 3.0, 4.0], [0.2, 2.5, 0.3, 5.0]])
    diverged_at = np.array([[-1, -1, 4, 2], [-1, -1, -1, 6]])
    # At 4.0 both flagged pairs diverged but one diverged pair (3.0) is missed; at 3.0 all three are caught, no alarm.
    assert chosen_threshold(values, diverged_at >= 0) == 3.0
    assert chosen_threshold(values, np.zeros_like(values, dtype=bool)) is None
    record = warning_record(values, diverged_at, 2.4, warns_at=1)
    assert record["diverged_pairs"] == 3 and record["diverged_tasks"] == 2  # tasks 2 and 3
    assert record["caught_pairs"] == 3 and record["steps_ahead"] == [1, 3, 5]
    assert record["false_alarm_share"][0] == pytest.approx(1 / 5)  # 2.5 of the five that did not diverge


def test_wilson_intervals_match_the_formula_and_stay_inside_0_and_1():
    share, low, high = wilson(3, 10)  # Wilson's score interval for 3 of 10: 0.108 to 0.603
    assert (share, round(low, 3), round(high, 3)) == (0.3, 0.108, 0.603)
    assert wilson(0, 50)[1] == 0.0 and wilson(50, 50)[2] == 1.0
    assert all(math.isnan(value) for value in wilson(0, 0))


def test_the_codes_initialization_is_a_truncated_normal_of_std_001_with_zero_biases_and_the_default_unchanged():
    drawn = initializations_from_seeds([(0, seed) for seed in range(20)], initialization="truncated_normal")
    weights = torch.cat([network[2].flatten() for network in drawn])
    assert weights.abs().max() <= 0.02 and 0.0085 < float(weights.std()) < 0.0095  # a normal cut at 2 std: 0.0088
    assert all(float(network[index].abs().max()) == 0 for network in drawn for index in (1, 3, 5))
    assert [w.shape for w in drawn[0]] == [w.shape for w in initializations_from_seeds([(0, 0)])[0]]
    torch.manual_seed(42)
    default = BaseLearner.random_initial_weights()
    assert all(torch.equal(a, b) for a, b in zip(initializations_from_seeds([(1337, 42)])[0], default))


def test_independent_regressors_start_apart_reproducibly_and_shared_ones_from_their_seeds_initialization():
    independent = regressor_starts(MultiTask(start="independent"), SEEDS, range(3))
    again = regressor_starts(MultiTask(start="independent"), SEEDS, range(3))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(independent, again))
    firsts = {float(start[0][0, 0].detach()) for start in independent}
    assert len(firsts) == 6
    shared = regressor_starts(MultiTask(), SEEDS, range(3))
    seeds_own = initializations_from_seeds(SEEDS)
    assert all(torch.equal(start[0], seeds_own[index // 3][0]) for index, start in enumerate(shared))


def test_records_of_the_defaults_are_those_older_checkpoints_were_written_under():
    assert set(LEARNERS["maml"].training()) == {"algorithm", "inputs"}
    assert "start" not in LEARNERS["multitask"].algorithm.record()
    assert LEARNERS["multitask_independent"].algorithm.record()["start"] == "independent"
    assert LEARNERS["maml_alpha0.001_code_init"].training()["initialization"] == "truncated_normal"
    with pytest.raises(ValueError, match="initialization"):
        Learner(None, initialization="xavier")
    with pytest.raises(ValueError, match="start"):
        MultiTask(start="anywhere")


def test_the_cached_evaluation_is_read_back_to_the_bit_and_measured_again_when_its_record_or_file_differs(
    tmp_path, capsys
):  # fmt: skip
    calls = []

    def measure():
        calls.append(1)
        return {"mse": {"a": [0.1 + 0.2, math.inf, math.nan]}}, {"maml": {"5": np.arange(6.0).reshape(2, 3)}}

    path = tmp_path / "paper-evaluation.json"
    first = cached_evaluation(path, {"models": "x", "sections": (("5", 5),)}, measure)
    second = cached_evaluation(path, {"models": "x", "sections": (("5", 5),)}, measure)
    assert len(calls) == 1
    assert second[0]["mse"]["a"][0] == 0.1 + 0.2 and second[0]["mse"]["a"][1] == math.inf
    assert math.isnan(second[0]["mse"]["a"][2])
    np.testing.assert_array_equal(second[1]["maml"]["5"], first[1]["maml"]["5"])
    cached_evaluation(path, {"models": "y"}, measure)
    assert len(calls) == 2 and "other models" in capsys.readouterr().out
    path.write_text(path.read_text()[:40])
    cached_evaluation(path, {"models": "y"}, measure)
    assert len(calls) == 3 and "cannot read" in capsys.readouterr().out
    assert json.loads(path.read_text().replace("NaN", "null").replace("Infinity", "null"))["record"] == {"models": "y"}
    cached_evaluation(path, {"models": "y"}, measure, retrain=True)
    assert len(calls) == 4
