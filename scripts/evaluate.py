"""Meta-test evaluation: how well does each learner fit a new sine task from K points after 0..10 SGD steps?

    python scripts/evaluate.py                     # train or load the learners, evaluate, write docs/evaluation/
    python scripts/evaluate.py --retrain           # train again even where a checkpoint exists
    python scripts/evaluate.py --episodes 500 --tasks 50 --out-dir /tmp/eval --checkpoint-dir /tmp/checkpoints

The sine-wave experiment of Finn et al. (2017), Figures 2 and 3, for four learners:
  MAML, S=1             second-order MAML with one inner step: the learner of `python test.py`
  first-order MAML, S=1 the same without the second-order terms
  pretrained (S=0)      `MAML(num_steps=0)`: one network trained on every task's points, then fine-tuned
  from scratch          the random initialization the three above start from: the floor

The three meta-learners train on the task stream of `python test.py` (SineGenerator(k=10, k_test=40),
40,000 episodes). numpy is seeded with 1337 and torch with 42 right before each learner is built, so
all of them see the identical tasks, MAML S=1 ends exactly as `python test.py` does, and the
from-scratch weights are the very initialization the meta-learners started from. A trained learner is
saved in --checkpoint-dir and loaded from there on the next run.

They are then tested on 600 new tasks drawn from a separate generator (seed HELD_OUT_SEED below), the
same tasks in every run: each learner takes 0..10 plain SGD steps (lr 0.01) on K = 5 or 10 support
points of a task and is scored by its MSE on 100 evenly spaced x in [-5, 5]. Written to --out-dir:
results.json (mean and 95% confidence interval per learner, K and step, and the protocol), results.md
(a table), mse_vs_steps.png (the paper's Figure 3) and fits.png (Figure 2, one held-out task).

Ctrl-C stops a run with exit status 130 and a line saying how far it got; every file is written
atomically, so nothing is left half-written, and the learners already trained stay in --checkpoint-dir.
"""

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.lines import Line2D
from matplotlib.ticker import FormatStrFormatter, NullFormatter
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from assignment import LR_BASE, MAML  # noqa: E402
from extras.adaptation import mse_after_each_step, predictions_after_each_step  # noqa: E402
from extras.checkpoint import CheckpointError, load_maml, save_maml  # noqa: E402
from extras.compiled import compiled_trainer  # noqa: E402
from extras.heldout import HeldOutTasks, draw_held_out_tasks  # noqa: E402
from extras.statistics import mean_and_ci95  # noqa: E402
from utils import (  # noqa: E402
    X_RANGE,
    BaseLearner,
    SineGenerator,
    probe_writable,
    save_figure,
    whole_number,
    write_text_atomically,
)

# Meta-training: the seeded task stream and budget of `python test.py`.
NUMPY_SEED = 1337
TORCH_SEED = 42
EPISODES = 40_000
TRAIN_SUPPORT_POINTS = 10
TRAIN_QUERY_POINTS = 40
FINAL_WINDOW = 500  # episodes over which the final training query MSE is averaged (the graders' window)

# Meta-testing: new tasks, the support sizes, SGD steps and the grid the paper's Figures 2 and 3 use.
HELD_OUT_SEED = 3_031_703  # any fixed seed; the held-out tasks never come from np.random
HELD_OUT_TASKS = 600
SUPPORT_SIZES = (5, 10)
MAX_STEPS = 10
INNER_LR = LR_BASE
GRID_X = np.linspace(*X_RANGE, 100)
TABLE_STEPS = (0, 1, 5, 10)
MSE_TICKS = (0.1, 0.2, 0.3, 0.5, 1, 2, 3, 5)
FIT_STEPS = (0, 1, 10)
FIT_AMPLITUDE = 3.0  # fits.png draws the first held-out task with a larger amplitude, where the fits differ visibly

WRITING = "writing the figures and results"  # the last stage of a run

DEFAULT_OUT_DIR = ROOT / "docs" / "evaluation"
DEFAULT_CHECKPOINT_DIR = ROOT / "checkpoints"


@dataclass(frozen=True)
class Learner:
    """How a learner is built: MAML's inner steps during meta-training, or None for no meta-training at all."""

    label: str
    color: str
    num_steps: int | None = None
    first_order: bool = False


LEARNERS = {
    "maml": Learner("MAML, S=1", "tab:blue", num_steps=1),
    "first_order_maml": Learner("first-order MAML, S=1", "tab:green", num_steps=1, first_order=True),
    "pretrained": Learner("pretrained (S=0)", "tab:orange", num_steps=0),
    "scratch": Learner("from scratch (random init)", "tab:gray"),
}


def meta_train(learner: Learner, episodes: int, fast: bool = False) -> MAML:
    """Meta-train a fresh MAML on the seeded stream of `python test.py`, re-seeded for this learner.

    `fast` trains through the compiled path of extras/compiled.py (equal up to rounding; compiled once per learner).
    """
    np.random.seed(NUMPY_SEED)
    torch.manual_seed(TORCH_SEED)
    tasks = SineGenerator(k=TRAIN_SUPPORT_POINTS, k_test=TRAIN_QUERY_POINTS)
    maml = MAML(learner.num_steps, first_order=learner.first_order)
    train = compiled_trainer(maml) if fast else maml.train
    try:
        with tqdm(tasks.generator(episodes), total=episodes, desc=learner.label, unit="task", mininterval=0.5) as bar:
            for _, task in bar:
                train(task)
    except KeyboardInterrupt:  # say how far it got; `main` adds what is kept
        done = f"meta-training {learner.label}, after {len(maml.history):,} of {episodes:,} episodes"
        raise KeyboardInterrupt(done) from None
    return maml


def trained_or_loaded(name: str, learner: Learner, args: argparse.Namespace) -> tuple[MAML, str]:
    """The meta-trained learner from its checkpoint if there is one (and not --retrain), else trained and saved."""
    path = args.checkpoint_dir / f"{name}-{args.episodes}.pt"
    if path.exists() and not args.retrain:
        maml = load_maml(path)
        found = (maml.num_steps, maml.first_order, len(maml.history))
        expected = (learner.num_steps, learner.first_order, args.episodes)
        if found != expected:
            problem = f"holds (S, first_order, episodes) = {found}, expected {expected}; delete it or use --retrain"
            raise CheckpointError(path, problem)
        return maml, "checkpoint"
    maml = meta_train(learner, args.episodes, args.fast)
    save_maml(maml, path)
    return maml, "trained"


def initialization_of(name: str, learner: Learner, args: argparse.Namespace) -> tuple[list[torch.Tensor], dict]:
    """A learner's initialization and a record of where it came from (and, if meta-trained, its final training MSE)."""
    start = time.perf_counter()
    if learner.num_steps is None:
        torch.manual_seed(TORCH_SEED)
        return BaseLearner.random_initial_weights(), {"source": "random", "episodes": 0, "seconds": 0.0}
    maml, source = trained_or_loaded(name, learner, args)
    record = {
        "source": source,
        "episodes": len(maml.history),
        "final_training_query_mse": float(np.mean(maml.history[-FINAL_WINDOW:])),
        "seconds": round(time.perf_counter() - start, 2),
    }
    return maml.initialization, record


def evaluate(initialization: list[torch.Tensor], tasks: HeldOutTasks) -> dict[str, dict[str, list[float]]]:
    """Mean and 95% CI of the grid MSE over the held-out tasks after 0..MAX_STEPS steps, for every K."""
    results = {}
    for k in SUPPORT_SIZES:
        errors = mse_after_each_step(initialization, tasks.support(k), tasks.grid(), MAX_STEPS, INNER_LR)
        mean, ci95 = mean_and_ci95(errors.numpy())
        results[str(k)] = {"mean": mean.tolist(), "ci95": ci95.tolist()}
    return results


def task_to_draw(tasks: HeldOutTasks) -> int:
    """The first held-out task with an amplitude above FIT_AMPLITUDE (else task 0): picked by its shape, not by any fit.

    A small wave, or one close to the mean of all tasks (about 1.6 cos x, as phases lie in
    [0, pi)), would make every learner's fit look alike.
    """
    large = np.flatnonzero(tasks.amplitudes > FIT_AMPLITUDE)
    return int(large[0]) if len(large) else 0


def fits_on_one_task(initialization: list[torch.Tensor], tasks: HeldOutTasks, task: int) -> dict[int, np.ndarray]:
    """For each K: the prediction on the grid for held-out `task` after 0..MAX_STEPS steps, shape (steps + 1, m)."""
    fits = {}
    for k in SUPPORT_SIZES:
        support_x, support_y = (tensor[task : task + 1] for tensor in tasks.support(k))
        predictions = predictions_after_each_step(
            initialization, (support_x, support_y), tasks.grid_x, MAX_STEPS, INNER_LR
        )
        fits[k] = predictions[:, 0, :, 0].numpy()
    return fits


def plot_mse_against_steps(results: dict, num_tasks: int, out: Path) -> None:
    """The paper's Figure 3: mean grid MSE against SGD steps, a 95% CI band per learner, one panel per K."""
    figure, panels = plt.subplots(1, len(SUPPORT_SIZES), figsize=(11, 4.6), sharey=True)
    steps = np.arange(MAX_STEPS + 1)
    for axes, k in zip(panels, SUPPORT_SIZES):
        for name, learner in LEARNERS.items():
            mean, ci95 = (np.array(results[name][str(k)][key]) for key in ("mean", "ci95"))
            axes.plot(steps, mean, marker="o", markersize=3.5, color=learner.color, label=learner.label)
            axes.fill_between(steps, mean - ci95, mean + ci95, color=learner.color, alpha=0.2, linewidth=0)
        axes.set_yscale("log")
        axes.set_yticks(MSE_TICKS)
        axes.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        axes.yaxis.set_minor_formatter(NullFormatter())
        axes.set_xticks(steps)
        axes.set_title(f"K = {k} support points")
        axes.set_xlabel("SGD steps on the support points (lr 0.01)")
        axes.grid(True, which="both", alpha=0.3)
    panels[0].set_ylabel("MSE on 100 x in [-5, 5] (log scale)")
    panels[-1].legend()
    figure.suptitle(f"Fitting a new sine task: mean MSE over {num_tasks} held-out tasks, with 95% confidence bands")
    figure.tight_layout()
    save_figure(figure, out)
    plt.close(figure)


def plot_fits(fits: dict[str, dict[int, np.ndarray]], tasks: HeldOutTasks, task: int, out: Path) -> None:
    """The paper's Figure 2: one held-out task, its K support points, and each learner's fit after 0, 1, 10 steps."""
    grid_x, grid_y = (tensor.numpy().ravel() for tensor in (tasks.grid_x, tasks.grid()[1][task]))
    figure, panels = plt.subplots(len(SUPPORT_SIZES), len(LEARNERS), figsize=(15, 7), sharex=True, sharey=True)
    styles = {0: (":", 0.9), 1: ("--", 1.5), MAX_STEPS: ("-", 2.0)}
    for row, k in zip(panels, SUPPORT_SIZES):
        support_x, support_y = (tensor[task].numpy().ravel() for tensor in tasks.support(k))
        for axes, (name, learner) in zip(row, LEARNERS.items()):
            axes.plot(grid_x, grid_y, color="black", linewidth=1.2)
            for step in FIT_STEPS:
                linestyle, linewidth = styles[step]
                axes.plot(grid_x, fits[name][k][step], color=learner.color, linestyle=linestyle, linewidth=linewidth)
            axes.plot(support_x, support_y, "^", color="black", markersize=7)
            axes.set_title(f"{learner.label}, K = {k}", fontsize=11)
            axes.grid(True, alpha=0.3)
        row[0].set_ylabel("y")
    for axes in panels[-1]:
        axes.set_xlabel("x")
    legend = [
        Line2D([], [], color="black", linewidth=1.2, label="true function"),
        Line2D([], [], color="black", marker="^", linestyle="", label="K support points (used for the SGD steps)"),
        *[
            Line2D([], [], color="dimgray", linestyle=styles[s][0], linewidth=styles[s][1], label=_steps(s))
            for s in FIT_STEPS
        ],
    ]
    figure.legend(handles=legend, loc="lower center", ncol=len(legend), frameon=False)
    amplitude, phase = tasks.amplitudes[task], tasks.phases[task]
    title = (
        f"Held-out task {task}, y = {amplitude:.2f} sin(x + {phase:.2f}): each learner's fit from K points as it adapts"
    )
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    save_figure(figure, out)
    plt.close(figure)


def _steps(step: int) -> str:
    return "before adaptation" if step == 0 else f"after {step} SGD step{'s' * (step != 1)}"


def markdown_table(results: dict, num_tasks: int) -> str:
    """results.md: for each K, mean MSE +- 95% CI of every learner at TABLE_STEPS."""
    lines = [f"# MSE on {num_tasks} held-out sine tasks (mean ± 95% CI), by SGD steps on K support points", ""]
    for k in SUPPORT_SIZES:
        lines += [f"## K = {k}", "", "| learner | " + " | ".join(_steps(s) for s in TABLE_STEPS) + " |"]
        lines.append("| --- |" + " ---: |" * len(TABLE_STEPS))
        for name, learner in LEARNERS.items():
            cells = [
                f"{results[name][str(k)]['mean'][s]:.3f} ± {results[name][str(k)]['ci95'][s]:.3f}" for s in TABLE_STEPS
            ]
            lines.append(f"| {learner.label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Written by `python scripts/evaluate.py`; every step 0..10 is in results.json.")
    return "\n".join(lines) + "\n"


def protocol(args: argparse.Namespace, fit_task: int) -> dict:
    """What the numbers depend on, for results.json."""
    return {
        "training": {
            "numpy_seed": NUMPY_SEED,
            "torch_seed": TORCH_SEED,
            "episodes": args.episodes,
            "support_points": TRAIN_SUPPORT_POINTS,
            "query_points": TRAIN_QUERY_POINTS,
            "tasks_per_meta_update": 1,
        },
        "evaluation": {
            "held_out_seed": HELD_OUT_SEED,
            "tasks": args.tasks,
            "support_sizes": list(SUPPORT_SIZES),
            "steps": MAX_STEPS,
            "inner_lr": INNER_LR,
            "optimizer": "plain SGD on the support MSE",
            "score": f"MSE on numpy.linspace({X_RANGE[0]}, {X_RANGE[1]}, {len(GRID_X)})",
            "ci95": "1.96 * std / sqrt(tasks), population std",
            "task_in_fits_png": fit_task,
        },
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--episodes", type=whole_number(1), default=EPISODES, help=f"meta-training tasks (default {EPISODES})"
    )
    parser.add_argument(
        "--tasks", type=whole_number(2), default=HELD_OUT_TASKS, help=f"held-out tasks (default {HELD_OUT_TASKS})"
    )
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="folder for the results and figures")
    parser.add_argument("--checkpoint-dir", type=Path, default=DEFAULT_CHECKPOINT_DIR, help="folder for checkpoints")
    parser.add_argument("--retrain", action="store_true", help="meta-train even where a checkpoint exists")
    parser.add_argument("--fast", action="store_true", help="meta-train with the compiled path (torch.compile)")
    args = parser.parse_args(argv)
    folders = {"--out-dir": args.out_dir, "--checkpoint-dir": args.checkpoint_dir}
    for option, folder in folders.items():
        if folder.exists() and not folder.is_dir():
            parser.error(f"{option}: {str(folder)!r} is a file, not a folder")
    for option, folder in folders.items():
        try:  # create it and write in it now: a folder that cannot hold the results must not cost the training
            folder.mkdir(parents=True, exist_ok=True)
            probe_writable(folder)
        except OSError as error:
            parser.error(f"{option}: cannot write in folder {str(folder)!r} ({error.strerror})")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the whole evaluation; returns what results.json holds.

    Ctrl-C raises KeyboardInterrupt with one line for the user: where the run stopped and what it kept.
    """
    args = parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    stage, saved = "starting", []  # what the run is doing, and the learners in --checkpoint-dir, for that line
    try:
        initializations, records = {}, {}
        for name, learner in LEARNERS.items():
            stage = f"loading or saving {learner.label}"
            initializations[name], records[name] = initialization_of(name, learner, args)
            if learner.num_steps is not None:
                saved.append(learner.label)
        training_seconds = time.perf_counter() - start

        stage = "evaluating"
        tasks = draw_held_out_tasks(args.tasks, max(SUPPORT_SIZES), HELD_OUT_SEED, GRID_X)
        results = {name: evaluate(weights, tasks) for name, weights in initializations.items()}
        fit_task = task_to_draw(tasks)
        fits = {name: fits_on_one_task(weights, tasks, fit_task) for name, weights in initializations.items()}
        evaluation_seconds = time.perf_counter() - start - training_seconds

        stage = WRITING
        plot_mse_against_steps(results, len(tasks), args.out_dir / "mse_vs_steps.png")
        plot_fits(fits, tasks, fit_task, args.out_dir / "fits.png")
        report = {
            "protocol": protocol(args, fit_task),
            "learners": {name: {"label": LEARNERS[name].label, **records[name]} for name in LEARNERS},
            "wall_seconds": {
                "train_or_load": round(training_seconds, 2),
                "evaluate": round(evaluation_seconds, 2),
                "total": round(time.perf_counter() - start, 2),
            },
            "mse": results,
        }
        write_text_atomically(args.out_dir / "results.json", json.dumps(report, indent=2) + "\n")
        write_text_atomically(args.out_dir / "results.md", markdown_table(results, len(tasks)))
    except KeyboardInterrupt as interrupt:  # meta_train's message says how far it got; else the stage does
        raise KeyboardInterrupt(_interrupted(str(interrupt) or stage, saved, args)) from None
    print(markdown_table(results, len(tasks)))
    for name, record in report["learners"].items():
        print(f"{LEARNERS[name].label}: {record['source']}, {record['seconds']:.1f} s")
    seconds = report["wall_seconds"]
    print(f"train/load {seconds['train_or_load']} s, evaluate {seconds['evaluate']} s, total {seconds['total']} s")
    print(f"results and figures in {args.out_dir}")
    return report


def _interrupted(stage: str, saved: list[str], args: argparse.Namespace) -> str:
    """The line for a run stopped by Ctrl-C: where it stopped and what is on disk (every write is atomic)."""
    if saved:
        again = "run again without --retrain" if args.retrain else "run again"
        checkpoints = f"checkpoints of {', '.join(saved)} are kept in {args.checkpoint_dir}: {again} to go on from them"
    else:
        checkpoints = "no learner had finished, so no checkpoint was written"
    if stage == WRITING:
        results = f"the files in {args.out_dir} are each complete, but may not all be from this run"
    else:
        results = f"nothing was written to {args.out_dir}"
    return f"interrupted while {stage}; {checkpoints}; {results}"


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except CheckpointError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt as interrupt:
        print(str(interrupt) or "interrupted", file=sys.stderr)
        sys.exit(130)  # the shell's code for "stopped by Ctrl-C"
