"""Finn et al.'s protocol (the paper study): its task stream, the oracle, one update on 25 tasks against
autograd, the scores against SGD task by task, the summary statistics, `scripts/evaluate.py --protocol paper`'s
arguments, the README's numbers rebuilt from the committed results.json, and (slow) short runs end to end."""

import dataclasses
import json
import re
import sys

import numpy as np
import pytest
import torch

from helpers import ROOT, interrupt_after_progress, is_png, reference_forward
from maml_sine import streams, studies
from maml_sine.batched import BatchedMAML, initializations_from_seeds
from maml_sine.core import ADAM_BETAS, ADAM_EPS, network
from maml_sine.evaluation import DIVERGED, MAX_STEPS, draw_held_out_tasks, one_run_difference, summarize
from maml_sine.learners import K10_MODEL_AT_K5, LEARNERS, PAPER_LEARNERS, paper_protocol, paper_study
from maml_sine.reports import markdown_table
from maml_sine.streams import PaperTaskStreams
from maml_sine.training import lane_seeds, meta_trained
from utils import BaseLearner

SCRIPT = ROOT / "scripts" / "evaluate.py"
STUDY_LEARNERS = PAPER_LEARNERS
SECTIONS = {section[0]: section for section in paper_study().sections}  # key -> (key, trained at K, fine-tuned K)


def evaluated(evaluate, study, initializations, tasks):
    """`studies.evaluated` at the step sizes `studies.test_lrs` gives (tuned on `tasks` where a learner has none)."""
    lrs, _ = studies.test_lrs(study, initializations, tasks)
    return studies.evaluated(study, initializations, tasks, lrs)


def as_json(value):
    """`value` as it reads back from results.json: tuples become lists, NaN and infinities null."""
    return json.loads(json.dumps(value), parse_constant=lambda constant: None)


# --- The task stream and the oracle's network ------------------------------------------------------------------


def test_tasks_are_sines_of_their_amplitude_and_phase_with_k_support_and_k_query_points():
    protocol = paper_protocol(5)
    stream = protocol.streams(lane_seeds(2), inputs=3)
    assert isinstance(stream, PaperTaskStreams)
    train_x, train_y, test_x, test_y = stream.next_batch()
    for part, width in zip((train_x, train_y, test_x, test_y), (3, 1, 3, 1)):
        assert part.shape == (2, protocol.tasks_per_update, 5, width) and protocol.tasks_per_update == 25
    for x, y in ((train_x, train_y), (test_x, test_y)):
        x, y = x.double().numpy(), y.double().numpy()
        np.testing.assert_allclose(y[..., 0], x[..., 1] * np.sin(x[..., 0] + x[..., 2]), atol=1e-5)
    points = torch.cat([train_x, test_x], dim=2)
    for column, (low, high) in enumerate([(-5, 5), (0.1, 5), (0, np.pi)]):  # x, amplitude, phase
        assert ((points[..., column] >= low) & (points[..., column] < high)).all()
    assert (points[..., 1:] == points[:, :, :1, 1:]).all(), "one amplitude and phase per task"
    assert len(torch.unique(points[..., 0])) == points[..., 0].numel(), "the query points are new points"


@pytest.mark.parametrize(
    "protocol, inputs",
    [(dataclasses.replace(paper_protocol(5), query_points=10), 1), (paper_protocol(5), 2)],
    ids=["more query than support points", "2 inputs"],
)
def test_the_stream_refuses_what_it_cannot_draw(protocol, inputs):
    with pytest.raises(ValueError, match="as many query as support points, and 1 or 3 inputs"):
        PaperTaskStreams(lane_seeds(1), protocol, inputs)


def test_every_learner_of_a_seed_sees_the_same_tasks_whatever_the_other_seeds(monkeypatch):
    monkeypatch.setattr(streams, "DRAWN_AT_ONCE", 3)  # several draws into numpy in a few updates
    numpy_state = np.random.get_state()
    protocol = paper_protocol(10)
    both = PaperTaskStreams(lane_seeds(2), protocol)
    alone = PaperTaskStreams(lane_seeds(1, first=1), protocol)
    oracle = PaperTaskStreams(lane_seeds(2), protocol, inputs=3)
    batches = []
    for _ in range(7):
        plain, single, given = both.next_batch(), alone.next_batch(), oracle.next_batch()
        assert all(torch.equal(mine[1:], its) for mine, its in zip(plain, single))
        assert torch.equal(plain[0], given[0][..., :1]) and torch.equal(plain[2], given[2][..., :1])
        assert torch.equal(plain[1], given[1]) and torch.equal(plain[3], given[3])
        batches.append(plain[0])
    assert len({batch.sum().item() for batch in batches}) == len(batches), "every update has new tasks"
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]), "np.random is left alone"


def test_oracle_starts_from_torch_linear_layers_of_its_seed_and_leaves_the_rng_alone():
    before = torch.random.get_rng_state()
    initializations = initializations_from_seeds(lane_seeds(2), inputs=3)
    networks = initializations_from_seeds(lane_seeds(2))
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(43)
    layers = [torch.nn.Linear(3, 40), torch.nn.Linear(40, 40), torch.nn.Linear(40, 1)]
    assert [tuple(w.shape) for w in initializations[1]] == [(40, 3), (40,), (40, 40), (40,), (1, 40), (1,)]
    assert all(torch.equal(mine, layer.weight.detach()) for mine, layer in zip(initializations[1][::2], layers))
    assert all(not w.any() for w in initializations[1][1::2]), "zero biases"
    torch.manual_seed(43)
    assert all(torch.equal(mine, its) for mine, its in zip(networks[1], BaseLearner.random_initial_weights()))


# --- One meta-update of 25 tasks against autograd ---------------------------------------------------------------


def autograd_meta_gradient(initialization, tasks, lane, algorithm):
    """The mean over B tasks of the query loss and its gradient, with autograd and a matmul network, in float64."""
    weights = [w.detach().double().requires_grad_() for w in initialization]
    losses = []
    for b in range(tasks[0].shape[1]):
        train_x, train_y, test_x, test_y = (part[lane, b].double() for part in tasks)
        fast = weights
        for _ in range(algorithm.num_steps):
            support_loss = ((reference_forward(fast, train_x) - train_y) ** 2).mean()
            # Without create_graph, the inner gradient is a constant: first-order MAML.
            gradients = torch.autograd.grad(support_loss, fast, create_graph=not algorithm.first_order)
            fast = [w - algorithm.inner_lr * g for w, g in zip(fast, gradients)]
        losses.append(((reference_forward(fast, test_x) - test_y) ** 2).mean())
    loss = torch.stack(losses).mean()
    return loss.item(), torch.autograd.grad(loss, weights)


@pytest.mark.parametrize("name", ["maml", "first_order_maml", "pretrained", "oracle"])
def test_one_update_of_25_tasks_follows_the_meta_gradient_of_autograd(float64, name):
    """`BatchedMAML.train` (core.meta_step for two seeds at once) on one batch of the paper's stream: the loss it
    records, the meta-gradient in Adam's first moment (0.1 g after one step), its norm, and the step taken
    (lr g / (|g| + eps) after one step), each against autograd through an independent network."""
    learner = LEARNERS[name]
    seeds = lane_seeds(2)
    initializations = initializations_from_seeds(seeds, inputs=learner.inputs)
    tasks = paper_protocol(5).streams(seeds, learner.inputs).next_batch()
    learners = BatchedMAML(initializations, learner.algorithm)
    learners.train(tasks)
    beta1, _ = ADAM_BETAS
    lr = learner.algorithm.meta_lr
    for lane, initialization in enumerate(initializations):
        loss, expected = autograd_meta_gradient(initialization, tasks, lane, learner.algorithm)
        assert learners.histories[lane, 0] == pytest.approx(loss, rel=1e-12)
        norm = torch.sqrt(sum((g**2).sum() for g in expected)).item()
        assert learners.gradient_norm_histories[lane, 0] == pytest.approx(norm, rel=1e-10)
        for moment, before, after, gradient in zip(
            network(learners.state.exp_avgs), initialization, learners.weights, expected, strict=True
        ):
            torch.testing.assert_close(moment[lane] / (1 - beta1), gradient, rtol=1e-9, atol=1e-12)
            step = lr * gradient / (gradient.abs() + ADAM_EPS)
            torch.testing.assert_close(after[lane], before.detach() - step, rtol=1e-9, atol=1e-12)


# --- The scores ---------------------------------------------------------------------------------------------------


def halved(x, half):
    """x in [-5, 5) moved into the left half (the support) or the right half (the query), written out apart."""
    return x if half is None else {"support": (x - 5) / 2, "query": (x + 5) / 2}[half]


def per_task_sgd(initialization, tasks, k, oracle, lr=0.01, half=None):
    """Each task's MSE on its K new points and on the grid after 0..MAX_STEPS SGD steps (`lr`) on its K support
    points (in the left half if `half`, scored on the right one), with autograd and a matmul network, in
    float64, one task at a time: {score: (steps + 1, tasks)}."""
    grid_x, grid_y = tasks.grid()
    errors = {"query": np.zeros((MAX_STEPS + 1, len(tasks))), "grid": np.zeros((MAX_STEPS + 1, len(tasks)))}
    for task in range(len(tasks)):

        def inputs(x, task=task):
            if not oracle:
                return x.double()
            a, p = tasks.amplitudes[task], tasks.phases[task]
            return torch.cat([x.double(), torch.full_like(x, a).double(), torch.full_like(x, p).double()], dim=1)

        support_x, query_x = (halved(x[task, :k].double(), half and part)
                              for x, part in ((tasks.support_x, "support"), (tasks.query_x, "query")))  # fmt: skip
        support_y, query_y = (tasks.amplitudes[task] * torch.sin(x + tasks.phases[task]) for x in (support_x, query_x))
        weights = [w.detach().double().requires_grad_() for w in initialization]
        for step in range(MAX_STEPS + 1):
            for score, x, y in (("query", query_x, query_y), ("grid", grid_x, grid_y[task])):
                with torch.no_grad():
                    prediction = reference_forward(weights, inputs(x))
                errors[score][step, task] = ((prediction - y.double()) ** 2).mean().item()
            support_loss = ((reference_forward(weights, inputs(support_x)) - support_y.double()) ** 2).mean()
            gradients = torch.autograd.grad(support_loss, weights)
            weights = [(w - lr * g).detach().requires_grad_() for w, g in zip(weights, gradients)]
    return errors


@pytest.mark.parametrize(
    "name, section",
    [("pretrained", "5"), ("oracle", "10"), ("maml", K10_MODEL_AT_K5), ("maml_alpha0.001", "20, trained at K=10"),
     ("pretrained_alpha0.001", "5 in the left half, trained at K=10"), ("oracle", "10 in the left half")],
    ids=str,
)  # fmt: skip
def test_scores_match_a_per_task_loop_of_sgd_on_k_points(evaluate, name, section):
    """`evaluated` for one learner and section of the paper study: every seed's mean MSE after each step, on the
    K new points and on the grid, the median over all seeds' tasks and the share diverged, against SGD task by
    task; the K = 10 models fine-tuned on 5 points are those trained at K = 10."""
    key, trained_k, k, half = SECTIONS[section]
    learner = LEARNERS[name]
    study = dataclasses.replace(paper_study(), learners=(name,), sections=(SECTIONS[section],))
    initializations = {
        (name, 5): initializations_from_seeds(lane_seeds(2), inputs=learner.inputs),
        (name, 10): initializations_from_seeds(lane_seeds(2, first=5), inputs=learner.inputs),
    }
    tasks = draw_held_out_tasks(3, max_support=20)
    results, fits, _ = evaluated(evaluate, study, initializations, tasks)
    every_seed = {"query": [], "grid": []}
    for seed, initialization in enumerate(initializations[name, trained_k]):
        errors = per_task_sgd(initialization, tasks, k, learner.inputs == 3, learner.test_lr, half)
        for score in ("query", "grid"):
            np.testing.assert_allclose(
                results[score][name][key]["per_seed"][seed], errors[score].mean(axis=1), rtol=1e-4
            )
            every_seed[score].append(errors[score])
    for score, errors in every_seed.items():
        every_task = np.concatenate(errors, axis=1)
        np.testing.assert_allclose(results[score][name][key]["median"], np.median(every_task, axis=1), rtol=1e-4)
        diverged = np.maximum.accumulate(every_task > DIVERGED, axis=0).mean(axis=1)
        assert results[score][name][key]["diverged"] == diverged.tolist()
    assert set(fits[name]) == {key}  # the oracle is drawn as it is, not fine-tuned
    assert fits[name][key].shape == (1 if learner.inputs == 3 else MAX_STEPS + 1, 100)


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


def test_an_overflowing_initialization_diverges_on_every_task_at_every_step(evaluate):
    study = dataclasses.replace(paper_study(), learners=("pretrained",), sections=(SECTIONS["5"],))
    healthy = initializations_from_seeds(lane_seeds(2))
    offset = [[*weights[:-1], torch.full((1,), 1e30)] for weights in healthy]  # predicts 1e30: MSE overflows
    with np.errstate(invalid="ignore", over="ignore"):
        results, _, _ = evaluated(evaluate, study, {("pretrained", 5): offset}, draw_held_out_tasks(4))
    for score in ("query", "grid"):
        assert results[score]["pretrained"]["5"]["diverged"] == [1.0] * (MAX_STEPS + 1)
        assert results[score]["pretrained"]["5"]["median"] == [float("inf")] * (MAX_STEPS + 1)


def test_query_points_are_new_points_of_the_same_tasks_and_the_first_tasks_do_not_depend_on_the_count():
    few, many = draw_held_out_tasks(5), draw_held_out_tasks(50)
    assert torch.equal(few.query_x, many.query_x[:5]) and torch.equal(few.support_x, many.support_x[:5])
    assert not torch.isin(many.query_x, many.support_x).any()
    query_x, query_y = many.query(10)
    expected = many.amplitudes[:, None, None] * np.sin(query_x.double().numpy() + many.phases[:, None, None])
    np.testing.assert_allclose(query_y.numpy(), expected, atol=1e-6)


# --- scripts/evaluate.py --protocol paper: the arguments ------------------------------------------------------


def test_the_paper_study_trains_one_model_per_k_for_70000_updates_unless_told(evaluate, tmp_path):
    folders = ["--out-dir", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "checkpoints")]
    study = evaluate.parse_args(["--protocol", "paper", *folders]).study
    assert study == paper_study() and study.learners == STUDY_LEARNERS and study.scores == ("query", "grid")
    shapes = [(p.support_points, p.query_points, p.tasks_per_update, p.updates) for p in study.training]
    assert shapes == [(5, 5, 25, 70_000), (10, 10, 25, 70_000)]
    assert [(section.trained_k, section.k, section.half) for section in study.sections] == [
        (5, 5, None), (10, 10, None), (10, 5, None), (10, 20, None), (10, 5, "left"), (10, 10, "left")
    ]  # fmt: skip
    assert study.seeds == 5 and study.curvature == ("maml", "maml_alpha0.001")
    args = evaluate.parse_args(["--protocol", "paper", "--updates", "300", "--seeds", "1", *folders])
    assert args.study == paper_study(300) and args.seeds == 1, "one seed is allowed: its interval is over the tasks"


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--protocol", "paper", "--episodes", "10"], "unrecognized arguments: --episodes 10"),
        (["--protocol", "paper", "--fast"], "unrecognized arguments: --fast"),
        (["--protocol", "papers"], "argument --study/--protocol: invalid choice: 'papers'"),
    ],
)
def test_arguments_of_no_protocol_are_refused_before_anything_is_made(evaluate, tmp_path, capsys, bad, message):
    with pytest.raises(SystemExit) as exited:
        evaluate.parse_args(["--checkpoint-dir", str(tmp_path / "c"), "--out-dir", str(tmp_path / "o"), *bad])
    captured = capsys.readouterr()
    assert exited.value.code == 2 and message in captured.err and captured.out == ""
    assert not any(tmp_path.iterdir())


# --- The docs: the numbers rebuilt from the committed results.json ---------------------------------------------

COMMITTED = json.loads((ROOT / "docs" / "paper_protocol" / "results.json").read_text())


def test_the_readme_states_table_2s_comparison_from_the_committed_results():
    """The README's paragraph on the paper's protocol, rebuilt from docs/paper_protocol/results.json: MAML at both
    α on Table 2's section after 1, 5 and 10 steps, the multi-task averages after one step, and MAML against
    the tuned pretrained network on the unseen half after 10 steps."""
    readme = (ROOT / "README.md").read_text()
    results = COMMITTED["mse"]["query"]
    code, text = results["maml_alpha0.001"][K10_MODEL_AT_K5], results["maml"][K10_MODEL_AT_K5]
    steps = " / ".join(f"{code['mean'][step]:.2f} ± {code['seed_ci95'][step]:.2f}" for step in (1, 5, 10))
    assert steps in readme, steps
    one_run = [one_run_difference(code, step, published, code["ci95"][step]) for step, published in
               zip((1, 5, 10), (0.67, 0.38, 0.35))]  # fmt: skip
    assert all(abs(gap) <= spread for gap, spread in one_run), "the paper's row is within one run's spread"
    assert "± " + " / ".join(f"{spread:.2f}" for _, spread in one_run) + " for one run" in readme
    one_step = f"{text['mean'][1]:.2f} ± {text['seed_ci95'][1]:.2f}"
    assert one_step in readme, one_step
    diverged = [round(text["diverged"][step] * 3000) for step in (5, 10)]
    assert f"diverges on {diverged[0]} and {diverged[1]} of 3,000 seed-task pairs" in readme
    none_in_a_run = [f"{(1 - text['diverged'][step]) ** 600:.0%}" for step in (5, 10)]
    assert f"none in {none_in_a_run[0]} and {none_in_a_run[1]} of such runs" in readme
    for name in ("multitask", "multitask_l2", "multitask_running_mean"):
        result = results[name][K10_MODEL_AT_K5]
        assert f"{result['mean'][1]:.2f} ± {result['seed_ci95'][1]:.2f}" in readme, name
    half = "5 in the left half, trained at K=10"
    maml, pretrained = (results[name][half] for name in ("maml_alpha0.001", "pretrained_tuned"))
    versus = " against ".join(f"{r['mean'][10]:.2f} ± {r['seed_ci95'][10]:.2f}" for r in (maml, pretrained))
    assert versus in readme, versus


# --- Slow: training, and short runs end to end -------------------------------------------------------------------

UPDATES, SEEDS, TASKS, REGRESSORS = 3, 2, 6, 4


@pytest.mark.slow
def test_the_oracle_uses_the_amplitude_and_phase_it_is_given(evaluate):
    """After 300 updates at K = 5 the oracle, before any fine-tuning, already fits new tasks far better than the
    network trained alike without them (about 0.4 times its MSE)."""
    seeds = lane_seeds(SEEDS)
    initializations = {
        (name, 5): [learners.initialization(seed) for seed in range(SEEDS)]
        for name in ("pretrained", "oracle")
        for learners in [meta_trained(name, LEARNERS[name], paper_protocol(5, updates=300), seeds)]
    }
    study = dataclasses.replace(
        paper_study(), learners=("pretrained", "oracle"), sections=(SECTIONS["5"],), scores=("query",)
    )
    results, _, _ = evaluated(evaluate, study, initializations, draw_held_out_tasks(40))
    oracle, pretrained = (np.array(results["query"][name]["5"]["per_seed"])[:, 0] for name in ("oracle", "pretrained"))
    assert (oracle < 0.6 * pretrained).all(), (oracle, pretrained)


@pytest.fixture(scope="module")
def paper_run(evaluate, tmp_path_factory):
    """A short run of the paper study, in process: its arguments, out dir, checkpoint dir and report."""
    folder = tmp_path_factory.mktemp("paper_run")
    argv = ["--protocol", "paper", "--updates", str(UPDATES), "--seeds", str(SEEDS), "--tasks", str(TASKS)]
    argv += ["--regressors", str(REGRESSORS)]
    argv += ["--out-dir", str(folder / "out"), "--checkpoint-dir", str(folder / "checkpoints")]
    return argv, folder / "out", folder / "checkpoints", evaluate.main(argv)


@pytest.mark.slow
def test_a_short_run_writes_every_result_and_figure(paper_run):
    _, out, checkpoints, report = paper_run
    figures = [f"{plot.name}{suffix}.png" for plot in paper_study().figures
               for suffix in (("", "_grid") if plot.kind == "mse" else ("",))]  # fmt: skip
    assert sorted(path.name for path in out.iterdir()) == sorted([*figures, "results.json", "results.md"])
    assert len(figures) == 12
    for figure in figures:
        assert is_png(out / figure), figure
    assert json.loads((out / "results.json").read_text()) == as_json(report)
    assert report["study"] == paper_study(UPDATES).record()
    assert report["evaluation"]["seeds"] == lane_seeds(SEEDS) and report["evaluation"]["tasks"] == TASKS
    assert report["evaluation"]["scores"] == {"query": "K new points per task", "grid": "100 x in [-5, 5]"}
    table = (out / "results.md").read_text()
    command = re.search(r"Written by `(.*)`; every step", table)[1]
    assert table == markdown_table(report["mse"], paper_study(UPDATES), TASKS, command)
    assert table.count("## K = 10\n") == 2 and table.count("## K = 5, the K = 10 models\n") == 2
    assert "K new points per task" in table and "100 x in [-5, 5]" in table and "(not fine-tuned)" in table
    # One model per K of MAML at each alpha and from the code's initialization (the models tested at other step sizes
    # share the alpha = 0.01 ones), of the pretrained network (which the three pretrained learners share, as they
    # differ only at test) and of the oracle (its three share one); one of each of the 8 multi-task baselines,
    # whatever K; and the evaluation, cached.
    assert len(list(checkpoints.glob("*.pt"))) == 2 * 5 + 8
    assert [path.name for path in checkpoints.glob("*.json")] == [f"paper-evaluation-seeds0-{SEEDS - 1}.json"]


@pytest.mark.slow
def test_a_short_run_has_every_learner_section_score_and_step_with_intervals_over_seeds(paper_run):
    report = paper_run[3]
    assert set(report["mse"]) == {"query", "grid"}
    for score in ("query", "grid"):
        assert set(report["mse"][score]) == set(STUDY_LEARNERS)
        for name in STUDY_LEARNERS:
            assert set(report["mse"][score][name]) == set(SECTIONS)
            for result in report["mse"][score][name].values():
                assert len(result["median"]) == len(result["diverged"]) == MAX_STEPS + 1
                assert len(result["mean"]) == MAX_STEPS + 1 and np.shape(result["per_seed"]) == (SEEDS, MAX_STEPS + 1)
                assert np.isfinite(result["mean"]).all() and (np.array(result["seed_ci95"]) > 0).all()
                np.testing.assert_allclose(result["mean"], np.mean(result["per_seed"], axis=0))
    for name in STUDY_LEARNERS:
        assert report["learners"][name]["learner"] == as_json(LEARNERS[name].record())
        for k in ("K=5", "K=10"):
            record = report["learners"][name][k]
            assert record["source"] == "trained"
            if name.startswith("multitask"):
                assert record["regressors"]["regressors"] == REGRESSORS and record["regressors"]["max_updates"] == 3
                assert np.shape(record["regressor_mse"]) == (SEEDS, REGRESSORS)
            else:
                assert record["updates"] == UPDATES and len(record["final_training_query_mse"]) == SEEDS


@pytest.mark.slow
def test_a_second_run_loads_every_learner_and_reproduces_the_numbers(evaluate, paper_run):
    argv, _, _, report = paper_run
    again = evaluate.main(argv)
    assert all(record[k]["source"] == "checkpoint" for record in again["learners"].values() for k in ("K=5", "K=10"))
    assert again["mse"] == report["mse"]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is POSIX's")
def test_ctrl_c_says_what_is_kept_and_exits_130(tmp_path):
    updates = 1_000  # eager (compiled from training.COMPILE_FROM updates): the interrupt lands in training
    out, checkpoints, log = tmp_path / "out", tmp_path / "checkpoints", tmp_path / "stderr.txt"
    arguments = ["--protocol", "paper", "--updates", str(updates), "--seeds", "2", "--tasks", "4"]
    arguments += ["--out-dir", str(out), "--checkpoint-dir", str(checkpoints)]
    assert interrupt_after_progress(SCRIPT, arguments, updates, log) == 130
    errors = log.read_text()
    stopped = re.search(
        r"\ninterrupted while training; checkpoints of maml, K=5 \(part-trained: the next run resumes it\) are "
        rf"kept in {re.escape(str(checkpoints))}: run again to go on from them; nothing was written to "
        rf"{re.escape(str(out))}\n",
        errors,
    )
    assert stopped, errors
    assert "Traceback" not in errors
    (partial,) = checkpoints.iterdir()
    assert partial.name == "paper-maml-K5-1000-seeds0-1.pt" and not any(out.iterdir())
    content = torch.load(partial, weights_only=True)
    assert 0 < content["updates"] < 1_000, "the updates done, saved to resume from"
