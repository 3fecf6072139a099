"""Meta-test evaluation: how well does each learner fit a new sine task from K points after 0..10 SGD steps?

    python scripts/evaluate.py                     # train or load the learners, evaluate, write docs/evaluation/
    python scripts/evaluate.py --retrain           # train again even where a checkpoint exists
    python scripts/evaluate.py --episodes 500 --tasks 50 --out-dir /tmp/eval --checkpoint-dir /tmp/checkpoints
    python scripts/evaluate.py --seeds 1           # one seed, the learners of `python test.py`, trained by MAML.train
    python scripts/evaluate.py --protocol paper    # Finn et al.'s protocol: writes docs/paper_protocol/
    python scripts/evaluate.py --protocol paper --updates 300 --seeds 2 --out-dir /tmp/paper  # a short check

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

--protocol paper follows the paper's own protocol instead (maml_sine.paper; docs/paper_protocol.md): 25
tasks per meta-update, K support and K query points each, 70,000 updates (--updates), one model per K for
MAML, the pretrained network and the oracle (given amplitude and phase); scored on K new random points
of each task, as the authors' code scores, and on the grid. Written to docs/paper_protocol/: results.json,
results.md, mse_vs_steps.png (on the K new points), mse_vs_steps_grid.png and fits.png.

Ctrl-C stops a run with exit status 130 and a line saying how far it got; every file is written
atomically, so nothing is left half-written, and the learners already trained stay in --checkpoint-dir.
"""

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from assignment import INNER_LR
from maml_sine import paper
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
from maml_sine.files import write_json_atomically, write_text_atomically
from maml_sine.reports import (
    GRID,
    markdown_table,
    paper_markdown_table,
    plot_fits,
    plot_mse_against_steps,
    plot_paper_mse_against_steps,
)
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
PAPER_OUT_DIR = ROOT / "docs" / "paper_protocol"
DEFAULT_CHECKPOINT_DIR = ROOT / "checkpoints"
LEARNERS = {
    "maml": LearnerSpec("MAML, S=1", "tab:blue", num_steps=1),
    "first_order_maml": LearnerSpec("first-order MAML, S=1", "tab:green", num_steps=1, first_order=True),
    "pretrained": LearnerSpec("pretrained (S=0)", "tab:orange", num_steps=0),
    "scratch": LearnerSpec("from scratch (random init)", "tab:gray"),
}
SEEDS = 10
WRITING = "writing the figures and results"
GRID_SCORE = f"MSE on numpy.linspace({X_RANGE[0]}, {X_RANGE[1]}, {len(GRID_X)})"  # the last stage of a run


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--protocol",
        choices=("assignment", "paper"),
        default="assignment",
        help="assignment (default): 1 task per update on the assignment's stream; paper: Finn et al.'s protocol",
    )
    parser.add_argument(
        "--episodes", type=whole_number(1), help=f"meta-training tasks, one per update (default {EPISODES})"
    )
    parser.add_argument(
        "--updates",
        type=whole_number(1),
        help=f"with --protocol paper: meta-updates of {paper.TASKS_PER_UPDATE} tasks (default {paper.UPDATES})",
    )
    parser.add_argument(
        "--tasks", type=whole_number(2), default=HELD_OUT_TASKS, help=f"held-out tasks (default {HELD_OUT_TASKS})"
    )
    parser.add_argument("--seeds", type=whole_number(1), default=SEEDS, help=f"seeds per learner (default {SEEDS})")
    parser.add_argument(
        "--out-dir",
        type=Path,
        help="folder for the results and figures (default docs/evaluation or docs/paper_protocol)",
    )
    parser.add_argument("--checkpoint-dir", type=Path, default=DEFAULT_CHECKPOINT_DIR, help="folder for checkpoints")
    parser.add_argument("--retrain", action="store_true", help="meta-train even where a checkpoint exists")
    parser.add_argument(
        "--fast", action="store_true", help="with --seeds 1: meta-train with the compiled path (many seeds always are)"
    )
    args = parser.parse_args(argv)
    if args.protocol == "paper":
        for given, option in ((args.episodes, "--episodes"), (args.fast or None, "--fast")):
            if given is not None:
                parser.error(f"{option} belongs to the assignment's protocol; the paper's counts --updates")
        if args.seeds < 2:
            parser.error("--protocol paper reports intervals between seeds: it needs --seeds 2 or more")
        args.updates = args.updates or paper.UPDATES
        args.out_dir = args.out_dir or PAPER_OUT_DIR
    else:
        if args.updates is not None:
            parser.error("--updates belongs to --protocol paper; the assignment's protocol counts --episodes")
        args.episodes = args.episodes or EPISODES
        args.out_dir = args.out_dir or DEFAULT_OUT_DIR
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
        "evaluation": _evaluation_record(args, fit_task, score=GRID_SCORE),
    }


def _evaluation_record(args: argparse.Namespace, fit_task: int, **scores: str) -> dict:
    """How the held-out tasks were drawn, adapted to and scored (`scores`: what each score measures)."""
    return {
        "held_out_seed": HELD_OUT_SEED,
        "tasks": args.tasks,
        "support_sizes": list(SUPPORT_SIZES),
        "steps": MAX_STEPS,
        "inner_lr": INNER_LR,
        "optimizer": "plain SGD on the support MSE",
        **scores,
        "ci95": "1.96 * std / sqrt(tasks), population std (the mean of the seeds' intervals)",
        "seed_ci95": "t(0.975, seeds - 1) * std / sqrt(seeds) of the seeds' means, sample std",
        "task_in_fits_png": fit_task,
    }


def paper_protocol_record(args: argparse.Namespace, fit_task: int) -> dict:
    """What the paper protocol's numbers depend on, for results.json."""
    return {
        "name": "Finn et al. (2017), Section 5.1 and the authors' code (cbfinn/maml)",
        "training": {
            "tasks_per_meta_update": paper.TASKS_PER_UPDATE,
            "meta_updates": args.updates,
            "support_points": "K",
            "query_points": "K",
            "models": f"one per K in {list(SUPPORT_SIZES)}",
            "inner_steps": {name: learner.num_steps for name, learner in paper.LEARNERS.items()},
            "inner_lr": INNER_LR,
            "meta_optimizer": "Adam, lr 0.001",
            "oracle_inputs": "x, amplitude, phase",
            "seeds": args.seeds,
            "seed_i": "numpy.random.default_rng(1337 + i) for the tasks, torch seed 42 + i for the initialization",
            "task_draws": f"{paper.DRAWN_AT_ONCE} updates of tasks at a time: amplitudes, phases, then x",
        },
        "evaluation": _evaluation_record(
            args,
            fit_task,
            score_query="MSE on K new random x of each task, drawn apart from the support x",
            score_grid=GRID_SCORE,
        ),
    }


@dataclass
class Run:
    """Where a run is, for the line Ctrl-C prints: its stage and the learners already in --checkpoint-dir."""

    stage: str = "starting"
    saved: list[str] = field(default_factory=list)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the whole evaluation under the chosen protocol; returns what results.json holds.

    Ctrl-C raises KeyboardInterrupt with one line for the user: where the run stopped and what it kept.
    """
    args = parse_args(argv)
    run = Run()
    try:
        report, summary = (paper_protocol if args.protocol == "paper" else assignment_protocol)(args, run)
    except KeyboardInterrupt as interrupt:  # meta_train's message says how far it got; else the stage does
        raise KeyboardInterrupt(_interrupted(str(interrupt) or run.stage, run.saved, args)) from None
    print(summary)
    seconds = report["wall_seconds"]
    print(f"train/load {seconds['train_or_load']} s, evaluate {seconds['evaluate']} s, total {seconds['total']} s")
    print(f"results and figures in {args.out_dir}")
    return report


def assignment_protocol(args: argparse.Namespace, run: Run) -> tuple[dict, str]:
    """The default evaluation: the four LEARNERS meta-trained on the assignment's stream, scored on the grid.
    Returns the report (results.json) and a summary to print."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    initializations, records = {}, {}
    for name, learner in LEARNERS.items():
        run.stage = f"loading or saving {learner.label}"
        initializations[name], records[name] = initializations_of(name, learner, args)
        if learner.num_steps is not None:
            run.saved.append(learner.label)
    training_seconds = time.perf_counter() - start

    run.stage = "evaluating"
    tasks = draw_held_out_tasks(args.tasks)
    if args.seeds > 1:
        results = {name: evaluate_over_seeds(seeds, tasks) for name, seeds in initializations.items()}
    else:
        results = {name: evaluate(seeds[0], tasks) for name, seeds in initializations.items()}
    fit_task = task_to_draw(tasks)
    fits = {name: fits_on_one_task(seeds[0], tasks, fit_task) for name, seeds in initializations.items()}
    evaluation_seconds = time.perf_counter() - start - training_seconds

    run.stage = WRITING
    plot_mse_against_steps(results, LEARNERS, len(tasks), args.out_dir / "mse_vs_steps.png")
    plot_fits(fits, LEARNERS, tasks, fit_task, args.out_dir / "fits.png")
    report = {
        "protocol": protocol(args, fit_task),
        "learners": {name: {"label": LEARNERS[name].label, **records[name]} for name in LEARNERS},
        "wall_seconds": _wall_seconds(start, training_seconds, evaluation_seconds),
        "mse": results,
    }
    table = markdown_table(results, LEARNERS, len(tasks))
    write_json_atomically(args.out_dir / "results.json", report)
    write_text_atomically(args.out_dir / "results.md", table)
    sources = [
        f"{LEARNERS[name].label}: {record['source']}, {record['seconds']:.1f} s" for name, record in records.items()
    ]
    return report, "\n".join([table, *sources])


def paper_protocol(args: argparse.Namespace, run: Run) -> tuple[dict, str]:
    """Finn et al.'s protocol (maml_sine.paper): MAML, pretrained and oracle, one model of each per K, each
    trained with --seeds seeds at once; scored on K new points per task and on the grid. Returns the report
    (results.json) and a summary to print."""
    start = time.perf_counter()
    initializations, records = _paper_learners(args, run)
    training_seconds = time.perf_counter() - start

    run.stage = "evaluating"
    tasks = draw_held_out_tasks(args.tasks)
    results = {"query": {}, "grid": {}}
    for (name, k), seeds in initializations.items():
        for score, result in paper.evaluate_paper(seeds, tasks, k, paper.LEARNERS[name].oracle).items():
            results[score].setdefault(name, {})[str(k)] = result
    for name, learner in paper.LEARNERS.items():  # the paper's text fine-tunes one model, trained at K = 10
        for score, result in paper.evaluate_paper(initializations[name, 10], tasks, 5, learner.oracle).items():
            results[score][name][paper.K10_MODEL_AT_K5] = result
    fit_task = task_to_draw(tasks)
    fits = {name: {} for name in paper.LEARNERS}
    for (name, k), seeds in initializations.items():
        fits[name][k] = paper.predictions_on_one_task(seeds[0], tasks, fit_task, k, paper.LEARNERS[name].oracle)
    evaluation_seconds = time.perf_counter() - start - training_seconds

    run.stage = WRITING
    scores = {"query": "K new points per task", "grid": GRID}
    for score, figure in (("query", "mse_vs_steps.png"), ("grid", "mse_vs_steps_grid.png")):
        plot_paper_mse_against_steps(results[score], paper.LEARNERS, len(tasks), args.out_dir / figure, scores[score])
    plot_fits(fits, paper.LEARNERS, tasks, fit_task, args.out_dir / "fits.png")
    report = {
        "protocol": paper_protocol_record(args, fit_task),
        "learners": records,
        "wall_seconds": _wall_seconds(start, training_seconds, evaluation_seconds),
        "mse": results,
    }
    tables = "\n".join(
        paper_markdown_table(results[score], paper.LEARNERS, len(tasks), scored_on, paper.SECTIONS)
        for score, scored_on in scores.items()
    )
    command = f"python scripts/evaluate.py --protocol paper --updates {args.updates} --seeds {args.seeds}"
    tables += f"\nWritten by `{command}`; every step 0..10 is in results.json.\n"
    write_json_atomically(args.out_dir / "results.json", report)
    write_text_atomically(args.out_dir / "results.md", tables)
    sources = [
        f"{record['label']}, {k}: {trained['source']}, {trained['seconds']:.1f} s"
        for record in records.values()
        for k, trained in record.items()
        if k != "label"
    ]
    return report, "\n".join([tables, *sources])


def _paper_learners(args: argparse.Namespace, run: Run) -> tuple[dict, dict]:
    """Every paper learner for every K, trained or loaded: {(name, K): each seed's initialization}, and
    {name: {"label", "K=5": where it came from, its final training MSE of each seed, ...}}."""
    initializations, records = {}, {name: {"label": learner.label} for name, learner in paper.LEARNERS.items()}
    for k in SUPPORT_SIZES:
        for name, learner in paper.LEARNERS.items():
            run.stage = f"loading or saving {learner.label}, K={k}"
            start = time.perf_counter()
            path = args.checkpoint_dir / f"paper-{name}-K{k}-{args.updates}-{args.seeds}seeds.pt"
            learners, seeds, source = trained_or_loaded_seeds(
                learner, path, args.updates, args.seeds, retrain=args.retrain, train=partial(paper.meta_train, k=k)
            )
            run.saved.append(f"{learner.label}, K={k}")
            initializations[name, k] = [learners.initialization(seed) for seed in range(len(seeds))]
            records[name][f"K={k}"] = {
                "source": source,
                "updates": len(learners.losses),
                "seeds": [list(seed) for seed in seeds],
                "final_training_query_mse": final_mse_per_seed(learners.histories).tolist(),
                "seconds": round(time.perf_counter() - start, 2),
            }
    return initializations, records


def _wall_seconds(start: float, training_seconds: float, evaluation_seconds: float) -> dict[str, float]:
    return {
        "train_or_load": round(training_seconds, 2),
        "evaluate": round(evaluation_seconds, 2),
        "total": round(time.perf_counter() - start, 2),
    }


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
