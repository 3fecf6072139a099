"""The tables and numbers the README and the docs state are those of the committed results they come from.

Every generated table of the pages (`maml_sine.pages`) is written again from the committed results and
compared with the page, and a changed number is reported stale. The single numbers of the prose are
rebuilt here, with this file's own formatting, from docs/grader_runs.json (the seeded grader runs) and
docs/learning_curves.json, and looked for in the page.
"""

import json
import shutil
from itertools import pairwise

import numpy as np
import pytest

from helpers import ROOT, import_script
from maml_sine.pages import (
    BLOCKS,
    PAGES,
    START,
    PageError,
    margin_spread_table,
    margin_table,
    regenerated,
    regenerated_pages,
    run_label,
)

README = (ROOT / "README.md").read_text()


def committed(path):
    return json.loads((ROOT / "docs" / path).read_text())


# --- The generated tables ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pages():
    """Every page, written again in memory from the committed results: {its path under the root: the Page}."""
    return {str(page.path.relative_to(ROOT)): page for page in regenerated_pages(ROOT)}


@pytest.mark.parametrize("name", PAGES)
def test_every_generated_table_of_the_page_is_what_its_committed_results_write(pages, name):
    page = pages[name]
    assert page.stale == [], f"stale in {name}: python scripts/write_pages.py writes them"
    assert page.regenerated == page.text


def test_every_block_fills_a_page():
    names = {match[1] for page in PAGES for match in START.finditer((ROOT / page).read_text())}
    assert names == set(BLOCKS)


def a_copy_of_the_pages(root):
    """The pages and the results files they are written from, copied under `root`."""
    for name in [*PAGES, *(f"docs/{block.source}" for block in BLOCKS.values())]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, root / name)


def test_a_changed_number_is_reported_stale_and_written_back(tmp_path, capsys):
    write_pages = import_script(ROOT / "scripts" / "write_pages.py")
    a_copy_of_the_pages(tmp_path)
    page = tmp_path / "docs" / "paper_protocol.md"
    committed_text = page.read_text()
    changed = committed_text.replace("| 0.64 ± 0.24 |", "| 0.65 ± 0.24 |")
    assert changed.count("0.65 ± 0.24") == committed_text.count("0.65 ± 0.24") + 1, "the table has the number once"
    page.write_text(changed)
    marker = changed.splitlines().index("<!-- generated: table_2 -->") + 1

    assert write_pages.main(["--check", "--root", str(tmp_path)]) == 1
    assert capsys.readouterr().out == f"docs/paper_protocol.md:{marker}: table_2 is stale\n"
    assert page.read_text() == changed, "--check writes nothing"

    assert write_pages.main(["--root", str(tmp_path)]) == 0
    assert page.read_text() == committed_text
    assert write_pages.main(["--check", "--root", str(tmp_path)]) == 0


@pytest.mark.parametrize("damage", ["no page", "no results", "damaged results"])
def test_a_page_or_results_file_that_cannot_be_read_is_one_line_naming_it(tmp_path, capsys, damage):
    write_pages = import_script(ROOT / "scripts" / "write_pages.py")
    a_copy_of_the_pages(tmp_path)
    results = tmp_path / "docs" / "paper_protocol" / "results.json"
    named = tmp_path / "README.md" if damage == "no page" else results
    if damage == "damaged results":
        results.write_text(results.read_text()[:100])
    else:
        named.unlink()
    with pytest.raises(SystemExit) as exited:
        write_pages.command(["--check", "--root", str(tmp_path)])
    assert str(exited.value.code).startswith(f"error: cannot read {named}: ")
    assert "\n" not in str(exited.value.code) and not capsys.readouterr().err


@pytest.mark.parametrize(
    "text, message",
    [
        ("<!-- generated: no_such_table -->\n\n<!-- end generated -->\n", "page:1: no block is named 'no_such_table'"),
        ("a\n<!-- generated: table_2 -->\n| 1 |\n", "page:2: block 'table_2' has no <!-- end generated -->"),
        ("a\n\n<!-- end generated -->\n", "page:3: <!-- end generated --> without a start marker before it"),
        (
            "<!-- generated: table_2 -->\n<!-- generated: curvature -->\n<!-- end generated -->\n",
            "page:2: a block starts inside block 'table_2'",
        ),
    ],
)
def test_markers_that_do_not_pair_up_are_refused_naming_the_line(text, message):
    with pytest.raises(PageError) as refused:
        regenerated(text, "page", committed)
    assert str(refused.value).startswith(message)


def test_the_graders_margin_results_md_is_what_the_script_writes_from_its_results_json():
    grader_margin = import_script(ROOT / "scripts" / "grader_margin.py")
    written = grader_margin.markdown(committed("grader_margin/results.json"))
    assert written == (ROOT / "docs" / "grader_margin" / "results.md").read_text()


def test_a_diverged_seed_reads_diverged_in_the_margin_tables():
    clipped = committed("grader_margin_clip100/results.json")  # one first-order K = 5, S = 5 seed diverged there
    row = "| K = 5, S = 5 (threshold 0.8) | first-order | 0.408 | 0.478 | diverged | 1 | 90% |"
    assert row in margin_table(clipped)
    assert "| K = 5, S = 5 (0.8) | first-order | 0.478 (0.408 to diverged) | 90% |" in margin_spread_table(clipped)


# --- Single numbers in the prose -----------------------------------------------------------------------------------


def test_the_seeded_grader_runs_in_the_readme_are_the_recorded_ones():
    runs = committed("grader_runs.json")
    pinned = next(row for row in runs["runs"] if row["utils"] == "the project's" and "3.11" in row["environment"])
    for name, figure in pinned["final_mse"].items():
        assert f"{run_label(name)} ends at {figure:.3f}" in README, name


def test_the_readme_states_the_final_mse_of_the_committed_learning_curves():
    curves = committed("learning_curves.json")
    for name, label in (("maml", "MAML"), ("scratch", "from scratch")):
        finals = np.array(curves["final_mse"][name])
        spread = f"{np.median(finals):.3f} ({finals.min():.3f} to {finals.max():.3f})"
        assert f"{label}: median {spread}" in README, name


def test_the_meta_sgd_pages_verdicts_hold_in_its_committed_results():
    """docs/meta_sgd.md and the README: after one step Meta-SGD beats MAML beyond the between-seed intervals in every
    section; from the fifth step on its SGD diverges on a large share of tasks (over 5% in every section), MAML's on
    under 1%."""
    results = committed("meta_sgd/results.json")["mse"]["query"]
    for section, maml in results["maml"].items():
        meta_sgd = results["meta_sgd"][section]
        assert meta_sgd["mean"][1] + meta_sgd["seed_ci95"][1] < maml["mean"][1] - maml["seed_ci95"][1], section
        assert all(share > 0.05 for share in meta_sgd["diverged"][5:]), section
        assert all(share < 0.01 for share in maml["diverged"]), section


def below(first, second, step):
    """Whether summary `first` is below `second` after `step` steps beyond both between-seed intervals (neither
    diverged on any task)."""
    if first["diverged"][step] or second["diverged"][step]:
        return False
    return first["mean"][step] + first["seed_ci95"][step] < second["mean"][step] - second["seed_ci95"][step]


def test_the_family_pages_verdicts_hold_in_its_committed_results():
    """docs/family.md and the README, Finn et al.'s protocol: after one step CAVIA and Meta-SGD beat MAML at K = 5 and
    10 and CAVIA beats Meta-SGD at K = 5; after ten steps CAVIA beats every learner that did not diverge; after five
    MAML++ beats every other; ANIL and Reptile are worse than MAML after one step; CAVIA on its own budget is within
    the intervals of CAVIA on the shared one."""
    results = committed("family/results.json")["mse"]["query"]
    for k in ("5", "10"):
        learner = {name: sections[k] for name, sections in results.items()}
        assert below(learner["cavia"], learner["maml"], 1) and below(learner["meta_sgd"], learner["maml"], 1), k
        assert below(learner["maml"], learner["anil"], 1) and below(learner["maml"], learner["reptile"], 1), k
        others = [
            name for name in learner if name not in ("cavia", "cavia_recipe") and not learner[name]["diverged"][10]
        ]
        assert all(below(learner["cavia"], learner[name], 10) for name in others), k
        assert learner["meta_sgd"]["diverged"][10] > 0.3 and learner["maml_plus_plus"]["diverged"][10] > 0, k
        for name in (name for name in learner if name != "maml_plus_plus"):  # a diverged one: by its median
            plus, other = learner["maml_plus_plus"], learner[name]
            assert below(plus, other, 5) or (other["diverged"][5] and plus["mean"][5] < other["median"][5]), (k, name)
        for step in (1, 5, 10):
            own, shared = learner["cavia_recipe"], learner["cavia"]
            assert abs(own["mean"][step] - shared["mean"][step]) <= own["seed_ci95"][step] + shared["seed_ci95"][step]
    assert below(results["cavia"]["5"], results["meta_sgd"]["5"], 1)


def test_the_family_pages_table_1_verdicts_hold():
    """docs/family.md, Meta-SGD's protocol: ours below Li et al.'s by 0.13 to 0.17 for both; the gap between Meta-SGD
    and MAML within 0.04 of theirs at every shot, and Meta-SGD below MAML beyond the intervals."""
    from maml_sine.pages import LI_SECTIONS, LI_TABLE_1

    results = committed("family_meta_sgd/results.json")["mse"]["grid"]
    ours = {name: [results[name][key]["mean"][1] for key in LI_SECTIONS] for name in LI_TABLE_1}
    for name, (theirs, _) in LI_TABLE_1.items():
        assert all(0.125 <= published - mine <= 0.175 for mine, published in zip(ours[name], theirs)), name
    their_gap = np.subtract(LI_TABLE_1["maml"][0], LI_TABLE_1["meta_sgd"][0])
    assert np.all(np.abs(np.subtract(ours["maml"], ours["meta_sgd"]) - their_gap) <= 0.04)
    assert all(below(results["meta_sgd"][key], results["maml"][key], 1) for key in LI_SECTIONS)


PAPER_PAGE, PAPER_FOLDER = ROOT / "docs" / "paper_protocol.md", ROOT / "docs" / "paper_protocol"


def test_every_figure_of_the_paper_study_is_in_its_folder_and_every_png_there_is_linked_from_the_page():
    from maml_sine.learners import paper_study

    study, page = paper_study(), PAPER_PAGE.read_text()
    expected = set()
    for plot in study.figures:
        scored = study.scores if plot.kind == "mse" else study.scores[:1]
        expected |= {plot.name if score == study.scores[0] else f"{plot.name}_{score}" for score in scored}
    on_disk = {path.stem for path in PAPER_FOLDER.glob("*.png")}
    assert on_disk == expected
    unlinked = [name for name in sorted(on_disk) if f"paper_protocol/{name}.png" not in page]
    assert not unlinked, f"figures the page does not link: {unlinked}"


def test_the_paper_pages_figures_draw_from_the_committed_results_json(tmp_path):
    """The figures drawn from results.json alone (every kind but the fits, which need the models' predictions)."""
    from maml_sine.learners import paper_study
    from maml_sine.reports import plot_curvature, plot_curvature_along_sgd, plot_mse_against_steps, plot_seeds

    study, report = paper_study(), json.loads((PAPER_FOLDER / "results.json").read_text())
    tasks, lrs = report["evaluation"]["tasks"], report["evaluation"]["test_lr"]
    for plot in study.figures:
        out = tmp_path / f"{plot.name}.png"
        if plot.kind == "mse":
            plot_mse_against_steps(report["mse"]["query"], plot, study, tasks, out, "query", lrs)
        elif plot.kind == "seeds":
            plot_seeds(report, plot, out)
        elif plot.kind == "curvature":
            plot_curvature(report, plot.sections[0], out)
        elif plot.kind == "curvature_along":
            plot_curvature_along_sgd(report, out)
        else:
            continue
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_paper_pages_verdicts_on_alpha_warnings_and_the_edge_of_stability_hold_in_its_committed_results():
    """Each verdict of docs/paper_protocol.md's new sections, recomputed from the committed results.json."""
    from maml_sine.evaluation import one_run_difference
    from maml_sine.learners import K10_MODEL_AT_K5

    report, page = json.loads((PAPER_FOLDER / "results.json").read_text()), PAPER_PAGE.read_text()
    query = {name: by_section[K10_MODEL_AT_K5] for name, by_section in report["mse"]["query"].items()}
    # The oracle: fine-tuned at 0.01 most tasks diverge, at 0.001 its median stays where it started.
    at_001, at_0001 = query["oracle_alpha0.01"], query["oracle_alpha0.001"]
    assert at_001["diverged"][5] > 0.5 and f"{100 * at_001['diverged'][5]:.1f}% of the seed-task pairs" in page
    assert abs(at_0001["median"][10] - at_0001["median"][0]) < 0.001
    # The alpha = 0.01 models at 0.005: the paper's number after one step lies outside one run's spread.
    gap, spread = one_run_difference(query["maml_tested_at_0.005"], 1, 0.67, query["maml_tested_at_0.005"]["ci95"][1])
    assert gap > spread and f"{query['maml_tested_at_0.005']['mean'][1]:.2f} ± {spread:.2f}" in page
    # Every MAML cell of the code's initialization within one run's spread of the paper's.
    code = query["maml_alpha0.001_code_init"]
    assert all(abs(one_run_difference(code, step, paper, code["ci95"][step])[0])
               <= one_run_difference(code, step, paper, code["ci95"][step])[1]
               for step, paper in zip((1, 5, 10), (0.67, 0.38, 0.35)))  # fmt: skip
    # The warnings: alpha * lambda after the first step catches every held-out divergence, with the fewest alarms.
    warnings = report["divergence_warnings"]["maml"]
    best = warnings["lambda_step_1"]["held_out"]
    assert best["caught_pairs"] == best["diverged_pairs"] == 26 and best["diverged_tasks"] == 18
    assert all(
        best["false_alarm_share"][0] <= record["held_out"]["false_alarm_share"][0] for record in warnings.values()
    )
    assert (
        f"caught all {best['diverged_pairs']} held-out" in page
        and f"median {np.median(best['steps_ahead']):g} steps" in page
    )
    # The edge of stability: the median alpha * lambda rises with training, from well below 2 to about 2.
    for by_k in report["edge_of_stability"].values():
        for by_updates in by_k.values():
            means = [np.mean(by_updates[u]) for u in sorted(by_updates, key=int)]
            assert all(a < b for a, b in pairwise(means)) and means[0] < 0.5 and 1.5 < means[-1] < 3
    # Own starts do not bring the l2 row near the paper's 7.18.
    own = query["multitask_l2_independent"]
    gap, spread = one_run_difference(own, 1, 7.18, own["ci95"][1])
    assert gap < -spread
