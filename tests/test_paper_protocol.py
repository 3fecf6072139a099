"""maml_sine.paper and `scripts/evaluate.py --protocol paper`: the paper's tasks, the oracle, the meta-gradient
of 25 tasks and the scores against independent computations, and a short run end to end."""

import json
import re
import sys

import numpy as np
import pytest
import torch

from helpers import ROOT, interrupt_after_progress, is_png, reference_forward, run_python
from maml_sine import paper
from maml_sine.batched import BatchedMAML, initializations_from_seeds
from maml_sine.evaluation import MAX_STEPS, draw_held_out_tasks, summarize
from maml_sine.training import lane_seeds

SCRIPT = ROOT / "scripts" / "evaluate.py"
UPDATES, SEEDS, TASKS = 300, 2, 40
LEARNERS = ("maml", "pretrained", "oracle")


def test_tasks_are_sines_of_their_amplitude_and_phase_with_k_support_and_k_query_points():
    train_x, train_y, test_x, test_y = paper.PaperTaskStreams([5, 6], k=5, oracle=True).next_batch()
    for part, width in zip((train_x, train_y, test_x, test_y), (3, 1, 3, 1)):
        assert part.shape == (2, paper.TASKS_PER_UPDATE, 5, width)
    for x, y in ((train_x, train_y), (test_x, test_y)):
        x, y = x.double().numpy(), y.double().numpy()
        np.testing.assert_allclose(y[..., 0], x[..., 1] * np.sin(x[..., 0] + x[..., 2]), atol=1e-5)
    points = torch.cat([train_x, test_x], dim=2)
    for column, (low, high) in enumerate([(-5, 5), (0.1, 5), (0, np.pi)]):  # x, amplitude, phase
        assert ((points[..., column] >= low) & (points[..., column] < high)).all()
    assert (points[..., 1:] == points[:, :, :1, 1:]).all(), "one amplitude and phase per task"
    assert len(torch.unique(points[..., 0])) == points[..., 0].numel(), "the query points are new points"


def test_every_learner_of_a_seed_sees_the_same_tasks_whatever_the_other_seeds(monkeypatch):
    monkeypatch.setattr(paper, "DRAWN_AT_ONCE", 3)  # several draws into numpy in a few updates
    both = paper.PaperTaskStreams([5, 6], k=10)
    alone = paper.PaperTaskStreams([6], k=10)
    oracle = paper.PaperTaskStreams([5, 6], k=10, oracle=True)
    batches = []
    for _ in range(7):
        plain, single, given = both.next_batch(), alone.next_batch(), oracle.next_batch()
        assert all(torch.equal(mine[1:], its) for mine, its in zip(plain, single))
        assert torch.equal(plain[0], given[0][..., :1]) and torch.equal(plain[3], given[3])
        batches.append(plain[0])
    assert len({batch.sum().item() for batch in batches}) == len(batches), "every update has new tasks"


def test_oracle_starts_from_torch_linear_layers_of_its_seed_and_leaves_the_rng_alone():
    before = torch.random.get_rng_state()
    initializations = paper.oracle_initializations(lane_seeds(2))
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(43)
    first_layer = torch.nn.Linear(3, 40)
    assert torch.equal(initializations[1][0], first_layer.weight.detach())
    assert [tuple(w.shape) for w in initializations[1]] == [(40, 3), (40,), (40, 40), (40,), (1, 40), (1,)]
    assert all(not w.any() for w in initializations[1][1::2]), "zero biases"


def autograd_meta_gradient(initialization, tasks, lane, num_steps, inner_lr=0.01):
    """The mean over B tasks of the query-loss gradient, with autograd and a matmul network, in float64."""
    weights = [w.double().requires_grad_() for w in initialization]
    losses = []
    for b in range(tasks[0].shape[1]):
        train_x, train_y, test_x, test_y = (part[lane, b].double() for part in tasks)
        fast = weights
        for _ in range(num_steps):
            support_loss = ((reference_forward(fast, train_x) - train_y) ** 2).mean()
            gradients = torch.autograd.grad(support_loss, fast, create_graph=True)
            fast = [w - inner_lr * g for w, g in zip(fast, gradients)]
        losses.append(((reference_forward(fast, test_x) - test_y) ** 2).mean())
    return torch.autograd.grad(torch.stack(losses).mean(), weights)


@pytest.mark.parametrize("name", LEARNERS)
def test_meta_gradient_of_25_tasks_matches_autograd(float64, name):
    learner = paper.LEARNERS[name]
    seeds = lane_seeds(2)
    initializations = paper.oracle_initializations(seeds) if learner.oracle else initializations_from_seeds(seeds)
    tasks = paper.PaperTaskStreams([1, 2], k=5, oracle=learner.oracle).next_batch()
    meta_gradients = BatchedMAML(initializations, learner.num_steps).meta_gradients(tasks)
    for lane, initialization in enumerate(initializations):
        expected = autograd_meta_gradient(initialization, tasks, lane, learner.num_steps)
        for mine, reference in zip(meta_gradients, expected, strict=True):
            torch.testing.assert_close(mine[lane], reference, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("oracle", [False, True], ids=["network", "oracle"])
def test_scores_match_a_per_task_loop_of_sgd_on_k_points(oracle):
    """Every seed's mean MSE after each step, on the K new points and on the grid, against autograd task by task."""
    tasks, k = draw_held_out_tasks(3), 5
    seeds = lane_seeds(2)
    initializations = paper.oracle_initializations(seeds) if oracle else initializations_from_seeds(seeds)
    results = paper.evaluate_paper(initializations, tasks, k, oracle)
    grid_x, grid_y = tasks.grid()
    every_seed = {"query": [], "grid": []}
    for seed, initialization in enumerate(initializations):
        errors = {"query": np.zeros((MAX_STEPS + 1, 3)), "grid": np.zeros((MAX_STEPS + 1, 3))}
        for task in range(3):

            def inputs(x, task=task):
                if not oracle:
                    return x.double()
                a, p = tasks.amplitudes[task], tasks.phases[task]
                return torch.cat([x.double(), torch.full_like(x, a).double(), torch.full_like(x, p).double()], dim=1)

            support_x, support_y = (t[task] for t in tasks.support(k))
            query_x, query_y = (t[task] for t in tasks.query(k))
            weights = [w.double().requires_grad_() for w in initialization]
            for step in range(MAX_STEPS + 1):
                for score, x, y in (("query", query_x, query_y), ("grid", grid_x, grid_y[task])):
                    prediction = reference_forward(weights, inputs(x))
                    errors[score][step, task] = ((prediction - y.double()) ** 2).mean().item()
                support_loss = ((reference_forward(weights, inputs(support_x)) - support_y.double()) ** 2).mean()
                gradients = torch.autograd.grad(support_loss, weights)
                weights = [(w - 0.01 * g).detach().requires_grad_() for w, g in zip(weights, gradients)]
        for score in ("query", "grid"):
            np.testing.assert_allclose(results[score]["per_seed"][seed], errors[score].mean(axis=1), rtol=1e-4)
            every_seed[score].append(errors[score])
    for score, errors in every_seed.items():
        every_task = np.concatenate(errors, axis=1)
        np.testing.assert_allclose(results[score]["median"], np.median(every_task, axis=1), rtol=1e-4)
        assert results[score]["diverged"] == list((every_task > 100).any(axis=0).mean() * np.ones(MAX_STEPS + 1))


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # the mean and std of infinite MSEs
def test_summary_counts_a_task_diverged_from_the_first_step_above_100_and_ranks_an_overflow_worst():
    # Two seeds of 3 tasks, 3 steps. Task MSEs by step: exactly 100 is not diverged; above 100 is, and stays
    # so when its MSE falls back (seed 0, task 1); NaN is diverged and ranks above every number.
    seed_0 = np.array([[0.1, 50.0, 100.0], [0.2, 150.0, 100.0], [0.3, 20.0, 100.0]])
    seed_1 = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, np.nan], [1.0, 101.0, np.inf]])
    summary = summarize([seed_0, seed_1])
    assert summary["diverged"] == [0.0, 2 / 6, 3 / 6]
    assert summary["median"][0] == pytest.approx(np.median([0.1, 50, 100, 1, 2, 3]))
    assert summary["median"][1] == pytest.approx(np.median([0.2, 150, 100, 1, 2, np.inf]))
    assert summary["median"][2] == pytest.approx(np.median([0.3, 20, 100, 1, 101, np.inf]))
    assert summary["mean"][0] == pytest.approx((np.mean(seed_0[0]) + np.mean(seed_1[0])) / 2)
    assert summary["per_seed"][0][1] == pytest.approx(np.mean(seed_0[1]))


def test_an_overflowing_initialization_diverges_on_every_task_at_every_step():
    tasks, k = draw_held_out_tasks(4), 5
    healthy = initializations_from_seeds(lane_seeds(2))
    assert paper.evaluate_paper(healthy, tasks, k, oracle=False)["query"]["diverged"] == [0.0] * (MAX_STEPS + 1)
    offset = [[*weights[:-1], torch.full((1,), 1e30)] for weights in healthy]  # predicts 1e30: MSE overflows
    with np.errstate(invalid="ignore"):
        results = paper.evaluate_paper(offset, tasks, k, oracle=False)["query"]
    assert results["diverged"] == [1.0] * (MAX_STEPS + 1)
    assert results["median"] == [float("inf")] * (MAX_STEPS + 1)


def test_query_points_are_new_points_of_the_same_tasks_and_the_first_tasks_do_not_depend_on_the_count():
    few, many = draw_held_out_tasks(5), draw_held_out_tasks(50)
    assert torch.equal(few.query_x, many.query_x[:5]) and torch.equal(few.support_x, many.support_x[:5])
    assert not torch.isin(many.query_x, many.support_x).any()
    query_x, query_y = many.query(10)
    expected = many.amplitudes[:, None, None] * np.sin(query_x.double().numpy() + many.phases[:, None, None])
    np.testing.assert_allclose(query_y.numpy(), expected, atol=1e-6)


@pytest.fixture(scope="module")
def paper_run(evaluate, tmp_path_factory):
    """A short run of the paper's protocol: its arguments, out dir and report."""
    out_dir, checkpoint_dir = tmp_path_factory.mktemp("paper"), tmp_path_factory.mktemp("paper_checkpoints")
    arguments = ["--protocol", "paper", "--updates", str(UPDATES), "--seeds", str(SEEDS), "--tasks", str(TASKS)]
    arguments += ["--out-dir", str(out_dir), "--checkpoint-dir", str(checkpoint_dir)]
    return arguments, out_dir, evaluate.main(arguments)


def test_short_run_writes_every_result_and_figure(paper_run):
    _, out_dir, report = paper_run
    for figure in ("mse_vs_steps.png", "mse_vs_steps_grid.png", "fits.png"):
        assert is_png(out_dir / figure), figure
    assert json.loads((out_dir / "results.json").read_text()) == report
    table = (out_dir / "results.md").read_text()
    assert table.count("## K = 10\n") == 2 and "K new points per task" in table and "100 x in [-5, 5]" in table
    assert table.count("fine-tuning the models trained at K = 10") == 2
    assert report["protocol"]["training"]["tasks_per_meta_update"] == 25
    assert report["protocol"]["training"]["meta_updates"] == UPDATES


def test_short_run_has_every_learner_k_score_and_step_with_intervals_over_seeds(paper_run):
    _, _, report = paper_run
    for score in ("query", "grid"):
        assert set(report["mse"][score]) == set(LEARNERS)
        for name in LEARNERS:
            for k in ("5", "10", paper.K10_MODEL_AT_K5):
                result = report["mse"][score][name][k]
                assert len(result["median"]) == len(result["diverged"]) == MAX_STEPS + 1
                assert len(result["mean"]) == MAX_STEPS + 1 and np.shape(result["per_seed"]) == (SEEDS, MAX_STEPS + 1)
                assert np.isfinite(result["mean"]).all() and (np.array(result["seed_ci95"]) > 0).all()
                np.testing.assert_allclose(result["mean"], np.mean(result["per_seed"], axis=0))
    for name in LEARNERS:
        for k in ("K=5", "K=10"):
            record = report["learners"][name][k]
            assert record["updates"] == UPDATES and record["seeds"] == [[1337, 42], [1338, 43]]


def test_the_oracle_uses_the_amplitude_and_phase_it_is_given(paper_run):
    """After 300 updates the oracle already fits new tasks far better than the network without them."""
    _, _, report = paper_run
    for k in ("5", "10"):
        oracle, pretrained = (
            np.array(report["mse"]["query"][name][k]["per_seed"])[:, 0] for name in ("oracle", "pretrained")
        )
        assert (oracle < 0.6 * pretrained).all(), (oracle, pretrained)


def test_a_second_run_loads_every_learner_and_reproduces_the_numbers(evaluate, paper_run):
    arguments, _, report = paper_run
    again = evaluate.main(arguments)
    assert all(record[k]["source"] == "checkpoint" for record in again["learners"].values() for k in ("K=5", "K=10"))
    assert again["mse"] == report["mse"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--protocol", "paper", "--episodes", "10"], "--episodes belongs to the assignment's protocol"),
        (["--protocol", "paper", "--fast"], "--fast belongs to the assignment's protocol"),
        (["--protocol", "paper", "--seeds", "1"], "it needs --seeds 2 or more"),
        (["--updates", "10"], "--updates belongs to --protocol paper"),
        (["--protocol", "papers"], "argument --protocol: invalid choice: 'papers'"),
    ],
)
def test_arguments_of_the_other_protocol_are_refused_before_training(tmp_path, arguments, message):
    result = run_python(SCRIPT, "--checkpoint-dir", str(tmp_path), "--out-dir", str(tmp_path), *arguments)
    assert result.returncode == 2 and message in result.stderr and result.stdout == ""
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is POSIX's")
def test_ctrl_c_says_which_learner_and_k_it_stopped_at_and_exits_130(tmp_path):
    updates = 1_000_000
    arguments = ["--protocol", "paper", "--updates", str(updates), "--seeds", "2", "--out-dir", str(tmp_path / "out")]
    arguments += ["--checkpoint-dir", str(tmp_path / "checkpoints")]
    log = tmp_path / "stderr.txt"
    assert interrupt_after_progress(SCRIPT, arguments, updates, log) == 130
    errors = log.read_text()
    assert re.search(r"interrupted while meta-training MAML, S=1, K=5, after ([\d,]+) of 1,000,000 updates", errors)
    assert "no learner had finished, so no checkpoint was written" in errors
    assert not any((tmp_path / "checkpoints").iterdir()) and not any((tmp_path / "out").iterdir())


def cell(result, step):
    """A cell of the docs' table, written out here apart from the code that writes results.md."""
    if result["diverged"][step]:
        return f"diverged on {100 * result['diverged'][step]:.3g}% of tasks; median {result['median'][step]:.3f}"
    return f"{result['mean'][step]:.3f} ± {result['seed_ci95'][step]:.3f}; {result['median'][step]:.3f}"


def test_the_numbers_in_the_docs_are_those_of_the_committed_results():
    """docs/paper_protocol.md's table and the README's figures, rebuilt from docs/paper_protocol/results.json."""
    doc, readme = ((ROOT / page).read_text() for page in ("docs/paper_protocol.md", "README.md"))
    results = json.loads((ROOT / "docs" / "paper_protocol" / "results.json").read_text())["mse"]["query"]
    models = {
        "5": "K = 5 (trained at K = 5)",
        "10": "K = 10 (trained at K = 10)",
        paper.K10_MODEL_AT_K5: "K = 5 (trained at K = 10)",
    }
    for name, label in (("maml", "MAML"), ("pretrained", "pretrained")):
        for key, model in models.items():
            cells = [cell(results[name][key], step) for step in (0, 1, 5, 10)]
            assert f"| {label}, {model} | " + " | ".join(cells) + " |" in doc, (name, key)
    oracle = [
        f"{results['oracle'][k]['mean'][0]:.3f} ± {results['oracle'][k]['seed_ci95'][0]:.3f}" for k in ("5", "10")
    ]
    assert " / ".join(oracle) in doc
    for name, key in (
        ("maml", "10"),
        ("maml", "5"),
        ("pretrained", "10"),
        ("pretrained", "5"),
        ("maml", paper.K10_MODEL_AT_K5),
    ):
        one_step = f"{results[name][key]['mean'][1]:.3f} ± {results[name][key]['seed_ci95'][1]:.3f}"
        assert one_step in readme, (name, key, one_step)
