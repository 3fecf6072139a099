"""The numbers the README and the docs state are those of the committed results they come from.

Each figure is rebuilt here, with this file's own formatting, from the results.json a script wrote
(docs/grader_margin/, docs/evaluation/, docs/paper_protocol/) or from docs/grader_runs.json, the
record of the seeded grader runs measured in both environments, and looked for in the page.
"""

import json

import numpy as np
import pytest

from helpers import ROOT

README = (ROOT / "README.md").read_text()
RUN_NAMES = {"K10-S1": "K = 10, S = 1", "K5-S5": "K = 5, S = 5"}


def committed(path):
    return json.loads((ROOT / "docs" / path).read_text())


def margin_row(name, order, summary, threshold):
    """A row of the README's table of the graders' runs over seeds."""
    spread = f"{summary['median']:.3f} ({summary['min']:.3f} to {_maximum(summary)})"
    return f"| {RUN_NAMES[name]} ({threshold}) | {order} | {spread} | {summary['share_under_threshold']:.0%} |"


def _maximum(summary):
    return "diverged" if summary["max"] is None else f"{summary['max']:.3f}"


def test_the_readme_states_the_graders_margin_of_the_committed_study():
    margin = committed("grader_margin/results.json")
    for name, run in margin["runs"].items():
        for order, result in margin["results"][name].items():
            row = margin_row(name, order, result["summary"], run["threshold"])
            assert row in README, row


@pytest.mark.parametrize("page", ["seeds.md", "grader_margin/results.md"])
def test_the_docs_state_the_graders_margin_of_the_committed_study(page):
    margin, text = committed("grader_margin/results.json"), (ROOT / "docs" / page).read_text()
    for name in margin["runs"]:
        for result in margin["results"][name].values():
            summary = result["summary"]
            cells = [f"{summary[key]:.3f}" for key in ("min", "median")] + [f"{summary['diverged']}"]
            assert all(cell in text for cell in cells), (page, name, cells)


def test_the_seeded_grader_runs_in_the_readme_and_api_page_are_the_recorded_ones():
    runs, api = committed("grader_runs.json"), (ROOT / "docs" / "api.md").read_text()
    for row in runs["runs"]:
        figures = " | ".join(f"{row['final_mse'][name]:.3f}" for name in RUN_NAMES)
        assert f"| {row['environment']} | {row['utils']} | {figures} |" in api, row
    pinned = next(row for row in runs["runs"] if row["utils"] == "the project's" and "3.11" in row["environment"])
    for name, label in RUN_NAMES.items():
        assert f"{label} ends at {pinned['final_mse'][name]:.3f}" in README, name


def test_the_readme_states_the_held_out_evaluation_of_the_committed_study():
    results = committed("evaluation/results.json")["mse"]["grid"]
    for name in ("maml", "first_order_maml", "pretrained"):
        for k in ("5", "10"):
            for step in (1, 10):
                summary = results[name][k]
                figure = f"{summary['mean'][step]:.3f} ± {summary['seed_ci95'][step]:.3f}"
                assert figure in README, (name, k, step)


def test_the_readme_states_the_final_mse_of_the_committed_learning_curves():
    curves = committed("learning_curves.json")
    for name, label in (("maml", "MAML"), ("scratch", "from scratch")):
        finals = np.array(curves["final_mse"][name])
        spread = f"{np.median(finals):.3f} ({finals.min():.3f} to {finals.max():.3f})"
        assert f"{label}: median {spread}" in README, name
