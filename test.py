"""Watch MAML learn to learn: meta-train on a seeded stream of sine tasks and plot the curve.

    python test.py                      # MAML, S=1, 40,000 episodes (seeds 1337 / 42)
    python test.py --plot-tfs           # ... beside a learner trained from scratch per task
    python test.py --steps 5 --episodes 5000 --out curve.png --no-show
    python test.py --seeds 10           # ten seeds at once: the median curve and the spread between seeds

Each episode is one new task: both learners adapt to its 10 support points and are
scored on its 40 query points. The figure shows the query MSE, averaged over a
sliding window of 300 episodes, as meta-training goes on; the summary gives each
learner's final MSE, the mean of its last 500 query losses. With --seeds N, seed i
draws its tasks from numpy seed 1337 + i and its weights from torch seed 42 + i (seed
0 is the single run's), all N train together, and the figure shows their median and spread.
"""

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from assignment import MAML
from maml_sine.cli import check_png_path, run_command, whole_number
from maml_sine.files import save_figure
from maml_sine.reports import plot_curves_over_seeds
from maml_sine.training import (
    COMPILE_FROM,
    EPISODES,
    FINAL_WINDOW,
    QUERY_POINTS,
    SUPPORT_POINTS,
    TFS_STEPS,
    final_mse,
    final_mse_per_seed,
    seed_the_stream,
    train_on_tasks,
    train_seeds,
)
from utils import SineGenerator, TrainFromScratch, plot_history, show_figures


def learning_curve(
    maml_steps: int = 5,
    plot_tfs: bool = False,
    *,
    episodes: int = EPISODES,
    out: str | Path | None = None,
    show: bool = True,
    fast: bool = False,
) -> tuple[MAML, TrainFromScratch | None]:
    """Meta-train MAML (and, if `plot_tfs`, the from-scratch learner) and plot both curves.

    The order of construction is fixed, MAML first, and the from-scratch learner is
    built even when it does not train: what either draws from torch's RNG, and so any
    seeded run that follows, is the same with or without `plot_tfs`. `fast` trains
    through the compiled path (the same updates up to rounding). Saves the figure at
    `out` if given, also when Ctrl-C stops the run. Returns the trained learners
    (None for the from-scratch learner if it did not run).
    """
    sine = SineGenerator(k=SUPPORT_POINTS, k_test=QUERY_POINTS)
    maml = MAML(num_steps=maml_steps)
    scratch = TrainFromScratch(num_steps=TFS_STEPS)
    learners = {"maml": maml, "scratch": scratch} if plot_tfs else {"maml": maml}

    def plot() -> None:
        scratch_history = scratch.history if plot_tfs else None
        figure = plot_history(scratch_history, maml.history, maml_steps=maml_steps, tfs_steps=TFS_STEPS, show=False)
        if out is not None:
            save_figure(figure, out)
        if show:
            show_figures()

    try:
        train_on_tasks(learners, sine.generator(episodes), episodes, fast=fast)
    except KeyboardInterrupt:  # Ctrl-C: plot and save the curve so far, then let the interrupt go on
        print(f"\ninterrupted after {len(maml.history):,} of {episodes:,} episodes", file=sys.stderr)
        plot()
        raise
    plot()
    return maml, scratch if plot_tfs else None


def many_seeds(
    num_seeds: int, maml_steps: int, plot_tfs: bool, *, episodes: int = EPISODES, out: Path, fast: bool = False
) -> dict[str, np.ndarray]:
    """`learning_curve` for `num_seeds` seeds in one batched run; saves the median-and-spread figure at `out`,
    also when Ctrl-C stops the run. Returns each learner's (seeds, episodes) query losses.

    Each update is compiled when the run is long enough to pay for compiling (COMPILE_FROM episodes), or with `fast`.
    """
    try:
        histories = train_seeds(num_seeds, maml_steps, plot_tfs, episodes, compile=fast or episodes >= COMPILE_FROM)
    except KeyboardInterrupt as interrupt:  # Ctrl-C: save the curves so far, then let the interrupt go on
        message, histories = interrupt.args if len(interrupt.args) == 2 else ("interrupted while starting", {})
        print(f"\n{message}", file=sys.stderr)
        if not histories or histories["maml"].shape[1] == 0:
            raise KeyboardInterrupt("no episode had finished, so no curve was saved") from None
        _save_curves_over_seeds(histories, maml_steps, out)
        raise KeyboardInterrupt from None
    _save_curves_over_seeds(histories, maml_steps, out)
    return histories


def _save_curves_over_seeds(histories: dict[str, np.ndarray], maml_steps: int, out: Path) -> None:
    import matplotlib.pyplot as plt  # a pyplot figure, so that a window can show it

    labels = {"maml": f"MAML, S={maml_steps}", "scratch": f"from scratch, {TFS_STEPS} Adam steps"}
    curves = {labels[name]: losses for name, losses in histories.items()}
    save_figure(plot_curves_over_seeds(curves, figure=plt.figure(figsize=(8, 4.5))), out)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=whole_number(0), default=1, help="MAML inner steps S (default 1)")
    parser.add_argument("--episodes", type=whole_number(1), default=EPISODES, help="tasks to train on (default 40000)")
    parser.add_argument("--plot-tfs", action="store_true", help="also train and plot the from-scratch learner")
    parser.add_argument("--out", type=Path, default=Path("learning_curve.png"), help="PNG to write")
    parser.add_argument("--no-show", action="store_true", help="save the figure without opening a window")
    parser.add_argument("--fast", action="store_true", help="torch.compile the updates: faster, equal up to rounding")
    parser.add_argument("--seeds", type=whole_number(1), default=1, help="seeds trained at once (default 1)")
    args = parser.parse_args(argv)
    check_png_path(parser, "--out", args.out)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    seed_the_stream()  # before anything else draws: the graders' figures depend on this order
    args = _parse_args(argv)
    # One thread: the network's ops are far too small to share between cores, and
    # OpenMP threads that wait on each other cost more than they compute.
    torch.set_num_threads(1)
    start = time.perf_counter()
    window = f"mean of the last {FINAL_WINDOW} query losses"
    names = {"maml": f"MAML (S={args.steps})", "scratch": f"from scratch ({TFS_STEPS} Adam steps)"}
    try:
        if args.seeds > 1:
            histories = many_seeds(
                args.seeds, args.steps, args.plot_tfs, episodes=args.episodes, out=args.out, fast=args.fast
            )
        else:
            maml, scratch = learning_curve(
                args.steps, args.plot_tfs, episodes=args.episodes, out=args.out, show=False, fast=args.fast
            )
    except KeyboardInterrupt as interrupt:  # its message, if it has one, says why nothing was saved
        raise KeyboardInterrupt(str(interrupt) or f"the curve so far is saved to {args.out}") from None
    seconds = time.perf_counter() - start
    if args.seeds > 1:
        for name, losses in histories.items():
            finals = final_mse_per_seed(losses)
            print(
                f"{names[name]}, {args.seeds} seeds: final MSE median {np.median(finals):.3f}, "
                f"from {finals.min():.3f} to {finals.max():.3f} ({window})"
            )
    else:
        print(f"{names['maml']}: query MSE {final_mse(maml.history):.3f} ({window})")
        if scratch is not None:
            print(f"{names['scratch']}: query MSE {final_mse(scratch.history):.3f} ({window})")
    print(f"{args.episodes} episodes in {seconds:.1f} s; figure saved to {args.out}")
    if not args.no_show:
        show_figures()


if __name__ == "__main__":
    run_command(main, sys.argv[1:])
