"""The figures and tables the scripts write, and how each learner is named and drawn in them: the held-out
evaluation's (the paper's Figures 2 and 3 for our learners, a markdown table) and learning curves over seeds.

`results` is `{score: {learner: {section: summary}}}` as `scripts/evaluate.py` writes it into results.json,
a summary being `maml_sine.evaluation.summarize`'s: one entry per SGD step 0..MAX_STEPS of each statistic.
"""

import os
import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure  # no pyplot: these figures are only written to files, whatever the backend
from matplotlib.lines import Line2D
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from maml_sine.evaluation import DIVERGED, MAX_STEPS, HeldOutTasks, one_run_difference, scored_sets
from maml_sine.files import save_figure
from maml_sine.learners import LEARNERS, Plot, Section, Study
from maml_sine.published import PAPER_TABLE_2, TABLE_2_ROWS, TABLE_2_STEPS
from utils import PLOT_WINDOW, windowed_mean

STYLES = {  # each learner's label and colour, in every figure and table
    "maml": ("MAML, S=1", "tab:blue"),
    "maml_alpha0.001": ("MAML, S=1, α = 0.001", "tab:cyan"),
    "first_order_maml": ("first-order MAML, S=1", "tab:green"),
    "pretrained": ("pretrained (S=0)", "tab:orange"),
    "pretrained_alpha0.001": ("pretrained, fine-tuned at 0.001", "darkgoldenrod"),
    "pretrained_tuned": ("pretrained, tuned step size", "tab:red"),
    "meta_sgd": ("Meta-SGD, S=1 (learned step sizes)", "black"),
    "anil": ("ANIL, S=1 (head only)", "tab:orange"),
    "cavia": ("CAVIA, S=1 (context, step 1.0)", "tab:red"),
    "maml_plus_plus": ("MAML++, S=5 (learned step sizes per step, clipped)", "tab:purple"),
    "reptile": ("Reptile, k=5, SGD 0.02", "tab:brown"),
    "cavia_recipe": ("CAVIA, its code's 50,000 updates", "lightcoral"),
    "reptile_recipe": ("Reptile, its demo's 30,000 one-task updates", "rosybrown"),
    "scratch": ("from scratch (random init)", "tab:gray"),
    "oracle": ("oracle (given a and p)", "tab:purple"),
    "multitask": ("multi-task average, no reg.", "tab:olive"),
    "multitask_l2": ("multi-task average, l2 reg.", "tab:pink"),
    "multitask_running_mean": ("multi-task average, reg. to mean", "tab:brown"),
    "multitask_l2_wd0.01": ("multi-task average, l2 reg. 0.01", "lightpink"),
    "multitask_running_mean_wd0.01": ("multi-task average, reg. to mean 0.01", "peru"),
    "maml_alpha0.001_code_init": ("MAML, S=1, α = 0.001, the code's initialization", "navy"),
    "maml_tested_at_0.005": ("MAML, S=1 (α = 0.01), tested at 0.005", "steelblue"),
    "maml_tested_at_0.001": ("MAML, S=1 (α = 0.01), tested at 0.001", "lightsteelblue"),
    "oracle_alpha0.01": ("oracle, fine-tuned at 0.01", "mediumorchid"),
    "oracle_alpha0.001": ("oracle, fine-tuned at 0.001", "plum"),
    "multitask_independent": ("multi-task average, no reg., own starts", "darkolivegreen"),
    "multitask_l2_independent": ("multi-task average, l2 reg., own starts", "palevioletred"),
    "multitask_running_mean_independent": ("multi-task average, reg. to mean, own starts", "sienna"),
}
PAPER_ROW_OF = {learners[0]: row for row, learners in TABLE_2_ROWS}  # the learner each row of Table 2 is drawn beside
SCORES = {"grid": "100 x in [-5, 5]", "query": "K new points per task"}  # what each score is measured on


def style(name: str) -> tuple[str, str]:
    """A learner's label and colour: its entry in STYLES, or, for a learner added to the registry alone,
    its name and a colour of its own."""
    extra_colors = ("tab:red", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
    return STYLES.get(name) or (name, extra_colors[sum(map(ord, name)) % len(extra_colors)])


def tested_label(name: str, lr: float | str | None) -> str:
    """A learner's label in a figure, with the SGD step size it is tested at (`lr`; none for LEARNED or unknown):
    "(not fine-tuned)" at 0, nothing more where its STYLES label already names that step size."""
    label = style(name)[0]
    if not isinstance(lr, float) or f"at {lr:g}" in label:
        return label
    return f"{label} (not fine-tuned)" if lr == 0 else f"{label}, tested at {lr:g}"


FIT_STEPS = (0, 1, MAX_STEPS)
TABLE_STEPS = (0, 1, 5, 10)


def steps_label(step: int) -> str:
    return "before adaptation" if step == 0 else f"after {step} SGD step{'s' * (step != 1)}"


def section_title(section: Section, study: Study) -> str:
    """How a section is named in figures and tables: its K, and the models' K where they were trained at another."""
    title = f"K = {section.k}"
    if section.trained_k != section.k and len(study.training) > 1:
        title += f", the K = {section.trained_k} models"
    return title + (", support in [-5, 0), new points in [0, 5)" if section.half == "left" else "")


def plot_mse_against_steps(
    results: Mapping, plot: Plot, study: Study, num_tasks: int, out: str | os.PathLike, score: str,
    test_lrs: Mapping | None = None,
) -> None:  # fmt: skip
    """The paper's Figure 3: MSE against SGD steps, one column per section of `plot`. Top: the mean over
    tasks, the mean of the seeds with a 95% band (between seeds, or over the tasks for one seed) and each
    seed thin, up to the last step at which no task's SGD has diverged. Bottom, if `study.medians`: the
    median over every seed's tasks. Each learner is labelled with its test step size (`test_lrs`:
    {learner: {section: lr}}, results.json's); with `plot.paper_values`, the paper's Table 2 as markers.

    `results`: {learner: {section: `evaluation.summarize`'s result}} for one score.
    """
    seeds = _seeds(results)
    rows = ("mean", "median") if study.medians else ("mean",)
    sections, learners = study.drawn(plot)
    figure = Figure(figsize=(max(5.5 * len(sections), 8.5), 4.6 * len(rows) + 0.6), layout="constrained")
    panels = figure.subplots(len(rows), len(sections), sharey=True, sharex=True, squeeze=False)
    steps = np.arange(MAX_STEPS + 1)
    for column, section in enumerate(sections):
        for name in learners:
            label, color = tested_label(name, (test_lrs or {}).get(name, {}).get(section.key)), style(name)[1]
            result = results[name][section.key]
            stable = steps[: _steps_before_divergence(result["diverged"])]
            mean, band = (np.array(result[key], dtype=float)[stable] for key in ("mean", _interval(seeds)))
            top = panels[0, column]
            top.plot(stable, mean, marker="o", markersize=3.5, color=color, label=label)
            top.fill_between(stable, mean - band, mean + band, color=color, alpha=0.2, linewidth=0)
            for seed_mean in result["per_seed"] if seeds > 1 else []:
                top.plot(stable, np.array(seed_mean, dtype=float)[stable], color=color, linewidth=0.5, alpha=0.35)
            if study.medians:
                median = np.array(result["median"], dtype=float)
                panels[1, column].plot(steps, median, marker="o", markersize=3.5, color=color, label=label)
            if plot.paper_values and name in PAPER_ROW_OF:
                top.scatter(TABLE_2_STEPS, PAPER_TABLE_2[PAPER_ROW_OF[name]], s=90, marker="*", color=color,
                            edgecolor="black", zorder=5, label=f"paper's Table 2: {PAPER_ROW_OF[name]}")  # fmt: skip
        title = textwrap.fill(section_title(section, study), 48)
        for axes, row in zip(panels[:, column], rows):
            _mse_against_steps_axes(axes, f"{title}: {row} over tasks" if study.medians else f"{title} support points")
            if plot.scale == "linear":
                axes.set_yscale("linear")
                axes.yaxis.set_major_formatter(FormatStrFormatter("%g"))
                axes.set_ylim(bottom=0)
        panels[0, column].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=2)
    for axes in panels[:, 0]:
        axes.set_ylabel(f"MSE on {SCORES[score]}" + (" (log scale)" if plot.scale == "log" else ""))
    spread = (
        f"mean of {seeds} seeds, band: between-seed 95% interval, thin: each seed"
        if seeds > 1
        else "band: 95% interval over the tasks"
    )
    figure.suptitle(
        f"Fitting a new sine task ({study.name} protocol): MSE over {num_tasks} held-out tasks\n({spread};\n"
        f"a line ends before SGD has diverged on some task, MSE > {DIVERGED:g})"
    )
    save_figure(figure, out)


def plot_seeds(report: Mapping, plot: Plot, out: str | os.PathLike, score: str = "query") -> None:
    """The figure of the alpha verdict: each seed's mean MSE after 1, 5 and 10 steps (a panel per step) for each
    learner of `plot` in its first section, the mean of the seeds with the spread of one run of the paper's
    protocol (`evaluation.one_run_difference`) where no task's SGD diverged, and the paper's MAML row of Table 2
    as a line. A seed mean beyond the axis (some task's SGD diverged in it) is drawn as a triangle at the top,
    with its value."""
    section, learners = plot.sections[0], plot.learners
    figure = Figure(figsize=(4.2 * len(TABLE_2_STEPS), 5.2), layout="constrained")
    panels = figure.subplots(1, len(TABLE_2_STEPS), sharey=True)
    results = [report["mse"][score][name][section] for name in learners]
    kept = [
        [result, step, published] for result in results for step, published in zip(TABLE_2_STEPS, PAPER_TABLE_2["MAML"])
        if result["diverged"][step] == 0
    ]  # fmt: skip
    top = 1.25 * max(mean + one_run_difference(result, step, published, result["ci95"][step])[1]
                     for result, step, published in kept for mean in [result["mean"][step]])  # fmt: skip
    for axes, step, published in zip(panels, TABLE_2_STEPS, PAPER_TABLE_2["MAML"]):
        for x, (name, result) in enumerate(zip(learners, results)):
            per_seed = np.array(result["per_seed"], dtype=float)[:, step]
            inside = np.isfinite(per_seed) & (per_seed <= top)
            label = tested_label(name, report["evaluation"]["test_lr"][name][section]) if axes is panels[0] else None
            axes.scatter(np.full(inside.sum(), x), per_seed[inside], color=style(name)[1], s=22, zorder=3, label=label)
            for value in per_seed[~inside]:
                axes.scatter(x, 0.97 * top, marker="^", color="black", s=40, zorder=3)
                axes.annotate("∞" if not np.isfinite(value) else f"{value:.3g}", (x, 0.97 * top),
                              textcoords="offset points", xytext=(6, -4), fontsize=7)  # fmt: skip
            if result["diverged"][step] == 0:
                _, spread = one_run_difference(result, step, published, result["ci95"][step])
                axes.errorbar(x + 0.18, result["mean"][step], yerr=spread, fmt="o", color="black", capsize=4,
                              markersize=4)  # fmt: skip
        axes.axhline(published, color="tab:red", linestyle="--")
        axes.set_xticks(range(len(learners)), [str(x + 1) for x in range(len(learners))])
        axes.set_ylim(0, top)
        axes.set_title(f"after {step} step{'s' * (step > 1)}: the paper's {published:g}", fontsize=11)
        axes.grid(True, axis="y", alpha=0.3)
    panels[0].set_ylabel(f"mean MSE over the tasks, on {SCORES[score]}")
    handles, labels = panels[0].get_legend_handles_labels()
    figure.legend(handles, [f"{x + 1}: {label}" for x, label in enumerate(labels)], loc="outside lower center",
                  ncols=2, fontsize=8)  # fmt: skip
    figure.suptitle("Which α made Table 2? The K = 10 models fine-tuned on 5 points: each seed (dots), the mean ± the "
                    "spread of one 600-task run (black; none where\nsome task's SGD diverged), the paper's number "
                    "(red); a triangle: a seed beyond the axis, its value beside it")  # fmt: skip
    save_figure(figure, out)


def plot_curvature_along_sgd(report: Mapping, out: str | os.PathLike) -> None:
    """alpha * lambda before each test-time SGD step (lambda: the support loss's top Hessian eigenvalue), a panel per
    curvature learner in its section with the most diverged pairs: each diverged pair's own line against the
    5-95% and 25-75% bands and median of the others, and the edge alpha * lambda = 2."""
    names = list(report["curvature"])
    figure = Figure(figsize=(6.2 * len(names), 4.8), layout="constrained")
    for axes, name in zip(figure.subplots(1, len(names), squeeze=False)[0], names):
        sections = report["curvature"][name]
        section = max(sections, key=lambda key: len(sections[key]["lambda_along_sgd_of_the_diverged"]))
        record, (label, color) = sections[section], style(name)
        lr, rest = record["test_lr"], record["lambda_along_sgd_percentiles_of_the_rest"]
        steps = np.arange(len(rest["50"]))
        for low, high, alpha in (("5", "95", 0.15), ("25", "75", 0.3)):
            axes.fill_between(steps, lr * np.array(rest[low]), lr * np.array(rest[high]), color=color, alpha=alpha,
                              linewidth=0, label=f"the other pairs, {low}-{high}%")  # fmt: skip
        axes.plot(steps, lr * np.array(rest["50"]), color=color, label="the other pairs, median")
        for index, pair in enumerate(record["lambda_along_sgd_of_the_diverged"]):
            values = np.array([np.nan if v is None else v for v in pair["lambda"]], dtype=float)
            axes.plot(steps, lr * values, color="black", linewidth=0.8, alpha=0.7,
                      label="each pair whose SGD diverged" if index == 0 else None)  # fmt: skip
        axes.axhline(2, color="tab:red", linestyle="--", label="α·λ = 2")
        axes.set_yscale("log")
        axes.set_xticks(steps)
        axes.set_xlabel("SGD steps taken before λ is measured")
        axes.set_ylabel(f"α·λ (α = {lr:g}, log scale)")
        count = len(record["lambda_along_sgd_of_the_diverged"])
        axes.set_title(textwrap.fill(f"{label}, K = {section}: {count} diverged pairs", 52), fontsize=10)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle("Curvature along test-time SGD: the pairs that diverged against the rest")
    save_figure(figure, out)


def _seeds(results: Mapping) -> int:
    first_learner = next(iter(results.values()))
    return len(next(iter(first_learner.values()))["per_seed"])


def _interval(seeds: int) -> str:
    """The interval to show: between seeds where there are several; over the tasks for one seed."""
    return "seed_ci95" if seeds > 1 else "ci95"


def _mse_against_steps_axes(axes, title: str) -> None:
    """Log MSE against SGD steps 0..MAX_STEPS, with readable ticks."""
    axes.set_yscale("log")
    axes.yaxis.set_major_locator(LogLocator(subs=(1, 2, 3, 5)))
    axes.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    axes.yaxis.set_minor_formatter(NullFormatter())
    axes.set_xticks(np.arange(MAX_STEPS + 1))
    axes.set_title(title, fontsize=11)
    axes.set_xlabel("SGD steps on the support points (at each learner's test step size)")
    axes.grid(True, which="both", alpha=0.3)


def _steps_before_divergence(diverged: Sequence[float]) -> int:
    """How many steps, from step 0, have no diverged task."""
    return next((step for step, fraction in enumerate(diverged) if fraction > 0), len(diverged))


def markdown_table(results: Mapping, study: Study, num_tasks: int, command: str) -> str:
    """results.md: for each score and section, every learner's mean MSE ± 95% interval (between seeds, or over
    the tasks for one seed) at TABLE_STEPS, with the median if `study.medians`; where some task's SGD has
    diverged, the share of such tasks and the median instead."""
    lines = []
    for score in study.scores:
        seeds = _seeds(results[score])
        what = f"mean of {seeds} seeds ± between-seed 95% interval" if seeds > 1 else "mean ± 95% interval over tasks"
        median = "; the median over all seeds' tasks" if study.medians else ""
        lines += [f"# MSE on {SCORES[score]} of {num_tasks} held-out sine tasks, by SGD steps on K support points",
                  "", f"Each cell: the mean over tasks ({what}){median}.", ""]  # fmt: skip
        for section in study.sections:
            lines += [f"## {section_title(section, study)}", "",
                      "| learner | " + " | ".join(steps_label(s) for s in TABLE_STEPS) + " |"]  # fmt: skip
            lines.append("| --- |" + " ---: |" * len(TABLE_STEPS))
            for name in study.learners:
                cells = learner_cells(name, results[score][name][section.key], TABLE_STEPS, study.medians)
                lines.append(f"| {style(name)[0]} | " + " | ".join(cells) + " |")
            lines.append("")
    lines.append(f"Written by `{command}`; every step 0..10 is in results.json.")
    return "\n".join(lines) + "\n"


def learner_cells(name: str, result: Mapping, steps: Sequence[int], median: bool) -> list[str]:
    """A table row's `cell`s of learner `name` after each of `steps`; a learner not fine-tuned (test step size 0:
    the oracle, told the task) has only its step-0 cell."""
    cells = [cell(result, step, median) for step in steps]
    if LEARNERS[name].test_lr == 0:
        cells[1:] = ["(not fine-tuned)"] * (len(cells) - 1)
    return cells


def cell(result: Mapping, step: int, median: bool) -> str:
    """One learner's numbers after `step` steps: mean ± interval (and the median), or the share diverged."""
    diverged = result["diverged"][step]
    if diverged > 0:
        return f"diverged on {100 * diverged:.3g}% of tasks; median {result['median'][step]:.3f}"
    interval = result[_interval(len(result["per_seed"]))][step]
    return f"{result['mean'][step]:.3f} ± {interval:.3f}" + (f"; {result['median'][step]:.3f}" if median else "")


def plot_curvature(report: Mapping, section: str, out: str | os.PathLike) -> None:
    """Each seed-task pair's top Hessian eigenvalue at the initialization against its task's amplitude, one panel
    per learner of the curvature record, the tasks whose SGD diverged marked, and the line alpha * lambda = 2."""
    amplitudes = np.array(report["evaluation"]["amplitudes"])
    names = list(report["curvature"])
    figure = Figure(figsize=(6 * len(names), 4.8))
    panels = figure.subplots(1, len(names), squeeze=False)[0]
    for axes, name in zip(panels, names):
        record = report["curvature"][name][section]
        lambdas, diverged = np.array(record["lambda_at_start"], dtype=float), np.array(record["diverged"])
        every = np.broadcast_to(amplitudes, lambdas.shape)
        label, color = style(name)
        axes.scatter(every[~diverged], lambdas[~diverged], s=4, color=color, alpha=0.3, label="SGD stayed bounded")
        axes.scatter(every[diverged], lambdas[diverged], s=40, marker="x", color="black", label="SGD diverged")
        axes.axhline(
            2 / record["test_lr"], color="tab:red", linestyle="--", label=f"α·λ = 2 (α = {record['test_lr']:g})"
        )
        axes.set_yscale("log")
        axes.set_xlabel("task amplitude a")
        axes.set_ylabel("top eigenvalue λ of the support loss's Hessian (log)")
        axes.set_title(f"{label}, {section}", fontsize=11)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle("Curvature at the meta-learned initialization, per held-out task and seed, against amplitude")
    figure.tight_layout()
    save_figure(figure, out)


def plot_learned(report: Mapping, out: str | os.PathLike) -> None:
    """What the family's learners learned beside an initialization (results.json's "learned"), a panel each:
    Meta-SGD's mean step size per tensor, MAML++'s step sizes per inner step, CAVIA's adapted context against
    the task's amplitude and phase (seed 0, the first principal component of the context)."""
    learned = report["learned"]
    panels = [name for name in ("meta_sgd", "maml_plus_plus", "cavia") if name in learned]
    figure = Figure(figsize=(5.6 * len(panels), 4.8))
    for axes, name in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        label, _ = style(name)
        runs = learned[name]
        if name == "cavia":
            _draw_contexts(axes, figure, report, list(runs.values())[-1])
        else:
            if name == "meta_sgd":
                _draw_mean_step_sizes(axes, runs)
            else:
                _draw_step_sizes_per_step(axes, *list(runs.items())[-1])
            start = LEARNERS[name].algorithm.inner_lr
            axes.axhline(start, color="gray", linestyle=":", label=f"where every step size starts ({start:g})")
            axes.legend(fontsize=8)
        axes.set_title(label, fontsize=10)
        axes.grid(True, alpha=0.3)
    figure.suptitle("What the MAML family learns beside an initialization")
    figure.tight_layout()
    save_figure(figure, out)


def _draw_mean_step_sizes(axes, runs: Mapping) -> None:
    """Meta-SGD: each tensor's mean step size, a bar per model (K), the mean of the seeds, their range as error bars."""
    width = 0.8 / len(runs)
    for offset, (run, record) in enumerate(runs.items()):
        per_seed = np.array(list(record["mean_step_size"].values()))  # (tensors, seeds)
        positions = np.arange(len(per_seed)) + offset * width
        low, high = per_seed.mean(axis=1) - per_seed.min(axis=1), per_seed.max(axis=1) - per_seed.mean(axis=1)
        axes.bar(positions, per_seed.mean(axis=1), width, label=f"trained at {run} (error bars: range of seeds)")
        axes.errorbar(positions, per_seed.mean(axis=1), yerr=[low, high], fmt="none", color="black", capsize=2)
    axes.set_xticks(np.arange(len(per_seed)) + width * (len(runs) - 1) / 2, list(record["mean_step_size"]))
    axes.set_xlabel("network tensor")
    axes.set_ylabel("mean learned step size α (mean of seeds)")


def _draw_step_sizes_per_step(axes, run: str, record: Mapping) -> None:
    """MAML++: each tensor's step size at each inner step, the mean of the seeds."""
    for tensor, per_seed in record["step_sizes_per_step"].items():
        values = np.array(per_seed)  # (seeds, S)
        axes.plot(np.arange(1, values.shape[1] + 1), values.mean(axis=0), marker="o", label=tensor)
    axes.set_xticks(np.arange(1, values.shape[1] + 1))
    axes.set_xlabel("inner step")
    axes.set_ylabel(f"learned step size (mean of seeds, trained at {run})")


def _draw_contexts(axes, figure: Figure, report: Mapping, record: Mapping) -> None:
    """CAVIA: seed 0's adapted context of every held-out task (its first principal component) against the task's
    amplitude, coloured by phase, and how much of the task a linear read-out of the whole context explains."""
    context = record["context"]
    contexts = np.array(context["seed_0_contexts"])
    centred = contexts - contexts.mean(axis=0)
    first_component = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]
    amplitudes, phases = (np.array(report["evaluation"][key]) for key in ("amplitudes", "phases"))
    points = axes.scatter(amplitudes, first_component, c=phases, s=8, cmap="viridis")
    figure.colorbar(points, ax=axes, label="task phase p (rad)")
    r2 = context["r_squared"]
    read_out = "\n".join(f"{what}: {np.mean(r2[key]):.2f}" for what, key in
                         (("a", "amplitude"), ("a·cos p", "a_cos_p"), ("a·sin p", "a_sin_p")))  # fmt: skip
    axes.text(0.03, 0.97, f"R² of a linear read-out\nof the context (mean of seeds)\n{read_out}",
              transform=axes.transAxes, va="top", fontsize=8, bbox={"facecolor": "white", "alpha": 0.8})  # fmt: skip
    axes.set_xlabel("task amplitude a")
    axes.set_ylabel(f"adapted context, 1st principal component (K = {context['k']})")


def plot_fits(
    fits: Mapping[str, Mapping[str, np.ndarray]], plot: Plot, study: Study, tasks: HeldOutTasks,
    task: int, out: str | os.PathLike,
) -> None:  # fmt: skip
    """The paper's Figure 2: one held-out task, its K support points, and each learner's fit after 0, 1, 10 steps,
    a row per section of `plot`. `fits`: {learner: {section: its predictions on the grid after each
    step, (steps + 1, m)}}."""
    grid_x, grid_y = (tensor.cpu().numpy().ravel() for tensor in (tasks.grid_x, tasks.grid()[1][task]))
    sections, learners = study.drawn(plot)
    figure = Figure(figsize=(3.9 * len(learners), 3.7 * len(sections) + 0.7))
    panels = figure.subplots(len(sections), len(learners), sharex=True, sharey=True, squeeze=False)
    styles = {0: (":", 0.9), 1: ("--", 1.5), MAX_STEPS: ("-", 2.0)}
    for row, section in zip(panels, sections):
        support_x, support_y = (tensor[task].cpu().numpy().ravel()
                                for tensor in scored_sets(tasks, section.k, half=section.half)["support"])  # fmt: skip
        for axes, name in zip(row, learners):
            label, color = style(name)
            axes.plot(grid_x, grid_y, color="black", linewidth=1.2)
            predictions = fits[name][section.key]
            for step in (step for step in FIT_STEPS if step < len(predictions)):  # the oracle is not fine-tuned
                linestyle, linewidth = styles[step]
                axes.plot(grid_x, predictions[step], color=color, linestyle=linestyle, linewidth=linewidth)
            axes.plot(support_x, support_y, "^", color="black", markersize=7)
            title = section_title(section, study).replace(", support", ",\nsupport")  # two lines for the half-range
            axes.set_title(f"{label}\n{title}", fontsize=10)
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
    frequency = "" if tasks.frequencies is None else f"{tasks.frequencies[task]:.2f} "
    function = f"y = {amplitude:.2f} sin({frequency}x + {phase:.2f})"
    title = f"Held-out task {task}, {function}: each learner's fit from K points as it adapts"
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    save_figure(figure, out)


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
