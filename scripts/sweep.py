"""A grid of MAML's step sizes and inner steps, many seeds in each cell: where does meta-learning work, and how well?

    python scripts/sweep.py                       # the small grid, on the CPU in a few minutes: writes docs/sweep/
    python scripts/sweep.py --full --device cuda  # the full grid, on a GPU: writes docs/sweep_full/
    python scripts/sweep.py --seeds 2 --updates 50 --tasks 20 --out-dir /tmp/sweep   # a short check

Each cell is second-order MAML (`maml_sine.core.Algorithm`) with an inner step size α (its SGD), a meta step size
β (its Adam) and S inner steps, meta-trained under Finn et al.'s protocol at K = 10 (25 tasks of 10 support and 10
query points per update) with --seeds seeds. Seed i of every cell has seed i's tasks and initialization (numpy
seed 1337 + i, torch seed 42 + i: `maml_sine.training.lane_seeds`), so two cells differ by their settings alone.
All cells train in one lockstep run (`LockstepRun`) on one task stream: a lockstep learner's step sizes and S
are fixed in its update, so each cell is a `BatchedMAML` of its own (one lane per seed), and the run trains them
side by side, update by update. A run of COMPILE_FROM updates or more is compiled: under this protocol an update of
20 lanes took 21 ms eager and 9 ms compiled on the project's 2-core CPU, so compiling (10 to 15 s a cell) pays
from about 1,000 updates (`maml_sine.training.worth_compiling`'s rule is set for the assignment's cheaper update).

Per cell: the final training MSE (the mean of the last 500 query losses, each the mean over the update's 25 tasks,
over the seeds that trained to the end: a seed whose meta-training diverges stops there, as in the studies), and
the held-out MSE (`maml_sine.evaluation`: its 600 tasks, K = 10 support points, scored on the 100 evenly spaced x)
after 0 to 10 SGD steps at the cell's own α, every seed as it ended; each the mean over seeds with the between-seed
95% interval (Student t), or, where the SGD diverged on some held-out task, the share of such tasks and the median,
as the evaluation's tables give them. Written to --out-dir: results.json (everything), results.md (the table),
heatmap.png (a row of panels per S: the final training MSE and the held-out MSE after 1 and 10 steps over α and β).

Ctrl-C stops the run with status 130 after the chunk of updates it is in, and nothing is written; a file that cannot be
written ends it with status 1 and one line naming it and what is kept.
"""

from maml_sine.interrupts import exit_on_ctrl_c

if __name__ == "__main__":  # before the imports below, which load torch for a second or more
    exit_on_ctrl_c()

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter

from maml_sine.batched import BatchedMAML, initializations_from_seeds
from maml_sine.cli import add_device_option, make_output_folders, run_command, whole_number
from maml_sine.core import Algorithm
from maml_sine.evaluation import (
    HELD_OUT_SEED,
    HELD_OUT_TASKS,
    MAX_STEPS,
    between_seeds,
    draw_held_out_tasks,
    mse_after_each_step,
    scored_sets,
    summarize,
)
from maml_sine.files import WriteError, as_written, save_figure, write_json_atomically, write_text_atomically
from maml_sine.learners import paper_protocol
from maml_sine.reports import SCORES
from maml_sine.reports import cell as table_cell
from maml_sine.training import LockstepRun, final_mse_per_seed, lane_seeds
from utils import FINAL_WINDOW

ROOT = Path(__file__).resolve().parent.parent
K = 10  # support (and query) points per task, in training and at test
SCORE = "grid"  # the held-out MSE on 100 evenly spaced x (`maml_sine.reports.SCORES`)
SHOWN_STEPS = (1, MAX_STEPS)  # the held-out steps in the table and the figure
COMPILE_FROM = 1_000  # updates per cell from which compiling pays, under this protocol (the docstring's figures)


@dataclass(frozen=True)
class Grid:
    """The cells of a sweep, every (S, β, α), and how long and with how many seeds each is trained."""

    inner_lrs: tuple[float, ...]
    meta_lrs: tuple[float, ...]
    steps: tuple[int, ...]
    seeds: int
    updates: int

    def algorithms(self) -> list[Algorithm]:
        """One second-order MAML per cell: S slowest, then β, then α."""
        return [Algorithm(num_steps=steps, inner_lr=inner_lr, meta_lr=meta_lr)
                for steps in self.steps for meta_lr in self.meta_lrs for inner_lr in self.inner_lrs]  # fmt: skip


SMALL = Grid(inner_lrs=(0.001, 0.01, 0.03), meta_lrs=(0.0003, 0.001, 0.003), steps=(1,), seeds=20, updates=2_000)
# 48 cells: within the compiled configurations one process keeps (`maml_sine.core.RECOMPILE_LIMIT`, 64).
FULL = Grid(inner_lrs=(0.001, 0.003, 0.01, 0.03), meta_lrs=(0.0001, 0.0003, 0.001, 0.003), steps=(1, 2, 5),
            seeds=100, updates=70_000)  # fmt: skip


def cell_name(algorithm: Algorithm) -> str:
    """A cell's short name, as the progress bar shows it."""
    return f"S{algorithm.num_steps}_a{algorithm.inner_lr:g}_b{algorithm.meta_lr:g}"


def trained_cells(grid: Grid, seeds: list[tuple[int, int]], device: torch.device) -> list[BatchedMAML]:
    """Every cell of `grid` meta-trained on `device` in one lockstep run: one `BatchedMAML` per cell, one lane per
    seed, all on one task stream; a lane that diverges stops there."""
    protocol = paper_protocol(K, grid.updates)
    algorithms = grid.algorithms()
    description = f"{len(algorithms)} cells x {len(seeds)} seeds"
    streams = protocol.streams(seeds, device=device)
    run = LockstepRun(streams, grid.updates, description, compile=grid.updates >= COMPILE_FROM)
    initializations = initializations_from_seeds(seeds)
    cells = [run.maml(cell_name(algorithm), initializations, algorithm, stop_diverged=True) for algorithm in algorithms]
    run.train()
    return cells


def cell_record(learners: BatchedMAML, sets: dict) -> dict:
    """What results.json keeps of a trained cell: its algorithm, the seeds that stopped and where, the final training
    MSE over the seeds that trained to the end (mean, between-seed interval, every seed's), and the held-out MSE
    of every seed after 0..MAX_STEPS SGD steps at its α (`evaluation.summarize`)."""
    final = final_mse_per_seed(learners.histories)  # NaN for a seed that stopped
    ended = final[np.isfinite(final)]
    mean, ci95 = between_seeds(ended) if len(ended) else (np.nan, np.nan)
    models = [learners.params(seed) for seed in range(len(learners))]
    errors = mse_after_each_step(models, sets, (SCORE,), learners.algorithm)[SCORE]  # (seeds, steps + 1, tasks)
    return {
        "algorithm": asdict(learners.algorithm),
        "stopped_at_update": {str(seed): update for seed, update in sorted(learners.diverged_at.items())},
        "final_training_mse": {
            "mean": float(mean),
            "seed_ci95": float(ci95),
            "seeds": len(ended),
            "per_seed": final.tolist(),
        },
        "held_out": summarize(list(errors)),
    }


def cell_of(report: dict, steps: int, meta_lr: float, inner_lr: float) -> dict:
    """The record of the cell (S, β, α) in `report` (as results.json holds it)."""
    key = {"num_steps": steps, "meta_lr": meta_lr, "inner_lr": inner_lr}
    return next(cell for cell in report["cells"] if all(cell["algorithm"][name] == v for name, v in key.items()))


def final_training(cell: dict) -> tuple[float | None, str]:
    """A cell's final training MSE: its mean over the seeds that trained to the end (None: none did), and its text,
    mean ± between-seed interval and how many seeds, where some stopped."""
    final, seeds = cell["final_training_mse"], len(cell["final_training_mse"]["per_seed"])
    if final["mean"] is None:
        return None, "every seed stopped"
    text = f"{final['mean']:.3f}" + ("" if final["seed_ci95"] is None else f" ± {final['seed_ci95']:.3f}")
    return final["mean"], text + ("" if final["seeds"] == seeds else f" ({final['seeds']} of {seeds} seeds)")


def held_out_after(step: int) -> Callable[[dict], tuple[float | None, str]]:
    """A cell's held-out MSE after `step` steps: its mean over seeds (None where some task's SGD diverged, which makes
    a mean meaningless), and its text as the evaluation's tables write it (`maml_sine.reports.cell`)."""

    def shown(cell: dict) -> tuple[float | None, str]:
        result = cell["held_out"]
        return (result["mean"][step] if result["diverged"][step] == 0 else None), table_cell(result, step, False)

    return shown


# A panel of the figure and a column of the table each: its title, and what it shows of a cell (a value, a text).
METRICS = {"final training MSE": final_training}
METRICS.update({f"held-out MSE after {step} step{'s' * (step > 1)}": held_out_after(step) for step in SHOWN_STEPS})


def markdown(report: dict) -> str:
    """results.md: one row per cell, from `report` as results.json holds it."""
    grid, held_out = report["grid"], report["held_out"]
    lines = [
        f"# MAML over α, β and S: {len(report['seeds'])} seeds per cell, {grid['updates']:,} updates each",
        "",
        f"Finn et al.'s protocol at K = {K}; held-out: {held_out['tasks']} tasks, K = {K}, scored on "
        f"{SCORES[SCORE]}; mean over seeds ± between-seed 95% interval.",
        "",
        "| S | β (meta) | α (inner) | " + " | ".join(METRICS) + " | seeds stopped |",
        "| ---: | ---: | ---: | " + " | ".join("---:" for _ in METRICS) + " | ---: |",
    ]
    for steps in grid["steps"]:
        for meta_lr in grid["meta_lrs"]:
            for inner_lr in grid["inner_lrs"]:
                cell = cell_of(report, steps, meta_lr, inner_lr)
                values = " | ".join(metric(cell)[1] for metric in METRICS.values())
                lines.append(f"| {steps} | {meta_lr:g} | {inner_lr:g} | {values} | {len(cell['stopped_at_update'])} |")
    lines += [
        "",
        f"Written by `{report['command']}` on {report['device']}; every step 0..{MAX_STEPS} is in results.json.",
    ]
    return "\n".join(lines) + "\n"


def plot(report: dict, out: Path) -> None:
    """heatmap.png: a row per S, a panel per metric, each cell's mean over seeds (log colour scale; grey where there is
    none: no seed trained to the end, or SGD diverged on some held-out task) and its text from the table in it."""
    grid = report["grid"]
    inner_lrs, meta_lrs = grid["inner_lrs"], grid["meta_lrs"]
    figure = Figure(figsize=(5.6 * len(METRICS), 4.4 * len(grid["steps"]) + 0.8))
    panels = figure.subplots(len(grid["steps"]), len(METRICS), squeeze=False)
    for row, steps in zip(panels, grid["steps"]):
        for axes, (title, metric) in zip(row, METRICS.items()):
            values = [[metric(cell_of(report, steps, meta_lr, inner_lr)) for inner_lr in inner_lrs]
                      for meta_lr in meta_lrs]  # fmt: skip
            means = np.array([[np.nan if mean is None else mean for mean, _ in line] for line in values])
            finite = means[np.isfinite(means)]
            norm = LogNorm(finite.min(), finite.max()) if len(finite) else None
            axes.set_facecolor("lightgray")
            image = axes.imshow(np.ma.masked_invalid(means), norm=norm, cmap="viridis_r", origin="lower")
            for row_index, line in enumerate(values):
                for column, (mean, text) in enumerate(line):
                    text = text.replace(" ± ", "\n± ").replace(" (", "\n(").replace("; ", "\n").replace("on ", "on\n")
                    dark = mean is not None and norm is not None and norm(mean) > 0.6
                    axes.text(column, row_index, text, ha="center", va="center", fontsize=8,
                              color="white" if dark else "black")  # fmt: skip
            axes.set_xticks(range(len(inner_lrs)), [f"{lr:g}" for lr in inner_lrs])
            axes.set_yticks(range(len(meta_lrs)), [f"{lr:g}" for lr in meta_lrs])
            axes.set_xlabel("inner step size α (SGD on the support set)")
            axes.set_ylabel("meta step size β (Adam)")
            axes.set_title(f"{title}, S = {steps}", fontsize=11)
            if norm is not None:
                scale = figure.colorbar(image, ax=axes, label="MSE, mean over seeds (log scale)").ax.yaxis
                scale.set_major_formatter(FormatStrFormatter("%.3g"))
                scale.set_minor_formatter(FormatStrFormatter("%.3g"))
    seeds, updates = len(report["seeds"]), grid["updates"]
    figure.suptitle(f"MAML over its step sizes and inner steps: {seeds} seeds per cell, {updates:,} updates of 25 "
                    f"tasks (K = {K}); held-out on {SCORES[SCORE]}, at each cell's α")  # fmt: skip
    figure.tight_layout()
    save_figure(figure, out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the full grid (for a GPU) instead of the small one")
    parser.add_argument("--seeds", type=whole_number(1), help="seeds per cell (default: the grid's, 20 or 100)")
    parser.add_argument("--updates", type=whole_number(1), help="meta-updates per cell (default: the grid's)")
    parser.add_argument(
        "--tasks", type=whole_number(2), default=HELD_OUT_TASKS, help=f"held-out tasks ({HELD_OUT_TASKS})"
    )
    parser.add_argument("--out-dir", type=Path, help="folder for the results (default docs/sweep or docs/sweep_full)")
    add_device_option(parser)
    args = parser.parse_args(argv)
    grid = FULL if args.full else SMALL
    args.grid = Grid(grid.inner_lrs, grid.meta_lrs, grid.steps, args.seeds or grid.seeds, args.updates or grid.updates)
    args.out_dir = args.out_dir or ROOT / "docs" / ("sweep_full" if args.full else "sweep")
    make_output_folders(parser, {"--out-dir": args.out_dir})
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Train every cell, evaluate it on the held-out tasks, write results.json, results.md and heatmap.png; returns
    what results.json holds."""
    args = parse_args(argv)
    torch.set_num_threads(1)  # the network's ops are too small to share between cores (docs/speed.md)
    grid, seeds, start = args.grid, lane_seeds(args.grid.seeds), time.perf_counter()
    try:
        cells = trained_cells(grid, seeds, args.device)
        training_seconds = time.perf_counter() - start
        sets = scored_sets(draw_held_out_tasks(args.tasks, K, device=args.device), K)
        records = [cell_record(learners, sets) for learners in cells]
    except KeyboardInterrupt as interrupt:
        raise KeyboardInterrupt(f"{str(interrupt) or 'interrupted'}; nothing was written to {args.out_dir}") from None
    report = {
        "command": " ".join(["python scripts/sweep.py", *(sys.argv[1:] if argv is None else argv)]),
        "device": str(args.device),
        "grid": asdict(grid),
        "protocol": paper_protocol(K, grid.updates).record(),
        "seeds": seeds,
        "final_window": FINAL_WINDOW,
        "held_out": {"seed": HELD_OUT_SEED, "tasks": args.tasks, "k": K, "score": SCORE, "steps": MAX_STEPS},
        "wall_seconds": {
            "train": round(training_seconds, 1),
            "evaluate": round(time.perf_counter() - start - training_seconds, 1),
        },
        "cells": records,
    }
    write_json_atomically(args.out_dir / "results.json", report)  # the record, first
    table = markdown(as_written(report))
    write_text_atomically(args.out_dir / "results.md", table)
    print(table)
    try:
        plot(as_written(report), args.out_dir / "heatmap.png")
    except WriteError as error:
        raise error.keeping(f"results.json and results.md in {args.out_dir} are complete") from error
    return report


if __name__ == "__main__":
    run_command(main, sys.argv[1:])
