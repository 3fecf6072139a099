"""maml_sine.evaluation and scripts/evaluate.py (the assignment's study): the fixed held-out tasks, batched SGD
against a plain per-task loop and against `MAML.adapt`, the statistics, the command line, damaged checkpoints,
a checkpoint folder another run holds, interrupts, results.md rebuilt from the committed results.json,
and (slow) short runs end to end."""

import dataclasses
import json
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from assignment import MAML
from helpers import (
    HEADLESS,
    ROOT,
    held_by_another_process,
    import_script,
    interrupt_after_progress,
    is_png,
    reference_forward,
    run_python,
)
from maml_sine import studies, training
from maml_sine.batched import BatchedMAML, initializations_from_seeds
from maml_sine.checkpoints import LOCK_FILE, Progress, load, load_progress, save
from maml_sine.core import Algorithm
from maml_sine.evaluation import (
    GRID_X,
    HELD_OUT_SEED,
    MAX_STEPS,
    draw_held_out_tasks,
    mean_and_ci95,
    mse_after_each_step,
    over_seeds,
    predictions_after_each_step,
    scored_sets,
    sgd_steps,
    t_quantile_975,
    task_to_draw,
)
from maml_sine.learners import LEARNERS, STUDIES, Learner, Study, assignment_protocol, assignment_study
from maml_sine.reports import STYLES, markdown_table
from maml_sine.streams import TaskStreams
from maml_sine.training import lane_seeds, meta_trained
from utils import NUMPY_SEED, TORCH_SEED, BaseLearner

SCRIPT = ROOT / "scripts" / "evaluate.py"
TASKS = 24
T_2 = 4.302653  # Student t, 97.5% quantile, 2 degrees of freedom (from the tables, not from t_quantile_975)
TRAINED = ("maml", "first_order_maml", "pretrained")  # the assignment study's learners with a checkpoint


# --- Helpers ---------------------------------------------------------------------------------------------------


def as_json(value):
    """`value` as it reads back from results.json: tuples become lists, NaN and infinities null."""
    return json.loads(json.dumps(value), parse_constant=lambda constant: None)


def study_of(record: dict) -> Study:
    """The Study a results.json's "study" record describes, rebuilt from the registry and checked field by field."""
    study = STUDIES[record["name"]](updates=record["training"][0]["updates"])
    assert as_json(study.record()) == record, "the record is not one of the registered studies"
    return study


def table_of(results: dict, results_md: str) -> str:
    """results.md as `reports.markdown_table` writes it from results.json (new schema) and the command on its
    last line."""
    command = re.search(r"Written by `(.*)`; every step", results_md)[1]
    return markdown_table(results["mse"], study_of(results["study"]), results["evaluation"]["tasks"], command)


def committed(folder: str) -> dict:
    return json.loads((ROOT / "docs" / folder / "results.json").read_text())


def old_schema(folder: str) -> bool:
    return "study" not in committed(folder)


def arguments(tmp_path, *extra: str, updates: int = 1, seeds: int = 1, tasks: int = 4) -> list[str]:
    """A small run's command line, with its out and checkpoint folders in tmp_path."""
    folders = ["--out-dir", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "checkpoints")]
    return ["--updates", str(updates), "--tasks", str(tasks), "--seeds", str(seeds), *folders, *extra]


def record_of(name: str, updates: int, seeds) -> dict:
    """The checkpoint record `evaluate.py` expects of learner `name` of the assignment study."""
    protocol = assignment_protocol(updates=updates)
    return {"learner": LEARNERS[name].training(), "protocol": protocol.record(), "seeds": [list(s) for s in seeds]}


def saved_learners(name: str, seeds, path, record: dict, updates: int = 1) -> None:
    """Learner `name` of each seed trained `updates` times and saved at `path` under `record`."""
    learners = BatchedMAML(initializations_from_seeds(seeds), LEARNERS[name].algorithm)
    streams = assignment_protocol().streams(seeds)
    for _ in range(updates):
        learners.train(streams.next_batch())
    save(learners, record, path)


def unadapted_grid_mse(weights, tasks):
    """Mean over tasks of the MSE of BaseLearner.forward on the grid, y from numpy: no shared evaluation code."""
    grid_x = tasks.grid_x.double().numpy()
    predictions = BaseLearner.forward(tasks.grid_x, weights).detach().double().numpy()
    errors = [np.mean((predictions - a * np.sin(grid_x + p)) ** 2) for a, p in zip(tasks.amplitudes, tasks.phases)]
    return np.mean(errors)


# --- The held-out tasks and batched SGD ------------------------------------------------------------------------


def test_held_out_tasks_are_fixed_and_leave_numpy_alone():
    numpy_state = np.random.get_state()
    first = draw_held_out_tasks(20, 10, seed=5, grid=np.linspace(-5, 5, 100))
    second = draw_held_out_tasks(20, 10, seed=5, grid=np.linspace(-5, 5, 100))
    fewer = draw_held_out_tasks(7, 10, seed=5, grid=np.linspace(-5, 5, 100))
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]
    assert np.array_equal(first.amplitudes, second.amplitudes) and np.array_equal(first.phases, second.phases)
    assert torch.equal(first.support_x, second.support_x) and torch.equal(first.query_x, second.query_x)
    assert np.array_equal(fewer.amplitudes, first.amplitudes[:7]) and torch.equal(fewer.support_x, first.support_x[:7])
    assert not np.array_equal(first.amplitudes, draw_held_out_tasks(20, 10, seed=6, grid=[0.0]).amplitudes)
    assert np.all((first.amplitudes >= 0.1) & (first.amplitudes < 5.0))
    assert np.all((first.phases >= 0.0) & (first.phases < np.pi))
    assert torch.all((first.support_x >= -5.0) & (first.support_x < 5.0))
    support_x, support_y = first.support(5)
    assert support_x.shape == support_y.shape == (20, 5, 1) and torch.equal(support_x, first.support_x[:, :5])
    expected_y = first.amplitudes[3] * np.sin(support_x[3].double().numpy() + first.phases[3])
    np.testing.assert_allclose(support_y[3].numpy(), expected_y, rtol=1e-6)
    default = draw_held_out_tasks(3)
    assert torch.equal(default.support_x, draw_held_out_tasks(3, 10, HELD_OUT_SEED, GRID_X).support_x)
    assert default.grid_x.shape == (100, 1) and default.grid_x[0].item() == -5.0 and default.grid_x[-1].item() == 5.0


def test_scored_sets_hold_the_support_the_new_points_and_the_grid_of_every_task():
    tasks = draw_held_out_tasks(4)
    sets = scored_sets(tasks, 5)
    assert set(sets) == {"support", "query", "grid"}
    assert all(torch.equal(mine, its) for mine, its in zip(sets["support"], tasks.support(5)))
    assert all(torch.equal(mine, its) for mine, its in zip(sets["query"], tasks.query(5)))
    grid_x, grid_y = sets["grid"]
    assert grid_x.shape == (4, 100, 1) and (grid_x == tasks.grid_x).all() and torch.equal(grid_y, tasks.grid()[1])


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
    sets = {name: tuple(tensor.double() for tensor in pair) for name, pair in scored_sets(tasks, 5).items()}
    steps, lr = 5, 0.05  # a larger step than 0.01 makes the steps move the weights further
    batched_mse = mse_after_each_step([initialization], sets, ("grid",), lr, steps)["grid"][0]
    assert batched_mse.shape == (steps + 1, 6)
    for task in range(6):
        losses, predictions = sgd_one_task(
            initialization, *(part[task] for part in sets["support"]), *(part[task] for part in sets["grid"]), steps, lr
        )
        np.testing.assert_allclose(batched_mse[:, task], losses.numpy(), rtol=1e-10, atol=1e-12)
        if task in (0, 5):  # the first and the last task's fit (each call adapts one task anew)
            batched_predictions = predictions_after_each_step(initialization, sets, task, lr, steps)
            assert batched_predictions.shape == (steps + 1, 100)
            np.testing.assert_allclose(batched_predictions, predictions[..., 0].numpy(), rtol=1e-10, atol=1e-12)
            assert np.abs(batched_predictions[-1] - batched_predictions[0]).max() > 0.1, "the steps must move the fit"
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


# --- The statistics --------------------------------------------------------------------------------------------


def test_mean_and_ci95():
    errors = np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]])
    mean, ci95 = mean_and_ci95(errors)
    np.testing.assert_allclose(mean, [2.5, 2.0])
    np.testing.assert_allclose(ci95, [1.96 * np.sqrt(1.25) / 2, 0.0])


@pytest.mark.parametrize("df, quantile", [(1, 12.7062), (2, 4.3027), (9, 2.2622), (19, 2.0930), (29, 2.0452)])
def test_student_t_quantiles_match_the_tables(df, quantile):
    assert t_quantile_975(df) == pytest.approx(quantile, abs=1e-4)


def test_over_seeds_gives_the_mean_and_a_student_t_interval_between_seeds():
    per_seed = [
        {"mean": [1.0, 2.0], "ci95": [0.1, 0.2]},
        {"mean": [2.0, 4.0], "ci95": [0.3, 0.4]},
        {"mean": [3.0, 9.0], "ci95": [0.2, 0.0]},
    ]
    summary = over_seeds(per_seed)
    assert summary["per_seed"] == [[1.0, 2.0], [2.0, 4.0], [3.0, 9.0]]
    np.testing.assert_allclose(summary["mean"], [2.0, 5.0])
    stds = np.array([1.0, np.sqrt(13)])  # the sample std (ddof 1) of 1, 2, 3 and of 2, 4, 9
    np.testing.assert_allclose(summary["seed_ci95"], T_2 * stds / np.sqrt(3), rtol=1e-5)
    np.testing.assert_allclose(summary["ci95"], [0.2, 0.2])
    alone = over_seeds(per_seed[:1])
    assert alone["mean"] == [1.0, 2.0] and alone["ci95"] == [0.1, 0.2] and np.isnan(alone["seed_ci95"]).all()
    with pytest.raises(ValueError, match="no seed"):
        over_seeds([])


# --- scripts/evaluate.py: the evaluation of a study ------------------------------------------------------------


def test_each_seed_is_scored_on_its_own_initialization_and_before_adaptation_k_cannot_matter(evaluate):
    """`evaluated` for the assignment's study: seed i's step 0 is the unadapted grid MSE of initialization i,
    computed apart, for both sections; K changes nothing before adaptation and something after; the fits are
    seed 0's on the drawn task."""
    study = dataclasses.replace(assignment_study(updates=1), learners=("maml",))
    initializations = initializations_from_seeds(lane_seeds(2))
    tasks = draw_held_out_tasks(6)
    lrs, tuning = studies.test_lrs(study, {("maml", 10): initializations}, tasks)
    assert lrs == {"maml": {"5": 0.01, "10": 0.01}} and tuning == {}, "MAML is fine-tuned at its own step size"
    results, fits, curvature = studies.evaluated(study, {("maml", 10): initializations}, tasks, lrs)
    assert curvature == {}
    assert set(results) == {"grid"} and set(results["grid"]) == {"maml"}
    by_section = results["grid"]["maml"]
    assert set(by_section) == {"5", "10"}
    for summary in by_section.values():
        assert np.shape(summary["per_seed"]) == (2, MAX_STEPS + 1)
        for key in ("mean", "seed_ci95", "ci95", "median", "diverged"):
            assert len(summary[key]) == MAX_STEPS + 1, key
        for seed, initialization in enumerate(initializations):
            assert summary["per_seed"][seed][0] == pytest.approx(unadapted_grid_mse(initialization, tasks), rel=1e-5)
        np.testing.assert_allclose(summary["mean"], np.mean(summary["per_seed"], axis=0))
        assert summary["diverged"] == [0.0] * (MAX_STEPS + 1)
    assert [seed[0] for seed in by_section["5"]["per_seed"]] == [seed[0] for seed in by_section["10"]["per_seed"]]
    assert by_section["5"]["per_seed"][0][1] != by_section["10"]["per_seed"][0][1]
    fit_task = task_to_draw(tasks)
    for k in (5, 10):
        assert fits["maml"][str(k)].shape == (MAX_STEPS + 1, 100)
        expected = BaseLearner.forward(tasks.grid_x, initializations[0]).detach().numpy()[:, 0]
        np.testing.assert_allclose(fits["maml"][str(k)][0], expected, rtol=1e-5, atol=1e-6)
        sets = scored_sets(tasks, k)
        np.testing.assert_allclose(
            fits["maml"][str(k)], predictions_after_each_step(initializations[0], sets, fit_task, 0.01), rtol=1e-6
        )


def test_the_evaluations_maml_is_trained_exactly_as_test_py_trains_it(script):
    """Seed 0 of the assignment's protocol is `python test.py`'s run: its tasks (numpy seed 1337), its
    initialization (torch seed 42), and so its losses, whatever the global RNGs hold."""
    updates = 12
    np.random.seed(NUMPY_SEED)
    torch.manual_seed(TORCH_SEED)
    reference, _ = script.learning_curve(maml_steps=1, episodes=updates, show=False)
    torch.manual_seed(0)  # the lockstep training must not depend on the global RNGs
    np.random.seed(0)
    learners = meta_trained("maml", LEARNERS["maml"], assignment_protocol(updates=updates), lane_seeds(1))
    assert learners.histories.shape == (1, updates)
    np.testing.assert_allclose(learners.histories[0], reference.history, rtol=1e-5)
    for mine, theirs in zip(learners.initialization(0), reference.initialization, strict=True):
        torch.testing.assert_close(mine, theirs.detach(), rtol=1e-5, atol=1e-6)


# --- scripts/evaluate.py: the command line ---------------------------------------------------------------------


def test_help_explains_the_script(evaluate, capsys):
    with pytest.raises(SystemExit) as exited:
        evaluate.parse_args(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for text in ("Finn et al. (2017)", "--protocol", "--updates", "--seeds", "--first-seed", "--checkpoint-dir",
                 "--retrain", "--wait-for-lock", "600 held-out tasks", "results.json", "130"):  # fmt: skip
        assert text in out, text


def test_the_arguments_choose_the_study_its_updates_and_the_seeds(evaluate, tmp_path):
    folders = ["--out-dir", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "checkpoints")]
    default = evaluate.parse_args(folders)
    assert default.study == assignment_study() and default.seeds == 10 and default.first_seed == 0
    assert not default.retrain and not default.wait_for_lock
    args = evaluate.parse_args([*folders, "--updates", "7", "--seeds", "1", "--first-seed", "3", "--retrain"])
    assert args.study == assignment_study(updates=7) and args.study.training[0].updates == 7
    assert (args.seeds, args.first_seed, args.retrain) == (1, 3, True)
    assert (tmp_path / "out").is_dir() and (tmp_path / "checkpoints").is_dir()


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--tasks", "0"], "argument --tasks: must be at least 2, got 0"),
        (["--updates", "ten"], "argument --updates: expected a whole number, got 'ten'"),
        (["--updates", "0"], "argument --updates: must be at least 1, got 0"),
        (["--seeds", "0"], "argument --seeds: must be at least 1, got 0"),
        (["--first-seed", "-1"], "argument --first-seed: must be at least 0, got -1"),
        (["--protocol", "papers"], "argument --study/--protocol: invalid choice: 'papers'"),
        (["--episodes", "10"], "unrecognized arguments: --episodes 10"),  # --updates replaced it
        (["--fast"], "unrecognized arguments: --fast"),  # every run trains in lockstep now
        (["--device", "gpu"], "argument --device: 'gpu' is not a device: give cpu or cuda (cuda:N)"),
        pytest.param(
            ["--device", "cuda"],
            "argument --device: 'cuda': torch sees no CUDA device here; use cpu",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a CUDA device here"),
        ),
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
def test_bad_arguments_exit_2_before_anything_is_made(evaluate, tmp_path, monkeypatch, capsys, bad, message):
    monkeypatch.chdir(ROOT)  # the relative paths of the cases
    out, checkpoints = tmp_path / "out", tmp_path / "checkpoints"
    with pytest.raises(SystemExit) as exited:
        evaluate.parse_args(["--out-dir", str(out), "--checkpoint-dir", str(checkpoints), *bad])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.startswith("usage:") and captured.out == ""
    assert not out.exists() and not checkpoints.exists(), "no folder may be made before the error"


# --- scripts/evaluate.py: checkpoints and interrupts, in process ------------------------------------------------


def test_a_checkpoint_of_another_learner_is_refused_naming_what_differs(evaluate, tmp_path):
    """first-order MAML's file holding MAML's learners: the run stops with one line naming the file and the field."""
    seeds = lane_seeds(1)
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    foreign = checkpoints / "assignment-first_order_maml-K10-1-seeds0-0.pt"  # where evaluate.py looks for it
    saved_learners("maml", seeds, foreign, record_of("maml", 1, seeds))
    with pytest.raises(SystemExit) as exited:
        evaluate._main_with_clear_errors(arguments(tmp_path))
    message = str(exited.value.code)
    assert message.startswith(f"error: checkpoint {str(foreign)!r}: holds {{'learner': "), message
    assert re.search(r"'first_order': False.*expected \{'learner': .*'first_order': True.*--retrain", message)
    assert not any((tmp_path / "out").iterdir())


def test_a_damaged_checkpoint_ends_the_run_with_one_line_and_nothing_written(evaluate, tmp_path):
    """MAML's checkpoint with the first float of its first weight turned into 1.98e38 (finite: the evaluation
    would have scored it, and reported MAML diverging on some tasks), the digest as it was written."""
    seeds = lane_seeds(1)
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    damaged = checkpoints / "assignment-maml-K10-1-seeds0-0.pt"  # where evaluate.py looks for it
    saved_learners("maml", seeds, damaged, record_of("maml", 1, seeds))
    content = torch.load(damaged, weights_only=True)
    content["params"]["w1"][0, 0, 0] = 1.98e38
    torch.save(content, damaged)
    as_damaged = damaged.read_bytes()
    with pytest.raises(SystemExit) as exited:
        evaluate._main_with_clear_errors(arguments(tmp_path))
    assert exited.value.code == (
        f"error: checkpoint {str(damaged)!r}: its params[w1] does not match its SHA-256 digest: the file is damaged"
    ), "a string: the exit status is 1"
    assert not any((tmp_path / "out").iterdir())
    assert list(checkpoints.iterdir()) == [damaged] and damaged.read_bytes() == as_damaged


def test_a_run_on_a_folder_another_run_holds_ends_with_one_line_naming_it(evaluate, tmp_path):
    """Another process holds --checkpoint-dir: the run trains nothing, writes nothing, and names that process."""
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    with held_by_another_process(checkpoints) as holder:
        with pytest.raises(SystemExit) as exited:
            evaluate._main_with_clear_errors(arguments(tmp_path))
        message = exited.value.code
        assert message.startswith(f"error: checkpoint {str(checkpoints)!r}: in use by process {holder.pid} (")
        assert message.endswith("or with --wait-for-lock") and "\n" not in message, "one line; exit status 1"
        assert [path.name for path in checkpoints.iterdir()] == [LOCK_FILE], "the holder's lock, and nothing trained"
        assert not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("retrain", [False, True], ids=["", "retrain"])
def test_an_interrupt_while_training_names_the_learner_and_keeps_the_finished_ones(
    evaluate, tmp_path, monkeypatch, retrain
):
    """Ctrl-C in first-order MAML's third update: the message says where, MAML's checkpoint is kept and whole."""
    calls = []
    train_many = BatchedMAML.train_many
    monkeypatch.setattr(training, "CHUNK", 1)  # the loop takes one update at a time

    def interrupted_at_the_sixth_update(self, batches):
        calls.append(None)
        if len(calls) == 6:  # MAML's 3 updates, then first-order MAML's first 2
            raise KeyboardInterrupt
        train_many(self, batches)

    monkeypatch.setattr(BatchedMAML, "train_many", interrupted_at_the_sixth_update)
    out, checkpoints = tmp_path / "out", tmp_path / "checkpoints"
    with pytest.raises(KeyboardInterrupt) as raised:
        evaluate.main(arguments(tmp_path, *(["--retrain"] if retrain else []), updates=3))
    again = "run again without --retrain" if retrain else "run again"
    assert str(raised.value) == (
        "interrupted while training; "
        f"checkpoints of maml, K=10 are kept in {checkpoints}: {again} to go on from them; "
        f"nothing was written to {out}"
    )
    assert not any(out.iterdir())
    (kept,) = checkpoints.iterdir()
    assert "maml" in kept.name and "first_order" not in kept.name
    assert load(kept, record_of("maml", 3, lane_seeds(1))).histories.shape == (1, 3)


@pytest.mark.parametrize(
    "stopped_in, stage, results, written",
    [
        ("evaluated", "evaluating", "nothing was written to {out}", []),
        pytest.param(
            "plot_fits",
            "writing the results and figures",
            "results.json, results.md, mse_vs_steps.png in {out} are complete and this run's",
            ["mse_vs_steps.png", "results.json", "results.md"],
            marks=pytest.mark.slow,  # the whole evaluation runs first
        ),
    ],
)
def test_an_interrupt_after_training_says_where_it_stopped_and_what_is_kept(
    evaluate, tmp_path, monkeypatch, stopped_in, stage, results, written
):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, stopped_in, interrupt)
    out, checkpoints = tmp_path / "out", tmp_path / "checkpoints"
    with pytest.raises(KeyboardInterrupt) as raised:
        evaluate.main(arguments(tmp_path))
    trained = ", ".join(f"{name}, K=10" for name in TRAINED)
    assert str(raised.value) == (
        f"interrupted while {stage}; checkpoints of {trained} are kept in {checkpoints}: "
        f"run again to go on from them; {results.format(out=out)}"
    )
    assert sorted(path.name for path in out.iterdir()) == written
    assert len(list(checkpoints.glob("*.pt"))) == len(TRAINED)


# --- results.md rebuilt from the committed results.json ---------------------------------------------------------


@pytest.mark.parametrize(
    "folder",
    [
        pytest.param(folder, marks=pytest.mark.skipif(old_schema(folder), reason="regenerated in the new schema"))
        for folder in ("evaluation", "paper_protocol")
    ],
)
def test_the_committed_results_md_is_the_table_of_the_committed_results_json(folder):
    results_md = (ROOT / "docs" / folder / "results.md").read_text()
    assert results_md == table_of(committed(folder), results_md)


# --- Slow: short runs end to end --------------------------------------------------------------------------------

UPDATES, SEEDS = 5, 2


@pytest.fixture(scope="module")
def small_run(evaluate, tmp_path_factory):
    """One short run of the assignment's study, in process: its arguments, out dir, checkpoint dir and report."""
    folder = tmp_path_factory.mktemp("small_run")
    argv = arguments(folder, updates=UPDATES, seeds=SEEDS, tasks=TASKS)
    return argv, folder / "out", folder / "checkpoints", evaluate.main(argv)


@pytest.mark.slow
def test_a_short_run_writes_the_results_and_figures_in_one_schema(small_run):
    _, out, checkpoints, report = small_run
    names = ["fits.png", "mse_vs_steps.png", "results.json", "results.md"]
    assert sorted(path.name for path in out.iterdir()) == names
    assert is_png(out / "fits.png") and is_png(out / "mse_vs_steps.png")
    results = json.loads((out / "results.json").read_text())
    assert results == as_json(report)
    assert set(results) == {"study", "learners", "evaluation", "wall_seconds", "mse", "curvature", "learned",
                            "divergence_warnings", "edge_of_stability"}  # fmt: skip
    assert results["curvature"] == results["divergence_warnings"] == results["edge_of_stability"] == {}, (
        "the assignment's study measures no curvature"
    )
    assert results["learned"] == {}, "its learners learn an initialization alone"
    assert study_of(results["study"]) == assignment_study(updates=UPDATES)
    seeds = lane_seeds(SEEDS)
    assert results["evaluation"]["tasks"] == TASKS and results["evaluation"]["seeds"] == as_json(seeds)
    assert results["evaluation"]["held_out_seed"] == HELD_OUT_SEED and results["evaluation"]["steps"] == MAX_STEPS
    assert results["evaluation"]["task_in_fits_png"] == task_to_draw(draw_held_out_tasks(TASKS))
    assert set(results["wall_seconds"]) == {"train_or_load", "evaluate"}
    for name, record in results["learners"].items():
        assert record["learner"] == as_json(LEARNERS[name].record())
        if name in TRAINED:
            assert record["K=10"]["source"] == "trained" and record["K=10"]["updates"] == UPDATES
            assert len(record["K=10"]["final_training_query_mse"]) == SEEDS and record["K=10"]["seconds"] >= 0
        else:
            assert record["K=10"] == {"source": "random", "updates": 0}
    assert len(list(checkpoints.glob("*.pt"))) == len(TRAINED)
    assert (checkpoints / f"assignment-evaluation-seeds0-{SEEDS - 1}.json").is_file(), "the evaluation, cached"
    for name in TRAINED:  # each learner's checkpoint holds its record, and the training losses reported
        (path,) = checkpoints.glob(f"*-{name}-*")
        learners = load(path, record_of(name, UPDATES, seeds))
        np.testing.assert_allclose(
            learners.histories.mean(axis=1), results["learners"][name]["K=10"]["final_training_query_mse"], rtol=1e-6
        )
    table = (out / "results.md").read_text()
    assert table == table_of(results, table)
    assert all(STYLES[name][0] in table for name in assignment_study().learners)


@pytest.mark.slow
def test_a_short_run_has_finite_numbers_for_every_learner_section_and_step(small_run):
    report = small_run[3]
    assert set(report["mse"]) == {"grid"}
    assert set(report["mse"]["grid"]) == set(assignment_study().learners)
    for name, by_section in report["mse"]["grid"].items():
        assert set(by_section) == {"5", "10"}
        for summary in by_section.values():
            assert np.shape(summary["per_seed"]) == (SEEDS, MAX_STEPS + 1)
            for key in ("mean", "seed_ci95", "ci95", "median"):
                assert len(summary[key]) == MAX_STEPS + 1 and all(np.isfinite(summary[key])), key
                assert all(value > 0 for value in summary[key]), key
            np.testing.assert_allclose(summary["mean"], np.mean(summary["per_seed"], axis=0))
        step_zero = {section: [seed[0] for seed in summary["per_seed"]] for section, summary in by_section.items()}
        assert step_zero["5"] == step_zero["10"], f"{name}: before adaptation K cannot matter"
    assert report["mse"]["grid"]["scratch"]["10"]["per_seed"][0][0] == pytest.approx(
        unadapted_grid_mse(initializations_from_seeds(lane_seeds(1))[0], draw_held_out_tasks(TASKS)), rel=1e-5
    )


@pytest.mark.slow
def test_a_second_run_loads_the_checkpoints_and_reproduces_the_numbers(evaluate, small_run):
    argv, _, _, first = small_run
    second = evaluate.main(argv)
    assert second["mse"] == first["mse"]
    for name in TRAINED:
        record, before = second["learners"][name]["K=10"], first["learners"][name]["K=10"]
        assert record["source"] == "checkpoint" and record["updates"] == UPDATES
        assert record["final_training_query_mse"] == before["final_training_query_mse"]


@pytest.mark.slow
def test_retrain_trains_again_and_gives_the_same_numbers(evaluate, small_run, tmp_path):
    argv, _, checkpoints, first = small_run
    copies = shutil.copytree(checkpoints, tmp_path / "checkpoints")  # the other tests' checkpoints stay as made
    again = evaluate.main([*argv, "--out-dir", str(tmp_path / "out"), "--checkpoint-dir", str(copies), "--retrain"])
    assert {again["learners"][name]["K=10"]["source"] for name in TRAINED} == {"trained"}
    for name, by_section in first["mse"]["grid"].items():
        for section, summary in by_section.items():
            np.testing.assert_allclose(again["mse"]["grid"][name][section]["per_seed"], summary["per_seed"], rtol=1e-6)


@pytest.mark.slow
def test_results_md_names_the_command_that_wrote_it(small_run):
    argv, out, _, _ = small_run
    assert f"Written by `python scripts/evaluate.py {' '.join(argv)}`" in (out / "results.md").read_text()


@pytest.mark.slow
def test_the_script_runs_one_seed_from_the_command_line(tmp_path):
    """`python scripts/evaluate.py` itself, with one seed (not seed 0): the task interval stands in for the
    between-seed one, which is null in results.json."""
    argv = arguments(tmp_path, "--first-seed", "2", updates=2, seeds=1, tasks=4)
    result = run_python(SCRIPT, *argv, timeout=600)
    assert result.returncode == 0, result.stderr
    out, checkpoints = tmp_path / "out", tmp_path / "checkpoints"
    results = json.loads((out / "results.json").read_text())
    assert results["evaluation"]["seeds"] == [[NUMPY_SEED + 2, TORCH_SEED + 2]]
    for name in TRAINED:
        (path,) = checkpoints.glob(f"*-{name}-*")
        load(path, record_of(name, 2, lane_seeds(1, first=2)))
    for summary in (s for by_section in results["mse"]["grid"].values() for s in by_section.values()):
        assert summary["seed_ci95"] == [None] * (MAX_STEPS + 1) and all(c > 0 for c in summary["ci95"])
    table = (out / "results.md").read_text()
    assert "mean ± 95% interval over tasks" in table
    assert f"Written by `python scripts/evaluate.py {' '.join(argv)}`" in table
    assert table == table_of(results, table)
    assert table in result.stdout


@pytest.mark.slow
def test_the_script_on_a_held_folder_exits_1_or_waits_for_it(tmp_path):
    """`python scripts/evaluate.py` itself, while another process holds --checkpoint-dir: status 1 and one line
    naming it; with --wait-for-lock, it says whom it waits for, trains nothing while it waits, and once the
    holder lets go, trains and evaluates."""
    checkpoints, log = tmp_path / "checkpoints", tmp_path / "stderr.txt"
    checkpoints.mkdir()
    with held_by_another_process(checkpoints) as holder:
        refused = run_python(SCRIPT, *arguments(tmp_path), timeout=600)
        assert refused.returncode == 1, refused.stderr
        assert refused.stderr.startswith(f"error: checkpoint {str(checkpoints)!r}: in use by process {holder.pid} (")
        assert refused.stderr.count("\n") == 1 and refused.stdout == ""
        with log.open("w") as stderr:
            waiting = subprocess.Popen(
                [sys.executable, str(SCRIPT), *arguments(tmp_path, "--wait-for-lock")],
                cwd=ROOT, env={**HEADLESS, "MPLBACKEND": "Agg"}, stdout=subprocess.DEVNULL, stderr=stderr,
            )  # fmt: skip
            try:
                deadline = time.monotonic() + 300
                while "waiting for" not in log.read_text() and waiting.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert log.read_text().startswith(f"waiting for process {holder.pid} ("), log.read_text()
                assert [path.name for path in checkpoints.iterdir()] == [LOCK_FILE], "nothing trained while it waits"
                holder.stdin.write("\n")
                holder.stdin.flush()
                assert waiting.wait(timeout=600) == 0, log.read_text()
            finally:
                waiting.kill()
                waiting.wait()
    assert sorted(path.name for path in checkpoints.iterdir()) == sorted(
        [*(f"assignment-{name}-K10-1-seeds0-0.pt" for name in TRAINED), "assignment-evaluation-seeds0-0.json"]
    ), "trained once the holder let go, and the lock file removed"
    assert (tmp_path / "out" / "results.json").is_file()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is POSIX's")
def test_ctrl_c_keeps_the_trained_learners_writes_nothing_half_and_exits_130(tmp_path):
    """A real SIGINT while the second learner meta-trains: one line on stderr, exit 130, the first learner's
    checkpoint untouched, the second's saved part way, no other or temporary file left behind."""
    out, checkpoints, log = tmp_path / "out", tmp_path / "checkpoints", tmp_path / "stderr.txt"
    checkpoints.mkdir()
    updates = 4_000  # eager (compiled from training.COMPILE_FROM updates): the interrupt lands in training
    first = checkpoints / f"assignment-maml-K10-{updates}-seeds0-0.pt"  # as if MAML were trained: loaded
    saved_learners("maml", lane_seeds(1), first, record_of("maml", updates, lane_seeds(1)), updates=updates)
    saved = first.read_bytes()
    returncode = interrupt_after_progress(SCRIPT, arguments(tmp_path, updates=updates), updates, log)
    errors = log.read_text()
    assert returncode == 130, errors
    stopped = re.search(
        rf"\ninterrupted while training; checkpoints of maml, K=10, first_order_maml, K=10 \(part-trained: the next "
        rf"run resumes it\) are kept in {re.escape(str(checkpoints))}: run again to go on from them; nothing was "
        rf"written to {re.escape(str(out))}\n",
        errors,
    )
    assert stopped, errors
    assert "Traceback" not in errors
    assert list(out.iterdir()) == []
    partial = checkpoints / f"assignment-first_order_maml-K10-{updates}-seeds0-0.pt"
    assert set(checkpoints.iterdir()) == {first, partial} and first.read_bytes() == saved
    progress = load_progress(partial, record_of("first_order_maml", updates, lane_seeds(1)))
    assert isinstance(progress, Progress) and 0 < len(progress.learners.losses) < updates


# A run of scripts/evaluate.py that saves its progress every SAVE_EVERY seconds: sys.argv[1] and on are its arguments.
SAVING_OFTEN = """
import runpy, sys
from maml_sine import training
training.SAVE_EVERY = 0.2
sys.argv = ["scripts/evaluate.py", *sys.argv[1:]]
runpy.run_path("scripts/evaluate.py", run_name="__main__")
"""


@pytest.mark.slow
def test_a_killed_run_keeps_its_last_save_and_the_rerun_resumes_and_matches_a_run_never_stopped(tmp_path):
    """SIGKILL (no handler runs) while MAML meta-trains, saving every 0.2 s: its checkpoint holds the updates of
    the last save, the rerun resumes from it, and every learner's checkpoint is bitwise the one of a run never
    stopped."""
    updates, log = 600, tmp_path / "stderr.txt"
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    partial = killed / "checkpoints" / f"assignment-maml-K10-{updates}-seeds0-0.pt"
    command = [sys.executable, "-c", SAVING_OFTEN, *arguments(killed, updates=updates)]
    with log.open("w") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, env={**HEADLESS, "MPLBACKEND": "Agg"}, stderr=stderr)
        try:
            deadline = time.monotonic() + 300
            while not partial.exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # a few saves more
            process.kill()
            assert process.wait(timeout=60) == -9, log.read_text()
        finally:
            process.kill()
            process.wait()
    record = record_of("maml", updates, lane_seeds(1))
    progress = load_progress(partial, record)
    assert isinstance(progress, Progress) and 0 < len(progress.learners.losses) < updates
    resumed = subprocess.run(command, cwd=ROOT, env={**HEADLESS, "MPLBACKEND": "Agg"}, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((killed / "out" / "results.json").read_text())
    assert report["learners"]["maml"]["K=10"]["source"] == "resumed"
    never_stopped = run_python(SCRIPT, *arguments(straight, updates=updates))
    assert never_stopped.returncode == 0, never_stopped.stderr
    for name in TRAINED:
        file = f"assignment-{name}-K10-{updates}-seeds0-0.pt"
        reference = load(straight / "checkpoints" / file, record_of(name, updates, lane_seeds(1)))
        learners = load(killed / "checkpoints" / file, record_of(name, updates, lane_seeds(1)))
        for field in ("params", "exp_avgs", "exp_avg_sqs"):
            mine, theirs = getattr(learners.state, field), getattr(reference.state, field)
            assert all(torch.equal(mine[key], theirs[key]) for key in theirs), (name, field)
        assert torch.equal(learners.state.step, reference.state.step)
        np.testing.assert_array_equal(learners.histories, reference.histories)
        np.testing.assert_array_equal(learners.gradient_norm_histories, reference.gradient_norm_histories)
    assert report["mse"] == json.loads((straight / "out" / "results.json").read_text())["mse"]


def test_a_learner_added_to_the_registry_alone_is_trained_evaluated_and_reported(evaluate, monkeypatch, tmp_path):
    """The registry is the one place a learner is defined: one entry, and the scripts train and report it."""
    monkeypatch.setitem(LEARNERS, "maml_s2", Learner(Algorithm(num_steps=2)))
    study = dataclasses.replace(assignment_study(updates=3), learners=("maml", "maml_s2"))
    monkeypatch.setitem(STUDIES, "assignment", lambda **options: study)
    report = evaluate.main(arguments(tmp_path, updates=3, seeds=2, tasks=4))
    assert report["learners"]["maml_s2"]["learner"]["algorithm"]["num_steps"] == 2
    assert "| maml_s2 | " in (tmp_path / "out" / "results.md").read_text()
    assert is_png(tmp_path / "out" / "mse_vs_steps.png")


def test_a_seed_whose_training_diverges_stops_there_and_is_evaluated_as_it_was(tmp_path, monkeypatch):
    """A lane whose meta-update overflows stops before it (the others go on), is saved stopped, is named in
    results.json with the update it stopped at, and is scored as it was; a second run loads it as it was saved."""
    evaluate = import_script(ROOT / "scripts" / "evaluate.py")
    study = dataclasses.replace(assignment_study(updates=4), learners=("maml",))
    monkeypatch.setitem(evaluate.STUDIES, "assignment", lambda **options: study)
    drawn = TaskStreams.next_batch
    batches = []

    def seed_1_overflows_at_update_1(self):
        tasks = drawn(self)
        batches.append(tasks)
        if len(batches) == 2:
            for part in (1, 3):  # support and query y of seed 1: its losses overflow
                tasks[part][1] *= 1e30
        return tasks

    monkeypatch.setattr(TaskStreams, "next_batch", seed_1_overflows_at_update_1)
    arguments = ["--updates", "4", "--tasks", "4", "--seeds", "2", "--out-dir", str(tmp_path / "out"),
                 "--checkpoint-dir", str(tmp_path / "checkpoints")]  # fmt: skip
    first, again = evaluate.main(arguments), evaluate.main(arguments)
    trained, loaded = (report["learners"]["maml"]["K=10"] for report in (first, again))
    assert trained["stopped_at_update"] == loaded["stopped_at_update"] == {"1": 1}
    assert (trained["source"], loaded["source"]) == ("trained", "checkpoint")
    assert np.isnan(trained["final_training_query_mse"][1]) and np.isfinite(trained["final_training_query_mse"][0])
    assert first["mse"] == again["mse"] and all(np.isfinite(first["mse"]["grid"]["maml"]["10"]["mean"]))
