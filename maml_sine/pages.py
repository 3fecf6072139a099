"""The tables of the docs pages and the README, written from the committed results, so that no table is
pasted by hand and none can fall behind the results it reports.

A page marks each generated table with a pair of HTML comments, which markdown does not show:

    <!-- generated: table_2 -->

    | Table 2 row | paper: 1 / 5 / 10 steps | here | ...

    <!-- end generated -->

The name is a key of BLOCKS, which says which results file fills the block (a path under docs/) and which
function writes it. `scripts/write_pages.py` rewrites the blocks of PAGES in place (`--check` lists the stale
ones and writes nothing), and tests/test_docs.py holds every committed page to what it would write. A
block is written whole: a table is changed here, never in a page. Everything outside the blocks, the
single numbers of the prose included, is written by hand and checked by tests of its own.

A `report` is one results file as JSON reads it back (NaN and infinities null): results.json of
`scripts/evaluate.py` ({"study", "learners", "evaluation", "mse", "curvature", ...}), of
`scripts/grader_margin.py` ({"runs", "results", ...}), or docs/grader_runs.json ({"runs": [...]}).
"""

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache, partial
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from maml_sine.evaluation import MAX_STEPS, one_run_difference
from maml_sine.learners import FAMILY, K10_MODEL_AT_K5, RECIPES, STUDIES, Study
from maml_sine.published import LI_TABLE_1, PAPER_TABLE_2, TABLE_2_ROWS, TABLE_2_STEPS
from maml_sine.reports import TABLE_STEPS, cell, learner_cells, section_title, steps_label, style

Report = Mapping[str, Any]


def study_of(report: Report) -> Study:
    """The study whose results `report` holds, rebuilt from the registry by its name and its updates."""
    record = report["study"]
    return STUDIES[record["name"]](updates=record["training"][0]["updates"])


# --- The held-out evaluation (docs/evaluation/results.json) -----------------------------------------------------------


def held_out_table(
    report: Report, steps: Sequence[int] = TABLE_STEPS, learners: Sequence[str] | None = None, score: str = "grid"
) -> str:
    """Every section of the study side by side, a group of columns each (K = 5, then K = 10): each learner's
    mean MSE ± between-seed interval after each of `steps`, for `learners` (default: the study's)."""
    study = study_of(report)
    labels = ["before" if step == 0 else f"{step} step{'s' * (step != 1)}" for step in steps]
    header = ["learner"]
    for section in study.sections:
        header += [f"{section_title(section, study)}: {labels[0]}", *labels[1:]]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    for name in learners or study.learners:
        cells = []
        for section in study.sections:
            cells += learner_cells(name, report["mse"][score][name][section.key], steps, study.medians)
        lines.append(f"| {style(name)[0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- The graders' runs (docs/grader_margin/results.json, docs/grader_runs.json) ---------------------------------------


def run_label(name: str) -> str:
    """A grader run as the pages name it: "K10-S1" is "K = 10, S = 1"."""
    k, steps = re.fullmatch(r"K(\d+)-S(\d+)", name).groups()
    return f"K = {k}, S = {steps}"


def _final_mse(value: float | None) -> str:
    """A final MSE; a seed that diverged has none (JSON's null for infinity)."""
    return "diverged" if value is None else f"{value:.3f}"


def _margin_rows(report: Report) -> Iterator[tuple[str, float, str, dict]]:
    """Each grader run and order of MAML of the margin study: the run's label, its threshold, the order, and the
    summary of its final MSE over seeds."""
    for name, run in report["runs"].items():
        for order, result in report["results"][name].items():
            yield run_label(name), run["threshold"], order, result["summary"]


def margin_table(report: Report) -> str:
    """The graders' final MSE over seeds, for each grader run and order of MAML: min, median and max over the
    seeds, how many diverged, and the share under the run's threshold. Both the script's results.md and
    docs/seeds.md show it."""
    lines = [
        "| grader run | MAML | min | median | max | diverged | share under the threshold |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, threshold, order, summary in _margin_rows(report):
        lines.append(
            f"| {label} (threshold {threshold}) | {order} | {summary['min']:.3f} | {summary['median']:.3f} | "
            f"{_final_mse(summary['max'])} | {summary['diverged']} | {summary['share_under_threshold']:.0%} |"
        )
    return "\n".join(lines) + "\n"


def margin_spread_table(report: Report) -> str:
    """The README's short form of `margin_table`: the median final MSE with its range, and the share of seeds
    under the threshold."""
    lines = [
        "| grader run (threshold) | MAML | final MSE: median (min to max) | seeds under the threshold |",
        "| --- | --- | ---: | ---: |",
    ]
    for label, threshold, order, summary in _margin_rows(report):
        spread = f"{summary['median']:.3f} ({summary['min']:.3f} to {_final_mse(summary['max'])})"
        lines.append(f"| {label} ({threshold}) | {order} | {spread} | {summary['share_under_threshold']:.0%} |")
    return "\n".join(lines) + "\n"


def grader_runs_table(report: Report) -> str:
    """The graders' two seeded runs in each environment and beside each `utils.py` (docs/grader_runs.json)."""
    names = list(report["runs"][0]["final_mse"])
    lines = [
        "| environment | `utils.py` | " + " | ".join(run_label(name) for name in names) + " |",
        "| --- | --- |" + " ---: |" * len(names),
    ]
    for run in report["runs"]:
        figures = " | ".join(_final_mse(run["final_mse"][name]) for name in names)
        lines.append(f"| {run['environment']} | {run['utils']} | {figures} |")
    return "\n".join(lines) + "\n"


# --- The paper's protocol (docs/paper_protocol/results.json) ----------------------------------------------------------


def table_2(report: Report, section: str, score: str = "query") -> str:
    """The paper's Table 2 beside this study's learners in `section` of results.json (`report`): each cell the
    mean over tasks, mean of the seeds ± the spread of one run of the paper's protocol (`one_run_difference`: a
    new seed on 600 tasks of its own), and whether the paper's number lies within it; where some task's SGD
    diverged, `diverged_cell`."""
    after = " | ".join(f"after {step} step{'s' * (step > 1)}" for step in TABLE_2_STEPS)
    lines = [
        f"| Table 2 row | paper: 1 / 5 / 10 steps | here | test step size | {after} | paper's number within one run? |",
        "| --- | --- | --- | ---: |" + " ---: |" * len(TABLE_2_STEPS) + " --- |",
    ]  # fmt: skip
    for row, every_learner in TABLE_2_ROWS:
        learners = [name for name in every_learner if name in report["mse"][score]]  # a run before some joined
        for name in learners:
            result = report["mse"][score][name][section]
            cells, verdicts = [], []
            for step, published in zip(TABLE_2_STEPS, PAPER_TABLE_2[row]):
                if result["diverged"][step] > 0:
                    cells.append(diverged_cell(result, step, report["evaluation"]["tasks"]))
                    verdicts.append("—")
                    continue
                gap, spread = one_run_difference(result, step, published, result["ci95"][step])
                cells.append(f"{result['mean'][step]:.2f} ± {spread:.2f}")
                verdicts.append("yes" if abs(gap) <= spread else f"no ({gap:+.2f})")
            lr = report["evaluation"]["test_lr"][name][section]
            paper_cell = " / ".join(f"{value:.2f}" for value in PAPER_TABLE_2[row]) if name == learners[0] else "″"
            lines.append(f"| {row if name == learners[0] else ''} | {paper_cell} | {style(name)[0]} | {lr:g} | "
                         + " | ".join(cells) + f" | {' / '.join(verdicts)} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def diverged_cell(result: Mapping, step: int, tasks: int) -> str:
    """A cell where some seed-task pairs' SGD diverged by `step`: their share, the chance that one run of `tasks`
    tasks meets none (at that share per task), the mean of the other pairs, and the range of the seeds whose mean
    is finite."""
    share = result["diverged"][step]
    finite = [mean for mean in np.array(result["per_seed"], dtype=float)[:, step] if np.isfinite(mean)]
    seeds = f"; finite seed means {min(finite):.2f} to {max(finite):.2f}" if finite else ""
    return (f"diverged on {100 * share:.2g}% of pairs (none in a {tasks}-task run: {(1 - share) ** tasks:.0%}); "
            f"the rest {result['mean_of_the_rest'][step]:.2f}{seeds}")  # fmt: skip


def rows_table(report: Report, rows: Sequence[tuple[str, str]], score: str, steps: Sequence[int] = TABLE_STEPS) -> str:
    """A table of (learner, section) rows of results.json (`report`) after `steps`: each cell the mean ±
    between-seed interval and the median, or the share diverged; the learner's test step size beside it."""
    study = study_of(report)
    sections = {section.key: section for section in study.sections}
    lines = ["| learner | K at test (models) | step size | " + " | ".join(steps_label(step) for step in steps) + " |",
             "| --- | --- | ---: |" + " ---: |" * len(steps)]  # fmt: skip
    for name, key in rows:
        result = report["mse"][score][name][key]
        cells = learner_cells(name, result, steps, study.medians)
        lr = report["evaluation"]["test_lr"][name][key]  # a step size, or LEARNED
        step_size = lr if isinstance(lr, str) else f"{lr:g}"
        lines.append(
            f"| {style(name)[0]} | {section_title(sections[key], study)} | {step_size} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def table_1(report: Report, sections: Sequence[str], step: int = 1) -> str:
    """Li et al.'s Table 1 row beside every learner of a study under their protocol (`report`): the grid MSE after
    `step` step at each of `sections` (mean of the seeds ± between-seed interval), their number where they give
    one, and whether the two agree within the spread of one run of the protocol (`one_run_difference`)."""
    study = study_of(report)
    by_key = {section.key: section for section in study.sections}
    shots = " | ".join(f"{by_key[key].k} shots" for key in sections)
    lines = [f"| learner | {shots} | Li et al. | ours minus theirs ± one run's 95% spread |",
             "| --- |" + " ---: |" * len(sections) + " ---: | --- |"]  # fmt: skip
    for name in study.learners:
        results = [report["mse"]["grid"][name][key] for key in sections]
        cells = [cell(result, step, median=False) for result in results]
        theirs, verdicts = "—", "—"
        if name in LI_TABLE_1:
            means, intervals = LI_TABLE_1[name]
            theirs = " / ".join(f"{mean:.2f} ± {interval:.2f}" for mean, interval in zip(means, intervals))
            differences = [one_run_difference(result, step, *published)
                           for result, published in zip(results, zip(means, intervals))]  # fmt: skip
            verdicts = " / ".join("—" if not np.isfinite(spread) else
                                  f"{gap:+.2f} ± {spread:.2f} ({'agree' if abs(gap) <= spread else 'differ'})"
                                  for gap, spread in differences)  # fmt: skip
        lines.append(f"| {style(name)[0]} | " + " | ".join(cells) + f" | {theirs} | {verdicts} |")
    return "\n".join(lines) + "\n"


REGRESSOR_BASELINES = {  # the multi-task baselines, as the table of their regressors names them
    "multitask": "no regularization",
    "multitask_l2": "ℓ2 weight decay",
    "multitask_running_mean": "ℓ2 towards the running mean",
    "multitask_l2_wd0.01": "ℓ2 weight decay, stronger",
    "multitask_running_mean_wd0.01": "ℓ2 towards the running mean, stronger",
    "multitask_independent": "no regularization, own starts",
    "multitask_l2_independent": "ℓ2 weight decay, own starts",
    "multitask_running_mean_independent": "ℓ2 towards the running mean, own starts",
}


def regressors_table(report: Report) -> str:
    """How well each multi-task baseline's regressors fit their own tasks: its weight decay, the share of the
    regressors of every seed under the target MSE, and the median and the largest final MSE. The regressors
    do not depend on K, so the record of the study's first training protocol has them."""
    first_k = f"K={study_of(report).training[0].support_points}"
    lines = [
        "| baseline | weight decay | fitted | median MSE | largest MSE |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, label in REGRESSOR_BASELINES.items():
        record = report["learners"][name][first_k]
        errors = np.array(record["regressor_mse"], dtype=float)
        lines.append(
            f"| {label} | {record['regressors']['weight_decay']:g} | {record['share_fitted']:.1%} | "
            f"{np.median(errors):.4f} | {errors.max():.3f} |"
        )
    return "\n".join(lines) + "\n"


def curvature_table(report: Report) -> str:
    """Does alpha * lambda > 2 predict the tasks whose test-time SGD diverges? For each learner and section of
    results.json's curvature record, over all seed-task pairs: how many diverged among those with
    alpha * lambda above 2 and below, with lambda the support loss's top Hessian eigenvalue at the
    initialization, and the largest along the SGD steps taken."""
    lines = [
        "| learner | section | test step size α | λ measured | α·λ > 2: diverged / all | α·λ ≤ 2: diverged / all |",
        "| --- | --- | ---: | --- | ---: | ---: |",
    ]
    for name, sections in report["curvature"].items():
        for section, record in sections.items():
            lr, diverged = record["test_lr"], np.array(record["diverged"]).ravel()
            for where, key in (
                ("at the initialization", "lambda_at_start"),
                ("largest along SGD", "lambda_max_along_sgd"),
            ):
                above = lr * np.array(record[key], dtype=float).ravel() > 2
                lines.append(f"| {style(name)[0]} | {section} | {lr:g} | {where} | {(diverged & above).sum()} / "
                             f"{above.sum()} | {(diverged & ~above).sum()} / {(~above).sum()} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def divergence_predictors(report: Report, name: str) -> str:
    """How well each candidate flags the seed-task pairs (of every section of `name`'s curvature record) whose
    test-time SGD diverged: how many of the pairs it flags diverged, and how many of the others."""
    amplitudes = np.array(report["evaluation"]["amplitudes"])
    diverged, amplitude, start, along, lr = [], [], [], [], None
    for record in report["curvature"][name].values():
        flags = np.array(record["diverged"])
        diverged.append(flags.ravel())
        amplitude.append(np.broadcast_to(amplitudes, flags.shape).ravel())
        start.append(np.array(record["lambda_at_start"], dtype=float).ravel())
        along.append(np.array(record["lambda_max_along_sgd"], dtype=float).ravel())
        lr = record["test_lr"]
    diverged, amplitude, start, along = (np.concatenate(part) for part in (diverged, amplitude, start, along))
    candidates = {
        "α·λ > 2 at the initialization": lr * start > 2,
        "amplitude above 3": amplitude > 3,
        "amplitude above 4": amplitude > 4,
        "α·λ > 15 before some step (λ along SGD)": lr * along > 15,
    }
    lines = ["| flagged by | diverged / pairs flagged | diverged / pairs not flagged |", "| --- | ---: | ---: |"]
    for label, flagged in candidates.items():
        lines.append(f"| {label} | {(diverged & flagged).sum()} / {flagged.sum():,} | "
                     f"{(diverged & ~flagged).sum()} / {(~flagged).sum():,} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def diverged_pairs_table(report: Report) -> str:
    """Every seed-task pair of the curvature record whose test-time SGD diverged: its task's amplitude, and its
    top Hessian eigenvalue at the initialization and along SGD, each with its rank among all the pairs of
    its section (the share of pairs below it)."""
    amplitudes = np.array(report["evaluation"]["amplitudes"])
    lines = ["| learner | section | seed | task | amplitude (rank) | λ at the initialization (rank) | "
             "largest λ along SGD (rank) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for name, sections in report["curvature"].items():
        for section, record in sections.items():
            start, along = (np.array(record[key], dtype=float) for key in ("lambda_at_start", "lambda_max_along_sgd"))
            every_amplitude = np.broadcast_to(amplitudes, start.shape)
            for seed, task in np.argwhere(np.array(record["diverged"])):
                ranks = [f"{values[seed, task]:.{digits}f} ({np.mean(values < values[seed, task]):.0%})"
                         for values, digits in ((every_amplitude, 2), (start, 0), (along, 0))]  # fmt: skip
                lines.append(f"| {style(name)[0]} | {section} | {seed} | {task} | " + " | ".join(ranks) + " |")
    return "\n".join(lines) + "\n"


WARNING_LABELS = {
    "first_step": "α·|g|, the first step's length (step 0)",
    "lambda_start": "α·λ at the initialization (step 0)",
    "lambda_step_1": "α·λ after the first step (step 1)",
    "support_amplitude": "largest |y| of the support points (step 0)",
}


def _share(record: Sequence[float]) -> str:
    share, low, high = record  # null (NaN) where there is nothing to share
    return "—" if share is None else f"{share:.0%} ({low:.0%} to {high:.0%})"


def warnings_table(report: Report) -> str:
    """Each divergence warning of results.json (`maml_sine.divergence`): its threshold, chosen on the validation
    tasks, and on the held-out ones the diverged pairs (and distinct tasks) it caught, the share of the others it
    flags (Wilson 95% intervals), and how many steps before the divergence it came."""
    lines = ["| learner | warning (known at) | threshold | validation: caught / diverged pairs | held out: caught / "
             "diverged pairs (tasks) | held out: share caught | held out: false alarms | steps ahead (median; "
             "range) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for name, records in report["divergence_warnings"].items():
        for warning, label in WARNING_LABELS.items():
            validation, held_out = records[warning]["validation"], records[warning]["held_out"]
            threshold = validation["threshold"]
            ahead = held_out["steps_ahead"]
            lead = f"{np.median(ahead):g}; {min(ahead)} to {max(ahead)}" if ahead else "—"
            lines.append(
                f"| {style(name)[0]} | {label} | {'—' if threshold is None else f'{threshold:.3g}'} | "
                f"{validation['caught_pairs']} / {validation['diverged_pairs']} | {held_out['caught_pairs']} / "
                f"{held_out['diverged_pairs']} ({held_out['caught_tasks']} / {held_out['diverged_tasks']}) | "
                f"{_share(held_out['caught_share'])} | {_share(held_out['false_alarm_share'])} | {lead} |"
            )
    return "\n".join(lines) + "\n"


def edge_of_stability_table(report: Report) -> str:
    """The median over held-out tasks of alpha * lambda at each curvature learner's initialization, at the points
    of its training looked at: the mean over seeds, and the smallest and largest seed."""
    records = report["edge_of_stability"]
    updates = sorted({int(u) for learner in records.values() for by_k in learner.values() for u in by_k})
    lines = ["| learner | K | " + " | ".join(f"after {u:,} updates" for u in updates) + " |",
             "| --- | ---: |" + " ---: |" * len(updates)]  # fmt: skip
    for name, by_k in records.items():
        for k, by_updates in by_k.items():
            cells = []
            for u in updates:
                seeds = by_updates.get(str(u))
                cells.append("—" if seeds is None else f"{np.mean(seeds):.2f} ({min(seeds):.2f} to {max(seeds):.2f})")
            lines.append(f"| {style(name)[0]} | {k.removeprefix('K=')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


AMPLITUDE_BINS = (0.1, 1.0, 2.0, 3.0, 4.0, 5.0)


def curvature_by_amplitude(report: Report, section: str) -> str:
    """The median (and 99th percentile) of lambda at the initialization over the seed-task pairs of each amplitude
    bin, for each learner of the curvature record in `section`."""
    amplitudes = np.array(report["evaluation"]["amplitudes"])
    bins = list(pairwise(AMPLITUDE_BINS))
    lines = ["| learner | " + " | ".join(f"a in [{low:g}, {high:g})" for low, high in bins) + " |",
             "| --- |" + " ---: |" * len(bins)]  # fmt: skip
    for name, sections in report["curvature"].items():
        lambdas = np.array(sections[section]["lambda_at_start"], dtype=float)  # (seeds, tasks)
        cells = []
        for low, high in bins:
            values = lambdas[:, (amplitudes >= low) & (amplitudes < high)].ravel()
            cells.append(f"{np.median(values):.0f} ({np.percentile(values, 99):.0f})")
        lines.append(f"| {style(name)[0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- The registry of blocks, and the pages they fill ------------------------------------------------------------------


class Block(NamedTuple):
    """What fills a generated block: the results file it is drawn from (a path under docs/), and the function
    that writes its markdown from that file."""

    source: str
    write: Callable[[Report], str]


EVALUATION, MARGIN, PAPER = "evaluation/results.json", "grader_margin/results.json", "paper_protocol/results.json"
META_SGD = "meta_sgd/results.json"
FAMILY_FINN, FAMILY_LI = "family/results.json", "family_meta_sgd/results.json"
LI_SECTIONS = ("5", "10, trained at K=5", "20, trained at K=5")
DRAWN = ("maml", "maml_alpha0.001", "pretrained_tuned")  # the learners the paper study draws, less the oracle
ONE_MODEL_SECTIONS = (K10_MODEL_AT_K5, "10", "20, trained at K=10")  # the K = 10 models at 5, 10 and 20 points
ONE_MODEL_ROWS = tuple((name, key) for name in DRAWN for key in ONE_MODEL_SECTIONS)
HALF_RANGE = ("5 in the left half, trained at K=10", "10 in the left half")
HALF_RANGE_ROWS = tuple((name, key) for name in DRAWN for key in HALF_RANGE)
WHICH_ALPHA_ROWS = tuple((name, K10_MODEL_AT_K5) for name in (
    "maml", "maml_tested_at_0.005", "maml_tested_at_0.001", "maml_alpha0.001", "maml_alpha0.001_code_init", "oracle",
    "oracle_alpha0.01", "oracle_alpha0.001"))  # fmt: skip

BLOCKS = {
    "held_out": Block(EVALUATION, held_out_table),
    "held_out_summary": Block(
        EVALUATION, partial(held_out_table, steps=(1, MAX_STEPS), learners=("maml", "first_order_maml", "pretrained"))
    ),
    "grader_margin": Block(MARGIN, margin_table),
    "grader_margin_spread": Block(MARGIN, margin_spread_table),
    "grader_runs": Block("grader_runs.json", grader_runs_table),
    "table_2": Block(PAPER, partial(table_2, section=K10_MODEL_AT_K5)),
    "steps_by_k": Block(PAPER, partial(rows_table, rows=(*ONE_MODEL_ROWS, ("oracle", "10")), score="query")),
    "regressors": Block(PAPER, regressors_table),
    "half_range_query": Block(
        PAPER, partial(rows_table, rows=(*HALF_RANGE_ROWS, ("oracle", HALF_RANGE[0])), score="query")
    ),
    "half_range_grid": Block(PAPER, partial(rows_table, rows=HALF_RANGE_ROWS, score="grid")),
    "curvature": Block(PAPER, curvature_table),
    "curvature_by_amplitude": Block(PAPER, partial(curvature_by_amplitude, section=K10_MODEL_AT_K5)),
    "divergence_predictors": Block(PAPER, partial(divergence_predictors, name="maml")),
    "divergence_warnings": Block(PAPER, warnings_table),
    "edge_of_stability": Block(PAPER, edge_of_stability_table),
    "which_alpha": Block(PAPER, partial(rows_table, rows=WHICH_ALPHA_ROWS, score="query")),
    "diverged_pairs": Block(PAPER, diverged_pairs_table),
    "meta_sgd": Block(
        META_SGD,
        partial(rows_table, rows=[(n, s) for s in ONE_MODEL_SECTIONS for n in ("maml", "meta_sgd")], score="query"),
    ),
    "family_k5": Block(FAMILY_FINN, partial(rows_table, rows=[(n, "5") for n in (*FAMILY, *RECIPES)], score="query")),
    "family_k10": Block(FAMILY_FINN, partial(rows_table, rows=[(n, "10") for n in (*FAMILY, *RECIPES)], score="query")),
    "family_table_1": Block(FAMILY_LI, partial(table_1, sections=LI_SECTIONS)),
}
PAGES = (
    "README.md",
    "docs/api.md",
    "docs/evaluation.md",
    "docs/family.md",
    "docs/meta_sgd.md",
    "docs/paper_protocol.md",
    "docs/seeds.md",
)

START = re.compile(r"<!-- generated: (\S+) -->")
END = "<!-- end generated -->"


class PageError(ValueError):
    """A page whose markers do not pair up, that names a block BLOCKS does not have, or that (or whose results file)
    cannot be read."""


class Stale(NamedTuple):
    """A generated block whose text is not what its results give: its name, and the line of its start marker."""

    line: int
    name: str


def regenerated(text: str, page: str, read: Callable[[str], Report]) -> tuple[str, list[Stale]]:
    """`text` (of `page`, named in errors) with the body of every generated block written again from
    `read(source)`, and the blocks whose body changed. A body is a blank line, the table, a blank line:
    a table that ran on into the end marker would take it for one of its rows."""
    lines = iter(enumerate(text.splitlines(keepends=True), start=1))
    written, stale = [], []
    for number, line in lines:
        written.append(line)
        if line.rstrip("\n") == END:
            raise PageError(f"{page}:{number}: {END} without a start marker before it")
        start = START.fullmatch(line.rstrip("\n"))
        if start is None:
            continue
        name = start[1]
        if name not in BLOCKS:
            raise PageError(f"{page}:{number}: no block is named {name!r} (maml_sine.pages.BLOCKS)")
        body = []
        for inner, inner_line in lines:  # the outer loop goes on after the end marker
            if inner_line.rstrip("\n") == END:
                break
            if START.fullmatch(inner_line.rstrip("\n")):
                raise PageError(f"{page}:{inner}: a block starts inside block {name!r}")
            body.append(inner_line)
        else:
            raise PageError(f"{page}:{number}: block {name!r} has no {END}")
        block = BLOCKS[name]
        new = "\n" + block.write(read(block.source)) + "\n"
        if "".join(body) != new:
            stale.append(Stale(number, name))
        written += [new, inner_line]
    return "".join(written), stale


class Page(NamedTuple):
    """A page of PAGES: where it is, its text on disk, its text with every block written again, the stale blocks."""

    path: Path
    text: str
    regenerated: str
    stale: list[Stale]


def _read(path: Path, parse: Callable[[str], Any] = str) -> Any:
    """`parse` of the text of a page or results file, or a PageError naming the file."""
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PageError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from error


def regenerated_pages(root: Path) -> list[Page]:
    """Every page of PAGES under `root`, written again in memory from the results under root/docs (each results
    file read once)."""
    read = cache(lambda source: _read(root / "docs" / source, json.loads))
    pages = []
    for name in PAGES:
        text = _read(root / name)
        pages.append(Page(root / name, text, *regenerated(text, name, read)))
    return pages
