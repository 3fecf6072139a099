"""scripts/evaluate.py and maml_sine.evaluation: a small run end to end, the fixed held-out tasks, batched SGD
against a plain per-task loop and against `MAML.adapt`, and the command line."""

import json
import math
import re
import sys

import numpy as np
import pytest
import torch

from assignment import MAML
from helpers import ROOT, interrupt_after_progress, is_png, reference_forward, run_python
from maml_sine import training
from maml_sine.checkpoints import CheckpointError, load_batched, load_maml, save_maml
from maml_sine.evaluation import (
    GRID_X,
    HELD_OUT_SEED,
    MAX_STEPS,
    SUPPORT_SIZES,
    draw_held_out_tasks,
    mean_and_ci95,
    mse_after_each_step,
    predictions_after_each_step,
    sgd_steps,
    t_quantile_975,
)
from maml_sine.evaluation import evaluate as evaluate_one
from utils import BaseLearner

SCRIPT = ROOT / "scripts" / "evaluate.py"
EPISODES, TASKS = 200, 24


@pytest.fixture(scope="module")
def small_run(evaluate, tmp_path_factory):
    """One short evaluation of one seed (MAML.train itself): its arguments, out dir, checkpoint dir and report."""
    out_dir, checkpoint_dir = tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("checkpoints")
    arguments = ["--episodes", str(EPISODES), "--tasks", str(TASKS), "--seeds", "1"]
    arguments += ["--out-dir", str(out_dir), "--checkpoint-dir", str(checkpoint_dir)]
    return arguments, out_dir, checkpoint_dir, evaluate.main(arguments)


def test_small_run_writes_results_and_figures(evaluate, small_run):
    _, out_dir, checkpoint_dir, report = small_run
    assert sorted(path.name for path in out_dir.iterdir()) == [
        "fits.png",
        "mse_vs_steps.png",
        "results.json",
        "results.md",
    ]
    assert is_png(out_dir / "fits.png") and is_png(out_dir / "mse_vs_steps.png")
    assert json.loads((out_dir / "results.json").read_text()) == report
    assert sorted(path.name for path in checkpoint_dir.iterdir()) == [
        f"{name}-{EPISODES}.pt" for name in ("first_order_maml", "maml", "pretrained")
    ]
    table = (out_dir / "results.md").read_text()
    assert all(learner.label in table for learner in evaluate.LEARNERS.values())
    assert report["protocol"]["training"]["episodes"] == EPISODES
    assert report["protocol"]["evaluation"]["tasks"] == TASKS


def test_small_run_numbers_are_finite_and_consistent(evaluate, small_run):
    report = small_run[3]
    assert set(report["mse"]) == set(evaluate.LEARNERS)
    for name, by_k in report["mse"].items():
        assert set(by_k) == {"5", "10"}
        for summary in by_k.values():
            assert len(summary["mean"]) == len(summary["ci95"]) == MAX_STEPS + 1
            assert all(math.isfinite(m) and m > 0 for m in summary["mean"])
            assert all(math.isfinite(c) and c > 0 for c in summary["ci95"])
        assert by_k["5"]["mean"][0] == by_k["10"]["mean"][0], f"{name}: before adaptation K cannot matter"
    sources = {name: learner["source"] for name, learner in report["learners"].items()}
    assert sources == {"maml": "trained", "first_order_maml": "trained", "pretrained": "trained", "scratch": "random"}


def unadapted_grid_mse(weights, tasks):
    """Mean over tasks of the MSE of BaseLearner.forward on the grid, y from numpy: no shared evaluation code."""
    grid_x = tasks.grid_x.double().numpy()
    predictions = BaseLearner.forward(tasks.grid_x, weights).detach().double().numpy()
    errors = [np.mean((predictions - a * np.sin(grid_x + p)) ** 2) for a, p in zip(tasks.amplitudes, tasks.phases)]
    return np.mean(errors)


def test_step_zero_is_the_unadapted_mse_on_the_grid(evaluate, small_run):
    _, _, checkpoint_dir, report = small_run
    tasks = draw_held_out_tasks(TASKS, max(SUPPORT_SIZES), HELD_OUT_SEED, GRID_X)
    assert tasks.grid_x.shape == (100, 1) and tasks.grid_x[0].item() == -5.0 and tasks.grid_x[-1].item() == 5.0
    maml = load_maml(checkpoint_dir / f"maml-{EPISODES}.pt")
    torch.manual_seed(training.TORCH_SEED)
    scratch = BaseLearner.random_initial_weights()
    for name, weights in [("maml", maml.initialization), ("scratch", scratch)]:
        step_zero = report["mse"][name]["10"]["mean"][0]
        assert step_zero == pytest.approx(unadapted_grid_mse(weights, tasks), rel=1e-5)


def test_second_run_loads_the_checkpoints_and_reproduces_the_numbers(evaluate, small_run):
    arguments, _, _, first = small_run
    second = evaluate.main(arguments)
    assert second["mse"] == first["mse"]
    assert {name: learner["source"] for name, learner in second["learners"].items() if name != "scratch"} == {
        "maml": "checkpoint",
        "first_order_maml": "checkpoint",
        "pretrained": "checkpoint",
    }


def test_fast_training_gives_the_same_numbers(evaluate, small_run, tmp_path):
    """--fast meta-trains through the compiled path: the evaluation's numbers agree with the eager run's."""
    arguments, _, _, eager = small_run
    fast_arguments = [*arguments[:6], "--out-dir", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path), "--fast"]
    fast = evaluate.main(fast_arguments)
    for name, by_k in eager["mse"].items():
        for k, numbers in by_k.items():
            np.testing.assert_allclose(fast["mse"][name][k]["mean"], numbers["mean"], rtol=1e-4)


def test_a_checkpoint_of_another_learner_is_refused(evaluate, small_run, tmp_path):
    arguments, _, checkpoint_dir, _ = small_run
    maml_checkpoint = (checkpoint_dir / f"maml-{EPISODES}.pt").read_bytes()
    (tmp_path / f"first_order_maml-{EPISODES}.pt").write_bytes(maml_checkpoint)
    arguments = [*arguments[:-1], str(tmp_path)]  # the same run with this checkpoint dir
    with pytest.raises(
        CheckpointError, match=r"first_order_maml-200\.pt.*\(1, False, 200\), expected \(1, True, 200\)"
    ):
        evaluate.main(arguments)


@pytest.mark.parametrize(
    "stopped_in, stage, results, written",
    [
        ("evaluate", "evaluating", "nothing was written to {out}", []),
        (
            "plot_fits",
            "writing the figures and results",
            "the files in {out} are each complete, but may not all be from this run",
            ["mse_vs_steps.png"],
        ),
    ],
)
def test_an_interrupt_after_training_says_where_it_stopped_and_what_is_kept(
    evaluate, small_run, tmp_path, monkeypatch, stopped_in, stage, results, written
):
    arguments, _, checkpoint_dir, _ = small_run
    out = tmp_path / "out"

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, stopped_in, interrupt)
    with pytest.raises(KeyboardInterrupt) as raised:
        evaluate.main([*arguments[:-3], str(out), *arguments[-2:]])  # the same run with another --out-dir
    trained = "MAML, S=1, first-order MAML, S=1, pretrained (S=0)"
    assert str(raised.value) == (
        f"interrupted while {stage}; checkpoints of {trained} are kept in {checkpoint_dir}: "
        f"run again to go on from them; {results.format(out=out)}"
    )
    assert sorted(path.name for path in out.iterdir()) == written


def test_maml_is_trained_exactly_as_test_py_trains_it(evaluate, script):
    np.random.seed(training.NUMPY_SEED)
    torch.manual_seed(training.TORCH_SEED)
    reference, _ = script.learning_curve(maml_steps=1, episodes=30, show=False)
    torch.manual_seed(0)  # meta_train must re-seed both RNGs itself
    np.random.seed(0)
    maml = training.meta_train(evaluate.LEARNERS["maml"], episodes=30)
    assert maml.history == reference.history
    assert all(torch.equal(a, b) for a, b in zip(maml.initialization, reference.initialization))


def test_held_out_tasks_are_fixed_and_leave_numpy_alone():
    numpy_state = np.random.get_state()
    first = draw_held_out_tasks(20, 10, seed=5, grid=np.linspace(-5, 5, 100))
    second = draw_held_out_tasks(20, 10, seed=5, grid=np.linspace(-5, 5, 100))
    fewer = draw_held_out_tasks(7, 10, seed=5, grid=np.linspace(-5, 5, 100))
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]
    assert np.array_equal(first.amplitudes, second.amplitudes) and np.array_equal(first.phases, second.phases)
    assert torch.equal(first.support_x, second.support_x)
    assert np.array_equal(fewer.amplitudes, first.amplitudes[:7]) and torch.equal(fewer.support_x, first.support_x[:7])
    assert not np.array_equal(first.amplitudes, draw_held_out_tasks(20, 10, seed=6, grid=[0.0]).amplitudes)
    assert np.all((first.amplitudes >= 0.1) & (first.amplitudes < 5.0))
    assert np.all((first.phases >= 0.0) & (first.phases < np.pi))
    assert torch.all((first.support_x >= -5.0) & (first.support_x < 5.0))
    support_x, support_y = first.support(5)
    assert support_x.shape == support_y.shape == (20, 5, 1) and torch.equal(support_x, first.support_x[:, :5])
    expected_y = first.amplitudes[3] * np.sin(support_x[3].double().numpy() + first.phases[3])
    np.testing.assert_allclose(support_y[3].numpy(), expected_y, rtol=1e-6)


def sgd_one_task(initialization, support_x, support_y, grid_x, grid_y, steps, lr):
    """A plain loop: grid MSE and grid predictions after 0..steps SGD steps on one task, via torch.autograd.grad."""
    weights = [w.detach().clone().requires_grad_() for w in initialization]
    losses, predictions = [], []
    for step in range(steps + 1):
        if step:
            support_loss = ((reference_forward(weights, support_x) - support_y) ** 2).mean()
            gradients = torch.autograd.grad(support_loss, weights)
            weights = [(w - lr * g).detach().requires_grad_() for w, g in zip(weights, gradients)]
        with torch.no_grad():
            prediction = reference_forward(weights, grid_x)
        predictions.append(prediction)
        losses.append(((prediction - grid_y) ** 2).mean())
    return torch.stack(losses), torch.stack(predictions)


def test_batched_adaptation_equals_a_per_task_loop(float64):
    torch.manual_seed(3)
    initialization = BaseLearner.random_initial_weights()
    tasks = draw_held_out_tasks(6, 10, seed=11, grid=np.linspace(-5, 5, 100))
    support = tuple(tensor.double() for tensor in tasks.support(5))
    grid_x, grid_y = (tensor.double() for tensor in tasks.grid())
    steps, lr = 10, 0.05  # a larger step than 0.01 makes the ten steps move the weights further
    batched_mse = mse_after_each_step(initialization, support, (grid_x, grid_y), steps, lr)
    batched_predictions = predictions_after_each_step(initialization, support, grid_x, steps, lr)
    assert batched_mse.shape == (steps + 1, 6) and batched_predictions.shape == (steps + 1, 6, 100, 1)
    for task in range(6):
        losses, predictions = sgd_one_task(
            initialization, support[0][task], support[1][task], grid_x, grid_y[task], steps, lr
        )
        torch.testing.assert_close(batched_mse[:, task], losses, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(batched_predictions[:, task], predictions, rtol=1e-10, atol=1e-12)
    assert (batched_predictions[-1] - batched_predictions[0]).abs().max() > 0.1, "the steps must move the fit"
    assert all(w.grad is None for w in initialization), "the initialization must be left untouched"


@pytest.mark.parametrize("steps", [1, 3])
def test_batched_sgd_takes_the_steps_of_maml_adapt(float64, steps):
    """The evaluation's adaptation of every task equals the specification's, `MAML.adapt`, task by task."""
    torch.manual_seed(4)
    maml = MAML(num_steps=steps)
    tasks = draw_held_out_tasks(5, 10, seed=12, grid=np.linspace(-5, 5, 100))
    support_x, support_y = (tensor.double() for tensor in tasks.support(10))
    *_, batched = sgd_steps(maml.initialization, support_x, support_y, steps, maml.inner_lr)
    for task in range(len(tasks)):
        expected = maml.adapt(support_x[task], support_y[task])
        for mine, theirs in zip(batched, expected, strict=True):
            torch.testing.assert_close(mine[task], theirs.detach(), rtol=1e-12, atol=1e-14)


def test_mean_and_ci95():
    errors = np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]])
    mean, ci95 = mean_and_ci95(errors)
    np.testing.assert_allclose(mean, [2.5, 2.0])
    np.testing.assert_allclose(ci95, [1.96 * np.sqrt(1.25) / 2, 0.0])


def run_script(*arguments):
    return run_python(SCRIPT, *arguments, timeout=120)


def test_help_explains_the_script():
    result = run_script("--help")
    assert result.returncode == 0, result.stderr
    for text in ("Finn et al. (2017)", "--checkpoint-dir", "--retrain", "600 new tasks", "results.json"):
        assert text in result.stdout


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--tasks", "0"], "--tasks: must be at least 2, got 0"),
        (["--episodes", "ten"], "--episodes: expected a whole number, got 'ten'"),
        (["--out-dir", "README.md"], "--out-dir: 'README.md' is a file, not a folder"),
        (["--checkpoint-dir", "README.md"], "--checkpoint-dir: 'README.md' is a file, not a folder"),
        (["--out-dir", "README.md/evaluation"], "--out-dir: cannot write in folder 'README.md/evaluation'"),
        pytest.param(
            ["--out-dir", "/proc/evaluation"],
            "--out-dir: cannot write in folder '/proc/evaluation'",
            marks=pytest.mark.skipif(sys.platform != "linux", reason="/proc is Linux's"),
        ),
    ],
)
def test_bad_arguments_exit_2_before_training(tmp_path, arguments, message):
    result = run_script("--checkpoint-dir", str(tmp_path / "checkpoints"), *arguments)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.startswith("usage:") and result.stdout == "", "nothing may run before the error"
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is POSIX's")
def test_ctrl_c_keeps_the_trained_learners_writes_nothing_half_and_exits_130(tmp_path):
    """A real SIGINT while the second learner meta-trains: one line on stderr, exit 130, the first learner's
    checkpoint untouched, no other or temporary file left behind."""
    out_dir, checkpoint_dir, log = tmp_path / "out", tmp_path / "checkpoints", tmp_path / "stderr.txt"
    checkpoint_dir.mkdir()
    episodes = 1_000_000
    first = checkpoint_dir / f"maml-{episodes}.pt"  # as if MAML, S=1 were already trained: loaded, not trained
    maml = MAML(num_steps=1)
    maml.history = [1.0] * episodes
    save_maml(maml, first)
    saved = first.read_bytes()
    arguments = ["--episodes", str(episodes), "--seeds", "1", "--out-dir", str(out_dir)]
    arguments += ["--checkpoint-dir", str(checkpoint_dir)]
    returncode = interrupt_after_progress(SCRIPT, arguments, episodes, log)
    errors = log.read_text()
    assert returncode == 130, errors
    done = re.search(
        r"interrupted while meta-training first-order MAML, S=1, after ([\d,]+) of 1,000,000 episodes", errors
    )
    assert done and int(done[1].replace(",", "")) > 0, errors
    assert f"checkpoints of MAML, S=1 are kept in {checkpoint_dir}: run again to go on from them" in errors
    assert f"nothing was written to {out_dir}" in errors
    assert "Traceback" not in errors
    assert list(out_dir.iterdir()) == []
    assert list(checkpoint_dir.iterdir()) == [first] and first.read_bytes() == saved


@pytest.fixture(scope="module")
def seeds_run(evaluate, tmp_path_factory):
    """One short evaluation with 3 seeds per learner: its arguments, checkpoint dir and report."""
    out_dir, checkpoint_dir = tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("checkpoints")
    arguments = ["--episodes", "60", "--tasks", str(TASKS), "--seeds", "3"]
    arguments += ["--out-dir", str(out_dir), "--checkpoint-dir", str(checkpoint_dir)]
    return arguments, checkpoint_dir, evaluate.main(arguments)


def test_many_seeds_give_the_mean_and_a_student_t_interval_over_seeds(evaluate, seeds_run):
    _, checkpoint_dir, report = seeds_run
    assert sorted(path.name for path in checkpoint_dir.iterdir()) == [
        f"{name}-60-3seeds.pt" for name in ("first_order_maml", "maml", "pretrained")
    ]
    t_2 = 4.302653  # Student t, 97.5% quantile, 2 degrees of freedom
    for by_k in report["mse"].values():
        for summary in by_k.values():
            per_seed = np.array(summary["per_seed"])
            assert per_seed.shape == (3, MAX_STEPS + 1)
            np.testing.assert_allclose(summary["mean"], per_seed.mean(axis=0))
            np.testing.assert_allclose(summary["seed_ci95"], t_2 * per_seed.std(axis=0, ddof=1) / np.sqrt(3), rtol=1e-5)
            assert all(c > 0 for c in summary["ci95"])
    assert len(report["learners"]["maml"]["final_training_query_mse"]) == 3


def test_each_seed_is_scored_on_its_own_learner(evaluate, seeds_run):
    """Seed i's numbers are those of learner i of the checkpoint, evaluated alone."""
    _, checkpoint_dir, report = seeds_run
    learners, seeds = load_batched(checkpoint_dir / "maml-60-3seeds.pt")
    assert seeds == [(1337, 42), (1338, 43), (1339, 44)]
    tasks = draw_held_out_tasks(TASKS, max(SUPPORT_SIZES), HELD_OUT_SEED, GRID_X)
    for seed in range(3):
        alone = evaluate_one(learners.initialization(seed), tasks)
        np.testing.assert_allclose(report["mse"]["maml"]["10"]["per_seed"][seed], alone["10"]["mean"], rtol=1e-6)


def test_a_second_run_over_seeds_loads_the_checkpoints(evaluate, seeds_run):
    arguments, _, first = seeds_run
    second = evaluate.main(arguments)
    assert second["mse"] == first["mse"]
    assert {learner["source"] for name, learner in second["learners"].items() if name != "scratch"} == {"checkpoint"}


@pytest.mark.parametrize("df, quantile", [(1, 12.7062), (2, 4.3027), (9, 2.2622), (19, 2.0930), (29, 2.0452)])
def test_student_t_quantiles_match_the_tables(df, quantile):
    assert t_quantile_975(df) == pytest.approx(quantile, abs=1e-4)
