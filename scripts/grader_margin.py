"""The graders' figure over many seeds: is passing a property of MAML or of one lucky trajectory?

    python scripts/grader_margin.py                          # 20 seeds, both grader runs, both orders (about 6 min)
    python scripts/grader_margin.py --seeds 4 --episodes 1000 --out-dir /tmp/margin
    python scripts/grader_margin.py --clip 100 --out-dir docs/grader_margin_clip100   # with clipped meta-gradients

A grader seeds numpy with 1337 and torch with 42, meta-trains MAML on 40,000 tasks and
checks the final MSE (the mean of the last 500 query losses): below 0.7 with K = 10,
S = 1, below 0.8 with K = 5, S = 5. This script makes the same two runs with N seeds at
once (learner i: numpy seed 1337 + i for its tasks, torch seed 42 + i for its
initialization; learner 0 has the graders' seeds), for second- and first-order MAML,
and writes to --out-dir: results.json (every seed's final MSE, and what each learner
looked like at the end), results.md (min, median, max and the share under the
threshold) and margin.png (the final MSEs, and the learning curves and meta-gradient
norms of the K = 5, S = 5 seeds).

It also measures what the seeds that end high have in common: the number of ReLU units
of each hidden layer that are dead at the end (zero for every x in [-5, 5]) and the
largest meta-gradient norm each learner met. A seed whose loss or meta-gradient stops
being finite, where `MAML.train` would raise FloatingPointError and a grader's run would
end without a figure, stops there and the other seeds go on. Whether it overflows can
depend on rounding, so its run is replayed by `MAML.train` itself, which settles it: only
if that raises too is the seed recorded as diverged (final MSE infinite, so it fails).
`--clip NORM` scales every meta-gradient whose L2 norm exceeds NORM down to it before Adam,
on the same seeds: an experiment.
"""

from maml_sine.interrupts import exit_on_ctrl_c

if __name__ == "__main__":  # before the imports below, which load torch for a second or more
    exit_on_ctrl_c()

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, NullFormatter
from tqdm import tqdm

from assignment import MAML
from maml_sine.batched import initializations_from_seeds
from maml_sine.cli import make_output_folders, run_command, whole_number
from maml_sine.core import Algorithm
from maml_sine.files import WriteError, as_written, save_figure, write_json_atomically, write_text_atomically
from maml_sine.learners import assignment_protocol
from maml_sine.pages import margin_table
from maml_sine.training import LockstepRun, lane_seeds
from utils import EPISODES, FINAL_WINDOW, QUERY_POINTS, SineGenerator

ROOT = Path(__file__).resolve().parent.parent
RUNS = {"K10-S1": {"k": 10, "num_steps": 1, "threshold": 0.7}, "K5-S5": {"k": 5, "num_steps": 5, "threshold": 0.8}}
ORDERS = {"second-order": False, "first-order": True}
CURVE_EVERY = 200  # episodes per point of the learning curves in margin.png
HIGHLIGHTED = 3  # seeds drawn in colour in margin.png: those with the highest final MSE
DEAD_UNIT_GRID = torch.linspace(-5, 5, 1001).reshape(-1, 1)


def dead_units(weights: Sequence[torch.Tensor]) -> list[int]:
    """How many ReLU units of each hidden layer output 0 for every x of the grid: they can no longer learn."""
    w1, b1, w2, b2, _, _ = weights
    hidden1 = F.relu(F.linear(DEAD_UNIT_GRID, w1, b1))
    hidden2 = F.relu(F.linear(hidden1, w2, b2))
    return [int((hidden.max(dim=0).values == 0).sum()) for hidden in (hidden1, hidden2)]


def train_run(run: dict, first_order: bool, seeds: list[tuple[int, int]], episodes: int, clip: float | None) -> dict:
    """Meta-train one learner per seed on its own stream; return what results.json keeps of them.

    A seed whose loss or meta-gradient stops being finite in the lockstep run, where rounding may
    decide it, is settled by `MAML.train` itself: its whole run is replayed there, and it counts as
    diverged only if `MAML.train` raises too (without clipping, which `MAML.train` does not do).
    """
    algorithm = Algorithm(run["num_steps"], first_order=first_order, max_meta_gradient_norm=clip)
    label = f"K={run['k']}, S={run['num_steps']}, {'first' if first_order else 'second'} order"
    lockstep = LockstepRun(assignment_protocol(run["k"]).streams(seeds), episodes, label, "episode", compile=True)
    learners = lockstep.maml("maml", initializations_from_seeds(seeds), algorithm, stop_diverged=True)
    lockstep.train()
    histories, norms = learners.histories, learners.gradient_norm_histories
    final_weights = [learners.initialization(lane) for lane in range(len(seeds))]
    replayed = {}
    for lane in sorted(learners.diverged_at) if clip is None else []:
        replayed[str(lane)] = replay(seeds[lane], run, first_order, episodes)
        if replayed[str(lane)]["diverged_at_episode"] is None:  # MAML.train went on: the lane is its run
            histories[lane], norms[lane], final_weights[lane] = replayed[str(lane)].pop("run")
    usable = episodes // CURVE_EVERY * CURVE_EVERY
    final = histories[:, -FINAL_WINDOW:].mean(axis=1)
    return {
        "final_mse": np.where(np.isnan(final), np.inf, final).tolist(),
        "stopped_in_lockstep_at_episode": {str(lane): update + 1 for lane, update in learners.diverged_at.items()},
        "replayed_by_maml_train": {
            lane: {"diverged_at_episode": record["diverged_at_episode"]} for lane, record in replayed.items()
        },
        "curves": histories[:, :usable].reshape(len(seeds), -1, CURVE_EVERY).mean(axis=2).tolist(),
        "gradient_norm_curves": norms[:, :usable].reshape(len(seeds), -1, CURVE_EVERY).max(axis=2).tolist(),
        "largest_gradient_norm": [float(np.nanmax(lane)) if np.isfinite(lane).any() else None for lane in norms],
        "dead_units": [dead_units(weights) for weights in final_weights],
    }


def replay(seed: tuple[int, int], run: dict, first_order: bool, episodes: int) -> dict:
    """The grader's own run of one seed: `MAML.train` on its stream. Returns where it raised, or its run:
    the query losses, the meta-gradient norms (of the gradient each update left in `.grad`), the final weights."""
    numpy_seed, torch_seed = seed
    torch.manual_seed(torch_seed)
    maml = MAML(run["num_steps"], first_order=first_order)
    stream = SineGenerator(run["k"], QUERY_POINTS, rng=np.random.RandomState(numpy_seed))
    norms = []
    for episode, (_, task) in enumerate(tqdm(stream.generator(episodes), total=episodes, desc=f"replay {seed}")):
        try:
            maml.train(task)
        except FloatingPointError:
            return {"diverged_at_episode": episode + 1}
        norms.append(sum(weight.grad.double().square().sum() for weight in maml.initialization).sqrt().item())
    run_of_maml = (np.array(maml.history), np.array(norms), [weight.detach() for weight in maml.initialization])
    return {"diverged_at_episode": None, "run": run_of_maml}


def summary(final_mse: Sequence[float], threshold: float) -> dict:
    values = np.asarray(final_mse)
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "max": float(values.max()),  # inf where a seed diverged
        "diverged": int(np.isinf(values).sum()),
        "share_under_threshold": float(np.mean(values < threshold)),
    }


def markdown(report: dict) -> str:
    """results.md: the summary of every run and order over the seeds (`maml_sine.pages.margin_table`), from
    `report` as results.json holds it (a diverged seed's final MSE null)."""
    clip = report["clip"]
    clipped = "" if clip is None else f", meta-gradients clipped to norm {clip:g}"
    lines = [
        f"# The graders' final MSE over {len(report['seeds'])} seeds ({report['episodes']:,} tasks each{clipped})",
        "",
        margin_table(report),
        "A diverged seed stopped with a non-finite loss or meta-gradient (its final MSE is infinite): it fails. A",
        "seed that stopped in the lockstep run was replayed by `MAML.train` itself, which settles it (results.json).",
        "Written by `python scripts/grader_margin.py`; every seed is in results.json.",
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict, out: Path) -> None:
    """Left: every seed's final MSE per run and order. Right: the K5-S5 second-order seeds over training."""
    figure = Figure(figsize=(16, 5.2))
    spread, curves, norms = figure.subplots(1, 3)
    positions, labels = [], []
    for index, (name, order) in enumerate((name, order) for name in RUNS for order in ORDERS):
        values = np.asarray(results[name][order]["final_mse"])
        values = values[np.isfinite(values)]  # diverged seeds are counted in results.md, not drawn
        jitter = np.random.default_rng(index).uniform(-0.15, 0.15, len(values))
        spread.scatter(index + jitter, values, s=14, color="tab:blue" if order == "second-order" else "tab:green")
        spread.hlines(RUNS[name]["threshold"], index - 0.3, index + 0.3, color="tab:red", linewidth=1.5)
        positions.append(index)
        labels.append(f"{name}\n{order}")
    spread.set_xticks(positions)
    spread.set_xticklabels(labels, fontsize=8)
    spread.set_yscale("log")
    spread.set_xlim(-0.5, len(positions) - 0.5)
    spread.set_ylabel("final MSE (mean of the last 500 query losses)")
    spread.set_title("Final MSE, one dot per seed\n(red: the grader's threshold)", fontsize=11)
    run = results["K5-S5"]["second-order"]
    episodes = (np.arange(len(run["curves"][0])) + 1) * CURVE_EVERY
    worst = list(np.argsort(run["final_mse"])[::-1][:HIGHLIGHTED])
    for lane in sorted(range(len(run["final_mse"])), key=lambda lane: lane in worst):  # the worst drawn last
        if lane in worst:
            color = ("tab:red", "tab:orange", "tab:purple")[worst.index(lane)]
            style = {"color": color, "linewidth": 1.3, "label": f"seed {lane}: final MSE {run['final_mse'][lane]:.3f}"}
        else:
            style = {"color": "gray", "alpha": 0.35, "linewidth": 0.8}
        curves.plot(episodes, run["curves"][lane], **style)
        norms.plot(episodes, run["gradient_norm_curves"][lane], **style)
    curves.set_title(f"K5-S5, second order: query MSE, mean of each {CURVE_EVERY} tasks", fontsize=11)
    norms.set_title(f"K5-S5, second order: largest meta-gradient norm\nin each {CURVE_EVERY} tasks", fontsize=11)
    curves.legend(title=f"the {HIGHLIGHTED} seeds that end highest", fontsize=8, title_fontsize=8)
    for axes in (curves, norms):
        axes.set_xlabel("meta-training task")
        axes.set_yscale("log")
        axes.yaxis.set_minor_formatter(NullFormatter())
    spread.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    for axes in (spread, curves, norms):
        axes.grid(True, which="major", alpha=0.3)
        axes.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    curves.set_ylabel("query MSE")
    norms.set_ylabel("meta-gradient L2 norm")
    figure.suptitle("The graders' runs over many seeds: where each seed ends, and how the ones that end high got there")
    figure.tight_layout()
    save_figure(figure, out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=whole_number(2), default=20, help="seeds per run and order (default 20)")
    parser.add_argument("--first-seed", type=whole_number(0), default=0, help="the first seed's number (default 0)")
    parser.add_argument("--episodes", type=whole_number(1), default=EPISODES, help=f"tasks (default {EPISODES})")
    parser.add_argument("--clip", type=float, default=None, help="clip meta-gradients to this L2 norm (default off)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "grader_margin", help="folder for results")
    args = parser.parse_args(argv)
    if args.clip is not None and not 0 < args.clip < float("inf"):
        parser.error(f"--clip: must be a positive, finite norm, got {args.clip}")
    make_output_folders(parser, {"--out-dir": args.out_dir})
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    seeds = lane_seeds(args.seeds, args.first_seed)
    results = {}
    try:
        for name, run in RUNS.items():
            results[name] = {}
            for order, first_order in ORDERS.items():
                trained = train_run(run, first_order, seeds, args.episodes, args.clip)
                trained["summary"] = summary(trained["final_mse"], run["threshold"])
                results[name][order] = trained
    except KeyboardInterrupt as interrupt:
        raise KeyboardInterrupt(f"{str(interrupt) or 'interrupted'}; nothing was written to {args.out_dir}") from None
    report = {"seeds": seeds, "episodes": args.episodes, "clip": args.clip, "final_window": FINAL_WINDOW}
    report.update(runs=RUNS, results=results)
    write_json_atomically(args.out_dir / "results.json", report, indent=None)  # the record, first
    table = markdown(as_written(report))
    write_text_atomically(args.out_dir / "results.md", table)
    print(table)
    try:
        plot(results, args.out_dir / "margin.png")
    except WriteError as error:
        raise error.keeping(f"results.json and results.md in {args.out_dir} are complete") from error
    return report


if __name__ == "__main__":
    run_command(main, sys.argv[1:])
