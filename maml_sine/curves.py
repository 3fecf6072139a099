"""`python test.py --seeds N` and `--fast`: the learning curves of N seeds, trained in lockstep.

Seed i draws its tasks from numpy seed 1337 + i and its initializations from torch seed 42 + i,
so seed 0 is the single run of `python test.py` (up to rounding). With one seed the figure is
the single run's; with more, the median curve over seeds and their spread.
"""

from pathlib import Path

import numpy as np
import torch

from maml_sine.batched import initializations_from_seeds
from maml_sine.core import Algorithm
from maml_sine.files import WriteError, save_figure, write_json_atomically
from maml_sine.learners import ASSIGNMENT
from maml_sine.reports import plot_curves_over_seeds
from maml_sine.training import LockstepRun, final_mse_per_seed, lane_seeds
from utils import TFS_STEPS, final_mse, plot_history

NAMES = {"maml": "MAML (S={steps})", "scratch": f"from scratch ({TFS_STEPS} Adam steps)"}


def curves_over_seeds(
    num_seeds: int, maml_steps: int, plot_tfs: bool, *, episodes: int, out: Path, fast: bool = False,
    kept: list[str] | None = None, device: torch.device | str = "cpu",
) -> list[str]:  # fmt: skip
    """Train MAML (and the from-scratch learner, if `plot_tfs`) for `num_seeds` seeds at once on `device`; save each
    seed's final MSE beside `out` (`out` with the suffix .json), then the figure at `out`. Returns one summary line per
    learner. Each update is compiled with `fast`, or when the run is long enough to pay for compiling
    (`training.worth_compiling`). When Ctrl-C stops the run, the curve so far is saved, a line saying so is
    appended to `kept`, and the KeyboardInterrupt goes on to the caller."""
    seeds = lane_seeds(num_seeds)
    streams = ASSIGNMENT.streams(seeds, device=device)
    run = LockstepRun(streams, episodes, f"{num_seeds} seed(s)", "episode", compile=True if fast else None)
    run.maml("maml", initializations_from_seeds(seeds), Algorithm(maml_steps))
    if plot_tfs:  # built after MAML, as in test.py
        run.from_scratch("scratch", initializations_from_seeds(seeds, skip=1), TFS_STEPS)
    learners = run.learners
    try:
        run.train()
    except KeyboardInterrupt:
        finished = len(learners["maml"].losses)
        if finished:
            _save_curves({name: learner.histories for name, learner in learners.items()}, maml_steps, out)
            if kept is not None:
                kept.append(
                    f"interrupted after {finished:,} of {episodes:,} episodes; the curve so far is saved to {out}"
                )
        raise
    histories = {name: learner.histories for name, learner in learners.items()}
    finals = {name: final_mse_per_seed(losses).tolist() for name, losses in histories.items()}
    record = {
        "seeds": seeds,
        "episodes": episodes,
        "maml_steps": maml_steps,
        "tfs_steps": TFS_STEPS,
        "final_mse": finals,
    }
    write_json_atomically(out.with_suffix(".json"), record)  # the record first: a figure that fails loses nothing
    try:
        _save_curves(histories, maml_steps, out)
    except WriteError as error:
        raise error.keeping(f"{out.with_suffix('.json')} is complete") from error
    return [_summary(NAMES[name].format(steps=maml_steps), losses) for name, losses in histories.items()]


def _summary(name: str, losses: np.ndarray) -> str:
    if len(losses) == 1:
        return f"{name}: query MSE {final_mse(losses[0]):.3f}"
    finals = final_mse_per_seed(losses)
    return (
        f"{name}, {len(losses)} seeds: final MSE median {np.median(finals):.3f}, "
        f"from {finals.min():.3f} to {finals.max():.3f}"
    )


def _save_curves(histories: dict[str, np.ndarray], maml_steps: int, out: Path) -> None:
    """One seed: the single run's figure. More: the median and spread over seeds (pyplot figures, to be shown)."""
    import matplotlib.pyplot as plt

    if len(histories["maml"]) == 1:
        scratch = histories["scratch"][0] if "scratch" in histories else None
        figure = plot_history(scratch, histories["maml"][0], maml_steps=maml_steps, tfs_steps=TFS_STEPS, show=False)
    else:
        labels = {"maml": f"MAML, S={maml_steps}", "scratch": f"from scratch, {TFS_STEPS} Adam steps"}
        curves = {labels[name]: losses for name, losses in histories.items()}
        figure = plot_curves_over_seeds(curves, figure=plt.figure(figsize=(8, 4.5)))
    save_figure(figure, out)
