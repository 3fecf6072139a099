"""How strong the multi-task baselines' regularizers are: "as high as possible without significantly deterring
performance" (Finn et al. 2017, Appendix C.1), measured.

    python scripts/weight_decay_sweep.py            # writes docs/paper_protocol/weight_decay_sweep.json
    python scripts/weight_decay_sweep.py --start independent   # each regressor from a start of its own:
                                                    # docs/paper_protocol/weight_decay_sweep_independent.json
    python scripts/weight_decay_sweep.py --regressors 20 --out /tmp/sweep.json   # a short check

How it is read here: "performance" is what a regressor is trained for, fitting its own task (MSE under
0.02 on 100 evenly spaced x). For each regularizer and each weight decay of WEIGHT_DECAYS, trial
regressors (tasks of their own, never those of the study) are trained as `maml_sine.multitask` trains
them, two groups in sequence (the second pulled towards the first's mean, for "running_mean"). The
weight decay chosen is the largest at which the regressors that are pulled fit their tasks at least
KEPT times as often as unregularized ones on the same tasks. learners.py takes the chosen values
(a test holds them to this file).
"""

from maml_sine.interrupts import exit_on_ctrl_c

if __name__ == "__main__":  # before the imports below, which load torch for a second or more
    exit_on_ctrl_c()

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from maml_sine.cli import run_command, whole_number
from maml_sine.files import write_json_atomically
from maml_sine.learners import LEARNERS, STARTS
from maml_sine.multitask import averaged_regressors
from maml_sine.training import lane_seeds

ROOT = Path(__file__).resolve().parent.parent
WEIGHT_DECAYS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
KEPT = 0.95
TRIAL_SEED = 1_000  # seed 1000: tasks and an initialization no run of the study uses
REGULARIZED = ("l2", "running_mean")


def share_fitted(spec, regressors: int) -> tuple[float, list[float]]:
    """Train 2 groups of `regressors` trial regressors under `spec`; the share of the second group (the one a
    running mean pulls) under the target MSE, and every regressor's final MSE."""
    spec = replace(spec, regressors=2 * regressors, at_once=regressors)
    _, errors = averaged_regressors(spec, lane_seeds(1, first=TRIAL_SEED), f"{spec.regularizer} {spec.weight_decay:g}")
    return float((errors[0, regressors:] < spec.target_mse).float().mean()), errors[0].tolist()


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regressors", type=whole_number(1), default=50, help="trial regressors per group (50)")
    parser.add_argument("--start", choices=STARTS, default="shared",
                        help="where regressors start: the seed's initialization, or each its own")  # fmt: skip
    parser.add_argument("--out", type=Path, help="default: docs/paper_protocol/weight_decay_sweep[_independent].json")
    args = parser.parse_args(argv)
    suffix = "" if args.start == "shared" else f"_{args.start}"
    out = args.out or ROOT / "docs" / "paper_protocol" / f"weight_decay_sweep{suffix}.json"
    unregularized = replace(LEARNERS["multitask"].algorithm, start=args.start)
    reference, reference_errors = share_fitted(unregularized, args.regressors)
    report = {"rule": f"the largest weight decay with a share fitted >= {KEPT} x the unregularized share",
              "trial_seed": TRIAL_SEED, "regressors_per_group": args.regressors, "spec": unregularized.record(),
              "unregularized": {"share_fitted": reference, "mse": reference_errors}, "regularizers": {}}  # fmt: skip
    for regularizer in REGULARIZED:
        sweep = {}
        for weight_decay in WEIGHT_DECAYS:
            spec = replace(unregularized, regularizer=regularizer, weight_decay=weight_decay)
            share, errors = share_fitted(spec, args.regressors)
            sweep[f"{weight_decay:g}"] = {"share_fitted": share, "mse": errors}
            print(f"{regularizer} {weight_decay:g}: {share:.2f} fitted (unregularized {reference:.2f})")
        kept = [float(wd) for wd, result in sweep.items() if result["share_fitted"] >= KEPT * reference]
        report["regularizers"][regularizer] = {"sweep": sweep, "chosen": max(kept) if kept else None}
    write_json_atomically(out, report)
    print({regularizer: result["chosen"] for regularizer, result in report["regularizers"].items()})
    return report


if __name__ == "__main__":
    run_command(main, sys.argv[1:])
