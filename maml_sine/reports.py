"""The figures and tables the scripts write: the held-out evaluation's (the paper's Figures 2 and 3 for
our learners, a markdown table) and learning curves over many seeds.

`results` in the evaluation's functions is `{learner name: {str(K): {"mean": [...], "ci95": [...]}}}`, one entry
per SGD step 0..MAX_STEPS, as `maml_sine.evaluation.evaluate` returns it for each learner.
"""

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure  # no pyplot: these figures are only written to files, whatever the backend
from matplotlib.lines import Line2D
from matplotlib.ticker import FormatStrFormatter, NullFormatter

from maml_sine.evaluation import DIVERGED, MAX_STEPS, SUPPORT_SIZES, HeldOutTasks
from maml_sine.files import save_figure
from maml_sine.training import LearnerSpec
from utils import PLOT_WINDOW, windowed_mean

GRID = "100 x in [-5, 5]"  # what the evaluation's default score is measured on
MSE_TICKS = (0.1, 0.2, 0.3, 0.5, 1, 2, 3, 5)
PAPER_MSE_TICKS = (0.001, 0.01, 0.03, 0.1, 0.3, 1, 3)
FIT_STEPS = (0, 1, MAX_STEPS)
TABLE_STEPS = (0, 1, 5, 10)


def steps_label(step: int) -> str:
    return "before adaptation" if step == 0 else f"after {step} SGD step{'s' * (step != 1)}"


def plot_mse_against_steps(
    results: Mapping, learners: Mapping[str, LearnerSpec], num_tasks: int, out: str | os.PathLike
) -> None:
    """The paper's Figure 3: mean grid MSE against SGD steps, a 95% band per learner, one panel per K.

    For many seeds (results with "per_seed") the band is the between-seed interval and each
    seed's curve is drawn thin; for one seed it is the task-sampling interval.
    """
    over_seeds = "per_seed" in next(iter(results.values()))[str(SUPPORT_SIZES[0])]
    figure = Figure(figsize=(11, 4.6))
    panels = figure.subplots(1, len(SUPPORT_SIZES), sharey=True)
    steps = np.arange(MAX_STEPS + 1)
    for axes, k in zip(panels, SUPPORT_SIZES):
        for name, learner in learners.items():
            result = results[name][str(k)]
            mean, band = np.array(result["mean"]), np.array(result["seed_ci95" if over_seeds else "ci95"])
            axes.plot(steps, mean, marker="o", markersize=3.5, color=learner.color, label=learner.label)
            axes.fill_between(steps, mean - band, mean + band, color=learner.color, alpha=0.2, linewidth=0)
            for seed_mean in result.get("per_seed", []):
                axes.plot(steps, seed_mean, color=learner.color, linewidth=0.5, alpha=0.35)
        _mse_against_steps_axes(axes, f"K = {k} support points")
    panels[0].set_ylabel(f"MSE on {GRID} (log scale)")
    panels[-1].legend()
    if over_seeds:
        seeds = len(next(iter(results.values()))[str(SUPPORT_SIZES[0])]["per_seed"])
        title = (
            f"Fitting a new sine task: MSE over {num_tasks} held-out tasks, mean of {seeds} seeds "
            "(thin: each seed; band: between-seed 95% interval)"
        )
    else:
        title = f"Fitting a new sine task: mean MSE over {num_tasks} held-out tasks, with 95% confidence bands"
    figure.suptitle(title)
    figure.tight_layout()
    save_figure(figure, out)


def _mse_against_steps_axes(axes, title: str, ticks: Sequence[float] = MSE_TICKS) -> None:
    """Log MSE against SGD steps 0..MAX_STEPS, with readable ticks."""
    axes.set_yscale("log")
    axes.set_yticks(ticks)
    axes.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    axes.yaxis.set_minor_formatter(NullFormatter())
    axes.set_xticks(np.arange(MAX_STEPS + 1))
    axes.set_title(title)
    axes.set_xlabel("SGD steps on the support points (lr 0.01)")
    axes.grid(True, which="both", alpha=0.3)


def plot_paper_mse_against_steps(
    results: Mapping, learners: Mapping[str, LearnerSpec], num_tasks: int, out: str | os.PathLike, scored_on: str
) -> None:
    """The paper's Figure 3 under its protocol, one column per K (each K's own models). Top: the mean MSE
    over the tasks (the paper's statistic), mean of the seeds with a between-seed 95% band and each seed
    thin, drawn up to the last step at which no task's SGD diverged. Bottom: the median over every seed's
    tasks. The oracle is drawn at its MSE before fine-tuning, as the floor (fine-tuning it diverges).

    `results`: {learner: {str(K): evaluate_paper's result for one score}}.
    """
    seeds = len(next(iter(results.values()))[str(SUPPORT_SIZES[0])]["per_seed"])
    figure = Figure(figsize=(12, 8.5))
    panels = figure.subplots(2, len(SUPPORT_SIZES), sharey=True, sharex=True)
    steps = np.arange(MAX_STEPS + 1)
    for column, k in enumerate(SUPPORT_SIZES):
        for name, learner in learners.items():
            result = results[name][str(k)]
            top, bottom = panels[0, column], panels[1, column]
            if learner.oracle:  # drawn as the floor it gives before any fine-tuning
                for axes, statistic in ((top, "mean"), (bottom, "median")):
                    label = f"{learner.label}, not fine-tuned"
                    axes.axhline(result[statistic][0], color=learner.color, linestyle="--", label=label)
                continue
            stable = steps[: _steps_before_divergence(result["diverged"])]
            mean, band = (np.array(result[key])[stable] for key in ("mean", "seed_ci95"))
            median = np.array(result["median"])
            top.plot(stable, mean, marker="o", markersize=3.5, color=learner.color, label=learner.label)
            top.fill_between(stable, mean - band, mean + band, color=learner.color, alpha=0.2, linewidth=0)
            for seed_mean in result["per_seed"]:
                top.plot(stable, np.array(seed_mean)[stable], color=learner.color, linewidth=0.5, alpha=0.35)
            bottom.plot(steps, median, marker="o", markersize=3.5, color=learner.color, label=learner.label)
        _mse_against_steps_axes(panels[0, column], f"K = {k}: mean over tasks", PAPER_MSE_TICKS)
        _mse_against_steps_axes(panels[1, column], f"K = {k}: median over tasks", PAPER_MSE_TICKS)
    for axes in panels[:, 0]:
        axes.set_ylabel(f"MSE on {scored_on} (log scale)")
    panels[0, -1].legend(fontsize=9)
    figure.suptitle(
        f"MAML against the pretrained network and the oracle under Finn et al.'s protocol: {num_tasks} held-out tasks, "
        f"{seeds} seeds\n(top: mean of the seeds, band: between-seed 95% interval, thin: each seed; "
        f"a line ends before SGD has diverged on some task, MSE > {DIVERGED:g})"
    )
    figure.tight_layout()
    save_figure(figure, out)


def _steps_before_divergence(diverged: Sequence[float]) -> int:
    """How many steps, from step 0, have no diverged task."""
    return next((step for step, fraction in enumerate(diverged) if fraction > 0), len(diverged))


def paper_markdown_table(
    results: Mapping, learners: Mapping[str, LearnerSpec], num_tasks: int, scored_on: str, sections: Mapping[str, str]
) -> str:
    """A results.md section for one score: per section (a key of each learner's results), each learner's mean
    MSE ± between-seed 95% interval and median at TABLE_STEPS, or the share of tasks whose SGD diverged."""
    seeds = len(next(iter(results.values()))[next(iter(sections))]["per_seed"])
    lines = [
        f"# MSE on {scored_on} of {num_tasks} held-out sine tasks, by SGD steps on K support points",
        "",
        f"Each cell: the mean over tasks (mean of {seeds} seeds ± between-seed 95% interval); "
        "the median over all seeds' tasks.",
        "",
    ]
    for key, section in sections.items():
        lines += [f"## {section}", "", "| learner | " + " | ".join(steps_label(s) for s in TABLE_STEPS) + " |"]
        lines.append("| --- |" + " ---: |" * len(TABLE_STEPS))
        for name, learner in learners.items():
            result = results[name][key]
            cells = [paper_cell(result, step) for step in TABLE_STEPS]
            if learner.oracle:
                cells[1:] = ["(not fine-tuned)"] * (len(cells) - 1)
            lines.append(f"| {learner.label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def paper_cell(result: Mapping, step: int) -> str:
    """One learner's numbers after `step` steps: mean ± between-seed interval; median, or the share diverged."""
    diverged = result["diverged"][step]
    if diverged > 0:
        return f"diverged on {100 * diverged:.3g}% of tasks; median {result['median'][step]:.3f}"
    return f"{result['mean'][step]:.3f} ± {result['seed_ci95'][step]:.3f}; {result['median'][step]:.3f}"


def plot_fits(
    fits: Mapping[str, Mapping[int, np.ndarray]],
    learners: Mapping[str, LearnerSpec],
    tasks: HeldOutTasks,
    task: int,
    out: str | os.PathLike,
) -> None:
    """The paper's Figure 2: one held-out task, its K support points, and each learner's fit after 0, 1, 10 steps."""
    grid_x, grid_y = (tensor.numpy().ravel() for tensor in (tasks.grid_x, tasks.grid()[1][task]))
    figure = Figure(figsize=(15, 7))
    panels = figure.subplots(len(SUPPORT_SIZES), len(learners), sharex=True, sharey=True)
    styles = {0: (":", 0.9), 1: ("--", 1.5), MAX_STEPS: ("-", 2.0)}
    for row, k in zip(panels, SUPPORT_SIZES):
        support_x, support_y = (tensor[task].numpy().ravel() for tensor in tasks.support(k))
        for axes, (name, learner) in zip(row, learners.items()):
            axes.plot(grid_x, grid_y, color="black", linewidth=1.2)
            for step in (step for step in FIT_STEPS if step < len(fits[name][k])):  # the oracle is not fine-tuned
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
            Line2D([], [], color="dimgray", linestyle=styles[s][0], linewidth=styles[s][1], label=steps_label(s))
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


def markdown_table(results: Mapping, learners: Mapping[str, LearnerSpec], num_tasks: int) -> str:
    """results.md: for each K, mean MSE +- 95% interval of every learner at TABLE_STEPS (between seeds,
    for many seeds; over the tasks, for one)."""
    first = next(iter(results.values()))[str(SUPPORT_SIZES[0])]
    interval = "seed_ci95" if "per_seed" in first else "ci95"
    what = f"mean of {len(first['per_seed'])} seeds ± between-seed 95% interval" if "per_seed" in first else None
    what = what or "mean ± 95% CI"
    lines = [f"# MSE on {num_tasks} held-out sine tasks ({what}), by SGD steps on K support points", ""]
    for k in SUPPORT_SIZES:
        lines += [f"## K = {k}", "", "| learner | " + " | ".join(steps_label(s) for s in TABLE_STEPS) + " |"]
        lines.append("| --- |" + " ---: |" * len(TABLE_STEPS))
        for name, learner in learners.items():
            cells = [
                f"{results[name][str(k)]['mean'][s]:.3f} ± {results[name][str(k)][interval][s]:.3f}"
                for s in TABLE_STEPS
            ]
            lines.append(f"| {learner.label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Written by `python scripts/evaluate.py`; every step 0..10 is in results.json.")
    return "\n".join(lines) + "\n"


def plot_curves_over_seeds(
    histories: Mapping[str, np.ndarray], window: int = PLOT_WINDOW, figure: Figure | None = None
) -> Figure:
    """The learning curves of many seeds: per learner, the median over seeds of the `window`-episode
    sliding mean of the query MSE, and a band from the 10th to the 90th percentile (min to max for
    fewer than 10 seeds). `histories`: label -> (seeds, episodes) query losses. Draws on `figure`
    (a pyplot one, to be shown in a window) or on a new one, for a file only."""
    figure = figure if figure is not None else Figure(figsize=(8, 4.5))
    axes = figure.subplots()
    for (label, losses), color in zip(histories.items(), ["tab:blue", "tab:orange"]):
        curves = np.stack([windowed_mean(seed_losses, window)[1] for seed_losses in losses])
        episodes = windowed_mean(losses[0], window)[0]
        low, high = (10, 90) if len(curves) >= 10 else (0, 100)
        band = f"{low}th to {high}th percentile" if low else "min to max"
        axes.plot(episodes, np.median(curves, axis=0), color=color, label=f"{label}: median of {len(curves)} seeds")
        lower, upper = np.percentile(curves, [low, high], axis=0)
        axes.fill_between(episodes, lower, upper, color=color, alpha=0.25, linewidth=0, label=f"{label}: {band}")
    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    axes.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    axes.set_xlabel("meta-training episode (one task each)")
    axes.set_ylabel(f"query MSE, mean of last {window} episodes (log)")
    axes.set_title(f"Query MSE per new task over {len(curves)} seeds: median and spread")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure
