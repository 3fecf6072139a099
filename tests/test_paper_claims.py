"""The pieces of the paper study's claims, each against an independent computation: weight decay towards an
anchor against torch's Adam, the one-task stream, the multi-task baselines' regressors and their running mean,
the checkpoint of averaged networks, the held-out tasks' extra points, the tuned step size against SGD task by
task, the Hessian's top eigenvalue against the dense Hessian, and the committed sweep."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.func import hessian

from helpers import ROOT, reference_forward
from maml_sine.batched import BatchedMAML, initializations_from_seeds
from maml_sine.checkpoints import CheckpointError, load_networks, save_networks
from maml_sine.core import Algorithm
from maml_sine.evaluation import (
    MAX_STEPS,
    curvature_along_sgd,
    draw_held_out_tasks,
    scored_sets,
    sgd_steps,
    top_hessian_eigenvalues,
    tuned_test_lr,
)
from maml_sine.learners import LEARNERS, MultiTask
from maml_sine.multitask import averaged_regressors, regressor_seeds
from maml_sine.training import lane_seeds

PAPER = ROOT / "docs" / "paper_protocol"


# --- Weight decay towards an anchor --------------------------------------------------------------------------------


@pytest.mark.parametrize("anchored", [False, True], ids=["towards zero", "towards an anchor"])
def test_weight_decay_is_torch_adams_on_the_distance_to_the_anchor(float64, anchored):
    """Three updates of the pretrained network (no inner step) with weight decay: torch.optim.Adam with
    `weight_decay` (towards zero), or plain Adam on the loss plus weight_decay / 2 |w - anchor|^2."""
    weight_decay, seeds = 0.05, lane_seeds(2)
    initializations = initializations_from_seeds(seeds)
    anchors = [[torch.randn(w.shape, generator=torch.Generator().manual_seed(i)) for i, w in enumerate(init)]
               for init in initializations] if anchored else None  # fmt: skip
    learners = BatchedMAML(initializations, Algorithm(num_steps=0, weight_decay=weight_decay), anchors=anchors)
    streams = MultiTask().protocol().streams(regressor_seeds(seeds, range(1)))
    batches = [streams.next_batch() for _ in range(3)]
    for batch in batches:
        learners.train(batch)
    for lane, initialization in enumerate(initializations):
        weights = [w.detach().clone().requires_grad_() for w in initialization]
        optimizer = torch.optim.Adam(weights, lr=1e-3, weight_decay=0 if anchored else weight_decay)
        for batch in batches:
            x, y = batch[2][lane, 0].double(), batch[3][lane, 0].double()
            loss = ((reference_forward(weights, x) - y) ** 2).mean()
            if anchored:
                loss = loss + weight_decay / 2 * sum(((w - a) ** 2).sum() for w, a in zip(weights, anchors[lane]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        for mine, expected in zip(learners.weights, weights):
            torch.testing.assert_close(mine[lane], expected.detach(), rtol=1e-9, atol=1e-12)


def test_bad_weight_decays_and_anchors_are_refused():
    for weight_decay in (-0.1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="weight_decay must be zero or positive and finite"):
            Algorithm(num_steps=0, weight_decay=weight_decay)
    initializations = initializations_from_seeds(lane_seeds(2))
    with pytest.raises(ValueError, match="anchors must be shaped as the initializations"):
        BatchedMAML(initializations, Algorithm(num_steps=0), anchors=initializations[:1])
    with pytest.raises(ValueError, match="a weight decay goes with a regularizer"):
        MultiTask("l2")
    with pytest.raises(ValueError, match="regularizer must be one of"):
        MultiTask("l1", 0.1)


# --- The one-task stream and the multi-task baselines ---------------------------------------------------------------


def test_each_regressor_sees_new_points_of_its_own_task_at_every_update():
    seeds = regressor_seeds(lane_seeds(2), range(3))
    assert seeds[:2] == [([1337, 0], 42), ([1337, 1], 42)] and seeds[3] == ([1338, 0], 43)
    streams = MultiTask(points=7).protocol().streams(seeds)
    batches = [streams.next_batch() for _ in range(3)]
    for train_x, train_y, test_x, test_y in batches:
        assert train_x.shape == (6, 1, 1, 1) and test_x.shape == (6, 1, 7, 1)
        for x, y in ((train_x, train_y), (test_x, test_y)):
            expected = streams.amplitudes[:, None, None, None] * np.sin(
                x.double().numpy() + streams.phases[:, None, None, None]
            )
            np.testing.assert_allclose(y.numpy(), expected, atol=1e-5)
    assert not torch.equal(batches[0][2], batches[1][2]), "new points at every update"
    assert len(set(streams.amplitudes)) == 6, "a task of its own for each regressor"
    again = MultiTask(points=7).protocol().streams(seeds[3:4])
    assert again.amplitudes[0] == streams.amplitudes[3], "a regressor's task does not depend on the others"


def test_the_average_is_of_regressors_trained_apart_each_pulled_towards_the_mean_of_the_earlier_group():
    """Two seeds, two groups of two regressors under "running_mean": the first group unregularized, the second
    pulled towards the mean of the first; each seed's model is the mean of its four. Rebuilt here with one
    BatchedMAML per regressor."""
    spec = MultiTask("running_mean", 0.5, regressors=4, at_once=2, points=5, max_updates=6, check_every=3)
    seeds = lane_seeds(2)
    averages, errors = averaged_regressors(spec, seeds, "test")
    assert errors.shape == (2, 4)
    for lane, initialization in enumerate(initializations_from_seeds(seeds)):
        trained = []
        for regressor in range(4):
            first_group = regressor < 2
            anchor = None if first_group else [torch.stack(ws).mean(dim=0) for ws in zip(*trained[:2])]
            algorithm = Algorithm(num_steps=0, meta_lr=spec.adam_lr, weight_decay=0.0 if first_group else 0.5)
            alone = BatchedMAML([initialization], algorithm, anchors=None if anchor is None else [anchor])
            stream = spec.protocol().streams(regressor_seeds([seeds[lane]], range(regressor, regressor + 1)))
            for _ in range(spec.max_updates):
                alone.train(stream.next_batch())
            trained.append(alone.initialization(0))
        for mine, expected in zip(averages[lane], (torch.stack(ws).mean(dim=0) for ws in zip(*trained))):
            torch.testing.assert_close(mine, expected, rtol=1e-5, atol=1e-6)


def test_a_regressor_stops_once_it_fits_its_task():
    """With a target every regressor meets at once, each stops at the first measurement: the others train on."""
    spec = MultiTask(regressors=2, at_once=2, max_updates=50, check_every=4, target_mse=1e9)
    _, errors = averaged_regressors(spec, lane_seeds(1), "test")
    stopped = replace(spec, max_updates=4, target_mse=0.0)
    averages_4, _ = averaged_regressors(stopped, lane_seeds(1), "test")
    averages_50, _ = averaged_regressors(spec, lane_seeds(1), "test")
    for a, b in zip(averages_4[0], averages_50[0]):
        torch.testing.assert_close(a, b)
    assert (errors < 1e9).all()


def test_averaged_networks_are_saved_with_their_record_and_refused_under_another(tmp_path):
    networks = initializations_from_seeds(lane_seeds(2))
    record = {"learner": LEARNERS["multitask"].training(), "seeds": lane_seeds(2)}
    save_networks(networks, torch.arange(6.0).reshape(2, 3), record, tmp_path / "average.pt")
    loaded, scores = load_networks(tmp_path / "average.pt", record)
    assert all(torch.equal(a, b) for mine, theirs in zip(loaded, networks) for a, b in zip(mine, theirs))
    assert torch.equal(scores, torch.arange(6.0).reshape(2, 3))
    with pytest.raises(CheckpointError, match=r"holds .*'learner'.*expected"):
        load_networks(tmp_path / "average.pt", {**record, "learner": LEARNERS["multitask_l2"].training()})


# --- Held-out tasks, tuning and curvature ---------------------------------------------------------------------------


def test_twenty_points_per_task_keep_the_first_ten_and_the_tasks():
    ten, twenty = draw_held_out_tasks(30), draw_held_out_tasks(30, max_support=20)
    assert torch.equal(ten.support_x, twenty.support_x[:, :10]) and torch.equal(ten.query_x, twenty.query_x[:, :10])
    assert np.array_equal(ten.amplitudes, twenty.amplitudes) and twenty.support_x.shape == (30, 20, 1)
    assert len(torch.unique(twenty.support_x)) == twenty.support_x.numel(), "new points, not repeated ones"


def test_the_tuned_step_size_is_the_best_mean_of_sgd_task_by_task_and_a_diverging_one_is_never_chosen():
    tasks = draw_held_out_tasks(4)
    models = initializations_from_seeds(lane_seeds(2))
    grid = (0.001, 0.01, 5.0)
    chosen, scores = tuned_test_lr(models, tasks, 5, grid=grid)
    assert scores["5"] is None, "SGD at 5.0 diverges"
    support_x, support_y = (t.double() for t in scored_sets(tasks, 5)["support"])
    query_x, query_y = (t.double() for t in scored_sets(tasks, 5)["query"])
    expected = {}
    for lr in grid[:2]:
        errors = np.zeros((len(models), len(tasks), MAX_STEPS))
        for seed, model in enumerate(models):
            for task in range(len(tasks)):  # each task adapts a copy of its own
                weights = [w.detach().double() for w in model]
                for step in range(MAX_STEPS):
                    weights = [w.requires_grad_() for w in weights]
                    loss = ((reference_forward(weights, support_x[task]) - support_y[task]) ** 2).mean()
                    weights = [(w - lr * g).detach() for w, g in zip(weights, torch.autograd.grad(loss, weights))]
                    query_loss = ((reference_forward(weights, query_x[task]) - query_y[task]) ** 2).mean()
                    errors[seed, task, step] = query_loss.item()
        expected[f"{lr:g}"] = errors.mean()
        assert scores[f"{lr:g}"] == pytest.approx(expected[f"{lr:g}"], rel=1e-4)
    assert chosen == float(min(expected, key=expected.get))
    with pytest.raises(FloatingPointError, match="diverged on some task at every step size"):
        tuned_test_lr(models, tasks, 5, grid=(5.0,))


def test_the_top_eigenvalue_is_the_dense_hessians_largest_in_magnitude(float64):
    tasks = draw_held_out_tasks(3)
    model = initializations_from_seeds(lane_seeds(1))[0]
    x, y = (t.double() for t in scored_sets(tasks, 5)["support"])
    batched = [w.detach().expand(3, *w.shape) for w in model]
    estimates = top_hessian_eigenvalues(batched, x, y, iterations=100)
    shapes = [w.shape for w in model]

    def loss(flat, task):
        weights, start = [], 0
        for shape in shapes:
            weights.append(flat[start : start + shape.numel()].view(shape))
            start += shape.numel()
        return ((reference_forward(weights, x[task]) - y[task]) ** 2).mean()

    flat = torch.cat([w.detach().flatten() for w in model])
    for task in range(3):
        eigenvalues = torch.linalg.eigvalsh(hessian(loss)(flat, task))
        largest = eigenvalues[eigenvalues.abs().argmax()]
        assert estimates[task].item() == pytest.approx(largest.item(), rel=1e-3)


def test_curvature_along_sgd_starts_at_the_initialization_and_follows_the_steps():
    tasks = draw_held_out_tasks(5)
    model = initializations_from_seeds(lane_seeds(1))[0]
    sets = scored_sets(tasks, 5)
    along = curvature_along_sgd([model, model], sets, lr=0.05, steps=3)
    assert along.shape == (2, 3, 5)
    # The same model twice: power iteration from other random vectors, 20 iterations, agrees to about 1%.
    np.testing.assert_allclose(along[0], along[1], rtol=1e-2)
    along = along[0]
    batched = [w.detach().expand(5, *w.shape) for w in model]
    np.testing.assert_allclose(along[0], top_hessian_eigenvalues(batched, *sets["support"]).numpy(), rtol=1e-2)
    after_two = list(sgd_steps(model, *sets["support"], steps=2, lr=0.05))[2]
    np.testing.assert_allclose(along[2], top_hessian_eigenvalues(after_two, *sets["support"]).numpy(), rtol=1e-2)
    assert not np.allclose(along[0], along[2]), "the curvature moves with the weights"


# --- The committed results ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "_independent"])
def test_the_registry_takes_the_weight_decays_the_committed_sweeps_chose(suffix):
    sweep = json.loads((PAPER / f"weight_decay_sweep{suffix}.json").read_text())
    chosen = {regularizer: result["chosen"] for regularizer, result in sweep["regularizers"].items()}
    assert chosen == {"l2": LEARNERS[f"multitask_l2{suffix}"].algorithm.weight_decay,
                      "running_mean": LEARNERS[f"multitask_running_mean{suffix}"].algorithm.weight_decay}  # fmt: skip
    assert sweep["spec"] == replace(LEARNERS[f"multitask{suffix}"].algorithm).record()
