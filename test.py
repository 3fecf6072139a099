"""Watch MAML learn to learn: meta-train on a seeded stream of sine tasks and plot the curve.

    python test.py                      # MAML, S=1, 40,000 episodes (seeds 1337 / 42)
    python test.py --plot-tfs           # ... beside a learner trained from scratch per task
    python test.py --steps 5 --episodes 5000 --out curve.png --no-show
    python test.py --seeds 10           # ten seeds at once: the median curve and the spread between seeds
    python test.py --fast               # the compiled path: the same updates up to rounding
    python test.py --seeds 100 --device cuda   # the seeds on a GPU (with --seeds or --fast only)

Each episode is one new task: both learners adapt to its 10 support points and are
scored on its 40 query points. The figure shows the query MSE, averaged over a
sliding window of 300 episodes, as meta-training goes on; the summary gives each
learner's final MSE, the mean of its last 500 query losses.

This file, `assignment.py` and `utils.py` run on their own, in the assignment's environment
too (Python 3.8, torch 1.6, no tqdm). `--seeds` and `--fast` come from the project's package,
maml_sine, and need it installed: seed i draws its tasks from numpy seed 1337 + i and its
weights from torch seed 42 + i (seed 0 is the single run's), and all train together.
"""

# Runs on Python 3.8: annotations are never evaluated.
from __future__ import annotations

import os
import signal
import sys

INTERRUPTED = 130  # the shell's exit status for "stopped by Ctrl-C"


def _exit_while_starting(signum: int, frame: object) -> None:
    """Ctrl-C before `main` trains (while torch loads, for a second or more): one line and status 130 at once,
    not the traceback of an import. The package does the same for its scripts; this file may run without it."""
    os.write(2, b"\ninterrupted while starting; nothing was run\n")
    os._exit(INTERRUPTED)


# First of all, before the imports below; not where the process started with Ctrl-C ignored, which Python keeps.
if __name__ == "__main__" and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _exit_while_starting)

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from assignment import MAML
from utils import (
    EPISODES,
    FINAL_WINDOW,
    NUMPY_SEED,
    QUERY_POINTS,
    SUPPORT_POINTS,
    TFS_STEPS,
    TORCH_SEED,
    SineGenerator,
    TrainFromScratch,
    final_mse,
    plot_history,
    show_figures,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PROGRESS_EVERY = 1000  # episodes between progress lines where tqdm is not installed


def learning_curve(
    maml_steps: int = 5,
    plot_tfs: bool = False,
    *,
    episodes: int = EPISODES,
    out: str | Path | None = None,
    show: bool = True,
) -> tuple[MAML, TrainFromScratch | None]:
    """Meta-train MAML (and, if `plot_tfs`, the from-scratch learner) on one task stream and plot both curves.

    The order of construction is fixed, MAML first, and the from-scratch learner is
    built even when it does not train: what either draws from torch's RNG, and so any
    seeded run that follows, is the same with or without `plot_tfs`. Saves the figure at
    `out` if given, also when Ctrl-C stops the run. Returns the trained learners (None
    for the from-scratch learner if it did not run).
    """
    sine = SineGenerator(k=SUPPORT_POINTS, k_test=QUERY_POINTS)
    maml = MAML(num_steps=maml_steps)
    scratch = TrainFromScratch(num_steps=TFS_STEPS)
    learners = [maml, scratch] if plot_tfs else [maml]

    def plot() -> None:
        scratch_history = scratch.history if plot_tfs else None
        figure = plot_history(scratch_history, maml.history, maml_steps=maml_steps, tfs_steps=TFS_STEPS, show=False)
        if out is not None:
            save_png(figure, Path(out))
        if show:
            show_figures()

    try:
        for _, task in with_progress(sine.generator(episodes), episodes):
            for learner in learners:
                learner.train(task)
    except KeyboardInterrupt:  # Ctrl-C: plot and save the curve so far, then say so
        print(f"\ninterrupted after {len(maml.history):,} of {episodes:,} episodes", file=sys.stderr)
        plot()
        saved = f"the curve so far is saved to {out}" if out is not None else "the curve so far is drawn"
        raise KeyboardInterrupt(saved) from None
    plot()
    return maml, scratch if plot_tfs else None


class FigureWriteError(OSError):
    """The figure (with --seeds or --fast, a file the package writes) could not be written, a full disk say: its
    text is one line naming the file, for the script to end with (status 1)."""


def save_png(figure: Figure, path: Path) -> None:
    """Save `figure` at `path` whole or not at all: into a temporary file beside it, renamed onto it once complete,
    so a full disk or a Ctrl-C leaves the old figure, if any, and nothing else. (The package writes its files
    the same way; this file runs without it.) An operating-system error is raised as a FigureWriteError."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            figure.savefig(file, format="png", dpi=150)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise FigureWriteError(f"cannot write {path}: {error.strerror or error}") from None
        raise


def with_progress(tasks: Iterable, episodes: int) -> Iterable:
    """`tasks`, with tqdm's progress bar where tqdm is installed, else a line every PROGRESS_EVERY episodes."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _progress_lines(tasks, episodes)
    return tqdm(tasks, total=episodes, unit="episode", mininterval=0.5)


def _progress_lines(tasks: Iterable, episodes: int) -> Iterable:
    for episode, task in enumerate(tasks, start=1):
        yield task
        if episode % PROGRESS_EVERY == 0 or episode == episodes:
            print(f"{episode:,}/{episodes:,} episodes", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1, help="MAML inner steps S (default 1)")
    parser.add_argument("--episodes", type=int, default=EPISODES, help="tasks to train on (default 40000)")
    parser.add_argument("--plot-tfs", action="store_true", help="also train and plot the from-scratch learner")
    parser.add_argument("--out", type=Path, default=Path("learning_curve.png"), help="PNG to write")
    parser.add_argument("--no-show", action="store_true", help="save the figure without opening a window")
    parser.add_argument("--seeds", type=int, default=1, help="seeds trained at once (needs maml_sine)")
    parser.add_argument("--fast", action="store_true", help="compile the updates (needs maml_sine)")
    parser.add_argument("--device", default="cpu", help="with --seeds or --fast: cpu (default) or cuda (cuda:N)")
    args = parser.parse_args(argv)
    for name, minimum in (("steps", 0), ("episodes", 1), ("seeds", 1)):
        if getattr(args, name) < minimum:
            parser.error(f"argument --{name}: must be at least {minimum}, got {getattr(args, name)}")
    check_png_path(parser, "--out", args.out)
    if args.seeds > 1 or args.fast:
        try:
            from maml_sine.cli import parse_device
        except ImportError:
            parser.error("--seeds and --fast need the project's package maml_sine (pip install -e .)")
        try:
            args.device = parse_device(args.device)
        except argparse.ArgumentTypeError as error:
            parser.error(f"argument --device: {error}")
    elif args.device != "cpu":
        parser.error("--device: without --seeds or --fast, MAML.train runs on the CPU alone")
    return args


def check_png_path(parser: argparse.ArgumentParser, option: str, path: Path) -> None:
    """Refuse (status 2) a PNG path that cannot be written: a folder, a missing folder, not .png, no write access."""
    if path.is_dir():
        parser.error(f"{option}: {str(path)!r} is a folder; give the path of a PNG file")
    if not path.parent.is_dir():
        parser.error(f"{option}: folder {str(path.parent)!r} does not exist")
    if path.suffix.lower() != ".png":
        parser.error(f"{option}: {str(path)!r} must end in .png (the figure is saved as a PNG)")
    try:  # creating a file is the one reliable test: root ignores permission bits, and /proc refuses anyway
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        parser.error(f"{option}: cannot write in folder {str(path.parent)!r} ({error.strerror})")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line `argv`; None: this process's own, whose Ctrl-C it takes over from `_exit_while_starting`
    as it starts training: Python's own handler, on whose KeyboardInterrupt `learning_curve` saves the curve so far,
    or the package's where the package trains (a first Ctrl-C stops after the chunk of updates it is in, a second
    ends the program)."""
    np.random.seed(NUMPY_SEED)  # before anything else draws: the graders' figures depend on this order
    torch.manual_seed(TORCH_SEED)
    args = parse_args(argv)
    # One thread: the network's ops are far too small to share between cores, and
    # OpenMP threads that wait on each other cost more than they compute.
    torch.set_num_threads(1)
    start = time.perf_counter()
    summary = train_and_save(args, own_process=argv is None)
    try:
        for line in summary:
            print(f"{line} (mean of the last {FINAL_WINDOW} query losses)")
        print(f"{args.episodes} episodes in {time.perf_counter() - start:.1f} s; figure saved to {args.out}")
        if not args.no_show:
            show_figures()
    except KeyboardInterrupt:  # while the window is open, say: the run is complete
        raise KeyboardInterrupt(f"interrupted; the figure is saved to {args.out}") from None


def train_and_save(args: argparse.Namespace, own_process: bool) -> list[str]:
    """Train the learners `args` ask for, save the figure at `args.out` and return the summary's lines. A Ctrl-C
    comes out as a KeyboardInterrupt whose message says what was saved; a file that cannot be written, as a
    FigureWriteError."""
    kept: list[str] = []  # what the package saved before a Ctrl-C, in its own words
    try:
        if args.seeds > 1 or args.fast:
            from maml_sine.curves import curves_over_seeds  # the package's batched, compiled learners
            from maml_sine.files import WriteError
            from maml_sine.interrupts import stop_on_ctrl_c

            if own_process:
                stop_on_ctrl_c()
            try:
                return curves_over_seeds(
                    args.seeds,
                    args.steps,
                    args.plot_tfs,
                    episodes=args.episodes,
                    out=args.out,
                    fast=args.fast,
                    kept=kept,
                    device=args.device,
                )
            except WriteError as error:  # its one line names the file and what is kept
                raise FigureWriteError(str(error)) from None
        if signal.getsignal(signal.SIGINT) is _exit_while_starting:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        maml, scratch = learning_curve(args.steps, args.plot_tfs, episodes=args.episodes, out=args.out, show=False)
    except KeyboardInterrupt as interrupt:  # its message, if it has one, says what was saved
        raise KeyboardInterrupt(str(interrupt) or "".join(kept) or "interrupted before any curve was saved") from None
    summary = [f"MAML (S={args.steps}): query MSE {final_mse(maml.history):.3f}"]
    if scratch is not None:
        summary.append(f"from scratch ({TFS_STEPS} Adam steps): query MSE {final_mse(scratch.history):.3f}")
    return summary


if __name__ == "__main__":
    try:
        main()
        # Done and saved: a Ctrl-C in the teardown (where Python puts back the default handler) must not kill it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except KeyboardInterrupt as interrupt:  # Ctrl-C: one line saying what was kept, status 130, at once
        print(interrupt, file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(INTERRUPTED)  # not through the interpreter's teardown, where a second Ctrl-C would kill it
    except FigureWriteError as error:  # a full disk, say: one line naming the file, status 1
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as after a finished run: nothing more is saved
        sys.exit(f"error: {error}")
