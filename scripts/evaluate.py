"""Meta-test evaluation: how well does each learner fit a new sine task from K points after 0..10 SGD steps?

    python scripts/evaluate.py                     # train or load the learners, evaluate, write docs/evaluation/
    python scripts/evaluate.py --retrain           # train again even where a checkpoint exists
    python scripts/evaluate.py --episodes 500 --tasks 50 --out-dir /tmp/eval --checkpoint-dir /tmp/checkpoints
    python scripts/evaluate.py --seeds 1           # one seed, the learners of `python test.py`, trained by MAML.train

The sine-wave experiment of Finn et al. (2017), Figures 2 and 3, for four learners:
  MAML, S=1             second-order MAML with one inner step: the learner of `python test.py`
  first-order MAML, S=1 the same without the second-order terms
  pretrained (S=0)      `MAML(num_steps=0)`: one network fitted to each task's query points in turn, then fine-tuned
  from scratch          the random initialization the three above start from: the floor

Each learner is trained with --seeds seeds (default 10) at once, by the batched learner: seed i draws its
tasks (SineGenerator(k=10, k_test=40), 40,000 episodes) from numpy seed 1337 + i and its initialization
from torch seed 42 + i, the same for every learner, so seed 0 has the seeds of `python test.py` and the
from-scratch weights of a seed are the very initialization its meta-learners started from. Every number
is the mean over seeds, with a between-seed 95% interval (Student t) beside the task-sampling one. With
--seeds 1 each learner is trained by MAML.train itself, and MAML S=1 ends exactly as `python test.py`
does. Trained learners are saved in --checkpoint-dir and loaded from there on the next run.

They are then tested on 600 new tasks drawn from a separate generator, the same tasks in every run:
each learner takes 0..10 plain SGD steps (lr 0.01) on K = 5 or 10 support points of a task and is
scored by its MSE on 100 evenly spaced x in [-5, 5]. Written to --out-dir: results.json (mean and 95%
confidence intervals per learner, K and step, every seed's mean, and the protocol), results.md (a
table), mse_vs_steps.png (the paper's Figure 3) and fits.png (Figure 2, one held-out task, seed 0).

Ctrl-C stops a run with exit status 130 and a line saying how far it got; every file is written
atomically, so nothing is left half-written, and the learners already trained stay in --checkpoint-dir.
"""

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from assignment import INNER_LR
from maml_sine.batched import initializations_from_seeds
from maml_sine.checkpoints import CheckpointError
from maml_sine.cli import make_output_folders, run_command, whole_number
from maml_sine.evaluation import (
    GRID_X,
    HELD_OUT_SEED,
    HELD_OUT_TASKS,
    MAX_STEPS,
    SUPPORT_SIZES,
    draw_held_out_tasks,
    evaluate,
    evaluate_over_seeds,
    fits_on_one_task,
    task_to_draw,
)
from maml_sine.files import write_text_atomically
from maml_sine.reports import markdown_table, plot_fits, plot_mse_against_steps
from maml_sine.training import (
    EPISODES,
    NUMPY_SEED,
    QUERY_POINTS,
    SUPPORT_POINTS,
    TORCH_SEED,
    LearnerSpec,
    final_mse,
    final_mse_per_seed,
    lane_seeds,
    trained_or_loaded,
    trained_or_loaded_seeds,
)
from utils import X_RANGE, BaseLearner

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = ROOT / "docs" / "evaluation"
DEFAULT_CHECKPOINT_DIR = ROOT / "checkpoints"
LEARNERS = {
    "maml": LearnerSpec("MAML, S=1", "tab:blue", num_steps=1),
    "first_order_maml": LearnerSpec("first-order MAML, S=1", "tab:green", num_steps=1, first_order=True),
    "pretrained": LearnerSpec("pretrained (S=0)", "tab:orange", num_steps=0),
    "scratch": LearnerSpec("from scratch (random init)", "tab:gray"),
}
SEEDS = 10
WRITING = "writing the figures and results"  # the last stage of a run


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--episodes", type=whole_number(1), default=EPISODES, help=f"meta-training tasks (default {EPISODES})"
    )
    parser.add_argument(
        "--tasks", type=whole_number(2), default=HELD_OUT_TASKS, help=f"held-out tasks (default {HELD_OUT_TASKS})"
    )
    parser.add_argument("--seeds", type=whole_number(1), default=SEEDS, help=f"seeds per learner (default {SEEDS})")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="folder for the results and figures")
    parser.add_argument("--checkpoint-dir", type=Path, default=DEFAULT_CHECKPOINT_DIR, help="folder for checkpoints")
    parser.add_argument("--retrain", action="store_true", help="meta-train even where a checkpoint exists")
    parser.add_argument(
        "--fast", action="store_true", help="with --seeds 1: meta-train with the compiled path (many seeds always are)"
    )
    args = parser.parse_args(argv)
    make_output_folders(parser, {"--out-dir": args.out_dir, "--checkpoint-dir": args.checkpoint_dir})
    return args


def initializations_of(
    name: str, learner: LearnerSpec, args: argparse.Namespace
) -> tuple[list[list[torch.Tensor]], dict]:
    """A learner's initialization of every seed, and a record of where they came from (and their final MSE)."""
    if args.seeds > 1:
        return _initializations_over_seeds(name, learner, args)
    initialization, record = _initialization_of_one_seed(name, learner, args)
    return [initialization], record


def _initializations_over_seeds(
    name: str, learner: LearnerSpec, args: argparse.Namespace
) -> tuple[list[list[torch.Tensor]], dict]:
    start = time.perf_counter()
    if learner.num_steps is None:
        initializations = initializations_from_seeds(lane_seeds(args.seeds))
        return initializations, {"source": "random", "episodes": 0, "seconds": 0.0}
    path = args.checkpoint_dir / f"{name}-{args.episodes}-{args.seeds}seeds.pt"
    learners, seeds, source = trained_or_loaded_seeds(learner, path, args.episodes, args.seeds, retrain=args.retrain)
    record = {
        "source": source,
        "episodes": len(learners.losses),
        "seeds": seeds,
        "final_training_query_mse": final_mse_per_seed(learners.histories).tolist(),
        "seconds": round(time.perf_counter() - start, 2),
    }
    return [learners.initialization(seed) for seed in range(len(seeds))], record


def _initialization_of_one_seed(
    name: str, learner: LearnerSpec, args: argparse.Namespace
) -> tuple[list[torch.Tensor], dict]:
    start = time.perf_counter()
    if learner.num_steps is None:
        torch.manual_seed(TORCH_SEED)
        return BaseLearner.random_initial_weights(), {"source": "random", "episodes": 0, "seconds": 0.0}
    path = args.checkpoint_dir / f"{name}-{args.episodes}.pt"
    maml, source = trained_or_loaded(learner, path, args.episodes, retrain=args.retrain, fast=args.fast)
    record = {
        "source": source,
        "episodes": len(maml.history),
        "final_training_query_mse": final_mse(maml.history),
        "seconds": round(time.perf_counter() - start, 2),
    }
    return maml.initialization, record


def protocol(args: argparse.Namespace, fit_task: int) -> dict:
    """What the numbers depend on, for results.json."""
    return {
        "training": {
            "numpy_seed": NUMPY_SEED,
            "torch_seed": TORCH_SEED,
            "episodes": args.episodes,
            "support_points": SUPPORT_POINTS,
            "query_points": QUERY_POINTS,
            "tasks_per_meta_update": 1,
            "seeds": args.seeds,
            "seed_i": "numpy seed 1337 + i for the tasks, torch seed 42 + i for the initialization",
        },
        "evaluation": {
            "held_out_seed": HELD_OUT_SEED,
            "tasks": args.tasks,
            "support_sizes": list(SUPPORT_SIZES),
            "steps": MAX_STEPS,
            "inner_lr": INNER_LR,
            "optimizer": "plain SGD on the support MSE",
            "score": f"MSE on numpy.linspace({X_RANGE[0]}, {X_RANGE[1]}, {len(GRID_X)})",
            "ci95": "1.96 * std / sqrt(tasks), population std (the mean of the seeds' intervals)",
            "seed_ci95": "t(0.975, seeds - 1) * std / sqrt(seeds) of the seeds' means, sample std",
            "task_in_fits_png": fit_task,
        },
    }


def main(argv: Sequence[str] | None = None) -> dict:
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
            initializations[name], records[name] = initializations_of(name, learner, args)
            if learner.num_steps is not None:
                saved.append(learner.label)
        training_seconds = time.perf_counter() - start

        stage = "evaluating"
        tasks = draw_held_out_tasks(args.tasks)
        if args.seeds > 1:
            results = {name: evaluate_over_seeds(seeds, tasks) for name, seeds in initializations.items()}
        else:
            results = {name: evaluate(seeds[0], tasks) for name, seeds in initializations.items()}
        fit_task = task_to_draw(tasks)
        fits = {name: fits_on_one_task(seeds[0], tasks, fit_task) for name, seeds in initializations.items()}
        evaluation_seconds = time.perf_counter() - start - training_seconds

        stage = WRITING
        plot_mse_against_steps(results, LEARNERS, len(tasks), args.out_dir / "mse_vs_steps.png")
        plot_fits(fits, LEARNERS, tasks, fit_task, args.out_dir / "fits.png")
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
        write_text_atomically(args.out_dir / "results.md", markdown_table(results, LEARNERS, len(tasks)))
    except KeyboardInterrupt as interrupt:  # meta_train's message says how far it got; else the stage does
        raise KeyboardInterrupt(_interrupted(str(interrupt) or stage, saved, args)) from None
    print(markdown_table(results, LEARNERS, len(tasks)))
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


def _main_with_clear_errors(argv: Sequence[str]) -> None:
    try:
        main(argv)
    except CheckpointError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    run_command(_main_with_clear_errors, sys.argv[1:])
