"""Write the tables of the docs pages and the README from the committed results (`maml_sine.pages`).

    python scripts/write_pages.py           # rewrite every stale generated table in place
    python scripts/write_pages.py --check   # list the stale tables and exit 1, writing nothing

Run it after a script has written new results: scripts/evaluate.py (docs/evaluation/results.json,
docs/paper_protocol/results.json), scripts/grader_margin.py (docs/grader_margin/results.json), or a new
record of the graders' runs (docs/grader_runs.json). A table the pages mark as generated is written whole
from its results file; the prose around it is written by hand, and tests/test_docs.py checks its numbers.

The results pages the scripts write themselves (docs/*/results.md) and the figures are not written here.
Each figure is drawn by the script that measures it, from what it holds in memory, which is more than
results.json keeps for some:

  docs/evaluation/*.png and docs/paper_protocol/*.png: scripts/evaluate.py. The MSE curves (mse_vs_steps*,
      table2*, half_range*) from the summaries results.json holds as "mse"; curvature.png from results.json
      as written; fits.png from each learner's predictions on one task, which results.json does not keep.
  docs/grader_margin*/margin.png: scripts/grader_margin.py, from the final MSEs, curves and meta-gradient
      norms results.json holds.
  docs/learning_curves.png: `python test.py --seeds 10 --plot-tfs --out docs/learning_curves.png`, from
      every seed's learning curve; learning_curves.json beside it keeps the final MSEs only.
  maml.png: scripts/draw_maml_diagram.py, a diagram of no results.
"""

from maml_sine.interrupts import exit_on_ctrl_c

if __name__ == "__main__":  # before the imports below, which load torch for a second or more
    exit_on_ctrl_c()

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from maml_sine.cli import run_command
from maml_sine.files import write_text_atomically
from maml_sine.pages import PageError, regenerated_pages

ROOT = Path(__file__).resolve().parent.parent


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the stale pages (or, with --check, only list their stale tables); returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="list the stale tables and exit 1; write nothing")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository whose pages to write (default: this)")
    args = parser.parse_args(argv)
    pages = regenerated_pages(args.root)
    stale = [page for page in pages if page.stale]
    for page in stale:
        for line, name in page.stale:
            print(f"{page.path.relative_to(args.root)}:{line}: {name} is stale")
    if args.check:
        return 1 if stale else 0
    for page in stale:
        write_text_atomically(page.path, page.regenerated)
    print(f"rewrote {len(stale)} page{'s' * (len(stale) != 1)}" if stale else "every generated table is up to date")
    return 0


def command(argv: Sequence[str]) -> NoReturn:
    """`main(argv)` as the command line runs it: its exit status, or one line and status 1 for a page that cannot
    be read (`run_command` says the same of a page that cannot be written)."""
    try:
        status = main(argv)
    except PageError as error:
        sys.exit(f"error: {error}")
    sys.exit(status)


if __name__ == "__main__":
    run_command(command, sys.argv[1:])
