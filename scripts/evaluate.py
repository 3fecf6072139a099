"""Meta-test evaluation: how well does each learner fit a new sine task from K points after 0..10 SGD steps?

    python scripts/evaluate.py                     # train or load the learners, evaluate, write docs/evaluation/
    python scripts/evaluate.py --retrain           # train again even where a checkpoint exists
    python scripts/evaluate.py --updates 500 --tasks 50 --out-dir /tmp/eval --checkpoint-dir /tmp/checkpoints
    python scripts/evaluate.py --seeds 5 --first-seed 5   # seeds 5-9 only: a sweep split over machines
    python scripts/evaluate.py --protocol paper    # Finn et al.'s protocol: writes docs/paper_protocol/
    python scripts/evaluate.py --device cuda       # train and evaluate on a GPU (checkpoints load on any device)

The sine-wave experiment of Finn et al. (2017), Figures 2 and 3. The studies (maml_sine.learners):

  assignment (default)  MAML S=1, first-order MAML S=1, the pretrained network (S=0) and the random
                        initialization they start from ("from scratch"), each trained on the assignment's
                        stream (1 task of 10 support + 40 query points per update, 40,000 updates), fine-tuned
                        on K = 5 or 10 points of each held-out task, scored on 100 evenly spaced x.
  paper                 Finn et al.'s protocol (docs/paper_protocol.md): 25 tasks of K support and K query points
                        per update, 70,000 updates, one model per K for MAML, the pretrained network and an
                        oracle told each task's amplitude and phase; scored on K new points per task (as the
                        authors' code scores) and on the grid.
  meta_sgd              Meta-SGD (maml_sine/meta_sgd.py) beside MAML under the paper's protocol, 5 seeds:
                        writes docs/meta_sgd/.
  family                the MAML family (MAML, first-order MAML, Meta-SGD, ANIL, CAVIA, MAML++, Reptile) under
                        the paper's protocol, 5 seeds: writes docs/family/.
  family_meta_sgd       the same learners under Li et al.'s (Meta-SGD's) protocol: sines of frequency 0.8 to 1.2,
                        4 tasks per update, 60,000 updates, trained at K = 5: writes docs/family_meta_sgd/.

Each learner is trained with --seeds seeds at once (seed i: tasks from numpy seed 1337 + i, initialization
from torch seed 42 + i; seed 0 is `python test.py`'s), and saved in --checkpoint-dir, from where the next
run loads it. One run at a time trains or loads there: a second run on the folder exits with status 1,
naming the one that holds it, or, with --wait-for-lock, waits for it and loads what it trained. A damaged
checkpoint (one that fails its digest, or holds NaN or infinity) ends the run with status 1 and one line.
The 600 held-out tasks come from a generator of their own, the same in every run. Every number is the mean
over seeds with a between-seed 95% interval (Student t) beside the task-sampling one. The evaluation is
cached beside the checkpoints (<study>-evaluation-<seeds>.json) under the record of what it came from (the
study, the seeds, the tasks, a digest of every model and of the evaluation code): a rerun that changes none
of them reads it, in seconds; --retrain, or a cache that cannot be read, evaluates again.
Written to --out-dir, in this order: results.json (the record the pages are drawn from), results.md,
mse_vs_steps*.png (Figure 3) and fits.png (Figure 2).

Ctrl-C stops a run with exit status 130 and a line saying how far it got; every file is written
atomically, so nothing is left half-written. The learners already trained stay in --checkpoint-dir, and
so does the meta-learner in training: stopped after the chunk of updates it is in, it is saved there (as it is
every few minutes while it trains), and the next run resumes it and ends bitwise equal to a run never
stopped. A run that is killed loses only the updates since the last save. A multi-task baseline in
training is not kept: its groups of regressors are short. A file that cannot be written (a full disk)
ends the run with status 1 and one line naming it and saying what is kept: the checkpoints saved before
it, and the files of --out-dir written before it.
"""

from maml_sine.interrupts import exit_on_ctrl_c

if __name__ == "__main__":  # before the imports below, which load torch for a second or more
    exit_on_ctrl_c()

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from maml_sine.checkpoints import CheckpointError, one_writer
from maml_sine.cli import add_device_option, make_output_folders, run_command, whole_number
from maml_sine.evaluation import (
    HELD_OUT_SEED,
    HELD_OUT_TASKS,
    MAX_STEPS,
    TEST_LR_GRID,
    VALIDATION_SEED,
    VALIDATION_TASKS,
    HeldOutTasks,
    draw_held_out_tasks,
    task_to_draw,
)
from maml_sine.files import WriteError, as_written, write_json_atomically, write_text_atomically
from maml_sine.learners import LEARNERS, STUDIES
from maml_sine.reports import (
    SCORES,
    markdown_table,
    plot_curvature,
    plot_curvature_along_sgd,
    plot_fits,
    plot_learned,
    plot_mse_against_steps,
    plot_seeds,
)
from maml_sine.studies import (
    Run,
    cached_evaluation,
    default_jobs,
    divergence_warnings,
    edge_of_stability,
    evaluated,
    evaluation_record,
    test_lrs,
    trained_along,
    trained_learners,
    what_was_learned,
)
from maml_sine.training import lane_seeds

ROOT = Path(__file__).resolve().parent.parent
OUT_DIRS = {"assignment": ROOT / "docs" / "evaluation", "paper": ROOT / "docs" / "paper_protocol"}  # else docs/<study>
DEFAULT_CHECKPOINT_DIR = ROOT / "checkpoints"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--study",
        "--protocol",
        dest="protocol",
        choices=sorted(STUDIES),
        default="assignment",
        help="the study (default assignment)",
    )
    parser.add_argument("--updates", type=whole_number(1), help="meta-updates per learner (default: the protocol's)")
    parser.add_argument(
        "--tasks", type=whole_number(2), default=HELD_OUT_TASKS, help=f"held-out tasks ({HELD_OUT_TASKS})"
    )
    parser.add_argument("--seeds", type=whole_number(1), help="seeds per learner (default: the study's, 10 or 5)")
    parser.add_argument("--first-seed", type=whole_number(0), default=0, help="the first seed's number (default 0)")
    parser.add_argument("--out-dir", type=Path, help="folder for the results (default: docs/ and the study's folder)")
    parser.add_argument("--checkpoint-dir", type=Path, default=DEFAULT_CHECKPOINT_DIR, help="folder for checkpoints")
    parser.add_argument("--retrain", action="store_true", help="meta-train even where a checkpoint exists")
    parser.add_argument(
        "--wait-for-lock", action="store_true", help="wait for another run using --checkpoint-dir instead of exiting"
    )
    parser.add_argument(
        "--regressors", type=whole_number(1), help="regressors per multi-task baseline (default: theirs, 500)"
    )
    parser.add_argument(
        "--jobs", type=whole_number(1), help="processes that train learners at once (default: every core for "
        "trainings of 5,000 updates or more on the CPU, else 1)"
    )  # fmt: skip
    add_device_option(parser)
    args = parser.parse_args(argv)
    args.study = STUDIES[args.protocol](**({"updates": args.updates} if args.updates else {}))
    args.jobs = args.jobs or default_jobs(args.study, args.device)
    args.out_dir = args.out_dir or OUT_DIRS.get(args.protocol, ROOT / "docs" / args.protocol)
    args.seeds = args.seeds or args.study.seeds
    make_output_folders(parser, {"--out-dir": args.out_dir, "--checkpoint-dir": args.checkpoint_dir})
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Train or load, evaluate and write everything; returns what results.json holds. Ctrl-C raises
    KeyboardInterrupt with one line for the user: where the run stopped and what it kept; a file that
    cannot be written raises a `WriteError` that names it and says what is kept."""
    args = parse_args(argv)
    study, saved, written, stage = args.study, [], [], "training"
    start = time.perf_counter()
    try:
        seeds = lane_seeds(args.seeds, args.first_seed)
        run = Run(study, seeds, args.checkpoint_dir, args.retrain, args.regressors, args.device, args.jobs)
        with one_writer(args.checkpoint_dir, wait=args.wait_for_lock):
            initializations, records = trained_learners(run, saved)
            along = trained_along(run, saved)
        training_seconds = time.perf_counter() - start
        stage = "evaluating"
        max_k = max(section.k for section in study.sections)
        tasks = draw_held_out_tasks(args.tasks, max_k, frequency_range=study.frequency_range, device=args.device)
        validation = draw_held_out_tasks(
            min(args.tasks, VALIDATION_TASKS), max_k, seed=VALIDATION_SEED, frequency_range=study.frequency_range,
            device=args.device,
        )  # fmt: skip

        def measure() -> tuple[dict, dict]:
            lrs, tuning = test_lrs(study, initializations, validation)
            results, fits, curvature = evaluated(study, initializations, tasks, lrs)
            measured = {
                "mse": results, "test_lr": lrs, "tuning": tuning, "curvature": curvature,
                "learned": what_was_learned(study, initializations, tasks),
                "divergence_warnings": divergence_warnings(
                    study, initializations, tasks, _validation(args, max_k), lrs
                ),
                "edge_of_stability": edge_of_stability(study, initializations, along, tasks),
            }  # fmt: skip
            return measured, fits

        record = evaluation_record(study, seeds, len(tasks), initializations, along)
        cache = args.checkpoint_dir / f"{study.name}-evaluation-{run.seed_range()}.json"
        measured, fits = cached_evaluation(cache, record, measure, retrain=args.retrain)
        evaluation_seconds = time.perf_counter() - start - training_seconds
        stage = "writing the results and figures"
        seconds = {"train_or_load": training_seconds, "evaluate": evaluation_seconds}
        command = " ".join(["python scripts/evaluate.py", *(sys.argv[1:] if argv is None else argv)])
        report = write_results(args, measured, fits, tasks, records, seconds, command, written)
    except KeyboardInterrupt as interrupt:
        message = str(interrupt) or f"interrupted while {stage}"
        raise KeyboardInterrupt(f"{message}; {_kept(saved, written, args)}") from None
    except WriteError as error:
        raise error.keeping(_kept(saved, written, args)) from error
    print(f"train/load {training_seconds:.1f} s, evaluate {evaluation_seconds:.1f} s; results in {args.out_dir}")
    return report


def write_results(
    args: argparse.Namespace, measured: dict, fits: dict, tasks, records: dict, seconds: dict[str, float],
    command: str, written: list[str],
) -> dict:  # fmt: skip
    """results.json, results.md, then the figures in --out-dir, each file's name appended to `written` once it is;
    returns what results.json holds. results.json comes first: a figure that fails loses none of the numbers."""
    study, fit_task, results = args.study, task_to_draw(tasks), measured["mse"]
    evaluation = {
        "held_out_seed": HELD_OUT_SEED,
        "tasks": len(tasks),
        "validation_seed": VALIDATION_SEED,
        "validation_tasks": min(len(tasks), VALIDATION_TASKS),
        "steps": MAX_STEPS,
        "test_lr": measured["test_lr"],
        "test_lr_grid": list(TEST_LR_GRID),
        "tuning": measured["tuning"],
        "scores": {score: SCORES[score] for score in study.scores},
        "seeds": lane_seeds(args.seeds, args.first_seed),
        "task_in_fits_png": fit_task,
        "amplitudes": np.round(tasks.amplitudes, 6).tolist(),
        "phases": np.round(tasks.phases, 6).tolist(),
        "frequencies": None if tasks.frequencies is None else np.round(tasks.frequencies, 6).tolist(),
    }
    report = {
        "study": study.record(),
        "learners": {name: {"learner": LEARNERS[name].record(), **records[name]} for name in study.learners},
        "evaluation": evaluation,
        "wall_seconds": {what: round(value, 2) for what, value in seconds.items()},
        "mse": results,
        "curvature": measured["curvature"],
        "divergence_warnings": measured["divergence_warnings"],
        "edge_of_stability": measured["edge_of_stability"],
        "learned": measured["learned"],
    }
    table = markdown_table(results, study, len(tasks), command)
    write_json_atomically(args.out_dir / "results.json", report)
    written.append("results.json")
    write_text_atomically(args.out_dir / "results.md", table)
    written.append("results.md")
    print(table)
    for figure in study.figures:
        if figure.kind == "fits":
            plot_fits(fits, figure, study, tasks, fit_task, args.out_dir / f"{figure.name}.png")
            written.append(f"{figure.name}.png")
        elif figure.kind == "learned":
            plot_learned(as_written(report), args.out_dir / f"{figure.name}.png")
            written.append(f"{figure.name}.png")
        elif figure.kind == "curvature":
            plot_curvature(as_written(report), figure.sections[0], args.out_dir / f"{figure.name}.png")
            written.append(f"{figure.name}.png")
        elif figure.kind == "curvature_along":
            plot_curvature_along_sgd(as_written(report), args.out_dir / f"{figure.name}.png")
            written.append(f"{figure.name}.png")
        elif figure.kind == "seeds":
            plot_seeds(report, figure, args.out_dir / f"{figure.name}.png")
            written.append(f"{figure.name}.png")
        else:
            for score in study.scores:
                name = figure.name if score == study.scores[0] else f"{figure.name}_{score}"
                plot_mse_against_steps(results[score], figure, study, len(tasks), args.out_dir / f"{name}.png", score,
                                       measured["test_lr"])  # fmt: skip
                written.append(f"{name}.png")
    return report


def _validation(args: argparse.Namespace, max_k: int) -> HeldOutTasks:
    """As many validation tasks as held-out ones (the first of them are those step sizes are tuned on): the tasks
    the divergence warnings' thresholds are chosen on."""
    return draw_held_out_tasks(args.tasks, max_k, seed=VALIDATION_SEED, frequency_range=args.study.frequency_range,
                               device=args.device)  # fmt: skip


def _kept(saved: list[str], written: list[str], args: argparse.Namespace) -> str:
    """What a run that stopped early (Ctrl-C, a file it could not write) leaves on disk, every write being atomic:
    the checkpoints of the learners in `saved`, and the files of --out-dir in `written`, each complete."""
    if saved:
        again = "run again without --retrain" if args.retrain else "run again"
        checkpoints = f"checkpoints of {', '.join(saved)} are kept in {args.checkpoint_dir}: {again} to go on from them"
    else:
        checkpoints = "no learner had finished, so no whole checkpoint was written"
    if written:
        results = f"{', '.join(written)} in {args.out_dir} are complete and this run's"
    else:
        results = f"nothing was written to {args.out_dir}"
    return f"{checkpoints}; {results}"


def _main_with_clear_errors(argv: Sequence[str]) -> None:
    try:
        main(argv)
    except CheckpointError as error:
        sys.exit(f"error: {error}")
    except FloatingPointError as error:  # a learner whose loss or meta-gradient overflowed: no checkpoint of it
        sys.exit(f"error: {error}; that learner was not saved")


if __name__ == "__main__":
    run_command(_main_with_clear_errors, sys.argv[1:])
